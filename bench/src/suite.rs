//! The standard suite: the same short scenarios against each target, one broker at a time.
//!
//! Owns: the list of scenarios `make bench` and `make bench-compare` run
//! ([`SuiteConfig::scenarios`]), the targets ([`Target`]: `ternd` over its text port,
//! `ternd` over its binary port, `nats-server`), starting a fresh broker for every
//! scenario ([`crate::broker`]), running the scenario through the target's driver, and
//! stopping the broker before the next one starts (so a backlog never slows the next
//! scenario and brokers never compete for the CPUs or skew each other's memory), and the
//! order of the runs ([`plan`]): one run, target after target; with `--runs N`, scenario
//! by scenario, each against every target N times, interleaved (medians of the runs:
//! [`crate::runs`]).
//!
//! A broker that does not start is a problem of that scenario (of that run), not the end
//! of the suite: the other scenarios, targets and runs still run, and the suite still
//! exits non-zero.
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

/// One run of one scenario against one target: indices into the targets and
/// [`SuiteConfig::scenarios`], and the pass (0-based) it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Which pass (`--runs N`: 0 to N-1).
    pub pass: usize,
    /// Which target.
    pub target: usize,
    /// Which scenario.
    pub scenario: usize,
}

/// The order the suite runs in. One run: every scenario against the first target, then
/// every scenario against the next. Several: scenario by scenario, each run against every
/// target `runs` times, the targets' order reversed every other pass
/// ([`crate::runs::pass_order`]), so that the runs of one cell are spread over the time
/// the scenario takes for all targets and a drift of the machine's load moves every
/// target's figures alike.
pub fn plan(targets: usize, scenarios: usize, runs: usize) -> Vec<Step> {
    let mut steps = Vec::new();
    if runs <= 1 {
        for target in 0..targets {
            for scenario in 0..scenarios {
                steps.push(Step {
                    pass: 0,
                    target,
                    scenario,
                });
            }
        }
        return steps;
    }
    for scenario in 0..scenarios {
        for pass in 0..runs {
            for target in crate::runs::pass_order(targets, pass) {
                steps.push(Step {
                    pass,
                    target,
                    scenario,
                });
            }
        }
    }
    steps
}

/// Runs every scenario against every target `runs` times in the order of [`plan`], each
/// run against a freshly started broker; returns every run's reports, pass by pass (each
/// pass: one report per target, in the order of `targets`).
///
/// `progress` is told each run before it starts (`ternd/text: pubsub 1x1 16B`, or `run
/// 2/3: ternd/text: pubsub 1x1 16B` with several runs); `done` is given a target's report
/// of a pass as soon as its last scenario ran (with one run, target after target).
/// Broker logs go to `log_dir/<broker>_<protocol>_<scenario>.log` (`…_run<K>.log` with
/// several runs) when given. A scenario a target's protocol does not support is skipped.
pub fn run_passes(
    targets: &[Target],
    config: &SuiteConfig,
    runs: usize,
    log_dir: Option<&Path>,
    progress: &mut dyn FnMut(&str),
    done: &mut dyn FnMut(&TargetReport),
) -> Result<Vec<Vec<TargetReport>>, BrokerError> {
    let scenarios = config.scenarios();
    if scenarios.is_empty() {
        return Err(BrokerError::NoScenarios);
    }
    let runs = runs.max(1);
    let mut passes: Vec<Vec<TargetReport>> = (0..runs)
        .map(|_| {
            targets
                .iter()
                .map(|t| TargetReport {
                    target: t.broker().into(),
                    address: String::new(),
                    protocol: t.protocol().name().into(),
                    version: None,
                    scenarios: Vec::new(),
                })
                .collect()
        })
        .collect();
    let steps = plan(targets.len(), scenarios.len(), runs);
    for (i, step) in steps.iter().enumerate() {
        let target = &targets[step.target];
        let s = &scenarios[step.scenario];
        let report = &mut passes[step.pass][step.target];
        if s.supports(target.protocol()) {
            let (prefix, log_name) = if runs > 1 {
                (
                    format!("run {}/{runs}: ", step.pass + 1),
                    format!("{} run{}", s.label(), step.pass + 1),
                )
            } else {
                (String::new(), s.label())
            };
            progress(&format!("{prefix}{}: {}", target.name(), s.label()));
            let result = run_scenario(target, s, log_dir, &log_name, report);
            report.scenarios.push(result);
        }
        // Told even when the target supports none of the scenarios (an empty table).
        let more = steps[i + 1..]
            .iter()
            .any(|o| (o.pass, o.target) == (step.pass, step.target));
        if !more {
            done(report);
        }
    }
    Ok(passes)
}

/// One run of scenario `s` against a broker of `target` started for it; the broker's
/// address and version go into `report`.
fn run_scenario(
    target: &Target,
    s: &Scenario,
    log_dir: Option<&Path>,
    log_name: &str,
    report: &mut TargetReport,
) -> ScenarioReport {
    // A fresh broker per scenario: a backlog one scenario left behind must not slow the
    // next one, and the memory baseline of `conns` is a fresh broker's.
    match start(target, log_dir, log_name) {
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
                None => failed(s, format!("{} has no binary port", broker.name)),
            }
        }
        Err(e) => failed(s, format!("cannot start {}: {e}", target.broker())),
    }
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

    fn order(targets: usize, scenarios: usize, runs: usize) -> Vec<(usize, usize, usize)> {
        plan(targets, scenarios, runs)
            .iter()
            .map(|s| (s.scenario, s.pass, s.target))
            .collect()
    }

    #[test]
    fn one_run_goes_target_after_target() {
        // Today's order: every scenario of the first target, then the next target's.
        assert_eq!(
            order(3, 2, 1),
            [
                (0, 0, 0),
                (1, 0, 0),
                (0, 0, 1),
                (1, 0, 1),
                (0, 0, 2),
                (1, 0, 2)
            ]
        );
        assert_eq!(order(3, 2, 0), order(3, 2, 1));
    }

    #[test]
    fn several_runs_interleave_the_targets_per_scenario() {
        // (scenario, pass, target): each scenario's passes before the next scenario, the
        // targets reversed in every other pass.
        assert_eq!(
            order(3, 2, 2),
            [
                (0, 0, 0),
                (0, 0, 1),
                (0, 0, 2),
                (0, 1, 2),
                (0, 1, 1),
                (0, 1, 0),
                (1, 0, 0),
                (1, 0, 1),
                (1, 0, 2),
                (1, 1, 2),
                (1, 1, 1),
                (1, 1, 0)
            ]
        );
        let three: Vec<usize> = order(2, 1, 3).iter().map(|s| s.2).collect();
        assert_eq!(three, [0, 1, 1, 0, 0, 1]);
        let passes: Vec<usize> = order(2, 1, 3).iter().map(|s| s.1).collect();
        assert_eq!(passes, [0, 0, 1, 1, 2, 2]);
    }

    #[test]
    fn several_runs_of_a_broker_that_does_not_start_are_each_a_problem() {
        let target = Target::NatsServer {
            path: "/nonexistent/nats-server".into(),
        };
        let config = SuiteConfig {
            only: vec!["latency 10000".into()],
            ..SuiteConfig::default()
        };
        let mut seen = Vec::new();
        let mut done = Vec::new();
        let passes = run_passes(
            &[target],
            &config,
            2,
            None,
            &mut |line| seen.push(line.to_string()),
            &mut |t| done.push(t.scenarios.len()),
        )
        .unwrap();
        assert_eq!(
            seen,
            [
                "run 1/2: nats-server/text: latency 10000/s 128B",
                "run 2/2: nats-server/text: latency 10000/s 128B"
            ]
        );
        assert_eq!(done, [1, 1]);
        assert_eq!(passes.len(), 2);
        assert!(passes.iter().all(|p| p[0].problem_count() == 1));
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
        let mut done = 0;
        let passes = run_passes(
            &[target],
            &config,
            1,
            None,
            &mut |line| seen.push(line.to_string()),
            &mut |_| done += 1,
        )
        .unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0], "nats-server/text: latency 10000/s 128B");
        assert_eq!(done, 1);
        let report = &passes[0][0];
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
