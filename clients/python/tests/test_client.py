"""Every call of the client against a real ternd: publish, acks, subscribe in every start
mode, queue groups, request/reply, unsubscribe, flush, drain, close, and the errors."""

from __future__ import annotations

import asyncio
import time

import pytest

import tern
from tests.conftest import Broker, BrokerFactory


def drain_events(c: tern.Client) -> list[tern.Event]:
    out = []
    while (e := c.events().get_nowait()) is not None:
        out.append(e)
    return out


async def test_publish_and_subscribe_carry_every_field(client: tern.Client) -> None:
    sub = await client.subscribe("chat.>")
    before = time.time_ns()
    await client.publish("chat.lobby", b"hello", priority=5, headers={"From": "ann", "K": ["1", "2"]})
    await client.publish("chat.other", "text", reply="chat.reply")
    m1 = await sub.next_msg(timeout=2)
    m2 = await sub.next_msg(timeout=2)
    assert (m1.subject, m1.payload, m1.priority, m1.replayed) == ("chat.lobby", b"hello", 5, False)
    assert m1.headers is not None
    assert m1.headers.get("from") == "ann"
    assert m1.headers.get_all("K") == ["1", "2"]
    assert m1.sequence >= 1 and m1.timestamp >= before - 1_000_000_000
    assert (m2.subject, m2.payload, m2.reply, m2.header_block) == ("chat.other", b"text", "chat.reply", None)
    assert m2.shard == m1.shard and m2.sequence == m1.sequence + 1
    assert sub.resume_token is not None
    assert isinstance(drain_events(client)[0], tern.Connected)
    assert client.server_info is not None and client.server_info.shard_count == 2


async def test_publish_acked_and_message_ids(client: tern.Client) -> None:
    a = await client.publish_acked("orders.new", b"1", message_id="order-1")
    assert not a.duplicate and a.sequence >= 1
    again = await client.publish_acked("orders.new", b"1", message_id="order-1")
    assert again == tern.Ack(a.shard, a.sequence, True)
    b = await client.publish_acked("orders.new", b"2", coalescing_key="k", priority=7)
    assert b.sequence > a.sequence or b.shard != a.shard


async def test_client_side_validation(client: tern.Client) -> None:
    with pytest.raises(tern.InvalidSubject):
        await client.publish("a.*", b"x")
    with pytest.raises(tern.InvalidSubject):
        await client.publish("a..b", b"x")
    with pytest.raises(tern.InvalidSubject):
        await client.subscribe("a.>.b")
    with pytest.raises(tern.InvalidOption):
        await client.publish("a.b", b"x", priority=8)
    with pytest.raises(tern.InvalidOption):
        await client.publish("a.b", b"x", message_id="")
    with pytest.raises(tern.PayloadTooLarge):
        await client.publish("a.b", b"x" * (1 << 20 + 1))
    with pytest.raises(tern.InvalidOption):
        await client.subscribe("a.b", queue="q", lossless=True)
    with pytest.raises(tern.InvalidOption):
        await client.subscribe("room.*", presence=b"{}")


async def test_start_positions_replay_from_the_log(client: tern.Client) -> None:
    t0 = time.time_ns()
    for i in range(5):
        await client.publish_acked("feed.a", str(i))
    last = await client.subscribe("feed.>", last=2)
    assert [(await last.next_msg(2)).payload for _ in range(2)] == [b"3", b"4"]
    since = await client.subscribe("feed.>", since=t0)
    got = [await since.next_msg(2) for _ in range(5)]
    assert [m.payload for m in got] == [b"0", b"1", b"2", b"3", b"4"]
    assert all(m.replayed for m in got)
    # Resume from the token after the third: the last two, then live, no gap, no duplicate.
    third = got[2]
    token = tern.ResumeToken(client.server_info.log_epoch if client.server_info else 0, ())
    seqs = [0] * (third.shard + 1)
    seqs[third.shard] = third.sequence
    token = tern.ResumeToken(token.epoch, tuple(seqs))
    resumed = await client.subscribe("feed.>", resume=token)
    await client.publish("feed.a", b"5")
    assert [(await resumed.next_msg(2)).payload for _ in range(3)] == [b"3", b"4", b"5"]
    with pytest.raises(tern.TernTimeout):
        await resumed.next_msg(0.2)


async def test_queue_groups_share_and_bounds_are_sent(client: tern.Client) -> None:
    a = await client.subscribe("jobs.*", queue="workers", max_queue_messages=100, max_queue_bytes=1 << 20)
    b = await client.subscribe("jobs.*", queue="workers")
    lossless = await client.subscribe("jobs.*", lossless=True)
    for i in range(20):
        await client.publish("jobs.x", str(i))
    await client.flush()
    assert a.pending + b.pending == 20
    assert lossless.pending == 20


async def test_queue_bound_over_the_server_maximum_is_refused(client: tern.Client) -> None:
    with pytest.raises(tern.ServerError) as e:
        await client.subscribe("x.y", max_queue_messages=0xFFFFFFFF)
    assert e.value.code == tern.ErrorCode.INVALID_OPTION


async def test_request_reply_and_timeout(client: tern.Client) -> None:
    svc = await client.subscribe("svc.upper")

    async def serve() -> None:
        async for m in svc:
            await m.respond(m.payload.upper())

    task = asyncio.create_task(serve())
    try:
        # Concurrent first requests share one inbox subscription.
        first = await asyncio.gather(*(client.request("svc.upper", f"f{i}", timeout=2) for i in range(5)))
        assert [r.payload for r in first] == [f"F{i}".encode() for i in range(5)]
        assert len(client._subs) == 2
        reply = await client.request("svc.upper", b"abc", timeout=2)
        assert reply.payload == b"ABC"
        replies = await asyncio.gather(*(client.request("svc.upper", f"r{i}", timeout=2) for i in range(10)))
        assert [r.payload for r in replies] == [f"R{i}".encode() for i in range(10)]
        # Nobody receives it: the HELLO asked for no-responders statuses, so it is
        # answered at once, long before its timeout.
        with pytest.raises(tern.NoResponders):
            await client.request("svc.nobody", b"?", timeout=30)
    finally:
        task.cancel()


async def test_unsubscribe_now_and_after_n(client: tern.Client) -> None:
    now = await client.subscribe("u.a")
    after = await client.subscribe("u.b")
    await after.unsubscribe(after=3)
    await now.unsubscribe()
    for _ in range(5):
        await client.publish("u.a", b"x")
        await client.publish("u.b", b"y")
    await client.flush()
    assert now.pending == 0 and not now.active
    got = [m.payload async for m in after]
    assert got == [b"y"] * 3


async def test_flush_drain_close(broker: Broker) -> None:
    c = await tern.connect(broker.url)
    sub = await c.subscribe("d.>")
    for i in range(50):
        await c.publish("d.x", str(i))
    await c.drain(timeout=2)
    assert c.is_closed
    got = [m.payload async for m in sub]
    assert got == [str(i).encode() for i in range(50)]
    with pytest.raises(tern.ClosedError):
        await c.publish("d.x", b"late")
    events = drain_events(c)
    assert isinstance(events[-1], tern.Closed)


async def test_drain_loses_nothing_routed_before_it(broker: Broker) -> None:
    c = await tern.connect(broker.url)
    other = await tern.connect(broker.url)
    try:
        sub = await c.subscribe("dr.>")
        for i in range(200):
            await other.publish("dr.x", str(i))
        await other.flush()  # the broker has routed all 200 to the subscription
        ack = asyncio.create_task(c.publish_acked("dr.x", b"last"))
        await asyncio.sleep(0)  # (written ahead of the drain's UNSUBSCRIBE)
        await c.drain(timeout=5)
        assert (await ack).sequence > 0
        got = [m.payload async for m in sub]
        assert got == [str(i).encode() for i in range(200)] + [b"last"]
    finally:
        await other.close()


async def test_async_with_and_events_callback(broker: Broker) -> None:
    seen: list[tern.Event] = []
    async with tern.connect(broker.url, on_event=seen.append) as c:
        await c.flush()
    assert isinstance(seen[0], tern.Connected) and isinstance(seen[-1], tern.Closed)
    assert c.is_closed


async def test_connect_errors(brokers: BrokerFactory) -> None:
    from tests.conftest import free_port

    with pytest.raises(tern.ConnectError):
        await tern.connect(f"127.0.0.1:{free_port()}", connect_timeout=1)
    b = brokers()
    with pytest.raises(tern.ProtocolError, match="text port"):
        await tern.connect("tern://" + b.text, connect_timeout=2)
    with pytest.raises(tern.InvalidOption):
        await tern.connect("nats://" + b.text)
    # The server list: a dead server first, then the live one.
    async with tern.connect([f"127.0.0.1:{free_port()}", b.url]) as c:
        assert c.is_connected


async def test_client_side_queue_overflow_is_reported(client: tern.Client) -> None:
    sub = await client.subscribe("burst", capacity=5)
    for _ in range(20):
        await client.publish("burst", b"x")
    await client.flush()
    assert sub.pending == 5 and sub.dropped == 15
    drops = [e for e in drain_events(client) if isinstance(e, tern.DropNotice)]
    assert sum(d.count for d in drops) == 15 and all(d.source == "client" for d in drops)
    assert drops[0].ranges and drops[0].ranges[0].first > 0
