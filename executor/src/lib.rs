//! The executor: the only stage that changes anything.
//!
//! It takes action requests from its durable consumer (instances sharing the consumer share
//! the work) and carries each one out exactly once through an actuator: Docker
//! ([`docker_actuators`]) or the service's admin endpoint ([`admin`]). What happens to one
//! request — ledger, plan and guards, lock, attempt, act, store, publish, audit, settle — is
//! the protocol in [`request`]; this file holds the config, the error and [`run`], the
//! consumer loop that hands up to `max_in_flight` requests at once to it.
//!
//! A Docker engine that cannot be reached when a request arrives is waited for: the lookup
//! of the container is retried with backoff for up to half the request's timeout
//! ([`error_policy`]), audited (`action.retrying`) and counted, then the request fails with
//! the reason. See the README section "executor" for what is and is not guaranteed.

pub mod actuator;
pub mod admin;
pub mod docker_actuators;
pub mod error_policy;
pub mod ledger;
pub mod lock;
pub mod plan;
pub mod request;

use std::sync::Arc;
use std::time::Duration;

use immune_nats::streams::{BucketSpec, ConsumerSpec, EXECUTOR, EXECUTOR_LOCKS, EXECUTOR_RESULTS};
use immune_nats::Stage;
use immune_runtime::{
    docker, Bus, BusConfig, BusError, ConfigError, Shutdown, Telemetry, TelemetryConfig,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::Instrument;

pub use actuator::{ActError, Actuators};
use docker_actuators::DockerActuators;
use ledger::Ledger;
use lock::Locks;
use request::Executor;

pub const STAGE: Stage = Stage::Executor;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub nats: BusConfig,
    pub telemetry: TelemetryConfig,
    /// Only containers labelled `immune.project=<project>` are touched; unset: any managed one.
    pub project: Option<String>,
    /// How long a crashed executor's container lock outlives it (the lock bucket's max age,
    /// set by the executor that creates the bucket). Held locks are renewed every third.
    pub lock_ttl_ms: u64,
    /// How long a request waits for a container locked by another action before it is
    /// handed back to the consumer (redelivered a second later).
    pub lock_wait_ms: u64,
    /// The ack wait of the durable consumer when this executor creates it: how soon a
    /// request taken by a crashed executor is delivered again. Work in progress is reported
    /// to the server every third of it, so a long action is not redelivered meanwhile.
    pub ack_wait_ms: u64,
    /// Requests carried out at once by this instance (on different containers).
    pub max_in_flight: usize,
    /// The longest timeout a request may have; longer ones are cut to this.
    pub max_action_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            nats: BusConfig::default(),
            telemetry: TelemetryConfig::default(),
            project: None,
            lock_ttl_ms: EXECUTOR_LOCKS.max_age.as_millis() as u64,
            lock_wait_ms: 30_000,
            ack_wait_ms: 30_000,
            max_in_flight: 4,
            max_action_ms: 120_000,
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if self.project.as_deref() == Some("") {
            return invalid("project: must not be empty (leave it out instead)");
        }
        if self.lock_ttl_ms < 1_000 {
            return invalid("lock_ttl_ms: at least 1000");
        }
        if self.ack_wait_ms < 1_000 {
            return invalid("ack_wait_ms: at least 1000");
        }
        if self.max_in_flight == 0 {
            return invalid("max_in_flight: at least 1");
        }
        if self.max_action_ms == 0 {
            return invalid("max_action_ms: at least 1");
        }
        Ok(())
    }

    fn consumer(&self) -> ConsumerSpec {
        ConsumerSpec {
            ack_wait: Duration::from_millis(self.ack_wait_ms),
            ..EXECUTOR
        }
    }

    fn locks(&self) -> BucketSpec {
        BucketSpec {
            max_age: Duration::from_millis(self.lock_ttl_ms),
            ..EXECUTOR_LOCKS
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Docker(#[from] docker::TargetError),
}

impl ExecutorError {
    pub fn kind(&self) -> &'static str {
        match self {
            ExecutorError::Bus(e) => e.kind(),
            ExecutorError::Docker(e) => e.kind(),
        }
    }
}

/// Runs until `shutdown`; actions in progress are finished first.
pub async fn run(
    config: Config,
    telemetry: Telemetry,
    mut shutdown: Shutdown,
) -> Result<(), ExecutorError> {
    let bus = Bus::start_stage(
        &config.nats,
        &config.telemetry,
        telemetry.clone(),
        &shutdown,
    )
    .await?;
    let ledger = Ledger::new(bus.bucket(EXECUTOR_RESULTS).await?);
    let locks = Locks::new(
        bus.bucket(config.locks()).await?,
        Duration::from_millis(config.lock_ttl_ms),
        bus.producer().instance.clone(),
    );
    let mut inbox = bus
        .inbox_batched(config.consumer(), Some(config.max_in_flight))
        .await?;
    let executor = Arc::new(Executor {
        actuators: Actuators {
            docker: DockerActuators::new(docker::connect()?),
            admin: admin::AdminActuator::new(),
        },
        bus,
        ledger,
        locks,
        config,
    });
    tracing::info!(project = ?executor.config.project, instance = %executor.bus.producer().instance, "executor running");
    let slots = Arc::new(Semaphore::new(executor.config.max_in_flight));
    let mut in_flight = JoinSet::new();
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let delivery = tokio::select! {
            _ = shutdown.wait() => break,
            d = inbox.next() => d,
        };
        let executor = executor.clone();
        in_flight.spawn(async move {
            let disposition = executor
                .handle(&delivery)
                .instrument(delivery.span().clone())
                .await;
            delivery.settle(disposition).await;
            drop(slot);
        });
        // Reap finished tasks so the set does not grow.
        while in_flight.try_join_next().is_some() {}
    }
    // Stop consuming; let the actions in progress finish and report.
    while in_flight.join_next().await.is_some() {}
    executor.bus.close().await;
    tracing::info!("executor stopped");
    Ok(())
}
