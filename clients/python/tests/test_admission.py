"""The broker's admission limits (docs/operations.md, *Admission control*) as the client's
typed errors: a publish over the connection's rate with `--rate-action refuse`
(`RateLimited`), and subscriptions beyond `--max-subscriptions` (`TooManySubscriptions`).
Neither closes the connection."""

from __future__ import annotations

import pytest

import tern
from tests.conftest import BrokerFactory

# A message a second, one at once: two publishes the broker reads together cannot both pass.
RATE = ["--rate-action", "refuse", "--publish-msgs-per-sec", "1", "--publish-msgs-burst", "1"]


def drain_errors(c: tern.Client) -> list[tern.ErrorEvent]:
    out: list[tern.ErrorEvent] = []
    while (e := c.events().get_nowait()) is not None:
        if isinstance(e, tern.ErrorEvent):
            out.append(e)
    return out


async def test_a_publish_over_the_rate_is_refused_with_rate_limited(brokers: BrokerFactory) -> None:
    limited = brokers(RATE)
    watcher = await tern.connect(limited.url, name="watcher")
    c = await tern.connect(limited.url, name="publisher")
    try:
        sub = await watcher.subscribe("rate.>")
        # Acknowledged: one passes (the burst); one soon after is refused, with the text.
        accepted = 0
        refused: tern.Refused | None = None
        for i in range(20):  # a refusal within 20 round trips, however slow the machine
            try:
                await c.publish_acked("rate.acked", str(i))
                accepted += 1
            except tern.Refused as e:
                refused = e
                break
        assert refused is not None, "no publish was refused"
        assert accepted >= 1
        assert refused.code == tern.ErrorCode.RATE_LIMITED
        assert refused.message.startswith("publish rate exceeded"), refused.message
        assert c.is_connected

        # Fire and forget: written together, so at most one of them fits the bucket; each
        # refusal is a non-fatal ErrorEvent, and the flush's PONG comes after them.
        drain_errors(c)
        for i in range(5):
            await c.publish("rate.plain", str(i))
        await c.flush(timeout=10)
        errors = drain_errors(c)
        assert len(errors) >= 4, errors
        assert all(e.code == tern.ErrorCode.RATE_LIMITED and not e.fatal for e in errors), errors
        assert all(e.message.startswith("publish rate exceeded") for e in errors), errors
        assert c.is_connected

        # Nothing refused was delivered: exactly the publishes that passed arrive.
        await watcher.flush(timeout=10)
        got = [(await sub.next_msg(5)).subject for _ in range(accepted + 5 - len(errors))]
        assert got.count("rate.acked") == accepted
        with pytest.raises(tern.TernTimeout):
            await sub.next_msg(0.3)
    finally:
        await watcher.close()
        await c.close()


async def test_subscriptions_beyond_the_limit_are_refused_with_too_many_subscriptions(
    brokers: BrokerFactory,
) -> None:
    limited = brokers(["--max-subscriptions", "2"])
    async with tern.connect(limited.url) as c:
        a = await c.subscribe("subs.a")
        b = await c.subscribe("subs.b")
        # Confirmed: the subscribe call raises the broker's refusal.
        with pytest.raises(tern.ServerError) as e:
            await c.subscribe("subs.c")
        assert e.value.code == tern.ErrorCode.TOO_MANY_SUBSCRIPTIONS
        assert e.value.message.startswith("maximum subscriptions exceeded"), e.value.message
        assert e.value.sid is not None
        # Unconfirmed: the subscription ends with it (and the error is an event).
        d = await c.subscribe("subs.d", confirm=False)
        with pytest.raises(tern.ServerError) as e:
            await d.next_msg(5)
        assert e.value.code == tern.ErrorCode.TOO_MANY_SUBSCRIPTIONS and e.value.sid == d.sid
        assert not d.active
        errors = [x for x in drain_errors(c) if x.code == tern.ErrorCode.TOO_MANY_SUBSCRIPTIONS]
        assert {x.sid for x in errors} >= {d.sid} and not any(x.fatal for x in errors)
        # The connection stays, and the two it has still work; a freed place can be taken.
        assert c.is_connected
        await a.unsubscribe()
        again = await c.subscribe("subs.e")
        await c.publish("subs.b", b"b")
        await c.publish("subs.e", b"e")
        assert (await b.next_msg(5)).payload == b"b"
        assert (await again.next_msg(5)).payload == b"e"
