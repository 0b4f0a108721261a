//! The audit trail's vocabulary: what a stage records it did ([`AuditCode`]), typed once here
//! so no stage, client or test spells a dotted code by hand.
//!
//! On the wire an [`crate::AuditRecord`] keeps its code as text (`what`), so a record written
//! by a newer stage with a code this build does not know still decodes; [`AuditCode::parse`]
//! reads it back where it is known.

use std::fmt;

/// Declares the codes once: the variant, its dotted wire form, and what it records.
macro_rules! audit_codes {
    ($($(#[$doc:meta])* $variant:ident => $code:literal,)+) => {
        /// What an audit record says a stage did.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum AuditCode {
            $($(#[$doc])* $variant,)+
        }

        impl AuditCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [AuditCode] = &[$(AuditCode::$variant,)+];

            /// The dotted code as it is written on the wire, e.g. `incident.recovered`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(AuditCode::$variant => $code,)+
                }
            }

            /// The code written as `text`, if this build knows it.
            pub fn parse(text: &str) -> Option<AuditCode> {
                match text {
                    $($code => Some(AuditCode::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

audit_codes! {
    // the detector
    /// An anomaly episode opened.
    AnomalyFiring => "anomaly.firing",
    /// An anomaly episode ended.
    AnomalyCleared => "anomaly.cleared",
    // the decider: incidents
    /// An anomaly the decider caused on purpose (a replica its scale_in is removing): no
    /// incident.
    AnomalyExpected => "anomaly.expected",
    /// An incident was opened for an anomaly.
    IncidentOpened => "incident.opened",
    /// A restarted decider took an open incident back.
    IncidentResumed => "incident.resumed",
    /// The service was verified healthy again.
    IncidentRecovered => "incident.recovered",
    /// Nothing left to try: handed to a human with the whole story.
    IncidentEscalated => "incident.escalated",
    // the decider: actions
    /// An action was requested from the executor.
    ActionRequested => "action.requested",
    /// Dry run: what would have been requested.
    ActionAdvised => "action.advised",
    /// A safety rule (budget, cooldown, kill switch, maintenance, blast radius) stopped a step.
    ActionBlocked => "action.blocked",
    /// A step above the approval risk waits for an operator's approval.
    ActionHeld => "action.held",
    /// The executor gave no result within the action's timeout.
    ActionTimedOut => "action.timed_out",
    /// An approval was granted.
    ApprovalGranted => "approval.granted",
    /// An approval was denied.
    ApprovalDenied => "approval.denied",
    /// An action held for approval waited too long.
    ApprovalExpired => "approval.expired",
    /// The steady state is being checked after an action.
    VerificationStarted => "verification.started",
    /// A stopgap held the service up: its callers and the entry point must be served again
    /// too before it counts.
    VerificationCallers => "verification.callers",
    /// The steady state did not come back in time.
    VerificationFailed => "verification.failed",
    /// A mitigation (throttle, circuit breaker) was lifted after recovery.
    MitigationLifted => "mitigation.lifted",
    /// A mitigation was kept: lifting it would bring the trouble back.
    MitigationKept => "mitigation.kept",
    /// A control (kill switch, maintenance window) changed.
    ControlChanged => "control.changed",
    /// A control value could not be read and was ignored.
    ControlRejected => "control.rejected",
    // the executor
    /// An action was carried out.
    ActionSucceeded => "action.succeeded",
    /// An action was tried and failed.
    ActionFailed => "action.failed",
    /// A guard of the executor refused an action.
    ActionRefused => "action.refused",
    /// The Docker engine was unreachable; the action is retried with backoff.
    ActionRetrying => "action.retrying",
    // chaos
    /// A fault was injected.
    ChaosInjected => "chaos.injected",
    /// A fault was reverted.
    ChaosReverted => "chaos.reverted",
    /// A chaos request was refused by the guardrails.
    ChaosRejected => "chaos.rejected",
    /// Dry run: what would have been injected.
    ChaosDryRun => "chaos.dry_run",
    // operators (the `immune` CLI)
    /// A kill switch (healing, chaos or both) was engaged.
    KillSwitchEngaged => "kill_switch.engaged",
    /// A kill switch was released.
    KillSwitchReleased => "kill_switch.released",
    /// A maintenance window was added.
    MaintenanceAdded => "maintenance.added",
    /// A maintenance window was removed.
    MaintenanceRemoved => "maintenance.removed",
}

impl fmt::Display for AuditCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_reads_back_and_none_is_spelled_twice() {
        let mut seen = std::collections::HashSet::new();
        for &code in AuditCode::ALL {
            assert_eq!(AuditCode::parse(code.as_str()), Some(code));
            assert!(seen.insert(code.as_str()), "{code} declared twice");
            let (area, verb) = code.as_str().split_once('.').expect("dotted");
            assert!(!area.is_empty() && !verb.is_empty(), "{code}");
        }
        assert_eq!(AuditCode::parse("no.such_code"), None);
    }
}
