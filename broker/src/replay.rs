//! Limits on text-port catch-ups (`$TERN.REPLAY`) in progress, and what a refused or
//! malformed request gets back.
//!
//! Owns: each connection's catch-ups in progress (the broker-wide count is an
//! `admission::Slots` the workers share) and the shards each still waits
//! for ([`ConnReplays`]), which limit refused a request ([`ReplayLimit`]), and the status
//! message a refused or malformed request gets on its inbox, with any client-supplied text
//! made safe for a header line ([`status_block`]).
//!
//! Contract: a slot taken for a request is given back exactly once: when every shard it went
//! to has said it is done (`Envelope::ReplayDone`), or when its connection closes (which
//! also tells the shards to drop what is left of it).
//!
//! Never: touches the publish path (the shared count changes only when a catch-up starts or
//! ends), blocks, or takes a lock.

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
    open: Vec<(u64, usize)>,
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

    /// Request `id` went to `shards` shards.
    pub fn started(&mut self, id: u64, shards: usize) {
        self.open.push((id, shards.max(1)));
    }

    /// One shard finished its part of request `id`. True when that was the last one: the
    /// request is over and its slot must be given back. An unknown id (already over) is
    /// ignored.
    pub fn shard_done(&mut self, id: u64) -> bool {
        let Some(i) = self.open.iter().position(|(r, _)| *r == id) else {
            return false;
        };
        self.open[i].1 -= 1;
        if self.open[i].1 > 0 {
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
        r.started(a, 3);
        r.started(b, 1);
        assert_eq!(r.len(), 2);
        assert!(!r.shard_done(a));
        assert!(r.shard_done(b));
        assert!(!r.shard_done(b), "an id already over is ignored");
        assert!(!r.shard_done(a));
        assert!(r.shard_done(a));
        assert_eq!(r.len(), 0);
        let c = r.next_id();
        r.started(c, 2);
        assert_eq!(r.end_all(), 1);
        assert_eq!(r.len(), 0);
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
