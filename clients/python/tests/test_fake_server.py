"""What a real broker does only under load or faults, played by a fake one: refusal before
the preface, a connection lost with an ack in flight (an identified publish is sent
again), a token refreshed while a handshake is under way, a GOAWAY whose deadline passes,
a presence snapshot in several frames."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

import tern
from tern import _codec as c
from tern.presence import Presence
from tests.test_resilience import wait_for_event

WELCOME = c.encode_server_frame(c.Welcome(1, 1, 1 << 20, c.DEFAULT_MAX_FRAME, 0, 1, 7, b"fake"))
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def fake(handler: Handler) -> AsyncIterator[str]:
    async def closing(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            await handler(r, w)
        finally:
            w.close()

    server = await asyncio.start_server(closing, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


async def frames(reader: asyncio.StreamReader, decoder: c.ClientFrameDecoder) -> AsyncIterator[c.ClientFrame]:
    while data := await reader.read(65536):
        decoder.feed(data)
        while (f := decoder.next()) is not None:
            yield f


async def test_refusal_before_the_preface_is_the_servers_error() -> None:
    async def refuse(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(c.encode_server_frame(c.ErrorFrame(0x0204, b"maximum connections exceeded", fatal=True)))
        await w.drain()
        w.close()

    async with fake(refuse) as addr:
        with pytest.raises(tern.ServerError) as e:
            await tern.connect(addr)
        assert e.value.code == tern.ErrorCode.TOO_MANY_CONNECTIONS
        assert "maximum connections exceeded" in str(e.value)


async def test_an_ack_in_flight_on_a_lost_connection_is_disconnected() -> None:
    async def drop_on_publish(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        assert (await r.readexactly(8))[:4] == b"TERN"
        w.write(WELCOME)
        async for f in frames(r, c.ClientFrameDecoder()):
            if isinstance(f, c.Publish):
                w.transport.abort()  # the connection drops before the ack
                return

    async with fake(drop_on_publish) as addr:
        client = await tern.connect(addr, reconnect=tern.ReconnectPolicy(base=5, cap=5))
        try:
            with pytest.raises(tern.Disconnected):
                await client.publish_acked("a.b", b"lost?", timeout=3)
        finally:
            await client.close()


async def test_an_identified_publish_lost_with_its_connection_is_sent_on_the_next() -> None:
    received: list[list[c.Publish]] = []

    async def lose_the_first(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        assert (await r.readexactly(8))[:4] == b"TERN"
        w.write(WELCOME)
        mine: list[c.Publish] = []
        received.append(mine)
        async for f in frames(r, c.ClientFrameDecoder()):
            if isinstance(f, c.Publish):
                mine.append(f)
                if len(received) == 1:
                    w.transport.abort()  # the first copy is lost with the connection
                    return
                assert f.ack_id is not None
                w.write(c.encode_server_frame(c.PublishAck(f.ack_id, 0, 42)))

    async with fake(lose_the_first) as addr:
        client = await tern.connect(addr, reconnect=tern.ReconnectPolicy(base=0.05, cap=0.1))
        try:
            ack = await client.publish_acked("a.b", b"once", message_id="m-1", timeout=10)
            assert ack.sequence == 42 and not ack.duplicate
            assert [[(p.message_id, p.payload) for p in ps] for ps in received] == [
                [(b"m-1", b"once")],
                [(b"m-1", b"once")],
            ]
        finally:
            await client.close()


async def test_identified_publishes_go_again_after_the_resubscriptions_within_the_buffer() -> None:
    seconds: list[c.ClientFrame] = []
    offline_published = asyncio.Event()
    done = asyncio.Event()
    connections = 0

    async def lose_the_first(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        assert (await r.readexactly(8))[:4] == b"TERN"
        incoming = frames(r, c.ClientFrameDecoder())
        await anext(incoming)  # HELLO
        if connections == 1:
            w.write(WELCOME)
            publishes = 0
            async for f in incoming:
                publishes += isinstance(f, c.Publish)
                if publishes == 4:
                    w.transport.abort()  # written, never acknowledged
                    return
            return
        await offline_published.wait()  # what is published while offline is buffered
        w.write(WELCOME)
        async for f in incoming:
            seconds.append(f)
            if isinstance(f, c.Publish):
                assert f.ack_id is not None
                w.write(c.encode_server_frame(c.PublishAck(f.ack_id, 0, len(seconds), duplicate=True)))
            if sum(isinstance(x, c.Publish) for x in seconds) == 3:
                done.set()

    async with fake(lose_the_first) as addr:
        # Each publish is a little over 1000 bytes on the wire: two and the small one fit.
        client = await tern.connect(
            addr, reconnect=tern.ReconnectPolicy(base=0.05, cap=0.1), offline_buffer_bytes=2200
        )
        try:
            sub = await client.subscribe("s", confirm=False)
            big = b"x" * 1000
            first, anonymous, second, third = [
                asyncio.create_task(client.publish_acked("p", big, message_id=mid, timeout=10))
                for mid in ("m-1", None, "m-2", "m-3")
            ]
            await wait_for_event(client, tern.DisconnectedEvent)
            # Without a message id the outcome is unknown; m-3 does not fit the buffer.
            with pytest.raises(tern.Disconnected):
                await anonymous
            with pytest.raises(tern.Disconnected):
                await third
            later = asyncio.create_task(client.publish_acked("q", b"later", message_id="m-4", timeout=10))
            await asyncio.sleep(0)
            offline_published.set()
            await asyncio.wait_for(done.wait(), 10)
            # The resubscription, the re-sent publishes in order, then the offline buffer.
            assert isinstance(seconds[0], c.Subscribe) and seconds[0].sid == sub.sid
            sent = [f for f in seconds[1:4] if isinstance(f, c.Publish)]
            assert [p.message_id for p in sent] == [b"m-1", b"m-2", b"m-4"]
            assert [(await t).duplicate for t in (first, second, later)] == [True, True, True]
        finally:
            await client.close()


async def test_without_reconnects_an_identified_publish_lost_with_its_connection_is_disconnected() -> None:
    async def drop_on_publish(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        assert (await r.readexactly(8))[:4] == b"TERN"
        w.write(WELCOME)
        async for f in frames(r, c.ClientFrameDecoder()):
            if isinstance(f, c.Publish):
                w.transport.abort()  # the connection drops before the ack
                return

    async with fake(drop_on_publish) as addr:
        client = await tern.connect(addr, reconnect=tern.ReconnectPolicy.disabled())
        try:
            # No next connection to send it on: the outcome is unknown, as without an id.
            with pytest.raises(tern.Disconnected):
                await client.publish_acked("a.b", b"lost?", message_id="m-1", timeout=3)
        finally:
            await client.close()


async def test_drain_unsubscribes_then_one_barrier_and_keeps_what_came_before_it() -> None:
    got: list[c.ClientFrame] = []

    async def server(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        assert (await r.readexactly(8))[:4] == b"TERN"
        w.write(WELCOME)
        incoming = frames(r, c.ClientFrameDecoder())
        await anext(incoming)  # HELLO
        async for f in incoming:
            got.append(f)
            if isinstance(f, c.Ping):
                # Routed before the UNSUBSCRIBE: delivered ahead of the PONG, and kept.
                sid = next(x.sid for x in got if isinstance(x, c.Unsubscribe))
                for i in range(3):
                    w.write(c.encode_server_frame(c.Message(sid, 0, 0, i + 1, 0, b"d", str(i).encode())))
                w.write(c.encode_server_frame(c.Pong()))

    async with fake(server) as addr:
        client = await tern.connect(addr)
        sub = await client.subscribe("d", confirm=False)
        await client.drain(timeout=5)
        assert client.is_closed
        assert [m.payload async for m in sub] == [b"0", b"1", b"2"]
        after = got[1:]  # (the SUBSCRIBE first)
        assert [type(f) for f in after] == [c.Unsubscribe, c.Ping]


async def test_a_token_refreshed_during_a_handshake_follows_its_welcome() -> None:
    connections = 0
    hello_seen = asyncio.Event()
    refreshed = asyncio.Event()
    seen: asyncio.Future[list[c.ClientFrame]] = asyncio.get_running_loop().create_future()

    async def server(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        assert (await r.readexactly(8))[:4] == b"TERN"
        incoming = frames(r, c.ClientFrameDecoder())
        hello = await anext(incoming)
        if connections == 1:
            w.write(WELCOME)
            await w.drain()
            w.transport.abort()  # connected once, then the network drops
            return
        hello_seen.set()
        await refreshed.wait()  # the token is refreshed while this HELLO waits for its WELCOME
        w.write(WELCOME)
        got = [hello]
        async for f in incoming:
            got.append(f)
            if isinstance(f, c.Auth) and not seen.done():
                seen.set_result(got)
        # (until the client closes)

    async with fake(server) as addr:
        client = await tern.connect(addr, token="jwt-1", reconnect=tern.ReconnectPolicy(base=0.05, cap=0.1))
        try:
            await asyncio.wait_for(hello_seen.wait(), 10)
            await client.refresh_token("jwt-2")
            refreshed.set()
            got = await asyncio.wait_for(seen, 10)
            hello, auth = got[0], got[1]
            assert isinstance(hello, c.Hello) and hello.auth_token == b"jwt-1"
            assert isinstance(auth, c.Auth) and auth.token == b"jwt-2"  # the first frame after WELCOME
            assert client._hello().auth_token == b"jwt-2"  # and every later HELLO
        finally:
            await client.close()


async def test_a_goaway_deadline_the_server_misses_is_enforced() -> None:
    async def lingering(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readexactly(8)
        w.write(WELCOME + c.encode_server_frame(c.GoAway(0, b"bye")))
        async for f in frames(r, c.ClientFrameDecoder()):
            if isinstance(f, c.Ping):
                w.write(c.encode_server_frame(c.Pong()))

    async with fake(lingering) as addr:
        client = await tern.connect(addr, reconnect=tern.ReconnectPolicy.disabled())
        try:
            ga = await wait_for_event(client, tern.GoAway, timeout=2)
            assert isinstance(ga, tern.GoAway) and ga.reason == "bye"
            gone = await wait_for_event(client, tern.DisconnectedEvent, timeout=3)
            assert isinstance(gone, tern.DisconnectedEvent) and "GOAWAY" in gone.reason
        finally:
            await client.close()


def member(name: str) -> c.Member:
    return c.Member(name.encode(), 1, 1, b"{}")


def test_a_snapshot_in_several_frames_is_one_event_and_overflow_keeps_a_snapshot() -> None:
    p = Presence(capacity=4)
    k = c.PresenceKind
    p.apply(c.Presence(1, k.JOINED, 1, user=b"me#1", member_token=b"t"))
    p.apply(c.Presence(1, k.SNAPSHOT, 3, more=True, offset=0, members=(member("a"), member("b"))))
    assert p.members() is None  # not yet: more is coming
    p.apply(c.Presence(1, k.SNAPSHOT, 3, offset=2, members=(member("c"),)))
    members = p.members()
    assert members is not None and [m.user for m in members] == ["a", "b", "c"]
    for name in "defg":  # the application does not read: the queue (4) overflows
        p.apply(c.Presence(1, k.JOIN, 4, members=(member(name),)))
    queued = list(p._events)
    assert isinstance(queued[0], tern.Joined)
    assert any(isinstance(e, tern.Snapshot) for e in queued) and len(queued) <= 4
    assert p.superseded > 0
    last = [e for e in queued if isinstance(e, tern.Snapshot)][-1]
    assert [m.user for m in last.members][:3] == ["a", "b", "c"]
    p.apply(c.Presence(1, k.LEAVE, 3, user=b"a"))
    assert [m.user for m in p.members() or ()][:1] == ["b"]
