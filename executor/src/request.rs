//! The executor's exactly-once protocol: what happens to one action request, step by step.
//!
//! 1. **Ledger lookup.** A result already stored for the action id ([`ledger`]) is
//!    republished (same event id, so de-duplicated) and the request settled; nothing else
//!    happens (`Executor::republish_if_done`).
//! 2. **Plan and guards.** The request's parameters are read into a [`Step`] ([`plan`]); the
//!    earlier attempt, if any, is read from the ledger; the container is looked up —
//!    waiting for a Docker engine that cannot be reached, see `engine_retry` — and the
//!    guards checked (opted in, in the configured project, of the service the request
//!    names). A refusal is a result like any other: it skips to step 7, stored first.
//! 3. **Per-container lock.** The container's lock (the service's, for scaling) is taken
//!    ([`lock`]), waiting while another action holds it; after `lock_wait_ms` the request is
//!    handed back. Holding it, the ledger is read again: another instance may have finished
//!    this very action meanwhile.
//! 4. **Record the attempt.** Which container, when, and for a scale in which replica goes,
//!    so that a crash mid-action can be finished rather than repeated.
//! 5. **Act with heartbeats.** The actuator runs within the request's timeout (capped by
//!    `max_action_ms`); progress is reported to the server meanwhile so the request is not
//!    redelivered.
//! 6. **Store the result before the lock goes**, so the next holder of the lock sees it;
//!    then release the lock.
//! 7. **Publish** the result (its event id follows the action id), 8. **audit** it, and only
//!    then 9. **settle** the delivery as done ([`crate::run`] hands the returned
//!    [`Disposition`] to `Delivery::settle`). A failed publish leaves it unacknowledged: it
//!    comes back and step 1 republishes the stored result.
//!
//! A crash mid-recreate or mid-rollback is finished from the recorded attempt: the container
//! now holding the old name is the replacement the earlier attempt made, so it is started and
//! the old one removed instead of recreating again. See the README section "executor" for
//! what is and is not guaranteed.

mod engine_retry;

use std::time::{Duration, Instant};

use immune_nats::{
    envelope::now_ms, ActionOutcome, ActionRequest, ActionResult, AuditCode, Envelope, Event,
};
use immune_runtime::docker::TargetError;
use immune_runtime::telemetry::Observation;
use immune_runtime::{Audit, Bus, Delivery, Disposition, Telemetry};

use crate::actuator::{ActError, Actuators};
use crate::docker_actuators::{is_not_found, Target};
use crate::ledger::{self, Attempt, Ledger};
use crate::lock::{self, Locks};
use crate::plan::{self, Step};
use crate::Config;
use engine_retry::Unreached;

/// Everything one request needs, shared by the tasks carrying requests out.
#[derive(Debug)]
pub(crate) struct Executor {
    pub(crate) bus: Bus,
    pub(crate) ledger: Ledger,
    pub(crate) locks: Locks,
    pub(crate) actuators: Actuators,
    pub(crate) config: Config,
}

/// How one request ended, before it is published.
#[derive(Debug)]
struct Done {
    outcome: Result<String, ActError>,
    duration: Duration,
    /// The container a recreate or a rollback left under the target's name.
    replaced_by: Option<String>,
}

impl Executor {
    fn telemetry(&self) -> &Telemetry {
        self.bus.telemetry()
    }

    /// Carries out one request; says what becomes of its delivery.
    pub(crate) async fn handle(&self, delivery: &Delivery) -> Disposition {
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
                replaced_by: None,
            })
        };
        let step = match plan::plan(request) {
            Ok(step) => step,
            Err(why) => return refused(why),
        };
        let prior = match self.ledger.attempt(&request.action_id).await {
            Ok(prior) => prior,
            Err(e) => {
                self.telemetry().failed("read_attempt", &e);
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
                    replaced_by: None,
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
                    replaced_by: None,
                })
            }
            Err(e) => {
                return Ok(Done {
                    outcome: Err(ActError::Failed(e.to_string())),
                    duration: Duration::ZERO,
                    replaced_by: None,
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
        let duration = started.elapsed();
        let replaced_by = match (&outcome, &step) {
            (Ok(_), Step::Recreate { .. } | Step::Rollback { .. }) => {
                self.replacement(&target).await
            }
            _ => None,
        };
        let done = Done {
            outcome,
            duration,
            replaced_by,
        };
        if held.lost() {
            self.telemetry().failed("lock_lost", &lock_key);
        }
        // Stored before the lock goes, so the next holder of the lock sees it.
        if let Err(e) = self.store(request, delivery, &done).await {
            self.telemetry().failed("store_result", &e);
        }
        held.release().await;
        Ok(done)
    }

    /// The container now under `target`'s name, when it is another one than `target`.
    async fn replacement(&self, target: &Target) -> Option<String> {
        match self.actuators.docker.target(&target.managed.name).await {
            Ok(now) if now.managed.id != target.managed.id => Some(now.managed.id),
            Ok(_) => None,
            Err(e) => {
                self.telemetry().failed("inspect_replacement", &e);
                None
            }
        }
    }

    /// How long a request may take: its own timeout, capped by `max_action_ms`.
    fn action_limit(&self, request: &ActionRequest) -> Duration {
        Duration::from_millis(request.timeout_ms.clamp(1, self.config.max_action_ms))
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
                Err(e) => self.telemetry().failed("lock", &e),
            }
            if Instant::now() >= deadline {
                self.telemetry().refused("container_busy", key);
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
            replaced_by: done.replaced_by.clone(),
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
                    self.telemetry().failed("store_result", &e);
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
            Err(ActError::Refused(why)) => self.telemetry().refused(request.action.as_str(), why),
            Err(ActError::Failed(why)) => self.telemetry().failed(request.action.as_str(), why),
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
