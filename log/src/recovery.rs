//! Recovery: from the bytes of a data region and its newest checkpoint, the log those bytes
//! hold, the holes damage left in it, and what must be cut at its end.
//!
//! Owns: the recovery walk, the rule for telling a clean end of the log from a torn append
//! or damage, and the bookkeeping of holes. It is a pure function of the bytes, so every
//! crash image and every kind of damage can be tested without a file.
//!
//! Never: writes (zeroing what was cut and copying a damaged file aside are the ring's and
//! the file's jobs, once this has decided), does I/O, touches a socket, or trusts a byte it
//! has not checked. It never panics, whatever the bytes.
//!
//! The walk starts at the checkpoint's head, which the ring guarantees names an intact
//! record (or, for an empty log, where the next one goes), and keeps every record that is
//! intact (length in bounds, fields adding up, CRC seeded with the epoch) and whose sequence
//! is higher than the one kept before it (the first at least the checkpoint's first
//! sequence). Sequences only grow around the ring, so a stale record from an earlier lap,
//! intact but older, is never taken for a current one.
//!
//! Inside the span the checkpoint vouches for (from its head to its tail: every record there
//! was live when it was written, and still is), damage costs only the records it touched:
//! where the bytes are not a record to keep, the walk steps forward 8 bytes at a time (an
//! intact record it does not keep, it skips whole) to the next one it can keep, and the log
//! keeps a hole. A record found that way must also carry a sequence below the checkpoint's
//! next sequence plus the most records the ring could have taken since (`capacity / 40`).
//! Beyond the span, only the records appended since the checkpoint continue the log, one
//! right after the other: the walk follows them exactly and the log ends at the first
//! position that is not the next one, as a torn append leaves it. Free space is never
//! searched, so a fragment of an old record (or a record a client forged inside a payload)
//! can never be taken for one.

use std::collections::VecDeque;

use crate::format::{
    align, get_u16, get_u32, get_u64, is_wrap_marker_for, Checkpoint, ALIGN, RECORD_HEADER_LEN,
    WRAP_LEN,
};
use crate::record::{check, Invalid};

/// One index entry per this many sequences (the records whose `seq % INDEX_STRIDE == 0`).
pub(crate) const INDEX_STRIDE: u64 = 64;

const _: () = assert!(INDEX_STRIDE.is_power_of_two());

/// Whether record `seq`, following record `prev` in the log (if any), gets an index entry:
/// every multiple of [`INDEX_STRIDE`], and the first record after a gap in the sequences, so a
/// seek from an entry never hops over more than `INDEX_STRIDE - 1` records.
#[inline]
pub(crate) fn is_indexed(seq: u64, prev: Option<u64>) -> bool {
    seq & (INDEX_STRIDE - 1) == 0 || prev.is_some_and(|p| p.wrapping_add(1) != seq)
}

/// A run of the data region inside the live log that holds no record: the bytes recovery
/// zeroed between two records it kept. Readers and eviction step from `at` (where the record
/// before it ends, or data offset 0 after a wrap) to `to` (where the next record starts).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Skip {
    pub at: usize,
    pub to: usize,
}

/// Records recovery could not keep, between two records it kept or before the first one:
/// what a damaged stretch of the file held. The ring keeps the hole (its bytes zeroed) until
/// it overwrites that part of the file; until then every open reports it again, with
/// `damaged` false.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hole {
    /// The first sequence missing.
    pub first_missing: u64,
    /// The sequence of the record kept after the hole: `first_missing..next_kept` are missing
    /// (none when only a wrap marker was damaged).
    pub next_kept: u64,
    /// Data offset where the bytes without a record start.
    pub offset: u64,
    /// How many bytes hold no record (across the end of the region when the hole wraps).
    pub bytes: u64,
    /// Whether any of those bytes was not zero: damage found by this open, which the ring
    /// zeroes (after copying the file aside). A hole of zeroes is one an earlier open
    /// repaired.
    pub damaged: bool,
    /// What the walk found where the hole starts.
    pub reason: String,
}

/// The log recovery found.
#[derive(Debug)]
pub(crate) struct Recovered {
    /// Offset of the oldest record (or, when empty, where the next record goes).
    pub head: usize,
    /// Offset just past the newest record (may equal the capacity).
    pub tail: usize,
    /// Where the live lap ends, when the log continues at offset 0 (the end of the last
    /// record before the wrap: its wrap marker's offset, or the capacity).
    pub wrap_at: Option<usize>,
    /// The sequence of the first record after the wrap, which the wrap marker names.
    pub after_wrap: u64,
    /// The oldest sequence held (`next_seq` when empty).
    pub first_seq: u64,
    /// The sequence the next append gets.
    pub next_seq: u64,
    /// The sequence of the newest record held (meaningless when `count` is 0).
    pub last_seq: u64,
    /// Records held.
    pub count: u64,
    /// `(sequence, offset)` of the indexed records (see [`is_indexed`]), oldest first.
    pub index: VecDeque<(u64, usize)>,
    /// The holes inside the live log, sorted by `at`.
    pub skips: Vec<Skip>,
    /// Timestamp of the newest record (0 when empty).
    pub last_ts: u64,
    /// How many records (other than the oldest) have a smaller timestamp than their
    /// predecessor.
    pub descents: u64,
    /// The holes, in log order (the one before the first record kept included).
    pub holes: Vec<Hole>,
    /// Bytes cut at the end of the log and why, when it did not end cleanly.
    pub cut: Option<(u64, String)>,
    /// The cut at the end is what a crash inside an append leaves: one bad record after the
    /// last one kept, which the checkpoint does not prove existed.
    pub torn: bool,
    /// Records after the last one kept that the checkpoint proves existed (`ck.next_seq` is
    /// higher than the walk reached): they are lost, and their sequences skipped.
    pub end_lost: u64,
    /// Repairing what was found would zero bytes of records that existed: the file must be
    /// copied aside first.
    pub needs_copy: bool,
}

impl Recovered {
    /// The sequences missing in the log's holes, and proven lost at its end.
    pub fn lost(&self) -> u64 {
        let holes: u64 = self
            .holes
            .iter()
            .map(|h| h.next_kept - h.first_missing)
            .sum();
        holes + self.end_lost
    }
}

/// The first position after the last record kept that is not a record the walk keeps, and
/// what is there.
#[derive(Debug)]
struct Trouble {
    at: usize,
    why: Invalid,
    /// A wrap marker that named the record expected sent the walk to offset 0, where this is.
    announced_by: Option<usize>,
}

/// Recovers the log held in `data` (the whole data region) from checkpoint `ck`.
pub(crate) fn recover(
    data: &[u8],
    epoch: u64,
    ck: &Checkpoint,
    index_capacity: usize,
) -> Recovered {
    let cap = data.len();
    let start = ck.head as usize;
    let min = ck.first_seq;
    // No genuine record can carry a sequence at or above this (see the module header).
    let bound = ck
        .next_seq
        .saturating_add((cap / RECORD_HEADER_LEN) as u64 + 1);
    let mut r = Recovered {
        head: start,
        tail: start,
        wrap_at: None,
        after_wrap: 0,
        first_seq: min,
        next_seq: min,
        last_seq: 0,
        count: 0,
        index: VecDeque::with_capacity(index_capacity),
        skips: Vec::new(),
        last_ts: 0,
        descents: 0,
        holes: Vec::new(),
        cut: None,
        torn: false,
        end_lost: 0,
        needs_copy: false,
    };
    // The span the checkpoint vouches for: `[start, ck.tail)` around the ring (all of it
    // when it records a full ring). Every record in it was live when the checkpoint was
    // written, and still is (evicting writes a new checkpoint), so inside it the walk may
    // step over damage to the next intact record. Beyond it lie only the records appended
    // since, one after the other, and then free space, whose fragments of old records (and
    // of the payloads clients chose) must never be read as records: there the walk follows
    // the chain of records exactly and ends at the first position that breaks it.
    let span = if ck.first_seq == ck.next_seq {
        0
    } else {
        match ring_distance(start, ck.tail as usize % cap.max(1), cap) {
            0 => cap,
            d => d,
        }
    };
    let mut p = start;
    // How far the walk has gone from `start`, around the ring.
    let mut went = 0usize;
    // Set once the walk has gone past the end of the region (to offset 0).
    let mut wrapped = false;
    // The last record kept: where it ends, and whether it came after the wrap.
    let mut prev: Option<(usize, bool)> = None;
    // Since the last record kept: the first position that held no record to keep, and
    // whether any byte stepped over was not zero.
    let mut trouble: Option<Trouble> = None;
    let mut dirty = false;
    // The wrap marker (naming the record expected) that sent the walk to offset 0.
    let mut marker_at: Option<usize> = None;
    loop {
        if p >= cap {
            if wrapped {
                break;
            }
            wrapped = true;
            p = 0;
        }
        if went >= cap {
            break;
        }
        let expected = if r.count == 0 { min } else { r.last_seq + 1 };
        let inside = went < span;
        // Steps over what is not a record to keep: inside the span, to the next position
        // worth looking at (never past the span's end, where the exact chain resumes);
        // beyond it, nowhere: the log ends here.
        let step_over = |step: usize, p: &mut usize, went: &mut usize| -> bool {
            if !inside {
                return false;
            }
            let step = step.min(span - *went);
            *p += step;
            *went += step;
            true
        };
        if get_u32(data, p) == WRAP_LEN {
            if !wrapped && is_wrap_marker_for(data, p, epoch, expected) {
                marker_at = Some(p);
                went += cap - p;
                wrapped = true;
                p = 0;
                continue;
            }
            // Stale, or damaged: not a record either way.
            trouble.get_or_insert(Trouble {
                at: p,
                why: Invalid::WrapMarker,
                announced_by: None,
            });
            dirty = true;
            if step_over(ALIGN, &mut p, &mut went) {
                continue;
            }
            break;
        }
        let announced = marker_at.filter(|_| wrapped && prev.is_some_and(|(_, w)| !w));
        let limit = if wrapped { start } else { cap };
        match check(data, p, limit, epoch) {
            Ok((rec, stored))
                if rec.seq == expected
                    || (rec.seq > expected && rec.seq >= min && rec.seq < bound) =>
            {
                let (from, crossing) = match prev {
                    None => (start, false),
                    Some((end, after)) => (end, wrapped && !after),
                };
                let missing = rec.seq - expected;
                if let Some(t) = trouble.take() {
                    if missing > 0 {
                        r.needs_copy |= dirty;
                        r.holes.push(Hole {
                            first_missing: expected,
                            next_kept: rec.seq,
                            offset: from as u64,
                            bytes: ring_distance(from, p, cap) as u64,
                            damaged: dirty,
                            reason: t.describe(expected),
                        });
                    }
                }
                match prev {
                    None => {
                        r.head = p;
                        r.first_seq = rec.seq;
                    }
                    Some(_) if crossing => {
                        // The first record after the wrap: the older part ends where the
                        // last record before it ended (its wrap marker goes there), and
                        // whatever precedes this record at the start of the region is a
                        // hole.
                        r.wrap_at = Some(from);
                        r.after_wrap = rec.seq;
                        if p != 0 {
                            r.skips.push(Skip { at: 0, to: p });
                        }
                    }
                    Some(_) if p != from => r.skips.push(Skip { at: from, to: p }),
                    Some(_) => {}
                }
                if is_indexed(rec.seq, (r.count > 0).then_some(r.last_seq)) {
                    r.index.push_back((rec.seq, p));
                }
                if r.count > 0 && rec.timestamp < r.last_ts {
                    r.descents += 1;
                }
                r.last_ts = rec.timestamp;
                r.last_seq = rec.seq;
                r.count += 1;
                r.tail = p + stored;
                prev = Some((p + stored, wrapped));
                dirty = false;
                marker_at = None;
                p += stored;
                went += stored;
            }
            Ok((rec, stored)) => {
                // Intact but not ours to keep (stale, or beyond what could be genuine): no
                // record of the log starts inside it.
                trouble.get_or_insert(Trouble {
                    at: p,
                    why: Invalid::Seq(rec.seq),
                    announced_by: announced,
                });
                dirty = true;
                if !step_over(stored, &mut p, &mut went) {
                    break;
                }
            }
            Err(why) => {
                if !(why == Invalid::Empty && get_u32(data, p + 4) == 0) {
                    dirty = true;
                }
                trouble.get_or_insert(Trouble {
                    at: p,
                    why,
                    announced_by: announced,
                });
                if !step_over(ALIGN, &mut p, &mut went) {
                    break;
                }
            }
        }
    }
    r.skips.sort_unstable_by_key(|s| s.at);

    if r.count == 0 {
        r.head = start;
        r.tail = start;
        r.wrap_at = None;
        r.next_seq = min.max(ck.next_seq);
        r.first_seq = r.next_seq;
    } else {
        // A sequence the checkpoint proves was handed out is never handed out again.
        r.next_seq = (r.last_seq + 1).max(ck.next_seq);
    }
    judge_end(&mut r, data, ck, trouble);
    r
}

/// Decides what the bytes after the last record kept are: a clean end, a torn append, or
/// damage the checkpoint proves; sets `cut`, `torn`, `end_lost` and `needs_copy`.
fn judge_end(r: &mut Recovered, data: &[u8], ck: &Checkpoint, trouble: Option<Trouble>) {
    let cap = data.len();
    let start = ck.head as usize;
    let (s, from) = if r.count == 0 {
        (ck.first_seq, start)
    } else {
        (r.last_seq + 1, r.tail)
    };
    let mut reason = None;
    let mut bytes = 0u64;
    if let Some(t) = &trouble {
        let claims_s = t.at + 16 <= cap && get_u64(data, t.at + 8) == s;
        let plain = t.announced_by.is_none();
        let clean = match t.why {
            Invalid::Empty => !claims_s && plain,
            Invalid::Seq(found) => found < s && plain,
            Invalid::WrapMarker => plain,
            _ => false,
        };
        if !clean {
            reason = Some(t.describe(s));
            bytes = torn_extent(data, t.at, cap) + if plain { 0 } else { ALIGN as u64 };
            r.torn = true;
        }
    }
    // (No trouble: the walk came back to the head, the ring is exactly full.)
    // A walk that ends where the checkpoint says the log ended has everything the
    // checkpoint knew of: sequences below its next one are a gap an earlier recovery
    // recorded (it skips what it proved lost), not a new loss.
    if ck.next_seq > s && from != ck.tail as usize {
        // The checkpoint proves the log went further than the walk did.
        let lost = ck.next_seq - s;
        let note = format!(
            "the last checkpoint recorded the log up to sequence {}, so {lost} record(s) from sequence {s} on are lost",
            ck.next_seq - 1
        );
        reason = Some(match reason {
            Some(r) => format!("{r}; {note}"),
            None => format!("record {s} at data offset {from} is missing; {note}"),
        });
        let to = ck.tail as usize;
        bytes = bytes.max(ring_distance(from % cap.max(1), to, cap) as u64);
        r.end_lost = lost;
        r.torn = false;
        r.needs_copy |= any_nonzero(data, from % cap.max(1), to);
    }
    r.cut = reason.map(|why| (bytes, why));
}

impl Trouble {
    /// What was wrong where record `expected` was due.
    fn describe(&self, expected: u64) -> String {
        match self.announced_by {
            Some(m) => format!(
                "record {expected}, announced at data offset 0 by the wrap marker at {m}, is missing or bad: {}",
                self.why
            ),
            None => format!(
                "record {expected} at data offset {}: {}",
                self.at, self.why
            ),
        }
    }
}

/// Bytes from data offset `from` forward to `to`, around the end of the region if need be.
fn ring_distance(from: usize, to: usize, cap: usize) -> usize {
    if to >= from {
        to - from
    } else {
        cap - from + to
    }
}

/// Whether any byte from `from` forward to `to` (around the end if need be) is not zero.
fn any_nonzero(data: &[u8], from: usize, to: usize) -> bool {
    let nz = |b: &[u8]| b.iter().any(|&x| x != 0);
    let to = to.min(data.len());
    if to >= from {
        nz(&data[from.min(to)..to])
    } else {
        nz(&data[from..]) || nz(&data[..to])
    }
}

/// How many bytes the torn or corrupt record at `q` covers, as far as its own fields can be
/// trusted: its length field if that is in bounds, else the sum of its field lengths if that
/// is, else one record header.
fn torn_extent(data: &[u8], q: usize, cap: usize) -> u64 {
    let room = cap - q;
    let len = get_u32(data, q) as usize;
    if len >= RECORD_HEADER_LEN && align(len) <= room {
        return align(len) as u64;
    }
    if let Some(stored) = extent_from_lengths(data, q, cap) {
        return stored as u64;
    }
    room.min(RECORD_HEADER_LEN) as u64
}

/// The extent a record's field lengths describe, ignoring its (possibly unwritten) length
/// field, if it fits in the region.
fn extent_from_lengths(data: &[u8], q: usize, cap: usize) -> Option<usize> {
    if q + RECORD_HEADER_LEN > cap {
        return None;
    }
    let sum = RECORD_HEADER_LEN
        + get_u16(data, q + 26) as usize
        + get_u16(data, q + 28) as usize
        + get_u16(data, q + 30) as usize
        + get_u32(data, q + 32) as usize
        + get_u32(data, q + 36) as usize;
    (align(sum) <= cap - q).then_some(align(sum))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{align, crc, wrap_marker, RECORD_HEADER_LEN};
    use crate::record::{commit_word, Record};

    const EPOCH: u64 = 0xfeed;

    /// Writes record `seq` with `payload` at `at`, the way the ring does; returns its end.
    fn put(data: &mut [u8], at: usize, seq: u64, ts: u64, payload: &[u8]) -> usize {
        let rec = Record {
            timestamp: ts,
            ..Record::new(b"s", payload)
        };
        let len = rec.exact_len() as usize;
        data[at + 8..at + RECORD_HEADER_LEN].copy_from_slice(&rec.fixed_part(seq));
        let mut p = at + RECORD_HEADER_LEN;
        for f in rec.var_fields() {
            data[p..p + f.len()].copy_from_slice(f);
            p += f.len();
        }
        let sum = crc(EPOCH, &data[at + 8..at + len]);
        data[at..at + 8].copy_from_slice(&commit_word(len as u32, sum));
        at + align(len)
    }

    /// Writes records `1..=n` (timestamp = sequence) from the start of `data`; returns where
    /// each starts and where the last ends.
    fn put_run(data: &mut [u8], n: u64, payload: &[u8]) -> (Vec<usize>, usize) {
        let mut p = 0;
        let mut starts = vec![];
        for seq in 1..=n {
            starts.push(p);
            p = put(data, p, seq, seq, payload);
        }
        (starts, p)
    }

    fn ck(head: u64, first: u64, tail: u64, next: u64) -> Checkpoint {
        Checkpoint {
            generation: 1,
            head,
            first_seq: first,
            tail,
            next_seq: next,
        }
    }

    #[test]
    fn empty_region_recovers_empty() {
        let data = vec![0u8; 1024];
        let r = recover(&data, EPOCH, &ck(0, 1, 0, 1), 4);
        assert_eq!((r.head, r.tail, r.first_seq, r.next_seq), (0, 0, 1, 1));
        assert!(r.cut.is_none());
    }

    #[test]
    fn walks_records_and_stops_cleanly_at_zeroes() {
        let mut data = vec![0u8; 1024];
        let mut p = 0;
        for seq in 1..=5 {
            p = put(&mut data, p, seq, seq * 10, b"hello");
        }
        let r = recover(&data, EPOCH, &ck(0, 1, 0, 1), 4);
        assert_eq!((r.first_seq, r.next_seq, r.tail), (1, 6, p));
        assert_eq!(r.last_ts, 50);
        assert_eq!(r.descents, 0);
        assert!(r.cut.is_none());
    }

    #[test]
    fn stale_record_from_an_earlier_lap_ends_the_log_cleanly() {
        let mut data = vec![0u8; 1024];
        // An old lap wrote sequences 1..=8; the new lap rewrote the start with 9 and 10 (same
        // sizes, so record 3 of the old lap begins right after 10).
        let mut p = 0;
        for seq in 1..=8 {
            p = put(&mut data, p, seq, 0, b"xx");
        }
        let mut p = 0;
        for seq in 9..=10 {
            p = put(&mut data, p, seq, 0, b"xx");
        }
        let r = recover(&data, EPOCH, &ck(0, 9, 0, 9), 4);
        assert_eq!((r.first_seq, r.next_seq, r.tail), (9, 11, p));
        assert!(r.cut.is_none(), "{:?}", r.cut);
    }

    #[test]
    fn follows_a_wrap_marker_and_stops_at_the_head() {
        let mut data = vec![0u8; 256];
        // Records 1..=3 of 48 bytes at 96, 144, 192 (ends at 240); marker at 240; 4 at 0, 5 at
        // 48, which ends exactly at the head (96): a full ring.
        let mut p = 96;
        for seq in 1..=3 {
            p = put(&mut data, p, seq, 0, b"1234567");
        }
        data[p..p + 8].copy_from_slice(&wrap_marker(EPOCH, 4));
        let mut q = put(&mut data, 0, 4, 0, b"1234567");
        q = put(&mut data, q, 5, 0, b"1234567");
        assert_eq!(q, 96);
        let r = recover(&data, EPOCH, &ck(96, 1, 0, 1), 4);
        assert_eq!((r.first_seq, r.next_seq), (1, 6));
        assert_eq!((r.head, r.tail, r.wrap_at), (96, 96, Some(240)));
        assert!(r.cut.is_none(), "{:?}", r.cut);
    }

    #[test]
    fn a_marker_without_its_record_is_a_torn_append() {
        let mut data = vec![0u8; 256];
        let mut p = 96;
        for seq in 1..=3 {
            p = put(&mut data, p, seq, 0, b"1234567");
        }
        data[p..p + 8].copy_from_slice(&wrap_marker(EPOCH, 4));
        let r = recover(&data, EPOCH, &ck(96, 1, 0, 1), 4);
        assert_eq!((r.next_seq, r.tail, r.wrap_at), (4, 240, None));
        let (bytes, why) = r.cut.expect("torn append reported");
        assert!(why.contains("wrap marker at 240"), "{why}");
        assert!(bytes >= 8);
    }

    #[test]
    fn a_flipped_byte_costs_only_its_record_and_the_walk_goes_on() {
        let mut data = vec![0u8; 1024];
        let (starts, p) = put_run(&mut data, 6, b"payload");
        data[starts[3] + 45] ^= 0x10; // inside record 4's payload
        let r = recover(&data, EPOCH, &ck(0, 1, p as u64, 7), 4);
        assert_eq!((r.first_seq, r.next_seq, r.tail), (1, 7, p));
        assert_eq!((r.count, r.last_seq), (5, 6));
        assert_eq!(
            r.skips,
            vec![Skip {
                at: starts[3],
                to: starts[4]
            }]
        );
        let [hole] = &r.holes[..] else {
            panic!("one hole: {:?}", r.holes);
        };
        assert_eq!((hole.first_missing, hole.next_kept), (4, 5));
        assert_eq!(
            (hole.offset, hole.bytes),
            (starts[3] as u64, (starts[4] - starts[3]) as u64)
        );
        assert!(hole.damaged);
        assert!(hole.reason.contains("record 4"), "{}", hole.reason);
        assert!(hole.reason.contains("CRC"), "{}", hole.reason);
        assert!(
            r.needs_copy,
            "bytes of a record that existed would be zeroed"
        );
        assert!(r.cut.is_none(), "the log ends cleanly: {:?}", r.cut);
        assert_eq!(r.lost(), 1);
    }

    #[test]
    fn beyond_the_checkpointed_span_only_the_exact_chain_continues_the_log() {
        let mut data = vec![0u8; 2048];
        let (starts, p) = put_run(&mut data, 5, b"payload");
        // A torn append of record 6, then, further on in free space, a perfectly valid image
        // of a record 7 (a fragment of an old record, or one a client forged in a payload).
        data[p + 8..p + 16].copy_from_slice(&6u64.to_le_bytes());
        data[p + 16..p + 40].fill(0xab);
        let forged_at = p + 96;
        put(&mut data, forged_at, 7, 0, b"forged");
        // The checkpoint vouches for records 1 and 2 only; 3..5 were appended after it.
        let r = recover(&data, EPOCH, &ck(0, 1, starts[2] as u64, 3), 4);
        assert_eq!((r.count, r.last_seq, r.next_seq), (5, 5, 6));
        assert!(r.torn, "{:?}", r.cut);
        assert!(r.holes.is_empty());
        assert!(!r.needs_copy);
        // Even when the checkpoint vouches for all five, the free space after them is not
        // searched.
        let r = recover(&data, EPOCH, &ck(0, 1, p as u64, 6), 4);
        assert_eq!((r.count, r.last_seq, r.next_seq), (5, 5, 6));
        assert!(r.torn);
    }

    #[test]
    fn inside_the_checkpointed_span_damage_is_stepped_over_outside_it_the_log_ends() {
        let mut data = vec![0u8; 1024];
        let (starts, _) = put_run(&mut data, 6, b"payload");
        // Inside record 3; the checkpoint vouches for 1..=4: record 3 is a hole, 4..6 are kept.
        data[starts[2] + 45] ^= 0x01;
        let r = recover(&data, EPOCH, &ck(0, 1, starts[4] as u64, 5), 4);
        assert_eq!((r.count, r.last_seq), (5, 6));
        assert_eq!(r.holes.len(), 1);
        // It vouches for 1..=2 only: record 3 was appended after it, and the walk cannot
        // tell its damage from a torn append; the log ends there.
        let r = recover(&data, EPOCH, &ck(0, 1, starts[2] as u64, 3), 4);
        assert_eq!((r.count, r.last_seq, r.next_seq), (2, 2, 3));
        assert!(r.torn);
    }

    #[test]
    fn a_proven_loss_at_the_end_skips_its_sequences() {
        let mut data = vec![0u8; 1024];
        let (starts, p) = put_run(&mut data, 6, b"payload");
        data[starts[4]..p].fill(0xee); // records 5 and 6 overwritten
        let r = recover(&data, EPOCH, &ck(0, 1, p as u64, 7), 4);
        assert_eq!((r.first_seq, r.next_seq, r.count), (1, 7, 4));
        let (bytes, why) = r.cut.clone().unwrap();
        assert!(why.contains("record 5"), "{why}");
        assert!(why.contains("2 record(s)"), "{why}");
        assert_eq!(bytes as usize, p - starts[4]);
        assert_eq!(r.end_lost, 2);
        assert!(!r.torn);
        assert!(r.needs_copy);
    }

    #[test]
    fn torn_record_is_reported_even_without_a_checkpoint_hint() {
        let mut data = vec![0u8; 1024];
        let mut p = put(&mut data, 0, 1, 0, b"a");
        let torn_at = p;
        p = put(&mut data, p, 2, 0, b"bbbbbbbbbbbbbbbbbbbb");
        // Crash before the commit word: length and CRC never written.
        data[torn_at..torn_at + 8].fill(0);
        let r = recover(&data, EPOCH, &ck(0, 1, 0, 1), 4);
        assert_eq!(r.next_seq, 2);
        let (bytes, why) = r.cut.unwrap();
        assert!(why.contains("record 2"), "{why}");
        assert_eq!(bytes as usize, p - torn_at);
    }

    #[test]
    fn counts_timestamp_descents_and_builds_the_index() {
        let mut data = vec![0u8; 64 * 1024];
        let mut p = 0;
        let mut at_64 = 0;
        for seq in 1..=130u64 {
            if seq == 64 {
                at_64 = p;
            }
            let ts = if seq == 100 { 5 } else { seq * 10 };
            p = put(&mut data, p, seq, ts, b"");
        }
        let r = recover(&data, EPOCH, &ck(0, 1, 0, 1), 4);
        assert_eq!(r.next_seq, 131);
        assert_eq!(r.descents, 1, "only record 100 goes back in time");
        assert_eq!(r.index.len(), 2);
        assert_eq!(r.index[0], (64, at_64));
        assert_eq!(r.last_ts, 1300);
    }

    #[test]
    fn garbage_never_panics() {
        use proptest::prelude::*;
        proptest!(|(bytes in proptest::collection::vec(any::<u8>(), 128..512), head in 0u64..16, first in 1u64..5)| {
            let len = bytes.len() / 8 * 8;
            let c = ck((head * 8) % len as u64, first, 0, first);
            let _ = recover(&bytes[..len], EPOCH, &c, 4);
        });
    }
}
