//! The fault catalogue: how each fault is injected into a target and how it is reverted.
//!
//! Through the demo services' `POST /fault`: crash, hang, latency, errors, memory_leak,
//! cpu_burn. Through Docker: kill (SIGKILL), stop, pause, restart, network_disconnect (from
//! every network, reconnected with the same aliases). Through HTTP requests: attack (the
//! [`crate::attack`] catalogue, sent in rounds until reverted). What a revert needs beyond
//! the container id (the networks left) is returned as an [`Undo`] that the stage keeps in
//! the bus, so another chaos process can revert it. Through the load generator: overload
//! (see [`crate::loadgen`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::models::{EndpointSettings, NetworkConnectRequest, NetworkDisconnectRequest};
use bollard::query_parameters::InspectContainerOptions;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::attack::{self, AttackReport};
use crate::loadgen;

use bollard::query_parameters::{
    KillContainerOptions, RestartContainerOptions, StopContainerOptions,
};
use bollard::Docker;
use immune_nats::{ContainerState, FaultKind};
use immune_runtime::docker::{inspect_managed, ManagedContainer};

/// A network the container was taken off, with its aliases on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Detached {
    pub network: String,
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// What a revert needs to know beyond the container and the fault.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Undo {
    #[serde(default)]
    pub detached: Vec<Detached>,
    /// The load generator an overload was asked of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loadgen: Option<String>,
}

/// An attack burst in progress: its stop flag and the task that returns its report.
type Burst = (Arc<AtomicBool>, JoinHandle<AttackReport>);

/// Injects and reverts faults on managed containers.
#[derive(Debug, Clone)]
pub struct Injector {
    docker: Docker,
    http: reqwest::Client,
    /// Attack bursts by fault key.
    bursts: Arc<Mutex<HashMap<String, Burst>>>,
}

/// The demo services' fault endpoint body.
fn fault_body(fault: FaultKind, params: &BTreeMap<String, String>) -> Option<serde_json::Value> {
    let num = |k: &str, default: f64| {
        params
            .get(k)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(default)
    };
    Some(match fault {
        FaultKind::Crash => serde_json::json!({ "mode": "crash" }),
        FaultKind::Hang => serde_json::json!({ "mode": "hang" }),
        FaultKind::Latency => {
            serde_json::json!({ "mode": "latency", "latency_ms": num("latency_ms", 500.0) as u64 })
        }
        FaultKind::Errors => {
            serde_json::json!({ "mode": "errors", "error_rate": num("error_rate", 0.5) })
        }
        FaultKind::MemoryLeak => serde_json::json!({
            "mode": "memory_leak",
            "leak_mb_per_s": num("leak_mb_per_s", 10.0) as u64,
            "leak_cap_mb": num("leak_cap_mb", 256.0) as u64,
        }),
        FaultKind::CpuBurn => {
            serde_json::json!({ "mode": "cpu_burn", "burn_share": num("burn_share", 1.0) })
        }
        _ => return None,
    })
}

impl Injector {
    pub fn new(docker: Docker) -> Self {
        Self {
            docker,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .build()
                .unwrap_or_default(),
            bursts: Arc::default(),
        }
    }

    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    fn fault_url(target: &ManagedContainer) -> Result<String, String> {
        let address = target.address.ok_or("container has no network address")?;
        let endpoint = target.admin.as_ref().or(target.health.as_ref()).ok_or(
            "container has neither immune.admin nor immune.health: no /fault endpoint known",
        )?;
        let mut fault = endpoint.clone();
        fault.path = "/fault".into();
        Ok(fault.url(address))
    }

    async fn post_fault(
        &self,
        target: &ManagedContainer,
        body: serde_json::Value,
    ) -> Result<(), String> {
        let url = Self::fault_url(target)?;
        let response = self
            .http
            .post(&url)
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("POST {url}: {e}"))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("POST {url}: status {}", response.status()))
        }
    }

    /// Injects `fault` for `duration_ms`; `key` names it among the faults in force.
    pub async fn inject(
        &self,
        target: &ManagedContainer,
        fault: FaultKind,
        params: &BTreeMap<String, String>,
        key: &str,
        duration_ms: u64,
    ) -> Result<Undo, String> {
        if let Some(body) = fault_body(fault, params) {
            return self
                .post_fault(target, body)
                .await
                .map(|()| Undo::default());
        }
        let id = target.id.as_str();
        match fault {
            FaultKind::NetworkDisconnect => return self.disconnect(id).await,
            FaultKind::Overload => {
                let multiplier = loadgen::multiplier(params)?;
                let project = target.project.as_deref();
                let generator = loadgen::find(&self.docker, &target.service, project).await?;
                loadgen::set(&self.http, &generator, multiplier, duration_ms).await?;
                return Ok(Undo {
                    loadgen: Some(generator.id),
                    ..Undo::default()
                });
            }
            FaultKind::Attack => {
                let url = attack_url(target, params)?;
                let interval = Duration::from_millis(
                    params
                        .get("interval_ms")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(500),
                );
                self.start_burst(key, url, interval);
                return Ok(Undo::default());
            }
            _ => {}
        }
        let docker = match fault {
            FaultKind::Kill => {
                self.docker
                    .kill_container(
                        id,
                        Some(KillContainerOptions {
                            signal: "SIGKILL".into(),
                        }),
                    )
                    .await
            }
            FaultKind::Stop => {
                self.docker
                    .stop_container(
                        id,
                        Some(StopContainerOptions {
                            t: Some(1),
                            signal: None,
                        }),
                    )
                    .await
            }
            FaultKind::Pause => self.docker.pause_container(id).await,
            FaultKind::Restart => {
                self.docker
                    .restart_container(
                        id,
                        Some(RestartContainerOptions {
                            t: Some(1),
                            signal: None,
                        }),
                    )
                    .await
            }
            other => return Err(format!("fault {other} is not in this build's catalogue")),
        };
        docker.map(|()| Undo::default()).map_err(|e| e.to_string())
    }

    /// Takes the container off every network it is on, remembering its aliases.
    async fn disconnect(&self, id: &str) -> Result<Undo, String> {
        let inspected = self
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .map_err(|e| e.to_string())?;
        let networks = inspected
            .network_settings
            .and_then(|n| n.networks)
            .unwrap_or_default();
        if networks.is_empty() {
            return Err("container is on no network".into());
        }
        let mut undo = Undo::default();
        for (network, endpoint) in networks {
            self.docker
                .disconnect_network(
                    &network,
                    NetworkDisconnectRequest {
                        container: Some(id.to_string()),
                        force: Some(true),
                    },
                )
                .await
                .map_err(|e| format!("disconnect from {network}: {e}"))?;
            undo.detached.push(Detached {
                network,
                aliases: endpoint.aliases.unwrap_or_default(),
            });
        }
        Ok(undo)
    }

    /// Puts the container back on the networks it was taken off; says what it did.
    async fn reconnect(&self, id: &str, undo: &Undo) -> String {
        let mut notes = Vec::new();
        for detached in &undo.detached {
            // The default bridge takes no aliases.
            let aliases = (!detached.aliases.is_empty()).then(|| detached.aliases.clone());
            let connected = self
                .docker
                .connect_network(
                    &detached.network,
                    NetworkConnectRequest {
                        container: Some(id.to_string()),
                        endpoint_config: Some(EndpointSettings {
                            aliases,
                            ..Default::default()
                        }),
                    },
                )
                .await;
            notes.push(match connected {
                Ok(()) => format!("reconnected to {}", detached.network),
                Err(e) if e.to_string().contains("already exists") => {
                    format!("already on {}", detached.network)
                }
                Err(e) => format!("could not reconnect to {}: {e}", detached.network),
            });
        }
        notes.join("; ")
    }

    fn start_burst(&self, key: &str, url: String, interval: Duration) {
        let stop = Arc::new(AtomicBool::new(false));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap_or_default();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut report = AttackReport::default();
                while !stop.load(Ordering::SeqCst) {
                    attack::round(&client, &url, &mut report).await;
                    tokio::time::sleep(interval).await;
                }
                report
            }
        });
        if let Ok(mut bursts) = self.bursts.lock() {
            bursts.insert(key.to_string(), (stop, task));
        }
    }

    /// Stops an attack burst and reports what the service did with it.
    async fn stop_burst(&self, key: &str) -> String {
        let burst = self.bursts.lock().ok().and_then(|mut b| b.remove(key));
        let Some((stop, task)) = burst else {
            return "the attack burst ended with the chaos process that started it".into();
        };
        stop.store(true, Ordering::SeqCst);
        match task.await {
            Ok(report) => report.to_string(),
            Err(e) => format!("attack burst failed: {e}"),
        }
    }

    /// Undoes a fault when its time is up; says what it found and did.
    pub async fn revert(
        &self,
        container_id: &str,
        fault: FaultKind,
        key: &str,
        undo: &Undo,
    ) -> String {
        if fault == FaultKind::Attack {
            return self.stop_burst(key).await;
        }
        if fault == FaultKind::Overload {
            let Some(id) = &undo.loadgen else {
                return "no load generator recorded: the spike ends by itself".into();
            };
            let back = match loadgen::at(&self.docker, id).await {
                Ok(generator) => loadgen::set(&self.http, &generator, 1.0, 0).await,
                Err(e) => Err(e),
            };
            return match back {
                Ok(()) => "load back to its profile".into(),
                Err(e) => format!("could not end the spike ({e}); it ends by itself"),
            };
        }
        let now = match inspect_managed(&self.docker, container_id).await {
            Ok(now) => now,
            Err(e) => return format!("target gone: {e}"),
        };
        match fault {
            FaultKind::NetworkDisconnect => self.reconnect(&now.id, undo).await,
            FaultKind::Hang
            | FaultKind::Latency
            | FaultKind::Errors
            | FaultKind::MemoryLeak
            | FaultKind::CpuBurn => {
                if now.state != ContainerState::Running {
                    return format!("target is {:?}; nothing to clear", now.state).to_lowercase();
                }
                match self
                    .post_fault(&now, serde_json::json!({ "mode": "none" }))
                    .await
                {
                    Ok(()) => "fault cleared".into(),
                    Err(e) => format!("could not clear the fault: {e}"),
                }
            }
            FaultKind::Pause if now.state == ContainerState::Paused => {
                match self.docker.unpause_container(&now.id).await {
                    Ok(()) => "unpaused".into(),
                    Err(e) => format!("could not unpause: {e}"),
                }
            }
            FaultKind::Crash | FaultKind::Kill | FaultKind::Stop
                if now.state != ContainerState::Running =>
            {
                match self
                    .docker
                    .start_container(
                        &now.id,
                        None::<bollard::query_parameters::StartContainerOptions>,
                    )
                    .await
                {
                    Ok(()) => "was still down: started it".into(),
                    Err(e) => format!("could not start it: {e}"),
                }
            }
            _ => "already healed".into(),
        }
    }
}

/// Where the attack goes: `http://<address>:<health port><path>` (param `path`, default `/`).
fn attack_url(
    target: &ManagedContainer,
    params: &BTreeMap<String, String>,
) -> Result<String, String> {
    let address = target.address.ok_or("container has no network address")?;
    let mut endpoint = target
        .health
        .as_ref()
        .or(target.admin.as_ref())
        .ok_or("container has neither immune.health nor immune.admin: no port known")?
        .clone();
    endpoint.path = params.get("path").cloned().unwrap_or_else(|| "/".into());
    Ok(endpoint.url(address))
}
