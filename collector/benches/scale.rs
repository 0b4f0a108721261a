//! How fast the collector reads expositions and how many targets one collector serves.
//!
//! `cargo bench -p immune-collector --bench scale` prints:
//! 1. exposition parsing on one core, realistic 1,000-series payload: prometheus-parse, the
//!    collector's strict reader, and the whole feature read (samples/s and MB/s);
//! 2. 200 synthetic targets of 1,000 series on loopback (served by a child process, so their
//!    CPU is not counted) scraped at 1 s by one collector publishing to a real nats-server:
//!    the collector's CPU (cores), resident memory, snapshots/s and scrape failures.
//!
//! Environment: `BENCH_TARGETS` (200), `BENCH_SERIES` (1000), `BENCH_SECONDS` (20).

use std::hint::black_box;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use immune_collector::{exposition as reader, features, Config, StaticTarget, STAGE};
use immune_runtime::{BusConfig, Telemetry};
use immune_testkit::synthetic::{exposition, Behaviour, SyntheticTarget};
use immune_testkit::RunningStage;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve-targets") {
        serve_targets(env("BENCH_TARGETS", 200), env("BENCH_SERIES", 1000));
        return;
    }
    parsing(env("BENCH_SERIES", 1000));
    scale(
        env("BENCH_TARGETS", 200),
        env("BENCH_SERIES", 1000),
        env("BENCH_SECONDS", 20),
    );
}

/// Runs `f` repeatedly for about two seconds; returns runs per second.
fn rate(mut f: impl FnMut()) -> f64 {
    for _ in 0..20 {
        f();
    }
    let started = Instant::now();
    let mut runs = 0u64;
    while started.elapsed() < Duration::from_secs(2) {
        f();
        runs += 1;
    }
    runs as f64 / started.elapsed().as_secs_f64()
}

fn parsing(series: usize) {
    let text = exposition(series, 1234.5);
    let samples = reader::read(&text, |_| {}).expect("valid") as f64;
    let mb = text.len() as f64 / 1e6;
    println!(
        "## exposition parsing, one core: {series} series, {} bytes, {samples} samples",
        text.len()
    );
    println!("| parser | samples/s | MB/s |");
    println!("|---|---:|---:|");
    let names = features::SeriesNames::default();
    let runs = [
        (
            "prometheus-parse 0.2.5",
            rate(|| {
                let lines = text.lines().map(|l| Ok(l.to_string()));
                black_box(prometheus_parse::Scrape::parse(lines).expect("parses"));
            }),
        ),
        (
            "immune exposition::read",
            rate(|| {
                let mut sum = 0.0;
                black_box(reader::read(black_box(&text), |s| sum += s.value).expect("valid"));
                black_box(sum);
            }),
        ),
        (
            "immune features::read (reader + feature extraction)",
            rate(|| {
                black_box(features::read(black_box(&text), &names, 0).expect("valid"));
            }),
        ),
    ];
    for (name, per_second) in runs {
        println!(
            "| {name} | {:.2} M | {:.0} |",
            per_second * samples / 1e6,
            per_second * mb
        );
    }
    println!();
}

/// The child process: `targets` synthetic targets; prints their addresses, serves until
/// stdin closes.
fn serve_targets(targets: usize, series: usize) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut running = Vec::with_capacity(targets);
        let mut out = std::io::stdout().lock();
        for _ in 0..targets {
            let t = SyntheticTarget::start(Behaviour::Healthy { series })
                .await
                .expect("bind a loopback port");
            let _ = writeln!(out, "{}", t.address);
            running.push(t);
        }
        let _ = writeln!(out, "ready");
        let _ = out.flush();
        drop(out);
        let _ = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        })
        .await;
    });
}

/// CPU time of this process so far (user + system), from /proc.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

fn resident_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn scale(targets: usize, series: usize, seconds: usize) {
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .arg("serve-targets")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the target process");
    let stdout = child.stdout.take().expect("stdout");
    let mut addresses = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("line");
        if line == "ready" {
            break;
        }
        addresses.push(line);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let nats = immune_testkit::NatsServer::start().await;
        let config = Config {
            nats: BusConfig {
                url: nats.url(),
                ..Default::default()
            },
            discover_docker: false,
            targets: addresses
                .iter()
                .enumerate()
                .map(|(i, a)| StaticTarget {
                    service: format!("svc{}", i % 50),
                    instance: Some(format!("target-{i}")),
                    address: a.clone(),
                    metrics_path: "/metrics".into(),
                    health_path: "/health".into(),
                })
                .collect(),
            ..Default::default()
        };
        let collector = RunningStage::start("the collector", Telemetry::new(STAGE), |t, s| {
            immune_collector::run(config, t, s)
        });
        let telemetry = collector.telemetry.clone();
        // Warm up: connections, first scrapes.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (cpu0, wall0) = (cpu_time(), Instant::now());
        let scrapes0 = telemetry.count("acted", "scrape");
        let published0 = telemetry.count("published", "metric_snapshot");
        let mut peak_rss: f64 = 0.0;
        for _ in 0..seconds {
            tokio::time::sleep(Duration::from_secs(1)).await;
            peak_rss = peak_rss.max(resident_mib());
        }
        let wall = wall0.elapsed().as_secs_f64();
        let cores = (cpu_time() - cpu0).as_secs_f64() / wall;
        let scrapes = (telemetry.count("acted", "scrape") - scrapes0) as f64 / wall;
        let published =
            (telemetry.count("published", "metric_snapshot") - published0) as f64 / wall;
        let failures: u64 = [
            "scrape_timeout",
            "scrape_unreachable",
            "scrape_malformed",
            "scrape_too_large",
            "publish_snapshot",
        ]
        .iter()
        .map(|k| telemetry.count("failed", k))
        .sum();
        collector.stop().await;
        println!(
            "## one collector, {targets} targets x {series} series at 1 s, {seconds} s measured"
        );
        println!("| figure | value |");
        println!("|---|---:|");
        println!("| collector CPU (cores) | {cores:.3} |");
        println!(
            "| samples parsed per second | {:.0} |",
            scrapes * series as f64
        );
        println!("| successful scrapes per second | {scrapes:.1} |");
        println!("| snapshots published per second (instances + roll-ups) | {published:.1} |");
        println!("| scrape or publish failures | {failures} |");
        println!("| resident memory, peak (MiB) | {peak_rss:.1} |");
    });
    drop(child.stdin.take());
    let _ = child.wait();
}
