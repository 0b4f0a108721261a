//! The resilience scorecard: runs the real deployment (the compose stack: NATS, the five
//! stages, the demo services and their load) under its own project name, injects each
//! fault N times through chaos, and measures what an operator cares about: time to
//! detect, time to healthy again, the actions taken and whether the first was right, false
//! alarms under normal load, the usual alternatives side by side, the learning curve, and
//! each stage's throughput, latency, CPU and memory. [`run`] returns a [`report::Report`]
//! and writes it as markdown with PNG plots.

pub mod baseline;
pub mod deployment;
pub mod measure;
pub mod observe;
pub mod plot;
pub mod report;
pub mod stats;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use immune_chaos::follow;
use immune_nats::streams::DETECTOR_MODELS;
use immune_nats::{ChaosRequest, Envelope, Event, FaultKind, IncidentState, ServiceName};
use immune_runtime::Bus;

use crate::baseline::BaselineRun;
use crate::deployment::{read_stage, stage_containers, StackSpec, StageReading};
use crate::measure::{ended, measure, open_anomalies, open_incidents, stopgaps_in_force, Trial};
use crate::observe::{Prober, Recorder};
use crate::report::{FaultFree, Report, StageFigures, Timeline};

/// Why the scorecard could not run.
#[derive(Debug, thiserror::Error)]
pub enum ScorecardError {
    #[error("docker-compose {args}: {reason}")]
    Compose { args: String, reason: String },
    #[error("docker: {0}")]
    Docker(String),
    #[error("nats: {0}")]
    Bus(String),
    #[error("http: {0}")]
    Http(String),
    #[error("{0}")]
    Timeout(String),
    #[error("writing the report: {0}")]
    Write(String),
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl ScorecardError {
    /// The error kind, as a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            ScorecardError::Compose { .. } => "compose",
            ScorecardError::Docker(_) => "docker",
            ScorecardError::Bus(_) => "bus",
            ScorecardError::Http(_) => "http",
            ScorecardError::Timeout(_) => "timeout",
            ScorecardError::Write(_) => "write",
            ScorecardError::Config(_) => "config",
        }
    }
}

/// The faults the issue asks for, in report order.
pub const ALL_FAULTS: [FaultKind; 7] = [
    FaultKind::Crash,
    FaultKind::Hang,
    FaultKind::Latency,
    FaultKind::Errors,
    FaultKind::MemoryLeak,
    FaultKind::CpuBurn,
    FaultKind::NetworkDisconnect,
];

/// A fault and the service it goes into (`None`: the scorecard's `--target`).
#[derive(Debug, Clone, PartialEq)]
pub struct FaultSpec {
    pub fault: FaultKind,
    pub target: Option<String>,
}

impl std::fmt::Display for FaultSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.target {
            Some(t) => write!(f, "{}@{t}", self.fault),
            None => write!(f, "{}", self.fault),
        }
    }
}

/// `fault` or `fault@service`.
pub fn parse_fault_spec(text: &str) -> Result<FaultSpec, String> {
    let (fault, target) = match text.split_once('@') {
        Some((f, t)) => {
            ServiceName::new(t.to_string()).map_err(|e| format!("{text:?}: {e}"))?;
            (f, Some(t.to_string()))
        }
        None => (text, None),
    };
    Ok(FaultSpec {
        fault: fault.parse()?,
        target,
    })
}

fn parse_secs(text: &str) -> Result<Duration, String> {
    follow::parse_duration(text)
}

/// What to run. Defaults are the issue's: N = 10, 10 minutes fault-free.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Injections per fault.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// Faults to inject, comma-separated, each `fault` (into --target) or `fault@service`
    /// (an overload goes where the capacity is narrowest: `overload@orders` on the demo).
    #[arg(long, value_delimiter = ',', value_parser = parse_fault_spec,
          default_value = "crash,hang,latency,errors,memory_leak,cpu_burn,network_disconnect")]
    pub faults: Vec<FaultSpec>,
    /// The demo service the faults go into (a leaf: no dependency to wait for).
    #[arg(long, default_value = "payments")]
    pub target: String,
    /// How long each fault lasts before chaos reverts it.
    #[arg(long, value_parser = parse_secs, default_value = "60s")]
    pub fault_duration: Duration,
    /// Quiet time before each injection (above the decider's 10 s cooldown).
    #[arg(long, value_parser = parse_secs, default_value = "12s")]
    pub settle: Duration,
    /// The fault-free period under normal load.
    #[arg(long, value_parser = parse_secs, default_value = "10m")]
    pub fault_free: Duration,
    /// Requests a second from the load generator.
    #[arg(long, default_value_t = 20)]
    pub load_rps: u32,
    /// The faults injected again and again while the decider learns, one curve each
    /// (comma-separated): by default latency inside the service, where the playbook's prior
    /// (throttle first) is wrong, and overload, where it (scale_out first) is right.
    #[arg(long = "learning-faults", alias = "learning-fault", value_delimiter = ',',
          value_parser = parse_fault_spec, default_value = "latency,overload@orders")]
    pub learning_faults: Vec<FaultSpec>,
    /// Injections for each learning curve (0: none).
    #[arg(long, default_value_t = 10)]
    pub learning_runs: usize,
    /// Longest wait for the detector's first learned model of the target.
    #[arg(long, value_parser = parse_secs, default_value = "8m")]
    pub warmup_limit: Duration,
    /// Do not wait for the detector's learned model (rules only at first; for quick checks).
    #[arg(long)]
    pub no_model_wait: bool,
    /// Leave out the restart-policy and HEALTHCHECK+autoheal runs.
    #[arg(long)]
    pub skip_baselines: bool,
    /// Where `scorecard.md` goes; the plots go to `<out>/scorecard/`.
    #[arg(long, default_value = "docs")]
    pub out: PathBuf,
    /// Where NATS's and each stage's logs are saved before the stack stops (not with the
    /// report: they are large and belong to one run).
    #[arg(long, default_value = "target/scorecard-logs")]
    pub logs: PathBuf,
    /// A TTF font for the plots' text.
    #[arg(
        long,
        default_value = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
    )]
    pub font: PathBuf,
    #[arg(long, default_value = "docker-compose.yml")]
    pub compose_file: PathBuf,
    /// The compose project name of the stack under test.
    #[arg(long, default_value = "immune-scorecard")]
    pub compose_project: String,
    /// The `immune.project` of its demo containers (its executor acts on no other).
    #[arg(long, default_value = "immune-scorecard")]
    pub demo_project: String,
    /// NATS of an already running stack (with --no-stack); else 127.0.0.1:<nats_port>.
    #[arg(long, env = "IMMUNE_NATS_URL")]
    pub nats: Option<String>,
    /// NATS user of the scorecard, when the stack's server requires one.
    #[arg(long, env = "IMMUNE_NATS_USER")]
    pub nats_user: Option<String>,
    #[arg(long, env = "IMMUNE_NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,
    /// A NATS credentials file, when the server uses them.
    #[arg(long, env = "IMMUNE_NATS_CREDENTIALS")]
    pub nats_credentials: Option<PathBuf>,
    #[arg(long, default_value_t = 14222)]
    pub nats_port: u16,
    #[arg(long, default_value_t = 18222)]
    pub nats_monitor_port: u16,
    /// Use a stack that is already running (with the ports and project above).
    #[arg(long)]
    pub no_stack: bool,
    /// Leave the stack running at the end.
    #[arg(long)]
    pub keep_stack: bool,
}

/// The `operator` user's password: `IMMUNE_OPERATOR_NATS_PASSWORD`, else the line in the
/// `.env` beside the compose file (where docker-compose reads it for the NATS server).
fn operator_password(compose_file: &std::path::Path) -> Option<String> {
    const KEY: &str = "IMMUNE_OPERATOR_NATS_PASSWORD";
    if let Ok(password) = std::env::var(KEY) {
        return Some(password);
    }
    let env_file = compose_file.parent()?.join(".env");
    std::fs::read_to_string(env_file)
        .ok()?
        .lines()
        .find_map(|line| {
            line.strip_prefix(KEY)?
                .strip_prefix('=')
                .map(str::to_string)
        })
}

impl Config {
    pub fn stack(&self) -> StackSpec {
        StackSpec {
            compose_file: self.compose_file.clone(),
            compose_project: self.compose_project.clone(),
            demo_project: self.demo_project.clone(),
            nats_port: self.nats_port,
            nats_monitor_port: self.nats_monitor_port,
            load_rps: self.load_rps,
        }
    }

    /// How the scorecard reaches the stack's NATS (published on loopback at `nats_port`).
    pub fn nats(&self, stack: &StackSpec) -> immune_runtime::BusConfig {
        let mut nats = stack.nats();
        if let (true, Some(url)) = (self.no_stack, &self.nats) {
            nats.url = url.clone();
        }
        nats.user = self.nats_user.clone();
        nats.password = self.nats_password.clone();
        nats.credentials = self.nats_credentials.clone();
        if nats.user.is_none() && nats.credentials.is_none() {
            // The shipped NATS config has users: log in as `operator`, as `scripts/immune` does.
            if let Some(password) = operator_password(&self.compose_file) {
                nats.user = Some("operator".into());
                nats.password = Some(password);
            }
        }
        nats
    }

    fn validate(&self) -> Result<(), ScorecardError> {
        ServiceName::new(self.target.clone())
            .map_err(|e| ScorecardError::Config(format!("target: {e}")))?;
        if self.faults.is_empty() && (self.learning_runs == 0 || self.learning_faults.is_empty()) {
            return Err(ScorecardError::Config("faults: nothing to inject".into()));
        }
        if self.fault_duration < Duration::from_secs(5) {
            return Err(ScorecardError::Config("fault_duration: at least 5s".into()));
        }
        Ok(())
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs the scorecard and writes `<out>/scorecard.md` and its plots.
pub async fn run(config: Config) -> Result<Report, ScorecardError> {
    config.validate()?;
    let stack = config.stack();
    if !config.no_stack {
        tracing::info!(project = %config.compose_project, "starting the stack");
        stack.up()?;
    }
    let result = measure_all(&config, &stack).await;
    if !config.no_stack {
        match stack.save_logs(&config.logs) {
            Ok(files) => {
                tracing::info!(dir = %config.logs.display(), files = files.len(), "stack logs saved")
            }
            Err(e) => tracing::warn!(error = %e, "could not save the stack's logs"),
        }
    }
    if !config.no_stack && !config.keep_stack {
        tracing::info!(project = %config.compose_project, "stopping the stack");
        if let Err(e) = stack.down() {
            tracing::warn!(error = %e, "could not stop the stack");
        }
    }
    let report = result?;
    report::write(&report, &config.out, &config.font)?;
    Ok(report)
}

struct Ctx<'a> {
    config: &'a Config,
    bus: Bus,
    docker: bollard::Docker,
    recorder: Recorder,
}

async fn measure_all(config: &Config, stack: &StackSpec) -> Result<Report, ScorecardError> {
    let started_ms = now_ms();
    let bus = tokio::time::timeout(
        Duration::from_secs(60),
        Bus::connect_client(&config.nats(stack)),
    )
    .await
    .map_err(|_| ScorecardError::Timeout("NATS of the stack did not answer within 60 s".into()))?
    .map_err(|e| ScorecardError::Bus(e.to_string()))?;
    let docker =
        immune_runtime::docker::connect().map_err(|e| ScorecardError::Docker(e.to_string()))?;
    let (recorder, recording) = Recorder::start(bus.client()).await?;
    let ctx = Ctx {
        config,
        bus,
        docker: docker.clone(),
        recorder,
    };

    // The alternatives run beside immune, on their own containers, from the start.
    let baselines = (!config.skip_baselines).then(|| {
        let (docker, prefix, runs) = (docker.clone(), config.compose_project.clone(), config.runs);
        tokio::spawn(async move {
            let mut runs_out: Vec<BaselineRun> = Vec::new();
            let (crash, hang) = tokio::join!(
                baseline::restart_policy(&docker, &prefix, runs),
                baseline::healthcheck_autoheal(&docker, &prefix, runs)
            );
            for r in [crash, hang] {
                match r {
                    Ok(run) => runs_out.push(run),
                    Err(e) => tracing::warn!(error = %e, "a baseline could not run"),
                }
            }
            runs_out
        })
    });

    warm_up(&ctx).await?;
    let fault_free = fault_free(&ctx).await?;

    let mut trials = Vec::new();
    for spec in &config.faults {
        let fault = spec.fault;
        for i in 0..config.runs {
            tracing::info!(%spec, run = i + 1, of = config.runs, "injecting");
            match inject(&ctx, spec).await {
                Ok((trial, timeline)) => {
                    tracing::info!(%fault, detected_ms = ?trial.detected_ms, healed_ms = ?trial.healed_ms,
                        actions = ?trial.actions, healed_by = trial.healed_by.as_str(), "trial done");
                    trials.push((trial, (i == 0).then_some(timeline)));
                }
                Err(e) => tracing::warn!(%fault, error = %e, "trial failed"),
            }
        }
    }
    let mut learning = Vec::new();
    for spec in &config.learning_faults {
        for i in 0..config.learning_runs {
            tracing::info!(%spec, run = i + 1, "learning curve");
            match inject(&ctx, spec).await {
                Ok((trial, _)) => learning.push(trial),
                Err(e) => tracing::warn!(%spec, error = %e, "learning trial failed"),
            }
        }
    }
    let baselines = match baselines {
        Some(task) => task.await.unwrap_or_default(),
        None => Vec::new(),
    };
    recording.abort();
    let undecodable = ctx.recorder.undecodable();
    let (trials, timelines): (Vec<Trial>, Vec<Option<Timeline>>) = trials.into_iter().unzip();
    Ok(Report {
        config: report::ConfigSummary::of(config),
        started_ms,
        finished_ms: now_ms(),
        trials,
        timelines: timelines.into_iter().flatten().collect(),
        learning,
        baselines,
        fault_free,
        undecodable,
    })
}

/// Waits until the detector has a learned model of the target (its baseline of normal
/// snapshots is complete), so that what follows is judged by the whole detector.
async fn warm_up(ctx: &Ctx<'_>) -> Result<(), ScorecardError> {
    let limit = Duration::from_secs(120);
    let deadline = tokio::time::Instant::now() + limit;
    let mut from = 0;
    tracing::info!(target = %ctx.config.target, "waiting for the collector to see the target healthy");
    loop {
        let seen = ctx.recorder.since(from);
        from += seen.len();
        if seen.iter().any(|e| {
            matches!(&e.body, Event::MetricSnapshot(s)
            if s.service.as_str() == ctx.config.target && s.health.as_ref().is_some_and(|h| h.ok))
        }) {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(ScorecardError::Timeout(format!(
                "no healthy snapshot of {} from the collector within {limit:?}: is the stack up?",
                ctx.config.target
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if ctx.config.no_model_wait {
        return Ok(());
    }
    let models = ctx
        .bus
        .bucket(DETECTOR_MODELS)
        .await
        .map_err(|e| ScorecardError::Bus(e.to_string()))?;
    let deadline = tokio::time::Instant::now() + ctx.config.warmup_limit;
    tracing::info!(target = %ctx.config.target, "waiting for the detector's learned model");
    loop {
        if let Ok(Some(_)) = models.get(&ctx.config.target).await {
            tracing::info!("the detector has a learned model");
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(ScorecardError::Timeout(format!(
                "no learned model of {} after {:?}: is the collector scraping it?",
                ctx.config.target, ctx.config.warmup_limit
            )));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// How long a trial waits for other services' incidents to end before it starts anyway.
const OTHERS_SETTLE: Duration = Duration::from_secs(120);

/// The fault-free period: incidents and actions counted, stage figures read at both ends.
async fn fault_free(ctx: &Ctx<'_>) -> Result<FaultFree, ScorecardError> {
    let http = reqwest::Client::new();
    let stages = stage_containers(&ctx.docker, &ctx.config.compose_project).await?;
    let mut first: Vec<StageReading> = Vec::new();
    for s in &stages {
        first.push(read_stage(&ctx.docker, &http, s).await?);
    }
    let from = ctx.recorder.len();
    tracing::info!(period = ?ctx.config.fault_free, "fault-free period under normal load");
    tokio::time::sleep(ctx.config.fault_free).await;
    let seen = ctx.recorder.since(from);
    let mut figures = Vec::new();
    for (s, a) in stages.iter().zip(&first) {
        let b = read_stage(&ctx.docker, &http, s).await?;
        let secs = (b.at_ms.saturating_sub(a.at_ms)) as f64 / 1000.0;
        figures.push(StageFigures {
            stage: s.stage.clone(),
            received_per_s: (b.received - a.received) / secs,
            published_per_s: (b.published - a.published) / secs,
            cpu_cores: b.cpu_total_ns.saturating_sub(a.cpu_total_ns) as f64 / 1e9 / secs,
            memory_mib: b.memory_bytes as f64 / (1024.0 * 1024.0),
        });
    }
    let count = |f: &dyn Fn(&Event) -> bool| seen.iter().filter(|e| f(&e.body)).count();
    Ok(FaultFree {
        period_s: ctx.config.fault_free.as_secs_f64(),
        incidents: count(&|e| matches!(e, Event::Incident(i) if i.state == IncidentState::Opened)),
        actions: count(&|e| matches!(e, Event::ActionRequest(_))),
        anomalies: count(
            &|e| matches!(e, Event::Anomaly(a) if a.state == immune_nats::AnomalyState::Firing),
        ),
        bus_events: seen.len(),
        stages: figures,
    })
}

/// The target is steady: `/health` passes, no incident of it is open, no stopgap an earlier
/// trial set on it is still in force (blocked sources would hide the next attack), and no
/// incident of any other service is open (for up to [`OTHERS_SETTLE`]), so a caller still
/// recovering from the last trial's fault does not act during this one.
async fn wait_steady(
    ctx: &Ctx<'_>,
    target: &str,
    prober: &Prober,
    from: usize,
) -> Result<(), ScorecardError> {
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_secs(180);
    loop {
        let open = ctx
            .recorder
            .since(from)
            .iter()
            .rev()
            .find_map(|e| match &e.body {
                Event::Incident(i) if i.service.as_str() == target => Some(i.state),
                _ => None,
            })
            .is_some_and(|s| !ended(s));
        if !open && prober.healthy_for(5) {
            let running =
                deployment::instance_names(&ctx.docker, &ctx.config.demo_project, target).await?;
            let anomalies = ctx
                .recorder
                .with_all(|seen| open_anomalies(seen, target, &running));
            let stopgaps = ctx
                .recorder
                .with_all(|seen| stopgaps_in_force(seen, target));
            let others = ctx.recorder.with_all(|seen| open_incidents(seen));
            let others_settled = others.is_empty() || started.elapsed() > OTHERS_SETTLE;
            if anomalies.is_empty() && stopgaps.is_empty() && others_settled {
                if !others.is_empty() {
                    tracing::warn!(
                        ?others,
                        "other services' incidents still open; trial starts anyway"
                    );
                }
                return Ok(());
            }
        }
        if tokio::time::Instant::now() > deadline {
            return Err(ScorecardError::Timeout(format!(
                "{} not steady (healthy, no open incident, no anomaly left to clear, no stopgap \
                 in force) within 180 s",
                target
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One injection, from a steady target to healed (or given up), measured.
async fn inject(ctx: &Ctx<'_>, spec: &FaultSpec) -> Result<(Trial, Timeline), ScorecardError> {
    let config = ctx.config;
    let fault = spec.fault;
    let target = spec.target.as_deref().unwrap_or(&config.target);
    let from = ctx.recorder.len().saturating_sub(1);
    let before = deployment::instance_names(&ctx.docker, &config.demo_project, target).await?;
    let prober = Prober::start(
        ctx.docker.clone(),
        config.demo_project.clone(),
        target.to_string(),
    );
    wait_steady(ctx, target, &prober, from).await?;
    tokio::time::sleep(config.settle).await;
    let service =
        ServiceName::new(target.to_string()).map_err(|e| ScorecardError::Config(e.to_string()))?;
    // Chaos may still hold earlier faults (max_concurrent_faults): ask again until accepted.
    let deadline = tokio::time::Instant::now() + config.fault_duration + Duration::from_secs(60);
    let run_id = loop {
        let request = ChaosRequest {
            run_id: None,
            service: service.clone(),
            fault,
            duration_ms: config.fault_duration.as_millis() as u64,
            params: BTreeMap::new(),
        };
        let run_id = follow::request(&ctx.bus, request)
            .await
            .map_err(|e| ScorecardError::Bus(e.to_string()))?;
        match wait_injected(ctx, from, &run_id).await {
            Some(Some(instance)) => {
                prober.focus(&instance);
                break run_id;
            }
            Some(None) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            _ => {
                return Err(ScorecardError::Timeout(format!(
                    "chaos did not inject {fault} into {service}"
                )))
            }
        }
    };
    // Until the incident of this run ends (or, undetected, the fault is reverted) and the
    // target answers again; a fault immune did not clear is waited out to its revert.
    let limit = config.fault_duration + Duration::from_secs(90);
    let deadline = tokio::time::Instant::now() + limit;
    let mut timed_out = true;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let seen = ctx.recorder.since(from);
        let ended = run_ended(&seen, &run_id);
        let reverted = reverted(&seen, &run_id);
        let restart_cleared = matches!(fault, FaultKind::Crash | FaultKind::Hang);
        if (reverted || (ended && restart_cleared)) && prober.healthy_for(10) {
            timed_out = false;
            break;
        }
    }
    if timed_out {
        tracing::warn!(%fault, %run_id, "trial limit reached");
    }
    let seen = ctx.recorder.since(from);
    let probes = prober.finish().await;
    drop(prober);
    let trial = measure(&run_id, &seen, &probes)
        .ok_or_else(|| ScorecardError::Timeout(format!("no chaos.injected for run {run_id}")))?;
    let timeline = Timeline::of(&trial, &seen, &probes);
    // A scale out's replica stays; trials must not inherit it.
    let removed =
        deployment::remove_added(&ctx.docker, &config.demo_project, target, &before).await?;
    if !removed.is_empty() {
        tracing::info!(?removed, "replicas added during the trial removed");
    }
    Ok((trial, timeline))
}

/// `Some(Some(instance))` injected into that instance, `Some(None)` rejected, `None`
/// neither within 20 s.
async fn wait_injected(ctx: &Ctx<'_>, from: usize, run_id: &str) -> Option<Option<String>> {
    for _ in 0..80 {
        for e in ctx.recorder.since(from) {
            match &e.body {
                Event::ChaosInjected(i) if i.run_id == run_id => {
                    return Some(Some(i.instance.clone()))
                }
                Event::ChaosRejected(r) if r.run_id == run_id => {
                    tracing::info!(reason = %r.reason, "chaos refused the injection; asking again");
                    return Some(None);
                }
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}

fn run_ended(seen: &[Envelope], run_id: &str) -> bool {
    seen.iter().any(|e| match &e.body {
        Event::Incident(i) => {
            i.chaos_run.as_deref() == Some(run_id)
                && matches!(i.state, IncidentState::Recovered | IncidentState::Escalated)
        }
        _ => false,
    })
}

fn reverted(seen: &[Envelope], run_id: &str) -> bool {
    seen.iter()
        .any(|e| matches!(&e.body, Event::ChaosReverted(r) if r.run_id == run_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_goes_into_the_target_or_the_service_it_names() {
        let plain = parse_fault_spec("latency").expect("a fault");
        assert_eq!((plain.fault, plain.target), (FaultKind::Latency, None));
        let aimed = parse_fault_spec("overload@orders").expect("a fault and a service");
        assert_eq!(aimed.fault, FaultKind::Overload);
        assert_eq!(aimed.target.as_deref(), Some("orders"));
        assert_eq!(aimed.to_string(), "overload@orders");
        assert!(parse_fault_spec("meltdown").is_err());
        let bad = parse_fault_spec("overload@Not A Name").expect_err("a bad service name");
        assert!(bad.contains("Not A Name"), "{bad}");
    }
}
