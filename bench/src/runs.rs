//! Repeated runs: the order they go in and the medians they add up to, shared by
//! `tern-bench suite --runs N` ([`crate::suite`]) and `tern-bench transports`
//! ([`crate::transports`]).
//!
//! Owns: [`median`] and [`range`] of a figure's values, the pass order ([`pass_order`]:
//! every other pass reversed, so a drift of the machine's load is spread over every cell
//! instead of landing on the targets that happen to run last), and [`merge_scenario`] /
//! [`merge_targets`]: the reports of several runs of the same scenarios turned into one
//! report of medians, each figure with its min–max ([`crate::report::Figure::range`]),
//! the delivered counts summed over every run and every run's problems named by its run.
//!
//! Never: runs anything, or hides a run: a run with problems is left out of the medians
//! (a lost message's rate is not a rate), and each of its problems stays in the merged
//! report as `run K: …`, so it still counts (and still fails the command).

use crate::cpu::CpuReading;
use crate::report::{Figure, RunCount, ScenarioReport, TargetReport};
use crate::scenario::delivery::Delivery;

/// The median of `values` (the mean of the two middle ones for an even count); `None`
/// when there are none.
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// The smallest and the largest of `values`; `None` when there are none.
pub fn range(values: &[f64]) -> Option<(f64, f64)> {
    let min = values.iter().copied().reduce(f64::min)?;
    let max = values.iter().copied().reduce(f64::max)?;
    Some((min, max))
}

/// The order of `items` in pass `pass` (0-based): as given in even passes, reversed in
/// odd ones.
pub fn pass_order(items: usize, pass: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..items).collect();
    if pass % 2 == 1 {
        order.reverse();
    }
    order
}

/// Every problem of every run of `runs` (in run order), each named by its run: `run K: …`.
pub fn problems_by_run<'a>(runs: impl IntoIterator<Item = &'a ScenarioReport>) -> Vec<String> {
    runs.into_iter()
        .enumerate()
        .flat_map(|(k, r)| {
            r.problems
                .iter()
                .map(move |p| format!("run {}: {p}", k + 1))
        })
        .collect()
}

/// One report of the runs `runs` (in run order) of one scenario against one target: each
/// figure the median over the runs without problems, with its min–max; each measured
/// window's delivered and expected counts and server CPU time summed over every run (the
/// median CPU per message is among the figures); every run's problems, prefixed `run K:
/// `. A single run is returned as it is.
pub fn merge_scenario(runs: &[&ScenarioReport]) -> Option<ScenarioReport> {
    let first = *runs.first()?;
    if runs.len() == 1 {
        return Some(first.clone());
    }
    let clean: Vec<&ScenarioReport> = runs
        .iter()
        .copied()
        .filter(|r| r.problems.is_empty())
        .collect();
    let mut figures: Vec<Figure> = Vec::new();
    for r in &clean {
        for f in &r.figures {
            if figures.iter().any(|g| g.name == f.name) {
                continue;
            }
            let values: Vec<f64> = clean
                .iter()
                .filter_map(|r| r.figure(&f.name).map(|f| f.value))
                .collect();
            let Some(value) = median(values.clone()) else {
                continue;
            };
            figures.push(Figure {
                value,
                range: range(&values),
                ..f.clone()
            });
        }
    }
    let windows = runs.iter().map(|r| r.deliveries.len()).max().unwrap_or(0);
    let deliveries = (0..windows)
        .map(|i| {
            let of_window: Vec<&Delivery> =
                runs.iter().filter_map(|r| r.deliveries.get(i)).collect();
            // The CPU times add up like the counts when every run read one; otherwise the
            // first reading that is not a time (not watched, or failed) stands for them.
            let server_cpu = of_window
                .iter()
                .try_fold(0u64, |sum, d| match d.server_cpu {
                    CpuReading::Spent { ns } => Ok(sum + ns),
                    ref other => Err(other.clone()),
                })
                .map_or_else(|other| other, |ns| CpuReading::Spent { ns });
            Delivery {
                phase: of_window.first().and_then(|d| d.phase),
                delivered: of_window.iter().map(|d| d.delivered).sum(),
                expected: of_window.iter().map(|d| d.expected).sum(),
                server_cpu,
                // The per-message figure is the median among the figures, not a sum.
                cpu_per_msg_ns: None,
            }
        })
        .collect();
    let problems = problems_by_run(runs.iter().copied());
    Some(ScenarioReport {
        scenario: first.scenario,
        label: first.label.clone(),
        figures,
        deliveries,
        problems,
        detail: serde_json::Value::Null,
        runs: Some(RunCount {
            total: runs.len(),
            clean: clean.len(),
        }),
    })
}

/// One report per target of `passes` (each pass: every target's report, in the same
/// target order): each scenario merged over the passes by [`merge_scenario`], matched by
/// its label. A single pass is returned as it is.
pub fn merge_targets(passes: &[Vec<TargetReport>]) -> Vec<TargetReport> {
    let Some(first) = passes.first() else {
        return Vec::new();
    };
    first
        .iter()
        .enumerate()
        .map(|(t, target)| {
            let runs: Vec<&TargetReport> = passes.iter().filter_map(|p| p.get(t)).collect();
            let last = runs.last().copied().unwrap_or(target);
            let scenarios = target
                .scenarios
                .iter()
                .filter_map(|s| {
                    let of_s: Vec<&ScenarioReport> = runs
                        .iter()
                        .filter_map(|r| r.scenarios.iter().find(|o| o.label == s.label))
                        .collect();
                    merge_scenario(&of_s)
                })
                .collect();
            TargetReport {
                scenarios,
                ..last.clone()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Better;

    fn run(rate: f64, p99: f64, delivered: u64, problem: Option<&str>) -> ScenarioReport {
        let cpu = CpuReading::Spent {
            ns: 1_000 * delivered,
        };
        ScenarioReport::new(
            "pubsub",
            "pubsub 1x1 16B".into(),
            vec![
                Figure::new("delivery rate", rate, "msgs/s", Better::Higher),
                Figure::new("p99", p99, "µs", Better::Lower),
            ],
            vec![Delivery::new(delivered, 10, cpu)],
            problem.map(str::to_string).into_iter().collect(),
            serde_json::Value::Null,
        )
    }

    #[test]
    fn medians_and_ranges() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
        assert_eq!(range(&[3.0, 1.0, 2.0]), Some((1.0, 3.0)));
        assert_eq!(range(&[]), None);
    }

    #[test]
    fn every_other_pass_is_reversed() {
        assert_eq!(pass_order(3, 0), [0, 1, 2]);
        assert_eq!(pass_order(3, 1), [2, 1, 0]);
        assert_eq!(pass_order(3, 2), [0, 1, 2]);
    }

    #[test]
    fn a_run_with_problems_is_left_out_of_the_medians_and_named() {
        let runs = [
            run(300.0, 9.0, 10, None),
            // A run that lost a message: its (high) rate must not move the median.
            run(1_000.0, 1.0, 9, None),
            run(100.0, 7.0, 10, None),
            run(200.0, 8.0, 10, None),
        ];
        let refs: Vec<&ScenarioReport> = runs.iter().collect();
        let m = merge_scenario(&refs).unwrap();
        let rate = m.figure("delivery rate").unwrap();
        assert_eq!((rate.value, rate.range), (200.0, Some((100.0, 300.0))));
        let p99 = m.figure("p99").unwrap();
        assert_eq!((p99.value, p99.range), (8.0, Some((7.0, 9.0))));
        assert_eq!(m.runs, Some(RunCount { total: 4, clean: 3 }));
        assert_eq!(
            m.problems,
            ["run 2: delivered 9 of 10 expected: 1 short (lost)"]
        );
        assert_eq!(
            (m.deliveries[0].delivered, m.deliveries[0].expected),
            (39, 40)
        );
        // Every run with problems: no figure at all, every problem still there.
        let bad = [run(1.0, 1.0, 9, None), run(2.0, 1.0, 10, Some("timed out"))];
        let m = merge_scenario(&[&bad[0], &bad[1]]).unwrap();
        assert!(m.figures.is_empty());
        assert_eq!(m.problems.len(), 2);
        assert_eq!(m.runs, Some(RunCount { total: 2, clean: 0 }));
    }

    #[test]
    fn one_run_is_its_own_merge() {
        let one = run(300.0, 9.0, 10, None);
        let m = merge_scenario(&[&one]).unwrap();
        assert_eq!(m.figures, one.figures);
        assert_eq!(m.runs, None);
        assert_eq!(m.problems, one.problems);
    }
}
