//! The connection preface: the 8 bytes a client sends before its first frame.
//!
//! Owns: `MAGIC (4) | min version u16 | max version u16`, its incremental decoding and the
//! version negotiation. Only the client sends a preface; the server answers with `WELCOME`
//! (the chosen version) once the client's `HELLO` has arrived, or with a fatal `ERROR`
//! (`UnsupportedVersion`) and closes.

use bytes::{Buf, BufMut, BytesMut};

use super::{BinaryError, MIN_VERSION, VERSION};

/// The first four bytes of every binary connection: ASCII `TERN`.
pub const MAGIC: [u8; 4] = *b"TERN";

/// The length of the preface, in bytes.
pub const PREFACE_LEN: usize = 8;

/// The range of protocol versions a client offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preface {
    /// The lowest version the client speaks.
    pub min_version: u16,
    /// The highest version the client speaks.
    pub max_version: u16,
}

impl Default for Preface {
    /// The versions this crate speaks.
    fn default() -> Self {
        Preface {
            min_version: MIN_VERSION,
            max_version: VERSION,
        }
    }
}

impl Preface {
    /// Appends the 8 preface bytes.
    pub fn encode(&self, buf: &mut BytesMut) {
        buf.reserve(PREFACE_LEN);
        buf.put_slice(&MAGIC);
        buf.put_u16(self.min_version);
        buf.put_u16(self.max_version);
    }

    /// Decodes the preface from the front of `buf`: `Ok(None)` until 8 bytes are there.
    /// A wrong magic is reported as soon as the first differing byte arrives (so a text
    /// client on the wrong port is told at once), without consuming anything. Fatal.
    pub fn decode(buf: &mut BytesMut) -> Result<Option<Preface>, BinaryError> {
        let seen = buf.len().min(MAGIC.len());
        if buf.get(..seen) != MAGIC.get(..seen) {
            return Err(BinaryError::BadMagic);
        }
        if buf.len() < PREFACE_LEN {
            return Ok(None);
        }
        buf.advance(MAGIC.len());
        let min_version = buf.get_u16();
        let max_version = buf.get_u16();
        Ok(Some(Preface {
            min_version,
            max_version,
        }))
    }

    /// The highest version both the client and this crate speak, or
    /// [`BinaryError::UnsupportedVersion`] (fatal) when there is none (an empty range,
    /// `min > max`, has none).
    pub fn negotiate(&self) -> Result<u16, BinaryError> {
        let high = self.max_version.min(VERSION);
        let low = self.min_version.max(MIN_VERSION);
        if low <= high {
            Ok(high)
        } else {
            Err(BinaryError::UnsupportedVersion {
                min: self.min_version,
                max: self.max_version,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preface_round_trips_byte_by_byte() {
        let mut wire = BytesMut::new();
        Preface::default().encode(&mut wire);
        assert_eq!(&wire[..], b"TERN\x00\x01\x00\x01");
        let mut buf = BytesMut::new();
        for (i, &b) in wire.iter().enumerate() {
            buf.put_u8(b);
            let got = Preface::decode(&mut buf).unwrap();
            assert_eq!(got.is_some(), i == PREFACE_LEN - 1);
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn bad_magic_is_reported_at_the_first_wrong_byte() {
        let mut buf = BytesMut::from(&b"TE"[..]);
        assert_eq!(Preface::decode(&mut buf), Ok(None));
        let mut buf = BytesMut::from(&b"CO"[..]);
        assert_eq!(Preface::decode(&mut buf), Err(BinaryError::BadMagic));
        let mut buf = BytesMut::from(&b"TERX\x00\x01\x00\x01"[..]);
        assert_eq!(Preface::decode(&mut buf), Err(BinaryError::BadMagic));
    }

    #[test]
    fn negotiation_picks_the_highest_common_version() {
        let p = |min_version, max_version| Preface {
            min_version,
            max_version,
        };
        assert_eq!(p(1, 1).negotiate(), Ok(1));
        assert_eq!(p(0, 9).negotiate(), Ok(VERSION));
        assert_eq!(
            p(2, 3).negotiate(),
            Err(BinaryError::UnsupportedVersion { min: 2, max: 3 })
        );
        assert!(p(1, 0).negotiate().is_err());
        assert!(p(0, 0).negotiate().is_err());
    }
}
