//! Stopgaps: lifted some time after recovery, kept while the service is anomalous again.

use immune_nats::{ActionKind, ActionOutcome, ActionRequest, Signature};

use super::fixtures::{actions, audits, cleared_on, config, decider, fire, firing, result_of};
use crate::policy::{Decider, Input, PolicyConfig};

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
fn a_kept_stopgap_is_lifted_once_the_service_is_well_again() {
    let mut d = decider(PolicyConfig {
        lift_mitigations_after_ms: 30_000,
        ..config()
    });
    recovered_behind_an_open_circuit(&mut d);
    // another fault, repaired by a restart (no stopgap of its own)
    let restart = actions(&fire(&mut d, &firing(Signature::Crashed), 20_000))
        .pop()
        .expect("restart");
    assert_eq!(restart.action, ActionKind::Restart);
    d.decide(
        Input::Result(&result_of(&restart, ActionOutcome::Succeeded)),
        21_000,
    );
    let out = d.decide(Input::Tick, 31_000);
    assert!(audits(&out).contains(&"mitigation.kept"), "{out:?}");
    assert!(audits(&fire(&mut d, &cleared_on("orders"), 40_000)).contains(&"incident.recovered"));
    let closed = |out: &[crate::policy::Decided]| {
        actions(out)
            .iter()
            .any(|a| a.params.get("state").map(String::as_str) == Some("closed"))
    };
    assert!(!closed(&d.decide(Input::Tick, 60_000)), "not yet");
    let out = d.decide(Input::Tick, 61_000);
    assert!(closed(&out), "the circuit left open for good: {out:?}");
    assert_eq!(audits(&out), vec!["mitigation.lifted"]);
}

#[test]
fn a_replica_a_scale_out_added_is_removed_later_and_its_removal_is_no_incident() {
    let mut d = decider(PolicyConfig {
        scale_in_after_ms: 60_000,
        ..config()
    });
    let out = fire(&mut d, &firing(Signature::Overload), 0);
    let scale_out = actions(&out).pop().expect("the first step");
    assert_eq!(scale_out.action, ActionKind::ScaleOut);
    d.decide(
        Input::Result(&result_of(&scale_out, ActionOutcome::Succeeded)),
        100,
    );
    fire(&mut d, &cleared_on("orders"), 1_000);
    assert!(
        actions(&d.decide(Input::Tick, 60_000)).is_empty(),
        "not yet"
    );
    let out = d.decide(Input::Tick, 61_000);
    let scale_in = actions(&out).pop().expect("the replica removed again");
    assert_eq!(scale_in.action, ActionKind::ScaleIn);
    assert_eq!(scale_in.container_id, scale_out.container_id);
    assert_eq!(audits(&out), vec!["mitigation.lifted"]);

    // the replica it removes dies: expected, no incident
    let replica = immune_nats::Anomaly {
        instance: "orders-2".into(),
        container_id: "container-orders-2".into(),
        anomaly_id: "replica-died".into(),
        ..firing(Signature::Crashed)
    };
    let out = fire(&mut d, &replica, 61_500);
    assert_eq!(audits(&out), vec!["anomaly.expected"]);
    assert!(actions(&out).is_empty());
    assert_eq!(d.open_incidents().count(), 0);
    // the container it was sent for dying is a crash
    let out = fire(&mut d, &firing(Signature::Crashed), 62_000);
    assert_eq!(
        actions(&out).pop().map(|a| a.action),
        Some(ActionKind::Restart)
    );
    // the scale_in done, another replica dying later is a crash again
    d.decide(
        Input::Result(&result_of(&scale_in, ActionOutcome::Succeeded)),
        62_100,
    );
    let other = immune_nats::Anomaly {
        instance: "orders-3".into(),
        container_id: "container-orders-3".into(),
        anomaly_id: "another-replica-died".into(),
        ..firing(Signature::Crashed)
    };
    let out = fire(&mut d, &other, 62_100 + 2_001);
    assert!(
        !audits(&out).contains(&"anomaly.expected"),
        "a crash after the grace: {out:?}"
    );
    assert!(
        !actions(&d.decide(Input::Tick, 300_000))
            .iter()
            .any(|a| a.action == ActionKind::ScaleIn),
        "scaled in once"
    );
}

/// An attack: its sources are blocked first (the shipped playbook), the refusals stop, and
/// the block is lifted like any stopgap once the attack had time to end.
#[test]
fn an_attack_blocks_its_sources_and_the_block_is_lifted_later() {
    let mut d = Decider::new(
        PolicyConfig {
            lift_mitigations_after_ms: 30_000,
            ..config()
        },
        crate::playbook::Playbook::default(),
    );
    let block = actions(&fire(&mut d, &firing(Signature::AttackBurst), 0))
        .pop()
        .expect("the first step");
    assert_eq!(block.action, ActionKind::BlockSources);
    assert_eq!(block.params.get("state").map(String::as_str), Some("on"));
    d.decide(
        Input::Result(&result_of(&block, ActionOutcome::Succeeded)),
        100,
    );
    let out = fire(&mut d, &cleared_on("orders"), 3_000);
    assert!(audits(&out).contains(&"incident.recovered"), "{out:?}");
    let lift = actions(&d.decide(Input::Tick, 33_500))
        .pop()
        .expect("the block lifted");
    assert_eq!(lift.action, ActionKind::BlockSources);
    assert_eq!(lift.params.get("state").map(String::as_str), Some("off"));
}

/// errors_up on orders: the circuit is opened and the verification (10 s) begins; the
/// service will not recover behind it.
fn circuit_opened_in_vain() -> (Decider, ActionRequest) {
    let mut d = decider(PolicyConfig {
        verify_deadline_ms: 10_000,
        cooldown_ms: 0,
        ..config()
    });
    let open = actions(&fire(&mut d, &firing(Signature::ErrorsUp), 0))
        .pop()
        .expect("the first step");
    assert_eq!(open.action, ActionKind::CircuitBreaker);
    d.decide(
        Input::Result(&result_of(&open, ActionOutcome::Succeeded)),
        100,
    );
    (d, open)
}

/// A stopgap that did not bring the service back only hurts its users (an open circuit
/// fails every call): it is undone at once, before the next step, and never left behind by
/// an escalation.
#[test]
fn a_stopgap_that_did_not_help_is_undone_at_once() {
    let (mut d, open) = circuit_opened_in_vain();
    let out = d.decide(Input::Tick, 10_200);
    let sent = actions(&out);
    let kinds: Vec<(ActionKind, Option<&str>)> = sent
        .iter()
        .map(|a| (a.action, a.params.get("state").map(String::as_str)))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (ActionKind::CircuitBreaker, Some("closed")),
            (ActionKind::Restart, None)
        ],
        "{:?}",
        audits(&out)
    );
    assert_eq!(sent[0].container_id, open.container_id);
    assert!(audits(&out).contains(&"mitigation.lifted"));
    // the restart works: nothing is left to lift later
    d.decide(
        Input::Result(&result_of(&sent[1], ActionOutcome::Succeeded)),
        10_500,
    );
    fire(&mut d, &cleared_on("orders"), 11_000);
    let later: Vec<_> = (12_000..200_000)
        .step_by(5_000)
        .flat_map(|t| actions(&d.decide(Input::Tick, t)))
        .collect();
    assert!(later.is_empty(), "lifted once: {later:?}");
}

/// The kill switch holds every action, the undoing of a stopgap too: it is not sent while
/// the switch is on.
#[test]
fn the_undoing_of_an_unhelpful_stopgap_waits_for_the_kill_switch() {
    let (mut d, _) = circuit_opened_in_vain();
    d.decide(
        Input::Control {
            key: crate::safety::KILL_SWITCH_KEY,
            value: Some("on"),
        },
        5_000,
    );
    let out = d.decide(Input::Tick, 10_200);
    assert!(actions(&out).is_empty(), "{:?}", audits(&out));
}
