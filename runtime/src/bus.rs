//! The JetStream client every stage uses.
//!
//! - [`Bus::connect`] connects (waiting for NATS as long as it takes, or until shutdown) and
//!   creates or updates the streams of the contract, so stages can start in any order.
//! - [`Bus::publish`] wraps a body in an envelope, derives the subject, uses the event id as
//!   the JetStream message id (de-duplication) and waits for the server's acknowledgement,
//!   retrying with backoff.
//! - [`Bus::inbox`] opens a durable pull consumer; [`Inbox::next`] yields decoded events and
//!   sends what cannot be decoded (or arrives on the wrong subject) to the dead-letter subject
//!   with the reason, acknowledging it only once the dead letter is stored.
//! - Authentication: `BusConfig` user/password or credentials file. A refused login ends
//!   [`Bus::connect`] at once ([`BusError::Unauthorized`]) instead of waiting forever; a
//!   subject the server refuses this user (its "Permissions Violation" error) is logged and
//!   counted (`permission_denied`), and a publish or provisioning call it refused fails with
//!   [`BusError::PermissionDenied`] instead of being retried. With a user set, replies come to
//!   the inbox prefix `_INBOX.<user>`, which the shipped server config lets only that user read.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, kv, message::PublishMessage, stream};
use futures::StreamExt;
use immune_nats::streams::{BucketSpec, ConsumerSpec, ALL_STREAMS, DUPLICATE_WINDOW};
use immune_nats::{
    decode, encode, AuditRecord, CodecError, DeadLetter, Envelope, Event, EventId, Producer,
    ServiceName, Subject,
};

use crate::config::{BusConfig, TelemetryConfig};
use crate::shutdown::Shutdown;
use crate::telemetry::{Observation, Telemetry};

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("cannot provision {what}: {reason}")]
    Provision { what: String, reason: String },
    #[error("publish to {subject} failed after {attempts} attempts: {reason}")]
    Publish {
        subject: String,
        attempts: u32,
        reason: String,
    },
    #[error("acknowledgement failed: {0}")]
    Ack(String),
    #[error("key-value {bucket}: {reason}")]
    KeyValue { bucket: String, reason: String },
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("shut down while waiting for NATS")]
    ShutDown,
    #[error("NATS at {url} refused the login of user {user}: {reason} (check IMMUNE_NATS_USER / IMMUNE_NATS_PASSWORD / IMMUNE_NATS_CREDENTIALS)")]
    Unauthorized {
        url: String,
        /// The user name tried, or `(none)`.
        user: String,
        reason: String,
    },
    #[error("NATS refused {operation} to {subject}: this stage's user is not permitted it (see nats/nats-server.conf)")]
    PermissionDenied { operation: String, subject: String },
}

impl BusError {
    pub fn kind(&self) -> &'static str {
        match self {
            BusError::Connect { .. } => "connect",
            BusError::Provision { .. } => "provision",
            BusError::Publish { .. } => "publish",
            BusError::Ack(_) => "ack",
            BusError::KeyValue { .. } => "key_value",
            BusError::Codec(e) => e.kind(),
            BusError::ShutDown => "shut_down",
            BusError::Unauthorized { .. } => "unauthorized",
            BusError::PermissionDenied { .. } => "permission_denied",
        }
    }
}

/// How long [`Bus::close`] waits for the connection to close.
pub const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// A stage's connection to the bus. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Bus {
    client: async_nats::Client,
    js: jetstream::Context,
    producer: Producer,
    telemetry: Telemetry,
    publish_attempts: u32,
    refusals: Refusals,
}

/// What the server refused this connection: the subjects of its "Permissions Violation"
/// errors, which arrive apart from the call that caused them (a refused publish or API
/// request gets no answer at all, only this error on the connection).
#[derive(Debug, Clone, Default)]
struct Refusals(Arc<Mutex<HashSet<(String, String)>>>);

impl Refusals {
    /// Bounded: a stage publishes on a bounded set of subjects, but never grow without end.
    const MAX: usize = 1024;

    fn record(&self, operation: &str, subject: &str) {
        let mut set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if set.len() >= Self::MAX {
            set.clear();
        }
        set.insert((operation.to_string(), subject.to_string()));
    }

    /// The refusal of a publish to `subject`, if the server reported one.
    fn publish_to(&self, subject: &str) -> Option<BusError> {
        let set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        set.contains(&("publish".to_string(), subject.to_string()))
            .then(|| BusError::PermissionDenied {
                operation: "publish".into(),
                subject: subject.to_string(),
            })
    }

    /// A refused JetStream API call (`$JS.…`) whose subject `about` accepts, if any: the
    /// reason a provisioning call timed out.
    fn api_call(&self, about: impl Fn(&str) -> bool) -> Option<BusError> {
        let set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        set.iter()
            .filter(|(_, subject)| subject.starts_with("$JS.") && about(subject))
            .min()
            .map(|(operation, subject)| BusError::PermissionDenied {
                operation: operation.clone(),
                subject: subject.clone(),
            })
    }
}

/// Reads a server error such as `Permissions Violation for Publish to "immune.actions.x"`
/// into (operation, subject); `None` for any other error.
pub fn permission_violation(error: &str) -> Option<(&'static str, String)> {
    if !error.to_ascii_lowercase().contains("permissions violation") {
        return None;
    }
    let operation = if error.contains("Subscription") {
        "subscribe"
    } else {
        "publish"
    };
    let subject = error
        .split('"')
        .nth(1)
        .map(str::to_string)
        .unwrap_or_default();
    Some((operation, subject))
}

/// Logs every connection event; counts the server's refusals and remembers their subjects.
fn on_connection_event(
    event: async_nats::Event,
    stage: immune_nats::Stage,
    refusals: &Refusals,
    telemetry: &Telemetry,
) {
    use async_nats::{Event, ServerError};
    match &event {
        Event::ServerError(ServerError::Other(error)) => match permission_violation(error) {
            Some((operation, subject)) => {
                refusals.record(operation, &subject);
                telemetry.observe(Observation::PermissionDenied {
                    operation,
                    subject: &subject,
                });
            }
            None => tracing::warn!(stage = stage.as_str(), %event, "nats server error"),
        },
        Event::ServerError(ServerError::AuthorizationViolation) => {
            telemetry.observe(Observation::PermissionDenied {
                operation: "connect",
                subject: "",
            });
        }
        _ => tracing::info!(stage = stage.as_str(), %event, "nats connection"),
    }
}

/// The inbox prefix of `user`: `_INBOX.<user>` when the name is one subject token.
fn inbox_prefix(user: &str) -> Option<String> {
    let token = !user.is_empty()
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    token.then(|| format!("_INBOX.{user}"))
}

/// The name this process goes by: `IMMUNE_INSTANCE`, else the host name (a container id in
/// Docker), else the process id.
pub fn instance_name() -> String {
    std::env::var("IMMUNE_INSTANCE")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| format!("pid-{}", std::process::id()))
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((50u64 << attempt.min(6)).min(2_000))
}

impl Bus {
    /// Connects and provisions the streams; waits for NATS until `shutdown`.
    pub async fn connect(
        config: &BusConfig,
        telemetry: Telemetry,
        shutdown: &Shutdown,
    ) -> Result<Bus, BusError> {
        let stage = telemetry.stage();
        let instance = instance_name();
        let mut attempt = 0u32;
        let refusals = Refusals::default();
        let client = loop {
            let (seen, counted) = (refusals.clone(), telemetry.clone());
            let mut options = async_nats::ConnectOptions::new()
                .name(format!("immune-{stage}-{instance}"))
                .max_reconnects(None)
                .connection_timeout(Duration::from_secs(2))
                .event_callback(move |event| {
                    let (seen, counted) = (seen.clone(), counted.clone());
                    async move { on_connection_event(event, stage, &seen, &counted) }
                });
            if let Some(prefix) = config.user.as_deref().and_then(inbox_prefix) {
                options = options.custom_inbox_prefix(prefix);
            }
            if let Some(path) = &config.credentials {
                options = options
                    .credentials_file(path)
                    .await
                    .map_err(|e| BusError::Connect {
                        url: config.url.clone(),
                        reason: format!("credentials {}: {e}", path.display()),
                    })?;
            }
            if let (Some(user), Some(password)) = (&config.user, &config.password) {
                options = options.user_and_password(user.clone(), password.clone());
            }
            match options.connect(&config.url).await {
                Ok(client) => break client,
                // A wrong user or password does not get better by waiting.
                Err(e)
                    if matches!(
                        e.kind(),
                        async_nats::ConnectErrorKind::AuthorizationViolation
                            | async_nats::ConnectErrorKind::Authentication
                    ) =>
                {
                    telemetry.observe(Observation::PermissionDenied {
                        operation: "connect",
                        subject: "",
                    });
                    return Err(BusError::Unauthorized {
                        url: config.url.clone(),
                        user: config.user.clone().unwrap_or_else(|| "(none)".into()),
                        reason: e.to_string(),
                    });
                }
                Err(e) => {
                    attempt += 1;
                    if shutdown.is_triggered() {
                        return Err(BusError::ShutDown);
                    }
                    if attempt == 1 || attempt.is_multiple_of(10) {
                        tracing::warn!(url = %config.url, attempt, error = %e, "waiting for NATS");
                    }
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        };
        let js = jetstream::new(client.clone());
        let bus = Bus {
            client,
            js,
            producer: Producer { stage, instance },
            telemetry,
            publish_attempts: config.publish_attempts.max(1),
            refusals,
        };
        bus.provision_streams().await?;
        Ok(bus)
    }

    /// How every stage starts: serve its own `/metrics` when configured, then connect.
    pub async fn start_stage(
        nats: &BusConfig,
        telemetry_config: &TelemetryConfig,
        telemetry: Telemetry,
        shutdown: &Shutdown,
    ) -> Result<Bus, BusError> {
        if let Some(listen) = telemetry_config.listen {
            let serving = telemetry.clone().serve(listen, shutdown.clone());
            tokio::spawn(async move {
                if let Err(e) = serving.await {
                    tracing::error!(%listen, error = %e, "cannot serve /metrics");
                }
            });
        }
        Bus::connect(nats, telemetry, shutdown).await
    }

    /// A connection as a tool has it (CLI, replay, tests): stage `client`, nothing served.
    pub async fn connect_client(nats: &BusConfig) -> Result<Bus, BusError> {
        let (_trigger, shutdown) = Shutdown::new();
        Bus::connect(nats, Telemetry::new(immune_nats::Stage::Client), &shutdown).await
    }

    async fn provision_streams(&self) -> Result<(), BusError> {
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

    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    /// The plain NATS client, for core subscriptions (CLI, tests).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// Flushes what is queued and closes the connection, so that nothing this stage published
    /// is left in a buffer and its outstanding pulls end with it.
    ///
    /// Returns once the connection is closed (at most [`CLOSE_WAIT`]): the client's drain only
    /// starts the closing, and a successor started at once (a restart in place) would
    /// otherwise publish while this connection's pull is still registered at the server,
    /// which then hands the successor's first message to a reader that is gone; it comes back
    /// only after the consumer's ack wait.
    pub async fn close(&self) {
        if let Err(e) = self.client.drain().await {
            tracing::warn!(error = %e, "could not drain the NATS connection");
            return;
        }
        // A flush fails once the connection's handler has finished, the socket with it.
        let closed = async {
            while self.client.flush().await.is_ok() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        if tokio::time::timeout(CLOSE_WAIT, closed).await.is_err() {
            tracing::warn!("the NATS connection did not close in time");
        }
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// Publishes one event; returns its id once the server has stored it.
    pub async fn publish(
        &self,
        correlation_id: Option<String>,
        body: Event,
    ) -> Result<EventId, BusError> {
        let envelope = Envelope::new(self.producer.clone(), correlation_id, body);
        self.publish_envelope(&envelope).await?;
        Ok(envelope.event_id)
    }

    /// Publishes a ready envelope (a republished one keeps its id and is de-duplicated).
    pub async fn publish_envelope(&self, envelope: &Envelope) -> Result<(), BusError> {
        let bytes = bytes::Bytes::from(encode(envelope)?);
        let subject = Subject::of(&envelope.body);
        let mut reason = String::new();
        for attempt in 0..self.publish_attempts {
            let message = PublishMessage::build()
                .payload(bytes.clone())
                .message_id(&envelope.event_id.0);
            match self.js.send_publish(subject.to_string(), message).await {
                Ok(ack) => match ack.await {
                    Ok(_) => {
                        self.telemetry.observe(Observation::Published {
                            kind: envelope.body.kind(),
                        });
                        return Ok(());
                    }
                    Err(e) => reason = e.to_string(),
                },
                Err(e) => reason = e.to_string(),
            }
            // Refused by the server's permissions: no retry can help.
            if let Some(refused) = self.refusals.publish_to(subject.as_str()) {
                self.telemetry.observe(Observation::PublishFailed {
                    subject: subject.as_str(),
                    error: &refused.to_string(),
                });
                return Err(refused);
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
        self.telemetry.observe(Observation::PublishFailed {
            subject: subject.as_str(),
            error: &reason,
        });
        Err(BusError::Publish {
            subject: subject.to_string(),
            attempts: self.publish_attempts,
            reason,
        })
    }

    /// Writes an audit record: what this stage did about `service`, why, and how it ended.
    pub async fn audit(
        &self,
        correlation_id: Option<String>,
        service: &ServiceName,
        what: &str,
        why: impl Into<String>,
        outcome: impl Into<String>,
        about: Option<EventId>,
    ) -> Result<EventId, BusError> {
        let record = AuditRecord {
            stage: self.producer.stage,
            service: service.clone(),
            what: what.to_string(),
            why: why.into(),
            outcome: outcome.into(),
            about,
        };
        self.publish(correlation_id, Event::Audit(record)).await
    }

    /// Opens (creating when needed) the durable consumer `spec`.
    pub async fn inbox(&self, spec: ConsumerSpec) -> Result<Inbox, BusError> {
        self.inbox_batched(spec, None).await
    }

    /// Like [`Bus::inbox`], but pulls at most `max_batch` messages at a time (instead of the
    /// client's default of hundreds), so instances sharing the consumer share the work
    /// rather than one of them holding every pending message.
    pub async fn inbox_batched(
        &self,
        spec: ConsumerSpec,
        max_batch: Option<usize>,
    ) -> Result<Inbox, BusError> {
        let consumer = self.consumer(spec).await?;
        let provision = |e: String| BusError::Provision {
            what: format!("consumer {}", spec.durable),
            reason: e,
        };
        let messages = match max_batch {
            None => consumer.messages().await,
            Some(n) => {
                consumer
                    .stream()
                    .max_messages_per_batch(n.max(1))
                    .messages()
                    .await
            }
        }
        .map_err(|e| provision(e.to_string()))?;
        Ok(Inbox {
            bus: self.clone(),
            spec,
            max_batch,
            messages,
        })
    }

    async fn consumer(
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

    /// Stores a message the stage cannot use, with the reason.
    async fn dead_letter(
        &self,
        subject: &str,
        payload: &[u8],
        reason_kind: &str,
        reason: &str,
    ) -> Result<(), BusError> {
        self.telemetry.observe(Observation::DeadLettered {
            subject,
            reason_kind,
            reason,
        });
        let letter = DeadLetter {
            stage: self.producer.stage,
            subject: subject.to_string(),
            reason: reason.to_string(),
            reason_kind: reason_kind.to_string(),
            payload: payload[..payload.len().min(DeadLetter::MAX_PAYLOAD)].to_vec(),
            payload_len: payload.len() as u64,
        };
        self.publish(None, Event::DeadLetter(letter))
            .await
            .map(|_| ())
    }
}

/// One decoded event taken off a durable consumer. Acknowledge it only once the work it
/// asks for is done; an unacknowledged delivery comes back after the consumer's ack wait.
#[derive(Debug)]
pub struct Delivery {
    pub envelope: Envelope,
    pub subject: String,
    message: jetstream::Message,
}

impl Delivery {
    pub async fn ack(&self) -> Result<(), BusError> {
        self.message
            .double_ack()
            .await
            .map_err(|e| BusError::Ack(e.to_string()))
    }

    /// Tells the server the work is still going on: the ack wait starts again.
    pub async fn in_progress(&self) -> Result<(), BusError> {
        self.message
            .ack_with(jetstream::AckKind::Progress)
            .await
            .map_err(|e| BusError::Ack(e.to_string()))
    }

    /// Gives the message back to be delivered again after `delay` (to this or another instance).
    pub async fn nak(&self, delay: Duration) -> Result<(), BusError> {
        self.message
            .ack_with(jetstream::AckKind::Nak(Some(delay)))
            .await
            .map_err(|e| BusError::Ack(e.to_string()))
    }

    /// How many times this message was delivered (1 the first time).
    pub fn delivered(&self) -> i64 {
        self.message.info().map(|i| i.delivered).unwrap_or(1)
    }
}

/// The stream of events of one durable consumer.
pub struct Inbox {
    bus: Bus,
    spec: ConsumerSpec,
    max_batch: Option<usize>,
    messages: pull::Stream,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("consumer", &self.spec.durable)
            .finish()
    }
}

impl Inbox {
    /// The next usable event. Never ends on its own: connection trouble is logged and waited
    /// out; the caller selects on its shutdown beside it.
    pub async fn next(&mut self) -> Delivery {
        let mut failures = 0u32;
        loop {
            match self.messages.next().await {
                Some(Ok(message)) => {
                    failures = 0;
                    if let Some(delivery) = self.accept(message).await {
                        return delivery;
                    }
                }
                Some(Err(e)) => {
                    failures += 1;
                    tracing::warn!(consumer = self.spec.durable, error = %e, "consumer interrupted");
                    if failures >= 3 {
                        self.reopen().await;
                        failures = 0;
                    } else {
                        tokio::time::sleep(backoff(failures)).await;
                    }
                }
                None => self.reopen().await,
            }
        }
    }

    async fn reopen(&mut self) {
        let mut attempt = 0;
        loop {
            match self.bus.inbox_batched(self.spec, self.max_batch).await {
                Ok(fresh) => {
                    self.messages = fresh.messages;
                    tracing::info!(consumer = self.spec.durable, "consumer reopened");
                    return;
                }
                Err(e) => {
                    attempt += 1;
                    tracing::warn!(consumer = self.spec.durable, attempt, error = %e, "cannot reopen consumer");
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
    }

    /// Decodes and checks one message; dead-letters it when unusable.
    async fn accept(&self, message: jetstream::Message) -> Option<Delivery> {
        let subject = message.subject.to_string();
        let verdict = match decode(&message.payload) {
            Ok(envelope) if Subject::of(&envelope.body).as_str() == subject => Ok(envelope),
            Ok(envelope) => Err((
                "wrong_subject",
                format!(
                    "a {} event does not belong on {subject}",
                    envelope.body.kind()
                ),
            )),
            Err(e) => Err((e.kind(), e.to_string())),
        };
        match verdict {
            Ok(envelope) => {
                self.bus.telemetry.observe(Observation::Received {
                    kind: envelope.body.kind(),
                });
                Some(Delivery {
                    envelope,
                    subject,
                    message,
                })
            }
            Err((kind, reason)) => {
                match self
                    .bus
                    .dead_letter(&subject, &message.payload, kind, &reason)
                    .await
                {
                    Ok(()) => {
                        if let Err(e) = message.double_ack().await {
                            tracing::warn!(%subject, error = %e, "dead letter stored but not acknowledged");
                        }
                    }
                    // Not acknowledged: it comes back and is dead-lettered then.
                    Err(e) => tracing::error!(%subject, error = %e, "cannot store dead letter"),
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_permission_violation_names_its_operation_and_subject() {
        assert_eq!(
            permission_violation(r#"Permissions Violation for Publish to "immune.actions.orders""#),
            Some(("publish", "immune.actions.orders".to_string()))
        );
        assert_eq!(
            permission_violation(r#"Permissions Violation for Subscription to "immune.>""#),
            Some(("subscribe", "immune.>".to_string()))
        );
        assert_eq!(permission_violation("Maximum Payload Violation"), None);
    }

    #[test]
    fn a_refused_publish_is_found_by_its_subject_and_api_calls_by_their_prefix() {
        let refusals = Refusals::default();
        assert!(refusals.publish_to("immune.actions.orders").is_none());
        refusals.record("publish", "immune.actions.orders");
        assert!(matches!(
            refusals.publish_to("immune.actions.orders"),
            Some(BusError::PermissionDenied { .. })
        ));
        assert!(refusals.publish_to("immune.actions.payments").is_none());
        assert!(refusals.api_call(|_| true).is_none());
        refusals.record(
            "publish",
            "$JS.API.CONSUMER.MSG.NEXT.IMMUNE_PIPELINE.executor",
        );
        assert!(refusals.api_call(|s| s.contains("KV_")).is_none());
        let err = refusals
            .api_call(|s| s.contains(".IMMUNE_PIPELINE.executor"))
            .expect("api refusal");
        assert!(err.to_string().contains("MSG.NEXT"), "{err}");
        assert_eq!(err.kind(), "permission_denied");
    }

    #[test]
    fn only_a_plain_user_name_gets_its_own_inbox_prefix() {
        assert_eq!(inbox_prefix("executor").as_deref(), Some("_INBOX.executor"));
        assert_eq!(inbox_prefix("a.b"), None);
        assert_eq!(inbox_prefix(""), None);
    }
}
