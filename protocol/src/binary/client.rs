//! The frames a client sends, their layouts and their content rules.
//!
//! Owns: [`ClientFrame`] and its parts, and for each frame type, side by side, how its body
//! is read ([`decode`]) and written ([`ClientFrame::put_body`]). The byte layouts are the
//! tables in `docs/protocol-binary.md`; field order here is field order on the wire.
//!
//! Structure is checked while reading (fatal errors); content (subjects, priority, header
//! block, sizes) only after the whole body was read, so a frame that is both truncated and
//! wrong in content is always reported as truncated.
//!
//! Never: prints a secret. The `Debug` of [`Hello`] and [`Auth`] shows that a token or
//! password is there, not what it is, so a frame can be logged or put in a test's failure
//! message without leaking a credential.

use bytes::{Buf, Bytes};

use super::coding::{flag, Reader, Writer};
use super::frame_type::{AUTH, HELLO, PING, PONG, PRESENCE_QUERY, PUBLISH, SUBSCRIBE, UNSUBSCRIBE};
use super::{BinaryError, EncodeError, Limits, Refusal, MAX_PRIORITY};
use crate::headers::VERSION as HEADERS_VERSION;
use crate::subject;

/// A frame a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    /// `HELLO` (0x01): the connection's options; the first frame after the preface.
    Hello(Hello),
    /// `PUBLISH` (0x02).
    Publish(Publish),
    /// `SUBSCRIBE` (0x03).
    Subscribe(Subscribe),
    /// `UNSUBSCRIBE` (0x04).
    Unsubscribe(Unsubscribe),
    /// `PING` (0x05): the server answers `PONG`.
    Ping,
    /// `PONG` (0x06): the answer to the server's `PING`.
    Pong,
    /// `AUTH` (0x07): the answer to `CHALLENGE` (a signature), or, after `WELCOME`, a new
    /// token for the connection (a refresh).
    Auth(Auth),
    /// `PRESENCE_QUERY` (0x08): who is in a room; answered by a `PRESENCE` frame carrying
    /// the query's id.
    PresenceQuery(PresenceQuery),
}

/// `HELLO`: who the client is, how the connection behaves, and its credentials.
///
/// Credentials of several kinds may be sent together; which ones the server needs is its
/// configuration's business. On the wire they follow the client version in this order:
/// token, user and password, nkey.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Hello {
    /// The client's name for itself (UTF-8, may be empty); shown in monitoring.
    pub client_name: Bytes,
    /// The client library and its version, e.g. `tern-client/0.1.0` (UTF-8, may be empty).
    pub client_version: Bytes,
    /// True: this connection also receives the messages it publishes (flag bit 0).
    pub echo: bool,
    /// The token, for token authentication (flag bit 1).
    pub auth_token: Option<Bytes>,
    /// The user name, for user and password authentication (flag bit 2, with `pass`).
    /// The flag covers both fields: one without the other cannot be encoded
    /// ([`EncodeError::Unpaired`]).
    pub user: Option<Bytes>,
    /// The password (flag bit 2, with `user`).
    pub pass: Option<Bytes>,
    /// The user's public nkey (`U...`), for nkey authentication (flag bit 3): the server
    /// answers `CHALLENGE` instead of `WELCOME`, and the client signs its nonce.
    pub nkey: Option<Bytes>,
    /// True: a `PUBLISH` with a reply subject that no subscription receives gets a
    /// no-responders status (`NATS/1.0 503`) on its reply subject, as the text port's
    /// `no_responders` (flag bit 4).
    pub no_responders: bool,
}

/// `AUTH`: a signature answering `CHALLENGE`, or a new token (flag bits 0 and 1; at least
/// one is set).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Auth {
    /// A token: a refresh of the connection's (e.g. a JWT about to expire) (flag bit 0).
    pub token: Option<Bytes>,
    /// The `CHALLENGE` nonce signed with the nkey's seed (ed25519), base64url without
    /// padding, as NATS clients send it (flag bit 1).
    pub signature: Option<Bytes>,
}

/// How a secret field shows in `Debug`: whether it is there, never what it is.
fn redacted(field: &Option<Bytes>) -> Option<&'static str> {
    field.as_ref().map(|_| "<redacted>")
}

impl std::fmt::Debug for Hello {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hello")
            .field("client_name", &self.client_name)
            .field("client_version", &self.client_version)
            .field("echo", &self.echo)
            .field("auth_token", &redacted(&self.auth_token))
            .field("user", &self.user)
            .field("pass", &redacted(&self.pass))
            .field("nkey", &self.nkey)
            .field("no_responders", &self.no_responders)
            .finish()
    }
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("token", &redacted(&self.token))
            .field("signature", &self.signature)
            .finish()
    }
}

/// `PUBLISH`: one message to one literal subject.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Publish {
    /// The (literal) subject.
    pub subject: Bytes,
    /// The reply subject, if any (flag bit 0).
    pub reply: Option<Bytes>,
    /// The whole `NATS/1.0 ...\r\n\r\n` header block, unchanged, if any (flag bit 1).
    pub headers: Option<Bytes>,
    /// 0 (lowest) to 7 (highest).
    pub priority: u8,
    /// An id for idempotent publishing: a repeat within the dedupe window is acknowledged
    /// but neither stored nor delivered again (flag bit 2).
    pub message_id: Option<Bytes>,
    /// A coalescing key: a queued message with the same key is replaced by this one
    /// (flag bit 3).
    pub coalescing_key: Option<Bytes>,
    /// Ask for a `PUBLISH_ACK` carrying this client-chosen id (flag bit 4).
    pub ack_id: Option<u64>,
    /// The payload, without the header block.
    pub payload: Bytes,
}

/// `SUBSCRIBE`: a subscription, where it starts and how it is delivered.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscribe {
    /// The client's id for this subscription; `MESSAGE` frames carry it.
    pub sid: u32,
    /// The filter (wildcards allowed).
    pub subject: Bytes,
    /// The queue group, if any (flag bit 0).
    pub queue: Option<Bytes>,
    /// Where delivery starts (flag bits 2–3).
    pub start: StartPosition,
    /// True: on queue overflow, fall back to reading the log instead of dropping
    /// (flag bit 1).
    pub lossless: bool,
    /// The subscriber queue's bound in messages; 0 asks for the server's default.
    pub max_queue_messages: u32,
    /// The subscriber queue's bound in bytes; 0 asks for the server's default.
    pub max_queue_bytes: u32,
    /// Join the presence of the subject (a room: a literal subject) for as long as the
    /// subscription lasts (flag bit 4).
    pub presence: Option<PresenceJoin>,
    /// Receive the room's presence as `PRESENCE` frames for this sid: a snapshot first,
    /// then joins and leaves, and a fresh snapshot whenever events had to be dropped
    /// (flag bit 5).
    pub presence_events: bool,
}

/// How a subscription joins its room's presence.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PresenceJoin {
    /// The member's info, shown to others (never used for identity).
    pub info: Bytes,
    /// A member token from an earlier `PRESENCE` joined frame: without authentication,
    /// a reconnecting client stays the member it was (flag bit 6).
    pub member_token: Option<Bytes>,
}

/// `PRESENCE_QUERY`: who is in a room, a page at a time, or how many.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PresenceQuery {
    /// The client's id for the query; the answer carries it.
    pub id: u32,
    /// The room (a literal subject).
    pub room: Bytes,
    /// Members to skip, in join order.
    pub offset: u32,
    /// Members to list at most; 0 asks for the server's default page.
    pub limit: u32,
    /// The count alone (flag bit 0).
    pub count_only: bool,
}

/// Where a subscription's delivery starts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StartPosition {
    /// Only messages published from now on (start mode 0).
    #[default]
    Live,
    /// Everything after a resume token, from the log, then live (start mode 1).
    Resume(ResumeToken),
    /// Everything with a timestamp at or after this many nanoseconds since the Unix
    /// epoch, from the log, then live (start mode 2).
    Time(u64),
    /// The last N matching messages the log holds, then live (start mode 3).
    LastN(u32),
}

/// Where a client was: the log's epoch and, per shard, the last sequence it saw.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResumeToken {
    /// The log epoch, from `WELCOME`.
    pub epoch: u64,
    /// Indexed by shard: the last sequence seen from that shard, 0 for none. Shards past
    /// the end count as 0.
    pub last_sequences: Vec<u64>,
}

/// `UNSUBSCRIBE`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Unsubscribe {
    /// The subscription to end.
    pub sid: u32,
    /// End it after this many more deliveries instead of now (flag bit 0).
    pub max: Option<u64>,
}

// Flag bits.
const HELLO_ECHO: u8 = 0x01;
const HELLO_AUTH: u8 = 0x02;
const HELLO_USER_PASS: u8 = 0x04;
const HELLO_NKEY: u8 = 0x08;
const HELLO_NO_RESPONDERS: u8 = 0x10;

const AUTH_TOKEN: u8 = 0x01;
const AUTH_SIGNATURE: u8 = 0x02;

const PUB_REPLY: u8 = 0x01;
const PUB_HEADERS: u8 = 0x02;
const PUB_MESSAGE_ID: u8 = 0x04;
const PUB_COALESCING_KEY: u8 = 0x08;
const PUB_ACK: u8 = 0x10;

const SUB_QUEUE: u8 = 0x01;
const SUB_LOSSLESS: u8 = 0x02;
const SUB_START_SHIFT: u32 = 2;
const SUB_START_MASK: u8 = 0x0c;
const START_LIVE: u8 = 0;
const START_RESUME: u8 = 1;
const START_TIME: u8 = 2;
const START_LAST_N: u8 = 3;
const SUB_PRESENCE: u8 = 0x10;
const SUB_PRESENCE_EVENTS: u8 = 0x20;
const SUB_MEMBER_TOKEN: u8 = 0x40;

const QUERY_COUNT_ONLY: u8 = 0x01;

const UNSUB_MAX: u8 = 0x01;

/// Decodes the body of a client frame of type `ty`.
pub(crate) fn decode(
    ty: u8,
    flags: u8,
    body: Bytes,
    limits: &Limits,
) -> Result<ClientFrame, BinaryError> {
    match ty {
        HELLO => decode_hello(flags, Reader::new("HELLO", body)),
        PUBLISH => decode_publish(flags, body, limits),
        SUBSCRIBE => decode_subscribe(flags, Reader::new("SUBSCRIBE", body), limits),
        UNSUBSCRIBE => decode_unsubscribe(flags, Reader::new("UNSUBSCRIBE", body)),
        PING => empty(flags, Reader::new("PING", body)).map(|()| ClientFrame::Ping),
        PONG => empty(flags, Reader::new("PONG", body)).map(|()| ClientFrame::Pong),
        AUTH => decode_auth(flags, Reader::new("AUTH", body)),
        PRESENCE_QUERY => decode_presence_query(flags, Reader::new("PRESENCE_QUERY", body)),
        _ => Err(BinaryError::UnknownFrameType(ty)),
    }
}

/// A frame with no flags and no body (`PING`, `PONG`).
pub(crate) fn empty(flags: u8, r: Reader) -> Result<(), BinaryError> {
    r.check_flags(flags, 0)?;
    r.finish()
}

fn decode_hello(flags: u8, mut r: Reader) -> Result<ClientFrame, BinaryError> {
    r.check_flags(
        flags,
        HELLO_ECHO | HELLO_AUTH | HELLO_USER_PASS | HELLO_NKEY | HELLO_NO_RESPONDERS,
    )?;
    let client_name = r.short("client name")?;
    let client_version = r.short("client version")?;
    let auth_token = r.short_if(flags & HELLO_AUTH != 0, "auth token")?;
    let user = r.short_if(flags & HELLO_USER_PASS != 0, "user")?;
    let pass = r.short_if(flags & HELLO_USER_PASS != 0, "pass")?;
    let nkey = r.short_if(flags & HELLO_NKEY != 0, "nkey")?;
    r.finish()?;
    Ok(ClientFrame::Hello(Hello {
        client_name,
        client_version,
        echo: flags & HELLO_ECHO != 0,
        no_responders: flags & HELLO_NO_RESPONDERS != 0,
        auth_token,
        user,
        pass,
        nkey,
    }))
}

fn decode_auth(flags: u8, mut r: Reader) -> Result<ClientFrame, BinaryError> {
    r.check_flags(flags, AUTH_TOKEN | AUTH_SIGNATURE)?;
    if flags == 0 {
        // An AUTH that carries nothing: a structure error, like a flag the type lacks.
        return Err(BinaryError::InvalidValue {
            frame: "AUTH",
            field: "flags (neither token nor signature)",
        });
    }
    let token = r.short_if(flags & AUTH_TOKEN != 0, "token")?;
    let signature = r.short_if(flags & AUTH_SIGNATURE != 0, "signature")?;
    r.finish()?;
    Ok(ClientFrame::Auth(Auth { token, signature }))
}

fn decode_publish(flags: u8, body: Bytes, limits: &Limits) -> Result<ClientFrame, BinaryError> {
    let body = if flags == 0 {
        match plain_publish(body, limits) {
            Ok(decoded) => return decoded,
            Err(body) => body,
        }
    } else {
        body
    };
    read_publish(flags, Reader::new("PUBLISH", body), limits)
}

/// The common `PUBLISH`, with no optional field, read straight from the frame's bytes
/// (priority, subject, payload): the subject is sliced from the body and the payload is the
/// body itself, advanced past the fields before it, so a publish costs one reference-count
/// operation here and no field-by-field reading. The body is given back (`Err`) when it is
/// not whole and exact, for [`read_publish`] to name what is wrong; its content rules are
/// [`check_message`]'s, as there. (A test holds the two to the same answers.)
fn plain_publish(
    mut body: Bytes,
    limits: &Limits,
) -> Result<Result<ClientFrame, BinaryError>, Bytes> {
    let b: &[u8] = &body;
    let (Some(&priority), Some(len)) = (b.first(), b.get(1..3)) else {
        return Err(body);
    };
    let subject_end = 3 + usize::from(u16::from_be_bytes([len[0], len[1]]));
    let Some(len) = b.get(subject_end..subject_end + 4) else {
        return Err(body);
    };
    let payload_at = subject_end + 4;
    let payload_len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]);
    if usize::try_from(payload_len).ok() != Some(b.len() - payload_at) {
        return Err(body);
    }
    if let Err(reason) = check_message(
        &b[3..subject_end],
        None,
        None,
        &b[payload_at..],
        priority,
        limits.max_payload,
        limits.max_subject_tokens,
    ) {
        return Ok(Err(BinaryError::Refused {
            reason,
            sid: None,
            ack_id: None,
        }));
    }
    let subject = body.slice(3..subject_end);
    body.advance(payload_at);
    Ok(Ok(ClientFrame::Publish(Publish {
        subject,
        priority,
        payload: body,
        ..Publish::default()
    })))
}

/// `PUBLISH`, any flags, field by field.
fn read_publish(flags: u8, mut r: Reader, limits: &Limits) -> Result<ClientFrame, BinaryError> {
    r.check_flags(
        flags,
        PUB_REPLY | PUB_HEADERS | PUB_MESSAGE_ID | PUB_COALESCING_KEY | PUB_ACK,
    )?;
    let priority = r.get::<u8>("priority")?;
    let ack_id = r.get_if::<u64>(flags & PUB_ACK != 0, "ack id")?;
    let subject = r.short("subject")?;
    let reply = r.short_if(flags & PUB_REPLY != 0, "reply")?;
    let message_id = r.short_if(flags & PUB_MESSAGE_ID != 0, "message id")?;
    let coalescing_key = r.short_if(flags & PUB_COALESCING_KEY != 0, "coalescing key")?;
    let headers = r.long_if(flags & PUB_HEADERS != 0, "headers")?;
    let payload = r.long("payload")?;
    r.finish()?;

    let refuse = |reason| BinaryError::Refused {
        reason,
        sid: None,
        ack_id,
    };
    check_message(
        &subject,
        reply.as_deref(),
        headers.as_deref(),
        &payload,
        priority,
        limits.max_payload,
        limits.max_subject_tokens,
    )
    .map_err(refuse)?;
    if message_id.as_ref().is_some_and(Bytes::is_empty) {
        return Err(refuse(Refusal::EmptyField("message id")));
    }
    if coalescing_key.as_ref().is_some_and(Bytes::is_empty) {
        return Err(refuse(Refusal::EmptyField("coalescing key")));
    }
    Ok(ClientFrame::Publish(Publish {
        subject,
        reply,
        headers,
        priority,
        message_id,
        coalescing_key,
        ack_id,
        payload,
    }))
}

/// The content rules `PUBLISH` and `MESSAGE` share, in the order they are checked: size
/// (at most `max_payload`), subject, reply (at most `max_tokens` tokens each), priority,
/// header block.
pub(crate) fn check_message(
    subject: &[u8],
    reply: Option<&[u8]>,
    headers: Option<&[u8]>,
    payload: &[u8],
    priority: u8,
    max_payload: usize,
    max_tokens: usize,
) -> Result<(), Refusal> {
    let size = headers.map_or(0, <[u8]>::len).saturating_add(payload.len());
    if size > max_payload {
        return Err(Refusal::PayloadTooLarge {
            size,
            max: max_payload,
        });
    }
    subject::validate_publish_max(subject, max_tokens).map_err(Refusal::InvalidSubject)?;
    if let Some(reply) = reply {
        subject::validate_publish_max(reply, max_tokens).map_err(Refusal::InvalidReply)?;
    }
    if priority > MAX_PRIORITY {
        return Err(Refusal::InvalidPriority(priority));
    }
    if headers.is_some_and(|h| !h.starts_with(HEADERS_VERSION)) {
        return Err(Refusal::InvalidHeaders);
    }
    Ok(())
}

fn decode_subscribe(flags: u8, mut r: Reader, limits: &Limits) -> Result<ClientFrame, BinaryError> {
    r.check_flags(
        flags,
        SUB_QUEUE
            | SUB_LOSSLESS
            | SUB_START_MASK
            | SUB_PRESENCE
            | SUB_PRESENCE_EVENTS
            | SUB_MEMBER_TOKEN,
    )?;
    if flags & SUB_MEMBER_TOKEN != 0 && flags & SUB_PRESENCE == 0 {
        // A token for a join that is not asked for: a structure error.
        return Err(BinaryError::InvalidValue {
            frame: "SUBSCRIBE",
            field: "flags (member token without presence)",
        });
    }
    let sid = r.get::<u32>("sid")?;
    let max_queue_messages = r.get::<u32>("max queue messages")?;
    let max_queue_bytes = r.get::<u32>("max queue bytes")?;
    let subject = r.short("subject")?;
    let queue = r.short_if(flags & SUB_QUEUE != 0, "queue group")?;
    let start = match (flags & SUB_START_MASK) >> SUB_START_SHIFT {
        START_LIVE => StartPosition::Live,
        START_RESUME => {
            let epoch = r.get::<u64>("resume epoch")?;
            let n = r.count(8, "resume shard count")?;
            let last_sequences = (0..n)
                .map(|_| r.get::<u64>("resume sequence"))
                .collect::<Result<_, _>>()?;
            StartPosition::Resume(ResumeToken {
                epoch,
                last_sequences,
            })
        }
        START_TIME => StartPosition::Time(r.get::<u64>("start time")?),
        _ => StartPosition::LastN(r.get::<u32>("last n")?),
    };
    let presence = match r.long_if(flags & SUB_PRESENCE != 0, "presence info")? {
        Some(info) => Some(PresenceJoin {
            info,
            member_token: r.short_if(flags & SUB_MEMBER_TOKEN != 0, "member token")?,
        }),
        None => None,
    };
    r.finish()?;

    let refuse = |reason| BinaryError::Refused {
        reason,
        sid: Some(sid),
        ack_id: None,
    };
    let max_tokens = limits.max_subject_tokens;
    subject::validate_filter_max(&subject, max_tokens)
        .map_err(|e| refuse(Refusal::InvalidFilter(e)))?;
    if let Some(queue) = &queue {
        subject::validate_publish_max(queue, max_tokens)
            .map_err(|e| refuse(Refusal::InvalidQueueGroup(e)))?;
    }
    Ok(ClientFrame::Subscribe(Subscribe {
        sid,
        subject,
        queue,
        start,
        lossless: flags & SUB_LOSSLESS != 0,
        max_queue_messages,
        max_queue_bytes,
        presence,
        presence_events: flags & SUB_PRESENCE_EVENTS != 0,
    }))
}

fn decode_presence_query(flags: u8, mut r: Reader) -> Result<ClientFrame, BinaryError> {
    r.check_flags(flags, QUERY_COUNT_ONLY)?;
    let query = PresenceQuery {
        id: r.get("query id")?,
        room: r.short("room")?,
        offset: r.get("offset")?,
        limit: r.get("limit")?,
        count_only: flags & QUERY_COUNT_ONLY != 0,
    };
    r.finish()?;
    Ok(ClientFrame::PresenceQuery(query))
}

fn decode_unsubscribe(flags: u8, mut r: Reader) -> Result<ClientFrame, BinaryError> {
    r.check_flags(flags, UNSUB_MAX)?;
    let sid = r.get::<u32>("sid")?;
    let max = r.get_if::<u64>(flags & UNSUB_MAX != 0, "max")?;
    r.finish()?;
    Ok(ClientFrame::Unsubscribe(Unsubscribe { sid, max }))
}

impl ClientFrame {
    /// The frame type and flags byte of this frame.
    pub(crate) fn header(&self) -> (u8, u8) {
        match self {
            ClientFrame::Hello(h) => (
                HELLO,
                flag(h.echo, HELLO_ECHO)
                    | flag(h.auth_token.is_some(), HELLO_AUTH)
                    | flag(h.user_pass().is_some(), HELLO_USER_PASS)
                    | flag(h.nkey.is_some(), HELLO_NKEY)
                    | flag(h.no_responders, HELLO_NO_RESPONDERS),
            ),
            ClientFrame::Publish(p) => (
                PUBLISH,
                flag(p.reply.is_some(), PUB_REPLY)
                    | flag(p.headers.is_some(), PUB_HEADERS)
                    | flag(p.message_id.is_some(), PUB_MESSAGE_ID)
                    | flag(p.coalescing_key.is_some(), PUB_COALESCING_KEY)
                    | flag(p.ack_id.is_some(), PUB_ACK),
            ),
            ClientFrame::Subscribe(s) => {
                let mode = match s.start {
                    StartPosition::Live => START_LIVE,
                    StartPosition::Resume(_) => START_RESUME,
                    StartPosition::Time(_) => START_TIME,
                    StartPosition::LastN(_) => START_LAST_N,
                };
                (
                    SUBSCRIBE,
                    flag(s.queue.is_some(), SUB_QUEUE)
                        | flag(s.lossless, SUB_LOSSLESS)
                        | (mode << SUB_START_SHIFT)
                        | flag(s.presence.is_some(), SUB_PRESENCE)
                        | flag(s.presence_events, SUB_PRESENCE_EVENTS)
                        | flag(
                            s.presence
                                .as_ref()
                                .is_some_and(|p| p.member_token.is_some()),
                            SUB_MEMBER_TOKEN,
                        ),
                )
            }
            ClientFrame::Unsubscribe(u) => (UNSUBSCRIBE, flag(u.max.is_some(), UNSUB_MAX)),
            ClientFrame::Ping => (PING, 0),
            ClientFrame::Pong => (PONG, 0),
            ClientFrame::Auth(a) => (
                AUTH,
                flag(a.token.is_some(), AUTH_TOKEN) | flag(a.signature.is_some(), AUTH_SIGNATURE),
            ),
            ClientFrame::PresenceQuery(q) => (PRESENCE_QUERY, flag(q.count_only, QUERY_COUNT_ONLY)),
        }
    }

    /// Writes the body, in the order `decode` reads it.
    pub(crate) fn put_body(&self, w: &mut Writer) -> Result<(), EncodeError> {
        match self {
            ClientFrame::Hello(h) => {
                w.short("client name", &h.client_name)?;
                w.short("client version", &h.client_version)?;
                w.short_opt("auth token", h.auth_token.as_ref())?;
                match (&h.user, &h.pass) {
                    (Some(user), Some(pass)) => {
                        w.short("user", user)?;
                        w.short("pass", pass)?;
                    }
                    (None, None) => {}
                    (Some(_), None) => return Err(EncodeError::Unpaired("user", "pass")),
                    (None, Some(_)) => return Err(EncodeError::Unpaired("pass", "user")),
                }
                w.short_opt("nkey", h.nkey.as_ref())?;
            }
            ClientFrame::Publish(p) => {
                w.put(p.priority);
                w.put_opt(p.ack_id);
                w.short("subject", &p.subject)?;
                w.short_opt("reply", p.reply.as_ref())?;
                w.short_opt("message id", p.message_id.as_ref())?;
                w.short_opt("coalescing key", p.coalescing_key.as_ref())?;
                w.long_opt("headers", p.headers.as_ref())?;
                w.long("payload", &p.payload)?;
            }
            ClientFrame::Subscribe(s) => {
                w.put(s.sid);
                w.put(s.max_queue_messages);
                w.put(s.max_queue_bytes);
                w.short("subject", &s.subject)?;
                w.short_opt("queue group", s.queue.as_ref())?;
                match &s.start {
                    StartPosition::Live => {}
                    StartPosition::Resume(token) => {
                        w.put(token.epoch);
                        w.count("resume shard count", token.last_sequences.len())?;
                        for &seq in &token.last_sequences {
                            w.put(seq);
                        }
                    }
                    StartPosition::Time(t) => w.put(*t),
                    StartPosition::LastN(n) => w.put(*n),
                }
                if let Some(p) = &s.presence {
                    w.long("presence info", &p.info)?;
                    w.short_opt("member token", p.member_token.as_ref())?;
                }
            }
            ClientFrame::PresenceQuery(q) => {
                w.put(q.id);
                w.short("room", &q.room)?;
                w.put(q.offset);
                w.put(q.limit);
            }
            ClientFrame::Unsubscribe(u) => {
                w.put(u.sid);
                w.put_opt(u.max);
            }
            ClientFrame::Auth(a) => {
                w.short_opt("token", a.token.as_ref())?;
                w.short_opt("signature", a.signature.as_ref())?;
            }
            ClientFrame::Ping | ClientFrame::Pong => {}
        }
        Ok(())
    }
}

impl Hello {
    /// The user and password, when both are given: one flag covers the two fields, so a
    /// user without a password (or the reverse) cannot be encoded.
    fn user_pass(&self) -> Option<(&Bytes, &Bytes)> {
        self.user.as_ref().zip(self.pass.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::binary::{encode_client_frame, ClientFrameDecoder};

    fn round_trip(frame: &ClientFrame) -> ClientFrame {
        let mut buf = BytesMut::new();
        encode_client_frame(frame, &mut buf).unwrap();
        let out = ClientFrameDecoder::default().decode(&mut buf).unwrap();
        assert!(buf.is_empty());
        out.unwrap()
    }

    /// The body of a `PUBLISH` with no optional field, as `encode_client_frame` writes it
    /// (after the type and flags bytes).
    fn plain_publish_body(priority: u8, subject: &[u8], payload: &[u8]) -> Vec<u8> {
        let frame = ClientFrame::Publish(Publish {
            subject: Bytes::copy_from_slice(subject),
            priority,
            payload: Bytes::copy_from_slice(payload),
            ..Publish::default()
        });
        let mut buf = BytesMut::new();
        encode_client_frame(&frame, &mut buf).unwrap();
        assert_eq!(buf[5], 0, "no flags");
        buf[6..].to_vec()
    }

    /// The read straight from the bytes gives the field-by-field reader's answer for every
    /// `PUBLISH` body without flags: whole ones, refused ones, and every truncation and
    /// extension of them.
    #[test]
    fn a_plain_publish_decodes_as_the_field_by_field_reader_does() {
        let limits = Limits {
            max_payload: 64,
            max_subject_tokens: 3,
            ..Limits::default()
        };
        let cases = [
            plain_publish_body(3, b"chat.room.42", b"hello"),
            plain_publish_body(0, b"a", b""),
            plain_publish_body(7, b"x.y", &[0xff; 64]),
            plain_publish_body(7, b"x.y", &[0xff; 65]),
            plain_publish_body(8, b"a", b"p"),
            plain_publish_body(1, b"a.*", b"p"),
            plain_publish_body(1, b"a..b", b"p"),
            plain_publish_body(1, b"a.b.c.d", b"p"),
            plain_publish_body(1, b"", b"p"),
        ];
        for body in cases {
            for cut in 0..=body.len() + 1 {
                let mut bytes = body.clone();
                bytes.resize(cut, 0x5a);
                let general = read_publish(
                    0,
                    Reader::new("PUBLISH", Bytes::from(bytes.clone())),
                    &limits,
                );
                let plain = decode_publish(0, Bytes::from(bytes.clone()), &limits);
                assert_eq!(plain, general, "{bytes:?}");
            }
        }
        // The whole one is read without the general reader.
        let body = Bytes::from(plain_publish_body(3, b"chat.room.42", b"hello"));
        let Ok(Ok(ClientFrame::Publish(p))) = plain_publish(body, &limits) else {
            panic!("the plain read takes a whole publish");
        };
        assert_eq!(
            (&p.subject[..], &p.payload[..], p.priority),
            (&b"chat.room.42"[..], &b"hello"[..], 3)
        );
    }

    #[test]
    fn hello_with_every_credential_round_trips_in_wire_order() {
        let hello = ClientFrame::Hello(Hello {
            auth_token: Some(Bytes::from_static(b"t")),
            user: Some(Bytes::from_static(b"u")),
            pass: Some(Bytes::from_static(b"p")),
            nkey: Some(Bytes::from_static(b"UK")),
            ..Hello::default()
        });
        assert_eq!(round_trip(&hello), hello);
        let mut buf = BytesMut::new();
        encode_client_frame(&hello, &mut buf).unwrap();
        // flags auth|user-pass|nkey; name, version, token, user, pass, nkey.
        assert_eq!(&buf[4..], b"\x01\x0e\0\0\0\0\0\x01t\0\x01u\0\x01p\0\x02UK");
    }

    #[test]
    fn a_user_without_a_password_cannot_be_encoded() {
        let hello = ClientFrame::Hello(Hello {
            user: Some(Bytes::from_static(b"u")),
            ..Hello::default()
        });
        let mut buf = BytesMut::from(&b"x"[..]);
        assert_eq!(
            encode_client_frame(&hello, &mut buf),
            Err(EncodeError::Unpaired("user", "pass"))
        );
        assert_eq!(&buf[..], b"x");
    }

    #[test]
    fn auth_without_a_flag_is_a_protocol_violation() {
        let mut buf = BytesMut::from(&b"\0\0\0\x02\x07\x00"[..]);
        let e = ClientFrameDecoder::default().decode(&mut buf).unwrap_err();
        assert!(e.is_fatal());
        assert_eq!(e.code(), crate::binary::ErrorCode::ProtocolViolation);
    }

    #[test]
    fn auth_round_trips_with_either_or_both_fields() {
        for (token, signature) in [(true, false), (false, true), (true, true)] {
            let auth = ClientFrame::Auth(Auth {
                token: token.then(|| Bytes::from_static(b"jwt")),
                signature: signature.then(|| Bytes::from_static(b"sig")),
            });
            assert_eq!(round_trip(&auth), auth);
        }
    }

    #[test]
    fn debug_never_shows_a_token_or_password() {
        let hello = Hello {
            auth_token: Some(Bytes::from_static(b"tok-s3cret")),
            user: Some(Bytes::from_static(b"alice")),
            pass: Some(Bytes::from_static(b"pw-s3cret")),
            ..Hello::default()
        };
        let auth = Auth {
            token: Some(Bytes::from_static(b"jwt-s3cret")),
            signature: None,
        };
        let text = format!("{hello:?} {auth:?} {:?}", ClientFrame::Hello(hello.clone()));
        assert!(!text.contains("s3cret"), "{text}");
        assert!(
            text.contains("alice") && text.contains("<redacted>"),
            "{text}"
        );
    }
}
