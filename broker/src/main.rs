//! `ternd`: parses flags and the config file, sets up logging, starts the server, and stops
//! it: cleanly on SIGINT or SIGTERM (a second signal exits at once), or gently on SIGUSR2
//! (lame duck mode: stop accepting, close the clients over `lame_duck_duration`, then stop
//! as on SIGTERM). SIGHUP reloads the TLS certificate and key, and the users and permissions.

use std::io::{IsTerminal, Write};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR2};
use signal_hook::iterator::Signals;
use tern_broker::config::LogFormat;
use tern_broker::{Args, Config, Server};
use tracing_subscriber::EnvFilter;

/// How often, in lame duck mode, the main thread looks whether every client has gone.
const LAME_DUCK_POLL: Duration = Duration::from_millis(100);
/// The workers close their last clients at their first timer tick (every 100 ms) at the
/// end of `lame_duck_duration`; the main thread waits this much longer before it shuts
/// down anyway, so that normally it is the last client's close that ends lame duck mode.
const LAME_DUCK_SLACK: Duration = Duration::from_secs(1);

/// jemalloc, not the system allocator: a message is allocated on the worker that reads it
/// and freed on the one that writes it, and glibc's `free` of another thread's chunk takes
/// that thread's arena lock (with `malloc` under it, 26 % of ternd's CPU in a 16 B run;
/// docs/benchmarks.md).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read when it starts: unused pages go back to the system about a
/// second after they are freed, by jemalloc's own background thread rather than inside a
/// worker's `free`. (Its default keeps them ten seconds: 2.2 KiB more resident per idle
/// connection after a burst of connections. Returning them at once costs the workers
/// twice their CPU per message.)
#[export_name = "_rjem_malloc_conf"]
static MALLOC_CONF: &[u8; 85] =
    b"background_thread:true,max_background_threads:1,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

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

    let mut signals = Signals::new([SIGINT, SIGTERM, SIGUSR2, SIGHUP])
        .context("cannot install signal handlers")?;
    let server = Server::start(config)?;
    // Lines on stdout for scripts and tests: where to connect, in this order.
    println!("ternd listening on {}", server.local_addr());
    if let Some(addr) = server.binary_addr() {
        println!("ternd binary listening on {addr}");
    }
    if let Some(addr) = server.websocket_addr() {
        println!("ternd websocket listening on {addr}");
    }
    if let Some(addr) = server.monitor_addr() {
        println!("ternd monitoring on {addr}");
    }
    std::io::stdout().flush().ok();

    // Signals arrive on a channel, so that lame duck mode can wait for one with a timeout.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for signal in signals.forever() {
            if tx.send(signal).is_err() {
                return;
            }
        }
    });
    let signal = wait_for_stop(&server, &rx);
    tracing::info!(
        ?signal,
        "shutting down: no new connections, flushing queued messages"
    );
    std::thread::spawn(move || {
        // SIGUSR2 and SIGHUP mean nothing more now; SIGINT or SIGTERM means "now".
        if rx.iter().any(|s| s != SIGUSR2 && s != SIGHUP) {
            eprintln!("ternd: second signal, exiting now");
            std::process::exit(130);
        }
    });
    server.shutdown();
    Ok(())
}

/// Waits until the server must shut down: SIGINT or SIGTERM (returned), or the end of lame
/// duck mode after SIGUSR2 (`None`): every client closed, or `lame_duck_duration` passed.
fn wait_for_stop(server: &Server, signals: &Receiver<i32>) -> Option<i32> {
    let mut lame_duck_until: Option<Instant> = None;
    loop {
        let signal = match lame_duck_until {
            None => signals.recv().ok(),
            Some(until) => {
                if server.lame_duck_finished() {
                    tracing::info!("lame duck mode: every client is gone");
                    return None;
                }
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    tracing::info!("lame duck mode: its duration is over");
                    return None;
                }
                match signals.recv_timeout(left.min(LAME_DUCK_POLL)) {
                    Ok(signal) => Some(signal),
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => None,
                }
            }
        };
        match signal {
            Some(SIGUSR2) => match server.enter_lame_duck() {
                Some(duration) => {
                    tracing::info!(
                        ?duration,
                        "entering lame duck mode: no new connections; closing clients \
                         gradually, then shutting down"
                    );
                    lame_duck_until = Some(Instant::now() + duration + LAME_DUCK_SLACK);
                }
                None => tracing::info!("already in lame duck mode; SIGUSR2 ignored"),
            },
            Some(SIGHUP) => {
                match server.reload_tls() {
                    Ok(true) => tracing::info!(
                        "SIGHUP: TLS certificate and key reloaded; new connections use them"
                    ),
                    Ok(false) => tracing::info!("SIGHUP: TLS is off, nothing to reload"),
                    Err(e) => tracing::error!(
                        error = %e,
                        "SIGHUP: TLS reload failed; the current certificate stays in use"
                    ),
                }
                match server.reload_auth() {
                    Ok(()) => tracing::info!(
                        "SIGHUP: users and permissions reloaded; open connections are \
                         re-checked within a second"
                    ),
                    Err(e) => tracing::error!(
                        error = %e,
                        "SIGHUP: authentication reload failed; the current rules stay"
                    ),
                }
            }
            other => return other,
        }
    }
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
