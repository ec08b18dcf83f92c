//! What the bridge hands its broker without the network: imports go straight to a
//! worker's shard, as if published there; an export's local connection is one end of a
//! Unix socket pair the broker serves as a binary-port connection.
//!
//! Owns: [`Injected`], one message for the broker, and the [`Inject`] trait the broker
//! implements (its mesh of workers). The bridge's importer hands over batches; the broker
//! routes them like any publish (stored, caught up, prioritised, drop-noticed), from no
//! connection. An exporter hands over its socket's other end ([`Inject::attach`]).
//!
//! Never: carries what needs an answer (an acknowledgement, a message id to dedupe): stream
//! imports go through the bridge's local client, which has both.

use std::os::unix::net::UnixStream;
use std::time::Duration;

use bytes::Bytes;

use crate::Route;

/// One message for the broker.
#[derive(Debug, Clone)]
pub struct Injected {
    pub subject: Bytes,
    pub reply: Option<Bytes>,
    /// The header block (`Tern-Origin` always among it).
    pub headers: Bytes,
    pub payload: Bytes,
    /// 0 to 7.
    pub priority: u8,
    /// For some local subscribers only (a copy from upstream), or for all.
    pub route: Option<Route>,
}

/// The broker's side: where injected messages go.
pub trait Inject: Send + Sync {
    /// Hands `batch` to the broker, in order, waiting up to `timeout` for room; false when
    /// there was none (nothing was taken).
    fn publish(&self, batch: Vec<Injected>, timeout: Duration) -> bool;

    /// Whether a batch handed over now would be taken without waiting (a hint: another
    /// sender may take the room first).
    fn has_room(&self) -> bool;

    /// Hands the broker `sock`, to serve as a connection to its binary port (without TLS:
    /// both ends are in this process), on a worker chosen by `hint`; false when the broker
    /// could not take it within `timeout` (it is closed).
    fn attach(&self, sock: UnixStream, hint: usize, timeout: Duration) -> bool;
}
