//! The decision logic, pure: fed anomalies, action results, approvals, chaos events, control
//! changes and clock ticks, it returns what to publish. No I/O, no clock of its own, so every
//! rule is unit-tested.
//!
//! An incident per service: opened by a firing anomaly, it walks the playbook of the
//! anomaly's signature (ordered by what was learned, see [`crate::learning`]). After each
//! action it verifies: the anomaly must clear before the verification deadline, or the next
//! step is tried. An exhausted playbook escalates to a human with the whole story.
//!
//! Before a step is issued the safety rules are checked in this order, and a blocked step
//! waits (re-checked every tick, never dropped), with an audit record naming the rule:
//! kill switch, maintenance window, root cause (a dependency of the service is anomalous
//! too: act on the deepest one first), one action per container, cooldown per (service,
//! action), blast radius (services acted on at once), approval (risk above the threshold
//! waits for an operator), rate budgets per service and global. In dry-run mode the step is
//! recorded as advice and nothing is sent.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use immune_nats::{
    ActionKind, ActionOutcome, ActionRequest, ActionResult, ActionTried, Anomaly, AnomalyState,
    Approval, Escalation, Incident, IncidentState, ServiceName, Signature, TimelineEntry,
};
use serde::{Deserialize, Serialize};

use crate::learning::{LearningConfig, Outcome, Values};
use crate::playbook::{Playbook, PlaybookError, Step};
use crate::safety::{Budget, Controls, TokenBucket};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// After an action on a service, the same action waits this long before it may run again.
    pub cooldown_ms: u64,
    /// How long a service has to recover after a successful action.
    pub verify_deadline_ms: u64,
    /// Passed to the executor with each action whose step sets no `timeout_ms`.
    pub action_timeout_ms: u64,
    /// Seconds Docker waits after SIGTERM before SIGKILL, sent with every action.
    pub stop_grace_s: u32,
    /// A playbook file; the shipped `decider/playbook.toml` (built in) when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub playbook_file: Option<PathBuf>,
    /// Advisory mode: record what would be done, send nothing.
    pub dry_run: bool,
    /// Steps with a risk above this wait for an approval on `immune.approvals.<service>`.
    pub approval_risk: u8,
    /// A held step not answered within this long is skipped.
    pub approval_timeout_ms: u64,
    /// Actions per service.
    pub service_budget: Budget,
    /// Actions over all services.
    pub global_budget: Budget,
    /// Blast radius: at most this many services acted on (action in flight or verifying).
    pub max_services_acting: usize,
    /// A service that calls others waits this long after its incident opens before its
    /// first action, so the anomalies of its dependencies (the likely culprits) arrive.
    pub root_cause_wait_ms: u64,
    /// Escalations are also POSTed (JSON) to this URL when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub escalation_webhook: Option<String>,
    /// A throttle or an open circuit breaker set by an incident is a stopgap: this long after
    /// the incident recovered it is lifted (rps 0, circuit closed), unless the service is
    /// anomalous again by then. 0 keeps them until an operator lifts them.
    pub lift_mitigations_after_ms: u64,
    pub learning: LearningConfig,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            cooldown_ms: 10_000,
            verify_deadline_ms: 30_000,
            action_timeout_ms: 30_000,
            stop_grace_s: 1,
            playbook_file: None,
            dry_run: false,
            approval_risk: 3,
            approval_timeout_ms: 300_000,
            service_budget: Budget {
                burst: 3,
                per_minute: 6.0,
            },
            global_budget: Budget {
                burst: 10,
                per_minute: 30.0,
            },
            max_services_acting: 3,
            root_cause_wait_ms: 2_000,
            escalation_webhook: None,
            lift_mitigations_after_ms: 60_000,
            learning: LearningConfig::default(),
        }
    }
}

impl PolicyConfig {
    /// The configured playbook file, or the shipped one.
    pub fn load_playbook(&self) -> Result<Playbook, PlaybookError> {
        match &self.playbook_file {
            Some(path) => Playbook::load(path),
            None => Ok(Playbook::default()),
        }
    }
}

/// What the decider is told.
#[derive(Debug, Clone)]
pub enum Input<'a> {
    Anomaly {
        anomaly: &'a Anomaly,
        correlation_id: Option<&'a str>,
    },
    Result(&'a ActionResult),
    Approval(&'a Approval),
    ChaosInjected {
        service: &'a ServiceName,
        run_id: &'a str,
    },
    ChaosReverted {
        service: &'a ServiceName,
        run_id: &'a str,
    },
    /// An entry of the control bucket changed (`None`: deleted).
    Control {
        key: &'a str,
        value: Option<&'a str>,
    },
    Tick,
}

/// What the decider wants published, each under the incident's correlation id.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Incident(Incident),
    Action(ActionRequest),
    Escalation(Escalation),
    /// A learned value changed: persist it.
    Value {
        signature: Signature,
        action: ActionKind,
        value: f64,
    },
    Audit {
        service: ServiceName,
        what: &'static str,
        why: String,
        outcome: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decided {
    pub correlation_id: String,
    pub decision: Decision,
}

/// Where an incident is in its walk through the playbook.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Phase {
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
struct Open {
    incident: Incident,
    correlation_id: String,
    /// The anomaly that opened the incident: where to act, and whose clearing recovers it.
    anomaly: Anomaly,
    /// The service's other anomalies that fired while the incident was open (another
    /// replica, another detector), by id, with their correlation id. They neither redirect
    /// its actions nor recover it; those still firing when it recovers open the next one.
    #[serde(default)]
    others: BTreeMap<String, (Anomaly, Option<String>)>,
    /// Playbook step indexes in the order to try them.
    order: Vec<usize>,
    /// Position in `order` of the next step.
    next: usize,
    phase: Phase,
    cleared: bool,
    approved: Option<String>,
    /// A service that calls others acts no earlier than this: their anomalies may still be
    /// on the way, or a dependency just recovered and this one may follow.
    settle_until: u64,
    signals: Vec<String>,
    tried: Vec<ActionTried>,
    /// Stopgaps sent (throttle, open circuit), to lift after recovery.
    mitigations: Vec<ActionRequest>,
}

impl Open {
    fn acting(&self) -> bool {
        matches!(self.phase, Phase::InFlight { .. } | Phase::Verifying { .. })
    }
}

/// How many distinct signals an escalation keeps.
const MAX_SIGNALS: usize = 20;
/// Grace after an action's own timeout before its missing result counts as a failure.
const RESULT_GRACE_MS: u64 = 5_000;

#[derive(Debug)]
pub struct Decider {
    config: PolicyConfig,
    playbook: Playbook,
    open: BTreeMap<ServiceName, Open>,
    cooldown_until: HashMap<(ServiceName, ActionKind), u64>,
    /// Containers with an action in flight, and by which action id.
    busy: HashMap<String, String>,
    service_budgets: HashMap<ServiceName, TokenBucket>,
    global_budget: TokenBucket,
    controls: Controls,
    values: Values,
    /// What each service calls, as its latest anomaly said.
    depends_on: HashMap<ServiceName, Vec<ServiceName>>,
    chaos_runs: HashMap<ServiceName, String>,
    /// Stopgaps of recovered incidents waiting to be lifted.
    lifts: Vec<Lift>,
    /// Anomalies the decider is done with (cleared, or escalated to a human), by id, and
    /// when: a firing of one of them delivered again (its acknowledgement lost in a NATS
    /// restart, say) is old news, not a new fault.
    /// Kept for [`SETTLED_KEEP_MS`], at most [`SETTLED_MAX`].
    settled: HashMap<String, u64>,
}

/// How long the id of an anomaly the decider is done with is remembered: well beyond a
/// redelivery (ack waits are 30 s; a restarted nats-server delivers again at once).
pub const SETTLED_KEEP_MS: u64 = 600_000;
/// At most this many are remembered (the oldest go first); they are part of the memory
/// written to the bucket, about 50 bytes each.
pub const SETTLED_MAX: usize = 2_000;

/// The undoing of a stopgap, due at `due`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Lift {
    due: u64,
    correlation_id: String,
    request: ActionRequest,
}

/// The container itself died or was OOM-killed: it is its own culprit whatever its
/// dependencies do, so the root-cause wait and hold do not apply.
fn own_fault(signature: Signature) -> bool {
    matches!(signature, Signature::Crashed | Signature::OomKilled)
}

/// A throttle or an opened circuit breaker: it holds a service up without repairing it.
fn is_stopgap(request: &ActionRequest) -> bool {
    let param = |k: &str| request.params.get(k).map(|v| v.trim().to_ascii_lowercase());
    match request.action {
        ActionKind::Throttle => !matches!(param("rps").as_deref(), Some("0" | "off")),
        ActionKind::CircuitBreaker => param("state").as_deref() == Some("open"),
        _ => false,
    }
}

/// The request that undoes a stopgap.
fn undo(stopgap: &ActionRequest, after_ms: u64) -> ActionRequest {
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
    pub fn new(config: PolicyConfig, playbook: Playbook) -> Self {
        Self {
            global_budget: TokenBucket::new(config.global_budget, 0),
            values: Values::new(config.learning.clone()),
            config,
            playbook,
            open: BTreeMap::new(),
            cooldown_until: HashMap::new(),
            busy: HashMap::new(),
            service_budgets: HashMap::new(),
            controls: Controls::default(),
            depends_on: HashMap::new(),
            chaos_runs: HashMap::new(),
            lifts: Vec::new(),
            settled: HashMap::new(),
        }
    }

    /// Open incidents, for status and tests.
    pub fn open_incidents(&self) -> impl Iterator<Item = &Incident> {
        self.open.values().map(|o| &o.incident)
    }

    /// The learned value of an action for a signature.
    pub fn value(&self, signature: Signature, action: ActionKind) -> f64 {
        self.values.get(signature, action)
    }

    /// Restores a value persisted by an earlier run.
    pub fn restore_value(&mut self, signature: Signature, action: ActionKind, value: f64) {
        self.values.set(signature, action, value);
    }

    pub fn decide(&mut self, input: Input<'_>, now_ms: u64) -> Vec<Decided> {
        let mut out = Vec::new();
        match input {
            Input::Anomaly {
                anomaly,
                correlation_id,
            } => match anomaly.state {
                AnomalyState::Firing => {
                    self.on_firing(anomaly, correlation_id, now_ms, 0, &mut out)
                }
                AnomalyState::Cleared => self.on_cleared(anomaly, now_ms, &mut out),
            },
            Input::Result(result) => self.on_result(result, now_ms, &mut out),
            Input::Approval(approval) => self.on_approval(approval, now_ms, &mut out),
            Input::ChaosInjected { service, run_id } => {
                self.chaos_runs.insert(service.clone(), run_id.to_string());
                if let Some(open) = self.open.get_mut(service) {
                    open.incident.chaos_run = Some(run_id.to_string());
                    note(
                        open,
                        now_ms,
                        format!("fault injected by chaos run {run_id}"),
                    );
                }
            }
            Input::ChaosReverted { service, run_id } => {
                if self.chaos_runs.get(service).map(String::as_str) == Some(run_id) {
                    self.chaos_runs.remove(service);
                }
            }
            Input::Control { key, value } => self.on_control(key, value, now_ms, &mut out),
            Input::Tick => self.on_tick(now_ms, &mut out),
        }
        out
    }

    /// A firing anomaly opens an incident, or joins the open one of its service. A new
    /// incident acts no earlier than `hold_until` (unless its container died).
    fn on_firing(
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
            settle_until: hold_until.max(
                if anomaly.depends_on.is_empty() || own_fault(anomaly.signature) {
                    0
                } else {
                    now_ms + self.config.root_cause_wait_ms
                },
            ),
            others: BTreeMap::new(),
            signals: Vec::new(),
            tried: Vec::new(),
            mitigations: Vec::new(),
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
            "incident.opened",
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

    fn on_cleared(&mut self, anomaly: &Anomaly, now_ms: u64, out: &mut Vec<Decided>) {
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
            _ => self.recover(&anomaly.service, now_ms, out),
        }
    }

    fn on_result(&mut self, result: &ActionResult, now_ms: u64, out: &mut Vec<Decided>) {
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
                if open.cleared {
                    self.recover(&result.service, now_ms, out);
                    return;
                }
                let until = now_ms + self.config.verify_deadline_ms;
                open.phase = Phase::Verifying { until };
                open.incident.state = IncidentState::Verifying;
                emit_incident(open, out);
                let why = format!(
                    "{} succeeded; waiting for the service's steady state",
                    result.action
                );
                let deadline = format!("verifying for up to {} ms", self.config.verify_deadline_ms);
                emit_audit(open, out, "verification.started", why, deadline);
            }
            ActionOutcome::Failed | ActionOutcome::Refused => {
                let why = result.error.clone().unwrap_or_default();
                emit_audit(
                    open,
                    out,
                    "action.failed",
                    why.clone(),
                    format!("{} {outcome}; trying the next step", result.action),
                );
                self.step_failed(&result.service, &outcome, why, now_ms, out);
            }
        }
    }

    fn on_approval(&mut self, approval: &Approval, now_ms: u64, out: &mut Vec<Decided>) {
        let Some(open) = self.open.get_mut(&approval.service) else {
            return;
        };
        let Phase::Held { request, .. } = &open.phase else {
            return;
        };
        if request.action_id != approval.action_id {
            return;
        }
        let action = request.action;
        let action_id = request.action_id.clone();
        if approval.approved {
            note(
                open,
                now_ms,
                format!("{action} approved by {}", approval.by),
            );
            emit_audit(
                open,
                out,
                "approval.granted",
                format!("{} approved {action}", approval.by),
                format!("issuing {action_id}"),
            );
            open.approved = Some(action_id);
            open.phase = Phase::Pending { blocked: None };
            self.try_issue(&approval.service, now_ms, out);
        } else {
            emit_audit(
                open,
                out,
                "approval.denied",
                format!("{} denied {action}", approval.by),
                "trying the next step".into(),
            );
            let detail = format!("denied by {}", approval.by);
            self.step_failed(&approval.service, "denied", detail, now_ms, out);
        }
    }

    fn on_control(&mut self, key: &str, value: Option<&str>, now_ms: u64, out: &mut Vec<Decided>) {
        let service = ServiceName::new("decider").expect("valid name");
        let (what, why) = match self.controls.apply(key, value) {
            Ok(changed) => ("control.changed", changed),
            Err(reason) => ("control.rejected", reason),
        };
        out.push(Decided {
            correlation_id: format!("control-{now_ms}"),
            decision: Decision::Audit {
                service,
                what,
                why,
                outcome: format!("{key} = {}", value.unwrap_or("(deleted)")),
            },
        });
        if what == "control.changed" {
            self.retry_pending(now_ms, out);
        }
    }

    /// Remembers that the decider is done with `anomaly_id` (it cleared or was escalated),
    /// and forgets what is too old or too many.
    fn settle(&mut self, anomaly_id: &str, now_ms: u64) {
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

    fn on_tick(&mut self, now_ms: u64, out: &mut Vec<Decided>) {
        self.lift_due(now_ms, out);
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
            let Some(open) = self.open.get_mut(&service) else {
                continue;
            };
            let (what, outcome, why) = match &open.phase {
                Phase::Verifying { .. } => (
                    "verification.failed",
                    "not_verified",
                    format!(
                        "no steady state within {} ms",
                        self.config.verify_deadline_ms
                    ),
                ),
                Phase::InFlight { request, .. } => {
                    self.busy.remove(&request.container_id);
                    (
                        "action.timed_out",
                        "no_result",
                        format!(
                            "no result from the executor within {} ms",
                            request.timeout_ms + RESULT_GRACE_MS
                        ),
                    )
                }
                Phase::Held { .. } => (
                    "approval.expired",
                    "not_approved",
                    format!("no approval within {} ms", self.config.approval_timeout_ms),
                ),
                Phase::Pending { .. } => continue,
            };
            emit_audit(open, out, what, why.clone(), "trying the next step".into());
            self.step_failed(&service, outcome, why, now_ms, out);
        }
        self.retry_pending(now_ms, out);
    }

    /// Re-checks every waiting incident, root causes first (deepest dependency first), in
    /// service order otherwise.
    fn retry_pending(&mut self, now_ms: u64, out: &mut Vec<Decided>) {
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

    /// The step in progress did not bring the service back: learn from it, move on.
    fn step_failed(
        &mut self,
        service: &ServiceName,
        outcome: &str,
        detail: String,
        now_ms: u64,
        out: &mut Vec<Decided>,
    ) {
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
                let value = self.values.update(signature, &step, Outcome::NotRecovered);
                emit_value(open, out, signature, step.action, value);
            }
        }
        open.next += 1;
        open.approved = None;
        open.phase = Phase::Pending { blocked: None };
        self.try_issue(service, now_ms, out);
    }

    /// Issues the incident's next step if every safety rule allows it, holds it otherwise,
    /// or escalates when no step is left.
    fn try_issue(&mut self, service: &ServiceName, now_ms: u64, out: &mut Vec<Decided>) {
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
                        "action.blocked",
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
        let mut params = step.params.clone();
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
            emit_audit(
                open,
                out,
                "action.held",
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
        if !self.config.dry_run && is_stopgap(&request) {
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
            emit_audit(
                open,
                out,
                "action.advised",
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
        emit_audit(
            open,
            out,
            "action.requested",
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

    /// The first safety rule that holds `step` back, with the reason.
    fn blocked_by(
        &mut self,
        service: &ServiceName,
        step: &Step,
        container: &str,
        approved: bool,
        now_ms: u64,
    ) -> Option<(&'static str, String)> {
        if self.controls.kill_switch {
            return Some(("kill_switch", "the kill switch is on".into()));
        }
        if let Some(until) = self.controls.in_maintenance(service, now_ms) {
            return Some((
                "maintenance",
                format!("{service} is in a maintenance window until {until}"),
            ));
        }
        let own = self
            .open
            .get(service)
            .is_some_and(|o| own_fault(o.incident.signature));
        if let Some(open) = self
            .open
            .get(service)
            .filter(|o| !own && o.settle_until > now_ms)
        {
            let wait = open.settle_until - now_ms;
            return Some((
                "root_cause_wait",
                if open.anomaly.depends_on.is_empty() {
                    format!("{service} just recovered from another anomaly: waiting {wait} ms for this one to clear with it")
                } else {
                    format!(
                        "{service} calls {}: waiting {wait} ms for their anomalies (or recovery) to show",
                        join(&open.anomaly.depends_on),
                    )
                },
            ));
        }
        if let Some(culprit) = self.anomalous_dependency(service).filter(|_| !own) {
            return Some((
                "root_cause",
                format!("{service} depends on {culprit}, anomalous too: acting on {culprit} first"),
            ));
        }
        if let Some(other) = self.busy.get(container) {
            return Some((
                "one_action_per_container",
                format!("action {other} is still running on container {container}"),
            ));
        }
        if let Some(&until) = self.cooldown_until.get(&(service.clone(), step.action)) {
            if until > now_ms {
                return Some((
                    "cooldown",
                    format!(
                        "{} on {service} is cooling down for {} ms more",
                        step.action,
                        until - now_ms
                    ),
                ));
            }
        }
        let acting = self
            .open
            .iter()
            .filter(|(s, o)| *s != service && o.acting())
            .count();
        if acting >= self.config.max_services_acting {
            return Some((
                "blast_radius",
                format!(
                    "{acting} services are being acted on (cap {})",
                    self.config.max_services_acting
                ),
            ));
        }
        let needs_approval = step.risk > self.config.approval_risk && !approved;
        if needs_approval {
            return None; // held for approval before any budget is spent
        }
        let service_budget = self.config.service_budget;
        let own = self
            .service_budgets
            .entry(service.clone())
            .or_insert_with(|| TokenBucket::new(service_budget, now_ms));
        if !own.available(now_ms) {
            return Some((
                "service_budget",
                format!(
                    "{service} spent its budget of {} actions (refill {}/min)",
                    service_budget.burst, service_budget.per_minute
                ),
            ));
        }
        if !self.global_budget.available(now_ms) {
            return Some((
                "global_budget",
                format!(
                    "the global budget of {} actions is spent (refill {}/min)",
                    self.config.global_budget.burst, self.config.global_budget.per_minute
                ),
            ));
        }
        None
    }

    /// Whether `service` calls `target`, directly or through others.
    fn depends_transitively(&self, service: &ServiceName, target: &ServiceName) -> bool {
        if self.depends_on.get(service).is_none_or(Vec::is_empty) {
            return false;
        }
        let mut seen = BTreeSet::from([service.clone()]);
        let mut stack = vec![service.clone()];
        while let Some(s) = stack.pop() {
            for dep in self.depends_on.get(&s).into_iter().flatten() {
                if dep == target {
                    return true;
                }
                if seen.insert(dep.clone()) {
                    stack.push(dep.clone());
                }
            }
        }
        false
    }

    /// The deepest anomalous service among those `service` (transitively) calls, if any.
    fn anomalous_dependency(&self, service: &ServiceName) -> Option<ServiceName> {
        if self.depends_on.get(service).is_none_or(Vec::is_empty) {
            return None;
        }
        let mut seen = BTreeSet::from([service.clone()]);
        let mut frontier = vec![service.clone()];
        let mut deepest = None;
        while !frontier.is_empty() {
            let mut next = Vec::new();
            for s in &frontier {
                for dep in self.depends_on.get(s).into_iter().flatten() {
                    if seen.insert(dep.clone()) {
                        if self.open.get(dep).is_some_and(|o| !o.cleared) {
                            deepest = Some(dep.clone());
                        }
                        next.push(dep.clone());
                    }
                }
            }
            frontier = next;
        }
        deepest
    }

    fn escalate(
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
            "incident.escalated",
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

    /// Lifts the stopgaps that are due, unless their service is anomalous again (the new
    /// incident decides then) or the kill switch or a maintenance window holds actions.
    fn lift_due(&mut self, now_ms: u64, out: &mut Vec<Decided>) {
        let (due, waiting): (Vec<Lift>, Vec<Lift>) =
            self.lifts.drain(..).partition(|l| l.due <= now_ms);
        self.lifts = waiting;
        for lift in due {
            let service = lift.request.service.clone();
            let audit = |what: &'static str, why: String, outcome: String| Decided {
                correlation_id: lift.correlation_id.clone(),
                decision: Decision::Audit {
                    service: service.clone(),
                    what,
                    why,
                    outcome,
                },
            };
            if self.open.contains_key(&service) {
                out.push(audit(
                    "mitigation.kept",
                    "the service is anomalous again; its new incident decides".into(),
                    format!("{} left as it is", lift.request.action),
                ));
                continue;
            }
            if self.controls.kill_switch || self.controls.in_maintenance(&service, now_ms).is_some()
            {
                self.lifts.push(lift);
                continue;
            }
            // (In dry run no stopgap was sent, so none is lifted.)
            out.push(audit(
                "mitigation.lifted",
                lift.request.reason.clone(),
                format!("{} {:?}", lift.request.action, lift.request.params),
            ));
            out.push(Decided {
                correlation_id: lift.correlation_id.clone(),
                decision: Decision::Action(lift.request),
            });
        }
    }

    fn recover(&mut self, service: &ServiceName, now_ms: u64, out: &mut Vec<Decided>) {
        let Some(mut open) = self.open.remove(service) else {
            return;
        };
        let took = now_ms.saturating_sub(open.incident.opened_ms);
        let signature = open.incident.signature;
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
            "incident.recovered",
            "the anomaly cleared: running and healthy again".into(),
            format!("recovered in {took} ms after {actions} action(s)"),
        );
        open.incident.state = IncidentState::Closed;
        emit_incident(&open, out);
        let after = self.config.lift_mitigations_after_ms;
        if after > 0 {
            for stopgap in open.mitigations.drain(..) {
                self.lifts.push(Lift {
                    due: now_ms + after,
                    correlation_id: open.correlation_id.clone(),
                    request: undo(&stopgap, after),
                });
            }
        }
        // the services that call this one may recover with it: give them time to show it
        let settle_until = now_ms + self.config.root_cause_wait_ms;
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
        // acting, as the repair that cleared this one may clear them too: as long as a
        // dependent does, or, when one is on the container just repaired, as long as a
        // repair's verification may take.
        let mut others: Vec<_> = std::mem::take(&mut open.others).into_values().collect();
        others.sort_by_key(|(a, _)| a.started_ms);
        let repaired = others
            .iter()
            .any(|(a, _)| a.container_id == open.anomaly.container_id);
        let hold_until = if repaired {
            now_ms + self.config.verify_deadline_ms
        } else {
            settle_until
        };
        for (anomaly, correlation_id) in others {
            self.on_firing(&anomaly, correlation_id.as_deref(), now_ms, hold_until, out);
        }
        self.retry_pending(now_ms, out);
    }
}

fn current_step<'p>(playbook: &'p Playbook, open: &Open) -> Option<&'p Step> {
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

fn join(services: &[ServiceName]) -> String {
    let names: Vec<&str> = services.iter().map(ServiceName::as_str).collect();
    names.join(", ")
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

fn note(open: &mut Open, at_ms: u64, what: String) {
    open.incident.timeline.push(TimelineEntry { at_ms, what });
}

fn emit_incident(open: &Open, out: &mut Vec<Decided>) {
    out.push(Decided {
        correlation_id: open.correlation_id.clone(),
        decision: Decision::Incident(open.incident.clone()),
    });
}

fn emit_value(
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

fn emit_audit(
    open: &Open,
    out: &mut Vec<Decided>,
    what: &'static str,
    why: String,
    outcome: String,
) {
    out.push(Decided {
        correlation_id: open.correlation_id.clone(),
        decision: Decision::Audit {
            service: open.incident.service.clone(),
            what,
            why,
            outcome,
        },
    });
}

mod memory;
pub use memory::{MemoryError, OPEN_PREFIX, SHARED_KEY};

#[cfg(test)]
mod tests;
