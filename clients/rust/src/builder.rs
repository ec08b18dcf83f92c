//! Client configuration: [`ClientBuilder`] and the [`Config`] it produces.
//!
//! Owns: every tunable of a client with its documented default, in one place, the TLS
//! settings and the credentials included. The values are read once at `connect` (TLS and
//! credentials files too) and passed to the I/O thread; nothing changes them later (but a
//! token refresh, which the client's state holds).
//!
//! Never: opens a connection itself; [`ClientBuilder::connect`] hands over to the client.
//! Never shows a secret: its `Debug` (and [`Config`]'s) prints `<redacted>` for tokens,
//! passwords and seeds.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{Credentials, NkeySource, Secret};
use crate::tls::TlsOptions;
use crate::{Client, Error, ReconnectPolicy, ServerAddr};

/// The settings of one client (see the [`ClientBuilder`] methods for their meaning).
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) name: String,
    pub(crate) credentials: Credentials,
    pub(crate) echo: bool,
    pub(crate) reconnect: ReconnectPolicy,
    pub(crate) ping_interval: Duration,
    pub(crate) server_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) offline_buffer_bytes: usize,
    pub(crate) write_buffer_bytes: usize,
    pub(crate) write_timeout: Duration,
    pub(crate) ack_timeout: Duration,
    pub(crate) subscription_capacity: usize,
    pub(crate) event_capacity: usize,
    pub(crate) linger: Duration,
    pub(crate) jitter_seed: Option<u64>,
    pub(crate) tls: TlsOptions,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: String::new(),
            credentials: Credentials::default(),
            echo: true,
            reconnect: ReconnectPolicy::default(),
            ping_interval: Duration::from_secs(10),
            server_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            offline_buffer_bytes: 8 * 1024 * 1024,
            write_buffer_bytes: 8 * 1024 * 1024,
            write_timeout: Duration::from_secs(10),
            ack_timeout: Duration::from_secs(10),
            subscription_capacity: 65_536,
            event_capacity: 1024,
            linger: Duration::from_secs(2),
            jitter_seed: None,
            tls: TlsOptions::default(),
        }
    }
}

/// Builds a [`Client`] with non-default settings.
///
/// ```no_run
/// use std::time::Duration;
/// use tern_client::{Client, ReconnectPolicy};
///
/// let client = Client::builder()
///     .name("order-service")
///     .reconnect(ReconnectPolicy::new(Duration::from_millis(50), Duration::from_secs(2)))
///     .ping_interval(Duration::from_secs(5))
///     .server_timeout(Duration::from_secs(15))
///     .offline_buffer_bytes(1 << 20)
///     .connect("tern://127.0.0.1:4224")?;
/// # Ok::<(), tern_client::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct ClientBuilder {
    config: Config,
}

impl ClientBuilder {
    /// The defaults.
    pub fn new() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The client's name, shown in the broker's monitoring. Default: empty.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// A token for token authentication (sent in `HELLO`, and in every reconnection's; a
    /// JWT with nkey authentication). [`Client::refresh_token`] replaces it on a live
    /// client. Default: none.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.config.credentials.token = Some(Secret::new(token));
        self
    }

    /// The same as [`token`](Self::token).
    pub fn auth_token(self, token: impl Into<String>) -> Self {
        self.token(token)
    }

    /// A user and password for user and password authentication (sent in `HELLO`).
    /// Default: none.
    pub fn user_password(mut self, user: impl Into<String>, pass: impl Into<String>) -> Self {
        self.config.credentials.user_pass = Some((user.into(), Secret::new(pass)));
        self
    }

    /// A user nkey seed (`SU...`) for nkey authentication: `HELLO` carries its public key,
    /// the server answers with a `CHALLENGE`, and the client signs its nonce with the seed
    /// (`AUTH`) before the server's `WELCOME`. Decoded at `connect`: a seed that is not a
    /// valid user seed fails it with [`Error::Credentials`]. Replaces a
    /// [`credentials_file`](Self::credentials_file). Default: none.
    ///
    /// ```no_run
    /// use tern_client::Client;
    ///
    /// let seed = std::fs::read_to_string("/etc/tern/user.nk")?;
    /// let client = Client::builder()
    ///     .nkey_seed(seed.trim())
    ///     .connect("tern://broker.example:4224")?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn nkey_seed(mut self, seed: &str) -> Self {
        self.config.credentials.nkey = Some(NkeySource::Seed(Secret::new(seed)));
        self
    }

    /// A NATS credentials file (`.creds`, as `nsc` writes it): its
    /// `-----BEGIN USER NKEY SEED-----` block is the nkey seed (as in
    /// [`nkey_seed`](Self::nkey_seed)), and its `-----BEGIN NATS USER JWT-----` block, when
    /// there is one, the token (unless [`token`](Self::token) gives one). Read at
    /// `connect`: a file that cannot be read or has no seed block fails it with
    /// [`Error::Credentials`] naming the file. Replaces an `nkey_seed`. Default: none.
    pub fn credentials_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.credentials.nkey = Some(NkeySource::CredsFile(path.into()));
        self
    }

    /// Whether this connection receives the messages it publishes itself (when it is
    /// subscribed to their subjects). Default: true.
    pub fn echo(mut self, echo: bool) -> Self {
        self.config.echo = echo;
        self
    }

    /// How to reconnect after a lost connection. Default: [`ReconnectPolicy::default`]
    /// (full-jitter backoff from 100 ms up to 5 s, forever).
    pub fn reconnect(mut self, policy: ReconnectPolicy) -> Self {
        self.config.reconnect = policy;
        self
    }

    /// After this long without receiving anything, the client sends a `PING` (and again
    /// every interval while the silence lasts). Default: 10 s.
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.config.ping_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// After this long without receiving anything (not even a `PONG`), the server is
    /// considered dead: the connection is closed and the client reconnects. Should be a
    /// few ping intervals. Default: 30 s.
    pub fn server_timeout(mut self, timeout: Duration) -> Self {
        self.config.server_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How long one connection attempt (TCP connect plus handshake) may take.
    /// Default: 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The bound, in bytes of encoded frames, of the publishes kept while disconnected.
    /// They are sent in order after the reconnect (after the subscriptions are re-sent).
    /// A publish that does not fit fails at once with [`Error::OfflineBufferFull`]; nothing
    /// is dropped silently. Publishes that were already accepted when the connection was
    /// lost are kept even when they exceed this bound (new ones wait for room).
    /// Default: 8 MiB.
    pub fn offline_buffer_bytes(mut self, bytes: usize) -> Self {
        self.config.offline_buffer_bytes = bytes;
        self
    }

    /// The bound, in bytes of encoded frames, of the publishes waiting for the socket
    /// while connected. A publish that does not fit waits for room up to the
    /// [`write_timeout`](Self::write_timeout). Default: 8 MiB.
    pub fn write_buffer_bytes(mut self, bytes: usize) -> Self {
        self.config.write_buffer_bytes = bytes.max(1);
        self
    }

    /// How long a publish waits for room in a full write buffer before failing with
    /// [`Error::Timeout`]. Default: 10 s.
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.config.write_timeout = timeout;
        self
    }

    /// How long [`Client::publish_acked`] (and [`PendingAck::wait`](crate::PendingAck::wait))
    /// wait for the broker's `PUBLISH_ACK`. Default: 10 s.
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.config.ack_timeout = timeout;
        self
    }

    /// The default bound, in messages, of each subscription's queue between the I/O
    /// thread and the application (a subscription can set its own). When the application
    /// does not take messages fast enough and the queue is full, new arrivals for that
    /// subscription are dropped and reported ([`Event::Dropped`](crate::Event::Dropped)
    /// with [`DropSource::Client`](crate::DropSource::Client), and
    /// [`Subscription::dropped`](crate::Subscription::dropped)); other subscriptions
    /// and the connection are not held up. Default: 65 536.
    pub fn subscription_capacity(mut self, messages: usize) -> Self {
        self.config.subscription_capacity = messages.max(1);
        self
    }

    /// The bound of the event queue ([`Client::events`]). When full, the oldest event is
    /// discarded and counted. Default: 1024.
    pub fn event_capacity(mut self, events: usize) -> Self {
        self.config.event_capacity = events.max(1);
        self
    }

    /// How long closing (or dropping the last handle) keeps writing frames that are still
    /// buffered before it closes the socket. Default: 2 s.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.config.linger = linger;
        self
    }

    /// Seeds the reconnect jitter, making the delays reproducible (they are then exactly
    /// [`ReconnectPolicy::schedule`]`(seed)` while attempts fail). Default: a random seed.
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.config.jitter_seed = Some(seed);
        self
    }

    /// Connects with TLS from the first byte (as a `tls://` address does). Default: off,
    /// unless the address is `tls://` or another `tls_*` setting is made (each turns it
    /// on).
    ///
    /// The server's certificate is verified against the roots of
    /// [`tls_ca_file`](Self::tls_ca_file), or the operating system's when there is no CA
    /// file, and must carry the name connected to (the address's host, an IP address
    /// included, or [`tls_server_name`](Self::tls_server_name)). Every connection,
    /// reconnections included, does its own handshake before `HELLO`.
    ///
    /// ```no_run
    /// use tern_client::Client;
    ///
    /// let client = Client::builder()
    ///     .tls_ca_file("/etc/tern/ca.pem")
    ///     .tls_client_cert("/etc/tern/client.pem", "/etc/tern/client.key")
    ///     .connect("tls://broker.example:4224")?;
    /// # Ok::<(), tern_client::Error>(())
    /// ```
    pub fn tls(mut self, on: bool) -> Self {
        self.config.tls.enabled = on;
        self
    }

    /// A PEM file of the CA certificates the server's certificate must chain to; turns
    /// TLS on. With a CA file the operating system's roots are not used (unless
    /// [`tls_native_roots`](Self::tls_native_roots) says so). Read at `connect`: a file
    /// that cannot be read or holds no usable certificate fails it with
    /// [`Error::TlsConfig`] naming the file.
    pub fn tls_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.tls.ca_file = Some(path.into());
        self.config.tls.enabled = true;
        self
    }

    /// Whether the operating system's trust roots are used. Default: when no
    /// [`tls_ca_file`](Self::tls_ca_file) is given.
    pub fn tls_native_roots(mut self, on: bool) -> Self {
        self.config.tls.native_roots = Some(on);
        self
    }

    /// A client certificate (PEM, leaf first, then intermediates) and its private key (PEM:
    /// PKCS#8, PKCS#1 or SEC1), for a server that requires or accepts one; turns TLS on.
    /// Read at `connect`.
    pub fn tls_client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.config.tls.client_cert = Some((cert.into(), key.into()));
        self.config.tls.enabled = true;
        self
    }

    /// The name the server's certificate must carry, when it is not the address's host
    /// (e.g. connecting by IP address to a server whose certificate names it by DNS name);
    /// also sent as SNI. Turns TLS on. Default: the address's host.
    pub fn tls_server_name(mut self, name: impl Into<String>) -> Self {
        self.config.tls.server_name = Some(name.into());
        self.config.tls.enabled = true;
        self
    }

    /// A rustls client configuration made by the application (custom verifier, roots
    /// held in memory, ALPN, ...), used as it is instead of the files above; turns TLS on.
    /// The server name is still the address's host or
    /// [`tls_server_name`](Self::tls_server_name).
    pub fn tls_config(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.config.tls.config = Some(config);
        self.config.tls.enabled = true;
        self
    }

    /// Connects to `url` (`tern://host:port`, `tls://host:port`, `host:port`, ...; see
    /// [`ServerAddr`]) and returns once the handshake is done. A first connection that
    /// fails is an error (no retry); once connected, the client reconnects by itself.
    pub fn connect(self, url: &str) -> Result<Client, Error> {
        self.connect_to(url.parse()?)
    }

    /// [`connect`](Self::connect) with an address already parsed.
    pub fn connect_to(self, addr: ServerAddr) -> Result<Client, Error> {
        Client::start(self.config, addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_a_secret() {
        let builder = ClientBuilder::new()
            .name("svc")
            .token("tok-s3cret")
            .user_password("alice", "pw-s3cret")
            .nkey_seed("SUAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAEQ");
        let text = format!("{builder:?} {:?} {builder:#?}", builder.config);
        assert!(!text.contains("s3cret"), "{text}");
        assert!(!text.contains("SUAAAA"), "{text}");
        assert!(
            text.contains("alice") && text.contains("<redacted>"),
            "{text}"
        );
    }
}
