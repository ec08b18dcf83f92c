//! The I/O thread: one per client, the only code that touches the socket.
//!
//! Owns: the connection ([`Conn`]: the non-blocking socket, its read buffer and decoder,
//! the frames being written, the pings and acks in flight), the connect / handshake /
//! reconnect cycle, heartbeats (and the deadline a `GOAWAY` announces), and turning server
//! frames into deliveries, answers to waiters and events (`PRESENCE` frames: into a
//! subscription's presence, with its member token kept for the resubscribe, or into a
//! query's answer). One `mio::Poll` waits on the socket, a waker (the application's
//! calls ring it after adding to the outbox) and the next timer.
//!
//! With TLS (`crate::tls`), the connection also holds a rustls session: what the socket
//! reads goes through it before the decoder, and what the connection writes goes through
//! it before the socket. The handshake comes first on every connection: the preface and
//! `HELLO` are handed to the session at once, and rustls sends them only after it.
//!
//! The order on every (re)connection: (the TLS handshake;) preface and `HELLO` (with the
//! credentials: the latest token, user and password, the nkey's public key); with an nkey,
//! the server's `CHALLENGE` answered by `AUTH` with its nonce signed; `WELCOME`; every live
//! subscription re-sent with its sid (with a resume token when it has seen messages, and
//! a join with its latest member token), then the outbox (the offline buffer) in order:
//! first the acknowledged publishes with a message id that the lost connection was
//! given and did not acknowledge (in the order they were written, while their callers
//! wait), then what it had not finished writing, then what was published since.
//! Frames from the outbox go out only after the `WELCOME`, so nothing is published on a
//! connection the server has not accepted.
//!
//! Never: blocks. Reads and writes are non-blocking, every wait is the poll with a
//! timeout (at most [`MAX_WAIT`], so a close is noticed even without a wake-up), and
//! deliveries are `try_send`s into bounded queues: a full subscription queue drops the
//! new message and reports it (see `ClientBuilder::subscription_capacity`) rather than
//! stall the connection. Never holds the state lock across a system call.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use crossbeam_channel::{Sender, TrySendError};
use mio::net::TcpStream;
use mio::{Interest, Poll};
use tern_protocol::binary::{
    self, AckResult, Auth, Challenge, ClientFrame, ErrorFrame, Hello, Limits, Preface,
    PresenceBody, ServerFrame, ServerFrameDecoder,
};
use tern_protocol::read_room::ReadRoom;

use crate::event::{DisconnectReason, DropSource, Event};
use crate::outbox::{FrameKind, OutFrame};
use crate::random::SplitMix64;
use crate::shared::{encode, ping_frame, pong_frame, Inner, Phase, SubEnd, Target, SOCKET, WAKER};
use crate::tls::{Connector, TlsSession};
use crate::{Ack, Error, ErrorCode, Message, SequenceRange, ServerInfo};

/// The longest the poll waits, so the loop re-checks the phase even if a wake-up is lost.
const MAX_WAIT: Duration = Duration::from_secs(1);

/// How soon a held lossless delivery is tried again (nothing signals this thread when the
/// application takes a message).
const HELD_RETRY: Duration = Duration::from_millis(1);
/// Bytes read per loop turn before the loop also looks at writes and timers.
const READ_BUDGET: usize = 1 << 20;
/// Size of one read from the socket.
const READ_CHUNK: usize = 64 * 1024;
/// Frames handed to one vectored write.
const WRITE_SLICES: usize = 64;
/// Sequence ranges kept per subscription for one local drop report.
const MAX_DROP_RANGES: usize = 1024;
/// How long past a `GOAWAY`'s announced close the client waits for the server to close the
/// connection before it closes it itself.
const GOAWAY_GRACE: Duration = Duration::from_secs(1);

/// Starts the I/O thread. It reports the first connection's outcome on `first`, then
/// runs until the client is closed.
pub(crate) fn spawn(
    inner: Arc<Inner>,
    poll: Poll,
    tls: Option<Connector>,
    first: Sender<Result<ServerInfo, Error>>,
) -> io::Result<std::thread::JoinHandle<()>> {
    let rng = match inner.config.jitter_seed {
        Some(seed) => SplitMix64::seeded(seed),
        None => SplitMix64::from_entropy(),
    };
    std::thread::Builder::new()
        .name("tern-client-io".to_string())
        .spawn(move || {
            Driver {
                inner,
                poll,
                tls,
                events: mio::Events::with_capacity(16),
                rng,
                conn: None,
                failures: 0,
                retry_at: None,
                first: Some(first),
                untried: VecDeque::new(),
                scratch: vec![0; READ_CHUNK],
                drops: BTreeMap::new(),
                held: VecDeque::new(),
            }
            .run()
        })
}

/// Why a connection (or an attempt at one) ended.
#[derive(Debug)]
enum Failure {
    /// End of stream from the server.
    Eof,
    Io(io::Error),
    /// The connect or the handshake did not finish in time.
    Timeout(Duration),
    Heartbeat(Duration),
    Server {
        code: ErrorCode,
        message: String,
    },
    Protocol(String),
    /// The TLS session failed (rustls's reason, and the likely fix when there is one).
    Tls {
        error: rustls::Error,
        hint: Option<&'static str>,
    },
    /// The server announced it was going away (`GOAWAY`) and did not close the connection
    /// by the deadline it gave: the client closes it.
    GoneAway,
}

impl Failure {
    fn reason(&self) -> DisconnectReason {
        match self {
            Failure::Eof => DisconnectReason::ServerClosed,
            Failure::Io(e) => DisconnectReason::Io(e.to_string()),
            Failure::Timeout(d) => DisconnectReason::Io(format!(
                "connecting and the handshake took longer than {d:?}"
            )),
            Failure::Heartbeat(silence) => DisconnectReason::HeartbeatTimeout { silence: *silence },
            Failure::Server { code, message } => DisconnectReason::ServerError {
                code: *code,
                message: message.clone(),
            },
            Failure::Protocol(e) => DisconnectReason::Protocol(e.clone()),
            Failure::Tls { error, hint } => DisconnectReason::Tls(match hint {
                Some(hint) => format!("{error} ({hint})"),
                None => error.to_string(),
            }),
            Failure::GoneAway => DisconnectReason::ServerClosed,
        }
    }

    /// The error a failed first connection returns from `connect`.
    fn into_connect_error(self, server: &str) -> Error {
        let connect = |source| Error::Connect {
            server: server.to_string(),
            source,
        };
        match self {
            Failure::Eof => connect(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection during the handshake",
            )),
            Failure::Io(e) => connect(e),
            Failure::Timeout(d) => connect(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connecting and the handshake took longer than {d:?}"),
            )),
            Failure::Heartbeat(d) => connect(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no data from the server for {d:?}"),
            )),
            Failure::Server { code, message } => Error::Server { code, message },
            Failure::Protocol(e) => Error::Protocol(e),
            Failure::Tls { error, hint } => Error::Tls {
                server: server.to_string(),
                source: error,
                hint,
            },
            Failure::GoneAway => connect(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the server went away",
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// TCP connect in progress.
    Connecting,
    /// Preface and `HELLO` sent (or being sent); waiting for `WELCOME` (or, with an nkey,
    /// for `CHALLENGE` first). The connect deadline covers the whole of it.
    Handshake,
    /// `WELCOME` received.
    Ready,
}

/// One TCP connection and everything in flight on it.
struct Conn {
    stream: TcpStream,
    /// The TLS session, when TLS is on: between the socket and `read_buf` / `writing`.
    tls: Option<TlsSession>,
    peer: SocketAddr,
    stage: Stage,
    /// When the connect plus handshake must be done by.
    deadline: Instant,
    read_buf: BytesMut,
    /// How much the next plain read asks for (straight into `read_buf`).
    room: ReadRoom,
    decoder: ServerFrameDecoder,
    /// True when the last read stopped at the budget, not at `WouldBlock`: read again
    /// without waiting for a readiness event (the poll is edge-triggered).
    read_pending: bool,
    /// Bytes the last read took in.
    last_total: usize,
    /// Frames taken from the outbox (or made here), in wire order.
    writing: VecDeque<OutFrame>,
    /// Bytes of `writing.front()` already written.
    written: usize,
    /// True after a write hit `WouldBlock`, until the next writable event.
    write_blocked: bool,
    /// The `PING`s written, oldest first: `Some(id)` for a flush, `None` for a heartbeat.
    /// Each `PONG` answers the oldest.
    pings: VecDeque<Option<u64>>,
    /// Ack ids of publishes written and not yet acknowledged.
    acks_written: HashSet<u64>,
    /// Of those, the ones with a message id (`FrameKind::Publish { resend: true }`), in
    /// the order they were written: sent again on the next connection if this one is
    /// lost before their acks.
    resend_written: VecDeque<OutFrame>,
    /// Ids of presence queries written and not yet answered.
    queries_written: HashSet<u32>,
    last_read: Instant,
    last_ping: Instant,
    /// How often the server pings an idle client (from `WELCOME`; `MAX` before it).
    server_ping: Duration,
    /// The log epoch from `WELCOME`.
    epoch: u64,
    /// True once a `CHALLENGE` was answered: a second one is a protocol error.
    challenged: bool,
    /// After a `GOAWAY`: the server's text, and when the client closes the connection
    /// itself if the server has not.
    going_away: Option<(String, Instant)>,
}

/// Messages dropped locally for one subscription since the last report.
#[derive(Debug, Default)]
struct DropTally {
    count: u64,
    ranges: Vec<SequenceRange>,
}

impl DropTally {
    fn add(&mut self, shard: u16, sequence: u64) {
        self.count += 1;
        if let Some(last) = self
            .ranges
            .iter_mut()
            .rev()
            .find(|r| r.shard == shard && r.last.checked_add(1) == Some(sequence))
        {
            last.last = sequence;
        } else if self.ranges.len() < MAX_DROP_RANGES {
            self.ranges.push(SequenceRange {
                shard,
                first: sequence,
                last: sequence,
            });
        }
    }
}

struct Driver {
    inner: Arc<Inner>,
    poll: Poll,
    /// Starts each connection's TLS session, when TLS is on.
    tls: Option<Connector>,
    events: mio::Events,
    rng: SplitMix64,
    conn: Option<Conn>,
    /// Consecutive failed connection attempts.
    failures: u32,
    /// When disconnected: when the next attempt starts.
    retry_at: Option<Instant>,
    /// Until the first connection's outcome is reported.
    first: Option<Sender<Result<ServerInfo, Error>>>,
    /// The resolved addresses this attempt has not tried yet.
    untried: VecDeque<SocketAddr>,
    /// TLS records as read, before the session decrypts them into a `read_buf`.
    scratch: Vec<u8>,
    drops: BTreeMap<u32, DropTally>,
    /// Frames read but not handled yet because a lossless subscription's queue was full
    /// when the first of them (its message) came: handled, in order, once the application
    /// has taken one; until then the socket is not read (backpressure: the broker falls
    /// back to its log for that subscription rather than the client dropping).
    held: VecDeque<ServerFrame>,
}

impl Driver {
    fn run(mut self) {
        self.start_connect();
        loop {
            if self.inner.lock().phase == Phase::Closed {
                self.linger();
                return;
            }
            let timeout = self.timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut self.events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.give_up(&format!("the I/O thread's poll failed: {e}"));
                    continue;
                }
            }
            let (mut readable, mut writable) = (false, false);
            for event in self.events.iter() {
                match event.token() {
                    WAKER => self.inner.woken(),
                    SOCKET => {
                        readable |= event.is_readable() || event.is_read_closed();
                        writable |= event.is_writable() || event.is_write_closed();
                        if event.is_error() {
                            readable = true;
                            writable = true;
                        }
                    }
                    _ => {}
                }
            }
            if let Err(failure) = self.turn(readable, writable) {
                self.fail(failure);
            }
            self.timers();
            self.report_drops();
        }
    }

    /// How long the poll may wait: until the next timer, at most [`MAX_WAIT`], zero when
    /// there is work left over.
    fn timeout(&self, now: Instant) -> Duration {
        let config = &self.inner.config;
        let mut next = now + MAX_WAIT;
        if !self.held.is_empty() {
            // Nothing tells this thread when the application takes a message: look again.
            next = now + HELD_RETRY;
        }
        match &self.conn {
            Some(conn) => match conn.stage {
                Stage::Connecting | Stage::Handshake => next = next.min(conn.deadline),
                Stage::Ready => {
                    // Reading waits while frames are held: no busy loop for it (the
                    // held retry above is soon enough).
                    if conn.read_pending && self.held.is_empty() {
                        return Duration::ZERO;
                    }
                    next = next
                        .min(conn.last_read + config.server_timeout)
                        .min(conn.last_read.max(conn.last_ping) + config.ping_interval);
                    if let Some((_, deadline)) = &conn.going_away {
                        next = next.min(*deadline);
                    }
                }
            },
            None => {
                if let Some(at) = self.retry_at {
                    next = next.min(at);
                }
            }
        }
        next.saturating_duration_since(now)
    }

    /// One loop turn's socket work: finish a connect, read and handle frames, write.
    fn turn(&mut self, readable: bool, writable: bool) -> Result<(), Failure> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        if writable {
            conn.write_blocked = false;
        }
        if conn.stage == Stage::Connecting {
            if !(readable || writable) {
                return Ok(());
            }
            if let Some(e) = conn.stream.take_error().map_err(Failure::Io)? {
                return Err(Failure::Io(e));
            }
            match conn.stream.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
                Err(e) => return Err(Failure::Io(e)),
            }
            conn.stream.set_nodelay(true).map_err(Failure::Io)?;
            let mut preface = BytesMut::new();
            Preface::default().encode(&mut preface);
            conn.writing.push_back(OutFrame::control(preface.freeze()));
            conn.writing.push_back(hello(&self.inner)?);
            conn.stage = Stage::Handshake;
        }
        if !self.held.is_empty() {
            // Handled in place: what is still held stays where it is (a full subscription
            // is retried every millisecond; moving thousands of held frames each time cost
            // more than the deliveries).
            let mut held = std::mem::take(&mut self.held);
            let handled = self.handle(&mut held);
            self.held = held;
            handled?;
        }
        if !self.held.is_empty() {
            // Still full: read later (what the socket has waits there, and then at the
            // broker).
            if readable {
                if let Some(conn) = self.conn.as_mut() {
                    conn.read_pending = true;
                }
            }
        } else if readable || self.conn.as_ref().is_some_and(|c| c.read_pending) {
            self.read()?;
        }
        self.write()
    }

    /// Starts a connection attempt: resolve the name, then connect to its addresses in
    /// turn (an attempt fails only when every address has failed).
    fn start_connect(&mut self) {
        let addr = &self.inner.addr;
        let resolved = (addr.host(), addr.port())
            .to_socket_addrs()
            .map(Iterator::collect::<VecDeque<SocketAddr>>);
        match resolved {
            Ok(a) if !a.is_empty() => self.untried = a,
            Ok(_) => {
                let e = io::Error::new(io::ErrorKind::NotFound, "the name has no address");
                return self.fail(Failure::Io(e));
            }
            Err(e) => return self.fail(Failure::Io(e)),
        }
        self.connect_next();
    }

    /// Non-blocking connect to the next untried address of this attempt, and register.
    fn connect_next(&mut self) {
        let Some(peer) = self.untried.pop_front() else {
            return;
        };
        let tls = match self.tls.as_ref().map(Connector::session).transpose() {
            Ok(tls) => tls,
            Err(error) => return self.fail(Failure::Tls { error, hint: None }),
        };
        let mut stream = match TcpStream::connect(peer) {
            Ok(s) => s,
            Err(e) => return self.fail(Failure::Io(e)),
        };
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            SOCKET,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            return self.fail(Failure::Io(e));
        }
        let now = Instant::now();
        self.conn = Some(Conn {
            stream,
            tls,
            peer,
            stage: Stage::Connecting,
            deadline: now + self.inner.config.connect_timeout,
            read_buf: BytesMut::with_capacity(READ_CHUNK),
            room: ReadRoom::new(READ_CHUNK),
            last_total: 0,
            decoder: ServerFrameDecoder::new(Limits::default()),
            read_pending: false,
            writing: VecDeque::new(),
            written: 0,
            write_blocked: false,
            pings: VecDeque::new(),
            acks_written: HashSet::new(),
            resend_written: VecDeque::new(),
            queries_written: HashSet::new(),
            last_read: now,
            last_ping: now,
            server_ping: Duration::MAX,
            epoch: 0,
            challenged: false,
            going_away: None,
        });
    }

    /// Reads what the socket has (up to the budget), then decodes and handles every
    /// whole frame. A fatal `ERROR` or the end of the stream ends the connection, after
    /// the frames before it were handled.
    fn read(&mut self) -> Result<(), Failure> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        conn.read_pending = false;
        // Room for as much as the last turn read (at most the budget), reserved at once:
        // a busy connection's buffer is not grown by doubling (and copying) every turn.
        conn.read_buf
            .reserve(conn.last_total.clamp(READ_CHUNK, READ_BUDGET));
        let mut total = 0;
        let mut end: Option<Failure> = None;
        loop {
            // Plain bytes go straight into the decode buffer; TLS records through the
            // scratch buffer, which the session decrypts from.
            let read = match conn.tls {
                None => conn
                    .room
                    .read_into(&mut conn.read_buf, |r| conn.stream.read(r)),
                Some(_) => conn.stream.read(&mut self.scratch),
            };
            match read {
                Ok(0) => {
                    end = Some(match &conn.tls {
                        Some(tls) if tls.is_handshaking() => Failure::Io(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the server closed the connection during the TLS handshake \
                             (is TLS on at the server? a plain-text port closes on a TLS hello)",
                        )),
                        _ => Failure::Eof,
                    });
                    break;
                }
                Ok(n) => {
                    total += n;
                    if let Some(tls) = conn.tls.as_mut() {
                        match tls.receive(&self.scratch[..n], &mut conn.read_buf) {
                            Ok(false) => {}
                            Ok(true) => {
                                // close_notify: the server ends the session cleanly.
                                end = Some(Failure::Eof);
                                break;
                            }
                            Err(error) => {
                                let hint = tls.hint(&error);
                                end = Some(Failure::Tls { error, hint });
                                break;
                            }
                        }
                    }
                    if total >= READ_BUDGET {
                        conn.read_pending = true;
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    end = Some(Failure::Io(e));
                    break;
                }
            }
        }
        if total > 0 {
            conn.last_read = Instant::now();
        }
        conn.last_total = total;
        let mut frames = VecDeque::new();
        let mut refused = Vec::new();
        loop {
            match conn.decoder.decode(&mut conn.read_buf) {
                Ok(Some(frame)) => frames.push_back(frame),
                Ok(None) => break,
                Err(binary::BinaryError::Refused { sid, reason, .. }) => {
                    // A well-formed MESSAGE whose content this client refuses (e.g. over
                    // its max payload): the frame was consumed; report it as dropped.
                    refused.push((sid, reason.to_string()));
                }
                Err(e) => {
                    // "INFO" read as a frame length: the NATS text port's greeting.
                    let text = match e {
                        binary::BinaryError::FrameTooLarge {
                            len: 0x494e_464f, ..
                        } if conn.stage != Stage::Ready => {
                            "the server does not speak Tern's binary protocol \
                             (is this the text port?)"
                                .to_string()
                        }
                        // A TLS record header (alert 0x15 or handshake 0x16, version 3.x)
                        // read as a frame length: the server wants TLS.
                        binary::BinaryError::FrameTooLarge { len, .. }
                            if conn.stage != Stage::Ready
                                && conn.tls.is_none()
                                && matches!(len >> 16, 0x1503 | 0x1603) =>
                        {
                            "the server answered in TLS: connect with TLS \
                             (a tls:// address, or ClientBuilder::tls)"
                                .to_string()
                        }
                        e => e.to_string(),
                    };
                    self.handle(&mut frames)?;
                    return Err(Failure::Protocol(text));
                }
            }
        }
        for (sid, reason) in refused {
            if let Some(sid) = sid {
                self.inner.events.emit(Event::Dropped {
                    sid,
                    count: 1,
                    ranges: Vec::new(),
                    source: DropSource::Client,
                });
            }
            self.inner.events.emit(Event::ServerError {
                code: ErrorCode::ProtocolViolation,
                sid,
                message: format!("the client refused a frame from the server: {reason}"),
                fatal: false,
            });
        }
        let handled = self.handle(&mut frames);
        // What a full lossless subscription could not take yet (`self.held` was empty:
        // nothing is read while frames are held).
        self.held = frames;
        handled?;
        match end {
            Some(failure) => Err(failure),
            None => Ok(()),
        }
    }

    /// Handles decoded frames, under one lock for the batch; events go out after it, and
    /// flushes complete after the events (a flush is a barrier for events too: whatever
    /// the server sent before its PONG is in the event queue when `flush` returns).
    ///
    /// Frames are taken from the front of `frames`; a message for a full lossless
    /// subscription stops the batch and is left there, first, with everything after it.
    fn handle(&mut self, frames: &mut VecDeque<ServerFrame>) -> Result<(), Failure> {
        if frames.is_empty() {
            return Ok(());
        }
        let inner = Arc::clone(&self.inner);
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        let mut emit = Vec::new();
        let mut flushed = Vec::new();
        let mut failure = None;
        let mut established = None;
        let mut state = inner.lock();
        while let Some(frame) = frames.pop_front() {
            if conn.stage != Stage::Ready {
                match frame {
                    ServerFrame::Welcome(w) => {
                        established = Some(welcome(&inner, conn, &mut state, w, &mut emit));
                    }
                    ServerFrame::Error(e) if e.fatal => {
                        failure = Some(server_failure(e));
                        break;
                    }
                    ServerFrame::Error(e) => emit.push(server_error_event(&e)),
                    ServerFrame::Ping => conn.writing.push_back(pong_frame()),
                    ServerFrame::Challenge(c) => match answer_challenge(&inner, conn, &c) {
                        Ok(frame) => conn.writing.push_back(frame),
                        Err(f) => {
                            failure = Some(f);
                            break;
                        }
                    },
                    other => {
                        failure = Some(Failure::Protocol(format!(
                            "expected WELCOME, got {}",
                            frame_name(&other)
                        )));
                        break;
                    }
                }
                continue;
            }
            match frame {
                ServerFrame::Message(m) => {
                    let sid = m.sid;
                    let Some(entry) = state.subs.get_mut(&sid) else {
                        continue; // A late delivery for a subscription that has ended.
                    };
                    if let Target::User { tx, .. } = &entry.target {
                        if entry.spec.lossless && tx.is_full() {
                            // Not seen yet (the tracker has not observed it): held with
                            // everything after it, or replayed after a reconnect.
                            frames.push_front(ServerFrame::Message(m));
                            break;
                        }
                    }
                    entry.tracker.observe(conn.epoch, m.shard, m.sequence);
                    let (shard, sequence) = (m.shard, m.sequence);
                    let mut done = false;
                    if let Some(left) = entry.remaining.as_mut() {
                        *left = left.saturating_sub(1);
                        done = *left == 0;
                    }
                    match &entry.target {
                        Target::User { tx, shared } => match tx.try_send(Message::from_frame(m)) {
                            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
                            Err(TrySendError::Full(_)) => {
                                shared
                                    .dropped
                                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                self.drops.entry(sid).or_default().add(shard, sequence);
                            }
                        },
                        Target::Inbox => {
                            let token = inbox_token(&inner.inbox_prefix, &m.subject);
                            if let Some(tx) = token.and_then(|t| state.requests.remove(&t)) {
                                let _ = tx.try_send(Message::from_frame(m));
                            }
                        }
                    }
                    if done {
                        state.end_sub(sid, SubEnd::Unsubscribed);
                    }
                }
                ServerFrame::PublishAck(ack) => {
                    if conn.acks_written.remove(&ack.ack_id) {
                        // Acks come in the order of their publishes: usually the first.
                        if let Some(i) = conn
                            .resend_written
                            .iter()
                            .position(|f| ack_id_of(f) == Some(ack.ack_id))
                        {
                            conn.resend_written.remove(i);
                        }
                    }
                    if let Some(tx) = state.acks.remove(&ack.ack_id) {
                        let result = match ack.result {
                            AckResult::Stored {
                                shard,
                                sequence,
                                duplicate,
                            } => Ok(Ack {
                                shard,
                                sequence,
                                duplicate,
                            }),
                            AckResult::Refused { code, message } => Err(Error::Refused {
                                code,
                                message: text(&message),
                            }),
                        };
                        let _ = tx.try_send(result);
                        if state.acks.is_empty() {
                            inner.changed.notify_all();
                        }
                    }
                }
                ServerFrame::Error(e) => {
                    if e.fatal {
                        emit.push(server_error_event(&e));
                        failure = Some(server_failure(e));
                        break;
                    }
                    match e.sid {
                        Some(sid) if e.code == ErrorCode::EpochMismatch => {
                            if let Some(entry) = state.subs.get_mut(&sid) {
                                entry.tracker.reset(conn.epoch);
                            }
                            emit.push(Event::EpochMismatch {
                                sid,
                                message: text(&e.message),
                            });
                        }
                        Some(sid) if e.code != ErrorCode::UnknownSubscription => {
                            // The subscription was refused: it is not active on the server.
                            state.end_sub(
                                sid,
                                SubEnd::Refused {
                                    code: e.code,
                                    message: text(&e.message),
                                },
                            );
                            emit.push(server_error_event(&e));
                        }
                        _ => emit.push(server_error_event(&e)),
                    }
                }
                ServerFrame::DropNotice(d) => {
                    if let Some(Target::User { shared, .. }) =
                        state.subs.get(&d.sid).map(|e| &e.target)
                    {
                        shared
                            .dropped
                            .fetch_add(d.dropped, std::sync::atomic::Ordering::Relaxed);
                    }
                    emit.push(Event::Dropped {
                        sid: d.sid,
                        count: d.dropped,
                        ranges: d.ranges,
                        source: DropSource::Server,
                    });
                }
                ServerFrame::GoAway(g) => {
                    let close_within = Duration::from_millis(u64::from(g.close_within_ms));
                    let reason = text(&g.reason);
                    let deadline = Instant::now() + close_within + GOAWAY_GRACE;
                    conn.going_away = Some((reason.clone(), deadline));
                    emit.push(Event::GoAway {
                        close_within,
                        reason,
                    });
                }
                ServerFrame::Subscribed(s) => {
                    if let Some(entry) = state.subs.get_mut(&s.sid) {
                        entry.tracker.start_at(s.epoch, &s.last_sequences);
                    }
                }
                ServerFrame::Presence(p) if p.query => {
                    let id = p.id;
                    // A page in several frames is answered with its last one; an answer
                    // whose caller gave up waiting is dropped.
                    if let Some(answer) = state.queries.get_mut(&id).and_then(|w| w.take(p)) {
                        if let Some(waiter) = state.queries.remove(&id) {
                            let _ = waiter.tx.try_send(answer);
                        }
                    }
                    if !state.queries.contains_key(&id) {
                        conn.queries_written.remove(&id);
                    }
                }
                ServerFrame::Presence(p) => {
                    let Some(entry) = state.subs.get_mut(&p.id) else {
                        continue; // A late frame for a subscription that has ended.
                    };
                    match &p.body {
                        PresenceBody::Joined { member_token, .. } => {
                            entry.member_token = Some(member_token.clone());
                        }
                        PresenceBody::Refused { code, message } => {
                            emit.push(Event::ServerError {
                                code: *code,
                                sid: Some(p.id),
                                message: text(message),
                                fatal: false,
                            });
                        }
                        _ => {}
                    }
                    if let Some(presence) = &entry.presence {
                        presence.apply(p);
                    }
                }
                ServerFrame::GapNotice(g) => emit.push(Event::Gap {
                    sid: g.sid,
                    shard: g.shard,
                    requested: g.requested,
                    oldest: g.oldest,
                }),
                ServerFrame::Ping => conn.writing.push_back(pong_frame()),
                ServerFrame::Pong => {
                    if let Some(Some(id)) = conn.pings.pop_front() {
                        flushed.extend(state.flushes.remove(&id));
                    }
                }
                ServerFrame::Welcome(_) => {
                    failure = Some(Failure::Protocol("a second WELCOME".to_string()));
                    break;
                }
                ServerFrame::Challenge(_) => {
                    failure = Some(Failure::Protocol("a CHALLENGE after WELCOME".to_string()));
                    break;
                }
            }
        }
        drop(state);
        let mut first = None;
        if let Some(info) = established {
            self.failures = 0;
            self.inner.changed.notify_all();
            match self.first.take() {
                Some(tx) => {
                    emit.insert(0, Event::Connected(info.clone()));
                    first = Some((tx, info));
                }
                None => emit.insert(0, Event::Reconnected(info)),
            }
        }
        for event in emit {
            self.inner.events.emit(event);
        }
        for tx in flushed {
            let _ = tx.try_send(Ok(()));
        }
        // After the events, so `Connected` is queued when `connect` returns.
        if let Some((tx, info)) = first {
            let _ = tx.send(Ok(info));
        }
        match failure {
            Some(f) => Err(f),
            None => Ok(()),
        }
    }

    /// Writes as much as the socket takes: the frames in hand, then (once ready) the
    /// outbox, until `WouldBlock` or nothing is left.
    ///
    /// With TLS, the records rustls has made go out first (handshake messages, frames
    /// encrypted earlier, alerts); then frames are encrypted into rustls's send buffer and
    /// count as written once rustls has taken them, as plain frames do once the kernel
    /// has: either way they are lost with the connection if it fails before they leave.
    fn write(&mut self) -> Result<(), Failure> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        if conn.stage == Stage::Connecting {
            return Ok(());
        }
        loop {
            if conn.writing.is_empty() && conn.stage == Stage::Ready {
                let mut state = self.inner.lock();
                if !state.outbox.is_empty() {
                    conn.writing = state.outbox.take_all();
                    drop(state);
                    self.inner.changed.notify_all();
                }
            }
            if conn.write_blocked {
                return Ok(());
            }
            if let Some(tls) = conn.tls.as_mut() {
                match tls.flush(&mut conn.stream) {
                    Ok(true) => {}
                    Ok(false) => {
                        conn.write_blocked = true;
                        return Ok(());
                    }
                    Err(e) => return Err(Failure::Io(e)),
                }
            }
            if conn.writing.is_empty() {
                return Ok(());
            }
            let result = {
                let mut slices = [IoSlice::new(&[]); WRITE_SLICES];
                let mut n = 0;
                for (i, frame) in conn.writing.iter().take(WRITE_SLICES).enumerate() {
                    let from = if i == 0 { conn.written } else { 0 };
                    slices[i] = IoSlice::new(&frame.bytes[from..]);
                    n += 1;
                }
                match conn.tls.as_mut() {
                    Some(tls) => tls.send(&slices[..n]),
                    None => conn.stream.write_vectored(&slices[..n]),
                }
            };
            match result {
                // rustls holds at most its limit of plaintext until the handshake is done
                // (only the preface and HELLO are written before then): the rest waits.
                Ok(0) if conn.tls.is_some() => return Ok(()),
                Ok(0) => return Err(Failure::Io(io::ErrorKind::WriteZero.into())),
                Ok(mut n) => {
                    while n > 0 {
                        let Some(front) = conn.writing.front() else {
                            break;
                        };
                        let left = front.bytes.len() - conn.written;
                        if n < left {
                            conn.written += n;
                            break;
                        }
                        n -= left;
                        conn.written = 0;
                        if let Some(frame) = conn.writing.pop_front() {
                            match frame.kind {
                                FrameKind::Publish {
                                    ack_id: Some(id),
                                    resend,
                                } => {
                                    conn.acks_written.insert(id);
                                    if resend {
                                        conn.resend_written.push_back(frame);
                                    }
                                }
                                FrameKind::Ping { flush_id } => conn.pings.push_back(flush_id),
                                FrameKind::PresenceQuery { id } => {
                                    conn.queries_written.insert(id);
                                }
                                FrameKind::Publish { ack_id: None, .. } | FrameKind::Control => {}
                            }
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.write_blocked = true;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Failure::Io(e)),
            }
        }
    }

    /// Connect and handshake deadlines, heartbeats, and the next reconnect attempt.
    fn timers(&mut self) {
        let now = Instant::now();
        let config = &self.inner.config;
        let Some(conn) = self.conn.as_mut() else {
            if self.retry_at.is_some_and(|at| now >= at) {
                self.retry_at = None;
                self.start_connect();
            }
            return;
        };
        match conn.stage {
            Stage::Connecting | Stage::Handshake => {
                if now >= conn.deadline {
                    let limit = config.connect_timeout;
                    self.fail(Failure::Timeout(limit));
                }
            }
            Stage::Ready => {
                if !self.held.is_empty() {
                    // Not reading by choice (a lossless subscription is full): the
                    // server's silence means nothing until the application catches up.
                    conn.last_read = now;
                    // But the server cannot hear this client's answers to its pings
                    // either, and would close it as stale: a `PING` of its own now and then
                    // tells the server it is alive (the `PONG`s wait unread, a few bytes
                    // each).
                    let every = config.ping_interval.min(conn.server_ping) / 2;
                    if now.saturating_duration_since(conn.last_ping) >= every {
                        conn.last_ping = now;
                        conn.writing.push_back(ping_frame(None));
                        if let Err(f) = self.write() {
                            self.fail(f);
                        }
                        return;
                    }
                }
                let silence = now.saturating_duration_since(conn.last_read);
                if conn
                    .going_away
                    .as_ref()
                    .is_some_and(|(_, deadline)| now >= *deadline)
                {
                    self.fail(Failure::GoneAway);
                } else if silence >= config.server_timeout {
                    self.fail(Failure::Heartbeat(silence));
                } else if silence >= config.ping_interval
                    && now.saturating_duration_since(conn.last_ping) >= config.ping_interval
                {
                    conn.last_ping = now;
                    conn.writing.push_back(ping_frame(None));
                    if let Err(f) = self.write() {
                        self.fail(f);
                    }
                }
            }
        }
    }

    /// Ends the current connection or attempt: requeues what was not written, answers
    /// the waiters whose answer can no longer come, reports, and schedules the next
    /// attempt (or gives up).
    fn fail(&mut self, failure: Failure) {
        // Frames of the lost connection not handled yet: the subscriptions resume from
        // before their messages, and the rest belonged to that connection.
        self.held.clear();
        let was_ready = self.conn.as_ref().is_some_and(|c| c.stage == Stage::Ready);
        // After a GOAWAY, the end of the connection is the one announced (unless the server
        // said why with a fatal error): not a failure, and no reason to wait to reconnect.
        let announced = match &failure {
            Failure::Server { .. } | Failure::Protocol(_) => None,
            _ => self
                .conn
                .as_ref()
                .and_then(|c| c.going_away.as_ref())
                .map(|(reason, _)| reason.clone()),
        };
        let connecting = self
            .conn
            .as_ref()
            .is_none_or(|c| c.stage == Stage::Connecting);
        if connecting && !self.untried.is_empty() && self.inner.lock().phase != Phase::Closed {
            // This address refused or timed out: the attempt goes on with the next one.
            if let Some(mut conn) = self.conn.take() {
                let _ = self.poll.registry().deregister(&mut conn.stream);
            }
            self.connect_next();
            return;
        }
        self.untried.clear();
        if let Some(mut conn) = self.conn.take() {
            let _ = self.poll.registry().deregister(&mut conn.stream);
            if let Some(tls) = conn
                .tls
                .as_mut()
                .filter(|_| conn.stage != Stage::Connecting)
            {
                // The client ends a session that is still sound (heartbeat, GOAWAY deadline,
                // a bad frame) with close_notify; after a TLS failure rustls has queued its
                // alert instead. Either goes out if the socket takes it now.
                if !matches!(failure, Failure::Tls { .. } | Failure::Eof | Failure::Io(_)) {
                    tls.close();
                }
                let _ = tls.flush(&mut conn.stream);
            }
            let _ = conn.stream.shutdown(Shutdown::Both);
            let mut state = self.inner.lock();
            if state.phase == Phase::Connected {
                state.phase = Phase::Disconnected;
            }
            // A partly written frame goes back whole: the server never received all of
            // it, and the connection it was on is gone.
            state.outbox.requeue_front(conn.writing);
            // Identified publishes written and not acknowledged, whose callers still wait,
            // go in front of that, in the order they were written: the broker deduplicates
            // by message id, so sending one again is safe (its ack then says `duplicate`
            // if the first copy got there). What the offline buffer bound leaves out is
            // answered `Disconnected` below, like a publish without a message id.
            // (Only when there will be a next connection: a client that gives up now
            // answers them `Disconnected`, not `Closed`.)
            let reconnects = self.first.is_none() && self.inner.config.reconnect.allows(0);
            let waiting: Vec<OutFrame> = conn
                .resend_written
                .into_iter()
                .filter(|_| reconnects)
                .filter(|f| ack_id_of(f).is_some_and(|id| state.acks.contains_key(&id)))
                .collect();
            let mut resent: HashSet<u64> = waiting.iter().filter_map(ack_id_of).collect();
            let limit = self.inner.config.offline_buffer_bytes;
            for frame in state.outbox.resend_front(waiting, limit) {
                if let Some(id) = ack_id_of(&frame) {
                    resent.remove(&id);
                }
            }
            conn.acks_written.retain(|id| !resent.contains(id));
            for id in conn.pings.into_iter().flatten() {
                if let Some(tx) = state.flushes.remove(&id) {
                    let _ = tx.try_send(Err(Error::Disconnected));
                }
            }
            for id in conn.acks_written {
                if let Some(tx) = state.acks.remove(&id) {
                    let _ = tx.try_send(Err(Error::Disconnected));
                }
            }
            for id in conn.queries_written {
                if let Some(waiter) = state.queries.remove(&id) {
                    let _ = waiter.tx.try_send(Err(Error::Disconnected));
                }
            }
            drop(state);
            self.inner.changed.notify_all();
        }
        if let Some(first) = self.first.take() {
            let error = failure.into_connect_error(&self.inner.addr.to_string());
            let reason = error.to_string();
            let _ = first.send(Err(error));
            self.inner.close(&reason);
            return;
        }
        if self.inner.lock().phase == Phase::Closed {
            return;
        }
        let reason = match announced.clone() {
            Some(reason) => DisconnectReason::GoingAway { reason },
            None => failure.reason(),
        };
        if was_ready {
            self.failures = 0;
            self.inner.events.emit(Event::Disconnected {
                reason: reason.clone(),
            });
        } else {
            self.failures = self.failures.saturating_add(1);
        }
        let policy = self.inner.config.reconnect;
        if !policy.allows(self.failures) {
            self.give_up(&format!(
                "gave up reconnecting after {} failed attempts; last: {reason}",
                self.failures
            ));
            return;
        }
        let delay = if announced.is_some() {
            Duration::ZERO
        } else {
            policy.delay(self.failures, &mut self.rng)
        };
        if !was_ready {
            self.inner.events.emit(Event::ReconnectFailed {
                attempt: self.failures,
                error: reason.to_string(),
                retry_in: delay,
            });
        }
        self.retry_at = Some(Instant::now() + delay);
    }

    /// Closes the client because it cannot go on; says what buffered data is discarded.
    fn give_up(&mut self, why: &str) {
        let buffered = self.inner.lock().outbox.bytes();
        let reason = if buffered > 0 {
            format!("{why} ({buffered} buffered bytes of publishes discarded)")
        } else {
            why.to_string()
        };
        self.inner.close(&reason);
    }

    /// Reports the messages dropped locally in this turn, one event per subscription.
    fn report_drops(&mut self) {
        for (sid, tally) in std::mem::take(&mut self.drops) {
            self.inner.events.emit(Event::Dropped {
                sid,
                count: tally.count,
                ranges: tally.ranges,
                source: DropSource::Client,
            });
        }
    }

    /// After a close: writes what is still buffered, for at most the linger time, then
    /// closes the socket.
    fn linger(&mut self) {
        let deadline = Instant::now() + self.inner.config.linger;
        loop {
            let Some(conn) = self.conn.as_ref() else {
                return;
            };
            if conn.stage != Stage::Ready {
                break;
            }
            if let Err(_failure) = self.write() {
                break;
            }
            let written = self.conn.as_ref().is_none_or(|c| {
                c.writing.is_empty() && !c.tls.as_ref().is_some_and(TlsSession::wants_write)
            });
            if written && self.inner.lock().outbox.is_empty() {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if self
                .poll
                .poll(&mut self.events, Some(deadline - now))
                .is_err()
            {
                break;
            }
            let writable = self
                .events
                .iter()
                .any(|e| e.token() == SOCKET && (e.is_writable() || e.is_error()));
            if writable {
                if let Some(conn) = self.conn.as_mut() {
                    conn.write_blocked = false;
                }
            }
        }
        if let Some(mut conn) = self.conn.take() {
            if let Some(tls) = conn
                .tls
                .as_mut()
                .filter(|_| conn.stage != Stage::Connecting)
            {
                // A clean end of the session, sent if the socket takes it now.
                tls.close();
                let _ = tls.flush(&mut conn.stream);
            }
            let _ = self.poll.registry().deregister(&mut conn.stream);
            let _ = conn.stream.shutdown(Shutdown::Both);
        }
    }
}

/// The `HELLO` frame: the client's name, library version, options and credentials (the
/// latest token: a refresh made before this connection is the one sent).
fn hello(inner: &Inner) -> Result<OutFrame, Failure> {
    let config = &inner.config;
    let auth = &inner.auth;
    let secret = |s: &crate::auth::Secret| Bytes::copy_from_slice(s.expose().as_bytes());
    let token = inner.lock().token.as_ref().map(secret);
    let frame = ClientFrame::Hello(Hello {
        client_name: Bytes::from(config.name.clone()),
        client_version: Bytes::from(concat!("tern-client/", env!("CARGO_PKG_VERSION"))),
        echo: config.echo,
        auth_token: token,
        user: auth.user_pass.as_ref().map(|(u, _)| Bytes::from(u.clone())),
        pass: auth.user_pass.as_ref().map(|(_, p)| secret(p)),
        nkey: auth.public_nkey().map(Bytes::from),
        // A request nobody receives is answered at once (`Error::NoResponders`) instead of
        // timing out.
        no_responders: true,
    });
    encode(&frame)
        .map(OutFrame::control)
        .map_err(|e| Failure::Protocol(format!("cannot encode HELLO: {e}")))
}

/// The `AUTH` answering a `CHALLENGE`: its nonce signed with the nkey's seed. The server
/// asks only a client whose `HELLO` carried an nkey, and only once per connection.
fn answer_challenge(inner: &Inner, conn: &mut Conn, c: &Challenge) -> Result<OutFrame, Failure> {
    if std::mem::replace(&mut conn.challenged, true) {
        return Err(Failure::Protocol("a second CHALLENGE".to_string()));
    }
    let signature = match inner.auth.sign(&c.nonce) {
        None => {
            return Err(Failure::Protocol(
                "a CHALLENGE, but this client sent no nkey (configure nkey_seed or \
                 credentials_file)"
                    .to_string(),
            ))
        }
        Some(Err(e)) => return Err(Failure::Protocol(format!("cannot sign the nonce: {e}"))),
        Some(Ok(signature)) => signature,
    };
    encode(&ClientFrame::Auth(Auth {
        token: None,
        signature: Some(Bytes::from(signature)),
    }))
    .map(OutFrame::control)
    .map_err(|e| Failure::Protocol(format!("cannot encode AUTH: {e}")))
}

/// The handshake's end: records the server, re-sends every live subscription (in sid
/// order, with resume tokens where messages were seen) ahead of the outbox, and opens the
/// outbox to the socket.
fn welcome(
    inner: &Inner,
    conn: &mut Conn,
    state: &mut crate::shared::State,
    w: binary::Welcome,
    emit: &mut Vec<Event>,
) -> ServerInfo {
    let info = ServerInfo {
        addr: conn.peer,
        version: w.version,
        shard_count: w.shard_count,
        max_payload: w.max_payload as usize,
        max_frame: w.max_frame as usize,
        ping_interval: Duration::from_millis(u64::from(w.ping_interval_ms)),
        client_id: w.client_id,
        log_epoch: w.log_epoch,
        server_id: text(&w.server_id),
    };
    conn.epoch = w.log_epoch;
    conn.decoder = ServerFrameDecoder::new(Limits {
        max_payload: info.max_payload,
        ..Limits::default()
    });
    inner
        .max_payload
        .store(info.max_payload, std::sync::atomic::Ordering::Relaxed);
    let mut refused = Vec::new();
    for (&sid, entry) in &state.subs {
        if entry.draining {
            continue;
        }
        match entry.subscribe_frame(sid) {
            Ok(frame) => conn.writing.push_back(frame),
            Err(e) => {
                refused.push((sid, e.to_string()));
                continue;
            }
        }
        if let Some(left) = entry.remaining {
            conn.writing
                .push_back(crate::shared::unsubscribe_frame(sid, Some(left)));
        }
    }
    for (sid, message) in refused {
        state.end_sub(
            sid,
            SubEnd::Refused {
                code: ErrorCode::InvalidOption,
                message: message.clone(),
            },
        );
        emit.push(Event::ServerError {
            code: ErrorCode::InvalidOption,
            sid: Some(sid),
            message,
            fatal: false,
        });
    }
    state.server = Some(info.clone());
    state.phase = Phase::Connected;
    conn.stage = Stage::Ready;
    let now = Instant::now();
    conn.last_read = now;
    conn.last_ping = now;
    if !info.ping_interval.is_zero() {
        conn.server_ping = info.ping_interval;
    }
    info
}

/// The ack id a publish frame asked for.
fn ack_id_of(frame: &OutFrame) -> Option<u64> {
    match frame.kind {
        FrameKind::Publish { ack_id, .. } => ack_id,
        _ => None,
    }
}

fn server_failure(e: ErrorFrame) -> Failure {
    Failure::Server {
        code: e.code,
        message: text(&e.message),
    }
}

fn server_error_event(e: &ErrorFrame) -> Event {
    Event::ServerError {
        code: e.code,
        sid: e.sid,
        message: text(&e.message),
        fatal: e.fatal,
    }
}

fn frame_name(frame: &ServerFrame) -> &'static str {
    match frame {
        ServerFrame::Welcome(_) => "WELCOME",
        ServerFrame::Message(_) => "MESSAGE",
        ServerFrame::PublishAck(_) => "PUBLISH_ACK",
        ServerFrame::Error(_) => "ERROR",
        ServerFrame::DropNotice(_) => "DROP_NOTICE",
        ServerFrame::GapNotice(_) => "GAP_NOTICE",
        ServerFrame::GoAway(_) => "GOAWAY",
        ServerFrame::Subscribed(_) => "SUBSCRIBED",
        ServerFrame::Challenge(_) => "CHALLENGE",
        ServerFrame::Presence(_) => "PRESENCE",
        ServerFrame::Ping => "PING",
        ServerFrame::Pong => "PONG",
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The request token of a reply subject `<prefix>.<token>`.
fn inbox_token(prefix: &str, subject: &[u8]) -> Option<u64> {
    let rest = subject
        .strip_prefix(prefix.as_bytes())?
        .strip_prefix(b".")?;
    std::str::from_utf8(rest).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_drops_merge_into_ranges() {
        let mut t = DropTally::default();
        for seq in [5, 6, 7, 9] {
            t.add(0, seq);
        }
        t.add(1, 8);
        t.add(0, 10);
        assert_eq!(t.count, 6);
        let r: Vec<(u16, u64, u64)> = t
            .ranges
            .iter()
            .map(|r| (r.shard, r.first, r.last))
            .collect();
        assert_eq!(r, [(0, 5, 7), (0, 9, 10), (1, 8, 8)]);
    }

    #[test]
    fn local_drop_ranges_are_bounded() {
        let mut t = DropTally::default();
        for seq in 0..(MAX_DROP_RANGES as u64 * 2) {
            t.add(0, seq * 2);
        }
        assert_eq!(t.count, MAX_DROP_RANGES as u64 * 2);
        assert_eq!(t.ranges.len(), MAX_DROP_RANGES);
    }

    #[test]
    fn inbox_tokens() {
        assert_eq!(inbox_token("_INBOX.ab", b"_INBOX.ab.17"), Some(17));
        assert_eq!(inbox_token("_INBOX.ab", b"_INBOX.abc.17"), None);
        assert_eq!(inbox_token("_INBOX.ab", b"_INBOX.ab.x"), None);
        assert_eq!(inbox_token("_INBOX.ab", b"other"), None);
    }
}
