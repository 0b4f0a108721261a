//! The story of one injection, for its plot: the metric that shows the fault, the anomaly
//! scores, the actions and the `/health` probes, in seconds after the injection.

use immune_nats::{feature, AnomalyState, Envelope, Event, FaultKind, SnapshotScope};
use serde::{Deserialize, Serialize};

use crate::measure::{Probe, Trial};

/// The story of one injection, for its plot; seconds after the injection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    pub fault: FaultKind,
    pub feature: String,
    pub metric: Vec<(f64, f64)>,
    /// (time, score, threshold, firing)
    pub anomalies: Vec<(f64, f64, f64, bool)>,
    pub actions: Vec<(f64, String)>,
    pub health: Vec<(f64, bool)>,
    pub fault_end_s: Option<f64>,
    pub detected_s: Option<f64>,
    pub healed_s: Option<f64>,
}

/// The metric that shows a fault best.
pub fn feature_of(fault: FaultKind) -> &'static str {
    match fault {
        FaultKind::Latency => feature::LATENCY_P95_MS,
        FaultKind::Errors => feature::ERROR_RATIO,
        FaultKind::MemoryLeak => feature::MEMORY_BYTES,
        FaultKind::CpuBurn => feature::CPU_CORES,
        _ => feature::HEALTH_OK,
    }
}

fn secs(ms: u64, t0: u64) -> f64 {
    (ms as f64 - t0 as f64) / 1000.0
}

impl Timeline {
    pub fn of(trial: &Trial, seen: &[Envelope], probes: &[Probe]) -> Timeline {
        let t0 = trial.injected_ms;
        let name = feature_of(trial.fault);
        let mut metric = Vec::new();
        let mut anomalies = Vec::new();
        let mut actions = Vec::new();
        for e in seen {
            match &e.body {
                Event::MetricSnapshot(s)
                    if s.scope == SnapshotScope::Instance && s.instance == trial.instance =>
                {
                    let value = if name == feature::HEALTH_OK {
                        Some(if s.health.as_ref().is_some_and(|h| h.ok) {
                            1.0
                        } else {
                            0.0
                        })
                    } else {
                        s.features.get(name).copied()
                    };
                    if let Some(v) = value {
                        let v = if name == feature::MEMORY_BYTES {
                            v / 1048576.0
                        } else {
                            v
                        };
                        metric.push((secs(s.observed_ms, t0), v));
                    }
                }
                Event::Anomaly(a) if a.service.as_str() == trial.service => {
                    anomalies.push((
                        secs(e.timestamp_ms, t0),
                        a.score,
                        a.threshold,
                        a.state == AnomalyState::Firing,
                    ));
                }
                Event::ActionRequest(r) if r.instance == trial.instance => {
                    actions.push((secs(e.timestamp_ms, t0), r.action.as_str().to_string()));
                }
                _ => {}
            }
        }
        Timeline {
            fault: trial.fault,
            feature: if name == feature::MEMORY_BYTES {
                "memory_mib".into()
            } else {
                name.into()
            },
            metric,
            anomalies,
            actions,
            // A pass is drawn when it was answered, a failure when it was sent.
            health: probes
                .iter()
                .map(|p| {
                    let at = if p.ok { p.answered_ms } else { p.sent_ms };
                    (secs(at, t0), p.ok)
                })
                .collect(),
            fault_end_s: trial.reverted_ms.map(|m| m as f64 / 1000.0),
            detected_s: trial.detected_ms.map(|m| m as f64 / 1000.0),
            healed_s: trial.healed_ms.map(|m| m as f64 / 1000.0),
        }
    }
}
