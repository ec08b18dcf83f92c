//! `tern`: the command-line tool for a Tern broker.
//!
//! Owns: argument parsing and dispatch, one module per subcommand (`top` today; `pub`,
//! `sub` and `req` come later as their own modules and `Command` variants).
//!
//! Never: links the broker. It talks to a running `ternd` over the network only.

mod http;
mod top;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "tern", version, about = "Tools for a Tern broker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A live view of a broker from its monitoring endpoint: rates, connections, drops,
    /// latency percentiles.
    Top(top::TopArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Top(args) => top::run(&args),
    };
    if let Err(e) = result {
        eprintln!("tern: {e:#}");
        std::process::exit(1);
    }
}
