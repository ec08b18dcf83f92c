//! Admission control: the decisions that refuse (or slow) work early, before it costs the
//! broker anything, and the state they keep.
//!
//! Owns:
//! - [`TokenBucket`], the rate limiter every rate here uses (exact integer arithmetic,
//!   driven by the `Instant`s it is given: it never reads a clock);
//! - [`ConnectionGate`], the state shared by every worker's accept path: open connections
//!   in total and per client IP, the new-connections-per-second bucket, and the addresses
//!   held back after repeated failed authentications ([`AuthBackoff`]), and how many
//!   connections each worker is home to; and [`ConnSlot`], a connection's place in it
//!   (its worker among them), released exactly once when the slot is dropped (with its
//!   connection, or on the refused or failed-registration path that never made one);
//! - [`ConnAdmission`], one connection's own publish buckets (per connection and per
//!   subject pattern) and its throttle;
//! - [`sheds`], the overload-shedding decision.
//!
//! Connections are accepted by every worker (`SO_REUSEPORT`), so the connection limits, and
//! how many connections each worker is home to, are global state: the gate keeps it under
//! one small `Mutex`. That is the accept path, never the publish path: the lock is taken
//! once when a connection arrives and once when it closes, is held for a few hundred
//! nanoseconds, and only workers accepting or closing at the same instant ever wait on it. Publish limits are the opposite: each connection owns
//! its buckets, allocated when it is accepted and touched only by its worker, so admitting
//! a publish takes no lock, touches no shared memory and allocates nothing.
//!
//! Never: touches a socket, writes to a client, or reads the clock. The connection and
//! worker code turn these decisions into errors, pauses and counters.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tern_protocol::subject;

use crate::config::{AdmissionConfig, RateAction, RateLimit};

/// Token amounts are kept in billionths of a token, so that refilling for `n` nanoseconds
/// at `r` tokens per second adds exactly `n × r` units: no rounding drift.
const SCALE: i128 = 1_000_000_000;

/// A token bucket: `capacity` tokens at most, refilled at `rate` tokens per second; it
/// starts full.
///
/// A cost above the capacity (one message bigger than a bytes burst) is taken from a full
/// bucket and leaves it in debt, which refilling repays: the long-run rate holds for any
/// message size, and no message is refused forever.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    /// Tokens per second.
    rate: i128,
    /// Scaled.
    capacity: i128,
    /// Scaled; negative while in debt.
    tokens: i128,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket; `None` when `rate` is 0 (no limit).
    pub fn new(rate: u64, burst: u64, now: Instant) -> Option<TokenBucket> {
        (rate > 0).then(|| {
            let capacity = i128::from(burst.max(1)) * SCALE;
            TokenBucket {
                rate: i128::from(rate),
                capacity,
                tokens: capacity,
                last: now,
            }
        })
    }

    fn refill(&mut self, now: Instant) {
        if now > self.last {
            let ns = now.duration_since(self.last).as_nanos() as i128;
            self.tokens = self
                .tokens
                .saturating_add(ns.saturating_mul(self.rate))
                .min(self.capacity);
            self.last = now;
        }
    }

    /// What `cost` needs in the bucket to be taken: itself, or a full bucket when it is
    /// bigger than the capacity.
    fn needed(&self, cost: u64) -> i128 {
        (i128::from(cost) * SCALE).min(self.capacity)
    }

    /// How long until the bucket holds `amount` (scaled).
    fn wait_for(&self, amount: i128) -> Duration {
        let missing = amount - self.tokens;
        if missing <= 0 {
            return Duration::ZERO;
        }
        let ns = (missing + self.rate - 1) / self.rate;
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }

    /// Checks whether `cost` could be taken now, without taking it: `Err` says how long
    /// until it could.
    pub fn check(&mut self, cost: u64, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        let needed = self.needed(cost);
        if self.tokens >= needed {
            Ok(())
        } else {
            Err(self.wait_for(needed))
        }
    }

    /// Takes `cost` if the bucket holds it (see [`TokenBucket::check`]).
    pub fn try_take(&mut self, cost: u64, now: Instant) -> Result<(), Duration> {
        self.check(cost, now)?;
        self.take(cost, now);
        Ok(())
    }

    /// Takes `cost` whatever the bucket holds, going into debt if need be, and says how
    /// long until the debt is repaid (zero when there is none).
    pub fn take(&mut self, cost: u64, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= i128::from(cost) * SCALE;
        self.wait_for(0)
    }
}

// ---------------------------------------------------------------------------------------
// Connections: the gate shared by the workers' accept paths
// ---------------------------------------------------------------------------------------

/// A broker-wide count of things in progress (text catch-ups, subscriptions) and how
/// many may be: one atomic the workers share, touched when one starts or ends, never on
/// the publish path. A limit of 0 is no limit.
#[derive(Debug)]
pub(crate) struct Slots {
    active: AtomicUsize,
    max: usize,
}

impl Slots {
    pub fn new(max: usize) -> Slots {
        Slots {
            active: AtomicUsize::new(0),
            max,
        }
    }

    /// Takes a slot, unless `max` are taken.
    pub fn try_acquire(&self) -> bool {
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (self.max == 0 || n < self.max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives `n` slots back.
    pub fn release_n(&self, n: usize) {
        self.active.fetch_sub(n, Ordering::AcqRel);
    }

    /// The broker-wide limit.
    pub fn max(&self) -> usize {
        self.max
    }
}

impl Slots {
    /// Gives one slot back.
    pub fn release(&self) {
        self.release_n(1);
    }
}

/// Which limit refused a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubscriptionLimit {
    /// `max_subscriptions`, per connection.
    Connection,
    /// `max_total_subscriptions`, the whole broker.
    Server,
}

impl SubscriptionLimit {
    /// What the binary port says (the text port says nats-server's `maximum
    /// subscriptions exceeded` for both, which NATS clients do not treat as fatal).
    pub fn text(self, config: &AdmissionConfig) -> String {
        match self {
            SubscriptionLimit::Connection => format!(
                "maximum subscriptions exceeded ({} per connection)",
                config.max_subscriptions
            ),
            SubscriptionLimit::Server => format!(
                "maximum subscriptions exceeded ({} on the server)",
                config.max_total_subscriptions
            ),
        }
    }
}

/// Why a new connection was refused. Each is a label of the `connections_refused`
/// counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnRefusal {
    /// `max_connections` connections are open.
    Total,
    /// `max_connections_per_ip` connections from the client's address are open.
    PerIp,
    /// The new-connections bucket is empty; it holds a token again after `retry_after`.
    Rate { retry_after: Duration },
    /// The address failed to authenticate `auth_failures_per_ip` times in a row; it may
    /// try again after `retry_after`.
    AuthBackoff { retry_after: Duration },
}

impl ConnRefusal {
    pub const KINDS: usize = 4;

    /// The counter index ([`ConnRefusal::NAMES`]).
    pub fn kind(self) -> usize {
        match self {
            ConnRefusal::Total => 0,
            ConnRefusal::PerIp => 1,
            ConnRefusal::Rate { .. } => 2,
            ConnRefusal::AuthBackoff { .. } => 3,
        }
    }

    /// The labels of the counters, in [`ConnRefusal::kind`] order.
    pub const NAMES: [&'static str; ConnRefusal::KINDS] =
        ["total", "per_ip", "rate", "auth_backoff"];

    /// What the client is told. `maximum connections exceeded` is nats-server's text, which
    /// NATS clients recognise.
    pub fn text(self) -> String {
        match self {
            ConnRefusal::Total => "maximum connections exceeded".to_string(),
            ConnRefusal::PerIp => "maximum connections per client address exceeded".to_string(),
            ConnRefusal::Rate { retry_after } => format!(
                "connection rate exceeded, retry after {}ms",
                ceil_millis(retry_after)
            ),
            ConnRefusal::AuthBackoff { retry_after } => format!(
                "too many failed authentications from this address, retry after {}ms",
                ceil_millis(retry_after)
            ),
        }
    }
}

/// Whole milliseconds, rounded up, at least 1: a retry hint never says "now".
pub(crate) fn ceil_millis(d: Duration) -> u128 {
    d.as_nanos().div_ceil(1_000_000).max(1)
}

/// The connection limits every worker's accept path shares. See the module header for why
/// a `Mutex` is right here.
#[derive(Debug)]
pub(crate) struct ConnectionGate {
    max_total: usize,
    max_per_ip: usize,
    /// Failed authentications in a row from one address before it is held back (0: never).
    auth_failures: u32,
    /// The first hold-back; each further failure doubles it, up to [`MAX_AUTH_BACKOFF`].
    auth_backoff: Duration,
    state: Mutex<GateState>,
}

/// The longest an address is held back after failed authentications.
pub(crate) const MAX_AUTH_BACKOFF: Duration = Duration::from_secs(60);

/// Addresses whose failed authentications are remembered, at most: past it the oldest
/// entry gives way (an attacker with more addresses than this is bounded by the
/// connection rate instead).
pub(crate) const AUTH_FAILURES_KEPT: usize = 16_384;

/// One address's failed authentications in a row, and until when it is held back.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AuthBackoff {
    failures: u32,
    until: Option<Instant>,
    last: Instant,
}

#[derive(Debug)]
struct GateState {
    open: usize,
    /// Open connections per address; an address leaves the map when its last one closes.
    /// Not kept when there is no per-address limit.
    per_ip: HashMap<IpAddr, usize>,
    connect: Option<TokenBucket>,
    /// Addresses with failed authentications since their last success (bounded by
    /// [`AUTH_FAILURES_KEPT`]).
    auth: HashMap<IpAddr, AuthBackoff>,
    /// Per worker, the open connections it is home to (see [`ConnectionGate::admit`]).
    homes: Vec<usize>,
}

impl ConnectionGate {
    /// The gate of a broker of `workers` workers.
    pub fn new(config: &AdmissionConfig, workers: usize, now: Instant) -> Arc<ConnectionGate> {
        Arc::new(ConnectionGate {
            max_total: config.max_connections,
            max_per_ip: config.max_connections_per_ip,
            auth_failures: config.auth_failures_per_ip,
            auth_backoff: config.auth_failure_backoff,
            state: Mutex::new(GateState {
                open: 0,
                per_ip: HashMap::new(),
                connect: TokenBucket::new(config.connect_rate, config.connect_burst, now),
                auth: HashMap::new(),
                homes: vec![0; workers.max(1)],
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        // The state is a few counters updated in place: a panic elsewhere while it was
        // held cannot leave it half-written.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a connection from `ip`, accepted by worker `accepted_by`, or says why not.
    /// The limits are checked in the order total, per address, rate, and a refused
    /// connection takes no token.
    ///
    /// An admitted connection's home is the worker with the fewest connections (the one
    /// that accepted it when that is one of them): the kernel's `SO_REUSEPORT` hash
    /// spreads connections only on average, and a publisher and its subscriber hashed
    /// to one worker leave the other core idle while that one does all the work
    /// (docs/architecture.md, *What runs*).
    pub fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        now: Instant,
        accepted_by: usize,
    ) -> Result<ConnSlot, ConnRefusal> {
        let mut s = self.lock();
        if self.max_total > 0 && s.open >= self.max_total {
            return Err(ConnRefusal::Total);
        }
        if self.max_per_ip > 0 && s.per_ip.get(&ip).copied().unwrap_or(0) >= self.max_per_ip {
            return Err(ConnRefusal::PerIp);
        }
        if let Some(until) = s.auth.get(&ip).and_then(|b| b.until).filter(|u| *u > now) {
            return Err(ConnRefusal::AuthBackoff {
                retry_after: until - now,
            });
        }
        if let Some(bucket) = &mut s.connect {
            if let Err(retry_after) = bucket.try_take(1, now) {
                return Err(ConnRefusal::Rate { retry_after });
            }
        }
        s.open += 1;
        if self.max_per_ip > 0 {
            *s.per_ip.entry(ip).or_insert(0) += 1;
        }
        let mut home = accepted_by.min(s.homes.len() - 1);
        for (w, &n) in s.homes.iter().enumerate() {
            if n < s.homes[home] {
                home = w;
            }
        }
        s.homes[home] += 1;
        Ok(ConnSlot {
            gate: Arc::clone(self),
            ip,
            home,
        })
    }

    /// A connection from `ip` failed to authenticate: past `auth_failures_per_ip` in a
    /// row, the address is held back, `auth_failure_backoff` doubled per further failure.
    pub fn auth_failed(&self, ip: IpAddr, now: Instant) {
        if self.auth_failures == 0 {
            return;
        }
        let mut s = self.lock();
        if s.auth.len() >= AUTH_FAILURES_KEPT && !s.auth.contains_key(&ip) {
            let oldest = s.auth.iter().min_by_key(|(_, b)| b.last).map(|(ip, _)| *ip);
            if let Some(oldest) = oldest {
                s.auth.remove(&oldest);
            }
        }
        let b = s.auth.entry(ip).or_insert(AuthBackoff {
            failures: 0,
            until: None,
            last: now,
        });
        b.failures = b.failures.saturating_add(1);
        b.last = now;
        if b.failures >= self.auth_failures {
            let doublings = (b.failures - self.auth_failures).min(16);
            let wait = self
                .auth_backoff
                .saturating_mul(1 << doublings)
                .min(MAX_AUTH_BACKOFF);
            b.until = Some(now + wait);
        }
    }

    /// A connection from `ip` authenticated: its failures are forgotten.
    pub fn auth_succeeded(&self, ip: IpAddr) {
        if self.auth_failures == 0 {
            return;
        }
        let mut s = self.lock();
        if !s.auth.is_empty() {
            s.auth.remove(&ip);
        }
    }

    fn release(&self, ip: IpAddr, home: usize) {
        let mut s = self.lock();
        s.open = s.open.saturating_sub(1);
        s.homes[home] = s.homes[home].saturating_sub(1);
        if self.max_per_ip > 0 {
            if let Some(n) = s.per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    s.per_ip.remove(&ip);
                }
            }
        }
    }

    /// Open connections counted by the gate now.
    #[cfg(test)]
    pub fn open(&self) -> usize {
        self.lock().open
    }
}

/// One admitted connection's place in the [`ConnectionGate`]. Dropping it gives the place
/// back, so it is given back exactly once, whichever way the connection ends.
#[derive(Debug)]
pub(crate) struct ConnSlot {
    gate: Arc<ConnectionGate>,
    ip: IpAddr,
    home: usize,
}

impl ConnSlot {
    /// The worker the connection lives on (see [`ConnectionGate::admit`]).
    pub fn home(&self) -> usize {
        self.home
    }

    /// The connection failed to authenticate (see [`ConnectionGate::auth_failed`]).
    pub fn auth_failed(&self, now: Instant) {
        self.gate.auth_failed(self.ip, now);
    }

    /// The connection authenticated.
    pub fn auth_succeeded(&self) {
        self.gate.auth_succeeded(self.ip);
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.gate.release(self.ip, self.home);
    }
}

// ---------------------------------------------------------------------------------------
// Publishes: one connection's buckets
// ---------------------------------------------------------------------------------------

/// Which limit a publish ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RateScope {
    /// The connection's own rate (`publish_*`).
    Connection,
    /// The `i`th `[[admission.subject_rate]]`.
    Subject(usize),
}

impl RateScope {
    pub const KINDS: usize = 2;
    /// The labels of the counters, in [`RateScope::kind`] order.
    pub const NAMES: [&'static str; RateScope::KINDS] = ["connection", "subject"];

    pub fn kind(self) -> usize {
        match self {
            RateScope::Connection => 0,
            RateScope::Subject(_) => 1,
        }
    }
}

/// The dimension of a rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RateUnit {
    Msgs,
    Bytes,
}

/// What admission says about one publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RateVerdict {
    /// Route it.
    Pass,
    /// Route it, then read nothing more from the connection until `until`
    /// (`rate_action = "slow"`). `scope` is the limit that needs the longest pause.
    Throttle { until: Instant, scope: RateScope },
    /// Refuse it (`rate_action = "refuse"`).
    Refuse(RateRefusal),
}

/// A publish refused for its rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RateRefusal {
    pub scope: RateScope,
    pub unit: RateUnit,
    /// The rate, per second.
    pub rate: u64,
    /// When the same publish would pass.
    pub retry_after: Duration,
}

impl RateRefusal {
    /// What the client is told.
    pub fn text(&self, config: &AdmissionConfig) -> String {
        let unit = match self.unit {
            RateUnit::Msgs => "msgs/s",
            RateUnit::Bytes => "bytes/s",
        };
        let retry = ceil_millis(self.retry_after);
        match self.scope {
            RateScope::Connection => format!(
                "publish rate exceeded for this connection ({} {unit}), retry after {retry}ms",
                self.rate
            ),
            RateScope::Subject(i) => {
                let pattern = config
                    .subject_rates
                    .get(i)
                    .map_or("?", |r| r.subject.as_str());
                format!(
                    "publish rate exceeded for subject {pattern} ({} {unit} per connection), \
                     retry after {retry}ms",
                    self.rate
                )
            }
        }
    }
}

/// A rate's buckets: messages and bytes (either may be off).
#[derive(Debug, Clone)]
struct RateBuckets {
    msgs: Option<TokenBucket>,
    bytes: Option<TokenBucket>,
}

impl RateBuckets {
    fn new(limit: &RateLimit, now: Instant) -> RateBuckets {
        RateBuckets {
            msgs: TokenBucket::new(limit.msgs_per_sec, limit.msgs_burst, now),
            bytes: TokenBucket::new(limit.bytes_per_sec, limit.bytes_burst, now),
        }
    }

    fn is_off(&self) -> bool {
        self.msgs.is_none() && self.bytes.is_none()
    }

    /// Whether one message of `size` bytes could be taken now; on `Err`, which rate is
    /// short and for how long.
    fn check(&mut self, size: u64, now: Instant) -> Result<(), (RateUnit, Duration)> {
        if let Some(b) = &mut self.msgs {
            b.check(1, now).map_err(|d| (RateUnit::Msgs, d))?;
        }
        if let Some(b) = &mut self.bytes {
            b.check(size, now).map_err(|d| (RateUnit::Bytes, d))?;
        }
        Ok(())
    }

    /// Takes one message of `size` bytes, in debt if need be; returns how long until both
    /// buckets are out of debt.
    fn take(&mut self, size: u64, now: Instant) -> Duration {
        let msgs = self
            .msgs
            .as_mut()
            .map_or(Duration::ZERO, |b| b.take(1, now));
        let bytes = self
            .bytes
            .as_mut()
            .map_or(Duration::ZERO, |b| b.take(size, now));
        msgs.max(bytes)
    }
}

/// One connection's admission state: its place in the gate, its publish buckets and its
/// throttle. Touched only by the connection's worker.
#[derive(Debug, Default)]
pub(crate) struct ConnAdmission {
    /// Held for the life of the connection; `None` only for connections made without the
    /// gate (none in the broker).
    _slot: Option<ConnSlot>,
    /// The connection's own rate; `None` when it is off.
    own: Option<RateBuckets>,
    /// One entry per `[[admission.subject_rate]]`, in config order. Allocated here, at
    /// connect: admitting a publish allocates nothing.
    subjects: Vec<RateBuckets>,
    /// While set, nothing more is read or applied from the connection: a publish took a
    /// bucket into debt (`rate_action = "slow"`), repaid at this instant.
    throttled_until: Option<Instant>,
    /// The loop turn the connection's bytes are being applied in.
    now: Option<Instant>,
}

impl ConnAdmission {
    /// The connection's place in the gate, if it has one.
    pub fn slot(&self) -> Option<&ConnSlot> {
        self._slot.as_ref()
    }

    pub fn new(config: &AdmissionConfig, slot: ConnSlot, now: Instant) -> ConnAdmission {
        let own = RateBuckets::new(&config.publish(), now);
        ConnAdmission {
            _slot: Some(slot),
            own: (!own.is_off()).then_some(own),
            subjects: config
                .subject_rates
                .iter()
                .map(|r| RateBuckets::new(&r.limit, now))
                .collect(),
            throttled_until: None,
            now: Some(now),
        }
    }

    /// Sets the loop turn's instant, before bytes are applied.
    pub fn set_now(&mut self, now: Instant) {
        self.now = Some(now);
    }

    /// True while the connection must not be read.
    pub fn is_throttled(&self) -> bool {
        self.throttled_until.is_some()
    }

    /// Ends the throttle if it is over at `now`; otherwise says until when it lasts.
    pub fn throttle_left(&mut self, now: Instant) -> Option<Instant> {
        match self.throttled_until {
            Some(until) if now < until => Some(until),
            _ => {
                self.throttled_until = None;
                None
            }
        }
    }

    /// Until when the connection is throttled, if it is.
    pub fn throttled_until(&self) -> Option<Instant> {
        self.throttled_until
    }

    /// Admits a publish of `size` bytes (header block + payload) on `subject` against the
    /// connection's rate and every subject pattern that matches it (each one's own bucket
    /// for this connection). Lock-free and allocation-free.
    pub fn admit_publish(
        &mut self,
        config: &AdmissionConfig,
        subject: &[u8],
        size: usize,
    ) -> RateVerdict {
        if self.own.is_none() && self.subjects.is_empty() {
            return RateVerdict::Pass;
        }
        let Some(now) = self.now else {
            return RateVerdict::Pass;
        };
        let size = size as u64;
        let patterns = &config.subject_rates;
        let matching = |i: &usize| {
            patterns
                .get(*i)
                .is_some_and(|r| subject::matches(r.subject.as_bytes(), subject))
        };
        match config.rate_action {
            RateAction::Refuse => {
                // Every limit must pass before any bucket is charged.
                if let Some(own) = &mut self.own {
                    if let Err((unit, retry_after)) = own.check(size, now) {
                        let rate = rate_of(&config.publish(), unit);
                        return refuse(RateScope::Connection, unit, rate, retry_after);
                    }
                }
                for (i, b) in self.subjects.iter_mut().enumerate() {
                    if matching(&i) {
                        if let Err((unit, retry_after)) = b.check(size, now) {
                            let rate = rate_of(&patterns[i].limit, unit);
                            return refuse(RateScope::Subject(i), unit, rate, retry_after);
                        }
                    }
                }
                if let Some(own) = &mut self.own {
                    own.take(size, now);
                }
                for (i, b) in self.subjects.iter_mut().enumerate() {
                    if matching(&i) {
                        b.take(size, now);
                    }
                }
                RateVerdict::Pass
            }
            RateAction::Slow => {
                let mut longest = (Duration::ZERO, RateScope::Connection);
                if let Some(own) = &mut self.own {
                    longest.0 = own.take(size, now);
                }
                for (i, b) in self.subjects.iter_mut().enumerate() {
                    if matching(&i) {
                        let wait = b.take(size, now);
                        if wait > longest.0 {
                            longest = (wait, RateScope::Subject(i));
                        }
                    }
                }
                if longest.0.is_zero() {
                    return RateVerdict::Pass;
                }
                let until = now + longest.0;
                self.throttled_until = Some(until);
                RateVerdict::Throttle {
                    until,
                    scope: longest.1,
                }
            }
        }
    }
}

fn rate_of(limit: &RateLimit, unit: RateUnit) -> u64 {
    match unit {
        RateUnit::Msgs => limit.msgs_per_sec,
        RateUnit::Bytes => limit.bytes_per_sec,
    }
}

fn refuse(scope: RateScope, unit: RateUnit, rate: u64, retry_after: Duration) -> RateVerdict {
    RateVerdict::Refuse(RateRefusal {
        scope,
        unit,
        rate,
        retry_after,
    })
}

// ---------------------------------------------------------------------------------------
// Overload shedding
// ---------------------------------------------------------------------------------------

/// Whether a publish of `priority` is shed: the deepest worker inbound queue holds `depth`
/// batches, more than `threshold`, and its priority is below `shed_below` (0 sheds
/// nothing). The queue is where a worker's lag shows, whatever its cause: its own
/// connections' publishes and their appends to its ring log, or the deliveries it writes.
pub(crate) fn sheds(priority: u8, shed_below: u8, depth: usize, threshold: usize) -> bool {
    priority < shed_below && depth > threshold
}

/// What a shed publisher is told.
pub(crate) fn shed_text(shed_below: u8, shard: usize) -> String {
    format!(
        "server overloaded: shard {shard} is behind, publishes below priority {shed_below} \
         are refused; retry later"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SubjectRate;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn bucket_refills_at_its_rate_up_to_its_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 3, t0).unwrap();
        for _ in 0..3 {
            assert_eq!(b.try_take(1, t0), Ok(()));
        }
        assert_eq!(b.try_take(1, t0), Err(100 * MS), "one token every 100ms");
        assert_eq!(b.try_take(1, t0 + 40 * MS), Err(60 * MS));
        assert_eq!(b.try_take(1, t0 + 100 * MS), Ok(()));
        // A long quiet spell refills to the burst, no more.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(b.try_take(1, later), Ok(()));
        }
        assert!(b.try_take(1, later).is_err());
        assert!(TokenBucket::new(0, 10, t0).is_none(), "rate 0 is no limit");
    }

    #[test]
    fn a_cost_above_the_burst_needs_a_full_bucket_and_leaves_a_debt() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 1000, t0).unwrap();
        assert_eq!(b.check(5000, t0), Ok(()), "full bucket: the big one passes");
        assert_eq!(
            b.take(5000, t0),
            Duration::from_secs(4),
            "4000 bytes of debt"
        );
        assert_eq!(b.check(1, t0 + Duration::from_secs(4)), Err(MS));
        assert_eq!(b.check(1, t0 + Duration::from_secs(4) + MS), Ok(()));
    }

    #[test]
    fn time_going_backwards_between_workers_is_harmless() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1, 1, t0 + MS).unwrap();
        assert_eq!(b.try_take(1, t0), Ok(()));
        assert!(b.try_take(1, t0).is_err());
    }

    fn gate(total: usize, per_ip: usize, rate: u64, burst: u64) -> Arc<ConnectionGate> {
        let config = AdmissionConfig {
            max_connections: total,
            max_connections_per_ip: per_ip,
            connect_rate: rate,
            connect_burst: burst,
            ..AdmissionConfig::default()
        };
        ConnectionGate::new(&config, 1, Instant::now())
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn total_limit_and_slots_released_once_on_drop() {
        let g = gate(2, 0, 0, 0);
        let now = Instant::now();
        let a = g.admit(ip(1), now, 0).unwrap();
        let b = g.admit(ip(2), now, 0).unwrap();
        assert_eq!(g.admit(ip(3), now, 0).unwrap_err(), ConnRefusal::Total);
        assert_eq!(g.open(), 2);
        drop(a);
        assert_eq!(g.open(), 1);
        let c = g.admit(ip(3), now, 0).unwrap();
        drop(b);
        drop(c);
        assert_eq!(g.open(), 0, "every slot given back exactly once");
        assert!(g.lock().per_ip.is_empty());
    }

    #[test]
    fn a_connection_lives_on_the_worker_with_the_fewest_its_acceptor_when_tied() {
        let g = ConnectionGate::new(&AdmissionConfig::default(), 3, Instant::now());
        let now = Instant::now();
        let home = |s: &ConnSlot| s.home();
        // Tied at zero: each stays where it was accepted.
        let a = g.admit(ip(1), now, 2).unwrap();
        assert_eq!(home(&a), 2);
        // Worker 2 has one, 0 and 1 none: the first of the least loaded.
        let b = g.admit(ip(1), now, 2).unwrap();
        assert_eq!(home(&b), 0);
        let c = g.admit(ip(1), now, 0).unwrap();
        assert_eq!(home(&c), 1, "accepted by a worker that has one already");
        let d = g.admit(ip(1), now, 1).unwrap();
        assert_eq!(home(&d), 1, "all tied at one: its acceptor");
        // A closed connection frees its worker's place, and the next one goes there.
        drop(a);
        let e = g.admit(ip(1), now, 1).unwrap();
        assert_eq!(home(&e), 2);
        // A refused connection is nobody's.
        let refused = ConnectionGate::new(
            &AdmissionConfig {
                max_connections: 1,
                ..AdmissionConfig::default()
            },
            2,
            now,
        );
        let only = refused.admit(ip(1), now, 1).unwrap();
        assert!(refused.admit(ip(1), now, 1).is_err());
        assert_eq!(refused.lock().homes, [0, 1]);
        drop(only);
        assert_eq!(refused.lock().homes, [0, 0]);
        drop((b, c, d, e));
        assert_eq!(g.lock().homes, [0, 0, 0], "every place given back once");
    }

    #[test]
    fn repeated_failed_authentications_hold_an_address_back_doubling() {
        let g = gate(0, 0, 0, 0);
        let t0 = Instant::now();
        let sec = Duration::from_secs(1);
        for _ in 0..4 {
            g.auth_failed(ip(1), t0);
        }
        assert!(g.admit(ip(1), t0, 0).is_ok(), "four failures are not five");
        g.auth_failed(ip(1), t0);
        let refused = g.admit(ip(1), t0, 0).unwrap_err();
        assert_eq!(refused, ConnRefusal::AuthBackoff { retry_after: sec });
        assert!(
            refused.text().contains("retry after 1000ms"),
            "{}",
            refused.text()
        );
        assert!(
            g.admit(ip(2), t0, 0).is_ok(),
            "another address is not held back"
        );
        assert!(g.admit(ip(1), t0 + sec, 0).is_ok(), "the wait is over");
        g.auth_failed(ip(1), t0 + sec);
        assert_eq!(
            g.admit(ip(1), t0 + sec, 0).unwrap_err(),
            ConnRefusal::AuthBackoff {
                retry_after: 2 * sec
            },
            "each further failure doubles it"
        );
        for _ in 0..20 {
            g.auth_failed(ip(1), t0 + sec);
        }
        assert_eq!(
            g.admit(ip(1), t0 + sec, 0).unwrap_err(),
            ConnRefusal::AuthBackoff {
                retry_after: MAX_AUTH_BACKOFF
            }
        );
        g.auth_succeeded(ip(1));
        assert!(
            g.admit(ip(1), t0 + sec, 0).is_ok(),
            "a success forgets the failures"
        );
        assert!(g.lock().auth.is_empty());
    }

    #[test]
    fn the_failed_authentications_remembered_are_bounded() {
        let g = gate(0, 0, 0, 0);
        let t0 = Instant::now();
        for i in 0..AUTH_FAILURES_KEPT + 10 {
            let addr = IpAddr::from((i as u32).to_be_bytes());
            g.auth_failed(addr, t0 + Duration::from_nanos(i as u64));
        }
        assert_eq!(g.lock().auth.len(), AUTH_FAILURES_KEPT);
        assert!(
            !g.lock()
                .auth
                .contains_key(&IpAddr::from(0u32.to_be_bytes())),
            "the oldest gave way"
        );
    }

    #[test]
    fn per_ip_limit_counts_each_address_on_its_own() {
        let g = gate(0, 2, 0, 0);
        let now = Instant::now();
        let held: Vec<ConnSlot> = (0..2).map(|_| g.admit(ip(1), now, 0).unwrap()).collect();
        assert_eq!(g.admit(ip(1), now, 0).unwrap_err(), ConnRefusal::PerIp);
        let other = g.admit(ip(2), now, 0).unwrap();
        drop(held);
        assert!(
            g.admit(ip(1), now, 0).is_ok(),
            "released with its connections"
        );
        drop(other);
        assert_eq!(
            g.lock().per_ip.len(),
            0,
            "no address is remembered for nothing"
        );
    }

    #[test]
    fn connect_rate_refuses_with_a_retry_hint_and_takes_no_token_when_refused() {
        let g = gate(1, 0, 4, 2);
        let now = Instant::now();
        let a = g.admit(ip(1), now, 0).unwrap();
        // Over the total: refused before the bucket is asked.
        assert_eq!(g.admit(ip(1), now, 0).unwrap_err(), ConnRefusal::Total);
        drop(a);
        drop(g.admit(ip(1), now, 0).unwrap());
        match g.admit(ip(1), now, 0) {
            Err(ConnRefusal::Rate { retry_after }) => {
                assert_eq!(
                    retry_after,
                    250 * MS,
                    "the burst of 2 is spent; 4 per second"
                );
                assert_eq!(
                    ConnRefusal::Rate { retry_after }.text(),
                    "connection rate exceeded, retry after 250ms"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(g.admit(ip(1), now + 250 * MS, 0).is_ok());
    }

    fn config(
        action: RateAction,
        own: RateLimit,
        subjects: &[(&str, RateLimit)],
    ) -> AdmissionConfig {
        AdmissionConfig {
            publish_msgs_per_sec: own.msgs_per_sec,
            publish_msgs_burst: own.msgs_burst,
            publish_bytes_per_sec: own.bytes_per_sec as usize,
            publish_bytes_burst: own.bytes_burst as usize,
            subject_rates: subjects
                .iter()
                .map(|(s, limit)| SubjectRate {
                    subject: s.to_string(),
                    limit: *limit,
                })
                .collect(),
            rate_action: action,
            ..AdmissionConfig::default()
        }
    }

    fn conn(config: &AdmissionConfig, now: Instant) -> (ConnAdmission, Arc<ConnectionGate>) {
        let g = gate(0, 0, 0, 0);
        let slot = g.admit(ip(1), now, 0).unwrap();
        (ConnAdmission::new(config, slot, now), g)
    }

    fn msgs(rate: u64, burst: u64) -> RateLimit {
        RateLimit {
            msgs_per_sec: rate,
            msgs_burst: burst,
            ..RateLimit::default()
        }
    }

    #[test]
    fn refuse_checks_every_limit_before_charging_any() {
        let t0 = Instant::now();
        let c = config(
            RateAction::Refuse,
            msgs(100, 3),
            &[("chat.>", msgs(1, 1)), ("chat.*.typing", msgs(10, 10))],
        );
        let (mut a, _g) = conn(&c, t0);
        assert_eq!(
            a.admit_publish(&c, b"chat.room.typing", 10),
            RateVerdict::Pass
        );
        let RateVerdict::Refuse(r) = a.admit_publish(&c, b"chat.room.typing", 10) else {
            panic!("chat.> allows one per second");
        };
        assert_eq!(r.scope, RateScope::Subject(0));
        assert_eq!(r.retry_after, Duration::from_secs(1));
        assert_eq!(
            r.text(&c),
            "publish rate exceeded for subject chat.> (1 msgs/s per connection), retry after 1000ms"
        );
        // The refused publish charged nothing: the connection's own bucket still has 2.
        assert_eq!(a.admit_publish(&c, b"other", 10), RateVerdict::Pass);
        assert_eq!(a.admit_publish(&c, b"other", 10), RateVerdict::Pass);
        let RateVerdict::Refuse(r) = a.admit_publish(&c, b"other", 10) else {
            panic!("own burst of 3 spent");
        };
        assert_eq!(r.scope, RateScope::Connection);
        assert_eq!(
            r.text(&c),
            "publish rate exceeded for this connection (100 msgs/s), retry after 10ms"
        );
        assert!(!a.is_throttled(), "refusing never throttles");
    }

    #[test]
    fn slow_passes_and_throttles_until_the_longest_debt_is_repaid() {
        let t0 = Instant::now();
        let bytes = RateLimit {
            bytes_per_sec: 1000,
            bytes_burst: 1000,
            ..RateLimit::default()
        };
        let c = config(RateAction::Slow, msgs(100, 2), &[("big.>", bytes)]);
        let (mut a, _g) = conn(&c, t0);
        assert_eq!(a.admit_publish(&c, b"x", 1), RateVerdict::Pass);
        assert_eq!(a.admit_publish(&c, b"x", 1), RateVerdict::Pass);
        assert_eq!(
            a.admit_publish(&c, b"x", 1),
            RateVerdict::Throttle {
                until: t0 + 10 * MS,
                scope: RateScope::Connection
            }
        );
        assert!(a.is_throttled());
        assert_eq!(a.throttle_left(t0 + 5 * MS), Some(t0 + 10 * MS));
        assert_eq!(a.throttle_left(t0 + 10 * MS), None);
        a.set_now(t0 + 10 * MS);
        // 1500 bytes on big.> : 500 bytes of debt (0.5 s) beats the message debt (10 ms).
        assert_eq!(
            a.admit_publish(&c, b"big.file", 1500),
            RateVerdict::Throttle {
                until: t0 + 510 * MS,
                scope: RateScope::Subject(0)
            }
        );
    }

    #[test]
    fn no_limits_configured_means_nothing_to_do() {
        let t0 = Instant::now();
        let c = AdmissionConfig::default();
        let (mut a, g) = conn(&c, t0);
        assert!(a.own.is_none() && a.subjects.is_empty());
        for _ in 0..10_000 {
            assert_eq!(a.admit_publish(&c, b"x", 1 << 20), RateVerdict::Pass);
        }
        drop(a);
        assert_eq!(g.open(), 0);
    }

    #[test]
    fn shedding_needs_both_a_deep_queue_and_a_low_priority() {
        // Default: shed nothing, however deep the queue.
        assert!(!sheds(0, 0, usize::MAX, 0));
        // Priority 3 and up keep flowing; below, shed only past the threshold.
        assert!(sheds(2, 3, 101, 100));
        assert!(!sheds(2, 3, 100, 100), "at the threshold is not over it");
        assert!(!sheds(3, 3, 4096, 100));
        assert!(!sheds(7, 3, 4096, 100));
        // 8 sheds every priority.
        assert!(sheds(7, 8, 1, 0));
        assert!(shed_text(3, 1).starts_with("server overloaded: "));
    }
}
