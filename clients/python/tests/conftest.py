"""Starts a real ternd for each test that asks for one, on free ports, and stops it after.

As interop/python/conftest.py does: the binary is `$TERND` when set, else this checkout's
debug build `target/debug/ternd` (`make test-client-python` builds it); 127.0.0.1, two
workers, unpinned, a fresh data directory, no monitoring port. `Broker` can also stop and
start the same ternd again on the same ports and data directory (its ring log survives),
for the restart tests.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

import tern

ROOT = Path(__file__).resolve().parents[3]
START_TIMEOUT_S = 10.0


def ternd_path() -> Path:
    path = Path(os.environ.get("TERND", ROOT / "target" / "debug" / "ternd"))
    if not path.exists():
        raise FileNotFoundError(
            f"no ternd at {path}: build it (cargo build -p tern-broker --bin ternd) or set TERND"
        )
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Broker:
    """A ternd process: `url` is its binary port, `text` its text port."""

    def __init__(self, data_dir: str, extra: list[str], *, fixed_ports: bool) -> None:
        self.data_dir = data_dir
        self.extra = extra
        self.binary_port = free_port() if fixed_ports else 0
        self.text_port = free_port() if fixed_ports else 0
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.text = ""

    def start(self) -> None:
        args = [
            str(ternd_path()),
            "--listen",
            f"127.0.0.1:{self.text_port}",
            "--binary-listen",
            f"127.0.0.1:{self.binary_port}",
            "--no-pin",
            "--workers",
            "2",
            "--no-monitor",
            "--data-dir",
            self.data_dir,
            *([] if "--log-size" in self.extra else ["--log-size", "4MiB"]),
            *self.extra,
        ]
        self.log = Path(self.data_dir) / "ternd.log"
        with self.log.open("a") as log:
            proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, text=True)
        self.proc = proc
        self.text = self._expect(proc, "ternd listening on ")
        self.url = "tern://" + self._expect(proc, "ternd binary listening on ")

    def _expect(self, proc: subprocess.Popen[str], prefix: str) -> str:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith(prefix):
            proc.kill()
            proc.wait()
            tail = self.log.read_text()[-2000:]
            raise RuntimeError(f"ternd did not start: expected {prefix!r}, got {line!r}; its log:\n{tail}")
        return line[len(prefix) :].strip()

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


class BrokerFactory:
    def __init__(self, root: str) -> None:
        self.root = root
        self.brokers: list[Broker] = []

    def __call__(self, extra: list[str] | None = None, *, fixed_ports: bool = False) -> Broker:
        data = tempfile.mkdtemp(dir=self.root)
        b = Broker(data, extra or [], fixed_ports=fixed_ports)
        b.start()
        self.brokers.append(b)
        return b


@pytest.fixture
def brokers() -> Iterator[BrokerFactory]:
    """Starts ternds on demand: `brokers(["--flag", ...], fixed_ports=True)`."""
    with tempfile.TemporaryDirectory(prefix="ternd-pyclient-") as root:
        f = BrokerFactory(root)
        try:
            yield f
        finally:
            for b in f.brokers:
                b.stop()


@pytest.fixture
def broker(brokers: BrokerFactory) -> Broker:
    """A fresh ternd with the defaults."""
    return brokers()


@pytest.fixture
async def client(broker: Broker) -> AsyncIterator[tern.Client]:
    c = await tern.connect(broker.url, name="pytest")
    try:
        yield c
    finally:
        await c.close()
