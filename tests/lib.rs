//! Shared by the integration tests beside this file: the five stages started in-process,
//! each with its own NATS connection, configuration and telemetry, stopped on drop.
//!
//! - `heal_end_to_end.rs`: a crash and a hang injected through chaos are healed, with the
//!   whole chain in the audit stream under one correlation id.
//! - `bad_input.rs`: garbage on every input subject is dead-lettered and counted, and every
//!   stage keeps working.
//! - `attack_burst.rs`: chaos attacks a demo container, the detector opens and clears an
//!   `attack_burst` under the run id.
//! - `healer_faults.rs`: the stages as real processes ([`StageProcesses`]) survive a NATS
//!   restart, a SIGKILL of each stage mid-incident, an unreachable Docker engine, and a flood
//!   of anomalies.
//! - `nats_permissions.rs`: the shipped NATS config refuses what a stage's user may not do,
//!   and the whole pipeline heals a crash with each stage logged in as its own user.
//!
//! - `gray_failures.rs`: a latency fault healed twice, the restart learned the first time.
//! - `dependency_fault.rs`: errors in `payments` show in its callers; only `payments` is
//!   acted on.
//!
//! The healing flow both heal tests check ([`heal`]) lives here, steady load in [`load`].

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::{Duration, Instant};

use futures::StreamExt;
use immune_chaos::follow::{self, Follower, RunEnd};
use immune_nats::streams::{ConsumerSpec, StreamSpec};
use immune_nats::{
    decode, ActionKind, AuditRecord, ChaosRequest, Envelope, Event, FaultKind, ServiceName, Stage,
};
use immune_runtime::{Bus, BusConfig, Shutdown, Telemetry};
use immune_testkit::{within, DemoContainer, NatsServer, RunningStage, StageProcess};

pub mod load;

/// Configuration of the five stages for one test: one NATS server, one project.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub collector: immune_collector::Config,
    pub detector: immune_detector::Config,
    pub decider: immune_decider::Config,
    pub executor: immune_executor::Config,
    pub chaos: immune_chaos::Config,
}

impl PipelineConfig {
    /// Defaults, pointed at `nats_url`, acting only on containers of `project`; a short
    /// cooldown so that one test can heal several faults in a row.
    pub fn new(nats_url: &str, project: &str) -> Self {
        let nats = BusConfig {
            url: nats_url.to_string(),
            ..Default::default()
        };
        let project = Some(project.to_string());
        let mut decider = immune_decider::Config {
            nats: nats.clone(),
            ..Default::default()
        };
        decider.policy.cooldown_ms = 2_000;
        decider.policy.verify_deadline_ms = 20_000;
        Self {
            collector: immune_collector::Config {
                nats: nats.clone(),
                project: project.clone(),
                ..Default::default()
            },
            detector: immune_detector::Config {
                nats: nats.clone(),
                learned: hard_faults_only(),
                ..Default::default()
            },
            decider,
            executor: immune_executor::Config {
                nats: nats.clone(),
                project: project.clone(),
                ..Default::default()
            },
            chaos: immune_chaos::Config {
                nats,
                project,
                ..Default::default()
            },
        }
    }
}

impl PipelineConfig {
    /// Like [`PipelineConfig::new`] on a server started with
    /// [`NatsServer::start_secured`]: each stage logs in as its own user of the shipped
    /// config, so the test proves each stage's permissions are enough for its work.
    pub fn secured(server: &NatsServer, project: &str) -> Self {
        let mut c = Self::new(&server.url(), project);
        c.collector.nats = bus_config(server, "collector");
        c.detector.nats = bus_config(server, "detector");
        c.decider.nats = bus_config(server, "decider");
        c.executor.nats = bus_config(server, "executor");
        c.chaos.nats = bus_config(server, "chaos");
        c
    }
}

/// How `user` of the shipped NATS config reaches `server` (started secured).
pub fn bus_config(server: &NatsServer, user: &str) -> BusConfig {
    BusConfig {
        user: Some(user.to_string()),
        password: Some(server.password(user)),
        ..BusConfig::at(server.url())
    }
}

/// The five stages running as tasks of this test's runtime, each a [`RunningStage`].
#[derive(Debug)]
pub struct Pipeline {
    stages: Vec<(Stage, RunningStage<Telemetry>)>,
    pub telemetry: HashMap<Stage, Telemetry>,
}

/// How long each stage may take to return once the pipeline is asked to stop.
const STOP_LIMIT: Duration = Duration::from_secs(20);

impl Pipeline {
    pub fn start(config: PipelineConfig) -> Pipeline {
        let mut pipeline = Pipeline {
            stages: Vec::new(),
            telemetry: HashMap::new(),
        };
        let c = config;
        pipeline.launch(Stage::Collector, |t, s| {
            immune_collector::run(c.collector, t, s)
        });
        pipeline.launch(Stage::Detector, |t, s| {
            immune_detector::run(c.detector, t, s)
        });
        pipeline.launch(Stage::Decider, |t, s| immune_decider::run(c.decider, t, s));
        pipeline.launch(Stage::Executor, |t, s| {
            immune_executor::run(c.executor, t, s)
        });
        pipeline.launch(Stage::Chaos, |t, s| immune_chaos::run(c.chaos, t, s));
        pipeline
    }

    fn launch<F, E>(&mut self, stage: Stage, run: impl FnOnce(Telemetry, Shutdown) -> F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let running = RunningStage::start(stage.as_str(), Telemetry::new(stage), run)
            .stop_within(STOP_LIMIT, "");
        self.telemetry.insert(stage, running.telemetry.clone());
        self.stages.push((stage, running));
    }

    pub fn telemetry(&self, stage: Stage) -> &Telemetry {
        &self.telemetry[&stage]
    }

    /// Asks every stage to stop at once and checks that each returned cleanly and in time.
    pub async fn stop(mut self) {
        for (_, running) in &self.stages {
            running.trigger_shutdown();
        }
        for (_, running) in std::mem::take(&mut self.stages) {
            running.stop().await;
        }
    }
}

/// A bus connection as a client (CLI, dashboard) has it; it also provisions the streams.
/// `connect(config)` is the same with a [`bus_config`] of some user (e.g. `operator`).
pub use immune_testkit::{client_bus, client_bus_as as connect};

/// The environment that configures a stage binary the way [`PipelineConfig::new`] configures
/// the in-process stage: NATS at `nats_url`, acting only on `project`, a short cooldown.
pub fn stage_env(stage: Stage, nats_url: &str, project: &str) -> Vec<(String, String)> {
    let key = |k: &str| format!("IMMUNE_{}__{k}", stage.as_str().to_uppercase());
    let mut env = vec![("IMMUNE_NATS_URL".to_string(), nats_url.to_string())];
    match stage {
        Stage::Collector | Stage::Executor | Stage::Chaos => {
            env.push((key("PROJECT"), project.to_string()));
        }
        Stage::Decider => {
            env.push((key("POLICY__COOLDOWN_MS"), "2000".into()));
            env.push((key("POLICY__VERIFY_DEADLINE_MS"), "20000".into()));
        }
        // as hard_faults_only(): no warm-up model within the test
        Stage::Detector => env.push((key("LEARNED__WARMUP"), "0".into())),
        _ => {}
    }
    env
}

/// The learned detector as these hard-fault tests want it: on, but fitted only on its full
/// baseline (5 minutes at 1 s, longer than any of them), so the faults they inject into an
/// idle demo container are judged by the rules alone, as the tests' chains expect. The gray
/// faults' test (`gray_failures.rs`) runs it with its warm-up.
pub fn hard_faults_only() -> immune_detector::LearnedConfig {
    immune_detector::LearnedConfig {
        warmup: 0,
        ..Default::default()
    }
}

/// The five stage binaries as child processes, SIGKILLed on drop.
#[derive(Debug)]
pub struct StageProcesses {
    processes: Vec<(Stage, StageProcess)>,
}

/// The five stages in pipeline order.
pub const STAGES: [Stage; 5] = [
    Stage::Collector,
    Stage::Detector,
    Stage::Decider,
    Stage::Executor,
    Stage::Chaos,
];

impl StageProcesses {
    /// Starts `stages` with [`stage_env`] plus `extra` (`(stage, key, value)`, later wins).
    pub fn start(
        stages: &[Stage],
        nats_url: &str,
        project: &str,
        extra: &[(Stage, &str, &str)],
    ) -> StageProcesses {
        let processes = stages
            .iter()
            .map(|&stage| {
                let mut env = stage_env(stage, nats_url, project);
                env.extend(
                    extra
                        .iter()
                        .filter(|(s, _, _)| *s == stage)
                        .map(|(_, k, v)| (k.to_string(), v.to_string())),
                );
                (stage, StageProcess::start(stage.as_str(), &env))
            })
            .collect();
        StageProcesses { processes }
    }

    pub fn get_mut(&mut self, stage: Stage) -> &mut StageProcess {
        self.processes
            .iter_mut()
            .find(|(s, _)| *s == stage)
            .map(|(_, p)| p)
            .unwrap_or_else(|| panic!("{stage} was not started"))
    }

    /// Panics naming every stage process that exited on its own, with its log.
    pub fn assert_all_running(&mut self) {
        let mut dead = Vec::new();
        for (stage, process) in &mut self.processes {
            if !process.running() {
                dead.push(format!("{stage} exited:\n{}", process.log_tail(40)));
            }
        }
        assert!(dead.is_empty(), "{}", dead.join("\n"));
    }

    /// The last lines of each stage's log, for failure messages.
    pub fn log_tails(&self, lines: usize) -> String {
        self.processes
            .iter()
            .map(|(_, p)| p.log_tail(lines))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Every message of `stream` on `filter` stored now, with its stream sequence, in order.
/// `Err` while the server cannot be asked (a test polling across a NATS restart retries).
pub async fn stored(
    bus: &immune_runtime::Bus,
    stream: StreamSpec,
    filter: &str,
) -> Result<Vec<(u64, Envelope)>, String> {
    use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
    use futures::StreamExt;
    let stream = bus
        .jetstream()
        .get_stream(stream.name)
        .await
        .map_err(|e| e.to_string())?;
    let consumer = stream
        .create_consumer(pull::Config {
            filter_subject: filter.to_string(),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::None,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    loop {
        let pending = consumer
            .clone()
            .info()
            .await
            .map_err(|e| e.to_string())?
            .num_pending;
        if pending == 0 {
            return Ok(out);
        }
        let mut batch = consumer
            .fetch()
            .max_messages(500)
            .expires(Duration::from_secs(2))
            .messages()
            .await
            .map_err(|e| e.to_string())?;
        let mut got = 0;
        while let Some(m) = batch.next().await {
            let m = m.map_err(|e| e.to_string())?;
            got += 1;
            let seq = m.info().map(|i| i.stream_sequence).unwrap_or(0);
            if let Ok(env) = decode(&m.payload) {
                out.push((seq, env));
            }
        }
        if got == 0 {
            return Err(format!("{pending} messages pending, none fetched"));
        }
    }
}

/// Unacknowledged work of a durable consumer: (messages not yet delivered, delivered but
/// not acknowledged). Both 0: every message it should see was processed and acknowledged.
pub async fn backlog(
    bus: &immune_runtime::Bus,
    spec: ConsumerSpec,
) -> Result<(u64, usize), String> {
    let stream = bus
        .jetstream()
        .get_stream(spec.stream.name)
        .await
        .map_err(|e| e.to_string())?;
    let info = stream
        .consumer_info(spec.durable)
        .await
        .map_err(|e| e.to_string())?;
    Ok((info.num_pending, info.num_ack_pending))
}
/// The audit chain every healed fault must leave, in order of what must have happened.
pub const HEAL_CHAIN: [(Stage, &str); 5] = [
    (Stage::Chaos, "chaos.injected"),
    (Stage::Detector, "anomaly.firing"),
    (Stage::Decider, "action.requested"),
    (Stage::Executor, "action.succeeded"),
    (Stage::Decider, "incident.recovered"),
];

/// Waits until the collector has found `demo` (service `orders`) and seen it healthy.
pub async fn await_healthy_snapshot(bus: &Bus, demo: &DemoContainer) {
    let mut metrics = bus
        .client()
        .subscribe(format!("immune.metrics.{}", demo.spec.service))
        .await
        .expect("subscribe");
    within(
        Duration::from_secs(30),
        "a healthy snapshot of the demo service from the collector",
        async {
            while let Some(m) = metrics.next().await {
                if let Ok(env) = decode(&m.payload) {
                    if let Event::MetricSnapshot(s) = env.body {
                        if s.instance == demo.name && s.health.is_some_and(|h| h.ok) {
                            return;
                        }
                    }
                }
            }
        },
    )
    .await;
}

/// How long one healed fault took, from the audit records' timestamps.
#[derive(Debug, Clone, Copy)]
pub struct Healed {
    pub detect_ms: u64,
    pub heal_ms: u64,
    pub wall: Duration,
}

/// Injects `fault` into `demo` through the chaos subject (as `bus`'s user) and checks that
/// immune heals it: the run recovers, the container was restarted exactly once and answers
/// again, and the audit holds [`HEAL_CHAIN`] in order under the run's correlation id.
pub async fn heal(bus: &Bus, demo: &DemoContainer, fault: FaultKind) -> Healed {
    let action = ActionKind::Restart;
    let started_before = demo.started_at().await;
    let mut follower = Follower::subscribe(bus.client())
        .await
        .expect("subscribe audit");
    let injected_at = Instant::now();
    let request = ChaosRequest {
        run_id: None,
        service: ServiceName::new(demo.spec.service.as_str()).expect("name"),
        fault,
        duration_ms: 120_000,
        params: BTreeMap::new(),
    };
    let run_id = follow::request(bus, request)
        .await
        .expect("chaos request published");
    let mut records: Vec<(u64, AuditRecord)> = Vec::new();
    let end = follower
        .until_end(&run_id, Duration::from_secs(60), |env, record| {
            records.push((env.timestamp_ms, record.clone()));
        })
        .await;
    let trail: Vec<String> = records
        .iter()
        .map(|(_, r)| format!("{} {}: {}", r.stage, r.what, r.outcome))
        .collect();
    assert_eq!(
        end,
        RunEnd::Recovered,
        "{fault}: run did not recover; audit trail so far: {trail:#?}"
    );
    let wall = injected_at.elapsed();

    // The container really was restarted and really answers again.
    assert_ne!(
        demo.started_at().await,
        started_before,
        "{fault}: container was not restarted"
    );
    assert!(
        demo.healthy().await,
        "{fault}: recovered, yet /health does not answer"
    );

    // The whole chain, in order, under one correlation id (the follower only kept this run's).
    let mut position = 0;
    for (stage, what) in HEAL_CHAIN {
        let found = records[position..]
            .iter()
            .position(|(_, r)| r.stage == stage && r.what == what);
        let Some(offset) = found else {
            panic!(
                "{fault}: audit chain lacks {stage} {what} after position {position}: {trail:#?}"
            );
        };
        position += offset;
    }
    let requested: Vec<&str> = records
        .iter()
        .filter(|(_, r)| r.what == "action.requested")
        .map(|(_, r)| r.outcome.split(' ').next().unwrap_or_default())
        .collect();
    assert_eq!(
        requested,
        [action.as_str()],
        "{fault}: exactly one {action} expected: {trail:#?}"
    );

    let stamp = |what: &str| {
        records
            .iter()
            .find(|(_, r)| r.what == what)
            .map(|(t, _)| *t)
            .expect("stamped")
    };
    Healed {
        detect_ms: stamp("anomaly.firing") - stamp("chaos.injected"),
        heal_ms: stamp("incident.recovered") - stamp("chaos.injected"),
        wall,
    }
}
