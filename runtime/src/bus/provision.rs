//! Streams, consumers and key-value buckets of the contract: created when missing, updated
//! to this build's configuration where the stage's user may.

use async_nats::jetstream::{self, consumer::pull, kv, stream};
use immune_nats::streams::{BucketSpec, ConsumerSpec, ALL_STREAMS, DUPLICATE_WINDOW};

use super::{backoff, Bus, BusError};

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

    /// A key-value bucket, created when missing.
    pub async fn bucket(&self, spec: BucketSpec) -> Result<kv::Store, BusError> {
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
