//! The deployment under test: the compose stack started and stopped under its own project
//! name, ports and demo project (so it never touches another stack's containers), its demo
//! containers found by their labels, and the stage containers' own figures (events counted
//! on each stage's `/metrics`, CPU and memory from Docker's stats).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use bollard::query_parameters::{ListContainersOptions, StatsOptions};
use bollard::Docker;
use futures::StreamExt;
use immune_runtime::docker::{list_managed, ManagedContainer};
use immune_runtime::BusConfig;

use crate::ScorecardError;

/// The five stages, as compose names their services.
pub const STAGES: [&str; 5] = ["collector", "detector", "decider", "executor", "chaos"];
/// Where every stage serves its own `/metrics` in the shipped configs.
const STAGE_METRICS_PORT: u16 = 9464;

/// How to reach and run the stack.
#[derive(Debug, Clone)]
pub struct StackSpec {
    pub compose_file: PathBuf,
    pub compose_project: String,
    pub demo_project: String,
    pub nats_port: u16,
    pub nats_monitor_port: u16,
    pub load_rps: u32,
}

impl StackSpec {
    pub fn nats(&self) -> BusConfig {
        BusConfig::at(format!("nats://127.0.0.1:{}", self.nats_port))
    }

    fn command(&self) -> Command {
        let mut command = Command::new("docker-compose");
        command
            .arg("-p")
            .arg(&self.compose_project)
            .arg("-f")
            .arg(&self.compose_file)
            .env("IMMUNE_NATS_PORT", self.nats_port.to_string())
            .env(
                "IMMUNE_NATS_MONITOR_PORT",
                self.nats_monitor_port.to_string(),
            )
            .env("IMMUNE_DEMO_PROJECT", &self.demo_project)
            .env("IMMUNE_LOADGEN_RPS", self.load_rps.to_string());
        command
    }

    fn compose(&self, args: &[&str]) -> Result<(), ScorecardError> {
        let status = self
            .command()
            .args(args)
            .status()
            .map_err(|e| ScorecardError::Compose {
                args: args.join(" "),
                reason: e.to_string(),
            })?;
        if !status.success() {
            return Err(ScorecardError::Compose {
                args: args.join(" "),
                reason: format!("exited with {status}"),
            });
        }
        Ok(())
    }

    /// `docker-compose up -d` with this spec's project, ports and demo project.
    pub fn up(&self) -> Result<(), ScorecardError> {
        self.compose(&["up", "-d"])
    }

    /// Writes each stage's and NATS's log (`docker-compose logs --timestamps`) to
    /// `<dir>/<service>.log`, so a slow or missed trial can be explained after the stack is
    /// gone. Returns the files written; a service whose log cannot be read is skipped.
    pub fn save_logs(&self, dir: &std::path::Path) -> Result<Vec<PathBuf>, ScorecardError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| ScorecardError::Write(format!("{}: {e}", dir.display())))?;
        let mut written = Vec::new();
        for service in std::iter::once("nats").chain(STAGES) {
            let output = self
                .command()
                .args(["logs", "--no-color", "--timestamps", service])
                .output();
            let Ok(output) = output.map_err(|e| tracing::warn!(service, error = %e, "no logs"))
            else {
                continue;
            };
            let path = dir.join(format!("{service}.log"));
            let mut text = output.stdout;
            text.extend_from_slice(&output.stderr);
            std::fs::write(&path, text)
                .map_err(|e| ScorecardError::Write(format!("{}: {e}", path.display())))?;
            written.push(path);
        }
        Ok(written)
    }

    /// `docker-compose down -v`: containers, network and the NATS volume go. Chaos stops
    /// first: it reverts the faults still in force as it stops (a crashed container is
    /// started again), which must not happen while compose removes the containers.
    pub fn down(&self) -> Result<(), ScorecardError> {
        self.compose(&["stop", "chaos"])?;
        self.compose(&["down", "-v"])
    }
}

/// The running instances of a demo service of this stack.
pub async fn instances(
    docker: &Docker,
    demo_project: &str,
    service: &str,
) -> Result<Vec<ManagedContainer>, ScorecardError> {
    Ok(list_managed(docker, Some(demo_project))
        .await
        .map_err(|e| ScorecardError::Docker(e.to_string()))?
        .into_iter()
        .filter_map(Result::ok)
        .filter(|c| c.service.as_str() == service)
        .collect())
}

/// The names of the containers of `service` in this demo project (running or not).
pub async fn instance_names(
    docker: &Docker,
    demo_project: &str,
    service: &str,
) -> Result<Vec<String>, ScorecardError> {
    Ok(instances(docker, demo_project, service)
        .await?
        .into_iter()
        .map(|c| c.name)
        .collect())
}

/// Removes the containers of `service` whose names are not in `keep`: the replicas a scale
/// out added during a trial (a recreated container keeps its name, so it stays), so that the next trial starts from the same topology (and
/// chaos does not pick a replica that the callers never send a request to). Returns the
/// names removed.
pub async fn remove_added(
    docker: &Docker,
    demo_project: &str,
    service: &str,
    keep: &[String],
) -> Result<Vec<String>, ScorecardError> {
    let mut removed = Vec::new();
    for c in instances(docker, demo_project, service).await? {
        if keep.contains(&c.name) {
            continue;
        }
        docker
            .remove_container(
                &c.id,
                Some(bollard::query_parameters::RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await
            .map_err(|e| ScorecardError::Docker(format!("removing {}: {e}", c.name)))?;
        removed.push(c.name);
    }
    Ok(removed)
}

/// A stage container of the stack: compose service name, id, address.
#[derive(Debug, Clone)]
pub struct StageContainer {
    pub stage: String,
    pub id: String,
    pub address: Option<IpAddr>,
}

pub async fn stage_containers(
    docker: &Docker,
    compose_project: &str,
) -> Result<Vec<StageContainer>, ScorecardError> {
    let options = ListContainersOptions {
        filters: Some(HashMap::from([(
            "label".to_string(),
            vec![format!("com.docker.compose.project={compose_project}")],
        )])),
        ..Default::default()
    };
    let list = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| ScorecardError::Docker(e.to_string()))?;
    let mut stages: Vec<StageContainer> = list
        .into_iter()
        .filter_map(|s| {
            let labels = s.labels.unwrap_or_default();
            let stage = labels.get("com.docker.compose.service")?.clone();
            if !STAGES.contains(&stage.as_str()) {
                return None;
            }
            let address = s
                .network_settings
                .and_then(|n| n.networks)
                .and_then(|n| n.into_values().find_map(|e| e.ip_address?.parse().ok()));
            Some(StageContainer {
                stage,
                id: s.id.unwrap_or_default(),
                address,
            })
        })
        .collect();
    stages.sort_by_key(|s| STAGES.iter().position(|n| *n == s.stage));
    Ok(stages)
}

/// One reading of a stage: its event counters and Docker's CPU/memory counters.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StageReading {
    pub at_ms: u64,
    pub received: f64,
    pub published: f64,
    pub cpu_total_ns: u64,
    pub memory_bytes: u64,
}

/// Sums `immune_stage_events_total{...,event="<event>",...}` over its details.
pub fn events_total(exposition: &str, event: &str) -> f64 {
    let needle = format!("event=\"{event}\"");
    exposition
        .lines()
        .filter(|l| l.starts_with("immune_stage_events_total{") && l.contains(&needle))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub async fn read_stage(
    docker: &Docker,
    http: &reqwest::Client,
    stage: &StageContainer,
) -> Result<StageReading, ScorecardError> {
    let at_ms = crate::now_ms();
    let (received, published) = match stage.address {
        Some(ip) => {
            let url = format!("http://{ip}:{STAGE_METRICS_PORT}/metrics");
            let text = http
                .get(&url)
                .timeout(Duration::from_secs(3))
                .send()
                .await
                .and_then(|r| r.error_for_status())
                .map_err(|e| ScorecardError::Http(format!("{url}: {e}")))?
                .text()
                .await
                .map_err(|e| ScorecardError::Http(format!("{url}: {e}")))?;
            (
                events_total(&text, "received"),
                events_total(&text, "published"),
            )
        }
        None => (0.0, 0.0),
    };
    let stats = docker
        .stats(
            &stage.id,
            Some(StatsOptions {
                stream: false,
                one_shot: false,
            }),
        )
        .next()
        .await
        .ok_or_else(|| ScorecardError::Docker(format!("no stats for {}", stage.stage)))?
        .map_err(|e| ScorecardError::Docker(e.to_string()))?;
    let cpu_total_ns = stats
        .cpu_stats
        .and_then(|c| c.cpu_usage)
        .and_then(|u| u.total_usage)
        .unwrap_or(0);
    let memory = stats.memory_stats.unwrap_or_default();
    let cache = memory
        .stats
        .as_ref()
        .and_then(|s| {
            s.get("inactive_file")
                .or_else(|| s.get("total_inactive_file"))
        })
        .copied()
        .unwrap_or(0);
    Ok(StageReading {
        at_ms,
        received,
        published,
        cpu_total_ns,
        memory_bytes: memory.usage.unwrap_or(0).saturating_sub(cache),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_events_over_details() {
        let text = "# HELP x\n\
            immune_stage_events_total{stage=\"detector\",event=\"received\",detail=\"metric_snapshot\"} 120\n\
            immune_stage_events_total{stage=\"detector\",event=\"received\",detail=\"container_event\"} 3\n\
            immune_stage_events_total{stage=\"detector\",event=\"published\",detail=\"anomaly\"} 2\n\
            immune_stage_duration_seconds_count{stage=\"detector\",event=\"received\"} 99\n";
        assert_eq!(events_total(text, "received"), 123.0);
        assert_eq!(events_total(text, "published"), 2.0);
        assert_eq!(events_total(text, "dead_lettered"), 0.0);
    }
}
