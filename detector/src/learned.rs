//! The learned detector on live snapshots: one [`Learner`] (model) per service, one [`Track`]
//! (lag window, hysteresis, episode) per instance, so replicas share what normal looks like
//! and each one opens its own episode.
//!
//! A service's columns are every feature its first [`COLUMN_DISCOVERY_SNAPSHOTS`] snapshots
//! carried: rates, ratios, latency quantiles and CPU need two scrapes, so the very first
//! snapshot of a container holds only what one reading gives (memory, in-flight, probe).
//!
//! What is learned from: a window under a chaos injection, or of an instance the rules judge
//! faulty, is judged but never enters a baseline or a refit. A replica of a service that
//! serves traffic is neither judged nor learned from until it has served a request itself:
//! a replica just made by `scale_out` is idle, not a `traffic_drop`.
//!
//! Replicas share the load: the features that grow with it ([`LOAD_FEATURES`]) are judged
//! as the service's, each replica's reading times the number of its replicas serving now
//! (round robin spreads calls evenly), so a `scale_out` does not halve every replica's
//! request rate into a `traffic_drop`, and a model learned on one replica holds for three.
//!
//! More users or fewer, all served as usual ([`only_the_load_moved`]: only the request
//! rate, in-flight and CPU moved, all the same way) is not an anomaly a healer should act on
//! (a burst, a quiet night): the episode is held back, and fires only if, while it lasts,
//! users start to feel it (an `overload` when the load is up).
//!
//! Pure, like the rules: fed snapshots, returns anomalies to publish and models to store.

use std::collections::{BTreeSet, HashMap};

use immune_nats::{
    Anomaly, AnomalyState, ContainerEvent, ContainerState, MetricSnapshot, ServiceName,
};

use crate::baseline::{
    classify, only_the_load_moved, Learned, LearnedConfig, Learner, Model, Track, Transition,
};
use crate::rules::Finding;

/// The name learned anomalies carry in `Anomaly::detector`.
pub const DETECTOR: &str = "pca";

/// Snapshots of a new service whose feature names together make its model's columns.
pub const COLUMN_DISCOVERY_SNAPSHOTS: u32 = 5;

/// Features that grow with the load a replica takes, so with the number of replicas sharing
/// it: judged per service (see the module header).
pub const LOAD_FEATURES: [&str; 3] = [
    immune_nats::feature::REQUEST_RATE,
    immune_nats::feature::REJECTED_RATE,
    immune_nats::feature::IN_FLIGHT,
];

/// An instance whose last snapshot is older than this many of its own intervals no longer
/// shares the load (stopped, hung, or gone).
const STALE_INTERVALS: u64 = 3;

/// What one snapshot led to.
#[derive(Debug, Default)]
pub struct Outcome {
    pub finding: Option<Finding>,
    /// A model fitted just now, to store so a restarted detector resumes with it.
    pub fitted: Option<Model>,
    /// Why a fit failed (counted by the caller).
    pub fit_error: Option<String>,
    /// The window is over the threshold only because the load moved, users served as
    /// usual: held back, not fired (counted by the caller).
    pub only_the_load_moved: bool,
}

#[derive(Debug)]
struct Instance {
    track: Track,
    episode: Option<(Anomaly, String)>,
    /// It has served a request (its request rate was above 0 once).
    served: bool,
    /// When its last running snapshot was taken, and the interval before it.
    last_ms: u64,
    interval_ms: u64,
}

impl Instance {
    fn new(config: &LearnedConfig) -> Self {
        Self {
            track: Track::new(config),
            episode: None,
            served: false,
            last_ms: 0,
            interval_ms: 0,
        }
    }

    /// It serves its share of the load at `now_ms`.
    fn sharing(&self, now_ms: u64) -> bool {
        self.served
            && now_ms.saturating_sub(self.last_ms) <= STALE_INTERVALS * self.interval_ms.max(1)
    }
}

/// What else is known about a snapshot when the learned detector judges it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Context<'a> {
    /// The chaos run in force on the service, if any: its id labels the anomaly, and the
    /// window is not learned from.
    pub chaos_run: Option<&'a str>,
    /// The rules have an episode open on this instance: not learned from.
    pub faulty: bool,
}

#[derive(Debug)]
pub struct LearnedDetector {
    config: LearnedConfig,
    learners: HashMap<ServiceName, Learner>,
    /// Services still gathering their columns: the names seen, and in how many snapshots.
    discovering: HashMap<ServiceName, (BTreeSet<String>, u32)>,
    instances: HashMap<(ServiceName, String), Instance>,
    /// Services one of whose instances has served a request: their instances are held out
    /// until they serve one too (a service with no request rate is never held out).
    serving: std::collections::HashSet<ServiceName>,
    window: Vec<f64>,
}

impl LearnedDetector {
    pub fn new(config: LearnedConfig) -> Self {
        Self {
            config,
            learners: HashMap::new(),
            discovering: HashMap::new(),
            instances: HashMap::new(),
            serving: std::collections::HashSet::new(),
            window: Vec::new(),
        }
    }

    /// Whether `service` has neither a model nor a warm-up in progress (so a stored model
    /// should be looked up first).
    pub fn knows(&self, service: &ServiceName) -> bool {
        self.learners.contains_key(service)
    }

    /// Resumes `service` from a stored model: no warm-up.
    pub fn resume(&mut self, service: ServiceName, model: Model) {
        self.learners
            .insert(service, Learner::resume(model, self.config.clone()));
    }

    /// The episodes of `service` that fired and have not cleared, in a stable order.
    pub fn open_episodes(&self, service: &ServiceName) -> Vec<Finding> {
        let mut open: Vec<Finding> = self
            .instances
            .iter()
            .filter(|((s, _), _)| s == service)
            .filter_map(|(_, i)| i.episode.clone())
            .map(|(anomaly, correlation_id)| Finding {
                anomaly,
                correlation_id,
            })
            .collect();
        open.sort_by(|a, b| a.anomaly.anomaly_id.cmp(&b.anomaly.anomaly_id));
        open
    }

    /// Takes back an episode an earlier life of the detector fired and did not clear: it
    /// clears, with the same anomaly id, after n quiet windows. Returns false for an anomaly
    /// this detector did not fire.
    pub fn restore(&mut self, open: Finding) -> bool {
        if open.anomaly.detector != DETECTOR {
            return false;
        }
        let mut instance = Instance::new(&self.config);
        instance.track.reopen();
        instance.served = true;
        instance.episode = Some((open.anomaly.clone(), open.correlation_id));
        self.instances.insert(
            (open.anomaly.service.clone(), open.anomaly.instance.clone()),
            instance,
        );
        true
    }

    /// The container was destroyed: its track is forgotten and its open episode clears,
    /// when it belongs to that container (see [`crate::rules::RuleEngine::on_removed`]).
    pub fn on_removed(&mut self, event: &ContainerEvent) -> Option<Finding> {
        let key = (event.service.clone(), event.instance.clone());
        let instance = self.instances.get(&key)?;
        let ours = instance
            .episode
            .as_ref()
            .is_none_or(|(a, _)| a.container_id == event.container_id);
        if !ours {
            return None;
        }
        let (anomaly, correlation_id) = self.instances.remove(&key)?.episode?;
        Some(Finding {
            anomaly: crate::rules::removed(anomaly, event.observed_ms),
            correlation_id,
        })
    }

    pub fn model(&self, service: &ServiceName) -> Option<&Model> {
        self.learners.get(service).and_then(Learner::model)
    }

    /// Judges one snapshot. Only running, healthy, scraped instances are learned from and
    /// scored: a container that is down or hung is the rules' business.
    pub fn on_snapshot(&mut self, snapshot: &MetricSnapshot, context: Context<'_>) -> Outcome {
        let chaos_run = context.chaos_run;
        let mut outcome = Outcome::default();
        let healthy = snapshot.health.as_ref().is_none_or(|h| h.ok);
        let scraped = snapshot.scrape.as_ref().is_none_or(|s| s.ok);
        if !self.config.enabled
            || snapshot.state != ContainerState::Running
            || !healthy
            || !scraped
            || snapshot.features.is_empty()
        {
            return outcome;
        }
        let config = &self.config;
        if !self.learners.contains_key(&snapshot.service) {
            let (names, seen) = self
                .discovering
                .entry(snapshot.service.clone())
                .or_default();
            names.extend(
                snapshot
                    .features
                    .keys()
                    .filter(|k| !config.ignore_features.contains(k))
                    .cloned(),
            );
            *seen += 1;
            if *seen < COLUMN_DISCOVERY_SNAPSHOTS {
                return outcome;
            }
            let base: Vec<String> = names.iter().cloned().collect();
            self.discovering.remove(&snapshot.service);
            self.learners.insert(
                snapshot.service.clone(),
                Learner::new(
                    crate::baseline::Lags::new(config.lags).columns(&base),
                    config.clone(),
                ),
            );
        }
        let Some(learner) = self.learners.get_mut(&snapshot.service) else {
            return outcome;
        };
        let now = snapshot.observed_ms;
        let key = (snapshot.service.clone(), snapshot.instance.clone());
        let instance = self
            .instances
            .entry(key.clone())
            .or_insert_with(|| Instance::new(config));
        if instance.last_ms > 0 {
            instance.interval_ms = now.saturating_sub(instance.last_ms);
        }
        instance.last_ms = now;
        let rate = snapshot.features.get(immune_nats::feature::REQUEST_RATE);
        // (a container's first snapshot has no rate at all: rates need two scrapes)
        instance.served |= rate.is_some_and(|r| *r > 0.0);
        if instance.served {
            self.serving.insert(snapshot.service.clone());
        } else if self.serving.contains(&snapshot.service) {
            return outcome; // a replica no request has reached yet
        }
        let replicas = self
            .instances
            .iter()
            .filter(|((s, _), i)| *s == snapshot.service && i.sharing(now))
            .count()
            .max(1) as f64;
        let base_len = learner.columns().len() / config.lags.max(1);
        self.window.clear();
        self.window
            .extend(learner.columns()[..base_len].iter().map(|c| {
                let value = snapshot.features.get(c).copied().unwrap_or(f64::NAN);
                if LOAD_FEATURES.contains(&c.as_str()) {
                    value * replicas
                } else {
                    value
                }
            }));
        let Some(instance) = self.instances.get_mut(&key) else {
            return outcome;
        };
        let learn = chaos_run.is_none() && !context.faulty;
        // A published episode closes once users are served as usual again, the load still
        // high (an overload repaired by added capacity); one held back as "only the load
        // moved" is left to the plain threshold.
        let served: fn(&Model, &[f64]) -> bool = if instance.episode.is_some() {
            |model, x| only_the_load_moved(&model.explain(x))
        } else {
            |_, _| false
        };
        let step = instance
            .track
            .step_learning(learner, &self.window, learn, served);
        match step.learned {
            Learned::Fitted { .. } => outcome.fitted = learner.model().cloned(),
            Learned::Failed(e) => outcome.fit_error = Some(e.to_string()),
            Learned::Nothing => {}
        }
        let (Some(judgement), Some(model)) = (step.judgement, learner.model()) else {
            return outcome;
        };
        // (an episode held back as "only the load moved" fires once users feel it)
        let held_back = instance.track.is_open() && instance.episode.is_none();
        let opens = step.transition == Transition::Opened
            || (step.transition == Transition::Unchanged && held_back && judgement.exceeds);
        match step.transition {
            _ if opens => {
                let contributions = model.explain(instance.track.last_vector());
                if only_the_load_moved(&contributions) {
                    outcome.only_the_load_moved = true;
                    return outcome;
                }
                let signature = classify(model, &contributions);
                let top = attached(contributions, replicas);
                let why = top
                    .iter()
                    .take(3)
                    .map(|c| {
                        format!(
                            "{} {} ({:.3} vs {:.3} normally, {:.0}% of the score)",
                            c.metric,
                            match c.direction {
                                immune_nats::Direction::Up => "up",
                                immune_nats::Direction::Down => "down",
                            },
                            c.value,
                            c.expected,
                            100.0 * c.share
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                let anomaly_id = crate::episodes::anomaly_id(
                    DETECTOR,
                    &snapshot.service,
                    &snapshot.instance,
                    snapshot.observed_ms,
                );
                let correlation = chaos_run.map_or_else(|| anomaly_id.clone(), str::to_string);
                let anomaly = Anomaly {
                    anomaly_id,
                    service: snapshot.service.clone(),
                    instance: snapshot.instance.clone(),
                    container_id: snapshot.container_id.clone(),
                    state: AnomalyState::Firing,
                    signature,
                    detector: DETECTOR.to_string(),
                    score: judgement.level,
                    threshold: judgement.threshold,
                    contributions: top,
                    reason: format!(
                        "{signature}: {why}; {} {:.1} over threshold {:.1} (SPE {:.1}, T² {:.1}) in {} of the last {} windows",
                        if model.smooth > 1 {
                            format!("score over the last {} windows", model.smooth)
                        } else {
                            "score".to_string()
                        },
                        judgement.level,
                        judgement.threshold,
                        judgement.score.spe,
                        judgement.score.t2,
                        config.k,
                        config.n
                    ),
                    started_ms: snapshot.observed_ms,
                    depends_on: Vec::new(),
                };
                instance.episode = Some((anomaly.clone(), correlation.clone()));
                outcome.finding = Some(Finding {
                    anomaly,
                    correlation_id: correlation,
                });
            }
            Transition::Closed | Transition::Accepted => {
                if let Some((mut anomaly, correlation)) = instance.episode.take() {
                    let lasted = snapshot.observed_ms.saturating_sub(anomaly.started_ms);
                    anomaly.state = AnomalyState::Cleared;
                    anomaly.score = judgement.level;
                    anomaly.contributions.clear();
                    anomaly.reason = if step.transition == Transition::Accepted {
                        format!(
                            "open for {} windows ({lasted} ms) without returning to normal: taken as the new normal, model refitted on it",
                            config.max_episode
                        )
                    } else {
                        format!(
                            "back under the threshold for {} windows after {lasted} ms",
                            config.n
                        )
                    };
                    outcome.finding = Some(Finding {
                        anomaly,
                        correlation_id: correlation,
                    });
                }
            }
            Transition::Opened | Transition::Unchanged => {}
        }
        outcome
    }
}

/// The contributions an anomaly carries: the five largest, and the request rate whatever
/// its share (the load, from which the decider derives a throttle), load features as this
/// replica saw them (its share of the service's, see the module header).
fn attached(
    contributions: Vec<immune_nats::Contribution>,
    replicas: f64,
) -> Vec<immune_nats::Contribution> {
    let rate = immune_nats::feature::REQUEST_RATE;
    let mut top: Vec<_> = contributions.iter().take(5).cloned().collect();
    if !top.iter().any(|c| c.metric == rate) {
        top.extend(contributions.into_iter().find(|c| c.metric == rate));
    }
    for c in &mut top {
        if LOAD_FEATURES.contains(&c.metric.as_str()) {
            c.value /= replicas;
            c.expected /= replicas;
        }
    }
    top
}

#[cfg(test)]
mod tests {
    use super::*;
    use immune_nats::{feature, samples, Signature};

    /// Snapshots a new service spends gathering its columns before its baseline starts.
    const SKIPPED: u64 = COLUMN_DISCOVERY_SNAPSHOTS as u64 - 1;

    fn snapshot(at: u64, p99: f64, rate: f64) -> MetricSnapshot {
        let mut s = samples::metric_snapshot();
        s.observed_ms = at;
        s.features.clear();
        let wiggle = ((at * 7919) % 13) as f64 / 13.0;
        s.features
            .insert(feature::REQUEST_RATE.into(), rate + 2.0 * wiggle);
        s.features.insert(feature::ERROR_RATIO.into(), 0.0);
        s.features
            .insert(feature::LATENCY_P50_MS.into(), 4.0 + 0.5 * wiggle);
        s.features
            .insert(feature::LATENCY_P99_MS.into(), p99 + wiggle);
        s.features.insert(feature::HEALTH_OK.into(), 1.0);
        s
    }

    #[test]
    fn a_latency_fault_fires_latency_up_then_clears_and_models_are_handed_out() {
        let config = LearnedConfig {
            baseline: 60,
            ..Default::default()
        };
        let mut detector = LearnedDetector::new(config);
        let mut fitted = None;
        for at in 0..60 + SKIPPED {
            let out = detector.on_snapshot(&snapshot(at, 20.0, 50.0), Context::default());
            assert!(out.finding.is_none());
            fitted = fitted.or(out.fitted);
        }
        let model = fitted.expect("a model after the baseline");
        assert!(!model.columns.contains(&feature::HEALTH_OK.to_string()));
        let mut fired = None;
        for at in 60 + SKIPPED..70 + SKIPPED {
            if let Some(f) = detector
                .on_snapshot(
                    &snapshot(at, 400.0, 50.0),
                    Context {
                        chaos_run: Some("run-1"),
                        ..Default::default()
                    },
                )
                .finding
            {
                fired = Some((at, f));
                break;
            }
        }
        let (at, finding) = fired.expect("fires");
        assert_eq!(at, 62 + SKIPPED, "k = 3 windows");
        assert_eq!(finding.anomaly.signature, Signature::LatencyUp);
        assert_eq!(finding.anomaly.detector, DETECTOR);
        assert_eq!(finding.correlation_id, "run-1");
        assert_eq!(
            finding.anomaly.contributions[0].metric,
            feature::LATENCY_P99_MS
        );
        assert!(finding.anomaly.score > finding.anomaly.threshold);
        let mut cleared = None;
        for at in 70 + SKIPPED..80 + SKIPPED {
            if let Some(f) = detector
                .on_snapshot(&snapshot(at, 20.0, 50.0), Context::default())
                .finding
            {
                cleared = Some(f);
                break;
            }
        }
        let cleared = cleared.expect("clears");
        assert_eq!(cleared.anomaly.state, AnomalyState::Cleared);
        assert_eq!(cleared.anomaly.anomaly_id, finding.anomaly.anomaly_id);
        assert_eq!(cleared.correlation_id, "run-1");
    }

    #[test]
    fn a_removed_container_clears_its_learned_episode() {
        let config = LearnedConfig {
            baseline: 60,
            ..Default::default()
        };
        let (mut detector, _) = trained(&config);
        let fired = (60 + SKIPPED..70 + SKIPPED)
            .find_map(|at| {
                detector
                    .on_snapshot(&snapshot(at, 400.0, 50.0), Context::default())
                    .finding
            })
            .expect("fires");
        let service = fired.anomaly.service.clone();
        let mut destroyed = samples::container_event();
        destroyed.kind = immune_nats::ContainerEventKind::Destroyed;
        destroyed.observed_ms = fired.anomaly.started_ms + 1_000;
        destroyed.container_id = "another".into();
        assert!(
            detector.on_removed(&destroyed).is_none(),
            "not its container"
        );
        destroyed.container_id = fired.anomaly.container_id.clone();
        let cleared = detector.on_removed(&destroyed).expect("clears");
        assert_eq!(cleared.anomaly.anomaly_id, fired.anomaly.anomaly_id);
        assert_eq!(cleared.anomaly.state, AnomalyState::Cleared);
        assert!(cleared
            .anomaly
            .reason
            .starts_with("container removed after 1000 ms"));
        assert!(detector.open_episodes(&service).is_empty());
        assert!(detector.on_removed(&destroyed).is_none(), "cleared once");
    }

    /// A detector that learned its baseline of normal snapshots, and the model it fitted.
    fn trained(config: &LearnedConfig) -> (LearnedDetector, Model) {
        let mut detector = LearnedDetector::new(config.clone());
        let mut model = None;
        for at in 0..config.baseline as u64 + SKIPPED {
            model = model.or(detector
                .on_snapshot(&snapshot(at, 20.0, 50.0), Context::default())
                .fitted);
        }
        (detector, model.expect("a model after the baseline"))
    }

    #[test]
    fn a_resumed_model_scores_at_once() {
        let config = LearnedConfig {
            baseline: 60,
            ..Default::default()
        };
        let (_, model) = trained(&config);
        let service = samples::metric_snapshot().service;
        let mut second = LearnedDetector::new(config);
        second.resume(service, model);
        let fired = (0..3)
            .filter_map(|at| {
                second
                    .on_snapshot(&snapshot(at, 400.0, 50.0), Context::default())
                    .finding
            })
            .next()
            .expect("fires within k windows, no warm-up");
        assert_eq!(fired.anomaly.signature, Signature::LatencyUp);
    }

    #[test]
    fn a_restarted_detector_clears_the_episode_its_previous_life_fired() {
        let config = LearnedConfig {
            baseline: 60,
            ..Default::default()
        };
        let (mut first, model) = trained(&config);
        let fired = (60 + SKIPPED..70 + SKIPPED)
            .find_map(|at| {
                first
                    .on_snapshot(&snapshot(at, 400.0, 50.0), Context::default())
                    .finding
            })
            .expect("fires");
        let service = fired.anomaly.service.clone();
        let open = first.open_episodes(&service);
        assert_eq!(open, vec![fired.clone()]);

        let mut second = LearnedDetector::new(config.clone());
        second.resume(service.clone(), model);
        assert!(second.restore(open[0].clone()));
        let mut rule = fired.clone();
        rule.anomaly.detector = "rule:container_died".into();
        assert!(!second.restore(rule), "not the learned detector's episode");
        let mut cleared = None;
        let mut quiet = 0u32;
        for at in 0..20 {
            quiet += 1;
            if let Some(f) = second
                .on_snapshot(&snapshot(at, 20.0, 50.0), Context::default())
                .finding
            {
                cleared = Some(f);
                break;
            }
        }
        let cleared = cleared.expect("clears in the second life");
        assert_eq!(cleared.anomaly.state, AnomalyState::Cleared);
        assert_eq!(cleared.anomaly.anomaly_id, fired.anomaly.anomaly_id);
        assert!(
            quiet >= config.n,
            "n quiet windows close it, as in the first life: {quiet}"
        );
        assert!(second.open_episodes(&service).is_empty());
    }

    /// A container's first snapshot holds no rates (they need two scrapes): the model must
    /// still learn the error ratio, and an error storm must fire.
    #[test]
    fn features_missing_from_the_first_snapshot_are_columns_too() {
        let config = LearnedConfig {
            baseline: 60,
            ..Default::default()
        };
        let mut detector = LearnedDetector::new(config);
        let mut first = snapshot(0, 20.0, 50.0);
        first.features.retain(|k, _| k == feature::HEALTH_OK);
        first.features.insert(feature::IN_FLIGHT.into(), 1.0);
        let mut fitted = detector.on_snapshot(&first, Context::default()).fitted;
        for at in 1..60 + SKIPPED {
            fitted = fitted.or(detector
                .on_snapshot(&snapshot(at, 20.0, 50.0), Context::default())
                .fitted);
        }
        let model = fitted.expect("a model after the baseline");
        assert!(
            model.columns.contains(&feature::ERROR_RATIO.to_string()),
            "{:?}",
            model.columns
        );
        let storm = |at| {
            let mut s = snapshot(at, 20.0, 50.0);
            s.features.insert(feature::ERROR_RATIO.into(), 0.5);
            s
        };
        let fired = (60 + SKIPPED..70 + SKIPPED)
            .find_map(|at| detector.on_snapshot(&storm(at), Context::default()).finding)
            .expect("an error storm fires");
        assert_eq!(fired.anomaly.signature, Signature::ErrorsUp);
        assert_eq!(fired.anomaly.contributions[0].metric, feature::ERROR_RATIO);
    }

    fn on(instance: &str, mut s: MetricSnapshot) -> MetricSnapshot {
        s.instance = instance.to_string();
        s.container_id = format!("id-{instance}");
        s
    }

    /// With `warmup`, a fresh service is judged within a minute of its first snapshot, and a
    /// fault then fires as it does with the full baseline.
    #[test]
    fn a_warm_up_model_detects_within_a_minute_and_stays_quiet_on_normal_traffic() {
        let config = LearnedConfig {
            warmup: 30,
            ..Default::default()
        };
        let mut detector = LearnedDetector::new(config);
        let mut first_model_at = None;
        for at in 0..600 {
            let out = detector.on_snapshot(&snapshot(at, 20.0, 50.0), Context::default());
            assert!(
                out.finding.is_none(),
                "a false alarm at {at}: {:?}",
                out.finding
            );
            if out.fitted.is_some() && first_model_at.is_none() {
                first_model_at = Some(at);
            }
        }
        let ready = first_model_at.expect("a warm-up model");
        assert!(ready < 60, "ready {ready} snapshots after the first");
        let model = detector
            .model(&samples::metric_snapshot().service)
            .expect("model");
        assert!(
            model.fitted_on >= 300,
            "refined up to the baseline: {}",
            model.fitted_on
        );

        // a fresh detector, faulted right after its warm-up
        let mut detector = LearnedDetector::new(LearnedConfig {
            warmup: 30,
            ..Default::default()
        });
        for at in 0..40 {
            detector.on_snapshot(&snapshot(at, 20.0, 50.0), Context::default());
        }
        let fired = (40..50)
            .find_map(|at| {
                detector
                    .on_snapshot(&snapshot(at, 400.0, 50.0), Context::default())
                    .finding
            })
            .expect("a latency fault fires on the warm-up model");
        assert_eq!(fired.anomaly.signature, Signature::LatencyUp);
    }

    #[test]
    fn windows_under_chaos_or_a_hard_fault_are_never_learned() {
        let config = LearnedConfig {
            warmup: 30,
            ..Default::default()
        };
        let chaos = Context {
            chaos_run: Some("run-1"),
            ..Default::default()
        };
        let faulty = Context {
            faulty: true,
            ..Default::default()
        };
        let mut detector = LearnedDetector::new(config);
        // the whole warm-up under a latency injection, then a hard fault: nothing learned
        for at in 0..200 {
            let context = if at < 100 { chaos } else { faulty };
            let out = detector.on_snapshot(&snapshot(at, 400.0, 50.0), context);
            assert!(out.fitted.is_none(), "learned from a faulty window at {at}");
        }
        // normal again: the warm-up starts from here, and the fault is not normal
        let fitted = (200..240)
            .find_map(|at| {
                detector
                    .on_snapshot(&snapshot(at, 20.0, 50.0), Context::default())
                    .fitted
            })
            .expect("a model from the normal windows");
        assert!(
            fitted.median[fitted
                .columns
                .iter()
                .position(|c| c == feature::LATENCY_P99_MS)
                .expect("p99")]
                < 30.0
        );
        let fired = (240..260).find_map(|at| {
            detector
                .on_snapshot(&snapshot(at, 400.0, 50.0), chaos)
                .finding
        });
        assert!(
            fired.is_some(),
            "the injected fault is detected, not learned"
        );
    }

    /// A model belongs to the service: a new replica is judged by it from its first
    /// snapshot, once a request has reached it; until then it is idle, not a traffic drop.
    #[test]
    fn a_new_replica_uses_the_service_model_and_is_not_judged_before_its_first_request() {
        let config = LearnedConfig {
            baseline: 60,
            ..Default::default()
        };
        let mut detector = LearnedDetector::new(config);
        for at in 0..60 + SKIPPED {
            detector.on_snapshot(&on("a", snapshot(at, 20.0, 50.0)), Context::default());
        }
        assert!(detector
            .model(&samples::metric_snapshot().service)
            .is_some());
        let idle = |at| {
            let mut s = on("b", snapshot(at, 20.0, 0.0));
            s.features.insert(feature::REQUEST_RATE.into(), 0.0);
            s
        };
        // its very first snapshot carries no rate yet (rates need two scrapes)
        let mut first = idle(99);
        first.features.remove(feature::REQUEST_RATE);
        assert!(detector
            .on_snapshot(&first, Context::default())
            .finding
            .is_none());
        for at in 100..200 {
            let out = detector.on_snapshot(&idle(at), Context::default());
            assert!(
                out.finding.is_none(),
                "an idle replica fired: {:?}",
                out.finding
            );
        }
        // its first requests: judged at once, with the service's model (a slow replica fires)
        let fired = (200..210)
            .find_map(|at| {
                detector
                    .on_snapshot(&on("b", snapshot(at, 400.0, 50.0)), Context::default())
                    .finding
            })
            .expect("the replica is judged by the service's model");
        assert_eq!(fired.anomaly.instance, "b");
        assert_eq!(fired.anomaly.signature, Signature::LatencyUp);
    }

    /// After a `scale_out` each replica takes half the load: nothing moved for the service,
    /// and an anomaly on one of them carries the load it saw, for the throttle.
    #[test]
    fn replicas_share_the_load_and_a_scale_out_is_not_a_traffic_drop() {
        let config = LearnedConfig {
            baseline: 60,
            ..Default::default()
        };
        let (mut detector, _) = trained(&config);
        let start = 60 + SKIPPED;
        let a = samples::metric_snapshot().instance; // the replica it was trained on
                                                     // each replica serves half of what one served alone, noise included
        let half = |at, p99| {
            let mut s = snapshot(at, p99, 50.0);
            if let Some(rate) = s.features.get_mut(feature::REQUEST_RATE) {
                *rate /= 2.0;
            }
            s
        };
        for at in start..start + 100 {
            // (the new replica's first served snapshot comes first: in the other order the
            // original's one window at half the load, counted alone, dips)
            for replica in ["b", a.as_str()] {
                let out = detector
                    .on_snapshot(&on(replica, snapshot(at, 20.0, 25.0)), Context::default());
                assert!(
                    out.finding.is_none(),
                    "{replica} at half the load fired: {:?}",
                    out.finding
                );
            }
        }
        // one replica slows: it fires latency, with the request rate it served
        let fired = (start + 100..start + 110)
            .find_map(|at| {
                detector.on_snapshot(&on("b", half(at, 20.0)), Context::default());
                detector
                    .on_snapshot(&on(&a, half(at, 400.0)), Context::default())
                    .finding
            })
            .expect("the slow replica fires");
        assert_eq!(fired.anomaly.signature, Signature::LatencyUp);
        let rate = fired
            .anomaly
            .contributions
            .iter()
            .find(|c| c.metric == feature::REQUEST_RATE)
            .expect("the load is carried");
        assert!(
            (20.0..35.0).contains(&rate.value) && (20.0..35.0).contains(&rate.expected),
            "its share of 50 req/s: {rate:?}"
        );
        // one replica alone at half the load is a drop, of the load only: held back
        let (mut alone, _) = trained(&config);
        let mut held = false;
        for at in start..start + 10 {
            let out = alone.on_snapshot(&half(at, 20.0), Context::default());
            assert!(out.finding.is_none(), "{:?}", out.finding);
            held |= out.only_the_load_moved;
        }
        assert!(held, "over the threshold, the load alone");
    }

    /// An overload's episode closes once users are served as usual again (capacity added:
    /// the latency back, the load still high), not only once the load falls: otherwise no
    /// repair of an overload could ever be verified while the spike lasts.
    #[test]
    fn an_overload_clears_once_users_are_served_again_under_the_same_load() {
        let config = LearnedConfig {
            baseline: 60,
            ..Default::default()
        };
        let (mut detector, _) = trained(&config);
        let start = 60 + SKIPPED;
        let fired = (start..start + 10)
            .find_map(|at| {
                detector
                    .on_snapshot(&snapshot(at, 400.0, 150.0), Context::default())
                    .finding
            })
            .expect("the overload fires");
        assert_eq!(fired.anomaly.signature, Signature::Overload);
        let cleared = (start + 10..start + 25).find_map(|at| {
            detector
                .on_snapshot(&snapshot(at, 20.0, 150.0), Context::default())
                .finding
                .filter(|f| f.anomaly.state == AnomalyState::Cleared)
                .map(|_| at - start - 10)
        });
        assert!(
            cleared.is_some_and(|windows| windows <= 8),
            "still firing under the same load, served as usual: {cleared:?}"
        );
    }

    /// A burst of users served as fast as ever is not an anomaly to act on, nor is a quiet
    /// period; the same burst slowing the service is, as an overload.
    #[test]
    fn only_the_load_moving_is_held_back_until_users_feel_it() {
        let config = LearnedConfig {
            baseline: 60,
            ..Default::default()
        };
        let (mut detector, _) = trained(&config);
        let start = 60 + SKIPPED;
        let mut held = 0;
        for at in start..start + 30 {
            let out = detector.on_snapshot(&snapshot(at, 20.0, 150.0), Context::default());
            assert!(out.finding.is_none(), "a burst fired: {:?}", out.finding);
            held += usize::from(out.only_the_load_moved);
        }
        assert!(held > 0, "the burst was over the threshold and held back");
        let (mut quiet, _) = trained(&config);
        for at in start..start + 30 {
            let out = quiet.on_snapshot(&snapshot(at, 20.0, 5.0), Context::default());
            assert!(
                out.finding.is_none(),
                "a quiet period fired: {:?}",
                out.finding
            );
            assert!(at < start + 3 || out.only_the_load_moved);
        }
        let fired = (start + 30..start + 40)
            .find_map(|at| {
                detector
                    .on_snapshot(&snapshot(at, 400.0, 150.0), Context::default())
                    .finding
            })
            .expect("users feel it: it fires");
        assert_eq!(fired.anomaly.signature, Signature::Overload);
    }
}
