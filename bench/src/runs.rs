//! Repeated runs: the order they go in and the medians they add up to, for `tern-bench
//! transports` ([`crate::transports`]).
//!
//! Owns: [`median`] and [`range`] of a figure's values, and the pass order
//! ([`pass_order`]: every other pass reversed, so a drift of the machine's load is spread
//! over every cell instead of landing on the targets that happen to run last).
//!
//! Never: runs anything, or chooses which runs count: the caller leaves out the runs with
//! problems.

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
