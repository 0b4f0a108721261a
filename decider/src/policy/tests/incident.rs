//! The incident: opened by a firing anomaly, joined (not redirected) by the service's other
//! anomalies, recovered by its own clearing, and knowing the chaos run that caused it.

use immune_nats::{ActionKind, ActionOutcome, Anomaly, IncidentState, Signature};

use super::fixtures::{
    actions, audit_text, audits, cleared, cleared_on, config, decider, fire, firing, result_of, svc,
};
use crate::policy::{Decision, Input};

#[test]
fn firing_opens_an_incident_and_restarts_then_clearing_recovers_it() {
    let mut d = decider(config());
    let a = firing(Signature::Unresponsive);
    let out = d.decide(
        Input::Anomaly {
            anomaly: &a,
            correlation_id: Some("run-1"),
        },
        1_000,
    );
    let acts = actions(&out);
    assert_eq!(acts.len(), 1);
    assert_eq!(acts[0].action, ActionKind::Restart);
    assert_eq!(acts[0].container_id, a.container_id);
    assert_eq!(acts[0].params["stop_grace_s"], "1");
    assert!(out.iter().all(|d| d.correlation_id == "run-1"));
    assert_eq!(audits(&out), ["incident.opened", "action.requested"]);
    let why = &audit_text(&out, "action.requested")[0];
    assert!(why.contains("candidates [restart risk 2"), "{why}");

    let out = d.decide(
        Input::Result(&result_of(&acts[0], ActionOutcome::Succeeded)),
        1_600,
    );
    assert_eq!(audits(&out), ["verification.started"]);
    let out = fire(&mut d, &cleared_on("orders"), 2_000);
    assert_eq!(audits(&out), ["incident.recovered"]);
    let states: Vec<_> = out
        .iter()
        .filter_map(|d| match &d.decision {
            Decision::Incident(i) => Some(i.state),
            _ => None,
        })
        .collect();
    assert_eq!(states, [IncidentState::Recovered, IncidentState::Closed]);
    assert_eq!(d.open_incidents().count(), 0);
}

#[test]
fn an_anomaly_on_another_replica_neither_redirects_nor_recovers_the_incident() {
    let mut d = decider(config());
    let primary = firing(Signature::Unresponsive);
    let replica = Anomaly {
        instance: "orders-2".into(),
        container_id: "container-orders-2".into(),
        ..firing(Signature::LatencyUp)
    };
    let restart = actions(&fire(&mut d, &primary, 1_000))
        .pop()
        .expect("restart");
    assert_eq!(restart.container_id, primary.container_id);
    assert!(actions(&fire(&mut d, &replica, 1_100)).is_empty());
    let out = d.decide(
        Input::Result(&result_of(&restart, ActionOutcome::Succeeded)),
        1_500,
    );
    assert_eq!(audits(&out), ["verification.started"]);

    // The replica's clearing does not recover the primary's incident ...
    let out = fire(&mut d, &cleared(&replica), 1_600);
    assert!(audits(&out).is_empty(), "{out:?}");
    assert_eq!(d.open_incidents().count(), 1);
    // ... its own does.
    let out = fire(&mut d, &cleared(&primary), 2_000);
    assert_eq!(audits(&out), ["incident.recovered"]);
    assert_eq!(d.open_incidents().count(), 0);

    // A replica still firing when the primary recovers opens the next incident, which acts
    // on the replica once the root-cause wait (and the service's restart cooldown) is over.
    let primary = firing(Signature::Unresponsive);
    let replica = Anomaly {
        instance: "orders-2".into(),
        container_id: "container-orders-2".into(),
        ..firing(Signature::Unresponsive)
    };
    let restart = actions(&fire(&mut d, &primary, 1_000_000))
        .pop()
        .expect("restart, the cooldown over");
    fire(&mut d, &replica, 1_000_100);
    d.decide(
        Input::Result(&result_of(&restart, ActionOutcome::Succeeded)),
        1_000_500,
    );
    let out = fire(&mut d, &cleared(&primary), 1_001_000);
    assert_eq!(
        audits(&out),
        ["incident.recovered", "incident.opened", "action.blocked"]
    );
    let out = d.decide(Input::Tick, 1_000_000 + d.config.cooldown_ms + 1);
    let acts = actions(&out);
    assert_eq!(acts.len(), 1, "{out:?}");
    assert_eq!(acts[0].container_id, replica.container_id);
}

#[test]
fn a_new_anomaly_from_the_same_detector_and_container_takes_the_place_of_the_first() {
    // A detector killed between publishing a firing and storing it fires the episode again,
    // under another id, and clears only that one.
    let mut d = decider(config());
    let first = Anomaly {
        detector: "pca".into(),
        started_ms: 1_000,
        ..firing(Signature::LatencyUp)
    };
    let restart = actions(&fire(&mut d, &first, 1_000))
        .pop()
        .expect("restart");
    let again = Anomaly {
        detector: "pca".into(),
        started_ms: 1_200,
        ..firing(Signature::LatencyUp)
    };
    assert!(actions(&fire(&mut d, &again, 1_200)).is_empty());
    // The first one delivered again, late, does not take its place back.
    assert!(actions(&fire(&mut d, &first, 1_300)).is_empty());
    d.decide(
        Input::Result(&result_of(&restart, ActionOutcome::Succeeded)),
        1_500,
    );
    let out = fire(&mut d, &cleared(&again), 2_000);
    assert_eq!(audits(&out), ["incident.recovered"]);
    assert_eq!(d.open_incidents().count(), 0);
}

#[test]
fn the_incident_knows_about_the_chaos_run() {
    let mut d = decider(config());
    d.decide(
        Input::ChaosInjected {
            service: &svc("orders"),
            run_id: "run-9",
        },
        0,
    );
    let out = fire(&mut d, &firing(Signature::Crashed), 1);
    let opened = out.iter().find_map(|d| match &d.decision {
        Decision::Incident(i) => Some(i.clone()),
        _ => None,
    });
    assert_eq!(
        opened.expect("incident").chaos_run.as_deref(),
        Some("run-9")
    );
    assert!(audit_text(&out, "incident.opened")[0].contains("injected by chaos run run-9"));
}
