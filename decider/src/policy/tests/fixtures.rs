//! The builders every policy test shares: anomalies firing and clearing, action results,
//! playbooks, a policy without learning, and the filters that pick actions, audit records
//! and escalations out of what the decider decided.

use std::collections::HashMap;

use immune_nats::{
    samples, ActionOutcome, ActionRequest, ActionResult, Anomaly, AnomalyState, Escalation,
    ServiceName, Signature,
};

use crate::learning::LearningConfig;
use crate::playbook::Playbook;
use crate::policy::{Decided, Decider, Decision, Input, PolicyConfig};

pub(super) fn svc(name: &str) -> ServiceName {
    ServiceName::new(name).expect("valid name")
}

thread_local! {
    /// The id of the anomaly last made to fire on each service, which [`cleared_on`] clears.
    static LAST_FIRED: std::cell::RefCell<HashMap<String, String>> = Default::default();
}

/// A new anomaly (its own id) firing on `service`.
pub(super) fn firing_on(service: &str, signature: Signature, depends_on: &[&str]) -> Anomaly {
    let anomaly_id = uuid::Uuid::now_v7().to_string();
    LAST_FIRED.with(|l| {
        l.borrow_mut()
            .insert(service.to_string(), anomaly_id.clone())
    });
    Anomaly {
        anomaly_id,
        state: AnomalyState::Firing,
        signature,
        service: svc(service),
        instance: format!("{service}-1"),
        container_id: format!("container-{service}"),
        depends_on: depends_on.iter().map(|s| svc(s)).collect(),
        ..samples::anomaly()
    }
}

pub(super) fn firing(signature: Signature) -> Anomaly {
    firing_on("orders", signature, &[])
}

/// The clearing of the anomaly last made to fire on `service`.
pub(super) fn cleared_on(service: &str) -> Anomaly {
    let last = LAST_FIRED.with(|l| l.borrow().get(service).cloned());
    Anomaly {
        anomaly_id: last.expect("an anomaly fired on the service before"),
        state: AnomalyState::Cleared,
        ..firing_on(service, Signature::Crashed, &[])
    }
}

/// `a`, cleared.
pub(super) fn cleared(a: &Anomaly) -> Anomaly {
    Anomaly {
        state: AnomalyState::Cleared,
        ..a.clone()
    }
}

pub(super) fn actions(out: &[Decided]) -> Vec<ActionRequest> {
    out.iter()
        .filter_map(|d| match &d.decision {
            Decision::Action(a) => Some(a.clone()),
            _ => None,
        })
        .collect()
}

pub(super) fn audits(out: &[Decided]) -> Vec<&'static str> {
    out.iter()
        .filter_map(|d| match &d.decision {
            Decision::Audit { what, .. } => Some(what.as_str()),
            _ => None,
        })
        .collect()
}

pub(super) fn audit_text(out: &[Decided], wanted: &str) -> Vec<String> {
    out.iter()
        .filter_map(|d| match &d.decision {
            Decision::Audit {
                what, why, outcome, ..
            } if what.as_str() == wanted => Some(format!("{why} | {outcome}")),
            _ => None,
        })
        .collect()
}

pub(super) fn escalations(out: &[Decided]) -> Vec<Escalation> {
    out.iter()
        .filter_map(|d| match &d.decision {
            Decision::Escalation(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

pub(super) fn result_of(action: &ActionRequest, outcome: ActionOutcome) -> ActionResult {
    ActionResult {
        action_id: action.action_id.clone(),
        service: action.service.clone(),
        action: action.action,
        outcome,
        ..samples::action_result()
    }
}

pub(super) fn fire(d: &mut Decider, a: &Anomaly, now: u64) -> Vec<Decided> {
    d.decide(
        Input::Anomaly {
            anomaly: a,
            correlation_id: None,
        },
        now,
    )
}

pub(super) fn playbook(text: &str) -> Playbook {
    Playbook::parse(text).expect("test playbook")
}

/// A policy without learning or exploration, whose stopgaps are verified by the service's
/// own anomaly clearing (`callers_settle_ms` 0), unless a test wants them.
pub(super) fn config() -> PolicyConfig {
    PolicyConfig {
        learning: LearningConfig {
            enabled: false,
            ..Default::default()
        },
        callers_settle_ms: 0,
        ..Default::default()
    }
}

pub(super) fn decider(config: PolicyConfig) -> Decider {
    Decider::new(config, Playbook::default())
}
