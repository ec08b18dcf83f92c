"""JWT connection tokens (`[jwt]` in the broker's config file, docs/security.md) and `.creds`
files, against a real ternd. Every key is made here, per test: an HS256 secret, an Ed25519
key pair, nkey seeds.

The broker's JWT mode is one key (an HS256 secret, or an RS256 / EdDSA public key) that
signs short-lived tokens with `sub`, `exp` and an optional `tern` permissions claim; NATS's
operator / account JWTs are not implemented (a `.creds` file's nkey seed answers the
CHALLENGE, its JWT goes along as the token and the broker does not look at it)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import tern
from tern._nkeys import NKey, _crc16
from tests.conftest import Broker, BrokerFactory
from tests.test_resilience import FAST, wait_for_event

# Tokens that must outlive the connect but expire during the test: long enough for a
# connect on a loaded machine, short enough to wait for.
SHORT_S = 4
LONG_S = 3600


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(sub: str, expires_in: float, **extra: Any) -> dict[str, Any]:
    return {"sub": sub, "exp": int(time.time() + expires_in), **extra}


def hs256(secret: str, body: dict[str, Any]) -> str:
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    signed = f"{head}.{b64url(json.dumps(body).encode())}"
    sig = hmac.new(secret.encode(), signed.encode(), hashlib.sha256).digest()
    return f"{signed}.{b64url(sig)}"


def eddsa(key: Ed25519PrivateKey, body: dict[str, Any]) -> str:
    head = b64url(json.dumps({"alg": "EdDSA", "typ": "JWT"}).encode())
    signed = f"{head}.{b64url(json.dumps(body).encode())}"
    return f"{signed}.{b64url(key.sign(signed.encode()))}"


def new_user_seed() -> str:
    """A fresh user nkey seed (`SU...`), encoded as the nkeys library does."""
    prefix_seed, prefix_user = 18 << 3, 20 << 3
    raw = bytes([prefix_seed | prefix_user >> 5, (prefix_user & 31) << 3]) + os.urandom(32)
    raw += _crc16(raw).to_bytes(2, "little")
    return base64.b32encode(raw).decode().rstrip("=")


@pytest.fixture
def secret() -> str:
    return os.urandom(32).hex()


@pytest.fixture
def jwt_broker(brokers: BrokerFactory, tmp_path: Path, secret: str) -> Broker:
    conf = tmp_path / "ternd.toml"
    conf.write_text(f'[jwt]\nhs256_secret = "{secret}"\nleeway = "0s"\n')
    return brokers(["--config", str(conf)])


async def test_a_jwt_is_checked_and_its_permissions_apply(jwt_broker: Broker, secret: str) -> None:
    limited = claims("erin", LONG_S, tern={"pub": {"allow": ["ok.>"]}, "sub": {"allow": ["ok.>"]}})
    async with tern.connect(jwt_broker.url, token=hs256(secret, limited)) as c:
        sub = await c.subscribe("ok.>")
        await c.publish_acked("ok.x", b"in")
        assert (await sub.next_msg(5)).payload == b"in"
        # The token's claim, not the default (everything): the broker read this token.
        with pytest.raises(tern.Refused) as refused:
            await c.publish_acked("other.x", b"no")
        assert refused.value.code == tern.ErrorCode.PERMISSION_VIOLATION
    for token in (
        hs256("another-secret", claims("erin", LONG_S)),  # signed with another key
        hs256(secret, claims("erin", -60)),  # expired
        hs256(secret, {"exp": int(time.time()) + LONG_S}),  # no sub
    ):
        with pytest.raises(tern.ServerError) as e:
            await tern.connect(jwt_broker.url, token=token)
        assert e.value.code == tern.ErrorCode.AUTHORIZATION_VIOLATION
        assert token not in str(e.value)


async def test_an_eddsa_jwt_checked_with_a_public_key_file(brokers: BrokerFactory, tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "jwt.pem").write_bytes(pem)
    conf = tmp_path / "ternd.toml"
    conf.write_text(f'[jwt]\npublic_key_file = "{tmp_path / "jwt.pem"}"\naudience = "tern"\n')
    b = brokers(["--config", str(conf)])
    async with tern.connect(b.url, token=eddsa(key, claims("frank", LONG_S, aud="tern"))) as c:
        await c.publish_acked("any.x", b"signed")
    for token in (
        eddsa(Ed25519PrivateKey.generate(), claims("frank", LONG_S, aud="tern")),  # another key
        eddsa(key, claims("frank", LONG_S, aud="elsewhere")),  # another audience
    ):
        with pytest.raises(tern.ServerError) as e:
            await tern.connect(b.url, token=token)
        assert e.value.code == tern.ErrorCode.AUTHORIZATION_VIOLATION


async def test_refresh_token_outlives_the_first_jwt_and_is_used_on_reconnect(
    jwt_broker: Broker, secret: str
) -> None:
    # Two connections with one token that expires in SHORT_S; one refreshes, the other not.
    first = hs256(secret, claims("dana", SHORT_S))
    lapsing = await tern.connect(jwt_broker.url, token=first, reconnect=tern.ReconnectPolicy.disabled())
    refreshed = await tern.connect(jwt_broker.url, token=first, reconnect=FAST)
    watcher = await tern.connect(jwt_broker.url, token=hs256(secret, claims("watcher", LONG_S)))
    try:
        # The new token lives long and forbids `old.>`: its permissions apply at once, so a
        # refusal proves the AUTH reached the broker on this live connection.
        later = hs256(secret, claims("dana", LONG_S, tern={"pub": {"deny": ["old.>"]}}))
        await refreshed.refresh_token(later)
        await refreshed.flush()
        with pytest.raises(tern.Refused) as refused:
            await refreshed.publish_acked("old.x", b"no longer")
        assert refused.value.code == tern.ErrorCode.PERMISSION_VIOLATION

        # The unrefreshed one is closed at its expiry: the first token has expired now.
        # (The broker checks every 100 ms; a generous wait for a loaded machine.)
        expired = await wait_for_event(lapsing, tern.ErrorEvent, timeout=SHORT_S + 20)
        assert isinstance(expired, tern.ErrorEvent)
        assert expired.code == tern.ErrorCode.AUTHENTICATION_EXPIRED and expired.fatal
        # The refreshed one is still on its first connection.
        sub = await watcher.subscribe("new.>")
        assert (await refreshed.publish_acked("new.x", b"still here")).sequence > 0
        assert (await sub.next_msg(5)).payload == b"still here"
        while (e := refreshed.events().get_nowait()) is not None:
            assert not isinstance(e, tern.DisconnectedEvent | tern.ErrorEvent), e

        # The network drops: the reconnection's HELLO carries the refreshed token (the first
        # has expired: with it, every attempt would be refused and it would never resume).
        assert refreshed._conn is not None
        refreshed._conn.writer.transport.abort()
        await wait_for_event(refreshed, tern.Resumed, timeout=20)
        assert (await refreshed.publish_acked("new.y", b"reconnected")).sequence > 0
        assert (await sub.next_msg(5)).payload == b"reconnected"
        with pytest.raises(tern.Refused):  # the refreshed token's permissions, again
            await refreshed.publish_acked("old.y", b"still no")
    finally:
        await lapsing.close()
        await refreshed.close()
        await watcher.close()


CREDS = """-----BEGIN NATS USER JWT-----
{jwt}
------END NATS USER JWT------

************************* IMPORTANT *************************
NKEY Seed printed below can be used to sign and prove identity.
NKEYs are sensitive and should be treated as secrets.

-----BEGIN USER NKEY SEED-----
{seed}
------END USER NKEY SEED------

*************************************************************
"""


async def test_a_creds_file_signs_with_its_seed_and_sends_its_jwt(
    brokers: BrokerFactory, tmp_path: Path
) -> None:
    seed = new_user_seed()
    conf = tmp_path / "ternd.toml"
    conf.write_text(f'[[users]]\nnkey = "{NKey(seed).public}"\n[users.permissions]\npublish = ["creds.>"]\n')
    b = brokers(["--config", str(conf)])
    # A user JWT as `nsc` writes it; base64url, so with `-` and `_` in it (made sure of).
    n = 0
    while "-" not in (jwt := hs256("nsc", claims(f"user-{n}", LONG_S))) or "_" not in jwt:
        n += 1
    creds = tmp_path / "user.creds"
    creds.write_text(CREDS.format(jwt=jwt, seed=seed))
    async with tern.connect(b.url, creds=creds) as c:
        assert c._hello().auth_token == jwt.encode()  # the whole JWT goes along in the HELLO
        sub = await c.subscribe("creds.>")
        await c.publish_acked("creds.x", b"signed in")
        assert (await sub.next_msg(5)).payload == b"signed in"
        with pytest.raises(tern.Refused):  # the nkey user's permissions: it is that user
            await c.publish_acked("elsewhere", b"no")
    # The same JWT with another seed: the signature is the credential, the JWT is not.
    other = tmp_path / "other.creds"
    other.write_text(CREDS.format(jwt=jwt, seed=new_user_seed()))
    with pytest.raises(tern.ServerError) as e:
        await tern.connect(b.url, creds=other)
    assert e.value.code == tern.ErrorCode.AUTHORIZATION_VIOLATION
