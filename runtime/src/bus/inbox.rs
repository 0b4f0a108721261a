//! Durable inboxes: the events of one consumer, decoded and checked, and what cannot be used
//! sent to the dead-letter subject with the reason.

use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;
use immune_nats::streams::ConsumerSpec;
use immune_nats::{decode, DeadLetter, Event, Subject};

use super::{backoff, Bus, BusError};
use crate::delivery::Delivery;
use crate::telemetry::Observation;

impl Bus {
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
        let messages =
            super::provision::patiently(spec.durable, || self.open_messages(spec, max_batch))
                .await?;
        Ok(Inbox {
            bus: self.clone(),
            spec,
            max_batch,
            messages,
        })
    }

    async fn open_messages(
        &self,
        spec: ConsumerSpec,
        max_batch: Option<usize>,
    ) -> Result<jetstream::consumer::pull::Stream, BusError> {
        let consumer = self.consumer(spec).await?;
        let provision = |e: String| BusError::Provision {
            what: format!("consumer {}", spec.durable),
            reason: e,
        };
        match max_batch {
            None => consumer.messages().await,
            Some(n) => {
                consumer
                    .stream()
                    .max_messages_per_batch(n.max(1))
                    .messages()
                    .await
            }
        }
        .map_err(|e| provision(e.to_string()))
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
                Some(Delivery::new(
                    &self.bus.telemetry,
                    envelope,
                    subject,
                    message,
                ))
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
