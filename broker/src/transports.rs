//! The transports the listeners speak: TLS on every port when it is configured, and the
//! WebSocket listener. Shared by every worker, it makes each accepted connection's
//! [`Link`] (or none, for plain TCP).
//!
//! Owns: the reloadable TLS configuration ([`TlsConfigHandle`]: SIGHUP swaps in a new
//! certificate and key, connections already open keep theirs), the WebSocket settings, and
//! which start each port gets: the text port's `INFO` in plain text before TLS (or after it,
//! with `handshake_first`), TLS from the first byte on the binary and WebSocket ports.
//!
//! Never: reads or writes a socket, or blocks a worker: the one lock-free load of the
//! current TLS configuration per accepted connection is all a worker pays here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tern_protocol::binary::Welcome;
use tern_protocol::text::ServerInfo;
use tern_transport::{
    AllowedOrigins, TlsConfigError, TlsConfigHandle, TlsLimits, TlsStart, Transport,
    TransportError, WsConfig,
};

use crate::config::Config;
use crate::conn::link::{Greeting, Link, LinkKind, BINARY_PATH};

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Port {
    Text,
    Binary,
    WebSocket,
}

/// TLS as every worker accepts it.
#[derive(Clone)]
pub(crate) struct TlsAccept {
    pub handle: Arc<TlsConfigHandle>,
    pub handshake_timeout: Duration,
    pub handshake_first: bool,
}

/// The WebSocket listener's settings.
#[derive(Clone)]
pub(crate) struct WsAccept {
    pub config: Arc<WsConfig>,
    /// `wss://`: TLS from the first byte, then the upgrade.
    pub tls: bool,
    /// From accept to an accepted upgrade (TLS handshake included).
    pub timeout: Duration,
}

/// Every listener's transport, cloned into each worker.
#[derive(Clone, Default)]
pub(crate) struct Transports {
    pub tls: Option<TlsAccept>,
    pub websocket: Option<WsAccept>,
}

impl Transports {
    /// Loads the certificate and key (an error names the file) and resolves the WebSocket
    /// settings.
    pub fn from_config(config: &Config) -> Result<Transports, TlsConfigError> {
        let tls = match &config.tls {
            Some(t) => Some(TlsAccept {
                handle: Arc::new(TlsConfigHandle::load(&t.settings)?),
                handshake_timeout: t.handshake_timeout,
                handshake_first: t.handshake_first,
            }),
            None => None,
        };
        let websocket = config.websocket.as_ref().map(|w| {
            let uses_tls = w.uses_tls(config.tls.as_ref());
            WsAccept {
                config: Arc::new(WsConfig {
                    paths: vec!["/".to_owned(), BINARY_PATH.to_owned()],
                    // Checked by `Config::validate`.
                    allowed_origins: AllowedOrigins::parse(&w.allowed_origins).unwrap_or_default(),
                    compression: w.compression,
                    limits: w.limits(),
                }),
                tls: uses_tls,
                timeout: match &config.tls {
                    Some(t) if uses_tls => t.handshake_timeout.max(config.limits.auth_timeout),
                    _ => config.limits.auth_timeout,
                },
            }
        });
        Ok(Transports { tls, websocket })
    }

    /// The `INFO` fields that say what the text port requires.
    pub fn mark_info(&self, info: &mut ServerInfo, verify: bool) {
        info.tls_required = self.tls.is_some();
        info.tls_verify = self.tls.is_some() && verify;
    }

    /// True when the port's connections start with a TLS handshake (nothing in plain text
    /// can be said to them before it).
    pub fn tls_from_first_byte(&self, port: Port) -> bool {
        match port {
            Port::Text => self.tls.as_ref().is_some_and(|t| t.handshake_first),
            Port::Binary => self.tls.is_some(),
            Port::WebSocket => self.websocket.as_ref().is_some_and(|w| w.tls),
        }
    }

    /// The link of a connection accepted on `port`; `None` for plain TCP. `info` is the
    /// text port's `INFO` (a WebSocket's says nothing of TLS: the page chose `wss://` or
    /// not), `welcome` the binary port's `WELCOME`.
    pub fn link(
        &self,
        port: Port,
        now: Instant,
        info: &ServerInfo,
        welcome: &Welcome,
    ) -> Result<Option<Box<Link>>, TransportError> {
        let limits = TlsLimits::default();
        let link = match (port, &self.tls, &self.websocket) {
            (Port::Text | Port::Binary, None, _) => return Ok(None),
            (Port::Text, Some(tls), _) => {
                let start = if tls.handshake_first {
                    TlsStart::Immediate
                } else {
                    TlsStart::PlainFirst
                };
                let transport = Transport::tls(tls.handle.current(), start, limits)?;
                let greeting = if tls.handshake_first {
                    Greeting::Text(Box::new(info.clone()))
                } else {
                    Greeting::None
                };
                let deadline = now + tls.handshake_timeout;
                Link::new(transport, LinkKind::Tls, deadline, greeting)
            }
            (Port::Binary, Some(tls), _) => {
                let transport = Transport::tls(tls.handle.current(), TlsStart::Immediate, limits)?;
                let deadline = now + tls.handshake_timeout;
                Link::new(transport, LinkKind::Tls, deadline, Greeting::None)
            }
            (Port::WebSocket, _, None) => return Ok(None),
            (Port::WebSocket, tls, Some(ws)) => {
                let mut info = info.clone();
                info.tls_required = false;
                info.tls_verify = false;
                let greeting = Greeting::ByPath(Box::new((info, welcome.clone())));
                let deadline = now + ws.timeout;
                match tls.as_ref().filter(|_| ws.tls) {
                    Some(tls) => {
                        let transport = Transport::websocket_tls(
                            tls.handle.current(),
                            limits,
                            Arc::clone(&ws.config),
                        )?;
                        Link::new(transport, LinkKind::WebSocketTls, deadline, greeting)
                    }
                    None => {
                        let transport = Transport::websocket(Arc::clone(&ws.config));
                        Link::new(transport, LinkKind::WebSocket, deadline, greeting)
                    }
                }
            }
        };
        Ok(Some(Box::new(link)))
    }
}
