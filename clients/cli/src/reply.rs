//! `tern reply SUBJECT MSG`: answer every request on SUBJECT with MSG.
//!
//! Owns: the responder loop: print each request (as `tern sub` does), answer it, and stop
//! after `--count` answers. Once the broker has the subscription it says so on stderr
//! (`tern: answering requests on SUBJECT`).
//!
//! Never: exits 0 before the broker has received its last answer (it drains first).

use std::time::Duration;

use anyhow::{bail, Context};

use crate::connect::{self, ServerArgs};
use crate::output;

/// How long to wait for the broker to confirm the subscription, and to drain at the end.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, clap::Args)]
pub struct ReplyArgs {
    /// The subject to answer requests on.
    pub subject: String,
    /// The answer.
    pub message: String,
    /// Exit after answering this many requests.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Join this queue group, so several responders share the requests.
    #[arg(long, value_name = "GROUP")]
    pub queue: Option<String>,
    /// Print each request as one JSON object per line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

pub fn run(args: &ReplyArgs) -> anyhow::Result<()> {
    if args.count == Some(0) {
        bail!("--count must be at least 1");
    }
    let client = connect::long_running(&args.server, "reply")?;
    let sub = match &args.queue {
        Some(q) => client.queue_subscribe(&args.subject, q)?,
        None => client.subscribe(&args.subject)?,
    };
    client
        .flush(BROKER_TIMEOUT)
        .context("the broker did not confirm the subscription")?;
    eprintln!("tern: answering requests on {}", args.subject);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut answered = 0;
    loop {
        let request = sub.recv().context("the subscription ended")?;
        output::print(&mut out, answered + 1, &request, args.json)?;
        if request.reply.is_none() {
            eprintln!(
                "tern: a message on {} has no reply subject; not answered",
                request.subject
            );
            continue;
        }
        client.respond(&request, &args.message)?;
        answered += 1;
        if args.count.is_some_and(|c| answered >= c) {
            break;
        }
    }
    client.drain(BROKER_TIMEOUT).context("draining")?;
    Ok(())
}
