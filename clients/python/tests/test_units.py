"""Pure parts, without a broker: nkeys, headers, resume tokens, server addresses."""

from __future__ import annotations

import pytest

import tern
from tern import _codec as c
from tern._nkeys import NKey
from tern.client import parse_server
from tern.subscription import ResumeTracker


def test_nkey_matches_the_protocol_vectors() -> None:
    # protocol/tests/vectors/binary.txt: client.hello-nkey and client.auth-signature.
    key = NKey("SUAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAEQ")
    assert key.public == "UA5WUJ54Z23KILLCUOUNAKTPBVZWKMQVO4O6EQ5GHLAERIMLLHNCTYM5"
    assert key.sign(b"qKxRFmHLFrMz5Q0AU4vCxw") == (
        b"rtA2tbpEUnOV7v64VlU9H_LwiSneOUhql0wWVCpsL4ll6eEaCKBFD6Y2cVUs6ICFrkxXr2ccPWTEJQs1Xy2WDA"
    )
    assert "SUAA" not in repr(key)


def test_bad_seeds_are_refused_without_showing_them() -> None:
    for bad in ["SUAAAA", "UA5WUJ54Z23KILLCUOUNAKTPBVZWKMQVO4O6EQ5GHLAERIMLLHNCTYM5", "!!"]:
        with pytest.raises(tern.CredentialsError) as e:
            NKey(bad)
        assert bad not in str(e.value)


def test_headers_round_trip() -> None:
    h = tern.Headers([("A", "1"), ("b", "2"), ("A", "3")])
    block = h.encode()
    assert block == b"NATS/1.0\r\nA: 1\r\nb: 2\r\nA: 3\r\n\r\n"
    back = tern.Headers.parse(block)
    assert back == h and back.get("a") == "1" and back.get_all("A") == ["1", "3"]
    status = tern.Headers.parse(b"NATS/1.0 503\r\n\r\n")
    assert status.status == 503 and len(status) == 0
    with pytest.raises(ValueError):
        h.append("bad name", "x")


def test_resume_tracker_folds_subscribed_and_never_lowers() -> None:
    t = ResumeTracker()
    assert t.token() is None
    t.observe(7, 0, 12)
    t.start_at(7, (10, 40, 0))
    assert t.token() == c.ResumeToken(7, (12, 40))
    t.start_at(8, (3, 0))
    assert t.token() == c.ResumeToken(8, (3,))
    t.observe(8, 2, 5)
    assert t.token() == c.ResumeToken(8, (3, 0, 5))


def test_server_addresses() -> None:
    assert parse_server("tern://h:1") == ("h", 1, False)
    assert parse_server("tls://h") == ("h", 4224, True)
    assert parse_server("127.0.0.1:5") == ("127.0.0.1", 5, False)
    assert parse_server("[::1]:7") == ("::1", 7, False)
    with pytest.raises(tern.InvalidOption):
        parse_server("nats://h:4222")
    with pytest.raises(tern.InvalidOption):
        parse_server("tern://h:x")


def test_secrets_are_not_in_reprs() -> None:
    hello = c.Hello(auth_token=b"tok-secret", user=b"u", password=b"pw-secret")
    assert "secret" not in repr(hello)
    assert "secret" not in repr(c.Auth(token=b"tok-secret"))
