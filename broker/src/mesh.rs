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
use std::time::Instant;

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

impl ConnId {
    /// No connection: the origin of a message replayed from a log.
    pub const NONE: ConnId = ConnId {
        worker: u16::MAX,
        slot: u32::MAX,
        gen: 0,
    };
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
///
/// `Clone` only so that the owner shard can stamp it (`Arc::make_mut`) in the rare case
/// where the `Arc` is already shared when it is routed; normally the shard holds the only
/// reference and stamps it in place.
#[derive(Debug, Clone)]
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
    /// The loop-turn instant at which the publisher's worker read the message's bytes:
    /// the start of the broker latency measured when a delivery reaches a socket.
    pub received: Instant,
    /// 0 (lowest) to 7 (highest), as published on the binary port.
    pub priority: u8,
    /// The publisher (binary port) asked for a `PUBLISH_ACK` with this id: the owner shard
    /// answers once it has stored (if it keeps the subject) and routed the message.
    pub ack_id: Option<u64>,
    /// The publisher's id for idempotent publishing: a repeat within the dedupe window is
    /// acknowledged with the first copy's sequence and neither stored nor delivered.
    pub message_id: Option<Bytes>,
    /// Delivered from a log (catch-up), not live.
    pub replayed: bool,
    /// Made by the broker for one client (catch-up replies and their end markers): never
    /// stored, never sequenced.
    pub ephemeral: bool,
    /// In its owner shard's ring log (set by the shard when it appends it, and on
    /// everything replayed): a lossless subscription can read it back from there.
    pub stored: bool,
    /// The publisher's coalescing key: in a subscriber's queue, this message takes the
    /// place of a queued one with the same key.
    pub coalesce: Option<Bytes>,
    /// Where the message sits in its owner shard's sequence; set by that shard when it
    /// routes the message, zero before (and for status messages, which are not sequenced).
    pub stamp: Stamp,
}

impl Msg {
    /// A plain message: no reply, no headers, lowest priority, echo on, not yet stamped.
    pub fn new(subject: Bytes, payload: Bytes, origin: ConnId, received: Instant) -> Msg {
        Msg {
            subject,
            reply: None,
            headers: None,
            payload,
            origin,
            no_echo: false,
            no_responders: false,
            origin_only: false,
            received,
            priority: 0,
            ack_id: None,
            message_id: None,
            replayed: false,
            ephemeral: false,
            stored: false,
            coalesce: None,
            stamp: Stamp::default(),
        }
    }
}

/// A message's place in its owner shard: the shard, its sequence there (from 1, never
/// repeated within a log epoch) and when the shard took it (nanoseconds since the Unix
/// epoch).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub shard: u16,
    pub seq: u64,
    pub time_ns: u64,
}

/// Where a new subscription starts: `None` for live, or the binary `SUBSCRIBE`'s start
/// position, shared by every shard the subscription is registered in.
pub(crate) type Start = Option<Arc<tern_protocol::binary::StartPosition>>;

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
        start: Start,
        /// The subscription falls back to the log on overflow: each shard with a store
        /// answers with a `Position`.
        lossless: bool,
    },
    /// From a shard to a lossless subscription's worker, before anything else it sends the
    /// subscription: the last sequence of `shard` before what the subscription receives.
    Position { sub: SubRef, shard: u16, last: u64 },
    /// From a lossless subscription's worker to a shard: its queue overflowed, so stop
    /// live delivery of stored messages to it and replay them from the log from `from`,
    /// at most `credit` at a time, then go live again. Replaces any catch-up in progress.
    Lag {
        sub: SubRef,
        filter: Bytes,
        from: u64,
        credit: u32,
        /// Which fall-back this is, echoed in the `LagAck`.
        lag: u64,
    },
    /// The shard's answer to `Lag`: everything it sends the subscription after this comes
    /// from the new catch-up (then live); what came before it may be discarded.
    LagAck { sub: SubRef, shard: u16, lag: u64 },
    /// More room in a lagging subscription's queue: the shard may replay `credit` more.
    Grant { sub: SubRef, credit: u32 },
    /// Undoes a `Subscribe`, sent to the same shards.
    Unsubscribe {
        filter: Bytes,
        queue: Option<Bytes>,
        sub: SubRef,
    },
    /// To the worker that owns the subscriber's connection.
    Deliver { sub: SubRef, msg: Arc<Msg> },
    /// From the owner shard to the publisher's worker: the message the publisher asked an
    /// acknowledgement for was routed, with this stamp.
    Ack {
        conn: ConnId,
        ack_id: u64,
        stamp: Stamp,
        /// The message id was seen within the dedupe window: `stamp` is the first copy's.
        duplicate: bool,
    },
    /// From a shard to the subscriber's worker: a subscription asked to resume after
    /// sequence `requested - 1` of `shard`, but the shard no longer holds `requested` up to
    /// (not including) `oldest`. Sent before any delivery from that shard to it.
    Gap {
        sub: SubRef,
        shard: u16,
        requested: u64,
        oldest: u64,
    },
    /// A text client's catch-up request (`$TERN.REPLAY`), to each shard its filter can
    /// match in: replay the matching records into its inbox.
    Replay(Arc<ReplayRequest>),
    /// From a shard to the requester's worker: this shard's part of catch-up `id` of `conn`
    /// is over (its end marker is out), so the request's slot can be given back once every
    /// shard has said so.
    ReplayDone { conn: ConnId, id: u64 },
    /// From a closing connection's worker to every shard: drop what is left of its
    /// catch-ups.
    ReplayCancel { conn: ConnId },
    /// A connection's `PING` barrier, sent to each shard the connection published to (or
    /// changed subscriptions on) since its previous `PING`, behind that traffic.
    Barrier { conn: ConnId, token: u64 },
    /// The shard's answer to a `Barrier`, sent to the connection's worker after every
    /// delivery the shard made for the traffic before the barrier.
    BarrierDone { conn: ConnId, token: u64 },
    /// Stop accepting, flush, close.
    Shutdown,
    /// From the monitoring thread: answer with a snapshot of this worker's state. Not a
    /// control envelope (it changes nothing), and never pushed through an `Outbox`.
    Snapshot(crate::snapshot::SnapshotRequest),
}

/// A text-port catch-up: replay what the log holds on `filter`, from `start`, by
/// publishing each record to `inbox`, then an end marker per shard.
#[derive(Debug)]
pub(crate) struct ReplayRequest {
    pub filter: Bytes,
    pub inbox: Bytes,
    pub start: ReplayStart,
    /// How many shards answer (each sends one end marker).
    pub shards: u16,
    /// The shard that owns `inbox`: the replayed messages go through its worker.
    pub inbox_owner: u16,
    /// The requesting connection, and the request's id on it (for `ReplayDone`).
    pub origin: ConnId,
    pub id: u64,
}

/// Where a text-port catch-up starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplayStart {
    /// Everything the log holds.
    All,
    /// From this sequence of the subject's shard (literal subjects).
    FromSeq(u64),
    /// From the first record at or after this time (ns since the Unix epoch).
    Time(u64),
    /// The last N matching records held.
    LastN(u32),
}

impl Envelope {
    /// Subscription changes: nothing queued after one may reach any worker before it.
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

    /// A mesh of `n` workers whose queues nobody reads, for tests and benchmarks of
    /// routing.
    pub fn for_tests(n: usize) -> Mesh {
        let wakers = (0..n)
            .map(|_| {
                // Mio allows one waker per poll; the poll may go, the waker stays valid.
                let poll = mio::Poll::new().expect("poll");
                Arc::new(Waker::new(poll.registry(), mio::Token(0)).expect("waker"))
            })
            .collect();
        let senders = (0..n).map(|_| crossbeam_channel::bounded(16).0).collect();
        Mesh::new(senders, wakers)
    }

    /// A mesh of `n` workers whose queues are kept open (and returned) but read by
    /// nobody unless the test does: for tests of what waits on workers.
    #[cfg(test)]
    pub fn for_tests_open(n: usize) -> (Mesh, Vec<Inbox>) {
        let (senders, inboxes) = (0..n).map(|_| crossbeam_channel::bounded(16)).unzip();
        (Mesh::new(senders, Mesh::for_tests(n).wakers), inboxes)
    }

    pub fn workers(&self) -> usize {
        self.senders.len()
    }

    /// Batches waiting in worker `to`'s inbound queue now (monitoring).
    pub fn queue_len(&self, to: usize) -> usize {
        self.senders[to].len()
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
///
/// Causal order across workers: a data envelope (publish, delivery) is never sent ahead of
/// a subscription change queued before it, whichever workers they go to. When data follows
/// a subscription change for another worker, the outbox first sends everything it holds;
/// after that, the change is in its receiver's queue before the data can cause anything.
/// Subscribing is rare, so this costs an extra batch only when the two interleave.
pub(crate) struct Outbox {
    me: usize,
    mesh: Mesh,
    batches: Vec<Batch>,
    /// A subscription change for another worker was queued since the last send.
    control_queued: bool,
    /// Batches that found their destination's queue full, in the order they were made;
    /// while any wait, everything later waits behind them.
    pending: VecDeque<(usize, Batch)>,
}

impl Outbox {
    pub fn new(me: usize, mesh: Mesh) -> Outbox {
        Outbox {
            me,
            batches: (0..mesh.workers()).map(|_| Vec::new()).collect(),
            mesh,
            control_queued: false,
            pending: VecDeque::new(),
        }
    }

    pub fn push(&mut self, to: usize, envelope: Envelope) {
        if envelope.is_control() {
            self.control_queued |= to != self.me;
        } else if self.control_queued {
            self.flush();
        }
        self.batches[to].push(envelope);
    }

    /// Takes what this worker addressed to itself, to be handled in place.
    pub fn take_local(&mut self) -> Batch {
        std::mem::take(&mut self.batches[self.me])
    }

    /// Takes the batch addressed to `to`, for tests that inspect routing without a mesh.
    #[cfg(test)]
    pub fn take_batch(&mut self, to: usize) -> Batch {
        std::mem::take(&mut self.batches[to])
    }

    pub fn has_local(&self) -> bool {
        !self.batches[self.me].is_empty()
    }

    /// Batches waiting in worker `to`'s inbound queue now: how far its shard is behind
    /// (admission control's overload shedding reads it).
    pub fn queue_len(&self, to: usize) -> usize {
        self.mesh.queue_len(to)
    }

    /// Batches waiting for room in a peer's queue (monitoring).
    pub fn pending_batches(&self) -> usize {
        self.pending.len()
    }

    /// True while batches wait for room: the worker must not read client sockets.
    pub fn is_blocked(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Sends every batch for another worker, after any still waiting from earlier. What
    /// does not fit waits, in order.
    pub fn flush(&mut self) {
        self.control_queued = false;
        while let Some((to, batch)) = self.pending.pop_front() {
            if let Err(batch) = self.mesh.try_send(to, batch) {
                self.pending.push_front((to, batch));
                break;
            }
        }
        for to in 0..self.batches.len() {
            if to == self.me || self.batches[to].is_empty() {
                continue;
            }
            let batch = std::mem::take(&mut self.batches[to]);
            if !self.pending.is_empty() {
                self.pending.push_back((to, batch));
            } else if let Err(batch) = self.mesh.try_send(to, batch) {
                self.pending.push_back((to, batch));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh(n: usize, capacity: usize) -> (Mesh, Vec<Inbox>) {
        let mut senders = Vec::new();
        let mut inboxes = Vec::new();
        for _ in 0..n {
            let (tx, rx) = crossbeam_channel::bounded(capacity);
            senders.push(tx);
            inboxes.push(rx);
        }
        let wakers = Mesh::for_tests(n).wakers;
        (Mesh::new(senders, wakers), inboxes)
    }

    fn sub_change(worker: u16) -> Envelope {
        let conn = ConnId {
            worker,
            slot: 0,
            gen: 0,
        };
        Envelope::Subscribe {
            filter: Bytes::from_static(b"_INBOX.x.*"),
            queue: None,
            sub: SubRef {
                conn,
                key: 0,
                id: 1,
            },
            start: None,
            lossless: false,
        }
    }

    fn publish() -> Envelope {
        let origin = ConnId {
            worker: 0,
            slot: 0,
            gen: 0,
        };
        let mut msg = Msg::new(
            Bytes::from_static(b"req"),
            Bytes::new(),
            origin,
            Instant::now(),
        );
        msg.reply = Some(Bytes::from_static(b"_INBOX.x.1"));
        msg.no_responders = true;
        Envelope::Publish(Arc::new(msg))
    }

    #[test]
    fn data_never_leaves_before_an_earlier_subscription_change() {
        let (mesh, inboxes) = mesh(3, 16);
        let mut out = Outbox::new(0, mesh);
        // A client subscribes to its inbox (a wildcard: every shard) and then publishes a
        // request owned by worker 1. Worker 2 must have the subscription before worker 1
        // can see the request.
        out.push(1, sub_change(0));
        out.push(2, sub_change(0));
        out.push(1, publish());
        assert_eq!(
            inboxes[2].len(),
            1,
            "the change for worker 2 was sent first"
        );
        assert_eq!(inboxes[1].len(), 1);
        assert_eq!(
            inboxes[1].try_recv().unwrap().len(),
            1,
            "only the change so far"
        );
        out.flush();
        assert!(matches!(
            inboxes[1].try_recv().unwrap()[..],
            [Envelope::Publish(_)]
        ));
    }

    #[test]
    fn a_full_queue_holds_everything_after_it_in_order() {
        let (mesh, inboxes) = mesh(3, 1);
        let mut out = Outbox::new(0, mesh);
        out.push(1, publish());
        out.flush();
        out.push(1, publish());
        out.push(2, publish());
        out.flush();
        assert!(out.is_blocked());
        assert_eq!(
            inboxes[2].len(),
            0,
            "waits behind the full queue of worker 1"
        );
        inboxes[1].try_recv().unwrap();
        out.flush();
        assert!(!out.is_blocked());
        assert_eq!(inboxes[1].len(), 1);
        assert_eq!(inboxes[2].len(), 1);
    }
}
