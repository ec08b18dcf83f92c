//! `tern sub SUBJECT`: print the messages of a subscription.
//!
//! Owns: the subscription's options (queue group, catch-up start), printing each message
//! (see `output`), and stopping after `--count` messages. Once the broker has the
//! subscription it says so on stderr (`tern: subscribed to SUBJECT`), so a script knows
//! when publishing may start.
//!
//! Never: exits 0 before it has printed the `--count` messages it was asked for.

use std::time::Duration;

use anyhow::{bail, Context};
use tern_client::{Error, StartFrom};

use crate::connect::{self, ServerArgs};
use crate::output;
use crate::time::parse_since;

/// How long to wait for the broker to confirm the subscription.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("start").args(["from_seq", "since", "last"])))]
pub struct SubArgs {
    /// The subject filter (`*` matches one token, `>` the rest).
    pub subject: String,
    /// Join this queue group: each message goes to one member.
    #[arg(long, value_name = "GROUP")]
    pub queue: Option<String>,
    /// Exit after this many messages.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Print one JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// Catch up from this sequence (in every shard of the current log epoch).
    #[arg(long, value_name = "SEQ")]
    pub from_seq: Option<u64>,
    /// Catch up from this time: a duration ago (5m) or an RFC 3339 time.
    #[arg(long, value_name = "TIME", value_parser = parse_since)]
    pub since: Option<std::time::SystemTime>,
    /// Catch up with the last N messages.
    #[arg(long, value_name = "N")]
    pub last: Option<u32>,
    #[command(flatten)]
    pub server: ServerArgs,
}

impl SubArgs {
    fn start(&self) -> StartFrom {
        if let Some(seq) = self.from_seq {
            StartFrom::Sequence(seq)
        } else if let Some(t) = self.since {
            StartFrom::Since(t)
        } else if let Some(n) = self.last {
            StartFrom::Last(n)
        } else {
            StartFrom::Live
        }
    }
}

pub fn run(args: &SubArgs) -> anyhow::Result<()> {
    if args.count == Some(0) {
        bail!("--count must be at least 1");
    }
    let client = connect::long_running(&args.server, "sub")?;
    let mut builder = client.subscribe_builder(&args.subject).start(args.start());
    if let Some(q) = &args.queue {
        builder = builder.queue_group(q);
    }
    let sub = builder.subscribe()?;
    client
        .flush(CONFIRM_TIMEOUT)
        .context("the broker did not confirm the subscription")?;
    if !sub.is_active() && sub.queued() == 0 {
        let why = sub
            .try_recv()
            .err()
            .map_or("ended".to_string(), |e| e.to_string());
        bail!("the broker refused the subscription: {why}");
    }
    eprintln!("tern: subscribed to {}", args.subject);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut n = 0;
    loop {
        let msg = match sub.recv() {
            Ok(m) => m,
            Err(Error::Server { code, message }) => {
                bail!("the broker ended the subscription: {code:?}: {message}")
            }
            Err(e) => return Err(e).context("the subscription ended"),
        };
        n += 1;
        output::print(&mut out, n, &msg, args.json).context("writing to stdout")?;
        if args.count.is_some_and(|c| n >= c) {
            break;
        }
    }
    drop(sub);
    client.close();
    Ok(())
}
