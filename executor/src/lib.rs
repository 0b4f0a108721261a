//! The executor: the only stage that changes anything.
//!
//! It takes action requests from its durable consumer (instances sharing the consumer share
//! the work), reads each request's parameters into a [`plan::Step`] and checks the guards
//! (the container opted in, belongs to the configured project and to the service the request
//! names), then carries the step out within the request's timeout through an actuator:
//! Docker ([`docker_actuators`]) or the service's admin endpoint ([`admin`]).
//!
//! Exactly once, in this order: a stored result for the action id is republished and
//! nothing else happens; otherwise the container's lock is taken ([`lock`]), the stored
//! result checked again, the attempt recorded ([`ledger`]), the action carried out, its
//! result stored, the lock released, the result published, and only then the request
//! acknowledged. See the README section "executor" for what is and is not guaranteed.
//!
//! A Docker engine that cannot be reached when a request arrives is waited for: the lookup
//! of the container is retried with backoff for up to half the request's timeout
//! ([`error_policy`]), audited (`action.retrying`) and counted, then the request fails with
//! the reason.

pub mod actuator;
pub mod admin;
pub mod docker_actuators;
pub mod error_policy;
pub mod ledger;
pub mod lock;
pub mod plan;

use std::sync::Arc;
use std::time::{Duration, Instant};

use immune_nats::streams::{BucketSpec, ConsumerSpec, EXECUTOR, EXECUTOR_LOCKS, EXECUTOR_RESULTS};
use immune_nats::{
    envelope::now_ms, ActionOutcome, ActionRequest, ActionResult, AuditCode, Envelope, Event, Stage,
};
use immune_runtime::docker::TargetError;
use immune_runtime::telemetry::Observation;
use immune_runtime::{
    docker, Audit, Bus, BusConfig, BusError, ConfigError, Delivery, Disposition, Shutdown,
    Telemetry, TelemetryConfig,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::Instrument;

pub use actuator::{ActError, Actuators};
use docker_actuators::{is_not_found, DockerActuators, Target};
use ledger::{Attempt, Ledger};
use lock::Locks;
use plan::Step;

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

/// Everything one request needs, shared by the tasks carrying requests out.
#[derive(Debug)]
struct Executor {
    bus: Bus,
    ledger: Ledger,
    locks: Locks,
    actuators: Actuators,
    config: Config,
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

/// The Docker engine stayed unreachable for as long as the error policy allows.
#[derive(Debug)]
struct Unreached {
    attempts: u32,
    for_ms: u64,
    error: String,
}

/// How one request ended, before it is published.
#[derive(Debug)]
struct Done {
    outcome: Result<String, ActError>,
    duration: Duration,
}

impl Executor {
    fn telemetry(&self) -> &Telemetry {
        self.bus.telemetry()
    }

    /// Carries out one request; says what becomes of its delivery.
    async fn handle(&self, delivery: &Delivery) -> Disposition {
        let Event::ActionRequest(request) = &delivery.envelope.body else {
            self.telemetry()
                .refused("unexpected_event", delivery.envelope.body.kind());
            return Disposition::Done;
        };
        let request = request.clone();
        if let Some(settled) = self.republish_if_done(&request).await {
            return settled;
        }
        match self.carry_out(&request, delivery).await {
            Ok(done) => self.finish(&request, delivery, done).await,
            // handed back (container busy, done meanwhile by another instance)
            Err(settled) => settled,
        }
    }

    /// A result already stored for this action id is published again (same event id, so
    /// de-duplicated) and the request settled: the action is never carried out twice.
    /// `None` when no result is stored.
    async fn republish_if_done(&self, request: &ActionRequest) -> Option<Disposition> {
        let stored = match self.ledger.result(&request.action_id).await {
            Ok(stored) => stored,
            Err(e) => {
                self.telemetry().failed("read_stored_result", &e);
                return None;
            }
        };
        let envelope = stored?;
        tracing::info!(action_id = %request.action_id, "action already carried out; republishing its result");
        self.telemetry().observe(Observation::Acted {
            what: "republished",
            service: request.service.as_str(),
        });
        if let Err(e) = self.bus.publish_envelope(&envelope).await {
            self.telemetry().failed("republish_result", &e);
            // Unacknowledged: it comes back and is republished then.
            return Some(Disposition::Retry);
        }
        Some(Disposition::Done)
    }

    /// Plans, guards, locks and acts. `Err` with what becomes of the delivery when the
    /// request was handed back unanswered.
    async fn carry_out(
        &self,
        request: &ActionRequest,
        delivery: &Delivery,
    ) -> Result<Done, Disposition> {
        let refused = |why: String| {
            Ok(Done {
                outcome: Err(ActError::Refused(why)),
                duration: Duration::ZERO,
            })
        };
        let step = match plan::plan(request) {
            Ok(step) => step,
            Err(why) => return refused(why),
        };
        let prior = match self.ledger.attempt(&request.action_id).await {
            Ok(prior) => prior,
            Err(e) => {
                self.telemetry().observe(Observation::Failed {
                    what: "read_attempt",
                    error: &e.to_string(),
                });
                None
            }
        };
        let begun = Instant::now();
        let target = match self
            .target_retrying(request, prior.as_ref(), delivery)
            .await
        {
            Ok(t) => t,
            Err(Unreached {
                attempts,
                for_ms,
                error,
            }) => {
                return Ok(Done {
                    outcome: Err(ActError::Failed(format!(
                        "docker engine unreachable for {for_ms} ms ({attempts} attempts, giving up \
                         with half the request's timeout spent): {error}"
                    ))),
                    duration: Duration::from_millis(for_ms),
                })
            }
        };
        let target = match target {
            Ok(t) => t,
            Err(e @ (TargetError::NotManaged { .. } | TargetError::BadLabel { .. })) => {
                return refused(e.to_string())
            }
            Err(TargetError::Docker(e)) if is_not_found(&e) => {
                return Ok(Done {
                    outcome: Err(ActError::Failed(format!(
                        "no such container {}",
                        request.container_id
                    ))),
                    duration: Duration::ZERO,
                })
            }
            Err(e) => {
                return Ok(Done {
                    outcome: Err(ActError::Failed(e.to_string())),
                    duration: Duration::ZERO,
                })
            }
        };
        if let Err(why) = plan::guard(
            &target.managed,
            request,
            &step,
            self.config.project.as_deref(),
        ) {
            return refused(why);
        }
        let lock_key = if step.locks_service() {
            format!("service-{}", request.service)
        } else {
            target.managed.id.clone()
        };
        let held = self.lock(&lock_key, request, delivery).await?;
        // Another instance may have finished this very action while we waited for the lock.
        if let Some(settled) = self.republish_if_done(request).await {
            held.release().await;
            return Err(settled);
        }
        let started = Instant::now();
        let outcome = self
            .act_within_timeout(
                request,
                &step,
                &target,
                prior.as_ref(),
                delivery,
                // what waiting for the engine left of the request's timeout
                self.action_limit(request).saturating_sub(begun.elapsed()),
            )
            .await;
        let done = Done {
            outcome,
            duration: started.elapsed(),
        };
        if held.lost() {
            self.telemetry().observe(Observation::Failed {
                what: "lock_lost",
                error: &lock_key,
            });
        }
        // Stored before the lock goes, so the next holder of the lock sees it.
        if let Err(e) = self.store(request, delivery, &done).await {
            self.telemetry().observe(Observation::Failed {
                what: "store_result",
                error: &e,
            });
        }
        held.release().await;
        Ok(done)
    }

    /// [`Executor::target`], tried again with backoff while the Docker engine cannot be
    /// reached ([`error_policy`]); each failed try is counted (`failed{detail="docker_unreachable"}`),
    /// the first one audited (`action.retrying`), and progress is reported meanwhile so the
    /// request is not redelivered. `Err` when the engine stayed unreachable too long.
    async fn target_retrying(
        &self,
        request: &ActionRequest,
        prior: Option<&Attempt>,
        delivery: &Delivery,
    ) -> Result<Result<Target, TargetError>, Unreached> {
        let limit = self.action_limit(request);
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            let error = match self.target(request, prior).await {
                Err(TargetError::Docker(e)) if error_policy::engine_unreachable(&e) => e,
                found => {
                    if attempt > 0 {
                        tracing::info!(action_id = %request.action_id, attempts = attempt + 1, after_ms = started.elapsed().as_millis() as u64, "docker engine reachable again");
                    }
                    return Ok(found);
                }
            };
            let error = error.to_string();
            self.telemetry().observe(Observation::Failed {
                what: "docker_unreachable",
                error: &error,
            });
            let next = error_policy::after_failure(true, attempt, started.elapsed(), limit);
            let error_policy::Next::RetryAfter(delay) = next else {
                return Err(Unreached {
                    attempts: attempt + 1,
                    for_ms: started.elapsed().as_millis() as u64,
                    error,
                });
            };
            tracing::warn!(action_id = %request.action_id, attempt = attempt + 1, retry_in_ms = delay.as_millis() as u64, %error, "docker engine unreachable; retrying");
            if attempt == 0 {
                let audit = Audit::new(
                    &request.service,
                    AuditCode::ActionRetrying,
                    format!("docker engine unreachable: {error}"),
                    format!(
                        "{} of {}: retrying with backoff for up to {} ms",
                        request.action,
                        request.instance,
                        limit.as_millis() / 2
                    ),
                )
                .action(&request.action_id);
                let correlation = delivery.envelope.correlation_id.clone();
                if let Err(e) = self.bus.audit(correlation, audit).await {
                    self.telemetry().failed("audit", &e);
                }
            }
            delivery.in_progress().await;
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// How long a request may take: its own timeout, capped by `max_action_ms`.
    fn action_limit(&self, request: &ActionRequest) -> Duration {
        Duration::from_millis(request.timeout_ms.clamp(1, self.config.max_action_ms))
    }

    /// The container the request is about. After a crash mid-recreate the id the request
    /// names may be gone: the container now holding its name is the replacement.
    async fn target(
        &self,
        request: &ActionRequest,
        prior: Option<&Attempt>,
    ) -> Result<Target, TargetError> {
        let docker = &self.actuators.docker;
        match (docker.target(&request.container_id).await, prior) {
            (Err(TargetError::Docker(e)), Some(prior)) if is_not_found(&e) => {
                docker.target(&prior.container_name).await
            }
            (found, _) => found,
        }
    }

    /// Takes the lock, waiting while another action holds it (reporting progress so the
    /// request is not redelivered meanwhile); hands the request back after `lock_wait_ms`.
    async fn lock(
        &self,
        key: &str,
        request: &ActionRequest,
        delivery: &Delivery,
    ) -> Result<lock::Held, Disposition> {
        let deadline = Instant::now() + Duration::from_millis(self.config.lock_wait_ms);
        let mut last_progress = Instant::now();
        let mut reported = false;
        loop {
            match self.locks.try_acquire(key, &request.action_id).await {
                Ok(Ok(held)) => return Ok(held),
                Ok(Err(holder)) => {
                    if !reported {
                        tracing::info!(action_id = %request.action_id, lock = key, holder = ?holder, "container busy; waiting for its lock");
                        reported = true;
                    }
                }
                Err(e) => self.telemetry().observe(Observation::Failed {
                    what: "lock",
                    error: &e.to_string(),
                }),
            }
            if Instant::now() >= deadline {
                self.telemetry().observe(Observation::Refused {
                    what: "container_busy",
                    reason: key,
                });
                return Err(Disposition::RetryAfter(Duration::from_secs(1)));
            }
            if last_progress.elapsed() > self.progress_every() {
                delivery.in_progress().await;
                last_progress = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn progress_every(&self) -> Duration {
        Duration::from_millis(self.config.ack_wait_ms / 3)
    }

    /// Records the attempt, then acts within `limit` (the request's timeout capped by
    /// `max_action_ms`, less any wait for the engine), reporting progress meanwhile.
    async fn act_within_timeout(
        &self,
        request: &ActionRequest,
        step: &Step,
        target: &Target,
        prior: Option<&Attempt>,
        delivery: &Delivery,
        limit: Duration,
    ) -> Result<String, ActError> {
        let limit = limit.max(Duration::from_millis(1));
        let acting = async {
            // Recreate or rollback cut off after the replacement was made: finish it.
            if let (Some(prior), Step::Recreate { .. } | Step::Rollback { .. }) = (prior, step) {
                if prior.container_id != target.managed.id {
                    return self
                        .actuators
                        .docker
                        .finish_recreate(&prior.container_id, target)
                        .await;
                }
            }
            let victim = match step {
                Step::ScaleIn { .. } => Some(match prior.and_then(|p| p.victim.clone()) {
                    Some(v) => v,
                    None => {
                        let all = self
                            .actuators
                            .docker
                            .instances(&request.service, self.config.project.as_deref())
                            .await?;
                        plan::scale_in_victim(&all)
                            .map_err(ActError::Refused)?
                            .clone()
                    }
                }),
                _ => None,
            };
            let attempt = match prior {
                Some(p) => Attempt {
                    victim: victim.clone(),
                    ..p.clone()
                },
                None => Attempt {
                    instance: self.bus.producer().instance.clone(),
                    started_ms: now_ms(),
                    container_id: target.managed.id.clone(),
                    container_name: target.managed.name.clone(),
                    container_started_at: target.started_at(),
                    victim: victim.clone(),
                },
            };
            if prior.is_none() || victim.is_some() {
                self.ledger
                    .record_attempt(&request.action_id, &attempt)
                    .await
                    .map_err(|e| ActError::Failed(format!("cannot record the attempt: {e}")))?;
            }
            self.actuators
                .act(step, target, &request.action_id, prior, victim.as_ref())
                .await
        };
        let acting = tokio::time::timeout(limit, acting);
        tokio::pin!(acting);
        let mut heartbeat = tokio::time::interval(self.progress_every());
        heartbeat.tick().await;
        loop {
            tokio::select! {
                r = &mut acting => return match r {
                    Ok(r) => r,
                    Err(_) => Err(ActError::Failed(format!("no result within {} ms", limit.as_millis()))),
                },
                _ = heartbeat.tick() => delivery.in_progress().await,
            }
        }
    }

    fn result_envelope(
        &self,
        request: &ActionRequest,
        delivery: &Delivery,
        done: &Done,
    ) -> Envelope {
        let (outcome, error) = match &done.outcome {
            Ok(_) => (ActionOutcome::Succeeded, None),
            Err(ActError::Refused(why)) => (ActionOutcome::Refused, Some(why.clone())),
            Err(ActError::Failed(why)) => (ActionOutcome::Failed, Some(why.clone())),
        };
        let result = ActionResult {
            action_id: request.action_id.clone(),
            incident_id: request.incident_id.clone(),
            service: request.service.clone(),
            instance: request.instance.clone(),
            action: request.action,
            outcome,
            error,
            duration_ms: done.duration.as_millis() as u64,
            finished_ms: now_ms(),
        };
        // The event id follows the action id, so a result built twice is still one event.
        let mut envelope = Envelope::new(
            self.bus.producer().clone(),
            delivery.envelope.correlation_id.clone(),
            Event::ActionResult(result),
        );
        envelope.event_id =
            immune_nats::EventId(format!("result-{}", ledger::result_key(&request.action_id)));
        envelope
    }

    async fn store(
        &self,
        request: &ActionRequest,
        delivery: &Delivery,
        done: &Done,
    ) -> Result<(), String> {
        let envelope = self.result_envelope(request, delivery, done);
        self.ledger
            .store_result(&request.action_id, &envelope)
            .await
            .map_err(|e| e.to_string())
    }

    /// Publishes the result (stored first when it was not: refusals) and audits it; done
    /// then, else handed back to be published again.
    async fn finish(
        &self,
        request: &ActionRequest,
        delivery: &Delivery,
        done: Done,
    ) -> Disposition {
        let envelope = match self.ledger.result(&request.action_id).await {
            Ok(Some(stored)) => stored,
            _ => {
                if let Err(e) = self.store(request, delivery, &done).await {
                    self.telemetry().observe(Observation::Failed {
                        what: "store_result",
                        error: &e,
                    });
                }
                self.result_envelope(request, delivery, &done)
            }
        };
        let Event::ActionResult(result) = &envelope.body else {
            return Disposition::Done;
        };
        let (what, note) = match &done.outcome {
            Ok(note) => (AuditCode::ActionSucceeded, note.clone()),
            Err(ActError::Refused(why)) => (AuditCode::ActionRefused, why.clone()),
            Err(ActError::Failed(why)) => (AuditCode::ActionFailed, why.clone()),
        };
        tracing::info!(service = %request.service, action = %request.action, instance = %request.instance, outcome = %what, duration_ms = result.duration_ms, %note, "action done");
        match &done.outcome {
            Ok(_) => self.telemetry().observe(Observation::Acted {
                what: request.action.as_str(),
                service: request.service.as_str(),
            }),
            Err(ActError::Refused(why)) => self.telemetry().observe(Observation::Refused {
                what: request.action.as_str(),
                reason: why,
            }),
            Err(ActError::Failed(why)) => self.telemetry().observe(Observation::Failed {
                what: request.action.as_str(),
                error: why,
            }),
        }
        self.telemetry()
            .time(request.action.as_str(), done.duration);
        if let Err(e) = self.bus.publish_envelope(&envelope).await {
            self.telemetry().failed("publish_result", &e);
            // unacknowledged: redelivered, and the stored result is republished then
            return Disposition::Retry;
        }
        let outcome = format!(
            "{} of {} {} in {} ms: {note}",
            request.action,
            request.instance,
            what.as_str().trim_start_matches("action."),
            result.duration_ms
        );
        let why = result
            .error
            .clone()
            .unwrap_or_else(|| request.reason.clone());
        let audit = Audit::new(&request.service, what, why, outcome)
            .about(envelope.event_id.clone())
            .action(&request.action_id);
        if let Err(e) = self
            .bus
            .audit(delivery.envelope.correlation_id.clone(), audit)
            .await
        {
            self.telemetry().failed("audit", &e);
        }
        Disposition::Done
    }
}
