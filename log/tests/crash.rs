//! The crash property: append random records, "crash" inside the last append by cutting the
//! file image at a random byte of what it wrote (the rest zeroes, garbage, or the bytes that
//! were there before), reopen, and check that the recovered log is exactly a run of
//! consecutive records of what was appended, ending at the last complete one: no record lost
//! before the cut point, none invented, no sequence skipped.
//!
//! (`src/ring/tests.rs` does the same at every byte, in the exact order the code writes; this
//! test works on images alone, in address order, which also covers the orders a power loss
//! can leave.)

mod common;

use std::fs;

use common::{assert_holds_suffix, scratch, Owned, DATA};
use proptest::prelude::*;
use proptest::sample::Index;
use tern_log::{Fsync, RingLog};

fn opt_field() -> impl Strategy<Value = Option<Vec<u8>>> {
    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..12))
}

fn owned() -> impl Strategy<Value = Owned> {
    (
        any::<u64>(),
        any::<u8>(),
        "[a-z.]{1,12}",
        opt_field(),
        opt_field(),
        opt_field(),
        prop_oneof![
            4 => proptest::collection::vec(any::<u8>(), 0..120),
            1 => proptest::collection::vec(any::<u8>(), 0..1200),
        ],
    )
        .prop_map(
            |(timestamp, priority, subject, reply, headers, message_id, payload)| Owned {
                timestamp,
                priority,
                subject: subject.into_bytes(),
                reply,
                headers,
                message_id,
                payload,
            },
        )
}

/// How the bytes an interrupted append did not write look in the crash image.
#[derive(Clone, Copy, Debug)]
enum Rest {
    /// What was there before the append (a process crash).
    Old,
    /// Zeroes.
    Zero,
    /// Arbitrary bytes.
    Garbage(u64),
}

fn rest() -> impl Strategy<Value = Rest> {
    prop_oneof![
        Just(Rest::Old),
        Just(Rest::Zero),
        any::<u64>().prop_map(Rest::Garbage)
    ]
}

fn fill(image: &mut [u8], before: &[u8], from: usize, to: usize, rest: Rest) {
    match rest {
        Rest::Old => image[from..to].copy_from_slice(&before[from..to]),
        Rest::Zero => image[from..to].fill(0),
        Rest::Garbage(mut x) => {
            for b in &mut image[from..to] {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                *b = (x >> 56) as u8;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn a_crash_inside_the_last_append_recovers_a_consecutive_suffix(
        cap in prop::sample::select(vec![512u64, 1024, 4096]),
        mut recs in proptest::collection::vec(owned(), 1..60),
        cut in any::<Index>(),
        rest in rest(),
        in_checkpoint in any::<bool>(),
    ) {
        // Keep every record small enough for the ring.
        for r in &mut recs {
            let over = r.record().stored_len().saturating_sub(cap) as usize;
            r.payload.truncate(r.payload.len().saturating_sub(over));
        }
        let dir = scratch();
        let path = dir.path().join("log");
        let (mut log, _) = RingLog::open(&path, cap, Fsync::Never).unwrap();
        let (last, earlier) = recs.split_last().unwrap();
        for r in earlier {
            log.append(&r.record()).unwrap();
        }
        let before = fs::read(&path).unwrap(); // the page cache's view of the mapped file
        let first_before = log.first_seq();
        let seq = log.append(&last.record()).unwrap();
        let after = fs::read(&path).unwrap();
        let first_after = log.first_seq();
        let stored = last.record().stored_len() as usize;
        let pos = DATA + log.layout().tail as usize - stored;
        drop(log);

        // The checkpoint slot the append rewrote, if it evicted anything.
        let header_diff: Vec<usize> = (64..192).filter(|&i| before[i] != after[i]).collect();
        let mut image;
        let (want_first, want_next, must_report);
        if in_checkpoint && !header_diff.is_empty() {
            // Crash while writing the checkpoint: no byte of the record is written yet.
            let (lo, hi) = (header_diff[0], header_diff[header_diff.len() - 1] + 1);
            let at = lo + cut.index(hi - lo + 1);
            image = before.clone();
            image[lo..at].copy_from_slice(&after[lo..at]);
            want_first = if at == hi { first_after } else { first_before };
            want_next = seq;
            must_report = false;
        } else {
            // Crash while writing the record: bytes from `at` to its end are not written.
            let at = pos + cut.index(stored + 1);
            image = after.clone();
            fill(&mut image, &before, at, pos + stored, rest);
            // The length field: the CRC covers the record up to there, not its padding.
            let exact = u32::from_le_bytes(after[pos..pos + 4].try_into().unwrap()) as usize;
            let intact = image[pos..pos + exact] == after[pos..pos + exact];
            want_first = first_after;
            want_next = if intact { seq + 1 } else { seq };
            // Once its length and CRC are complete, a damaged record is reported.
            must_report = !intact && image[pos..pos + 8] == after[pos..pos + 8];
        }

        let crashed = dir.path().join("crashed");
        fs::write(&crashed, &image).unwrap();
        let (mut log, rec) = RingLog::open(&crashed, cap, Fsync::Never).unwrap();
        prop_assert_eq!((log.first_seq(), log.next_seq()), (want_first, want_next));
        prop_assert_eq!(rec.records, want_next - want_first);
        if must_report {
            prop_assert!(rec.cut_reason.is_some(), "torn record not reported");
            prop_assert!(rec.cut_bytes > 0);
        }
        if want_next == seq + 1 {
            prop_assert_eq!(rec.cut_reason, None);
        }
        assert_holds_suffix(&log, &recs);

        // The log goes on from there, and a later reopen neither loses nor revives anything.
        let mut appended = recs[..want_next as usize - 1].to_vec();
        for r in recs.iter().take(3) {
            prop_assert_eq!(log.append(&r.record()).unwrap(), appended.len() as u64 + 1);
            appended.push(r.clone());
        }
        std::mem::forget(log); // another crash, between appends this time
        let (log, rec) = RingLog::open(&crashed, cap, Fsync::Never).unwrap();
        prop_assert_eq!(rec.cut_reason, None);
        prop_assert_eq!(log.next_seq(), appended.len() as u64 + 1);
        assert_holds_suffix(&log, &appended);
    }
}
