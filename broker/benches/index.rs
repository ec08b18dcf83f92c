//! Criterion benchmarks of the subscription index as the shard uses it: routing to a queue
//! group of 65,536 members (one member is picked per message), and removing 65,536
//! subscriptions of one subject (what closing a connection that holds them costs its
//! worker, during which nobody else on that worker is served); and of the broker-wide
//! message-id table, the one lock a publish may take (only one that carries an id), alone
//! and with a second thread using it at the same time.
//!
//! Under `cargo test --all-targets`, criterion's test mode runs each benchmark once, with
//! small groups so that the smoke run stays cheap.
//!
//! Never: asserts on time; figures come from `cargo bench -p tern-broker --bench index`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tern_broker::bench::{IdChecks, QueueRouting, SubjectChurn};

/// Messages routed per iteration of the routing benchmark.
const BATCH: usize = 100;

/// Whether criterion is measuring (`cargo bench`) rather than smoke-testing (`cargo test`).
fn measuring() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test")
}

fn members() -> usize {
    if measuring() {
        65_536
    } else {
        64
    }
}

fn queue_group(c: &mut Criterion) {
    let n = members();
    let mut group = c.benchmark_group("index/queue-group");
    group.throughput(Throughput::Elements(BATCH as u64));
    let mut routing = QueueRouting::new(n);
    group.bench_function(format!("route-{n}-members"), |b| {
        b.iter(|| black_box(routing.route(BATCH)));
    });
    group.finish();
}

fn unsubscribe(c: &mut Criterion) {
    let n = members();
    let mut group = c.benchmark_group("index/unsubscribe");
    group.sample_size(10);
    for (name, queue) in [("plain", false), ("queue", true)] {
        group.bench_function(format!("remove-{n}-{name}"), |b| {
            b.iter_batched(
                || SubjectChurn::new(n, queue),
                |churn| black_box(churn.remove_all()),
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

fn message_ids(c: &mut Criterion) {
    let mut group = c.benchmark_group("dedupe/check-and-remember");
    group.throughput(Throughput::Elements(BATCH as u64));
    for (name, contended) in [("alone", false), ("contended", true)] {
        let mut checks = IdChecks::new(contended);
        group.bench_function(name, |b| b.iter(|| black_box(checks.check(BATCH))));
    }
    group.finish();
}

criterion_group!(benches, queue_group, unsubscribe, message_ids);
criterion_main!(benches);
