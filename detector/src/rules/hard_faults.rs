//! The hard-fault rules, with no warm-up: the container died or was OOM-killed, is paused,
//! or failed its health check N times in a row. One episode per instance: it fires once and
//! clears once the instance is running and healthy again.

use std::collections::HashMap;

use immune_nats::{
    feature, Anomaly, AnomalyState, ContainerEvent, ContainerEventKind, ContainerState,
    Contribution, Direction, MetricSnapshot, ServiceName, Signature,
};

use super::{Episode, Finding, Instance, RuleEngine};

impl RuleEngine {
    pub fn on_container_event(&mut self, event: &ContainerEvent) -> Option<Finding> {
        let key = (event.service.clone(), event.instance.clone());
        let instance = self.instances.entry(key).or_default();
        let (signature, reason) = match event.kind {
            ContainerEventKind::Died if event.observed_ms > instance.last_healthy_ms => (
                Signature::Crashed,
                format!(
                    "container died (exit code {})",
                    event.exit_code.map_or("unknown".into(), |c| c.to_string())
                ),
            ),
            ContainerEventKind::OomKilled => {
                (Signature::OomKilled, "container was OOM-killed".to_string())
            }
            ContainerEventKind::Paused => (Signature::Paused, "container is paused".to_string()),
            ContainerEventKind::Started => {
                instance.failures = 0;
                return None;
            }
            _ => return None,
        };
        let rule = match signature {
            Signature::OomKilled => "rule:oom_killed",
            Signature::Paused => "rule:container_paused",
            _ => "rule:container_died",
        };
        fire(
            instance,
            &self.chaos_runs,
            event,
            signature,
            rule,
            reason,
            (1.0, 1.0),
            event.observed_ms,
        )
    }

    pub fn on_snapshot(&mut self, snapshot: &MetricSnapshot) -> Option<Finding> {
        let key = (snapshot.service.clone(), snapshot.instance.clone());
        let instance = self.instances.entry(key).or_default();
        let failures_needed = self.config.health_failures.max(1);
        match snapshot.state {
            ContainerState::Exited | ContainerState::Dead => fire(
                instance,
                &self.chaos_runs,
                snapshot,
                Signature::Crashed,
                "rule:container_down",
                format!("container is {:?}", snapshot.state).to_lowercase(),
                (1.0, 1.0),
                snapshot.observed_ms,
            ),
            ContainerState::Paused => fire(
                instance,
                &self.chaos_runs,
                snapshot,
                Signature::Paused,
                "rule:container_paused",
                "container is paused".to_string(),
                (1.0, 1.0),
                snapshot.observed_ms,
            ),
            ContainerState::Running => {
                let probe = snapshot.health.as_ref()?;
                if probe.ok {
                    instance.failures = 0;
                    instance.passes += 1;
                    instance.last_healthy_ms = snapshot.observed_ms;
                    if instance.passes >= self.config.recovery_passes.max(1) {
                        return clear(instance, snapshot.observed_ms);
                    }
                    None
                } else {
                    instance.passes = 0;
                    instance.failures += 1;
                    if instance.failures < failures_needed {
                        return None;
                    }
                    let why = probe.error.clone().unwrap_or_else(|| "failed".into());
                    fire(
                        instance,
                        &self.chaos_runs,
                        snapshot,
                        Signature::Unresponsive,
                        "rule:health_failing",
                        format!(
                            "health check failed {} times in a row: {why}",
                            instance.failures
                        ),
                        (f64::from(instance.failures), f64::from(failures_needed)),
                        snapshot.observed_ms,
                    )
                }
            }
            _ => None,
        }
    }
}

/// What both events and snapshots tell about where an anomaly is.
trait Located {
    fn service(&self) -> &ServiceName;
    fn instance(&self) -> &str;
    fn container_id(&self) -> &str;
}

impl Located for ContainerEvent {
    fn service(&self) -> &ServiceName {
        &self.service
    }
    fn instance(&self) -> &str {
        &self.instance
    }
    fn container_id(&self) -> &str {
        &self.container_id
    }
}

impl Located for MetricSnapshot {
    fn service(&self) -> &ServiceName {
        &self.service
    }
    fn instance(&self) -> &str {
        &self.instance
    }
    fn container_id(&self) -> &str {
        &self.container_id
    }
}

#[allow(clippy::too_many_arguments)]
fn fire(
    instance: &mut Instance,
    chaos_runs: &HashMap<ServiceName, String>,
    at: &impl Located,
    signature: Signature,
    rule: &str,
    reason: String,
    (score, threshold): (f64, f64),
    now_ms: u64,
) -> Option<Finding> {
    instance.passes = 0;
    if instance.episode.anomaly.is_some() {
        return None; // one episode fires once
    }
    let anomaly_id = crate::episodes::anomaly_id(rule, at.service(), at.instance(), now_ms);
    let correlation_id = chaos_runs
        .get(at.service())
        .cloned()
        .unwrap_or_else(|| anomaly_id.clone());
    let anomaly = Anomaly {
        anomaly_id,
        service: at.service().clone(),
        instance: at.instance().to_string(),
        container_id: at.container_id().to_string(),
        state: AnomalyState::Firing,
        signature,
        detector: rule.to_string(),
        score,
        threshold,
        contributions: vec![Contribution {
            metric: feature::HEALTH_OK.to_string(),
            value: 0.0,
            expected: 1.0,
            share: 1.0,
            direction: Direction::Down,
        }],
        reason,
        started_ms: now_ms,
        depends_on: Vec::new(),
    };
    instance.episode = Episode {
        anomaly: Some(anomaly.clone()),
        correlation_id: correlation_id.clone(),
    };
    Some(Finding {
        anomaly,
        correlation_id,
    })
}

fn clear(instance: &mut Instance, now_ms: u64) -> Option<Finding> {
    let mut anomaly = instance.episode.anomaly.take()?;
    anomaly.state = AnomalyState::Cleared;
    anomaly.reason = format!(
        "running and healthy again after {} ms",
        now_ms.saturating_sub(anomaly.started_ms)
    );
    anomaly.contributions.clear();
    Some(Finding {
        anomaly,
        correlation_id: std::mem::take(&mut instance.episode.correlation_id),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::fixtures::snapshot;
    use crate::rules::RuleConfig;
    use immune_nats::samples;

    #[test]
    fn a_hang_fires_after_n_failed_probes_and_clears_once_healthy() {
        let mut rules = RuleEngine::new(RuleConfig {
            health_failures: 3,
            recovery_passes: 1,
            ..RuleConfig::default()
        });
        assert!(rules
            .on_snapshot(&snapshot(ContainerState::Running, Some(true), 1))
            .is_none());
        assert!(rules
            .on_snapshot(&snapshot(ContainerState::Running, Some(false), 2))
            .is_none());
        assert!(rules
            .on_snapshot(&snapshot(ContainerState::Running, Some(false), 3))
            .is_none());
        let fired = rules
            .on_snapshot(&snapshot(ContainerState::Running, Some(false), 4))
            .expect("fires");
        assert_eq!(fired.anomaly.signature, Signature::Unresponsive);
        assert_eq!(fired.anomaly.state, AnomalyState::Firing);
        assert!(
            fired.anomaly.reason.contains("3 times"),
            "{}",
            fired.anomaly.reason
        );
        assert!(
            rules
                .on_snapshot(&snapshot(ContainerState::Running, Some(false), 5))
                .is_none(),
            "fires once"
        );
        let cleared = rules
            .on_snapshot(&snapshot(ContainerState::Running, Some(true), 6))
            .expect("clears");
        assert_eq!(cleared.anomaly.state, AnomalyState::Cleared);
        assert_eq!(cleared.anomaly.anomaly_id, fired.anomaly.anomaly_id);
    }

    #[test]
    fn one_failed_probe_is_not_an_incident() {
        let mut rules = RuleEngine::new(RuleConfig::default());
        for (i, ok) in [true, false, true, false, true].into_iter().enumerate() {
            assert!(rules
                .on_snapshot(&snapshot(ContainerState::Running, Some(ok), i as u64))
                .is_none());
        }
    }

    #[test]
    fn a_death_fires_at_once_and_carries_the_chaos_run() {
        let mut rules = RuleEngine::new(RuleConfig::default());
        rules.on_chaos_injected(&samples::chaos_injected());
        let mut died = samples::container_event();
        died.observed_ms = 10;
        let fired = rules.on_container_event(&died).expect("fires");
        assert_eq!(fired.anomaly.signature, Signature::Crashed);
        assert_eq!(fired.correlation_id, "run-42");
        assert!(fired.anomaly.reason.contains("137"));
        // the exited snapshot that follows is the same episode
        assert!(rules
            .on_snapshot(&snapshot(ContainerState::Exited, None, 11))
            .is_none());
        let cleared = rules
            .on_snapshot(&snapshot(ContainerState::Running, Some(true), 12))
            .expect("clears");
        assert_eq!(cleared.correlation_id, "run-42");
    }

    #[test]
    fn the_death_of_an_already_completed_restart_is_old_news() {
        let mut rules = RuleEngine::new(RuleConfig::default());
        assert!(rules
            .on_snapshot(&snapshot(ContainerState::Running, Some(true), 100))
            .is_none());
        let mut died = samples::container_event();
        died.observed_ms = 90; // reported late, before the healthy probe
        assert!(rules.on_container_event(&died).is_none());
    }

    #[test]
    fn a_paused_container_is_named_paused_from_its_event_or_its_state() {
        let mut rules = RuleEngine::new(RuleConfig::default());
        let paused = ContainerEvent {
            kind: ContainerEventKind::Paused,
            ..samples::container_event()
        };
        let fired = rules.on_container_event(&paused).expect("fires at once");
        assert_eq!(fired.anomaly.signature, Signature::Paused);
        assert_eq!(fired.anomaly.detector, "rule:container_paused");
        assert!(
            rules
                .on_snapshot(&snapshot(ContainerState::Paused, None, 1))
                .is_none(),
            "one episode"
        );
        let mut other = RuleEngine::new(RuleConfig::default());
        let fired = other
            .on_snapshot(&snapshot(ContainerState::Paused, None, 1))
            .expect("fires");
        assert_eq!(fired.anomaly.signature, Signature::Paused);
    }

    #[test]
    fn without_chaos_the_anomaly_is_its_own_correlation() {
        let mut rules = RuleEngine::new(RuleConfig::default());
        let fired = rules
            .on_snapshot(&snapshot(ContainerState::Paused, None, 1))
            .expect("fires");
        assert_eq!(fired.correlation_id, fired.anomaly.anomaly_id);
    }
}
