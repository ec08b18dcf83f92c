//! `latency`: publish at a fixed rate; publish-to-deliver latency percentiles.
//!
//! Owns: the latency figures. The publisher is [`super::pacer`]'s: message `i` has an
//! *intended* send time `start + i / rate`, written into its payload (see
//! [`super::payload`]); a subscriber records `arrival − intended`. When the publisher
//! falls behind (the broker pushed back, or the machine is busy), the late messages are
//! sent at once in one batch but still measured from when they should have been sent — so
//! a stall shows up as the latency every waiting message saw, not as one slow sample
//! (coordinated omission corrected). `max_send_lag` says how far behind the publisher
//! itself fell.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::delivery::Delivery;
use super::pacer::publish_paced;
use super::payload::{self, MEASURED};
use super::subscribers::{SubscriberSpec, Subscribers};
use super::{Limit, DEFAULT_DRAIN};
use crate::cpu::{CpuReading, ServerCpu};
use crate::driver::{Driver, DriverError};
use crate::histogram::{LatencyHistogram, Percentiles};
use crate::report::{Better, Figure};

/// A latency run.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyConfig {
    /// Messages per second.
    pub rate: u64,
    /// Payload bytes (at least 9: kind + send time).
    pub size: usize,
    /// How long to publish.
    pub limit: Limit,
    /// Subscribers (each records every message).
    pub subscribers: usize,
    /// The subject.
    pub subject: String,
    /// What the subscribers subscribe to, when not the subject itself (see
    /// `PubSubConfig::filter`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// How long to wait for deliveries after publishing.
    #[serde(skip)]
    pub drain: Duration,
}

impl LatencyConfig {
    /// `rate` msgs/s of `size` bytes to one subscriber on `bench.latency`.
    pub fn new(rate: u64, size: usize, limit: Limit) -> Self {
        LatencyConfig {
            rate,
            size,
            limit,
            subscribers: 1,
            subject: "bench.latency".into(),
            filter: None,
            drain: DEFAULT_DRAIN,
        }
    }
}

/// What a latency run measured.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyResult {
    /// The run.
    pub config: LatencyConfig,
    /// Messages published.
    pub published: u64,
    /// Measured deliveries (all subscribers).
    pub delivered: u64,
    /// `published × subscribers`.
    pub expected: u64,
    /// The publish rate achieved (should be `rate`).
    pub achieved_rate: f64,
    /// How far behind its schedule the publisher fell, at worst, in nanoseconds.
    pub max_send_lag_ns: u64,
    /// Publish-to-deliver latency, from the intended send time.
    pub latency: Percentiles,
    /// The server's CPU time from the first paced publish until the subscribers were done.
    pub server_cpu: CpuReading,
    /// Everything that went wrong; the counts are judged by [`LatencyResult::delivery`].
    pub problems: Vec<String>,
}

impl LatencyResult {
    /// The figures a report shows and compares (latencies in µs).
    pub fn figures(&self) -> Vec<Figure> {
        let mut f = vec![Figure::new(
            "achieved rate",
            self.achieved_rate,
            "msgs/s",
            Better::Higher,
        )];
        for (name, ns) in self.latency.points() {
            f.push(Figure::new(name, ns as f64 / 1000.0, "µs", Better::Lower));
        }
        f.push(Figure::new(
            "max send lag",
            self.max_send_lag_ns as f64 / 1000.0,
            "µs",
            Better::Lower,
        ));
        f
    }

    /// The measured window: delivered of expected, and the server's CPU over it.
    pub fn delivery(&self) -> Delivery {
        Delivery::new(self.delivered, self.expected, self.server_cpu.clone())
    }
}

/// Runs a latency scenario, reading `server`'s CPU time over the measured window.
pub fn run(
    driver: &dyn Driver,
    config: &LatencyConfig,
    server: ServerCpu,
) -> Result<LatencyResult, DriverError> {
    let origin = Instant::now();
    let subs = Subscribers::start(
        driver,
        &SubscriberSpec {
            subject: config
                .filter
                .clone()
                .unwrap_or_else(|| config.subject.clone()),
            queue: None,
            count: config.subscribers,
            latency_origin: Some(origin),
        },
    )?;
    let mut conn = match driver.connect() {
        Ok(c) => c,
        Err(e) => {
            subs.abort();
            return Err(e);
        }
    };
    if let Err(e) = subs.warm_up(&mut *conn, &config.subject, DEFAULT_DRAIN) {
        subs.abort();
        return Err(e);
    }

    let mut body = payload::build(config.size.max(payload::STAMPED_LEN), MEASURED);
    let window = server.start();
    let (paced, publish) = publish_paced(
        &mut *conn,
        &config.subject,
        config.rate,
        config.limit,
        origin,
        &mut body,
        &mut |body, _, intended_ns| payload::stamp(body, intended_ns),
    );
    let mut problems = Vec::new();
    if let Err(e) = publish {
        problems.push(format!("publisher: {e}"));
    }
    let sent = paced.sent;
    let expected = sent * config.subscribers as u64;
    let outcomes = subs.finish(expected, config.drain);
    let server_cpu = window.finish();
    let mut latency = LatencyHistogram::new();
    let mut delivered = 0;
    for (i, o) in outcomes.iter().enumerate() {
        latency.merge(&o.latency);
        delivered += o.delivered;
        problems.extend(o.problems(i));
    }
    Ok(LatencyResult {
        config: config.clone(),
        published: sent,
        delivered,
        expected,
        achieved_rate: paced.rate(),
        max_send_lag_ns: paced.max_lag_ns,
        latency: latency.percentiles(),
        server_cpu,
        problems,
    })
}
