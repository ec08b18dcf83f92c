//! Field codecs shared by every frame: fixed-width big-endian integers and length-prefixed
//! byte strings.
//!
//! Owns: the only code in the binary protocol that touches individual bytes. Frames are
//! written as a sequence of `put_*` calls on a [`Writer`] and read as the same sequence of
//! `get_*` calls on a [`Reader`], so a frame's layout is visible in one place and no frame
//! hand-rolls its own byte fiddling.
//!
//! A [`Reader`] reads from the frozen body of one frame; byte strings it returns are
//! `Bytes::split_to` slices of that body, never copies. It never reads past the body: a
//! short body is a [`BinaryError::Truncated`], leftovers a [`BinaryError::TrailingBytes`].

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{BinaryError, EncodeError};

/// A fixed-width integer field, big-endian on the wire.
pub(crate) trait Codec: Sized {
    /// Its size on the wire.
    const SIZE: usize;
    /// Reads one; the caller has checked that `SIZE` bytes remain.
    fn get(buf: &mut Bytes) -> Self;
    /// Appends one.
    fn put(&self, buf: &mut BytesMut);
}

macro_rules! int_codec {
    ($t:ty, $get:ident, $put:ident) => {
        impl Codec for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn get(buf: &mut Bytes) -> Self {
                buf.$get()
            }
            fn put(&self, buf: &mut BytesMut) {
                buf.$put(*self);
            }
        }
    };
}

int_codec!(u8, get_u8, put_u8);
int_codec!(u16, get_u16, put_u16);
int_codec!(u32, get_u32, put_u32);
int_codec!(u64, get_u64, put_u64);

/// Reads the fields of one frame body, in order.
pub(crate) struct Reader {
    /// The frame's name, for error messages.
    frame: &'static str,
    body: Bytes,
}

impl Reader {
    pub(crate) fn new(frame: &'static str, body: Bytes) -> Self {
        Reader { frame, body }
    }

    fn truncated(&self, field: &'static str) -> BinaryError {
        BinaryError::Truncated {
            frame: self.frame,
            field,
        }
    }

    /// Fails unless every set bit of `flags` is one of `allowed`.
    pub(crate) fn check_flags(&self, flags: u8, allowed: u8) -> Result<(), BinaryError> {
        if flags & !allowed == 0 {
            Ok(())
        } else {
            Err(BinaryError::ReservedFlags {
                frame: self.frame,
                flags,
            })
        }
    }

    /// A fixed-width integer.
    pub(crate) fn get<T: Codec>(&mut self, field: &'static str) -> Result<T, BinaryError> {
        if self.body.remaining() < T::SIZE {
            return Err(self.truncated(field));
        }
        Ok(T::get(&mut self.body))
    }

    /// A fixed-width integer when `present`.
    pub(crate) fn get_if<T: Codec>(
        &mut self,
        present: bool,
        field: &'static str,
    ) -> Result<Option<T>, BinaryError> {
        present.then(|| self.get(field)).transpose()
    }

    fn take(&mut self, len: usize, field: &'static str) -> Result<Bytes, BinaryError> {
        if self.body.len() < len {
            return Err(self.truncated(field));
        }
        Ok(self.body.split_to(len))
    }

    /// A `u16`-length-prefixed byte string.
    pub(crate) fn short(&mut self, field: &'static str) -> Result<Bytes, BinaryError> {
        let len = self.get::<u16>(field)?;
        self.take(usize::from(len), field)
    }

    /// A `u16`-length-prefixed byte string when `present`.
    pub(crate) fn short_if(
        &mut self,
        present: bool,
        field: &'static str,
    ) -> Result<Option<Bytes>, BinaryError> {
        present.then(|| self.short(field)).transpose()
    }

    /// A `u32`-length-prefixed byte string.
    pub(crate) fn long(&mut self, field: &'static str) -> Result<Bytes, BinaryError> {
        let len = self.get::<u32>(field)?;
        let len = usize::try_from(len).map_err(|_| self.truncated(field))?;
        self.take(len, field)
    }

    /// A `u32`-length-prefixed byte string when `present`.
    pub(crate) fn long_if(
        &mut self,
        present: bool,
        field: &'static str,
    ) -> Result<Option<Bytes>, BinaryError> {
        present.then(|| self.long(field)).transpose()
    }

    /// A `u16` count of items, checked against the bytes left (`item_size` each) before
    /// anything is allocated for them.
    pub(crate) fn count(
        &mut self,
        item_size: usize,
        field: &'static str,
    ) -> Result<usize, BinaryError> {
        let n = usize::from(self.get::<u16>(field)?);
        if n.saturating_mul(item_size) > self.body.remaining() {
            return Err(self.truncated(field));
        }
        Ok(n)
    }

    /// Ends the body: every byte must have been read.
    pub(crate) fn finish(self) -> Result<(), BinaryError> {
        if self.body.is_empty() {
            Ok(())
        } else {
            Err(BinaryError::TrailingBytes {
                frame: self.frame,
                count: self.body.len(),
            })
        }
    }
}

/// Appends the fields of one frame body, in order.
pub(crate) struct Writer<'a> {
    pub(crate) buf: &'a mut BytesMut,
}

impl Writer<'_> {
    /// A fixed-width integer.
    pub(crate) fn put<T: Codec>(&mut self, value: T) {
        value.put(self.buf);
    }

    /// A fixed-width integer when present.
    pub(crate) fn put_opt<T: Codec + Copy>(&mut self, value: Option<T>) {
        if let Some(v) = value {
            self.put(v);
        }
    }

    /// A `u16`-length-prefixed byte string.
    pub(crate) fn short(&mut self, field: &'static str, bytes: &[u8]) -> Result<(), EncodeError> {
        let len = u16::try_from(bytes.len()).map_err(|_| EncodeError::FieldTooLong {
            field,
            len: bytes.len(),
            max: usize::from(u16::MAX),
        })?;
        self.buf.put_u16(len);
        self.buf.put_slice(bytes);
        Ok(())
    }

    /// A `u16`-length-prefixed byte string when present.
    pub(crate) fn short_opt(
        &mut self,
        field: &'static str,
        bytes: Option<&Bytes>,
    ) -> Result<(), EncodeError> {
        bytes.map_or(Ok(()), |b| self.short(field, b))
    }

    /// A `u32`-length-prefixed byte string.
    pub(crate) fn long(&mut self, field: &'static str, bytes: &[u8]) -> Result<(), EncodeError> {
        let len = u32::try_from(bytes.len()).map_err(|_| EncodeError::FieldTooLong {
            field,
            len: bytes.len(),
            max: u32::MAX as usize,
        })?;
        self.buf.put_u32(len);
        self.buf.put_slice(bytes);
        Ok(())
    }

    /// A `u32`-length-prefixed byte string when present.
    pub(crate) fn long_opt(
        &mut self,
        field: &'static str,
        bytes: Option<&Bytes>,
    ) -> Result<(), EncodeError> {
        bytes.map_or(Ok(()), |b| self.long(field, b))
    }

    /// A `u16` count of items.
    pub(crate) fn count(&mut self, field: &'static str, n: usize) -> Result<(), EncodeError> {
        let n = u16::try_from(n).map_err(|_| EncodeError::FieldTooLong {
            field,
            len: n,
            max: usize::from(u16::MAX),
        })?;
        self.put(n);
        Ok(())
    }
}

/// Sets `bit` in a flags byte when `on`.
pub(crate) fn flag(on: bool, bit: u8) -> u8 {
    if on {
        bit
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_big_endian_and_checked() {
        let mut buf = BytesMut::new();
        let mut w = Writer { buf: &mut buf };
        w.put(0x0102u16);
        w.put(0x03040506u32);
        w.put(7u8);
        assert_eq!(&buf[..], &[1, 2, 3, 4, 5, 6, 7]);
        let mut r = Reader::new("TEST", buf.freeze());
        assert_eq!(r.get::<u16>("a"), Ok(0x0102));
        assert_eq!(
            r.get::<u64>("b"),
            Err(BinaryError::Truncated {
                frame: "TEST",
                field: "b"
            })
        );
        assert_eq!(r.get::<u32>("c"), Ok(0x03040506));
        assert_eq!(r.get::<u8>("d"), Ok(7));
        assert!(r.finish().is_ok());
    }

    #[test]
    fn strings_are_slices_and_checked() {
        let body = Bytes::from_static(b"\x00\x03abc\x00\x00\x00\x01z\x00\x09x");
        let mut r = Reader::new("TEST", body.clone());
        let abc = r.short("s").unwrap();
        assert_eq!(&abc[..], b"abc");
        assert_eq!(abc.as_ptr(), body[2..].as_ptr(), "a slice, not a copy");
        assert_eq!(&r.long("l").unwrap()[..], b"z");
        assert_eq!(
            r.short("t"),
            Err(BinaryError::Truncated {
                frame: "TEST",
                field: "t"
            })
        );
    }

    #[test]
    fn counts_are_checked_before_allocating() {
        let mut r = Reader::new("TEST", Bytes::from_static(b"\xff\xff\x00"));
        assert!(r.count(8, "n").is_err());
        let r = Reader::new("TEST", Bytes::from_static(b"\x00"));
        assert_eq!(
            r.finish(),
            Err(BinaryError::TrailingBytes {
                frame: "TEST",
                count: 1
            })
        );
    }

    #[test]
    fn too_long_fields_are_refused() {
        let mut buf = BytesMut::new();
        let mut w = Writer { buf: &mut buf };
        let big = vec![0u8; 70_000];
        assert!(matches!(
            w.short("s", &big),
            Err(EncodeError::FieldTooLong { .. })
        ));
        assert!(matches!(
            w.count("n", 70_000),
            Err(EncodeError::FieldTooLong { .. })
        ));
    }
}
