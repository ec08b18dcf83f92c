//! Broker processes the suite starts: `ternd` and `nats-server`.
//!
//! Owns: spawning a broker on free local ports (`ternd`: its text and binary ports, its
//! WebSocket port when its flags ask for one, and its monitoring port when asked;
//! `nats-server`: its client port and, from a configuration file written for the run,
//! TLS and a WebSocket listener, [`NatsListeners`]), possibly under a wrapper such as `perf record`
//! ([`BrokerProcess::ternd_under`]), waiting (with a timeout) until it accepts
//! connections, stopping it with SIGTERM ([`BrokerProcess::terminate`], for the exit
//! status) and killing it. A [`BrokerProcess`] kills and reaps its child when dropped
//! (a wrapper gets SIGTERM first, so it stops the broker it wraps), so a failed or
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

/// How long a wrapper (`perf record`) may take to stop its broker and finish, when a
/// [`BrokerProcess`] is dropped, before it is killed.
const WRAPPER_STOP_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// Its WebSocket address (started with a WebSocket listener only).
    pub websocket_addr: Option<SocketAddr>,
    /// `--version` output, when it gave one.
    pub version: Option<String>,
    child: Child,
    /// `ternd`'s data directory or `nats-server`'s configuration directory, made for this
    /// run and removed with the broker.
    data_dir: Option<PathBuf>,
    /// The child is a wrapper (`perf record … --`) and the broker its child.
    wrapped: bool,
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
        BrokerProcess::start_ternd(&[], path, workers, extra, monitor, log)
    }

    /// [`BrokerProcess::ternd`] run by `wrapper`, a command that runs the program named
    /// after its own arguments (`perf record -g -o FILE --`): the child is the wrapper, and
    /// [`BrokerProcess::wrapped_pid`] finds `ternd` under it. The wrapper's stderr goes to
    /// `log` too.
    pub fn ternd_under(
        wrapper: &[String],
        path: &Path,
        workers: usize,
        log: Option<&Path>,
    ) -> Result<Self, BrokerError> {
        BrokerProcess::start_ternd(wrapper, path, workers, &[], false, log)
    }

    fn start_ternd(
        wrapper: &[String],
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
        let (mut cmd, program) = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(path);
                (cmd, Path::new(program))
            }
            None => (Command::new(path), path),
        };
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
        let mut child = spawn(cmd, program, Stdio::piped(), log)?;
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
                    ("ternd websocket listening on ", Port::WebSocket),
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
            websocket_addr: None,
            version: version_of(path),
            child,
            data_dir: Some(data_dir),
            wrapped: !wrapper.is_empty(),
        };
        let websocket = extra.iter().any(|a| a == "--websocket-listen");
        let deadline = Instant::now() + START_TIMEOUT;
        let (mut text, mut binary, mut monitoring, mut ws) = (None, None, None, None);
        while text.is_none()
            || binary.is_none()
            || (monitor && monitoring.is_none())
            || (websocket && ws.is_none())
        {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((Port::Text, addr)) => text = Some(addr),
                Ok((Port::Binary, addr)) => binary = Some(addr),
                Ok((Port::Monitor, addr)) => monitoring = Some(addr),
                Ok((Port::WebSocket, addr)) => ws = Some(addr),
                Err(_) => return Err(broker.not_listening()),
            }
        }
        broker.addr = text.unwrap_or(broker.addr);
        broker.binary_addr = binary;
        broker.monitor_addr = monitoring;
        broker.websocket_addr = ws;
        Ok(broker)
    }

    /// Sends SIGTERM and waits at most `timeout` for the process to exit; returns its exit
    /// status, or `None` when it was still running at the deadline (it is then killed).
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        // SAFETY: kill(2) on the pid of a child this value owns and has not reaped yet
        // (`try_wait` just found it running; it is reaped only by this value), so the pid
        // cannot have been reused.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let status = self.wait(timeout);
        if status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        status
    }

    /// Waits at most `timeout` for the process to exit by itself (after its broker was
    /// told to stop); its exit status, or `None` when it still runs.
    pub fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                _ => return None,
            }
        }
    }

    /// Stops the broker a wrapper runs the way a broker is stopped — SIGTERM to the
    /// broker itself, so it shuts down cleanly — then waits at most `timeout` for the
    /// wrapper to see it exit and finish (`perf record` writes its data then); the
    /// wrapper's exit status, or `None` when it had to be stopped itself (SIGTERM, then
    /// killed).
    pub fn stop_wrapped(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let wrapper = self.pid();
        let still_running = matches!(self.child.try_wait(), Ok(None));
        match self.wrapped_pid() {
            // Only while the wrapper runs and the process is still its child: the wrapper
            // has not reaped it, so the pid cannot have been reused.
            Some(pid)
                if still_running
                    && crate::cpu::ProcStat::read(pid).is_ok_and(|s| s.ppid == wrapper) =>
            {
                // SAFETY: kill(2) has no memory effects; the pid is a live child of our
                // live child (checked just above), not a reused one.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGTERM);
                }
                match self.wait(timeout) {
                    Some(status) => Some(status),
                    None => {
                        self.terminate(WRAPPER_STOP_TIMEOUT);
                        None
                    }
                }
            }
            _ => {
                self.terminate(WRAPPER_STOP_TIMEOUT);
                None
            }
        }
    }

    /// The process a wrapper started ([`BrokerProcess::ternd_under`]): the child of the
    /// child, found in `/proc`. `None` when the child is not a wrapper, or has no child.
    pub fn wrapped_pid(&self) -> Option<u32> {
        if !self.wrapped {
            return None;
        }
        children_of(self.pid()).into_iter().next()
    }

    /// Starts `nats-server` on a free port of 127.0.0.1. Logs go to `log` (or nowhere).
    pub fn nats_server(path: &Path, log: Option<&Path>) -> Result<Self, BrokerError> {
        BrokerProcess::nats_server_with(path, &NatsListeners::default(), log)
    }

    /// Starts `nats-server` with the listeners `listeners` asks for (TLS on its client
    /// port, a WebSocket listener), from a configuration file written for this run, on
    /// free ports of 127.0.0.1; waits until each accepts connections.
    pub fn nats_server_with(
        path: &Path,
        listeners: &NatsListeners,
        log: Option<&Path>,
    ) -> Result<Self, BrokerError> {
        let port = free_port()?;
        let ws_port = match listeners.websocket {
            Some(_) => Some(free_port()?),
            None => None,
        };
        let mut cmd = Command::new(path);
        let mut conf_dir = None;
        if listeners.tls.is_none() && listeners.websocket.is_none() {
            cmd.args(["-a", "127.0.0.1", "-p"]).arg(port.to_string());
        } else {
            let dir = std::env::temp_dir().join(format!(
                "tern-bench-nats-{}-{}",
                std::process::id(),
                NEXT_DATA_DIR.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir)?;
            let conf = dir.join("nats-server.conf");
            std::fs::write(&conf, listeners.config(port, ws_port))?;
            cmd.arg("-c").arg(&conf);
            conf_dir = Some(dir);
        }
        let child = spawn(cmd, path, Stdio::null(), log)?;
        let mut broker = BrokerProcess {
            name: "nats-server".into(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            binary_addr: None,
            monitor_addr: None,
            websocket_addr: ws_port.map(|p| SocketAddr::from(([127, 0, 0, 1], p))),
            version: version_of(path),
            child,
            data_dir: conf_dir,
            wrapped: false,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        let listening = |addr: &SocketAddr| {
            TcpStream::connect_timeout(addr, Duration::from_millis(200)).is_ok()
        };
        while Instant::now() < deadline {
            if listening(&broker.addr) && broker.websocket_addr.as_ref().is_none_or(listening) {
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
        if self.wrapped {
            // A wrapper killed outright would orphan the broker it runs; told to stop,
            // `perf record` stops it (SIGTERM) and waits for it. (A no-op once it exited.)
            self.terminate(WRAPPER_STOP_TIMEOUT);
        }
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
    WebSocket,
}

/// What `nats-server` listens with besides its plain client port.
#[derive(Debug, Clone, Default)]
pub struct NatsListeners {
    /// The `tls { ... }` block for its client port (TLS on it), e.g.
    /// [`crate::pki::Pki::nats_tls_block`].
    pub tls: Option<String>,
    /// A WebSocket listener: `Some(None)` plain (`no_tls: true`), `Some(Some(block))` over
    /// TLS with that `tls { ... }` block.
    pub websocket: Option<Option<String>>,
}

impl NatsListeners {
    /// The configuration file's text for client port `port` and WebSocket port `ws_port`.
    fn config(&self, port: u16, ws_port: Option<u16>) -> String {
        let mut conf = format!("listen: \"127.0.0.1:{port}\"\n");
        if let Some(tls) = &self.tls {
            conf.push_str(tls);
            conf.push('\n');
        }
        if let (Some(ws), Some(ws_port)) = (&self.websocket, ws_port) {
            conf.push_str(&format!(
                "websocket {{\n  listen: \"127.0.0.1:{ws_port}\"\n"
            ));
            match ws {
                None => conf.push_str("  no_tls: true\n"),
                Some(tls) => {
                    conf.push_str(tls);
                    conf.push('\n');
                }
            }
            conf.push_str("}\n");
        }
        conf
    }
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

/// The processes whose parent is `pid`, from every `/proc/N/stat`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut children: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&n| crate::cpu::ProcStat::read(n).is_ok_and(|s| s.ppid == pid))
        .collect();
    children.sort_unstable();
    children
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The first line of `<path> --version`, if it answers within a few seconds.
pub fn version_of(path: &Path) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_server_configuration_for_tls_and_websocket() {
        let tls = "tls {\n  cert_file: \"c\"\n}".to_string();
        let both = NatsListeners {
            tls: Some(tls.clone()),
            websocket: Some(Some(tls.clone())),
        };
        let conf = both.config(4222, Some(8080));
        assert!(
            conf.starts_with("listen: \"127.0.0.1:4222\"\ntls {"),
            "{conf}"
        );
        assert!(
            conf.contains("websocket {\n  listen: \"127.0.0.1:8080\"\ntls {"),
            "{conf}"
        );
        let ws = NatsListeners {
            tls: None,
            websocket: Some(None),
        };
        assert!(ws.config(1, Some(2)).contains("no_tls: true"));
    }

    #[test]
    fn a_child_is_found_under_its_parent() {
        let mut child = Command::new("sleep")
            .arg("30")
            .stdin(Stdio::null())
            .spawn()
            .expect("sleep runs");
        let found = children_of(std::process::id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(found.contains(&child.id()), "{found:?}");
    }
}
