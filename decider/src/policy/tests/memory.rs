//! The memory: a restarted decider carries on from another's, and refuses what it cannot read.

use immune_nats::{ActionOutcome, Anomaly, AnomalyState, Signature};

use super::fixtures::{
    actions, audit_text, audits, cleared, cleared_on, config, decider, fire, firing, firing_on,
    result_of,
};
use crate::policy::{Decider, Input, PolicyConfig, OPEN_PREFIX, SETTLED_KEEP_MS, SETTLED_MAX};
use crate::safety::Budget;

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
