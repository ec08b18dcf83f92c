//! A connection's I/O layer: its socket and, when it is not plain TCP, its transport
//! ([`Link`]: TLS, WebSocket), beside the session that they feed.
//!
//! Owns: [`Io`], every raw I/O call a connection makes: reading the socket into the
//! session's read buffer (directly, or decoded by the link), writing the session's
//! outbound queue (one `writev`, or encoded by the link), the one plain-text write a
//! client that spoke plain text to a TLS port gets, and the transport's close. After each,
//! `Conn` (`mod.rs`) tells the session what happened: bytes read ([`Input`]), the transport
//! ready or failed, bytes written, an error.
//!
//! The session never calls this module, and this module decides nothing a session
//! decides: how much a read asks for, what a greeting says, which reason closes the
//! connection, what a plain-text client is told. It is handed those.
//!
//! [`Transmit`] is the bytes-out end a connection's output is driven through: `Io` in the
//! broker, a plain buffer in unit tests (`session_tests.rs`), which so drive a session with
//! bytes in and bytes out and no socket.
//!
//! Never: parses a protocol, buffers beyond what the link holds, or blocks.

use std::io::{self, Write};
use std::time::Instant;

use bytes::BytesMut;

use super::link::{Failure, Greeting, Link, LinkKind, BINARY_PATH};
use super::socket::Socket;
use super::CloseReason;
use crate::outbound::Outbound;

/// Where a connection's outbound queue goes: the I/O layer ([`Io`]), or a test's buffer.
pub(crate) trait Transmit {
    /// Writes from `out` as far as the other end takes it without blocking; returns the
    /// bytes taken from `out` (written, or encoded and waiting in the transport).
    /// `WouldBlock` is not an error: what is left waits.
    fn transmit(&mut self, out: &mut Outbound) -> io::Result<usize>;

    /// Bytes taken from the outbound queue and not written yet (encoded by a transport).
    fn unsent(&self) -> usize;

    /// Bytes written and not yet taken by the peer (the kernel's send queue): how far the
    /// client's reading lags what it was given. 0 where it cannot be told.
    fn unread(&self) -> usize;
}

/// What one read did, for the session to hear.
pub(crate) enum Input {
    /// `taken` bytes came from the socket (0: the peer closed it) out of the `room` the
    /// read offered, and what they decode to is in the read buffer.
    Read { taken: usize, room: usize },
    /// As `Read`, and the transport became ready in this read.
    Ready {
        taken: usize,
        room: usize,
        ready: Ready,
    },
    /// The transport failed; what it queued for the peer (alert, close frame, HTTP error)
    /// is waiting to be written.
    Failed { failure: Failure, kind: LinkKind },
}

/// A transport that just became ready: what the session needs to start.
pub(crate) struct Ready {
    pub kind: LinkKind,
    /// What the session was to do then (`transports.rs` chose it with the link).
    pub greeting: Greeting,
    /// A WebSocket upgrade asked for the binary protocol's path.
    pub binary_path: bool,
}

/// The transport's handshake, while it is not done: what the ping timer judges.
pub(crate) struct Handshake {
    pub kind: LinkKind,
    pub deadline: Instant,
}

/// A connection's socket and its transport.
pub(crate) struct Io {
    sock: Socket,
    /// The transport between socket and session when it is not plain TCP (TLS,
    /// WebSocket); `None` for plain TCP, which reads and writes the socket directly.
    link: Option<Box<Link>>,
}

impl Io {
    pub fn new(sock: Socket, link: Option<Box<Link>>) -> Io {
        Io { sock, link }
    }

    /// An `Io` for a session test that drives its connection with bytes in and out and
    /// never reads or writes this (its in-memory pipe has no other end).
    #[cfg(test)]
    pub fn detached() -> Io {
        Io::new(Socket::Memory(Default::default()), None)
    }

    /// The socket, to (de)register it with the poll; `None` in unit tests.
    pub fn source(&mut self) -> Option<&mut dyn mio::event::Source> {
        self.sock.source()
    }

    pub fn has_link(&self) -> bool {
        self.link.is_some()
    }

    /// What kind of transport, `None` for plain TCP.
    pub fn kind(&self) -> Option<LinkKind> {
        self.link.as_ref().map(|l| l.kind())
    }

    /// The subject of the client certificate presented over TLS.
    pub fn peer_subject(&self) -> Option<String> {
        self.link.as_ref().and_then(|l| l.peer_subject())
    }

    /// True when the transport has a greeting to give once ready.
    pub fn greets_when_ready(&self) -> bool {
        self.link.as_ref().is_some_and(|l| l.has_greeting())
    }

    /// The transport's handshake, while it is not done.
    pub fn handshake(&self) -> Option<Handshake> {
        let link = self.link.as_deref().filter(|l| !l.is_ready())?;
        Some(Handshake {
            kind: link.kind(),
            deadline: link.deadline(),
        })
    }

    /// True once the peer closed the transport (close frame, close_notify).
    pub fn peer_closed(&self) -> bool {
        self.link.as_ref().is_some_and(|l| l.peer_closed())
    }

    /// The text port with TLS after a plain `INFO`: what `out` holds goes in plain text,
    /// then TLS starts. Nothing for a connection without a link.
    pub fn send_plain_then_start_tls(&mut self, out: &mut Outbound) -> Result<(), Failure> {
        match self.link.as_deref_mut() {
            Some(link) => link.send_plain_then_start_tls(out),
            None => Ok(()),
        }
    }

    /// One read from a plain socket into the spare room of `rbuf` (which the session
    /// reserved).
    #[inline]
    pub fn read_plain(&mut self, rbuf: &mut BytesMut) -> io::Result<Input> {
        let spare = rbuf.spare_capacity_mut();
        let room = spare.len();
        let taken = self.sock.read_spare(spare)?;
        // SAFETY: the read initialised the first `taken <= spare.len()` bytes of the spare
        // capacity, which is what `set_len` requires.
        unsafe { rbuf.set_len(rbuf.len() + taken) };
        Ok(Input::Read { taken, room })
    }

    /// One read through the transport: at most `room` socket bytes in, what they decode to
    /// appended to `rbuf`. A transport failure is an [`Input`], not an error; socket errors
    /// (`WouldBlock` among them) are returned as they are.
    pub fn read_link(&mut self, rbuf: &mut BytesMut, room: usize) -> io::Result<Input> {
        let link = self.link.as_deref_mut().expect("a connection with a link");
        let kind = link.kind();
        match link.read(&mut self.sock, room, rbuf)? {
            Ok(read) if read.ready => {
                let ready = Ready {
                    kind,
                    greeting: link.take_greeting(),
                    binary_path: link.websocket_path() == Some(BINARY_PATH),
                };
                Ok(Input::Ready {
                    taken: read.taken,
                    room,
                    ready,
                })
            }
            Ok(read) => Ok(Input::Read {
                taken: read.taken,
                room,
            }),
            Err(failure) => Ok(Input::Failed { failure, kind }),
        }
    }

    /// Writes `said` in plain text, once, without blocking (a client that does not read
    /// gets nothing): what a plain-text client on a TLS port is told.
    pub fn say_plain(&mut self, said: &[u8]) {
        let _ = self.sock.write(said);
    }

    /// The connection closes for `reason`: its transport says so to the peer (a WebSocket
    /// close frame, a TLS close_notify) with one write that does not block. Nothing for a
    /// plain connection.
    pub fn close(&mut self, reason: &CloseReason) {
        if let Some(link) = self.link.as_deref_mut() {
            link.close(reason, &mut self.sock);
        }
    }

    /// The ping timer: the transport gives back what its idle buffers hold.
    pub fn shrink(&mut self) {
        if let Some(link) = self.link.as_deref_mut() {
            link.shrink();
        }
    }
}

impl Transmit for Io {
    #[inline]
    fn transmit(&mut self, out: &mut Outbound) -> io::Result<usize> {
        match self.link.as_deref_mut() {
            None => out.write_to(&mut self.sock),
            Some(link) => link.write(out, &mut self.sock),
        }
    }

    #[inline]
    fn unsent(&self) -> usize {
        self.link.as_ref().map_or(0, |l| l.unsent())
    }

    fn unread(&self) -> usize {
        self.sock.unread()
    }
}
