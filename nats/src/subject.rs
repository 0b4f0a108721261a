//! Subjects. Every subject an event is published on is derived from the event itself
//! ([`Subject::of`]); consumers filter with the wildcard constants below.
//!
//! | subject | event |
//! |---|---|
//! | `immune.metrics.<service>` | [`MetricSnapshot`](crate::MetricSnapshot) |
//! | `immune.events.<service>` | [`ContainerEvent`](crate::ContainerEvent) |
//! | `immune.anomalies.<service>` | [`Anomaly`](crate::Anomaly) |
//! | `immune.incidents.<service>` | [`Incident`](crate::Incident) |
//! | `immune.actions.<service>` | [`ActionRequest`](crate::ActionRequest) |
//! | `immune.results.<service>` | [`ActionResult`](crate::ActionResult) |
//! | `immune.chaos.requests` | [`ChaosRequest`](crate::ChaosRequest) |
//! | `immune.chaos.{injected,reverted,rejected}.<service>` | chaos outcomes |
//! | `immune.audit.<stage>.<service>` | [`AuditRecord`](crate::AuditRecord) |
//! | `immune.deadletter.<stage>` | [`DeadLetter`](crate::DeadLetter) |
//! | `immune.escalations.<service>` | [`Escalation`](crate::Escalation) |
//! | `immune.approvals.<service>` | [`Approval`](crate::Approval) |

use std::fmt;

use crate::events::Event;

/// A concrete subject to publish on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subject(String);

pub const METRICS_ALL: &str = "immune.metrics.>";
pub const EVENTS_ALL: &str = "immune.events.>";
pub const ANOMALIES_ALL: &str = "immune.anomalies.>";
pub const INCIDENTS_ALL: &str = "immune.incidents.>";
pub const ACTIONS_ALL: &str = "immune.actions.>";
pub const RESULTS_ALL: &str = "immune.results.>";
pub const CHAOS_ALL: &str = "immune.chaos.>";
pub const CHAOS_REQUESTS: &str = "immune.chaos.requests";
pub const CHAOS_INJECTED_ALL: &str = "immune.chaos.injected.>";
pub const CHAOS_REVERTED_ALL: &str = "immune.chaos.reverted.>";
pub const AUDIT_ALL: &str = "immune.audit.>";
pub const DEAD_LETTER_ALL: &str = "immune.deadletter.>";
pub const ESCALATIONS_ALL: &str = "immune.escalations.>";
pub const APPROVALS_ALL: &str = "immune.approvals.>";

impl Subject {
    /// The subject an event belongs on.
    pub fn of(event: &Event) -> Subject {
        let s = match event {
            Event::MetricSnapshot(e) => format!("immune.metrics.{}", e.service),
            Event::ContainerEvent(e) => format!("immune.events.{}", e.service),
            Event::Anomaly(e) => format!("immune.anomalies.{}", e.service),
            Event::Incident(e) => format!("immune.incidents.{}", e.service),
            Event::ActionRequest(e) => format!("immune.actions.{}", e.service),
            Event::ActionResult(e) => format!("immune.results.{}", e.service),
            Event::ChaosRequest(_) => CHAOS_REQUESTS.to_string(),
            Event::ChaosInjected(e) => format!("immune.chaos.injected.{}", e.service),
            Event::ChaosReverted(e) => format!("immune.chaos.reverted.{}", e.service),
            Event::ChaosRejected(e) => format!("immune.chaos.rejected.{}", e.service),
            Event::Audit(e) => format!("immune.audit.{}.{}", e.stage, e.service),
            Event::DeadLetter(e) => format!("immune.deadletter.{}", e.stage),
            Event::Escalation(e) => format!("immune.escalations.{}", e.service),
            Event::Approval(e) => format!("immune.approvals.{}", e.service),
        };
        Subject(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The audit records of one stage (`immune.audit.<stage>.>`), for subscribers.
pub fn audit_of(stage: crate::Stage) -> String {
    format!("immune.audit.{stage}.>")
}

/// The audit records of one stage, one service, both or all (`immune.audit.<stage|*>.<service|*>`),
/// for filtered readers of the audit stream.
pub fn audit_filter(stage: Option<crate::Stage>, service: Option<&crate::ServiceName>) -> String {
    match (stage, service) {
        (None, None) => AUDIT_ALL.to_string(),
        (Some(stage), None) => audit_of(stage),
        (stage, Some(service)) => format!(
            "immune.audit.{}.{service}",
            stage.map(|s| s.as_str()).unwrap_or("*")
        ),
    }
}

/// The incidents of one service (`immune.incidents.<service>`).
pub fn incidents_of(service: &crate::ServiceName) -> String {
    format!("immune.incidents.{service}")
}

/// The metric snapshots of one service (`immune.metrics.<service>`), for replays.
pub fn metrics_of(service: &crate::ServiceName) -> String {
    format!("immune.metrics.{service}")
}

/// Whether a concrete subject matches a filter with NATS wildcards (`*` one token, `>` the rest).
pub fn matches(filter: &str, subject: &str) -> bool {
    let mut f = filter.split('.');
    let mut s = subject.split('.');
    loop {
        match (f.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{samples, Event, ServiceName, Stage};

    #[test]
    fn audit_filters_pick_the_stage_and_the_service() {
        let record = samples::audit_record();
        let on = Subject::of(&Event::Audit(record.clone())).to_string();
        let mine = &record.service;
        let other = ServiceName::new("elsewhere").expect("valid name");
        let other_stage = if record.stage == Stage::Chaos {
            Stage::Decider
        } else {
            Stage::Chaos
        };
        assert!(matches(&audit_filter(None, None), &on));
        assert!(matches(&audit_filter(Some(record.stage), None), &on));
        assert!(matches(&audit_filter(None, Some(mine)), &on));
        assert!(matches(&audit_filter(Some(record.stage), Some(mine)), &on));
        assert!(!matches(&audit_filter(Some(other_stage), None), &on));
        assert!(!matches(&audit_filter(None, Some(&other)), &on));
        assert!(!matches(&audit_filter(Some(other_stage), Some(mine)), &on));
    }
}
