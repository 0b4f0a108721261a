//! Open episodes in the key-value bucket [`immune_nats::streams::DETECTOR_MODELS`], key `open.<service>` beside
//! the service's model: every anomaly of the service that fired and has not cleared, rules'
//! and learned. A restarted detector takes them back the first time it sees the service, so
//! an episode fired by its previous life still clears (with the same anomaly id) when the
//! instance is well again. Without this the decider would wait for a clearance that never
//! comes and call a healed service unverified.
//!
//! The chaos run in force on each service is kept there too (key `chaos.<service>`), so a
//! restarted detector still labels the anomalies of a running experiment with its run id.

use async_nats::jetstream::kv;
use immune_nats::ServiceName;

use crate::rules::Finding;
use crate::snapshot::{self, SnapshotError};

/// Service names are valid key-value keys (`[A-Za-z0-9_-]`); the prefix keeps them apart
/// from the models, keyed by the bare service name.
fn key(service: &ServiceName) -> String {
    format!("open.{service}")
}

/// Stores the open episodes of `service` (an empty list when none is open).
pub async fn save(
    store: &kv::Store,
    service: &ServiceName,
    open: &[Finding],
) -> Result<(), SnapshotError> {
    snapshot::put(store, &key(service), service, "open episodes", &open).await
}

/// The open episodes stored for `service` (none when nothing was stored).
pub async fn load(store: &kv::Store, service: &ServiceName) -> Result<Vec<Finding>, SnapshotError> {
    let open = snapshot::get(store, &key(service), service, "open episodes").await?;
    Ok(open.unwrap_or_default())
}

fn chaos_key(service: &ServiceName) -> String {
    format!("chaos.{service}")
}

/// Stores the chaos run in force on `service` (`None` once it is reverted).
pub async fn save_chaos_run(
    store: &kv::Store,
    service: &ServiceName,
    run: Option<&str>,
) -> Result<(), SnapshotError> {
    snapshot::put(store, &chaos_key(service), service, "chaos run", &run).await
}

/// The chaos run stored as in force on `service`, if any.
pub async fn load_chaos_run(
    store: &kv::Store,
    service: &ServiceName,
) -> Result<Option<String>, SnapshotError> {
    let run: Option<Option<String>> =
        snapshot::get(store, &chaos_key(service), service, "chaos run").await?;
    Ok(run.flatten())
}

/// The namespace of anomaly ids (a fixed, random UUID).
const ANOMALY_IDS: uuid::Uuid = uuid::Uuid::from_u128(0x6f1c_2a7e_58d4_4b0f_9e3a_c2d1_7b95_e046);

/// The id of the anomaly `detector` fires on `instance` of `service` at `at_ms` (the time of
/// the event that fired it): a name-based UUID (v5), so an event judged again after the
/// detector was killed before acknowledging it fires under the same id, and its
/// publication, whose event id is derived from it ([`event_id`]), is dropped by JetStream's
/// duplicate window instead of reaching the decider twice.
pub fn anomaly_id(detector: &str, service: &ServiceName, instance: &str, at_ms: u64) -> String {
    let name = format!("{detector}\n{service}\n{instance}\n{at_ms}");
    uuid::Uuid::new_v5(&ANOMALY_IDS, name.as_bytes()).to_string()
}

/// The event id an anomaly's firing or clearing is published under: the same each time the
/// same anomaly is published in the same state.
pub fn event_id(anomaly_id: &str, state: immune_nats::AnomalyState) -> immune_nats::EventId {
    let name = format!("{anomaly_id}\n{state:?}");
    immune_nats::EventId(uuid::Uuid::new_v5(&ANOMALY_IDS, name.as_bytes()).to_string())
}
