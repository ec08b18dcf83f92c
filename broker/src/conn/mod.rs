//! One client connection, on either port: the text (NATS) port or the binary (Tern) port.
//!
//! Owns: [`Conn`], which is three parts side by side. Its [`Session`] is everything both
//! protocols share: its read buffer and outbound queue (its bytes in and bytes out), its
//! subscriptions (by sid), its ping state, its traffic counters, its admission state (its
//! place among the broker's connections, its publish buckets, its throttle) and its text
//! catch-ups in progress (each holding a replay slot), its identity and permissions
//! ([`access`]). Its protocol's state ([`wire::Proto`]: a `TextState` or a `BinaryState`)
//! is the rest, in one module per protocol ([`text`], [`binary`]). Beneath them, its I/O
//! layer ([`io::Io`]: the socket and, for TLS or WebSocket, the transport, [`link`]) does
//! every read and write.
//!
//! The session is driven by bytes: `Conn` has the I/O layer read into the session's read
//! buffer and write its outbound queue, and tells the session what came of it (bytes read
//! and the room they had, the end of input, an error, the transport ready with its
//! greeting, the transport failed with its reason, bytes written and when, what the
//! transport still holds). What the session decides (how much a read asks for, refilling
//! the queue from the subscriptions, latency, congestion, closing reasons, what a
//! plain-text client on a TLS port is told) stays in the session; no step of it names a
//! socket or a transport, so its tests hand it bytes and take bytes (`session_tests.rs`).
//!
//! The two meet in two traits. A protocol decodes the client's operations with its own
//! state and applies each through the session's shared steps here (`admit`, `publish`,
//! `add_sub`, `unsubscribe`, `ping`): [`protocol::Protocol`], handed its state and the
//! session as two borrows, so it never asks which protocol it is. The session's steps that
//! say something (`deliver`, `ack`, `fail`, the `PONG`...) are handed the protocol as a
//! [`wire::Wire`] to say it in, and never ask either: inside a protocol's decoding, the
//! protocol hands itself (a direct call); elsewhere `Conn` hands its [`wire::Proto`], which
//! picks the protocol with one match per call.
//!
//! Contract: the worker reads the connection when the socket is readable (edge triggered:
//! until the socket would block) and when a [`ReadState::Throttled`] pause ends, itself
//! sequencing each socket read ([`Conn::read_socket`]), its inbox sync and the bytes'
//! application ([`Conn::apply_read`]); it calls
//! [`Conn::deliver`], [`Conn::ack`] and
//! [`Conn::gap`] and [`Session::replay_done`] for what the shards address to it,
//! [`Conn::verdict`] when the checker thread has decided about its credentials,
//! [`Conn::flush`] when it has output (and at once after a delivery when
//! [`Session::wants_flush`]: over its budget, it writes before it gives anything up),
//! [`Conn::tick`] on the ping timer,
//! [`Conn::going_away`] once when lame duck mode begins, and [`Session::unsubscribe_all`] and
//! [`Session::end_replays`] before dropping it. A connection that must go sets `closing`; the
//! worker closes it at the end of the loop turn.
//!
//! Every step reaches the rest of the broker through a [`Context`] (`context.rs`: publish,
//! subscribe, send an envelope, read the configuration, the counters, the instant...),
//! never through the worker's `Router` itself, which is only the real implementation of
//! it; so a session runs in a unit test with a fake one, bytes in and bytes out
//! (`session_tests.rs`), without a worker or a socket.
//!
//! Never: reads another connection's state, reaches a worker's internals (its shard,
//! inbox or outbox) other than through its [`Context`], or blocks; and the [`Session`]
//! never reads or writes a socket or a transport (that is [`io::Io`]'s, called by `Conn`).

pub(crate) mod access;
mod binary;
pub(crate) mod congestion;
mod context;
#[cfg(test)]
pub(crate) mod fake;
pub(crate) mod io;
pub(crate) mod link;
pub(crate) mod presence;
mod protocol;
mod queue;
#[cfg(test)]
mod session_tests;
pub(crate) mod socket;
mod text;
mod wire;

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use slab::Slab;
use tern_protocol::binary::{ErrorCode, Welcome};
use tern_protocol::text::ServerInfo;
use tracing::debug;

use crate::admission::{self, ConnAdmission, RateVerdict, SubscriptionLimit};
use crate::config::Limits;
use crate::index::FastMap;
use crate::merge::{self, Merge};
use crate::mesh::{ConnId, Envelope, InboxPart, Msg, ReplayRun, Stamp, Start, SubRef};
use crate::outbound::Outbound;
use crate::replay::ConnReplays;
use crate::snapshot::{
    ConnInfo, ConnKeys, ListKind, SubDetail, SubsListing, WallClock, DETAIL_ENTRY_BYTES,
    FILTER_ENTRY_BYTES,
};
use crate::stats::{bump, unbump, AuthRefusal, CloseKind, TransportFailure, WorkerStats};
use crate::subqueue::Bounds;
pub(crate) use context::Context;

use crate::eviction::Tickets;
use access::{Access, Stage};
use binary::BinaryState;
use congestion::Congestion;
use io::{Handshake, Input, Io, Ready, Transmit};
use link::{Failure, Greeting, LinkKind};
use presence::SubPresence;
use protocol::Protocol;
use queue::{Lossless, SubQueueState};
use text::TextState;
use wire::{Proto, Wire};

/// Bytes read from a socket per `read` call, at most.
const READ_CHUNK: usize = 64 * 1024;

/// Bytes a new connection reads per call at first. Most connections send a `CONNECT`, a
/// few subscriptions and small messages, then idle: a full chunk would keep a page of each
/// idle connection's buffer resident. A read that fills its room makes the next one eight
/// times larger, up to [`READ_CHUNK`], so a busy publisher gets there in three reads.
const READ_FIRST: usize = 512;

/// Why a connection was closed. Reported in logs and in monitoring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CloseReason {
    ClientClosed,
    /// The client sent something the protocol does not allow; the text is what it was told.
    ProtocolError(String),
    SlowConsumer,
    StaleConnection,
    Io(String),
    ServerShutdown,
    /// The handshake was not done within `auth_timeout` (binary: preface and `HELLO`;
    /// text: the first control line).
    HandshakeTimeout(Duration),
    /// The transport failed (TLS, WebSocket), or its handshake was not done in time; the
    /// text says what happened.
    Transport(String),
    /// Authentication was refused, for this reason.
    Unauthorized(AuthRefusal),
    /// The connection's token expired and was not refreshed.
    Expired,
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
            CloseReason::HandshakeTimeout(d) => write!(f, "handshake timeout after {d:?}"),
            CloseReason::Transport(e) => f.write_str(e),
            CloseReason::Unauthorized(r) => write!(f, "authorization violation: {}", r.name()),
            CloseReason::Expired => f.write_str("authentication expired"),
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
            CloseReason::HandshakeTimeout(_) => CloseKind::HandshakeTimeout,
            CloseReason::Transport(_) => CloseKind::Transport,
            CloseReason::Unauthorized(_) => CloseKind::Unauthorized,
            CloseReason::Expired => CloseKind::Expired,
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
    /// A publish put the connection over a rate (`rate_action = "slow"`): nothing more is
    /// read or applied from it until this instant, when the worker must read it again
    /// itself (readiness is edge-triggered: no event will come for bytes already waiting).
    Throttled(Instant),
    /// Still throttled (since an earlier pass that returned `Throttled`): not read.
    Paused,
}

/// The bit that tells the barrier behind an ended subscription (`Session::end_sub`, its
/// subscription id in the other bits) from a `PING`'s.
const UNSUB_BARRIER: u64 = 1 << 63;

impl SubState {
    /// What `/connz?subs=detail` shows about it.
    fn detail(&self) -> SubDetail {
        let (queued_msgs, queued_bytes) = self.q.depth();
        SubDetail {
            sid: match &self.sid {
                Sid::Text(s) => String::from_utf8_lossy(s).into_owned(),
                Sid::Binary(n) => n.to_string(),
                Sid::Events(n) => format!("{n} (presence events)"),
            },
            subject: String::from_utf8_lossy(&self.filter).into_owned(),
            queued_msgs,
            queued_bytes,
            max_queue_msgs: self.q.bounds.messages,
            max_queue_bytes: self.q.bounds.bytes,
            dropped_msgs: self.q.dropped,
            coalesced_msgs: self.q.coalesced,
            lossless: self.q.lossless.is_some(),
            lossless_fallbacks: self.q.lossless.as_ref().map_or(0, |l| l.fallbacks),
        }
    }
}

/// A subscription id as its client spelled it: any token on the text port, a `u32` on the
/// binary port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Sid {
    Text(Bytes),
    Binary(u32),
    /// The subscription to its room's events that a binary subscription with the presence
    /// events option brings along: its deliveries go out as `PRESENCE` frames for the
    /// binary sid, and it ends with that subscription.
    Events(u32),
}

/// A subscription of this connection.
#[derive(Debug)]
struct SubState {
    sid: Sid,
    /// The filter and queue group, copied out of the read buffer (see `add_sub`).
    filter: Bytes,
    queue: Option<Bytes>,
    id: u64,
    /// Auto-unsubscribe after this many deliveries.
    max: Option<u64>,
    delivered: u64,
    /// Its queue of deliveries waiting for the outbound buffer, and what it dropped.
    q: SubQueueState,
    /// Its catch-ups from several shards, merged into time order until all have caught
    /// up (`merge.rs`).
    merge: Option<Box<Merge>>,
    /// A binary subscription's start in each shard, until `SUBSCRIBED` is sent.
    starts: Option<Box<binary::Starts>>,
    /// Each delivery is checked against its user's permissions first: a wildcard that
    /// takes in a subject the user may not receive (`Access::screens`).
    screened: bool,
    /// Its part in a room's presence, if any (`presence.rs`).
    presence: Option<Box<SubPresence>>,
    /// Ended by the client (`end_sub`): how many shards have still to answer the barrier
    /// behind its unsubscription. It takes what was routed to it before, and goes once
    /// all have answered and its queue is empty.
    ending: Option<usize>,
}

/// What a connection's subscription queues hold together.
#[derive(Debug, Default)]
struct Held {
    msgs: usize,
    bytes: usize,
    /// Every message its (not lossless) queues took, by (subscription key, id), in
    /// eviction order.
    tickets: Tickets<(u32, u64)>,
}

/// A socket just accepted, with what the worker gave it: the makings of a [`Conn`].
pub(crate) struct Accepted {
    pub id: ConnId,
    pub client_id: u64,
    pub peer: SocketAddr,
    /// Whether it must authenticate first, and the nonce it is given to sign.
    pub access: Access,
}

/// What a connection keeps whatever protocol it speaks: everything but the protocol's
/// own state, which [`Conn`] holds beside it and hands to each step that speaks.
pub(crate) struct Session {
    pub id: ConnId,
    pub client_id: u64,
    pub peer: SocketAddr,
    rbuf: BytesMut,
    /// Bytes read into `rbuf` since it was made (it is replaced once empty past a few
    /// chunks, so that a buffer grown for a large message does not stay).
    rbuf_taken: usize,
    /// Room each read asks for (from [`READ_FIRST`] up to [`READ_CHUNK`]).
    read_chunk: usize,
    pub out: Outbound,
    subs: Slab<SubState>,
    sids: FastMap<Sid, usize>,
    /// The loop turn in which bytes were last read from the socket: the `received` of the
    /// messages they carry, from which broker latency is measured.
    read_at: Instant,
    /// The loop turn in which the client's last complete operation (frame) was applied,
    /// refused or not. The ping timer's activity: bytes that complete nothing (a trickled
    /// line or payload) do not count, so a client cannot stay open on a few bytes a second.
    last_activity: Instant,
    /// Complete operations (frames) applied, refused or not.
    ops: u64,
    last_ping: Instant,
    pings_out: u32,
    /// Set when the connection must close; the worker closes it at the end of the turn.
    pub closing: Option<CloseReason>,
    /// Bookkeeping for the worker's lists (so a connection is listed once).
    pub listed_read: bool,
    pub listed_write: bool,
    /// A write hit `WouldBlock`: wait for the writable event before trying again.
    pub write_blocked: bool,
    /// Bytes taken from `out` that the I/O layer has not written yet (encoded by a
    /// transport), as it last said (`Session::wrote_out`): part of what waits for the
    /// client.
    unsent_below: usize,
    /// Over `max_pending` with the socket not known to be full: the I/O layer must write
    /// first (`Session::wants_flush`), and what is still over is evicted after
    /// (`Session::flushed`).
    flush_first: bool,
    /// The outbound buffer reached `write_buffer` on a delivery while the socket is not
    /// known to be full: the I/O layer writes before the next delivery
    /// (`Session::wants_flush`), so a client that reads keeps getting its deliveries
    /// straight into the outbound buffer instead of through its subscription queues (a
    /// copy of each message, tickets, a refill: several times a direct delivery's cost).
    /// Unless the client is not reading what it was given: when the kernel already holds
    /// `write_buffer` bytes it has not taken (`Transmit::unread`), the write waits for the
    /// loop turn's end and what follows is queued, so a stalled reader meets its queue's
    /// limits (drops, a lossless fall-back) instead of filling the kernel's buffers first.
    write_now: bool,
    /// `PONG`s waiting for the shards this connection sent traffic to (see `ping`).
    barrier: PingBarrier,
    /// Subscriptions with deliveries (or a drop notice) waiting, as (key, id), in the
    /// order `fill` serves them.
    backlog: VecDeque<(usize, u64)>,
    /// Subscriptions over their high-water mark (overflowed, not yet drained below half),
    /// and since when the first of them has been.
    over_subs: usize,
    over_since: Option<Instant>,
    /// Subscriptions whose queue is at least half full (not yet back to a quarter): the
    /// connection is congested while any is (see `congestion`).
    high_subs: usize,
    /// What its subscription queues hold together, and in which order it gives that up
    /// when it is over `max_pending`.
    held: Held,
    /// The last message copied for a queue and its copy, so that the queues of several
    /// subscriptions share one copy of a message (`Session::compacted`).
    last_compact: Option<(Weak<Msg>, Weak<Msg>)>,
    /// As a consumer: whether it slows its publishers.
    congestion: Congestion,
    /// When the timer must judge the congestion next (a timer is set for it).
    next_judgement: Option<Instant>,
    /// As a publisher: the congested consumers it waits for, and until when at most.
    stalled_on: Vec<ConnId>,
    stall_until: Option<Instant>,
    /// Not read because what waits for the client is over `max_pending`, and since when.
    over_budget_since: Option<Instant>,
    /// Set when it was not read for being over budget and has drained since: the worker
    /// must read it again (readiness is edge-triggered).
    resume_read: bool,
    /// Its budget made it give up queued messages, and it has not drained to half of
    /// `max_pending` since (with `over_subs`, what `--slow-consumer disconnect` judges).
    budget_over: bool,
    /// The last lossless fall-back number handed out.
    next_lag: u64,
    /// The arrival number of the last delivery put in a subscription queue.
    last_arrival: u64,
    /// `PONG`s waiting for the deliveries queued before them: the arrival number each
    /// waits past.
    pongs_held: VecDeque<u64>,
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
    /// Messages its subscription queues dropped on overflow.
    queue_dropped: u64,
    /// Admission control: this connection's place among the broker's connections, its
    /// publish buckets and its throttle.
    admission: ConnAdmission,
    /// Its text catch-ups (`$TERN.REPLAY`) in progress, each holding one of the broker's
    /// replay slots until every shard it went to is done or the connection closes.
    replays: ConnReplays,
    /// Who the client is and what it may do (`access.rs`).
    access: Access,
    /// The presence rooms it is in (`presence.rs`), at most `max_presence_joins`.
    rooms: Vec<Bytes>,
    /// A subscription to a room's events wants a fresh snapshot that was not yet due
    /// (`Session::retry_snapshots`).
    presence_stale: bool,
    /// Subscriptions the client ended whose barriers are not all answered: (id, key).
    ending_subs: Vec<(u64, usize)>,
    /// Subscriptions the client ended that are still in `subs` (`end_sub`): not counted
    /// against its limits.
    ended: usize,
}

/// One client connection: its [`Session`] (everything that does not depend on the
/// protocol) and its protocol's own state ([`Proto`]), side by side so that each protocol's
/// decoding gets its own state and the session as two borrows, and every step that says
/// something is handed the protocol to say it in; and its I/O layer ([`Io`]), which reads
/// and writes for the session, and after which `Conn` tells the session what happened.
///
/// The worker reaches the session's protocol-independent steps and fields through
/// `Deref`; the steps that speak are `Conn`'s own, and pass the protocol down.
pub(crate) struct Conn {
    session: Session,
    proto: Proto,
    /// Its socket and transport: the I/O layer that reads bytes into the session and
    /// writes the bytes it queued (`io.rs`).
    io: Io,
}

impl std::ops::Deref for Conn {
    type Target = Session;

    fn deref(&self) -> &Session {
        &self.session
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Session {
        &mut self.session
    }
}

impl Conn {
    /// Gives the connection its admission state (its gate slot and publish buckets), made
    /// when it was accepted.
    pub fn with_admission(mut self, admission: ConnAdmission) -> Conn {
        self.session.admission = admission;
        self
    }

    /// A connection on the text port; `INFO` (with this client's id and address) is queued
    /// at once, as the NATS protocol starts. Over TLS, the `INFO` goes out in plain text
    /// and TLS starts behind it, as nats-server does; with a link whose greeting is the
    /// `INFO` (`handshake_first`), it waits for the TLS handshake instead.
    pub fn text(
        accepted: Accepted,
        io: Io,
        info: &ServerInfo,
        limits: &Limits,
        now: Instant,
    ) -> Conn {
        let mut text = TextState::new(limits);
        if accepted.access.is_pending() {
            text.start_auth_clock(now + limits.auth_timeout);
        }
        let mut conn = Conn {
            session: Session::new(accepted, now),
            proto: Proto::Text(text),
            io,
        };
        let (s, io) = (&mut conn.session, &mut conn.io);
        if !io.greets_when_ready() {
            s.greet_text(info);
            if let Err(failure) = io.send_plain_then_start_tls(&mut s.out) {
                s.closing = Some(failure.reason);
            }
            s.wrote_out(io.unsent());
        }
        conn
    }

    /// A connection on the WebSocket port: nothing is sent until the upgrade is accepted;
    /// then its path picks the protocol (`Conn::transport_ready`).
    pub fn websocket(accepted: Accepted, io: Io, limits: &Limits, now: Instant) -> Conn {
        debug_assert!(io.has_link(), "a WebSocket connection has a link");
        Conn {
            session: Session::new(accepted, now),
            proto: Proto::Text(TextState::new(limits)),
            io,
        }
    }

    /// A connection on the binary port. Nothing is sent until the client's preface and
    /// `HELLO` arrive; `welcome` is the server's part of the answer.
    pub fn binary(
        accepted: Accepted,
        io: Io,
        welcome: &Welcome,
        limits: &Limits,
        now: Instant,
    ) -> Conn {
        let state = BinaryState::new(welcome, accepted.client_id, limits);
        Conn {
            session: Session::new(accepted, now),
            proto: Proto::Binary(state),
            io,
        }
    }

    /// What `/connz` shows about this connection, with the subscription list `subs` asks
    /// for (at most `subs.max` entries in about `subs.max_bytes`; `subscriptions` is always
    /// the full count). Allocates: monitoring only.
    pub fn info(&self, worker: usize, clock: &WallClock, subs: &SubsListing) -> ConnInfo {
        let (protocol, client) = (self.proto.protocol(), self.proto.client());
        let s = &self.session;
        let (pending_bytes, pending_msgs) = s.waiting();
        let mut info = ConnInfo {
            cid: s.client_id,
            worker,
            protocol,
            transport: self.io.kind().map_or("tcp", LinkKind::name),
            tls_peer: self.io.peer_subject(),
            user: s.user(),
            ip: s.peer.ip().to_string(),
            port: s.peer.port(),
            name: client.name,
            lang: client.lang,
            version: client.version,
            start_us: clock.unix_us(s.started),
            last_activity_us: clock.unix_us(s.last_activity),
            stop_us: None,
            reason: None,
            subscriptions: s.subs.len() - s.ended,
            subscriptions_list: Vec::new(),
            subscriptions_detail: Vec::new(),
            queue_dropped_msgs: s.queue_dropped,
            in_msgs: s.in_msgs,
            in_bytes: s.in_bytes,
            out_msgs: s.out_msgs,
            out_bytes: s.out_bytes,
            pending_bytes,
            pending_msgs,
            dropped_msgs: s.dropped,
        };
        let mut budget = subs.budget();
        // Ended ones (still taking what was routed to them before) are not listed.
        for (_, s) in s.subs.iter().filter(|(_, s)| s.ending.is_none()) {
            match subs.kind {
                ListKind::None => break,
                ListKind::Filters => {
                    if !budget.take(s.filter.len() + FILTER_ENTRY_BYTES) {
                        break;
                    }
                    let filter = String::from_utf8_lossy(&s.filter).into_owned();
                    info.subscriptions_list.push(filter);
                }
                ListKind::Detail => {
                    let d = s.detail();
                    if !budget.take(d.sid.len() + d.subject.len() + DETAIL_ENTRY_BYTES) {
                        break;
                    }
                    info.subscriptions_detail.push(d);
                }
            }
        }
        info
    }

    /// The name the client gave (`CONNECT` or `HELLO`), if any.
    pub fn name(&self) -> Option<String> {
        self.proto.client().name
    }

    /// One read from the socket (through the transport, when the connection has one) into
    /// the session's read buffer: the bytes taken, 0 when the client closed it. Nothing is
    /// applied yet. The I/O layer reads; the session is told what came of it (how much,
    /// the transport ready, the transport failed).
    pub fn read_socket(&mut self, cx: &impl Context) -> std::io::Result<usize> {
        let input = if self.io.has_link() {
            let room = self.session.read_chunk;
            self.io.read_link(&mut self.session.rbuf, room)?
        } else {
            let rbuf = self.session.reserve_read(self.proto.bytes_needed());
            self.io.read_plain(rbuf)?
        };
        Ok(self.take_input(input, cx))
    }

    /// Tells the session what a read of the I/O layer did; returns the bytes it counts as
    /// taken from the socket (0: the client closed it).
    fn take_input(&mut self, input: Input, cx: &impl Context) -> usize {
        let s = &mut self.session;
        match input {
            Input::Read { taken, room } => {
                s.bytes_read(taken, room);
                s.wrote_out(self.io.unsent());
                taken
            }
            Input::Ready { taken, room, ready } => {
                s.bytes_read(taken, room);
                s.wrote_out(self.io.unsent());
                self.transport_ready(ready, cx);
                taken
            }
            Input::Failed { failure, kind } => {
                if let Some(said) = s.transport_failed(&self.proto, failure, kind, cx) {
                    self.io.say_plain(&said);
                }
                s.wrote_out(self.io.unsent());
                // Not 0, which would say the client closed the socket.
                1
            }
        }
    }

    /// Bytes the client sent, handed to the session as one read of them (a unit test's
    /// bytes in; the I/O layer reads into the buffer in place instead).
    #[cfg(test)]
    pub fn received(&mut self, bytes: &[u8]) {
        self.session.reserve_read(0).extend_from_slice(bytes);
        self.session.bytes_read(bytes.len(), usize::MAX);
    }

    /// Applies every whole operation read so far, as of this loop turn (`now`); `fresh`
    /// says bytes were just read (the `received` of the messages they carry). Returns the
    /// state to report when the connection must not be read further now (throttled by
    /// what it published), `None` to go on.
    ///
    /// The connection's protocol decodes and applies the bytes with its own state, through
    /// the session's steps ([`Protocol::apply_buffered`]).
    pub fn apply_read(
        &mut self,
        cx: &mut impl Context,
        now: Instant,
        fresh: bool,
    ) -> Option<ReadState> {
        let s = &mut self.session;
        if fresh {
            s.read_at = now;
        }
        let ops = s.ops;
        self.proto.apply_buffered(s, cx, now);
        s.applied(ops, now);
        if fresh && self.io.peer_closed() {
            s.peer_closed();
        }
        s.throttle_began().map(ReadState::Throttled)
    }

    /// The transport became ready (TLS handshake done, WebSocket upgrade accepted): counts
    /// it, and greets the client as its protocol starts. A WebSocket's path picks the
    /// protocol: `/tern` is the binary one, anything else the text one (its state made
    /// anew: nothing was decoded before the upgrade).
    fn transport_ready(&mut self, ready: Ready, cx: &impl Context) {
        let s = &mut self.session;
        let Ready {
            kind,
            greeting,
            binary_path,
        } = ready;
        // What waited for the handshake (an INFO of lame duck mode) may go now: no
        // writable event is coming for it.
        s.write_blocked = false;
        if kind != LinkKind::WebSocket {
            bump(&cx.stats().tls_handshakes, 1);
        }
        debug!(
            peer = %s.peer,
            client_id = s.client_id,
            transport = kind.name(),
            "transport ready"
        );
        match greeting {
            Greeting::None => {}
            Greeting::Text(info) => s.greet_text(&info),
            Greeting::ByPath(both) => {
                bump(&cx.stats().websocket_upgrades, 1);
                let (info, welcome) = *both;
                let limits = &cx.config().limits;
                if binary_path {
                    let state = BinaryState::new(&welcome, s.client_id, limits);
                    self.proto = Proto::Binary(state);
                } else {
                    s.greet_text(&info);
                    let mut text = TextState::new(limits);
                    if s.access.is_pending() {
                        text.start_auth_clock(cx.now() + limits.auth_timeout);
                    }
                    self.proto = Proto::Text(text);
                }
            }
        }
    }

    /// The socket, to (de)register it with the poll; `None` in unit tests.
    pub fn source(&mut self) -> Option<&mut dyn mio::event::Source> {
        self.io.source()
    }

    /// The connection is closing: its transport says so to the peer (a WebSocket close
    /// frame with a code for the reason, a TLS close_notify), with one write that does not
    /// block. Nothing for a plain connection.
    pub fn close_link(&mut self) {
        if let Some(reason) = self.session.closing.as_ref() {
            self.io.close(reason);
        }
    }
}

/// The steps the worker calls that may say something to the client: each hands the session
/// the connection's protocol to say it in.
impl Conn {
    /// Queues one delivery (`Session::deliver`).
    pub fn deliver(&mut self, sref: SubRef, msg: &Arc<Msg>, cx: &mut impl Context) -> bool {
        self.session.deliver(&mut self.proto, sref, msg, cx)
    }

    /// Queues one catch-up step's records for `sref`, in order (`Session::deliver_record`),
    /// writing to the socket whenever what waits goes over its budget, as the worker does
    /// after a single delivery. Returns true when anything was queued.
    pub fn deliver_run(&mut self, sref: SubRef, run: &ReplayRun, cx: &mut impl Context) -> bool {
        deliver_run(
            &mut self.session,
            &mut self.proto,
            &mut self.io,
            sref,
            run,
            cx,
        )
    }

    /// `deliver_run`, with the writes it makes going to `to`: a unit test's bytes out.
    #[cfg(test)]
    pub fn deliver_run_to(
        &mut self,
        sref: SubRef,
        run: &ReplayRun,
        to: &mut impl Transmit,
        cx: &mut impl Context,
    ) -> bool {
        deliver_run(&mut self.session, &mut self.proto, to, sref, run, cx)
    }

    /// A published message it asked an acknowledgement for was routed (`Session::ack`).
    pub fn ack(&mut self, ack_id: u64, stamp: Stamp, duplicate: bool) -> bool {
        self.session.ack(&mut self.proto, ack_id, stamp, duplicate)
    }

    /// A shard cannot replay part of what a resuming subscription asked for
    /// (`Session::gap`).
    pub fn gap(
        &mut self,
        sref: SubRef,
        shard: u16,
        requested: u64,
        oldest: u64,
        cx: &mut impl Context,
    ) -> bool {
        self.session
            .gap(&mut self.proto, sref, shard, requested, oldest, cx)
    }

    /// A shard told a subscription where it starts (`Session::position`).
    pub fn position(&mut self, sref: SubRef, shard: u16, last: u64, cx: &mut impl Context) {
        self.session
            .position(&mut self.proto, sref, shard, last, cx);
    }

    /// A shard of merged catch-ups reached the end of its log (`Session::caught_up`).
    pub fn caught_up(&mut self, sref: SubRef, shard: u16, cx: &mut impl Context) -> bool {
        self.session.caught_up(&mut self.proto, sref, shard, cx)
    }

    /// A shard of merged "last N" catch-ups counted what it sends (`Session::counted`).
    pub fn counted(&mut self, sref: SubRef, shard: u16, sends: u64, cx: &mut impl Context) -> bool {
        self.session
            .counted(&mut self.proto, sref, shard, sends, cx)
    }

    /// A shard answered a barrier (`Session::barrier_done`).
    pub fn barrier_done(&mut self, token: u64, cx: &mut impl Context) -> bool {
        self.session.barrier_done(&mut self.proto, token, cx)
    }

    /// The checker thread's answer about its credentials (`Session::verdict`).
    pub fn verdict(
        &mut self,
        outcome: Result<tern_auth::Identity, tern_auth::AuthFailure>,
        cx: &mut impl Context,
    ) {
        self.session.verdict(&mut self.proto, outcome, cx);
    }

    /// Writes what waits for the client through the I/O layer (see `flush` below).
    pub fn flush(&mut self, cx: &mut impl Context) {
        flush(&mut self.session, &mut self.proto, &mut self.io, cx);
    }

    /// Writes what waits for the client to `to`, as far as it takes it, refilling the
    /// outbound queue from the subscription queues as it empties; the session is told
    /// what was written after each write (`Session::wrote`), and whether more must wait.
    /// A unit test's bytes out; the broker's go through the I/O layer (`Conn::flush`).
    #[cfg(test)]
    pub fn flush_to(&mut self, to: &mut impl Transmit, cx: &mut impl Context) {
        flush(&mut self.session, &mut self.proto, to, cx);
    }

    /// The ping timer (`Session::tick`): the transport gives back its idle buffers first,
    /// and a handshake not done yet is judged by its deadline alone.
    pub fn tick(&mut self, now: Instant, limits: &Limits, cx: &mut impl Context) {
        if self.session.closing.is_some() {
            return;
        }
        self.io.shrink();
        self.session.shrink();
        let handshake = self.io.handshake();
        self.session
            .tick(&mut self.proto, handshake, now, limits, cx);
    }

    /// Lame duck mode began (`Session::going_away`).
    pub fn going_away(&mut self, info: &ServerInfo, deadline: Instant, now: Instant) -> bool {
        self.session
            .going_away(&mut self.proto, info, deadline, now)
    }
}

impl Session {
    fn new(accepted: Accepted, now: Instant) -> Session {
        let Accepted {
            id,
            client_id,
            peer,
            access,
        } = accepted;
        Session {
            id,
            client_id,
            peer,
            rbuf: BytesMut::with_capacity(READ_FIRST),
            rbuf_taken: 0,
            read_chunk: READ_FIRST,
            out: Outbound::default(),
            subs: Slab::new(),
            sids: FastMap::default(),
            read_at: now,
            last_activity: now,
            ops: 0,
            last_ping: now,
            pings_out: 0,
            closing: None,
            listed_read: false,
            listed_write: false,
            write_blocked: false,
            unsent_below: 0,
            flush_first: false,
            write_now: false,
            barrier: PingBarrier::default(),
            backlog: VecDeque::new(),
            over_subs: 0,
            over_since: None,
            high_subs: 0,
            held: Held::default(),
            last_compact: None,
            congestion: Congestion::new(now),
            next_judgement: None,
            stalled_on: Vec::new(),
            stall_until: None,
            over_budget_since: None,
            resume_read: false,
            budget_over: false,
            next_lag: 0,
            last_arrival: 0,
            pongs_held: VecDeque::new(),
            started: now,
            in_msgs: 0,
            in_bytes: 0,
            out_msgs: 0,
            out_bytes: 0,
            dropped: 0,
            queue_dropped: 0,
            admission: ConnAdmission::default(),
            replays: ConnReplays::default(),
            access,
            rooms: Vec::new(),
            presence_stale: false,
            ending_subs: Vec::new(),
            ended: 0,
        }
    }

    /// What the `/connz` sort orders look at, without copying a string.
    pub fn keys(&self, clock: &WallClock) -> ConnKeys<'static> {
        ConnKeys {
            cid: self.client_id,
            start_us: clock.unix_us(self.started),
            last_activity_us: clock.unix_us(self.last_activity),
            stop_us: None,
            reason: None,
            subscriptions: self.subs.len() - self.ended,
            pending_bytes: self.out.len(),
            in_msgs: self.in_msgs,
            in_bytes: self.in_bytes,
            out_msgs: self.out_msgs,
            out_bytes: self.out_bytes,
        }
    }

    /// What waits for the client in bytes (`Session::pending`: its write buffer, queues and
    /// held `PONG`s), and the deliveries not yet completely written (in the write buffer
    /// and in its subscription queues).
    pub fn waiting(&self) -> (usize, usize) {
        (self.pending(), self.out.queued_msgs() + self.held.msgs)
    }

    /// Drops everything queued for the client, counting the deliveries that never went
    /// out.
    pub fn discard_output(&mut self, stats: &WorkerStats) {
        let dropped = self.out.discard() as u64;
        self.dropped += dropped;
        bump(&stats.dropped_msgs, dropped);
    }

    /// The user it authenticated as (or claimed, when it was refused).
    pub fn user(&self) -> Option<String> {
        self.access.user().map(|u| u.to_string())
    }

    /// The handshake is done (no authentication, or it succeeded): what the protocol says
    /// then (`Wire::granted`: `WELCOME` on the binary port).
    fn granted(&mut self, w: &mut impl Wire) {
        let now = self.read_at;
        w.granted(&mut self.out, now);
    }

    /// The server's `INFO` as this connection is told it: its id and address, whether it
    /// must still authenticate, and its nonce.
    fn personal_info(&self, info: &ServerInfo) -> ServerInfo {
        let mut info = info.clone();
        info.client_id = self.client_id;
        info.client_ip = Some(self.peer.ip().to_string());
        info.auth_required = self.access.stage != Stage::Open;
        info.nonce = self.access.nonce.clone();
        info
    }

    /// Whether the connection may be read now: `Some` with the state to report when it
    /// must not be (stalled for a congested consumer, over its budget, throttled). The
    /// worker then reads it as `Worker::read_connection` says: socket bytes
    /// ([`Conn::read_socket`]), the worker's inbox synced, the bytes applied
    /// ([`Conn::apply_read`]), until the socket is drained or a budget runs out.
    pub fn read_paused(&mut self, cx: &mut impl Context, now: Instant) -> Option<ReadState> {
        self.admission.set_now(now);
        if self.access.stage == Stage::Checking {
            // Its credentials are on the checker thread: nothing more is read until the
            // verdict (the handshake deadline still runs).
            return Some(ReadState::Paused);
        }
        if self.is_stalled(now, cx) {
            return Some(ReadState::Paused);
        }
        if self.unyielding() > cx.config().limits.max_pending {
            // Its own requests are its backpressure: nothing more is read until what waits
            // for it drains (`flush` sets `resume_read`), or it is closed (`tick`).
            if self.over_budget_since.is_none() {
                self.over_budget_since = Some(now);
                bump(&cx.stats().over_budget_pauses, 1);
            }
            return Some(ReadState::Paused);
        }
        if self.admission.is_throttled() && self.admission.throttle_left(now).is_some() {
            return Some(ReadState::Paused);
        }
        None
    }

    /// True while bytes read before a pause (throttled, stalled, a full outbox) wait to be
    /// applied.
    pub fn has_unapplied(&self) -> bool {
        !self.rbuf.is_empty()
    }

    /// The read pass ended with a socket error (not `WouldBlock`).
    pub fn read_failed(&mut self, e: &std::io::Error) {
        self.closing = Some(CloseReason::Io(e.to_string()));
    }

    /// The client closed the socket.
    pub fn read_eof(&mut self) {
        self.closing = Some(CloseReason::ClientClosed);
    }

    /// The read buffer, with room reserved for the next read of a plain socket: what the
    /// decoder awaits, but a large payload is taken a few chunks at a time (a client that
    /// announces one and sends it slowly holds what it sent, not what it announced).
    /// `needed` is what the decoder awaits ([`Wire::bytes_needed`]).
    fn reserve_read(&mut self, needed: usize) -> &mut BytesMut {
        self.rbuf
            .reserve(self.read_chunk.max(needed.min(4 * READ_CHUNK)));
        &mut self.rbuf
    }

    /// The ping timer: the read buffer and the outbound queue give back their capacity when
    /// they hold nothing, as the transport's buffers do (`Io::shrink`), so an idle
    /// connection keeps no buffer at all (the read buffer was 512 bytes of a plain
    /// connection's 3.4 KiB, the greeting's 126-250 more). A busy connection allocates
    /// again at most once a tick, and its next read starts small again.
    fn shrink(&mut self) {
        if self.rbuf.is_empty() && self.rbuf.capacity() > 0 {
            self.rbuf = BytesMut::new();
            self.rbuf_taken = 0;
            self.read_chunk = READ_FIRST;
        }
        self.out.shrink();
    }

    /// A read took `taken` bytes from the socket, out of the `room` it offered (what they
    /// decode to is in the read buffer): a read that fills its room makes the next one
    /// larger, up to [`READ_CHUNK`].
    fn bytes_read(&mut self, taken: usize, room: usize) {
        self.rbuf_taken += taken;
        if taken == room {
            // More may be waiting: a busy client reads in larger chunks.
            self.read_chunk = (self.read_chunk * 8).min(READ_CHUNK);
        }
    }

    /// The transport failed: counted, and the connection closes for the failure's reason
    /// with nothing more of its own written (what the transport queued for the peer still
    /// is). A client that sent plain text to a TLS port is told why, in plain text and in
    /// what it speaks: `-ERR 'Secure Connection - TLS Required'` on the text port
    /// (nats-server's words), an `ERROR` frame on the binary port, an HTTP 400 on the
    /// WebSocket port; returned for the I/O layer to write once, without blocking.
    fn transport_failed(
        &mut self,
        w: &impl Wire,
        failure: Failure,
        kind: LinkKind,
        cx: &impl Context,
    ) -> Option<Bytes> {
        bump(&cx.stats().transport_failures[failure.kind as usize], 1);
        let said = (failure.kind == TransportFailure::PlainText).then(|| match kind {
            LinkKind::WebSocketTls => Bytes::from_static(
                b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\
                  Content-Length: 13\r\nConnection: close\r\n\r\nTLS required\n",
            ),
            _ => w.tls_required(),
        });
        self.discard_output(cx.stats());
        self.closing = Some(failure.reason);
        said
    }

    /// The peer closed the transport (close frame, close_notify) and what came before it
    /// was applied: the client closed the connection.
    fn peer_closed(&mut self) {
        if self.closing.is_none() {
            self.closing = Some(CloseReason::ClientClosed);
        }
    }

    /// The I/O layer holds `unsent` bytes taken from the outbound queue and not written
    /// yet (encoded by the transport): they count as waiting for the client.
    fn wrote_out(&mut self, unsent: usize) {
        self.unsent_below = unsent;
    }

    /// Operations were decoded and applied from the read buffer (`ops` were counted
    /// before): applying one is activity, as of this loop turn (`now`).
    fn applied(&mut self, ops: u64, now: Instant) {
        if self.ops != ops {
            self.last_activity = now;
        }
        if self.rbuf.is_empty() && self.rbuf_taken > 4 * READ_CHUNK {
            // It may have grown for a large message (its capacity shows only the part
            // after what was cut out, not the allocation behind it): let the allocation go
            // with the messages that hold slices of it, rather than keep it for a client
            // that may now stay idle. A new one is a malloc per few hundred KiB read.
            self.rbuf = BytesMut::new();
            self.rbuf_taken = 0;
        }
    }

    /// A complete operation (frame) arrived and is being handled, whether it is applied or
    /// refused.
    fn count_op(&mut self) {
        self.ops += 1;
    }

    /// Until when the connection is throttled, when applying its bytes throttled it (and it
    /// is not closing).
    fn throttle_began(&self) -> Option<Instant> {
        self.closing
            .is_none()
            .then(|| self.admission.throttled_until())
            .flatten()
    }

    /// True while operations in the read buffer may be applied: not closing, not
    /// throttled, and the worker's outbox has room for what they make (`OUTBOX_FULL`;
    /// what is left is applied when the worker reads the connection again).
    fn may_apply(&self, cx: &impl Context) -> bool {
        self.closing.is_none()
            && !self.admission.is_throttled()
            && !cx.outbox_full()
            && self.access.stage != Stage::Checking
    }

    /// Admission control of a publish the client sent, before it is routed: overload
    /// shedding, then the publish rates. A refused publish is answered in the client's
    /// protocol and counted, and false is returned. Over a rate with `rate_action =
    /// "slow"` the publish passes and the connection is throttled (see [`ReadState`]).
    /// Takes no lock and allocates nothing unless it refuses.
    fn admit(&mut self, w: &mut impl Wire, msg: &Msg, cx: &impl Context) -> bool {
        let config = &cx.config().admission;
        if msg.priority < config.shed_below_priority {
            let (behind, depth) = cx.deepest_queue();
            let (below, threshold) = (config.shed_below_priority, config.shed_queue_depth);
            if admission::sheds(msg.priority, below, depth, threshold) {
                bump(&cx.stats().publishes_shed, 1);
                let text = admission::shed_text(below, behind);
                self.refuse_publish(w, msg.ack_id, ErrorCode::Overloaded, &text);
                return false;
            }
        }
        let size = msg.payload.len() + msg.headers.as_ref().map_or(0, Bytes::len);
        match self.admission.admit_publish(config, &msg.subject, size) {
            RateVerdict::Pass => true,
            RateVerdict::Throttle { scope, .. } => {
                bump(&cx.stats().publishes_throttled[scope.kind()], 1);
                true
            }
            RateVerdict::Refuse(refusal) => {
                bump(&cx.stats().publishes_rate_refused[refusal.scope.kind()], 1);
                let text = refusal.text(config);
                self.refuse_publish(w, msg.ack_id, ErrorCode::RateLimited, &text);
                false
            }
        }
    }

    /// Tells the client its publish was refused; the connection stays open.
    fn refuse_publish(
        &mut self,
        w: &mut impl Wire,
        ack_id: Option<u64>,
        code: ErrorCode,
        text: &str,
    ) {
        w.refuse_publish(&mut self.out, ack_id, code, text);
    }

    /// Takes a place for one more subscription: refused when the connection holds
    /// `max_subscriptions` already, or the broker `max_total_subscriptions`. A refusal is
    /// counted, and the caller answers it in its protocol; an admitted subscription must
    /// be added (`add_sub`), and gives its place back when it is removed.
    fn admit_subscription(&self, cx: &impl Context) -> Result<(), SubscriptionLimit> {
        let a = &cx.config().admission;
        let live = self.subs.len() - self.ended;
        let refused = if a.max_subscriptions > 0 && live >= a.max_subscriptions {
            Some(SubscriptionLimit::Connection)
        } else if !cx.subscription_slots().try_acquire() {
            Some(SubscriptionLimit::Server)
        } else {
            None
        };
        match refused {
            Some(limit) => {
                bump(&cx.stats().subscriptions_refused, 1);
                Err(limit)
            }
            None => Ok(()),
        }
    }

    /// Counts a publish and hands it to the context to route.
    fn publish(&mut self, msg: Msg, cx: &mut impl Context) {
        self.publish_shared(Arc::new(msg), cx);
    }

    /// As [`Session::publish`], for a message made where it is shared (the binary port
    /// builds its publishes in place: a `Msg` is a few hundred bytes, and moving one into
    /// an `Arc` is a copy per message).
    fn publish_shared(&mut self, msg: Arc<Msg>, cx: &mut impl Context) {
        let size = msg.payload.len() + msg.headers.as_ref().map_or(0, Bytes::len);
        bump(&cx.stats().in_msgs, 1);
        bump(&cx.stats().in_bytes, size as u64);
        self.in_msgs += 1;
        self.in_bytes += size as u64;
        cx.publish(msg);
        // Its acknowledgement and the deliveries to this worker's connections (its own
        // subscriptions among them) wait in the local batch: a `PING` now answers after them.
        self.barrier.touch(cx.me()..cx.me() + 1);
    }

    /// True when `sid` names an active subscription.
    fn has_sid(&self, sid: &Sid) -> bool {
        self.sids.contains_key(sid)
    }

    /// Starts a subscription (the caller checked that `sid` is not in use).
    #[allow(clippy::too_many_arguments)]
    fn add_sub(
        &mut self,
        w: &mut impl Wire,
        sid: Sid,
        filter: Bytes,
        queue: Option<&Bytes>,
        start: Start,
        bounds: Bounds,
        lossless: bool,
        cx: &mut impl Context,
    ) -> usize {
        // The decoders hand out slices of the 64 KiB read buffer: kept for the life of the
        // subscription, a slice would keep that whole buffer alive. One copy each, shared
        // by this connection, every shard's index and the envelopes between them.
        let filter = Bytes::copy_from_slice(&filter);
        let queue = queue.map(|q| Bytes::copy_from_slice(q));
        let id = cx.next_sub_id();
        let lossless_state = lossless.then(|| Box::new(Lossless::new(cx.shards(), bounds)));
        let merge = start
            .as_deref()
            .filter(|s| merge::merges(Some(s), cx.workers()))
            .map(|s| {
                let last_n = match s {
                    tern_protocol::binary::StartPosition::LastN(n) => Some(*n),
                    _ => None,
                };
                Box::new(Merge::new(cx.shards(), last_n))
            });
        let starts = w
            .resumes()
            .then(|| Box::new(binary::Starts::new(cx.shards())));
        let key = self.subs.insert(SubState {
            sid: sid.clone(),
            filter: filter.clone(),
            queue: queue.clone(),
            id,
            max: None,
            delivered: 0,
            q: SubQueueState::new(bounds, lossless_state),
            merge,
            starts,
            screened: self.access.screens(&filter),
            presence: SubPresence::watching(&filter),
            ending: None,
        });
        self.sids.insert(sid, key);
        bump(&cx.stats().subscriptions, 1);
        let sub = SubRef {
            conn: self.id,
            key: key as u32,
            id,
        };
        let shards = cx.subscribe(&filter, queue.as_ref(), (sub, lossless), start);
        self.barrier.touch(shards);
        self.bridge_interest(&filter, queue.as_ref(), true, cx);
        key
    }

    /// Tells the bridges (if any) that one of this client's subscriptions started (`up`)
    /// or ended: within an import rule it is interest upstream. The bridge's own are not.
    fn bridge_interest(
        &self,
        filter: &Bytes,
        queue: Option<&Bytes>,
        up: bool,
        cx: &mut impl Context,
    ) {
        if self.access.internal {
            return;
        }
        let (Ok(filter), Ok(queue)) = (
            std::str::from_utf8(filter),
            queue.map(|q| std::str::from_utf8(q)).transpose(),
        ) else {
            return;
        };
        cx.bridge_interest(filter, queue, up);
    }

    /// Deliveries made so far to the subscription `sid` names (0 when none is active).
    fn delivered(&self, sid: &Sid) -> u64 {
        self.sids
            .get(sid)
            .map_or(0, |&key| self.subs[key].delivered)
    }

    /// Ends a subscription now, or after `max` deliveries in all. Returns false when `sid`
    /// names no active subscription.
    fn unsubscribe(&mut self, sid: &Sid, max: Option<u64>, cx: &mut impl Context) -> bool {
        let Some(&key) = self.sids.get(sid) else {
            return false;
        };
        let sub = &mut self.subs[key];
        match max {
            Some(max) if sub.delivered < max => sub.max = Some(max),
            _ => self.end_sub(key, cx),
        }
        true
    }

    /// The client ends subscription `key` (`UNSUB`, `UNSUBSCRIBE`): its sid is free at
    /// once and no shard routes anything more to it, but what the shards routed to it
    /// before, among it the deliveries of this connection's own publishes sent ahead of
    /// the `UNSUB` (which nats-server delivers, as it handles both in order), may still be
    /// on its way. So it stays, taking those, until every shard has answered a barrier
    /// sent behind the unsubscription (`unsub_barrier_done`) and its queue is empty.
    fn end_sub(&mut self, key: usize, cx: &mut impl Context) {
        let sub = &mut self.subs[key];
        if sub.ending.is_some() {
            return;
        }
        let (sid, id) = (sub.sid.clone(), sub.id);
        if let Some(presence) = sub.presence.take() {
            self.end_sub_presence(&sid, &presence, cx);
        }
        let sub = &self.subs[key];
        if self.sids.get(&sid) == Some(&key) {
            self.sids.remove(&sid);
        }
        let sref = SubRef {
            conn: self.id,
            key: key as u32,
            id,
        };
        let shards = cx.unsubscribe(&sub.filter, sub.queue.as_ref(), sref);
        self.bridge_interest(&sub.filter, sub.queue.as_ref(), false, cx);
        for shard in shards.clone() {
            cx.send(
                shard,
                Envelope::Barrier {
                    conn: self.id,
                    token: UNSUB_BARRIER | id,
                },
            );
        }
        self.subs[key].ending = Some(shards.len());
        self.ending_subs.push((id, key));
        self.ended += 1;
        // Its place is free for the client's next subscription at once, as in
        // nats-server.
        unbump(&cx.stats().subscriptions, 1);
        cx.subscription_slots().release();
        self.barrier.touch(shards);
    }

    /// A shard answered the barrier behind an ended subscription's unsubscription
    /// (`end_sub`): once all have, nothing more can arrive for it, and it goes when its
    /// queue is empty (now, or when `fill` empties it).
    fn unsub_barrier_done(&mut self, token: u64, cx: &mut impl Context) {
        let id = token & !UNSUB_BARRIER;
        let Some(at) = self.ending_subs.iter().position(|&(i, _)| i == id) else {
            return;
        };
        let key = self.ending_subs[at].1;
        let Some(left) = self.subs[key].ending.as_mut() else {
            return;
        };
        *left = left.saturating_sub(1);
        if *left == 0 {
            self.ending_subs.swap_remove(at);
            if self.subs[key].q.is_idle() {
                self.finish_sub(key, cx);
            }
        }
    }

    /// The last of an ended subscription (`end_sub` gave back its place and its count).
    fn finish_sub(&mut self, key: usize, cx: &mut impl Context) {
        let sub = self.subs.remove(key);
        self.drop_queue(&sub.q, cx);
        self.ended -= 1;
    }

    /// Clients use `PING`/`PONG` as a barrier: once `PONG` arrives, what they sent before
    /// has been processed, and (as nats-server does) a publisher's own deliveries, the
    /// messages it sent to subjects it subscribes to, are queued ahead of the `PONG`. Those
    /// are routed by the shards that own the subjects, maybe on other workers; so the
    /// `PING` sends a barrier to each shard this connection sent traffic to since its last
    /// `PING`, behind that traffic, and the `PONG` is queued once every shard has answered
    /// (`barrier_done`). `PONG`s go out in `PING` order; a `PING` after no traffic, with
    /// none waiting, is answered at once.
    fn ping(&mut self, w: &mut impl Wire, cx: &mut impl Context) {
        match self.barrier.begin(cx.workers()) {
            None => self.queue_pong(w),
            Some((token, shards)) => {
                for shard in shards {
                    cx.send(
                        shard,
                        Envelope::Barrier {
                            conn: self.id,
                            token,
                        },
                    );
                }
            }
        }
    }

    /// A shard answered the barrier of `PING` `token`: queues every `PONG` now due. Returns
    /// true when one was queued.
    fn barrier_done(&mut self, w: &mut impl Wire, token: u64, cx: &mut impl Context) -> bool {
        if self.closing.is_some() {
            return false;
        }
        if token & UNSUB_BARRIER != 0 {
            self.unsub_barrier_done(token, cx);
            return self.has_output();
        }
        let due = self.barrier.answered(token);
        for _ in 0..due {
            self.queue_pong(w);
        }
        due > 0
    }

    /// The client answered a ping.
    fn pong(&mut self) {
        self.pings_out = 0;
    }

    fn send_pong_now(&mut self, w: &mut impl Wire) {
        w.pong(&mut self.out);
    }

    /// A publish, subscription or catch-up its user's permissions do not allow: told in
    /// the client's protocol, with nats-server's words; the connection stays open.
    fn refuse_permission(&mut self, w: &mut impl Wire, sid: Option<&Sid>, text: &str) {
        w.refuse_permission(&mut self.out, sid, text);
    }

    /// Tells the client why it is being closed, in its protocol, and marks it closing.
    fn fail(&mut self, w: &mut impl Wire, reason: CloseReason) {
        let authenticating = self.access.is_pending();
        w.fail(&mut self.out, &reason, authenticating);
        self.closing = Some(reason);
    }

    fn remove_sub(&mut self, key: usize, cx: &mut impl Context) {
        if self.subs[key].ending.is_some() {
            // Already out of the shards and of `sids` (`end_sub`).
            let id = self.subs[key].id;
            self.ending_subs.retain(|&(i, _)| i != id);
            self.finish_sub(key, cx);
            return;
        }
        let sub = self.subs.remove(key);
        if let Some(presence) = &sub.presence {
            self.end_sub_presence(&sub.sid, presence, cx);
        }
        self.drop_queue(&sub.q, cx);
        self.sids.remove(&sub.sid);
        unbump(&cx.stats().subscriptions, 1);
        cx.subscription_slots().release();
        let sref = SubRef {
            conn: self.id,
            key: key as u32,
            id: sub.id,
        };
        let shards = cx.unsubscribe(&sub.filter, sub.queue.as_ref(), sref);
        self.barrier.touch(shards);
        self.bridge_interest(&sub.filter, sub.queue.as_ref(), false, cx);
    }

    /// Part of what a shard replays for this connection's catch-up `id` over several
    /// shards: what the merge releases is published to the inbox, in order.
    pub fn replay_part(&mut self, id: u64, shard: u16, part: InboxPart, cx: &mut impl Context) {
        for msg in self.replays.part(id, shard, part) {
            cx.publish(msg);
        }
    }

    /// One shard finished its part of this connection's catch-up `id`; when it was the
    /// last, the catch-up is over and its replay slot goes back.
    pub fn replay_done(&mut self, id: u64, cx: &mut impl Context) {
        if self.replays.shard_done(id) {
            cx.replay_slots().release();
            unbump(&cx.stats().replays_active, 1);
        }
    }

    /// The connection closes: its catch-ups in progress give their slots back, and every
    /// shard drops what is left of them.
    pub fn end_replays(&mut self, cx: &mut impl Context) {
        let open = self.replays.end_all();
        if open > 0 {
            cx.replay_slots().release_n(open);
            unbump(&cx.stats().replays_active, open as u64);
            cx.cancel_replays(self.id);
        }
    }

    /// Removes every subscription from the shards. Called once, before the connection is
    /// dropped.
    pub fn unsubscribe_all(&mut self, cx: &mut impl Context) {
        let keys: Vec<usize> = self.subs.iter().map(|(k, _)| k).collect();
        for key in keys {
            // A presence events subscription went with the one it came with.
            if self.subs.contains(key) {
                self.remove_sub(key, cx);
            }
        }
    }

    /// The live subscription `sref` names, or `None` when what is addressed to it is stale
    /// (the subscription or the connection is gone).
    fn live_sub<'a>(
        closing: &Option<CloseReason>,
        subs: &'a mut Slab<SubState>,
        sref: SubRef,
    ) -> Option<&'a mut SubState> {
        if closing.is_some() {
            return None;
        }
        subs.get_mut(sref.key as usize)
            .filter(|sub| sub.id == sref.id)
    }

    /// Encodes one delivery of the subscription `key` into the outbound buffer and counts
    /// it. Returns false when that was the subscription's last (its `max` reached) and it
    /// is gone.
    fn write_delivery(
        &mut self,
        w: &mut impl Wire,
        key: usize,
        msg: &Msg,
        cx: &mut impl Context,
    ) -> bool {
        let sequence_headers = cx.config().sequence_headers;
        let size = w.encode_delivery(&mut self.out, &self.subs[key].sid, msg, sequence_headers);
        self.wrote_delivery(key, size, msg.received, cx)
    }

    /// What a delivery to subscription `key` that was just encoded (`size` on the wire, or
    /// `None`: not representable) leaves to count: the latency mark (from `received`), the
    /// subscription's and connection's counts, and a `max` reached. Returns false when the
    /// subscription ended with it.
    #[inline]
    fn wrote_delivery(
        &mut self,
        key: usize,
        size: Option<usize>,
        received: Instant,
        cx: &mut impl Context,
    ) -> bool {
        let sub = &mut self.subs[key];
        let Some(size) = size else {
            // Not representable in the client's protocol (cannot happen with the limits
            // both ports enforce); counted as dropped rather than sent malformed.
            self.dropped += 1;
            bump(&cx.stats().dropped_msgs, 1);
            return true;
        };
        self.out.mark(received);
        sub.delivered += 1;
        let done = sub.max.is_some_and(|max| sub.delivered >= max);
        self.out_msgs += 1;
        self.out_bytes += size as u64;
        bump(&cx.stats().out_msgs, 1);
        bump(&cx.stats().out_bytes, size as u64);
        if done {
            self.remove_sub(key, cx);
        }
        !done
    }

    /// A message this connection published with an acknowledgement request has been
    /// routed (by this worker's shard, or for a repeated message id, by the shard that
    /// stored its first copy).
    fn ack(&mut self, w: &mut impl Wire, ack_id: u64, stamp: Stamp, duplicate: bool) -> bool {
        if self.closing.is_some() {
            return false;
        }
        w.ack(&mut self.out, ack_id, stamp, duplicate)
    }

    /// A shard cannot replay part of what a resuming subscription asked for.
    fn gap(
        &mut self,
        w: &mut impl Wire,
        sref: SubRef,
        shard: u16,
        requested: u64,
        oldest: u64,
        cx: &mut impl Context,
    ) -> bool {
        let Some(sub) = Session::live_sub(&self.closing, &mut self.subs, sref) else {
            return false;
        };
        // Merged catch-ups: the notice keeps its place among what its shard sent.
        if let Some(merge) = &mut sub.merge {
            if merge.hold_gap(shard, requested, oldest) {
                return self.release_merged(w, sref, cx);
            }
        }
        self.send_gap(w, sref, shard, requested, oldest)
    }

    /// Writes a gap notice for the subscription `sref` names.
    fn send_gap(
        &mut self,
        w: &mut impl Wire,
        sref: SubRef,
        shard: u16,
        requested: u64,
        oldest: u64,
    ) -> bool {
        let Some(sub) = Session::live_sub(&self.closing, &mut self.subs, sref) else {
            return false;
        };
        let sid = sub.sid.clone();
        w.gap(&mut self.out, &sid, shard, requested, oldest)
    }

    /// Lame duck mode began: tells the client that the server is going away and will close
    /// the connection by `deadline` (`INFO` with `ldm` on the text port, `info` being that
    /// `INFO`; `GOAWAY` on the binary port, or right after `WELCOME` for a connection still
    /// in its handshake). Returns true when something was queued.
    fn going_away(
        &mut self,
        w: &mut impl Wire,
        info: &ServerInfo,
        deadline: Instant,
        now: Instant,
    ) -> bool {
        if self.closing.is_some() {
            return false;
        }
        let info = self.personal_info(info);
        w.going_away(&mut self.out, &info, deadline, now)
    }

    /// The outbound buffer overflowed `max_pending`, or (`--slow-consumer disconnect`) the
    /// consumer stayed over its high-water mark past the grace time: drop what is queued,
    /// say why, and close.
    fn slow_consumer(&mut self, w: &mut impl Wire, cx: &mut impl Context) {
        bump(&cx.stats().slow_consumers, 1);
        self.discard_output(cx.stats());
        self.fail(w, CloseReason::SlowConsumer);
    }

    /// The I/O layer wrote `n` bytes of the outbound queue (`now` is when): the broker
    /// latency of every delivery whose last byte went out is recorded, and the congestion
    /// window counts them as drained.
    fn wrote(&mut self, n: usize, now: Instant, cx: &mut impl Context) {
        let latency = cx.latency();
        self.out
            .pop_written(|received, n| latency.record_n(now.duration_since(received), n));
        self.congestion.drained(n);
    }

    /// A write failed: nothing more goes out, and the connection closes.
    fn write_failed(&mut self, e: &std::io::Error, cx: &impl Context) {
        self.discard_output(cx.stats());
        if self.closing.is_none() {
            self.closing = Some(CloseReason::Io(e.to_string()));
        }
    }

    /// After a write: whether it must wait for the writable event (`unsent` bytes are
    /// held below, and the outbound queue is as the write left it).
    fn write_done(&mut self, unsent: usize) {
        self.wrote_out(unsent);
        self.write_blocked = self.has_unsent();
    }

    /// Refills the outbound queue from the subscription queues, when the last write took
    /// everything and the queue is under `write_buffer`. True when bytes were added.
    fn refill(&mut self, w: &mut impl Wire, cx: &mut impl Context) -> bool {
        if self.write_blocked
            || self.closing.is_some()
            || self.backlog.is_empty()
            || self.out.len() >= cx.config().queues.write_buffer
        {
            return false;
        }
        let before = self.out.len();
        self.fill(w, cx);
        self.out.len() != before
    }

    /// True when the I/O layer must write before the next delivery (`Conn::flush`): what
    /// waits for the client went over `max_pending` (`flushed` then enforces the budget),
    /// or the outbound buffer reached `write_buffer` (`Session::write_now`).
    pub fn wants_flush(&self) -> bool {
        self.flush_first || self.write_now
    }

    /// A flush ended: the budget is enforced if it waited for it, congestion is judged
    /// again, and a connection not read for being over budget is read again once it has
    /// drained.
    fn flushed(&mut self, cx: &mut impl Context) {
        self.write_now = false;
        if std::mem::take(&mut self.flush_first) {
            self.evict_over_budget(cx);
        }
        self.update_congestion(cx);
        if self.over_budget_since.is_some() && self.unyielding() <= cx.config().limits.max_pending {
            self.over_budget_since = None;
            self.resume_read = true;
        }
    }

    /// True (once) when the connection stopped being read for being over budget and has
    /// drained since: the worker must read it.
    pub fn take_resume_read(&mut self) -> bool {
        std::mem::take(&mut self.resume_read)
    }

    /// As a publisher: a message of this connection reached `consumer`, which is
    /// congested. Nothing more is read from it until that congestion ends or `until`.
    /// Returns true when the stall begins now (the caller sets a timer for `until`).
    pub fn stall_on(&mut self, consumer: ConnId, until: Instant) -> bool {
        if self.closing.is_some() || self.stalled_on.contains(&consumer) {
            return false;
        }
        self.stalled_on.push(consumer);
        if self.stall_until.is_none() {
            self.stall_until = Some(until);
            return true;
        }
        false
    }

    /// The congestion of `consumer` ended. Returns true when that ends the stall: the
    /// worker must read the connection again (readiness is edge-triggered).
    pub fn unstall(&mut self, consumer: ConnId) -> bool {
        let before = self.stalled_on.len();
        self.stalled_on.retain(|c| *c != consumer);
        if before > 0 && self.stalled_on.is_empty() {
            self.stall_until = None;
            return true;
        }
        false
    }

    /// True while stalled for congested consumers; a stall past its deadline ends here.
    fn is_stalled(&mut self, now: Instant, cx: &impl Context) -> bool {
        let Some(until) = self.stall_until else {
            return false;
        };
        if now < until {
            return true;
        }
        bump(&cx.stats().publisher_stall_timeouts, 1);
        self.stalled_on.clear();
        self.stall_until = None;
        false
    }

    /// The connection's timer fired (`Router::wake_at`): judges its congestion as a
    /// consumer, and ends its stall as a publisher when that is due. Returns true when
    /// the worker must read it.
    pub fn on_timer(&mut self, cx: &mut impl Context) -> bool {
        self.judge_congestion(cx);
        self.stall_until.is_some_and(|until| until <= cx.now())
    }

    /// The connection closes: the publishers it stalled as a congested consumer are
    /// released.
    pub fn close_congestion(&mut self, cx: &mut impl Context) {
        let signal = self.congestion.close();
        self.signal_congestion(signal, cx);
    }

    /// True while something waits to be written: in the outbound buffer or in a
    /// subscription queue.
    pub fn has_output(&self) -> bool {
        self.has_unsent() || self.has_backlog()
    }

    /// True while bytes wait for the socket: in the outbound buffer, or encoded by the
    /// transport and not written yet (as the I/O layer last said).
    pub fn has_unsent(&self) -> bool {
        !self.out.is_empty() || self.unsent_below > 0
    }

    /// The ping timer: pings a client that completed no operation for `ping_interval`, and
    /// closes one that left `ping_max` pings unanswered. First it closes a client whose
    /// handshake, or (text) a started control line, is not done within `auth_timeout`.
    ///
    /// `handshake` is the transport's, while it is not done: nothing but its deadline is
    /// judged then.
    fn tick(
        &mut self,
        w: &mut impl Protocol,
        handshake: Option<Handshake>,
        now: Instant,
        limits: &Limits,
        cx: &mut impl Context,
    ) {
        if self.closing.is_some() {
            return;
        }
        if let Some(handshake) = handshake {
            if now >= handshake.deadline {
                let kind = TransportFailure::HandshakeTimeout;
                bump(&cx.stats().transport_failures[kind as usize], 1);
                let what = match handshake.kind {
                    LinkKind::WebSocket => "WebSocket upgrade",
                    _ => "TLS handshake",
                };
                let waited = handshake.deadline.saturating_duration_since(self.started);
                let text = format!("{what} not done within {waited:?}");
                self.closing = Some(CloseReason::Transport(text));
            }
            // Nothing else applies before the session has started.
            return;
        }
        if self.presence_stale {
            self.retry_snapshots(cx);
        }
        if !self.access.is_pending() {
            if self.check_expiry(w, cx) {
                return;
            }
            self.recheck_access(w, cx);
            if self.closing.is_some() {
                return;
            }
            self.access.prune(now);
        }
        if self.overdue(now, cx) {
            self.slow_consumer(w, cx);
            return;
        }
        if let Some(since) = self.over_budget_since {
            // Not read since; what waits for it is its own traffic (deliveries give way
            // to the budget), and it does not take it.
            if now.duration_since(since) >= cx.config().queues.slow_consumer_grace {
                self.slow_consumer(w, cx);
                return;
            }
        }
        // A connection not read (throttled, stalled, over budget) cannot answer pings
        // either: it is not pinged, nor closed as stale, until it is read again. And when
        // input is waiting that the worker has not read (its outbox is full or blocked by
        // a full peer queue, or this connection's read budget ran out), the line end,
        // `HELLO` or `PONG` that the checks below wait for may be in it: they wait until
        // it is read; the client is not behind, the server is.
        if self.admission.is_throttled()
            || self.stall_until.is_some()
            || self.over_budget_since.is_some()
            || self.listed_read
        {
            return;
        }
        if w.in_timed_handshake() {
            if now.duration_since(self.started) >= limits.auth_timeout {
                bump(&cx.stats().handshake_timeouts, 1);
                self.fail(w, CloseReason::HandshakeTimeout(limits.auth_timeout));
            }
            return;
        }
        if w.input_expired(self, now, limits, cx) {
            return;
        }
        if now.duration_since(self.last_activity) < limits.ping_interval
            || now.duration_since(self.last_ping) < limits.ping_interval
        {
            return;
        }
        if self.pings_out >= limits.ping_max {
            bump(&cx.stats().stale_connections, 1);
            self.fail(w, CloseReason::StaleConnection);
            return;
        }
        w.ping(&mut self.out);
        self.pings_out += 1;
        self.last_ping = now;
    }
}

/// `Conn::deliver_run`: each record delivered in order, and a write to `to` whenever the
/// session asks for one (`Session::wants_flush`), as the worker writes after a delivery.
fn deliver_run(
    s: &mut Session,
    w: &mut impl Wire,
    to: &mut impl Transmit,
    sref: SubRef,
    run: &ReplayRun,
    cx: &mut impl Context,
) -> bool {
    let mut queued = false;
    for rec in run.records() {
        if s.deliver_record(w, sref, run, &rec, cx) {
            queued = true;
            if s.wants_flush() {
                flush(s, w, to, cx);
            }
        }
    }
    queued
}

/// Writes what waits for the client to `to` as far as it takes it, refilling the outbound
/// queue from the subscription queues as it empties. The writes are `to`'s (the I/O
/// layer's, or a test's); after each, the session is told what it did: bytes written
/// (latency recorded, congestion drained), an error, or that the rest must wait.
#[inline]
fn flush(s: &mut Session, w: &mut impl Wire, to: &mut impl Transmit, cx: &mut impl Context) {
    if s.write_now && !s.flush_first && to.unread() >= cx.config().queues.write_buffer {
        // The socket took the last writes but the client has not read them: writing more
        // now would only park it in the kernel. What follows is queued, by the queue's
        // rules, and this buffer goes out with the loop turn's own writes.
        s.write_now = false;
        return;
    }
    loop {
        if !s.write_blocked && s.has_unsent() {
            match to.transmit(&mut s.out) {
                Ok(n) => {
                    if n > 0 {
                        s.wrote(n, Instant::now(), cx);
                    }
                    s.write_done(to.unsent());
                }
                Err(e) => {
                    s.write_failed(&e, cx);
                    return;
                }
            }
        }
        if !s.refill(w, cx) {
            break;
        }
    }
    s.flushed(cx);
}

/// A connection's `PING` barriers: which shards it sent traffic to since its last `PING`,
/// and the `PONG`s waiting for shards to answer, in `PING` order.
#[derive(Debug, Default)]
struct PingBarrier {
    /// Bit `i`: shard `i` (for shards below 64).
    touched: u64,
    /// A shard numbered 64 or more was touched: the barrier goes to every shard.
    touched_high: bool,
    /// Per waiting `PONG`, oldest first: its token and how many shards still owe an answer.
    waiting: VecDeque<(u64, usize)>,
    next_token: u64,
}

impl PingBarrier {
    fn touch(&mut self, shards: Range<usize>) {
        for shard in shards {
            if shard < 64 {
                self.touched |= 1 << shard;
            } else {
                self.touched_high = true;
            }
        }
    }

    /// A `PING` arrived. `None`: answer at once (no traffic since the last `PING`, no
    /// `PONG` waiting). Otherwise the token and the shards to send the barrier to (maybe
    /// none, when only earlier `PONG`s are waiting).
    fn begin(&mut self, workers: usize) -> Option<(u64, Vec<usize>)> {
        if self.touched == 0 && !self.touched_high && self.waiting.is_empty() {
            return None;
        }
        let shards: Vec<usize> = if self.touched_high {
            (0..workers).collect()
        } else {
            (0..workers.min(64))
                .filter(|s| self.touched & (1 << s) != 0)
                .collect()
        };
        self.touched = 0;
        self.touched_high = false;
        self.next_token += 1;
        self.waiting.push_back((self.next_token, shards.len()));
        Some((self.next_token, shards))
    }

    /// One shard answered `token`. Returns how many `PONG`s are now due.
    fn answered(&mut self, token: u64) -> usize {
        if let Some(entry) = self.waiting.iter_mut().find(|(t, _)| *t == token) {
            entry.1 = entry.1.saturating_sub(1);
        }
        let mut due = 0;
        while self.waiting.front().is_some_and(|(_, left)| *left == 0) {
            self.waiting.pop_front();
            due += 1;
        }
        due
    }
}

/// `Arc::new(make())`, with the message written straight into the shared allocation:
/// `Arc::new` builds the 300-byte `Msg` first and then copies it into the allocation it
/// makes, once per publish. Both ports' publishes are made with it.
#[inline]
pub(super) fn shared_msg(make: impl FnOnce() -> Msg) -> Arc<Msg> {
    let slot = Arc::<Msg>::new_uninit();
    // SAFETY: `slot` is the only handle on its allocation (just made, never cloned), so
    // nothing else reads or writes it while the message is written through the pointer
    // `Arc::as_ptr` gives (derived from the allocation's own pointer, valid for its whole
    // value); `write` does not read or drop the uninitialised memory. After it the value
    // is initialised, which `assume_init` requires.
    unsafe {
        Arc::as_ptr(&slot).cast_mut().cast::<Msg>().write(make());
        slot.assume_init()
    }
}

#[cfg(test)]
mod tests {
    use super::PingBarrier;

    #[test]
    fn pongs_wait_for_every_shard_touched_and_keep_ping_order() {
        let mut b = PingBarrier::default();
        assert_eq!(b.begin(4), None, "no traffic: answer at once");
        b.touch(2..3);
        b.touch(0..4);
        let (first, shards) = b.begin(4).unwrap();
        assert_eq!(shards, [0, 1, 2, 3]);
        b.touch(1..2);
        let (second, shards) = b.begin(4).unwrap();
        assert_eq!(shards, [1]);
        // Behind a waiting PONG, even a PING after no traffic waits (for no shard).
        let (third, shards) = b.begin(4).unwrap();
        assert!(shards.is_empty());
        // The second's only shard answers first: its PONG still waits for the first's.
        assert_eq!(b.answered(second), 0);
        for _ in 0..3 {
            assert_eq!(b.answered(first), 0);
        }
        assert_eq!(b.answered(first), 3, "all three, in order");
        let _ = third;
        assert_eq!(b.begin(4), None);
    }

    #[test]
    fn shards_past_64_send_the_barrier_everywhere() {
        let mut b = PingBarrier::default();
        b.touch(70..71);
        let (_, shards) = b.begin(80).unwrap();
        assert_eq!(shards.len(), 80);
    }
}
