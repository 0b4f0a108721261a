//! The Docker actions that keep the container (same id): restart, pause and unpause, new
//! CPU and memory limits, reconnect to a network. After a crash mid-restart the earlier
//! attempt's effect is looked at first; the others are harmless to repeat.

use std::time::Duration;

use bollard::models::{ContainerUpdateBody, NetworkConnectRequest, NetworkDisconnectRequest};
use bollard::query_parameters::RestartContainerOptions;
use immune_nats::ContainerState;

use super::copy::endpoint_for;
use super::{failed, DockerActuators, Target};
use crate::ledger::Attempt;
use crate::plan::Limits;
use crate::ActError;

impl DockerActuators {
    /// Restart with a short stop grace. After a crash mid-restart, a container started since
    /// the earlier attempt began counts as restarted; a stopped one is only started.
    pub async fn restart(
        &self,
        target: &Target,
        stop_grace_s: u32,
        prior: Option<&Attempt>,
    ) -> Result<String, ActError> {
        let id = target.managed.id.as_str();
        if let Some(prior) = prior {
            // The earlier attempt's stop may still be under way in the engine: it ends
            // within the stop grace, so wait that long for its start before deciding.
            let settle = prior.started_ms + u64::from(stop_grace_s) * 1000 + 2_000;
            loop {
                let now = self
                    .exists(id)
                    .await?
                    .ok_or_else(|| ActError::Failed(format!("container {id} is gone")))?;
                if now.running() && now.started_at() != prior.container_started_at {
                    return Ok("already restarted by an earlier attempt".into());
                }
                if immune_nats::envelope::now_ms() >= settle {
                    if !now.running() {
                        self.start(id).await?;
                        return Ok("started (an earlier attempt had stopped it)".into());
                    }
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        self.docker
            .restart_container(
                id,
                Some(RestartContainerOptions {
                    t: Some(stop_grace_s as i32),
                    signal: None,
                }),
            )
            .await
            .map_err(|e| failed("restart", e))?;
        Ok(format!("restarted (stop grace {stop_grace_s} s)"))
    }

    pub async fn pause(&self, target: &Target) -> Result<String, ActError> {
        if target.managed.state == ContainerState::Paused {
            return Ok("already paused".into());
        }
        self.docker
            .pause_container(&target.managed.id)
            .await
            .map_err(|e| failed("pause", e))?;
        Ok("paused".into())
    }

    pub async fn unpause(&self, target: &Target) -> Result<String, ActError> {
        if target.managed.state != ContainerState::Paused {
            return Ok("was not paused".into());
        }
        self.docker
            .unpause_container(&target.managed.id)
            .await
            .map_err(|e| failed("unpause", e))?;
        Ok("unpaused".into())
    }

    /// Sets new limits on the running container (no restart). Without swap beyond memory.
    pub async fn update_limits(&self, target: &Target, limits: Limits) -> Result<String, ActError> {
        let body = ContainerUpdateBody {
            nano_cpus: limits.nano_cpus,
            memory: limits.memory_bytes,
            memory_swap: limits.memory_bytes,
            ..Default::default()
        };
        self.docker
            .update_container(&target.managed.id, body)
            .await
            .map_err(|e| failed("update limits", e))?;
        Ok(format!(
            "limits set: cpus {}, memory {}",
            limits
                .nano_cpus
                .map(|n| format!("{}", n as f64 / 1e9))
                .unwrap_or_else(|| "unchanged".into()),
            limits
                .memory_bytes
                .map(|m| format!("{m} bytes"))
                .unwrap_or_else(|| "unchanged".into())
        ))
    }

    /// Disconnects from and connects again to `network` (or every network it is on),
    /// keeping its aliases.
    pub async fn reconnect_network(
        &self,
        target: &Target,
        network: Option<&str>,
    ) -> Result<String, ActError> {
        let current = target.networks();
        let names: Vec<String> = match network {
            Some(n) => vec![n.to_string()],
            None => {
                let mut all: Vec<String> = current.keys().cloned().collect();
                all.sort();
                all
            }
        };
        if names.is_empty() {
            return Err(ActError::Refused(format!(
                "container {} is on no network; name one with params.network",
                target.managed.name
            )));
        }
        for name in &names {
            if current.contains_key(name) {
                self.docker
                    .disconnect_network(
                        name,
                        NetworkDisconnectRequest {
                            container: Some(target.managed.id.clone()),
                            force: Some(true),
                        },
                    )
                    .await
                    .map_err(|e| failed(&format!("disconnect from {name}"), e))?;
            }
            let endpoint = current
                .get(name)
                .map(|e| endpoint_for(name, e, &target.managed.name, false))
                .unwrap_or_default();
            self.docker
                .connect_network(
                    name,
                    NetworkConnectRequest {
                        container: Some(target.managed.id.clone()),
                        endpoint_config: Some(endpoint),
                    },
                )
                .await
                .map_err(|e| failed(&format!("connect to {name}"), e))?;
        }
        Ok(format!("reconnected to {}", names.join(", ")))
    }
}
