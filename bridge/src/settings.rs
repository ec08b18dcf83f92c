//! What one bridge is configured with, resolved (the broker's config module parses the
//! `[[bridge]]` tables and flags into these, with its own duration and error handling).
//!
//! Owns: [`Settings`] and its defaults, and [`Upstream`], one server of the list.
//!
//! Never: reads files or flags.

use std::path::PathBuf;
use std::time::Duration;

/// One bridge to one NATS cluster.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    /// This edge's name in the cluster: it prefixes the message ids of what it exports
    /// (`Nats-Msg-Id: <name>:<epoch>:<shard>:<sequence>`), so it should differ per edge
    /// and stay the same across restarts.
    pub name: String,
    /// The cluster's servers, tried in turn.
    pub servers: Vec<Upstream>,
    /// Upstream credentials, used unless a server's URL carries its own user and password.
    pub user: Option<String>,
    /// The password with `user`.
    pub pass: Option<String>,
    /// An upstream `auth_token`.
    pub token: Option<String>,
    /// A NATS `.creds` file (user JWT and nkey seed) for upstream.
    pub creds: Option<PathBuf>,
    /// TLS to every server (a `tls://` URL asks for it for that server; a server whose
    /// `INFO` requires it gets it).
    pub tls: bool,
    /// CA certificates (PEM) the servers' certificates are checked against [default: the
    /// operating system's].
    pub tls_ca: Option<PathBuf>,
    /// A client certificate and its key (PEM), for servers that verify clients.
    pub tls_cert: Option<(PathBuf, PathBuf)>,
    /// The name the servers' certificates must carry [default: the URL's host].
    pub tls_server_name: Option<String>,
    /// Local subjects published upstream.
    pub export: Vec<String>,
    /// Upstream subjects delivered locally, subscribed upstream only as far as local
    /// subscriptions want them.
    pub import: Vec<String>,
    /// Upstream subjects delivered locally, always subscribed.
    pub import_static: Vec<String>,
    /// JetStream streams consumed durably (each message acknowledged upstream once stored
    /// here).
    pub import_streams: Vec<crate::StreamImport>,
    /// The first reconnect delay; doubles per failed attempt, full jitter.
    pub reconnect_min: Duration,
    /// The longest reconnect delay.
    pub reconnect_max: Duration,
    /// How often the upstream connection is pinged when idle; two missed answers close it.
    pub ping_interval: Duration,
    /// How long one write upstream may block before the connection is given up.
    pub write_timeout: Duration,
    /// Messages the export's local subscription may queue in the broker while the exporter
    /// is busy (its queue bound); past it the broker serves the export from its log.
    pub export_window: usize,
    /// At most this many exported messages go out between two confirmations (a `PING`
    /// whose `PONG` says the server has them all).
    pub confirm_batch: usize,
    /// Bytes of upstream deliveries waiting to be published locally, at most (each counted
    /// with its decoded form's fixed overhead, about 240 bytes, so the bound holds for tiny
    /// messages too); past it they are dropped and counted (`import_dropped`) rather than
    /// upstream cutting the bridge off as a slow consumer.
    pub import_buffer: usize,
    /// How long a request carried through the bridge may be answered.
    pub reply_timeout: Duration,
    /// Requests carried (each way) whose answers the bridge waits for at most; past it the
    /// oldest can no longer be answered.
    pub max_replies: usize,
    /// Where the confirmed export positions are kept across restarts; `None`: only for the
    /// life of the process (a broker without a store has no log to resume from anyway).
    pub state_file: Option<PathBuf>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("name", &self.name)
            .field("servers", &self.servers)
            .field("user", &self.user)
            .field("pass", &self.pass.as_ref().map(|_| ".."))
            .field("token", &self.token.as_ref().map(|_| ".."))
            .field("creds", &self.creds)
            .field("tls", &self.tls)
            .field("export", &self.export)
            .field("import", &self.import)
            .field("import_static", &self.import_static)
            .field("import_streams", &self.import_streams)
            .finish_non_exhaustive()
    }
}

impl Settings {
    /// A bridge to `servers` with the defaults, exporting and importing nothing.
    pub fn new(name: impl Into<String>, servers: Vec<Upstream>) -> Settings {
        Settings {
            name: name.into(),
            servers,
            user: None,
            pass: None,
            token: None,
            creds: None,
            tls: false,
            tls_ca: None,
            tls_cert: None,
            tls_server_name: None,
            export: Vec::new(),
            import: Vec::new(),
            import_static: Vec::new(),
            import_streams: Vec::new(),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(5),
            ping_interval: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            export_window: 1 << 16,
            confirm_batch: 1024,
            import_buffer: 64 << 20,
            reply_timeout: Duration::from_secs(60),
            max_replies: 100_000,
            state_file: None,
        }
    }
}

/// One upstream server: `nats://[user:pass@]host:port` or `tls://...` (the scheme and
/// port optional).
#[derive(Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `host:port`.
    pub addr: String,
    /// `tls://`: TLS to this server.
    pub tls: bool,
    /// From the URL.
    pub user: Option<String>,
    /// From the URL.
    pub pass: Option<String>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "tls" } else { "nats" };
        write!(f, "{scheme}://{}", self.addr)
    }
}

impl Upstream {
    /// The host part of the address (for TLS's server name).
    pub fn host(&self) -> &str {
        let host = self
            .addr
            .rsplit_once(':')
            .map_or(&self.addr[..], |(h, _)| h);
        host.trim_start_matches('[').trim_end_matches(']')
    }
}

impl std::str::FromStr for Upstream {
    type Err = String;

    fn from_str(url: &str) -> Result<Upstream, String> {
        let (tls, rest) = match url.split_once("://") {
            Some(("nats", rest)) => (false, rest),
            Some(("tls", rest)) => (true, rest),
            Some((scheme, _)) => {
                return Err(format!(
                    "{url:?}: the bridge speaks nats:// or tls:// upstream, not {scheme}://"
                ))
            }
            None => (false, url),
        };
        let rest = rest.trim_end_matches('/');
        let (creds, hostport) = match rest.rsplit_once('@') {
            Some((c, h)) => (Some(c), h),
            None => (None, rest),
        };
        let (user, pass) = match creds {
            Some(c) => match c.split_once(':') {
                Some((u, p)) => (Some(u.to_string()), Some(p.to_string())),
                None => (Some(c.to_string()), None),
            },
            None => (None, None),
        };
        if hostport.is_empty() || hostport.contains('/') {
            return Err(format!("{url:?}: expected nats://host:port"));
        }
        let addr = if hostport
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            hostport.to_string()
        } else {
            format!("{hostport}:4222")
        };
        Ok(Upstream {
            addr,
            tls,
            user,
            pass,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Upstream;

    #[test]
    fn urls() {
        let u: Upstream = "nats://a:b@host:4333".parse().unwrap();
        assert_eq!(u.addr, "host:4333");
        assert_eq!(u.user.as_deref(), Some("a"));
        assert_eq!(u.pass.as_deref(), Some("b"));
        let u: Upstream = "127.0.0.1".parse().unwrap();
        assert_eq!(u.addr, "127.0.0.1:4222");
        let u: Upstream = "tls://[::1]:4443".parse().unwrap();
        assert!(u.tls);
        assert_eq!(u.host(), "::1");
        assert_eq!(u.to_string(), "tls://[::1]:4443");
        assert!("ws://x:1"
            .parse::<Upstream>()
            .unwrap_err()
            .contains("nats://"));
        assert!("nats://".parse::<Upstream>().is_err());
    }
}
