"""The examples run: request/reply end to end, and the market feed into its consumer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import BrokerFactory

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(*args: str, timeout: float = 30) -> str:
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, check=True)
    return out.stdout


def test_request_reply_example(brokers: BrokerFactory) -> None:
    b = brokers()
    out = run(str(EXAMPLES / "request_reply.py"), "--server", b.url, "both", "hi", "there")
    assert out.splitlines() == ["hi -> HI", "there -> THERE"]


def test_market_feed_and_consumer_examples(brokers: BrokerFactory) -> None:
    b = brokers(["--write-buffer", "16KiB"])
    args = ["--server", b.url, "--seconds", "3", "--delay", "0.005", "--queue", "16"]
    consumer = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "market_consumer.py"), *args], stdout=subprocess.PIPE, text=True
    )
    try:
        assert consumer.stdout is not None
        assert consumer.stdout.readline().startswith("consuming md.>")
        # Enough that the sockets' buffers between the broker and the consumer cannot take
        # the whole feed (they took all of 5,000 once, and the broker's queue then never
        # filled): the rest waits in the subscription's queue of 16, which drops.
        out = run(str(EXAMPLES / "market_feed.py"), "--server", b.url, "--count", "20000")
        assert out.startswith("published 20000 quotes")
        rest = consumer.communicate(timeout=20)[0]
    finally:
        consumer.kill()
    assert "dropped" in rest and "(server)" in rest
    assert rest.splitlines()[-1].startswith("received by priority")


BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench.py"


def test_bench_script_runs_against_both_ports(brokers: BrokerFactory) -> None:
    b = brokers()
    args = ["--tern", b.url, "--nats", "nats://" + b.text, "--count", "2000", "--latency-count", "50"]
    lines = run(str(BENCH), *args, "--rate", "1000").splitlines()
    assert lines[0].split()[:2] == ["client", "msgs/s"]
    assert [line.split("  ")[0] for line in lines[1:]] == ["tern-client (binary)", "nats-py (text)"]
