//! Test support shared by every integration test: the real things, started on demand and
//! cleaned up on drop.
//!
//! - [`NatsServer`]: a real `nats-server -js` on a free loopback port with a temporary store;
//!   [`NatsServer::start_secured`] runs the shipped `nats/nats-server.conf` (users and
//!   per-stage permissions) with fresh passwords.
//! - [`DemoContainer`]: the demo service as a labelled container on the real Docker engine.
//! - [`within`]: every wait is bounded, and says what probably broke when it times out.
//! - [`StageProcess`]: a stage binary as a real child process, SIGKILLed and started again.
//! - [`DockerProxy`]: a cuttable Unix-socket proxy in front of the Docker engine.
//! - [`RunningStage`]: a stage's `run` started in-process with a shutdown the test holds,
//!   waited on until ready, stopped (and checked to stop in time) or stopped on drop.
//! - [`client_bus`]: the bus a test talks through, connected under a timeout.
//! - [`synthetic`]: scrape targets on loopback that serve a chosen exposition or misbehave.
//! - [`Noise`]: one seeded noise source for fixtures and benchmarks.

pub mod bus;
pub mod docker_proxy;
pub mod noise;
pub mod process;
pub mod stage;
pub mod synthetic;

pub use bus::{client_bus, client_bus_as};
pub use docker_proxy::DockerProxy;
pub use noise::Noise;
pub use process::{stage_binary, StageProcess};
pub use stage::RunningStage;

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, TcpListener};
use std::path::PathBuf;
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

/// The Unix second now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Waits into the next Unix second and returns it: a `since` after every Docker event so far
/// (Docker filters its event history by whole seconds).
pub async fn fresh_since() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    tokio::time::sleep(Duration::from_millis(
        1_000 - u64::from(now.subsec_millis()) + 20,
    ))
    .await;
    unix_now()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The users of the shipped `nats/nats-server.conf`: one per stage, the console, the CLI.
pub const NATS_USERS: [&str; 7] = [
    "collector",
    "detector",
    "decider",
    "executor",
    "chaos",
    "console",
    "operator",
];

/// The shipped NATS server config (`nats/nats-server.conf`).
pub fn shipped_nats_conf() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../nats/nats-server.conf")
}

/// The environment variable the shipped config reads `user`'s password from.
pub fn nats_password_var(user: &str) -> String {
    format!("IMMUNE_{}_NATS_PASSWORD", user.to_uppercase())
}

/// A real nats-server with JetStream, killed (and its store removed) on drop.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: tempfile::TempDir,
    /// With the shipped config: each user's password (fresh for this server).
    secured: Option<HashMap<String, String>>,
}

impl NatsServer {
    /// Starts `nats-server -js` (2.10 or newer must be on PATH: `scripts/setup.sh`).
    pub async fn start() -> NatsServer {
        let store = tempfile::tempdir().expect("temporary JetStream store");
        let mut server = NatsServer {
            child: None,
            port: free_port(),
            store,
            secured: None,
        };
        server.spawn().await;
        server
    }

    /// Starts nats-server with the SHIPPED `nats/nats-server.conf` (authentication and
    /// per-stage permissions, JetStream), its port, listen address, monitoring port and
    /// store dir overridden on the command line, and a fresh password for every user of
    /// [`NATS_USERS`] in the environment the config reads them from. Set
    /// `IMMUNE_TEST_NATS_LOG=FILE` to keep the server's log (its permission violations).
    pub async fn start_secured() -> NatsServer {
        let store = tempfile::tempdir().expect("temporary JetStream store");
        let salt = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let passwords = NATS_USERS
            .iter()
            .map(|user| {
                (
                    user.to_string(),
                    format!("{user}{salt:x}{}", std::process::id()),
                )
            })
            .collect();
        let mut server = NatsServer {
            child: None,
            port: free_port(),
            store,
            secured: Some(passwords),
        };
        server.spawn().await;
        server
    }

    /// The password of `user` on a server started with [`NatsServer::start_secured`].
    pub fn password(&self, user: &str) -> String {
        self.secured
            .as_ref()
            .and_then(|p| p.get(user))
            .unwrap_or_else(|| panic!("no NATS user {user:?} on this server (start_secured?)"))
            .clone()
    }

    async fn spawn(&mut self) {
        let mut command = Command::new("nats-server");
        match &self.secured {
            None => {
                command.arg("-js");
            }
            Some(passwords) => {
                command.arg("-c").arg(shipped_nats_conf());
                command.args(["-m", &free_port().to_string()]);
                for (user, password) in passwords {
                    command.env(nats_password_var(user), password);
                }
            }
        }
        command
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(self.store.path())
            .stdout(Stdio::null());
        match std::env::var_os("IMMUNE_TEST_NATS_LOG").and_then(|path| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .ok()
        }) {
            Some(log) => command.stderr(log),
            None => command.stderr(Stdio::null()),
        };
        let child = command
            .spawn()
            .expect("nats-server on PATH (run scripts/setup.sh: it installs nats-server >= 2.10)");
        self.child = Some(child);
        within(
            Duration::from_secs(10),
            "nats-server to accept connections",
            async {
                loop {
                    if self.try_client().await.is_ok() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        )
        .await;
    }

    /// A plain client: as `operator` on a secured server.
    async fn try_client(&self) -> Result<async_nats::Client, async_nats::ConnectError> {
        match &self.secured {
            None => async_nats::connect(self.url()).await,
            Some(_) => {
                async_nats::ConnectOptions::with_user_and_password(
                    "operator".into(),
                    self.password("operator"),
                )
                .connect(self.url())
                .await
            }
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// A plain NATS client (as `operator` on a server started with the shipped config).
    pub async fn client(&self) -> async_nats::Client {
        self.try_client()
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

    /// How many times Docker started the container from Unix second `since` to now (its
    /// event history: `start` events), however briefly each run lasted.
    pub async fn starts_since(&self, since: i64) -> usize {
        use bollard::query_parameters::EventsOptions;
        use futures::StreamExt;
        let options = EventsOptions {
            since: Some(since.to_string()),
            until: Some((unix_now() + 1).to_string()),
            filters: Some(HashMap::from([
                ("container".to_string(), vec![self.id.clone()]),
                ("event".to_string(), vec!["start".to_string()]),
            ])),
        };
        within(
            Duration::from_secs(20),
            "Docker's event history to be read",
            self.docker
                .events(Some(options))
                .filter(|e| std::future::ready(e.is_ok()))
                .count(),
        )
        .await
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
