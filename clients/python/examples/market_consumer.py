"""A deliberately slow market-data consumer that reports what the broker dropped for it.

Its subscription's broker-side queue is small (`--queue`), and it takes `--delay` seconds
per message, so under a fast feed the broker drops the lowest-priority, oldest messages
first and says so with a DROP_NOTICE, shown here with the sequence ranges lost.

    python examples/market_consumer.py --server tern://127.0.0.1:4224 --delay 0.002
"""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter

import tern


async def report_drops(client: tern.Client) -> None:
    async for event in client.events():
        if isinstance(event, tern.DropNotice):
            ranges = ", ".join(f"shard {r.shard} {r.first}..={r.last}" for r in event.ranges[:4])
            print(f"dropped {event.count} ({event.source}): {ranges}")
        elif isinstance(event, tern.GapNotice | tern.DisconnectedEvent | tern.Resumed | tern.ErrorEvent):
            print(f"event: {event}")


async def main(server: str, queue: int, delay: float, seconds: float) -> None:
    async with tern.connect(server, name="market-consumer") as client:
        reporter = asyncio.create_task(report_drops(client))
        sub = await client.subscribe("md.>", max_queue_messages=queue)
        by_priority: Counter[int] = Counter()
        print(f"consuming md.> for {seconds}s, {delay}s per message")
        try:
            async with asyncio.timeout(seconds):
                async for msg in sub:
                    by_priority[msg.priority] += 1
                    await asyncio.sleep(delay)  # the slow part
        except TimeoutError:
            pass
        print(f"received by priority: {dict(sorted(by_priority.items()))}; dropped in total: {sub.dropped}")
        reporter.cancel()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", default="tern://127.0.0.1:4224")
    p.add_argument("--queue", type=int, default=64, help="the broker's queue bound for this subscription")
    p.add_argument("--delay", type=float, default=0.002)
    p.add_argument("--seconds", type=float, default=10.0)
    a = p.parse_args()
    asyncio.run(main(a.server, a.queue, a.delay, a.seconds))
