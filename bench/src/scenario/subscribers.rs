//! Subscriber threads: one thread and one connection per subscriber.
//!
//! Owns: connecting and subscribing every subscriber before any measured publish, the
//! warm-up that proves each subscription is live, counting deliveries (and, when asked,
//! recording publish-to-deliver latency from the intended send time), and stopping once
//! every expected delivery arrived or the drain time ran out.
//!
//! Why the warm-up: a broker may acknowledge `SUB` (our `PING`/`PONG`) before the
//! subscription is registered where messages are routed (in `ternd`, a subject's owner
//! shard may be another worker). Publishing warm-up messages until every subscriber has
//! seen one makes the measured counts exact on any broker.
//!
//! Never: publishes measured messages, or stops early without saying so — a subscriber that
//! loses its connection reports the broker's reason as its `error`.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::payload::{self, MEASURED, WARMUP};
use crate::driver::{Connection, Driver, DriverError};
use crate::histogram::LatencyHistogram;

/// How long one `receive` waits before the thread checks whether to stop.
const POLL: Duration = Duration::from_millis(20);
/// The longest a run waits for deliveries after publishing, even while they still flow.
pub const MAX_DRAIN: Duration = Duration::from_secs(60);
/// Pause between warm-up publishes.
const WARMUP_EVERY: Duration = Duration::from_millis(2);

/// Publishes warm-up messages on `subject` every [`WARMUP_EVERY`] until `warm` says the
/// receivers have one (their subscriptions are live where the broker routes), or
/// `timeout` passes or `stop` says they failed: then a timeout naming `what`.
pub(crate) fn publish_until_warm(
    publisher: &mut dyn Connection,
    subject: &str,
    timeout: Duration,
    warm: impl Fn() -> bool,
    stop: impl Fn() -> bool,
    what: &'static str,
) -> Result<(), DriverError> {
    let message = payload::build(payload::STAMPED_LEN, WARMUP);
    let deadline = Instant::now() + timeout;
    while !warm() {
        if Instant::now() >= deadline || stop() {
            return Err(DriverError::Timeout(what));
        }
        publisher.publish(subject, &message)?;
        publisher.flush()?;
        thread::sleep(WARMUP_EVERY);
    }
    Ok(())
}

/// What the subscribers subscribe to.
#[derive(Debug, Clone)]
pub struct SubscriberSpec {
    /// The subject (or filter).
    pub subject: String,
    /// The queue group, if any.
    pub queue: Option<String>,
    /// How many subscribers (each its own connection and thread).
    pub count: usize,
    /// When set, record latency against this origin (see [`super::payload`]).
    pub latency_origin: Option<Instant>,
}

/// What one subscriber saw.
#[derive(Debug, Clone)]
pub struct SubscriberOutcome {
    /// Measured messages delivered.
    pub delivered: u64,
    /// When the last measured message arrived (to within one read).
    pub last: Option<Instant>,
    /// Publish-to-deliver latency (empty unless `latency_origin` was set).
    pub latency: LatencyHistogram,
    /// Why the subscriber stopped early, if it did (e.g. `broker error: Slow Consumer`).
    pub error: Option<String>,
    /// Messages the broker said it dropped for this subscriber (binary `DROP_NOTICE`).
    pub dropped: u64,
}

impl SubscriberOutcome {
    /// What went wrong for this subscriber, if anything, as problem lines.
    pub fn problems(&self, index: usize) -> Vec<String> {
        let mut p = Vec::new();
        if let Some(e) = &self.error {
            p.push(format!("subscriber {index}: {e}"));
        }
        if self.dropped > 0 {
            p.push(format!(
                "subscriber {index}: the broker reported dropping {} messages (DROP_NOTICE)",
                self.dropped
            ));
        }
        p
    }
}

struct Shared {
    origin: Instant,
    warmed: AtomicUsize,
    delivered: AtomicU64,
    /// Total deliveries expected across subscribers; `u64::MAX` while publishing.
    target: AtomicU64,
    /// Nanoseconds since `origin` when publishing ended; `u64::MAX` while publishing.
    finished_ns: AtomicU64,
    /// Nanoseconds since `origin` of the latest measured delivery (any subscriber).
    progress_ns: AtomicU64,
    /// Give up after this long without a delivery once publishing ended (nanoseconds).
    idle_ns: AtomicU64,
    abort: AtomicBool,
}

/// Running subscriber threads.
pub struct Subscribers {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<SubscriberOutcome>>,
}

impl Subscribers {
    /// Connects and subscribes `spec.count` subscribers, waits until the broker has
    /// processed every `SUB`, and starts their threads.
    pub fn start(driver: &dyn Driver, spec: &SubscriberSpec) -> Result<Self, DriverError> {
        let mut conns = Vec::with_capacity(spec.count);
        for _ in 0..spec.count {
            let mut conn = driver.connect_subscriber()?;
            conn.subscribe(&spec.subject, spec.queue.as_deref())?;
            conn.sync(super::SYNC_TIMEOUT)?;
            conns.push(conn);
        }
        let shared = Arc::new(Shared {
            origin: spec.latency_origin.unwrap_or_else(Instant::now),
            warmed: AtomicUsize::new(0),
            delivered: AtomicU64::new(0),
            target: AtomicU64::new(u64::MAX),
            finished_ns: AtomicU64::new(u64::MAX),
            progress_ns: AtomicU64::new(0),
            idle_ns: AtomicU64::new(u64::MAX),
            abort: AtomicBool::new(false),
        });
        let record_latency = spec.latency_origin.is_some();
        let threads = conns
            .into_iter()
            .map(|conn| {
                let shared = Arc::clone(&shared);
                thread::spawn(move || subscribe_loop(conn, &shared, record_latency))
            })
            .collect();
        Ok(Subscribers { shared, threads })
    }

    /// Publishes warm-up messages on `subject` through `publisher` until every subscriber
    /// has received one, or `timeout` passes.
    pub fn warm_up(
        &self,
        publisher: &mut dyn Connection,
        subject: &str,
        timeout: Duration,
    ) -> Result<(), DriverError> {
        publish_until_warm(
            publisher,
            subject,
            timeout,
            || self.shared.warmed.load(Ordering::Acquire) >= self.threads.len(),
            || self.shared.abort.load(Ordering::Relaxed),
            "every subscriber to receive a warm-up",
        )
    }

    /// Measured deliveries so far, over all subscribers.
    pub fn delivered(&self) -> u64 {
        self.shared.delivered.load(Ordering::Relaxed)
    }

    /// Tells the subscribers publishing is over and `target` deliveries are expected in
    /// total; waits for them and returns what each saw. They give up once no delivery
    /// arrived for `idle`, or [`MAX_DRAIN`] after this call, whichever comes first.
    pub fn finish(self, target: u64, idle: Duration) -> Vec<SubscriberOutcome> {
        let s = &self.shared;
        s.idle_ns.store(idle.as_nanos() as u64, Ordering::Release);
        s.finished_ns
            .store(s.origin.elapsed().as_nanos() as u64, Ordering::Release);
        s.target.store(target, Ordering::Release);
        self.join()
    }

    /// Stops every subscriber now (after an error elsewhere).
    pub fn abort(self) -> Vec<SubscriberOutcome> {
        self.shared.abort.store(true, Ordering::Release);
        self.join()
    }

    fn join(self) -> Vec<SubscriberOutcome> {
        self.threads
            .into_iter()
            .map(|t| {
                t.join().unwrap_or_else(|_| SubscriberOutcome {
                    delivered: 0,
                    last: None,
                    latency: LatencyHistogram::new(),
                    error: Some("subscriber thread panicked".into()),
                    dropped: 0,
                })
            })
            .collect()
    }
}

fn subscribe_loop(
    mut conn: Box<dyn Connection>,
    shared: &Shared,
    record_latency: bool,
) -> SubscriberOutcome {
    let mut out = SubscriberOutcome {
        delivered: 0,
        last: None,
        latency: LatencyHistogram::new(),
        error: None,
        dropped: 0,
    };
    let mut warmed = false;
    loop {
        let mut measured = 0u64;
        let mut saw_warmup = false;
        let latency = &mut out.latency;
        let result = conn.receive(POLL, &mut |p| match payload::kind(p) {
            Some(WARMUP) => saw_warmup = true,
            Some(MEASURED) => {
                measured += 1;
                if record_latency {
                    if let Some(intended) = payload::intended_ns(p) {
                        let now = shared.origin.elapsed().as_nanos() as u64;
                        latency.record(now.saturating_sub(intended));
                    }
                }
            }
            _ => {}
        });
        if saw_warmup && !warmed {
            warmed = true;
            shared.warmed.fetch_add(1, Ordering::AcqRel);
        }
        if measured > 0 {
            out.delivered += measured;
            out.last = Some(Instant::now());
            shared.delivered.fetch_add(measured, Ordering::AcqRel);
            shared
                .progress_ns
                .fetch_max(shared.origin.elapsed().as_nanos() as u64, Ordering::AcqRel);
        }
        out.dropped = conn.dropped();
        if let Err(e) = result {
            out.error = Some(e.to_string());
            return out;
        }
        if shared.abort.load(Ordering::Acquire) {
            return out;
        }
        let target = shared.target.load(Ordering::Acquire);
        if target != u64::MAX {
            if shared.delivered.load(Ordering::Acquire) >= target {
                return out;
            }
            let now = shared.origin.elapsed().as_nanos() as u64;
            let finished = shared.finished_ns.load(Ordering::Acquire);
            let quiet_since = finished.max(shared.progress_ns.load(Ordering::Acquire));
            let idle = shared.idle_ns.load(Ordering::Acquire);
            if now.saturating_sub(quiet_since) >= idle
                || now.saturating_sub(finished) >= MAX_DRAIN.as_nanos() as u64
            {
                return out;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outcome_lists_its_error_and_the_brokers_drops() {
        let mut o = SubscriberOutcome {
            delivered: 5,
            last: None,
            latency: LatencyHistogram::new(),
            error: None,
            dropped: 0,
        };
        assert!(o.problems(3).is_empty());
        o.error = Some("connection closed by the broker".into());
        o.dropped = 7;
        assert_eq!(
            o.problems(3),
            vec![
                "subscriber 3: connection closed by the broker".to_string(),
                "subscriber 3: the broker reported dropping 7 messages (DROP_NOTICE)".into(),
            ]
        );
    }
}
