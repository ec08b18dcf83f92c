//! Reading straight into the buffer a decoder takes its frames from.
//!
//! Owns: [`ReadRoom`], one reader's read size and its reads into a `BytesMut`'s new room
//! (the read itself is the caller's: this crate opens no socket).
//! The room is zeroed (safe code cannot hand a read uninitialised memory) instead of read
//! into a scratch buffer and copied: a `memset` of the room rather than a copy of every
//! byte received. The room follows what reads bring: it doubles (up to its maximum) while
//! reads fill it, and shrinks to what the last read brought (at least
//! [`ReadRoom::MIN`]) when one does not, so a quiet connection's read of one small message
//! does not zero a quarter of a megabyte.
//!
//! Never: reads more than once a call, or keeps the room a read did not fill.

use std::io;

use bytes::BytesMut;

/// How much the next read asks for.
#[derive(Debug)]
pub struct ReadRoom {
    room: usize,
    max: usize,
}

impl ReadRoom {
    /// The smallest room a read asks for.
    pub const MIN: usize = 4096;

    /// Reads of at most `max` bytes (at least [`ReadRoom::MIN`]).
    pub fn new(max: usize) -> ReadRoom {
        let max = max.max(Self::MIN);
        ReadRoom { room: max, max }
    }

    /// Reads once from `read` (a socket's read) into new room at the end of `buf`; the
    /// bytes read, as the read returned them (0: the end of the stream).
    pub fn read_into(
        &mut self,
        buf: &mut BytesMut,
        read: impl FnOnce(&mut [u8]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let len = buf.len();
        buf.resize(len + self.room, 0);
        let result = read(&mut buf[len..]);
        let n = *result.as_ref().unwrap_or(&0);
        buf.truncate(len + n);
        if result.is_ok() {
            self.room = if n == self.room {
                (self.room * 2).min(self.max)
            } else {
                n.next_power_of_two().clamp(Self::MIN, self.max)
            };
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::ReadRoom;

    #[test]
    fn only_what_was_read_stays() {
        let mut room = ReadRoom::new(8192);
        let mut buf = bytes::BytesMut::from(&b"ab"[..]);
        let n = room
            .read_into(&mut buf, |r| {
                r[..3].copy_from_slice(b"cde");
                Ok(3)
            })
            .unwrap();
        assert_eq!((n, &buf[..]), (3, &b"abcde"[..]));
        let e = room.read_into(&mut buf, |_| Err(std::io::ErrorKind::WouldBlock.into()));
        assert!(e.is_err());
        assert_eq!(&buf[..], b"abcde");
    }

    #[test]
    fn the_room_follows_what_reads_bring() {
        let mut room = ReadRoom::new(64 << 10);
        let mut buf = bytes::BytesMut::new();
        let mut offered = Vec::new();
        let mut read = |fill: bool, buf: &mut bytes::BytesMut| {
            room.read_into(buf, |r| {
                offered.push(r.len());
                Ok(if fill { r.len() } else { 100 })
            })
            .unwrap();
        };
        read(false, &mut buf); // 64 KiB offered, 100 bytes came
        read(false, &mut buf); // the minimum from then on
        read(true, &mut buf); // filled: doubles
        read(true, &mut buf);
        assert_eq!(offered, [64 << 10, 4096, 4096, 8192]);
    }
}
