//! TLS and WebSocket settings: their flags (`--tls-*`, `--websocket-*`), the config file's
//! `[tls]` and `[websocket]` sections, what they resolve to ([`TlsOptions`],
//! [`WebSocketOptions`]) and the checks of combinations that cannot work.
//!
//! Never: reads a certificate or a key. The server loads them when it starts
//! (`tern_transport::load_server_config`), so that a bad file stops it with an error naming
//! the file, and reloads them on SIGHUP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use tern_transport::{TlsSettings, WsLimits};

use super::declare::{parse_duration, parse_size, Dur, Kind, Size};
use super::ConfigError;

/// The default of `tls_handshake_timeout`: nats-server's TLS timeout.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// The default of `websocket_max_message`: room for a `max_payload` message and a batch of
/// small commands in one WebSocket message (clients batch their writes).
pub const DEFAULT_WEBSOCKET_MAX_MESSAGE: usize = 8 << 20;

/// The flags. Every one is optional; a flag given wins over the config file.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct TransportArgs {
    /// Server certificate chain (PEM). With --tls-key, every port speaks TLS.
    #[arg(long, value_name = "FILE", requires = "tls_key", help_heading = "TLS")]
    pub tls_cert: Option<PathBuf>,
    /// Server private key (PEM), for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert", help_heading = "TLS")]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) that client certificates are verified against; without
    /// --tls-verify a client certificate is optional but verified when presented.
    #[arg(long, value_name = "FILE", help_heading = "TLS")]
    pub tls_ca: Option<PathBuf>,
    /// Require a client certificate, verified against --tls-ca.
    #[arg(long, help_heading = "TLS")]
    pub tls_verify: bool,
    /// Time a client has to complete the TLS handshake, from accept [default: 2s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, help_heading = "TLS")]
    pub tls_handshake_timeout: Option<Duration>,
    /// Text port: wait for the client's TLS handshake before INFO (nats-server's
    /// handshake_first), instead of INFO in plain text first.
    #[arg(long, help_heading = "TLS")]
    pub tls_handshake_first: bool,
    /// WebSocket listen address: path / serves the NATS text protocol, /tern the binary
    /// protocol [default: off].
    #[arg(long, value_name = "ADDR", help_heading = "WebSocket")]
    pub websocket_listen: Option<SocketAddr>,
    /// Serve WebSocket without TLS even when TLS is configured; needed to serve it without
    /// TLS on an address that is not loopback.
    #[arg(long, help_heading = "WebSocket")]
    pub websocket_no_tls: bool,
    /// Origins browsers may connect from, scheme://host[:port] (comma-separated or
    /// repeated) [default: any].
    #[arg(
        long,
        value_name = "ORIGIN",
        value_delimiter = ',',
        help_heading = "WebSocket"
    )]
    pub websocket_allowed_origins: Vec<String>,
    /// Offer permessage-deflate compression to WebSocket clients.
    #[arg(long, help_heading = "WebSocket")]
    pub websocket_compression: bool,
    /// Largest WebSocket message a client may send (close code 1009 past it) [default:
    /// 8MiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size, help_heading = "WebSocket")]
    pub websocket_max_message: Option<usize>,
}

/// What the flags and the config file said about TLS before resolving, kept for the
/// checks (a key without its certificate is an error, not "TLS off"). Left out of the
/// configuration's `Debug`: the resolved fields say it all.
#[derive(Clone, Default)]
pub(crate) struct Given(pub TransportArgs, pub Option<FileTls>);

impl std::fmt::Debug for Given {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("..")
    }
}

/// The config file's `[tls]` section.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileTls {
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    verify: Option<bool>,
    #[serde(default, deserialize_with = "de_duration")]
    handshake_timeout: Option<Duration>,
    handshake_first: Option<bool>,
}

/// The config file's `[websocket]` section.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileWebSocket {
    listen: Option<SocketAddr>,
    no_tls: Option<bool>,
    allowed_origins: Option<Vec<String>>,
    compression: Option<bool>,
    #[serde(default, deserialize_with = "de_size")]
    max_message: Option<usize>,
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    Dur::read(d).map(Some)
}

fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    Size::read(d).map(Some)
}

/// TLS, resolved: on when a certificate and a key are configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsOptions {
    /// The files and the client-certificate policy, as `tern_transport` loads them.
    pub settings: TlsSettings,
    /// Time from accept to a completed handshake; past it the connection is closed.
    pub handshake_timeout: Duration,
    /// Text port: the TLS handshake comes before `INFO`.
    pub handshake_first: bool,
}

/// The WebSocket listener, resolved: on when it has an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSocketOptions {
    pub listen: SocketAddr,
    /// Plain `ws://` even when TLS is configured.
    pub no_tls: bool,
    /// Empty: any origin.
    pub allowed_origins: Vec<String>,
    pub compression: bool,
    pub max_message: usize,
}

impl WebSocketOptions {
    /// True when the listener serves `wss://`: TLS is configured and not turned off for it.
    pub fn uses_tls(&self, tls: Option<&TlsOptions>) -> bool {
        tls.is_some() && !self.no_tls
    }

    /// The transport's limits.
    pub fn limits(&self) -> WsLimits {
        WsLimits {
            max_message: self.max_message,
            ..WsLimits::default()
        }
    }
}

/// Flag over file over default, for both sections.
pub(crate) fn resolve(
    args: &TransportArgs,
    tls: Option<&FileTls>,
    ws: Option<&FileWebSocket>,
) -> (Option<TlsOptions>, Option<WebSocketOptions>) {
    let ft = tls.cloned().unwrap_or_default();
    let cert = args.tls_cert.clone().or(ft.cert_file);
    let key = args.tls_key.clone().or(ft.key_file);
    let ca = args.tls_ca.clone().or(ft.ca_file);
    let verify = args.tls_verify || ft.verify.unwrap_or(false);
    let tls = match (cert, key) {
        (Some(cert_file), Some(key_file)) => Some(TlsOptions {
            settings: TlsSettings {
                cert_file,
                key_file,
                ca_file: ca,
                verify,
                alpn: Vec::new(),
            },
            handshake_timeout: args
                .tls_handshake_timeout
                .or(ft.handshake_timeout)
                .unwrap_or(DEFAULT_TLS_HANDSHAKE_TIMEOUT),
            handshake_first: args.tls_handshake_first || ft.handshake_first.unwrap_or(false),
        }),
        // Half a configuration is refused by `validate` (below), from what was given.
        _ => None,
    };
    let fw = ws.cloned().unwrap_or_default();
    let ws = args
        .websocket_listen
        .or(fw.listen)
        .map(|listen| WebSocketOptions {
            listen,
            no_tls: args.websocket_no_tls || fw.no_tls.unwrap_or(false),
            allowed_origins: if args.websocket_allowed_origins.is_empty() {
                fw.allowed_origins.unwrap_or_default()
            } else {
                args.websocket_allowed_origins.clone()
            },
            compression: args.websocket_compression || fw.compression.unwrap_or(false),
            max_message: args
                .websocket_max_message
                .or(fw.max_message)
                .unwrap_or(DEFAULT_WEBSOCKET_MAX_MESSAGE),
        });
    (tls, ws)
}

/// Checks the combinations that cannot work, from what the flags and the file named as
/// well as what they resolved to (a key without its certificate is an error, not "TLS
/// off").
pub(crate) fn validate(
    args: &TransportArgs,
    file: Option<&FileTls>,
    tls: Option<&TlsOptions>,
    ws: Option<&WebSocketOptions>,
    max_payload: usize,
) -> Result<(), ConfigError> {
    let invalid = |key, reason: String| Err(ConfigError::Invalid { key, reason });
    let ft = file.cloned().unwrap_or_default();
    let cert = args.tls_cert.is_some() || ft.cert_file.is_some();
    let key = args.tls_key.is_some() || ft.key_file.is_some();
    if cert != key {
        let (key, missing) = if cert {
            (
                "tls_key",
                "tls_cert is set but tls_key is not: TLS needs both",
            )
        } else {
            (
                "tls_cert",
                "tls_key is set but tls_cert is not: TLS needs both",
            )
        };
        return invalid(key, missing.to_string());
    }
    match tls {
        None => {
            let other = (args.tls_ca.is_some() || ft.ca_file.is_some())
                .then_some("tls_ca")
                .or((args.tls_verify || ft.verify == Some(true)).then_some("tls_verify"))
                .or(
                    (args.tls_handshake_first || ft.handshake_first == Some(true))
                        .then_some("tls_handshake_first"),
                );
            if let Some(k) = other {
                return invalid(k, "needs tls_cert and tls_key (TLS is off)".to_string());
            }
        }
        Some(t) => {
            if t.settings.verify && t.settings.ca_file.is_none() {
                return invalid(
                    "tls_verify",
                    "needs tls_ca: the CA that client certificates are verified against"
                        .to_string(),
                );
            }
            if t.handshake_timeout < Duration::from_millis(10) {
                return invalid("tls_handshake_timeout", "must be at least 10ms".to_string());
            }
        }
    }
    if let Some(w) = ws {
        if !w.uses_tls(tls) && !w.no_tls && !w.listen.ip().is_loopback() {
            return invalid(
                "websocket_listen",
                format!(
                    "{} is not a loopback address: configure TLS (tls_cert, tls_key) or \
                     say websocket_no_tls to serve WebSocket without it",
                    w.listen
                ),
            );
        }
        if w.max_message < max_payload {
            return invalid(
                "websocket_max_message",
                "must be at least max_payload".to_string(),
            );
        }
        if let Err(e) = tern_transport::AllowedOrigins::parse(&w.allowed_origins) {
            return invalid("websocket_allowed_origins", e.to_string());
        }
    }
    Ok(())
}
