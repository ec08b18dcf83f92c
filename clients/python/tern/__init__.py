"""tern: a native asyncio client for Tern's binary protocol (docs/protocol-binary.md).

    async with tern.connect("tern://127.0.0.1:4224") as client:
        sub = await client.subscribe("chat.>")
        await client.publish("chat.lobby", b"hello", priority=3)
        msg = await sub.next_msg(timeout=1)

This module only re-exports the public names; each lives in the module that owns it.
"""

from ._codec import CodecError, ErrorCode, ResumeToken, SequenceRange
from .backoff import ReconnectPolicy
from .client import Client, connect
from .errors import (
    ClosedError,
    ConnectError,
    CredentialsError,
    Disconnected,
    InvalidOption,
    InvalidSubject,
    NoResponders,
    OfflineBufferFull,
    PayloadTooLarge,
    ProtocolError,
    Refused,
    ServerError,
    TernError,
    TernTimeout,
)
from .events import (
    Closed,
    Connected,
    DropNotice,
    EpochMismatch,
    ErrorEvent,
    Event,
    EventQueue,
    GapNotice,
    GoAway,
    Reconnecting,
    Resumed,
    ServerInfo,
)
from .events import Disconnected as DisconnectedEvent
from .headers import Headers
from .message import Ack, Msg
from .presence import Join, Joined, Leave, Member, Presence, PresenceEvent, PresencePage, Snapshot
from .presence import Refused as PresenceRefused
from .subscription import Subscription

__version__ = "0.1.0"

__all__ = [
    "Ack",
    "Client",
    "Closed",
    "ClosedError",
    "CodecError",
    "ConnectError",
    "Connected",
    "CredentialsError",
    "Disconnected",
    "DisconnectedEvent",
    "DropNotice",
    "EpochMismatch",
    "ErrorCode",
    "ErrorEvent",
    "Event",
    "EventQueue",
    "GapNotice",
    "GoAway",
    "Headers",
    "InvalidOption",
    "InvalidSubject",
    "Join",
    "Joined",
    "Leave",
    "Member",
    "Msg",
    "NoResponders",
    "OfflineBufferFull",
    "PayloadTooLarge",
    "Presence",
    "PresenceEvent",
    "PresencePage",
    "PresenceRefused",
    "ProtocolError",
    "ReconnectPolicy",
    "Reconnecting",
    "Refused",
    "ResumeToken",
    "Resumed",
    "SequenceRange",
    "ServerError",
    "ServerInfo",
    "Snapshot",
    "Subscription",
    "TernError",
    "TernTimeout",
    "connect",
]
