//! The soak, CI-sized: one minute of `tern-bench`'s soak against the real `ternd` — an
//! audience, acknowledged traffic through a chaos proxy, and every kind of hostile client
//! (garbage, slowloris on both ports, PING floods, stuck subscribers, `$TERN.REPLAY`
//! floods, connection storms, connections reset mid-frame) at once — and every check it
//! makes: memory within the bound the settings imply and flat after warm-up, every
//! acknowledged message delivered exactly once and in order, no loss for fast text
//! subscribers, each limit's counter moved, a responsive broker at the end and exit status
//! 0 on SIGTERM. `make soak` runs the same for ten minutes (docs/benchmarks.md).
//!
//! Nothing here asserts on speed: the checks are about what was delivered, held and
//! counted, and every wait in the soak has a deadline.

use tern_bench::scenario::soak::{self, SoakConfig};

#[test]
fn a_one_minute_soak_with_every_hostile_class_passes_every_check() {
    let mut config = SoakConfig::short(env!("CARGO_BIN_EXE_ternd").into());
    let log = std::env::temp_dir().join(format!("ternd-soak-{}.log", std::process::id()));
    config.log = Some(log.clone());
    let report = soak::run(&config, &mut |phase| eprintln!("soak: {phase}"));
    let text = soak::render(&report);
    if !report.passed() {
        let tail: String = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        eprintln!("--- ternd log (tail) ---\n{tail}");
    }
    let _ = std::fs::remove_file(&log);
    assert!(report.passed(), "{text}");
    eprintln!("{text}");
}
