//! The decider: incidents, playbooks, verification and escalation.
//!
//! The logic is the pure [`policy::Decider`]; this module only feeds it deliveries and clock
//! ticks and publishes what it decides: incidents on `immune.incidents.<service>`, action
//! requests on `immune.actions.<service>`, and an audit record for every decision. A
//! delivery is acknowledged only after its decisions are published.

pub mod policy;

use std::time::Duration;

use immune_nats::streams::DECIDER;
use immune_nats::{envelope::now_ms, Event, Stage};
use immune_runtime::telemetry::Observation;
use immune_runtime::{Bus, BusConfig, BusError, ConfigError, Shutdown, Telemetry, TelemetryConfig};
use serde::{Deserialize, Serialize};

pub use policy::{Decided, Decider, Decision, Input, Playbook, PolicyConfig};

pub const STAGE: Stage = Stage::Decider;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub nats: BusConfig,
    pub telemetry: TelemetryConfig,
    pub policy: PolicyConfig,
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.policy.verify_deadline_ms == 0 {
            return Err(ConfigError::Invalid(
                "policy.verify_deadline_ms: must be positive".into(),
            ));
        }
        if self.policy.action_timeout_ms == 0 {
            return Err(ConfigError::Invalid(
                "policy.action_timeout_ms: must be positive".into(),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeciderError {
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// How often deadlines (verification, deferred actions) are checked.
const TICK: Duration = Duration::from_millis(200);

/// Runs until `shutdown`.
pub async fn run(
    config: Config,
    telemetry: Telemetry,
    mut shutdown: Shutdown,
) -> Result<(), DeciderError> {
    let bus = Bus::start_stage(
        &config.nats,
        &config.telemetry,
        telemetry.clone(),
        &shutdown,
    )
    .await?;
    let mut inbox = bus.inbox(DECIDER).await?;
    let mut decider = Decider::new(config.policy.clone());
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tracing::info!("decider running");
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = tick.tick() => {
                let decided = decider.decide(Input::Tick, now_ms());
                publish_all(&bus, decided).await;
            }
            delivery = inbox.next() => {
                let correlation = delivery.envelope.correlation_id.clone();
                let input = match &delivery.envelope.body {
                    Event::Anomaly(a) => Some(Input::Anomaly { anomaly: a, correlation_id: correlation.as_deref() }),
                    Event::ActionResult(r) => Some(Input::Result(r)),
                    Event::ChaosInjected(c) => Some(Input::ChaosInjected { service: &c.service, run_id: &c.run_id }),
                    Event::ChaosReverted(c) => Some(Input::ChaosReverted { service: &c.service, run_id: &c.run_id }),
                    other => {
                        telemetry.observe(Observation::Refused { what: "unexpected_event", reason: other.kind() });
                        None
                    }
                };
                let decided = input.map(|i| decider.decide(i, now_ms())).unwrap_or_default();
                if publish_all(&bus, decided).await {
                    if let Err(e) = delivery.ack().await {
                        telemetry.observe(Observation::Failed { what: "ack", error: &e.to_string() });
                    }
                }
            }
        }
    }
    tracing::info!(
        open_incidents = decider.open_incidents().count(),
        "decider stopped"
    );
    Ok(())
}

/// Publishes decisions in order; `false` when one could not be published.
async fn publish_all(bus: &Bus, decided: Vec<Decided>) -> bool {
    for Decided {
        correlation_id,
        decision,
    } in decided
    {
        let correlation = Some(correlation_id);
        let result = match decision {
            Decision::Incident(incident) => {
                tracing::info!(service = %incident.service, incident = %incident.incident_id, state = ?incident.state, "incident");
                bus.publish(correlation, Event::Incident(incident))
                    .await
                    .map(|_| ())
            }
            Decision::Action(action) => {
                tracing::info!(service = %action.service, action = %action.action, instance = %action.instance, "action requested");
                bus.telemetry().observe(Observation::Acted {
                    what: action.action.as_str(),
                    service: action.service.as_str(),
                });
                bus.publish(correlation, Event::ActionRequest(action))
                    .await
                    .map(|_| ())
            }
            Decision::Audit {
                service,
                what,
                why,
                outcome,
            } => bus
                .audit(correlation, &service, what, why, outcome, None)
                .await
                .map(|_| ()),
        };
        if let Err(e) = result {
            bus.telemetry().observe(Observation::Failed {
                what: "publish_decision",
                error: &e.to_string(),
            });
            return false;
        }
    }
    true
}
