//! The router: where a worker sends what its connections ask for.
//!
//! Owns: this worker's [`Shard`], its [`Outbox`] for the other workers, and the decision of
//! where each publish and subscription change goes: the owner shard of a literal subject
//! (handled in place when that is this worker), or every shard for a wildcard filter. It
//! holds the broker-wide count of text catch-ups in progress (`replay.rs`), shared by every
//! worker's router, which the connections take slots from and give them back to.
//!
//! Never: touches a socket or a connection.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use tern_protocol::subject;

use crate::config::Config;
use crate::mesh::{
    Batch, ConnId, Envelope, Inbox, Mesh, Msg, Outbox, ReplayRequest, Start, SubRef,
};
use crate::replay::ReplaySlots;
use crate::shard::Shard;
use crate::stats::{bump, set, WorkerStats};
use crate::store::Store;

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
    pub replay_slots: Arc<ReplaySlots>,
    /// This worker's inbound queue.
    inbox: Inbox,
    /// Envelopes taken from the inbox by [`Router::sync_inbox`] that need the worker's
    /// connections (deliveries, snapshots, shutdown), in arrival order.
    deferred: VecDeque<Envelope>,
    next_sub_id: u64,
}

impl Router {
    pub fn new(
        me: usize,
        mesh: Mesh,
        inbox: Inbox,
        config: Arc<Config>,
        stats: Arc<WorkerStats>,
        store: Option<Store>,
        replay_slots: Arc<ReplaySlots>,
    ) -> Router {
        let n = mesh.workers();
        Router {
            me,
            shard: Shard::new(me, n, store),
            outbox: Outbox::new(me, mesh),
            workers: n,
            config,
            stats,
            replay_slots,
            inbox,
            deferred: VecDeque::new(),
            next_sub_id: 0,
        }
    }

    /// A subscription id never used before on this worker.
    pub fn next_sub_id(&mut self) -> u64 {
        self.next_sub_id += 1;
        self.next_sub_id
    }

    /// The oldest envelope set aside (by [`Router::sync_inbox`] or [`Router::set_aside`]).
    /// The worker takes these before any new batch, to keep arrival order.
    pub fn pop_set_aside(&mut self) -> Option<Envelope> {
        self.deferred.pop_front()
    }

    /// The next batch from the inbound queue. Only call when nothing is set aside.
    pub fn next_batch(&mut self) -> Option<Batch> {
        debug_assert!(self.deferred.is_empty());
        self.inbox.try_recv().ok()
    }

    /// Sets aside envelopes the worker took but did not handle, after any already set
    /// aside.
    pub fn set_aside(&mut self, rest: impl Iterator<Item = Envelope>) {
        self.deferred.extend(rest);
    }

    /// True when envelopes wait set aside (the worker must not sleep on them).
    pub fn has_set_aside(&self) -> bool {
        !self.deferred.is_empty()
    }

    /// Applies what is in the inbound queue now that concerns only this shard
    /// (subscription changes, publishes to route), and sets the rest aside for the worker.
    ///
    /// Called right after bytes are read from a client socket and before they are parsed.
    /// A client may publish because of something it was told (a `PONG` confirming a `SUB`
    /// sent by another client, say); everything that caused that was queued here before
    /// the bytes arrived, so draining after the read and before applying them means the
    /// publish always sees the subscription, even when it is routed right here.
    pub fn sync_inbox(&mut self) {
        while let Ok(batch) = self.inbox.try_recv() {
            for env in batch {
                if let Some(other) = self.apply(env) {
                    self.deferred.push_back(other);
                }
            }
        }
    }

    /// Applies an envelope that concerns only this shard (a publish it owns, a
    /// subscription change) and gives back any other, for the worker.
    pub fn apply(&mut self, env: Envelope) -> Option<Envelope> {
        match env {
            Envelope::Publish(msg) => self.route(msg),
            Envelope::Subscribe {
                filter,
                queue,
                sub,
                start,
                lossless,
            } => self.shard.subscribe(
                &filter,
                queue.as_ref(),
                sub,
                &start,
                lossless,
                &mut self.outbox,
            ),
            Envelope::Lag {
                sub,
                filter,
                from,
                credit,
                lag,
            } => self
                .shard
                .lag(sub, &filter, from, credit, lag, &mut self.outbox),
            Envelope::Grant { sub, credit } => self.shard.grant(&sub, credit),
            Envelope::Unsubscribe { filter, queue, sub } => {
                self.shard.unsubscribe(&filter, queue.as_deref(), &sub)
            }
            Envelope::Replay(request) => self.shard.replay_request(request, &mut self.outbox),
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

    /// The shard's timer (the store's checkpoint and fsync policy), then the counters the
    /// store keeps itself, copied into this worker's stats.
    pub fn tick(&mut self, now: std::time::Instant) {
        self.shard.tick(now);
        let (ids, evicted) = self.shard.dedupe_counts();
        set(&self.stats.dedupe_ids, ids as u64);
        set(&self.stats.dedupe_evicted, evicted);
    }

    /// Advances this shard's catch-ups by one bounded batch, and counts those that waited
    /// for a congested destination.
    pub fn pump_replays(&mut self, now: std::time::Instant) {
        let deferred = self.shard.pump_replays(now, &mut self.outbox);
        if deferred > 0 {
            bump(&self.stats.replays_deferred, deferred);
        }
    }

    /// Hands a message to the shard that owns its subject, and says which shard that is.
    pub fn publish(&mut self, msg: Arc<Msg>) -> usize {
        let owner = self.shard.owner(&msg.subject);
        if owner == self.me {
            self.route(msg);
        } else {
            self.outbox.push(owner, Envelope::Publish(msg));
        }
        owner
    }

    /// Routes a message this worker's shard owns.
    pub fn route(&mut self, msg: Arc<Msg>) {
        let routed = self.shard.route(msg, &mut self.outbox);
        if routed.no_responders {
            bump(&self.stats.no_responders, 1);
        }
    }

    /// Sends a text client's catch-up request to the shards its filter can match in, and
    /// says which.
    pub fn replay(&mut self, mut request: ReplayRequest) -> Range<usize> {
        let shards = self.shards_for(&request.filter);
        request.shards = shards.len() as u16;
        request.inbox_owner = self.shard.owner(&request.inbox) as u16;
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

    /// Registers a subscription in the shards its filter can match in, and says which.
    pub fn subscribe(
        &mut self,
        filter: &Bytes,
        queue: Option<&Bytes>,
        sub: SubRef,
        start: Start,
        lossless: bool,
    ) -> Range<usize> {
        let shards = self.shards_for(filter);
        for shard in shards.clone() {
            if shard == self.me {
                self.shard
                    .subscribe(filter, queue, sub, &start, lossless, &mut self.outbox);
            } else {
                self.outbox.push(
                    shard,
                    Envelope::Subscribe {
                        filter: filter.clone(),
                        queue: queue.cloned(),
                        sub,
                        start: start.clone(),
                        lossless,
                    },
                );
            }
        }
        shards
    }

    /// Removes a subscription from the shards it was registered in, and says which.
    pub fn unsubscribe(
        &mut self,
        filter: &Bytes,
        queue: Option<&Bytes>,
        sub: SubRef,
    ) -> Range<usize> {
        let shards = self.shards_for(filter);
        for shard in shards.clone() {
            if shard == self.me {
                self.shard.unsubscribe(filter, queue.map(|q| &q[..]), &sub);
            } else {
                self.outbox.push(
                    shard,
                    Envelope::Unsubscribe {
                        filter: filter.clone(),
                        queue: queue.cloned(),
                        sub,
                    },
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
                Envelope::Lag {
                    sub,
                    filter: filter.clone(),
                    from,
                    credit,
                    lag,
                },
            );
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

    /// The shards a filter is registered in: its owner when literal, all when wildcard.
    pub fn shards_for(&self, filter: &[u8]) -> Range<usize> {
        if subject::is_literal(filter) {
            let owner = self.shard.owner(filter);
            owner..owner + 1
        } else {
            0..self.workers
        }
    }
}
