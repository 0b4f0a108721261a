//! Learned detection: what "normal" looks like for one service, and how far a vector is from it.
//!
//! - [`Model`]: robust standardisation (median, MAD) and PCA fitted with linfa-reduction on a
//!   baseline of normal vectors. A vector's score adds its reconstruction error (squared
//!   prediction error, SPE: what the retained components cannot explain) and Hotelling's T²
//!   (how far it lies inside the retained subspace), each divided by its baseline mean. The
//!   threshold is a quantile of the baseline's own scores times a margin: no labels.
//! - [`Learner`]: keeps recent vectors, fits once the baseline is long enough, refits every
//!   `refit_every` vectors on the vectors that were judged normal: the windows of an open
//!   episode are left out, so an incident does not become the new normal; a window that only
//!   crossed the threshold, with no episode, stays in, as the threshold's quantile is taken
//!   from that tail (leaving it out lowered the threshold at each refit).
//! - [`Smoother`]: the level judged against the threshold is the geometric mean of the last
//!   `smooth` scores (1: each window alone), so a sustained shift stands out of the noise.
//! - [`Hysteresis`]: k exceedances among the last n windows open an episode, n quiet windows
//!   close it, so one noisy point does not open an incident.
//! - [`Lags`]: appends the previous windows to a vector, so a single series (NAB) has shape
//!   to learn, and temporal anomalies show in multivariate data.
//! - [`Seasonal`] (off unless `season` is set): each metric minus its median at the same
//!   point of the last `seasons` seasons (the same time on each of the last seven days), so
//!   a daily cycle is not learned as variance and a fault shows against its time of day.
//! - [`Model::explain`] and [`classify`]: which metrics moved, which way, and what kind of
//!   trouble that is.
//!
//! Pure: no I/O, no clock. Scoring is allocation-free ([`Model::score`] writes into a
//! [`Scratch`]); fitting and explaining allocate.

use std::collections::VecDeque;

use immune_nats::{feature, Contribution, Direction, Signature};
use linfa::traits::Fit;
use linfa::DatasetBase;
use linfa_reduction::Pca;
use ndarray::Array2;
use serde::{Deserialize, Serialize};

/// How the learned detector learns and judges. `[learned]` in `detector.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LearnedConfig {
    /// Learn and score at all.
    pub enabled: bool,
    /// Vectors of normal behaviour needed before the first fit (the warm-up).
    pub baseline: usize,
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

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FitError {
    #[error("{have} vectors are not enough to fit (need {need})")]
    NotEnoughVectors { have: usize, need: usize },
    #[error("no features to learn from")]
    NoFeatures,
    #[error("PCA failed: {0}")]
    Pca(String),
}

impl FitError {
    pub fn kind(&self) -> &'static str {
        match self {
            FitError::NotEnoughVectors { .. } => "not_enough_vectors",
            FitError::NoFeatures => "no_features",
            FitError::Pca(_) => "pca",
        }
    }
}

/// The most windows [`LearnedConfig::smooth`] may average.
pub const MAX_SMOOTH: usize = 64;
/// The lowest threshold: a score of one, what one robust deviation (of at least the metric's
/// operational floor) off the retained subspace scores when the baseline is quiet.
pub const MIN_THRESHOLD: f64 = 1.0;
/// The lowest variance of a retained component, in robust deviations squared (a standard
/// deviation of about a third of one): along a direction the baseline hardly moved in, a
/// fraction of one deviation (a restarted process holding 0.7 MB more) made T² explode.
pub const MIN_COMPONENT_VARIANCE: f64 = 0.1;
/// Upper bound on `seasons`.
pub const MAX_SEASONS: usize = 64;
/// Upper bound on the windows a [`Seasonal`] keeps (`season x seasons`).
pub const MAX_SEASONAL_WINDOWS: usize = 1_000_000;

/// A fitted baseline. Serialisable: this is the snapshot kept in the key-value bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// Column names: base features, then `name@lag1`, `name@lag2`, ... when lagged.
    pub columns: Vec<String>,
    /// Robust centre (median) of each column, in the metric's own unit.
    pub median: Vec<f64>,
    /// Robust scale of each column (1.4826 MAD, with floors).
    pub scale: Vec<f64>,
    /// Mean of the standardised baseline, subtracted before projecting.
    pub mean: Vec<f64>,
    /// Retained components, row-major `k x d`.
    pub components: Vec<f64>,
    /// Variance of the baseline along each retained component.
    pub variances: Vec<f64>,
    /// Baseline means of SPE and T², the units of the combined score.
    pub spe_unit: f64,
    pub t2_unit: f64,
    pub threshold: f64,
    /// Windows averaged into the judged level ([`Smoother`]); the threshold is on that level.
    /// Models stored before it existed judged each window alone.
    #[serde(default = "one")]
    pub smooth: usize,
    /// Vectors the model was fitted on.
    pub fitted_on: usize,
}

fn one() -> usize {
    1
}

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

/// The parts of one score.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Score {
    pub spe: f64,
    pub t2: f64,
    /// `spe / spe_unit + t2 / t2_unit`; anomalous above [`Model::threshold`].
    pub score: f64,
}

/// Work buffers for [`Model::score`], reused so the hot path does not allocate.
#[derive(Debug, Clone, Default)]
pub struct Scratch {
    z: Vec<f64>,
    t: Vec<f64>,
}

fn median_of(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        0.5 * (values[n / 2 - 1] + values[n / 2])
    }
}

/// The `q` quantile (linear interpolation) of `values`, which it sorts.
pub fn quantile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (values.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    values[lo] + (values[hi] - values[lo]) * (pos - lo as f64)
}

/// Median and robust scale of one column. The scale falls back to the mean absolute
/// deviation when most values are equal (MAD 0), and never goes below 1% of the level, so a
/// feature that is flat in the baseline (error ratio 0) does not turn every wiggle into an
/// anomaly, yet a real move still stands out.
fn robust_stats(column: &mut [f64], name: &str) -> (f64, f64) {
    let median = median_of(column);
    let mean_abs = column.iter().map(|v| (v - median).abs()).sum::<f64>() / column.len() as f64;
    let mut dev: Vec<f64> = column.iter().map(|v| (v - median).abs()).collect();
    let mad = median_of(&mut dev);
    let floor = (0.01 * (1.0 + median.abs())).max(operational_floor(name, median));
    (median, (1.4826 * mad).max(1.2533 * mean_abs).max(floor))
}

/// The smallest move of a collector feature that matters to an operator, as a scale: a
/// flat baseline must not turn an irrelevant change into many robust deviations (a
/// restarted process holding 1 MB more memory, a millisecond of probe jitter on a busy
/// host), while a fault still stands out by far (a leak of MiB a second, a core burned, an
/// error ratio of 0.5, hundreds of milliseconds of latency). Other columns (the datasets'
/// `value`) keep the relative floor alone.
fn operational_floor(column: &str, median: f64) -> f64 {
    use immune_nats::feature;
    let base = column.split('@').next().unwrap_or(column);
    let level = median.abs();
    match base {
        feature::MEMORY_BYTES => (4.0 * 1024.0 * 1024.0_f64).max(0.05 * level),
        feature::CPU_CORES => 0.02,
        feature::LATENCY_P50_MS
        | feature::LATENCY_P95_MS
        | feature::LATENCY_P99_MS
        | feature::PROBE_LATENCY_MS => 1.0_f64.max(0.05 * level),
        feature::ERROR_RATIO | feature::MEMORY_RATIO => 0.01,
        feature::REQUEST_RATE | feature::REJECTED_RATE | feature::IN_FLIGHT => {
            0.5_f64.max(0.05 * level)
        }
        _ => 0.0,
    }
}

/// linfa-reduction's PCA with `most` components, then fewer when the baseline has a lower
/// rank than asked for. Its iterative SVD can panic on such data instead of returning an
/// error, so the panic is caught here: a bad baseline must not take the detector down.
fn fit_pca(data: &Array2<f64>, most: usize) -> Option<Pca<f64>> {
    let mut k = most;
    while k > 0 {
        let dataset = DatasetBase::from(data.clone());
        match quietly(|| Pca::params(k).fit(&dataset)) {
            Ok(Ok(pca)) => {
                let finite = pca.singular_values().iter().all(|v| v.is_finite())
                    && pca.components().iter().all(|v| v.is_finite());
                if finite {
                    return Some(pca);
                }
                tracing::debug!(
                    components = k,
                    "PCA gave non-finite values; fewer components"
                );
            }
            Ok(Err(e)) => {
                tracing::debug!(components = k, error = %e, "PCA failed; fewer components")
            }
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::debug!(components = k, panic = %message, "PCA panicked; fewer components");
            }
        }
        k /= 2;
    }
    None
}

thread_local! {
    /// Set while [`quietly`] runs: the panic hook stays silent on this thread.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, catching a panic without the default hook printing it (and its backtrace) to
/// stderr: the caller handles the failure and logs it. Panics elsewhere print as before.
fn quietly<R>(f: impl FnOnce() -> R) -> std::thread::Result<R> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(std::cell::Cell::get) {
                previous(info);
            }
        }));
    });
    QUIET.with(|q| q.set(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.with(|q| q.set(false));
    result
}

impl Model {
    /// Fits on `rows` (each `columns.len()` long; NaN means "not measured" and is read as the
    /// column's median).
    pub fn fit(
        columns: Vec<String>,
        rows: &[&[f64]],
        config: &LearnedConfig,
    ) -> Result<Model, FitError> {
        let d = columns.len();
        if d == 0 {
            return Err(FitError::NoFeatures);
        }
        let n = rows.len();
        let need = 10.max(d + 2);
        if n < need {
            return Err(FitError::NotEnoughVectors { have: n, need });
        }
        let mut median = Vec::with_capacity(d);
        let mut scale = Vec::with_capacity(d);
        let mut column = Vec::with_capacity(n);
        for j in 0..d {
            column.clear();
            column.extend(rows.iter().map(|r| r[j]).filter(|v| v.is_finite()));
            if column.is_empty() {
                column.push(0.0);
            }
            let (m, s) = robust_stats(&mut column, &columns[j]);
            median.push(m);
            scale.push(s);
        }
        let standardised = Array2::from_shape_fn((n, d), |(i, j)| {
            let v = rows[i][j];
            if v.is_finite() {
                (v - median[j]) / scale[j]
            } else {
                0.0
            }
        });
        let mean: Vec<f64> = (0..d)
            .map(|j| standardised.column(j).sum() / n as f64)
            .collect();
        let total_variance: f64 = (0..d)
            .map(|j| {
                standardised
                    .column(j)
                    .iter()
                    .map(|v| (v - mean[j]).powi(2))
                    .sum::<f64>()
                    / (n - 1) as f64
            })
            .sum();
        // Leave at least one dimension to the residual: an SPE of zero explains nothing.
        let most = config.max_components.min(d.saturating_sub(1));
        let (mut components, mut variances) = (Vec::new(), Vec::new());
        if most > 0 && total_variance > 1e-12 {
            if let Some(pca) = fit_pca(&standardised, most) {
                let sigma = pca.singular_values();
                let mut explained = 0.0;
                for (i, s) in sigma.iter().enumerate() {
                    let variance = s * s / (n - 1) as f64;
                    if explained / total_variance >= config.variance_kept {
                        break;
                    }
                    explained += variance;
                    // A component with (almost) no variance would make T² explode on noise.
                    variances.push(variance.max(MIN_COMPONENT_VARIANCE));
                    components.extend(pca.components().row(i).iter().copied());
                }
            }
            // else: no usable subspace (rank-deficient baseline); the score is the residual
            // alone, which is still the squared robust distance from normal.
        }
        let mut model = Model {
            columns,
            median,
            scale,
            mean,
            components,
            variances,
            spe_unit: 1.0,
            t2_unit: 1.0,
            threshold: f64::INFINITY,
            smooth: config.smooth.clamp(1, MAX_SMOOTH),
            fitted_on: n,
        };
        model.calibrate(rows, config);
        Ok(model)
    }

    /// Sets the score units and the threshold from the baseline's own levels (its scores,
    /// smoothed in order as a series is judged).
    fn calibrate(&mut self, rows: &[&[f64]], config: &LearnedConfig) {
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

    pub fn dims(&self) -> usize {
        self.columns.len()
    }

    pub fn retained(&self) -> usize {
        self.variances.len()
    }

    /// Scores one vector (`dims()` long, NaN = not measured). Allocation-free once `scratch`
    /// has grown to size.
    pub fn score(&self, x: &[f64], scratch: &mut Scratch) -> Score {
        let d = self.dims();
        let k = self.retained();
        scratch.z.resize(d, 0.0);
        scratch.t.resize(k, 0.0);
        for (j, (z, v)) in scratch.z.iter_mut().zip(&x[..d]).enumerate() {
            *z = if v.is_finite() {
                (v - self.median[j]) / self.scale[j] - self.mean[j]
            } else {
                0.0
            };
        }
        let mut t2 = 0.0;
        for i in 0..k {
            let row = &self.components[i * d..(i + 1) * d];
            let t: f64 = row.iter().zip(&scratch.z).map(|(p, z)| p * z).sum();
            scratch.t[i] = t;
            t2 += t * t / self.variances[i];
        }
        let mut spe = 0.0;
        for j in 0..d {
            let mut reconstructed = 0.0;
            for i in 0..k {
                reconstructed += self.components[i * d + j] * scratch.t[i];
            }
            let r = scratch.z[j] - reconstructed;
            spe += r * r;
        }
        Score {
            spe,
            t2,
            score: spe / self.spe_unit + t2 / self.t2_unit,
        }
    }

    /// Why `x` scored as it did: each base metric's share of the score (residual and T²
    /// parts, lags folded into their metric), its value, the baseline median, and which way
    /// it moved. Largest share first; shares sum to 1.
    pub fn explain(&self, x: &[f64]) -> Vec<Contribution> {
        let mut scratch = Scratch::default();
        self.score(x, &mut scratch);
        let d = self.dims();
        let k = self.retained();
        let mut parts = vec![0.0; d];
        for (j, part) in parts.iter_mut().enumerate() {
            let mut reconstructed = 0.0;
            let mut t2_part = 0.0;
            for i in 0..k {
                let p = self.components[i * d + j];
                reconstructed += p * scratch.t[i];
                t2_part += scratch.t[i] / self.variances[i] * p * scratch.z[j];
            }
            let r = scratch.z[j] - reconstructed;
            *part = r * r / self.spe_unit + t2_part.max(0.0) / self.t2_unit;
        }
        let total: f64 = parts.iter().sum::<f64>().max(1e-12);
        let mut by_metric: Vec<Contribution> = Vec::new();
        for (j, column) in self.columns.iter().enumerate() {
            let base = column.split('@').next().unwrap_or(column);
            let share = parts[j] / total;
            match by_metric.iter_mut().find(|c| c.metric == base) {
                Some(c) => c.share += share,
                None => {
                    let value = if x[j].is_finite() {
                        x[j]
                    } else {
                        self.median[j]
                    };
                    by_metric.push(Contribution {
                        metric: base.to_string(),
                        value,
                        expected: self.median[j],
                        share,
                        direction: if value >= self.median[j] {
                            Direction::Up
                        } else {
                            Direction::Down
                        },
                    })
                }
            }
        }
        by_metric.sort_by(|a, b| b.share.total_cmp(&a.share));
        by_metric
    }

    /// How many robust scales `value` of column `j` is from its median.
    fn deviation(&self, contribution: &Contribution) -> f64 {
        self.columns
            .iter()
            .position(|c| *c == contribution.metric)
            .map_or(0.0, |j| {
                (contribution.value - self.median[j]) / self.scale[j]
            })
    }
}

/// Names the kind of trouble from the explanation. A metric counts when it carries at least
/// 10% of the score and moved at least 3 robust scales; errors outrank latency (errors
/// usually bring latency with them), latency outranks resources, traffic comes last.
pub fn classify(model: &Model, contributions: &[Contribution]) -> Signature {
    let moved = |name: &str, direction: Direction| {
        contributions.iter().any(|c| {
            c.share >= 0.10
                && c.direction == direction
                && c.metric == name
                && model.deviation(c).abs() >= 3.0
        })
    };
    let latency = [
        feature::LATENCY_P50_MS,
        feature::LATENCY_P95_MS,
        feature::LATENCY_P99_MS,
        feature::PROBE_LATENCY_MS,
    ];
    if moved(feature::ERROR_RATIO, Direction::Up) {
        Signature::ErrorsUp
    } else if moved(feature::REJECTED_RATE, Direction::Up) {
        Signature::AttackBurst
    } else if latency.iter().any(|m| moved(m, Direction::Up)) {
        Signature::LatencyUp
    } else if moved(feature::CPU_CORES, Direction::Up)
        || moved(feature::MEMORY_BYTES, Direction::Up)
    {
        Signature::ResourceExhaustion
    } else if moved(feature::REQUEST_RATE, Direction::Down) {
        Signature::TrafficDrop
    } else {
        Signature::Unknown
    }
}

/// k of the last n windows above the threshold open an episode; n quiet windows close it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hysteresis {
    k: u32,
    n: u32,
    window: u64,
    open: bool,
}

/// What one window did to the episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Opened,
    Closed,
    /// Closed after `max_episode` windows: the shift was taken as the new normal.
    Accepted,
    Unchanged,
}

impl Hysteresis {
    pub fn new(k: u32, n: u32) -> Self {
        let n = n.clamp(1, 64);
        Self {
            k: k.clamp(1, n),
            n,
            window: 0,
            open: false,
        }
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    /// An episode opened before (by an earlier life of the detector): it closes after n
    /// quiet windows, as if every recent window had been over the threshold.
    pub fn reopen(&mut self) {
        self.open = true;
        self.window = self.mask();
    }

    fn mask(&self) -> u64 {
        if self.n == 64 {
            u64::MAX
        } else {
            (1u64 << self.n) - 1
        }
    }

    /// Ends the episode now, as if the last n windows had been quiet.
    pub fn close(&mut self) {
        self.open = false;
        self.window = 0;
    }

    pub fn push(&mut self, exceeds: bool) -> Transition {
        self.window = ((self.window << 1) | u64::from(exceeds)) & self.mask();
        let count = self.window.count_ones();
        if !self.open && count >= self.k {
            self.open = true;
            Transition::Opened
        } else if self.open && count == 0 {
            self.open = false;
            Transition::Closed
        } else {
            Transition::Unchanged
        }
    }
}

/// Appends the previous `lags - 1` windows to each vector.
#[derive(Debug, Clone, Default)]
pub struct Lags {
    lags: usize,
    past: VecDeque<Vec<f64>>,
    out: Vec<f64>,
}

impl Lags {
    pub fn new(lags: usize) -> Self {
        Self {
            lags: lags.max(1),
            past: VecDeque::new(),
            out: Vec::new(),
        }
    }

    /// Column names of the lagged vector built from `base` names.
    pub fn columns(&self, base: &[String]) -> Vec<String> {
        let mut columns = base.to_vec();
        for lag in 1..self.lags {
            columns.extend(base.iter().map(|b| format!("{b}@lag{lag}")));
        }
        columns
    }

    /// The lagged vector for `current`, or `None` until enough windows were seen.
    pub fn push(&mut self, current: &[f64]) -> Option<&[f64]> {
        if self.lags == 1 {
            self.out.clear();
            self.out.extend_from_slice(current);
            return Some(&self.out);
        }
        // the current window plus the lags - 1 before it, newest first
        let mut slot = if self.past.len() == self.lags {
            self.past.pop_back().unwrap_or_default()
        } else {
            Vec::new()
        };
        slot.clear();
        slot.extend_from_slice(current);
        self.past.push_front(slot);
        if self.past.len() < self.lags {
            return None;
        }
        self.out.clear();
        for window in &self.past {
            self.out.extend_from_slice(window);
        }
        Some(&self.out)
    }
}

/// What the learner said about one vector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judgement {
    pub score: Score,
    /// What is compared with the threshold: the score smoothed over the model's `smooth`
    /// windows ([`Smoother`]); the score itself when `smooth` is 1.
    pub level: f64,
    pub threshold: f64,
    /// `level > threshold`.
    pub exceeds: bool,
}

/// What happened to the model while learning from one vector.
#[derive(Debug, Clone, PartialEq)]
pub enum Learned {
    Nothing,
    /// The first fit (end of warm-up) or a refit.
    Fitted {
        refit: bool,
    },
    Failed(FitError),
}

/// One service's model and the recent vectors it is refitted from.
#[derive(Debug, Clone)]
pub struct Learner {
    config: LearnedConfig,
    columns: Vec<String>,
    model: Option<Model>,
    /// Recent vectors, each with whether it was judged normal.
    history: VecDeque<(Vec<f64>, bool)>,
    since_fit: usize,
    scratch: Scratch,
}

impl Learner {
    pub fn new(columns: Vec<String>, config: LearnedConfig) -> Self {
        Self {
            config,
            columns,
            model: None,
            history: VecDeque::new(),
            since_fit: 0,
            scratch: Scratch::default(),
        }
    }

    /// Resumes from a stored model: scoring starts at once, no warm-up.
    pub fn resume(model: Model, config: LearnedConfig) -> Self {
        let mut learner = Self::new(model.columns.clone(), config);
        learner.model = Some(model);
        learner
    }

    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    pub fn model(&self) -> Option<&Model> {
        self.model.as_ref()
    }

    /// Scores `x` against the current model and judges the level of its series, which
    /// `smoother` keeps (`None` during warm-up).
    pub fn judge(&mut self, x: &[f64], smoother: &mut Smoother) -> Option<Judgement> {
        let model = self.model.as_ref()?;
        let score = model.score(x, &mut self.scratch);
        let level = smoother.push(score.score, model.smooth);
        Some(Judgement {
            score,
            level,
            threshold: model.threshold,
            exceeds: level > model.threshold,
        })
    }

    /// Keeps `x` for later fits (`normal` = it may be learned from) and fits when it is time.
    pub fn learn(&mut self, x: &[f64], normal: bool) -> Learned {
        if self.history.len() == self.config.history.max(1) {
            if let Some((mut old, _)) = self.history.pop_front() {
                old.clear();
                old.extend_from_slice(x);
                self.history.push_back((old, normal));
            }
        } else {
            self.history.push_back((x.to_vec(), normal));
        }
        self.since_fit += 1;
        let due = match self.model {
            None => self.normal_count() >= self.config.baseline,
            Some(_) => self.config.refit_every > 0 && self.since_fit >= self.config.refit_every,
        };
        if !due {
            return Learned::Nothing;
        }
        let refit = self.model.is_some();
        match self.refit() {
            Ok(()) => Learned::Fitted { refit },
            Err(e) => Learned::Failed(e),
        }
    }

    fn normal_count(&self) -> usize {
        self.history.iter().filter(|(_, normal)| *normal).count()
    }

    /// Takes the last `recent` vectors of the history as normal (a lasting shift accepted)
    /// and refits on the normal vectors now.
    pub fn accept_recent(&mut self, recent: usize) -> Result<(), FitError> {
        for (_, normal) in self.history.iter_mut().rev().take(recent) {
            *normal = true;
        }
        self.refit()
    }

    /// Fits on the normal vectors in the history, now.
    pub fn refit(&mut self) -> Result<(), FitError> {
        self.since_fit = 0;
        let rows: Vec<&[f64]> = self
            .history
            .iter()
            .filter(|(_, normal)| *normal)
            .map(|(v, _)| v.as_slice())
            .collect();
        let model = Model::fit(self.columns.clone(), &rows, &self.config)?;
        self.model = Some(model);
        Ok(())
    }
}

/// One scored series (an instance, a NAB file, an ASD server): its lag window and episode
/// state. The model it is judged by may be shared ([`Learner`] per service).
#[derive(Debug, Clone)]
pub struct Track {
    seasonal: Seasonal,
    lags: Lags,
    smoother: Smoother,
    hysteresis: Hysteresis,
    /// Windows the current episode has been open.
    open_windows: u32,
    max_episode: u32,
}

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

/// What one window did.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// `None` during warm-up (no model yet, or the lag window is not full).
    pub judgement: Option<Judgement>,
    pub transition: Transition,
    pub learned: Learned,
}

impl Track {
    pub fn new(config: &LearnedConfig) -> Self {
        Self {
            seasonal: Seasonal::new(config.season, config.seasons),
            lags: Lags::new(config.lags),
            smoother: Smoother::default(),
            hysteresis: Hysteresis::new(config.k, config.n),
            open_windows: 0,
            max_episode: config.max_episode,
        }
    }

    pub fn lags(&self) -> &Lags {
        &self.lags
    }

    pub fn is_open(&self) -> bool {
        self.hysteresis.is_open()
    }

    /// Takes back an episode opened by an earlier life of the detector.
    pub fn reopen(&mut self) {
        self.hysteresis.reopen();
    }

    /// The vector last built (lags included), for explanations.
    pub fn last_vector(&self) -> &[f64] {
        &self.lags.out
    }

    /// Judges one window, moves the episode, and learns from it when it looked normal.
    pub fn step(&mut self, learner: &mut Learner, window: &[f64]) -> Step {
        let Some(x) = self
            .seasonal
            .push(window)
            .and_then(|adjusted| self.lags.push(adjusted))
        else {
            return Step {
                judgement: None,
                transition: Transition::Unchanged,
                learned: Learned::Nothing,
            };
        };
        let judgement = learner.judge(x, &mut self.smoother);
        let transition = match judgement {
            Some(j) => self.hysteresis.push(j.exceeds),
            None => Transition::Unchanged,
        };
        // Only an episode is left out of later fits: a lone exceedance is the normal tail
        // the next threshold is calibrated on.
        let normal = !self.hysteresis.is_open();
        let mut learned = learner.learn(x, normal);
        self.open_windows = if self.hysteresis.is_open() {
            self.open_windows.saturating_add(1)
        } else {
            0
        };
        let mut transition = transition;
        if self.max_episode > 0 && self.open_windows >= self.max_episode {
            // A shift this lasting is the service's new normal: learn it, end the episode.
            self.hysteresis.close();
            self.open_windows = 0;
            self.smoother = Smoother::default();
            transition = Transition::Accepted;
            learned = match learner.accept_recent(self.max_episode as usize) {
                Ok(()) => Learned::Fitted { refit: true },
                Err(e) => Learned::Failed(e),
            };
        }
        Step {
            judgement,
            transition,
            learned,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random stream (xorshift), so tests need no dependency.
    struct Noise(u64);
    impl Noise {
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        }
    }

    fn names() -> Vec<String> {
        [
            feature::REQUEST_RATE,
            feature::ERROR_RATIO,
            feature::LATENCY_P50_MS,
            feature::LATENCY_P99_MS,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Normal traffic: latency follows load, errors near zero.
    fn normal(noise: &mut Noise) -> Vec<f64> {
        let load = 50.0 + 10.0 * noise.next();
        vec![
            load,
            (0.002 * noise.next()).abs(),
            5.0 + 0.05 * load + noise.next(),
            20.0 + 0.2 * load + 2.0 * noise.next(),
        ]
    }

    fn fitted(config: &LearnedConfig) -> (Model, Noise) {
        let mut noise = Noise(7);
        let rows: Vec<Vec<f64>> = (0..600).map(|_| normal(&mut noise)).collect();
        let refs: Vec<&[f64]> = rows.iter().map(Vec::as_slice).collect();
        (Model::fit(names(), &refs, config).expect("fits"), noise)
    }

    #[test]
    fn a_shift_that_lasts_max_episode_windows_becomes_the_new_normal() {
        let config = LearnedConfig {
            baseline: 200,
            history: 1000,
            refit_every: 0,
            max_episode: 50,
            ..Default::default()
        };
        let mut noise = Noise(5);
        let mut learner = Learner::new(names(), config.clone());
        let mut track = Track::new(&config);
        for _ in 0..200 {
            track.step(&mut learner, &normal(&mut noise));
        }
        assert!(learner.model().is_some());
        // p99 latency twice as high from now on, for good.
        let shifted = |noise: &mut Noise| {
            let mut x = normal(noise);
            x[3] *= 2.0;
            x
        };
        let transitions: Vec<Transition> = (0..60)
            .map(|_| track.step(&mut learner, &shifted(&mut noise)).transition)
            .collect();
        let opened = transitions
            .iter()
            .position(|t| *t == Transition::Opened)
            .expect("the shift opens an episode");
        let accepted = transitions
            .iter()
            .position(|t| *t == Transition::Accepted)
            .expect("and is accepted");
        assert_eq!(
            accepted - opened + 1,
            50,
            "accepted in its 50th open window (the opening one counts)"
        );
        assert!(!track.is_open());
        // The new level is normal now: no episode opens on it.
        let reopened = (0..200)
            .filter(|_| {
                track.step(&mut learner, &shifted(&mut noise)).transition == Transition::Opened
            })
            .count();
        assert_eq!(reopened, 0);

        // max_episode 0: the episode stays open.
        let never = LearnedConfig {
            max_episode: 0,
            ..config
        };
        let mut learner = Learner::new(names(), never.clone());
        let mut track = Track::new(&never);
        for _ in 0..200 {
            track.step(&mut learner, &normal(&mut noise));
        }
        for _ in 0..300 {
            track.step(&mut learner, &shifted(&mut noise));
        }
        assert!(
            track.is_open(),
            "without the guard the shift is never learned"
        );
    }

    #[test]
    fn a_caught_panic_is_returned_and_the_hook_is_quiet_only_inside() {
        let caught = quietly(|| -> u32 { panic!("linfa gave up") });
        let payload = caught.expect_err("the panic is returned");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"linfa gave up"));
        assert!(!QUIET.with(std::cell::Cell::get), "quiet only inside");
        assert_eq!(quietly(|| 3).expect("no panic"), 3);
    }

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
        // One window of 15% more p99 latency among normal ones: its own score is well over
        // the threshold, its level is not. (A far larger spike still carries the level: the
        // mean is geometric, not a median.)
        let mut spike = normal(&mut noise);
        spike[3] *= 1.15;
        let judged = learner.judge(&spike, &mut series).expect("fitted");
        assert!(judged.score.score > judged.threshold, "{judged:?}");
        assert!(!judged.exceeds, "a lone spike is damped: {judged:?}");
        // The same shift, sustained: over within the smoothing window.
        let sustained = (0..5).any(|_| {
            let mut x = normal(&mut noise);
            x[3] *= 1.15;
            learner.judge(&x, &mut series).expect("fitted").exceeds
        });
        assert!(sustained, "a sustained shift is caught within 5 windows");
    }

    #[test]
    fn normal_vectors_stay_under_the_calibrated_threshold_and_a_fault_does_not() {
        let config = LearnedConfig::default();
        let (model, mut noise) = fitted(&config);
        assert!(model.retained() >= 1 && model.retained() < 4);
        let mut scratch = Scratch::default();
        let over = (0..1000)
            .filter(|_| model.score(&normal(&mut noise), &mut scratch).score > model.threshold)
            .count();
        assert!(
            over <= 10,
            "{over} of 1000 normal vectors over the threshold"
        );
        let mut slow = normal(&mut noise);
        slow[3] *= 10.0;
        assert!(model.score(&slow, &mut scratch).score > 10.0 * model.threshold);
    }

    #[test]
    fn a_quiet_baseline_with_a_memory_jitter_ignores_a_restart_and_catches_faults() {
        // Steady synthetic load: every column almost flat, memory moving by a few pages. The
        // component along memory had next to no variance and the threshold was a fraction of
        // one, so a restart's extra 0.7 MB, a sixth of memory's floor, scored ten times the
        // threshold (seen live: the decider restarted a healthy service for it).
        let mut noise = Noise(13);
        let columns = vec![
            feature::REQUEST_RATE.to_string(),
            feature::LATENCY_P50_MS.to_string(),
            feature::CPU_CORES.to_string(),
            feature::MEMORY_BYTES.to_string(),
        ];
        let rows: Vec<Vec<f64>> = (0..300)
            .map(|_| {
                vec![
                    20.0,
                    2.5 + 0.01 * noise.next(),
                    0.008 + 0.0005 * noise.next(),
                    1_048_576.0 + 8192.0 * noise.next().round(),
                ]
            })
            .collect();
        let refs: Vec<&[f64]> = rows.iter().map(Vec::as_slice).collect();
        let model = Model::fit(columns, &refs, &LearnedConfig::default()).expect("fits");
        let mut scratch = Scratch::default();
        let restarted = model
            .score(&[20.0, 2.5, 0.009, 1_757_184.0], &mut scratch)
            .score;
        assert!(
            restarted < model.threshold,
            "{restarted} over {}",
            model.threshold
        );
        for (fault, x) in [
            ("a leak", [20.0, 2.5, 0.008, 300e6]),
            ("latency", [20.0, 750.0, 0.008, 1_048_576.0]),
            ("a burned core", [20.0, 2.5, 1.0, 1_048_576.0]),
            ("traffic gone", [0.0, 2.5, 0.008, 1_048_576.0]),
        ] {
            let score = model.score(&x, &mut scratch).score;
            assert!(score > 10.0 * model.threshold, "{fault}: {score}");
        }
    }

    /// A process restarted by a repair holds a little more memory than before: an
    /// operator does not care, a leak of hundreds of MiB they do.
    #[test]
    fn a_flat_memory_baseline_ignores_a_megabyte_and_catches_a_leak() {
        let mut noise = Noise(11);
        let columns = vec![
            feature::REQUEST_RATE.to_string(),
            feature::MEMORY_BYTES.to_string(),
        ];
        let rows: Vec<Vec<f64>> = (0..600)
            .map(|_| vec![20.0 + 2.0 * noise.next(), 905_216.0])
            .collect();
        let refs: Vec<&[f64]> = rows.iter().map(Vec::as_slice).collect();
        let model = Model::fit(columns, &refs, &LearnedConfig::default()).expect("fits");
        let mut scratch = Scratch::default();
        let restarted = model.score(&[20.0, 1_740_800.0], &mut scratch).score;
        assert!(
            restarted < model.threshold,
            "{restarted} over {}",
            model.threshold
        );
        let leaking = model.score(&[20.0, 300e6], &mut scratch).score;
        assert!(leaking > 10.0 * model.threshold, "{leaking}");
    }

    #[test]
    fn the_explanation_names_the_metric_that_moved_and_its_direction() {
        let config = LearnedConfig::default();
        let (model, mut noise) = fitted(&config);
        let mut slow = normal(&mut noise);
        slow[3] = 400.0;
        let why = model.explain(&slow);
        assert_eq!(why[0].metric, feature::LATENCY_P99_MS);
        assert_eq!(why[0].direction, Direction::Up);
        assert!(why[0].share > 0.5, "{why:?}");
        assert!((why.iter().map(|c| c.share).sum::<f64>() - 1.0).abs() < 1e-9);
        assert_eq!(classify(&model, &why), Signature::LatencyUp);

        let mut quiet = normal(&mut noise);
        quiet[0] = 2.0; // traffic fell away, latency follows it down a little
        quiet[2] = 5.1;
        quiet[3] = 20.4;
        let why = model.explain(&quiet);
        assert_eq!(why[0].metric, feature::REQUEST_RATE);
        assert_eq!(why[0].direction, Direction::Down);
        assert_eq!(classify(&model, &why), Signature::TrafficDrop);
    }

    #[test]
    fn signatures_follow_the_metrics_that_moved() {
        let config = LearnedConfig::default();
        let (model, mut noise) = fitted(&config);
        let mut failing = normal(&mut noise);
        failing[1] = 0.4; // errors up, and latency with them
        failing[3] *= 3.0;
        assert_eq!(
            classify(&model, &model.explain(&failing)),
            Signature::ErrorsUp
        );
        let calm = normal(&mut noise);
        assert_eq!(classify(&model, &model.explain(&calm)), Signature::Unknown);
    }

    #[test]
    fn hysteresis_needs_k_of_n_to_open_and_n_quiet_to_close() {
        let mut h = Hysteresis::new(3, 5);
        let steps = [true, false, true, false, false, true, true];
        let got: Vec<Transition> = steps.iter().map(|&e| h.push(e)).collect();
        // two of five is noise, and the first exceedance slides out of the window
        assert_eq!(got[..6], [Transition::Unchanged; 6]);
        assert_eq!(got[6], Transition::Opened, "three of the last five");
        for _ in 0..4 {
            assert_eq!(h.push(false), Transition::Unchanged);
        }
        assert_eq!(h.push(false), Transition::Closed, "five quiet windows");
        let mut single = Hysteresis::new(1, 1);
        assert_eq!(single.push(true), Transition::Opened);
        assert_eq!(single.push(false), Transition::Closed);
    }

    #[test]
    fn a_refit_leaves_out_the_anomalous_windows() {
        let config = LearnedConfig {
            baseline: 200,
            history: 1000,
            refit_every: 400,
            ..Default::default()
        };
        let mut noise = Noise(11);
        let mut learner = Learner::new(names(), config.clone());
        let mut series = Smoother::default();
        for _ in 0..200 {
            let x = normal(&mut noise);
            assert!(
                learner.judge(&x, &mut series).is_none(),
                "no score during warm-up"
            );
            learner.learn(&x, true);
        }
        let first = learner.model().expect("fitted after the baseline").clone();
        // An incident: latency ten times higher for 300 windows, judged anomalous and so left
        // out; then 100 normal windows trigger the refit.
        let mut fired = 0;
        for i in 0..400 {
            let mut x = normal(&mut noise);
            if i < 300 {
                x[3] *= 10.0;
            }
            let judged = learner.judge(&x, &mut series).expect("scored");
            fired += usize::from(judged.exceeds);
            let outcome = learner.learn(&x, !judged.exceeds);
            if i == 399 {
                assert_eq!(outcome, Learned::Fitted { refit: true });
            }
        }
        assert_eq!(fired, 300);
        let refitted = learner.model().expect("refitted");
        assert_eq!(
            refitted.fitted_on, 300,
            "200 + 100 normal, 300 anomalous left out"
        );
        let p99 = 3;
        assert!(
            (refitted.median[p99] - first.median[p99]).abs() < 2.0,
            "the incident did not become normal: median {} vs {}",
            refitted.median[p99],
            first.median[p99]
        );
        let mut slow = normal(&mut noise);
        slow[3] *= 10.0;
        assert!(learner.judge(&slow, &mut series).expect("scored").exceeds);

        // Had the incident been learned from, it would look normal now.
        let mut naive = Learner::new(names(), config);
        let mut noise = Noise(11);
        for i in 0..600 {
            let mut x = normal(&mut noise);
            if (200..500).contains(&i) {
                x[3] *= 10.0;
            }
            naive.learn(&x, true);
        }
        assert!(naive.model().expect("fitted").median[p99] > 100.0);
    }

    #[test]
    fn refits_on_steady_traffic_keep_the_threshold_where_it_was() {
        // Calibrating a refit without the windows that merely exceeded (no episode) cuts off
        // the tail the quantile is taken from: each refit lowered the threshold a little,
        // and a steady service started to alarm after enough refits.
        let config = LearnedConfig {
            baseline: 300,
            history: 1200,
            refit_every: 300,
            max_episode: 0,
            ..Default::default()
        };
        let mut noise = Noise(3);
        let mut learner = Learner::new(names(), config.clone());
        let mut track = Track::new(&config);
        let mut thresholds = Vec::new();
        let mut opened = 0;
        for _ in 0..30_000 {
            // Latency with a long (exponential) tail, as real latency has.
            let mut x = normal(&mut noise);
            x[3] -= 3.0 * (0.5 - noise.next()).ln();
            let step = track.step(&mut learner, &x);
            if matches!(step.learned, Learned::Fitted { .. }) {
                thresholds.push(learner.model().expect("fitted").threshold);
            }
            opened += usize::from(step.transition == Transition::Opened);
        }
        assert_eq!(thresholds.len(), 100);
        let lowest = thresholds.iter().copied().fold(f64::INFINITY, f64::min);
        assert!(
            lowest > 0.5 * thresholds[0],
            "a refit's threshold fell to {lowest:.1} from {:.1}: {thresholds:.1?}",
            thresholds[0]
        );
        assert_eq!(opened, 0, "steady traffic opened {opened} episodes");
    }

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

    #[test]
    fn lags_build_windows_of_the_recent_past() {
        let mut lags = Lags::new(3);
        assert_eq!(lags.columns(&["v".to_string()]), ["v", "v@lag1", "v@lag2"]);
        assert!(lags.push(&[1.0]).is_none());
        assert!(lags.push(&[2.0]).is_none());
        assert_eq!(lags.push(&[3.0]).expect("full"), [3.0, 2.0, 1.0]);
        assert_eq!(lags.push(&[4.0]).expect("full"), [4.0, 3.0, 2.0]);
    }

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
