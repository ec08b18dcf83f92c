//! The text protocol: wire-compatible with the NATS client protocol.
//!
//! Owns: the operations a client sends ([`ClientOp`]) and a server sends ([`ServerOp`]),
//! their incremental decoders ([`ClientDecoder`], [`ServerDecoder`]) and their encoders.
//!
//! Contract of the decoders: call `decode` with the bytes received so far; it either returns
//! one whole operation and removes its bytes from the front of the buffer, returns `Ok(None)`
//! when more bytes are needed (an ordinary answer, not an error), or returns a
//! [`DecodeError`]. An unknown operation is refused as soon as the bytes so far cannot
//! become one, without waiting for its line end. Limits (control line length, payload size) are enforced while parsing,
//! before any payload is buffered, so a decoder never asks its caller to hold more than
//! `max_control_line + max_payload + 2` bytes. A decoder never panics, whatever bytes arrive.
//!
//! Never: touches a socket or a clock.

mod decode;
mod encode;
mod ops;

pub use decode::{ClientDecoder, DecodeError, ServerDecoder};
pub use encode::{encode_client_op, encode_msg_line, encode_pub_line, encode_server_op};
pub use ops::{ClientOp, ConnectOptions, Message, Publish, ServerInfo, ServerOp, Subscribe};

/// Parsing limits. Both are enforced while parsing, never after buffering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest control line (the operation line, without its payload), in bytes,
    /// counting the line end. Default 4 KiB.
    pub max_control_line: usize,
    /// Largest payload (headers included), in bytes. Default 1 MiB.
    pub max_payload: usize,
}

impl Limits {
    /// The default `max_control_line`: 4 KiB, as in NATS.
    pub const DEFAULT_MAX_CONTROL_LINE: usize = 4 * 1024;
    /// The default `max_payload`: 1 MiB, as in NATS.
    pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_control_line: Self::DEFAULT_MAX_CONTROL_LINE,
            max_payload: Self::DEFAULT_MAX_PAYLOAD,
        }
    }
}
