//! What the application sends and receives: [`Message`], [`PublishOptions`], [`Ack`].
//!
//! Owns: the public shape of a delivery and of a publish's options, and the conversion of
//! a decoded `MESSAGE` frame into a [`Message`] (the only place header blocks are parsed
//! on receipt).
//!
//! Never: encodes frames or validates against server limits; the client does that when it
//! publishes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tern_protocol::binary;

use crate::Headers;

/// A message delivered to a subscription (or a reply to a request).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Message {
    /// The subject it was published to.
    pub subject: String,
    /// The reply subject, if the publisher set one (requests do).
    pub reply: Option<String>,
    /// The headers, parsed; `None` when the message has none, or when its header block
    /// does not parse (then [`raw_headers`](Self::raw_headers) still has the bytes).
    pub headers: Option<Headers>,
    /// The header block exactly as published, if any.
    pub raw_headers: Option<Bytes>,
    /// The payload.
    pub payload: Bytes,
    /// Its priority, 0 (lowest) to 7.
    pub priority: u8,
    /// The shard that owns its subject.
    pub shard: u16,
    /// Its sequence in that shard (from 1).
    pub sequence: u64,
    /// When the broker received it, in nanoseconds since the Unix epoch.
    pub timestamp: u64,
    /// True when it was replayed from the broker's log (a catch-up), not delivered live.
    pub replayed: bool,
    /// The subscription it was delivered for.
    pub sid: u32,
}

impl Message {
    /// The payload as UTF-8 text, if it is.
    pub fn payload_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.payload).ok()
    }

    /// [`timestamp`](Self::timestamp) as a `SystemTime`.
    pub fn time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.timestamp)
    }

    /// True for the broker's "no responders" answer to a request: a status-503 header block
    /// and no payload.
    pub fn is_no_responders(&self) -> bool {
        self.payload.is_empty()
            && self
                .headers
                .as_ref()
                .is_some_and(|h| h.status() == Some(503))
    }

    pub(crate) fn from_frame(m: binary::Message) -> Message {
        let text = |b: Bytes| match String::from_utf8(b.to_vec()) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        Message {
            subject: text(m.subject),
            reply: m.reply.map(text),
            headers: m.headers.as_deref().and_then(|h| Headers::parse(h).ok()),
            raw_headers: m.headers,
            payload: m.payload,
            priority: m.priority,
            shard: m.shard,
            sequence: m.sequence,
            timestamp: m.timestamp,
            replayed: m.replayed,
            sid: m.sid,
        }
    }
}

/// Options of one publish, for [`Client::publish_with`](crate::Client::publish_with) and
/// friends. The default is a plain publish: priority 0, no headers, no id, no reply.
///
/// ```
/// use tern_client::{Headers, PublishOptions};
///
/// let opts = PublishOptions::new()
///     .priority(5)
///     .header("Trace-Id", "7f3a")
///     .message_id("order-1042")
///     .reply("orders.replies");
/// assert_eq!(opts.priority, 5);
/// assert_eq!(opts.headers.as_ref().and_then(|h| h.get("trace-id")), Some("7f3a"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublishOptions {
    /// 0 (lowest, the default) to 7 (highest); under overload the broker drops lower
    /// priorities first.
    pub priority: u8,
    /// Headers to send with the message.
    pub headers: Option<Headers>,
    /// An id for idempotent publishing: a repeat within the broker's dedupe window is
    /// acknowledged as a duplicate and not delivered again. Must not be empty.
    pub message_id: Option<String>,
    /// A coalescing key: a message with the same key still queued for a subscriber is
    /// replaced by this one. Must not be empty.
    pub coalescing_key: Option<String>,
    /// A reply subject for the receivers to answer on.
    pub reply: Option<String>,
    /// A header block exactly as it goes out (`NATS/1.0\r\n...\r\n\r\n`), instead of
    /// `headers`: for relaying a message's headers without parsing them (a bridge). Only
    /// its framing is checked.
    pub raw_headers: Option<Bytes>,
}

impl PublishOptions {
    /// The defaults.
    pub fn new() -> PublishOptions {
        PublishOptions::default()
    }

    /// Sets the priority (0..=7).
    pub fn priority(mut self, priority: u8) -> PublishOptions {
        self.priority = priority;
        self
    }

    /// Sets all headers at once.
    pub fn headers(mut self, headers: Headers) -> PublishOptions {
        self.headers = Some(headers);
        self
    }

    /// Adds one header field.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> PublishOptions {
        self.headers
            .get_or_insert_with(Headers::new)
            .append(name, value);
        self
    }

    /// Sets the message id (idempotent publishing).
    pub fn message_id(mut self, id: impl Into<String>) -> PublishOptions {
        self.message_id = Some(id.into());
        self
    }

    /// Sets the coalescing key.
    pub fn coalescing_key(mut self, key: impl Into<String>) -> PublishOptions {
        self.coalescing_key = Some(key.into());
        self
    }

    /// Sets the reply subject.
    pub fn reply(mut self, subject: impl Into<String>) -> PublishOptions {
        self.reply = Some(subject.into());
        self
    }

    /// A header block sent as it is, instead of [`PublishOptions::headers`]: it must start
    /// with `NATS/1.0` and end with an empty line.
    pub fn raw_headers(mut self, block: Bytes) -> PublishOptions {
        self.raw_headers = Some(block);
        self
    }
}

/// Where the broker stored an acknowledged publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The shard that owns the subject.
    pub shard: u16,
    /// The message's sequence in that shard.
    pub sequence: u64,
    /// True when its message id had been seen within the dedupe window: this is the
    /// earlier copy's place, and nothing was delivered again.
    pub duplicate: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_a_frame() {
        let frame = binary::Message {
            sid: 3,
            priority: 2,
            shard: 1,
            sequence: 9,
            timestamp: 1_000_000_001,
            replayed: true,
            subject: Bytes::from_static(b"a.b"),
            reply: Some(Bytes::from_static(b"r")),
            headers: Some(Bytes::from_static(b"NATS/1.0\r\nK: v\r\n\r\n")),
            payload: Bytes::from_static(b"hi"),
        };
        let m = Message::from_frame(frame);
        assert_eq!(m.subject, "a.b");
        assert_eq!(m.reply.as_deref(), Some("r"));
        assert_eq!(m.headers.as_ref().unwrap().get("k"), Some("v"));
        assert_eq!(m.payload_str(), Some("hi"));
        assert_eq!((m.sid, m.priority, m.shard, m.sequence), (3, 2, 1, 9));
        assert!(m.replayed);
        assert_eq!(m.time(), UNIX_EPOCH + Duration::new(1, 1));
        assert!(!m.is_no_responders());
    }

    #[test]
    fn keeps_an_unparsable_block_raw_and_spots_no_responders() {
        let m = Message::from_frame(binary::Message {
            subject: Bytes::from_static(b"x"),
            headers: Some(Bytes::from_static(b"NATS/1.0\r\nbroken\r\n\r\n")),
            ..Default::default()
        });
        assert_eq!(m.headers, None);
        assert_eq!(
            m.raw_headers.as_deref(),
            Some(&b"NATS/1.0\r\nbroken\r\n\r\n"[..])
        );
        let m = Message::from_frame(binary::Message {
            subject: Bytes::from_static(b"x"),
            headers: Some(Bytes::from_static(b"NATS/1.0 503\r\n\r\n")),
            ..Default::default()
        });
        assert!(m.is_no_responders());
    }
}
