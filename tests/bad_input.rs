//! Bad input on every input subject lands in the dead-letter subject with a reason, is
//! counted by the stage that received it, and every stage keeps working afterwards: garbage,
//! an empty message, an event on the wrong subject, and on every input a future schema
//! version and a message over its kind's size limit that the server still delivers (e.g. a
//! 0.8 MB snapshot with 50,000 features).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use immune_nats::{
    decode, encode, max_bytes, samples, AnomalyState, Envelope, Event, Signature, Stage,
    MAX_MESSAGE_BYTES, SCHEMA_VERSION,
};
use immune_testkit::{unique, within, NatsServer};
use immune_tests::{Pipeline, PipelineConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_is_dead_lettered_counted_and_survived() {
    let nats = NatsServer::start().await;
    let bus = immune_tests::client_bus(&nats.url()).await;
    let mut dead_letters = bus
        .client()
        .subscribe("immune.deadletter.>")
        .await
        .expect("subscribe");
    let mut audit = bus
        .client()
        .subscribe("immune.audit.>")
        .await
        .expect("subscribe");
    let mut results = bus
        .client()
        .subscribe("immune.results.>")
        .await
        .expect("subscribe");

    let pipeline = Pipeline::start(PipelineConfig::new(&nats.url(), &unique("bad-input")));

    let garbage = b"\xc1 this is not msgpack".to_vec();
    let wrong_subject = encode(&samples::all()[2].1).expect("encodes"); // an anomaly
    let by_kind = |kind: &str| {
        samples::all()
            .into_iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, e)| e)
            .expect("a sample of every kind")
    };
    // (subject, payload, stage that must dead-letter it, reason kind)
    let mut cases: Vec<(&str, Vec<u8>, Stage, &str)> = vec![
        (
            "immune.metrics.orders",
            garbage.clone(),
            Stage::Detector,
            "malformed",
        ),
        (
            "immune.anomalies.orders",
            garbage.clone(),
            Stage::Decider,
            "malformed",
        ),
        (
            "immune.results.orders",
            Vec::new(),
            Stage::Decider,
            "malformed",
        ),
        (
            "immune.actions.orders",
            wrong_subject,
            Stage::Executor,
            "wrong_subject",
        ),
        ("immune.chaos.requests", garbage, Stage::Chaos, "malformed"),
    ];
    // A future schema version and an oversize message, of the right kind, on every input.
    for (subject, kind, stage) in [
        ("immune.metrics.orders", "metric_snapshot", Stage::Detector),
        ("immune.events.orders", "container_event", Stage::Detector),
        ("immune.anomalies.orders", "anomaly", Stage::Decider),
        ("immune.actions.orders", "action_request", Stage::Executor),
        ("immune.chaos.requests", "chaos_request", Stage::Chaos),
    ] {
        cases.push((
            subject,
            future_version(by_kind(kind)),
            stage,
            "unsupported_version",
        ));
        cases.push((subject, oversize(by_kind(kind)), stage, "too_large"));
    }
    let js = bus.jetstream();
    for (subject, payload, _, _) in &cases {
        js.publish(subject.to_string(), payload.clone().into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }

    let mut expected: HashSet<(Stage, String, String)> = cases
        .iter()
        .map(|(subject, _, stage, kind)| (*stage, subject.to_string(), kind.to_string()))
        .collect();
    within(
        Duration::from_secs(30),
        "a dead letter for every bad message",
        async {
            while !expected.is_empty() {
                let m = dead_letters.next().await.expect("subscription open");
                let Event::DeadLetter(letter) =
                    decode(&m.payload).expect("dead letters decode").body
                else {
                    panic!("not a dead letter on {}", m.subject);
                };
                assert!(!letter.reason.is_empty(), "a dead letter must say why");
                assert_eq!(
                    m.subject.as_str(),
                    format!("immune.deadletter.{}", letter.stage)
                );
                expected.remove(&(
                    letter.stage,
                    letter.subject.clone(),
                    letter.reason_kind.clone(),
                ));
            }
        },
    )
    .await;
    for (_, _, stage, kind) in &cases {
        assert!(
            pipeline.telemetry(*stage).count("dead_lettered", kind) >= 1,
            "{stage} did not count {kind}"
        );
    }

    // Every stage still works. Detector: a paused container is an anomaly.
    let mut paused = samples::metric_snapshot();
    paused.state = immune_nats::ContainerState::Paused;
    bus.publish(None, Event::MetricSnapshot(paused))
        .await
        .expect("publish");
    // Decider: a firing anomaly without a playbook escalates.
    let mut drop_in_traffic = samples::anomaly();
    drop_in_traffic.service = immune_nats::ServiceName::new("payments").expect("name");
    drop_in_traffic.signature = Signature::TrafficDrop;
    drop_in_traffic.state = AnomalyState::Firing;
    bus.publish(
        Some("bad-input-check".into()),
        Event::Anomaly(drop_in_traffic),
    )
    .await
    .expect("publish");
    // Executor: an action on a container that does not exist fails with a result.
    let mut ghost = samples::action_request();
    ghost.container_id = "no-such-container".into();
    bus.publish(None, Event::ActionRequest(ghost))
        .await
        .expect("publish");
    // Chaos: a request for a service that has no container is rejected, with a reason.
    let ghost_fault = immune_nats::ChaosRequest {
        run_id: Some("ghost-run".into()),
        service: immune_nats::ServiceName::new("ghost").expect("name"),
        fault: immune_nats::FaultKind::Kill,
        duration_ms: 1_000,
        params: BTreeMap::new(),
    };
    bus.publish(Some("ghost-run".into()), Event::ChaosRequest(ghost_fault))
        .await
        .expect("publish");

    let mut alive: HashSet<(Stage, String)> = [
        (Stage::Detector, "anomaly.firing"),
        (Stage::Decider, "incident.escalated"),
        (Stage::Chaos, "chaos.rejected"),
    ]
    .into_iter()
    .map(|(stage, what)| (stage, what.to_string()))
    .collect();
    within(
        Duration::from_secs(30),
        "detector, decider and chaos to act on good input after the bad",
        async {
            while !alive.is_empty() {
                let m = audit.next().await.expect("subscription open");
                if let Ok(env) = decode(&m.payload) {
                    if let Event::Audit(r) = env.body {
                        alive.remove(&(r.stage, r.what));
                    }
                }
            }
        },
    )
    .await;
    within(
        Duration::from_secs(30),
        "the executor's result for the ghost container",
        async {
            loop {
                let m = results.next().await.expect("subscription open");
                if let Ok(env) = decode(&m.payload) {
                    if let Event::ActionResult(r) = env.body {
                        assert_ne!(r.outcome, immune_nats::ActionOutcome::Succeeded);
                        assert!(r.error.is_some_and(|e| !e.is_empty()));
                        return;
                    }
                }
            }
        },
    )
    .await;
    pipeline.stop().await;
}

/// `envelope` as a producer of a later schema version would write it.
fn future_version(mut envelope: Envelope) -> Vec<u8> {
    envelope.schema_version = SCHEMA_VERSION + 7;
    rmp_serde::to_vec_named(&envelope).expect("encodes")
}

/// `envelope` blown up past its kind's limit but under the server's max_payload, written as
/// a producer that does not check would (our encoder refuses it).
fn oversize(mut envelope: Envelope) -> Vec<u8> {
    let kind = envelope.body.kind();
    let filler = |i: usize| format!("padding-{i:06}");
    match &mut envelope.body {
        Event::MetricSnapshot(s) => {
            s.features = (0..50_000).map(|i| (format!("f{i:05}"), 1.0)).collect();
        }
        Event::ContainerEvent(e) => e.instance = "x".repeat(max_bytes(kind) + 1),
        Event::Anomaly(a) => a.reason = "x".repeat(max_bytes(kind) + 1),
        Event::ActionRequest(r) => {
            r.params = (0..20_000).map(|i| (filler(i), "1".to_string())).collect();
        }
        Event::ChaosRequest(r) => {
            r.params = (0..20_000).map(|i| (filler(i), "1".to_string())).collect();
        }
        other => panic!("no oversize case for {}", other.kind()),
    }
    assert!(
        encode(&envelope).is_err(),
        "our encoder refuses a {kind} this large"
    );
    let bytes = rmp_serde::to_vec_named(&envelope).expect("encodes");
    assert!(
        bytes.len() > max_bytes(kind) && bytes.len() < MAX_MESSAGE_BYTES - 4096,
        "{kind}: {} bytes",
        bytes.len()
    );
    bytes
}
