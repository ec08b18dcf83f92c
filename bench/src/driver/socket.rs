//! The socket half both drivers share: one blocking `TcpStream`, its write batch and its
//! read buffer.
//!
//! Owns: connecting (with a deadline; with a given receive buffer when asked), batching
//! writes, reading with a per-call wait, and growing the read size for busy connections. It knows nothing of any protocol: drivers
//! put encoded bytes in [`Socket::out`] and decode from [`Socket::inbuf`]. Also the two
//! waits both protocols share, written once over [`Dispatch`]: [`sync_to_pong`] and
//! [`receive`].
//!
//! Never: buffers without bound, or waits without a deadline. A driver writes the batch
//! once it passes [`WRITE_BATCH`]; the read size grows only while reads fill it, up to
//! [`READ_MAX`]; every read has a timeout and every write at most [`WRITE_TIMEOUT`].

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use bytes::BytesMut;

use super::DriverError;

/// Bytes queued before a publish writes the batch.
pub const WRITE_BATCH: usize = 64 * 1024;
/// The first read size of a connection (idle connections stay this small).
pub const READ_MIN: usize = 4 * 1024;
/// The largest read size a busy connection grows to.
pub const READ_MAX: usize = 256 * 1024;
/// How long connecting and the handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest one write may block (a broker that stopped reading for this long has failed).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// One connected socket with its buffers.
pub(crate) struct Socket {
    sock: TcpStream,
    /// Bytes queued to be written.
    pub(crate) out: BytesMut,
    /// Bytes read and not yet decoded.
    pub(crate) inbuf: BytesMut,
    read_size: usize,
    read_timeout: Option<Duration>,
}

impl Socket {
    /// Connects to `addr` (at most [`HANDSHAKE_TIMEOUT`]), with `TCP_NODELAY`. With
    /// `recv_buffer`, the socket's `SO_RCVBUF` is set to it before connecting, so the
    /// window the handshake advertises is already that small (the kernel doubles the value
    /// and enforces a minimum of its own).
    pub(crate) fn connect(
        addr: SocketAddr,
        recv_buffer: Option<usize>,
    ) -> Result<Self, DriverError> {
        let sock = match recv_buffer {
            None => TcpStream::connect_timeout(&addr, HANDSHAKE_TIMEOUT)?,
            Some(size) => {
                let s = socket2::Socket::new(
                    socket2::Domain::for_address(addr),
                    socket2::Type::STREAM,
                    Some(socket2::Protocol::TCP),
                )?;
                s.set_recv_buffer_size(size)?;
                s.connect_timeout(&addr.into(), HANDSHAKE_TIMEOUT)?;
                TcpStream::from(s)
            }
        };
        sock.set_nodelay(true)?;
        sock.set_write_timeout(Some(WRITE_TIMEOUT))?;
        Ok(Socket {
            sock,
            out: BytesMut::with_capacity(1024),
            inbuf: BytesMut::new(),
            read_size: READ_MIN,
            read_timeout: None,
        })
    }

    /// Reads once, waiting at most `wait` (at least 1 ms: a zero timeout means "forever"
    /// to the OS). False when the wait ran out with nothing read.
    pub(crate) fn fill(&mut self, wait: Duration) -> Result<bool, DriverError> {
        let wait = wait.max(Duration::from_millis(1));
        if self.read_timeout != Some(wait) {
            self.sock.set_read_timeout(Some(wait))?;
            self.read_timeout = Some(wait);
        }
        let start = self.inbuf.len();
        self.inbuf.resize(start + self.read_size, 0);
        let result = self.sock.read(&mut self.inbuf[start..]);
        match result {
            Ok(0) => {
                self.inbuf.truncate(start);
                Err(DriverError::Closed)
            }
            Ok(n) => {
                self.inbuf.truncate(start + n);
                if n == self.read_size && self.read_size < READ_MAX {
                    self.read_size *= 2;
                }
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                self.inbuf.truncate(start);
                Ok(false)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                self.inbuf.truncate(start);
                Ok(true)
            }
            Err(e) => {
                self.inbuf.truncate(start);
                Err(e.into())
            }
        }
    }

    /// Writes everything queued in [`Socket::out`].
    pub(crate) fn flush(&mut self) -> Result<(), DriverError> {
        if !self.out.is_empty() {
            self.sock.write_all(&self.out)?;
            self.out.clear();
        }
        Ok(())
    }

    /// Writes the batch if it passed [`WRITE_BATCH`].
    pub(crate) fn flush_if_full(&mut self) -> Result<(), DriverError> {
        if self.out.len() >= WRITE_BATCH {
            self.flush()?;
        }
        Ok(())
    }

    /// The descriptor, for readiness polling.
    pub(crate) fn raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// The stream itself, for a connection that stops being read (see
    /// [`super::stalled`]); whatever was buffered is dropped.
    pub(crate) fn into_stream(self) -> TcpStream {
        self.sock
    }
}

/// What the shared waits need from a driver's connection: its socket, how many `PONG`s it
/// has decoded, and its decoding of what is buffered.
pub(crate) trait Dispatch {
    fn socket(&mut self) -> &mut Socket;
    fn pongs(&self) -> u64;
    /// Decodes every whole frame or operation buffered, or up to the `PONG` that makes the
    /// count reach `until_pongs` (what follows stays buffered); hands each payload to
    /// `on_message` and returns how many it handed over.
    fn dispatch(
        &mut self,
        on_message: &mut dyn FnMut(&[u8]),
        until_pongs: Option<u64>,
    ) -> Result<usize, DriverError>;
}

/// Writes what is queued (the caller has queued a `PING`) and waits, at most `timeout`,
/// for the `PONG` that answers it. Deliveries before it are discarded; what follows it
/// stays buffered.
pub(crate) fn sync_to_pong<C: Dispatch>(c: &mut C, timeout: Duration) -> Result<(), DriverError> {
    c.socket().flush()?;
    let want = c.pongs() + 1;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        c.dispatch(&mut |_| {}, Some(want))?;
        if c.pongs() >= want {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(DriverError::Timeout("PONG"));
        }
        c.socket().fill(left)?;
    }
}

/// Hands every buffered delivery to `on_message`; when none was buffered, waits at most
/// `wait` for bytes and decodes those. Returns how many were handed over.
pub(crate) fn receive<C: Dispatch>(
    c: &mut C,
    wait: Duration,
    on_message: &mut dyn FnMut(&[u8]),
) -> Result<usize, DriverError> {
    let buffered = c.dispatch(on_message, None)?;
    if buffered > 0 {
        return Ok(buffered);
    }
    if !c.socket().fill(wait)? {
        return Ok(0);
    }
    c.dispatch(on_message, None)
}
