//! A [`Context`] for unit tests: no worker, no router, no shard. It records what a session
//! asked of the broker (publishes, subscription changes, envelopes, catch-ups, congestion
//! signals, timers, credential checks, bridge interest) so that a test can assert on it,
//! and lets the test set what the session reads (configuration, the instant, the number of
//! workers, a full outbox).
//!
//! Never: routes anything. A publish is recorded, not delivered: a test that wants a
//! delivery hands it to the connection itself (`Conn::deliver`), as a shard would, and
//! answers barriers itself (`Conn::barrier_done`), as the shards would.

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::congestion::Signal;
use super::Context;
use crate::admission::Slots;
use crate::auth::{AuthHandle, Job};
use crate::budget::{QueueBudget, SharedBudget};
use crate::config::Config;
use crate::latency::Latency;
use crate::mesh::{ConnId, Envelope, Msg, ReplayRequest, Start, SubRef};
use crate::stats::WorkerStats;

/// One subscription change a session made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SubChange {
    pub filter: Bytes,
    pub queue: Option<Bytes>,
    pub sub: SubRef,
}

/// The fake context: settings in, records out. Every field is the test's to read or set.
pub(crate) struct FakeContext {
    pub me: usize,
    pub workers: usize,
    pub config: Config,
    pub stats: WorkerStats,
    pub now: Instant,
    pub budget: QueueBudget,
    pub latency: Latency,
    pub auth: AuthHandle,
    pub subscription_slots: Slots,
    pub replay_slots: Slots,
    /// What `outbox_full` answers.
    pub outbox_full: bool,
    /// What `deepest_queue` answers.
    pub deepest_queue: (usize, usize),
    /// What `check` answers (false: the checker is busy).
    pub checker_open: bool,
    /// Tokens `is_bridge_token` accepts.
    pub bridge_tokens: Vec<String>,

    /// Messages published, in order.
    pub published: Vec<Arc<Msg>>,
    /// Subscriptions registered, with their start, in order.
    pub subscribed: Vec<(SubChange, Start)>,
    /// Subscriptions removed, in order.
    pub unsubscribed: Vec<SubChange>,
    /// Envelopes sent to workers (`send`), as (worker, envelope), in order.
    pub sent: Vec<(usize, Envelope)>,
    /// Lossless fall-backs: (shard, sub, from, credit, lag).
    pub lags: Vec<(usize, SubRef, u64, u32, u64)>,
    /// Merged catch-ups released: (shards, sub).
    pub released: Vec<(Range<usize>, SubRef)>,
    /// Credit granted: (shard, sub, credit).
    pub grants: Vec<(usize, SubRef, u32)>,
    /// Text catch-ups started.
    pub replays: Vec<ReplayRequest>,
    /// Connections whose catch-ups were cancelled.
    pub cancelled: Vec<ConnId>,
    /// Congestion signals, in order.
    pub congestion: Vec<(ConnId, Signal)>,
    /// Timers asked for.
    pub timers: Vec<(Instant, ConnId)>,
    /// Credential checks handed to the checker.
    pub checks: Vec<Job>,
    /// Bridge interest: (filter, queue, up).
    pub bridge_interest: Vec<(String, Option<String>, bool)>,

    next_sub_id: u64,
    next_arrival: u64,
}

impl FakeContext {
    /// One worker of one, with `config`, nobody to authenticate, and nothing recorded yet.
    pub fn new(config: Config) -> FakeContext {
        let budget = QueueBudget::new(SharedBudget::new(config.flow.max_queued_bytes));
        FakeContext {
            me: 0,
            workers: 1,
            stats: WorkerStats::default(),
            now: Instant::now(),
            budget,
            latency: Latency::new(),
            auth: AuthHandle::new(tern_auth::Authenticator::none()),
            subscription_slots: Slots::new(1 << 20),
            replay_slots: Slots::new(16),
            outbox_full: false,
            deepest_queue: (0, 0),
            checker_open: true,
            bridge_tokens: Vec::new(),
            config,
            published: Vec::new(),
            subscribed: Vec::new(),
            unsubscribed: Vec::new(),
            sent: Vec::new(),
            lags: Vec::new(),
            released: Vec::new(),
            grants: Vec::new(),
            replays: Vec::new(),
            cancelled: Vec::new(),
            congestion: Vec::new(),
            timers: Vec::new(),
            checks: Vec::new(),
            bridge_interest: Vec::new(),
            next_sub_id: 0,
            next_arrival: 0,
        }
    }

    /// The barriers sent so far, as (worker, connection, token), in order.
    pub fn barriers(&self) -> Vec<(usize, ConnId, u64)> {
        self.sent
            .iter()
            .filter_map(|(to, env)| match env {
                Envelope::Barrier { conn, token } => Some((*to, *conn, *token)),
                _ => None,
            })
            .collect()
    }

    /// The subjects published so far, in order, as text.
    pub fn published_subjects(&self) -> Vec<String> {
        self.published
            .iter()
            .map(|m| String::from_utf8_lossy(&m.subject).into_owned())
            .collect()
    }
}

impl Context for FakeContext {
    fn me(&self) -> usize {
        self.me
    }

    fn workers(&self) -> usize {
        self.workers
    }

    fn shards(&self) -> Range<usize> {
        0..self.workers
    }

    fn config(&self) -> &Config {
        &self.config
    }

    fn stats(&self) -> &WorkerStats {
        &self.stats
    }

    fn now(&self) -> Instant {
        self.now
    }

    fn budget(&self) -> &QueueBudget {
        &self.budget
    }

    fn budget_mut(&mut self) -> &mut QueueBudget {
        &mut self.budget
    }

    fn latency(&mut self) -> &mut Latency {
        &mut self.latency
    }

    fn auth(&self) -> &AuthHandle {
        &self.auth
    }

    fn subscription_slots(&self) -> &Slots {
        &self.subscription_slots
    }

    fn replay_slots(&self) -> &Slots {
        &self.replay_slots
    }

    fn outbox_full(&self) -> bool {
        self.outbox_full
    }

    fn deepest_queue(&self) -> (usize, usize) {
        self.deepest_queue
    }

    /// Any fixed choice will do for a test: by the subject's length.
    fn presence_home(&self, subject: &[u8]) -> usize {
        subject.len() % self.workers
    }

    fn is_bridge_token(&self, token: &str) -> bool {
        self.bridge_tokens.iter().any(|t| t == token)
    }

    fn next_sub_id(&mut self) -> u64 {
        self.next_sub_id += 1;
        self.next_sub_id
    }

    fn next_arrival(&mut self) -> u64 {
        self.next_arrival += 1;
        self.next_arrival
    }

    fn publish(&mut self, msg: Arc<Msg>) {
        self.published.push(msg);
    }

    fn subscribe(
        &mut self,
        filter: &Bytes,
        queue: Option<&Bytes>,
        (sub, _lossless): (SubRef, bool),
        start: Start,
    ) -> Range<usize> {
        let change = SubChange {
            filter: filter.clone(),
            queue: queue.cloned(),
            sub,
        };
        self.subscribed.push((change, start));
        self.shards()
    }

    fn unsubscribe(&mut self, filter: &Bytes, queue: Option<&Bytes>, sub: SubRef) -> Range<usize> {
        self.unsubscribed.push(SubChange {
            filter: filter.clone(),
            queue: queue.cloned(),
            sub,
        });
        self.shards()
    }

    fn lag(&mut self, shard: usize, sub: SubRef, _: &Bytes, from: u64, credit: u32, lag: u64) {
        self.lags.push((shard, sub, from, credit, lag));
    }

    fn release(&mut self, shards: Range<usize>, sub: SubRef) {
        self.released.push((shards, sub));
    }

    fn grant(&mut self, shard: usize, sub: SubRef, credit: u32) {
        self.grants.push((shard, sub, credit));
    }

    fn replay(&mut self, request: ReplayRequest) -> Range<usize> {
        self.replays.push(request);
        self.shards()
    }

    fn cancel_replays(&mut self, conn: ConnId) {
        self.cancelled.push(conn);
    }

    fn send(&mut self, to: usize, env: Envelope) {
        self.sent.push((to, env));
    }

    fn congestion(&mut self, conn: ConnId, signal: Signal) {
        self.congestion.push((conn, signal));
    }

    fn wake_at(&mut self, at: Instant, conn: ConnId) {
        self.timers.push((at, conn));
    }

    fn check(&mut self, job: Job) -> bool {
        if !self.checker_open {
            return false;
        }
        self.checks.push(job);
        true
    }

    fn bridge_interest(&mut self, filter: &str, queue: Option<&str>, up: bool) {
        let interest = (filter.to_string(), queue.map(str::to_string), up);
        self.bridge_interest.push(interest);
    }
}
