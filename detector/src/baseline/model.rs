//! [`Model`]: a fitted baseline. Robust standardisation of each column, PCA on the
//! standardised baseline, and the score of a vector: its squared prediction error (SPE, what
//! the retained components cannot explain) plus its Hotelling T² (how far it lies inside the
//! retained subspace), each divided by its baseline mean. Scoring is allocation-free.

use ndarray::Array2;
use serde::{Deserialize, Serialize};

use super::pca::fit_pca;
use super::robust::robust_stats;
use super::{LearnedConfig, MAX_SMOOTH};

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

/// The lowest variance of a retained component, in robust deviations squared (a standard
/// deviation of about a third of one): along a direction the baseline hardly moved in, a
/// fraction of one deviation (a restarted process holding 0.7 MB more) made T² explode.
pub const MIN_COMPONENT_VARIANCE: f64 = 0.1;

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
    /// Windows averaged into the judged level ([`Smoother`](super::Smoother)); the threshold
    /// is on that level. Models stored before it existed judged each window alone.
    #[serde(default = "one")]
    pub smooth: usize,
    /// Vectors the model was fitted on.
    pub fitted_on: usize,
}

fn one() -> usize {
    1
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
    pub(super) z: Vec<f64>,
    pub(super) t: Vec<f64>,
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::fixtures::{fitted, normal, Noise};
    use immune_nats::feature;

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
        let mut noise = Noise::seeded(13);
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
                    2.5 + 0.01 * noise.centred(),
                    0.008 + 0.0005 * noise.centred(),
                    1_048_576.0 + 8192.0 * noise.centred().round(),
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
        let mut noise = Noise::seeded(11);
        let columns = vec![
            feature::REQUEST_RATE.to_string(),
            feature::MEMORY_BYTES.to_string(),
        ];
        let rows: Vec<Vec<f64>> = (0..600)
            .map(|_| vec![20.0 + 2.0 * noise.centred(), 905_216.0])
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
}
