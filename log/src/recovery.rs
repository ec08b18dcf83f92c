//! Recovery: from the bytes of a data region and its newest checkpoint, the log those bytes
//! hold, and what was cut.
//!
//! Owns: the recovery walk and the rule for telling a clean end of the log from a torn or
//! corrupt record. It is a pure function of the bytes, so every crash image can be tested
//! without a file.
//!
//! Never: writes (clearing what was cut is the ring's job, once this has decided), does I/O,
//! touches a socket, or trusts a byte it has not checked. It never panics, whatever the bytes.
//!
//! The walk starts at the checkpoint's head, which the ring guarantees names an intact record
//! (or, for an empty log, where the next one goes), and goes forward, following wrap markers
//! to offset 0, accepting a record only if its length is in bounds, its fields add up, its CRC
//! (seeded with the epoch) matches and it carries exactly the next sequence. It stops at the
//! first record that fails. Sequence continuity is what rejects stale records left from an
//! earlier lap of the ring: their CRC is fine, but their sequence is older.

use std::collections::VecDeque;

use crate::format::{get_u32, get_u64, is_wrap_marker_for, Checkpoint, WRAP_LEN};
use crate::record::{verify, Invalid};

/// One index entry per this many sequences (the records whose `seq % INDEX_STRIDE == 0`).
pub(crate) const INDEX_STRIDE: u64 = 64;

const _: () = assert!(INDEX_STRIDE.is_power_of_two());

/// Whether record `seq` has an index entry (`seq` is a multiple of [`INDEX_STRIDE`], a power
/// of two).
#[inline]
pub(crate) fn is_indexed(seq: u64) -> bool {
    seq & (INDEX_STRIDE - 1) == 0
}

/// The log recovery found.
#[derive(Debug)]
pub(crate) struct Recovered {
    /// Offset of the oldest record (or, when empty, where the next record goes).
    pub head: usize,
    /// Offset just past the newest record (may equal the capacity).
    pub tail: usize,
    /// Where the live lap ends, when the log continues at offset 0 (a wrap marker's offset, or
    /// the capacity).
    pub wrap_at: Option<usize>,
    pub first_seq: u64,
    pub next_seq: u64,
    /// Offsets of the records whose sequence is a multiple of [`INDEX_STRIDE`], oldest first.
    pub index: VecDeque<usize>,
    /// Timestamp of the newest record (0 when empty).
    pub last_ts: u64,
    /// How many records (other than the oldest) have a smaller timestamp than their
    /// predecessor.
    pub descents: u64,
    /// Bytes discarded and why, when something was cut.
    pub cut: Option<(u64, String)>,
}

/// How the walk ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Reached the head again: the ring is exactly full.
    FullRing,
    /// A wrap marker that announces another sequence (stale, from an earlier lap).
    StaleMarker,
    /// A second wrap in one walk: impossible for a valid log.
    SecondWrap,
    /// The record expected here is missing or bad.
    Record(Invalid),
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
    let mut r = Recovered {
        head: start,
        tail: start,
        wrap_at: None,
        first_seq: ck.first_seq,
        next_seq: ck.first_seq,
        index: VecDeque::with_capacity(index_capacity),
        last_ts: 0,
        descents: 0,
        cut: None,
    };
    let mut p = start;
    // Set when the walk has jumped to offset 0 (from a marker at this offset, or from the end
    // of the region), until a record there confirms the wrap.
    let mut pending: Option<usize> = None;
    let mut marker_at: Option<usize> = None;
    let end = loop {
        let wrapped = pending.is_some() || r.wrap_at.is_some();
        if p == cap {
            if wrapped {
                break End::SecondWrap;
            }
            pending = Some(cap);
            p = 0;
            continue;
        }
        if wrapped && p == start {
            break End::FullRing;
        }
        if get_u32(data, p) == WRAP_LEN {
            if wrapped {
                break End::SecondWrap;
            }
            if !is_wrap_marker_for(data, p, epoch, r.next_seq) {
                break End::StaleMarker;
            }
            pending = Some(p);
            marker_at = Some(p);
            p = 0;
            continue;
        }
        // After the wrap, records must end before the head: the ring never overlaps itself.
        let limit = if wrapped { start } else { cap };
        match verify(data, p, limit, epoch, r.next_seq) {
            Ok((rec, stored)) => {
                if let Some(w) = pending.take() {
                    r.wrap_at = Some(w);
                }
                if is_indexed(r.next_seq) {
                    r.index.push_back(p);
                }
                if r.next_seq > r.first_seq && rec.timestamp < r.last_ts {
                    r.descents += 1;
                }
                r.last_ts = rec.timestamp;
                r.next_seq += 1;
                p += stored;
                r.tail = p;
            }
            Err(why) => break End::Record(why),
        }
    };
    if r.next_seq == r.first_seq {
        // Nothing recovered: the log is empty at the checkpoint's head.
        r.tail = start;
        r.wrap_at = None;
    }

    // Where record `next_seq` was expected, and whether a wrap marker announced it there.
    let q = if pending.is_some() { 0 } else { p };
    let announced = pending.is_some() && marker_at.is_some();
    let s = r.next_seq;
    let claims_s = q + 16 <= cap && get_u64(data, q + 8) == s;
    let clean = match &end {
        End::FullRing | End::StaleMarker => true,
        End::Record(Invalid::Empty) => !claims_s && !announced,
        End::Record(Invalid::Seq(found)) => *found < s && !announced,
        End::SecondWrap | End::Record(_) => false,
    };
    let mut reason = None;
    let mut bytes = 0u64;
    if !clean {
        let what = match &end {
            End::Record(why) => why.to_string(),
            // FullRing and StaleMarker are clean ends; only SecondWrap is left.
            _ => "a second wrap marker in one lap".to_string(),
        };
        reason = Some(match marker_at.filter(|_| announced) {
            Some(m) => format!(
                "record {s}, announced at data offset 0 by the wrap marker at {m}, is missing or bad: {what}"
            ),
            None => format!("record {s} at data offset {q}: {what}"),
        });
        bytes = torn_extent(data, q, cap) + if announced { 8 } else { 0 };
    }
    if ck.next_seq > s {
        // The checkpoint proves the log went further than the walk did.
        let lost = ck.next_seq - s;
        let note = format!(
            "the last checkpoint recorded the log up to sequence {}, so {lost} record(s) from sequence {s} on are lost",
            ck.next_seq - 1
        );
        reason = Some(match reason {
            Some(r) => format!("{r}; {note}"),
            None => format!("record {s} at data offset {q} is missing; {note}"),
        });
        let from = if announced { marker_at.unwrap_or(q) } else { q };
        let to = ck.tail as usize;
        let dist = if to >= from {
            to - from
        } else {
            cap - from + to
        };
        bytes = bytes.max(dist as u64);
    }
    r.cut = reason.map(|why| (bytes, why));
    r
}

/// How many bytes the torn or corrupt record at `q` covers, as far as its own fields can be
/// trusted: its length field if that is in bounds, else the sum of its field lengths if that
/// is, else one record header.
fn torn_extent(data: &[u8], q: usize, cap: usize) -> u64 {
    let room = cap - q;
    let len = get_u32(data, q) as usize;
    if len >= crate::format::RECORD_HEADER_LEN && crate::format::align(len) <= room {
        return crate::format::align(len) as u64;
    }
    if let Some(stored) = extent_from_lengths(data, q, cap) {
        return stored as u64;
    }
    room.min(crate::format::RECORD_HEADER_LEN) as u64
}

/// The extent a record's field lengths describe, ignoring its (possibly unwritten) length
/// field, if it fits in the region.
fn extent_from_lengths(data: &[u8], q: usize, cap: usize) -> Option<usize> {
    use crate::format::{align, get_u16, RECORD_HEADER_LEN};
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
    fn flipped_byte_cuts_there_and_reports_lost_records() {
        let mut data = vec![0u8; 1024];
        let mut p = 0;
        let mut starts = vec![];
        for seq in 1..=6 {
            starts.push(p);
            p = put(&mut data, p, seq, 0, b"payload");
        }
        data[starts[3] + 45] ^= 0x10; // inside record 4's payload
        let r = recover(&data, EPOCH, &ck(0, 1, p as u64, 7), 4);
        assert_eq!((r.first_seq, r.next_seq, r.tail), (1, 4, starts[3]));
        let (bytes, why) = r.cut.unwrap();
        assert!(why.contains("record 4"), "{why}");
        assert!(why.contains("CRC"), "{why}");
        assert!(why.contains("3 record(s)"), "{why}");
        assert_eq!(bytes as usize, p - starts[3]);
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
        assert_eq!(r.index[0], at_64);
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
