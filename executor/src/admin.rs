//! The HTTP actuator: application-level repairs on a service's admin endpoint, found from
//! its `immune.admin=<port>/<path>` label on the container's address.
//!
//! | step | request |
//! |---|---|
//! | throttle | `POST <admin>/throttle {"rps": n}` (0 lifts the limit) |
//! | circuit breaker | `POST <admin>/circuit {"state": "open" \| "closed"}` |
//! | feature flag | `POST <admin>/flags/<name> {"state": "on" \| "off"}` |
//! | block sources | `POST <admin>/block {"state": "on" \| "off"}` (the service blocks the clients its screen keeps refusing) |
//!
//! Each sets a state, so doing it twice is the same as doing it once.

use std::time::Duration;

use serde_json::json;

use crate::docker_actuators::Target;
use crate::plan::Step;
use crate::ActError;

#[derive(Debug, Clone)]
pub struct AdminActuator {
    http: reqwest::Client,
}

impl Default for AdminActuator {
    fn default() -> Self {
        Self::new()
    }
}

impl AdminActuator {
    pub fn new() -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
        }
    }

    pub async fn act(&self, target: &Target, step: &Step) -> Result<String, ActError> {
        let (path, body, done) = request_for(step)
            .ok_or_else(|| ActError::Refused(format!("{step:?} is not an admin action")))?;
        let admin = target.managed.admin.as_ref().ok_or_else(|| {
            ActError::Refused(format!(
                "container {} has no immune.admin label",
                target.managed.name
            ))
        })?;
        let address = target.managed.address.ok_or_else(|| {
            ActError::Failed(format!(
                "container {} has no network address (is it running?)",
                target.managed.name
            ))
        })?;
        let url = format!("{}{path}", admin.url(address).trim_end_matches('/'));
        let response = self
            .http
            .post(&url)
            .json(&body)
            .send()
            .await
            .map_err(|e| ActError::Failed(format!("POST {url}: {e}")))?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(ActError::Failed(format!(
                "POST {url}: status {status}: {}",
                text.trim()
            )));
        }
        Ok(done)
    }
}

/// The path under the admin endpoint, the JSON body, and what to report when it worked.
pub fn request_for(step: &Step) -> Option<(String, serde_json::Value, String)> {
    Some(match step {
        Step::Throttle { rps: 0 } => (
            "/throttle".into(),
            json!({ "rps": 0 }),
            "throttle lifted".into(),
        ),
        Step::Throttle { rps } => (
            "/throttle".into(),
            json!({ "rps": rps }),
            format!("throttled to {rps} requests/s"),
        ),
        Step::CircuitBreaker { open } => {
            let state = if *open { "open" } else { "closed" };
            (
                "/circuit".into(),
                json!({ "state": state }),
                format!("circuit {state}"),
            )
        }
        Step::FeatureFlag { flag, on } => {
            let state = if *on { "on" } else { "off" };
            (
                format!("/flags/{flag}"),
                json!({ "state": state }),
                format!("flag {flag} {state}"),
            )
        }
        Step::BlockSources { on } => {
            let state = if *on { "on" } else { "off" };
            let done = if *on {
                "the clients the screen keeps refusing are blocked"
            } else {
                "source blocking lifted"
            };
            ("/block".into(), json!({ "state": state }), done.into())
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_admin_step_has_its_request() {
        let (path, body, _) = request_for(&Step::Throttle { rps: 5 }).expect("admin");
        assert_eq!((path.as_str(), body), ("/throttle", json!({"rps": 5})));
        let (path, body, _) = request_for(&Step::CircuitBreaker { open: true }).expect("admin");
        assert_eq!(
            (path.as_str(), body),
            ("/circuit", json!({"state": "open"}))
        );
        let (path, body, note) = request_for(&Step::FeatureFlag {
            flag: "upstream_calls".into(),
            on: false,
        })
        .expect("admin");
        assert_eq!(
            (path.as_str(), body),
            ("/flags/upstream_calls", json!({"state": "off"}))
        );
        assert_eq!(note, "flag upstream_calls off");
        let (path, body, _) = request_for(&Step::BlockSources { on: true }).expect("admin");
        assert_eq!((path.as_str(), body), ("/block", json!({"state": "on"})));
        assert!(request_for(&Step::Pause).is_none());
    }
}
