//! Managed containers: the `immune.*` labels a container opts in with, read from the Docker
//! API. The collector discovers with this, the executor and the chaos stage guard with it.

use std::collections::HashMap;
use std::net::IpAddr;

use bollard::query_parameters::ListContainersOptions;
use bollard::Docker;
use immune_nats::{ContainerState, ServiceName};

/// The labels of the opt-in contract.
pub mod labels {
    /// `true` to be managed at all.
    pub const ENABLE: &str = "immune.enable";
    /// The logical service (replicas share it).
    pub const SERVICE: &str = "immune.service";
    /// `<port>/<path>` of the Prometheus exposition.
    pub const METRICS: &str = "immune.metrics";
    /// `<port>/<path>` of the health check.
    pub const HEALTH: &str = "immune.health";
    /// `<port>/<path>` of the admin endpoint (throttle, circuit breaker, flags, faults).
    pub const ADMIN: &str = "immune.admin";
    /// Comma-separated services this one calls.
    pub const DEPENDS_ON: &str = "immune.depends_on";
    /// `true` to allow chaos experiments on it.
    pub const CHAOS: &str = "immune.chaos";
    /// The project it belongs to; stages act only within their configured project.
    pub const PROJECT: &str = "immune.project";
    /// Comma-separated earlier image references of the service, newest first; a rollback
    /// recreates the container from the first and keeps the rest.
    pub const IMAGE_HISTORY: &str = "immune.image_history";
    /// Set on replicas the executor created (scale out): the container they copy. Only these
    /// are removed by a scale in, so the original instance is never removed.
    pub const REPLICA_OF: &str = "immune.replica_of";
    /// `true` on a load generator (not a managed service): chaos's `overload` fault asks it
    /// for a spike.
    pub const LOADGEN: &str = "immune.loadgen";
    /// Comma-separated services a load generator's traffic drives (the entry point it
    /// calls, and the services behind it that the same requests reach).
    pub const LOADGEN_TARGET: &str = "immune.loadgen.target";
    /// The port of a load generator's control endpoint (`POST /load`), default 8089.
    pub const LOADGEN_CONTROL: &str = "immune.loadgen.control";
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("docker: {0}")]
    Docker(#[from] bollard::errors::Error),
    #[error("container {container}: label {label}={value:?} is invalid: {reason}")]
    BadLabel {
        container: String,
        label: &'static str,
        value: String,
        reason: String,
    },
    #[error("container {container} is not managed: {reason}")]
    NotManaged { container: String, reason: String },
}

impl TargetError {
    pub fn kind(&self) -> &'static str {
        match self {
            TargetError::Docker(_) => "docker",
            TargetError::BadLabel { .. } => "bad_label",
            TargetError::NotManaged { .. } => "not_managed",
        }
    }
}

/// `<port>/<path>` on the container's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub port: u16,
    pub path: String,
}

impl Endpoint {
    pub fn parse(value: &str) -> Result<Endpoint, String> {
        let (port, path) = value.split_once('/').unwrap_or((value, ""));
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("expected <port>/<path>, port {port:?} is not a number"))?;
        Ok(Endpoint {
            port,
            path: format!("/{path}"),
        })
    }

    pub fn url(&self, address: IpAddr) -> String {
        match address {
            IpAddr::V4(ip) => format!("http://{ip}:{}{}", self.port, self.path),
            IpAddr::V6(ip) => format!("http://[{ip}]:{}{}", self.port, self.path),
        }
    }
}

/// A container that opted in, as its labels describe it.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedContainer {
    pub id: String,
    pub name: String,
    pub service: ServiceName,
    pub state: ContainerState,
    /// The container's address on its (first, by network name) network.
    pub address: Option<IpAddr>,
    pub metrics: Option<Endpoint>,
    pub health: Option<Endpoint>,
    pub admin: Option<Endpoint>,
    pub chaos: bool,
    pub project: Option<String>,
    pub depends_on: Vec<ServiceName>,
}

impl ManagedContainer {
    /// Reads the labels; `Err(NotManaged)` when the container did not opt in.
    pub fn from_labels(
        id: &str,
        name: &str,
        labels: &HashMap<String, String>,
        state: ContainerState,
        address: Option<IpAddr>,
    ) -> Result<ManagedContainer, TargetError> {
        let container = name.to_string();
        if labels.get(labels::ENABLE).map(String::as_str) != Some("true") {
            return Err(TargetError::NotManaged {
                container,
                reason: format!("no {}=true label", labels::ENABLE),
            });
        }
        let bad = |label: &'static str, value: &str, reason: String| TargetError::BadLabel {
            container: name.to_string(),
            label,
            value: value.to_string(),
            reason,
        };
        let service_value = labels
            .get(labels::SERVICE)
            .ok_or_else(|| TargetError::NotManaged {
                container: name.to_string(),
                reason: format!("no {} label", labels::SERVICE),
            })?;
        let service = ServiceName::new(service_value.clone())
            .map_err(|e| bad(labels::SERVICE, service_value, e.to_string()))?;
        let endpoint = |label: &'static str| -> Result<Option<Endpoint>, TargetError> {
            labels
                .get(label)
                .map(|v| Endpoint::parse(v).map_err(|reason| bad(label, v, reason)))
                .transpose()
        };
        let depends_on = match labels.get(labels::DEPENDS_ON) {
            None => Vec::new(),
            Some(v) => v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| ServiceName::new(s).map_err(|e| bad(labels::DEPENDS_ON, v, e.to_string())))
                .collect::<Result<_, _>>()?,
        };
        Ok(ManagedContainer {
            id: id.to_string(),
            name: name.trim_start_matches('/').to_string(),
            service,
            state,
            address,
            metrics: endpoint(labels::METRICS)?,
            health: endpoint(labels::HEALTH)?,
            admin: endpoint(labels::ADMIN)?,
            chaos: labels.get(labels::CHAOS).map(String::as_str) == Some("true"),
            project: labels.get(labels::PROJECT).cloned(),
            depends_on,
        })
    }

    /// Whether a stage configured for `project` may touch this container.
    pub fn in_project(&self, project: Option<&str>) -> bool {
        match project {
            None => true,
            Some(p) => self.project.as_deref() == Some(p),
        }
    }
}

/// Connects to the local engine (`DOCKER_HOST` or the default socket).
pub fn connect() -> Result<Docker, TargetError> {
    Ok(Docker::connect_with_local_defaults()?)
}

/// Every managed container (running or not) of `project` (all projects when `None`).
/// Containers with invalid labels are returned as errors beside the good ones, so one
/// mislabelled container cannot hide the rest.
pub async fn list_managed(
    docker: &Docker,
    project: Option<&str>,
) -> Result<Vec<Result<ManagedContainer, TargetError>>, TargetError> {
    let mut label_filters = vec![format!("{}=true", labels::ENABLE)];
    if let Some(project) = project {
        label_filters.push(format!("{}={project}", labels::PROJECT));
    }
    let options = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([("label".to_string(), label_filters)])),
        ..Default::default()
    };
    let summaries = docker.list_containers(Some(options)).await?;
    Ok(summaries
        .into_iter()
        .map(|s| {
            let id = s.id.unwrap_or_default();
            let name = s
                .names
                .and_then(|n| n.into_iter().next())
                .unwrap_or_else(|| id.clone());
            let state = s
                .state
                .map(|st| ContainerState::from_docker(st.as_ref()))
                .unwrap_or(ContainerState::Unknown);
            let address = s
                .network_settings
                .and_then(|n| n.networks)
                .and_then(|networks| {
                    first_address(networks.into_iter().map(|(k, v)| (k, v.ip_address)))
                });
            ManagedContainer::from_labels(&id, &name, &s.labels.unwrap_or_default(), state, address)
        })
        .collect())
}

/// One managed container by id or name, freshly inspected.
pub async fn inspect_managed(
    docker: &Docker,
    container: &str,
) -> Result<ManagedContainer, TargetError> {
    let info = docker
        .inspect_container(
            container,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await?;
    let id = info.id.unwrap_or_default();
    let name = info.name.unwrap_or_else(|| id.clone());
    let state = info
        .state
        .and_then(|s| s.status)
        .map(|s| ContainerState::from_docker(s.as_ref()))
        .unwrap_or(ContainerState::Unknown);
    let address = info
        .network_settings
        .and_then(|n| n.networks)
        .and_then(|networks| first_address(networks.into_iter().map(|(k, v)| (k, v.ip_address))));
    let labels = info.config.and_then(|c| c.labels).unwrap_or_default();
    ManagedContainer::from_labels(&id, &name, &labels, state, address)
}

fn first_address(networks: impl Iterator<Item = (String, Option<String>)>) -> Option<IpAddr> {
    let mut addresses: Vec<(String, IpAddr)> = networks
        .filter_map(|(name, ip)| Some((name, ip?.parse().ok()?)))
        .collect();
    addresses.sort();
    addresses.into_iter().next().map(|(_, ip)| ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_the_opt_in_labels() {
        let l = labels(&[
            ("immune.enable", "true"),
            ("immune.service", "orders"),
            ("immune.metrics", "9100/metrics"),
            ("immune.health", "8080/health"),
            ("immune.depends_on", "payments, auth"),
            ("immune.chaos", "true"),
            ("immune.project", "shop"),
        ]);
        let c =
            ManagedContainer::from_labels("id1", "/orders-1", &l, ContainerState::Running, None)
                .expect("managed");
        assert_eq!(c.name, "orders-1");
        assert_eq!(
            c.metrics,
            Some(Endpoint {
                port: 9100,
                path: "/metrics".into()
            })
        );
        assert_eq!(c.depends_on.len(), 2);
        assert!(c.chaos && c.in_project(Some("shop")) && !c.in_project(Some("other")));
        assert_eq!(
            c.health
                .expect("health")
                .url("10.0.0.2".parse().expect("ip")),
            "http://10.0.0.2:8080/health"
        );
    }

    #[test]
    fn refuses_what_did_not_opt_in_or_is_mislabelled() {
        let err = ManagedContainer::from_labels(
            "i",
            "x",
            &labels(&[("immune.service", "a")]),
            ContainerState::Running,
            None,
        )
        .expect_err("no enable");
        assert_eq!(err.kind(), "not_managed");
        let err = ManagedContainer::from_labels(
            "i",
            "x",
            &labels(&[("immune.enable", "true"), ("immune.service", "a.b")]),
            ContainerState::Running,
            None,
        )
        .expect_err("dotted service");
        assert_eq!(err.kind(), "bad_label");
        let err = ManagedContainer::from_labels(
            "i",
            "x",
            &labels(&[
                ("immune.enable", "true"),
                ("immune.service", "a"),
                ("immune.metrics", "http/metrics"),
            ]),
            ContainerState::Running,
            None,
        )
        .expect_err("bad port");
        assert!(err.to_string().contains("immune.metrics"), "{err}");
    }
}
