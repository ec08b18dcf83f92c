//! `tern req SUBJECT MSG`: send one request and print the reply.
//!
//! Owns: the request's options and printing the reply: its payload and a line end, or the
//! whole message as JSON with `--json`.
//!
//! Never: waits longer than `--timeout`; no reply in time is an error (exit status 1).

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use tern_client::{Error, PublishOptions};

use crate::connect::{self, ServerArgs};
use crate::output;
use crate::time::parse_duration;

#[derive(Debug, clap::Args)]
pub struct ReqArgs {
    /// The subject to send the request to.
    pub subject: String,
    /// The request's payload.
    pub message: String,
    /// How long to wait for the reply.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// A header, NAME:VALUE; may be repeated.
    #[arg(long = "header", short = 'H', value_name = "NAME:VALUE",
          value_parser = connect::parse_header)]
    pub headers: Vec<(String, String)>,
    /// Priority, 0 (lowest) to 7 (highest).
    #[arg(long, value_name = "P", default_value_t = 0,
          value_parser = clap::value_parser!(u8).range(0..=7))]
    pub priority: u8,
    /// Print the reply as one JSON object (see `tern sub --json`).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

pub fn run(args: &ReqArgs) -> anyhow::Result<()> {
    let client = connect::one_shot(&args.server, "req")?;
    let mut opts = PublishOptions::new().priority(args.priority);
    opts.headers = connect::headers(&args.headers);
    let reply = match client.request_with(&args.subject, &args.message, &opts, args.timeout) {
        Ok(reply) => reply,
        Err(Error::Timeout) => anyhow::bail!(
            "no reply to {} within {:?} (is anyone subscribed?)",
            args.subject,
            args.timeout
        ),
        Err(e) => return Err(e).context(format!("request to {} failed", args.subject)),
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        output::print(&mut out, 1, &reply, true)?;
    } else {
        out.write_all(&reply.payload)?;
        writeln!(out)?;
        out.flush()?;
    }
    client.close();
    Ok(())
}
