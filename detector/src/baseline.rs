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
//!
//! Each concept is its own module below; this root re-exports their public items.

mod calibration;
mod config;
mod explain;
#[cfg(test)]
mod fixtures;
mod hysteresis;
mod lags;
mod learner;
mod model;
mod pca;
mod robust;
mod seasonal;
mod smoother;
mod track;

pub use calibration::MIN_THRESHOLD;
pub use config::{LearnedConfig, MAX_SEASONAL_WINDOWS, MAX_SEASONS, MAX_SMOOTH};
pub use explain::{classify, only_the_load_moved};
pub use hysteresis::{Hysteresis, Transition};
pub use lags::Lags;
pub use learner::{Judgement, Learned, Learner};
pub use model::{FitError, Model, Score, Scratch, MIN_COMPONENT_VARIANCE};
pub use robust::quantile;
pub use seasonal::Seasonal;
pub use smoother::Smoother;
pub use track::{Step, Track};
