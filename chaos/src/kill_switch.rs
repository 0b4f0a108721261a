//! The chaos kill switch: key [`KILL_SWITCH`] of bucket `immune_chaos_control`. `on`: every
//! fault in force is reverted at once and every request is refused, until it is `off` again.
//! Any process on the bus can set it ([`set_kill_switch`], `immune kill-switch on|off`); the
//! stage reads it before each request ([`kill_switch`]) and follows its changes
//! ([`watch_kill_switch`]) to revert what is in force the moment it is engaged.

use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;
use immune_nats::control::{OFF, ON};
use immune_nats::streams::CHAOS_CONTROL;
use immune_runtime::{Bus, BusError, Shutdown};

/// The kill switch's key in the control bucket.
pub use immune_nats::control::KILL_SWITCH;

/// Reads the kill switch: `Ok(true)` when engaged.
pub async fn kill_switch(control: &kv::Store) -> Result<bool, String> {
    match control.get(KILL_SWITCH).await {
        Ok(value) => Ok(value.is_some_and(|v| v.as_ref() == ON.as_bytes())),
        Err(e) => Err(e.to_string()),
    }
}

/// Engages (`true`) or releases the kill switch, from any process on the bus.
pub async fn set_kill_switch(bus: &Bus, on: bool) -> Result<(), BusError> {
    let control = bus.bucket(CHAOS_CONTROL).await?;
    control
        .put(KILL_SWITCH, if on { ON } else { OFF }.into())
        .await
        .map_err(|e| BusError::KeyValue {
            bucket: CHAOS_CONTROL.name.to_string(),
            reason: e.to_string(),
        })?;
    Ok(())
}

/// Follows the kill switch until `shutdown`: engaged, `halt` turns true and every fault in
/// force is reverted at once (new requests are refused by the guardrails); released, faults
/// may be injected again.
pub(crate) async fn watch_kill_switch(
    control: kv::Store,
    halt: tokio::sync::watch::Sender<bool>,
    mut shutdown: Shutdown,
) {
    let mut attempt = 0u32;
    loop {
        let mut changes = match control.watch_with_history(KILL_SWITCH).await {
            Ok(changes) => changes,
            Err(e) => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "cannot watch the kill switch");
                tokio::select! {
                    _ = shutdown.wait() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            let change = tokio::select! {
                _ = shutdown.wait() => return,
                c = changes.next() => c,
            };
            let Some(Ok(entry)) = change else { break };
            let on = entry.operation == kv::Operation::Put && entry.value.as_ref() == ON.as_bytes();
            if on != *halt.borrow() {
                tracing::warn!(engaged = on, "chaos kill switch changed");
            }
            halt.send_replace(on);
        }
    }
}
