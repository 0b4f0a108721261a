//! The load generator: sends `GET` to one URL (the entry point) at the rate the [`Profile`]
//! asks for, and serves a control endpoint.
//!
//! - The sender ticks on a tokio interval and sends the requests the target rate owes since
//!   the last tick (a fraction carries over), never more than `max_in_flight` at once: a
//!   request beyond that is not sent and is counted as `skipped`, so a stuck entry point
//!   does not pile up connections in the generator.
//! - `POST /load {"multiplier": m, "for_ms": d}` sends the base rate times `m` for `d` ms,
//!   whatever the cycle's phase (the chaos
//!   `overload` fault: a spike beyond capacity); a new spike replaces the old one, and
//!   multiplier 1 ends it. `GET /load` reports the target rate now.
//! - `GET /metrics`: `demo_loadgen_target_rps`, `demo_loadgen_requests_total{status}` (the
//!   HTTP status, `error` for no answer, `skipped`), `demo_loadgen_request_duration_seconds`
//!   (what a user of the entry point waits), `demo_loadgen_in_flight_requests`.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::profile::{target_rps, Phase, Profile, ProfileError, Spike};

/// How often the sender wakes to send what the rate owes.
const TICK: Duration = Duration::from_millis(10);
/// A spike multiplies the rate at most this much.
pub const MAX_MULTIPLIER: f64 = 100.0;
/// A spike lasts at most this long.
pub const MAX_SPIKE: Duration = Duration::from_secs(3600);

/// Where to listen and how much to have in flight, beside the profile.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadgenConfig {
    #[command(flatten)]
    pub profile: Profile,
    /// The control endpoint (`/load`, `/metrics`).
    #[arg(long, default_value = "0.0.0.0:8089")]
    pub listen: SocketAddr,
    /// Requests in flight at most; beyond it a request is skipped, not queued.
    #[arg(long, default_value_t = 256)]
    pub max_in_flight: usize,
    /// How long a request may take before it counts as `error`, ms.
    #[arg(long, default_value_t = 5000)]
    pub timeout_ms: u64,
}

impl LoadgenConfig {
    pub fn validate(&self) -> Result<(), ProfileError> {
        self.profile.validate()?;
        if self.max_in_flight == 0 || self.max_in_flight > Semaphore::MAX_PERMITS {
            return Err(ProfileError {
                flag: "max-in-flight",
                value: self.max_in_flight as f64,
                expected: "1 or more",
            });
        }
        if self.timeout_ms == 0 {
            return Err(ProfileError {
                flag: "timeout-ms",
                value: 0.0,
                expected: "more than 0",
            });
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

/// A spike as asked for on `POST /load`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpikeRequest {
    pub multiplier: f64,
    pub for_ms: u64,
}

/// What `GET /load` (and `POST /load`) answer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LoadState {
    pub target_rps: f64,
    pub base_rps: f64,
    pub phase: Phase,
    /// The spike's multiplier in force (1 without one).
    pub multiplier: f64,
    /// How long the spike in force lasts still.
    pub spike_left_ms: u64,
}

#[derive(Debug)]
struct Generator {
    profile: Profile,
    started: Instant,
    spike: Mutex<Option<Spike>>,
    registry: Registry,
    target: Gauge<f64, AtomicU64>,
    requests: Family<StatusLabel, Counter>,
    duration: Histogram,
    in_flight: Gauge<i64, AtomicI64>,
}

impl Generator {
    fn new(profile: Profile) -> Self {
        let mut registry = Registry::default();
        let target = Gauge::<f64, AtomicU64>::default();
        let requests = Family::<StatusLabel, Counter>::default();
        // Fine around 100 ms, where the capacity bench reads p99 straight off a bucket.
        let duration = Histogram::new([
            0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0,
        ]);
        let in_flight = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "demo_loadgen_target_rps",
            "The rate the load profile asks for now, spike included",
            target.clone(),
        );
        registry.register(
            "demo_loadgen_requests",
            "Requests by outcome: HTTP status, error (no answer), skipped (in-flight bound)",
            requests.clone(),
        );
        registry.register(
            "demo_loadgen_request_duration_seconds",
            "How long a request to the entry point took, as a user waits it",
            duration.clone(),
        );
        registry.register(
            "demo_loadgen_in_flight_requests",
            "Requests sent and not yet answered",
            in_flight.clone(),
        );
        Self {
            profile,
            started: Instant::now(),
            spike: Mutex::new(None),
            registry,
            target,
            requests,
            duration,
            in_flight,
        }
    }

    fn spike(&self) -> Option<Spike> {
        self.spike.lock().ok().and_then(|s| *s)
    }

    fn state(&self) -> LoadState {
        let t = self.started.elapsed();
        let spike = self.spike().filter(|s| t < s.until);
        LoadState {
            target_rps: target_rps(&self.profile, spike, t),
            base_rps: self.profile.base_rps,
            phase: self.profile.phase(t),
            multiplier: spike.map_or(1.0, |s| s.multiplier),
            spike_left_ms: spike.map_or(0, |s| (s.until - t).as_millis() as u64),
        }
    }

    fn count(&self, status: &str) {
        self.requests
            .get_or_create(&StatusLabel {
                status: status.to_string(),
            })
            .inc();
    }
}

/// Sends the profile's load to `url` and serves the control endpoint on `listener` until
/// `shutdown`; then stops sending and waits (bounded) for the requests in flight.
pub async fn run(
    url: reqwest::Url,
    config: LoadgenConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let timeout = Duration::from_millis(config.timeout_ms);
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(std::io::Error::other)?;
    let generator = Arc::new(Generator::new(config.profile));
    let app = Router::new()
        .route("/load", get(get_load).post(post_load))
        .route("/metrics", get(metrics))
        .with_state(generator.clone());
    let (stop_serving, serving_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = serving_stopped.await;
            })
            .into_future(),
    );
    let permits = Arc::new(Semaphore::new(config.max_in_flight));
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut owed = 0.0_f64;
    let mut last = Instant::now();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut shutdown => break,
        }
        let now = Instant::now();
        let rate = generator.state().target_rps;
        generator.target.set(rate);
        // What the rate owes since the last tick; a stall is not made up for with a flood.
        owed = (owed + rate * now.duration_since(last).as_secs_f64()).min(rate * 0.1 + 1.0);
        last = now;
        while owed >= 1.0 {
            owed -= 1.0;
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                generator.count("skipped");
                continue;
            };
            let request = client.get(url.clone());
            let generator = generator.clone();
            tokio::spawn(async move {
                generator.in_flight.inc();
                let sent = Instant::now();
                let status = match request.send().await {
                    Ok(response) => response.status().as_u16().to_string(),
                    Err(_) => "error".to_string(),
                };
                generator.duration.observe(sent.elapsed().as_secs_f64());
                generator.count(&status);
                generator.in_flight.dec();
                drop(permit);
            });
        }
    }
    let all = u32::try_from(config.max_in_flight).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(timeout + Duration::from_secs(1), permits.acquire_many(all)).await;
    let _ = stop_serving.send(());
    server
        .await
        .map_err(std::io::Error::other)
        .and_then(|served| served)
}

async fn get_load(State(generator): State<Arc<Generator>>) -> Json<LoadState> {
    Json(generator.state())
}

async fn post_load(
    State(generator): State<Arc<Generator>>,
    Json(request): Json<SpikeRequest>,
) -> axum::response::Response {
    if !(request.multiplier.is_finite() && (0.0..=MAX_MULTIPLIER).contains(&request.multiplier)) {
        return (
            StatusCode::BAD_REQUEST,
            format!(
                "multiplier {}: from 0 to {MAX_MULTIPLIER}\n",
                request.multiplier
            ),
        )
            .into_response();
    }
    let length = Duration::from_millis(request.for_ms);
    if length > MAX_SPIKE {
        return (
            StatusCode::BAD_REQUEST,
            format!(
                "for_ms {}: at most {}\n",
                request.for_ms,
                MAX_SPIKE.as_millis()
            ),
        )
            .into_response();
    }
    let spike = Spike {
        multiplier: request.multiplier,
        until: generator.started.elapsed() + length,
    };
    if let Ok(mut current) = generator.spike.lock() {
        *current = Some(spike);
    }
    eprintln!(
        "load generator: rate x{} for {} ms",
        request.multiplier, request.for_ms
    );
    Json(generator.state()).into_response()
}

async fn metrics(State(generator): State<Arc<Generator>>) -> impl IntoResponse {
    generator.target.set(generator.state().target_rps);
    let mut out = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut out, &generator.registry);
    ([("content-type", "text/plain; version=0.0.4")], out)
}
