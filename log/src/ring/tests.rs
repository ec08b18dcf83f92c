//! Unit tests of the ring with access to its internals: a simulated process crash at every
//! byte an append writes (through the `put` hook, so in the order the code really writes),
//! and the in-memory index and timestamp bookkeeping checked against brute force.

use super::*;

/// A record with owned fields, to compare against what the log gives back.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Owned {
    timestamp: u64,
    priority: u8,
    subject: Vec<u8>,
    reply: Option<Vec<u8>>,
    headers: Option<Vec<u8>>,
    message_id: Option<Vec<u8>>,
    payload: Vec<u8>,
}

impl Owned {
    fn record(&self) -> Record<'_> {
        Record {
            seq: 0,
            timestamp: self.timestamp,
            priority: self.priority,
            subject: &self.subject,
            reply: self.reply.as_deref(),
            headers: self.headers.as_deref(),
            message_id: self.message_id.as_deref(),
            payload: &self.payload,
        }
    }

    fn matches(&self, r: &Record<'_>) -> bool {
        *r == Record {
            seq: r.seq,
            ..self.record()
        }
    }
}

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn gen(rng: &mut Rng, i: u64, max_payload: u64) -> Owned {
    let opt =
        |rng: &mut Rng, tag: u8| (rng.below(2) == 0).then(|| vec![tag; rng.below(12) as usize]);
    Owned {
        timestamp: 1_000 + i * 10 + rng.below(5),
        priority: rng.below(8) as u8,
        subject: format!("room.{}", rng.below(1000)).into_bytes(),
        reply: opt(rng, b'r'),
        headers: opt(rng, b'h'),
        message_id: opt(rng, b'm'),
        payload: vec![(i % 251) as u8; rng.below(max_payload + 1) as usize],
    }
}

/// A directory for scratch files: tmpfs when there is one, so the many opens stay fast.
fn scratch() -> tempfile::TempDir {
    if Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").expect("tempdir in /dev/shm")
    } else {
        tempfile::tempdir().expect("tempdir")
    }
}

/// Every held record equals the one appended with its sequence (`appended[seq - 1]`).
fn assert_holds(log: &RingLog, appended: &[Owned]) {
    let got: Vec<_> = log.read_from(0).collect();
    assert_eq!(got.len() as u64, log.len());
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.seq, log.first_seq() + i as u64);
        assert!(
            appended[r.seq as usize - 1].matches(r),
            "record {} differs",
            r.seq
        );
    }
}

fn open_image(dir: &Path, name: &str, image: &[u8], cap: u64) -> (RingLog, Recovery) {
    let path = dir.join(name);
    std::fs::write(&path, image).unwrap();
    RingLog::open(&path, cap, Fsync::Never).unwrap()
}

/// Simulates a process crash at every byte of the next append of `next` to `log`, and checks
/// what a reopen recovers each time.
fn crash_everywhere(dir: &Path, log: &RingLog, appended: &[Owned], next: &Owned) {
    let cap = log.capacity();
    let before = log.file_image();
    let (first_before, next_before) = (log.first_seq(), log.next_seq());

    // A complete run, to learn how many bytes the append writes and where it leaves the log.
    let (mut probe, _) = open_image(dir, "probe", &before, cap);
    assert_eq!(
        (probe.first_seq(), probe.next_seq()),
        (first_before, next_before)
    );
    let ckpt_gen = probe.ckpt.generation;
    probe.crash_after(usize::MAX);
    probe.append(&next.record()).unwrap();
    let total = usize::MAX - probe.budget_left().unwrap();
    let first_after = probe.first_seq();
    let checkpoint_bytes = if probe.ckpt.generation > ckpt_gen {
        crate::format::SLOT_LEN
    } else {
        0
    };
    drop(probe);

    let mut all = appended.to_vec();
    all.push(next.clone());
    for k in 0..=total {
        let (mut victim, _) = open_image(dir, "victim", &before, cap);
        victim.crash_after(k);
        victim.append(&next.record()).unwrap();
        let crashed = victim.file_image();
        drop(victim);

        let (log2, rec) = open_image(dir, "crashed", &crashed, cap);
        let complete = log2.next_seq() == next_before + 1;
        assert!(
            log2.next_seq() == next_before || complete,
            "byte {k}/{total}: next_seq {} (was {next_before})",
            log2.next_seq()
        );
        assert!(
            (first_before..=first_after).contains(&log2.first_seq()),
            "byte {k}/{total}: first_seq {} not in {first_before}..={first_after}",
            log2.first_seq()
        );
        if complete {
            // Only the commit word may be short, when its missing bytes happen to equal what
            // was there before.
            assert!(
                k + 8 >= total,
                "byte {k}/{total}: validated before its commit word"
            );
            assert_eq!(log2.first_seq(), first_after);
            assert_eq!(rec.cut_reason, None);
        }
        if k <= checkpoint_bytes {
            assert_eq!(
                rec.cut_reason, None,
                "byte {k}: nothing of the record written yet"
            );
            assert_eq!(
                log2.first_seq(),
                if k == checkpoint_bytes {
                    first_after
                } else {
                    first_before
                },
                "byte {k}/{total} ckpt {checkpoint_bytes} next_before {next_before}"
            );
        }
        if k >= checkpoint_bytes + 8 && !complete {
            assert!(
                rec.cut_reason.is_some(),
                "byte {k}/{total}: torn record not reported"
            );
        }
        assert_holds(&log2, &all);

        // The recovered log goes on: new records get the next sequences, nothing cut returns.
        let mut log2 = log2;
        let extra = Owned {
            payload: b"after the crash".to_vec(),
            ..next.clone()
        };
        let mut all2 = all[..log2.next_seq() as usize - 1].to_vec();
        for _ in 0..2 {
            let s = log2.append(&extra.record()).unwrap();
            assert_eq!(s as usize, all2.len() + 1);
            all2.push(extra.clone());
        }
        drop(log2);
        let (log3, rec3) = RingLog::open(&dir.join("crashed"), cap, Fsync::Never).unwrap();
        assert_eq!(rec3.cut_reason, None);
        assert_eq!(log3.next_seq() as usize, all2.len() + 1);
        assert_holds(&log3, &all2);
    }
}

#[test]
fn a_crash_at_any_byte_of_any_append_loses_nothing_complete() {
    let dir = scratch();
    for (cap, max_payload, appends, seed) in [
        (512u64, 90u64, 40u64, 7u64),
        (1024, 200, 40, 11),
        (4096, 40, 70, 13),
    ] {
        let mut rng = Rng(seed);
        let (mut log, _) =
            RingLog::open(&dir.path().join(format!("main-{cap}")), cap, Fsync::Never).unwrap();
        let mut appended = vec![];
        for i in 0..appends {
            let next = gen(&mut rng, i, max_payload);
            crash_everywhere(dir.path(), &log, &appended, &next);
            log.append(&next.record()).unwrap();
            appended.push(next);
            assert_holds(&log, &appended);
        }
        // Finally a record as large as the ring: it evicts everything.
        let huge = Owned {
            payload: vec![9; (cap - 40 - 5) as usize],
            ..Owned {
                timestamp: u64::MAX,
                priority: 0,
                subject: b"big".to_vec(),
                reply: None,
                headers: None,
                message_id: None,
                payload: vec![],
            }
        };
        assert_eq!(huge.record().stored_len(), cap);
        crash_everywhere(dir.path(), &log, &appended, &huge);
        log.append(&huge.record()).unwrap();
        appended.push(huge);
        assert_eq!(log.len(), 1);
        assert_holds(&log, &appended);
    }
}

#[test]
fn index_and_descents_match_brute_force_through_many_laps() {
    let dir = scratch();
    let mut rng = Rng(99);
    let (mut log, _) = RingLog::open(&dir.path().join("r"), 8192, Fsync::Never).unwrap();
    let mut appended: Vec<Owned> = vec![];
    for i in 0..5000u64 {
        let mut o = gen(&mut rng, i, 120);
        if rng.below(50) == 0 {
            o.timestamp = rng.below(1_000); // the clock went back
        }
        log.append(&o.record()).unwrap();
        appended.push(o);
        if i % 97 == 0 || i > 4990 {
            // Every held sequence is found where a plain walk finds it.
            let mut pos = log.head;
            for seq in log.first_seq()..log.next_seq() {
                assert_eq!(log.offset_of(seq), pos, "seq {seq}");
                if seq + 1 < log.next_seq() {
                    pos = log.hop(pos);
                }
            }
            let held: Vec<_> = log.read_from(0).map(|r| r.timestamp).collect();
            let descents = held.windows(2).filter(|w| w[1] < w[0]).count() as u64;
            assert_eq!(log.descents, descents, "after {i} appends");
            // seq_at_time agrees with a scan, monotonic or not.
            for _ in 0..20 {
                let t = rng.below(60_000);
                let want = log
                    .read_from(0)
                    .find(|r| r.timestamp >= t)
                    .map_or(log.next_seq(), |r| r.seq);
                assert_eq!(log.seq_at_time(t), want, "t {t} after {i} appends");
            }
        }
    }
    assert!(
        log.first_seq() > 4000,
        "many laps: first_seq {}",
        log.first_seq()
    );
    assert_holds(&log, &appended);
}

#[test]
fn sync_and_drop_write_a_checkpoint_of_the_whole_log() {
    let dir = scratch();
    let path = dir.path().join("c");
    let (mut log, _) =
        RingLog::open(&path, 1024, Fsync::Interval(Duration::from_millis(10))).unwrap();
    for i in 0..30u64 {
        log.append(&Record::new(b"a", &i.to_le_bytes())).unwrap();
    }
    let t0 = Instant::now();
    log.tick(t0).unwrap();
    assert!(!log.dirty);
    let c = log.ckpt;
    assert_eq!((c.first_seq, c.next_seq), (log.first_seq(), log.next_seq()));
    assert_eq!((c.head, c.tail), (log.head as u64, log.tail as u64));
    // Not due yet: a tick right after an append does not sync.
    log.append(&Record::new(b"a", b"x")).unwrap();
    log.tick(t0 + Duration::from_millis(1)).unwrap();
    assert!(log.dirty);
    log.tick(t0 + Duration::from_millis(10)).unwrap();
    assert!(!log.dirty);
    drop(log);
    let page = std::fs::read(&path).unwrap();
    let epoch = crate::format::FileHeader::decode(&page).unwrap().epoch;
    let c = Checkpoint::newest(&page[..HEADER_LEN], epoch, 1024).unwrap();
    assert_eq!(c.next_seq, 32);
}

/// Opens `image` with batched writes.
fn open_batched(dir: &Path, name: &str, image: &[u8], cap: u64) -> RingLog {
    let (mut log, _) = open_image(dir, name, image, cap);
    log.batch_writes();
    log
}

/// Simulates a process crash at every byte that a batch of `batch` appends and its flush
/// write to the file of `log` (batched, flushed), and checks what a reopen recovers: a run
/// of the batch's records from its first, each whole, nothing before the batch lost. (The
/// writes of a whole run are kept, and each crashed image is the file before it with the
/// first k bytes of those writes applied: a batch's appends read what earlier flushes of
/// the same batch wrote, so stopping the writes themselves would not be a crash.)
fn crash_everywhere_batched(dir: &Path, log: &RingLog, appended: &[Owned], batch: &[Owned]) {
    let cap = log.capacity();
    let (first_before, next_before) = (log.first_seq(), log.next_seq());
    let mut probe = open_batched(dir, "probe", &log.file_image(), cap);
    assert_eq!(
        (probe.first_seq(), probe.next_seq()),
        (first_before, next_before)
    );
    // The file as the probe's open left it (it may have written a checkpoint).
    let before = probe.file_image();
    probe.keep_journal();
    for r in batch {
        probe.append(&r.record()).unwrap();
    }
    probe.flush().unwrap();
    let journal = probe.journal().to_vec();
    let first_after = probe.first_seq();
    assert_eq!(probe.file_image(), {
        let mut image = before.clone();
        for (at, bytes) in &journal {
            image[*at..*at + bytes.len()].copy_from_slice(bytes);
        }
        image
    });
    drop(probe);
    let total: usize = journal.iter().map(|(_, b)| b.len()).sum();

    let mut all = appended.to_vec();
    all.extend_from_slice(batch);
    for k in 0..=total {
        let mut crashed = before.clone();
        let mut left = k;
        for (at, bytes) in &journal {
            let n = left.min(bytes.len());
            crashed[*at..*at + n].copy_from_slice(&bytes[..n]);
            left -= n;
        }

        let path = dir.join("crashed");
        std::fs::write(&path, &crashed).unwrap();
        let (log2, rec) = match RingLog::open(&path, cap, Fsync::Never) {
            Ok(opened) => opened,
            Err(e) => panic!(
                "byte {k}/{total}: {e}; writes {:?}",
                journal
                    .iter()
                    .map(|(a, b)| (*a, b.len()))
                    .collect::<Vec<_>>(),
            ),
        };
        let next = log2.next_seq();
        assert!(
            (next_before..=next_before + batch.len() as u64).contains(&next),
            "byte {k}/{total}: next_seq {next} (was {next_before}, batch {})",
            batch.len()
        );
        assert!(
            (first_before..=first_after).contains(&log2.first_seq()),
            "byte {k}/{total}: first_seq {} not in {first_before}..={first_after}",
            log2.first_seq()
        );
        if k == total {
            assert_eq!(next, next_before + batch.len() as u64, "all written");
            assert_eq!(log2.first_seq(), first_after);
            assert_eq!(rec.cut_reason, None);
        }
        assert_holds(&log2, &all);
    }
}

#[test]
fn batched_a_crash_at_any_byte_of_a_batch_loses_nothing_flushed_before_it() {
    let dir = scratch();
    for (cap, max_payload, batches, seed) in [
        (512u64, 90u64, 25u64, 17u64),
        (1024, 200, 25, 19),
        (4096, 40, 40, 23),
    ] {
        let mut rng = Rng(seed);
        let (mut log, _) =
            RingLog::open(&dir.path().join(format!("main-{cap}")), cap, Fsync::Never).unwrap();
        log.batch_writes();
        let mut appended = vec![];
        let mut i = 0;
        for _ in 0..batches {
            let batch: Vec<Owned> = (0..1 + rng.below(5))
                .map(|_| {
                    i += 1;
                    gen(&mut rng, i, max_payload)
                })
                .collect();
            crash_everywhere_batched(dir.path(), &log, &appended, &batch);
            for r in &batch {
                log.append(&r.record()).unwrap();
            }
            log.flush().unwrap();
            appended.extend(batch);
            assert_holds(&log, &appended);
        }
    }
}

#[test]
fn batched_readers_see_what_was_flushed_and_a_reopen_finds_every_append() {
    let dir = scratch();
    let path = dir.path().join("b");
    let (mut log, _) = RingLog::open(&path, 2048, Fsync::Never).unwrap();
    log.batch_writes();
    let mut rng = Rng(5);
    let mut appended = vec![];
    // Many laps of a small ring, flushed at random points.
    for i in 0..3000u64 {
        let o = gen(&mut rng, i, 100);
        log.append(&o.record()).unwrap();
        appended.push(o);
        if rng.below(7) == 0 {
            let seen = log.read_from(0).last().map_or(0, |r| r.seq);
            assert!(seen < log.next_seq(), "nothing past the newest");
            log.flush().unwrap();
            assert_holds(&log, &appended);
            assert_eq!(log.read_from(0).count() as u64, log.len());
            let t = appended[log.first_seq() as usize - 1].timestamp;
            assert!(log.seq_at_time(t) <= log.first_seq());
        }
    }
    // Unflushed appends are the file's only when flushed: drop flushes them.
    let next = log.next_seq();
    drop(log);
    let (log, rec) = RingLog::open(&path, 2048, Fsync::Never).unwrap();
    assert_eq!(rec.cut_reason, None);
    assert_eq!(log.next_seq(), next);
    assert_holds(&log, &appended);
}

#[test]
fn batched_an_unflushed_append_is_not_read_and_a_crash_loses_only_it() {
    let dir = scratch();
    let path = dir.path().join("u");
    let (mut log, _) = RingLog::open(&path, 4096, Fsync::Never).unwrap();
    log.batch_writes();
    log.append(&Record::new(b"a", b"one")).unwrap();
    log.flush().unwrap();
    log.append(&Record::new(b"a", b"two")).unwrap();
    let read: Vec<u64> = log.read_from(0).map(|r| r.seq).collect();
    assert_eq!(read, vec![1], "the second is not in the file yet");
    assert_eq!(log.seq_at_time(u64::MAX), 2, "readers' next sequence");
    let image = log.file_image();
    log.crash_after(0);
    drop(log);
    let (crashed, rec) = open_image(dir.path(), "crashed", &image, 4096);
    assert_eq!(rec.cut_reason, None);
    assert_eq!(crashed.next_seq(), 2);
}

/// The batched appends that take the one-reservation path (`Stage::push_record`, a record
/// that continues the batch) and those that take the general one (a wrap, a terminator at
/// offset 0, the first of a batch) leave the data region byte for byte as appends through
/// the map do, lap after lap, whatever the batch sizes.
#[test]
fn batched_appends_write_the_same_bytes_as_mapped_ones() {
    let dir = scratch();
    let cap = 4096;
    let (mut mapped, _) = RingLog::open(&dir.path().join("mapped"), cap, Fsync::Never).unwrap();
    // The same file (its epoch goes into every CRC), twice.
    let mut batched = open_batched(dir.path(), "batched", &mapped.file_image(), cap);
    let mut rng = Rng(0x5eed_1234);
    let mut i = 0;
    for _ in 0..300 {
        let batch = 1 + rng.below(12);
        for _ in 0..batch {
            let rec = gen(&mut rng, i, 200);
            i += 1;
            let a = mapped.append(&rec.record()).unwrap();
            let b = batched.append(&rec.record()).unwrap();
            assert_eq!(a, b);
        }
        batched.flush().unwrap();
        assert_eq!(
            mapped.file_image()[HEADER_LEN..],
            batched.file_image()[HEADER_LEN..],
            "after {i} appends"
        );
    }
    assert!(mapped.first_seq() > 100, "the ring went round many times");
}

/// Every shape a record continuing a batch can take through `Stage::push_record`: each
/// padding length (0 to 7), each optional field absent, empty or long enough that its copy
/// is not a small one, payloads long and short: the data region is byte for byte what
/// appends through the map leave, what the log reads back is what was appended, lap after lap, and a reopen
/// recovers every record with nothing cut.
#[test]
fn batched_one_reservation_appends_of_every_shape_read_back_and_recover() {
    let dir = scratch();
    let cap = 8192;
    let path = dir.path().join("mapped");
    let (mut mapped, _) = RingLog::open(&path, cap, Fsync::Never).unwrap();
    let mut batched = open_batched(dir.path(), "batched", &mapped.file_image(), cap);
    let shapes: [Option<usize>; 3] = [None, Some(0), Some(37)];
    let mut appended = vec![];
    let mut i = 0u64;
    for payload in [0usize, 1, 5, 16, 300] {
        for subject in 1..=8usize {
            for (r, h, m) in shapes
                .iter()
                .flat_map(|&r| shapes.iter().flat_map(move |&h| shapes.map(|m| (r, h, m))))
            {
                let field = |len: Option<usize>, tag: u8| len.map(|l| vec![tag; l]);
                let o = Owned {
                    timestamp: 1_000 + i,
                    priority: (i % 8) as u8,
                    subject: vec![b's'; subject],
                    reply: field(r, b'r'),
                    headers: field(h, b'h'),
                    message_id: field(m, b'm'),
                    payload: vec![(i % 251) as u8; payload],
                };
                i += 1;
                assert_eq!(
                    mapped.append(&o.record()).unwrap(),
                    batched.append(&o.record()).unwrap()
                );
                appended.push(o);
                if i.is_multiple_of(5) {
                    batched.flush().unwrap();
                    assert_eq!(
                        mapped.file_image()[HEADER_LEN..],
                        batched.file_image()[HEADER_LEN..],
                        "after {i} appends"
                    );
                    assert_holds(&batched, &appended);
                }
            }
        }
    }
    assert!(batched.first_seq() > 100, "the ring went round");
    let next = batched.next_seq();
    drop(batched);
    let (log, rec) = RingLog::open(&dir.path().join("batched"), cap, Fsync::Never).unwrap();
    assert_eq!(rec.cut_reason, None);
    assert_eq!(log.next_seq(), next);
    assert_holds(&log, &appended);
}
