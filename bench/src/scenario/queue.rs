//! `queue`: N members of one queue group; how evenly the broker spreads messages.
//!
//! Owns: the spread figures over the per-member counts of a [`super::pubsub`] run with a
//! queue group: min, max, `(max − min) / mean` and the coefficient of variation
//! (standard deviation / mean). Every message goes to exactly one member, so the member
//! counts sum to the messages published.

use serde::Serialize;

use super::pubsub::{self, PubSubConfig, PubSubResult};
use super::Limit;
use crate::cpu::ServerCpu;
use crate::driver::{Driver, DriverError};
use crate::report::{Better, Figure};

/// The queue-group run: `publishers` publishers, `members` members of group `bench`.
pub fn config(publishers: usize, members: usize, size: usize, limit: Limit) -> PubSubConfig {
    PubSubConfig {
        subject: "bench.queue".into(),
        queue: Some("bench".into()),
        ..PubSubConfig::new(publishers, members, size, limit)
    }
}

/// How evenly deliveries were spread over the members.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spread {
    /// Fewest deliveries to one member.
    pub min: u64,
    /// Most deliveries to one member.
    pub max: u64,
    /// Mean deliveries per member.
    pub mean: f64,
    /// `(max − min) / mean`, in percent.
    pub range_pct: f64,
    /// Standard deviation / mean, in percent.
    pub cv_pct: f64,
}

impl Spread {
    /// The spread of `counts`; all zeros when there are none.
    pub fn of(counts: &[u64]) -> Spread {
        if counts.is_empty() {
            return Spread {
                min: 0,
                max: 0,
                mean: 0.0,
                range_pct: 0.0,
                cv_pct: 0.0,
            };
        }
        let n = counts.len() as f64;
        let min = counts.iter().copied().min().unwrap_or(0);
        let max = counts.iter().copied().max().unwrap_or(0);
        let mean = counts.iter().sum::<u64>() as f64 / n;
        let var = counts
            .iter()
            .map(|&c| (c as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        let pct = |x: f64| if mean > 0.0 { 100.0 * x / mean } else { 0.0 };
        Spread {
            min,
            max,
            mean,
            range_pct: pct((max - min) as f64),
            cv_pct: pct(var.sqrt()),
        }
    }
}

/// A queue-group run's result.
#[derive(Debug, Clone, Serialize)]
pub struct QueueResult {
    /// The underlying throughput run (its `per_subscriber` are the member counts).
    pub run: PubSubResult,
    /// The spread over members.
    pub spread: Spread,
}

impl QueueResult {
    /// The figures a report shows and compares.
    pub fn figures(&self) -> Vec<Figure> {
        let mut f = self.run.figures();
        f.push(Figure::new(
            "member min",
            self.spread.min as f64,
            "msgs",
            Better::Neither,
        ));
        f.push(Figure::new(
            "member max",
            self.spread.max as f64,
            "msgs",
            Better::Neither,
        ));
        f.push(Figure::new(
            "spread (max-min)/mean",
            self.spread.range_pct,
            "%",
            Better::Lower,
        ));
        f.push(Figure::new(
            "spread stddev/mean",
            self.spread.cv_pct,
            "%",
            Better::Lower,
        ));
        f
    }
}

/// Runs a queue-group scenario, reading `server`'s CPU time over the measured window.
pub fn run(
    driver: &dyn Driver,
    config: &PubSubConfig,
    server: ServerCpu,
) -> Result<QueueResult, DriverError> {
    let run = pubsub::run(driver, config, server)?;
    let spread = Spread::of(&run.per_subscriber);
    Ok(QueueResult { run, spread })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_spread_is_zero() {
        let s = Spread::of(&[25, 25, 25, 25]);
        assert_eq!((s.min, s.max), (25, 25));
        assert_eq!(s.range_pct, 0.0);
        assert_eq!(s.cv_pct, 0.0);
    }

    #[test]
    fn uneven_spread() {
        let s = Spread::of(&[10, 30]);
        assert_eq!(s.mean, 20.0);
        assert_eq!(s.range_pct, 100.0);
        assert_eq!(s.cv_pct, 50.0);
    }

    #[test]
    fn no_members() {
        assert_eq!(Spread::of(&[]).max, 0);
        assert_eq!(Spread::of(&[0, 0]).range_pct, 0.0);
    }
}
