//! Shared by the executor's integration tests: a real nats-server, executors run in-process
//! (or as the real binary), demo containers on the real engine, and requests sent the way
//! the decider sends them.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use immune_nats::{decode, ActionKind, ActionRequest, ActionResult, Event, ServiceName, Stage};
use immune_runtime::{Bus, BusConfig, Telemetry};
use immune_testkit::{client_bus, unique, within, DemoContainer, NatsServer, RunningStage};

/// One executor running as a task of the test, stopped on [`RunningStage::stop`].
pub fn start_executor(config: immune_executor::Config) -> RunningStage<Telemetry> {
    RunningStage::start(
        "the executor",
        Telemetry::new(Stage::Executor),
        |telemetry, shutdown| immune_executor::run(config, telemetry, shutdown),
    )
}

/// A test's world: NATS, a project of its own, a client bus.
#[derive(Debug)]
pub struct World {
    pub nats: NatsServer,
    pub project: String,
    pub bus: Bus,
}

impl World {
    pub async fn new() -> World {
        let nats = NatsServer::start().await;
        let bus = client_bus(&nats.url()).await;
        World {
            nats,
            project: unique("exec"),
            bus,
        }
    }

    pub fn config(&self) -> immune_executor::Config {
        immune_executor::Config {
            nats: BusConfig {
                url: self.nats.url(),
                ..Default::default()
            },
            project: Some(self.project.clone()),
            ..Default::default()
        }
    }

    /// Publishes `request` and waits for its result.
    pub async fn send(&self, request: &ActionRequest) -> ActionResult {
        let mut results = self.results(&request.service).await;
        self.publish(request).await;
        next_result(&mut results, &request.action_id, Duration::from_secs(60)).await
    }

    pub async fn publish(&self, request: &ActionRequest) {
        self.bus
            .publish(None, Event::ActionRequest(request.clone()))
            .await
            .expect("publish the action request");
    }

    /// A core subscription to the results of `service` (subscribe before publishing).
    pub async fn results(&self, service: &ServiceName) -> async_nats::Subscriber {
        self.bus
            .client()
            .subscribe(format!("immune.results.{service}"))
            .await
            .expect("subscribe to results")
    }
}

/// The next result for `action_id` on `results`.
pub async fn next_result(
    results: &mut async_nats::Subscriber,
    action_id: &str,
    limit: Duration,
) -> ActionResult {
    within(
        limit,
        &format!("the result of action {action_id} (is the executor consuming?)"),
        async {
            loop {
                let m = results.next().await.expect("results subscription open");
                if let Ok(env) = decode(&m.payload) {
                    if let Event::ActionResult(r) = env.body {
                        if r.action_id == action_id {
                            return r;
                        }
                    }
                }
            }
        },
    )
    .await
}

/// A request for `action` on `demo`, as the decider would send it.
pub fn request(demo: &DemoContainer, action: ActionKind, params: &[(&str, &str)]) -> ActionRequest {
    ActionRequest {
        action_id: unique("action"),
        incident_id: unique("incident"),
        service: ServiceName::new(demo.spec.service.clone()).expect("service name"),
        instance: demo.name.clone(),
        container_id: demo.id.clone(),
        action,
        params: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        timeout_ms: 30_000,
        reason: "test".into(),
    }
}

/// Removes, on drop, every container of the project (replicas and replacements included)
/// and the networks and image tags the test made.
#[derive(Debug, Default)]
pub struct Cleanup {
    pub project: String,
    pub networks: Vec<String>,
    pub images: Vec<String>,
}

impl Cleanup {
    pub fn project(project: &str) -> Cleanup {
        Cleanup {
            project: project.to_string(),
            networks: Vec::new(),
            images: Vec::new(),
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let ids = Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=immune.project={}", self.project),
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        for id in ids.split_whitespace() {
            quiet(&["rm", "-f", id]);
        }
        for n in &self.networks {
            quiet(&["network", "rm", n]);
        }
        for i in &self.images {
            quiet(&["rmi", i]);
        }
    }
}

pub fn quiet(args: &[&str]) -> bool {
    Command::new("docker")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub async fn inspect(
    docker: &bollard::Docker,
    container: &str,
) -> bollard::models::ContainerInspectResponse {
    docker
        .inspect_container(
            container,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .unwrap_or_else(|e| panic!("inspect {container}: {e}"))
}

pub async fn started_at(docker: &bollard::Docker, container: &str) -> String {
    inspect(docker, container)
        .await
        .state
        .and_then(|s| s.started_at)
        .unwrap_or_default()
}

/// GET `url` from this host (the bridge network is reachable from it).
pub async fn get(url: &str) -> (u16, String) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .expect("http client");
    let r = client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

/// How many times Docker started `container` between two Unix times (seconds): one per
/// restart or start, whatever asked for it.
pub async fn starts_between(
    docker: &bollard::Docker,
    container: &str,
    since: i64,
    until: i64,
) -> usize {
    use bollard::query_parameters::EventsOptions;
    let options = EventsOptions {
        since: Some(since.to_string()),
        until: Some(until.to_string()),
        filters: Some(std::collections::HashMap::from([
            ("container".to_string(), vec![container.to_string()]),
            ("event".to_string(), vec!["start".to_string()]),
        ])),
    };
    within(
        Duration::from_secs(20),
        "Docker's event history to be read",
        docker
            .events(Some(options))
            .filter(|e| std::future::ready(e.is_ok()))
            .count(),
    )
    .await
}

/// A Unix second after every event so far (Docker filters events by whole seconds).
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

/// Every result for `action_ids`, in any order.
pub async fn results_for(
    results: &mut async_nats::Subscriber,
    action_ids: &[String],
    limit: Duration,
) -> std::collections::HashMap<String, ActionResult> {
    let mut found = std::collections::HashMap::new();
    within(
        limit,
        "a result for every request (is each executor consuming?)",
        async {
            while found.len() < action_ids.len() {
                let m = results.next().await.expect("results subscription open");
                if let Ok(env) = decode(&m.payload) {
                    if let Event::ActionResult(r) = env.body {
                        if action_ids.contains(&r.action_id) {
                            found.insert(r.action_id.clone(), r);
                        }
                    }
                }
            }
        },
    )
    .await;
    found
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The results for `action_id` stored in the pipeline stream (a republished duplicate is
/// dropped by JetStream, so this is what every consumer of results sees).
pub async fn stored_results(bus: &Bus, service: &ServiceName, action_id: &str) -> usize {
    use async_nats::jetstream::consumer::pull;
    let stream = bus
        .jetstream()
        .get_stream(immune_nats::streams::PIPELINE.name)
        .await
        .expect("pipeline stream");
    let consumer = stream
        .create_consumer(pull::Config {
            filter_subject: format!("immune.results.{service}"),
            deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::All,
            ack_policy: async_nats::jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .expect("ephemeral consumer over results");
    let mut batch = consumer
        .fetch()
        .max_messages(1000)
        .expires(Duration::from_millis(500))
        .messages()
        .await
        .expect("fetch results");
    let mut n = 0;
    while let Some(Ok(m)) = batch.next().await {
        if let Ok(env) = decode(&m.payload) {
            if let Event::ActionResult(r) = env.body {
                if r.action_id == action_id {
                    n += 1;
                }
            }
        }
    }
    n
}
