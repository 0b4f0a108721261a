//! Learning which repair works: a value per (signature, action), updated from verified
//! outcomes (one-step Q-learning: every action ends its episode, so the update is
//! `Q += alpha * (reward - Q)`). The reward is +1 for a recovery, minus a penalty per second
//! to recover (at most [`MAX_TIME_PENALTY`]) and per unit of risk (disruption); a failed or
//! unverified action earns -1 minus the risk penalty (a refused one did nothing and earns nothing). An untried action is worth 0, so one
//! failure puts an action below every untried one and (at the default penalties) one
//! recovery above them: with a wrong prior, the first incident walks to the fix and the next
//! one starts with it. The values reorder a playbook within its safety limits: only steps at
//! or below the approval risk move, and exploration (probability `epsilon`, a seeded RNG)
//! never picks a step riskier than the greedy choice, nor one already seen to fail (its
//! value below 0): it tries the untried, it does not spend an incident relearning a failure.

use std::collections::BTreeMap;

use immune_nats::{ActionKind, Signature};
use serde::{Deserialize, Serialize};

use crate::playbook::Step;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LearningConfig {
    /// Off: the playbook order is kept as written.
    pub enabled: bool,
    /// Learning rate, 0..=1.
    pub alpha: f64,
    /// Chance of trying another step than the best known, 0..=0.2.
    pub epsilon: f64,
    /// Seeds the exploration, so a run can be replayed.
    pub seed: u64,
    /// Reward lost per second from an action to the recovery.
    pub time_penalty_per_s: f64,
    /// Reward lost per unit of the step's risk.
    pub risk_penalty: f64,
}

impl Default for LearningConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            alpha: 0.3,
            epsilon: 0.05,
            seed: 7,
            time_penalty_per_s: 0.01,
            risk_penalty: 0.05,
        }
    }
}

/// The most reward a slow recovery loses to its time: a recovery, however slow, stays worth
/// more than an untried action and far more than a failure of the same step. (Uncapped, a
/// recovery verified after 200 s at the default penalty would earn what a failure earns.)
pub const MAX_TIME_PENALTY: f64 = 0.5;

/// How an action turned out, as far as learning is concerned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    Recovered { after_ms: u64 },
    NotRecovered,
}

/// The learned values and the exploration RNG.
#[derive(Debug, Clone)]
pub struct Values {
    config: LearningConfig,
    q: BTreeMap<(Signature, ActionKind), f64>,
    rng: u64,
}

impl Values {
    pub fn new(config: LearningConfig) -> Self {
        let rng = config.seed ^ 0x9E37_79B9_7F4A_7C15;
        Self {
            config,
            q: BTreeMap::new(),
            rng,
        }
    }

    pub fn get(&self, signature: Signature, action: ActionKind) -> f64 {
        self.q.get(&(signature, action)).copied().unwrap_or(0.0)
    }

    /// Restores a persisted value.
    pub fn set(&mut self, signature: Signature, action: ActionKind, value: f64) {
        if value.is_finite() {
            self.q.insert((signature, action), value.clamp(-10.0, 10.0));
        }
    }

    /// Updates the value from an outcome; returns the new value.
    pub fn update(&mut self, signature: Signature, step: &Step, outcome: Outcome) -> f64 {
        let c = &self.config;
        let disruption = c.risk_penalty * f64::from(step.risk);
        let reward = match outcome {
            Outcome::Recovered { after_ms } => {
                let time = c.time_penalty_per_s * after_ms as f64 / 1_000.0;
                1.0 - time.min(MAX_TIME_PENALTY) - disruption
            }
            Outcome::NotRecovered => -1.0 - disruption,
        };
        let q = self.q.entry((signature, step.action)).or_insert(0.0);
        *q += c.alpha * (reward - *q);
        *q
    }

    /// The order to try `steps` in (indexes into `steps`) and whether the first was explored.
    /// Steps above `max_risk` keep their playbook place after the others.
    pub fn order(
        &mut self,
        signature: Signature,
        steps: &[Step],
        max_risk: u8,
    ) -> (Vec<usize>, bool) {
        let mut order: Vec<usize> = (0..steps.len()).collect();
        if !self.config.enabled {
            return (order, false);
        }
        order.sort_by(|&a, &b| {
            let (sa, sb) = (&steps[a], &steps[b]);
            (sa.risk > max_risk)
                .cmp(&(sb.risk > max_risk))
                .then_with(|| {
                    let (qa, qb) = (
                        self.get(signature, sa.action),
                        self.get(signature, sb.action),
                    );
                    if sa.risk > max_risk {
                        std::cmp::Ordering::Equal
                    } else {
                        qb.total_cmp(&qa)
                    }
                })
                .then(a.cmp(&b))
        });
        let Some(&greedy) = order.first() else {
            return (order, false);
        };
        if self.next_unit() >= self.config.epsilon {
            return (order, false);
        }
        let greedy_risk = steps[greedy].risk;
        let others: Vec<usize> = (1..order.len())
            .filter(|&i| {
                let s = &steps[order[i]];
                s.risk <= greedy_risk.min(max_risk) && self.get(signature, s.action) >= 0.0
            })
            .collect();
        if others.is_empty() {
            return (order, false);
        }
        let pick = others[(self.next_u64() % others.len() as u64) as usize];
        let explored = order.remove(pick);
        order.insert(0, explored);
        (order, true)
    }

    /// SplitMix64: small, seeded, good enough to choose exploration.
    fn next_u64(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn next_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The key of a value in the values bucket: `<signature>.<action>`.
pub fn value_key(signature: Signature, action: ActionKind) -> String {
    format!("{signature}.{action}")
}

/// Reads a key of the values bucket back.
pub fn parse_value_key(key: &str) -> Option<(Signature, ActionKind)> {
    let (s, a) = key.split_once('.')?;
    let signature = serde_json::from_value(serde_json::Value::String(s.into())).ok()?;
    let action = serde_json::from_value(serde_json::Value::String(a.into())).ok()?;
    Some((signature, action))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(action: ActionKind, risk: u8) -> Step {
        Step {
            action,
            risk,
            params: BTreeMap::new(),
            timeout_ms: None,
        }
    }

    #[test]
    fn a_failing_step_sinks_below_one_that_works() {
        let mut v = Values::new(LearningConfig {
            epsilon: 0.0,
            ..Default::default()
        });
        let steps = [step(ActionKind::Restart, 2), step(ActionKind::Recreate, 3)];
        assert_eq!(v.order(Signature::Crashed, &steps, 3).0, [0, 1]);
        v.update(Signature::Crashed, &steps[0], Outcome::NotRecovered);
        assert!(v.get(Signature::Crashed, ActionKind::Restart) < 0.0);
        assert_eq!(v.order(Signature::Crashed, &steps, 3).0, [1, 0]);
        assert_eq!(
            v.order(Signature::Unresponsive, &steps, 3).0,
            [0, 1],
            "values are per signature"
        );
    }

    #[test]
    fn a_failed_mitigation_sinks_below_an_untried_repair_and_a_slow_fix_stays_above() {
        let mut v = Values::new(LearningConfig {
            epsilon: 0.0,
            ..Default::default()
        });
        let steps = [
            step(ActionKind::Throttle, 1),
            step(ActionKind::ScaleOut, 2),
            step(ActionKind::Restart, 2),
        ];
        v.update(Signature::LatencyUp, &steps[0], Outcome::NotRecovered);
        assert_eq!(v.order(Signature::LatencyUp, &steps, 3).0, [1, 2, 0]);
        v.update(Signature::LatencyUp, &steps[1], Outcome::NotRecovered);
        assert_eq!(v.order(Signature::LatencyUp, &steps, 3).0, [2, 0, 1]);
        // recovered, but only after ten minutes: still worth more than never tried
        let slow = v.update(
            Signature::LatencyUp,
            &steps[2],
            Outcome::Recovered { after_ms: 600_000 },
        );
        assert!(slow > 0.0, "{slow}");
        let mut failed = Values::new(LearningConfig::default());
        let failure = failed.update(Signature::LatencyUp, &steps[2], Outcome::NotRecovered);
        assert!(slow > failure + 0.3, "{slow} vs {failure}");
    }

    #[test]
    fn steps_above_the_approval_risk_never_move_up() {
        let mut v = Values::new(LearningConfig {
            epsilon: 0.0,
            ..Default::default()
        });
        let steps = [step(ActionKind::Restart, 2), step(ActionKind::Rollback, 4)];
        v.update(Signature::ErrorsUp, &steps[0], Outcome::NotRecovered);
        v.update(
            Signature::ErrorsUp,
            &steps[1],
            Outcome::Recovered { after_ms: 1 },
        );
        assert_eq!(v.order(Signature::ErrorsUp, &steps, 3).0, [0, 1]);
    }

    #[test]
    fn exploration_is_rare_seeded_and_never_riskier_than_the_greedy_choice() {
        let steps = [
            step(ActionKind::Throttle, 1),
            step(ActionKind::CircuitBreaker, 1),
            step(ActionKind::Restart, 2),
        ];
        let mut v = Values::new(LearningConfig::default());
        let mut explored = 0;
        for _ in 0..1_000 {
            let (order, e) = v.order(Signature::LatencyUp, &steps, 3);
            if e {
                explored += 1;
                assert_eq!(order[0], 1, "only the other risk-1 step may be explored");
            }
        }
        assert!((20..=90).contains(&explored), "explored {explored} of 1000");
        let mut again = Values::new(LearningConfig::default());
        let first: Vec<_> = (0..50)
            .map(|_| again.order(Signature::LatencyUp, &steps, 3))
            .collect();
        let mut same = Values::new(LearningConfig::default());
        let second: Vec<_> = (0..50)
            .map(|_| same.order(Signature::LatencyUp, &steps, 3))
            .collect();
        assert_eq!(first, second, "seeded");
    }

    /// Exploring an action already seen to fail spends a real incident to learn what is
    /// known: exploration tries the untried and what worked before, never a known failure.
    #[test]
    fn exploration_never_picks_a_step_known_to_fail() {
        let steps = [
            step(ActionKind::UpdateLimits, 2),
            step(ActionKind::ScaleOut, 2),
            step(ActionKind::Restart, 2),
            step(ActionKind::Recreate, 3),
        ];
        let mut v = Values::new(LearningConfig {
            epsilon: 1.0,
            ..Default::default()
        });
        v.update(
            Signature::ResourceExhaustion,
            &steps[0],
            Outcome::NotRecovered,
        );
        v.update(
            Signature::ResourceExhaustion,
            &steps[1],
            Outcome::NotRecovered,
        );
        v.update(
            Signature::ResourceExhaustion,
            &steps[2],
            Outcome::Recovered { after_ms: 5_000 },
        );
        for _ in 0..200 {
            let (order, explored) = v.order(Signature::ResourceExhaustion, &steps, 3);
            assert!(
                !explored,
                "only failures are as risky as restart: {order:?}"
            );
            assert_eq!(order[0], 2, "restart, the greedy choice");
        }
        // an untried step of the same risk is still explored
        let more = [
            steps[0].clone(),
            steps[2].clone(),
            step(ActionKind::Rollback, 2),
        ];
        let picked: std::collections::BTreeSet<usize> = (0..200)
            .map(|_| v.order(Signature::ResourceExhaustion, &more, 3).0[0])
            .collect();
        assert_eq!(picked, [2].into(), "the untried rollback, every time");
    }

    #[test]
    fn value_keys_round_trip() {
        let key = value_key(Signature::OomKilled, ActionKind::UpdateLimits);
        assert_eq!(key, "oom_killed.update_limits");
        assert_eq!(
            parse_value_key(&key),
            Some((Signature::OomKilled, ActionKind::UpdateLimits))
        );
        assert_eq!(parse_value_key("oom_killed.reboot"), None);
    }
}
