//! The operations of the text protocol, as typed values.
//!
//! Subjects, reply subjects, sids, header blocks and payloads are `Bytes` slices of the
//! buffer they were decoded from: decoding copies nothing.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// An operation a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOp {
    /// `CONNECT <json>`: the connection's options.
    Connect(Box<ConnectOptions>),
    /// `PUB` (when `headers` is `None`) or `HPUB`.
    Pub(Publish),
    /// `SUB`.
    Sub(Subscribe),
    /// `UNSUB <sid> [max]`.
    Unsub {
        /// The subscription to end.
        sid: Bytes,
        /// End it after this many more messages (counted from the start of the
        /// subscription, as in NATS) instead of now.
        max: Option<u64>,
    },
    /// `PING`.
    Ping,
    /// `PONG`.
    Pong,
    /// `INFO <json>` from a client: its JSON object, as sent. nats-server reads a peer's
    /// `INFO` only from routes, gateways and leaf nodes, and ignores a client's; so does
    /// Tern.
    Info(Bytes),
    /// `+OK` from a client: ignored, as nats-server does.
    Ok,
    /// `-ERR '<text>'` from a client (the text without its quotes): nats-server logs it
    /// and closes the connection; so does Tern.
    Err(String),
}

/// `PUB <subject> [reply] <size>` or `HPUB <subject> [reply] <hdr size> <total size>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Publish {
    /// The (literal) subject published to.
    pub subject: Bytes,
    /// The reply subject, if any.
    pub reply: Option<Bytes>,
    /// The whole `NATS/1.0 ...\r\n\r\n` block, when the operation was `HPUB`.
    pub headers: Option<Bytes>,
    /// The payload, without the header block.
    pub payload: Bytes,
}

/// `SUB <subject> [queue group] <sid>`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscribe {
    /// The filter (wildcards allowed).
    pub subject: Bytes,
    /// The queue group, if any.
    pub queue: Option<Bytes>,
    /// The client's id for this subscription.
    pub sid: Bytes,
}

/// The JSON options of `CONNECT`. Unknown fields are ignored, missing ones take the NATS
/// defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectOptions {
    /// `+OK` after every operation.
    pub verbose: bool,
    /// Stricter checking (Tern always validates subjects; accepted for compatibility).
    pub pedantic: bool,
    /// The client requires TLS.
    pub tls_required: bool,
    /// False: this connection does not receive the messages it publishes.
    pub echo: bool,
    /// The client understands `HMSG`.
    pub headers: bool,
    /// A request with no subscribers gets a `503` status message.
    pub no_responders: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The client's name for itself.
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The client library's implementation language.
    pub lang: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The client library's version.
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The protocol version the client speaks (`1` understands async INFO).
    pub protocol: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The user name, for user/password authentication.
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The password, for user/password authentication.
    pub pass: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The token, for token authentication (or a JWT connection token, where the server
    /// takes them).
    pub auth_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The user's public nkey (`U...`), for nkey authentication.
    pub nkey: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The `INFO` nonce signed with the nkey's seed (base64), for nkey authentication.
    pub sig: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The user JWT of decentralised NATS authentication (a `.creds` file's), sent with the
    /// nkey and signature.
    pub jwt: Option<String>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            verbose: false,
            pedantic: false,
            tls_required: false,
            echo: true,
            headers: false,
            no_responders: false,
            name: None,
            lang: None,
            version: None,
            protocol: None,
            user: None,
            pass: None,
            auth_token: None,
            nkey: None,
            sig: None,
            jwt: None,
        }
    }
}

/// An operation a server sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerOp {
    /// `INFO <json>`: the server's description.
    Info(Box<ServerInfo>),
    /// `MSG` (when `headers` is `None`) or `HMSG`.
    Msg(Message),
    /// `+OK`: acknowledges an operation in verbose mode.
    Ok,
    /// `-ERR '<text>'`; the text without its quotes.
    Err(String),
    /// `PING`.
    Ping,
    /// `PONG`.
    Pong,
}

/// A delivered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The subject the message was published to.
    pub subject: Bytes,
    /// The subscription it is delivered for.
    pub sid: Bytes,
    /// The reply subject, if any.
    pub reply: Option<Bytes>,
    /// The whole `NATS/1.0 ...\r\n\r\n` block, when the operation is `HMSG`.
    pub headers: Option<Bytes>,
    /// The payload, without the header block.
    pub payload: Bytes,
}

/// The JSON of `INFO`. Unknown fields are ignored when decoding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ServerInfo {
    /// The server's unique id.
    pub server_id: String,
    /// The server's name.
    pub server_name: String,
    /// The server's version, as NATS clients compare it (Tern reports the nats-server version
    /// whose client protocol it implements; `docs/protocol-text.md`).
    pub version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Tern's own version, when the server is Tern.
    pub tern_version: Option<String>,
    /// The protocol version the server speaks.
    pub proto: u8,
    /// The address the server listens on.
    pub host: String,
    /// The port the server listens on.
    pub port: u16,
    /// The server supports headers (`HPUB`/`HMSG`).
    pub headers: bool,
    /// The largest payload (headers included) the server accepts.
    pub max_payload: usize,
    /// The server's id for this connection.
    pub client_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The connection's remote address as the server sees it.
    pub client_ip: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    /// The port is TLS: the client must start a TLS handshake after this `INFO` (or, with
    /// the server's `handshake_first`, before it).
    pub tls_required: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    /// The server requires and verifies a client certificate.
    pub tls_verify: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    /// The client must authenticate in its `CONNECT` before anything else.
    pub auth_required: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// What an nkey user signs to prove it holds the seed (per connection).
    pub nonce: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    /// Lame duck mode: the server accepts no new connections and will close this one soon;
    /// the client should reconnect (to another server if it can). Sent in an `INFO` after
    /// the first.
    pub ldm: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    /// The other servers of the server's cluster clients may connect to (`host:port`), as
    /// a NATS cluster advertises them; Tern sends none.
    pub connect_urls: Vec<String>,
}
