"""Subscriptions: the application's end (an async iterator of `Msg`) and the resume token.

Owns: one subscription's bounded message queue, its resume token (`ResumeTracker`: the
highest sequence seen per shard, folded with where SUBSCRIBED says it started), its drop
count, and the frame that (re)subscribes it. A full queue drops the new message, counts it
and reports it as a `DropNotice` event with source "client" (take messages faster or raise
`capacity`), except for a lossless subscription: its full queue is backpressure, and the
connection's reader waits for room in it (`_wait_room`) before it handles that message or
anything after it; taking messages (down to half the capacity) or the subscription's end
lets it go on.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from . import _codec as c
from .errors import ServerError, TernTimeout
from .message import Msg
from .presence import Presence

if TYPE_CHECKING:
    from .client import Client


class ResumeTracker:
    """Per shard, the last sequence this subscription has (seen, or started after)."""

    def __init__(self, token: c.ResumeToken | None = None) -> None:
        self.epoch = token.epoch if token else 0
        self.last: list[int] = list(token.last_sequences) if token else []

    def observe(self, epoch: int, shard: int, sequence: int) -> None:
        if epoch != self.epoch:
            self.reset(epoch)
        if len(self.last) <= shard:
            self.last.extend([0] * (shard + 1 - len(self.last)))
        if sequence > self.last[shard]:
            self.last[shard] = sequence

    def start_at(self, epoch: int, last_sequences: tuple[int, ...]) -> None:
        if epoch != self.epoch:
            self.reset(epoch)
        if len(self.last) < len(last_sequences):
            self.last.extend([0] * (len(last_sequences) - len(self.last)))
        for i, start in enumerate(last_sequences):
            if start > self.last[i]:
                self.last[i] = start

    def reset(self, epoch: int) -> None:
        self.epoch = epoch
        self.last = []

    def token(self) -> c.ResumeToken | None:
        n = len(self.last)
        while n and self.last[n - 1] == 0:
            n -= 1
        if n == 0:
            return None
        return c.ResumeToken(self.epoch, tuple(self.last[:n]))


class Subscription:
    """`async for msg in sub`, or `await sub.next_msg(timeout)`. Iteration ends after
    `unsubscribe()`, `drain()` or `close()` once queued messages are taken; a subscription
    the broker refused raises its `ServerError` instead."""

    def __init__(
        self,
        client: Client,
        sid: int,
        frame: c.Subscribe,
        capacity: int,
        presence: Presence | None,
    ) -> None:
        self._client = client
        self.sid = sid
        self.subject = frame.subject.decode()
        self.queue = frame.queue.decode() if frame.queue is not None else None
        self._frame = frame
        self._tracker = ResumeTracker(frame.start.token if isinstance(frame.start, c.StartResume) else None)
        self._msgs: deque[Msg] = deque()
        self._capacity = max(1, capacity)
        self._lossless = frame.lossless
        # While the connection's reader waits for room in this (lossless) subscription's
        # queue: resolved once the application has taken it down to `_low`, or at the end.
        self._room: asyncio.Future[None] | None = None
        self._low = self._capacity // 2
        self._ready = asyncio.Event()
        self._ended = False
        self._error: ServerError | None = None
        self.dropped = 0
        self.presence = presence
        self._member_token: bytes | None = None
        self._remaining: int | None = None
        self._confirm: asyncio.Future[None] | None = None
        self._local_drops: list[c.SequenceRange] = []
        self._local_count = 0
        self._resume = True

    # -- the application's side

    @property
    def resume_token(self) -> c.ResumeToken | None:
        """Where this subscription would resume: pass it as `resume=` to a new subscribe."""
        return self._tracker.token()

    @property
    def active(self) -> bool:
        return not self._ended

    @property
    def pending(self) -> int:
        """Messages queued in the client, not yet taken."""
        return len(self._msgs)

    async def next_msg(self, timeout: float | None = None) -> Msg:
        """The next message; `TernTimeout` after `timeout` seconds; `StopAsyncIteration`
        once ended; the broker's `ServerError` if it refused the subscription."""
        if self._msgs:
            return self._take()
        try:
            return await asyncio.wait_for(self._next(), timeout)
        except TimeoutError:
            raise TernTimeout(f"no message on {self.subject!r} within {timeout}s") from None

    async def _next(self) -> Msg:
        while not self._msgs:
            if self._ended:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        return self._take()

    def _take(self) -> Msg:
        msg = self._msgs.popleft()
        room = self._room
        if room is not None and len(self._msgs) <= self._low and not room.done():
            room.set_result(None)
        return msg

    def __aiter__(self) -> AsyncIterator[Msg]:
        return self

    async def __anext__(self) -> Msg:
        return await self._next()

    async def unsubscribe(self, after: int | None = None) -> None:
        """Ends the subscription now, or after `after` more deliveries."""
        await self._client._unsubscribe(self, after)

    # -- the client's side

    def _subscribe_frame(self) -> c.Subscribe:
        """The SUBSCRIBE for a (re)connection: resumed where it is, with the member token."""
        f = self._frame
        token = self._tracker.token() if self._resume else None
        start: c.StartPosition = c.StartResume(token) if token is not None else f.start
        presence = f.presence
        if presence is not None and self._member_token is not None:
            presence = c.PresenceJoin(presence.info, self._member_token)
        return c.Subscribe(
            f.sid,
            f.subject,
            f.queue,
            f.lossless,
            f.max_queue_messages,
            f.max_queue_bytes,
            start,
            presence,
            f.presence_events,
        )

    def _full(self) -> bool:
        """A lossless subscription whose queue has no room: the reader must wait."""
        return self._lossless and not self._ended and len(self._msgs) >= self._capacity

    async def _wait_room(self) -> None:
        """The connection's reader, at a message for this full lossless subscription:
        returns once the application has taken messages (the queue down to half its
        capacity) or the subscription has ended. Cancelled with the reader when the
        connection ends or the client closes."""
        while self._full():
            room: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._room = room
            try:
                await room
            finally:
                if self._room is room:
                    self._room = None

    def _deliver(self, msg: Msg) -> None:
        if len(self._msgs) >= self._capacity:
            self.dropped += 1
            self._local_count += 1
            r = self._local_drops[-1] if self._local_drops else None
            if r is not None and r.shard == msg.shard and r.last + 1 == msg.sequence:
                self._local_drops[-1] = c.SequenceRange(r.shard, r.first, msg.sequence)
            elif len(self._local_drops) < 1024 and msg.sequence:
                self._local_drops.append(c.SequenceRange(msg.shard, msg.sequence, msg.sequence))
            return
        self._msgs.append(msg)
        self._ready.set()

    def _end(self, error: ServerError | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        self._error = error
        self._ready.set()
        if self._room is not None and not self._room.done():
            self._room.set_result(None)  # the reader goes on (and discards the message)
        if self.presence is not None:
            self.presence._end()
        if self._confirm is not None and not self._confirm.done():
            if error is not None:
                self._confirm.set_exception(error)
            else:
                self._confirm.set_result(None)

    def __repr__(self) -> str:
        return f"Subscription(sid={self.sid}, subject={self.subject!r}, active={self.active})"
