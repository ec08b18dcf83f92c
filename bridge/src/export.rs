//! Exports: local messages under an export rule, taken from the local log by sequence and
//! published upstream, each confirmed before its position is kept.
//!
//! Owns: one thread per export rule, and its position: the resume token of the last
//! message upstream confirmed having ([`Export::confirmed`], kept across restarts by the
//! bridge's state file). The thread subscribes locally to the rule (lossless, from the
//! confirmed position) on a connection of its own, a socket pair the broker serves
//! (`pipe.rs`), and publishes what arrives upstream with a `Tern-Origin` header (this
//! broker's server id) and a `Nats-Msg-Id` made of the edge's name and the message's place
//! in the log (the same id every time it is sent), and a `PING` now and then
//! ([`CONFIRM_EVERY`], `confirm_batch`, or when it goes quiet): its `PONG` confirms what
//! went before it. When the upstream connection drops, the local connection and its subscription
//! end, and new ones start from the confirmed position once connected again: what was
//! sent but not confirmed is sent again (at least once), what the log no longer holds is
//! reported as a gap. The same happens when the local connection fails
//! (`export_restarts`). An exporter `export_window` messages behind is served from the
//! log by the broker (the subscription is lossless): nothing is dropped on the way.
//!
//! Never: exports a message that came from upstream (it has a `Tern-Origin` header) or the
//! bridge's own reply subjects (that would loop), or keeps a position upstream has not
//! confirmed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tern_protocol::binary::{Message, ResumeToken};

use crate::bridge::Bridge;
use crate::headers;
use crate::pipe::{Notice, Pipe};
use crate::stats::bump;
use crate::subject::BRIDGE_PREFIX;
use crate::upstream::Confirm;
use crate::{Inject, ORIGIN, PRIORITY};

/// The header carrying an exported message's id, as JetStream dedupes it.
pub(crate) const MSG_ID: &str = "Nats-Msg-Id";

/// Export batches in flight (sent, not confirmed) before the thread waits for answers.
const MAX_IN_FLIGHT: usize = 64;

/// A `PING` confirms what went out before it, at most this long after the last one (or
/// sooner: every `confirm_batch` messages, and when the export goes quiet). At a few
/// thousand messages a second, a `PING` per batch was one per message: as many `PONG`s
/// for upstream to send and the bridge's reader to wake up for.
const CONFIRM_EVERY: Duration = Duration::from_millis(10);

/// One export rule's state.
#[derive(Debug)]
pub(crate) struct Export {
    pub rule: String,
    /// The position upstream confirmed.
    pub confirmed: Mutex<Option<ResumeToken>>,
    /// Sent upstream and not confirmed yet.
    pub unconfirmed: AtomicU64,
}

impl Export {
    pub(crate) fn new(rule: String, confirmed: Option<ResumeToken>) -> Export {
        Export {
            rule,
            confirmed: Mutex::new(confirmed),
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

/// How long a read of the local connection waits for a message.
const TICK: Duration = Duration::from_millis(100);

/// How long opening the local connection, and a write to it, may take.
const LOCAL_TIMEOUT: Duration = Duration::from_secs(5);

/// The local subscription's sid: the only one on its connection.
const SID: u32 = 1;

/// The thread of export rule `i`: runs until the bridge stops. Its local connection is a
/// socket pair handed to the broker (`pipe.rs`), authenticated with `token`.
pub(crate) fn run(bridge: &Arc<Bridge>, i: usize, inject: &dyn Inject, token: &str) {
    let export = &bridge.exports[i];
    // What was sent on the previous connection: sent again now, counted as resent.
    let mut sent: Option<ResumeToken> = None;
    while !bridge.stopped() {
        let Some(generation) = bridge.link.wait_up(Duration::from_millis(250)) else {
            continue;
        };
        // A local connection for each upstream one: it ends with it, and so does its
        // subscription.
        let mut pipe = match Pipe::open(inject, i, token, TICK, LOCAL_TIMEOUT) {
            Ok(pipe) => pipe,
            Err(e) => {
                bridge.error(format!("export {}: the local connection: {e}", export.rule));
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        let start = export.confirmed();
        let window = u32::try_from(bridge.settings.export_window).unwrap_or(u32::MAX);
        if let Err(e) = pipe.subscribe(SID, &export.rule, start.as_ref(), window) {
            bridge.error(format!("export {}: subscribing locally: {e}", export.rule));
            std::thread::sleep(Duration::from_secs(1));
            continue;
        }
        // Where the export is: the token it resumed from (in the broker's epoch), moved by
        // the subscription's start in every shard and by each message.
        let mut position = match start {
            Some(token) if token.epoch == pipe.epoch() => token,
            _ => ResumeToken {
                epoch: pipe.epoch(),
                last_sequences: Vec::new(),
            },
        };
        let mut first_start = export.confirmed().is_none();
        let mut batch: Vec<Message> = Vec::with_capacity(bridge.settings.confirm_batch);
        // Exported since the last `PING`, and when that was; `moved`: the position moved
        // since (also over messages not exported, which a `PING` must confirm too).
        let (mut unpinged, mut last_ping) = (0u64, std::time::Instant::now());
        let mut moved = false;
        let ended: Result<(), String> = 'connected: loop {
            if bridge.stopped() {
                break Ok(());
            }
            batch.clear();
            let mut noticed = Vec::new();
            if let Err(e) = pipe.receive(&mut batch, bridge.settings.confirm_batch, &mut |n| {
                noticed.push(n)
            }) {
                break Err(e);
            }
            for n in noticed {
                take_notice(
                    bridge,
                    export,
                    n,
                    pipe.epoch(),
                    &mut position,
                    &mut first_start,
                );
            }
            // Wait while too much is unanswered (a slow upstream), or the connection ends.
            loop {
                let link = bridge.link.lock();
                if link.generation != generation || !link.is_up() {
                    break 'connected Ok(());
                }
                if link.pings_in_flight() < MAX_IN_FLIGHT {
                    break;
                }
                drop(link);
                std::thread::sleep(Duration::from_millis(1));
            }
            let mut link = bridge.link.lock();
            if link.generation != generation || !link.is_up() {
                break Ok(());
            }
            if batch.is_empty() {
                // Quiet: what went out since the last `PING` is confirmed now.
                if std::mem::take(&mut moved) {
                    confirm(&mut link, i, &position, &mut unpinged, &mut last_ping);
                    if let Err(e) = link.flush() {
                        drop(link);
                        bridge.link.changed.notify_all();
                        bridge.error(format!("export {}: {e}", export.rule));
                        break Ok(());
                    }
                }
                continue;
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
                let block = msg.headers.as_deref();
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
                    let r = String::from_utf8_lossy(r);
                    bridge.exported_requests.allow(&r, now);
                    format!("{}{r}", bridge.upstream_reply_prefix)
                });
                // The header block goes straight into the connection's buffer.
                let size = link.publish_with_fields(
                    &msg.subject,
                    reply.as_deref().map(str::as_bytes),
                    block,
                    &fields[..n],
                    &msg.payload,
                );
                count += 1;
                bytes += size as u64;
            }
            unpinged += count;
            moved = true;
            if unpinged >= bridge.settings.confirm_batch as u64
                || last_ping.elapsed() >= CONFIRM_EVERY
            {
                confirm(&mut link, i, &position, &mut unpinged, &mut last_ping);
                moved = false;
            }
            export.unconfirmed.fetch_add(count, Ordering::Relaxed);
            let flushed = link.flush();
            drop(link);
            bump(&bridge.counters.exported, count);
            bump(&bridge.counters.exported_bytes, bytes);
            bump(&bridge.counters.resent, resent);
            if let Err(e) = flushed {
                bridge.link.changed.notify_all();
                bridge.error(format!("export {}: {e}", export.rule));
                break Ok(());
            }
        };
        // Start over from the confirmed position on the next connection.
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
        // The local connection failed (upstream's ending is reported where it is seen):
        // the next one starts from the confirmed position.
        if let Err(e) = ended {
            bump(&bridge.counters.export_restarts, 1);
            bridge.error(format!("export {}: the local connection: {e}", export.rule));
        }
    }
}

/// Asks upstream to confirm what export `i` sent since its last `PING`: everything up to
/// `position` (written to the link, not flushed).
fn confirm(
    link: &mut crate::upstream::LinkState,
    i: usize,
    position: &ResumeToken,
    unpinged: &mut u64,
    last_ping: &mut std::time::Instant,
) {
    link.ping(Some(Confirm {
        export: i,
        token: position.clone(),
        count: std::mem::take(unpinged),
    }));
    *last_ping = std::time::Instant::now();
}

/// What the broker told export `export` besides its messages: where the subscription
/// starts (the first start of a rule is its first confirmed position), what it will never
/// get (counted as gaps, with an error), a resume token from another epoch.
fn take_notice(
    bridge: &Bridge,
    export: &Export,
    notice: Notice,
    epoch_now: u64,
    position: &mut ResumeToken,
    first_start: &mut bool,
) {
    match notice {
        Notice::Subscribed {
            epoch,
            last_sequences,
        } => {
            if epoch != position.epoch {
                *position = ResumeToken {
                    epoch,
                    last_sequences: Vec::new(),
                };
            }
            for (shard, &seq) in last_sequences.iter().enumerate() {
                observe(position, shard as u16, seq);
            }
            // The first start: from here on nothing is skipped, across restarts too. The
            // start itself, not `position`: what was sent before this notice is not
            // confirmed yet.
            if std::mem::take(first_start) && export.confirmed().is_none() {
                export.confirm(
                    ResumeToken {
                        epoch,
                        last_sequences,
                    },
                    0,
                );
                bridge.state_changed();
            }
        }
        Notice::Gap {
            shard,
            requested,
            oldest,
        } => {
            let lost = oldest.saturating_sub(requested);
            bump(&bridge.counters.export_gaps, lost);
            bridge.error(format!(
                "export {}: the log no longer holds sequences {requested}..{oldest} of shard \
                 {shard}: {lost} messages not exported",
                export.rule
            ));
        }
        Notice::Dropped { count } => {
            bump(&bridge.counters.export_gaps, count);
            bridge.error(format!(
                "export {}: {count} messages the log does not keep were dropped before the \
                 exporter read them: not exported",
                export.rule
            ));
        }
        Notice::EpochMismatch { message } => {
            *position = ResumeToken {
                epoch: epoch_now,
                last_sequences: Vec::new(),
            };
            bridge.error(format!("export {}: {message}", export.rule));
        }
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
    !msg.subject.starts_with(BRIDGE_PREFIX.as_bytes())
        && msg
            .headers
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
