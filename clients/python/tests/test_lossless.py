"""A lossless subscription (docs/protocol-binary.md, *Subscriber queues*): when its small
queue at the broker overflows because its consumer is slow, the broker falls back to the
ring log and replays from the last sequence it gave, so the client gets every message once,
in order, with no drop notice and no gap notice. In the client, its full queue holds the
connection's reader back (the broker's queue then fills, and the broker falls back) rather
than dropping: with the heartbeats of both sides going on, across a lost connection (the
held message is not seen by the resume tracker, so it comes again, once), and with
`close` and `drain` still working."""

from __future__ import annotations

import asyncio
import time
from typing import cast

import pytest

import tern
from tests.conftest import Broker, BrokerFactory


async def until_held(client: tern.Client, sub: tern.Subscription, timeout: float = 10.0) -> None:
    """Waits until the client's reader waits for room in `sub`'s queue."""
    deadline = time.monotonic() + timeout
    while not (client._conn is not None and client._conn.held is sub):
        assert time.monotonic() < deadline, "the reader was never held"
        await asyncio.sleep(0.005)


async def numbered_feed(
    subscriber: tern.Client, publisher: tern.Client, subject: str, n: int
) -> tern.Subscription:
    """A lossless subscription to `subject` with a queue of 4 in the client, in place at the
    broker, then `n` messages published to it, their numbers as payloads."""
    sub = await subscriber.subscribe(subject, lossless=True, capacity=4)
    await subscriber.flush()
    for i in range(n):
        await publisher.publish(subject, str(i))
    await publisher.flush(timeout=30)
    return sub


def no_drops_nor_losses(client: tern.Client) -> None:
    """Neither a drop (either side's) nor a gap nor a lost connection was reported."""
    while (e := client.events().get_nowait()) is not None:
        assert not isinstance(
            e, tern.DropNotice | tern.GapNotice | tern.ErrorEvent | tern.DisconnectedEvent
        ), e


COUNT = 20000
SIZE = 1024
SUBJECTS = ["ll.a", "ll.b", "ll.c", "ll.d"]  # over both shards: each keeps its own order


async def test_a_slow_lossless_subscriber_gets_every_message_once_in_order(brokers: BrokerFactory) -> None:
    # A 16 KiB write buffer and a queue of 16 messages: 20 MiB published while the consumer
    # reads nothing overflow them (and the sockets' buffers) many times over; the log
    # (64 MiB) holds all of it. (Not a write buffer smaller than one delivery: the broker
    # then replays about one message per 50 ms.)
    b = brokers(["--log-size", "64MiB", "--write-buffer", "16KiB"])
    slow = await tern.connect(b.url, name="slow", server_timeout=120)
    fast = await tern.connect(b.url, name="fast")
    try:
        sub = await slow.subscribe("ll.*", lossless=True, max_queue_messages=16)
        assert slow._conn is not None
        transport = cast(asyncio.Transport, slow._conn.writer.transport)
        transport.pause_reading()  # the consumer is slow: it takes no bytes at all for now
        pad = b"x" * (SIZE - 8)
        for i in range(COUNT):
            await fast.publish(SUBJECTS[i % len(SUBJECTS)], b"%08d" % i + pad)
        await fast.flush(timeout=60)  # the broker has taken every publish
        transport.resume_reading()

        got: list[tern.Msg] = []
        while len(got) < COUNT:
            got.append(await sub.next_msg(30))
        # Every message once; per subject (one shard each) in the order published.
        indices = [int(m.payload[:8]) for m in got]
        assert sorted(indices) == list(range(COUNT))
        for s, subject in enumerate(SUBJECTS):
            mine = [i for i, m in zip(indices, got, strict=True) if m.subject == subject]
            assert mine == list(range(s, COUNT, len(SUBJECTS))), f"{subject}: out of order or a gap"
        keys = {(m.shard, m.sequence) for m in got}
        assert len(keys) == COUNT
        # The broker did fall back to its log (replayed messages), and dropped nothing.
        assert any(m.replayed for m in got)
        await slow.flush(timeout=30)
        assert sub.pending == 0 and sub.dropped == 0
        while (e := slow.events().get_nowait()) is not None:
            assert not isinstance(e, tern.DropNotice | tern.GapNotice | tern.ErrorEvent), e
    finally:
        await slow.close()
        await fast.close()


async def test_a_lossless_subscription_that_falls_behind_loses_nothing_in_the_client(broker: Broker) -> None:
    # As the Rust client's test of the same name: a queue of 4 in the client, 3000 messages
    # published fast, the consumer far slower than the publisher for the first 40. Without
    # the reader holding back, the client would drop (a "client" DropNotice, a gap).
    subscriber = await tern.connect(broker.url, name="slow")
    publisher = await tern.connect(broker.url, name="fast")
    try:
        n = 3000
        sub = await numbered_feed(subscriber, publisher, "slow.feed", n)
        got: list[int] = []
        while len(got) < n:
            m = await sub.next_msg(10)
            got.append(int(m.payload))
            if len(got) < 40:
                await asyncio.sleep(0.005)
        assert got == list(range(n))
        assert sub.dropped == 0
        no_drops_nor_losses(subscriber)
    finally:
        await subscriber.close()
        await publisher.close()


async def test_a_held_reader_keeps_the_connection_through_both_heartbeats(brokers: BrokerFactory) -> None:
    # The broker pings after 200 ms of silence and closes a client that leaves 2 PINGs
    # unanswered; the client gives up on a server silent for 0.6 s. The reader is held for
    # 3 s (it reads nothing, PINGs included): the connection stays, the broker's queue
    # overflows (a 16 KiB write buffer, 16 messages), it falls back to its log, and every
    # message comes, once, in order.
    b = brokers(["--write-buffer", "16KiB", "--ping-interval", "200ms", "--log-size", "16MiB"])
    slow = await tern.connect(b.url, name="slow", ping_interval=0.2, server_timeout=0.6)
    fast = await tern.connect(b.url, name="fast")
    try:
        sub = await slow.subscribe("held.feed", lossless=True, max_queue_messages=16, capacity=4)
        await slow.flush()
        n = 3000
        pad = b"x" * 1016  # 3 MB: past every buffer on the way (the client's, the kernel's)
        for i in range(n):
            await fast.publish("held.feed", b"%08d" % i + pad)
        await fast.flush(timeout=30)
        await until_held(slow, sub)
        await asyncio.sleep(3.0)
        assert slow.is_connected and slow._conn is not None and slow._conn.held is sub
        got: list[tern.Msg] = []
        while len(got) < n:
            got.append(await sub.next_msg(10))
        assert [int(m.payload[:8]) for m in got] == list(range(n))
        assert any(m.replayed for m in got), "the broker never fell back to its log"
        assert sub.dropped == 0
        await slow.flush()
        no_drops_nor_losses(slow)
    finally:
        await slow.close()
        await fast.close()


async def test_a_held_message_comes_again_once_after_a_lost_connection(broker: Broker) -> None:
    # The connection is lost while the reader holds a message (the queue of 4 full): the
    # message and everything after it were not seen by the resume tracker, so the
    # resubscription resumes from the last message queued; nothing is lost, nothing doubled.
    slow = await tern.connect(broker.url, name="slow", reconnect=tern.ReconnectPolicy(base=0.05, cap=0.3))
    fast = await tern.connect(broker.url, name="fast")
    try:
        n = 500
        sub = await numbered_feed(slow, fast, "lost.feed", n)
        await until_held(slow, sub)
        first = slow._conn
        assert first is not None
        first.writer.transport.abort()  # lost: noticed while held, nothing taken yet
        deadline = time.monotonic() + 10
        while slow._conn is None or slow._conn is first:
            assert time.monotonic() < deadline, "no new connection"
            await asyncio.sleep(0.01)
        await until_held(slow, sub)  # the queue is still full: held again at once
        got: list[int] = []
        while len(got) < n:
            got.append(int((await sub.next_msg(10)).payload))
        assert got == list(range(n))
        assert sub.dropped == 0
        kinds = []
        while (e := slow.events().get_nowait()) is not None:
            kinds.append(type(e))
            assert not isinstance(e, tern.DropNotice | tern.GapNotice), e
        assert tern.DisconnectedEvent in kinds and tern.Resumed in kinds
        with pytest.raises(tern.TernTimeout):  # and none comes twice
            await sub.next_msg(0.3)
    finally:
        await slow.close()
        await fast.close()


async def test_close_and_drain_work_while_the_reader_is_held(broker: Broker) -> None:
    fast = await tern.connect(broker.url, name="fast")
    try:
        # close: at once; what was queued stays readable, then the iteration ends.
        slow = await tern.connect(broker.url, name="slow")
        sub = await numbered_feed(slow, fast, "close.feed", 200)
        await until_held(slow, sub)
        await asyncio.wait_for(slow.close(), 3)
        assert [int(m.payload) async for m in sub] == [0, 1, 2, 3]

        # drain: a consumer goes on taking, so the held messages come ahead of its PONG;
        # every message comes, in order, and drain returns well within its timeout.
        slow = await tern.connect(broker.url, name="slow")
        n = 1000
        sub = await numbered_feed(slow, fast, "drain.feed", n)
        await until_held(slow, sub)

        async def consume() -> list[int]:
            out = []
            async for m in sub:
                out.append(int(m.payload))
                await asyncio.sleep(0)
            return out

        consumer = asyncio.create_task(consume())
        await asyncio.wait_for(slow.drain(timeout=10), 10)
        assert await asyncio.wait_for(consumer, 5) == list(range(n))
        assert slow.is_closed and sub.dropped == 0
    finally:
        await fast.close()
