//! Recovery through the public API: torn and corrupt records are cut (and reported) at the
//! first bad record, everything before is kept, nothing cut ever comes back; and a file that
//! is not a ring log of this version and capacity, or has a corrupt header, is refused and
//! left byte-for-byte as it was.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{assert_holds_suffix, scratch, Owned, DATA};
use tern_log::{Fsync, LogError, RingLog};

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

fn reopen(path: &Path, cap: u64) -> (RingLog, tern_log::Recovery) {
    RingLog::open(path, cap, Fsync::Never).unwrap()
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
    assert_eq!(inspected, rec);
    assert_eq!((rec.records, rec.first_seq, rec.next_seq), (49, 1, 50));
    assert_eq!(rec.extended_bytes, full_len - (last as u64 + 20));
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        full_len,
        "extended back"
    );
    let why = rec.cut_reason.expect("the cut is reported");
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
        assert_eq!(
            (rec.first_seq, rec.next_seq),
            (1, 50),
            "zeroed from +{from}"
        );
        let why = rec.cut_reason.expect("the cut is reported");
        assert!(why.contains("record 50"), "+{from}: {why}");
        assert!(rec.cut_bytes >= 8, "+{from}: {}", rec.cut_bytes);
        assert_holds_suffix(&log, &appended[..49]);
        // The recovered log goes on with sequence 50.
        drop(log);
        let (mut log, rec) = reopen(&p, CAP);
        assert_eq!(rec.cut_reason, None, "the cut is reported once");
        assert_eq!(log.append(&appended[49].record()).unwrap(), 50);
        assert_holds_suffix(&log, &appended);
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
    assert!(rec.cut_reason.unwrap().contains("record 20"));
    assert_holds_suffix(&log, &appended[..19]);
}

#[test]
fn a_flipped_byte_in_the_middle_cuts_there_and_keeps_everything_before() {
    let dir = scratch();
    let (path, appended) = closed_log(dir.path(), "f", 200, CAP);
    let (log, _) = reopen(&path, CAP);
    let pos = positions(&log, &appended);
    let tail = DATA + log.layout().tail as usize;
    drop(log);
    let mut image = fs::read(&path).unwrap();
    image[pos[99] + 50] ^= 0x01; // inside record 100's payload
    fs::write(&path, &image).unwrap();

    // Inspecting tells what open will do, and changes nothing.
    let inspected = RingLog::inspect(&path, CAP).unwrap();
    assert_eq!(fs::read(&path).unwrap(), image);

    let (mut log, rec) = reopen(&path, CAP);
    assert_eq!(inspected, rec);
    assert_eq!((rec.records, rec.first_seq, rec.next_seq), (99, 1, 100));
    let why = rec.cut_reason.expect("reported");
    assert!(why.contains("record 100"), "{why}");
    assert!(why.contains("CRC"), "{why}");
    assert!(why.contains("101 record(s)"), "{why}");
    assert_eq!(rec.cut_bytes as usize, tail - pos[99]);
    assert_eq!(rec.checkpoint_next_seq, 201);
    assert_holds_suffix(&log, &appended[..99]);

    // Nothing that was cut comes back: a new record 100 of the same size as the old one puts
    // the old record 101 exactly where record 101 is expected; recovery zeroed it.
    assert_eq!(log.append(&appended[99].record()).unwrap(), 100);
    std::mem::forget(log); // crash: no final checkpoint
    let (log, rec) = reopen(&path, CAP);
    assert_eq!((rec.next_seq, rec.cut_reason), (101, None));
    assert_holds_suffix(&log, &appended[..100]);
}

#[test]
fn a_flipped_byte_in_a_wrapped_log_cuts_there() {
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
    assert_eq!((rec.first_seq, rec.next_seq), (first, first + mid as u64));
    assert!(rec.cut_reason.is_some());
    assert_holds_suffix(&log, &appended[..(first as usize - 1 + mid)]);
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
    assert_eq!((rec.records, rec.first_seq, rec.next_seq), (0, 11, 11));
    assert!(rec.cut_reason.is_some());
    assert_eq!(log.append(&Owned::new("s", b"x", 0).record()).unwrap(), 11);
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
