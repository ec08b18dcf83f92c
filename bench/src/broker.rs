//! Broker processes the suite starts: `ternd` and `nats-server`.
//!
//! Owns: spawning a broker on free local ports (`ternd`: its text and binary ports, and its
//! monitoring port when asked), waiting (with a timeout) until it accepts connections,
//! stopping it with SIGTERM ([`BrokerProcess::terminate`], for the exit status) and killing
//! it. A [`BrokerProcess`] kills and reaps its child when dropped, so a failed or
//! interrupted run never leaves a broker behind.
//!
//! Never: runs a broker in this process, or waits without a deadline.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long a broker may take to start listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a broker did not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The executable could not be started.
    #[error("cannot start {path}: {source}")]
    Spawn {
        /// The executable.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It did not listen in time (or exited first).
    #[error("{name} did not start listening within {timeout:?}{detail}")]
    NotListening {
        /// Which broker.
        name: String,
        /// The timeout.
        timeout: Duration,
        /// More context (exit status).
        detail: String,
    },
    /// The suite had nothing to run.
    #[error("no scenarios to run")]
    NoScenarios,
    /// Some other I/O failure (a free port, a log file).
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A running broker child process; killed when dropped.
#[derive(Debug)]
pub struct BrokerProcess {
    /// `ternd` or `nats-server`.
    pub name: String,
    /// Its text-protocol address.
    pub addr: SocketAddr,
    /// Its binary-protocol address (`ternd` only).
    pub binary_addr: Option<SocketAddr>,
    /// Its monitoring address (`ternd` started with monitoring only).
    pub monitor_addr: Option<SocketAddr>,
    /// `--version` output, when it gave one.
    pub version: Option<String>,
    child: Child,
    /// `ternd`'s data directory, made for this run and removed with the broker.
    data_dir: Option<PathBuf>,
}

impl BrokerProcess {
    /// The child's process id (for memory readings).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts `ternd` with both ports on free ports of 127.0.0.1, `workers` workers, no
    /// monitoring, and its store as shipped (every subject kept, `fsync` every second) in a
    /// fresh data directory of its own; waits for its `ternd listening on ADDR` and `ternd
    /// binary listening on ADDR` lines. Logs go to `log` (or nowhere).
    pub fn ternd(path: &Path, workers: usize, log: Option<&Path>) -> Result<Self, BrokerError> {
        BrokerProcess::ternd_with(path, workers, &[], false, log)
    }

    /// [`BrokerProcess::ternd`] with `extra` flags after the harness's own (a flag given
    /// twice takes its last value), and with monitoring on a free port when `monitor` is
    /// set (then it also waits for the `ternd monitoring on ADDR` line).
    pub fn ternd_with(
        path: &Path,
        workers: usize,
        extra: &[String],
        monitor: bool,
        log: Option<&Path>,
    ) -> Result<Self, BrokerError> {
        let data_dir = std::env::temp_dir().join(format!(
            "tern-bench-data-{}-{}",
            std::process::id(),
            NEXT_DATA_DIR.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let mut cmd = Command::new(path);
        cmd.args(["--listen", "127.0.0.1:0", "--binary-listen", "127.0.0.1:0"]);
        if monitor {
            cmd.args(["--monitor", "127.0.0.1:0"]);
        } else {
            cmd.arg("--no-monitor");
        }
        cmd.arg("--workers")
            .arg(workers.to_string())
            .arg("--data-dir")
            .arg(&data_dir)
            .args(extra);
        let mut child = spawn(cmd, path, Stdio::piped(), log)?;
        // Read the address lines on a thread so the wait has a deadline. The thread keeps
        // draining stdout until the child exits.
        let stdout = child.stdout.take();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let Some(stdout) = stdout else { return };
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let port = [
                    ("ternd listening on ", Port::Text),
                    ("ternd binary listening on ", Port::Binary),
                    ("ternd monitoring on ", Port::Monitor),
                ]
                .into_iter()
                .find_map(|(prefix, port)| line.strip_prefix(prefix).map(|a| (port, a)));
                if let Some((port, addr)) = port {
                    if let Ok(addr) = addr.trim().parse::<SocketAddr>() {
                        let _ = tx.send((port, addr));
                    }
                }
            }
        });
        let mut broker = BrokerProcess {
            name: "ternd".into(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            binary_addr: None,
            monitor_addr: None,
            version: version_of(path),
            child,
            data_dir: Some(data_dir),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        let (mut text, mut binary, mut monitoring) = (None, None, None);
        while text.is_none() || binary.is_none() || (monitor && monitoring.is_none()) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((Port::Text, addr)) => text = Some(addr),
                Ok((Port::Binary, addr)) => binary = Some(addr),
                Ok((Port::Monitor, addr)) => monitoring = Some(addr),
                Err(_) => return Err(broker.not_listening()),
            }
        }
        broker.addr = text.unwrap_or(broker.addr);
        broker.binary_addr = binary;
        broker.monitor_addr = monitoring;
        Ok(broker)
    }

    /// Sends SIGTERM and waits at most `timeout` for the process to exit; returns its exit
    /// status, or `None` when it was still running at the deadline (it is then killed).
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        // SAFETY: kill(2) on the pid of a child this value owns and has not reaped yet
        // (it is reaped only below, or when dropped), so the pid cannot have been reused.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return None;
                }
            }
        }
    }

    /// Starts `nats-server` on a free port of 127.0.0.1. Logs go to `log` (or nowhere).
    pub fn nats_server(path: &Path, log: Option<&Path>) -> Result<Self, BrokerError> {
        let port = free_port()?;
        let mut cmd = Command::new(path);
        cmd.args(["-a", "127.0.0.1", "-p"]).arg(port.to_string());
        let child = spawn(cmd, path, Stdio::null(), log)?;
        let mut broker = BrokerProcess {
            name: "nats-server".into(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            binary_addr: None,
            monitor_addr: None,
            version: version_of(path),
            child,
            data_dir: None,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&broker.addr, Duration::from_millis(200)).is_ok() {
                return Ok(broker);
            }
            if let Ok(Some(_)) = broker.child.try_wait() {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        Err(broker.not_listening())
    }

    fn not_listening(&mut self) -> BrokerError {
        let detail = match self.child.try_wait() {
            Ok(Some(status)) => format!(" (it exited: {status})"),
            _ => String::new(),
        };
        BrokerError::NotListening {
            name: self.name.clone(),
            timeout: START_TIMEOUT,
            detail,
        }
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = self.data_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Which of `ternd`'s listening lines.
#[derive(Debug, Clone, Copy)]
enum Port {
    Text,
    Binary,
    Monitor,
}

/// Numbers the data directories of the `ternd`s one run starts.
static NEXT_DATA_DIR: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Starts a broker command with no stdin, the given stdout and stderr to `log`.
fn spawn(
    mut cmd: Command,
    path: &Path,
    stdout: Stdio,
    log: Option<&Path>,
) -> Result<Child, BrokerError> {
    cmd.stdin(Stdio::null())
        .stdout(stdout)
        .stderr(log_sink(log)?)
        .spawn()
        .map_err(|source| BrokerError::Spawn {
            path: path.into(),
            source,
        })
}

fn log_sink(log: Option<&Path>) -> Result<Stdio, BrokerError> {
    Ok(match log {
        Some(path) => Stdio::from(File::create(path)?),
        None => Stdio::null(),
    })
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The first line of `<path> --version`, if it answers within a few seconds.
fn version_of(path: &Path) -> Option<String> {
    let mut child = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let out = child.stdout.take()?;
    BufReader::new(out)
        .lines()
        .next()?
        .ok()
        .map(|l| l.trim().to_string())
}
