//! Results and deadlines: a stale result changes nothing, a missing one fails the step, a
//! recreate's replacement receives the next step, a refused action teaches nothing.

use immune_nats::{samples, ActionKind, ActionOutcome, ActionResult, Signature};

use super::fixtures::{
    actions, audits, cleared, config, decider, escalations, fire, firing, playbook, result_of,
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
