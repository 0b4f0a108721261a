//! Escalation: to a human, with the whole story, when no step is left.

use immune_nats::{ActionKind, ActionOutcome, Signature};

use super::fixtures::{
    actions, audits, config, decider, escalations, fire, firing, playbook, result_of, svc,
};
use crate::policy::{Decider, Input, PolicyConfig};

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
