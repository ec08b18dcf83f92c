//! `pubsub`: P publishers, S subscribers on one subject; throughput.
//!
//! Owns: the throughput engine that `fanout` and `queue` reuse — publisher threads that
//! publish as fast as the broker takes them (batched writes; TCP backpressure is the only
//! brake) until the [`Limit`], then a round trip so the broker has read everything — and
//! the figures: publish and delivery rates in msgs/s and MB/s (payload bytes only).
//!
//! Rates: the publish rate is messages over the time until every publisher's final round
//! trip returned; the delivery rate is deliveries over the time from the start to the last
//! delivery. The measured window — from the moment the publishers are released to the
//! moment the subscribers have everything (or gave up waiting) — is one
//! [`Delivery`]: `delivered` of `published × subscribers` (`published` with a queue
//! group), and the server's CPU time over it; [`super::delivery`] judges the counts.

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::delivery::Delivery;
use super::payload::{self, MEASURED};
use super::subscribers::{SubscriberOutcome, SubscriberSpec, Subscribers};
use super::{Limit, DEFAULT_DRAIN, MB, SYNC_TIMEOUT};
use crate::cpu::{CpuReading, ServerCpu};
use crate::driver::{Connection, Driver, DriverError};
use crate::report::{Better, Figure};

/// A throughput run.
#[derive(Debug, Clone, Serialize)]
pub struct PubSubConfig {
    /// Publishing connections (threads).
    pub publishers: usize,
    /// Subscribing connections (threads).
    pub subscribers: usize,
    /// Payload bytes per message.
    pub size: usize,
    /// How long each publisher publishes.
    pub limit: Limit,
    /// The subject.
    pub subject: String,
    /// What the subscribers subscribe to, when not the subject itself (a wildcard that
    /// matches it, to measure what a wildcard costs against a literal).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// The queue group the subscribers join, if any (then each message goes to one).
    pub queue: Option<String>,
    /// How long to wait for deliveries after publishing.
    #[serde(skip)]
    pub drain: Duration,
}

impl PubSubConfig {
    /// P publishers and S subscribers on `bench.pubsub`, no queue group.
    pub fn new(publishers: usize, subscribers: usize, size: usize, limit: Limit) -> Self {
        PubSubConfig {
            publishers,
            subscribers,
            size,
            limit,
            subject: "bench.pubsub".into(),
            filter: None,
            queue: None,
            drain: DEFAULT_DRAIN,
        }
    }
}

/// What a throughput run measured.
#[derive(Debug, Clone, Serialize)]
pub struct PubSubResult {
    /// The run.
    pub config: PubSubConfig,
    /// Messages published (all publishers).
    pub published: u64,
    /// Measured deliveries (all subscribers).
    pub delivered: u64,
    /// Deliveries expected: `published × subscribers`, or `published` with a queue group.
    pub expected: u64,
    /// Seconds from the start until the broker had read every publish.
    pub publish_secs: f64,
    /// Seconds from the start until the last delivery.
    pub delivery_secs: f64,
    /// Publishes per second.
    pub publish_rate: f64,
    /// Publish payload MB per second.
    pub publish_mb_s: f64,
    /// Deliveries per second (all subscribers together).
    pub delivery_rate: f64,
    /// Delivered payload MB per second.
    pub delivery_mb_s: f64,
    /// Deliveries per subscriber, in subscriber order.
    pub per_subscriber: Vec<u64>,
    /// The server's CPU time over the measured window.
    pub server_cpu: CpuReading,
    /// Everything that went wrong (disconnects, timeouts); the counts are judged by
    /// [`PubSubResult::delivery`].
    pub problems: Vec<String>,
}

impl PubSubResult {
    /// The figures a report shows and compares.
    pub fn figures(&self) -> Vec<Figure> {
        vec![
            Figure::new("publish rate", self.publish_rate, "msgs/s", Better::Higher),
            Figure::new("publish MB/s", self.publish_mb_s, "MB/s", Better::Higher),
            Figure::new(
                "delivery rate",
                self.delivery_rate,
                "msgs/s",
                Better::Higher,
            ),
            Figure::new("delivery MB/s", self.delivery_mb_s, "MB/s", Better::Higher),
            Figure::new("published", self.published as f64, "msgs", Better::Neither),
        ]
    }

    /// The measured window: delivered of expected, and the server's CPU over it.
    pub fn delivery(&self) -> Delivery {
        Delivery::new(self.delivered, self.expected, self.server_cpu.clone())
    }
}

/// Runs one throughput scenario, reading `server`'s CPU time over the measured window.
pub fn run(
    driver: &dyn Driver,
    config: &PubSubConfig,
    server: ServerCpu,
) -> Result<PubSubResult, DriverError> {
    let subs = Subscribers::start(
        driver,
        &SubscriberSpec {
            subject: config
                .filter
                .clone()
                .unwrap_or_else(|| config.subject.clone()),
            queue: config.queue.clone(),
            count: config.subscribers,
            latency_origin: None,
        },
    )?;
    let mut publishers = Vec::with_capacity(config.publishers.max(1));
    for _ in 0..config.publishers.max(1) {
        match driver.connect() {
            Ok(c) => publishers.push(c),
            Err(e) => {
                subs.abort();
                return Err(e);
            }
        }
    }
    if let Err(e) = subs.warm_up(&mut *publishers[0], &config.subject, DEFAULT_DRAIN) {
        subs.abort();
        return Err(e);
    }

    let barrier = Arc::new(Barrier::new(publishers.len() + 1));
    let payload = payload::build(config.size, MEASURED);
    let threads: Vec<_> = publishers
        .into_iter()
        .map(|mut conn| {
            let barrier = Arc::clone(&barrier);
            let payload = payload.clone();
            let subject = config.subject.clone();
            let limit = config.limit;
            thread::spawn(move || {
                barrier.wait();
                publish_until(&mut *conn, &subject, &payload, limit)
            })
        })
        .collect();
    // The window opens as the publishers are released (the warm-up is behind us) and
    // closes once the subscribers are done.
    let window = server.start();
    barrier.wait();
    let start = Instant::now();

    let mut published = 0;
    let mut problems = Vec::new();
    for t in threads {
        match t.join() {
            Ok((sent, result)) => {
                published += sent;
                if let Err(e) = result {
                    problems.push(format!("publisher: {e}"));
                }
            }
            Err(_) => problems.push("publisher thread panicked".into()),
        }
    }
    let publish_secs = start.elapsed().as_secs_f64();
    let expected = if config.queue.is_some() {
        published
    } else {
        published * config.subscribers as u64
    };
    let outcomes = subs.finish(expected, config.drain);
    let server_cpu = window.finish();
    Ok(PubSubResult {
        server_cpu,
        ..summarize(
            config,
            start,
            published,
            expected,
            publish_secs,
            &outcomes,
            problems,
        )
    })
}

/// Publishes `payload` until `limit`, then waits until the broker has read it all.
/// Returns the messages sent, and the error that stopped the publisher early, if any.
fn publish_until(
    conn: &mut dyn Connection,
    subject: &str,
    payload: &[u8],
    limit: Limit,
) -> (u64, Result<(), DriverError>) {
    let start = Instant::now();
    let mut sent = 0u64;
    let mut elapsed = Duration::ZERO;
    let result = loop {
        // Read the clock every 256 messages: cheap, and at most microseconds late.
        if sent & 255 == 0 {
            elapsed = start.elapsed();
        }
        if limit.reached(sent, elapsed) {
            break conn.sync(SYNC_TIMEOUT);
        }
        if let Err(e) = conn.publish(subject, payload) {
            break Err(e);
        }
        sent += 1;
    };
    (sent, result)
}

fn summarize(
    config: &PubSubConfig,
    start: Instant,
    published: u64,
    expected: u64,
    publish_secs: f64,
    outcomes: &[SubscriberOutcome],
    mut problems: Vec<String>,
) -> PubSubResult {
    let delivered: u64 = outcomes.iter().map(|o| o.delivered).sum();
    let last = outcomes.iter().filter_map(|o| o.last).max();
    let delivery_secs = last.map_or(0.0, |l| l.saturating_duration_since(start).as_secs_f64());
    for (i, o) in outcomes.iter().enumerate() {
        problems.extend(o.problems(i));
    }
    let rate = |n: u64, secs: f64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    let publish_rate = rate(published, publish_secs);
    let delivery_rate = rate(delivered, delivery_secs);
    PubSubResult {
        config: config.clone(),
        published,
        delivered,
        expected,
        publish_secs,
        delivery_secs,
        publish_rate,
        publish_mb_s: publish_rate * config.size as f64 / MB,
        delivery_rate,
        delivery_mb_s: delivery_rate * config.size as f64 / MB,
        per_subscriber: outcomes.iter().map(|o| o.delivered).collect(),
        server_cpu: CpuReading::NotWatched,
        problems,
    }
}
