//! Rules for hard faults, with no warm-up: the container died or was OOM-killed, is paused,
//! or failed its health check N times in a row. One episode per instance: it fires once and
//! clears once the instance is running and healthy again. Apart from those, an attack burst:
//! the service refused more than `attack_rejected_rate` requests a second (feature
//! `rejected_rate`) for `attack_snapshots` snapshots in a row; it clears after as many
//! snapshots below the threshold.
//!
//! Pure: fed events, returns anomalies; no I/O, no clock (times come from the events).

use std::collections::HashMap;

use immune_nats::{
    feature, Anomaly, AnomalyState, ChaosInjected, ContainerEvent, ContainerEventKind,
    ContainerState, Contribution, Direction, MetricSnapshot, ServiceName, Signature,
};
use serde::{Deserialize, Serialize};

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
            ContainerEventKind::Started => {
                instance.failures = 0;
                return None;
            }
            _ => return None,
        };
        let rule = if signature == Signature::OomKilled {
            "rule:oom_killed"
        } else {
            "rule:container_died"
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
                Signature::Unresponsive,
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

const ATTACK_RULE: &str = "rule:attack_burst";

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
    use immune_nats::{samples, HealthProbe};

    fn snapshot(state: ContainerState, healthy: Option<bool>, at: u64) -> MetricSnapshot {
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

    fn refusing(rate: Option<f64>, at: u64) -> MetricSnapshot {
        let mut s = snapshot(ContainerState::Running, Some(true), at);
        s.features.remove(feature::REJECTED_RATE);
        if let Some(rate) = rate {
            s.features.insert(feature::REJECTED_RATE.to_string(), rate);
        }
        s
    }

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

    #[test]
    fn without_chaos_the_anomaly_is_its_own_correlation() {
        let mut rules = RuleEngine::new(RuleConfig::default());
        let fired = rules
            .on_snapshot(&snapshot(ContainerState::Paused, None, 1))
            .expect("fires");
        assert_eq!(fired.correlation_id, fired.anomaly.anomaly_id);
    }
}
