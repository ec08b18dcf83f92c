//! The server: starts the workers, and stops them.
//!
//! Owns: binding the listeners (per port, one `SO_REUSEPORT` socket per worker on the same
//! address, so the kernel spreads accepts and no acceptor thread exists), choosing the
//! server id and the log epoch, creating each worker's poll,
//! waker and inbound queue (its lanes fitted to the ring first: `fit_lanes_to_ring`),
//! spawning and pinning the worker threads, lame duck mode's
//! switch ([`Server::enter_lame_duck`]), and the shutdown sequence. When monitoring is on,
//! it also binds the monitoring listener and starts the monitoring threads (`monitor/`),
//! which see the workers only through the mesh and
//! their counters.
//!
//! Never: takes part in the data path once the workers run.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mio::net::TcpListener;
use mio::{Poll, Waker};
use socket2::{Domain, Protocol, Socket, Type};
use tern_protocol::binary::{ResumeToken, Welcome, VERSION as BINARY_VERSION};
use tern_protocol::text::ServerInfo;
use tracing::{error, info};

use crate::admission::{ConnectionGate, Slots};
use crate::auth::{AuthHandle, Checker, Verdicts};
use crate::budget::SharedBudget;
use crate::config::Config;
use crate::dedupe::Dedupe;
use crate::inject::MeshInject;
use crate::lameduck::LameDuck;
use crate::mesh::{Envelope, Mesh};
use crate::monitor::{Monitor, MonitorState};
use crate::router::{Router, Shared};
use crate::stats::{Totals, WorkerStats};
use crate::store::{DataDir, RecoveryReport, Store, StoreError};
use crate::transports::Transports;
use crate::worker::{Worker, WorkerSetup, WAKER};
use tern_auth::{AuthConfigError, Authenticator};
use tern_bridge::Hub;
use tern_transport::TlsConfigError;

/// Logs what the authentication rules warn about (plain-text passwords), and loudly when
/// a port that is not loopback is open to anyone.
fn warn_about_auth(config: &Config, rules: &Authenticator) {
    for warning in rules.warnings() {
        tracing::warn!("{warning}");
    }
    if !rules.is_required() {
        let open = [Some(config.listen), config.binary_listen]
            .into_iter()
            .chain([config.websocket.as_ref().map(|w| w.listen)])
            .flatten()
            .filter(|a| !a.ip().is_loopback())
            .map(|a| a.to_string())
            .collect::<Vec<_>>();
        if !open.is_empty() {
            tracing::warn!(
                listen = %open.join(", "),
                "NO AUTHENTICATION: anyone who can reach these addresses may publish, \
                 subscribe and read the stored history; configure auth_token, [[users]] or \
                 [jwt] (docs/security.md)"
            );
        }
    }
}

/// How many lanes of `worker_queue_bytes` a ring holds at least: two lanes and a turn of
/// one more in flight, twice over ([`fit_lanes_to_ring`]).
const LANES_PER_RING: usize = 6;

/// Lowers `worker_queue_bytes` so that a lossless subscription's fall-back always finds
/// its start in the ring, and says what it did; `None` when nothing needed to change.
///
/// When a lossless subscription's queue overflows, it falls back to the log from where it
/// overflowed; what was in flight between the workers then (up to two lanes of
/// `worker_queue_bytes` per receiver, and a sender's turn of at most one more) reaches
/// the publisher's shard before the fall-back does, and the ring must not have come round
/// to the fall-back's start meanwhile, with room to spare for the hold that keeps it from
/// doing so afterwards. With the defaults (64 MiB against 4 MiB) nothing changes; a small
/// ring (tests, small machines) gets smaller lanes.
fn fit_lanes_to_ring(config: &mut Config) -> Option<String> {
    if config.store.is_off() || config.workers < 2 {
        return None;
    }
    let lanes = config.limits.worker_queue_bytes;
    let ring = config.store.log_size;
    let fitted = ring / LANES_PER_RING;
    (lanes > fitted).then(|| {
        config.limits.worker_queue_bytes = fitted;
        format!(
            "worker_queue_bytes lowered from {lanes} to {fitted} bytes (a sixth of \
             log_size, {ring} bytes): what is in flight between workers must fit in the \
             ring, or a lossless subscription could fall back to a start the ring no longer \
             holds (docs/operations.md); raise log_size to keep larger lanes"
        )
    })
}

/// The `version` Tern reports to NATS clients (`INFO`, `/varz`): the nats-server release
/// whose client protocol Tern implements. NATS client libraries compare the server's
/// version to decide what it can do; every core protocol feature Tern has (headers and
/// `HPUB`/`HMSG`, no-responders, the lame-duck `INFO`) is in nats-server 2.2 and later, and
/// the core client protocol has not changed since. Reporting a current release line keeps a
/// library from turning off one of those features because it believes the server old; what
/// newer versions gate is JetStream, which clients only use when `INFO` says `jetstream`,
/// and Tern's never does. Tern's own version is [`TERN_VERSION`].
pub const NATS_COMPATIBLE_VERSION: &str = "2.10.0";

/// Tern's own version: `tern_version` in `INFO` and `/varz`, and the binary port's.
pub const TERN_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A running broker.
pub struct Server {
    /// Locks the data directory for the life of the server (released after the workers,
    /// and their logs, are gone).
    _data_dir: Option<DataDir>,
    local_addr: SocketAddr,
    binary_addr: Option<SocketAddr>,
    websocket_addr: Option<SocketAddr>,
    /// TLS and WebSocket, as the workers accept them (the TLS configuration reloads here).
    transports: Transports,
    mesh: Mesh,
    threads: Vec<JoinHandle<io::Result<()>>>,
    stats: Vec<Arc<WorkerStats>>,
    /// The monitoring endpoint's own counters (`monitor_*`; zero when monitoring is off).
    monitor_stats: Arc<WorkerStats>,
    config: Arc<Config>,
    monitor: Option<Monitor>,
    monitor_addr: Option<SocketAddr>,
    lame_duck: Arc<LameDuck>,
    /// The authentication rules the workers read (reloaded here on SIGHUP).
    auth: Arc<AuthHandle>,
    /// The bridges to NATS clusters, if any.
    bridges: Option<Arc<Hub>>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error("cannot start worker {worker}: {source}")]
    Worker { worker: usize, source: io::Error },
    #[error("cannot start monitoring on {addr}: {source}")]
    Monitor { addr: SocketAddr, source: io::Error },
    /// Its text names the file and the fault, and already carries the underlying error.
    #[error("TLS: {0}")]
    Tls(TlsConfigError),
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    /// Its text names the setting and the fault.
    #[error("authentication: {0}")]
    Auth(AuthConfigError),
    #[error("cannot start the credential checker: {0}")]
    Checker(io::Error),
    #[error("bridge: {0}")]
    Bridge(String),
}

impl Server {
    /// Binds every listener and starts the workers. When this returns, the broker accepts
    /// connections on [`Server::local_addr`].
    pub fn start(mut config: Config) -> Result<Server, StartError> {
        if let Some(notice) = fit_lanes_to_ring(&mut config) {
            tracing::warn!("{notice}");
        }
        let config = Arc::new(config);
        let n = config.workers;
        let (local_addr, listeners) = bind_port(config.listen, n)?;
        let (binary_addr, binary_listeners): (_, Vec<Option<TcpListener>>) =
            match config.binary_listen {
                Some(addr) => {
                    let (addr, listeners) = bind_port(addr, n)?;
                    (Some(addr), listeners.into_iter().map(Some).collect())
                }
                None => (None, (0..n).map(|_| None).collect()),
            };
        let transports = Transports::from_config(&config).map_err(StartError::Tls)?;
        let (websocket_addr, websocket_listeners): (_, Vec<Option<TcpListener>>) =
            match &config.websocket {
                Some(w) => {
                    let (addr, listeners) = bind_port(w.listen, n)?;
                    (Some(addr), listeners.into_iter().map(Some).collect())
                }
                None => (None, (0..n).map(|_| None).collect()),
            };

        // Bound before any worker starts, so a taken port stops the server cleanly.
        let started = std::time::SystemTime::now();
        let started_at = std::time::Instant::now();
        let http = match config.monitor {
            Some(addr) => Some(
                crate::monitor::bind(addr)
                    .map_err(|source| StartError::Monitor { addr, source })?,
            ),
            None => None,
        };

        let mut polls = Vec::with_capacity(n);
        let mut wakers = Vec::with_capacity(n);
        for worker in 0..n {
            let poll = Poll::new().map_err(|source| StartError::Worker { worker, source })?;
            let waker = Waker::new(poll.registry(), WAKER)
                .map_err(|source| StartError::Worker { worker, source })?;
            polls.push(poll);
            wakers.push(Arc::new(waker));
        }
        let auth = Arc::new(AuthHandle::new(
            Authenticator::new(&config.auth.rules).map_err(StartError::Auth)?,
        ));
        warn_about_auth(&config, &auth.load());
        let verdicts: Vec<Arc<Verdicts>> = wakers
            .iter()
            .map(|w| Arc::new(Verdicts::new(Arc::clone(w))))
            .collect();
        // Ends by itself once the workers, which hold its door, are gone.
        let (checker, _) = Checker::start(verdicts.clone()).map_err(StartError::Checker)?;
        let (mesh, inboxes) = Mesh::new(
            wakers,
            config.limits.worker_queue,
            config.limits.worker_queue_bytes,
        );
        let server_id = server_id();
        let bridges = if config.bridges.is_empty() {
            None
        } else if config.tls.as_ref().is_some_and(|t| t.settings.verify) {
            return Err(StartError::Bridge(
                "a bridge reaches its broker through the binary port, which tls_verify makes \
                 demand a client certificate the bridge does not have"
                    .into(),
            ));
        } else {
            Some(Arc::new(
                Hub::new(config.bridges.clone(), &server_id).map_err(StartError::Bridge)?,
            ))
        };
        let info = ServerInfo {
            server_id: server_id.clone(),
            server_name: config.server_name.clone(),
            version: NATS_COMPATIBLE_VERSION.to_string(),
            tern_version: Some(TERN_VERSION.to_string()),
            proto: 1,
            host: local_addr.ip().to_string(),
            port: local_addr.port(),
            headers: true,
            max_payload: config.limits.max_payload,
            client_id: 0,
            client_ip: None,
            tls_required: false,
            tls_verify: false,
            auth_required: false,
            nonce: None,
            ldm: false,
            connect_urls: Vec::new(),
        };
        let mut info = info;
        let verify = config.tls.as_ref().is_some_and(|t| t.settings.verify);
        transports.mark_info(&mut info, verify);
        let Stores {
            dir: data_dir,
            stores,
            epoch: log_epoch,
            recovery,
            dedupe,
        } = open_stores(&config)?;
        // Where a bridge's first export starts: the log's end now, before anyone publishes.
        let log_tail = (!config.store.is_off()).then(|| ResumeToken {
            epoch: log_epoch,
            last_sequences: recovery
                .iter()
                .map(|r| r.next_seq.saturating_sub(1))
                .collect(),
        });
        let welcome = Welcome {
            version: BINARY_VERSION,
            shard_count: n as u16,
            max_payload: u32::try_from(config.limits.max_payload).unwrap_or(u32::MAX),
            max_frame: u32::try_from(config.limits.binary().max_frame_len()).unwrap_or(u32::MAX),
            ping_interval_ms: u32::try_from(config.limits.ping_interval.as_millis())
                .unwrap_or(u32::MAX),
            client_id: 0,
            log_epoch,
            server_id: Bytes::from(server_id),
        };
        let cores = if config.pin {
            core_affinity::get_core_ids().unwrap_or_default()
        } else {
            Vec::new()
        };

        // One gate for every worker's accept path: the connection limits are global.
        let gate = ConnectionGate::new(&config.admission, config.workers, started_at);
        // One count of text catch-ups in progress, shared by the workers.
        let replay_slots = Arc::new(Slots::new(config.store.max_replays));
        let lame_duck = Arc::new(LameDuck::new(started_at));
        // One budget for every worker's subscription queues: reserved a chunk at a time.
        let shared = Shared {
            replay_slots,
            subscription_slots: Arc::new(Slots::new(config.admission.max_total_subscriptions)),
            budget: SharedBudget::new(config.flow.max_queued_bytes),
            dedupe,
            auth: Arc::clone(&auth),
            checker,
            bridges: bridges.clone(),
        };
        let mut threads = Vec::with_capacity(n);
        let mut stats = Vec::with_capacity(n);
        for (worker, (((((poll, listener), binary_listener), websocket_listener), inbox), store)) in
            polls
                .into_iter()
                .zip(listeners)
                .zip(binary_listeners)
                .zip(websocket_listeners)
                .zip(inboxes)
                .zip(stores)
                .enumerate()
        {
            let worker_stats = Arc::new(WorkerStats::default());
            stats.push(Arc::clone(&worker_stats));
            let setup = WorkerSetup {
                router: Router::new(
                    worker,
                    mesh.clone(),
                    inbox,
                    Arc::clone(&config),
                    worker_stats,
                    store,
                    shared.clone(),
                ),
                poll,
                listener,
                binary_listener,
                websocket_listener,
                transports: transports.clone(),
                info: info.clone(),
                welcome: welcome.clone(),
                gate: Arc::clone(&gate),
                lame_duck: Arc::clone(&lame_duck),
                verdicts: Arc::clone(&verdicts[worker]),
            };
            let core = (!cores.is_empty()).then(|| cores[worker % cores.len()]);
            let handle = std::thread::Builder::new()
                .name(format!("tern-worker-{worker}"))
                .spawn(move || {
                    if let Some(core) = core {
                        if !core_affinity::set_for_current(core) {
                            tracing::warn!(worker, core = core.id, "cannot pin worker to core");
                        }
                    }
                    Worker::new(setup)?.run()
                })
                .map_err(|source| StartError::Worker { worker, source })?;
            threads.push(handle);
        }
        let monitor_addr = http.as_ref().map(|(_, addr)| *addr);
        let monitor_stats = Arc::new(WorkerStats::default());
        let monitor = match http {
            Some((http, addr)) => {
                let state = MonitorState {
                    mesh: mesh.clone(),
                    stats: stats.clone(),
                    own: Arc::clone(&monitor_stats),
                    config: Arc::clone(&config),
                    server_id: info.server_id.clone(),
                    listen: local_addr,
                    monitor: addr,
                    pinned: !cores.is_empty(),
                    started,
                    started_at,
                    lame_duck: Arc::clone(&lame_duck),
                    recovery,
                    bridges: bridges.clone(),
                };
                match Monitor::spawn(http, state) {
                    Ok(m) => Some(m),
                    Err(source) => {
                        let server = Server {
                            _data_dir: data_dir,
                            local_addr,
                            binary_addr,
                            websocket_addr,
                            transports,
                            mesh,
                            threads,
                            stats,
                            monitor_stats,
                            config,
                            monitor: None,
                            monitor_addr: None,
                            lame_duck,
                            auth,
                            bridges: None,
                        };
                        server.shutdown();
                        return Err(StartError::Monitor { addr, source });
                    }
                }
            }
            None => None,
        };
        info!(
            listen = %local_addr,
            binary_listen = ?binary_addr,
            websocket_listen = ?websocket_addr,
            tls = transports.tls.is_some(),
            auth = ?config.auth.methods(),
            monitor = ?monitor_addr,
            log_epoch,
            workers = n,
            pinned = !cores.is_empty(),
            server_id = %info.server_id,
            "ternd started"
        );
        if let (Some(hub), Some(addr)) = (&bridges, binary_addr) {
            let ip = match addr.ip() {
                std::net::IpAddr::V4(ip) if ip.is_unspecified() => Ipv4Addr::LOCALHOST.into(),
                std::net::IpAddr::V6(ip) if ip.is_unspecified() => Ipv6Addr::LOCALHOST.into(),
                ip => ip,
            };
            let tls = config.tls.as_ref().map(|t| &t.settings);
            hub.start(
                SocketAddr::new(ip, addr.port()),
                tls.map(|t| t.cert_file.as_path()),
                Arc::new(MeshInject::new(mesh.clone(), 0)),
                log_tail,
            )
            .map_err(|e| StartError::Bridge(format!("starting: {e}")))?;
        }
        Ok(Server {
            _data_dir: data_dir,
            local_addr,
            binary_addr,
            websocket_addr,
            transports,
            mesh,
            threads,
            stats,
            monitor_stats,
            config,
            monitor,
            monitor_addr,
            lame_duck,
            auth,
            bridges,
        })
    }

    /// The address the text port listens on (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address the binary port listens on (the real port when 0 was asked for), or
    /// `None` when the binary port is off.
    pub fn binary_addr(&self) -> Option<SocketAddr> {
        self.binary_addr
    }

    /// The address the WebSocket port listens on (the real port when 0 was asked for), or
    /// `None` when it is off.
    pub fn websocket_addr(&self) -> Option<SocketAddr> {
        self.websocket_addr
    }

    /// Reloads the TLS certificate and key from their files (SIGHUP): new connections get
    /// the new ones, open connections keep theirs. On an error (it names the file), the
    /// current ones stay. `Ok(false)` when TLS is off.
    pub fn reload_tls(&self) -> Result<bool, TlsConfigError> {
        match (&self.transports.tls, &self.config.tls) {
            (Some(accept), Some(options)) => {
                accept.handle.reload(&options.settings)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Reloads users, tokens, keys and permissions (SIGHUP): the config file is read
    /// again, and on success new connections use the new rules while each worker
    /// re-checks its open connections at its next tick (a user that is gone is closed,
    /// subscriptions no longer allowed are removed). On an error (it names the setting),
    /// the current rules stay.
    pub fn reload_auth(&self) -> Result<(), String> {
        let settings = self.config.reload_auth().map_err(|e| e.to_string())?;
        let rules = Authenticator::new(&settings.rules).map_err(|e| e.to_string())?;
        warn_about_auth(&self.config, &rules);
        self.auth.replace(rules);
        Ok(())
    }

    /// Where the monitoring endpoint listens (the real port when 0 was asked for), or
    /// `None` when monitoring is off.
    pub fn monitor_addr(&self) -> Option<SocketAddr> {
        self.monitor_addr
    }

    /// The counters summed over workers.
    pub fn totals(&self) -> Totals {
        Totals::sum(
            self.stats
                .iter()
                .chain(std::iter::once(&self.monitor_stats))
                .map(|s| s.as_ref()),
        )
    }

    /// Enters lame duck mode (`lameduck.rs`): every worker closes its listeners at its next
    /// timer tick, tells its clients (`INFO` with `ldm`, `GOAWAY`), waits the grace period
    /// and closes them a few at a time until `lame_duck_duration` has passed; `/healthz`
    /// answers 503 from now on. Returns that duration, or `None` when lame duck mode had
    /// already begun. The caller shuts the server down when [`Server::lame_duck_finished`]
    /// says so or the duration is over, whichever is first.
    pub fn enter_lame_duck(&self) -> Option<Duration> {
        self.lame_duck
            .enter(Instant::now())
            .then_some(self.config.limits.lame_duck_duration)
    }

    /// True once lame duck mode has run its course early: every worker has stopped
    /// accepting and no connection is left open.
    pub fn lame_duck_finished(&self) -> bool {
        self.lame_duck.is_on()
            && self.lame_duck.workers_in() == self.mesh.workers()
            && self.totals().connections() == 0
    }

    /// Stops accepting, flushes what is queued (up to the shutdown timeout) and closes every
    /// connection, then waits for the workers to end.
    pub fn shutdown(mut self) {
        if let Some(m) = self.monitor.take() {
            m.stop();
        }
        let timeout = self.config.limits.shutdown_timeout;
        if let Some(hub) = self.bridges.take() {
            // First, while the workers still run: the exports' positions are saved and the
            // local connection closes like any other.
            hub.stop(timeout);
        }
        for worker in 0..self.mesh.workers() {
            // Shutdown goes through the same queue as data, so it lands after what is
            // already queued for the worker.
            if !self
                .mesh
                .send_timeout(worker, vec![Envelope::Shutdown], timeout)
            {
                error!(worker, "worker did not take the shutdown request in time");
            }
        }
        for (worker, t) in self.threads.into_iter().enumerate() {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => error!(worker, error = %e, "worker failed"),
                Err(_) => error!(worker, "worker panicked"),
            }
        }
        // Every counter, as `/varz` shows them.
        let totals = Totals::sum(
            self.stats
                .iter()
                .chain(std::iter::once(&self.monitor_stats))
                .map(|s| s.as_ref()),
        );
        info!(
            totals = %serde_json::to_string(&totals).unwrap_or_default(),
            "ternd stopped"
        );
    }
}

/// Every shard's store, opened.
struct Stores {
    /// The data directory's lock (`None` when nothing is stored).
    dir: Option<DataDir>,
    /// One per shard (all `None` when nothing is stored).
    stores: Vec<Option<Store>>,
    /// The broker's log epoch.
    epoch: u64,
    /// What opening each ring file found (for `/varz`).
    recovery: Vec<RecoveryReport>,
    /// The message ids every store checks (`None` when nothing is stored).
    dedupe: Option<Arc<Dedupe>>,
}

/// Opens every shard's store (when anything is stored): locks the data directory, opens or
/// creates each ring file and logs what recovery found.
///
/// The epoch clients see combines every shard file's own epoch and the shard count, so a
/// resume token stops being valid when any shard's file was recreated or the shards were
/// renumbered. Without a store every start is a new epoch: nothing survives it.
fn open_stores(config: &Config) -> Result<Stores, StartError> {
    let n = config.workers;
    if config.store.is_off() {
        return Ok(Stores {
            dir: None,
            stores: (0..n).map(|_| None).collect(),
            epoch: random_u64(),
            recovery: Vec::new(),
            dedupe: None,
        });
    }
    let dir = DataDir::open(&config.store.data_dir)?;
    dir.check_shard_count(n)?;
    let now = std::time::Instant::now();
    let wall_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut stores = Vec::with_capacity(n);
    let mut reports = Vec::with_capacity(n);
    let mut epoch = n as u64;
    let st = &config.store;
    let dedupe = Arc::new(Dedupe::new(st.dedupe_window, st.dedupe_max_ids, n));
    for shard in 0..n {
        let path = dir.shard_file(shard, n);
        let ids = (shard as u16, Arc::clone(&dedupe));
        let (store, recovery) = Store::open(&path, st, ids, now, wall_ns)?;
        report_recovery(shard, &path, &recovery);
        reports.push(RecoveryReport::new(shard, &path, &recovery));
        epoch = epoch.rotate_left(13) ^ store.epoch();
        stores.push(Some(store));
    }
    Ok(Stores {
        dir: Some(dir),
        stores,
        epoch: epoch.max(1),
        recovery: reports,
        dedupe: Some(dedupe),
    })
}

/// Logs what opening a ring file found: a warning naming the file, what was kept, lost and
/// cut, and where the damaged file was copied, when recovery had to repair anything.
fn report_recovery(shard: usize, path: &std::path::Path, recovery: &tern_log::Recovery) {
    let copy = recovery
        .damaged_copy
        .as_ref()
        .map(|p| p.display().to_string());
    match &recovery.cut_reason {
        Some(reason) => tracing::warn!(
            shard,
            path = %path.display(),
            records_kept = recovery.records,
            records_lost = recovery.lost_records,
            holes = recovery.holes.len(),
            bytes_cut = recovery.cut_bytes,
            first_seq = recovery.first_seq,
            next_seq = recovery.next_seq,
            torn_append = recovery.torn_append,
            damaged_copy = copy.as_deref().unwrap_or("none"),
            %reason,
            "ring log recovered: what was damaged or torn was cut, every intact record kept"
        ),
        None => info!(
            shard,
            path = %path.display(),
            created = recovery.created,
            records = recovery.records,
            first_seq = recovery.first_seq,
            next_seq = recovery.next_seq,
            holes = recovery.holes.len(),
            records_lost = recovery.lost_records,
            "ring log opened"
        ),
    }
}

/// Binds `n` listeners on one address, one per worker.
///
/// `SO_REUSEPORT` lets a second process of the same user bind the same port, and the
/// kernel would then spread connections over both brokers. A plain bind first makes a port
/// that is in use (by anyone) an error, as it is for any server, and resolves port 0; the
/// workers' sockets then share the port it got.
fn bind_port(addr: SocketAddr, n: usize) -> Result<(SocketAddr, Vec<TcpListener>), StartError> {
    let listen_error = |addr| move |source| StartError::Listen { addr, source };
    let probe = std::net::TcpListener::bind(addr).map_err(listen_error(addr))?;
    let bound = probe.local_addr().map_err(listen_error(addr))?;
    drop(probe);
    let listeners = (0..n)
        .map(|_| bind_reuseport(bound).map_err(listen_error(bound)))
        .collect::<Result<_, _>>()?;
    Ok((bound, listeners))
}

/// A non-blocking listener with `SO_REUSEPORT`, so every worker can bind the same address.
fn bind_reuseport(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// A random-looking server id, 22 characters of [A-Z0-9] like nats-server's.
fn server_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut out = String::with_capacity(22);
    let mut x = random_u64();
    for i in 0..22 {
        if i % 12 == 11 {
            x = random_u64();
        }
        out.push(ALPHABET[(x % 36) as usize] as char);
        x /= 36;
    }
    out
}

/// A non-zero random number: std's per-process random hash keys, mixed with the time and
/// the process id. Not cryptographic; ids and epochs only need to differ between starts.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish().max(1)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::fit_lanes_to_ring;
    use crate::config::{Args, Config};

    fn config(args: &[&str]) -> Config {
        let all = ["ternd"].iter().chain(args);
        Config::from_args(Args::parse_from(all)).unwrap()
    }

    /// The lanes `fit_lanes_to_ring` leaves, and whether it said anything.
    fn fitted(args: &[&str]) -> (usize, bool) {
        let mut c = config(args);
        let notice = fit_lanes_to_ring(&mut c);
        (c.limits.worker_queue_bytes, notice.is_some())
    }

    #[test]
    fn lanes_are_lowered_to_fit_what_is_in_flight_in_the_ring() {
        const MIB: usize = 1 << 20;
        assert_eq!(
            fitted(&["--workers", "2"]),
            (4 * MIB, false),
            "the defaults"
        );
        let small = ["--workers", "2", "--log-size", "6MiB"];
        assert_eq!(fitted(&small), (MIB, true));
        let notice = fit_lanes_to_ring(&mut config(&small)).unwrap();
        assert!(
            notice.contains("lowered from 4194304 to 1048576"),
            "{notice}"
        );
        let small_lanes = [&small[..], &["--worker-queue-bytes", "512KiB"]].concat();
        assert_eq!(fitted(&small_lanes), (512 << 10, false));
        let no_store = [&small[..], &["--no-store"]].concat();
        assert_eq!(fitted(&no_store), (4 * MIB, false));
        assert_eq!(
            fitted(&["--workers", "1", "--log-size", "6MiB"]),
            (4 * MIB, false)
        );
        // The smallest ring still leaves lanes above their smallest setting (64 KiB).
        let smallest = [
            "--workers",
            "2",
            "--log-size",
            "1MiB",
            "--max-payload",
            "64KiB",
        ];
        assert_eq!(fitted(&smallest), (MIB / 6, true));
    }
}
