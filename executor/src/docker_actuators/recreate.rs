//! Recreate and roll back: the container is replaced by a new one from its own
//! configuration (for a rollback, from the previous image of its `immune.image_history`)
//! under the same name. A crash mid-recreate is finished, not repeated
//! ([`DockerActuators::finish_recreate`]).

use immune_runtime::docker::labels;

use super::copy::create_body;
use super::{failed, short, DockerActuators, Target};
use crate::plan;
use crate::ActError;

impl DockerActuators {
    /// Replaces the container by a new one from the same configuration (and the same name),
    /// optionally from another image. The old one is renamed aside and stopped first, and
    /// started again under its name when the new one cannot be created.
    pub async fn recreate(
        &self,
        old: &Target,
        stop_grace_s: u32,
        image: Option<(&str, Option<&str>)>,
    ) -> Result<String, ActError> {
        let name = old.managed.name.clone();
        let mut labels = old.labels();
        let mut body = create_body(&old.inspect, false);
        if let Some((image, history)) = image {
            self.docker
                .inspect_image(image)
                .await
                .map_err(|e| failed(&format!("image {image} is not available locally"), e))?;
            body.image = Some(image.to_string());
            match history {
                Some(h) => labels.insert(labels::IMAGE_HISTORY.to_string(), h.to_string()),
                None => labels.remove(labels::IMAGE_HISTORY),
            };
        }
        body.labels = Some(labels);
        let aside = format!("{name}-replaced-{}", short(&old.managed.id));
        self.rename(&old.managed.id, &aside).await?;
        if let Err(e) = self.stop(&old.managed.id, stop_grace_s).await {
            let _ = self.rename(&old.managed.id, &name).await;
            return Err(e);
        }
        let created = match self
            .create(&name, body, &old.networks(), &name, false)
            .await
        {
            Ok(id) => id,
            Err(e) => {
                // Put the old one back as it was.
                let _ = self.rename(&old.managed.id, &name).await;
                let _ = self.start(&old.managed.id).await;
                return Err(e);
            }
        };
        self.start(&created).await?;
        self.remove(&old.managed.id).await?;
        Ok(format!("recreated as {}", short(&created)))
    }

    /// After a crash mid-recreate: the container that now holds the name, when it is not
    /// the one the request named, is the replacement the earlier attempt made.
    pub async fn finish_recreate(
        &self,
        old_id: &str,
        replacement: &Target,
    ) -> Result<String, ActError> {
        self.start(&replacement.managed.id).await?;
        if self.exists(old_id).await?.is_some() {
            self.remove(old_id).await?;
        }
        Ok(format!(
            "already recreated as {} by an earlier attempt",
            short(&replacement.managed.id)
        ))
    }

    /// Rolls back to the newest earlier image of `immune.image_history`.
    pub async fn rollback(&self, old: &Target, stop_grace_s: u32) -> Result<String, ActError> {
        let labels = old.labels();
        let (image, rest) =
            plan::rollback_target(labels.get(labels::IMAGE_HISTORY).map(String::as_str))
                .map_err(ActError::Refused)?;
        let current = old
            .inspect
            .config
            .as_ref()
            .and_then(|c| c.image.clone())
            .unwrap_or_default();
        let done = self
            .recreate(old, stop_grace_s, Some((&image, rest.as_deref())))
            .await?;
        Ok(format!("rolled back from {current} to {image}; {done}"))
    }
}
