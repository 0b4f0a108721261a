//! Hands one planned [`Step`] to the actuator family that carries it out: Docker
//! ([`crate::docker_actuators`]) or the service's admin endpoint ([`crate::admin`]).

use crate::admin::AdminActuator;
use crate::docker_actuators::{DockerActuators, Target};
use crate::ledger::Attempt;
use crate::plan::{Instance, Step};

/// Why an action did not happen.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ActError {
    /// A guard said no; nothing was touched.
    #[error("refused: {0}")]
    Refused(String),
    #[error("failed: {0}")]
    Failed(String),
}

/// Every actuator this executor has.
#[derive(Debug, Clone)]
pub struct Actuators {
    pub docker: DockerActuators,
    pub admin: AdminActuator,
}

impl Actuators {
    /// Carries `step` out on `target`. `prior` is the earlier attempt at the same action when
    /// it was cut off; `victim` the replica a scale in removes. Returns what was done.
    pub async fn act(
        &self,
        step: &Step,
        target: &Target,
        action_id: &str,
        prior: Option<&Attempt>,
        victim: Option<&Instance>,
    ) -> Result<String, ActError> {
        match step {
            Step::Restart { stop_grace_s } => {
                self.docker.restart(target, *stop_grace_s, prior).await
            }
            Step::Recreate { stop_grace_s } => {
                self.docker.recreate(target, *stop_grace_s, None).await
            }
            Step::Rollback { stop_grace_s } => self.docker.rollback(target, *stop_grace_s).await,
            Step::ScaleOut => self.docker.scale_out(target, action_id).await,
            Step::ScaleIn { stop_grace_s } => {
                let victim = victim
                    .ok_or_else(|| ActError::Failed("scale in without a chosen replica".into()))?;
                self.docker.scale_in(victim, *stop_grace_s).await
            }
            Step::Pause => self.docker.pause(target).await,
            Step::Unpause => self.docker.unpause(target).await,
            Step::UpdateLimits(limits) => self.docker.update_limits(target, *limits).await,
            Step::ReconnectNetwork { network } => {
                self.docker
                    .reconnect_network(target, network.as_deref())
                    .await
            }
            Step::Throttle { .. }
            | Step::CircuitBreaker { .. }
            | Step::FeatureFlag { .. }
            | Step::BlockSources { .. } => self.admin.act(target, step).await,
        }
    }
}
