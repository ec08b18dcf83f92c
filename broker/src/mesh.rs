//! The mesh: how workers talk to each other.
//!
//! Owns: the identities that cross worker boundaries ([`ConnId`], [`SubRef`]), the message
//! value shared by all deliveries ([`Msg`]), the envelopes workers exchange ([`Envelope`]),
//! and the per-turn [`Outbox`] that batches them, one batch per destination per loop turn.
//!
//! Each worker has one bounded inbound queue (`crossbeam-channel`, multi-producer) and one
//! `mio::Waker`. A sender rings the receiver's waker once per batch. One queue per receiver,
//! rather than one per pair of workers, keeps causal order: if sending `a` happens before
//! sending `b`, the receiver sees `a` first, whoever sent them. A client that subscribes to
//! its reply inbox and then publishes a request relies on this: the reply can never overtake
//! the subscription.
//!
//! A full queue is backpressure, not an error: the batch stays in the outbox and the worker
//! stops reading client sockets until it has been sent.
//!
//! Never: blocks, and never drops an envelope while its receiver runs.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::Waker;

/// A connection, named from any worker: its worker, its slot in that worker's slab, and a
/// generation that tells a reused slot from the connection that held it before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ConnId {
    pub worker: u16,
    pub slot: u32,
    pub gen: u32,
}

/// A subscription, named from any worker: its connection, its slot in the connection's
/// subscription slab, and an id unique within the owning worker, so a stale delivery for an
/// unsubscribed (or replaced) subscription is recognised and dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct SubRef {
    pub conn: ConnId,
    pub key: u32,
    pub id: u64,
}

/// One published message. Allocated once per publish and shared (by `Arc`) by every
/// delivery; its payload is one `Bytes`, never copied by the router.
#[derive(Debug)]
pub(crate) struct Msg {
    pub subject: Bytes,
    pub reply: Option<Bytes>,
    pub headers: Option<Bytes>,
    pub payload: Bytes,
    /// The publishing connection.
    pub origin: ConnId,
    /// The publisher said `echo: false`: it does not get its own message.
    pub no_echo: bool,
    /// The publisher asked for a `503` status when nobody receives a request.
    pub no_responders: bool,
    /// A status message for the origin alone (no-responders): delivered only to the
    /// origin's subscriptions that match.
    pub origin_only: bool,
}

/// What workers send each other.
#[derive(Debug)]
pub(crate) enum Envelope {
    /// To the shard that owns the subject.
    Publish(Arc<Msg>),
    /// To the owner shard of a literal filter, or to every shard for a wildcard filter.
    Subscribe {
        filter: Bytes,
        queue: Option<Bytes>,
        sub: SubRef,
    },
    /// Undoes a `Subscribe`, sent to the same shards.
    Unsubscribe { filter: Bytes, sub: SubRef },
    /// To the worker that owns the subscriber's connection.
    Deliver { sub: SubRef, msg: Arc<Msg> },
    /// Stop accepting, flush, close.
    Shutdown,
}

impl Envelope {
    /// Subscription changes are sent before data so that nothing causally after a
    /// subscription can reach a shard before it.
    fn is_control(&self) -> bool {
        matches!(
            self,
            Envelope::Subscribe { .. } | Envelope::Unsubscribe { .. }
        )
    }
}

pub(crate) type Batch = Vec<Envelope>;

/// The sending side of every worker's inbound queue, shared by all workers.
#[derive(Clone)]
pub(crate) struct Mesh {
    senders: Vec<Sender<Batch>>,
    wakers: Vec<Arc<Waker>>,
}

impl Mesh {
    pub fn new(senders: Vec<Sender<Batch>>, wakers: Vec<Arc<Waker>>) -> Mesh {
        Mesh { senders, wakers }
    }

    pub fn workers(&self) -> usize {
        self.senders.len()
    }

    /// Sends a batch without blocking; gives it back when the queue is full.
    fn try_send(&self, to: usize, batch: Batch) -> Result<(), Batch> {
        match self.senders[to].try_send(batch) {
            Ok(()) => {
                // A failed wake means the receiver is gone (shutdown): nothing to wake.
                let _ = self.wakers[to].wake();
                Ok(())
            }
            Err(TrySendError::Full(b)) => Err(b),
            // The receiver has stopped (end of shutdown): there is nobody to deliver to.
            Err(TrySendError::Disconnected(_)) => Ok(()),
        }
    }

    /// Sends a batch, waiting up to `timeout` for room. Used off the hot path only
    /// (shutdown).
    pub fn send_timeout(&self, to: usize, batch: Batch, timeout: std::time::Duration) -> bool {
        let ok = self.senders[to].send_timeout(batch, timeout).is_ok();
        let _ = self.wakers[to].wake();
        ok
    }
}

/// The receiving side of one worker's inbound queue.
pub(crate) type Inbox = Receiver<Batch>;

/// Envelopes produced during one loop turn, batched per destination worker.
pub(crate) struct Outbox {
    me: usize,
    batches: Vec<Batch>,
    control: Vec<bool>,
    /// Batches that found their destination's queue full, in the order they were made.
    pending: VecDeque<(usize, Batch)>,
}

impl Outbox {
    pub fn new(me: usize, workers: usize) -> Outbox {
        Outbox {
            me,
            batches: (0..workers).map(|_| Vec::new()).collect(),
            control: vec![false; workers],
            pending: VecDeque::new(),
        }
    }

    pub fn push(&mut self, to: usize, envelope: Envelope) {
        self.control[to] |= envelope.is_control();
        self.batches[to].push(envelope);
    }

    /// Takes what this worker addressed to itself, to be handled in place.
    pub fn take_local(&mut self) -> Batch {
        self.control[self.me] = false;
        std::mem::take(&mut self.batches[self.me])
    }

    /// Takes the batch addressed to `to`, for tests that inspect routing without a mesh.
    #[cfg(test)]
    pub fn take_batch(&mut self, to: usize) -> Batch {
        self.control[to] = false;
        std::mem::take(&mut self.batches[to])
    }

    pub fn has_local(&self) -> bool {
        !self.batches[self.me].is_empty()
    }

    /// True while batches wait for room: the worker must not read client sockets.
    pub fn is_blocked(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Sends every batch made this turn, subscription changes first. Batches wait in one
    /// FIFO once any destination is full: nothing is sent ahead of an earlier batch, so
    /// causal order holds even under backpressure.
    pub fn flush(&mut self, mesh: &Mesh) {
        while let Some((to, batch)) = self.pending.pop_front() {
            if let Err(batch) = mesh.try_send(to, batch) {
                self.pending.push_front((to, batch));
                break;
            }
        }
        for control in [true, false] {
            for to in 0..self.batches.len() {
                if to == self.me || self.batches[to].is_empty() || self.control[to] != control {
                    continue;
                }
                self.control[to] = false;
                let batch = std::mem::take(&mut self.batches[to]);
                if !self.pending.is_empty() {
                    self.pending.push_back((to, batch));
                } else if let Err(batch) = mesh.try_send(to, batch) {
                    self.pending.push_back((to, batch));
                }
            }
        }
    }
}
