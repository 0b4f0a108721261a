//! Playbooks: for each anomaly signature, the actions to try in order, least disruptive
//! first, each with its parameters, its risk and its timeout. Written in TOML; the shipped
//! `decider/playbook.toml` is built in and is the default.

use std::collections::BTreeMap;
use std::path::Path;

use immune_nats::{ActionKind, Signature};
use serde::{Deserialize, Serialize};

/// The shipped playbook, built in.
pub const SHIPPED: &str = include_str!("../playbook.toml");

/// The highest risk a step may carry.
pub const MAX_RISK: u8 = 5;

/// One action of a playbook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub action: ActionKind,
    /// 1 harmless .. 5 destructive.
    pub risk: u8,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    /// Passed to the executor; the policy's `action_timeout_ms` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// Ordered steps per signature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Playbook(pub BTreeMap<Signature, Vec<Step>>);

#[derive(Debug, thiserror::Error)]
pub enum PlaybookError {
    #[error("playbook {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("playbook: {0}")]
    Invalid(String),
}

impl PlaybookError {
    pub fn kind(&self) -> &'static str {
        match self {
            PlaybookError::Read { .. } => "playbook_read",
            PlaybookError::Invalid(_) => "playbook_invalid",
        }
    }
}

impl Default for Playbook {
    fn default() -> Self {
        Self::parse(SHIPPED).expect("the shipped playbook is valid (tested)")
    }
}

impl Playbook {
    /// Parses and checks a playbook; the error names the bad signature, step or key.
    pub fn parse(text: &str) -> Result<Self, PlaybookError> {
        let playbook: Playbook =
            toml::from_str(text).map_err(|e| PlaybookError::Invalid(e.to_string()))?;
        playbook.validate()?;
        Ok(playbook)
    }

    pub fn load(path: &Path) -> Result<Self, PlaybookError> {
        let text = std::fs::read_to_string(path).map_err(|e| PlaybookError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::parse(&text)
    }

    pub fn steps(&self, signature: Signature) -> &[Step] {
        self.0
            .get(&signature)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    fn validate(&self) -> Result<(), PlaybookError> {
        for (signature, steps) in &self.0 {
            for (i, step) in steps.iter().enumerate() {
                if step.risk == 0 || step.risk > MAX_RISK {
                    return Err(PlaybookError::Invalid(format!(
                        "{signature} step {}: risk = {} is outside 1..={MAX_RISK}",
                        i + 1,
                        step.risk
                    )));
                }
                if step.timeout_ms == Some(0) {
                    return Err(PlaybookError::Invalid(format!(
                        "{signature} step {}: timeout_ms must be positive",
                        i + 1
                    )));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_playbook_covers_every_signature_least_disruptive_first() {
        let playbook = Playbook::parse(SHIPPED).expect("shipped playbook parses");
        for signature in Signature::ALL {
            let steps = playbook.steps(signature);
            assert!(!steps.is_empty(), "no steps for {signature}");
            assert!(
                steps.windows(2).all(|w| w[0].risk <= w[1].risk),
                "{signature}: steps must not get less risky"
            );
        }
        assert_eq!(
            playbook.steps(Signature::ErrorsUp)[0].action,
            ActionKind::CircuitBreaker
        );
        assert_eq!(
            playbook.steps(Signature::AttackBurst)[0].action,
            ActionKind::BlockSources,
            "an attack's sources are blocked before every user is limited"
        );
    }

    #[test]
    fn every_gray_signature_can_reach_a_restart_and_overload_adds_capacity_first() {
        let playbook = Playbook::default();
        let default_approval_risk = 3;
        for signature in [
            Signature::LatencyUp,
            Signature::ErrorsUp,
            Signature::ResourceExhaustion,
            Signature::Overload,
            Signature::TrafficDrop,
        ] {
            let steps = playbook.steps(signature);
            assert!(
                steps
                    .iter()
                    .any(|s| s.action == ActionKind::Restart && s.risk <= default_approval_risk),
                "{signature}: a fault inside the service is out of learning's reach"
            );
            let actions: Vec<_> = steps.iter().map(|s| s.action).collect();
            let mut unique = actions.clone();
            unique.sort_by_key(|a| a.as_str());
            unique.dedup();
            assert_eq!(unique.len(), actions.len(), "{signature}: {actions:?}");
        }
        assert_eq!(
            playbook.steps(Signature::Overload)[0].action,
            ActionKind::ScaleOut
        );
        let latency: Vec<_> = playbook
            .steps(Signature::LatencyUp)
            .iter()
            .map(|s| s.action)
            .collect();
        assert_eq!(
            latency[..3],
            [
                ActionKind::Throttle,
                ActionKind::ScaleOut,
                ActionKind::Restart
            ],
            "the prior, least disruptive first"
        );
    }

    #[test]
    fn a_bad_step_is_named() {
        let err =
            Playbook::parse("[[crashed]]\naction = \"reboot\"\nrisk = 1").expect_err("refused");
        assert!(err.to_string().contains("reboot"), "{err}");
        let err =
            Playbook::parse("[[crashed]]\naction = \"restart\"\nrisk = 9").expect_err("refused");
        assert!(err.to_string().contains("crashed step 1"), "{err}");
        let err = Playbook::parse("[[crashed]]\naction = \"restart\"").expect_err("refused");
        assert!(err.to_string().contains("risk"), "{err}");
        let err =
            Playbook::parse("[[cashed]]\naction = \"restart\"\nrisk = 1").expect_err("refused");
        assert!(err.to_string().contains("cashed"), "{err}");
    }
}
