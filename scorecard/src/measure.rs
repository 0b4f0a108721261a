//! What one injection shows, read from what was recorded on the bus and from the health
//! probes of the target: time to detect, time to healthy again, the actions taken and
//! whether the first was right, and the latency of each stage. Pure, so it is tested with
//! made-up envelopes.

use immune_nats::{
    ActionKind, ActionOutcome, AnomalyState, Envelope, Event, FaultKind, IncidentState, Stage,
};
use serde::{Deserialize, Serialize};

/// One `/health` probe of the target.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    pub sent_ms: u64,
    /// When the answer (or the failure) came. A probe sent while the container was gone can
    /// be held by the network until its address is back, and pass then.
    pub answered_ms: u64,
    pub ok: bool,
}

/// Who brought the service back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealedBy {
    /// The incident was recovered by immune's actions before chaos reverted the fault.
    Immune,
    /// Chaos reverted the fault first (its time was up).
    Revert,
    /// Still not healthy when the trial gave up.
    Never,
}

impl HealedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            HealedBy::Immune => "immune",
            HealedBy::Revert => "revert",
            HealedBy::Never => "never",
        }
    }
}

/// Time spent in each stage from the collector's event to the executor starting to act.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StageLatency {
    /// Collector publish of the triggering observation to the anomaly.
    pub detector_ms: f64,
    /// Anomaly to action requested.
    pub decider_ms: f64,
    /// Action requested to the executor starting it.
    pub executor_ms: f64,
}

impl StageLatency {
    pub fn end_to_end_ms(&self) -> f64 {
        self.detector_ms + self.decider_ms + self.executor_ms
    }
}

/// The outcome of one injection; times are milliseconds after the injection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    pub fault: FaultKind,
    pub run_id: String,
    pub service: String,
    pub instance: String,
    pub injected_ms: u64,
    pub detected_ms: Option<u64>,
    pub signature: Option<String>,
    pub first_action_ms: Option<u64>,
    pub healed_ms: Option<u64>,
    pub healed_by: HealedBy,
    /// The first passing `/health` probe after the last failing one (none: it never failed).
    #[serde(default)]
    pub healthy_ms: Option<u64>,
    /// The run's incident recovered (the decider saw the anomaly clear).
    #[serde(default)]
    pub recovered_ms: Option<u64>,
    /// Actions requested on the target service, in order.
    pub actions: Vec<String>,
    /// The first action succeeded and the incident recovered with no other action.
    pub first_action_right: Option<bool>,
    /// Actions on other services during the trial.
    pub collateral_actions: usize,
    pub latency: Option<StageLatency>,
    pub reverted_ms: Option<u64>,
}

fn since(t: u64, injected: u64) -> u64 {
    t.saturating_sub(injected)
}

/// Reads one trial out of `seen` (everything recorded on the bus, in arrival order) and the
/// target's probes. `None` when the injection itself is not among the records.
pub fn measure(run_id: &str, seen: &[Envelope], probes: &[Probe]) -> Option<Trial> {
    let injected = seen.iter().find_map(|e| match &e.body {
        Event::ChaosInjected(i) if i.run_id == run_id => Some(i.clone()),
        _ => None,
    })?;
    let t0 = injected.injected_ms;
    let service = &injected.service;
    let ours = |e: &Envelope| e.correlation_id.as_deref() == Some(run_id);

    let firing = seen.iter().find(|e| match &e.body {
        Event::Anomaly(a) => {
            a.service == *service
                && a.state == AnomalyState::Firing
                && (ours(e) || e.timestamp_ms >= t0)
        }
        _ => false,
    });
    let incident_end = seen.iter().find_map(|e| match &e.body {
        Event::Incident(i)
            if i.service == *service
                && (i.chaos_run.as_deref() == Some(run_id) || ours(e))
                && matches!(i.state, IncidentState::Recovered | IncidentState::Escalated) =>
        {
            Some((e.timestamp_ms, i.state))
        }
        _ => None,
    });
    let reverted = seen.iter().find_map(|e| match &e.body {
        Event::ChaosReverted(r) if r.run_id == run_id => Some(r.reverted_ms),
        _ => None,
    });
    // The trial's window ends when the incident ended, else at the last record.
    let window_end = incident_end
        .map(|(t, _)| t)
        .or_else(|| seen.last().map(|e| e.timestamp_ms))
        .unwrap_or(t0);
    let requests: Vec<(&Envelope, &immune_nats::ActionRequest)> = seen
        .iter()
        .filter_map(|e| match &e.body {
            Event::ActionRequest(r) if e.timestamp_ms >= t0 && e.timestamp_ms <= window_end => {
                Some((e, r))
            }
            _ => None,
        })
        .collect();
    // The run's incident, when the decider opened one: its actions are this trial's; a
    // stopgap lifted for an earlier incident is not, nor the undoing of the incident's own
    // stopgap that did not help (no step of its playbook: the step after it is).
    let incident_id = seen.iter().find_map(|e| match &e.body {
        Event::Incident(i)
            if i.service == *service && (i.chaos_run.as_deref() == Some(run_id) || ours(e)) =>
        {
            Some(i.incident_id.clone())
        }
        _ => None,
    });
    let on_target: Vec<_> = requests
        .iter()
        .filter(|(_, r)| {
            r.service == *service && incident_id.as_ref().is_none_or(|id| *id == r.incident_id)
        })
        .collect();
    let collateral_actions = requests.len() - on_target.len();
    let on_target: Vec<_> = on_target
        .into_iter()
        .filter(|(_, r)| incident_id.is_none() || r.stopgap() != Some(false))
        .collect();
    let first_result = on_target.first().and_then(|(_, first)| {
        seen.iter().find_map(|e| match &e.body {
            Event::ActionResult(r) if r.action_id == first.action_id => Some(r.clone()),
            _ => None,
        })
    });
    let recovered_at = match incident_end {
        Some((t, IncidentState::Recovered)) => Some(t),
        _ => None,
    };
    let first_action_right = on_target.first().map(|_| {
        on_target.len() == 1
            && recovered_at.is_some()
            && first_result
                .as_ref()
                .is_some_and(|r| r.outcome == ActionOutcome::Succeeded)
    });

    let latency = match (firing, on_target.first(), &first_result) {
        (Some(anomaly), Some((request, _)), Some(result)) => {
            let trigger = seen
                .iter()
                .filter(|e| {
                    e.producer.stage == Stage::Collector
                        && e.timestamp_ms <= anomaly.timestamp_ms
                        && match &e.body {
                            Event::MetricSnapshot(s) => s.service == *service,
                            Event::ContainerEvent(c) => c.service == *service,
                            _ => false,
                        }
                })
                .map(|e| e.timestamp_ms)
                .max();
            trigger.map(|trigger| StageLatency {
                detector_ms: anomaly.timestamp_ms.saturating_sub(trigger) as f64,
                decider_ms: request.timestamp_ms.saturating_sub(anomaly.timestamp_ms) as f64,
                executor_ms: result
                    .finished_ms
                    .saturating_sub(result.duration_ms)
                    .saturating_sub(request.timestamp_ms) as f64,
            })
        }
        _ => None,
    };

    // Healthy again: the first answer of a probe sent after the last failing one (all of
    // them passed). Its answer, not its sending: one sent while the container was gone may
    // pass only once it is back.
    let after: Vec<&Probe> = probes.iter().filter(|p| p.sent_ms >= t0).collect();
    let last_fail = after.iter().rposition(|p| !p.ok);
    let health_back = match last_fail {
        None => Some(t0),
        Some(i) => after[i + 1..].iter().map(|p| p.answered_ms).min(),
    };
    // Where /health failed, healthy again is its first pass after the last failure (the
    // container is back, whatever the incident's bookkeeping); where it never failed, the
    // steady state is back when the incident recovered.
    let health_failed = last_fail.is_some();
    let (healed_at, healed_by) = match (health_back, recovered_at, firing) {
        (None, _, _) => (None, HealedBy::Never),
        (Some(h), Some(r), _) if reverted.is_none_or(|v| r <= v) => {
            (Some(if health_failed { h } else { r }), HealedBy::Immune)
        }
        // Detected but not recovered by immune, or never detected: the revert ended it.
        (Some(h), _, _) => match reverted {
            Some(v) => (Some(h.max(v)), HealedBy::Revert),
            None if firing.is_none() && last_fail.is_some() => (Some(h), HealedBy::Never),
            None => (None, HealedBy::Never),
        },
    };

    Some(Trial {
        fault: injected.fault,
        run_id: run_id.to_string(),
        service: service.as_str().to_string(),
        instance: injected.instance.clone(),
        injected_ms: t0,
        detected_ms: firing.map(|e| since(e.timestamp_ms, t0)),
        signature: firing.and_then(|e| match &e.body {
            Event::Anomaly(a) => Some(a.signature.as_str().to_string()),
            _ => None,
        }),
        first_action_ms: on_target.first().map(|(e, _)| since(e.timestamp_ms, t0)),
        healed_ms: healed_at.map(|t| since(t, t0)),
        healed_by,
        healthy_ms: health_back.filter(|_| health_failed).map(|t| since(t, t0)),
        recovered_ms: recovered_at.map(|t| since(t, t0)),
        actions: on_target
            .iter()
            .map(|(_, r)| r.action.as_str().to_string())
            .collect(),
        first_action_right,
        collateral_actions,
        latency,
        reverted_ms: reverted.map(|t| since(t, t0)),
    })
}

/// The anomalies on `service` that fired and have not cleared, on the instances in
/// `running` (an anomaly of a container that is gone never clears): their ids. A trial must
/// not start while one is open, since the detector opens no second episode on an instance
/// whose episode is still open, and the new fault would go unseen.
pub fn open_anomalies<'a>(
    seen: impl IntoIterator<Item = &'a Envelope>,
    service: &str,
    running: &[String],
) -> Vec<String> {
    let mut open: Vec<String> = Vec::new();
    for envelope in seen {
        let Event::Anomaly(a) = &envelope.body else {
            continue;
        };
        if a.service.as_str() != service {
            continue;
        }
        match a.state {
            AnomalyState::Firing if running.contains(&a.instance) => {
                if !open.contains(&a.anomaly_id) {
                    open.push(a.anomaly_id.clone());
                }
            }
            AnomalyState::Firing => {}
            AnomalyState::Cleared => open.retain(|id| *id != a.anomaly_id),
        }
    }
    open
}

/// The incident is over: recovered, escalated to an operator, or closed.
pub fn ended(state: IncidentState) -> bool {
    matches!(
        state,
        IncidentState::Recovered | IncidentState::Escalated | IncidentState::Closed
    )
}

/// The services with an incident still open in `seen` (opened and not yet recovered,
/// escalated or closed), each once, in the order their incidents opened.
pub fn open_incidents<'a>(seen: impl IntoIterator<Item = &'a Envelope>) -> Vec<String> {
    let mut last: Vec<(&str, &str, IncidentState)> = Vec::new();
    for envelope in seen {
        let Event::Incident(i) = &envelope.body else {
            continue;
        };
        match last.iter_mut().find(|(id, _, _)| *id == i.incident_id) {
            Some(entry) => entry.2 = i.state,
            None => last.push((&i.incident_id, i.service.as_str(), i.state)),
        }
    }
    let mut open: Vec<String> = Vec::new();
    for (_, service, state) in last {
        if !ended(state) && !open.iter().any(|s| s == service) {
            open.push(service.to_string());
        }
    }
    open
}

/// The stopgaps the decider set on `service` and has not lifted yet (a throttle, an open
/// circuit, blocked sources), by action, in the order they were set: a trial must not start
/// behind one an earlier trial left (blocked sources would hide the next attack).
pub fn stopgaps_in_force<'a>(
    seen: impl IntoIterator<Item = &'a Envelope>,
    service: &str,
) -> Vec<ActionKind> {
    let mut in_force: Vec<ActionKind> = Vec::new();
    for envelope in seen {
        let Event::ActionRequest(r) = &envelope.body else {
            continue;
        };
        if r.service.as_str() != service {
            continue;
        }
        let Some(set) = r.stopgap() else {
            continue;
        };
        in_force.retain(|a| *a != r.action);
        if set {
            in_force.push(r.action);
        }
    }
    in_force
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use immune_nats::{
        ActionKind, ActionRequest, ActionResult, Anomaly, ChaosInjected, ChaosReverted,
        ContainerEvent, ContainerEventKind, EventId, Incident, Producer, ServiceName, Signature,
    };

    use super::*;

    const RUN: &str = "run-1";

    fn svc(name: &str) -> ServiceName {
        ServiceName::new(name).expect("name")
    }

    fn at(ms: u64, stage: Stage, run: Option<&str>, body: Event) -> Envelope {
        Envelope {
            schema_version: 1,
            event_id: EventId::new(),
            timestamp_ms: ms,
            producer: Producer {
                stage,
                instance: "test".into(),
            },
            correlation_id: run.map(str::to_string),
            body,
        }
    }

    fn injected(ms: u64) -> Envelope {
        at(
            ms,
            Stage::Chaos,
            Some(RUN),
            Event::ChaosInjected(ChaosInjected {
                run_id: RUN.into(),
                service: svc("payments"),
                instance: "payments-1".into(),
                container_id: "c1".into(),
                fault: FaultKind::Crash,
                params: BTreeMap::new(),
                injected_ms: ms,
                revert_at_ms: ms + 30_000,
            }),
        )
    }

    fn died(ms: u64) -> Envelope {
        at(
            ms,
            Stage::Collector,
            None,
            Event::ContainerEvent(ContainerEvent {
                service: svc("payments"),
                instance: "payments-1".into(),
                container_id: "c1".into(),
                kind: ContainerEventKind::Died,
                exit_code: Some(1),
                observed_ms: ms,
            }),
        )
    }

    fn firing(ms: u64) -> Envelope {
        at(
            ms,
            Stage::Detector,
            Some(RUN),
            Event::Anomaly(Anomaly {
                anomaly_id: "a1".into(),
                service: svc("payments"),
                instance: "payments-1".into(),
                container_id: "c1".into(),
                state: AnomalyState::Firing,
                signature: Signature::Crashed,
                detector: "rule:died".into(),
                score: 1.0,
                threshold: 0.5,
                contributions: vec![],
                reason: "died".into(),
                started_ms: ms,
                depends_on: vec![],
            }),
        )
    }

    fn request(ms: u64, id: &str, service: &str, action: ActionKind) -> Envelope {
        at(
            ms,
            Stage::Decider,
            Some(RUN),
            Event::ActionRequest(ActionRequest {
                action_id: id.into(),
                incident_id: "i1".into(),
                service: svc(service),
                instance: format!("{service}-1"),
                container_id: "c1".into(),
                action,
                params: BTreeMap::new(),
                timeout_ms: 30_000,
                reason: "test".into(),
            }),
        )
    }

    fn result(finished: u64, took: u64, id: &str, outcome: ActionOutcome) -> Envelope {
        at(
            finished,
            Stage::Executor,
            Some(RUN),
            Event::ActionResult(ActionResult {
                action_id: id.into(),
                incident_id: "i1".into(),
                service: svc("payments"),
                instance: "payments-1".into(),
                action: ActionKind::Restart,
                outcome,
                error: None,
                duration_ms: took,
                finished_ms: finished,
                replaced_by: None,
            }),
        )
    }

    fn incident(ms: u64, state: IncidentState) -> Envelope {
        at(
            ms,
            Stage::Decider,
            Some(RUN),
            Event::Incident(Incident {
                incident_id: "i1".into(),
                service: svc("payments"),
                state,
                signature: Signature::Crashed,
                chaos_run: Some(RUN.into()),
                opened_ms: ms,
                timeline: vec![],
            }),
        )
    }

    fn reverted(ms: u64) -> Envelope {
        at(
            ms,
            Stage::Chaos,
            Some(RUN),
            Event::ChaosReverted(ChaosReverted {
                run_id: RUN.into(),
                service: svc("payments"),
                instance: "payments-1".into(),
                fault: FaultKind::Crash,
                note: "already healed".into(),
                reverted_ms: ms,
            }),
        )
    }

    fn probes(points: &[(u64, bool)]) -> Vec<Probe> {
        points
            .iter()
            .map(|&(sent_ms, ok)| Probe {
                sent_ms,
                answered_ms: sent_ms + 5,
                ok,
            })
            .collect()
    }

    #[test]
    fn a_crash_healed_by_one_restart() {
        let seen = vec![
            injected(1_000),
            died(1_050),
            firing(1_100),
            request(1_150, "x1", "payments", ActionKind::Restart),
            result(1_700, 500, "x1", ActionOutcome::Succeeded),
            incident(2_300, IncidentState::Recovered),
            reverted(31_000),
        ];
        let probes = probes(&[(900, true), (1_100, false), (1_600, false), (1_800, true)]);
        let trial = measure(RUN, &seen, &probes).expect("trial");
        assert_eq!(trial.detected_ms, Some(100));
        assert_eq!(trial.first_action_ms, Some(150));
        // Healthy at 1_805, the incident recovered at 2_300: the container's health counts.
        assert_eq!(trial.healed_ms, Some(805));
        assert_eq!(trial.healthy_ms, Some(805));
        assert_eq!(trial.recovered_ms, Some(1_300));
        assert_eq!(trial.healed_by, HealedBy::Immune);
        assert_eq!(trial.actions, vec!["restart".to_string()]);
        assert_eq!(trial.first_action_right, Some(true));
        assert_eq!(trial.collateral_actions, 0);
        let latency = trial.latency.expect("latency");
        assert_eq!(
            (latency.detector_ms, latency.decider_ms, latency.executor_ms),
            (50.0, 50.0, 50.0)
        );
        assert_eq!(latency.end_to_end_ms(), 150.0);
    }

    #[test]
    fn a_probe_held_while_the_container_was_gone_counts_when_it_is_answered() {
        let seen = vec![
            injected(1_000),
            died(1_050),
            firing(1_200),
            request(1_210, "x1", "payments", ActionKind::Restart),
            result(1_700, 400, "x1", ActionOutcome::Succeeded),
            incident(2_300, IncidentState::Recovered),
        ];
        // Sent at 1_180 and 1_280 to the address of the dead container; both pass once the
        // restarted one answers, at 1_760.
        let probes = vec![
            Probe {
                sent_ms: 1_080,
                answered_ms: 1_081,
                ok: false,
            },
            Probe {
                sent_ms: 1_180,
                answered_ms: 1_760,
                ok: true,
            },
            Probe {
                sent_ms: 1_280,
                answered_ms: 1_760,
                ok: true,
            },
            Probe {
                sent_ms: 1_780,
                answered_ms: 1_782,
                ok: true,
            },
        ];
        let trial = measure(RUN, &seen, &probes).expect("trial");
        assert_eq!(trial.detected_ms, Some(200));
        assert_eq!(trial.healthy_ms, Some(760));
        assert_eq!(trial.healed_ms, Some(760));
    }

    #[test]
    fn a_second_action_means_the_first_was_wrong() {
        let seen = vec![
            injected(0),
            firing(500),
            request(600, "x1", "payments", ActionKind::Throttle),
            result(700, 50, "x1", ActionOutcome::Succeeded),
            request(20_000, "x2", "payments", ActionKind::ScaleOut),
            request(20_100, "y1", "orders", ActionKind::Restart),
            result(21_000, 900, "x2", ActionOutcome::Succeeded),
            incident(25_000, IncidentState::Recovered),
        ];
        let trial = measure(RUN, &seen, &probes(&[(100, true), (30_000, true)])).expect("trial");
        assert_eq!(trial.actions, vec!["throttle", "scale_out"]);
        assert_eq!(trial.first_action_right, Some(false));
        assert_eq!(trial.collateral_actions, 1);
        // /health never failed: healthy again when the incident recovered.
        assert_eq!(trial.healed_ms, Some(25_000));
        assert_eq!(trial.healthy_ms, None);
    }

    #[test]
    fn the_undoing_of_a_stopgap_that_did_not_help_is_no_step() {
        let mut undo = request(16_000, "x2", "payments", ActionKind::Throttle);
        if let Event::ActionRequest(r) = &mut undo.body {
            r.params.insert("rps".into(), "0".into());
        }
        let seen = vec![
            injected(0),
            firing(500),
            request(600, "x1", "payments", ActionKind::Throttle),
            result(700, 50, "x1", ActionOutcome::Succeeded),
            undo,
            request(16_000, "x3", "payments", ActionKind::Restart),
            result(16_600, 500, "x3", ActionOutcome::Succeeded),
            incident(20_000, IncidentState::Recovered),
        ];
        let trial = measure(RUN, &seen, &probes(&[(100, true), (30_000, true)])).expect("trial");
        assert_eq!(trial.actions, vec!["throttle", "restart"]);
        assert_eq!(trial.collateral_actions, 0);
    }

    #[test]
    fn undetected_fault_ends_with_its_revert() {
        let seen = vec![injected(0), reverted(30_000)];
        let trial = measure(RUN, &seen, &probes(&[(100, true), (31_000, true)])).expect("trial");
        assert_eq!(trial.detected_ms, None);
        assert_eq!(trial.first_action_right, None);
        assert_eq!(trial.healed_ms, Some(30_000));
        assert_eq!(trial.healed_by, HealedBy::Revert);
    }

    #[test]
    fn still_failing_is_never_healed() {
        let seen = vec![injected(0), firing(2_000)];
        let trial = measure(RUN, &seen, &probes(&[(100, false), (5_000, false)])).expect("trial");
        assert_eq!(trial.healed_ms, None);
        assert_eq!(trial.healed_by, HealedBy::Never);
        assert!(measure("other-run", &seen, &[]).is_none());
    }

    #[test]
    fn an_anomaly_is_open_until_cleared_and_only_on_running_instances() {
        let anomaly = |id: &str, instance: &str, state: AnomalyState| {
            let mut a = immune_nats::samples::anomaly();
            a.anomaly_id = id.into();
            a.service = svc("payments");
            a.instance = instance.into();
            a.state = state;
            at(1, Stage::Detector, None, Event::Anomaly(a))
        };
        let running = vec!["payments-1".to_string()];
        let seen = vec![
            anomaly("a", "payments-1", AnomalyState::Firing),
            anomaly("b", "payments-1", AnomalyState::Firing),
            anomaly("gone", "payments-1-replica", AnomalyState::Firing),
            anomaly("a", "payments-1", AnomalyState::Cleared),
        ];
        assert_eq!(open_anomalies(&seen, "payments", &running), vec!["b"]);
        assert!(open_anomalies(&seen, "orders", &running).is_empty());
        assert!(open_anomalies(&seen[..1], "payments", &[]).is_empty());
    }

    #[test]
    fn an_incident_is_open_until_it_recovers_escalates_or_closes() {
        let incident = |id: &str, service: &str, state: IncidentState| {
            let mut e = incident(1, state);
            if let Event::Incident(i) = &mut e.body {
                i.incident_id = id.into();
                i.service = svc(service);
            }
            e
        };
        let seen = vec![
            incident("1", "payments", IncidentState::Opened),
            incident("2", "gateway", IncidentState::Opened),
            incident("3", "orders", IncidentState::Opened),
            incident("1", "payments", IncidentState::Recovered),
            incident("2", "gateway", IncidentState::Acting),
            incident("3", "orders", IncidentState::Escalated),
        ];
        assert_eq!(open_incidents(&seen), vec!["gateway"]);
        assert_eq!(open_incidents(&seen[..1]), vec!["payments"]);
        assert!(open_incidents(&seen[..0]).is_empty());
    }

    #[test]
    fn a_stopgap_is_in_force_until_the_decider_lifts_it() {
        let with = |ms: u64, action: ActionKind, params: &[(&str, &str)]| {
            let mut e = request(ms, &format!("a{ms}"), "payments", action);
            if let Event::ActionRequest(r) = &mut e.body {
                r.params = params
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
            }
            e
        };
        let seen = vec![
            with(1, ActionKind::BlockSources, &[("state", "on")]),
            with(2, ActionKind::Throttle, &[("rps", "24")]),
            with(3, ActionKind::Restart, &[]),
            with(4, ActionKind::Throttle, &[("rps", "0")]),
            request(5, "other", "orders", ActionKind::CircuitBreaker),
        ];
        assert_eq!(
            stopgaps_in_force(&seen, "payments"),
            vec![ActionKind::BlockSources]
        );
        assert_eq!(
            stopgaps_in_force(&seen[..2], "payments"),
            vec![ActionKind::BlockSources, ActionKind::Throttle]
        );
        let lifted = [
            seen.clone(),
            vec![with(6, ActionKind::BlockSources, &[("state", "off")])],
        ]
        .concat();
        assert!(stopgaps_in_force(&lifted, "payments").is_empty());
    }
}
