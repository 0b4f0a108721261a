//! What the server refused this connection, and the connection events that say so.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use super::BusError;
use crate::telemetry::{Observation, Telemetry};

/// What the server refused this connection: the subjects of its "Permissions Violation"
/// errors, which arrive apart from the call that caused them (a refused publish or API
/// request gets no answer at all, only this error on the connection).
#[derive(Debug, Clone, Default)]
pub(super) struct Refusals(Arc<Mutex<HashSet<(String, String)>>>);

impl Refusals {
    /// Bounded: a stage publishes on a bounded set of subjects, but never grow without end.
    const MAX: usize = 1024;

    pub(super) fn record(&self, operation: &str, subject: &str) {
        let mut set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if set.len() >= Self::MAX {
            set.clear();
        }
        set.insert((operation.to_string(), subject.to_string()));
    }

    /// The refusal of a publish to `subject`, if the server reported one.
    pub(super) fn publish_to(&self, subject: &str) -> Option<BusError> {
        let set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        set.contains(&("publish".to_string(), subject.to_string()))
            .then(|| BusError::PermissionDenied {
                operation: "publish".into(),
                subject: subject.to_string(),
            })
    }

    /// A refused JetStream API call (`$JS.…`) whose subject `about` accepts, if any: the
    /// reason a provisioning call timed out.
    pub(super) fn api_call(&self, about: impl Fn(&str) -> bool) -> Option<BusError> {
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
pub(super) fn on_connection_event(
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
pub(super) fn inbox_prefix(user: &str) -> Option<String> {
    let token = !user.is_empty()
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    token.then(|| format!("_INBOX.{user}"))
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
