//! Actuators: carry one action out on one container, after the guards.

use bollard::query_parameters::RestartContainerOptions;
use bollard::Docker;
use immune_nats::{ActionKind, ActionRequest};
use immune_runtime::docker::{inspect_managed, TargetError};

/// Why an action did not happen.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ActError {
    /// A guard said no; nothing was touched.
    #[error("refused: {0}")]
    Refused(String),
    #[error("failed: {0}")]
    Failed(String),
}

#[derive(Debug, Clone)]
pub struct Actuator {
    docker: Docker,
    project: Option<String>,
}

impl Actuator {
    pub fn new(docker: Docker, project: Option<String>) -> Self {
        Self { docker, project }
    }

    pub async fn act(&self, request: &ActionRequest) -> Result<(), ActError> {
        let target = match inspect_managed(&self.docker, &request.container_id).await {
            Ok(t) => t,
            Err(e @ (TargetError::NotManaged { .. } | TargetError::BadLabel { .. })) => {
                return Err(ActError::Refused(e.to_string()))
            }
            Err(e) => return Err(ActError::Failed(e.to_string())),
        };
        if !target.in_project(self.project.as_deref()) {
            return Err(ActError::Refused(format!(
                "container {} belongs to project {:?}, this executor serves {:?}",
                target.name, target.project, self.project
            )));
        }
        if target.service != request.service {
            return Err(ActError::Refused(format!(
                "container {} is service {}, not {}",
                target.name, target.service, request.service
            )));
        }
        match request.action {
            ActionKind::Restart => {
                let grace = request
                    .params
                    .get("stop_grace_s")
                    .and_then(|g| g.parse::<i32>().ok())
                    .unwrap_or(1);
                self.docker
                    .restart_container(
                        &target.id,
                        Some(RestartContainerOptions {
                            t: Some(grace),
                            signal: None,
                        }),
                    )
                    .await
                    .map_err(|e| ActError::Failed(e.to_string()))
            }
            other => Err(ActError::Refused(format!(
                "action {other} is not supported by this executor"
            ))),
        }
    }
}
