//! Streams, consumers and key-value buckets of the contract: created when missing, updated
//! to this build's configuration where the stage's user may.
//!
//! A stage provisions as it starts, right after it connected; a NATS server restarting just
//! then (or JetStream not answering yet) is waited out for [`PROVISION_PATIENCE`], so the
//! stage starts once it is back instead of exiting. A refusal (the user may not) is not
//! retried, and a failure that outlasts the patience stops the stage with its error.

use std::future::Future;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, kv, stream};
use immune_nats::streams::{BucketSpec, ConsumerSpec, ALL_STREAMS, DUPLICATE_WINDOW};

use super::{backoff, Bus, BusError};

/// How long a provisioning step NATS does not answer is retried: longer than a server
/// restart, short enough that a real misconfiguration still stops the stage with its error.
pub const PROVISION_PATIENCE: Duration = Duration::from_secs(30);

/// Runs `step` until it succeeds, retrying what NATS may answer once it is back (provision
/// and key-value failures) for [`PROVISION_PATIENCE`].
pub(super) async fn patiently<T, F, Fut>(what: &str, mut step: F) -> Result<T, BusError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, BusError>>,
{
    let deadline = Instant::now() + PROVISION_PATIENCE;
    let mut attempt = 0u32;
    loop {
        match step().await {
            Ok(done) => return Ok(done),
            Err(e @ (BusError::Provision { .. } | BusError::KeyValue { .. }))
                if Instant::now() < deadline =>
            {
                attempt += 1;
                tracing::warn!(what, attempt, error = %e, "NATS cannot provision yet; retrying");
                tokio::time::sleep(backoff(attempt)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

impl Bus {
    pub(super) async fn provision_streams(&self) -> Result<(), BusError> {
        for spec in ALL_STREAMS {
            let config = stream::Config {
                name: spec.name.to_string(),
                description: Some(spec.description.to_string()),
                subjects: spec.subjects.iter().map(|s| s.to_string()).collect(),
                max_age: spec.max_age,
                duplicate_window: DUPLICATE_WINDOW,
                storage: stream::StorageType::File,
                ..Default::default()
            };
            // Stages start together: a concurrent create may lose the race once; retry.
            let mut last = String::new();
            for attempt in 0..5 {
                match self.ensure_stream(&config).await {
                    Ok(()) => {
                        last.clear();
                        break;
                    }
                    Err(e) => {
                        let ours =
                            |s: &str| !s.contains(".STREAM.UPDATE.") && s.ends_with(&config.name);
                        if let Some(refused) = self.refusals.api_call(ours) {
                            return Err(refused);
                        }
                        last = e;
                        tokio::time::sleep(backoff(attempt)).await;
                    }
                }
            }
            if !last.is_empty() {
                return Err(BusError::Provision {
                    what: format!("stream {}", spec.name),
                    reason: last,
                });
            }
        }
        Ok(())
    }

    /// Creates the stream when missing; updates it when this build's config differs. A stage
    /// may create but not update (nats-server.conf): a refused update is logged, and the
    /// stream is used as it is until an operator's client (allowed to update) applies it.
    async fn ensure_stream(&self, config: &stream::Config) -> Result<(), String> {
        let existing = match self.js.get_stream(&config.name).await {
            Ok(existing) => existing,
            Err(e)
                if matches!(
                    e.kind(),
                    jetstream::context::GetStreamErrorKind::JetStream(j)
                        if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
                ) =>
            {
                return self
                    .js
                    .create_stream(config.clone())
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string());
            }
            Err(e) => return Err(e.to_string()),
        };
        let current = &existing.cached_info().config;
        let same = current.subjects == config.subjects
            && current.max_age == config.max_age
            && current.duplicate_window == config.duplicate_window
            && current.description == config.description;
        if !same {
            if let Err(e) = self.js.update_stream(config.clone()).await {
                tracing::warn!(stream = %config.name, error = %e, "could not update the stream to this build's config; using it as it is");
            }
        }
        Ok(())
    }

    pub(super) async fn consumer(
        &self,
        spec: ConsumerSpec,
    ) -> Result<jetstream::consumer::PullConsumer, BusError> {
        let ours = format!(".{}.{}", spec.stream.name, spec.durable);
        let provision = |e: String| {
            self.refusals
                .api_call(|s| s.contains(&ours))
                .unwrap_or_else(|| BusError::Provision {
                    what: format!("consumer {}", spec.durable),
                    reason: e,
                })
        };
        let stream = self
            .js
            .get_stream(spec.stream.name)
            .await
            .map_err(|e| provision(e.to_string()))?;
        let config = pull::Config {
            durable_name: Some(spec.durable.to_string()),
            filter_subjects: spec.filters.iter().map(|s| s.to_string()).collect(),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: spec.ack_wait,
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            max_ack_pending: 10_000,
            ..Default::default()
        };
        // Create, or update an existing durable to this build's filters and ack wait: a
        // newer stage that listens to one more subject must not keep an older consumer's.
        match stream.create_consumer(config.clone()).await {
            Ok(consumer) => Ok(consumer),
            Err(e) => {
                tracing::warn!(consumer = spec.durable, error = %e, "could not update the consumer; using it as it is");
                stream
                    .get_or_create_consumer(spec.durable, config)
                    .await
                    .map_err(|e| provision(e.to_string()))
            }
        }
    }

    /// A key-value bucket, created when missing (waiting out a NATS restart, see the module
    /// header).
    pub async fn bucket(&self, spec: BucketSpec) -> Result<kv::Store, BusError> {
        patiently(spec.name, || self.bucket_once(spec)).await
    }

    async fn bucket_once(&self, spec: BucketSpec) -> Result<kv::Store, BusError> {
        match self.js.get_key_value(spec.name).await {
            Ok(store) => Ok(store),
            Err(_) => self
                .js
                .create_key_value(kv::Config {
                    bucket: spec.name.to_string(),
                    history: spec.history,
                    max_age: spec.max_age,
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|e| {
                    let kv = format!("KV_{}", spec.name);
                    self.refusals
                        .api_call(|s| s.contains(&kv) || s == "$JS.API.INFO")
                        .unwrap_or_else(|| BusError::KeyValue {
                            bucket: spec.name.to_string(),
                            reason: e.to_string(),
                        })
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_provisioning_step_waits_out_a_restart_but_not_a_refusal() {
        let tries = AtomicU32::new(0);
        let done = patiently("streams", || async {
            match tries.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err(BusError::Provision {
                    what: "streams".into(),
                    reason: "no responders".into(),
                }),
                n => Ok(n),
            }
        })
        .await;
        assert_eq!(done.ok(), Some(2), "succeeded on the third try");

        let refused = AtomicU32::new(0);
        let out: Result<(), BusError> = patiently("streams", || async {
            refused.fetch_add(1, Ordering::SeqCst);
            Err(BusError::PermissionDenied {
                operation: "create".into(),
                subject: "$JS.API.STREAM.CREATE.X".into(),
            })
        })
        .await;
        assert!(matches!(out, Err(BusError::PermissionDenied { .. })));
        assert_eq!(
            refused.load(Ordering::SeqCst),
            1,
            "a refusal is not retried"
        );
    }
}
