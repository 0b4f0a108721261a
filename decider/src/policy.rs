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
//!
//! Each concept its own file under `policy/`: `config` (the settings), `incident` (opening
//! and joining an incident, its story), `step` (issuing the next step), `rules` (the safety
//! rules), `root_cause` (the culprit), `verification` (results, deadlines, recovery),
//! `escalation`, `approval`, `control`, `mitigation` (lifting stopgaps) and `memory` (what a
//! restarted decider carries on from).

use immune_nats::AuditCode;
use std::collections::{BTreeMap, HashMap};

use immune_nats::{
    ActionKind, ActionRequest, ActionResult, Anomaly, AnomalyState, Approval, Escalation, Incident,
    ServiceName, Signature,
};

use crate::learning::Values;
use crate::playbook::Playbook;
use crate::safety::{Controls, TokenBucket};

mod approval;
mod config;
mod control;
mod escalation;
mod incident;
mod memory;
mod mitigation;
mod root_cause;
mod rules;
mod step;
mod verification;

pub use config::PolicyConfig;
pub use memory::{MemoryError, OPEN_PREFIX, SHARED_KEY};

use incident::{note, Open};
use mitigation::Lift;

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
        what: AuditCode,
        why: String,
        outcome: String,
        /// The action the record is about (an approval names it).
        action_id: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decided {
    pub correlation_id: String,
    pub decision: Decision,
}

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
    /// Stopgaps and scale_outs of recovered incidents waiting to be undone.
    lifts: Vec<Lift>,
    /// Services a scale_in is removing a replica of: the container it was sent for (kept),
    /// and until when another one dying is expected.
    scaling_in: HashMap<ServiceName, (String, u64)>,
    /// Anomalies the decider is done with (cleared, or escalated to a human), by id, and
    /// when: a firing of one of them delivered again (its acknowledgement lost in a NATS
    /// restart, say) is old news, not a new fault.
    /// Kept for [`SETTLED_KEEP_MS`], at most [`SETTLED_MAX`].
    settled: HashMap<String, u64>,
    /// When each service's latest incident recovered, and the container it was on: its
    /// callers' anomalies that fire soon after are its echo (their detection lags), and so
    /// are that container's own (the backlog it drains first), given time to clear with it.
    /// Not persisted: after a restart of the decider they wait only as any anomaly does.
    recovered_at: HashMap<ServiceName, (u64, String)>,
}

/// How long the id of an anomaly the decider is done with is remembered: well beyond a
/// redelivery (ack waits are 30 s; a restarted nats-server delivers again at once).
pub const SETTLED_KEEP_MS: u64 = 600_000;
/// At most this many are remembered (the oldest go first); they are part of the memory
/// written to the bucket, about 50 bytes each.
pub const SETTLED_MAX: usize = 2_000;

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
            scaling_in: HashMap::new(),
            settled: HashMap::new(),
            recovered_at: HashMap::new(),
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
}

#[cfg(test)]
mod tests;
