//! The console under test: `immune_console::run_on` on a free loopback port against a test
//! nats-server, stopped (and checked to stop in time) by [`RunningConsole::stop`].

use std::net::SocketAddr;
use std::time::Duration;

use immune_console::{Config, ConsoleTelemetry};
use immune_runtime::shutdown::ShutdownTrigger;
use immune_runtime::{BusConfig, Shutdown};
use immune_testkit::within;
use tokio::task::JoinHandle;

#[derive(Debug)]
pub struct RunningConsole {
    pub addr: SocketAddr,
    pub telemetry: ConsoleTelemetry,
    trigger: Option<ShutdownTrigger>,
    task: Option<JoinHandle<Result<(), String>>>,
}

impl RunningConsole {
    pub async fn start(nats_url: &str) -> RunningConsole {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free loopback port for the console");
        let addr = listener.local_addr().expect("bound address");
        let config = Config {
            nats: BusConfig::at(nats_url),
            listen: addr,
            ..Config::default()
        };
        let telemetry = ConsoleTelemetry::new();
        let (trigger, shutdown) = Shutdown::new();
        let running = immune_console::run_on(config, listener, telemetry.clone(), shutdown);
        let task = tokio::spawn(async move { running.await.map_err(|e| e.to_string()) });
        let console = RunningConsole {
            addr,
            telemetry,
            trigger: Some(trigger),
            task: Some(task),
        };
        let health = console.url("/health");
        within(
            Duration::from_secs(30),
            "the console to connect to NATS and answer /health",
            async {
                let client = http();
                loop {
                    if let Ok(r) = client.get(&health).send().await {
                        if r.status().is_success() {
                            return;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        )
        .await;
        console
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Shuts the console down; it must return cleanly within 10 s even with pages connected.
    pub async fn stop(mut self) {
        if let Some(trigger) = self.trigger.take() {
            trigger.trigger();
        }
        if let Some(task) = self.task.take() {
            let result = within(
                Duration::from_secs(10),
                "the console to stop after shutdown (an /events stream holding it open?)",
                task,
            )
            .await;
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("console ended with an error: {e}"),
                Err(e) => panic!("console panicked: {e}"),
            }
        }
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("http client")
}
