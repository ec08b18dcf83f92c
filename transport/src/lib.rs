//! Tern's transports, sans-IO: plain TCP, TLS, WebSocket and WebSocket over TLS, each
//! turning the bytes a socket read into the bytes a session parses, and back.
//!
//! Owns: the [`Transport`] a connection holds between its socket and its session, and the
//! contract the broker's worker loop drives it by (below); the layers it is made of:
//! `stream::PlainStream`, [`tls::TlsStream`] (rustls on `ring`), and
//! `ws::WebSocket` over either of them (composition: the WebSocket layer is written once
//! and runs over any byte stream).
//!
//! Never: touches a socket, a clock or a thread. Bytes go in, bytes come out, like
//! quinn-proto: timeouts (a TLS or WebSocket handshake that takes too long) are the
//! caller's timers, reading and writing the socket is the caller's loop. Never allocates
//! per message in the steady state in its own code: the buffers it owns keep their
//! capacity, and every one is bounded by a named limit ([`ws::WsLimits`],
//! [`tls::TlsLimits`]). (rustls runs the TLS handshake on its unbuffered API, so that no
//! connection keeps a TLS buffer it does not own; a TLS 1.3 connection is then handed over
//! to this crate's record layer, `tls::record`, and rustls's state dropped: an idle one
//! keeps about 440 bytes of TLS.)
//!
//! # The contract
//!
//! A caller (one connection in the worker loop):
//! 1. creates the transport when it accepts the socket: [`Transport::plain`],
//!    [`Transport::tls`], [`Transport::websocket`] or [`Transport::websocket_tls`];
//! 2. for every chunk the socket reads, calls [`Transport::read`], which appends the
//!    decoded application bytes to the session's input buffer. When the outcome says
//!    [`ReadOutcome::again`], it keeps `socket_in[consumed..]` and calls `read` again
//!    with it (even when that is empty) once the session has parsed what it got: the
//!    transport stopped early so that one read never appends more than a bounded amount;
//! 3. when the outcome says [`ReadOutcome::wants_write`], moves
//!    [`Transport::pending_socket_out`] to the socket (handshake answers, pongs, close
//!    frames, TLS records of the handshake);
//! 4. sends the session's output through [`Transport::write`], which first moves what is
//!    pending and then the encoded application bytes into the socket's output buffer;
//! 5. sends its own application bytes only once [`Transport::is_ready`] (or a read
//!    reported [`ReadOutcome::handshake_done`]);
//! 6. on an error from `read` or `write`, or [`ReadOutcome::peer_closed`], writes what
//!    `pending_socket_out` gives (the alert, the close frame, the HTTP error) as far as
//!    the socket takes it without blocking, and closes the socket. The error's `Display`
//!    is the reason to log; [`TransportError::close_code`] the WebSocket code sent;
//! 7. to close a healthy connection, calls [`Transport::close`] and does the same.
//!
//! A plain transport is a pass-through: [`Transport::is_passthrough`] says so, and a
//! caller that checks it reads the socket straight into the session's buffer and writes
//! the session's output straight to the socket, paying nothing (`read` and `write` still
//! work on it, as one copy each).
//!
//! # WebSocket framing: our own codec, not tungstenite
//!
//! The issue asks for a maintained crate unless measurement shows it cannot keep up. We
//! measured `tungstenite` 0.30 (`benches/framing.rs`, `ws_decode/tungstenite`, figures in
//! `docs/transports.md`) and chose a small sans-IO codec (`ws::frame`) because:
//! - tungstenite needs a `Read + Write` stream and hands out one `Message` per frame (an
//!   allocated payload) that the broker would then copy into the session's buffer: 1.1 µs
//!   per 128 B frame against 32 ns for decoding straight into that buffer, 2.5 µs against
//!   0.37 µs per 16 KiB frame (2-vCPU VM, 2026-12-05);
//! - it buffers whole messages (up to its `max_message_size`) before handing them out,
//!   and keeps a 128 KiB read buffer per connection by default, against the 2× idle
//!   memory budget; our decoder keeps 14 header bytes and 125 control bytes per
//!   connection and streams payloads;
//! - it has no permessage-deflate, which nats-server's WebSocket listener offers.
//!
//! tungstenite stays as the test peer: `tests/ws_interop.rs` drives a tungstenite client
//! against this server.

pub mod error;
mod stream;
pub mod tls;
pub mod ws;

use std::sync::Arc;

use rustls::ServerConfig;

pub use error::{CloseCode, HandshakeError, TransportError, WsError};
pub use tls::config::{load_server_config, TlsConfigError, TlsConfigHandle, TlsSettings};
pub use tls::{TlsLimits, TlsStart, TlsStream};
pub use ws::{AllowedOrigins, Upgrade, WsConfig, WsLimits};

use stream::{ByteStream, PlainStream};
use ws::WebSocket;

/// How the peer ended the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerClosed {
    /// A TLS close_notify.
    TlsCloseNotify,
    /// A WebSocket close frame, with its code if it had one; it has been answered (the
    /// answer is in `pending_socket_out`).
    WebSocket(Option<CloseCode>),
}

/// What one [`Transport::read`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadOutcome {
    /// Socket bytes taken; the rest belong to the next call.
    pub consumed: usize,
    /// The transport stopped early: call `read` again with `socket_in[consumed..]`, even
    /// if empty, after the session has parsed what this call appended.
    pub again: bool,
    /// `pending_socket_out` has bytes for the peer.
    pub wants_write: bool,
    /// The transport became ready during this call (TLS handshake done; for WebSocket,
    /// the upgrade accepted): the session may start talking.
    pub handshake_done: bool,
    /// The peer closed the connection.
    pub peer_closed: Option<PeerClosed>,
}

/// One layer stack, as the transport drives it.
trait Layer {
    fn read(
        &mut self,
        socket_in: &[u8],
        app_in: &mut Vec<u8>,
    ) -> Result<ReadOutcome, TransportError>;
    fn write(&mut self, app_out: &[u8], socket_out: &mut Vec<u8>) -> Result<(), TransportError>;
    fn take_pending(&mut self, socket_out: &mut Vec<u8>) -> Result<(), TransportError>;
    fn has_pending(&self) -> bool;
    fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), TransportError>;
    fn is_ready(&self) -> bool;
    fn shrink(&mut self);
}

/// A byte stream used directly, without framing above it.
struct Bare<S> {
    stream: S,
    /// `close` was called: writes are refused.
    closed: bool,
}

impl<S> Bare<S> {
    fn new(stream: S) -> Self {
        Self {
            stream,
            closed: false,
        }
    }
}

impl<S: ByteStream> Layer for Bare<S> {
    fn read(
        &mut self,
        socket_in: &[u8],
        app_in: &mut Vec<u8>,
    ) -> Result<ReadOutcome, TransportError> {
        let read = self.stream.read_into(socket_in, &mut |bytes| {
            app_in.extend_from_slice(bytes);
            Ok(bytes.len())
        })?;
        Ok(ReadOutcome {
            consumed: read.consumed,
            again: read.again,
            wants_write: self.stream.has_pending(),
            handshake_done: read.handshake_done,
            peer_closed: read.peer_closed.then_some(PeerClosed::TlsCloseNotify),
        })
    }

    fn write(&mut self, app_out: &[u8], socket_out: &mut Vec<u8>) -> Result<(), TransportError> {
        if self.closed {
            return Err(TransportError::Closed);
        }
        if app_out.is_empty() {
            return self.stream.take_pending(socket_out);
        }
        self.stream.send(&[app_out], socket_out)
    }

    fn take_pending(&mut self, socket_out: &mut Vec<u8>) -> Result<(), TransportError> {
        self.stream.take_pending(socket_out)
    }

    fn has_pending(&self) -> bool {
        self.stream.has_pending()
    }

    fn close(&mut self, _code: CloseCode, _reason: &str) -> Result<(), TransportError> {
        self.closed = true;
        self.stream.close();
        Ok(())
    }

    fn is_ready(&self) -> bool {
        self.stream.is_ready()
    }

    fn shrink(&mut self) {
        self.stream.shrink();
    }
}

impl<S: ByteStream> Layer for WebSocket<S> {
    fn read(
        &mut self,
        socket_in: &[u8],
        app_in: &mut Vec<u8>,
    ) -> Result<ReadOutcome, TransportError> {
        WebSocket::read(self, socket_in, app_in)
    }

    fn write(&mut self, app_out: &[u8], socket_out: &mut Vec<u8>) -> Result<(), TransportError> {
        WebSocket::write(self, app_out, socket_out)
    }

    fn take_pending(&mut self, socket_out: &mut Vec<u8>) -> Result<(), TransportError> {
        WebSocket::take_pending(self, socket_out)
    }

    fn has_pending(&self) -> bool {
        WebSocket::has_pending(self)
    }

    fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), TransportError> {
        WebSocket::close(self, code, reason)
    }

    fn is_ready(&self) -> bool {
        WebSocket::is_ready(self)
    }

    fn shrink(&mut self) {
        self.stream_mut().shrink();
    }
}

/// The layers of one connection. The WebSocket layers are boxed: their state (the upgrade,
/// the frame codec) is four times a TLS stream's handle, and a `Transport` is kept by every
/// TLS connection, most of them idle (see `transport/tests/tls_alloc.rs`).
enum Stack {
    Plain(Bare<PlainStream>),
    Tls(Bare<TlsStream>),
    Ws(Box<WebSocket<PlainStream>>),
    Wss(Box<WebSocket<TlsStream>>),
}

/// One connection's transport: socket bytes in, application bytes out, and back. See the
/// crate documentation for the contract.
///
/// ```
/// use tern_transport::Transport;
///
/// let mut transport = Transport::plain();
/// let (mut app_in, mut socket_out) = (Vec::new(), Vec::new());
/// let outcome = transport.read(b"PING\r\n", &mut app_in).unwrap();
/// assert_eq!((outcome.consumed, app_in.as_slice()), (6, &b"PING\r\n"[..]));
/// transport.write(b"PONG\r\n", &mut socket_out).unwrap();
/// assert_eq!(socket_out, b"PONG\r\n");
/// ```
pub struct Transport {
    stack: Stack,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.stack {
            Stack::Plain(_) => "plain",
            Stack::Tls(_) => "tls",
            Stack::Ws(_) => "websocket",
            Stack::Wss(_) => "websocket+tls",
        };
        f.debug_struct("Transport")
            .field("kind", &kind)
            .field("ready", &self.is_ready())
            .finish()
    }
}

impl Transport {
    /// Plain TCP: a pass-through.
    pub fn plain() -> Self {
        Self {
            stack: Stack::Plain(Bare::new(PlainStream::default())),
        }
    }

    /// TLS on `config` (from [`TlsConfigHandle::current`] at accept time), starting as
    /// `start` says.
    pub fn tls(
        config: Arc<ServerConfig>,
        start: TlsStart,
        limits: TlsLimits,
    ) -> Result<Self, TransportError> {
        Ok(Self {
            stack: Stack::Tls(Bare::new(TlsStream::new(config, start, limits)?)),
        })
    }

    /// WebSocket over plain TCP.
    pub fn websocket(config: Arc<WsConfig>) -> Self {
        Self {
            stack: Stack::Ws(Box::new(WebSocket::new(PlainStream::default(), config))),
        }
    }

    /// WebSocket over TLS from the first byte (`wss://`).
    pub fn websocket_tls(
        tls: Arc<ServerConfig>,
        limits: TlsLimits,
        ws: Arc<WsConfig>,
    ) -> Result<Self, TransportError> {
        let stream = TlsStream::new(tls, TlsStart::Immediate, limits)?;
        Ok(Self {
            stack: Stack::Wss(Box::new(WebSocket::new(stream, ws))),
        })
    }

    fn layer(&mut self) -> &mut dyn Layer {
        match &mut self.stack {
            Stack::Plain(l) => l,
            Stack::Tls(l) => l,
            Stack::Ws(l) => &mut **l,
            Stack::Wss(l) => &mut **l,
        }
    }

    fn layer_ref(&self) -> &dyn Layer {
        match &self.stack {
            Stack::Plain(l) => l,
            Stack::Tls(l) => l,
            Stack::Ws(l) => &**l,
            Stack::Wss(l) => &**l,
        }
    }

    /// Takes bytes the socket read and appends the application bytes they carry to
    /// `app_in`. Partial TLS records and WebSocket frames are kept inside (bounded); see
    /// [`ReadOutcome`] for what to do next.
    pub fn read(
        &mut self,
        socket_in: &[u8],
        app_in: &mut Vec<u8>,
    ) -> Result<ReadOutcome, TransportError> {
        self.layer().read(socket_in, app_in)
    }

    /// Appends to `socket_out` what is pending, then `app_out` encoded for the socket: as
    /// is (plain), as TLS records, or as one binary WebSocket frame (compressed when
    /// permessage-deflate was negotiated and it is at least `WsLimits::compress_min`
    /// bytes). An empty `app_out` only moves what is pending.
    pub fn write(
        &mut self,
        app_out: &[u8],
        socket_out: &mut Vec<u8>,
    ) -> Result<(), TransportError> {
        self.layer().write(app_out, socket_out)
    }

    /// Appends to `socket_out` what the transport has for the peer by itself: handshake
    /// messages, pongs, close frames, alerts.
    pub fn pending_socket_out(&mut self, socket_out: &mut Vec<u8>) -> Result<(), TransportError> {
        self.layer().take_pending(socket_out)
    }

    /// Whether `pending_socket_out` would append anything.
    pub fn wants_write(&self) -> bool {
        self.layer_ref().has_pending()
    }

    /// Starts closing: queues a WebSocket close frame with `code` and `reason` (cut to
    /// 123 bytes) and a TLS close_notify, as the layers have them. Take them with
    /// `pending_socket_out`, then close the socket. Writes are refused from now on.
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), TransportError> {
        self.layer().close(code, reason)
    }

    /// Whether application bytes written now reach the peer: always for plain, once the
    /// TLS handshake is complete, once the WebSocket upgrade is accepted (and, over TLS,
    /// the handshake complete).
    pub fn is_ready(&self) -> bool {
        self.layer_ref().is_ready()
    }

    /// Gives back what a quiet transport need not keep: a TLS 1.3 connection's expanded
    /// keys (1 KiB) and input buffer, made again when it next reads or writes. Call it
    /// from a timer (the broker's ping tick), not after every read: a busy connection
    /// would expand its keys again each time.
    pub fn shrink(&mut self) {
        self.layer().shrink();
    }

    /// Whether socket bytes are application bytes (plain TCP): the caller may skip `read`
    /// and `write` altogether.
    pub fn is_passthrough(&self) -> bool {
        matches!(self.stack, Stack::Plain(_))
    }

    /// Switches a [`TlsStart::PlainFirst`] transport to TLS, right after the plain INFO was
    /// written (to `socket_out` of an earlier `write`). A no-op once TLS has started.
    pub fn start_tls(&mut self) -> Result<(), TransportError> {
        match &mut self.stack {
            Stack::Tls(bare) => bare.stream.start_tls(),
            _ => Err(TransportError::NoTlsToStart),
        }
    }

    /// The TLS session, for the handshake state, the client's certificate, SNI and ALPN.
    pub fn tls_session(&self) -> Option<&TlsStream> {
        match &self.stack {
            Stack::Tls(bare) => Some(&bare.stream),
            Stack::Wss(ws) => Some(ws.stream()),
            Stack::Plain(_) | Stack::Ws(_) => None,
        }
    }

    /// What the WebSocket upgrade request asked for (its path decides the protocol), once
    /// it is accepted.
    pub fn websocket_upgrade(&self) -> Option<&Upgrade> {
        match &self.stack {
            Stack::Ws(ws) => ws.upgrade(),
            Stack::Wss(ws) => ws.upgrade(),
            Stack::Plain(_) | Stack::Tls(_) => None,
        }
    }
}
