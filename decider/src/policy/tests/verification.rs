//! Results and deadlines: a stale result changes nothing, a missing one fails the step.

use immune_nats::{samples, ActionKind, ActionResult, Signature};

use super::fixtures::{actions, audits, config, decider, fire, firing};
use crate::policy::{Input, PolicyConfig};

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
