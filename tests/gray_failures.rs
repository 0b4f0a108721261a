//! A gray failure healed by learning, against the real things: a real nats-server, the five
//! stages, a demo service in a real container under steady load from this test. The learned
//! detector warms up in seconds; a latency fault caused inside the service (the chaos
//! `latency` fault) is injected twice and must each time be healed by immune before chaos
//! would revert it. The playbook's prior for `latency_up` tries the mitigations first, which
//! do not remove this cause; the first incident finds that the restart does, and the second
//! incident tries the restart first and heals sooner.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use immune_chaos::follow::{self, Follower, RunEnd};
use immune_nats::streams::DETECTOR_MODELS;
use immune_nats::{decode, ActionKind, AuditCode, ChaosRequest, Event, FaultKind, ServiceName};
use immune_testkit::{unique, within, DemoContainer, DemoSpec, NatsServer};
use immune_tests::load::{remove_replicas, Load};
use immune_tests::{Pipeline, PipelineConfig};

/// The load the test sends the service (the demo's load generator sends 20 requests a second).
const LOAD_RPS: u64 = 20;
/// How long each fault would last before chaos reverts it: longer than any healing here, so a
/// recovery is immune's.
const FAULT_MS: u64 = 150_000;

/// One incident as the audit trail tells it.
#[derive(Debug)]
struct Incident {
    actions: Vec<ActionKind>,
    healed_after: Duration,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_latency_fault_is_healed_and_the_second_time_the_restart_comes_first() {
    let nats = NatsServer::start().await;
    let project = unique("gray");
    let demo = DemoContainer::start(DemoSpec::new("orders", &project)).await;
    let mut config = PipelineConfig::new(&nats.url(), &project);
    config.detector.learned = immune_detector::LearnedConfig::default(); // with its warm-up
    config.decider.policy.learning.epsilon = 0.0; // the order learning gives, no exploration
    config.decider.policy.verify_deadline_ms = 12_000;
    let pipeline = Pipeline::start(config);
    let bus = immune_tests::client_bus(&nats.url()).await;
    // The whole audit trail as it happens (shown with --nocapture, and in a failed run's log).
    let mut audit = bus
        .client()
        .subscribe(immune_nats::subject::AUDIT_ALL)
        .await
        .expect("subscribe to the audit stream");
    let t0 = Instant::now();
    tokio::spawn(async move {
        while let Some(m) = audit.next().await {
            if let Ok(Event::Audit(r)) = decode(&m.payload).map(|e| e.body) {
                let at = t0.elapsed().as_secs_f64();
                eprintln!(
                    "{at:6.1} s {} {}: {} | {}",
                    r.stage, r.what, r.outcome, r.why
                );
            }
        }
    });
    let load = Load::start(&demo, LOAD_RPS).await;

    // The learned model of the service, fitted within its warm-up (not its 5-minute baseline).
    let models = bus.bucket(DETECTOR_MODELS).await.expect("models bucket");
    let warm = Instant::now();
    within(
        Duration::from_secs(90),
        "the detector's warm-up model of orders (is the collector scraping it under load?)",
        async {
            while models.get("orders").await.ok().flatten().is_none() {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        },
    )
    .await;
    println!("warm-up model after {:.1} s", warm.elapsed().as_secs_f64());

    let first = incident(&bus, &demo).await;
    // An operator's scale-in: the replicas the first incident's scale_out made take no
    // traffic from this test, and the next fault must go where the load is.
    remove_replicas(&project).await;
    let second = incident(&bus, &demo).await;
    println!("first incident: {first:?}\nsecond incident: {second:?}");
    assert_eq!(
        first.actions.last(),
        Some(&ActionKind::Restart),
        "the restart removed the cause: {first:?}"
    );
    assert_eq!(
        second.actions.first(),
        Some(&ActionKind::Restart),
        "learned: the restart comes first the second time: {second:?}"
    );
    if first.actions.len() > 1 {
        assert!(
            second.healed_after < first.healed_after,
            "healed sooner once learned: {first:?} then {second:?}"
        );
    }
    assert!(load.served() > 0, "the load reached the service");
    load.stop().await;
    drop(pipeline);
    remove_replicas(&project).await;
}

/// Injects 400 ms of latency into orders and follows the run until immune recovers it.
async fn incident(bus: &immune_runtime::Bus, demo: &DemoContainer) -> Incident {
    let mut follower = Follower::subscribe(bus.client())
        .await
        .expect("subscribe to the audit stream");
    let request = ChaosRequest {
        run_id: None,
        service: ServiceName::new(demo.spec.service.as_str()).expect("name"),
        fault: FaultKind::Latency,
        duration_ms: FAULT_MS,
        params: BTreeMap::from([("latency_ms".to_string(), "400".to_string())]),
    };
    let injected = Instant::now();
    let run_id = follow::request(bus, request)
        .await
        .expect("chaos request published");
    let mut trail = Vec::new();
    let mut actions = Vec::new();
    let end = follower
        .until_end(&run_id, Duration::from_secs(120), |_, record| {
            trail.push(format!(
                "{} {}: {}",
                record.stage, record.what, record.outcome
            ));
            if record.code() == Some(AuditCode::ActionRequested) {
                let action = record.outcome.split(' ').next().unwrap_or_default();
                let word = serde_json::Value::String(action.to_string());
                if let Ok(kind) = serde_json::from_value::<ActionKind>(word) {
                    actions.push(kind);
                }
            }
        })
        .await;
    assert_eq!(
        end,
        RunEnd::Recovered,
        "latency not healed by immune; audit trail: {trail:#?}"
    );
    let healed_after = injected.elapsed();
    assert!(
        healed_after < Duration::from_millis(FAULT_MS),
        "recovered only when chaos reverted it"
    );
    // quiet for longer than the decider's cooldown, so the next incident starts fresh
    tokio::time::sleep(Duration::from_secs(15)).await;
    Incident {
        actions,
        healed_after,
    }
}
