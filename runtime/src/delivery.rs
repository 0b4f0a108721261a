//! The one delivery rule: a stage's handler says what should become of a message
//! ([`Disposition`]), and [`Delivery::settle`] carries it out — acknowledges, hands it back
//! (now or after a delay) — counts it (`immune_stage_events_total{event="settled"}`) and logs
//! a failed acknowledgement. No stage acknowledges by hand.
//!
//! Each delivery carries a tracing span with its stage, subject, event id and service
//! ([`Delivery::span`]); the handler and the settling run inside it, so every line logged
//! about a message names the message.

use std::time::Duration;

use async_nats::jetstream;
use immune_nats::Envelope;
use tracing::Instrument;

use crate::bus::BusError;
use crate::telemetry::{Observation, Telemetry};

/// What a handler decided should become of the message it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// The work is done (or the message was refused and counted): acknowledge it.
    Done,
    /// The work could not be finished (a publish or a store failed): leave it
    /// unacknowledged, so the server delivers it again after the consumer's ack wait.
    Retry,
    /// Hand it back now, to be delivered again after the delay (to this or another
    /// instance): a container busy, a lock held.
    RetryAfter(Duration),
}

impl Disposition {
    /// The disposition as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Done => "done",
            Disposition::Retry => "retry",
            Disposition::RetryAfter(_) => "retry_after",
        }
    }
}

/// One decoded event taken off a durable consumer. Its handler returns a [`Disposition`],
/// which [`Delivery::settle`] carries out; an unsettled delivery comes back after the
/// consumer's ack wait.
#[derive(Debug)]
pub struct Delivery {
    pub envelope: Envelope,
    pub subject: String,
    message: jetstream::Message,
    span: tracing::Span,
    telemetry: Telemetry,
}

impl Delivery {
    pub(crate) fn new(
        telemetry: &Telemetry,
        envelope: Envelope,
        subject: String,
        message: jetstream::Message,
    ) -> Delivery {
        let service = envelope.body.service().map(|s| s.as_str()).unwrap_or("");
        let span = tracing::info_span!(
            "delivery",
            stage = telemetry.stage().as_str(),
            subject = %subject,
            event_id = %envelope.event_id.0,
            service,
        );
        Delivery {
            envelope,
            subject,
            message,
            span,
            telemetry: telemetry.clone(),
        }
    }

    /// The span of this delivery: stage, subject, event id and service.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// Carries out what the handler decided, counts it, and counts and logs a failed
    /// acknowledgement (the message then comes back after the ack wait, and its handler
    /// must cope with seeing it again, as every handler here does).
    pub async fn settle(self, disposition: Disposition) {
        let span = self.span.clone();
        async move {
            let sent = match disposition {
                Disposition::Done => self.message.double_ack().await,
                Disposition::Retry => Ok(()),
                Disposition::RetryAfter(delay) => {
                    self.message
                        .ack_with(jetstream::AckKind::Nak(Some(delay)))
                        .await
                }
            };
            self.telemetry.observe(Observation::Settled {
                disposition: disposition.as_str(),
            });
            if let Err(e) = sent {
                self.telemetry.failed(disposition_failure(disposition), &e);
            }
        }
        .instrument(span)
        .await
    }

    /// Tells the server the work is still going on: the ack wait starts again. A failure is
    /// counted and logged (the message may then be delivered again while in progress; the
    /// stage's idempotency covers that).
    pub async fn in_progress(&self) {
        if let Err(e) = self.message.ack_with(jetstream::AckKind::Progress).await {
            self.telemetry
                .failed("in_progress", &BusError::Ack(e.to_string()));
        }
    }

    /// How many times this message was delivered (1 the first time).
    pub fn delivered(&self) -> i64 {
        self.message.info().map(|i| i.delivered).unwrap_or(1)
    }
}

fn disposition_failure(disposition: Disposition) -> &'static str {
    match disposition {
        Disposition::RetryAfter(_) => "nak",
        _ => "ack",
    }
}
