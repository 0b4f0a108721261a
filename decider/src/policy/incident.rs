//! The incident: one per service, opened by a firing anomaly, joined by the service's other
//! anomalies, and its story (the timeline, the signals, what it publishes: the incident, its
//! audit records, the learned values). Also the anomalies the decider is done with, so a
//! firing delivered again is not a new fault.

use immune_nats::AuditCode;
use std::collections::BTreeMap;

use immune_nats::{
    ActionKind, ActionRequest, ActionTried, Anomaly, Incident, IncidentState, Signature,
    TimelineEntry,
};
use serde::{Deserialize, Serialize};

use super::mitigation::is_stopgap;
use super::root_cause::own_fault;
use super::{Decided, Decider, Decision, SETTLED_KEEP_MS, SETTLED_MAX};

/// Where an incident is in its walk through the playbook.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) enum Phase {
    /// Wants to issue its next step; `blocked` names the rule that held it last (not kept
    /// across a restart: the new decider audits the block once more).
    Pending {
        #[serde(skip)]
        blocked: Option<&'static str>,
    },
    /// Waits for an operator's approval of `request` until `until`.
    Held { request: ActionRequest, until: u64 },
    /// The executor is carrying out `request`; no answer by `until` counts as a failure.
    InFlight { request: ActionRequest, until: u64 },
    /// The action succeeded (or, dry-run, was advised); the anomaly must clear by `until`.
    Verifying { until: u64 },
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Open {
    pub(super) incident: Incident,
    pub(super) correlation_id: String,
    /// The anomaly that opened the incident: where to act, and whose clearing recovers it.
    pub(super) anomaly: Anomaly,
    /// The service's other anomalies that fired while the incident was open (another
    /// replica, another detector), by id, with their correlation id. They neither redirect
    /// its actions nor recover it; those still firing when it recovers open the next one.
    #[serde(default)]
    pub(super) others: BTreeMap<String, (Anomaly, Option<String>)>,
    /// Playbook step indexes in the order to try them.
    pub(super) order: Vec<usize>,
    /// Position in `order` of the next step.
    pub(super) next: usize,
    pub(super) phase: Phase,
    pub(super) cleared: bool,
    pub(super) approved: Option<String>,
    /// A service that calls others acts no earlier than this: their anomalies may still be
    /// on the way, or a dependency just recovered and this one may follow.
    pub(super) settle_until: u64,
    pub(super) signals: Vec<String>,
    pub(super) tried: Vec<ActionTried>,
    /// Stopgaps sent (throttle, open circuit) and scale_outs, to undo after recovery.
    pub(super) mitigations: Vec<ActionRequest>,
    /// The anomaly cleared under a stopgap: from this time on, the incident recovers once
    /// no caller of the service is anomalous (its users are served again too).
    #[serde(default)]
    pub(super) callers_from: Option<u64>,
}

impl Open {
    pub(super) fn acting(&self) -> bool {
        matches!(self.phase, Phase::InFlight { .. } | Phase::Verifying { .. })
    }

    /// Where in `mitigations` the stopgap set by the step last carried out is, while it is
    /// still in place.
    pub(super) fn current_stopgap(&self) -> Option<usize> {
        let tried = self.tried.last()?;
        self.mitigations
            .iter()
            .position(|m| m.action_id == tried.action_id && is_stopgap(m))
    }

    /// The step last carried out set a stopgap that is still in place.
    pub(super) fn under_stopgap(&self) -> bool {
        self.current_stopgap().is_some()
    }
}

/// How many distinct signals an escalation keeps.
const MAX_SIGNALS: usize = 20;

impl Decider {
    /// A firing anomaly opens an incident, or joins the open one of its service. A new
    /// incident acts no earlier than `hold_until` (unless its container died).
    pub(super) fn on_firing(
        &mut self,
        anomaly: &Anomaly,
        correlation_id: Option<&str>,
        now_ms: u64,
        hold_until: u64,
        out: &mut Vec<Decided>,
    ) {
        if self.settled.contains_key(&anomaly.anomaly_id) {
            return; // delivered again after it cleared
        }
        if self.removed_on_purpose(anomaly, now_ms) {
            out.push(Decided {
                correlation_id: correlation_id.unwrap_or(&anomaly.anomaly_id).to_string(),
                decision: Decision::Audit {
                    service: anomaly.service.clone(),
                    what: AuditCode::AnomalyExpected,
                    why: "a scale_in is removing a replica of the service".into(),
                    outcome: format!("{} on {}: no incident", anomaly.signature, anomaly.instance),
                    action_id: None,
                },
            });
            self.settled.insert(anomaly.anomaly_id.clone(), now_ms);
            return;
        }
        let service = anomaly.service.clone();
        self.depends_on
            .insert(service.clone(), anomaly.depends_on.clone());
        if let Some(open) = self.open.get_mut(&service) {
            if open.anomaly.anomaly_id == anomaly.anomaly_id {
                return; // delivered again
            }
            if same_episode(&open.anomaly, anomaly) {
                if anomaly.started_ms < open.anomaly.started_ms {
                    return; // an earlier episode's, delivered late
                }
                // The episode that opened the incident ended, or a restarted detector lost
                // it: this one, from the same place, takes its place.
                open.cleared = false;
                open.callers_from = None;
                open.anomaly = anomaly.clone();
                remember_signal(open, anomaly);
                note(
                    open,
                    now_ms,
                    format!("anomaly: {} ({})", anomaly.signature, anomaly.reason),
                );
                return;
            }
            open.others.retain(|_, (a, _)| !same_episode(a, anomaly));
            let joined = (anomaly.clone(), correlation_id.map(str::to_string));
            if open
                .others
                .insert(anomaly.anomaly_id.clone(), joined)
                .is_none()
            {
                remember_signal(open, anomaly);
                note(
                    open,
                    now_ms,
                    format!(
                        "anomaly on {}: {} ({})",
                        anomaly.instance, anomaly.signature, anomaly.reason
                    ),
                );
            }
            return;
        }
        let incident_id = uuid::Uuid::now_v7().to_string();
        let correlation_id = correlation_id
            .map(str::to_string)
            .unwrap_or_else(|| incident_id.clone());
        let steps = self.playbook.steps(anomaly.signature);
        let (order, explored) =
            self.values
                .order(anomaly.signature, steps, self.config.approval_risk);
        let mut open = Open {
            incident: Incident {
                incident_id,
                service: service.clone(),
                state: IncidentState::Opened,
                signature: anomaly.signature,
                chaos_run: self.chaos_runs.get(&service).cloned(),
                opened_ms: now_ms,
                timeline: Vec::new(),
            },
            correlation_id,
            anomaly: anomaly.clone(),
            order,
            next: 0,
            phase: Phase::Pending { blocked: None },
            cleared: false,
            approved: None,
            settle_until: hold_until.max(if own_fault(anomaly.signature) {
                0
            } else if anomaly.depends_on.is_empty() {
                self.aftermath_until(anomaly, now_ms)
            } else {
                (now_ms + self.config.root_cause_wait_ms)
                    .max(self.echo_of_recovery_until(&service, now_ms))
                    .max(self.aftermath_until(anomaly, now_ms))
            }),
            others: BTreeMap::new(),
            signals: Vec::new(),
            tried: Vec::new(),
            mitigations: Vec::new(),
            callers_from: None,
        };
        remember_signal(&mut open, anomaly);
        note(
            &mut open,
            now_ms,
            format!("opened: {} ({})", anomaly.signature, anomaly.reason),
        );
        let why = match &open.incident.chaos_run {
            Some(run) => format!("{} (injected by chaos run {run})", anomaly.reason),
            None => anomaly.reason.clone(),
        };
        let plan: Vec<String> = open
            .order
            .iter()
            .map(|&i| {
                let step = &steps[i];
                format!(
                    "{} (risk {}, value {:.3})",
                    step.action,
                    step.risk,
                    self.values.get(anomaly.signature, step.action)
                )
            })
            .collect();
        emit_incident(&open, out);
        emit_audit(
            &open,
            out,
            AuditCode::IncidentOpened,
            why,
            format!(
                "incident {}; plan [{}]{}",
                open.incident.incident_id,
                plan.join(", "),
                if explored {
                    " (first step explored)"
                } else {
                    ""
                }
            ),
        );
        self.open.insert(service.clone(), open);
        self.try_issue(&service, now_ms, out);
    }

    pub(super) fn on_cleared(&mut self, anomaly: &Anomaly, now_ms: u64, out: &mut Vec<Decided>) {
        self.settle(&anomaly.anomaly_id, now_ms);
        let Some(open) = self.open.get_mut(&anomaly.service) else {
            return;
        };
        if open.others.remove(&anomaly.anomaly_id).is_some() {
            note(
                open,
                now_ms,
                format!("the anomaly on {} cleared", anomaly.instance),
            );
            return;
        }
        if open.anomaly.anomaly_id != anomaly.anomaly_id {
            return; // not this incident's (an escalated one's, say)
        }
        open.cleared = true;
        match open.phase {
            Phase::InFlight { .. } => {} // recovered once the action's result is in
            _ => self.cleared(&anomaly.service, now_ms, out),
        }
    }

    /// Remembers that the decider is done with `anomaly_id` (it cleared or was escalated),
    /// and forgets what is too old or too many.
    pub(super) fn settle(&mut self, anomaly_id: &str, now_ms: u64) {
        self.settled.insert(anomaly_id.to_string(), now_ms);
        self.settled
            .retain(|_, at| now_ms.saturating_sub(*at) < SETTLED_KEEP_MS);
        if self.settled.len() > SETTLED_MAX {
            let mut by_age: Vec<(u64, String)> = self
                .settled
                .iter()
                .map(|(id, at)| (*at, id.clone()))
                .collect();
            by_age.sort();
            for (_, id) in by_age.into_iter().take(self.settled.len() - SETTLED_MAX) {
                self.settled.remove(&id);
            }
        }
    }
}

/// Whether `a` and `b` come from the same episode slot of the detector: the same container
/// and the same rule family or learned model. The detector holds at most one episode open per
/// slot (the hard-fault rules share one, the attack-burst rule and each learned model have
/// their own), so a new anomaly there means the older one is over, even if its clearing
/// never came (a detector killed between publishing and storing it).
fn same_episode(a: &Anomaly, b: &Anomaly) -> bool {
    fn slot(detector: &str) -> &str {
        match detector {
            "rule:attack_burst" => detector,
            d if d.starts_with("rule:") => "rule:",
            d => d,
        }
    }
    a.container_id == b.container_id && slot(&a.detector) == slot(&b.detector)
}

fn remember_signal(open: &mut Open, anomaly: &Anomaly) {
    let signal = format!(
        "{} {}: {}",
        anomaly.signature, anomaly.instance, anomaly.reason
    );
    if open.signals.len() < MAX_SIGNALS && !open.signals.contains(&signal) {
        open.signals.push(signal);
    }
}

pub(super) fn note(open: &mut Open, at_ms: u64, what: String) {
    open.incident.timeline.push(TimelineEntry { at_ms, what });
}

pub(super) fn emit_incident(open: &Open, out: &mut Vec<Decided>) {
    out.push(Decided {
        correlation_id: open.correlation_id.clone(),
        decision: Decision::Incident(open.incident.clone()),
    });
}

pub(super) fn emit_value(
    open: &Open,
    out: &mut Vec<Decided>,
    signature: Signature,
    action: ActionKind,
    value: f64,
) {
    out.push(Decided {
        correlation_id: open.correlation_id.clone(),
        decision: Decision::Value {
            signature,
            action,
            value,
        },
    });
}

pub(super) fn emit_audit(
    open: &Open,
    out: &mut Vec<Decided>,
    what: AuditCode,
    why: String,
    outcome: String,
) {
    push_audit(open, out, what, why, outcome, None);
}

/// An audit record about one action of the incident (held, advised, requested).
pub(super) fn emit_action_audit(
    open: &Open,
    out: &mut Vec<Decided>,
    what: AuditCode,
    action_id: &str,
    why: String,
    outcome: String,
) {
    push_audit(open, out, what, why, outcome, Some(action_id.to_string()));
}

fn push_audit(
    open: &Open,
    out: &mut Vec<Decided>,
    what: AuditCode,
    why: String,
    outcome: String,
    action_id: Option<String>,
) {
    out.push(Decided {
        correlation_id: open.correlation_id.clone(),
        decision: Decision::Audit {
            service: open.incident.service.clone(),
            what,
            why,
            outcome,
            action_id,
        },
    });
}
