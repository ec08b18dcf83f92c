//! One client connection on the text (NATS) port.
//!
//! Owns: the socket, its read buffer and decoder, its outbound queue, the options the client
//! sent in `CONNECT`, its subscriptions (by sid), and its ping state. Applies each client
//! operation, one method per operation: `connect`, `publish`, `subscribe`, `unsubscribe`,
//! `ping`, `pong`. Turns each delivery addressed to it into `MSG`/`HMSG` bytes.
//!
//! Contract: the worker calls [`Conn::read`] when the socket is readable (edge triggered:
//! until it reports [`ReadState::Drained`]), [`Conn::deliver`] for each delivery,
//! [`Conn::flush`] when it has output, [`Conn::tick`] on the ping timer, and
//! [`Conn::unsubscribe_all`] before dropping it. A connection that must go sets `closing`;
//! the worker closes it at the end of the loop turn.
//!
//! Never: reads another connection's state, or blocks.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use mio::net::TcpStream;
use slab::Slab;
use tern_protocol::text::{
    encode_msg_line, encode_server_op, ClientDecoder, ClientOp, ConnectOptions, DecodeError,
    Publish, ServerOp, Subscribe,
};

use crate::config::Limits;
use crate::index::FnvMap;
use crate::latency::Latency;
use crate::mesh::{ConnId, Msg, SubRef};
use crate::outbound::Outbound;
use crate::router::Router;
use crate::snapshot::{ConnInfo, WallClock};
use crate::stats::{bump, unbump, CloseKind, WorkerStats};

/// Bytes read from a socket per `read` call.
const READ_CHUNK: usize = 64 * 1024;

/// Why a connection was closed. Reported in logs (and later in monitoring).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CloseReason {
    ClientClosed,
    /// The client sent something the protocol does not allow; the text is what it was told.
    ProtocolError(String),
    SlowConsumer,
    StaleConnection,
    Io(String),
    ServerShutdown,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::ClientClosed => f.write_str("client closed"),
            CloseReason::ProtocolError(e) => write!(f, "protocol error: {e}"),
            CloseReason::SlowConsumer => f.write_str("slow consumer"),
            CloseReason::StaleConnection => f.write_str("stale connection"),
            CloseReason::Io(e) => write!(f, "i/o error: {e}"),
            CloseReason::ServerShutdown => f.write_str("server shutdown"),
        }
    }
}

impl CloseReason {
    /// The reason without its detail, for the per-reason counters.
    pub fn kind(&self) -> CloseKind {
        match self {
            CloseReason::ClientClosed => CloseKind::ClientClosed,
            CloseReason::ProtocolError(_) => CloseKind::ProtocolError,
            CloseReason::SlowConsumer => CloseKind::SlowConsumer,
            CloseReason::StaleConnection => CloseKind::StaleConnection,
            CloseReason::Io(_) => CloseKind::IoError,
            CloseReason::ServerShutdown => CloseKind::ServerShutdown,
        }
    }
}

/// What a read pass ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadState {
    /// The socket returned `WouldBlock`: wait for the next readable event.
    Drained,
    /// The per-turn budget ran out first: read again next turn.
    More,
    /// The connection is closing.
    Closed,
}

/// A subscription of this connection.
#[derive(Debug)]
struct SubState {
    sid: Bytes,
    filter: Bytes,
    id: u64,
    /// Auto-unsubscribe after this many deliveries (`UNSUB <sid> <max>`).
    max: Option<u64>,
    delivered: u64,
}

pub(crate) struct Conn {
    pub id: ConnId,
    pub client_id: u64,
    pub peer: SocketAddr,
    pub sock: TcpStream,
    rbuf: BytesMut,
    decoder: ClientDecoder,
    pub out: Outbound,
    opts: ConnectOptions,
    subs: Slab<SubState>,
    sids: FnvMap<Bytes, usize>,
    /// When the client last sent anything.
    last_activity: Instant,
    last_ping: Instant,
    pings_out: u32,
    /// Set when the connection must close; the worker closes it at the end of the turn.
    pub closing: Option<CloseReason>,
    /// Bookkeeping for the worker's lists (so a connection is listed once).
    pub listed_read: bool,
    pub listed_write: bool,
    /// A write hit `WouldBlock`: wait for the writable event before trying again.
    pub write_blocked: bool,
    /// A `PING` waits for this worker's own deliveries to be queued first (see `ping`).
    ping_deferred: bool,
    /// When the connection was accepted.
    started: Instant,
    /// This connection's own traffic, for `/connz` (plain integers: only its worker
    /// touches them). `in_*`: what it published; `out_*`: deliveries queued to it;
    /// `dropped`: deliveries queued to it and never written.
    in_msgs: u64,
    in_bytes: u64,
    out_msgs: u64,
    out_bytes: u64,
    dropped: u64,
}

impl Conn {
    pub fn new(
        id: ConnId,
        client_id: u64,
        peer: SocketAddr,
        sock: TcpStream,
        limits: &Limits,
        now: Instant,
    ) -> Conn {
        Conn {
            id,
            client_id,
            peer,
            sock,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            decoder: ClientDecoder::new(limits.text()),
            out: Outbound::default(),
            opts: ConnectOptions::default(),
            subs: Slab::new(),
            sids: FnvMap::default(),
            last_activity: now,
            last_ping: now,
            pings_out: 0,
            closing: None,
            listed_read: false,
            listed_write: false,
            write_blocked: false,
            ping_deferred: false,
            started: now,
            in_msgs: 0,
            in_bytes: 0,
            out_msgs: 0,
            out_bytes: 0,
            dropped: 0,
        }
    }

    /// What `/connz` shows about this connection. Allocates: monitoring only.
    pub fn info(&self, worker: usize, clock: &WallClock, with_subs: bool) -> ConnInfo {
        ConnInfo {
            cid: self.client_id,
            worker,
            protocol: "text",
            ip: self.peer.ip().to_string(),
            port: self.peer.port(),
            name: self.opts.name.clone(),
            lang: self.opts.lang.clone(),
            version: self.opts.version.clone(),
            start_us: clock.unix_us(self.started),
            last_activity_us: clock.unix_us(self.last_activity),
            stop_us: None,
            reason: None,
            subscriptions: self.subs.len(),
            subscriptions_list: if with_subs {
                self.subs
                    .iter()
                    .map(|(_, s)| String::from_utf8_lossy(&s.filter).into_owned())
                    .collect()
            } else {
                Vec::new()
            },
            in_msgs: self.in_msgs,
            in_bytes: self.in_bytes,
            out_msgs: self.out_msgs,
            out_bytes: self.out_bytes,
            pending_bytes: self.out.len(),
            pending_msgs: self.out.queued_msgs(),
            dropped_msgs: self.dropped,
        }
    }

    /// Drops everything queued for the client, counting the deliveries that never went
    /// out.
    pub fn discard_output(&mut self, stats: &WorkerStats) {
        let dropped = self.out.discard() as u64;
        self.dropped += dropped;
        bump(&stats.msgs_dropped, dropped);
    }

    /// The name the client gave in `CONNECT`, if any.
    pub fn name(&self) -> Option<&str> {
        self.opts.name.as_deref()
    }

    /// Queues a server operation (`INFO`, `+OK`, `-ERR`, `PING`, `PONG`).
    pub fn send(&mut self, op: &ServerOp) {
        let before = self.out.tail().len();
        encode_server_op(op, self.out.tail());
        self.out.commit(before);
    }

    /// Reads what the socket has, up to `budget` bytes, and applies every whole operation.
    ///
    /// Returns early with [`ReadState::More`] and [`Conn::ping_waits`] true when a `PING`
    /// must wait for this worker's own deliveries: the worker queues them, then calls `read`
    /// again, which answers the `PING` and carries on where it stopped.
    pub fn read(&mut self, router: &mut Router, budget: usize, now: Instant) -> ReadState {
        if self.ping_deferred {
            self.ping_deferred = false;
            self.send(&ServerOp::Pong);
            self.apply_buffered(router);
        }
        let mut taken = 0;
        while self.closing.is_none() {
            if taken >= budget || self.ping_deferred {
                return ReadState::More;
            }
            match self.read_some() {
                Ok(0) => {
                    self.closing = Some(CloseReason::ClientClosed);
                    break;
                }
                Ok(n) => {
                    taken += n;
                    self.last_activity = now;
                    router.sync_inbox();
                    self.apply_buffered(router);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadState::Drained,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.closing = Some(CloseReason::Io(e.to_string()));
                }
            }
        }
        ReadState::Closed
    }

    /// One `read` into the spare capacity of the read buffer.
    fn read_some(&mut self) -> io::Result<usize> {
        let want = READ_CHUNK.max(self.decoder.bytes_needed().unwrap_or(0));
        self.rbuf.reserve(want);
        let spare = self.rbuf.spare_capacity_mut();
        // SAFETY: `read(2)` writes at most `spare.len()` bytes into the buffer, which is
        // valid for writes of that length (it is the buffer's own spare capacity), and never
        // reads from it, so handing it uninitialised memory is sound. The `n` bytes it
        // reports written are initialised, which is what `set_len` requires.
        let n = unsafe {
            libc::read(
                self.sock.as_raw_fd(),
                spare.as_mut_ptr().cast::<libc::c_void>(),
                spare.len(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        // SAFETY: see above; `n <= spare.len()`.
        unsafe { self.rbuf.set_len(self.rbuf.len() + n) };
        Ok(n)
    }

    /// True when a `PING` waits for the worker's own deliveries (see [`Conn::read`]).
    pub fn ping_waits(&self) -> bool {
        self.ping_deferred && self.closing.is_none()
    }

    /// Decodes and applies every whole operation in the read buffer (up to a deferred
    /// `PING`).
    fn apply_buffered(&mut self, router: &mut Router) {
        while self.closing.is_none() && !self.ping_deferred {
            match self.decoder.decode(&mut self.rbuf) {
                Ok(Some(op)) => self.apply(op, router),
                Ok(None) => return,
                Err(e) => self.protocol_error(&e, router),
            }
        }
    }

    fn protocol_error(&mut self, e: &DecodeError, router: &mut Router) {
        bump(&router.stats.protocol_errors, 1);
        let text = e.to_string();
        self.send(&ServerOp::Err(text.clone()));
        if e.is_fatal() {
            self.closing = Some(CloseReason::ProtocolError(text));
        }
    }

    fn apply(&mut self, op: ClientOp, router: &mut Router) {
        let ack = !matches!(op, ClientOp::Ping | ClientOp::Pong);
        match op {
            ClientOp::Connect(opts) => self.connect(*opts, router),
            ClientOp::Pub(p) => self.publish(p, router),
            ClientOp::Sub(s) => self.subscribe(s, router),
            ClientOp::Unsub { sid, max } => self.unsubscribe(&sid, max, router),
            ClientOp::Ping => self.ping(router),
            ClientOp::Pong => self.pong(),
        }
        if ack && self.opts.verbose && self.closing.is_none() {
            self.send(&ServerOp::Ok);
        }
    }

    fn connect(&mut self, opts: ConnectOptions, router: &mut Router) {
        if opts.no_responders && !opts.headers {
            bump(&router.stats.protocol_errors, 1);
            let text = "no responders requires headers support".to_string();
            self.send(&ServerOp::Err(text.clone()));
            self.closing = Some(CloseReason::ProtocolError(text));
            return;
        }
        self.opts = opts;
    }

    fn publish(&mut self, p: Publish, router: &mut Router) {
        let size = p.payload.len() + p.headers.as_ref().map_or(0, Bytes::len);
        bump(&router.stats.msgs_in, 1);
        bump(&router.stats.bytes_in, size as u64);
        self.in_msgs += 1;
        self.in_bytes += size as u64;
        router.publish(Arc::new(Msg {
            subject: p.subject,
            reply: p.reply,
            headers: p.headers,
            payload: p.payload,
            origin: self.id,
            no_echo: !self.opts.echo,
            no_responders: self.opts.no_responders,
            origin_only: false,
            // The loop turn in which these bytes were read.
            received: self.last_activity,
        }));
    }

    fn subscribe(&mut self, s: Subscribe, router: &mut Router) {
        if self.sids.contains_key(&s.sid) {
            // As nats-server does: a second SUB with a sid in use changes nothing.
            return;
        }
        let id = router.next_sub_id();
        let key = self.subs.insert(SubState {
            sid: s.sid.clone(),
            filter: s.subject.clone(),
            id,
            max: None,
            delivered: 0,
        });
        self.sids.insert(s.sid, key);
        bump(&router.stats.subscriptions, 1);
        let sub = SubRef {
            conn: self.id,
            key: key as u32,
            id,
        };
        router.subscribe(&s.subject, s.queue.as_ref(), sub);
    }

    fn unsubscribe(&mut self, sid: &[u8], max: Option<u64>, router: &mut Router) {
        let Some(&key) = self.sids.get(sid) else {
            // Unknown sids are ignored, as nats-server does.
            return;
        };
        let sub = &mut self.subs[key];
        match max {
            Some(max) if sub.delivered < max => sub.max = Some(max),
            _ => self.remove_sub(key, router),
        }
    }

    /// Clients use `PING`/`PONG` as a barrier: once `PONG` arrives, what they sent before
    /// has been processed. nats-server also queues a publisher's own deliveries (the
    /// messages it sent to subjects it subscribes to) before the `PONG`; deliveries this
    /// worker routed to itself are still in its outbox at this point, so the `PONG` waits
    /// until the worker has queued them.
    fn ping(&mut self, router: &mut Router) {
        if router.outbox.has_local() {
            self.ping_deferred = true;
        } else {
            self.send(&ServerOp::Pong);
        }
    }

    fn pong(&mut self) {
        self.pings_out = 0;
    }

    fn remove_sub(&mut self, key: usize, router: &mut Router) {
        let sub = self.subs.remove(key);
        self.sids.remove(&sub.sid);
        unbump(&router.stats.subscriptions, 1);
        let sref = SubRef {
            conn: self.id,
            key: key as u32,
            id: sub.id,
        };
        router.unsubscribe(&sub.filter, sref);
    }

    /// Removes every subscription from the shards. Called once, before the connection is
    /// dropped.
    pub fn unsubscribe_all(&mut self, router: &mut Router) {
        let keys: Vec<usize> = self.subs.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.remove_sub(key, router);
        }
    }

    /// Queues one delivery. Returns false when the delivery was stale (the subscription or
    /// the connection is gone) and nothing was queued.
    pub fn deliver(&mut self, sref: SubRef, msg: &Msg, router: &mut Router) -> bool {
        if self.closing.is_some() {
            return false;
        }
        let Some(sub) = self.subs.get_mut(sref.key as usize) else {
            return false;
        };
        if sub.id != sref.id {
            return false;
        }
        let headers = if self.opts.headers {
            msg.headers.as_ref()
        } else {
            None
        };
        let size = msg.payload.len() + headers.map_or(0, Bytes::len);
        let before = self.out.tail().len();
        encode_msg_line(
            self.out.tail(),
            &msg.subject,
            &sub.sid,
            msg.reply.as_deref(),
            headers.map(Bytes::len),
            msg.payload.len(),
        );
        self.out.commit(before);
        if let Some(h) = headers {
            self.out.push_bytes(h);
        }
        self.out.push_bytes(&msg.payload);
        let before = self.out.tail().len();
        self.out.tail().extend_from_slice(b"\r\n");
        self.out.commit(before);
        self.out.mark(msg.received);
        sub.delivered += 1;
        self.out_msgs += 1;
        self.out_bytes += size as u64;
        bump(&router.stats.msgs_out, 1);
        bump(&router.stats.bytes_out, size as u64);
        if sub.max.is_some_and(|max| sub.delivered >= max) {
            self.remove_sub(sref.key as usize, router);
        }
        if self.out.len() > router.config.limits.max_pending {
            // One loop turn can queue a burst bigger than the limit for a client that
            // reads fast: let the socket take what it can before judging. (Latency marks
            // of what this writes are recorded at the next flush.)
            // A write error shows up again at the worker's flush, which closes the
            // connection.
            if !self.write_blocked && self.out.write_to(&mut self.sock).is_ok() {
                self.write_blocked = !self.out.is_empty();
            }
            if self.out.len() > router.config.limits.max_pending {
                self.slow_consumer(router);
            }
        }
        true
    }

    /// The outbound queue overflowed: drop what is queued, say why, and close.
    fn slow_consumer(&mut self, router: &mut Router) {
        bump(&router.stats.slow_consumers, 1);
        self.discard_output(&router.stats);
        self.send(&ServerOp::Err("Slow Consumer".to_string()));
        self.closing = Some(CloseReason::SlowConsumer);
    }

    /// Writes what is queued, as far as the socket takes it, and records the broker
    /// latency of every delivery whose last byte went out.
    pub fn flush(&mut self, latency: &mut Latency, stats: &WorkerStats) {
        if self.write_blocked || self.out.is_empty() {
            return;
        }
        match self.out.write_to(&mut self.sock) {
            Ok(n) => {
                if n > 0 {
                    let now = Instant::now();
                    self.out
                        .pop_written(|received| latency.record(now.duration_since(received)));
                }
                self.write_blocked = !self.out.is_empty();
            }
            Err(e) => {
                self.discard_output(stats);
                if self.closing.is_none() {
                    self.closing = Some(CloseReason::Io(e.to_string()));
                }
            }
        }
    }

    /// The ping timer: pings a client silent for `ping_interval`, and closes one that left
    /// `ping_max` pings unanswered.
    pub fn tick(&mut self, now: Instant, limits: &Limits, router: &mut Router) {
        if self.closing.is_some()
            || now.duration_since(self.last_activity) < limits.ping_interval
            || now.duration_since(self.last_ping) < limits.ping_interval
        {
            return;
        }
        if self.pings_out >= limits.ping_max {
            bump(&router.stats.stale_connections, 1);
            self.send(&ServerOp::Err("Stale Connection".to_string()));
            self.closing = Some(CloseReason::StaleConnection);
            return;
        }
        self.send(&ServerOp::Ping);
        self.pings_out += 1;
        self.last_ping = now;
    }
}
