//! Exports: local messages under an export rule, taken from the local log by sequence and
//! published upstream, each confirmed before its position is kept.
//!
//! Owns: one thread per export rule, and its position: the resume token of the last
//! message upstream confirmed having ([`Export::confirmed`], kept across restarts by the
//! bridge's state file). The thread subscribes locally to the rule (lossless, from the
//! confirmed position), publishes what arrives upstream with a `Tern-Origin` header (this
//! broker's server id) and a `Nats-Msg-Id` made of the edge's name and the message's place
//! in the log (the same id every time it is sent), then a `PING`: its `PONG` confirms the
//! batch. When the upstream connection drops, the local subscription ends and a new one
//! starts from the confirmed position once connected again: what was sent but not
//! confirmed is sent again (at least once), what the log no longer holds is reported as a
//! gap. The same happens when the exporter falls `export_window` messages behind its local
//! subscription (the local client then drops): nothing received after a drop is sent.
//!
//! Never: exports a message that came from upstream (it has a `Tern-Origin` header) or the
//! bridge's own reply subjects (that would loop), or keeps a position upstream has not
//! confirmed.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tern_client::{Client, Message, StartFrom};
use tern_protocol::binary::ResumeToken;

use crate::bridge::Bridge;
use crate::headers;
use crate::stats::bump;
use crate::subject::BRIDGE_PREFIX;
use crate::upstream::Confirm;
use crate::{ORIGIN, PRIORITY};

/// The header carrying an exported message's id, as JetStream dedupes it.
pub(crate) const MSG_ID: &str = "Nats-Msg-Id";

/// Export batches in flight (sent, not confirmed) before the thread waits for answers.
const MAX_IN_FLIGHT: usize = 64;

/// One export rule's state.
#[derive(Debug)]
pub(crate) struct Export {
    pub rule: String,
    /// The position upstream confirmed.
    pub confirmed: Mutex<Option<ResumeToken>>,
    /// The local subscription's sid now (0: none), to tell its gap notices apart.
    pub sid: AtomicU32,
    /// Sent upstream and not confirmed yet.
    pub unconfirmed: AtomicU64,
}

impl Export {
    pub(crate) fn new(rule: String, confirmed: Option<ResumeToken>) -> Export {
        Export {
            rule,
            confirmed: Mutex::new(confirmed),
            sid: AtomicU32::new(0),
            unconfirmed: AtomicU64::new(0),
        }
    }

    pub(crate) fn confirmed(&self) -> Option<ResumeToken> {
        self.confirmed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Upstream has everything up to `token`.
    pub(crate) fn confirm(&self, token: ResumeToken, count: u64) {
        *self.confirmed.lock().unwrap_or_else(|e| e.into_inner()) = Some(token);
        let _ = self
            .unconfirmed
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(count))
            });
    }
}

/// Records `shard`/`sequence` in `token`.
fn observe(token: &mut ResumeToken, shard: u16, sequence: u64) {
    let i = usize::from(shard);
    if token.last_sequences.len() <= i {
        token.last_sequences.resize(i + 1, 0);
    }
    token.last_sequences[i] = token.last_sequences[i].max(sequence);
}

fn seen(token: &ResumeToken, shard: u16, sequence: u64) -> bool {
    token
        .last_sequences
        .get(usize::from(shard))
        .is_some_and(|&last| sequence <= last)
}

/// The thread of export rule `i`: runs until the bridge stops.
pub(crate) fn run(bridge: &Arc<Bridge>, i: usize, local: &Client) {
    let export = &bridge.exports[i];
    // What was sent on the previous connection: sent again now, counted as resent.
    let mut sent: Option<ResumeToken> = None;
    while !bridge.stopped() {
        let Some(generation) = bridge.link.wait_up(Duration::from_millis(250)) else {
            continue;
        };
        let start = export.confirmed();
        let builder = local
            .subscribe_builder(&export.rule)
            .lossless(true)
            .capacity(bridge.settings.export_window)
            .start(match &start {
                Some(token) => StartFrom::Resume(token.clone()),
                None => StartFrom::Live,
            });
        let sub = match builder.subscribe() {
            Ok(sub) => sub,
            Err(e) => {
                bridge.error(format!("export {}: subscribing locally: {e}", export.rule));
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        export.sid.store(sub.sid(), Ordering::Relaxed);
        if let Err(e) = local.flush(Duration::from_secs(5)) {
            bridge.error(format!("export {}: local flush: {e}", export.rule));
            continue;
        }
        let epoch = local.server_info().map_or(0, |i| i.log_epoch);
        let mut position = sub.resume_token().or(start).unwrap_or_else(|| ResumeToken {
            epoch,
            last_sequences: Vec::new(),
        });
        if export.confirmed().is_none() {
            // The first start: from here on nothing is skipped, across restarts too.
            export.confirm(position.clone(), 0);
            bridge.state_changed();
        }
        let mut batch: Vec<Message> = Vec::with_capacity(256);
        'connected: while !bridge.stopped() {
            batch.clear();
            match sub.recv_timeout(Duration::from_millis(100)) {
                Ok(m) => batch.push(m),
                Err(tern_client::Error::Timeout) => {}
                Err(e) => {
                    bridge.error(format!("export {}: local subscription: {e}", export.rule));
                    break;
                }
            }
            while batch.len() < bridge.settings.confirm_batch {
                match sub.try_recv() {
                    Ok(Some(m)) => batch.push(m),
                    _ => break,
                }
            }
            // The local client drops what does not fit in `export_window` (a drop is
            // counted before any later message is handed over, so this batch shows it).
            // Nothing after a drop may be sent, or its position would pass over what was
            // dropped: start over from the confirmed position (the log has it all).
            if sub.dropped() > 0 {
                bump(&bridge.counters.export_restarts, 1);
                bridge.error(format!(
                    "export {}: the exporter fell more than export_window ({}) messages \
                     behind its local subscription: resuming from the confirmed position",
                    export.rule, bridge.settings.export_window
                ));
                break;
            }
            // Wait while too much is unanswered (a slow upstream), or the connection ends.
            loop {
                let link = bridge.link.lock();
                if link.generation != generation || !link.is_up() {
                    break 'connected;
                }
                if link.pings_in_flight() < MAX_IN_FLIGHT {
                    break;
                }
                drop(link);
                std::thread::sleep(Duration::from_millis(1));
            }
            if batch.is_empty() {
                continue;
            }
            let mut link = bridge.link.lock();
            if link.generation != generation || !link.is_up() {
                break;
            }
            let (mut count, mut bytes, mut resent) = (0u64, 0u64, 0u64);
            let mut id: Vec<u8> = Vec::with_capacity(64);
            let now = std::time::Instant::now();
            for msg in &batch {
                observe(&mut position, msg.shard, msg.sequence);
                if !exportable(msg) {
                    bump(&bridge.counters.not_exported, 1);
                    continue;
                }
                if sent
                    .as_ref()
                    .is_some_and(|s| s.epoch == position.epoch && seen(s, msg.shard, msg.sequence))
                {
                    resent += 1;
                }
                // `<name>:<epoch>:<shard>:<sequence>`, written into a buffer kept for the
                // batch (no allocation per message).
                id.clear();
                id.extend_from_slice(bridge.settings.name.as_bytes());
                for n in [position.epoch, u64::from(msg.shard), msg.sequence] {
                    id.push(b':');
                    push_decimal(&mut id, n);
                }
                let priority = [b'0' + msg.priority.min(7)];
                let block = msg.raw_headers.as_deref();
                let mut fields: [(&str, &[u8]); 3] = [("", b""); 3];
                fields[0] = (ORIGIN, bridge.id.as_bytes());
                let mut n = 1;
                // A message id the publisher gave upstream is kept.
                if block.and_then(|b| headers::get(b, MSG_ID)).is_none() {
                    fields[n] = (MSG_ID, &id);
                    n += 1;
                }
                if msg.priority > 0 {
                    fields[n] = (PRIORITY, &priority);
                    n += 1;
                }
                let reply = msg.reply.as_ref().map(|r| {
                    bridge.exported_requests.allow(r, now);
                    format!("{}{r}", bridge.upstream_reply_prefix)
                });
                // The header block goes straight into the connection's buffer.
                let size = link.publish_with_fields(
                    msg.subject.as_bytes(),
                    reply.as_deref().map(str::as_bytes),
                    block,
                    &fields[..n],
                    &msg.payload,
                );
                count += 1;
                bytes += size as u64;
            }
            link.ping(Some(Confirm {
                export: i,
                token: position.clone(),
                count,
            }));
            export.unconfirmed.fetch_add(count, Ordering::Relaxed);
            let flushed = link.flush();
            drop(link);
            bump(&bridge.counters.exported, count);
            bump(&bridge.counters.exported_bytes, bytes);
            bump(&bridge.counters.resent, resent);
            if let Err(e) = flushed {
                bridge.link.changed.notify_all();
                bridge.error(format!("export {}: {e}", export.rule));
                break;
            }
        }
        // Start over from the confirmed position on the next connection.
        export.sid.store(0, Ordering::Relaxed);
        export.unconfirmed.store(0, Ordering::Relaxed);
        sent = Some(match sent.take() {
            Some(mut s) if s.epoch == position.epoch => {
                for (shard, &seq) in position.last_sequences.iter().enumerate() {
                    observe(&mut s, shard as u16, seq);
                }
                s
            }
            _ => position,
        });
        let _ = sub.unsubscribe();
    }
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Whether a local message goes upstream: not one that came from there (or from another
/// bridge), and not the bridge's own reply traffic.
fn exportable(msg: &Message) -> bool {
    !msg.subject.starts_with(BRIDGE_PREFIX)
        && msg
            .raw_headers
            .as_deref()
            .is_none_or(|h| headers::get(h, ORIGIN).is_none())
}

#[cfg(test)]
mod tests {
    use super::push_decimal;

    #[test]
    fn decimals() {
        for n in [0u64, 7, 10, 1234567890, u64::MAX] {
            let mut out = b"x:".to_vec();
            push_decimal(&mut out, n);
            assert_eq!(out, format!("x:{n}").into_bytes());
        }
    }
}
