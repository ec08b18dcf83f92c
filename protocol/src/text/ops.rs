//! The operations of the text protocol, as typed values.
//!
//! Subjects, reply subjects, sids, header blocks and payloads are `Bytes` slices of the
//! buffer they were decoded from: decoding copies nothing.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// An operation a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOp {
    Connect(Box<ConnectOptions>),
    /// `PUB` (when `headers` is `None`) or `HPUB`.
    Pub(Publish),
    Sub(Subscribe),
    Unsub {
        sid: Bytes,
        max: Option<u64>,
    },
    Ping,
    Pong,
}

/// `PUB <subject> [reply] <size>` or `HPUB <subject> [reply] <hdr size> <total size>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub subject: Bytes,
    pub reply: Option<Bytes>,
    /// The whole `NATS/1.0 ...\r\n\r\n` block, when the operation was `HPUB`.
    pub headers: Option<Bytes>,
    pub payload: Bytes,
}

/// `SUB <subject> [queue group] <sid>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub subject: Bytes,
    pub queue: Option<Bytes>,
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
    pub tls_required: bool,
    /// False: this connection does not receive the messages it publishes.
    pub echo: bool,
    /// The client understands `HMSG`.
    pub headers: bool,
    /// A request with no subscribers gets a `503` status message.
    pub no_responders: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pass: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<String>,
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
        }
    }
}

/// An operation a server sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerOp {
    Info(Box<ServerInfo>),
    /// `MSG` (when `headers` is `None`) or `HMSG`.
    Msg(Message),
    Ok,
    /// `-ERR '<text>'`; the text without its quotes.
    Err(String),
    Ping,
    Pong,
}

/// A delivered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub subject: Bytes,
    pub sid: Bytes,
    pub reply: Option<Bytes>,
    pub headers: Option<Bytes>,
    pub payload: Bytes,
}

/// The JSON of `INFO`. Unknown fields are ignored when decoding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct ServerInfo {
    pub server_id: String,
    pub server_name: String,
    pub version: String,
    pub proto: u8,
    pub host: String,
    pub port: u16,
    pub headers: bool,
    pub max_payload: usize,
    pub client_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
}
