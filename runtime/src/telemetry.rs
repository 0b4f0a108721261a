//! What a stage observes about itself. Each [`Observation`] is logged (tracing) and counted
//! (`immune_stage_events_total{stage,event,detail}`), and the counters are served on
//! `/metrics`, so the log line and the counter can never disagree.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use immune_nats::Stage;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::shutdown::Shutdown;

/// Something a stage noticed about its own work.
#[derive(Debug, Clone, Copy)]
pub enum Observation<'a> {
    /// An event was taken off the bus.
    Received { kind: &'a str },
    /// An event was published and the server acknowledged it.
    Published { kind: &'a str },
    /// A publish failed after every attempt; the input stays unacknowledged.
    PublishFailed { subject: &'a str, error: &'a str },
    /// A message could not be used and went to the dead-letter subject.
    DeadLettered {
        subject: &'a str,
        reason_kind: &'a str,
        reason: &'a str,
    },
    /// The stage did its job on something (scraped, detected, decided, acted, injected).
    Acted { what: &'a str, service: &'a str },
    /// A guard or safety rule said no.
    Refused { what: &'a str, reason: &'a str },
    /// Work failed; `what` names it, `error` says why.
    Failed { what: &'a str, error: &'a str },
    /// A delivery was settled as its handler decided (`done`, `retry`, `retry_after`).
    Settled { disposition: &'a str },
    /// NATS refused this stage something its user is not permitted (`operation`: publish,
    /// subscribe, or connect for a refused user/password), on `subject`.
    PermissionDenied {
        operation: &'a str,
        subject: &'a str,
    },
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    stage: &'static str,
    event: &'static str,
    detail: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    stage: &'static str,
    what: String,
}

type HistogramFamily = Family<DurationLabels, Histogram, fn() -> Histogram>;

/// The self-metrics of one stage. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Telemetry {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    stage: Stage,
    registry: Registry,
    events: Family<EventLabels, Counter>,
    durations: HistogramFamily,
}

fn duration_histogram() -> Histogram {
    // 0.5 ms .. ~16 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Telemetry {
    pub fn new(stage: Stage) -> Self {
        let mut registry = Registry::with_prefix("immune");
        let events = Family::<EventLabels, Counter>::default();
        let durations: HistogramFamily = Family::new_with_constructor(duration_histogram);
        registry.register(
            "stage_events",
            "What the stage observed about its own work",
            events.clone(),
        );
        registry.register(
            "stage_duration_seconds",
            "How long the stage's work took",
            durations.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                stage,
                registry,
                events,
                durations,
            }),
        }
    }

    pub fn stage(&self) -> Stage {
        self.inner.stage
    }

    /// Logs and counts one observation.
    pub fn observe(&self, observation: Observation<'_>) {
        let stage = self.inner.stage.as_str();
        let (event, detail) = match observation {
            Observation::Received { kind } => {
                tracing::trace!(stage, kind, "received");
                ("received", kind.to_string())
            }
            Observation::Published { kind } => {
                tracing::trace!(stage, kind, "published");
                ("published", kind.to_string())
            }
            Observation::PublishFailed { subject, error } => {
                tracing::error!(stage, subject, error, "publish failed after retries");
                ("publish_failed", String::new())
            }
            Observation::DeadLettered {
                subject,
                reason_kind,
                reason,
            } => {
                tracing::warn!(stage, subject, reason_kind, reason, "message dead-lettered");
                ("dead_lettered", reason_kind.to_string())
            }
            Observation::Acted { what, service } => {
                tracing::debug!(stage, what, service, "acted");
                ("acted", what.to_string())
            }
            Observation::Refused { what, reason } => {
                tracing::warn!(stage, what, reason, "refused");
                ("refused", what.to_string())
            }
            Observation::Failed { what, error } => {
                tracing::warn!(stage, what, error, "failed");
                ("failed", what.to_string())
            }
            Observation::Settled { disposition } => {
                tracing::trace!(stage, disposition, "settled");
                ("settled", disposition.to_string())
            }
            Observation::PermissionDenied { operation, subject } => {
                tracing::error!(
                    stage,
                    operation,
                    subject,
                    "NATS refused: this stage's user is not permitted this"
                );
                ("permission_denied", operation.to_string())
            }
        };
        self.inner
            .events
            .get_or_create(&EventLabels {
                stage,
                event,
                detail,
            })
            .inc();
    }

    /// Logs and counts a failure of `what` (the one way a stage reports work that failed).
    pub fn failed(&self, what: &str, error: &dyn std::fmt::Display) {
        self.observe(Observation::Failed {
            what,
            error: &error.to_string(),
        });
    }

    /// Logs and counts a refusal of `what` (a guard or safety rule said no).
    pub fn refused(&self, what: &str, reason: &str) {
        self.observe(Observation::Refused { what, reason });
    }

    /// Records how long a piece of work took.
    pub fn time(&self, what: &str, took: Duration) {
        self.inner
            .durations
            .get_or_create(&DurationLabels {
                stage: self.inner.stage.as_str(),
                what: what.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// The current count of one event/detail pair (tests and the bench read it).
    pub fn count(&self, event: &'static str, detail: &str) -> u64 {
        self.inner
            .events
            .get_or_create(&EventLabels {
                stage: self.inner.stage.as_str(),
                event,
                detail: detail.to_string(),
            })
            .get()
    }

    /// The Prometheus text exposition of this stage's metrics.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry);
        out
    }

    /// Serves `/metrics` on `listen` until shutdown.
    pub async fn serve(self, listen: SocketAddr, mut shutdown: Shutdown) -> std::io::Result<()> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        tracing::info!(%listen, "serving /metrics");
        let app = Router::new().route(
            "/metrics",
            get(move || {
                let telemetry = self.clone();
                async move { telemetry.render() }
            }),
        );
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.wait().await })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_are_counted_and_rendered() {
        let t = Telemetry::new(Stage::Detector);
        t.observe(Observation::DeadLettered {
            subject: "immune.metrics.x",
            reason_kind: "malformed",
            reason: "bad",
        });
        t.observe(Observation::DeadLettered {
            subject: "immune.metrics.x",
            reason_kind: "malformed",
            reason: "bad",
        });
        assert_eq!(t.count("dead_lettered", "malformed"), 2);
        let text = t.render();
        assert!(
            text.contains(r#"immune_stage_events_total{stage="detector",event="dead_lettered",detail="malformed"} 2"#),
            "{text}"
        );
    }
}
