//! [`Smoother`]: the level a series is judged by, the geometric mean of its recent scores,
//! so a sustained shift stands out of the noise and a lone spike is damped.

use std::collections::VecDeque;

use super::MAX_SMOOTH;

/// The level a series is judged by: the geometric mean of `1 + score` over its last
/// `smooth` windows, minus 1 (so a level reads like a score). Geometric, so that one huge
/// window does not carry the level on its own. Allocation-free once full.
#[derive(Debug, Clone, Default)]
pub struct Smoother {
    /// `ln(1 + score)` of the recent windows, oldest first.
    recent: VecDeque<f64>,
}

impl Smoother {
    /// Adds a window's score; returns the level over the last `smooth` windows (fewer at
    /// the start).
    pub fn push(&mut self, score: f64, smooth: usize) -> f64 {
        let smooth = smooth.clamp(1, MAX_SMOOTH);
        if smooth == 1 {
            self.recent.clear();
            return score.max(0.0);
        }
        let log = if score.is_finite() {
            score.max(0.0).ln_1p()
        } else {
            f64::MAX.ln()
        };
        while self.recent.len() >= smooth {
            self.recent.pop_front();
        }
        self.recent.push_back(log);
        (self.recent.iter().sum::<f64>() / self.recent.len() as f64).exp_m1()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_level_is_the_geometric_mean_of_one_plus_the_recent_scores() {
        let mut alone = Smoother::default();
        assert_eq!(alone.push(7.0, 1), 7.0);
        assert_eq!(alone.push(-1.0, 1), 0.0, "a score is never below 0");
        let mut three = Smoother::default();
        assert!(
            (three.push(3.0, 3) - 3.0).abs() < 1e-12,
            "one window so far"
        );
        // (1 + 3) * (1 + 0) = 4 over two windows: sqrt(4) - 1 = 1
        assert!((three.push(0.0, 3) - 1.0).abs() < 1e-12);
        // 4 * 1 * 15 = 60 ... then the 3 drops out: 1 * 15 * 3 = 45
        assert!((three.push(14.0, 3) - (60f64.cbrt() - 1.0)).abs() < 1e-12);
        assert!((three.push(2.0, 3) - (45f64.cbrt() - 1.0)).abs() < 1e-12);
        assert!(three.push(f64::INFINITY, 3).is_finite());
    }
}
