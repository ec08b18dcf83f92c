//! One bridge: its threads, and what they share.
//!
//! Owns: [`Bridge`], the state of one bridge to one NATS cluster (its settings, the local
//! interest, the upstream [`Link`], the exports' positions, counters, the last error), and
//! its threads:
//! - the control thread: connects upstream (the servers in turn, with exponential backoff
//!   and full jitter between failed attempts), keeps the upstream subscriptions equal to
//!   what is wanted ([`Interest::wanted`], plus the reply subscription), pings an idle
//!   connection and gives up a stale one, watches the local client's events (gaps) and
//!   saves the exports' positions;
//! - per connection, the reader: answers the server's `PING`s, applies the `PONG`s'
//!   confirmations, hands stream imports their messages, and makes the rest the broker's
//!   messages — imports with their `Tern-Origin`, a reply subject that leads back through
//!   the bridge and the route of their copy; replies to local requesters — handed over
//!   in batches ([`Inject`]): itself when the importer has nothing waiting and the broker
//!   has room at once, else queued for the importer (within `import_buffer`: past it,
//!   dropped and counted), so it does not wait on the broker (but for the moment another
//!   sender may take the room it saw);
//! - the importer: publishes what the reader queued, in order, waiting on the broker
//!   (up to `INJECT_TIMEOUT`) as the reader may not;
//! - per export rule, an exporter (`export.rs`); per stream import, its consumer
//!   (`jetstream.rs`);
//! - the replier: local replies to upstream requesters, published upstream.
//!
//! Never: blocks a broker worker (the broker only calls [`Interest::changed`]), or drops a
//! message without counting it.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use crossbeam_channel::{Receiver, Sender};
use serde::{Deserialize, Serialize};
use tern_client::{Client, Event, NkeyCredentials};
use tern_protocol::binary::ResumeToken;
use tern_protocol::text::{ClientOp, Message as NatsMessage, ServerDecoder, ServerOp, Subscribe};
use tracing::{info, warn};

use crate::export::Export;
use crate::headers;
use crate::inject::{Inject, Injected};
use crate::interest::{Interest, Key};
use crate::jetstream;
use crate::replies::Replies;
use crate::route::Route;
use crate::settings::{Settings, Upstream};
use crate::stats::{bump, Counters, ExportStatus, LastError, Status};
use crate::upstream::{self, Link, Secrets, Wire};
use crate::{ORIGIN, PRIORITY};
use tern_protocol::read_room::ReadRoom;

/// The sid of the upstream subscription that carries replies to local requesters.
const REPLY_SID: u64 = 1;

/// How often the control thread looks at its work when nothing wakes it.
const TICK: Duration = Duration::from_millis(250);

/// One message for the importer, and what it counts against `import_buffer`.
type Import = (Injected, usize);

/// Servers learned from the cluster's `connect_urls`, at most.
const MAX_DISCOVERED: usize = 64;

/// Messages the importer hands the broker at once, at most.
const IMPORT_BATCH: usize = 256;

/// Bytes asked of the upstream socket per read, at most.
const READ_CHUNK: usize = 64 << 10;

/// How long the importer waits for the broker to take a batch.
const INJECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What one message waiting for the importer costs besides its bytes (the message as the
/// broker's and its place in the queue), counted against `import_buffer` so that the one
/// limit bounds the memory, however small the messages.
const IMPORT_ENTRY: usize = std::mem::size_of::<Import>() + 64;

#[derive(Debug)]
pub(crate) struct Bridge {
    pub settings: Settings,
    /// This broker's server id: the origin of what it exports, and the token that makes its
    /// reply subjects its own.
    pub id: String,
    pub interest: Interest,
    wake: Receiver<()>,
    pub link: Link,
    /// TLS configuration and nkey credentials for upstream, loaded at start.
    secrets: Secrets,
    pub counters: Counters,
    pub exports: Vec<Export>,
    /// Per stream import, where the reader puts what its inbox receives.
    pub stream_inboxes: Vec<jetstream::Inbox>,
    /// `$TERN.BRIDGE.<id>.U.`: upstream, the reply subject of an exported request (the
    /// local requester's reply subject follows).
    pub upstream_reply_prefix: String,
    /// `$TERN.BRIDGE.<id>.L.`: locally, the reply subject of an imported request.
    pub local_reply_prefix: String,
    /// Upstream subscriptions now: filter and queue group → sid.
    upstream_subs: Mutex<BTreeMap<Key, u64>>,
    /// What each upstream sid stands for (the reader's view of `upstream_subs`).
    sid_kinds: Mutex<HashMap<u64, Kind>>,
    /// Local reply subjects of exported requests: upstream answers may go there.
    pub exported_requests: Replies,
    /// Upstream reply subjects of imported requests: local answers may go there.
    imported_requests: Replies,
    /// Upstream deliveries the reader took and the importer has not published yet (the
    /// reader hands a batch to the broker itself only when nothing waits here and the
    /// broker has room at once): the reader never waits on the local broker (upstream
    /// would cut a reader that falls behind as a slow consumer, losing everything in
    /// flight), so what does not fit (`import_buffer` bytes) is dropped and counted.
    imports: (Sender<Import>, Receiver<Import>),
    /// Bytes in `imports`, and of the batch the importer is handing over: zero only when
    /// the importer has nothing left to publish.
    import_bytes: AtomicUsize,
    /// Servers the cluster advertised (`INFO`'s `connect_urls`) that are not configured:
    /// tried after the configured ones.
    discovered: Mutex<Vec<Upstream>>,
    last_error: Mutex<Option<LastError>>,
    stop: AtomicBool,
    dirty: AtomicBool,
}

/// What the state file holds: per export rule, the confirmed position.
#[derive(Debug, Default, Serialize, Deserialize)]
struct SavedState {
    exports: HashMap<String, SavedToken>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedToken {
    epoch: u64,
    last: Vec<u64>,
}

impl Bridge {
    pub(crate) fn new(settings: Settings, id: &str) -> Result<Bridge, String> {
        let saved = match &settings.state_file {
            Some(path) => load_state(path)?,
            None => SavedState::default(),
        };
        let exports = settings
            .export
            .iter()
            .map(|rule| {
                let token = saved.exports.get(rule).map(|t| ResumeToken {
                    epoch: t.epoch,
                    last_sequences: t.last.clone(),
                });
                Export::new(rule.clone(), token)
            })
            .collect();
        let (wake_tx, wake) = crossbeam_channel::bounded(1);
        let name = &settings.name;
        let wants_tls = settings.tls
            || settings.servers.iter().any(|s| s.tls)
            || settings.tls_ca.is_some()
            || settings.tls_cert.is_some();
        let secrets = Secrets {
            tls: wants_tls
                .then(|| {
                    let cert = settings
                        .tls_cert
                        .as_ref()
                        .map(|(c, k)| (c.as_path(), k.as_path()));
                    tern_client::tls_client_config(settings.tls_ca.as_deref(), cert)
                })
                .transpose()
                .map_err(|e| format!("bridge {name}: TLS: {e}"))?,
            nkey: settings
                .creds
                .as_deref()
                .map(NkeyCredentials::from_creds_file)
                .transpose()
                .map_err(|e| format!("bridge {name}: {e}"))?,
        };
        let stream_inboxes = settings
            .import_streams
            .iter()
            .map(|_| jetstream::Inbox::new())
            .collect();
        Ok(Bridge {
            stream_inboxes,
            secrets,
            interest: Interest::new(
                settings.import.clone(),
                settings.import_static.clone(),
                wake_tx,
            ),
            wake,
            link: Link::new(),
            counters: Counters::default(),
            exports,
            upstream_reply_prefix: format!("{}{id}.U.", crate::subject::BRIDGE_PREFIX),
            local_reply_prefix: format!("{}{id}.L.", crate::subject::BRIDGE_PREFIX),
            upstream_subs: Mutex::new(BTreeMap::new()),
            sid_kinds: Mutex::new(HashMap::new()),
            exported_requests: Replies::new(settings.reply_timeout, settings.max_replies),
            imported_requests: Replies::new(settings.reply_timeout, settings.max_replies),
            // Bounded by `import_bytes` (`queue_import`), not by a count of its own.
            imports: crossbeam_channel::unbounded(),
            import_bytes: AtomicUsize::new(0),
            discovered: Mutex::new(Vec::new()),
            last_error: Mutex::new(None),
            stop: AtomicBool::new(false),
            dirty: AtomicBool::new(false),
            id: id.to_string(),
            settings,
        })
    }

    /// Gives every export with no confirmed position `tail` as its first one (written to
    /// the state file with the next save).
    pub(crate) fn start_unconfirmed_exports_at(&self, tail: &ResumeToken) {
        for export in &self.exports {
            if export.confirmed().is_none() {
                export.confirm(tail.clone(), 0);
                self.state_changed();
            }
        }
    }

    pub(crate) fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let generation = self.link.lock().generation;
        self.link.down(generation);
        self.save_state();
    }

    /// Records (and logs) what went wrong.
    pub(crate) fn error(&self, message: String) {
        warn!(bridge = %self.settings.name, "{message}");
        let at_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(LastError { at_unix, message });
    }

    pub(crate) fn state_changed(&self) {
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// The bridge now.
    pub(crate) fn status(&self) -> Status {
        let link = self.link.lock();
        let (state, server) = match (&link.server, self.stopped()) {
            (_, true) => ("stopped", None),
            (Some(s), false) => ("connected", Some(s.clone())),
            (None, false) => ("connecting", None),
        };
        drop(link);
        let mut s = Status {
            name: self.settings.name.clone(),
            servers: self.servers().iter().map(|s| s.to_string()).collect(),
            state,
            server,
            connects: 0,
            disconnects: 0,
            // The imports, and the replies' own while connected.
            upstream_subscriptions: self
                .upstream_subs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .len()
                + usize::from(state == "connected"),
            local_interest: self.interest.local_count(),
            exported: 0,
            exported_bytes: 0,
            confirmed: 0,
            resent: 0,
            unconfirmed: self
                .exports
                .iter()
                .map(|e| e.unconfirmed.load(Ordering::Relaxed))
                .sum(),
            not_exported: 0,
            export_gaps: 0,
            export_restarts: 0,
            imported: 0,
            imported_bytes: 0,
            import_failed: 0,
            import_dropped: 0,
            stream_acked: 0,
            echoes: 0,
            overlapping: 0,
            replies_out: 0,
            replies_in: 0,
            replies_refused: 0,
            upstream_errors: 0,
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            exports: self
                .exports
                .iter()
                .map(|e| {
                    let t = e.confirmed().unwrap_or_default();
                    ExportStatus {
                        subject: e.rule.clone(),
                        epoch: t.epoch,
                        confirmed: t.last_sequences,
                    }
                })
                .collect(),
        };
        self.counters.fill(&mut s);
        s
    }

    /// Writes the exports' confirmed positions, if they changed.
    pub(crate) fn save_state(&self) {
        let Some(path) = &self.settings.state_file else {
            return;
        };
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return;
        }
        let state = SavedState {
            exports: self
                .exports
                .iter()
                .filter_map(|e| {
                    let t = e.confirmed()?;
                    Some((
                        e.rule.clone(),
                        SavedToken {
                            epoch: t.epoch,
                            last: t.last_sequences,
                        },
                    ))
                })
                .collect(),
        };
        if let Err(e) = write_state(path, &state) {
            self.dirty.store(true, Ordering::Relaxed);
            self.error(format!("saving {}: {e}", path.display()));
        }
    }

    /// The control thread: runs until the bridge stops.
    pub(crate) fn control(self: &Arc<Bridge>, local: &Client, inject: &Arc<dyn Inject>) {
        let events = local.events();
        let mut next = 0usize;
        let mut failures = 0u32;
        let mut rng = Jitter::new();
        while !self.stopped() {
            let servers = self.servers();
            let server = &servers[next % servers.len()];
            next += 1;
            let (stream, leftover) = match upstream::connect(server, &self.settings, &self.secrets)
            {
                Ok((stream, info, leftover)) => {
                    self.learn(server, &info.connect_urls);
                    (stream, leftover)
                }
                Err(e) => {
                    self.error(e);
                    self.back_off(&mut failures, &mut rng, &events);
                    continue;
                }
            };
            let connected_at = Instant::now();
            let reader = match stream.try_clone() {
                Ok(r) => r,
                Err(e) => {
                    self.error(format!("{server}: {e}"));
                    continue;
                }
            };
            let _ = reader.set_read_timeout(Some(TICK));
            self.upstream_subs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
            self.sid_kinds
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
            let generation = self.link.up(stream, server.to_string());
            bump(&self.counters.connects, 1);
            info!(bridge = %self.settings.name, %server, "connected upstream");
            {
                let mut link = self.link.lock();
                link.op(&ClientOp::Sub(Subscribe {
                    subject: Bytes::from(format!("{}>", self.upstream_reply_prefix)),
                    queue: None,
                    sid: Bytes::from(REPLY_SID.to_string()),
                }));
                if let Err(e) = link.flush() {
                    drop(link);
                    self.error(format!("{server}: {e}"));
                    continue;
                }
            }
            let (me, to) = (Arc::clone(self), Arc::clone(inject));
            std::thread::Builder::new()
                .name(format!("bridge-read-{}", self.settings.name))
                .spawn(move || me.read(generation, reader, leftover, &*to))
                .map_err(|e| self.error(format!("spawning the reader: {e}")))
                .ok();
            let mut next_sid = REPLY_SID + 1;
            let mut last_ping = Instant::now();
            loop {
                if self.stopped() {
                    return;
                }
                if !self.sync_subscriptions(generation, &mut next_sid) {
                    break;
                }
                let now = Instant::now();
                let interval = self.settings.ping_interval;
                let mut link = self.link.lock();
                if link.generation != generation || !link.is_up() {
                    break;
                }
                if now.duration_since(link.last_pong) > interval * 2 + TICK {
                    drop(link);
                    if self.link.down(generation) {
                        self.error(format!("{server}: no PONG for {:?}: stale", interval * 2));
                        bump(&self.counters.disconnects, 1);
                    }
                    break;
                }
                if now.duration_since(last_ping) >= interval {
                    last_ping = now;
                    link.ping(None);
                    if let Err(e) = link.flush() {
                        drop(link);
                        self.link.changed.notify_all();
                        self.error(format!("{server}: {e}"));
                        bump(&self.counters.disconnects, 1);
                        break;
                    }
                }
                drop(link);
                self.idle(TICK, &events, Until::Interest);
            }
            // At once to the next server, after a connection that lasted; one that ended
            // soon (a server that takes the bridge and drops it) counts as a failure, so
            // that a flapping server is not hammered.
            if connected_at.elapsed() < self.settings.reconnect_max {
                self.back_off(&mut failures, &mut rng, &events);
            } else {
                failures = 0;
            }
        }
    }

    /// The servers to try, in turn: the configured ones, then those the cluster advertised.
    fn servers(&self) -> Vec<Upstream> {
        let mut servers = self.settings.servers.clone();
        servers.extend(
            self.discovered
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned(),
        );
        servers
    }

    /// Keeps the servers `server`'s cluster advertises (`host:port`) that are not known
    /// yet; bounded.
    fn learn(&self, server: &Upstream, urls: &[String]) {
        let mut discovered = self.discovered.lock().unwrap_or_else(|e| e.into_inner());
        for url in urls {
            let Ok(mut found) = url.parse::<Upstream>() else {
                continue;
            };
            // Reached as `server` is: the same cluster, the same TLS and credentials.
            found.tls = server.tls;
            found.user.clone_from(&server.user);
            found.pass.clone_from(&server.pass);
            let known = |u: &Upstream| u.addr == found.addr;
            if self.settings.servers.iter().any(known) || discovered.iter().any(known) {
                continue;
            }
            if discovered.len() < MAX_DISCOVERED {
                info!(bridge = %self.settings.name, server = %found, "learned from the cluster");
                discovered.push(found);
            }
        }
    }

    /// One more failure in a row, and the reconnect delay it earns, waited out.
    fn back_off(&self, failures: &mut u32, rng: &mut Jitter, events: &tern_client::Events) {
        *failures = failures.saturating_add(1);
        let (min, max) = (self.settings.reconnect_min, self.settings.reconnect_max);
        self.idle(rng.backoff(*failures, min, max), events, Until::Deadline);
    }

    /// Waits up to `delay` (less when woken by an interest change, if `until` says so),
    /// watching the local client's events and saving state meanwhile.
    fn idle(&self, delay: Duration, events: &tern_client::Events, until: Until) {
        self.wait(delay, until, || {
            while let Some(event) = events.try_recv() {
                self.local_event(event);
            }
        });
    }

    /// [`Bridge::idle`], with `poll` for the local client's events.
    fn wait(&self, delay: Duration, until: Until, mut poll: impl FnMut()) {
        let deadline = Instant::now() + delay;
        loop {
            poll();
            self.save_state();
            let now = Instant::now();
            self.exported_requests.prune(now);
            self.imported_requests.prune(now);
            if now >= deadline || self.stopped() {
                return;
            }
            // (A backoff takes the wake-up and waits on: the next connection syncs the
            // whole interest table anyway.)
            if self.wake.recv_timeout((deadline - now).min(TICK)).is_ok()
                && until == Until::Interest
            {
                return;
            }
        }
    }

    fn local_event(&self, event: Event) {
        match event {
            Event::EpochMismatch { message, .. } => {
                self.error(format!("the local connection: {message}"));
            }
            Event::Disconnected { reason } => {
                self.error(format!("the local connection dropped: {reason:?}"));
            }
            _ => {}
        }
    }

    /// Makes the upstream subscriptions what is wanted; false when the connection ended.
    fn sync_subscriptions(&self, generation: u64, next_sid: &mut u64) -> bool {
        let wanted = self.interest.wanted();
        let mut subs = self.upstream_subs.lock().unwrap_or_else(|e| e.into_inner());
        let stale: Vec<Key> = subs
            .keys()
            .filter(|k| !wanted.contains(*k))
            .cloned()
            .collect();
        let fresh: Vec<Key> = wanted
            .into_iter()
            .filter(|k| !subs.contains_key(k))
            .collect();
        if stale.is_empty() && fresh.is_empty() {
            return true;
        }
        let mut link = self.link.lock();
        if link.generation != generation || !link.is_up() {
            return false;
        }
        let mut kinds = self.sid_kinds.lock().unwrap_or_else(|e| e.into_inner());
        for key in stale {
            if let Some(sid) = subs.remove(&key) {
                kinds.remove(&sid);
                link.op(&ClientOp::Unsub {
                    sid: Bytes::from(sid.to_string()),
                    max: None,
                });
            }
        }
        for key in fresh {
            let sid = *next_sid;
            *next_sid += 1;
            let kind = match &key.1 {
                Some(group) => Kind::Queue(Bytes::from(group.clone())),
                None if self.settings.import_static.contains(&key.0) => Kind::Static,
                None => Kind::Plain,
            };
            kinds.insert(sid, kind);
            link.op(&ClientOp::Sub(Subscribe {
                subject: Bytes::from(key.0.clone()),
                queue: key.1.clone().map(Bytes::from),
                sid: Bytes::from(sid.to_string()),
            }));
            subs.insert(key, sid);
        }
        drop(kinds);
        drop(subs);
        match link.flush() {
            Ok(()) => true,
            Err(e) => {
                drop(link);
                self.link.changed.notify_all();
                self.error(e);
                false
            }
        }
    }

    /// The reader of connection `generation`: until it ends.
    fn read(&self, generation: u64, mut stream: Wire, mut buf: BytesMut, inject: &dyn Inject) {
        let mut decoder = ServerDecoder::new(upstream::limits());
        let mut room = ReadRoom::new(READ_CHUNK);
        // Upstream sends the copies of one message back to back on one connection.
        let mut last = Delivered::default();
        let mut batch = Vec::with_capacity(IMPORT_BATCH);
        let why = 'read: loop {
            loop {
                match decoder.decode(&mut buf) {
                    Ok(Some(op)) => {
                        let Some(m) = self.handle(op) else { continue };
                        if let Some(msg) = self.take_upstream(m, &mut last) {
                            batch.push(msg);
                            if batch.len() == IMPORT_BATCH {
                                self.hand_over(&mut batch, inject);
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(e) => break 'read format!("bad input from upstream: {e}"),
                }
            }
            // Everything read so far goes on before the reader waits for more.
            self.hand_over(&mut batch, inject);
            match room.read_into(&mut buf, |r| stream.read(r)) {
                Ok(0) => break "upstream closed the connection".to_string(),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    let link = self.link.lock();
                    if self.stopped() || link.generation != generation || !link.is_up() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break format!("reading upstream: {e}"),
            }
        };
        if self.link.down(generation) {
            bump(&self.counters.disconnects, 1);
            self.error(why);
        }
    }

    /// A message from upstream: a stream import's (to its consumer), or one for the
    /// broker.
    fn take_upstream(&self, m: NatsMessage, last: &mut Delivered) -> Option<Injected> {
        let sid: u64 = std::str::from_utf8(&m.sid)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        match sid.checked_sub(jetstream::SID_BASE) {
            Some(i) => {
                if let Some(inbox) = self.stream_inboxes.get(i as usize) {
                    // Never full: a stream import has one batch in flight.
                    let _ = inbox.tx.try_send(m);
                }
                None
            }
            None => self.deliver(m, sid, last),
        }
    }

    /// What upstream said; a message is given back, for the reader's batch.
    fn handle(&self, op: ServerOp) -> Option<NatsMessage> {
        match op {
            ServerOp::Msg(m) => return Some(m),
            ServerOp::Ping => {
                let mut link = self.link.lock();
                link.op(&ClientOp::Pong);
                if link.flush().is_err() {
                    drop(link);
                    self.link.changed.notify_all();
                }
            }
            ServerOp::Pong => {
                let confirm = self.link.lock().pong();
                if let Some(c) = confirm {
                    self.exports[c.export].confirm(c.token, c.count);
                    bump(&self.counters.confirmed, c.count);
                    self.state_changed();
                }
            }
            ServerOp::Err(e) => {
                bump(&self.counters.upstream_errors, 1);
                self.error(format!("upstream: -ERR '{e}'"));
            }
            ServerOp::Info(info) => {
                let server = self.link.lock().server.clone();
                if let Some(server) = server.and_then(|s| s.parse::<Upstream>().ok()) {
                    self.learn(&server, &info.connect_urls);
                }
            }
            ServerOp::Ok => {}
        }
        None
    }

    /// Publishes one message upstream on connection `generation`; false when that
    /// connection is gone (or the write failed: then it is).
    pub(crate) fn send_upstream(
        &self,
        generation: u64,
        subject: &[u8],
        reply: Option<&[u8]>,
        payload: &[u8],
    ) -> bool {
        let mut link = self.link.lock();
        if link.generation != generation || !link.is_up() {
            return false;
        }
        link.publish(subject, reply, None, payload);
        if let Err(e) = link.flush() {
            drop(link);
            self.link.changed.notify_all();
            self.error(e);
            return false;
        }
        true
    }

    /// Hands what the reader took to the broker: at once, when the importer has nothing
    /// left to publish (nothing may overtake it) and the broker has room without waiting;
    /// otherwise to the importer, one message at a time, within `import_buffer`.
    fn hand_over(&self, batch: &mut Vec<Injected>, inject: &dyn Inject) {
        if batch.is_empty() {
            return;
        }
        if self.import_bytes.load(Ordering::Acquire) == 0 && inject.has_room() {
            self.publish_imports(std::mem::take(batch), inject);
            return;
        }
        for msg in batch.drain(..) {
            self.queue_import(msg);
        }
    }

    /// Publishes `batch` into the broker (waiting up to `INJECT_TIMEOUT` for room),
    /// counted either way.
    fn publish_imports(&self, batch: Vec<Injected>, inject: &dyn Inject) {
        let n = batch.len() as u64;
        let bytes: u64 = batch
            .iter()
            .map(|m| (m.headers.len() + m.payload.len()) as u64)
            .sum();
        if inject.publish(batch, INJECT_TIMEOUT) {
            bump(&self.counters.imported, n);
            bump(&self.counters.imported_bytes, bytes);
        } else {
            bump(&self.counters.import_failed, n);
            self.error(format!(
                "{n} upstream messages not imported: the broker took no more for {INJECT_TIMEOUT:?}"
            ));
        }
    }

    /// Hands one message to the importer, or drops it (counted) when the importer is
    /// `import_buffer` behind.
    fn queue_import(&self, msg: Injected) {
        let size = IMPORT_ENTRY
            + msg.subject.len()
            + msg.reply.as_ref().map_or(0, Bytes::len)
            + msg.headers.len()
            + msg.payload.len();
        let held = self.import_bytes.fetch_add(size, Ordering::AcqRel);
        let full = held + size > self.settings.import_buffer;
        let sent = !full && self.imports.0.send((msg, size)).is_ok();
        if !sent {
            self.import_bytes.fetch_sub(size, Ordering::AcqRel);
            let dropped = self.counters.import_dropped.fetch_add(1, Ordering::Relaxed) + 1;
            // Logged at the first and then every 10,000th: a flood must not flood the log.
            if dropped == 1 || dropped.is_multiple_of(10_000) {
                self.error(format!(
                    "{dropped} upstream messages dropped so far: the local broker took them \
                     slower than upstream sent them, and import_buffer ({} bytes) was full",
                    self.settings.import_buffer
                ));
            }
        }
    }

    /// The importer: publishes what the reader queued, in order and in batches, until the
    /// bridge stops; what it holds counts in `import_bytes` until the broker has it.
    pub(crate) fn importer(&self, inject: &dyn Inject) {
        let mut batch: Vec<Injected> = Vec::with_capacity(IMPORT_BATCH);
        while !self.stopped() {
            let mut next = match self.imports.1.recv_timeout(TICK) {
                Ok(item) => Some(item),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
            };
            let mut held = 0;
            while let Some((msg, size)) = next.take() {
                batch.push(msg);
                held += size;
                if batch.len() < IMPORT_BATCH {
                    next = self.imports.1.try_recv().ok();
                }
            }
            if batch.is_empty() {
                continue;
            }
            self.publish_imports(std::mem::take(&mut batch), inject);
            // Only now may the reader hand the broker a batch itself.
            self.import_bytes.fetch_sub(held, Ordering::AcqRel);
        }
    }

    /// A message from upstream for the broker: a reply to a local requester, or an import
    /// (for the local subscribers its copy is for); `None` when nobody here is owed it.
    fn deliver(&self, m: NatsMessage, sid: u64, last: &mut Delivered) -> Option<Injected> {
        if sid == REPLY_SID {
            let to = std::str::from_utf8(&m.subject)
                .ok()?
                .strip_prefix(&self.upstream_reply_prefix)?;
            if !self.exported_requests.allowed(to, Instant::now()) {
                bump(&self.counters.replies_refused, 1);
                self.error(format!(
                    "an upstream reply to {to} was refused: no request the bridge carried \
                     (within reply_timeout) has that reply subject"
                ));
                return None;
            }
            bump(&self.counters.replies_in, 1);
            let fields: &[(&str, &[u8])] = if m
                .headers
                .as_deref()
                .and_then(|b| headers::get(b, ORIGIN))
                .is_some()
            {
                &[]
            } else {
                &[(ORIGIN, b"nats")]
            };
            return Some(Injected {
                subject: Bytes::copy_from_slice(to.as_bytes()),
                reply: None,
                headers: headers::adding(m.headers.as_ref(), fields),
                payload: m.payload,
                priority: 0,
                route: None,
            });
        }
        // (A subscription that just ended: what was on its way for it is not wanted.)
        let kind = self
            .sid_kinds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&sid)
            .cloned()?;
        let copy = last.copy_of(&m, sid);
        let [origin, priority] = m
            .headers
            .as_deref()
            .map_or([None; 2], |b| headers::get_each(b, [ORIGIN, PRIORITY]));
        let own = origin == Some(self.id.as_bytes());
        // Each copy is for its own local subscribers: the plain ones once (a second copy
        // through an overlapping subscription is the same message), a queue group's
        // member for each group upstream picked this edge for.
        let route = match kind {
            Kind::Queue(group) => Some(Route::group(group)),
            _ if own => {
                // This edge's own message: its local subscribers had it when it was
                // published.
                bump(&self.counters.echoes, 1);
                return None;
            }
            _ if copy.plain_done => {
                bump(&self.counters.overlapping, 1);
                return None;
            }
            Kind::Static => None,
            Kind::Plain => Some(Route::plain()),
        };
        if route.as_ref().is_none_or(|r| r.plain) {
            last.plain_done();
        }
        let reply = m
            .reply
            .as_ref()
            .and_then(|r| std::str::from_utf8(r).ok())
            .map(|r| {
                self.imported_requests.allow(r, Instant::now());
                Bytes::from(format!("{}{r}", self.local_reply_prefix))
            });
        let priority = priority
            .and_then(|p| std::str::from_utf8(p).ok()?.parse::<u8>().ok())
            .unwrap_or(0)
            .min(7);
        let fields: &[(&str, &[u8])] = if origin.is_none() {
            &[(ORIGIN, b"nats")]
        } else {
            &[]
        };
        let msg = Injected {
            subject: m.subject.clone(),
            reply,
            // Kept as it came (no copy) when it already names its origin.
            headers: headers::adding(m.headers.as_ref(), fields),
            payload: m.payload.clone(),
            priority,
            route,
        };
        if !copy.continues {
            last.remember(m, sid);
        }
        Some(msg)
    }

    /// The replier: local responders' replies to upstream requesters go upstream.
    pub(crate) fn replier(&self, local: &Client) {
        let filter = format!("{}>", self.local_reply_prefix);
        let sub = loop {
            match local.subscribe_builder(&filter).capacity(8192).subscribe() {
                Ok(sub) => break sub,
                Err(e) => {
                    self.error(format!("subscribing to {filter} locally: {e}"));
                    if self.stopped() {
                        return;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        };
        while !self.stopped() {
            let msg = match sub.recv_timeout(TICK) {
                Ok(m) => m,
                Err(tern_client::Error::Timeout) => continue,
                Err(e) => {
                    self.error(format!("local replies: {e}"));
                    return;
                }
            };
            let Some(to) = msg.subject.strip_prefix(&self.local_reply_prefix) else {
                continue;
            };
            if msg.is_no_responders() {
                // The local broker found nobody here (a responder that just left): another
                // edge may still answer, so upstream hears nothing rather than a refusal.
                continue;
            }
            if !self.imported_requests.allowed(to, Instant::now()) {
                bump(&self.counters.replies_refused, 1);
                self.error(format!(
                    "a local reply to {to} was refused: no request the bridge carried \
                     (within reply_timeout) has that reply subject"
                ));
                continue;
            }
            let headers =
                headers::with(msg.raw_headers.as_deref(), &[(ORIGIN, self.id.as_bytes())]);
            let mut link = self.link.lock();
            if !link.is_up() {
                drop(link);
                self.error(format!("a reply to {to} was lost: not connected upstream"));
                continue;
            }
            link.publish(to.as_bytes(), None, Some(&headers), &msg.payload);
            if let Err(e) = link.flush() {
                drop(link);
                self.link.changed.notify_all();
                self.error(e);
                continue;
            }
            bump(&self.counters.replies_out, 1);
        }
    }
}

/// What ends a wait early besides the bridge stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Until {
    /// Only its deadline: a reconnect backoff, which local subscriptions coming and going
    /// must not cut short (that would hammer an upstream that is down).
    Deadline,
    /// Its deadline or a change of local interest (connected: subscribe upstream at once).
    Interest,
}

/// What an upstream subscription stands for.
#[derive(Debug, Clone)]
enum Kind {
    /// A static import: for every local subscriber, as if published here.
    Static,
    /// Local plain subscribers' interest.
    Plain,
    /// A local queue group's membership of the upstream group.
    Queue(Bytes),
}

/// The last message from upstream and the subscriptions it came through: upstream sends
/// one copy per matching subscription, back to back, so the next delivery that is the same
/// message through a subscription not seen yet is another copy of it.
#[derive(Default)]
struct Delivered {
    last: Option<NatsMessage>,
    sids: Vec<u64>,
    /// A copy for the plain subscribers was published.
    plain: bool,
}

/// Whether a delivery continues the last message's copies.
struct Copy {
    continues: bool,
    plain_done: bool,
}

impl Delivered {
    fn copy_of(&mut self, m: &NatsMessage, sid: u64) -> Copy {
        let continues = self.last.as_ref().is_some_and(|last| {
            last.subject == m.subject
                && last.reply == m.reply
                && last.headers == m.headers
                && last.payload == m.payload
        }) && !self.sids.contains(&sid);
        if continues {
            self.sids.push(sid);
        } else {
            self.plain = false;
        }
        Copy {
            continues,
            plain_done: continues && self.plain,
        }
    }

    fn plain_done(&mut self) {
        self.plain = true;
    }

    fn remember(&mut self, m: NatsMessage, sid: u64) {
        self.last = Some(m);
        self.sids.clear();
        self.sids.push(sid);
    }
}

fn load_state(path: &Path) -> Result<SavedState, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| format!("{}: not a bridge state file: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SavedState::default()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

fn write_state(path: &Path, state: &SavedState) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let bytes = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_data()?;
    }
    std::fs::rename(&tmp, path)
}

/// Full-jitter exponential backoff.
struct Jitter(u64);

impl Jitter {
    fn new() -> Jitter {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
            ^ (std::process::id() as u64).rotate_left(32);
        Jitter(seed | 1)
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A delay drawn uniformly from zero to `min · 2^(failures-1)`, capped at `max`.
    fn backoff(&mut self, failures: u32, min: Duration, max: Duration) -> Duration {
        let ceiling = min
            .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
            .min(max);
        let nanos = ceiling.as_nanos() as u64;
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.next() % (nanos + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::{Bridge, Jitter, Until};
    use crate::settings::Settings;
    use std::time::Instant;

    #[test]
    fn servers_advertised_by_the_cluster_are_learned_once() {
        let mut buf = bytes::BytesMut::from(
            &b"INFO {\"server_id\":\"x\",\"connect_urls\":[\"127.0.0.1:1\",\"127.0.0.1:2\",\"10.0.0.3:4222\"]}\r\n"[..],
        );
        let mut decoder = tern_protocol::text::ServerDecoder::new(crate::upstream::limits());
        let Some(tern_protocol::text::ServerOp::Info(info)) = decoder.decode(&mut buf).unwrap()
        else {
            panic!("an INFO");
        };
        let given: crate::Upstream = "nats://u:p@127.0.0.1:1".parse().unwrap();
        let mut settings = Settings::new("t", vec![given.clone()]);
        settings.export = vec!["a".into()];
        let bridge = Bridge::new(settings, "ID").unwrap();
        bridge.learn(&given, &info.connect_urls);
        bridge.learn(&given, &info.connect_urls);
        let servers: Vec<String> = bridge.servers().iter().map(|s| s.to_string()).collect();
        assert_eq!(
            servers,
            [
                "nats://127.0.0.1:1",
                "nats://127.0.0.1:2",
                "nats://10.0.0.3:4222"
            ]
        );
        assert_eq!(
            bridge.servers()[1].user.as_deref(),
            Some("u"),
            "reached as the given one"
        );
    }
    use std::time::Duration;

    /// `import_buffer` bounds the memory of what waits for the importer, whatever the
    /// messages' size: each costs its bytes and a fixed overhead, and past the buffer they
    /// are dropped and counted.
    #[test]
    fn the_import_buffer_bounds_small_messages_too() {
        let given: crate::Upstream = "nats://127.0.0.1:1".parse().unwrap();
        let mut settings = Settings::new("t", vec![given]);
        settings.import = vec!["a.>".into()];
        // Room for 100 messages of a 3-byte subject and nothing else.
        settings.import_buffer = 100 * (super::IMPORT_ENTRY + 3);
        let bridge = Bridge::new(settings, "ID").unwrap();
        for _ in 0..150 {
            bridge.queue_import(injected("a.b"));
        }
        assert_eq!(bridge.imports.1.len(), 100);
        let dropped = &bridge.counters.import_dropped;
        assert_eq!(dropped.load(std::sync::atomic::Ordering::Relaxed), 50);
        assert!(super::IMPORT_ENTRY >= std::mem::size_of::<super::Import>());
    }

    /// A broker whose room the test sets; it records the subjects it took, in order.
    #[derive(Default)]
    struct FakeBroker {
        room: std::sync::atomic::AtomicBool,
        took: std::sync::Mutex<Vec<String>>,
    }

    impl crate::Inject for FakeBroker {
        fn publish(&self, batch: Vec<crate::Injected>, _: Duration) -> bool {
            let mut took = self.took.lock().unwrap();
            took.extend(
                batch
                    .iter()
                    .map(|m| String::from_utf8(m.subject.to_vec()).unwrap()),
            );
            true
        }

        fn has_room(&self) -> bool {
            self.room.load(std::sync::atomic::Ordering::Relaxed)
        }

        fn attach(&self, _: std::os::unix::net::UnixStream, _: usize, _: Duration) -> bool {
            false
        }
    }

    fn injected(subject: &'static str) -> crate::Injected {
        crate::Injected {
            subject: bytes::Bytes::from_static(subject.as_bytes()),
            reply: None,
            headers: bytes::Bytes::new(),
            payload: bytes::Bytes::new(),
            priority: 0,
            route: None,
        }
    }

    /// The reader hands a batch to the broker itself only when nothing waits for the
    /// importer: one taken while the broker was full is not overtaken once it has room.
    #[test]
    fn imports_handed_over_directly_never_overtake_queued_ones() {
        use std::sync::atomic::Ordering;
        let given: crate::Upstream = "nats://127.0.0.1:1".parse().unwrap();
        let mut settings = Settings::new("t", vec![given]);
        settings.import = vec!["a.>".into()];
        let bridge = std::sync::Arc::new(Bridge::new(settings, "ID").unwrap());
        let broker = std::sync::Arc::new(FakeBroker::default());
        // Full: queued for the importer (not running yet).
        bridge.hand_over(&mut vec![injected("a.1"), injected("a.2")], &*broker);
        assert!(broker.took.lock().unwrap().is_empty());
        // Room now, but two wait: queued behind them.
        broker.room.store(true, Ordering::Relaxed);
        bridge.hand_over(&mut vec![injected("a.3")], &*broker);
        assert!(broker.took.lock().unwrap().is_empty());
        let importer = {
            let (bridge, broker) = (bridge.clone(), broker.clone());
            std::thread::spawn(move || bridge.importer(&*broker))
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while bridge.import_bytes.load(Ordering::Acquire) > 0 {
            assert!(Instant::now() < deadline, "the importer did not publish");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Nothing waits: the next batch goes straight in.
        bridge.hand_over(&mut vec![injected("a.4")], &*broker);
        assert_eq!(*broker.took.lock().unwrap(), ["a.1", "a.2", "a.3", "a.4"]);
        bridge.stop();
        importer.join().unwrap();
    }

    #[test]
    fn a_backoff_is_not_cut_short_by_local_interest_but_a_connected_wait_is() {
        let given: crate::Upstream = "nats://127.0.0.1:1".parse().unwrap();
        let mut settings = Settings::new("t", vec![given]);
        settings.import = vec!["a.>".into()];
        let bridge = Bridge::new(settings, "ID").unwrap();
        let delay = Duration::from_millis(300);
        bridge.interest.changed("a.b", None, true);
        let started = Instant::now();
        bridge.wait(delay, Until::Deadline, || {});
        assert!(started.elapsed() >= delay, "the backoff was cut short");
        bridge.interest.changed("a.c", None, true);
        let started = Instant::now();
        bridge.wait(delay, Until::Interest, || {});
        assert!(
            started.elapsed() < delay,
            "a connected wait answers interest at once"
        );
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let mut j = Jitter::new();
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(2));
        let mut seen = std::collections::BTreeSet::new();
        for failures in 1..40 {
            let d = j.backoff(failures, min, max);
            assert!(d <= max);
            assert!(d <= min * (1 << (failures - 1).min(20)));
            seen.insert(d);
        }
        assert!(seen.len() > 30, "jittered: {seen:?}");
    }
}
