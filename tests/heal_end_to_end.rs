//! The foundation slice, against the real things: a real nats-server, the five stages, and
//! a demo service in a real container. A crash, a hang and a pause are injected through the
//! chaos subject; each time the container must be restarted (unpaused, keeping its state,
//! for the pause) and healthy again, and the audit stream must hold the whole chain (chaos
//! injected, anomaly, action, result, recovered) under the chaos run's correlation id (the
//! checks are `immune_tests::heal_by`).

use immune_nats::{ActionKind, FaultKind};
use immune_testkit::{unique, DemoContainer, DemoSpec, NatsServer};
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

    for (fault, action) in [
        (FaultKind::Crash, ActionKind::Restart),
        (FaultKind::Hang, ActionKind::Restart),
        (FaultKind::Pause, ActionKind::Unpause),
    ] {
        let healed = immune_tests::heal_by(&bus, &demo, fault, action).await;
        println!(
            "{fault}: detected {} ms after injection; healthy again {} ms after injection \
             (wall clock request-to-recovered {} ms)",
            healed.detect_ms,
            healed.heal_ms,
            healed.wall.as_millis()
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
