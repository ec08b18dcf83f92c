//! A shard: one worker's routing of what its own connections publish, and its log.
//!
//! Owns: an [`Index`] of every subscription on the broker (each shard holds all of them,
//! so a publish is routed where it was read, and one connection's messages reach each
//! subscriber by one path, in order) and the choice of receivers for each message: every
//! plain subscriber, exactly one member of each queue group (round robin per group), nobody for a publisher's own message when it said `echo: false`, and the
//! no-responders status when a request reaches nobody. It also owns the shard's sequence
//! and its [`Store`]: every message it routes is stamped with the time and, when the store
//! keeps its subject, appended to the ring log first (its sequence is the log's); a
//! publisher that asked for an acknowledgement gets one once the message is stored and
//! routed, and a repeated message id within the dedupe window is acknowledged with the
//! first copy's sequence and goes no further. A subscription that starts from a position
//! (resume token, time, last N) is told what the log no longer holds (a gap) before
//! anything else from this shard, then catches up from the log and goes live without gap
//! or duplicate (see `store.rs`).
//!
//! Exactly one thread ever touches a shard. Routing a message allocates nothing per
//! subscriber: deliveries share the message's `Arc` and go into per-worker batches. Its
//! cost does not grow with the size of a queue group: one member is picked in turn
//! ([`QueueGroups`]), no group is sorted or scanned whole.
//!
//! Its catch-ups wait while their window is full (the store counts what is in flight) and
//! while where their messages go is congested: a worker queue deeper than
//! `replay_queue_depth`, a blocked outbox, or the connection itself (a consumer over
//! its high-water mark, congested or stuck, as its worker told every worker: see
//! `conn/congestion.rs`).
//!
//! It also keeps a lossless subscription's catch-up ahead of the ring: a stored message
//! that brings the ring close to overwriting what the catch-up has yet to read holds its
//! publisher back (`Holds`), which its own worker applies.
//!
//! Never: touches a socket or a connection; it only produces envelopes (and the holds its
//! worker applies).

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use tern_protocol::binary::StartPosition;
use tern_protocol::headers::NO_RESPONDERS;

use crate::index::{FastMap, FastSet, Index};
use crate::merge;
use crate::mesh::{
    ConnId, Envelope, InboxPart, Msg, Outbox, ReplayRequest, ReplayStart, Stamp, Start, SubRef,
};
use crate::queue_group::QueueGroups;
use crate::store::{Appended, ReplayEvent, ReplaySink, ReplayState, Store};

pub(crate) struct Shard {
    id: usize,
    /// How many shards the broker has (one per worker).
    shards: usize,
    index: Index,
    /// Whose turn it is in each queue group.
    groups: QueueGroups,
    /// Without a store: the sequence the next message routed here gets (from 1). The
    /// shard holds no message, so "the oldest held" is always this.
    next_seq: u64,
    /// The ring log and what goes with it; `None` when nothing is stored.
    store: Option<Store>,
    /// The stalls this shard asked for, so that each is asked once per congestion.
    stalls: Stalls,
    /// Lossless subscriptions whose catch-up the ring may overtake, their publishers held
    /// back (`Store::lossless_at_risk`).
    holds: Holds,
    /// The wall clock at the start of this loop turn (ns since the Unix epoch): the time
    /// every message routed in the turn is stamped with, read once per turn rather than
    /// once per message.
    turn_ns: u64,
    /// The bridges to NATS clusters: for a subject they export and import, the local queue
    /// groups are members of upstream ones, and upstream picks (`Hub::arbitrates`).
    pub bridges: Option<Arc<tern_bridge::Hub>>,
}

/// The publishers this shard asked to stall, per congested consumer: a publisher is told
/// once per congestion epoch, however many of its messages reach the consumer.
#[derive(Debug, Default)]
struct Stalls {
    /// Congested consumer -> (its epoch, the publishers told).
    sent: FastMap<ConnId, (u32, Vec<ConnId>)>,
}

impl Stalls {
    /// Most (consumer, publisher) pairs remembered; past it the memory is cleared and
    /// publishers may be told twice (a stall is idempotent).
    const MAX_PAIRS: usize = 65_536;

    /// A message of `publisher` reached `consumer`, congested in `epoch`: asks the
    /// publisher's worker to stall it, unless already asked in this epoch.
    fn note(&mut self, publisher: ConnId, consumer: ConnId, epoch: u32, out: &mut Outbox) {
        if publisher == ConnId::NONE {
            return;
        }
        let (seen, told) = self.sent.entry(consumer).or_insert((epoch, Vec::new()));
        if *seen != epoch {
            *seen = epoch;
            told.clear();
        }
        if told.contains(&publisher) {
            return;
        }
        if told.len() >= Self::MAX_PAIRS {
            told.clear();
        }
        told.push(publisher);
        out.push(
            publisher.worker as usize,
            Envelope::Stall {
                publisher,
                consumer,
                epoch,
            },
        );
    }
}

/// The lossless subscriptions this shard holds publishers back for: when a stored message
/// matches a lossless subscription catching up or falling back through the log (a
/// consumer that still reads, not stuck) whose cursor the ring is about to overtake (the
/// log at least half full, more than half of what it holds still to read), its publisher
/// is not read (its worker stalls it, as for a congested consumer) until less than a
/// quarter is left to read, the catch-up ends, `max_publisher_stall` passes, or the
/// consumer is judged stuck (then it slows nobody, and what the ring overwrites is
/// reported as a gap). The publishers are this worker's own (a shard routes what its
/// worker read): no envelope is needed, the worker takes `held` as soon as the
/// publisher's read is applied, and asks every turn whom to release
/// (`Shard::take_released`).
#[derive(Debug, Default)]
struct Holds {
    /// The subscriptions at risk.
    at_risk: Vec<SubRef>,
    /// (publisher, consumer): publishers to stall now.
    held: Vec<(ConnId, ConnId)>,
}

/// What routing one message did, for the counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Routed {
    pub deliveries: usize,
    pub no_responders: bool,
}

impl Shard {
    pub fn new(id: usize, shards: usize, store: Option<Store>) -> Shard {
        Shard {
            id,
            shards,
            index: Index::default(),
            groups: QueueGroups::default(),
            next_seq: 1,
            store,
            stalls: Stalls::default(),
            holds: Holds::default(),
            turn_ns: unix_nanos(),
            bridges: None,
        }
    }

    /// A loop turn begins: reads the wall clock its messages are stamped with.
    pub fn new_turn(&mut self) {
        self.turn_ns = unix_nanos();
    }

    /// Whether catch-ups can advance (the worker must not sleep), or all wait for a
    /// congested destination (the worker comes back soon).
    pub fn replay_state(&self) -> ReplayState {
        self.store
            .as_ref()
            .map_or(ReplayState::Idle, Store::replay_state)
    }

    /// A consumer's congestion ended: forget whom this shard stalled for it.
    pub fn congestion_ended(&mut self, consumer: ConnId) {
        self.stalls.sent.remove(&consumer);
    }

    /// Appends, writes and syncs of this shard's ring file that failed so far.
    pub fn store_errors(&self) -> u64 {
        self.store.as_ref().map_or(0, Store::errors)
    }

    /// The syncs of this shard's ring file by its sync thread so far.
    pub fn store_syncs(&self) -> u64 {
        self.store.as_ref().map_or(0, Store::syncs)
    }

    /// Writes what this shard stored since the last flush to its ring file
    /// ([`Store::flush`]).
    pub fn flush_store(&mut self) {
        if let Some(store) = &mut self.store {
            store.flush();
        }
    }

    /// The store's timer (fsync policy).
    pub fn tick(&mut self, now: Instant) {
        if let Some(store) = &mut self.store {
            if let Err(e) = store.tick(now) {
                tracing::error!(shard = self.id, error = %e, "cannot sync the ring log");
            }
        }
    }

    /// A text client's catch-up request. Without a store there is nothing to replay: the
    /// end marker alone says so, and this shard's part is over at once.
    pub fn replay_request(&mut self, request: Arc<ReplayRequest>, out: &mut Outbox) {
        match &mut self.store {
            Some(store) => store.start_inbox_replay(request),
            None => {
                let shard = self.id as u16;
                let marker = crate::store::end_marker(&request, shard, 0, None, Instant::now());
                if matches!(request.start, ReplayStart::LastN(n) if n > 0) {
                    push_inbox(out, &request, shard, InboxPart::Counted(0));
                }
                let end = InboxPart::End(Arc::new(marker));
                push_inbox(out, &request, shard, end);
                push_replay_done(out, request.origin, request.id);
            }
        }
    }

    /// Drops what is left of the text catch-ups of `conn`, which closed.
    pub fn cancel_replays(&mut self, conn: ConnId) {
        if let Some(store) = &mut self.store {
            store.cancel_inbox_replays(conn);
        }
    }

    /// Advances the catch-ups in progress by one bounded batch. A catch-up waits while its
    /// window is full (`Store::pump`), while the outbox is blocked, while a worker its messages go through has more than
    /// `replay_queue_depth` batches waiting, or while its connection is in `backlogged`
    /// (over its high-water mark: congested or stuck).
    /// Returns how many waited.
    pub fn pump_replays(
        &mut self,
        now: Instant,
        out: &mut Outbox,
        backlogged: &FastSet<ConnId>,
    ) -> u64 {
        // Out of `self` for the pump, so the sink can ask the shard about congestion.
        let Some(mut store) = self.store.take() else {
            return 0;
        };
        let mut sink = Sink {
            shard: self,
            depth: store.replay_queue_depth(),
            out,
            backlogged,
        };
        let deferred = store.pump(self.id as u16, now, &mut sink);
        self.store = Some(store);
        deferred
    }

    /// True when a publisher must be held back now ([`Holds`]): its reading stops here.
    pub fn holds_publishers(&self) -> bool {
        !self.holds.held.is_empty()
    }

    /// Publishers to stall now, each for the consumer whose lossless catch-up its message
    /// brought the ring close to overtaking ([`Holds`]).
    pub fn take_held(&mut self) -> Vec<(ConnId, ConnId)> {
        std::mem::take(&mut self.holds.held)
    }

    /// Consumers whose held publishers may go: their catch-ups are out of danger or over,
    /// or they are stuck (in `backlogged` but not in `congested`) and slow nobody.
    pub fn take_released(
        &mut self,
        backlogged: &FastSet<ConnId>,
        congested: &FastMap<ConnId, u32>,
    ) -> Vec<ConnId> {
        let mut released = Vec::new();
        let store = self.store.as_ref();
        self.holds.at_risk.retain(|sub| {
            let stuck = backlogged.contains(&sub.conn) && !congested.contains_key(&sub.conn);
            let keep = !stuck && store.and_then(|s| s.lossless_at_risk(sub, 1)) == Some(true);
            if !keep {
                released.push(sub.conn);
            }
            keep
        });
        released
    }

    /// The subscription index, read by snapshots (monitoring).
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Registers a subscription. One that starts from a position is first told, through
    /// `out`, about the part of what it asked for that this shard no longer holds, then
    /// catches up from the log (`pump_replays`) before it gets live messages. Every one is
    /// told where in this shard's sequence it starts (`Envelope::Position`): a binary client
    /// keeps it in its resume token, a lossless subscription falls back from it.
    pub fn subscribe(
        &mut self,
        filter: &Bytes,
        queue: Option<&Bytes>,
        sub: SubRef,
        start: &Start,
        out: &mut Outbox,
    ) {
        self.subscribe_as(filter, queue, (sub, false), start, out);
    }

    /// [`Shard::subscribe`], for a subscription that may be `lossless`: the ring is then
    /// kept from overtaking its catch-up ([`Holds`]).
    pub fn subscribe_as(
        &mut self,
        filter: &Bytes,
        queue: Option<&Bytes>,
        (sub, lossless): (SubRef, bool),
        start: &Start,
        out: &mut Outbox,
    ) {
        let mut gap = None;
        // The first sequence the subscription gets from this shard.
        let mut first = self.store.as_ref().map_or(self.next_seq, Store::next_seq);
        // Its catch-ups from every shard are merged at its worker (`merge.rs`).
        let merged = merge::merges(start.as_deref(), self.shards);
        if let Some(start) = start.as_deref() {
            gap = match &mut self.store {
                Some(store) => {
                    let from = match start {
                        StartPosition::Live => None,
                        StartPosition::Resume(token) => {
                            Some(resume_from(&token.last_sequences, self.id))
                        }
                        StartPosition::Time(ns) => Some(store.seq_at_time(*ns)),
                        StartPosition::LastN(n) => {
                            store.start_last_n(sub, filter, *n, merged);
                            // Where its last N begin is not known yet; falling back before
                            // the first arrives replays from the oldest record held.
                            first = store.first_seq();
                            None
                        }
                    };
                    from.and_then(|from| {
                        first = from.max(store.first_seq());
                        store.start_replay(sub, filter, from, merged)
                    })
                }
                // Nothing is held: a resume behind the shard lost everything since.
                None => match start {
                    StartPosition::Resume(token) => {
                        let from = resume_from(&token.last_sequences, self.id);
                        (from < self.next_seq).then_some((from, self.next_seq))
                    }
                    _ => None,
                },
            };
        }
        // Where it starts here, for every subscription: a binary client folds it into the
        // subscription's resume token (`SUBSCRIBED`), a lossless one falls back from it.
        out.push(
            sub.conn.worker as usize,
            Envelope::Position {
                sub,
                shard: self.id as u16,
                last: first.saturating_sub(1),
            },
        );
        if let Some((requested, oldest)) = gap {
            push_gap(out, sub, self.id as u16, requested, oldest);
        }
        if merged && self.store.is_none() {
            // Nothing to replay here: counted and caught up at once.
            let shard = self.id as u16;
            if matches!(start.as_deref(), Some(StartPosition::LastN(n)) if *n > 0) {
                push_to_sub(
                    out,
                    sub,
                    Envelope::Counted {
                        sub,
                        shard,
                        sends: 0,
                    },
                );
            }
            push_to_sub(out, sub, Envelope::CaughtUp { sub, shard });
        }
        if let (true, Some(store)) = (lossless, &mut self.store) {
            store.mark_lossless(&sub);
        }
        self.index.insert(filter, queue, sub);
        self.groups.resize(self.index.queue_count());
    }

    /// A lossless subscription's queue overflowed: acknowledge (everything sent to it from
    /// here on comes from the new catch-up, then live), then replay from `from`, `credit`
    /// messages at a time. What the log no longer holds is reported as a gap first.
    pub fn lag(
        &mut self,
        sub: SubRef,
        filter: &Bytes,
        from: u64,
        credit: u32,
        lag: u64,
        out: &mut Outbox,
    ) {
        let shard = self.id as u16;
        out.push(
            sub.conn.worker as usize,
            Envelope::LagAck { sub, shard, lag },
        );
        if let Some(store) = &mut self.store {
            if let Some((requested, oldest)) = store.start_lag(sub, filter, from, credit) {
                push_gap(out, sub, shard, requested, oldest);
            }
        }
    }

    /// A lagging subscription has room for `credit` more replayed messages.
    pub fn grant(&mut self, sub: &SubRef, credit: u32) {
        if let Some(store) = &mut self.store {
            store.grant(sub, credit);
        }
    }

    /// Every shard of a merged catch-up has caught up: this one ends at the end of its log.
    pub fn release(&mut self, sub: &SubRef) {
        if let Some(store) = &mut self.store {
            store.release(sub);
        }
    }

    pub fn unsubscribe(&mut self, filter: &[u8], queue: Option<&[u8]>, sub: &SubRef) {
        self.index.remove(filter, queue, sub);
        if let Some(store) = &mut self.store {
            store.stop_replay(sub);
        }
    }

    /// Routes a message one of this worker's connections published (or this shard made):
    /// stamps it with the next sequence, finds its
    /// receivers and queues one delivery per receiver into `out`, addressed to the worker of
    /// the receiver's connection, then the publisher's acknowledgement if it asked for one.
    ///
    /// A delivery to a consumer in `congested` (a consumer over its high-water mark that
    /// is draining) also asks the publisher's worker to stall the publisher (once per
    /// congestion): this is how backpressure reaches publishers across workers.
    ///
    /// A message whose record brings the ring close to overtaking a lossless subscription's
    /// catch-up (or fall-back) holds its publisher back ([`Holds`]; `backlogged` without
    /// `congested`: stuck consumers, which hold nobody).
    pub fn route(
        &mut self,
        mut msg: Arc<Msg>,
        out: &mut Outbox,
        (congested, backlogged): (&FastMap<ConnId, u32>, &FastSet<ConnId>),
    ) -> Routed {
        let mut stored = false;
        if !msg.origin_only && !msg.ephemeral {
            let time_ns = self.turn_ns;
            let seq = match &mut self.store {
                Some(store) if store.keeps(&msg.subject) => {
                    match store.append(&msg, time_ns, msg.received) {
                        Ok(Appended::Stored(seq)) => {
                            stored = true;
                            seq
                        }
                        Ok(Appended::Duplicate(first)) => {
                            // The first copy's place, on whichever shard stored it.
                            let stamp = Stamp {
                                shard: first.shard,
                                seq: first.seq,
                                time_ns,
                            };
                            match msg.ack_id {
                                Some(ack_id) if usize::from(first.shard) != self.id => out.push(
                                    usize::from(first.shard),
                                    Envelope::DuplicateAck {
                                        conn: msg.origin,
                                        ack_id,
                                        stamp,
                                    },
                                ),
                                _ => self.ack(&msg, stamp, true, out),
                            }
                            return Routed::default();
                        }
                        Err(e) => {
                            tracing::error!(shard = self.id, error = %e, "cannot store a message; delivered unsequenced");
                            0
                        }
                    }
                }
                // Kept out of the log by the store filters: no sequence to resume from.
                Some(_) => 0,
                None => {
                    self.next_seq += 1;
                    self.next_seq - 1
                }
            };
            // The shard normally holds the only reference: stamped in place, no copy.
            let m = Arc::make_mut(&mut msg);
            m.stored |= stored;
            m.stamp = Stamp {
                shard: self.id as u16,
                seq,
                time_ns,
            };
        }
        let msg = &msg;
        let mut deliveries = 0;
        let groups = &mut self.groups;
        let store = self.store.as_ref();
        let wanted = |sub: &SubRef| {
            // A stored message reaches a subscription still catching up through the log.
            if stored && store.is_some_and(|s| s.is_replaying(sub)) {
                return false;
            }
            if msg.origin_only {
                sub.conn == msg.origin
            } else {
                !(msg.no_echo && sub.conn == msg.origin)
            }
        };
        let stalls = &mut self.stalls;
        let any_congested = !congested.is_empty();
        let mut deliver = |sub: SubRef| {
            out.push(
                sub.conn.worker as usize,
                Envelope::Deliver {
                    sub,
                    msg: Arc::clone(msg),
                },
            );
            if any_congested {
                if let Some(&epoch) = congested.get(&sub.conn) {
                    stalls.note(msg.origin, sub.conn, epoch, out);
                }
            }
            deliveries += 1;
        };
        // A bridge's copy is for some subscribers only (`tern_bridge::Route`).
        let route = msg.bridge_route.as_deref();
        let plain = route.is_none_or(|r| r.plain);
        // Every plain subscriber; and how many members each queue group has here.
        self.index.for_each_match(&msg.subject, |list| {
            if plain {
                for sub in list.plain().iter().filter(|s| wanted(s)) {
                    deliver(*sub);
                }
            }
            groups.count(list);
        });
        // One member of each queue group, in turn.
        if groups.any() {
            self.index
                .for_each_match(&msg.subject, |list| groups.scan(list, wanted));
            match route {
                Some(r) => {
                    let index = &self.index;
                    let ids: Vec<_> = r.groups.iter().filter_map(|g| index.queue_id(g)).collect();
                    groups.finish_where(|q| ids.contains(&q), &mut deliver);
                }
                // Upstream picks the member, here or elsewhere; the copy for one here
                // comes back through the bridge.
                None if self
                    .bridges
                    .as_ref()
                    .is_some_and(|h| h.arbitrates(&msg.subject)) =>
                {
                    groups.finish_where(|_| false, &mut deliver)
                }
                None => groups.finish(&mut deliver),
            }
        }
        // A lossless catch-up this message's record brings the ring closer to overtaking:
        // its publisher (one of this worker's connections) waits ([`Holds`]).
        // (Only this worker's connections: not the bridge's imports, no connection to hold.)
        let holds = &mut self.holds;
        if stored
            && store.is_some_and(Store::has_lossless_replays)
            && usize::from(msg.origin.worker) == self.id
            && !msg.origin.is_import()
        {
            self.index.for_each_match(&msg.subject, |list| {
                for sub in list.plain() {
                    let pair = (msg.origin, sub.conn);
                    if holds.held.last() == Some(&pair)
                        || (backlogged.contains(&sub.conn) && !congested.contains_key(&sub.conn))
                    {
                        continue;
                    }
                    if !holds.at_risk.contains(sub) {
                        if store.and_then(|s| s.lossless_at_risk(sub, 2)) != Some(true) {
                            continue;
                        }
                        holds.at_risk.push(*sub);
                    }
                    holds.held.push(pair);
                }
            });
        }
        self.ack(msg, msg.stamp, false, out);
        let no_responders = deliveries == 0 && msg.no_responders && !msg.origin_only;
        if no_responders {
            if let Some(reply) = &msg.reply {
                let mut status = Msg::new(reply.clone(), Bytes::new(), msg.origin, msg.received);
                status.headers = Some(Bytes::from_static(NO_RESPONDERS));
                status.origin_only = true;
                out.push(self.id, Envelope::Publish(Arc::new(status)));
            }
        }
        Routed {
            deliveries,
            no_responders,
        }
    }
}

impl Shard {
    /// Acknowledges a publish that asked for it: stored (or routed) with `stamp`.
    fn ack(&self, msg: &Msg, stamp: Stamp, duplicate: bool, out: &mut Outbox) {
        if let Some(ack_id) = msg.ack_id {
            out.push(
                msg.origin.worker as usize,
                Envelope::Ack {
                    conn: msg.origin,
                    ack_id,
                    stamp,
                    duplicate,
                },
            );
        }
    }
}

/// Where a shard's catch-ups go: its outbox, with the shard to ask about congestion.
struct Sink<'a> {
    shard: &'a Shard,
    out: &'a mut Outbox,
    depth: usize,
    backlogged: &'a FastSet<ConnId>,
}

impl ReplaySink for Sink<'_> {
    fn congested(&self, conn: ConnId) -> bool {
        self.out.is_blocked()
            || self.out.batches_queued(conn.worker as usize) > self.depth
            || self.backlogged.contains(&conn)
    }

    fn waited(&mut self, conn: ConnId) {
        self.out.wake_me_after(conn.worker as usize);
    }

    fn emit(&mut self, event: ReplayEvent) {
        let shard = self.shard.id as u16;
        let out = &mut *self.out;
        match event {
            ReplayEvent::Run(sub, run) => out.push(
                sub.conn.worker as usize,
                Envelope::DeliverRun {
                    sub,
                    run: Box::new(run),
                },
            ),
            ReplayEvent::Inbox(request, part) => push_inbox(out, &request, shard, part),
            ReplayEvent::Gap {
                sub,
                requested,
                oldest,
            } => push_gap(out, sub, shard, requested, oldest),
            ReplayEvent::Done { conn, id } => push_replay_done(out, conn, id),
            ReplayEvent::CaughtUp(sub) => push_to_sub(out, sub, Envelope::CaughtUp { sub, shard }),
            ReplayEvent::Counted { sub, sends } => {
                push_to_sub(out, sub, Envelope::Counted { sub, shard, sends })
            }
        }
    }
}

/// Sends a merged catch-up's news (`CaughtUp`, `Counted`) to the worker of its
/// subscription `sub`, behind the deliveries before it.
fn push_to_sub(out: &mut Outbox, sub: SubRef, env: Envelope) {
    out.push(sub.conn.worker as usize, env);
}

/// Sends what shard `shard`'s part of a text catch-up produced: to the requester's worker
/// when the catch-up spans several shards (it merges them, `merge.rs`), otherwise records
/// and the end marker to this shard's own routing (every shard holds every subscription).
fn push_inbox(out: &mut Outbox, request: &ReplayRequest, shard: u16, part: InboxPart) {
    if request.shards > 1 {
        let conn = request.origin;
        let (id, worker) = (request.id, conn.worker as usize);
        out.push(
            worker,
            Envelope::ReplayPart {
                conn,
                id,
                shard,
                part,
            },
        );
        return;
    }
    match part {
        InboxPart::Record(msg) | InboxPart::End(msg) => {
            out.push(usize::from(shard), Envelope::Publish(msg))
        }
        InboxPart::Counted(_) => {}
    }
}

/// Tells the worker of `conn` that this shard's part of its catch-up `id` is over.
fn push_replay_done(out: &mut Outbox, conn: ConnId, id: u64) {
    out.push(conn.worker as usize, Envelope::ReplayDone { conn, id });
}

/// Tells a subscription's worker that `requested..oldest` of `shard` are gone.
fn push_gap(out: &mut Outbox, sub: SubRef, shard: u16, requested: u64, oldest: u64) {
    out.push(
        sub.conn.worker as usize,
        Envelope::Gap {
            sub,
            shard,
            requested,
            oldest,
        },
    );
}

/// The first sequence of `shard` a resume token asks for: after the last one it saw.
fn resume_from(last_sequences: &[u64], shard: usize) -> u64 {
    last_sequences
        .get(shard)
        .copied()
        .unwrap_or(0)
        .saturating_add(1)
}

/// Now, in nanoseconds since the Unix epoch (0 if the clock is before it).
fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    //! Routing driven with scripted subscriptions and publishes, no network: each test
    //! asserts which deliveries the shard queues for which worker.

    use super::*;
    use crate::mesh::{ConnId, Mesh};

    fn conn(worker: u16, slot: u32) -> ConnId {
        ConnId {
            worker,
            slot,
            gen: 1,
        }
    }

    fn sub(c: ConnId, id: u64) -> SubRef {
        SubRef {
            conn: c,
            key: id as u32,
            id,
        }
    }

    fn msg(subject: &'static str, origin: ConnId) -> Arc<Msg> {
        Arc::new(Msg::new(
            Bytes::from_static(subject.as_bytes()),
            Bytes::from_static(b"x"),
            origin,
            std::time::Instant::now(),
        ))
    }

    /// The single-shard world: shard 0 routes everything, deliveries go to 2 workers.
    /// Routes with nobody congested or stuck.
    fn route(shard: &mut Shard, m: Arc<Msg>, out: &mut Outbox) -> Routed {
        shard.route(m, out, (&FastMap::default(), &FastSet::default()))
    }

    fn world() -> (Shard, Outbox) {
        (Shard::new(0, 1, None), Outbox::new(0, Mesh::for_tests(2)))
    }

    /// The subscription ids delivered, over both workers.
    fn delivered(out: &mut Outbox) -> Vec<u64> {
        let mut ids = Vec::new();
        for w in 0..2 {
            for env in out.take_batch(w) {
                if let Envelope::Deliver { sub, .. } = env {
                    assert_eq!(
                        sub.conn.worker as usize, w,
                        "delivery sent to the wrong worker"
                    );
                    ids.push(sub.id);
                }
            }
        }
        ids.sort();
        ids
    }

    #[test]
    fn plain_subscribers_all_get_it() {
        let (mut shard, mut out) = world();
        let (a, b) = (conn(0, 1), conn(1, 1));
        shard.subscribe(
            &Bytes::from_static(b"room.1"),
            None,
            sub(a, 1),
            &None,
            &mut out,
        );
        shard.subscribe(
            &Bytes::from_static(b"room.*"),
            None,
            sub(b, 2),
            &None,
            &mut out,
        );
        shard.subscribe(
            &Bytes::from_static(b"other"),
            None,
            sub(b, 3),
            &None,
            &mut out,
        );
        let r = route(&mut shard, msg("room.1", a), &mut out);
        assert_eq!(r.deliveries, 2);
        assert_eq!(delivered(&mut out), vec![1, 2]);
    }

    #[test]
    fn a_delivery_to_a_congested_consumer_stalls_its_publisher_once_per_congestion() {
        // Stalls for other workers leave at once (`Envelope::is_urgent`): read them from
        // the receivers' queues as well as from the outbox.
        let (mesh, inboxes) = Mesh::for_tests_open(2);
        let (mut shard, mut out) = (Shard::new(0, 1, None), Outbox::new(0, mesh));
        let (publisher, slow, fast) = (conn(1, 7), conn(0, 1), conn(1, 2));
        for (c, id) in [(slow, 1), (fast, 2)] {
            shard.subscribe(
                &Bytes::from_static(b"room.*"),
                None,
                sub(c, id),
                &None,
                &mut out,
            );
        }
        let stalls = |out: &mut Outbox| {
            let mut found = Vec::new();
            for (w, inbox) in inboxes.iter().enumerate() {
                let mut envelopes = out.take_batch(w);
                while let Some(batch) = inbox.try_recv(crate::mesh::Lane::Delivery) {
                    envelopes.extend(batch.envelopes);
                }
                for env in envelopes {
                    if let Envelope::Stall {
                        publisher,
                        consumer,
                        epoch,
                    } = env
                    {
                        assert_eq!(w, publisher.worker as usize, "to the publisher's worker");
                        found.push((publisher, consumer, epoch));
                    }
                }
            }
            found
        };
        let mut congested = FastMap::default();
        let stuck = FastSet::default();
        shard.route(msg("room.1", publisher), &mut out, (&congested, &stuck));
        assert!(stalls(&mut out).is_empty(), "nobody is congested");
        congested.insert(slow, 3);
        for _ in 0..5 {
            shard.route(msg("room.1", publisher), &mut out, (&congested, &stuck));
        }
        assert_eq!(stalls(&mut out), vec![(publisher, slow, 3)], "asked once");
        // A message replayed from a log has no publisher to stall.
        shard.route(msg("room.1", ConnId::NONE), &mut out, (&congested, &stuck));
        assert!(stalls(&mut out).is_empty());
        // Once the congestion ended, the next one asks again.
        shard.congestion_ended(slow);
        congested.insert(slow, 4);
        shard.route(msg("room.2", publisher), &mut out, (&congested, &stuck));
        assert_eq!(stalls(&mut out), vec![(publisher, slow, 4)]);
    }

    #[test]
    fn queue_group_round_robin_per_group() {
        let (mut shard, mut out) = world();
        let q1 = Bytes::from_static(b"q1");
        let q2 = Bytes::from_static(b"q2");
        let filter = Bytes::from_static(b"work");
        for id in 1..=3 {
            shard.subscribe(
                &filter,
                Some(&q1),
                sub(conn(id as u16 % 2, id as u32), id),
                &None,
                &mut out,
            );
        }
        // A member of the same group through a wildcard filter belongs to the same group.
        shard.subscribe(
            &Bytes::from_static(b"wor*"),
            Some(&q1),
            sub(conn(0, 9), 9),
            &None,
            &mut out,
        );
        shard.subscribe(
            &Bytes::from_static(b">"),
            Some(&q1),
            sub(conn(1, 4), 4),
            &None,
            &mut out,
        );
        shard.subscribe(&filter, Some(&q2), sub(conn(1, 5), 5), &None, &mut out);
        let mut counts = std::collections::BTreeMap::new();
        for _ in 0..400 {
            route(&mut shard, msg("work", conn(0, 0)), &mut out);
            let ids = delivered(&mut out);
            assert_eq!(ids.len(), 2, "one member of each group: {ids:?}");
            assert!(ids.contains(&5));
            for id in ids {
                *counts.entry(id).or_insert(0) += 1;
            }
        }
        // `wor*` is a literal token, so subscription 9 never matches "work".
        assert_eq!(counts.get(&9), None);
        for id in [1, 2, 3, 4] {
            assert_eq!(counts[&id], 100, "even spread: {counts:?}");
        }
        assert_eq!(counts[&5], 400);
    }

    #[test]
    fn echo_off_skips_only_the_publisher() {
        let (mut shard, mut out) = world();
        let (me, other) = (conn(0, 1), conn(1, 1));
        let f = Bytes::from_static(b"chat");
        shard.subscribe(&f, None, sub(me, 1), &None, &mut out);
        shard.subscribe(&f, None, sub(other, 2), &None, &mut out);
        let mut m = msg("chat", me);
        Arc::get_mut(&mut m).unwrap().no_echo = true;
        route(&mut shard, m, &mut out);
        assert_eq!(delivered(&mut out), vec![2]);
    }

    #[test]
    fn echo_off_passes_over_the_publishers_own_queue_members() {
        let (mut shard, mut out) = world();
        let (me, other) = (conn(0, 1), conn(1, 1));
        let q = Bytes::from_static(b"q");
        // The publisher holds three members of the group, over two filters (`job`, `>`);
        // another connection holds two, one of them on a filter that does not match.
        for (filter, c, id) in [("job", me, 1), ("job", me, 2), ("j*b", other, 3)] {
            let f = Bytes::from_static(filter.as_bytes());
            shard.subscribe(&f, Some(&q), sub(c, id), &None, &mut out);
        }
        shard.subscribe(
            &Bytes::from_static(b">"),
            Some(&q),
            sub(me, 4),
            &None,
            &mut out,
        );
        shard.subscribe(
            &Bytes::from_static(b"*"),
            Some(&q),
            sub(other, 5),
            &None,
            &mut out,
        );
        for _ in 0..10 {
            let mut m = msg("job", me);
            Arc::get_mut(&mut m).unwrap().no_echo = true;
            assert_eq!(route(&mut shard, m, &mut out).deliveries, 1);
            // `j*b` is a literal token: only 5 is another connection's member here.
            assert_eq!(delivered(&mut out), vec![5]);
        }
        // With echo on, every member takes its turn.
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..4 {
            route(&mut shard, msg("job", me), &mut out);
            seen.extend(delivered(&mut out));
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![1, 2, 4, 5]);
    }

    #[test]
    fn no_responders_sends_a_status_to_the_origin_only() {
        let (mut shard, mut out) = world();
        let requester = conn(1, 7);
        let mut m = msg("service", requester);
        {
            let m = Arc::get_mut(&mut m).unwrap();
            m.no_responders = true;
            m.reply = Some(Bytes::from_static(b"_INBOX.abc.1"));
        }
        let r = route(&mut shard, m, &mut out);
        assert!(r.no_responders);
        let mut batch = out.take_batch(0);
        assert_eq!(batch.len(), 1);
        let Some(Envelope::Publish(status)) = batch.pop() else {
            panic!("expected the status publish");
        };
        assert_eq!(&status.subject[..], b"_INBOX.abc.1");
        assert_eq!(status.headers.as_deref(), Some(NO_RESPONDERS));
        assert!(status.origin_only);
        // Routing the status reaches the requester's inbox and nobody else's.
        let inbox = Bytes::from_static(b"_INBOX.abc.*");
        shard.subscribe(&inbox, None, sub(requester, 1), &None, &mut out);
        shard.subscribe(&inbox, None, sub(conn(0, 3), 2), &None, &mut out);
        let r = route(&mut shard, status, &mut out);
        assert_eq!(r.deliveries, 1);
        assert!(!r.no_responders);
        assert_eq!(delivered(&mut out), vec![1]);
    }

    #[test]
    fn unsubscribe_stops_delivery() {
        let (mut shard, mut out) = world();
        let f = Bytes::from_static(b"a.>");
        let s = sub(conn(0, 1), 1);
        shard.subscribe(&f, None, s, &None, &mut out);
        route(&mut shard, msg("a.b", conn(1, 1)), &mut out);
        assert_eq!(delivered(&mut out), vec![1]);
        shard.unsubscribe(&f, None, &s);
        route(&mut shard, msg("a.b", conn(1, 1)), &mut out);
        assert!(delivered(&mut out).is_empty());
    }

    #[test]
    fn messages_are_stamped_in_sequence_and_acked_to_their_publisher() {
        let (mut shard, mut out) = world();
        let publisher = conn(1, 4);
        shard.subscribe(
            &Bytes::from_static(b"s"),
            None,
            sub(conn(0, 1), 1),
            &None,
            &mut out,
        );
        // Where the subscription starts (nothing before it): the first thing it is sent.
        let start = out.take_batch(0);
        let [Envelope::Position {
            shard: 0, last: 0, ..
        }] = &start[..]
        else {
            panic!("its start: {start:?}");
        };
        for expected in 1..=3u64 {
            let mut m = msg("s", publisher);
            Arc::get_mut(&mut m).unwrap().ack_id = Some(100 + expected);
            route(&mut shard, m, &mut out);
            let delivered = out.take_batch(0);
            let [Envelope::Deliver { msg, .. }] = &delivered[..] else {
                panic!("one delivery: {delivered:?}");
            };
            assert_eq!((msg.stamp.shard, msg.stamp.seq), (0, expected));
            assert!(msg.stamp.time_ns > 0);
            let acks = out.take_batch(1);
            let [Envelope::Ack {
                conn,
                ack_id,
                stamp,
                duplicate: false,
            }] = &acks[..]
            else {
                panic!("one ack for the publisher's worker: {acks:?}");
            };
            assert_eq!(
                (*conn, *ack_id, *stamp),
                (publisher, 100 + expected, msg.stamp)
            );
        }
    }

    #[test]
    fn a_resume_past_what_the_shard_holds_gets_a_gap_first() {
        use tern_protocol::binary::ResumeToken;
        let (mut shard, mut out) = world();
        for _ in 0..5 {
            route(&mut shard, msg("s", conn(0, 0)), &mut out);
        }
        let resume = |last: u64| -> Start {
            Some(Arc::new(StartPosition::Resume(ResumeToken {
                epoch: 7,
                last_sequences: vec![last],
            })))
        };
        let f = Bytes::from_static(b"s");
        shard.subscribe(&f, None, sub(conn(1, 1), 1), &resume(2), &mut out);
        let batch = out.take_batch(1);
        // Its start here (after the gap: 5, the last sequence before the first it gets),
        // then the gap.
        let [Envelope::Position { last: 5, .. }, Envelope::Gap {
            sub: gapped,
            shard: 0,
            requested: 3,
            oldest: 6,
        }] = &batch[..]
        else {
            panic!("its start, then a gap from 3 up to 6: {batch:?}");
        };
        assert_eq!(gapped.id, 1);
        // Up to date, or live: no gap, only where each starts.
        shard.subscribe(&f, None, sub(conn(1, 2), 2), &resume(5), &mut out);
        shard.subscribe(&f, None, sub(conn(1, 3), 3), &None, &mut out);
        let batch = out.take_batch(1);
        assert!(
            batch
                .iter()
                .all(|e| matches!(e, Envelope::Position { last: 5, .. })),
            "{batch:?}"
        );
        assert_eq!(batch.len(), 2);
    }
}
