//! Drivers: how the harness talks to a broker, one module per wire protocol.
//!
//! Owns: the [`Driver`] and [`Connection`] traits every scenario is written against, and
//! [`DriverError`]. Today there is one driver, [`nats::NatsDriver`], for the text (NATS)
//! port, so the same scenario runs against `ternd` and a real `nats-server`. A driver for
//! Tern's binary port is a new module here implementing the same two traits; no scenario
//! changes.
//!
//! Contract of a [`Connection`]: it is used by one thread at a time. `publish` only queues
//! bytes (writes are batched); `flush` writes them; `sync` flushes and waits until the
//! broker has processed everything sent before it. `receive` hands each delivered payload
//! to a callback and answers the broker's keep-alives itself.
//!
//! Never: a client library. Drivers speak the protocol themselves, with Tern's own codec.

pub mod nats;

use std::io;
use std::time::Duration;

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
    /// The broker sent an error (e.g. `Slow Consumer`); the text as the broker sent it.
    #[error("broker error: {0}")]
    Server(String),
    /// The broker's bytes did not parse.
    #[error("protocol: {0}")]
    Protocol(#[from] DecodeError),
    /// The broker did not answer in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
}

/// A way to open connections to one broker.
pub trait Driver: Send + Sync {
    /// The wire protocol, for reports (`"text"`).
    fn protocol(&self) -> &'static str;
    /// Opens a connection and completes the handshake: when this returns, the broker has
    /// accepted the connection and answered a round trip.
    fn connect(&self) -> Result<Box<dyn Connection>, DriverError>;
}

/// One open connection to a broker.
pub trait Connection: Send {
    /// Subscribes to `subject` (in queue group `queue`, if any). Queued like a publish.
    fn subscribe(&mut self, subject: &str, queue: Option<&str>) -> Result<(), DriverError>;
    /// Queues one message; written when the batch is large enough or on `flush`.
    fn publish(&mut self, subject: &str, payload: &[u8]) -> Result<(), DriverError>;
    /// Writes everything queued.
    fn flush(&mut self) -> Result<(), DriverError>;
    /// Flushes, then waits (at most `timeout`) until the broker has processed every
    /// operation sent before. Deliveries that arrive meanwhile are discarded.
    fn sync(&mut self, timeout: Duration) -> Result<(), DriverError>;
    /// Waits at most `wait` for bytes, then hands every whole delivered payload to
    /// `on_message`. Returns how many it handed over (0 when the wait ran out).
    fn receive(
        &mut self,
        wait: Duration,
        on_message: &mut dyn FnMut(&[u8]),
    ) -> Result<usize, DriverError>;
}
