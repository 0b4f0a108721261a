//! Verification and recovery: an action's result starts the verification (or counts as a
//! failure), the clock expires what was not answered in time (a result, a verification, an
//! approval), and a recovered incident credits the action that worked, schedules the lifting
//! of its stopgaps and gives its dependents and its service's other anomalies time to clear.

use immune_nats::AuditCode;
use immune_nats::{ActionKind, ActionOutcome, ActionResult, IncidentState, ServiceName};

use super::incident::{emit_audit, emit_incident, emit_value, note, Phase};
use super::mitigation::{undo, Lift};
use super::step::{current_step, RESULT_GRACE_MS};
use super::{Decided, Decider};
use crate::learning::Outcome;

impl Decider {
    pub(super) fn on_result(&mut self, result: &ActionResult, now_ms: u64, out: &mut Vec<Decided>) {
        if result.action == ActionKind::ScaleIn {
            self.scale_in_done(&result.service, now_ms);
        }
        let Some(open) = self.open.get_mut(&result.service) else {
            return;
        };
        let Phase::InFlight { request, .. } = &open.phase else {
            return; // a late or repeated result of an action no longer awaited
        };
        if request.action_id != result.action_id {
            return;
        }
        let request = request.clone();
        self.busy.remove(&request.container_id);
        let outcome = format!("{:?}", result.outcome).to_lowercase();
        note(
            open,
            now_ms,
            format!("{} {outcome} in {} ms", result.action, result.duration_ms),
        );
        match result.outcome {
            ActionOutcome::Succeeded => {
                if let Some(replacement) = &result.replaced_by {
                    // a recreate or a rollback: the instance lives in another container now,
                    // and the next step goes there
                    note(
                        open,
                        now_ms,
                        format!(
                            "{} now runs in container {replacement}",
                            open.anomaly.instance
                        ),
                    );
                    open.anomaly.container_id = replacement.clone();
                }
                let until = now_ms + self.config.verify_deadline_ms;
                if open.cleared {
                    open.phase = Phase::Verifying { until };
                    self.cleared(&result.service, now_ms, out);
                    return;
                }
                open.phase = Phase::Verifying { until };
                open.incident.state = IncidentState::Verifying;
                emit_incident(open, out);
                let why = format!(
                    "{} succeeded; waiting for the service's steady state",
                    result.action
                );
                let deadline = format!("verifying for up to {} ms", self.config.verify_deadline_ms);
                emit_audit(open, out, AuditCode::VerificationStarted, why, deadline);
            }
            ActionOutcome::Failed | ActionOutcome::Refused if open.cleared => {
                // The anomaly cleared while the action ran (its container removed for good,
                // say, so the action found none): nothing is left to heal, and an action
                // that could not act on a fault already gone teaches nothing.
                let why = result.error.clone().unwrap_or_default();
                if let Some(tried) = open.tried.last_mut() {
                    tried.outcome = outcome.clone();
                    tried.detail = why.clone();
                }
                note(
                    open,
                    now_ms,
                    format!(
                        "the anomaly cleared while {} ran: nothing left to do",
                        result.action
                    ),
                );
                open.phase = Phase::Pending { blocked: None };
                self.recover(&result.service, now_ms, out);
            }
            ActionOutcome::Failed | ActionOutcome::Refused => {
                let why = result.error.clone().unwrap_or_default();
                emit_audit(
                    open,
                    out,
                    AuditCode::ActionFailed,
                    why.clone(),
                    format!("{} {outcome}; trying the next step", result.action),
                );
                let carried_out = result.outcome != ActionOutcome::Refused;
                self.step_failed(&result.service, &outcome, why, carried_out, now_ms, out);
            }
        }
    }

    /// The incident's anomaly cleared while no action is in flight. A repair is verified by
    /// that. A stopgap only holds the service up, so what its users feel decides: its
    /// callers, the entry point among them, get `callers_settle_ms` to show a trouble the
    /// stopgap moved onto them (an open circuit fails every call to the service), then the
    /// incident recovers once none of them is anomalous, by `recovery_settle_ms` from now
    /// (their calls that failed or piled up must end first) or the verification fails.
    pub(super) fn cleared(&mut self, service: &ServiceName, now_ms: u64, out: &mut Vec<Decided>) {
        let settle = self.config.callers_settle_ms;
        let Some(open) = self.open.get_mut(service) else {
            return;
        };
        let verifying = matches!(open.phase, Phase::Verifying { .. });
        if settle == 0 || !verifying || !open.under_stopgap() {
            return self.recover(service, now_ms, out);
        }
        if open.callers_from.is_some() {
            return;
        }
        let until = now_ms + settle.max(self.config.recovery_settle_ms);
        if let Phase::Verifying { until: deadline } = &mut open.phase {
            *deadline = (*deadline).max(until);
        }
        open.callers_from = Some(now_ms + settle);
        let action = open
            .tried
            .last()
            .map_or_else(|| "the stopgap".to_string(), |t| t.action.to_string());
        note(
            open,
            now_ms,
            format!("the anomaly cleared under {action}; its callers must be served again too"),
        );
        emit_audit(
            open,
            out,
            AuditCode::VerificationCallers,
            format!("{action} holds the service up without repairing it"),
            format!(
                "recovered once its callers' errors and latency stay clear from {settle} ms \
                 on, by {} ms",
                until - now_ms
            ),
        );
    }

    /// Stopgaps whose services cleared: recovered once no caller is anomalous any more.
    fn callers_served(&mut self, now_ms: u64, out: &mut Vec<Decided>) {
        let verified: Vec<ServiceName> = self
            .open
            .iter()
            .filter(|(service, open)| {
                open.cleared
                    && open.callers_from.is_some_and(|from| now_ms >= from)
                    && matches!(open.phase, Phase::Verifying { .. })
                    && self.suffering_caller(service).is_none()
            })
            .map(|(service, _)| service.clone())
            .collect();
        for service in verified {
            self.recover(&service, now_ms, out);
        }
    }

    pub(super) fn on_tick(&mut self, now_ms: u64, out: &mut Vec<Decided>) {
        self.lift_due(now_ms, out);
        self.callers_served(now_ms, out);
        let expired: Vec<ServiceName> = self
            .open
            .iter()
            .filter(|(_, open)| match &open.phase {
                Phase::Pending { .. } => false,
                Phase::Held { until, .. }
                | Phase::InFlight { until, .. }
                | Phase::Verifying { until } => now_ms >= *until,
            })
            .map(|(service, _)| service.clone())
            .collect();
        for service in expired {
            let suffering = self.suffering_caller(&service);
            let Some(open) = self.open.get_mut(&service) else {
                continue;
            };
            let waited_for_callers = open.callers_from.take().is_some();
            let (what, outcome, why) = match &open.phase {
                Phase::Verifying { .. } if waited_for_callers => (
                    AuditCode::VerificationFailed,
                    "not_verified",
                    match suffering {
                        Some((caller, signature)) => format!(
                            "the service cleared, but its caller {caller} is still \
                             {signature}: its users are not served"
                        ),
                        None => "its callers did not stay clear".into(),
                    },
                ),
                Phase::Verifying { .. } => (
                    AuditCode::VerificationFailed,
                    "not_verified",
                    format!(
                        "no steady state within {} ms",
                        self.config.verify_deadline_ms
                    ),
                ),
                Phase::InFlight { request, .. } => {
                    self.busy.remove(&request.container_id);
                    (
                        AuditCode::ActionTimedOut,
                        "no_result",
                        format!(
                            "no result from the executor within {} ms",
                            request.timeout_ms + RESULT_GRACE_MS
                        ),
                    )
                }
                Phase::Held { .. } => (
                    AuditCode::ApprovalExpired,
                    "not_approved",
                    format!("no approval within {} ms", self.config.approval_timeout_ms),
                ),
                Phase::Pending { .. } => continue,
            };
            emit_audit(open, out, what, why.clone(), "trying the next step".into());
            let carried_out = !matches!(open.phase, Phase::Held { .. });
            self.step_failed(&service, outcome, why, carried_out, now_ms, out);
        }
        self.retry_pending(now_ms, out);
    }

    pub(super) fn recover(&mut self, service: &ServiceName, now_ms: u64, out: &mut Vec<Decided>) {
        let Some(mut open) = self.open.remove(service) else {
            return;
        };
        let took = now_ms.saturating_sub(open.incident.opened_ms);
        let signature = open.incident.signature;
        self.recovered_at
            .insert(service.clone(), (now_ms, open.anomaly.container_id.clone()));
        // the action credited with the recovery: the last one sent, if it succeeded
        let credited = match &open.phase {
            Phase::Verifying { .. } | Phase::InFlight { .. } => {
                current_step(&self.playbook, &open).cloned()
            }
            _ => None,
        };
        if let Some(step) = credited {
            if let Some(tried) = open.tried.last_mut() {
                tried.outcome = "recovered".into();
                let after_ms = now_ms.saturating_sub(tried.requested_ms);
                let value = self
                    .values
                    .update(signature, &step, Outcome::Recovered { after_ms });
                emit_value(&open, out, signature, step.action, value);
            }
        }
        if let Phase::Held { .. } = open.phase {
            note(&mut open, now_ms, "the held action is dropped".into());
        }
        let actions = open.tried.len();
        open.incident.state = IncidentState::Recovered;
        note(
            &mut open,
            now_ms,
            format!("recovered after {took} ms and {actions} action(s)"),
        );
        emit_incident(&open, out);
        emit_audit(
            &open,
            out,
            AuditCode::IncidentRecovered,
            "the anomaly cleared: running and healthy again".into(),
            format!("recovered in {took} ms after {actions} action(s)"),
        );
        open.incident.state = IncidentState::Closed;
        emit_incident(&open, out);
        for done in open.mitigations.drain(..) {
            let after = self.undo_after(done.action);
            if after > 0 {
                self.lifts.push(Lift {
                    due: now_ms + after,
                    correlation_id: open.correlation_id.clone(),
                    request: undo(&done, after),
                });
            }
        }
        // the services that call this one may recover with it: give them time to show it
        let settle_until = now_ms + self.config.recovery_settle_ms;
        let dependents: Vec<ServiceName> = self
            .open
            .keys()
            .filter(|s| self.depends_transitively(s, service))
            .cloned()
            .collect();
        for dependent in dependents {
            if let Some(o) = self.open.get_mut(&dependent) {
                o.settle_until = o.settle_until.max(settle_until);
            }
        }
        // The service's other anomalies still firing open the next incident. It waits before
        // acting, as the repair that cleared this one may clear them too: the root-cause
        // wait, or, when one is on the container just repaired, as long as a repair's
        // verification may take.
        let mut others: Vec<_> = std::mem::take(&mut open.others).into_values().collect();
        others.sort_by_key(|(a, _)| a.started_ms);
        let repaired = others
            .iter()
            .any(|(a, _)| a.container_id == open.anomaly.container_id);
        let hold_until = if repaired {
            now_ms + self.config.verify_deadline_ms
        } else {
            now_ms + self.config.root_cause_wait_ms
        };
        for (anomaly, correlation_id) in others {
            self.on_firing(&anomaly, correlation_id.as_deref(), now_ms, hold_until, out);
        }
        self.retry_pending(now_ms, out);
    }
}
