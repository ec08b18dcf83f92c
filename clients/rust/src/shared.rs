//! The state the application's threads and the client's I/O thread share.
//!
//! Owns: [`Inner`] (one per client, behind an `Arc`) and the [`State`] under its one mutex:
//! the connection phase, the outbox (write buffer and offline buffer in one), the table of
//! live subscriptions with their resume trackers and presence member tokens, and the
//! waiters for acks, flushes, replies and presence queries. Every change that must be
//! atomic with a phase change (resubscribing on reconnect, requeueing unsent frames on a
//! loss) happens under that lock, so a call made at the same moment as a reconnect either
//! lands before it (and is re-sent with it) or after it (and is sent on the new
//! connection): never neither, never both.
//!
//! Never: does I/O or blocks while holding the lock. Sends to waiters and subscriptions
//! under the lock are `try_send`s on bounded channels (a subscription's presence queue is
//! updated under its own lock, taken after this one, never before it); events are emitted
//! after it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use bytes::{Bytes, BytesMut};
use crossbeam_channel::Sender;
use tern_protocol::binary::{
    encode_client_frame, ClientFrame, Limits, PresenceJoin, StartPosition, Subscribe, Unsubscribe,
};

use crate::auth::{Auth, Secret};
use crate::builder::Config;
use crate::event::{Event, EventSink};
use crate::outbox::{FrameKind, OutFrame, Outbox};
use crate::presence::{PresenceShared, QueryWaiter};
use crate::resume::ResumeTracker;
use crate::{Ack, Error, ErrorCode, Message, ServerAddr, ServerInfo};

/// The mio token of the waker.
pub(crate) const WAKER: mio::Token = mio::Token(0);
/// The mio token of the connection's socket.
pub(crate) const SOCKET: mio::Token = mio::Token(1);

/// Where the connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Handshake done: frames in the outbox go out.
    Connected,
    /// No usable connection (before the first `WELCOME`, or after a loss): publishes go to
    /// the offline buffer, subscriptions wait for the resubscribe.
    Disconnected,
    /// For good. Calls fail with `Closed`.
    Closed,
}

/// Why a subscription ended; read by its `Subscription` once its queue is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SubEnd {
    Unsubscribed,
    Closed,
    Refused { code: ErrorCode, message: String },
}

impl SubEnd {
    pub(crate) fn to_error(&self) -> Error {
        match self {
            SubEnd::Unsubscribed => Error::Unsubscribed,
            SubEnd::Closed => Error::Closed,
            SubEnd::Refused { code, message } => Error::Server {
                code: *code,
                message: message.clone(),
            },
        }
    }
}

/// What a subscription's handle shares with the client.
#[derive(Debug, Default)]
pub(crate) struct SubShared {
    pub(crate) end: Mutex<Option<SubEnd>>,
    /// Messages dropped for it, by the broker (drop notices) or locally (full queue).
    pub(crate) dropped: AtomicU64,
}

/// What a subscription asked for; re-sent on every reconnect.
#[derive(Debug, Clone)]
pub(crate) struct SubSpec {
    pub(crate) subject: String,
    pub(crate) queue: Option<String>,
    pub(crate) start: StartPosition,
    pub(crate) lossless: bool,
    pub(crate) max_queue_messages: u32,
    pub(crate) max_queue_bytes: u32,
    /// Joins the room with this info (`SubscribeBuilder::presence`).
    pub(crate) presence_info: Option<Bytes>,
    /// Watches the room (`SubscribeBuilder::presence_events`).
    pub(crate) presence_events: bool,
}

/// Where a subscription's messages go.
#[derive(Debug)]
pub(crate) enum Target {
    /// An application `Subscription`.
    User {
        tx: Sender<Message>,
        shared: Arc<SubShared>,
    },
    /// The client's request inbox: replies are matched to waiting requests.
    Inbox,
}

/// One live subscription.
#[derive(Debug)]
pub(crate) struct SubEntry {
    pub(crate) spec: SubSpec,
    pub(crate) target: Target,
    pub(crate) tracker: ResumeTracker,
    /// Deliveries left before it ends (`unsubscribe_after`).
    pub(crate) remaining: Option<u64>,
    /// `drain` has unsubscribed it; it only waits for messages already on the way and is
    /// not re-sent on a reconnect.
    pub(crate) draining: bool,
    /// Its presence queue and view, when it joined or watches a room.
    pub(crate) presence: Option<Arc<PresenceShared>>,
    /// The member token of its latest `PRESENCE` joined frame: every resubscribe sends it,
    /// so that a reconnect within the broker's grace window stays the same member.
    pub(crate) member_token: Option<Bytes>,
}

impl SubEntry {
    /// The `SUBSCRIBE` that (re)starts it: from its resume token once it has seen a
    /// message, otherwise the way it was first asked for; a join with the latest member
    /// token. The inbox always starts live.
    pub(crate) fn subscribe_frame(&self, sid: u32) -> Result<OutFrame, Error> {
        let start = match &self.target {
            Target::Inbox => StartPosition::Live,
            Target::User { .. } => self
                .tracker
                .token()
                .map_or_else(|| self.spec.start.clone(), StartPosition::Resume),
        };
        let frame = ClientFrame::Subscribe(Subscribe {
            sid,
            subject: Bytes::from(self.spec.subject.clone()),
            queue: self.spec.queue.clone().map(Bytes::from),
            start,
            lossless: self.spec.lossless,
            max_queue_messages: self.spec.max_queue_messages,
            max_queue_bytes: self.spec.max_queue_bytes,
            presence: self.spec.presence_info.clone().map(|info| PresenceJoin {
                info,
                member_token: self.member_token.clone(),
            }),
            presence_events: self.spec.presence_events,
        });
        encode(&frame).map(OutFrame::control)
    }
}

/// Encodes one client frame.
pub(crate) fn encode(frame: &ClientFrame) -> Result<Bytes, Error> {
    let mut buf = BytesMut::new();
    encode_client_frame(frame, &mut buf).map_err(|e| Error::InvalidOption(e.to_string()))?;
    Ok(buf.freeze())
}

/// An `UNSUBSCRIBE` (never fails to encode: fixed-size fields only).
pub(crate) fn unsubscribe_frame(sid: u32, max: Option<u64>) -> OutFrame {
    let mut buf = BytesMut::new();
    let frame = ClientFrame::Unsubscribe(Unsubscribe { sid, max });
    // Fixed-size fields cannot exceed their prefixes.
    let _ = encode_client_frame(&frame, &mut buf);
    OutFrame::control(buf.freeze())
}

/// A `PING`, for a flush (`Some(id)`) or a heartbeat.
pub(crate) fn ping_frame(flush_id: Option<u64>) -> OutFrame {
    let mut buf = BytesMut::new();
    let _ = encode_client_frame(&ClientFrame::Ping, &mut buf);
    OutFrame {
        bytes: buf.freeze(),
        kind: FrameKind::Ping { flush_id },
    }
}

/// A `PONG`.
pub(crate) fn pong_frame() -> OutFrame {
    let mut buf = BytesMut::new();
    let _ = encode_client_frame(&ClientFrame::Pong, &mut buf);
    OutFrame::control(buf.freeze())
}

/// Everything under the one lock.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) phase: Phase,
    pub(crate) outbox: Outbox,
    /// Live subscriptions by sid; ordered, so resubscribes go out in creation order.
    pub(crate) subs: BTreeMap<u32, SubEntry>,
    next_sid: u32,
    pub(crate) acks: HashMap<u64, Sender<Result<Ack, Error>>>,
    pub(crate) flushes: HashMap<u64, Sender<Result<(), Error>>>,
    pub(crate) next_flush_id: u64,
    /// Requests waiting for a reply, by the last token of their reply subject.
    pub(crate) requests: HashMap<u64, Sender<Message>>,
    pub(crate) next_request: u64,
    /// The sid of the request inbox's subscription, once a request made it.
    pub(crate) inbox: Option<u32>,
    /// Presence queries waiting for their answer, by query id.
    pub(crate) queries: HashMap<u32, QueryWaiter>,
    next_query: u32,
    /// The last `WELCOME`.
    pub(crate) server: Option<ServerInfo>,
    /// The token every (re)connection's `HELLO` carries: the builder's (or a `.creds`
    /// file's JWT), then the latest [`Client::refresh_token`](crate::Client::refresh_token).
    pub(crate) token: Option<Secret>,
}

impl State {
    /// A sid no live subscription uses.
    pub(crate) fn allocate_sid(&mut self) -> u32 {
        loop {
            let sid = self.next_sid;
            self.next_sid = self.next_sid.wrapping_add(1).max(1);
            if !self.subs.contains_key(&sid) {
                return sid;
            }
        }
    }

    /// A query id no waiting query uses.
    pub(crate) fn allocate_query(&mut self) -> u32 {
        loop {
            let id = self.next_query;
            self.next_query = self.next_query.wrapping_add(1);
            if !self.queries.contains_key(&id) {
                return id;
            }
        }
    }

    /// Ends a subscription: removes it (its handles see the end once their queues are
    /// empty) and records why, unless a reason was recorded already.
    pub(crate) fn end_sub(&mut self, sid: u32, why: SubEnd) -> Option<SubEntry> {
        let entry = self.subs.remove(&sid)?;
        if let Some(presence) = &entry.presence {
            presence.end(why.clone());
        }
        match &entry.target {
            Target::User { shared, .. } => {
                let mut end = shared.end.lock().unwrap_or_else(PoisonError::into_inner);
                end.get_or_insert(why);
            }
            Target::Inbox => {
                self.inbox = None;
                self.requests.clear();
            }
        }
        Some(entry)
    }
}

/// One client's shared core.
pub(crate) struct Inner {
    pub(crate) config: Config,
    /// The credentials, read and checked at `connect` (the token's latest value is in
    /// [`State::token`]).
    pub(crate) auth: Auth,
    pub(crate) addr: ServerAddr,
    state: Mutex<State>,
    /// Signalled when the outbox has room, the phase changes, or the last ack settles.
    pub(crate) changed: Condvar,
    waker: mio::Waker,
    wake_pending: AtomicBool,
    pub(crate) events: EventSink,
    pub(crate) next_ack_id: AtomicU64,
    /// The server's `max payload`, for checking publishes without the lock.
    pub(crate) max_payload: AtomicUsize,
    /// The prefix of this client's reply subjects: `_INBOX.<random>`.
    pub(crate) inbox_prefix: String,
    pub(crate) driver: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Inner {
    pub(crate) fn new(
        config: Config,
        auth: Auth,
        addr: ServerAddr,
        waker: mio::Waker,
        inbox_prefix: String,
    ) -> Inner {
        let events = EventSink::new(config.event_capacity);
        let token = auth.token.clone();
        Inner {
            config,
            auth,
            addr,
            state: Mutex::new(State {
                phase: Phase::Disconnected,
                outbox: Outbox::default(),
                subs: BTreeMap::new(),
                next_sid: 1,
                acks: HashMap::new(),
                flushes: HashMap::new(),
                next_flush_id: 1,
                requests: HashMap::new(),
                next_request: 1,
                inbox: None,
                queries: HashMap::new(),
                next_query: 1,
                server: None,
                token,
            }),
            changed: Condvar::new(),
            waker,
            wake_pending: AtomicBool::new(false),
            events,
            next_ack_id: AtomicU64::new(1),
            max_payload: AtomicUsize::new(Limits::DEFAULT_MAX_PAYLOAD),
            inbox_prefix,
            driver: Mutex::new(None),
        }
    }

    /// The state. A panic while it was held leaves it usable: every update is a
    /// single-step change of plain data.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks the I/O thread to look at the outbox (or the phase). Coalesced: one wake-up
    /// per batch of calls made while the I/O thread was busy.
    pub(crate) fn wake(&self) {
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            // A failed wake (the poll is gone) means the I/O thread has exited.
            let _ = self.waker.wake();
        }
    }

    /// Called by the I/O thread when its waker fired, before it looks at the state.
    pub(crate) fn woken(&self) {
        self.wake_pending.store(false, Ordering::Release);
    }

    /// Closes the client for good: calls fail with `Closed`, waiters are answered,
    /// subscriptions end, the event queue gets `Closed { reason }` and then ends, and the
    /// I/O thread writes what it can within the linger time and exits. Idempotent.
    pub(crate) fn close(&self, reason: &str) {
        let mut state = self.lock();
        if state.phase == Phase::Closed {
            return;
        }
        state.phase = Phase::Closed;
        for (_, tx) in state.acks.drain() {
            let _ = tx.try_send(Err(Error::Closed));
        }
        for (_, tx) in state.flushes.drain() {
            let _ = tx.try_send(Err(Error::Closed));
        }
        for (_, waiter) in state.queries.drain() {
            let _ = waiter.tx.try_send(Err(Error::Closed));
        }
        state.requests.clear();
        let sids: Vec<u32> = state.subs.keys().copied().collect();
        for sid in sids {
            state.end_sub(sid, SubEnd::Closed);
        }
        drop(state);
        self.changed.notify_all();
        self.events.emit(Event::Closed {
            reason: reason.to_string(),
        });
        self.events.close();
        self.wake();
    }

    /// Waits for the I/O thread to exit (after `close`). Only the first caller joins.
    pub(crate) fn join_driver(&self) {
        let handle = self
            .driver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            if handle.thread().id() != std::thread::current().id() {
                let _ = handle.join();
            }
        }
    }
}
