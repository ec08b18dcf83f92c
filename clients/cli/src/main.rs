//! `tern`: the command-line tool for a Tern broker.
//!
//! Owns: argument parsing and dispatch, one module per subcommand (`publish` for
//! `tern pub`, `subscribe` for `tern sub`, `request` for `tern req`, `reply`, `top`), plus
//! what they share: connecting (`connect`), printing messages (`output`) and reading
//! durations and times (`time`).
//!
//! Never: links the broker. It talks to a running `ternd` over the network only: the data
//! commands through `tern-client` on the binary port, `top` through the monitoring
//! endpoint. Errors end the process with a one-line message on stderr and exit status 1.

mod connect;
mod http;
mod output;
mod publish;
mod reply;
mod request;
mod subscribe;
mod time;
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
    /// Publish messages: MSG, or one message per line of stdin. Waits for the broker's
    /// acknowledgements before exiting.
    Pub(publish::PubArgs),
    /// Subscribe and print messages (one JSON object per line with --json).
    Sub(subscribe::SubArgs),
    /// Send a request and print the reply.
    Req(request::ReqArgs),
    /// Answer requests on a subject with a fixed message.
    Reply(reply::ReplyArgs),
    /// A live view of a broker from its monitoring endpoint: rates, connections, drops,
    /// latency percentiles.
    Top(top::TopArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Pub(args) => publish::run(&args),
        Command::Sub(args) => subscribe::run(&args),
        Command::Req(args) => request::run(&args),
        Command::Reply(args) => reply::run(&args),
        Command::Top(args) => top::run(&args),
    };
    if let Err(e) = result {
        eprintln!("tern: {e:#}");
        std::process::exit(1);
    }
}
