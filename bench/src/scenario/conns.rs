//! `conns`: N idle connections; connect rate and the broker's memory per connection.
//!
//! Owns: opening N connections one after another (each a full handshake ending in a round
//! trip: `INFO`, `CONNECT`, `PING`/`PONG` on the text port; preface, `HELLO`, `PING` →
//! `WELCOME`, `PONG` on the binary port), timing them, and reading the broker's resident memory
//! (`VmRSS` in `/proc/<pid>/status`) before and after; the difference over N is the cost
//! of one idle connection, kernel socket buffers excluded (they are not in the RSS).
//!
//! Also owns raising this process's open-file limit to its hard limit, since N may exceed
//! the default soft limit.
//!
//! Never: sends anything on the connections after the handshake.

use std::io;
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::driver::Driver;
use crate::report::{Better, Figure};

/// A connections run.
#[derive(Debug, Clone, Serialize)]
pub struct ConnsConfig {
    /// Connections to open.
    pub count: usize,
    /// The broker's process id, to read its memory (no memory figures without it).
    pub broker_pid: Option<u32>,
    /// How long to wait before each memory reading, for the broker to settle.
    #[serde(skip)]
    pub settle: Duration,
}

/// What a connections run measured.
#[derive(Debug, Clone, Serialize)]
pub struct ConnsResult {
    /// The run.
    pub config: ConnsConfig,
    /// Connections opened (fewer than asked when one failed; see `problems`).
    pub opened: usize,
    /// Seconds to open them.
    pub connect_secs: f64,
    /// Connections per second.
    pub connect_rate: f64,
    /// The broker's VmRSS before, in KiB.
    pub rss_before_kib: Option<u64>,
    /// The broker's VmRSS with every connection open, in KiB.
    pub rss_after_kib: Option<u64>,
    /// `(after − before) / opened`, in bytes.
    pub bytes_per_conn: Option<f64>,
    /// This process's open-file limit during the run.
    pub fd_limit: u64,
    /// Everything that went wrong.
    pub problems: Vec<String>,
}

impl ConnsResult {
    /// The figures a report shows and compares.
    pub fn figures(&self) -> Vec<Figure> {
        let mut f = vec![
            Figure::new("opened", self.opened as f64, "conns", Better::Neither),
            Figure::new("connect rate", self.connect_rate, "conns/s", Better::Higher),
        ];
        if let (Some(b), Some(a)) = (self.rss_before_kib, self.rss_after_kib) {
            f.push(Figure::new(
                "broker RSS before",
                b as f64 / 1024.0,
                "MiB",
                Better::Lower,
            ));
            f.push(Figure::new(
                "broker RSS after",
                a as f64 / 1024.0,
                "MiB",
                Better::Lower,
            ));
        }
        if let Some(per) = self.bytes_per_conn {
            f.push(Figure::new(
                "memory per connection",
                per / 1024.0,
                "KiB",
                Better::Lower,
            ));
        }
        f
    }
}

/// Runs the connections scenario.
pub fn run(driver: &dyn Driver, config: &ConnsConfig) -> ConnsResult {
    let mut problems = Vec::new();
    let fd_limit = match raise_fd_limit() {
        Ok(n) => n,
        Err(e) => {
            problems.push(format!("cannot read the open-file limit: {e}"));
            0
        }
    };
    // Each connection needs one descriptor here; keep a few for everything else.
    let room = (fd_limit as usize).saturating_sub(64);
    let count = if fd_limit > 0 && config.count > room {
        problems.push(format!(
            "open-file limit {fd_limit}: opening {room} connections instead of {}",
            config.count
        ));
        room
    } else {
        config.count
    };

    let read_rss = |problems: &mut Vec<String>| {
        let pid = config.broker_pid?;
        thread::sleep(config.settle);
        match rss_kib(pid) {
            Ok(kib) => Some(kib),
            Err(e) => {
                problems.push(format!("cannot read VmRSS of pid {pid}: {e}"));
                None
            }
        }
    };
    let rss_before_kib = read_rss(&mut problems);
    let mut conns = Vec::with_capacity(count);
    let start = Instant::now();
    for _ in 0..count {
        match driver.connect() {
            Ok(c) => conns.push(c),
            Err(e) => {
                problems.push(format!("connection {} failed: {e}", conns.len() + 1));
                break;
            }
        }
    }
    let connect_secs = start.elapsed().as_secs_f64();
    let rss_after_kib = read_rss(&mut problems);
    let opened = conns.len();
    drop(conns);
    let bytes_per_conn = match (rss_before_kib, rss_after_kib) {
        (Some(b), Some(a)) if opened > 0 => Some((a as f64 - b as f64) * 1024.0 / opened as f64),
        _ => None,
    };
    ConnsResult {
        config: config.clone(),
        opened,
        connect_secs,
        connect_rate: if connect_secs > 0.0 {
            opened as f64 / connect_secs
        } else {
            0.0
        },
        rss_before_kib,
        rss_after_kib,
        bytes_per_conn,
        fd_limit,
        problems,
    }
}

/// The resident memory of process `pid`, in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_vm_rss(&status).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS line"))
}

/// The `VmRSS:   1234 kB` value of a `/proc/<pid>/status` text.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line["VmRSS:".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Raises this process's soft open-file limit to its hard limit; returns the new soft
/// limit. Child processes started afterwards inherit it.
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit that lives across the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    // `rlim_t` is u64 on Linux but not everywhere.
    #[allow(clippy::unnecessary_cast)]
    Ok(lim.rlim_cur as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_from_status() {
        let status = "Name:\tternd\nVmPeak:\t  9000 kB\nVmRSS:\t    5120 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(5120));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
    }

    #[test]
    fn own_rss_is_readable() {
        assert!(rss_kib(std::process::id()).unwrap() > 0);
    }
}
