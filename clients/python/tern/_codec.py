"""Tern's binary protocol (docs/protocol-binary.md): frames as values, and bytes.

Owns: the preface, one dataclass per client and server frame, their encoders, and
incremental decoders for both directions (`ServerFrameDecoder` is what the client reads
with; `ClientFrameDecoder` exists for tests and checks content as the broker does). Every
malformed input is a `CodecError` naming what was wrong, with the protocol's error code.

Never: does I/O, touches the event loop, allocates beyond one frame's announced length
(an over-long length is refused from the 4-byte header alone), or raises anything but
`CodecError` from a decoder.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

MAGIC = b"TERN"
PROTOCOL_VERSION = 1
HEADER_LEN = 4
DEFAULT_MAX_PAYLOAD = 1 << 20
DEFAULT_MAX_OVERHEAD = 64 << 10
DEFAULT_MAX_FRAME = DEFAULT_MAX_PAYLOAD + DEFAULT_MAX_OVERHEAD
DEFAULT_MAX_SUBJECT_TOKENS = 256
MAX_SHORT = 0xFFFF
MAX_LONG = 0xFFFFFFFF


class ErrorCode(IntEnum):
    """The protocol's error codes (docs/protocol-binary.md, *Error codes*)."""

    PROTOCOL_VIOLATION = 0x0001
    UNSUPPORTED_VERSION = 0x0002
    FRAME_TOO_LARGE = 0x0003
    AUTHORIZATION_VIOLATION = 0x0004
    HELLO_EXPECTED = 0x0005
    AUTHENTICATION_EXPIRED = 0x0006
    AUTHENTICATION_TIMEOUT = 0x0007
    INVALID_SUBJECT = 0x0101
    PAYLOAD_TOO_LARGE = 0x0102
    INVALID_PRIORITY = 0x0103
    INVALID_HEADERS = 0x0104
    INVALID_OPTION = 0x0105
    UNKNOWN_SUBSCRIPTION = 0x0106
    DUPLICATE_SUBSCRIPTION = 0x0107
    EPOCH_MISMATCH = 0x0108
    PERMISSION_VIOLATION = 0x0109
    PRESENCE_REFUSED = 0x010A
    TOO_MANY_SUBSCRIPTIONS = 0x0201
    RATE_LIMITED = 0x0202
    OVERLOADED = 0x0203
    TOO_MANY_CONNECTIONS = 0x0204
    SLOW_CONSUMER = 0x0205
    INTERNAL = 0x0301


def code_name(code: int) -> str:
    """`InvalidSubject (0x0101)`; unknown codes are shown by number (they must be accepted)."""
    try:
        name = "".join(w.capitalize() for w in ErrorCode(code).name.split("_"))
    except ValueError:
        name = "Unknown"
    return f"{name} (0x{code:04x})"


class CodecError(Exception):
    """Bytes the codec refuses. `kind` is the reason (`BadMagic`, `FrameTooShort`,
    `FrameTooLarge`, `UnknownFrameType`, `ReservedFlags`, `Truncated`, `TrailingBytes`,
    `InvalidValue`, `Refused`, `Encode`); `code` the protocol error code a server would send.
    Structure errors are fatal (the stream can no longer be trusted); `Refused` is a
    content error: the frame was consumed whole, the next one can be read.
    """

    def __init__(
        self,
        kind: str,
        detail: str,
        code: int = ErrorCode.PROTOCOL_VIOLATION,
        *,
        sid: int | None = None,
        ack_id: int | None = None,
    ) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail
        self.code = code
        self.sid = sid
        self.ack_id = ack_id

    @property
    def fatal(self) -> bool:
        return self.kind != "Refused"


# ---------------------------------------------------------------------------------------
# Frame values


@dataclass(frozen=True, slots=True)
class Preface:
    min_version: int = PROTOCOL_VERSION
    max_version: int = PROTOCOL_VERSION

    def encode(self) -> bytes:
        return MAGIC + struct.pack(">HH", self.min_version, self.max_version)

    @staticmethod
    def decode(data: bytes) -> Preface | None:
        """The preface at the start of `data`, or None while fewer than 8 bytes came.
        The magic is checked byte by byte as it arrives."""
        for i, b in enumerate(data[:4]):
            if b != MAGIC[i]:
                raise CodecError("BadMagic", "the first bytes are not TERN")
        if len(data) < 8:
            return None
        lo, hi = struct.unpack_from(">HH", data, 4)
        return Preface(lo, hi)


@dataclass(frozen=True, slots=True)
class ResumeToken:
    """Where a subscription resumes: the log epoch and, per shard, the last sequence seen."""

    epoch: int
    last_sequences: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class StartLive:
    pass


@dataclass(frozen=True, slots=True)
class StartResume:
    token: ResumeToken


@dataclass(frozen=True, slots=True)
class StartTime:
    """Nanoseconds since the Unix epoch."""

    ns: int


@dataclass(frozen=True, slots=True)
class StartLastN:
    n: int


StartPosition = StartLive | StartResume | StartTime | StartLastN


@dataclass(frozen=True, slots=True)
class Hello:
    client_name: bytes = b""
    client_version: bytes = b""
    echo: bool = False
    auth_token: bytes | None = None
    user: bytes | None = None
    password: bytes | None = None
    nkey: bytes | None = None
    # A request nobody receives is answered with a 503 status (flag bit 4).
    no_responders: bool = False

    def __repr__(self) -> str:  # never print secrets
        return (
            f"Hello(client_name={self.client_name!r}, client_version={self.client_version!r}, "
            f"echo={self.echo}, auth_token={'<redacted>' if self.auth_token else None}, "
            f"user={self.user!r}, password={'<redacted>' if self.password else None}, "
            f"nkey={self.nkey!r}, no_responders={self.no_responders})"
        )


@dataclass(frozen=True, slots=True)
class Auth:
    token: bytes | None = None
    signature: bytes | None = None

    def __repr__(self) -> str:
        return (
            f"Auth(token={'<redacted>' if self.token else None}, "
            f"signature={'<redacted>' if self.signature else None})"
        )


@dataclass(slots=True)  # not frozen: made per publish, and frozen ones are slower to build
class Publish:
    subject: bytes
    payload: bytes = b""
    priority: int = 0
    reply: bytes | None = None
    headers: bytes | None = None
    message_id: bytes | None = None
    coalescing_key: bytes | None = None
    ack_id: int | None = None


@dataclass(frozen=True, slots=True)
class PresenceJoin:
    info: bytes = b""
    member_token: bytes | None = None


@dataclass(frozen=True, slots=True)
class Subscribe:
    sid: int
    subject: bytes
    queue: bytes | None = None
    lossless: bool = False
    max_queue_messages: int = 0
    max_queue_bytes: int = 0
    start: StartPosition = StartLive()
    presence: PresenceJoin | None = None
    presence_events: bool = False


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    sid: int
    max: int | None = None


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class Pong:
    pass


@dataclass(frozen=True, slots=True)
class PresenceQuery:
    id: int
    room: bytes
    offset: int = 0
    limit: int = 0
    count_only: bool = False


ClientFrame = Hello | Publish | Subscribe | Unsubscribe | Ping | Pong | Auth | PresenceQuery


@dataclass(frozen=True, slots=True)
class Welcome:
    version: int
    shard_count: int
    max_payload: int
    max_frame: int
    ping_interval_ms: int
    client_id: int
    log_epoch: int
    server_id: bytes


@dataclass(slots=True)  # not frozen: made per delivery, and frozen ones are slower to build
class Message:
    sid: int
    priority: int
    shard: int
    sequence: int
    timestamp: int
    subject: bytes
    payload: bytes
    reply: bytes | None = None
    headers: bytes | None = None
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class PublishAck:
    """`code` is None for a stored message (shard, sequence, duplicate); else refused."""

    ack_id: int
    shard: int = 0
    sequence: int = 0
    duplicate: bool = False
    code: int | None = None
    message: bytes = b""


@dataclass(frozen=True, slots=True)
class ErrorFrame:
    code: int
    message: bytes
    fatal: bool = False
    sid: int | None = None


@dataclass(frozen=True, slots=True)
class SequenceRange:
    shard: int
    first: int
    last: int


@dataclass(frozen=True, slots=True)
class DropNotice:
    sid: int
    dropped: int
    ranges: tuple[SequenceRange, ...] = ()


@dataclass(frozen=True, slots=True)
class GapNotice:
    sid: int
    shard: int
    requested: int
    oldest: int


@dataclass(frozen=True, slots=True)
class GoAway:
    close_within_ms: int
    reason: bytes


@dataclass(frozen=True, slots=True)
class Subscribed:
    sid: int
    epoch: int
    last_sequences: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Challenge:
    nonce: bytes


@dataclass(frozen=True, slots=True)
class Member:
    user: bytes
    since_ms: int
    connections: int
    info: bytes


class PresenceKind(IntEnum):
    JOIN = 0
    LEAVE = 1
    JOINED = 2
    SNAPSHOT = 3
    PAGE = 4
    REFUSED = 5


@dataclass(frozen=True, slots=True)
class Presence:
    """One PRESENCE frame. Which fields mean something depends on `kind`: `members`
    (join: one; snapshot, page), `offset` (snapshot, page), `user` (leave, joined),
    `member_token` (joined), `code`/`message` (refused)."""

    id: int
    kind: PresenceKind
    count: int
    query: bool = False
    more: bool = False
    members: tuple[Member, ...] = ()
    offset: int = 0
    user: bytes = b""
    member_token: bytes = b""
    code: int = 0
    message: bytes = b""


ServerFrame = (
    Welcome
    | Message
    | PublishAck
    | ErrorFrame
    | DropNotice
    | GapNotice
    | GoAway
    | Subscribed
    | Challenge
    | Presence
    | Ping
    | Pong
)

# Frame types.
T_HELLO, T_PUBLISH, T_SUBSCRIBE, T_UNSUBSCRIBE = 0x01, 0x02, 0x03, 0x04
T_PING, T_PONG, T_AUTH, T_PRESENCE_QUERY = 0x05, 0x06, 0x07, 0x08
T_WELCOME, T_MESSAGE, T_PUBLISH_ACK, T_ERROR = 0x81, 0x82, 0x83, 0x84
T_DROP_NOTICE, T_GAP_NOTICE, T_GOAWAY, T_SUBSCRIBED = 0x85, 0x86, 0x87, 0x88
T_CHALLENGE, T_PRESENCE = 0x89, 0x8A

# ---------------------------------------------------------------------------------------
# Encoding


class _Writer:
    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def u8(self, v: int) -> None:
        self.parts.append(struct.pack(">B", v))

    def u16(self, v: int) -> None:
        self.parts.append(struct.pack(">H", v))

    def u32(self, v: int) -> None:
        self.parts.append(struct.pack(">I", v))

    def u64(self, v: int) -> None:
        self.parts.append(struct.pack(">Q", v))

    def short(self, b: bytes, what: str) -> None:
        if len(b) > MAX_SHORT:
            raise CodecError("Encode", f"{what} is {len(b)} bytes, over 65535", ErrorCode.INVALID_OPTION)
        self.parts.append(struct.pack(">H", len(b)))
        self.parts.append(b)

    def long(self, b: bytes, what: str) -> None:
        if len(b) > MAX_LONG:
            raise CodecError("Encode", f"{what} is too long", ErrorCode.PAYLOAD_TOO_LARGE)
        self.parts.append(struct.pack(">I", len(b)))
        self.parts.append(b)

    def frame(self, ftype: int, flags: int) -> bytes:
        body = b"".join(self.parts)
        return struct.pack(">IBB", len(body) + 2, ftype, flags) + body


_PUBLISH_HEAD = struct.Struct(">IBBBH")


def encode_publish(subject: bytes, payload: bytes, priority: int = 0) -> bytes:
    """A PUBLISH with no options (the common one), in one pack."""
    if len(subject) > MAX_SHORT or len(payload) > MAX_LONG - 64 or not 0 <= priority <= 0xFF:
        return encode_client_frame(Publish(subject, payload, priority))
    head = _PUBLISH_HEAD.pack(9 + len(subject) + len(payload), T_PUBLISH, 0, priority, len(subject))
    return b"".join((head, subject, len(payload).to_bytes(4, "big"), payload))


def encode_client_frame(f: ClientFrame) -> bytes:
    """The bytes of a client frame. Raises `CodecError` (kind `Encode`) for a value that
    cannot be put on the wire (a field too long, a number out of range); content the
    server would refuse (a bad subject, priority 8) is encoded as given."""
    if (
        type(f) is Publish
        and f.reply is None
        and f.headers is None
        and f.message_id is None
        and f.coalescing_key is None
        and f.ack_id is None
        and 0 <= f.priority <= 0xFF
        and len(f.subject) <= MAX_SHORT
        and len(f.payload) <= MAX_LONG - 64
    ):
        return encode_publish(f.subject, f.payload, f.priority)
    w = _Writer()
    try:
        if isinstance(f, Publish):
            flags = (
                (0x01 if f.reply is not None else 0)
                | (0x02 if f.headers is not None else 0)
                | (0x04 if f.message_id is not None else 0)
                | (0x08 if f.coalescing_key is not None else 0)
                | (0x10 if f.ack_id is not None else 0)
            )
            w.u8(f.priority)
            if f.ack_id is not None:
                w.u64(f.ack_id)
            w.short(f.subject, "subject")
            if f.reply is not None:
                w.short(f.reply, "reply subject")
            if f.message_id is not None:
                w.short(f.message_id, "message id")
            if f.coalescing_key is not None:
                w.short(f.coalescing_key, "coalescing key")
            if f.headers is not None:
                w.long(f.headers, "header block")
            w.long(f.payload, "payload")
            return w.frame(T_PUBLISH, flags)
        if isinstance(f, Subscribe):
            start = f.start
            mode = {StartLive: 0, StartResume: 1, StartTime: 2, StartLastN: 3}[type(start)]
            flags = (
                (0x01 if f.queue is not None else 0)
                | (0x02 if f.lossless else 0)
                | (mode << 2)
                | (0x10 if f.presence is not None else 0)
                | (0x20 if f.presence_events else 0)
                | (0x40 if f.presence is not None and f.presence.member_token is not None else 0)
            )
            w.u32(f.sid)
            w.u32(f.max_queue_messages)
            w.u32(f.max_queue_bytes)
            w.short(f.subject, "subject")
            if f.queue is not None:
                w.short(f.queue, "queue group")
            if isinstance(start, StartResume):
                seqs = start.token.last_sequences
                if len(seqs) > MAX_SHORT:
                    raise CodecError("Encode", "resume token over 65535 shards", ErrorCode.INVALID_OPTION)
                w.u64(start.token.epoch)
                w.u16(len(seqs))
                for seq in seqs:
                    w.u64(seq)
            elif isinstance(start, StartTime):
                w.u64(start.ns)
            elif isinstance(start, StartLastN):
                w.u32(start.n)
            if f.presence is not None:
                w.long(f.presence.info, "presence info")
                if f.presence.member_token is not None:
                    w.short(f.presence.member_token, "member token")
            return w.frame(T_SUBSCRIBE, flags)
        if isinstance(f, Unsubscribe):
            w.u32(f.sid)
            if f.max is not None:
                w.u64(f.max)
            return w.frame(T_UNSUBSCRIBE, 0x01 if f.max is not None else 0)
        if isinstance(f, Ping):
            return w.frame(T_PING, 0)
        if isinstance(f, Pong):
            return w.frame(T_PONG, 0)
        if isinstance(f, Hello):
            flags = (
                (0x01 if f.echo else 0)
                | (0x02 if f.auth_token is not None else 0)
                | (0x04 if f.user is not None else 0)
                | (0x08 if f.nkey is not None else 0)
                | (0x10 if f.no_responders else 0)
            )
            if (f.user is None) != (f.password is None):
                raise CodecError(
                    "Encode", "a user needs a password and the reverse", ErrorCode.INVALID_OPTION
                )
            w.short(f.client_name, "client name")
            w.short(f.client_version, "client version")
            if f.auth_token is not None:
                w.short(f.auth_token, "token")
            if f.user is not None and f.password is not None:
                w.short(f.user, "user")
                w.short(f.password, "password")
            if f.nkey is not None:
                w.short(f.nkey, "nkey")
            return w.frame(T_HELLO, flags)
        if isinstance(f, Auth):
            if f.token is None and f.signature is None:
                raise CodecError("Encode", "AUTH needs a token or a signature", ErrorCode.INVALID_OPTION)
            flags = (0x01 if f.token is not None else 0) | (0x02 if f.signature is not None else 0)
            if f.token is not None:
                w.short(f.token, "token")
            if f.signature is not None:
                w.short(f.signature, "signature")
            return w.frame(T_AUTH, flags)
        if isinstance(f, PresenceQuery):
            w.u32(f.id)
            w.short(f.room, "room")
            w.u32(f.offset)
            w.u32(f.limit)
            return w.frame(T_PRESENCE_QUERY, 0x01 if f.count_only else 0)
    except struct.error as e:
        raise CodecError("Encode", f"a number out of range: {e}", ErrorCode.INVALID_OPTION) from None
    raise CodecError("Encode", f"not a client frame: {type(f).__name__}", ErrorCode.INVALID_OPTION)


def _member(w: _Writer, m: Member) -> None:
    w.short(m.user, "user")
    w.u64(m.since_ms)
    w.u16(m.connections)
    w.long(m.info, "info")


def encode_server_frame(f: ServerFrame) -> bytes:
    """The bytes of a server frame (the client never sends these; tests re-encode with it)."""
    w = _Writer()
    try:
        if isinstance(f, Message):
            flags = (0x01 if f.reply is not None else 0) | (0x02 if f.headers is not None else 0)
            flags |= 0x04 if f.replayed else 0
            w.u32(f.sid)
            w.u8(f.priority)
            w.u16(f.shard)
            w.u64(f.sequence)
            w.u64(f.timestamp)
            w.short(f.subject, "subject")
            if f.reply is not None:
                w.short(f.reply, "reply")
            if f.headers is not None:
                w.long(f.headers, "headers")
            w.long(f.payload, "payload")
            return w.frame(T_MESSAGE, flags)
        if isinstance(f, Welcome):
            w.u16(f.version)
            w.u16(f.shard_count)
            w.u32(f.max_payload)
            w.u32(f.max_frame)
            w.u32(f.ping_interval_ms)
            w.u64(f.client_id)
            w.u64(f.log_epoch)
            w.short(f.server_id, "server id")
            return w.frame(T_WELCOME, 0)
        if isinstance(f, PublishAck):
            w.u64(f.ack_id)
            if f.code is not None:
                w.u16(f.code)
                w.short(f.message, "message")
                return w.frame(T_PUBLISH_ACK, 0x01)
            w.u16(f.shard)
            w.u64(f.sequence)
            return w.frame(T_PUBLISH_ACK, 0x02 if f.duplicate else 0)
        if isinstance(f, ErrorFrame):
            w.u16(f.code)
            if f.sid is not None:
                w.u32(f.sid)
            w.short(f.message, "message")
            return w.frame(T_ERROR, (0x01 if f.fatal else 0) | (0x02 if f.sid is not None else 0))
        if isinstance(f, DropNotice):
            w.u32(f.sid)
            w.u64(f.dropped)
            w.u16(len(f.ranges))
            for r in f.ranges:
                w.u16(r.shard)
                w.u64(r.first)
                w.u64(r.last)
            return w.frame(T_DROP_NOTICE, 0)
        if isinstance(f, GapNotice):
            w.u32(f.sid)
            w.u16(f.shard)
            w.u64(f.requested)
            w.u64(f.oldest)
            return w.frame(T_GAP_NOTICE, 0)
        if isinstance(f, GoAway):
            w.u32(f.close_within_ms)
            w.short(f.reason, "reason")
            return w.frame(T_GOAWAY, 0)
        if isinstance(f, Subscribed):
            w.u32(f.sid)
            w.u64(f.epoch)
            w.u16(len(f.last_sequences))
            for s in f.last_sequences:
                w.u64(s)
            return w.frame(T_SUBSCRIBED, 0)
        if isinstance(f, Challenge):
            w.short(f.nonce, "nonce")
            return w.frame(T_CHALLENGE, 0)
        if isinstance(f, Presence):
            w.u32(f.id)
            w.u8(f.kind)
            w.u32(f.count)
            k = f.kind
            if k == PresenceKind.JOIN:
                _member(w, f.members[0])
            elif k in (PresenceKind.LEAVE, PresenceKind.JOINED):
                w.short(f.user, "user")
                if k == PresenceKind.JOINED:
                    w.short(f.member_token, "member token")
            elif k in (PresenceKind.SNAPSHOT, PresenceKind.PAGE):
                w.u32(f.offset)
                w.u16(len(f.members))
                for m in f.members:
                    _member(w, m)
            else:
                w.u16(f.code)
                w.short(f.message, "message")
            return w.frame(T_PRESENCE, (0x01 if f.query else 0) | (0x02 if f.more else 0))
        if isinstance(f, Ping):
            return w.frame(T_PING, 0)
        if isinstance(f, Pong):
            return w.frame(T_PONG, 0)
    except struct.error as e:
        raise CodecError("Encode", f"a number out of range: {e}", ErrorCode.INVALID_OPTION) from None
    raise CodecError("Encode", f"not a server frame: {type(f).__name__}", ErrorCode.INVALID_OPTION)


# ---------------------------------------------------------------------------------------
# Decoding


class _Reader:
    """Reads one frame's body; every read past its end is `Truncated`."""

    __slots__ = ("buf", "end", "frame", "pos")

    def __init__(self, buf: bytes | memoryview, frame: str) -> None:
        self.buf = buf
        self.pos = 0
        self.end = len(buf)
        self.frame = frame

    def _need(self, n: int, what: str) -> int:
        p = self.pos
        if self.end - p < n:
            raise CodecError("Truncated", f"{self.frame} ends inside {what}")
        self.pos = p + n
        return p

    def u8(self, what: str) -> int:
        return self.buf[self._need(1, what)]

    def u16(self, what: str) -> int:
        return int.from_bytes(self.buf[(p := self._need(2, what)) : p + 2], "big")

    def u32(self, what: str) -> int:
        return int.from_bytes(self.buf[(p := self._need(4, what)) : p + 4], "big")

    def u64(self, what: str) -> int:
        return int.from_bytes(self.buf[(p := self._need(8, what)) : p + 8], "big")

    def short(self, what: str) -> bytes:
        n = self.u16(what)
        p = self._need(n, what)
        return bytes(self.buf[p : p + n])

    def long(self, what: str) -> bytes:
        n = self.u32(what)
        p = self._need(n, what)
        return bytes(self.buf[p : p + n])

    def done(self) -> None:
        if self.pos != self.end:
            raise CodecError("TrailingBytes", f"{self.end - self.pos} bytes after {self.frame}")


_SERVER_FLAGS = {
    T_WELCOME: ("WELCOME", 0x00),
    T_MESSAGE: ("MESSAGE", 0x07),
    T_PUBLISH_ACK: ("PUBLISH_ACK", 0x03),
    T_ERROR: ("ERROR", 0x03),
    T_DROP_NOTICE: ("DROP_NOTICE", 0x00),
    T_GAP_NOTICE: ("GAP_NOTICE", 0x00),
    T_GOAWAY: ("GOAWAY", 0x00),
    T_SUBSCRIBED: ("SUBSCRIBED", 0x00),
    T_CHALLENGE: ("CHALLENGE", 0x00),
    T_PRESENCE: ("PRESENCE", 0x03),
    T_PING: ("PING", 0x00),
    T_PONG: ("PONG", 0x00),
}

_CLIENT_FLAGS = {
    T_HELLO: ("HELLO", 0x1F),
    T_PUBLISH: ("PUBLISH", 0x1F),
    T_SUBSCRIBE: ("SUBSCRIBE", 0x7F),
    T_UNSUBSCRIBE: ("UNSUBSCRIBE", 0x01),
    T_PING: ("PING", 0x00),
    T_PONG: ("PONG", 0x00),
    T_AUTH: ("AUTH", 0x03),
    T_PRESENCE_QUERY: ("PRESENCE_QUERY", 0x01),
}


def _read_member(r: _Reader) -> Member:
    user = r.short("member user")
    since = r.u64("member since")
    conns = r.u16("member connections")
    info = r.long("member info")
    return Member(user, since, conns, info)


_MESSAGE_HEAD = struct.Struct(">IBHQQH")


def _message_fast(flags: int, body: bytes | memoryview) -> Message | None:
    """A MESSAGE without reply or headers, the common case, in one unpack; None for
    anything else or anything short (the general path then says what is wrong)."""
    n = len(body)
    if flags & ~0x04 or n < 29:
        return None
    sid, prio, shard, seq, ts, slen = _MESSAGE_HEAD.unpack_from(body, 0)
    p = 25 + slen
    if p + 4 > n:
        return None
    plen = int.from_bytes(body[p : p + 4], "big")
    if p + 4 + plen != n:
        return None
    return Message(
        sid, prio, shard, seq, ts, bytes(body[25:p]), bytes(body[p + 4 :]), None, None, bool(flags)
    )


def parse_server_body(ftype: int, flags: int, body: bytes | memoryview) -> ServerFrame:
    """One server frame from its type, flags and body (structure checks only)."""
    if ftype == T_MESSAGE:
        fast = _message_fast(flags, body)
        if fast is not None:
            return fast
    spec = _SERVER_FLAGS.get(ftype)
    if spec is None:
        raise CodecError("UnknownFrameType", f"frame type 0x{ftype:02x}")
    name, allowed = spec
    if flags & ~allowed:
        raise CodecError("ReservedFlags", f"{name} with flags 0x{flags:02x}")
    r = _Reader(body, name)
    f: ServerFrame
    if ftype == T_MESSAGE:
        sid = r.u32("sid")
        prio = r.u8("priority")
        shard = r.u16("shard")
        seq = r.u64("sequence")
        ts = r.u64("timestamp")
        subject = r.short("subject")
        reply = r.short("reply") if flags & 0x01 else None
        headers = r.long("headers") if flags & 0x02 else None
        payload = r.long("payload")
        f = Message(sid, prio, shard, seq, ts, subject, payload, reply, headers, bool(flags & 0x04))
    elif ftype == T_WELCOME:
        f = Welcome(
            r.u16("version"),
            r.u16("shard count"),
            r.u32("max payload"),
            r.u32("max frame"),
            r.u32("ping interval"),
            r.u64("client id"),
            r.u64("log epoch"),
            r.short("server id"),
        )
    elif ftype == T_PUBLISH_ACK:
        if flags & 0x01 and flags & 0x02:
            raise CodecError("InvalidValue", "PUBLISH_ACK both refused and duplicate")
        ack_id = r.u64("ack id")
        if flags & 0x01:
            code = r.u16("code")
            f = PublishAck(ack_id, code=code, message=r.short("message"))
        else:
            shard = r.u16("shard")
            f = PublishAck(ack_id, shard, r.u64("sequence"), bool(flags & 0x02))
    elif ftype == T_ERROR:
        code = r.u16("code")
        err_sid = r.u32("sid") if flags & 0x02 else None
        f = ErrorFrame(code, r.short("message"), bool(flags & 0x01), err_sid)
    elif ftype == T_DROP_NOTICE:
        sid = r.u32("sid")
        dropped = r.u64("dropped")
        n = r.u16("range count")
        ranges = []
        for _ in range(n):
            shard = r.u16("range")
            first = r.u64("range")
            last = r.u64("range")
            if first > last:
                raise CodecError("InvalidValue", f"DROP_NOTICE range {first} > {last}")
            ranges.append(SequenceRange(shard, first, last))
        f = DropNotice(sid, dropped, tuple(ranges))
    elif ftype == T_GAP_NOTICE:
        f = GapNotice(r.u32("sid"), r.u16("shard"), r.u64("requested"), r.u64("oldest"))
    elif ftype == T_GOAWAY:
        f = GoAway(r.u32("close within"), r.short("reason"))
    elif ftype == T_SUBSCRIBED:
        sid = r.u32("sid")
        epoch = r.u64("epoch")
        n = r.u16("shard count")
        f = Subscribed(sid, epoch, tuple(r.u64("last sequences") for _ in range(n)))
    elif ftype == T_CHALLENGE:
        f = Challenge(r.short("nonce"))
    elif ftype == T_PRESENCE:
        pid = r.u32("id")
        kind_n = r.u8("kind")
        count = r.u32("count")
        q, more = bool(flags & 0x01), bool(flags & 0x02)
        if kind_n > 5:
            raise CodecError("InvalidValue", f"PRESENCE kind {kind_n}")
        kind = PresenceKind(kind_n)
        if kind == PresenceKind.JOIN:
            f = Presence(pid, kind, count, q, more, members=(_read_member(r),))
        elif kind == PresenceKind.LEAVE:
            f = Presence(pid, kind, count, q, more, user=r.short("user"))
        elif kind == PresenceKind.JOINED:
            user = r.short("user")
            f = Presence(pid, kind, count, q, more, user=user, member_token=r.short("member token"))
        elif kind in (PresenceKind.SNAPSHOT, PresenceKind.PAGE):
            offset = r.u32("offset")
            n = r.u16("member count")
            members = tuple(_read_member(r) for _ in range(n))
            f = Presence(pid, kind, count, q, more, members=members, offset=offset)
        else:
            code = r.u16("code")
            f = Presence(pid, kind, count, q, more, code=code, message=r.short("message"))
    elif ftype == T_PING:
        f = Ping()
    else:
        f = Pong()
    r.done()
    return f


def validate_subject(subject: bytes, *, wildcards: bool, max_tokens: int = MAX_LONG) -> str | None:
    """Why `subject` is not a valid subject (or filter, with `wildcards`), or None.
    The rules of protocol/src/subject.rs, in its order."""
    if not subject:
        return "subject is empty"
    wildcard_error = None
    tokens = subject.split(b".")
    for i, token in enumerate(tokens):
        if i == max_tokens:
            return f"subject has too many tokens (max {max_tokens})"
        if not token:
            return "subject has an empty token"
        if any(b <= 0x20 or b == 0x7F for b in token):
            return "subject contains whitespace or a control character"
        if wildcard_error is None:
            if token in (b"*", b">") and not wildcards:
                wildcard_error = "publish subject contains a wildcard token"
            elif token == b">" and i + 1 < len(tokens):
                wildcard_error = "'>' is only allowed as the last token"
    return wildcard_error


def parse_client_body(
    ftype: int,
    flags: int,
    body: bytes | memoryview,
    *,
    max_payload: int = DEFAULT_MAX_PAYLOAD,
    max_subject_tokens: int = DEFAULT_MAX_SUBJECT_TOKENS,
) -> ClientFrame:
    """One client frame: structure first, then (for PUBLISH and SUBSCRIBE) content, in the
    order the spec gives; a content error is `CodecError` kind `Refused`."""
    spec = _CLIENT_FLAGS.get(ftype)
    if spec is None:
        raise CodecError("UnknownFrameType", f"frame type 0x{ftype:02x}")
    name, allowed = spec
    if flags & ~allowed:
        raise CodecError("ReservedFlags", f"{name} with flags 0x{flags:02x}")
    r = _Reader(body, name)
    f: ClientFrame
    if ftype == T_PUBLISH:
        prio = r.u8("priority")
        ack_id = r.u64("ack id") if flags & 0x10 else None
        subject = r.short("subject")
        reply = r.short("reply") if flags & 0x01 else None
        mid = r.short("message id") if flags & 0x04 else None
        ckey = r.short("coalescing key") if flags & 0x08 else None
        headers = r.long("headers") if flags & 0x02 else None
        payload = r.long("payload")
        r.done()
        f = Publish(subject, payload, prio, reply, headers, mid, ckey, ack_id)

        def refuse(code: int, detail: str) -> CodecError:
            return CodecError("Refused", detail, code, ack_id=ack_id)

        if len(payload) + len(headers or b"") > max_payload:
            raise refuse(ErrorCode.PAYLOAD_TOO_LARGE, "payload too large")
        if (why := validate_subject(subject, wildcards=False, max_tokens=max_subject_tokens)) is not None:
            raise refuse(ErrorCode.INVALID_SUBJECT, f"invalid subject: {why}")
        if (
            reply is not None
            and (why := validate_subject(reply, wildcards=False, max_tokens=max_subject_tokens)) is not None
        ):
            raise refuse(ErrorCode.INVALID_SUBJECT, f"invalid reply subject: {why}")
        if prio > 7:
            raise refuse(ErrorCode.INVALID_PRIORITY, f"invalid priority {prio} (0..=7)")
        if headers is not None and not headers.startswith(b"NATS/1.0"):
            raise refuse(ErrorCode.INVALID_HEADERS, "header block does not start with NATS/1.0")
        if mid == b"" or ckey == b"":
            raise refuse(ErrorCode.INVALID_OPTION, "empty message id or coalescing key")
        return f
    if ftype == T_SUBSCRIBE:
        sid = r.u32("sid")
        mqm = r.u32("max queue messages")
        mqb = r.u32("max queue bytes")
        subject = r.short("subject")
        queue = r.short("queue group") if flags & 0x01 else None
        mode = (flags >> 2) & 0x03
        start: StartPosition
        if mode == 1:
            epoch = r.u64("epoch")
            n = r.u16("shard count")
            start = StartResume(ResumeToken(epoch, tuple(r.u64("last sequence") for _ in range(n))))
        elif mode == 2:
            start = StartTime(r.u64("start time"))
        elif mode == 3:
            start = StartLastN(r.u32("last n"))
        else:
            start = StartLive()
        if flags & 0x40 and not flags & 0x10:
            raise CodecError("InvalidValue", "SUBSCRIBE member token without presence")
        presence = None
        if flags & 0x10:
            info = r.long("presence info")
            token = r.short("member token") if flags & 0x40 else None
            presence = PresenceJoin(info, token)
        r.done()
        f = Subscribe(sid, subject, queue, bool(flags & 0x02), mqm, mqb, start, presence, bool(flags & 0x20))
        if (why := validate_subject(subject, wildcards=True, max_tokens=max_subject_tokens)) is not None:
            raise CodecError(
                "Refused", f"invalid subscription subject: {why}", ErrorCode.INVALID_SUBJECT, sid=sid
            )
        if (
            queue is not None
            and (why := validate_subject(queue, wildcards=False, max_tokens=max_subject_tokens)) is not None
        ):
            raise CodecError("Refused", f"invalid queue group: {why}", ErrorCode.INVALID_SUBJECT, sid=sid)
        return f
    if ftype == T_UNSUBSCRIBE:
        sid = r.u32("sid")
        f = Unsubscribe(sid, r.u64("max") if flags & 0x01 else None)
    elif ftype == T_HELLO:
        cname = r.short("client name")
        cver = r.short("client version")
        token = r.short("auth token") if flags & 0x02 else None
        user = r.short("user") if flags & 0x04 else None
        pw = r.short("pass") if flags & 0x04 else None
        nkey = r.short("nkey") if flags & 0x08 else None
        f = Hello(cname, cver, bool(flags & 0x01), token, user, pw, nkey, bool(flags & 0x10))
    elif ftype == T_AUTH:
        if not flags & 0x03:
            raise CodecError("InvalidValue", "AUTH flags (neither token nor signature)")
        token = r.short("token") if flags & 0x01 else None
        sig = r.short("signature") if flags & 0x02 else None
        f = Auth(token, sig)
    elif ftype == T_PRESENCE_QUERY:
        qid = r.u32("query id")
        room = r.short("room")
        off = r.u32("offset")
        f = PresenceQuery(qid, room, off, r.u32("limit"), bool(flags & 0x01))
    elif ftype == T_PING:
        f = Ping()
    else:
        f = Pong()
    r.done()
    return f


class _FrameDecoder:
    """Buffers bytes and cuts whole frames. `feed` then `next` until it returns None."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self._pos = 0
        self._broken: CodecError | None = None

    def feed(self, data: bytes) -> None:
        if self._pos and self._pos >= len(self._buf) // 2:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def _cut(self) -> tuple[int, int, memoryview] | None:
        if self._broken is not None:
            raise self._broken
        avail = len(self._buf) - self._pos
        if avail < HEADER_LEN:
            return None
        length = int.from_bytes(self._buf[self._pos : self._pos + 4], "big")
        try:
            if length < 2:
                raise CodecError("FrameTooShort", f"frame length {length} (at least 2)")
            if length > self.max_frame:
                raise CodecError(
                    "FrameTooLarge", f"frame length {length} over {self.max_frame}", ErrorCode.FRAME_TOO_LARGE
                )
        except CodecError as e:
            self._broken = e
            raise
        if avail < HEADER_LEN + length:
            return None
        start = self._pos
        self._pos += HEADER_LEN + length
        ftype = self._buf[start + 4]
        flags = self._buf[start + 5]
        body = memoryview(self._buf[start + 6 : start + 4 + length])  # one copy, then views
        return ftype, flags, body


class ServerFrameDecoder(_FrameDecoder):
    """What a client reads with. A structure error is sticky: the stream is broken."""

    def next(self) -> ServerFrame | None:
        cut = self._cut()
        if cut is None:
            return None
        try:
            return parse_server_body(*cut)
        except CodecError as e:
            self._broken = e
            raise


class ClientFrameDecoder(_FrameDecoder):
    """The broker's side, for tests: content errors (`Refused`) are per frame."""

    def __init__(
        self,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        max_overhead: int = DEFAULT_MAX_OVERHEAD,
        max_subject_tokens: int = DEFAULT_MAX_SUBJECT_TOKENS,
    ) -> None:
        super().__init__(max_payload + max_overhead)
        self.max_payload = max_payload
        self.max_subject_tokens = max_subject_tokens

    def next(self) -> ClientFrame | None:
        cut = self._cut()
        if cut is None:
            return None
        try:
            return parse_client_body(
                *cut, max_payload=self.max_payload, max_subject_tokens=self.max_subject_tokens
            )
        except CodecError as e:
            if e.fatal:
                self._broken = e
            raise
