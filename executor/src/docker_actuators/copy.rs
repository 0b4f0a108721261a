//! A new container copied from an old one, as recreate and scale out make it: the create
//! request from the old one's inspect ([`create_body`]), its network aliases
//! (`endpoint_for`), and creating it on every network the old one was on.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, EndpointSettings, NetworkConnectRequest,
    NetworkingConfig,
};
use bollard::query_parameters::CreateContainerOptions;

use super::{failed, DockerActuators};
use crate::ActError;

impl DockerActuators {
    /// Creates `name` on the first of `networks` (the engine takes one at creation), then
    /// connects it to the others, with the same aliases.
    pub(super) async fn create(
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

/// The endpoint settings a new container gets on `network`: the aliases the old one had,
/// less the ones Docker derives from the old container itself (its short id; its name, for a
/// replica). The default bridge takes no aliases.
pub(super) fn endpoint_for(
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
