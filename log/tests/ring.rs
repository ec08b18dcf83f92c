//! The ring log through its public API: round trips, wrap-around and eviction, reopening,
//! limits, seeking by sequence and by time, and the fsync policies.

mod common;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use common::{assert_holds_suffix, held, scratch, Owned, DATA};
use tern_log::{Fsync, LogError, Record, RingLog};

#[test]
fn every_field_round_trips_through_append_read_and_reopen() {
    let dir = scratch();
    let path = dir.path().join("r");
    let big = vec![0xabu8; 5000];
    let recs = vec![
        Owned::new("a", b"", 0),
        Owned {
            timestamp: u64::MAX,
            priority: 255,
            subject: b"orders.eu.\xff\x00".to_vec(),
            reply: Some(b"_INBOX.1".to_vec()),
            headers: Some(b"NATS/1.0\r\nk: v\r\n\r\n".to_vec()),
            message_id: Some(b"id-42".to_vec()),
            payload: big.clone(),
        },
        Owned {
            reply: Some(vec![]),
            headers: Some(vec![]),
            message_id: Some(vec![]),
            ..Owned::new("empty.but.present", b"x", 7)
        },
        Owned {
            priority: 3,
            message_id: Some(b"only-id".to_vec()),
            ..Owned::new("s", b"payload", 8)
        },
    ];
    let (mut log, rec) = RingLog::open(&path, 1 << 16, Fsync::Never).unwrap();
    assert!(rec.created);
    assert_eq!((rec.records, rec.first_seq, rec.next_seq), (0, 1, 1));
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(log.append(&r.record()).unwrap(), i as u64 + 1);
    }
    assert_holds_suffix(&log, &recs);
    // `seq` on input is ignored.
    let s = log
        .append(&Record {
            seq: 999,
            ..recs[0].record()
        })
        .unwrap();
    assert_eq!(s, 5);
    let mut all = recs.clone();
    all.push(recs[0].clone());
    log.close().unwrap();

    let (log, rec) = RingLog::open(&path, 1 << 16, Fsync::Never).unwrap();
    assert!(!rec.created);
    assert_eq!((rec.records, rec.first_seq, rec.next_seq), (5, 1, 6));
    assert_eq!(rec.cut_reason, None);
    assert_holds_suffix(&log, &all);
}

/// An independent model of the ring's placement rule: a record goes at the tail if it fits
/// before the end of the region, else at offset 0; it evicts exactly the oldest records its
/// bytes overlap, and on a wrap every record at or after the old tail.
struct Model {
    cap: u64,
    tail: u64,
    live: VecDeque<(u64, u64, u64)>, // (seq, start, stored length)
    next: u64,
}

impl Model {
    fn append(&mut self, n: u64) {
        let wraps = self.tail + n > self.cap;
        let pos = if wraps { 0 } else { self.tail };
        let old_tail = self.tail;
        while let Some(&(_, start, len)) = self.live.front() {
            let overlaps = start < pos + n && pos < start + len;
            if overlaps || (wraps && start >= old_tail) {
                self.live.pop_front();
            } else {
                break;
            }
        }
        self.live.push_back((self.next, pos, n));
        self.next += 1;
        self.tail = pos + n;
    }

    fn first(&self) -> u64 {
        self.live.front().map_or(self.next, |r| r.0)
    }
}

#[test]
fn wrap_around_moves_first_seq_exactly_through_many_laps() {
    let dir = scratch();
    let cap = 4096;
    let (mut log, _) = RingLog::open(&dir.path().join("w"), cap, Fsync::Never).unwrap();
    let mut model = Model {
        cap,
        tail: 0,
        live: VecDeque::new(),
        next: 1,
    };
    let mut appended = vec![];
    let mut x = 12345u64;
    for i in 0..20_000u64 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        // Mostly small records, sometimes large ones, now and then one as large as the ring.
        let len = match (x >> 33) % 100 {
            0 => cap as usize - 40 - 3,
            1..=5 => ((x >> 20) % 2000) as usize,
            _ => ((x >> 20) % 100) as usize,
        };
        let o = Owned::new("abc", &vec![(i % 256) as u8; len], i);
        let n = o.record().stored_len();
        model.append(n);
        assert_eq!(log.append(&o.record()).unwrap(), i + 1);
        appended.push(o);
        assert_eq!(log.first_seq(), model.first(), "after append {}", i + 1);
        assert_eq!(log.len(), model.live.len() as u64);
        let layout = log.layout();
        assert_eq!(layout.head, model.live[0].1);
        assert_eq!(layout.tail, model.tail);
        assert!(layout.used_bytes <= cap);
        if i % 501 == 0 || i > 19_990 {
            assert_holds_suffix(&log, &appended);
        }
    }
    assert!(log.first_seq() > 19_000, "many laps");
}

#[test]
fn reads_after_a_wrap_start_anywhere() {
    let dir = scratch();
    let (mut log, _) = RingLog::open(&dir.path().join("w"), 2048, Fsync::Never).unwrap();
    let mut appended = vec![];
    for i in 0..500u64 {
        let o = Owned::new("x.y", &i.to_le_bytes().repeat(1 + (i % 7) as usize), i);
        log.append(&o.record()).unwrap();
        appended.push(o);
    }
    assert!(log.layout().wrap.is_some() || log.layout().head == 0);
    for from in log.first_seq()..=log.next_seq() {
        let got: Vec<_> = log.read_from(from).map(|r| r.seq).collect();
        let want: Vec<_> = (from..log.next_seq()).collect();
        assert_eq!(got, want);
        assert_eq!(log.read_from(from).count() as u64, log.next_seq() - from);
    }
    assert_holds_suffix(&log, &appended);
}

#[test]
fn read_from_clamps_to_the_held_range() {
    let dir = scratch();
    let (mut log, _) = RingLog::open(&dir.path().join("c"), 1024, Fsync::Never).unwrap();
    assert_eq!(log.read_from(0).count(), 0);
    assert_eq!(log.read_from(1).count(), 0);
    for i in 0..100u64 {
        log.append(&Record::new(b"s", &[i as u8; 20])).unwrap();
    }
    let (first, next) = (log.first_seq(), log.next_seq());
    assert!(first > 1, "some records were evicted");
    let seqs = |from| log.read_from(from).map(|r| r.seq).collect::<Vec<_>>();
    let all: Vec<_> = (first..next).collect();
    assert_eq!(seqs(0), all);
    assert_eq!(seqs(1), all);
    assert_eq!(seqs(first - 1), all);
    assert_eq!(seqs(first + 1), all[1..].to_vec());
    assert_eq!(seqs(next - 1), vec![next - 1]);
    assert_eq!(seqs(next), Vec::<u64>::new());
    assert_eq!(seqs(u64::MAX), Vec::<u64>::new());
}

#[test]
fn reopen_after_a_clean_close_keeps_everything_and_the_epoch() {
    let dir = scratch();
    let path = dir.path().join("e");
    let (mut log, _) = RingLog::open(&path, 4096, Fsync::Never).unwrap();
    let epoch = log.epoch();
    assert_ne!(epoch, 0);
    let mut appended = vec![];
    for i in 0..300u64 {
        let o = Owned::new("chat.room", &vec![i as u8; (i % 50) as usize], i);
        log.append(&o.record()).unwrap();
        appended.push(o);
    }
    let (first, next, layout) = (log.first_seq(), log.next_seq(), log.layout());
    let before = held(&log);
    drop(log); // Drop writes the checkpoint (no msync under Never)

    for _ in 0..3 {
        let (log, rec) = RingLog::open(&path, 4096, Fsync::Never).unwrap();
        assert_eq!(log.epoch(), epoch);
        assert_eq!((log.first_seq(), log.next_seq()), (first, next));
        assert_eq!(log.layout(), layout);
        assert_eq!(
            rec,
            tern_log::Recovery {
                records: next - first,
                first_seq: first,
                next_seq: next,
                cut_bytes: 0,
                cut_reason: None,
                created: false,
                extended_bytes: 0,
                checkpoint_next_seq: next,
                holes: vec![],
                lost_records: 0,
                torn_append: false,
                sequences_may_repeat: false,
                damaged_copy: None,
            }
        );
        assert_eq!(held(&log), before);
        log.close().unwrap();
    }
    // A reopened log goes on where it stopped.
    let (mut log, _) = RingLog::open(&path, 4096, Fsync::Never).unwrap();
    let o = Owned::new("after", b"reopen", 1);
    assert_eq!(log.append(&o.record()).unwrap(), next);
    appended.push(o);
    assert_holds_suffix(&log, &appended);
}

#[test]
fn every_new_file_gets_its_own_epoch() {
    let dir = scratch();
    let a = RingLog::open(&dir.path().join("a"), 1024, Fsync::Never)
        .unwrap()
        .0;
    let b = RingLog::open(&dir.path().join("b"), 1024, Fsync::Never)
        .unwrap()
        .0;
    assert_ne!(a.epoch(), 0);
    assert_ne!(a.epoch(), b.epoch());
}

#[test]
fn a_record_larger_than_the_ring_is_refused_and_nothing_is_written() {
    let dir = scratch();
    let path = dir.path().join("big");
    let (mut log, _) = RingLog::open(&path, 1024, Fsync::Never).unwrap();
    log.append(&Record::new(b"a", b"keep me")).unwrap();
    log.sync().unwrap();
    let image = std::fs::read(&path).unwrap();
    assert_eq!(log.max_record_len(), 1024);

    let payload = vec![1u8; 1024 - 40 - 1 + 1]; // stored length 1032 > 1024
    let err = log.append(&Record::new(b"a", &payload)).unwrap_err();
    assert!(
        matches!(
            err,
            LogError::RecordTooLarge {
                size: 1032,
                max: 1024
            }
        ),
        "{err}"
    );
    let long_subject = vec![b's'; 70_000];
    let err = log.append(&Record::new(&long_subject, b"")).unwrap_err();
    assert!(
        matches!(
            err,
            LogError::FieldTooLong {
                field: "subject",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), image, "nothing written");
    assert_eq!((log.first_seq(), log.next_seq()), (1, 2));

    // Exactly the capacity is fine, and evicts everything else.
    let payload = vec![1u8; 1024 - 40 - 1];
    assert_eq!(Record::new(b"a", &payload).stored_len(), 1024);
    assert_eq!(log.append(&Record::new(b"a", &payload)).unwrap(), 2);
    assert_eq!((log.first_seq(), log.len()), (2, 1));
    assert_eq!(log.read_from(0).next().unwrap().payload, &payload[..]);
    drop(log);
    let (log, rec) = RingLog::open(&path, 1024, Fsync::Never).unwrap();
    assert_eq!((rec.records, rec.first_seq, rec.cut_reason), (1, 2, None));
    assert_eq!(log.read_from(0).next().unwrap().payload, &payload[..]);
}

#[test]
fn invalid_capacities_are_refused_before_touching_the_disk() {
    let dir = scratch();
    for cap in [0u64, 64, 127, 1001] {
        let path = dir.path().join(format!("cap-{cap}"));
        let err = RingLog::open(&path, cap, Fsync::Never).unwrap_err();
        assert!(matches!(err, LogError::InvalidCapacity { .. }), "{err}");
        assert!(err.to_string().contains(&path.display().to_string()));
        assert!(!path.exists());
    }
}

#[test]
fn seq_at_time_finds_the_first_record_at_or_after_a_time() {
    let dir = scratch();
    let (mut log, _) = RingLog::open(&dir.path().join("t"), 1 << 20, Fsync::Never).unwrap();
    assert_eq!(log.seq_at_time(0), 1, "empty: next_seq");
    // Timestamps 100, 110, 110, 120, ... (pairs share a timestamp).
    for i in 0..1000u64 {
        log.append(&Record {
            timestamp: 100 + (i / 2) * 10,
            ..Record::new(b"t", b"")
        })
        .unwrap();
    }
    assert_eq!(log.seq_at_time(0), 1);
    assert_eq!(log.seq_at_time(100), 1);
    assert_eq!(log.seq_at_time(101), 3);
    assert_eq!(log.seq_at_time(110), 3);
    assert_eq!(log.seq_at_time(5_000), 2 * 490 + 1);
    assert_eq!(log.seq_at_time(100 + 499 * 10), 999);
    assert_eq!(
        log.seq_at_time(100 + 499 * 10 + 1),
        1001,
        "after all: next_seq"
    );
    assert_eq!(log.seq_at_time(u64::MAX), 1001);

    // The clock goes back: the answer is still the first record at or after the time.
    log.append(&Record {
        timestamp: 50,
        ..Record::new(b"t", b"")
    })
    .unwrap();
    log.append(&Record {
        timestamp: 10_000,
        ..Record::new(b"t", b"")
    })
    .unwrap();
    assert_eq!(log.seq_at_time(0), 1);
    assert_eq!(log.seq_at_time(50), 1);
    assert_eq!(log.seq_at_time(5_091), 1002);
    assert_eq!(log.seq_at_time(10_000), 1002);
    assert_eq!(log.seq_at_time(10_001), 1003);
}

#[test]
fn seq_at_time_after_eviction_only_sees_held_records() {
    let dir = scratch();
    let (mut log, _) = RingLog::open(&dir.path().join("t"), 4096, Fsync::Never).unwrap();
    for i in 0..1000u64 {
        log.append(&Record {
            timestamp: i * 10,
            ..Record::new(b"t", b"0123456789")
        })
        .unwrap();
    }
    let first = log.first_seq();
    assert!(first > 1);
    assert_eq!(
        log.seq_at_time(0),
        first,
        "older than anything held: the oldest"
    );
    assert_eq!(log.seq_at_time((first - 1) * 10), first);
    assert_eq!(log.seq_at_time(first * 10), first + 1);
    assert_eq!(log.seq_at_time(first * 10 + 1), first + 2);
}

#[test]
fn always_and_interval_policies_append_and_recover() {
    let dir = scratch();
    for (name, policy) in [
        ("always", Fsync::Always),
        ("interval", Fsync::Interval(Duration::from_millis(5))),
        ("never", Fsync::Never),
    ] {
        let path = dir.path().join(name);
        let (mut log, _) = RingLog::open(&path, 2048, policy).unwrap();
        assert_eq!(log.fsync(), policy);
        let mut appended = vec![];
        let start = Instant::now();
        for i in 0..200u64 {
            let o = Owned::new("p", &[i as u8; 30], i);
            log.append(&o.record()).unwrap();
            appended.push(o);
            log.tick(start + Duration::from_millis(i)).unwrap();
        }
        log.sync().unwrap();
        // Simulate a crash right after: no Drop, no final checkpoint.
        std::mem::forget(log);
        let (log, rec) = RingLog::open(&path, 2048, policy).unwrap();
        assert_eq!(rec.cut_reason, None);
        assert_eq!(log.next_seq(), 201);
        assert_holds_suffix(&log, &appended);
    }
}

#[test]
fn errors_name_the_file() {
    let dir = scratch();
    let path = dir.path().join("no-such-dir").join("log");
    let err = RingLog::open(&path, 1024, Fsync::Never).unwrap_err();
    assert!(matches!(err, LogError::Io { .. }), "{err}");
    assert!(err.to_string().contains("no-such-dir"), "{err}");
}

#[test]
fn layout_reports_where_the_log_is() {
    let dir = scratch();
    let (mut log, _) = RingLog::open(&dir.path().join("l"), 1024, Fsync::Never).unwrap();
    let l = log.layout();
    assert_eq!((l.head, l.tail, l.wrap, l.used_bytes), (0, 0, None, 0));
    log.append(&Record::new(b"s", b"0123456")).unwrap(); // 48 bytes
    let l = log.layout();
    assert_eq!((l.head, l.tail, l.wrap, l.used_bytes), (0, 48, None, 48));
    assert!(format!("{log:?}").contains("next_seq: 2"));
    let _ = DATA;
}

#[test]
fn a_log_can_move_to_its_shards_thread() {
    fn send<T: Send>() {}
    send::<RingLog>();
    send::<tern_log::Recovery>();
    send::<LogError>();
}
