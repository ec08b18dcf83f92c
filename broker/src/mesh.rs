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
//! stops reading client sockets until it has been sent. Flow-control signals (a consumer's
//! congestion, the stalls it causes) are the exception to "one batch per turn": they leave
//! the moment they are made, past the bulk ([`Envelope::is_urgent`]).
//!
//! A worker whose catch-ups wait for another worker's progress (its inbound queue deep, the
//! catch-up's bytes not yet written to the client) asks that worker to ring its waker at
//! the end of its next loop turn ([`Outbox::wake_me_after`], [`Outbox::wake_waiters`])
//! instead of looking again only at its poll timeout (1 ms): a catch-up crossing workers
//! went several times slower than one that did not, for that sleep alone.
//!
//! Never: blocks, and never drops an envelope while its receiver runs.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::Waker;

use crate::conn::congestion::Signal;

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

    /// The origin of what the bridge imports into `worker`'s shard (`inject.rs`): a slot no
    /// connection has, on a real worker (acknowledgements and stalls addressed to it find
    /// nobody).
    pub const fn import(worker: u16) -> ConnId {
        ConnId {
            worker,
            slot: u32::MAX - 1,
            gen: 0,
        }
    }

    /// A message from the bridge's imports.
    pub fn is_import(self) -> bool {
        self.slot == u32::MAX - 1 && self.gen == 0
    }
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
/// `Clone` only so that the routing shard can stamp it (`Arc::make_mut`) in the rare case
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
    /// The publisher (binary port) asked for a `PUBLISH_ACK` with this id: its shard
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
    /// In its shard's ring log (set by the shard when it appends it, and on
    /// everything replayed): a lossless subscription can read it back from there.
    pub stored: bool,
    /// The publisher's coalescing key: in a subscriber's queue, this message takes the
    /// place of a queued one with the same key.
    pub coalesce: Option<Bytes>,
    /// Where the message sits in its shard's sequence; set by that shard when it
    /// routes the message, zero before (and for status messages, which are not sequenced).
    pub stamp: Stamp,
    /// A catch-up's message: counted in its catch-up's bytes in flight until the last
    /// copy is gone (encoded for its connection's socket, dropped, or not delivered at
    /// all). Held for its `Drop`; read only to tell a catch-up's delivery from a live one
    /// (`Worker::may_pump`).
    pub flight: Option<Flight>,
    /// A room's presence event or snapshot page, made by the room's home worker: what a
    /// subscription that takes presence as binary frames gets instead of the message.
    pub presence: Option<Box<PresenceFrame>>,
    /// A copy the bridge imported for some local subscribers only (its plain ones, or one
    /// member of a queue group upstream picked): `tern_bridge::Route`.
    pub bridge_route: Option<Box<tern_bridge::Route>>,
}

/// A presence event or snapshot page as a binary `PRESENCE` frame, encoded once (for sid
/// 0: each subscription's is written in as it goes out, `retarget_presence`).
#[derive(Debug, Clone)]
pub(crate) struct PresenceFrame {
    pub frame: Bytes,
    /// The last page of a snapshot: the subscription may ask for another one from now on.
    pub snapshot_end: bool,
}

/// A replayed message's share of its catch-up's bytes in flight: added when it is made
/// (and when it is cloned), taken off when it is dropped. The catch-up waits while its
/// total is over its window (`Store::pump`), so however slow its client, only a window of
/// it is ever queued between the log and the socket, and no signal has to arrive in time
/// for that to hold.
#[derive(Debug)]
pub(crate) struct Flight {
    total: Arc<AtomicUsize>,
    bytes: usize,
}

impl Flight {
    pub fn new(total: &Arc<AtomicUsize>, bytes: usize) -> Flight {
        total.fetch_add(bytes, Ordering::Relaxed);
        Flight {
            total: Arc::clone(total),
            bytes,
        }
    }
}

impl Flight {
    /// A ticket of its own for `bytes` of this one's catch-up (a message made from a
    /// [`ReplayRun`] that outlives the run).
    pub fn part(&self, bytes: usize) -> Flight {
        Flight::new(&self.total, bytes)
    }
}

/// A step of a subscription's catch-up, from its shard to the subscriber's worker: the
/// records copied out of the shard's log as the log stores them, back to back, in sequence
/// order (read back with [`tern_log::StoredRecords`]). One allocation and one envelope a
/// step: the receiving worker makes each message as it delivers it ([`ReplayRun::msg`]),
/// so a record written straight to the socket's buffer costs no allocation, and nothing
/// of it is freed on the shard's worker or counted there one by one.
///
/// Its [`Flight`] counts all its bytes until the run is handled; a message made from it
/// that is kept beyond that (held in a merge, queued) takes a ticket of its own first
/// ([`Flight::part`]), so its catch-up's window never counts less than what is held.
#[derive(Debug)]
pub(crate) struct ReplayRun {
    /// The shard whose log the records come from.
    pub shard: u16,
    pub records: Bytes,
    pub flight: Flight,
    /// The loop-turn instant the shard read them: their broker latency starts there.
    pub read: Instant,
}

#[cfg(test)]
thread_local! {
    /// Messages this thread made from runs' records (`ReplayRun::msg`), for the tests of
    /// the path that writes records without making one.
    pub(crate) static RUN_MSGS_MADE: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

impl ReplayRun {
    /// Its records, oldest first.
    pub fn records(&self) -> tern_log::StoredRecords<'_> {
        tern_log::StoredRecords::new(&self.records)
    }

    /// `rec` (one of [`ReplayRun::records`]) as a message to deliver: its fields slices of
    /// the run's buffer, no ticket in flight of its own (see [`ReplayRun`]).
    pub fn msg(&self, rec: &tern_log::Record<'_>) -> Msg {
        #[cfg(test)]
        RUN_MSGS_MADE.with(|n| n.set(n.get() + 1));
        let slice = |f: &[u8]| self.records.slice_ref(f);
        let mut msg = Msg::new(
            slice(rec.subject),
            slice(rec.payload),
            ConnId::NONE,
            self.read,
        );
        msg.reply = rec.reply.map(slice);
        msg.headers = rec.headers.map(slice);
        msg.priority = rec.priority;
        msg.replayed = true;
        msg.stored = true;
        msg.stamp = self.stamp(rec);
        msg
    }

    /// Where `rec` (one of [`ReplayRun::records`]) sits in its shard's sequence.
    #[inline]
    pub fn stamp(&self, rec: &tern_log::Record<'_>) -> Stamp {
        Stamp {
            shard: self.shard,
            seq: rec.seq,
            time_ns: rec.timestamp,
        }
    }
}

impl Clone for Flight {
    fn clone(&self) -> Flight {
        Flight::new(&self.total, self.bytes)
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.total.fetch_sub(self.bytes, Ordering::Relaxed);
    }
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
            flight: None,
            presence: None,
            bridge_route: None,
        }
    }
}

/// A message's place in the shard that stored it: the shard, its sequence there (from 1, never
/// repeated within a log epoch) and when the shard took it (nanoseconds since the Unix
/// epoch: the wall clock read at the start of the loop turn that routed it, so messages
/// routed in one turn share it).
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
    /// To the worker's own shard (its local batch): a message the broker made (a
    /// no-responders status, a one-shard catch-up's record or end marker) to route.
    Publish(Arc<Msg>),
    /// To every shard: each holds every subscription. Boxed, as are the other changes of
    /// a subscription (rare, and an envelope is as large as its largest variant: see
    /// [`ENVELOPE_SIZE`]).
    Subscribe(Box<SubscribeOp>),
    /// From a shard to a subscription's worker, before anything else it sends the
    /// subscription: the last sequence of `shard` before what the subscription receives
    /// (for a binary client's `SUBSCRIBED`, and a lossless subscription's fall-back).
    Position { sub: SubRef, shard: u16, last: u64 },
    /// From a lossless subscription's worker to a shard: its queue overflowed, so stop
    /// live delivery of stored messages to it and replay them from the log from `from`,
    /// at most `credit` at a time, then go live again. Replaces any catch-up in progress.
    Lag(Box<LagOp>),
    /// The shard's answer to `Lag`: everything it sends the subscription after this comes
    /// from the new catch-up (then live); what came before it may be discarded.
    LagAck { sub: SubRef, shard: u16, lag: u64 },
    /// More room in a lagging subscription's queue: the shard may replay `credit` more.
    Grant { sub: SubRef, credit: u32 },
    /// Undoes a `Subscribe`, sent to the same shards.
    Unsubscribe(Box<UnsubscribeOp>),
    /// To the worker that owns the subscriber's connection.
    Deliver { sub: SubRef, msg: Arc<Msg> },
    /// To the worker that owns the subscriber's connection: one catch-up step's records
    /// for it, in sequence order.
    DeliverRun { sub: SubRef, run: Box<ReplayRun> },
    /// From the publisher's shard to its worker: the message the publisher asked an
    /// acknowledgement for was routed, with this stamp.
    Ack {
        conn: ConnId,
        ack_id: u64,
        stamp: Stamp,
        /// The message id was seen within the dedupe window: `stamp` is the first copy's.
        duplicate: bool,
    },
    /// From the shard a repeated message id was published through to the shard that
    /// stored its first copy: acknowledge it from there, behind everything that shard sent
    /// before (the first copy's deliveries among it), so that what the publisher sends
    /// after the acknowledgement cannot overtake them.
    DuplicateAck {
        conn: ConnId,
        ack_id: u64,
        stamp: Stamp,
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
    /// From a shard to the worker of a subscription whose catch-ups are merged
    /// (`merge.rs`): this shard's catch-up has replayed everything its log held, after the
    /// deliveries before this. It reads on what is appended until released.
    CaughtUp { sub: SubRef, shard: u16 },
    /// From a shard to the worker of a merged subscription with a "last N" start: the
    /// shard sends `sends` messages, its newest matches.
    Counted { sub: SubRef, shard: u16, sends: u64 },
    /// From a merged subscription's worker to each of its shards, once all have caught
    /// up: end the catch-up at the end of the log and deliver live from there.
    Release { sub: SubRef },
    /// A text client's catch-up request (`$TERN.REPLAY`), to each shard its filter can
    /// match in: replay the matching records into its inbox.
    Replay(Arc<ReplayRequest>),
    /// From a shard to the requester's worker, for a catch-up `id` of `conn` over several
    /// shards: part of what this shard replays, which that worker merges into stored order
    /// with the other shards' (`merge.rs`) and publishes to the inbox.
    ReplayPart {
        conn: ConnId,
        id: u64,
        shard: u16,
        part: InboxPart,
    },
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
    /// From a consumer's worker to every worker: the connection became congested, stuck
    /// or clear (see `conn/congestion.rs`). Shards stall the publishers whose messages
    /// reach a congested consumer, and hold the catch-ups to one over its high-water mark
    /// (congested or stuck); every worker releases the publishers it stalled for it when
    /// the congestion of that epoch ends.
    Congestion { conn: ConnId, signal: Signal },
    /// From a shard to a publisher's worker: a message of `publisher` reached `consumer`,
    /// congested in `epoch`: stop reading the publisher until that congestion ends (or
    /// `max_publisher_stall` passes).
    Stall {
        publisher: ConnId,
        consumer: ConnId,
        epoch: u32,
    },
    /// To a room's presence home (`Router::presence_home`): a connection joins or leaves
    /// the room, or asks who is in it.
    Presence(Box<PresenceOp>),
    /// From a room's home worker to a binary connection: an encoded `PRESENCE` frame (a
    /// join's or a query's answer), written as it is.
    PresenceAnswer { conn: ConnId, frame: Bytes },
    /// From the worker that accepted a connection to its home (`ConnectionGate::admit`):
    /// start it there.
    Adopt(Box<crate::worker::Adoption>),
    /// From a bridge's thread: one end of a Unix socket pair, to serve as a binary-port
    /// connection (the bridge speaks the protocol at the other end, in this process).
    Attach(Box<std::os::unix::net::UnixStream>),
    /// Stop accepting, flush, close.
    Shutdown,
    /// From the monitoring thread: answer with a snapshot of this worker's state. Not a
    /// control envelope (it changes nothing), and never pushed through an `Outbox`.
    Snapshot(Box<crate::snapshot::SnapshotRequest>),
}

/// The bytes of one [`Envelope`]. Every delivery is one, written by the routing worker
/// and read by the subscriber's (a fan-out to 100 makes 100 of them per message, and a
/// 64 KiB read of small publishes tens of thousands, more than a core's cache holds), so
/// the per-message variants (`Deliver`, `Ack`) set it and anything larger is boxed (it
/// was 128 bytes before `Subscribe`, `Unsubscribe`, `Lag` and `Snapshot` were). A variant
/// that grows past it fails the build here.
pub(crate) const ENVELOPE_SIZE: usize = 48;
const _: () = assert!(std::mem::size_of::<Envelope>() == ENVELOPE_SIZE);

/// A subscription to add to a shard ([`Envelope::Subscribe`]).
#[derive(Debug)]
pub(crate) struct SubscribeOp {
    pub filter: Bytes,
    pub queue: Option<Bytes>,
    pub sub: SubRef,
    pub start: Start,
    pub lossless: bool,
}

/// A subscription to remove from a shard ([`Envelope::Unsubscribe`]).
#[derive(Debug)]
pub(crate) struct UnsubscribeOp {
    pub filter: Bytes,
    pub queue: Option<Bytes>,
    pub sub: SubRef,
}

/// A lossless subscription's fall-back to the log at one shard ([`Envelope::Lag`]).
#[derive(Debug)]
pub(crate) struct LagOp {
    pub sub: SubRef,
    pub filter: Bytes,
    pub from: u64,
    pub credit: u32,
    /// Which fall-back this is, echoed in the `LagAck`.
    pub lag: u64,
}

/// What a connection asks of a room's presence, at the room's home worker. Answers and
/// events are published there, as messages the broker made.
#[derive(Debug)]
pub(crate) enum PresenceOp {
    /// `conn` joins `subject` as `user`, with `info`; `answer` gets the outcome.
    Join {
        subject: Bytes,
        user: Arc<str>,
        conn: ConnId,
        client_id: u64,
        info: Bytes,
        answer: Answer,
    },
    /// `conn` leaves `subject`: explicitly (`grace` false, at once) or because it closed
    /// (`grace` true: the member lingers for the grace window if this was its last
    /// connection).
    Leave {
        subject: Bytes,
        conn: ConnId,
        grace: bool,
        reply: Option<Bytes>,
    },
    /// Who is in `subject`: a page of members, or the count alone.
    Query {
        subject: Bytes,
        answer: Answer,
        offset: usize,
        limit: usize,
        count_only: bool,
    },
    /// The room's members, in pages, to the subscription `sub` (to the room's events
    /// subject): at the start of a binary presence events subscription, and whenever
    /// events to one had to be dropped.
    Snapshot { subject: Bytes, sub: SubRef },
}

/// Where a presence request's outcome goes.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    /// Nowhere (a text join or leave without a reply subject).
    None,
    /// Published to a reply subject, as JSON (or a status message).
    Inbox(Bytes),
    /// A binary `PRESENCE` frame for `id` (a sid, or a query's id), straight to `conn`.
    Frame { conn: ConnId, id: u32, query: bool },
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
    /// The requesting connection, and the request's id on it (for `ReplayDone`).
    pub origin: ConnId,
    pub id: u64,
}

/// What one shard's part of a text-port catch-up produces.
#[derive(Debug)]
pub(crate) enum InboxPart {
    /// A replayed record, as the message to publish to the inbox.
    Record(Arc<Msg>),
    /// A "last N" start counted its matches: the shard sends this many.
    Counted(u64),
    /// The shard's end marker: its part is over.
    End(Arc<Msg>),
}

/// Where a text-port catch-up starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplayStart {
    /// Everything the log holds.
    All,
    /// From sequence `seq` of one shard (that shard alone answers).
    FromSeq { shard: u16, seq: u64 },
    /// From the first record at or after this time (ns since the Unix epoch).
    Time(u64),
    /// The last N matching records held.
    LastN(u32),
}

impl Envelope {
    /// Subscription changes: nothing queued after one may reach any worker before it.
    fn is_control(&self) -> bool {
        matches!(self, Envelope::Subscribe(_) | Envelope::Unsubscribe(_))
    }

    /// Flow-control signals: a consumer's congestion and the stalls it causes. They go to
    /// other workers at once rather than at the end of the sender's loop turn
    /// ([`Outbox::push`]): what a publisher sends until its stall lands is what its
    /// consumers' headroom must hold, and one turn of a busy worker is long.
    fn is_urgent(&self) -> bool {
        matches!(self, Envelope::Congestion { .. } | Envelope::Stall { .. })
    }
}

pub(crate) type Batch = Vec<Envelope>;

/// The two lanes of a worker's inbound queue.
///
/// Commands are work for the receiver's shard: publishes to route, subscription changes,
/// catch-up requests, `PING` barriers. Routing a command makes deliveries, so a worker
/// takes commands only while the deliveries it already has for other workers are few
/// (`Outbox::may_take_commands`). Deliveries (and everything else a worker's connections
/// or the worker itself must see: acks, notices, congestion, snapshots, shutdown) only
/// ever end in a connection's queue, which has its own bounds; they are always taken.
/// So when a subscriber's worker falls behind, the workers routing to it stop taking
/// commands, then stop reading their sockets, down to the publishers; and since taking a
/// delivery never waits for anything, two workers can never wait on each other for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    Command = 0,
    Delivery = 1,
}

impl Lane {
    pub const ALL: [Lane; 2] = [Lane::Command, Lane::Delivery];
}

impl Envelope {
    /// The lane of the receiver's queue this envelope travels in.
    pub fn lane(&self) -> Lane {
        match self {
            Envelope::Publish(_)
            | Envelope::Subscribe(_)
            | Envelope::Unsubscribe(_)
            | Envelope::Lag(_)
            | Envelope::Grant { .. }
            | Envelope::Release { .. }
            | Envelope::Replay(_)
            | Envelope::Presence(_)
            | Envelope::Barrier { .. } => Lane::Command,
            _ => Lane::Delivery,
        }
    }
}

/// What an envelope counts for in a queue's byte bound: the bytes of the message it
/// carries (a delivery counts its message each time: each one is work, and later a copy,
/// at its receiver), plus a fixed cost for the envelope itself.
pub(crate) fn envelope_bytes(env: &Envelope) -> usize {
    const ENVELOPE: usize = 64;
    let msg: &Msg = match env {
        Envelope::Publish(m) | Envelope::Deliver { msg: m, .. } => m,
        Envelope::ReplayPart {
            part: InboxPart::Record(m) | InboxPart::End(m),
            ..
        } => m,
        Envelope::Presence(op) => {
            return ENVELOPE
                + match &**op {
                    PresenceOp::Join { subject, info, .. } => subject.len() + info.len(),
                    PresenceOp::Leave { subject, .. }
                    | PresenceOp::Query { subject, .. }
                    | PresenceOp::Snapshot { subject, .. } => subject.len(),
                }
        }
        Envelope::PresenceAnswer { frame, .. } => return ENVELOPE + frame.len(),
        Envelope::DeliverRun { run, .. } => return ENVELOPE + run.records.len(),
        _ => return ENVELOPE,
    };
    ENVELOPE
        + msg.subject.len()
        + msg.reply.as_ref().map_or(0, Bytes::len)
        + msg.headers.as_ref().map_or(0, Bytes::len)
        + msg.payload.len()
}

/// What a batch counts for in its receiver's byte bound.
pub(crate) fn batch_bytes(batch: &Batch) -> usize {
    batch.iter().map(envelope_bytes).sum()
}

/// A batch as it travels between workers: its envelopes, and what they count for in the
/// receiver's byte bound ([`envelope_bytes`]), summed by the sender as it queued them.
/// Neither side walks the batch again to count it: those walks touched every message once
/// more on both cores (a tenth of a 16 B run's profile, much of it the receiver's first
/// touch of each message, which handling it pays for anyway).
#[derive(Debug, Default)]
pub(crate) struct Sent {
    pub envelopes: Batch,
    pub bytes: usize,
}

impl Sent {
    pub fn of(envelopes: Batch) -> Sent {
        let bytes = batch_bytes(&envelopes);
        Sent { envelopes, bytes }
    }
}

/// The sending side of every worker's inbound queue, shared by all workers.
///
/// Each lane of each queue is bounded twice: in batches (the channel's capacity,
/// `worker_queue`) and in bytes (`worker_queue_bytes`, counted by [`envelope_bytes`] as the
/// sender queues each envelope, and kept with one atomic per lane, added by the sender and
/// taken off by the receiver, once per batch). The byte bound is what keeps the data in
/// flight between workers small whatever the message sizes and fan-outs, so that a
/// consumer's congestion reaches its publishers before much more than that is on its way
/// to it.
#[derive(Clone)]
pub(crate) struct Mesh {
    senders: Vec<[Sender<Sent>; 2]>,
    wakers: Vec<Arc<Waker>>,
    /// Per receiver and lane: bytes sent and not yet taken.
    queued_bytes: Arc<[[AtomicUsize; 2]]>,
    max_bytes: usize,
    /// `waiting[on * workers + who]`: worker `who` waits for worker `on`'s progress
    /// ([`Mesh::wait_on`]); `on` wakes it after its next loop turn.
    waiting: Arc<[AtomicBool]>,
}

/// The receiving side of one worker's inbound queue: its two lanes.
pub(crate) struct Inbox {
    lanes: [Receiver<Sent>; 2],
}

impl Inbox {
    /// The next batch of `lane`, if any.
    pub fn try_recv(&self, lane: Lane) -> Option<Sent> {
        self.lanes[lane as usize].try_recv().ok()
    }

    /// Batches waiting in `lane` (tests).
    #[cfg(test)]
    pub fn lane_len(&self, lane: Lane) -> usize {
        self.lanes[lane as usize].len()
    }

    /// Batches waiting in both lanes (tests).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lanes.iter().map(Receiver::len).sum()
    }
}

impl Mesh {
    /// A mesh of one worker per waker, each lane holding up to `capacity` batches and
    /// `max_bytes` bytes; with the workers' inboxes.
    pub fn new(wakers: Vec<Arc<Waker>>, capacity: usize, max_bytes: usize) -> (Mesh, Vec<Inbox>) {
        let mut senders = Vec::with_capacity(wakers.len());
        let mut inboxes = Vec::with_capacity(wakers.len());
        for _ in &wakers {
            let (command, commands) = crossbeam_channel::bounded(capacity);
            let (delivery, deliveries) = crossbeam_channel::bounded(capacity);
            senders.push([command, delivery]);
            inboxes.push(Inbox {
                lanes: [commands, deliveries],
            });
        }
        let queued_bytes = (0..wakers.len())
            .map(|_| [AtomicUsize::new(0), AtomicUsize::new(0)])
            .collect();
        let waiting = (0..wakers.len() * wakers.len())
            .map(|_| AtomicBool::new(false))
            .collect();
        let mesh = Mesh {
            senders,
            wakers,
            queued_bytes,
            max_bytes,
            waiting,
        };
        (mesh, inboxes)
    }

    /// The receiver `me` took a batch of `bytes` from `lane`.
    pub fn taken(&self, me: usize, lane: Lane, bytes: usize) {
        self.queued_bytes[me][lane as usize].fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Worker `who` waits for worker `on` to make progress (take its inbound batches,
    /// write to its clients): `on` rings `who`'s waker after its next loop turn.
    pub fn wait_on(&self, who: usize, on: usize) {
        self.waiting[on * self.workers() + who].store(true, Ordering::Relaxed);
    }

    /// Worker `me` ended a loop turn: it wakes the workers waiting for its progress. One
    /// load per worker when none waits.
    pub fn wake_waiters(&self, me: usize) {
        let n = self.workers();
        for (who, flag) in self.waiting[me * n..(me + 1) * n].iter().enumerate() {
            if flag.load(Ordering::Relaxed) && flag.swap(false, Ordering::Relaxed) {
                // A failed wake means the waiter is gone (shutdown).
                let _ = self.wakers[who].wake();
            }
        }
    }

    /// Bytes waiting in worker `to`'s inbound queue now, both lanes (monitoring).
    pub fn queued_bytes(&self, to: usize) -> usize {
        self.queued_bytes[to]
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .sum()
    }

    /// Wakers for tests and benchmarks: mio allows one waker per poll; the poll may go,
    /// the waker stays valid.
    fn test_wakers(n: usize) -> Vec<Arc<Waker>> {
        (0..n)
            .map(|_| {
                let poll = mio::Poll::new().expect("poll");
                Arc::new(Waker::new(poll.registry(), mio::Token(0)).expect("waker"))
            })
            .collect()
    }

    /// A mesh of `n` workers whose queues nobody reads, for tests and benchmarks of
    /// routing.
    pub fn for_tests(n: usize) -> Mesh {
        Mesh::new(Mesh::test_wakers(n), 16, usize::MAX).0
    }

    /// A mesh of `n` workers whose queues are kept open (and returned) but read by
    /// nobody unless the test does: for tests of what waits on workers.
    #[cfg(test)]
    pub fn for_tests_open(n: usize) -> (Mesh, Vec<Inbox>) {
        Mesh::new(Mesh::test_wakers(n), 16, usize::MAX)
    }

    pub fn workers(&self) -> usize {
        self.senders.len()
    }

    /// Batches waiting in worker `to`'s inbound queue now, both lanes (monitoring).
    pub fn queue_len(&self, to: usize) -> usize {
        self.senders[to].iter().map(Sender::len).sum()
    }

    /// Sends a batch (all of one lane) without blocking; gives it back when the lane is
    /// full (in batches, or in bytes: a batch always goes into a lane that holds no bytes).
    fn try_send(&self, to: usize, lane: Lane, batch: Sent) -> Result<(), Sent> {
        let bytes = batch.bytes;
        let queued = &self.queued_bytes[to][lane as usize];
        // Added before the send, so that the receiver never takes off more than is there.
        let before = queued.fetch_add(bytes, Ordering::Relaxed);
        if before > 0 && before + bytes > self.max_bytes {
            queued.fetch_sub(bytes, Ordering::Relaxed);
            return Err(batch);
        }
        self.send_counted(to, lane, batch, bytes)
    }

    /// Sends a small batch of flow-control signals ([`Envelope::is_urgent`]) without
    /// blocking, past the lane's byte bound (they are few and tiny, and must not wait
    /// behind the bulk they are about); gives it back when the lane is full in batches.
    fn try_send_urgent(&self, to: usize, batch: Sent) -> Result<(), Sent> {
        let bytes = batch.bytes;
        self.queued_bytes[to][Lane::Delivery as usize].fetch_add(bytes, Ordering::Relaxed);
        self.send_counted(to, Lane::Delivery, batch, bytes)
    }

    /// Sends a batch whose `bytes` were already added to its lane's count.
    fn send_counted(&self, to: usize, lane: Lane, batch: Sent, bytes: usize) -> Result<(), Sent> {
        match self.senders[to][lane as usize].try_send(batch) {
            Ok(()) => {
                // A failed wake means the receiver is gone (shutdown): nothing to wake.
                let _ = self.wakers[to].wake();
                Ok(())
            }
            Err(TrySendError::Full(b)) => {
                self.queued_bytes[to][lane as usize].fetch_sub(bytes, Ordering::Relaxed);
                Err(b)
            }
            // The receiver has stopped (end of shutdown): there is nobody to deliver to.
            Err(TrySendError::Disconnected(_)) => Ok(()),
        }
    }

    /// Sends a batch of the delivery lane (snapshot requests, shutdown), waiting up to
    /// `timeout` for room in batches (its bytes are counted, not waited for). Used off the
    /// hot path only.
    pub fn send_timeout(&self, to: usize, batch: Batch, timeout: std::time::Duration) -> bool {
        self.send_lane_timeout(Lane::Delivery, to, batch, timeout)
    }

    /// Sends a batch of publishes from outside the workers (the bridge's imports), in the
    /// command lane: the receiver takes it when its flow control lets it take commands, so
    /// a busy broker holds the sender back. Waits up to `timeout` for room.
    pub fn send_commands_timeout(
        &self,
        to: usize,
        batch: Batch,
        timeout: std::time::Duration,
    ) -> bool {
        self.send_lane_timeout(Lane::Command, to, batch, timeout)
    }

    /// Whether worker `to`'s command lane takes a batch now without waiting.
    pub fn has_room_for_commands(&self, to: usize) -> bool {
        !self.senders[to][Lane::Command as usize].is_full()
    }

    fn send_lane_timeout(
        &self,
        lane: Lane,
        to: usize,
        batch: Batch,
        timeout: std::time::Duration,
    ) -> bool {
        debug_assert!(batch.iter().all(|e| e.lane() == lane));
        let lane = lane as usize;
        let batch = Sent::of(batch);
        let bytes = batch.bytes;
        self.queued_bytes[to][lane].fetch_add(bytes, Ordering::Relaxed);
        let ok = self.senders[to][lane].send_timeout(batch, timeout).is_ok();
        if !ok {
            self.queued_bytes[to][lane].fetch_sub(bytes, Ordering::Relaxed);
        }
        let _ = self.wakers[to].wake();
        ok
    }
}

/// Envelopes of capacity an emptied local batch keeps for the next turn (112 bytes each:
/// 1.8 MiB at most).
const LOCAL_KEPT: usize = 16 * 1024;

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
    /// Per other worker and lane, what this turn made for it.
    batches: Vec<[Sent; 2]>,
    /// Per other worker and lane, how many envelopes the last batch sent held: the next
    /// batch's first push reserves that much, so a busy lane's batch is one allocation,
    /// not a dozen reallocations copying it as it doubles (1.6 % of a 128 B run's CPU,
    /// most of it large reallocations). Nothing is reserved until something is pushed: an
    /// idle lane keeps no memory.
    batch_hint: Vec<[usize; 2]>,
    /// What this worker addressed to itself, in push order.
    local: Batch,
    /// An emptied local batch kept for its capacity ([`Outbox::return_local`]): the local
    /// batch would otherwise grow from nothing, a reallocation and a copy at every
    /// doubling, in every loop turn.
    local_spare: Batch,
    /// A subscription change for another worker was queued since the last send.
    control_queued: bool,
    /// Batches that found their destination's lane full, in the order they were made;
    /// while any wait, everything later waits behind them, whatever its lane.
    pending: VecDeque<(usize, Lane, Sent)>,
    /// Bytes of the delivery batches in `pending` ([`batch_bytes`]).
    pending_delivery_bytes: usize,
    /// Envelopes in `batches` and `local`.
    queued: usize,
    /// Bytes ([`batch_bytes`]) in `batches`: what this turn made for other workers.
    queued_bytes: usize,
    /// Flow-control signals for other workers that found their lane full, in order: they
    /// go before anything else at the next chance, and later signals wait behind them.
    urgent: VecDeque<(usize, Envelope)>,
}

/// Envelopes an outbox holds (not yet sent or handled) past which the worker stops taking
/// new work in this loop turn: it handles what it addressed to itself and sends the rest
/// first. A publish to a subject with a thousand subscribers makes a thousand deliveries;
/// without this, one turn's reads could queue millions of them.
pub(crate) const OUTBOX_FULL: usize = 65_536;

impl Outbox {
    pub fn new(me: usize, mesh: Mesh) -> Outbox {
        Outbox {
            me,
            batches: (0..mesh.workers()).map(|_| Default::default()).collect(),
            batch_hint: vec![[0; 2]; mesh.workers()],
            local: Vec::new(),
            local_spare: Vec::new(),
            mesh,
            control_queued: false,
            pending: VecDeque::new(),
            pending_delivery_bytes: 0,
            queued: 0,
            queued_bytes: 0,
            urgent: VecDeque::new(),
        }
    }

    /// Queues `envelope` for worker `to` (sent by [`Outbox::flush`]); a flow-control
    /// signal for another worker is sent at once instead ([`Envelope::is_urgent`]).
    pub fn push(&mut self, to: usize, envelope: Envelope) {
        if to != self.me && envelope.is_urgent() {
            self.urgent.push_back((to, envelope));
            self.send_urgent();
            return;
        }
        if envelope.is_control() {
            self.control_queued |= to != self.me;
        } else if self.control_queued {
            self.flush();
        }
        if to == self.me {
            self.local.push(envelope);
        } else {
            let lane = envelope.lane() as usize;
            let bytes = envelope_bytes(&envelope);
            self.queued_bytes += bytes;
            let batch = &mut self.batches[to][lane];
            if batch.envelopes.capacity() == 0 {
                batch.envelopes.reserve(self.batch_hint[to][lane]);
            }
            batch.bytes += bytes;
            batch.envelopes.push(envelope);
        }
        self.queued += 1;
    }

    /// True when the outbox holds [`OUTBOX_FULL`] envelopes or more, or a lane's byte
    /// bound for other workers: the worker must handle and send what it holds before it
    /// takes more work. So no batch is much bigger than a lane holds.
    pub fn is_full(&self) -> bool {
        self.queued >= OUTBOX_FULL || self.queued_bytes >= self.mesh.max_bytes
    }

    /// True while the deliveries this worker could not send yet are few (within one
    /// lane's byte bound): it may take commands, whose routing makes more.
    pub fn may_take_commands(&self) -> bool {
        self.pending_delivery_bytes <= self.mesh.max_bytes
    }

    /// Takes what this worker addressed to itself, to be handled in place.
    pub fn take_local(&mut self) -> Batch {
        let local = std::mem::replace(&mut self.local, std::mem::take(&mut self.local_spare));
        self.queued -= local.len();
        local
    }

    /// Gives back a batch [`Outbox::take_local`] returned, once handled, for its capacity
    /// (up to [`LOCAL_KEPT`] envelopes are kept).
    pub fn return_local(&mut self, mut batch: Batch) {
        batch.clear();
        if batch.capacity() <= LOCAL_KEPT && batch.capacity() > self.local_spare.capacity() {
            self.local_spare = batch;
        }
    }

    /// Takes what is addressed to `to` (its commands, then its deliveries; this worker's
    /// own for itself), for tests that inspect routing without a mesh.
    #[cfg(test)]
    pub fn take_batch(&mut self, to: usize) -> Batch {
        let batch: Batch = if to == self.me {
            std::mem::take(&mut self.local)
        } else {
            let [commands, deliveries] = std::mem::take(&mut self.batches[to]);
            self.queued_bytes -= commands.bytes + deliveries.bytes;
            commands
                .envelopes
                .into_iter()
                .chain(deliveries.envelopes)
                .collect()
        };
        self.queued -= batch.len();
        batch
    }

    /// True when the next data envelope pushed sends every batch first (a subscription
    /// change for another worker was queued since the last send): the shard writes its log
    /// before that ([`crate::store::Store::flush`]).
    pub fn sends_on_next_data(&self) -> bool {
        self.control_queued
    }

    pub fn has_local(&self) -> bool {
        !self.local.is_empty()
    }

    /// Batches waiting in worker `to`'s inbound queue now, both lanes: how far it is behind
    /// (admission control's overload shedding and the catch-ups' pacing read it).
    pub fn batches_queued(&self, to: usize) -> usize {
        self.mesh.queue_len(to)
    }

    /// This worker (`me`) took a batch of `bytes` from its `lane`: they leave the lane's
    /// count.
    pub fn taken(&self, me: usize, lane: Lane, bytes: usize) {
        self.mesh.taken(me, lane, bytes);
    }

    /// Batches waiting for room in a peer's queue (monitoring).
    pub fn pending_batches(&self) -> usize {
        self.pending.len()
    }

    /// This worker waits for worker `on`'s progress (a catch-up for one of its
    /// connections): `on` wakes it after its next loop turn. Nothing for this worker itself.
    pub fn wake_me_after(&self, on: usize) {
        if on != self.me {
            self.mesh.wait_on(self.me, on);
        }
    }

    /// The loop turn ended: the workers waiting for this one's progress are woken.
    pub fn wake_waiters(&self) {
        self.mesh.wake_waiters(self.me);
    }

    /// True while batches wait for room: the worker must not read client sockets.
    pub fn is_blocked(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Sends the flow-control signals waiting, in order, until a lane is full.
    fn send_urgent(&mut self) {
        while let Some((to, envelope)) = self.urgent.pop_front() {
            if let Err(mut batch) = self.mesh.try_send_urgent(to, Sent::of(vec![envelope])) {
                let envelope = batch.envelopes.pop().expect("the batch sent");
                self.urgent.push_front((to, envelope));
                return;
            }
        }
    }

    /// Sends every batch for another worker, after any still waiting from earlier (signals
    /// first). What does not fit waits, in order.
    pub fn flush(&mut self) {
        self.send_urgent();
        self.control_queued = false;
        while let Some((to, lane, batch)) = self.pending.pop_front() {
            let bytes = (lane == Lane::Delivery).then_some(batch.bytes);
            match self.mesh.try_send(to, lane, batch) {
                Ok(()) => self.pending_delivery_bytes -= bytes.unwrap_or(0),
                Err(batch) => {
                    self.pending.push_front((to, lane, batch));
                    break;
                }
            }
        }
        for to in 0..self.batches.len() {
            for lane in Lane::ALL {
                let batch = std::mem::take(&mut self.batches[to][lane as usize]);
                if batch.envelopes.is_empty() {
                    continue;
                }
                self.queued -= batch.envelopes.len();
                self.queued_bytes -= batch.bytes;
                self.batch_hint[to][lane as usize] = batch.envelopes.len().min(OUTBOX_FULL);
                let batch = if self.pending.is_empty() {
                    match self.mesh.try_send(to, lane, batch) {
                        Ok(()) => continue,
                        Err(batch) => batch,
                    }
                } else {
                    batch
                };
                if lane == Lane::Delivery {
                    self.pending_delivery_bytes += batch.bytes;
                }
                self.pending.push_back((to, lane, batch));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh(n: usize, capacity: usize) -> (Mesh, Vec<Inbox>) {
        Mesh::new(Mesh::test_wakers(n), capacity, usize::MAX)
    }

    /// A worker waiting for another's progress is woken once, after that worker's turn,
    /// and only then; a worker never waits for itself.
    #[test]
    fn a_worker_waiting_for_another_is_woken_after_its_turn() {
        let mut polls: Vec<mio::Poll> = (0..2).map(|_| mio::Poll::new().unwrap()).collect();
        let wakers = polls
            .iter()
            .map(|p| Arc::new(Waker::new(p.registry(), mio::Token(7)).unwrap()))
            .collect();
        let (mesh, _inboxes) = Mesh::new(wakers, 4, usize::MAX);
        let woken = |poll: &mut mio::Poll| {
            let mut events = mio::Events::with_capacity(4);
            poll.poll(&mut events, Some(std::time::Duration::ZERO))
                .unwrap();
            !events.is_empty()
        };
        let (waiter, other) = (Outbox::new(1, mesh.clone()), Outbox::new(0, mesh));
        other.wake_waiters();
        assert!(!woken(&mut polls[1]), "woken though it waited for nothing");
        waiter.wake_me_after(0);
        waiter.wake_waiters();
        assert!(!woken(&mut polls[1]), "woken by its own turn");
        other.wake_waiters();
        assert!(woken(&mut polls[1]), "not woken after the other's turn");
        other.wake_waiters();
        assert!(!woken(&mut polls[1]), "woken twice for one wait");
        waiter.wake_me_after(1);
        waiter.wake_waiters();
        assert!(!woken(&mut polls[1]), "waited for itself");
        assert!(!woken(&mut polls[0]));
    }

    fn sub_change(worker: u16) -> Envelope {
        let conn = ConnId {
            worker,
            slot: 0,
            gen: 0,
        };
        Envelope::Subscribe(Box::new(SubscribeOp {
            filter: Bytes::from_static(b"_INBOX.x.*"),
            queue: None,
            sub: SubRef {
                conn,
                key: 0,
                id: 1,
            },
            start: None,
            lossless: false,
        }))
    }

    fn message(size: usize) -> Arc<Msg> {
        let origin = ConnId {
            worker: 0,
            slot: 0,
            gen: 0,
        };
        let mut msg = Msg::new(
            Bytes::from_static(b"req"),
            Bytes::from(vec![b'x'; size]),
            origin,
            Instant::now(),
        );
        msg.reply = Some(Bytes::from_static(b"_INBOX.x.1"));
        msg.no_responders = true;
        Arc::new(msg)
    }

    fn publish() -> Envelope {
        Envelope::Publish(message(0))
    }

    fn deliver(size: usize) -> Envelope {
        let sub = SubRef {
            conn: ConnId {
                worker: 1,
                slot: 0,
                gen: 0,
            },
            key: 0,
            id: 1,
        };
        Envelope::Deliver {
            sub,
            msg: message(size),
        }
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
            inboxes[2].lane_len(Lane::Command),
            1,
            "the change for worker 2 was sent first"
        );
        assert_eq!(inboxes[1].lane_len(Lane::Command), 1);
        assert_eq!(
            inboxes[1].try_recv(Lane::Command).unwrap().envelopes.len(),
            1,
            "only the change so far"
        );
        out.flush();
        assert!(matches!(
            inboxes[1].try_recv(Lane::Command).unwrap().envelopes[..],
            [Envelope::Publish(_)]
        ));
    }

    #[test]
    fn a_lanes_next_batch_is_sized_by_its_last_and_an_idle_lane_keeps_nothing() {
        let (mesh, inboxes) = mesh(2, 64);
        let mut out = Outbox::new(0, mesh);
        for _ in 0..1000 {
            out.push(1, deliver(10));
        }
        out.flush();
        assert_eq!(
            inboxes[1].try_recv(Lane::Delivery).unwrap().envelopes.len(),
            1000
        );
        assert_eq!(
            out.batches[1][Lane::Delivery as usize].envelopes.capacity(),
            0,
            "nothing reserved before the next push"
        );
        out.push(1, deliver(10));
        assert!(
            out.batches[1][Lane::Delivery as usize].envelopes.capacity() >= 1000,
            "the first push reserves what the last batch held: no doubling reallocations"
        );
        assert_eq!(
            out.batches[1][Lane::Command as usize].envelopes.capacity(),
            0
        );
    }

    #[test]
    fn a_full_queue_holds_everything_after_it_in_order() {
        let (mesh, inboxes) = mesh(3, 1);
        let mut out = Outbox::new(0, mesh);
        out.push(1, publish());
        out.flush();
        out.push(1, publish());
        out.push(2, deliver(10));
        out.flush();
        assert!(out.is_blocked());
        assert_eq!(
            inboxes[2].lane_len(Lane::Delivery),
            0,
            "waits behind the full queue of worker 1, even in another lane"
        );
        inboxes[1].try_recv(Lane::Command).unwrap();
        out.flush();
        assert!(!out.is_blocked());
        assert_eq!(inboxes[1].lane_len(Lane::Command), 1);
        assert_eq!(inboxes[2].lane_len(Lane::Delivery), 1);
    }

    #[test]
    fn a_lane_is_bounded_in_bytes_and_commands_wait_for_pending_deliveries() {
        let (mesh, inboxes) = Mesh::new(Mesh::test_wakers(2), 64, 10_000);
        let mut out = Outbox::new(0, mesh.clone());
        // An empty lane takes any batch, however big.
        out.push(1, deliver(50_000));
        out.flush();
        assert_eq!(inboxes[1].lane_len(Lane::Delivery), 1);
        assert!(out.may_take_commands());
        // Past its bound, the next batch waits, and with it the permission to take
        // commands (whose routing makes deliveries).
        out.push(1, deliver(50_000));
        out.flush();
        assert!(out.is_blocked());
        assert!(!out.may_take_commands());
        // The receiver takes its batch: the bytes leave the count, the rest goes.
        let batch = inboxes[1].try_recv(Lane::Delivery).unwrap();
        mesh.taken(1, Lane::Delivery, batch.bytes);
        out.flush();
        assert!(!out.is_blocked());
        assert!(out.may_take_commands());
        assert_eq!(inboxes[1].lane_len(Lane::Delivery), 1);
        assert_eq!(batch.bytes, batch_bytes(&batch.envelopes));
        assert_eq!(mesh.queued_bytes(1), batch.bytes);
    }

    /// A consumer's congestion and the stalls it causes leave at once, past a lane full
    /// of bytes and ahead of the bulk still waiting; when the lane is full in batches they
    /// wait, in order, and go first at the next flush.
    #[test]
    fn flow_control_signals_leave_at_once_and_in_order() {
        let (mesh, inboxes) = Mesh::new(Mesh::test_wakers(2), 3, 10_000);
        let mut out = Outbox::new(0, mesh.clone());
        let consumer = ConnId {
            worker: 0,
            slot: 3,
            gen: 1,
        };
        let signal = |n| Envelope::Congestion {
            conn: consumer,
            signal: Signal::On(n),
        };
        // The lane is over its byte bound, and more bulk waits behind it.
        out.push(1, deliver(50_000));
        out.flush();
        out.push(1, deliver(50_000));
        out.flush();
        assert!(out.is_blocked());
        // No flush: the signal is in the receiver's lane already.
        out.push(1, signal(1));
        assert_eq!(inboxes[1].lane_len(Lane::Delivery), 2);
        // The next takes the lane's last batch slot; the one after waits, in order.
        out.push(1, signal(2));
        out.push(1, signal(3));
        assert_eq!(inboxes[1].lane_len(Lane::Delivery), 3);
        let mut received = Vec::new();
        while let Some(batch) = inboxes[1].try_recv(Lane::Delivery) {
            mesh.taken(1, Lane::Delivery, batch.bytes);
            received.extend(batch.envelopes);
            out.flush();
        }
        let signals: Vec<u32> = received
            .iter()
            .filter_map(|e| match e {
                Envelope::Congestion {
                    signal: Signal::On(n),
                    ..
                } => Some(*n),
                _ => None,
            })
            .collect();
        assert_eq!(signals, [1, 2, 3]);
        // The first signal came before the bulk that was waiting when it was sent.
        assert!(matches!(received[1], Envelope::Congestion { .. }));
    }

    #[test]
    fn commands_and_deliveries_travel_in_their_own_lanes() {
        assert_eq!(publish().lane(), Lane::Command);
        assert_eq!(sub_change(0).lane(), Lane::Command);
        assert_eq!(deliver(1).lane(), Lane::Delivery);
        assert_eq!(Envelope::Shutdown.lane(), Lane::Delivery);
    }
}
