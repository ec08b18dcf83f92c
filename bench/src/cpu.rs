//! Server CPU time: how much processor time a broker process spent over a scenario's
//! measured window, read from `/proc/PID/stat`.
//!
//! Owns: parsing `/proc/PID/stat` ([`ProcStat::parse`]), the clock tick its times are
//! counted in (`sysconf(_SC_CLK_TCK)`), and [`ServerCpu`] / [`CpuWindow`]: one reading at
//! the start of a measured window and one at its end, the difference as a [`CpuReading`].
//! [`per_message_ns`] turns it into the `server CPU/msg` figure
//! ([`crate::scenario::delivery`] owns that figure and puts it in the report).
//!
//! Contract: the time is `utime + stime` (fields 14 and 15) of the whole process — every
//! thread, user and kernel — so it is what the broker cost the machine, wherever the
//! threads ran. Its resolution is one clock tick (10 ms at the usual 100 Hz) at each end
//! of the window: a window should hold a second or more of the server's CPU time for the
//! figure to be read to a few percent.
//!
//! Never: decides whether a run passed, or reads a clock of its own: the scenario says
//! where its window starts and ends.

use std::path::PathBuf;

use serde::Serialize;

/// Why `/proc/PID/stat` could not be read or understood.
#[derive(Debug, thiserror::Error)]
pub enum StatError {
    /// The file could not be read (no such process, or no `/proc`).
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No `(comm)` field: the text is not a `stat` line.
    #[error("no `)` closing the command name")]
    NoCommand,
    /// A field is missing or not a number.
    #[error("field {field} ({name}) is missing or not a number")]
    Field {
        /// The field's number in proc(5), counting from 1.
        field: usize,
        /// Its name in proc(5).
        name: &'static str,
    },
}

/// The fields of `/proc/PID/stat` the harness uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Field 4: the parent's process id.
    pub ppid: u32,
    /// Field 14: clock ticks spent in user mode (every thread).
    pub utime: u64,
    /// Field 15: clock ticks spent in kernel mode (every thread).
    pub stime: u64,
}

impl ProcStat {
    /// Parses the one line of `/proc/PID/stat`.
    ///
    /// The second field is the command name in parentheses, and a process may name itself
    /// anything, `) (` and spaces included, so fields are counted from the *last* `)`:
    /// what follows it is field 3 (the state) onwards, separated by single spaces.
    pub fn parse(text: &str) -> Result<ProcStat, StatError> {
        let (_, rest) = text.rsplit_once(')').ok_or(StatError::NoCommand)?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // `rest` starts at field 3.
        let field = |number: usize, name: &'static str| {
            fields
                .get(number - 3)
                .and_then(|f| f.parse::<u64>().ok())
                .ok_or(StatError::Field {
                    field: number,
                    name,
                })
        };
        Ok(ProcStat {
            ppid: u32::try_from(field(4, "ppid")?).map_err(|_| StatError::Field {
                field: 4,
                name: "ppid",
            })?,
            utime: field(14, "utime")?,
            stime: field(15, "stime")?,
        })
    }

    /// Reads and parses `/proc/<pid>/stat`.
    pub fn read(pid: u32) -> Result<ProcStat, StatError> {
        let path = PathBuf::from(format!("/proc/{pid}/stat"));
        let text = std::fs::read_to_string(&path).map_err(|source| StatError::Read {
            path: path.clone(),
            source,
        })?;
        ProcStat::parse(&text)
    }

    /// User plus kernel time, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        self.utime + self.stime
    }
}

/// Clock ticks per second, the unit of `utime` and `stime` (`sysconf(_SC_CLK_TCK)`; 100
/// if the system will not say).
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf(3) only reads a configuration value; it has no preconditions and
    // touches no memory of ours.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// Nanoseconds in `ticks` clock ticks at `per_second` ticks a second.
pub fn ticks_to_ns(ticks: u64, per_second: u64) -> u64 {
    let ns = u128::from(ticks) * 1_000_000_000 / u128::from(per_second.max(1));
    u64::try_from(ns).unwrap_or(u64::MAX)
}

/// Server CPU time per delivered message, in nanoseconds (`None` when nothing was
/// delivered: the time was spent, but on no message).
pub fn per_message_ns(cpu_ns: u64, delivered: u64) -> Option<f64> {
    (delivered > 0).then(|| cpu_ns as f64 / delivered as f64)
}

/// What the server's CPU did over one measured window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CpuReading {
    /// No process to read: an external broker given without `--server-pid`.
    #[default]
    NotWatched,
    /// The process's CPU time (user + kernel, every thread) over the window, in ns.
    Spent {
        /// Nanoseconds.
        ns: u64,
    },
    /// `/proc/PID/stat` could not be read at one end of the window.
    Failed {
        /// Why, naming the process id.
        error: String,
    },
}

/// The broker process whose CPU time a scenario reads, if known.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerCpu {
    pid: Option<u32>,
}

impl ServerCpu {
    /// Reads the process `pid`, or nothing without one.
    pub fn of(pid: Option<u32>) -> Self {
        ServerCpu { pid }
    }

    /// Reads nothing: every window is [`CpuReading::NotWatched`].
    pub fn none() -> Self {
        ServerCpu { pid: None }
    }

    /// Reads the process's CPU time now: the start of a measured window.
    pub fn start(&self) -> CpuWindow {
        CpuWindow {
            pid: self.pid,
            start: self.pid.map(read_ticks),
        }
    }
}

/// A measured window that has started: [`CpuWindow::finish`] reads the end.
#[derive(Debug)]
pub struct CpuWindow {
    pid: Option<u32>,
    start: Option<Result<u64, String>>,
}

impl CpuWindow {
    /// Reads the process's CPU time again; what it spent since [`ServerCpu::start`].
    pub fn finish(&self) -> CpuReading {
        let (Some(pid), Some(start)) = (self.pid, &self.start) else {
            return CpuReading::NotWatched;
        };
        match (start, read_ticks(pid)) {
            (Ok(start), Ok(end)) => CpuReading::Spent {
                ns: ticks_to_ns(end.saturating_sub(*start), ticks_per_second()),
            },
            (Err(error), _) => CpuReading::Failed {
                error: error.clone(),
            },
            (_, Err(error)) => CpuReading::Failed { error },
        }
    }
}

fn read_ticks(pid: u32) -> Result<u64, String> {
    ProcStat::read(pid)
        .map(|s| s.cpu_ticks())
        .map_err(|e| format!("server CPU of pid {pid}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real line from a kernel 6.x, with the command name replaced.
    fn stat_line(comm: &str) -> String {
        format!(
            "4242 ({comm}) S 4200 4242 4200 34816 4242 4194304 1520 0 0 0 \
             731 219 0 0 20 0 5 0 1234567 123456789 2048 18446744073709551615 \
             1 1 0 0 0 0 0 4096 17638 0 0 0 17 1 0 0 0 0 0\n"
        )
    }

    #[test]
    fn fields_are_counted_from_the_command_name() {
        let s = ProcStat::parse(&stat_line("ternd")).unwrap();
        assert_eq!(
            s,
            ProcStat {
                ppid: 4200,
                utime: 731,
                stime: 219
            }
        );
        assert_eq!(s.cpu_ticks(), 950);
    }

    #[test]
    fn a_command_name_with_spaces_and_parentheses_is_skipped_whole() {
        for comm in [
            "my broker",
            "a) b (c",
            ") 1 2 3 4 5 6 7 8 9 10 11 12 13",
            "((x))",
            "",
        ] {
            let s = ProcStat::parse(&stat_line(comm)).unwrap();
            assert_eq!((s.ppid, s.utime, s.stime), (4200, 731, 219), "{comm:?}");
        }
    }

    #[test]
    fn a_line_that_is_not_a_stat_line_is_an_error() {
        assert!(matches!(
            ProcStat::parse("4242 ternd S 1"),
            Err(StatError::NoCommand)
        ));
        assert!(matches!(
            ProcStat::parse("4242 (ternd) S 4200 1 2 3"),
            Err(StatError::Field { field: 14, .. })
        ));
        assert!(matches!(
            ProcStat::parse("4242 (ternd) S x"),
            Err(StatError::Field { field: 4, .. })
        ));
    }

    #[test]
    fn this_process_can_be_read() {
        let s = ProcStat::read(std::process::id()).unwrap();
        assert_eq!(s.ppid, std::os::unix::process::parent_id());
        assert!(ticks_per_second() > 0);
    }

    #[test]
    fn ticks_become_nanoseconds() {
        assert_eq!(ticks_to_ns(0, 100), 0);
        assert_eq!(ticks_to_ns(1, 100), 10_000_000);
        assert_eq!(ticks_to_ns(250, 100), 2_500_000_000);
        assert_eq!(ticks_to_ns(3, 1000), 3_000_000);
        assert_eq!(ticks_to_ns(u64::MAX, 1), u64::MAX);
    }

    #[test]
    fn cpu_per_message_divides_by_what_was_delivered() {
        // 2.5 s of server CPU over 5,000,000 deliveries: 500 ns each.
        assert_eq!(per_message_ns(2_500_000_000, 5_000_000), Some(500.0));
        assert_eq!(per_message_ns(10_000_000, 3), Some(10_000_000.0 / 3.0));
        assert_eq!(per_message_ns(0, 10), Some(0.0));
        assert_eq!(per_message_ns(10_000_000, 0), None);
    }

    #[test]
    fn a_window_without_a_process_reads_nothing() {
        assert_eq!(ServerCpu::none().start().finish(), CpuReading::NotWatched);
    }

    #[test]
    fn a_window_over_this_process_reads_its_time() {
        let window = ServerCpu::of(Some(std::process::id())).start();
        assert!(matches!(window.finish(), CpuReading::Spent { .. }));
    }

    #[test]
    fn a_window_over_a_missing_process_fails_with_its_pid() {
        // Beyond the kernel's largest pid (4,194,304).
        let window = ServerCpu::of(Some(u32::MAX)).start();
        match window.finish() {
            CpuReading::Failed { error } => assert!(error.contains("4294967295"), "{error}"),
            other => panic!("{other:?}"),
        }
    }
}
