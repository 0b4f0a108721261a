//! The attack-burst rule: the service refused more than `attack_rejected_rate` requests a
//! second (feature `rejected_rate`) for `attack_snapshots` snapshots in a row; it clears after
//! as many snapshots below the threshold. Its own episode, beside a hard fault's.

use immune_nats::{
    feature, Anomaly, AnomalyState, Contribution, Direction, MetricSnapshot, Signature,
};

use super::{Episode, Finding, RuleEngine};

pub(super) const ATTACK_RULE: &str = "rule:attack_burst";

impl RuleEngine {
    /// The attack-burst rule, beside the hard-fault rules of [`RuleEngine::on_snapshot`].
    pub fn on_attack(&mut self, snapshot: &MetricSnapshot) -> Option<Finding> {
        let rate = *snapshot.features.get(feature::REJECTED_RATE)?;
        let key = (snapshot.service.clone(), snapshot.instance.clone());
        let instance = self.instances.entry(key).or_default();
        let threshold = self.config.attack_rejected_rate;
        let needed = i64::from(self.config.attack_snapshots.max(1));
        instance.attack_streak = match (rate > threshold, instance.attack_streak) {
            (true, n) if n > 0 => n + 1,
            (true, _) => 1,
            (false, n) if n < 0 => n - 1,
            (false, _) => -1,
        };
        if instance.attack.anomaly.is_none() && instance.attack_streak >= needed {
            let anomaly_id = crate::episodes::anomaly_id(
                ATTACK_RULE,
                &snapshot.service,
                &snapshot.instance,
                snapshot.observed_ms,
            );
            let correlation_id = self
                .chaos_runs
                .get(&snapshot.service)
                .cloned()
                .unwrap_or_else(|| anomaly_id.clone());
            let anomaly = Anomaly {
                anomaly_id,
                service: snapshot.service.clone(),
                instance: snapshot.instance.clone(),
                container_id: snapshot.container_id.clone(),
                state: AnomalyState::Firing,
                signature: Signature::AttackBurst,
                detector: ATTACK_RULE.to_string(),
                score: rate,
                threshold,
                contributions: vec![Contribution {
                    metric: feature::REJECTED_RATE.to_string(),
                    value: rate,
                    expected: threshold,
                    share: 1.0,
                    direction: Direction::Up,
                }],
                reason: format!(
                    "{rate:.1} malicious requests refused a second for {} snapshots (threshold {threshold})",
                    instance.attack_streak
                ),
                started_ms: snapshot.observed_ms,
                depends_on: Vec::new(),
            };
            instance.attack = Episode {
                anomaly: Some(anomaly.clone()),
                correlation_id: correlation_id.clone(),
            };
            return Some(Finding {
                anomaly,
                correlation_id,
            });
        }
        if instance.attack.anomaly.is_some() && -instance.attack_streak >= needed {
            let mut anomaly = instance.attack.anomaly.take()?;
            anomaly.state = AnomalyState::Cleared;
            anomaly.reason = format!(
                "refusals back under {threshold}/s after {} ms",
                snapshot.observed_ms.saturating_sub(anomaly.started_ms)
            );
            anomaly.contributions.clear();
            return Some(Finding {
                anomaly,
                correlation_id: std::mem::take(&mut instance.attack.correlation_id),
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::fixtures::{refusing, snapshot};
    use crate::rules::RuleConfig;
    use immune_nats::{samples, ContainerState};

    #[test]
    fn an_attack_burst_fires_after_n_snapshots_over_the_threshold_and_clears_after_n_under() {
        let mut rules = RuleEngine::new(RuleConfig {
            attack_rejected_rate: 5.0,
            attack_snapshots: 3,
            ..RuleConfig::default()
        });
        rules.on_chaos_injected(&samples::chaos_injected());
        let mut at = 0;
        let mut feed = |rules: &mut RuleEngine, rate: Option<f64>| {
            at += 1;
            rules.on_attack(&refusing(rate, at))
        };
        // a blip, a gap in the feature, and rates at the threshold do not fire
        for rate in [
            Some(9.0),
            Some(1.0),
            Some(9.0),
            None,
            Some(5.0),
            Some(9.0),
            Some(9.0),
        ] {
            assert!(feed(&mut rules, rate).is_none(), "{rate:?}");
        }
        let fired = feed(&mut rules, Some(12.0)).expect("fires on the third in a row");
        assert_eq!(fired.anomaly.signature, Signature::AttackBurst);
        assert_eq!(fired.anomaly.detector, "rule:attack_burst");
        assert_eq!(
            fired.anomaly.contributions[0].metric,
            feature::REJECTED_RATE
        );
        assert_eq!(fired.correlation_id, "run-42");
        assert!(feed(&mut rules, Some(20.0)).is_none(), "fires once");
        assert!(feed(&mut rules, Some(0.0)).is_none());
        assert!(feed(&mut rules, Some(0.0)).is_none());
        let cleared = feed(&mut rules, Some(0.0)).expect("clears on the third quiet one");
        assert_eq!(cleared.anomaly.state, AnomalyState::Cleared);
        assert_eq!(cleared.anomaly.anomaly_id, fired.anomaly.anomaly_id);
    }

    #[test]
    fn an_attack_burst_is_its_own_episode_beside_a_hang() {
        let mut rules = RuleEngine::new(RuleConfig {
            attack_snapshots: 1,
            ..RuleConfig::default()
        });
        assert!(rules
            .on_snapshot(&snapshot(ContainerState::Paused, None, 1))
            .is_some());
        let fired = rules.on_attack(&refusing(Some(50.0), 2)).expect("fires");
        assert_eq!(fired.anomaly.signature, Signature::AttackBurst);
    }
}
