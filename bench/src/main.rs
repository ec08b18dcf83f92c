//! `tern-bench`: run one scenario against a broker, or the standard suite against `ternd`
//! (and `nats-server`, to compare). Prints tables on stdout; `--json FILE` writes every
//! figure.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use tern_bench::driver::nats::NatsDriver;
use tern_bench::driver::Driver;
use tern_bench::plot;
use tern_bench::report::{self, Report, TargetReport};
use tern_bench::scenario::conns::ConnsConfig;
use tern_bench::scenario::latency::LatencyConfig;
use tern_bench::scenario::pubsub::PubSubConfig;
use tern_bench::scenario::{fanout, parse_duration, queue, Limit, Scenario};
use tern_bench::suite::{self, SuiteConfig, Target};

#[derive(Parser)]
#[command(
    name = "tern-bench",
    version,
    about = "Benchmark a Tern (or NATS) broker"
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
    /// N idle connections: connect rate and broker memory per connection.
    Conns {
        #[command(flatten)]
        target: TargetArgs,
        /// Connections to open.
        #[arg(long, short = 'n', default_value_t = 1000)]
        count: usize,
        /// The broker's process id, to read its VmRSS before and after.
        #[arg(long)]
        broker_pid: Option<u32>,
    },
    /// Start ternd (and nats-server), run the standard scenarios against each, stop them.
    Suite(SuiteArgs),
}

#[derive(Args)]
struct TargetArgs {
    /// The broker's address.
    #[arg(long, default_value = "127.0.0.1:4222")]
    server: SocketAddr,
    /// The wire protocol (only the text/NATS port exists today).
    #[arg(long, value_enum, default_value_t = Protocol::Text)]
    protocol: Protocol,
}

#[derive(Clone, Copy, ValueEnum)]
enum Protocol {
    /// The NATS-compatible text protocol.
    Text,
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
}

impl LoadArgs {
    fn limit(&self) -> Limit {
        self.count
            .map_or(Limit::Duration(self.duration), Limit::Count)
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
    /// Also run against this nats-server executable, and print ratios (tern / nats).
    #[arg(long)]
    nats_server: Option<PathBuf>,
    /// How long each throughput and latency scenario publishes.
    #[arg(long, value_parser = parse_duration, default_value = "3s")]
    duration: Duration,
    /// Idle connections for the conns scenario.
    #[arg(long, default_value_t = 10_000)]
    conns: usize,
    /// Rates for the latency scenarios (msgs/s), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10000,50000")]
    rates: Vec<u64>,
    /// Run only the scenarios whose label contains one of these (e.g. `latency,conns`).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Where broker logs and SVG charts go.
    #[arg(long, default_value = "target/bench")]
    out_dir: PathBuf,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let targets = match cli.command {
        Command::Suite(args) => run_suite(&args)?,
        command => vec![run_one(command)?],
    };
    let report = Report::new(targets);
    if let Some(path) = &cli.json {
        write_json(path, &report)?;
    }
    Ok(())
}

fn run_one(command: Command) -> Result<TargetReport> {
    let (target, scenario, pid) = match command {
        Command::Pubsub {
            target,
            publishers,
            subscribers,
            load,
        } => (
            target,
            Scenario::PubSub(PubSubConfig::new(
                publishers,
                subscribers,
                load.size,
                load.limit(),
            )),
            None,
        ),
        Command::Fanout {
            target,
            subscribers,
            load,
        } => (
            target,
            Scenario::Fanout(fanout::config(subscribers, load.size, load.limit())),
            None,
        ),
        Command::Queue {
            target,
            publishers,
            members,
            load,
        } => (
            target,
            Scenario::Queue(queue::config(publishers, members, load.size, load.limit())),
            None,
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
                ..LatencyConfig::new(rate, load.size, load.limit())
            }),
            None,
        ),
        Command::Conns {
            target,
            count,
            broker_pid,
        } => (
            target,
            Scenario::Conns(ConnsConfig {
                count,
                broker_pid,
                settle: Duration::from_millis(500),
            }),
            broker_pid,
        ),
        Command::Suite(_) => bail!("the suite is not a single scenario"),
    };
    let driver: Box<dyn Driver> = match target.protocol {
        Protocol::Text => Box::new(NatsDriver::new(target.server, "tern-bench")),
    };
    let result = scenario.run(&*driver, pid);
    let report = TargetReport {
        target: target.server.to_string(),
        address: target.server.to_string(),
        protocol: driver.protocol().into(),
        version: None,
        scenarios: vec![result],
    };
    print!("{}", report::render_target(&report));
    Ok(report)
}

fn run_suite(args: &SuiteArgs) -> Result<Vec<TargetReport>> {
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("cannot create {}", args.out_dir.display()))?;
    // Raised before any broker starts, so the brokers inherit it too.
    let _ = tern_bench::scenario::conns::raise_fd_limit();
    let config = SuiteConfig {
        duration: args.duration,
        conns: args.conns,
        rates: args.rates.clone(),
        only: args.only.clone(),
        ..SuiteConfig::default()
    };
    let mut targets = vec![Target::Ternd {
        path: args.ternd.clone(),
        workers: args.workers,
    }];
    if let Some(path) = &args.nats_server {
        targets.push(Target::NatsServer { path: path.clone() });
    }
    let mut reports = Vec::new();
    for target in &targets {
        let report = suite::run_target(
            target,
            &config,
            Some(&args.out_dir),
            &mut |broker, label| {
                eprintln!("tern-bench: {broker}: {label}");
            },
        )
        .context("cannot start the broker")?;
        print!("{}", report::render_target(&report));
        println!();
        reports.push(report);
    }
    if let [a, b] = &reports[..] {
        print!("{}", report::render_comparison(a, b));
    }
    for (name, svg) in plot::charts(&reports) {
        let path = args.out_dir.join(name);
        std::fs::write(&path, svg).with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("tern-bench: wrote {}", path.display());
    }
    Ok(reports)
}

fn write_json(path: &Path, report: &Report) -> Result<()> {
    let json = serde_json::to_string_pretty(report).context("cannot encode the report")?;
    std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("tern-bench: wrote {}", path.display());
    Ok(())
}
