//! The JetStream client every stage uses.
//!
//! - [`Bus::connect`] connects (waiting for NATS as long as it takes, or until shutdown) and
//!   creates or updates the streams of the contract, so stages can start in any order.
//! - [`Bus::publish`] wraps a body in an envelope, derives the subject, uses the event id as
//!   the JetStream message id (de-duplication) and waits for the server's acknowledgement,
//!   retrying with backoff.
//! - [`Bus::inbox`] opens a durable pull consumer ([`inbox`]); [`Inbox::next`] yields decoded
//!   events as [`Delivery`]s and sends what cannot be decoded (or arrives on the wrong
//!   subject) to the dead-letter subject with the reason. What becomes of a delivery is
//!   decided by its handler and carried out in one place, [`Delivery::settle`].
//! - Streams, consumers and buckets of the contract are created or checked in [`provision`].
//! - Authentication: `BusConfig` user/password or credentials file. A refused login ends
//!   [`Bus::connect`] at once ([`BusError::Unauthorized`]) instead of waiting forever; a
//!   subject the server refuses this user (its "Permissions Violation" error) is logged and
//!   counted (`permission_denied`), and a publish or provisioning call it refused fails with
//!   [`BusError::PermissionDenied`] instead of being retried. With a user set, replies come to
//!   the inbox prefix `_INBOX.<user>`, which the shipped server config lets only that user read.

mod inbox;
mod provision;
mod refusals;

use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use immune_nats::{
    encode, AuditCode, AuditRecord, CodecError, Envelope, Event, EventId, Producer, ServiceName,
    Subject,
};

use crate::config::{BusConfig, TelemetryConfig};
use crate::shutdown::Shutdown;
use crate::telemetry::{Observation, Telemetry};
#[cfg(doc)]
use crate::Delivery;

pub use inbox::Inbox;
pub use provision::PROVISION_PATIENCE;
pub use refusals::permission_violation;
use refusals::{inbox_prefix, on_connection_event, Refusals};

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

/// What a stage writes in the audit trail ([`Bus::audit`] adds the stage).
#[derive(Debug, Clone, PartialEq)]
pub struct Audit {
    pub service: ServiceName,
    pub what: AuditCode,
    pub why: String,
    pub outcome: String,
    /// The event the record is about.
    pub about: Option<EventId>,
    /// The action the record is about.
    pub action_id: Option<String>,
}

impl Audit {
    pub fn new(
        service: &ServiceName,
        what: AuditCode,
        why: impl Into<String>,
        outcome: impl Into<String>,
    ) -> Audit {
        Audit {
            service: service.clone(),
            what,
            why: why.into(),
            outcome: outcome.into(),
            about: None,
            action_id: None,
        }
    }

    /// The record is about this event.
    pub fn about(mut self, event: EventId) -> Audit {
        self.about = Some(event);
        self
    }

    /// The record is about this action.
    pub fn action(mut self, action_id: &str) -> Audit {
        self.action_id = Some(action_id.to_string());
        self
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
        provision::patiently("streams", || bus.provision_streams()).await?;
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

    /// Writes an audit record: what this stage did about a service, why, and how it ended.
    pub async fn audit(
        &self,
        correlation_id: Option<String>,
        audit: Audit,
    ) -> Result<EventId, BusError> {
        let record = AuditRecord {
            stage: self.producer.stage,
            service: audit.service,
            what: audit.what.as_str().to_string(),
            why: audit.why,
            outcome: audit.outcome,
            about: audit.about,
            action_id: audit.action_id,
        };
        self.publish(correlation_id, Event::Audit(record)).await
    }
}
