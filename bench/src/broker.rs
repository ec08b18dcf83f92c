//! Broker processes the suite starts: `ternd` and `nats-server`.
//!
//! Owns: spawning a broker on a free local port, waiting (with a timeout) until it
//! accepts connections, and killing it. A [`BrokerProcess`] kills and reaps its child when
//! dropped, so a failed or interrupted run never leaves a broker behind.
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
    /// `--version` output, when it gave one.
    pub version: Option<String>,
    child: Child,
}

impl BrokerProcess {
    /// The child's process id (for memory readings).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts `ternd` on a free port with `workers` workers and no monitoring. Logs go to
    /// `log` (or nowhere).
    pub fn ternd(path: &Path, workers: usize, log: Option<&Path>) -> Result<Self, BrokerError> {
        let mut cmd = Command::new(path);
        cmd.args(["--listen", "127.0.0.1:0", "--no-monitor", "--workers"])
            .arg(workers.to_string());
        let mut child = spawn(cmd, path, Stdio::piped(), log)?;
        // `ternd listening on ADDR` is the first line on stdout; read it on a thread so
        // the wait has a deadline. The thread keeps draining stdout until the child exits.
        let stdout = child.stdout.take();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let Some(stdout) = stdout else { return };
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("ternd listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let mut broker = BrokerProcess {
            name: "ternd".into(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            version: version_of(path),
            child,
        };
        match rx
            .recv_timeout(START_TIMEOUT)
            .ok()
            .and_then(|a| a.parse().ok())
        {
            Some(addr) => {
                broker.addr = addr;
                Ok(broker)
            }
            None => Err(broker.not_listening()),
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
            version: version_of(path),
            child,
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
    }
}

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
