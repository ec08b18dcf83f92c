//! Connection events: what happened to the connection and the subscriptions, for the
//! application to observe.
//!
//! Owns: [`Event`] and its parts, the bounded queue they go through ([`Events`], the
//! receiving side, from [`Client::events`](crate::Client::events)) and its overflow rule:
//! when the queue is full the oldest event is discarded for the new one and counted
//! ([`Events::lost`]), so the I/O thread never waits on an application that does not read
//! its events.
//!
//! Never: blocks the I/O thread, or carries message payloads.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::{ErrorCode, SequenceRange};

/// Something that happened to the connection or a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The first connection is up (handshake done).
    Connected(ServerInfo),
    /// The connection was lost; the client reconnects unless its policy says otherwise.
    Disconnected {
        /// Why.
        reason: DisconnectReason,
    },
    /// A reconnect attempt failed; the next one follows after `retry_in`.
    ReconnectFailed {
        /// Consecutive failed attempts so far, from 1.
        attempt: u32,
        /// Why it failed.
        error: String,
        /// The (jittered) delay before the next attempt.
        retry_in: Duration,
    },
    /// A new connection is up after a loss: subscriptions were re-sent (with resume tokens
    /// where messages had been seen), then the offline buffer.
    Reconnected(ServerInfo),
    /// Messages for a subscription were dropped.
    Dropped {
        /// The subscription.
        sid: u32,
        /// How many.
        count: u64,
        /// Their sequences, when known (a resubscribe with a resume token can fetch them
        /// from the broker's log). May cover fewer than `count` when the list was long.
        ranges: Vec<SequenceRange>,
        /// Who dropped them.
        source: DropSource,
    },
    /// A catch-up starts later than asked: the broker's log no longer holds
    /// `requested..oldest` of `shard` (`GAP_NOTICE`).
    Gap {
        /// The subscription.
        sid: u32,
        /// The shard.
        shard: u16,
        /// The first sequence asked for.
        requested: u64,
        /// The oldest sequence the log still holds; replay starts there.
        oldest: u64,
    },
    /// A resume token was from another log epoch (the broker restarted with a new log):
    /// the subscription continues live from now, and messages published while the client
    /// was away are not replayed.
    EpochMismatch {
        /// The subscription.
        sid: u32,
        /// The server's text.
        message: String,
    },
    /// The server reported an error that no call was waiting for: a refused publish that
    /// did not ask for an ack, a refused subscription (which also ends it), a refused
    /// presence join (the subscription stays, as a plain one; also a
    /// [`PresenceEvent::Refused`](crate::PresenceEvent::Refused)), or a fatal error before
    /// it closed the connection.
    ServerError {
        /// The code.
        code: ErrorCode,
        /// The subscription concerned, if any.
        sid: Option<u32>,
        /// The server's text.
        message: String,
        /// True when the server closes the connection after it.
        fatal: bool,
    },
    /// The server is going away (lame duck mode: a `GOAWAY` frame). It accepts no new
    /// connections and will close this one within `close_within`; until then the
    /// connection works as before. When it ends, the client reconnects at once, without a
    /// backoff delay (behind the same address, another server takes the connection), and
    /// if the server has not closed it a second after `close_within`, the client closes it
    /// itself. The disconnect is then reported as [`DisconnectReason::GoingAway`].
    GoAway {
        /// How long the server may keep the connection open, from when the frame arrived.
        close_within: Duration,
        /// The server's text.
        reason: String,
    },
    /// The client is closed for good: by the application, or because reconnecting gave up.
    Closed {
        /// Why.
        reason: String,
    },
}

/// What the server said about itself and this connection in its `WELCOME`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerInfo {
    /// The address connected to.
    pub addr: SocketAddr,
    /// The protocol version chosen.
    pub version: u16,
    /// The number of shards; resume tokens have at most this many sequences.
    pub shard_count: u16,
    /// The largest header block plus payload the server accepts.
    pub max_payload: usize,
    /// The largest frame length the server accepts.
    pub max_frame: usize,
    /// How often the server pings an idle connection (zero: never).
    pub ping_interval: Duration,
    /// The server's id for this connection.
    pub client_id: u64,
    /// The log epoch; resume tokens are valid only within it.
    pub log_epoch: u64,
    /// The server's unique id.
    pub server_id: String,
}

/// Who dropped messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropSource {
    /// The broker, from its queue for this subscriber (`DROP_NOTICE`): the lowest
    /// priority, oldest messages first.
    Server,
    /// This client: the subscription's queue was full because the application did not
    /// take messages fast enough; the newest arrivals were dropped.
    Client,
}

/// Why a connection was lost.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The server closed the connection.
    ServerClosed,
    /// Nothing arrived from the server for `silence` (configured by
    /// [`ClientBuilder::server_timeout`](crate::ClientBuilder::server_timeout)) despite
    /// pings: it is considered dead.
    HeartbeatTimeout {
        /// How long it was silent.
        silence: Duration,
    },
    /// The server sent a fatal `ERROR` and closed.
    ServerError {
        /// The code.
        code: ErrorCode,
        /// The server's text.
        message: String,
    },
    /// The server sent bytes that break the protocol; the client closed the connection.
    Protocol(String),
    /// A socket error.
    Io(String),
    /// The TLS session failed: the handshake (an untrusted or misnamed certificate, a
    /// refused client certificate, a server that does not speak TLS) or a corrupt record.
    /// rustls's reason, followed by the likely fix when there is one.
    Tls(String),
    /// The server had announced it was going away ([`Event::GoAway`]) and the connection
    /// ended as announced: closed by the server, or by the client at the announced
    /// deadline. Expected; the client reconnects at once.
    GoingAway {
        /// The server's text from its `GOAWAY`.
        reason: String,
    },
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DisconnectReason::ServerClosed => write!(f, "the server closed the connection"),
            DisconnectReason::HeartbeatTimeout { silence } => {
                write!(f, "no data from the server for {silence:?}")
            }
            DisconnectReason::ServerError { code, message } => {
                write!(f, "server error {code:?}: {message}")
            }
            DisconnectReason::Protocol(e) => write!(f, "protocol error: {e}"),
            DisconnectReason::Io(e) => write!(f, "i/o error: {e}"),
            DisconnectReason::Tls(e) => write!(f, "TLS: {e}"),
            DisconnectReason::GoingAway { reason } => {
                write!(f, "the server went away as it announced: {reason}")
            }
        }
    }
}

/// The receiving side of a client's event queue.
///
/// Every `Events` from the same client shares one queue: each event is received once, by
/// whichever receiver takes it. The queue is bounded
/// ([`ClientBuilder::event_capacity`](crate::ClientBuilder::event_capacity)); when it is
/// full, the oldest event is discarded for the new one and [`lost`](Self::lost) counts it.
/// The iterator ends when the client is gone.
#[derive(Debug, Clone)]
pub struct Events {
    rx: Receiver<Event>,
    lost: Arc<AtomicU64>,
}

impl Events {
    /// The next event, waiting at most `timeout`; `None` when none came (or the client is
    /// gone).
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Event> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// The next event if one is queued.
    pub fn try_recv(&self) -> Option<Event> {
        self.rx.try_recv().ok()
    }

    /// Events discarded because the queue was full, since the client started.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }
}

impl Iterator for Events {
    type Item = Event;

    /// Waits for the next event; `None` once the client is gone and the queue is empty.
    fn next(&mut self) -> Option<Event> {
        self.rx.recv().ok()
    }
}

/// The sending side, used by the I/O thread and the client's calls.
#[derive(Debug)]
pub(crate) struct EventSink {
    /// `None` once the client is closed: receivers then see the end of the queue.
    tx: Mutex<Option<Sender<Event>>>,
    /// A receiver of our own, to discard the oldest event when the queue is full.
    rx: Receiver<Event>,
    lost: Arc<AtomicU64>,
}

impl EventSink {
    pub(crate) fn new(capacity: usize) -> EventSink {
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        EventSink {
            tx: Mutex::new(Some(tx)),
            rx,
            lost: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Queues `event`, discarding the oldest one if the queue is full. Never blocks.
    pub(crate) fn emit(&self, mut event: Event) {
        let guard = self.tx.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(tx) = guard.as_ref() else { return };
        loop {
            match tx.try_send(event) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => return,
                Err(TrySendError::Full(back)) => {
                    event = back;
                    if self.rx.try_recv().is_ok() {
                        self.lost.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    /// Ends the queue: receivers get what is queued, then the end.
    pub(crate) fn close(&self) {
        self.tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    pub(crate) fn receiver(&self) -> Events {
        Events {
            rx: self.rx.clone(),
            lost: Arc::clone(&self.lost),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed(n: u32) -> Event {
        Event::Closed {
            reason: n.to_string(),
        }
    }

    #[test]
    fn a_full_queue_drops_the_oldest_and_counts_it() {
        let sink = EventSink::new(2);
        let events = sink.receiver();
        for n in 0..5 {
            sink.emit(closed(n));
        }
        assert_eq!(events.lost(), 3);
        assert_eq!(events.try_recv(), Some(closed(3)));
        assert_eq!(events.try_recv(), Some(closed(4)));
        assert_eq!(events.try_recv(), None);
        assert_eq!(events.recv_timeout(Duration::from_millis(1)), None);
        sink.emit(closed(5));
        sink.close();
        sink.emit(closed(6));
        assert_eq!(events.clone().collect::<Vec<_>>(), [closed(5)]);
    }
}
