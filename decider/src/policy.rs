//! The decision logic, pure: fed anomalies, action results, chaos events and clock ticks,
//! it returns what to publish. No I/O, no clock of its own, so every rule is unit-tested.
//!
//! An incident per service: opened by a firing anomaly, it walks the playbook of the
//! anomaly's signature, least disruptive action first. After each action it verifies: the
//! anomaly must clear before the verification deadline, or the next action is tried. An
//! exhausted playbook escalates to a human. A cooldown per service and action keeps a
//! repair from looping: an action still cooling down is deferred, never dropped.

use std::collections::{BTreeMap, HashMap};

use immune_nats::{
    ActionKind, ActionOutcome, ActionRequest, ActionResult, Anomaly, AnomalyState, Incident,
    IncidentState, ServiceName, Signature, TimelineEntry,
};
use serde::{Deserialize, Serialize};

/// Ordered actions per signature, least disruptive first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Playbook(pub BTreeMap<Signature, Vec<ActionKind>>);

impl Default for Playbook {
    fn default() -> Self {
        Self(BTreeMap::from([
            (Signature::Crashed, vec![ActionKind::Restart]),
            (Signature::OomKilled, vec![ActionKind::Restart]),
            (Signature::Unresponsive, vec![ActionKind::Restart]),
        ]))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// After an action on a service, the same action waits this long before it may run again.
    pub cooldown_ms: u64,
    /// How long a service has to recover after a successful action.
    pub verify_deadline_ms: u64,
    /// Passed to the executor with each action.
    pub action_timeout_ms: u64,
    /// Seconds Docker waits after SIGTERM before SIGKILL on a restart.
    pub stop_grace_s: u32,
    pub playbook: Playbook,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            cooldown_ms: 10_000,
            verify_deadline_ms: 30_000,
            action_timeout_ms: 30_000,
            stop_grace_s: 1,
            playbook: Playbook::default(),
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
    ChaosInjected {
        service: &'a ServiceName,
        run_id: &'a str,
    },
    ChaosReverted {
        service: &'a ServiceName,
        run_id: &'a str,
    },
    Tick,
}

/// What the decider wants published, each under the incident's correlation id.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Incident(Incident),
    Action(ActionRequest),
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

#[derive(Debug)]
struct Open {
    incident: Incident,
    correlation_id: String,
    /// The latest firing anomaly: where to act.
    anomaly: Anomaly,
    /// Index of the next playbook action.
    step: usize,
    in_flight: Option<ActionRequest>,
    verify_until: Option<u64>,
    deferred_until: Option<u64>,
    cleared: bool,
}

#[derive(Debug, Default)]
pub struct Decider {
    config: PolicyConfig,
    open: HashMap<ServiceName, Open>,
    cooldown_until: HashMap<(ServiceName, ActionKind), u64>,
    chaos_runs: HashMap<ServiceName, String>,
}

impl Decider {
    pub fn new(config: PolicyConfig) -> Self {
        Self {
            config,
            ..Default::default()
        }
    }

    /// Open incidents, for status and tests.
    pub fn open_incidents(&self) -> impl Iterator<Item = &Incident> {
        self.open.values().map(|o| &o.incident)
    }

    pub fn decide(&mut self, input: Input<'_>, now_ms: u64) -> Vec<Decided> {
        let mut out = Vec::new();
        match input {
            Input::Anomaly {
                anomaly,
                correlation_id,
            } => match anomaly.state {
                AnomalyState::Firing => self.on_firing(anomaly, correlation_id, now_ms, &mut out),
                AnomalyState::Cleared => self.on_cleared(anomaly, now_ms, &mut out),
            },
            Input::Result(result) => self.on_result(result, now_ms, &mut out),
            Input::ChaosInjected { service, run_id } => {
                self.chaos_runs.insert(service.clone(), run_id.to_string());
                if let Some(open) = self.open.get_mut(service) {
                    open.incident.chaos_run = Some(run_id.to_string());
                }
            }
            Input::ChaosReverted { service, run_id } => {
                if self.chaos_runs.get(service).map(String::as_str) == Some(run_id) {
                    self.chaos_runs.remove(service);
                }
            }
            Input::Tick => self.on_tick(now_ms, &mut out),
        }
        out
    }

    fn on_firing(
        &mut self,
        anomaly: &Anomaly,
        correlation_id: Option<&str>,
        now_ms: u64,
        out: &mut Vec<Decided>,
    ) {
        let service = anomaly.service.clone();
        if let Some(open) = self.open.get_mut(&service) {
            open.cleared = false;
            open.anomaly = anomaly.clone();
            note(
                &mut open.incident,
                now_ms,
                format!("anomaly: {} ({})", anomaly.signature, anomaly.reason),
            );
            return;
        }
        let incident_id = uuid::Uuid::now_v7().to_string();
        let correlation_id = correlation_id
            .map(str::to_string)
            .unwrap_or_else(|| incident_id.clone());
        let mut incident = Incident {
            incident_id,
            service: service.clone(),
            state: IncidentState::Opened,
            signature: anomaly.signature,
            chaos_run: self.chaos_runs.get(&service).cloned(),
            opened_ms: now_ms,
            timeline: Vec::new(),
        };
        note(
            &mut incident,
            now_ms,
            format!("opened: {} ({})", anomaly.signature, anomaly.reason),
        );
        let open = Open {
            incident,
            correlation_id,
            anomaly: anomaly.clone(),
            step: 0,
            in_flight: None,
            verify_until: None,
            deferred_until: None,
            cleared: false,
        };
        let why = match &open.incident.chaos_run {
            Some(run) => format!("{} (injected by chaos run {run})", anomaly.reason),
            None => anomaly.reason.clone(),
        };
        emit_incident(&open, out);
        emit_audit(
            &open,
            out,
            "incident.opened",
            why,
            format!("incident {}", open.incident.incident_id),
        );
        self.open.insert(service.clone(), open);
        self.next_step(&service, now_ms, out);
    }

    fn on_cleared(&mut self, anomaly: &Anomaly, now_ms: u64, out: &mut Vec<Decided>) {
        let Some(open) = self.open.get_mut(&anomaly.service) else {
            return;
        };
        open.cleared = true;
        if open.in_flight.is_none() {
            self.recover(&anomaly.service, now_ms, out);
        }
    }

    fn on_result(&mut self, result: &ActionResult, now_ms: u64, out: &mut Vec<Decided>) {
        let Some(open) = self.open.get_mut(&result.service) else {
            return;
        };
        if open.in_flight.as_ref().map(|a| a.action_id.as_str()) != Some(result.action_id.as_str())
        {
            return; // a late or repeated result of an action no longer awaited
        }
        open.in_flight = None;
        let outcome = format!("{:?} in {} ms", result.outcome, result.duration_ms).to_lowercase();
        note(
            &mut open.incident,
            now_ms,
            format!("{} {outcome}", result.action),
        );
        match result.outcome {
            ActionOutcome::Succeeded => {
                if open.cleared {
                    self.recover(&result.service, now_ms, out);
                    return;
                }
                open.verify_until = Some(now_ms + self.config.verify_deadline_ms);
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
                    why,
                    format!("{} {outcome}; trying the next action", result.action),
                );
                self.next_step(&result.service, now_ms, out);
            }
        }
    }

    fn on_tick(&mut self, now_ms: u64, out: &mut Vec<Decided>) {
        let due: Vec<(ServiceName, bool)> = self
            .open
            .iter()
            .filter_map(|(service, open)| {
                let verification_failed = open.verify_until.is_some_and(|t| now_ms >= t);
                let deferral_over = open.deferred_until.is_some_and(|t| now_ms >= t);
                (verification_failed || deferral_over)
                    .then(|| (service.clone(), verification_failed))
            })
            .collect();
        for (service, verification_failed) in due {
            if verification_failed {
                if let Some(open) = self.open.get_mut(&service) {
                    open.verify_until = None;
                    let why = format!(
                        "no steady state within {} ms",
                        self.config.verify_deadline_ms
                    );
                    emit_audit(
                        open,
                        out,
                        "verification.failed",
                        why,
                        "trying the next action".into(),
                    );
                }
            }
            self.next_step(&service, now_ms, out);
        }
    }

    /// Issues the next playbook action, defers it while it cools down, or escalates.
    fn next_step(&mut self, service: &ServiceName, now_ms: u64, out: &mut Vec<Decided>) {
        let Some(open) = self.open.get_mut(service) else {
            return;
        };
        open.deferred_until = None;
        let playbook = self.config.playbook.0.get(&open.anomaly.signature);
        let Some(&action) = playbook.and_then(|p| p.get(open.step)) else {
            let why = match playbook {
                None => format!("no playbook for {}", open.anomaly.signature),
                Some(p) => format!("all {} playbook actions tried", p.len()),
            };
            open.incident.state = IncidentState::Escalated;
            note(
                &mut open.incident,
                now_ms,
                format!("escalated to a human: {why}"),
            );
            emit_incident(open, out);
            emit_audit(
                open,
                out,
                "incident.escalated",
                why,
                "a human must act; the incident carries the story".into(),
            );
            self.open.remove(service);
            return;
        };
        let key = (service.clone(), action);
        if let Some(&until) = self.cooldown_until.get(&key) {
            if until > now_ms {
                open.deferred_until = Some(until);
                let why = format!(
                    "{action} on {service} is cooling down for {} ms more",
                    until - now_ms
                );
                emit_audit(
                    open,
                    out,
                    "action.deferred",
                    why,
                    "deferred, not dropped".into(),
                );
                return;
            }
        }
        let request = ActionRequest {
            action_id: uuid::Uuid::now_v7().to_string(),
            incident_id: open.incident.incident_id.clone(),
            service: service.clone(),
            instance: open.anomaly.instance.clone(),
            container_id: open.anomaly.container_id.clone(),
            action,
            params: BTreeMap::from([(
                "stop_grace_s".to_string(),
                self.config.stop_grace_s.to_string(),
            )]),
            timeout_ms: self.config.action_timeout_ms,
            reason: format!(
                "playbook {} step {}: {}",
                open.anomaly.signature,
                open.step + 1,
                open.anomaly.reason
            ),
        };
        self.cooldown_until
            .insert(key, now_ms + self.config.cooldown_ms);
        open.step += 1;
        open.in_flight = Some(request.clone());
        open.incident.state = IncidentState::Acting;
        note(
            &mut open.incident,
            now_ms,
            format!("{action} requested on {}", request.instance),
        );
        emit_incident(open, out);
        let candidates = playbook.map(|p| format!("{p:?}")).unwrap_or_default();
        emit_audit(
            open,
            out,
            "action.requested",
            format!(
                "{} (candidates {candidates}, least disruptive first)",
                request.reason
            ),
            format!("{action} of {} ({})", request.instance, request.action_id),
        );
        out.push(Decided {
            correlation_id: open.correlation_id.clone(),
            decision: Decision::Action(request),
        });
    }

    fn recover(&mut self, service: &ServiceName, now_ms: u64, out: &mut Vec<Decided>) {
        let Some(mut open) = self.open.remove(service) else {
            return;
        };
        let took = now_ms.saturating_sub(open.incident.opened_ms);
        let actions = open.step;
        open.incident.state = IncidentState::Recovered;
        note(
            &mut open.incident,
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
    }
}

fn note(incident: &mut Incident, at_ms: u64, what: String) {
    incident.timeline.push(TimelineEntry { at_ms, what });
}

fn emit_incident(open: &Open, out: &mut Vec<Decided>) {
    out.push(Decided {
        correlation_id: open.correlation_id.clone(),
        decision: Decision::Incident(open.incident.clone()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use immune_nats::samples;

    fn firing(signature: Signature) -> Anomaly {
        Anomaly {
            state: AnomalyState::Firing,
            signature,
            ..samples::anomaly()
        }
    }

    fn cleared() -> Anomaly {
        Anomaly {
            state: AnomalyState::Cleared,
            ..samples::anomaly()
        }
    }

    fn actions(out: &[Decided]) -> Vec<ActionRequest> {
        out.iter()
            .filter_map(|d| match &d.decision {
                Decision::Action(a) => Some(a.clone()),
                _ => None,
            })
            .collect()
    }

    fn audits(out: &[Decided]) -> Vec<&'static str> {
        out.iter()
            .filter_map(|d| match &d.decision {
                Decision::Audit { what, .. } => Some(*what),
                _ => None,
            })
            .collect()
    }

    fn result_of(action: &ActionRequest, outcome: ActionOutcome) -> ActionResult {
        ActionResult {
            action_id: action.action_id.clone(),
            outcome,
            ..samples::action_result()
        }
    }

    #[test]
    fn firing_opens_an_incident_and_restarts_then_clearing_recovers_it() {
        let mut d = Decider::new(PolicyConfig::default());
        let a = firing(Signature::Unresponsive);
        let out = d.decide(
            Input::Anomaly {
                anomaly: &a,
                correlation_id: Some("run-1"),
            },
            1_000,
        );
        let acts = actions(&out);
        assert_eq!(acts.len(), 1);
        assert_eq!(acts[0].action, ActionKind::Restart);
        assert_eq!(acts[0].container_id, a.container_id);
        assert!(out.iter().all(|d| d.correlation_id == "run-1"));
        assert_eq!(audits(&out), ["incident.opened", "action.requested"]);

        let out = d.decide(
            Input::Result(&result_of(&acts[0], ActionOutcome::Succeeded)),
            1_600,
        );
        assert_eq!(audits(&out), ["verification.started"]);
        let out = d.decide(
            Input::Anomaly {
                anomaly: &cleared(),
                correlation_id: Some("run-1"),
            },
            2_000,
        );
        assert_eq!(audits(&out), ["incident.recovered"]);
        let states: Vec<_> = out
            .iter()
            .filter_map(|d| match &d.decision {
                Decision::Incident(i) => Some(i.state),
                _ => None,
            })
            .collect();
        assert_eq!(states, [IncidentState::Recovered, IncidentState::Closed]);
        assert_eq!(d.open_incidents().count(), 0);
    }

    #[test]
    fn a_repeat_within_the_cooldown_is_deferred_not_dropped() {
        let mut d = Decider::new(PolicyConfig {
            cooldown_ms: 5_000,
            ..Default::default()
        });
        let a = firing(Signature::Crashed);
        let first = actions(&d.decide(
            Input::Anomaly {
                anomaly: &a,
                correlation_id: None,
            },
            0,
        ));
        d.decide(
            Input::Result(&result_of(&first[0], ActionOutcome::Succeeded)),
            100,
        );
        d.decide(
            Input::Anomaly {
                anomaly: &cleared(),
                correlation_id: None,
            },
            200,
        );
        // it crashes again at once: the restart must wait for the cooldown
        let out = d.decide(
            Input::Anomaly {
                anomaly: &a,
                correlation_id: None,
            },
            1_000,
        );
        assert!(actions(&out).is_empty());
        assert!(audits(&out).contains(&"action.deferred"));
        assert!(actions(&d.decide(Input::Tick, 4_999)).is_empty());
        let out = d.decide(Input::Tick, 5_000);
        assert_eq!(actions(&out).len(), 1, "issued once the cooldown is over");
    }

    #[test]
    fn a_failed_verification_escalates_through_the_playbook_to_a_human() {
        let playbook = Playbook(BTreeMap::from([(
            Signature::Unresponsive,
            vec![ActionKind::Restart, ActionKind::Recreate],
        )]));
        let mut d = Decider::new(PolicyConfig {
            playbook,
            verify_deadline_ms: 1_000,
            cooldown_ms: 0,
            ..Default::default()
        });
        let a = firing(Signature::Unresponsive);
        let first = actions(&d.decide(
            Input::Anomaly {
                anomaly: &a,
                correlation_id: None,
            },
            0,
        ));
        d.decide(
            Input::Result(&result_of(&first[0], ActionOutcome::Succeeded)),
            10,
        );
        assert!(actions(&d.decide(Input::Tick, 500)).is_empty());
        let out = d.decide(Input::Tick, 1_010);
        assert_eq!(audits(&out)[0], "verification.failed");
        let second = actions(&out);
        assert_eq!(second[0].action, ActionKind::Recreate);
        let out = d.decide(
            Input::Result(&result_of(&second[0], ActionOutcome::Failed)),
            1_100,
        );
        assert!(audits(&out).contains(&"incident.escalated"));
        assert_eq!(d.open_incidents().count(), 0);
    }

    #[test]
    fn a_signature_without_playbook_goes_straight_to_a_human() {
        let mut d = Decider::new(PolicyConfig::default());
        let out = d.decide(
            Input::Anomaly {
                anomaly: &firing(Signature::TrafficDrop),
                correlation_id: None,
            },
            0,
        );
        assert!(actions(&out).is_empty());
        assert!(audits(&out).contains(&"incident.escalated"));
    }

    #[test]
    fn a_stale_result_is_ignored() {
        let mut d = Decider::new(PolicyConfig::default());
        let a = firing(Signature::Crashed);
        d.decide(
            Input::Anomaly {
                anomaly: &a,
                correlation_id: None,
            },
            0,
        );
        let stale = ActionResult {
            action_id: "someone-else".into(),
            ..samples::action_result()
        };
        assert!(d.decide(Input::Result(&stale), 10).is_empty());
    }

    #[test]
    fn the_incident_knows_about_the_chaos_run() {
        let mut d = Decider::new(PolicyConfig::default());
        let svc = samples::anomaly().service;
        d.decide(
            Input::ChaosInjected {
                service: &svc,
                run_id: "run-9",
            },
            0,
        );
        let out = d.decide(
            Input::Anomaly {
                anomaly: &firing(Signature::Crashed),
                correlation_id: Some("run-9"),
            },
            1,
        );
        let opened = out.iter().find_map(|d| match &d.decision {
            Decision::Incident(i) => Some(i.clone()),
            _ => None,
        });
        assert_eq!(
            opened.expect("incident").chaos_run.as_deref(),
            Some("run-9")
        );
    }
}
