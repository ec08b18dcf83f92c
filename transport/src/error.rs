//! Why a transport gave up on a connection.
//!
//! Owns: the error types of the crate's one boundary ([`TransportError`]), the WebSocket
//! protocol violations with the close code each one sends ([`WsError`], [`CloseCode`]) and
//! the refused upgrade requests with their HTTP status ([`HandshakeError`]).
//!
//! Never: allocates to describe an error on the read path (every reason is a static text or
//! a number), or decides what the caller does next: an error means "this connection is
//! over"; what it already queued for the peer (a TLS alert, a WebSocket close frame, an
//! HTTP error response) is in `Transport::pending_socket_out`.

use std::fmt;

/// A WebSocket close status code (RFC 6455, section 7.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection is fulfilled.
    pub const NORMAL: Self = Self(1000);
    /// 1001: the server is going away (shutdown, lame duck, a dead peer).
    pub const GOING_AWAY: Self = Self(1001);
    /// 1002: the peer broke the WebSocket protocol.
    pub const PROTOCOL_ERROR: Self = Self(1002);
    /// 1007: a text message that is not UTF-8, or compressed data that does not inflate.
    pub const INVALID_PAYLOAD: Self = Self(1007);
    /// 1008: the peer broke a policy (authentication, a limit of the application).
    pub const POLICY_VIOLATION: Self = Self(1008);
    /// 1009: a frame or message over `WsLimits::max_message`.
    pub const MESSAGE_TOO_BIG: Self = Self(1009);
    /// 1011: the server failed.
    pub const INTERNAL_ERROR: Self = Self(1011);

    /// Whether a peer may send this code in a close frame (RFC 6455, section 7.4.1): 1000
    /// to 1003, 1007 to 1014, and 3000 to 4999. 1004, 1005, 1006 and 1015 are reserved for
    /// reporting and never sent.
    pub fn is_sendable(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A WebSocket protocol violation by the peer, after the upgrade. `Display` is the reason
/// sent in the close frame; [`WsError::close_code`] is its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    /// A client frame without the mask bit (RFC 6455, section 5.1).
    #[error("client frame is not masked")]
    Unmasked,
    /// RSV2 or RSV3 set, or RSV1 on a continuation frame.
    #[error("reserved bits set")]
    ReservedBits,
    /// RSV1 (compressed) set while permessage-deflate was not negotiated.
    #[error("compressed frame without negotiated permessage-deflate")]
    CompressedWithoutNegotiation,
    /// RSV1 set on a control frame.
    #[error("control frame must not be compressed")]
    CompressedControl,
    /// An opcode RFC 6455 reserves (3 to 7, 11 to 15).
    #[error("reserved opcode")]
    ReservedOpcode(u8),
    /// A ping, pong or close frame with more than 125 payload bytes.
    #[error("control frame payload over 125 bytes")]
    ControlTooLong,
    /// A ping, pong or close frame without FIN.
    #[error("fragmented control frame")]
    FragmentedControl,
    /// A continuation frame with no message to continue.
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    /// A text or binary frame before the previous message's final frame.
    #[error("new message before the previous message's final frame")]
    MessageInterrupted,
    /// A 64-bit payload length with its most significant bit set.
    #[error("invalid 64-bit payload length")]
    InvalidLength,
    /// A frame, a message, or a message once inflated, over the limit.
    #[error("message over {max} bytes")]
    MessageTooBig {
        /// `WsLimits::max_message`.
        max: usize,
    },
    /// A text message that is not valid UTF-8 (checked across fragments).
    #[error("text message is not valid UTF-8")]
    InvalidUtf8,
    /// Compressed data that does not inflate.
    #[error("compressed message does not inflate")]
    Inflate,
    /// A close frame with a one-byte payload.
    #[error("close frame payload of one byte")]
    ClosePayload,
    /// A close frame with a code no peer may send.
    #[error("invalid close code {0}")]
    CloseCode(u16),
    /// A close frame whose reason is not UTF-8.
    #[error("close reason is not valid UTF-8")]
    CloseReason,
}

impl WsError {
    /// The code of the close frame this violation sends.
    pub fn close_code(self) -> CloseCode {
        match self {
            WsError::MessageTooBig { .. } => CloseCode::MESSAGE_TOO_BIG,
            WsError::InvalidUtf8 | WsError::Inflate | WsError::CloseReason => {
                CloseCode::INVALID_PAYLOAD
            }
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}

/// Why an HTTP upgrade request was refused. `Display` is the one-line reason in the body
/// of the response; [`HandshakeError::status`] its status line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// No end of the header block within `WsLimits::max_handshake` bytes.
    #[error("request header over {max} bytes")]
    TooLarge {
        /// `WsLimits::max_handshake`.
        max: usize,
    },
    /// Not HTTP, or more headers than the parser takes.
    #[error("malformed HTTP request: {0}")]
    Malformed(httparse::Error),
    /// A method other than GET.
    #[error("request method must be GET")]
    Method,
    /// HTTP/1.0.
    #[error("HTTP/1.1 required")]
    HttpVersion,
    /// A request target that is not an absolute path.
    #[error("request target must be a path")]
    Target,
    /// A path that is not in `WsConfig::paths`.
    #[error("no websocket endpoint at this path")]
    UnknownPath,
    /// No `Host` header.
    #[error("'Host' missing in request")]
    MissingHost,
    /// `Upgrade` without the `websocket` token.
    #[error("invalid value for header 'Upgrade'")]
    Upgrade,
    /// `Connection` without the `upgrade` token.
    #[error("invalid value for header 'Connection'")]
    Connection,
    /// No `Sec-WebSocket-Key`.
    #[error("'Sec-WebSocket-Key' missing")]
    MissingKey,
    /// A `Sec-WebSocket-Key` that is not 16 bytes in base64.
    #[error("invalid 'Sec-WebSocket-Key'")]
    InvalidKey,
    /// `Sec-WebSocket-Version` missing or not 13.
    #[error("'Sec-WebSocket-Version' must be 13")]
    Version,
    /// An `Origin` that is not in `WsConfig::allowed_origins`.
    #[error("origin not allowed")]
    Origin,
}

impl HandshakeError {
    /// The status line of the refusal: 404 for an unknown path, 403 for a refused origin,
    /// 400 for everything else.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            HandshakeError::UnknownPath => (404, "Not Found"),
            HandshakeError::Origin => (403, "Forbidden"),
            _ => (400, "Bad Request"),
        }
    }
}

/// The end of a connection, as a transport sees it. Whatever the transport queued for the
/// peer before giving up (a TLS alert, a WebSocket close frame, an HTTP error response) is
/// in `Transport::pending_socket_out`: write it if you can, then close the socket.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The TLS session failed: a bad handshake, an unknown or missing client certificate, a
    /// corrupt record. rustls has queued the alert.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// rustls refused bytes (its buffers are bounded).
    #[error("TLS: {0}")]
    TlsBuffer(std::io::Error),
    /// The first byte from the client is not a TLS handshake record (0x16) on a connection
    /// that must be TLS: a plain-text client on a TLS port.
    #[error("TLS required: the client sent plain text (first byte 0x{first_byte:02x}) instead of a TLS handshake")]
    PlainTextOnTlsPort {
        /// What the client sent first.
        first_byte: u8,
    },
    /// More than `TlsLimits::max_unsent_plaintext` bytes waiting inside the TLS session:
    /// written before the handshake completed, or replies queued by the layer above (pongs)
    /// that the caller never took.
    #[error("TLS: more than {max} bytes waiting to go out")]
    OutputFull {
        /// `TlsLimits::max_unsent_plaintext`.
        max: usize,
    },
    /// The upgrade request was refused; the HTTP error response is queued.
    #[error("websocket upgrade refused ({status}): {0}", status = .0.status().0)]
    Handshake(#[from] HandshakeError),
    /// The peer broke the WebSocket protocol; the close frame is queued.
    #[error("websocket close {code}: {0}", code = .0.close_code())]
    WebSocket(#[from] WsError),
    /// `write` before the transport could carry application bytes (a WebSocket before its
    /// upgrade): a caller bug, the bytes were not taken.
    #[error("the transport is not ready for application bytes")]
    NotReady,
    /// `write` after the transport closed (an error, a close frame, `close`).
    #[error("the transport is closed")]
    Closed,
    /// Compressing an outgoing WebSocket message failed (not expected from the deflater).
    #[error("websocket: compressing a message failed")]
    Deflate,
    /// `start_tls` on a transport that has no deferred TLS.
    #[error("start_tls on a transport without a deferred TLS start")]
    NoTlsToStart,
}

impl TransportError {
    /// The WebSocket close code this error sent, if it sent one.
    pub fn close_code(&self) -> Option<CloseCode> {
        match self {
            TransportError::WebSocket(e) => Some(e.close_code()),
            _ => None,
        }
    }
}
