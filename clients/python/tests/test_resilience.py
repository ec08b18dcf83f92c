"""Staying connected: a broker restart mid-stream with resume (nothing missed, nothing
duplicated), the offline buffer and its overflow, a broker-side drop notice, GOAWAY with
a server list, a silent server caught by the heartbeat, and acknowledged publishes with a
message id sent again after a lost connection (deduplicated by the broker, across a
restart too)."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import cast

import pytest

import tern
from tern import _codec as c
from tests.conftest import BrokerFactory

FAST = tern.ReconnectPolicy(base=0.05, cap=0.3)


async def wait_for_event(c: tern.Client, kind: type, timeout: float = 10.0) -> tern.Event:
    """The next event of `kind` (events before it are taken and dropped)."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {kind.__name__} event within {timeout}s")
        try:
            e = await asyncio.wait_for(c.events().get(), left)
        except TimeoutError:
            continue
        if e is None:
            raise AssertionError(f"client closed before a {kind.__name__} event")
        if isinstance(e, kind):
            return e


async def test_broker_restart_mid_stream_resumes_without_gap_or_duplicate(brokers: BrokerFactory) -> None:
    b = brokers(fixed_ports=True)
    sub_client = await tern.connect(b.url, name="sub", reconnect=FAST)
    pub_client = await tern.connect(b.url, name="pub", reconnect=FAST, ack_timeout=20)
    try:
        sub = await sub_client.subscribe("stream.>")
        for i in range(20):
            await pub_client.publish_acked(f"stream.{i % 3}", str(i))
        seen = [await sub.next_msg(2) for _ in range(10)]  # mid-stream: 10 read, 10 queued

        b.stop()
        await wait_for_event(sub_client, tern.DisconnectedEvent)
        await wait_for_event(pub_client, tern.DisconnectedEvent)
        # Published while the broker is down: kept in the offline buffer, acked later.
        offline = [asyncio.create_task(pub_client.publish_acked("stream.x", str(i))) for i in range(20, 30)]
        await asyncio.sleep(0.2)
        assert pub_client.offline_buffered > 0
        b.start()
        acks = await asyncio.gather(*offline)
        assert all(a.sequence > 0 for a in acks)
        resumed = await wait_for_event(sub_client, tern.Resumed)
        assert isinstance(resumed, tern.Resumed) and resumed.subscriptions == 1
        for i in range(30, 40):
            await pub_client.publish_acked("stream.y", str(i))

        while len(seen) < 40:
            seen.append(await sub.next_msg(5))
        assert [m.payload for m in seen] == [str(i).encode() for i in range(40)]
        with pytest.raises(tern.TernTimeout):
            await sub.next_msg(0.3)
        # Per shard, sequences only grow: nothing twice.
        keys = [(m.shard, m.sequence) for m in seen]
        assert len(set(keys)) == 40
    finally:
        await sub_client.close()
        await pub_client.close()


async def test_offline_buffer_is_bounded_and_flushed_after_resubscribing(brokers: BrokerFactory) -> None:
    b = brokers(fixed_ports=True)
    c = await tern.connect(b.url, reconnect=FAST, offline_buffer_bytes=2000)
    try:
        sub = await c.subscribe("off.>")
        b.stop()
        await wait_for_event(c, tern.DisconnectedEvent)
        accepted = 0
        with pytest.raises(tern.OfflineBufferFull):
            for i in range(100):
                await c.publish("off.x", f"{i:03d}".encode() * 30)
                accepted += 1
        assert 10 <= accepted < 30
        assert c.offline_buffered <= 2000
        b.start()
        await wait_for_event(c, tern.Resumed)
        await c.flush()
        got = [await sub.next_msg(2) for _ in range(accepted)]
        assert [m.payload[:3] for m in got] == [f"{i:03d}".encode() for i in range(accepted)]
        assert c.offline_buffered == 0
    finally:
        await c.close()


async def test_a_slow_subscriber_gets_a_drop_notice(brokers: BrokerFactory) -> None:
    b = brokers(["--write-buffer", "16KiB"])
    slow = await tern.connect(b.url, name="slow")
    fast = await tern.connect(b.url, name="fast")
    try:
        sub = await slow.subscribe("ticks", max_queue_messages=8)
        assert slow._conn is not None
        transport = cast(asyncio.Transport, slow._conn.writer.transport)
        transport.pause_reading()  # the application stops reading
        payload = b"x" * 4096
        for i in range(600):
            await fast.publish("ticks", payload, priority=i % 2)
        await fast.flush(timeout=10)
        transport.resume_reading()
        notice = await wait_for_event(slow, tern.DropNotice)
        assert isinstance(notice, tern.DropNotice)
        assert notice.source == "server" and notice.sid == sub.sid and notice.count > 0
        assert notice.ranges and all(r.first <= r.last for r in notice.ranges)
        assert sub.dropped >= notice.count
    finally:
        await slow.close()
        await fast.close()


async def test_goaway_moves_to_the_next_server_at_once(brokers: BrokerFactory) -> None:
    b1 = brokers(["--lame-duck-duration", "1s", "--lame-duck-grace-period", "0s"])
    b2 = brokers()
    c = await tern.connect([b1.url, b2.url], reconnect=tern.ReconnectPolicy(base=5, cap=5))
    try:
        await c.subscribe("g.>")
        b1.signal(signal.SIGUSR2)
        ga = await wait_for_event(c, tern.GoAway)
        assert isinstance(ga, tern.GoAway) and ga.close_within <= 1.0
        started = time.monotonic()
        rec = await wait_for_event(c, tern.Reconnecting)
        assert isinstance(rec, tern.Reconnecting) and rec.delay == 0.0
        resumed = await wait_for_event(c, tern.Resumed, timeout=5)
        assert isinstance(resumed, tern.Resumed)
        assert resumed.server.address == b2.url.removeprefix("tern://")
        assert time.monotonic() - started < 3
    finally:
        await c.close()


async def test_a_silent_server_is_caught_by_the_heartbeat() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)  # preface and HELLO
        writer.write(c.encode_server_frame(c.Welcome(1, 1, 1 << 20, c.DEFAULT_MAX_FRAME, 0, 1, 7, b"fake")))
        while await reader.read(1024):  # and never a byte more: PINGs go unanswered
            pass
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client = await tern.connect(
            f"127.0.0.1:{port}",
            ping_interval=0.1,
            server_timeout=0.5,
            reconnect=tern.ReconnectPolicy.disabled(),
        )
        gone = await wait_for_event(client, tern.DisconnectedEvent, timeout=3)
        assert isinstance(gone, tern.DisconnectedEvent) and "heartbeat" in gone.reason
        closed = await wait_for_event(client, tern.Closed, timeout=3)
        assert isinstance(closed, tern.Closed) and "gave up" in closed.reason
        with pytest.raises(tern.ClosedError):
            await client.publish("a", b"")
    finally:
        server.close()


def test_backoff_is_full_jitter_and_reproducible() -> None:
    p = tern.ReconnectPolicy(base=0.1, cap=1.6, max_attempts=8)
    a = list(p.schedule(99))
    assert a == list(p.schedule(99)) and len(a) == 8
    assert all(0 <= d <= p.ceiling(n) for n, d in enumerate(a))
    assert [p.ceiling(n) for n in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.6, 1.6]
    assert list(tern.ReconnectPolicy.disabled().schedule(1)) == []


async def test_a_resume_older_than_the_log_gets_a_gap_notice(brokers: BrokerFactory) -> None:
    b = brokers(["--log-size", "1MiB", "--max-payload", "64KiB"])  # a small ring; 1.5 MB go to it
    async with tern.connect(b.url) as client:
        first = await client.publish_acked("gap.x", b"0" * 200)
        for _ in range(6000):
            await client.publish("gap.x", b"x" * 250)
        last = await client.publish_acked("gap.x", b"last")
        seqs = [0] * (first.shard + 1)
        seqs[first.shard] = first.sequence
        token = tern.ResumeToken(client.server_info.log_epoch if client.server_info else 0, tuple(seqs))
        sub = await client.subscribe("gap.x", resume=token)
        gap = await wait_for_event(client, tern.GapNotice)
        assert isinstance(gap, tern.GapNotice) and gap.sid == sub.sid
        assert gap.requested == first.sequence + 1 and gap.oldest > gap.requested
        m = await sub.next_msg(2)
        assert m.replayed and m.sequence == gap.oldest
        assert last.sequence >= m.sequence


async def test_a_new_log_epoch_is_reported_and_the_subscription_goes_on(brokers: BrokerFactory) -> None:
    b = brokers(["--no-store"], fixed_ports=True)
    c = await tern.connect(b.url, reconnect=FAST)
    try:
        sub = await c.subscribe("ep.>")
        await c.publish("ep.x", b"before")
        assert (await sub.next_msg(2)).payload == b"before"
        assert sub.resume_token is not None
        b.stop()
        b.start()  # --no-store: a new epoch at every start
        mismatch = await wait_for_event(c, tern.EpochMismatch)
        assert isinstance(mismatch, tern.EpochMismatch) and mismatch.sid == sub.sid
        await c.publish("ep.x", b"after")
        assert (await sub.next_msg(2)).payload == b"after"
    finally:
        await c.close()


async def test_acked_publishes_with_a_message_id_are_sent_again_after_a_lost_connection(
    brokers: BrokerFactory,
) -> None:
    b = brokers()
    watcher = await tern.connect(b.url, name="watcher")
    pub = await tern.connect(b.url, name="pub", reconnect=FAST)
    try:
        sub = await watcher.subscribe("once.>")
        assert pub._conn is not None
        transport = cast(asyncio.Transport, pub._conn.writer.transport)
        transport.pause_reading()  # the broker's acks will not be read on this connection
        identified = [
            asyncio.create_task(pub.publish_acked(f"once.{i}", str(i), message_id=f"order-{i}", timeout=30))
            for i in range(3)
        ]
        anonymous = asyncio.create_task(pub.publish_acked("once.anon", b"no id", timeout=30))
        # The broker got all four: they are delivered (each once).
        first = [await sub.next_msg(10) for _ in range(4)]
        assert [m.subject for m in first] == ["once.0", "once.1", "once.2", "once.anon"]
        assert not any(t.done() for t in [*identified, anonymous])

        transport.abort()  # the connection drops before any ack was read
        # Without a message id the outcome is unknown, and the caller is told so.
        with pytest.raises(tern.Disconnected):
            await anonymous
        # With one, the publish is sent again on the next connection, and the broker
        # acknowledges the repeat with the first copy's place.
        acks = await asyncio.gather(*identified)
        assert [a.duplicate for a in acks] == [True, True, True]
        assert [(a.shard, a.sequence) for a in acks] == [(m.shard, m.sequence) for m in first[:3]]
        assert isinstance(await wait_for_event(pub, tern.Resumed), tern.Resumed)
        # Nothing was delivered twice.
        await pub.flush()
        await watcher.flush()
        with pytest.raises(tern.TernTimeout):
            await sub.next_msg(0.5)
        assert pub.offline_buffered == 0
    finally:
        await watcher.close()
        await pub.close()


async def test_an_identified_publish_is_deduplicated_across_a_broker_restart(brokers: BrokerFactory) -> None:
    b = brokers(fixed_ports=True)
    watcher = await tern.connect(b.url, name="watcher", reconnect=FAST)
    pub = await tern.connect(b.url, name="pub", reconnect=FAST)
    try:
        sub = await watcher.subscribe("rs.>")
        assert pub._conn is not None
        transport = cast(asyncio.Transport, pub._conn.writer.transport)
        transport.pause_reading()  # no ack is read
        acked = asyncio.create_task(pub.publish_acked("rs.x", b"once", message_id="rs-1", timeout=60))
        stored = await sub.next_msg(10)  # the broker has it, in its log
        b.stop()  # and goes down before the ack reached the publisher
        transport.abort()  # (what the socket holds, the ack among it, is gone with it)
        await wait_for_event(pub, tern.DisconnectedEvent)
        assert not acked.done()
        b.start()  # the same data directory: the ids of the log's messages are remembered
        ack = await acked
        assert ack.duplicate and (ack.shard, ack.sequence) == (stored.shard, stored.sequence)
        # Stored once: the log holds one copy, and the watcher (resumed) got no second one.
        async with tern.connect(b.url) as reader:
            history = await reader.subscribe("rs.>", last=10)
            assert (await history.next_msg(10)).payload == b"once"
            await reader.flush()
            with pytest.raises(tern.TernTimeout):
                await history.next_msg(0.5)
        await wait_for_event(watcher, tern.Resumed)
        await watcher.flush()
        with pytest.raises(tern.TernTimeout):
            await sub.next_msg(0.5)
    finally:
        await watcher.close()
        await pub.close()
