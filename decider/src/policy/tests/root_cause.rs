//! The culprit: the deepest anomalous dependency is acted on first, a dead container at once.

use immune_nats::{ActionKind, ActionOutcome, Signature};

use super::fixtures::{
    actions, audit_text, audits, cleared_on, config, decider, fire, firing_on, result_of, svc,
};
use crate::policy::{Input, PolicyConfig};

#[test]
fn the_deepest_anomalous_dependency_is_acted_on_first() {
    let mut d = decider(PolicyConfig {
        root_cause_wait_ms: 1_000,
        recovery_settle_ms: 1_000,
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

#[test]
fn a_dependency_that_only_sees_less_traffic_is_not_the_culprit() {
    let mut d = decider(PolicyConfig {
        root_cause_wait_ms: 1_000,
        ..config()
    });
    // orders is slow, so fewer of its calls reach auth: auth's drop is a symptom of orders
    fire(&mut d, &firing_on("auth", Signature::TrafficDrop, &[]), 0);
    fire(
        &mut d,
        &firing_on("orders", Signature::LatencyUp, &["auth"]),
        10,
    );
    let mut out = Vec::new();
    for t in (200..=1_400).step_by(200) {
        out.extend(d.decide(Input::Tick, t));
    }
    let acted: Vec<_> = actions(&out)
        .into_iter()
        .filter(|a| a.service.as_str() == "orders")
        .collect();
    assert_eq!(acted.len(), 1, "{:?}", audits(&out));
    assert!(
        audit_text(&out, "action.blocked")
            .iter()
            .all(|h| !h.contains("acting on auth first")),
        "{:?}",
        audits(&out)
    );
}

/// The callers' detection lags their dependency's: payments is restarted and recovers, and
/// only then do orders' windows (requests that failed or piled up while payments was down)
/// fire. That anomaly is payments' too: it waits the settle time for it to clear by itself,
/// and orders is never touched; an anomaly of orders that outlasts it is acted on.
#[test]
fn a_caller_whose_dependency_just_recovered_waits_for_its_anomaly_to_clear() {
    let mut d = decider(PolicyConfig {
        root_cause_wait_ms: 1_000,
        recovery_settle_ms: 10_000,
        ..config()
    });
    let acts = actions(&fire(
        &mut d,
        &firing_on("payments", Signature::Crashed, &[]),
        0,
    ));
    d.decide(
        Input::Result(&result_of(&acts[0], ActionOutcome::Succeeded)),
        500,
    );
    fire(&mut d, &cleared_on("payments"), 1_000);
    assert_eq!(d.open_incidents().count(), 0);

    // the gateway calls orders, which calls payments
    let mut out = fire(
        &mut d,
        &firing_on("gateway", Signature::LatencyUp, &["orders"]),
        3_000,
    );
    out.extend(fire(
        &mut d,
        &firing_on("orders", Signature::LatencyUp, &["payments"]),
        3_500,
    ));
    for t in (4_000..=10_800).step_by(200) {
        out.extend(d.decide(Input::Tick, t));
    }
    assert!(actions(&out).is_empty(), "{:?}", audits(&out));
    let held = audit_text(&out, "action.blocked");
    assert!(
        held.iter().any(|h| h.contains("orders calls payments")),
        "{held:?}"
    );
    out = fire(&mut d, &cleared_on("orders"), 9_000);
    out.extend(fire(&mut d, &cleared_on("gateway"), 9_500));
    assert!(actions(&out).is_empty());
    assert_eq!(d.open_incidents().count(), 0, "healed by payments' repair");

    // later, orders' own trouble: acted on after the same settle time at most
    fire(
        &mut d,
        &firing_on("orders", Signature::LatencyUp, &["payments"]),
        20_000,
    );
    let out = d.decide(Input::Tick, 21_200);
    assert_eq!(actions(&out).len(), 1, "{:?}", audits(&out));
    assert_eq!(actions(&out)[0].service, svc("orders"));
}

#[test]
fn the_backlog_a_container_drains_after_its_repair_is_not_a_new_fault() {
    let mut d = decider(PolicyConfig {
        verify_deadline_ms: 15_000,
        ..config()
    });
    let out = fire(&mut d, &firing_on("payments", Signature::Paused, &[]), 0);
    let unpause = actions(&out).pop().expect("unpause");
    assert_eq!(unpause.action, ActionKind::Unpause);
    d.decide(
        Input::Result(&result_of(&unpause, ActionOutcome::Succeeded)),
        100,
    );
    assert!(audits(&fire(&mut d, &cleared_on("payments"), 500)).contains(&"incident.recovered"));
    // the requests queued during the pause arrive at once: the model calls it an overload
    let out = fire(&mut d, &learned_on("payments", Signature::Overload), 510);
    assert!(actions(&out).is_empty(), "{out:?}");
    let waited: Vec<_> = (1_000..=15_000)
        .step_by(500)
        .flat_map(|t| d.decide(Input::Tick, t))
        .collect();
    assert!(actions(&waited).is_empty(), "{waited:?}");
    assert!(audit_text(&out, "action.blocked")
        .iter()
        .any(|b| b.contains("just recovered")));
    let out = fire(&mut d, &cleared_on("payments"), 8_000);
    assert!(audits(&out).contains(&"incident.recovered"), "{out:?}");
}

#[test]
fn a_fault_after_the_aftermath_or_of_its_own_is_acted_on_at_once() {
    let mut d = decider(config());
    let out = fire(&mut d, &firing_on("payments", Signature::Paused, &[]), 0);
    let unpause = actions(&out).pop().expect("unpause");
    d.decide(
        Input::Result(&result_of(&unpause, ActionOutcome::Succeeded)),
        100,
    );
    fire(&mut d, &cleared_on("payments"), 500);
    let out = fire(&mut d, &firing_on("payments", Signature::Crashed, &[]), 600);
    assert_eq!(actions(&out).len(), 1, "a crash is its own: {out:?}");
    let restart = actions(&out).pop().expect("restart");
    d.decide(
        Input::Result(&result_of(&restart, ActionOutcome::Succeeded)),
        700,
    );
    fire(&mut d, &cleared_on("payments"), 1_000);
    let out = fire(&mut d, &learned_on("payments", Signature::Overload), 6_001);
    assert_eq!(actions(&out).len(), 1, "5 s after the recovery: {out:?}");
}

#[test]
fn a_rules_anomaly_right_after_a_recovery_is_a_new_fault() {
    let mut d = decider(PolicyConfig {
        cooldown_ms: 0,
        ..config()
    });
    let out = fire(&mut d, &firing_on("payments", Signature::Crashed, &[]), 0);
    let restart = actions(&out).pop().expect("restart");
    d.decide(
        Input::Result(&result_of(&restart, ActionOutcome::Succeeded)),
        500,
    );
    fire(&mut d, &cleared_on("payments"), 1_000);
    // a hang injected at once: the health check fails 3 times
    let out = fire(
        &mut d,
        &firing_on("payments", Signature::Unresponsive, &[]),
        3_800,
    );
    assert_eq!(actions(&out).len(), 1, "{out:?}");
}

/// `signature` firing on `service` from its learned model.
fn learned_on(service: &str, signature: Signature) -> immune_nats::Anomaly {
    immune_nats::Anomaly {
        detector: "pca".into(),
        ..firing_on(service, signature, &[])
    }
}
