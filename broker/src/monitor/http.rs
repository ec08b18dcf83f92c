//! The monitoring endpoint's HTTP/1.1 server: one I/O thread (`tern-monitor`) running a
//! non-blocking `mio` loop over every HTTP connection, and one responder thread
//! (`tern-monitor-snap`) that runs the endpoints, one request at a time.
//!
//! Owns: the listener, every HTTP connection (its bounded read buffer, its response, its
//! phase and deadline), the request-head parser ([`parse_head`]: sans-IO, "not all there
//! yet" is `Ok(None)`, "these bytes are wrong" is a [`HeadError`]), and the hand-off of
//! whole requests to the responder and of its [`Reply`]s back (a channel and a `mio` waker).
//!
//! Contract, every bound a setting ([`HttpLimits`]):
//! - At most `max_connections` connections are held. One more is accepted, answered `503`
//!   with one non-blocking write, and closed.
//! - A request head (request line and headers) is at most `max_head` bytes: a longer one is
//!   answered `414` (no end of the request line in it) or `431` and closed. No answer ever
//!   echoes what the client sent.
//! - A head must arrive within `timeout` of the connection's start (or of the end of the
//!   previous response): otherwise one non-blocking `408` and the connection is closed. A
//!   response must be taken within `timeout` of being ready: otherwise it is closed.
//! - Only `GET` (`405` otherwise), without a body (`400`), HTTP/1.0 or 1.1 (`505`); each of
//!   these errors closes the connection.
//! - Keep-alive: an HTTP/1.1 connection stays open after a response unless the request said
//!   `Connection: close`; an HTTP/1.0 one closes unless it said `Connection: keep-alive`.
//!   One request at a time per connection: pipelined requests wait in the read buffer (at
//!   most `max_head` bytes; the rest stays in the kernel).
//! - The responder runs one request at a time; requests wait in a queue of
//!   `max_connections` (at most one per connection; a full queue answers `503`). A
//!   snapshot wait therefore never holds up any connection's reading or writing.
//! - Closing after an answer is graceful: the write side is shut, then what the client
//!   still sends is read and dropped until it closes or `timeout` passes, so it reads the
//!   status rather than a reset.
//!
//! Never: blocks on a socket, spawns a thread per connection, or holds more than about
//! `max_connections` × (`max_head` + one response) bytes. Its counters (`monitor_*`, in
//! the monitor's own `WorkerStats`) are written by the I/O thread only.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use tracing::{debug, warn};

use crate::stats::{bump, MonitorRefusal, WorkerStats};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_CONN: usize = 2;
/// Bytes read from a socket per `read` call.
const READ_CHUNK: usize = 4096;
/// Bytes dropped per readiness event while lingering, so one fast sender cannot keep the
/// loop to itself (it gets another event when more arrives).
const LINGER_READ_BUDGET: usize = 1 << 20;
/// How long to wait before accepting again after an accept error other than "no more"
/// (out of file descriptors, say): readiness is edge-triggered, so it must be retried.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// The bounds of the HTTP server (settings `monitor_max_connections`,
/// `monitor_max_request_head`, `monitor_request_timeout`).
#[derive(Debug, Clone)]
pub(crate) struct HttpLimits {
    pub max_connections: usize,
    pub max_head: usize,
    pub timeout: Duration,
    /// The bearer token every path but `/healthz` requires (`monitor_token`).
    pub token: Option<String>,
}

/// An HTTP answer: status, content type, body; and, when it refuses the request, why
/// (counted in `monitor_requests_refused`).
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    pub refused: Option<MonitorRefusal>,
}

pub(crate) const JSON: &str = "application/json";

impl Reply {
    pub fn json(status: u16, v: &serde_json::Value) -> Reply {
        Reply {
            status,
            content_type: JSON,
            body: serde_json::to_string_pretty(v).unwrap_or_default() + "\n",
            refused: None,
        }
    }

    pub fn error(status: u16, text: impl Into<String>) -> Reply {
        Reply::json(status, &serde_json::json!({ "error": text.into() }))
    }

    /// An error that refuses the request for `why`.
    pub fn refuse(status: u16, why: MonitorRefusal, text: impl Into<String>) -> Reply {
        Reply {
            refused: Some(why),
            ..Reply::error(status, text)
        }
    }

    /// The whole response on the wire.
    fn encode(&self, keep_alive: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nConnection: {}\r\n{}\r\n",
            self.status,
            reason_phrase(self.status),
            self.content_type,
            self.body.len(),
            if keep_alive { "keep-alive" } else { "close" },
            match self.status {
                405 => "Allow: GET\r\n",
                401 => "WWW-Authenticate: Bearer realm=\"ternd\"\r\n",
                _ => "",
            },
        )
        .into_bytes();
        out.extend_from_slice(self.body.as_bytes());
        out
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// A request head that parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    /// The method is `GET`.
    pub get: bool,
    /// The request target as sent: path and query (origin form).
    pub target: String,
    /// The connection may stay open after the response.
    pub keep_alive: bool,
    /// A `Content-Length` above 0 or a `Transfer-Encoding`.
    pub has_body: bool,
    /// The token of an `Authorization: Bearer <token>` header.
    pub bearer: Option<String>,
}

/// A request head that cannot be served. None of them carries the client's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeadError {
    /// `max_head` bytes and the request line has not ended.
    UriTooLong,
    /// `max_head` bytes and the headers have not ended.
    HeadersTooLarge,
    /// Not an HTTP/1.x request.
    Version,
    Malformed(&'static str),
}

impl HeadError {
    fn reply(self, max_head: usize) -> Reply {
        match self {
            HeadError::UriTooLong => Reply::refuse(
                414,
                MonitorRefusal::HeadTooLarge,
                format!("the request line is longer than {max_head} bytes"),
            ),
            HeadError::HeadersTooLarge => Reply::refuse(
                431,
                MonitorRefusal::HeadTooLarge,
                format!("the request head is longer than {max_head} bytes"),
            ),
            HeadError::Version => Reply::refuse(
                505,
                MonitorRefusal::BadRequest,
                "only HTTP/1.0 and HTTP/1.1 are served",
            ),
            HeadError::Malformed(why) => Reply::refuse(
                400,
                MonitorRefusal::BadRequest,
                format!("bad request: {why}"),
            ),
        }
    }
}

/// Parses a request head at the start of `buf`: `Ok(None)` while it is incomplete and
/// shorter than `max_head`; else the head and the bytes it took (the request line, the
/// headers and the empty line), or why it cannot be served. Leading empty lines are
/// skipped; lines may end in CRLF or LF.
pub(crate) fn parse_head(buf: &[u8], max_head: usize) -> Result<Option<(Head, usize)>, HeadError> {
    let start = buf
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(buf.len());
    let body = &buf[start..];
    let end = [(b"\n\r\n".as_slice(), 3), (b"\n\n".as_slice(), 2)]
        .iter()
        .filter_map(|(pat, len)| find(body, pat).map(|i| i + len))
        .min();
    let Some(end) = end.filter(|e| start + e <= max_head) else {
        if buf.len() < max_head {
            return Ok(None);
        }
        return Err(if body.contains(&b'\n') {
            HeadError::HeadersTooLarge
        } else {
            HeadError::UriTooLong
        });
    };
    let mut lines = body[..end]
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Malformed(
            "the request line is not `METHOD TARGET VERSION`",
        ));
    };
    let http11 = match version {
        b"HTTP/1.1" => true,
        b"HTTP/1.0" => false,
        v if v.starts_with(b"HTTP/") => return Err(HeadError::Version),
        _ => return Err(HeadError::Malformed("no HTTP version")),
    };
    if method.is_empty() || !method.iter().all(u8::is_ascii_alphabetic) {
        return Err(HeadError::Malformed("the method is not a token"));
    }
    if !target.starts_with(b"/") {
        return Err(HeadError::Malformed("the target is not a path"));
    }
    let Ok(target) = std::str::from_utf8(target) else {
        return Err(HeadError::Malformed("the target is not UTF-8"));
    };
    let (mut close, mut keep) = (false, false);
    let mut has_body = false;
    let mut bearer = None;
    for header in lines.filter(|l| !l.is_empty()) {
        if header[0] == b' ' || header[0] == b'\t' {
            return Err(HeadError::Malformed("folded header lines are not accepted"));
        }
        let Some(colon) = header.iter().position(|b| *b == b':') else {
            return Err(HeadError::Malformed("a header line has no colon"));
        };
        let name = &header[..colon];
        if name.is_empty() || name.iter().any(|b| b.is_ascii_whitespace()) {
            return Err(HeadError::Malformed("a header name is not a token"));
        }
        let value = header[colon + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            let n: u64 = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or(HeadError::Malformed("Content-Length is not a number"))?;
            has_body |= n > 0;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            has_body = true;
        } else if name.eq_ignore_ascii_case(b"authorization") {
            let scheme = value
                .get(..7)
                .filter(|s| s.eq_ignore_ascii_case(b"bearer "));
            bearer = scheme
                .and_then(|_| std::str::from_utf8(value[7..].trim_ascii()).ok())
                .map(str::to_string);
        }
    }
    let head = Head {
        get: method == b"GET",
        target: target.to_string(),
        keep_alive: !close && (http11 || keep),
        has_body,
        bearer,
    };
    Ok(Some((head, start + end)))
}

/// True when the request may be answered: no token is configured, it asks for
/// `/healthz` (load balancers probe it without credentials), or it carries the token
/// (compared in constant time).
fn authorized(head: &Head, token: Option<&str>) -> bool {
    let Some(token) = token else {
        return true;
    };
    let path = head.target.split('?').next().unwrap_or_default();
    if path.trim_end_matches('/') == "/healthz" {
        return true;
    }
    head.bearer
        .as_deref()
        .is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes()))
}

/// Equality whose time depends on the lengths only, never on where the bytes differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The bound HTTP listener (port 0 picks a free port).
pub(crate) fn bind(addr: SocketAddr) -> io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// A whole request handed to the responder.
struct Job {
    slot: usize,
    serial: u64,
    target: String,
    /// Set when the connection closed meanwhile: the responder skips the request.
    cancelled: Arc<AtomicBool>,
}

/// The responder's answer to a [`Job`].
struct Done {
    slot: usize,
    serial: u64,
    reply: Reply,
}

/// The running server: the I/O thread and the responder thread.
pub(crate) struct HttpServer {
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    io: Option<JoinHandle<()>>,
    responder: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Starts serving `listener`; `handler` answers each request's target (path and
    /// query) on the responder thread. `stats` is written by the I/O thread only.
    pub fn spawn<H>(
        mut listener: TcpListener,
        limits: HttpLimits,
        stats: Arc<WorkerStats>,
        mut handler: H,
    ) -> io::Result<HttpServer>
    where
        H: FnMut(&str) -> Reply + Send + 'static,
    {
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let stop = Arc::new(AtomicBool::new(false));
        let (jobs_tx, jobs_rx) = crossbeam_channel::bounded::<Job>(limits.max_connections);
        let (done_tx, done_rx) = crossbeam_channel::bounded::<Done>(limits.max_connections);

        let responder = {
            let waker = Arc::clone(&waker);
            std::thread::Builder::new()
                .name("tern-monitor-snap".to_string())
                .spawn(move || {
                    for job in jobs_rx.iter() {
                        if job.cancelled.load(Ordering::Relaxed) {
                            continue;
                        }
                        // A bug in an endpoint costs its request (500), never the
                        // responder: connections waiting for it have no deadline.
                        let run = std::panic::AssertUnwindSafe(|| handler(&job.target));
                        let reply = std::panic::catch_unwind(run).unwrap_or_else(|_| {
                            Reply::error(500, "the monitor failed to answer this request")
                        });
                        let done = Done {
                            slot: job.slot,
                            serial: job.serial,
                            reply,
                        };
                        if done_tx.send(done).is_err() {
                            return;
                        }
                        // A failed wake means the I/O loop is gone: nothing to tell.
                        let _ = waker.wake();
                    }
                })?
        };
        let io_loop = IoLoop {
            poll,
            listener,
            conns: Slab::new(),
            limits,
            stats,
            jobs: jobs_tx,
            done: done_rx,
            next_serial: 0,
            stop: Arc::clone(&stop),
            retry_accept: None,
        };
        let io = std::thread::Builder::new()
            .name("tern-monitor".to_string())
            .spawn(move || io_loop.run());
        let io = match io {
            Ok(io) => io,
            Err(e) => {
                // The responder ends when its queue's sender (in the loop) is dropped.
                let _ = responder.join();
                return Err(e);
            }
        };
        Ok(HttpServer {
            stop,
            waker,
            io: Some(io),
            responder: Some(responder),
        })
    }

    /// Stops serving: closes every connection and waits for both threads (the responder
    /// finishes the request it is running, at most the snapshot timeouts).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.waker.wake();
        for t in [self.io.take(), self.responder.take()]
            .into_iter()
            .flatten()
        {
            let _ = t.join();
        }
    }
}

/// Where a connection is in its request/response cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading a request head (deadline: `timeout` after it began).
    Reading,
    /// Its request is with the responder (no deadline: the responder's own waits are
    /// bounded).
    Waiting,
    /// Writing a response (deadline: `timeout` after it was ready).
    Writing,
    /// Done: the write side is shut; dropping what the client still sends until it closes.
    Lingering,
}

/// One HTTP connection.
struct HttpConn {
    sock: TcpStream,
    serial: u64,
    phase: Phase,
    deadline: Option<Instant>,
    /// Received and not yet parsed; at most `max_head` bytes.
    input: Vec<u8>,
    output: Vec<u8>,
    written: usize,
    /// Keep the connection after the response being written.
    keep_alive: bool,
    /// The client shut its write side (EOF).
    peer_closed: bool,
    /// Responses written.
    answered: u64,
    /// The request with the responder, if any: its cancel flag.
    job: Option<Arc<AtomicBool>>,
}

/// What a connection needs from the loop after a step.
enum Step {
    /// Nothing until its next readiness event or deadline.
    Idle,
    /// A request for the responder.
    Dispatch(String),
    Close,
}

impl HttpConn {
    /// Reads what the socket has, as long as the buffer has room.
    fn fill(&mut self, max: usize) -> io::Result<()> {
        let mut chunk = [0u8; READ_CHUNK];
        while !self.peer_closed && self.input.len() < max {
            let room = (max - self.input.len()).min(READ_CHUNK);
            match self.sock.read(&mut chunk[..room]) {
                Ok(0) => self.peer_closed = true,
                Ok(n) => self.input.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Writes what is left of the response; true when all of it is written.
    fn flush(&mut self) -> io::Result<bool> {
        while self.written < self.output.len() {
            match self.sock.write(&self.output[self.written..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Reads and drops what the client sends; true once it has closed.
    fn discard(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; READ_CHUNK];
        let mut dropped = 0;
        while dropped < LINGER_READ_BUDGET {
            match self.sock.read(&mut chunk) {
                Ok(0) => return Ok(true),
                Ok(n) => dropped += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// Starts writing `reply`; counts it (and its refusal).
    fn respond(&mut self, reply: &Reply, keep_alive: bool, deadline: Instant, stats: &WorkerStats) {
        bump(&stats.monitor_requests, 1);
        if let Some(why) = reply.refused {
            bump(&stats.monitor_requests_refused[why as usize], 1);
        }
        self.keep_alive = keep_alive && !self.peer_closed;
        self.output = reply.encode(self.keep_alive);
        self.written = 0;
        self.phase = Phase::Writing;
        self.deadline = Some(deadline);
        self.answered += 1;
    }

    /// Moves the connection on as far as its socket allows.
    fn step(&mut self, limits: &HttpLimits, stats: &WorkerStats) -> Step {
        loop {
            match self.phase {
                Phase::Reading => {
                    if self.fill(limits.max_head).is_err() {
                        return Step::Close;
                    }
                    let deadline = Instant::now() + limits.timeout;
                    match parse_head(&self.input, limits.max_head) {
                        Ok(None) if self.peer_closed => return Step::Close,
                        Ok(None) => return Step::Idle,
                        Ok(Some((head, used))) => {
                            self.input.drain(..used);
                            if !head.get {
                                let r = Reply::refuse(
                                    405,
                                    MonitorRefusal::Method,
                                    "only GET is supported",
                                );
                                self.respond(&r, false, deadline, stats);
                            } else if head.has_body {
                                let r = Reply::refuse(
                                    400,
                                    MonitorRefusal::BadRequest,
                                    "a request body is not accepted",
                                );
                                self.respond(&r, false, deadline, stats);
                            } else if !authorized(&head, limits.token.as_deref()) {
                                let r = Reply::refuse(
                                    401,
                                    MonitorRefusal::Unauthorized,
                                    "this endpoint needs `Authorization: Bearer <monitor_token>`",
                                );
                                self.respond(&r, false, deadline, stats);
                            } else {
                                self.keep_alive = head.keep_alive;
                                self.phase = Phase::Waiting;
                                self.deadline = None;
                                return Step::Dispatch(head.target);
                            }
                        }
                        Err(e) => {
                            self.input.clear();
                            self.respond(&e.reply(limits.max_head), false, deadline, stats);
                        }
                    }
                }
                Phase::Waiting => {
                    // Read ahead (bounded) to notice a reset; an EOF still gets its answer.
                    return match self.fill(limits.max_head) {
                        Ok(()) => Step::Idle,
                        Err(_) => Step::Close,
                    };
                }
                Phase::Writing => match self.flush() {
                    Err(_) => return Step::Close,
                    Ok(false) => return Step::Idle,
                    Ok(true) => {
                        self.output = Vec::new();
                        self.deadline = Some(Instant::now() + limits.timeout);
                        if self.keep_alive && !self.peer_closed {
                            self.phase = Phase::Reading;
                        } else {
                            let _ = self.sock.shutdown(Shutdown::Write);
                            self.phase = Phase::Lingering;
                        }
                    }
                },
                Phase::Lingering => {
                    return match self.discard() {
                        Ok(false) => Step::Idle,
                        Ok(true) | Err(_) => Step::Close,
                    }
                }
            }
        }
    }
}

/// The I/O thread's state.
struct IoLoop {
    poll: Poll,
    listener: TcpListener,
    conns: Slab<HttpConn>,
    limits: HttpLimits,
    stats: Arc<WorkerStats>,
    jobs: Sender<Job>,
    done: Receiver<Done>,
    next_serial: u64,
    stop: Arc<AtomicBool>,
    retry_accept: Option<Instant>,
}

impl IoLoop {
    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        while !self.stop.load(Ordering::Relaxed) {
            let timeout = self
                .next_deadline()
                .map(|d| d.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                warn!(error = %e, "monitoring loop cannot poll; monitoring stops");
                break;
            }
            for ev in &events {
                match ev.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    Token(t) => self.drive(t - FIRST_CONN),
                }
            }
            self.take_replies();
            let now = Instant::now();
            if self.retry_accept.is_some_and(|at| at <= now) {
                self.retry_accept = None;
                self.accept();
            }
            self.expire(now);
        }
        let slots: Vec<usize> = self.conns.iter().map(|(slot, _)| slot).collect();
        for slot in slots {
            self.close(slot);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.conns
            .iter()
            .filter_map(|(_, c)| c.deadline)
            .chain(self.retry_accept)
            .min()
    }

    /// Accepts every waiting connection: holds it if there is room, else answers 503.
    fn accept(&mut self) {
        loop {
            let sock = match self.listener.accept() {
                Ok((sock, _)) => sock,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::Interrupted | ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue
                }
                Err(e) => {
                    warn!(error = %e, "monitoring cannot accept; retrying");
                    self.retry_accept = Some(Instant::now() + ACCEPT_RETRY);
                    return;
                }
            };
            if self.conns.len() >= self.limits.max_connections {
                // Counted before it is answered: whoever reads the 503 then sees it counted.
                bump(
                    &self.stats.monitor_requests_refused[MonitorRefusal::Connections as usize],
                    1,
                );
                let busy = Reply::error(503, "too many monitoring connections, retry later");
                refuse(sock, &busy.encode(false));
                continue;
            }
            let entry = self.conns.vacant_entry();
            let slot = entry.key();
            let mut sock = sock;
            let interest = Interest::READABLE | Interest::WRITABLE;
            if let Err(e) =
                self.poll
                    .registry()
                    .register(&mut sock, Token(FIRST_CONN + slot), interest)
            {
                debug!(error = %e, "monitoring connection not registered");
                continue;
            }
            self.next_serial += 1;
            entry.insert(HttpConn {
                sock,
                serial: self.next_serial,
                phase: Phase::Reading,
                deadline: Some(Instant::now() + self.limits.timeout),
                input: Vec::new(),
                output: Vec::new(),
                written: 0,
                keep_alive: false,
                peer_closed: false,
                answered: 0,
                job: None,
            });
            // Registration reports what is already readable; the request is read then.
        }
    }

    /// Moves connection `slot` on after a readiness event or a reply.
    fn drive(&mut self, slot: usize) {
        loop {
            let Some(conn) = self.conns.get_mut(slot) else {
                return;
            };
            match conn.step(&self.limits, &self.stats) {
                Step::Idle => return,
                Step::Close => {
                    self.close(slot);
                    return;
                }
                Step::Dispatch(target) => {
                    let cancelled = Arc::new(AtomicBool::new(false));
                    let job = Job {
                        slot,
                        serial: conn.serial,
                        target,
                        cancelled: Arc::clone(&cancelled),
                    };
                    match self.jobs.try_send(job) {
                        Ok(()) => {
                            conn.job = Some(cancelled);
                            return;
                        }
                        Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                            let r = Reply::refuse(
                                503,
                                MonitorRefusal::Busy,
                                "the monitor is busy, retry",
                            );
                            let deadline = Instant::now() + self.limits.timeout;
                            conn.respond(&r, false, deadline, &self.stats);
                        }
                    }
                }
            }
        }
    }

    /// Hands each reply of the responder to its connection, if it is still there.
    fn take_replies(&mut self) {
        while let Ok(done) = self.done.try_recv() {
            let Some(conn) = self
                .conns
                .get_mut(done.slot)
                .filter(|c| c.serial == done.serial && c.phase == Phase::Waiting)
            else {
                continue;
            };
            conn.job = None;
            let keep_alive = conn.keep_alive;
            let deadline = Instant::now() + self.limits.timeout;
            conn.respond(&done.reply, keep_alive, deadline, &self.stats);
            self.drive(done.slot);
        }
    }

    /// Closes the connections past their deadline.
    fn expire(&mut self, now: Instant) {
        let late: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
            .map(|(slot, _)| slot)
            .collect();
        for slot in late {
            let conn = &mut self.conns[slot];
            let refused = match conn.phase {
                // An idle keep-alive connection just ends; a request begun (or never
                // sent on a fresh connection) is refused.
                Phase::Reading => !(conn.input.is_empty() && conn.answered > 0),
                Phase::Writing => true,
                Phase::Waiting | Phase::Lingering => false,
            };
            if refused {
                // Counted before it is answered, as every refusal.
                bump(
                    &self.stats.monitor_requests_refused[MonitorRefusal::Timeout as usize],
                    1,
                );
                if conn.phase == Phase::Reading {
                    let late = Reply::error(408, "the request did not arrive in time");
                    let _ = conn.sock.write(&late.encode(false));
                }
            }
            self.close(slot);
        }
    }

    fn close(&mut self, slot: usize) {
        let mut conn = self.conns.remove(slot);
        if let Some(cancelled) = conn.job.take() {
            cancelled.store(true, Ordering::Relaxed);
        }
        let _ = self.poll.registry().deregister(&mut conn.sock);
    }
}

/// Answers a connection the loop does not hold with one non-blocking write and closes it:
/// what already arrived is read first, and the write side shut, so that the client reads
/// the answer rather than a reset.
fn refuse(mut sock: TcpStream, answer: &[u8]) {
    let _ = sock.write(answer);
    let mut chunk = [0u8; READ_CHUNK];
    for _ in 0..4 {
        match sock.read(&mut chunk) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
    let _ = sock.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream as StdStream;

    const MAX: usize = 1024;

    fn head(text: &str) -> Head {
        match parse_head(text.as_bytes(), MAX) {
            Ok(Some((h, used))) => {
                assert_eq!(used, text.len(), "the whole head is taken");
                h
            }
            other => panic!("{text:?}: {other:?}"),
        }
    }

    #[test]
    fn a_get_parses_with_its_connection_semantics() {
        let h = head("GET /varz?x=1 HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(h.get && h.keep_alive && !h.has_body);
        assert_eq!(h.target, "/varz?x=1");
        assert!(!head("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head("GET / HTTP/1.0\r\nconnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(head("GET / HTTP/1.1\nHost: a\n\n").keep_alive, "bare LF");
        assert!(!head("POST / HTTP/1.1\r\n\r\n").get);
        assert!(head("GET / HTTP/1.1\r\nContent-Length: 3\r\n\r\n").has_body);
        assert!(!head("GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").has_body);
        assert!(head("GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").has_body);
    }

    #[test]
    fn an_incomplete_head_is_not_an_error_until_it_is_too_long() {
        assert_eq!(parse_head(b"GET /varz HTTP/1.1\r\nHost:", MAX), Ok(None));
        assert_eq!(parse_head(b"", MAX), Ok(None));
        let long_line = format!("GET /{}", "x".repeat(MAX));
        assert_eq!(
            parse_head(&long_line.as_bytes()[..MAX], MAX),
            Err(HeadError::UriTooLong)
        );
        let long_headers = format!("GET / HTTP/1.1\r\nX: {}", "y".repeat(MAX));
        assert_eq!(
            parse_head(&long_headers.as_bytes()[..MAX], MAX),
            Err(HeadError::HeadersTooLarge)
        );
        // Pipelined: the second request stays for later.
        let two = b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
        let (h, used) = parse_head(two, MAX).unwrap().unwrap();
        assert_eq!((h.target.as_str(), used), ("/a", 19));
        assert_eq!(
            parse_head(&two[used..], MAX).unwrap().unwrap().0.target,
            "/b"
        );
    }

    #[test]
    fn bad_heads_are_refused_without_their_bytes() {
        for (text, want) in [
            ("GET /\r\n\r\n", "Malformed"),
            ("GET / HTTP/2.0\r\n\r\n", "Version"),
            ("GET varz HTTP/1.1\r\n\r\n", "Malformed"),
            ("GET / HTTP/1.1\r\n folded\r\n\r\n", "Malformed"),
            ("GET / HTTP/1.1\r\nno colon\r\n\r\n", "Malformed"),
            ("GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n", "Malformed"),
        ] {
            let err = parse_head(text.as_bytes(), MAX).unwrap_err();
            assert!(format!("{err:?}").starts_with(want), "{text:?}: {err:?}");
        }
        let secret = "SECRET".repeat(400);
        let reply = HeadError::UriTooLong.reply(MAX);
        assert_eq!(reply.status, 414);
        assert!(!reply.body.contains(&secret[..6]));
        assert_eq!(HeadError::HeadersTooLarge.reply(MAX).status, 431);
    }

    /// A server on a free port whose handler answers the target back.
    fn echo_server(limits: HttpLimits) -> (HttpServer, SocketAddr, Arc<WorkerStats>) {
        let (listener, addr) = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let stats = Arc::new(WorkerStats::default());
        let server = HttpServer::spawn(listener, limits, Arc::clone(&stats), |target: &str| {
            Reply::json(200, &serde_json::json!({ "target": target }))
        })
        .unwrap();
        (server, addr, stats)
    }

    fn limits() -> HttpLimits {
        HttpLimits {
            token: None,
            max_connections: 4,
            max_head: 1024,
            timeout: Duration::from_secs(1),
        }
    }

    fn connect(addr: SocketAddr) -> StdStream {
        let s = StdStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    /// Reads one response with a Content-Length body: (status, body).
    fn read_response(s: &mut StdStream) -> (u16, String) {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut byte).unwrap(), 1, "closed mid-head: {buf:?}");
            buf.push(byte[0]);
        }
        let head = String::from_utf8(buf).unwrap();
        let status = head[9..12].parse().unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).unwrap();
        (status, String::from_utf8(body).unwrap())
    }

    fn refused(stats: &WorkerStats, why: MonitorRefusal) -> u64 {
        stats.monitor_requests_refused[why as usize].load(Ordering::Relaxed)
    }

    #[test]
    fn a_monitor_token_guards_every_path_but_healthz() {
        let (server, addr, stats) = echo_server(HttpLimits {
            token: Some("m0nitor".into()),
            ..limits()
        });
        let ask = |request: &str| {
            let mut s = connect(addr);
            s.write_all(request.as_bytes()).unwrap();
            read_response(&mut s)
        };
        let (status, body) = ask("GET /varz HTTP/1.1\r\n\r\n");
        assert_eq!(status, 401, "{body}");
        assert!(body.contains("monitor_token"), "{body}");
        assert!(!body.contains("m0nitor"), "never the token itself: {body}");
        let (status, _) = ask("GET /connz HTTP/1.1\r\nAuthorization: Bearer wrong\r\n\r\n");
        assert_eq!(status, 401);
        let (status, _) = ask("GET /connz HTTP/1.1\r\nAuthorization: Basic m0nitor\r\n\r\n");
        assert_eq!(status, 401, "only the bearer scheme");
        let (status, body) =
            ask("GET /connz?subs=1 HTTP/1.1\r\nauthorization: bearer  m0nitor\r\n\r\n");
        assert_eq!(status, 200, "{body}");
        let (status, _) = ask("GET /healthz HTTP/1.1\r\n\r\n");
        assert_eq!(status, 200, "health checks need no token");
        assert_eq!(refused(&stats, MonitorRefusal::Unauthorized), 3);
        server.stop();
    }

    #[test]
    fn keep_alive_serves_pipelined_requests_in_order_then_close_ends_it() {
        let (server, addr, stats) = echo_server(limits());
        let mut s = connect(addr);
        s.write_all(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        assert_eq!(
            read_response(&mut s),
            (200, "{\n  \"target\": \"/a\"\n}\n".into())
        );
        let (status, body) = read_response(&mut s);
        assert_eq!(status, 200);
        assert!(body.contains("/b"));
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "closed after the second: {rest:?}");
        assert_eq!(stats.monitor_requests.load(Ordering::Relaxed), 2);
        server.stop();
    }

    #[test]
    fn over_the_connection_cap_is_503_and_a_stalled_request_times_out() {
        let (server, addr, stats) = echo_server(limits());
        let mut stalled: Vec<StdStream> = (0..4).map(|_| connect(addr)).collect();
        for s in &mut stalled {
            s.write_all(b"GET /half HTTP/1.1\r\nHo").unwrap();
        }
        // The four are held (the fifth is refused) once the loop has accepted them.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut extra = connect(addr);
        extra.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let (status, body) = read_response(&mut extra);
        assert_eq!(status, 503, "{body}");
        assert!(refused(&stats, MonitorRefusal::Connections) >= 1);
        // Each stalled one gets a 408 and is closed, then there is room again.
        for s in &mut stalled {
            let mut got = Vec::new();
            let _ = s.read_to_end(&mut got);
            assert!(
                got.starts_with(b"HTTP/1.1 408"),
                "{:?}",
                String::from_utf8_lossy(&got)
            );
        }
        assert_eq!(refused(&stats, MonitorRefusal::Timeout), 4);
        loop {
            let mut s = connect(addr);
            s.write_all(b"GET /again HTTP/1.1\r\n\r\n").unwrap();
            let (status, _) = read_response(&mut s);
            if status == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "no room after the timeouts");
        }
        server.stop();
    }

    #[test]
    fn errors_close_gracefully_and_are_counted() {
        let (server, addr, stats) = echo_server(limits());
        let mut s = connect(addr);
        s.write_all(b"POST /varz HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi")
            .unwrap();
        let (status, _) = read_response(&mut s);
        assert_eq!(status, 405);
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        let mut s = connect(addr);
        let huge = format!("GET /{} HTTP/1.1\r\n\r\n", "u".repeat(4096));
        let _ = s.write_all(huge.as_bytes());
        let (status, body) = read_response(&mut s);
        assert_eq!(status, 414);
        assert!(!body.contains("uuuu"), "{body}");
        assert_eq!(refused(&stats, MonitorRefusal::Method), 1);
        assert_eq!(refused(&stats, MonitorRefusal::HeadTooLarge), 1);
        server.stop();
    }

    #[test]
    fn a_panicking_endpoint_costs_its_request_not_the_server() {
        let (listener, addr) = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let stats = Arc::new(WorkerStats::default());
        let server = HttpServer::spawn(listener, limits(), stats, |t: &str| {
            assert_ne!(t, "/boom", "a bug in an endpoint");
            Reply::json(200, &serde_json::json!({}))
        })
        .unwrap();
        let mut s = connect(addr);
        s.write_all(b"GET /boom HTTP/1.1\r\n\r\nGET /fine HTTP/1.1\r\n\r\n")
            .unwrap();
        assert_eq!(read_response(&mut s).0, 500);
        assert_eq!(read_response(&mut s).0, 200);
        server.stop();
    }

    #[test]
    fn a_reader_that_never_reads_does_not_stop_the_others() {
        // A handler with a big answer, and a client that asks for it and never reads.
        let (listener, addr) = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let stats = Arc::new(WorkerStats::default());
        let server = HttpServer::spawn(listener, limits(), Arc::clone(&stats), |t: &str| {
            let n = if t == "/big" { 32 << 20 } else { 1 };
            Reply::json(200, &serde_json::json!({ "x": "y".repeat(n) }))
        })
        .unwrap();
        let mut slow = connect(addr);
        slow.write_all(b"GET /big HTTP/1.1\r\n\r\n").unwrap();
        for _ in 0..3 {
            let mut s = connect(addr);
            s.write_all(b"GET /small HTTP/1.1\r\nConnection: close\r\n\r\n")
                .unwrap();
            assert_eq!(read_response(&mut s).0, 200);
        }
        // The slow one is cut when its response is not taken in time.
        let deadline = Instant::now() + Duration::from_secs(10);
        while refused(&stats, MonitorRefusal::Timeout) == 0 {
            assert!(
                Instant::now() < deadline,
                "the slow reader was never closed"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server.stop();
    }
}
