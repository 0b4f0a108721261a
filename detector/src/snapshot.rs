//! Model snapshots in the JetStream key-value bucket [`DETECTOR_MODELS`], one key per
//! service, MessagePack with named fields: a restarted detector (or another instance taking
//! the service over) resumes scoring at once instead of warming up again.

use async_nats::jetstream::kv;
use immune_nats::streams::DETECTOR_MODELS;
use immune_nats::ServiceName;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::baseline::Model;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{what} of {service}: key-value {op} failed: {reason}")]
    Store {
        what: &'static str,
        service: String,
        op: &'static str,
        reason: String,
    },
    #[error("{what} of {service} cannot be decoded: {reason}")]
    Decode {
        what: &'static str,
        service: String,
        reason: String,
    },
    #[error("{what} of {service} cannot be encoded: {reason}")]
    Encode {
        what: &'static str,
        service: String,
        reason: String,
    },
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
    put(store, key(service), service, "model", model).await
}

/// The stored model of `service`, if any.
pub async fn load(
    store: &kv::Store,
    service: &ServiceName,
) -> Result<Option<Model>, SnapshotError> {
    get(store, key(service), service, "model").await
}

/// Stores `value` of `service` (`what` names it in errors) under `key`, MessagePack with
/// named fields.
pub(crate) async fn put<T: Serialize>(
    store: &kv::Store,
    key: &str,
    service: &ServiceName,
    what: &'static str,
    value: &T,
) -> Result<(), SnapshotError> {
    let bytes = rmp_serde::to_vec_named(value).map_err(|e| SnapshotError::Encode {
        what,
        service: service.to_string(),
        reason: e.to_string(),
    })?;
    store
        .put(key, bytes.into())
        .await
        .map_err(|e| SnapshotError::Store {
            what,
            service: service.to_string(),
            op: "put",
            reason: e.to_string(),
        })?;
    Ok(())
}

/// What [`put`] stored under `key`, if anything.
pub(crate) async fn get<T: DeserializeOwned>(
    store: &kv::Store,
    key: &str,
    service: &ServiceName,
    what: &'static str,
) -> Result<Option<T>, SnapshotError> {
    let entry = store.get(key).await.map_err(|e| SnapshotError::Store {
        what,
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
            what,
            service: service.to_string(),
            reason: e.to_string(),
        })
}
