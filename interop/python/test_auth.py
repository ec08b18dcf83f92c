"""nats-py against ternd with authentication on: a token, a user with a bcrypt password
(hashed by the test), a JWT minted with PyJWT exactly as docs/security.md shows, wrong
credentials refused, an nkey signing the server's nonce, permission violations (publish,
subscribe, queue group, reserved reply subject) reported to the client's error callback
while the connection stays usable, and request/reply through `allow_responses`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import bcrypt
import jwt
import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from conftest import run_ternd

TIMEOUT_S = 10.0
SECRET = "a-shared-secret-for-the-tests-only"
# The user seed of 32 zero bytes and its public key (the binary protocol's test vectors'):
# a test key, never a secret.
SEED = "SUAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAEQ"
PUBLIC = "UA5WUJ54Z23KILLCUOUNAKTPBVZWKMQVO4O6EQ5GHLAERIMLLHNCTYM5"


def config(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "ternd.toml"
    path.write_text(text)
    return ["--config", str(path)]


async def connect(url: str, **options: object) -> Client:
    nc: Client = await nats.connect(
        url, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=3, **options
    )
    return nc


async def echo(nc: Client, subject: str) -> None:
    """A message published on `subject` comes back to this connection."""
    got: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()

    async def on_message(msg: Msg) -> None:
        if not got.done():
            got.set_result(msg)

    sub = await nc.subscribe(subject, cb=on_message)
    await nc.flush()
    await nc.publish(subject, b"hi")
    msg = await asyncio.wait_for(got, TIMEOUT_S)
    assert msg.data == b"hi"
    await sub.unsubscribe()


def errors() -> tuple[list[str], Callable[[Exception], Awaitable[None]]]:
    """A list the error callback appends to, and the callback."""
    seen: list[str] = []

    async def on_error(e: Exception) -> None:
        seen.append(str(e))

    return seen, on_error


async def wait_for_error(seen: list[str], text: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not any(text.lower() in s.lower() for s in seen):
        assert time.monotonic() < deadline, f"no error with {text!r}: {seen}"
        await asyncio.sleep(0.02)


async def test_token(tmp_path: Path) -> None:
    with run_ternd(config(tmp_path, 'auth_token = "t0ken"\n')) as ternd:
        url = "nats://" + ternd.text
        nc = await connect(url, token="t0ken")
        try:
            assert nc._server_info.get("auth_required") is True
            await echo(nc, "a")
        finally:
            await nc.close()
        with pytest.raises(Exception, match=r"(?i)authorization"):
            await connect(url, token="wrong")


async def test_bcrypt_password(tmp_path: Path) -> None:
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    users = f'[[users]]\nuser = "alice"\npassword = "{hashed}"\n'
    with run_ternd(config(tmp_path, users)) as ternd:
        url = "nats://" + ternd.text
        nc = await connect(url, user="alice", password="s3cret")
        try:
            await echo(nc, "b")
        finally:
            await nc.close()
        with pytest.raises(Exception, match=r"(?i)authorization"):
            await connect(url, user="alice", password="wrong")


async def test_jwt_with_permissions(tmp_path: Path) -> None:
    token = jwt.encode(
        {
            "sub": "user-42",
            "exp": int(time.time()) + 15 * 60,
            "tern": {"pub": {"allow": ["room.42"]}, "sub": {"allow": ["room.42", "_INBOX.>"]}},
        },
        SECRET,
        algorithm="HS256",
    )
    with run_ternd(config(tmp_path, f'[jwt]\nhs256_secret = "{SECRET}"\n')) as ternd:
        seen, on_error = errors()
        nc = await connect("nats://" + ternd.text, token=token, error_cb=on_error)
        try:
            await echo(nc, "room.42")
            await nc.publish("room.43", b"x")
            await wait_for_error(seen, 'Permissions Violation for Publish to "room.43"')
            await nc.subscribe("lobby")
            await wait_for_error(seen, 'Permissions Violation for Subscription to "lobby"')
            # The connection carries on.
            await echo(nc, "room.42")
        finally:
            await nc.close()
        expired = jwt.encode({"sub": "x", "exp": int(time.time()) - 60}, SECRET, algorithm="HS256")
        with pytest.raises(Exception, match=r"(?i)authorization"):
            await connect("nats://" + ternd.text, token=expired)


async def test_allow_responses_request_reply(tmp_path: Path) -> None:
    users = """
[[users]]
user = "svc"
password = "s"
permissions = { subscribe = ["svc.>"], allow_responses = true }

[[users]]
user = "client"
password = "c"
"""
    with run_ternd(config(tmp_path, users)) as ternd:
        url = "nats://" + ternd.text
        svc = await connect(url, user="svc", password="s")
        client = await connect(url, user="client", password="c")
        try:

            async def on_request(msg: Msg) -> None:
                await msg.respond(b"answer to " + msg.data)

            await svc.subscribe("svc.echo", cb=on_request)
            await svc.flush()
            for i in range(3):
                reply = await client.request("svc.echo", f"q{i}".encode(), timeout=TIMEOUT_S)
                assert reply.data == f"answer to q{i}".encode()
        finally:
            await svc.close()
            await client.close()


async def test_nkey(tmp_path: Path) -> None:
    with run_ternd(config(tmp_path, f'[[users]]\nnkey = "{PUBLIC}"\n')) as ternd:
        url = "nats://" + ternd.text
        nc = await connect(url, nkeys_seed_str=SEED)
        try:
            assert nc._server_info.get("nonce")
            await echo(nc, "n")
        finally:
            await nc.close()
        with pytest.raises(Exception, match=r"(?i)authorization"):
            await connect(url, token="not-an-nkey")


async def test_queue_and_reply_violations(tmp_path: Path) -> None:
    users = """
[[users]]
user = "w"
password = "w"
[users.permissions]
subscribe = ["jobs.* workers"]
"""
    with run_ternd(config(tmp_path, users)) as ternd:
        seen, on_error = errors()
        nc = await connect("nats://" + ternd.text, user="w", password="w", error_cb=on_error)
        try:
            await nc.subscribe("jobs.a", queue="others")
            await wait_for_error(
                seen, 'Permissions Violation for Subscription to "jobs.a" using queue "others"'
            )
            await nc.subscribe("jobs.a", queue="workers")
            await nc.publish("jobs.a", b"x", reply="$TERN.X")
            await wait_for_error(seen, 'Permissions Violation for Publish with Reply of "$TERN.X"')
            await nc.flush()
        finally:
            await nc.close()
