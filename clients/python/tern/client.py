"""The client: connecting, the connection's reader, reconnecting, and every call.

Owns: the connection cycle (TCP or TLS connect, preface and HELLO, CHALLENGE answered by
AUTH, WELCOME), then per connection one reader task (decodes frames and turns them into
deliveries, answers and events) and one heartbeat task (PINGs an idle server, declares it
dead after `server_timeout`, closes a connection whose GOAWAY deadline passed); the
supervisor task that reconnects with exponential backoff and full jitter over the server
list; the offline buffer; and the waiters (acks, flushes, requests, presence queries).

Order on every (re)connection: preface and HELLO; WELCOME; an AUTH if the token was
refreshed after that HELLO was made; every live subscription re-sent with its sid and its
resume token (or its original start), and its member token; then the offline buffer, in
order. All of that is written in one synchronous step, so no frame of the buffer can
overtake a resubscription.

Lossless subscriptions: when one's queue is full, the reader waits for room in it before
it handles that message (its resume tracker has not seen it) and, to keep the order,
anything after it; meanwhile nothing more is read from the socket, so the broker's queue
for this connection fills and it serves the lossless subscription from its log instead
(TCP backpressure, no client-side drop). While held, the heartbeat neither counts the
silence (the server is not silent: its bytes wait unread) nor can the broker's PINGs be
answered, so the heartbeat PINGs the broker itself, well within the broker's own ping
interval: a client that talks is not pinged, nor closed as stale. On a lost connection
the held message is discarded with the connection, and the resubscription resumes from
before it.

Never: blocks the event loop (no blocking calls; credentials and TLS settings are read
once, in `connect`); waits without a timeout (but for the application to take a message
from a full lossless subscription); lets an unbounded queue grow (subscription queues drop
and report, or for lossless ones hold the reader, the event queue discards its oldest and
counts, the offline buffer refuses with `OfflineBufferFull`, a connected publish waits for
the socket up to `write_timeout`); swallows an error: every failure reaches a caller as an
exception or the application as an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import os
import random
import ssl
import time
from collections import deque
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from . import _codec as c
from ._nkeys import NKey, read_creds
from .backoff import ReconnectPolicy
from .errors import (
    ClosedError,
    ConnectError,
    Disconnected,
    InvalidOption,
    InvalidSubject,
    NoResponders,
    OfflineBufferFull,
    PayloadTooLarge,
    ProtocolError,
    Refused,
    ServerError,
    TernError,
    TernTimeout,
)
from .events import (
    Closed,
    Connected,
    DropNotice,
    EpochMismatch,
    ErrorEvent,
    Event,
    EventQueue,
    GapNotice,
    GoAway,
    Reconnecting,
    Resumed,
    ServerInfo,
)
from .events import Disconnected as DisconnectedEvent
from .headers import Headers, HeadersInput, encode_headers
from .message import Ack, Msg
from .presence import Member, Presence, PresencePage
from .subscription import Subscription

VERSION = "0.1.0"
READ_CHUNK = 64 * 1024
GOAWAY_GRACE = 1.0
# Frames queued in one loop turn are written together; past this many bytes, at once.
COALESCE_BYTES = 64 * 1024
# Subjects already checked (a bounded cache: publishers use few subjects, many times).
SUBJECT_CACHE = 4096
DEFAULT_PORT = 4224

Payload = bytes | bytearray | memoryview | str


@dataclass(frozen=True, slots=True)
class Options:
    """Every setting of a client; `tern.connect` takes them as keyword arguments."""

    servers: tuple[tuple[str, int, bool], ...]
    name: str = ""
    echo: bool = True
    token: str | None = field(default=None, repr=False)
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    nkey: NKey | None = None
    tls: ssl.SSLContext | None = None
    tls_server_name: str | None = None
    reconnect: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    ping_interval: float = 10.0
    server_timeout: float = 30.0
    connect_timeout: float = 5.0
    offline_buffer_bytes: int = 8 << 20
    write_buffer_bytes: int = 8 << 20
    write_timeout: float = 10.0
    ack_timeout: float = 10.0
    subscription_capacity: int = 65536
    presence_capacity: int = 1024
    event_capacity: int = 1024
    linger: float = 2.0
    jitter_seed: int | None = None
    on_event: Callable[[Event], None] | None = None


def parse_server(url: str) -> tuple[str, int, bool]:
    """`tern://host:port`, `tls://host:port` or `host:port` (port 4224 by default) to
    (host, port, tls). A `nats://` URL is refused: that is the text port's protocol."""
    tls = False
    rest = url
    if "://" in url:
        scheme, rest = url.split("://", 1)
        if scheme == "tls":
            tls = True
        elif scheme != "tern":
            raise InvalidOption(f"{url}: unsupported scheme {scheme!r} (tern:// or tls://)")
    rest = rest.rstrip("/")
    if rest.startswith("["):
        host, _, port_s = rest[1:].partition("]")
        port_s = port_s.lstrip(":")
    elif rest.count(":") == 1:
        host, port_s = rest.split(":")
    else:
        host, port_s = rest, ""
    try:
        port = int(port_s) if port_s else DEFAULT_PORT
    except ValueError:
        raise InvalidOption(f"{url}: bad port {port_s!r}") from None
    if not host:
        raise InvalidOption(f"{url}: no host")
    return host, port, tls


def _b(value: Payload) -> bytes:
    if isinstance(value, str):
        return value.encode()
    return bytes(value)


_checked: dict[tuple[str, bool], bytes] = {}


def _subject(value: str, what: str, *, wildcards: bool) -> bytes:
    raw = _checked.get((value, wildcards))
    if raw is not None:
        return raw
    raw = value.encode()
    why = c.validate_subject(raw, wildcards=wildcards)
    if why is not None:
        raise InvalidSubject(f"{what} {value!r}: {why}")
    if len(_checked) >= SUBJECT_CACHE:
        _checked.clear()
    _checked[(value, wildcards)] = raw
    return raw


class _Failure(Exception):
    """Why a connection (or an attempt at one) ended."""

    def __init__(
        self, text: str, *, code: int | None = None, fatal_server: bool = False, protocol: bool = False
    ) -> None:
        super().__init__(text)
        self.code = code
        self.fatal_server = fatal_server
        self.protocol = protocol


@dataclass(slots=True)
class _Out:
    """A frame waiting to be written, and what its writing starts waiting for."""

    data: bytes
    kind: Literal["publish", "ping", "query", "control"] = "control"
    ack_id: int | None = None
    ping: asyncio.Future[None] | None = None
    query_id: int | None = None


@dataclass(slots=True)
class _Query:
    future: asyncio.Future[PresencePage]
    members: list[Member]
    offset: int = 0


class _Conn:
    """One connection and everything in flight on it."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        address: str,
        decoder: c.ServerFrameDecoder,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.address = address
        self.decoder = decoder
        self.epoch = 0
        # The token its HELLO carried (a refresh during the handshake is sent after WELCOME).
        self.token: bytes | None = None
        self.info: ServerInfo | None = None
        self.pings: deque[asyncio.Future[None] | None] = deque()
        self.acks_written: set[int] = set()
        self.queries_written: set[int] = set()
        now = time.monotonic()
        self.last_read = now
        self.last_ping = now
        self.going_away: float | None = None
        self.ended: asyncio.Future[_Failure] = asyncio.get_running_loop().create_future()
        self.tasks: list[asyncio.Task[None]] = []
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.flush_scheduled = False
        # Set when a write went out at once: the next publish lets the loop run (the
        # readers among them), so a publisher in a tight loop cannot starve them.
        self.yield_due = False
        # The lossless subscription the reader waits for room in, if it does: nothing is
        # read from the socket meanwhile.
        self.held: Subscription | None = None

    def flush_pending(self) -> None:
        self.flush_scheduled = False
        if self.pending:
            data = b"".join(self.pending) if len(self.pending) > 1 else self.pending[0]
            self.pending.clear()
            self.pending_bytes = 0
            if not self.writer.transport.is_closing():
                self.writer.write(data)

    def end(self, failure: _Failure) -> None:
        if not self.ended.done():
            self.ended.set_result(failure)

    def write_bytes(self, data: bytes) -> None:
        """Queues bytes for the socket. Frames written in one turn of the event loop go
        out in one `write` at its end (or at once past `COALESCE_BYTES`), in order."""
        self.pending.append(data)
        self.pending_bytes += len(data)
        if self.pending_bytes >= COALESCE_BYTES:
            self.flush_pending()
            self.yield_due = True
        elif not self.flush_scheduled:
            self.flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush_pending)

    def write(self, out: _Out) -> None:
        """Queues a frame (`write_bytes`) and records what its writing starts waiting for."""
        self.write_bytes(out.data)
        if out.ack_id is not None:
            self.acks_written.add(out.ack_id)
        if out.kind == "ping":
            self.pings.append(out.ping)
        if out.query_id is not None:
            self.queries_written.add(out.query_id)


class Client:
    """A connection to a Tern broker that stays up. Make one with `tern.connect(...)`."""

    def __init__(self, opts: Options) -> None:
        self._opts = opts
        self._rng = random.Random(opts.jitter_seed)
        self._events = EventQueue(opts.event_capacity)
        self._conn: _Conn | None = None
        self._closed = False
        self._close_reason = ""
        self._token = opts.token
        self._subs: dict[int, Subscription] = {}
        self._sids = itertools.count(1)
        self._ack_ids = itertools.count(1)
        self._query_ids = itertools.count(1)
        self._request_ids = itertools.count(1)
        self._offline: deque[_Out] = deque()
        self._offline_bytes = 0
        self._acks: dict[int, asyncio.Future[Ack]] = {}
        # Acknowledged publishes with a message id, by ack id, while their caller waits: if
        # the connection they were written on is lost before their ack, they are sent again
        # on the next one (the broker acknowledges a repeat as a duplicate).
        self._resend: dict[int, _Out] = {}
        self._queries: dict[int, _Query] = {}
        self._requests: dict[str, asyncio.Future[Msg]] = {}
        self._inbox_prefix = "_INBOX." + os.urandom(8).hex()
        self._inbox: Subscription | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._next_server = 0
        self._drain_lock = asyncio.Lock()
        self._inbox_lock = asyncio.Lock()
        self._info: ServerInfo | None = None
        self._max_payload = c.DEFAULT_MAX_PAYLOAD
        self._dropped_subs: set[int] = set()

    # ------------------------------------------------------------------ properties

    @property
    def is_connected(self) -> bool:
        return self._conn is not None and not self._closed

    @property
    def is_closed(self) -> bool:
        return self._closed

    @property
    def server_info(self) -> ServerInfo | None:
        """The broker of the current (or, while disconnected, the last) connection."""
        return self._info

    @property
    def offline_buffered(self) -> int:
        """Bytes of publishes waiting in the offline buffer."""
        return self._offline_bytes

    def events(self) -> EventQueue:
        """The bounded event queue: `async for event in client.events()`."""
        return self._events

    # ------------------------------------------------------------------ lifecycle

    async def _start(self) -> None:
        try:
            conn = await self._attempt(first=True)
        except _Failure as f:
            self._closed = True
            if f.code is not None:
                raise ServerError(f.code, str(f)) from None
            if f.protocol:
                raise ProtocolError(str(f)) from None
            raise ConnectError(str(f)) from None
        self._established(conn, first=True)
        self._supervisor = asyncio.create_task(self._supervise(conn), name="tern-supervisor")

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _emit(self, event: Event) -> None:
        self._events.emit(event)
        if self._opts.on_event is not None:
            try:
                self._opts.on_event(event)
            except Exception as e:  # the application's callback: reported, not swallowed
                asyncio.get_running_loop().call_exception_handler(
                    {"message": "tern: on_event callback raised", "exception": e}
                )

    async def close(self) -> None:
        """Closes now: buffered frames are written for up to `linger` seconds; waiters fail
        with `ClosedError`; subscriptions end (queued messages stay readable)."""
        await self._close("closed by the application")

    async def _close(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self._close_reason = reason
        sup = self._supervisor
        if sup is not None and sup is not asyncio.current_task():
            sup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sup
        conn = self._conn
        self._conn = None
        if conn is not None:
            for t in conn.tasks:
                t.cancel()
            conn.flush_pending()
            conn.writer.close()
            try:
                await asyncio.wait_for(conn.writer.wait_closed(), self._opts.linger)
            except (TimeoutError, OSError, ssl.SSLError):
                conn.writer.transport.abort()
        closed = ClosedError(f"the client is closed ({reason})")
        for out in self._offline:
            if out.ping is not None and not out.ping.done():
                out.ping.set_exception(closed)
        if self._offline_bytes:
            reason = f"{reason} ({self._offline_bytes} buffered bytes of publishes discarded)"
        self._offline.clear()
        self._offline_bytes = 0
        self._fail_waiters(closed, everything=True, conn=conn)
        for sub in list(self._subs.values()):
            sub._end()
        self._subs.clear()
        self._emit(Closed(reason))

    def _fail_waiters(self, error: TernError, *, everything: bool, conn: _Conn | None) -> None:
        """Fails the waiters whose answer can no longer come: those written on `conn`, or
        with `everything`, all of them."""
        for ack_id in list(self._acks):
            if everything or (conn is not None and ack_id in conn.acks_written):
                fut = self._acks.pop(ack_id)
                if not fut.done():
                    fut.set_exception(error)
        for qid in list(self._queries):
            if everything or (conn is not None and qid in conn.queries_written):
                q = self._queries.pop(qid)
                if not q.future.done():
                    q.future.set_exception(error)
        if conn is not None:
            for ping in conn.pings:
                if ping is not None and not ping.done():
                    ping.set_exception(error)
            conn.pings.clear()
        if everything:
            for request in self._requests.values():
                if not request.done():
                    request.set_exception(error)
            self._requests.clear()

    # ------------------------------------------------------------------ connecting

    async def _attempt(self, *, first: bool) -> _Conn:
        """One attempt: every server once, from the one after the last used."""
        servers = self._opts.servers
        last: _Failure | None = None
        for i in range(len(servers)):
            host, port, tls = servers[(self._next_server + i) % len(servers)]
            try:
                conn = await asyncio.wait_for(self._open(host, port, tls), self._opts.connect_timeout)
            except TimeoutError:
                limit = self._opts.connect_timeout
                last = _Failure(f"{host}:{port}: connecting and the handshake took longer than {limit}s")
                continue
            except _Failure as f:
                last = _Failure(
                    f"{host}:{port}: {f}", code=f.code, fatal_server=f.fatal_server, protocol=f.protocol
                )
                if first and f.fatal_server:
                    raise last from None
                continue
            self._next_server = (self._next_server + i + 1) % len(servers)
            return conn
        assert last is not None
        raise last

    async def _open(self, host: str, port: int, tls: bool) -> _Conn:
        ctx = self._opts.tls if tls else None
        server_hostname = (self._opts.tls_server_name or host) if ctx is not None else None
        try:
            reader, writer = await asyncio.open_connection(
                host, port, ssl=ctx, server_hostname=server_hostname, limit=READ_CHUNK * 2
            )
        except ssl.SSLCertVerificationError as e:
            raise _Failure(
                f"TLS handshake failed: certificate verify failed: {e.verify_message}"
                " (give a tls=SSLContext that trusts the CA that signed the server's certificate,"
                " and connect by a name the certificate carries, or set tls_server_name)"
            ) from None
        except ssl.SSLError as e:
            raise _Failure(f"TLS handshake failed: {e.reason or e}{_tls_hint(e)}") from None
        except OSError as e:
            raise _Failure(f"cannot connect: {e.strerror or e}") from None
        try:
            return await self._handshake(reader, writer, f"{host}:{port}", tls=ctx is not None)
        except BaseException:
            writer.transport.abort()
            raise

    def _hello(self) -> c.Hello:
        o = self._opts
        return c.Hello(
            client_name=o.name.encode(),
            client_version=f"tern-client-python/{VERSION}".encode(),
            echo=o.echo,
            auth_token=self._token.encode() if self._token is not None else None,
            user=o.user.encode() if o.user is not None else None,
            password=o.password.encode() if o.password is not None else None,
            nkey=o.nkey.public.encode() if o.nkey is not None else None,
            # A request nobody receives is answered at once (NoResponders), not timed out.
            no_responders=True,
        )

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, address: str, *, tls: bool
    ) -> _Conn:
        hello = self._hello()
        writer.write(c.Preface().encode() + c.encode_client_frame(hello))
        decoder = c.ServerFrameDecoder()
        challenged = False
        while True:
            try:
                data = await reader.read(READ_CHUNK)
            except ssl.SSLError as e:
                raise _Failure(f"TLS failed during the handshake: {e.reason or e}{_tls_hint(e)}") from None
            except OSError as e:
                raise _Failure(f"read failed during the handshake: {e}") from None
            if not data:
                hint = (
                    " (is TLS on at the server? a plain-text port closes on a TLS hello)"
                    if tls
                    else " (does the server want TLS? connect with tls=SSLContext or a tls:// address)"
                )
                raise _Failure("the server closed the connection during the handshake" + hint)
            decoder.feed(data)
            while True:
                try:
                    frame = decoder.next()
                except c.CodecError as e:
                    raise _Failure(_handshake_codec_error(e, tls=tls), protocol=True) from None
                if frame is None:
                    break
                if isinstance(frame, c.Welcome):
                    conn = _Conn(reader, writer, address, decoder)
                    conn.token = hello.auth_token
                    conn.epoch = frame.log_epoch
                    conn.info = ServerInfo(
                        address,
                        frame.version,
                        frame.shard_count,
                        frame.max_payload,
                        frame.max_frame,
                        frame.ping_interval_ms / 1000,
                        frame.client_id,
                        frame.log_epoch,
                        frame.server_id.decode("utf-8", "replace"),
                    )
                    decoder.max_frame = max(frame.max_frame, c.DEFAULT_MAX_FRAME)
                    return conn
                if isinstance(frame, c.ErrorFrame):
                    text = frame.message.decode("utf-8", "replace")
                    if frame.fatal:
                        raise _Failure(text, code=frame.code, fatal_server=True)
                    self._emit(ErrorEvent(frame.code, text, frame.sid, False))
                elif isinstance(frame, c.Ping):
                    writer.write(c.encode_client_frame(c.Pong()))
                elif isinstance(frame, c.Challenge):
                    if challenged:
                        raise _Failure("a second CHALLENGE", protocol=True)
                    challenged = True
                    if self._opts.nkey is None:
                        raise _Failure("a CHALLENGE, but this client has no nkey (nkey_seed or creds)")
                    # ed25519 in pure Python: a few ms of CPU, kept off the loop.
                    sig = await asyncio.to_thread(self._opts.nkey.sign, frame.nonce)
                    writer.write(c.encode_client_frame(c.Auth(signature=sig)))
                else:
                    raise _Failure(f"expected WELCOME, got {type(frame).__name__}", protocol=True)

    def _established(self, conn: _Conn, *, first: bool) -> None:
        """WELCOME came: resubscribe, flush the offline buffer, start the tasks. One
        synchronous step: nothing else can write in between."""
        assert conn.info is not None
        self._max_payload = conn.info.max_payload
        self._info = conn.info
        token = self._token.encode() if self._token is not None else None
        if token is not None and token != conn.token:
            # Refreshed while this connection's HELLO was on its way: the new one, first.
            conn.write(_Out(c.encode_client_frame(c.Auth(token=token))))
            conn.token = token
        resent = 0
        for sub in list(self._subs.values()):
            if sub._ended:
                continue
            sub._confirm = None  # nobody waits for a resubscription's confirmation
            conn.write(_Out(c.encode_client_frame(sub._subscribe_frame())))
            if sub._remaining is not None:
                conn.write(_Out(c.encode_client_frame(c.Unsubscribe(sub.sid, sub._remaining))))
            resent += 1
        buffered = self._offline_bytes
        while self._offline:
            conn.write(self._offline.popleft())
        self._offline_bytes = 0
        self._conn = conn
        conn.tasks.append(asyncio.create_task(self._read_loop(conn), name="tern-reader"))
        conn.tasks.append(asyncio.create_task(self._heartbeat(conn), name="tern-heartbeat"))
        if first:
            self._emit(Connected(conn.info))
        else:
            self._emit(Resumed(conn.info, resent, buffered))

    async def _supervise(self, conn: _Conn) -> None:
        """Runs until closed: waits for the connection to end, then reconnects."""
        failures = 0
        try:
            while not self._closed:
                failure = await conn.ended
                announced = conn.going_away is not None and failure.code is None
                self._teardown(conn, failure)
                if self._closed:
                    return
                error = str(failure)
                if announced:
                    error = f"the server went away as announced: {error}"
                failures = 0
                while True:
                    if not self._opts.reconnect.allows(failures):
                        await self._close(
                            f"gave up reconnecting after {failures} failed attempts; last: {error}"
                        )
                        return
                    delay = 0.0 if announced else self._opts.reconnect.delay(failures, self._rng)
                    announced = False
                    self._emit(Reconnecting(failures + 1, delay, error))
                    await asyncio.sleep(delay)
                    try:
                        conn = await self._attempt(first=False)
                    except _Failure as f:
                        failures += 1
                        error = str(f)
                        continue
                    break
                self._established(conn, first=False)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a bug: say so and close rather than hang
            self._emit(ErrorEvent(c.ErrorCode.INTERNAL, f"the client's supervisor failed: {e!r}", fatal=True))
            await self._close(f"internal error: {e!r}")

    def _teardown(self, conn: _Conn, failure: _Failure) -> None:
        for t in conn.tasks:
            if t is not asyncio.current_task():
                t.cancel()
        conn.writer.transport.abort()
        if self._conn is conn:
            self._conn = None
        self._requeue_identified(conn)
        self._fail_waiters(
            Disconnected(f"the connection was lost before the answer came: {failure}"),
            everything=False,
            conn=conn,
        )
        for sub in self._subs.values():
            if sub._confirm is not None and not sub._confirm.done():
                sub._confirm.set_result(None)  # it will be re-sent on the next connection
        if not self._closed:
            self._emit(DisconnectedEvent(str(failure)))

    def _requeue_identified(self, conn: _Conn) -> None:
        """The acknowledged publishes with a message id that `conn` was given and did not
        acknowledge go back to the front of the offline buffer, in the order they were
        written (ack ids grow in that order), ahead of what was published since: the next
        connection sends them again (after the resubscriptions) and their callers keep
        waiting. Bounded by `offline_buffer_bytes`: what does not fit fails `Disconnected`."""
        if self._closed or not self._opts.reconnect.allows(0):
            return  # no next connection: they fail `Disconnected` with the rest
        again = sorted(a for a in conn.acks_written if a in self._resend)
        # They count against the offline buffer's bound with what waits there already: the
        # oldest go back while the total fits; from the first that does not on, none does
        # (no gaps in the order), and those stay in `acks_written`, to fail `Disconnected`.
        room = self._opts.offline_buffer_bytes - self._offline_bytes
        fits: list[_Out] = []
        for ack_id in again:
            out = self._resend[ack_id]
            if len(out.data) > room:
                break
            room -= len(out.data)
            fits.append(out)
            conn.acks_written.discard(ack_id)
        for out in reversed(fits):
            self._offline.appendleft(out)
            self._offline_bytes += len(out.data)

    async def _heartbeat(self, conn: _Conn) -> None:
        o = self._opts
        # While the reader is held (a full lossless subscription), the broker's PINGs wait
        # unread: the client PINGs it instead, at least twice per broker ping interval, so
        # the broker (which pings a client silent for that long, and closes one that leaves
        # `ping_max` of its PINGs unanswered) sees it alive. The PONGs wait with the rest.
        server_ping = conn.info.ping_interval if conn.info is not None else 0.0
        keepalive = min(o.ping_interval, server_ping / 2) if server_ping > 0 else o.ping_interval
        tick = max(0.005, min(keepalive, o.server_timeout, 1.0) / 4)
        while not conn.ended.done():
            await asyncio.sleep(tick)
            now = time.monotonic()
            silence = now - conn.last_read
            if conn.going_away is not None and now >= conn.going_away:
                conn.end(_Failure("the server did not close the connection by its GOAWAY deadline"))
            elif conn.held is not None:
                # Not silence: the client does not read (the server's bytes wait for it).
                # A lost connection shows on the writing side (a closed transport, or a
                # PING whose write failed); a silent one only once reading goes on.
                if conn.writer.transport.is_closing():
                    exc = conn.reader.exception()
                    why = f"read failed: {exc}" if exc is not None else "the connection was closed"
                    conn.end(_Failure(f"{why} (while reading was held for a full lossless subscription)"))
                elif now - conn.last_ping >= keepalive:
                    conn.last_ping = now
                    conn.write(_Out(c.encode_client_frame(c.Ping()), "ping"))
            elif silence >= o.server_timeout:
                conn.end(_Failure(f"heartbeat timeout: nothing from the server for {silence:.1f}s"))
            elif silence >= o.ping_interval and now - conn.last_ping >= o.ping_interval:
                conn.last_ping = now
                conn.write(_Out(c.encode_client_frame(c.Ping()), "ping"))

    async def _read_loop(self, conn: _Conn) -> None:
        try:
            # Frames that came with the WELCOME, already buffered.
            await self._handle_buffered(conn)
            while not conn.ended.done():
                try:
                    data = await conn.reader.read(READ_CHUNK)
                except (OSError, ssl.SSLError) as e:
                    conn.end(_Failure(f"read failed: {e}"))
                    return
                if not data:
                    conn.end(_Failure("the server closed the connection"))
                    return
                conn.last_read = time.monotonic()
                conn.decoder.feed(data)
                await self._handle_buffered(conn)
        except _Failure as f:
            conn.end(f)
        except c.CodecError as e:
            conn.end(_Failure(f"undecodable frame from the server: {e}"))
        except Exception as e:  # a bug in frame handling: end the connection, loudly
            self._emit(ErrorEvent(c.ErrorCode.INTERNAL, f"the client failed handling a frame: {e!r}"))
            conn.end(_Failure(f"internal error: {e!r}"))

    async def _handle_buffered(self, conn: _Conn) -> None:
        try:
            while not conn.ended.done() and (frame := conn.decoder.next()) is not None:
                if type(frame) is c.Message:
                    sub = self._subs.get(frame.sid)
                    if sub is not None and sub._full():
                        await self._hold(conn, sub)
                self._handle(conn, frame)
        finally:
            self._report_drops()

    async def _hold(self, conn: _Conn, sub: Subscription) -> None:
        """A message for `sub`, a lossless subscription whose queue is full: waits (the
        message and everything after it unhandled, the socket unread) until the
        application has made room or the subscription has ended. Cancelled with the
        reader when the connection ends or the client closes: the message is then
        discarded, unseen by the resume tracker, and comes again after a reconnect."""
        self._report_drops()  # other subscriptions' drops are not held back with it
        conn.held = sub
        try:
            await sub._wait_room()
        finally:
            conn.held = None
            # The silence clock restarts: the server was not silent, the client was not
            # reading.
            conn.last_read = time.monotonic()

    def _report_drops(self) -> None:
        for sid in self._dropped_subs:
            sub = self._subs.get(sid)
            if sub is not None and sub._local_count:
                self._emit(DropNotice(sid, sub._local_count, tuple(sub._local_drops), "client"))
                sub._local_count = 0
                sub._local_drops = []
        self._dropped_subs.clear()

    # ------------------------------------------------------------------ frames from the server

    def _handle(self, conn: _Conn, frame: c.ServerFrame) -> None:
        if isinstance(frame, c.Message):
            self._on_message(conn, frame)
        elif isinstance(frame, c.PublishAck):
            conn.acks_written.discard(frame.ack_id)
            fut = self._acks.pop(frame.ack_id, None)
            if fut is not None and not fut.done():
                if frame.code is not None:
                    fut.set_exception(Refused(frame.code, frame.message.decode("utf-8", "replace")))
                else:
                    fut.set_result(Ack(frame.shard, frame.sequence, frame.duplicate))
        elif isinstance(frame, c.ErrorFrame):
            self._on_error(conn, frame)
        elif isinstance(frame, c.Subscribed):
            sub = self._subs.get(frame.sid)
            if sub is not None:
                sub._tracker.start_at(frame.epoch, frame.last_sequences)
                if sub._confirm is not None and not sub._confirm.done():
                    sub._confirm.set_result(None)
        elif isinstance(frame, c.DropNotice):
            sub = self._subs.get(frame.sid)
            if sub is not None:
                sub.dropped += frame.dropped
            self._emit(DropNotice(frame.sid, frame.dropped, frame.ranges, "server"))
        elif isinstance(frame, c.GapNotice):
            self._emit(GapNotice(frame.sid, frame.shard, frame.requested, frame.oldest))
        elif isinstance(frame, c.Presence):
            self._on_presence(frame)
        elif isinstance(frame, c.GoAway):
            conn.going_away = time.monotonic() + frame.close_within_ms / 1000 + GOAWAY_GRACE
            self._emit(GoAway(frame.close_within_ms / 1000, frame.reason.decode("utf-8", "replace")))
        elif isinstance(frame, c.Ping):
            conn.write(_Out(c.encode_client_frame(c.Pong())))
        elif isinstance(frame, c.Pong):
            if conn.pings:
                ping = conn.pings.popleft()
                if ping is not None and not ping.done():
                    ping.set_result(None)
        else:
            raise _Failure(f"unexpected {type(frame).__name__} after WELCOME")

    def _on_message(self, conn: _Conn, m: c.Message) -> None:
        sub = self._subs.get(m.sid)
        if sub is None or sub._ended:
            return  # a late delivery for a subscription that has ended
        sub._tracker.observe(conn.epoch, m.shard, m.sequence)
        msg = Msg(
            m.subject.decode("utf-8", "replace"),
            m.payload,
            m.reply.decode("utf-8", "replace") if m.reply is not None else None,
            m.headers,
            m.priority,
            m.shard,
            m.sequence,
            m.timestamp,
            m.replayed,
            m.sid,
            self,
        )
        if sub is self._inbox:
            token = msg.subject.rpartition(".")[2]
            fut = self._requests.pop(token, None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
        else:
            before = sub.dropped
            sub._deliver(msg)
            if sub.dropped != before:
                self._dropped_subs.add(sub.sid)
        if sub._remaining is not None:
            sub._remaining -= 1
            if sub._remaining <= 0:
                self._subs.pop(sub.sid, None)
                sub._end()

    def _on_error(self, conn: _Conn, e: c.ErrorFrame) -> None:
        text = e.message.decode("utf-8", "replace")
        if e.fatal:
            self._emit(ErrorEvent(e.code, text, e.sid, True))
            raise _Failure(text, code=e.code, fatal_server=True)
        if e.sid is not None and e.code == c.ErrorCode.EPOCH_MISMATCH:
            sub = self._subs.get(e.sid)
            if sub is not None:
                sub._tracker.reset(conn.epoch)
            self._emit(EpochMismatch(e.sid, text))
            return
        if e.sid is not None and e.code != c.ErrorCode.UNKNOWN_SUBSCRIPTION:
            sub = self._subs.pop(e.sid, None)
            if sub is not None:
                sub._end(ServerError(e.code, text, e.sid))
        self._emit(ErrorEvent(e.code, text, e.sid, False))

    def _on_presence(self, p: c.Presence) -> None:
        if p.query:
            q = self._queries.get(p.id)
            if q is None:
                return  # its caller gave up waiting
            if p.kind == c.PresenceKind.REFUSED:
                del self._queries[p.id]
                if not q.future.done():
                    q.future.set_exception(ServerError(p.code, p.message.decode("utf-8", "replace")))
                return
            if not q.members:
                q.offset = p.offset
            q.members.extend(Member.of(m) for m in p.members)
            if not p.more:
                del self._queries[p.id]
                if not q.future.done():
                    q.future.set_result(PresencePage(p.count, q.offset, tuple(q.members)))
            return
        sub = self._subs.get(p.id)
        if sub is None:
            return
        if p.kind == c.PresenceKind.JOINED:
            sub._member_token = p.member_token
        elif p.kind == c.PresenceKind.REFUSED:
            self._emit(ErrorEvent(p.code, p.message.decode("utf-8", "replace"), p.id, False))
        if sub.presence is not None:
            sub.presence.apply(p)

    # ------------------------------------------------------------------ writing

    def _live(self) -> _Conn | None:
        """The connection, if it can still take frames: one whose end was seen (and whose
        teardown has not run yet) cannot, and what would go to it goes to the offline
        buffer (or, for a subscription, waits for the resubscribe) instead."""
        conn = self._conn
        if conn is None or conn.ended.done() or conn.writer.transport.is_closing():
            return None
        return conn

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"the client is closed ({self._close_reason})")

    def _send(self, out: _Out) -> None:
        """Writes now when connected; otherwise into the offline buffer (bounded)."""
        self._check_open()
        conn = self._live()
        if conn is not None:
            conn.write(out)
            return
        if out.kind == "publish" and self._offline_bytes + len(out.data) > self._opts.offline_buffer_bytes:
            raise OfflineBufferFull(
                f"the offline buffer holds {self._offline_bytes} of {self._opts.offline_buffer_bytes} bytes:"
                f" a publish of {len(out.data)} bytes does not fit"
            )
        self._offline.append(out)
        if out.kind == "publish":
            self._offline_bytes += len(out.data)

    async def _backpressure(self) -> None:
        conn = self._conn
        if conn is None:
            return
        transport = conn.writer.transport
        if transport.get_write_buffer_size() + conn.pending_bytes <= self._opts.write_buffer_bytes:
            if conn.yield_due:
                conn.yield_due = False
                await asyncio.sleep(0)
            return
        conn.flush_pending()
        async with self._drain_lock:
            try:
                await asyncio.wait_for(conn.writer.drain(), self._opts.write_timeout)
            except TimeoutError:
                raise TernTimeout(
                    f"the socket took nothing for {self._opts.write_timeout}s (write_timeout)"
                ) from None
            except (ConnectionError, OSError):
                pass  # the reader sees the loss and reconnects; the frame went to that connection

    def _publish_frame(
        self,
        subject: str,
        payload: Payload,
        *,
        reply: str | None,
        headers: HeadersInput | Headers | None,
        priority: int,
        message_id: str | bytes | None,
        coalescing_key: str | bytes | None,
        ack_id: int | None,
    ) -> bytes:
        subj = _subject(subject, "subject", wildcards=False)
        rep = _subject(reply, "reply subject", wildcards=False) if reply is not None else None
        if not 0 <= priority <= 7:
            raise InvalidOption(f"priority {priority} (0..=7)")
        mid = _b(message_id) if message_id is not None else None
        ckey = _b(coalescing_key) if coalescing_key is not None else None
        if mid == b"" or ckey == b"":
            raise InvalidOption("an empty message id or coalescing key")
        try:
            block = encode_headers(headers)
        except ValueError as e:
            raise InvalidOption(str(e)) from None
        if block is not None and not block.startswith(b"NATS/1.0"):
            raise InvalidOption("a header block must start with NATS/1.0")
        data = _b(payload)
        size = len(data) + (len(block) if block is not None else 0)
        if size > self._max_payload:
            raise PayloadTooLarge(
                f"{size} bytes of headers and payload, over the server's {self._max_payload}"
            )
        try:
            return c.encode_client_frame(c.Publish(subj, data, priority, rep, block, mid, ckey, ack_id))
        except c.CodecError as e:
            raise InvalidOption(e.detail) from None

    # ------------------------------------------------------------------ the calls

    async def publish(
        self,
        subject: str,
        payload: Payload = b"",
        *,
        reply: str | None = None,
        headers: HeadersInput | Headers | None = None,
        priority: int = 0,
        message_id: str | bytes | None = None,
        coalescing_key: str | bytes | None = None,
    ) -> None:
        """Fire and forget. Connected: written to the socket (waits, up to `write_timeout`,
        only while more than `write_buffer_bytes` are unwritten). Disconnected: kept in
        the offline buffer, or `OfflineBufferFull`. Refusals come as `ErrorEvent`s."""
        if (
            reply is None
            and headers is None
            and message_id is None
            and coalescing_key is None
            and type(payload) is bytes
            and 0 <= priority <= 7
            and len(payload) <= self._max_payload
        ):
            # The common case, without the option checks.
            data = c.encode_publish(_subject(subject, "subject", wildcards=False), payload, priority)
            conn = self._live()
            if conn is not None and not self._closed:
                conn.write_bytes(data)
            else:
                self._send(_Out(data, "publish"))
            await self._backpressure()
            return
        data = self._publish_frame(
            subject,
            payload,
            reply=reply,
            headers=headers,
            priority=priority,
            message_id=message_id,
            coalescing_key=coalescing_key,
            ack_id=None,
        )
        self._send(_Out(data, "publish"))
        await self._backpressure()

    async def publish_acked(
        self,
        subject: str,
        payload: Payload = b"",
        *,
        reply: str | None = None,
        headers: HeadersInput | Headers | None = None,
        priority: int = 0,
        message_id: str | bytes | None = None,
        coalescing_key: str | bytes | None = None,
        timeout: float | None = None,
    ) -> Ack:
        """Publishes and waits for the broker's PUBLISH_ACK: an `Ack`, or `Refused` (with the
        code), `TernTimeout` after `timeout` (default `ack_timeout`). A publish made while
        disconnected waits in the offline buffer. Written on a connection that is then
        lost before its ack: with a `message_id`, it is sent again first thing on the next
        connection and the wait goes on (the broker deduplicates: if the first copy got
        there, the ack says `duplicate` and nothing is stored or delivered twice, within
        its dedupe window; not with `--no-store`), right after the resubscriptions, in
        the order such publishes were written, within `offline_buffer_bytes` (those that
        do not fit: `Disconnected`); without one, `Disconnected` (the outcome is
        unknown)."""
        ack_id = next(self._ack_ids)
        data = self._publish_frame(
            subject,
            payload,
            reply=reply,
            headers=headers,
            priority=priority,
            message_id=message_id,
            coalescing_key=coalescing_key,
            ack_id=ack_id,
        )
        fut: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        self._acks[ack_id] = fut
        out = _Out(data, "publish", ack_id=ack_id)
        if message_id is not None:
            self._resend[ack_id] = out
        try:
            self._send(out)
            await self._backpressure()
            wait = self._opts.ack_timeout if timeout is None else timeout
            try:
                return await asyncio.wait_for(asyncio.shield(fut), wait)
            except TimeoutError:
                raise TernTimeout(f"no PUBLISH_ACK for {subject!r} within {wait}s") from None
        finally:
            self._acks.pop(ack_id, None)
            self._resend.pop(ack_id, None)

    async def subscribe(
        self,
        subject: str,
        *,
        queue: str | None = None,
        resume: c.ResumeToken | None = None,
        since: datetime | int | None = None,
        last: int | None = None,
        lossless: bool = False,
        max_queue_messages: int = 0,
        max_queue_bytes: int = 0,
        capacity: int | None = None,
        presence: Payload | None = None,
        presence_events: bool = False,
        confirm: bool = True,
        timeout: float | None = None,
    ) -> Subscription:
        """A subscription: live (default), or from a `resume` token, `since` a time
        (datetime, or ns since the Unix epoch), or the `last` N messages. `lossless` falls
        back to the log instead of dropping (not with `queue`); `max_queue_*` bound the
        broker's queue for it (0: its default). `presence` joins the room with that info,
        `presence_events` watches it (`sub.presence`). Connected and `confirm`: returns once
        the broker has it (SUBSCRIBED), or raises its `ServerError`."""
        self._check_open()
        filt = _subject(subject, "filter", wildcards=True)
        grp = _subject(queue, "queue group", wildcards=False) if queue is not None else None
        starts = [x is not None for x in (resume, since, last)]
        if sum(starts) > 1:
            raise InvalidOption("give at most one of resume, since and last")
        start: c.StartPosition = c.StartLive()
        if resume is not None:
            start = c.StartResume(resume)
        elif since is not None:
            ns = int(since.timestamp() * 1_000_000_000) if isinstance(since, datetime) else since
            start = c.StartTime(ns)
        elif last is not None:
            start = c.StartLastN(last)
        if lossless and queue is not None:
            raise InvalidOption("lossless cannot be used with a queue group")
        if (presence is not None or presence_events) and (
            queue is not None or b"*" in filt.split(b".") or b">" in filt.split(b".")
        ):
            raise InvalidOption("presence needs a room: a literal subject, without a queue group")
        for v, what in ((max_queue_messages, "max_queue_messages"), (max_queue_bytes, "max_queue_bytes")):
            if not 0 <= v <= 0xFFFFFFFF:
                raise InvalidOption(f"{what} {v} out of range")
        sid = next(self._sids)
        join = c.PresenceJoin(_b(presence)) if presence is not None else None
        frame = c.Subscribe(
            sid, filt, grp, lossless, max_queue_messages, max_queue_bytes, start, join, presence_events
        )
        view = Presence(self._opts.presence_capacity) if join is not None or presence_events else None
        sub = Subscription(self, sid, frame, capacity or self._opts.subscription_capacity, view)
        try:
            data = c.encode_client_frame(frame)
        except c.CodecError as e:
            raise InvalidOption(e.detail) from None
        self._subs[sid] = sub
        conn = self._live()
        if conn is not None:
            if confirm:  # (nobody would retrieve a refusal from an unawaited future)
                sub._confirm = asyncio.get_running_loop().create_future()
            conn.write(_Out(data))
            if sub._confirm is not None:
                wait = self._opts.ack_timeout if timeout is None else timeout
                try:
                    await asyncio.wait_for(asyncio.shield(sub._confirm), wait)
                except TimeoutError:
                    raise TernTimeout(f"no SUBSCRIBED for {subject!r} within {wait}s") from None
        return sub

    async def _unsubscribe(self, sub: Subscription, after: int | None) -> None:
        if sub._ended or self._closed:
            return
        if after is not None and after > 0:
            sub._remaining = after
            conn = self._live()
            if conn is not None:
                conn.write(_Out(c.encode_client_frame(c.Unsubscribe(sub.sid, after))))
            return
        self._subs.pop(sub.sid, None)
        sub._end()
        conn = self._live()
        if conn is not None:
            conn.write(_Out(c.encode_client_frame(c.Unsubscribe(sub.sid))))

    async def flush(self, timeout: float = 5.0) -> None:
        """A PING/PONG barrier: when it returns, the broker has processed everything sent
        before, and every message it caused for this client has arrived."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._send(_Out(c.encode_client_frame(c.Ping()), "ping", ping=fut))
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            fut.cancel()  # its PONG, if it comes, is matched and ignored
            raise TernTimeout(f"no PONG within {timeout}s") from None

    async def _ensure_inbox(self) -> None:
        """One wildcard subscription for every reply, made at the first request (which
        waits until the broker has it, so no reply can pass it by)."""
        async with self._inbox_lock:
            if self._inbox is None or self._inbox._ended:
                self._inbox = await self.subscribe(
                    self._inbox_prefix + ".*", confirm=self._live() is not None
                )
                self._inbox._resume = False

    async def request(
        self,
        subject: str,
        payload: Payload = b"",
        *,
        timeout: float = 5.0,
        headers: HeadersInput | Headers | None = None,
        priority: int = 0,
    ) -> Msg:
        """Publishes with a reply subject in this client's inbox and returns the first
        reply; `TernTimeout` after `timeout`, `NoResponders` when nobody listens."""
        await self._ensure_inbox()
        token = str(next(self._request_ids))
        fut: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self._requests[token] = fut
        try:
            await self.publish(
                subject, payload, reply=f"{self._inbox_prefix}.{token}", headers=headers, priority=priority
            )
            try:
                msg = await asyncio.wait_for(asyncio.shield(fut), timeout)
            except TimeoutError:
                raise TernTimeout(f"no reply to {subject!r} within {timeout}s") from None
        finally:
            self._requests.pop(token, None)
        if msg.is_no_responders:
            raise NoResponders(f"no responders for {subject!r}")
        return msg

    async def presence(
        self, room: str, offset: int = 0, limit: int = 100, timeout: float = 5.0
    ) -> PresencePage:
        """Who is in `room` (a page of at most `limit` members from `offset`)."""
        return await self._presence_query(room, offset, limit, False, timeout)

    async def presence_count(self, room: str, timeout: float = 5.0) -> int:
        """How many members `room` has."""
        return (await self._presence_query(room, 0, 0, True, timeout)).count

    async def _presence_query(
        self, room: str, offset: int, limit: int, count_only: bool, timeout: float
    ) -> PresencePage:
        raw = _subject(room, "room", wildcards=False)
        qid = next(self._query_ids)
        fut: asyncio.Future[PresencePage] = asyncio.get_running_loop().create_future()
        self._queries[qid] = _Query(fut, [])
        try:
            frame = c.PresenceQuery(qid, raw, offset, limit, count_only)
            self._send(_Out(c.encode_client_frame(frame), "query", query_id=qid))
            try:
                return await asyncio.wait_for(asyncio.shield(fut), timeout)
            except TimeoutError:
                raise TernTimeout(f"no presence answer for {room!r} within {timeout}s") from None
        finally:
            self._queries.pop(qid, None)

    async def refresh_token(self, token: str) -> None:
        """Replaces the token: sent at once in an AUTH when connected (the broker says
        nothing when it accepts it and closes the connection when not); every later HELLO
        carries it, and a connection whose handshake was under way gets it in an AUTH
        right after its WELCOME."""
        self._token = token
        conn = self._live()
        if conn is not None:
            conn.token = token.encode()
            conn.write(_Out(c.encode_client_frame(c.Auth(token=conn.token))))

    async def drain(self, timeout: float = 5.0) -> None:
        """Unsubscribes everything, then one `PING`/`PONG` barrier (the broker delivers
        everything it routed to a subscription before its `UNSUBSCRIBE`, this client's own
        earlier publishes included, ahead of that `PONG`), ends the subscriptions (queued
        messages stay readable), waits for pending acks, then closes. Everything within
        `timeout`; closes anyway when it runs out."""
        if self._closed:
            return
        deadline = time.monotonic() + timeout
        try:
            conn = self._live()
            if conn is not None:
                # Behind everything already sent: nothing more is routed to these sids, and
                # what was routed to them before comes ahead of the barrier's PONG.
                for sub in list(self._subs.values()):
                    conn.write(_Out(c.encode_client_frame(c.Unsubscribe(sub.sid))))
                await self.flush(max(0.0, deadline - time.monotonic()))
            for sub in list(self._subs.values()):
                sub._end()
            self._subs.clear()
            pending = [f for f in self._acks.values() if not f.done()]
            if pending:
                await asyncio.wait(pending, timeout=max(0.0, deadline - time.monotonic()))
        finally:
            await self._close("drained")


def _handshake_codec_error(e: c.CodecError, *, tls: bool) -> str:
    if e.kind == "FrameTooLarge" and e.detail.startswith(f"frame length {0x494E464F} "):
        return "the server does not speak Tern's binary protocol (is this the text port?)"
    if e.kind == "FrameTooLarge" and not tls:
        length = int(e.detail.split()[2])
        if length >> 16 in (0x1503, 0x1603):
            return "the server answered in TLS: connect with TLS (a tls:// address, or tls=SSLContext)"
    return f"undecodable frame from the server: {e}"


# What a TLS alert from the server most likely means, in the words of the fix. With TLS 1.3
# a server that refuses the client's certificate says so after the client's side of the
# handshake is done: the alert comes with the first read.
_TLS_HINTS = {
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the server requires a client certificate: load one and its key"
    " into the SSLContext with ctx.load_cert_chain(cert, key)",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "the server refused the handshake: does it require a client"
    " certificate? load one with ctx.load_cert_chain(cert, key)",
    "TLSV1_ALERT_UNKNOWN_CA": "the server refused this client's certificate: is it signed by a CA the"
    " server trusts (its --tls-ca)?",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the server refused this client's certificate: is it signed by a CA"
    " the server trusts (its --tls-ca), and is it valid now?",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "the server refused this client's certificate: is it signed by a CA"
    " the server trusts (its --tls-ca)?",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the server refused this client's certificate: it has expired",
}


def _tls_hint(e: ssl.SSLError) -> str:
    hint = _TLS_HINTS.get(e.reason or "")
    return f" ({hint})" if hint is not None else ""


class _Connecting:
    """What `connect` returns: await it for a `Client`, or use it in `async with`."""

    def __init__(self, opts: Options, nkey_seed: str | None, creds: str | Path | None) -> None:
        self._opts = opts
        self._nkey_seed = nkey_seed
        self._creds = creds
        self._client: Client | None = None

    def __await__(self) -> Generator[Any, None, Client]:
        return self._run().__await__()

    async def _run(self) -> Client:
        # What would block the loop (a file, a key derivation, the system's CA store) runs
        # in a thread, once.
        opts = await asyncio.to_thread(self._prepare)
        self._client = Client(opts)
        await self._client._start()
        return self._client

    def _prepare(self) -> Options:
        opts = self._opts
        if self._nkey_seed is not None:
            opts = dataclasses.replace(opts, nkey=NKey(self._nkey_seed))
        if self._creds is not None:
            nkey, jwt = read_creds(self._creds)
            opts = dataclasses.replace(opts, nkey=nkey, token=opts.token if opts.token is not None else jwt)
        if opts.tls is None and any(tls for _, _, tls in opts.servers):
            opts = dataclasses.replace(opts, tls=ssl.create_default_context())
        return opts

    async def __aenter__(self) -> Client:
        return await self._run()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._client is not None:
            await self._client.close()


def connect(
    servers: str | Sequence[str] = "tern://127.0.0.1:4224",
    *,
    name: str = "",
    echo: bool = True,
    token: str | None = None,
    user: str | None = None,
    password: str | None = None,
    nkey_seed: str | None = None,
    creds: str | Path | None = None,
    tls: ssl.SSLContext | None = None,
    tls_server_name: str | None = None,
    reconnect: ReconnectPolicy | None = None,
    ping_interval: float = 10.0,
    server_timeout: float = 30.0,
    connect_timeout: float = 5.0,
    offline_buffer_bytes: int = 8 << 20,
    write_buffer_bytes: int = 8 << 20,
    write_timeout: float = 10.0,
    ack_timeout: float = 10.0,
    subscription_capacity: int = 65536,
    presence_capacity: int = 1024,
    event_capacity: int = 1024,
    linger: float = 2.0,
    jitter_seed: int | None = None,
    on_event: Callable[[Event], None] | None = None,
) -> _Connecting:
    """Connects to the first server of `servers` that answers (`tern://host:port`,
    `tls://host:port` or `host:port`). `await tern.connect(...)` gives a `Client`;
    `async with tern.connect(...) as client:` also closes it. A first connection that
    fails raises `ConnectError` (or the broker's `ServerError`, e.g. a refused login)
    and is not retried; later losses reconnect per `reconnect` (default: 0.1 s doubling
    to 5 s, full jitter, forever). Credentials (`creds` file, `nkey_seed`) are read and
    checked here, once: `CredentialsError` names the source, never the secret."""
    urls = [servers] if isinstance(servers, str) else list(servers)
    if not urls:
        raise InvalidOption("no servers")
    parsed = tuple(parse_server(u) for u in urls)
    if (user is None) != (password is None):
        raise InvalidOption("user and password go together")
    if tls is not None:
        parsed = tuple((h, p, True) for h, p, _ in parsed)
    opts = Options(
        servers=parsed,
        name=name,
        echo=echo,
        token=token,
        user=user,
        password=password,
        tls=tls,
        tls_server_name=tls_server_name,
        reconnect=reconnect or ReconnectPolicy(),
        ping_interval=ping_interval,
        server_timeout=server_timeout,
        connect_timeout=connect_timeout,
        offline_buffer_bytes=offline_buffer_bytes,
        write_buffer_bytes=write_buffer_bytes,
        write_timeout=write_timeout,
        ack_timeout=ack_timeout,
        subscription_capacity=subscription_capacity,
        presence_capacity=presence_capacity,
        event_capacity=event_capacity,
        linger=linger,
        jitter_seed=jitter_seed,
        on_event=on_event,
    )
    return _Connecting(opts, nkey_seed, creds)


__all__ = ["Client", "Options", "connect", "parse_server"]
