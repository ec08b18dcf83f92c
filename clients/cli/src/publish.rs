//! `tern pub SUBJECT [MSG]`: publish MSG, or one message per line of stdin.
//!
//! Owns: turning the options into publishes (each with an acknowledgement requested,
//! pipelined up to a window), and waiting for every acknowledgement before exiting, so a
//! zero exit status means the broker has every message.
//!
//! Never: exits 0 with a message unacknowledged; a refusal or a lost connection is an
//! error naming the message.

use std::collections::VecDeque;
use std::io::BufRead;
use std::time::Duration;

use anyhow::{bail, Context};
use tern_client::{Client, PendingAck, PublishOptions};

use crate::connect::{self, ServerArgs};
use crate::time::parse_duration;

/// Acknowledgements in flight before the next publish waits for the oldest.
const ACK_WINDOW: usize = 1024;

#[derive(Debug, clap::Args)]
pub struct PubArgs {
    /// The subject to publish to.
    pub subject: String,
    /// The message. Without it, each line of stdin is one message (without its line end).
    pub message: Option<String>,
    /// Publish each message this many times.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub count: u64,
    /// Priority, 0 (lowest) to 7 (highest).
    #[arg(long, value_name = "P", default_value_t = 0,
          value_parser = clap::value_parser!(u8).range(0..=7))]
    pub priority: u8,
    /// A header, NAME:VALUE; may be repeated.
    #[arg(long = "header", short = 'H', value_name = "NAME:VALUE",
          value_parser = connect::parse_header)]
    pub headers: Vec<(String, String)>,
    /// A message id (idempotent publishing). When the messages come from stdin or --count
    /// is above 1, each gets ID-1, ID-2, ... in publishing order.
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    /// A reply subject.
    #[arg(long, value_name = "SUBJECT")]
    pub reply: Option<String>,
    /// How long to wait for each acknowledgement.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Publishes in order with acks requested, keeping at most [`ACK_WINDOW`] in flight.
struct Publisher<'a> {
    client: &'a Client,
    args: &'a PubArgs,
    /// Published so far (the n of the next message is `sent + 1`).
    sent: u64,
    /// Messages in this run, when known, to decide whether ids get a suffix.
    many: bool,
    in_flight: VecDeque<(u64, PendingAck)>,
}

impl Publisher<'_> {
    fn publish(&mut self, payload: &[u8]) -> anyhow::Result<()> {
        for _ in 0..self.args.count {
            let n = self.sent + 1;
            let mut opts = PublishOptions::new().priority(self.args.priority);
            opts.headers = connect::headers(&self.args.headers);
            opts.reply = self.args.reply.clone();
            opts.message_id = self.args.id.as_ref().map(|id| {
                if self.many {
                    format!("{id}-{n}")
                } else {
                    id.clone()
                }
            });
            let pending = self
                .client
                .publish_with_ack(&self.args.subject, payload, &opts)
                .with_context(|| format!("message {n} not published"))?;
            self.sent = n;
            self.in_flight.push_back((n, pending));
            if self.in_flight.len() >= ACK_WINDOW {
                self.settle_one()?;
            }
        }
        Ok(())
    }

    fn settle_one(&mut self) -> anyhow::Result<()> {
        if let Some((n, pending)) = self.in_flight.pop_front() {
            pending
                .wait_timeout(self.args.timeout)
                .with_context(|| format!("message {n} was not acknowledged"))?;
        }
        Ok(())
    }

    fn finish(mut self) -> anyhow::Result<u64> {
        while !self.in_flight.is_empty() {
            self.settle_one()?;
        }
        Ok(self.sent)
    }
}

pub fn run(args: &PubArgs) -> anyhow::Result<()> {
    if args.count == 0 {
        bail!("--count must be at least 1");
    }
    let client = connect::one_shot(&args.server, "pub")?;
    let mut publisher = Publisher {
        client: &client,
        args,
        sent: 0,
        many: args.message.is_none() || args.count > 1,
        in_flight: VecDeque::new(),
    };
    match &args.message {
        Some(message) => publisher.publish(message.as_bytes())?,
        None => {
            let stdin = std::io::stdin();
            let mut lines = stdin.lock();
            let mut line = Vec::new();
            loop {
                line.clear();
                if lines
                    .read_until(b'\n', &mut line)
                    .context("reading stdin")?
                    == 0
                {
                    break;
                }
                if line.last() == Some(&b'\n') {
                    line.pop();
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                }
                publisher.publish(&line)?;
            }
        }
    }
    let sent = publisher.finish()?;
    client.close();
    eprintln!(
        "tern: published {sent} message{} to {}",
        if sent == 1 { "" } else { "s" },
        args.subject
    );
    Ok(())
}
