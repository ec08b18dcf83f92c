"""The exceptions the client raises: one base class, a subclass per thing to act on.

Owns: the error types and their texts. Never: holds secrets (tokens, passwords and seeds
never appear in a message), or hides the server's code: errors from the broker carry it.
"""

from __future__ import annotations

from ._codec import code_name


class TernError(Exception):
    """Base of every error this package raises."""


class ConnectError(TernError):
    """No connection could be made (or its handshake failed) on the first `connect`."""


class ServerError(TernError):
    """The broker answered with an error code (a fatal ERROR in the handshake, a refused
    subscription or presence query). `code` is the protocol's code (`tern.ErrorCode`)."""

    def __init__(self, code: int, message: str, sid: int | None = None) -> None:
        super().__init__(f"server error {code_name(code)}: {message}")
        self.code = code
        self.message = message
        self.sid = sid


class Refused(ServerError):
    """A publish that asked for an acknowledgement was refused (`PUBLISH_ACK` refused)."""


class TernTimeout(TernError, TimeoutError):
    """A wait ran out of time (an ack, a flush, a request, a subscription's confirmation)."""


class Disconnected(TernError):
    """The connection was lost while waiting for an answer: the outcome is unknown."""


class OfflineBufferFull(TernError):
    """A publish made while disconnected does not fit in the offline buffer. It was not
    queued: retry later, or raise `offline_buffer_bytes`."""


class NoResponders(TernError):
    """A request's subject has no subscriber (the broker's `NATS/1.0 503` answer)."""


class InvalidSubject(TernError):
    """A subject, filter, reply subject or queue group the protocol does not allow."""


class InvalidOption(TernError):
    """An option out of range (priority over 7, an empty message id, ...)."""


class PayloadTooLarge(TernError):
    """Header block plus payload over the server's `max_payload`."""


class ProtocolError(ConnectError):
    """The first connection's server sent bytes this client cannot decode, or a frame out
    of place (e.g. it is the text port, or it speaks TLS)."""


class CredentialsError(TernError):
    """An nkey seed or `.creds` file that cannot be used; names the source, never the secret."""


class ClosedError(TernError):
    """The client (or the subscription) is closed."""
