//! What the bridge publishes into its broker without a socket: imports go straight to a
//! worker's shard, as if published there.
//!
//! Owns: [`Injected`], one message for the broker, and the [`Inject`] trait the broker
//! implements (its mesh of workers). The bridge's importer hands over batches; the broker
//! routes them like any publish (stored, caught up, prioritised, drop-noticed), from no
//! connection.
//!
//! Never: carries what needs an answer (an acknowledgement, a message id to dedupe): stream
//! imports go through the bridge's local client, which has both.

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
}
