//! The text protocol: wire-compatible with the NATS client protocol.
//!
//! Owns: the operations a client sends ([`ClientOp`]) and a server sends ([`ServerOp`]),
//! their incremental decoders ([`ClientDecoder`], [`ServerDecoder`]) and their encoders.
//!
//! Contract of the decoders: call `decode` with the bytes received so far; it either returns
//! one whole operation and removes its bytes from the front of the buffer, returns `Ok(None)`
//! when more bytes are needed (an ordinary answer, not an error), or returns a
//! [`DecodeError`]. An unknown operation is refused as soon as the bytes so far cannot
//! become one, without waiting for its line end. Limits (control line length, payload
//! size, tokens per subject) are enforced while parsing, before any payload is buffered, so
//! a decoder never asks its caller to hold more than `max_control_line + max_payload + 2`
//! bytes. A decoder never panics, whatever bytes arrive.
//!
//! Never: touches a socket or a clock.

mod decode;
mod encode;
mod ops;

pub use decode::{ClientDecoder, DecodeError, ServerDecoder};
pub use encode::{
    encode_client_op, encode_msg, encode_msg_line, encode_pub_line, encode_server_op,
};
pub use ops::{ClientOp, ConnectOptions, Message, Publish, ServerInfo, ServerOp, Subscribe};

/// Parsing limits. All are enforced while parsing, never after buffering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest control line (the operation line, without its payload), in bytes,
    /// counting the line end. Default 4 KiB.
    pub max_control_line: usize,
    /// Largest payload (headers included), in bytes. Default 1 MiB.
    pub max_payload: usize,
    /// Most tokens in a subject, reply subject, filter or queue group name a client
    /// sends. Default 256. More is refused, not fatally: a `SUB` with nats-server's
    /// `Permissions Violation for Subscription to "...", too many tokens`, a `PUB` with
    /// `Invalid Publish Subject: ...`.
    pub max_subject_tokens: usize,
}

impl Limits {
    /// The default `max_control_line`: 4 KiB, as in NATS.
    pub const DEFAULT_MAX_CONTROL_LINE: usize = 4 * 1024;
    /// The default `max_payload`: 1 MiB, as in NATS.
    pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;
    /// The default `max_subject_tokens`: 256.
    pub const DEFAULT_MAX_SUBJECT_TOKENS: usize = crate::subject::DEFAULT_MAX_TOKENS;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_control_line: Self::DEFAULT_MAX_CONTROL_LINE,
            max_payload: Self::DEFAULT_MAX_PAYLOAD,
            max_subject_tokens: Self::DEFAULT_MAX_SUBJECT_TOKENS,
        }
    }
}
