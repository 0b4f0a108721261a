//! A demo service for immune: a small HTTP service that behaves like a real one and can be
//! broken on purpose.
//!
//! - `GET /` does the service's work: calls each upstream (`UPSTREAMS`), then answers.
//! - `GET /health` answers 200 while the service is well.
//! - `GET /metrics`: `demo_http_requests_total{status}`, the latency histogram
//!   `demo_http_request_duration_seconds`, `demo_http_in_flight_requests`.
//! - `POST /fault` with `{"mode": "crash" | "hang" | "latency" | "errors" | "none", ...}`
//!   simulates a fault; `/fault` itself keeps answering so a fault can be cleared.
//!
//! `immune-demo-service --loadgen <url> --rps <n>` is the load generator instead.
//! Environment: `SERVICE_NAME`, `PORT` (8080), `UPSTREAMS` (comma-separated base URLs).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: u16,
}

/// The fault in force.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fault {
    mode: Mode,
    /// Added to every request in `latency` mode.
    #[serde(default)]
    latency_ms: u64,
    /// Share of requests answered 500 in `errors` mode.
    #[serde(default)]
    error_rate: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Mode {
    #[default]
    None,
    Crash,
    Hang,
    Latency,
    Errors,
}

#[derive(Debug)]
struct Service {
    name: String,
    upstreams: Vec<String>,
    client: reqwest::Client,
    fault: watch::Sender<Fault>,
    registry: Registry,
    requests: Family<StatusLabel, Counter>,
    duration: Histogram,
    in_flight: Gauge<i64, AtomicI64>,
    sequence: AtomicU64,
}

type Shared = Arc<Service>;

impl Service {
    fn new(name: String, upstreams: Vec<String>) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<StatusLabel, Counter>::default();
        let duration = Histogram::new([
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]);
        let in_flight = Gauge::<i64, AtomicI64>::default();
        registry.register("demo_http_requests", "Requests by status", requests.clone());
        registry.register(
            "demo_http_request_duration_seconds",
            "Request latency",
            duration.clone(),
        );
        registry.register(
            "demo_http_in_flight_requests",
            "Requests being served",
            in_flight.clone(),
        );
        Self {
            name,
            upstreams,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
            fault: watch::channel(Fault::default()).0,
            registry,
            requests,
            duration,
            in_flight,
            sequence: AtomicU64::new(0),
        }
    }

    /// Waits while the service hangs; returns at once otherwise.
    async fn unless_hung(&self) {
        let mut rx = self.fault.subscribe();
        let _ = rx.wait_for(|f| f.mode != Mode::Hang).await;
    }
}

async fn work(State(svc): State<Shared>) -> impl IntoResponse {
    let started = Instant::now();
    svc.in_flight.inc();
    svc.unless_hung().await;
    let fault = svc.fault.borrow().clone();
    if fault.mode == Mode::Latency {
        tokio::time::sleep(Duration::from_millis(fault.latency_ms)).await;
    }
    let n = svc.sequence.fetch_add(1, Ordering::Relaxed);
    let mut status = StatusCode::OK;
    // Deterministic spread of errors: every k-th request fails for a rate of 1/k.
    if fault.mode == Mode::Errors && fault.error_rate > 0.0 {
        let period = (1.0 / fault.error_rate.min(1.0)).round().max(1.0) as u64;
        if n % period == 0 {
            status = StatusCode::INTERNAL_SERVER_ERROR;
        }
    }
    for upstream in &svc.upstreams {
        let ok = svc
            .client
            .get(format!("{upstream}/"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if !ok {
            status = StatusCode::BAD_GATEWAY;
        }
    }
    svc.in_flight.dec();
    svc.duration.observe(started.elapsed().as_secs_f64());
    svc.requests
        .get_or_create(&StatusLabel {
            status: status.as_u16(),
        })
        .inc();
    (status, format!("{} {}\n", svc.name, status.as_u16()))
}

async fn health(State(svc): State<Shared>) -> &'static str {
    svc.unless_hung().await;
    "ok\n"
}

async fn metrics(State(svc): State<Shared>) -> impl IntoResponse {
    svc.unless_hung().await;
    let mut out = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut out, &svc.registry);
    ([("content-type", "text/plain; version=0.0.4")], out)
}

async fn set_fault(State(svc): State<Shared>, Json(fault): Json<Fault>) -> impl IntoResponse {
    eprintln!("{}: fault {:?}", svc.name, fault);
    if fault.mode == Mode::Crash {
        tokio::spawn(async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            std::process::exit(3);
        });
    }
    svc.fault.send_replace(fault.clone());
    (StatusCode::ACCEPTED, Json(fault))
}

async fn get_fault(State(svc): State<Shared>) -> Json<Fault> {
    Json(svc.fault.borrow().clone())
}

async fn loadgen(url: String, rps: u64) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rps.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let client = client.clone();
        let url = url.clone();
        tokio::spawn(async move {
            let _ = client.get(&url).send().await;
        });
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    if let Some(i) = args.iter().position(|a| a == "--loadgen") {
        let url = args.get(i + 1).cloned().expect("--loadgen <url>");
        let rps = args
            .iter()
            .position(|a| a == "--rps")
            .and_then(|j| args.get(j + 1))
            .and_then(|r| r.parse().ok())
            .unwrap_or(10);
        eprintln!("load generator: {rps} req/s to {url}");
        tokio::select! {
            _ = loadgen(url, rps) => {}
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        return;
    }
    let name = std::env::var("SERVICE_NAME").unwrap_or_else(|_| "demo".into());
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080);
    let upstreams = std::env::var("UPSTREAMS")
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().trim_end_matches('/').to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let svc: Shared = Arc::new(Service::new(name.clone(), upstreams));
    let app = Router::new()
        .route("/", get(work))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/fault", post(set_fault).get(get_fault))
        .with_state(svc);
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
        .await
        .expect("bind");
    eprintln!("{name} listening on :{port}");
    // A hung request must not hold up a stop: exit as soon as the signal comes.
    tokio::select! {
        r = axum::serve(listener, app) => { r.expect("server"); }
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
