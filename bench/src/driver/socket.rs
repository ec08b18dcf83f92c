//! The socket half both drivers share: one blocking `TcpStream`, the layers a transport
//! puts on it, its write batch and its read buffer.
//!
//! Owns: connecting (with a deadline; with a given receive buffer when asked), the TLS
//! handshake and the WebSocket upgrade a [`Dial`] asks for (and [`Socket::start_tls`] for
//! the NATS text port, which greets in plain text first), batching writes, reading with a
//! per-call wait, and growing the read size for busy connections. It knows nothing of any
//! protocol: drivers put encoded bytes in [`Socket::out`] and decode from
//! [`Socket::inbuf`], whatever carries them. Also the two waits both protocols share,
//! written once over [`Dispatch`]: [`sync_to_pong`] and [`receive`].
//!
//! Plain TCP pays nothing for the other transports: [`Wire::Plain`] reads the socket
//! straight into [`Socket::inbuf`] and writes [`Socket::out`] straight to it, as before
//! they existed; the one added cost is a match on the wire per read or write call, not
//! per message. TLS and WebSocket ([`Wire::Layered`]) go through [`super::tls`] and
//! [`super::websocket`], which never touch the socket themselves: every read and write is
//! here.
//!
//! Never: buffers without bound, or waits without a deadline. A driver writes the batch
//! once it passes [`WRITE_BATCH`]; the read size grows only while reads fill it, up to
//! [`READ_MAX`]; every read has a timeout and every write at most [`WRITE_TIMEOUT`]; the
//! TLS handshake and the WebSocket upgrade finish within [`HANDSHAKE_TIMEOUT`].

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::dial::{Dial, TlsClient, Transport};
use super::tls::TlsLayer;
use super::websocket::{self, WsLayer};
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

/// When a TLS dial's handshake happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TlsStart {
    /// Right after the TCP connect (the binary port, WebSocket over TLS).
    Immediate,
    /// When the driver calls [`Socket::start_tls`], after the broker's plain-text greeting
    /// (the NATS text port's `INFO` with `tls_required`).
    AfterGreeting,
}

/// How a connection opens: its TLS start and, over WebSocket, the path its protocol is
/// served on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Opening {
    pub(crate) tls_start: TlsStart,
    pub(crate) websocket_path: &'static str,
}

/// What lies between the socket and the protocol's bytes.
enum Wire {
    /// Nothing: the protocol is the socket's bytes.
    Plain,
    /// TLS, WebSocket, or WebSocket over TLS.
    Layered(Box<Layers>),
}

/// The layers of a connection that is not plain TCP.
struct Layers {
    tls: Option<TlsLayer>,
    ws: Option<WsLayer>,
    /// Socket bytes read for TLS to decrypt (empty between reads).
    net: BytesMut,
}

/// One connected socket with its buffers.
pub(crate) struct Socket {
    sock: TcpStream,
    wire: Wire,
    /// Bytes queued to be written.
    pub(crate) out: BytesMut,
    /// Bytes read and not yet decoded.
    pub(crate) inbuf: BytesMut,
    read_size: usize,
    read_timeout: Option<Duration>,
}

impl Socket {
    /// Connects as `dial` says (at most [`HANDSHAKE_TIMEOUT`] for the TCP connect, as much
    /// again for each of TLS and the WebSocket upgrade), with `TCP_NODELAY`. With
    /// `recv_buffer`, the socket's `SO_RCVBUF` is set to it before connecting, so the
    /// window the handshake advertises is already that small (the kernel doubles the value
    /// and enforces a minimum of its own).
    pub(crate) fn connect(
        dial: &Dial,
        recv_buffer: Option<usize>,
        opening: Opening,
    ) -> Result<Self, DriverError> {
        let addr = dial.addr;
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
        let mut socket = Socket {
            sock,
            wire: Wire::Plain,
            out: BytesMut::with_capacity(1024),
            inbuf: BytesMut::new(),
            read_size: READ_MIN,
            read_timeout: None,
        };
        match dial.transport {
            Transport::Tcp => {}
            Transport::Tls if opening.tls_start == TlsStart::AfterGreeting => {}
            Transport::Tls => socket.start_tls(dial.tls()?)?,
            Transport::Websocket => socket.upgrade(addr, opening.websocket_path)?,
            Transport::Wss => {
                socket.start_tls(dial.tls()?)?;
                socket.upgrade(addr, opening.websocket_path)?;
            }
        }
        Ok(socket)
    }

    /// The layers, made when the connection stops being plain.
    fn layers(&mut self) -> &mut Layers {
        if let Wire::Plain = self.wire {
            self.wire = Wire::Layered(Box::new(Layers {
                tls: None,
                ws: None,
                net: BytesMut::new(),
            }));
        }
        match &mut self.wire {
            Wire::Layered(layers) => layers,
            Wire::Plain => unreachable!("made layered just above"),
        }
    }

    /// Does the TLS handshake (at most [`HANDSHAKE_TIMEOUT`]); from then on every byte
    /// goes through TLS. Whatever plaintext the broker sent right behind its handshake is
    /// appended to [`Socket::inbuf`].
    pub(crate) fn start_tls(&mut self, client: &TlsClient) -> Result<(), DriverError> {
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        let mut tls = TlsLayer::new(client)?;
        loop {
            tls.write_pending(&mut self.sock)?;
            if !tls.is_handshaking() {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(DriverError::Timeout("the TLS handshake"));
            }
            self.set_read_timeout(left)?;
            let net = &mut self.layers().net;
            let mut net = std::mem::take(net);
            let read = read_chunk(&mut self.sock, &mut net, READ_MIN);
            let fed = read.and_then(|_| tls.feed(&net, &mut self.inbuf));
            net.clear();
            self.layers().net = net;
            if let Err(e) = fed {
                // rustls may have an alert saying why; the broker's log will show it.
                let _ = tls.write_pending(&mut self.sock);
                return Err(e);
            }
        }
        self.layers().tls = Some(tls);
        Ok(())
    }

    /// Upgrades the connection to WebSocket on `path` (at most [`HANDSHAKE_TIMEOUT`]).
    /// Frames that came right behind the `101` are decoded into [`Socket::inbuf`].
    fn upgrade(&mut self, addr: SocketAddr, path: &str) -> Result<(), DriverError> {
        let key = websocket::new_key()?;
        let request = websocket::request(&addr.to_string(), path, &key);
        self.write_through(&request)?;
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        let head = loop {
            if let Some(len) = websocket::parse_response(&self.inbuf, &key)? {
                break len;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(DriverError::Timeout("the WebSocket upgrade"));
            }
            self.fill(left)?;
        };
        let frames = self.inbuf.split_off(head);
        self.inbuf.clear();
        let mut ws = WsLayer::new(frames)?;
        ws.decode(&mut self.inbuf)?;
        self.layers().ws = Some(ws);
        Ok(())
    }

    fn set_read_timeout(&mut self, wait: Duration) -> Result<(), DriverError> {
        // At least 1 ms: a zero timeout means "forever" to the OS.
        let wait = wait.max(Duration::from_millis(1));
        if self.read_timeout != Some(wait) {
            self.sock.set_read_timeout(Some(wait))?;
            self.read_timeout = Some(wait);
        }
        Ok(())
    }

    /// Reads once, waiting at most `wait` (at least 1 ms: a zero timeout means "forever"
    /// to the OS). False when the wait ran out with nothing read. Over TLS or WebSocket
    /// a read may bring no protocol bytes (part of a record or frame) and still be true.
    pub(crate) fn fill(&mut self, wait: Duration) -> Result<bool, DriverError> {
        self.set_read_timeout(wait)?;
        match &mut self.wire {
            Wire::Plain => {
                read_chunk(&mut self.sock, &mut self.inbuf, self.read_size).map(|n| self.grow(n))
            }
            Wire::Layered(layers) => {
                let n = layers.fill(&mut self.sock, &mut self.inbuf, self.read_size)?;
                Ok(self.grow(n))
            }
        }
    }

    /// Doubles the read size after a read that filled it; true when `n` bytes came.
    fn grow(&mut self, n: Option<usize>) -> bool {
        match n {
            Some(n) => {
                if n == self.read_size && self.read_size < READ_MAX {
                    self.read_size *= 2;
                }
                true
            }
            None => false,
        }
    }

    /// Writes everything queued in [`Socket::out`].
    pub(crate) fn flush(&mut self) -> Result<(), DriverError> {
        if !self.out.is_empty() {
            match &mut self.wire {
                Wire::Plain => self.sock.write_all(&self.out)?,
                Wire::Layered(layers) => layers.write(&mut self.sock, &self.out)?,
            }
            self.out.clear();
        }
        Ok(())
    }

    /// Writes `bytes` through the layers there are now (the upgrade request).
    fn write_through(&mut self, bytes: &[u8]) -> Result<(), DriverError> {
        match &mut self.wire {
            Wire::Plain => self.sock.write_all(bytes)?,
            Wire::Layered(layers) => layers.write(&mut self.sock, bytes)?,
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
    /// [`super::stalled`]); whatever was buffered is dropped. Plain TCP only: the stalled
    /// connection's probe writes a plain `PING`.
    pub(crate) fn into_stream(self) -> Result<TcpStream, DriverError> {
        match self.wire {
            Wire::Plain => Ok(self.sock),
            Wire::Layered(_) => Err(DriverError::Unsupported(
                "a stuck consumer over TLS or WebSocket (plain TCP only)",
            )),
        }
    }
}

impl Layers {
    /// Reads the socket once (at most `size` bytes) and passes what came up through the
    /// layers into `app`. The number of socket bytes read, `None` when the wait ran out.
    fn fill(
        &mut self,
        sock: &mut TcpStream,
        app: &mut BytesMut,
        size: usize,
    ) -> Result<Option<usize>, DriverError> {
        let n = match (&self.tls, &mut self.ws) {
            (Some(_), _) => read_chunk(sock, &mut self.net, size)?,
            (None, Some(ws)) => read_chunk(sock, &mut ws.raw, size)?,
            // Before the upgrade's answer: the bytes are the HTTP head.
            (None, None) => read_chunk(sock, app, size)?,
        };
        if n.is_some() {
            self.pump(sock, app)?;
        }
        Ok(n)
    }

    /// Decrypts what was read (into the WebSocket layer's input, or `app`), decodes the
    /// WebSocket frames into `app`, and sends what the layers must answer (TLS alerts and
    /// key updates, pongs).
    fn pump(&mut self, sock: &mut TcpStream, app: &mut BytesMut) -> Result<(), DriverError> {
        if let Some(tls) = &mut self.tls {
            let dst = match &mut self.ws {
                Some(ws) => &mut ws.raw,
                None => &mut *app,
            };
            let fed = tls.feed(&self.net, dst);
            self.net.clear();
            tls.write_pending(sock)?;
            fed?;
        }
        if let Some(ws) = &mut self.ws {
            ws.decode(app)?;
            let control = ws.take_control();
            if !control.is_empty() {
                self.write_below_ws(sock, &control)?;
            }
        }
        if app.is_empty() && self.tls.as_ref().is_some_and(TlsLayer::peer_closed) {
            return Err(DriverError::Closed);
        }
        Ok(())
    }

    /// Writes `bytes` as the protocol's: framed when over WebSocket, encrypted when over
    /// TLS.
    fn write(&mut self, sock: &mut TcpStream, bytes: &[u8]) -> Result<(), DriverError> {
        let Layers { tls, ws, .. } = self;
        let framed = match ws {
            Some(ws) => ws.encode(bytes),
            None => bytes,
        };
        write_tls_or_plain(tls, sock, framed)
    }

    /// Writes `bytes` (already framed) below the WebSocket layer.
    fn write_below_ws(&mut self, sock: &mut TcpStream, bytes: &[u8]) -> Result<(), DriverError> {
        write_tls_or_plain(&mut self.tls, sock, bytes)
    }
}

fn write_tls_or_plain(
    tls: &mut Option<TlsLayer>,
    sock: &mut TcpStream,
    bytes: &[u8],
) -> Result<(), DriverError> {
    match tls {
        Some(tls) => {
            tls.encrypt(bytes)?;
            tls.write_pending(sock)?;
        }
        None => sock.write_all(bytes)?,
    }
    Ok(())
}

/// Reads once from `sock` into the end of `buf` (at most `size` bytes): `Some(n)` for `n`
/// bytes (0 after an interrupted read), `None` when the read timed out; the end of the
/// stream is [`DriverError::Closed`].
///
/// It reads into `buf`'s spare capacity as it is: zeroing `size` bytes first (what a safe
/// `Read::read` into a resized buffer needs) cost a busy subscriber a `memset` of up to
/// [`READ_MAX`] bytes per read, whatever the read brought, 18% of the bench's own CPU in a
/// fan-out.
#[inline]
fn read_chunk(
    sock: &mut TcpStream,
    buf: &mut BytesMut,
    size: usize,
) -> Result<Option<usize>, DriverError> {
    buf.reserve(size);
    let spare = &mut buf.spare_capacity_mut()[..size];
    // SAFETY: `spare` is `size` bytes of `buf`'s allocation past its length, valid for
    // writes (`reserve` made them); `recv` writes at most `size` bytes there and never
    // reads them, so that they are uninitialised does not matter. The descriptor is the
    // open socket `sock` owns, borrowed mutably for the call.
    let n = unsafe { libc::recv(sock.as_raw_fd(), spare.as_mut_ptr().cast(), size, 0) };
    match n {
        0 => Err(DriverError::Closed),
        n if n > 0 => {
            let n = n as usize;
            // SAFETY: `recv` initialised the first `n` (at most `size`) bytes of the spare
            // capacity.
            unsafe { buf.set_len(buf.len() + n) };
            Ok(Some(n))
        }
        _ => {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Ok(None),
                io::ErrorKind::Interrupted => Ok(Some(0)),
                _ => Err(e.into()),
            }
        }
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
