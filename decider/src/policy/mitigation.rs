//! Stopgaps: a throttle, an opened circuit breaker or a block of an attack's sources holds a
//! service up without repairing it, so some time after its incident recovered it is lifted
//! again (an attack that resumes is seen and blocked again). While the service is
//! anomalous again it is kept, and looked at again one lifting delay later (a stopgap left
//! in place for good would shed users' requests long after the fault is gone); while the
//! kill switch or a maintenance window holds actions it waits.
//!
//! A replica added by a `scale_out` is undone the same way, later (`scale_in_after_ms`): the
//! load that needed it has passed when the service stayed normal that long. Its removal
//! stops a container of the service, which the rules see die: while the scale_in runs, a
//! container of that service other than the one acted on dying is expected, no incident.

use immune_nats::AuditCode;

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

/// A throttle, an opened circuit breaker, blocked sources: it holds a service up without
/// repairing it.
pub(super) fn is_stopgap(request: &ActionRequest) -> bool {
    request.stopgap() == Some(true)
}

/// The undoing of a stopgap sent now: its `mitigation.lifted` record and the action.
pub(super) fn send_lift(lift: Lift, out: &mut Vec<Decided>) {
    out.push(Decided {
        correlation_id: lift.correlation_id.clone(),
        decision: Decision::Audit {
            service: lift.request.service.clone(),
            what: AuditCode::MitigationLifted,
            why: lift.request.reason.clone(),
            outcome: format!("{} {:?}", lift.request.action, lift.request.params),
            action_id: Some(lift.request.action_id.clone()),
        },
    });
    out.push(Decided {
        correlation_id: lift.correlation_id,
        decision: Decision::Action(lift.request),
    });
}

/// How long after a scale_in's result the death of the replica it removed may still arrive
/// (the die event travels collector → detector → decider, tens of milliseconds live).
pub(super) const REMOVAL_GRACE_MS: u64 = 2_000;

/// What an incident did that is undone once it recovered: a stopgap, or a scale_out.
pub(super) fn is_temporary(request: &ActionRequest) -> bool {
    is_stopgap(request) || request.action == ActionKind::ScaleOut
}

/// The request that undoes a stopgap or a scale_out.
pub(super) fn undo(stopgap: &ActionRequest, after_ms: u64) -> ActionRequest {
    let (action, params) = match stopgap.action {
        ActionKind::Throttle => (ActionKind::Throttle, [("rps", "0")].as_slice()),
        ActionKind::ScaleOut => (ActionKind::ScaleIn, [].as_slice()),
        ActionKind::BlockSources => (ActionKind::BlockSources, [("state", "off")].as_slice()),
        _ => (ActionKind::CircuitBreaker, [("state", "closed")].as_slice()),
    };
    ActionRequest {
        action_id: uuid::Uuid::now_v7().to_string(),
        action,
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        reason: format!(
            "lift the {} of incident {} ({after_ms} ms after it recovered)",
            stopgap.action, stopgap.incident_id
        ),
        ..stopgap.clone()
    }
}

impl Decider {
    /// How long after its incident recovered a temporary action (or its undoing, `action`)
    /// is undone, and how long a kept undoing waits before it is looked at again (0: never).
    pub(super) fn undo_after(&self, action: ActionKind) -> u64 {
        match action {
            ActionKind::ScaleOut | ActionKind::ScaleIn => self.config.scale_in_after_ms,
            _ => self.config.lift_mitigations_after_ms,
        }
    }

    /// A container of `anomaly`'s service other than the one acted on dies while a scale_in
    /// of that service runs: the replica it removes.
    pub(super) fn removed_on_purpose(&self, anomaly: &immune_nats::Anomaly, now_ms: u64) -> bool {
        anomaly.signature == immune_nats::Signature::Crashed
            && self
                .scaling_in
                .get(&anomaly.service)
                .is_some_and(|(kept, until)| *until > now_ms && *kept != anomaly.container_id)
    }

    /// The scale_in of `service` has ended: a death its removal causes is reported within
    /// [`REMOVAL_GRACE_MS`]; another replica dying after that is a crash again.
    pub(super) fn scale_in_done(&mut self, service: &immune_nats::ServiceName, now_ms: u64) {
        if let Some((_, until)) = self.scaling_in.get_mut(service) {
            *until = (*until).min(now_ms + REMOVAL_GRACE_MS);
        }
    }

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
            let delay = self.undo_after(lift.request.action);
            if self.open.contains_key(&service) {
                let again = now_ms + delay;
                out.push(audit(
                    AuditCode::MitigationKept,
                    "the service is anomalous again; its new incident decides".into(),
                    format!(
                        "{} not done yet; looked at again in {delay} ms",
                        lift.request.action
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
            if lift.request.action == ActionKind::ScaleIn {
                self.scaling_in.insert(
                    service.clone(),
                    (
                        lift.request.container_id.clone(),
                        now_ms + self.config.action_timeout_ms,
                    ),
                );
            }
            send_lift(lift, out);
        }
    }
}
