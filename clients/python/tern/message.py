"""Delivered messages and publish acknowledgements, as the application sees them.

Owns: `Msg` (a MESSAGE frame made friendly: text subjects, parsed headers on demand) and
`Ack`. Never: copies a payload more than once, or parses headers it is not asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .headers import Headers, HeadersInput

if TYPE_CHECKING:
    from .client import Client


@dataclass(frozen=True, slots=True)
class Ack:
    """Where the broker stored an acknowledged publish. `duplicate`: its message id was
    seen within the dedupe window, and shard/sequence are the first copy's."""

    shard: int
    sequence: int
    duplicate: bool = False


@dataclass(slots=True)  # not frozen: one per delivery, and frozen ones are slower to build
class Msg:
    """A message delivered to a subscription. `sequence` is per `shard` (0: not stored);
    `timestamp` is nanoseconds since the Unix epoch; `replayed` is True for catch-up from
    the log. `header_block` is the NATS header block as received (None when absent)."""

    subject: str
    payload: bytes
    reply: str | None = None
    header_block: bytes | None = None
    priority: int = 0
    shard: int = 0
    sequence: int = 0
    timestamp: int = 0
    replayed: bool = False
    sid: int = 0
    _client: Client | None = field(default=None, repr=False, compare=False)

    @property
    def headers(self) -> Headers | None:
        return None if self.header_block is None else Headers.parse(self.header_block)

    @property
    def is_no_responders(self) -> bool:
        """The broker's answer to a request nobody subscribes to (`NATS/1.0 503`)."""
        return (
            self.header_block is not None
            and not self.payload
            and self.header_block.startswith(b"NATS/1.0 503")
        )

    async def respond(self, payload: bytes | str, *, headers: HeadersInput | Headers | None = None) -> None:
        """Publishes `payload` to this message's reply subject."""
        if self.reply is None:
            raise ValueError("this message has no reply subject")
        if self._client is None:
            raise ValueError("this message did not come from a client")
        await self._client.publish(self.reply, payload, headers=headers)
