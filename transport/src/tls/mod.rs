//! TLS, server side: a rustls `ServerConnection` driven with bytes, never with a socket.
//!
//! Owns: one connection's TLS session ([`TlsStream`]): its start mode (TLS from the first
//! byte, or NATS-style plain text first and TLS from [`TlsStream::start_tls`] on), the
//! check that a client's first byte is a TLS handshake record, and what the handshake
//! learnt (peer certificate, SNI, ALPN) for logging. The server configuration and its
//! reload live in [`config`]; reading a certificate's subject in [`subject`].
//!
//! Never: touches a socket or a clock (the handshake timeout is the caller's timer: a
//! stream that is not `is_ready` in time is closed by the caller), or
//! buffers without a bound: rustls bounds its record buffer (one record), its received
//! plaintext (16 KiB, rustls's default; [`TlsStream`] drains it into the layer above on
//! every read) and its unsent plaintext before the handshake completes
//! ([`TlsLimits::max_unsent_plaintext`]).

pub mod config;
pub mod subject;

use std::io::{BufRead, ErrorKind, IoSlice, Write};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::{ServerConfig, ServerConnection};

use crate::error::TransportError;
use crate::stream::{ByteStream, PlainStream, Sink, StreamRead};

/// The content type of a TLS handshake record: the first byte of every ClientHello.
pub const HANDSHAKE_RECORD: u8 = 0x16;

/// How a TLS connection starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsStart {
    /// TLS from the first byte (the binary and WebSocket ports; nats-server's
    /// `handshake_first`).
    Immediate,
    /// NATS-style `tls_required`: the server first writes its INFO in plain text, then calls
    /// [`TlsStream::start_tls`]; from then on everything is TLS. A client that starts the
    /// TLS handshake at once (first byte 0x16, nats-server's `handshake_first` clients)
    /// switches the stream to TLS by itself, and the caller should then send its INFO only
    /// once the handshake is done. Any other byte before `start_tls` is a plain-text client
    /// on a TLS port.
    PlainFirst,
}

/// Limits of one TLS connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsLimits {
    /// Application bytes a caller may write before the handshake completes; they are held
    /// until it does. Default [`TlsLimits::DEFAULT_MAX_UNSENT_PLAINTEXT`].
    pub max_unsent_plaintext: usize,
}

impl TlsLimits {
    /// 64 KiB, rustls's own default.
    pub const DEFAULT_MAX_UNSENT_PLAINTEXT: usize = 64 * 1024;
}

impl Default for TlsLimits {
    fn default() -> Self {
        Self {
            max_unsent_plaintext: Self::DEFAULT_MAX_UNSENT_PLAINTEXT,
        }
    }
}

/// Where the stream is in its life.
enum State {
    /// `TlsStart::PlainFirst` before TLS started: writes go out in plain text.
    Plain(PlainStream),
    /// TLS; the session is boxed because it is large (rustls's state and buffers) and the
    /// plain state small.
    Tls(Box<ServerConnection>),
}

/// One server-side TLS session over a byte stream.
///
/// Contract: feed it what the socket read (`read_into`), hand its output to the socket
/// (`send`, `take_pending`), and close the socket after an error (having written what
/// `take_pending` gives: rustls's alert). It keeps the configuration it was created with,
/// so a reload of the server's certificate never touches an open connection.
pub struct TlsStream {
    config: Arc<ServerConfig>,
    limits: TlsLimits,
    state: State,
    /// Whether the client's first byte has been checked.
    first_byte_checked: bool,
    /// Whether `handshake_done` has been reported.
    handshake_reported: bool,
}

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("started", &self.is_started())
            .field("handshake_complete", &self.is_handshake_complete())
            .finish()
    }
}

impl TlsStream {
    /// A TLS stream on `config` (take it from `config::TlsConfigHandle::current` when the
    /// connection is accepted).
    pub fn new(
        config: Arc<ServerConfig>,
        start: TlsStart,
        limits: TlsLimits,
    ) -> Result<Self, TransportError> {
        let mut stream = Self {
            config,
            limits,
            state: State::Plain(PlainStream::default()),
            first_byte_checked: false,
            handshake_reported: false,
        };
        if start == TlsStart::Immediate {
            stream.start_tls()?;
        }
        Ok(stream)
    }

    /// Switches a `TlsStart::PlainFirst` stream to TLS: everything written from now on is
    /// encrypted, everything read must be TLS. Call it right after writing the plain-text
    /// INFO. A no-op on a stream already in TLS.
    pub fn start_tls(&mut self) -> Result<(), TransportError> {
        if let State::Plain(plain) = &mut self.state {
            let mut conn = ServerConnection::new(Arc::clone(&self.config))?;
            conn.set_buffer_limit(Some(self.limits.max_unsent_plaintext));
            let queued = plain.take_queued();
            self.state = State::Tls(Box::new(conn));
            if !queued.is_empty() {
                self.queue(&queued)?;
            }
        }
        Ok(())
    }

    /// Whether the stream is in TLS (always, for `TlsStart::Immediate`).
    pub fn is_started(&self) -> bool {
        matches!(self.state, State::Tls(_))
    }

    /// Whether the TLS handshake is complete.
    pub fn is_handshake_complete(&self) -> bool {
        match &self.state {
            State::Tls(conn) => !conn.is_handshaking(),
            State::Plain(_) => false,
        }
    }

    /// The client's certificate chain, leaf first, when it presented one.
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        match &self.state {
            State::Tls(conn) => conn.peer_certificates().filter(|c| !c.is_empty()),
            State::Plain(_) => None,
        }
    }

    /// The subject of the client's certificate (`CN=alice, O=Example`), for logs.
    pub fn peer_subject(&self) -> Option<String> {
        subject::subject(self.peer_certificates()?.first()?)
    }

    /// The server name the client asked for (SNI), if it sent one.
    pub fn server_name(&self) -> Option<&str> {
        match &self.state {
            State::Tls(conn) => conn.server_name(),
            State::Plain(_) => None,
        }
    }

    /// The application protocol negotiated with ALPN, if any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        match &self.state {
            State::Tls(conn) => conn.alpn_protocol(),
            State::Plain(_) => None,
        }
    }

    /// Checks the first byte the client sends: it must open a TLS handshake record. Switches
    /// a plain-first stream to TLS when it does (a `handshake_first` client).
    fn check_first_byte(&mut self, socket_in: &[u8]) -> Result<(), TransportError> {
        let Some(&first_byte) = socket_in.first() else {
            return Ok(());
        };
        if self.first_byte_checked {
            return Ok(());
        }
        self.first_byte_checked = true;
        if first_byte != HANDSHAKE_RECORD {
            return Err(TransportError::PlainTextOnTlsPort { first_byte });
        }
        self.start_tls()
    }

    /// Hands the decrypted bytes rustls holds to `sink`; returns whether it kept some.
    fn drain_plaintext(
        conn: &mut ServerConnection,
        sink: &mut Sink<'_>,
    ) -> Result<bool, TransportError> {
        let mut reader = conn.reader();
        loop {
            let chunk = match reader.fill_buf() {
                Ok(chunk) => chunk,
                // No plaintext now, and no close_notify yet.
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(TransportError::TlsBuffer(e)),
            };
            if chunk.is_empty() {
                // Closed cleanly and drained.
                return Ok(false);
            }
            let offered = chunk.len();
            let taken = sink(chunk)?;
            reader.consume(taken);
            if taken < offered {
                return Ok(true);
            }
        }
    }
}

impl ByteStream for TlsStream {
    fn read_into(
        &mut self,
        socket_in: &[u8],
        sink: &mut Sink<'_>,
    ) -> Result<StreamRead, TransportError> {
        self.check_first_byte(socket_in)?;
        let State::Tls(conn) = &mut self.state else {
            // Only reachable with no bytes: a first byte either started TLS or failed.
            return Ok(StreamRead::default());
        };
        let mut input = socket_in;
        let mut out = StreamRead::default();
        loop {
            if Self::drain_plaintext(conn, sink)? {
                // The layer above is full: feed rustls nothing more (its plaintext buffer
                // is bounded) until it is drained.
                out.again = true;
                break;
            }
            if input.is_empty() {
                break;
            }
            // Never with an empty slice: rustls takes a read of 0 bytes as the end of the
            // stream.
            let taken = conn
                .read_tls(&mut input)
                .map_err(TransportError::TlsBuffer)?;
            if taken == 0 {
                // rustls takes nothing after the peer's close_notify: what follows it is
                // ignored (RFC 8446, section 6.1), not offered again.
                input = &[];
                out.peer_closed = true;
                break;
            }
            let io = conn.process_new_packets()?;
            out.peer_closed |= io.peer_has_closed();
        }
        out.consumed = socket_in.len() - input.len();
        if !self.handshake_reported && !conn.is_handshaking() {
            self.handshake_reported = true;
            out.handshake_done = true;
        }
        Ok(out)
    }

    fn send(&mut self, parts: &[&[u8]], socket_out: &mut Vec<u8>) -> Result<(), TransportError> {
        let conn = match &mut self.state {
            State::Plain(plain) => return plain.send(parts, socket_out),
            State::Tls(conn) => conn,
        };
        let mut storage: [IoSlice<'_>; 4] = [IoSlice::new(&[]); 4];
        let mut slices: &mut [IoSlice<'_>] = if parts.len() <= storage.len() {
            for (slot, part) in storage.iter_mut().zip(parts) {
                *slot = IoSlice::new(part);
            }
            &mut storage[..parts.len()]
        } else {
            // More parts than the stack array holds: never from this crate (at most two: a
            // frame header and its payload); send them one by one.
            for part in parts {
                self.send(&[part], socket_out)?;
            }
            return Ok(());
        };
        while !slices.is_empty() {
            let written = conn
                .writer()
                .write_vectored(slices)
                .map_err(TransportError::TlsBuffer)?;
            IoSlice::advance_slices(&mut slices, written);
            // Nothing taken: before the handshake, the unsent plaintext is at its limit
            // (an error); after it, the record buffer is full and the drain below makes
            // room.
            if written == 0 && !slices.is_empty() && conn.is_handshaking() {
                return Err(TransportError::OutputFull {
                    max: self.limits.max_unsent_plaintext,
                });
            }
            drain_records(conn, socket_out)?;
        }
        Ok(())
    }

    fn queue(&mut self, bytes: &[u8]) -> Result<(), TransportError> {
        match &mut self.state {
            State::Plain(plain) => plain.queue(bytes)?,
            State::Tls(conn) => {
                let mut rest = bytes;
                while !rest.is_empty() {
                    let written = conn
                        .writer()
                        .write(rest)
                        .map_err(TransportError::TlsBuffer)?;
                    if written == 0 {
                        return Err(TransportError::OutputFull {
                            max: self.limits.max_unsent_plaintext,
                        });
                    }
                    rest = &rest[written..];
                }
            }
        }
        Ok(())
    }

    fn take_pending(&mut self, socket_out: &mut Vec<u8>) -> Result<(), TransportError> {
        match &mut self.state {
            State::Plain(plain) => plain.take_pending(socket_out),
            State::Tls(conn) => drain_records(conn, socket_out),
        }
    }

    fn has_pending(&self) -> bool {
        match &self.state {
            State::Plain(plain) => plain.has_pending(),
            State::Tls(conn) => conn.wants_write(),
        }
    }

    fn close(&mut self) {
        if let State::Tls(conn) = &mut self.state {
            conn.send_close_notify();
        }
    }

    fn is_ready(&self) -> bool {
        self.is_handshake_complete()
    }
}

/// Moves every TLS record rustls has ready into `socket_out`.
fn drain_records(
    conn: &mut ServerConnection,
    socket_out: &mut Vec<u8>,
) -> Result<(), TransportError> {
    while conn.wants_write() {
        conn.write_tls(socket_out)
            .map_err(TransportError::TlsBuffer)?;
    }
    Ok(())
}
