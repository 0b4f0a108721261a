//! Tests of the console's view of the bus: what each event does to it, and its bounds.

use std::collections::BTreeMap;

use immune_nats::{
    ActionKind, ActionRequest, ActionResult, Anomaly, AuditRecord, ChaosInjected, FaultKind,
    HealthProbe, Incident, Producer, Replicas, ServiceName, Signature, Stage,
};

use super::*;

fn envelope(at: u64, correlation: Option<&str>, body: Event) -> Envelope {
    let mut e = Envelope::new(
        Producer {
            stage: Stage::Collector,
            instance: "test".into(),
        },
        correlation.map(str::to_string),
        body,
    );
    e.timestamp_ms = at;
    e
}

fn name(s: &str) -> ServiceName {
    ServiceName::new(s).expect("valid service name")
}

fn snapshot(service: &str, at: u64, ok: bool, rate: f64) -> Event {
    Event::MetricSnapshot(MetricSnapshot {
        service: name(service),
        instance: format!("{service}-1"),
        container_id: "c1".into(),
        observed_ms: at,
        interval_ms: 1000,
        state: ContainerState::Running,
        health: Some(HealthProbe {
            ok,
            status: Some(if ok { 200 } else { 503 }),
            latency_ms: 1.0,
            error: None,
        }),
        scrape: None,
        features: BTreeMap::from([
            (feature::REQUEST_RATE.to_string(), rate),
            (feature::ERROR_RATIO.to_string(), 0.0),
            (feature::LATENCY_P95_MS.to_string(), 12.0),
        ]),
        scope: SnapshotScope::Instance,
        replicas: None,
        depends_on: Vec::new(),
    })
}

fn incident(state: IncidentState) -> Event {
    Event::Incident(Incident {
        incident_id: "inc-1".into(),
        service: name("orders"),
        state,
        signature: Signature::Crashed,
        chaos_run: Some("run-1".into()),
        opened_ms: 10,
        timeline: Vec::new(),
    })
}

fn anomaly(state: AnomalyState) -> Event {
    Event::Anomaly(Anomaly {
        anomaly_id: "a-1".into(),
        service: name("orders"),
        instance: "orders-1".into(),
        container_id: "c1".into(),
        state,
        signature: Signature::Crashed,
        detector: "rule:crashed".into(),
        score: 1.0,
        threshold: 0.5,
        contributions: Vec::new(),
        reason: "container exited".into(),
        started_ms: 5,
        depends_on: Vec::new(),
    })
}

#[test]
fn points_per_service_are_bounded_and_carry_the_key_metrics() {
    let mut view = View::new(Limits {
        points: 3,
        ..Limits::default()
    });
    for i in 0..5 {
        let deltas = view.apply(&envelope(i, None, snapshot("orders", i, true, i as f64)));
        assert!(
            matches!(deltas.as_slice(), [Delta::Service(_)]),
            "{deltas:?}"
        );
    }
    let snap = view.snapshot();
    let card = &snap.services[0];
    assert_eq!(card.service, "orders");
    assert_eq!(card.status, "healthy");
    assert_eq!(card.points.len(), 3);
    let rates: Vec<_> = card.points.iter().map(|p| p.request_rate).collect();
    assert_eq!(rates, vec![Some(2.0), Some(3.0), Some(4.0)]);
    assert_eq!(card.points[0].latency_p95_ms, Some(12.0));
    assert_eq!(card.points[0].health, Some(1.0));

    view.apply(&envelope(9, None, snapshot("orders", 9, false, 0.0)));
    let snap = view.snapshot();
    assert_eq!(snap.services[0].status, "unhealthy");
    assert_eq!(
        snap.services[0].points.back().map(|p| p.health),
        Some(Some(0.0))
    );
}

#[test]
fn roll_ups_take_over_the_card_once_seen() {
    let mut view = View::new(Limits::default());
    view.apply(&envelope(1, None, snapshot("orders", 1, true, 5.0)));
    let Event::MetricSnapshot(mut rolled) = snapshot("orders", 2, true, 50.0) else {
        unreachable!()
    };
    rolled.scope = SnapshotScope::Service;
    rolled.instance = "*".into();
    rolled.replicas = Some(Replicas {
        total: 2,
        running: 1,
        healthy: 1,
    });
    view.apply(&envelope(2, None, Event::MetricSnapshot(rolled)));
    // An instance snapshot after the roll-up adds no point and leaves the status alone.
    view.apply(&envelope(3, None, snapshot("orders", 3, true, 7.0)));
    let card = &view.snapshot().services[0];
    assert_eq!(card.status, "unhealthy", "one of two replicas healthy");
    assert_eq!(card.points.back().and_then(|p| p.request_rate), Some(50.0));
    assert_eq!(card.points.len(), 2);
}

#[test]
fn a_chaos_run_tells_its_story_from_fault_to_recovery() {
    let mut view = View::new(Limits::default());
    let run = Some("run-1");
    view.apply(&envelope(1, None, snapshot("orders", 1, true, 5.0)));
    let injected = Event::ChaosInjected(ChaosInjected {
        run_id: "run-1".into(),
        service: name("orders"),
        instance: "orders-1".into(),
        container_id: "c1".into(),
        fault: FaultKind::Crash,
        params: BTreeMap::new(),
        injected_ms: 10,
        revert_at_ms: 100,
    });
    view.apply(&envelope(10, run, injected));
    assert_eq!(view.snapshot().incidents[0].status, Status::Pending);
    let deltas = view.apply(&envelope(11, run, anomaly(AnomalyState::Firing)));
    assert!(
        deltas
            .iter()
            .any(|d| matches!(d, Delta::Service(s) if s.anomaly.as_deref() == Some("crashed"))),
        "the card shows the anomaly: {deltas:?}"
    );
    view.apply(&envelope(12, run, incident(IncidentState::Opened)));
    assert_eq!(view.snapshot().incidents[0].status, Status::Open);
    view.apply(&envelope(
        13,
        run,
        Event::ActionRequest(ActionRequest {
            action_id: "act-1".into(),
            incident_id: "inc-1".into(),
            service: name("orders"),
            instance: "orders-1".into(),
            container_id: "c1".into(),
            action: ActionKind::Restart,
            params: BTreeMap::new(),
            timeout_ms: 1000,
            reason: "playbook crashed step 1".into(),
        }),
    ));
    view.apply(&envelope(14, run, incident(IncidentState::Acting)));
    // The same state again is no news.
    assert!(view
        .apply(&envelope(15, run, incident(IncidentState::Acting)))
        .is_empty());
    view.apply(&envelope(
        16,
        run,
        Event::ActionResult(ActionResult {
            action_id: "act-1".into(),
            incident_id: "inc-1".into(),
            service: name("orders"),
            instance: "orders-1".into(),
            action: ActionKind::Restart,
            outcome: ActionOutcome::Succeeded,
            error: None,
            duration_ms: 480,
            finished_ms: 16,
            replaced_by: None,
        }),
    ));
    view.apply(&envelope(17, run, anomaly(AnomalyState::Cleared)));
    view.apply(&envelope(18, run, incident(IncidentState::Recovered)));
    // Closing a recovered incident keeps the outcome, and says so in the timeline.
    view.apply(&envelope(19, run, incident(IncidentState::Closed)));

    let snap = view.snapshot();
    assert_eq!(snap.incidents.len(), 1, "one story per correlation id");
    let story = &snap.incidents[0];
    assert_eq!(story.key, "run-1");
    assert_eq!(story.status, Status::Recovered);
    assert_eq!(story.incident_id.as_deref(), Some("inc-1"));
    assert_eq!(story.chaos_run.as_deref(), Some("run-1"));
    let steps: Vec<Step> = story.timeline.iter().map(|l| l.step).collect();
    assert_eq!(
        steps,
        vec![
            Step::Fault,
            Step::Anomaly,
            Step::Incident,
            Step::Action,
            Step::Incident,
            Step::Result,
            Step::Anomaly,
            Step::Incident,
            Step::Incident
        ]
    );
    assert_eq!(story.incident_state.as_deref(), Some("closed"));
    assert!(story.timeline[5]
        .text
        .contains("restart succeeded in 480 ms"));
    assert_eq!(snap.services[0].anomaly, None, "cleared on the card too");
}

#[test]
fn incidents_are_bounded_ended_ones_dropped_first() {
    let mut view = View::new(Limits {
        incidents: 2,
        ..Limits::default()
    });
    // run-a is open, run-b ended, then run-c arrives: run-b goes although it is newer.
    view.apply(&envelope(1, Some("run-a"), incident(IncidentState::Opened)));
    view.apply(&envelope(2, Some("run-b"), incident(IncidentState::Opened)));
    view.apply(&envelope(
        3,
        Some("run-b"),
        incident(IncidentState::Recovered),
    ));
    let deltas = view.apply(&envelope(4, Some("run-c"), incident(IncidentState::Opened)));
    assert!(
        deltas.contains(&Delta::IncidentGone {
            key: "run-b".into()
        }),
        "{deltas:?}"
    );
    let keys: Vec<String> = view
        .snapshot()
        .incidents
        .into_iter()
        .map(|i| i.key)
        .collect();
    assert_eq!(keys, vec!["run-c".to_string(), "run-a".to_string()]);
}

#[test]
fn timelines_keep_their_beginning_within_the_limit() {
    let mut view = View::new(Limits {
        timeline: 3,
        ..Limits::default()
    });
    for (i, state) in [
        IncidentState::Opened,
        IncidentState::Acting,
        IncidentState::Verifying,
        IncidentState::Acting,
        IncidentState::Verifying,
    ]
    .into_iter()
    .enumerate()
    {
        view.apply(&envelope(i as u64, Some("run-1"), incident(state)));
    }
    let story = &view.snapshot().incidents[0];
    assert_eq!(story.timeline.len(), 3);
    assert!(story.timeline[0].text.contains("opened"), "{story:?}");
    assert!(story.timeline[2].text.contains("verifying"), "{story:?}");
}

#[test]
fn audit_is_bounded_newest_first_and_stray_events_start_nothing() {
    let mut view = View::new(Limits {
        audit: 2,
        ..Limits::default()
    });
    for (i, what) in ["a.one", "b.two", "c.three"].into_iter().enumerate() {
        view.apply(&envelope(
            i as u64,
            Some("run-1"),
            Event::Audit(AuditRecord {
                stage: Stage::Decider,
                service: name("orders"),
                what: what.into(),
                why: "because".into(),
                outcome: "ok".into(),
                about: None,
                action_id: None,
            }),
        ));
    }
    let whats: Vec<String> = view.snapshot().audit.into_iter().map(|a| a.what).collect();
    assert_eq!(whats, vec!["c.three".to_string(), "b.two".to_string()]);
    // A cleared anomaly without a story, or an event without a correlation id, adds none.
    assert!(view
        .apply(&envelope(5, Some("gone"), anomaly(AnomalyState::Cleared)))
        .is_empty());
    view.apply(&envelope(6, None, incident(IncidentState::Opened)));
    assert_eq!(
        view.snapshot().incidents[0].key,
        "inc-1",
        "no correlation id: keyed by the incident id"
    );
}

#[test]
fn event_ids_are_taken_once_within_a_bounded_memory() {
    let mut seen = SeenIds::new(2);
    assert!(seen.first_time("a"));
    assert!(!seen.first_time("a"));
    assert!(seen.first_time("b"));
    assert!(seen.first_time("c"));
    assert!(seen.first_time("a"), "a was forgotten to stay within 2");
    assert!(!seen.first_time("c"));
}

#[test]
fn services_are_bounded() {
    let mut view = View::new(Limits {
        services: 2,
        ..Limits::default()
    });
    for s in ["a", "b", "c"] {
        view.apply(&envelope(1, None, snapshot(s, 1, true, 1.0)));
    }
    let names: Vec<String> = view
        .snapshot()
        .services
        .into_iter()
        .map(|s| s.service)
        .collect();
    assert_eq!(names, vec!["a".to_string(), "b".to_string()]);
}
