//! Threshold calibration: the score units and the threshold of a [`Model`], taken from the
//! baseline's own levels (a quantile times a margin, no labels), with the lowest threshold a
//! quiet baseline may have.

use super::robust::quantile;
use super::{LearnedConfig, Model, Score, Scratch, Smoother};

/// The lowest threshold: a score of one, what one robust deviation (of at least the metric's
/// operational floor) off the retained subspace scores when the baseline is quiet.
pub const MIN_THRESHOLD: f64 = 1.0;

impl Model {
    /// Sets the score units and the threshold from the baseline's own levels (its scores,
    /// smoothed in order as a series is judged).
    pub(super) fn calibrate(&mut self, rows: &[&[f64]], config: &LearnedConfig) {
        let mut scratch = Scratch::default();
        let raw: Vec<Score> = rows.iter().map(|r| self.score(r, &mut scratch)).collect();
        let n = raw.len().max(1) as f64;
        // At least one robust deviation squared: a baseline the subspace explains almost
        // exactly (flat, or one metric driving the others) would otherwise turn a residual
        // of a fraction of a deviation into a huge score.
        self.spe_unit = (raw.iter().map(|s| s.spe).sum::<f64>() / n).max(1.0);
        self.t2_unit = (raw.iter().map(|s| s.t2).sum::<f64>() / n).max(1.0);
        let mut smoother = Smoother::default();
        let mut scores: Vec<f64> = rows
            .iter()
            .map(|r| smoother.push(self.score(r, &mut scratch).score, self.smooth))
            .collect();
        // At least the score of one robust deviation off the subspace: a baseline with next
        // to no noise (steady synthetic load) would otherwise set its threshold at a fraction
        // of one, and any change smaller than a metric's operational floor would fire.
        self.threshold = (quantile(&mut scores, config.threshold_quantile)
            * config.threshold_multiplier)
            .max(MIN_THRESHOLD);
        if !self.threshold.is_finite() {
            self.threshold = MIN_THRESHOLD;
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::baseline::fixtures::{fitted, normal};
    use crate::baseline::{LearnedConfig, Learner, Smoother};

    #[test]
    fn a_smoothed_model_is_calibrated_on_levels_damps_a_lone_spike_and_catches_a_shift() {
        let config = LearnedConfig {
            smooth: 5,
            ..LearnedConfig::default()
        };
        let (model, mut noise) = fitted(&config);
        assert_eq!(model.smooth, 5);
        let mut learner = Learner::resume(model, config);
        let mut series = Smoother::default();
        let over = (0..1000)
            .filter(|_| {
                let x = normal(&mut noise);
                learner.judge(&x, &mut series).expect("fitted").exceeds
            })
            .count();
        assert!(
            over <= 10,
            "{over} of 1000 normal levels over the threshold"
        );
        // One window of twice the p99 latency among normal ones: its own score is well over
        // the threshold, its level is not. (A far larger spike still carries the level: the
        // mean is geometric, not a median.)
        let mut spike = normal(&mut noise);
        spike[3] *= 2.0;
        let judged = learner.judge(&spike, &mut series).expect("fitted");
        assert!(judged.score.score > judged.threshold, "{judged:?}");
        assert!(!judged.exceeds, "a lone spike is damped: {judged:?}");
        // The same shift, sustained: over within the smoothing window.
        let sustained = (0..5).any(|_| {
            let mut x = normal(&mut noise);
            x[3] *= 2.0;
            learner.judge(&x, &mut series).expect("fitted").exceeds
        });
        assert!(sustained, "a sustained shift is caught within 5 windows");
    }
}
