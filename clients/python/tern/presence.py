"""Presence, as a subscription sees it: typed events, the room as known, query answers.

Owns: turning PRESENCE frames of one subscription into events (a snapshot sent in several
frames becomes one `Snapshot`), the member view (`members()`, `count`), and the bounded
event queue. Never: blocks the reader: when the application falls behind, the queued
join, leave and snapshot events are replaced by one snapshot of the room as it is now
(`superseded` counts them); the latest `Joined`/`Refused` is always kept.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from . import _codec as c
from .errors import TernTimeout


@dataclass(frozen=True, slots=True)
class Member:
    """A room member: `user` (the authenticated user, or `name#client id`), `since_ms`
    (join time, ms since the Unix epoch), `connections` (0 while in the grace window)."""

    user: str
    since_ms: int
    connections: int
    info: bytes

    @staticmethod
    def of(m: c.Member) -> Member:
        return Member(m.user.decode("utf-8", "replace"), m.since_ms, m.connections, m.info)


@dataclass(frozen=True, slots=True)
class Joined:
    """This subscription's join was applied: who it is in the room."""

    user: str
    count: int


@dataclass(frozen=True, slots=True)
class Refused:
    """This subscription's join was refused by a limit; it stays as a plain subscription."""

    code: int
    message: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    members: tuple[Member, ...]
    count: int


@dataclass(frozen=True, slots=True)
class Join:
    member: Member
    count: int


@dataclass(frozen=True, slots=True)
class Leave:
    user: str
    count: int


PresenceEvent = Joined | Refused | Snapshot | Join | Leave


@dataclass(frozen=True, slots=True)
class PresencePage:
    """A query's answer: the room's count and (unless count only) members from `offset`."""

    count: int
    offset: int
    members: tuple[Member, ...]


class Presence:
    """A subscription's presence: `async for event in sub.presence`, `members()`, `count`."""

    def __init__(self, capacity: int = 1024) -> None:
        self._members: dict[str, Member] | None = None
        self._building: list[Member] = []
        self.count = 0
        self.user: str | None = None
        self.superseded = 0
        self._events: deque[PresenceEvent] = deque()
        self._capacity = max(2, capacity)
        self._ready = asyncio.Event()
        self._ended = False

    def members(self) -> tuple[Member, ...] | None:
        """The last snapshot plus the joins and leaves since; None before a snapshot."""
        return None if self._members is None else tuple(self._members.values())

    def _push(self, event: PresenceEvent) -> None:
        if len(self._events) >= self._capacity:
            kept = [e for e in self._events if isinstance(e, (Joined, Refused))][-1:]
            self.superseded += len(self._events) - len(kept)
            self._events = deque(kept)
            if not isinstance(event, (Joined, Refused)):
                event = Snapshot(self.members() or (), self.count)
                self.superseded += 1
        self._events.append(event)
        self._ready.set()

    def apply(self, p: c.Presence) -> None:
        self.count = p.count
        kind = p.kind
        if kind == c.PresenceKind.JOINED:
            self.user = p.user.decode("utf-8", "replace")
            self._push(Joined(self.user, p.count))
        elif kind == c.PresenceKind.REFUSED:
            self._push(Refused(p.code, p.message.decode("utf-8", "replace")))
        elif kind == c.PresenceKind.SNAPSHOT:
            if p.offset == 0:
                self._building = []
            self._building.extend(Member.of(m) for m in p.members)
            if not p.more:
                self._members = {m.user: m for m in self._building}
                self._building = []
                # A fresh snapshot replaces the join/leave/snapshot events still queued.
                self._events = deque(e for e in self._events if isinstance(e, (Joined, Refused)))
                self._push(Snapshot(tuple(self._members.values()), p.count))
        elif kind == c.PresenceKind.JOIN and p.members:
            m = Member.of(p.members[0])
            if self._members is not None:
                self._members[m.user] = m
            self._push(Join(m, p.count))
        elif kind == c.PresenceKind.LEAVE:
            user = p.user.decode("utf-8", "replace")
            if self._members is not None:
                self._members.pop(user, None)
            self._push(Leave(user, p.count))

    def _end(self) -> None:
        self._ended = True
        self._ready.set()

    async def next(self, timeout: float | None = None) -> PresenceEvent:
        """The next event; `TernTimeout` after `timeout` seconds, `StopAsyncIteration`
        once the subscription ended and every event was taken."""
        try:
            return await asyncio.wait_for(self._next(), timeout)
        except TimeoutError:
            raise TernTimeout(f"no presence event within {timeout}s") from None

    async def _next(self) -> PresenceEvent:
        while not self._events:
            if self._ended:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        return self._events.popleft()

    def __aiter__(self) -> AsyncIterator[PresenceEvent]:
        return self

    async def __anext__(self) -> PresenceEvent:
        return await self._next()
