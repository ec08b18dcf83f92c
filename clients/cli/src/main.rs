//! `tern`: the command-line tool for a Tern broker.
//!
//! Owns: argument parsing and dispatch, one module per subcommand (`publish` for
//! `tern pub`, `subscribe` for `tern sub`, `request` for `tern req`, `reply`, `top`), plus
//! what they share: connecting (`connect`), printing messages (`output`) and reading
//! durations and times (`time`).
//!
//! Never: links the broker. It talks to a running `ternd` over the network only: the data
//! commands through `tern-client` on the binary port, `top` through the monitoring
//! endpoint. Errors end the process with a one-line message on stderr (each cause said
//! once) and exit status 1.

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
        eprintln!("tern: {}", one_line(&e));
        std::process::exit(1);
    }
}

/// The error and its causes on one line, each said once. Most errors already include
/// their cause's text (`cannot connect to X: connection refused`), so a cause already in
/// the message before it is skipped, and a cause that repeats a context and adds to it
/// replaces it.
fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        match parts.last_mut() {
            Some(last) if last.contains(&text) => {}
            Some(last) if text.starts_with(last.as_str()) => *last = text,
            _ => parts.push(text),
        }
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_already_in_the_message_are_said_once() {
        use anyhow::Context;
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e: anyhow::Error = tern_client::Error::Connect {
            server: "tern://h:1".to_string(),
            source: io(),
        }
        .into();
        let e = e.context("cannot connect to tern://h:1");
        assert_eq!(one_line(&e), "cannot connect to tern://h:1: no such file");
        let e = Err::<(), _>(io())
            .context("reading x.pem")
            .context("loading")
            .unwrap_err();
        assert_eq!(one_line(&e), "loading: reading x.pem: no such file");
    }
}
