//! A real broker in the test's own process: `ternd`'s library started with test flags.
//!
//! Owns: [`start`], the one place the tests' base flags are written (a free text port, no
//! monitoring, 2 workers unpinned), for these tests and the `tern` CLI's
//! (`clients/cli/tests/data.rs` includes this file).

use clap::Parser;
use tern_broker::{Args, Config, Server};

/// A broker whose binary port listens on `binary_listen` (`127.0.0.1:0`: a free port),
/// with `extra` flags after the base ones.
pub fn start(binary_listen: &str, extra: &[&str]) -> Server {
    let mut args = vec![
        "ternd",
        "--listen",
        "127.0.0.1:0",
        "--binary-listen",
        binary_listen,
        "--no-monitor",
        "--workers",
        "2",
        "--no-pin",
    ];
    args.extend_from_slice(extra);
    Server::start(Config::from_args(Args::parse_from(args)).unwrap()).unwrap()
}
