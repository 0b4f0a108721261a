//! Rules for hard faults, with no warm-up: the container died or was OOM-killed, is paused,
//! or failed its health check N times in a row. One episode per instance: it fires once and
//! clears once the instance is running and healthy again. Apart from those, an attack burst:
//! the service refused more than `attack_rejected_rate` requests a second (feature
//! `rejected_rate`) for `attack_snapshots` snapshots in a row; it clears after as many
//! snapshots below the threshold.
//!
//! Pure: fed events, returns anomalies; no I/O, no clock (times come from the events).
//!
//! Each rule family is its own module (`hard_faults`, `attack_burst`); this root holds the
//! engine, its config, and what the rules share: chaos-run labels, fresh snapshots, open
//! episodes restored after a restart, and episodes cleared when their container is removed.

mod attack_burst;
#[cfg(test)]
mod fixtures;
mod hard_faults;

use std::collections::HashMap;

use immune_nats::{
    Anomaly, AnomalyState, ChaosInjected, ContainerEvent, MetricSnapshot, ServiceName,
};
use serde::{Deserialize, Serialize};

use attack_burst::ATTACK_RULE;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuleConfig {
    /// Consecutive failed health probes that make a running container unresponsive.
    pub health_failures: u32,
    /// Consecutive passed probes that clear an episode.
    pub recovery_passes: u32,
    /// Refused requests a second (`rejected_rate`) above which a snapshot counts toward an
    /// attack burst.
    pub attack_rejected_rate: f64,
    /// Consecutive snapshots above `attack_rejected_rate` that fire `attack_burst` (and
    /// below it that clear it).
    pub attack_snapshots: u32,
}

impl Default for RuleConfig {
    fn default() -> Self {
        Self {
            health_failures: 2,
            recovery_passes: 1,
            attack_rejected_rate: 1.0,
            attack_snapshots: 2,
        }
    }
}

/// An anomaly to publish, with the correlation id it belongs to. Also what is stored of an
/// open episode (see [`crate::episodes`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub anomaly: Anomaly,
    pub correlation_id: String,
}

#[derive(Debug, Default)]
struct Episode {
    anomaly: Option<Anomaly>,
    correlation_id: String,
}

#[derive(Debug, Default)]
struct Instance {
    failures: u32,
    passes: u32,
    /// When the instance was last seen running and healthy: a death reported before that
    /// is old news (the die of a restart that already completed).
    last_healthy_ms: u64,
    episode: Episode,
    /// When the newest snapshot judged was observed: an older one is a redelivery.
    last_snapshot_ms: Option<u64>,
    /// Snapshots in a row above (positive) or below (negative) the attack threshold.
    attack_streak: i64,
    attack: Episode,
}

#[derive(Debug, Default)]
pub struct RuleEngine {
    config: RuleConfig,
    instances: HashMap<(ServiceName, String), Instance>,
    /// Chaos runs in force, by service: used only to label anomalies with the run id.
    chaos_runs: HashMap<ServiceName, String>,
}

impl RuleEngine {
    pub fn new(config: RuleConfig) -> Self {
        Self {
            config,
            ..Default::default()
        }
    }

    pub fn on_chaos_injected(&mut self, injected: &ChaosInjected) {
        self.chaos_runs
            .insert(injected.service.clone(), injected.run_id.clone());
    }

    /// A chaos run an earlier life of the detector saw injected and not reverted.
    pub fn resume_chaos_run(&mut self, service: ServiceName, run_id: String) {
        self.chaos_runs.entry(service).or_insert(run_id);
    }

    pub fn on_chaos_reverted(&mut self, service: &ServiceName, run_id: &str) {
        if self.chaos_runs.get(service).map(String::as_str) == Some(run_id) {
            self.chaos_runs.remove(service);
        }
    }

    /// Whether `snapshot` is newer than every snapshot of its instance judged before, and
    /// if so, remembers it as the newest. An older one (or the same one again) is a
    /// redelivery, after a NATS restart for instance: judged again it would reopen an episode
    /// the newer snapshots already cleared, so the stage skips it.
    pub fn fresh(&mut self, snapshot: &MetricSnapshot) -> bool {
        let key = (snapshot.service.clone(), snapshot.instance.clone());
        let instance = self.instances.entry(key).or_default();
        if instance
            .last_snapshot_ms
            .is_some_and(|last| snapshot.observed_ms <= last)
        {
            return false;
        }
        instance.last_snapshot_ms = Some(snapshot.observed_ms);
        true
    }

    /// The episodes of `service` that fired and have not cleared, in a stable order.
    /// Whether a rule (a hard fault, an attack burst) has an episode open on `instance`.
    pub fn firing_on(&self, service: &ServiceName, instance: &str) -> bool {
        self.instances
            .get(&(service.clone(), instance.to_string()))
            .is_some_and(|i| i.episode.anomaly.is_some() || i.attack.anomaly.is_some())
    }

    pub fn open_episodes(&self, service: &ServiceName) -> Vec<Finding> {
        let mut open: Vec<Finding> = self
            .instances
            .iter()
            .filter(|((s, _), _)| s == service)
            .flat_map(|(_, i)| [&i.episode, &i.attack])
            .filter_map(|e| {
                e.anomaly.clone().map(|anomaly| Finding {
                    anomaly,
                    correlation_id: e.correlation_id.clone(),
                })
            })
            .collect();
        open.sort_by(|a, b| a.anomaly.anomaly_id.cmp(&b.anomaly.anomaly_id));
        open
    }

    /// Takes back an episode a previous life of the detector fired and did not clear, so it
    /// clears (with the same anomaly id) once the instance is well again instead of staying
    /// open at the decider forever. Returns false for an anomaly no rule fired.
    pub fn restore(&mut self, open: Finding) -> bool {
        let attack = match open.anomaly.detector.as_str() {
            ATTACK_RULE => true,
            d if d.starts_with("rule:") => false,
            _ => return false,
        };
        let key = (open.anomaly.service.clone(), open.anomaly.instance.clone());
        let instance = self.instances.entry(key).or_default();
        let episode = Episode {
            anomaly: Some(open.anomaly),
            correlation_id: open.correlation_id,
        };
        if attack {
            instance.attack_streak = i64::from(self.config.attack_snapshots.max(1));
            instance.attack = episode;
        } else {
            instance.episode = episode;
        }
        true
    }

    /// The chaos run in force on `service`, if any.
    pub fn chaos_run(&self, service: &ServiceName) -> Option<&str> {
        self.chaos_runs.get(service).map(String::as_str)
    }
}

impl RuleEngine {
    /// The container was destroyed (scaled in, removed by hand): its open episodes clear,
    /// as nothing is left to heal. Matched on the name *and* the id, so a recreate (the old
    /// container renamed aside before it goes) or a late destroy of an earlier container of
    /// the same name leaves the episode of the one now running alone.
    pub fn on_removed(&mut self, event: &ContainerEvent) -> Vec<Finding> {
        let key = (event.service.clone(), event.instance.clone());
        let Some(instance) = self.instances.get_mut(&key) else {
            return Vec::new();
        };
        let mut cleared = Vec::new();
        for episode in [&mut instance.episode, &mut instance.attack] {
            if episode
                .anomaly
                .as_ref()
                .is_some_and(|a| a.container_id == event.container_id)
            {
                cleared.extend(clear_removed(episode, event.observed_ms));
            }
        }
        if !cleared.is_empty() {
            instance.failures = 0;
            instance.passes = 0;
            instance.attack_streak = 0;
        }
        cleared
    }
}

/// Clears `episode` because its container is gone.
fn clear_removed(episode: &mut Episode, now_ms: u64) -> Option<Finding> {
    Some(Finding {
        anomaly: removed(episode.anomaly.take()?, now_ms),
        correlation_id: std::mem::take(&mut episode.correlation_id),
    })
}

/// `anomaly`, cleared at `now_ms` because its container was removed (rules' and learned).
pub fn removed(mut anomaly: Anomaly, now_ms: u64) -> Anomaly {
    anomaly.state = AnomalyState::Cleared;
    anomaly.reason = format!(
        "container removed after {} ms: nothing left to heal",
        now_ms.saturating_sub(anomaly.started_ms)
    );
    anomaly.contributions.clear();
    anomaly
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::fixtures::{refusing, snapshot};
    use immune_nats::{samples, ContainerEventKind, ContainerState};

    #[test]
    fn a_removed_container_clears_its_episodes_but_a_recreated_one_keeps_them() {
        let mut rules = RuleEngine::new(RuleConfig {
            attack_snapshots: 1,
            ..RuleConfig::default()
        });
        let mut died = samples::container_event();
        died.observed_ms = 10;
        rules.on_container_event(&died).expect("fires");
        rules.on_attack(&refusing(Some(50.0), 11)).expect("fires");

        // A recreate renames the old container aside before removing it.
        let mut aside = died.clone();
        aside.kind = ContainerEventKind::Destroyed;
        aside.instance = format!("{}-replaced-c0ffee", died.instance);
        aside.observed_ms = 20;
        assert!(rules.on_removed(&aside).is_empty());
        // A late destroy of an earlier container that had the same name.
        let mut earlier = aside.clone();
        earlier.instance = died.instance.clone();
        earlier.container_id = "0ld".into();
        assert!(rules.on_removed(&earlier).is_empty());
        assert_eq!(rules.open_episodes(&died.service).len(), 2);

        let mut removed = earlier.clone();
        removed.container_id = died.container_id.clone();
        let cleared = rules.on_removed(&removed);
        assert_eq!(cleared.len(), 2, "{cleared:?}");
        for finding in &cleared {
            assert_eq!(finding.anomaly.state, AnomalyState::Cleared);
            assert!(
                finding.anomaly.reason.starts_with("container removed"),
                "{}",
                finding.anomaly.reason
            );
        }
        assert!(rules.open_episodes(&died.service).is_empty());
        assert!(rules.on_removed(&removed).is_empty(), "cleared once");
    }

    #[test]
    fn a_restarted_engine_clears_the_episodes_its_previous_life_fired() {
        let mut first = RuleEngine::new(RuleConfig {
            attack_snapshots: 1,
            ..RuleConfig::default()
        });
        first.on_chaos_injected(&samples::chaos_injected());
        let mut died = samples::container_event();
        died.observed_ms = 10;
        let crashed = first.on_container_event(&died).expect("fires");
        let attack = first.on_attack(&refusing(Some(50.0), 11)).expect("fires");
        let service = crashed.anomaly.service.clone();
        let open = first.open_episodes(&service);
        assert_eq!(open.len(), 2);
        assert!(first
            .open_episodes(&ServiceName::new("payments").expect("a valid name"))
            .is_empty());

        // The second life knows nothing but what was stored.
        let mut second = RuleEngine::new(RuleConfig {
            attack_snapshots: 1,
            ..RuleConfig::default()
        });
        for finding in open {
            assert!(second.restore(finding));
        }
        assert_eq!(second.open_episodes(&service).len(), 2);
        assert!(
            second.on_container_event(&died).is_none(),
            "the redelivered death is the same episode"
        );
        let cleared = second
            .on_snapshot(&snapshot(ContainerState::Running, Some(true), 12))
            .expect("clears");
        assert_eq!(cleared.anomaly.state, AnomalyState::Cleared);
        assert_eq!(cleared.anomaly.anomaly_id, crashed.anomaly.anomaly_id);
        assert_eq!(cleared.correlation_id, "run-42");
        let calm = second
            .on_attack(&refusing(Some(0.0), 13))
            .expect("the attack clears too");
        assert_eq!(calm.anomaly.anomaly_id, attack.anomaly.anomaly_id);
        assert!(second.open_episodes(&service).is_empty());

        let mut learned = crashed;
        learned.anomaly.detector = "pca".into();
        assert!(!second.restore(learned), "not a rule's episode");
    }

    #[test]
    fn a_redelivered_snapshot_is_not_fresh() {
        let mut rules = RuleEngine::new(RuleConfig::default());
        let mut zero = snapshot(ContainerState::Running, Some(true), 0);
        zero.instance = "orders-0".into();
        assert!(
            rules.fresh(&zero),
            "the first snapshot is fresh, whatever its time"
        );
        let exited = snapshot(ContainerState::Exited, None, 10);
        assert!(rules.fresh(&exited));
        assert!(rules.on_snapshot(&exited).is_some());
        let healthy = snapshot(ContainerState::Running, Some(true), 11);
        assert!(rules.fresh(&healthy));
        assert!(rules.on_snapshot(&healthy).is_some(), "clears");
        assert!(!rules.fresh(&exited), "older: a redelivery");
        assert!(!rules.fresh(&healthy), "the same one again");
        let mut other = snapshot(ContainerState::Running, Some(true), 5);
        other.instance = "orders-2".into();
        assert!(rules.fresh(&other), "each instance has its own clock");
    }
}
