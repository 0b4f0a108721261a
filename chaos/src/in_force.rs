//! Faults in force: each kept in the KV bucket `immune_chaos_faults` under [`fault_key`]
//! (what was done and how to undo it, an [`ActiveFault`]) from its injection to its revert,
//! so a chaos process that starts after another one died reverts what is due
//! ([`faults_in_force`]). [`revert_later`] reverts a fault when its duration ends, when the
//! stage stops or at once when the kill switch is engaged, and announces it.

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::TryStreamExt;
use immune_nats::{envelope::now_ms, ChaosInjected, ChaosRequest, EventId};
use immune_runtime::Shutdown;
use serde::{Deserialize, Serialize};

use crate::faults::Undo;
use crate::guardrails::Admitted;
use crate::{announce, Chaos, ChaosError};

/// A fault in force as kept in the bus: enough for any chaos process to revert it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveFault {
    /// Its key in the faults bucket.
    pub key: String,
    pub injected: ChaosInjected,
    #[serde(default)]
    pub undo: Undo,
}

/// The key in the faults bucket of the fault a request injects: the request's event id,
/// which a delivery of the same request again shares.
pub fn fault_key(request: &EventId) -> String {
    format!("fault.{}", immune_nats::streams::kv_key_part(&request.0))
}

/// Faults a previous chaos process left in force.
pub async fn faults_in_force(faults: &kv::Store) -> Result<Vec<ActiveFault>, ChaosError> {
    let keys: Vec<String> = faults
        .keys()
        .await
        .map_err(|e| ChaosError::FaultsInForce(e.to_string()))?
        .try_collect()
        .await
        .map_err(|e| ChaosError::FaultsInForce(e.to_string()))?;
    let mut active = Vec::new();
    for key in keys {
        let Ok(Some(value)) = faults.get(&key).await else {
            continue;
        };
        match serde_json::from_slice::<ActiveFault>(&value) {
            Ok(fault) => active.push(fault),
            Err(e) => {
                tracing::warn!(%key, error = %e, "unreadable fault record; dropped");
                let _ = faults.purge(&key).await;
            }
        }
    }
    Ok(active)
}

/// Injects an admitted request's fault (kept under `key`) and records it in the bus before
/// it is announced, so another chaos process can revert it; `Err` says why the injection
/// failed (nothing is then in force).
pub(crate) async fn put_in_force(
    chaos: &Chaos,
    run_id: &str,
    request: &ChaosRequest,
    admitted: Admitted,
    key: String,
) -> Result<ActiveFault, String> {
    let Admitted {
        target,
        duration_ms,
    } = admitted;
    chaos.in_force.fetch_add(1, Ordering::SeqCst);
    let undo = match chaos
        .injector
        .inject(&target, request.fault, &request.params, &key, duration_ms)
        .await
    {
        Ok(undo) => undo,
        Err(e) => {
            chaos.in_force.fetch_sub(1, Ordering::SeqCst);
            return Err(format!("injection failed: {e}"));
        }
    };
    let injected_ms = now_ms();
    let active = ActiveFault {
        key,
        injected: ChaosInjected {
            run_id: run_id.to_string(),
            service: target.service.clone(),
            instance: target.name.clone(),
            container_id: target.id.clone(),
            fault: request.fault,
            params: request.params.clone(),
            injected_ms,
            revert_at_ms: injected_ms + duration_ms,
        },
        undo,
    };
    let record = serde_json::to_vec(&active).unwrap_or_default();
    if let Err(e) = chaos.faults.put(&active.key, record.into()).await {
        chaos.bus.telemetry().failed("record_fault", &e);
    }
    Ok(active)
}

/// Waits until the fault's time is up (or the stage stops, or the kill switch is engaged),
/// reverts it, forgets it and says so.
pub(crate) async fn revert_later(chaos: Chaos, active: ActiveFault, mut shutdown: Shutdown) {
    let injected = &active.injected;
    let wait = Duration::from_millis(injected.revert_at_ms.saturating_sub(now_ms()));
    let mut halted = chaos.halted.clone();
    let why = tokio::select! {
        _ = tokio::time::sleep(wait) => "the fault's time was up",
        _ = shutdown.wait() => "the chaos stage is stopping",
        Ok(_) = halted.wait_for(|on| *on) => "the chaos kill switch was engaged",
    };
    let note = chaos
        .injector
        .revert(
            &injected.container_id,
            injected.fault,
            &active.key,
            &active.undo,
        )
        .await;
    chaos.in_force.fetch_sub(1, Ordering::SeqCst);
    if let Err(e) = chaos.faults.purge(&active.key).await {
        chaos.bus.telemetry().failed("forget_fault", &e);
    }
    if let Err(e) = announce::reverted(&chaos.bus, injected, why, note).await {
        chaos.bus.telemetry().failed("publish_revert", &e);
    }
}
