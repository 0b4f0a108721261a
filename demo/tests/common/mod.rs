//! What the demo's integration tests share: reading a Prometheus exposition, the load
//! generator run in-process with a shutdown the test holds, and bounded HTTP calls.

#![allow(dead_code)]

use std::time::Duration;

use immune_demo::{LoadgenConfig, Profile};
use immune_testkit::within;

/// The value of the sample `name` (with its labels, as exposed) in `text`, 0 when absent.
pub fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            (key == name).then(|| value.parse().ok())?
        })
        .unwrap_or(0.0)
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("http client")
}

/// `GET url` and its body, under a timeout.
pub async fn get_text(url: &str) -> String {
    within(Duration::from_secs(10), &format!("GET {url}"), async {
        client()
            .get(url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .text()
            .await
            .unwrap_or_else(|e| panic!("GET {url} body: {e}"))
    })
    .await
}

/// A steady profile: `rps` a second, no cycle, no burst, no quiet period.
pub fn flat(rps: f64) -> Profile {
    Profile {
        base_rps: rps,
        cycle_amplitude: 0.0,
        burst_every_s: 0.0,
        quiet_every_s: 0.0,
        ..Profile::default()
    }
}

/// The load generator running in-process on a loopback control port.
pub struct Loadgen {
    pub control: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Loadgen {
    pub async fn start(target: &str, profile: Profile, max_in_flight: usize) -> Loadgen {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port for the control endpoint");
        let address = listener.local_addr().expect("its address");
        let config = LoadgenConfig {
            profile,
            listen: address,
            max_in_flight,
            timeout_ms: 2000,
        };
        config.validate().expect("a valid load generator config");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let url = target.parse().expect("a target URL");
        let task = tokio::spawn(immune_demo::loadgen::run(url, config, listener, async {
            let _ = stopped.await;
        }));
        Loadgen {
            control: format!("http://{address}"),
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn metrics(&self) -> String {
        get_text(&format!("{}/metrics", self.control)).await
    }

    /// Stops sending; returns once the requests in flight are done (or timed out).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            within(
                Duration::from_secs(10),
                "the load generator to stop (in-flight requests not bounded by their timeout?)",
                task,
            )
            .await
            .expect("the load generator task")
            .expect("the load generator");
        }
    }
}

impl Drop for Loadgen {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
