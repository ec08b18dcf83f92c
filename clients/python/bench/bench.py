"""Publish throughput and publish-to-deliver latency: this client on Tern's binary port
against nats-py on its text port, in the same run and the same process shape.

    python bench/bench.py --tern tern://127.0.0.1:4224 --nats nats://127.0.0.1:4222

Throughput: one connection publishes `--count` messages of `--size` bytes as fast as it
can, another receives them; the rate is from the first publish to the last delivery.
Latency: `--latency-count` messages at `--rate` per second, each carrying its send time;
p50/p99/max of send to delivery. Both clients run in one event loop, so the figures
include each client's own CPU cost (which is what they compare).
"""

from __future__ import annotations

import argparse
import asyncio
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import nats
from nats.aio.msg import Msg as NatsMsg

import tern

Publish = Callable[[bytes], Awaitable[None]]


@dataclass
class Result:
    name: str
    rate: float
    p50_us: float
    p99_us: float
    max_us: float


class Sink:
    """Counts deliveries and records latencies; `done` is set at `expect` messages."""

    def __init__(self, expect: int, timed: bool) -> None:
        self.expect = expect
        self.timed = timed
        self.count = 0
        self.latencies: list[int] = []
        self.done = asyncio.Event()

    def take(self, payload: bytes) -> None:
        self.count += 1
        if self.timed:
            self.latencies.append(time.perf_counter_ns() - struct.unpack_from(">q", payload)[0])
        if self.count >= self.expect:
            self.done.set()


async def throughput(
    publish: Publish, flush: Callable[[], Awaitable[None]], sink: Sink, n: int, size: int
) -> float:
    payload = b"x" * size
    start = time.perf_counter()
    for _ in range(n):
        await publish(payload)
    await flush()
    await asyncio.wait_for(sink.done.wait(), 120)
    return n / (time.perf_counter() - start)


async def latency(publish: Publish, sink: Sink, n: int, size: int, rate: float) -> None:
    pad = b"x" * max(0, size - 8)
    interval = 1 / rate
    next_at = time.perf_counter()
    for _ in range(n):
        await publish(struct.pack(">q", time.perf_counter_ns()) + pad)
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    await asyncio.wait_for(sink.done.wait(), 60)


def percentiles(name: str, rate: float, lat: list[int]) -> Result:
    lat.sort()
    if not lat:
        return Result(name, rate, 0, 0, 0)
    return Result(
        name,
        rate,
        lat[len(lat) // 2] / 1000,
        lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1000,
        lat[-1] / 1000,
    )


async def run_tern(url: str, a: argparse.Namespace) -> Result:
    async with tern.connect(url, name="bench-pub") as pub, tern.connect(url, name="bench-sub") as sub_client:
        sink = Sink(a.count, False)
        sub = await sub_client.subscribe("bench.tput", capacity=a.count + 1)
        reader = asyncio.create_task(_drain_tern(sub, sink))

        async def publish_tput(p: bytes) -> None:
            await pub.publish("bench.tput", p)

        rate = await throughput(publish_tput, pub.flush, sink, a.count, a.size)
        reader.cancel()
        lsink = Sink(a.latency_count, True)
        lsub = await sub_client.subscribe("bench.lat")
        lreader = asyncio.create_task(_drain_tern(lsub, lsink))

        async def publish_lat(p: bytes) -> None:
            await pub.publish("bench.lat", p)

        await latency(publish_lat, lsink, a.latency_count, a.size, a.rate)
        lreader.cancel()
        return percentiles("tern-client (binary)", rate, lsink.latencies)


async def _drain_tern(sub: tern.Subscription, sink: Sink) -> None:
    async for msg in sub:
        sink.take(msg.payload)


async def run_nats(url: str, a: argparse.Namespace) -> Result:
    pub = await nats.connect(url, name="bench-pub")
    subc = await nats.connect(url, name="bench-sub", pending_size=1 << 30)
    try:
        sink = Sink(a.count, False)

        async def on_tput(msg: NatsMsg) -> None:
            sink.take(msg.data)

        await subc.subscribe("bench.tput", cb=on_tput, pending_msgs_limit=a.count + 1)
        await subc.flush()

        async def publish_tput(p: bytes) -> None:
            await pub.publish("bench.tput", p)

        rate = await throughput(publish_tput, pub.flush, sink, a.count, a.size)
        lsink = Sink(a.latency_count, True)

        async def on_lat(msg: NatsMsg) -> None:
            lsink.take(msg.data)

        await subc.subscribe("bench.lat", cb=on_lat)
        await subc.flush()

        async def publish_lat(p: bytes) -> None:
            await pub.publish("bench.lat", p)
            await pub.flush()  # nats-py buffers publishes: send each one now, as tern does

        await latency(publish_lat, lsink, a.latency_count, a.size, a.rate)
        return percentiles("nats-py (text)", rate, lsink.latencies)
    finally:
        await pub.close()
        await subc.close()


async def main(a: argparse.Namespace) -> list[Result]:
    results = []
    if a.tern:
        results.append(await run_tern(a.tern, a))
    if a.nats:
        results.append(await run_nats(a.nats, a))
    print(f"{'client':<24} {'msgs/s':>10} {'p50 µs':>9} {'p99 µs':>9} {'max µs':>9}")
    for r in results:
        print(f"{r.name:<24} {r.rate:>10,.0f} {r.p50_us:>9.0f} {r.p99_us:>9.0f} {r.max_us:>9.0f}")
    return results


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tern", default="tern://127.0.0.1:4224", help="binary port ('' to skip)")
    p.add_argument("--nats", default="nats://127.0.0.1:4222", help="text port ('' to skip)")
    p.add_argument("--count", type=int, default=200_000)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--latency-count", type=int, default=5000)
    p.add_argument("--rate", type=float, default=2000.0, help="latency run: messages per second")
    return p.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
