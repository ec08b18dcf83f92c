"""A request/reply service and its client: `serve` answers `svc.upper` (in a queue group,
so several can run), `ask` sends requests with a timeout; with no argument, both.

    python examples/request_reply.py serve &
    python examples/request_reply.py ask hello world
"""

from __future__ import annotations

import argparse
import asyncio

import tern


async def serve(client: tern.Client, ready: asyncio.Event) -> None:
    sub = await client.subscribe("svc.upper", queue="upper-workers")
    ready.set()
    async for req in sub:
        await req.respond(req.payload.upper())


async def ask(client: tern.Client, words: list[str]) -> None:
    for word in words:
        try:
            reply = await client.request("svc.upper", word, timeout=2)
            print(f"{word} -> {reply.payload.decode()}")
        except tern.TernTimeout:
            print(f"{word}: no answer within 2s (is a service running?)")


async def main(server: str, mode: str, words: list[str]) -> None:
    async with tern.connect(server, name=f"upper-{mode}") as client:
        ready = asyncio.Event()
        if mode == "serve":
            print("answering svc.upper")
            await serve(client, ready)
        elif mode == "ask":
            await ask(client, words)
        else:
            service = asyncio.create_task(serve(client, ready))
            await ready.wait()
            await ask(client, words)
            service.cancel()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", default="tern://127.0.0.1:4224")
    p.add_argument("mode", nargs="?", choices=["serve", "ask", "both"], default="both")
    p.add_argument("words", nargs="*", default=["hello", "tern"])
    a = p.parse_args()
    asyncio.run(main(a.server, a.mode, a.words))
