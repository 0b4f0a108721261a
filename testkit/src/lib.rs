//! Test support shared by every integration test: the real things, started on demand and
//! cleaned up on drop.
//!
//! - [`NatsServer`]: a real `nats-server -js` on a free loopback port with a temporary store.
//! - [`DemoContainer`]: the demo service as a labelled container on the real Docker engine.
//! - [`within`]: every wait is bounded, and says what probably broke when it times out.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkingConfig, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{CreateContainerOptions, InspectContainerOptions};
use bollard::Docker;

/// The image `scripts/images.sh` builds from `demo/`.
pub const DEMO_IMAGE: &str = "immune-demo:dev";

/// Awaits `future`, or panics after `limit` naming what was awaited and the likely cause.
pub async fn within<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, future).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// A name no other test (or earlier run) uses: `<prefix>-<pid>-<n>`.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A real nats-server with JetStream, killed (and its store removed) on drop.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: tempfile::TempDir,
}

impl NatsServer {
    /// Starts `nats-server -js` (2.10 or newer must be on PATH: `scripts/setup.sh`).
    pub async fn start() -> NatsServer {
        let store = tempfile::tempdir().expect("temporary JetStream store");
        let mut server = NatsServer {
            child: None,
            port: free_port(),
            store,
        };
        server.spawn().await;
        server
    }

    async fn spawn(&mut self) {
        let child = Command::new("nats-server")
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server on PATH (run scripts/setup.sh: it installs nats-server >= 2.10)");
        self.child = Some(child);
        within(
            Duration::from_secs(10),
            "nats-server to accept connections",
            async {
                loop {
                    if async_nats::connect(self.url()).await.is_ok() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        )
        .await;
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(self.url())
            .await
            .expect("connect to test nats-server")
    }

    /// Stops the server (SIGKILL) and starts it again on the same port and store.
    pub async fn restart(&mut self, down_for: Duration) {
        self.stop();
        tokio::time::sleep(down_for).await;
        self.spawn().await;
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How to start a demo container.
#[derive(Debug, Clone)]
pub struct DemoSpec {
    pub service: String,
    pub project: String,
    pub chaos: bool,
    pub extra_labels: Vec<(String, String)>,
    pub env: Vec<String>,
    /// The image to run ([`DEMO_IMAGE`] unless a test tags another).
    pub image: String,
    /// A user-defined network to start on (created by the test), with network aliases.
    pub network: Option<(String, Vec<String>)>,
}

impl DemoSpec {
    /// A managed, chaos-enabled demo service of `project`.
    pub fn new(service: &str, project: &str) -> Self {
        Self {
            service: service.to_string(),
            project: project.to_string(),
            chaos: true,
            extra_labels: Vec::new(),
            env: Vec::new(),
            image: DEMO_IMAGE.to_string(),
            network: None,
        }
    }

    pub fn labels(&self) -> HashMap<String, String> {
        let mut labels: HashMap<String, String> = [
            ("immune.enable", "true"),
            ("immune.service", self.service.as_str()),
            ("immune.metrics", "8080/metrics"),
            ("immune.health", "8080/health"),
            ("immune.admin", "8080/admin"),
            ("immune.project", self.project.as_str()),
            ("immune.chaos", if self.chaos { "true" } else { "false" }),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        labels.extend(self.extra_labels.iter().cloned());
        labels
    }
}

/// A demo service container, force-removed on drop.
#[derive(Debug)]
pub struct DemoContainer {
    pub docker: Docker,
    pub id: String,
    pub name: String,
    pub spec: DemoSpec,
}

impl DemoContainer {
    pub async fn start(spec: DemoSpec) -> DemoContainer {
        let docker =
            Docker::connect_with_local_defaults().expect("Docker engine (run scripts/setup.sh)");
        docker.inspect_image(&spec.image).await.unwrap_or_else(|e| {
            panic!(
                "image {} missing ({e}): run scripts/images.sh debug",
                spec.image
            )
        });
        let name = unique(&spec.service);
        let mut env = vec![
            format!("SERVICE_NAME={}", spec.service),
            "PORT=8080".to_string(),
        ];
        env.extend(spec.env.iter().cloned());
        let networking_config = spec
            .network
            .as_ref()
            .map(|(network, aliases)| NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    network.clone(),
                    EndpointSettings {
                        aliases: Some(aliases.clone()),
                        ..Default::default()
                    },
                )])),
            });
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            networking_config,
            env: Some(env),
            labels: Some(spec.labels()),
            host_config: Some(HostConfig {
                // immune heals it, not Docker.
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::NO),
                    maximum_retry_count: None,
                }),
                network_mode: spec.network.as_ref().map(|(n, _)| n.clone()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.clone()),
                    ..Default::default()
                }),
                body,
            )
            .await
            .expect("create demo container");
        let container = DemoContainer {
            docker,
            id: created.id,
            name,
            spec,
        };
        container
            .docker
            .start_container(
                &container.id,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
            .expect("start demo container");
        within(
            Duration::from_secs(20),
            "the demo container to answer /health",
            async {
                while !container.healthy().await {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        )
        .await;
        container
    }

    async fn inspect(&self) -> bollard::models::ContainerInspectResponse {
        self.docker
            .inspect_container(&self.id, None::<InspectContainerOptions>)
            .await
            .expect("inspect demo container")
    }

    /// The container's address on the bridge network (reachable from this host).
    pub async fn address(&self) -> Option<IpAddr> {
        self.inspect()
            .await
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|n| n.into_values().find_map(|e| e.ip_address?.parse().ok()))
    }

    /// When the current process of the container started: changes on every (re)start.
    pub async fn started_at(&self) -> String {
        self.inspect()
            .await
            .state
            .and_then(|s| s.started_at)
            .unwrap_or_default()
    }

    pub async fn running(&self) -> bool {
        self.inspect()
            .await
            .state
            .and_then(|s| s.running)
            .unwrap_or(false)
    }

    /// `GET /health` answered 200 within half a second.
    pub async fn healthy(&self) -> bool {
        let Some(ip) = self.address().await else {
            return false;
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(500))
            .build()
            .expect("http client");
        client
            .get(format!("http://{ip}:8080/health"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }
}

impl Drop for DemoContainer {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
