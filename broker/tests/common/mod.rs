//! Shared harness of the broker's integration tests: a [`Broker`] that runs the real `ternd`
//! binary on a free port, a blocking raw-TCP [`RawClient`] that speaks bytes, and helpers to
//! place connections on a given worker and to pick subjects owned by a given shard.
//!
//! Every wait here has a deadline: a test fails with what it has seen so far, it never hangs.

#![allow(dead_code)]

pub mod nats;
pub mod nats_cluster;
pub mod pki;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long ternd may take to print its listening line.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// The default wait for an expected answer from the broker.
pub const WAIT: Duration = Duration::from_secs(10);

/// The worker count every test runs with unless it asks otherwise.
pub const WORKERS: usize = 2;

// ---------------------------------------------------------------------------------------
// The broker process
// ---------------------------------------------------------------------------------------

/// A running `ternd`. Killed (SIGKILL) when dropped; [`Broker::stop`] stops it gracefully.
pub struct Broker {
    child: Option<Child>,
    /// The data directory the harness made for this broker (removed when dropped).
    own_data_dir: Option<TempDir>,
    /// Directories the test handed over ([`Broker::keep`]): removed after the process.
    kept: Vec<TempDir>,
    addr: SocketAddr,
    binary_addr: Option<SocketAddr>,
    /// The WebSocket address, when the test turned it on (`--websocket-listen`).
    websocket_addr: Option<SocketAddr>,
    /// The monitoring address, when the test turned monitoring on (`--monitor`).
    monitor_addr: Option<SocketAddr>,
    workers: usize,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_thread: Option<JoinHandle<()>>,
}

impl Broker {
    /// Keeps `dir` (its config file, say) until this broker is dropped and stopped.
    pub fn keep(&mut self, dir: TempDir) {
        self.kept.push(dir);
    }

    /// Starts ternd with the default test flags (`--listen 127.0.0.1:0 --no-pin --workers 2`).
    pub fn start() -> Broker {
        Broker::with_args(&[])
    }

    /// Starts ternd with extra flags. `--listen 127.0.0.1:0` and `--no-pin` are always
    /// given; `--workers 2` unless `args` has its own `--workers`; the binary port on a free
    /// port unless `args` says where (or `--no-binary`).
    pub fn with_args(args: &[&str]) -> Broker {
        let mut full: Vec<String> =
            vec!["--listen".into(), "127.0.0.1:0".into(), "--no-pin".into()];
        let workers = match args.iter().position(|a| *a == "--workers") {
            Some(i) => args
                .get(i + 1)
                .and_then(|n| n.parse().ok())
                .expect("--workers needs a number"),
            None => {
                full.push("--workers".into());
                full.push(WORKERS.to_string());
                WORKERS
            }
        };
        // The binary port defaults to 127.0.0.1:4224, which parallel tests would fight
        // over: a free port unless the test says otherwise.
        if !args
            .iter()
            .any(|a| *a == "--binary-listen" || *a == "--no-binary")
        {
            full.push("--binary-listen".into());
            full.push("127.0.0.1:0".into());
        }
        // The ring logs default to ./data, which parallel tests would fight over: a fresh
        // directory of its own unless the test gives one (or stores nothing).
        let own_data_dir = if args
            .iter()
            .any(|a| *a == "--data-dir" || *a == "--no-store")
        {
            None
        } else {
            let dir = temp_dir("ternd-data");
            full.push("--data-dir".into());
            full.push(dir.display().to_string());
            // Small logs: tests never need 64 MiB per shard.
            if !args.contains(&"--log-size") {
                full.push("--log-size".into());
                full.push("4MiB".into());
            }
            Some(dir)
        };
        // Monitoring defaults to 127.0.0.1:8222, which parallel tests would fight over:
        // off unless the test asks for it.
        if !args
            .iter()
            .any(|a| *a == "--monitor" || *a == "--no-monitor")
        {
            full.push("--no-monitor".into());
        }
        full.extend(args.iter().map(|a| a.to_string()));

        let mut child = Command::new(env!("CARGO_BIN_EXE_ternd"))
            .args(&full)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot spawn ternd");

        // Both pipes are drained for the life of the process, so logging never blocks it.
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stderr_thread = {
            let mut pipe = child.stderr.take().expect("stderr is piped");
            let sink = Arc::clone(&stderr);
            std::thread::spawn(move || {
                let mut chunk = [0u8; 8192];
                loop {
                    match pipe.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => sink.lock().unwrap().extend_from_slice(&chunk[..n]),
                    }
                }
            })
        };
        let (tx, rx) = mpsc::channel();
        {
            let pipe = child.stdout.take().expect("stdout is piped");
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    match line {
                        Ok(line) => {
                            let _ = tx.send(line);
                        }
                        Err(_) => return,
                    }
                }
            });
        }

        let mut broker = Broker {
            child: Some(child),
            own_data_dir,
            kept: Vec::new(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            binary_addr: None,
            websocket_addr: None,
            monitor_addr: None,
            workers,
            stderr,
            stderr_thread: Some(stderr_thread),
        };
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let status = broker.kill();
                panic!(
                    "ternd {full:?} did not print its listening line within {START_TIMEOUT:?} \
                     (exit: {status:?})\n--- ternd stderr ---\n{}",
                    broker.stderr()
                );
            }
        };
        let addr = line
            .strip_prefix("ternd listening on ")
            .and_then(|a| a.trim().parse().ok());
        match addr {
            Some(addr) => broker.addr = addr,
            None => {
                broker.kill();
                panic!(
                    "unexpected first stdout line from ternd: {line:?}\n--- ternd stderr ---\n{}",
                    broker.stderr()
                );
            }
        }
        if !full.iter().any(|a| a == "--no-binary") {
            let line = rx.recv_timeout(START_TIMEOUT).unwrap_or_default();
            match line
                .strip_prefix("ternd binary listening on ")
                .and_then(|a| a.trim().parse().ok())
            {
                Some(addr) => broker.binary_addr = Some(addr),
                None => {
                    broker.kill();
                    panic!(
                        "expected ternd's binary listening line, got {line:?}\n\
                         --- ternd stderr ---\n{}",
                        broker.stderr()
                    );
                }
            }
        }
        if full.iter().any(|a| a == "--websocket-listen") {
            let line = rx.recv_timeout(START_TIMEOUT).unwrap_or_default();
            match line
                .strip_prefix("ternd websocket listening on ")
                .and_then(|a| a.trim().parse().ok())
            {
                Some(addr) => broker.websocket_addr = Some(addr),
                None => {
                    broker.kill();
                    panic!(
                        "expected ternd's websocket listening line, got {line:?}\n\
                         --- ternd stderr ---\n{}",
                        broker.stderr()
                    );
                }
            }
        }
        if !full.iter().any(|a| a == "--no-monitor") {
            let line = rx.recv_timeout(START_TIMEOUT).unwrap_or_default();
            match line
                .strip_prefix("ternd monitoring on ")
                .and_then(|a| a.trim().parse().ok())
            {
                Some(addr) => broker.monitor_addr = Some(addr),
                None => {
                    broker.kill();
                    panic!(
                        "expected ternd's monitoring line, got {line:?}\n\
                         --- ternd stderr ---\n{}",
                        broker.stderr()
                    );
                }
            }
        }
        broker
    }

    /// The monitoring address. Panics unless the broker was started with `--monitor`.
    pub fn monitor_addr(&self) -> SocketAddr {
        self.monitor_addr
            .expect("ternd runs without monitoring (give --monitor 127.0.0.1:0)")
    }

    /// `GET /varz` as JSON. Panics unless the broker was started with `--monitor`.
    pub fn varz(&self) -> serde_json::Value {
        self.monitor_json("/varz")
    }

    /// `GET /varz`, polled until `ok` holds: see [`Broker::monitor_json_until`].
    pub fn varz_until(&self, ok: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        self.monitor_json_until("/varz", ok)
    }

    /// `GET path` as JSON, polled until `ok` holds (a worker counts, or applies a change
    /// sent through the mesh, just before or after a client sees its effect); the last
    /// answer once [`WAIT`] has passed, for the caller's assertion to show.
    pub fn monitor_json_until(
        &self,
        path: &str,
        ok: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let v = self.monitor_json(path);
            if ok(&v) || Instant::now() >= deadline {
                return v;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `GET path` from the monitoring endpoint, as JSON. Panics unless the broker was
    /// started with `--monitor`.
    pub fn monitor_json(&self, path: &str) -> serde_json::Value {
        let addr = self.monitor_addr();
        let mut s = TcpStream::connect(addr).expect("connect to monitor");
        s.set_read_timeout(Some(WAIT)).expect("read timeout");
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .expect("send request");
        let mut raw = String::new();
        s.read_to_string(&mut raw).expect("read response");
        let (head, body) = raw.split_once("\r\n\r\n").expect("a header block");
        // Large answers come in chunks.
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_string()
        };
        serde_json::from_str(&body).unwrap_or_else(|e| {
            panic!("{path}: {e}: {}", show(body.as_bytes()));
        })
    }

    /// The binary port's address. Panics when the broker was started with `--no-binary`.
    pub fn binary_addr(&self) -> SocketAddr {
        self.binary_addr
            .expect("ternd runs without its binary port")
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The WebSocket port's address. Panics unless the broker was started with
    /// `--websocket-listen`.
    pub fn websocket_addr(&self) -> SocketAddr {
        self.websocket_addr
            .expect("ternd runs without its WebSocket port (give --websocket-listen)")
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Everything ternd wrote to stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends SIGTERM and waits (at most `timeout`) for the process to exit. Panics, with
    /// ternd's stderr, when it does not.
    pub fn stop_within(&mut self, timeout: Duration) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit(timeout)
    }

    /// Sends a signal to the process.
    pub fn signal(&self, signal: libc::c_int) {
        let child = self.child.as_ref().expect("ternd already stopped");
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill({signal}) failed");
    }

    /// Waits (at most `timeout`) for the process to exit. Panics, with ternd's stderr, when
    /// it does not.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("ternd already stopped");
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait().expect("try_wait failed") {
                Some(status) => {
                    self.child = None;
                    self.join_stderr();
                    return status;
                }
                None if Instant::now() >= deadline => {
                    self.kill();
                    panic!(
                        "ternd did not exit within {timeout:?}\n--- ternd stderr ---\n{}",
                        self.stderr()
                    );
                }
                None => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    /// [`Broker::stop_within`] 30 seconds.
    pub fn stop(&mut self) -> ExitStatus {
        self.stop_within(Duration::from_secs(30))
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().map(|s| s.is_none()).unwrap_or(false),
            None => false,
        }
    }

    /// SIGKILL and reap. Returns the exit status, if there was a process.
    fn kill(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = child.kill();
        let status = child.wait().ok();
        self.join_stderr();
        status
    }

    fn join_stderr(&mut self) {
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
        // `own_data_dir` goes with the other fields, after the process is gone.
        if std::thread::panicking() {
            // The log is the first thing to read when a test fails.
            let log = self.stderr();
            let tail: String = tail_chars(&log, 8000);
            eprintln!("--- ternd stderr (tail) ---\n{tail}");
        }
    }
}

/// The body of a chunked HTTP/1.1 answer, chunks joined.
fn dechunk(chunked: &str) -> String {
    let mut rest = chunked.as_bytes();
    let mut body = Vec::new();
    while let Some(eol) = find(rest, b"\r\n") {
        let size = std::str::from_utf8(&rest[..eol]).expect("a chunk size");
        let size = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
        if size == 0 {
            break;
        }
        let data = &rest[eol + 2..];
        body.extend_from_slice(&data[..size]);
        rest = data[size..].strip_prefix(b"\r\n").unwrap_or(&data[size..]);
    }
    String::from_utf8(body).expect("a UTF-8 body")
}

/// A new, empty directory under the system's temp dir, unique to this call, removed with
/// everything in it when the returned guard is dropped (a test that fails still cleans
/// up: a log of 64 MiB per shard left behind by each run would fill the disk).
pub fn temp_dir(prefix: &str) -> TempDir {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("cannot create a temp dir");
    TempDir(dir)
}

/// A file `ternd.toml` with `text` in a directory of its own ([`temp_dir`]), both removed
/// when it is dropped. Derefs to the file's path.
#[derive(Debug)]
pub struct ConfigFile {
    path: std::path::PathBuf,
    _dir: TempDir,
}

impl ConfigFile {
    pub fn new(prefix: &str, text: &str) -> ConfigFile {
        let dir = temp_dir(prefix);
        let path = dir.join("ternd.toml");
        std::fs::write(&path, text).expect("cannot write a config file");
        ConfigFile { path, _dir: dir }
    }
}

impl std::ops::Deref for ConfigFile {
    type Target = std::path::Path;

    fn deref(&self) -> &std::path::Path {
        &self.path
    }
}

impl AsRef<std::path::Path> for ConfigFile {
    fn as_ref(&self) -> &std::path::Path {
        &self.path
    }
}

/// A directory [`temp_dir`] made; removed on drop.
#[derive(Debug)]
pub struct TempDir(std::path::PathBuf);

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;

    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for TempDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tail_chars(s: &str, n: usize) -> String {
    let count = s.chars().count();
    s.chars().skip(count.saturating_sub(n)).collect()
}

// ---------------------------------------------------------------------------------------
// Raw TCP client
// ---------------------------------------------------------------------------------------

/// How a read attempt ended without data.
#[derive(Debug)]
pub enum ReadEnd {
    /// The deadline passed.
    Timeout,
    /// The peer closed (read returned 0).
    Eof,
    /// The connection failed (reset, ...).
    Error(std::io::Error),
}

/// A delivery read by [`RawClient::read_msg`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMsg {
    pub subject: String,
    pub sid: String,
    pub reply: Option<String>,
    pub headers: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

/// A blocking TCP client that sends and expects raw protocol bytes.
pub struct RawClient {
    pub stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    /// The `INFO` JSON, when it was read by [`RawClient::connect`].
    pub info: serde_json::Value,
}

impl RawClient {
    /// Connects without reading anything.
    pub fn connect_bare(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect_timeout(&addr, WAIT).expect("cannot connect to ternd");
        RawClient::from_stream(stream)
    }

    /// Connects with a small receive buffer (set before connecting, so the window stays
    /// small), without reading anything.
    pub fn connect_small_rcvbuf(addr: SocketAddr, rcvbuf: usize) -> RawClient {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        sock.set_recv_buffer_size(rcvbuf).expect("SO_RCVBUF");
        sock.connect_timeout(&addr.into(), WAIT)
            .expect("cannot connect to ternd");
        RawClient::from_stream(sock.into())
    }

    fn from_stream(stream: TcpStream) -> RawClient {
        stream.set_nodelay(true).expect("TCP_NODELAY");
        stream
            .set_write_timeout(Some(Duration::from_secs(30)))
            .expect("write timeout");
        RawClient {
            stream,
            buf: Vec::new(),
            pos: 0,
            info: serde_json::Value::Null,
        }
    }

    /// Connects and reads the `INFO` line (checking its shape).
    pub fn connect(addr: SocketAddr) -> RawClient {
        let mut c = RawClient::connect_bare(addr);
        c.read_info();
        c
    }

    /// Connects, sends `CONNECT` with these JSON members (credentials, options) and a
    /// `PING`, and expects the `PONG`: the server accepted them.
    pub fn connect_as(addr: SocketAddr, fields: &str) -> RawClient {
        let mut c = RawClient::connect(addr);
        c.send(format!("CONNECT {{{fields}}}\r\nPING\r\n").as_bytes());
        c.expect(b"PONG\r\n");
        c
    }

    /// Reads the `INFO {json}\r\n` line and keeps its JSON in `self.info`.
    pub fn read_info(&mut self) -> serde_json::Value {
        let line = self.read_until(b"\r\n", WAIT);
        assert!(
            line.starts_with(b"INFO {") && line.ends_with(b"}\r\n"),
            "first line is not INFO {{json}}: {}",
            show(&line)
        );
        let json = &line[5..line.len() - 2];
        self.info = serde_json::from_slice(json)
            .unwrap_or_else(|e| panic!("INFO JSON does not parse ({e}): {}", show(json)));
        self.info.clone()
    }

    /// The `client_id` of the `INFO` line.
    pub fn client_id(&self) -> u64 {
        self.info["client_id"]
            .as_u64()
            .unwrap_or_else(|| panic!("INFO has no numeric client_id: {}", self.info))
    }

    /// The worker this connection lives on (`client_id % workers`).
    pub fn worker(&self, workers: usize) -> usize {
        (self.client_id() % workers as u64) as usize
    }

    /// Connects until a connection lands on `worker` (`client_id % workers == worker`).
    pub fn connect_on_worker(addr: SocketAddr, worker: usize, workers: usize) -> RawClient {
        // A new connection lives on the worker with the fewest (`ConnectionGate::admit`):
        // the misses stay open until one lands, so that the others fill up.
        let mut misses = Vec::new();
        for _ in 0..500 {
            let c = RawClient::connect(addr);
            if c.worker(workers) == worker {
                return c;
            }
            misses.push(c);
        }
        panic!("500 connections and none landed on worker {worker} of {workers}");
    }

    /// Writes all of `bytes`.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("send failed: {e}"));
    }

    /// Writes all of `bytes`, reporting failure instead of panicking.
    pub fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Bytes received and not consumed yet.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Reads more bytes into the buffer, waiting at most until `deadline`.
    pub fn fill(&mut self, deadline: Instant) -> Result<usize, ReadEnd> {
        if self.pos > 0 && (self.pos == self.buf.len() || self.pos > 1 << 20) {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let mut chunk = [0u8; 64 * 1024];
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(ReadEnd::Timeout);
            }
            let wait = (deadline - now).min(Duration::from_millis(200));
            self.stream
                .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
                .expect("read timeout");
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(ReadEnd::Eof),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(ReadEnd::Error(e)),
            }
        }
    }

    /// Reads until `pattern` has arrived; returns everything up to and including it (and
    /// consumes that). Panics on timeout or close, showing what arrived.
    pub fn read_until(&mut self, pattern: &[u8], timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        let mut searched = 0;
        loop {
            let hay = &self.buf[self.pos..];
            if let Some(i) = find(&hay[searched.min(hay.len())..], pattern) {
                let end = self.pos + searched.min(hay.len()) + i + pattern.len();
                let out = self.buf[self.pos..end].to_vec();
                self.pos = end;
                return out;
            }
            searched = hay.len().saturating_sub(pattern.len() - 1);
            let before = self.pos;
            if let Err(end) = self.fill(deadline) {
                panic!(
                    "waiting for {} ({end:?} after {timeout:?}); received: {}",
                    show(pattern),
                    show(self.buffered())
                );
            }
            // `fill` may have compacted the buffer.
            if self.pos != before {
                searched = 0;
            }
        }
    }

    /// Reads exactly `n` bytes.
    pub fn read_exact_bytes(&mut self, n: usize, timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        while self.buf.len() - self.pos < n {
            if let Err(end) = self.fill(deadline) {
                panic!(
                    "waiting for {n} bytes ({end:?} after {timeout:?}); received: {}",
                    show(self.buffered())
                );
            }
        }
        let out = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        out
    }

    /// Asserts that the next bytes are exactly `expected`.
    pub fn expect(&mut self, expected: &[u8]) {
        self.expect_within(expected, WAIT)
    }

    pub fn expect_within(&mut self, expected: &[u8], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.buf.len() - self.pos < expected.len() {
            let have = self.buffered();
            if !expected.starts_with(have) {
                break;
            }
            if let Err(end) = self.fill(deadline) {
                panic!(
                    "expected {} but got {} ({end:?})",
                    show(expected),
                    show(self.buffered())
                );
            }
        }
        let n = expected.len().min(self.buf.len() - self.pos);
        let got = &self.buf[self.pos..self.pos + n];
        assert!(
            got == expected,
            "expected {} but got {}",
            show(expected),
            show(self.buffered())
        );
        self.pos += n;
    }

    /// Sends `PING` and expects exactly `PONG` next (nothing else may be pending).
    pub fn ping_pong(&mut self) {
        self.send(b"PING\r\n");
        self.expect(b"PONG\r\n");
    }

    /// Sends `PING` and reads until its `PONG`, returning what came before it.
    pub fn flush(&mut self) -> Vec<u8> {
        self.send(b"PING\r\n");
        let mut got = self.read_until(b"PONG\r\n", WAIT);
        got.truncate(got.len() - 6);
        got
    }

    /// Reads until the connection is closed (EOF or reset); returns the bytes that arrived
    /// before (including those already buffered) and how it ended. Panics when it is still
    /// open after `timeout`.
    pub fn read_to_close(&mut self, timeout: Duration) -> (Vec<u8>, ReadEnd) {
        let deadline = Instant::now() + timeout;
        loop {
            match self.fill(deadline) {
                Ok(_) => {}
                Err(ReadEnd::Timeout) => panic!(
                    "connection still open after {timeout:?}; received: {}",
                    show(self.buffered())
                ),
                Err(end) => {
                    let out = self.buffered().to_vec();
                    self.pos = self.buf.len();
                    return (out, end);
                }
            }
        }
    }

    /// Reads until the connection closes, discarding the data (it may be megabytes).
    /// Returns the last `keep` bytes received and how it ended.
    pub fn drain_to_close(&mut self, timeout: Duration, keep: usize) -> (Vec<u8>, ReadEnd) {
        let deadline = Instant::now() + timeout;
        let mut tail: Vec<u8> = Vec::new();
        let mut chunk = vec![0u8; 256 * 1024];
        tail.extend_from_slice(self.buffered());
        self.pos = self.buf.len();
        loop {
            let now = Instant::now();
            if now >= deadline {
                panic!("connection still open after {timeout:?}");
            }
            let wait = (deadline - now).min(Duration::from_millis(200));
            self.stream
                .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
                .expect("read timeout");
            let end = match self.stream.read(&mut chunk) {
                Ok(0) => ReadEnd::Eof,
                Ok(n) => {
                    tail.extend_from_slice(&chunk[..n]);
                    if tail.len() > 2 * keep {
                        tail.drain(..tail.len() - keep);
                    }
                    continue;
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    continue
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => ReadEnd::Error(e),
            };
            if tail.len() > keep {
                tail.drain(..tail.len() - keep);
            }
            return (tail, end);
        }
    }

    /// Reads one `MSG`/`HMSG`. A server `PING` on the way is answered with `PONG`; anything
    /// else that is not a delivery fails the test.
    pub fn read_msg(&mut self, timeout: Duration) -> RawMsg {
        let deadline = Instant::now() + timeout;
        loop {
            let line = self.read_line(deadline);
            if line == b"PING" {
                self.send(b"PONG\r\n");
                continue;
            }
            let text = String::from_utf8_lossy(&line).into_owned();
            let parts: Vec<&str> = text.split_ascii_whitespace().collect();
            let (hdr, total, reply) = match parts.as_slice() {
                ["MSG", _, _, size] => (None, size, None),
                ["MSG", _, _, reply, size] => (None, size, Some(reply)),
                ["HMSG", _, _, h, size] => (Some(h), size, None),
                ["HMSG", _, _, reply, h, size] => (Some(h), size, Some(reply)),
                _ => panic!("expected MSG or HMSG, got {}", show(&line)),
            };
            let total: usize = total.parse().expect("MSG size");
            let hdr: Option<usize> = hdr.map(|h| h.parse().expect("HMSG header size"));
            let body = self.read_exact_deadline(total + 2, deadline);
            assert_eq!(
                &body[total..],
                b"\r\n",
                "payload of {text} not followed by CRLF"
            );
            let h = hdr.unwrap_or(0);
            assert!(h <= total, "header size > total in {text}");
            return RawMsg {
                subject: parts[1].to_string(),
                sid: parts[2].to_string(),
                reply: reply.map(|r| r.to_string()),
                headers: hdr.map(|h| body[..h].to_vec()),
                payload: body[h..total].to_vec(),
            };
        }
    }

    /// As [`RawClient::read_msg`], or how reading ended when nothing at all arrived
    /// within `timeout` (a message that has begun is read whole).
    pub fn try_read_msg(&mut self, timeout: Duration) -> Result<RawMsg, ReadEnd> {
        if self.buf.len() == self.pos {
            self.fill(Instant::now() + timeout)?;
        }
        Ok(self.read_msg(WAIT))
    }

    /// One control line, without its `\r\n`.
    fn read_line(&mut self, deadline: Instant) -> Vec<u8> {
        let mut searched = 0;
        loop {
            let hay = &self.buf[self.pos..];
            if let Some(i) = hay[searched..].iter().position(|&b| b == b'\n') {
                let end = self.pos + searched + i;
                let mut line = &self.buf[self.pos..end];
                if line.last() == Some(&b'\r') {
                    line = &line[..line.len() - 1];
                }
                let line = line.to_vec();
                self.pos = end + 1;
                return line;
            }
            searched = hay.len();
            let before = self.pos;
            if let Err(end) = self.fill(deadline) {
                panic!(
                    "waiting for a line ({end:?}); received: {}",
                    show(self.buffered())
                );
            }
            if self.pos != before {
                searched = 0;
            }
        }
    }

    fn read_exact_deadline(&mut self, n: usize, deadline: Instant) -> Vec<u8> {
        while self.buf.len() - self.pos < n {
            if let Err(end) = self.fill(deadline) {
                panic!(
                    "waiting for {n} bytes ({end:?}); received: {}",
                    show(self.buffered())
                );
            }
        }
        let out = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        out
    }
}

/// The first position of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Bytes for a failure message: escaped, and cut when long.
pub fn show(bytes: &[u8]) -> String {
    const MAX: usize = 600;
    let s: String = bytes
        .iter()
        .take(MAX)
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect();
    if bytes.len() > MAX {
        format!("\"{s}\"... ({} bytes)", bytes.len())
    } else {
        format!("\"{s}\"")
    }
}

// ---------------------------------------------------------------------------------------
// async-nats
// ---------------------------------------------------------------------------------------

/// Connects async-nats clients until one lands on `worker`.
pub async fn nats_on_worker(
    url: &str,
    worker: usize,
    workers: usize,
    options: impl Fn() -> async_nats::ConnectOptions,
) -> async_nats::Client {
    for _ in 0..200 {
        let client = options().connect(url).await.expect("async-nats connect");
        if client.server_info().client_id % workers as u64 == worker as u64 {
            return client;
        }
        drop(client);
    }
    panic!("200 connections and none landed on worker {worker} of {workers}");
}

/// A deterministic pseudo-random byte generator (xorshift64*), for garbage and payloads.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next_u64() >> 56) as u8).collect()
    }
}

// ---------------------------------------------------------------------------------------
// Binary-port client
// ---------------------------------------------------------------------------------------

/// A blocking client of the binary port that sends and reads whole frames with the
/// reference codec, so tests can assert on every field (and send what a client must not).
pub struct BinClient {
    pub stream: TcpStream,
    buf: bytes::BytesMut,
    decoder: tern_protocol::binary::ServerFrameDecoder,
    /// The `WELCOME`, when [`BinClient::connect`] read it.
    pub welcome: tern_protocol::binary::Welcome,
    /// The `SUBSCRIBED` frames read so far (where each subscription starts in every
    /// shard), in arrival order: [`BinClient::try_read_frame`] sets them aside, so that
    /// tests reading messages and notices are not interrupted by them.
    pub subscribed: Vec<tern_protocol::binary::Subscribed>,
}

impl BinClient {
    /// Connects without sending anything.
    pub fn connect_bare(addr: SocketAddr) -> BinClient {
        let stream = TcpStream::connect_timeout(&addr, WAIT).expect("cannot connect to ternd");
        BinClient::from_stream(stream)
    }

    /// Connects with a small receive buffer (set before connecting, so the window stays
    /// small), then sends the preface and a `HELLO` and reads the `WELCOME`.
    pub fn connect_small_rcvbuf(addr: SocketAddr, rcvbuf: usize) -> BinClient {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        sock.set_recv_buffer_size(rcvbuf).expect("SO_RCVBUF");
        sock.connect_timeout(&addr.into(), WAIT)
            .expect("cannot connect to ternd");
        let mut c = BinClient::from_stream(sock.into());
        c.handshake(tern_protocol::binary::Hello {
            client_name: bytes::Bytes::from_static(b"test"),
            echo: true,
            ..Default::default()
        });
        c
    }

    fn from_stream(stream: TcpStream) -> BinClient {
        stream.set_nodelay(true).expect("TCP_NODELAY");
        stream
            .set_write_timeout(Some(Duration::from_secs(30)))
            .expect("write timeout");
        BinClient {
            stream,
            buf: bytes::BytesMut::new(),
            decoder: tern_protocol::binary::ServerFrameDecoder::new(Default::default()),
            welcome: Default::default(),
            subscribed: Vec::new(),
        }
    }

    /// Connects, sends the preface and `hello`, and reads the `WELCOME`.
    pub fn connect_with(addr: SocketAddr, hello: tern_protocol::binary::Hello) -> BinClient {
        let mut c = BinClient::connect_bare(addr);
        c.handshake(hello);
        c
    }

    fn handshake(&mut self, hello: tern_protocol::binary::Hello) {
        use tern_protocol::binary::{ClientFrame, Preface, ServerFrame};
        let mut out = bytes::BytesMut::new();
        Preface::default().encode(&mut out);
        self.send_raw(&out);
        self.send(&ClientFrame::Hello(hello));
        match self.read_frame() {
            ServerFrame::Welcome(w) => self.welcome = w,
            other => panic!("expected WELCOME, got {other:?}"),
        }
    }

    /// Connects with echo on (so a client sees its own publishes, as on the text port).
    pub fn connect(addr: SocketAddr) -> BinClient {
        BinClient::connect_with(
            addr,
            tern_protocol::binary::Hello {
                client_name: bytes::Bytes::from_static(b"test"),
                echo: true,
                ..Default::default()
            },
        )
    }

    /// The worker this connection lives on (`client_id % workers`): the shard that
    /// sequences and stores what it publishes.
    pub fn worker(&self, workers: usize) -> usize {
        (self.welcome.client_id % workers as u64) as usize
    }

    /// Connects (as [`BinClient::connect`]) until a connection lands on `worker`.
    pub fn connect_on_worker(addr: SocketAddr, worker: usize, workers: usize) -> BinClient {
        // A new connection lives on the worker with the fewest (`ConnectionGate::admit`):
        // the misses stay open until one lands, so that the others fill up.
        let mut misses = Vec::new();
        for _ in 0..500 {
            let c = BinClient::connect(addr);
            if c.worker(workers) == worker {
                return c;
            }
            misses.push(c);
        }
        panic!("500 connections and none landed on worker {worker} of {workers}");
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("send failed: {e}"));
    }

    pub fn send(&mut self, frame: &tern_protocol::binary::ClientFrame) {
        let mut out = bytes::BytesMut::new();
        tern_protocol::binary::encode_client_frame(frame, &mut out).expect("encodable frame");
        self.send_raw(&out);
    }

    /// Publishes with an ack and returns the acknowledged (shard, sequence); messages and
    /// `PING`s that arrive meanwhile are passed over.
    pub fn publish_acked(
        &mut self,
        subject: &str,
        payload: impl AsRef<[u8]>,
        ack_id: u64,
    ) -> (u16, u64) {
        use tern_protocol::binary::{AckResult, ClientFrame, Publish, PublishAck, ServerFrame};
        self.send(&ClientFrame::Publish(Publish {
            subject: bytes::Bytes::copy_from_slice(subject.as_bytes()),
            payload: bytes::Bytes::copy_from_slice(payload.as_ref()),
            ack_id: Some(ack_id),
            ..Default::default()
        }));
        loop {
            match self.read_frame() {
                ServerFrame::PublishAck(PublishAck {
                    ack_id: id,
                    result:
                        AckResult::Stored {
                            shard, sequence, ..
                        },
                }) if id == ack_id => return (shard, sequence),
                ServerFrame::Message(_) | ServerFrame::Ping => {}
                other => panic!("expected the ack of {ack_id}, got {other:?}"),
            }
        }
    }

    /// The next frame, waiting at most [`WAIT`]. Panics on timeout, close or a frame the
    /// codec refuses.
    pub fn read_frame(&mut self) -> tern_protocol::binary::ServerFrame {
        self.try_read_frame(WAIT)
            .unwrap_or_else(|end| panic!("no frame from ternd: {end:?}"))
    }

    /// The next frame, or how reading ended without one.
    pub fn try_read_frame(
        &mut self,
        timeout: Duration,
    ) -> Result<tern_protocol::binary::ServerFrame, ReadEnd> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(tern_protocol::binary::ServerFrame::Subscribed(s))) => {
                    self.subscribed.push(s);
                    continue;
                }
                Ok(Some(frame)) => return Ok(frame),
                Ok(None) => {}
                Err(e) => panic!("ternd sent a frame the codec refuses: {e}"),
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ReadEnd::Timeout);
            }
            self.stream
                .set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))))
                .expect("read timeout");
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(ReadEnd::Eof),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(ReadEnd::Error(e)),
            }
        }
    }

    /// Sends `PING` and returns every frame before its `PONG`.
    pub fn flush(&mut self) -> Vec<tern_protocol::binary::ServerFrame> {
        use tern_protocol::binary::{ClientFrame, ServerFrame};
        self.send(&ClientFrame::Ping);
        let mut before = Vec::new();
        loop {
            match self.read_frame() {
                ServerFrame::Pong => return before,
                other => before.push(other),
            }
        }
    }

    /// Asserts that the connection closes (EOF or reset) within [`WAIT`], and returns the
    /// frames that came before.
    pub fn frames_to_close(&mut self) -> Vec<tern_protocol::binary::ServerFrame> {
        let mut frames = Vec::new();
        loop {
            match self.try_read_frame(WAIT) {
                Ok(frame) => frames.push(frame),
                Err(ReadEnd::Timeout) => panic!("still open after {WAIT:?}; frames: {frames:?}"),
                Err(_) => return frames,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// ternd runs that must fail to start, and small filesystems
// ---------------------------------------------------------------------------------------

/// Runs ternd with `args` (plus `--listen 127.0.0.1:0 --no-pin --no-monitor
/// --binary-listen 127.0.0.1:0`) expecting it to exit by itself within `timeout`; returns its
/// exit status and stderr. Panics, with stderr, when it prints its listening line (it
/// started) or is still running at the deadline.
pub fn ternd_exit(args: &[&str], timeout: Duration) -> (ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ternd"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--no-pin",
            "--no-monitor",
            "--binary-listen",
            "127.0.0.1:0",
        ])
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot spawn ternd");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let out_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait failed") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "ternd {args:?} still running after {timeout:?}\n--- stderr ---\n{}",
                err_thread.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = out_thread.join().unwrap_or_default();
    let err = err_thread.join().unwrap_or_default();
    assert!(
        !out.contains("ternd listening on"),
        "ternd {args:?} started ({status})\n--- stderr ---\n{err}"
    );
    (status, err)
}

/// A small tmpfs mounted on a fresh directory, unmounted (and the directory removed) when
/// dropped: a filesystem that fills up. Mounting needs privileges (CI runs as root);
/// [`Tmpfs::mount`] says why it could not, so a test can skip with that reason.
pub struct Tmpfs {
    dir: TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it: `2m`).
    pub fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = temp_dir("ternd-tmpfs");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.as_os_str())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs { dir })
    }

    pub fn path(&self) -> &std::path::Path {
        &self.dir
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Unmounted first; the directory goes with `dir`.
        let _ = Command::new("umount").arg(self.dir.as_os_str()).status();
    }
}

/// A process's peak resident memory (`VmHWM`), from `/proc/<pid>/status`, in bytes.
pub fn peak_rss(pid: u32) -> u64 {
    proc_status_kib(pid, "VmHWM:") * 1024
}

/// A process's resident memory now (`VmRSS`), from `/proc/<pid>/status`, in bytes.
pub fn current_rss(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS:") * 1024
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}
