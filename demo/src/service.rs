//! One demo service: the HTTP handlers, the metrics, and [`serve`].
//!
//! `/` passes the admin settings (throttle, circuit), then any hang or latency fault, then
//! the service's [`Capacity`] (a slot for the service time, or a place in the queue, or 503
//! `overloaded` at once), then calls each upstream on the next of its replicas in turn
//! ([`Upstream`]). `/health`, `/metrics`, `/fault` and `/admin` are described in `main.rs`.

use std::collections::BTreeMap;
use std::future::{Future, IntoFuture};
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

use crate::blocklist::Blocklist;
use crate::capacity::Capacity;
use crate::config::ServiceConfig;
use crate::fault::{burn, leak, Fault, Mode};
use crate::screen;
use crate::upstream::{Resolved, Upstream};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabel {
    upstream: String,
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
    /// Sources the screen keeps refusing are blocked (see [`Blocklist`]).
    block_sources: bool,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BlockBody {
    state: Switch,
}

/// Requests served in the current one-second window, for the throttle.
#[derive(Debug, Default)]
struct Window {
    second: u64,
    served: u64,
}

#[derive(Debug)]
pub struct Service {
    name: String,
    upstreams: Vec<Upstream>,
    capacity: Capacity,
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
    blocklist: Mutex<Blocklist>,
    /// Requests answered 403 because their source is blocked.
    blocked: Counter,
    blocked_sources: Gauge<i64, AtomicI64>,
    /// Requests refused by the screen, by attack class.
    screened: Family<ReasonLabel, Counter>,
    pub(crate) leaked_bytes: Gauge<i64, AtomicI64>,
    /// Bumped on every fault change: a CPU burner stops when it no longer matches.
    pub(crate) fault_generation: AtomicU64,
    queue_depth: Gauge<i64, AtomicI64>,
    resolve_failures: Family<UpstreamLabel, Counter>,
    upstream_addresses: Family<UpstreamLabel, Gauge<i64, AtomicI64>>,
}

type Shared = Arc<Service>;

impl Service {
    fn new(config: ServiceConfig) -> Self {
        let ServiceConfig {
            name,
            upstreams,
            limits,
            ..
        } = config;
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
            "Requests shed by the admin settings (throttled, circuit_open) or beyond capacity \
             (overloaded); not attacks",
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
        let blocked = Counter::default();
        let blocked_sources = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "demo_blocked_requests",
            "Requests answered 403 unread because their source is blocked (POST /admin/block); \
             not counted as attacks",
            blocked.clone(),
        );
        registry.register(
            "demo_admin_blocked_sources",
            "Sources blocked after repeated refusals by the screen",
            blocked_sources.clone(),
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
        let capacity_slots = Gauge::<i64, AtomicI64>::default();
        capacity_slots.set(limits.slots as i64);
        let queue_depth = Gauge::<i64, AtomicI64>::default();
        let resolve_failures = Family::<UpstreamLabel, Counter>::default();
        let upstream_addresses = Family::<UpstreamLabel, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "demo_capacity_slots",
            "Requests worked on at once (CAPACITY)",
            capacity_slots,
        );
        registry.register(
            "demo_queue_depth",
            "Requests waiting for a slot",
            queue_depth.clone(),
        );
        registry.register(
            "demo_upstream_resolve_failures",
            "Resolutions of an upstream's name that found nothing (the last addresses stand)",
            resolve_failures.clone(),
        );
        registry.register(
            "demo_upstream_addresses",
            "Replicas an upstream's name has, calls go to each in turn",
            upstream_addresses.clone(),
        );
        Self {
            name,
            upstreams,
            capacity: Capacity::new(limits),
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
            blocklist: Mutex::new(Blocklist::default()),
            blocked,
            blocked_sources,
            screened,
            leaked_bytes,
            fault_generation: AtomicU64::new(0),
            queue_depth,
            resolve_failures,
            upstream_addresses,
        }
    }

    /// Calls `upstream` on the next of its replicas, with its name as the `Host`; true on a
    /// 2xx answer.
    async fn call(&self, upstream: &Upstream) -> bool {
        let label = UpstreamLabel {
            upstream: upstream.host().to_string(),
        };
        if upstream.resolve().await == Resolved::Failed {
            self.resolve_failures.get_or_create(&label).inc();
        }
        self.upstream_addresses
            .get_or_create(&label)
            .set(upstream.addresses().len() as i64);
        let Some(url) = upstream.next_url("/") else {
            return false;
        };
        self.client
            .get(url)
            .header(reqwest::header::HOST, upstream.authority())
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    fn shed(&self, status: StatusCode, reason: &'static str) -> (StatusCode, String) {
        self.rejected.get_or_create(&ReasonLabel { reason }).inc();
        self.requests
            .get_or_create(&StatusLabel {
                status: status.as_u16(),
            })
            .inc();
        (
            status,
            format!("{} {} {reason}\n", self.name, status.as_u16()),
        )
    }

    fn admin(&self) -> AdminState {
        self.admin.lock().map(|a| a.clone()).unwrap_or_default()
    }

    fn is_blocked(&self, source: std::net::IpAddr) -> bool {
        self.blocklist
            .lock()
            .is_ok_and(|list| list.is_blocked(source))
    }

    /// Changes the block list, and its gauge with it.
    fn change_blocklist(&self, change: impl FnOnce(&mut Blocklist, Instant)) {
        if let Ok(mut list) = self.blocklist.lock() {
            change(&mut list, Instant::now());
            self.blocked_sources.set(list.blocked() as i64);
        }
    }

    /// The screen refused a request of `source`: a repeat offender is blocked while
    /// blocking is on.
    fn offence(&self, source: std::net::IpAddr) {
        self.change_blocklist(|list, now| list.offence(source, now));
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
        return svc.shed(status, reason);
    }
    let _in_flight = InFlight::start(&svc.in_flight);
    svc.unless_hung().await;
    let fault = svc.fault.borrow().clone();
    if fault.mode == Mode::Latency {
        tokio::time::sleep(Duration::from_millis(fault.latency_ms)).await;
    }
    let Ok(admitted) = svc.capacity.admit() else {
        return svc.shed(StatusCode::SERVICE_UNAVAILABLE, "overloaded");
    };
    admitted.work().await;
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
        if !svc.call(upstream).await {
            status = StatusCode::BAD_GATEWAY;
        }
    }
    svc.duration.observe(started.elapsed().as_secs_f64());
    svc.requests
        .get_or_create(&StatusLabel {
            status: status.as_u16(),
        })
        .inc();
    (status, format!("{} {}\n", svc.name, status.as_u16()))
}

/// Counts a request in `demo_http_in_flight_requests` until it is answered or dropped.
struct InFlight<'a>(&'a Gauge<i64, AtomicI64>);

impl<'a> InFlight<'a> {
    fn start(gauge: &'a Gauge<i64, AtomicI64>) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn health(State(svc): State<Shared>) -> &'static str {
    svc.unless_hung().await;
    "ok\n"
}

async fn metrics(State(svc): State<Shared>) -> impl IntoResponse {
    svc.unless_hung().await;
    svc.queue_depth.set(svc.capacity.queue_depth() as i64);
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

/// Refuses attacks before any handler runs (see `screen`).
async fn screening(
    State(svc): State<Shared>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let source = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    // Monitoring's reads stay open: a prober behind the same address as an attacker (one
    // NAT, one host) must still see the service's health and metrics.
    let monitoring = matches!(request.uri().path(), "/health" | "/metrics");
    if let Some(source) = source.filter(|s| !monitoring && svc.is_blocked(*s)) {
        svc.blocked.inc();
        return (
            StatusCode::FORBIDDEN,
            format!("{} 403 blocked: {source} keeps sending attacks\n", svc.name),
        )
            .into_response();
    }
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
        if let Some(source) = source {
            svc.offence(source);
        }
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

async fn set_block(State(svc): State<Shared>, Json(body): Json<BlockBody>) -> Json<AdminState> {
    let on = matches!(body.state, Switch::On);
    svc.change_blocklist(|list, now| list.set(on, now));
    update_admin(&svc, |a| a.block_sources = on)
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

/// Serves the demo service on `listener` until `shutdown`, then `drain` longer (a hung
/// request does not hold up a stop without a drain).
pub async fn serve(
    config: ServiceConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let drain = config.drain;
    let name = config.name.clone();
    let svc: Shared = Arc::new(Service::new(config));
    let app = Router::new()
        .route("/", get(work))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/fault", post(set_fault).get(get_fault))
        .route("/admin", get(get_admin))
        .route("/admin/throttle", post(set_throttle))
        .route("/admin/circuit", post(set_circuit))
        .route("/admin/flags/{name}", post(set_flag))
        .route("/admin/block", post(set_block))
        .layer(axum::middleware::from_fn_with_state(svc.clone(), screening))
        .with_state(svc);
    let serving = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .into_future();
    tokio::pin!(serving);
    tokio::select! {
        served = &mut serving => return served,
        _ = shutdown => {}
    }
    if !drain.is_zero() {
        eprintln!("{name}: draining for {drain:?}");
        if let Ok(served) = tokio::time::timeout(drain, &mut serving).await {
            return served;
        }
    }
    Ok(())
}
