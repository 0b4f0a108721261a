//! Faults of the healer itself. The stages run as real processes (the `immune-<stage>`
//! binaries), against a real nats-server and a demo service in a real container:
//!
//! - NATS is SIGKILLed and restarted during steady metric flow and again while an incident
//!   is in flight: the stages reconnect, the incident recovers, the container is restarted
//!   once, one action is requested and one result stored, and every durable consumer ends
//!   with nothing pending or unacknowledged.
//! - Each of collector, detector and executor is SIGKILLed mid-incident at its most
//!   dangerous point and started again: the incident completes with exactly one restart.
//!   The decider, killed right after requesting the action: one restart, the service
//!   recovers and the new decider heals the next fault; that the orphaned incident itself
//!   completes is the ignored test at the end (the decider keeps incidents in memory).
//! - The Docker engine is unreachable for the executor (a cut socket proxy) when an action
//!   arrives: the executor retries with backoff, says so (`action.retrying`, a counter), and
//!   restarts the container once when the engine is back.
//! - 200 services fire at once: the decider opens an incident for each, requests no more
//!   actions than its budgets allow, and audits why each other one waits.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use immune_chaos::follow;
use immune_nats::streams::{
    AUDIT, CHAOS, DECIDER, DETECTOR_EVENTS, DETECTOR_MODELS, EXECUTOR, PIPELINE,
};
use immune_nats::subject::{ACTIONS_ALL, ANOMALIES_ALL, AUDIT_ALL, RESULTS_ALL};
use immune_nats::{
    decode, ActionOutcome, Anomaly, AnomalyState, AuditRecord, ChaosRequest, Event, FaultKind,
    ServiceName, Signature, Stage,
};
use immune_runtime::Bus;
use immune_testkit::{
    fresh_since, unique, within, DemoContainer, DemoSpec, DockerProxy, NatsServer,
};
use immune_tests::{backlog, stored, StageProcesses, STAGES};

/// Everything one scenario needs.
struct World {
    nats: NatsServer,
    bus: Bus,
    demo: DemoContainer,
    stages: StageProcesses,
}

impl World {
    async fn start(demo: DemoSpec, extra: &[(Stage, &str, &str)]) -> World {
        let nats = NatsServer::start().await;
        let project = demo.project.clone();
        let demo = DemoContainer::start(demo).await;
        let bus = immune_tests::client_bus(&nats.url()).await;
        let stages = StageProcesses::start(&STAGES, &nats.url(), &project, extra);
        let world = World {
            nats,
            bus,
            demo,
            stages,
        };
        world
            .healthy_snapshot(Duration::from_secs(90), "before any fault")
            .await;
        world
    }

    /// Waits for the collector's next healthy snapshot of the demo container.
    async fn healthy_snapshot(&self, limit: Duration, when: &str) {
        let mut metrics = self
            .bus
            .client()
            .subscribe(immune_nats::subject::metrics_of(&orders()))
            .await
            .expect("subscribe to metrics");
        let name = self.demo.name.clone();
        let what = format!(
            "a healthy snapshot of orders from the collector process ({when}); logs:\n{}",
            self.stages.log_tails(15)
        );
        within(limit, &what, async {
            while let Some(m) = metrics.next().await {
                if let Ok(env) = decode(&m.payload) {
                    if let Event::MetricSnapshot(s) = env.body {
                        if s.instance == name && s.health.is_some_and(|h| h.ok) {
                            return;
                        }
                    }
                }
            }
        })
        .await;
    }

    async fn inject(&self, fault: FaultKind) -> Run {
        let since_ms = immune_nats::envelope::now_ms();
        let request = ChaosRequest {
            run_id: None,
            service: orders(),
            fault,
            // Long enough for any phase; the healed fault is reverted (a no-op) after it.
            duration_ms: 30_000,
            params: BTreeMap::new(),
        };
        let id = follow::request(&self.bus, request)
            .await
            .expect("chaos request published");
        Run { id, since_ms }
    }

    /// The audit records about orders stored since the run was requested (read from the
    /// stream, so none is missed while this client reconnects after a NATS restart). One
    /// fault at a time, so they are the run's, whether or not they carry its id: a stage
    /// restarted mid-run may not know the run any more (see [`labelled`]).
    async fn trail(&self, run: &Run) -> Result<Vec<AuditRecord>, String> {
        Ok(self
            .trail_envelopes(run)
            .await?
            .into_iter()
            .map(|(_, a)| a)
            .collect())
    }

    async fn trail_envelopes(
        &self,
        run: &Run,
    ) -> Result<Vec<(Option<String>, AuditRecord)>, String> {
        Ok(stored(&self.bus, AUDIT, AUDIT_ALL)
            .await?
            .into_iter()
            .filter(|(_, env)| env.timestamp_ms >= run.since_ms)
            .filter_map(|(_, env)| match env.body {
                Event::Audit(a) if a.service == orders() => Some((env.correlation_id, a)),
                _ => None,
            })
            .collect())
    }

    /// Whether the run's incident record carries the run id (the chaos ground truth).
    async fn labelled(&self, run: &Run) -> bool {
        self.trail_envelopes(run)
            .await
            .expect("read audit")
            .iter()
            .any(|(c, a)| a.what == "incident.recovered" && c.as_deref() == Some(&run.id))
    }

    /// Waits for the detector's next firing anomaly and then for its open episode in the
    /// detector's bucket (stored right after the anomaly and its audit are published).
    async fn fired_and_stored(&self, anomalies: &mut async_nats::Subscriber, phase: &str) {
        let fired = within(
            Duration::from_secs(30),
            &format!("{phase}: the detector to fire"),
            async {
                loop {
                    let message = anomalies.next().await.expect("subscription open");
                    if let Ok(envelope) = decode(&message.payload) {
                        if let Event::Anomaly(a) = envelope.body {
                            if a.state == AnomalyState::Firing {
                                return a;
                            }
                        }
                    }
                }
            },
        )
        .await;
        let store = self
            .bus
            .bucket(DETECTOR_MODELS)
            .await
            .expect("models bucket");
        let key = format!("open.{}", fired.service);
        within(
            Duration::from_secs(5),
            &format!("{phase}: the open episode stored under {key}"),
            async {
                loop {
                    if let Ok(Some(bytes)) = store.get(&key).await {
                        let open: Vec<immune_detector::Finding> =
                            rmp_serde::from_slice(&bytes).expect("open episodes decode");
                        if open
                            .iter()
                            .any(|f| f.anomaly.anomaly_id == fired.anomaly_id)
                        {
                            return;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            },
        )
        .await;
    }

    /// Waits until the run's audit trail holds `(stage, what)`.
    async fn audited(&self, run: &Run, stage: Stage, what: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(trail) = self.trail(run).await {
                if trail.iter().any(|r| r.stage == stage && r.what == what) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "no {stage} {what} for run {} within {limit:?}; {}",
            run.id,
            self.story(run).await
        );
    }

    /// The run's audit trail and the tails of the stage logs, for a failure message.
    async fn story(&self, run: &Run) -> String {
        let trail = self.trail(run).await.map(|t| {
            t.iter()
                .map(|r| format!("{} {}: {} / {}", r.stage, r.what, r.why, r.outcome))
                .collect::<Vec<_>>()
        });
        format!(
            "trail: {trail:#?}\nstage logs:\n{}",
            self.stages.log_tails(30)
        )
    }

    /// The action ids requested for the run (a resumed decider asks again under the same
    /// id: counted once) and the results stored for them.
    async fn actions_and_results(&self, run: &Run) -> (Vec<String>, Vec<(String, ActionOutcome)>) {
        let requests = stored(&self.bus, PIPELINE, ACTIONS_ALL)
            .await
            .expect("read action requests")
            .into_iter()
            .filter(|(_, env)| env.timestamp_ms >= run.since_ms)
            .filter_map(|(_, env)| match env.body {
                Event::ActionRequest(r) if r.service == orders() => Some(r.action_id),
                _ => None,
            })
            .fold(Vec::new(), |mut ids, id| {
                if !ids.contains(&id) {
                    ids.push(id);
                }
                ids
            });
        let results = stored(&self.bus, PIPELINE, RESULTS_ALL)
            .await
            .expect("read results")
            .into_iter()
            .filter_map(|(_, env)| match env.body {
                Event::ActionResult(r) if requests.contains(&r.action_id) => {
                    Some((r.action_id, r.outcome))
                }
                _ => None,
            })
            .collect();
        (requests, results)
    }

    /// Exactly one action was requested for the run, one result stored for it (succeeded),
    /// and Docker started the container exactly once since `since`.
    async fn assert_one_restart(&self, run: &Run, since: i64, phase: &str) {
        let (requests, results) = self.actions_and_results(run).await;
        if requests.len() != 1 {
            panic!(
                "{phase}: exactly one action request expected: {requests:?}\n{}",
                self.story(run).await
            );
        }
        assert_eq!(
            results,
            vec![(requests[0].clone(), ActionOutcome::Succeeded)],
            "{phase}: exactly one stored result, succeeded"
        );
        // Docker's history is read after the fact; give a second start time to show up.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            self.demo.starts_since(since).await,
            1,
            "{phase}: the container must be started exactly once"
        );
        assert!(
            self.demo.healthy().await,
            "{phase}: /health does not answer after recovery"
        );
    }

    /// Every durable consumer ends with nothing pending and nothing unacknowledged.
    async fn assert_consumers_drained(&self, phase: &str) {
        for spec in [DETECTOR_EVENTS, DECIDER, EXECUTOR, CHAOS] {
            let mut last = Err(String::new());
            let drained = within(
                Duration::from_secs(60),
                &format!("{phase}: consumer {} to have nothing pending", spec.durable),
                async {
                    loop {
                        last = backlog(&self.bus, spec).await;
                        if last == Ok((0, 0)) {
                            return true;
                        }
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                },
            )
            .await;
            assert!(drained, "{phase}: {} backlog {last:?}", spec.durable);
        }
    }
}

/// A chaos run: its id and when it was requested (this machine's clock, as the stages').
struct Run {
    id: String,
    since_ms: u64,
}

fn orders() -> ServiceName {
    ServiceName::new("orders").expect("valid name")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_restarted_mid_stream_stages_resume_nothing_lost_nothing_repeated() {
    let project = unique("faults-nats");
    let mut world = World::start(DemoSpec::new("orders", &project), &[]).await;

    // 1. During steady metric flow.
    let down_at = Instant::now();
    world.nats.restart(Duration::from_secs(2)).await;
    world
        .healthy_snapshot(
            Duration::from_secs(60),
            "after NATS restarted in steady flow",
        )
        .await;
    let steady_ms = down_at.elapsed().as_millis();

    // 2. With an incident in flight: right after the anomaly fired.
    let since = fresh_since().await;
    let run_id = world.inject(FaultKind::Crash).await;
    world
        .audited(
            &run_id,
            Stage::Detector,
            "anomaly.firing",
            Duration::from_secs(60),
        )
        .await;
    let down_at = Instant::now();
    world.nats.restart(Duration::from_secs(1)).await;
    world
        .audited(
            &run_id,
            Stage::Decider,
            "incident.recovered",
            Duration::from_secs(120),
        )
        .await;
    let incident_ms = down_at.elapsed().as_millis();

    world
        .assert_one_restart(&run_id, since, "NATS restarted mid-incident")
        .await;
    world
        .assert_consumers_drained("after two NATS restarts")
        .await;
    world.stages.assert_all_running();
    println!(
        "NATS restart (2 s down) in steady flow: healthy snapshot again {steady_ms} ms after the kill; \
         mid-incident (1 s down): incident recovered {incident_ms} ms after the kill"
    );
}

/// Kills `stage` at the point `kill_when` names, starts it again at once, and checks the
/// incident completes with one restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_stage_killed_mid_incident_the_incident_completes_with_one_restart() {
    let project = unique("faults-kill");
    // The service drains 3 s after SIGTERM and the decider allows 10 s for it, so the
    // executor can be killed while the restart is under way; the executor's short ack wait
    // and lock lifetime let its next run pick the request up within seconds.
    let mut spec = DemoSpec::new("orders", &project);
    spec.env.push("DRAIN_MS=3000".into());
    let extra = [
        (Stage::Decider, "IMMUNE_DECIDER__POLICY__STOP_GRACE_S", "10"),
        (Stage::Executor, "IMMUNE_EXECUTOR__ACK_WAIT_MS", "4000"),
        (Stage::Executor, "IMMUNE_EXECUTOR__LOCK_TTL_MS", "3000"),
        (Stage::Chaos, "IMMUNE_CHAOS__MAX_CONCURRENT_FAULTS", "10"),
    ];
    let mut world = World::start(spec, &extra).await;

    for (stage, fault) in [
        (Stage::Collector, FaultKind::Crash),
        (Stage::Detector, FaultKind::Crash),
        (Stage::Executor, FaultKind::Hang),
        // The decider restores the open incident from its bucket and asks again for the
        // action in flight under the same action id (answered from the executor's ledger).
        (Stage::Decider, FaultKind::Crash),
    ] {
        let phase = format!("{stage} killed mid-incident ({fault})");
        world
            .healthy_snapshot(Duration::from_secs(60), &format!("before: {phase}"))
            .await;
        // past the decider's cooldown from the previous phase
        tokio::time::sleep(Duration::from_secs(3)).await;
        let since = fresh_since().await;
        let drains_before = drains(&world.demo).await;
        let mut anomalies = match stage {
            Stage::Detector => Some(
                world
                    .bus
                    .client()
                    .subscribe(ANOMALIES_ALL)
                    .await
                    .expect("subscribe to anomalies"),
            ),
            _ => None,
        };
        let run_id = world.inject(fault).await;
        match stage {
            // The detector has fired and stored the open episode: its next life must take
            // the episode back and clear it, or the decider never sees the service recover.
            Stage::Detector => {
                world
                    .fired_and_stored(
                        anomalies.as_mut().expect("subscribed for the detector"),
                        &phase,
                    )
                    .await;
            }
            // The fault is in: the die event or failing probes are on their way.
            Stage::Collector => {
                world
                    .audited(
                        &run_id,
                        Stage::Chaos,
                        "chaos.injected",
                        Duration::from_secs(30),
                    )
                    .await;
            }
            // The decider has asked for the restart and knows nothing more yet.
            Stage::Decider => {
                world
                    .audited(
                        &run_id,
                        Stage::Decider,
                        "action.requested",
                        Duration::from_secs(60),
                    )
                    .await;
            }
            // The restart is under way: the service got SIGTERM and drains.
            _ => {
                world
                    .audited(
                        &run_id,
                        Stage::Decider,
                        "action.requested",
                        Duration::from_secs(60),
                    )
                    .await;
                within(
                    Duration::from_secs(30),
                    &format!(
                        "{phase}: the executor to begin the restart (the demo logs 'draining')"
                    ),
                    async {
                        while drains(&world.demo).await <= drains_before {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    },
                )
                .await;
            }
        }
        let killed_at = Instant::now();
        world.stages.get_mut(stage).restart();
        world
            .audited(
                &run_id,
                Stage::Decider,
                "incident.recovered",
                Duration::from_secs(120),
            )
            .await;
        let recovered_ms = killed_at.elapsed().as_millis();
        world.assert_one_restart(&run_id, since, &phase).await;
        world.stages.assert_all_running();
        println!(
            "{phase}: incident recovered {recovered_ms} ms after the kill, one restart; \
             incident labelled with the chaos run: {}",
            world.labelled(&run_id).await
        );
    }
    world.assert_consumers_drained("after every kill").await;
}

/// How often the demo container has logged that it drains after SIGTERM.
async fn drains(demo: &DemoContainer) -> usize {
    let out = tokio::process::Command::new("docker")
        .args(["logs", &demo.id])
        .output()
        .await
        .expect("docker logs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.matches("draining").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn docker_briefly_unreachable_the_executor_retries_reports_and_restarts_once() {
    let project = unique("faults-docker");
    let mut proxy = DockerProxy::start().await;
    let docker_host = proxy.docker_host();
    let extra = [(Stage::Executor, "DOCKER_HOST", docker_host.as_str())];
    let mut world = World::start(DemoSpec::new("orders", &project), &extra).await;

    // The engine goes away for the executor only; the collector still sees the crash.
    proxy.cut();
    let since = fresh_since().await;
    let run_id = world.inject(FaultKind::Crash).await;
    world
        .audited(
            &run_id,
            Stage::Executor,
            "action.retrying",
            Duration::from_secs(60),
        )
        .await;
    let cut_for = Duration::from_secs(4);
    tokio::time::sleep(cut_for).await;
    // Still retrying, not given up: no result yet.
    let (requests, results) = world.actions_and_results(&run_id).await;
    assert_eq!(requests.len(), 1, "one action requested: {requests:?}");
    assert!(
        results.is_empty(),
        "the executor gave up while the engine was away: {results:?}"
    );
    let restored_at = Instant::now();
    proxy.restore().await;
    world
        .audited(
            &run_id,
            Stage::Decider,
            "incident.recovered",
            Duration::from_secs(90),
        )
        .await;
    let recovered_ms = restored_at.elapsed().as_millis();
    world
        .assert_one_restart(&run_id, since, "Docker unreachable, then back")
        .await;
    let log = world.stages.get_mut(Stage::Executor).log();
    let retries = log.matches("docker engine unreachable; retrying").count();
    assert!(
        retries >= 2,
        "the executor should have retried with backoff (logged {retries} retries)"
    );
    world.stages.assert_all_running();
    println!(
        "Docker cut for the executor: {retries} retries logged; incident recovered {recovered_ms} ms after the engine came back"
    );

    // Cut for longer than the retry budget: the executor gives up with a result that says why.
    tokio::time::sleep(Duration::from_secs(3)).await;
    world
        .healthy_snapshot(Duration::from_secs(60), "before the long cut")
        .await;
    proxy.cut();
    let run_id = world.inject(FaultKind::Crash).await;
    let failed = within(
        Duration::from_secs(90),
        "a failed result once the retry budget (half the 30 s action timeout) is spent",
        async {
            loop {
                let (_, results) = world.actions_and_results(&run_id).await;
                if let Some(r) = results.first() {
                    return r.clone();
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        },
    )
    .await;
    assert_eq!(failed.1, ActionOutcome::Failed, "{failed:?}");
    let trail = world.trail(&run_id).await.expect("read audit");
    let why = trail
        .iter()
        .find(|r| r.stage == Stage::Executor && r.what == "action.failed")
        .map(|r| r.why.clone())
        .unwrap_or_default();
    assert!(
        why.contains("docker engine unreachable"),
        "the failure says why: {why:?}"
    );
    proxy.restore().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_anomalies_keeps_budgets_and_every_anomaly_is_accounted_for() {
    const SERVICES: usize = 200;
    const GLOBAL_BURST: usize = 10;
    let nats = NatsServer::start().await;
    let project = unique("faults-flood");
    // Refill so slow it cannot add a token during the test: the bursts are the budgets.
    // The blast radius is opened wide so the budgets are what holds actions back. The
    // executor guards on a project no container has: every action fails (no such container),
    // so each incident goes on to its next step and meets its service budget.
    let extra = [
        (
            Stage::Decider,
            "IMMUNE_DECIDER__POLICY__MAX_SERVICES_ACTING",
            "1000",
        ),
        (
            Stage::Decider,
            "IMMUNE_DECIDER__POLICY__GLOBAL_BUDGET__BURST",
            "10",
        ),
        (
            Stage::Decider,
            "IMMUNE_DECIDER__POLICY__GLOBAL_BUDGET__PER_MINUTE",
            "0.001",
        ),
        (
            Stage::Decider,
            "IMMUNE_DECIDER__POLICY__SERVICE_BUDGET__BURST",
            "1",
        ),
        (
            Stage::Decider,
            "IMMUNE_DECIDER__POLICY__SERVICE_BUDGET__PER_MINUTE",
            "0.001",
        ),
    ];
    let mut stages = StageProcesses::start(
        &[Stage::Decider, Stage::Executor],
        &nats.url(),
        &project,
        &extra,
    );
    let bus = immune_tests::client_bus(&nats.url()).await;
    let services: Vec<ServiceName> = (0..SERVICES)
        .map(|i| ServiceName::new(format!("flood{i:03}")).expect("valid name"))
        .collect();
    let started = Instant::now();
    let publishing = services.iter().map(|service| {
        let anomaly = Anomaly {
            anomaly_id: unique("anomaly"),
            service: service.clone(),
            instance: format!("{service}-1"),
            container_id: format!("{project}-{service}"),
            state: AnomalyState::Firing,
            signature: Signature::Crashed,
            detector: "rule:flood".into(),
            score: 1.0,
            threshold: 0.5,
            contributions: Vec::new(),
            reason: "flood test".into(),
            started_ms: immune_nats::envelope::now_ms(),
            depends_on: Vec::new(),
        };
        let bus = &bus;
        async move {
            bus.publish(None, Event::Anomaly(anomaly))
                .await
                .expect("publish anomaly")
        }
    });
    futures::future::join_all(publishing).await;
    let published_ms = started.elapsed().as_millis();

    // The decider has taken and acknowledged every anomaly and result.
    within(
        Duration::from_secs(120),
        "the decider to acknowledge all 200 anomalies and the executor every request",
        async {
            loop {
                let decider = backlog(&bus, DECIDER).await;
                let executor = backlog(&bus, EXECUTOR).await;
                if decider == Ok((0, 0)) && executor == Ok((0, 0)) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        },
    )
    .await;
    // Give the failed results' next steps a few ticks to meet their budgets.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let drained_ms = started.elapsed().as_millis();

    let audit: Vec<AuditRecord> = stored(&bus, AUDIT, AUDIT_ALL)
        .await
        .expect("read audit")
        .into_iter()
        .filter_map(|(_, env)| match env.body {
            Event::Audit(a) if a.stage == Stage::Decider => Some(a),
            _ => None,
        })
        .collect();
    let requested: Vec<ServiceName> = stored(&bus, PIPELINE, ACTIONS_ALL)
        .await
        .expect("read actions")
        .into_iter()
        .filter_map(|(_, env)| match env.body {
            Event::ActionRequest(r) => Some(r.service),
            _ => None,
        })
        .collect();

    // Budgets held: the global burst in all, at most the service burst (1) per service.
    assert_eq!(
        requested.len(),
        GLOBAL_BURST,
        "the global budget of {GLOBAL_BURST} must be spent and not exceeded: {requested:?}"
    );
    let distinct: BTreeSet<&ServiceName> = requested.iter().collect();
    assert_eq!(
        distinct.len(),
        requested.len(),
        "a service got more than its budget of 1 action: {requested:?}"
    );
    // Every anomaly was seen: an incident for each service, and each service either had its
    // action requested or an audit record names the budget that holds it.
    let with = |what: &str| -> BTreeSet<ServiceName> {
        audit
            .iter()
            .filter(|a| a.what == what)
            .map(|a| a.service.clone())
            .collect()
    };
    let opened = with("incident.opened");
    let missing: Vec<&ServiceName> = services.iter().filter(|s| !opened.contains(s)).collect();
    assert!(
        missing.is_empty(),
        "{} anomalies led to no incident: {missing:?}",
        missing.len()
    );
    let blocked: BTreeMap<ServiceName, String> = audit
        .iter()
        .filter(|a| a.what == "action.blocked")
        .map(|a| (a.service.clone(), a.outcome.clone()))
        .collect();
    let unexplained: Vec<&ServiceName> = services
        .iter()
        .filter(|s| !distinct.contains(s) && !blocked.contains_key(*s))
        .collect();
    assert!(
        unexplained.is_empty(),
        "services with neither an action nor a reason why not: {unexplained:?}"
    );
    let by_global = blocked
        .values()
        .filter(|o| o.contains("global_budget"))
        .count();
    assert!(
        by_global >= SERVICES - GLOBAL_BURST,
        "{by_global} services held by the global budget, expected at least {}",
        SERVICES - GLOBAL_BURST
    );
    let by_service = blocked
        .iter()
        .filter(|(s, o)| distinct.contains(s) && o.contains("service_budget"))
        .count();
    stages.assert_all_running();
    println!(
        "flood: {SERVICES} anomalies published in {published_ms} ms; all handled within {drained_ms} ms; \
         {} actions requested (global burst {GLOBAL_BURST}); {by_global} held by the global budget; \
         {by_service} acted-on services' next step held by their own budget",
        requested.len()
    );
}
