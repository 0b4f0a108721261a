//! The targets the scorecard judges immune on (crash healed, hang restarted, every fault
//! detected and healed in time, the first action right after learning, no false actions),
//! each with what was measured and whether it was met.

use immune_nats::FaultKind;
use serde::{Deserialize, Serialize};

use super::Report;
use crate::measure::{HealedBy, Trial};
use crate::stats::Summary;

/// Trials each fault needs before its rates are judged.
pub const MIN_TRIALS: usize = 5;
/// Time to detect, p50, of every fault.
const TTD_P50_MS: f64 = 3_000.0;
/// Time to heal, p50, of every gray fault.
const GRAY_MTTR_P50_MS: f64 = 15_000.0;
/// Share of the learning runs after each curve's first whose first action was right.
const FIRST_ACTION_RIGHT: f64 = 0.8;

/// The faults between up and down: `/health` keeps passing while users suffer.
pub fn is_gray(fault: FaultKind) -> bool {
    matches!(
        fault,
        FaultKind::Latency
            | FaultKind::Errors
            | FaultKind::MemoryLeak
            | FaultKind::CpuBurn
            | FaultKind::Attack
            | FaultKind::Overload
    )
}

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
            self.every_fault("detected", "every trial", |trials| {
                let n = trials.iter().filter(|t| t.detected_ms.is_some()).count();
                (n == trials.len(), format!("{n}/{}", trials.len()))
            }),
            self.every_fault("healed by immune", "≥ 4 of 5 trials", |trials| {
                let n = trials
                    .iter()
                    .filter(|t| t.healed_by == HealedBy::Immune)
                    .count();
                (5 * n >= 4 * trials.len(), format!("{n}/{}", trials.len()))
            }),
            self.every_fault("time to detect, p50", "≤ 3 s", |trials| {
                let s = Summary::of(&ms(trials, |t| t.detected_ms));
                let met = s.is_some_and(|s| s.p50 <= TTD_P50_MS);
                (met, s.map_or("none".into(), |s| seconds(s.p50)))
            }),
            self.gray_healed_in_time(),
            self.first_action_right_after_learning(),
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

fn ms(trials: &[&Trial], what: fn(&Trial) -> Option<u64>) -> Vec<f64> {
    trials
        .iter()
        .filter_map(|t| what(t))
        .map(|v| v as f64)
        .collect()
}

fn seconds(ms: f64) -> String {
    format!("{:.2} s", ms / 1000.0)
}

impl Report {
    /// A target every fault must meet, with at least [`MIN_TRIALS`] trials each: what was
    /// measured names the faults that missed it (or, all met, the number of faults).
    fn every_fault(
        &self,
        what: &str,
        goal: &str,
        judge: impl Fn(&[&Trial]) -> (bool, String),
    ) -> Target {
        self.every_fault_of(format!("every fault: {what}"), goal, |_| true, judge)
    }

    fn every_fault_of(
        &self,
        what: String,
        goal: &str,
        include: impl Fn(FaultKind) -> bool,
        judge: impl Fn(&[&Trial]) -> (bool, String),
    ) -> Target {
        let faults: Vec<FaultKind> = self.faults().into_iter().filter(|&f| include(f)).collect();
        let mut missed = Vec::new();
        let mut few = Vec::new();
        for &fault in &faults {
            let trials = self.of_fault(fault);
            let (met, figure) = judge(&trials);
            if !met {
                missed.push(format!("{fault} {figure}"));
            }
            if trials.len() < MIN_TRIALS {
                few.push(format!("{fault} {}", trials.len()));
            }
        }
        let measured = match (faults.is_empty(), missed.is_empty()) {
            (true, _) => "not measured".to_string(),
            (false, true) => format!("all {} faults", faults.len()),
            (false, false) => format!("missed: {}", missed.join(", ")),
        };
        let measured = if few.is_empty() {
            measured
        } else {
            format!("{measured} (under {MIN_TRIALS} trials: {})", few.join(", "))
        };
        Target {
            what,
            goal: format!("{goal}, {MIN_TRIALS}+ trials each"),
            measured,
            met: (!faults.is_empty()).then_some(missed.is_empty() && few.is_empty()),
        }
    }

    fn gray_healed_in_time(&self) -> Target {
        self.every_fault_of(
            "every gray fault: time to heal, p50".into(),
            "≤ 15 s",
            is_gray,
            |trials| {
                let s = Summary::of(&ms(trials, |t| t.healed_ms));
                let met = s.is_some_and(|s| s.p50 <= GRAY_MTTR_P50_MS);
                (met, s.map_or("never".into(), |s| seconds(s.p50)))
            },
        )
    }

    /// Over the learning runs after each curve's first (the first one learns).
    fn first_action_right_after_learning(&self) -> Target {
        let after: Vec<&Trial> = self
            .learning_by_fault()
            .into_iter()
            .flat_map(|(_, runs)| runs.into_iter().skip(1))
            .collect();
        let right = after
            .iter()
            .filter(|t| t.first_action_right == Some(true))
            .count();
        Target {
            what: "after learning, the first action is the right one".into(),
            goal: format!(
                "≥ {:.0}% of the learning runs after the first",
                FIRST_ACTION_RIGHT * 100.0
            ),
            measured: format!("{right}/{}", after.len()),
            met: (!after.is_empty())
                .then_some(right as f64 >= FIRST_ACTION_RIGHT * after.len() as f64),
        }
    }
}
