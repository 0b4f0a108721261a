//! One sample of every event kind with fixed ids and times: the encoded fixtures under
//! `fixtures/v<N>/` are made from these, and tests across the workspace build events here.

use std::collections::BTreeMap;

use crate::envelope::{Envelope, EventId, Producer, Stage, SCHEMA_VERSION};
use crate::events::*;
use crate::service::ServiceName;

const T0: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

fn svc() -> ServiceName {
    ServiceName::new("orders").expect("valid name")
}

/// Wraps a body in an envelope with fixed id and time, as the fixtures were written.
pub fn envelope(stage: Stage, body: Event) -> Envelope {
    Envelope {
        schema_version: SCHEMA_VERSION,
        event_id: EventId(format!("0190a000-0000-7000-8000-{:012}", body.kind().len())),
        timestamp_ms: T0,
        producer: Producer {
            stage,
            instance: "sample-1".into(),
        },
        correlation_id: Some("run-42".into()),
        body,
    }
}

pub fn metric_snapshot() -> MetricSnapshot {
    let features = [
        (feature::REQUEST_RATE, 20.0),
        (feature::ERROR_RATIO, 0.01),
        (feature::LATENCY_P95_MS, 12.5),
        (feature::HEALTH_OK, 1.0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    MetricSnapshot {
        service: svc(),
        instance: "orders-1".into(),
        container_id: "c0ffee".into(),
        observed_ms: T0,
        interval_ms: 1000,
        state: ContainerState::Running,
        health: Some(HealthProbe {
            ok: true,
            status: Some(200),
            latency_ms: 1.5,
            error: None,
        }),
        scrape: Some(ScrapeOutcome {
            ok: true,
            samples: 42,
            bytes: 2048,
            latency_ms: 2.0,
            error: None,
        }),
        features,
        scope: SnapshotScope::Instance,
        replicas: None,
        depends_on: Vec::new(),
    }
}

pub fn container_event() -> ContainerEvent {
    ContainerEvent {
        service: svc(),
        instance: "orders-1".into(),
        container_id: "c0ffee".into(),
        kind: ContainerEventKind::Died,
        exit_code: Some(137),
        observed_ms: T0,
    }
}

pub fn anomaly() -> Anomaly {
    Anomaly {
        anomaly_id: "anomaly-1".into(),
        service: svc(),
        instance: "orders-1".into(),
        container_id: "c0ffee".into(),
        state: AnomalyState::Firing,
        signature: Signature::Unresponsive,
        detector: "rule:health_failing".into(),
        score: 3.0,
        threshold: 2.0,
        contributions: vec![Contribution {
            metric: feature::HEALTH_OK.into(),
            value: 0.0,
            expected: 1.0,
            share: 1.0,
            direction: Direction::Down,
        }],
        reason: "health check failed 3 times in a row".into(),
        started_ms: T0,
        depends_on: Vec::new(),
    }
}

pub fn incident() -> Incident {
    Incident {
        incident_id: "incident-1".into(),
        service: svc(),
        state: IncidentState::Verifying,
        signature: Signature::Unresponsive,
        chaos_run: Some("run-42".into()),
        opened_ms: T0,
        timeline: vec![TimelineEntry {
            at_ms: T0,
            what: "opened: unresponsive".into(),
        }],
    }
}

pub fn action_request() -> ActionRequest {
    ActionRequest {
        action_id: "action-1".into(),
        incident_id: "incident-1".into(),
        service: svc(),
        instance: "orders-1".into(),
        container_id: "c0ffee".into(),
        action: ActionKind::Restart,
        params: BTreeMap::from([("stop_grace_s".to_string(), "1".to_string())]),
        timeout_ms: 30_000,
        reason: "playbook unresponsive, step 1".into(),
    }
}

pub fn action_result() -> ActionResult {
    ActionResult {
        action_id: "action-1".into(),
        incident_id: "incident-1".into(),
        service: svc(),
        instance: "orders-1".into(),
        action: ActionKind::Restart,
        outcome: ActionOutcome::Succeeded,
        error: None,
        duration_ms: 640,
        finished_ms: T0 + 640,
        replaced_by: None,
    }
}

pub fn chaos_request() -> ChaosRequest {
    ChaosRequest {
        run_id: Some("run-42".into()),
        service: svc(),
        fault: FaultKind::Hang,
        duration_ms: 30_000,
        params: BTreeMap::new(),
    }
}

pub fn chaos_injected() -> ChaosInjected {
    ChaosInjected {
        run_id: "run-42".into(),
        service: svc(),
        instance: "orders-1".into(),
        container_id: "c0ffee".into(),
        fault: FaultKind::Hang,
        params: BTreeMap::new(),
        injected_ms: T0,
        revert_at_ms: T0 + 30_000,
    }
}

pub fn chaos_reverted() -> ChaosReverted {
    ChaosReverted {
        run_id: "run-42".into(),
        service: svc(),
        instance: "orders-1".into(),
        fault: FaultKind::Hang,
        note: "already healed".into(),
        reverted_ms: T0 + 30_000,
    }
}

pub fn chaos_rejected() -> ChaosRejected {
    ChaosRejected {
        run_id: "run-43".into(),
        service: svc(),
        fault: FaultKind::Kill,
        reason: "container is not labelled immune.chaos=true".into(),
    }
}

pub fn audit_record() -> AuditRecord {
    AuditRecord {
        stage: Stage::Decider,
        service: svc(),
        what: "action.requested".into(),
        why: "playbook unresponsive, step 1".into(),
        outcome: "requested restart of orders-1".into(),
        about: Some(EventId("0190a000-0000-7000-8000-000000000007".into())),
        action_id: None,
    }
}

pub fn dead_letter() -> DeadLetter {
    DeadLetter {
        stage: Stage::Detector,
        subject: "immune.metrics.orders".into(),
        reason: "not a valid immune envelope: invalid marker".into(),
        reason_kind: "malformed".into(),
        payload: b"garbage".to_vec(),
        payload_len: 7,
    }
}

pub fn escalation() -> Escalation {
    Escalation {
        incident_id: "incident-1".into(),
        service: svc(),
        signature: Signature::Unresponsive,
        chaos_run: Some("run-42".into()),
        reason: "all 2 playbook actions tried".into(),
        signals: vec!["health probe failing for 3 intervals".into()],
        actions: vec![ActionTried {
            action_id: "action-1".into(),
            action: ActionKind::Restart,
            outcome: "not_verified".into(),
            detail: "no steady state within 30000 ms".into(),
            requested_ms: T0,
        }],
        timeline: vec![TimelineEntry {
            at_ms: T0,
            what: "opened: unresponsive".into(),
        }],
        opened_ms: T0,
        escalated_ms: T0 + 60_000,
    }
}

pub fn approval() -> Approval {
    Approval {
        service: svc(),
        incident_id: "incident-1".into(),
        action_id: "action-1".into(),
        approved: true,
        by: "oncall".into(),
    }
}

/// Every event kind once, wrapped as its usual producer would, named as its fixture file.
pub fn all() -> Vec<(&'static str, Envelope)> {
    vec![
        (
            "metric_snapshot",
            envelope(Stage::Collector, Event::MetricSnapshot(metric_snapshot())),
        ),
        (
            "container_event",
            envelope(Stage::Collector, Event::ContainerEvent(container_event())),
        ),
        (
            "anomaly",
            envelope(Stage::Detector, Event::Anomaly(anomaly())),
        ),
        (
            "incident",
            envelope(Stage::Decider, Event::Incident(incident())),
        ),
        (
            "action_request",
            envelope(Stage::Decider, Event::ActionRequest(action_request())),
        ),
        (
            "action_result",
            envelope(Stage::Executor, Event::ActionResult(action_result())),
        ),
        (
            "chaos_request",
            envelope(Stage::Client, Event::ChaosRequest(chaos_request())),
        ),
        (
            "chaos_injected",
            envelope(Stage::Chaos, Event::ChaosInjected(chaos_injected())),
        ),
        (
            "chaos_reverted",
            envelope(Stage::Chaos, Event::ChaosReverted(chaos_reverted())),
        ),
        (
            "chaos_rejected",
            envelope(Stage::Chaos, Event::ChaosRejected(chaos_rejected())),
        ),
        (
            "audit",
            envelope(Stage::Decider, Event::Audit(audit_record())),
        ),
        (
            "dead_letter",
            envelope(Stage::Detector, Event::DeadLetter(dead_letter())),
        ),
        (
            "escalation",
            envelope(Stage::Decider, Event::Escalation(escalation())),
        ),
        (
            "approval",
            envelope(Stage::Client, Event::Approval(approval())),
        ),
    ]
}
