//! `ternd`: parses flags and the config file, sets up logging, starts the server, and stops
//! it cleanly on SIGINT or SIGTERM (a second signal exits at once).

use std::io::{IsTerminal, Write};

use anyhow::Context;
use clap::Parser;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tern_broker::config::LogFormat;
use tern_broker::{Args, Config, Server};
use tracing_subscriber::EnvFilter;

fn main() {
    if let Err(e) = run() {
        eprintln!("ternd: {e:#}");
        std::process::exit(2);
    }
}

fn run() -> anyhow::Result<()> {
    let config = Config::from_args(Args::parse())?;
    init_logging(&config)?;
    tracing::info!(?config, "configuration");

    let mut signals = Signals::new([SIGINT, SIGTERM]).context("cannot install signal handlers")?;
    let server = Server::start(config)?;
    // Lines on stdout for scripts and tests: where to connect, in this order.
    println!("ternd listening on {}", server.local_addr());
    if let Some(addr) = server.binary_addr() {
        println!("ternd binary listening on {addr}");
    }
    if let Some(addr) = server.monitor_addr() {
        println!("ternd monitoring on {addr}");
    }
    std::io::stdout().flush().ok();

    let signal = signals.forever().next();
    tracing::info!(
        ?signal,
        "shutting down: no new connections, flushing queued messages"
    );
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            eprintln!("ternd: second signal, exiting now");
            std::process::exit(130);
        }
    });
    server.shutdown();
    Ok(())
}

fn init_logging(config: &Config) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::try_new(v).context("invalid RUST_LOG")?,
        _ => EnvFilter::try_new(&config.log.level)
            .with_context(|| format!("invalid log level `{}`", config.log.level))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match config.log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}
