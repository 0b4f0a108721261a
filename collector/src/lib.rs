//! The collector: sees every managed service.
//!
//! Targets are containers that opted in with labels (`immune.enable=true`, see
//! [`immune_runtime::docker::labels`]), found and kept current from Docker by `discovery`
//! and tracked by the pure [`inventory`], plus static targets from the config. Each target
//! has its own task (`watching`, `target`) that every interval probes `/health`, scrapes
//! `/metrics` (read by the strict [`exposition`] reader) and reads Docker's stats, each
//! bounded in time, extracts [`features`] and publishes one [`MetricSnapshot`] per
//! instance; the [`rollup`] adds one per service over its replicas. Docker lifecycle events
//! (die, oom, start, ...) are forwarded at once as [`ContainerEvent`]s, so a crash is known
//! without waiting for a scrape.
//!
//! This file is the config, the error and [`run`].
//!
//! [`MetricSnapshot`]: immune_nats::MetricSnapshot
//! [`ContainerEvent`]: immune_nats::ContainerEvent

mod discovery;
pub mod exposition;
pub mod features;
pub mod inventory;
pub mod rollup;
mod rollup_publisher;
pub mod stats;
mod target;
mod watching;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use immune_nats::{ContainerState, ServiceName, Stage};
use immune_runtime::docker::{self, Endpoint, ManagedContainer, TargetError};
use immune_runtime::{Bus, BusConfig, BusError, ConfigError, Shutdown, Telemetry, TelemetryConfig};
use inventory::{Change, Inventory};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use watching::Watched;

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
        background.extend(discovery::spawn(
            docker,
            &bus,
            config.project.clone(),
            Duration::from_millis(config.resync_ms),
            changes.clone(),
            &shutdown,
        ));
    }
    drop(changes);
    let interval = Duration::from_millis(config.interval_ms);
    let (rollups, rolled) = mpsc::channel(8192);
    background.push(tokio::spawn(rollup_publisher::publish_rollups(
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
    watched.stop(interval * 2).await;
    for task in background {
        task.abort();
    }
    // Every snapshot a target task published was acknowledged before it returned; what is
    // left on the connection is flushed as it closes.
    bus.close().await;
    tracing::info!("collector stopped");
    Ok(())
}

/// Used by `main` and tests: the stage name for config and telemetry.
pub const STAGE: Stage = Stage::Collector;
