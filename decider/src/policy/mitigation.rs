//! Stopgaps: a throttle or an opened circuit breaker holds a service up without repairing
//! it, so some time after its incident recovered it is lifted again. While the service is
//! anomalous again it is kept, and looked at again one lifting delay later (a stopgap left
//! in place for good would shed users' requests long after the fault is gone); while the
//! kill switch or a maintenance window holds actions it waits.

use immune_nats::AuditCode;
use std::collections::BTreeMap;

use immune_nats::{ActionKind, ActionRequest};
use serde::{Deserialize, Serialize};

use super::{Decided, Decider, Decision};

/// The undoing of a stopgap, due at `due`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Lift {
    pub(super) due: u64,
    pub(super) correlation_id: String,
    pub(super) request: ActionRequest,
}

/// A throttle or an opened circuit breaker: it holds a service up without repairing it.
pub(super) fn is_stopgap(request: &ActionRequest) -> bool {
    let param = |k: &str| request.params.get(k).map(|v| v.trim().to_ascii_lowercase());
    match request.action {
        ActionKind::Throttle => !matches!(param("rps").as_deref(), Some("0" | "off")),
        ActionKind::CircuitBreaker => param("state").as_deref() == Some("open"),
        _ => false,
    }
}

/// The request that undoes a stopgap.
pub(super) fn undo(stopgap: &ActionRequest, after_ms: u64) -> ActionRequest {
    let (key, value) = match stopgap.action {
        ActionKind::Throttle => ("rps", "0"),
        _ => ("state", "closed"),
    };
    ActionRequest {
        action_id: uuid::Uuid::now_v7().to_string(),
        params: BTreeMap::from([(key.to_string(), value.to_string())]),
        reason: format!(
            "lift the {} of incident {} ({after_ms} ms after it recovered)",
            stopgap.action, stopgap.incident_id
        ),
        ..stopgap.clone()
    }
}

impl Decider {
    /// Lifts the stopgaps that are due, unless their service is anomalous again (kept for
    /// another lifting delay: its new incident decides meanwhile) or the kill switch or a
    /// maintenance window holds actions.
    pub(super) fn lift_due(&mut self, now_ms: u64, out: &mut Vec<Decided>) {
        let (due, waiting): (Vec<Lift>, Vec<Lift>) =
            self.lifts.drain(..).partition(|l| l.due <= now_ms);
        self.lifts = waiting;
        for lift in due {
            let service = lift.request.service.clone();
            let audit = |what: AuditCode, why: String, outcome: String| Decided {
                correlation_id: lift.correlation_id.clone(),
                decision: Decision::Audit {
                    service: service.clone(),
                    what,
                    why,
                    outcome,
                    action_id: Some(lift.request.action_id.clone()),
                },
            };
            if self.open.contains_key(&service) {
                let again = now_ms + self.config.lift_mitigations_after_ms;
                out.push(audit(
                    AuditCode::MitigationKept,
                    "the service is anomalous again; its new incident decides".into(),
                    format!(
                        "{} left as it is; looked at again in {} ms",
                        lift.request.action, self.config.lift_mitigations_after_ms
                    ),
                ));
                self.lifts.push(Lift { due: again, ..lift });
                continue;
            }
            if self.controls.kill_switch || self.controls.in_maintenance(&service, now_ms).is_some()
            {
                self.lifts.push(lift);
                continue;
            }
            // (In dry run no stopgap was sent, so none is lifted.)
            out.push(audit(
                AuditCode::MitigationLifted,
                lift.request.reason.clone(),
                format!("{} {:?}", lift.request.action, lift.request.params),
            ));
            out.push(Decided {
                correlation_id: lift.correlation_id.clone(),
                decision: Decision::Action(lift.request),
            });
        }
    }
}
