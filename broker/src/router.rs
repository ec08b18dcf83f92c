//! The router: where a worker sends what its connections ask for.
//!
//! Owns: this worker's [`Shard`], its [`Outbox`] for the other workers, and the decision of
//! where each publish and subscription change goes: a publish is routed here, by this
//! worker's shard (its ingress shard); a subscription change goes to every shard. It also
//! holds the presence of the rooms this worker is home to ([`Router::presence_home`]: one
//! worker per room, so one thread owns each), applies the joins, leaves and queries sent
//! to it, and publishes their answers and the rooms' join and leave events. It
//! holds the broker-wide count of text catch-ups in progress (`replay.rs`), shared by every
//! worker's router, which the connections take slots from and give them back to.
//!
//! It is the real [`Context`](crate::conn::Context) of this worker's connections: what
//! they may do to the broker and read from it goes through that trait
//! (`conn/context.rs`), which leaves the shard, the inbox and the outbox's batches out.
//!
//! Never: touches a socket or a connection.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::admission::Slots;
use crate::auth::{AuthHandle, Checker};
use crate::budget::{QueueBudget, SharedBudget};
use crate::config::Config;
use crate::conn::congestion::Signal;
use crate::dedupe::Dedupe;
use crate::index::{FastMap, FastSet};
use crate::latency::Latency;
use crate::mesh::{
    Answer, ConnId, Envelope, Inbox, LagOp, Lane, Mesh, Msg, Outbox, PresenceFrame, PresenceOp,
    ReplayRequest, ReplayStart, Sent, Start, SubRef, SubscribeOp, UnsubscribeOp,
};
use crate::presence::{self, ConnKey, PresenceEvent, PresenceLimits, Rooms};
use crate::replay::status_block;
use crate::shard::Shard;
use crate::stats::{bump, set, WorkerStats};
use crate::store::Store;
use tern_protocol::binary::ErrorCode;

pub(crate) struct Router {
    pub me: usize,
    pub shard: Shard,
    pub outbox: Outbox,
    /// Number of workers (and shards).
    pub workers: usize,
    pub config: Arc<Config>,
    pub stats: Arc<WorkerStats>,
    /// The text catch-ups in progress on the whole broker (shared by every worker, touched
    /// only when one starts or ends).
    pub replay_slots: Arc<Slots>,
    /// Subscriptions held on the whole broker (`max_total_subscriptions`).
    pub subscription_slots: Arc<Slots>,
    /// This worker's inbound queue.
    inbox: Inbox,
    /// Per lane, envelopes taken from the inbox and not handled yet (a budget ran out),
    /// in arrival order.
    deferred: [VecDeque<Envelope>; 2],
    next_sub_id: u64,
    /// The loop turn's instant (set by the worker when it wakes).
    pub now: Instant,
    /// When this worker last saw live traffic: a publish it read or routed, a delivery
    /// that was not a catch-up's. While it is recent, the worker paces its catch-ups.
    pub live_at: Option<Instant>,
    /// What this worker's subscription queues hold, against the broker-wide budget.
    pub budget: QueueBudget,
    /// The arrival number of the last message put in a subscription queue on this worker.
    last_arrival: u64,
    /// Congested consumers anywhere in the broker, with their congestion epoch: a message
    /// that reaches one stalls its publisher.
    pub congested: FastMap<ConnId, u32>,
    /// Consumers anywhere in the broker over their high-water mark (congested or stuck):
    /// catch-ups to one wait.
    pub backlogged: FastSet<ConnId>,
    /// Connections to wake at an instant (congestion judgements, stall deadlines), as
    /// (when, slot, generation), earliest first.
    pub timers: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    /// Broker latency of the deliveries this worker wrote.
    pub latency: Latency,
    /// The message ids table, on the one worker that reports its counts.
    dedupe: Option<Arc<Dedupe>>,
    /// Who may connect and what they may do (reloaded on SIGHUP).
    pub auth: Arc<AuthHandle>,
    /// Where costly credential checks go (bcrypt), off this worker's loop.
    pub checker: Checker,
    /// The presence of the rooms this worker is home to.
    pub rooms: Rooms,
    /// The bridges to NATS clusters: told when a subscription starts or ends.
    pub bridges: Option<Arc<tern_bridge::Hub>>,
}

/// The subject prefix of a room's join and leave events.
pub(crate) const PRESENCE_EVENTS: &[u8] = b"$TERN.PRESENCE.EVENTS.";

/// The subject a room's join and leave events are published on.
pub(crate) fn events_subject(room: &[u8]) -> Bytes {
    let mut topic = Vec::with_capacity(PRESENCE_EVENTS.len() + room.len());
    topic.extend_from_slice(PRESENCE_EVENTS);
    topic.extend_from_slice(room);
    Bytes::from(topic)
}

/// Presence's bounds, from the configuration.
fn presence_limits(config: &Config) -> PresenceLimits {
    let p = &config.presence;
    PresenceLimits {
        max_members: p.max_presence_members,
        max_info: p.max_presence_info,
        max_rooms: p.max_presence_rooms,
        grace: p.presence_grace,
    }
}

/// A connection's id as presence keys it.
fn key(conn: ConnId) -> ConnKey {
    ConnKey {
        worker: conn.worker,
        slot: conn.slot,
        gen: conn.gen,
    }
}

/// The broker-wide counts every worker's router shares (each an atomic, touched off the
/// publish path only).
#[derive(Clone)]
pub(crate) struct Shared {
    /// Text catch-ups in progress (`max_replays`).
    pub replay_slots: Arc<Slots>,
    /// Subscriptions held (`max_total_subscriptions`).
    pub subscription_slots: Arc<Slots>,
    /// Bytes reserved by the workers' subscription queues (`max_queued_bytes`).
    pub budget: Arc<SharedBudget>,
    /// The message ids the stores check (`None` without a store).
    pub dedupe: Option<Arc<Dedupe>>,
    /// The authentication rules.
    pub auth: Arc<AuthHandle>,
    /// The checker thread's queue.
    pub checker: Checker,
    /// The bridges to NATS clusters, told about local subscriptions (`None`: no bridge).
    pub bridges: Option<Arc<tern_bridge::Hub>>,
}

impl Router {
    pub fn new(
        me: usize,
        mesh: Mesh,
        inbox: Inbox,
        config: Arc<Config>,
        stats: Arc<WorkerStats>,
        store: Option<Store>,
        shared: Shared,
    ) -> Router {
        let Shared {
            replay_slots,
            subscription_slots,
            budget,
            dedupe,
            auth,
            checker,
            bridges,
        } = shared;
        let n = mesh.workers();
        let rooms = Rooms::new(presence_limits(&config));
        let mut shard = Shard::new(me, n, store);
        shard.bridges = bridges.clone();
        Router {
            me,
            shard,
            outbox: Outbox::new(me, mesh),
            workers: n,
            config,
            stats,
            replay_slots,
            subscription_slots,
            inbox,
            deferred: Default::default(),
            next_sub_id: 0,
            now: Instant::now(),
            live_at: None,
            budget: QueueBudget::new(budget),
            last_arrival: 0,
            congested: FastMap::default(),
            backlogged: FastSet::default(),
            timers: BinaryHeap::new(),
            latency: Latency::new(),
            // One worker reports the broker-wide table's counts: the workers' are summed.
            dedupe: dedupe.filter(|_| me == 0),
            auth,
            checker,
            rooms,
            bridges,
        }
    }

    /// An arrival number larger than every one handed out before on this worker: queued
    /// messages are ordered by it, across all of the worker's queues.
    pub fn next_arrival(&mut self) -> u64 {
        self.last_arrival += 1;
        self.last_arrival
    }

    /// Asks the worker to wake connection `conn` at `at` (`Session::on_timer`).
    pub fn wake_at(&mut self, at: Instant, conn: ConnId) {
        self.timers.push(Reverse((at, conn.slot, conn.gen)));
    }

    /// A consumer of this worker became congested, stuck or clear: every worker is told,
    /// for its catch-ups and, while stalling is on, its publishers. This worker's routing
    /// knows at once, the others as soon as the mesh takes the signal (`Outbox::push`);
    /// this worker's own publishers are released through its local batch.
    pub fn congestion(&mut self, conn: ConnId, signal: Signal) {
        match signal {
            Signal::On(_) => bump(&self.stats.congested_consumers, 1),
            Signal::Stuck(_) => bump(&self.stats.stuck_consumers, 1),
            Signal::Off(_) => {}
        }
        // This worker's shard routes by it from now on, not from the end of the turn.
        self.note_congestion(conn, signal);
        for to in 0..self.workers {
            self.outbox.push(to, Envelope::Congestion { conn, signal });
        }
    }

    /// What routing needs to know of a consumer's congestion: whose publishers to stall
    /// (`congested`) and whose catch-ups wait (`backlogged`).
    fn note_congestion(&mut self, conn: ConnId, signal: Signal) {
        match signal {
            Signal::On(epoch) => {
                if !self.config.flow.max_publisher_stall.is_zero() {
                    self.congested.insert(conn, epoch);
                }
                self.backlogged.insert(conn);
            }
            Signal::Stuck(epoch) | Signal::Off(epoch) => {
                if self.congested.get(&conn) == Some(&epoch) {
                    self.congested.remove(&conn);
                }
                self.shard.congestion_ended(conn);
                if matches!(signal, Signal::Off(_)) {
                    self.backlogged.remove(&conn);
                } else {
                    self.backlogged.insert(conn);
                }
            }
        }
    }

    /// A subscription id never used before on this worker.
    pub fn next_sub_id(&mut self) -> u64 {
        self.next_sub_id += 1;
        self.next_sub_id
    }

    /// The oldest envelope of `lane` set aside (by [`Router::set_aside`]). The worker
    /// takes these before any new batch of the lane, to keep arrival order.
    pub fn pop_set_aside(&mut self, lane: Lane) -> Option<Envelope> {
        self.deferred[lane as usize].pop_front()
    }

    /// The next batch of `lane` from the inbound queue, with what it counts for in the
    /// lane's byte bound. Only call when nothing of the lane is set aside.
    pub fn next_batch(&mut self, lane: Lane) -> Option<Sent> {
        debug_assert!(self.deferred[lane as usize].is_empty());
        let batch = self.inbox.try_recv(lane)?;
        self.outbox.taken(self.me, lane, batch.bytes);
        Some(batch)
    }

    /// Sets aside envelopes of `lane` the worker took but did not handle, after any
    /// already set aside.
    pub fn set_aside(&mut self, lane: Lane, rest: impl Iterator<Item = Envelope>) {
        self.deferred[lane as usize].extend(rest);
    }

    /// True when envelopes wait set aside (the worker must not sleep on them).
    pub fn has_set_aside(&self) -> bool {
        self.deferred.iter().any(|d| !d.is_empty())
    }

    /// Applies the commands in the inbound queue now (subscription changes, publishes to
    /// route: work for this shard), those set aside first, until the outbox is full.
    ///
    /// Called right after bytes are read from a client socket and before they are parsed.
    /// A client may publish because of something it was told (a `PONG` confirming a `SUB`
    /// sent by another client, say); everything that caused that was queued here before
    /// the bytes arrived, so draining after the read and before applying them means the
    /// publish always sees the subscription, even when it is routed right here. (When the
    /// outbox fills first, the connection applies nothing this time: `Session::may_apply`.)
    pub fn sync_inbox(&mut self) {
        let command = Lane::Command as usize;
        while !self.outbox.is_full() {
            let env = match self.deferred[command].pop_front() {
                Some(env) => env,
                None => match self.inbox.try_recv(Lane::Command) {
                    Some(batch) => {
                        self.outbox.taken(self.me, Lane::Command, batch.bytes);
                        self.deferred[command].extend(batch.envelopes);
                        continue;
                    }
                    None => return,
                },
            };
            if let Some(other) = self.apply(env) {
                // Not shard work (cannot happen in this lane): the worker handles it.
                self.deferred[Lane::Delivery as usize].push_back(other);
            }
        }
    }

    /// Applies an envelope that concerns only this shard (a message to route, a
    /// subscription change) and gives back any other, for the worker.
    pub fn apply(&mut self, env: Envelope) -> Option<Envelope> {
        match env {
            Envelope::Publish(msg) => self.route(msg),
            Envelope::Subscribe(op) => self.shard.subscribe_as(
                &op.filter,
                op.queue.as_ref(),
                (op.sub, op.lossless),
                &op.start,
                &mut self.outbox,
            ),
            Envelope::Lag(op) => self.shard.lag(
                op.sub,
                &op.filter,
                op.from,
                op.credit,
                op.lag,
                &mut self.outbox,
            ),
            Envelope::Grant { sub, credit } => self.shard.grant(&sub, credit),
            Envelope::Release { sub } => self.shard.release(&sub),
            Envelope::Unsubscribe(op) => {
                self.shard
                    .unsubscribe(&op.filter, op.queue.as_deref(), &op.sub)
            }
            Envelope::Congestion { conn, signal } => {
                // A signal of this worker's own consumer was noted when it was sent.
                if conn.worker as usize != self.me {
                    self.note_congestion(conn, signal);
                }
                // The worker releases the publishers it stalled for it.
                return Some(Envelope::Congestion { conn, signal });
            }
            Envelope::DuplicateAck {
                conn,
                ack_id,
                stamp,
            } => {
                // Behind everything this worker made before, sent or waiting to be (and
                // stored: the log first).
                self.shard.flush_store();
                self.outbox.flush();
                self.outbox.push(
                    conn.worker as usize,
                    Envelope::Ack {
                        conn,
                        ack_id,
                        stamp,
                        duplicate: true,
                    },
                );
            }
            Envelope::Replay(request) => self.shard.replay_request(request, &mut self.outbox),
            Envelope::Presence(op) => self.presence(*op),
            Envelope::ReplayCancel { conn } => self.shard.cancel_replays(conn),
            // Everything queued here before the barrier has been routed, and its deliveries
            // pushed ahead of this answer.
            Envelope::Barrier { conn, token } => self
                .outbox
                .push(conn.worker as usize, Envelope::BarrierDone { conn, token }),
            other => return Some(other),
        }
        None
    }

    /// The shard's timer (the store's checkpoint and fsync policy) and its store's failed
    /// writes, then (on one worker) the message ids table's counts, copied into this
    /// worker's stats.
    pub fn tick(&mut self, now: std::time::Instant) {
        self.shard.tick(now);
        for event in self.rooms.expire(now) {
            self.publish_presence_event(&event);
        }
        set(&self.stats.presence_rooms, self.rooms.rooms() as u64);
        set(
            &self.stats.presence_members,
            self.rooms.members_total() as u64,
        );
        set(&self.stats.store_errors, self.shard.store_errors());
        set(&self.stats.store_syncs, self.shard.store_syncs());
        if let Some(dedupe) = &self.dedupe {
            let (ids, evicted) = dedupe.counts();
            set(&self.stats.dedupe_ids, ids as u64);
            set(&self.stats.dedupe_evicted, evicted);
        }
    }

    /// Advances this shard's catch-ups by one bounded batch, and counts those that waited
    /// for a congested destination.
    pub fn pump_replays(&mut self, now: std::time::Instant) {
        let deferred = self
            .shard
            .pump_replays(now, &mut self.outbox, &self.backlogged);
        if deferred > 0 {
            bump(&self.stats.replays_deferred, deferred);
        }
    }

    /// Routes a message a connection of this worker published, here: this worker's shard
    /// sequences (and stores) it and sends its deliveries straight to the subscribers'
    /// workers. Every shard holds every subscription, so no publish ever crosses a worker
    /// before it is routed, and one connection's messages all take the same path to each
    /// subscriber, in the order it published them (docs/architecture.md, *Ordering*).
    pub fn publish(&mut self, msg: Arc<Msg>) {
        self.route(msg);
    }

    /// The worker whose inbound queue is deepest, and its depth in batches: where a
    /// publish's deliveries may wait longest (overload shedding).
    pub fn deepest_queue(&self) -> (usize, usize) {
        (0..self.workers)
            .map(|w| (w, self.outbox.batches_queued(w)))
            .max_by_key(|&(_, depth)| depth)
            .unwrap_or((self.me, 0))
    }

    /// The worker that is home to `subject`'s presence.
    pub fn presence_home(&self, subject: &[u8]) -> usize {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let h = BuildHasherDefault::<crate::index::FastHasher>::default().hash_one(subject);
        (h % self.workers as u64) as usize
    }

    /// Applies a join, leave, query or snapshot request at this room's home: answers the
    /// requester (a reply subject, or a binary connection's `PRESENCE` frame) and
    /// publishes the room's event, if any.
    fn presence(&mut self, op: PresenceOp) {
        let now = self.now;
        match op {
            PresenceOp::Join {
                subject,
                user,
                conn,
                client_id,
                info,
                answer,
            } => {
                let unix_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                match self
                    .rooms
                    .join(&subject, &user, key(conn), client_id, info, now, unix_ms)
                {
                    Ok(event) => {
                        bump(&self.stats.presence_joins, 1);
                        let count = self.rooms.count(&subject);
                        match answer {
                            Answer::None => {}
                            Answer::Inbox(inbox) => {
                                self.presence_answer(inbox, presence::count_json(&subject, count))
                            }
                            Answer::Frame { conn, id, .. } => {
                                self.presence_frame(conn, presence::joined_frame(id, &user, count))
                            }
                        }
                        if let Some(event) = event {
                            self.publish_presence_event(&event);
                        }
                    }
                    Err(refusal) => {
                        bump(&self.stats.presence_refused[refusal.kind() as usize], 1);
                        let text = refusal.to_string();
                        match answer {
                            Answer::None => {}
                            Answer::Inbox(inbox) => self.presence_status(
                                inbox,
                                status_block("409 Presence Refused", &text),
                            ),
                            Answer::Frame { conn, id, query } => self.presence_frame(
                                conn,
                                presence::refused_frame(
                                    id,
                                    query,
                                    ErrorCode::PresenceRefused,
                                    &text,
                                ),
                            ),
                        }
                    }
                }
            }
            PresenceOp::Leave {
                subject,
                conn,
                grace,
                reply,
            } => {
                let event = self.rooms.leave(&subject, key(conn), grace, now);
                if let Some(inbox) = reply {
                    let count = self.rooms.count(&subject);
                    self.presence_answer(inbox, presence::count_json(&subject, count));
                }
                if let Some(event) = event {
                    self.publish_presence_event(&event);
                }
            }
            PresenceOp::Query {
                subject,
                answer,
                offset,
                limit,
                count_only,
            } => {
                let (members, total) = if count_only {
                    (Vec::new(), self.rooms.count(&subject))
                } else {
                    self.rooms.members(&subject, offset, limit)
                };
                match answer {
                    Answer::None => {}
                    Answer::Inbox(inbox) => {
                        let body = if count_only {
                            presence::count_json(&subject, total)
                        } else {
                            presence::page_json(&subject, &members, total, offset)
                        };
                        self.presence_answer(inbox, body);
                    }
                    Answer::Frame { conn, id, .. } => {
                        for frame in presence::members_frames(id, true, &members, total, offset) {
                            self.presence_frame(conn, frame);
                        }
                    }
                }
            }
            PresenceOp::Snapshot { subject, sub } => self.presence_snapshot(&subject, sub),
        }
    }

    /// Sends `sub` (a subscription to `subject`'s events) the room's members, in pages: as
    /// deliveries on the events subject (JSON for a message, a `PRESENCE` frame for a
    /// binary presence subscription), behind the events this worker routed to it before,
    /// ahead of those it routes after; at the highest priority, so that a queue full of
    /// events drops those first.
    fn presence_snapshot(&mut self, subject: &Bytes, sub: SubRef) {
        let (members, total) = self.rooms.members(subject, 0, usize::MAX);
        let topic = events_subject(subject);
        let pages = presence::pages(&members, 0);
        let last = pages.len() - 1;
        for (i, (offset, page)) in pages.into_iter().enumerate() {
            let frame = presence::page_frame(0, false, i < last, total, offset, page);
            let body = presence::snapshot_json(subject, page, total, offset, i < last);
            let mut msg = Msg::new(topic.clone(), Bytes::from(body), ConnId::NONE, self.now);
            msg.ephemeral = true;
            msg.priority = tern_protocol::binary::MAX_PRIORITY;
            // A newer snapshot takes the place of an older one still queued (page for
            // page), rather than making the queue drop it, which would ask for another.
            // Events' keys are the room, a space and the member: never this.
            let mut key = subject.to_vec();
            key.extend_from_slice(format!("\nsnapshot {i}").as_bytes());
            msg.coalesce = Some(Bytes::from(key));
            msg.presence = Some(Box::new(PresenceFrame {
                frame,
                snapshot_end: i == last,
            }));
            self.outbox.push(
                sub.conn.worker as usize,
                Envelope::Deliver {
                    sub,
                    msg: Arc::new(msg),
                },
            );
        }
        bump(&self.stats.presence_snapshots, 1);
    }

    /// Sends a binary connection a `PRESENCE` frame (a join's or query's answer).
    fn presence_frame(&mut self, conn: ConnId, frame: Bytes) {
        self.outbox.push(
            conn.worker as usize,
            Envelope::PresenceAnswer { conn, frame },
        );
    }

    /// Publishes an answer to a presence request's inbox (never stored).
    fn presence_answer(&mut self, inbox: Bytes, body: Vec<u8>) {
        let mut msg = Msg::new(inbox, Bytes::from(body), ConnId::NONE, self.now);
        msg.ephemeral = true;
        self.route(Arc::new(msg));
    }

    /// Publishes a refusal as a status message on the requester's inbox.
    fn presence_status(&mut self, inbox: Bytes, block: String) {
        let mut msg = Msg::new(inbox, Bytes::new(), ConnId::NONE, self.now);
        msg.headers = Some(Bytes::from(block));
        msg.ephemeral = true;
        self.route(Arc::new(msg));
    }

    /// Publishes a join or leave on `$TERN.PRESENCE.EVENTS.<subject>`: never stored, at
    /// the lowest priority, and coalesced per room and member (a subscriber that falls
    /// behind keeps each member's latest state, not every change).
    fn publish_presence_event(&mut self, event: &PresenceEvent) {
        let subject = event.subject();
        let user = match event {
            PresenceEvent::Join { member, .. } => &member.user,
            PresenceEvent::Leave { user, .. } => user,
        };
        let topic = events_subject(subject);
        let mut key = subject.to_vec();
        key.push(b' ');
        key.extend_from_slice(user.as_bytes());
        let body = presence::event_json(event);
        let mut msg = Msg::new(topic, Bytes::from(body), ConnId::NONE, self.now);
        msg.ephemeral = true;
        msg.priority = 0;
        msg.coalesce = Some(Bytes::from(key));
        msg.presence = Some(Box::new(PresenceFrame {
            frame: presence::event_frame(event),
            snapshot_end: false,
        }));
        bump(&self.stats.presence_events, 1);
        self.route(Arc::new(msg));
    }

    /// Routes a message through this worker's shard.
    pub fn route(&mut self, msg: Arc<Msg>) {
        self.live_at = Some(self.now);
        if self.outbox.sends_on_next_data() {
            // Routing this sends what the outbox holds, the deliveries of messages this
            // turn stored among them: the log first.
            self.shard.flush_store();
        }
        let flow = (&self.congested, &self.backlogged);
        let routed = self.shard.route(msg, &mut self.outbox, flow);
        if routed.no_responders {
            bump(&self.stats.no_responders, 1);
        }
    }

    /// Sends a text client's catch-up request to the shards it reads (every shard, or the
    /// one it names), and says which.
    pub fn replay(&mut self, mut request: ReplayRequest) -> Range<usize> {
        let shards = match request.start {
            ReplayStart::FromSeq { shard, .. } => shard as usize..shard as usize + 1,
            _ => self.shards(),
        };
        request.shards = shards.len() as u16;
        let request = Arc::new(request);
        for shard in shards.clone() {
            if shard == self.me {
                self.shard
                    .replay_request(Arc::clone(&request), &mut self.outbox);
            } else {
                self.outbox
                    .push(shard, Envelope::Replay(Arc::clone(&request)));
            }
        }
        shards
    }

    /// Tells every shard to drop what is left of the catch-ups of `conn`, which closes.
    pub fn cancel_replays(&mut self, conn: ConnId) {
        for shard in 0..self.workers {
            if shard == self.me {
                self.shard.cancel_replays(conn);
            } else {
                self.outbox.push(shard, Envelope::ReplayCancel { conn });
            }
        }
    }

    /// Registers a subscription in every shard, and says which. The ring is kept from
    /// overtaking a `lossless` one's catch-ups (`shard.rs`, `Holds`).
    pub fn subscribe(
        &mut self,
        filter: &Bytes,
        queue: Option<&Bytes>,
        (sub, lossless): (SubRef, bool),
        start: Start,
    ) -> Range<usize> {
        let shards = self.shards();
        for shard in shards.clone() {
            if shard == self.me {
                self.shard
                    .subscribe_as(filter, queue, (sub, lossless), &start, &mut self.outbox);
            } else {
                self.outbox.push(
                    shard,
                    Envelope::Subscribe(Box::new(SubscribeOp {
                        filter: filter.clone(),
                        queue: queue.cloned(),
                        sub,
                        start: start.clone(),
                        lossless,
                    })),
                );
            }
        }
        shards
    }

    /// Removes a subscription from every shard, and says which.
    pub fn unsubscribe(
        &mut self,
        filter: &Bytes,
        queue: Option<&Bytes>,
        sub: SubRef,
    ) -> Range<usize> {
        let shards = self.shards();
        for shard in shards.clone() {
            if shard == self.me {
                self.shard.unsubscribe(filter, queue.map(|q| &q[..]), &sub);
            } else {
                self.outbox.push(
                    shard,
                    Envelope::Unsubscribe(Box::new(UnsubscribeOp {
                        filter: filter.clone(),
                        queue: queue.cloned(),
                        sub,
                    })),
                );
            }
        }
        shards
    }

    /// Sends a lossless subscription's fall-back to the log to one shard (see
    /// `Envelope::Lag`).
    pub fn lag(
        &mut self,
        shard: usize,
        sub: SubRef,
        filter: &Bytes,
        from: u64,
        credit: u32,
        lag: u64,
    ) {
        if shard == self.me {
            self.shard
                .lag(sub, filter, from, credit, lag, &mut self.outbox);
        } else {
            self.outbox.push(
                shard,
                Envelope::Lag(Box::new(LagOp {
                    sub,
                    filter: filter.clone(),
                    from,
                    credit,
                    lag,
                })),
            );
        }
    }

    /// Ends a merged subscription's catch-ups: every shard it is registered in goes live
    /// at the end of its log (see `merge.rs`).
    pub fn release(&mut self, shards: Range<usize>, sub: SubRef) {
        for shard in shards {
            if shard == self.me {
                self.shard.release(&sub);
            } else {
                self.outbox.push(shard, Envelope::Release { sub });
            }
        }
    }

    /// Lets one shard replay `credit` more messages to a lagging lossless subscription.
    pub fn grant(&mut self, shard: usize, sub: SubRef, credit: u32) {
        if shard == self.me {
            self.shard.grant(&sub, credit);
        } else {
            self.outbox.push(shard, Envelope::Grant { sub, credit });
        }
    }

    /// The shards a subscription is registered in: every one, since each routes what its
    /// own connections publish.
    pub fn shards(&self) -> Range<usize> {
        0..self.workers
    }
}
