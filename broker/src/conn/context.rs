//! What a connection's session sees of the rest of the broker: the narrow [`Context`] its
//! steps (`deliver`, `flush`, `tick`, applying what the client sent) work through, instead
//! of the worker's whole [`Router`].
//!
//! Owns: the list of what a session may do to the broker (publish, subscribe, unsubscribe,
//! start, release and cancel catch-ups, grant a lagging subscription credit, send an
//! envelope to a worker, say it is congested, ask for a timer, hand credentials to the
//! checker, tell the bridges about interest) and what it may read (configuration, this
//! worker's counters, the loop turn's instant, queue budget, authentication rules, the
//! broker's subscription and catch-up slots). [`Router`] is the real one; tests have a fake
//! that records what the session did (`conn/fake.rs`, used by `conn/session_tests.rs`).
//!
//! Never: hands out the shard, the inbox, the outbox or anything else a session could use
//! to reach another connection's state or a worker's internals; and never dispatches
//! dynamically: sessions are generic over it (`&mut impl Context`), so the publish and
//! delivery paths compile to the same direct calls into the router as before.
//!
//! Contract: what a session sends through [`Context::send`] and the routing calls reaches
//! each destination worker in the order the session made the calls (the outbox's causal
//! order); [`Context::now`] is the loop turn's instant and does not move within a turn.

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use crate::admission::Slots;
use crate::auth::{AuthHandle, Job};
use crate::budget::QueueBudget;
use crate::config::Config;
use crate::conn::congestion::Signal;
use crate::latency::Latency;
use crate::mesh::{ConnId, Envelope, Msg, ReplayRequest, Start, SubRef};
use crate::router::Router;
use crate::stats::WorkerStats;

use bytes::Bytes;

/// The broker as one connection's session sees it. See the module header.
pub(crate) trait Context {
    // What the session reads.

    /// This worker's index (and its shard's).
    fn me(&self) -> usize;
    /// Number of workers (and shards).
    fn workers(&self) -> usize;
    /// The shards a subscription is registered in.
    fn shards(&self) -> Range<usize>;
    /// The broker's configuration.
    fn config(&self) -> &Config;
    /// This worker's counters.
    fn stats(&self) -> &WorkerStats;
    /// The loop turn's instant.
    fn now(&self) -> Instant;
    /// What this worker's subscription queues hold, against the broker-wide budget.
    fn budget(&self) -> &QueueBudget;
    /// The same, to charge, release and list what the session's queues hold.
    fn budget_mut(&mut self) -> &mut QueueBudget;
    /// Broker latency of the deliveries this worker wrote.
    fn latency(&mut self) -> &mut Latency;
    /// Who may connect and what they may do.
    fn auth(&self) -> &AuthHandle;
    /// Subscriptions held on the whole broker (`max_total_subscriptions`).
    fn subscription_slots(&self) -> &Slots;
    /// Text catch-ups in progress on the whole broker (`max_replays`).
    fn replay_slots(&self) -> &Slots;
    /// True when the outbox takes nothing more this turn: operations that would send
    /// something wait in the read buffer.
    fn outbox_full(&self) -> bool;
    /// The worker whose inbound queue is deepest, and its depth in batches.
    fn deepest_queue(&self) -> (usize, usize);
    /// The worker that is home to `subject`'s presence.
    fn presence_home(&self, subject: &[u8]) -> usize;
    /// True when `token` is a bridge's: its connection is the broker's own.
    fn is_bridge_token(&self, token: &str) -> bool;

    // What the session does.

    /// A subscription id never used before on this worker.
    fn next_sub_id(&mut self) -> u64;
    /// An arrival number larger than every one handed out before on this worker.
    fn next_arrival(&mut self) -> u64;
    /// Routes a message the client published.
    fn publish(&mut self, msg: Arc<Msg>);
    /// Registers a subscription (`lossless` or not) in every shard, and says which.
    fn subscribe(
        &mut self,
        filter: &Bytes,
        queue: Option<&Bytes>,
        sub: (SubRef, bool),
        start: Start,
    ) -> Range<usize>;
    /// Removes a subscription from every shard, and says which.
    fn unsubscribe(&mut self, filter: &Bytes, queue: Option<&Bytes>, sub: SubRef) -> Range<usize>;
    /// Sends a lossless subscription's fall-back to the log to one shard.
    fn lag(&mut self, shard: usize, sub: SubRef, filter: &Bytes, from: u64, credit: u32, lag: u64);
    /// Ends a merged subscription's catch-ups in `shards`.
    fn release(&mut self, shards: Range<usize>, sub: SubRef);
    /// Lets one shard replay `credit` more messages to a lagging lossless subscription.
    fn grant(&mut self, shard: usize, sub: SubRef, credit: u32);
    /// Starts a text catch-up, and says which shards it went to.
    fn replay(&mut self, request: ReplayRequest) -> Range<usize>;
    /// Drops what is left of the catch-ups of `conn` in every shard.
    fn cancel_replays(&mut self, conn: ConnId);
    /// Sends `env` to worker `to` (barriers, presence operations), behind what the session
    /// sent it before.
    fn send(&mut self, to: usize, env: Envelope);
    /// A consumer of this worker became congested, stuck or clear.
    fn congestion(&mut self, conn: ConnId, signal: Signal);
    /// Asks the worker to wake connection `conn` at `at` (`Session::on_timer`).
    fn wake_at(&mut self, at: Instant, conn: ConnId);
    /// Hands a costly credential check to the checker thread; false when it is busy.
    fn check(&mut self, job: Job) -> bool;
    /// Tells the bridges that a client subscription started (`up`) or ended.
    fn bridge_interest(&mut self, filter: &str, queue: Option<&str>, up: bool);
}

impl Context for Router {
    #[inline]
    fn me(&self) -> usize {
        self.me
    }

    #[inline]
    fn workers(&self) -> usize {
        self.workers
    }

    #[inline]
    fn shards(&self) -> Range<usize> {
        Router::shards(self)
    }

    #[inline]
    fn config(&self) -> &Config {
        &self.config
    }

    #[inline]
    fn stats(&self) -> &WorkerStats {
        &self.stats
    }

    #[inline]
    fn now(&self) -> Instant {
        self.now
    }

    #[inline]
    fn budget(&self) -> &QueueBudget {
        &self.budget
    }

    #[inline]
    fn budget_mut(&mut self) -> &mut QueueBudget {
        &mut self.budget
    }

    #[inline]
    fn latency(&mut self) -> &mut Latency {
        &mut self.latency
    }

    #[inline]
    fn auth(&self) -> &AuthHandle {
        &self.auth
    }

    #[inline]
    fn subscription_slots(&self) -> &Slots {
        &self.subscription_slots
    }

    #[inline]
    fn replay_slots(&self) -> &Slots {
        &self.replay_slots
    }

    #[inline]
    fn outbox_full(&self) -> bool {
        self.outbox.is_full()
    }

    fn deepest_queue(&self) -> (usize, usize) {
        Router::deepest_queue(self)
    }

    fn presence_home(&self, subject: &[u8]) -> usize {
        Router::presence_home(self, subject)
    }

    fn is_bridge_token(&self, token: &str) -> bool {
        self.bridges
            .as_ref()
            .is_some_and(|hub| hub.is_bridge_token(token))
    }

    #[inline]
    fn next_sub_id(&mut self) -> u64 {
        Router::next_sub_id(self)
    }

    #[inline]
    fn next_arrival(&mut self) -> u64 {
        Router::next_arrival(self)
    }

    #[inline]
    fn publish(&mut self, msg: Arc<Msg>) {
        Router::publish(self, msg)
    }

    fn subscribe(
        &mut self,
        filter: &Bytes,
        queue: Option<&Bytes>,
        sub: (SubRef, bool),
        start: Start,
    ) -> Range<usize> {
        Router::subscribe(self, filter, queue, sub, start)
    }

    fn unsubscribe(&mut self, filter: &Bytes, queue: Option<&Bytes>, sub: SubRef) -> Range<usize> {
        Router::unsubscribe(self, filter, queue, sub)
    }

    fn lag(&mut self, shard: usize, sub: SubRef, filter: &Bytes, from: u64, credit: u32, lag: u64) {
        Router::lag(self, shard, sub, filter, from, credit, lag)
    }

    fn release(&mut self, shards: Range<usize>, sub: SubRef) {
        Router::release(self, shards, sub)
    }

    fn grant(&mut self, shard: usize, sub: SubRef, credit: u32) {
        Router::grant(self, shard, sub, credit)
    }

    fn replay(&mut self, request: ReplayRequest) -> Range<usize> {
        Router::replay(self, request)
    }

    fn cancel_replays(&mut self, conn: ConnId) {
        Router::cancel_replays(self, conn)
    }

    #[inline]
    fn send(&mut self, to: usize, env: Envelope) {
        self.outbox.push(to, env)
    }

    fn congestion(&mut self, conn: ConnId, signal: Signal) {
        Router::congestion(self, conn, signal)
    }

    fn wake_at(&mut self, at: Instant, conn: ConnId) {
        Router::wake_at(self, at, conn)
    }

    fn check(&mut self, job: Job) -> bool {
        self.checker.submit(job)
    }

    fn bridge_interest(&mut self, filter: &str, queue: Option<&str>, up: bool) {
        let Some(hub) = self.bridges.as_ref() else {
            return;
        };
        if up {
            hub.subscribed(filter, queue);
        } else {
            hub.unsubscribed(filter, queue);
        }
    }
}
