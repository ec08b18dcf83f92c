"""A market-data publisher with priorities: trades at 7 (never dropped before a quote),
quotes at 3 with a coalescing key per symbol (a slow consumer's queue keeps only the
latest quote of each symbol), statistics at 0 (the first to go).

    python examples/market_feed.py --server tern://127.0.0.1:4224 --count 20000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random

import tern

SYMBOLS = ["ACME", "GLOBEX", "INITECH", "UMBRELLA", "HOOLI"]


async def main(server: str, count: int, rate: float) -> None:
    async with tern.connect(server, name="market-feed") as client:
        prices = dict.fromkeys(SYMBOLS, 100.0)
        for n in range(count):
            sym = random.choice(SYMBOLS)
            prices[sym] *= 1 + random.gauss(0, 0.001)
            quote = {"sym": sym, "bid": round(prices[sym] - 0.01, 2), "ask": round(prices[sym] + 0.01, 2)}
            await client.publish(f"md.quote.{sym}", json.dumps(quote), priority=3, coalescing_key=sym)
            if n % 10 == 0:
                trade = {"sym": sym, "px": round(prices[sym], 2), "qty": random.randint(1, 500)}
                await client.publish(f"md.trade.{sym}", json.dumps(trade), priority=7)
            if n % 100 == 0:
                await client.publish("md.stats", json.dumps({"published": n}), priority=0)
            if rate:
                await asyncio.sleep(1 / rate)
        ack = await client.publish_acked("md.stats", json.dumps({"published": count, "done": True}))
        print(f"published {count} quotes; last stored in shard {ack.shard} at sequence {ack.sequence}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", default="tern://127.0.0.1:4224")
    p.add_argument("--count", type=int, default=20000)
    p.add_argument("--rate", type=float, default=0, help="quotes per second (0: as fast as possible)")
    a = p.parse_args()
    asyncio.run(main(a.server, a.count, a.rate))
