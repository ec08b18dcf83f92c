//! [`Delivery`]: what one measured window of a scenario delivered, what it had to deliver,
//! and what the server's CPU spent on it.
//!
//! Owns: the count rule — delivered must equal expected *exactly*: fewer is loss, more is
//! duplication, and either fails the run ([`Delivery::problem`]) — the
//! `server CPU/msg` figure ([`Delivery::cpu_figure`]), and the names both go by in
//! reports. Every scenario whose expected count is known returns its measured windows as
//! `Delivery`s: `pubsub`, `fanout` and `queue` (one each), `latency` (one), `stuck` (one
//! per phase: `alone`, `with stuck`) and `catchup` (one: replayed of stored).
//! [`crate::report::ScenarioReport::new`] applies the rule and adds the figure for all of
//! them, so no scenario checks its own totals.
//!
//! Not here: `audience` (with churn, who is owed a message depends on when each user was
//! there, so there is no one expected total; its ledger checks every message instead)
//! and `conns` (no messages).
//!
//! Never: measures. The scenario counts and reads the CPU; this only judges and names.

use serde::Serialize;

use crate::cpu::{per_message_ns, CpuReading};
use crate::report::{format_value, Better, Figure};

/// One measured window's counts and the server's CPU time over it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delivery {
    /// The phase, for a scenario with several measured windows (`alone`, `with stuck`).
    pub phase: Option<&'static str>,
    /// Measured messages delivered in the window, over all receivers (duplicates
    /// included).
    pub delivered: u64,
    /// Deliveries the window owed: published × receivers (× 1 for a queue group).
    pub expected: u64,
    /// The server's CPU time over the window.
    pub server_cpu: CpuReading,
    /// `server_cpu` per delivered message, in ns (when both are known).
    pub cpu_per_msg_ns: Option<f64>,
}

impl Delivery {
    /// A window that delivered `delivered` of `expected`, the server spending `server_cpu`.
    pub fn new(delivered: u64, expected: u64, server_cpu: CpuReading) -> Self {
        let cpu_per_msg_ns = match server_cpu {
            CpuReading::Spent { ns } => per_message_ns(ns, delivered),
            _ => None,
        };
        Delivery {
            phase: None,
            delivered,
            expected,
            server_cpu,
            cpu_per_msg_ns,
        }
    }

    /// The same, named after `phase`.
    pub fn in_phase(self, phase: &'static str) -> Self {
        Delivery {
            phase: Some(phase),
            ..self
        }
    }

    /// `what`, prefixed with the phase when there is one (`alone delivered`).
    pub fn name(&self, what: &str) -> String {
        match self.phase {
            Some(phase) => format!("{phase} {what}"),
            None => what.to_string(),
        }
    }

    /// The name of the CPU figure (`server CPU/msg`, `alone server CPU/msg`).
    pub fn cpu_figure_name(&self) -> String {
        self.name("server CPU/msg")
    }

    /// True when the window delivered exactly what it owed.
    pub fn exact(&self) -> bool {
        self.delivered == self.expected
    }

    /// The count rule: `None` when exact, else the problem that fails the run, with both
    /// counts and the difference.
    pub fn problem(&self) -> Option<String> {
        let (delivered, expected) = (self.delivered, self.expected);
        let what = if delivered < expected {
            format!(
                "{} short (lost)",
                format_value((expected - delivered) as f64)
            )
        } else if delivered > expected {
            format!(
                "{} too many (duplicated)",
                format_value((delivered - expected) as f64)
            )
        } else {
            return None;
        };
        let counts = format!(
            "delivered {} of {} expected: {what}",
            format_value(delivered as f64),
            format_value(expected as f64)
        );
        Some(match self.phase {
            Some(phase) => format!("{phase}: {counts}"),
            None => counts,
        })
    }

    /// Everything wrong with the window: the count rule, and a CPU time that could not be
    /// read (a `--server-pid` that names no process).
    pub fn problems(&self) -> Vec<String> {
        let mut p: Vec<String> = self.problem().into_iter().collect();
        if let CpuReading::Failed { error } = &self.server_cpu {
            p.push(error.clone());
        }
        p
    }

    /// The `server CPU/msg` figure (ns, lower is better), when it was measured.
    pub fn cpu_figure(&self) -> Option<Figure> {
        self.cpu_per_msg_ns
            .map(|ns| Figure::new(&self.cpu_figure_name(), ns, "ns", Better::Lower))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exact_count_passes() {
        let d = Delivery::new(1_000_000, 1_000_000, CpuReading::NotWatched);
        assert!(d.exact());
        assert_eq!(d.problem(), None);
        assert!(d.problems().is_empty());
    }

    #[test]
    fn fewer_than_expected_fails_with_both_counts() {
        let d = Delivery::new(999_000, 1_000_000, CpuReading::NotWatched);
        assert!(!d.exact());
        assert_eq!(
            d.problem().as_deref(),
            Some("delivered 999,000 of 1,000,000 expected: 1,000 short (lost)")
        );
    }

    #[test]
    fn more_than_expected_fails_too() {
        let d = Delivery::new(12, 10, CpuReading::NotWatched).in_phase("alone");
        assert_eq!(
            d.problem().as_deref(),
            Some("alone: delivered 12 of 10 expected: 2 too many (duplicated)")
        );
    }

    #[test]
    fn nothing_expected_and_nothing_delivered_is_exact() {
        assert_eq!(Delivery::new(0, 0, CpuReading::NotWatched).problem(), None);
        assert!(Delivery::new(1, 0, CpuReading::NotWatched)
            .problem()
            .is_some());
    }

    #[test]
    fn cpu_per_message_is_the_windows_time_over_its_deliveries() {
        let d = Delivery::new(
            4_000_000,
            4_000_000,
            CpuReading::Spent { ns: 2_000_000_000 },
        );
        assert_eq!(d.cpu_per_msg_ns, Some(500.0));
        let f = d.cpu_figure().unwrap();
        assert_eq!(
            (f.name.as_str(), f.value, f.unit, f.better),
            ("server CPU/msg", 500.0, "ns", Better::Lower)
        );
        let phased = d.in_phase("with stuck");
        assert_eq!(
            phased.cpu_figure().unwrap().name,
            "with stuck server CPU/msg"
        );
    }

    #[test]
    fn no_cpu_figure_without_a_reading_or_a_delivery() {
        assert_eq!(
            Delivery::new(10, 10, CpuReading::NotWatched).cpu_figure(),
            None
        );
        let none_delivered = Delivery::new(0, 10, CpuReading::Spent { ns: 10_000_000 });
        assert_eq!(none_delivered.cpu_figure(), None);
        assert_eq!(none_delivered.problems().len(), 1);
    }

    #[test]
    fn an_unreadable_process_is_a_problem() {
        let d = Delivery::new(
            10,
            10,
            CpuReading::Failed {
                error: "server CPU of pid 7: cannot read /proc/7/stat".into(),
            },
        );
        assert_eq!(d.cpu_figure(), None);
        assert_eq!(
            d.problems(),
            vec!["server CPU of pid 7: cannot read /proc/7/stat".to_string()]
        );
    }
}
