//! Test fixtures for the baseline's unit tests: a seeded noise source, the columns and
//! normal traffic of a small service, and a model fitted on it.

use immune_nats::feature;

use super::{LearnedConfig, Model};

/// A deterministic pseudo-random stream (xorshift), so tests need no dependency.
pub(super) use immune_testkit::Noise;

pub(super) fn names() -> Vec<String> {
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
pub(super) fn normal(noise: &mut Noise) -> Vec<f64> {
    let load = 50.0 + 10.0 * noise.centred();
    vec![
        load,
        (0.002 * noise.centred()).abs(),
        5.0 + 0.05 * load + noise.centred(),
        20.0 + 0.2 * load + 2.0 * noise.centred(),
    ]
}

pub(super) fn fitted(config: &LearnedConfig) -> (Model, Noise) {
    let mut noise = Noise::seeded(7);
    let rows: Vec<Vec<f64>> = (0..600).map(|_| normal(&mut noise)).collect();
    let refs: Vec<&[f64]> = rows.iter().map(Vec::as_slice).collect();
    (Model::fit(names(), &refs, config).expect("fits"), noise)
}
