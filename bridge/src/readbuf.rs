//! Reading a socket straight into the buffer its frames are decoded from.
//!
//! Owns: [`read_into`], one read into a `BytesMut`'s new room. The room is zeroed (safe
//! code cannot hand a read uninitialised memory) instead of read into a scratch buffer and
//! copied: a `memset` of the room rather than a copy of every byte received.
//!
//! Never: reads more than once, or keeps the room the read did not fill.

use std::io;

use bytes::BytesMut;

/// Reads once from `read` (a socket's read) into `room` new bytes at the end of `buf`;
/// the bytes read, as the read returned them (0: the end of the stream).
pub(crate) fn read_into(
    buf: &mut BytesMut,
    room: usize,
    read: impl FnOnce(&mut [u8]) -> io::Result<usize>,
) -> io::Result<usize> {
    let len = buf.len();
    buf.resize(len + room, 0);
    let result = read(&mut buf[len..]);
    buf.truncate(len + *result.as_ref().unwrap_or(&0));
    result
}

#[cfg(test)]
mod tests {
    use super::read_into;

    #[test]
    fn only_what_was_read_stays() {
        let mut buf = bytes::BytesMut::from(&b"ab"[..]);
        let n = read_into(&mut buf, 8, |room| {
            room[..3].copy_from_slice(b"cde");
            Ok(3)
        })
        .unwrap();
        assert_eq!((n, &buf[..]), (3, &b"abcde"[..]));
        let e = read_into(&mut buf, 8, |_| Err(std::io::ErrorKind::WouldBlock.into()));
        assert!(e.is_err());
        assert_eq!(&buf[..], b"abcde");
    }
}
