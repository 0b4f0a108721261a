//! Approvals: a risky step is held until an operator grants it, and skipped when denied.

use immune_nats::{ActionKind, ActionOutcome, Approval, Signature};

use super::fixtures::{
    actions, audit_text, config, escalations, fire, firing, playbook, result_of, svc,
};
use crate::policy::{Decider, Input, PolicyConfig};

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
