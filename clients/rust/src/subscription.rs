//! Subscriptions: how they are asked for ([`SubscribeBuilder`], [`StartFrom`]) and how
//! their messages are taken ([`Subscription`]).
//!
//! Owns: the application's side of one subscription: its bounded queue's receiving end,
//! the handle to its presence ([`Subscription::presence`], see `crate::presence`), why it
//! ended, and unsubscribing (explicitly, after N more messages, or on drop; a member of a
//! room leaves it with the subscription).
//!
//! Never: blocks the I/O thread. The queue is bounded; when the application does not keep
//! up, the I/O thread drops new arrivals for this subscription and reports them instead
//! of waiting (see [`ClientBuilder::subscription_capacity`](crate::ClientBuilder::subscription_capacity)).

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use tern_protocol::binary::ResumeToken;

use crate::presence::{PresenceShared, DEFAULT_CAPACITY};
use crate::shared::{unsubscribe_frame, Inner, Phase, SubEnd, SubShared};
use crate::{Client, Error, Message, Presence};

/// Where a subscription's delivery starts. Catch-up starts (everything but
/// [`Live`](Self::Live)) replay from the broker's log, then continue live without gap or
/// duplicate; a broker without a log (or whose log no longer holds the start) starts live
/// or reports a gap ([`Event::Gap`](crate::Event::Gap)).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StartFrom {
    /// Only messages published from now on.
    #[default]
    Live,
    /// Everything after a resume token (e.g. one saved from
    /// [`Subscription::resume_token`] before a restart).
    Resume(ResumeToken),
    /// Everything the broker received at or after this time.
    Since(SystemTime),
    /// The last `n` matching messages the log holds.
    Last(u32),
    /// Every message with a sequence of at least this, in every shard, in the broker's
    /// current log epoch (for a literal subject: in its shard).
    Sequence(u64),
}

/// Options of a new subscription; from [`Client::subscribe_builder`].
#[derive(Debug)]
#[must_use = "a SubscribeBuilder does nothing until .subscribe() is called"]
pub struct SubscribeBuilder<'c> {
    client: &'c Client,
    pub(crate) subject: String,
    pub(crate) queue_group: Option<String>,
    pub(crate) start: StartFrom,
    pub(crate) lossless: bool,
    pub(crate) capacity: usize,
    pub(crate) server_max_messages: u32,
    pub(crate) server_max_bytes: u32,
    pub(crate) presence_info: Option<Bytes>,
    pub(crate) presence_events: bool,
    pub(crate) presence_capacity: usize,
}

impl<'c> SubscribeBuilder<'c> {
    pub(crate) fn new(client: &'c Client, subject: &str, capacity: usize) -> Self {
        SubscribeBuilder {
            client,
            subject: subject.to_string(),
            queue_group: None,
            start: StartFrom::Live,
            lossless: false,
            capacity,
            server_max_messages: 0,
            server_max_bytes: 0,
            presence_info: None,
            presence_events: false,
            presence_capacity: DEFAULT_CAPACITY,
        }
    }

    /// Joins queue group `group`: each message goes to one member of the group.
    pub fn queue_group(mut self, group: &str) -> Self {
        self.queue_group = Some(group.to_string());
        self
    }

    /// Where delivery starts. Default: [`StartFrom::Live`].
    pub fn start(mut self, start: StartFrom) -> Self {
        self.start = start;
        self
    }

    /// Asks the broker to fall back to reading its log instead of dropping when this
    /// subscriber's queue on the broker overflows; and in the client, when this
    /// subscription's queue is full, the client stops reading the connection (every
    /// subscription on it waits) until the application takes a message, instead of
    /// dropping. Default: false.
    pub fn lossless(mut self, lossless: bool) -> Self {
        self.lossless = lossless;
        self
    }

    /// The bound, in messages, of this subscription's queue in the client. Default: the
    /// client's [`subscription_capacity`](crate::ClientBuilder::subscription_capacity).
    pub fn capacity(mut self, messages: usize) -> Self {
        self.capacity = messages.max(1);
        self
    }

    /// The bounds of this subscriber's queue on the broker, in messages and bytes; 0 asks
    /// for the broker's default. Default: 0, 0.
    pub fn server_queue(mut self, max_messages: u32, max_bytes: u32) -> Self {
        self.server_max_messages = max_messages;
        self.server_max_bytes = max_bytes;
        self
    }

    /// Joins the subject's presence for as long as the subscription lasts, with `info`
    /// (shown to the room's other members and watchers; at most the broker's
    /// `max_presence_info`, 1 KiB by default). The subject must be a room: a literal
    /// subject, without a queue group.
    ///
    /// The broker's answer comes as a
    /// [`PresenceEvent::Joined`](crate::PresenceEvent::Joined) (who this connection is in
    /// the room) or [`PresenceEvent::Refused`](crate::PresenceEvent::Refused) (a limit:
    /// the subscription stays, as a plain one; also reported as
    /// [`Event::ServerError`](crate::Event::ServerError)) on [`Subscription::presence`]. An
    /// info over the broker's limit refuses the subscription itself, with
    /// [`ErrorCode::PresenceRefused`](crate::ErrorCode::PresenceRefused).
    ///
    /// Unsubscribing leaves the room at once; a lost connection leaves it only after the
    /// broker's grace window, and the client's resubscribe, which carries the member token
    /// of the last join, stays the same member: nobody sees a leave and a join.
    pub fn presence(mut self, info: impl AsRef<[u8]>) -> Self {
        self.presence_info = Some(Bytes::copy_from_slice(info.as_ref()));
        self
    }

    /// Watches the subject's presence: [`Subscription::presence`] gets a snapshot of the
    /// room's members, then every join and leave (and a fresh snapshot after a reconnect
    /// or when the broker had to drop events). Messages published to the subject still
    /// come as messages. The subject must be a room: a literal subject, without a queue
    /// group.
    pub fn presence_events(mut self) -> Self {
        self.presence_events = true;
        self
    }

    /// The bound, in events, of this subscription's presence queue in the client (see
    /// [`Presence`] for what an overflow does). At least 2. Default: 1024.
    pub fn presence_capacity(mut self, events: usize) -> Self {
        self.presence_capacity = events;
        self
    }

    /// Subscribes. Returns at once: the `SUBSCRIBE` is on its way (call
    /// [`Client::flush`] to wait until the broker has it). Invalid subjects and queue
    /// groups are refused here; a refusal by the broker ends the subscription, and its
    /// `recv` then returns the broker's error.
    pub fn subscribe(self) -> Result<Subscription, Error> {
        let client = self.client;
        client.subscribe_from(self)
    }
}

/// One subscription: a bounded queue of its messages.
///
/// Take messages with [`recv`](Self::recv), [`recv_timeout`](Self::recv_timeout),
/// [`try_recv`](Self::try_recv) or by iterating (`for msg in &sub`), which ends when the
/// subscription does. Dropping it unsubscribes.
///
/// If the application does not take messages as fast as they come, the queue fills up
/// and the client drops new arrivals for this subscription: they are counted
/// ([`dropped`](Self::dropped)) and reported ([`Event::Dropped`](crate::Event::Dropped)
/// with their sequence ranges, [`DropSource::Client`](crate::DropSource::Client)). The
/// connection and other subscriptions are not held up.
#[derive(Debug)]
pub struct Subscription {
    inner: Arc<Inner>,
    sid: u32,
    subject: String,
    rx: Receiver<Message>,
    shared: Arc<SubShared>,
    presence: Option<Arc<PresenceShared>>,
}

impl Subscription {
    pub(crate) fn new(
        inner: Arc<Inner>,
        sid: u32,
        subject: String,
        rx: Receiver<Message>,
        shared: Arc<SubShared>,
        presence: Option<Arc<PresenceShared>>,
    ) -> Subscription {
        Subscription {
            inner,
            sid,
            subject,
            rx,
            shared,
            presence,
        }
    }

    /// The subscription id (the `sid` in events).
    pub fn sid(&self) -> u32 {
        self.sid
    }

    /// The subject filter.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The subscription's presence: its own join's outcome and, with
    /// [`presence_events`](SubscribeBuilder::presence_events), the room's events and
    /// members. `None` for a subscription made without
    /// [`presence`](SubscribeBuilder::presence) or `presence_events`. Every call returns a
    /// handle to the same queue.
    ///
    /// ```no_run
    /// # let client = tern_client::Client::connect("tern://127.0.0.1:4224")?;
    /// use tern_client::PresenceEvent;
    /// let sub = client
    ///     .subscribe_builder("room.42")
    ///     .presence(r#"{"status":"online"}"#)
    ///     .presence_events()
    ///     .subscribe()?;
    /// let presence = sub.presence().expect("asked for presence");
    /// for event in &presence {
    ///     match event {
    ///         PresenceEvent::Snapshot { members, count } => println!("{count} here: {members:?}"),
    ///         PresenceEvent::Join { member, .. } => println!("{} joined", member.user),
    ///         PresenceEvent::Leave { user, .. } => println!("{user} left"),
    ///         other => println!("{other:?}"),
    ///     }
    /// }
    /// # Ok::<(), tern_client::Error>(())
    /// ```
    pub fn presence(&self) -> Option<Presence> {
        self.presence
            .as_ref()
            .map(|shared| Presence::new(self.sid, Arc::clone(shared)))
    }

    /// Waits for the next message. After the subscription ended and its queue is empty:
    /// [`Error::Unsubscribed`], [`Error::Closed`], or the broker's refusal
    /// ([`Error::Server`]).
    pub fn recv(&self) -> Result<Message, Error> {
        self.rx.recv().map_err(|_| self.end_error())
    }

    /// Waits up to `timeout` for the next message ([`Error::Timeout`] if none came).
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Message, Error> {
        match self.rx.recv_timeout(timeout) {
            Ok(m) => Ok(m),
            Err(RecvTimeoutError::Timeout) => Err(Error::Timeout),
            Err(RecvTimeoutError::Disconnected) => Err(self.end_error()),
        }
    }

    /// The next message if one is queued, `Ok(None)` if not.
    pub fn try_recv(&self) -> Result<Option<Message>, Error> {
        match self.rx.try_recv() {
            Ok(m) => Ok(Some(m)),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(self.end_error()),
        }
    }

    /// Iterates over messages as they arrive; ends when the subscription ends.
    pub fn iter(&self) -> Iter<'_> {
        Iter { sub: self }
    }

    /// True while the subscription is live: not unsubscribed, refused by the broker,
    /// completed (`unsubscribe_after`) or closed. Messages may still be queued after it
    /// ended.
    pub fn is_active(&self) -> bool {
        self.inner.lock().subs.contains_key(&self.sid)
    }

    /// Messages queued and not yet taken.
    pub fn queued(&self) -> usize {
        self.rx.len()
    }

    /// Messages dropped for this subscription so far: by the broker (drop notices) and
    /// by this client (queue full).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Where this subscription is in the broker's log (epoch and, per shard, the highest
    /// sequence seen or, when higher, where the subscription started there, as the broker
    /// said in `SUBSCRIBED`), to resume from later with [`StartFrom::Resume`]; `None`
    /// before anything is known (nothing seen, and the broker has not confirmed it yet, or
    /// its logs were empty) or after it ended. An application that keeps its own token of
    /// what it has *processed* should start it from this one once a `flush` has confirmed
    /// the subscription: a shard it never processes anything from then resumes from where
    /// the subscription began, not from the shard's first record.
    pub fn resume_token(&self) -> Option<ResumeToken> {
        self.inner.lock().subs.get(&self.sid)?.tracker.token()
    }

    /// Ends the subscription now; messages still queued are discarded with it.
    /// [`Error::Closed`] when the client was closed (the subscription had ended with it).
    pub fn unsubscribe(self) -> Result<(), Error> {
        if self.inner.lock().phase == Phase::Closed {
            return Err(Error::Closed);
        }
        // Dropping `self` sends the UNSUBSCRIBE.
        Ok(())
    }

    /// Ends the subscription after `n` more messages (0: now). The messages stay
    /// readable; after the last one, `recv` returns [`Error::Unsubscribed`].
    pub fn unsubscribe_after(&self, n: u64) -> Result<(), Error> {
        let mut state = self.inner.lock();
        if state.phase == Phase::Closed {
            return Err(Error::Closed);
        }
        let connected = state.phase == Phase::Connected;
        if n == 0 {
            if state.end_sub(self.sid, SubEnd::Unsubscribed).is_some() && connected {
                state.outbox.push(unsubscribe_frame(self.sid, None));
            }
        } else {
            let entry = state.subs.get_mut(&self.sid).ok_or(Error::Unsubscribed)?;
            entry.remaining = Some(n);
            if connected {
                state.outbox.push(unsubscribe_frame(self.sid, Some(n)));
            }
        }
        drop(state);
        if connected {
            self.inner.wake();
        }
        Ok(())
    }

    fn end_error(&self) -> Error {
        self.shared
            .end
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map_or(Error::Unsubscribed, SubEnd::to_error)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut state = self.inner.lock();
        if state.end_sub(self.sid, SubEnd::Unsubscribed).is_some()
            && state.phase == Phase::Connected
        {
            state.outbox.push(unsubscribe_frame(self.sid, None));
            drop(state);
            self.inner.wake();
        }
    }
}

/// A blocking iterator over a subscription's messages; from [`Subscription::iter`].
#[derive(Debug)]
pub struct Iter<'a> {
    sub: &'a Subscription,
}

impl Iterator for Iter<'_> {
    type Item = Message;

    fn next(&mut self) -> Option<Message> {
        self.sub.recv().ok()
    }
}

impl<'a> IntoIterator for &'a Subscription {
    type Item = Message;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// An owning blocking iterator over a subscription's messages.
#[derive(Debug)]
pub struct IntoIter {
    sub: Subscription,
}

impl Iterator for IntoIter {
    type Item = Message;

    fn next(&mut self) -> Option<Message> {
        self.sub.recv().ok()
    }
}

impl IntoIterator for Subscription {
    type Item = Message;
    type IntoIter = IntoIter;

    fn into_iter(self) -> IntoIter {
        IntoIter { sub: self }
    }
}
