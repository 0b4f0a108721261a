//! The targets the scorecard judges immune on (crash healed, hang restarted, no false
//! actions), each with what was measured and whether it was met.

use immune_nats::FaultKind;
use serde::{Deserialize, Serialize};

use super::Report;
use crate::stats::Summary;

/// A target and whether it was met.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub what: String,
    pub goal: String,
    pub measured: String,
    pub met: Option<bool>,
}

impl Report {
    pub fn targets(&self) -> Vec<Target> {
        let crash = self.summary(FaultKind::Crash, |t| t.healed_ms);
        let hang = self.summary(FaultKind::Hang, |t| t.first_action_ms);
        let fmt = |s: Option<Summary>, f: fn(&Summary) -> f64| {
            s.map(|s| format!("{:.2} s", f(&s) / 1000.0))
                .unwrap_or_else(|| "not measured".into())
        };
        vec![
            Target {
                what: "crash healed (container healthy again), p50".into(),
                goal: "< 1.5 s".into(),
                measured: fmt(crash, |s| s.p50),
                met: crash.map(|s| s.p50 < 1500.0),
            },
            Target {
                what: "hang detected and restart issued, p50".into(),
                goal: "< 3 s".into(),
                measured: fmt(hang, |s| s.p50),
                met: hang.map(|s| s.p50 < 3000.0),
            },
            Target {
                what: "hang detected and restart issued, p95".into(),
                goal: "< 5 s".into(),
                measured: fmt(hang, |s| s.p95),
                met: hang.map(|s| s.p95 < 5000.0),
            },
            Target {
                what: "false actions per hour under normal load".into(),
                goal: "0".into(),
                measured: format!(
                    "{:.1} ({} actions in {:.0} s)",
                    self.false_actions_per_hour(),
                    self.fault_free.actions,
                    self.fault_free.period_s
                ),
                met: Some(self.fault_free.actions == 0),
            },
        ]
    }
}
