//! The executor's ledger, kept in the `EXECUTOR_RESULTS` key-value bucket by action id:
//!
//! - `<action id>`: the published result (the encoded envelope). A redelivered request whose
//!   result is here gets this very envelope again (same event id, so JetStream drops the
//!   duplicate) and nothing is done.
//! - `attempt.<action id>`: written just before an action touches anything, with what the
//!   container looked like then. A redelivered request that finds an attempt but no result
//!   was cut off mid-action (crash, kill); the actuator uses the attempt to finish the work
//!   instead of doing it twice.

use async_nats::jetstream::kv;
use immune_nats::{decode, encode, Envelope};
use serde::{Deserialize, Serialize};

/// An action that began: who began it, when, and the container as it was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub instance: String,
    pub started_ms: u64,
    /// The container the request named, and its name (a recreate reuses the name).
    pub container_id: String,
    pub container_name: String,
    /// Docker's `State.StartedAt` before the action (a restart changes it).
    pub container_started_at: Option<String>,
    /// The replica a scale in chose to remove.
    #[serde(default)]
    pub victim: Option<crate::plan::Instance>,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("results bucket: {0}")]
    Bucket(String),
    #[error("stored record {key} cannot be read: {reason}")]
    Corrupt { key: String, reason: String },
}

#[derive(Debug, Clone)]
pub struct Ledger {
    kv: kv::Store,
}

impl Ledger {
    pub fn new(kv: kv::Store) -> Self {
        Self { kv }
    }

    pub async fn result(&self, action_id: &str) -> Result<Option<Envelope>, LedgerError> {
        let key = result_key(action_id);
        match self.kv.get(&key).await {
            Ok(None) => Ok(None),
            Ok(Some(bytes)) => decode(&bytes).map(Some).map_err(|e| LedgerError::Corrupt {
                key,
                reason: e.to_string(),
            }),
            Err(e) => Err(LedgerError::Bucket(e.to_string())),
        }
    }

    pub async fn store_result(
        &self,
        action_id: &str,
        envelope: &Envelope,
    ) -> Result<(), LedgerError> {
        let bytes = encode(envelope).map_err(|e| LedgerError::Bucket(e.to_string()))?;
        self.kv
            .put(result_key(action_id), bytes.into())
            .await
            .map(|_| ())
            .map_err(|e| LedgerError::Bucket(e.to_string()))
    }

    pub async fn attempt(&self, action_id: &str) -> Result<Option<Attempt>, LedgerError> {
        let key = attempt_key(action_id);
        match self.kv.get(&key).await {
            Ok(None) => Ok(None),
            Ok(Some(bytes)) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| LedgerError::Corrupt {
                        key,
                        reason: e.to_string(),
                    })
            }
            Err(e) => Err(LedgerError::Bucket(e.to_string())),
        }
    }

    pub async fn record_attempt(
        &self,
        action_id: &str,
        attempt: &Attempt,
    ) -> Result<(), LedgerError> {
        let bytes = serde_json::to_vec(attempt).map_err(|e| LedgerError::Bucket(e.to_string()))?;
        self.kv
            .put(attempt_key(action_id), bytes.into())
            .await
            .map(|_| ())
            .map_err(|e| LedgerError::Bucket(e.to_string()))
    }
}

/// The key of an action's result ([`immune_nats::streams::kv_key_part`]: dots replaced
/// too, so no result key can look like an attempt key).
pub fn result_key(action_id: &str) -> String {
    immune_nats::streams::kv_key_part(action_id)
}

pub fn attempt_key(action_id: &str) -> String {
    format!("attempt.{}", result_key(action_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_valid_and_distinct() {
        assert_eq!(result_key("a.b c/d"), "a_b_c_d");
        assert_eq!(attempt_key("a.b"), "attempt.a_b");
        assert_ne!(result_key("attempt.x"), attempt_key("x"));
    }
}
