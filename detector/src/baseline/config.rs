//! [`LearnedConfig`]: the `[learned]` section of `detector.toml`, its defaults, and the
//! check that names a bad key; with the bounds its keys are held to.

use immune_nats::feature;
use serde::{Deserialize, Serialize};

/// How the learned detector learns and judges. `[learned]` in `detector.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LearnedConfig {
    /// Learn and score at all.
    pub enabled: bool,
    /// Vectors of normal behaviour the model is fitted on once warmed up.
    pub baseline: usize,
    /// Vectors of normal behaviour before a first, conservative model (0: none, the first
    /// fit waits for `baseline`). The model is refitted each time the normal vectors double
    /// until `baseline`, and until then its threshold carries a margin of
    /// `sqrt(baseline / vectors)` (a quantile of few scores is a rough one: a threshold 3x
    /// wider on 30 vectors of 300, 1.4x on 150), so detection starts within seconds of a
    /// service's first snapshot and false alarms stay as rare as with the full baseline.
    pub warmup: usize,
    /// The most recent vectors kept for refits.
    pub history: usize,
    /// Share of the baseline variance the retained components explain (0..1).
    pub variance_kept: f64,
    /// Upper bound on retained components.
    pub max_components: usize,
    /// Quantile of the baseline's own scores the threshold starts from (0..1).
    pub threshold_quantile: f64,
    /// The threshold is the quantile times this margin (>= 1).
    pub threshold_multiplier: f64,
    /// Exceedances among the last `n` windows that open an episode.
    pub k: u32,
    /// The hysteresis window; `n` quiet windows in a row close an episode (1..=64).
    pub n: u32,
    /// Refit after this many new vectors (0: never refit).
    pub refit_every: usize,
    /// An episode still open after this many windows is taken as the service's new normal:
    /// the model is refitted on its recent vectors, anomalous ones included, and the
    /// episode closes (0: never). Without it a lasting shift that no repair undoes (memory
    /// the allocator keeps after a leak is stopped) keeps the episode open for good, and
    /// the learned detector sees no other fault on that instance.
    pub max_episode: u32,
    /// Windows per vector: 1 scores each window alone; L appends the L-1 previous ones.
    pub lags: usize,
    /// Windows per season (a day of windows for a daily cycle); 0: no seasonal
    /// adjustment. When set, each metric is judged as its difference from its median at the
    /// same point of the last `seasons` seasons, and scoring starts one season after the
    /// first window (the history is kept in memory, not in the stored model).
    pub season: usize,
    /// Past seasons whose median is the expected value (with fewer available, those there are).
    pub seasons: usize,
    /// Windows whose scores are averaged into the level judged against the threshold
    /// (geometric mean of `1 + score`): 1 judges each window alone; more lets a sustained
    /// shift stand out of the noise and damps a lone spike. The threshold is calibrated on
    /// the baseline's levels, smoothed the same way.
    pub smooth: usize,
    /// Features the learned model leaves to the rules (binary or counters).
    pub ignore_features: Vec<String>,
}

impl Default for LearnedConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            baseline: 300,
            warmup: 30,
            history: 3600,
            variance_kept: 0.95,
            max_components: 8,
            threshold_quantile: 0.995,
            threshold_multiplier: 1.5,
            k: 3,
            n: 5,
            refit_every: 600,
            max_episode: 600,
            lags: 1,
            season: 0,
            seasons: 7,
            smooth: 1,
            ignore_features: vec![
                feature::HEALTH_OK.to_string(),
                feature::SCRAPE_OK.to_string(),
                feature::RESTARTS.to_string(),
            ],
        }
    }
}

impl LearnedConfig {
    /// Checks every key; the error names the bad one.
    pub fn validate(&self, section: &str) -> Result<(), String> {
        let bad = |key: &str, why: &str| Err(format!("{section}.{key}: {why}"));
        if self.baseline < 10 {
            return bad("baseline", "must be at least 10 vectors");
        }
        if self.warmup != 0 && (self.warmup < 10 || self.warmup > self.baseline) {
            return bad("warmup", "must be 0 (off) or 10..=baseline vectors");
        }
        if self.history < self.baseline {
            return bad("history", "must be at least `baseline`");
        }
        if !(self.variance_kept > 0.0 && self.variance_kept < 1.0) {
            return bad("variance_kept", "must be between 0 and 1 (exclusive)");
        }
        if !(self.threshold_quantile > 0.0 && self.threshold_quantile < 1.0) {
            return bad("threshold_quantile", "must be between 0 and 1 (exclusive)");
        }
        if !(self.threshold_multiplier >= 1.0 && self.threshold_multiplier.is_finite()) {
            return bad("threshold_multiplier", "must be a finite number >= 1");
        }
        if self.n == 0 || self.n > 64 {
            return bad("n", "must be 1..=64");
        }
        if self.k == 0 || self.k > self.n {
            return bad("k", "must be 1..=n");
        }
        if self.lags == 0 || self.lags > 64 {
            return bad("lags", "must be 1..=64");
        }
        if self.smooth == 0 || self.smooth > MAX_SMOOTH {
            return bad("smooth", "must be 1..=64");
        }
        if self.seasons == 0 || self.seasons > MAX_SEASONS {
            return bad("seasons", "must be 1..=64");
        }
        if self.season.saturating_mul(self.seasons) > MAX_SEASONAL_WINDOWS {
            return bad(
                "season",
                "season x seasons must be at most 1 000 000 windows (kept in memory per instance)",
            );
        }
        Ok(())
    }

    /// Windows a series takes before its first vector: the lag window, then a season.
    pub fn windows_before_first_vector(&self) -> usize {
        self.lags.saturating_sub(1) + self.season
    }
}

/// The most windows [`LearnedConfig::smooth`] may average.
pub const MAX_SMOOTH: usize = 64;

/// Upper bound on `seasons`.
pub const MAX_SEASONS: usize = 64;
/// Upper bound on the windows a [`Seasonal`](super::Seasonal) keeps (`season x seasons`).
pub const MAX_SEASONAL_WINDOWS: usize = 1_000_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_keys_are_named() {
        let config = LearnedConfig {
            k: 6,
            n: 5,
            ..Default::default()
        };
        assert!(config
            .validate("learned")
            .expect_err("k > n")
            .contains("learned.k"));
        let config = LearnedConfig {
            variance_kept: 1.5,
            ..Default::default()
        };
        assert!(config
            .validate("learned")
            .expect_err("bad variance")
            .contains("learned.variance_kept"));
    }
}
