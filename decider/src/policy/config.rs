//! The policy's settings (the `[policy]` table of the decider's config): cooldowns,
//! deadlines, the approval threshold, rate budgets, the blast radius, the root-cause wait and
//! when stopgaps are lifted, each with its default.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::learning::LearningConfig;
use crate::playbook::{Playbook, PlaybookError};
use crate::safety::Budget;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// After an action on a service, the same action waits this long before it may run again.
    pub cooldown_ms: u64,
    /// How long a service has to recover after a successful action.
    pub verify_deadline_ms: u64,
    /// Passed to the executor with each action whose step sets no `timeout_ms`.
    pub action_timeout_ms: u64,
    /// Seconds Docker waits after SIGTERM before SIGKILL, sent with every action.
    pub stop_grace_s: u32,
    /// A playbook file; the shipped `decider/playbook.toml` (built in) when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub playbook_file: Option<PathBuf>,
    /// Advisory mode: record what would be done, send nothing.
    pub dry_run: bool,
    /// Steps with a risk above this wait for an approval on `immune.approvals.<service>`.
    pub approval_risk: u8,
    /// A held step not answered within this long is skipped.
    pub approval_timeout_ms: u64,
    /// Actions per service.
    pub service_budget: Budget,
    /// Actions over all services.
    pub global_budget: Budget,
    /// Blast radius: at most this many services acted on (action in flight or verifying).
    pub max_services_acting: usize,
    /// A service that calls others waits this long after its incident opens before its
    /// first action, so the anomalies of its dependencies (the likely culprits) arrive.
    pub root_cause_wait_ms: u64,
    /// A caller whose dependency just recovered (or whose anomaly fires within this long of
    /// that recovery: its detection lags) waits this long for its own anomaly to clear with
    /// it before acting: its calls that failed or piled up end within its client's timeout
    /// (5 s in the demo), then the learned model clears after n quiet windows (5 s shipped);
    /// seen live, 17 s for `orders` after a restart of `payments`.
    pub recovery_settle_ms: u64,
    /// A stopgap (throttle, open circuit, blocked sources) is verified on what users feel:
    /// once the service's own anomaly cleared, its callers (the entry point among them) are
    /// given this long to show a trouble the stopgap moved onto them (a caller's gray
    /// anomaly fires 2-3 s after its cause), then every caller's errors, latency or
    /// overload must have cleared, within `recovery_settle_ms`. 0: the service's own
    /// anomaly clearing verifies a stopgap as it does a repair.
    pub callers_settle_ms: u64,
    /// Escalations are also POSTed (JSON) to this URL when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub escalation_webhook: Option<String>,
    /// A throttle or an open circuit breaker set by an incident is a stopgap: this long after
    /// the incident recovered it is lifted (rps 0, circuit closed), unless the service is
    /// anomalous again by then. 0 keeps them until an operator lifts them.
    pub lift_mitigations_after_ms: u64,
    /// A replica added by the scale_out of an incident that recovered is removed again
    /// (scale_in) this long after the recovery, unless the service is anomalous by then
    /// (looked at again one delay later). 0 keeps the replicas until an operator removes them.
    pub scale_in_after_ms: u64,
    pub learning: LearningConfig,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            cooldown_ms: 10_000,
            verify_deadline_ms: 15_000,
            action_timeout_ms: 30_000,
            stop_grace_s: 1,
            playbook_file: None,
            dry_run: false,
            approval_risk: 3,
            approval_timeout_ms: 300_000,
            service_budget: Budget {
                burst: 3,
                per_minute: 6.0,
            },
            global_budget: Budget {
                burst: 10,
                per_minute: 30.0,
            },
            max_services_acting: 3,
            root_cause_wait_ms: 2_000,
            recovery_settle_ms: 20_000,
            callers_settle_ms: 4_000,
            escalation_webhook: None,
            lift_mitigations_after_ms: 60_000,
            scale_in_after_ms: 120_000,
            learning: LearningConfig::default(),
        }
    }
}

impl PolicyConfig {
    /// The configured playbook file, or the shipped one.
    pub fn load_playbook(&self) -> Result<Playbook, PlaybookError> {
        match &self.playbook_file {
            Some(path) => Playbook::load(path),
            None => Ok(Playbook::default()),
        }
    }
}
