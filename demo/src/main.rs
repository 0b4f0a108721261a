//! A demo service for immune: a small HTTP service that behaves like a real one and can be
//! broken on purpose.
//!
//! - `GET /` does the service's work. It holds one of `CAPACITY` slots for `WORK_MS` of
//!   service time (a sleep: I/O-bound work, so a service serves about
//!   `CAPACITY * 1000 / WORK_MS` requests a second); up to `QUEUE` more requests wait for a
//!   slot (the wait is part of their latency), and any beyond that get 503 at once. Then it
//!   calls each upstream (`UPSTREAMS`) in order, each call on the next of the upstream's
//!   replicas: the name is resolved again at most once a second and the calls go round every
//!   address it has (a replica with the same network alias gets its share within a second),
//!   with the name as the `Host` header.
//! - `GET /health` answers 200 while the service is well.
//! - `GET /metrics`: `demo_http_requests_total{status}`, the latency histogram
//!   `demo_http_request_duration_seconds`, `demo_http_in_flight_requests`,
//!   `demo_capacity_slots`, `demo_queue_depth`, `demo_upstream_addresses{upstream}`,
//!   `demo_upstream_resolve_failures_total{upstream}` (the last good addresses stand).
//! - `POST /fault` with `{"mode": "crash" | "hang" | "latency" | "errors" | "memory_leak" |
//!   "cpu_burn" | "none", ...}` simulates a fault; `/fault` itself keeps answering so a fault
//!   can be cleared. A hang or added latency comes before the slot (it does not use up
//!   capacity). `memory_leak` holds `leak_mb_per_s` (10) more MiB every second up to
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
//!   `POST /admin/block {"state": "on"|"off"}` blocks, while on, every client the request
//!   screen refused 3 times within 10 s (403 before the screen; users never refused are
//!   untouched); `GET /admin` shows them. In `/metrics`: `demo_shed_requests_total{reason}`
//!   (`throttled`, `circuit_open`, `overloaded`), `demo_admin_throttle_rps`,
//!   `demo_admin_circuit_open`, `demo_admin_feature_flag{flag}`,
//!   `demo_blocked_requests_total`, `demo_admin_blocked_sources`.
//!
//! Environment: `SERVICE_NAME`, `PORT` (8080), `UPSTREAMS` (comma-separated base URLs),
//! `CAPACITY` (8), `WORK_MS` (20), `QUEUE` (32), `DRAIN_MS` (0): how long it keeps serving
//! after SIGTERM before it exits, like a service that drains its connections. A bad value
//! stops it at start with a message naming the variable.
//!
//! `immune-demo-service --loadgen <url>` is the load generator instead (module `loadgen`):
//! it sends to that URL only, at a rate that follows a profile (module `profile`: `--rps`
//! base, a daily cycle `--cycle-s`/`--cycle-amplitude`, bursts `--burst-every-s`/`--burst-s`/
//! `--burst-multiplier`, a quiet period `--quiet-every-s`/`--quiet-s`), at most
//! `--max-in-flight` requests at once, and serves `--listen` (0.0.0.0:8089): `POST /load
//! {"multiplier": m, "for_ms": d}` multiplies the rate for d ms, `GET /load`, `/metrics`.

use anyhow::Context;
use clap::Parser;
use immune_demo::{LoadgenConfig, ServiceConfig};

#[derive(Debug, Parser)]
#[command(
    name = "immune-demo-service",
    about = "A demo service, or its load generator"
)]
struct Cli {
    /// Be the load generator, sending to this URL (the entry point), instead of a service.
    #[arg(long, value_name = "URL")]
    loadgen: Option<reqwest::Url>,
    #[command(flatten)]
    load: LoadgenConfig,
}

/// SIGTERM or Ctrl-C.
async fn stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(url) = cli.loadgen {
        cli.load.validate()?;
        let listener = tokio::net::TcpListener::bind(cli.load.listen)
            .await
            .with_context(|| format!("--listen {}", cli.load.listen))?;
        eprintln!(
            "load generator: {} req/s base (peak {:.0}) to {url}, control on {}",
            cli.load.profile.base_rps,
            cli.load.profile.peak_rps(),
            cli.load.listen
        );
        immune_demo::loadgen::run(url, cli.load, listener, stop_signal()).await?;
        return Ok(());
    }
    let config = ServiceConfig::from_vars(|key| std::env::var(key).ok())?;
    let name = config.name.clone();
    let port = config.port;
    let limits = config.limits;
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
        .await
        .with_context(|| format!("PORT={port}"))?;
    eprintln!(
        "{name} listening on :{port} ({} slots of {:?}, queue {}: about {:.0} req/s)",
        limits.slots,
        limits.work,
        limits.queue,
        limits.throughput()
    );
    immune_demo::service::serve(config, listener, stop_signal()).await?;
    Ok(())
}
