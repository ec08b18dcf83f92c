//! `tern-bench`: run one scenario against a broker, or the standard suite against `ternd`
//! (over its text and binary ports) and `nats-server`, to compare (`suite --runs N`:
//! every scenario N times, interleaved, and the medians). Prints tables on stdout; `--json
//! FILE` writes every figure (of every run).
//!
//! `tern-bench soak` starts its own `ternd` and runs the soak (see
//! `tern_bench::scenario::soak`), printing its report.
//!
//! `tern-bench transports` runs `pubsub`, `latency` and `conns` over plain TCP, TLS,
//! WebSocket and WebSocket over TLS against `ternd` and `nats-server`
//! (`tern_bench::transports`); single scenarios take `--transport` too.
//!
//! `tern-bench profile SCENARIO [FLAGS]` (`make profile`) starts `ternd` under `perf
//! record`, runs that one scenario against it, stops `ternd` with SIGTERM, and draws
//! where it spent its CPU (`tern_bench::profile`); `tern-bench flamegraph` draws an
//! existing `perf.data`.
//!
//! Exit status: 0 when every scenario ran clean (every soak check passed), 1 when any
//! reported a problem (a delivered count short of or over the expected one, a disconnect,
//! a timeout, a broker that did not start, a failed soak check) — always after running
//! every scenario, printing everything and writing the JSON, then naming each failure
//! with its target and scenario on stderr — and 1 when the harness itself failed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use tern_bench::broker::BrokerProcess;
use tern_bench::driver::{Dial, Protocol, Split, TlsClient, Transport};
use tern_bench::plot;
use tern_bench::profile;
use tern_bench::report::{self, Report, TargetReport};
use tern_bench::scenario::audience::presence::PresenceConfig;
use tern_bench::scenario::audience::AudienceConfig;
use tern_bench::scenario::catchup::CatchupConfig;
use tern_bench::scenario::conns::ConnsConfig;
use tern_bench::scenario::latency::LatencyConfig;
use tern_bench::scenario::pubsub::PubSubConfig;
use tern_bench::scenario::soak::{self, SoakConfig};
use tern_bench::scenario::stuck::{self, StuckConfig};
use tern_bench::scenario::{fanout, parse_duration, queue, Limit, Scenario};
use tern_bench::suite::{self, SuiteConfig, Target};
use tern_bench::transports::{self, TransportsConfig};

#[derive(Parser)]
#[command(
    name = "tern-bench",
    version,
    about = "Benchmark a Tern (or NATS) broker",
    after_help = "Exits with status 1 when any scenario reported a problem (lost messages, \
                  disconnects, timeouts), after printing every figure."
)]
struct Cli {
    /// Write every figure of the run to this JSON file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// P publishers, S subscribers: throughput.
    Pubsub {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long, short = 'p', default_value_t = 1)]
        publishers: usize,
        #[arg(long, short = 's', default_value_t = 1)]
        subscribers: usize,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// 1 publisher to N subscribers.
    Fanout {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long, short = 's', default_value_t = 10)]
        subscribers: usize,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// A queue group of N members: per-member counts and the spread.
    Queue {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long, short = 'p', default_value_t = 1)]
        publishers: usize,
        #[arg(long, short = 'm', default_value_t = 4)]
        members: usize,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// A fixed publish rate: publish-to-deliver latency percentiles (coordinated
    /// omission corrected).
    Latency {
        #[command(flatten)]
        target: TargetArgs,
        /// Messages per second.
        #[arg(long, default_value_t = 10_000)]
        rate: u64,
        #[arg(long, short = 's', default_value_t = 1)]
        subscribers: usize,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// One stuck subscriber among fast ones: the fast subscribers' latency at a fixed
    /// rate alone (phase A), then with one more subscriber on the subject that never reads
    /// (phase B); flags a p99 ratio B/A above 2 and any message a fast one missed.
    Stuck {
        #[command(flatten)]
        target: TargetArgs,
        /// Messages per second.
        #[arg(long, default_value_t = stuck::DEFAULT_RATE)]
        rate: u64,
        /// Fast subscribers (each reads every message).
        #[arg(long, short = 's', default_value_t = stuck::DEFAULT_SUBSCRIBERS)]
        subscribers: usize,
        /// Payload bytes per message (at least 21).
        #[arg(long, visible_alias = "size", default_value_t = stuck::DEFAULT_SIZE)]
        payload: usize,
        /// How long each phase publishes (e.g. 500ms, 3s).
        #[arg(long, value_parser = parse_duration, default_value = "3s")]
        duration: Duration,
        /// How long to publish at the rate, unmeasured, before phase A.
        #[arg(long, value_parser = parse_duration, default_value = "1s")]
        warmup: Duration,
        /// The stuck subscriber's receive buffer (SO_RCVBUF), in bytes.
        #[arg(long, default_value_t = stuck::DEFAULT_RECV_BUFFER)]
        recv_buffer: usize,
    },
    /// N idle connections: connect rate and broker memory per connection.
    Conns {
        #[command(flatten)]
        target: TargetArgs,
        /// Connections to open (the broker's VmRSS is read before and after when
        /// `--server-pid` names it).
        #[arg(long, short = 'n', default_value_t = 1000)]
        count: usize,
    },
    /// Users in rooms of Zipf sizes plus a viral room, human-rate publishing, churn and a
    /// reconnect storm: latency per room size, reconnect time, missed and duplicated.
    Audience {
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        audience: AudienceArgs,
    },
    /// Replay speed from ternd's ring log: store N messages, then time a subscriber that
    /// catches up on all of them (binary protocol).
    Catchup {
        #[command(flatten)]
        target: TargetArgs,
        /// Messages to store, then replay.
        #[arg(long, short = 'n', default_value_t = 300_000)]
        count: u64,
        /// Payload bytes per message.
        #[arg(long, default_value_t = 128)]
        size: usize,
    },
    /// Start ternd (and nats-server), run the standard scenarios against each, stop them
    /// (`--runs N`: N interleaved runs of each, medians with their min–max).
    Suite(SuiteArgs),
    /// pubsub 1x1, latency at a fixed rate and idle connections over tcp, tls, websocket
    /// and wss, against ternd (text and binary) and nats-server, each cell on a fresh
    /// broker, a few runs each: medians, ratios, memory per connection, exact counts.
    Transports(TransportsArgs),
    /// Start ternd with small budgets and run the soak: an audience, acknowledged traffic
    /// through a chaos proxy and every kind of hostile client at once; check memory,
    /// exactly-once delivery, the limits' counters, responsiveness and a clean exit.
    Soak(SoakArgs),
    /// Start ternd under `perf record`, run one scenario against it (e.g. `profile pubsub
    /// --size 16`), stop ternd with SIGTERM, then write a flame graph SVG and print the
    /// top functions by self time. Needs perf.
    Profile(ProfileArgs),
    /// Draw a flame graph SVG of a `perf.data` (through `perf script`) and print the top
    /// functions by self time.
    Flamegraph(FlamegraphArgs),
}

#[derive(Args)]
struct ProfileArgs {
    /// The ternd executable.
    #[arg(long, default_value = "target/release/ternd")]
    ternd: PathBuf,
    /// ternd's --workers.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Where perf writes its samples.
    #[arg(long, default_value = "target/bench/perf.data")]
    perf_data: PathBuf,
    /// What to ask of `perf record`, before `-o PERF_DATA --` (e.g. `-e cpu-clock
    /// --call-graph dwarf -F 999` for full stacks of a build without frame pointers).
    #[arg(long, default_value = profile::DEFAULT_RECORD_FLAGS, allow_hyphen_values = true)]
    perf_flags: String,
    /// The flame graph [default: target/bench/profile-SCENARIO.svg]; the folded stacks go
    /// beside it (`.folded`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// How many functions the self-time table lists.
    #[arg(long, default_value_t = profile::DEFAULT_TOP)]
    top: usize,
    /// The scenario and its flags, as for a single run (`pubsub --size 16`); its
    /// `--server` and `--server-pid` are the ternd this starts.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    scenario: Vec<String>,
}

#[derive(Args)]
struct TransportsArgs {
    /// The ternd executable.
    #[arg(long, default_value = "target/release/ternd")]
    ternd: PathBuf,
    /// ternd's --workers.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// ternd's protocols, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "text,binary")]
    protocols: Vec<Protocol>,
    /// Also run against this nats-server executable (its TLS client port and its
    /// WebSocket listener), and print ratios (ternd / nats-server).
    #[arg(long)]
    nats_server: Option<PathBuf>,
    /// The transports, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "tcp,tls,websocket,wss"
    )]
    transports: Vec<Transport>,
    /// The short run (a check, not a measurement): 300ms per scenario at 2000 msgs/s, 50
    /// connections, one run; the flags below override it.
    #[arg(long)]
    short: bool,
    /// How long pubsub and latency publish [default: 3s].
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Payload bytes of pubsub and latency.
    #[arg(long, default_value_t = 128)]
    size: usize,
    /// latency's rate, msgs/s [default: 10000].
    #[arg(long)]
    rate: Option<u64>,
    /// Idle connections of conns [default: 2000].
    #[arg(long)]
    conns: Option<usize>,
    /// Runs of every cell (medians over the clean ones) [default: 3].
    #[arg(long)]
    runs: Option<usize>,
    /// Where broker logs go.
    #[arg(long, default_value = "target/bench/transports")]
    out_dir: PathBuf,
}

#[derive(Args)]
struct FlamegraphArgs {
    /// The samples, as `perf record` wrote them.
    #[arg(long, default_value = "target/bench/perf.data")]
    perf_data: PathBuf,
    /// The flame graph; the folded stacks go beside it (`.folded`).
    #[arg(long, default_value = "target/bench/profile.svg")]
    out: PathBuf,
    /// The flame graph's title.
    #[arg(long, default_value = "ternd")]
    title: String,
    /// How many functions the self-time table lists.
    #[arg(long, default_value_t = profile::DEFAULT_TOP)]
    top: usize,
}

#[derive(Args)]
struct SoakArgs {
    /// The ternd executable.
    #[arg(long, default_value = "target/release/ternd")]
    ternd: PathBuf,
    /// How long the load runs [default: 10m, 60s with --short]; the first third (at most
    /// 90 s) is warm-up, left out of the memory flatness check.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// The CI-sized run (fewer clients of each class; 60 s unless --duration says otherwise).
    #[arg(long)]
    short: bool,
    /// Audience users [default: 200, 40 with --short].
    #[arg(long)]
    users: Option<usize>,
    /// Where ternd's log goes.
    #[arg(long, default_value = "target/soak")]
    out_dir: PathBuf,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Args)]
struct TargetArgs {
    /// The broker's address [default: 127.0.0.1:4222 for text, 127.0.0.1:4224 for
    /// binary].
    #[arg(long)]
    server: Option<SocketAddr>,
    /// The wire protocol: `text` (NATS; ternd or nats-server) or `binary` (ternd's 4224).
    #[arg(long, value_enum, default_value_t = Protocol::Text)]
    protocol: Protocol,
    /// What carries it: `tcp`, `tls` (trusting --tls-ca), `websocket` or `wss` (give the
    /// WebSocket port as --server; ternd serves the binary protocol on path /tern). For
    /// pubsub, fanout, queue, latency, conns and catchup.
    #[arg(long, value_enum, default_value_t = Transport::Tcp)]
    transport: Transport,
    /// The CA certificate(s) (PEM) a TLS transport trusts.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// The name the broker's certificate must carry [default: the --server address's IP].
    #[arg(long)]
    tls_server_name: Option<String>,
    /// The broker's process id (same machine): its CPU time per delivered message is
    /// read from /proc/PID/stat over each measured window (`-` without it), and `conns`
    /// reads its memory.
    #[arg(long, visible_alias = "broker-pid")]
    server_pid: Option<u32>,
    /// Subscribers connect here instead (same protocol and transport): a path between
    /// two brokers, e.g. two nodes of a NATS cluster or two bridged ternd edges. For
    /// pubsub, fanout and latency; the warm-up waits until messages flow along it.
    #[arg(long, value_name = "ADDR")]
    subscribe_server: Option<SocketAddr>,
}

impl TargetArgs {
    fn addr(&self) -> SocketAddr {
        self.server.unwrap_or(self.protocol.default_addr())
    }

    /// Where and how to connect, as the flags say.
    fn dial(&self) -> Result<Dial> {
        if self.transport.is_websocket() && self.server.is_none() {
            bail!(
                "--transport {} needs --server (the WebSocket port)",
                self.transport.name()
            );
        }
        let addr = self.addr();
        let tls = match (&self.tls_ca, self.transport.is_tls()) {
            (Some(ca), true) => {
                let name = self
                    .tls_server_name
                    .clone()
                    .unwrap_or_else(|| addr.ip().to_string());
                Some(TlsClient::trusting_file(ca, &name)?)
            }
            (None, true) => bail!("--transport {} needs --tls-ca FILE", self.transport.name()),
            (_, false) => None,
        };
        Ok(Dial::new(addr, self.transport, tls)?)
    }
}

#[derive(Args)]
struct LoadArgs {
    /// Payload bytes per message.
    #[arg(long, default_value_t = 128)]
    size: usize,
    /// Messages per publisher (instead of --duration).
    #[arg(long, conflicts_with = "duration")]
    count: Option<u64>,
    /// How long to publish (e.g. 500ms, 3s).
    #[arg(long, value_parser = parse_duration, default_value = "3s")]
    duration: Duration,
    /// Subscribe to this filter instead of the published subject (a wildcard matching it,
    /// e.g. `bench.*`), for pubsub, fanout and latency.
    #[arg(long)]
    filter: Option<String>,
}

impl LoadArgs {
    fn limit(&self) -> Limit {
        self.count
            .map_or(Limit::Duration(self.duration), Limit::Count)
    }
}

#[derive(Args)]
struct AudienceArgs {
    /// Users, one connection each.
    #[arg(long, short = 'u', default_value_t = 500)]
    users: usize,
    /// Ordinary rooms (Zipf ranks).
    #[arg(long, default_value_t = 20)]
    rooms: usize,
    /// Zipf exponent of room sizes (0 = uniform).
    #[arg(long, default_value_t = 1.0)]
    zipf: f64,
    /// Fraction of users in the one viral room (0 = none).
    #[arg(long, default_value_t = 0.2)]
    viral: f64,
    /// Mean gap between one user's messages (Poisson).
    #[arg(long, value_parser = parse_duration, default_value = "3s")]
    interval: Duration,
    /// Payload bytes (at least 21).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// How long users publish.
    #[arg(long, value_parser = parse_duration, default_value = "20s")]
    duration: Duration,
    /// Users leaving per second over the whole audience (0 = no churn).
    #[arg(long, default_value_t = 5.0)]
    churn: f64,
    /// Mean time a user who left stays away.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    away: Duration,
    /// When every connection drops at once [default: half the duration].
    #[arg(long, value_parser = parse_duration)]
    storm_at: Option<Duration>,
    /// No reconnect storm.
    #[arg(long, conflicts_with = "storm_at")]
    no_storm: bool,
    /// First backoff window of a reconnect (full jitter: a uniform wait in [0, window]).
    #[arg(long, value_parser = parse_duration, default_value = "100ms")]
    backoff_base: Duration,
    /// Largest backoff window.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    backoff_cap: Duration,
    /// A user not resubscribed this long after its drop gives up (a problem).
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    reconnect_timeout: Duration,
    /// How long a leaving user waits for messages still in flight to it.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    linger: Duration,
    /// Threads playing the users.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Users also join their rooms' presence; report presence events/s, events the grace
    /// window suppressed, how long after the storm rooms' counts are right, and members
    /// wrongly present or absent once settled (text protocol only).
    #[arg(long)]
    presence: bool,
    /// The broker's presence grace window (ternd's --presence-grace; it must match).
    #[arg(long, value_parser = parse_duration, default_value = "10s", requires = "presence")]
    presence_grace: Duration,
    /// Users authenticate as u<index> with this password, so a member survives its
    /// reconnects (ternd must know users u0..u<N-1>); without it, members are
    /// u<index>#<client id>.
    #[arg(long, requires = "presence")]
    presence_password: Option<String>,
}

impl AudienceArgs {
    fn config(&self) -> AudienceConfig {
        AudienceConfig {
            users: self.users,
            rooms: self.rooms,
            zipf_exponent: self.zipf,
            viral_fraction: self.viral,
            message_interval: self.interval,
            size: self.size,
            duration: self.duration,
            churn: self.churn,
            away: self.away,
            storm_at: if self.no_storm {
                None
            } else {
                Some(self.storm_at.unwrap_or(self.duration / 2))
            },
            backoff_base: self.backoff_base,
            backoff_cap: self.backoff_cap,
            reconnect_timeout: self.reconnect_timeout,
            linger: self.linger,
            threads: self.threads,
            seed: self.seed,
            presence: self.presence.then(|| PresenceConfig {
                grace: self.presence_grace,
                password: self.presence_password.clone(),
                ..PresenceConfig::default()
            }),
            ..AudienceConfig::default()
        }
    }
}

#[derive(Args)]
struct SuiteArgs {
    /// The ternd executable.
    #[arg(long, default_value = "target/release/ternd")]
    ternd: PathBuf,
    /// ternd's --workers.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Which of ternd's ports to run the suite over, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "text,binary")]
    protocols: Vec<Protocol>,
    /// Also run against this nats-server executable, and print ratios (ternd / nats).
    #[arg(long)]
    nats_server: Option<PathBuf>,
    /// How long each throughput and latency scenario publishes (each phase of `stuck`).
    #[arg(long, value_parser = parse_duration, default_value = "3s")]
    duration: Duration,
    /// Idle connections for the conns scenario.
    #[arg(long, default_value_t = 10_000)]
    conns: usize,
    /// Rates for the latency scenarios (msgs/s), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10000,50000")]
    rates: Vec<u64>,
    /// Users for the audience scenario.
    #[arg(long, default_value_t = 500)]
    audience_users: usize,
    /// How long the audience scenario publishes (its storm comes halfway).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    audience_duration: Duration,
    /// Messages the catchup scenario stores, then replays (binary targets only).
    #[arg(long, default_value_t = 300_000)]
    catchup_count: u64,
    /// Run only the scenarios whose label contains one of these (e.g. `latency,conns`).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Run every scenario against every target this many times, interleaved (scenario by
    /// scenario, the targets' order reversed every other pass), and show the median of
    /// each figure over the runs without problems, with its min–max.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Where broker logs and SVG charts go.
    #[arg(long, default_value = "target/bench")]
    out_dir: PathBuf,
}

fn main() -> Result<ExitCode> {
    let cli = Cli::parse();
    match &cli.command {
        Command::Soak(args) => return run_soak(args, cli.json.as_deref()),
        Command::Transports(args) => return run_transports(args, cli.json.as_deref()),
        Command::Profile(args) => return run_profile(args, cli.json.as_deref()),
        Command::Flamegraph(args) => {
            draw_flamegraph(&args.perf_data, &args.out, &args.title, args.top)?;
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let (targets, baseline, runs) = match cli.command {
        Command::Suite(args) => run_suite(&args)?,
        command => (vec![run_one(command)?], None, Vec::new()),
    };
    let report = Report::new(targets, baseline).with_runs(runs);
    if let Some(path) = &cli.json {
        write_json(path, &report)?;
    }
    Ok(exit_status(&report))
}

/// Failure when any scenario reported a problem: each named with its target and
/// scenario on stderr, after everything else was printed and written.
fn exit_status(report: &Report) -> ExitCode {
    let problems = report.problem_count();
    if problems == 0 {
        return ExitCode::SUCCESS;
    }
    for f in report.failures() {
        eprintln!("tern-bench: FAILED {f}");
    }
    eprintln!("tern-bench: {problems} problem(s) reported (PROBLEM lines above); exit status 1");
    ExitCode::FAILURE
}

fn run_one(command: Command) -> Result<TargetReport> {
    let (target, scenario) = match command {
        Command::Pubsub {
            target,
            publishers,
            subscribers,
            load,
        } => (
            target,
            Scenario::PubSub(PubSubConfig {
                filter: load.filter.clone(),
                ..PubSubConfig::new(publishers, subscribers, load.size, load.limit())
            }),
        ),
        Command::Fanout {
            target,
            subscribers,
            load,
        } => (
            target,
            Scenario::Fanout(PubSubConfig {
                filter: load.filter.clone(),
                ..fanout::config(subscribers, load.size, load.limit())
            }),
        ),
        Command::Queue {
            target,
            publishers,
            members,
            load,
        } => (
            target,
            Scenario::Queue(queue::config(publishers, members, load.size, load.limit())),
        ),
        Command::Latency {
            target,
            rate,
            subscribers,
            load,
        } => (
            target,
            Scenario::Latency(LatencyConfig {
                subscribers,
                filter: load.filter.clone(),
                ..LatencyConfig::new(rate, load.size, load.limit())
            }),
        ),
        Command::Stuck {
            target,
            rate,
            subscribers,
            payload,
            duration,
            warmup,
            recv_buffer,
        } => (
            target,
            Scenario::Stuck(StuckConfig {
                warmup,
                recv_buffer,
                ..StuckConfig::new(rate, subscribers, payload, duration)
            }),
        ),
        Command::Conns { target, count } => (
            target,
            Scenario::Conns(ConnsConfig {
                count,
                broker_pid: None,
                settle: Duration::from_millis(500),
            }),
        ),
        Command::Audience { target, audience } => (target, Scenario::Audience(audience.config())),
        Command::Catchup {
            target,
            count,
            size,
        } => (target, Scenario::Catchup(CatchupConfig { count, size })),
        Command::Suite(_)
        | Command::Soak(_)
        | Command::Profile(_)
        | Command::Flamegraph(_)
        | Command::Transports(_) => {
            bail!("not a single scenario")
        }
    };
    if target.transport != Transport::Tcp
        && matches!(scenario, Scenario::Stuck(_) | Scenario::Audience(_))
    {
        bail!(
            "{} runs over plain TCP only (--transport {} is for pubsub, fanout, queue, \
             latency, conns and catchup)",
            scenario.name(),
            target.transport.name()
        );
    }
    if matches!(&scenario, Scenario::Audience(c) if c.presence.is_some())
        && target.protocol != Protocol::Text
    {
        bail!(
            "audience --presence runs over the text protocol only (presence is on the text port)"
        );
    }
    let addr = target.addr();
    let mut driver = target.protocol.driver_via(target.dial()?, "tern-bench");
    if let Some(sub) = target.subscribe_server {
        if target.transport != Transport::Tcp
            || !matches!(
                scenario,
                Scenario::PubSub(_) | Scenario::Fanout(_) | Scenario::Latency(_)
            )
        {
            bail!("--subscribe-server is for pubsub, fanout and latency over plain TCP");
        }
        let dial = Dial::new(sub, Transport::Tcp, None)?;
        driver = Box::new(Split {
            publish: driver,
            subscribe: target.protocol.driver_via(dial, "tern-bench"),
        });
    }
    let result = scenario.run(&*driver, target.server_pid);
    let report = TargetReport {
        target: addr.to_string(),
        address: addr.to_string(),
        protocol: match driver.transport() {
            Transport::Tcp => driver.protocol().into(),
            t => format!("{}+{}", driver.protocol(), t.name()),
        },
        version: None,
        scenarios: vec![result],
    };
    print!("{}", report::render_target(&report));
    Ok(report)
}

/// The target flags of a single-scenario command (`None` for the others).
fn target_of(command: &mut Command) -> Option<&mut TargetArgs> {
    match command {
        Command::Pubsub { target, .. }
        | Command::Fanout { target, .. }
        | Command::Queue { target, .. }
        | Command::Latency { target, .. }
        | Command::Stuck { target, .. }
        | Command::Conns { target, .. }
        | Command::Audience { target, .. }
        | Command::Catchup { target, .. } => Some(target),
        Command::Suite(_)
        | Command::Soak(_)
        | Command::Profile(_)
        | Command::Flamegraph(_)
        | Command::Transports(_) => None,
    }
}

/// Starts ternd under `perf record`, runs one scenario against it, stops ternd, draws the
/// flame graph; exit status 1 when the scenario reported a problem.
fn run_profile(args: &ProfileArgs, json: Option<&Path>) -> Result<ExitCode> {
    // The scenario is parsed first: a mistyped one fails before anything starts.
    let argv = std::iter::once("tern-bench").chain(args.scenario.iter().map(String::as_str));
    let mut command = match Cli::try_parse_from(argv) {
        Ok(cli) => cli.command,
        Err(e) => bail!("profile: not a scenario: {e}"),
    };
    let Some(target) = target_of(&mut command) else {
        bail!("profile: `{}` is not a single scenario", args.scenario[0]);
    };
    if target.server.is_some() || target.server_pid.is_some() {
        bail!("profile: no --server or --server-pid: it profiles the ternd it starts");
    }
    profile::check_perf()?;
    let name = args.scenario[0].as_str();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("target/bench/profile-{name}.svg")));
    for path in [&args.perf_data, &out] {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
    }
    let log = out.with_extension("log");
    let wrapper = profile::record_prefix(&args.perf_flags, &args.perf_data);
    eprintln!(
        "tern-bench profile: {} {} (log: {})",
        wrapper.join(" "),
        args.ternd.display(),
        log.display()
    );
    let mut broker = BrokerProcess::ternd_under(&wrapper, &args.ternd, args.workers, Some(&log))
        .with_context(|| format!("cannot start ternd under perf (see {})", log.display()))?;
    let Some(pid) = broker.wrapped_pid() else {
        bail!("cannot find ternd's process under perf");
    };
    target.server = match target.protocol {
        Protocol::Text => Some(broker.addr),
        Protocol::Binary => broker.binary_addr,
    };
    target.server_pid = Some(pid);
    eprintln!("tern-bench profile: ternd is pid {pid}; running {name}");
    let report = run_one(command)?;
    // ternd is stopped the way an operator stops it; perf sees it exit and writes its
    // samples.
    eprintln!("tern-bench profile: stopping ternd (SIGTERM)");
    match broker.stop_wrapped(Duration::from_secs(30)) {
        Some(status) if status.success() => {}
        Some(status) => eprintln!("tern-bench profile: perf record exited with {status}"),
        None => eprintln!("tern-bench profile: ternd or perf did not stop; killed"),
    }
    drop(broker);
    let title = format!("ternd: {}", report.scenarios[0].label);
    draw_flamegraph(&args.perf_data, &out, &title, args.top)?;
    let report = Report::new(vec![report], None);
    if let Some(path) = json {
        write_json(path, &report)?;
    }
    Ok(exit_status(&report))
}

/// Folds `perf_data`, writes the flame graph to `out` and the folded stacks beside it,
/// and prints the top functions by self time.
fn draw_flamegraph(perf_data: &Path, out: &Path, title: &str, top: usize) -> Result<()> {
    let samples = profile::Profile::read(perf_data)?;
    let svg = samples.flamegraph_svg(title)?;
    std::fs::write(out, svg).with_context(|| format!("cannot write {}", out.display()))?;
    let stacks = out.with_extension("folded");
    std::fs::write(&stacks, &samples.folded)
        .with_context(|| format!("cannot write {}", stacks.display()))?;
    println!();
    print!("{}", samples.render_self_time(top));
    eprintln!(
        "tern-bench: wrote {} and {}",
        out.display(),
        stacks.display()
    );
    Ok(())
}

/// What the suite ran: every target's report (the medians, with several runs), the index
/// of the baseline the others are compared with (nats-server when it ran, else ternd's
/// text port), and with several runs every run's reports, pass by pass.
type SuiteResult = (Vec<TargetReport>, Option<usize>, Vec<Vec<TargetReport>>);

/// Runs the suite, prints its tables and draws its charts.
fn run_suite(args: &SuiteArgs) -> Result<SuiteResult> {
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("cannot create {}", args.out_dir.display()))?;
    // Raised before any broker starts, so the brokers inherit it too.
    let _ = tern_bench::scenario::conns::raise_fd_limit();
    let config = SuiteConfig {
        duration: args.duration,
        conns: args.conns,
        rates: args.rates.clone(),
        audience_users: args.audience_users,
        audience_duration: args.audience_duration,
        catchup_count: args.catchup_count,
        only: args.only.clone(),
        ..SuiteConfig::default()
    };
    let mut targets: Vec<Target> = Vec::new();
    for &protocol in &args.protocols {
        if !targets.iter().any(|t| t.protocol() == protocol) {
            targets.push(Target::Ternd {
                path: args.ternd.clone(),
                workers: args.workers,
                protocol,
            });
        }
    }
    if let Some(path) = &args.nats_server {
        targets.push(Target::NatsServer { path: path.clone() });
    }
    if targets.is_empty() {
        bail!("no target: give --protocols and/or --nats-server");
    }
    let runs = args.runs as usize;
    let mut passes = suite::run_passes(
        &targets,
        &config,
        runs,
        Some(&args.out_dir),
        &mut |line| eprintln!("tern-bench: {line}"),
        &mut |report| {
            // One run: each target's table as soon as it is done, as ever.
            if runs == 1 {
                print!("{}", report::render_target(report));
                println!();
            }
        },
    )?;
    let reports = if runs == 1 {
        passes.pop().unwrap_or_default()
    } else {
        let medians = tern_bench::runs::merge_targets(&passes);
        for report in &medians {
            print!("{}", report::render_target(report));
            println!();
        }
        medians
    };
    let baseline = targets
        .iter()
        .position(|t| matches!(t, Target::NatsServer { .. }))
        .or_else(|| (reports.len() > 1).then_some(0));
    if let Some(b) = baseline {
        print!("{}", report::render_comparison(&reports, &reports[b]));
    }
    for (name, svg) in plot::charts(&reports) {
        let path = args.out_dir.join(name);
        std::fs::write(&path, svg).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("tern-bench: wrote {}", path.display());
    }
    Ok((reports, baseline, passes))
}

/// Runs the transports comparison, prints it, writes its JSON; exit status 1 when any run
/// of any cell reported a problem.
fn run_transports(args: &TransportsArgs, json: Option<&Path>) -> Result<ExitCode> {
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("cannot create {}", args.out_dir.display()))?;
    // Raised before any broker starts, so the brokers inherit it too.
    let _ = tern_bench::scenario::conns::raise_fd_limit();
    let base = if args.short {
        TransportsConfig::short(args.ternd.clone())
    } else {
        TransportsConfig::new(args.ternd.clone())
    };
    let config = TransportsConfig {
        workers: args.workers,
        protocols: args.protocols.clone(),
        nats_server: args.nats_server.clone(),
        transports: args.transports.clone(),
        duration: args.duration.unwrap_or(base.duration),
        size: args.size,
        rate: args.rate.unwrap_or(base.rate),
        conns: args.conns.unwrap_or(base.conns),
        runs: args.runs.unwrap_or(base.runs).max(1),
        log_dir: Some(args.out_dir.clone()),
        ..base
    };
    let report = transports::run(&config, &mut |step| {
        eprintln!("tern-bench transports: {step}")
    })?;
    print!("{}", transports::render(&report));
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&report).context("cannot encode the report")?;
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("tern-bench: wrote {}", path.display());
    }
    let problems = report.problem_count();
    if problems == 0 {
        return Ok(ExitCode::SUCCESS);
    }
    for f in report.failures() {
        eprintln!("tern-bench: FAILED {f}");
    }
    eprintln!("tern-bench: {problems} problem(s) reported (PROBLEM lines above); exit status 1");
    Ok(ExitCode::FAILURE)
}

/// Runs the soak, prints its report, writes its JSON; exit status 1 when a check failed.
fn run_soak(args: &SoakArgs, json: Option<&Path>) -> Result<ExitCode> {
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("cannot create {}", args.out_dir.display()))?;
    let mut config = if args.short {
        SoakConfig::short(args.ternd.clone())
    } else {
        SoakConfig::long(args.ternd.clone())
    };
    if let Some(duration) = args.duration {
        config.warmup = (duration / 3).min(Duration::from_secs(90));
        config.duration = duration;
    }
    if let Some(users) = args.users {
        // The same room for everything else.
        let others = config
            .settings
            .max_connections
            .saturating_sub(config.users as u64);
        config.users = users;
        config.settings.max_connections = users as u64 + others;
    }
    config.seed = args.seed;
    let log = args.out_dir.join("ternd.log");
    config.log = Some(log.clone());
    let report = soak::run(&config, &mut |phase| eprintln!("tern-bench soak: {phase}"));
    print!("{}", soak::render(&report));
    eprintln!("tern-bench soak: ternd's log is {}", log.display());
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&report).context("cannot encode the report")?;
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("tern-bench: wrote {}", path.display());
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn write_json(path: &Path, report: &Report) -> Result<()> {
    let json = serde_json::to_string_pretty(report).context("cannot encode the report")?;
    std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("tern-bench: wrote {}", path.display());
    Ok(())
}
