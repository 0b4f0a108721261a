//! The chaos stage: breaks things on purpose, within guardrails, and always puts them back.
//!
//! Requests arrive on `immune.chaos.requests` from any NATS client (the `inject` command,
//! tests, a user's own code). A fault is injected only into a running container of the
//! requested service that is managed, of the configured project and labelled
//! `immune.chaos=true`, and only while fewer than `max_concurrent_faults` are in force.
//! Every injection is published as `ChaosInjected` with the chaos run id as correlation id,
//! and reverted automatically when its duration ends (or at once when the stage stops),
//! published as `ChaosReverted`. Refusals are published as `ChaosRejected` with the reason.
//!
//! Faults in force are kept in the KV bucket `immune_chaos_faults` (what was done and how to
//! undo it), so a chaos process that starts after another one died reverts what is due. The
//! kill switch is key `kill_switch` of bucket `immune_chaos_control` (`on`: every fault in
//! force is reverted at once and every request is refused; changeable at run time with
//! `immune-chaos kill-switch on|off`). With
//! `dry_run = true` a request passes the guardrails and is recorded (`chaos.dry_run` audit,
//! `ChaosRejected` saying what would have been done) but nothing is touched.
//!
//! Other triggers, all sending ordinary requests through these guardrails: the random
//! schedule ([`schedule`], `[schedule]` in the config) and experiment files ([`experiment`],
//! `immune-chaos run`). The `attack` fault and `immune-chaos attack` use [`attack`].

pub mod attack;
pub mod experiment;
pub mod faults;
pub mod follow;
pub mod schedule;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::{StreamExt, TryStreamExt};
use immune_nats::streams::{CHAOS, CHAOS_CONTROL, CHAOS_FAULTS};
use immune_nats::{
    envelope::now_ms, AuditCode, ChaosInjected, ChaosRejected, ChaosRequest, ChaosReverted,
    ContainerState, Event, EventId, Stage,
};
use immune_runtime::docker::{self, ManagedContainer};
use immune_runtime::telemetry::Observation;
use immune_runtime::{
    Audit, Bus, BusConfig, BusError, ConfigError, Delivery, Disposition, Shutdown, Telemetry,
    TelemetryConfig,
};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tracing::Instrument;

pub use faults::{Injector, Undo};

/// The kill switch's key in the control bucket.
pub const KILL_SWITCH: &str = "kill_switch";

pub const STAGE: Stage = Stage::Chaos;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub nats: BusConfig,
    pub telemetry: TelemetryConfig,
    /// Only containers labelled `immune.project=<project>`; unset: any managed one.
    pub project: Option<String>,
    pub max_concurrent_faults: usize,
    /// Used when a request asks for a duration of 0.
    pub default_duration_ms: u64,
    /// Longest duration a request may ask for.
    pub max_duration_ms: u64,
    /// Record what would be injected, inject nothing.
    pub dry_run: bool,
    /// The random schedule (off unless enabled).
    pub schedule: schedule::ScheduleConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            nats: BusConfig::default(),
            telemetry: TelemetryConfig::default(),
            project: None,
            max_concurrent_faults: 3,
            default_duration_ms: 30_000,
            max_duration_ms: 600_000,
            dry_run: false,
            schedule: schedule::ScheduleConfig::default(),
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_concurrent_faults == 0 {
            return Err(ConfigError::Invalid(
                "max_concurrent_faults: must be at least 1".into(),
            ));
        }
        if self.default_duration_ms == 0 || self.default_duration_ms > self.max_duration_ms {
            return Err(ConfigError::Invalid(
                "default_duration_ms: must be between 1 and max_duration_ms".into(),
            ));
        }
        self.schedule.validate().map_err(ConfigError::Invalid)?;
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Docker(#[from] docker::TargetError),
    #[error("faults in force: {0}")]
    FaultsInForce(String),
}

impl ChaosError {
    pub fn kind(&self) -> &'static str {
        match self {
            ChaosError::Bus(e) => e.kind(),
            ChaosError::Docker(e) => e.kind(),
            ChaosError::FaultsInForce(_) => "faults_in_force",
        }
    }
}

/// A fault in force as kept in the bus: enough for any chaos process to revert it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveFault {
    /// Its key in the faults bucket.
    pub key: String,
    pub injected: ChaosInjected,
    #[serde(default)]
    pub undo: Undo,
}

/// What became of a request.
#[derive(Debug)]
enum Outcome {
    Injected(ActiveFault),
    /// Passed the guardrails in dry-run mode: what would have been done.
    DryRun(String),
    Rejected(String),
}

/// What the stage's tasks share.
#[derive(Debug, Clone)]
struct Chaos {
    config: Arc<Config>,
    bus: Bus,
    injector: Injector,
    faults: kv::Store,
    control: kv::Store,
    in_force: Arc<AtomicUsize>,
    /// Flips to true when the kill switch is engaged: every fault in force is reverted now.
    halted: tokio::sync::watch::Receiver<bool>,
}

/// Reads the kill switch: `Ok(true)` when engaged.
pub async fn kill_switch(control: &kv::Store) -> Result<bool, String> {
    match control.get(KILL_SWITCH).await {
        Ok(value) => Ok(value.is_some_and(|v| v.as_ref() == b"on")),
        Err(e) => Err(e.to_string()),
    }
}

/// Engages (`true`) or releases the kill switch, from any process on the bus.
pub async fn set_kill_switch(bus: &Bus, on: bool) -> Result<(), BusError> {
    let control = bus.bucket(CHAOS_CONTROL).await?;
    control
        .put(KILL_SWITCH, if on { "on" } else { "off" }.into())
        .await
        .map_err(|e| BusError::KeyValue {
            bucket: CHAOS_CONTROL.name.to_string(),
            reason: e.to_string(),
        })?;
    Ok(())
}

/// Faults a previous chaos process left in force.
pub async fn faults_in_force(faults: &kv::Store) -> Result<Vec<ActiveFault>, ChaosError> {
    let keys: Vec<String> = faults
        .keys()
        .await
        .map_err(|e| ChaosError::FaultsInForce(e.to_string()))?
        .try_collect()
        .await
        .map_err(|e| ChaosError::FaultsInForce(e.to_string()))?;
    let mut active = Vec::new();
    for key in keys {
        let Ok(Some(value)) = faults.get(&key).await else {
            continue;
        };
        match serde_json::from_slice::<ActiveFault>(&value) {
            Ok(fault) => active.push(fault),
            Err(e) => {
                tracing::warn!(%key, error = %e, "unreadable fault record; dropped");
                let _ = faults.purge(&key).await;
            }
        }
    }
    Ok(active)
}

/// Runs until `shutdown`; faults still in force are reverted before it returns.
pub async fn run(
    config: Config,
    telemetry: Telemetry,
    mut shutdown: Shutdown,
) -> Result<(), ChaosError> {
    let bus = Bus::start_stage(
        &config.nats,
        &config.telemetry,
        telemetry.clone(),
        &shutdown,
    )
    .await?;
    let control = bus.bucket(CHAOS_CONTROL).await?;
    let (halt, halted) = tokio::sync::watch::channel(false);
    let chaos = Chaos {
        faults: bus.bucket(CHAOS_FAULTS).await?,
        halted,
        control,
        config: Arc::new(config),
        injector: Injector::new(docker::connect()?),
        in_force: Arc::default(),
        bus,
    };
    let mut inbox = chaos.bus.inbox(CHAOS).await?;
    let mut reverts = JoinSet::new();
    // What a chaos process that stopped without reverting left behind: revert it when due.
    for active in faults_in_force(&chaos.faults).await? {
        tracing::info!(run_id = %active.injected.run_id, service = %active.injected.service, fault = %active.injected.fault, revert_at_ms = active.injected.revert_at_ms, "fault left in force by a previous chaos process");
        chaos.in_force.fetch_add(1, Ordering::SeqCst);
        reverts.spawn(revert_later(chaos.clone(), active, shutdown.clone()));
    }
    reverts.spawn(watch_kill_switch(
        chaos.control.clone(),
        halt,
        shutdown.clone(),
    ));
    if chaos.config.schedule.enabled {
        reverts.spawn(scheduled(
            chaos.bus.clone(),
            chaos.config.schedule.clone(),
            shutdown.clone(),
        ));
    }
    tracing::info!(project = ?chaos.config.project, dry_run = chaos.config.dry_run, "chaos running");
    loop {
        let delivery = tokio::select! {
            _ = shutdown.wait() => break,
            d = inbox.next() => d,
        };
        while reverts.try_join_next().is_some() {}
        let disposition = handle(&chaos, &delivery, &mut reverts, &shutdown)
            .instrument(delivery.span().clone())
            .await;
        delivery.settle(disposition).await;
    }
    // Put back what is still broken before leaving.
    let all_reverted = tokio::time::timeout(Duration::from_secs(15), async {
        while reverts.join_next().await.is_some() {}
    })
    .await;
    if all_reverted.is_err() {
        tracing::error!("some faults could not be reverted within 15 s");
    }
    // Closing the connection withdraws the consumer's outstanding pull, so the next chaos
    // process gets the next request at once rather than after the ack wait.
    drop(inbox);
    chaos.bus.close().await;
    tracing::info!("chaos stopped");
    Ok(())
}

/// Carries out one chaos request (injected, dry run or refused, announced either way); done
/// once announced, else delivered again.
async fn handle(
    chaos: &Chaos,
    delivery: &Delivery,
    reverts: &mut JoinSet<()>,
    shutdown: &Shutdown,
) -> Disposition {
    let telemetry = chaos.bus.telemetry();
    let Event::ChaosRequest(request) = &delivery.envelope.body else {
        telemetry.refused("unexpected_event", delivery.envelope.body.kind());
        return Disposition::Done;
    };
    let run_id = request
        .run_id
        .clone()
        .or_else(|| delivery.envelope.correlation_id.clone())
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    // A request is delivered again when its acknowledgement was lost (this process
    // stopped, or the announcement failed, after the injection): its fault is not
    // injected twice.
    let key = fault_key(&delivery.envelope.event_id);
    match chaos.faults.entry(&key).await {
        Ok(None) => {}
        Ok(Some(earlier)) => {
            telemetry.refused("chaos_request", "delivered_again");
            // Still in force: announce it again (the first announcement may be what
            // failed). Already reverted: nothing is left to say.
            let published = match (
                earlier.operation,
                serde_json::from_slice::<ActiveFault>(&earlier.value),
            ) {
                (kv::Operation::Put, Ok(active)) => {
                    announce_injected(&chaos.bus, &active.injected).await
                }
                _ => Ok(()),
            };
            return settled(published);
        }
        // Unknown whether it was handled: left unacknowledged, it comes back.
        Err(e) => {
            telemetry.failed("read_fault", &e);
            return Disposition::Retry;
        }
    }
    let published = match inject(chaos, &run_id, request, key).await {
        Outcome::Injected(active) => {
            let published = announce_injected(&chaos.bus, &active.injected).await;
            reverts.spawn(revert_later(chaos.clone(), active, shutdown.clone()));
            published
        }
        Outcome::DryRun(would) => announce_dry_run(&chaos.bus, &run_id, request, would).await,
        Outcome::Rejected(reason) => announce_rejected(&chaos.bus, &run_id, request, reason).await,
    };
    settled(published)
}

/// Done once announced; an announcement that failed (counted where it failed) is made
/// again when the request comes back.
fn settled(announced: Result<(), BusError>) -> Disposition {
    match announced {
        Ok(()) => Disposition::Done,
        Err(_) => Disposition::Retry,
    }
}

/// Follows the kill switch: engaged, every fault in force is reverted at once (and new
/// requests are refused, see [`inject`]); released, faults may be injected again.
async fn watch_kill_switch(
    control: kv::Store,
    halt: tokio::sync::watch::Sender<bool>,
    mut shutdown: Shutdown,
) {
    let mut attempt = 0u32;
    loop {
        let mut changes = match control.watch_with_history(KILL_SWITCH).await {
            Ok(changes) => changes,
            Err(e) => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "cannot watch the kill switch");
                tokio::select! {
                    _ = shutdown.wait() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            let change = tokio::select! {
                _ = shutdown.wait() => return,
                c = changes.next() => c,
            };
            let Some(Ok(entry)) = change else { break };
            let on = entry.operation == kv::Operation::Put && entry.value.as_ref() == b"on";
            if on != *halt.borrow() {
                tracing::warn!(engaged = on, "chaos kill switch changed");
            }
            halt.send_replace(on);
        }
    }
}

/// The random schedule: what it draws is published as a request, like any client's.
async fn scheduled(bus: Bus, config: schedule::ScheduleConfig, mut shutdown: Shutdown) {
    let seed = config.seed.unwrap_or_else(now_ms);
    let mut rng = schedule::Rng::seeded(seed);
    let mut tick = tokio::time::interval(Duration::from_millis(config.interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tracing::info!(
        seed,
        interval_ms = config.interval_ms,
        probability = config.probability,
        "chaos schedule on"
    );
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tick.tick() => {}
        }
        let Some(request) = schedule::draw(&config, &mut rng, now_ms()) else {
            continue;
        };
        tracing::info!(service = %request.service, fault = %request.fault, "the schedule drew a fault");
        if let Err(e) = follow::request(&bus, request).await {
            bus.telemetry().observe(Observation::Failed {
                what: "publish_scheduled_request",
                error: &e.to_string(),
            });
        }
    }
}

/// The key in the faults bucket of the fault a request injects: the request's event id,
/// which a delivery of the same request again shares.
fn fault_key(request: &EventId) -> String {
    format!("fault.{}", immune_nats::streams::kv_key_part(&request.0))
}

/// Picks the target under the guardrails and injects (the fault kept under `key`), or says
/// why it will not.
async fn inject(chaos: &Chaos, run_id: &str, request: &ChaosRequest, key: String) -> Outcome {
    let config = &chaos.config;
    match kill_switch(&chaos.control).await {
        Ok(false) => {}
        Ok(true) => return Outcome::Rejected("the chaos kill switch is engaged".into()),
        Err(e) => return Outcome::Rejected(format!("cannot read the kill switch ({e}): refusing")),
    }
    let managed =
        match docker::list_managed(chaos.injector.docker(), config.project.as_deref()).await {
            Ok(managed) => managed,
            Err(e) => return Outcome::Rejected(format!("cannot list containers: {e}")),
        };
    let candidates: Vec<ManagedContainer> = managed
        .into_iter()
        .flatten()
        .filter(|c| c.service == request.service && c.state == ContainerState::Running)
        .collect();
    let Some(target) = candidates.iter().find(|c| c.chaos).cloned() else {
        return Outcome::Rejected(if candidates.is_empty() {
            format!(
                "no running managed container of service {} in project {:?}",
                request.service, config.project
            )
        } else {
            format!(
                "no container of service {} is labelled immune.chaos=true",
                request.service
            )
        });
    };
    let duration_ms = match request.duration_ms {
        0 => config.default_duration_ms,
        d if d > config.max_duration_ms => {
            return Outcome::Rejected(format!(
                "duration {d} ms exceeds max_duration_ms {}",
                config.max_duration_ms
            ))
        }
        d => d,
    };
    if config.dry_run {
        return Outcome::DryRun(format!(
            "dry run: would inject {} into {} for {duration_ms} ms with {:?}",
            request.fault, target.name, request.params
        ));
    }
    if chaos.in_force.fetch_add(1, Ordering::SeqCst) >= config.max_concurrent_faults {
        chaos.in_force.fetch_sub(1, Ordering::SeqCst);
        return Outcome::Rejected(format!(
            "{} faults already in force (max_concurrent_faults)",
            config.max_concurrent_faults
        ));
    }
    let undo = match chaos
        .injector
        .inject(&target, request.fault, &request.params, &key)
        .await
    {
        Ok(undo) => undo,
        Err(e) => {
            chaos.in_force.fetch_sub(1, Ordering::SeqCst);
            return Outcome::Rejected(format!("injection failed: {e}"));
        }
    };
    let injected_ms = now_ms();
    let active = ActiveFault {
        key,
        injected: ChaosInjected {
            run_id: run_id.to_string(),
            service: target.service.clone(),
            instance: target.name.clone(),
            container_id: target.id.clone(),
            fault: request.fault,
            params: request.params.clone(),
            injected_ms,
            revert_at_ms: injected_ms + duration_ms,
        },
        undo,
    };
    // Kept in the bus before it is announced, so another chaos process can revert it.
    let record = serde_json::to_vec(&active).unwrap_or_default();
    if let Err(e) = chaos.faults.put(&active.key, record.into()).await {
        chaos.bus.telemetry().observe(Observation::Failed {
            what: "record_fault",
            error: &e.to_string(),
        });
    }
    Outcome::Injected(active)
}

async fn announce_injected(bus: &Bus, injected: &ChaosInjected) -> Result<(), BusError> {
    let run_id = injected.run_id.as_str();
    tracing::info!(run_id, service = %injected.service, fault = %injected.fault, instance = %injected.instance, "fault injected");
    bus.telemetry().observe(Observation::Acted {
        what: injected.fault.as_str(),
        service: injected.service.as_str(),
    });
    let correlation = Some(run_id.to_string());
    let id = bus
        .publish(correlation.clone(), Event::ChaosInjected(injected.clone()))
        .await?;
    let why = format!(
        "chaos request for {} on {}",
        injected.fault, injected.service
    );
    let outcome = format!(
        "{} injected into {} with {:?}, reverted in {} ms",
        injected.fault,
        injected.instance,
        injected.params,
        injected.revert_at_ms - injected.injected_ms
    );
    bus.audit(
        correlation,
        Audit::new(&injected.service, AuditCode::ChaosInjected, why, outcome).about(id),
    )
    .await?;
    Ok(())
}

/// A request not carried out: dry run (it says what it would have done) or refused.
async fn announce_dry_run(
    bus: &Bus,
    run_id: &str,
    request: &ChaosRequest,
    would: String,
) -> Result<(), BusError> {
    tracing::info!(run_id, service = %request.service, fault = %request.fault, "{would}");
    bus.telemetry().observe(Observation::Refused {
        what: "chaos_request",
        reason: "dry_run",
    });
    let why = format!("chaos request for {} on {}", request.fault, request.service);
    not_injected(
        bus,
        run_id,
        request,
        AuditCode::ChaosDryRun,
        would.clone(),
        why,
        would,
    )
    .await
}

async fn announce_rejected(
    bus: &Bus,
    run_id: &str,
    request: &ChaosRequest,
    reason: String,
) -> Result<(), BusError> {
    bus.telemetry().observe(Observation::Refused {
        what: "chaos_request",
        reason: &reason,
    });
    let outcome = "nothing injected".to_string();
    not_injected(
        bus,
        run_id,
        request,
        AuditCode::ChaosRejected,
        reason.clone(),
        reason,
        outcome,
    )
    .await
}

/// Publishes the `ChaosRejected` event and its audit record.
async fn not_injected(
    bus: &Bus,
    run_id: &str,
    request: &ChaosRequest,
    what: AuditCode,
    reason: String,
    why: String,
    outcome: String,
) -> Result<(), BusError> {
    let rejected = ChaosRejected {
        run_id: run_id.to_string(),
        service: request.service.clone(),
        fault: request.fault,
        reason,
    };
    let correlation = Some(run_id.to_string());
    let id = bus
        .publish(correlation.clone(), Event::ChaosRejected(rejected))
        .await?;
    bus.audit(
        correlation,
        Audit::new(&request.service, what, why, outcome).about(id),
    )
    .await?;
    Ok(())
}

/// Waits until the fault's time is up (or the stage stops), reverts it, and says so.
async fn revert_later(chaos: Chaos, active: ActiveFault, mut shutdown: Shutdown) {
    let injected = &active.injected;
    let wait = Duration::from_millis(injected.revert_at_ms.saturating_sub(now_ms()));
    let mut halted = chaos.halted.clone();
    let why = tokio::select! {
        _ = tokio::time::sleep(wait) => "the fault's time was up",
        _ = shutdown.wait() => "the chaos stage is stopping",
        Ok(_) = halted.wait_for(|on| *on) => "the chaos kill switch was engaged",
    };
    let note = chaos
        .injector
        .revert(
            &injected.container_id,
            injected.fault,
            &active.key,
            &active.undo,
        )
        .await;
    chaos.in_force.fetch_sub(1, Ordering::SeqCst);
    if let Err(e) = chaos.faults.purge(&active.key).await {
        chaos.bus.telemetry().observe(Observation::Failed {
            what: "forget_fault",
            error: &e.to_string(),
        });
    }
    tracing::info!(run_id = %injected.run_id, service = %injected.service, fault = %injected.fault, %note, "fault reverted");
    let reverted = ChaosReverted {
        run_id: injected.run_id.clone(),
        service: injected.service.clone(),
        instance: injected.instance.clone(),
        fault: injected.fault,
        note: note.clone(),
        reverted_ms: now_ms(),
    };
    let correlation = Some(injected.run_id.clone());
    let bus = &chaos.bus;
    let published = async {
        let id = bus
            .publish(correlation.clone(), Event::ChaosReverted(reverted))
            .await?;
        bus.audit(
            correlation,
            Audit::new(&injected.service, AuditCode::ChaosReverted, why, note).about(id),
        )
        .await
    };
    if let Err(e) = published.await {
        bus.telemetry().observe(Observation::Failed {
            what: "publish_revert",
            error: &e.to_string(),
        });
    }
}
