//! The walk through the playbook: the incident's next step is issued if every safety rule
//! allows it (see `rules.rs`), held for an approval when its risk asks for one, advised
//! only in dry-run mode, and the next one is tried when a step fails; no step left
//! escalates. A step's params are the playbook's, but a throttle's limit is derived from the
//! load the anomaly measured ([`step_params`]).

use std::collections::BTreeMap;

use immune_nats::{feature, AuditCode};
use immune_nats::{ActionKind, ActionRequest, ActionTried, Anomaly, IncidentState, ServiceName};

use super::incident::{
    emit_action_audit, emit_audit, emit_incident, emit_value, note, Open, Phase,
};
use super::mitigation::{is_temporary, send_lift, undo, Lift};
use super::{Decided, Decider, Decision};
use crate::learning::{Outcome, Values};
use crate::playbook::{Playbook, Step};
use crate::safety::TokenBucket;

/// The step that just failed set a stopgap (a throttle, an open circuit, blocked sources):
/// it did not bring the service back and only costs its users, so it is undone now, before
/// the next step (the executor serialises the two on the container), and is not left for
/// the lifting after a recovery nor behind an escalation. A scale_out stays: it costs no
/// user anything and is undone after the recovery.
/// While the kill switch or a maintenance window holds actions (`held`), the undoing waits
/// among the lifts instead, sent once actions are allowed and the incident is over.
fn undo_unhelpful_stopgap(
    open: &mut Open,
    held: Option<&mut Vec<Lift>>,
    now_ms: u64,
    out: &mut Vec<Decided>,
) {
    let Some(at) = open.current_stopgap() else {
        return;
    };
    let stopgap = open.mitigations.remove(at);
    let undo = ActionRequest {
        reason: format!(
            "undo the {} of incident {}: it did not bring the service back",
            stopgap.action, stopgap.incident_id
        ),
        ..undo(&stopgap, 0)
    };
    let lift = Lift {
        due: now_ms,
        correlation_id: open.correlation_id.clone(),
        request: undo,
    };
    match held {
        Some(lifts) => {
            note(
                open,
                now_ms,
                format!(
                    "{} did not help; actions are held, so it is lifted later",
                    stopgap.action
                ),
            );
            lifts.push(lift);
        }
        None => {
            note(
                open,
                now_ms,
                format!("{} undone: it did not help", stopgap.action),
            );
            send_lift(lift, out);
        }
    }
}

/// Grace after an action's own timeout before its missing result counts as a failure.
pub(super) const RESULT_GRACE_MS: u64 = 5_000;

/// A throttle allows the service's normal request rate times this: users arriving at their
/// usual rate are never refused (a fifth more covers the second-to-second jitter of a steady
/// load and a daily cycle's slow rise), while the excess of a spike or a flood is shed.
pub(super) const THROTTLE_HEADROOM: f64 = 1.2;

impl Decider {
    /// Re-checks every waiting incident, root causes first (deepest dependency first), in
    /// service order otherwise.
    pub(super) fn retry_pending(&mut self, now_ms: u64, out: &mut Vec<Decided>) {
        let pending: Vec<ServiceName> = self
            .open
            .iter()
            .filter(|(_, o)| matches!(o.phase, Phase::Pending { .. }))
            .map(|(s, _)| s.clone())
            .collect();
        for service in pending {
            self.try_issue(&service, now_ms, out);
        }
    }

    /// The step in progress did not bring the service back: learn from it when it was
    /// carried out (`carried_out`: a refused action did nothing, so it says nothing of
    /// whether it repairs the fault), move on.
    pub(super) fn step_failed(
        &mut self,
        service: &ServiceName,
        outcome: &str,
        detail: String,
        carried_out: bool,
        now_ms: u64,
        out: &mut Vec<Decided>,
    ) {
        let held =
            self.controls.kill_switch || self.controls.in_maintenance(service, now_ms).is_some();
        let Some(open) = self.open.get_mut(service) else {
            return;
        };
        let signature = open.incident.signature;
        if let Some(step) = current_step(&self.playbook, open).cloned() {
            if let Phase::Held { request, .. } = &open.phase {
                // never sent: nothing to learn about the action itself
                open.tried.push(ActionTried {
                    action_id: request.action_id.clone(),
                    action: step.action,
                    outcome: outcome.to_string(),
                    detail,
                    requested_ms: now_ms,
                });
            } else {
                if let Some(tried) = open.tried.last_mut() {
                    tried.outcome = outcome.to_string();
                    tried.detail = detail;
                }
                if carried_out {
                    let value = self.values.update(signature, &step, Outcome::NotRecovered);
                    emit_value(open, out, signature, step.action, value);
                    undo_unhelpful_stopgap(open, held.then_some(&mut self.lifts), now_ms, out);
                }
            }
        }
        open.next += 1;
        open.approved = None;
        open.phase = Phase::Pending { blocked: None };
        self.try_issue(service, now_ms, out);
    }

    /// Issues the incident's next step if every safety rule allows it, holds it otherwise,
    /// or escalates when no step is left.
    pub(super) fn try_issue(&mut self, service: &ServiceName, now_ms: u64, out: &mut Vec<Decided>) {
        let Some(open) = self.open.get(service) else {
            return;
        };
        if !matches!(open.phase, Phase::Pending { .. }) {
            return;
        }
        let Some(step) = current_step(&self.playbook, open).cloned() else {
            let steps = self.playbook.steps(open.incident.signature).len();
            let why = if steps == 0 {
                format!("no playbook for {}", open.incident.signature)
            } else {
                format!("all {steps} playbook steps tried")
            };
            self.escalate(service, why, now_ms, out);
            return;
        };
        let container = open.anomaly.container_id.clone();
        let approved = open.approved.is_some();
        if let Some((rule, why)) = self.blocked_by(service, &step, &container, approved, now_ms) {
            let open = self.open.get_mut(service).expect("checked above");
            if let Phase::Pending { blocked } = &mut open.phase {
                if *blocked != Some(rule) {
                    *blocked = Some(rule);
                    note(open, now_ms, format!("{} waits: {why}", step.action));
                    emit_audit(
                        open,
                        out,
                        AuditCode::ActionBlocked,
                        why,
                        format!(
                            "{} held by the {rule} rule; re-checked every tick",
                            step.action
                        ),
                    );
                }
            }
            return;
        }
        let open = self.open.get_mut(service).expect("checked above");
        let mut params = step_params(&step, &open.anomaly);
        params
            .entry("stop_grace_s".into())
            .or_insert_with(|| self.config.stop_grace_s.to_string());
        let position = open.next + 1;
        let request = ActionRequest {
            action_id: open
                .approved
                .clone()
                .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
            incident_id: open.incident.incident_id.clone(),
            service: service.clone(),
            instance: open.anomaly.instance.clone(),
            container_id: container.clone(),
            action: step.action,
            params,
            timeout_ms: step.timeout_ms.unwrap_or(self.config.action_timeout_ms),
            reason: format!(
                "playbook {} step {position} of {}: {}",
                open.incident.signature,
                open.order.len(),
                open.anomaly.reason
            ),
        };
        let candidates = candidates(&self.playbook, &self.values, open);
        if step.risk > self.config.approval_risk && open.approved.is_none() {
            let until = now_ms + self.config.approval_timeout_ms;
            note(
                open,
                now_ms,
                format!("{} (risk {}) awaits approval", step.action, step.risk),
            );
            emit_action_audit(
                open,
                out,
                AuditCode::ActionHeld,
                &request.action_id,
                format!(
                    "{} has risk {} above the approval risk {}; candidates {candidates}",
                    step.action, step.risk, self.config.approval_risk
                ),
                format!(
                    "approve action_id {} on immune.approvals.{service}",
                    request.action_id
                ),
            );
            open.phase = Phase::Held { request, until };
            return;
        }
        self.global_budget.take(now_ms);
        self.service_budgets
            .entry(service.clone())
            .or_insert_with(|| TokenBucket::new(self.config.service_budget, now_ms))
            .take(now_ms);
        self.cooldown_until.insert(
            (service.clone(), step.action),
            now_ms + self.config.cooldown_ms,
        );
        open.approved = None;
        open.tried.push(ActionTried {
            action_id: request.action_id.clone(),
            action: step.action,
            outcome: "requested".into(),
            detail: String::new(),
            requested_ms: now_ms,
        });
        open.incident.state = IncidentState::Acting;
        if !self.config.dry_run && is_temporary(&request) {
            open.mitigations.push(request.clone());
        }
        if self.config.dry_run {
            let until = now_ms + self.config.verify_deadline_ms;
            open.phase = Phase::Verifying { until };
            note(
                open,
                now_ms,
                format!("dry run: would {} {}", step.action, request.instance),
            );
            emit_incident(open, out);
            emit_action_audit(
                open,
                out,
                AuditCode::ActionAdvised,
                &request.action_id,
                format!("{}; candidates {candidates}", request.reason),
                format!("dry run: {} of {} not sent", step.action, request.instance),
            );
            return;
        }
        self.busy.insert(container, request.action_id.clone());
        open.phase = Phase::InFlight {
            request: request.clone(),
            until: now_ms + request.timeout_ms + RESULT_GRACE_MS,
        };
        note(
            open,
            now_ms,
            format!("{} requested on {}", step.action, request.instance),
        );
        emit_incident(open, out);
        emit_action_audit(
            open,
            out,
            AuditCode::ActionRequested,
            &request.action_id,
            format!("{}; candidates {candidates}", request.reason),
            format!(
                "{} of {} ({})",
                step.action, request.instance, request.action_id
            ),
        );
        out.push(Decided {
            correlation_id: open.correlation_id.clone(),
            decision: Decision::Action(request),
        });
    }
}

/// The params a step is sent with: the playbook's, except that a throttle that sets a limit
/// gets [`throttle_rps`] when the anomaly measured the load (a constant would be no limit at
/// a low load and refuse normal users at a high one). A throttle that lifts the limit (`0`,
/// `off`) is left as written.
pub(super) fn step_params(step: &Step, anomaly: &Anomaly) -> BTreeMap<String, String> {
    let mut params = step.params.clone();
    let lifts = params
        .get("rps")
        .is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "0" | "off"));
    if step.action == ActionKind::Throttle && !lifts {
        if let Some(rps) = throttle_rps(anomaly) {
            params.insert("rps".into(), rps.to_string());
        }
    }
    params
}

/// The requests per second a throttle allows: the anomaly's normal request rate (the
/// `expected` of its `request_rate` contribution) times [`THROTTLE_HEADROOM`], rounded, at
/// least 1 (0 would lift the limit). `None` when the anomaly does not carry the request rate
/// or carries a meaningless one.
pub(super) fn throttle_rps(anomaly: &Anomaly) -> Option<u32> {
    let normal = anomaly
        .contributions
        .iter()
        .find(|c| c.metric == feature::REQUEST_RATE)?
        .expected;
    if !normal.is_finite() || normal < 0.0 {
        return None;
    }
    let rps = (normal * THROTTLE_HEADROOM)
        .round()
        .clamp(1.0, f64::from(u32::MAX));
    Some(rps as u32)
}

pub(super) fn current_step<'p>(playbook: &'p Playbook, open: &Open) -> Option<&'p Step> {
    let index = *open.order.get(open.next)?;
    playbook.steps(open.incident.signature).get(index)
}

fn candidates(playbook: &Playbook, values: &Values, open: &Open) -> String {
    let steps = playbook.steps(open.incident.signature);
    let list: Vec<String> = open.order[open.next..]
        .iter()
        .map(|&i| {
            let s = &steps[i];
            format!(
                "{} risk {} value {:.3}",
                s.action,
                s.risk,
                values.get(open.incident.signature, s.action)
            )
        })
        .collect();
    format!("[{}]", list.join(", "))
}
