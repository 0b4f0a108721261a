//! Docker actuators: restart, recreate, scale out and in, pause and unpause, CPU and memory
//! limits, roll back to the previous image, reconnect to a network.
//!
//! Each one is written to be safe to run again after a crash mid-action (the exactly-once
//! flow in the crate root hands it the earlier [`Attempt`] when there was one): it first looks
//! at what the earlier attempt already did and only does the rest.

use std::collections::HashMap;
use std::time::Duration;

use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerUpdateBody, EndpointSettings,
    NetworkConnectRequest, NetworkDisconnectRequest, NetworkingConfig,
};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, ListContainersOptions, RemoveContainerOptions,
    RenameContainerOptions, RestartContainerOptions, StartContainerOptions, StopContainerOptions,
};
use bollard::Docker;
use immune_nats::{ContainerState, ServiceName};
use immune_runtime::docker::{labels, ManagedContainer, TargetError};

use crate::ledger::Attempt;
use crate::plan::{self, Instance, Limits};
use crate::ActError;

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

    /// Replaces the container by a new one from the same configuration (and the same name),
    /// optionally from another image. The old one is renamed aside and stopped first, and
    /// started again under its name when the new one cannot be created.
    pub async fn recreate(
        &self,
        old: &Target,
        stop_grace_s: u32,
        image: Option<(&str, Option<&str>)>,
    ) -> Result<String, ActError> {
        let name = old.managed.name.clone();
        let mut labels = old.labels();
        let mut body = create_body(&old.inspect, false);
        if let Some((image, history)) = image {
            self.docker
                .inspect_image(image)
                .await
                .map_err(|e| failed(&format!("image {image} is not available locally"), e))?;
            body.image = Some(image.to_string());
            match history {
                Some(h) => labels.insert(labels::IMAGE_HISTORY.to_string(), h.to_string()),
                None => labels.remove(labels::IMAGE_HISTORY),
            };
        }
        body.labels = Some(labels);
        let aside = format!("{name}-replaced-{}", short(&old.managed.id));
        self.rename(&old.managed.id, &aside).await?;
        if let Err(e) = self.stop(&old.managed.id, stop_grace_s).await {
            let _ = self.rename(&old.managed.id, &name).await;
            return Err(e);
        }
        let created = match self
            .create(&name, body, &old.networks(), &name, false)
            .await
        {
            Ok(id) => id,
            Err(e) => {
                // Put the old one back as it was.
                let _ = self.rename(&old.managed.id, &name).await;
                let _ = self.start(&old.managed.id).await;
                return Err(e);
            }
        };
        self.start(&created).await?;
        self.remove(&old.managed.id).await?;
        Ok(format!("recreated as {}", short(&created)))
    }

    /// After a crash mid-recreate: the container that now holds the name, when it is not
    /// the one the request named, is the replacement the earlier attempt made.
    pub async fn finish_recreate(
        &self,
        old_id: &str,
        replacement: &Target,
    ) -> Result<String, ActError> {
        self.start(&replacement.managed.id).await?;
        if self.exists(old_id).await?.is_some() {
            self.remove(old_id).await?;
        }
        Ok(format!(
            "already recreated as {} by an earlier attempt",
            short(&replacement.managed.id)
        ))
    }

    /// Rolls back to the newest earlier image of `immune.image_history`.
    pub async fn rollback(&self, old: &Target, stop_grace_s: u32) -> Result<String, ActError> {
        let labels = old.labels();
        let (image, rest) =
            plan::rollback_target(labels.get(labels::IMAGE_HISTORY).map(String::as_str))
                .map_err(ActError::Refused)?;
        let current = old
            .inspect
            .config
            .as_ref()
            .and_then(|c| c.image.clone())
            .unwrap_or_default();
        let done = self
            .recreate(old, stop_grace_s, Some((&image, rest.as_deref())))
            .await?;
        Ok(format!("rolled back from {current} to {image}; {done}"))
    }

    /// One more replica of the target: same config, labels (plus `immune.replica_of`),
    /// networks and aliases, so it answers to the same service name.
    pub async fn scale_out(&self, target: &Target, action_id: &str) -> Result<String, ActError> {
        let labels_now = target.labels();
        let original = labels_now
            .get(labels::REPLICA_OF)
            .cloned()
            .unwrap_or_else(|| target.managed.name.clone());
        let name = plan::replica_name(&original, action_id);
        if let Some(existing) = self.exists(&name).await? {
            self.start(&existing.managed.id).await?;
            return Ok(format!(
                "replica {name} already created by an earlier attempt"
            ));
        }
        let mut body = create_body(&target.inspect, true);
        let mut labels = labels_now;
        labels.insert(labels::REPLICA_OF.to_string(), original);
        body.labels = Some(labels);
        let id = self
            .create(&name, body, &target.networks(), &target.managed.name, true)
            .await?;
        self.start(&id).await?;
        Ok(format!("replica {name} started"))
    }

    /// Every container of `service` in `project` (running or not), for scale in.
    pub async fn instances(
        &self,
        service: &ServiceName,
        project: Option<&str>,
    ) -> Result<Vec<Instance>, ActError> {
        let mut filters = vec![
            format!("{}=true", labels::ENABLE),
            format!("{}={service}", labels::SERVICE),
        ];
        if let Some(p) = project {
            filters.push(format!("{}={p}", labels::PROJECT));
        }
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(HashMap::from([("label".to_string(), filters)])),
                ..Default::default()
            }))
            .await
            .map_err(|e| failed("list the service's containers", e))?;
        Ok(list
            .into_iter()
            .map(|s| Instance {
                id: s.id.clone().unwrap_or_default(),
                name: s
                    .names
                    .and_then(|n| n.into_iter().next())
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_string(),
                replica: s
                    .labels
                    .as_ref()
                    .is_some_and(|l| l.contains_key(labels::REPLICA_OF)),
                running: s.state.map(|st| st.as_ref() == "running").unwrap_or(false),
                // Seconds since the epoch, zero-padded so that text order is time order.
                created: format!("{:020}", s.created.unwrap_or_default()),
            })
            .collect())
    }

    /// Stops and removes one replica chosen by [`plan::scale_in_victim`].
    pub async fn scale_in(&self, victim: &Instance, stop_grace_s: u32) -> Result<String, ActError> {
        if self.exists(&victim.id).await?.is_none() {
            return Ok(format!(
                "replica {} already removed by an earlier attempt",
                victim.name
            ));
        }
        self.stop(&victim.id, stop_grace_s).await?;
        self.remove(&victim.id).await?;
        Ok(format!("replica {} removed", victim.name))
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

    /// Creates `name` on the first of `networks` (the engine takes one at creation), then
    /// connects it to the others, with the same aliases.
    async fn create(
        &self,
        name: &str,
        mut body: ContainerCreateBody,
        networks: &HashMap<String, EndpointSettings>,
        old_name: &str,
        replica: bool,
    ) -> Result<String, ActError> {
        let mut names: Vec<&String> = networks.keys().collect();
        names.sort();
        let mode = body
            .host_config
            .as_ref()
            .and_then(|h| h.network_mode.clone());
        // The network the container was created on goes first.
        if let Some(i) = names
            .iter()
            .position(|n| Some(n.as_str()) == mode.as_deref())
        {
            let primary = names.remove(i);
            names.insert(0, primary);
        }
        let endpoint = |n: &String| endpoint_for(n, &networks[n], old_name, replica);
        if let Some(first) = names.first() {
            body.networking_config = Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([((*first).clone(), endpoint(first))])),
            });
        }
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.to_string()),
                    ..Default::default()
                }),
                body,
            )
            .await
            .map_err(|e| failed(&format!("create {name}"), e))?;
        for n in names.iter().skip(1) {
            if let Err(e) = self
                .docker
                .connect_network(
                    n,
                    NetworkConnectRequest {
                        container: Some(created.id.clone()),
                        endpoint_config: Some(endpoint(n)),
                    },
                )
                .await
            {
                let _ = self.remove(&created.id).await;
                return Err(failed(&format!("connect {name} to {n}"), e));
            }
        }
        Ok(created.id)
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// The endpoint settings a new container gets on `network`: the aliases the old one had,
/// less the ones Docker derives from the old container itself (its short id; its name, for a
/// replica). The default bridge takes no aliases.
fn endpoint_for(
    network: &str,
    old: &EndpointSettings,
    old_name: &str,
    replica: bool,
) -> EndpointSettings {
    let aliases: Vec<String> = old
        .aliases
        .iter()
        .flatten()
        .filter(|a| a.len() != 12 || !a.chars().all(|c| c.is_ascii_hexdigit()))
        .filter(|a| !(replica && a.as_str() == old_name))
        .cloned()
        .collect();
    EndpointSettings {
        aliases: (network != "bridge" && !aliases.is_empty()).then_some(aliases),
        ..Default::default()
    }
}

/// The create request of a container copied from `inspect`: same config and host config,
/// but not the old hostname (Docker's default is the container's own id); a replica does
/// not take the host ports of the original either.
pub fn create_body(inspect: &ContainerInspectResponse, replica: bool) -> ContainerCreateBody {
    let config = inspect.config.clone().unwrap_or_default();
    let id = inspect.id.as_deref().unwrap_or_default();
    let hostname = config
        .hostname
        .filter(|h| !h.is_empty() && !id.starts_with(h.as_str()));
    let mut host_config = inspect.host_config.clone().unwrap_or_default();
    if replica {
        host_config.port_bindings = None;
        host_config.publish_all_ports = None;
    }
    ContainerCreateBody {
        hostname: if replica { None } else { hostname },
        domainname: config.domainname,
        user: config.user,
        attach_stdin: config.attach_stdin,
        attach_stdout: config.attach_stdout,
        attach_stderr: config.attach_stderr,
        exposed_ports: config.exposed_ports,
        tty: config.tty,
        open_stdin: config.open_stdin,
        stdin_once: config.stdin_once,
        env: config.env,
        cmd: config.cmd,
        healthcheck: config.healthcheck,
        args_escaped: config.args_escaped,
        image: config.image,
        volumes: config.volumes,
        working_dir: config.working_dir,
        entrypoint: config.entrypoint,
        network_disabled: config.network_disabled,
        mac_address: None,
        on_build: config.on_build,
        labels: config.labels,
        stop_signal: config.stop_signal,
        stop_timeout: config.stop_timeout,
        shell: config.shell,
        host_config: Some(host_config),
        networking_config: None,
    }
}

#[cfg(test)]
mod tests {
    use bollard::models::{ContainerConfig, HostConfig, PortBinding};

    use super::*;

    fn inspect() -> ContainerInspectResponse {
        ContainerInspectResponse {
            id: Some("0123456789abcdef0123".into()),
            config: Some(ContainerConfig {
                hostname: Some("0123456789ab".into()),
                image: Some("immune-demo:dev".into()),
                env: Some(vec!["SERVICE_NAME=orders".into()]),
                labels: Some(HashMap::from([("immune.enable".into(), "true".into())])),
                ..Default::default()
            }),
            host_config: Some(HostConfig {
                port_bindings: Some(HashMap::from([(
                    "8080/tcp".into(),
                    Some(vec![PortBinding {
                        host_ip: None,
                        host_port: Some("18080".into()),
                    }]),
                )])),
                memory: Some(64 << 20),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_copy_keeps_the_config_but_not_the_old_identity() {
        let body = create_body(&inspect(), false);
        assert_eq!(body.image.as_deref(), Some("immune-demo:dev"));
        assert_eq!(body.hostname, None, "the old id as hostname is dropped");
        assert_eq!(body.env, Some(vec!["SERVICE_NAME=orders".to_string()]));
        let host = body.host_config.expect("host config");
        assert_eq!(host.memory, Some(64 << 20));
        assert!(
            host.port_bindings.is_some(),
            "a recreated container keeps its ports"
        );
        let replica = create_body(&inspect(), true);
        assert!(
            replica
                .host_config
                .expect("host config")
                .port_bindings
                .is_none(),
            "a replica cannot take the original's host ports"
        );
    }

    #[test]
    fn aliases_are_kept_except_the_ones_of_the_old_container() {
        let old = EndpointSettings {
            aliases: Some(vec![
                "orders".into(),
                "orders-1".into(),
                "0123456789ab".into(),
            ]),
            ..Default::default()
        };
        let c = "orders-1";
        assert_eq!(
            endpoint_for("shop", &old, c, false).aliases,
            Some(vec!["orders".to_string(), "orders-1".to_string()])
        );
        assert_eq!(
            endpoint_for("shop", &old, c, true).aliases,
            Some(vec!["orders".to_string()])
        );
        assert_eq!(endpoint_for("bridge", &old, c, true).aliases, None);
    }
}
