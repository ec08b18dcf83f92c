//! `tern-bench transports --short` against the `ternd` this test build made: the harness's
//! TLS, WebSocket and wss paths on both of ternd's protocols, each cell (1→1, a fixed-rate
//! latency run, idle connections) on a freshly started broker with its listener, and every
//! count exact. A check that the transports comparison still runs (`make bench-transports`
//! is the measurement, docs/benchmarks.md); nothing here asserts on speed.

use tern_bench::transports::{self, TransportsConfig};

#[test]
fn the_short_transports_comparison_runs_with_exact_counts() {
    let config = TransportsConfig::short(env!("CARGO_BIN_EXE_ternd").into());
    let report = transports::run(&config, &mut |cell| eprintln!("transports: {cell}"))
        .expect("test certificates");
    let text = transports::render(&report);
    assert_eq!(report.problem_count(), 0, "{text}");
    for cell in &report.cells {
        let (delivered, expected) = cell.counts();
        assert_eq!(delivered, expected, "{text}");
    }
    assert!(!report.cells.is_empty());
    eprintln!("{text}");
}
