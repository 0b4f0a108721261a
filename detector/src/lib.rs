//! The detector: turns metric snapshots and container events into anomalies.
//!
//! Two detectors share the stage. [`rules`] catch hard faults with no warm-up (died,
//! OOM-killed, paused, health failing N times). [`baseline`] learns each service's normal
//! behaviour (robust standardisation + PCA, SPE and Hotelling's T², a threshold calibrated on
//! the baseline's own scores, k-of-n hysteresis, refits that leave anomalies out) and says
//! why a vector is abnormal: which metrics, which way, what kind of trouble ([`learned`] runs
//! it on live snapshots). Models are stored in a key-value bucket ([`snapshot`]) so a
//! restarted detector resumes at once, and so are open episodes ([`episodes`]), so it clears
//! what its previous life fired.
//!
//! Each anomaly episode is published twice on `immune.anomalies.<service>`: `Firing` when it
//! opens, `Cleared` when it ends (for rules: running and healthy again; learned: n quiet
//! windows). Chaos events are read only to put the chaos run id on anomalies as their
//! correlation id, so a run can be followed end to end.
//!
//! [`eval`] runs the same code over NAB and ASD offline; [`replay`] re-scores a stored range
//! of the metrics stream with another configuration.

pub mod baseline;
pub mod episodes;
pub mod eval;
pub mod learned;
pub mod replay;
pub mod rules;
pub mod snapshot;

use async_nats::jetstream::kv;
use std::collections::{HashMap, HashSet};

use immune_nats::streams::{DETECTOR_EVENTS, DETECTOR_METRICS, DETECTOR_MODELS};
use immune_nats::{
    AnomalyState, AuditCode, ContainerEventKind, Event, MetricSnapshot, ServiceName, SnapshotScope,
    Stage,
};
use immune_runtime::telemetry::Observation;
use immune_runtime::{
    Audit, Bus, BusConfig, BusError, Delivery, Disposition, Shutdown, Telemetry, TelemetryConfig,
};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

pub use baseline::LearnedConfig;
pub use learned::LearnedDetector;
pub use rules::{Finding, RuleConfig, RuleEngine};

pub const STAGE: Stage = Stage::Detector;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub nats: BusConfig,
    pub telemetry: TelemetryConfig,
    pub rules: RuleConfig,
    pub learned: LearnedConfig,
    /// Settings of `immune-detector eval` (not used by the live stage).
    pub eval: eval::EvalConfig,
}

impl Config {
    pub fn validate(&self) -> Result<(), immune_runtime::ConfigError> {
        let invalid = immune_runtime::ConfigError::Invalid;
        if self.rules.health_failures == 0 {
            return Err(invalid("rules.health_failures: must be at least 1".into()));
        }
        if !(self.rules.attack_rejected_rate.is_finite() && self.rules.attack_rejected_rate >= 0.0)
        {
            return Err(invalid(
                "rules.attack_rejected_rate: must be a number of at least 0".into(),
            ));
        }
        if self.rules.attack_snapshots == 0 {
            return Err(invalid("rules.attack_snapshots: must be at least 1".into()));
        }
        self.learned.validate("learned").map_err(invalid)?;
        self.eval
            .validate()
            .map_err(|e| invalid(e.to_string().replace("invalid configuration: ", "")))?;
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DetectorError {
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// Both detectors and where models and open episodes are kept.
#[derive(Debug)]
struct Detectors {
    rules: RuleEngine,
    learned: LearnedDetector,
    store: kv::Store,
    learn: bool,
    /// Services whose stored open episodes were taken back (or found to be none).
    restored: HashSet<ServiceName>,
    /// Which services each service calls, from the latest snapshot's labels; every anomaly
    /// carries it so the decider can find the root cause.
    topology: HashMap<ServiceName, Vec<ServiceName>>,
}

/// Runs until `shutdown`.
pub async fn run(
    config: Config,
    telemetry: Telemetry,
    mut shutdown: Shutdown,
) -> Result<(), DetectorError> {
    let bus = Bus::start_stage(
        &config.nats,
        &config.telemetry,
        telemetry.clone(),
        &shutdown,
    )
    .await?;
    let mut metrics = bus.inbox(DETECTOR_METRICS).await?;
    let mut events = bus.inbox(DETECTOR_EVENTS).await?;
    let mut detectors = Detectors {
        rules: RuleEngine::new(config.rules.clone()),
        learned: LearnedDetector::new(config.learned.clone()),
        store: bus.bucket(DETECTOR_MODELS).await?,
        learn: config.learned.enabled,
        restored: HashSet::new(),
        topology: HashMap::new(),
    };
    tracing::info!(learned = config.learned.enabled, "detector running");
    loop {
        let delivery = tokio::select! {
            _ = shutdown.wait() => break,
            d = metrics.next() => d,
            d = events.next() => d,
        };
        let disposition = handle(&bus, &mut detectors, &delivery)
            .instrument(delivery.span().clone())
            .await;
        delivery.settle(disposition).await;
    }
    bus.close().await;
    tracing::info!("detector stopped");
    Ok(())
}

/// Feeds one delivery to the detectors, publishes what they found and stores the services'
/// open episodes; done then. A publish failure leaves the delivery unacknowledged: it comes
/// back and is judged again.
async fn handle(bus: &Bus, detectors: &mut Detectors, delivery: &Delivery) -> Disposition {
    let about = match &delivery.envelope.body {
        Event::MetricSnapshot(s) if s.scope != SnapshotScope::Service => Some(&s.service),
        Event::ContainerEvent(e) => Some(&e.service),
        Event::ChaosInjected(c) => Some(&c.service),
        Event::ChaosReverted(c) => Some(&c.service),
        _ => None,
    };
    if let Some(service) = about {
        restore(bus, detectors, service).await;
    }
    let mut findings = Vec::new();
    match &delivery.envelope.body {
        // Rules and the learned model judge instances (an action needs a container); a
        // service roll-up is for dashboards and the scorecard.
        Event::MetricSnapshot(s) if s.scope == SnapshotScope::Service => {}
        Event::MetricSnapshot(s) if !detectors.rules.fresh(s) => {
            bus.telemetry()
                .refused("stale_snapshot", "older than one already judged");
        }
        Event::MetricSnapshot(s) => {
            detectors
                .topology
                .insert(s.service.clone(), s.depends_on.clone());
            findings.extend(detectors.rules.on_snapshot(s));
            findings.extend(detectors.rules.on_attack(s));
            findings.extend(learn(bus, detectors, s).await);
        }
        Event::ContainerEvent(e) if e.kind == ContainerEventKind::Destroyed => {
            findings.extend(detectors.rules.on_removed(e));
            findings.extend(detectors.learned.on_removed(e));
        }
        Event::ContainerEvent(e) => findings.extend(detectors.rules.on_container_event(e)),
        Event::ChaosInjected(c) => {
            detectors.rules.on_chaos_injected(c);
            if !keep_chaos_run(bus, detectors, &c.service).await {
                return Disposition::Retry; // delivered again, stored then
            }
        }
        Event::ChaosReverted(c) => {
            detectors.rules.on_chaos_reverted(&c.service, &c.run_id);
            if !keep_chaos_run(bus, detectors, &c.service).await {
                return Disposition::Retry;
            }
        }
        other => {
            bus.telemetry().refused("unexpected_event", other.kind());
        }
    };
    for finding in &mut findings {
        if let Some(calls) = detectors.topology.get(&finding.anomaly.service) {
            finding.anomaly.depends_on = calls.clone();
        }
    }
    for finding in &findings {
        if let Err(e) = publish(bus, finding, delivery).await {
            bus.telemetry().failed("publish_anomaly", &e);
            return Disposition::Retry;
        }
    }
    let mut changed: Vec<&ServiceName> = findings.iter().map(|f| &f.anomaly.service).collect();
    changed.sort();
    changed.dedup();
    for service in changed {
        let mut open = detectors.rules.open_episodes(service);
        open.extend(detectors.learned.open_episodes(service));
        if let Err(e) = episodes::save(&detectors.store, service, &open).await {
            bus.telemetry().failed(e.kind(), &e);
        }
    }
    Disposition::Done
}

/// Stores the chaos run now in force on `service`, so that a restarted detector labels the
/// experiment's anomalies too. False (counted) when the store failed.
async fn keep_chaos_run(bus: &Bus, detectors: &Detectors, service: &ServiceName) -> bool {
    let run = detectors.rules.chaos_run(service);
    match episodes::save_chaos_run(&detectors.store, service, run).await {
        Ok(()) => true,
        Err(e) => {
            bus.telemetry().failed(e.kind(), &e);
            false
        }
    }
}

/// The first time a service is seen: takes back the episodes an earlier life of the
/// detector fired on it and did not clear, and the chaos run in force on it. A failed read
/// is counted and tried again with the service's next event.
async fn restore(bus: &Bus, detectors: &mut Detectors, service: &ServiceName) {
    if detectors.restored.contains(service) {
        return;
    }
    match episodes::load_chaos_run(&detectors.store, service).await {
        Ok(Some(run)) => {
            tracing::info!(%service, run = %run, "chaos run in force resumed from the bucket");
            detectors.rules.resume_chaos_run(service.clone(), run);
        }
        Ok(None) => {}
        Err(e) => {
            bus.telemetry().failed(e.kind(), &e);
            return;
        }
    }
    match episodes::load(&detectors.store, service).await {
        Ok(open) => {
            for finding in open {
                let (id, instance) = (
                    finding.anomaly.anomaly_id.clone(),
                    finding.anomaly.instance.clone(),
                );
                if detectors.rules.restore(finding.clone()) || detectors.learned.restore(finding) {
                    tracing::info!(%service, %instance, anomaly = %id, "open episode resumed from the bucket");
                    bus.telemetry().observe(Observation::Acted {
                        what: "episode_resumed",
                        service: service.as_str(),
                    });
                }
            }
            detectors.restored.insert(service.clone());
        }
        Err(e) => bus.telemetry().failed(e.kind(), &e),
    }
}

/// The learned detector's part: resume a stored model the first time a service is seen,
/// judge the snapshot, store a model fitted just now.
async fn learn(bus: &Bus, detectors: &mut Detectors, s: &MetricSnapshot) -> Option<Finding> {
    if !detectors.learn {
        return None;
    }
    let store = &detectors.store;
    if !detectors.learned.knows(&s.service) {
        match snapshot::load(store, &s.service).await {
            Ok(Some(model)) => {
                tracing::info!(service = %s.service, vectors = model.fitted_on, components = model.retained(), "model resumed from the bucket");
                bus.telemetry().observe(Observation::Acted {
                    what: "model_resumed",
                    service: s.service.as_str(),
                });
                detectors.learned.resume(s.service.clone(), model);
            }
            Ok(None) => {}
            Err(e) => bus.telemetry().failed(e.kind(), &e),
        }
    }
    let chaos_run = detectors.rules.chaos_run(&s.service).map(str::to_string);
    let context = learned::Context {
        chaos_run: chaos_run.as_deref(),
        faulty: detectors.rules.firing_on(&s.service, &s.instance),
    };
    let outcome = detectors.learned.on_snapshot(s, context);
    if let Some(error) = &outcome.fit_error {
        bus.telemetry().observe(Observation::Failed {
            what: "model_fit",
            error,
        });
    }
    if outcome.only_the_load_moved {
        bus.telemetry().observe(Observation::Acted {
            what: "held_only_the_load_moved",
            service: s.service.as_str(),
        });
    }
    if let Some(model) = &outcome.fitted {
        tracing::info!(service = %s.service, vectors = model.fitted_on, components = model.retained(), threshold = model.threshold, "model fitted");
        bus.telemetry().observe(Observation::Acted {
            what: "model_fitted",
            service: s.service.as_str(),
        });
        if let Err(e) = snapshot::save(store, &s.service, model).await {
            bus.telemetry().failed(e.kind(), &e);
        }
    }
    outcome.finding
}

async fn publish(bus: &Bus, finding: &Finding, cause: &Delivery) -> Result<(), BusError> {
    let a = &finding.anomaly;
    let correlation = Some(finding.correlation_id.clone());
    // Published under an id derived from the anomaly's: the same anomaly published again
    // (its event judged again after a restart) is dropped by JetStream's duplicate window.
    let mut envelope = immune_nats::Envelope::new(
        bus.producer().clone(),
        correlation.clone(),
        Event::Anomaly(a.clone()),
    );
    envelope.event_id = episodes::event_id(&a.anomaly_id, a.state);
    bus.publish_envelope(&envelope).await?;
    let id = envelope.event_id;
    let (what, outcome) = match a.state {
        AnomalyState::Firing => (
            AuditCode::AnomalyFiring,
            format!("{} on {}", a.signature, a.instance),
        ),
        AnomalyState::Cleared => (
            AuditCode::AnomalyCleared,
            format!("{} on {} cleared", a.signature, a.instance),
        ),
    };
    tracing::info!(service = %a.service, instance = %a.instance, signature = %a.signature, state = ?a.state, detector = %a.detector, reason = %a.reason, "anomaly");
    bus.telemetry().observe(Observation::Acted {
        what: what.as_str(),
        service: a.service.as_str(),
    });
    let why = format!(
        "{} ({}, from {})",
        a.reason,
        a.detector,
        cause.envelope.body.kind()
    );
    bus.audit(
        correlation,
        Audit::new(&a.service, what, why, outcome).about(id),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_config_documents_the_defaults() {
        let shipped: Config =
            immune_runtime::config::parse(include_str!("../detector.toml")).expect("parses");
        shipped.validate().expect("valid");
        assert_eq!(shipped.learned, LearnedConfig::default());
        assert_eq!(shipped.eval, eval::EvalConfig::default());
        assert_eq!(shipped.rules, RuleConfig::default());
    }

    #[test]
    fn a_bad_learned_key_is_named() {
        let c: Config = immune_runtime::config::parse("[learned]\nk = 9\nn = 5").expect("parses");
        let err = c.validate().expect_err("k > n");
        assert!(err.to_string().contains("learned.k"), "{err}");
        let err = immune_runtime::config::parse::<Config>("[learned]\nthreshold = 2")
            .expect_err("unknown key");
        assert!(err.to_string().contains("threshold"), "{err}");
    }
}
