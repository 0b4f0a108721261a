//! A demo service for immune: a small HTTP service that behaves like a real one and can be
//! broken on purpose.
//!
//! - `GET /` does the service's work: calls each upstream (`UPSTREAMS`), then answers.
//! - `GET /health` answers 200 while the service is well.
//! - `GET /metrics`: `demo_http_requests_total{status}`, the latency histogram
//!   `demo_http_request_duration_seconds`, `demo_http_in_flight_requests`.
//! - `POST /fault` with `{"mode": "crash" | "hang" | "latency" | "errors" | "memory_leak" |
//!   "cpu_burn" | "none", ...}` simulates a fault; `/fault` itself keeps answering so a fault
//!   can be cleared. `memory_leak` holds `leak_mb_per_s` (10) more MiB every second up to
//!   `leak_cap_mb` (256, at most 1024), freed when the mode changes (`demo_leaked_bytes`);
//!   `cpu_burn` keeps `burn_share` (1.0) of one core busy, never more than one core.
//! - Every request is screened first (module `screen`): SQL injection, cross-site scripting,
//!   path traversal and command injection get 400, a body over 64 KiB 413, headers over
//!   8 KiB 431, each counted in `demo_rejected_requests_total{reason}`.
//! - Admin endpoint (label `immune.admin=8080/admin`), for application-level repairs:
//!   `POST /admin/throttle {"rps": n}` answers `/` with 429 beyond n requests a second (0 lifts
//!   it); `POST /admin/circuit {"state": "open"|"closed"}` answers `/` with 503 at once while
//!   open, without calling upstreams; `POST /admin/flags/<name> {"state": "on"|"off"}` sets a
//!   feature flag (`upstream_calls` off: `/` answers without calling its upstreams);
//!   `GET /admin` shows them. In `/metrics`: `demo_shed_requests_total{reason}`
//!   (`throttled`, `circuit_open`), `demo_admin_throttle_rps`, `demo_admin_circuit_open`,
//!   `demo_admin_feature_flag{flag}`.
//!
//! `immune-demo-service --loadgen <url> --rps <n>` is the load generator instead.
//! Environment: `SERVICE_NAME`, `PORT` (8080), `UPSTREAMS` (comma-separated base URLs),
//! `DRAIN_MS` (0): how long it keeps serving after SIGTERM before it exits, like a service
//! that drains its connections.

mod screen;

use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
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

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FlagLabel {
    flag: String,
}

/// What the admin endpoint has set.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
struct AdminState {
    /// Requests a second `/` serves; 0: no limit.
    throttle_rps: u64,
    circuit: CircuitState,
    flags: BTreeMap<String, bool>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum CircuitState {
    Open,
    #[default]
    Closed,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ThrottleBody {
    rps: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CircuitBody {
    state: CircuitState,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Switch {
    On,
    Off,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FlagBody {
    state: Switch,
}

/// Requests served in the current one-second window, for the throttle.
#[derive(Debug, Default)]
struct Window {
    second: u64,
    served: u64,
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
    /// MiB a second held in `memory_leak` mode (0: 10).
    #[serde(default, skip_serializing_if = "is_zero")]
    leak_mb_per_s: u64,
    /// Most MiB held in `memory_leak` mode (0: 256; never more than [`LEAK_CAP_MB`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    leak_cap_mb: u64,
    /// Share of one core kept busy in `cpu_burn` mode (0: all of it).
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    burn_share: f64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_zero_f64(n: &f64) -> bool {
    *n == 0.0
}

/// The memory leak never holds more than this, whatever a request asks.
const LEAK_CAP_MB: u64 = 1024;

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Mode {
    #[default]
    None,
    Crash,
    Hang,
    Latency,
    Errors,
    MemoryLeak,
    CpuBurn,
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
    admin: Mutex<AdminState>,
    window: Mutex<Window>,
    rejected: Family<ReasonLabel, Counter>,
    throttle_rps: Gauge<i64, AtomicI64>,
    circuit_open: Gauge<i64, AtomicI64>,
    flags: Family<FlagLabel, Gauge<i64, AtomicI64>>,
    /// Requests refused by the screen, by attack class.
    screened: Family<ReasonLabel, Counter>,
    leaked_bytes: Gauge<i64, AtomicI64>,
    /// Bumped on every fault change: a CPU burner stops when it no longer matches.
    fault_generation: AtomicU64,
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
        let rejected = Family::<ReasonLabel, Counter>::default();
        let throttle_rps = Gauge::<i64, AtomicI64>::default();
        let circuit_open = Gauge::<i64, AtomicI64>::default();
        let flags = Family::<FlagLabel, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "demo_shed_requests",
            "Requests shed by the admin settings (throttled, circuit_open); not attacks",
            rejected.clone(),
        );
        registry.register(
            "demo_admin_throttle_rps",
            "Requests a second served (0: no limit)",
            throttle_rps.clone(),
        );
        registry.register(
            "demo_admin_circuit_open",
            "1 while the circuit breaker is open",
            circuit_open.clone(),
        );
        registry.register(
            "demo_admin_feature_flag",
            "Feature flags set through the admin endpoint (1 on, 0 off)",
            flags.clone(),
        );
        let screened = Family::<ReasonLabel, Counter>::default();
        let leaked_bytes = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "demo_rejected_requests",
            "Requests refused by the request screen, by attack class",
            screened.clone(),
        );
        registry.register(
            "demo_leaked_bytes",
            "Memory held by the memory_leak fault",
            leaked_bytes.clone(),
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
            admin: Mutex::new(AdminState::default()),
            window: Mutex::new(Window::default()),
            rejected,
            throttle_rps,
            circuit_open,
            flags,
            screened,
            leaked_bytes,
            fault_generation: AtomicU64::new(0),
        }
    }

    fn admin(&self) -> AdminState {
        self.admin.lock().map(|a| a.clone()).unwrap_or_default()
    }

    /// Whether the admin settings refuse this request, and with which status.
    fn admission(&self, admin: &AdminState) -> Option<(StatusCode, &'static str)> {
        if admin.circuit == CircuitState::Open {
            return Some((StatusCode::SERVICE_UNAVAILABLE, "circuit_open"));
        }
        if admin.throttle_rps > 0 {
            let second = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let mut window = self.window.lock().ok()?;
            if window.second != second {
                *window = Window { second, served: 0 };
            }
            if window.served >= admin.throttle_rps {
                return Some((StatusCode::TOO_MANY_REQUESTS, "throttled"));
            }
            window.served += 1;
        }
        None
    }

    /// Waits while the service hangs; returns at once otherwise.
    async fn unless_hung(&self) {
        let mut rx = self.fault.subscribe();
        let _ = rx.wait_for(|f| f.mode != Mode::Hang).await;
    }
}

async fn work(State(svc): State<Shared>) -> impl IntoResponse {
    let started = Instant::now();
    let admin = svc.admin();
    if let Some((status, reason)) = svc.admission(&admin) {
        svc.rejected.get_or_create(&ReasonLabel { reason }).inc();
        svc.requests
            .get_or_create(&StatusLabel {
                status: status.as_u16(),
            })
            .inc();
        return (
            status,
            format!("{} {} {reason}\n", svc.name, status.as_u16()),
        );
    }
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
    let call_upstreams = admin.flags.get("upstream_calls").copied().unwrap_or(true);
    for upstream in svc.upstreams.iter().filter(|_| call_upstreams) {
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
    let generation = svc.fault_generation.fetch_add(1, Ordering::SeqCst) + 1;
    match fault.mode {
        Mode::MemoryLeak => {
            tokio::spawn(leak(svc.clone(), generation, fault.clone()));
        }
        Mode::CpuBurn => {
            let svc = svc.clone();
            let share = if fault.burn_share > 0.0 {
                fault.burn_share.min(1.0)
            } else {
                1.0
            };
            std::thread::spawn(move || burn(&svc, generation, share));
        }
        _ => {}
    }
    svc.fault.send_replace(fault.clone());
    (StatusCode::ACCEPTED, Json(fault))
}

/// Holds more memory every second until the cap, and frees it when the fault changes.
async fn leak(svc: Shared, generation: u64, fault: Fault) {
    const MIB: usize = 1024 * 1024;
    let rate = if fault.leak_mb_per_s == 0 {
        10
    } else {
        fault.leak_mb_per_s
    };
    let cap = if fault.leak_cap_mb == 0 {
        256
    } else {
        fault.leak_cap_mb
    }
    .min(LEAK_CAP_MB);
    let mut held: Vec<Vec<u8>> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while svc.fault_generation.load(Ordering::SeqCst) == generation {
        if (held.len() as u64) < cap {
            let more = rate.min(cap - held.len() as u64);
            // Written, not only reserved, so the pages count as resident memory.
            held.extend((0..more).map(|_| vec![0xA5u8; MIB]));
            svc.leaked_bytes.set((held.len() * MIB) as i64);
        }
        tick.tick().await;
    }
    drop(held);
    svc.leaked_bytes.set(0);
}

/// Keeps one core busy for `share` of every 100 ms until the fault changes.
fn burn(svc: &Service, generation: u64, share: f64) {
    let slice = Duration::from_millis(100);
    let mut spin: u64 = 0;
    while svc.fault_generation.load(Ordering::SeqCst) == generation {
        let started = Instant::now();
        while started.elapsed() < slice.mul_f64(share) {
            spin = std::hint::black_box(spin.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        std::thread::sleep(slice.saturating_sub(started.elapsed()));
    }
}

/// Refuses attacks before any handler runs (see `screen`).
async fn screening(
    State(svc): State<Shared>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let (parts, body) = request.into_parts();
    let content_length = parts
        .headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let headers: Vec<(&str, &[u8])> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_bytes()))
        .collect();
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut seen = screen::Seen {
        target,
        headers: &headers,
        content_length,
        body: b"",
    };
    // Do not read a body that says it is too large: refuse it from its headers.
    let mut verdict = screen::screen(&seen);
    let mut bytes = axum::body::Bytes::new();
    if verdict.is_none() {
        match axum::body::to_bytes(body, screen::MAX_BODY).await {
            Ok(read) => {
                bytes = read;
                seen.body = &bytes;
                verdict = screen::screen(&seen);
            }
            Err(_) => verdict = Some(screen::Rejection::OversizedBody),
        }
    } else {
        // Read (and drop) a refused body up to 1 MiB before answering: closing on a client
        // still sending resets the connection before it reads the refusal.
        let _ = axum::body::to_bytes(body, 1024 * 1024).await;
    }
    drop(headers);
    if let Some(rejection) = verdict {
        let reason = rejection.reason();
        svc.screened.get_or_create(&ReasonLabel { reason }).inc();
        let status = rejection.status();
        svc.requests
            .get_or_create(&StatusLabel {
                status: status.as_u16(),
            })
            .inc();
        return (
            status,
            format!("{} {} rejected: {reason}\n", svc.name, status.as_u16()),
        )
            .into_response();
    }
    next.run(axum::extract::Request::from_parts(
        parts,
        axum::body::Body::from(bytes),
    ))
    .await
}

async fn get_fault(State(svc): State<Shared>) -> Json<Fault> {
    Json(svc.fault.borrow().clone())
}

async fn get_admin(State(svc): State<Shared>) -> Json<AdminState> {
    Json(svc.admin())
}

fn update_admin(svc: &Service, change: impl FnOnce(&mut AdminState)) -> Json<AdminState> {
    let state = match svc.admin.lock() {
        Ok(mut admin) => {
            change(&mut admin);
            admin.clone()
        }
        Err(_) => AdminState::default(),
    };
    svc.throttle_rps.set(state.throttle_rps as i64);
    svc.circuit_open
        .set(i64::from(state.circuit == CircuitState::Open));
    for (flag, on) in &state.flags {
        svc.flags
            .get_or_create(&FlagLabel { flag: flag.clone() })
            .set(i64::from(*on));
    }
    eprintln!("{}: admin {:?}", svc.name, state);
    Json(state)
}

async fn set_throttle(
    State(svc): State<Shared>,
    Json(body): Json<ThrottleBody>,
) -> Json<AdminState> {
    update_admin(&svc, |a| a.throttle_rps = body.rps)
}

async fn set_circuit(State(svc): State<Shared>, Json(body): Json<CircuitBody>) -> Json<AdminState> {
    update_admin(&svc, |a| a.circuit = body.state)
}

async fn set_flag(
    State(svc): State<Shared>,
    Path(name): Path<String>,
    Json(body): Json<FlagBody>,
) -> impl IntoResponse {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid {
        return (
            StatusCode::BAD_REQUEST,
            format!("flag name {name:?}: letters, digits, _ or - only\n"),
        )
            .into_response();
    }
    let on = matches!(body.state, Switch::On);
    update_admin(&svc, |a| {
        a.flags.insert(name, on);
    })
    .into_response()
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
    let drain = Duration::from_millis(
        std::env::var("DRAIN_MS")
            .ok()
            .and_then(|d| d.parse().ok())
            .unwrap_or(0),
    );
    let svc: Shared = Arc::new(Service::new(name.clone(), upstreams));
    let app = Router::new()
        .route("/", get(work))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/fault", post(set_fault).get(get_fault))
        .route("/admin", get(get_admin))
        .route("/admin/throttle", post(set_throttle))
        .route("/admin/circuit", post(set_circuit))
        .route("/admin/flags/{name}", post(set_flag))
        .layer(axum::middleware::from_fn_with_state(svc.clone(), screening))
        .with_state(svc);
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
        .await
        .expect("bind");
    eprintln!("{name} listening on :{port}");
    // A hung request must not hold up a stop: exit as soon as the signal comes.
    // DRAIN_MS keeps serving that long after the signal.
    let serving = axum::serve(listener, app).into_future();
    tokio::pin!(serving);
    tokio::select! {
        r = &mut serving => { r.expect("server"); }
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    if !drain.is_zero() {
        eprintln!("{name}: draining for {drain:?}");
        let _ = tokio::time::timeout(drain, &mut serving).await;
    }
}
