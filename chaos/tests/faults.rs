//! Every fault of the catalogue against a real nats-server and real demo containers: asked
//! for over the bus, observed on the target, reverted on time; plus the guardrails (kill
//! switch, dry run) and a chaos process that dies with a fault in force.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bollard::models::{EndpointSettings, NetworkCreateRequest};
use bollard::query_parameters::InspectContainerOptions;
use futures::StreamExt;
use immune_nats::{
    decode, subject, ChaosInjected, ChaosRejected, ChaosRequest, ChaosReverted, Event, FaultKind,
    ServiceName, Stage,
};
use immune_runtime::{Bus, BusConfig, Telemetry};
use immune_testkit::{
    client_bus, unique, within, DemoContainer, DemoSpec, NatsServer, RunningStage,
};

/// What the chaos stage said about one run.
#[derive(Debug)]
enum Said {
    Injected(ChaosInjected),
    Reverted(ChaosReverted),
    Rejected(ChaosRejected),
}

/// A chaos stage running as a task of the test; `crash()` dies like a killed process (no
/// revert, no goodbye).
fn start_chaos(config: immune_chaos::Config) -> RunningStage<Telemetry> {
    RunningStage::start("the chaos stage", Telemetry::new(Stage::Chaos), |t, s| {
        immune_chaos::run(config, t, s)
    })
    .stop_within(
        Duration::from_secs(30),
        "faults still in force take a revert each",
    )
}

struct World {
    _nats: NatsServer,
    url: String,
    project: String,
    bus: Bus,
    said: async_nats::Subscriber,
    http: reqwest::Client,
}

impl World {
    async fn new() -> World {
        let nats = NatsServer::start().await;
        let url = nats.url();
        let bus = client_bus(&url).await;
        let said = bus
            .client()
            .subscribe(subject::CHAOS_ALL)
            .await
            .expect("subscribe to chaos events");
        World {
            _nats: nats,
            url,
            project: unique("chaos"),
            bus,
            said,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .expect("http client"),
        }
    }

    fn config(&self) -> immune_chaos::Config {
        immune_chaos::Config {
            nats: BusConfig {
                url: self.url.clone(),
                ..Default::default()
            },
            project: Some(self.project.clone()),
            max_concurrent_faults: 5,
            ..Default::default()
        }
    }

    async fn ask(
        &self,
        service: &str,
        fault: FaultKind,
        for_ms: u64,
        params: &[(&str, &str)],
    ) -> String {
        let request = ChaosRequest {
            run_id: None,
            service: ServiceName::new(service).expect("service name"),
            fault,
            duration_ms: for_ms,
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        };
        immune_chaos::follow::request(&self.bus, request)
            .await
            .expect("publish chaos request")
    }

    /// The next thing chaos said about `run_id`.
    async fn next(&mut self, run_id: &str, limit: Duration) -> Said {
        within(
            limit,
            "chaos to answer the request (is the stage running?)",
            async {
                loop {
                    let message = self.said.next().await.expect("subscription open");
                    let Ok(envelope) = decode(&message.payload) else {
                        continue;
                    };
                    let said = match envelope.body {
                        Event::ChaosInjected(e) if e.run_id == run_id => Said::Injected(e),
                        Event::ChaosReverted(e) if e.run_id == run_id => Said::Reverted(e),
                        Event::ChaosRejected(e) if e.run_id == run_id => Said::Rejected(e),
                        _ => continue,
                    };
                    return said;
                }
            },
        )
        .await
    }

    async fn injected(&mut self, run_id: &str) -> ChaosInjected {
        match self.next(run_id, Duration::from_secs(20)).await {
            Said::Injected(e) => e,
            other => panic!("expected the fault injected, chaos said {other:?}"),
        }
    }

    async fn reverted(&mut self, run_id: &str, limit: Duration) -> ChaosReverted {
        match self.next(run_id, limit).await {
            Said::Reverted(e) => e,
            other => panic!("expected the fault reverted, chaos said {other:?}"),
        }
    }

    async fn rejected(&mut self, run_id: &str) -> ChaosRejected {
        match self.next(run_id, Duration::from_secs(20)).await {
            Said::Rejected(e) => e,
            other => panic!("expected the request rejected, chaos said {other:?}"),
        }
    }

    async fn get(&self, demo: &DemoContainer, path: &str) -> Option<(u16, String, Duration)> {
        let ip = demo.address().await?;
        let started = Instant::now();
        let response = self
            .http
            .get(format!("http://{ip}:8080{path}"))
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        let body = response.text().await.ok()?;
        Some((status, body, started.elapsed()))
    }

    /// The demo's fault mode as its `/fault` endpoint tells it.
    async fn mode(&self, demo: &DemoContainer) -> String {
        let (_, body, _) = self.get(demo, "/fault").await.expect("GET /fault answers");
        let fault: serde_json::Value = serde_json::from_str(&body).expect("fault JSON");
        fault["mode"].as_str().unwrap_or_default().to_string()
    }

    /// A sample of the demo's /metrics.
    async fn metric(&self, demo: &DemoContainer, name: &str) -> f64 {
        let (_, body, _) = self
            .get(demo, "/metrics")
            .await
            .expect("GET /metrics answers");
        body.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

async fn state(demo: &DemoContainer) -> (String, Option<bool>) {
    let inspect = demo
        .docker
        .inspect_container(&demo.id, None::<InspectContainerOptions>)
        .await
        .expect("inspect");
    let state = inspect.state.unwrap_or_default();
    (
        state.status.map(|s| s.to_string()).unwrap_or_default(),
        state.running,
    )
}

async fn until(limit: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    within(limit, what, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_faults_kill_stop_pause_restart() {
    let mut world = World::new().await;
    let chaos = start_chaos(world.config());
    let demo = DemoContainer::start(DemoSpec::new("orders", &world.project)).await;

    for fault in [FaultKind::Kill, FaultKind::Stop] {
        let run = world.ask("orders", fault, 1500, &[]).await;
        world.injected(&run).await;
        until(
            Duration::from_secs(10),
            "the container to be down",
            async || !demo.running().await,
        )
        .await;
        let reverted = world.reverted(&run, Duration::from_secs(10)).await;
        assert_eq!(reverted.note, "was still down: started it", "{fault}");
        until(
            Duration::from_secs(20),
            "the demo to answer again",
            async || demo.healthy().await,
        )
        .await;
    }

    let run = world.ask("orders", FaultKind::Pause, 1500, &[]).await;
    world.injected(&run).await;
    assert_eq!(state(&demo).await.0, "paused");
    assert!(!demo.healthy().await, "a paused container does not answer");
    let reverted = world.reverted(&run, Duration::from_secs(10)).await;
    assert_eq!(reverted.note, "unpaused");
    assert_eq!(state(&demo).await.0, "running");
    assert!(demo.healthy().await);

    let before = demo.started_at().await;
    let run = world.ask("orders", FaultKind::Restart, 1000, &[]).await;
    world.injected(&run).await;
    assert_ne!(demo.started_at().await, before, "the process was restarted");
    let reverted = world.reverted(&run, Duration::from_secs(10)).await;
    assert_eq!(reverted.note, "already healed");
    chaos.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn service_faults_crash_hang_latency_errors_leak_burn() {
    let mut world = World::new().await;
    let chaos = start_chaos(world.config());
    let demo = DemoContainer::start(DemoSpec::new("orders", &world.project)).await;

    let run = world.ask("orders", FaultKind::Crash, 1500, &[]).await;
    world.injected(&run).await;
    until(Duration::from_secs(10), "the process to exit", async || {
        !demo.running().await
    })
    .await;
    assert_eq!(
        world.reverted(&run, Duration::from_secs(10)).await.note,
        "was still down: started it"
    );
    until(
        Duration::from_secs(20),
        "the demo to answer again",
        async || demo.healthy().await,
    )
    .await;

    let run = world.ask("orders", FaultKind::Hang, 1500, &[]).await;
    world.injected(&run).await;
    assert!(
        !demo.healthy().await,
        "a hung service does not answer /health"
    );
    assert_eq!(
        world.reverted(&run, Duration::from_secs(10)).await.note,
        "fault cleared"
    );
    assert!(demo.healthy().await);

    let run = world
        .ask("orders", FaultKind::Latency, 2000, &[("latency_ms", "400")])
        .await;
    world.injected(&run).await;
    let (status, _, took) = world.get(&demo, "/").await.expect("GET /");
    assert_eq!(status, 200);
    assert!(
        took >= Duration::from_millis(400),
        "latency added: {took:?}"
    );
    world.reverted(&run, Duration::from_secs(10)).await;
    let (_, _, took) = world.get(&demo, "/").await.expect("GET /");
    assert!(took < Duration::from_millis(300), "latency gone: {took:?}");

    let run = world
        .ask("orders", FaultKind::Errors, 2000, &[("error_rate", "1.0")])
        .await;
    world.injected(&run).await;
    assert_eq!(world.get(&demo, "/").await.expect("GET /").0, 500);
    world.reverted(&run, Duration::from_secs(10)).await;
    assert_eq!(world.get(&demo, "/").await.expect("GET /").0, 200);

    let run = world
        .ask(
            "orders",
            FaultKind::MemoryLeak,
            3000,
            &[("leak_mb_per_s", "20"), ("leak_cap_mb", "40")],
        )
        .await;
    world.injected(&run).await;
    until(
        Duration::from_secs(5),
        "the leak to hold memory",
        async || world.metric(&demo, "demo_leaked_bytes").await >= 20.0 * 1024.0 * 1024.0,
    )
    .await;
    assert_eq!(
        world.reverted(&run, Duration::from_secs(10)).await.note,
        "fault cleared"
    );
    until(
        Duration::from_secs(5),
        "the leaked memory to be freed",
        async || world.metric(&demo, "demo_leaked_bytes").await == 0.0,
    )
    .await;

    let run = world.ask("orders", FaultKind::CpuBurn, 3000, &[]).await;
    world.injected(&run).await;
    assert_eq!(world.mode(&demo).await, "cpu_burn");
    let busy = cpu_seconds(&demo).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let burnt = cpu_seconds(&demo).await - busy;
    assert!(burnt > 0.3, "one core kept busy: {burnt:.2} CPU-s in 1 s");
    world.reverted(&run, Duration::from_secs(10)).await;
    assert_eq!(world.mode(&demo).await, "none");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = cpu_seconds(&demo).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = cpu_seconds(&demo).await - idle;
    assert!(after < 0.2, "the burn stopped: {after:.2} CPU-s in 1 s");
    chaos.stop().await;
}

/// CPU time the container's processes have used, in seconds (Docker stats).
async fn cpu_seconds(demo: &DemoContainer) -> f64 {
    let stats = demo
        .docker
        .stats(
            &demo.id,
            Some(bollard::query_parameters::StatsOptions {
                stream: false,
                one_shot: true,
            }),
        )
        .next()
        .await
        .expect("a stats sample")
        .expect("stats");
    stats
        .cpu_stats
        .and_then(|c| c.cpu_usage)
        .and_then(|u| u.total_usage)
        .unwrap_or(0) as f64
        / 1e9
}

#[tokio::test(flavor = "multi_thread")]
async fn network_disconnect_keeps_aliases() {
    let mut world = World::new().await;
    let chaos = start_chaos(world.config());
    let docker = bollard::Docker::connect_with_local_defaults().expect("docker");
    let network = unique("chaos-net");
    docker
        .create_network(NetworkCreateRequest {
            name: network.clone(),
            ..Default::default()
        })
        .await
        .expect("create a test network");
    let mut spec = DemoSpec::new("orders", &world.project);
    spec.network = Some((network.clone(), vec!["orders".into(), "orders-db".into()]));
    let demo = DemoContainer::start(spec).await;

    let run = world
        .ask("orders", FaultKind::NetworkDisconnect, 1500, &[])
        .await;
    world.injected(&run).await;
    assert!(endpoint(&demo, &network).await.is_none(), "off the network");
    assert!(!demo.healthy().await, "unreachable while disconnected");
    let reverted = world.reverted(&run, Duration::from_secs(10)).await;
    assert_eq!(reverted.note, format!("reconnected to {network}"));
    let back = endpoint(&demo, &network)
        .await
        .expect("back on the network");
    let aliases = back.aliases.unwrap_or_default();
    for alias in ["orders", "orders-db"] {
        assert!(
            aliases.iter().any(|a| a == alias),
            "alias {alias} kept: {aliases:?}"
        );
    }
    until(
        Duration::from_secs(5),
        "the demo to answer again",
        async || demo.healthy().await,
    )
    .await;
    chaos.stop().await;
    drop(demo);
    let _ = docker.remove_network(&network).await;
}

async fn endpoint(demo: &DemoContainer, network: &str) -> Option<EndpointSettings> {
    demo.docker
        .inspect_container(&demo.id, None::<InspectContainerOptions>)
        .await
        .ok()?
        .network_settings?
        .networks?
        .get(network)
        .cloned()
}

#[tokio::test(flavor = "multi_thread")]
async fn attack_burst_is_rejected_and_counted() {
    let mut world = World::new().await;
    let chaos = start_chaos(world.config());
    let demo = DemoContainer::start(DemoSpec::new("orders", &world.project)).await;

    let run = world
        .ask("orders", FaultKind::Attack, 1500, &[("interval_ms", "200")])
        .await;
    world.injected(&run).await;
    let reverted = world.reverted(&run, Duration::from_secs(15)).await;
    assert!(
        reverted
            .note
            .contains(" rejected, 0 accepted, 0 unanswered;"),
        "every payload refused: {}",
        reverted.note
    );
    for class in [
        "sql_injection",
        "xss",
        "path_traversal",
        "command_injection",
        "oversized_body",
        "oversized_headers",
    ] {
        assert!(
            reverted.note.contains(class),
            "{class} reported: {}",
            reverted.note
        );
        let counted = world
            .metric(
                &demo,
                &format!("demo_rejected_requests_total{{reason=\"{class}\"}}"),
            )
            .await;
        assert!(counted >= 1.0, "{class} counted by the demo: {counted}");
    }
    assert_eq!(
        world.get(&demo, "/").await.expect("GET /").0,
        200,
        "still serving"
    );
    chaos.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_chaos_process_reverts_what_a_dead_one_left() {
    let mut world = World::new().await;
    let first = start_chaos(world.config());
    let demo = DemoContainer::start(DemoSpec::new("orders", &world.project)).await;

    let run = world
        .ask("orders", FaultKind::Latency, 4000, &[("latency_ms", "300")])
        .await;
    let injected = world.injected(&run).await;
    first.crash();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        world.mode(&demo).await,
        "latency",
        "the dead process reverted nothing"
    );

    let second = start_chaos(world.config());
    let reverted = world.reverted(&run, Duration::from_secs(15)).await;
    assert_eq!(reverted.note, "fault cleared");
    assert!(
        reverted.reverted_ms >= injected.revert_at_ms,
        "not before its time: {} ms early",
        injected.revert_at_ms.saturating_sub(reverted.reverted_ms)
    );
    assert!(
        reverted.reverted_ms <= injected.revert_at_ms + 3000,
        "on time: {} ms late",
        reverted.reverted_ms - injected.revert_at_ms
    );
    assert_eq!(world.mode(&demo).await, "none");
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_delivered_again_is_not_injected_again() {
    let mut world = World::new().await;
    let chaos = start_chaos(world.config());
    let demo = DemoContainer::start(DemoSpec::new("orders", &world.project)).await;
    let run_id = unique("run");
    let envelope = immune_nats::Envelope::new(
        immune_nats::Producer {
            stage: Stage::Client,
            instance: "test".into(),
        },
        Some(run_id.clone()),
        Event::ChaosRequest(ChaosRequest {
            run_id: Some(run_id.clone()),
            service: ServiceName::new("orders").expect("service name"),
            fault: FaultKind::Latency,
            duration_ms: 3_000,
            params: BTreeMap::new(),
        }),
    );
    let bytes = immune_nats::encode(&envelope).expect("encodes");
    // Stored twice: without the message id the server de-duplicates by, the same request
    // reaches chaos a second time as a redelivery would.
    for _ in 0..2 {
        world
            .bus
            .jetstream()
            .publish(subject::CHAOS_REQUESTS, bytes.clone().into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }
    let mut injected = Vec::new();
    let mut reverted = 0;
    let until = Instant::now() + Duration::from_secs(3 + 8);
    while let Ok(Some(message)) = tokio::time::timeout_at(until.into(), world.said.next()).await {
        match decode(&message.payload).map(|e| e.body) {
            Ok(Event::ChaosInjected(e)) if e.run_id == run_id => injected.push(e.injected_ms),
            Ok(Event::ChaosReverted(e)) if e.run_id == run_id => reverted += 1,
            Ok(Event::ChaosRejected(e)) if e.run_id == run_id => {
                panic!("the request delivered again was rejected: {}", e.reason)
            }
            _ => {}
        }
    }
    injected.dedup();
    assert_eq!(
        injected.len(),
        1,
        "injected at {injected:?}: more than once"
    );
    assert_eq!(reverted, 1, "reverted {reverted} times");
    assert_eq!(world.mode(&demo).await, "none");
    chaos.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_switch_and_dry_run_change_nothing() {
    let mut world = World::new().await;
    let chaos = start_chaos(world.config());
    let demo = DemoContainer::start(DemoSpec::new("orders", &world.project)).await;

    // A fault in force is reverted as soon as the switch is engaged, long before its time.
    let run = world.ask("orders", FaultKind::Hang, 60_000, &[]).await;
    world.injected(&run).await;
    assert_eq!(world.mode(&demo).await, "hang");
    immune_chaos::set_kill_switch(&world.bus, true)
        .await
        .expect("engage");
    let reverted = world.reverted(&run, Duration::from_secs(5)).await;
    assert_eq!(reverted.note, "fault cleared");
    assert_eq!(world.mode(&demo).await, "none");

    let run = world.ask("orders", FaultKind::Hang, 1000, &[]).await;
    assert_eq!(
        world.rejected(&run).await.reason,
        "the chaos kill switch is engaged"
    );
    assert_eq!(world.mode(&demo).await, "none");

    immune_chaos::set_kill_switch(&world.bus, false)
        .await
        .expect("release");
    let run = world.ask("orders", FaultKind::Hang, 1000, &[]).await;
    world.injected(&run).await;
    assert_eq!(world.mode(&demo).await, "hang");
    world.reverted(&run, Duration::from_secs(10)).await;
    chaos.stop().await;

    let dry = start_chaos(immune_chaos::Config {
        dry_run: true,
        ..world.config()
    });
    let run = world.ask("orders", FaultKind::Kill, 1000, &[]).await;
    let rejected = world.rejected(&run).await;
    assert!(
        rejected
            .reason
            .starts_with("dry run: would inject kill into"),
        "{}",
        rejected.reason
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        demo.running().await && demo.healthy().await,
        "nothing touched"
    );
    dry.stop().await;
}

/// Publishes a snapshot of `orders` every 200 ms with the error ratio the test sets (in
/// thousandths): the experiment reads snapshots from the bus, whoever measured them.
fn snapshots_of_orders(
    bus: Bus,
    error_ratio: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let mut snapshot = immune_nats::samples::metric_snapshot();
            snapshot.observed_ms = immune_nats::envelope::now_ms();
            let ratio = error_ratio.load(std::sync::atomic::Ordering::SeqCst) as f64 / 1000.0;
            snapshot
                .features
                .insert(immune_nats::feature::ERROR_RATIO.to_string(), ratio);
            let _ = bus.publish(None, Event::MetricSnapshot(snapshot)).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

fn experiment(method: &str, rollback_url: &str) -> immune_chaos::experiment::Experiment {
    immune_chaos::experiment::Experiment::parse(&format!(
        r#"
title = "test"
service = "orders"
settle_ms = 300
[steady_state]
window_ms = 1000
min_snapshots = 2
[[steady_state.probes]]
feature = "error_ratio"
max = 0.05
abort_max = 0.5
{method}
[[rollbacks]]
url = "{rollback_url}"
body = '{{"mode": "none"}}'
"#
    ))
    .expect("a valid experiment")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_experiment_holds_or_aborts_on_its_limits_and_rolls_back() {
    use immune_chaos::experiment::{run, Verdict};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    let world = World::new().await;
    let chaos = start_chaos(world.config());
    let demo = DemoContainer::start(DemoSpec::new("orders", &world.project)).await;
    let fault_url = format!(
        "http://{}:8080/fault",
        demo.address().await.expect("address")
    );
    let error_ratio = Arc::new(AtomicU64::new(0));
    let feed = snapshots_of_orders(world.bus.clone(), error_ratio.clone());

    // Steady before and after a short latency fault: the hypothesis holds.
    let held = experiment(
        "[[method]]\nfault = \"latency\"\nduration_ms = 800\nparams = { latency_ms = \"300\" }",
        &fault_url,
    );
    let mut lines = Vec::new();
    let verdict = run(&world.bus, &held, &unique("exp"), |l| {
        lines.push(l.to_string())
    })
    .await
    .expect("experiment runs");
    assert_eq!(verdict, Verdict::Held, "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("latency injected into orders")),
        "{lines:#?}"
    );

    // Not steady to begin with: nothing is injected.
    error_ratio.store(200, Ordering::SeqCst);
    let verdict = run(&world.bus, &held, &unique("exp"), |_| {})
        .await
        .expect("experiment runs");
    assert!(
        matches!(verdict, Verdict::NotSteadyBefore(ref why) if why.contains("error_ratio")),
        "{verdict:?}"
    );
    assert_eq!(world.mode(&demo).await, "none");

    // Errors past the abort limit during the method: abort, roll back at once.
    error_ratio.store(0, Ordering::SeqCst);
    let aborting = experiment(
        "[[method]]\nfault = \"errors\"\nduration_ms = 20000\nparams = { error_rate = \"1.0\" }\n[[method]]\nfault = \"kill\"\nduration_ms = 1000",
        &fault_url,
    );
    let breach = tokio::spawn({
        let error_ratio = error_ratio.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(1800)).await;
            error_ratio.store(900, Ordering::SeqCst);
        }
    });
    let started = Instant::now();
    let mut lines = Vec::new();
    let verdict = run(&world.bus, &aborting, &unique("exp"), |l| {
        lines.push(l.to_string())
    })
    .await
    .expect("experiment runs");
    breach.await.expect("breach task");
    match &verdict {
        Verdict::Aborted { step, reason } => {
            assert_eq!(*step, 1);
            assert!(reason.contains("abort limit 0.5"), "{reason}");
        }
        other => panic!("expected an abort, got {other:?}: {lines:#?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "aborted long before the fault's 20 s"
    );
    assert_eq!(
        world.mode(&demo).await,
        "none",
        "the rollback cleared the fault"
    );
    assert!(demo.running().await, "the second step (kill) never ran");
    feed.abort();
    chaos.stop().await;
}

/// A load generator container (the demo image's `--loadgen`) driving `target`'s traffic at
/// 5 requests a second, with its control endpoint; removed on drop.
struct LoadGenerator {
    docker: bollard::Docker,
    id: String,
}

impl LoadGenerator {
    async fn start(target: &DemoContainer, project: &str) -> LoadGenerator {
        use bollard::models::ContainerCreateBody;
        use bollard::query_parameters::{CreateContainerOptions, StartContainerOptions};
        let address = target.address().await.expect("the target's address");
        let docker = bollard::Docker::connect_with_local_defaults().expect("docker");
        let labels = std::collections::HashMap::from([
            ("immune.loadgen".to_string(), "true".to_string()),
            (
                "immune.loadgen.target".to_string(),
                format!("gateway,{}", target.spec.service),
            ),
            ("immune.project".to_string(), project.to_string()),
        ]);
        let body = ContainerCreateBody {
            image: Some(immune_testkit::DEMO_IMAGE.to_string()),
            cmd: Some(
                [
                    "--loadgen",
                    &format!("http://{address}:8080/"),
                    "--rps",
                    "5",
                    "--listen",
                    "0.0.0.0:8089",
                ]
                .map(String::from)
                .to_vec(),
            ),
            env: Some(vec!["SERVICE_NAME=loadgen".to_string()]),
            labels: Some(labels),
            ..Default::default()
        };
        let name = unique("loadgen");
        let created = docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name),
                    ..Default::default()
                }),
                body,
            )
            .await
            .expect("create the load generator");
        docker
            .start_container(&created.id, None::<StartContainerOptions>)
            .await
            .expect("start the load generator");
        LoadGenerator {
            docker,
            id: created.id,
        }
    }

    /// Its `GET /load` answer.
    async fn load(&self, http: &reqwest::Client) -> Option<serde_json::Value> {
        let inspected = self
            .docker
            .inspect_container(&self.id, None::<InspectContainerOptions>)
            .await
            .ok()?;
        let ip = inspected
            .network_settings?
            .networks?
            .into_values()
            .find_map(|n| n.ip_address.filter(|ip| !ip.is_empty()))?;
        let response = http
            .get(format!("http://{ip}:8089/load"))
            .send()
            .await
            .ok()?;
        response.json().await.ok()
    }
}

impl Drop for LoadGenerator {
    fn drop(&mut self) {
        let (docker, id) = (self.docker.clone(), self.id.clone());
        let removing = tokio::spawn(async move {
            let options = bollard::query_parameters::RemoveContainerOptions {
                force: true,
                ..Default::default()
            };
            let _ = docker.remove_container(&id, Some(options)).await;
        });
        drop(removing);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn overload_asks_the_load_generator_for_a_spike_and_puts_it_back() {
    let mut world = World::new().await;
    let chaos = start_chaos(world.config());
    let demo = DemoContainer::start(DemoSpec::new("orders", &world.project)).await;
    let generator = LoadGenerator::start(&demo, &world.project).await;
    let multiplier = |load: &serde_json::Value| load["multiplier"].as_f64().unwrap_or(0.0);
    until(
        Duration::from_secs(15),
        "the load generator's control endpoint to answer",
        async || generator.load(&world.http).await.is_some(),
    )
    .await;
    let before = generator.load(&world.http).await.expect("GET /load");
    assert_eq!(multiplier(&before), 1.0, "{before}");

    let run = world
        .ask("orders", FaultKind::Overload, 4_000, &[("multiplier", "6")])
        .await;
    world.injected(&run).await;
    let during = generator.load(&world.http).await.expect("GET /load");
    assert_eq!(multiplier(&during), 6.0, "the spike is in force: {during}");
    assert!(
        during["target_rps"].as_f64().unwrap_or(0.0) > 5.0 * 5.0,
        "six times the 5 req/s: {during}"
    );
    let reverted = world.reverted(&run, Duration::from_secs(15)).await;
    assert_eq!(reverted.note, "load back to its profile");
    let after = generator.load(&world.http).await.expect("GET /load");
    assert_eq!(multiplier(&after), 1.0, "{after}");

    // A service no load generator drives cannot be overloaded: refused, with the reason.
    let elsewhere = DemoContainer::start(DemoSpec::new("ledger", &world.project)).await;
    let run = world.ask("ledger", FaultKind::Overload, 4_000, &[]).await;
    let refused = world.rejected(&run).await;
    assert!(
        refused.reason.contains("no running load generator"),
        "{}",
        refused.reason
    );
    drop(elsewhere);
    chaos.stop().await;
}
