//! tern-client: a blocking Rust client for Tern's binary protocol (port 4224).
//!
//! ```no_run
//! use std::time::Duration;
//! use tern_client::{Client, PublishOptions};
//!
//! let client = Client::connect("tern://127.0.0.1:4224")?;
//!
//! // Subscribe, and make sure the broker has the subscription before publishing.
//! let sub = client.subscribe("chat.>")?;
//! client.flush(Duration::from_secs(1))?;
//!
//! client.publish("chat.lobby", "hello")?;
//! client.publish_with("chat.lobby", "urgent", &PublishOptions::new().priority(7))?;
//! let ack = client.publish_acked("chat.lobby", "stored?")?;
//! println!("stored as {}/{}", ack.shard, ack.sequence);
//!
//! for msg in sub.iter().take(3) {
//!     println!("{}: {}", msg.subject, String::from_utf8_lossy(&msg.payload));
//! }
//! client.drain(Duration::from_secs(2))?;
//! # Ok::<(), tern_client::Error>(())
//! ```
//!
//! Owns: the client side of the protocol specified in `docs/protocol-binary.md`, on top of
//! the sans-IO codec in `tern-protocol`: connecting and the handshake (with a token, a user
//! and password, or an nkey answering the server's challenge), publishing (plain,
//! with options, acknowledged), subscriptions (queue groups, catch-up starts), request and
//! reply, presence (joining a room with a subscription, watching its members as
//! [`PresenceEvent`]s and a kept view, [`Presence`]; querying who is in a room and how
//! many, [`Client::presence`]), flush, drain, TLS from the first byte (`tls://`,
//! [`ClientBuilder::tls`]), and staying connected: heartbeats, reconnecting with
//! full-jitter backoff (at once when a broker going away, `GOAWAY`, closes the connection
//! as it announced), an offline buffer for publishes, and resubscribing with resume tokens
//! and presence member tokens (a reconnect within the broker's grace window stays the
//! same member).
//!
//! How it runs: every [`Client`] has one background I/O thread that owns the socket
//! (non-blocking, `mio`). Application calls put encoded frames in a bounded outbox and
//! wake it; deliveries come back through one bounded queue per subscription (presence
//! events through one more, for a subscription that asked for them); connection events
//! through a bounded event queue ([`Client::events`]). Every wait has a timeout, no buffer
//! on the data path is unbounded, and dropping the last `Client` handle stops the thread.
//!
//! Never: panics on bytes from the network, drops a publish silently (a full offline
//! buffer is an [`Error::OfflineBufferFull`]; messages the application did not take in
//! time are reported as [`Event::Dropped`], except on a lossless subscription, whose full
//! queue stops the client reading the socket until the application takes one, so that the
//! broker serves it from its log instead; presence events it did not take are replaced
//! by a snapshot of the room), or blocks the I/O thread on the application (a held
//! lossless delivery is retried every millisecond, not waited for).

#![deny(missing_docs)]

mod addr;
mod auth;
mod backoff;
mod builder;
mod client;
mod driver;
mod error;
mod event;
mod headers;
mod message;
mod outbox;
mod presence;
mod random;
mod resume;
mod shared;
mod subscription;
mod tls;

pub use addr::{ServerAddr, DEFAULT_PORT};
pub use auth::{CredentialsError, NkeyCredentials};
pub use backoff::ReconnectPolicy;
pub use builder::ClientBuilder;
pub use client::{Client, PendingAck};
pub use error::Error;
pub use event::{DisconnectReason, DropSource, Event, Events, ServerInfo};
pub use headers::Headers;
pub use message::{Ack, Message, PublishOptions};
pub use presence::{Member, Presence, PresenceEvent, PresenceIter, PresencePage};
pub use subscription::{IntoIter, Iter, StartFrom, SubscribeBuilder, Subscription};
pub use tls::{client_config as tls_client_config, TlsConfigError};

/// The rustls this crate is built with, for [`ClientBuilder::tls_config`] and for matching
/// on [`Error::Tls`]'s reason.
pub use rustls;

/// The byte buffer type of payloads.
pub use bytes::Bytes;
/// The codes of the broker's errors (`ERROR` frames and refused acks), from
/// `tern-protocol`. Codes never change meaning; unknown ones are [`ErrorCode::Other`].
pub use tern_protocol::binary::ErrorCode;
/// A resume token: a log epoch and the last sequence seen per shard.
pub use tern_protocol::binary::ResumeToken;
/// The sequences `first..=last` of one shard (in drop reports).
pub use tern_protocol::binary::SequenceRange;
/// Why a header block could not be parsed ([`Headers::parse`]).
pub use tern_protocol::headers::HeaderError;
