//! The foundation slice, against the real things: a real nats-server, the five stages, and
//! a demo service in a real container. A crash and then a hang are injected through the
//! chaos subject; each time the container must be restarted and healthy again, and the audit
//! stream must hold the whole chain (chaos injected, anomaly, action, result, recovered)
//! under the chaos run's correlation id.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use immune_chaos::follow::{self, Follower, RunEnd};
use immune_nats::{decode, AuditRecord, ChaosRequest, Event, FaultKind, ServiceName, Stage};
use immune_testkit::{unique, within, DemoContainer, DemoSpec, NatsServer};
use immune_tests::{Pipeline, PipelineConfig};

/// The audit chain every healed fault must leave, in order of what must have happened.
const CHAIN: [(Stage, &str); 5] = [
    (Stage::Chaos, "chaos.injected"),
    (Stage::Detector, "anomaly.firing"),
    (Stage::Decider, "action.requested"),
    (Stage::Executor, "action.succeeded"),
    (Stage::Decider, "incident.recovered"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_and_a_hang_are_healed_end_to_end() {
    let nats = NatsServer::start().await;
    let project = unique("e2e");
    let demo = DemoContainer::start(DemoSpec::new("orders", &project)).await;
    let pipeline = Pipeline::start(PipelineConfig::new(&nats.url(), &project));

    let bus = immune_tests::client_bus(&nats.url()).await;

    // The collector must have found the container and seen it healthy before we break it.
    let mut metrics = bus
        .client()
        .subscribe("immune.metrics.orders")
        .await
        .expect("subscribe");
    within(
        Duration::from_secs(30),
        "a healthy snapshot of orders from the collector",
        async {
            while let Some(m) = metrics.next().await {
                if let Ok(env) = decode(&m.payload) {
                    if let Event::MetricSnapshot(s) = env.body {
                        if s.instance == demo.name && s.health.is_some_and(|h| h.ok) {
                            return;
                        }
                    }
                }
            }
        },
    )
    .await;

    for fault in [FaultKind::Crash, FaultKind::Hang] {
        let started_before = demo.started_at().await;
        let mut follower = Follower::subscribe(bus.client())
            .await
            .expect("subscribe audit");
        let injected_at = Instant::now();
        let request = ChaosRequest {
            run_id: None,
            service: ServiceName::new("orders").expect("name"),
            fault,
            duration_ms: 120_000,
            params: BTreeMap::new(),
        };
        let run_id = follow::request(&bus, request)
            .await
            .expect("chaos request published");
        let mut records: Vec<(u64, AuditRecord)> = Vec::new();
        let end = follower
            .until_end(&run_id, Duration::from_secs(60), |env, record| {
                records.push((env.timestamp_ms, record.clone()));
            })
            .await;
        let trail: Vec<String> = records
            .iter()
            .map(|(_, r)| format!("{} {}: {}", r.stage, r.what, r.outcome))
            .collect();
        assert_eq!(
            end,
            RunEnd::Recovered,
            "{fault}: run did not recover; audit trail so far: {trail:#?}"
        );
        let healed_after = injected_at.elapsed();

        // The container really was restarted and really answers again.
        assert_ne!(
            demo.started_at().await,
            started_before,
            "{fault}: container was not restarted"
        );
        assert!(
            demo.healthy().await,
            "{fault}: recovered, yet /health does not answer"
        );

        // The whole chain, in order, under one correlation id (the follower only kept this run's).
        let mut position = 0;
        for (stage, what) in CHAIN {
            let found = records[position..]
                .iter()
                .position(|(_, r)| r.stage == stage && r.what == what);
            let Some(offset) = found else {
                panic!("{fault}: audit chain lacks {stage} {what} after position {position}: {trail:#?}");
            };
            position += offset;
        }
        let restarts = records
            .iter()
            .filter(|(_, r)| r.what == "action.requested")
            .count();
        assert_eq!(
            restarts, 1,
            "{fault}: exactly one restart expected: {trail:#?}"
        );

        let stamp = |what: &str| {
            records
                .iter()
                .find(|(_, r)| r.what == what)
                .map(|(t, _)| *t)
                .expect("stamped")
        };
        let detect_ms = stamp("anomaly.firing") - stamp("chaos.injected");
        let heal_ms = stamp("incident.recovered") - stamp("chaos.injected");
        println!(
            "{fault}: detected {detect_ms} ms after injection; healthy again {heal_ms} ms after injection \
             (wall clock request-to-recovered {} ms)",
            healed_after.as_millis()
        );
    }

    // Nothing went to the dead-letter subject on the way, and nothing failed to publish.
    for (stage, telemetry) in &pipeline.telemetry {
        assert_eq!(
            telemetry.count("publish_failed", ""),
            0,
            "{stage} failed to publish"
        );
    }
    pipeline.stop().await;
    drop(demo);
}
