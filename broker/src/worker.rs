//! A worker: one thread, one `mio::Poll`, one slab of connections, one listener per port
//! (text, and binary when it is on), one shard.
//!
//! Owns: the event loop. Each turn it
//! 1. waits for socket readiness or its waker (with a timeout for timers),
//! 2. accepts new connections, or refuses them (admission control: total, per address,
//!    per second) with one non-blocking write of the reason and a close; an admitted one
//!    starts on the worker with the fewest connections, here or handed there
//!    (`Envelope::Adopt`); a bridge's in-process connection (one end of a Unix socket
//!    pair, `Envelope::Attach`) is admitted and started the same way, on the binary port,
//!    without its transport (no TLS between two ends of one process),
//! 3. drains its inbound queue: publishes for its shard, subscription changes, deliveries
//!    for its connections,
//! 4. reads every readable connection (unless its outbox is blocked by a full peer queue,
//!    which is how backpressure reaches publishers) and applies what it parsed; after each
//!    read and before parsing, it applies the shard work that arrived meanwhile
//!    (`Router::sync_inbox`), so a publish never misses a subscription that caused it,
//!    then hands the deliveries set aside to their connections,
//! 5. handles what it addressed to itself, sends the batches for the other workers,
//! 6. writes every connection with output (vectored writes), and closes the ones closing,
//! 7. runs the ping timer, and lame duck mode's steps (`lameduck.rs`): once it has begun,
//!    closes the listeners and tells every connection, then closes the connections a few
//!    at a time on its schedule.
//!
//! A connection over a publish rate (`rate_action = "slow"`) is throttled: it is not read
//! until its buckets refill. The worker keeps the throttled connections in a heap by
//! deadline, wakes up for the earliest (poll timeout) and reads each one again itself when
//! its pause ends, since edge-triggered readiness will not report bytes already waiting.
//!
//! It also owns (through its router) its broker latency histogram (recorded when a
//! delivery's last byte is written), and a bounded ring of recently closed connections, and answers the monitoring
//! thread's snapshot requests when it drains them from its inbox, between connections'
//! work: a copy of what one page needs (`snapshot::answer`), never a reference to it.
//!
//! Never: shares a connection or its shard with another thread, or blocks anywhere but in
//! `poll`. The one lock it takes is the connection gate's (`admission.rs`), once when a
//! connection arrives and once when it closes: never on the path of a publish.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use tern_protocol::binary::{encode_server_frame, ErrorCode, ErrorFrame, ServerFrame, Welcome};
use tern_protocol::text::{encode_server_op, ServerInfo, ServerOp};
use tracing::{debug, info, warn};

use crate::admission::{ConnAdmission, ConnRefusal, ConnSlot, ConnectionGate};
use crate::auth::Verdicts;
use crate::budget::QueuedRef;
use crate::conn::access::Access;
use crate::conn::congestion::Signal;
use crate::conn::io::Io;
use crate::conn::link::Link;
use crate::conn::socket::Socket;
use crate::conn::{Accepted, CloseReason, Conn, ReadState};
use crate::index::FastMap;
use crate::lameduck::{LameDuck, Schedule};
use crate::mesh::{ConnId, Envelope, Lane};
use crate::router::Router;
use crate::snapshot::{
    self, ConnInfo, SnapshotRequest, SubsListing, WallClock, WorkerView, CLOSED_KEPT_PER_WORKER,
};
use crate::stats::bump;
use crate::store::ReplayState;
use crate::transports::{Port, Transports};

pub(crate) const WAKER: Token = Token(0);
const LISTENER: Token = Token(1);
const BINARY_LISTENER: Token = Token(2);
const WEBSOCKET_LISTENER: Token = Token(3);
const FIRST_CONN: usize = 4;

/// Bytes read from one connection per loop turn, so one busy publisher cannot starve the
/// others on its worker.
const READ_BUDGET: usize = 256 * 1024;
/// Inbound envelopes handled per drain before sockets get their turn again. Counted in
/// envelopes, not batches: one batch can carry a whole turn's fan-out (a publisher's
/// 256 KiB of small messages to 100 subscribers is ~200,000 deliveries), and a turn
/// that drains many of those writes nothing to any socket for seconds.
const INBOX_BUDGET: usize = 65_536;
/// Bytes of inbound batches (as their senders counted them, `mesh::envelope_bytes`) taken
/// per drain, or one lane's byte bound (`worker_queue_bytes`) when that is smaller: the
/// rest waits for the next turn, after the sockets, so that a turn stays short while other
/// workers keep the lanes full (a consumer's congestion signal, a live message behind a
/// flood of catch-up deliveries).
const DRAIN_BYTES: usize = 512 * 1024;
/// How often the ping timer runs.
const TICK: Duration = Duration::from_millis(100);
/// Live traffic this recent (a publish read or routed here, a delivery that is not a
/// catch-up's) makes the worker pace its catch-ups.
const LIVE_WINDOW: Duration = Duration::from_millis(20);
/// While catch-ups are paced: at most one pump per this much time, instead of one per
/// turn (the poll waits up to a millisecond for the next one when nothing else wakes it).
const REPLAY_PACE: Duration = Duration::from_micros(500);
/// While shutting down: how long the worker must see nothing to do before it stops.
const QUIET: Duration = Duration::from_millis(50);
/// Closes logged at `info` per window and worker; more are logged at `debug` and counted in
/// one `info` line per window, so that a flood of bad clients cannot flood the log (they
/// are all counted in `closed_by_reason`).
const CLOSE_LOGS_PER_WINDOW: u32 = 100;
const CLOSE_LOG_WINDOW: Duration = Duration::from_secs(10);

/// Refused connections are logged at most this often per worker (they are all counted).
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// A connection accepted by one worker for another, the home the connection gate gave it
/// (`ConnectionGate::admit`), sent there before a byte of it was read or written.
#[derive(Debug)]
pub(crate) struct Adoption {
    sock: Socket,
    peer: SocketAddr,
    port: Port,
    slot: ConnSlot,
}

/// What a worker needs from the server to run.
pub(crate) struct WorkerSetup {
    pub router: Router,
    pub poll: Poll,
    /// The text port.
    pub listener: TcpListener,
    /// The binary port, when it is on.
    pub binary_listener: Option<TcpListener>,
    /// The WebSocket port, when it is on.
    pub websocket_listener: Option<TcpListener>,
    /// TLS and WebSocket: what each accepted connection's transport is.
    pub transports: Transports,
    /// What every text connection is greeted with (its own id and address filled in).
    pub info: ServerInfo,
    /// What every binary connection's `HELLO` is answered with (its own id filled in).
    pub welcome: Welcome,
    /// The connection limits, shared by every worker's accept path.
    pub gate: Arc<ConnectionGate>,
    /// Lame duck mode's switch, thrown by the main thread.
    pub lame_duck: Arc<LameDuck>,
    /// What the checker thread decided about this worker's connections' credentials.
    pub verdicts: Arc<Verdicts>,
}

pub(crate) struct Worker {
    router: Router,
    poll: Poll,
    listener: Option<TcpListener>,
    binary_listener: Option<TcpListener>,
    websocket_listener: Option<TcpListener>,
    transports: Transports,
    info: ServerInfo,
    welcome: Welcome,
    conns: Slab<Conn>,
    /// Connections to read this turn (readable, not yet drained).
    to_read: Vec<usize>,
    /// Connections with output to write.
    to_write: Vec<usize>,
    next_gen: u32,
    next_client: u64,
    now: Instant,
    next_tick: Instant,
    /// Set once shutdown began: the deadline for flushing.
    draining: Option<Instant>,
    last_busy: Instant,
    /// The last [`CLOSED_KEPT_PER_WORKER`] connections this worker closed, oldest first.
    closed: VecDeque<ConnInfo>,
    /// Admission control's connection limits (shared by every worker).
    gate: Arc<ConnectionGate>,
    /// The `INFO` a refused text connection gets before its `-ERR` (client id 0), encoded
    /// once.
    refused_info: Bytes,
    /// Throttled connections, earliest deadline first: (deadline, slot, generation).
    throttled: BinaryHeap<Reverse<(Instant, usize, u32)>>,
    /// Connections refused since the last log line about it, and when the next may be.
    refused_unlogged: u64,
    next_refusal_log: Instant,
    /// How many closes may still be logged at `info` in this window.
    close_logs: LogBudget,
    /// Lame duck mode's switch, and this worker's schedule once it has seen it.
    lame_duck: Arc<LameDuck>,
    lame_duck_schedule: Option<Schedule>,
    /// Per congested consumer, the publishers of this worker stalled for it, as (slot,
    /// generation).
    stalled_by: FastMap<ConnId, Vec<(u32, u32)>>,
    /// The earliest this worker's catch-ups may be pumped again while live traffic is
    /// recent (`Router::live_at`).
    next_pump: Instant,
    /// What the checker thread decided about this worker's connections' credentials.
    verdicts: Arc<Verdicts>,
}

impl Worker {
    pub fn new(setup: WorkerSetup) -> io::Result<Worker> {
        let WorkerSetup {
            router,
            poll,
            mut listener,
            mut binary_listener,
            mut websocket_listener,
            transports,
            info,
            welcome,
            gate,
            lame_duck,
            verdicts,
        } = setup;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        if let Some(l) = &mut binary_listener {
            poll.registry()
                .register(l, BINARY_LISTENER, Interest::READABLE)?;
        }
        if let Some(l) = &mut websocket_listener {
            poll.registry()
                .register(l, WEBSOCKET_LISTENER, Interest::READABLE)?;
        }
        let now = Instant::now();
        let mut refused_info = BytesMut::new();
        encode_server_op(&ServerOp::Info(Box::new(info.clone())), &mut refused_info);
        Ok(Worker {
            router,
            poll,
            listener: Some(listener),
            binary_listener,
            websocket_listener,
            transports,
            info,
            welcome,
            conns: Slab::new(),
            to_read: Vec::new(),
            to_write: Vec::new(),
            next_gen: 0,
            next_client: 0,
            now,
            next_tick: now + TICK,
            draining: None,
            last_busy: now,
            closed: VecDeque::new(),
            gate,
            refused_info: refused_info.freeze(),
            throttled: BinaryHeap::new(),
            refused_unlogged: 0,
            next_refusal_log: now,
            close_logs: LogBudget::new(CLOSE_LOGS_PER_WINDOW, CLOSE_LOG_WINDOW, now),
            lame_duck,
            lame_duck_schedule: None,
            stalled_by: FastMap::default(),
            next_pump: now,
            verdicts,
        })
    }

    /// Runs the event loop until shutdown has flushed (or timed out).
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            self.now = Instant::now();
            self.router.now = self.now;
            self.router.shard.new_turn();
            for ev in events.iter() {
                match ev.token() {
                    WAKER => {}
                    LISTENER => self.accept(Port::Text),
                    BINARY_LISTENER => self.accept(Port::Binary),
                    WEBSOCKET_LISTENER => self.accept(Port::WebSocket),
                    Token(t) => {
                        let slot = t - FIRST_CONN;
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.list_read(slot);
                        }
                        if ev.is_writable() {
                            if let Some(c) = self.conns.get_mut(slot) {
                                c.write_blocked = false;
                            }
                            self.list_write(slot);
                        }
                    }
                }
            }
            if self.turn() {
                return Ok(());
            }
        }
    }

    /// One loop turn after the poll's events were dispatched: timers, the inbox, reads,
    /// catch-ups, the store, local envelopes, writes, the tick. True when shutdown is done
    /// and the connections are closed.
    fn turn(&mut self) -> bool {
        self.take_verdicts();
        self.resume_throttled();
        self.wake_timers();
        self.drain_inbox();
        if !self.router.outbox.is_blocked() && self.draining.is_none() {
            self.read_connections();
            // Reading drained the inbox into the shard and set deliveries aside
            // (`Router::sync_inbox`): hand them to their connections this turn.
            self.drain_inbox();
        }
        if self.may_pump() {
            self.router.pump_replays(self.now);
        }
        self.hold_publishers();
        // What this turn stored reaches the ring file before anything it made is
        // handled or sent: acks, deliveries (`Store::flush`).
        self.router.shard.flush_store();
        self.handle_local();
        self.router.outbox.flush();
        self.write_connections();
        // Catch-ups on other workers waiting for this one to take its batches and write
        // to its clients look again now, not at their poll timeout.
        self.router.outbox.wake_waiters();
        if self.now >= self.next_tick {
            self.tick();
        }
        if self.finished_draining() {
            self.close_all();
            return true;
        }
        false
    }

    fn poll_timeout(&self) -> Duration {
        if self.router.outbox.is_blocked() || self.draining.is_some() {
            return Duration::from_millis(1);
        }
        let mut replays = self.router.shard.replay_state();
        if replays == ReplayState::Ready && self.pacing_replays() {
            // Catch-ups wait for their next pump while live traffic is recent.
            replays = ReplayState::Waiting;
        }
        if !self.to_read.is_empty() || self.router.has_set_aside() || replays == ReplayState::Ready
        {
            return Duration::ZERO;
        }
        if replays == ReplayState::Waiting {
            // Catch-ups wait for a congested destination: look again soon, without spinning.
            return Duration::from_millis(1);
        }
        let now = Instant::now();
        let mut timeout = self.next_tick.saturating_duration_since(now);
        if let Some(Reverse((until, _, _))) = self.throttled.peek() {
            timeout = timeout.min(until.saturating_duration_since(now));
        }
        if let Some(Reverse((at, _, _))) = self.router.timers.peek() {
            timeout = timeout.min(at.saturating_duration_since(now));
        }
        timeout
    }

    /// True while live traffic is recent and the next paced pump is not due yet.
    fn pacing_replays(&self) -> bool {
        let live = self
            .router
            .live_at
            .is_some_and(|at| self.now.saturating_duration_since(at) < LIVE_WINDOW);
        live && self.now < self.next_pump
    }

    /// Whether this turn pumps catch-ups: always while no live traffic is recent, and
    /// once per [`REPLAY_PACE`] while it is, so that catch-up work (the pump, and the
    /// deliveries and socket writes it makes) leaves live messages short turns.
    fn may_pump(&mut self) -> bool {
        if self.pacing_replays() {
            return false;
        }
        self.next_pump = self.now + REPLAY_PACE;
        true
    }

    /// Runs the connection timers that are due (`Router::wake_at`): congestion
    /// judgements and stall deadlines.
    fn wake_timers(&mut self) {
        while let Some(&Reverse((at, slot, gen))) = self.router.timers.peek() {
            if at > self.now {
                return;
            }
            self.router.timers.pop();
            let slot = slot as usize;
            let Some(conn) = self.conns.get_mut(slot).filter(|c| c.id.gen == gen) else {
                continue;
            };
            let read = conn.on_timer(&mut self.router);
            let write = conn.has_output();
            if read {
                self.list_read(slot);
            }
            if write {
                self.list_write(slot);
            }
        }
    }

    /// Lists for reading every throttled connection whose pause is over.
    fn resume_throttled(&mut self) {
        while let Some(&Reverse((until, slot, gen))) = self.throttled.peek() {
            if until > self.now {
                return;
            }
            self.throttled.pop();
            if self.conns.get(slot).is_some_and(|c| c.id.gen == gen) {
                self.list_read(slot);
            }
        }
    }

    /// Hands each connection the checker thread's verdict on its credentials, and lists
    /// it for reading: what it sent behind them waits in its buffer.
    fn take_verdicts(&mut self) {
        for verdict in self.verdicts.take() {
            let slot = verdict.conn.slot as usize;
            let Some(conn) = self.conns.get_mut(slot) else {
                continue;
            };
            if conn.id != verdict.conn {
                continue;
            }
            conn.verdict(verdict.outcome, &mut self.router);
            self.list_write(slot);
            self.list_read(slot);
        }
    }

    fn list_read(&mut self, slot: usize) {
        if let Some(c) = self.conns.get_mut(slot) {
            if !c.listed_read {
                c.listed_read = true;
                self.to_read.push(slot);
            }
        }
    }

    fn list_write(&mut self, slot: usize) {
        if let Some(c) = self.conns.get_mut(slot) {
            if !c.listed_write {
                c.listed_write = true;
                self.to_write.push(slot);
            }
        }
    }

    fn accept(&mut self, port: Port) {
        loop {
            let listener = match port {
                Port::Text => &self.listener,
                Port::Binary => &self.binary_listener,
                Port::WebSocket => &self.websocket_listener,
            };
            let Some(listener) = listener else {
                return;
            };
            match listener.accept() {
                Ok((sock, peer)) => self.add_connection(Socket::Tcp(sock), peer, port),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of descriptors or the like: keep serving the connections we
                    // have. Readiness is edge-triggered, so the timer tick tries again
                    // for whatever still waits in the backlog.
                    warn!(error = %e, "accept failed");
                    return;
                }
            }
        }
    }

    fn add_connection(&mut self, sock: Socket, peer: SocketAddr, port: Port) {
        // Held by the connection from here on; given back when it is dropped, also by the
        // early returns below.
        let gate_slot = match self.gate.admit(peer.ip(), self.now, self.router.me) {
            Ok(slot) => slot,
            Err(refusal) => return self.refuse_connection(sock, peer, port, refusal),
        };
        let home = gate_slot.home();
        if home != self.router.me {
            // Nothing has been read or written yet: the worker it will live on starts it.
            bump(&self.router.stats.connections_moved, 1);
            let adoption = Adoption {
                sock,
                peer,
                port,
                slot: gate_slot,
            };
            self.router
                .outbox
                .push(home, Envelope::Adopt(Box::new(adoption)));
            return;
        }
        self.start_connection(sock, peer, port, gate_slot);
    }

    /// Starts an admitted connection on this worker, its home: its transport, its
    /// registration, its session.
    fn start_connection(
        &mut self,
        mut sock: Socket,
        peer: SocketAddr,
        port: Port,
        gate_slot: ConnSlot,
    ) {
        let link = match &sock {
            Socket::Tcp(tcp) => {
                if let Err(e) = tcp.set_nodelay(true) {
                    debug!(%peer, error = %e, "cannot set TCP_NODELAY");
                }
                match self
                    .transports
                    .link(port, self.now, &self.info, &self.welcome)
                {
                    Ok(link) => link,
                    Err(e) => {
                        warn!(%peer, ?port, error = %e, "cannot start the connection's transport");
                        return;
                    }
                }
            }
            // Both ends are in this process: nothing to encrypt or frame.
            _ => None,
        };
        let slot = self.conns.vacant_key();
        let registered = sock.source().map(|source| {
            self.poll.registry().register(
                source,
                Token(slot + FIRST_CONN),
                Interest::READABLE | Interest::WRITABLE,
            )
        });
        if let Some(Err(e)) = registered {
            warn!(%peer, error = %e, "cannot register connection");
            return;
        }
        self.open(sock, link, peer, port, gate_slot);
    }

    /// Makes the connection of an accepted (and registered) socket, in the slot
    /// `Slab::vacant_key` gave, and lists it for its first read and write.
    fn open(
        &mut self,
        sock: Socket,
        link: Option<Box<Link>>,
        peer: SocketAddr,
        port: Port,
        gate_slot: ConnSlot,
    ) -> usize {
        let entry = self.conns.vacant_entry();
        let slot = entry.key();
        self.next_gen = self.next_gen.wrapping_add(1);
        self.next_client += 1;
        let workers = self.router.workers as u64;
        // client_id % workers is the worker, which tells operators (and tests) where a
        // connection lives.
        let client_id = self.next_client * workers + self.router.me as u64;
        let id = ConnId {
            worker: self.router.me as u16,
            slot: slot as u32,
            gen: self.next_gen,
        };
        let rules = self.router.auth.load();
        let generation = self.router.auth.generation();
        let access = if rules.is_required() {
            let nonce = rules.needs_nonce().then(tern_auth::fresh_nonce);
            Access::awaiting(nonce, generation)
        } else {
            Access::open(generation)
        };
        let limits = &self.router.config.limits;
        let accepted = Accepted {
            id,
            client_id,
            peer,
            access,
        };
        let io = Io::new(sock, link);
        let conn = match port {
            Port::Text => Conn::text(accepted, io, &self.info, limits, self.now),
            Port::Binary => Conn::binary(accepted, io, &self.welcome, limits, self.now),
            Port::WebSocket => Conn::websocket(accepted, io, limits, self.now),
        };
        let admission = ConnAdmission::new(&self.router.config.admission, gate_slot, self.now);
        entry.insert(conn.with_admission(admission));
        bump(&self.router.stats.total_connections, 1);
        debug!(%peer, client_id, worker = self.router.me, ?port, "connection opened");
        self.list_write(slot);
        self.list_read(slot);
        slot
    }

    /// Refuses a new connection: says why in its port's protocol with one non-blocking
    /// write (a new socket's send buffer is empty: it takes these few bytes whole), and
    /// closes it. Nothing is registered and nothing is kept: refusing a storm of
    /// connections costs a few system calls each.
    fn refuse_connection(
        &mut self,
        mut sock: Socket,
        peer: SocketAddr,
        port: Port,
        refusal: ConnRefusal,
    ) {
        bump(&self.router.stats.connections_refused[refusal.kind()], 1);
        let text = refusal.text();
        let mut out = BytesMut::with_capacity(self.refused_info.len() + text.len() + 16);
        match port {
            // A TLS client cannot read plain text: it only sees the connection close. (A
            // socket pair's end never speaks TLS.)
            _ if matches!(sock, Socket::Tcp(_)) && self.transports.tls_from_first_byte(port) => {}
            // A browser reads an HTTP answer.
            Port::WebSocket => {
                out.extend_from_slice(
                    format!(
                        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{text}",
                        text.len()
                    )
                    .as_bytes(),
                );
            }
            // As nats-server does: `INFO` first, which NATS clients wait for, then the
            // reason.
            Port::Text => {
                out.extend_from_slice(&self.refused_info);
                encode_server_op(&ServerOp::Err(text.clone()), &mut out);
            }
            // At once, before the client's preface (docs/protocol-binary.md).
            Port::Binary => {
                let frame = ServerFrame::Error(ErrorFrame {
                    code: ErrorCode::TooManyConnections,
                    fatal: true,
                    sid: None,
                    message: Bytes::copy_from_slice(text.as_bytes()),
                });
                // A short text always fits a frame.
                let _ = encode_server_frame(&frame, &mut out);
            }
        }
        let _ = sock.write(&out);
        // Take what the client already sent (a preface, a CONNECT), so that the close
        // sends a FIN behind the error rather than a reset that could overtake it.
        let mut scratch = [std::mem::MaybeUninit::uninit(); 512];
        for _ in 0..4 {
            match sock.read_spare(&mut scratch) {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
        sock.shutdown_write();
        debug!(%peer, ?port, reason = %text, "connection refused");
        self.refused_unlogged += 1;
        if self.now >= self.next_refusal_log {
            warn!(
                worker = self.router.me,
                refused = self.refused_unlogged,
                last_peer = %peer,
                last_reason = %text,
                "refusing new connections (admission control)"
            );
            self.refused_unlogged = 0;
            self.next_refusal_log = self.now + REFUSAL_LOG_EVERY;
        }
    }

    /// Handles what other workers sent: every delivery (they only ever end in a
    /// connection's bounded queues), then commands for the shard while the deliveries this
    /// worker could not send yet are few (`Outbox::may_take_commands`: routing makes
    /// more). Each lane keeps its order; what a budget leaves is set aside and goes first
    /// next time.
    fn drain_inbox(&mut self) {
        self.drain_lane(Lane::Delivery);
        if self.router.outbox.may_take_commands() {
            self.drain_lane(Lane::Command);
        }
    }

    /// Takes from `lane` up to [`INBOX_BUDGET`] envelopes, and no new batch once it took
    /// [`DRAIN_BYTES`] (as the senders counted them): the senders refill the lane while it
    /// is drained, and a drain that kept up with them would hold this worker's sockets and
    /// its consumers' congestion signals for a long turn (a drain of 64 MiB of 1 KiB
    /// deliveries overran a consumer's whole headroom before its publisher heard of it).
    /// A batch is at most about a lane's bytes, so a drain takes at most that much more.
    fn drain_lane(&mut self, lane: Lane) {
        let mut budget = INBOX_BUDGET;
        let mut bytes_left = DRAIN_BYTES.min(self.router.config.limits.worker_queue_bytes);
        while budget > 0 {
            if !self.outbox_has_room() {
                return;
            }
            if let Some(env) = self.router.pop_set_aside(lane) {
                self.last_busy = self.now;
                self.handle_envelope(env);
                budget -= 1;
                continue;
            }
            if bytes_left == 0 {
                return;
            }
            let Some(batch) = self.router.next_batch(lane) else {
                return;
            };
            bytes_left = bytes_left.saturating_sub(batch.bytes);
            self.last_busy = self.now;
            let mut envelopes = batch.envelopes.into_iter();
            for env in envelopes.by_ref() {
                self.handle_envelope(env);
                budget -= 1;
                if budget == 0 || !self.outbox_has_room() {
                    break;
                }
            }
            self.router.set_aside(lane, envelopes);
        }
    }

    /// True while the outbox can take more of this turn's work. When it is full
    /// (`OUTBOX_FULL`: routing fans one message out to many deliveries), what the worker
    /// addressed to itself is handled now, which frees it unless the rest is for other
    /// workers; then the turn's reading and draining stop and the batches go out.
    fn outbox_has_room(&mut self) -> bool {
        if self.router.outbox.is_full() {
            self.router.shard.flush_store();
            self.handle_local();
        }
        !self.router.outbox.is_full()
    }

    fn handle_local(&mut self) {
        while self.router.outbox.has_local() {
            let mut batch = self.router.outbox.take_local();
            for env in batch.drain(..) {
                self.handle_envelope(env);
            }
            self.router.outbox.return_local(batch);
        }
    }

    fn handle_envelope(&mut self, env: Envelope) {
        let Some(env) = self.router.apply(env) else {
            return;
        };
        match env {
            // Applied to the shard by the router.
            Envelope::Publish(_)
            | Envelope::Subscribe(_)
            | Envelope::Unsubscribe(_)
            | Envelope::Barrier { .. }
            | Envelope::Lag(_)
            | Envelope::Grant { .. }
            | Envelope::Release { .. }
            | Envelope::Replay(_)
            | Envelope::ReplayCancel { .. }
            | Envelope::Presence(_)
            | Envelope::DuplicateAck { .. } => {}
            Envelope::ReplayPart {
                conn,
                id,
                shard,
                part,
            } => {
                if let Some((c, router)) = self.conn_and_router(conn) {
                    c.replay_part(id, shard, part, router);
                }
            }
            Envelope::ReplayDone { conn, id } => {
                if let Some((c, router)) = self.conn_and_router(conn) {
                    c.replay_done(id, router);
                }
            }
            Envelope::Deliver { sub, msg } => {
                if msg.flight.is_none() {
                    self.router.live_at = Some(self.now);
                }
                if let Some((c, router)) = self.conn_and_router(sub.conn) {
                    if c.deliver(sub, &msg, router) {
                        if c.wants_flush() {
                            // Over its budget: its socket takes what it can before
                            // anything queued is given up (`Session::wants_flush`).
                            c.flush(router);
                        }
                        self.list_write(sub.conn.slot as usize);
                    }
                }
                if self.router.budget.is_over() {
                    self.evict_for_broker();
                }
                self.compact_tickets();
            }
            Envelope::DeliverRun { sub, run } => {
                if let Some((c, router)) = self.conn_and_router(sub.conn) {
                    if c.deliver_run(sub, &run, router) {
                        self.list_write(sub.conn.slot as usize);
                    }
                }
                if self.router.budget.is_over() {
                    self.evict_for_broker();
                }
                self.compact_tickets();
            }
            Envelope::Stall {
                publisher,
                consumer,
                epoch,
            } => self.stall(publisher, consumer, epoch),
            Envelope::Congestion { conn, signal } => {
                if !matches!(signal, Signal::On(_)) {
                    self.release_stalled(conn);
                }
            }
            Envelope::Position { sub, shard, last } => {
                if let Some((c, router)) = self.conn_and_router(sub.conn) {
                    c.position(sub, shard, last, router);
                }
            }
            Envelope::CaughtUp { sub, shard } => {
                if let Some((c, router)) = self.conn_and_router(sub.conn) {
                    if c.caught_up(sub, shard, router) {
                        self.list_write(sub.conn.slot as usize);
                    }
                }
            }
            Envelope::Counted { sub, shard, sends } => {
                if let Some((c, router)) = self.conn_and_router(sub.conn) {
                    if c.counted(sub, shard, sends, router) {
                        self.list_write(sub.conn.slot as usize);
                    }
                }
            }
            Envelope::LagAck { sub, shard, lag } => {
                if let Some((c, router)) = self.conn_and_router(sub.conn) {
                    c.lag_ack(sub, shard, lag, router);
                }
            }
            Envelope::Ack {
                conn,
                ack_id,
                stamp,
                duplicate,
            } => {
                if let Some(c) = self.conn_mut(conn) {
                    if c.ack(ack_id, stamp, duplicate) {
                        self.list_write(conn.slot as usize);
                    }
                }
            }
            Envelope::Gap {
                sub,
                shard,
                requested,
                oldest,
            } => {
                if let Some((c, router)) = self.conn_and_router(sub.conn) {
                    if c.gap(sub, shard, requested, oldest, router) {
                        self.list_write(sub.conn.slot as usize);
                    }
                }
            }
            Envelope::PresenceAnswer { conn, frame } => {
                if let Some(c) = self.conn_mut(conn) {
                    if c.write_presence_answer(&frame) {
                        self.list_write(conn.slot as usize);
                    }
                }
            }
            Envelope::BarrierDone { conn, token } => {
                if let Some((c, router)) = self.conn_and_router(conn) {
                    if c.barrier_done(token, router) {
                        self.list_write(conn.slot as usize);
                    }
                }
            }
            Envelope::Adopt(a) => {
                let Adoption {
                    sock,
                    peer,
                    port,
                    slot,
                } = *a;
                // A worker whose listeners are closed (lame duck, shutdown) starts no new
                // connection, handed over or accepted.
                if self.listener.is_some() {
                    self.start_connection(sock, peer, port, slot);
                } else {
                    debug!(%peer, ?port, "connection handed over after the listeners closed: closed");
                }
            }
            Envelope::Attach(sock) => {
                let sock = *sock;
                if self.listener.is_none() {
                    debug!("in-process connection after the listeners closed: closed");
                } else if let Err(e) = sock.set_nonblocking(true) {
                    warn!(error = %e, "cannot start an in-process connection");
                } else {
                    // Counted against the loopback address, as the bridge's TCP connection is.
                    let peer = SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0));
                    let sock = Socket::Unix(mio::net::UnixStream::from_std(sock));
                    self.add_connection(sock, peer, Port::Binary);
                }
            }
            Envelope::Shutdown => self.begin_shutdown(),
            Envelope::Snapshot(req) => self.answer_snapshot(*req),
        }
    }

    /// This worker's queues hold more than its share of the broker's budget: gives up
    /// their lowest-priority, oldest messages until they fit (`budget.rs`).
    fn evict_for_broker(&mut self) {
        while self.router.budget.is_over() {
            let conns = &self.conns;
            let live = |level, arrival, q| holds_queued(conns, level, arrival, q);
            let Some((level, arrival, q)) = self.router.budget.tickets.pop_lowest(live) else {
                return;
            };
            let conn = &mut self.conns[q.slot as usize];
            if conn.evict_for_broker(q, level, arrival, &mut self.router) {
                self.list_write(q.slot as usize);
            }
        }
    }

    /// Drops the worker's stale eviction tickets once they far outnumber the queued
    /// messages (amortised O(1) per message queued).
    fn compact_tickets(&mut self) {
        let conns = &self.conns;
        let live = |level, arrival, q| holds_queued(conns, level, arrival, q);
        let msgs = self.router.budget.msgs();
        self.router.budget.tickets.compact(msgs, live);
    }

    /// A shard found a message of `publisher` reaching `consumer`, congested in `epoch`:
    /// the publisher is not read until that congestion ends (`release_stalled`) or
    /// `max_publisher_stall` passes. A stall for a congestion already over is ignored
    /// (the mesh delivers the end of a congestion before any stall it caused).
    fn stall(&mut self, publisher: ConnId, consumer: ConnId, epoch: u32) {
        if self.router.congested.get(&consumer) != Some(&epoch) {
            return;
        }
        let until = self.now + self.router.config.flow.max_publisher_stall;
        let Some(conn) = self.conn_mut(publisher) else {
            return;
        };
        if conn.stall_on(consumer, until) {
            bump(&self.router.stats.publisher_stalls, 1);
            self.router.wake_at(until, publisher);
        }
        self.stalled_by
            .entry(consumer)
            .or_default()
            .push((publisher.slot, publisher.gen));
    }

    /// The shard's holds for lossless catch-ups and fall-backs the ring may overtake
    /// (`shard.rs`, `Holds`): each publisher named is not read until its consumer's
    /// catch-up is out of danger or `max_publisher_stall` passes, as a stall for a
    /// congested consumer; and the publishers of those out of danger are read again.
    fn hold_publishers(&mut self) {
        let held = self.router.shard.take_held();
        let router = &mut self.router;
        let released = router
            .shard
            .take_released(&router.backlogged, &router.congested);
        let max = self.router.config.flow.max_publisher_stall;
        if !max.is_zero() {
            let until = self.now + max;
            for (publisher, consumer) in held {
                let Some(conn) = self.conn_mut(publisher) else {
                    continue;
                };
                if conn.stall_on(consumer, until) {
                    bump(&self.router.stats.lossless_holds, 1);
                    self.router.wake_at(until, publisher);
                }
                let by = self.stalled_by.entry(consumer).or_default();
                if !by.contains(&(publisher.slot, publisher.gen)) {
                    by.push((publisher.slot, publisher.gen));
                }
            }
        }
        for consumer in released {
            self.release_stalled(consumer);
        }
    }

    /// The congestion of `consumer` ended: reads again every publisher it stalled here.
    fn release_stalled(&mut self, consumer: ConnId) {
        for (slot, gen) in self.stalled_by.remove(&consumer).unwrap_or_default() {
            let slot = slot as usize;
            if let Some(c) = self.conns.get_mut(slot).filter(|c| c.id.gen == gen) {
                if c.unstall(consumer) {
                    self.list_read(slot);
                }
            }
        }
    }

    /// The connection `id` names, unless it has gone (its slot empty or reused).
    fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns.get_mut(id.slot as usize).filter(|c| c.id == id)
    }

    /// [`Worker::conn_mut`], with the router beside it for steps that route.
    fn conn_and_router(&mut self, id: ConnId) -> Option<(&mut Conn, &mut Router)> {
        let conn = self
            .conns
            .get_mut(id.slot as usize)
            .filter(|c| c.id == id)?;
        Some((conn, &mut self.router))
    }

    /// Builds a copy of what the monitor asked for (`snapshot::answer`, bounded by the
    /// request) and sends it back. Off the data path: this allocates, once per monitoring
    /// request.
    fn answer_snapshot(&mut self, req: SnapshotRequest) {
        let view = WorkerView {
            worker: self.router.me,
            conns: &self.conns,
            closed: &self.closed,
            index: self.router.shard.index(),
            latency: &self.router.latency,
            outbox_pending_batches: self.router.outbox.pending_batches(),
            rooms: &self.router.rooms,
        };
        let snap = snapshot::answer(&req.want, &view);
        // Room for every worker's answer was made by the monitor; if it stopped waiting,
        // the answer is simply dropped.
        let _ = req.reply.try_send(snap);
    }

    fn read_connections(&mut self) {
        let list = std::mem::take(&mut self.to_read);
        for slot in list {
            if !self.outbox_has_room() {
                // The rest (still listed) are read next turn, after the batches went out.
                self.to_read.push(slot);
                continue;
            }
            let Some(conn) = self.conns.get_mut(slot) else {
                continue;
            };
            let state = read_connection(conn, &mut self.router, READ_BUDGET, self.now);
            let has_output = conn.has_unsent();
            match state {
                ReadState::More => self.to_read.push(slot),
                ReadState::Throttled(until) => {
                    conn.listed_read = false;
                    self.throttled.push(Reverse((until, slot, conn.id.gen)));
                }
                ReadState::Drained | ReadState::Closed | ReadState::Paused => {
                    conn.listed_read = false;
                }
            }
            if has_output || state == ReadState::Closed {
                self.list_write(slot);
            }
            if self.router.shard.holds_publishers() {
                // Before anything more is read: the ring is close to overtaking a lossless
                // subscription this connection publishes for.
                self.hold_publishers();
            }
        }
        if !self.to_read.is_empty() {
            self.last_busy = self.now;
        }
    }

    fn write_connections(&mut self) {
        let list = std::mem::take(&mut self.to_write);
        for slot in list {
            let Some(conn) = self.conns.get_mut(slot) else {
                continue;
            };
            conn.listed_write = false;
            if conn.has_output() {
                self.last_busy = self.now;
            }
            conn.flush(&mut self.router);
            let resume = conn.take_resume_read();
            if conn.closing.is_some() {
                self.close(slot);
                continue;
            }
            if conn.has_output() && !conn.write_blocked {
                self.list_write(slot);
            }
            if resume {
                self.list_read(slot);
            }
        }
    }

    fn close(&mut self, slot: usize) {
        let mut conn = self.conns.remove(slot);
        if conn.listed_read {
            self.to_read.retain(|s| *s != slot);
        }
        conn.close_congestion(&mut self.router);
        // Rooms first: they are left with the grace window, not at once as ending a
        // subscription that joined one would.
        conn.leave_rooms(&mut self.router);
        conn.unsubscribe_all(&mut self.router);
        conn.end_replays(&mut self.router);
        conn.close_link();
        if let Some(sock) = conn.source() {
            let _ = self.poll.registry().deregister(sock);
        }
        // What the last write attempt left queued is never written.
        conn.discard_output(&self.router.stats);
        let reason = conn.closing.take().unwrap_or(CloseReason::ClientClosed);
        bump(&self.router.stats.closed_connections, 1);
        bump(
            &self.router.stats.closed_by_reason[reason.kind() as usize],
            1,
        );
        let clock = WallClock::now();
        let mut info = conn.info(self.router.me, &clock, &SubsListing::NONE);
        info.stop_us = Some(clock.unix_us(self.now));
        info.reason = Some(reason.to_string());
        if self.closed.len() == CLOSED_KEPT_PER_WORKER {
            self.closed.pop_front();
        }
        self.closed.push_back(info);
        let quiet = matches!(
            reason,
            CloseReason::ClientClosed
                | CloseReason::ServerShutdown
                | CloseReason::HandshakeTimeout(_)
        );
        if quiet || !self.close_logs.allow(self.now) {
            debug!(peer = %conn.peer, client_id = conn.client_id, name = ?conn.name(), user = ?conn.user(), %reason, "connection closed")
        } else {
            info!(peer = %conn.peer, client_id = conn.client_id, name = ?conn.name(), user = ?conn.user(), %reason, "connection closed")
        }
    }

    fn tick(&mut self) {
        self.next_tick = self.now + TICK;
        if let Some(unlogged) = self.close_logs.unlogged(self.now) {
            info!(
                worker = self.router.me,
                unlogged,
                "connections closed (protocol errors, slow consumers, stale) without a line \
                 each: more than {CLOSE_LOGS_PER_WINDOW} per {CLOSE_LOG_WINDOW:?} (each at debug)"
            );
        }
        self.lame_duck_tick();
        self.router.tick(self.now);
        self.accept(Port::Text);
        self.accept(Port::Binary);
        self.accept(Port::WebSocket);
        let limits = self.router.config.limits.clone();
        let slots: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for slot in slots {
            let conn = &mut self.conns[slot];
            conn.tick(self.now, &limits, &mut self.router);
            if conn.has_unsent() || conn.closing.is_some() {
                self.list_write(slot);
            }
        }
    }

    /// Lame duck mode (`lameduck.rs`): on the first tick after it began, stop accepting and
    /// tell every connection; on every tick, close the connections its schedule says are
    /// due (any of them: they are all leaving). Skipped once shutdown has begun.
    fn lame_duck_tick(&mut self) {
        if self.draining.is_some() {
            return;
        }
        let schedule = match self.lame_duck_schedule {
            Some(s) => s,
            None => match self.lame_duck.since() {
                Some(since) => self.enter_lame_duck(since),
                None => return,
            },
        };
        let may_stay = schedule.may_stay_open(self.now);
        let mut open = self
            .conns
            .iter()
            .filter(|(_, c)| c.closing.is_none())
            .count();
        let slots: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for slot in slots {
            if open <= may_stay {
                break;
            }
            let conn = &mut self.conns[slot];
            if conn.closing.is_none() {
                conn.closing = Some(CloseReason::ServerShutdown);
                bump(&self.router.stats.lame_duck_closed, 1);
                open -= 1;
                self.list_write(slot);
            }
        }
    }

    /// Closes the listeners (no new connections: they are refused from now on), sends every
    /// connection the news, and makes the schedule for closing them.
    fn enter_lame_duck(&mut self, since: Instant) -> Schedule {
        self.close_listeners();
        let limits = &self.router.config.limits;
        let schedule = Schedule {
            since,
            initial: self
                .conns
                .iter()
                .filter(|(_, c)| c.closing.is_none())
                .count(),
            grace: limits.lame_duck_grace_period,
            duration: limits.lame_duck_duration,
        };
        let mut info = self.info.clone();
        info.ldm = true;
        let deadline = schedule.deadline();
        let slots: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for slot in slots {
            if self.conns[slot].going_away(&info, deadline, self.now) {
                self.list_write(slot);
            }
        }
        self.lame_duck_schedule = Some(schedule);
        self.lame_duck.worker_entered();
        debug!(
            worker = self.router.me,
            connections = schedule.initial,
            "lame duck mode: not accepting, clients told"
        );
        schedule
    }

    /// Stops accepting: deregisters and drops the listeners (the kernel refuses new
    /// connections once every worker's are gone).
    fn close_listeners(&mut self) {
        let listeners = [
            self.listener.take(),
            self.binary_listener.take(),
            self.websocket_listener.take(),
        ];
        for mut l in listeners.into_iter().flatten() {
            let _ = self.poll.registry().deregister(&mut l);
        }
    }

    fn begin_shutdown(&mut self) {
        if self.draining.is_some() {
            return;
        }
        self.close_listeners();
        self.draining = Some(self.now + self.router.config.limits.shutdown_timeout);
        self.last_busy = self.now;
        debug!(worker = self.router.me, "draining");
    }

    /// Shutdown is done when nothing has happened for a while (every queued message is
    /// written and no peer sends anything more) or the flush deadline has passed.
    fn finished_draining(&self) -> bool {
        let Some(deadline) = self.draining else {
            return false;
        };
        let idle = self.conns.iter().all(|(_, c)| !c.has_output())
            && !self.router.outbox.is_blocked()
            && self.now.duration_since(self.last_busy) >= QUIET;
        idle || self.now >= deadline
    }

    fn close_all(&mut self) {
        let slots: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for slot in slots {
            self.conns[slot].closing = Some(CloseReason::ServerShutdown);
            self.close(slot);
        }
    }
}

/// Reads what `conn`'s socket has, up to `budget` bytes, and applies every whole
/// operation, in this order for each read: the socket, then the worker's inbox synced
/// (`Router::sync_inbox`: the subscription changes that arrived meanwhile, so that a
/// publish never misses the subscription that prompted it), then the bytes applied.
/// Bytes read before a pause (throttled, stalled, a full outbox) go first.
fn read_connection(conn: &mut Conn, router: &mut Router, budget: usize, now: Instant) -> ReadState {
    if let Some(state) = conn.read_paused(router, now) {
        return state;
    }
    if conn.has_unapplied() {
        router.sync_inbox();
        if let Some(state) = conn.apply_read(router, now, false) {
            return state;
        }
        if router.outbox.is_full() {
            return ReadState::More;
        }
    }
    let mut taken = 0;
    while conn.closing.is_none() {
        if taken >= budget || router.outbox.is_full() || router.shard.holds_publishers() {
            return ReadState::More;
        }
        match conn.read_socket(router) {
            Ok(0) => conn.read_eof(),
            Ok(n) => {
                taken += n;
                router.sync_inbox();
                if let Some(state) = conn.apply_read(router, now, true) {
                    return state;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadState::Drained,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => conn.read_failed(&e),
        }
    }
    ReadState::Closed
}

/// True when the queued message a ticket names (`level`, `arrival`, `q`) is still queued
/// on its connection of `conns`.
fn holds_queued(conns: &Slab<Conn>, level: u8, arrival: u64, q: QueuedRef) -> bool {
    conns
        .get(q.slot as usize)
        .filter(|c| c.id.gen == q.gen)
        .is_some_and(|c| c.holds(q.key, q.id, level, arrival))
}

/// How many lines of one kind may be logged per window; the rest are counted, and said in
/// one line when the window is over.
#[derive(Debug)]
struct LogBudget {
    per_window: u32,
    window: Duration,
    ends: Instant,
    used: u32,
    unlogged: u64,
}

impl LogBudget {
    fn new(per_window: u32, window: Duration, now: Instant) -> LogBudget {
        LogBudget {
            per_window,
            window,
            ends: now + window,
            used: 0,
            unlogged: 0,
        }
    }

    /// True when one more line may be logged now; otherwise it is counted.
    fn allow(&mut self, now: Instant) -> bool {
        if now >= self.ends && self.unlogged == 0 {
            self.ends = now + self.window;
            self.used = 0;
        }
        if self.used < self.per_window {
            self.used += 1;
            true
        } else {
            self.unlogged += 1;
            false
        }
    }

    /// Once a window is over: how many lines it did not log, if any (a new window starts).
    fn unlogged(&mut self, now: Instant) -> Option<u64> {
        if now < self.ends || self.unlogged == 0 {
            return None;
        }
        self.ends = now + self.window;
        self.used = 0;
        Some(std::mem::take(&mut self.unlogged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::Slots;
    use crate::auth::{AuthHandle, Checker};
    use crate::budget::SharedBudget;
    use crate::config::Config;
    use crate::mesh::{Mesh, Msg, SubRef};
    use crate::router::Shared;
    use crate::stats::WorkerStats;

    /// The last worker of a mesh of `workers` whose lanes hold any number of bytes, on a
    /// free port, with `config` and no store; and the mesh, to fill its inbox as the
    /// other workers would.
    pub(super) fn test_worker(workers: usize, config: Config) -> (Worker, Mesh) {
        test_worker_storing(workers, config, None)
    }

    /// [`test_worker`] with `store` as its shard's store.
    pub(super) fn test_worker_storing(
        workers: usize,
        config: Config,
        store: Option<crate::store::Store>,
    ) -> (Worker, Mesh) {
        let (mesh, mut inboxes) = Mesh::for_tests_open(workers);
        let config = Arc::new(config);
        let shared = Shared {
            replay_slots: Arc::new(Slots::new(1)),
            subscription_slots: Arc::new(Slots::new(1 << 20)),
            budget: SharedBudget::new(config.flow.max_queued_bytes),
            dedupe: None,
            auth: Arc::new(AuthHandle::new(tern_auth::Authenticator::none())),
            checker: Checker::start(Vec::new()).expect("a checker thread").0,
            bridges: None,
        };
        let router = Router::new(
            workers - 1,
            mesh.clone(),
            inboxes.pop().expect("the last worker's inbox"),
            Arc::clone(&config),
            Arc::new(WorkerStats::default()),
            store,
            shared,
        );
        let any_port = "127.0.0.1:0".parse().expect("an address");
        let now = Instant::now();
        let setup = WorkerSetup {
            router,
            poll: Poll::new().expect("a poll"),
            listener: TcpListener::bind(any_port).expect("a listener"),
            binary_listener: None,
            websocket_listener: None,
            transports: Transports::default(),
            info: ServerInfo {
                max_payload: config.limits.max_payload,
                ..ServerInfo::default()
            },
            welcome: Welcome::default(),
            gate: ConnectionGate::new(&config.admission, workers, now),
            lame_duck: Arc::new(LameDuck::new(now)),
            verdicts: Arc::new(Verdicts::new(Arc::new(
                mio::Waker::new(Poll::new().expect("a poll").registry(), WAKER).expect("a waker"),
            ))),
        };
        (Worker::new(setup).expect("a worker"), mesh)
    }

    /// Worker 1 of a two-worker mesh (see [`test_worker`]).
    fn worker_one(config: Config) -> (Worker, Mesh) {
        test_worker(2, config)
    }

    /// A delivery of `size` bytes to a connection worker 1 does not have (dropped when
    /// handled, which is all this needs).
    fn delivery(size: usize) -> Envelope {
        let nobody = ConnId {
            worker: 1,
            slot: 7,
            gen: 1,
        };
        let msg = Msg::new(
            Bytes::from_static(b"s"),
            Bytes::from(vec![b'x'; size]),
            ConnId::NONE,
            Instant::now(),
        );
        Envelope::Deliver {
            sub: SubRef {
                conn: nobody,
                key: 0,
                id: 1,
            },
            msg: Arc::new(msg),
        }
    }

    /// Catch-ups are pumped every turn while no live traffic is recent, and once per
    /// `REPLAY_PACE` while it is, so that live messages find short turns.
    #[test]
    fn catch_ups_are_paced_while_live_traffic_is_recent() {
        let (mut worker, _mesh) = worker_one(Config::default());
        let t0 = Instant::now();
        worker.now = t0;
        assert!(
            worker.may_pump() && worker.may_pump(),
            "no live traffic: every turn"
        );
        worker.router.live_at = Some(t0);
        worker.next_pump = t0;
        assert!(worker.may_pump(), "the first paced pump");
        assert!(!worker.may_pump(), "not again in the same instant");
        worker.now = t0 + REPLAY_PACE / 2;
        assert!(!worker.may_pump());
        worker.now = t0 + REPLAY_PACE;
        assert!(worker.may_pump(), "one pace later");
        worker.now = t0 + LIVE_WINDOW + REPLAY_PACE / 2;
        assert!(
            worker.may_pump() && worker.may_pump(),
            "live traffic is no longer recent"
        );
    }

    /// One drain takes no new batch past one lane's byte bound, however much is waiting:
    /// the rest waits for the next turn, after the sockets and the signals. Before, a drain
    /// took up to 65,536 envelopes (64 MiB of 1 KiB deliveries) while its senders kept
    /// the lane full, and a congested consumer's signal waited behind all of it.
    #[test]
    fn one_drain_stops_at_one_lanes_byte_bound() {
        let mut config = Config::default();
        config.limits.worker_queue_bytes = 64 * 1024;
        let (mut worker, mesh) = worker_one(config);
        let (batches, per_batch) = (16, 256);
        let mut sender = crate::mesh::Outbox::new(0, mesh);
        for _ in 0..batches {
            for _ in 0..per_batch {
                sender.push(1, delivery(1024));
            }
            sender.flush();
            assert!(!sender.is_blocked(), "the lane holds all of it");
        }
        let total = batches * per_batch;
        let one = crate::mesh::envelope_bytes(&delivery(1024));
        worker.drain_lane(Lane::Delivery);
        let mut left = 0;
        while worker.router.pop_set_aside(Lane::Delivery).is_some() {
            left += 1;
        }
        while let Some(batch) = worker.router.next_batch(Lane::Delivery) {
            left += batch.envelopes.len();
        }
        let taken = total - left;
        // The first batch passes the byte bound alone: nothing more is taken.
        assert!(one * per_batch > 64 * 1024);
        assert_eq!(taken, per_batch, "{taken} of {total} taken");
    }

    #[test]
    fn a_log_budget_lets_a_few_lines_through_per_window_and_counts_the_rest() {
        let t0 = Instant::now();
        let w = Duration::from_secs(10);
        let mut b = LogBudget::new(2, w, t0);
        assert!(b.allow(t0) && b.allow(t0));
        assert!(!b.allow(t0) && !b.allow(t0 + Duration::from_secs(1)));
        assert_eq!(
            b.unlogged(t0 + Duration::from_secs(9)),
            None,
            "not over yet"
        );
        assert_eq!(b.unlogged(t0 + w), Some(2));
        assert!(b.allow(t0 + w), "a new window");
        assert_eq!(b.unlogged(t0 + w * 3), None, "nothing left unlogged");
        let later = t0 + w * 3;
        assert!(b.allow(later) && b.allow(later) && !b.allow(later));
    }

    /// A connection another worker accepted for this one (`Envelope::Adopt`) starts here
    /// as if accepted here: it is greeted and counted. Once this worker's listeners are
    /// closed (lame duck, shutdown) it takes none: the socket is closed and its place in
    /// the gate given back.
    #[test]
    fn an_adopted_connection_starts_here_unless_the_listeners_are_closed() {
        use std::io::Read as _;
        let (mut w, _mesh) = test_worker(2, Config::default());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener");
        let adopt = |w: &mut Worker| {
            let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            client
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let (sock, peer) = listener.accept().unwrap();
            sock.set_nonblocking(true).unwrap();
            let slot = w
                .gate
                .admit(peer.ip(), w.now, w.router.me)
                .expect("admitted");
            let adoption = Adoption {
                sock: Socket::Tcp(mio::net::TcpStream::from_std(sock)),
                peer,
                port: Port::Text,
                slot,
            };
            w.handle_envelope(Envelope::Adopt(Box::new(adoption)));
            assert!(!w.turn(), "not shutting down");
            client
        };

        let mut greeted = adopt(&mut w);
        let mut info = [0u8; 5];
        greeted.read_exact(&mut info).expect("the INFO line");
        assert_eq!(&info, b"INFO ");
        assert_eq!(w.conns.len(), 1);
        assert_eq!(
            crate::stats::Totals::of(&w.router.stats).total_connections,
            1
        );

        w.close_listeners();
        let mut refused = adopt(&mut w);
        let mut rest = Vec::new();
        refused.read_to_end(&mut rest).expect("closed, not reset");
        assert!(rest.is_empty(), "nothing said: {rest:?}");
        assert_eq!(w.conns.len(), 1, "not opened");
        assert_eq!(w.gate.open(), 1, "its place in the gate given back");
    }

    /// A socket pair's end handed over by a bridge (`Envelope::Attach`) is served as a
    /// binary-port connection: the handshake on it gets `WELCOME`, and it is counted in
    /// the gate. One the gate refuses gets the refusal's `ERROR`, as a TCP client would;
    /// once the listeners are closed it is closed at once.
    #[test]
    fn an_attached_socket_pair_is_served_as_a_binary_connection() {
        use std::io::{Read as _, Write as _};
        use tern_protocol::binary::{
            encode_client_frame, ClientFrame, ErrorCode, Hello, Limits, Preface, ServerFrame,
            ServerFrameDecoder,
        };
        let mut config = Config::default();
        config.admission.max_connections = 1;
        let (mut w, _mesh) = test_worker(1, config);
        let attach = |w: &mut Worker| {
            let (mine, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
            mine.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            w.handle_envelope(Envelope::Attach(Box::new(theirs)));
            mine
        };

        let mut pipe = attach(&mut w);
        assert_eq!(w.conns.len(), 1, "opened");
        assert_eq!(w.gate.open(), 1, "counted");
        let mut hello = BytesMut::new();
        Preface::default().encode(&mut hello);
        encode_client_frame(&ClientFrame::Hello(Hello::default()), &mut hello).unwrap();
        pipe.write_all(&hello).unwrap();
        let mut got = BytesMut::new();
        let mut decoder = ServerFrameDecoder::new(Limits::default());
        let frame = loop {
            assert!(!w.turn(), "not shutting down");
            let mut chunk = [0u8; 4096];
            let n = pipe.read(&mut chunk).expect("an answer");
            got.extend_from_slice(&chunk[..n]);
            if let Some(frame) = decoder.decode(&mut got).unwrap() {
                break frame;
            }
        };
        assert!(matches!(frame, ServerFrame::Welcome(_)), "{frame:?}");

        let mut refused = attach(&mut w);
        let mut said = Vec::new();
        refused.read_to_end(&mut said).expect("closed");
        let frame = ServerFrameDecoder::new(Limits::default())
            .decode(&mut BytesMut::from(&said[..]))
            .unwrap();
        assert!(
            matches!(&frame, Some(ServerFrame::Error(e)) if e.code == ErrorCode::TooManyConnections && e.fatal),
            "{frame:?}"
        );
        assert_eq!(w.conns.len(), 1, "not opened");

        w.close_listeners();
        let mut refused = attach(&mut w);
        let mut rest = Vec::new();
        refused.read_to_end(&mut rest).expect("closed");
        assert!(rest.is_empty(), "nothing said: {rest:?}");
        assert_eq!(w.conns.len(), 1, "not opened");
    }
}

#[cfg(test)]
mod session_tests;
