//! Model snapshots in the JetStream key-value bucket [`DETECTOR_MODELS`], one key per
//! service, MessagePack with named fields: a restarted detector (or another instance taking
//! the service over) resumes scoring at once instead of warming up again.

use async_nats::jetstream::kv;
use immune_nats::streams::DETECTOR_MODELS;
use immune_nats::ServiceName;

use crate::baseline::Model;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("model of {service}: key-value {op} failed: {reason}")]
    Store {
        service: String,
        op: &'static str,
        reason: String,
    },
    #[error("model of {service} cannot be decoded: {reason}")]
    Decode { service: String, reason: String },
    #[error("model of {service} cannot be encoded: {reason}")]
    Encode { service: String, reason: String },
}

impl SnapshotError {
    pub fn kind(&self) -> &'static str {
        match self {
            SnapshotError::Store { .. } => "snapshot_store",
            SnapshotError::Decode { .. } => "snapshot_decode",
            SnapshotError::Encode { .. } => "snapshot_encode",
        }
    }
}

/// The bucket's name, for logs.
pub const BUCKET: &str = DETECTOR_MODELS.name;

/// Service names are valid key-value keys as they are (`[A-Za-z0-9_-]`).
fn key(service: &ServiceName) -> &str {
    service.as_str()
}

pub async fn save(
    store: &kv::Store,
    service: &ServiceName,
    model: &Model,
) -> Result<(), SnapshotError> {
    let bytes = rmp_serde::to_vec_named(model).map_err(|e| SnapshotError::Encode {
        service: service.to_string(),
        reason: e.to_string(),
    })?;
    store
        .put(key(service), bytes.into())
        .await
        .map_err(|e| SnapshotError::Store {
            service: service.to_string(),
            op: "put",
            reason: e.to_string(),
        })?;
    Ok(())
}

/// The stored model of `service`, if any.
pub async fn load(
    store: &kv::Store,
    service: &ServiceName,
) -> Result<Option<Model>, SnapshotError> {
    let entry = store
        .get(key(service))
        .await
        .map_err(|e| SnapshotError::Store {
            service: service.to_string(),
            op: "get",
            reason: e.to_string(),
        })?;
    let Some(bytes) = entry else {
        return Ok(None);
    };
    rmp_serde::from_slice(&bytes)
        .map(Some)
        .map_err(|e| SnapshotError::Decode {
            service: service.to_string(),
            reason: e.to_string(),
        })
}
