//! Errors of the binary protocol and their stable numeric codes.
//!
//! Owns: [`BinaryError`] (what a decoder reports), [`Refusal`] (why a well-formed frame's
//! content was refused), [`ErrorCode`] (the numbers on the wire, which never change meaning
//! once released) and [`EncodeError`] (a value that cannot be represented on the wire).
//!
//! The `Display` text of a [`BinaryError`] is exactly the text the peer is told in an
//! `ERROR` frame or a refused `PUBLISH_ACK`.

use bytes::Bytes;

use super::{AckResult, ErrorFrame, PublishAck, ServerFrame, MAX_PRIORITY};
use crate::subject::SubjectError;

/// Why bytes could not be decoded into a frame.
///
/// Fatal errors ([`is_fatal`](Self::is_fatal)) mean the byte stream can no longer be
/// trusted: the server sends an `ERROR` frame with the fatal flag and closes the
/// connection. [`BinaryError::Refused`] is not fatal: the offending frame was consumed whole
/// and the next `decode` starts at the next frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BinaryError {
    /// The connection did not start with the magic `TERN`. Fatal.
    #[error("not a Tern binary connection (bad magic)")]
    BadMagic,
    /// The client's version range has no version in common with this side's. Fatal.
    #[error(
        "unsupported protocol version: client offers {min}..={max}, server speaks {}..={}",
        super::MIN_VERSION,
        super::VERSION
    )]
    UnsupportedVersion {
        /// The lowest version the client offered.
        min: u16,
        /// The highest version the client offered.
        max: u16,
    },
    /// A frame header announced a length below 2 (no room for type and flags). Fatal.
    #[error("frame length {len} is too short")]
    FrameTooShort {
        /// The announced length.
        len: usize,
    },
    /// A frame header announced a length above [`Limits::max_frame_len`](super::Limits).
    /// Fatal; detected from the 4-byte header, before the body is buffered.
    #[error("frame length {len} exceeds the maximum of {max}")]
    FrameTooLarge {
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A frame type this direction does not know. Fatal.
    #[error("unknown frame type 0x{0:02x}")]
    UnknownFrameType(u8),
    /// A flag bit that the frame type does not define is set. Fatal.
    #[error("{frame} frame has reserved flag bits set (flags 0x{flags:02x})")]
    ReservedFlags {
        /// The frame's name.
        frame: &'static str,
        /// The whole flags byte.
        flags: u8,
    },
    /// The body ended inside a field. Fatal.
    #[error("{frame} frame ends inside field {field}")]
    Truncated {
        /// The frame's name.
        frame: &'static str,
        /// The field being read.
        field: &'static str,
    },
    /// The body is longer than its fields. Fatal.
    #[error("{frame} frame has {count} trailing bytes")]
    TrailingBytes {
        /// The frame's name.
        frame: &'static str,
        /// How many bytes were left over.
        count: usize,
    },
    /// A field holds a value its type does not allow (a sequence range whose first is after
    /// its last). Fatal.
    #[error("{frame} frame has an invalid {field}")]
    InvalidValue {
        /// The frame's name.
        frame: &'static str,
        /// The field.
        field: &'static str,
    },
    /// A well-formed frame whose content is refused. Not fatal: the frame was consumed.
    #[error("{reason}")]
    Refused {
        /// Why.
        reason: Refusal,
        /// The subscription concerned, for a refused `SUBSCRIBE` (or `MESSAGE`).
        sid: Option<u32>,
        /// The acknowledgement id of a refused `PUBLISH` that asked for one: the server
        /// answers with a refused `PUBLISH_ACK` carrying it instead of an `ERROR` frame.
        ack_id: Option<u64>,
    },
}

/// Why the content of a well-formed frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Header block and payload together exceed [`Limits::max_payload`](super::Limits).
    #[error("payload of {size} bytes exceeds the maximum of {max}")]
    PayloadTooLarge {
        /// Header block plus payload, in bytes.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The subject of a `PUBLISH` or `MESSAGE` is not a valid literal subject.
    #[error("invalid subject: {0}")]
    InvalidSubject(SubjectError),
    /// The reply subject is not a valid literal subject.
    #[error("invalid reply subject: {0}")]
    InvalidReply(SubjectError),
    /// The filter of a `SUBSCRIBE` is not a valid filter.
    #[error("invalid subscription subject: {0}")]
    InvalidFilter(SubjectError),
    /// The queue group of a `SUBSCRIBE` is not a valid literal subject.
    #[error("invalid queue group: {0}")]
    InvalidQueueGroup(SubjectError),
    /// A priority above [`MAX_PRIORITY`].
    #[error("invalid priority {0} (0..={MAX_PRIORITY})")]
    InvalidPriority(u8),
    /// A header block that does not start with `NATS/1.0`.
    #[error("invalid headers: block does not start with NATS/1.0")]
    InvalidHeaders,
    /// A message id or coalescing key that is present but empty.
    #[error("invalid {0}: empty")]
    EmptyField(&'static str),
}

impl Refusal {
    /// The code an `ERROR` frame or refused `PUBLISH_ACK` carries for this refusal.
    pub fn code(&self) -> ErrorCode {
        match self {
            Refusal::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
            Refusal::InvalidSubject(_)
            | Refusal::InvalidReply(_)
            | Refusal::InvalidFilter(_)
            | Refusal::InvalidQueueGroup(_) => ErrorCode::InvalidSubject,
            Refusal::InvalidPriority(_) => ErrorCode::InvalidPriority,
            Refusal::InvalidHeaders => ErrorCode::InvalidHeaders,
            Refusal::EmptyField(_) => ErrorCode::InvalidOption,
        }
    }
}

impl BinaryError {
    /// True when the connection must be closed after reporting this error; false when the
    /// offending frame was consumed whole and decoding can go on.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, BinaryError::Refused { .. })
    }

    /// True when a subject, reply subject, filter or queue group went over
    /// `max_subject_tokens`.
    pub fn is_too_many_tokens(&self) -> bool {
        let BinaryError::Refused { reason, .. } = self else {
            return false;
        };
        matches!(
            reason,
            Refusal::InvalidSubject(e)
                | Refusal::InvalidReply(e)
                | Refusal::InvalidFilter(e)
                | Refusal::InvalidQueueGroup(e)
                if matches!(e, SubjectError::TooManyTokens { .. })
        )
    }

    /// The code this error is reported with.
    pub fn code(&self) -> ErrorCode {
        match self {
            BinaryError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            BinaryError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            BinaryError::Refused { reason, .. } => reason.code(),
            BinaryError::BadMagic
            | BinaryError::FrameTooShort { .. }
            | BinaryError::UnknownFrameType(_)
            | BinaryError::ReservedFlags { .. }
            | BinaryError::Truncated { .. }
            | BinaryError::TrailingBytes { .. }
            | BinaryError::InvalidValue { .. } => ErrorCode::ProtocolViolation,
        }
    }

    /// The frame a server sends to report this error to the client: a refused
    /// `PUBLISH_ACK` for a refused `PUBLISH` that asked for an acknowledgement, otherwise an
    /// `ERROR` frame (fatal flag set for fatal errors). The text is this error's `Display`.
    pub fn to_server_frame(&self) -> ServerFrame {
        let message = Bytes::from(self.to_string());
        match self {
            BinaryError::Refused {
                ack_id: Some(ack_id),
                ..
            } => ServerFrame::PublishAck(PublishAck {
                ack_id: *ack_id,
                result: AckResult::Refused {
                    code: self.code(),
                    message,
                },
            }),
            BinaryError::Refused { sid, .. } => ServerFrame::Error(ErrorFrame {
                code: self.code(),
                fatal: false,
                sid: *sid,
                message,
            }),
            _ => ServerFrame::Error(ErrorFrame {
                code: self.code(),
                fatal: true,
                sid: None,
                message,
            }),
        }
    }
}

/// A frame that cannot be represented on the wire. Encoders write nothing when they
/// return one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A byte string or list longer than its length prefix can say.
    #[error("{field} is {len} long, more than the {max} its length prefix allows")]
    FieldTooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The most its prefix can say.
        max: usize,
    },
    /// The whole frame is longer than a `u32` length can say.
    #[error("frame of {len} bytes is too long for a u32 length")]
    FrameTooLong {
        /// The frame's length.
        len: usize,
    },
    /// A field given without the one its flag also covers (`HELLO`'s user without a
    /// password, or the reverse): the first field needs the second.
    #[error("{0} cannot be sent without {1}")]
    Unpaired(&'static str, &'static str),
}

/// The stable numeric codes of `ERROR` frames and refused `PUBLISH_ACK`s (`u16` on the
/// wire). A code never changes meaning; new codes may be added, and a peer must accept a
/// code it does not know ([`ErrorCode::Other`]).
///
/// `0x00xx`: the connection is being closed; `0x01xx`: a frame was refused;
/// `0x02xx`: admission control and resources; `0x03xx`: server faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// `0x0001`: bytes that break the protocol (bad magic, unknown frame type, reserved
    /// flags, truncated or trailing body). Fatal.
    ProtocolViolation,
    /// `0x0002`: no protocol version in common. Fatal.
    UnsupportedVersion,
    /// `0x0003`: a frame longer than the receiver's limit. Fatal.
    FrameTooLarge,
    /// `0x0004`: authentication failed or is required. Fatal.
    AuthorizationViolation,
    /// `0x0005`: the first frame after the preface was not `HELLO`, or a second `HELLO`
    /// arrived. Fatal.
    HelloExpected,
    /// `0x0006`: the connection's token expired and was not refreshed (`AUTH`) in time.
    /// Fatal.
    AuthenticationExpired,
    /// `0x0007`: the handshake, authentication included (`CHALLENGE` answered by `AUTH`),
    /// was not done in time. Fatal.
    AuthenticationTimeout,
    /// `0x0101`: an invalid subject, reply subject, filter or queue group.
    InvalidSubject,
    /// `0x0102`: header block plus payload over the limit.
    PayloadTooLarge,
    /// `0x0103`: a priority above 7.
    InvalidPriority,
    /// `0x0104`: a header block that does not start with `NATS/1.0`.
    InvalidHeaders,
    /// `0x0105`: an option the server cannot honour (empty message id or coalescing key,
    /// queue size over the server's maximum).
    InvalidOption,
    /// `0x0106`: an `UNSUBSCRIBE` for a subscription id that is not active.
    UnknownSubscription,
    /// `0x0107`: a `SUBSCRIBE` reusing an active subscription id.
    DuplicateSubscription,
    /// `0x0108`: a resume token from another log epoch; the subscription starts live.
    EpochMismatch,
    /// `0x0109`: a publish or subscription the user is not permitted to make; the text
    /// says which, as nats-server words it (`Permissions Violation for Publish to "x"`).
    /// Not fatal.
    PermissionViolation,
    /// `0x010a`: a presence join or query refused (room full, info too large, too many
    /// rooms, not a room); the text says which limit. Not fatal: the subscription stays,
    /// without being a member.
    PresenceRefused,
    /// `0x0201`: too many subscriptions on this connection.
    TooManySubscriptions,
    /// `0x0202`: publish rate limit exceeded.
    RateLimited,
    /// `0x0203`: the shard is overloaded and shed this (low-priority) publish.
    Overloaded,
    /// `0x0204`: too many connections (total or from this address). Fatal.
    TooManyConnections,
    /// `0x0205`: the client did not keep up (pings unanswered, or a lossless subscription
    /// fell behind the log). Fatal.
    SlowConsumer,
    /// `0x0301`: the server failed; the text says how.
    Internal,
    /// A code this version does not know.
    Other(u16),
}

impl ErrorCode {
    /// Every known code, in numeric order.
    pub const KNOWN: [ErrorCode; 23] = [
        ErrorCode::ProtocolViolation,
        ErrorCode::UnsupportedVersion,
        ErrorCode::FrameTooLarge,
        ErrorCode::AuthorizationViolation,
        ErrorCode::HelloExpected,
        ErrorCode::AuthenticationExpired,
        ErrorCode::AuthenticationTimeout,
        ErrorCode::InvalidSubject,
        ErrorCode::PayloadTooLarge,
        ErrorCode::InvalidPriority,
        ErrorCode::InvalidHeaders,
        ErrorCode::InvalidOption,
        ErrorCode::UnknownSubscription,
        ErrorCode::DuplicateSubscription,
        ErrorCode::EpochMismatch,
        ErrorCode::PermissionViolation,
        ErrorCode::PresenceRefused,
        ErrorCode::TooManySubscriptions,
        ErrorCode::RateLimited,
        ErrorCode::Overloaded,
        ErrorCode::TooManyConnections,
        ErrorCode::SlowConsumer,
        ErrorCode::Internal,
    ];

    /// The number on the wire.
    pub fn to_u16(self) -> u16 {
        match self {
            ErrorCode::ProtocolViolation => 0x0001,
            ErrorCode::UnsupportedVersion => 0x0002,
            ErrorCode::FrameTooLarge => 0x0003,
            ErrorCode::AuthorizationViolation => 0x0004,
            ErrorCode::HelloExpected => 0x0005,
            ErrorCode::AuthenticationExpired => 0x0006,
            ErrorCode::AuthenticationTimeout => 0x0007,
            ErrorCode::InvalidSubject => 0x0101,
            ErrorCode::PayloadTooLarge => 0x0102,
            ErrorCode::InvalidPriority => 0x0103,
            ErrorCode::InvalidHeaders => 0x0104,
            ErrorCode::InvalidOption => 0x0105,
            ErrorCode::UnknownSubscription => 0x0106,
            ErrorCode::DuplicateSubscription => 0x0107,
            ErrorCode::EpochMismatch => 0x0108,
            ErrorCode::PermissionViolation => 0x0109,
            ErrorCode::PresenceRefused => 0x010a,
            ErrorCode::TooManySubscriptions => 0x0201,
            ErrorCode::RateLimited => 0x0202,
            ErrorCode::Overloaded => 0x0203,
            ErrorCode::TooManyConnections => 0x0204,
            ErrorCode::SlowConsumer => 0x0205,
            ErrorCode::Internal => 0x0301,
            ErrorCode::Other(n) => n,
        }
    }

    /// The code of a number on the wire; unknown numbers are [`ErrorCode::Other`].
    pub fn from_u16(n: u16) -> ErrorCode {
        Self::KNOWN
            .into_iter()
            .find(|c| c.to_u16() == n)
            .unwrap_or(ErrorCode::Other(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_and_round_trip() {
        let numbers: Vec<u16> = ErrorCode::KNOWN.iter().map(|c| c.to_u16()).collect();
        assert_eq!(
            numbers,
            [
                1, 2, 3, 4, 5, 6, 7, 0x101, 0x102, 0x103, 0x104, 0x105, 0x106, 0x107, 0x108, 0x109,
                0x10a, 0x201, 0x202, 0x203, 0x204, 0x205, 0x301
            ]
        );
        for code in ErrorCode::KNOWN {
            assert_eq!(ErrorCode::from_u16(code.to_u16()), code);
        }
        assert_eq!(ErrorCode::from_u16(0x7777), ErrorCode::Other(0x7777));
        assert_eq!(ErrorCode::from_u16(0), ErrorCode::Other(0));
    }

    #[test]
    fn refused_publish_with_ack_is_answered_by_a_refused_ack() {
        let e = BinaryError::Refused {
            reason: Refusal::InvalidPriority(9),
            sid: None,
            ack_id: Some(5),
        };
        assert!(!e.is_fatal());
        let ServerFrame::PublishAck(ack) = e.to_server_frame() else {
            panic!("expected an ack");
        };
        assert_eq!(ack.ack_id, 5);
        assert_eq!(
            ack.result,
            AckResult::Refused {
                code: ErrorCode::InvalidPriority,
                message: Bytes::from_static(b"invalid priority 9 (0..=7)"),
            }
        );
    }

    #[test]
    fn fatal_errors_are_answered_by_a_fatal_error_frame() {
        let e = BinaryError::UnknownFrameType(0x42);
        assert!(e.is_fatal());
        assert_eq!(
            e.to_server_frame(),
            ServerFrame::Error(ErrorFrame {
                code: ErrorCode::ProtocolViolation,
                fatal: true,
                sid: None,
                message: Bytes::from_static(b"unknown frame type 0x42"),
            })
        );
    }
}
