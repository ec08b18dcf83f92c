//! NATS header blocks: `NATS/1.0[ <status>[ <description>]]\r\n(<name>: <value>\r\n)*\r\n`.
//!
//! The broker carries header blocks as opaque bytes; this module builds and reads them for
//! the places that need to (status messages such as no-responders, clients, tests).

/// The header block of the status message a requester gets when nobody is subscribed to
/// the subject of its request (`no_responders`).
pub const NO_RESPONDERS: &[u8] = b"NATS/1.0 503\r\n\r\n";

/// Why a header block could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("header block does not start with NATS/1.0")]
    BadVersionLine,
    #[error("header block does not end with an empty line")]
    Unterminated,
    #[error("header line has no ':'")]
    BadLine,
    #[error("invalid status code")]
    BadStatus,
}

/// A parsed header block: optional status line parts and the fields in order (names keep
/// their case; a name may repeat).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderMap {
    pub status: Option<u16>,
    pub description: Option<String>,
    pub fields: Vec<(String, String)>,
}

impl HeaderMap {
    /// Reads a whole header block.
    pub fn parse(block: &[u8]) -> Result<HeaderMap, HeaderError> {
        todo!("{block:?}")
    }

    /// Writes the block, ending with the empty line.
    pub fn encode(&self) -> Vec<u8> {
        todo!()
    }

    /// The first value of a field, matched case-insensitively.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}
