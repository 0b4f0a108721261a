//! Results and deadlines: a stale result changes nothing, a missing one fails the step, a
//! recreate's replacement receives the next step, a refused action teaches nothing; a
//! stopgap counts only once the service's callers and the entry point are served again.

use immune_nats::{samples, ActionKind, ActionOutcome, ActionResult, Signature};

use super::fixtures::{
    actions, audit_text, audits, cleared, cleared_on, config, decider, escalations, fire, firing,
    firing_on, playbook, result_of, svc,
};
use crate::learning::LearningConfig;
use crate::policy::{Decider, Input, PolicyConfig};

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
fn the_step_after_a_recreate_goes_to_the_container_that_replaced_the_target() {
    let mut d = Decider::new(
        PolicyConfig {
            verify_deadline_ms: 1_000,
            cooldown_ms: 0,
            ..config()
        },
        playbook(
            "[[latency_up]]\naction = \"recreate\"\nrisk = 2\n\n\
             [[latency_up]]\naction = \"restart\"\nrisk = 1",
        ),
    );
    let a = firing(Signature::LatencyUp);
    let recreate = actions(&fire(&mut d, &a, 0)).remove(0);
    assert_eq!(recreate.container_id, a.container_id);
    let replaced = ActionResult {
        replaced_by: Some("the-new-container".into()),
        ..result_of(&recreate, ActionOutcome::Succeeded)
    };
    d.decide(Input::Result(&replaced), 500);
    // the anomaly does not clear: the next step, to the instance where it runs now
    let restart = actions(&d.decide(Input::Tick, 1_600)).remove(0);
    assert_eq!(restart.action, ActionKind::Restart);
    assert_eq!(restart.instance, a.instance);
    assert_eq!(restart.container_id, "the-new-container");
}

/// Learning on, no exploration and no cooldown: every step follows from the values.
fn learning_without_exploration() -> Decider {
    decider(PolicyConfig {
        cooldown_ms: 0,
        learning: LearningConfig {
            epsilon: 0.0,
            ..Default::default()
        },
        ..config()
    })
}

#[test]
fn a_refused_action_teaches_nothing_a_failed_one_does() {
    let mut d = learning_without_exploration();
    let restart = actions(&fire(&mut d, &firing(Signature::Crashed), 0)).remove(0);
    assert_eq!(restart.action, ActionKind::Restart);
    let recreate = actions(&d.decide(
        Input::Result(&result_of(&restart, ActionOutcome::Refused)),
        10,
    ))
    .remove(0);
    assert_eq!(d.value(Signature::Crashed, ActionKind::Restart), 0.0);
    d.decide(
        Input::Result(&result_of(&recreate, ActionOutcome::Failed)),
        20,
    );
    assert!(d.value(Signature::Crashed, ActionKind::Recreate) < 0.0);
}

/// A container removed for good (a scaled-in replica, `docker rm -f`): its death fires
/// `crashed`, the restart sent for it finds no container, and its destroy clears the anomaly
/// meanwhile. Nothing is left to heal: no next step, no escalation, nothing learned.
#[test]
fn an_action_that_failed_after_its_anomaly_cleared_ends_the_incident() {
    let mut d = learning_without_exploration();
    let died = firing(Signature::Crashed);
    let restart = actions(&fire(&mut d, &died, 0)).remove(0);
    assert!(
        fire(&mut d, &cleared(&died), 8).is_empty(),
        "awaits the result"
    );
    let gone = ActionResult {
        error: Some("no such container".into()),
        ..result_of(&restart, ActionOutcome::Failed)
    };
    let out = d.decide(Input::Result(&gone), 10);
    assert!(actions(&out).is_empty(), "no next step: {:?}", audits(&out));
    assert!(escalations(&out).is_empty());
    assert!(
        audits(&out).contains(&"incident.recovered"),
        "{:?}",
        audits(&out)
    );
    assert_eq!(d.value(Signature::Crashed, ActionKind::Restart), 0.0);
    assert_eq!(d.open_incidents().count(), 0);
}

/// errors_up in payments, felt by orders and gateway: the circuit of payments opened and
/// carried out, then payments' own anomaly cleared at 1 s (it sheds every call now).
fn payments_cleared_behind_an_open_circuit() -> (Decider, Vec<crate::policy::Decided>) {
    let mut d = decider(PolicyConfig {
        callers_settle_ms: 4_000,
        recovery_settle_ms: 20_000,
        ..config()
    });
    let mut out = fire(&mut d, &firing_on("payments", Signature::ErrorsUp, &[]), 0);
    out.extend(fire(
        &mut d,
        &firing_on("orders", Signature::ErrorsUp, &["payments"]),
        100,
    ));
    out.extend(fire(
        &mut d,
        &firing_on("gateway", Signature::LatencyUp, &["orders"]),
        200,
    ));
    let circuit = actions(&out).pop().expect("the first step");
    assert_eq!(
        (circuit.service.as_str(), circuit.action),
        ("payments", ActionKind::CircuitBreaker)
    );
    d.decide(
        Input::Result(&result_of(&circuit, ActionOutcome::Succeeded)),
        300,
    );
    let out = fire(&mut d, &cleared_on("payments"), 1_000);
    assert_eq!(audits(&out), ["verification.callers"], "{out:?}");
    (d, out)
}

fn ticks(d: &mut Decider, from: u64, to: u64) -> Vec<crate::policy::Decided> {
    (from..=to)
        .step_by(500)
        .flat_map(|t| d.decide(Input::Tick, t))
        .collect()
}

#[test]
fn a_stopgap_counts_once_the_callers_and_the_entry_point_are_served_again() {
    let (mut d, _) = payments_cleared_behind_an_open_circuit();
    let waiting = ticks(&mut d, 1_000, 7_500);
    assert!(
        !audits(&waiting).contains(&"incident.recovered"),
        "orders and gateway still fail: {waiting:?}"
    );
    assert!(
        actions(&waiting).is_empty(),
        "the callers wait for payments, their culprit: {waiting:?}"
    );
    fire(&mut d, &cleared_on("orders"), 7_600);
    let out = ticks(&mut d, 8_000, 8_000);
    assert!(
        !audits(&out).contains(&"incident.recovered"),
        "the entry point is still slow: {out:?}"
    );
    fire(&mut d, &cleared_on("gateway"), 8_200);
    let out = ticks(&mut d, 8_500, 8_500);
    assert!(audits(&out).contains(&"incident.recovered"), "{out:?}");
    assert!(d.open_incidents().all(|i| i.service != svc("payments")));
}

#[test]
fn a_stopgap_whose_callers_still_fail_is_undone_and_the_next_step_repairs() {
    let (mut d, _) = payments_cleared_behind_an_open_circuit();
    let waiting = ticks(&mut d, 1_000, 20_500);
    assert!(actions(&waiting).is_empty(), "{waiting:?}");
    let out = d.decide(Input::Tick, 21_000);
    let failed = audit_text(&out, "verification.failed");
    assert!(
        failed
            .iter()
            .any(|f| f.contains("its caller") && f.contains("users are not served")),
        "{failed:?}"
    );
    let acts: Vec<_> = actions(&out)
        .iter()
        .map(|a| {
            (
                a.service.to_string(),
                a.action,
                a.params.get("state").cloned(),
            )
        })
        .collect();
    assert_eq!(
        acts,
        [
            (
                "payments".to_string(),
                ActionKind::CircuitBreaker,
                Some("closed".to_string())
            ),
            ("payments".to_string(), ActionKind::Restart, None),
        ],
        "the circuit is closed again and payments restarted"
    );
}

#[test]
fn a_stopgap_with_no_caller_in_trouble_counts_after_the_callers_settle() {
    let mut d = decider(PolicyConfig {
        callers_settle_ms: 4_000,
        ..config()
    });
    let out = fire(&mut d, &firing_on("payments", Signature::ErrorsUp, &[]), 0);
    let circuit = actions(&out).pop().expect("the circuit");
    d.decide(
        Input::Result(&result_of(&circuit, ActionOutcome::Succeeded)),
        300,
    );
    fire(&mut d, &cleared_on("payments"), 1_000);
    assert!(!audits(&ticks(&mut d, 1_000, 4_500)).contains(&"incident.recovered"));
    assert!(audits(&ticks(&mut d, 5_000, 5_000)).contains(&"incident.recovered"));
}

#[test]
fn a_repair_counts_when_its_own_anomaly_clears_whatever_the_callers() {
    let mut d = decider(PolicyConfig {
        callers_settle_ms: 4_000,
        ..config()
    });
    fire(
        &mut d,
        &firing_on("orders", Signature::ErrorsUp, &["payments"]),
        0,
    );
    let out = fire(&mut d, &firing_on("payments", Signature::Crashed, &[]), 100);
    let restart = actions(&out).pop().expect("restart");
    d.decide(
        Input::Result(&result_of(&restart, ActionOutcome::Succeeded)),
        600,
    );
    let out = fire(&mut d, &cleared_on("payments"), 1_000);
    assert!(audits(&out).contains(&"incident.recovered"), "{out:?}");
}
