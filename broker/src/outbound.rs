//! A connection's outbound queue: what is waiting to be written to its socket.
//!
//! Owns: the bytes queued for one connection and the vectored write that sends them.
//! Control lines and small payloads are appended to a contiguous tail buffer (copying a few
//! hundred bytes is cheaper than an extra iovec); payloads of [`INLINE_MAX`] bytes or more
//! are queued by reference, the same `Bytes` every other delivery of the message shares.
//!
//! It also remembers, per queued delivery, where the delivery ends in the byte stream and
//! when its message was received (`mark`), so that when a write consumes a delivery's last
//! byte the worker can record the broker latency (`pop_written`). The FIFO grows amortised
//! like the queue itself: no allocation per delivery once it has grown.
//!
//! Never: enforces a limit itself. It reports its length; the connection decides what an
//! overflow means.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::time::Instant;

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
    /// Bytes written since the queue was created (or last discarded): the stream offset
    /// of the first queued byte.
    written: u64,
    /// Per queued delivery, oldest first: (stream offset just past its last byte, when
    /// its message was received).
    marks: VecDeque<(u64, Instant)>,
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

    /// True when `push_bytes` would copy `len` bytes into the tail rather than share them.
    #[inline]
    pub fn copies(len: usize) -> bool {
        len < INLINE_MAX
    }

    /// Appends a payload (or header block): copied when small, shared when large.
    pub fn push_bytes(&mut self, bytes: &Bytes) {
        if Self::copies(bytes.len()) {
            self.tail.extend_from_slice(bytes);
        } else {
            if !self.tail.is_empty() {
                self.chunks.push_back(self.tail.split().freeze());
            }
            self.chunks.push_back(bytes.clone());
        }
        self.len += bytes.len();
    }

    /// Records that everything queued so far ends a delivery of a message received at
    /// `received`. Call once per delivery, after its last byte is queued.
    #[inline]
    pub fn mark(&mut self, received: Instant) {
        self.marks
            .push_back((self.written + self.len as u64, received));
    }

    /// Deliveries queued and not yet completely written.
    pub fn queued_msgs(&self) -> usize {
        self.marks.len()
    }

    /// Calls `f(received, n)` for the deliveries whose last byte has now been written,
    /// oldest first, and forgets them: `n` deliveries in a row received at the same
    /// instant (one publisher's read, fanned out or batched) come as one call.
    #[inline]
    pub fn pop_written(&mut self, mut f: impl FnMut(Instant, u64)) {
        let mut run: Option<(Instant, u64)> = None;
        while let Some(&(end, received)) = self.marks.front() {
            if end > self.written {
                break;
            }
            self.marks.pop_front();
            match &mut run {
                Some((at, n)) if *at == received => *n += 1,
                _ => {
                    if let Some((at, n)) = run.replace((received, 1)) {
                        f(at, n);
                    }
                }
            }
        }
        if let Some((at, n)) = run {
            f(at, n);
        }
    }

    /// Gives back what its buffers grew to, when nothing is queued: an idle connection
    /// keeps none of what its greeting or its last burst made (a burst's marks alone are
    /// 16 bytes a delivery). The ping timer calls it; a busy queue grows again at most once
    /// a tick.
    pub fn shrink(&mut self) {
        if self.len != 0 {
            return;
        }
        if self.tail.capacity() > 0 {
            self.tail = BytesMut::new();
        }
        if self.chunks.capacity() > 0 {
            self.chunks = VecDeque::new();
        }
        if self.marks.is_empty() && self.marks.capacity() > 0 {
            self.marks = VecDeque::new();
        }
    }

    /// Drops everything queued; returns how many deliveries were never completely written.
    pub fn discard(&mut self) -> usize {
        let dropped = self.marks.len();
        *self = Outbound::default();
        dropped
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
                // The tail follows the last chunk: it may only join when every chunk did.
                if count == self.chunks.len() && !self.tail.is_empty() {
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
        self.written += n as u64;
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

    /// A writer that takes everything offered, across all buffers of a vectored write.
    struct Sink(Vec<u8>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let mut n = 0;
            for b in bufs {
                self.0.extend_from_slice(b);
                n += b.len();
            }
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn more_chunks_than_one_writev_takes_stay_in_order() {
        let mut q = Outbound::default();
        let mut expect = Vec::new();
        for i in 0..(MAX_IOVECS * 3) {
            let line = format!("MSG big 1 {INLINE_MAX}\r\n");
            let before = q.tail().len();
            q.tail().extend_from_slice(line.as_bytes());
            q.commit(before);
            let payload = Bytes::from(vec![(i % 251) as u8; INLINE_MAX]);
            q.push_bytes(&payload);
            let before = q.tail().len();
            q.tail().extend_from_slice(b"\r\n");
            q.commit(before);
            expect.extend_from_slice(line.as_bytes());
            expect.extend_from_slice(&payload);
            expect.extend_from_slice(b"\r\n");
        }
        let mut w = Sink(Vec::new());
        q.write_to(&mut w).unwrap();
        assert!(q.is_empty());
        assert!(w.0 == expect, "bytes out of order");
    }

    #[test]
    fn marks_pop_when_their_last_byte_is_written() {
        let mut q = Outbound::default();
        let t0 = Instant::now();
        let big = Bytes::from(vec![b'x'; INLINE_MAX]);
        for i in 0..3u32 {
            let before = q.tail().len();
            q.tail().extend_from_slice(b"MSG a 1 2048\r\n");
            q.commit(before);
            q.push_bytes(&big);
            let before = q.tail().len();
            q.tail().extend_from_slice(b"\r\n");
            q.commit(before);
            q.mark(t0 + std::time::Duration::from_micros(u64::from(i)));
        }
        let one = q.len() / 3;
        assert_eq!(q.queued_msgs(), 3);
        let mut w = Trickle {
            out: Vec::new(),
            max: 1000,
            budget: one - 1,
        };
        q.write_to(&mut w).unwrap();
        let mut seen = Vec::new();
        q.pop_written(|t, n| seen.extend(std::iter::repeat_n(t, n as usize)));
        assert!(
            seen.is_empty(),
            "one byte of the first delivery is still queued"
        );
        w.budget = one + 1;
        q.write_to(&mut w).unwrap();
        q.pop_written(|t, n| seen.extend(std::iter::repeat_n(t, n as usize)));
        assert_eq!(seen, vec![t0, t0 + std::time::Duration::from_micros(1)]);
        assert_eq!(q.discard(), 1);
        assert!(q.is_empty());
    }

    #[test]
    fn deliveries_received_together_are_told_in_one_call() {
        let mut q = Outbound::default();
        let t0 = Instant::now();
        let t1 = t0 + std::time::Duration::from_micros(5);
        for at in [t0, t0, t0, t1, t0] {
            let before = q.tail().len();
            q.tail().extend_from_slice(b"MSG a 1 0\r\n\r\n");
            q.commit(before);
            q.mark(at);
        }
        q.write_to(&mut Sink(Vec::new())).unwrap();
        let mut calls = Vec::new();
        q.pop_written(|at, n| calls.push((at, n)));
        assert_eq!(calls, vec![(t0, 3), (t1, 1), (t0, 1)]);
        assert_eq!(q.queued_msgs(), 0);
    }
}
