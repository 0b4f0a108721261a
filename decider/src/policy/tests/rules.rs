//! The safety rules: each holds a step back (audited once, re-checked every tick) and lets it
//! go when it no longer applies.

use immune_nats::{ActionOutcome, Signature};

use super::fixtures::{
    actions, audit_text, audits, cleared_on, config, decider, fire, firing, firing_on, result_of,
    svc,
};
use crate::policy::{Input, PolicyConfig};
use crate::safety::{Budget, KILL_SWITCH_KEY, MAINTENANCE_PREFIX};

#[test]
fn a_repeat_within_the_cooldown_waits_and_is_not_dropped() {
    let mut d = decider(PolicyConfig {
        cooldown_ms: 5_000,
        ..config()
    });
    let a = firing(Signature::Crashed);
    let first = actions(&fire(&mut d, &a, 0));
    d.decide(
        Input::Result(&result_of(&first[0], ActionOutcome::Succeeded)),
        100,
    );
    fire(&mut d, &cleared_on("orders"), 200);
    // it crashes again at once: the restart must wait for the cooldown
    let out = fire(&mut d, &firing(Signature::Crashed), 1_000);
    assert!(actions(&out).is_empty());
    assert!(audit_text(&out, "action.blocked")[0].contains("cooling down"));
    let out = d.decide(Input::Tick, 4_999);
    assert!(actions(&out).is_empty());
    assert!(
        audits(&out).is_empty(),
        "a block is audited once, not every tick"
    );
    let out = d.decide(Input::Tick, 5_000);
    assert_eq!(actions(&out).len(), 1, "issued once the cooldown is over");
}

#[test]
fn the_kill_switch_holds_every_action_until_it_is_off() {
    let mut d = decider(config());
    let out = d.decide(
        Input::Control {
            key: KILL_SWITCH_KEY,
            value: Some("on"),
        },
        0,
    );
    assert_eq!(audits(&out), ["control.changed"]);
    let out = fire(&mut d, &firing(Signature::Crashed), 10);
    assert!(actions(&out).is_empty());
    assert!(audit_text(&out, "action.blocked")[0].contains("kill switch"));
    assert!(actions(&d.decide(Input::Tick, 1_000)).is_empty());
    let out = d.decide(
        Input::Control {
            key: KILL_SWITCH_KEY,
            value: Some("off"),
        },
        2_000,
    );
    assert_eq!(actions(&out).len(), 1, "released as soon as it is off");
}

#[test]
fn a_maintenance_window_holds_actions_on_its_service_only() {
    let mut d = decider(config());
    let key = format!("{MAINTENANCE_PREFIX}orders");
    d.decide(
        Input::Control {
            key: &key,
            value: Some("0..10000"),
        },
        0,
    );
    let out = fire(&mut d, &firing(Signature::Crashed), 100);
    assert!(audit_text(&out, "action.blocked")[0].contains("maintenance window"));
    let other = firing_on("payments", Signature::Crashed, &[]);
    assert_eq!(actions(&fire(&mut d, &other, 100)).len(), 1);
    assert!(actions(&d.decide(Input::Tick, 9_999)).is_empty());
    let out = d.decide(Input::Tick, 10_000);
    assert_eq!(actions(&out)[0].service, svc("orders"));
}

#[test]
fn never_two_actions_on_one_container_at_once() {
    let mut d = decider(config());
    let first = actions(&fire(&mut d, &firing(Signature::Crashed), 0));
    // another service's incident pointing at the same container (a shared sidecar)
    let mut other = firing_on("payments", Signature::Crashed, &[]);
    other.container_id = first[0].container_id.clone();
    let out = fire(&mut d, &other, 10);
    assert!(actions(&out).is_empty());
    assert!(audit_text(&out, "action.blocked")[0].contains("still running on container"));
    let out = d.decide(
        Input::Result(&result_of(&first[0], ActionOutcome::Succeeded)),
        500,
    );
    assert!(actions(&out).is_empty(), "released on the next tick");
    assert_eq!(actions(&d.decide(Input::Tick, 600)).len(), 1);
}

#[test]
fn the_blast_radius_caps_services_acted_on_at_once() {
    let mut d = decider(PolicyConfig {
        max_services_acting: 2,
        ..config()
    });
    let mut issued = Vec::new();
    for s in ["a", "b", "c"] {
        let out = fire(&mut d, &firing_on(s, Signature::Crashed, &[]), 0);
        issued.extend(actions(&out));
        if s == "c" {
            let blocked = audit_text(&out, "action.blocked");
            assert!(
                blocked[0].contains("cap 2"),
                "{:?} {blocked:?}",
                audits(&out)
            );
        }
    }
    assert_eq!(issued.len(), 2);
    d.decide(
        Input::Result(&result_of(&issued[0], ActionOutcome::Succeeded)),
        100,
    );
    assert!(
        actions(&d.decide(Input::Tick, 200)).is_empty(),
        "a is verifying: still acted on"
    );
    let out = fire(&mut d, &cleared_on("a"), 300);
    assert_eq!(actions(&out)[0].service, svc("c"), "released as a recovers");
}

#[test]
fn a_service_budget_stops_a_flapping_service() {
    let mut d = decider(PolicyConfig {
        cooldown_ms: 0,
        service_budget: Budget {
            burst: 2,
            per_minute: 1.0,
        },
        ..config()
    });
    let mut now = 0;
    let mut issued = 0;
    for _ in 0..4 {
        let out = fire(&mut d, &firing(Signature::Crashed), now);
        for a in actions(&out) {
            issued += 1;
            d.decide(
                Input::Result(&result_of(&a, ActionOutcome::Succeeded)),
                now + 1,
            );
        }
        if issued == 2 && actions(&out).is_empty() {
            assert!(audit_text(&out, "action.blocked")[0].contains("spent its budget"));
        }
        fire(&mut d, &cleared_on("orders"), now + 2);
        now += 1_000;
    }
    assert_eq!(issued, 2, "burst of 2, then one a minute");
}

#[test]
fn an_action_storm_of_many_simultaneous_incidents_stays_within_the_global_budget() {
    let mut d = decider(PolicyConfig {
        max_services_acting: 100,
        global_budget: Budget {
            burst: 10,
            per_minute: 30.0,
        },
        ..config()
    });
    let mut out = Vec::new();
    for i in 0..60 {
        out.extend(fire(
            &mut d,
            &firing_on(&format!("svc{i:02}"), Signature::Crashed, &[]),
            0,
        ));
    }
    assert_eq!(actions(&out).len(), 10, "only the burst goes out");
    let blocked = audit_text(&out, "action.blocked");
    assert_eq!(blocked.len(), 50, "every held one says why");
    assert!(blocked.iter().all(|b| b.contains("global budget")));
    // a minute of ticks: 30 more at most (one every 2 s)
    let mut later = 0;
    for t in (200..=60_000).step_by(200) {
        later += actions(&d.decide(Input::Tick, t)).len();
    }
    assert_eq!(later, 30);
}
