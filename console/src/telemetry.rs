//! What the console observes about itself: each [`Seen`] is logged (tracing) and counted,
//! and the counters are served on the console's own `/metrics`.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Something the console noticed about its own work.
#[derive(Debug, Clone, Copy)]
pub enum Seen<'a> {
    /// An event came off the bus and went into the view.
    Received { kind: &'a str },
    /// A message on a watched subject could not be decoded; it is skipped (the stages that
    /// consume it dead-letter it, the console only shows).
    Undecodable {
        subject: &'a str,
        reason_kind: &'a str,
        reason: &'a str,
    },
    /// A chaos request from the page was published.
    ChaosRequested {
        service: &'a str,
        fault: &'a str,
        run_id: &'a str,
    },
    /// A chaos request from the page was refused before it reached the bus.
    ChaosRefused { reason: &'a str },
    /// A chaos request could not be published.
    ChaosFailed { error: &'a str },
    /// What the streams kept of the recent past was read into the view at start.
    Replayed { events: usize },
    /// The history could not be read (the console carries on with live events only).
    ReplayFailed { error: &'a str },
    /// A page connected to `/events`.
    PageConnected,
    /// A page left `/events`.
    PageLeft,
    /// A page fell behind the live deltas and was sent a fresh snapshot.
    PageLagged { missed: u64 },
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    event: &'static str,
    detail: String,
}

/// The console's own metrics. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ConsoleTelemetry {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    events: Family<EventLabels, Counter>,
    pages: Gauge,
}

impl Default for ConsoleTelemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl ConsoleTelemetry {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("immune_console");
        let events = Family::<EventLabels, Counter>::default();
        let pages = Gauge::default();
        registry.register(
            "events",
            "What the console observed about its own work",
            events.clone(),
        );
        registry.register("pages", "Pages connected to /events now", pages.clone());
        Self {
            inner: Arc::new(Inner {
                registry,
                events,
                pages,
            }),
        }
    }

    /// Logs and counts one observation.
    pub fn observe(&self, seen: Seen<'_>) {
        let (event, detail) = match seen {
            Seen::Received { kind } => {
                tracing::trace!(kind, "received");
                ("received", kind.to_string())
            }
            Seen::Undecodable {
                subject,
                reason_kind,
                reason,
            } => {
                tracing::warn!(subject, reason_kind, reason, "undecodable message skipped");
                ("undecodable", reason_kind.to_string())
            }
            Seen::ChaosRequested {
                service,
                fault,
                run_id,
            } => {
                tracing::info!(service, fault, run_id, "chaos requested from the console");
                ("chaos_requested", fault.to_string())
            }
            Seen::ChaosRefused { reason } => {
                tracing::warn!(reason, "chaos request refused");
                ("chaos_refused", String::new())
            }
            Seen::ChaosFailed { error } => {
                tracing::error!(error, "chaos request not published");
                ("chaos_failed", String::new())
            }
            Seen::Replayed { events } => {
                tracing::info!(events, "history replayed into the view");
                ("replayed", String::new())
            }
            Seen::ReplayFailed { error } => {
                tracing::warn!(error, "cannot replay history; showing live events only");
                ("replay_failed", String::new())
            }
            Seen::PageConnected => {
                self.inner.pages.inc();
                tracing::debug!("page connected");
                ("page_connected", String::new())
            }
            Seen::PageLeft => {
                self.inner.pages.dec();
                tracing::debug!("page left");
                ("page_left", String::new())
            }
            Seen::PageLagged { missed } => {
                tracing::warn!(missed, "page fell behind; sent a fresh snapshot");
                ("page_lagged", String::new())
            }
        };
        self.inner
            .events
            .get_or_create(&EventLabels { event, detail })
            .inc();
    }

    /// The current count of one event/detail pair (tests read it).
    pub fn count(&self, event: &'static str, detail: &str) -> u64 {
        self.inner
            .events
            .get_or_create(&EventLabels {
                event,
                detail: detail.to_string(),
            })
            .get()
    }

    /// Pages connected now.
    pub fn pages(&self) -> i64 {
        self.inner.pages.get()
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_are_counted_and_rendered() {
        let t = ConsoleTelemetry::new();
        t.observe(Seen::ChaosRefused { reason: "bad" });
        t.observe(Seen::PageConnected);
        t.observe(Seen::PageConnected);
        t.observe(Seen::PageLeft);
        assert_eq!(t.count("chaos_refused", ""), 1);
        assert_eq!(t.pages(), 1);
        let text = t.render();
        assert!(
            text.contains(r#"immune_console_events_total{event="chaos_refused",detail=""} 1"#),
            "{text}"
        );
        assert!(text.contains("immune_console_pages 1"), "{text}");
    }
}
