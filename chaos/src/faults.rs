//! The fault catalogue: how each fault is injected into a target and how it is reverted.

use std::time::Duration;

use bollard::query_parameters::{
    KillContainerOptions, RestartContainerOptions, StopContainerOptions,
};
use bollard::Docker;
use immune_nats::{ContainerState, FaultKind};
use immune_runtime::docker::{inspect_managed, ManagedContainer};

/// Injects and reverts faults on managed containers.
#[derive(Debug, Clone)]
pub struct Injector {
    docker: Docker,
    http: reqwest::Client,
}

/// The demo services' fault endpoint body.
fn fault_body(
    fault: FaultKind,
    params: &std::collections::BTreeMap<String, String>,
) -> Option<serde_json::Value> {
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

    pub async fn inject(
        &self,
        target: &ManagedContainer,
        fault: FaultKind,
        params: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), String> {
        if let Some(body) = fault_body(fault, params) {
            return self.post_fault(target, body).await;
        }
        let id = target.id.as_str();
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
        docker.map_err(|e| e.to_string())
    }

    /// Undoes a fault when its time is up; says what it found and did.
    pub async fn revert(&self, target: &ManagedContainer, fault: FaultKind) -> String {
        let now = match inspect_managed(&self.docker, &target.id).await {
            Ok(now) => now,
            Err(e) => return format!("target gone: {e}"),
        };
        match fault {
            FaultKind::Hang | FaultKind::Latency | FaultKind::Errors => {
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
