//! Test fixtures for the rules' unit tests: a snapshot of one instance in a given state, and
//! one refusing requests at a given rate.

use immune_nats::{feature, samples, ContainerState, HealthProbe, MetricSnapshot};

pub(super) fn snapshot(state: ContainerState, healthy: Option<bool>, at: u64) -> MetricSnapshot {
    let mut s = samples::metric_snapshot();
    s.state = state;
    s.observed_ms = at;
    s.health = healthy.map(|ok| HealthProbe {
        ok,
        status: ok.then_some(200),
        latency_ms: 1.0,
        error: None,
    });
    s
}

pub(super) fn refusing(rate: Option<f64>, at: u64) -> MetricSnapshot {
    let mut s = snapshot(ContainerState::Running, Some(true), at);
    s.features.remove(feature::REJECTED_RATE);
    if let Some(rate) = rate {
        s.features.insert(feature::REJECTED_RATE.to_string(), rate);
    }
    s
}
