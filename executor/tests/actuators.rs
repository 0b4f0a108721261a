//! Every actuator against a real nats-server and real demo containers: act through the bus,
//! then observe the effect on the container (Docker) or on the service (its /admin state).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{EndpointSettings, NetworkCreateRequest};
use common::{get, inspect, request, start_executor, started_at, Cleanup, World};
use immune_nats::{ActionKind, ActionOutcome};
use immune_testkit::{unique, within, DemoContainer, DemoSpec};

fn cleanup(world: &World) -> Cleanup {
    Cleanup::project(&world.project)
}

async fn create_network(docker: &bollard::Docker, cleanup: &mut Cleanup) -> String {
    let name = unique("exec-net");
    docker
        .create_network(NetworkCreateRequest {
            name: name.clone(),
            ..Default::default()
        })
        .await
        .expect("create a test network");
    cleanup.networks.push(name.clone());
    name
}

fn aliases_on(
    inspect: &bollard::models::ContainerInspectResponse,
    network: &str,
) -> Option<EndpointSettings> {
    inspect
        .network_settings
        .as_ref()?
        .networks
        .as_ref()?
        .get(network)
        .cloned()
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_pause_unpause_and_limits() {
    let world = World::new().await;
    let _cleanup = cleanup(&world);
    let executor = start_executor(world.config());
    let demo = DemoContainer::start(DemoSpec::new("orders", &world.project)).await;
    let docker = demo.docker.clone();

    let before = started_at(&docker, &demo.id).await;
    let result = world
        .send(&request(
            &demo,
            ActionKind::Restart,
            &[("stop_grace_s", "1")],
        ))
        .await;
    assert_eq!(
        result.outcome,
        ActionOutcome::Succeeded,
        "{:?}",
        result.error
    );
    assert!(demo.running().await, "running again after the restart");
    assert_eq!(result.replaced_by, None, "a restart keeps the container");
    assert_ne!(
        started_at(&docker, &demo.id).await,
        before,
        "StartedAt moved"
    );
    assert!(result.duration_ms > 0);

    let result = world.send(&request(&demo, ActionKind::Pause, &[])).await;
    assert_eq!(
        result.outcome,
        ActionOutcome::Succeeded,
        "{:?}",
        result.error
    );
    let state = inspect(&docker, &demo.id).await.state.expect("state");
    assert_eq!(state.paused, Some(true), "paused");
    // Pausing again is harmless: the container is already in the state asked for.
    let again = world.send(&request(&demo, ActionKind::Pause, &[])).await;
    assert_eq!(again.outcome, ActionOutcome::Succeeded, "{:?}", again.error);
    let result = world.send(&request(&demo, ActionKind::Unpause, &[])).await;
    assert_eq!(
        result.outcome,
        ActionOutcome::Succeeded,
        "{:?}",
        result.error
    );
    assert_eq!(
        inspect(&docker, &demo.id)
            .await
            .state
            .expect("state")
            .paused,
        Some(false)
    );
    assert!(demo.healthy().await, "answers /health after unpause");

    let result = world
        .send(&request(
            &demo,
            ActionKind::UpdateLimits,
            &[("cpus", "0.5"), ("memory", "128m")],
        ))
        .await;
    assert_eq!(
        result.outcome,
        ActionOutcome::Succeeded,
        "{:?}",
        result.error
    );
    let host = inspect(&docker, &demo.id)
        .await
        .host_config
        .expect("host config");
    assert_eq!(host.nano_cpus, Some(500_000_000));
    assert_eq!(host.memory, Some(128 << 20));

    let result = world
        .send(&request(
            &demo,
            ActionKind::UpdateLimits,
            &[("cpus", "lots")],
        ))
        .await;
    assert_eq!(result.outcome, ActionOutcome::Refused);
    assert!(result.error.unwrap_or_default().contains("params.cpus"));
    executor.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn recreate_keeps_name_config_and_network_aliases() {
    let world = World::new().await;
    let mut cleanup = cleanup(&world);
    let executor = start_executor(world.config());
    let docker = bollard::Docker::connect_with_local_defaults().expect("docker");
    let network = create_network(&docker, &mut cleanup).await;
    let mut spec = DemoSpec::new("orders", &world.project);
    spec.env.push("FLAVOUR=test".into());
    spec.network = Some((network.clone(), vec!["orders".into()]));
    let demo = DemoContainer::start(spec).await;

    let result = world.send(&request(&demo, ActionKind::Recreate, &[])).await;
    assert_eq!(
        result.outcome,
        ActionOutcome::Succeeded,
        "{:?}",
        result.error
    );
    let now = inspect(&docker, &demo.name).await;
    assert_ne!(now.id.as_deref(), Some(demo.id.as_str()), "a new container");
    assert_eq!(
        result.replaced_by, now.id,
        "the result names the container that took the target's place"
    );
    assert_eq!(now.state.as_ref().and_then(|s| s.running), Some(true));
    let config = now.config.clone().expect("config");
    assert!(config
        .env
        .unwrap_or_default()
        .contains(&"FLAVOUR=test".to_string()));
    assert_eq!(
        config.labels.unwrap_or_default().get("immune.project"),
        Some(&world.project)
    );
    let endpoint = aliases_on(&now, &network).expect("on the same network");
    assert!(
        endpoint
            .aliases
            .unwrap_or_default()
            .contains(&"orders".to_string()),
        "keeps the service alias"
    );
    assert!(
        !common::quiet(&["inspect", &demo.id]),
        "the old container is removed"
    );
    executor.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn scale_out_then_in_never_below_one() {
    let world = World::new().await;
    let mut cleanup = cleanup(&world);
    let executor = start_executor(world.config());
    let docker = bollard::Docker::connect_with_local_defaults().expect("docker");
    let network = create_network(&docker, &mut cleanup).await;
    let mut spec = DemoSpec::new("orders", &world.project);
    spec.network = Some((network.clone(), vec!["orders".into()]));
    let demo = DemoContainer::start(spec).await;

    let out = request(&demo, ActionKind::ScaleOut, &[]);
    let result = world.send(&out).await;
    assert_eq!(
        result.outcome,
        ActionOutcome::Succeeded,
        "{:?}",
        result.error
    );
    let replica_name = immune_executor::plan::replica_name(&demo.name, &out.action_id);
    let replica = inspect(&docker, &replica_name).await;
    assert_eq!(replica.state.as_ref().and_then(|s| s.running), Some(true));
    let labels = replica
        .config
        .as_ref()
        .and_then(|c| c.labels.clone())
        .unwrap_or_default();
    assert_eq!(labels.get("immune.replica_of"), Some(&demo.name));
    assert_eq!(
        labels.get("immune.service").map(String::as_str),
        Some("orders")
    );
    let endpoint = aliases_on(&replica, &network).expect("replica on the service network");
    assert!(
        endpoint
            .aliases
            .unwrap_or_default()
            .contains(&"orders".to_string()),
        "the replica answers to the service name"
    );
    let ip = endpoint.ip_address.expect("replica address");
    within(
        Duration::from_secs(15),
        "the replica to answer /health",
        async {
            loop {
                let client = reqwest::Client::new();
                if client
                    .get(format!("http://{ip}:8080/health"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        },
    )
    .await;

    let result = world.send(&request(&demo, ActionKind::ScaleIn, &[])).await;
    assert_eq!(
        result.outcome,
        ActionOutcome::Succeeded,
        "{:?}",
        result.error
    );
    assert!(
        !common::quiet(&["inspect", &replica_name]),
        "replica removed"
    );
    assert!(demo.running().await, "the original stays");
    let result = world.send(&request(&demo, ActionKind::ScaleIn, &[])).await;
    assert_eq!(
        result.outcome,
        ActionOutcome::Refused,
        "never the last instance"
    );
    assert!(demo.running().await);
    executor.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_recreates_from_the_previous_image() {
    let world = World::new().await;
    let mut cleanup = cleanup(&world);
    let executor = start_executor(world.config());
    let v1 = format!("immune-demo:{}-v1", world.project);
    let v2 = format!("immune-demo:{}-v2", world.project);
    for tag in [&v1, &v2] {
        assert!(
            common::quiet(&["tag", immune_testkit::DEMO_IMAGE, tag]),
            "docker tag {tag}"
        );
        cleanup.images.push(tag.clone());
    }
    let mut spec = DemoSpec::new("orders", &world.project);
    spec.image = v2.clone();
    spec.extra_labels
        .push(("immune.image_history".into(), v1.clone()));
    let demo = DemoContainer::start(spec).await;
    let docker = demo.docker.clone();

    let result = world.send(&request(&demo, ActionKind::Rollback, &[])).await;
    assert_eq!(
        result.outcome,
        ActionOutcome::Succeeded,
        "{:?}",
        result.error
    );
    let now = inspect(&docker, &demo.name).await;
    assert_eq!(
        result.replaced_by, now.id,
        "the container in the target's place"
    );
    let config = now.config.expect("config");
    assert_eq!(
        config.image.as_deref(),
        Some(v1.as_str()),
        "runs the previous image"
    );
    assert_eq!(
        config
            .labels
            .unwrap_or_default()
            .get("immune.image_history"),
        None,
        "no earlier image left"
    );
    assert_eq!(now.state.and_then(|s| s.running), Some(true));

    // Nothing further back: refused, and the container is left as it is.
    let now_id = now.id.expect("id");
    let mut again = request(&demo, ActionKind::Rollback, &[]);
    again.container_id = now_id.clone();
    let result = world.send(&again).await;
    assert_eq!(result.outcome, ActionOutcome::Refused, "{:?}", result.error);
    assert!(result
        .error
        .unwrap_or_default()
        .contains("immune.image_history"));
    assert_eq!(inspect(&docker, &demo.name).await.id, Some(now_id));
    executor.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reconnect_network_keeps_aliases() {
    let world = World::new().await;
    let mut cleanup = cleanup(&world);
    let executor = start_executor(world.config());
    let docker = bollard::Docker::connect_with_local_defaults().expect("docker");
    let network = create_network(&docker, &mut cleanup).await;
    let mut spec = DemoSpec::new("orders", &world.project);
    spec.network = Some((network.clone(), vec!["orders".into()]));
    let demo = DemoContainer::start(spec).await;
    let before = aliases_on(&inspect(&docker, &demo.id).await, &network).expect("on network");

    let result = world
        .send(&request(
            &demo,
            ActionKind::ReconnectNetwork,
            &[("network", &network)],
        ))
        .await;
    assert_eq!(
        result.outcome,
        ActionOutcome::Succeeded,
        "{:?}",
        result.error
    );
    let after = aliases_on(&inspect(&docker, &demo.id).await, &network).expect("still on network");
    assert_ne!(after.endpoint_id, before.endpoint_id, "a new endpoint");
    assert!(after
        .aliases
        .unwrap_or_default()
        .contains(&"orders".to_string()));
    within(
        Duration::from_secs(10),
        "/health over the new endpoint",
        async {
            while !demo.healthy().await {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        },
    )
    .await;
    executor.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_endpoint_throttle_circuit_and_flags() {
    let world = World::new().await;
    let _cleanup = cleanup(&world);
    let executor = start_executor(world.config());
    let demo = DemoContainer::start(DemoSpec::new("orders", &world.project)).await;
    let ip = demo.address().await.expect("address");
    let base = format!("http://{ip}:8080");

    let result = world
        .send(&request(&demo, ActionKind::Throttle, &[("rps", "2")]))
        .await;
    assert_eq!(
        result.outcome,
        ActionOutcome::Succeeded,
        "{:?}",
        result.error
    );
    let mut statuses = HashMap::<u16, u32>::new();
    for _ in 0..10 {
        *statuses
            .entry(get(&format!("{base}/")).await.0)
            .or_default() += 1;
    }
    assert!(
        statuses.get(&429).copied().unwrap_or(0) >= 5,
        "throttled: {statuses:?}"
    );

    let result = world
        .send(&request(
            &demo,
            ActionKind::CircuitBreaker,
            &[("state", "open")],
        ))
        .await;
    assert_eq!(
        result.outcome,
        ActionOutcome::Succeeded,
        "{:?}",
        result.error
    );
    assert_eq!(get(&format!("{base}/")).await.0, 503, "short-circuited");

    let result = world
        .send(&request(
            &demo,
            ActionKind::FeatureFlag,
            &[("flag", "upstream_calls"), ("state", "off")],
        ))
        .await;
    assert_eq!(
        result.outcome,
        ActionOutcome::Succeeded,
        "{:?}",
        result.error
    );

    let (_, admin) = get(&format!("{base}/admin")).await;
    let admin: serde_json::Value = serde_json::from_str(&admin).expect("admin state is JSON");
    assert_eq!(admin["throttle_rps"], 2);
    assert_eq!(admin["circuit"], "open");
    assert_eq!(admin["flags"]["upstream_calls"], false);
    let (_, metrics) = get(&format!("{base}/metrics")).await;
    assert!(
        metrics.contains(r#"demo_shed_requests_total{reason="throttled"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"demo_shed_requests_total{reason="circuit_open"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("demo_admin_circuit_open 1"), "{metrics}");

    // Lifted again.
    world
        .send(&request(
            &demo,
            ActionKind::CircuitBreaker,
            &[("state", "closed")],
        ))
        .await;
    world
        .send(&request(&demo, ActionKind::Throttle, &[("rps", "off")]))
        .await;
    assert_eq!(get(&format!("{base}/")).await.0, 200);
    executor.stop().await;
}
