//! `tern-bench transports`: the same three scenarios over plain TCP, TLS, WebSocket and
//! WebSocket over TLS, against `ternd` (text and binary protocols) and `nats-server` (text
//! protocol; its TLS client port and its WebSocket listener) in one run.
//!
//! Owns: the cells of the comparison (target × transport × scenario: `pubsub 1x1` at
//! `size` bytes, `latency` at `rate`, `conns` idle connections), the certificates of the
//! run ([`crate::pki`]), starting a fresh broker configured for each cell's transport
//! ([`crate::broker`]), repeating the whole set `runs` times (every other pass in reverse
//! order, so a drift of the machine's load is spread over every cell) and the medians
//! (with [`crate::runs`]'s helpers, as `suite --runs` has them), the ratios and the table
//! ([`render`]): ternd ÷ nats-server per transport, each target's throughput over TLS and
//! WebSocket as a fraction of its own plain TCP, memory per idle connection against a
//! plain one's, and delivered of expected for every run.
//!
//! Never: compares figures across runs of different brokers' processes, or hides a run
//! with a problem: a run with problems is left out of the medians and named, and it
//! fails the command (exit status 1).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::broker::{BrokerError, BrokerProcess, NatsListeners};
use crate::driver::{Dial, Protocol, Transport};
use crate::pki::{Pki, PkiError};
use crate::report::{
    format_compact as compact, format_range, format_value, Machine, ScenarioReport,
};
use crate::runs;
use crate::scenario::conns::ConnsConfig;
use crate::scenario::latency::LatencyConfig;
use crate::scenario::pubsub::PubSubConfig;
use crate::scenario::{Limit, Scenario};

/// What the comparison runs, and against what.
#[derive(Debug, Clone)]
pub struct TransportsConfig {
    /// The `ternd` executable.
    pub ternd: PathBuf,
    /// `ternd`'s `--workers`.
    pub workers: usize,
    /// `ternd`'s protocols to run (text, binary).
    pub protocols: Vec<Protocol>,
    /// The `nats-server` executable, when it is compared.
    pub nats_server: Option<PathBuf>,
    /// The transports (columns).
    pub transports: Vec<Transport>,
    /// How long `pubsub` and `latency` publish.
    pub duration: Duration,
    /// Payload bytes of `pubsub` and `latency`.
    pub size: usize,
    /// `latency`'s rate, msgs/s.
    pub rate: u64,
    /// Idle connections of `conns`.
    pub conns: usize,
    /// How many times every cell runs (medians over the clean runs).
    pub runs: usize,
    /// Where each broker's log goes (one file per cell and run), when given.
    pub log_dir: Option<PathBuf>,
}

impl TransportsConfig {
    /// The full comparison: 3 s per scenario, 128 B, 10,000 msgs/s, 2,000 idle
    /// connections, 3 runs.
    pub fn new(ternd: PathBuf) -> Self {
        TransportsConfig {
            ternd,
            workers: 2,
            protocols: vec![Protocol::Text, Protocol::Binary],
            nats_server: None,
            transports: Transport::ALL.to_vec(),
            duration: Duration::from_secs(3),
            size: 128,
            rate: 10_000,
            conns: 2_000,
            runs: 3,
            log_dir: None,
        }
    }

    /// The short run (a check, not a measurement): 300 ms per scenario at 2,000 msgs/s, 50
    /// connections, once.
    pub fn short(ternd: PathBuf) -> Self {
        TransportsConfig {
            duration: Duration::from_millis(300),
            rate: 2_000,
            conns: 50,
            runs: 1,
            ..TransportsConfig::new(ternd)
        }
    }

    /// The scenarios of every target and transport, in run order.
    fn scenarios(&self) -> Vec<Scenario> {
        let limit = Limit::Duration(self.duration);
        vec![
            Scenario::PubSub(PubSubConfig::new(1, 1, self.size, limit)),
            Scenario::Latency(LatencyConfig::new(self.rate, self.size, limit)),
            Scenario::Conns(ConnsConfig {
                count: self.conns,
                broker_pid: None,
                settle: Duration::from_millis(500),
            }),
        ]
    }

    /// The targets (rows): ternd over each protocol, then nats-server.
    fn targets(&self) -> Vec<Target> {
        let mut targets: Vec<Target> = self
            .protocols
            .iter()
            .map(|&protocol| Target::Ternd { protocol })
            .collect();
        if self.nats_server.is_some() {
            targets.push(Target::NatsServer);
        }
        targets
    }
}

/// A broker and the protocol spoken to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Ternd { protocol: Protocol },
    NatsServer,
}

impl Target {
    fn protocol(self) -> Protocol {
        match self {
            Target::Ternd { protocol } => protocol,
            Target::NatsServer => Protocol::Text,
        }
    }

    fn name(self) -> String {
        match self {
            Target::Ternd { protocol } => format!("ternd/{}", protocol.name()),
            Target::NatsServer => "nats-server/text".into(),
        }
    }
}

/// One target, over one transport, in one scenario: every run's report.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// `ternd/text`, `ternd/binary`, `nats-server/text`.
    pub target: String,
    /// The transport.
    pub transport: Transport,
    /// `pubsub`, `latency`, `conns`.
    pub scenario: &'static str,
    /// What exactly ran (`pubsub 1x1 128B`).
    pub label: String,
    /// Each run's report, in run order.
    pub runs: Vec<ScenarioReport>,
}

impl Cell {
    /// The median of figure `name` over the runs without problems.
    pub fn median(&self, name: &str) -> Option<f64> {
        runs::median(self.clean_values(name))
    }

    /// The smallest and largest of figure `name` over the runs without problems.
    pub fn range(&self, name: &str) -> Option<(f64, f64)> {
        runs::range(&self.clean_values(name))
    }

    fn clean_values(&self, name: &str) -> Vec<f64> {
        self.runs
            .iter()
            .filter(|r| r.problems.is_empty())
            .filter_map(|r| r.figure(name).map(|f| f.value))
            .collect()
    }

    /// Delivered and expected, summed over every run's windows.
    pub fn counts(&self) -> (u64, u64) {
        self.runs
            .iter()
            .flat_map(|r| &r.deliveries)
            .fold((0, 0), |(d, e), w| (d + w.delivered, e + w.expected))
    }

    /// Every problem of every run, `run N: problem`.
    pub fn problems(&self) -> Vec<String> {
        runs::problems_by_run(&self.runs)
    }
}

/// The whole comparison.
#[derive(Debug, Clone, Serialize)]
pub struct TransportsReport {
    /// The machine.
    pub machine: Machine,
    /// `/proc/loadavg`'s 1, 5 and 15 minute averages before the first run and after the
    /// last (other work on the machine shows here).
    pub load_before: Option<[f64; 3]>,
    /// See `load_before`.
    pub load_after: Option<[f64; 3]>,
    /// Runs per cell.
    pub runs: usize,
    /// `ternd --version`, `nats-server --version`.
    pub versions: Vec<String>,
    /// Every cell, target by target, transport by transport.
    pub cells: Vec<Cell>,
}

impl TransportsReport {
    /// Problems over every cell and run.
    pub fn problem_count(&self) -> usize {
        self.cells
            .iter()
            .flat_map(|c| &c.runs)
            .map(|r| r.problems.len())
            .sum()
    }

    /// Each failed cell run, `target over transport / label: first problem`.
    pub fn failures(&self) -> Vec<String> {
        self.cells
            .iter()
            .flat_map(|c| {
                c.problems().into_iter().map(move |p| {
                    format!(
                        "{} over {} / {}: {p}",
                        c.target,
                        c.transport.name(),
                        c.label
                    )
                })
            })
            .collect()
    }

    fn cell(&self, target: &str, transport: Transport, scenario: &str) -> Option<&Cell> {
        self.cells
            .iter()
            .find(|c| c.target == target && c.transport == transport && c.scenario == scenario)
    }

    fn targets(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for c in &self.cells {
            if !names.contains(&c.target) {
                names.push(c.target.clone());
            }
        }
        names
    }

    fn transports(&self) -> Vec<Transport> {
        let mut list: Vec<Transport> = Vec::new();
        for c in &self.cells {
            if !list.contains(&c.transport) {
                list.push(c.transport);
            }
        }
        list
    }
}

/// Runs the comparison; `progress` is told each cell before it runs.
pub fn run(
    config: &TransportsConfig,
    progress: &mut dyn FnMut(&str),
) -> Result<TransportsReport, PkiError> {
    let pki = Pki::generate()?;
    let load_before = load_average();
    let mut cells = Vec::new();
    let mut plan = Vec::new();
    for target in config.targets() {
        for &transport in &config.transports {
            for scenario in config.scenarios() {
                cells.push(Cell {
                    target: target.name(),
                    transport,
                    scenario: scenario.name(),
                    label: scenario.label(),
                    runs: Vec::new(),
                });
                plan.push((target, transport, scenario));
            }
        }
    }
    for pass in 0..config.runs {
        for i in runs::pass_order(plan.len(), pass) {
            let (target, transport, scenario) = &plan[i];
            progress(&format!(
                "run {}/{}: {} over {}: {}",
                pass + 1,
                config.runs,
                target.name(),
                transport.name(),
                scenario.label()
            ));
            let log = config.log_dir.as_deref().map(|dir| {
                dir.join(
                    format!(
                        "transports {} {} {} run{}.log",
                        target.name(),
                        transport.name(),
                        scenario.label(),
                        pass + 1
                    )
                    .replace([' ', '/'], "_"),
                )
            });
            let report = run_cell(config, &pki, *target, *transport, scenario, log.as_deref());
            cells[i].runs.push(report);
        }
    }
    let mut versions = Vec::new();
    versions.extend(crate::broker::version_of(&config.ternd));
    if let Some(nats) = &config.nats_server {
        versions.extend(crate::broker::version_of(nats));
    }
    Ok(TransportsReport {
        machine: Machine::probe(),
        load_before,
        load_after: load_average(),
        runs: config.runs,
        versions,
        cells,
    })
}

/// One run of one cell, on a broker started for it.
fn run_cell(
    config: &TransportsConfig,
    pki: &Pki,
    target: Target,
    transport: Transport,
    scenario: &Scenario,
    log: Option<&Path>,
) -> ScenarioReport {
    let failed = |problem: String| {
        ScenarioReport::new(
            scenario.name(),
            scenario.label(),
            Vec::new(),
            Vec::new(),
            vec![problem],
            serde_json::Value::Null,
        )
    };
    let broker = match start(config, pki, target, transport, log) {
        Ok(broker) => broker,
        Err(e) => return failed(format!("cannot start {}: {e}", target.name())),
    };
    let addr = match (target, transport) {
        (_, Transport::Websocket | Transport::Wss) => broker.websocket_addr,
        (
            Target::Ternd {
                protocol: Protocol::Binary,
            },
            _,
        ) => broker.binary_addr,
        _ => Some(broker.addr),
    };
    let Some(addr) = addr else {
        return failed(format!(
            "{} has no port for {}",
            target.name(),
            transport.name()
        ));
    };
    let tls = transport.is_tls().then(|| pki.client());
    let dial = match Dial::new(addr, transport, tls) {
        Ok(dial) => dial,
        Err(e) => return failed(e.to_string()),
    };
    let driver = target.protocol().driver_via(dial, "tern-bench");
    scenario.run(&*driver, Some(broker.pid()))
}

/// Starts the broker of `target` with the listener `transport` needs.
fn start(
    config: &TransportsConfig,
    pki: &Pki,
    target: Target,
    transport: Transport,
    log: Option<&Path>,
) -> Result<BrokerProcess, BrokerError> {
    match target {
        Target::Ternd { .. } => {
            let mut extra = Vec::new();
            if transport.is_tls() {
                extra.extend(pki.ternd_args());
            }
            if transport.is_websocket() {
                extra.extend(["--websocket-listen".to_string(), "127.0.0.1:0".into()]);
            }
            BrokerProcess::ternd_with(&config.ternd, config.workers, &extra, false, log)
        }
        Target::NatsServer => {
            let Some(path) = &config.nats_server else {
                return Err(BrokerError::NoScenarios);
            };
            let listeners = match transport {
                Transport::Tcp => NatsListeners::default(),
                Transport::Tls => NatsListeners {
                    tls: Some(pki.nats_tls_block()),
                    websocket: None,
                },
                Transport::Websocket => NatsListeners {
                    tls: None,
                    websocket: Some(None),
                },
                Transport::Wss => NatsListeners {
                    tls: None,
                    websocket: Some(Some(pki.nats_tls_block())),
                },
            };
            BrokerProcess::nats_server_with(path, &listeners, log)
        }
    }
}

/// `/proc/loadavg`'s three averages.
pub fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// The figure each scenario's table shows, its unit and a title.
const TABLES: [(&str, &str, &str, &str); 5] = [
    (
        "pubsub",
        "delivery rate",
        "msgs/s",
        "delivered msgs/s (higher is better)",
    ),
    (
        "pubsub",
        "server CPU/msg",
        "ns",
        "broker CPU per delivered message, ns (lower is better; moved less by the machine's load than the rate)",
    ),
    ("latency", "p50", "µs", "p50 latency, µs (lower is better)"),
    ("latency", "p99", "µs", "p99 latency, µs (lower is better)"),
    (
        "conns",
        "memory per connection",
        "KiB",
        "broker memory per idle connection, KiB (lower is better)",
    ),
];

/// The comparison as text: a table per figure (targets × transports, medians with their
/// range), ratios to nats-server and to each target's own plain TCP, counts, problems.
pub fn render(report: &TransportsReport) -> String {
    let mut out = String::new();
    let targets = report.targets();
    let transports = report.transports();
    let nats = targets
        .iter()
        .find(|t| t.starts_with("nats-server"))
        .cloned();
    let load = |l: Option<[f64; 3]>| {
        l.map_or("-".to_string(), |[a, b, c]| format!("{a:.2} {b:.2} {c:.2}"))
    };
    out.push_str(&format!(
        "transports: {} CPUs{}; load average before {}, after {}; median of {} run(s) per cell (min–max)\n",
        report.machine.cpus,
        report
            .machine
            .cpu_model
            .as_deref()
            .map(|m| format!(" ({m})"))
            .unwrap_or_default(),
        load(report.load_before),
        load(report.load_after),
        report.runs
    ));
    for v in &report.versions {
        out.push_str(&format!("  {v}\n"));
    }
    let width = 26;
    for (scenario, figure, _unit, title) in TABLES {
        let label = report
            .cells
            .iter()
            .find(|c| c.scenario == scenario)
            .map_or(scenario.to_string(), |c| c.label.clone());
        out.push_str(&format!("\n{label}: {title}\n"));
        out.push_str(&format!("{:<26}", "target"));
        for t in &transports {
            out.push_str(&format!("{:>width$}", t.name()));
        }
        out.push('\n');
        for target in &targets {
            out.push_str(&format!("{target:<26}"));
            for &t in &transports {
                let text = report
                    .cell(target, t, scenario)
                    .map_or("-".to_string(), |c| {
                        match (c.median(figure), c.range(figure)) {
                            (Some(m), Some(range)) if report.runs > 1 => {
                                format!("{} {}", compact(m), format_range(range))
                            }
                            (Some(m), _) => compact(m),
                            _ => "FAILED".into(),
                        }
                    });
                out.push_str(&format!("{text:>width$}"));
            }
            out.push('\n');
        }
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
            _ => "-".into(),
        };
        let median = |target: &str, t: Transport| {
            report
                .cell(target, t, scenario)
                .and_then(|c| c.median(figure))
        };
        if let Some(nats) = &nats {
            for target in targets.iter().filter(|t| *t != nats) {
                out.push_str(&format!("{:<26}", format!("{target} ÷ nats-server")));
                for &t in &transports {
                    let r = ratio(median(target, t), median(nats, t));
                    out.push_str(&format!("{r:>width$}"));
                }
                out.push('\n');
            }
        }
        if transports.contains(&Transport::Tcp) {
            for target in &targets {
                out.push_str(&format!("{:<26}", format!("{target} ÷ its tcp")));
                for &t in &transports {
                    let r = ratio(median(target, t), median(target, Transport::Tcp));
                    out.push_str(&format!("{r:>width$}"));
                }
                out.push('\n');
            }
        }
    }
    out.push_str("\ndelivered of expected (all runs)\n");
    for c in &report.cells {
        let (delivered, expected) = c.counts();
        if expected == 0 {
            continue;
        }
        let verdict = if delivered == expected {
            "exact"
        } else {
            "OFF"
        };
        out.push_str(&format!(
            "  {:<18} {:<10} {:<24} {:>14} of {:<14} {verdict}\n",
            c.target,
            c.transport.name(),
            c.label,
            format_count(delivered),
            format_count(expected),
        ));
    }
    for f in report.failures() {
        out.push_str(&format!("PROBLEM: {f}\n"));
    }
    out
}

/// A count with thousands separators (`1,234,567`).
fn format_count(n: u64) -> String {
    format_value(n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Better, Figure};

    fn run_with(rate: f64, problem: bool) -> ScenarioReport {
        ScenarioReport::new(
            "pubsub",
            "pubsub 1x1 128B".into(),
            vec![Figure::new("delivery rate", rate, "msgs/s", Better::Higher)],
            Vec::new(),
            if problem { vec!["lost".into()] } else { vec![] },
            serde_json::Value::Null,
        )
    }

    fn cell(target: &str, transport: Transport, rates: &[(f64, bool)]) -> Cell {
        Cell {
            target: target.into(),
            transport,
            scenario: "pubsub",
            label: "pubsub 1x1 128B".into(),
            runs: rates.iter().map(|&(r, p)| run_with(r, p)).collect(),
        }
    }

    #[test]
    fn medians_leave_out_runs_with_problems() {
        let c = cell(
            "ternd/text",
            Transport::Tls,
            &[(3.0, false), (100.0, true), (1.0, false), (2.0, false)],
        );
        assert_eq!(c.median("delivery rate"), Some(2.0));
        assert_eq!(c.range("delivery rate"), Some((1.0, 3.0)));
        assert_eq!(c.problems(), vec!["run 2: lost".to_string()]);
        let even = cell("x", Transport::Tcp, &[(1.0, false), (4.0, false)]);
        assert_eq!(even.median("delivery rate"), Some(2.5));
        let none = cell("x", Transport::Tcp, &[(1.0, true)]);
        assert_eq!(none.median("delivery rate"), None);
    }

    #[test]
    fn the_table_has_ratios_to_nats_and_to_plain_tcp() {
        let report = TransportsReport {
            machine: Machine::probe(),
            load_before: Some([1.0, 2.0, 3.0]),
            load_after: None,
            runs: 1,
            versions: vec![],
            cells: vec![
                cell("ternd/text", Transport::Tcp, &[(200.0, false)]),
                cell("ternd/text", Transport::Tls, &[(100.0, false)]),
                cell("nats-server/text", Transport::Tcp, &[(400.0, false)]),
                cell("nats-server/text", Transport::Tls, &[(50.0, true)]),
            ],
        };
        let text = render(&report);
        let line = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix} line in\n{text}"))
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(line("ternd/text ÷ nats-server")[3..], ["0.50", "-"]);
        assert_eq!(line("ternd/text ÷ its tcp")[4..], ["1.00", "0.50"]);
        assert_eq!(line("nats-server/text   ")[1..], ["400", "FAILED"]);
        assert!(text.contains("PROBLEM: nats-server/text over tls / pubsub 1x1 128B: run 1: lost"));
        assert!(text.contains("load average before 1.00 2.00 3.00, after -"));
        assert_eq!(report.problem_count(), 1);
        assert_eq!(format_count(1_234_567), "1,234,567");
        assert_eq!(compact(1_694_000.0), "1.69M");
        assert_eq!(compact(2_544.0), "2,544");
    }
}
