//! The one error type of the client's public API.
//!
//! Owns: [`Error`], whose variants a caller can act on (retry later, give up, fix the
//! input), and the texts they print.
//!
//! Never: wraps a boxed or stringly-typed "other" error. Every failure the client can
//! report has its own variant.

use std::io;

use crate::{CredentialsError, ErrorCode, TlsConfigError};

/// Everything that can go wrong in a client call.
///
/// ```no_run
/// use tern_client::{Client, Error};
/// use std::time::Duration;
///
/// let client = Client::connect("tern://127.0.0.1:4224")?;
/// match client.request("time.now", "", Duration::from_secs(1)) {
///     Ok(reply) => println!("{}", String::from_utf8_lossy(&reply.payload)),
///     Err(Error::NoResponders { .. }) => println!("nobody answers time.now"),
///     Err(Error::Timeout) => println!("no answer within a second"),
///     Err(e) => return Err(e),
/// }
/// # Ok::<(), Error>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server URL could not be parsed.
    #[error("invalid server URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The first connection could not be made (name resolution, TCP connect, or the
    /// handshake timed out).
    #[error("cannot connect to {server}: {source}")]
    Connect {
        /// The server, as configured.
        server: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The TLS settings cannot be used: a CA, certificate or key file that cannot be read
    /// or holds nothing usable (the error names it), a key that does not match its
    /// certificate, an invalid server name. Found at `connect`, before any connection.
    #[error("TLS settings: {0}")]
    TlsConfig(#[from] TlsConfigError),
    /// The credentials cannot be used: a credentials file that cannot be read or has no
    /// `USER NKEY SEED` block, or a seed that is not a valid user seed (the error names the
    /// file or the setting, never the secret). Found at `connect`, before any connection.
    #[error("credentials: {0}")]
    Credentials(#[from] CredentialsError),
    /// The first connection's TLS handshake failed: the server's certificate was not
    /// trusted or does not carry the server's name, the server refused this client (no or
    /// an unknown client certificate), or the server does not speak TLS. `source` is
    /// rustls's reason; `hint`, when there is one, the likely fix.
    #[error(
        "TLS with {server} failed: {source}{}",
        .hint.map(|h| format!(" ({h})")).unwrap_or_default()
    )]
    Tls {
        /// The server, as configured.
        server: String,
        /// rustls's reason.
        #[source]
        source: rustls::Error,
        /// What it most likely means, in the words of the fix.
        hint: Option<&'static str>,
    },
    /// An I/O error outside connecting.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// The server sent bytes that are not the binary protocol, or a frame out of place.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The server reported an error: a fatal one that refused the connection (during the
    /// handshake, e.g. [`ErrorCode::AuthorizationViolation`] for credentials it does not
    /// accept), one that ended a subscription, or a refused presence query
    /// ([`Client::presence`](crate::Client::presence), e.g.
    /// [`ErrorCode::PermissionViolation`]).
    #[error("server error {code:?} (0x{:04x}): {message}", code.to_u16())]
    Server {
        /// The error code.
        code: ErrorCode,
        /// The server's text.
        message: String,
    },
    /// The server refused an acknowledged publish (`PUBLISH_ACK` with the refused flag).
    #[error("publish refused, {code:?} (0x{:04x}): {message}", code.to_u16())]
    Refused {
        /// The error code, e.g. [`ErrorCode::InvalidSubject`] or [`ErrorCode::RateLimited`].
        code: ErrorCode,
        /// The server's text.
        message: String,
    },
    /// The wait ended before the answer arrived (an ack, a reply, a flush's `PONG`, a
    /// presence query's answer, room in the write buffer, or a message or presence event
    /// on a subscription).
    #[error("timed out")]
    Timeout,
    /// The connection was lost while the answer was outstanding. The request or publish
    /// may or may not have reached the server: its outcome is unknown.
    /// (An acknowledged publish with a message id is sent again instead, and gets this
    /// only when it does not fit the offline buffer.)
    #[error("disconnected before the answer arrived")]
    Disconnected,
    /// The client is disconnected and its offline buffer has no room for this publish.
    /// Nothing was buffered; retry after reconnecting (see [`Event::Reconnected`](crate::Event))
    /// or raise [`ClientBuilder::offline_buffer_bytes`](crate::ClientBuilder::offline_buffer_bytes).
    #[error("offline buffer full: {buffered} bytes buffered, {needed} more needed, limit {limit}")]
    OfflineBufferFull {
        /// Bytes buffered now.
        buffered: usize,
        /// The size of the refused frame.
        needed: usize,
        /// The configured bound.
        limit: usize,
    },
    /// A request reached nobody: no subscriber on its subject (the broker's no-responders
    /// status, `NATS/1.0 503`).
    #[error("no responders for `{subject}`")]
    NoResponders {
        /// The request's subject.
        subject: String,
    },
    /// A subject, reply subject, filter or queue group that the protocol does not allow.
    #[error("invalid subject `{subject}`: {reason}")]
    InvalidSubject {
        /// The subject as given.
        subject: String,
        /// Why it is invalid.
        reason: String,
    },
    /// Header block plus payload larger than the server accepts (`max payload` from
    /// `WELCOME`).
    #[error("payload of {size} bytes exceeds the server's maximum of {max}")]
    PayloadTooLarge {
        /// Header block plus payload, in bytes.
        size: usize,
        /// The server's limit.
        max: usize,
    },
    /// An option the protocol cannot carry: a priority above 7, an empty message id or
    /// coalescing key, a header name or value with a line break.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// [`Client::respond`](crate::Client::respond) on a message that has no reply subject.
    #[error("the message has no reply subject")]
    NoReplySubject,
    /// The subscription has ended: it was unsubscribed, its
    /// [`unsubscribe_after`](crate::Subscription::unsubscribe_after) count was reached, or
    /// the client drained. Messages received before the end were all handed out first.
    #[error("the subscription has ended")]
    Unsubscribed,
    /// The client was closed ([`Client::close`](crate::Client::close), `drain`, the last
    /// handle dropped, or reconnecting gave up after its maximum attempts).
    #[error("the client is closed")]
    Closed,
}
