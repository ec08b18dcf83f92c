//! Recovery through the public API: damage costs only the records it touched (the walk
//! resynchronises on the next intact record and the log keeps a hole), a torn last append is
//! cut, everything is reported, a damaged file is copied aside byte for byte before it is
//! repaired, and nothing cut ever comes back; and a file that is not a ring log of this
//! version and capacity, or has a corrupt header, is refused and left byte-for-byte as it
//! was.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{assert_holds_suffix, exact_len, held, scratch, Owned, DATA};
use proptest::prelude::*;
use tern_log::{Fsync, LogError, Recovery, RingLog};

const CAP: u64 = 1 << 16;

/// A closed log of `n` records (payloads of varying length) at `dir/name`.
fn closed_log(dir: &Path, name: &str, n: u64, cap: u64) -> (PathBuf, Vec<Owned>) {
    let path = dir.join(name);
    let (mut log, _) = RingLog::open(&path, cap, Fsync::Never).unwrap();
    let mut appended = vec![];
    for i in 0..n {
        let o = Owned::new(
            "orders.eu",
            &vec![(i % 251) as u8 + 1; 20 + (i % 13) as usize],
            i,
        );
        log.append(&o.record()).unwrap();
        appended.push(o);
    }
    log.close().unwrap();
    (path, appended)
}

/// File offsets of the held records, oldest first, computed from the layout and the
/// records' stored lengths.
fn positions(log: &RingLog, appended: &[Owned]) -> Vec<usize> {
    let layout = log.layout();
    let mut pos = layout.head;
    let mut out = vec![];
    for seq in log.first_seq()..log.next_seq() {
        out.push(DATA + pos as usize);
        pos += appended[seq as usize - 1].record().stored_len();
        if Some(pos) == layout.wrap || pos == log.capacity() {
            pos = 0;
        }
    }
    out
}

fn reopen(path: &Path, cap: u64) -> (RingLog, Recovery) {
    RingLog::open(path, cap, Fsync::Never).unwrap()
}

/// What `inspect` says `open` will find: the same, except that inspecting copies nothing.
fn as_inspected(rec: &Recovery) -> Recovery {
    Recovery {
        damaged_copy: None,
        ..rec.clone()
    }
}

/// Checks that open copied the damaged file aside with exactly the bytes it had, and returns
/// the copy's path.
fn assert_copied(rec: &Recovery, damaged_image: &[u8]) -> PathBuf {
    let copy = rec
        .damaged_copy
        .clone()
        .unwrap_or_else(|| panic!("no copy was made: {rec:?}"));
    let name = copy.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.contains(".damaged-"), "{name}");
    assert!(
        fs::read(&copy).unwrap() == damaged_image,
        "the copy differs from the damaged file"
    );
    copy
}

/// The held records are exactly `appended` (record `s` is `appended[s - 1]`) from the oldest
/// held on, minus the sequences in `missing`.
fn assert_holds_all_but(log: &RingLog, appended: &[Owned], missing: &[u64]) {
    let got = held(log);
    let want: Vec<u64> = (log.first_seq()..log.next_seq())
        .filter(|s| !missing.contains(s) && (*s as usize) <= appended.len())
        .collect();
    let got_seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
    assert_eq!(got_seqs, want, "sequences held");
    for (seq, r) in &got {
        assert!(r == &appended[*seq as usize - 1], "record {seq} differs");
    }
    assert_eq!(log.len(), got.len() as u64, "len() and read_from disagree");
}

#[test]
fn a_file_truncated_inside_its_last_record_loses_only_that_record() {
    let dir = scratch();
    let (path, appended) = closed_log(dir.path(), "t", 50, CAP);
    let (log, _) = reopen(&path, CAP);
    let last = *positions(&log, &appended).last().unwrap();
    drop(log);
    let full_len = fs::metadata(&path).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(last as u64 + 20)
        .unwrap();

    let short = fs::read(&path).unwrap();
    let inspected = RingLog::inspect(&path, CAP).unwrap();
    assert_eq!(
        fs::read(&path).unwrap(),
        short,
        "inspect does not extend the file"
    );
    let (log, rec) = reopen(&path, CAP);
    assert_eq!(inspected, as_inspected(&rec));
    // The clean close's checkpoint proves record 50 existed: its sequence is not reused.
    assert_eq!((rec.records, rec.first_seq, rec.next_seq), (49, 1, 51));
    assert_eq!(rec.extended_bytes, full_len - (last as u64 + 20));
    assert!(rec.sequences_may_repeat, "the file was short");
    assert_copied(&rec, &short);
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        full_len,
        "extended back"
    );
    let why = rec.cut_reason.clone().expect("the cut is reported");
    assert!(why.contains("record 50"), "{why}");
    assert!(why.contains("short"), "{why}");
    assert!(rec.cut_bytes > 0);
    assert_holds_suffix(&log, &appended[..49]);
}

#[test]
fn zeroes_from_inside_the_last_record_cut_it_and_keep_the_rest() {
    let dir = scratch();
    let (path, appended) = closed_log(dir.path(), "z", 50, CAP);
    let (log, _) = reopen(&path, CAP);
    let last = *positions(&log, &appended).last().unwrap();
    drop(log);
    let clean = fs::read(&path).unwrap();
    // Its length field (the padding after that is zero anyway).
    let exact = u32::from_le_bytes(clean[last..last + 4].try_into().unwrap()) as usize;
    for from in [1, 4, 8, 12, 16, 24, 40, 41, exact - 1] {
        let mut image = clean.clone();
        image[last + from..].fill(0);
        let p = dir.path().join(format!("z{from}"));
        fs::write(&p, &image).unwrap();
        let (log, rec) = reopen(&p, CAP);
        // The clean close's checkpoint proves record 50 existed: it is lost, not torn, and
        // its sequence is not handed out again.
        assert_eq!(
            (rec.first_seq, rec.next_seq, rec.lost_records),
            (1, 51, 1),
            "zeroed from +{from}"
        );
        let why = rec.cut_reason.clone().expect("the cut is reported");
        assert!(why.contains("record 50"), "+{from}: {why}");
        assert!(rec.cut_bytes >= 8, "+{from}: {}", rec.cut_bytes);
        assert!(!rec.torn_append);
        let copy = assert_copied(&rec, &image);
        fs::remove_file(copy).unwrap();
        assert_holds_suffix(&log, &appended[..49]);
        // The recovered log goes on with sequence 51.
        drop(log);
        let (mut log, rec) = reopen(&p, CAP);
        assert_eq!(rec.cut_reason, None, "the cut is reported once");
        assert_eq!(rec.damaged_copy, None, "and copied once");
        assert_eq!(log.append(&appended[49].record()).unwrap(), 51);
        let mut all = appended.clone();
        all.push(appended[49].clone());
        assert_holds_all_but(&log, &all, &[50]);
    }
}

#[test]
fn a_torn_last_record_is_reported_even_without_a_clean_close() {
    let dir = scratch();
    let path = dir.path().join("nc");
    let (mut log, _) = RingLog::open(&path, CAP, Fsync::Never).unwrap();
    let mut appended = vec![];
    for i in 0..20u64 {
        let o = Owned::new("s", &[i as u8; 33], i);
        log.append(&o.record()).unwrap();
        appended.push(o);
    }
    let last = *positions(&log, &appended).last().unwrap();
    std::mem::forget(log); // a crash: no final checkpoint
    let mut image = fs::read(&path).unwrap();
    image[last + 30..last + 40].fill(0xee); // garbage inside the fixed fields
    fs::write(&path, &image).unwrap();
    let (log, rec) = reopen(&path, CAP);
    assert_eq!(rec.next_seq, 20);
    assert!(rec.cut_reason.clone().unwrap().contains("record 20"));
    // Without a checkpoint proving record 20, this is what a crash inside its append leaves:
    // nobody saw it, its sequence is handed out again, and the file is not copied for it.
    assert!(rec.torn_append);
    assert!(!rec.sequences_may_repeat);
    assert_eq!(rec.damaged_copy, None);
    assert_holds_suffix(&log, &appended[..19]);
}

#[test]
fn a_flipped_byte_in_the_middle_loses_only_that_record() {
    let dir = scratch();
    let (path, appended) = closed_log(dir.path(), "f", 200, CAP);
    let (log, _) = reopen(&path, CAP);
    let pos = positions(&log, &appended);
    drop(log);
    let mut image = fs::read(&path).unwrap();
    image[pos[99] + 50] ^= 0x01; // inside record 100's payload
    fs::write(&path, &image).unwrap();

    // Inspecting tells what open will do, and changes nothing.
    let inspected = RingLog::inspect(&path, CAP).unwrap();
    assert_eq!(fs::read(&path).unwrap(), image);

    let (log, rec) = reopen(&path, CAP);
    assert_eq!(inspected, as_inspected(&rec));
    assert_eq!((rec.records, rec.first_seq, rec.next_seq), (199, 1, 201));
    assert_eq!(rec.lost_records, 1);
    let why = rec.cut_reason.clone().expect("reported");
    assert!(why.contains("record 100"), "{why}");
    assert!(why.contains("CRC"), "{why}");
    assert!(why.contains("kept the records from 101 on"), "{why}");
    assert_eq!(rec.cut_bytes as usize, pos[100] - pos[99]);
    let [hole] = &rec.holes[..] else {
        panic!("one hole: {:?}", rec.holes)
    };
    assert_eq!((hole.first_missing, hole.next_kept), (100, 101));
    assert!(hole.damaged);
    assert!(!rec.sequences_may_repeat);
    assert_copied(&rec, &image);
    assert_holds_all_but(&log, &appended, &[100]);
    // Reads and seeks step over the hole.
    let from_hole: Vec<u64> = log.read_from(100).take(2).map(|r| r.seq).collect();
    assert_eq!(from_hole, vec![101, 102]);
    let ts_100 = appended[99].timestamp;
    assert_eq!(log.seq_at_time(ts_100), 101);

    // Reopening finds the hole again (zeroed now: no new damage, no new copy).
    drop(log);
    let (mut log, rec) = reopen(&path, CAP);
    assert_eq!(rec.cut_reason, None);
    assert_eq!(rec.damaged_copy, None);
    assert_eq!((rec.records, rec.lost_records), (199, 1));
    assert!(!rec.holes[0].damaged);
    assert_holds_all_but(&log, &appended, &[100]);

    // The log goes on after its newest record; nothing cut comes back after a crash.
    let extra = Owned::new("orders.eu", b"after the repair", 999);
    assert_eq!(log.append(&extra.record()).unwrap(), 201);
    std::mem::forget(log); // crash: no final checkpoint
    let (log, rec) = reopen(&path, CAP);
    assert_eq!((rec.next_seq, rec.cut_reason), (202, None));
    let mut all = appended.clone();
    all.push(extra);
    assert_holds_all_but(&log, &all, &[100]);
}

#[test]
fn a_file_cut_in_half_keeps_the_first_half() {
    let dir = scratch();
    let (path, appended) = closed_log(dir.path(), "half", 700, CAP);
    let (log, _) = reopen(&path, CAP);
    assert_eq!(
        (log.first_seq(), log.layout().wrap),
        (1, None),
        "not wrapped"
    );
    let pos = positions(&log, &appended);
    drop(log);
    let full = fs::read(&path).unwrap();
    let half = full.len() / 2;
    fs::write(&path, &full[..half]).unwrap();
    // Every record wholly in the first half.
    let whole = pos
        .iter()
        .enumerate()
        .filter(|(i, &p)| p + appended[*i].record().stored_len() as usize <= half)
        .count() as u64;
    assert!(whole > 300, "{whole}");

    let (log, rec) = reopen(&path, CAP);
    assert_eq!((rec.first_seq, rec.records), (1, whole));
    assert_eq!(
        rec.next_seq, 701,
        "the close's checkpoint proves 700 records"
    );
    assert_eq!(rec.lost_records, 700 - whole);
    assert!(rec.sequences_may_repeat);
    assert!(rec.extended_bytes > 0);
    assert_copied(&rec, &full[..half]);
    assert_holds_suffix(&log, &appended[..whole as usize]);
}

#[test]
fn a_wrapped_file_cut_in_half_keeps_every_record_in_the_first_half() {
    let dir = scratch();
    let cap = 1 << 14;
    for n in [700u64, 731, 777] {
        let (path, appended) = closed_log(dir.path(), &format!("wrapped-half-{n}"), n, cap);
        let (log, _) = reopen(&path, cap);
        assert!(log.layout().wrap.is_some(), "wrapped");
        let pos = positions(&log, &appended);
        let first = log.first_seq();
        drop(log);
        let full = fs::read(&path).unwrap();
        let half = DATA + cap as usize / 2;
        fs::write(&path, &full[..half]).unwrap();
        let whole: Vec<u64> = pos
            .iter()
            .enumerate()
            .filter(|(i, &p)| p + exact_len(&appended[first as usize - 1 + i]) <= half)
            .map(|(i, _)| first + i as u64)
            .collect();
        assert!(!whole.is_empty());

        let (log, rec) = reopen(&path, cap);
        let got: Vec<u64> = held(&log).iter().map(|(s, _)| *s).collect();
        assert_eq!(got, whole, "n = {n}: {rec:?}");
        assert_eq!(rec.next_seq, n + 1);
        assert!(!rec.holes.is_empty() || got[0] == first);
        assert_copied(&rec, &full[..half]);
        for (seq, r) in held(&log) {
            assert_eq!(r, appended[seq as usize - 1], "record {seq}");
        }
    }
}

#[test]
fn damage_to_the_oldest_record_keeps_the_rest() {
    let dir = scratch();
    let (path, appended) = closed_log(dir.path(), "head", 100, CAP);
    let mut image = fs::read(&path).unwrap();
    image[DATA + 3] ^= 0x40; // record 1's length field
    fs::write(&path, &image).unwrap();
    let (log, rec) = reopen(&path, CAP);
    assert_eq!((rec.first_seq, rec.next_seq, rec.records), (2, 101, 99));
    assert_eq!(rec.holes.len(), 1);
    assert_copied(&rec, &image);
    assert_holds_suffix(&log, &appended);
}

#[test]
fn a_flipped_byte_in_a_wrapped_log_loses_only_that_record() {
    let dir = scratch();
    let cap = 4096;
    let (path, appended) = closed_log(dir.path(), "fw", 1000, cap);
    let (log, _) = reopen(&path, cap);
    assert!(log.first_seq() > 900, "many laps");
    let first = log.first_seq();
    let pos = positions(&log, &appended);
    let mid = pos.len() / 2;
    drop(log);
    let mut image = fs::read(&path).unwrap();
    image[pos[mid] + 8] ^= 0x80; // record's sequence field
    fs::write(&path, &image).unwrap();
    let (log, rec) = reopen(&path, cap);
    assert_eq!((rec.first_seq, rec.next_seq), (first, 1001));
    assert!(rec.cut_reason.is_some());
    assert_copied(&rec, &image);
    assert_holds_all_but(&log, &appended, &[first + mid as u64]);
}

#[test]
fn damage_at_the_wrap_keeps_the_records_after_it() {
    let dir = scratch();
    let cap = 4096;
    // A ring whose older part ends before the end of the region (a wrap marker there).
    let mut n = 1000;
    let (path, appended, w) = loop {
        let (path, appended) = closed_log(dir.path(), &format!("ww-{n}"), n, cap);
        let (log, _) = reopen(&path, cap);
        let wrap = log.layout().wrap;
        drop(log);
        match wrap {
            Some(w) if (w as usize) < cap as usize => break (path, appended, w as usize),
            _ => n += 1,
        }
    };
    let (log, _) = reopen(&path, cap);
    let pos = positions(&log, &appended);
    let first = log.first_seq();
    drop(log);
    // The last record before the wrap, and the first after it (at offset 0).
    let before = pos
        .iter()
        .position(|&p| p == DATA)
        .expect("a record at offset 0")
        - 1;
    assert_eq!(
        pos[before] + appended[first as usize - 1 + before].record().stored_len() as usize,
        DATA + w
    );
    let clean = fs::read(&path).unwrap();

    // 1. Only the wrap marker is damaged: nothing is lost, and the marker is rewritten.
    let mut image = clean.clone();
    image[DATA + w + 5] ^= 0x01;
    let p = dir.path().join("marker");
    fs::write(&p, &image).unwrap();
    let (log, rec) = reopen(&p, cap);
    assert_eq!(rec.lost_records, 0, "{rec:?}");
    assert_eq!(log.layout().wrap, Some(w as u64));
    assert_holds_suffix(&log, &appended);
    drop(log);
    assert_eq!(
        fs::read(&p).unwrap()[DATA + w..DATA + w + 8],
        clean[DATA + w..DATA + w + 8]
    );

    // 2. The last record before the wrap and the first after it are damaged.
    let mut image = clean.clone();
    image[pos[before] + 45] ^= 0x01;
    image[pos[before + 1] + 45] ^= 0x01;
    let p = dir.path().join("both");
    fs::write(&p, &image).unwrap();
    let (mut log, rec) = reopen(&p, cap);
    let lost = [first + before as u64, first + before as u64 + 1];
    assert_eq!(rec.lost_records, 2, "{rec:?}");
    assert_copied(&rec, &image);
    assert_holds_all_but(&log, &appended, &lost);
    // The ring goes on through the hole and past it: appending evicts across it.
    let mut all = appended.clone();
    for i in 0..200u64 {
        let o = Owned::new("later", &[i as u8; 30], 5000 + i);
        log.append(&o.record()).unwrap();
        all.push(o);
        let held_now = held(&log);
        for (seq, r) in &held_now {
            assert_eq!(r, &all[*seq as usize - 1], "record {seq} after {i} appends");
        }
        assert_eq!(log.len(), held_now.len() as u64);
    }
    assert!(log.first_seq() > lost[1], "the hole was evicted");
    assert_holds_suffix(&log, &all);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever bytes of the data region are damaged, every record whose bytes are intact is
    /// kept, in order, and nothing else is.
    #[test]
    fn every_intact_record_survives_damage(
        n in 20u64..300,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..5),
    ) {
        let dir = scratch();
        let cap = 4096u64;
        let (path, appended) = closed_log(dir.path(), "p", n, cap);
        let (log, _) = reopen(&path, cap);
        let pos = positions(&log, &appended);
        let first = log.first_seq();
        let region = DATA..DATA + cap as usize;
        drop(log);
        let mut image = fs::read(&path).unwrap();
        let mut hit = Vec::new();
        for (at, x) in &flips {
            let at = region.start + at.index(region.len());
            image[at] ^= x;
            hit.push(at);
        }
        fs::write(&path, &image).unwrap();
        let touched: Vec<u64> = pos
            .iter()
            .enumerate()
            .filter(|(i, &p)| {
                // The CRC covers the record, not its padding.
                let len = exact_len(&appended[first as usize - 1 + i]);
                hit.iter().any(|&h| h >= p && h < p + len)
            })
            .map(|(i, _)| first + i as u64)
            .collect();
        let (log, rec) = reopen(&path, cap);
        prop_assert_eq!(rec.next_seq, n + 1);
        let got = held(&log);
        let want: Vec<u64> = (first..=n).filter(|s| !touched.contains(s)).collect();
        let got_seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
        prop_assert_eq!(got_seqs, want);
        for (seq, r) in &got {
            prop_assert!(r == &appended[*seq as usize - 1], "record {} differs", seq);
        }
        if touched.is_empty() {
            prop_assert_eq!(rec.lost_records, 0);
        } else {
            prop_assert!(rec.damaged_copy.is_some());
        }
    }
}

#[test]
fn when_everything_was_evicted_the_next_sequence_is_kept() {
    let dir = scratch();
    let cap = 1024;
    let path = dir.path().join("ev");
    let (mut log, _) = RingLog::open(&path, cap, Fsync::Never).unwrap();
    for i in 0..10u64 {
        log.append(&Owned::new("s", &[1; 10], i).record()).unwrap();
    }
    let huge = Owned::new("h", &vec![7; cap as usize - 41], 0);
    assert_eq!(log.append(&huge.record()).unwrap(), 11);
    assert_eq!((log.first_seq(), log.len()), (11, 1));
    log.close().unwrap();
    // Damage the only record.
    let mut image = fs::read(&path).unwrap();
    image[DATA + 100] ^= 0xff;
    fs::write(&path, &image).unwrap();
    let (mut log, rec) = reopen(&path, cap);
    // The checkpoint proves record 11 existed: it is lost, and 11 is not handed out again.
    assert_eq!((rec.records, rec.first_seq, rec.next_seq), (0, 12, 12));
    assert_eq!(rec.lost_records, 1);
    assert!(rec.cut_reason.is_some());
    assert_copied(&rec, &image);
    assert_eq!(log.append(&Owned::new("s", b"x", 0).record()).unwrap(), 12);
}

#[test]
fn a_torn_newest_checkpoint_falls_back_to_the_other_slot() {
    let dir = scratch();
    let (path, appended) = closed_log(dir.path(), "ck", 30, CAP);
    let mut image = fs::read(&path).unwrap();
    // The newest checkpoint is generation 2 (close), in slot 0 at byte 64.
    image[64 + 20] ^= 0x01;
    fs::write(&path, &image).unwrap();
    let (log, rec) = reopen(&path, CAP);
    assert_eq!((rec.first_seq, rec.next_seq, rec.cut_reason), (1, 31, None));
    assert_holds_suffix(&log, &appended);
}

/// Opens a damaged file expecting an error, and checks the file was not touched.
fn refused(path: &Path, cap: u64) -> LogError {
    let before = fs::read(path).unwrap();
    let inspected = RingLog::inspect(path, cap).unwrap_err();
    let err = RingLog::open(path, cap, Fsync::Always).unwrap_err();
    assert_eq!(
        inspected.to_string(),
        err.to_string(),
        "inspect refuses it the same way"
    );
    assert_eq!(
        fs::read(path).unwrap(),
        before,
        "{err}: the file was modified"
    );
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "the error names the file: {err}"
    );
    err
}

#[test]
fn header_problems_are_errors_and_leave_the_file_untouched() {
    let dir = scratch();
    let (path, _) = closed_log(dir.path(), "h", 10, CAP);
    let good = fs::read(&path).unwrap();
    let damaged = |name: &str, f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = good.clone();
        f(&mut b);
        let p = dir.path().join(name);
        fs::write(&p, &b).unwrap();
        p
    };

    let p = damaged("magic", &|b| b[1] = b'X');
    assert!(matches!(refused(&p, CAP), LogError::BadMagic { .. }));

    let p = damaged("empty", &|b| b.clear());
    assert!(matches!(refused(&p, CAP), LogError::BadMagic { .. }));

    let p = damaged("text", &|b| *b = b"hello, world\n".to_vec());
    assert!(matches!(refused(&p, CAP), LogError::BadMagic { .. }));

    let p = damaged("version", &|b| b[8] = 2);
    assert!(matches!(
        refused(&p, CAP),
        LogError::UnsupportedVersion {
            found: 2,
            expected: 1,
            ..
        }
    ));

    let err = refused(&path, CAP * 2);
    assert!(matches!(
        err,
        LogError::WrongCapacity {
            found: CAP,
            expected,
            ..
        } if expected == CAP * 2
    ));

    let p = damaged("epoch", &|b| b[25] ^= 0x04);
    let err = refused(&p, CAP);
    assert!(
        matches!(&err, LogError::CorruptHeader { reason, .. } if reason.contains("CRC")),
        "{err}"
    );

    let p = damaged("slots", &|b| {
        b[64 + 3] ^= 1;
        b[128 + 3] ^= 1;
    });
    let err = refused(&p, CAP);
    assert!(
        matches!(&err, LogError::CorruptHeader { reason, .. } if reason.contains("checkpoint")),
        "{err}"
    );

    let p = damaged("short", &|b| b.truncate(100));
    assert!(matches!(refused(&p, CAP), LogError::CorruptHeader { .. }));

    let p = damaged("long", &|b| b.extend_from_slice(&[0; 8]));
    assert!(matches!(refused(&p, CAP), LogError::WrongFileSize { .. }));

    // And the good file still opens.
    let (log, rec) = reopen(&path, CAP);
    assert_eq!((rec.next_seq, rec.cut_reason), (11, None));
    drop(log);
}
