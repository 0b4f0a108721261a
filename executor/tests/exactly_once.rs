//! Guards, exactly-once results, per-container locks and two instances sharing one durable
//! consumer, against a real nats-server and real demo containers.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{
    fresh_since, next_result, request, results_for, start_executor, started_at, starts_between,
    stored_results, unix_now, Cleanup, World,
};
use immune_nats::{ActionKind, ActionOutcome, ServiceName};
use immune_testkit::{DemoContainer, DemoSpec};

#[tokio::test(flavor = "multi_thread")]
async fn guards_refuse_what_is_not_ours_and_touch_nothing() {
    let world = World::new().await;
    let _cleanup = Cleanup::project(&world.project);
    let executor = start_executor(world.config());
    let ours = DemoContainer::start(DemoSpec::new("orders", &world.project)).await;
    let mut opted_out = DemoSpec::new("orders", &world.project);
    opted_out
        .extra_labels
        .push(("immune.enable".into(), "false".into()));
    let opted_out = DemoContainer::start(opted_out).await;
    let other_project =
        DemoContainer::start(DemoSpec::new("orders", &format!("{}-other", world.project))).await;

    let cases = [
        (
            &opted_out,
            request(&opted_out, ActionKind::Restart, &[]),
            "not managed",
        ),
        (
            &other_project,
            request(&other_project, ActionKind::Restart, &[]),
            "belongs to project",
        ),
        (
            &ours,
            {
                let mut r = request(&ours, ActionKind::Restart, &[]);
                r.service = ServiceName::new("payments").expect("name");
                r
            },
            "not payments",
        ),
        (
            &ours,
            request(&ours, ActionKind::Restart, &[("force", "yes")]),
            "does not take params force",
        ),
    ];
    for (container, r, why) in cases {
        let before = started_at(&container.docker, &container.id).await;
        let result = world.send(&r).await;
        assert_eq!(
            result.outcome,
            ActionOutcome::Refused,
            "{why}: {:?}",
            result.error
        );
        let error = result.error.unwrap_or_default();
        assert!(error.contains(why), "expected {why:?} in {error:?}");
        assert_eq!(
            started_at(&container.docker, &container.id).await,
            before,
            "{why}: untouched"
        );
    }
    let mut ghost = request(&ours, ActionKind::Restart, &[]);
    ghost.container_id = "no-such-container".into();
    let result = world.send(&ghost).await;
    assert_eq!(result.outcome, ActionOutcome::Failed);
    assert!(result
        .error
        .unwrap_or_default()
        .contains("no such container"));
    assert_eq!(executor.telemetry.count("refused", "restart"), 4);
    executor.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redelivered_request_republishes_and_does_not_act_twice() {
    let world = World::new().await;
    let _cleanup = Cleanup::project(&world.project);
    let executor = start_executor(world.config());
    let demo = DemoContainer::start(DemoSpec::new("orders", &world.project)).await;
    let since = fresh_since().await;
    let r = request(&demo, ActionKind::Restart, &[]);
    let mut results = world.results(&r.service).await;
    world.publish(&r).await;
    let first = next_result(&mut results, &r.action_id, Duration::from_secs(30)).await;
    assert_eq!(first.outcome, ActionOutcome::Succeeded, "{:?}", first.error);
    // The same request again (a new envelope, as a redelivery or a retrying decider sends it).
    world.publish(&r).await;
    let second = next_result(&mut results, &r.action_id, Duration::from_secs(30)).await;
    assert_eq!(second, first, "the stored result, not a new one");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        starts_between(&demo.docker, &demo.id, since, unix_now() + 1).await,
        1,
        "one restart"
    );
    assert_eq!(
        stored_results(&world.bus, &r.service, &r.action_id).await,
        1,
        "one result in the stream"
    );
    assert_eq!(executor.telemetry.count("acted", "republished"), 1);
    executor.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_share_the_work_and_never_act_on_one_container_at_once() {
    let world = World::new().await;
    let _cleanup = Cleanup::project(&world.project);
    let mut config = world.config();
    config.max_in_flight = 2;
    let a = start_executor(config.clone());
    let b = start_executor(config);
    let mut demos = Vec::new();
    for _ in 0..3 {
        demos.push(DemoContainer::start(DemoSpec::new("orders", &world.project)).await);
    }
    // Give both instances time to open their pull requests.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let since = fresh_since().await;
    let service = ServiceName::new("orders").expect("name");
    let mut results = world.results(&service).await;
    let mut requests = Vec::new();
    for demo in &demos {
        for _ in 0..2 {
            let r = request(demo, ActionKind::Restart, &[]);
            world.publish(&r).await;
            requests.push(r);
        }
    }
    let ids: Vec<String> = requests.iter().map(|r| r.action_id.clone()).collect();
    let all = results_for(&mut results, &ids, Duration::from_secs(60)).await;
    let mut by_container: HashMap<String, Vec<(u64, u64)>> = HashMap::new();
    for r in &requests {
        let result = &all[&r.action_id];
        assert_eq!(
            result.outcome,
            ActionOutcome::Succeeded,
            "{:?}",
            result.error
        );
        by_container
            .entry(r.container_id.clone())
            .or_default()
            .push((result.finished_ms - result.duration_ms, result.finished_ms));
    }
    let (done_a, done_b) = (
        a.telemetry.count("acted", "restart"),
        b.telemetry.count("acted", "restart"),
    );
    assert_eq!(done_a + done_b, 6, "every request carried out once");
    assert!(
        done_a > 0 && done_b > 0,
        "both instances took work: {done_a} and {done_b}"
    );
    for (container, mut spans) in by_container {
        spans.sort();
        assert!(
            spans[0].1 <= spans[1].0 + 1,
            "two restarts of {container} overlapped: {spans:?}"
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for demo in &demos {
        assert_eq!(
            starts_between(&demo.docker, &demo.id, since, unix_now() + 1).await,
            2
        );
    }
    a.stop().await;
    b.stop().await;
}
