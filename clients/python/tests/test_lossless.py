"""A lossless subscription (docs/protocol-binary.md, *Subscriber queues*): when its small
queue at the broker overflows because its consumer is slow, the broker falls back to the
ring log and replays from the last sequence it gave, so the client gets every message once,
in order, with no drop notice and no gap notice."""

from __future__ import annotations

import asyncio
from typing import cast

import tern
from tests.conftest import BrokerFactory

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
