//! Limits on text-port catch-ups (`$TERN.REPLAY`) in progress, and what a refused or
//! malformed request gets back.
//!
//! Owns: each connection's catch-ups in progress (the broker-wide count is an
//! `admission::Slots` the workers share), the shards each still waits for, and for one
//! over several shards the merge of their records into stored order ([`ConnReplays`]: the
//! records go out in that order, then the shards' end markers), which limit refused a
//! request ([`ReplayLimit`]), and the status
//! message a refused or malformed request gets on its inbox, with any client-supplied text
//! made safe for a header line ([`status_block`]).
//!
//! Contract: a slot taken for a request is given back exactly once: when every shard it went
//! to has said it is done (`Envelope::ReplayDone`), or when its connection closes (which
//! also tells the shards to drop what is left of it).
//!
//! Never: touches the publish path (the shared count changes only when a catch-up starts or
//! ends), blocks, or takes a lock.

use std::ops::Range;
use std::sync::Arc;

use crate::merge::{Merge, Released};
use crate::mesh::{InboxPart, Msg};

crate::names::named_enum! {
    /// Which limit refused a catch-up request.
    pub enum ReplayLimit {
        /// `max_replays_per_conn`.
        Connection => "connection",
        /// `max_replays`.
        Server => "server",
    }
}

/// One connection's catch-ups in progress: each request's id and the shards that have not
/// said they are done yet.
#[derive(Debug, Default)]
pub(crate) struct ConnReplays {
    next_id: u64,
    open: Vec<Open>,
}

#[derive(Debug)]
struct Open {
    id: u64,
    /// Shards that have not said they are done.
    shards_left: usize,
    /// Over several shards: their records merged.
    merged: Option<Box<Merged>>,
}

/// A catch-up's records from several shards, merged into stored order, and the shards' end
/// markers that have come, which go out after the last record.
#[derive(Debug)]
struct Merged {
    merge: Merge,
    markers: Vec<Arc<Msg>>,
}

impl ConnReplays {
    /// Catch-ups in progress.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// An id for the next request, never used before on this connection.
    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Request `id` went to `shards`; more than one, and their parts come to this
    /// connection to be merged (`Envelope::ReplayPart`); `last_n` is its "last N" start.
    pub fn started(&mut self, id: u64, shards: Range<usize>, last_n: Option<u32>) {
        let merged = (shards.len() > 1).then(|| {
            Box::new(Merged {
                merge: Merge::new(shards.clone(), last_n),
                markers: Vec::new(),
            })
        });
        self.open.push(Open {
            id,
            shards_left: shards.len().max(1),
            merged,
        });
    }

    /// Part of what `shard` replays for request `id`; returns the messages to publish to
    /// the inbox now, in order: the records the merge can release, and once every shard
    /// has ended, the rest of them and then the end markers, in shard order. Nothing for an
    /// unknown id (already over, or not merged).
    pub fn part(&mut self, id: u64, shard: u16, part: InboxPart) -> Vec<Arc<Msg>> {
        let Some(Merged { merge, markers }) = self
            .open
            .iter_mut()
            .find(|o| o.id == id)
            .and_then(|o| o.merged.as_deref_mut())
        else {
            return Vec::new();
        };
        match part {
            InboxPart::Record(msg) => {
                merge.hold(msg);
            }
            InboxPart::Counted(sends) => merge.counted(shard, sends),
            InboxPart::End(marker) => {
                merge.caught_up(shard);
                markers.push(marker);
            }
        }
        // An inbox catch-up's gaps travel in its end markers, never as notices of their own.
        let msg = |r: Released| match r {
            Released::Msg(m) => Some(m),
            Released::Gap { .. } => None,
        };
        let mut out: Vec<Arc<Msg>> = std::iter::from_fn(|| merge.pop()).filter_map(msg).collect();
        if merge.all_caught_up() && !markers.is_empty() {
            out.extend(merge.drain().into_iter().filter_map(msg));
            markers.sort_by_key(|m| m.stamp.shard);
            out.append(markers);
        }
        out
    }

    /// One shard finished its part of request `id`. True when that was the last one: the
    /// request is over and its slot must be given back. An unknown id (already over) is
    /// ignored.
    pub fn shard_done(&mut self, id: u64) -> bool {
        let Some(i) = self.open.iter().position(|o| o.id == id) else {
            return false;
        };
        self.open[i].shards_left -= 1;
        if self.open[i].shards_left > 0 {
            return false;
        }
        self.open.swap_remove(i);
        true
    }

    /// Ends every request in progress (the connection closes); returns how many there were.
    pub fn end_all(&mut self) -> usize {
        let n = self.open.len();
        self.open.clear();
        n
    }
}

/// Longest text a status message's `Tern-Error` header carries, in bytes.
pub(crate) const MAX_ERROR_TEXT: usize = 256;

/// The header block of a status message to a catch-up's inbox:
/// `NATS/1.0 <status>\r\nTern-Error: <text>\r\n\r\n`. The text may hold what a client sent
/// (an unknown JSON key appears in the parser's message), so control characters (CR and LF
/// above all, which would end the header line and start another) are dropped and it is cut
/// to [`MAX_ERROR_TEXT`] bytes.
pub(crate) fn status_block(status: &str, text: &str) -> String {
    format!(
        "NATS/1.0 {status}\r\nTern-Error: {}\r\n\r\n",
        header_safe(text)
    )
}

/// `text` without control characters, cut (on a character boundary) to [`MAX_ERROR_TEXT`]
/// bytes, with `...` when it was cut.
fn header_safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_ERROR_TEXT));
    for c in text.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_ERROR_TEXT - 3 {
            out.push_str("...");
            break;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_stop_at_the_limit_and_come_back() {
        let slots = crate::admission::Slots::new(2);
        assert!(slots.try_acquire());
        assert!(slots.try_acquire());
        assert!(!slots.try_acquire());
        slots.release();
        assert!(slots.try_acquire());
        assert!(!slots.try_acquire());
    }

    #[test]
    fn a_request_is_over_when_its_last_shard_is_done() {
        let mut r = ConnReplays::default();
        let a = r.next_id();
        let b = r.next_id();
        assert_ne!(a, b);
        r.started(a, 0..3, None);
        r.started(b, 0..1, None);
        assert_eq!(r.len(), 2);
        assert!(!r.shard_done(a));
        assert!(r.shard_done(b));
        assert!(!r.shard_done(b), "an id already over is ignored");
        assert!(!r.shard_done(a));
        assert!(r.shard_done(a));
        assert_eq!(r.len(), 0);
        let c = r.next_id();
        r.started(c, 0..2, None);
        assert_eq!(r.end_all(), 1);
        assert_eq!(r.len(), 0);
    }

    fn inbox_msg(shard: u16, seq: u64, time_ns: u64) -> Msg {
        let mut m = Msg::new(
            bytes::Bytes::from_static(b"_INBOX.r"),
            bytes::Bytes::new(),
            crate::mesh::ConnId::NONE,
            std::time::Instant::now(),
        );
        m.stamp = crate::mesh::Stamp {
            shard,
            seq,
            time_ns,
        };
        m
    }

    #[test]
    fn a_request_over_shards_publishes_records_in_stored_order_then_the_markers() {
        let mut r = ConnReplays::default();
        let id = r.next_id();
        r.started(id, 0..2, Some(2));
        let seqs = |out: Vec<Arc<Msg>>| -> Vec<(u16, u64)> {
            out.iter().map(|m| (m.stamp.shard, m.stamp.seq)).collect()
        };
        assert!(r.part(id, 0, InboxPart::Counted(2)).is_empty());
        assert!(r
            .part(id, 0, InboxPart::Record(Arc::new(inbox_msg(0, 5, 10))))
            .is_empty());
        assert!(r
            .part(id, 0, InboxPart::Record(Arc::new(inbox_msg(0, 6, 40))))
            .is_empty());
        assert!(r
            .part(id, 0, InboxPart::End(Arc::new(inbox_msg(0, 0, 0))))
            .is_empty());
        assert!(
            r.part(id, 1, InboxPart::Counted(1)).is_empty(),
            "3 come, 2 owed"
        );
        let out = r.part(id, 1, InboxPart::Record(Arc::new(inbox_msg(1, 9, 20))));
        assert_eq!(
            seqs(out),
            [(1, 9)],
            "the oldest (shard 0's seq 5) is stepped over"
        );
        let out = r.part(id, 1, InboxPart::End(Arc::new(inbox_msg(1, 0, 0))));
        assert_eq!(
            seqs(out),
            [(0, 6), (0, 0), (1, 0)],
            "the rest, then the markers"
        );
        // A request to one shard is not merged: its shard publishes to the inbox itself.
        let one = r.next_id();
        r.started(one, 1..2, None);
        assert!(r
            .part(one, 1, InboxPart::End(Arc::new(inbox_msg(1, 0, 0))))
            .is_empty());
    }

    #[test]
    fn client_text_cannot_break_out_of_its_header_line() {
        let block = status_block(
            "400 Bad Request",
            "unknown field `x\r\nTern-Injected: yes\r\n\r\nPUB`, expected ...",
        );
        assert_eq!(block.matches("\r\n").count(), 3, "{block:?}");
        assert!(block.starts_with("NATS/1.0 400 Bad Request\r\nTern-Error: "));
        assert!(block.ends_with("\r\n\r\n"));
        assert!(!block.contains("\r\nTern-Injected"));
        let long = status_block("400 Bad Request", &"é".repeat(1000));
        let line = long.lines().nth(1).unwrap();
        assert!(
            line.len() <= "Tern-Error: ".len() + MAX_ERROR_TEXT,
            "{}",
            line.len()
        );
        assert!(line.ends_with("..."));
    }
}
