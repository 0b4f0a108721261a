//! The decision rules, one by one, without NATS.

use super::*;
use immune_nats::{samples, ActionOutcome, IncidentState};

use crate::learning::LearningConfig;
use crate::safety::{Budget, KILL_SWITCH_KEY, MAINTENANCE_PREFIX};

fn svc(name: &str) -> ServiceName {
    ServiceName::new(name).expect("valid name")
}

thread_local! {
    /// The id of the anomaly last made to fire on each service, which [`cleared_on`] clears.
    static LAST_FIRED: std::cell::RefCell<HashMap<String, String>> = Default::default();
}

/// A new anomaly (its own id) firing on `service`.
fn firing_on(service: &str, signature: Signature, depends_on: &[&str]) -> Anomaly {
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

fn firing(signature: Signature) -> Anomaly {
    firing_on("orders", signature, &[])
}

/// The clearing of the anomaly last made to fire on `service`.
fn cleared_on(service: &str) -> Anomaly {
    let last = LAST_FIRED.with(|l| l.borrow().get(service).cloned());
    Anomaly {
        anomaly_id: last.expect("an anomaly fired on the service before"),
        state: AnomalyState::Cleared,
        ..firing_on(service, Signature::Crashed, &[])
    }
}

/// `a`, cleared.
fn cleared(a: &Anomaly) -> Anomaly {
    Anomaly {
        state: AnomalyState::Cleared,
        ..a.clone()
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

fn audit_text(out: &[Decided], wanted: &str) -> Vec<String> {
    out.iter()
        .filter_map(|d| match &d.decision {
            Decision::Audit {
                what, why, outcome, ..
            } if *what == wanted => Some(format!("{why} | {outcome}")),
            _ => None,
        })
        .collect()
}

fn escalations(out: &[Decided]) -> Vec<Escalation> {
    out.iter()
        .filter_map(|d| match &d.decision {
            Decision::Escalation(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn result_of(action: &ActionRequest, outcome: ActionOutcome) -> ActionResult {
    ActionResult {
        action_id: action.action_id.clone(),
        service: action.service.clone(),
        action: action.action,
        outcome,
        ..samples::action_result()
    }
}

fn fire(d: &mut Decider, a: &Anomaly, now: u64) -> Vec<Decided> {
    d.decide(
        Input::Anomaly {
            anomaly: a,
            correlation_id: None,
        },
        now,
    )
}

fn playbook(text: &str) -> Playbook {
    Playbook::parse(text).expect("test playbook")
}

/// A policy without learning, exploration or root-cause waits, unless a test wants them.
fn config() -> PolicyConfig {
    PolicyConfig {
        learning: LearningConfig {
            enabled: false,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn decider(config: PolicyConfig) -> Decider {
    Decider::new(config, Playbook::default())
}

#[test]
fn firing_opens_an_incident_and_restarts_then_clearing_recovers_it() {
    let mut d = decider(config());
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
    assert_eq!(acts[0].params["stop_grace_s"], "1");
    assert!(out.iter().all(|d| d.correlation_id == "run-1"));
    assert_eq!(audits(&out), ["incident.opened", "action.requested"]);
    let why = &audit_text(&out, "action.requested")[0];
    assert!(why.contains("candidates [restart risk 2"), "{why}");

    let out = d.decide(
        Input::Result(&result_of(&acts[0], ActionOutcome::Succeeded)),
        1_600,
    );
    assert_eq!(audits(&out), ["verification.started"]);
    let out = fire(&mut d, &cleared_on("orders"), 2_000);
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
fn an_anomaly_on_another_replica_neither_redirects_nor_recovers_the_incident() {
    let mut d = decider(config());
    let primary = firing(Signature::Unresponsive);
    let replica = Anomaly {
        instance: "orders-2".into(),
        container_id: "container-orders-2".into(),
        ..firing(Signature::LatencyUp)
    };
    let restart = actions(&fire(&mut d, &primary, 1_000))
        .pop()
        .expect("restart");
    assert_eq!(restart.container_id, primary.container_id);
    assert!(actions(&fire(&mut d, &replica, 1_100)).is_empty());
    let out = d.decide(
        Input::Result(&result_of(&restart, ActionOutcome::Succeeded)),
        1_500,
    );
    assert_eq!(audits(&out), ["verification.started"]);

    // The replica's clearing does not recover the primary's incident ...
    let out = fire(&mut d, &cleared(&replica), 1_600);
    assert!(audits(&out).is_empty(), "{out:?}");
    assert_eq!(d.open_incidents().count(), 1);
    // ... its own does.
    let out = fire(&mut d, &cleared(&primary), 2_000);
    assert_eq!(audits(&out), ["incident.recovered"]);
    assert_eq!(d.open_incidents().count(), 0);

    // A replica still firing when the primary recovers opens the next incident, which acts
    // on the replica once the root-cause wait (and the service's restart cooldown) is over.
    let primary = firing(Signature::Unresponsive);
    let replica = Anomaly {
        instance: "orders-2".into(),
        container_id: "container-orders-2".into(),
        ..firing(Signature::Unresponsive)
    };
    let restart = actions(&fire(&mut d, &primary, 1_000_000))
        .pop()
        .expect("restart, the cooldown over");
    fire(&mut d, &replica, 1_000_100);
    d.decide(
        Input::Result(&result_of(&restart, ActionOutcome::Succeeded)),
        1_000_500,
    );
    let out = fire(&mut d, &cleared(&primary), 1_001_000);
    assert_eq!(
        audits(&out),
        ["incident.recovered", "incident.opened", "action.blocked"]
    );
    let out = d.decide(Input::Tick, 1_000_000 + d.config.cooldown_ms + 1);
    let acts = actions(&out);
    assert_eq!(acts.len(), 1, "{out:?}");
    assert_eq!(acts[0].container_id, replica.container_id);
}

#[test]
fn a_new_anomaly_from_the_same_detector_and_container_takes_the_place_of_the_first() {
    // A detector killed between publishing a firing and storing it fires the episode again,
    // under another id, and clears only that one.
    let mut d = decider(config());
    let first = Anomaly {
        detector: "pca".into(),
        started_ms: 1_000,
        ..firing(Signature::LatencyUp)
    };
    let restart = actions(&fire(&mut d, &first, 1_000))
        .pop()
        .expect("restart");
    let again = Anomaly {
        detector: "pca".into(),
        started_ms: 1_200,
        ..firing(Signature::LatencyUp)
    };
    assert!(actions(&fire(&mut d, &again, 1_200)).is_empty());
    // The first one delivered again, late, does not take its place back.
    assert!(actions(&fire(&mut d, &first, 1_300)).is_empty());
    d.decide(
        Input::Result(&result_of(&restart, ActionOutcome::Succeeded)),
        1_500,
    );
    let out = fire(&mut d, &cleared(&again), 2_000);
    assert_eq!(audits(&out), ["incident.recovered"]);
    assert_eq!(d.open_incidents().count(), 0);
}

#[test]
fn a_step_carries_its_playbook_params_and_timeout() {
    let mut d = Decider::new(
        config(),
        playbook(
            "[[errors_up]]\naction = \"circuit_breaker\"\nrisk = 1\ntimeout_ms = 5000\nparams = { state = \"open\" }",
        ),
    );
    let acts = actions(&fire(&mut d, &firing(Signature::ErrorsUp), 0));
    assert_eq!(acts[0].action, ActionKind::CircuitBreaker);
    assert_eq!(acts[0].params["state"], "open");
    assert_eq!(acts[0].timeout_ms, 5_000);
}

#[test]
fn a_repeat_within_the_cooldown_waits_and_is_not_dropped() {
    let mut d = decider(PolicyConfig {
        cooldown_ms: 5_000,
        ..config()
    });
    let a = firing(Signature::Crashed);
    let first = actions(&fire(&mut d, &a, 0));
    d.decide(
        Input::Result(&result_of(&first[0], ActionOutcome::Succeeded)),
        100,
    );
    fire(&mut d, &cleared_on("orders"), 200);
    // it crashes again at once: the restart must wait for the cooldown
    let out = fire(&mut d, &firing(Signature::Crashed), 1_000);
    assert!(actions(&out).is_empty());
    assert!(audit_text(&out, "action.blocked")[0].contains("cooling down"));
    let out = d.decide(Input::Tick, 4_999);
    assert!(actions(&out).is_empty());
    assert!(
        audits(&out).is_empty(),
        "a block is audited once, not every tick"
    );
    let out = d.decide(Input::Tick, 5_000);
    assert_eq!(actions(&out).len(), 1, "issued once the cooldown is over");
}

#[test]
fn a_failed_verification_walks_the_playbook_then_escalates_with_the_whole_story() {
    let mut d = decider(PolicyConfig {
        verify_deadline_ms: 1_000,
        cooldown_ms: 0,
        ..config()
    });
    d.decide(
        Input::ChaosInjected {
            service: &svc("orders"),
            run_id: "run-7",
        },
        0,
    );
    let a = firing(Signature::Unresponsive);
    let first = actions(&fire(&mut d, &a, 0));
    d.decide(
        Input::Result(&result_of(&first[0], ActionOutcome::Succeeded)),
        10,
    );
    assert!(actions(&d.decide(Input::Tick, 500)).is_empty());
    let out = d.decide(Input::Tick, 1_010);
    assert_eq!(audits(&out)[0], "verification.failed");
    let second = actions(&out);
    assert_eq!(second[0].action, ActionKind::Recreate);
    let mut failed = result_of(&second[0], ActionOutcome::Failed);
    failed.error = Some("no such image".into());
    let out = d.decide(Input::Result(&failed), 1_100);
    assert!(audits(&out).contains(&"incident.escalated"));
    let story = escalations(&out).pop().expect("an escalation event");
    assert_eq!(story.chaos_run.as_deref(), Some("run-7"));
    assert_eq!(story.reason, "all 2 playbook steps tried");
    let tried: Vec<_> = story
        .actions
        .iter()
        .map(|t| (t.action, t.outcome.as_str()))
        .collect();
    assert_eq!(
        tried,
        [
            (ActionKind::Restart, "not_verified"),
            (ActionKind::Recreate, "failed")
        ]
    );
    assert_eq!(story.actions[1].detail, "no such image");
    assert!(!story.signals.is_empty());
    assert!(story.timeline.len() >= 4, "{:?}", story.timeline);
    assert_eq!(d.open_incidents().count(), 0);
}

#[test]
fn a_signature_without_playbook_goes_straight_to_a_human() {
    let mut d = Decider::new(
        config(),
        playbook("[[crashed]]\naction = \"restart\"\nrisk = 1"),
    );
    let out = fire(&mut d, &firing(Signature::TrafficDrop), 0);
    assert!(actions(&out).is_empty());
    assert_eq!(escalations(&out)[0].reason, "no playbook for traffic_drop");
}

#[test]
fn a_stale_result_is_ignored() {
    let mut d = decider(config());
    fire(&mut d, &firing(Signature::Crashed), 0);
    let stale = ActionResult {
        action_id: "someone-else".into(),
        ..samples::action_result()
    };
    assert!(d.decide(Input::Result(&stale), 10).is_empty());
}

#[test]
fn an_action_without_result_counts_as_failed_after_its_timeout() {
    let mut d = decider(PolicyConfig {
        action_timeout_ms: 1_000,
        cooldown_ms: 0,
        ..config()
    });
    fire(&mut d, &firing(Signature::Crashed), 0);
    assert!(actions(&d.decide(Input::Tick, 5_999)).is_empty());
    let out = d.decide(Input::Tick, 6_000);
    assert_eq!(audits(&out)[0], "action.timed_out");
    assert_eq!(actions(&out)[0].action, ActionKind::Recreate);
}

#[test]
fn the_incident_knows_about_the_chaos_run() {
    let mut d = decider(config());
    d.decide(
        Input::ChaosInjected {
            service: &svc("orders"),
            run_id: "run-9",
        },
        0,
    );
    let out = fire(&mut d, &firing(Signature::Crashed), 1);
    let opened = out.iter().find_map(|d| match &d.decision {
        Decision::Incident(i) => Some(i.clone()),
        _ => None,
    });
    assert_eq!(
        opened.expect("incident").chaos_run.as_deref(),
        Some("run-9")
    );
    assert!(audit_text(&out, "incident.opened")[0].contains("injected by chaos run run-9"));
}

// --- safety ---

#[test]
fn the_kill_switch_holds_every_action_until_it_is_off() {
    let mut d = decider(config());
    let out = d.decide(
        Input::Control {
            key: KILL_SWITCH_KEY,
            value: Some("on"),
        },
        0,
    );
    assert_eq!(audits(&out), ["control.changed"]);
    let out = fire(&mut d, &firing(Signature::Crashed), 10);
    assert!(actions(&out).is_empty());
    assert!(audit_text(&out, "action.blocked")[0].contains("kill switch"));
    assert!(actions(&d.decide(Input::Tick, 1_000)).is_empty());
    let out = d.decide(
        Input::Control {
            key: KILL_SWITCH_KEY,
            value: Some("off"),
        },
        2_000,
    );
    assert_eq!(actions(&out).len(), 1, "released as soon as it is off");
}

#[test]
fn a_bad_control_value_is_refused_and_audited() {
    let mut d = decider(config());
    let out = d.decide(
        Input::Control {
            key: KILL_SWITCH_KEY,
            value: Some("yes please"),
        },
        0,
    );
    assert_eq!(audits(&out), ["control.rejected"]);
    assert_eq!(
        actions(&fire(&mut d, &firing(Signature::Crashed), 1)).len(),
        1
    );
}

#[test]
fn a_maintenance_window_holds_actions_on_its_service_only() {
    let mut d = decider(config());
    let key = format!("{MAINTENANCE_PREFIX}orders");
    d.decide(
        Input::Control {
            key: &key,
            value: Some("0..10000"),
        },
        0,
    );
    let out = fire(&mut d, &firing(Signature::Crashed), 100);
    assert!(audit_text(&out, "action.blocked")[0].contains("maintenance window"));
    let other = firing_on("payments", Signature::Crashed, &[]);
    assert_eq!(actions(&fire(&mut d, &other, 100)).len(), 1);
    assert!(actions(&d.decide(Input::Tick, 9_999)).is_empty());
    let out = d.decide(Input::Tick, 10_000);
    assert_eq!(actions(&out)[0].service, svc("orders"));
}

#[test]
fn never_two_actions_on_one_container_at_once() {
    let mut d = decider(config());
    let first = actions(&fire(&mut d, &firing(Signature::Crashed), 0));
    // another service's incident pointing at the same container (a shared sidecar)
    let mut other = firing_on("payments", Signature::Crashed, &[]);
    other.container_id = first[0].container_id.clone();
    let out = fire(&mut d, &other, 10);
    assert!(actions(&out).is_empty());
    assert!(audit_text(&out, "action.blocked")[0].contains("still running on container"));
    let out = d.decide(
        Input::Result(&result_of(&first[0], ActionOutcome::Succeeded)),
        500,
    );
    assert!(actions(&out).is_empty(), "released on the next tick");
    assert_eq!(actions(&d.decide(Input::Tick, 600)).len(), 1);
}

#[test]
fn the_blast_radius_caps_services_acted_on_at_once() {
    let mut d = decider(PolicyConfig {
        max_services_acting: 2,
        ..config()
    });
    let mut issued = Vec::new();
    for s in ["a", "b", "c"] {
        let out = fire(&mut d, &firing_on(s, Signature::Crashed, &[]), 0);
        issued.extend(actions(&out));
        if s == "c" {
            let blocked = audit_text(&out, "action.blocked");
            assert!(
                blocked[0].contains("cap 2"),
                "{:?} {blocked:?}",
                audits(&out)
            );
        }
    }
    assert_eq!(issued.len(), 2);
    d.decide(
        Input::Result(&result_of(&issued[0], ActionOutcome::Succeeded)),
        100,
    );
    assert!(
        actions(&d.decide(Input::Tick, 200)).is_empty(),
        "a is verifying: still acted on"
    );
    let out = fire(&mut d, &cleared_on("a"), 300);
    assert_eq!(actions(&out)[0].service, svc("c"), "released as a recovers");
}

#[test]
fn a_service_budget_stops_a_flapping_service() {
    let mut d = decider(PolicyConfig {
        cooldown_ms: 0,
        service_budget: Budget {
            burst: 2,
            per_minute: 1.0,
        },
        ..config()
    });
    let mut now = 0;
    let mut issued = 0;
    for _ in 0..4 {
        let out = fire(&mut d, &firing(Signature::Crashed), now);
        for a in actions(&out) {
            issued += 1;
            d.decide(
                Input::Result(&result_of(&a, ActionOutcome::Succeeded)),
                now + 1,
            );
        }
        if issued == 2 && actions(&out).is_empty() {
            assert!(audit_text(&out, "action.blocked")[0].contains("spent its budget"));
        }
        fire(&mut d, &cleared_on("orders"), now + 2);
        now += 1_000;
    }
    assert_eq!(issued, 2, "burst of 2, then one a minute");
}

#[test]
fn an_action_storm_of_many_simultaneous_incidents_stays_within_the_global_budget() {
    let mut d = decider(PolicyConfig {
        max_services_acting: 100,
        global_budget: Budget {
            burst: 10,
            per_minute: 30.0,
        },
        ..config()
    });
    let mut out = Vec::new();
    for i in 0..60 {
        out.extend(fire(
            &mut d,
            &firing_on(&format!("svc{i:02}"), Signature::Crashed, &[]),
            0,
        ));
    }
    assert_eq!(actions(&out).len(), 10, "only the burst goes out");
    let blocked = audit_text(&out, "action.blocked");
    assert_eq!(blocked.len(), 50, "every held one says why");
    assert!(blocked.iter().all(|b| b.contains("global budget")));
    // a minute of ticks: 30 more at most (one every 2 s)
    let mut later = 0;
    for t in (200..=60_000).step_by(200) {
        later += actions(&d.decide(Input::Tick, t)).len();
    }
    assert_eq!(later, 30);
}

#[test]
fn dry_run_records_what_it_would_do_and_sends_nothing() {
    let mut d = decider(PolicyConfig {
        dry_run: true,
        verify_deadline_ms: 1_000,
        cooldown_ms: 0,
        ..config()
    });
    let out = fire(&mut d, &firing(Signature::Crashed), 0);
    assert!(actions(&out).is_empty());
    assert!(audit_text(&out, "action.advised")[0].contains("dry run: restart"));
    let out = d.decide(Input::Tick, 1_000);
    assert!(actions(&out).is_empty());
    assert!(audit_text(&out, "action.advised")[0].contains("recreate"));
}

#[test]
fn a_risky_step_waits_for_approval() {
    let book = "[[errors_up]]\naction = \"restart\"\nrisk = 2\n[[errors_up]]\naction = \"rollback\"\nrisk = 4";
    let mut d = Decider::new(
        PolicyConfig {
            verify_deadline_ms: 1_000,
            cooldown_ms: 0,
            ..config()
        },
        playbook(book),
    );
    let first = actions(&fire(&mut d, &firing(Signature::ErrorsUp), 0));
    let out = d.decide(
        Input::Result(&result_of(&first[0], ActionOutcome::Failed)),
        10,
    );
    assert!(actions(&out).is_empty());
    let held = audit_text(&out, "action.held");
    assert!(
        held[0].contains("risk 4 above the approval risk 3"),
        "{held:?}"
    );
    let action_id = held[0]
        .split("approve action_id ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .expect("the held action id")
        .to_string();
    let incident_id = first[0].incident_id.clone();
    let approval = |id: &str, approved: bool| Approval {
        service: svc("orders"),
        incident_id: incident_id.clone(),
        action_id: id.to_string(),
        approved,
        by: "oncall".into(),
    };
    assert!(d
        .decide(Input::Approval(&approval("other", true)), 20)
        .is_empty());
    let out = d.decide(Input::Approval(&approval(&action_id, true)), 30);
    let acts = actions(&out);
    assert_eq!(acts[0].action, ActionKind::Rollback);
    assert_eq!(acts[0].action_id, action_id);

    // denied: the step is skipped, here to the human
    let mut d = Decider::new(
        config(),
        playbook("[[errors_up]]\naction = \"rollback\"\nrisk = 5"),
    );
    let out = fire(&mut d, &firing(Signature::ErrorsUp), 0);
    let held = audit_text(&out, "action.held")[0].clone();
    let id = held
        .split("approve action_id ")
        .nth(1)
        .expect("as set up")
        .split(' ')
        .next()
        .expect("as set up")
        .to_string();
    let out = d.decide(Input::Approval(&approval(&id, false)), 10);
    let story = escalations(&out).pop().expect("escalated");
    assert_eq!(story.actions[0].outcome, "denied");
}

// --- learning ---

/// One injected fault healed by the decider, the executor and the service simulated: the
/// action succeeds after 1 s; only `works` brings the service back (2 s later); anything
/// else leaves it anomalous until the verification deadline. Returns time to recover.
fn heal_once(d: &mut Decider, start: u64, works: ActionKind) -> (u64, ActionKind) {
    let a = firing(Signature::Unresponsive);
    let mut out = fire(d, &a, start);
    let mut now = start;
    let mut first = None;
    loop {
        let Some(action) = actions(&out).pop() else {
            now += 200;
            assert!(now < start + 600_000, "never recovered");
            out = d.decide(Input::Tick, now);
            continue;
        };
        first.get_or_insert(action.action);
        now += 1_000;
        d.decide(
            Input::Result(&result_of(&action, ActionOutcome::Succeeded)),
            now,
        );
        if action.action == works {
            now += 2_000;
            let out = fire(d, &cleared_on("orders"), now);
            assert!(audits(&out).contains(&"incident.recovered"));
            return (now - start, first.expect("acted"));
        }
        out = Vec::new();
    }
}

#[test]
fn the_decider_learns_to_skip_a_first_step_that_never_works() {
    let mut d = decider(PolicyConfig {
        verify_deadline_ms: 10_000,
        cooldown_ms: 0,
        learning: LearningConfig::default(),
        ..Default::default()
    });
    let mut times = Vec::new();
    let mut firsts = Vec::new();
    for i in 0..20 {
        let (took, first) = heal_once(&mut d, i * 1_000_000, ActionKind::Recreate);
        times.push(took);
        firsts.push(first);
    }
    assert_eq!(
        firsts[0],
        ActionKind::Restart,
        "the playbook order at first"
    );
    assert!(
        times[0] >= 13_000,
        "restart, 10 s verification, recreate: {times:?}"
    );
    let late = &firsts[10..];
    assert!(
        late.iter().filter(|&&a| a == ActionKind::Recreate).count() >= 9,
        "learned to go straight to recreate: {firsts:?}"
    );
    eprintln!("first steps: {firsts:?}\ntimes to recover (ms): {times:?}");
    let early_mean = times[..2].iter().sum::<u64>() / 2;
    let late_mean = times[10..].iter().sum::<u64>() / 10;
    assert!(
        late_mean * 2 < early_mean,
        "time to recover {early_mean} -> {late_mean} ms"
    );
    assert!(d.value(Signature::Unresponsive, ActionKind::Restart) < 0.0);
    assert!(d.value(Signature::Unresponsive, ActionKind::Recreate) > 0.0);
}

#[test]
fn learned_values_are_emitted_for_persistence_and_restored() {
    let mut d = decider(PolicyConfig {
        learning: LearningConfig {
            epsilon: 0.0,
            ..Default::default()
        },
        ..Default::default()
    });
    let a = actions(&fire(&mut d, &firing(Signature::Crashed), 0));
    let out = d.decide(Input::Result(&result_of(&a[0], ActionOutcome::Failed)), 10);
    let value = out.iter().find_map(|x| match x.decision {
        Decision::Value {
            signature,
            action,
            value,
        } => Some((signature, action, value)),
        _ => None,
    });
    let (signature, action, value) = value.expect("a value to persist");
    assert_eq!(
        (signature, action),
        (Signature::Crashed, ActionKind::Restart)
    );
    assert!(value < 0.0);

    let mut restarted = decider(PolicyConfig::default());
    restarted.restore_value(signature, action, value);
    let first = actions(&fire(&mut restarted, &firing(Signature::Crashed), 0));
    assert_eq!(
        first[0].action,
        ActionKind::Recreate,
        "resumes what it learned"
    );
}

// --- root cause ---

#[test]
fn the_deepest_anomalous_dependency_is_acted_on_first() {
    let mut d = decider(PolicyConfig {
        root_cause_wait_ms: 1_000,
        ..config()
    });
    // the symptoms arrive first, the culprit last
    let mut out = fire(
        &mut d,
        &firing_on("gateway", Signature::ErrorsUp, &["orders"]),
        0,
    );
    out.extend(fire(
        &mut d,
        &firing_on("orders", Signature::ErrorsUp, &["payments"]),
        100,
    ));
    assert!(
        actions(&out).is_empty(),
        "symptoms wait for their dependencies"
    );
    out = fire(&mut d, &firing_on("payments", Signature::Crashed, &[]), 300);
    let acts = actions(&out);
    assert_eq!(acts.len(), 1);
    assert_eq!(acts[0].service, svc("payments"));
    let mut later = Vec::new();
    for t in (400..=3_000).step_by(200) {
        later.extend(d.decide(Input::Tick, t));
    }
    assert!(actions(&later).is_empty(), "gateway and orders are held");
    let held = audit_text(&later, "action.blocked");
    assert!(
        held.iter()
            .any(|h| h.contains("gateway depends on payments")),
        "{held:?}"
    );
    assert!(
        held.iter()
            .any(|h| h.contains("orders depends on payments")),
        "{held:?}"
    );

    // payments recovers; orders stays anomalous past the settle time: now orders, and the
    // gateway still waits
    d.decide(
        Input::Result(&result_of(&acts[0], ActionOutcome::Succeeded)),
        3_100,
    );
    let out = fire(&mut d, &cleared_on("payments"), 3_200);
    assert!(actions(&out).is_empty(), "orders may recover with payments");
    assert!(actions(&d.decide(Input::Tick, 4_000)).is_empty());
    let out = d.decide(Input::Tick, 4_200);
    let acts = actions(&out);
    assert_eq!(acts.len(), 1, "{:?}", audits(&out));
    assert_eq!(acts[0].service, svc("orders"));
    // orders recovers and the gateway with it: the gateway is never touched
    d.decide(
        Input::Result(&result_of(&acts[0], ActionOutcome::Succeeded)),
        4_300,
    );
    let mut out = fire(&mut d, &cleared_on("orders"), 4_400);
    out.extend(d.decide(Input::Tick, 4_600));
    out.extend(fire(&mut d, &cleared_on("gateway"), 5_000));
    assert!(actions(&out).is_empty());
    assert_eq!(d.open_incidents().count(), 0);
}

/// errors_up on orders: the circuit is opened, the service recovers.
fn recovered_behind_an_open_circuit(d: &mut Decider) -> ActionRequest {
    let out = fire(d, &firing(Signature::ErrorsUp), 0);
    let open = actions(&out).pop().expect("the first step");
    assert_eq!(open.action, ActionKind::CircuitBreaker);
    assert_eq!(open.params.get("state").map(String::as_str), Some("open"));
    d.decide(
        Input::Result(&result_of(&open, ActionOutcome::Succeeded)),
        100,
    );
    let out = fire(d, &cleared_on("orders"), 1_000);
    assert!(audits(&out).contains(&"incident.recovered"), "{out:?}");
    open
}

#[test]
fn a_stopgap_is_lifted_after_recovery() {
    let mut d = decider(PolicyConfig {
        lift_mitigations_after_ms: 30_000,
        ..config()
    });
    let open = recovered_behind_an_open_circuit(&mut d);
    assert!(
        actions(&d.decide(Input::Tick, 30_000)).is_empty(),
        "not yet"
    );
    let out = d.decide(Input::Tick, 31_000);
    let lift = actions(&out).pop().expect("the circuit closed again");
    assert_eq!(lift.action, ActionKind::CircuitBreaker);
    assert_eq!(lift.params.get("state").map(String::as_str), Some("closed"));
    assert_eq!(lift.container_id, open.container_id);
    assert_ne!(lift.action_id, open.action_id);
    assert_eq!(audits(&out), vec!["mitigation.lifted"]);
    assert!(
        actions(&d.decide(Input::Tick, 90_000)).is_empty(),
        "lifted once"
    );
}

#[test]
fn a_stopgap_stays_while_the_service_is_anomalous_again() {
    let mut d = decider(PolicyConfig {
        lift_mitigations_after_ms: 30_000,
        ..config()
    });
    recovered_behind_an_open_circuit(&mut d);
    // errors again: a new incident; the cooldown holds the circuit step, nothing is lifted.
    fire(&mut d, &firing(Signature::ErrorsUp), 20_000);
    let out = d.decide(Input::Tick, 31_000);
    assert!(
        !actions(&out)
            .iter()
            .any(|a| a.params.get("state").map(String::as_str) == Some("closed")),
        "{out:?}"
    );
    assert!(audits(&out).contains(&"mitigation.kept"), "{out:?}");
}

#[test]
fn a_restart_is_not_a_stopgap() {
    let mut d = decider(PolicyConfig {
        lift_mitigations_after_ms: 1_000,
        ..config()
    });
    let out = fire(&mut d, &firing(Signature::Crashed), 0);
    let restart = actions(&out).pop().expect("restart");
    d.decide(
        Input::Result(&result_of(&restart, ActionOutcome::Succeeded)),
        100,
    );
    fire(&mut d, &cleared_on("orders"), 500);
    assert!(actions(&d.decide(Input::Tick, 10_000)).is_empty());
}

#[test]
fn a_crashed_container_is_restarted_at_once_whatever_its_dependencies_do() {
    let mut d = decider(PolicyConfig {
        root_cause_wait_ms: 2_000,
        ..config()
    });
    fire(&mut d, &firing_on("payments", Signature::LatencyUp, &[]), 0);
    let out = fire(
        &mut d,
        &firing_on("orders", Signature::Crashed, &["payments"]),
        10,
    );
    let restart = actions(&out)
        .into_iter()
        .find(|a| a.service.as_str() == "orders")
        .expect("orders restarted without the root-cause wait");
    assert_eq!(restart.action, ActionKind::Restart);
    // A degraded caller still waits for its dependency.
    let out = fire(
        &mut d,
        &firing_on("gateway", Signature::LatencyUp, &["orders"]),
        20,
    );
    assert!(actions(&out)
        .iter()
        .all(|a| a.service.as_str() != "gateway"));
}

/// A decider that starts from another's memory.
fn restarted_from(before: &Decider, config: PolicyConfig) -> Decider {
    let mut after = decider(config);
    for (key, bytes) in before.memory() {
        after.remember(&key, &bytes).expect("own memory reads back");
    }
    after
}

#[test]
fn a_restarted_decider_finishes_the_incident_and_asks_again_for_the_action_in_flight() {
    let mut before = decider(config());
    let crash = firing(Signature::Crashed);
    let out = before.decide(
        Input::Anomaly {
            anomaly: &crash,
            correlation_id: Some("run-1"),
        },
        1_000,
    );
    let requested = actions(&out);
    assert_eq!(requested.len(), 1);

    let mut after = restarted_from(&before, config());
    assert_eq!(after.open_incidents().count(), 1);
    let out = after.resume(1_500);
    assert_eq!(audits(&out), ["incident.resumed"]);
    assert_eq!(
        actions(&out),
        requested,
        "the same request, same action id: the executor's ledger makes it idempotent"
    );
    assert!(out.iter().all(|d| d.correlation_id == "run-1"));

    // One container, one action: the resumed request still holds the container.
    let slow = Anomaly {
        detector: "pca".into(),
        ..firing(Signature::LatencyUp)
    };
    let again = fire(&mut after, &slow, 1_600);
    assert!(actions(&again).is_empty(), "{again:?}");

    let out = after.decide(
        Input::Result(&result_of(&requested[0], ActionOutcome::Succeeded)),
        1_700,
    );
    assert_eq!(audits(&out), ["verification.started"]);
    let out = fire(&mut after, &cleared(&crash), 2_000);
    assert_eq!(
        audits(&out),
        ["incident.recovered", "incident.opened", "action.blocked"]
    );
    assert!(
        actions(&out).is_empty(),
        "the other anomaly of the repaired container gets time to clear with it"
    );
    let why = &audit_text(&out, "action.blocked")[0];
    assert!(why.contains("just recovered from another anomaly"), "{why}");
    let out = fire(&mut after, &cleared(&slow), 2_500);
    assert_eq!(audits(&out), ["incident.recovered"]);
    assert_eq!(after.open_incidents().count(), 0);
    assert!(
        !after.memory().keys().any(|k| k.starts_with(OPEN_PREFIX)),
        "a closed incident leaves no memory"
    );
}

#[test]
fn cooldowns_and_budgets_outlive_a_restart() {
    let config = PolicyConfig {
        cooldown_ms: 60_000,
        global_budget: Budget {
            burst: 1,
            per_minute: 0.001,
        },
        ..config()
    };
    let mut before = decider(config.clone());
    let out = fire(
        &mut before,
        &firing_on("orders", Signature::Crashed, &[]),
        1_000,
    );
    let a = &actions(&out)[0];
    before.decide(
        Input::Result(&result_of(a, ActionOutcome::Succeeded)),
        1_100,
    );
    fire(&mut before, &cleared_on("orders"), 1_200);

    let mut after = restarted_from(&before, config);
    let out = fire(
        &mut after,
        &firing_on("payments", Signature::Crashed, &[]),
        2_000,
    );
    assert!(
        actions(&out).is_empty(),
        "the spent global budget is remembered"
    );
    assert!(audit_text(&out, "action.blocked")[0].contains("budget"));
}

#[test]
fn unreadable_memory_is_refused_with_its_key() {
    let mut d = decider(config());
    let e = d.remember("open.orders", b"\xc1").expect_err("garbage");
    assert_eq!(e.key, "open.orders");
    assert!(d.remember("elsewhere", b"").is_err());
    let mut before = decider(config());
    fire(&mut before, &firing(Signature::Crashed), 1_000);
    let bytes = before
        .memory()
        .remove("open.orders")
        .expect("open incident");
    let e = d.remember("open.payments", &bytes).expect_err("wrong key");
    assert!(e.reason.contains("orders"), "{e}");
    assert_eq!(d.open_incidents().count(), 0);
}

#[test]
fn a_firing_delivered_again_after_it_cleared_is_old_news_even_after_a_restart() {
    let mut d = decider(config());
    let a = firing(Signature::Crashed);
    let acts = actions(&fire(&mut d, &a, 1_000));
    assert_eq!(acts.len(), 1);
    d.decide(
        Input::Result(&result_of(&acts[0], ActionOutcome::Succeeded)),
        1_300,
    );
    let cleared = Anomaly {
        state: AnomalyState::Cleared,
        ..a.clone()
    };
    let out = fire(&mut d, &cleared, 1_800);
    assert_eq!(audits(&out), ["incident.recovered"]);

    // Its acknowledgement was lost: the same firing comes again, past the cooldown.
    let again = fire(&mut d, &a, 30_000);
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(d.open_incidents().count(), 0);
    let mut after = restarted_from(&d, config());
    assert!(fire(&mut after, &a, 31_000).is_empty(), "remembered");

    // A new anomaly of the same service is a new fault.
    let new = Anomaly {
        anomaly_id: "another".into(),
        ..a.clone()
    };
    assert_eq!(actions(&fire(&mut after, &new, 32_000)).len(), 1);

    // Escalated: the firing delivered again does not start the playbook over.
    let mut d = decider(PolicyConfig {
        verify_deadline_ms: 1_000,
        ..config()
    });
    let stuck = firing(Signature::Crashed);
    let mut now = 0;
    let mut out = fire(&mut d, &stuck, now);
    while d.open_incidents().count() > 0 {
        for a in actions(&out) {
            d.decide(Input::Result(&result_of(&a, ActionOutcome::Succeeded)), now);
        }
        now += 500;
        out = d.decide(Input::Tick, now);
    }
    assert!(
        fire(&mut d, &stuck, now + 60_000).is_empty(),
        "escalated already"
    );

    // Remembered for SETTLED_KEEP_MS, not for ever.
    let mut d = decider(config());
    d.settle(&a.anomaly_id, 0);
    d.settle("later", SETTLED_KEEP_MS);
    assert!(!d.settled.contains_key(&a.anomaly_id));
    assert!(d.settled.contains_key("later"));
    // And at most SETTLED_MAX of them, the oldest forgotten first.
    let mut d = decider(config());
    for i in 0..=SETTLED_MAX as u64 {
        d.settle(&format!("a{i}"), i);
    }
    assert_eq!(d.settled.len(), SETTLED_MAX);
    assert!(!d.settled.contains_key("a0"));
    assert!(d.settled.contains_key("a1"));
}
