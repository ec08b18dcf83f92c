//! The client handle: every call the application makes.
//!
//! Owns: [`Client`] and [`PendingAck`]: checking a call's input, encoding its frame,
//! putting it in the outbox (or the subscription table) under the state lock, waking the
//! I/O thread, and waiting for an answer where the call has one (an ack, a reply, a
//! flush's `PONG`, a presence query's page), always with a timeout.
//!
//! Never: touches the socket (the I/O thread does), or waits while holding the state lock
//! other than on its condition variable.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use tern_protocol::binary::{
    Auth, ClientFrame, PresenceQuery, Publish, ResumeToken, StartPosition, MAX_PRIORITY,
};
use tern_protocol::subject;

use crate::auth::Secret;
use crate::builder::Config;
use crate::outbox::{FrameKind, OutFrame};
use crate::presence::{PresenceShared, QueryWaiter, MAX_PAGE};
use crate::random::SplitMix64;
use crate::resume::ResumeTracker;
use crate::shared::{
    encode, ping_frame, unsubscribe_frame, Inner, Phase, SubEnd, SubEntry, SubShared, SubSpec,
    Target, WAKER,
};
use crate::subscription::{StartFrom, SubscribeBuilder, Subscription};
use crate::{
    Ack, ClientBuilder, Error, Events, Message, PresencePage, PublishOptions, ServerAddr,
    ServerInfo,
};

/// A connection to a Tern broker's binary port, with automatic reconnection.
///
/// `Client` is a cheap handle: clone it to share the connection between threads. All
/// calls block the calling thread only, each for at most its timeout. One background I/O
/// thread per client owns the socket; it is stopped when the client is closed or the last
/// handle is dropped.
///
/// ```no_run
/// use std::time::Duration;
/// use tern_client::Client;
///
/// let client = Client::connect("tern://127.0.0.1:4224")?;
/// let sub = client.subscribe("greetings.*")?;
/// client.flush(Duration::from_secs(1))?; // the subscription is active on the broker
/// client.publish("greetings.world", "hello")?;
/// let msg = sub.recv_timeout(Duration::from_secs(1))?;
/// assert_eq!(&msg.payload[..], b"hello");
/// let ack = client.publish_acked("greetings.world", "stored?")?;
/// println!("stored as shard {} sequence {}", ack.shard, ack.sequence);
/// client.close();
/// # Ok::<(), tern_client::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
    _last_handle: Arc<CloseOnDrop>,
}

/// Closes the client when the last `Client` handle is dropped (subscriptions do not keep
/// a client open).
#[derive(Debug)]
struct CloseOnDrop(Arc<Inner>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close("the last client handle was dropped");
        self.0.join_driver();
    }
}

impl Client {
    /// Connects with the default settings; see [`ClientBuilder::connect`].
    pub fn connect(url: &str) -> Result<Client, Error> {
        ClientBuilder::new().connect(url)
    }

    /// A builder for a client with non-default settings.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    pub(crate) fn start(config: Config, addr: ServerAddr) -> Result<Client, Error> {
        // TLS and credentials files are read here, once: a bad one fails `connect` before
        // any socket.
        let tls = config.tls.connector(&addr)?;
        let auth = config.credentials.resolve()?;
        let poll = mio::Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), WAKER)?;
        let inbox_prefix = format!("_INBOX.{}", SplitMix64::from_entropy().token(22));
        // The I/O thread bounds the attempt by the connect timeout; name resolution may
        // add to it, so the wait here has a margin on top.
        let wait = config.connect_timeout + Duration::from_secs(5);
        let inner = Arc::new(Inner::new(config, auth, addr, waker, inbox_prefix));
        let (tx, rx) = crossbeam_channel::bounded(1);
        let handle = crate::driver::spawn(Arc::clone(&inner), poll, tls, tx)?;
        match rx.recv_timeout(wait) {
            Ok(Ok(_info)) => {
                *inner
                    .driver
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(handle);
                Ok(Client {
                    _last_handle: Arc::new(CloseOnDrop(Arc::clone(&inner))),
                    inner,
                })
            }
            Ok(Err(e)) => {
                let _ = handle.join();
                Err(e)
            }
            Err(_) => {
                // The I/O thread is stuck resolving the name; it exits once it sees the
                // close. Not joined: that could wait as long as the resolver does.
                inner.close("the first connection did not complete in time");
                Err(Error::Connect {
                    server: inner.addr.to_string(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no connection within {wait:?}"),
                    ),
                })
            }
        }
    }

    /// Publishes `payload` to `subject` with priority 0. Returns once the message is in
    /// the write buffer (connected) or the offline buffer (disconnected); use
    /// [`flush`](Self::flush) or [`publish_acked`](Self::publish_acked) to know it arrived.
    pub fn publish(&self, subject: &str, payload: impl AsRef<[u8]>) -> Result<(), Error> {
        self.publish_with(subject, payload, &PublishOptions::default())
    }

    /// Publishes with options (priority, headers, message id, coalescing key, reply).
    ///
    /// ```no_run
    /// # let client = tern_client::Client::connect("tern://127.0.0.1:4224")?;
    /// use tern_client::PublishOptions;
    /// client.publish_with(
    ///     "alerts.disk",
    ///     "disk 95% full",
    ///     &PublishOptions::new().priority(7).header("Host", "db-1"),
    /// )?;
    /// # Ok::<(), tern_client::Error>(())
    /// ```
    pub fn publish_with(
        &self,
        subject: &str,
        payload: impl AsRef<[u8]>,
        options: &PublishOptions,
    ) -> Result<(), Error> {
        let frame = self.publish_frame(subject, payload.as_ref(), options, None)?;
        self.enqueue_publish(frame, None)
    }

    /// Publishes and waits (up to [`ClientBuilder::ack_timeout`]) for the broker's
    /// acknowledgement: where it stored the message, or why it refused it
    /// ([`Error::Refused`]).
    ///
    /// If the connection the publish was written on is lost before its ack: with a
    /// [`message_id`](PublishOptions::message_id), it is sent again on the next
    /// connection (right after the resubscriptions, ahead of what was published since,
    /// in the order such publishes were written) and the wait goes on; the broker
    /// deduplicates by message id, so if the first copy got there the ack has
    /// `duplicate` set and nothing is stored or delivered twice (within the broker's
    /// dedupe window; not when it stores nothing, `--no-store`). They count against the
    /// [offline buffer](ClientBuilder::offline_buffer_bytes): those that do not fit
    /// fail with [`Error::Disconnected`], as all do when there is no next connection
    /// ([`ReconnectPolicy::disabled`](crate::ReconnectPolicy::disabled)). Without a
    /// message id: [`Error::Disconnected`] (the outcome is unknown).
    pub fn publish_acked(&self, subject: &str, payload: impl AsRef<[u8]>) -> Result<Ack, Error> {
        self.publish_acked_with(subject, payload, &PublishOptions::default())
    }

    /// [`publish_acked`](Self::publish_acked) with options.
    pub fn publish_acked_with(
        &self,
        subject: &str,
        payload: impl AsRef<[u8]>,
        options: &PublishOptions,
    ) -> Result<Ack, Error> {
        self.publish_with_ack(subject, payload, options)?.wait()
    }

    /// Publishes with an acknowledgement requested and returns at once; the
    /// [`PendingAck`] waits for it. Many publishes can be in flight this way (pipelined),
    /// which is much faster than one [`publish_acked`](Self::publish_acked) after another.
    ///
    /// ```no_run
    /// # let client = tern_client::Client::connect("tern://127.0.0.1:4224")?;
    /// use tern_client::PublishOptions;
    /// let pending: Vec<_> = (0..100)
    ///     .map(|i| client.publish_with_ack("orders.new", format!("order {i}"), &PublishOptions::new()))
    ///     .collect::<Result<_, _>>()?;
    /// for p in pending {
    ///     p.wait()?;
    /// }
    /// # Ok::<(), tern_client::Error>(())
    /// ```
    pub fn publish_with_ack(
        &self,
        subject: &str,
        payload: impl AsRef<[u8]>,
        options: &PublishOptions,
    ) -> Result<PendingAck, Error> {
        let id = self.inner.next_ack_id.fetch_add(1, Ordering::Relaxed);
        let frame = self.publish_frame(subject, payload.as_ref(), options, Some(id))?;
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.enqueue_publish(frame, Some((id, tx)))?;
        Ok(PendingAck {
            inner: Arc::clone(&self.inner),
            id,
            rx,
        })
    }

    /// Checks a publish and encodes its frame.
    fn publish_frame(
        &self,
        subject: &str,
        payload: &[u8],
        options: &PublishOptions,
        ack_id: Option<u64>,
    ) -> Result<OutFrame, Error> {
        check_subject(subject, false)?;
        if let Some(reply) = &options.reply {
            check_subject(reply, false)?;
        }
        if options.priority > MAX_PRIORITY {
            return Err(Error::InvalidOption(format!(
                "priority {} is above {MAX_PRIORITY}",
                options.priority
            )));
        }
        for (what, value) in [
            ("message id", &options.message_id),
            ("coalescing key", &options.coalescing_key),
        ] {
            if value.as_ref().is_some_and(String::is_empty) {
                return Err(Error::InvalidOption(format!("the {what} is empty")));
            }
        }
        let headers = match (&options.raw_headers, &options.headers) {
            (Some(raw), _) => {
                if !raw.starts_with(b"NATS/1.0") || !raw.ends_with(b"\r\n\r\n") {
                    return Err(Error::InvalidOption(
                        "a raw header block starts with NATS/1.0 and ends with an empty line"
                            .into(),
                    ));
                }
                Some(raw.clone())
            }
            (None, Some(h)) => {
                h.validate()?;
                Some(h.to_bytes())
            }
            (None, None) => None,
        };
        let size = headers.as_ref().map_or(0, Bytes::len) + payload.len();
        let max = self.inner.max_payload.load(Ordering::Relaxed);
        if size > max {
            return Err(Error::PayloadTooLarge { size, max });
        }
        let frame = ClientFrame::Publish(Publish {
            subject: Bytes::copy_from_slice(subject.as_bytes()),
            reply: options.reply.as_deref().map(bytes_of),
            headers,
            priority: options.priority,
            message_id: options.message_id.as_deref().map(bytes_of),
            coalescing_key: options.coalescing_key.as_deref().map(bytes_of),
            ack_id,
            payload: Bytes::copy_from_slice(payload),
        });
        Ok(OutFrame {
            bytes: encode(&frame)?,
            kind: FrameKind::Publish {
                ack_id,
                resend: ack_id.is_some() && options.message_id.is_some(),
            },
        })
    }

    /// Puts a publish in the outbox: while connected, waiting for room up to the write
    /// timeout; while disconnected, into the offline buffer or refused at once.
    fn enqueue_publish(
        &self,
        mut frame: OutFrame,
        ack: Option<(u64, crossbeam_channel::Sender<Result<Ack, Error>>)>,
    ) -> Result<(), Error> {
        let config = &self.inner.config;
        let deadline = Instant::now() + config.write_timeout;
        let mut state = self.inner.lock();
        loop {
            match state.phase {
                Phase::Closed => return Err(Error::Closed),
                Phase::Connected => {
                    match state
                        .outbox
                        .push_publish(frame, config.write_buffer_bytes, true)
                    {
                        Ok(()) => break,
                        Err((back, _)) => frame = back,
                    }
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(Error::Timeout);
                    }
                    state = self
                        .inner
                        .changed
                        .wait_timeout(state, deadline - now)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0;
                }
                Phase::Disconnected => {
                    match state
                        .outbox
                        .push_publish(frame, config.offline_buffer_bytes, false)
                    {
                        Ok(()) => break,
                        Err((_, full)) => {
                            return Err(Error::OfflineBufferFull {
                                buffered: full.buffered,
                                needed: full.needed,
                                limit: full.limit,
                            })
                        }
                    }
                }
            }
        }
        if let Some((id, tx)) = ack {
            state.acks.insert(id, tx);
        }
        let connected = state.phase == Phase::Connected;
        drop(state);
        if connected {
            self.inner.wake();
        }
        Ok(())
    }

    /// Sends a request and waits up to `timeout` for the first reply.
    ///
    /// The client subscribes once to its own inbox (`_INBOX.<random>.*`) and gives each
    /// request a unique reply subject in it. [`Error::NoResponders`] when nobody is
    /// subscribed to `subject`, [`Error::Timeout`] when no reply came in time.
    pub fn request(
        &self,
        subject: &str,
        payload: impl AsRef<[u8]>,
        timeout: Duration,
    ) -> Result<Message, Error> {
        self.request_with(subject, payload, &PublishOptions::default(), timeout)
    }

    /// [`request`](Self::request) with options (its `reply` is replaced by the inbox).
    pub fn request_with(
        &self,
        subject: &str,
        payload: impl AsRef<[u8]>,
        options: &PublishOptions,
        timeout: Duration,
    ) -> Result<Message, Error> {
        let deadline = Instant::now() + timeout;
        check_subject(subject, false)?;
        let (tx, rx) = crossbeam_channel::bounded(1);
        let token = {
            let mut state = self.inner.lock();
            if state.phase == Phase::Closed {
                return Err(Error::Closed);
            }
            if state.inbox.is_none() {
                let sid = state.allocate_sid();
                let entry = SubEntry {
                    spec: SubSpec {
                        subject: format!("{}.*", self.inner.inbox_prefix),
                        queue: None,
                        start: StartPosition::Live,
                        lossless: false,
                        max_queue_messages: 0,
                        max_queue_bytes: 0,
                        presence_info: None,
                        presence_events: false,
                    },
                    target: Target::Inbox,
                    tracker: ResumeTracker::default(),
                    remaining: None,
                    draining: false,
                    presence: None,
                    member_token: None,
                };
                if state.phase == Phase::Connected {
                    let frame = entry.subscribe_frame(sid)?;
                    state.outbox.push(frame);
                }
                state.subs.insert(sid, entry);
                state.inbox = Some(sid);
            }
            let token = state.next_request;
            state.next_request += 1;
            state.requests.insert(token, tx);
            token
        };
        let mut options = options.clone();
        options.reply = Some(format!("{}.{token}", self.inner.inbox_prefix));
        let forget = |inner: &Inner| {
            inner.lock().requests.remove(&token);
        };
        if let Err(e) = self.publish_with(subject, payload, &options) {
            forget(&self.inner);
            return Err(e);
        }
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(msg) if msg.is_no_responders() => Err(Error::NoResponders {
                subject: subject.to_string(),
            }),
            Ok(msg) => Ok(msg),
            Err(RecvTimeoutError::Timeout) => {
                forget(&self.inner);
                Err(Error::Timeout)
            }
            Err(RecvTimeoutError::Disconnected) => Err(Error::Closed),
        }
    }

    /// Answers a request: publishes `payload` to `message`'s reply subject.
    pub fn respond(&self, message: &Message, payload: impl AsRef<[u8]>) -> Result<(), Error> {
        let reply = message.reply.as_deref().ok_or(Error::NoReplySubject)?;
        self.publish(reply, payload)
    }

    /// Subscribes to `subject` (wildcards allowed), live, with the default queue size.
    pub fn subscribe(&self, subject: &str) -> Result<Subscription, Error> {
        self.subscribe_builder(subject).subscribe()
    }

    /// Subscribes as a member of queue group `group`: each message goes to one member.
    pub fn queue_subscribe(&self, subject: &str, group: &str) -> Result<Subscription, Error> {
        self.subscribe_builder(subject)
            .queue_group(group)
            .subscribe()
    }

    /// A subscription with options: queue group, start position, lossless, queue sizes.
    ///
    /// ```no_run
    /// # let client = tern_client::Client::connect("tern://127.0.0.1:4224")?;
    /// use tern_client::StartFrom;
    /// let sub = client
    ///     .subscribe_builder("prices.>")
    ///     .start(StartFrom::Last(100))
    ///     .capacity(10_000)
    ///     .subscribe()?;
    /// for msg in &sub {
    ///     println!("{} {:?}", msg.subject, msg.payload);
    /// }
    /// # Ok::<(), tern_client::Error>(())
    /// ```
    pub fn subscribe_builder(&self, subject: &str) -> SubscribeBuilder<'_> {
        SubscribeBuilder::new(self, subject, self.inner.config.subscription_capacity)
    }

    pub(crate) fn subscribe_from(&self, b: SubscribeBuilder<'_>) -> Result<Subscription, Error> {
        check_subject(&b.subject, true)?;
        if let Some(group) = &b.queue_group {
            check_subject(group, false)?;
        }
        let presence = if b.presence_info.is_some() || b.presence_events {
            check_room(&b.subject)?;
            if b.queue_group.is_some() {
                return Err(Error::InvalidOption(
                    "presence cannot be combined with a queue group".to_string(),
                ));
            }
            Some(Arc::new(PresenceShared::new(b.presence_capacity)))
        } else {
            None
        };
        let (tx, rx) = crossbeam_channel::bounded(b.capacity);
        let shared = Arc::new(SubShared::default());
        let mut state = self.inner.lock();
        if state.phase == Phase::Closed {
            return Err(Error::Closed);
        }
        let start = match b.start {
            StartFrom::Live => StartPosition::Live,
            StartFrom::Resume(token) => StartPosition::Resume(token),
            StartFrom::Since(t) => StartPosition::Time(
                t.duration_since(UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            ),
            StartFrom::Last(n) => StartPosition::LastN(n),
            StartFrom::Sequence(first) => {
                let (epoch, shards) = state
                    .server
                    .as_ref()
                    .map_or((0, 1), |s| (s.log_epoch, s.shard_count.max(1)));
                StartPosition::Resume(ResumeToken {
                    epoch,
                    last_sequences: vec![first.saturating_sub(1); usize::from(shards)],
                })
            }
        };
        let tracker = match &start {
            StartPosition::Resume(token) => ResumeTracker::from_token(token),
            _ => ResumeTracker::default(),
        };
        let sid = state.allocate_sid();
        let entry = SubEntry {
            spec: SubSpec {
                subject: b.subject.clone(),
                queue: b.queue_group,
                start,
                lossless: b.lossless,
                max_queue_messages: b.server_max_messages,
                max_queue_bytes: b.server_max_bytes,
                presence_info: b.presence_info,
                presence_events: b.presence_events,
            },
            target: Target::User {
                tx,
                shared: Arc::clone(&shared),
            },
            tracker,
            remaining: None,
            draining: false,
            presence: presence.clone(),
            member_token: None,
        };
        // Encoded now even when disconnected, so a subscription that cannot be sent is
        // refused here rather than at the reconnect.
        let frame = entry.subscribe_frame(sid)?;
        let connected = state.phase == Phase::Connected;
        if connected {
            state.outbox.push(frame);
        }
        state.subs.insert(sid, entry);
        drop(state);
        if connected {
            self.inner.wake();
        }
        Ok(Subscription::new(
            Arc::clone(&self.inner),
            sid,
            b.subject,
            rx,
            shared,
            presence,
        ))
    }

    /// Who is in `room` (a literal subject): a page of at most `limit` members (0: the
    /// broker's default, 100; at most 1000), from `offset` in join order, with the room's
    /// member count, within `timeout`. Members lingering in the broker's grace window are
    /// listed, with no connections. To join or watch a room, see
    /// [`SubscribeBuilder::presence`] and [`SubscribeBuilder::presence_events`].
    ///
    /// [`Error::Server`] with the broker's code when it refuses the query
    /// ([`ErrorCode::PermissionViolation`](crate::ErrorCode::PermissionViolation) for a
    /// room the user may not subscribe to), [`Error::Timeout`], [`Error::Disconnected`]
    /// when the connection was lost after the query went out (sent while disconnected, it
    /// waits for the reconnect, within `timeout`).
    ///
    /// ```no_run
    /// # let client = tern_client::Client::connect("tern://127.0.0.1:4224")?;
    /// use std::time::Duration;
    /// let mut offset = 0;
    /// loop {
    ///     let page = client.presence("room.42", offset, 0, Duration::from_secs(1))?;
    ///     for member in &page.members {
    ///         println!("{} ({:?})", member.user, member.info_str());
    ///     }
    ///     match page.next_offset() {
    ///         Some(next) => offset = next,
    ///         None => break,
    ///     }
    /// }
    /// # Ok::<(), tern_client::Error>(())
    /// ```
    pub fn presence(
        &self,
        room: &str,
        offset: u32,
        limit: u32,
        timeout: Duration,
    ) -> Result<PresencePage, Error> {
        if limit > MAX_PAGE {
            return Err(Error::InvalidOption(format!(
                "a presence page of {limit} members is over {MAX_PAGE}"
            )));
        }
        self.presence_query(room, offset, limit, false, timeout)
    }

    /// How many members `room` has (those lingering in the broker's grace window
    /// included), within `timeout`: O(1) on the broker, for rooms of any size. Errors as
    /// for [`presence`](Self::presence).
    pub fn presence_count(&self, room: &str, timeout: Duration) -> Result<u32, Error> {
        self.presence_query(room, 0, 0, true, timeout)
            .map(|page| page.count)
    }

    fn presence_query(
        &self,
        room: &str,
        offset: u32,
        limit: u32,
        count_only: bool,
        timeout: Duration,
    ) -> Result<PresencePage, Error> {
        check_room(room)?;
        let (tx, rx) = crossbeam_channel::bounded(1);
        let id = {
            let mut state = self.inner.lock();
            if state.phase == Phase::Closed {
                return Err(Error::Closed);
            }
            let id = state.allocate_query();
            let bytes = encode(&ClientFrame::PresenceQuery(PresenceQuery {
                id,
                room: bytes_of(room),
                offset,
                limit,
                count_only,
            }))?;
            state.outbox.push(OutFrame {
                bytes,
                kind: FrameKind::PresenceQuery { id },
            });
            state.queries.insert(id, QueryWaiter::new(tx));
            id
        };
        self.inner.wake();
        match rx.recv_timeout(timeout) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => {
                self.inner.lock().queries.remove(&id);
                Err(Error::Timeout)
            }
            Err(RecvTimeoutError::Disconnected) => Err(Error::Closed),
        }
    }

    /// Waits until the broker has processed everything this client sent before the call
    /// (a `PING`/`PONG` round trip: the broker answers after handling all earlier frames,
    /// so earlier subscriptions are active and earlier publishes routed). While
    /// disconnected, the ping waits in the offline buffer behind the publishes and the
    /// wait includes the reconnect. [`Error::Disconnected`] when the connection was lost
    /// after the ping went out.
    pub fn flush(&self, timeout: Duration) -> Result<(), Error> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let id = {
            let mut state = self.inner.lock();
            if state.phase == Phase::Closed {
                return Err(Error::Closed);
            }
            let id = state.next_flush_id;
            state.next_flush_id += 1;
            state.flushes.insert(id, tx);
            state.outbox.push(ping_frame(Some(id)));
            id
        };
        self.inner.wake();
        match rx.recv_timeout(timeout) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => {
                self.inner.lock().flushes.remove(&id);
                Err(Error::Timeout)
            }
            Err(RecvTimeoutError::Disconnected) => Err(Error::Closed),
        }
    }

    /// Replaces the connection's token (e.g. a JWT that is about to expire) with `token`:
    /// sends it to the broker in an `AUTH` frame, and remembers it for every reconnection's
    /// `HELLO`. A broker that accepts it says nothing; one that does not closes the
    /// connection with a fatal error (reported as
    /// [`Event::Disconnected`](crate::Event::Disconnected)), and the reconnection then
    /// tries the new token. Returns once the frame is queued; [`flush`](Self::flush)
    /// after it waits until the broker has processed it.
    ///
    /// While disconnected, the `AUTH` waits in the outbox and goes out right after the
    /// next `WELCOME`, even though that connection's `HELLO` may already carry the new
    /// token: a reconnection whose `HELLO` was sent just before the refresh would
    /// otherwise go on with the old token until it expires. The token never appears in
    /// `Debug` output or events.
    pub fn refresh_token(&self, token: impl Into<String>) -> Result<(), Error> {
        let token = token.into();
        let frame = encode(&ClientFrame::Auth(Auth {
            token: Some(Bytes::from(token.clone())),
            signature: None,
        }))?;
        {
            let mut state = self.inner.lock();
            if state.phase == Phase::Closed {
                return Err(Error::Closed);
            }
            // The token first: a HELLO built from now on carries it.
            state.token = Some(Secret::new(token));
            state.outbox.push(OutFrame::control(frame));
        }
        self.inner.wake();
        Ok(())
    }

    /// Closes gracefully within `timeout`: unsubscribes every subscription (so nothing new
    /// arrives), waits for the broker to have processed that and every earlier publish
    /// (a flush), ends the subscriptions (their iterators finish after the messages
    /// already queued, and any the broker sent before it processed the unsubscribe, which
    /// all stay readable), waits for outstanding acks, then closes. The client is closed
    /// afterwards even when the result is [`Error::Timeout`].
    pub fn drain(&self, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        {
            let mut state = self.inner.lock();
            if state.phase == Phase::Closed {
                return Err(Error::Closed);
            }
            let connected = state.phase == Phase::Connected;
            let sids: Vec<u32> = state
                .subs
                .iter()
                .filter(|(_, e)| matches!(e.target, Target::User { .. }))
                .map(|(&sid, _)| sid)
                .collect();
            for sid in sids {
                if let Some(entry) = state.subs.get_mut(&sid) {
                    entry.draining = true;
                }
                if connected {
                    state.outbox.push(unsubscribe_frame(sid, None));
                }
            }
        }
        self.inner.wake();
        let flushed = self.flush(deadline.saturating_duration_since(Instant::now()));
        let mut state = self.inner.lock();
        let draining: Vec<u32> = state
            .subs
            .iter()
            .filter(|(_, e)| e.draining)
            .map(|(&sid, _)| sid)
            .collect();
        for sid in draining {
            state.end_sub(sid, SubEnd::Unsubscribed);
        }
        while !state.acks.is_empty() && state.phase != Phase::Closed {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            state = self
                .inner
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        let acks_left = !state.acks.is_empty();
        drop(state);
        self.close_with("drained");
        flushed?;
        if acks_left {
            return Err(Error::Timeout);
        }
        Ok(())
    }

    /// Closes the client now: pending acks, flushes and requests fail with
    /// [`Error::Closed`], subscriptions end (messages already queued stay readable), and
    /// frames still buffered are written for at most the
    /// [`linger`](ClientBuilder::linger) time; publishes in the offline buffer (no
    /// connection) are discarded. Returns once the I/O thread has stopped. Idempotent;
    /// affects every clone.
    pub fn close(&self) {
        self.close_with("closed by the application");
    }

    fn close_with(&self, reason: &str) {
        self.inner.close(reason);
        self.inner.join_driver();
    }

    /// The client's event queue: connects, disconnects, drops, gaps, server errors.
    /// Every call returns a receiver of the same queue.
    ///
    /// ```no_run
    /// # let client = tern_client::Client::connect("tern://127.0.0.1:4224")?;
    /// let events = client.events();
    /// std::thread::spawn(move || {
    ///     for event in events {
    ///         eprintln!("tern: {event:?}");
    ///     }
    /// });
    /// # Ok::<(), tern_client::Error>(())
    /// ```
    pub fn events(&self) -> Events {
        self.inner.events.receiver()
    }

    /// What the server said in the last `WELCOME`.
    pub fn server_info(&self) -> Option<ServerInfo> {
        self.inner.lock().server.clone()
    }

    /// True while a connection is up (handshake done).
    pub fn is_connected(&self) -> bool {
        self.inner.lock().phase == Phase::Connected
    }

    /// True once the client is closed.
    pub fn is_closed(&self) -> bool {
        self.inner.lock().phase == Phase::Closed
    }

    /// Bytes of publishes waiting to be written (the offline buffer while disconnected).
    pub fn buffered_bytes(&self) -> usize {
        self.inner.lock().outbox.bytes()
    }
}

/// An acknowledgement the broker owes for a [`Client::publish_with_ack`].
///
/// Dropping it stops waiting (the publish itself still goes out).
#[derive(Debug)]
pub struct PendingAck {
    inner: Arc<Inner>,
    id: u64,
    rx: Receiver<Result<Ack, Error>>,
}

impl PendingAck {
    /// The ack id sent with the publish.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Waits up to the client's [`ack_timeout`](ClientBuilder::ack_timeout).
    pub fn wait(self) -> Result<Ack, Error> {
        let timeout = self.inner.config.ack_timeout;
        self.wait_timeout(timeout)
    }

    /// Waits up to `timeout`: the ack, [`Error::Refused`], [`Error::Timeout`],
    /// [`Error::Disconnected`] (lost after the publish went out: outcome unknown; with a
    /// message id only when the re-sent copy does not fit the offline buffer, see
    /// [`Client::publish_acked`]) or [`Error::Closed`].
    pub fn wait_timeout(self, timeout: Duration) -> Result<Ack, Error> {
        match self.rx.recv_timeout(timeout) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => Err(Error::Timeout),
            Err(RecvTimeoutError::Disconnected) => Err(Error::Closed),
        }
    }
}

impl Drop for PendingAck {
    fn drop(&mut self) {
        let mut state = self.inner.lock();
        if state.acks.remove(&self.id).is_some() && state.acks.is_empty() {
            self.inner.changed.notify_all();
        }
    }
}

fn bytes_of(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// Checks a subject (`filter`: wildcards allowed) before anything is sent.
pub(crate) fn check_subject(s: &str, filter: bool) -> Result<(), Error> {
    let checked = if filter {
        subject::validate_filter(s.as_bytes())
    } else {
        subject::validate_publish(s.as_bytes())
    };
    checked.map_err(|e| Error::InvalidSubject {
        subject: s.to_string(),
        reason: e.to_string(),
    })
}

/// Checks that a subject is a room (a literal subject) before a presence option or query
/// is sent.
fn check_room(s: &str) -> Result<(), Error> {
    check_subject(s, true)?;
    subject::validate_publish(s.as_bytes()).map_err(|_| {
        Error::InvalidOption(format!(
            "presence needs a room, a literal subject: `{s}` has a wildcard"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_checked_before_sending() {
        assert!(check_subject("a.b", false).is_ok());
        assert!(check_subject("a.*", true).is_ok());
        assert!(matches!(
            check_subject("a.*", false),
            Err(Error::InvalidSubject { .. })
        ));
        assert!(check_subject("a..b", true).is_err());
        assert!(check_subject("a b", false).is_err());
        assert!(check_subject("", false).is_err());
        assert!(check_room("room.7").is_ok());
        assert!(matches!(
            check_room("room.*"),
            Err(Error::InvalidOption(m)) if m.contains("wildcard")
        ));
        assert!(matches!(
            check_room("room..7"),
            Err(Error::InvalidSubject { .. })
        ));
    }

    #[test]
    fn a_refused_first_connection_is_an_error_and_leaves_no_thread() {
        // Bind then drop a listener: its port refuses connections.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = Client::connect(&format!("127.0.0.1:{port}")).unwrap_err();
        assert!(matches!(err, Error::Connect { .. }), "{err}");
        assert!(err
            .to_string()
            .contains("cannot connect to tern://127.0.0.1:"));
        let err = Client::connect("nats://127.0.0.1:4222").unwrap_err();
        assert!(matches!(err, Error::InvalidUrl { .. }), "{err}");
    }
}
