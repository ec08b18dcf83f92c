//! The standard suite: the same short scenarios against each broker, one broker at a time.
//!
//! Owns: the list of scenarios `make bench` and `make bench-compare` run
//! ([`SuiteConfig::scenarios`]), starting each broker ([`crate::broker`]), running every
//! scenario against it through the text driver, and stopping it before the next broker
//! starts (so the brokers never compete for the CPUs or skew each other's memory).
//!
//! Never: leaves a broker running — [`crate::broker::BrokerProcess`] kills on drop.

use std::path::PathBuf;
use std::time::Duration;

use crate::broker::{BrokerError, BrokerProcess};
use crate::driver::nats::NatsDriver;
use crate::report::TargetReport;
use crate::scenario::conns::ConnsConfig;
use crate::scenario::latency::LatencyConfig;
use crate::scenario::pubsub::PubSubConfig;
use crate::scenario::{fanout, queue, Limit, Scenario};

/// What the suite runs, and against what.
#[derive(Debug, Clone)]
pub struct SuiteConfig {
    /// How long each throughput and latency scenario publishes.
    pub duration: Duration,
    /// Message sizes for `pubsub` (1 publisher, 1 subscriber).
    pub sizes: Vec<usize>,
    /// Subscriber counts for `fanout` (128-byte messages).
    pub fanouts: Vec<usize>,
    /// Queue-group members.
    pub queue_members: usize,
    /// Rates for `latency` (128-byte messages).
    pub rates: Vec<u64>,
    /// Idle connections for `conns`.
    pub conns: usize,
    /// When not empty, only the scenarios whose label contains one of these.
    pub only: Vec<String>,
}

impl Default for SuiteConfig {
    fn default() -> Self {
        SuiteConfig {
            duration: Duration::from_secs(3),
            sizes: vec![16, 128, 1024],
            fanouts: vec![10, 100],
            queue_members: 4,
            rates: vec![10_000, 50_000],
            conns: 10_000,
            only: Vec::new(),
        }
    }
}

impl SuiteConfig {
    /// The scenarios, in run order.
    pub fn scenarios(&self) -> Vec<Scenario> {
        let limit = Limit::Duration(self.duration);
        let mut list = Vec::new();
        for &size in &self.sizes {
            list.push(Scenario::PubSub(PubSubConfig::new(1, 1, size, limit)));
        }
        for &n in &self.fanouts {
            list.push(Scenario::Fanout(fanout::config(n, 128, limit)));
        }
        list.push(Scenario::Queue(queue::config(
            1,
            self.queue_members,
            128,
            limit,
        )));
        for &rate in &self.rates {
            list.push(Scenario::Latency(LatencyConfig::new(rate, 128, limit)));
        }
        list.push(Scenario::Conns(ConnsConfig {
            count: self.conns,
            broker_pid: None,
            settle: Duration::from_millis(500),
        }));
        if !self.only.is_empty() {
            list.retain(|s| self.only.iter().any(|o| s.label().contains(o.as_str())));
        }
        list
    }
}

/// A broker the suite can start.
#[derive(Debug, Clone)]
pub enum Target {
    /// `ternd` at this path, with this many workers.
    Ternd {
        /// The executable.
        path: PathBuf,
        /// `--workers`.
        workers: usize,
    },
    /// `nats-server` at this path.
    NatsServer {
        /// The executable.
        path: PathBuf,
    },
}

/// Runs every scenario against `target`, each against a freshly started broker. `progress` is told each
/// scenario's label before it runs. Broker logs go to `log_dir/<name>_<scenario>.log` when given.
pub fn run_target(
    target: &Target,
    config: &SuiteConfig,
    log_dir: Option<&std::path::Path>,
    progress: &mut dyn FnMut(&str, &str),
) -> Result<TargetReport, BrokerError> {
    let mut report: Option<TargetReport> = None;
    for s in config.scenarios() {
        // A fresh broker per scenario: a backlog one scenario left behind must not slow
        // the next one, and the memory baseline of `conns` is a fresh broker's.
        let broker = start(target, log_dir, &s.label())?;
        progress(&broker.name, &s.label());
        let driver = NatsDriver::new(broker.addr, "tern-bench");
        let result = s.run(&driver, Some(broker.pid()));
        report
            .get_or_insert_with(|| TargetReport {
                target: broker.name.clone(),
                address: broker.addr.to_string(),
                protocol: "text".into(),
                version: broker.version.clone(),
                scenarios: Vec::new(),
            })
            .scenarios
            .push(result);
        drop(broker);
    }
    report.ok_or(BrokerError::NoScenarios)
}

fn start(
    target: &Target,
    log_dir: Option<&std::path::Path>,
    label: &str,
) -> Result<BrokerProcess, BrokerError> {
    let log = |name: &str| {
        log_dir.map(|d| d.join(format!("{name} {label}.log").replace([' ', '/'], "_")))
    };
    match target {
        Target::Ternd { path, workers } => {
            BrokerProcess::ternd(path, *workers, log("ternd").as_deref())
        }
        Target::NatsServer { path } => {
            BrokerProcess::nats_server(path, log("nats-server").as_deref())
        }
    }
}
