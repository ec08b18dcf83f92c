"""A WebSocket client (`websockets`) against ternd's WebSocket port: the NATS text protocol
on `/` with permessage-deflate negotiated and used both ways (a compressible payload goes
in compressed and comes back compressed), and the same without compression when the
server does not offer it."""

from __future__ import annotations

import asyncio

import websockets
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

from conftest import run_ternd

TIMEOUT_S = 10.0


async def read_until(ws: websockets.ClientConnection, pattern: bytes) -> bytes:
    got = b""
    while pattern not in got:
        message = await asyncio.wait_for(ws.recv(), TIMEOUT_S)
        assert isinstance(message, bytes), "the server sends binary frames"
        got += message
    return got


async def exchange(url: str, compression: bool) -> list[str]:
    extensions = [ClientPerMessageDeflateFactory()] if compression else None
    async with websockets.connect(url, compression=None, extensions=extensions) as ws:
        info = await read_until(ws, b"}\r\n")
        assert info.startswith(b"INFO {")
        payload = b"tern " * 200
        command = b"CONNECT {}\r\nSUB chat.* 1\r\nPUB chat.room %d\r\n%s\r\nPING\r\n" % (
            len(payload),
            payload,
        )
        await ws.send(command)
        got = await read_until(ws, b"PONG\r\n")
        assert b"MSG chat.room 1 %d\r\n%s\r\n" % (len(payload), payload) in got
        return [type(e).__name__ for e in ws.protocol.extensions]


async def test_permessage_deflate_both_ways() -> None:
    with run_ternd(["--websocket-listen", "127.0.0.1:0", "--websocket-compression"]) as ternd:
        assert ternd.websocket is not None
        used = await exchange(f"ws://{ternd.websocket}/", compression=True)
        assert used == ["PerMessageDeflate"]


async def test_no_compression_unless_offered() -> None:
    with run_ternd(["--websocket-listen", "127.0.0.1:0"]) as ternd:
        assert ternd.websocket is not None
        used = await exchange(f"ws://{ternd.websocket}/", compression=True)
        assert used == []
