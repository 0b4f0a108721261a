//! What the console shows, kept in memory and bounded: pure, no I/O, unit-tested.
//!
//! [`View::apply`] takes one envelope off the bus and returns the [`Delta`]s the page needs
//! (the whole changed service card, incident or audit line; each is small), and
//! [`View::snapshot`] is what a page gets when it connects. Every collection has a limit:
//! `points` per service, `incidents` (ended ones are dropped first), `timeline` entries per
//! incident and `audit` lines.
//!
//! Incidents are keyed by the correlation id: the chaos run id when a fault was injected
//! (the detector, the decider and the executor carry it on), else the id the detector or
//! decider chose. So one entry tells the whole story: fault -> anomaly -> actions ->
//! recovered or escalated.

use std::collections::{BTreeMap, VecDeque};

use immune_nats::{
    feature, ActionOutcome, AnomalyState, ContainerState, Envelope, Event, IncidentState,
    MetricSnapshot, SnapshotScope,
};
use serde::{Deserialize, Serialize};

/// How much the view keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Points per service (one per collector interval).
    pub points: usize,
    /// Incidents kept, open and ended; the oldest ended ones go first.
    pub incidents: usize,
    /// Timeline entries per incident.
    pub timeline: usize,
    /// Audit lines.
    pub audit: usize,
    /// Services shown (a flood of made-up service names cannot grow the view without end).
    pub services: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            points: 120,
            incidents: 50,
            timeline: 60,
            audit: 200,
            services: 200,
        }
    }
}

/// One collector interval of one service.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Point {
    pub at_ms: u64,
    /// 1 healthy, 0 not (the share of healthy replicas for a service roll-up).
    pub health: Option<f64>,
    pub request_rate: Option<f64>,
    pub error_ratio: Option<f64>,
    pub latency_p95_ms: Option<f64>,
}

/// One service card.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceView {
    pub service: String,
    /// `healthy`, `unhealthy` or the container state when it is not running (`exited`, ...).
    pub status: String,
    pub instances: BTreeMap<String, String>,
    pub last_ms: u64,
    pub points: VecDeque<Point>,
    /// The detector currently reports an anomaly on it (signature), if any.
    pub anomaly: Option<String>,
    /// Points come from service roll-ups once one was seen, else from the instance.
    #[serde(skip)]
    rolled_up: bool,
}

/// What one timeline entry is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Fault,
    Anomaly,
    Incident,
    Action,
    Result,
    Revert,
    Escalation,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineLine {
    pub at_ms: u64,
    pub step: Step,
    pub text: String,
}

/// Where an incident (or a fault that has not caused one yet) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// A fault was injected or an anomaly fired; the decider has not opened an incident yet.
    Pending,
    Open,
    Acting,
    Verifying,
    Recovered,
    Escalated,
    Closed,
    /// The chaos stage refused the fault.
    Rejected,
}

impl Status {
    pub fn ended(self) -> bool {
        matches!(
            self,
            Status::Recovered | Status::Escalated | Status::Closed | Status::Rejected
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IncidentView {
    /// The correlation id.
    pub key: String,
    pub service: String,
    pub status: Status,
    pub incident_id: Option<String>,
    /// The decider's last word on it (`opened`, ..., `closed`); `status` keeps the outcome
    /// (`recovered`, `escalated`) once the decider closes it.
    pub incident_state: Option<String>,
    pub signature: Option<String>,
    pub chaos_run: Option<String>,
    pub started_ms: u64,
    pub updated_ms: u64,
    pub timeline: Vec<TimelineLine>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditLine {
    pub at_ms: u64,
    pub stage: String,
    pub service: String,
    pub what: String,
    pub why: String,
    pub outcome: String,
    pub correlation_id: Option<String>,
}

/// A change the page applies: the whole changed item, replacing the old one.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Delta {
    Service(ServiceView),
    Incident(IncidentView),
    /// An incident dropped to stay within the limit.
    IncidentGone {
        key: String,
    },
    Audit(AuditLine),
}

/// Everything a page needs when it connects.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    pub services: Vec<ServiceView>,
    /// Newest first.
    pub incidents: Vec<IncidentView>,
    /// Newest first.
    pub audit: Vec<AuditLine>,
}

/// The console's memory of the bus.
#[derive(Debug, Default)]
pub struct View {
    limits: Limits,
    services: BTreeMap<String, ServiceView>,
    incidents: BTreeMap<String, IncidentView>,
    audit: VecDeque<AuditLine>,
}

fn push_bounded<T>(queue: &mut VecDeque<T>, item: T, limit: usize) {
    queue.push_back(item);
    while queue.len() > limit.max(1) {
        queue.pop_front();
    }
}

fn state_name(state: ContainerState) -> &'static str {
    match state {
        ContainerState::Created => "created",
        ContainerState::Running => "running",
        ContainerState::Paused => "paused",
        ContainerState::Restarting => "restarting",
        ContainerState::Removing => "removing",
        ContainerState::Exited => "exited",
        ContainerState::Dead => "dead",
        ContainerState::Unknown => "unknown",
    }
}

fn point_of(s: &MetricSnapshot) -> Point {
    let f = |name: &str| s.features.get(name).copied().filter(|v| v.is_finite());
    let health = f(feature::HEALTH_OK).or_else(|| {
        s.health
            .as_ref()
            .map(|h| if h.ok { 1.0 } else { 0.0 })
            .or((s.state != ContainerState::Running).then_some(0.0))
    });
    Point {
        at_ms: s.observed_ms,
        health,
        request_rate: f(feature::REQUEST_RATE),
        error_ratio: f(feature::ERROR_RATIO),
        latency_p95_ms: f(feature::LATENCY_P95_MS),
    }
}

impl View {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            ..Default::default()
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut incidents: Vec<IncidentView> = self.incidents.values().cloned().collect();
        incidents.sort_by_key(|i| std::cmp::Reverse(i.started_ms));
        Snapshot {
            services: self.services.values().cloned().collect(),
            incidents,
            audit: self.audit.iter().rev().cloned().collect(),
        }
    }

    /// Takes in one event; returns what changed on the page.
    pub fn apply(&mut self, envelope: &Envelope) -> Vec<Delta> {
        let at = envelope.timestamp_ms;
        let key = envelope.correlation_id.as_deref();
        match &envelope.body {
            Event::MetricSnapshot(s) => self.on_snapshot(s).into_iter().collect(),
            Event::Anomaly(a) => {
                let mut out = Vec::new();
                if let Some(card) = self.services.get_mut(a.service.as_str()) {
                    card.anomaly = match a.state {
                        AnomalyState::Firing => Some(a.signature.to_string()),
                        AnomalyState::Cleared => None,
                    };
                    out.push(Delta::Service(card.clone()));
                }
                let text = match a.state {
                    AnomalyState::Firing => format!("anomaly {}: {}", a.signature, a.reason),
                    AnomalyState::Cleared => format!("anomaly {} cleared", a.signature),
                };
                // A cleared anomaly of a story the view no longer has does not start one.
                let create = a.state == AnomalyState::Firing;
                out.extend(self.note(
                    key,
                    a.service.as_str(),
                    at,
                    Step::Anomaly,
                    text,
                    create,
                    |i| {
                        if i.signature.is_none() {
                            i.signature = Some(a.signature.to_string());
                        }
                    },
                ));
                out
            }
            Event::Incident(i) => {
                let status = match i.state {
                    IncidentState::Opened => Status::Open,
                    IncidentState::Acting => Status::Acting,
                    IncidentState::Verifying => Status::Verifying,
                    IncidentState::Recovered => Status::Recovered,
                    IncidentState::Escalated => Status::Escalated,
                    IncidentState::Closed => Status::Closed,
                };
                let word = match i.state {
                    IncidentState::Opened => "opened",
                    IncidentState::Acting => "acting",
                    IncidentState::Verifying => "verifying",
                    IncidentState::Recovered => "recovered",
                    IncidentState::Escalated => "escalated",
                    IncidentState::Closed => "closed",
                };
                let key = key.unwrap_or(&i.incident_id);
                let changed = self
                    .incidents
                    .get(key)
                    .is_none_or(|v| v.incident_state.as_deref() != Some(word));
                if !changed {
                    return Vec::new();
                }
                let text = format!("incident {word} ({})", i.signature);
                self.note(
                    Some(key),
                    i.service.as_str(),
                    at,
                    Step::Incident,
                    text,
                    true,
                    |v| {
                        let outcome = matches!(v.status, Status::Recovered | Status::Escalated);
                        if !(status == Status::Closed && outcome) {
                            v.status = status;
                        }
                        v.incident_state = Some(word.to_string());
                        v.incident_id = Some(i.incident_id.clone());
                        v.signature = Some(i.signature.to_string());
                        if i.chaos_run.is_some() {
                            v.chaos_run = i.chaos_run.clone();
                        }
                    },
                )
            }
            Event::ActionRequest(r) => {
                let text = format!("action {} on {}: {}", r.action, r.instance, r.reason);
                self.note(
                    key,
                    r.service.as_str(),
                    at,
                    Step::Action,
                    text,
                    true,
                    |_| {},
                )
            }
            Event::ActionResult(r) => {
                let text = match r.outcome {
                    ActionOutcome::Succeeded => {
                        format!("{} succeeded in {} ms", r.action, r.duration_ms)
                    }
                    ActionOutcome::Failed => format!(
                        "{} failed: {}",
                        r.action,
                        r.error.as_deref().unwrap_or("no reason given")
                    ),
                    ActionOutcome::Refused => format!(
                        "{} refused: {}",
                        r.action,
                        r.error.as_deref().unwrap_or("no reason given")
                    ),
                };
                self.note(
                    key,
                    r.service.as_str(),
                    at,
                    Step::Result,
                    text,
                    true,
                    |_| {},
                )
            }
            Event::ChaosInjected(c) => {
                let text = format!("fault {} injected on {}", c.fault, c.instance);
                let run = c.run_id.clone();
                self.note(
                    Some(&run),
                    c.service.as_str(),
                    at,
                    Step::Fault,
                    text,
                    true,
                    |v| {
                        v.chaos_run = Some(c.run_id.clone());
                    },
                )
            }
            Event::ChaosRejected(c) => {
                let text = format!("fault {} refused: {}", c.fault, c.reason);
                let run = c.run_id.clone();
                self.note(
                    Some(&run),
                    c.service.as_str(),
                    at,
                    Step::Fault,
                    text,
                    true,
                    |v| {
                        v.chaos_run = Some(c.run_id.clone());
                        if v.status == Status::Pending {
                            v.status = Status::Rejected;
                        }
                    },
                )
            }
            Event::ChaosReverted(c) => {
                let text = format!("fault {} reverted: {}", c.fault, c.note);
                let run = c.run_id.clone();
                self.note(
                    Some(&run),
                    c.service.as_str(),
                    at,
                    Step::Revert,
                    text,
                    false,
                    |_| {},
                )
            }
            Event::Escalation(e) => {
                let text = format!("escalated to a human: {}", e.reason);
                self.note(
                    key,
                    e.service.as_str(),
                    at,
                    Step::Escalation,
                    text,
                    true,
                    |v| {
                        v.status = Status::Escalated;
                    },
                )
            }
            Event::Audit(r) => {
                let line = AuditLine {
                    at_ms: at,
                    stage: r.stage.to_string(),
                    service: r.service.to_string(),
                    what: r.what.clone(),
                    why: r.why.clone(),
                    outcome: r.outcome.clone(),
                    correlation_id: envelope.correlation_id.clone(),
                };
                push_bounded(&mut self.audit, line.clone(), self.limits.audit);
                vec![Delta::Audit(line)]
            }
            Event::ContainerEvent(_)
            | Event::ChaosRequest(_)
            | Event::DeadLetter(_)
            | Event::Approval(_) => Vec::new(),
        }
    }

    fn on_snapshot(&mut self, s: &MetricSnapshot) -> Option<Delta> {
        let name = s.service.as_str();
        if !self.services.contains_key(name) {
            if self.services.len() >= self.limits.services {
                return None;
            }
            self.services.insert(
                name.to_string(),
                ServiceView {
                    service: name.to_string(),
                    status: "unknown".into(),
                    instances: BTreeMap::new(),
                    last_ms: 0,
                    points: VecDeque::new(),
                    anomaly: None,
                    rolled_up: false,
                },
            );
        }
        let card = self.services.get_mut(name)?;
        match s.scope {
            SnapshotScope::Instance => {
                let healthy = s.health.as_ref().is_some_and(|h| h.ok);
                let state = if s.state == ContainerState::Running {
                    if healthy {
                        "healthy"
                    } else {
                        "unhealthy"
                    }
                } else {
                    state_name(s.state)
                };
                card.instances.insert(s.instance.clone(), state.to_string());
                if card.rolled_up {
                    // The card's status follows the roll-up, but an instance's news is shown.
                    return Some(Delta::Service(card.clone()));
                }
                card.status = state.to_string();
            }
            SnapshotScope::Service => {
                card.rolled_up = true;
                card.status = match s.replicas {
                    Some(r) if r.healthy == r.total && r.total > 0 => "healthy".into(),
                    Some(r) if r.running == 0 => "down".into(),
                    Some(_) => "unhealthy".into(),
                    None => card.status.clone(),
                };
                // Instance points kept so far would mix with roll-ups: start the line over.
                if card.points.back().is_some_and(|p| p.at_ms > s.observed_ms) {
                    card.points.clear();
                }
            }
        }
        card.last_ms = card.last_ms.max(s.observed_ms);
        push_bounded(&mut card.points, point_of(s), self.limits.points);
        Some(Delta::Service(card.clone()))
    }

    /// Adds a line to the story `key` of `service` (creating it when `create`), lets `update`
    /// change it, and keeps the view within its limits.
    #[allow(clippy::too_many_arguments)]
    fn note(
        &mut self,
        key: Option<&str>,
        service: &str,
        at_ms: u64,
        step: Step,
        text: String,
        create: bool,
        update: impl FnOnce(&mut IncidentView),
    ) -> Vec<Delta> {
        let Some(key) = key else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if !self.incidents.contains_key(key) {
            if !create {
                return out;
            }
            self.incidents.insert(
                key.to_string(),
                IncidentView {
                    key: key.to_string(),
                    service: service.to_string(),
                    status: Status::Pending,
                    incident_id: None,
                    incident_state: None,
                    signature: None,
                    chaos_run: None,
                    started_ms: at_ms,
                    updated_ms: at_ms,
                    timeline: Vec::new(),
                },
            );
            out.extend(self.evict(key));
        }
        let Some(incident) = self.incidents.get_mut(key) else {
            return out;
        };
        incident.updated_ms = incident.updated_ms.max(at_ms);
        incident.timeline.push(TimelineLine { at_ms, step, text });
        incident.timeline.sort_by_key(|l| l.at_ms);
        if incident.timeline.len() > self.limits.timeline.max(2) {
            // Keep the first line (how it began) and the newest ones.
            incident.timeline.remove(1);
        }
        update(incident);
        out.push(Delta::Incident(incident.clone()));
        out
    }

    /// Drops incidents beyond the limit, ended ones first, oldest first; never `keep`.
    fn evict(&mut self, keep: &str) -> Vec<Delta> {
        let mut out = Vec::new();
        while self.incidents.len() > self.limits.incidents.max(1) {
            let victim = self
                .incidents
                .values()
                .filter(|i| i.key != keep)
                .min_by_key(|i| (!i.status.ended(), i.updated_ms))
                .map(|i| i.key.clone());
            let Some(victim) = victim else { break };
            self.incidents.remove(&victim);
            out.push(Delta::IncidentGone { key: victim });
        }
        out
    }
}

/// The ids of the events most recently taken in, so that one read twice (from the history
/// replay and from the live subscription) is applied once. Bounded: the oldest ids go.
#[derive(Debug, Default)]
pub struct SeenIds {
    limit: usize,
    order: VecDeque<String>,
    ids: std::collections::HashSet<String>,
}

impl SeenIds {
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            ..Default::default()
        }
    }

    /// True the first time an id is offered.
    pub fn first_time(&mut self, id: &str) -> bool {
        if self.ids.contains(id) {
            return false;
        }
        self.ids.insert(id.to_string());
        self.order.push_back(id.to_string());
        while self.order.len() > self.limit {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests;
