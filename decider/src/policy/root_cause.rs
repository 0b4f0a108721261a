//! The culprit: what a service calls, transitively, and the deepest of those that is
//! anomalous too, which is acted on first; a container that died is its own culprit.
//!
//! A dependency whose only trouble is that less traffic reaches it (`traffic_drop`) is not
//! a culprit: that is what a slow or failing caller does to the services it calls, so it
//! points back up the call graph, never down.

use std::collections::BTreeSet;

use immune_nats::{Anomaly, ServiceName, Signature};

use super::Decider;

/// A dependency with this anomaly can be the cause of its callers' trouble.
fn can_cause_callers(signature: Signature) -> bool {
    signature != Signature::TrafficDrop
}

/// An anomaly of a container firing this soon after its incident recovered is taken for the
/// aftermath of its fault (the learned model fires on the first windows after the recovery).
pub(super) const AFTERMATH_MS: u64 = 5_000;

/// What the users of a caller feel of a dependency's trouble: its answers fail or slow.
fn users_feel(signature: Signature) -> bool {
    matches!(
        signature,
        Signature::ErrorsUp
            | Signature::LatencyUp
            | Signature::Overload
            | Signature::Unresponsive
            | Signature::Paused
    )
}

/// The container itself died, was OOM-killed or is paused: it is its own culprit whatever
/// its dependencies do, so the root-cause wait and hold do not apply.
pub(super) fn own_fault(signature: Signature) -> bool {
    matches!(
        signature,
        Signature::Crashed | Signature::OomKilled | Signature::Paused
    )
}

impl Decider {
    /// Whether `service` calls `target`, directly or through others.
    pub(super) fn depends_transitively(&self, service: &ServiceName, target: &ServiceName) -> bool {
        if self.depends_on.get(service).is_none_or(Vec::is_empty) {
            return false;
        }
        let mut seen = BTreeSet::from([service.clone()]);
        let mut stack = vec![service.clone()];
        while let Some(s) = stack.pop() {
            for dep in self.depends_on.get(&s).into_iter().flatten() {
                if dep == target {
                    return true;
                }
                if seen.insert(dep.clone()) {
                    stack.push(dep.clone());
                }
            }
        }
        false
    }

    /// Until when an anomaly of `service` opened at `now_ms` waits for a dependency that
    /// recovered less than `recovery_settle_ms` ago (0: none did): its callers' windows of
    /// failed or piled-up calls fire after its own recovery, and clear without an action.
    pub(super) fn echo_of_recovery_until(&self, service: &ServiceName, now_ms: u64) -> u64 {
        let settle = self.config.recovery_settle_ms;
        self.recovered_at
            .iter()
            .filter(|(dep, &(at, _))| {
                now_ms < at + settle && *dep != service && self.depends_transitively(service, dep)
            })
            .map(|(_, &(at, _))| at + settle)
            .max()
            .unwrap_or(0)
    }

    /// Until when an anomaly of the container whose incident just recovered, firing within
    /// [`AFTERMATH_MS`] of that, waits to clear by itself (0: it is not one): a container
    /// back from a pause, a restart or a hang first drains what piled up meanwhile (the
    /// queued requests arrive at once, the first answers slow), which the learned model
    /// takes for an overload or a latency and which ends in seconds; it gets as long as a
    /// repair's verification may take. A rule's anomaly names a state (died, paused,
    /// failing its health check), never a backlog: a new fault, acted on as any.
    pub(super) fn aftermath_until(&self, anomaly: &Anomaly, now_ms: u64) -> u64 {
        let backlog_like = matches!(
            anomaly.signature,
            Signature::Overload | Signature::LatencyUp
        ) && !anomaly.detector.starts_with("rule:");
        match self.recovered_at.get(&anomaly.service) {
            Some((at, container))
                if backlog_like
                    && *container == anomaly.container_id
                    && now_ms < at + AFTERMATH_MS =>
            {
                at + self.config.verify_deadline_ms
            }
            _ => 0,
        }
    }

    /// A service that calls `service` (transitively: the entry point too) and whose users
    /// feel it, with what they feel: an anomaly of its open incident still firing.
    pub(super) fn suffering_caller(
        &self,
        service: &ServiceName,
    ) -> Option<(ServiceName, Signature)> {
        self.open
            .iter()
            .filter(|(caller, _)| *caller != service && self.depends_transitively(caller, service))
            .find_map(|(caller, open)| {
                let own = (!open.cleared).then_some(open.anomaly.signature);
                own.into_iter()
                    .chain(open.others.values().map(|(a, _)| a.signature))
                    .find(|&s| users_feel(s))
                    .map(|s| (caller.clone(), s))
            })
    }

    /// The deepest anomalous service among those `service` (transitively) calls, if any.
    /// A dependency whose anomaly cleared still counts while its incident is open (a stopgap
    /// whose callers are looked at, an action whose result is awaited, the next step after
    /// a stopgap that did not serve the callers): it is their likely culprit, not they.
    pub(super) fn anomalous_dependency(&self, service: &ServiceName) -> Option<ServiceName> {
        if self.depends_on.get(service).is_none_or(Vec::is_empty) {
            return None;
        }
        let mut seen = BTreeSet::from([service.clone()]);
        let mut frontier = vec![service.clone()];
        let mut deepest = None;
        while !frontier.is_empty() {
            let mut next = Vec::new();
            for s in &frontier {
                for dep in self.depends_on.get(s).into_iter().flatten() {
                    if seen.insert(dep.clone()) {
                        if self
                            .open
                            .get(dep)
                            .is_some_and(|o| can_cause_callers(o.incident.signature))
                        {
                            deepest = Some(dep.clone());
                        }
                        next.push(dep.clone());
                    }
                }
            }
            frontier = next;
        }
        deepest
    }
}
