"""The shared test vectors, protocol/tests/vectors/binary.txt, against this codec.

As protocol/tests/binary_vectors.rs does: every `name` stands for a typed value held here;
the file's hex must decode to exactly that value (using every byte) and the value must
encode to exactly that hex. `*-error.*` vectors must be refused with the stated error.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tern import _codec as c

ROOT = Path(__file__).resolve().parents[3]
VECTORS = ROOT / "protocol" / "tests" / "vectors" / "binary.txt"

EPOCH = 0x0123456789ABCDEF
NKEY = b"UA5WUJ54Z23KILLCUOUNAKTPBVZWKMQVO4O6EQ5GHLAERIMLLHNCTYM5"
SIGNATURE = b"rtA2tbpEUnOV7v64VlU9H_LwiSneOUhql0wWVCpsL4ll6eEaCKBFD6Y2cVUs6ICFrkxXr2ccPWTEJQs1Xy2WDA"
TIME = 1_700_000_000_000_000_000
MSG = c.Message(1, 3, 2, 17, TIME, b"chat.room1", b"hi")


def member(user: bytes, connections: int) -> c.Member:
    return c.Member(user, 1_700_000_000_000, connections, b"{}")


def pub(subject: bytes, **kw: object) -> c.Publish:
    return c.Publish(subject, b"hi", **kw)  # type: ignore[arg-type]


P = c.PresenceKind
# name -> ("preface" | "client" | "server", value)
VALUES: dict[str, tuple[str, object]] = {
    "preface.v1": ("preface", c.Preface(1, 1)),
    "preface.v1-3": ("preface", c.Preface(1, 3)),
    "client.hello": ("client", c.Hello(b"demo", b"tern-client/0.1.0", echo=True)),
    "client.hello-token": ("client", c.Hello(auth_token=b"s3cret")),
    "client.hello-user-pass": ("client", c.Hello(user=b"alice", password=b"pw")),
    "client.hello-nkey": ("client", c.Hello(b"demo", echo=True, nkey=NKEY)),
    "client.hello-all-credentials": (
        "client",
        c.Hello(auth_token=b"t", user=b"u", password=b"p", nkey=b"UK"),
    ),
    "client.hello-no-responders": ("client", c.Hello(b"demo", echo=True, no_responders=True)),
    "client.auth-signature": ("client", c.Auth(signature=SIGNATURE)),
    "client.auth-token": ("client", c.Auth(token=b"jwt-2")),
    "client.auth-both": ("client", c.Auth(token=b"t", signature=b"s")),
    "client.publish-minimal": ("client", pub(b"chat.room1")),
    "client.publish-full": (
        "client",
        c.Publish(
            b"orders.new",
            b"{}",
            7,
            reply=b"_INBOX.a1",
            headers=b"NATS/1.0\r\nK: v\r\n\r\n",
            message_id=b"m-1",
            coalescing_key=b"cursor",
            ack_id=42,
        ),
    ),
    "client.subscribe-live": ("client", c.Subscribe(1, b"chat.>")),
    "client.subscribe-queue-lossless": (
        "client",
        c.Subscribe(
            2, b"orders.*", queue=b"workers", lossless=True, max_queue_messages=1000, max_queue_bytes=1 << 20
        ),
    ),
    "client.subscribe-resume": (
        "client",
        c.Subscribe(3, b"chat.room1", start=c.StartResume(c.ResumeToken(EPOCH, (10, 0)))),
    ),
    "client.subscribe-time": ("client", c.Subscribe(4, b"prices.>", start=c.StartTime(TIME))),
    "client.subscribe-last-n": ("client", c.Subscribe(5, b"presence.*", start=c.StartLastN(20))),
    "client.subscribe-presence": (
        "client",
        c.Subscribe(6, b"room.42", presence=c.PresenceJoin(b"{}", b"tok"), presence_events=True),
    ),
    "client.presence-query": ("client", c.PresenceQuery(9, b"room.42", 0, 100)),
    "client.presence-query-count": ("client", c.PresenceQuery(10, b"room.42", 0, 0, count_only=True)),
    "client.unsubscribe": ("client", c.Unsubscribe(1)),
    "client.unsubscribe-max": ("client", c.Unsubscribe(2, 10)),
    "client.ping": ("client", c.Ping()),
    "client.pong": ("client", c.Pong()),
    "server.welcome": (
        "server",
        c.Welcome(1, 4, 1 << 20, (1 << 20) + (64 << 10), 30_000, 7, EPOCH, b"TERN0001"),
    ),
    "server.message": ("server", MSG),
    "server.message-full": (
        "server",
        c.Message(1, 3, 2, 17, TIME, b"chat.room1", b"hi", b"_INBOX.a1", b"NATS/1.0\r\n\r\n", True),
    ),
    "server.publish-ack": ("server", c.PublishAck(42, 1, 99)),
    "server.publish-ack-duplicate": ("server", c.PublishAck(43, 1, 99, duplicate=True)),
    "server.publish-ack-refused": (
        "server",
        c.PublishAck(44, code=0x0101, message=b"invalid subject: subject has an empty token"),
    ),
    "server.error-fatal": (
        "server",
        c.ErrorFrame(
            0x0002,
            b"unsupported protocol version: client offers 2..=3, server speaks 1..=1",
            fatal=True,
        ),
    ),
    "server.error-sid": (
        "server",
        c.ErrorFrame(0x0101, b"invalid subscription subject: '>' is only allowed as the last token", sid=9),
    ),
    "server.drop-notice": (
        "server",
        c.DropNotice(1, 5, (c.SequenceRange(0, 10, 12), c.SequenceRange(3, 7, 8))),
    ),
    "server.gap-notice": ("server", c.GapNotice(3, 0, 11, 500)),
    "server.goaway": ("server", c.GoAway(30_000, b"lame duck mode: the server is shutting down")),
    "server.subscribed": ("server", c.Subscribed(4, 7, (10, 0, 3))),
    "server.challenge": ("server", c.Challenge(b"qKxRFmHLFrMz5Q0AU4vCxw")),
    "server.presence-join": ("server", c.Presence(6, P.JOIN, 2, members=(member(b"alice", 1),))),
    "server.presence-leave": ("server", c.Presence(6, P.LEAVE, 1, user=b"alice")),
    "server.presence-joined": ("server", c.Presence(6, P.JOINED, 1, user=b"demo#7", member_token=b"tok")),
    "server.presence-snapshot": (
        "server",
        c.Presence(6, P.SNAPSHOT, 3, more=True, offset=0, members=(member(b"alice", 1), member(b"bob", 0))),
    ),
    "server.presence-page-count": ("server", c.Presence(10, P.PAGE, 3, query=True)),
    "server.presence-refused": ("server", c.Presence(6, P.REFUSED, 0, code=0x010A, message=b"room is full")),
    "server.error-authentication-expired": (
        "server",
        c.ErrorFrame(0x0006, b"authentication expired", fatal=True),
    ),
    "server.error-authentication-timeout": (
        "server",
        c.ErrorFrame(0x0007, b"authentication timeout", fatal=True),
    ),
    "server.error-permission-publish": (
        "server",
        c.ErrorFrame(0x0109, b'Permissions Violation for Publish to "x"'),
    ),
    "server.error-permission-subscribe": (
        "server",
        c.ErrorFrame(0x0109, b'Permissions Violation for Subscription to "x.>"', sid=3),
    ),
    "server.ping": ("server", c.Ping()),
    "server.pong": ("server", c.Pong()),
}

# name -> (kind, code, sid, ack_id); the bytes come from the file. For the `Refused` ones,
# the file's bytes are also what the codec encodes from the stated frame (checked below).
ERRORS: dict[str, tuple[str, int, int | None, int | None]] = {
    "preface-error.bad-magic": ("BadMagic", 0x0001, None, None),
    "client-error.unknown-type": ("UnknownFrameType", 0x0001, None, None),
    "client-error.server-type": ("UnknownFrameType", 0x0001, None, None),
    "client-error.too-short": ("FrameTooShort", 0x0001, None, None),
    "client-error.too-large": ("FrameTooLarge", 0x0003, None, None),
    "client-error.reserved-flags": ("ReservedFlags", 0x0001, None, None),
    "client-error.truncated": ("Truncated", 0x0001, None, None),
    "client-error.trailing": ("TrailingBytes", 0x0001, None, None),
    "client-error.auth-empty": ("InvalidValue", 0x0001, None, None),
    "client-error.auth-reserved-flags": ("ReservedFlags", 0x0001, None, None),
    "client-error.bad-priority": ("Refused", 0x0103, None, None),
    "client-error.bad-subject": ("Refused", 0x0101, None, 1),
    "client-error.wildcard-publish": ("Refused", 0x0101, None, None),
    "client-error.bad-headers": ("Refused", 0x0104, None, None),
    "client-error.bad-filter": ("Refused", 0x0101, 7, None),
    "client-error.too-many-tokens": ("Refused", 0x0101, 8, None),
}
REFUSED_FRAMES: dict[str, c.ClientFrame] = {
    "client-error.bad-priority": c.Publish(b"a.b", b"hi", 8),
    "client-error.bad-subject": c.Publish(b"a..b", b"hi", ack_id=1),
    "client-error.wildcard-publish": c.Publish(b"a.*", b"hi"),
    "client-error.bad-headers": c.Publish(b"a.b", b"hi", headers=b"HTTP/1.1"),
    "client-error.bad-filter": c.Subscribe(7, b"a.>.b"),
    "client-error.too-many-tokens": c.Subscribe(8, b".".join([b"*"] * 257)),
}


def load() -> list[tuple[str, bytes]]:
    out = []
    for line in VECTORS.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, hexs, _meaning = (p.strip() for p in line.split("|", 2))
        out.append((name, bytes.fromhex("".join(hexs.split()))))
    return out


def test_every_vector_is_known_and_every_known_vector_is_in_the_file() -> None:
    names = [n for n, _ in load()]
    assert len(names) == len(set(names)), "a vector appears twice"
    assert set(names) == set(VALUES) | set(ERRORS)


@pytest.mark.parametrize(("name", "data"), load(), ids=[n for n, _ in load()])
def test_vector(name: str, data: bytes) -> None:
    if name in ERRORS:
        kind, code, sid, ack_id = ERRORS[name]
        if name.startswith("preface-error."):
            with pytest.raises(c.CodecError) as e:
                c.Preface.decode(data)
        else:
            d = c.ClientFrameDecoder()
            d.feed(data)
            with pytest.raises(c.CodecError) as e:
                d.next()
            if kind == "Refused":
                assert d.buffered == 0, "a refused frame is consumed whole"
                assert c.encode_client_frame(REFUSED_FRAMES[name]) == data
        assert (e.value.kind, e.value.code, e.value.sid, e.value.ack_id) == (kind, code, sid, ack_id)
        assert e.value.fatal == (kind != "Refused")
        return
    direction, value = VALUES[name]
    if direction == "preface":
        assert c.Preface.decode(data) == value
        assert isinstance(value, c.Preface)
        assert value.encode() == data
        return
    if direction == "client":
        cd = c.ClientFrameDecoder()
        cd.feed(data)
        assert cd.next() == value
        assert cd.buffered == 0
        assert c.encode_client_frame(value) == data  # type: ignore[arg-type]
    else:
        sd = c.ServerFrameDecoder()
        sd.feed(data)
        decoded = sd.next()
        assert decoded == value
        assert sd.buffered == 0
        assert decoded is not None
        assert c.encode_server_frame(decoded) == data


def test_a_broken_stream_stays_broken() -> None:
    d = c.ServerFrameDecoder()
    d.feed(b"\x00\x00\x00\x02\x7f\x00" + c.encode_server_frame(c.Pong()))
    for _ in range(2):
        with pytest.raises(c.CodecError):
            d.next()


def test_text_port_greeting_is_refused_from_the_header() -> None:
    d = c.ServerFrameDecoder()
    d.feed(b"INFO {")
    with pytest.raises(c.CodecError) as e:
        d.next()
    assert e.value.kind == "FrameTooLarge"
