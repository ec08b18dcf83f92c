//! Durable imports from JetStream: an import rule that names a stream is consumed through
//! a durable pull consumer, and each message is acknowledged upstream only once the local
//! broker has stored it.
//!
//! Owns: one thread per stream import: it creates (or binds to) the durable consumer
//! (`$JS.API.CONSUMER.DURABLE.CREATE`, explicit acks, filtered to the rule's subject),
//! fetches batches (`$JS.API.CONSUMER.MSG.NEXT`, replies to an inbox of its own), publishes
//! each message locally with an acknowledgement and a message id made of the stream and
//! its stream sequence (`js:<stream>:<sequence>`, so a redelivery after a crash is stored
//! once: the broker dedupes ids within `dedupe_window`), then sends `+ACK` upstream for
//! those the broker stored. What the broker did not take is not acknowledged and comes
//! again after the consumer's `ack_wait`.
//!
//! Never: acknowledges a message upstream before the local append, or holds more than
//! one batch.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use serde_json::json;
use tern_client::{Client, PublishOptions};
use tern_protocol::text::{ClientOp, Message as NatsMessage, Subscribe};

use crate::bridge::Bridge;
use crate::headers;
use crate::stats::bump;
use crate::subject::BRIDGE_PREFIX;
use crate::{ORIGIN, PRIORITY};

/// Upstream sids from here on are stream imports' inboxes (import `i` has `BASE + i`).
pub(crate) const SID_BASE: u64 = 1 << 40;

/// Messages per fetch.
const BATCH: usize = 256;

/// How long one fetch waits upstream for messages.
const EXPIRES: Duration = Duration::from_secs(1);

/// How long the local broker may take to store a batch.
const STORE_TIMEOUT: Duration = Duration::from_secs(10);

/// One stream import rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamImport {
    /// The JetStream stream.
    pub stream: String,
    /// The subjects of it to import (the consumer's filter).
    pub subject: String,
    /// The durable consumer's name.
    pub durable: String,
}

/// A stream import's inbox: what the reader hands it.
#[derive(Debug)]
pub(crate) struct Inbox {
    pub tx: Sender<NatsMessage>,
    rx: Receiver<NatsMessage>,
}

impl Inbox {
    pub(crate) fn new() -> Inbox {
        // Room for a whole batch and its status line: the reader never waits on it.
        let (tx, rx) = crossbeam_channel::bounded(BATCH * 2 + 8);
        Inbox { tx, rx }
    }
}

/// The thread of stream import `i`: runs until the bridge stops.
pub(crate) fn run(bridge: &Arc<Bridge>, i: usize, local: &Client) {
    let rule = &bridge.settings.import_streams[i];
    let inbox = format!("{BRIDGE_PREFIX}{}.J{i}.", bridge.id);
    let sid = SID_BASE + i as u64;
    while !bridge.stopped() {
        let Some(generation) = bridge.link.wait_up(Duration::from_millis(250)) else {
            continue;
        };
        {
            let mut link = bridge.link.lock();
            link.op(&ClientOp::Sub(Subscribe {
                subject: Bytes::from(format!("{inbox}>")),
                queue: None,
                sid: Bytes::from(sid.to_string()),
            }));
            if link.flush().is_err() {
                continue;
            }
        }
        let inbox_rx = &bridge.stream_inboxes[i].rx;
        while inbox_rx.try_recv().is_ok() {}
        if let Err(e) = create_consumer(bridge, rule, &inbox, inbox_rx, generation) {
            bridge.error(format!("stream import {}: {e}", rule.stream));
            std::thread::sleep(Duration::from_secs(1));
            continue;
        }
        let mut fetch = 0u64;
        while !bridge.stopped() && bridge.link.is_current(generation) {
            fetch += 1;
            let reply = format!("{inbox}F{fetch}");
            let body = json!({ "batch": BATCH, "expires": EXPIRES.as_nanos() as u64 }).to_string();
            let next = format!("$JS.API.CONSUMER.MSG.NEXT.{}.{}", rule.stream, rule.durable);
            if !bridge.send_upstream(
                generation,
                next.as_bytes(),
                Some(reply.as_bytes()),
                body.as_bytes(),
            ) {
                break;
            }
            let batch = receive_batch(inbox_rx, &reply);
            if batch.is_empty() {
                continue;
            }
            store_and_ack(bridge, rule, local, generation, batch);
        }
    }
}

/// Creates the durable consumer (or binds to it: the same configuration is accepted again).
fn create_consumer(
    bridge: &Bridge,
    rule: &StreamImport,
    inbox: &str,
    inbox_rx: &Receiver<NatsMessage>,
    generation: u64,
) -> Result<(), String> {
    let reply = format!("{inbox}C");
    let subject = format!(
        "$JS.API.CONSUMER.DURABLE.CREATE.{}.{}",
        rule.stream, rule.durable
    );
    let body = json!({
        "stream_name": rule.stream,
        "config": {
            "durable_name": rule.durable,
            "ack_policy": "explicit",
            "deliver_policy": "all",
            "filter_subject": rule.subject,
            "max_ack_pending": BATCH * 4,
        }
    })
    .to_string();
    if !bridge.send_upstream(
        generation,
        subject.as_bytes(),
        Some(reply.as_bytes()),
        body.as_bytes(),
    ) {
        return Err("not connected".into());
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        let m = inbox_rx
            .recv_timeout(wait)
            .map_err(|_| "no answer to the consumer's creation (is JetStream on?)".to_string())?;
        if m.subject != reply.as_bytes() {
            continue;
        }
        if headers::status(m.headers.as_deref()) == Some(503) {
            return Err("JetStream is not enabled upstream (no responders)".into());
        }
        let v: serde_json::Value = serde_json::from_slice(&m.payload)
            .map_err(|e| format!("the consumer's creation answered {e}"))?;
        if let Some(err) = v.get("error") {
            return Err(format!("creating consumer {}: {err}", rule.durable));
        }
        return Ok(());
    }
}

/// The messages one fetch brought: until its end (a status line on the fetch's reply
/// subject: 404 no messages, 408 expired) or a whole batch.
fn receive_batch(inbox_rx: &Receiver<NatsMessage>, reply: &str) -> Vec<NatsMessage> {
    let deadline = Instant::now() + EXPIRES + Duration::from_secs(2);
    let mut batch = Vec::new();
    while batch.len() < BATCH {
        let wait = deadline.saturating_duration_since(Instant::now());
        let Ok(m) = inbox_rx.recv_timeout(wait) else {
            break;
        };
        let status = headers::status(m.headers.as_deref());
        if m.subject == reply.as_bytes() && m.payload.is_empty() && status.is_some() {
            break;
        }
        if m.reply.is_some() {
            batch.push(m);
        }
    }
    batch
}

/// The stream sequence in a JetStream ack subject (`$JS.ACK.<stream>.<consumer>.
/// <delivered>.<stream seq>...`, or with a domain and account hash after `ACK`).
fn stream_sequence(ack: &[u8]) -> Option<u64> {
    let tokens: Vec<&[u8]> = ack.split(|&b| b == b'.').collect();
    let at = match tokens.len() {
        9 => 5,
        n if n >= 12 => 7,
        _ => return None,
    };
    std::str::from_utf8(tokens[at]).ok()?.parse().ok()
}

/// Publishes a batch locally with acknowledgements, then acknowledges upstream what was
/// stored (a duplicate was stored before: acknowledged too).
fn store_and_ack(
    bridge: &Bridge,
    rule: &StreamImport,
    local: &Client,
    generation: u64,
    batch: Vec<NatsMessage>,
) {
    let mut pending = Vec::with_capacity(batch.len());
    for m in &batch {
        let Ok(subject) = std::str::from_utf8(&m.subject) else {
            continue;
        };
        let ack = m.reply.clone().expect("kept only with an ack subject");
        let id = match stream_sequence(&ack) {
            Some(seq) => format!("js:{}:{seq}", rule.stream),
            None => continue,
        };
        let block = m.headers.as_deref();
        let priority = block
            .and_then(|b| headers::get(b, PRIORITY))
            .and_then(|p| std::str::from_utf8(p).ok()?.parse::<u8>().ok())
            .unwrap_or(0)
            .min(7);
        let fields: &[(&str, &[u8])] = if block.and_then(|b| headers::get(b, ORIGIN)).is_some() {
            &[]
        } else {
            &[(ORIGIN, b"nats")]
        };
        let options = PublishOptions::new()
            .priority(priority)
            .message_id(id)
            .raw_headers(headers::with(block, fields));
        match local.publish_with_ack(subject, &m.payload, &options) {
            Ok(p) => pending.push((p, ack, m.payload.len())),
            Err(e) => {
                bump(&bridge.counters.import_failed, 1);
                bridge.error(format!(
                    "stream import {}: storing {subject}: {e}: left unacknowledged",
                    rule.stream
                ));
            }
        }
    }
    let mut acked = 0u64;
    let mut bytes = 0u64;
    for (p, ack, size) in pending {
        match p.wait_timeout(STORE_TIMEOUT) {
            Ok(_) => {
                if bridge.send_upstream(generation, &ack, None, b"+ACK") {
                    acked += 1;
                    bytes += size as u64;
                }
            }
            Err(e) => {
                bump(&bridge.counters.import_failed, 1);
                bridge.error(format!(
                    "stream import {}: not stored locally ({e}): left unacknowledged, to come again",
                    rule.stream
                ));
            }
        }
    }
    bump(&bridge.counters.imported, acked);
    bump(&bridge.counters.imported_bytes, bytes);
    bump(&bridge.counters.stream_acked, acked);
}

#[cfg(test)]
mod tests {
    use super::stream_sequence;

    #[test]
    fn stream_sequences_in_both_ack_formats() {
        assert_eq!(
            stream_sequence(b"$JS.ACK.ORDERS.edge.1.42.40.1700000000.3"),
            Some(42)
        );
        assert_eq!(
            stream_sequence(b"$JS.ACK.hub.ACCHASH.ORDERS.edge.1.42.40.1700000000.3.xyz"),
            Some(42)
        );
        assert_eq!(stream_sequence(b"$JS.ACK.short"), None);
    }
}
