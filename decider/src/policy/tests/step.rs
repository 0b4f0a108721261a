//! Issuing a step: what the request carries (a throttle's limit derived from the measured
//! load), and the advice dry-run mode gives instead.

use std::collections::BTreeMap;

use immune_nats::{feature, ActionKind, Anomaly, Contribution, Direction, Signature};

use super::fixtures::{actions, audit_text, config, decider, fire, firing, playbook};
use crate::playbook::Step;
use crate::policy::step::{step_params, throttle_rps};
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

/// `signature` firing on orders with a request rate measured against its normal `expected`.
fn with_load(signature: Signature, value: f64, expected: f64) -> Anomaly {
    let mut anomaly = firing(signature);
    anomaly.contributions.push(Contribution {
        metric: feature::REQUEST_RATE.into(),
        value,
        expected,
        share: 0.2,
        direction: Direction::Up,
    });
    anomaly
}

fn throttle_step(rps: &str) -> Step {
    Step {
        action: ActionKind::Throttle,
        risk: 1,
        params: BTreeMap::from([("rps".to_string(), rps.to_string())]),
        timeout_ms: None,
    }
}

#[test]
fn a_throttle_allows_the_normal_load_plus_headroom() {
    let spike = with_load(Signature::Overload, 60.0, 20.0);
    assert_eq!(
        throttle_rps(&spike),
        Some(24),
        "20 req/s normally, 20% headroom"
    );
    assert_eq!(
        throttle_rps(&with_load(Signature::LatencyUp, 20.0, 0.2)),
        Some(1)
    );
    assert_eq!(
        throttle_rps(&with_load(Signature::LatencyUp, 20.0, f64::NAN)),
        None
    );
    assert_eq!(
        throttle_rps(&with_load(Signature::LatencyUp, 20.0, -3.0)),
        None
    );
    assert_eq!(
        throttle_rps(&firing(Signature::LatencyUp)),
        None,
        "no request rate measured"
    );
    assert_eq!(step_params(&throttle_step("50"), &spike)["rps"], "24");
    assert_eq!(
        step_params(&throttle_step("50"), &firing(Signature::LatencyUp))["rps"],
        "50",
        "the playbook's limit without a measured load"
    );
    assert_eq!(
        step_params(&throttle_step("off"), &spike)["rps"],
        "off",
        "a step that lifts a throttle is left alone"
    );
    let breaker = Step {
        action: ActionKind::CircuitBreaker,
        ..throttle_step("50")
    };
    assert_eq!(
        step_params(&breaker, &spike)["rps"],
        "50",
        "only a throttle"
    );
}

#[test]
fn the_throttle_sent_follows_the_anomalys_load() {
    let mut d = decider(config());
    let acts = actions(&fire(
        &mut d,
        &with_load(Signature::LatencyUp, 20.0, 20.0),
        0,
    ));
    assert_eq!(acts[0].action, ActionKind::Throttle);
    assert_eq!(acts[0].params["rps"], "24");
    assert_eq!(acts[0].params["stop_grace_s"], "1");
}
