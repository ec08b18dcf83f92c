//! Criterion micro-benchmarks of the subject rules: validating a publish subject and a
//! filter, and matching filters (literal, `*`, `>`) against subjects — work the broker
//! does on every `PUB` and every `SUB`, and the matcher's inner step.
//!
//! Every benchmark is one small batch of calls, so `cargo test --all-targets` (which runs
//! each once) stays fast.
//!
//! Never: asserts on time; figures come from `cargo bench`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tern_protocol::subject::{matches, validate_filter, validate_publish};

const SUBJECTS: [&str; 4] = [
    "a",
    "chat.room.42",
    "market.equities.us.nasdaq.AAPL.trades",
    "tenant-7.region-eu.service.orders.v2.created.2026.11.23",
];

const FILTERS: [(&str, &str); 4] = [
    ("literal", "market.equities.us.nasdaq.AAPL.trades"),
    ("star", "market.equities.*.nasdaq.*.trades"),
    ("tail", "market.equities.>"),
    ("miss", "market.futures.*.cme.*.trades"),
];

fn validate(c: &mut Criterion) {
    let mut group = c.benchmark_group("subject/validate");
    group.throughput(Throughput::Elements(1));
    for s in SUBJECTS {
        group.bench_with_input(BenchmarkId::new("publish", s.len()), s, |b, s| {
            b.iter(|| validate_publish(black_box(s.as_bytes())).expect("valid subject"));
        });
    }
    for (name, f) in FILTERS {
        group.bench_with_input(BenchmarkId::new("filter", name), f, |b, f| {
            b.iter(|| validate_filter(black_box(f.as_bytes())).expect("valid filter"));
        });
    }
    group.finish();
}

fn matching(c: &mut Criterion) {
    let mut group = c.benchmark_group("subject/matches");
    group.throughput(Throughput::Elements(1));
    let subject = "market.equities.us.nasdaq.AAPL.trades";
    for (name, f) in FILTERS {
        let want = name != "miss";
        assert_eq!(matches(f.as_bytes(), subject.as_bytes()), want, "{name}");
        group.bench_with_input(BenchmarkId::from_parameter(name), f, |b, f| {
            b.iter(|| matches(black_box(f.as_bytes()), black_box(subject.as_bytes())));
        });
    }
    group.finish();
}

criterion_group!(benches, validate, matching);
criterion_main!(benches);
