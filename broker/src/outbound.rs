//! A connection's outbound queue: what is waiting to be written to its socket.
//!
//! Owns: the bytes queued for one connection and the vectored write that sends them.
//! Control lines and small payloads are appended to a contiguous tail buffer (copying a few
//! hundred bytes is cheaper than an extra iovec); payloads of [`INLINE_MAX`] bytes or more
//! are queued by reference, the same `Bytes` every other delivery of the message shares.
//!
//! Never: enforces a limit itself. It reports its length; the connection decides what an
//! overflow means.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

use bytes::{Buf, Bytes, BytesMut};

/// Payloads at least this large are queued by reference instead of copied.
pub(crate) const INLINE_MAX: usize = 2048;

/// Most buffers handed to one `writev` call.
const MAX_IOVECS: usize = 64;

#[derive(Debug, Default)]
pub(crate) struct Outbound {
    /// Frozen chunks, in order, before `tail`.
    chunks: VecDeque<Bytes>,
    /// The open end of the queue.
    tail: BytesMut,
    /// Total bytes queued (chunks + tail).
    len: usize,
}

impl Outbound {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The buffer to append small things to (control lines, `+OK`, `PONG`...). Call
    /// [`Outbound::commit`] after writing into it.
    pub fn tail(&mut self) -> &mut BytesMut {
        &mut self.tail
    }

    /// Accounts for bytes appended to `tail` since the last call.
    pub fn commit(&mut self, before: usize) {
        self.len += self.tail.len() - before;
    }

    /// Appends a payload (or header block): copied when small, shared when large.
    pub fn push_bytes(&mut self, bytes: &Bytes) {
        if bytes.len() < INLINE_MAX {
            self.tail.extend_from_slice(bytes);
        } else {
            if !self.tail.is_empty() {
                self.chunks.push_back(self.tail.split().freeze());
            }
            self.chunks.push_back(bytes.clone());
        }
        self.len += bytes.len();
    }

    /// Writes as much as the socket takes. Returns the bytes written; `WouldBlock` is
    /// reported as `Ok` with whatever was written before it.
    pub fn write_to<W: Write>(&mut self, w: &mut W) -> io::Result<usize> {
        let mut written = 0;
        while self.len > 0 {
            let n = {
                let mut iov = [IoSlice::new(&[]); MAX_IOVECS];
                let mut count = 0;
                for c in self.chunks.iter().take(MAX_IOVECS - 1) {
                    iov[count] = IoSlice::new(c);
                    count += 1;
                }
                if count < MAX_IOVECS && !self.tail.is_empty() {
                    iov[count] = IoSlice::new(&self.tail);
                    count += 1;
                }
                match w.write_vectored(&iov[..count]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            };
            self.consume(n);
            written += n;
        }
        Ok(written)
    }

    fn consume(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            match self.chunks.front_mut() {
                Some(front) if front.len() <= n => {
                    n -= front.len();
                    self.chunks.pop_front();
                }
                Some(front) => {
                    front.advance(n);
                    return;
                }
                None => {
                    self.tail.advance(n);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `max` bytes per call, and then blocks after `budget`.
    struct Trickle {
        out: Vec<u8>,
        max: usize,
        budget: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.budget == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.max).min(self.budget);
            self.out.extend_from_slice(&buf[..n]);
            self.budget -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn order_is_kept_across_inline_and_shared_parts() {
        let mut q = Outbound::default();
        let big = Bytes::from(vec![b'x'; INLINE_MAX * 2]);
        let mut expect = Vec::new();
        for i in 0..50 {
            let before = q.tail().len();
            q.tail()
                .extend_from_slice(format!("line {i}\r\n").as_bytes());
            q.commit(before);
            expect.extend_from_slice(format!("line {i}\r\n").as_bytes());
            let p = if i % 3 == 0 {
                big.clone()
            } else {
                Bytes::from(format!("small {i}"))
            };
            q.push_bytes(&p);
            expect.extend_from_slice(&p);
        }
        assert_eq!(q.len(), expect.len());
        let mut w = Trickle {
            out: Vec::new(),
            max: 777,
            budget: 5000,
        };
        assert_eq!(q.write_to(&mut w).unwrap(), 5000);
        assert_eq!(q.len(), expect.len() - 5000);
        w.budget = usize::MAX;
        q.write_to(&mut w).unwrap();
        assert!(q.is_empty());
        assert_eq!(w.out, expect);
    }
}
