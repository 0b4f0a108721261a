//! [`Seasonal`]: the seasonal adjustment, each metric minus its median at the same point of
//! the last seasons, so a daily cycle is not learned as variance.

use super::robust::median_of;
use super::MAX_SEASONS;

/// Replaces each metric of a window by its difference from the median of the same metric
/// `season`, `2 x season`, ... `seasons x season` windows earlier (those already seen).
/// Allocation-free once its history is full.
#[derive(Debug, Clone, Default)]
pub struct Seasonal {
    season: usize,
    seasons: usize,
    /// The last `season x seasons` windows, flattened, as a ring.
    past: Vec<f64>,
    dims: usize,
    /// Windows pushed so far.
    seen: usize,
    same_point: Vec<f64>,
    out: Vec<f64>,
}

impl Seasonal {
    /// `season` 0: every window passes through unchanged.
    pub fn new(season: usize, seasons: usize) -> Self {
        Self {
            season,
            seasons: seasons.clamp(1, MAX_SEASONS),
            ..Default::default()
        }
    }

    /// The adjusted window (`current` itself when off), or `None` during the first season.
    pub fn push<'a>(&'a mut self, current: &'a [f64]) -> Option<&'a [f64]> {
        if self.season == 0 {
            return Some(current);
        }
        self.out.clear();
        let span = self.season * self.seasons;
        if self.dims != current.len() {
            // first window (a service's columns are fixed once its model exists)
            self.dims = current.len();
            self.past = vec![f64::NAN; span * self.dims];
            self.seen = 0;
        }
        let t = self.seen;
        let ready = t >= self.season;
        if ready {
            for (j, value) in current.iter().enumerate() {
                self.same_point.clear();
                for k in 1..=self.seasons {
                    let Some(back) = t.checked_sub(k * self.season) else {
                        break;
                    };
                    let v = self.past[(back % span) * self.dims + j];
                    if !v.is_nan() {
                        self.same_point.push(v);
                    }
                }
                self.out.push(if self.same_point.is_empty() {
                    f64::NAN
                } else {
                    value - median_of(&mut self.same_point)
                });
            }
        }
        let slot = (t % span) * self.dims;
        self.past[slot..slot + self.dims].copy_from_slice(current);
        self.seen += 1;
        ready.then_some(self.out.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seasonal_window_is_its_difference_from_the_median_of_past_seasons() {
        let mut off = Seasonal::new(0, 7);
        assert_eq!(off.push(&[3.0, 4.0]), Some(&[3.0, 4.0][..]));

        // A cycle of 4 windows; the second metric drifts up by 10 each season.
        let mut seasonal = Seasonal::new(4, 3);
        let cycle = [1.0, 5.0, 9.0, 5.0];
        let window = |t: usize| [cycle[t % 4], cycle[t % 4] + 10.0 * (t / 4) as f64];
        for t in 0..4 {
            assert!(seasonal.push(&window(t)).is_none(), "the first season");
        }
        // One season back only: the difference from it.
        assert_eq!(seasonal.push(&window(4)), Some(&[0.0, 10.0][..]));
        for t in 5..16 {
            seasonal.push(&window(t));
        }
        // Three seasons back (10, 20, 30 more than the first): the median is 20 below now.
        assert_eq!(seasonal.push(&window(16)), Some(&[0.0, 20.0][..]));
        // A fault shows against its point of the cycle, not against the cycle's range.
        let mut faulty = window(17);
        faulty[0] += 3.0;
        assert_eq!(seasonal.push(&faulty).map(|w| w[0]), Some(3.0));
        // A missing value of the past is left out of the median.
        let mut seasonal = Seasonal::new(1, 3);
        seasonal.push(&[f64::NAN]);
        assert!(seasonal.push(&[2.0]).expect("ready")[0].is_nan());
        assert_eq!(seasonal.push(&[5.0]), Some(&[3.0][..]));
    }
}
