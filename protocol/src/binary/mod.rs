//! The binary protocol: Tern's own framed protocol (port 4224).
//!
//! Owns: the connection preface ([`Preface`]) and version negotiation, the frames a client
//! sends ([`ClientFrame`]) and a server sends ([`ServerFrame`]), their incremental decoders
//! ([`ClientFrameDecoder`], [`ServerFrameDecoder`]) and encoders ([`encode_client_frame`],
//! [`encode_server_frame`]), the errors ([`BinaryError`]) and their stable numeric codes
//! ([`ErrorCode`]). The specification is `docs/protocol-binary.md`; the two must agree.
//!
//! Wire shape: after the 8-byte preface (client to server only), every frame is
//! `u32 length | u8 type | u8 flags | body`, all integers big-endian, `length` counting the
//! bytes after itself. Variable fields are `u16`-length-prefixed (subjects, names, ids) or
//! `u32`-length-prefixed (header blocks, payloads).
//!
//! Contract of the decoders: call `decode` with the bytes received so far; it either returns
//! one whole frame and removes its bytes from the front of the buffer, returns `Ok(None)`
//! when more bytes are needed (an ordinary answer, not an error), or returns a
//! [`BinaryError`]. A length over [`Limits::max_frame_len`] is refused from the 4-byte
//! header, before any of the body is buffered, so a decoder never asks its caller to hold
//! more than `4 + max_frame_len` bytes. A frame is checked for structure first (fatal
//! errors) and only then for content (per-frame errors, [`BinaryError::is_fatal`] false:
//! the frame was consumed whole and decoding can go on). A decoder never panics, whatever
//! bytes arrive, and keeps no state between frames.
//!
//! Decoded subjects, header blocks, ids and payloads are `Bytes` slices of the one frame cut
//! from the caller's buffer (`split_to(..).freeze()`): decoding copies nothing.
//!
//! Never: touches a socket or a clock.

mod client;
mod coding;
mod decode;
mod encode;
mod error;
mod preface;
mod server;

pub use client::{
    Auth, ClientFrame, Hello, PresenceJoin, PresenceQuery, Publish, ResumeToken, StartPosition,
    Subscribe, Unsubscribe,
};
pub use decode::{ClientFrameDecoder, ServerFrameDecoder};
pub use encode::{encode_client_frame, encode_server_frame};
pub use error::{BinaryError, EncodeError, ErrorCode, Refusal};
pub use preface::{Preface, MAGIC, PREFACE_LEN};
pub use server::{
    encode_message, encode_message_head, retarget_presence, AckResult, Challenge, DropNotice,
    ErrorFrame, GapNotice, GoAway, Member, Message, MessageHead, Presence, PresenceBody,
    PublishAck, SequenceRange, ServerFrame, Subscribed, Welcome,
};

/// The protocol version this crate speaks.
pub const VERSION: u16 = 1;

/// The lowest protocol version this crate speaks.
pub const MIN_VERSION: u16 = 1;

/// The highest priority a message may carry; 0 is the lowest.
pub const MAX_PRIORITY: u8 = 7;

/// Frame type codes, as on the wire. Client-to-server frames have the high bit clear,
/// server-to-client frames have it set; `PING` and `PONG` go both ways.
pub mod frame_type {
    /// Client: `HELLO`, the connection's options.
    pub const HELLO: u8 = 0x01;
    /// Client: `PUBLISH`.
    pub const PUBLISH: u8 = 0x02;
    /// Client: `SUBSCRIBE`.
    pub const SUBSCRIBE: u8 = 0x03;
    /// Client: `UNSUBSCRIBE`.
    pub const UNSUBSCRIBE: u8 = 0x04;
    /// Both ways: `PING`.
    pub const PING: u8 = 0x05;
    /// Both ways: `PONG`.
    pub const PONG: u8 = 0x06;
    /// Client: `AUTH`, the answer to `CHALLENGE` (a signature) or a token refresh.
    pub const AUTH: u8 = 0x07;
    /// Client: `PRESENCE_QUERY`, who is in a room.
    pub const PRESENCE_QUERY: u8 = 0x08;
    /// Server: `WELCOME`, the answer to `HELLO`.
    pub const WELCOME: u8 = 0x81;
    /// Server: `MESSAGE`, a delivery.
    pub const MESSAGE: u8 = 0x82;
    /// Server: `PUBLISH_ACK`.
    pub const PUBLISH_ACK: u8 = 0x83;
    /// Server: `ERROR`.
    pub const ERROR: u8 = 0x84;
    /// Server: `DROP_NOTICE`.
    pub const DROP_NOTICE: u8 = 0x85;
    /// Server: `GAP_NOTICE`.
    pub const GAP_NOTICE: u8 = 0x86;
    /// Server: `GOAWAY`, the server is going away (lame duck): reconnect soon.
    pub const GOAWAY: u8 = 0x87;
    /// Server: `SUBSCRIBED`, where a subscription starts in every shard.
    pub const SUBSCRIBED: u8 = 0x88;
    /// Server: `CHALLENGE`, a nonce for the client's nkey to sign (answered by `AUTH`).
    pub const CHALLENGE: u8 = 0x89;
    /// Server: `PRESENCE`, a room's presence: a join, a leave, a snapshot, a query's answer.
    pub const PRESENCE: u8 = 0x8a;
}

/// Decoding limits, read once and passed to a decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest header block plus payload of a `PUBLISH` or `MESSAGE`, in bytes. A larger one
    /// is refused per frame. Default 1 MiB.
    pub max_payload: usize,
    /// Room for everything else in a frame (type, flags, fixed fields, subjects, ids,
    /// resume tokens, sequence ranges), in bytes. Default 64 KiB.
    pub max_overhead: usize,
    /// Most tokens in the subject, reply subject, filter or queue group of a `PUBLISH` or
    /// `SUBSCRIBE`; more is refused per frame (`InvalidSubject`). Default 256. Not applied
    /// to a `MESSAGE`: a client takes the subjects its server accepted.
    pub max_subject_tokens: usize,
}

impl Limits {
    /// The default `max_payload`: 1 MiB, as on the text port.
    pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;
    /// The default `max_overhead`: 64 KiB.
    pub const DEFAULT_MAX_OVERHEAD: usize = 64 * 1024;
    /// The default `max_subject_tokens`: 256, as on the text port.
    pub const DEFAULT_MAX_SUBJECT_TOKENS: usize = crate::subject::DEFAULT_MAX_TOKENS;

    /// The largest `length` a frame header may announce: `max_payload + max_overhead`.
    /// A larger one is a fatal error, detected before the body is buffered.
    pub fn max_frame_len(&self) -> usize {
        self.max_payload.saturating_add(self.max_overhead)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload: Self::DEFAULT_MAX_PAYLOAD,
            max_overhead: Self::DEFAULT_MAX_OVERHEAD,
            max_subject_tokens: Self::DEFAULT_MAX_SUBJECT_TOKENS,
        }
    }
}
