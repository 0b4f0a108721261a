//! The chaos stage: breaks things on purpose, within guardrails, and always puts them back.
//!
//! Requests arrive on `immune.chaos.requests` from any NATS client (the `inject` command,
//! tests, a user's own code). A fault is injected only into a running container of the
//! requested service that is managed, of the configured project and labelled
//! `immune.chaos=true`, and only while fewer than `max_concurrent_faults` are in force.
//! Every injection is published as `ChaosInjected` with the chaos run id as correlation id,
//! and reverted automatically when its duration ends (or at once when the stage stops),
//! published as `ChaosReverted`. Refusals are published as `ChaosRejected` with the reason.

pub mod faults;
pub mod follow;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use immune_nats::streams::CHAOS;
use immune_nats::{
    envelope::now_ms, ChaosInjected, ChaosRejected, ChaosRequest, ChaosReverted, ContainerState,
    Event, Stage,
};
use immune_runtime::docker::{self, ManagedContainer};
use immune_runtime::telemetry::Observation;
use immune_runtime::{Bus, BusConfig, BusError, ConfigError, Shutdown, Telemetry, TelemetryConfig};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

pub use faults::Injector;

pub const STAGE: Stage = Stage::Chaos;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub nats: BusConfig,
    pub telemetry: TelemetryConfig,
    /// Only containers labelled `immune.project=<project>`; unset: any managed one.
    pub project: Option<String>,
    pub max_concurrent_faults: usize,
    /// Used when a request asks for a duration of 0.
    pub default_duration_ms: u64,
    /// Longest duration a request may ask for.
    pub max_duration_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            nats: BusConfig::default(),
            telemetry: TelemetryConfig::default(),
            project: None,
            max_concurrent_faults: 3,
            default_duration_ms: 30_000,
            max_duration_ms: 600_000,
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_concurrent_faults == 0 {
            return Err(ConfigError::Invalid(
                "max_concurrent_faults: must be at least 1".into(),
            ));
        }
        if self.default_duration_ms == 0 || self.default_duration_ms > self.max_duration_ms {
            return Err(ConfigError::Invalid(
                "default_duration_ms: must be between 1 and max_duration_ms".into(),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Docker(#[from] docker::TargetError),
}

/// Runs until `shutdown`; faults still in force are reverted before it returns.
pub async fn run(
    config: Config,
    telemetry: Telemetry,
    mut shutdown: Shutdown,
) -> Result<(), ChaosError> {
    let bus = Bus::start_stage(
        &config.nats,
        &config.telemetry,
        telemetry.clone(),
        &shutdown,
    )
    .await?;
    let mut inbox = bus.inbox(CHAOS).await?;
    let injector = Injector::new(docker::connect()?);
    let in_force = Arc::new(AtomicUsize::new(0));
    let mut reverts = JoinSet::new();
    tracing::info!(project = ?config.project, "chaos running");
    loop {
        let delivery = tokio::select! {
            _ = shutdown.wait() => break,
            d = inbox.next() => d,
        };
        while reverts.try_join_next().is_some() {}
        let Event::ChaosRequest(request) = &delivery.envelope.body else {
            telemetry.observe(Observation::Refused {
                what: "unexpected_event",
                reason: delivery.envelope.body.kind(),
            });
            let _ = delivery.ack().await;
            continue;
        };
        let run_id = request
            .run_id
            .clone()
            .or_else(|| delivery.envelope.correlation_id.clone())
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let published = match inject(&config, &injector, &in_force, request).await {
            Ok((target, injected)) => {
                let published = announce_injected(&bus, &run_id, &injected).await;
                reverts.spawn(revert_later(
                    bus.clone(),
                    injector.clone(),
                    in_force.clone(),
                    target,
                    ChaosInjected {
                        run_id: run_id.clone(),
                        ..injected
                    },
                    shutdown.clone(),
                ));
                published
            }
            Err(reason) => announce_rejected(&bus, &run_id, request, reason).await,
        };
        if published.is_ok() {
            let _ = delivery.ack().await;
        }
    }
    // Put back what is still broken before leaving.
    let all_reverted = tokio::time::timeout(Duration::from_secs(15), async {
        while reverts.join_next().await.is_some() {}
    })
    .await;
    if all_reverted.is_err() {
        tracing::error!("some faults could not be reverted within 15 s");
    }
    tracing::info!("chaos stopped");
    Ok(())
}

/// Picks the target under the guardrails and injects; the reason when it will not.
async fn inject(
    config: &Config,
    injector: &Injector,
    in_force: &AtomicUsize,
    request: &ChaosRequest,
) -> Result<(ManagedContainer, ChaosInjected), String> {
    let managed = docker::list_managed(injector.docker(), config.project.as_deref())
        .await
        .map_err(|e| format!("cannot list containers: {e}"))?;
    let candidates: Vec<ManagedContainer> = managed
        .into_iter()
        .flatten()
        .filter(|c| c.service == request.service && c.state == ContainerState::Running)
        .collect();
    let Some(target) = candidates.iter().find(|c| c.chaos).cloned() else {
        return Err(if candidates.is_empty() {
            format!(
                "no running managed container of service {} in project {:?}",
                request.service, config.project
            )
        } else {
            format!(
                "no container of service {} is labelled immune.chaos=true",
                request.service
            )
        });
    };
    let duration_ms = match request.duration_ms {
        0 => config.default_duration_ms,
        d if d > config.max_duration_ms => {
            return Err(format!(
                "duration {d} ms exceeds max_duration_ms {}",
                config.max_duration_ms
            ))
        }
        d => d,
    };
    if in_force.fetch_add(1, Ordering::SeqCst) >= config.max_concurrent_faults {
        in_force.fetch_sub(1, Ordering::SeqCst);
        return Err(format!(
            "{} faults already in force (max_concurrent_faults)",
            config.max_concurrent_faults
        ));
    }
    if let Err(e) = injector
        .inject(&target, request.fault, &request.params)
        .await
    {
        in_force.fetch_sub(1, Ordering::SeqCst);
        return Err(format!("injection failed: {e}"));
    }
    let injected_ms = now_ms();
    let injected = ChaosInjected {
        run_id: String::new(),
        service: target.service.clone(),
        instance: target.name.clone(),
        container_id: target.id.clone(),
        fault: request.fault,
        params: request.params.clone(),
        injected_ms,
        revert_at_ms: injected_ms + duration_ms,
    };
    Ok((target, injected))
}

async fn announce_injected(
    bus: &Bus,
    run_id: &str,
    injected: &ChaosInjected,
) -> Result<(), BusError> {
    let injected = ChaosInjected {
        run_id: run_id.to_string(),
        ..injected.clone()
    };
    tracing::info!(run_id, service = %injected.service, fault = %injected.fault, instance = %injected.instance, "fault injected");
    bus.telemetry().observe(Observation::Acted {
        what: injected.fault.as_str(),
        service: injected.service.as_str(),
    });
    let correlation = Some(run_id.to_string());
    let id = bus
        .publish(correlation.clone(), Event::ChaosInjected(injected.clone()))
        .await?;
    let why = format!(
        "chaos request for {} on {}",
        injected.fault, injected.service
    );
    let outcome = format!(
        "{} injected into {}, reverted in {} ms",
        injected.fault,
        injected.instance,
        injected.revert_at_ms - injected.injected_ms
    );
    bus.audit(
        correlation,
        &injected.service,
        "chaos.injected",
        why,
        outcome,
        Some(id),
    )
    .await?;
    Ok(())
}

async fn announce_rejected(
    bus: &Bus,
    run_id: &str,
    request: &ChaosRequest,
    reason: String,
) -> Result<(), BusError> {
    bus.telemetry().observe(Observation::Refused {
        what: "chaos_request",
        reason: &reason,
    });
    let rejected = ChaosRejected {
        run_id: run_id.to_string(),
        service: request.service.clone(),
        fault: request.fault,
        reason: reason.clone(),
    };
    let correlation = Some(run_id.to_string());
    let id = bus
        .publish(correlation.clone(), Event::ChaosRejected(rejected))
        .await?;
    bus.audit(
        correlation,
        &request.service,
        "chaos.rejected",
        reason,
        "nothing injected".to_string(),
        Some(id),
    )
    .await?;
    Ok(())
}

/// Waits until the fault's time is up (or the stage stops), reverts it, and says so.
async fn revert_later(
    bus: Bus,
    injector: Injector,
    in_force: Arc<AtomicUsize>,
    target: ManagedContainer,
    injected: ChaosInjected,
    mut shutdown: Shutdown,
) {
    let wait = Duration::from_millis(injected.revert_at_ms.saturating_sub(now_ms()));
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = shutdown.wait() => {}
    }
    let note = injector.revert(&target, injected.fault).await;
    in_force.fetch_sub(1, Ordering::SeqCst);
    tracing::info!(run_id = %injected.run_id, service = %injected.service, fault = %injected.fault, %note, "fault reverted");
    let reverted = ChaosReverted {
        run_id: injected.run_id.clone(),
        service: injected.service.clone(),
        instance: injected.instance.clone(),
        fault: injected.fault,
        note: note.clone(),
        reverted_ms: now_ms(),
    };
    let correlation = Some(injected.run_id.clone());
    let published = async {
        let id = bus
            .publish(correlation.clone(), Event::ChaosReverted(reverted))
            .await?;
        bus.audit(
            correlation,
            &injected.service,
            "chaos.reverted",
            "the fault's time was up".to_string(),
            note,
            Some(id),
        )
        .await
    };
    if let Err(e) = published.await {
        bus.telemetry().observe(Observation::Failed {
            what: "publish_revert",
            error: &e.to_string(),
        });
    }
}
