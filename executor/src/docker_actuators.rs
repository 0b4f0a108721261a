//! Docker actuators: the actions the executor carries out on one Docker engine, each safe
//! to run again after a crash mid-action (the exactly-once protocol in [`crate::request`]
//! hands it the earlier [`Attempt`](crate::ledger::Attempt) when there was one): it first looks at what the earlier
//! attempt already did and only does the rest.
//!
//! This file holds the [`Target`] an action is about, how it is looked up, and the
//! container operations the actions share (start, stop, rename, remove). The actions live
//! by kind: [`in_place`] (restart, pause and unpause, limits, reconnect to a network: the
//! container keeps its id), [`recreate`] (recreate and roll back: a new container takes the
//! old one's name), [`scale`] (scale out and in: replicas), all built from [`copy`] (a new
//! container made from an old one's configuration).

mod copy;
mod in_place;
mod recreate;
mod scale;

use std::collections::HashMap;

use bollard::errors::Error as DockerError;
use bollard::models::{ContainerInspectResponse, EndpointSettings};
use bollard::query_parameters::{
    InspectContainerOptions, RemoveContainerOptions, RenameContainerOptions, StartContainerOptions,
    StopContainerOptions,
};
use bollard::Docker;
use immune_nats::ContainerState;
use immune_runtime::docker::{ManagedContainer, TargetError};

use crate::ActError;

pub use copy::create_body;

/// The container an action is about: its labels read, and everything Docker says about it.
#[derive(Debug, Clone)]
pub struct Target {
    pub managed: ManagedContainer,
    pub inspect: ContainerInspectResponse,
}

impl Target {
    /// When its current process started (changes on every start).
    pub fn started_at(&self) -> Option<String> {
        self.inspect.state.as_ref()?.started_at.clone()
    }

    pub fn running(&self) -> bool {
        self.managed.state == ContainerState::Running
    }

    fn labels(&self) -> HashMap<String, String> {
        self.inspect
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default()
    }

    fn networks(&self) -> HashMap<String, EndpointSettings> {
        self.inspect
            .network_settings
            .as_ref()
            .and_then(|n| n.networks.clone())
            .unwrap_or_default()
    }
}

/// Whether a Docker error says the container (or network) does not exist.
pub fn is_not_found(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

fn failed(what: &str, e: impl std::fmt::Display) -> ActError {
    ActError::Failed(format!("{what}: {e}"))
}

/// Carries Docker actions out on one engine.
#[derive(Debug, Clone)]
pub struct DockerActuators {
    docker: Docker,
}

impl DockerActuators {
    pub fn new(docker: Docker) -> Self {
        Self { docker }
    }

    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Inspects one container and reads its labels; `NotManaged` when it did not opt in.
    pub async fn target(&self, container: &str) -> Result<Target, TargetError> {
        let inspect = self
            .docker
            .inspect_container(container, None::<InspectContainerOptions>)
            .await?;
        let id = inspect.id.clone().unwrap_or_default();
        let name = inspect.name.clone().unwrap_or_else(|| id.clone());
        let state = inspect
            .state
            .as_ref()
            .and_then(|s| s.status)
            .map(|s| ContainerState::from_docker(s.as_ref()))
            .unwrap_or(ContainerState::Unknown);
        let address = inspect
            .network_settings
            .as_ref()
            .and_then(|n| n.networks.as_ref())
            .and_then(|networks| {
                let mut ips: Vec<(&String, std::net::IpAddr)> = networks
                    .iter()
                    .filter_map(|(k, v)| Some((k, v.ip_address.as_deref()?.parse().ok()?)))
                    .collect();
                ips.sort();
                ips.first().map(|(_, ip)| *ip)
            });
        let labels = inspect
            .config
            .as_ref()
            .and_then(|c| c.labels.clone())
            .unwrap_or_default();
        let managed = ManagedContainer::from_labels(&id, &name, &labels, state, address)?;
        Ok(Target { managed, inspect })
    }

    async fn exists(&self, container: &str) -> Result<Option<Target>, ActError> {
        match self.target(container).await {
            Ok(t) => Ok(Some(t)),
            Err(TargetError::Docker(e)) if is_not_found(&e) => Ok(None),
            Err(e) => Err(failed(&format!("inspect {container}"), e)),
        }
    }

    async fn start(&self, id: &str) -> Result<(), ActError> {
        match self
            .docker
            .start_container(id, None::<StartContainerOptions>)
            .await
        {
            Ok(()) => Ok(()),
            // 304: already running.
            Err(DockerError::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(failed(&format!("start {id}"), e)),
        }
    }

    async fn rename(&self, id: &str, name: &str) -> Result<(), ActError> {
        self.docker
            .rename_container(
                id,
                RenameContainerOptions {
                    name: name.to_string(),
                },
            )
            .await
            .map_err(|e| failed(&format!("rename to {name}"), e))
    }

    async fn stop(&self, id: &str, stop_grace_s: u32) -> Result<(), ActError> {
        match self
            .docker
            .stop_container(
                id,
                Some(StopContainerOptions {
                    t: Some(stop_grace_s as i32),
                    signal: None,
                }),
            )
            .await
        {
            // 304: already stopped.
            Ok(())
            | Err(DockerError::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(failed(&format!("stop {}", short(id)), e)),
        }
    }

    async fn remove(&self, id: &str) -> Result<(), ActError> {
        match self
            .docker
            .remove_container(
                id,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(failed(&format!("remove {}", short(id)), e)),
        }
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}
