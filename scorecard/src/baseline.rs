//! The usual alternatives, measured on the same demo image in the same run: Docker's own
//! restart policy (`--restart always`) against a crash, and a Docker HEALTHCHECK at the
//! common defaults (interval 30 s, timeout 30 s, retries 3) plus a poll-and-restart loop
//! like the well-known "autoheal" container (inspect health every 5 s, restart unhealthy
//! containers with a 10 s stop timeout) against a hang. These containers carry no
//! `immune.enable` label: immune never sees them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::models::{
    ContainerCreateBody, HealthConfig, HealthStatusEnum, HostConfig, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, ListContainersOptions, RemoveContainerOptions,
    RestartContainerOptions, StartContainerOptions,
};
use bollard::Docker;
use serde::{Deserialize, Serialize};

use crate::{now_ms, ScorecardError};

const DEMO_IMAGE: &str = "immune-demo:dev";
/// Marks the containers the autoheal loop watches.
const AUTOHEAL_LABEL: &str = "immune.scorecard.autoheal";
/// The probe the HEALTHCHECK runs inside the container: the image has bash but no curl.
const PROBE: &str = "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /health HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && read -r line <&3 && case \"$line\" in *' 200'*) exit 0;; *) exit 1;; esac";
const SECOND_NS: i64 = 1_000_000_000;

/// What one alternative did over its injections (milliseconds after each injection).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BaselineRun {
    pub name: String,
    pub fault: String,
    /// Injection to the restart being issued, where the alternative issues one itself.
    pub restart_issued_ms: Vec<f64>,
    pub healed_ms: Vec<f64>,
    /// Injections that did not heal within the limit, with why.
    pub failures: Vec<String>,
}

/// A demo container outside immune, removed on [`Baseline::remove`].
#[derive(Debug)]
struct Baseline {
    docker: Docker,
    id: String,
}

impl Baseline {
    async fn start(
        docker: &Docker,
        name: &str,
        restart: RestartPolicyNameEnum,
        healthcheck: Option<HealthConfig>,
    ) -> Result<Baseline, ScorecardError> {
        let fail = |e: bollard::errors::Error| ScorecardError::Docker(format!("{name}: {e}"));
        // A leftover of an interrupted run goes first.
        let _ = docker
            .remove_container(
                name,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await;
        let body = ContainerCreateBody {
            image: Some(DEMO_IMAGE.to_string()),
            env: Some(vec![
                format!("SERVICE_NAME={name}"),
                "PORT=8080".to_string(),
                "UPSTREAMS=".to_string(),
            ]),
            labels: Some(HashMap::from([(
                AUTOHEAL_LABEL.to_string(),
                healthcheck.is_some().to_string(),
            )])),
            healthcheck,
            host_config: Some(HostConfig {
                restart_policy: Some(RestartPolicy {
                    name: Some(restart),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.to_string()),
                    ..Default::default()
                }),
                body,
            )
            .await
            .map_err(fail)?;
        docker
            .start_container(&created.id, None::<StartContainerOptions>)
            .await
            .map_err(fail)?;
        Ok(Baseline {
            docker: docker.clone(),
            id: created.id,
        })
    }

    async fn address(&self) -> Option<IpAddr> {
        self.docker
            .inspect_container(&self.id, None::<InspectContainerOptions>)
            .await
            .ok()?
            .network_settings?
            .networks?
            .into_values()
            .find_map(|e| e.ip_address.filter(|a| !a.is_empty())?.parse().ok())
    }

    async fn docker_health(&self) -> Option<HealthStatusEnum> {
        self.docker
            .inspect_container(&self.id, None::<InspectContainerOptions>)
            .await
            .ok()?
            .state?
            .health?
            .status
    }

    async fn healthy(&self, http: &reqwest::Client) -> bool {
        let Some(ip) = self.address().await else {
            return false;
        };
        http.get(format!("http://{ip}:8080/health"))
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    async fn fault(&self, http: &reqwest::Client, mode: &str) -> Result<(), ScorecardError> {
        let ip = self
            .address()
            .await
            .ok_or_else(|| ScorecardError::Docker("baseline container has no address".into()))?;
        // A crash may end the process before it answers: only a refused connection is an error.
        match http
            .post(format!("http://{ip}:8080/fault"))
            .json(&serde_json::json!({ "mode": mode }))
            .timeout(Duration::from_secs(2))
            .send()
            .await
        {
            Err(e) if e.is_connect() => Err(ScorecardError::Http(format!("fault {mode}: {e}"))),
            _ => Ok(()),
        }
    }

    /// Waits until `/health` fails once and then answers again; the time it answered.
    async fn down_then_up(&self, http: &reqwest::Client, limit: Duration) -> Option<u64> {
        let deadline = Instant::now() + limit;
        let mut went_down = false;
        while Instant::now() < deadline {
            let ok = self.healthy(http).await;
            if !ok {
                went_down = true;
            } else if went_down {
                // When it answered: a probe sent while the container was gone may be held
                // until it is back.
                return Some(now_ms());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    async fn remove(self) {
        let _ = self
            .docker
            .remove_container(
                &self.id,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await;
    }
}

async fn until<F: std::future::Future<Output = bool>>(
    limit: Duration,
    mut check: impl FnMut() -> F,
) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// `--restart always` against `runs` crashes: injection to `/health` 200 again.
pub async fn restart_policy(
    docker: &Docker,
    prefix: &str,
    runs: usize,
) -> Result<BaselineRun, ScorecardError> {
    let http = reqwest::Client::new();
    let container = Baseline::start(
        docker,
        &format!("{prefix}-restart-always"),
        RestartPolicyNameEnum::ALWAYS,
        None,
    )
    .await?;
    let mut run = BaselineRun {
        name: "Docker restart policy (--restart always)".into(),
        fault: "crash".into(),
        ..Default::default()
    };
    if !until(Duration::from_secs(30), || container.healthy(&http)).await {
        container.remove().await;
        return Err(ScorecardError::Docker(
            "the restart-always baseline container never answered /health".into(),
        ));
    }
    for i in 0..runs {
        // Docker doubles its restart delay unless the container ran 10 s: start each fresh.
        tokio::time::sleep(Duration::from_secs(12)).await;
        let injected = now_ms();
        if let Err(e) = container.fault(&http, "crash").await {
            run.failures.push(format!("crash {i}: {e}"));
            continue;
        }
        match container.down_then_up(&http, Duration::from_secs(60)).await {
            Some(up) => run.healed_ms.push(up.saturating_sub(injected) as f64),
            None => run
                .failures
                .push(format!("crash {i}: not healthy again within 60 s")),
        }
    }
    container.remove().await;
    Ok(run)
}

/// The autoheal loop: every 5 s, restart each watched container Docker calls unhealthy.
/// Records when it issued each restart.
async fn autoheal(docker: Docker, restarts: Arc<Mutex<Vec<u64>>>) {
    loop {
        let options = ListContainersOptions {
            filters: Some(HashMap::from([
                ("label".to_string(), vec![format!("{AUTOHEAL_LABEL}=true")]),
                ("health".to_string(), vec!["unhealthy".to_string()]),
            ])),
            ..Default::default()
        };
        if let Ok(list) = docker.list_containers(Some(options)).await {
            for c in list {
                let Some(id) = c.id else { continue };
                restarts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(now_ms());
                let _ = docker
                    .restart_container(
                        &id,
                        Some(RestartContainerOptions {
                            t: Some(10),
                            signal: None,
                        }),
                    )
                    .await;
            }
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// HEALTHCHECK (30 s / 30 s / 3) plus autoheal against `runs` hangs.
pub async fn healthcheck_autoheal(
    docker: &Docker,
    prefix: &str,
    runs: usize,
) -> Result<BaselineRun, ScorecardError> {
    let http = reqwest::Client::new();
    let healthcheck = HealthConfig {
        test: Some(vec!["CMD".into(), "bash".into(), "-c".into(), PROBE.into()]),
        interval: Some(30 * SECOND_NS),
        timeout: Some(30 * SECOND_NS),
        retries: Some(3),
        start_period: None,
        start_interval: None,
    };
    let container = Baseline::start(
        docker,
        &format!("{prefix}-healthcheck-autoheal"),
        RestartPolicyNameEnum::NO,
        Some(healthcheck),
    )
    .await?;
    let restarts: Arc<Mutex<Vec<u64>>> = Arc::default();
    let loop_task = tokio::spawn(autoheal(docker.clone(), restarts.clone()));
    let mut run = BaselineRun {
        name: "HEALTHCHECK 30s/30s/3 + autoheal (5 s poll)".into(),
        fault: "hang".into(),
        ..Default::default()
    };
    for i in 0..runs {
        // Docker's first check runs one interval after the start.
        if !until(Duration::from_secs(120), || async {
            container.docker_health().await == Some(HealthStatusEnum::HEALTHY)
        })
        .await
        {
            run.failures.push(format!(
                "hang {i}: Docker never called the container healthy"
            ));
            break;
        }
        let injected = now_ms();
        if let Err(e) = container.fault(&http, "hang").await {
            run.failures.push(format!("hang {i}: {e}"));
            continue;
        }
        match container
            .down_then_up(&http, Duration::from_secs(400))
            .await
        {
            Some(up) => {
                run.healed_ms.push(up.saturating_sub(injected) as f64);
                let issued = restarts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .copied()
                    .find(|&t| t >= injected);
                if let Some(t) = issued {
                    run.restart_issued_ms.push((t - injected) as f64);
                }
            }
            None => run
                .failures
                .push(format!("hang {i}: not healthy again within 400 s")),
        }
    }
    loop_task.abort();
    container.remove().await;
    Ok(run)
}
