//! The detector: turns metric snapshots and container events into anomalies.
//!
//! [`rules`] catch hard faults with no warm-up. Each anomaly episode is published twice on
//! `immune.anomalies.<service>`: `Firing` when it opens, `Cleared` when the service is running
//! and healthy again (the decider's verification signal). Chaos events are read only to put
//! the chaos run id on anomalies as their correlation id, so a run can be followed end to end.

pub mod rules;

use immune_nats::streams::{DETECTOR_EVENTS, DETECTOR_METRICS};
use immune_nats::{AnomalyState, Event, Stage};
use immune_runtime::telemetry::Observation;
use immune_runtime::{Bus, BusConfig, BusError, Delivery, Shutdown, Telemetry, TelemetryConfig};
use serde::{Deserialize, Serialize};

pub use rules::{Finding, RuleConfig, RuleEngine};

pub const STAGE: Stage = Stage::Detector;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub nats: BusConfig,
    pub telemetry: TelemetryConfig,
    pub rules: RuleConfig,
}

impl Config {
    pub fn validate(&self) -> Result<(), immune_runtime::ConfigError> {
        if self.rules.health_failures == 0 {
            return Err(immune_runtime::ConfigError::Invalid(
                "rules.health_failures: must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DetectorError {
    #[error(transparent)]
    Bus(#[from] BusError),
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
    let mut engine = RuleEngine::new(config.rules.clone());
    tracing::info!("detector running");
    loop {
        let delivery = tokio::select! {
            _ = shutdown.wait() => break,
            d = metrics.next() => d,
            d = events.next() => d,
        };
        handle(&bus, &mut engine, delivery).await;
    }
    tracing::info!("detector stopped");
    Ok(())
}

/// Feeds one delivery to the engine, publishes what it found, then acknowledges. A publish
/// failure leaves the delivery unacknowledged: it comes back and is judged again.
async fn handle(bus: &Bus, engine: &mut RuleEngine, delivery: Delivery) {
    let finding = match &delivery.envelope.body {
        Event::MetricSnapshot(s) => engine.on_snapshot(s),
        Event::ContainerEvent(e) => engine.on_container_event(e),
        Event::ChaosInjected(c) => {
            engine.on_chaos_injected(c);
            None
        }
        Event::ChaosReverted(c) => {
            engine.on_chaos_reverted(&c.service, &c.run_id);
            None
        }
        other => {
            bus.telemetry().observe(Observation::Refused {
                what: "unexpected_event",
                reason: other.kind(),
            });
            None
        }
    };
    if let Some(finding) = finding {
        if let Err(e) = publish(bus, &finding, &delivery).await {
            bus.telemetry().observe(Observation::Failed {
                what: "publish_anomaly",
                error: &e.to_string(),
            });
            return;
        }
    }
    if let Err(e) = delivery.ack().await {
        bus.telemetry().observe(Observation::Failed {
            what: "ack",
            error: &e.to_string(),
        });
    }
}

async fn publish(bus: &Bus, finding: &Finding, cause: &Delivery) -> Result<(), BusError> {
    let a = &finding.anomaly;
    let correlation = Some(finding.correlation_id.clone());
    let id = bus
        .publish(correlation.clone(), Event::Anomaly(a.clone()))
        .await?;
    let (what, outcome) = match a.state {
        AnomalyState::Firing => (
            "anomaly.firing",
            format!("{} on {}", a.signature, a.instance),
        ),
        AnomalyState::Cleared => (
            "anomaly.cleared",
            format!("{} on {} cleared", a.signature, a.instance),
        ),
    };
    tracing::info!(service = %a.service, instance = %a.instance, signature = %a.signature, state = ?a.state, reason = %a.reason, "anomaly");
    bus.telemetry().observe(Observation::Acted {
        what,
        service: a.service.as_str(),
    });
    bus.audit(
        correlation,
        &a.service,
        what,
        format!(
            "{} ({}, from {})",
            a.reason,
            a.detector,
            cause.envelope.body.kind()
        ),
        outcome,
        Some(id),
    )
    .await?;
    Ok(())
}
