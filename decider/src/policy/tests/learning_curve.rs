//! The learning curve over the shipped playbook: repeated incidents of one service against a
//! simulated world that knows which action removes the cause. Latency caused inside the
//! service starts from a wrong prior (throttle first) and learns `restart`; overload starts
//! from the right one (`scale_out`) and keeps it.

use immune_nats::{
    feature, ActionKind, ActionOutcome, Anomaly, Contribution, Direction, Signature,
};

use super::fixtures::{
    actions, audits, cleared_on, decider, escalations, fire, firing_on, result_of,
};
use crate::learning::LearningConfig;
use crate::policy::{Decider, Input, PolicyConfig};

/// Incidents start this far apart: every stopgap of the one before is lifted by then.
const APART_MS: u64 = 600_000;
/// The executor takes this long to carry out an action.
const ACTION_MS: u64 = 1_000;
/// The anomaly clears this long after the action that removed its cause.
const CLEAR_MS: u64 = 2_000;
const VERIFY_MS: u64 = 30_000;
/// The demo's load generator.
const NORMAL_RPS: f64 = 20.0;

/// What the simulated service suffers from and the one action that removes it.
struct World {
    signature: Signature,
    /// The request rate while the fault lasts.
    rps: f64,
    fix: ActionKind,
}

/// Inside the service: slow at the normal load.
const SLOW_INSIDE: World = World {
    signature: Signature::LatencyUp,
    rps: NORMAL_RPS,
    fix: ActionKind::Restart,
};

/// Three times the normal load, beyond the service's capacity.
const OVERLOADED: World = World {
    signature: Signature::Overload,
    rps: 3.0 * NORMAL_RPS,
    fix: ActionKind::ScaleOut,
};

/// One incident as the decider saw it.
#[derive(Debug)]
struct Healed {
    /// The actions of the incident, in the order they were sent.
    tried: Vec<ActionKind>,
    /// From the anomaly firing to its clearing.
    took_ms: u64,
    /// The throttle's limit, if one was sent.
    throttle_rps: Option<String>,
}

fn anomaly(world: &World) -> Anomaly {
    let contribution = |metric: &str, value: f64, expected: f64, share: f64| Contribution {
        metric: metric.into(),
        value,
        expected,
        share,
        direction: if value >= expected {
            Direction::Up
        } else {
            Direction::Down
        },
    };
    Anomaly {
        detector: "pca".into(),
        contributions: vec![
            contribution(feature::LATENCY_P95_MS, 450.0, 40.0, 0.6),
            contribution(feature::REQUEST_RATE, world.rps, NORMAL_RPS, 0.3),
        ],
        ..firing_on("orders", world.signature, &[])
    }
}

/// The fault strikes at `start`; the decider acts, the executor answers after
/// [`ACTION_MS`], and the anomaly clears [`CLEAR_MS`] after the world's fix, or stays until
/// the verification deadline sends the decider to its next step.
fn incident(d: &mut Decider, world: &World, start: u64) -> Healed {
    // lifts the stopgaps of the incident before, which are not this incident's actions
    d.decide(Input::Tick, start - 1);
    let mut out = fire(d, &anomaly(world), start);
    let mut now = start;
    let mut healed = Healed {
        tried: Vec::new(),
        took_ms: 0,
        throttle_rps: None,
    };
    loop {
        assert!(
            escalations(&out).is_empty(),
            "escalated after {:?}: the world's fix {} is not in the {} playbook",
            healed.tried,
            world.fix,
            world.signature
        );
        let Some(action) = actions(&out).pop() else {
            now += 1_000;
            assert!(
                now < start + APART_MS,
                "not healed after {:?}: the decider stopped acting",
                healed.tried
            );
            out = d.decide(Input::Tick, now);
            continue;
        };
        healed.tried.push(action.action);
        if action.action == ActionKind::Throttle {
            healed.throttle_rps = action.params.get("rps").cloned();
        }
        now += ACTION_MS;
        out = d.decide(
            Input::Result(&result_of(&action, ActionOutcome::Succeeded)),
            now,
        );
        if action.action == world.fix {
            now += CLEAR_MS;
            let out = fire(d, &cleared_on("orders"), now);
            assert!(audits(&out).contains(&"incident.recovered"), "{out:?}");
            healed.took_ms = now - start;
            return healed;
        }
    }
}

fn learning_decider(epsilon: f64) -> Decider {
    decider(PolicyConfig {
        verify_deadline_ms: VERIFY_MS,
        learning: LearningConfig {
            epsilon,
            ..Default::default()
        },
        ..Default::default()
    })
}

fn curve(d: &mut Decider, world: &World, incidents: u64) -> Vec<Healed> {
    (1..=incidents)
        .map(|i| incident(d, world, i * APART_MS))
        .collect()
}

fn firsts(curve: &[Healed]) -> Vec<ActionKind> {
    curve.iter().map(|h| h.tried[0]).collect()
}

fn times(curve: &[Healed]) -> Vec<u64> {
    curve.iter().map(|h| h.took_ms).collect()
}

#[test]
fn latency_inside_the_service_learns_restart_over_a_wrong_prior() {
    let mut d = learning_decider(0.0);
    let curve = curve(&mut d, &SLOW_INSIDE, 8);
    let (firsts, times) = (firsts(&curve), times(&curve));
    eprintln!("latency_up first actions: {firsts:?}\nlatency_up times to heal (ms): {times:?}");
    assert_eq!(
        curve[0].tried,
        [
            ActionKind::Throttle,
            ActionKind::ScaleOut,
            ActionKind::Restart
        ],
        "the prior: least disruptive first"
    );
    assert_eq!(
        curve[0].throttle_rps.as_deref(),
        Some("24"),
        "the normal 20 req/s plus headroom, not the playbook's 50"
    );
    let learned = firsts
        .iter()
        .position(|&a| a == ActionKind::Restart)
        .expect("restart became the first action");
    assert!(
        firsts[learned..].iter().all(|&a| a == ActionKind::Restart),
        "restart first from incident {} on: {firsts:?}",
        learned + 1
    );
    assert!(learned <= 2, "learned within 3 incidents: {firsts:?}");
    assert!(
        times[learned..].windows(2).all(|w| w[1] <= w[0]),
        "time to heal never rises after learning: {times:?}"
    );
    let last = times[times.len() - 1];
    assert!(
        last + 2 * VERIFY_MS <= times[0],
        "two verification deadlines saved: {times:?}"
    );
    assert_eq!(last, ACTION_MS + CLEAR_MS, "restart alone: {times:?}");
    assert!(d.value(Signature::LatencyUp, ActionKind::Restart) > 0.0);
    assert!(d.value(Signature::LatencyUp, ActionKind::Throttle) < 0.0);
    assert!(d.value(Signature::LatencyUp, ActionKind::ScaleOut) < 0.0);
}

#[test]
fn overload_keeps_scale_out_first_and_never_restarts() {
    let mut d = learning_decider(0.0);
    let curve = curve(&mut d, &OVERLOADED, 8);
    let (firsts, times) = (firsts(&curve), times(&curve));
    eprintln!("overload first actions: {firsts:?}\noverload times to heal (ms): {times:?}");
    assert!(
        curve.iter().all(|h| h.tried == [ActionKind::ScaleOut]),
        "scale_out first and alone in every incident: {curve:?}"
    );
    assert!(
        times.iter().all(|&t| t == ACTION_MS + CLEAR_MS),
        "{times:?}"
    );
    assert!(d.value(Signature::Overload, ActionKind::ScaleOut) > 0.0);
    assert_eq!(d.value(Signature::Overload, ActionKind::Restart), 0.0);
}

#[test]
fn with_seeded_exploration_each_signature_keeps_its_own_fix() {
    // both faults on one decider, in turns, exploring as shipped (epsilon 0.05, seed 7)
    let mut d = learning_decider(LearningConfig::default().epsilon);
    let rounds = 20;
    let mut right = [0, 0];
    for i in 0..rounds {
        for (w, world) in [SLOW_INSIDE, OVERLOADED].iter().enumerate() {
            let healed = incident(&mut d, world, (2 * i + w as u64 + 1) * APART_MS);
            if i >= 2 && healed.tried[0] == world.fix {
                right[w] += 1;
            }
        }
    }
    let after_learning = rounds - 2;
    eprintln!(
        "first action right after learning (latency_up, overload): {right:?} of {after_learning}"
    );
    for (w, hits) in right.iter().enumerate() {
        assert!(
            hits * 10 >= after_learning * 8,
            "world {w}: first action right in {hits} of {after_learning} incidents"
        );
    }
    assert!(d.value(Signature::LatencyUp, ActionKind::Restart) > 0.0);
    assert!(d.value(Signature::Overload, ActionKind::ScaleOut) > 0.0);
}
