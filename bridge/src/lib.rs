//! tern-bridge: Tern as an edge of a real NATS cluster.
//!
//! Each bridge connects one Tern broker to one NATS cluster (`nats-server`s, clustered) as
//! a NATS client upstream; locally it is a Tern binary-protocol client of the broker's own
//! port (authenticated by a secret only this process knows) for its replies and stream
//! imports, speaks the same protocol for each export rule on a Unix socket pair the broker
//! serves (`pipe.rs`), and hands its plain imports to the broker's workers directly
//! ([`Inject`]). What it does, per `docs/scale-out.md`:
//! - **export**: local messages under an export rule are taken from the local log by
//!   sequence and published upstream, confirmed by a `PING`/`PONG` before its position
//!   is kept (`export.rs`): at least once across upstream failures and restarts,
//!   gaps reported;
//! - **import**: upstream messages under an import rule are published locally, so they are
//!   stored, caught up, prioritised and drop-noticed like local ones; subscribed upstream
//!   only as far as local subscriptions want them (`interest.rs`), or always (static);
//!   local queue groups join the upstream queue group of the same name, and each copy
//!   upstream sends goes to the local subscribers it is for ([`Route`]); a stream import
//!   consumes a JetStream stream durably (`jetstream.rs`);
//! - **request/reply** both ways: reply subjects are mapped through the bridge
//!   (`$TERN.BRIDGE.<server id>.U.` upstream, `.L.` locally), and an upstream no-responders
//!   status reaches the local requester;
//! - **no loops, no echo**: what it exports carries `Tern-Origin` (this broker's server
//!   id); what it imports keeps or gains one, and nothing with one is exported (the
//!   broker does not even send the bridge's connection what the bridge imported); its own
//!   messages back from upstream are dropped, but for the copies a queue group here was
//!   picked for.
//!
//! Owns: [`Hub`], every bridge of one broker: the broker asks it whether a token is the
//! bridge's secret, tells it about local subscriptions, starts and stops it, and reads
//! [`Status`] for `/bridgez` and `/metrics`.
//!
//! Never: runs on a broker worker's thread beyond [`Hub::subscribed`] and
//! [`Hub::unsubscribed`] (one short lock each, only for subscriptions within an import
//! rule), or drops a message without counting it.

mod bridge;
mod export;
mod headers;
mod inject;
mod interest;
mod jetstream;
mod local_tls;
mod pipe;
mod replies;
mod route;
mod settings;
mod stats;
pub mod subject;
mod upstream;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tern_client::{Client, ReconnectPolicy};
use tern_protocol::binary::ResumeToken;
use tracing::warn;

pub use inject::{Inject, Injected};
pub use jetstream::StreamImport;
pub use route::Route;
pub use settings::{Settings, Upstream};
pub use stats::{ExportStatus, LastError, Status};

use bridge::Bridge;

/// The header naming where a message entered the NATS world: the server id of the Tern
/// broker that exported it, or `nats` for one imported from a NATS client.
pub const ORIGIN: &str = "Tern-Origin";

/// The header carrying a Tern priority across the cluster.
pub const PRIORITY: &str = "Tern-Priority";

/// The name the bridge's local connection gives itself.
pub const LOCAL_NAME: &str = "$tern-bridge";

/// Every bridge of one broker.
#[derive(Debug)]
pub struct Hub {
    bridges: Vec<Arc<Bridge>>,
    secret: String,
    threads: Mutex<Vec<JoinHandle<()>>>,
    local: Mutex<Option<Client>>,
}

impl Hub {
    /// The bridges of a broker whose server id is `server_id`; reads their state files.
    pub fn new(settings: Vec<Settings>, server_id: &str) -> Result<Hub, String> {
        let mut bridges = Vec::new();
        for s in settings {
            if s.servers.is_empty() {
                return Err(format!("bridge {}: no upstream servers", s.name));
            }
            bridges.push(Arc::new(Bridge::new(s, server_id)?));
        }
        Ok(Hub {
            bridges,
            secret: random_secret()?,
            threads: Mutex::new(Vec::new()),
            local: Mutex::new(None),
        })
    }

    /// True when there is no bridge.
    pub fn is_empty(&self) -> bool {
        self.bridges.is_empty()
    }

    /// True when `token` is the secret the bridges' local connection presents (compared
    /// in constant time).
    pub fn is_bridge_token(&self, token: &str) -> bool {
        let (a, b) = (token.as_bytes(), self.secret.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// A local subscription started (not the bridge's own).
    pub fn subscribed(&self, filter: &str, queue: Option<&str>) {
        for b in &self.bridges {
            b.interest.changed(filter, queue, true);
        }
    }

    /// A local subscription ended (not the bridge's own).
    pub fn unsubscribed(&self, filter: &str, queue: Option<&str>) {
        for b in &self.bridges {
            b.interest.changed(filter, queue, false);
        }
    }

    /// Starts the bridges, connecting locally to the broker's binary port at `local` (over
    /// TLS when `tls_cert` names the certificate file the broker serves: that certificate,
    /// and no other, is trusted) for exports, replies and stream imports, and handing
    /// plain imports to `inject`; the local connection is made on a thread of its own
    /// (retried until the broker answers), so this returns at once.
    ///
    /// `log_tail` is the log's end when the broker started (`None` when nothing is
    /// stored): an export with no confirmed position yet (a rule exported for the first
    /// time) starts there, so what is published while the bridge is still connecting, or
    /// while upstream cannot be reached at all, is exported once it can be. Without a
    /// store, an export starts when its local subscription is in place.
    pub fn start(
        self: &Arc<Hub>,
        local: SocketAddr,
        tls_cert: Option<&Path>,
        inject: Arc<dyn Inject>,
        log_tail: Option<ResumeToken>,
    ) -> Result<(), String> {
        let tls = tls_cert.map(local_tls::pinned_config).transpose()?;
        if let Some(tail) = log_tail {
            for bridge in &self.bridges {
                bridge.start_unconfirmed_exports_at(&tail);
            }
        }
        let hub = Arc::clone(self);
        let starter = std::thread::Builder::new()
            .name("bridge-start".into())
            .spawn(move || hub.run(local, tls, inject))
            .map_err(|e| e.to_string())?;
        self.threads().push(starter);
        Ok(())
    }

    fn threads(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.threads.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run(
        self: Arc<Hub>,
        local: SocketAddr,
        tls: Option<Arc<tern_client::rustls::ClientConfig>>,
        inject: Arc<dyn Inject>,
    ) {
        let url = format!("tern://{local}");
        let client = loop {
            if self.bridges.iter().all(|b| b.stopped()) {
                return;
            }
            // With echo, for what others publish here (and its own stream imports, skipped
            // by their `Tern-Origin`). What it imports itself the broker does not send
            // back, but for one in every 64 KiB or 1,024 messages, which the export skips
            // too: enough for its position to keep up with the log, so an edge that mostly
            // imports does not resume its exports from far back.
            let mut builder = Client::builder();
            if let Some(config) = &tls {
                builder = builder.tls_config(Arc::clone(config));
            }
            let connected = builder
                .name(LOCAL_NAME)
                .token(self.secret.clone())
                .reconnect(ReconnectPolicy::default())
                .subscription_capacity(8192)
                .write_timeout(Duration::from_secs(5))
                .connect(&url);
            match connected {
                Ok(c) => break c,
                Err(e) => {
                    warn!("bridge: connecting to the local broker at {url}: {e}");
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        };
        *self.local.lock().unwrap_or_else(|e| e.into_inner()) = Some(client.clone());
        let mut spawned = Vec::new();
        for b in &self.bridges {
            let name = b.settings.name.clone();
            let spawn = |what: &str, f: Box<dyn FnOnce() + Send>| {
                std::thread::Builder::new()
                    .name(format!("bridge-{what}-{name}"))
                    .spawn(f)
            };
            let (me, c, to) = (Arc::clone(b), client.clone(), Arc::clone(&inject));
            spawned.push(spawn("control", Box::new(move || me.control(&c, &to))));
            // Replies to exported requests come in through the importer too.
            let (me, to) = (Arc::clone(b), Arc::clone(&inject));
            spawned.push(spawn("import", Box::new(move || me.importer(&*to))));
            if !b.settings.import.is_empty() || !b.settings.import_static.is_empty() {
                let (me, c) = (Arc::clone(b), client.clone());
                spawned.push(spawn("replies", Box::new(move || me.replier(&c))));
            }
            for i in 0..b.exports.len() {
                let (me, to, token) = (Arc::clone(b), Arc::clone(&inject), self.secret.clone());
                spawned.push(spawn(
                    "export",
                    Box::new(move || export::run(&me, i, &*to, &token)),
                ));
            }
            for i in 0..b.settings.import_streams.len() {
                let (me, c) = (Arc::clone(b), client.clone());
                spawned.push(spawn(
                    "stream",
                    Box::new(move || jetstream::run(&me, i, &c)),
                ));
            }
        }
        let mut threads = self.threads();
        for t in spawned {
            match t {
                Ok(t) => threads.push(t),
                Err(e) => warn!("bridge: spawning a thread: {e}"),
            }
        }
    }

    /// Stops every bridge: closes the upstream connections, saves the exports' positions,
    /// and waits (up to `timeout` in all) for the threads to end.
    pub fn stop(&self, timeout: Duration) {
        for b in &self.bridges {
            b.stop();
        }
        let deadline = std::time::Instant::now() + timeout;
        let threads: Vec<_> = self.threads().drain(..).collect();
        for t in threads {
            while !t.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
        if let Some(c) = self.local.lock().unwrap_or_else(|e| e.into_inner()).take() {
            c.close();
        }
    }

    /// True when a local publish to `subject` leaves its queue groups to upstream: a bridge
    /// exports it and imports it on demand, so its local queue groups are members of the
    /// upstream groups, and upstream picks the one member (here or anywhere in the cluster)
    /// that handles it; the copy for a member here comes back through the bridge.
    pub fn arbitrates(&self, subject: &[u8]) -> bool {
        use tern_protocol::subject::matches;
        self.bridges.iter().any(|b| {
            let s = &b.settings;
            s.export.iter().any(|f| matches(f.as_bytes(), subject))
                && s.import.iter().any(|f| matches(f.as_bytes(), subject))
        })
    }

    /// Every bridge now.
    pub fn status(&self) -> Vec<Status> {
        self.bridges.iter().map(|b| b.status()).collect()
    }
}

fn random_secret() -> Result<String, String> {
    use std::io::Read;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("reading /dev/urandom for the bridge's secret: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
