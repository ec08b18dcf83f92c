//! Profiles: where a broker spent its CPU, from the samples `perf record` took of it.
//!
//! Owns: the `perf record` command line that wraps a broker ([`record_prefix`]), running
//! `perf script` over a `perf.data` and folding its stacks in process with inferno's
//! `collapse::perf` ([`Profile::read`]), the flame graph SVG (inferno's `flamegraph`,
//! [`Profile::flamegraph_svg`]) and the table of the functions that spent the most time
//! themselves, at the top of a stack ([`self_time`], [`Profile::render_self_time`]).
//!
//! Weights: inferno weighs each sample by its period, so with a clock event (`cpu-clock`,
//! `task-clock`: the period is in nanoseconds) a stack's weight is the CPU time it was
//! seen running, and the table shows milliseconds; with any other event the weights are
//! that event's counts, shown as they are.
//!
//! Contract: needs `perf` on the `PATH`; without it every entry point fails with
//! [`ProfileError::NoPerf`], whose message says how to install it. The samples are
//! whatever `perf record` was told to take (`make profile`: `-e cpu-clock -g -F 999`, the
//! broker started under perf, because attaching with `-p` records nothing on some VMs).
//!
//! Never: starts a broker or runs a scenario — `tern-bench profile` (in `main.rs`) does,
//! with [`crate::broker`] and [`crate::scenario`] — and never asserts on the samples.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use inferno::collapse::perf::{Folder, Options as FoldOptions};
use inferno::collapse::Collapse;
use inferno::flamegraph::{self, Options as GraphOptions};

/// What `make profile` asks of `perf record` by default: on-CPU time sampled at 999 Hz on
/// the CPU clock (hardware counters are often absent on VMs), with call stacks.
pub const DEFAULT_RECORD_FLAGS: &str = "-e cpu-clock -g -F 999";

/// How many functions the self-time table lists by default.
pub const DEFAULT_TOP: usize = 15;

/// Why a profile could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// `perf` is not installed (or not on the `PATH`).
    #[error(
        "perf not found: install it (Debian: `apt-get install linux-perf`; Ubuntu: \
         `apt-get install linux-tools-generic`) and try again"
    )]
    NoPerf,
    /// `perf script` or `perf evlist` failed (an unreadable `perf.data`, say).
    #[error("reading {path} failed: {detail}")]
    Script {
        /// The `perf.data` file.
        path: PathBuf,
        /// Its exit status and the end of what it printed on stderr.
        detail: String,
    },
    /// The samples held no stack at all.
    #[error("{0} holds no samples")]
    NoSamples(PathBuf),
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Fails with [`ProfileError::NoPerf`] unless `perf --version` runs.
pub fn check_perf() -> Result<(), ProfileError> {
    match Command::new("perf")
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(status) if status.success() => Ok(()),
        // Debian's `perf` is a wrapper that fails when no perf matches the kernel.
        Ok(_) => Err(ProfileError::NoPerf),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ProfileError::NoPerf),
        Err(e) => Err(e.into()),
    }
}

/// The command that runs a program under `perf record`: `perf record FLAGS -o
/// PERF_DATA --`, the program and its arguments to follow. `flags` are split on
/// whitespace.
pub fn record_prefix(flags: &str, perf_data: &Path) -> Vec<String> {
    let mut prefix = vec!["perf".to_string(), "record".to_string()];
    prefix.extend(flags.split_whitespace().map(str::to_string));
    prefix.push("-o".into());
    prefix.push(perf_data.display().to_string());
    prefix.push("--".into());
    prefix
}

/// The samples of one `perf.data`, folded.
#[derive(Debug, Clone)]
pub struct Profile {
    /// One `frame;frame;… weight` line per distinct stack, the thread's name as the root,
    /// kernel frames marked `_[k]`.
    pub folded: String,
    /// The events recorded (`perf evlist`), e.g. `cpu-clock`.
    pub events: Vec<String>,
}

impl Profile {
    /// Runs `perf script` over `perf_data` and folds its stacks; `perf evlist` names its
    /// events.
    pub fn read(perf_data: &Path) -> Result<Profile, ProfileError> {
        check_perf()?;
        let mut folded = Vec::new();
        let mut fold_failed = None;
        run_perf(&["script", "-i"], perf_data, |out| {
            fold_failed = fold(out, &mut folded).err();
        })?;
        if let Some(e) = fold_failed {
            return Err(e.into());
        }
        let folded = String::from_utf8_lossy(&folded).into_owned();
        if folded.trim().is_empty() {
            return Err(ProfileError::NoSamples(perf_data.into()));
        }
        let mut events = Vec::new();
        run_perf(&["evlist", "-i"], perf_data, |mut out| {
            let mut text = String::new();
            let _ = out.read_to_string(&mut text);
            events = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string)
                .collect();
        })?;
        Ok(Profile { folded, events })
    }

    /// True when every event is a clock, whose sample periods are nanoseconds.
    pub fn weights_are_ns(&self) -> bool {
        !self.events.is_empty()
            && self
                .events
                .iter()
                .all(|e| e.starts_with("cpu-clock") || e.starts_with("task-clock"))
    }

    /// The flame graph, as an SVG document titled `title`.
    pub fn flamegraph_svg(&self, title: &str) -> Result<Vec<u8>, ProfileError> {
        let unit = if self.weights_are_ns() {
            "ns"
        } else {
            "samples"
        };
        flamegraph_svg(&self.folded, title, unit)
    }

    /// The table of the `top` functions by self time, with their share of the whole.
    pub fn render_self_time(&self, top: usize) -> String {
        let (list, total) = self_time(&self.folded);
        let events = self.events.join(", ");
        let ns = self.weights_are_ns();
        let (whole, column) = if ns {
            (
                format!(
                    "{} ms of CPU ({events})",
                    crate::report::format_value(total as f64 / 1e6)
                ),
                "CPU ms",
            )
        } else {
            (
                format!(
                    "{} (sample periods of {events})",
                    crate::report::format_value(total as f64)
                ),
                "weight",
            )
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "== top {} functions by self time, of {whole}",
            top.min(list.len())
        );
        let _ = writeln!(out, "   {:>7} {:>12}  function", "self", column);
        for (function, n) in list.iter().take(top) {
            let share = 100.0 * *n as f64 / total.max(1) as f64;
            let value = if ns {
                format!("{:.1}", *n as f64 / 1e6)
            } else {
                n.to_string()
            };
            let _ = writeln!(out, "   {share:>6.2}% {value:>12}  {function}");
        }
        out
    }
}

/// Runs `perf ARGS PERF_DATA`, handing its stdout to `read` while it runs (stderr is
/// drained on a thread, so a chatty perf never blocks on a full pipe); fails with the
/// end of its stderr when it exits unsuccessfully.
fn run_perf(
    args: &[&str],
    perf_data: &Path,
    read: impl FnOnce(BufReader<std::process::ChildStdout>),
) -> Result<(), ProfileError> {
    let mut child = Command::new("perf")
        .args(args)
        .arg(perf_data)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stderr = child.stderr.take();
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut e) = stderr {
            let _ = e.read_to_string(&mut text);
        }
        text
    });
    if let Some(out) = child.stdout.take() {
        read(BufReader::new(out));
    }
    let status = child.wait()?;
    let errors = errors.join().unwrap_or_default();
    if status.success() {
        return Ok(());
    }
    let lines: Vec<&str> = errors.lines().collect();
    let tail = lines[lines.len().saturating_sub(5)..].join(" / ");
    Err(ProfileError::Script {
        path: perf_data.into(),
        detail: format!("perf {}: {status}: {tail}", args[0]),
    })
}

/// Folds `perf script` output read from `script` into `out`.
pub fn fold(script: impl io::BufRead, out: &mut Vec<u8>) -> io::Result<()> {
    let mut options = FoldOptions::default();
    options.annotate_kernel = true;
    options.nthreads = 1;
    Folder::from(options).collapse(script, out)
}

/// The flame graph of `folded` stacks, as an SVG document; `unit` names the weights in
/// its tooltips.
pub fn flamegraph_svg(folded: &str, title: &str, unit: &str) -> Result<Vec<u8>, ProfileError> {
    let mut options = GraphOptions::default();
    options.title = title.to_string();
    options.count_name = unit.to_string();
    let mut svg = Vec::new();
    flamegraph::from_lines(&mut options, folded.lines(), &mut svg)?;
    Ok(svg)
}

/// Samples per function at the top of a stack (its *self* time), most first (ties by
/// name), and the total of all samples.
pub fn self_time(folded: &str) -> (Vec<(String, u64)>, u64) {
    let mut by_leaf: HashMap<&str, u64> = HashMap::new();
    let mut total = 0;
    for line in folded.lines() {
        let Some((stack, count)) = line.trim_end().rsplit_once(' ') else {
            continue;
        };
        let Ok(count) = count.parse::<u64>() else {
            continue;
        };
        let leaf = stack.rsplit(';').next().unwrap_or(stack);
        *by_leaf.entry(leaf).or_default() += count;
        total += count;
    }
    let mut list: Vec<(String, u64)> = by_leaf
        .into_iter()
        .map(|(f, n)| (f.to_string(), n))
        .collect();
    list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    (list, total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two samples of `perf script` output (with `-g`), the second from a kernel frame.
    const SCRIPT: &str = "\
ternd-worker-0  4242/4243  1000.000100:    1001001 cpu-clock:
\t    55d0c0de1000 tern_broker::shard::Shard::route+0x10 (/tmp/ternd)
\t    55d0c0de2000 tern_broker::worker::Worker::run+0x20 (/tmp/ternd)
\t    55d0c0de3000 std::thread::start+0x30 (/tmp/ternd)

ternd-worker-1  4242/4244  1000.000200:    1001001 cpu-clock:
\t    ffffffff81000000 tcp_sendmsg+0x5 ([kernel.kallsyms])
\t    55d0c0de4000 tern_broker::conn::Conn::flush+0x40 (/tmp/ternd)
\t    55d0c0de2000 tern_broker::worker::Worker::run+0x20 (/tmp/ternd)

";

    #[test]
    fn perf_script_output_folds_into_stacks() {
        let mut out = Vec::new();
        fold(SCRIPT.as_bytes(), &mut out).unwrap();
        let folded = String::from_utf8(out).unwrap();
        assert!(
            folded.contains(
                "std::thread::start;tern_broker::worker::Worker::run;\
                 tern_broker::shard::Shard::route 1"
            ),
            "{folded}"
        );
        assert!(folded.contains(";tcp_sendmsg_[k] 1"), "{folded}");
    }

    #[test]
    fn self_time_counts_the_top_of_each_stack() {
        let folded = "\
ternd;main;route;hash 30
ternd;main;route 10
ternd;main;flush;write_[k] 25
ternd;other;hash 5
";
        let (list, total) = self_time(folded);
        assert_eq!(total, 70);
        assert_eq!(
            list,
            vec![
                ("hash".to_string(), 35),
                ("write_[k]".to_string(), 25),
                ("route".to_string(), 10),
            ]
        );
        let profile = Profile {
            folded: folded.into(),
            events: vec!["cycles".into()],
        };
        let table = profile.render_self_time(2);
        assert!(
            table.starts_with("== top 2 functions by self time, of 70 (sample periods of cycles)"),
            "{table}"
        );
        assert!(table.contains("50.00%           35  hash"), "{table}");
        assert!(!table.contains("route"), "{table}");
    }

    #[test]
    fn clock_samples_weigh_nanoseconds_and_show_as_milliseconds() {
        let profile = Profile {
            folded: "ternd;main;route 3000000\nternd;main;flush 1000000\n".into(),
            events: vec!["cpu-clock".into()],
        };
        assert!(profile.weights_are_ns());
        let table = profile.render_self_time(15);
        assert!(
            table.starts_with("== top 2 functions by self time, of 4 ms of CPU (cpu-clock)"),
            "{table}"
        );
        assert!(table.contains("75.00%          3.0  route"), "{table}");
        let mixed = Profile {
            events: vec!["cpu-clock".into(), "cycles".into()],
            ..profile
        };
        assert!(!mixed.weights_are_ns());
    }

    #[test]
    fn lines_that_are_not_folded_stacks_are_skipped() {
        let (list, total) = self_time("garbage\nx;y notanumber\n\na;b 2\n");
        assert_eq!((list, total), (vec![("b".to_string(), 2)], 2));
    }

    #[test]
    fn the_flame_graph_is_an_svg_with_its_title() {
        let svg = flamegraph_svg(
            "ternd;main;route 3\nternd;main;flush 1\n",
            "ternd: pubsub",
            "ns",
        )
        .unwrap();
        let svg = String::from_utf8(svg).unwrap();
        assert!(svg.contains("<svg"), "{svg}");
        assert!(svg.contains("ternd: pubsub"));
        assert!(svg.contains("route"));
    }

    #[test]
    fn perf_record_wraps_the_program() {
        assert_eq!(
            record_prefix(DEFAULT_RECORD_FLAGS, Path::new("target/bench/perf.data")),
            [
                "perf",
                "record",
                "-e",
                "cpu-clock",
                "-g",
                "-F",
                "999",
                "-o",
                "target/bench/perf.data",
                "--"
            ]
        );
    }
}
