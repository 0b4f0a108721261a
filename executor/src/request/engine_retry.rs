//! Waiting for the Docker engine: the container a request names is looked up again with
//! backoff while the engine cannot be reached, for up to half the request's timeout
//! ([`error_policy`]). Each failed try is counted, the first one audited
//! (`action.retrying`), and progress reported meanwhile; then the request fails with the
//! reason.

use std::time::Instant;

use immune_nats::{ActionRequest, AuditCode};
use immune_runtime::docker::TargetError;
use immune_runtime::{Audit, Delivery};

use super::Executor;
use crate::docker_actuators::{is_not_found, Target};
use crate::error_policy;
use crate::ledger::Attempt;

/// The Docker engine stayed unreachable for as long as the error policy allows.
#[derive(Debug)]
pub(super) struct Unreached {
    pub(super) attempts: u32,
    pub(super) for_ms: u64,
    pub(super) error: String,
}

impl Executor {
    /// [`Executor::target`], tried again with backoff while the Docker engine cannot be
    /// reached ([`error_policy`]); each failed try is counted (`failed{detail="docker_unreachable"}`),
    /// the first one audited (`action.retrying`), and progress is reported meanwhile so the
    /// request is not redelivered. `Err` when the engine stayed unreachable too long.
    pub(super) async fn target_retrying(
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
            self.telemetry().failed("docker_unreachable", &error);
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
}
