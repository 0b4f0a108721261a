//! Restart latency through the real bus: `cargo bench -p immune-executor --bench restart`
//! (`-- <runs>`, default 20; `--profile dev` to skip the release build).
//!
//! Each run publishes a restart request for a demo container on a real nats-server, with an
//! executor consuming it, and measures from the moment the request is published to:
//! - the container running again (Docker's `start` event, nanosecond time stamp),
//! - its `/health` answering 200 (polled every 5 ms),
//! - the executor's result arriving on `immune.results.<service>`.
//!
//! Prints p50, p95 and max of each. Target: running again p50 < 0.8 s, p95 < 1.5 s.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use immune_nats::{decode, ActionKind, ActionRequest, Event, ServiceName, Stage};
use immune_runtime::{Bus, BusConfig, Shutdown, Telemetry};
use immune_testkit::{unique, within, DemoContainer, DemoSpec, NatsServer};

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((sorted.len() as f64) * q).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn report(name: &str, mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    let (p50, p95) = (quantile(&ms, 0.5), quantile(&ms, 0.95));
    println!(
        "{name:<28} p50 {p50:>7.1} ms   p95 {p95:>7.1} ms   max {:>7.1} ms   (n={})",
        ms.last().copied().unwrap_or(0.0),
        ms.len()
    );
    (p50, p95)
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20);
    let nats = NatsServer::start().await;
    let project = unique("bench");
    let (trigger, shutdown) = Shutdown::new();
    let config = immune_executor::Config {
        nats: BusConfig {
            url: nats.url(),
            ..Default::default()
        },
        project: Some(project.clone()),
        ..Default::default()
    };
    let executor = tokio::spawn(immune_executor::run(
        config,
        Telemetry::new(Stage::Executor),
        shutdown.clone(),
    ));
    let bus = Bus::connect(
        &BusConfig {
            url: nats.url(),
            ..Default::default()
        },
        Telemetry::new(Stage::Client),
        &shutdown,
    )
    .await
    .expect("bench client connects");
    let demo = DemoContainer::start(DemoSpec::new("orders", &project)).await;
    let ip = demo.address().await.expect("demo address");
    let health = format!("http://{ip}:8080/health");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .expect("http client");
    let service = ServiceName::new("orders").expect("name");
    let mut results = bus
        .client()
        .subscribe(format!("immune.results.{service}"))
        .await
        .expect("subscribe to results");
    let mut started = demo
        .docker
        .events(Some(bollard::query_parameters::EventsOptions {
            since: None,
            until: None,
            filters: Some(HashMap::from([
                ("container".to_string(), vec![demo.id.clone()]),
                ("event".to_string(), vec!["start".to_string()]),
            ])),
        }));

    println!(
        "restart bench: {runs} restarts of {} (stop grace 1 s)",
        demo.name
    );
    let (mut running, mut healthy, mut result_ms) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs + 1 {
        let request = ActionRequest {
            action_id: unique("bench-action"),
            incident_id: "bench".into(),
            service: service.clone(),
            instance: demo.name.clone(),
            container_id: demo.id.clone(),
            action: ActionKind::Restart,
            params: BTreeMap::from([("stop_grace_s".to_string(), "1".to_string())]),
            timeout_ms: 30_000,
            reason: "bench".into(),
        };
        let t0 = now_ns();
        bus.publish(None, Event::ActionRequest(request.clone()))
            .await
            .expect("publish request");
        let start_ns = within(Duration::from_secs(30), "Docker's start event", async {
            loop {
                let e = started.next().await.expect("event stream").expect("event");
                if let Some(t) = e.time_nano {
                    if i128::from(t) > t0 {
                        return i128::from(t);
                    }
                }
            }
        })
        .await;
        within(Duration::from_secs(30), "/health to answer", async {
            while !http
                .get(&health)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        let healthy_ns = now_ns();
        within(Duration::from_secs(30), "the executor's result", async {
            loop {
                let m = results.next().await.expect("results");
                if let Ok(env) = decode(&m.payload) {
                    if let Event::ActionResult(r) = env.body {
                        if r.action_id == request.action_id {
                            return;
                        }
                    }
                }
            }
        })
        .await;
        let result_ns = now_ns();
        if i == 0 {
            continue; // warm-up: connections, first pull
        }
        running.push((start_ns - t0) as f64 / 1e6);
        healthy.push((healthy_ns - t0) as f64 / 1e6);
        result_ms.push((result_ns - t0) as f64 / 1e6);
    }
    let (p50, p95) = report("request -> running again", running);
    report("request -> /health 200", healthy);
    report("request -> result received", result_ms);
    println!(
        "target running again: p50 < 800 ms ({}), p95 < 1500 ms ({})",
        if p50 < 800.0 { "met" } else { "MISSED" },
        if p95 < 1500.0 { "met" } else { "MISSED" }
    );
    trigger.trigger();
    let _ = executor.await;
}
