//! Configuration: command-line flags, the optional TOML file, and their defaults.
//!
//! Owns: every setting and limit the broker has, its default, its flag and its config key,
//! and the rules for combining them (defaults < config file < flags).
//!
//! Never: touches a socket or starts a thread. The resolved [`Config`] is read once at start
//! and passed down; nothing else in the broker holds a magic number for a limit.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

/// Everything the broker runs with, resolved.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the text (NATS) port listens. Port 0 picks a free port.
    pub listen: SocketAddr,
    /// Where the binary (Tern) port listens; `None` when it is off. Port 0 picks a free
    /// port.
    pub binary_listen: Option<SocketAddr>,
    /// Number of workers (threads, shards). Default: one per core.
    pub workers: usize,
    /// Pin each worker to a core.
    pub pin: bool,
    /// Name reported in `INFO` as `server_name`.
    pub server_name: String,
    /// Where the monitoring HTTP listener binds (`/varz`, `/metrics`...); `None` when
    /// monitoring is off. Port 0 picks a free port.
    pub monitor: Option<SocketAddr>,
    /// Text clients that accept headers get a stored message's shard and sequence as
    /// `Tern-Shard`/`Tern-Seq` headers. Off by default: NATS applications expect a plain
    /// `PUB` to arrive without headers. Flag `--sequence-headers`.
    pub sequence_headers: bool,
    pub limits: Limits,
    pub queues: QueueConfig,
    pub store: StoreConfig,
    pub log: LogConfig,
    /// Admission control: connection, subscription and publish-rate limits, and load
    /// shedding. Flags `--max-connections`..., config section `[admission]`.
    pub admission: AdmissionConfig,
}

/// Subscriber queues: how much may wait for each subscription, and what happens to a
/// consumer that cannot keep up (`docs/operations.md`, "Slow consumers").
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// A subscription queue's default bound in messages. Flag `--sub-queue-messages`.
    pub sub_queue_messages: usize,
    /// A subscription queue's default bound in bytes (header blocks + payloads). Flag
    /// `--sub-queue-bytes`.
    pub sub_queue_bytes: usize,
    /// The largest bound in messages a binary `SUBSCRIBE` may ask for. Flag
    /// `--sub-queue-max-messages`.
    pub sub_queue_max_messages: usize,
    /// The largest bound in bytes a binary `SUBSCRIBE` may ask for. Flag
    /// `--sub-queue-max-bytes`.
    pub sub_queue_max_bytes: usize,
    /// Bytes of encoded deliveries a connection's outbound buffer takes before new
    /// deliveries wait in their subscription queues. Flag `--write-buffer`.
    pub write_buffer: usize,
    /// What happens to a consumer whose queues overflow. Flag `--slow-consumer`.
    pub slow_consumer: SlowConsumerPolicy,
    /// With `disconnect`: how long a consumer may stay over its high-water mark before it
    /// is closed. Flag `--slow-consumer-grace`.
    pub slow_consumer_grace: Duration,
    /// The priority of messages published on the text port without a `Tern-Priority`
    /// header. Flag `--text-priority`.
    pub text_priority: u8,
}

/// The `--slow-consumer` flag's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SlowConsumerPolicy {
    /// Keep the connection; its queues drop the lowest-priority, oldest messages.
    Drop,
    /// Also close a consumer that stays over its high-water mark for the grace time.
    Disconnect,
}

impl QueueConfig {
    pub const DEFAULT_SUB_QUEUE_MESSAGES: usize = 1024 * 1024;
    pub const DEFAULT_SUB_QUEUE_BYTES: usize = 64 * 1024 * 1024;
    pub const DEFAULT_SUB_QUEUE_MAX_MESSAGES: usize = 16 * 1024 * 1024;
    pub const DEFAULT_SUB_QUEUE_MAX_BYTES: usize = 1024 * 1024 * 1024;
    pub const DEFAULT_WRITE_BUFFER: usize = 256 * 1024;
    pub const DEFAULT_SLOW_CONSUMER_GRACE: Duration = Duration::from_secs(10);
    pub const DEFAULT_TEXT_PRIORITY: u8 = 0;
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            sub_queue_messages: Self::DEFAULT_SUB_QUEUE_MESSAGES,
            sub_queue_bytes: Self::DEFAULT_SUB_QUEUE_BYTES,
            sub_queue_max_messages: Self::DEFAULT_SUB_QUEUE_MAX_MESSAGES,
            sub_queue_max_bytes: Self::DEFAULT_SUB_QUEUE_MAX_BYTES,
            write_buffer: Self::DEFAULT_WRITE_BUFFER,
            slow_consumer: SlowConsumerPolicy::Drop,
            slow_consumer_grace: Self::DEFAULT_SLOW_CONSUMER_GRACE,
            text_priority: Self::DEFAULT_TEXT_PRIORITY,
        }
    }
}

/// What the shards keep in their ring logs (store and forward), and where.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Directory of the ring files, one per shard. Flag `--data-dir`.
    pub data_dir: PathBuf,
    /// Capacity of each shard's ring file, in bytes. Flag `--log-size`.
    pub log_size: u64,
    /// When appends are made durable. Flags `--fsync`, `--fsync-interval`.
    pub fsync: Fsync,
    /// Subject filters of the messages stored; empty: nothing is stored and no file is
    /// opened. Flags `--store` (repeatable), `--no-store`; config key `store` (a list).
    pub subjects: Vec<String>,
    /// How long a message id is remembered for idempotent publishing. Flag
    /// `--dedupe-window`.
    pub dedupe_window: Duration,
    /// Records a shard replays per loop turn for catch-ups, so one large catch-up does not
    /// stall live traffic. Flag `--replay-batch`.
    pub replay_batch: usize,
}

/// When the ring logs are synced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Never explicitly: the OS writes pages back. Survives a process crash, not power loss.
    Never,
    /// Every interval, from the worker's timer. Power loss loses at most about one interval.
    Interval(Duration),
    /// After every append. Survives power loss; slow.
    Always,
}

/// The `--fsync` flag's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FsyncMode {
    Never,
    Interval,
    Always,
}

impl StoreConfig {
    pub const DEFAULT_DATA_DIR: &'static str = "./data";
    pub const DEFAULT_LOG_SIZE: u64 = 64 * 1024 * 1024;
    pub const DEFAULT_FSYNC_INTERVAL: Duration = Duration::from_secs(1);
    pub const DEFAULT_DEDUPE_WINDOW: Duration = Duration::from_secs(120);
    pub const DEFAULT_REPLAY_BATCH: usize = 4096;

    /// True when nothing is stored.
    pub fn is_off(&self) -> bool {
        self.subjects.is_empty()
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            data_dir: PathBuf::from(Self::DEFAULT_DATA_DIR),
            log_size: Self::DEFAULT_LOG_SIZE,
            fsync: Fsync::Interval(Self::DEFAULT_FSYNC_INTERVAL),
            subjects: vec![">".to_string()],
            dedupe_window: Self::DEFAULT_DEDUPE_WINDOW,
            replay_batch: Self::DEFAULT_REPLAY_BATCH,
        }
    }
}

/// Limits, each with a default, a flag and a config key (the field name).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest control line a client may send, in bytes. Flag `--max-control-line`.
    pub max_control_line: usize,
    /// Largest payload (headers included) a client may publish. Flag `--max-payload`.
    pub max_payload: usize,
    /// Most bytes queued for one connection before it is a slow consumer and is closed.
    /// Flag `--max-pending`.
    pub max_pending: usize,
    /// How long a connection may stay silent before the server pings it.
    /// Flag `--ping-interval`.
    pub ping_interval: Duration,
    /// Unanswered pings after which the connection is closed as stale. Flag `--ping-max`.
    pub ping_max: u32,
    /// How long shutdown waits for queued messages to be written. Flag `--shutdown-timeout`.
    pub shutdown_timeout: Duration,
    /// Capacity of each worker's inbound queue, in batches. Flag `--worker-queue`.
    pub worker_queue: usize,
}

impl Limits {
    pub const DEFAULT_MAX_CONTROL_LINE: usize =
        tern_protocol::text::Limits::DEFAULT_MAX_CONTROL_LINE;
    pub const DEFAULT_MAX_PAYLOAD: usize = tern_protocol::text::Limits::DEFAULT_MAX_PAYLOAD;
    pub const DEFAULT_MAX_PENDING: usize = 64 * 1024 * 1024;
    pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(10);
    pub const DEFAULT_PING_MAX: u32 = 2;
    pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
    pub const DEFAULT_WORKER_QUEUE: usize = 4096;

    /// The parsing limits the text protocol decoder enforces.
    pub fn text(&self) -> tern_protocol::text::Limits {
        tern_protocol::text::Limits {
            max_control_line: self.max_control_line,
            max_payload: self.max_payload,
        }
    }

    /// The decoding limits of the binary port: the same `max_payload` as the text port,
    /// and the protocol's default room for everything else in a frame.
    pub fn binary(&self) -> tern_protocol::binary::Limits {
        tern_protocol::binary::Limits {
            max_payload: self.max_payload,
            ..tern_protocol::binary::Limits::default()
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_control_line: Self::DEFAULT_MAX_CONTROL_LINE,
            max_payload: Self::DEFAULT_MAX_PAYLOAD,
            max_pending: Self::DEFAULT_MAX_PENDING,
            ping_interval: Self::DEFAULT_PING_INTERVAL,
            ping_max: Self::DEFAULT_PING_MAX,
            shutdown_timeout: Self::DEFAULT_SHUTDOWN_TIMEOUT,
            worker_queue: Self::DEFAULT_WORKER_QUEUE,
        }
    }
}

/// How logs are written.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// A `tracing` filter (`info`, `debug`, `tern_broker=trace`...). `RUST_LOG` overrides.
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 4222)),
            binary_listen: Some(DEFAULT_BINARY_LISTEN),
            workers: default_workers(),
            pin: true,
            server_name: "ternd".to_string(),
            monitor: Some(DEFAULT_MONITOR),
            sequence_headers: false,
            limits: Limits::default(),
            queues: QueueConfig::default(),
            store: StoreConfig::default(),
            log: LogConfig {
                level: "info".to_string(),
                format: LogFormat::Text,
            },
            admission: AdmissionConfig::default(),
        }
    }
}

/// The binary port's default address.
pub const DEFAULT_BINARY_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 4224);

/// The monitoring listener's default address.
pub const DEFAULT_MONITOR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8222);

fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Admission control: the limits that refuse work early and clearly, each with a default,
/// a flag and a key of the config file's `[admission]` section (the field name). A limit of
/// 0 is off. `docs/operations.md` says what a client sees when it hits each one.
#[derive(Debug, Clone, PartialEq)]
pub struct AdmissionConfig {
    /// Open client connections, both ports together. Flag `--max-connections`.
    pub max_connections: usize,
    /// Open client connections from one IP address. Flag `--max-connections-per-ip`.
    pub max_connections_per_ip: usize,
    /// New connections accepted per second, both ports and all addresses together: a
    /// token bucket refilled at this rate. Flag `--connect-rate`.
    pub connect_rate: u64,
    /// The connect bucket's capacity: how many connections may arrive at once after a
    /// quiet spell. Flag `--connect-burst`; default twice `connect_rate`.
    pub connect_burst: u64,
    /// Subscriptions one connection may hold. Flag `--max-subscriptions`.
    pub max_subscriptions: usize,
    /// Publish rate of one connection, whatever the subject. Flags `--publish-msgs-per-sec`,
    /// `--publish-msgs-burst`, `--publish-bytes-per-sec`, `--publish-bytes-burst`.
    pub publish: RateLimit,
    /// Publish rates per subject pattern, each enforced per connection (config file only:
    /// `[[admission.subject_rate]]`).
    pub subject_rates: Vec<SubjectRate>,
    /// What happens to a publisher over a rate. Flag `--rate-action`.
    pub rate_action: RateAction,
    /// A publish is shed when its owner shard's inbound queue holds more batches than this
    /// (and its priority is below `shed_below_priority`). Flag `--shed-queue-depth`;
    /// default three quarters of `worker_queue`.
    pub shed_queue_depth: usize,
    /// Publishes with a priority below this are shed under overload; 0 sheds nothing, 8
    /// sheds every priority. Flag `--shed-below-priority`.
    pub shed_below_priority: u8,
}

/// A publish rate: messages and bytes per second, each a token bucket with its own burst.
/// A rate of 0 is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimit {
    pub msgs_per_sec: u64,
    /// Messages the bucket holds: how many may go at once after a quiet spell.
    pub msgs_burst: u64,
    pub bytes_per_sec: u64,
    /// Bytes (header block + payload) the bucket holds.
    pub bytes_burst: u64,
}

impl RateLimit {
    /// True when neither messages nor bytes are limited.
    pub fn is_off(&self) -> bool {
        self.msgs_per_sec == 0 && self.bytes_per_sec == 0
    }

    /// A limit from its rates and optional bursts; a burst not given is one second's
    /// worth of its rate.
    fn new(
        msgs_per_sec: u64,
        msgs_burst: Option<u64>,
        bytes_per_sec: u64,
        bytes_burst: Option<u64>,
    ) -> RateLimit {
        RateLimit {
            msgs_per_sec,
            msgs_burst: msgs_burst.unwrap_or(msgs_per_sec),
            bytes_per_sec,
            bytes_burst: bytes_burst.unwrap_or(bytes_per_sec),
        }
    }

    fn validate(
        &self,
        msgs_burst_key: &'static str,
        bytes_burst_key: &'static str,
    ) -> Result<(), ConfigError> {
        let invalid = |key| {
            Err(ConfigError::Invalid {
                key,
                reason: "must be at least 1 when its rate is on".to_string(),
            })
        };
        if self.msgs_per_sec > 0 && self.msgs_burst == 0 {
            return invalid(msgs_burst_key);
        }
        if self.bytes_per_sec > 0 && self.bytes_burst == 0 {
            return invalid(bytes_burst_key);
        }
        Ok(())
    }
}

/// A publish rate for the subjects a pattern matches (`[[admission.subject_rate]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectRate {
    /// A subject filter (`chat.>`, `presence.*`); checked when the file is read.
    pub subject: String,
    pub limit: RateLimit,
}

/// What happens to a publisher over one of its rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RateAction {
    /// The publish goes through, then the broker stops reading the connection's socket
    /// until its bucket has refilled: TCP backpressure, never an error.
    Slow,
    /// The publish is refused with an error; the connection stays open.
    Refuse,
}

impl AdmissionConfig {
    pub const DEFAULT_MAX_CONNECTIONS: usize = 65_536;
    /// A quarter of `max_connections`: one address (a NAT gateway, a benchmark on
    /// loopback) may hold many clients, but not the whole broker.
    pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 16_384;
    /// With its burst (twice the rate), far above what a reconnect storm of a few
    /// thousand clients or the `conns` benchmark (10,000 connections at once) needs, and
    /// low enough that accepting cannot take a worker over.
    pub const DEFAULT_CONNECT_RATE: u64 = 10_000;
    pub const DEFAULT_CONNECT_BURST: u64 = 2 * Self::DEFAULT_CONNECT_RATE;
    pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 65_536;
    pub const DEFAULT_RATE_ACTION: RateAction = RateAction::Slow;
    pub const DEFAULT_SHED_BELOW_PRIORITY: u8 = 0;

    /// The default shedding threshold for a given inbound queue capacity: three quarters.
    pub fn default_shed_queue_depth(worker_queue: usize) -> usize {
        worker_queue.saturating_mul(3) / 4
    }

    /// Flags over the file's `[admission]` section over the defaults.
    fn resolve(args: AdmissionArgs, file: FileAdmission, limits: &Limits) -> AdmissionConfig {
        let d = AdmissionConfig::default();
        let msgs = args.publish_msgs_per_sec.or(file.publish_msgs_per_sec);
        let bytes = args.publish_bytes_per_sec.or(file.publish_bytes_per_sec);
        let connect_rate = args
            .connect_rate
            .or(file.connect_rate)
            .unwrap_or(d.connect_rate);
        AdmissionConfig {
            max_connections: args
                .max_connections
                .or(file.max_connections)
                .unwrap_or(d.max_connections),
            max_connections_per_ip: args
                .max_connections_per_ip
                .or(file.max_connections_per_ip)
                .unwrap_or(d.max_connections_per_ip),
            connect_rate,
            connect_burst: args
                .connect_burst
                .or(file.connect_burst)
                .unwrap_or(connect_rate.saturating_mul(2)),
            max_subscriptions: args
                .max_subscriptions
                .or(file.max_subscriptions)
                .unwrap_or(d.max_subscriptions),
            publish: RateLimit::new(
                msgs.unwrap_or(0),
                args.publish_msgs_burst.or(file.publish_msgs_burst),
                bytes.unwrap_or(0) as u64,
                args.publish_bytes_burst
                    .or(file.publish_bytes_burst)
                    .map(|b| b as u64),
            ),
            subject_rates: file
                .subject_rate
                .into_iter()
                .map(|r| SubjectRate {
                    subject: r.subject,
                    limit: RateLimit::new(
                        r.msgs_per_sec,
                        r.msgs_burst,
                        r.bytes_per_sec.unwrap_or(0) as u64,
                        r.bytes_burst.map(|b| b as u64),
                    ),
                })
                .collect(),
            rate_action: args
                .rate_action
                .or(file.rate_action)
                .unwrap_or(d.rate_action),
            shed_queue_depth: args
                .shed_queue_depth
                .or(file.shed_queue_depth)
                .unwrap_or(Self::default_shed_queue_depth(limits.worker_queue)),
            shed_below_priority: args
                .shed_below_priority
                .or(file.shed_below_priority)
                .unwrap_or(d.shed_below_priority),
        }
    }

    /// Checks values that parse but cannot work.
    fn validate(&self, limits: &Limits) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_string(),
            })
        };
        if self.connect_rate > 0 && self.connect_burst == 0 {
            return invalid(
                "connect_burst",
                "must be at least 1 when connect_rate is on",
            );
        }
        self.publish
            .validate("publish_msgs_burst", "publish_bytes_burst")?;
        for r in &self.subject_rates {
            r.limit
                .validate("subject_rate.msgs_burst", "subject_rate.bytes_burst")?;
        }
        if self.shed_below_priority > 8 {
            return invalid(
                "shed_below_priority",
                "must be between 0 (shed nothing) and 8 (shed every priority)",
            );
        }
        if self.shed_queue_depth >= limits.worker_queue {
            return invalid(
                "shed_queue_depth",
                "must be below worker_queue (a queue never holds more than its capacity)",
            );
        }
        Ok(())
    }
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: Self::DEFAULT_MAX_CONNECTIONS_PER_IP,
            connect_rate: Self::DEFAULT_CONNECT_RATE,
            connect_burst: Self::DEFAULT_CONNECT_BURST,
            max_subscriptions: Self::DEFAULT_MAX_SUBSCRIPTIONS,
            publish: RateLimit::default(),
            subject_rates: Vec::new(),
            rate_action: Self::DEFAULT_RATE_ACTION,
            shed_queue_depth: Self::default_shed_queue_depth(Limits::DEFAULT_WORKER_QUEUE),
            shed_below_priority: Self::DEFAULT_SHED_BELOW_PRIORITY,
        }
    }
}

/// The admission flags (`docs/operations.md`, *Admission control*); each is also a key
/// of the config file's `[admission]` section.
#[derive(Debug, Default, clap::Args)]
#[command(next_help_heading = "Admission control (0 turns a limit off)")]
pub struct AdmissionArgs {
    /// Open connections, both ports together [default: 65536].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Open connections from one IP address [default: 16384].
    #[arg(long, value_name = "N")]
    pub max_connections_per_ip: Option<usize>,
    /// New connections accepted per second [default: 10000].
    #[arg(long, value_name = "N")]
    pub connect_rate: Option<u64>,
    /// New connections accepted at once after a quiet spell [default: twice
    /// connect_rate].
    #[arg(long, value_name = "N")]
    pub connect_burst: Option<u64>,
    /// Subscriptions per connection [default: 65536].
    #[arg(long, value_name = "N")]
    pub max_subscriptions: Option<usize>,
    /// Messages one connection may publish per second [default: 0, unlimited].
    #[arg(long, value_name = "N")]
    pub publish_msgs_per_sec: Option<u64>,
    /// Messages one connection may publish at once [default: publish_msgs_per_sec].
    #[arg(long, value_name = "N")]
    pub publish_msgs_burst: Option<u64>,
    /// Bytes one connection may publish per second, e.g. 1MiB [default: 0, unlimited].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub publish_bytes_per_sec: Option<usize>,
    /// Bytes one connection may publish at once [default: publish_bytes_per_sec].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub publish_bytes_burst: Option<usize>,
    /// Over a publish rate: stop reading the socket (slow) or refuse the publish
    /// [default: slow].
    #[arg(long, value_enum)]
    pub rate_action: Option<RateAction>,
    /// Owner shard's inbound queue depth, in batches, above which low-priority publishes
    /// are shed [default: 3/4 of worker_queue].
    #[arg(long, value_name = "N")]
    pub shed_queue_depth: Option<usize>,
    /// Shed publishes below this priority under overload; 0 sheds nothing [default: 0].
    #[arg(long, value_name = "P")]
    pub shed_below_priority: Option<u8>,
}

/// The config file's `[admission]` section: the same keys as the admission flags, with
/// `_` for `-`, and `[[admission.subject_rate]]` tables.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAdmission {
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    connect_rate: Option<u64>,
    connect_burst: Option<u64>,
    max_subscriptions: Option<usize>,
    publish_msgs_per_sec: Option<u64>,
    publish_msgs_burst: Option<u64>,
    #[serde(default, deserialize_with = "de_size")]
    publish_bytes_per_sec: Option<usize>,
    #[serde(default, deserialize_with = "de_size")]
    publish_bytes_burst: Option<usize>,
    rate_action: Option<RateAction>,
    shed_queue_depth: Option<usize>,
    shed_below_priority: Option<u8>,
    #[serde(default)]
    subject_rate: Vec<FileSubjectRate>,
}

/// One `[[admission.subject_rate]]` table. Checked as it is read, so that a bad pattern or
/// a table that limits nothing is reported with its file and line.
#[derive(Debug, Deserialize)]
#[serde(try_from = "RawSubjectRate")]
struct FileSubjectRate {
    subject: String,
    msgs_per_sec: u64,
    msgs_burst: Option<u64>,
    bytes_per_sec: Option<usize>,
    bytes_burst: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubjectRate {
    subject: String,
    #[serde(default)]
    msgs_per_sec: u64,
    msgs_burst: Option<u64>,
    #[serde(default, deserialize_with = "de_size")]
    bytes_per_sec: Option<usize>,
    #[serde(default, deserialize_with = "de_size")]
    bytes_burst: Option<usize>,
}

impl TryFrom<RawSubjectRate> for FileSubjectRate {
    type Error = String;

    fn try_from(r: RawSubjectRate) -> Result<Self, String> {
        if let Err(e) = tern_protocol::subject::validate_filter(r.subject.as_bytes()) {
            return Err(format!(
                "subject_rate: `{}` is not a subject filter: {e}",
                r.subject
            ));
        }
        if r.msgs_per_sec == 0 && r.bytes_per_sec.unwrap_or(0) == 0 {
            return Err(format!(
                "subject_rate for `{}` limits nothing: give msgs_per_sec or bytes_per_sec",
                r.subject
            ));
        }
        Ok(FileSubjectRate {
            subject: r.subject,
            msgs_per_sec: r.msgs_per_sec,
            msgs_burst: r.msgs_burst,
            bytes_per_sec: r.bytes_per_sec,
            bytes_burst: r.bytes_burst,
        })
    }
}

/// The command line of `ternd`. Every flag is optional: a flag given wins over the config
/// file, which wins over the default.
#[derive(Debug, Default, Parser)]
#[command(name = "ternd", version, about = "Tern: a real-time pub/sub broker")]
pub struct Args {
    /// TOML config file; its keys are the long flag names with '_' for '-'.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Text (NATS protocol) listen address [default: 127.0.0.1:4222].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Binary (Tern protocol) listen address [default: 127.0.0.1:4224].
    #[arg(long, value_name = "ADDR", conflicts_with = "no_binary")]
    pub binary_listen: Option<SocketAddr>,
    /// Do not open the binary port.
    #[arg(long)]
    pub no_binary: bool,
    /// Worker threads, one shard each [default: one per core].
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Do not pin workers to cores.
    #[arg(long)]
    pub no_pin: bool,
    /// Name reported to clients in INFO [default: ternd].
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
    /// Monitoring HTTP listen address (/varz, /connz, /metrics...) [default: 127.0.0.1:8222].
    #[arg(long, value_name = "ADDR", conflicts_with = "no_monitor")]
    pub monitor: Option<SocketAddr>,
    /// Do not start the monitoring HTTP listener.
    #[arg(long)]
    pub no_monitor: bool,
    /// Add Tern-Shard/Tern-Seq headers to text-port deliveries of stored messages, for
    /// clients that accept headers [default: off].
    #[arg(long)]
    pub sequence_headers: bool,
    /// Longest control line, e.g. 4KiB [default: 4KiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_control_line: Option<usize>,
    /// Largest payload, headers included, e.g. 1MiB [default: 1MiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_payload: Option<usize>,
    /// Bytes queued for one connection before it is closed as a slow consumer [default: 64MiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_pending: Option<usize>,
    /// Silence after which the server pings a client, e.g. 10s [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ping_interval: Option<Duration>,
    /// Unanswered pings before a client is closed as stale [default: 2].
    #[arg(long, value_name = "N")]
    pub ping_max: Option<u32>,
    /// How long shutdown waits to flush queued messages [default: 5s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub shutdown_timeout: Option<Duration>,
    /// Capacity of each worker's inbound queue, in batches [default: 4096].
    #[arg(long, value_name = "N")]
    pub worker_queue: Option<usize>,
    /// A subscription queue's bound in messages [default: 1048576].
    #[arg(long, value_name = "N")]
    pub sub_queue_messages: Option<usize>,
    /// A subscription queue's bound in bytes, e.g. 16MiB [default: 64MiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub sub_queue_bytes: Option<usize>,
    /// Largest queue bound in messages a binary SUBSCRIBE may ask for [default: 16777216].
    #[arg(long, value_name = "N")]
    pub sub_queue_max_messages: Option<usize>,
    /// Largest queue bound in bytes a binary SUBSCRIBE may ask for [default: 1GiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub sub_queue_max_bytes: Option<usize>,
    /// Encoded bytes a connection's write buffer takes before deliveries wait in their
    /// subscription queues [default: 256KiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub write_buffer: Option<usize>,
    /// What to do with a consumer whose queues overflow [default: drop].
    #[arg(long, value_enum)]
    pub slow_consumer: Option<SlowConsumerPolicy>,
    /// With --slow-consumer disconnect: time over the high-water mark before closing
    /// [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub slow_consumer_grace: Option<Duration>,
    /// Priority (0-7) of text-port messages without a Tern-Priority header [default: 0].
    #[arg(long, value_name = "N")]
    pub text_priority: Option<u8>,
    /// Directory of the ring logs, one file per shard [default: ./data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Capacity of each shard's ring log, e.g. 256MiB [default: 64MiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub log_size: Option<usize>,
    /// When the logs are synced to disk [default: interval].
    #[arg(long, value_enum)]
    pub fsync: Option<FsyncMode>,
    /// The sync interval of `--fsync interval` [default: 1s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub fsync_interval: Option<Duration>,
    /// Store messages on subjects matching this filter (repeatable) [default: >, everything].
    #[arg(long, value_name = "FILTER", conflicts_with = "no_store")]
    pub store: Vec<String>,
    /// Store nothing: no ring logs, no catch-up, no deduplication.
    #[arg(long)]
    pub no_store: bool,
    /// How long a message id is remembered for idempotent publishing [default: 2m].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub dedupe_window: Option<Duration>,
    /// Records a shard replays per loop turn for catch-ups [default: 4096].
    #[arg(long, value_name = "N")]
    pub replay_batch: Option<usize>,
    /// Log filter, e.g. info, debug [default: info]; RUST_LOG overrides.
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Log format [default: text].
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    #[command(flatten)]
    pub admission: AdmissionArgs,
}

/// The config file: the same keys as the long flags, with `_` for `-`. Unknown keys are an
/// error, so a typo is never silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    /// An address, or `"off"`.
    #[serde(default, deserialize_with = "de_addr_or_off")]
    binary_listen: Option<AddrOrOff>,
    workers: Option<usize>,
    pin: Option<bool>,
    server_name: Option<String>,
    /// An address, or `"off"`.
    #[serde(default, deserialize_with = "de_addr_or_off")]
    monitor: Option<AddrOrOff>,
    sequence_headers: Option<bool>,
    #[serde(default, deserialize_with = "de_size")]
    max_control_line: Option<usize>,
    #[serde(default, deserialize_with = "de_size")]
    max_payload: Option<usize>,
    #[serde(default, deserialize_with = "de_size")]
    max_pending: Option<usize>,
    #[serde(default, deserialize_with = "de_duration")]
    ping_interval: Option<Duration>,
    ping_max: Option<u32>,
    #[serde(default, deserialize_with = "de_duration")]
    shutdown_timeout: Option<Duration>,
    worker_queue: Option<usize>,
    sub_queue_messages: Option<usize>,
    #[serde(default, deserialize_with = "de_size")]
    sub_queue_bytes: Option<usize>,
    sub_queue_max_messages: Option<usize>,
    #[serde(default, deserialize_with = "de_size")]
    sub_queue_max_bytes: Option<usize>,
    #[serde(default, deserialize_with = "de_size")]
    write_buffer: Option<usize>,
    slow_consumer: Option<SlowConsumerPolicy>,
    #[serde(default, deserialize_with = "de_duration")]
    slow_consumer_grace: Option<Duration>,
    text_priority: Option<u8>,
    data_dir: Option<PathBuf>,
    #[serde(default, deserialize_with = "de_size")]
    log_size: Option<usize>,
    fsync: Option<FsyncMode>,
    #[serde(default, deserialize_with = "de_duration")]
    fsync_interval: Option<Duration>,
    store: Option<Vec<String>>,
    #[serde(default, deserialize_with = "de_duration")]
    dedupe_window: Option<Duration>,
    replay_batch: Option<usize>,
    log_level: Option<String>,
    log_format: Option<LogFormat>,
    /// The `[admission]` section.
    admission: Option<FileAdmission>,
}

/// A configuration that cannot be used, with a message a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The TOML parser's message names the line, the column and the key.
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value for `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

impl Config {
    /// Resolves flags, the config file they name (if any) and the defaults.
    pub fn from_args(args: Args) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let d = Config::default();
        let dl = &d.limits;
        let mut config = Config {
            listen: args.listen.or(file.listen).unwrap_or(d.listen),
            binary_listen: if args.no_binary {
                None
            } else {
                AddrOrOff::resolve(args.binary_listen, file.binary_listen, d.binary_listen)
            },
            workers: args.workers.or(file.workers).unwrap_or(d.workers),
            pin: if args.no_pin {
                false
            } else {
                file.pin.unwrap_or(d.pin)
            },
            server_name: args
                .server_name
                .or(file.server_name)
                .unwrap_or(d.server_name),
            monitor: if args.no_monitor {
                None
            } else {
                AddrOrOff::resolve(args.monitor, file.monitor, d.monitor)
            },
            sequence_headers: args.sequence_headers
                || file.sequence_headers.unwrap_or(d.sequence_headers),
            limits: Limits {
                max_control_line: args
                    .max_control_line
                    .or(file.max_control_line)
                    .unwrap_or(dl.max_control_line),
                max_payload: args
                    .max_payload
                    .or(file.max_payload)
                    .unwrap_or(dl.max_payload),
                max_pending: args
                    .max_pending
                    .or(file.max_pending)
                    .unwrap_or(dl.max_pending),
                ping_interval: args
                    .ping_interval
                    .or(file.ping_interval)
                    .unwrap_or(dl.ping_interval),
                ping_max: args.ping_max.or(file.ping_max).unwrap_or(dl.ping_max),
                shutdown_timeout: args
                    .shutdown_timeout
                    .or(file.shutdown_timeout)
                    .unwrap_or(dl.shutdown_timeout),
                worker_queue: args
                    .worker_queue
                    .or(file.worker_queue)
                    .unwrap_or(dl.worker_queue),
            },
            queues: {
                let dq = &d.queues;
                QueueConfig {
                    sub_queue_messages: args
                        .sub_queue_messages
                        .or(file.sub_queue_messages)
                        .unwrap_or(dq.sub_queue_messages),
                    sub_queue_bytes: args
                        .sub_queue_bytes
                        .or(file.sub_queue_bytes)
                        .unwrap_or(dq.sub_queue_bytes),
                    sub_queue_max_messages: args
                        .sub_queue_max_messages
                        .or(file.sub_queue_max_messages)
                        .unwrap_or(dq.sub_queue_max_messages),
                    sub_queue_max_bytes: args
                        .sub_queue_max_bytes
                        .or(file.sub_queue_max_bytes)
                        .unwrap_or(dq.sub_queue_max_bytes),
                    write_buffer: args
                        .write_buffer
                        .or(file.write_buffer)
                        .unwrap_or(dq.write_buffer),
                    slow_consumer: args
                        .slow_consumer
                        .or(file.slow_consumer)
                        .unwrap_or(dq.slow_consumer),
                    slow_consumer_grace: args
                        .slow_consumer_grace
                        .or(file.slow_consumer_grace)
                        .unwrap_or(dq.slow_consumer_grace),
                    text_priority: args
                        .text_priority
                        .or(file.text_priority)
                        .unwrap_or(dq.text_priority),
                }
            },
            store: {
                let ds = &d.store;
                let interval = args
                    .fsync_interval
                    .or(file.fsync_interval)
                    .unwrap_or(StoreConfig::DEFAULT_FSYNC_INTERVAL);
                StoreConfig {
                    data_dir: args
                        .data_dir
                        .or(file.data_dir)
                        .unwrap_or(ds.data_dir.clone()),
                    log_size: args
                        .log_size
                        .or(file.log_size)
                        .map_or(ds.log_size, |n| n as u64),
                    fsync: match args.fsync.or(file.fsync).unwrap_or(FsyncMode::Interval) {
                        FsyncMode::Never => Fsync::Never,
                        FsyncMode::Interval => Fsync::Interval(interval),
                        FsyncMode::Always => Fsync::Always,
                    },
                    subjects: if args.no_store {
                        Vec::new()
                    } else if !args.store.is_empty() {
                        args.store
                    } else {
                        file.store.unwrap_or(ds.subjects.clone())
                    },
                    dedupe_window: args
                        .dedupe_window
                        .or(file.dedupe_window)
                        .unwrap_or(ds.dedupe_window),
                    replay_batch: args
                        .replay_batch
                        .or(file.replay_batch)
                        .unwrap_or(ds.replay_batch),
                }
            },
            log: LogConfig {
                level: args.log_level.or(file.log_level).unwrap_or(d.log.level),
                format: args.log_format.or(file.log_format).unwrap_or(d.log.format),
            },
            admission: AdmissionConfig::default(),
        };
        if args.write_buffer.is_none() && file.write_buffer.is_none() {
            // The default yields to a small `max_pending`.
            config.queues.write_buffer = d.queues.write_buffer.min(config.limits.max_pending / 2);
        }
        config.admission = AdmissionConfig::resolve(
            args.admission,
            file.admission.unwrap_or_default(),
            &config.limits,
        );
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_string(),
            })
        };
        let l = &self.limits;
        if self.workers == 0 || self.workers > 1024 {
            return invalid("workers", "must be between 1 and 1024");
        }
        let same = |a: SocketAddr, b: SocketAddr| a.port() != 0 && a == b;
        if let Some(b) = self.binary_listen {
            if same(b, self.listen) {
                return invalid("binary_listen", "must not be the same address as listen");
            }
        }
        if let Some(m) = self.monitor {
            if same(m, self.listen) {
                return invalid("monitor", "must not be the same address as listen");
            }
            if self.binary_listen.is_some_and(|b| same(m, b)) {
                return invalid("monitor", "must not be the same address as binary_listen");
            }
        }
        if l.max_control_line < 64 {
            return invalid("max_control_line", "must be at least 64 bytes");
        }
        if l.max_payload == 0 || l.max_payload > 64 * 1024 * 1024 {
            return invalid("max_payload", "must be between 1 byte and 64MiB");
        }
        if l.max_pending < l.max_payload {
            return invalid("max_pending", "must be at least max_payload");
        }
        if l.ping_interval < Duration::from_millis(10) {
            return invalid("ping_interval", "must be at least 10ms");
        }
        if l.ping_max == 0 {
            return invalid("ping_max", "must be at least 1");
        }
        if l.worker_queue == 0 {
            return invalid("worker_queue", "must be at least 1");
        }
        let q = &self.queues;
        if q.sub_queue_messages == 0 || q.sub_queue_messages > q.sub_queue_max_messages {
            return invalid(
                "sub_queue_messages",
                "must be at least 1 and at most sub_queue_max_messages",
            );
        }
        if q.sub_queue_bytes == 0 || q.sub_queue_bytes > q.sub_queue_max_bytes {
            return invalid(
                "sub_queue_bytes",
                "must be at least 1 byte and at most sub_queue_max_bytes",
            );
        }
        if q.sub_queue_max_messages > u32::MAX as usize {
            return invalid("sub_queue_max_messages", "must fit in 32 bits");
        }
        if q.sub_queue_max_bytes > u32::MAX as usize {
            return invalid("sub_queue_max_bytes", "must be below 4GiB");
        }
        if q.write_buffer < 1024 || q.write_buffer > l.max_pending / 2 {
            return invalid(
                "write_buffer",
                "must be at least 1KiB and at most half of max_pending",
            );
        }
        if q.text_priority > 7 {
            return invalid("text_priority", "must be between 0 and 7");
        }
        let st = &self.store;
        if st.log_size < 1024 * 1024 {
            return invalid("log_size", "must be at least 1MiB");
        }
        if st.log_size < (l.max_payload as u64) * 2 {
            return invalid("log_size", "must hold at least two messages of max_payload");
        }
        if let Fsync::Interval(d) = st.fsync {
            if d < Duration::from_millis(10) {
                return invalid("fsync_interval", "must be at least 10ms");
            }
        }
        for filter in &st.subjects {
            if let Err(e) = tern_protocol::subject::validate_filter(filter.as_bytes()) {
                return Err(ConfigError::Invalid {
                    key: "store",
                    reason: format!("`{filter}` is not a subject filter: {e}"),
                });
            }
        }
        if st.replay_batch == 0 {
            return invalid("replay_batch", "must be at least 1");
        }
        self.admission.validate(l)?;
        Ok(())
    }
}

fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })
}

/// Reads a byte size: a plain number of bytes or a number with a unit
/// (`B`, `KB`/`KiB`, `MB`/`MiB`, `GB`/`GiB`; the unit is binary either way, case-insensitive).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("`{text}` is not a size (examples: 4096, 64KiB, 1MiB)"))?;
    let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "`{text}` has an unknown unit (use B, KiB, MiB or GiB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Reads a duration: a number with a unit (`ms`, `s`, `m`, `h`); a plain number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (examples: 500ms, 10s, 2m)"))?;
    match unit.trim() {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        "h" => Ok(Duration::from_secs(n.saturating_mul(3600))),
        _ => Err(format!("`{text}` has an unknown unit (use ms, s, m or h)")),
    }
}

/// A listener key in the file (`monitor`, `binary_listen`): an address, or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AddrOrOff {
    On(SocketAddr),
    Off,
}

impl AddrOrOff {
    /// The flag's address wins; then the file's address or "off"; then the default.
    fn resolve(
        flag: Option<SocketAddr>,
        file: Option<AddrOrOff>,
        default: Option<SocketAddr>,
    ) -> Option<SocketAddr> {
        match (flag, file) {
            (Some(addr), _) | (None, Some(AddrOrOff::On(addr))) => Some(addr),
            (None, Some(AddrOrOff::Off)) => None,
            (None, None) => default,
        }
    }
}

fn de_addr_or_off<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<AddrOrOff>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(t) if t.trim().eq_ignore_ascii_case("off") => Ok(Some(AddrOrOff::Off)),
        Some(t) => t
            .trim()
            .parse()
            .map(|a| Some(AddrOrOff::On(a)))
            .map_err(|_| {
                serde::de::Error::custom(format!(
                    "`{t}` is not an address (example: \"127.0.0.1:8222\") or \"off\""
                ))
            }),
    }
}

/// Sizes in the file may be a number of bytes or a string with a unit.
#[derive(Deserialize)]
#[serde(untagged)]
enum SizeOrText {
    Number(u64),
    Text(String),
}

fn de_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    match Option::<SizeOrText>::deserialize(d)? {
        None => Ok(None),
        Some(SizeOrText::Number(n)) => usize::try_from(n)
            .map(Some)
            .map_err(|_| serde::de::Error::custom("size is too large")),
        Some(SizeOrText::Text(t)) => parse_size(&t).map(Some).map_err(serde::de::Error::custom),
    }
}

fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    match Option::<SizeOrText>::deserialize(d)? {
        None => Ok(None),
        Some(SizeOrText::Number(n)) => Ok(Some(Duration::from_secs(n))),
        Some(SizeOrText::Text(t)) => parse_duration(&t)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_file(text: &str) -> Result<Config, ConfigError> {
        let dir = std::env::temp_dir().join(format!(
            "tern-config-test-{}-{}",
            std::process::id(),
            text.len()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ternd.toml");
        std::fs::write(&path, text).unwrap();
        let result = Config::from_args(Args {
            config: Some(path),
            ..Args::default()
        });
        std::fs::remove_dir_all(&dir).unwrap();
        result
    }

    #[test]
    fn defaults() {
        let c = Config::from_args(Args::default()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:4222");
        assert!(c.pin);
        assert_eq!(c.limits.max_payload, 1 << 20);
        assert_eq!(c.limits.max_control_line, 4096);
    }

    #[test]
    fn file_values_and_flag_precedence() {
        let c =
            with_file("workers = 3\nmax_payload = \"2MiB\"\nping_interval = \"250ms\"\n").unwrap();
        assert_eq!(c.workers, 3);
        assert_eq!(c.limits.max_payload, 2 << 20);
        assert_eq!(c.limits.ping_interval, Duration::from_millis(250));
        let args = Args::parse_from(["ternd", "--workers", "2", "--max-payload", "512KiB"]);
        let c = Config::from_args(args).unwrap();
        assert_eq!(c.workers, 2);
        assert_eq!(c.limits.max_payload, 512 << 10);
    }

    #[test]
    fn bad_value_names_key_and_line() {
        let err = with_file("workers = 2\nmax_payload = \"lots\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("lots"), "{err}");
        let err = with_file("wrokers = 2\n").unwrap_err().to_string();
        assert!(err.contains("wrokers"), "{err}");
        assert!(err.contains("line 1"), "{err}");
        let err = with_file("workers = 0\n").unwrap_err().to_string();
        assert!(err.contains("`workers`"), "{err}");
    }

    #[test]
    fn monitor_flag_file_and_off() {
        let c = Config::from_args(Args::default()).unwrap();
        assert_eq!(c.monitor, Some(DEFAULT_MONITOR));
        assert_eq!(DEFAULT_MONITOR.to_string(), "127.0.0.1:8222");
        let c = with_file("monitor = \"off\"\n").unwrap();
        assert_eq!(c.monitor, None);
        let c = with_file("monitor = \"0.0.0.0:9000\"\n").unwrap();
        assert_eq!(c.monitor.unwrap().to_string(), "0.0.0.0:9000");
        let err = with_file("monitor = \"nowhere\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("nowhere") && err.contains("line 1"), "{err}");
        let c = Config::from_args(Args::parse_from(["ternd", "--no-monitor"])).unwrap();
        assert_eq!(c.monitor, None);
        let c = Config::from_args(Args::parse_from(["ternd", "--monitor", "127.0.0.1:0"])).unwrap();
        assert_eq!(c.monitor.unwrap().port(), 0);
        assert!(
            Args::try_parse_from(["ternd", "--monitor", "127.0.0.1:1", "--no-monitor"]).is_err()
        );
        let err = Config::from_args(Args::parse_from([
            "ternd",
            "--listen",
            "127.0.0.1:5000",
            "--monitor",
            "127.0.0.1:5000",
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("`monitor`"), "{err}");
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("1mb"), Ok(1 << 20));
        assert!(parse_size("1 parsec").is_err());
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn binary_listen_flag_file_and_off() {
        let c = Config::from_args(Args::default()).unwrap();
        assert_eq!(c.binary_listen, Some(DEFAULT_BINARY_LISTEN));
        assert_eq!(DEFAULT_BINARY_LISTEN.to_string(), "127.0.0.1:4224");
        let c = with_file("binary_listen = \"off\"\n").unwrap();
        assert_eq!(c.binary_listen, None);
        let c = with_file("binary_listen = \"0.0.0.0:5224\"\n").unwrap();
        assert_eq!(c.binary_listen.unwrap().to_string(), "0.0.0.0:5224");
        let c = Config::from_args(Args::parse_from(["ternd", "--no-binary"])).unwrap();
        assert_eq!(c.binary_listen, None);
        assert!(
            Args::try_parse_from(["ternd", "--binary-listen", "127.0.0.1:1", "--no-binary"])
                .is_err()
        );
        let err = Config::from_args(Args::parse_from([
            "ternd",
            "--listen",
            "127.0.0.1:5000",
            "--binary-listen",
            "127.0.0.1:5000",
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("`binary_listen`"), "{err}");
    }

    #[test]
    fn admission_defaults() {
        let a = Config::from_args(Args::default()).unwrap().admission;
        assert_eq!(a.max_connections, 65_536);
        assert_eq!(a.max_connections_per_ip, 16_384);
        assert_eq!((a.connect_rate, a.connect_burst), (10_000, 20_000));
        assert_eq!(a.max_subscriptions, 65_536);
        assert!(a.publish.is_off());
        assert!(a.subject_rates.is_empty());
        assert_eq!(a.rate_action, RateAction::Slow);
        assert_eq!(a.shed_queue_depth, 3072, "3/4 of worker_queue 4096");
        assert_eq!(a.shed_below_priority, 0, "sheds nothing");
        let c = Config::from_args(Args::parse_from(["ternd", "--worker-queue", "100"])).unwrap();
        assert_eq!(c.admission.shed_queue_depth, 75);
    }

    #[test]
    fn admission_section_flags_win_and_bursts_default_to_the_rate() {
        let file = "worker_queue = 64\n\
                    [admission]\n\
                    max_connections = 100\n\
                    max_connections_per_ip = 10\n\
                    connect_rate = 50\n\
                    max_subscriptions = 7\n\
                    publish_msgs_per_sec = 1000\n\
                    publish_bytes_per_sec = \"1MiB\"\n\
                    publish_bytes_burst = \"4MiB\"\n\
                    rate_action = \"refuse\"\n\
                    shed_queue_depth = 32\n\
                    shed_below_priority = 4\n\
                    [[admission.subject_rate]]\n\
                    subject = \"chat.>\"\n\
                    msgs_per_sec = 100\n\
                    msgs_burst = 20\n\
                    [[admission.subject_rate]]\n\
                    subject = \"files.*\"\n\
                    bytes_per_sec = \"64KiB\"\n";
        let a = with_file(file).unwrap().admission;
        assert_eq!(a.max_connections, 100);
        assert_eq!(a.max_connections_per_ip, 10);
        assert_eq!(
            (a.connect_rate, a.connect_burst),
            (50, 100),
            "burst: twice the rate"
        );
        assert_eq!(a.max_subscriptions, 7);
        assert_eq!(
            a.publish,
            RateLimit {
                msgs_per_sec: 1000,
                msgs_burst: 1000,
                bytes_per_sec: 1 << 20,
                bytes_burst: 4 << 20,
            }
        );
        assert_eq!(a.rate_action, RateAction::Refuse);
        assert_eq!((a.shed_queue_depth, a.shed_below_priority), (32, 4));
        assert_eq!(a.subject_rates.len(), 2);
        assert_eq!(a.subject_rates[0].subject, "chat.>");
        assert_eq!(
            (
                a.subject_rates[0].limit.msgs_per_sec,
                a.subject_rates[0].limit.msgs_burst
            ),
            (100, 20)
        );
        assert_eq!(a.subject_rates[1].limit.bytes_per_sec, 64 << 10);
        assert_eq!(a.subject_rates[1].limit.bytes_burst, 64 << 10);
        assert_eq!(a.subject_rates[1].limit.msgs_per_sec, 0);

        let args = Args::parse_from([
            "ternd",
            "--max-connections",
            "5",
            "--max-connections-per-ip",
            "0",
            "--connect-rate",
            "3",
            "--connect-burst",
            "4",
            "--max-subscriptions",
            "9",
            "--publish-msgs-per-sec",
            "10",
            "--publish-msgs-burst",
            "2",
            "--publish-bytes-per-sec",
            "1KiB",
            "--rate-action",
            "slow",
            "--shed-queue-depth",
            "10",
            "--shed-below-priority",
            "8",
        ]);
        let a = Config::from_args(args).unwrap().admission;
        assert_eq!(a.max_connections, 5);
        assert_eq!(a.max_connections_per_ip, 0, "0 turns it off");
        assert_eq!((a.connect_rate, a.connect_burst), (3, 4));
        assert_eq!(a.max_subscriptions, 9);
        assert_eq!((a.publish.msgs_per_sec, a.publish.msgs_burst), (10, 2));
        assert_eq!(
            (a.publish.bytes_per_sec, a.publish.bytes_burst),
            (1024, 1024)
        );
        assert_eq!(a.rate_action, RateAction::Slow);
        assert_eq!((a.shed_queue_depth, a.shed_below_priority), (10, 8));
    }

    #[test]
    fn admission_errors_name_the_file_line_or_key() {
        let file = "[admission]\nmax_connections = 10\n\
                    [[admission.subject_rate]]\nsubject = \"a..b\"\nmsgs_per_sec = 1\n";
        let err = with_file(file).unwrap_err().to_string();
        assert!(err.contains("ternd.toml"), "{err}");
        assert!(err.contains("line 3") || err.contains("line 4"), "{err}");
        assert!(err.contains("`a..b` is not a subject filter"), "{err}");
        let err = with_file("[admission]\nrate_action = \"fast\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("fast"), "{err}");
        let err = with_file("[admission]\nmax_conections = 1\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 2") && err.contains("max_conections"),
            "{err}"
        );
        let err = with_file("[admission]\n\n[[admission.subject_rate]]\nsubject = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("limits nothing") && err.contains("line 3"),
            "{err}"
        );
        let err = with_file("[admission]\nshed_below_priority = 9\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`shed_below_priority`"), "{err}");
        let err = with_file("worker_queue = 8\n[admission]\nshed_queue_depth = 8\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`shed_queue_depth`"), "{err}");
        let err = Config::from_args(Args::parse_from([
            "ternd",
            "--publish-msgs-per-sec",
            "5",
            "--publish-msgs-burst",
            "0",
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("`publish_msgs_burst`"), "{err}");
        let err = Config::from_args(Args::parse_from([
            "ternd",
            "--connect-rate",
            "5",
            "--connect-burst",
            "0",
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("`connect_burst`"), "{err}");
    }

    #[test]
    fn store_flags_file_and_off() {
        let c = Config::from_args(Args::default()).unwrap();
        assert_eq!(c.store.data_dir, PathBuf::from("./data"));
        assert_eq!(c.store.log_size, 64 * 1024 * 1024);
        assert_eq!(c.store.fsync, Fsync::Interval(Duration::from_secs(1)));
        assert_eq!(c.store.subjects, [">"]);
        assert_eq!(c.store.dedupe_window, Duration::from_secs(120));
        let c = with_file(
            "data_dir = \"/var/lib/tern\"\nlog_size = \"8MiB\"\nfsync = \"always\"\n\
             store = [\"chat.>\", \"prices.*\"]\ndedupe_window = \"30s\"\n",
        )
        .unwrap();
        assert_eq!(c.store.data_dir, PathBuf::from("/var/lib/tern"));
        assert_eq!(c.store.log_size, 8 * 1024 * 1024);
        assert_eq!(c.store.fsync, Fsync::Always);
        assert_eq!(c.store.subjects, ["chat.>", "prices.*"]);
        assert_eq!(c.store.dedupe_window, Duration::from_secs(30));
        let c = Config::from_args(Args::parse_from([
            "ternd",
            "--fsync",
            "interval",
            "--fsync-interval",
            "250ms",
            "--store",
            "a.>",
            "--store",
            "b",
        ]))
        .unwrap();
        assert_eq!(c.store.fsync, Fsync::Interval(Duration::from_millis(250)));
        assert_eq!(c.store.subjects, ["a.>", "b"]);
        let c = Config::from_args(Args::parse_from(["ternd", "--no-store"])).unwrap();
        assert!(c.store.is_off());
        let err = with_file("store = [\"a..b\"]\n").unwrap_err().to_string();
        assert!(err.contains("`store`") && err.contains("a..b"), "{err}");
        let err = Config::from_args(Args::parse_from(["ternd", "--log-size", "100KiB"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`log_size`"), "{err}");
    }
}
