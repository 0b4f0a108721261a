//! Learning: the policy orders the playbook by what worked, emits the values it learns and
//! resumes from restored ones.

use immune_nats::{ActionKind, ActionOutcome, Signature};

use super::fixtures::{actions, audits, cleared_on, decider, fire, firing, result_of};
use crate::learning::LearningConfig;
use crate::policy::{Decider, Decision, Input, PolicyConfig};

/// One injected fault healed by the decider, the executor and the service simulated: the
/// action succeeds after 1 s; only `works` brings the service back (2 s later); anything
/// else leaves it anomalous until the verification deadline. Returns time to recover.
fn heal_once(d: &mut Decider, start: u64, works: ActionKind) -> (u64, ActionKind) {
    let a = firing(Signature::Unresponsive);
    let mut out = fire(d, &a, start);
    let mut now = start;
    let mut first = None;
    loop {
        let Some(action) = actions(&out).pop() else {
            now += 200;
            assert!(now < start + 600_000, "never recovered");
            out = d.decide(Input::Tick, now);
            continue;
        };
        first.get_or_insert(action.action);
        now += 1_000;
        d.decide(
            Input::Result(&result_of(&action, ActionOutcome::Succeeded)),
            now,
        );
        if action.action == works {
            now += 2_000;
            let out = fire(d, &cleared_on("orders"), now);
            assert!(audits(&out).contains(&"incident.recovered"));
            return (now - start, first.expect("acted"));
        }
        out = Vec::new();
    }
}

#[test]
fn the_decider_learns_to_skip_a_first_step_that_never_works() {
    let mut d = decider(PolicyConfig {
        verify_deadline_ms: 10_000,
        cooldown_ms: 0,
        learning: LearningConfig::default(),
        ..Default::default()
    });
    let mut times = Vec::new();
    let mut firsts = Vec::new();
    for i in 0..20 {
        let (took, first) = heal_once(&mut d, i * 1_000_000, ActionKind::Recreate);
        times.push(took);
        firsts.push(first);
    }
    assert_eq!(
        firsts[0],
        ActionKind::Restart,
        "the playbook order at first"
    );
    assert!(
        times[0] >= 13_000,
        "restart, 10 s verification, recreate: {times:?}"
    );
    let late = &firsts[10..];
    assert!(
        late.iter().filter(|&&a| a == ActionKind::Recreate).count() >= 9,
        "learned to go straight to recreate: {firsts:?}"
    );
    eprintln!("first steps: {firsts:?}\ntimes to recover (ms): {times:?}");
    let early_mean = times[..2].iter().sum::<u64>() / 2;
    let late_mean = times[10..].iter().sum::<u64>() / 10;
    assert!(
        late_mean * 2 < early_mean,
        "time to recover {early_mean} -> {late_mean} ms"
    );
    assert!(d.value(Signature::Unresponsive, ActionKind::Restart) < 0.0);
    assert!(d.value(Signature::Unresponsive, ActionKind::Recreate) > 0.0);
}

#[test]
fn learned_values_are_emitted_for_persistence_and_restored() {
    let mut d = decider(PolicyConfig {
        learning: LearningConfig {
            epsilon: 0.0,
            ..Default::default()
        },
        ..Default::default()
    });
    let a = actions(&fire(&mut d, &firing(Signature::Crashed), 0));
    let out = d.decide(Input::Result(&result_of(&a[0], ActionOutcome::Failed)), 10);
    let value = out.iter().find_map(|x| match x.decision {
        Decision::Value {
            signature,
            action,
            value,
        } => Some((signature, action, value)),
        _ => None,
    });
    let (signature, action, value) = value.expect("a value to persist");
    assert_eq!(
        (signature, action),
        (Signature::Crashed, ActionKind::Restart)
    );
    assert!(value < 0.0);

    let mut restarted = decider(PolicyConfig::default());
    restarted.restore_value(signature, action, value);
    let first = actions(&fire(&mut restarted, &firing(Signature::Crashed), 0));
    assert_eq!(
        first[0].action,
        ActionKind::Recreate,
        "resumes what it learned"
    );
}
