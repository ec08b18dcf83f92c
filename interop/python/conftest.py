"""Starts a real ternd for each test, on free ports, and stops it after.

The binary is `$TERND` when set, else the debug build `target/debug/ternd` of this
checkout (`cargo test` builds it). Like the Rust harness, it listens on 127.0.0.1 with a
free port, two workers, unpinned, a fresh data directory and no monitoring port. Tests that
need more (TLS, a WebSocket port) start their own with `run_ternd(extra_args)`.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 10.0


def ternd_path() -> Path:
    path = Path(os.environ.get("TERND", ROOT / "target" / "debug" / "ternd"))
    if not path.exists():
        raise FileNotFoundError(f"no ternd at {path}: build it (cargo build) or set TERND")
    return path


@dataclass
class Ternd:
    """Where a running ternd listens: `host:port` of each port it opened."""

    text: str
    binary: str
    websocket: str | None


def _expect_line(proc: subprocess.Popen[str], prefix: str) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith(prefix):
        raise RuntimeError(f"ternd did not start: expected {prefix!r}, got {line!r}")
    return line[len(prefix) :].strip()


@contextmanager
def run_ternd(extra: list[str] | None = None) -> Iterator[Ternd]:
    """A fresh ternd with `extra` flags; stopped (SIGTERM) when the block ends."""
    extra = extra or []
    with tempfile.TemporaryDirectory(prefix="ternd-py-") as data:
        args = [
            str(ternd_path()),
            "--listen",
            "127.0.0.1:0",
            "--binary-listen",
            "127.0.0.1:0",
            "--no-pin",
            "--workers",
            "2",
            "--no-monitor",
            "--data-dir",
            data,
            "--log-size",
            "4MiB",
            *extra,
        ]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            text = _expect_line(proc, "ternd listening on ")
            binary = _expect_line(proc, "ternd binary listening on ")
            websocket = None
            if "--websocket-listen" in extra:
                websocket = _expect_line(proc, "ternd websocket listening on ")
            yield Ternd(text=text, binary=binary, websocket=websocket)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=START_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def ternd_url() -> Iterator[str]:
    """The `nats://host:port` of a fresh ternd's text port."""
    with run_ternd() as ternd:
        yield "nats://" + ternd.text
