//! The collector: sees every managed service.
//!
//! Every interval it lists the containers that opted in (`immune.enable=true`, see
//! [`immune_runtime::docker::labels`]), probes `/health`, scrapes `/metrics` (each bounded by
//! a timeout and a size limit, all targets concurrently), extracts [`features`] and publishes
//! one [`MetricSnapshot`] per instance. Docker lifecycle events (die, oom, start, ...) are
//! forwarded at once as [`ContainerEvent`]s, so a crash is known without waiting for a scrape.

pub mod features;
mod target;

use std::collections::HashMap;
use std::time::Duration;

use bollard::query_parameters::EventsOptions;
use futures::StreamExt;
use immune_nats::{
    envelope::now_ms, ContainerEvent, ContainerEventKind, Event, MetricSnapshot, ServiceName, Stage,
};
use immune_runtime::docker::{self, labels, ManagedContainer, TargetError};
use immune_runtime::telemetry::Observation;
use immune_runtime::{Bus, BusConfig, BusError, ConfigError, Shutdown, Telemetry, TelemetryConfig};
use serde::{Deserialize, Serialize};

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
    pub series: SeriesNames,
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
            series: SeriesNames::default(),
        }
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
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Docker(#[from] TargetError),
}

/// Runs until `shutdown`.
pub async fn run(
    config: Config,
    telemetry: Telemetry,
    mut shutdown: Shutdown,
) -> Result<(), CollectorError> {
    let bus = Bus::start_stage(
        &config.nats,
        &config.telemetry,
        telemetry.clone(),
        &shutdown,
    )
    .await?;
    let docker = docker::connect()?;
    let events = tokio::spawn(forward_docker_events(
        docker.clone(),
        bus.clone(),
        config.project.clone(),
        shutdown.clone(),
    ));
    let scraper = target::Scraper::new(&config);
    let mut previous: HashMap<String, features::Counters> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(config.interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tracing::info!(project = ?config.project, interval_ms = config.interval_ms, "collector running");
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = tick.tick() => {}
        }
        let started = std::time::Instant::now();
        let containers = match docker::list_managed(&docker, config.project.as_deref()).await {
            Ok(list) => list,
            Err(e) => {
                telemetry.observe(Observation::Failed {
                    what: "discovery",
                    error: &e.to_string(),
                });
                continue;
            }
        };
        let mut managed = Vec::with_capacity(containers.len());
        for c in containers {
            match c {
                Ok(c) => managed.push(c),
                Err(e) => telemetry.observe(Observation::Refused {
                    what: "target",
                    reason: &e.to_string(),
                }),
            }
        }
        let observed = futures::future::join_all(managed.iter().map(|c| scraper.observe(c))).await;
        let mut snapshots = Vec::with_capacity(observed.len());
        for (container, observation) in managed.iter().zip(observed) {
            snapshots.push(observation.into_snapshot(container, config.interval_ms, &mut previous));
        }
        previous.retain(|id, _| managed.iter().any(|c| &c.id == id));
        let published = futures::future::join_all(
            snapshots
                .into_iter()
                .map(|s| bus.publish(None, Event::MetricSnapshot(s))),
        )
        .await;
        for result in published {
            if let Err(e) = result {
                telemetry.observe(Observation::Failed {
                    what: "publish_snapshot",
                    error: &e.to_string(),
                });
            }
        }
        telemetry.time("collection", started.elapsed());
    }
    events.abort();
    tracing::info!("collector stopped");
    Ok(())
}

/// Forwards lifecycle events of managed containers as they happen; reconnects to Docker's
/// event stream with backoff when it breaks.
async fn forward_docker_events(
    docker: bollard::Docker,
    bus: Bus,
    project: Option<String>,
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

/// Kept here so `ManagedContainer` stays the only description of a target.
pub(crate) type Target = ManagedContainer;

/// A snapshot builder used by `target`, split out for unit tests.
pub(crate) fn snapshot_of(target: &Target, interval_ms: u64) -> MetricSnapshot {
    MetricSnapshot {
        service: target.service.clone(),
        instance: target.name.clone(),
        container_id: target.id.clone(),
        observed_ms: now_ms(),
        interval_ms,
        state: target.state,
        health: None,
        scrape: None,
        features: Default::default(),
    }
}
