//! The collector: sees every managed service.
//!
//! Targets are containers that opted in with labels (`immune.enable=true`, see
//! [`immune_runtime::docker::labels`]), kept current from Docker's event stream by the
//! [`inventory`], plus static targets from the config. Each target has its own task that every
//! interval probes `/health`, scrapes `/metrics` (read by the strict [`exposition`] reader)
//! and reads Docker's stats, each bounded in time, extracts [`features`] and publishes one
//! [`MetricSnapshot`] per instance; the [`rollup`] adds one per service over its replicas.
//! Docker lifecycle events (die, oom, start, ...) are forwarded at once as
//! [`ContainerEvent`]s, so a crash is known without waiting for a scrape.

pub mod exposition;
pub mod features;
pub mod inventory;
pub mod rollup;
pub mod stats;
pub mod synthetic;
mod target;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bollard::query_parameters::EventsOptions;
use futures::StreamExt;
use immune_nats::{
    envelope::now_ms, ContainerEvent, ContainerEventKind, ContainerState, Event, MetricSnapshot,
    ServiceName, Stage,
};
use immune_runtime::docker::{self, labels, Endpoint, ManagedContainer, TargetError};
use immune_runtime::telemetry::Observation;
use immune_runtime::{Bus, BusConfig, BusError, ConfigError, Shutdown, Telemetry, TelemetryConfig};
use inventory::{Change, Delta, Inventory, Target};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

pub use features::SeriesNames;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub nats: BusConfig,
    pub telemetry: TelemetryConfig,
    /// Only containers labelled `immune.project=<project>`; every managed container when unset.
    pub project: Option<String>,
    pub interval_ms: u64,
    pub probe_timeout_ms: u64,
    pub scrape_timeout_ms: u64,
    /// A larger exposition is refused with a scrape error.
    pub max_exposition_bytes: usize,
    /// Discover containers through the Docker API (off: static targets only).
    pub discover_docker: bool,
    /// A full listing of Docker's containers this often, in case an event was missed.
    pub resync_ms: u64,
    /// Read CPU and memory of discovered containers every interval.
    pub docker_stats: bool,
    /// The host's cgroup tree (in a container: where it is mounted read-only); when a
    /// container's cgroup is not found there, Docker's stats API is used instead.
    pub cgroup_root: std::path::PathBuf,
    pub series: SeriesNames,
    /// Targets outside Docker, scraped the same way.
    pub targets: Vec<StaticTarget>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            nats: BusConfig::default(),
            telemetry: TelemetryConfig::default(),
            project: None,
            interval_ms: 1000,
            probe_timeout_ms: 500,
            scrape_timeout_ms: 800,
            max_exposition_bytes: 4 * 1024 * 1024,
            discover_docker: true,
            resync_ms: 15_000,
            docker_stats: true,
            cgroup_root: "/sys/fs/cgroup".into(),
            series: SeriesNames::default(),
            targets: Vec::new(),
        }
    }
}

/// A target given by address rather than discovered (`[[targets]]` in the config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticTarget {
    pub service: String,
    /// Defaults to the service name; must be unique.
    #[serde(default)]
    pub instance: Option<String>,
    /// `ip:port` serving both paths.
    pub address: String,
    /// Empty: not scraped.
    #[serde(default = "default_metrics_path")]
    pub metrics_path: String,
    /// Empty: not probed.
    #[serde(default = "default_health_path")]
    pub health_path: String,
}

fn default_metrics_path() -> String {
    "/metrics".into()
}

fn default_health_path() -> String {
    "/health".into()
}

impl StaticTarget {
    /// The target in the shape discovered containers have.
    pub fn to_managed(&self) -> Result<ManagedContainer, String> {
        let service = ServiceName::new(self.service.clone()).map_err(|e| e.to_string())?;
        let address: SocketAddr = self
            .address
            .parse()
            .map_err(|_| format!("address {:?} is not ip:port", self.address))?;
        let endpoint = |path: &str| {
            (!path.is_empty()).then(|| Endpoint {
                port: address.port(),
                path: path.to_string(),
            })
        };
        let instance = self
            .instance
            .clone()
            .unwrap_or_else(|| self.service.clone());
        Ok(ManagedContainer {
            id: format!("static:{instance}"),
            name: instance,
            service,
            state: ContainerState::Running,
            address: Some(address.ip()),
            metrics: endpoint(&self.metrics_path),
            health: endpoint(&self.health_path),
            admin: None,
            chaos: false,
            project: None,
            depends_on: Vec::new(),
        })
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError::Invalid(format!("{key}: {why}")));
        if self.interval_ms < 100 {
            return bad("interval_ms", "must be at least 100");
        }
        if self.probe_timeout_ms == 0 || self.probe_timeout_ms > self.interval_ms {
            return bad("probe_timeout_ms", "must be between 1 and interval_ms");
        }
        if self.scrape_timeout_ms == 0 || self.scrape_timeout_ms > self.interval_ms {
            return bad("scrape_timeout_ms", "must be between 1 and interval_ms");
        }
        if self.resync_ms < self.interval_ms {
            return bad("resync_ms", "must be at least interval_ms");
        }
        let mut instances = std::collections::HashSet::new();
        for (i, t) in self.targets.iter().enumerate() {
            let managed = match t.to_managed() {
                Ok(m) => m,
                Err(why) => return bad(&format!("targets[{i}]"), &why),
            };
            if !instances.insert(managed.id) {
                return bad(&format!("targets[{i}].instance"), "used twice");
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Docker(#[from] TargetError),
    #[error("invalid config: {0}")]
    Config(String),
}

/// Runs until `shutdown`.
pub async fn run(
    config: Config,
    telemetry: Telemetry,
    mut shutdown: Shutdown,
) -> Result<(), CollectorError> {
    let static_targets = config
        .targets
        .iter()
        .map(StaticTarget::to_managed)
        .collect::<Result<Vec<_>, _>>()
        .map_err(CollectorError::Config)?;
    let bus = Bus::start_stage(
        &config.nats,
        &config.telemetry,
        telemetry.clone(),
        &shutdown,
    )
    .await?;
    let docker = if config.discover_docker {
        Some(docker::connect()?)
    } else {
        None
    };
    let (changes, mut changed) = mpsc::channel::<Change>(1024);
    let mut background = Vec::new();
    if let Some(docker) = &docker {
        background.push(tokio::spawn(forward_docker_events(
            docker.clone(),
            bus.clone(),
            config.project.clone(),
            changes.clone(),
            shutdown.clone(),
        )));
        background.push(tokio::spawn(resync(
            docker.clone(),
            telemetry.clone(),
            config.project.clone(),
            Duration::from_millis(config.resync_ms),
            changes.clone(),
            shutdown.clone(),
        )));
    }
    drop(changes);
    let interval = Duration::from_millis(config.interval_ms);
    let (rollups, rolled) = mpsc::channel(8192);
    background.push(tokio::spawn(publish_rollups(
        bus.clone(),
        interval,
        rolled,
        shutdown.clone(),
    )));
    let context = Arc::new(target::Context {
        scraper: target::Scraper::new(&config),
        docker: docker.clone(),
        cgroup_root: config.docker_stats.then(|| config.cgroup_root.clone()),
        bus: bus.clone(),
        interval,
        rollups,
    });
    let (mut inventory, deltas) = Inventory::new(static_targets);
    let mut watched = Watched::default();
    watched.apply(deltas, &context, &shutdown);
    tracing::info!(project = ?config.project, interval_ms = config.interval_ms, static_targets = inventory.len(), "collector running");
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            change = changed.recv() => match change {
                Some(change) => {
                    let deltas = inventory.apply(change);
                    watched.apply(deltas, &context, &shutdown);
                }
                // Only static targets: nothing will change until shutdown.
                None => shutdown.wait().await,
            },
        }
    }
    // Target tasks see the shutdown and finish their interval; give them that long.
    let _ = tokio::time::timeout(interval * 2, watched.join()).await;
    for task in background {
        task.abort();
    }
    tracing::info!("collector stopped");
    Ok(())
}

/// The running target tasks, by container id.
#[derive(Default)]
struct Watched {
    tasks: HashMap<String, (watch::Sender<Target>, tokio::task::JoinHandle<()>)>,
}

impl Watched {
    fn apply(&mut self, deltas: Vec<Delta>, context: &Arc<target::Context>, shutdown: &Shutdown) {
        for delta in deltas {
            match delta {
                Delta::Added(t) => {
                    tracing::info!(service = %t.container.service, instance = %t.container.name, "watching target");
                    let id = t.container.id.clone();
                    let (tx, rx) = watch::channel(t);
                    let task = tokio::spawn(target::watch(context.clone(), rx, shutdown.clone()));
                    if let Some((_, old)) = self.tasks.insert(id, (tx, task)) {
                        old.abort();
                    }
                }
                Delta::Updated(t) => {
                    if let Some((tx, _)) = self.tasks.get(&t.container.id) {
                        tx.send_replace(t);
                    }
                }
                Delta::Removed(id) => {
                    if let Some((_, task)) = self.tasks.remove(&id) {
                        tracing::info!(container = %id, "target gone");
                        task.abort();
                    }
                }
            }
        }
    }

    async fn join(self) {
        futures::future::join_all(self.tasks.into_values().map(|(_, task)| task)).await;
    }
}

/// Every `resync`, the full list of managed containers, in case an event was missed.
async fn resync(
    docker: bollard::Docker,
    telemetry: Telemetry,
    project: Option<String>,
    every: Duration,
    changes: mpsc::Sender<Change>,
    mut shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tick.tick() => {}
        }
        let started = std::time::Instant::now();
        let listed = match docker::list_managed(&docker, project.as_deref()).await {
            Ok(list) => list,
            Err(e) => {
                telemetry.observe(Observation::Failed {
                    what: "discovery",
                    error: &e.to_string(),
                });
                continue;
            }
        };
        telemetry.time("discovery", started.elapsed());
        let mut managed = Vec::with_capacity(listed.len());
        for c in listed {
            match c {
                Ok(c) => managed.push(c),
                Err(e) => telemetry.observe(Observation::Refused {
                    what: "target",
                    reason: &e.to_string(),
                }),
            }
        }
        if changes.send(Change::Listed(managed)).await.is_err() {
            return;
        }
    }
}

/// Publishes one roll-up per service every interval, over the instances seen in it.
async fn publish_rollups(
    bus: Bus,
    interval: Duration,
    mut snapshots: mpsc::Receiver<MetricSnapshot>,
    mut shutdown: Shutdown,
) {
    let mut rollups = rollup::Rollups::default();
    let interval_ms = interval.as_millis() as u64;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            Some(s) = snapshots.recv() => rollups.record(s),
            _ = tick.tick() => {
                let now = now_ms();
                // An instance counts while its latest snapshot is from the last interval and a half.
                let since = now.saturating_sub(interval_ms * 3 / 2);
                for snapshot in rollups.roll_up(now, since, interval_ms) {
                    if let Err(e) = bus.publish(None, Event::MetricSnapshot(snapshot)).await {
                        bus.telemetry().observe(Observation::Failed {
                            what: "publish_rollup",
                            error: &e.to_string(),
                        });
                    }
                }
            }
        }
    }
}

/// Forwards lifecycle events of managed containers as they happen; reconnects to Docker's
/// event stream with backoff when it breaks.
async fn forward_docker_events(
    docker: bollard::Docker,
    bus: Bus,
    project: Option<String>,
    changes: mpsc::Sender<Change>,
    mut shutdown: Shutdown,
) {
    let mut label_filters = vec![format!("{}=true", labels::ENABLE)];
    if let Some(p) = &project {
        label_filters.push(format!("{}={p}", labels::PROJECT));
    }
    let filters = HashMap::from([
        ("type".to_string(), vec!["container".to_string()]),
        ("label".to_string(), label_filters),
    ]);
    let mut attempt = 0u32;
    loop {
        let options = EventsOptions {
            since: Some(format!("{}", now_ms() / 1000)),
            filters: Some(filters.clone()),
            ..Default::default()
        };
        let mut stream = docker.events(Some(options));
        loop {
            let next = tokio::select! {
                _ = shutdown.wait() => return,
                n = stream.next() => n,
            };
            match next {
                Some(Ok(message)) => {
                    attempt = 0;
                    if let Some(event) = container_event(&message) {
                        let service = event.service.to_string();
                        let change = match event.kind {
                            ContainerEventKind::Destroyed => Some(Change::Removed {
                                id: event.container_id.clone(),
                            }),
                            _ => {
                                match docker::inspect_managed(&docker, &event.container_id).await {
                                    Ok(container) => Some(Change::Seen {
                                        container: Box::new(container),
                                        started: event.kind == ContainerEventKind::Started,
                                    }),
                                    Err(e) => {
                                        bus.telemetry().observe(Observation::Failed {
                                            what: "inspect",
                                            error: &e.to_string(),
                                        });
                                        None
                                    }
                                }
                            }
                        };
                        if let Err(e) = bus.publish(None, Event::ContainerEvent(event)).await {
                            bus.telemetry().observe(Observation::Failed {
                                what: "publish_event",
                                error: &e.to_string(),
                            });
                        } else {
                            bus.telemetry().observe(Observation::Acted {
                                what: "container_event",
                                service: &service,
                            });
                        }
                        if let Some(change) = change {
                            if changes.send(change).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                Some(Err(e)) => {
                    bus.telemetry().observe(Observation::Failed {
                        what: "docker_events",
                        error: &e.to_string(),
                    });
                    break;
                }
                None => break,
            }
        }
        attempt += 1;
        tokio::time::sleep(Duration::from_millis((100u64 << attempt.min(5)).min(3_000))).await;
    }
}

/// Maps a Docker event to ours; `None` for actions we do not forward.
fn container_event(message: &bollard::models::EventMessage) -> Option<ContainerEvent> {
    let action = message.action.as_deref()?;
    let kind = match action {
        "start" => ContainerEventKind::Started,
        "die" => ContainerEventKind::Died,
        "oom" => ContainerEventKind::OomKilled,
        "restart" => ContainerEventKind::Restarted,
        "pause" => ContainerEventKind::Paused,
        "unpause" => ContainerEventKind::Unpaused,
        "destroy" => ContainerEventKind::Destroyed,
        "health_status: healthy" => ContainerEventKind::Healthy,
        "health_status: unhealthy" => ContainerEventKind::Unhealthy,
        _ => return None,
    };
    let actor = message.actor.as_ref()?;
    let attributes = actor.attributes.as_ref()?;
    let service = ServiceName::new(attributes.get(labels::SERVICE)?.clone()).ok()?;
    let observed_ms = message
        .time_nano
        .map(|ns| (ns / 1_000_000) as u64)
        .unwrap_or_else(now_ms);
    Some(ContainerEvent {
        service,
        instance: attributes.get("name").cloned().unwrap_or_default(),
        container_id: actor.id.clone().unwrap_or_default(),
        kind,
        exit_code: attributes.get("exitCode").and_then(|c| c.parse().ok()),
        observed_ms,
    })
}

/// Used by `main` and tests: the stage name for config and telemetry.
pub const STAGE: Stage = Stage::Collector;
