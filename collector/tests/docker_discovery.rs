//! The collector against a real Docker engine and a real nats-server: containers are found
//! from Docker's event stream as they appear (the periodic listing is set far off, so events
//! alone must do it), replicas roll up under their service, CPU and memory come from Docker's
//! stats, a restart is counted, and a removed replica leaves the roll-up.

use std::time::Duration;

use bollard::query_parameters::RestartContainerOptions;
use futures::StreamExt;
use immune_collector::{Config, STAGE};
use immune_nats::{decode, feature, ContainerEventKind, Event, MetricSnapshot, SnapshotScope};
use immune_runtime::{BusConfig, Telemetry};
use immune_testkit::{unique, within, DemoContainer, DemoSpec, NatsServer, RunningStage};

/// A collector of `project` on `nats`, every 500 ms.
fn fast(nats: &NatsServer, project: &str) -> Config {
    Config {
        nats: BusConfig {
            url: nats.url(),
            ..Default::default()
        },
        project: Some(project.to_string()),
        interval_ms: 500,
        probe_timeout_ms: 400,
        scrape_timeout_ms: 400,
        ..Default::default()
    }
}

async fn next_snapshot(
    sub: &mut async_nats::Subscriber,
    what: &str,
    mut wanted: impl FnMut(&MetricSnapshot) -> bool,
) -> MetricSnapshot {
    within(Duration::from_secs(15), what, async {
        while let Some(m) = sub.next().await {
            if let Ok(envelope) = decode(&m.payload) {
                if let Event::MetricSnapshot(s) = envelope.body {
                    if wanted(&s) {
                        return s;
                    }
                }
            }
        }
        panic!("subscription ended");
    })
    .await
}

/// The collector running as a task of the test, stopped within 5 s.
fn start_collector(config: Config) -> RunningStage<Telemetry> {
    RunningStage::start(
        "the collector",
        Telemetry::new(STAGE),
        |telemetry, shutdown| immune_collector::run(config, telemetry, shutdown),
    )
    .stop_within(Duration::from_secs(5), "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finds_containers_from_events_and_rolls_up_replicas() {
    let nats = NatsServer::start().await;
    let project = unique("discovery");
    let service = unique("orders");
    let config = Config {
        resync_ms: 600_000,
        ..fast(&nats, &project)
    };
    let client = nats.client().await;
    let mut metrics = client
        .subscribe(format!("immune.metrics.{service}"))
        .await
        .expect("subscribe");
    let mut events = client
        .subscribe(format!("immune.events.{service}"))
        .await
        .expect("subscribe");
    let collector = start_collector(config);
    let telemetry = collector.telemetry.clone();
    // Let the first listing (at start) pass with nothing in it.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let first = DemoContainer::start(DemoSpec::new(&service, &project)).await;
    let s = next_snapshot(&mut metrics, "the new container's snapshot with CPU", |s| {
        s.instance == first.name && s.features.contains_key(feature::CPU_CORES)
    })
    .await;
    assert!(s.health.as_ref().is_some_and(|h| h.ok), "{s:?}");
    assert!(s.scrape.as_ref().is_some_and(|o| o.ok), "{s:?}");
    let memory = s.features[feature::MEMORY_BYTES];
    assert!(memory > 100_000.0 && memory < 1e9, "memory {memory}");
    assert!(s.features[feature::CPU_CORES] >= 0.0 && s.features[feature::CPU_CORES] < 2.5);
    assert_eq!(s.features[feature::RESTARTS], 0.0);

    let second = DemoContainer::start(DemoSpec::new(&service, &project)).await;
    let rollup = next_snapshot(&mut metrics, "a roll-up over two replicas", |s| {
        s.scope == SnapshotScope::Service && s.replicas.is_some_and(|r| r.total == 2)
    })
    .await;
    assert_eq!(rollup.replicas.map(|r| r.healthy), Some(2), "{rollup:?}");

    first
        .docker
        .restart_container(
            &first.id,
            Some(RestartContainerOptions {
                t: Some(1),
                ..Default::default()
            }),
        )
        .await
        .expect("restart");
    let restarted = next_snapshot(&mut metrics, "a snapshot counting the restart", |s| {
        s.instance == first.name && s.features.get(feature::RESTARTS).is_some_and(|&r| r >= 1.0)
    })
    .await;
    assert_eq!(restarted.features[feature::RESTARTS], 1.0);
    let mut kinds = Vec::new();
    within(
        Duration::from_secs(5),
        "die and start events of the restart",
        async {
            while let Some(m) = events.next().await {
                if let Ok(envelope) = decode(&m.payload) {
                    if let Event::ContainerEvent(e) = envelope.body {
                        kinds.push(e.kind);
                        if kinds.contains(&ContainerEventKind::Died)
                            && kinds.contains(&ContainerEventKind::Started)
                        {
                            return;
                        }
                    }
                }
            }
        },
    )
    .await;

    drop(second);
    next_snapshot(&mut metrics, "the roll-up back to one replica", |s| {
        s.scope == SnapshotScope::Service && s.replicas.is_some_and(|r| r.total == 1)
    })
    .await;

    collector.stop().await;
    assert!(telemetry.count("acted", "container_event") >= 2);
}

/// Without cgroup files (a remote engine, or the host's tree not mounted), CPU and memory
/// come from Docker's stats API, and the snapshots keep their pace while it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn falls_back_to_the_stats_api_without_delaying_snapshots() {
    let nats = NatsServer::start().await;
    let project = unique("stats");
    let service = unique("payments");
    let no_cgroups = tempfile::tempdir().expect("tmp");
    let config = Config {
        cgroup_root: no_cgroups.path().to_path_buf(),
        ..fast(&nats, &project)
    };
    let demo = DemoContainer::start(DemoSpec::new(&service, &project)).await;
    let client = nats.client().await;
    let mut metrics = client
        .subscribe(format!("immune.metrics.{service}"))
        .await
        .expect("subscribe");
    let collector = start_collector(config);
    let s = next_snapshot(&mut metrics, "CPU from the stats API", |s| {
        s.instance == demo.name && s.features.contains_key(feature::CPU_CORES)
    })
    .await;
    assert!(s.features[feature::MEMORY_BYTES] > 100_000.0, "{s:?}");
    let lag = immune_nats::envelope::now_ms().saturating_sub(s.observed_ms);
    assert!(lag < 500, "the snapshot waited {lag} ms for the stats API");
    collector.stop().await;
}
