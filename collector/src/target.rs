//! Watching one target: every interval, probe `/health`, scrape `/metrics` and read Docker's
//! stats at the same time, each bounded in time (and the exposition in size), and publish one
//! snapshot. Each target has its own task, so a slow or hanging target delays nobody else.

use std::sync::Arc;
use std::time::{Duration, Instant};

use immune_nats::{
    envelope::now_ms, feature, ContainerState, Event, HealthProbe, MetricSnapshot, ScrapeOutcome,
    SnapshotScope,
};
use immune_runtime::telemetry::Observation;
use immune_runtime::{Bus, Shutdown};
use tokio::sync::{mpsc, watch};

use crate::features::{self, Counters, Reading, SeriesNames};
use crate::inventory::{Source, Target};
use crate::stats::{self, Cgroup, StatsError, Usage};
use crate::Config;

/// What every target task shares.
pub(crate) struct Context {
    pub scraper: Scraper,
    pub docker: Option<bollard::Docker>,
    /// Where the host's cgroup tree is; `None` when CPU and memory are not read.
    pub cgroup_root: Option<std::path::PathBuf>,
    pub bus: Bus,
    pub interval: Duration,
    /// Instance snapshots also go to the roll-up of their service.
    pub rollups: mpsc::Sender<MetricSnapshot>,
}

pub(crate) struct Scraper {
    client: reqwest::Client,
    probe_timeout: Duration,
    scrape_timeout: Duration,
    max_bytes: usize,
    series: SeriesNames,
}

/// Why a scrape gave nothing usable; a stable name for the failure counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScrapeFailure {
    Timeout,
    Unreachable,
    Status,
    TooLarge,
    NotUtf8,
    Malformed,
}

impl ScrapeFailure {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ScrapeFailure::Timeout => "scrape_timeout",
            ScrapeFailure::Unreachable => "scrape_unreachable",
            ScrapeFailure::Status => "scrape_status",
            ScrapeFailure::TooLarge => "scrape_too_large",
            ScrapeFailure::NotUtf8 => "scrape_not_utf8",
            ScrapeFailure::Malformed => "scrape_malformed",
        }
    }
}

/// A scrape's outcome, and its reading when it succeeded.
type Scraped = (ScrapeOutcome, Result<Reading, ScrapeFailure>);

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Scraper {
    pub(crate) fn new(config: &Config) -> Self {
        Self {
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(2)
                .build()
                .unwrap_or_default(),
            probe_timeout: Duration::from_millis(config.probe_timeout_ms),
            scrape_timeout: Duration::from_millis(config.scrape_timeout_ms),
            max_bytes: config.max_exposition_bytes,
            series: config.series.clone(),
        }
    }

    async fn probe(&self, url: &str) -> HealthProbe {
        let started = Instant::now();
        let result = self
            .client
            .get(url)
            .timeout(self.probe_timeout)
            .send()
            .await;
        let latency_ms = ms(started.elapsed());
        match result {
            Ok(r) => HealthProbe {
                ok: r.status().is_success(),
                status: Some(r.status().as_u16()),
                latency_ms,
                error: (!r.status().is_success()).then(|| format!("status {}", r.status())),
            },
            Err(e) => HealthProbe {
                ok: false,
                status: None,
                latency_ms,
                error: Some(if e.is_timeout() {
                    format!("no answer within {:?}", self.probe_timeout)
                } else {
                    e.to_string()
                }),
            },
        }
    }

    async fn scrape(&self, url: &str, at_ms: u64) -> Scraped {
        let started = Instant::now();
        let body = tokio::time::timeout(self.scrape_timeout, self.fetch(url)).await;
        let latency_ms = ms(started.elapsed());
        let failed = |kind: ScrapeFailure, error: String, bytes: usize| {
            let outcome = ScrapeOutcome {
                ok: false,
                samples: 0,
                bytes: bytes as u32,
                latency_ms,
                error: Some(error),
            };
            (outcome, Err(kind))
        };
        let text = match body {
            Err(_) => {
                let why = format!("no exposition within {:?}", self.scrape_timeout);
                return failed(ScrapeFailure::Timeout, why, 0);
            }
            Ok(Err((kind, why))) => return failed(kind, why, 0),
            Ok(Ok(text)) => text,
        };
        match features::read(&text, &self.series, at_ms) {
            Ok(reading) => {
                let outcome = ScrapeOutcome {
                    ok: true,
                    samples: reading.samples as u32,
                    bytes: text.len() as u32,
                    latency_ms,
                    error: None,
                };
                (outcome, Ok(reading))
            }
            Err(e) => failed(
                ScrapeFailure::Malformed,
                format!("malformed exposition: {e}"),
                text.len(),
            ),
        }
    }

    /// The body, refused past the size limit before it is all read.
    async fn fetch(&self, url: &str) -> Result<String, (ScrapeFailure, String)> {
        let mut response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| (ScrapeFailure::Unreachable, e.to_string()))?;
        if !response.status().is_success() {
            let why = format!("status {}", response.status());
            return Err((ScrapeFailure::Status, why));
        }
        let too_large = || {
            let why = format!("exposition larger than {} bytes", self.max_bytes);
            (ScrapeFailure::TooLarge, why)
        };
        if response
            .content_length()
            .is_some_and(|n| n > self.max_bytes as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| (ScrapeFailure::Unreachable, e.to_string()))?
        {
            if body.len() + chunk.len() > self.max_bytes {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        String::from_utf8(body).map_err(|_| {
            (
                ScrapeFailure::NotUtf8,
                "exposition is not UTF-8".to_string(),
            )
        })
    }
}

/// What a target's task carries from one interval to the next.
#[derive(Debug, Default)]
struct Memory {
    counters: Option<Counters>,
    usage: Option<Usage>,
    starts: u64,
    cgroup: Option<Cgroup>,
    /// A read through Docker's API still under way (the fallback without cgroup files).
    pending: Option<tokio::task::JoinHandle<Result<Usage, StatsError>>>,
}

impl Drop for Memory {
    fn drop(&mut self) {
        if let Some(p) = self.pending.take() {
            p.abort();
        }
    }
}

/// CPU and memory now: from the cgroup files when they can be found, else the newest
/// finished read through Docker's API (never waiting for one).
fn read_usage(
    ctx: &Context,
    target: &Target,
    memory: &mut Memory,
    at_ms: u64,
) -> Option<Result<Usage, StatsError>> {
    let root = ctx.cgroup_root.as_ref()?;
    if target.source != Source::Docker || target.container.state != ContainerState::Running {
        return None;
    }
    let id = &target.container.id;
    if memory.cgroup.is_none() {
        memory.cgroup = Cgroup::find(root, id);
    }
    if let Some(cgroup) = &memory.cgroup {
        let read = cgroup.read(at_ms);
        if read.is_err() {
            memory.cgroup = None;
        }
        return Some(read);
    }
    let docker = ctx.docker.clone()?;
    let finished = match memory.pending.take() {
        Some(p) if p.is_finished() => futures::FutureExt::now_or_never(p),
        Some(p) => {
            memory.pending = Some(p);
            return None;
        }
        None => None,
    };
    let id = id.clone();
    memory.pending = Some(tokio::spawn(async move {
        stats::read_docker(&docker, &id, now_ms()).await
    }));
    finished.and_then(Result::ok)
}

/// Watches one target until shutdown (or until its task is aborted when the target goes).
pub(crate) async fn watch(
    ctx: Arc<Context>,
    mut target: watch::Receiver<Target>,
    mut shutdown: Shutdown,
) {
    // Spread the targets over the interval so that they are not all scraped at once.
    let offset = {
        let id = &target.borrow().container.id;
        let hash = id
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
        Duration::from_millis(hash % ctx.interval.as_millis().max(1) as u64)
    };
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, ctx.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut memory = Memory::default();
    memory.starts = target.borrow().starts;
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tick.tick() => {}
        }
        let current = target.borrow_and_update().clone();
        let snapshot = observe(&ctx, &current, &mut memory).await;
        let service = snapshot.service.to_string();
        let scraped_ok = snapshot.scrape.as_ref().map(|s| s.ok);
        if ctx.rollups.try_send(snapshot.clone()).is_err() {
            ctx.bus.telemetry().failed(
                "rollup_full",
                &"the roll-up queue is full; this snapshot is not in its service's roll-up",
            );
        }
        match ctx.bus.publish(None, Event::MetricSnapshot(snapshot)).await {
            Ok(_) if scraped_ok == Some(true) => ctx.bus.telemetry().observe(Observation::Acted {
                what: "scrape",
                service: &service,
            }),
            Ok(_) => {}
            Err(e) => ctx.bus.telemetry().failed("publish_snapshot", &e),
        }
    }
}

/// One interval of one target: probe, scrape and stats at once, then the snapshot.
async fn observe(ctx: &Context, target: &Target, memory: &mut Memory) -> MetricSnapshot {
    let telemetry = ctx.bus.telemetry();
    let container = &target.container;
    let at_ms = now_ms();
    let running = container.state == ContainerState::Running;
    let address = container.address;
    let health = async {
        let url = container.health.as_ref()?.url(address?);
        let started = Instant::now();
        let probe = ctx.scraper.probe(&url).await;
        telemetry.time("probe", started.elapsed());
        Some(probe)
    };
    let scrape = async {
        let url = container.metrics.as_ref()?.url(address?);
        let started = Instant::now();
        let scraped = ctx.scraper.scrape(&url, at_ms).await;
        telemetry.time("scrape", started.elapsed());
        Some(scraped)
    };
    let started = Instant::now();
    let usage = match read_usage(ctx, target, memory, at_ms) {
        Some(Ok(u)) => {
            telemetry.time("stats", started.elapsed());
            Some(u)
        }
        Some(Err(e)) => {
            telemetry.failed("stats", &e);
            None
        }
        None => None,
    };
    let (mut health, scrape) = if running {
        tokio::join!(health, scrape)
    } else {
        (None, None)
    };
    if running && address.is_none() && container.health.is_some() {
        health = Some(HealthProbe {
            ok: false,
            status: None,
            latency_ms: 0.0,
            error: Some("container has no network address".into()),
        });
    }
    let mut snapshot = MetricSnapshot {
        service: container.service.clone(),
        instance: container.name.clone(),
        container_id: container.id.clone(),
        observed_ms: at_ms,
        interval_ms: ctx.interval.as_millis() as u64,
        state: container.state,
        health: None,
        scrape: None,
        features: Default::default(),
        scope: SnapshotScope::Instance,
        replicas: None,
        depends_on: container.depends_on.clone(),
    };
    let f = &mut snapshot.features;
    f.insert(
        feature::RESTARTS.into(),
        target.starts.saturating_sub(memory.starts) as f64,
    );
    memory.starts = target.starts;
    if let Some(h) = &health {
        f.insert(feature::HEALTH_OK.into(), if h.ok { 1.0 } else { 0.0 });
        f.insert(feature::PROBE_LATENCY_MS.into(), h.latency_ms);
        if !h.ok {
            telemetry.failed("probe", &h.error.as_deref().unwrap_or("failed"));
        }
    }
    if let Some(u) = usage {
        f.insert(feature::MEMORY_BYTES.into(), u.memory_bytes as f64);
        if let Some(limit) = u.memory_limit {
            f.insert(
                feature::MEMORY_RATIO.into(),
                u.memory_bytes as f64 / limit as f64,
            );
        }
        if let Some(cores) = memory.usage.and_then(|p| stats::cpu_cores(&p, &u)) {
            f.insert(feature::CPU_CORES.into(), cores);
        }
        memory.usage = Some(u);
    }
    if let Some((outcome, reading)) = scrape {
        f.insert(
            feature::SCRAPE_OK.into(),
            if outcome.ok { 1.0 } else { 0.0 },
        );
        match reading {
            Ok(Reading {
                counters,
                in_flight,
                ..
            }) => {
                f.extend(features::interval_features(
                    memory.counters.as_ref(),
                    &counters,
                    in_flight,
                ));
                memory.counters = Some(counters);
            }
            Err(kind) => {
                telemetry.failed(kind.as_str(), &outcome.error.as_deref().unwrap_or_default())
            }
        }
        snapshot.scrape = Some(outcome);
    }
    snapshot.health = health;
    snapshot
}
