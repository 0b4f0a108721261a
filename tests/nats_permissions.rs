//! NATS authentication and per-stage permissions, against a real nats-server running the
//! SHIPPED `nats/nats-server.conf` (`NatsServer::start_secured`):
//!
//! - the collector's user publishing an action is refused (the violation is counted, the
//!   publish fails with `PermissionDenied` instead of retrying, the stream did not grow), and
//!   neither the console nor the operator may publish actions;
//! - the detector's user can neither create a consumer on the actions nor pull from the
//!   executor's;
//! - a stage may create the contract's streams but not reshape them (no update, so no
//!   republish onto the actions); the operator's client applies a newer stream config;
//! - a wrong password, and no user at all, are refused at connect;
//! - the decider's user publishes an action and the executor's user consumes it;
//! - the whole pipeline heals a crash with each stage logged in as its own user, which
//!   proves every stage's permissions are enough for its work.

use std::time::Duration;

use futures::StreamExt;
use immune_nats::streams::{EXECUTOR, PIPELINE};
use immune_nats::{samples, Event, FaultKind, Stage};
use immune_runtime::{Bus, BusConfig, BusError, Disposition, Shutdown, Telemetry};
use immune_testkit::{unique, within, DemoContainer, DemoSpec, NatsServer};
use immune_tests::{bus_config, Pipeline, PipelineConfig};

/// Connects as `user` with the telemetry of `stage`, so the test can read its counters.
async fn connect_as(server: &NatsServer, user: &str, stage: Stage) -> (Bus, Telemetry) {
    let telemetry = Telemetry::new(stage);
    let (_trigger, shutdown) = Shutdown::new();
    let bus = within(
        Duration::from_secs(30),
        &format!("{user} to connect and provision the streams"),
        Bus::connect(&bus_config(server, user), telemetry.clone(), &shutdown),
    )
    .await
    .unwrap_or_else(|e| panic!("{user} connects: {e}"));
    (bus, telemetry)
}

/// How many messages the pipeline stream holds on the action subjects.
async fn actions_stored(operator: &Bus) -> u64 {
    let stream = operator
        .jetstream()
        .get_stream(PIPELINE.name)
        .await
        .expect("operator reads the pipeline stream");
    let mut subjects = stream
        .info_with_subjects(immune_nats::subject::ACTIONS_ALL)
        .await
        .expect("operator reads the pipeline stream's subjects");
    let mut stored = 0;
    while let Some(subject) = subjects.next().await {
        stored += subject.expect("subject count").1 as u64;
    }
    stored
}

/// `user` publishing an action request: refused with `PermissionDenied`, counted.
async fn assert_may_not_publish_actions(server: &NatsServer, user: &str, stage: Stage) {
    let (bus, telemetry) = connect_as(server, user, stage).await;
    let result = within(
        Duration::from_secs(30),
        &format!("{user}'s refused publish to end (it must not be retried for long)"),
        bus.publish(None, Event::ActionRequest(samples::action_request())),
    )
    .await;
    match result {
        Err(BusError::PermissionDenied { operation, subject }) => {
            assert_eq!(operation, "publish");
            assert_eq!(subject, "immune.actions.orders");
        }
        other => panic!("{user} publishing an action: expected PermissionDenied, got {other:?}"),
    }
    assert!(
        telemetry.count("permission_denied", "publish") >= 1,
        "{user}'s refused publish was not counted: {}",
        telemetry.render()
    );
    assert_eq!(
        telemetry.count("publish_failed", ""),
        1,
        "{user}'s refused publish is one failed publish"
    );
    bus.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_decider_may_publish_actions() {
    let server = NatsServer::start_secured().await;
    let (operator, _) = connect_as(&server, "operator", Stage::Client).await;

    // The collector may publish what it produces …
    let (collector, _) = connect_as(&server, "collector", Stage::Collector).await;
    collector
        .publish(None, Event::MetricSnapshot(samples::metric_snapshot()))
        .await
        .expect("the collector publishes a metric snapshot");
    collector
        .publish(None, Event::ContainerEvent(samples::container_event()))
        .await
        .expect("the collector publishes a container event");
    collector.close().await;

    // … but not an action; nor may the console or the operator's command line.
    assert_may_not_publish_actions(&server, "collector", Stage::Collector).await;
    assert_may_not_publish_actions(&server, "console", Stage::Client).await;
    assert_may_not_publish_actions(&server, "operator", Stage::Client).await;
    assert_eq!(
        actions_stored(&operator).await,
        0,
        "a refused action reached the IMMUNE_PIPELINE stream"
    );

    // The decider may.
    let (decider, telemetry) = connect_as(&server, "decider", Stage::Decider).await;
    decider
        .publish(None, Event::ActionRequest(samples::action_request()))
        .await
        .expect("the decider publishes an action");
    assert_eq!(actions_stored(&operator).await, 1);
    assert_eq!(telemetry.count("permission_denied", "publish"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_executor_alone_takes_actions() {
    let server = NatsServer::start_secured().await;
    let (decider, _) = connect_as(&server, "decider", Stage::Decider).await;
    let (executor, executor_telemetry) = connect_as(&server, "executor", Stage::Executor).await;

    // The executor opens its consumer and takes the decider's action.
    let mut inbox = within(
        Duration::from_secs(30),
        "the executor to open its consumer",
        executor.inbox(EXECUTOR),
    )
    .await
    .expect("the executor opens its consumer of actions");
    let published = decider
        .publish(None, Event::ActionRequest(samples::action_request()))
        .await
        .expect("the decider publishes an action");
    let delivery = within(
        Duration::from_secs(30),
        "the executor to receive the decider's action (executor permissions: pull, inbox)",
        inbox.next(),
    )
    .await;
    assert_eq!(delivery.envelope.event_id, published);
    delivery.settle(Disposition::Done).await;
    assert_eq!(
        executor_telemetry.count("failed", "ack"),
        0,
        "the executor acknowledges the action"
    );
    assert_eq!(
        executor_telemetry.count("permission_denied", "publish"),
        0,
        "{}",
        executor_telemetry.render()
    );

    // The detector (which has consumers of its own on the same stream) can neither open
    // the executor's consumer …
    let (detector, telemetry) = connect_as(&server, "detector", Stage::Detector).await;
    let opened = within(
        Duration::from_secs(60),
        "the detector's refused consumer to fail",
        detector.inbox(EXECUTOR),
    )
    .await;
    match opened {
        Err(BusError::PermissionDenied { subject, .. }) => assert!(
            subject.contains("IMMUNE_PIPELINE.executor"),
            "refused on {subject}"
        ),
        other => panic!("detector opening the executor's consumer: {other:?}"),
    }
    // … nor make a consumer of its own on the actions …
    let stream = detector
        .jetstream()
        .get_stream(PIPELINE.name)
        .await
        .expect("the detector may look the stream up");
    let spy = within(
        Duration::from_secs(30),
        "the detector's refused consumer of actions to fail",
        stream.create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some("spy".into()),
            filter_subject: immune_nats::subject::ACTIONS_ALL.into(),
            ..Default::default()
        }),
    )
    .await;
    assert!(spy.is_err(), "the detector created a consumer of actions");
    // … nor pull from the executor's consumer directly.
    let pull = within(
        Duration::from_secs(30),
        "the detector's refused pull to fail",
        detector.client().request(
            format!(
                "$JS.API.CONSUMER.MSG.NEXT.{}.{}",
                PIPELINE.name, EXECUTOR.durable
            ),
            "1".into(),
        ),
    )
    .await;
    assert!(
        pull.is_err(),
        "the detector pulled from the executor's consumer"
    );
    within(
        Duration::from_secs(10),
        "the detector's refused pull to be counted",
        async {
            while telemetry.count("permission_denied", "publish") < 3 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        },
    )
    .await;
    let rendered = telemetry.render();
    assert!(
        rendered.contains("permission_denied"),
        "refusals are served on /metrics: {rendered}"
    );
}

/// The subjects the pipeline stream listens on now.
async fn pipeline_subjects(bus: &Bus) -> Vec<String> {
    let mut stream = bus
        .jetstream()
        .get_stream(PIPELINE.name)
        .await
        .expect("pipeline stream");
    stream
        .info()
        .await
        .expect("stream info")
        .config
        .subjects
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_may_create_the_streams_but_not_reshape_them() {
    let server = NatsServer::start_secured().await;
    // An older pipeline stream, as a previous build might have left it.
    let raw = async_nats::jetstream::new(server.client().await);
    raw.create_stream(async_nats::jetstream::stream::Config {
        name: PIPELINE.name.into(),
        subjects: vec![immune_nats::subject::EVENTS_ALL.into()],
        ..Default::default()
    })
    .await
    .expect("operator creates an old-style pipeline stream");

    // The collector starts: it creates the missing streams, is refused the update of the old
    // one, says so, and carries on with the stream as it is.
    let (collector, telemetry) = connect_as(&server, "collector", Stage::Collector).await;
    assert_eq!(
        pipeline_subjects(&collector).await,
        vec![immune_nats::subject::EVENTS_ALL.to_string()]
    );
    assert!(telemetry.count("permission_denied", "publish") >= 1);
    // Nor can it add a republish that would carry its messages onto the actions.
    let reshaped = within(
        Duration::from_secs(30),
        "the collector's refused stream update to fail",
        collector
            .jetstream()
            .update_stream(async_nats::jetstream::stream::Config {
                name: PIPELINE.name.into(),
                subjects: vec![immune_nats::subject::EVENTS_ALL.into()],
                republish: Some(async_nats::jetstream::stream::Republish {
                    source: immune_nats::subject::EVENTS_ALL.into(),
                    destination: immune_nats::subject::ACTIONS_ALL.into(),
                    headers_only: false,
                }),
                ..Default::default()
            }),
    )
    .await;
    assert!(
        reshaped.is_err(),
        "the collector reshaped the pipeline stream"
    );

    // The operator's client applies this build's stream config.
    let (operator, _) = connect_as(&server, "operator", Stage::Client).await;
    let expected: Vec<String> = PIPELINE.subjects.iter().map(|s| s.to_string()).collect();
    assert_eq!(pipeline_subjects(&operator).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_and_no_user_are_refused() {
    let server = NatsServer::start_secured().await;
    let (_trigger, shutdown) = Shutdown::new();
    let wrong = BusConfig {
        password: Some("not-the-password".into()),
        ..bus_config(&server, "collector")
    };
    let nobody = BusConfig::at(server.url());
    for (what, config) in [("a wrong password", wrong), ("no user", nobody)] {
        let telemetry = Telemetry::new(Stage::Collector);
        let result = within(
            Duration::from_secs(20),
            &format!("the login with {what} to be refused (not waited on forever)"),
            Bus::connect(&config, telemetry.clone(), &shutdown),
        )
        .await;
        match result {
            Err(e @ BusError::Unauthorized { .. }) => {
                assert_eq!(e.kind(), "unauthorized");
                assert!(e.to_string().contains("IMMUNE_NATS_PASSWORD"), "{e}");
            }
            other => panic!("{what}: expected Unauthorized, got {other:?}"),
        }
        assert_eq!(telemetry.count("permission_denied", "connect"), 1, "{what}");
    }
    // Not just our client: the server itself refuses a plain connection without a user.
    assert!(async_nats::connect(server.url()).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_is_healed_with_every_stage_logged_in_as_itself() {
    let server = NatsServer::start_secured().await;
    let project = unique("auth");
    let demo = DemoContainer::start(DemoSpec::new("orders", &project)).await;
    let pipeline = Pipeline::start(PipelineConfig::secured(&server, &project));
    let operator = immune_tests::connect(&bus_config(&server, "operator")).await;

    immune_tests::await_healthy_snapshot(&operator, &demo).await;
    let healed = immune_tests::heal(&operator, &demo, FaultKind::Crash).await;
    println!(
        "crash under auth: detected {} ms after injection; healthy again {} ms after injection",
        healed.detect_ms, healed.heal_ms
    );

    for (stage, telemetry) in &pipeline.telemetry {
        for operation in ["publish", "subscribe", "connect"] {
            assert_eq!(
                telemetry.count("permission_denied", operation),
                0,
                "{stage} was refused a {operation}: its permissions in nats-server.conf lack something"
            );
        }
        assert_eq!(
            telemetry.count("publish_failed", ""),
            0,
            "{stage} failed to publish"
        );
    }
    pipeline.stop().await;
    drop(demo);
}
