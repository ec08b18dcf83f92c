//! A connection's transport when it is not plain TCP: TLS, WebSocket, or WebSocket over
//! TLS, between its socket and its session.
//!
//! Owns: the connection's [`Transport`] (`tern-transport`, sans-IO), the socket bytes it
//! has not taken yet, the encoded bytes waiting for the socket, and the handshake's state
//! and deadline. It reads the socket and decodes into the session's read buffer
//! ([`Link::read`]), and encodes the session's outbound queue and writes it
//! ([`Link::write`]), following the contract in `transport/src/lib.rs`. It is part of the
//! connection's I/O layer (`io.rs`), which alone calls it; the session never sees it.
//!
//! A plain connection has no `Link` (`Io`'s is `None`): its socket feeds the read buffer
//! directly and its outbound queue is written with one `writev`, paying nothing for this
//! module.
//!
//! Never: parses a protocol, touches another connection, or blocks. What it holds beyond
//! the transport's own state is bounded: the socket bytes of one read, and at most
//! [`ENCODE_BATCH`] encoded bytes (plus one batch's framing) waiting for the socket.

use std::io::{self, IoSlice, Write};
use std::time::Instant;

use bytes::BytesMut;
use tern_protocol::binary::Welcome;
use tern_protocol::text::ServerInfo;
use tern_transport::{CloseCode, ReadOutcome, Transport, TransportError};

use super::socket::Socket;
use super::CloseReason;
use crate::outbound::Outbound;
use crate::stats::TransportFailure;

/// The WebSocket path of the binary protocol; every other accepted path is the text one.
pub(crate) const BINARY_PATH: &str = "/tern";

/// Application bytes encoded per step before the socket gets them: one TLS record's worth
/// of plaintext several times over, and one WebSocket frame.
pub(super) const ENCODE_BATCH: usize = 64 * 1024;

/// An idle connection's buffers are given back past this capacity (a busy one keeps them).
const KEEP_CAPACITY: usize = 4096;

/// What the session does when the transport becomes ready.
pub(crate) enum Greeting {
    /// Nothing (a binary session waits for the client's preface; a text session whose
    /// `INFO` went out in plain text before TLS started).
    None,
    /// Send this `INFO` (TLS with `handshake_first` on the text port).
    Text(Box<ServerInfo>),
    /// A WebSocket: the upgrade's path picks the protocol, `/` text (send the `INFO`),
    /// `/tern` binary.
    ByPath(Box<(ServerInfo, Welcome)>),
}

/// What kind of transport, for logs and `/connz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkKind {
    Tls,
    WebSocket,
    WebSocketTls,
}

impl LinkKind {
    pub fn name(self) -> &'static str {
        match self {
            LinkKind::Tls => "tls",
            LinkKind::WebSocket => "websocket",
            LinkKind::WebSocketTls => "websocket+tls",
        }
    }

    fn is_tls(self) -> bool {
        matches!(self, LinkKind::Tls | LinkKind::WebSocketTls)
    }
}

/// What one [`Link::read`] did.
#[derive(Debug, Default)]
pub(crate) struct Read {
    /// Bytes taken from the socket, or from what an earlier read left (at least 1 then):
    /// what the read budget counts. 0: the peer closed the socket.
    pub taken: usize,
    /// The transport became ready in this read.
    pub ready: bool,
}

/// A transport failure: the reason to close with, and its counter.
pub(crate) struct Failure {
    pub reason: CloseReason,
    pub kind: TransportFailure,
}

pub(crate) struct Link {
    transport: Transport,
    kind: LinkKind,
    /// Socket bytes the transport has not taken.
    sock_in: Vec<u8>,
    /// The transport stopped early: give it `sock_in` again before reading the socket.
    again: bool,
    /// Application bytes decoded by the transport, on their way to the read buffer.
    app_in: Vec<u8>,
    /// Application bytes gathered for one encode step, when the outbound queue hands over
    /// more than one run of bytes (one run is encoded where it is).
    app_out: Vec<u8>,
    /// Encoded bytes for the socket, and how many of them were written.
    sock_out: Vec<u8>,
    sent: usize,
    ready: bool,
    /// The peer closed the transport (close frame, close_notify).
    peer_closed: bool,
    /// The transport failed or was closed: nothing more is encoded.
    failed: bool,
    /// When the handshake must be done.
    deadline: Instant,
    /// What to send when it becomes ready.
    greeting: Greeting,
}

impl Link {
    pub fn new(
        transport: Transport,
        kind: LinkKind,
        deadline: Instant,
        greeting: Greeting,
    ) -> Self {
        let ready = transport.is_ready();
        Link {
            transport,
            kind,
            sock_in: Vec::new(),
            again: false,
            app_in: Vec::new(),
            app_out: Vec::new(),
            sock_out: Vec::new(),
            sent: 0,
            ready,
            peer_closed: false,
            failed: false,
            deadline,
            greeting,
        }
    }

    pub fn kind(&self) -> LinkKind {
        self.kind
    }

    /// True once the session may send: the handshake (TLS) or upgrade (WebSocket) is done.
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The subject of the client certificate presented over TLS (`CN=alice, O=...`).
    pub fn peer_subject(&self) -> Option<String> {
        self.transport.tls_session().and_then(|t| t.peer_subject())
    }

    /// The path of an accepted WebSocket upgrade.
    pub fn websocket_path(&self) -> Option<&str> {
        self.transport.websocket_upgrade().map(|u| u.path.as_str())
    }

    /// True once the peer closed the transport (close frame, close_notify).
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// True while a greeting waits for the transport to become ready.
    pub fn has_greeting(&self) -> bool {
        !matches!(self.greeting, Greeting::None)
    }

    /// The greeting, once (when the transport becomes ready).
    pub fn take_greeting(&mut self) -> Greeting {
        std::mem::replace(&mut self.greeting, Greeting::None)
    }

    /// Encoded bytes not yet written to the socket.
    pub fn unsent(&self) -> usize {
        self.sock_out.len() - self.sent
    }

    /// The text port with TLS after a plain `INFO`: encodes what `out` holds (the `INFO`)
    /// in plain text, then starts TLS; the client's handshake comes next.
    pub fn send_plain_then_start_tls(&mut self, out: &mut Outbound) -> Result<(), Failure> {
        out.write_to(&mut Encoder { link: self })
            .map_err(|e| self.fail_with(TransportError::TlsBuffer(e)))?;
        self.transport.start_tls().map_err(|e| self.fail_with(e))
    }

    /// Reads the socket (unless the transport has bytes of an earlier read to go through
    /// first) and appends what the transport decodes to `rbuf`. `room` is how much one
    /// socket read takes at most. `WouldBlock` and other socket errors are returned as
    /// they are; a transport error is a [`Failure`], with what the transport queued for
    /// the peer (alert, close frame, HTTP error) waiting in the socket's output.
    pub fn read(
        &mut self,
        sock: &mut Socket,
        room: usize,
        rbuf: &mut BytesMut,
    ) -> io::Result<Result<Read, Failure>> {
        let mut taken = 0;
        if !self.again {
            let n = read_into(sock, &mut self.sock_in, room)?;
            if n == 0 {
                return Ok(Ok(Read::default()));
            }
            taken = n;
        }
        let outcome = match self.transport.read(&self.sock_in, &mut self.app_in) {
            Ok(o) => o,
            Err(e) => return Ok(Err(self.fail_with(e))),
        };
        let ReadOutcome {
            consumed,
            again,
            wants_write,
            handshake_done,
            peer_closed,
        } = outcome;
        self.sock_in.drain(..consumed);
        self.again = again;
        if self.again {
            taken = taken.max(consumed).max(1);
        }
        // A buffer grown for a burst goes once it is empty and reads no longer fill it.
        let idle = self.sock_in.is_empty() && !self.again && taken < room;
        if idle && self.sock_in.capacity() > KEEP_CAPACITY {
            self.sock_in = Vec::new();
        }
        rbuf.extend_from_slice(&self.app_in);
        self.app_in.clear();
        // Kept while reads fill their room: given back after each one, a busy connection
        // grew it again by doubling on every read (2 % of a TLS run's CPU in reallocations).
        if idle && self.app_in.capacity() > KEEP_CAPACITY {
            self.app_in = Vec::new();
        }
        if wants_write {
            if let Err(e) = self.transport.pending_socket_out(&mut self.sock_out) {
                return Ok(Err(self.fail_with(e)));
            }
        }
        let ready = handshake_done && !self.ready;
        self.ready |= handshake_done;
        self.peer_closed |= peer_closed.is_some();
        Ok(Ok(Read { taken, ready }))
    }

    /// Writes what was encoded, then encodes from `out` and writes, until `out` is empty
    /// or the socket takes no more. Returns the bytes taken from `out` (encoded, and then
    /// written or waiting here). `WouldBlock` is not an error: what is left waits.
    pub fn write(&mut self, out: &mut Outbound, sock: &mut Socket) -> io::Result<usize> {
        let mut taken = 0;
        loop {
            if !self.send(sock)? {
                return Ok(taken);
            }
            if out.is_empty() || !self.ready || self.failed {
                self.release_output();
                return Ok(taken);
            }
            let n = out.write_to(&mut Encoder { link: self })?;
            if n == 0 {
                return Ok(taken);
            }
            taken += n;
        }
    }

    /// Writes `sock_out` as far as the socket takes it. True when all of it went.
    fn send(&mut self, sock: &mut Socket) -> io::Result<bool> {
        while self.sent < self.sock_out.len() {
            match sock.write(&self.sock_out[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.sock_out.clear();
        self.sent = 0;
        Ok(true)
    }

    fn release_output(&mut self) {
        if self.sock_out.capacity() > KEEP_CAPACITY {
            self.sock_out = Vec::new();
        }
        if self.app_out.capacity() > KEEP_CAPACITY {
            self.app_out = Vec::new();
        }
    }

    /// Gives back the capacity of every buffer that is empty now, and the transport's
    /// expanded TLS keys. The ping timer calls this (every 100 ms): an idle connection
    /// keeps none of what its handshake or its last burst grew (1.7 KiB of buffers, 1 KiB
    /// of keys for a TLS connection), a busy one reallocates at most a few times a second.
    pub fn shrink(&mut self) {
        self.transport.shrink();
        if self.unsent() == 0 {
            self.sock_out = Vec::new();
            self.sent = 0;
        }
        if self.sock_in.is_empty() && !self.again {
            self.sock_in = Vec::new();
        }
        self.app_in = Vec::new();
        self.app_out = Vec::new();
    }

    /// The connection closes: says so in the transport (a WebSocket close frame with a
    /// code for `reason`, a TLS close_notify) and writes what is waiting, once, without
    /// blocking.
    pub fn close(&mut self, reason: &CloseReason, sock: &mut Socket) {
        if !self.failed && self.ready {
            let code = close_code(reason);
            let mut text = reason.to_string();
            // A close frame's payload is at most 125 bytes: the code and 123 of reason.
            let mut cut = text.len().min(123);
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            if self.transport.close(code, &text).is_ok() {
                let _ = self.transport.pending_socket_out(&mut self.sock_out);
            }
        }
        self.failed = true;
        let _ = self.send(sock);
    }

    /// Marks the transport failed, moves what it queued for the peer to the socket's
    /// output, and says why.
    fn fail_with(&mut self, e: TransportError) -> Failure {
        self.failed = true;
        let _ = self.transport.pending_socket_out(&mut self.sock_out);
        let kind = match &e {
            TransportError::PlainTextOnTlsPort { .. } => TransportFailure::PlainText,
            TransportError::Tls(_)
            | TransportError::TlsBuffer(_)
            | TransportError::OutputFull { .. }
                if !self.ready =>
            {
                TransportFailure::TlsHandshake
            }
            TransportError::Tls(_)
            | TransportError::TlsBuffer(_)
            | TransportError::OutputFull { .. } => TransportFailure::Tls,
            TransportError::Handshake(_) => TransportFailure::WebSocketUpgrade,
            _ if self.kind.is_tls() && !self.ready => TransportFailure::TlsHandshake,
            _ => TransportFailure::WebSocket,
        };
        Failure {
            reason: CloseReason::Transport(e.to_string()),
            kind,
        }
    }
}

/// The WebSocket close code for why the server closes a connection, as nats-server picks
/// them.
fn close_code(reason: &CloseReason) -> CloseCode {
    match reason {
        CloseReason::ClientClosed => CloseCode::NORMAL,
        CloseReason::ServerShutdown => CloseCode::GOING_AWAY,
        CloseReason::ProtocolError(_) => CloseCode::PROTOCOL_ERROR,
        CloseReason::SlowConsumer
        | CloseReason::StaleConnection
        | CloseReason::HandshakeTimeout(_)
        | CloseReason::Unauthorized(_)
        | CloseReason::Expired => CloseCode::POLICY_VIOLATION,
        CloseReason::Io(_) | CloseReason::Transport(_) => CloseCode::INTERNAL_ERROR,
    }
}

/// One socket read appended to `buf`, at most `room` bytes.
fn read_into(sock: &mut Socket, buf: &mut Vec<u8>, room: usize) -> io::Result<usize> {
    buf.reserve(room);
    let spare = buf.spare_capacity_mut();
    let len = spare.len().min(room);
    let n = sock.read_spare(&mut spare[..len])?;
    // SAFETY: the read initialised the first `n <= len` bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// `Outbound::write_to`'s writer for a link: gathers what it is given (up to
/// [`ENCODE_BATCH`] per call) and encodes it as one unit (TLS records, one WebSocket
/// frame) into the socket's output. Reports `WouldBlock` once a batch waits there, so that
/// what is encoded and unsent stays bounded.
struct Encoder<'a> {
    link: &'a mut Link,
}

impl Write for Encoder<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let link = &mut *self.link;
        if link.unsent() >= ENCODE_BATCH {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut filled = bufs.iter().filter(|b| !b.is_empty());
        if let (Some(only), None) = (filled.next(), filled.next()) {
            // One run of bytes (the outbound queue's tail, the common case): encoded where
            // it is, not gathered first.
            let take = only.len().min(ENCODE_BATCH);
            link.transport
                .write(&only[..take], &mut link.sock_out)
                .map_err(|e| io::Error::other(e.to_string()))?;
            return Ok(take);
        }
        link.app_out.clear();
        for b in bufs {
            let room = ENCODE_BATCH - link.app_out.len();
            if room == 0 {
                break;
            }
            link.app_out.extend_from_slice(&b[..b.len().min(room)]);
        }
        if link.app_out.is_empty() {
            return Ok(0);
        }
        link.transport
            .write(&link.app_out, &mut link.sock_out)
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(link.app_out.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
