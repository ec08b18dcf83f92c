//! `soak`: a long mixed run against a real `ternd` — an audience, acknowledged traffic and
//! every kind of hostile client at once — that checks the broker held up, and says exactly
//! what did not.
//!
//! Owns: the soak's configuration ([`SoakConfig`]: [`SoakConfig::long`] for `make soak`,
//! [`SoakConfig::short`] for CI), the settings `ternd` is started with
//! ([`BrokerSettings`], small explicit budgets) and the memory bound derived from them,
//! running everything (threads, the chaos proxy's kills and storms, the deadline), the
//! checks, and the report ([`SoakReport`], [`render`]). The parts live in submodules:
//! [`hostile`] (the hostile clients), [`acked`] (acknowledged publishers and exactly-once
//! subscribers, through `tern-client`), [`proxy`] (the chaos proxy in front of those
//! clients), [`memory`] (RSS samples, the bound, flatness) and [`monitor`] (`/varz`,
//! `/healthz`).
//!
//! What runs, for `duration`, against one `ternd`:
//!
//! - the [`audience`](crate::scenario::audience) scenario on the text port (users in rooms,
//!   paced publishers, churn, a reconnect storm halfway), whose subscribers read fast and
//!   must get every message owed to them, with no `$TERN.DROPPED`;
//! - acknowledged publishers and lossless subscribers through `tern-client`, all connected
//!   through the chaos proxy, which cuts one of them mid-frame every `proxy_kill_every` and
//!   all of them every `proxy_storm_every` (the client's reconnect path: resubscribe with
//!   a resume token, resend what was unacknowledged); one subscriber also restarts its
//!   client from its own resume token. Every acknowledged message must arrive exactly once,
//!   in order per publisher and subject;
//! - idle `tern-client`s behind the proxy (more clients in each storm), which must all be
//!   connected and subscribed at the end;
//! - a paced bulk publisher (unstored subjects) that the stuck subscribers fall behind on;
//! - every class of [`hostile`] client.
//!
//! Then: `/varz` (each hostile class's counter must have moved), a fresh client's round
//! trip on each port, `/healthz`, and SIGTERM (exit status 0). `ternd`'s `VmRSS` is sampled
//! every second throughout: it must stay under the bound and be flat after warm-up.
//!
//! Never: prints (the caller renders the report), or waits without a deadline; a broker
//! that stops answering fails checks, it does not hang the run.

pub mod acked;
pub mod hostile;
pub mod memory;
pub mod monitor;
pub mod proxy;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde::Serialize;

use self::acked::{PublisherLog, SubscriberLog};
use self::hostile::{ClassReport, ClassStats, Target};
use self::memory::{BoundTerm, Flatness, MemoryBound, MemorySample, Sampler};
use self::proxy::{ChaosProxy, ProxyStats};
use crate::broker::BrokerProcess;
use crate::driver::nats::NatsDriver;
use crate::driver::{Connection, Driver};
use crate::scenario::audience::random::Rng;
use crate::scenario::audience::{self, AudienceConfig, AudienceResult};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// `ternd`'s per-turn read budget per connection (`worker.rs`, `READ_BUDGET`): what one
/// connection can add in one turn beyond what its budgets let it hold.
const READ_BUDGET: u64 = 256 * KIB;
/// One socket read (`conn`'s read size).
const READ_CHUNK: u64 = 64 * KIB;
/// `max_control_line` (left at its default).
const MAX_CONTROL_LINE: u64 = 4 * KIB;
/// A connection's own state, its subscriptions' state, its slab slot and socket
/// bookkeeping: a generous allowance (`tern-bench conns` measures a few KiB).
const CONN_STATE: u64 = 32 * KIB;
/// Closed connections each worker keeps for `/connz` (`CLOSED_KEPT_PER_WORKER`), about
/// 1 KiB each.
const CLOSED_KEPT: u64 = 1000;
/// The broker budget's reservation unit (`budget::CHUNK`).
const BUDGET_CHUNK: u64 = MIB;
/// Allocator slack, thread stacks and everything too small to name.
const SLACK: u64 = 16 * MIB;
/// Bytes per remembered message id beyond its length (operations.md).
const DEDUPE_ID_COST: u64 = 100;
/// The longest message id the soak uses (`soak-p<P>-<seq>`).
const MESSAGE_ID_LEN: u64 = 24;

/// Subjects the stuck subscribers take: everything busy.
const STUCK_FILTERS: [&str; 3] = ["soak.bulk.>", "audience.>", acked::FILTER];

/// The settings `ternd` runs with: small explicit budgets, so that the memory bound they
/// imply is small and means something.
#[derive(Debug, Clone, Serialize)]
pub struct BrokerSettings {
    /// `--workers`.
    pub workers: usize,
    /// `--max-connections`.
    pub max_connections: u64,
    /// `--connect-rate` and `--connect-burst`.
    pub connect_rate: u64,
    pub connect_burst: u64,
    /// `--max-pending`: everything queued for one connection.
    pub max_pending: u64,
    /// `--write-buffer`: deliveries encoded ahead in a connection's write buffer before
    /// they wait in their subscriptions' queues (which the broker budget covers).
    pub write_buffer: u64,
    /// `--max-payload`.
    pub max_payload: u64,
    /// `--sub-queue-bytes`: one subscription's queue. As large as `max_pending`, so that a
    /// stuck subscriber runs into its connection's budget and the broker's, not just its
    /// queue's own bound.
    pub sub_queue_bytes: u64,
    /// `--max-queued-bytes`: every subscription queue together.
    pub max_queued_bytes: u64,
    /// `--worker-queue-bytes`: each lane of each worker's inbox.
    pub worker_queue_bytes: u64,
    /// `--auth-timeout`, `--ping-interval` (`ping_max` stays 2), `--slow-consumer-grace`.
    pub auth_timeout_ms: u64,
    pub ping_interval_ms: u64,
    pub slow_consumer_grace_ms: u64,
    /// `--max-replays`, `--max-replays-per-conn`.
    pub max_replays: u64,
    pub max_replays_per_conn: u64,
    /// `--log-size` of each shard's ring log; `--store` filters.
    pub log_size: u64,
    pub store: Vec<String>,
    /// `--dedupe-window`, `--dedupe-max-ids`.
    pub dedupe_window_ms: u64,
    pub dedupe_max_ids: u64,
}

impl BrokerSettings {
    /// The soak's settings for `connections` expected connections at most.
    pub fn for_connections(connections: u64) -> BrokerSettings {
        BrokerSettings {
            workers: 2,
            max_connections: connections,
            connect_rate: 300,
            connect_burst: 60,
            // Small enough that a stuck subscriber on the worker holding the broker's
            // reservation reaches it before all of that worker's stuck subscribers
            // together reach the reservation: the queues of k stuck subscribers that
            // filled together hold about 1 MiB / k each (the broker evicts the oldest
            // first), which is above 128 KiB less the write buffer for any k below 16.
            max_pending: 128 * KIB,
            write_buffer: 64 * KIB,
            max_payload: 16 * KIB,
            sub_queue_bytes: 128 * KIB,
            // One reservation chunk for the whole broker: the worker without it must evict
            // as soon as its stuck subscribers queue anything.
            max_queued_bytes: MIB,
            worker_queue_bytes: MIB,
            auth_timeout_ms: 1000,
            ping_interval_ms: 3000,
            slow_consumer_grace_ms: 2000,
            max_replays: 4,
            max_replays_per_conn: 2,
            log_size: 4 * MIB,
            store: vec![
                "audience.>".into(),
                acked::FILTER.into(),
                "soak.fill.>".into(),
            ],
            dedupe_window_ms: 20_000,
            dedupe_max_ids: 20_000,
        }
    }

    /// The flags (after the harness's own `--listen`, `--workers`, `--data-dir`...).
    pub fn args(&self) -> Vec<String> {
        let kib = |b: u64| format!("{}KiB", b / KIB);
        let ms = |m: u64| format!("{m}ms");
        let mut a: Vec<String> = [
            ("--no-pin", None),
            ("--max-connections", Some(self.max_connections.to_string())),
            ("--connect-rate", Some(self.connect_rate.to_string())),
            ("--connect-burst", Some(self.connect_burst.to_string())),
            ("--max-pending", Some(kib(self.max_pending))),
            ("--write-buffer", Some(kib(self.write_buffer))),
            ("--max-payload", Some(kib(self.max_payload))),
            ("--sub-queue-bytes", Some(kib(self.sub_queue_bytes))),
            ("--max-queued-bytes", Some(kib(self.max_queued_bytes))),
            ("--worker-queue-bytes", Some(kib(self.worker_queue_bytes))),
            ("--auth-timeout", Some(ms(self.auth_timeout_ms))),
            ("--ping-interval", Some(ms(self.ping_interval_ms))),
            (
                "--slow-consumer-grace",
                Some(ms(self.slow_consumer_grace_ms)),
            ),
            ("--max-replays", Some(self.max_replays.to_string())),
            (
                "--max-replays-per-conn",
                Some(self.max_replays_per_conn.to_string()),
            ),
            ("--log-size", Some(kib(self.log_size))),
            ("--dedupe-window", Some(ms(self.dedupe_window_ms))),
            ("--dedupe-max-ids", Some(self.dedupe_max_ids.to_string())),
        ]
        .into_iter()
        .flat_map(|(flag, value)| std::iter::once(flag.to_string()).chain(value))
        .collect();
        for s in &self.store {
            a.push("--store".into());
            a.push(s.clone());
        }
        a
    }

    /// The most `ternd`'s resident set may hold with these settings, on top of
    /// `baseline_kib` (measured once it has started and its ring logs are full, so the
    /// binary, the threads and the logs' mapped pages are in it).
    pub fn bound(&self, baseline_kib: u64) -> MemoryBound {
        let w = self.workers as u64;
        let per_conn = self.max_pending
            + READ_BUDGET
            + READ_CHUNK
            + self.max_payload
            + MAX_CONTROL_LINE
            + CONN_STATE;
        let kib = |b: u64| b.div_ceil(KIB);
        MemoryBound::new(vec![
            BoundTerm {
                what: "baseline: VmRSS after start and after the ring logs were filled once \
                       (binary, threads, the logs' mapped pages)"
                    .into(),
                kib: baseline_kib,
            },
            BoundTerm {
                what: format!(
                    "every connection's own buffers: max_connections {} x (max_pending {} KiB \
                     + one turn's reads {} KiB + read buffer {} KiB + state {} KiB)",
                    self.max_connections,
                    self.max_pending / KIB,
                    READ_BUDGET / KIB,
                    (READ_CHUNK + self.max_payload + MAX_CONTROL_LINE) / KIB,
                    CONN_STATE / KIB
                ),
                kib: kib(self.max_connections * per_conn),
            },
            BoundTerm {
                what: format!(
                    "subscription queues, broker-wide: max_queued_bytes {} KiB + {} workers x \
                     one 1 MiB reservation",
                    self.max_queued_bytes / KIB,
                    w
                ),
                kib: kib(self.max_queued_bytes + w * BUDGET_CHUNK),
            },
            BoundTerm {
                what: format!(
                    "between workers: {w} workers x (2 inbox lanes + outbox) x \
                     worker_queue_bytes {} KiB",
                    self.worker_queue_bytes / KIB
                ),
                kib: kib(w * 3 * self.worker_queue_bytes),
            },
            BoundTerm {
                what: format!(
                    "dedupe: {w} shards x dedupe_max_ids {} x ({MESSAGE_ID_LEN} + \
                     {DEDUPE_ID_COST}) bytes",
                    self.dedupe_max_ids
                ),
                kib: kib(w * self.dedupe_max_ids * (MESSAGE_ID_LEN + DEDUPE_ID_COST)),
            },
            BoundTerm {
                what: format!("closed connections kept for /connz: {w} x {CLOSED_KEPT} x 1 KiB"),
                kib: w * CLOSED_KEPT,
            },
            BoundTerm {
                what: "slack: allocator, stacks, monitoring".into(),
                kib: SLACK / KIB,
            },
        ])
    }
}

/// How many hostile clients of each class, and how they behave.
#[derive(Debug, Clone, Serialize)]
pub struct HostileConfig {
    /// Garbage senders (threads; one connection at a time each).
    pub garbage: usize,
    /// Slowloris sockets of each of the four kinds.
    pub slowloris_per_kind: usize,
    /// Milliseconds between a slowloris socket's bytes.
    pub slowloris_tick_ms: u64,
    /// PING flooders.
    pub ping_floods: usize,
    /// Stuck subscribers, and how long each lives before it is replaced.
    pub stuck: usize,
    pub stuck_lifetime_ms: u64,
    /// Replay flooders (half read, half never do), requests per round, round length.
    pub replay_flooders: usize,
    pub replay_requests: usize,
    pub replay_round_ms: u64,
    /// Connections per storm burst, and the pause between bursts.
    pub storm_burst: usize,
    pub storm_every_ms: u64,
    /// Milliseconds between killed connections.
    pub kill_every_ms: u64,
}

/// A soak run.
#[derive(Debug, Clone, Serialize)]
pub struct SoakConfig {
    /// The `ternd` executable.
    pub ternd: PathBuf,
    /// How long everything runs (the audience publishes this long; the checks follow).
    #[serde(with = "secs")]
    pub duration: Duration,
    /// The first part of the run, excluded from the flatness check.
    #[serde(with = "secs")]
    pub warmup: Duration,
    /// How much more than the first half's peak (percent, on top of 4 MiB) the second
    /// half of the run after warm-up may reach.
    pub growth_allowance_pct: u64,
    /// Audience users (text port).
    pub users: usize,
    /// Acknowledged publishers, and each one's rate (msgs/s).
    pub acked_publishers: u32,
    pub acked_rate: u32,
    /// Lossless subscribers that only reconnect, and ones that also restart their client
    /// from their own resume token every `restart_every`.
    pub acked_subscribers: usize,
    pub resuming_subscribers: usize,
    #[serde(with = "secs")]
    pub restart_every: Duration,
    /// Idle `tern-client`s behind the proxy.
    pub storm_clients: usize,
    /// The chaos proxy: one connection cut mid-frame every `proxy_kill_every`, every one
    /// every `proxy_storm_every`.
    #[serde(with = "secs")]
    pub proxy_kill_every: Duration,
    #[serde(with = "secs")]
    pub proxy_storm_every: Duration,
    /// The bulk publisher's rate (msgs/s, 200 bytes each).
    pub bulk_rate: u32,
    /// The hostile clients.
    pub hostile: HostileConfig,
    /// The broker's settings.
    pub settings: BrokerSettings,
    /// Where `ternd`'s log goes (stderr), if anywhere.
    pub log: Option<PathBuf>,
    /// Seed of every random choice.
    pub seed: u64,
}

impl SoakConfig {
    /// `make soak`: ten minutes, 200 users.
    pub fn long(ternd: PathBuf) -> SoakConfig {
        let users = 200;
        SoakConfig {
            ternd,
            duration: Duration::from_secs(600),
            warmup: Duration::from_secs(90),
            growth_allowance_pct: 5,
            users,
            acked_publishers: 4,
            acked_rate: 100,
            acked_subscribers: 2,
            resuming_subscribers: 1,
            restart_every: Duration::from_secs(20),
            storm_clients: 16,
            proxy_kill_every: Duration::from_secs(2),
            proxy_storm_every: Duration::from_secs(30),
            bulk_rate: 2000,
            hostile: HostileConfig {
                garbage: 2,
                slowloris_per_kind: 6,
                slowloris_tick_ms: 250,
                ping_floods: 4,
                stuck: 24,
                stuck_lifetime_ms: 20_000,
                replay_flooders: 4,
                replay_requests: 12,
                replay_round_ms: 6000,
                storm_burst: 100,
                storm_every_ms: 5000,
                kill_every_ms: 150,
            },
            settings: BrokerSettings::for_connections(users as u64 + 200),
            log: None,
            seed: 1,
        }
    }

    /// CI: one minute, fewer of everything, every class still there.
    pub fn short(ternd: PathBuf) -> SoakConfig {
        let users = 40;
        let mut c = SoakConfig::long(ternd);
        c.duration = Duration::from_secs(60);
        c.warmup = Duration::from_secs(20);
        // A minute is mostly warm-up (ten-minute runs grow for their first 150 s, then
        // stay flat): this run's memory check is the bound; flatness is the long run's.
        c.growth_allowance_pct = 25;
        c.users = users;
        c.acked_publishers = 2;
        c.acked_rate = 50;
        c.restart_every = Duration::from_secs(12);
        c.storm_clients = 6;
        c.proxy_storm_every = Duration::from_secs(15);
        c.bulk_rate = 1000;
        c.hostile = HostileConfig {
            garbage: 1,
            slowloris_per_kind: 3,
            ping_floods: 2,
            stuck: 16,
            stuck_lifetime_ms: 15_000,
            replay_flooders: 4,
            replay_requests: 8,
            storm_burst: 90,
            storm_every_ms: 8000,
            kill_every_ms: 300,
            ..c.hostile
        };
        c.settings = BrokerSettings::for_connections(users as u64 + 160);
        c
    }

    fn audience(&self) -> AudienceConfig {
        AudienceConfig {
            users: self.users,
            rooms: 20,
            duration: self.duration,
            churn: self.users as f64 / 100.0,
            storm_at: Some(self.duration / 2),
            seed: self.seed,
            subject_prefix: "audience".into(),
            ..AudienceConfig::default()
        }
    }
}

mod secs {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

/// One check: what, whether it held, and the numbers behind it.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What is checked.
    pub name: String,
    /// Whether it held.
    pub passed: bool,
    /// The numbers, or what went wrong.
    pub detail: String,
}

/// A `/varz` counter the soak expects to have moved, and why.
#[derive(Debug, Clone, Serialize)]
pub struct CounterCheck {
    /// Its path in `/varz` (`budget_drops.broker`; an object's values are summed).
    pub counter: &'static str,
    /// Who should have moved it.
    pub moved_by: &'static str,
    /// Its value at the end.
    pub value: Option<u64>,
}

/// The counters each hostile class must move.
pub const EXPECTED_COUNTERS: [(&str, &str); 14] = [
    ("protocol_errors", "garbage senders"),
    (
        "handshake_timeouts",
        "slowloris: first text line, binary HELLO",
    ),
    ("control_line_timeouts", "slowloris: a later text line"),
    ("stale_connections", "slowloris payload, stuck subscribers"),
    ("over_budget_pauses", "PING floods that never read"),
    (
        "slow_consumers",
        "PING floods (closed after slow_consumer_grace)",
    ),
    ("stuck_consumers", "stuck subscribers"),
    ("budget_drops.connection", "stuck subscribers (max_pending)"),
    (
        "budget_drops.broker",
        "stuck subscribers together (max_queued_bytes)",
    ),
    ("queue_dropped_msgs", "stuck subscribers"),
    (
        "replays_refused.connection",
        "replay floods (max_replays_per_conn)",
    ),
    ("replays_refused.server", "replay floods (max_replays)"),
    (
        "connections_refused",
        "connection storms (connect_rate, max_connections)",
    ),
    (
        "closed_by_reason.io_error",
        "killed connections (reset mid-frame)",
    ),
];

/// Other counters shown in the report, not judged. (`drop_notices` counts notices written
/// to a socket: a subscriber that never reads never gets one.)
const SHOWN_COUNTERS: [&str; 16] = [
    "total_connections",
    "in_msgs",
    "out_msgs",
    "dropped_msgs",
    "drop_notices",
    "congested_consumers",
    "publisher_stalls",
    "publisher_stall_timeouts",
    "lossless_fallbacks",
    "lossless_holds",
    "replays_deferred",
    "dedupe_ids",
    "subscriptions_refused",
    "closed_by_reason.client_closed",
    "closed_by_reason.protocol_error",
    "closed_by_reason.handshake_timeout",
];

/// A point of the run's timeline.
#[derive(Debug, Clone, Serialize)]
pub struct TimelinePoint {
    /// Seconds since the start.
    pub at_s: u64,
    /// `ternd`'s memory then.
    pub vm_rss_kib: u64,
    pub rss_anon_kib: u64,
    pub rss_file_kib: u64,
    /// Open connections, messages in and out so far (from `/varz`; absent if it did not
    /// answer).
    pub connections: Option<u64>,
    pub in_msgs: Option<u64>,
    pub out_msgs: Option<u64>,
}

/// Everything a soak found.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    /// The run.
    pub config: SoakConfig,
    /// `ternd`'s flags.
    pub args: Vec<String>,
    /// The bound and where it comes from.
    pub bound: Option<MemoryBound>,
    /// The flatness judgement.
    pub flatness: Option<Flatness>,
    /// The largest `VmRSS` seen, KiB.
    pub max_rss_kib: u64,
    /// The timeline (one point per `timeline_every`).
    pub timeline: Vec<TimelinePoint>,
    /// Every memory sample.
    pub samples: Vec<MemorySample>,
    /// The counters expected to move.
    pub counters: Vec<CounterCheck>,
    /// The other counters, at the end.
    pub other_counters: Vec<(String, Option<u64>)>,
    /// The acknowledged publishers and the subscribers.
    pub publishers: Vec<PublisherLog>,
    pub subscribers: Vec<SubscriberLog>,
    /// The audience scenario's result (without its per-user detail).
    pub audience: Option<AudienceSummary>,
    /// What each hostile class did.
    pub hostile: Vec<ClassReport>,
    /// What the chaos proxy did.
    pub proxy: Option<ProxyStats>,
    /// Every check.
    pub checks: Vec<Check>,
    /// `ternd`'s exit status after SIGTERM.
    pub exit: Option<String>,
    /// Wall time of the whole run, seconds.
    pub wall_s: f64,
}

impl SoakReport {
    /// A report with nothing in it yet.
    fn empty(config: &SoakConfig) -> SoakReport {
        SoakReport {
            config: config.clone(),
            args: config.settings.args(),
            bound: None,
            flatness: None,
            max_rss_kib: 0,
            timeline: Vec::new(),
            samples: Vec::new(),
            counters: Vec::new(),
            other_counters: Vec::new(),
            publishers: Vec::new(),
            subscribers: Vec::new(),
            audience: None,
            hostile: Vec::new(),
            proxy: None,
            checks: Vec::new(),
            exit: None,
            wall_s: 0.0,
        }
    }

    /// True when every check held.
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }

    /// The checks that failed.
    pub fn failures(&self) -> Vec<&Check> {
        self.checks.iter().filter(|c| !c.passed).collect()
    }
}

/// The audience figures the soak reports (as in [`AudienceResult`]).
#[derive(Debug, Clone, Serialize)]
pub struct AudienceSummary {
    pub users: usize,
    pub published: u64,
    pub delivered: u64,
    pub owed: u64,
    pub missed: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub dropped_by_broker: u64,
    pub disconnects: u64,
    pub reconnects: u64,
    pub connect_failures: u64,
    pub problems: Vec<String>,
}

impl AudienceSummary {
    fn of(r: &AudienceResult) -> AudienceSummary {
        AudienceSummary {
            users: r.config.users,
            published: r.published,
            delivered: r.delivered,
            owed: r.tally.expected,
            missed: r.tally.missed,
            duplicated: r.duplicated,
            reordered: r.reordered,
            dropped_by_broker: r.dropped_by_broker,
            disconnects: r.disconnects,
            reconnects: r.reconnects,
            connect_failures: r.connect_failures,
            problems: r.problems.clone(),
        }
    }
}

/// Runs a soak; `progress` hears what phase it is in. Never fails: a broker that does not
/// start is a failed check.
pub fn run(config: &SoakConfig, progress: &mut dyn FnMut(&str)) -> SoakReport {
    let origin = Instant::now();
    let mut report = SoakReport::empty(config);
    let _ = crate::scenario::conns::raise_fd_limit();
    let mut env = match Env::start(config, origin, progress) {
        Ok(env) => env,
        Err(check) => {
            report.checks.push(check);
            return report;
        }
    };
    let load = run_load(config, &mut env, origin, progress);

    progress("checking");
    check_traffic(
        &mut report,
        load.publishers,
        load.subscribers,
        load.audience,
    );
    check_counters(&mut report, env.monitor);
    report
        .checks
        .push(check_storm_clients(&load.storm_clients, env.target.binary));
    env.proxy.stop();
    report.proxy = Some(env.proxy.stats());
    drop(load.storm_clients);
    report
        .checks
        .push(check_responsive(env.target, env.monitor));
    check_memory(
        &mut report,
        config,
        env.sampler,
        &env.bound,
        load.active_end_ms,
    );
    report.timeline = timeline(&report.samples, &load.varz, config.duration);
    report.bound = Some(env.bound);
    report.hostile = load.hostile;

    progress("SIGTERM");
    let status = env.broker.terminate(Duration::from_secs(30));
    report.exit = Some(match status {
        Some(s) => s.to_string(),
        None => "still running 30 s after SIGTERM (killed)".into(),
    });
    report.checks.push(Check {
        name: "ternd exits 0 on SIGTERM".into(),
        passed: status.is_some_and(|s| s.success()),
        detail: report.exit.clone().unwrap_or_default(),
    });
    report.wall_s = origin.elapsed().as_secs_f64();
    report
}

/// What the load runs against: the broker, its addresses, the memory it started with and
/// may reach, the sampler, the chaos proxy.
struct Env {
    broker: BrokerProcess,
    target: Target,
    monitor: SocketAddr,
    bound: MemoryBound,
    sampler: Sampler,
    proxy: ChaosProxy,
}

impl Env {
    /// Starts `ternd`, fills its logs once, measures the baseline, starts sampling and
    /// the proxy. A step that fails is the check it returns.
    fn start(
        config: &SoakConfig,
        origin: Instant,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Env, Check> {
        progress("starting ternd");
        let broker = BrokerProcess::ternd_with(
            &config.ternd,
            config.settings.workers,
            &config.settings.args(),
            true,
            config.log.as_deref(),
        )
        .map_err(|e| failed("ternd starts", e.to_string()))?;
        let (Some(binary), Some(monitor)) = (broker.binary_addr, broker.monitor_addr) else {
            return Err(failed(
                "ternd starts",
                "no binary or monitoring address".into(),
            ));
        };
        let target = Target {
            text: broker.addr,
            binary,
        };
        progress("filling the ring logs once");
        fill_logs(target.text, &config.settings).map_err(|e| failed("the ring logs fill", e))?;
        let pid = broker.pid();
        let baseline = memory::read_status(pid, 0).map_or(0, |s| s.vm_rss_kib);
        let proxy = ChaosProxy::start(binary)
            .map_err(|e| failed("the chaos proxy starts", e.to_string()))?;
        Ok(Env {
            bound: config.settings.bound(baseline),
            sampler: Sampler::start(pid, origin, Duration::from_secs(1)),
            broker,
            target,
            monitor,
            proxy,
        })
    }
}

/// What the load left to check.
struct LoadOutcome {
    publishers: Vec<PublisherLog>,
    subscribers: Vec<(SubscriberLog, acked::Ledger)>,
    audience: Option<AudienceResult>,
    storm_clients: Vec<(tern_client::Client, tern_client::Subscription)>,
    hostile: Vec<ClassReport>,
    /// `/varz` every 10 s: (seconds since the start, the answer).
    varz: Vec<(u64, serde_json::Value)>,
    /// When the load stopped, ms since the start.
    active_end_ms: u64,
}

/// The hostile classes, in report order.
const CLASSES: [&str; 7] = [
    "garbage",
    "slowloris",
    "ping_flood",
    "stuck",
    "replay_flood",
    "storm",
    "killers",
];

/// Runs every client for `config.duration` (the proxy's chaos on this thread), stops
/// them, and waits for the subscribers to catch up.
fn run_load(
    config: &SoakConfig,
    env: &mut Env,
    origin: Instant,
    progress: &mut dyn FnMut(&str),
) -> LoadOutcome {
    progress("starting clients");
    let via_proxy = env.proxy.addr();
    let target = env.target;
    let stop = AtomicBool::new(false);
    let done = acked::Final::new();
    let stats: Vec<ClassStats> = CLASSES.iter().map(|_| ClassStats::default()).collect();
    let readies: Vec<AtomicBool> = (0..config.acked_subscribers + config.resuming_subscribers)
        .map(|_| AtomicBool::new(false))
        .collect();
    let storm_clients = connect_storm_clients(via_proxy, config.storm_clients);
    let mut out = LoadOutcome {
        publishers: Vec::new(),
        subscribers: Vec::new(),
        audience: None,
        storm_clients: Vec::new(),
        hostile: Vec::new(),
        varz: Vec::new(),
        active_end_ms: 0,
    };
    thread::scope(|s| {
        let (stop, done) = (&stop, &done);
        // Subscribers first: publishing starts once each has its subscription.
        let subscribers: Vec<_> = readies
            .iter()
            .enumerate()
            .map(|(i, ready)| {
                let restart = (i >= config.acked_subscribers).then_some(config.restart_every);
                let name = match restart {
                    Some(_) => format!("resuming-subscriber-{i}"),
                    None => format!("subscriber-{i}"),
                };
                s.spawn(move || {
                    let drain = Duration::from_secs(90);
                    acked::subscriber(via_proxy, &name, restart, ready, done, drain)
                })
            })
            .collect();
        let ready_by = Instant::now() + Duration::from_secs(30);
        while !readies.iter().all(|r| r.load(Ordering::Acquire)) && Instant::now() < ready_by {
            thread::sleep(Duration::from_millis(20));
        }
        let audience_config = config.audience();
        let audience = s.spawn(move || {
            let driver = NatsDriver::new(target.text, "soak-audience");
            audience::run(&driver, &audience_config)
        });
        let publishers: Vec<_> = (0..config.acked_publishers)
            .map(|p| s.spawn(move || acked::publisher(via_proxy, p, config.acked_rate, 2, stop)))
            .collect();
        let bulk = s.spawn(move || bulk(target.text, config.bulk_rate, stop));
        // The audience checks the broker is there with one connection first: let it, and
        // its users' first joins, start before the storms take the connect budget.
        thread::sleep(Duration::from_secs(2));
        let hostile = spawn_hostile(s, config, target, stop, &stats);

        progress("running");
        let (varz, end_ms) = chaos(config, &mut env.proxy, env.monitor, origin, progress);
        out.varz = varz;
        out.active_end_ms = end_ms;

        progress("stopping the load; waiting for the subscribers to catch up");
        stop.store(true, Ordering::Release);
        for t in hostile {
            let _ = t.join();
        }
        let _ = bulk.join();
        out.publishers = publishers
            .into_iter()
            .map(|p| {
                p.join().unwrap_or_else(|_| PublisherLog {
                    problems: vec!["a publisher thread panicked".into()],
                    ..PublisherLog::default()
                })
            })
            .collect();
        let _ = done.set(acked::acked_by_key(&out.publishers));
        out.subscribers = subscribers
            .into_iter()
            .map(|sub| {
                sub.join().unwrap_or_else(|_| {
                    let log = SubscriberLog {
                        problems: vec!["a subscriber thread panicked".into()],
                        ..SubscriberLog::default()
                    };
                    (log, acked::Ledger::default())
                })
            })
            .collect();
        out.audience = audience.join().ok();
    });
    out.storm_clients = storm_clients;
    out.hostile = CLASSES
        .iter()
        .zip(&stats)
        .map(|(name, st)| st.snapshot(name))
        .collect();
    out
}

/// Starts every hostile class on threads of `s`; they run until `stop`.
fn spawn_hostile<'scope>(
    s: &'scope thread::Scope<'scope, '_>,
    config: &'scope SoakConfig,
    target: Target,
    stop: &'scope AtomicBool,
    stats: &'scope [ClassStats],
) -> Vec<thread::ScopedJoinHandle<'scope, ()>> {
    let h = &config.hostile;
    let class = |name: &str| &stats[CLASSES.iter().position(|c| *c == name).unwrap_or(0)];
    let ms = Duration::from_millis;
    let mut threads = Vec::new();
    for g in 0..h.garbage {
        let st = class("garbage");
        let seed = config.seed + g as u64;
        threads.push(s.spawn(move || hostile::garbage(target, stop, st, seed)));
    }
    let st = class("slowloris");
    let tick = ms(h.slowloris_tick_ms);
    threads.push(s.spawn(move || {
        hostile::slowloris(target, stop, st, h.slowloris_per_kind, tick);
    }));
    let st = class("ping_flood");
    threads.push(s.spawn(move || hostile::ping_flood(target, stop, st, h.ping_floods)));
    let st = class("stuck");
    let lifetime = ms(h.stuck_lifetime_ms);
    threads.push(s.spawn(move || {
        hostile::stuck(target, stop, st, h.stuck, &STUCK_FILTERS, lifetime);
    }));
    for r in 0..h.replay_flooders {
        let st = class("replay_flood");
        let round = ms(h.replay_round_ms);
        let reads = r % 2 == 0;
        threads.push(s.spawn(move || {
            hostile::replay_flood(target, stop, st, r, h.replay_requests, reads, round);
        }));
    }
    let st = class("storm");
    let every = ms(h.storm_every_ms);
    threads.push(s.spawn(move || hostile::storm(target, stop, st, h.storm_burst, every)));
    let st = class("killers");
    let every = ms(h.kill_every_ms);
    threads.push(s.spawn(move || hostile::killers(target, stop, st, every)));
    threads
}

/// The run itself, on the calling thread: the proxy's mid-frame kills and storms, and
/// `/varz` every 10 s for the timeline, until `config.duration` has passed. Returns the
/// `/varz` readings and when it ended (ms since `origin`).
fn chaos(
    config: &SoakConfig,
    proxy: &mut ChaosProxy,
    monitor_addr: SocketAddr,
    origin: Instant,
    progress: &mut dyn FnMut(&str),
) -> (Vec<(u64, serde_json::Value)>, u64) {
    let mut varz = Vec::new();
    let start = Instant::now();
    let end = start + config.duration;
    let mut rng = Rng::new(config.seed, 7);
    let mut next_kill = start + config.proxy_kill_every;
    let mut next_storm = start + config.proxy_storm_every;
    let mut next_varz = start;
    let mut next_note = start + Duration::from_secs(60);
    while Instant::now() < end {
        let now = Instant::now();
        if now >= next_kill {
            proxy.kill_one(rng.next_u64());
            next_kill = now + config.proxy_kill_every;
        }
        if now >= next_storm {
            proxy.kill_all();
            next_storm = now + config.proxy_storm_every;
        }
        if now >= next_varz {
            if let Ok(v) = monitor::get_json(monitor_addr, "/varz", Duration::from_secs(5)) {
                varz.push((origin.elapsed().as_secs(), v));
            }
            next_varz = now + Duration::from_secs(10);
        }
        if now >= next_note {
            next_note = now + Duration::from_secs(60);
            progress(&format!(
                "{}s of {}s",
                now.duration_since(start).as_secs(),
                config.duration.as_secs()
            ));
        }
        thread::sleep(Duration::from_millis(50));
    }
    (varz, origin.elapsed().as_millis() as u64)
}

/// The acknowledged traffic and the audience, judged.
fn check_traffic(
    report: &mut SoakReport,
    publishers: Vec<PublisherLog>,
    subscribers: Vec<(SubscriberLog, acked::Ledger)>,
    audience: Option<AudienceResult>,
) {
    let acked = acked::acked_by_key(&publishers);
    for (mut log, ledger) in subscribers {
        log.verdict = acked::verify(&acked, &ledger);
        report.subscribers.push(log);
    }
    report.publishers = publishers;
    report
        .checks
        .push(check_acked(&report.publishers, &report.subscribers));
    match &audience {
        Some(r) => {
            report.audience = Some(AudienceSummary::of(r));
            report.checks.push(check_audience(r));
        }
        None => report.checks.push(failed(
            "audience: fast text subscribers get every owed message, no $TERN.DROPPED",
            "the audience thread panicked".into(),
        )),
    }
}

/// `/varz` at the end: every expected counter above 0.
fn check_counters(report: &mut SoakReport, monitor_addr: SocketAddr) {
    let name = "every limit's counter moved";
    let v = match monitor::get_json(monitor_addr, "/varz", Duration::from_secs(10)) {
        Ok(v) => v,
        Err(e) => {
            report.checks.push(failed(name, format!("/varz: {e}")));
            return;
        }
    };
    report.counters = EXPECTED_COUNTERS
        .iter()
        .map(|&(counter, moved_by)| CounterCheck {
            counter,
            moved_by,
            value: monitor::counter(&v, counter),
        })
        .collect();
    report.other_counters = SHOWN_COUNTERS
        .iter()
        .map(|&c| (c.to_string(), monitor::counter(&v, c)))
        .collect();
    let still: Vec<String> = report
        .counters
        .iter()
        .filter(|c| c.value.unwrap_or(0) == 0)
        .map(|c| format!("{} ({})", c.counter, c.moved_by))
        .collect();
    report.checks.push(Check {
        name: name.into(),
        passed: still.is_empty(),
        detail: if still.is_empty() {
            format!("{} counters above 0", report.counters.len())
        } else {
            format!("still 0: {}", still.join(", "))
        },
    });
}

/// Every sample under the bound, and flat after warm-up up to `active_end_ms`.
fn check_memory(
    report: &mut SoakReport,
    config: &SoakConfig,
    sampler: Sampler,
    bound: &MemoryBound,
    active_end_ms: u64,
) {
    let samples = sampler.finish();
    let baseline = bound.terms.first().map_or(0, |t| t.kib);
    report.max_rss_kib = samples.iter().map(|s| s.vm_rss_kib).max().unwrap_or(0);
    report.checks.push(Check {
        name: "ternd's RSS stays within the bound".into(),
        passed: report.max_rss_kib > 0 && report.max_rss_kib <= bound.total_kib,
        detail: format!(
            "max VmRSS {} MiB, bound {} MiB (baseline {} MiB)",
            report.max_rss_kib / 1024,
            bound.total_kib / 1024,
            baseline / 1024
        ),
    });
    let flat = memory::flatness(
        &samples,
        config.warmup.as_millis() as u64,
        active_end_ms,
        config.growth_allowance_pct,
    );
    report.checks.push(Check {
        name: "ternd's RSS is flat after warm-up".into(),
        passed: flat.flat,
        detail: format!(
            "max VmRSS {} MiB in {}-{}s, {} MiB in {}-{}s (allowed {} MiB); slope {:.0} KiB/min",
            flat.first_half_max_kib / 1024,
            flat.first_half_from_ms / 1000,
            flat.second_half_from_ms / 1000,
            flat.second_half_max_kib / 1024,
            flat.second_half_from_ms / 1000,
            flat.second_half_to_ms / 1000,
            flat.allowed_kib / 1024,
            flat.slope_kib_per_min
        ),
    });
    report.flatness = Some(flat);
    report.samples = samples;
}

/// A read or write on a socket with a timeout that only means "nothing yet": try again.
pub(crate) fn nothing_yet(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock
            | std::io::ErrorKind::TimedOut
            | std::io::ErrorKind::Interrupted
    )
}

fn failed(name: &str, detail: String) -> Check {
    Check {
        name: name.into(),
        passed: false,
        detail,
    }
}

/// Publishes 1 KiB messages on stored subjects until each shard's ring has wrapped once,
/// so that the logs' pages are in the baseline and a whole-log replay has a whole log.
fn fill_logs(text: SocketAddr, settings: &BrokerSettings) -> Result<(), String> {
    let driver = NatsDriver::new(text, "soak-fill");
    let mut c = driver.connect().map_err(|e| e.to_string())?;
    let total = settings.log_size * settings.workers as u64 * 5 / 4;
    let payload = vec![b'f'; 1024];
    for i in 0..total / 1024 {
        c.publish(&format!("soak.fill.{}", i % 64), &payload)
            .map_err(|e| e.to_string())?;
    }
    c.sync(Duration::from_secs(60)).map_err(|e| e.to_string())
}

/// The bulk publisher: `rate` messages a second of 200 bytes over `soak.bulk.0..3` (not
/// stored), on the text port, reconnecting when it must.
fn bulk(text: SocketAddr, rate: u32, stop: &AtomicBool) {
    let driver = NatsDriver::new(text, "soak-bulk");
    let payload = vec![b'b'; 200];
    let tick = Duration::from_millis(10);
    let per_tick = (rate as u64 * 10 / 1000).max(1);
    let mut conn: Option<Box<dyn Connection>> = None;
    let mut n = 0u64;
    let mut next = Instant::now();
    while !stop.load(Ordering::Acquire) {
        let Some(c) = conn.as_mut() else {
            conn = driver.connect().ok();
            if conn.is_none() {
                thread::sleep(Duration::from_millis(200));
            }
            continue;
        };
        let mut ok = true;
        for _ in 0..per_tick {
            n += 1;
            ok &= c.publish(&format!("soak.bulk.{}", n % 4), &payload).is_ok();
        }
        ok &= c.flush().is_ok();
        if n % 1000 < per_tick {
            // Answer the broker's pings now and then.
            ok &= c.receive(Duration::from_millis(1), &mut |_| {}).is_ok();
        }
        if !ok {
            conn = None;
        }
        next += tick;
        let now = Instant::now();
        if next > now {
            thread::sleep(next - now);
        } else if now - next > Duration::from_secs(1) {
            next = now;
        }
    }
}

/// Idle clients behind the proxy, each subscribed to `soak.storm.>`.
fn connect_storm_clients(
    via: SocketAddr,
    n: usize,
) -> Vec<(tern_client::Client, tern_client::Subscription)> {
    (0..n)
        .filter_map(|i| {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match acked::client(via, &format!("soak-storm-{i}")).and_then(|c| {
                    let sub = c.subscribe("soak.storm.>")?;
                    c.flush(Duration::from_secs(10))?;
                    Ok((c, sub))
                }) {
                    Ok(pair) => return Some(pair),
                    Err(_) if Instant::now() < deadline => {
                        thread::sleep(Duration::from_millis(100))
                    }
                    Err(_) => return None,
                }
            }
        })
        .collect()
}

fn check_acked(publishers: &[PublisherLog], subscribers: &[SubscriberLog]) -> Check {
    let name = "acknowledged messages arrive exactly once, in order per publisher and subject";
    let acked: u64 = publishers.iter().map(|p| p.acked_count).sum();
    let mut problems: Vec<String> = publishers
        .iter()
        .flat_map(|p| p.problems.iter().take(3).cloned())
        .collect();
    for s in subscribers {
        let v = &s.verdict;
        if !v.clean() {
            problems.push(format!(
                "{}: {} missing, {} duplicated, {} reordered of {} acknowledged (e.g. {})",
                s.name,
                v.missing,
                v.duplicated,
                v.reordered,
                v.acked,
                v.examples.join("; ")
            ));
        }
        problems.extend(s.problems.iter().take(3).cloned());
    }
    if acked == 0 {
        problems.push("nothing was acknowledged".into());
    }
    if subscribers.is_empty() {
        problems.push("no subscriber ran".into());
    }
    Check {
        name: name.into(),
        passed: problems.is_empty(),
        detail: if problems.is_empty() {
            format!(
                "{acked} acknowledged ({} retries, {} duplicate acks); {} subscribers got each \
                 once ({} reconnects, {} restarts from their own token)",
                publishers.iter().map(|p| p.retries).sum::<u64>(),
                publishers.iter().map(|p| p.duplicate_acks).sum::<u64>(),
                subscribers.len(),
                subscribers.iter().map(|s| s.reconnects).sum::<u64>(),
                subscribers.iter().map(|s| s.restarts).sum::<u64>(),
            )
        } else {
            problems.join(" | ")
        },
    }
}

fn check_audience(r: &AudienceResult) -> Check {
    Check {
        name: "audience: fast text subscribers get every owed message, no $TERN.DROPPED".into(),
        passed: r.problems.is_empty() && r.published > 0 && r.tally.expected > 0,
        detail: if r.problems.is_empty() {
            format!(
                "{} users, {} published, {} owed deliveries, 0 missed, 0 duplicated, 0 dropped \
                 ({} reconnects, {} connect retries)",
                r.config.users, r.published, r.tally.expected, r.reconnects, r.connect_failures
            )
        } else {
            r.problems.join(" | ")
        },
    }
}

/// Every idle client behind the proxy is connected again and still subscribed: a message
/// published directly reaches each, within 30 s. A client whose connection drops once more
/// during the check (a late cut, a ping missed on a loaded machine) has until then to come
/// back: it is sent the message again each round until it has it, and the detail counts
/// such drops, so that one is seen without failing a client that did come back.
fn check_storm_clients(
    clients: &[(tern_client::Client, tern_client::Subscription)],
    binary: SocketAddr,
) -> Check {
    let name = "tern-clients are back after the storms (connected, resubscribed)";
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut bad = Vec::new();
    let publisher = match acked::client(binary, "soak-storm-check") {
        Ok(p) => Some(p),
        Err(e) => {
            bad.push(format!("publish: {e}"));
            None
        }
    };
    // Per client: its last error while not back yet; `None` once it got the message.
    let mut waiting: Vec<Option<String>> = vec![Some("not checked".into()); clients.len()];
    let mut dropped_during_check = 0;
    while let Some(publisher) = &publisher {
        let missing: Vec<usize> = (0..clients.len())
            .filter(|&i| waiting[i].is_some())
            .collect();
        if missing.is_empty() || Instant::now() >= deadline {
            break;
        }
        // Each one still waiting: connected, and its subscription confirmed by a flush.
        for &i in &missing {
            let c = &clients[i].0;
            while !c.is_connected() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(50));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if let Err(e) = c.flush(left.min(Duration::from_secs(10))) {
                dropped_during_check += 1;
                waiting[i] = Some(format!("flush: {e}"));
            }
        }
        if let Err(e) = publisher.publish_acked("soak.storm.check", "back?") {
            waiting
                .iter_mut()
                .flatten()
                .for_each(|w| *w = format!("publish: {e}"));
            thread::sleep(Duration::from_millis(200));
            continue;
        }
        for &i in &missing {
            let left = deadline.saturating_duration_since(Instant::now());
            match clients[i].1.recv_timeout(left.min(Duration::from_secs(5))) {
                Ok(m) if m.subject == "soak.storm.check" => waiting[i] = None,
                Ok(m) => waiting[i] = Some(format!("got {}", m.subject)),
                Err(e) => waiting[i] = Some(e.to_string()),
            }
        }
    }
    for (i, w) in waiting.iter().enumerate() {
        if let Some(w) = w {
            bad.push(format!("client {i}: {w}"));
        }
    }
    if clients.is_empty() {
        bad.push("no idle client connected at the start".into());
    }
    Check {
        name: name.into(),
        passed: bad.is_empty(),
        detail: if bad.is_empty() {
            format!(
                "{} clients each got the check message ({dropped_during_check} dropped during \
                 the check and came back)",
                clients.len()
            )
        } else {
            bad.join(" | ")
        },
    }
}

/// A fresh client's publish → deliver round trip on each port, and `/healthz`.
fn check_responsive(t: Target, monitor_addr: SocketAddr) -> Check {
    let name = "ternd is responsive at the end (round trips on both ports, /healthz 200)";
    let mut bad = Vec::new();
    // Binary, through tern-client.
    let binary = (|| -> Result<(), String> {
        let c = acked::client(t.binary, "soak-final").map_err(|e| e.to_string())?;
        let sub = c
            .subscribe("soak.final.binary")
            .map_err(|e| e.to_string())?;
        c.flush(Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        c.publish_acked("soak.final.binary", "ping")
            .map_err(|e| e.to_string())?;
        let m = sub
            .recv_timeout(Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        c.close();
        (&m.payload[..] == b"ping")
            .then_some(())
            .ok_or_else(|| "wrong payload".into())
    })();
    if let Err(e) = binary {
        bad.push(format!("binary round trip: {e}"));
    }
    // Text.
    let text = (|| -> Result<(), String> {
        let driver = NatsDriver::new(t.text, "soak-final");
        let mut c = driver.connect().map_err(|e| e.to_string())?;
        c.subscribe("soak.final.text", None)
            .map_err(|e| e.to_string())?;
        c.sync(Duration::from_secs(10)).map_err(|e| e.to_string())?;
        c.publish("soak.final.text", b"ping")
            .map_err(|e| e.to_string())?;
        c.flush().map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = false;
        while !got && Instant::now() < deadline {
            c.receive(Duration::from_millis(100), &mut |p| got |= p == b"ping")
                .map_err(|e| e.to_string())?;
        }
        got.then_some(())
            .ok_or_else(|| "no delivery within 10 s".into())
    })();
    if let Err(e) = text {
        bad.push(format!("text round trip: {e}"));
    }
    match monitor::get(monitor_addr, "/healthz", Duration::from_secs(10)) {
        Ok((200, _)) => {}
        Ok((status, body)) => bad.push(format!("/healthz {status}: {body}")),
        Err(e) => bad.push(format!("/healthz: {e}")),
    }
    Check {
        name: name.into(),
        passed: bad.is_empty(),
        detail: if bad.is_empty() {
            "binary and text round trips delivered; /healthz 200".into()
        } else {
            bad.join(" | ")
        },
    }
}

/// One timeline point per step: every 30 s of a long run, every 5 s of a short one.
fn timeline(
    samples: &[MemorySample],
    varz: &[(u64, serde_json::Value)],
    duration: Duration,
) -> Vec<TimelinePoint> {
    let step = if duration >= Duration::from_secs(300) {
        30_000
    } else {
        5_000
    };
    let mut points = Vec::new();
    let mut next = 0u64;
    for s in samples {
        if s.at_ms < next {
            continue;
        }
        next = s.at_ms - s.at_ms % step + step;
        let at_s = s.at_ms / 1000;
        // The /varz reading closest before this sample.
        let v = varz.iter().rev().find(|(t, _)| *t <= at_s).map(|(_, v)| v);
        points.push(TimelinePoint {
            at_s,
            vm_rss_kib: s.vm_rss_kib,
            rss_anon_kib: s.rss_anon_kib,
            rss_file_kib: s.rss_file_kib,
            connections: v.and_then(|v| monitor::counter(v, "connections")),
            in_msgs: v.and_then(|v| monitor::counter(v, "in_msgs")),
            out_msgs: v.and_then(|v| monitor::counter(v, "out_msgs")),
        });
    }
    points
}

/// The report as text: settings and bound, the RSS timeline, the counters, the traffic,
/// and every check, failures spelled out.
pub fn render(r: &SoakReport) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let mib = |kib: u64| kib as f64 / 1024.0;
    let _ = writeln!(
        o,
        "soak: {}s of load against {} (wall {:.0}s)",
        r.config.duration.as_secs(),
        r.config.ternd.display(),
        r.wall_s
    );
    let _ = writeln!(o, "ternd flags: {}", r.args.join(" "));
    if let Some(b) = &r.bound {
        let _ = writeln!(
            o,
            "\nmemory bound, from the settings: {:.1} MiB",
            mib(b.total_kib)
        );
        for t in &b.terms {
            let _ = writeln!(o, "  {:>8.1} MiB  {}", mib(t.kib), t.what);
        }
    }
    let _ = writeln!(
        o,
        "\nRSS over time (MiB; connections, msgs in/out from /varz):"
    );
    let _ = writeln!(
        o,
        "  {:>6}  {:>7}  {:>7}  {:>7}  {:>6}  {:>10}  {:>10}",
        "t (s)", "VmRSS", "anon", "file", "conns", "in_msgs", "out_msgs"
    );
    let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    for p in &r.timeline {
        let _ = writeln!(
            o,
            "  {:>6}  {:>7.1}  {:>7.1}  {:>7.1}  {:>6}  {:>10}  {:>10}",
            p.at_s,
            mib(p.vm_rss_kib),
            mib(p.rss_anon_kib),
            mib(p.rss_file_kib),
            opt(p.connections),
            opt(p.in_msgs),
            opt(p.out_msgs)
        );
    }
    let _ = writeln!(o, "  max VmRSS {:.1} MiB", mib(r.max_rss_kib));
    let _ = writeln!(
        o,
        "\ncounters each hostile class must move (/varz at the end):"
    );
    for c in &r.counters {
        let mark = if c.value.unwrap_or(0) > 0 {
            "ok  "
        } else {
            "ZERO"
        };
        let _ = writeln!(
            o,
            "  {mark} {:<28} {:>10}  {}",
            c.counter,
            opt(c.value),
            c.moved_by
        );
    }
    let _ = writeln!(o, "other counters:");
    for (name, v) in &r.other_counters {
        let _ = writeln!(o, "       {name:<28} {:>10}", opt(*v));
    }
    let _ = writeln!(
        o,
        "\nhostile clients (connections opened / could not open / seen closed by ternd):"
    );
    for h in &r.hostile {
        let _ = writeln!(
            o,
            "  {:<13} {:>7} {:>7} {:>7}",
            h.class, h.opened, h.connect_errors, h.closed_by_broker
        );
    }
    if let Some(p) = &r.proxy {
        let _ = writeln!(
            o,
            "chaos proxy: {} links, {} cut mid-frame ({} inside a chunk), {} storms cutting {}, \
             {} upstream failures",
            p.links,
            p.mid_frame_kills,
            p.cut_inside_a_chunk,
            p.storms,
            p.storm_kills,
            p.upstream_failures
        );
    }
    let _ = writeln!(o, "\nacknowledged traffic:");
    for p in &r.publishers {
        let _ = writeln!(
            o,
            "  publisher {}: {} acked, {} retries, {} duplicate acks, slowest ack {} ms",
            p.publisher, p.acked_count, p.retries, p.duplicate_acks, p.max_ack_ms
        );
    }
    for s in &r.subscribers {
        let v = &s.verdict;
        let _ = writeln!(
            o,
            "  {}: {} delivered of {} acked; missing {}, duplicated {}, reordered {}, \
             unacknowledged {}; {} reconnects, {} restarts",
            s.name,
            v.delivered,
            v.acked,
            v.missing,
            v.duplicated,
            v.reordered,
            v.unacknowledged,
            s.reconnects,
            s.restarts
        );
    }
    if let Some(a) = &r.audience {
        let _ = writeln!(
            o,
            "audience: {} users, {} published, {} delivered, {} owed, {} missed, {} duplicated, \
             {} reordered, {} dropped by the broker, {} disconnects, {} reconnects",
            a.users,
            a.published,
            a.delivered,
            a.owed,
            a.missed,
            a.duplicated,
            a.reordered,
            a.dropped_by_broker,
            a.disconnects,
            a.reconnects
        );
    }
    let _ = writeln!(o, "\nchecks:");
    for c in &r.checks {
        let _ = writeln!(
            o,
            "  {} {}\n       {}",
            if c.passed { "PASS" } else { "FAIL" },
            c.name,
            c.detail
        );
    }
    let failures = r.failures().len();
    let _ = writeln!(
        o,
        "\nsoak: {}",
        if r.passed() {
            "every check passed".to_string()
        } else {
            format!("{failures} check(s) FAILED")
        }
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_become_flags_and_a_bound_with_every_term() {
        let s = BrokerSettings::for_connections(300);
        let args = s.args();
        let flag = |f: &str| {
            let i = args
                .iter()
                .position(|a| a == f)
                .unwrap_or_else(|| panic!("{f}"));
            args[i + 1].clone()
        };
        assert_eq!(flag("--max-pending"), "128KiB");
        assert_eq!(flag("--max-queued-bytes"), "1024KiB");
        assert_eq!(flag("--max-connections"), "300");
        assert_eq!(flag("--auth-timeout"), "1000ms");
        assert_eq!(args.iter().filter(|a| *a == "--store").count(), 3);
        let b = s.bound(20 * 1024);
        assert_eq!(b.terms[0].kib, 20 * 1024, "the baseline comes first");
        assert_eq!(b.total_kib, b.terms.iter().map(|t| t.kib).sum::<u64>());
        // 300 connections of about 0.5 MiB each dominate: the bound is a few hundred MiB,
        // not gigabytes.
        assert!(
            b.total_kib > 150 * 1024 && b.total_kib < 400 * 1024,
            "{b:?}"
        );
    }

    #[test]
    fn every_expected_counter_is_distinct_and_short_runs_keep_every_class() {
        let mut names: Vec<_> = EXPECTED_COUNTERS.iter().map(|c| c.0).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), EXPECTED_COUNTERS.len());
        let c = SoakConfig::short("ternd".into());
        let h = &c.hostile;
        assert!(h.garbage > 0 && h.slowloris_per_kind > 0 && h.ping_floods > 0);
        assert!(h.stuck > 0 && h.replay_flooders >= 2 && h.storm_burst > 0);
        assert!(
            h.replay_flooders as u64 * c.settings.max_replays_per_conn > c.settings.max_replays,
            "replay floods must hit the broker-wide limit too"
        );
        assert!(
            h.storm_burst as u64 > c.settings.connect_burst,
            "storms must be refused"
        );
        assert!(
            h.replay_requests as u64 > c.settings.max_replays_per_conn,
            "replay floods must be refused"
        );
        assert!(c.warmup < c.duration);
    }
}
