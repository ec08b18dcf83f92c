//! The standard suite: the same short scenarios against each target, one broker at a time.
//!
//! Owns: the list of scenarios `make bench` and `make bench-compare` run
//! ([`SuiteConfig::scenarios`]), the targets ([`Target`]: `ternd` over its text port,
//! `ternd` over its binary port, `nats-server`), starting a fresh broker for every
//! scenario ([`crate::broker`]), running the scenario through the target's driver, and
//! stopping the broker before the next one starts (so a backlog never slows the next
//! scenario and brokers never compete for the CPUs or skew each other's memory).
//!
//! A broker that does not start is a problem of that scenario, not the end of the run:
//! the other scenarios and targets still run, and the suite still exits non-zero.
//!
//! Never: leaves a broker running — [`crate::broker::BrokerProcess`] kills on drop.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::broker::{BrokerError, BrokerProcess};
use crate::driver::Protocol;
use crate::report::{ScenarioReport, TargetReport};
use crate::scenario::audience::AudienceConfig;
use crate::scenario::catchup::CatchupConfig;
use crate::scenario::conns::ConnsConfig;
use crate::scenario::latency::LatencyConfig;
use crate::scenario::pubsub::PubSubConfig;
use crate::scenario::stuck::StuckConfig;
use crate::scenario::{fanout, queue, Limit, Scenario};

/// What the suite runs, and against what.
#[derive(Debug, Clone)]
pub struct SuiteConfig {
    /// How long each throughput and latency scenario publishes (each phase of `stuck`).
    pub duration: Duration,
    /// Message sizes for `pubsub` (1 publisher, 1 subscriber).
    pub sizes: Vec<usize>,
    /// Subscriber counts for `fanout` (128-byte messages).
    pub fanouts: Vec<usize>,
    /// Queue-group members.
    pub queue_members: usize,
    /// Rates for `latency` (128-byte messages). `stuck` runs at its defaults (10,000
    /// msgs/s of 256 bytes to 10 fast subscribers), each phase for `duration`.
    pub rates: Vec<u64>,
    /// Idle connections for `conns`.
    pub conns: usize,
    /// Users for `audience`.
    pub audience_users: usize,
    /// How long `audience` publishes (its storm comes halfway).
    pub audience_duration: Duration,
    /// Messages stored, then replayed, by `catchup` (128-byte messages; binary targets).
    pub catchup_count: u64,
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
            audience_users: 500,
            audience_duration: Duration::from_secs(10),
            catchup_count: 300_000,
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
        list.push(Scenario::Stuck(StuckConfig {
            duration: self.duration,
            ..StuckConfig::default()
        }));
        list.push(Scenario::Conns(ConnsConfig {
            count: self.conns,
            broker_pid: None,
            settle: Duration::from_millis(500),
        }));
        list.push(Scenario::Audience(AudienceConfig {
            users: self.audience_users,
            duration: self.audience_duration,
            storm_at: Some(self.audience_duration / 2),
            ..AudienceConfig::default()
        }));
        list.push(Scenario::Catchup(CatchupConfig {
            count: self.catchup_count,
            size: 128,
        }));
        if !self.only.is_empty() {
            list.retain(|s| self.only.iter().any(|o| s.label().contains(o.as_str())));
        }
        list
    }
}

/// A broker and the port the suite talks to it on.
#[derive(Debug, Clone)]
pub enum Target {
    /// `ternd` at this path, with this many workers, over this protocol.
    Ternd {
        /// The executable.
        path: PathBuf,
        /// `--workers`.
        workers: usize,
        /// Which of its ports.
        protocol: Protocol,
    },
    /// `nats-server` at this path (text protocol).
    NatsServer {
        /// The executable.
        path: PathBuf,
    },
}

impl Target {
    /// The broker's name (`ternd`, `nats-server`).
    pub fn broker(&self) -> &'static str {
        match self {
            Target::Ternd { .. } => "ternd",
            Target::NatsServer { .. } => "nats-server",
        }
    }

    /// The protocol the suite speaks to it.
    pub fn protocol(&self) -> Protocol {
        match self {
            Target::Ternd { protocol, .. } => *protocol,
            Target::NatsServer { .. } => Protocol::Text,
        }
    }

    /// `broker/protocol`, as reports name targets.
    pub fn name(&self) -> String {
        format!("{}/{}", self.broker(), self.protocol().name())
    }
}

/// Runs every scenario against `target`, each against a freshly started broker.
/// `progress` is told the target's name and each scenario's label before it runs. Broker
/// logs go to `log_dir/<broker>_<protocol>_<scenario>.log` when given.
pub fn run_target(
    target: &Target,
    config: &SuiteConfig,
    log_dir: Option<&Path>,
    progress: &mut dyn FnMut(&str, &str),
) -> Result<TargetReport, BrokerError> {
    let scenarios = config.scenarios();
    if scenarios.is_empty() {
        return Err(BrokerError::NoScenarios);
    }
    let mut report = TargetReport {
        target: target.broker().into(),
        address: String::new(),
        protocol: target.protocol().name().into(),
        version: None,
        scenarios: Vec::new(),
    };
    for s in scenarios {
        if !s.supports(target.protocol()) {
            continue;
        }
        progress(&target.name(), &s.label());
        // A fresh broker per scenario: a backlog one scenario left behind must not slow
        // the next one, and the memory baseline of `conns` is a fresh broker's.
        let result = match start(target, log_dir, &s.label()) {
            Ok(broker) => {
                let addr = match target.protocol() {
                    Protocol::Text => Some(broker.addr),
                    Protocol::Binary => broker.binary_addr,
                };
                report.version.clone_from(&broker.version);
                match addr {
                    Some(addr) => {
                        report.address = addr.to_string();
                        let driver = target.protocol().driver(addr, "tern-bench");
                        s.run(&*driver, Some(broker.pid()))
                    }
                    None => failed(&s, format!("{} has no binary port", broker.name)),
                }
            }
            Err(e) => failed(&s, format!("cannot start {}: {e}", target.broker())),
        };
        report.scenarios.push(result);
    }
    Ok(report)
}

/// The report of a scenario that could not run.
fn failed(s: &Scenario, problem: String) -> ScenarioReport {
    ScenarioReport::new(
        s.name(),
        s.label(),
        Vec::new(),
        Vec::new(),
        vec![problem],
        serde_json::Value::Null,
    )
}

fn start(
    target: &Target,
    log_dir: Option<&Path>,
    label: &str,
) -> Result<BrokerProcess, BrokerError> {
    let log =
        log_dir.map(|d| d.join(format!("{} {label}.log", target.name()).replace([' ', '/'], "_")));
    match target {
        Target::Ternd { path, workers, .. } => BrokerProcess::ternd(path, *workers, log.as_deref()),
        Target::NatsServer { path } => BrokerProcess::nats_server(path, log.as_deref()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_list_and_only() {
        let c = SuiteConfig::default();
        let labels: Vec<String> = c.scenarios().iter().map(Scenario::label).collect();
        assert_eq!(labels.len(), 12, "{labels:?}");
        assert_eq!(labels[0], "pubsub 1x1 16B");
        assert_eq!(labels[8], "stuck 10 fast 10000/s 256B");
        assert_eq!(labels[10], "audience 500 users 20 rooms");
        assert_eq!(labels[11], "catchup 300000 128B");
        let only = SuiteConfig {
            only: vec!["latency".into(), "audience".into(), "stuck".into()],
            ..SuiteConfig::default()
        };
        let names: Vec<&str> = only.scenarios().iter().map(Scenario::name).collect();
        assert_eq!(names, ["latency", "latency", "stuck", "audience"]);
    }

    #[test]
    fn targets_are_named_by_broker_and_protocol() {
        let t = Target::Ternd {
            path: "ternd".into(),
            workers: 2,
            protocol: Protocol::Binary,
        };
        assert_eq!(t.name(), "ternd/binary");
        let n = Target::NatsServer {
            path: "nats-server".into(),
        };
        assert_eq!(
            (n.name().as_str(), n.protocol()),
            ("nats-server/text", Protocol::Text)
        );
    }

    #[test]
    fn a_broker_that_does_not_start_is_a_problem_per_scenario() {
        let target = Target::NatsServer {
            path: "/nonexistent/nats-server".into(),
        };
        let config = SuiteConfig {
            only: vec!["latency".into()],
            ..SuiteConfig::default()
        };
        let mut seen = Vec::new();
        let report = run_target(&target, &config, None, &mut |t, l| {
            seen.push(format!("{t}: {l}"))
        })
        .unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(report.scenarios.len(), 2);
        for s in &report.scenarios {
            assert!(s.figures.is_empty());
            assert!(
                s.problems[0].starts_with("cannot start nats-server"),
                "{:?}",
                s.problems
            );
        }
    }
}
