//! Per-container locks in a key-value bucket, so two executor instances never act on one
//! container at once.
//!
//! A lock is a key created only when absent (`create`), renewed by its holder every third of
//! the bucket's TTL while it acts (an update that must follow the holder's own revision), and
//! deleted when the action is done. An executor that crashes stops renewing: its lock is gone
//! one TTL later, and the redelivered request can be carried out by another instance.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::{self, CreateErrorKind};
use immune_nats::envelope::now_ms;
use serde::{Deserialize, Serialize};

/// Who holds a lock and for which action (the lock's value, JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Holder {
    pub instance: String,
    pub action_id: String,
    pub since_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("lock bucket: {0}")]
    Bucket(String),
}

/// The lock bucket of this executor.
#[derive(Debug, Clone)]
pub struct Locks {
    kv: kv::Store,
    ttl: Duration,
    instance: String,
}

/// A lock this executor holds; renewed in the background until [`Held::release`].
#[derive(Debug)]
pub struct Held {
    kv: kv::Store,
    key: String,
    revision: Arc<AtomicU64>,
    lost: Arc<AtomicBool>,
    renewing: tokio::task::JoinHandle<()>,
}

impl Locks {
    /// `ttl` must be the bucket's max age: how long a lock outlives a crashed holder.
    pub fn new(kv: kv::Store, ttl: Duration, instance: String) -> Self {
        Self { kv, ttl, instance }
    }

    /// Takes the lock `key` for `action_id`; `Ok(Err(holder))` when another holds it.
    pub async fn try_acquire(
        &self,
        key: &str,
        action_id: &str,
    ) -> Result<Result<Held, Option<Holder>>, LockError> {
        let key = lock_key(key);
        let holder = Holder {
            instance: self.instance.clone(),
            action_id: action_id.to_string(),
            since_ms: now_ms(),
        };
        let value = serde_json::to_vec(&holder).map_err(|e| LockError::Bucket(e.to_string()))?;
        match self.kv.create(&key, value.clone().into()).await {
            Ok(revision) => {
                let revision = Arc::new(AtomicU64::new(revision));
                let lost = Arc::new(AtomicBool::new(false));
                let renewing = tokio::spawn(renew(
                    self.kv.clone(),
                    key.clone(),
                    value,
                    self.ttl / 3,
                    revision.clone(),
                    lost.clone(),
                ));
                Ok(Ok(Held {
                    kv: self.kv.clone(),
                    key,
                    revision,
                    lost,
                    renewing,
                }))
            }
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
                let holder = self
                    .kv
                    .get(&key)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|v| serde_json::from_slice(&v).ok());
                Ok(Err(holder))
            }
            Err(e) => Err(LockError::Bucket(e.to_string())),
        }
    }
}

async fn renew(
    kv: kv::Store,
    key: String,
    value: Vec<u8>,
    every: Duration,
    revision: Arc<AtomicU64>,
    lost: Arc<AtomicBool>,
) {
    let every = every.max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(every).await;
        match kv
            .update(&key, value.clone().into(), revision.load(Ordering::SeqCst))
            .await
        {
            Ok(r) => revision.store(r, Ordering::SeqCst),
            Err(e) => {
                tracing::error!(%key, error = %e, "lock lost: cannot renew it");
                lost.store(true, Ordering::SeqCst);
                return;
            }
        }
    }
}

impl Held {
    /// Whether a renewal failed (the lock may have expired and been taken by another).
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// Stops renewing and deletes the lock (only if it is still this holder's revision).
    pub async fn release(mut self) {
        self.renewing.abort();
        let _ = (&mut self.renewing).await;
        if self.lost() {
            return;
        }
        let revision = self.revision.load(Ordering::SeqCst);
        if let Err(e) = self
            .kv
            .delete_expect_revision(&self.key, Some(revision))
            .await
        {
            tracing::warn!(key = %self.key, error = %e, "cannot release lock; it expires on its own");
        }
    }
}

/// The key of a lock on `what` ([`immune_nats::streams::kv_key_part`]).
pub fn lock_key(what: &str) -> String {
    immune_nats::streams::kv_key_part(what)
}
