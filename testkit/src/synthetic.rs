//! Synthetic scrape targets on loopback, for the collector's scale benchmark, its bad-input
//! tests and the pipeline's soak test.
//!
//! [`exposition`] writes a realistic exposition of a chosen number of series (request
//! counters by method, route and status, latency histograms, a Go-style summary, process
//! gauges), whose counters grow with a tick. [`SyntheticTarget`] serves `/metrics` and
//! `/health` on its own loopback port and can be told to misbehave (malformed or truncated
//! text, a huge body, no answer, gone), so tests see what the collector does with each.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const ROUTES: [&str; 10] = [
    "/",
    "/orders",
    "/orders/:id",
    "/cart",
    "/checkout",
    "/login",
    "/logout",
    "/search",
    "/items/:id",
    "/health",
];
const METHODS: [&str; 2] = ["GET", "POST"];
const STATUSES: [&str; 5] = ["200", "201", "404", "500", "503"];
const BOUNDS: [&str; 11] = [
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10",
];

/// A realistic exposition of exactly `series` samples (at least about 400: the request
/// counters, histograms, summary and process gauges; the rest are per-shard counters).
/// Counters grow with `seconds` (since the target started), 5xx are about 2% of requests,
/// latencies around 20 ms.
pub fn exposition(series: usize, seconds: f64) -> String {
    let mut out = String::with_capacity(series * 90);
    let mut written = 0usize;
    let t = seconds;
    let tick = seconds as u64;
    out.push_str("# HELP http_requests_total Requests served, by method, route and status.\n");
    out.push_str("# TYPE http_requests_total counter\n");
    for (r, route) in ROUTES.iter().enumerate() {
        for method in METHODS {
            for status in STATUSES {
                let share = match status {
                    "200" => 0.9,
                    "201" => 0.05,
                    "404" => 0.03,
                    _ => 0.01,
                };
                let v = (t * 10.0 * share * (r + 1) as f64).floor();
                let _ = writeln!(
                    out,
                    "http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {v}"
                );
                written += 1;
            }
        }
    }
    out.push_str("# HELP http_request_duration_seconds Request latency.\n");
    out.push_str("# TYPE http_request_duration_seconds histogram\n");
    for route in ROUTES {
        for method in METHODS {
            let total = (t * 10.0).floor();
            for (i, le) in BOUNDS.iter().enumerate() {
                let share = [
                    0.05, 0.2, 0.6, 0.85, 0.95, 0.98, 0.99, 0.995, 0.999, 1.0, 1.0,
                ][i];
                let _ = writeln!(
                    out,
                    "http_request_duration_seconds_bucket{{method=\"{method}\",route=\"{route}\",le=\"{le}\"}} {}",
                    (total * share).floor()
                );
            }
            let _ = writeln!(
                out,
                "http_request_duration_seconds_bucket{{method=\"{method}\",route=\"{route}\",le=\"+Inf\"}} {total}"
            );
            let _ = writeln!(
                out,
                "http_request_duration_seconds_sum{{method=\"{method}\",route=\"{route}\"}} {}",
                total * 0.021
            );
            let _ = writeln!(
                out,
                "http_request_duration_seconds_count{{method=\"{method}\",route=\"{route}\"}} {total}"
            );
            written += BOUNDS.len() + 3;
        }
    }
    out.push_str("# HELP http_in_flight_requests Requests being served.\n");
    out.push_str("# TYPE http_in_flight_requests gauge\n");
    let _ = writeln!(out, "http_in_flight_requests {}", tick % 7);
    out.push_str("# HELP go_gc_duration_seconds A summary of the pause duration of GC cycles.\n");
    out.push_str("# TYPE go_gc_duration_seconds summary\n");
    for q in ["0", "0.25", "0.5", "0.75", "1"] {
        let _ = writeln!(out, "go_gc_duration_seconds{{quantile=\"{q}\"}} 4.2e-05");
    }
    let _ = writeln!(out, "go_gc_duration_seconds_sum {}", t * 0.0001);
    let _ = writeln!(out, "go_gc_duration_seconds_count {tick}");
    out.push_str("# TYPE process_resident_memory_bytes gauge\n");
    let _ = writeln!(out, "process_resident_memory_bytes 2.4576e+07");
    out.push_str("# TYPE process_cpu_seconds_total counter\n");
    let _ = writeln!(out, "process_cpu_seconds_total {}", t * 0.01);
    out.push_str("# TYPE process_start_time_seconds gauge\n");
    let _ = writeln!(out, "process_start_time_seconds 1.7e+09");
    written += 1 + 7 + 3;
    out.push_str("# HELP app_shard_operations_total Operations per storage shard.\n");
    out.push_str("# TYPE app_shard_operations_total counter\n");
    let mut shard = 0;
    while written < series {
        let _ = writeln!(
            out,
            "app_shard_operations_total{{shard=\"{shard}\",op=\"read\"}} {} {}",
            t * 3.0 + shard as f64,
            1_700_000_000_000u64 + tick * 1000
        );
        shard += 1;
        written += 1;
    }
    out
}

/// How a synthetic target answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Behaviour {
    /// A well-formed exposition of this many series.
    Healthy { series: usize },
    /// Any fixed text (real-world fixtures, malformed text).
    Text(String),
    /// A well-formed exposition cut in the middle of a line.
    Truncated,
    /// A body of this many bytes.
    Huge { bytes: usize },
    /// Accepts the request and never answers.
    Hang,
}

#[derive(Debug)]
struct Shared {
    behaviour: Mutex<Behaviour>,
    started: Instant,
}

/// One target on its own loopback port, serving until dropped.
#[derive(Debug)]
pub struct SyntheticTarget {
    pub address: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl SyntheticTarget {
    pub async fn start(behaviour: Behaviour) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let address = listener.local_addr()?;
        let shared = Arc::new(Shared {
            behaviour: Mutex::new(behaviour),
            started: Instant::now(),
        });
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/health", get(health))
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            address,
            shared,
            server,
        })
    }

    /// From now on, answer like this.
    pub fn set(&self, behaviour: Behaviour) {
        if let Ok(mut b) = self.shared.behaviour.lock() {
            *b = behaviour;
        }
    }

    /// Stops listening: the target vanishes (connections are refused).
    pub fn vanish(&self) {
        self.server.abort();
    }
}

impl Drop for SyntheticTarget {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn behaviour(shared: &Shared) -> Behaviour {
    shared
        .behaviour
        .lock()
        .map(|b| b.clone())
        .unwrap_or(Behaviour::Hang)
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let seconds = shared.started.elapsed().as_secs_f64();
    match behaviour(&shared) {
        Behaviour::Healthy { series } => exposition(series, seconds).into_response(),
        Behaviour::Text(text) => text.into_response(),
        Behaviour::Truncated => {
            let text = exposition(500, seconds);
            let cut = text.len() / 2;
            let cut = (cut..text.len())
                .find(|&i| text.is_char_boundary(i) && text.as_bytes()[i] != b'\n')
                .unwrap_or(cut);
            text[..cut].to_string().into_response()
        }
        Behaviour::Huge { bytes } => {
            let line = "padding_series_total{pad=\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"} 1\n";
            line.repeat(bytes / line.len() + 1).into_response()
        }
        Behaviour::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
    }
}

async fn health(State(shared): State<Arc<Shared>>) -> Response {
    match behaviour(&shared) {
        Behaviour::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        _ => "ok".into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sample lines: neither blank nor a `# HELP` / `# TYPE` comment.
    fn samples(text: &str) -> usize {
        text.lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .count()
    }

    #[test]
    fn writes_exactly_the_series_asked_for() {
        for series in [500, 1000, 2500] {
            assert_eq!(samples(&exposition(series, 42.0)), series);
        }
    }

    #[test]
    fn counters_grow_with_time() {
        assert_ne!(exposition(500, 1.0), exposition(500, 100.0));
        assert_eq!(exposition(500, 7.0), exposition(500, 7.0));
    }
}
