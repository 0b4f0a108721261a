//! The foundation slice, against the real things: a real nats-server, the five stages, and
//! a demo service in a real container. A crash, a hang and a pause are injected through the
//! chaos subject; each time the container must be restarted (unpaused, keeping its state,
//! for the pause) and healthy again, and the audit stream must hold the whole chain (chaos
//! injected, anomaly, action, result, recovered) under the chaos run's correlation id (the
//! checks are `immune_tests::heal`; the pause's are on its actions, see below).

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use immune_nats::{decode, ActionKind, ChaosRequest, Event, FaultKind, ServiceName};
use immune_testkit::{unique, within, DemoContainer, DemoSpec, NatsServer};
use immune_tests::{Pipeline, PipelineConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_a_hang_and_a_pause_are_healed_end_to_end() {
    let nats = NatsServer::start().await;
    let project = unique("e2e");
    let demo = DemoContainer::start(DemoSpec::new("orders", &project)).await;
    let pipeline = Pipeline::start(PipelineConfig::new(&nats.url(), &project));

    let bus = immune_tests::client_bus(&nats.url()).await;

    // The collector must have found the container and seen it healthy before we break it.
    immune_tests::await_healthy_snapshot(&bus, &demo).await;

    for fault in [FaultKind::Crash, FaultKind::Hang] {
        let healed = immune_tests::heal(&bus, &demo, fault).await;
        println!(
            "{fault}: detected {} ms after injection; healthy again {} ms after injection \
             (wall clock request-to-recovered {} ms)",
            healed.detect_ms,
            healed.heal_ms,
            healed.wall.as_millis()
        );
    }

    unpaused_not_restarted(&bus, &demo).await;

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

/// A pause is healed by one unpause, the container not restarted (its state kept). Checked
/// on the actions and the container, not on the run's audit chain: the pause is detected from
/// Docker's event within milliseconds, sometimes before the detector has heard of the chaos
/// run, and its records then carry the anomaly's own correlation id.
async fn unpaused_not_restarted(bus: &immune_runtime::Bus, demo: &DemoContainer) {
    let started_before = demo.started_at().await;
    let mut requests = bus
        .client()
        .subscribe(immune_nats::subject::ACTIONS_ALL)
        .await
        .expect("subscribe to actions");
    let injected = std::time::Instant::now();
    immune_chaos::follow::request(
        bus,
        ChaosRequest {
            run_id: None,
            service: ServiceName::new(demo.spec.service.as_str()).expect("name"),
            fault: FaultKind::Pause,
            duration_ms: 120_000,
            params: BTreeMap::new(),
        },
    )
    .await
    .expect("chaos request published");
    let action = within(
        Duration::from_secs(30),
        "an action on the paused container",
        async {
            loop {
                let m = requests.next().await.expect("actions subject open");
                if let Ok(Event::ActionRequest(r)) = decode(&m.payload).map(|e| e.body) {
                    if r.container_id.starts_with(&demo.id) || demo.id.starts_with(&r.container_id)
                    {
                        return r.action;
                    }
                }
            }
        },
    )
    .await;
    assert_eq!(action, ActionKind::Unpause, "the first action on a pause");
    within(Duration::from_secs(30), "orders healthy again", async {
        while !demo.healthy().await {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    println!(
        "pause: healthy again {} ms after the chaos request",
        injected.elapsed().as_millis()
    );
    assert_eq!(
        demo.started_at().await,
        started_before,
        "pause: the container was restarted"
    );
}
