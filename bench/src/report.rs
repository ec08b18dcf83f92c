//! Reports: every figure of a run, as a table for people and as JSON for tools.
//!
//! Owns: [`Figure`] (one named number with its unit and which direction is better, and
//! its min–max when it is the median of several runs),
//! [`ScenarioReport`] (one scenario's figures, measured windows, problems and full detail;
//! [`ScenarioReport::new`] is where every window's count rule and `server CPU/msg` figure
//! join the report, see [`crate::scenario::delivery`]),
//! [`TargetReport`] (every scenario run against one broker over one protocol), [`Report`]
//! (a whole run, with the machine it ran on and the comparisons; with several runs,
//! every run's reports beside their medians), the text tables, and the side-by-side
//! comparison of several targets against a baseline, with ratios (target / baseline; of
//! medians, each shown with its min–max, when the reports merge several runs: merging is
//! [`crate::runs`]'s).
//!
//! Never: measures anything, or drops a figure — the JSON holds every field of every
//! scenario result, the tables a readable subset.

use std::fmt::Write as _;

use serde::Serialize;

use crate::scenario::delivery::Delivery;

/// Which direction of a figure is an improvement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    /// More is better (rates).
    Higher,
    /// Less is better (latency, memory).
    Lower,
    /// Neither (counts).
    Neither,
}

/// One named number.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figure {
    /// What it is (`delivery rate`, `p99`).
    pub name: String,
    /// Its value, in `unit`.
    pub value: f64,
    /// Its unit (`msgs/s`, `MB/s`, `µs`, `KiB`).
    pub unit: &'static str,
    /// Which direction is better.
    pub better: Better,
    /// When `value` is the median of several runs (`suite --runs N`): the smallest and the
    /// largest of them ([`crate::runs::merge_scenario`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range: Option<(f64, f64)>,
}

impl Figure {
    /// A figure.
    pub fn new(name: &str, value: f64, unit: &'static str, better: Better) -> Self {
        Figure {
            name: name.to_string(),
            value,
            unit,
            better,
            range: None,
        }
    }
}

/// How many runs a merged scenario report stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RunCount {
    /// Every run.
    pub total: usize,
    /// The runs without problems: the ones its medians are of.
    pub clean: usize,
}

/// One scenario's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    /// Which scenario (`pubsub`, `fanout`, `queue`, `latency`, `conns`, `audience`).
    pub scenario: &'static str,
    /// What exactly ran (`pubsub 1x1 128B`): the key for comparisons.
    pub label: String,
    /// The figures the table shows.
    pub figures: Vec<Figure>,
    /// Each measured window: delivered of expected, and the server's CPU over it (empty
    /// for a scenario without an expected count, or that could not run).
    pub deliveries: Vec<Delivery>,
    /// Everything that went wrong; empty for a clean run.
    pub problems: Vec<String>,
    /// The scenario's full result, every field (null in a merged report: each run's is
    /// in its own report).
    pub detail: serde_json::Value,
    /// Set when this report merges several runs ([`crate::runs::merge_scenario`]): its
    /// figures are medians, its deliveries the sums over every run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runs: Option<RunCount>,
}

impl ScenarioReport {
    /// A scenario's report. Each window in `deliveries` adds its `server CPU/msg` figure
    /// (when measured) after `figures`, and its problems — a count short of or over the
    /// expected one, a CPU time that could not be read — after `problems`: the one place
    /// the count rule joins a report, so every scenario fails the same way.
    pub fn new(
        scenario: &'static str,
        label: String,
        mut figures: Vec<Figure>,
        deliveries: Vec<Delivery>,
        mut problems: Vec<String>,
        detail: serde_json::Value,
    ) -> Self {
        for d in &deliveries {
            figures.extend(d.cpu_figure());
            problems.extend(d.problems());
        }
        ScenarioReport {
            scenario,
            label,
            figures,
            deliveries,
            problems,
            detail,
            runs: None,
        }
    }

    /// The figure called `name`, if any.
    pub fn figure(&self, name: &str) -> Option<&Figure> {
        self.figures.iter().find(|f| f.name == name)
    }
}

/// Every scenario run against one broker over one protocol.
#[derive(Debug, Clone, Serialize)]
pub struct TargetReport {
    /// The broker (`ternd`, `nats-server`).
    pub target: String,
    /// Its address (the last one, when the suite started a broker per scenario).
    pub address: String,
    /// The driver's protocol (`text`, `binary`).
    pub protocol: String,
    /// The broker's own description (version), when known.
    pub version: Option<String>,
    /// The scenarios, in run order.
    pub scenarios: Vec<ScenarioReport>,
}

impl TargetReport {
    /// `broker/protocol` (`ternd/binary`): how tables and charts name the target.
    pub fn name(&self) -> String {
        format!("{}/{}", self.target, self.protocol)
    }

    /// How many problems its scenarios reported.
    pub fn problem_count(&self) -> usize {
        self.scenarios.iter().map(|s| s.problems.len()).sum()
    }
}

/// The machine a run happened on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical CPUs.
    pub cpus: usize,
    /// The CPU model, from `/proc/cpuinfo`.
    pub cpu_model: Option<String>,
    /// Total memory in MiB, from `/proc/meminfo`.
    pub memory_mib: Option<u64>,
}

impl Machine {
    /// Reads the machine's description from `/proc` (fields left empty elsewhere).
    pub fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model: cpuinfo
                .lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string()),
            memory_mib: meminfo
                .lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
                .map(|kib| kib / 1024),
        }
    }
}

/// One target compared with the baseline.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The target's name (`ternd/text`).
    pub target: String,
    /// The baseline's name (`nats-server/text`).
    pub baseline: String,
    /// Every figure both have; `ratio` = target / baseline.
    pub rows: Vec<ComparisonRow>,
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Seconds since the Unix epoch when the run ended.
    pub unix_time: u64,
    /// The machine.
    pub machine: Machine,
    /// One entry per broker and protocol.
    pub targets: Vec<TargetReport>,
    /// Each other target against the baseline (empty with fewer than two targets).
    pub comparisons: Vec<Comparison>,
    /// With `suite --runs N` (N > 1): every run's full reports, pass by pass (each pass
    /// every target's, in the order of `targets`); `targets` then holds their medians
    /// ([`crate::runs::merge_targets`]) and `comparisons` the ratios of the medians.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<Vec<TargetReport>>,
}

impl Report {
    /// A report of `targets`, stamped now, comparing every target with the one at index
    /// `baseline` (if given).
    pub fn new(targets: Vec<TargetReport>, baseline: Option<usize>) -> Self {
        let comparisons = match baseline.and_then(|b| targets.get(b)) {
            Some(base) => targets
                .iter()
                .filter(|t| t.name() != base.name())
                .map(|t| Comparison {
                    target: t.name(),
                    baseline: base.name(),
                    rows: compare(t, base),
                })
                .collect(),
            None => Vec::new(),
        };
        Report {
            unix_time: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            machine: Machine::probe(),
            targets,
            comparisons,
            runs: Vec::new(),
        }
    }

    /// The same report, keeping every run's reports too (see [`Report::runs`]).
    pub fn with_runs(self, runs: Vec<Vec<TargetReport>>) -> Self {
        Report { runs, ..self }
    }

    /// How many problems all scenarios of all targets reported.
    pub fn problem_count(&self) -> usize {
        self.targets.iter().map(TargetReport::problem_count).sum()
    }

    /// One line per scenario with problems, naming its target and scenario: its counts
    /// when they are off (`ternd/text / pubsub 1x1 16B: delivered 9 of 10 expected: 1
    /// short (lost)`), else its first problem, and how many more it listed. The summary
    /// printed when a run fails.
    pub fn failures(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for t in &self.targets {
            for s in t.scenarios.iter().filter(|s| !s.problems.is_empty()) {
                // A merged report's counts are sums over its runs: its problems say which
                // run was off, and by how much.
                let counts: Vec<String> = if s.runs.is_some() {
                    Vec::new()
                } else {
                    s.deliveries.iter().filter_map(Delivery::problem).collect()
                };
                let shown = if counts.is_empty() {
                    vec![s.problems[0].clone()]
                } else {
                    counts
                };
                let mut line = format!("{} / {}: {}", t.name(), s.label, shown.join("; "));
                let more = s.problems.len().saturating_sub(shown.len());
                if more > 0 {
                    let _ = write!(line, " (and {more} more PROBLEM line(s) above)");
                }
                lines.push(line);
            }
        }
        lines
    }
}

/// A value for a table: thousands separators for large numbers, fewer decimals as the
/// value grows.
pub fn format_value(value: f64) -> String {
    if !value.is_finite() {
        return "-".into();
    }
    if value.abs() >= 1000.0 {
        let whole = value.round() as i64;
        let digits = whole.unsigned_abs().to_string();
        let mut groups: Vec<&str> = digits
            .as_bytes()
            .rchunks(3)
            .map(|g| std::str::from_utf8(g).unwrap_or("?"))
            .collect();
        groups.reverse();
        let mut out = groups.join(",");
        if whole < 0 {
            out.insert(0, '-');
        }
        out
    } else if value.abs() >= 100.0 || value.fract() == 0.0 {
        format!("{value:.0}")
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

/// A range as tables show it beside a median: `(1.10M–1.40M)`.
pub fn format_range((lo, hi): (f64, f64)) -> String {
    format!("({}–{})", format_compact(lo), format_compact(hi))
}

/// A value in little room: millions as `1.69M`, the rest as [`format_value`] writes them.
pub fn format_compact(value: f64) -> String {
    if value.abs() >= 1e6 {
        format!("{:.2}M", value / 1e6)
    } else {
        format_value(value)
    }
}

/// A figure's value for a table, with its range beside it when it is a median of several
/// runs: `1,234,567 (1.10M–1.40M)`.
fn format_figure(f: &Figure) -> String {
    match f.range {
        Some(range) => format!("{} {}", format_value(f.value), format_range(range)),
        None => format_value(f.value),
    }
}

/// How a merged scenario's heading names its runs: `median of 3 runs, min–max`, `median
/// of 2 clean runs of 3, min–max`.
fn runs_note(runs: RunCount) -> String {
    if runs.clean == runs.total {
        format!("median of {} runs, min–max", runs.total)
    } else {
        format!(
            "median of {} clean runs of {}, min–max",
            runs.clean, runs.total
        )
    }
}

/// The table of one target's scenarios (of a merged report: medians with their min–max,
/// delivered counts summed over every run).
pub fn render_target(t: &TargetReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "== {} ({})", t.name(), t.address);
    for s in &t.scenarios {
        match s.runs {
            Some(runs) => {
                let _ = writeln!(out, "-- {} ({})", s.label, runs_note(runs));
            }
            None => {
                let _ = writeln!(out, "-- {}", s.label);
            }
        }
        for f in &s.figures {
            let _ = match f.range {
                Some(range) => writeln!(
                    out,
                    "   {:<24} {:>14} {:<17} {}",
                    f.name,
                    format_value(f.value),
                    format_range(range),
                    f.unit
                ),
                None => writeln!(
                    out,
                    "   {:<24} {:>14} {}",
                    f.name,
                    format_value(f.value),
                    f.unit
                ),
            };
        }
        // A CPU time that was not measured still has its line, so every table has it.
        for d in &s.deliveries {
            if s.figure(&d.cpu_figure_name()).is_none() {
                let _ = writeln!(out, "   {:<24} {:>14}", d.cpu_figure_name(), "-");
            }
        }
        for d in &s.deliveries {
            let what = match s.runs {
                Some(runs) => format!("{} ({} runs)", d.name("delivered"), runs.total),
                None => d.name("delivered"),
            };
            let _ = writeln!(
                out,
                "   {:<24} {:>14} of {}",
                what,
                format_value(d.delivered as f64),
                format_value(d.expected as f64)
            );
        }
        for p in &s.problems {
            let _ = writeln!(out, "   PROBLEM: {p}");
        }
    }
    out
}

/// One row of a comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComparisonRow {
    /// The scenario label.
    pub label: String,
    /// The figure name.
    pub figure: String,
    /// Its unit.
    pub unit: &'static str,
    /// The first target's value.
    pub a: f64,
    /// The second target's value.
    pub b: f64,
    /// `a / b` (None when `b` is 0).
    pub ratio: Option<f64>,
    /// Which direction is better.
    pub better: Better,
}

/// Every figure both targets have, matched by scenario label and figure name, in `a`'s
/// order.
pub fn compare(a: &TargetReport, b: &TargetReport) -> Vec<ComparisonRow> {
    let mut rows = Vec::new();
    for sa in &a.scenarios {
        let Some(sb) = b.scenarios.iter().find(|s| s.label == sa.label) else {
            continue;
        };
        for fa in &sa.figures {
            if fa.better == Better::Neither {
                continue;
            }
            if let Some(fb) = sb.figure(&fa.name) {
                rows.push(ComparisonRow {
                    label: sa.label.clone(),
                    figure: fa.name.clone(),
                    unit: fa.unit,
                    a: fa.value,
                    b: fb.value,
                    ratio: (fb.value != 0.0).then(|| fa.value / fb.value),
                    better: fa.better,
                });
            }
        }
    }
    rows
}

/// The comparison table: every target's value beside the baseline's, and each target's
/// ratio to the baseline (`targets` may include the baseline; it is shown once). Rows are
/// the baseline's figures (rates, latencies, memory: not counts), in its order. Of merged
/// reports ([`crate::runs::merge_targets`]): medians with their min–max, ratios of the
/// medians, and the header says how many runs each cell had.
pub fn render_comparison(targets: &[TargetReport], baseline: &TargetReport) -> String {
    let others: Vec<&TargetReport> = targets
        .iter()
        .filter(|t| t.name() != baseline.name())
        .collect();
    let base_name = baseline.name();
    let runs = others
        .iter()
        .copied()
        .chain([baseline])
        .flat_map(|t| &t.scenarios)
        .filter_map(|s| s.runs.map(|r| r.total))
        .max();
    let mut out = String::new();
    let _ = match runs {
        Some(runs) => writeln!(
            out,
            "== compared with {base_name}: median of {runs} runs per cell (min–max), a run with \
             problems left out (ratio = target median / {base_name} median; ↑ higher is \
             better, ↓ lower)"
        ),
        None => writeln!(
            out,
            "== compared with {base_name} (ratio = target / {base_name}; ↑ higher is better, ↓ lower)"
        ),
    };
    // Room for `1,234,567 (1.10M–1.40M)` when values have ranges.
    let width = if runs.is_some() { 30 } else { 16 };
    let mut header = format!("{:<30} {:<24}", "scenario", "figure");
    for t in others.iter().copied().chain([baseline]) {
        let _ = write!(header, " {:>width$}", t.name());
    }
    for t in &others {
        let _ = write!(header, " {:>13}", format!("{} ratio", t.protocol));
    }
    let _ = writeln!(out, "{header}  unit");
    for sb in &baseline.scenarios {
        for fb in sb.figures.iter().filter(|f| f.better != Better::Neither) {
            let figure = |t: &TargetReport| {
                t.scenarios
                    .iter()
                    .find(|s| s.label == sb.label)
                    .and_then(|s| s.figure(&fb.name))
                    .cloned()
            };
            let value = |t: &TargetReport| figure(t).map(|f| f.value);
            let mut line = format!("{:<30} {:<24}", sb.label, fb.name);
            for t in others.iter().copied().chain([baseline]) {
                let v = figure(t).map_or("-".into(), |f| format_figure(&f));
                let _ = write!(line, " {v:>width$}");
            }
            for t in &others {
                let ratio = value(t)
                    .filter(|_| fb.value != 0.0)
                    .map_or("-".into(), |v| format!("{:.2}", v / fb.value));
                let _ = write!(line, " {ratio:>13}");
            }
            let arrow = if fb.better == Better::Higher {
                "↑"
            } else {
                "↓"
            };
            let _ = writeln!(out, "{line}  {} {arrow}", fb.unit);
        }
    }
    for t in others.iter().copied().chain([baseline]) {
        for s in &t.scenarios {
            for p in &s.problems {
                let _ = writeln!(out, "PROBLEM {} / {}: {p}", t.name(), s.label);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::cpu::CpuReading;

    /// A target whose one scenario delivered 10 of 10, the server spending `cpu_ns`.
    fn target_with_cpu(name: &str, rate: f64, p99: f64, cpu: CpuReading) -> TargetReport {
        let (target, protocol) = name.split_once('/').unwrap_or((name, "text"));
        TargetReport {
            target: target.into(),
            address: "127.0.0.1:1".into(),
            protocol: protocol.into(),
            version: None,
            scenarios: vec![ScenarioReport::new(
                "pubsub",
                "pubsub 1x1 16B".into(),
                vec![
                    Figure::new("delivery rate", rate, "msgs/s", Better::Higher),
                    Figure::new("p99", p99, "µs", Better::Lower),
                    Figure::new("published", 10.0, "msgs", Better::Neither),
                ],
                vec![Delivery::new(10, 10, cpu)],
                vec![],
                serde_json::Value::Null,
            )],
        }
    }

    fn target(name: &str, rate: f64, p99: f64) -> TargetReport {
        target_with_cpu(name, rate, p99, CpuReading::NotWatched)
    }

    #[test]
    fn values_format_readably() {
        assert_eq!(format_value(1_234_567.4), "1,234,567");
        assert_eq!(format_value(-1234.0), "-1,234");
        assert_eq!(format_value(999.6), "1000");
        assert_eq!(format_value(12.345), "12.3");
        assert_eq!(format_value(1.2345), "1.23");
        assert_eq!(format_value(7.0), "7");
        assert_eq!(format_value(f64::NAN), "-");
    }

    #[test]
    fn comparison_matches_labels_and_skips_counts() {
        let rows = compare(&target("ternd", 200.0, 5.0), &target("nats", 100.0, 0.0));
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].ratio, Some(2.0));
        assert_eq!(rows[1].ratio, None);
    }

    #[test]
    fn comparison_table_has_every_target_and_a_ratio_each() {
        let targets = [
            target("ternd/text", 200.0, 5.0),
            target("ternd/binary", 300.0, 2.5),
            target("nats-server/text", 100.0, 10.0),
        ];
        let text = render_comparison(&targets, &targets[2]);
        let header = text.lines().nth(1).unwrap();
        for col in [
            "ternd/text",
            "ternd/binary",
            "nats-server/text",
            "text ratio",
            "binary ratio",
        ] {
            assert!(header.contains(col), "{header}");
        }
        let rate = text.lines().find(|l| l.contains("delivery rate")).unwrap();
        assert!(rate.contains("2.00") && rate.contains("3.00"), "{rate}");
        let p99 = text.lines().find(|l| l.contains("p99")).unwrap();
        assert!(p99.contains("0.50") && p99.contains("0.25"), "{p99}");
        assert!(!text.contains("published"), "{text}");
    }

    #[test]
    fn reports_compare_every_target_with_the_baseline() {
        let mut targets = vec![
            target("ternd/text", 200.0, 5.0),
            target("ternd/binary", 300.0, 2.5),
            target("nats-server/text", 100.0, 10.0),
        ];
        targets[1].scenarios[0].problems.push("lost".into());
        let report = Report::new(targets, Some(2));
        assert_eq!(report.comparisons.len(), 2);
        assert_eq!(report.comparisons[1].target, "ternd/binary");
        assert_eq!(report.comparisons[1].baseline, "nats-server/text");
        assert_eq!(report.comparisons[1].rows[0].ratio, Some(3.0));
        assert_eq!(report.problem_count(), 1);
        assert!(Report::new(vec![target("ternd", 1.0, 1.0)], None)
            .comparisons
            .is_empty());
    }

    #[test]
    fn tables_show_delivered_of_expected_and_server_cpu() {
        let watched = target_with_cpu("ternd", 1.0, 1.0, CpuReading::Spent { ns: 5_120 });
        let text = render_target(&watched);
        let cpu = text.lines().find(|l| l.contains("server CPU/msg")).unwrap();
        assert!(cpu.ends_with(" 512 ns"), "{text}");
        let delivered = text.lines().find(|l| l.contains("delivered")).unwrap();
        assert!(delivered.ends_with(" 10 of 10"), "{text}");
        // Not watched: the line is there, with a dash.
        let text = render_target(&target("ternd", 1.0, 1.0));
        let cpu = text.lines().find(|l| l.contains("server CPU/msg")).unwrap();
        assert!(cpu.trim_end().ends_with('-'), "{text}");
        assert!(!text.contains("PROBLEM"), "{text}");
    }

    #[test]
    fn a_count_off_the_expected_one_is_a_problem_of_the_report() {
        let r = ScenarioReport::new(
            "fanout",
            "fanout 1x2 128B".into(),
            vec![],
            vec![Delivery::new(19, 20, CpuReading::NotWatched)],
            vec!["subscriber 1: connection closed".into()],
            serde_json::Value::Null,
        );
        assert_eq!(
            r.problems,
            [
                "subscriber 1: connection closed",
                "delivered 19 of 20 expected: 1 short (lost)"
            ]
        );
        let mut clean = target("ternd/binary", 1.0, 1.0).scenarios.remove(0);
        clean.label = "pubsub clean".into();
        let mut other = clean.clone();
        other.label = "latency 10/s 16B".into();
        other.problems = vec!["publisher: timed out".into()];
        let t = TargetReport {
            scenarios: vec![r, clean, other],
            ..target("ternd/binary", 1.0, 1.0)
        };
        let report = Report::new(vec![t], None);
        assert_eq!(report.problem_count(), 3);
        assert_eq!(
            report.failures(),
            [
                "ternd/binary / fanout 1x2 128B: delivered 19 of 20 expected: 1 short (lost) \
                 (and 1 more PROBLEM line(s) above)",
                "ternd/binary / latency 10/s 16B: publisher: timed out"
            ]
        );
    }

    #[test]
    fn server_cpu_is_compared_lower_is_better() {
        let targets = [
            target_with_cpu("ternd/text", 200.0, 5.0, CpuReading::Spent { ns: 3_000 }),
            target("ternd/binary", 300.0, 2.5),
            target_with_cpu(
                "nats-server/text",
                100.0,
                10.0,
                CpuReading::Spent { ns: 6_000 },
            ),
        ];
        let text = render_comparison(&targets, &targets[2]);
        let cpu = text.lines().find(|l| l.contains("server CPU/msg")).unwrap();
        // ternd/text 300 ns, ternd/binary not watched, nats 600 ns: text ratio 0.50.
        let cells: Vec<&str> = cpu.split_whitespace().collect();
        assert!(
            cells.ends_with(&["300", "-", "600", "0.50", "-", "ns", "↓"]),
            "{cpu}"
        );
        let rows = compare(&targets[0], &targets[2]);
        let row = rows.iter().find(|r| r.figure == "server CPU/msg").unwrap();
        assert_eq!((row.ratio, row.better), (Some(0.5), Better::Lower));
        let json = serde_json::to_value(Report::new(targets.to_vec(), Some(2))).unwrap();
        let d = &json["targets"][0]["scenarios"][0]["deliveries"][0];
        assert_eq!(d["cpu_per_msg_ns"], 300.0);
        assert_eq!(d["server_cpu"]["spent"]["ns"], 3000);
        assert_eq!(
            json["targets"][1]["scenarios"][0]["deliveries"][0]["server_cpu"],
            "not_watched"
        );
    }

    #[test]
    fn tables_show_problems() {
        let mut t = target("ternd", 1.0, 1.0);
        t.scenarios[0]
            .problems
            .push("subscriber 0: Slow Consumer".into());
        let text = render_target(&t);
        assert!(
            text.contains("PROBLEM: subscriber 0: Slow Consumer"),
            "{text}"
        );
        assert!(text.contains("delivery rate"), "{text}");
    }

    /// Three runs of `target`: rates 100/300/200 (ternd) or 50/100/400 (nats), the
    /// second of ternd's runs short of a message.
    fn three_runs() -> Vec<Vec<TargetReport>> {
        let run = |ternd: f64, lost: bool, nats: f64| {
            let mut t = target("ternd/text", ternd, 5.0);
            if lost {
                t.scenarios[0] = ScenarioReport::new(
                    "pubsub",
                    "pubsub 1x1 16B".into(),
                    t.scenarios[0].figures[..3].to_vec(),
                    vec![Delivery::new(9, 10, CpuReading::NotWatched)],
                    vec![],
                    serde_json::Value::Null,
                );
            }
            vec![t, target("nats-server/text", nats, 10.0)]
        };
        vec![
            run(100.0, false, 50.0),
            run(9_000_000.0, true, 100.0),
            run(300.0, false, 400.0),
        ]
    }

    #[test]
    fn one_run_renders_as_it_always_did() {
        let t = target("ternd/text", 1_234_567.0, 12.5);
        let n = target("nats-server/text", 1_000_000.0, 25.0);
        let table = "\
== ternd/text (127.0.0.1:1)
-- pubsub 1x1 16B
   delivery rate                 1,234,567 msgs/s
   p99                                12.5 µs
   published                            10 msgs
   server CPU/msg                        -
   delivered                            10 of 10
";
        assert_eq!(render_target(&t), table);
        let comparison = "\
== compared with nats-server/text (ratio = target / nats-server/text; ↑ higher is better, ↓ lower)
scenario                       figure                         ternd/text nats-server/text    text ratio  unit
pubsub 1x1 16B                 delivery rate                   1,234,567        1,000,000          1.23  msgs/s ↑
pubsub 1x1 16B                 p99                                  12.5               25          0.50  µs ↓
";
        assert_eq!(render_comparison(&[t.clone(), n.clone()], &n), comparison);
        // The merge of one run is that run.
        let merged = crate::runs::merge_targets(&[vec![t, n]]);
        assert_eq!(render_target(&merged[0]), table);
        assert_eq!(render_comparison(&merged, &merged[1]), comparison);
        let json = serde_json::to_value(Report::new(merged, Some(1))).unwrap();
        assert!(json.get("runs").is_none());
        assert!(json["targets"][0]["scenarios"][0].get("runs").is_none());
        assert!(json["targets"][0]["scenarios"][0]["figures"][0]
            .get("range")
            .is_none());
    }

    #[test]
    fn several_runs_render_medians_with_their_range() {
        let medians = crate::runs::merge_targets(&three_runs());
        let text = render_target(&medians[0]);
        assert!(
            text.contains("-- pubsub 1x1 16B (median of 2 clean runs of 3, min–max)\n"),
            "{text}"
        );
        let rate = text.lines().find(|l| l.contains("delivery rate")).unwrap();
        assert_eq!(
            rate.split_whitespace().collect::<Vec<_>>(),
            ["delivery", "rate", "200", "(100–300)", "msgs/s"]
        );
        assert!(
            text.contains("   delivered (3 runs)                   29 of 30\n"),
            "{text}"
        );
        assert!(
            text.contains("PROBLEM: run 2: delivered 9 of 10 expected: 1 short (lost)"),
            "{text}"
        );
        let nats = render_target(&medians[1]);
        assert!(nats.contains("(median of 3 runs, min–max)"), "{nats}");
        assert!(nats.contains(" 100 (50–400) "), "{nats}");
    }

    #[test]
    fn several_runs_compare_medians() {
        let passes = three_runs();
        let medians = crate::runs::merge_targets(&passes);
        let text = render_comparison(&medians, &medians[1]);
        let header = text.lines().next().unwrap();
        assert!(
            header.contains("median of 3 runs per cell (min–max)"),
            "{header}"
        );
        let rate = text.lines().find(|l| l.contains("delivery rate")).unwrap();
        // ternd: median 200 of the clean 100 and 300 (the 9M of the lossy run left out);
        // nats: median 100 of 50, 100, 400: the ratio of the medians is 2.00 (the median
        // of the per-run ratios would be 3.00).
        assert!(rate.contains("200 (100–300)"), "{rate}");
        assert!(rate.contains("100 (50–400)"), "{rate}");
        assert!(rate.contains(" 2.00 "), "{rate}");
        assert!(text.contains("PROBLEM ternd/text / pubsub 1x1 16B: run 2: delivered 9 of 10"));
        let report = Report::new(medians, Some(1)).with_runs(passes);
        assert_eq!(report.comparisons[0].rows[0].ratio, Some(2.0));
        assert_eq!(report.problem_count(), 1);
        assert_eq!(
            report.failures(),
            ["ternd/text / pubsub 1x1 16B: run 2: delivered 9 of 10 expected: 1 short (lost)"]
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["runs"].as_array().unwrap().len(), 3);
        assert_eq!(
            json["runs"][1][0]["scenarios"][0]["figures"][0]["value"],
            9_000_000.0
        );
        let rate = &json["targets"][0]["scenarios"][0]["figures"][0];
        assert_eq!(
            (rate["value"].clone(), rate["range"].clone()),
            (200.0.into(), serde_json::json!([100.0, 300.0]))
        );
        assert_eq!(json["targets"][0]["scenarios"][0]["runs"]["clean"], 2);
    }

    #[test]
    fn reports_serialize() {
        let json =
            serde_json::to_value(Report::new(vec![target("ternd", 1.0, 2.0)], None)).unwrap();
        assert_eq!(
            json["targets"][0]["scenarios"][0]["figures"][1]["name"],
            "p99"
        );
        assert!(json["machine"]["cpus"].as_u64().unwrap() >= 1);
    }
}
