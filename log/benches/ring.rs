//! Criterion benchmarks of the ring log: appending records with a 128-byte payload to a full
//! ring (the steady state, where every append evicts), through the map and batched, and replaying a full ring from its
//! oldest record.
//!
//! Also: finding a sequence by time, and reopening (recovering) a full ring.
//!
//! `cargo bench -p tern-log` uses a 64 MiB ring (about 380,000 such records). Under
//! `cargo test --all-targets`, criterion's test mode runs each benchmark once; the ring is then
//! 1 MiB so the smoke run stays cheap.
//!
//! Never: asserts on time; figures come from `cargo bench`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tern_log::{Fsync, Record, RingLog};

/// Appends per iteration of the append benchmark.
const BATCH: u64 = 1000;
const PAYLOAD: [u8; 128] = [0x5a; 128];

/// Whether criterion is measuring (`cargo bench`) rather than smoke-testing (`cargo test`).
fn measuring() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test")
}

fn capacity() -> u64 {
    if measuring() {
        64 << 20
    } else {
        1 << 20
    }
}

fn record(ts: u64) -> Record<'static> {
    Record {
        timestamp: ts,
        priority: 3,
        ..Record::new(b"chat.room.42", &PAYLOAD)
    }
}

/// A log at least one lap past full, in a fresh temporary directory.
fn full_log(dir: &tempfile::TempDir) -> RingLog {
    let (mut log, _) = RingLog::open(&dir.path().join("bench.ring"), capacity(), Fsync::Never)
        .expect("open the ring");
    let per_lap = capacity() / record(0).stored_len();
    for ts in 0..2 * per_lap {
        log.append(&record(ts)).expect("append");
    }
    assert!(log.first_seq() > 1, "the ring is full");
    log
}

fn append(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = full_log(&dir);
    let mut ts = log.next_seq();
    let mut group = c.benchmark_group("ring/append");
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("payload_128B_full_ring", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                ts += 1;
                black_box(log.append(black_box(&record(ts))).expect("append"));
            }
        });
    });
    // What the broker does: appends batched, written with one `pwrite` per 1000 (a loop
    // turn's worth).
    log.batch_writes();
    group.bench_function("payload_128B_full_ring_batched", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                ts += 1;
                black_box(log.append(black_box(&record(ts))).expect("append"));
            }
            log.flush().expect("flush");
        });
    });
    group.finish();
}

fn replay(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = full_log(&dir);
    let mut group = c.benchmark_group("ring/replay");
    group.throughput(Throughput::Elements(log.len()));
    group.sample_size(20);
    group.bench_function("payload_128B_full_ring", |b| {
        b.iter(|| {
            let mut bytes = 0usize;
            for r in log.read_from(0) {
                bytes += r.subject.len() + r.payload.len();
            }
            black_box(bytes)
        });
    });
    group.finish();
}

fn seq_at_time(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = full_log(&dir);
    let (first, next) = (log.first_seq(), log.next_seq());
    let mut t = first;
    c.bench_function("ring/seq_at_time/full_ring", |b| {
        b.iter(|| {
            // Timestamps equal sequences - 1 here; step through the held range.
            t = if t + 7919 >= next { first } else { t + 7919 };
            black_box(log.seq_at_time(black_box(t)))
        });
    });
}

fn recover(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = full_log(&dir);
    let (path, records) = (log.path().to_path_buf(), log.len());
    drop(log);
    let mut group = c.benchmark_group("ring/recover");
    group.throughput(Throughput::Elements(records));
    group.sample_size(10);
    group.bench_function("open_full_ring", |b| {
        b.iter(|| {
            let (log, rec) = RingLog::open(&path, capacity(), Fsync::Never).expect("reopen");
            assert_eq!(rec.records, records);
            black_box(log.next_seq())
        });
    });
    group.finish();
}

criterion_group!(benches, append, replay, seq_at_time, recover);
criterion_main!(benches);
