//! Configuration: command-line flags, the optional TOML file, and their defaults.
//!
//! Owns: every setting and limit the broker has, each declared once below (its flag, its
//! config key, its type, its default and its help, in one line of [`settings!`]), the rules
//! for combining them (defaults < config file < flags), and the checks of values that parse
//! but cannot work ([`Config::validate`]).
//!
//! Never: touches a socket or starts a thread. The resolved [`Config`] is read once at start
//! and passed down; nothing else in the broker holds a magic number for a limit.
//!
//! Adding a limit: one line in the group it belongs to (see `declare.rs` for the form),
//! a check in [`Config::validate`] if some values cannot work, and a row in
//! docs/operations.md. Its flag, file key, help text and `/varz` field follow.

mod auth;
mod bridge;
pub(crate) mod declare;
mod transport;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use auth::{AuthArgs, AuthSettings};
pub use bridge::BridgeArgs;
use declare::settings;
pub use declare::{parse_duration, parse_size};
pub use transport::{TlsOptions, TransportArgs, WebSocketOptions};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
const GIB: usize = 1 << 30;

settings! {
    /// The command line of `ternd`. Every flag is optional: a flag given wins over the
    /// config file, which wins over the default.
    #[command(name = "ternd", version, about = "Tern: a real-time pub/sub broker")]
    args Args {
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
        /// Store messages on subjects matching this filter (repeatable) [default: >, everything].
        #[arg(long, value_name = "FILTER", conflicts_with = "no_store")]
        pub store: Vec<String>,
        /// Store nothing: no ring logs, no catch-up, no deduplication.
        #[arg(long)]
        pub no_store: bool,
        /// Log filter, e.g. info, debug [default: info]; RUST_LOG overrides.
        #[arg(long, value_name = "FILTER")]
        pub log_level: Option<String>,
        /// Log format [default: text].
        #[arg(long, value_enum)]
        pub log_format: Option<LogFormat>,
        /// TLS on every port, and the WebSocket listener (`config/transport.rs`).
        #[command(flatten)]
        pub transport: TransportArgs,
        /// Authentication and the monitor's token (`config/auth.rs`).
        #[command(flatten)]
        pub auth: AuthArgs,
        #[command(flatten)]
        pub bridge: BridgeArgs,
    }

    /// The config file: the same keys as the long flags, with `_` for `-`. Unknown keys are
    /// an error, so a typo is never silently ignored.
    file FileConfig {
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
        store: Option<Vec<String>>,
        log_level: Option<String>,
        log_format: Option<LogFormat>,
        /// `[tls]`: cert_file, key_file, ca_file, verify, handshake_timeout, handshake_first.
        tls: Option<transport::FileTls>,
        /// `[websocket]`: listen, no_tls, allowed_origins, compression, max_message.
        websocket: Option<transport::FileWebSocket>,
        /// The token clients must present.
        auth_token: Option<String>,
        /// The user connections without credentials are bound to.
        no_auth_user: Option<String>,
        /// `[[users]]`: user and password, or nkey; each with its permissions.
        users: Option<Vec<tern_auth::UserEntry>>,
        /// `[jwt]`: the key JWT connection tokens are verified with.
        jwt: Option<tern_auth::JwtEntry>,
        /// `[default_permissions]`: for users (and tokens) without their own.
        default_permissions: Option<tern_auth::PermissionsEntry>,
        /// The monitoring endpoints' bearer token.
        monitor_token: Option<String>,
        /// `[[bridge]]`: one per upstream NATS cluster (servers, export, import...).
        bridge: Option<Vec<bridge::FileBridge>>,
    }

    /// Every group of settings, resolved.
    groups Settings resolve(args, file);

    /// Limits of the protocol and of each connection, each with a default, a flag and a
    /// config key (the field name).
    group limits: Limits, "Limits" {
        /// Longest control line a client may send, e.g. 4KiB.
        max_control_line: usize [Size] = tern_protocol::text::Limits::DEFAULT_MAX_CONTROL_LINE;
        /// Largest payload a client may publish, headers included, e.g. 1MiB.
        max_payload: usize [Size] = tern_protocol::text::Limits::DEFAULT_MAX_PAYLOAD;
        /// Most tokens in a subject, filter or queue group name a client sends.
        max_subject_tokens: usize [Num] = tern_protocol::text::Limits::DEFAULT_MAX_SUBJECT_TOKENS;
        /// Bytes queued for one connection before it is closed as a slow consumer.
        max_pending: usize [Size] = 64 * MIB;
        /// Silence after which the server pings a client, e.g. 10s.
        ping_interval: Duration [Dur] = Duration::from_secs(10);
        /// Unanswered pings before a client is closed as stale.
        ping_max: u32 [Num] = 2;
        /// Time to finish a handshake, e.g. 2s: the binary preface and HELLO from accept;
        /// on the text port, the first control line from the client's first byte, and any
        /// later control line from its own first byte.
        auth_timeout: Duration [Dur] = Duration::from_secs(2);
        /// How long shutdown waits to flush queued messages.
        shutdown_timeout: Duration [Dur] = Duration::from_secs(5);
        /// Lame duck mode (SIGUSR2): the time over which clients are closed before the
        /// broker shuts down, e.g. 2m.
        lame_duck_duration: Duration [Dur] = Duration::from_secs(120);
        /// Lame duck mode: the wait before the first client is closed, e.g. 10s.
        lame_duck_grace_period: Duration [Dur] = Duration::from_secs(10);
        /// Capacity of each worker's inbound queue, in batches.
        worker_queue: usize [Num] = 4096;
        /// Capacity of each worker's inbound queue, in bytes of the messages it carries (a
        /// batch always fits an empty queue): what may be on its way between workers.
        worker_queue_bytes: usize [Size] = 4 * MIB;
    }

    /// Subscriber queues: how much may wait for each subscription, and what happens to a
    /// consumer that cannot keep up (`docs/operations.md`, "Slow consumers").
    group queues: QueueConfig, "Subscriber queues" {
        /// A subscription queue's bound in messages.
        sub_queue_messages: usize [Num] = 1024 * 1024;
        /// A subscription queue's bound in bytes (header blocks + payloads), e.g. 16MiB.
        sub_queue_bytes: usize [Size] = 64 * MIB;
        /// Largest queue bound in messages a binary SUBSCRIBE may ask for.
        sub_queue_max_messages: usize [Num] = 16 * 1024 * 1024;
        /// Largest queue bound in bytes a binary SUBSCRIBE may ask for.
        sub_queue_max_bytes: usize [Size] = GIB;
        /// Encoded bytes a connection's write buffer takes before deliveries wait in their
        /// subscription queues.
        write_buffer: usize [Size] = (256 * KIB).min(max_pending / 2),
            "256KiB, at most half of max_pending";
        /// What to do with a consumer whose queues overflow.
        slow_consumer: SlowConsumerPolicy [Choice] = SlowConsumerPolicy::Drop;
        /// With --slow-consumer disconnect: time over the high-water mark before closing.
        slow_consumer_grace: Duration [Dur] = Duration::from_secs(10);
        /// Priority (0-7) of text-port messages without a Tern-Priority header.
        text_priority: u8 [Num] = 0;
    }

    /// Flow control: how much the broker holds for consumers, and how it slows the
    /// publishers of consumers that fall behind (`docs/operations.md`, "Flow control").
    group flow: FlowConfig, "Flow control" {
        /// Bytes all subscription queues together may hold, broker-wide; past it each
        /// worker gives up its lowest-priority, oldest queued messages first.
        max_queued_bytes: usize [Size] = crate::budget::default_max_queued_bytes(),
            "a quarter of the memory, at most 16GiB";
        /// The longest a publisher stays stalled for consumers that fall behind, in one
        /// stall (0 turns stalling off).
        max_publisher_stall: Duration [Dur] = Duration::from_secs(1);
        /// The window over which a consumer over its high-water mark must drain
        /// publisher_stall_min_drain bytes to keep stalling its publishers.
        publisher_stall_window: Duration [Dur] = Duration::from_millis(25);
        /// Bytes a consumer over its high-water mark must take per window to count as
        /// draining (below: stuck; it slows nobody, its queues drop by priority).
        publisher_stall_min_drain: usize [Size] = 32 * KIB;
    }

    /// What the shards keep in their ring logs (store and forward), and where.
    group store: StoreConfig, "Store" {
        /// Directory of the ring logs, one file per shard.
        data_dir: PathBuf [Path] = PathBuf::from("./data");
        /// Capacity of each shard's ring log, e.g. 256MiB.
        log_size: usize [Size] = 64 * MIB;
        /// When the logs are synced to disk.
        fsync: FsyncMode [Choice] = FsyncMode::Interval;
        /// The sync interval of `--fsync interval`.
        fsync_interval: Duration [Dur] = Duration::from_secs(1);
        /// How long a message id is remembered for idempotent publishing.
        dedupe_window: Duration [Dur] = Duration::from_secs(120);
        /// Message ids each shard remembers for idempotent publishing; past it the oldest
        /// are forgotten first (each id costs its length plus about 100 bytes).
        dedupe_max_ids: usize [Num] = 100_000;
        /// Longest message id a publish may carry, in bytes; a longer one is refused.
        max_message_id: usize [Size] = 256;
        /// Records a shard replays per loop turn for catch-ups, so one large catch-up does
        /// not stall live traffic.
        replay_batch: usize [Num] = 256;
        /// Bytes a shard replays per loop turn for catch-ups, across all of them, e.g. 256KiB.
        replay_bytes: usize [Size] = 256 * KIB;
        /// $TERN.REPLAY requests one connection may have in progress; more are refused.
        max_replays_per_conn: usize [Num] = 4;
        /// $TERN.REPLAY requests in progress on the whole broker; more are refused.
        max_replays: usize [Num] = 64;
        /// Batches waiting in a worker's inbound queue above which catch-ups sending to it
        /// wait a turn.
        replay_queue_depth: usize [Num] = 2;
    }
    derived {
        /// Subject filters of the messages stored; empty: nothing is stored and no file is
        /// opened. Flags `--store` (repeatable), `--no-store`; config key `store` (a list).
        subjects: Vec<String> = if args.no_store {
            Vec::new()
        } else if !args.store.is_empty() {
            args.store.clone()
        } else {
            file.store.clone().unwrap_or_else(|| vec![">".to_string()])
        };
    }

    /// The monitoring endpoint's bounds: what one HTTP client may hold and what one
    /// response may cost (`docs/operations.md`, "Monitoring").
    group monitoring: MonitorLimits, "Monitoring" {
        /// HTTP connections the monitoring endpoint holds at once; more are answered 503
        /// and closed.
        monitor_max_connections: usize [Num] = 64;
        /// Longest request line plus headers, e.g. 8KiB; a longer one is answered 414 (the
        /// request line) or 431 (the headers) and closed.
        monitor_max_request_head: usize [Size] = 8 * KIB;
        /// Time a client has to send a whole request head, and then to take the response;
        /// past it the connection is closed.
        monitor_request_timeout: Duration [Dur] = Duration::from_secs(5);
        /// Largest `limit` of /connz and /subsz; a larger one is answered 400.
        monitor_max_limit: usize [Num] = 4096;
        /// Largest `offset` of /connz and /subsz; a larger one is answered 400. Bounds the
        /// work of one request on each worker.
        monitor_max_offset: usize [Num] = 100_000;
        /// Entries of a nested list shown at most (a connection's subscriptions in /connz,
        /// a filter's queue groups in /subsz); the full count is always beside it.
        monitor_max_sublist: usize [Num] = 1024;
        /// Bytes of nested lists one /connz or /subsz response carries at most, e.g. 4MiB,
        /// shared equally by the entries of the page.
        monitor_max_list_bytes: usize [Size] = 4 * MIB;
    }

    /// Presence: who is in a room (`docs/presence.md`).
    group presence: PresenceConfig, "Presence" {
        /// How long a member whose last connection left stays present: a reconnect with
        /// the same identity within it makes no leave and no join (0: leave at once).
        presence_grace: Duration [Dur] = Duration::from_secs(10);
        /// Members one room may have; a join past it is refused.
        max_presence_members: usize [Num] = 10_000;
        /// Largest info blob a member may join with, e.g. 1KiB.
        max_presence_info: usize [Size] = KIB;
        /// Rooms with members one worker holds; a join of a new room past it is refused.
        max_presence_rooms: usize [Num] = 100_000;
        /// Rooms one connection may be in at once.
        max_presence_joins: usize [Num] = 256;
    }

    sections {
    /// Admission control: the limits that refuse work early and clearly, each with a
    /// default, a flag and a key of the config file's `[admission]` section (the field
    /// name). A limit of 0 is off. `docs/operations.md` says what a client sees when it
    /// hits each one.
    section admission: AdmissionConfig, AdmissionArgs, FileAdmission,
        "Admission control (0 turns a limit off)" {
        /// Open connections, both ports together.
        max_connections: usize [Num] = 65_536;
        /// Open connections from one IP address. A quarter of max_connections: one address
        /// (a NAT gateway, a benchmark on loopback) may hold many clients, but not the
        /// whole broker.
        max_connections_per_ip: usize [Num] = 16_384;
        /// New connections accepted per second, both ports and all addresses together (a
        /// token bucket).
        connect_rate: u64 [Num] = 10_000;
        /// New connections accepted at once after a quiet spell.
        connect_burst: u64 [Num] = connect_rate.saturating_mul(2), "twice connect_rate";
        /// Failed authentications in a row from one address before its new connections
        /// are refused for a while (0: never).
        auth_failures_per_ip: u32 [Num] = 5;
        /// How long an address is refused after auth_failures_per_ip failures, doubled per
        /// further failure up to a minute.
        auth_failure_backoff: Duration [Dur] = Duration::from_secs(1);
        /// Subscriptions per connection.
        max_subscriptions: usize [Num] = 65_536;
        /// Subscriptions on the whole broker, all connections together (each costs its
        /// state and index entries, a few hundred bytes and its filter).
        max_total_subscriptions: usize [Num] = 4 * 1024 * 1024;
        /// Messages one connection may publish per second (0: unlimited).
        publish_msgs_per_sec: u64 [Num] = 0;
        /// Messages one connection may publish at once.
        publish_msgs_burst: u64 [Num] = publish_msgs_per_sec, "publish_msgs_per_sec";
        /// Bytes one connection may publish per second, e.g. 1MiB (0: unlimited).
        publish_bytes_per_sec: usize [Size] = 0;
        /// Bytes one connection may publish at once.
        publish_bytes_burst: usize [Size] = publish_bytes_per_sec, "publish_bytes_per_sec";
        /// Over a publish rate: stop reading the socket (slow) or refuse the publish.
        rate_action: RateAction [Choice] = RateAction::Slow;
        /// Owner shard's inbound queue depth, in batches, above which low-priority
        /// publishes are shed.
        shed_queue_depth: usize [Num] = worker_queue.saturating_mul(3) / 4,
            "3/4 of worker_queue";
        /// Shed publishes below this priority under overload; 0 sheds nothing, 8 sheds
        /// every priority.
        shed_below_priority: u8 [Num] = 0;
    }
    file {
        #[serde(default)]
        subject_rate: Vec<FileSubjectRate>,
    }
    derived {
        /// Publish rates per subject pattern, each enforced per connection (config file
        /// only: `[[admission.subject_rate]]`).
        subject_rates: Vec<SubjectRate> = file
            .admission
            .iter()
            .flat_map(|a| &a.subject_rate)
            .map(FileSubjectRate::resolve)
            .collect();
    }
    }
}

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
    pub flow: FlowConfig,
    pub store: StoreConfig,
    /// The monitoring endpoint's bounds (connections, request size and time, paging).
    pub monitoring: MonitorLimits,
    /// Presence's grace window and bounds. Flags `--presence-grace`, `--max-presence-*`.
    pub presence: PresenceConfig,
    pub log: LogConfig,
    /// Admission control: connection, subscription and publish-rate limits, and load
    /// shedding. Flags `--max-connections`..., config section `[admission]`.
    pub admission: AdmissionConfig,
    /// TLS on every port (text, binary, WebSocket unless `websocket.no_tls`); `None` when
    /// off. Flags `--tls-*`, config section `[tls]`.
    pub tls: Option<TlsOptions>,
    /// The WebSocket listener; `None` when off. Flags `--websocket-*`, config section
    /// `[websocket]`.
    pub websocket: Option<WebSocketOptions>,
    /// What the flags and the file said about TLS, for the checks of [`Config::validate`].
    transport_given: transport::Given,
    /// Who may connect (token, users, nkeys, JWT, permissions) and who may read the
    /// monitor. Flags `--auth-token`, `--user`/`--pass`, `--no-auth-user`,
    /// `--monitor-token`; file keys `auth_token`, `[[users]]`, `[jwt]`...
    pub auth: AuthSettings,
    /// The authentication flags and the config file, to resolve the authentication
    /// settings again on SIGHUP ([`Config::reload_auth`]).
    auth_source: (AuthArgs, Option<PathBuf>),
    /// The bridges to NATS clusters (`docs/scale-out.md`). Flags `--bridge-*`, config
    /// tables `[[bridge]]`.
    pub bridges: Vec<tern_bridge::Settings>,
    /// The bridge flags and tables, for the checks of [`Config::validate`].
    bridge_given: bridge::Given,
}

impl Default for Config {
    fn default() -> Self {
        Config::resolve(Args::default(), FileConfig::default())
    }
}

/// The `--slow-consumer` flag's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SlowConsumerPolicy {
    /// Keep the connection; its queues drop the lowest-priority, oldest messages.
    Drop,
    /// Also close a consumer that stays over its high-water mark for the grace time.
    Disconnect,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FsyncMode {
    Never,
    Interval,
    Always,
}

impl StoreConfig {
    /// True when nothing is stored.
    pub fn is_off(&self) -> bool {
        self.subjects.is_empty()
    }

    /// The sync policy `fsync` and `fsync_interval` make together.
    pub fn fsync_policy(&self) -> Fsync {
        match self.fsync {
            FsyncMode::Never => Fsync::Never,
            FsyncMode::Interval => Fsync::Interval(self.fsync_interval),
            FsyncMode::Always => Fsync::Always,
        }
    }
}

impl Limits {
    /// The parsing limits the text protocol decoder enforces.
    pub fn text(&self) -> tern_protocol::text::Limits {
        tern_protocol::text::Limits {
            max_control_line: self.max_control_line,
            max_payload: self.max_payload,
            max_subject_tokens: self.max_subject_tokens,
        }
    }

    /// The decoding limits of the binary port: the same `max_payload` and
    /// `max_subject_tokens` as the text port, and the protocol's default room for
    /// everything else in a frame.
    pub fn binary(&self) -> tern_protocol::binary::Limits {
        tern_protocol::binary::Limits {
            max_payload: self.max_payload,
            max_subject_tokens: self.max_subject_tokens,
            ..tern_protocol::binary::Limits::default()
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

/// The binary port's default address.
pub const DEFAULT_BINARY_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 4224);

/// The monitoring listener's default address.
pub const DEFAULT_MONITOR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8222);

/// The text port's default address.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 4222);

fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// A publish rate: messages and bytes per second, each a token bucket with its own burst.
/// A rate of 0 is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubjectRate {
    /// A subject filter (`chat.>`, `presence.*`); checked when the file is read.
    pub subject: String,
    #[serde(flatten)]
    pub limit: RateLimit,
}

/// What happens to a publisher over one of its rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RateAction {
    /// The publish goes through, then the broker stops reading the connection's socket
    /// until its bucket has refilled: TCP backpressure, never an error.
    Slow,
    /// The publish is refused with an error; the connection stays open.
    Refuse,
}

impl AdmissionConfig {
    /// The publish rate of one connection, whatever the subject.
    pub fn publish(&self) -> RateLimit {
        RateLimit {
            msgs_per_sec: self.publish_msgs_per_sec,
            msgs_burst: self.publish_msgs_burst,
            bytes_per_sec: self.publish_bytes_per_sec as u64,
            bytes_burst: self.publish_bytes_burst as u64,
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
        self.publish()
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

/// One `[[admission.subject_rate]]` table. Checked as it is read, so that a bad pattern or
/// a table that limits nothing is reported with its file and line.
#[derive(Debug, Deserialize)]
#[serde(try_from = "RawSubjectRate")]
pub(crate) struct FileSubjectRate {
    subject: String,
    msgs_per_sec: u64,
    msgs_burst: Option<u64>,
    bytes_per_sec: Option<usize>,
    bytes_burst: Option<usize>,
}

impl FileSubjectRate {
    fn resolve(&self) -> SubjectRate {
        SubjectRate {
            subject: self.subject.clone(),
            limit: RateLimit::new(
                self.msgs_per_sec,
                self.msgs_burst,
                self.bytes_per_sec.unwrap_or(0) as u64,
                self.bytes_burst.map(|b| b as u64),
            ),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubjectRate {
    subject: String,
    #[serde(default)]
    msgs_per_sec: u64,
    msgs_burst: Option<u64>,
    #[serde(default)]
    bytes_per_sec: Option<declare::FileValue<declare::Size, usize>>,
    #[serde(default)]
    bytes_burst: Option<declare::FileValue<declare::Size, usize>>,
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
        let bytes_per_sec = r.bytes_per_sec.map(|v| v.0);
        if r.msgs_per_sec == 0 && bytes_per_sec.unwrap_or(0) == 0 {
            return Err(format!(
                "subject_rate for `{}` limits nothing: give msgs_per_sec or bytes_per_sec",
                r.subject
            ));
        }
        Ok(FileSubjectRate {
            subject: r.subject,
            msgs_per_sec: r.msgs_per_sec,
            msgs_burst: r.msgs_burst,
            bytes_per_sec,
            bytes_burst: r.bytes_burst.map(|v| v.0),
        })
    }
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
        let config = Config::resolve(args, file);
        config.validate()?;
        Ok(config)
    }

    /// The authentication settings as the flags and the config file say them now (SIGHUP):
    /// the file is read again; the rest of the configuration does not change.
    pub fn reload_auth(&self) -> Result<AuthSettings, ConfigError> {
        let (args, path) = &self.auth_source;
        let file = match path {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let settings = auth::resolve(args, &file_auth(&file));
        auth::validate(&settings)?;
        Ok(settings)
    }

    /// Flags over file over defaults, without the checks.
    fn resolve(args: Args, file: FileConfig) -> Config {
        let Settings {
            limits,
            queues,
            flow,
            store,
            monitoring,
            presence,
            admission,
        } = Settings::resolve(&args, &file);
        let (tls, websocket) =
            transport::resolve(&args.transport, file.tls.as_ref(), file.websocket.as_ref());
        let auth = auth::resolve(&args.auth, &file_auth(&file));
        let server_name = args
            .server_name
            .clone()
            .or(file.server_name.clone())
            .unwrap_or_else(|| "ternd".to_string());
        let bridges = bridge::resolve(
            &args.bridge,
            file.bridge.as_deref(),
            &server_name,
            (!store.is_off()).then_some(store.data_dir.as_path()),
        );
        Config {
            listen: args.listen.or(file.listen).unwrap_or(DEFAULT_LISTEN),
            binary_listen: if args.no_binary {
                None
            } else {
                AddrOrOff::resolve(
                    args.binary_listen,
                    file.binary_listen,
                    Some(DEFAULT_BINARY_LISTEN),
                )
            },
            workers: args
                .workers
                .or(file.workers)
                .unwrap_or_else(default_workers),
            pin: !args.no_pin && file.pin.unwrap_or(true),
            server_name,
            monitor: if args.no_monitor {
                None
            } else {
                AddrOrOff::resolve(args.monitor, file.monitor, Some(DEFAULT_MONITOR))
            },
            sequence_headers: args.sequence_headers || file.sequence_headers.unwrap_or(false),
            limits,
            queues,
            flow,
            store,
            monitoring,
            presence,
            log: LogConfig {
                level: args
                    .log_level
                    .or(file.log_level)
                    .unwrap_or_else(|| "info".to_string()),
                format: args
                    .log_format
                    .or(file.log_format)
                    .unwrap_or(LogFormat::Text),
            },
            admission,
            tls,
            websocket,
            transport_given: transport::Given(args.transport, file.tls),
            auth,
            auth_source: (args.auth, args.config),
            bridges,
            bridge_given: bridge::Given(args.bridge, file.bridge),
        }
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
        let bridge::Given(args, file) = &self.bridge_given;
        bridge::validate(
            args,
            file.as_deref(),
            &self.bridges,
            self.binary_listen.is_some(),
            self.queues.sub_queue_max_messages,
        )?;
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
        if l.max_payload == 0 || l.max_payload > 64 * MIB {
            return invalid("max_payload", "must be between 1 byte and 64MiB");
        }
        if l.max_subject_tokens == 0 {
            return invalid("max_subject_tokens", "must be at least 1");
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
        if l.auth_timeout < Duration::from_millis(10) {
            return invalid("auth_timeout", "must be at least 10ms");
        }
        if l.lame_duck_grace_period >= l.lame_duck_duration {
            return invalid(
                "lame_duck_grace_period",
                "must be below lame_duck_duration (clients are closed between the two)",
            );
        }
        if l.worker_queue == 0 {
            return invalid("worker_queue", "must be at least 1");
        }
        if l.worker_queue_bytes < 64 * KIB {
            return invalid("worker_queue_bytes", "must be at least 64KiB");
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
        if q.write_buffer < KIB || q.write_buffer > l.max_pending / 2 {
            return invalid(
                "write_buffer",
                "must be at least 1KiB and at most half of max_pending",
            );
        }
        if q.text_priority > 7 {
            return invalid("text_priority", "must be between 0 and 7");
        }
        let f = &self.flow;
        if f.max_queued_bytes < MIB {
            return invalid("max_queued_bytes", "must be at least 1MiB");
        }
        if f.publisher_stall_window < Duration::from_millis(1)
            || f.publisher_stall_window > Duration::from_secs(10)
        {
            return invalid("publisher_stall_window", "must be between 1ms and 10s");
        }
        let st = &self.store;
        if st.log_size < MIB {
            return invalid("log_size", "must be at least 1MiB");
        }
        if st.log_size < l.max_payload * 2 {
            return invalid("log_size", "must hold at least two messages of max_payload");
        }
        if st.fsync == FsyncMode::Interval && st.fsync_interval < Duration::from_millis(10) {
            return invalid("fsync_interval", "must be at least 10ms");
        }
        for filter in &st.subjects {
            if let Err(e) = tern_protocol::subject::validate_filter(filter.as_bytes()) {
                return Err(ConfigError::Invalid {
                    key: "store",
                    reason: format!("`{filter}` is not a subject filter: {e}"),
                });
            }
        }
        if st.dedupe_max_ids == 0 {
            return invalid("dedupe_max_ids", "must be at least 1");
        }
        if st.max_message_id == 0 || st.max_message_id > u16::MAX as usize {
            return invalid("max_message_id", "must be between 1 and 65535 bytes");
        }
        if st.replay_batch == 0 {
            return invalid("replay_batch", "must be at least 1");
        }
        if st.replay_bytes == 0 {
            return invalid("replay_bytes", "must be at least 1 byte");
        }
        if st.max_replays_per_conn == 0 {
            return invalid("max_replays_per_conn", "must be at least 1");
        }
        if st.max_replays == 0 {
            return invalid("max_replays", "must be at least 1");
        }
        if st.replay_queue_depth == 0 {
            return invalid("replay_queue_depth", "must be at least 1");
        }
        let m = &self.monitoring;
        if m.monitor_max_connections == 0 {
            return invalid("monitor_max_connections", "must be at least 1");
        }
        if m.monitor_max_request_head < 256 || m.monitor_max_request_head > MIB {
            return invalid(
                "monitor_max_request_head",
                "must be between 256 bytes and 1MiB",
            );
        }
        if m.monitor_request_timeout < Duration::from_millis(10) {
            return invalid("monitor_request_timeout", "must be at least 10ms");
        }
        if m.monitor_max_limit == 0 {
            return invalid("monitor_max_limit", "must be at least 1");
        }
        self.admission.validate(l)?;
        let transport::Given(args, file) = &self.transport_given;
        transport::validate(
            args,
            file.as_ref(),
            self.tls.as_ref(),
            self.websocket.as_ref(),
            l.max_payload,
        )?;
        auth::validate(&self.auth)?;
        let p = &self.presence;
        for (key, value) in [
            ("max_presence_members", p.max_presence_members),
            ("max_presence_rooms", p.max_presence_rooms),
            ("max_presence_joins", p.max_presence_joins),
        ] {
            if value == 0 {
                return invalid(key, "must be at least 1");
            }
        }
        if p.max_presence_info > l.max_payload {
            return invalid("max_presence_info", "must be at most max_payload");
        }
        if let Some(w) = &self.websocket {
            let taken = [Some(self.listen), self.binary_listen, self.monitor];
            if taken.into_iter().flatten().any(|a| same(a, w.listen)) {
                return invalid(
                    "websocket_listen",
                    "must not be the address of another listener",
                );
            }
        }
        Ok(())
    }
}

/// The file's authentication keys.
fn file_auth(file: &FileConfig) -> auth::FileAuth {
    auth::FileAuth {
        auth_token: file.auth_token.clone(),
        no_auth_user: file.no_auth_user.clone(),
        users: file.users.clone(),
        jwt: file.jwt.clone(),
        default_permissions: file.default_permissions.clone(),
        monitor_token: file.monitor_token.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn with_file(text: &str) -> Result<Config, ConfigError> {
        // A directory per call: tests run in parallel and may write texts of one length.
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("tern-config-test-{}-{call}", std::process::id(),));
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
    fn tls_and_websocket_sections_resolve_and_half_a_tls_setting_is_refused() {
        let c = with_file(
            "[tls]\ncert_file = \"s.pem\"\nkey_file = \"s.key\"\nca_file = \"ca.pem\"\n\
             verify = true\nhandshake_timeout = \"500ms\"\n\
             [websocket]\nlisten = \"0.0.0.0:8443\"\nallowed_origins = [\"https://a.example\"]\n\
             max_message = \"2MiB\"\n",
        )
        .unwrap();
        let tls = c.tls.as_ref().unwrap();
        assert!(tls.settings.verify && tls.settings.ca_file.is_some());
        assert_eq!(tls.handshake_timeout, Duration::from_millis(500));
        let ws = c.websocket.as_ref().unwrap();
        assert!(ws.uses_tls(c.tls.as_ref()), "wss when TLS is on");
        assert_eq!(ws.max_message, 2 << 20);
        // A flag wins over the file.
        let args = Args::parse_from(["ternd", "--websocket-listen", "127.0.0.1:9000"]);
        let c = Config::from_args(args).unwrap();
        assert_eq!(c.websocket.unwrap().listen.port(), 9000);
        assert!(c.tls.is_none());
        for (text, key) in [
            ("[tls]\nkey_file = \"s.key\"\n", "`tls_cert`"),
            ("[tls]\ncert_file = \"s.pem\"\n", "`tls_key`"),
            ("[tls]\nca_file = \"ca.pem\"\n", "`tls_ca`"),
            ("[tls]\nhandshake_first = true\n", "`tls_handshake_first`"),
            (
                "[tls]\ncert_file = \"s.pem\"\nkey_file = \"s.key\"\nverify = true\n",
                "`tls_verify`",
            ),
            (
                "[websocket]\nlisten = \"0.0.0.0:8080\"\n",
                "`websocket_listen`",
            ),
            (
                "[websocket]\nlisten = \"127.0.0.1:8080\"\nallowed_origins = [\"nope\"]\n",
                "`websocket_allowed_origins`",
            ),
        ] {
            let err = with_file(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text:?}: {err}");
        }
        // Plain WebSocket off loopback when asked for.
        assert!(with_file("[websocket]\nlisten = \"0.0.0.0:8080\"\nno_tls = true\n").is_ok());
        // A typo in a section is an error naming the line.
        let err = with_file("[tls]\ncert = \"s.pem\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
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
    fn bridges_from_flags_and_file() {
        let c = Config::from_args(Args::parse_from([
            "ternd",
            "--bridge-upstream",
            "nats://u:p@10.0.0.1:4222,10.0.0.2",
            "--bridge-export",
            "orders.>",
            "--bridge-import",
            "prices.>,alerts.*",
        ]))
        .unwrap();
        let b = &c.bridges[0];
        assert_eq!(b.name, "ternd", "the server name by default");
        assert_eq!(b.servers[0].user.as_deref(), Some("u"));
        assert_eq!(b.servers[1].addr, "10.0.0.2:4222");
        assert_eq!(b.import, ["prices.>", "alerts.*"]);
        assert!(b
            .state_file
            .as_ref()
            .unwrap()
            .ends_with("bridge-ternd.state"));
        let c = with_file(
            "[[bridge]]\nname = \"edge-1\"\nservers = [\"nats://n1:4222\"]\nexport = [\"a.>\"]\n\
             reply_timeout = \"30s\"\n\n[[bridge]]\nname = \"edge-2\"\nservers = [\"n2\"]\n\
             import_static = [\"b.*\"]\n",
        )
        .unwrap();
        assert_eq!(c.bridges.len(), 2);
        assert_eq!(c.bridges[0].reply_timeout, Duration::from_secs(30));
        assert_eq!(c.bridges[1].import_static, ["b.*"]);
        // Without a store there is no position to keep.
        let c = Config::from_args(Args::parse_from([
            "ternd",
            "--no-store",
            "--bridge-upstream",
            "n1",
            "--bridge-export",
            "a",
        ]))
        .unwrap();
        assert!(c.bridges[0].state_file.is_none());
    }

    #[test]
    fn bad_bridges_are_refused_with_the_line_or_key() {
        // A bad filter or URL in the file names its line.
        let err = with_file("[[bridge]]\nservers = [\"n1\"]\nexport = [\"a..b\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3"), "{err}");
        let err = with_file("[[bridge]]\nservers = [\"ws://n1\"]\nexport = [\"a\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("nats://"), "{err}");
        let err = with_file("[[bridge]]\nservers = [\"n1\"]\nexprot = [\"a\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("exprot"), "{err}");
        // Combinations that cannot work name the key.
        for (file, key) in [
            ("[[bridge]]\nservers = [\"n1\"]\n", "bridge.export"),
            (
                "[[bridge]]\nservers = [\"n1\"]\nimport = [\"a.>\"]\nimport_static = [\"a.b\"]\n",
                "bridge.import_static",
            ),
            (
                "[[bridge]]\nservers = [\"n1\"]\nexport = [\"a\"]\n[[bridge]]\nservers = [\"n2\"]\nexport = [\"b\"]\n",
                "bridge.name",
            ),
            ("binary_listen = \"off\"\n[[bridge]]\nservers = [\"n1\"]\nexport = [\"a\"]\n", "binary_listen"),
            (
                "sub_queue_max_messages = 1000\n[[bridge]]\nservers = [\"n1\"]\nexport = [\"a\"]\n",
                "bridge.export_window",
            ),
        ] {
            let err = with_file(file).unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")), "{file}: {err}");
        }
        let err = Config::from_args(Args::parse_from(["ternd", "--bridge-export", "a"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--bridge-upstream"), "{err}");
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
    fn monitoring_bounds_flags_file_and_checks() {
        let m = Config::from_args(Args::default()).unwrap().monitoring;
        assert_eq!(m.monitor_max_connections, 64);
        assert_eq!(m.monitor_max_request_head, 8 << 10);
        assert_eq!(m.monitor_request_timeout, Duration::from_secs(5));
        assert_eq!(m.monitor_max_limit, 4096);
        let c = with_file("monitor_max_connections = 8\nmonitor_request_timeout = \"300ms\"\n")
            .unwrap();
        assert_eq!(c.monitoring.monitor_max_connections, 8);
        assert_eq!(
            c.monitoring.monitor_request_timeout,
            Duration::from_millis(300)
        );
        let c = Config::from_args(Args::parse_from([
            "ternd",
            "--monitor-max-limit",
            "100000",
            "--monitor-max-request-head",
            "1KiB",
        ]))
        .unwrap();
        assert_eq!(c.monitoring.monitor_max_limit, 100_000);
        assert_eq!(c.monitoring.monitor_max_request_head, 1024);
        let err = Config::from_args(Args::parse_from([
            "ternd",
            "--monitor-max-connections",
            "0",
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("`monitor_max_connections`"), "{err}");
        let err = with_file("monitor_max_request_head = 16\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`monitor_max_request_head`"), "{err}");
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
        assert!(a.publish().is_off());
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
            a.publish(),
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
        assert_eq!((a.publish().msgs_per_sec, a.publish().msgs_burst), (10, 2));
        assert_eq!(
            (a.publish().bytes_per_sec, a.publish().bytes_burst),
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
        assert_eq!(
            c.store.fsync_policy(),
            Fsync::Interval(Duration::from_secs(1))
        );
        assert_eq!(c.store.subjects, [">"]);
        assert_eq!(c.store.dedupe_window, Duration::from_secs(120));
        let c = with_file(
            "data_dir = \"/var/lib/tern\"\nlog_size = \"8MiB\"\nfsync = \"always\"\n\
             store = [\"chat.>\", \"prices.*\"]\ndedupe_window = \"30s\"\n",
        )
        .unwrap();
        assert_eq!(c.store.data_dir, PathBuf::from("/var/lib/tern"));
        assert_eq!(c.store.log_size, 8 * 1024 * 1024);
        assert_eq!(c.store.fsync_policy(), Fsync::Always);
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
        assert_eq!(
            c.store.fsync_policy(),
            Fsync::Interval(Duration::from_millis(250))
        );
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
