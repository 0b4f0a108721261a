//! Escalation: an incident with no step left goes to a human with its whole story (the
//! signals, every action tried and how it ended, the timeline).

use immune_nats::AuditCode;
use immune_nats::{Escalation, IncidentState, ServiceName};

use super::incident::{emit_audit, emit_incident, note};
use super::{Decided, Decider, Decision};

impl Decider {
    pub(super) fn escalate(
        &mut self,
        service: &ServiceName,
        why: String,
        now_ms: u64,
        out: &mut Vec<Decided>,
    ) {
        let Some(mut open) = self.open.remove(service) else {
            return;
        };
        self.settle(&open.anomaly.anomaly_id, now_ms);
        open.incident.state = IncidentState::Escalated;
        note(&mut open, now_ms, format!("escalated to a human: {why}"));
        emit_incident(&open, out);
        emit_audit(
            &open,
            out,
            AuditCode::IncidentEscalated,
            why.clone(),
            format!(
                "a human must act; {} action(s) tried, story on immune.escalations.{service}",
                open.tried.len()
            ),
        );
        out.push(Decided {
            correlation_id: open.correlation_id.clone(),
            decision: Decision::Escalation(Escalation {
                incident_id: open.incident.incident_id.clone(),
                service: service.clone(),
                signature: open.incident.signature,
                chaos_run: open.incident.chaos_run.clone(),
                reason: why,
                signals: open.signals.clone(),
                actions: open.tried.clone(),
                timeline: open.incident.timeline.clone(),
                opened_ms: open.incident.opened_ms,
                escalated_ms: now_ms,
            }),
        });
    }
}
