//! The executor: the only stage that changes anything.
//!
//! It takes action requests from its durable consumer (instances sharing the consumer share
//! the work), checks the guards (the container opted in, belongs to the configured project
//! and to the service named in the request), carries the action out through the Docker API
//! within the request's timeout, and publishes the result. Each result is stored by action
//! id in a key-value bucket before it is published, and the request is acknowledged only
//! after that, so a redelivered request republishes its stored result instead of acting twice.

pub mod actuator;

use std::time::Instant;

use immune_nats::streams::{EXECUTOR, EXECUTOR_RESULTS};
use immune_nats::{
    decode, encode, envelope::now_ms, ActionOutcome, ActionRequest, ActionResult, Envelope, Event,
    Stage,
};
use immune_runtime::telemetry::Observation;
use immune_runtime::{
    docker, Bus, BusConfig, BusError, ConfigError, Delivery, Shutdown, Telemetry, TelemetryConfig,
};
use serde::{Deserialize, Serialize};

pub use actuator::{ActError, Actuator};

pub const STAGE: Stage = Stage::Executor;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub nats: BusConfig,
    pub telemetry: TelemetryConfig,
    /// Only containers labelled `immune.project=<project>` are touched; unset: any managed one.
    pub project: Option<String>,
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.project.as_deref() == Some("") {
            return Err(ConfigError::Invalid(
                "project: must not be empty (leave it out instead)".into(),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Docker(#[from] docker::TargetError),
}

/// Runs until `shutdown`; an action in progress is finished first.
pub async fn run(
    config: Config,
    telemetry: Telemetry,
    mut shutdown: Shutdown,
) -> Result<(), ExecutorError> {
    let bus = Bus::start_stage(
        &config.nats,
        &config.telemetry,
        telemetry.clone(),
        &shutdown,
    )
    .await?;
    let results = bus.bucket(EXECUTOR_RESULTS).await?;
    let mut inbox = bus.inbox(EXECUTOR).await?;
    let actuator = Actuator::new(docker::connect()?, config.project.clone());
    tracing::info!(project = ?config.project, "executor running");
    loop {
        let delivery = tokio::select! {
            _ = shutdown.wait() => break,
            d = inbox.next() => d,
        };
        handle(&bus, &results, &actuator, delivery).await;
    }
    tracing::info!("executor stopped");
    Ok(())
}

async fn handle(
    bus: &Bus,
    results: &async_nats::jetstream::kv::Store,
    actuator: &Actuator,
    delivery: Delivery,
) {
    let telemetry = bus.telemetry();
    let Event::ActionRequest(request) = &delivery.envelope.body else {
        telemetry.observe(Observation::Refused {
            what: "unexpected_event",
            reason: delivery.envelope.body.kind(),
        });
        let _ = delivery.ack().await;
        return;
    };
    let key = result_key(&request.action_id);
    // Already done: republish the stored result (same event id, so de-duplicated), never re-act.
    if let Ok(Some(stored)) = results.get(&key).await {
        match decode(&stored) {
            Ok(envelope) => {
                tracing::info!(action_id = %request.action_id, "action already carried out; republishing its result");
                telemetry.observe(Observation::Acted {
                    what: "republished",
                    service: request.service.as_str(),
                });
                if bus.publish_envelope(&envelope).await.is_ok() {
                    let _ = delivery.ack().await;
                }
                return;
            }
            Err(e) => telemetry.observe(Observation::Failed {
                what: "stored_result",
                error: &e.to_string(),
            }),
        }
    }
    let result = carry_out(actuator, request).await;
    let correlation = delivery.envelope.correlation_id.clone();
    let envelope = Envelope::new(
        bus.producer().clone(),
        correlation.clone(),
        Event::ActionResult(result.clone()),
    );
    match encode(&envelope) {
        Ok(bytes) => {
            if let Err(e) = results.put(&key, bytes.into()).await {
                telemetry.observe(Observation::Failed {
                    what: "store_result",
                    error: &e.to_string(),
                });
            }
        }
        Err(e) => telemetry.observe(Observation::Failed {
            what: "encode_result",
            error: &e.to_string(),
        }),
    }
    if let Err(e) = bus.publish_envelope(&envelope).await {
        telemetry.observe(Observation::Failed {
            what: "publish_result",
            error: &e.to_string(),
        });
        return; // unacknowledged: redelivered, and the stored result is republished then
    }
    let what = match result.outcome {
        ActionOutcome::Succeeded => "action.succeeded",
        ActionOutcome::Failed => "action.failed",
        ActionOutcome::Refused => "action.refused",
    };
    let why = result
        .error
        .clone()
        .unwrap_or_else(|| request.reason.clone());
    let outcome = format!(
        "{} of {} {:?} in {} ms",
        request.action, request.instance, result.outcome, result.duration_ms
    );
    if let Err(e) = bus
        .audit(
            correlation,
            &request.service,
            what,
            why,
            outcome.to_lowercase(),
            Some(envelope.event_id.clone()),
        )
        .await
    {
        telemetry.observe(Observation::Failed {
            what: "audit",
            error: &e.to_string(),
        });
    }
    if let Err(e) = delivery.ack().await {
        telemetry.observe(Observation::Failed {
            what: "ack",
            error: &e.to_string(),
        });
    }
}

/// Guards, acts within the request's timeout, and describes the outcome.
async fn carry_out(actuator: &Actuator, request: &ActionRequest) -> ActionResult {
    let started = Instant::now();
    let timeout = std::time::Duration::from_millis(request.timeout_ms.max(1));
    let outcome = match tokio::time::timeout(timeout, actuator.act(request)).await {
        Ok(r) => r,
        Err(_) => Err(ActError::Failed(format!("no result within {timeout:?}"))),
    };
    let duration_ms = started.elapsed().as_millis() as u64;
    let (outcome, error) = match outcome {
        Ok(()) => (ActionOutcome::Succeeded, None),
        Err(ActError::Refused(why)) => (ActionOutcome::Refused, Some(why)),
        Err(ActError::Failed(why)) => (ActionOutcome::Failed, Some(why)),
    };
    tracing::info!(service = %request.service, action = %request.action, instance = %request.instance, ?outcome, duration_ms, error = ?error, "action done");
    ActionResult {
        action_id: request.action_id.clone(),
        incident_id: request.incident_id.clone(),
        service: request.service.clone(),
        instance: request.instance.clone(),
        action: request.action,
        outcome,
        error,
        duration_ms,
        finished_ms: now_ms(),
    }
}

/// Key-value keys allow `[-/_=.a-zA-Z0-9]`; anything else in an action id is replaced.
fn result_key(action_id: &str) -> String {
    action_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_=".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}
