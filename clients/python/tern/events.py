"""What the client tells the application about its connection: event values and their queue.

Owns: the event types, `ServerInfo`, and the bounded event queue (`Client.events()`).
Never: blocks the connection for a slow reader: when the queue is full the oldest event is
discarded and counted (`EventQueue.lost`); never raises from `emit`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

from ._codec import SequenceRange, code_name


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """The broker a connection reached, from its WELCOME."""

    address: str
    version: int
    shard_count: int
    max_payload: int
    max_frame: int
    ping_interval: float
    client_id: int
    log_epoch: int
    server_id: str


@dataclass(frozen=True, slots=True)
class Connected:
    """The first connection is up."""

    server: ServerInfo


@dataclass(frozen=True, slots=True)
class Disconnected:
    """A working connection ended; `reason` says why. Reconnecting follows unless closed."""

    reason: str


@dataclass(frozen=True, slots=True)
class Reconnecting:
    """Attempt number `attempt` starts after `delay` seconds (`error`: why the last failed)."""

    attempt: int
    delay: float
    error: str


@dataclass(frozen=True, slots=True)
class Resumed:
    """A reconnection is up: `subscriptions` were re-sent (with resume tokens) and then
    `buffered` offline publishes (in bytes) were flushed, in that order."""

    server: ServerInfo
    subscriptions: int
    buffered: int


@dataclass(frozen=True, slots=True)
class DropNotice:
    """Messages of subscription `sid` were dropped: by the broker's queue (`source`
    "server", a DROP_NOTICE) or by this client's full subscription queue ("client").
    `ranges` name the sequences, to fetch them again with a resume token."""

    sid: int
    count: int
    ranges: tuple[SequenceRange, ...]
    source: Literal["server", "client"]


@dataclass(frozen=True, slots=True)
class GapNotice:
    """A catch-up started later than asked: sequences `requested..oldest` of `shard` are
    no longer in the broker's log."""

    sid: int
    shard: int
    requested: int
    oldest: int


@dataclass(frozen=True, slots=True)
class EpochMismatch:
    """A resume token was from another log epoch: the broker replays all it holds."""

    sid: int
    message: str


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """An ERROR from the broker (or a problem the client hit) not raised to a caller."""

    code: int
    message: str
    sid: int | None = None
    fatal: bool = False

    def __str__(self) -> str:
        return f"{code_name(self.code)}: {self.message}"


@dataclass(frozen=True, slots=True)
class GoAway:
    """The broker is going away and closes this connection within `close_within` seconds;
    the client reconnects without a backoff delay when it does."""

    close_within: float
    reason: str


@dataclass(frozen=True, slots=True)
class Closed:
    """The client is closed; no more events follow."""

    reason: str


Event = (
    Connected
    | Disconnected
    | Reconnecting
    | Resumed
    | DropNotice
    | GapNotice
    | EpochMismatch
    | ErrorEvent
    | GoAway
    | Closed
)


class EventQueue:
    """A bounded queue of events: full, it discards the oldest (counted in `lost`)."""

    def __init__(self, capacity: int) -> None:
        self._items: deque[Event] = deque()
        self._capacity = max(1, capacity)
        self._ready = asyncio.Event()
        self._closed = False
        self.lost = 0

    def emit(self, event: Event) -> None:
        if len(self._items) >= self._capacity:
            self._items.popleft()
            self.lost += 1
        self._items.append(event)
        if isinstance(event, Closed):
            self._closed = True
        self._ready.set()

    def get_nowait(self) -> Event | None:
        return self._items.popleft() if self._items else None

    async def get(self) -> Event | None:
        """The next event; None once the client is closed and every event was taken."""
        while not self._items:
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[Event]:
        while (event := await self.get()) is not None:
            yield event
