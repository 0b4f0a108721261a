//! What the chaos stage says on the bus about each request, with the chaos run id as
//! correlation id: `ChaosInjected`, `ChaosReverted`, and `ChaosRejected` for a refusal or a
//! dry run (saying what would have been done), each with its audit record
//! (`chaos.injected`, `chaos.reverted`, `chaos.rejected`, `chaos.dry_run`), logged and
//! counted.

use immune_nats::{
    envelope::now_ms, AuditCode, ChaosInjected, ChaosRejected, ChaosRequest, ChaosReverted, Event,
};
use immune_runtime::telemetry::Observation;
use immune_runtime::{Audit, Bus, BusError};

use crate::guardrails::Admitted;

/// A fault put in force.
pub(crate) async fn injected(bus: &Bus, injected: &ChaosInjected) -> Result<(), BusError> {
    let run_id = injected.run_id.as_str();
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
        "{} injected into {} with {:?}, reverted in {} ms",
        injected.fault,
        injected.instance,
        injected.params,
        injected.revert_at_ms - injected.injected_ms
    );
    bus.audit(
        correlation,
        Audit::new(&injected.service, AuditCode::ChaosInjected, why, outcome).about(id),
    )
    .await?;
    Ok(())
}

/// A request admitted in dry-run mode: what would have been done, nothing touched.
pub(crate) async fn dry_run(
    bus: &Bus,
    run_id: &str,
    request: &ChaosRequest,
    admitted: &Admitted,
) -> Result<(), BusError> {
    let would = format!(
        "dry run: would inject {} into {} for {} ms with {:?}",
        request.fault, admitted.target.name, admitted.duration_ms, request.params
    );
    tracing::info!(run_id, service = %request.service, fault = %request.fault, "{would}");
    bus.telemetry().refused("chaos_request", "dry_run");
    let why = format!("chaos request for {} on {}", request.fault, request.service);
    not_injected(
        bus,
        run_id,
        request,
        AuditCode::ChaosDryRun,
        would.clone(),
        why,
        would,
    )
    .await
}

/// A request refused, by the guardrails or because the injection failed.
pub(crate) async fn rejected(
    bus: &Bus,
    run_id: &str,
    request: &ChaosRequest,
    reason: String,
) -> Result<(), BusError> {
    bus.telemetry().refused("chaos_request", &reason);
    let outcome = "nothing injected".to_string();
    not_injected(
        bus,
        run_id,
        request,
        AuditCode::ChaosRejected,
        reason.clone(),
        reason,
        outcome,
    )
    .await
}

/// Publishes the `ChaosRejected` event and its audit record.
async fn not_injected(
    bus: &Bus,
    run_id: &str,
    request: &ChaosRequest,
    what: AuditCode,
    reason: String,
    why: String,
    outcome: String,
) -> Result<(), BusError> {
    let rejected = ChaosRejected {
        run_id: run_id.to_string(),
        service: request.service.clone(),
        fault: request.fault,
        reason,
    };
    let correlation = Some(run_id.to_string());
    let id = bus
        .publish(correlation.clone(), Event::ChaosRejected(rejected))
        .await?;
    bus.audit(
        correlation,
        Audit::new(&request.service, what, why, outcome).about(id),
    )
    .await?;
    Ok(())
}

/// A fault put back: `why` it was reverted now, `note` what the revert did.
pub(crate) async fn reverted(
    bus: &Bus,
    injected: &ChaosInjected,
    why: &str,
    note: String,
) -> Result<(), BusError> {
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
    let id = bus
        .publish(correlation.clone(), Event::ChaosReverted(reverted))
        .await?;
    bus.audit(
        correlation,
        Audit::new(&injected.service, AuditCode::ChaosReverted, why, note).about(id),
    )
    .await?;
    Ok(())
}
