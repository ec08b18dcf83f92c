//! Incremental decoders for both directions of the text protocol.

use bytes::BytesMut;

use super::{ClientOp, Limits, ServerOp};
use crate::subject::SubjectError;

/// Why bytes could not be decoded. `Display` is the exact text a client sees inside
/// `-ERR '...'`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The line does not start with a known operation name. Fatal.
    #[error("Unknown Protocol Operation")]
    UnknownOperation,
    /// No line end within `max_control_line` bytes. Fatal.
    #[error("Maximum Control Line Exceeded")]
    ControlLineTooLong { max: usize },
    /// A `PUB`/`HPUB` announced more than `max_payload` bytes. Fatal; detected from the
    /// control line, before any payload is buffered.
    #[error("Maximum Payload Violation")]
    PayloadTooLarge { size: usize, max: usize },
    /// A `PUB`/`HPUB` to a subject that is not a valid literal subject. Not fatal: the whole
    /// operation, payload included, has been consumed.
    #[error("Invalid Publish Subject")]
    InvalidPublishSubject(SubjectError),
    /// A `SUB` with an invalid filter (or an invalid queue group name). Not fatal.
    #[error("Invalid Subject")]
    InvalidSubject(SubjectError),
    /// The JSON of `CONNECT` (or `INFO`) could not be read. Fatal.
    #[error("Invalid CONNECT: {0}")]
    InvalidJson(String),
    /// The arguments of an operation are wrong: their count, a number, a missing line end
    /// after a payload, a header size larger than the total, a header block that does not
    /// start with `NATS/1.0`. Fatal. The text says which.
    #[error("Parser Error: {0}")]
    Malformed(&'static str),
}

impl DecodeError {
    /// True when the connection must be closed after reporting this error; false when the
    /// offending operation was consumed whole and decoding can go on.
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            DecodeError::InvalidPublishSubject(_) | DecodeError::InvalidSubject(_)
        )
    }
}

/// Decodes the operations a client sends. See the module docs for the contract.
#[derive(Debug)]
pub struct ClientDecoder {
    limits: Limits,
}

impl ClientDecoder {
    pub fn new(limits: Limits) -> Self {
        ClientDecoder { limits }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Decodes one operation from the front of `buf`. See the module docs.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<ClientOp>, DecodeError> {
        todo!("{buf:?}")
    }

    /// When the decoder is waiting for a payload: how many more bytes it needs beyond what
    /// `buf` held at the last call. Lets a caller reserve buffer space once.
    pub fn bytes_needed(&self) -> Option<usize> {
        todo!()
    }
}

/// Decodes the operations a server sends (for clients, the harness and tests).
#[derive(Debug)]
pub struct ServerDecoder {
    limits: Limits,
}

impl ServerDecoder {
    pub fn new(limits: Limits) -> Self {
        ServerDecoder { limits }
    }

    /// Decodes one operation from the front of `buf`. See the module docs.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<ServerOp>, DecodeError> {
        todo!("{buf:?} {:?}", self.limits)
    }
}
