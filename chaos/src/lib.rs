//! The chaos stage: breaks things on purpose, within guardrails, and always puts them back.
//!
//! Requests arrive on `immune.chaos.requests` from any NATS client (`immune chaos inject`,
//! tests, a user's own code). The [`guardrails`] decide each one ([`guardrails::admit`], a
//! pure function): a fault is injected only into a running container of the requested
//! service that is managed, of the configured project and labelled `immune.chaos=true`, and
//! only while fewer than `max_concurrent_faults` are in force. Every injection is announced
//! ([`announce`]) as `ChaosInjected` with the chaos run id as correlation id, and reverted
//! automatically when its duration ends (or at once when the stage stops), announced as
//! `ChaosReverted`. Refusals are announced as `ChaosRejected` with the reason.
//!
//! Faults in force ([`in_force`]) are kept in the KV bucket `immune_chaos_faults` (what was
//! done and how to undo it), so a chaos process that starts after another one died reverts
//! what is due. The [`kill_switch`] is key `kill_switch` of bucket `immune_chaos_control`
//! (`on`: every fault in force is reverted at once and every request is refused; changeable
//! at run time with `immune kill-switch on|off --chaos`). With `dry_run = true` a request
//! passes the guardrails and is recorded (`chaos.dry_run` audit, `ChaosRejected` saying what
//! would have been done) but nothing is touched.
//!
//! Other triggers, all sending ordinary requests through these guardrails: the random
//! schedule ([`schedule`], `[schedule]` in the config) and experiment files ([`experiment`],
//! `immune chaos run`). The `attack` fault and `immune chaos attack` use [`attack`]; the
//! client side (request, answer, follow the run) is [`follow`].
//!
//! This file is the stage's config, error and [`run`], with the handling of one request.

pub mod announce;
pub mod attack;
pub mod experiment;
pub mod faults;
pub mod follow;
pub mod guardrails;
pub mod in_force;
pub mod kill_switch;
pub mod loadgen;
pub mod schedule;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use immune_nats::streams::{CHAOS, CHAOS_CONTROL, CHAOS_FAULTS};
use immune_nats::{ChaosRequest, Event, Stage};
use immune_runtime::docker::{self, ManagedContainer};
use immune_runtime::{
    Bus, BusConfig, BusError, ConfigError, Delivery, Disposition, Shutdown, Telemetry,
    TelemetryConfig,
};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tracing::Instrument;

pub use faults::{Injector, Undo};
pub use in_force::{faults_in_force, ActiveFault};
pub use kill_switch::{kill_switch, set_kill_switch, KILL_SWITCH};

use guardrails::{Admission, Admitted, KillSwitch};

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

/// What became of a request.
#[derive(Debug)]
enum Outcome {
    Injected(ActiveFault),
    /// Passed the guardrails in dry-run mode: what would have been done.
    DryRun(Admitted),
    Rejected(String),
}

/// What the stage's tasks share.
#[derive(Debug, Clone)]
pub(crate) struct Chaos {
    pub(crate) config: Arc<Config>,
    pub(crate) bus: Bus,
    pub(crate) injector: Injector,
    pub(crate) faults: kv::Store,
    pub(crate) control: kv::Store,
    /// How many faults are in force (the guardrails' `max_concurrent_faults`).
    pub(crate) in_force: Arc<AtomicUsize>,
    /// Flips to true when the kill switch is engaged: every fault in force is reverted now.
    pub(crate) halted: tokio::sync::watch::Receiver<bool>,
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
        reverts.spawn(in_force::revert_later(
            chaos.clone(),
            active,
            shutdown.clone(),
        ));
    }
    reverts.spawn(kill_switch::watch_kill_switch(
        chaos.control.clone(),
        halt,
        shutdown.clone(),
    ));
    if chaos.config.schedule.enabled {
        reverts.spawn(schedule::publish_draws(
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
    let key = in_force::fault_key(&delivery.envelope.event_id);
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
                    announce::injected(&chaos.bus, &active.injected).await
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
    let published = match carry_out(chaos, &run_id, request, key).await {
        Outcome::Injected(active) => {
            let published = announce::injected(&chaos.bus, &active.injected).await;
            reverts.spawn(in_force::revert_later(
                chaos.clone(),
                active,
                shutdown.clone(),
            ));
            published
        }
        Outcome::DryRun(admitted) => {
            announce::dry_run(&chaos.bus, &run_id, request, &admitted).await
        }
        Outcome::Rejected(reason) => announce::rejected(&chaos.bus, &run_id, request, reason).await,
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

/// Reads what the guardrails judge by (the kill switch, the managed containers), lets
/// [`guardrails::admit`] decide, and injects what it admits (the fault kept under `key`).
async fn carry_out(chaos: &Chaos, run_id: &str, request: &ChaosRequest, key: String) -> Outcome {
    let config = &chaos.config;
    let switch = KillSwitch::from(kill_switch(&chaos.control).await);
    // With the switch engaged or unreadable the request is refused whatever the containers
    // are, so Docker is not asked.
    let containers: Vec<ManagedContainer> = if switch == KillSwitch::Released {
        match docker::list_managed(chaos.injector.docker(), config.project.as_deref()).await {
            Ok(managed) => managed.into_iter().flatten().collect(),
            Err(e) => return Outcome::Rejected(format!("cannot list containers: {e}")),
        }
    } else {
        Vec::new()
    };
    let in_force = chaos.in_force.load(Ordering::SeqCst);
    match guardrails::admit(config, request, &switch, &containers, in_force) {
        Admission::Refused(refusal) => Outcome::Rejected(refusal.to_string()),
        Admission::DryRun(admitted) => Outcome::DryRun(admitted),
        Admission::Inject(admitted) => {
            match in_force::put_in_force(chaos, run_id, request, admitted, key).await {
                Ok(active) => Outcome::Injected(active),
                Err(reason) => Outcome::Rejected(reason),
            }
        }
    }
}
