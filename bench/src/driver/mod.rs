//! Drivers: how the harness talks to a broker, one module per wire protocol.
//!
//! Owns: the [`Driver`] and [`Connection`] traits every scenario is written against, and
//! [`DriverError`]. Two drivers implement them: [`nats::NatsDriver`] for the text (NATS)
//! port, so the same scenario runs against `ternd` and a real `nats-server`, and
//! [`binary::BinaryDriver`] for Tern's binary port (4224). Both share [`socket`]'s blocking
//! socket with its write batch and read buffer, over the transport a [`Dial`] names
//! ([`dial`]: plain TCP, TLS through [`tls`], WebSocket through [`websocket`], or both).
//! [`stalled`] holds a subscribed connection that is never read again (the `stuck`
//! scenario's stuck consumer; plain TCP only).
//!
//! Contract of a [`Connection`]: it is used by one thread at a time. `publish` only queues
//! bytes (writes are batched); `flush` writes them; `sync` flushes and waits until the
//! broker has processed everything sent before it. `receive` hands each delivered payload
//! to a callback and answers the broker's keep-alives itself.
//!
//! Never: a client library. Drivers speak the protocol themselves, with Tern's own codec.

pub mod binary;
pub mod dial;
pub mod nats;
mod socket;
pub mod stalled;
mod tls;
mod websocket;

pub use dial::{Dial, TlsClient, Transport};
pub use socket::{HANDSHAKE_TIMEOUT, READ_MAX, READ_MIN, WRITE_BATCH, WRITE_TIMEOUT};
pub use stalled::Stalled;

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::Duration;

use tern_protocol::binary::{BinaryError, EncodeError, ErrorCode};
use tern_protocol::text::DecodeError;

/// Why a driver operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The socket failed (connect, read or write).
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// The broker closed the connection.
    #[error("connection closed by the broker")]
    Closed,
    /// The broker sent an error: the text protocol's `-ERR` (no code) or the binary
    /// protocol's `ERROR` frame (with its code); the text as the broker sent it.
    #[error("broker error{}: {message}", code.map(|c| format!(" 0x{:04x} ({c:?})", c.to_u16())).unwrap_or_default())]
    Server {
        /// The binary protocol's error code; `None` on the text port.
        code: Option<ErrorCode>,
        /// The broker's text.
        message: String,
    },
    /// The broker's bytes did not parse (text protocol).
    #[error("protocol: {0}")]
    Protocol(#[from] DecodeError),
    /// The broker's frames did not parse (binary protocol).
    #[error("binary protocol: {0}")]
    Binary(#[from] BinaryError),
    /// A frame could not be encoded (a subject longer than the binary protocol allows).
    #[error("cannot encode: {0}")]
    Encode(#[from] EncodeError),
    /// The broker sent something valid that this driver never asked for (e.g. a second
    /// `WELCOME`, an acknowledgement of a publish that asked for none).
    #[error("unexpected {0} from the broker")]
    Unexpected(&'static str),
    /// The broker did not answer in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// The protocol cannot do what was asked (catch-up on the text protocol).
    #[error("not supported by this protocol: {0}")]
    Unsupported(&'static str),
    /// TLS failed: its configuration, the handshake (an untrusted certificate, no common
    /// version), or a bad record; rustls's text.
    #[error("TLS: {0}")]
    Tls(String),
    /// The WebSocket upgrade was refused, a server frame broke RFC 6455, or the server
    /// sent a close frame (its code and reason).
    #[error("WebSocket: {0}")]
    WebSocket(String),
}

/// A wire protocol the harness speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// The NATS-compatible text protocol (`ternd`'s port 4222, or `nats-server`).
    Text,
    /// Tern's binary protocol (`ternd`'s port 4224).
    Binary,
}

impl Protocol {
    /// Its name in reports (`text`, `binary`).
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Text => "text",
            Protocol::Binary => "binary",
        }
    }

    /// `ternd`'s default address for it.
    pub fn default_addr(self) -> SocketAddr {
        match self {
            Protocol::Text => SocketAddr::from(([127, 0, 0, 1], 4222)),
            Protocol::Binary => SocketAddr::from(([127, 0, 0, 1], 4224)),
        }
    }

    /// A driver for the broker at `addr` over plain TCP, introducing itself as `name`.
    pub fn driver(self, addr: SocketAddr, name: &str) -> Box<dyn Driver> {
        self.driver_via(Dial::tcp(addr), name)
    }

    /// A driver for the broker `dial` names, over its transport.
    pub fn driver_via(self, dial: Dial, name: &str) -> Box<dyn Driver> {
        match self {
            Protocol::Text => Box::new(nats::NatsDriver::via(dial, name)),
            Protocol::Binary => Box::new(binary::BinaryDriver::via(dial, name)),
        }
    }

    /// The path `ternd`'s WebSocket port serves it on (`/`, as nats-server's; `/tern`).
    pub fn websocket_path(self) -> &'static str {
        match self {
            Protocol::Text => "/",
            Protocol::Binary => "/tern",
        }
    }
}

/// A way to open connections to one broker.
pub trait Driver: Send + Sync {
    /// The wire protocol, for reports (`"text"`, `"binary"`).
    fn protocol(&self) -> &'static str;
    /// What carries it.
    fn transport(&self) -> Transport {
        Transport::Tcp
    }
    /// Opens a connection and completes the handshake: when this returns, the broker has
    /// accepted the connection and answered a round trip.
    fn connect(&self) -> Result<Box<dyn Connection>, DriverError>;
    /// [`Driver::connect`] for a subscriber: the same broker, unless the run measures a
    /// path between two ([`Split`]).
    fn connect_subscriber(&self) -> Result<Box<dyn Connection>, DriverError> {
        self.connect()
    }
    /// [`Driver::connect`] introducing itself as `name` instead of the driver's name, with
    /// a user and password when `credentials` are given (the broker's identity of the
    /// connection: presence's member). Only the text protocol has it.
    fn connect_as(
        &self,
        _name: &str,
        _credentials: Option<(&str, &str)>,
    ) -> Result<Box<dyn Connection>, DriverError> {
        Err(DriverError::Unsupported(
            "a per-connection name and password needs the text protocol",
        ))
    }
    /// Opens a connection whose receive buffer is `recv_buffer` bytes (set before
    /// connecting, so its TCP window is that small from the start), subscribes it to
    /// `subject` and waits for the broker's round trip; from then on nothing reads it
    /// (see [`Stalled`]): a consumer that is stuck.
    fn connect_stalled(&self, subject: &str, recv_buffer: usize) -> Result<Stalled, DriverError>;
}

/// Publishers on one broker, subscribers on another: a path across a cluster or a
/// bridge (`--subscribe-server`). Every other connection goes to the publishers' broker.
pub struct Split {
    /// The publishers' broker.
    pub publish: Box<dyn Driver>,
    /// The subscribers'.
    pub subscribe: Box<dyn Driver>,
}

impl Driver for Split {
    fn protocol(&self) -> &'static str {
        self.publish.protocol()
    }
    fn transport(&self) -> Transport {
        self.publish.transport()
    }
    fn connect(&self) -> Result<Box<dyn Connection>, DriverError> {
        self.publish.connect()
    }
    fn connect_subscriber(&self) -> Result<Box<dyn Connection>, DriverError> {
        self.subscribe.connect()
    }
    fn connect_as(
        &self,
        name: &str,
        credentials: Option<(&str, &str)>,
    ) -> Result<Box<dyn Connection>, DriverError> {
        self.publish.connect_as(name, credentials)
    }
    fn connect_stalled(&self, subject: &str, recv_buffer: usize) -> Result<Stalled, DriverError> {
        self.subscribe.connect_stalled(subject, recv_buffer)
    }
}

/// One open connection to a broker.
pub trait Connection: Send {
    /// Subscribes to `subject` (in queue group `queue`, if any). Queued like a publish.
    fn subscribe(&mut self, subject: &str, queue: Option<&str>) -> Result<(), DriverError>;
    /// Subscribes to `subject` from the start of what the broker's log holds (the binary
    /// protocol's resume from an empty token), then live. Queued like a publish. Only the
    /// binary protocol has catch-up.
    fn subscribe_from_start(&mut self, _subject: &str) -> Result<(), DriverError> {
        Err(DriverError::Unsupported(
            "catch-up needs ternd's binary protocol",
        ))
    }
    /// Queues one message with a reply subject (a request); written like a publish. Only
    /// the text protocol has reply subjects.
    fn request(
        &mut self,
        _subject: &str,
        _reply: &str,
        _payload: &[u8],
    ) -> Result<(), DriverError> {
        Err(DriverError::Unsupported(
            "reply subjects need the text protocol",
        ))
    }
    /// Queues one message; written when the batch is large enough or on `flush`.
    fn publish(&mut self, subject: &str, payload: &[u8]) -> Result<(), DriverError>;
    /// Writes everything queued.
    fn flush(&mut self) -> Result<(), DriverError>;
    /// Flushes, then waits (at most `timeout`) until the broker has processed every
    /// operation sent before. Deliveries that arrive before the broker's answer are
    /// discarded; whatever follows the answer stays buffered for `receive`.
    fn sync(&mut self, timeout: Duration) -> Result<(), DriverError>;
    /// Waits at most `wait` for bytes, then hands every whole delivered payload to
    /// `on_message`. Returns how many it handed over (0 when the wait ran out).
    fn receive(
        &mut self,
        wait: Duration,
        on_message: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, DriverError>;
    /// Messages the broker said it dropped for this connection's subscriptions (the
    /// binary protocol's `DROP_NOTICE`; on the text port, `ternd`'s `$TERN.DROPPED`
    /// messages, which are not handed to `receive`'s callback).
    fn dropped(&self) -> u64;
    /// The socket's descriptor, so a scenario can multiplex many connections on one
    /// thread with `poll(2)` and call [`Connection::receive`] only on readable ones. The
    /// caller never reads, writes or closes it.
    fn raw_fd(&self) -> RawFd;
}
