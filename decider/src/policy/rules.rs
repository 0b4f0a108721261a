//! The safety rules a step must pass before it is issued, checked in this order: kill
//! switch, maintenance window, root cause (wait for the dependencies, act on the deepest
//! anomalous one first), one action per container, cooldown per (service, action), blast
//! radius, and the rate budgets per service and global (a step that needs an approval is
//! held before any budget is spent).

use immune_nats::ServiceName;

use super::root_cause::own_fault;
use super::Decider;
use crate::playbook::Step;
use crate::safety::TokenBucket;

impl Decider {
    /// The first safety rule that holds `step` back, with the reason.
    pub(super) fn blocked_by(
        &mut self,
        service: &ServiceName,
        step: &Step,
        container: &str,
        approved: bool,
        now_ms: u64,
    ) -> Option<(&'static str, String)> {
        if self.controls.kill_switch {
            return Some(("kill_switch", "the kill switch is on".into()));
        }
        if let Some(until) = self.controls.in_maintenance(service, now_ms) {
            return Some((
                "maintenance",
                format!("{service} is in a maintenance window until {until}"),
            ));
        }
        let own = self
            .open
            .get(service)
            .is_some_and(|o| own_fault(o.incident.signature));
        if let Some(open) = self
            .open
            .get(service)
            .filter(|o| !own && o.settle_until > now_ms)
        {
            let wait = open.settle_until - now_ms;
            return Some((
                "root_cause_wait",
                if open.anomaly.depends_on.is_empty() {
                    format!("{service} just recovered from another anomaly: waiting {wait} ms for this one to clear with it")
                } else {
                    format!(
                        "{service} calls {}: waiting {wait} ms for their anomalies (or recovery) to show",
                        join(&open.anomaly.depends_on),
                    )
                },
            ));
        }
        if let Some(culprit) = self.anomalous_dependency(service).filter(|_| !own) {
            return Some((
                "root_cause",
                format!("{service} depends on {culprit}, anomalous too: acting on {culprit} first"),
            ));
        }
        if let Some(other) = self.busy.get(container) {
            return Some((
                "one_action_per_container",
                format!("action {other} is still running on container {container}"),
            ));
        }
        if let Some(&until) = self.cooldown_until.get(&(service.clone(), step.action)) {
            if until > now_ms {
                return Some((
                    "cooldown",
                    format!(
                        "{} on {service} is cooling down for {} ms more",
                        step.action,
                        until - now_ms
                    ),
                ));
            }
        }
        let acting = self
            .open
            .iter()
            .filter(|(s, o)| *s != service && o.acting())
            .count();
        if acting >= self.config.max_services_acting {
            return Some((
                "blast_radius",
                format!(
                    "{acting} services are being acted on (cap {})",
                    self.config.max_services_acting
                ),
            ));
        }
        let needs_approval = step.risk > self.config.approval_risk && !approved;
        if needs_approval {
            return None; // held for approval before any budget is spent
        }
        let service_budget = self.config.service_budget;
        let own = self
            .service_budgets
            .entry(service.clone())
            .or_insert_with(|| TokenBucket::new(service_budget, now_ms));
        if !own.available(now_ms) {
            return Some((
                "service_budget",
                format!(
                    "{service} spent its budget of {} actions (refill {}/min)",
                    service_budget.burst, service_budget.per_minute
                ),
            ));
        }
        if !self.global_budget.available(now_ms) {
            return Some((
                "global_budget",
                format!(
                    "the global budget of {} actions is spent (refill {}/min)",
                    self.config.global_budget.burst, self.config.global_budget.per_minute
                ),
            ));
        }
        None
    }
}

fn join(services: &[ServiceName]) -> String {
    let names: Vec<&str> = services.iter().map(ServiceName::as_str).collect();
    names.join(", ")
}
