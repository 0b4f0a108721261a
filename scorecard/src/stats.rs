//! Order statistics of measured durations: p50, p95 and max (nearest rank), pure.

use serde::{Deserialize, Serialize};

/// p50 / p95 / max of a set of values, with how many there were.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub n: usize,
    pub p50: f64,
    pub p95: f64,
    pub max: f64,
}

impl Summary {
    /// `None` when there is nothing to summarise; NaNs are ignored.
    pub fn of(values: &[f64]) -> Option<Summary> {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        Some(Summary {
            n: sorted.len(),
            p50: percentile(&sorted, 0.50),
            p95: percentile(&sorted, 0.95),
            max: sorted[sorted.len() - 1],
        })
    }
}

/// Nearest-rank percentile of sorted values: the smallest value with at least `q` of the
/// values at or below it.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Occurrences over a period, scaled to one hour.
pub fn per_hour(count: usize, period_s: f64) -> f64 {
    if period_s <= 0.0 {
        return 0.0;
    }
    count as f64 * 3600.0 / period_s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let values: Vec<f64> = (1..=20).map(f64::from).collect();
        let s = Summary::of(&values).expect("values");
        assert_eq!((s.n, s.p50, s.p95, s.max), (20, 10.0, 19.0, 20.0));
        let one = Summary::of(&[3.5]).expect("one");
        assert_eq!((one.p50, one.p95, one.max), (3.5, 3.5, 3.5));
        let unsorted = Summary::of(&[5.0, 1.0, 3.0]).expect("three");
        assert_eq!((unsorted.p50, unsorted.p95, unsorted.max), (3.0, 5.0, 5.0));
    }

    #[test]
    fn nothing_to_summarise() {
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(Summary::of(&[f64::NAN]), None);
    }

    #[test]
    fn rates_per_hour() {
        assert_eq!(per_hour(2, 600.0), 12.0);
        assert_eq!(per_hour(0, 300.0), 0.0);
        assert_eq!(per_hour(5, 0.0), 0.0);
    }
}
