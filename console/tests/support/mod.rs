//! The console under test: `immune_console::run_on` on a free loopback port against a test
//! nats-server, as a [`RunningStage`] (ready once `/health` answers; its stop checked to
//! come within 10 s even with `/events` streams open).

use std::time::Duration;

use immune_console::{Config, ConsoleTelemetry};
use immune_runtime::BusConfig;
use immune_testkit::RunningStage;

pub async fn start_console(nats_url: &str) -> RunningStage<ConsoleTelemetry> {
    let nats = BusConfig::at(nats_url);
    RunningStage::start_listening(
        "the console",
        ConsoleTelemetry::new(),
        |telemetry, listener, shutdown| {
            let config = Config {
                nats,
                listen: listener.local_addr().expect("bound address"),
                ..Config::default()
            };
            immune_console::run_on(config, listener, telemetry, shutdown)
        },
    )
    .await
    .stop_within(
        Duration::from_secs(10),
        "an /events stream holding it open?",
    )
    .ready_on_http(
        "/health",
        Duration::from_secs(30),
        "the console to connect to NATS and answer /health",
    )
    .await
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("http client")
}
