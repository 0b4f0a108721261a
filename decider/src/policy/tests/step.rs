//! Issuing a step: what the request carries, and the advice dry-run mode gives instead.

use immune_nats::{ActionKind, Signature};

use super::fixtures::{actions, audit_text, config, decider, fire, firing, playbook};
use crate::policy::{Decider, Input, PolicyConfig};

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
