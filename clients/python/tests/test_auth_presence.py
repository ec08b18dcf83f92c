"""Credentials and permissions (a config file with [[users]], docs/security.md), and
presence (docs/presence.md): joins, watching, queries, the member token on reconnect."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

import tern
from tests.conftest import Broker, BrokerFactory
from tests.test_resilience import FAST, wait_for_event

SEED = "SUAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAEQ"
NKEY = "UA5WUJ54Z23KILLCUOUNAKTPBVZWKMQVO4O6EQ5GHLAERIMLLHNCTYM5"
CONFIG = f"""
[[users]]
nkey = "{NKEY}"

[[users]]
user = "alice"
password = "pw"
[users.permissions]
publish = ["allowed.>"]
subscribe = ["allowed.>"]
"""


async def until(p: tern.Presence, done: Callable[[tern.PresenceEvent], bool]) -> list[tern.PresenceEvent]:
    """Presence events up to and including the first for which `done` is true."""
    out: list[tern.PresenceEvent] = []
    while not out or not done(out[-1]):
        out.append(await p.next(2))
    return out


@pytest.fixture
def secured(brokers: BrokerFactory, tmp_path: Path) -> Broker:
    conf = tmp_path / "ternd.toml"
    conf.write_text(CONFIG)
    return brokers(["--config", str(conf)])


async def test_refused_credentials_are_a_server_error(secured: Broker) -> None:
    with pytest.raises(tern.ServerError) as e:
        await tern.connect(secured.url, user="alice", password="wrong")
    assert e.value.code == tern.ErrorCode.AUTHORIZATION_VIOLATION
    assert "wrong" not in str(e.value)
    with pytest.raises(tern.ServerError):
        await tern.connect(secured.url)


async def test_permissions_are_typed_errors(secured: Broker) -> None:
    async with tern.connect(secured.url, user="alice", password="pw") as c:
        sub = await c.subscribe("allowed.>")
        await c.publish_acked("allowed.x", b"ok")
        assert (await sub.next_msg(2)).payload == b"ok"
        with pytest.raises(tern.Refused) as refused:
            await c.publish_acked("denied.x", b"no")
        assert refused.value.code == tern.ErrorCode.PERMISSION_VIOLATION
        with pytest.raises(tern.ServerError) as e:
            await c.subscribe("denied.>")
        assert e.value.code == tern.ErrorCode.PERMISSION_VIOLATION
        await c.publish("denied.y", b"no")
        err = await wait_for_event(c, tern.ErrorEvent, timeout=3)
        assert isinstance(err, tern.ErrorEvent) and err.code == tern.ErrorCode.PERMISSION_VIOLATION


async def test_nkey_seed_and_creds_file(secured: Broker, tmp_path: Path) -> None:
    async with tern.connect(secured.url, nkey_seed=SEED) as c:
        await c.publish_acked("any.thing", b"signed in")
    creds = tmp_path / "user.creds"
    creds.write_text(f"-----BEGIN USER NKEY SEED-----\n{SEED}\n------END USER NKEY SEED------\n")
    async with tern.connect(secured.url, creds=creds) as c:
        await c.flush()
    with pytest.raises(tern.CredentialsError) as e:
        await tern.connect(secured.url, nkey_seed="SUAAAA")
    assert "SUAAAA" not in str(e.value)
    with pytest.raises(tern.CredentialsError):
        await tern.connect(secured.url, creds=tmp_path / "missing.creds")


async def test_presence_join_watch_query_and_leave(broker: Broker) -> None:
    a = await tern.connect(broker.url, name="a")
    b = await tern.connect(broker.url, name="b")
    try:
        watch = await a.subscribe("room.1", presence=b'{"n":1}', presence_events=True)
        assert watch.presence is not None
        # The broker sends the snapshot, our Joined and the Join of our own member, in
        # that order today; the test does not depend on it.
        first = await until(watch.presence, lambda e: isinstance(e, tern.Join))
        joined = next(e for e in first if isinstance(e, tern.Joined))
        assert joined.user.startswith("a#")
        assert any(isinstance(e, tern.Snapshot) for e in first)
        other = await b.subscribe("room.1", presence=b'{"n":2}')
        join = await watch.presence.next(2)
        assert isinstance(join, tern.Join) and join.member.info == b'{"n":2}' and join.count == 2
        members = watch.presence.members()
        assert members is not None and len(members) == 2
        page = await a.presence("room.1")
        assert page.count == 2 and [m.info for m in page.members] == [b'{"n":1}', b'{"n":2}']
        assert await b.presence_count("room.1") == 2
        await other.unsubscribe()
        leave = await watch.presence.next(2)
        assert isinstance(leave, tern.Leave) and leave.user == join.member.user and leave.count == 1
    finally:
        await a.close()
        await b.close()


async def test_member_token_keeps_the_member_across_a_reconnect(broker: Broker) -> None:
    a = await tern.connect(broker.url, name="a")
    b = await tern.connect(broker.url, name="b", reconnect=FAST)
    try:
        watch = await a.subscribe("room.2", presence_events=True)
        assert watch.presence is not None
        assert isinstance(await watch.presence.next(2), tern.Snapshot)
        member = await b.subscribe("room.2", presence=b"{}")
        assert member.presence is not None
        first = await member.presence.next(2)
        assert isinstance(first, tern.Joined)
        assert isinstance(await watch.presence.next(2), tern.Join)
        assert member._member_token
        assert b._conn is not None
        b._conn.writer.transport.abort()  # the network drops
        await wait_for_event(b, tern.Resumed)
        again = await member.presence.next(3)
        assert isinstance(again, tern.Joined) and again.user == first.user
        await b.flush()
        await a.flush()
        with pytest.raises(tern.TernTimeout):
            print(await watch.presence.next(0.5))  # nobody saw a leave or a join
    finally:
        await a.close()
        await b.close()


async def test_presence_query_refused(broker: Broker) -> None:
    async with tern.connect(broker.url) as c:
        with pytest.raises(tern.InvalidSubject):
            await c.presence("room.*")
        with pytest.raises(tern.ServerError) as e:
            await c.presence("room.3", limit=5000)
        assert e.value.code == tern.ErrorCode.INVALID_OPTION
        await asyncio.sleep(0)
