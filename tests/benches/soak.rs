//! The soak test: the whole pipeline under a steady synthetic load for a bounded time, to see
//! that memory stays flat and latency holds.
//!
//! `cargo bench -p immune-tests --bench soak` starts a real `nats-server`, a child process
//! serving `SOAK_SERVICES` synthetic services on loopback (one target each, `SOAK_SERIES`
//! series), and the five stages in this process (collector scraping every target at 1 s,
//! detector, decider, executor and chaos restricted to a project of their own, so nothing
//! real is acted on). `SOAK_FAULTY` targets misbehave in turn (hang, so the detector fires
//! `unresponsive` and the decider opens incidents; truncated expositions, so scrapes fail),
//! and a chaos request is sent every 10 s (rejected: no container). Every `SOAK_SAMPLE_SECS`
//! it prints one row: resident memory of this process and of nats-server, events/s per stage
//! (from each stage's own counters), latency (snapshot published → anomaly published, anomaly
//! → incident opened, snapshot published → seen by a subscriber), and the durable consumers'
//! pending counts. At the end, a verdict; the exit code is 1 when it fails:
//! - memory flat: the highest RSS of the second half at most `SOAK_MAX_GROWTH` (0.10) above
//!   the RSS at half time;
//! - latency: p99 of snapshot → anomaly within `SOAK_P99_MS` (2000), and anomalies seen;
//! - the detector keeps up: at most 5 s of snapshots pending at the end;
//! - every stage stops cleanly.
//!
//! Environment: `SOAK_SECS` (300), `SOAK_SERVICES` (200), `SOAK_SERIES` (1000),
//! `SOAK_FAULTY` (10), `SOAK_SAMPLE_SECS` (10), `SOAK_HISTORY` (120): the detector's learned
//! history per service; the shipped 3600 keeps growing for the first hour by design, so a
//! shorter soak uses a history that fills during the first half.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use immune_collector::{exposition, StaticTarget};
use immune_nats::envelope::now_ms;
use immune_nats::streams::{self, ConsumerSpec};
use immune_nats::{
    decode, subject, AnomalyState, ChaosRequest, Event, FaultKind, IncidentState, ServiceName,
    Stage,
};
use immune_testkit::synthetic::{Behaviour, SyntheticTarget};
use immune_testkit::{unique, NatsServer};
use immune_tests::{Pipeline, PipelineConfig};

#[derive(Debug, Clone)]
struct Settings {
    secs: u64,
    services: usize,
    series: usize,
    faulty: usize,
    sample_secs: u64,
    history: usize,
    max_growth: f64,
    p99_ms: f64,
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl Settings {
    fn from_env() -> Self {
        let services = env("SOAK_SERVICES", 200usize).max(1);
        Self {
            secs: env("SOAK_SECS", 300u64).max(20),
            services,
            series: env("SOAK_SERIES", 1000usize),
            faulty: env("SOAK_FAULTY", 10usize).min(services),
            sample_secs: env("SOAK_SAMPLE_SECS", 10u64).max(1),
            history: env("SOAK_HISTORY", 120usize).max(20),
            max_growth: env("SOAK_MAX_GROWTH", 0.10f64),
            p99_ms: env("SOAK_P99_MS", 2000f64),
        }
    }
}

const CONSUMERS: [ConsumerSpec; 5] = [
    streams::DETECTOR_METRICS,
    streams::DETECTOR_EVENTS,
    streams::DECIDER,
    streams::EXECUTOR,
    streams::CHAOS,
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let settings = Settings::from_env();
    if args.get(1).map(String::as_str) == Some("serve-targets") {
        serve_targets(settings.services, settings.series);
        return;
    }
    // `cargo bench` passes `--bench`; the child is this same binary.
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .arg("serve-targets")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the target process");
    let stdout = child.stdout.take().expect("stdout");
    let mut addresses = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("a line from the target process");
        if line == "ready" {
            break;
        }
        addresses.push(line);
    }
    assert_eq!(addresses.len(), settings.services, "targets started");
    let control = child.stdin.take().expect("stdin");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let passed = runtime.block_on(soak(&settings, addresses, control));
    let _ = child.kill();
    let _ = child.wait();
    if !passed {
        std::process::exit(1);
    }
}

/// The child process: one synthetic target per service; prints their addresses, then obeys
/// `<index> healthy|hang|truncated` lines on stdin until it closes.
fn serve_targets(targets: usize, series: usize) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut running = Vec::with_capacity(targets);
        {
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
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        while let Some(line) = rx.recv().await {
            let mut words = line.split_whitespace();
            let (Some(i), Some(how)) = (words.next(), words.next()) else {
                continue;
            };
            let Some(target) = i.parse::<usize>().ok().and_then(|i| running.get(i)) else {
                continue;
            };
            target.set(match how {
                "hang" => Behaviour::Hang,
                "truncated" => Behaviour::Truncated,
                _ => Behaviour::Healthy { series },
            });
        }
    });
}

/// Latencies in whole milliseconds: kept per sampling window, and for the whole run in a
/// fixed histogram (1 ms buckets up to 60 s), so that the soak's own memory stays flat.
#[derive(Debug)]
struct Latency {
    window: Vec<u32>,
    all: Vec<u64>,
}

impl Latency {
    fn new() -> Self {
        Self {
            window: Vec::new(),
            all: vec![0; 60_001],
        }
    }

    fn record(&mut self, ms: u64) {
        let ms = ms.min(60_000);
        self.window.push(ms as u32);
        self.all[ms as usize] += 1;
    }

    /// (count, p50, p99, max) of the window, which starts again.
    fn take_window(&mut self) -> (usize, u32, u32, u32) {
        let mut w = std::mem::take(&mut self.window);
        w.sort_unstable();
        let q = |p: f64| {
            w.get(((w.len() as f64 * p).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or(0)
        };
        (w.len(), q(0.5), q(0.99), w.last().copied().unwrap_or(0))
    }

    fn total(&self) -> u64 {
        self.all.iter().sum()
    }

    fn quantile(&self, p: f64) -> u64 {
        let total = self.total();
        let rank = ((total as f64 * p).ceil() as u64).max(1);
        let mut seen = 0;
        for (ms, n) in self.all.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return ms as u64;
            }
        }
        0
    }
}

/// What the observer saw on the bus.
#[derive(Debug)]
struct Observed {
    /// (instance, observed_ms) of each recent snapshot → when it was published.
    snapshots: HashMap<(String, u64), u64>,
    /// Correlation id of each recent firing anomaly → when it was published.
    firing: HashMap<String, u64>,
    snapshot_to_anomaly: Latency,
    anomaly_to_incident: Latency,
    snapshot_on_bus: Latency,
    anomalies: u64,
    incidents: u64,
}

async fn observe(client: async_nats::Client, observed: Arc<Mutex<Observed>>) {
    let mut subscriptions = Vec::new();
    for filter in [
        subject::METRICS_ALL,
        subject::ANOMALIES_ALL,
        subject::INCIDENTS_ALL,
    ] {
        subscriptions.push(client.subscribe(filter).await.expect("subscribe"));
    }
    let mut all = futures::stream::select_all(subscriptions);
    while let Some(message) = all.next().await {
        let received = now_ms();
        let Ok(envelope) = decode(&message.payload) else {
            continue;
        };
        let Ok(mut o) = observed.lock() else {
            return;
        };
        let published = envelope.timestamp_ms;
        match envelope.body {
            Event::MetricSnapshot(s) => {
                o.snapshot_on_bus.record(received.saturating_sub(published));
                o.snapshots.insert((s.instance, s.observed_ms), published);
            }
            Event::Anomaly(a) if a.state == AnomalyState::Firing => {
                o.anomalies += 1;
                if let Some(cause) = o.snapshots.get(&(a.instance.clone(), a.started_ms)) {
                    let ms = published.saturating_sub(*cause);
                    o.snapshot_to_anomaly.record(ms);
                }
                if let Some(id) = envelope.correlation_id {
                    o.firing.insert(id, published);
                }
            }
            Event::Incident(i) if i.state == IncidentState::Opened => {
                o.incidents += 1;
                let cause = envelope
                    .correlation_id
                    .as_ref()
                    .and_then(|id| o.firing.get(id).copied());
                if let Some(cause) = cause {
                    o.anomaly_to_incident
                        .record(published.saturating_sub(cause));
                }
            }
            _ => {}
        }
    }
}

/// The stage's own counters, summed over details: `(received, published, dead_lettered, failed)`.
fn stage_counts(pipeline: &Pipeline, stage: Stage) -> [u64; 4] {
    let text = pipeline.telemetry(stage).render();
    let mut out = [0u64; 4];
    let _ = exposition::read(&text, |s| {
        if s.name != "immune_stage_events_total" {
            return;
        }
        let slot = match s.label("event").as_deref() {
            Some("received") => 0,
            Some("published") => 1,
            Some("dead_lettered") => 2,
            Some("failed") => 3,
            _ => return,
        };
        out[slot] += s.value as u64;
    });
    out
}

fn status_kib(pid: &str, field: &str) -> Option<f64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
}

fn rss_mib(pid: &str) -> f64 {
    status_kib(pid, "VmRSS:").unwrap_or(0.0) / 1024.0
}

/// The nats-server this process started.
fn nats_server_pid() -> Option<String> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid = e.file_name().to_string_lossy().into_owned();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (name, rest) = stat.split_once(") ")?;
        let parent = rest.split_whitespace().nth(1)?;
        (name.ends_with("(nats-server") && parent == me).then_some(pid)
    })
}

/// CPU time of this process so far, in seconds (user + system).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum::<f64>()
        / 100.0
}

/// One sampling row.
#[derive(Debug, Clone)]
struct Row {
    at_s: u64,
    rss: f64,
    nats_rss: f64,
    cores: f64,
    /// Per stage, events/s: received, published.
    rates: Vec<(Stage, f64, f64)>,
    snapshot_to_anomaly: (usize, u32, u32, u32),
    anomaly_to_incident: (usize, u32, u32, u32),
    on_bus: (usize, u32, u32, u32),
    pending: Vec<u64>,
}

const STAGES: [Stage; 5] = [
    Stage::Collector,
    Stage::Detector,
    Stage::Decider,
    Stage::Executor,
    Stage::Chaos,
];

async fn soak(settings: &Settings, addresses: Vec<String>, control: ChildStdin) -> bool {
    let nats = NatsServer::start().await;
    let project = unique("soak");
    let mut config = PipelineConfig::new(&nats.url(), &project);
    config.collector.discover_docker = false;
    config.collector.docker_stats = false;
    config.collector.targets = addresses
        .iter()
        .enumerate()
        .map(|(i, address)| StaticTarget {
            service: format!("soak{i:04}"),
            instance: Some(format!("soak{i:04}-1")),
            address: address.clone(),
            metrics_path: "/metrics".into(),
            health_path: "/health".into(),
        })
        .collect();
    let learned = &mut config.detector.learned;
    learned.history = settings.history;
    learned.baseline = learned.baseline.min(settings.history / 2);
    learned.refit_every = learned.refit_every.min(settings.history / 2);
    let bus = immune_tests::client_bus(&nats.url()).await;
    let observed = Arc::new(Mutex::new(Observed {
        snapshots: HashMap::new(),
        firing: HashMap::new(),
        snapshot_to_anomaly: Latency::new(),
        anomaly_to_incident: Latency::new(),
        snapshot_on_bus: Latency::new(),
        anomalies: 0,
        incidents: 0,
    }));
    let observer = tokio::spawn(observe(bus.client().clone(), observed.clone()));
    let pipeline = Pipeline::start(config);
    let faults = tokio::spawn(misbehave(settings.clone(), control));

    println!(
        "## soak: {} services x {} series at 1 s, {} misbehaving in turn, {} s, one row every {} s",
        settings.services, settings.series, settings.faulty, settings.secs, settings.sample_secs
    );
    println!("| t (s) | RSS MiB | nats MiB | CPU cores | collector pub/s | detector recv/s | detector pub/s | decider recv/s | decider pub/s | executor recv/s | chaos recv/s | snapshot→anomaly n, p50, p99 ms | anomaly→incident n, p99 ms | on bus p99 ms | pending det-metrics, det-events, decider, executor, chaos |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---|");
    let nats_pid = nats_server_pid();
    let started = Instant::now();
    let mut last_counts: HashMap<Stage, [u64; 4]> = STAGES
        .iter()
        .map(|s| (*s, stage_counts(&pipeline, *s)))
        .collect();
    let mut last_cpu = cpu_seconds();
    let mut last_at = Instant::now();
    let mut rows: Vec<Row> = Vec::new();
    let mut chaos_every = tokio::time::interval(Duration::from_secs(10));
    let mut sample_every = tokio::time::interval(Duration::from_secs(settings.sample_secs));
    sample_every.tick().await;
    chaos_every.tick().await;
    let mut chaos_sent = 0usize;
    loop {
        tokio::select! {
            _ = chaos_every.tick() => {
                // No container carries this service: chaos must reject it, and say why.
                let service = ServiceName::new(format!("soak{:04}", chaos_sent % settings.services)).expect("valid");
                chaos_sent += 1;
                let request = ChaosRequest { run_id: None, service, fault: FaultKind::Kill, duration_ms: 1_000, params: Default::default() };
                if let Err(e) = bus.publish(None, Event::ChaosRequest(request)).await {
                    eprintln!("chaos request not sent: {e}");
                }
            }
            _ = sample_every.tick() => {
                let wall = last_at.elapsed().as_secs_f64();
                last_at = Instant::now();
                let cpu = cpu_seconds();
                let cores = (cpu - last_cpu) / wall;
                last_cpu = cpu;
                let mut rates = Vec::new();
                for stage in STAGES {
                    let now = stage_counts(&pipeline, stage);
                    let before = last_counts.insert(stage, now).unwrap_or([0; 4]);
                    rates.push((
                        stage,
                        (now[0] - before[0]) as f64 / wall,
                        (now[1] - before[1]) as f64 / wall,
                    ));
                }
                let mut pending = Vec::new();
                for spec in CONSUMERS {
                    let n = match bus.jetstream().get_stream(spec.stream.name).await {
                        Ok(stream) => stream
                            .consumer_info(spec.durable)
                            .await
                            .map(|i| i.num_pending + i.num_ack_pending as u64)
                            .unwrap_or(u64::MAX),
                        Err(_) => u64::MAX,
                    };
                    pending.push(n);
                }
                let (s2a, a2i, on_bus) = {
                    let mut o = observed.lock().expect("observer state");
                    let horizon = now_ms().saturating_sub(60_000);
                    o.snapshots.retain(|(_, observed_ms), _| *observed_ms >= horizon);
                    if o.firing.len() > 10_000 {
                        o.firing.clear();
                    }
                    (
                        o.snapshot_to_anomaly.take_window(),
                        o.anomaly_to_incident.take_window(),
                        o.snapshot_on_bus.take_window(),
                    )
                };
                let row = Row {
                    at_s: started.elapsed().as_secs(),
                    rss: rss_mib("self"),
                    nats_rss: nats_pid.as_deref().map(rss_mib).unwrap_or(0.0),
                    cores,
                    rates,
                    snapshot_to_anomaly: s2a,
                    anomaly_to_incident: a2i,
                    on_bus,
                    pending,
                };
                print_row(&row);
                let done = row.at_s >= settings.secs;
                rows.push(row);
                if done {
                    break;
                }
            }
        }
    }
    faults.abort();
    let stopped = tokio::time::timeout(Duration::from_secs(60), pipeline.stop()).await;
    observer.abort();
    verdict(settings, &rows, &observed, stopped.is_ok(), chaos_sent)
}

fn print_row(r: &Row) {
    let rate = |stage: Stage, published: bool| {
        r.rates
            .iter()
            .find(|(s, _, _)| *s == stage)
            .map(|(_, recv, publ)| if published { *publ } else { *recv })
            .unwrap_or(0.0)
    };
    let pending: Vec<String> = r
        .pending
        .iter()
        .map(|p| {
            if *p == u64::MAX {
                "?".into()
            } else {
                p.to_string()
            }
        })
        .collect();
    println!(
        "| {} | {:.1} | {:.1} | {:.2} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {}, {}, {} | {}, {} | {} | {} |",
        r.at_s,
        r.rss,
        r.nats_rss,
        r.cores,
        rate(Stage::Collector, true),
        rate(Stage::Detector, false),
        rate(Stage::Detector, true),
        rate(Stage::Decider, false),
        rate(Stage::Decider, true),
        rate(Stage::Executor, false),
        rate(Stage::Chaos, false),
        r.snapshot_to_anomaly.0,
        r.snapshot_to_anomaly.1,
        r.snapshot_to_anomaly.2,
        r.anomaly_to_incident.0,
        r.anomaly_to_incident.2,
        r.on_bus.2,
        pending.join(", "),
    );
}

/// The first `faulty` targets misbehave, each on its own 40 s cycle (their starts spread
/// over the cycle): 15 s of trouble, then healthy. Even ones hang (unresponsive: an anomaly,
/// an incident), odd ones serve a truncated exposition (failed scrapes).
async fn misbehave(settings: Settings, mut control: ChildStdin) {
    const CYCLE: u64 = 40;
    const TROUBLE: u64 = 15;
    if settings.faulty == 0 {
        return;
    }
    // Let the detector see every target healthy first.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let mut troubled = vec![false; settings.faulty];
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    for second in 0u64.. {
        tick.tick().await;
        for (target, was) in troubled.iter_mut().enumerate() {
            let offset = target as u64 * CYCLE / settings.faulty as u64;
            let now = (second + CYCLE - offset) % CYCLE < TROUBLE && second >= offset;
            if now != *was {
                let how = match (now, target % 2) {
                    (false, _) => "healthy",
                    (true, 0) => "hang",
                    (true, _) => "truncated",
                };
                let _ = writeln!(control, "{target} {how}");
                let _ = control.flush();
                *was = now;
            }
        }
    }
}

fn verdict(
    settings: &Settings,
    rows: &[Row],
    observed: &Mutex<Observed>,
    stopped: bool,
    chaos_sent: usize,
) -> bool {
    let o = observed.lock().expect("observer state");
    let half = settings.secs / 2;
    let mid = rows
        .iter()
        .find(|r| r.at_s >= half)
        .map(|r| r.rss)
        .unwrap_or(0.0);
    let peak_after = rows
        .iter()
        .filter(|r| r.at_s >= half)
        .map(|r| r.rss)
        .fold(0.0, f64::max);
    let growth = if mid > 0.0 {
        (peak_after - mid) / mid
    } else {
        f64::INFINITY
    };
    let nats_mid = rows
        .iter()
        .find(|r| r.at_s >= half)
        .map(|r| r.nats_rss)
        .unwrap_or(0.0);
    let nats_end = rows.last().map(|r| r.nats_rss).unwrap_or(0.0);
    let p50 = o.snapshot_to_anomaly.quantile(0.5);
    let p99 = o.snapshot_to_anomaly.quantile(0.99);
    let on_bus_p99 = o.snapshot_on_bus.quantile(0.99);
    let a2i_p99 = o.anomaly_to_incident.quantile(0.99);
    let snapshots_per_s = rows
        .iter()
        .filter(|r| r.at_s >= half)
        .map(|r| {
            r.rates
                .iter()
                .find(|(s, _, _)| *s == Stage::Collector)
                .map(|x| x.2)
                .unwrap_or(0.0)
        })
        .sum::<f64>()
        / rows.iter().filter(|r| r.at_s >= half).count().max(1) as f64;
    let detector_pending = rows.last().and_then(|r| r.pending.first().copied());
    let keeps_up = detector_pending.is_some_and(|p| (p as f64) <= 5.0 * snapshots_per_s.max(1.0));
    let memory_ok = growth <= settings.max_growth;
    let latency_ok = o.snapshot_to_anomaly.total() > 0 && (p99 as f64) <= settings.p99_ms;
    let cores = rows.iter().map(|r| r.cores).sum::<f64>() / rows.len().max(1) as f64;
    println!();
    println!("## verdict");
    println!("| check | measured | bound | |");
    println!("|---|---:|---:|---|");
    println!(
        "| RSS growth over the second half (pipeline process) | {:.1} % ({mid:.1} → peak {peak_after:.1} MiB) | {:.0} % | {} |",
        growth * 100.0,
        settings.max_growth * 100.0,
        ok(memory_ok)
    );
    println!(
        "| snapshot → anomaly p99 ({} anomalies matched of {} firing; p50 {p50} ms) | {p99} ms | {} ms | {} |",
        o.snapshot_to_anomaly.total(),
        o.anomalies,
        settings.p99_ms,
        ok(latency_ok)
    );
    println!(
        "| detector pending at the end (snapshots/s {snapshots_per_s:.0}) | {} | {:.0} | {} |",
        detector_pending
            .map(|p| p.to_string())
            .unwrap_or_else(|| "?".into()),
        5.0 * snapshots_per_s.max(1.0),
        ok(keeps_up)
    );
    println!(
        "| every stage stopped cleanly within 60 s | {stopped} | | {} |",
        ok(stopped)
    );
    println!(
        "| anomaly → incident opened p99 ({} incidents) | {a2i_p99} ms | | info |",
        o.incidents
    );
    println!("| snapshot published → seen by a subscriber p99 | {on_bus_p99} ms | | info |");
    println!("| nats-server RSS, half time → end | {nats_mid:.1} → {nats_end:.1} MiB | | info |");
    println!("| CPU of the pipeline process, mean | {cores:.2} cores | | info |");
    println!("| chaos requests sent (each rejected: no container) | {chaos_sent} | | info |");
    let passed = memory_ok && latency_ok && keeps_up && stopped;
    println!();
    println!("soak {}", if passed { "PASSED" } else { "FAILED" });
    passed
}

fn ok(b: bool) -> &'static str {
    if b {
        "ok"
    } else {
        "FAILED"
    }
}
