//! The frames a server sends, their layouts and their content rules.
//!
//! Owns: [`ServerFrame`] and its parts, and for each frame type, side by side, how its body
//! is read ([`decode`]) and written ([`ServerFrame::put_body`]). The byte layouts are the
//! tables in `docs/protocol-binary.md`; field order here is field order on the wire.

use bytes::{BufMut, Bytes, BytesMut};

use super::client::{check_message, empty};
use super::coding::{flag, Reader, Writer};
use super::frame_type::{
    CHALLENGE, DROP_NOTICE, ERROR, GAP_NOTICE, GOAWAY, MESSAGE, PING, PONG, PRESENCE, PUBLISH_ACK,
    SUBSCRIBED, WELCOME,
};
use super::{BinaryError, EncodeError, ErrorCode, Limits};
use crate::spare::put;

/// A frame a server sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerFrame {
    /// `WELCOME` (0x81): the answer to `HELLO`.
    Welcome(Welcome),
    /// `MESSAGE` (0x82): a delivery.
    Message(Message),
    /// `PUBLISH_ACK` (0x83): the outcome of a `PUBLISH` that asked for one.
    PublishAck(PublishAck),
    /// `ERROR` (0x84).
    Error(ErrorFrame),
    /// `DROP_NOTICE` (0x85): messages a subscriber's queue dropped.
    DropNotice(DropNotice),
    /// `GAP_NOTICE` (0x86): a catch-up that starts later than asked.
    GapNotice(GapNotice),
    /// `GOAWAY` (0x87): the server is going away (lame duck mode) and will close the
    /// connection; the client should reconnect soon, to another server if it can.
    GoAway(GoAway),
    /// `SUBSCRIBED` (0x88): where a subscription starts in every shard's sequence.
    Subscribed(Subscribed),
    /// `CHALLENGE` (0x89): instead of `WELCOME`, to a `HELLO` that carried an nkey: the
    /// client answers `AUTH` with the nonce signed, then gets `WELCOME` or a fatal `ERROR`.
    Challenge(Challenge),
    /// `PRESENCE` (0x8a): a room's presence, for a subscription that joined it or asked
    /// for its events, or the answer to a `PRESENCE_QUERY`.
    Presence(Presence),
    /// `PING` (0x05): the client answers `PONG`.
    Ping,
    /// `PONG` (0x06): the answer to the client's `PING`.
    Pong,
}

/// `WELCOME`: the negotiated version and what the server is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Welcome {
    /// The protocol version chosen for this connection.
    pub version: u16,
    /// How many shards the log has; resume tokens have (at most) this many sequences.
    pub shard_count: u16,
    /// The largest header block plus payload the server accepts.
    pub max_payload: u32,
    /// The largest frame length the server accepts.
    pub max_frame: u32,
    /// How often the server pings an idle connection, in milliseconds (0: never).
    pub ping_interval_ms: u32,
    /// The server's id for this connection.
    pub client_id: u64,
    /// The log's epoch: resume tokens from another epoch cannot resume.
    pub log_epoch: u64,
    /// The server's unique id (UTF-8).
    pub server_id: Bytes,
}

/// `MESSAGE`: one delivery.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// The subscription it is delivered for.
    pub sid: u32,
    /// 0 (lowest) to 7 (highest).
    pub priority: u8,
    /// The shard that owns the subject.
    pub shard: u16,
    /// The message's sequence number in its shard.
    pub sequence: u64,
    /// When the broker received it, in nanoseconds since the Unix epoch.
    pub timestamp: u64,
    /// True when it comes from the log (catch-up), not live (flag bit 2).
    pub replayed: bool,
    /// The subject it was published to.
    pub subject: Bytes,
    /// The reply subject, if any (flag bit 0).
    pub reply: Option<Bytes>,
    /// The header block as published, unchanged, if any (flag bit 1).
    pub headers: Option<Bytes>,
    /// The payload.
    pub payload: Bytes,
}

/// `PUBLISH_ACK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishAck {
    /// The `ack_id` of the `PUBLISH`.
    pub ack_id: u64,
    /// What became of it.
    pub result: AckResult,
}

/// What became of an acknowledged publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckResult {
    /// Stored in the log.
    Stored {
        /// The shard that owns the subject.
        shard: u16,
        /// Its sequence number there.
        sequence: u64,
        /// True when its message id was seen within the dedupe window: this is the earlier
        /// copy's place, and nothing was stored or delivered again (flag bit 1).
        duplicate: bool,
    },
    /// Refused (flag bit 0).
    Refused {
        /// Why.
        code: ErrorCode,
        /// The text, UTF-8.
        message: Bytes,
    },
}

/// `ERROR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFrame {
    /// What kind of error.
    pub code: ErrorCode,
    /// True: the server closes the connection after this frame (flag bit 0).
    pub fatal: bool,
    /// The subscription concerned, if any (flag bit 1).
    pub sid: Option<u32>,
    /// The text, UTF-8.
    pub message: Bytes,
}

/// `DROP_NOTICE`: a subscriber's queue overflowed and dropped messages.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DropNotice {
    /// The subscription.
    pub sid: u32,
    /// How many messages were dropped since the previous notice for it.
    pub dropped: u64,
    /// The sequences dropped, so they can be fetched from the log.
    pub ranges: Vec<SequenceRange>,
}

/// The sequences `first..=last` of one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SequenceRange {
    /// The shard.
    pub shard: u16,
    /// The first sequence of the range.
    pub first: u64,
    /// The last sequence of the range; never below `first`.
    pub last: u64,
}

/// `GAP_NOTICE`: the log no longer holds the start of a requested catch-up.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GapNotice {
    /// The subscription.
    pub sid: u32,
    /// The shard.
    pub shard: u16,
    /// The first sequence the subscription asked for.
    pub requested: u64,
    /// The oldest sequence the log still holds; catch-up resumes there, so
    /// `requested..oldest` are lost.
    pub oldest: u64,
}

/// `SUBSCRIBED`: where a subscription starts in every shard's sequence, sent once every
/// shard has registered it (deliveries from a shard may come before it). A client folds it
/// into the subscription's resume token, so that the token also covers the shards it has
/// not received anything from: resuming from 0 there would replay that shard's history from
/// before the subscription.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscribed {
    /// The subscription.
    pub sid: u32,
    /// The log epoch the sequences belong to.
    pub epoch: u64,
    /// For shard `i`: the last sequence before the subscription's first from shard `i`, as a
    /// resume token would hold it.
    pub last_sequences: Vec<u64>,
}

/// `GOAWAY`: the server stops taking connections and will close this one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GoAway {
    /// The server closes this connection within this many milliseconds at the latest (0: it
    /// may close it at any moment).
    pub close_within_ms: u32,
    /// Why, for humans (UTF-8).
    pub reason: Bytes,
}

/// `CHALLENGE`: the nonce a client proves its nkey with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Challenge {
    /// The nonce (base64url text); the client signs these bytes, as they are, with its
    /// nkey's seed.
    pub nonce: Bytes,
}

/// `PRESENCE`: one piece of a room's presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    /// The subscription it is for, or with `query`, the `PRESENCE_QUERY`'s id.
    pub id: u32,
    /// `id` is a query's (flag bit 0).
    pub query: bool,
    /// More members of the same snapshot or page follow in the next `PRESENCE` frame for
    /// this id (flag bit 1).
    pub more: bool,
    /// The room's member count, after this event.
    pub count: u32,
    /// What happened.
    pub body: PresenceBody,
}

/// What a `PRESENCE` frame says; on the wire, a `u8` kind and its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresenceBody {
    /// Kind 0: a member joined.
    Join(Member),
    /// Kind 1: a member left (its last connection, after the grace window).
    Leave {
        /// Who.
        user: Bytes,
    },
    /// Kind 2: this subscription's join was applied: who the connection is in the room,
    /// and the token that keeps it that member across a reconnect within the grace window.
    Joined {
        /// The member's identity.
        user: Bytes,
        /// Sent back in a later `SUBSCRIBE`'s presence option (member token).
        member_token: Bytes,
    },
    /// Kind 3: the room's members, replacing whatever the subscriber knew: at the start of
    /// a presence events subscription, and whenever events to it had to be dropped. Starts
    /// at offset 0; `more` on every frame but the last.
    Snapshot {
        /// Where in the room's join order this frame's first member is.
        offset: u32,
        /// Members, in join order.
        members: Vec<Member>,
    },
    /// Kind 4: a query's page (empty for a count-only query).
    Page {
        /// Where in the room's join order this page's first member is.
        offset: u32,
        /// Members, in join order.
        members: Vec<Member>,
    },
    /// Kind 5: a join or query refused.
    Refused {
        /// Why, as a code.
        code: ErrorCode,
        /// Why, for humans.
        message: Bytes,
    },
}

/// A member of a room.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Member {
    /// Its identity: the authenticated user, or the connection's name and id.
    pub user: Bytes,
    /// When it joined, in milliseconds since the Unix epoch.
    pub since_ms: u64,
    /// Its connections in the room; 0 while it lingers in the grace window.
    pub connections: u16,
    /// The info it joined with.
    pub info: Bytes,
}

// Flag bits.
const MSG_REPLY: u8 = 0x01;
const MSG_HEADERS: u8 = 0x02;
const MSG_REPLAYED: u8 = 0x04;

const ACK_REFUSED: u8 = 0x01;
const ACK_DUPLICATE: u8 = 0x02;

const ERR_FATAL: u8 = 0x01;
const ERR_SID: u8 = 0x02;

const PRESENCE_QUERY_ID: u8 = 0x01;
const PRESENCE_MORE: u8 = 0x02;

// `PRESENCE` kinds.
const KIND_JOIN: u8 = 0;
const KIND_LEAVE: u8 = 1;
const KIND_JOINED: u8 = 2;
const KIND_SNAPSHOT: u8 = 3;
const KIND_PAGE: u8 = 4;
const KIND_REFUSED: u8 = 5;

/// The smallest member on the wire: empty user (2), since (8), connections (2), empty
/// info (4).
const MEMBER_MIN: usize = 2 + 8 + 2 + 4;

/// Where the id sits in an encoded `PRESENCE` frame (after length, type, flags).
const PRESENCE_ID_AT: usize = 6;

/// The size of one sequence range on the wire.
const RANGE_SIZE: usize = 2 + 8 + 8;

/// Decodes the body of a server frame of type `ty`.
pub(crate) fn decode(
    ty: u8,
    flags: u8,
    body: Bytes,
    limits: &Limits,
) -> Result<ServerFrame, BinaryError> {
    match ty {
        WELCOME => decode_welcome(flags, Reader::new("WELCOME", body)),
        MESSAGE => decode_message(flags, Reader::new("MESSAGE", body), limits),
        PUBLISH_ACK => decode_ack(flags, Reader::new("PUBLISH_ACK", body)),
        ERROR => decode_error(flags, Reader::new("ERROR", body)),
        DROP_NOTICE => decode_drop(flags, Reader::new("DROP_NOTICE", body)),
        GAP_NOTICE => decode_gap(flags, Reader::new("GAP_NOTICE", body)),
        GOAWAY => decode_goaway(flags, Reader::new("GOAWAY", body)),
        SUBSCRIBED => decode_subscribed(flags, Reader::new("SUBSCRIBED", body)),
        CHALLENGE => decode_challenge(flags, Reader::new("CHALLENGE", body)),
        PRESENCE => decode_presence(flags, Reader::new("PRESENCE", body)),
        PING => empty(flags, Reader::new("PING", body)).map(|()| ServerFrame::Ping),
        PONG => empty(flags, Reader::new("PONG", body)).map(|()| ServerFrame::Pong),
        _ => Err(BinaryError::UnknownFrameType(ty)),
    }
}

fn decode_welcome(flags: u8, mut r: Reader) -> Result<ServerFrame, BinaryError> {
    r.check_flags(flags, 0)?;
    let welcome = Welcome {
        version: r.get("version")?,
        shard_count: r.get("shard count")?,
        max_payload: r.get("max payload")?,
        max_frame: r.get("max frame")?,
        ping_interval_ms: r.get("ping interval")?,
        client_id: r.get("client id")?,
        log_epoch: r.get("log epoch")?,
        server_id: r.short("server id")?,
    };
    r.finish()?;
    Ok(ServerFrame::Welcome(welcome))
}

fn decode_message(flags: u8, mut r: Reader, limits: &Limits) -> Result<ServerFrame, BinaryError> {
    r.check_flags(flags, MSG_REPLY | MSG_HEADERS | MSG_REPLAYED)?;
    let msg = Message {
        sid: r.get("sid")?,
        priority: r.get("priority")?,
        shard: r.get("shard")?,
        sequence: r.get("sequence")?,
        timestamp: r.get("timestamp")?,
        replayed: flags & MSG_REPLAYED != 0,
        subject: r.short("subject")?,
        reply: r.short_if(flags & MSG_REPLY != 0, "reply")?,
        headers: r.long_if(flags & MSG_HEADERS != 0, "headers")?,
        payload: r.long("payload")?,
    };
    r.finish()?;
    check_message(
        &msg.subject,
        msg.reply.as_deref(),
        msg.headers.as_deref(),
        &msg.payload,
        msg.priority,
        limits.max_payload,
        // The server's own cap applied when the message was published.
        usize::MAX,
    )
    .map_err(|reason| BinaryError::Refused {
        reason,
        sid: Some(msg.sid),
        ack_id: None,
    })?;
    Ok(ServerFrame::Message(msg))
}

fn decode_ack(flags: u8, mut r: Reader) -> Result<ServerFrame, BinaryError> {
    let refused = flags & ACK_REFUSED != 0;
    // A refusal is never a duplicate.
    r.check_flags(flags, if refused { ACK_REFUSED } else { ACK_DUPLICATE })?;
    let ack_id = r.get("ack id")?;
    let result = if refused {
        AckResult::Refused {
            code: ErrorCode::from_u16(r.get("code")?),
            message: r.short("message")?,
        }
    } else {
        AckResult::Stored {
            shard: r.get("shard")?,
            sequence: r.get("sequence")?,
            duplicate: flags & ACK_DUPLICATE != 0,
        }
    };
    r.finish()?;
    Ok(ServerFrame::PublishAck(PublishAck { ack_id, result }))
}

fn decode_error(flags: u8, mut r: Reader) -> Result<ServerFrame, BinaryError> {
    r.check_flags(flags, ERR_FATAL | ERR_SID)?;
    let frame = ErrorFrame {
        code: ErrorCode::from_u16(r.get("code")?),
        fatal: flags & ERR_FATAL != 0,
        sid: r.get_if(flags & ERR_SID != 0, "sid")?,
        message: r.short("message")?,
    };
    r.finish()?;
    Ok(ServerFrame::Error(frame))
}

fn decode_drop(flags: u8, mut r: Reader) -> Result<ServerFrame, BinaryError> {
    r.check_flags(flags, 0)?;
    let sid = r.get("sid")?;
    let dropped = r.get("dropped")?;
    let n = r.count(RANGE_SIZE, "range count")?;
    let mut ranges = Vec::with_capacity(n);
    for _ in 0..n {
        let range = SequenceRange {
            shard: r.get("range shard")?,
            first: r.get("range first")?,
            last: r.get("range last")?,
        };
        if range.first > range.last {
            return Err(BinaryError::InvalidValue {
                frame: "DROP_NOTICE",
                field: "range (first after last)",
            });
        }
        ranges.push(range);
    }
    r.finish()?;
    Ok(ServerFrame::DropNotice(DropNotice {
        sid,
        dropped,
        ranges,
    }))
}

fn decode_gap(flags: u8, mut r: Reader) -> Result<ServerFrame, BinaryError> {
    r.check_flags(flags, 0)?;
    let gap = GapNotice {
        sid: r.get("sid")?,
        shard: r.get("shard")?,
        requested: r.get("requested")?,
        oldest: r.get("oldest")?,
    };
    r.finish()?;
    Ok(ServerFrame::GapNotice(gap))
}

fn decode_subscribed(flags: u8, mut r: Reader) -> Result<ServerFrame, BinaryError> {
    r.check_flags(flags, 0)?;
    let sid = r.get("sid")?;
    let epoch = r.get("epoch")?;
    let n = r.count(8, "shard count")?;
    let last_sequences = (0..n)
        .map(|_| r.get::<u64>("last sequence"))
        .collect::<Result<Vec<_>, _>>()?;
    r.finish()?;
    Ok(ServerFrame::Subscribed(Subscribed {
        sid,
        epoch,
        last_sequences,
    }))
}

fn decode_goaway(flags: u8, mut r: Reader) -> Result<ServerFrame, BinaryError> {
    r.check_flags(flags, 0)?;
    let goaway = GoAway {
        close_within_ms: r.get("close within")?,
        reason: r.short("reason")?,
    };
    r.finish()?;
    Ok(ServerFrame::GoAway(goaway))
}

fn decode_challenge(flags: u8, mut r: Reader) -> Result<ServerFrame, BinaryError> {
    r.check_flags(flags, 0)?;
    let nonce = r.short("nonce")?;
    r.finish()?;
    Ok(ServerFrame::Challenge(Challenge { nonce }))
}

fn decode_presence(flags: u8, mut r: Reader) -> Result<ServerFrame, BinaryError> {
    r.check_flags(flags, PRESENCE_QUERY_ID | PRESENCE_MORE)?;
    let id = r.get("id")?;
    let kind = r.get::<u8>("kind")?;
    let count = r.get("count")?;
    let body = match kind {
        KIND_JOIN => PresenceBody::Join(read_member(&mut r)?),
        KIND_LEAVE => PresenceBody::Leave {
            user: r.short("user")?,
        },
        KIND_JOINED => PresenceBody::Joined {
            user: r.short("user")?,
            member_token: r.short("member token")?,
        },
        KIND_SNAPSHOT | KIND_PAGE => {
            let offset = r.get("offset")?;
            let n = r.count(MEMBER_MIN, "member count")?;
            let members = (0..n)
                .map(|_| read_member(&mut r))
                .collect::<Result<Vec<_>, _>>()?;
            if kind == KIND_SNAPSHOT {
                PresenceBody::Snapshot { offset, members }
            } else {
                PresenceBody::Page { offset, members }
            }
        }
        KIND_REFUSED => PresenceBody::Refused {
            code: ErrorCode::from_u16(r.get("code")?),
            message: r.short("message")?,
        },
        _ => {
            return Err(BinaryError::InvalidValue {
                frame: "PRESENCE",
                field: "kind",
            })
        }
    };
    r.finish()?;
    Ok(ServerFrame::Presence(Presence {
        id,
        query: flags & PRESENCE_QUERY_ID != 0,
        more: flags & PRESENCE_MORE != 0,
        count,
        body,
    }))
}

fn read_member(r: &mut Reader) -> Result<Member, BinaryError> {
    Ok(Member {
        user: r.short("user")?,
        since_ms: r.get("since")?,
        connections: r.get("connections")?,
        info: r.long("info")?,
    })
}

fn put_member(w: &mut Writer, m: &Member) -> Result<(), EncodeError> {
    w.short("user", &m.user)?;
    w.put(m.since_ms);
    w.put(m.connections);
    w.long("info", &m.info)
}

/// Points an encoded `PRESENCE` frame at another subscription: a server encodes a room's
/// event once and sends it to each subscriber with its own sid. Does nothing to bytes
/// that are not a `PRESENCE` frame.
pub fn retarget_presence(frame: &mut [u8], id: u32) {
    if frame.len() >= PRESENCE_ID_AT + 4 && frame[4] == PRESENCE {
        frame[PRESENCE_ID_AT..PRESENCE_ID_AT + 4].copy_from_slice(&id.to_be_bytes());
    }
}

/// The fields of a `MESSAGE` that come before its header block and payload, for a sender
/// that queues those two by reference instead of copying them into one buffer (see
/// [`encode_message_head`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageHead<'a> {
    /// The subscription it is delivered for.
    pub sid: u32,
    /// As published, 0–7.
    pub priority: u8,
    /// The shard owning the subject.
    pub shard: u16,
    /// Its sequence in that shard.
    pub sequence: u64,
    /// When the broker received it, nanoseconds since the Unix epoch.
    pub timestamp: u64,
    /// Delivered from the log (catch-up), not live.
    pub replayed: bool,
    /// The subject it was published to.
    pub subject: &'a [u8],
    /// As published.
    pub reply: Option<&'a [u8]>,
}

impl MessageHead<'_> {
    /// The head of a whole `MESSAGE`.
    pub fn of(m: &Message) -> MessageHead<'_> {
        MessageHead {
            sid: m.sid,
            priority: m.priority,
            shard: m.shard,
            sequence: m.sequence,
            timestamp: m.timestamp,
            replayed: m.replayed,
            subject: &m.subject,
            reply: m.reply.as_deref(),
        }
    }

    /// Writes the fields from `sid` to the reply subject, in wire order.
    fn put_fields(&self, w: &mut Writer) -> Result<(), EncodeError> {
        w.put(self.sid);
        w.put(self.priority);
        w.put(self.shard);
        w.put(self.sequence);
        w.put(self.timestamp);
        w.short("subject", self.subject)?;
        self.reply.map_or(Ok(()), |r| w.short("reply", r))
    }
}

/// A `MESSAGE`'s bytes before its subject: length, type, flags, sid, priority, shard,
/// sequence, timestamp, the subject's length.
const MESSAGE_FIXED: usize = 4 + 1 + 1 + 4 + 1 + 2 + 8 + 8 + 2;

/// The flags byte of a `MESSAGE`.
fn message_flags(head: &MessageHead<'_>, headers: bool) -> u8 {
    flag(head.reply.is_some(), MSG_REPLY)
        | flag(headers, MSG_HEADERS)
        | flag(head.replayed, MSG_REPLAYED)
}

/// Appends the start of a `MESSAGE` frame to `buf`: the frame header (with the length of
/// the whole frame), every field up to the header block, and the header block's length
/// prefix when `headers_len` is given.
///
/// The caller completes the frame by appending, in order: the header block's
/// `headers_len` bytes (when given), `payload_len` as a big-endian `u32`, and the payload's
/// `payload_len` bytes. The result is byte for byte what [`encode_server_frame`] writes for
/// the same [`Message`](super::Message). Checks what the wire cannot represent (see
/// [`EncodeError`]); on error `buf` is left as it was.
///
/// [`encode_server_frame`]: super::encode_server_frame
pub fn encode_message_head(
    head: &MessageHead<'_>,
    headers_len: Option<usize>,
    payload_len: usize,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let headers_prefix = headers_len.map(|n| long_len("headers", n)).transpose()?;
    if let Some(fixed) = message_fixed(head, headers_len, payload_len)? {
        // Every field fits (the common case): the fixed part is laid out on the stack and
        // the head goes in with one reserve and a few copies, not a checked put per field.
        let reply_part = head.reply.map_or(0, |r| 2 + r.len());
        buf.reserve(MESSAGE_FIXED + head.subject.len() + reply_part + 4);
        buf.extend_from_slice(&fixed);
        buf.extend_from_slice(head.subject);
        if let Some(reply) = head.reply {
            buf.extend_from_slice(&(reply.len() as u16).to_be_bytes());
            buf.extend_from_slice(reply);
        }
        if let Some(n) = headers_prefix {
            buf.extend_from_slice(&n.to_be_bytes());
        }
        return Ok(());
    }
    let len = message_len(head, headers_len, payload_len)?;
    let start = buf.len();
    buf.put_u32(len);
    buf.put_u8(MESSAGE);
    buf.put_u8(message_flags(head, headers_len.is_some()));
    let fields = head.put_fields(&mut Writer { buf });
    if let Err(e) = fields {
        buf.truncate(start);
        return Err(e);
    }
    if let Some(n) = headers_prefix {
        buf.put_u32(n);
    }
    Ok(())
}

/// Appends a whole `MESSAGE` without a header block to `buf`: the head, the payload's
/// length and the payload, after one `reserve`, each part copied into the reserved room.
/// The broker's path for a payload small enough to be copied into its outbound buffer.
/// Byte for byte what [`encode_server_frame`] writes for the same
/// [`Message`](super::Message); on error `buf` is left as it was.
///
/// [`encode_server_frame`]: super::encode_server_frame
pub fn encode_message(
    head: &MessageHead<'_>,
    payload: &[u8],
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let Some(fixed) = message_fixed(head, None, payload.len())? else {
        // A subject or reply too long for its length field: the head's field-by-field
        // writer names it.
        encode_message_head(head, None, payload.len(), buf)?;
        buf.put_u32(long_len("payload", payload.len())?);
        buf.extend_from_slice(payload);
        return Ok(());
    };
    let reply_part = head.reply.map_or(0, |r| 2 + r.len());
    let len = MESSAGE_FIXED + head.subject.len() + reply_part + 4 + payload.len();
    buf.reserve(len);
    let start = buf.len();
    // SAFETY: `reserve` left room for at least `len` bytes after the `start` bytes in use;
    // the spare capacity's pointer may write all of that room. The writes below fill
    // exactly `len` bytes from there, in order and without overlap (`len` counts the same
    // parts). Only then does `set_len` make them part of `buf`.
    unsafe {
        let base = buf.spare_capacity_mut().as_mut_ptr().cast::<u8>();
        let mut at = put(base, &fixed);
        at = put(at, head.subject);
        if let Some(reply) = head.reply {
            // Checked to fit a u16 by `message_fixed`.
            at = put(at, &(reply.len() as u16).to_be_bytes());
            at = put(at, reply);
        }
        // Checked to fit a u32 by `message_fixed`.
        at = put(at, &(payload.len() as u32).to_be_bytes());
        at = put(at, payload);
        debug_assert_eq!(at.offset_from(base), len as isize);
        buf.set_len(start + len);
    }
    Ok(())
}

/// A length field of 32 bits, or the error naming the field it does not fit.
fn long_len(field: &'static str, len: usize) -> Result<u32, EncodeError> {
    u32::try_from(len).map_err(|_| EncodeError::FieldTooLong {
        field,
        len,
        max: u32::MAX as usize,
    })
}

/// The length a `MESSAGE` frame announces (everything after its 4-byte length).
fn message_len(
    head: &MessageHead<'_>,
    headers_len: Option<usize>,
    payload_len: usize,
) -> Result<u32, EncodeError> {
    long_len("payload", payload_len)?;
    let len = 2
        + 4
        + 1
        + 2
        + 8
        + 8
        + 2
        + head.subject.len()
        + head.reply.map_or(0, |r| 2 + r.len())
        + headers_len.map_or(0, |n| 4 + n)
        + 4
        + payload_len;
    u32::try_from(len).map_err(|_| EncodeError::FrameTooLong { len })
}

/// A `MESSAGE`'s bytes up to its subject (`MESSAGE_FIXED`), laid out on the stack;
/// `None` when the subject or reply is too long for its 16-bit length (the caller writes
/// field by field, which names it). Errors are what the wire cannot represent.
#[inline]
fn message_fixed(
    head: &MessageHead<'_>,
    headers_len: Option<usize>,
    payload_len: usize,
) -> Result<Option<[u8; MESSAGE_FIXED]>, EncodeError> {
    let len = message_len(head, headers_len, payload_len)?;
    let short = |s: &[u8]| u16::try_from(s.len()).ok();
    let (Some(subject_len), Some(_)) = (short(head.subject), head.reply.map_or(Some(0), short))
    else {
        return Ok(None);
    };
    let mut fixed = [0u8; MESSAGE_FIXED];
    fixed[0..4].copy_from_slice(&len.to_be_bytes());
    fixed[4] = MESSAGE;
    fixed[5] = message_flags(head, headers_len.is_some());
    fixed[6..10].copy_from_slice(&head.sid.to_be_bytes());
    fixed[10] = head.priority;
    fixed[11..13].copy_from_slice(&head.shard.to_be_bytes());
    fixed[13..21].copy_from_slice(&head.sequence.to_be_bytes());
    fixed[21..29].copy_from_slice(&head.timestamp.to_be_bytes());
    fixed[29..31].copy_from_slice(&subject_len.to_be_bytes());
    Ok(Some(fixed))
}

impl ServerFrame {
    /// The frame type and flags byte of this frame.
    pub(crate) fn header(&self) -> (u8, u8) {
        match self {
            ServerFrame::Welcome(_) => (WELCOME, 0),
            ServerFrame::Message(m) => (
                MESSAGE,
                message_flags(&MessageHead::of(m), m.headers.is_some()),
            ),
            ServerFrame::PublishAck(a) => (
                PUBLISH_ACK,
                match a.result {
                    AckResult::Stored { duplicate, .. } => flag(duplicate, ACK_DUPLICATE),
                    AckResult::Refused { .. } => ACK_REFUSED,
                },
            ),
            ServerFrame::Error(e) => (
                ERROR,
                flag(e.fatal, ERR_FATAL) | flag(e.sid.is_some(), ERR_SID),
            ),
            ServerFrame::DropNotice(_) => (DROP_NOTICE, 0),
            ServerFrame::GapNotice(_) => (GAP_NOTICE, 0),
            ServerFrame::GoAway(_) => (GOAWAY, 0),
            ServerFrame::Subscribed(_) => (SUBSCRIBED, 0),
            ServerFrame::Challenge(_) => (CHALLENGE, 0),
            ServerFrame::Presence(p) => (
                PRESENCE,
                flag(p.query, PRESENCE_QUERY_ID) | flag(p.more, PRESENCE_MORE),
            ),
            ServerFrame::Ping => (PING, 0),
            ServerFrame::Pong => (PONG, 0),
        }
    }

    /// Writes the body, in the order `decode` reads it.
    pub(crate) fn put_body(&self, w: &mut Writer) -> Result<(), EncodeError> {
        match self {
            ServerFrame::Welcome(x) => {
                w.put(x.version);
                w.put(x.shard_count);
                w.put(x.max_payload);
                w.put(x.max_frame);
                w.put(x.ping_interval_ms);
                w.put(x.client_id);
                w.put(x.log_epoch);
                w.short("server id", &x.server_id)?;
            }
            ServerFrame::Message(m) => {
                MessageHead::of(m).put_fields(w)?;
                w.long_opt("headers", m.headers.as_ref())?;
                w.long("payload", &m.payload)?;
            }
            ServerFrame::PublishAck(a) => {
                w.put(a.ack_id);
                match &a.result {
                    AckResult::Stored {
                        shard, sequence, ..
                    } => {
                        w.put(*shard);
                        w.put(*sequence);
                    }
                    AckResult::Refused { code, message } => {
                        w.put(code.to_u16());
                        w.short("message", message)?;
                    }
                }
            }
            ServerFrame::Error(e) => {
                w.put(e.code.to_u16());
                w.put_opt(e.sid);
                w.short("message", &e.message)?;
            }
            ServerFrame::DropNotice(d) => {
                w.put(d.sid);
                w.put(d.dropped);
                w.count("range count", d.ranges.len())?;
                for r in &d.ranges {
                    w.put(r.shard);
                    w.put(r.first);
                    w.put(r.last);
                }
            }
            ServerFrame::GapNotice(g) => {
                w.put(g.sid);
                w.put(g.shard);
                w.put(g.requested);
                w.put(g.oldest);
            }
            ServerFrame::GoAway(g) => {
                w.put(g.close_within_ms);
                w.short("reason", &g.reason)?;
            }
            ServerFrame::Subscribed(s) => {
                w.put(s.sid);
                w.put(s.epoch);
                w.count("shard count", s.last_sequences.len())?;
                for &seq in &s.last_sequences {
                    w.put(seq);
                }
            }
            ServerFrame::Challenge(c) => w.short("nonce", &c.nonce)?,
            ServerFrame::Presence(p) => {
                w.put(p.id);
                match &p.body {
                    PresenceBody::Join(m) => {
                        w.put(KIND_JOIN);
                        w.put(p.count);
                        put_member(w, m)?;
                    }
                    PresenceBody::Leave { user } => {
                        w.put(KIND_LEAVE);
                        w.put(p.count);
                        w.short("user", user)?;
                    }
                    PresenceBody::Joined { user, member_token } => {
                        w.put(KIND_JOINED);
                        w.put(p.count);
                        w.short("user", user)?;
                        w.short("member token", member_token)?;
                    }
                    PresenceBody::Snapshot { offset, members }
                    | PresenceBody::Page { offset, members } => {
                        let kind = match p.body {
                            PresenceBody::Snapshot { .. } => KIND_SNAPSHOT,
                            _ => KIND_PAGE,
                        };
                        w.put(kind);
                        w.put(p.count);
                        w.put(*offset);
                        w.count("member count", members.len())?;
                        for m in members {
                            put_member(w, m)?;
                        }
                    }
                    PresenceBody::Refused { code, message } => {
                        w.put(KIND_REFUSED);
                        w.put(p.count);
                        w.put(code.to_u16());
                        w.short("message", message)?;
                    }
                }
            }
            ServerFrame::Ping | ServerFrame::Pong => {}
        }
        Ok(())
    }
}
