//! Load for the live tests, and the replicas a `scale_out` leaves behind.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};
use immune_testkit::DemoContainer;

/// Steady requests to a demo container, as a load generator would send them; bounded by
/// the test's own end.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    /// `rps` requests a second to `demo`'s `/`, each with a 2 s timeout.
    pub async fn start(demo: &DemoContainer, rps: u64) -> Load {
        let address = demo.address().await.expect("the demo container's address");
        let url = format!("http://{address}:8080/");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("http client");
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let (stop, served) = (stop.clone(), served.clone());
            async move {
                let mut tick = tokio::time::interval(Duration::from_millis(1000 / rps.max(1)));
                let deadline = Instant::now() + Duration::from_secs(600);
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                    tick.tick().await;
                    let (client, url, served) = (client.clone(), url.clone(), served.clone());
                    tokio::spawn(async move {
                        if client.get(&url).send().await.is_ok() {
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                }
            }
        });
        Load { stop, served, task }
    }

    /// Requests answered (any status).
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    pub async fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
    }
}

/// Replicas the executor made (scale out) carry the project's label but are no test's
/// container: remove them.
pub async fn remove_replicas(project: &str) {
    let docker = bollard::Docker::connect_with_local_defaults().expect("docker");
    let options = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([(
            "label".to_string(),
            vec![
                format!("immune.project={project}"),
                "immune.replica_of".to_string(),
            ],
        )])),
        ..Default::default()
    };
    for c in docker
        .list_containers(Some(options))
        .await
        .unwrap_or_default()
    {
        if let Some(id) = c.id {
            let _ = docker
                .remove_container(
                    &id,
                    Some(RemoveContainerOptions {
                        force: true,
                        ..Default::default()
                    }),
                )
                .await;
        }
    }
}
