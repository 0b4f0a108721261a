//! Scale out and in: one more replica of a container (labelled `immune.replica_of`, named
//! after the action so a repeated scale out finds the one it made), or one replica fewer
//! (the victim chosen by [`plan::scale_in_victim`] and recorded with the attempt).

use std::collections::HashMap;

use bollard::query_parameters::ListContainersOptions;
use immune_nats::ServiceName;
use immune_runtime::docker::labels;

use super::copy::create_body;
use super::{failed, DockerActuators, Target};
use crate::plan::{self, Instance};
use crate::ActError;

impl DockerActuators {
    /// One more replica of the target: same config, labels (plus `immune.replica_of`),
    /// networks and aliases, so it answers to the same service name.
    pub async fn scale_out(&self, target: &Target, action_id: &str) -> Result<String, ActError> {
        let labels_now = target.labels();
        let original = labels_now
            .get(labels::REPLICA_OF)
            .cloned()
            .unwrap_or_else(|| target.managed.name.clone());
        let name = plan::replica_name(&original, action_id);
        if let Some(existing) = self.exists(&name).await? {
            self.start(&existing.managed.id).await?;
            return Ok(format!(
                "replica {name} already created by an earlier attempt"
            ));
        }
        let mut body = create_body(&target.inspect, true);
        let mut labels = labels_now;
        labels.insert(labels::REPLICA_OF.to_string(), original);
        body.labels = Some(labels);
        let id = self
            .create(&name, body, &target.networks(), &target.managed.name, true)
            .await?;
        self.start(&id).await?;
        Ok(format!("replica {name} started"))
    }

    /// Every container of `service` in `project` (running or not), for scale in.
    pub async fn instances(
        &self,
        service: &ServiceName,
        project: Option<&str>,
    ) -> Result<Vec<Instance>, ActError> {
        let mut filters = vec![
            format!("{}=true", labels::ENABLE),
            format!("{}={service}", labels::SERVICE),
        ];
        if let Some(p) = project {
            filters.push(format!("{}={p}", labels::PROJECT));
        }
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(HashMap::from([("label".to_string(), filters)])),
                ..Default::default()
            }))
            .await
            .map_err(|e| failed("list the service's containers", e))?;
        Ok(list
            .into_iter()
            .map(|s| Instance {
                id: s.id.clone().unwrap_or_default(),
                name: s
                    .names
                    .and_then(|n| n.into_iter().next())
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_string(),
                replica: s
                    .labels
                    .as_ref()
                    .is_some_and(|l| l.contains_key(labels::REPLICA_OF)),
                running: s.state.map(|st| st.as_ref() == "running").unwrap_or(false),
                // Seconds since the epoch, zero-padded so that text order is time order.
                created: format!("{:020}", s.created.unwrap_or_default()),
            })
            .collect())
    }

    /// Stops and removes one replica chosen by [`plan::scale_in_victim`].
    pub async fn scale_in(&self, victim: &Instance, stop_grace_s: u32) -> Result<String, ActError> {
        if self.exists(&victim.id).await?.is_none() {
            return Ok(format!(
                "replica {} already removed by an earlier attempt",
                victim.name
            ));
        }
        self.stop(&victim.id, stop_grace_s).await?;
        self.remove(&victim.id).await?;
        Ok(format!("replica {} removed", victim.name))
    }
}
