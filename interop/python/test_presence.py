"""nats-py and presence: a room joined with a plain request, its join and leave events,
the member list and the count, and the leave of a connection that closed, after the grace
window (docs/presence.md)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg

from conftest import run_ternd

TIMEOUT_S = 10.0


async def connect(url: str, name: str) -> Client:
    nc: Client = await nats.connect(url, name=name, allow_reconnect=False)
    return nc


async def ask(nc: Client, subject: str, body: bytes = b"") -> Any:
    reply = await nc.request(subject, body, timeout=TIMEOUT_S)
    return json.loads(reply.data)


async def test_join_events_query_and_leave_on_close() -> None:
    with run_ternd(["--presence-grace", "200ms"]) as ternd:
        url = "nats://" + ternd.text
        watcher = await connect(url, "watcher")
        events: asyncio.Queue[Any] = asyncio.Queue()

        async def on_event(msg: Msg) -> None:
            await events.put(json.loads(msg.data))

        await watcher.subscribe("$TERN.PRESENCE.EVENTS.chat.1", cb=on_event)
        await watcher.flush()

        alice = await connect(url, "alice")
        joined = await ask(alice, "$TERN.PRESENCE.JOIN.chat.1", b'{"avatar":"cat"}')
        assert joined["count"] == 1
        event = await asyncio.wait_for(events.get(), TIMEOUT_S)
        assert (event["event"], event["count"]) == ("join", 1)
        assert event["user"].startswith("alice#")

        page = await ask(watcher, "$TERN.PRESENCE.chat.1")
        assert page["count"] == 1
        assert page["members"][0]["info"] == '{"avatar":"cat"}'
        count = await ask(watcher, "$TERN.PRESENCE.chat.1", b'{"count":true}')
        assert count == {"subject": "chat.1", "count": 1}

        await alice.close()
        event = await asyncio.wait_for(events.get(), TIMEOUT_S)
        assert (event["event"], event["count"]) == ("leave", 0)
        await watcher.close()
