"""One publisher's messages reach a wildcard subscriber in publish order, whatever their
subjects, as nats-server guarantees: the check nats-py's own test suite makes
(`tests.0` ... `tests.4` to `tests.>`), a thousand times over subjects that land on every
shard of a 2-worker ternd."""

from __future__ import annotations

import asyncio

import nats
from nats.aio.msg import Msg

COUNT = 1000
TIMEOUT_S = 10.0


async def test_one_publishers_messages_to_many_subjects_arrive_in_publish_order(
    ternd_url: str,
) -> None:
    sub_client = await nats.connect(ternd_url)
    pub_client = await nats.connect(ternd_url)
    try:
        received: list[str] = []
        done = asyncio.Event()

        async def on_message(msg: Msg) -> None:
            received.append(msg.subject)
            if len(received) == COUNT:
                done.set()

        await sub_client.subscribe("a.*", cb=on_message)
        await sub_client.flush()
        for i in range(COUNT):
            await pub_client.publish(f"a.{i}", str(i).encode())
        await pub_client.flush()
        await asyncio.wait_for(done.wait(), TIMEOUT_S)
        assert received == [f"a.{i}" for i in range(COUNT)]
    finally:
        await pub_client.close()
        await sub_client.close()


async def test_the_nats_py_suite_check_tests_0_to_4_on_a_full_wildcard(ternd_url: str) -> None:
    client = await nats.connect(ternd_url)
    try:
        sub = await client.subscribe("tests.>")
        await client.flush()
        for i in range(5):
            await client.publish(f"tests.{i}", b"bar")
        await client.flush()
        subjects = [(await sub.next_msg(timeout=TIMEOUT_S)).subject for _ in range(5)]
        assert subjects == [f"tests.{i}" for i in range(5)]
    finally:
        await client.close()
