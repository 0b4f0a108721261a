//! Every event that travels on the bus.
//!
//! Compatibility rules: fields are encoded by name; a consumer ignores fields it does not
//! know; a field added later must be `Option` or carry `#[serde(default)]`, so an older
//! producer still decodes. A new event kind is a new variant of [`Event`]; an older consumer
//! sends it to the dead-letter subject with the reason instead of guessing.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::envelope::{EventId, Stage};
use crate::service::ServiceName;

/// The body of an [`crate::Envelope`]: one variant per event kind, encoded as
/// `{kind: "...", data: {...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum Event {
    MetricSnapshot(MetricSnapshot),
    ContainerEvent(ContainerEvent),
    Anomaly(Anomaly),
    Incident(Incident),
    ActionRequest(ActionRequest),
    ActionResult(ActionResult),
    ChaosRequest(ChaosRequest),
    ChaosInjected(ChaosInjected),
    ChaosReverted(ChaosReverted),
    ChaosRejected(ChaosRejected),
    Audit(AuditRecord),
    DeadLetter(DeadLetter),
    Escalation(Escalation),
    Approval(Approval),
}

impl Event {
    /// The kind as it appears on the wire, also used as a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::MetricSnapshot(_) => "metric_snapshot",
            Event::ContainerEvent(_) => "container_event",
            Event::Anomaly(_) => "anomaly",
            Event::Incident(_) => "incident",
            Event::ActionRequest(_) => "action_request",
            Event::ActionResult(_) => "action_result",
            Event::ChaosRequest(_) => "chaos_request",
            Event::ChaosInjected(_) => "chaos_injected",
            Event::ChaosReverted(_) => "chaos_reverted",
            Event::ChaosRejected(_) => "chaos_rejected",
            Event::Audit(_) => "audit",
            Event::DeadLetter(_) => "dead_letter",
            Event::Escalation(_) => "escalation",
            Event::Approval(_) => "approval",
        }
    }

    /// The service the event is about (`None` for a dead letter, which is about a message).
    pub fn service(&self) -> Option<&ServiceName> {
        match self {
            Event::MetricSnapshot(e) => Some(&e.service),
            Event::ContainerEvent(e) => Some(&e.service),
            Event::Anomaly(e) => Some(&e.service),
            Event::Incident(e) => Some(&e.service),
            Event::ActionRequest(e) => Some(&e.service),
            Event::ActionResult(e) => Some(&e.service),
            Event::ChaosRequest(e) => Some(&e.service),
            Event::ChaosInjected(e) => Some(&e.service),
            Event::ChaosReverted(e) => Some(&e.service),
            Event::ChaosRejected(e) => Some(&e.service),
            Event::Audit(e) => Some(&e.service),
            Event::Escalation(e) => Some(&e.service),
            Event::Approval(e) => Some(&e.service),
            Event::DeadLetter(_) => None,
        }
    }
}

/// Names of the features the collector extracts; the detector reads them by these names.
pub mod feature {
    /// Requests per second over the last interval.
    pub const REQUEST_RATE: &str = "request_rate";
    /// 5xx responses over all responses in the last interval (0 when there was no traffic).
    pub const ERROR_RATIO: &str = "error_ratio";
    pub const LATENCY_P50_MS: &str = "latency_p50_ms";
    pub const LATENCY_P95_MS: &str = "latency_p95_ms";
    pub const LATENCY_P99_MS: &str = "latency_p99_ms";
    pub const IN_FLIGHT: &str = "in_flight";
    /// CPU used over the last interval, in cores (1.0 = one core busy).
    pub const CPU_CORES: &str = "cpu_cores";
    /// Memory in use, page cache excluded (as `docker stats` shows it).
    pub const MEMORY_BYTES: &str = "memory_bytes";
    /// Memory in use over the container's limit, when it has one.
    pub const MEMORY_RATIO: &str = "memory_ratio";
    /// Times the container started during the last interval (0 normally).
    pub const RESTARTS: &str = "restarts";
    pub const PROBE_LATENCY_MS: &str = "probe_latency_ms";
    pub const HEALTH_OK: &str = "health_ok";
    pub const SCRAPE_OK: &str = "scrape_ok";
    pub const REJECTED_RATE: &str = "rejected_rate";
}

/// What Docker says the container is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerState {
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
    Unknown,
}

impl ContainerState {
    /// Docker's state string (`docker inspect .State.Status`).
    pub fn from_docker(s: &str) -> Self {
        match s {
            "created" => Self::Created,
            "running" => Self::Running,
            "paused" => Self::Paused,
            "restarting" => Self::Restarting,
            "removing" => Self::Removing,
            "exited" => Self::Exited,
            "dead" => Self::Dead,
            _ => Self::Unknown,
        }
    }
}

/// The result of one `/health` probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthProbe {
    pub ok: bool,
    pub status: Option<u16>,
    pub latency_ms: f64,
    pub error: Option<String>,
}

/// The result of one `/metrics` scrape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScrapeOutcome {
    pub ok: bool,
    pub samples: u32,
    pub bytes: u32,
    pub latency_ms: f64,
    pub error: Option<String>,
}

/// One instance of a service observed over one collection interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSnapshot {
    pub service: ServiceName,
    /// Container name: one service may run several instances (replicas).
    pub instance: String,
    pub container_id: String,
    pub observed_ms: u64,
    pub interval_ms: u64,
    pub state: ContainerState,
    pub health: Option<HealthProbe>,
    pub scrape: Option<ScrapeOutcome>,
    /// Named features (see [`feature`]); absent when not measurable this interval.
    pub features: BTreeMap<String, f64>,
    /// One container, or the roll-up of all replicas of the service. Absent in v1 messages
    /// written before roll-ups existed, which were all per instance.
    #[serde(default)]
    pub scope: SnapshotScope,
    /// For a service roll-up: how many replicas it covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<Replicas>,
    /// The services this one calls (label `immune.depends_on`), for root-cause choice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<ServiceName>,
}

/// What a [`MetricSnapshot`] describes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotScope {
    /// One container (`instance` is its name).
    #[default]
    Instance,
    /// Every replica of the service over the interval (`instance` is [`SERVICE_INSTANCE`]).
    Service,
}

/// The `instance` of a service roll-up.
pub const SERVICE_INSTANCE: &str = "*";

/// The replicas behind a service roll-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replicas {
    pub total: u32,
    pub running: u32,
    pub healthy: u32,
}

/// A Docker lifecycle event of a managed container, published as soon as Docker reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerEventKind {
    Started,
    Died,
    OomKilled,
    Restarted,
    Paused,
    Unpaused,
    Healthy,
    Unhealthy,
    Destroyed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerEvent {
    pub service: ServiceName,
    pub instance: String,
    pub container_id: String,
    pub kind: ContainerEventKind,
    pub exit_code: Option<i64>,
    pub observed_ms: u64,
}

/// What kind of trouble an anomaly is; playbooks are keyed by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signature {
    /// The container exited or died.
    Crashed,
    /// The kernel killed the container for memory.
    OomKilled,
    /// The container runs but does not answer its health check (hang, freeze, deadlock).
    Unresponsive,
    /// The container is paused (`docker pause`: its processes frozen, memory kept): it
    /// answers nothing until unpaused, which keeps its state, where a restart loses it.
    Paused,
    /// Metrics cannot be scraped while health still passes.
    TargetDown,
    /// Latency up, errors flat.
    LatencyUp,
    /// Error ratio up.
    ErrorsUp,
    /// Traffic fell away.
    TrafficDrop,
    /// CPU or memory near exhaustion.
    ResourceExhaustion,
    /// A burst of rejected malicious requests.
    AttackBurst,
    /// More requests than the service's capacity: the request rate well above normal, with
    /// latency or errors up (a repair adds capacity; a restart does not help).
    Overload,
    /// Abnormal, but no signature fits.
    Unknown,
}

impl Signature {
    pub fn as_str(self) -> &'static str {
        match self {
            Signature::Crashed => "crashed",
            Signature::OomKilled => "oom_killed",
            Signature::Unresponsive => "unresponsive",
            Signature::Paused => "paused",
            Signature::TargetDown => "target_down",
            Signature::LatencyUp => "latency_up",
            Signature::ErrorsUp => "errors_up",
            Signature::TrafficDrop => "traffic_drop",
            Signature::ResourceExhaustion => "resource_exhaustion",
            Signature::AttackBurst => "attack_burst",
            Signature::Overload => "overload",
            Signature::Unknown => "unknown",
        }
    }

    /// Every signature, in declaration order.
    pub const ALL: [Signature; 12] = [
        Signature::Crashed,
        Signature::OomKilled,
        Signature::Unresponsive,
        Signature::Paused,
        Signature::TargetDown,
        Signature::LatencyUp,
        Signature::ErrorsUp,
        Signature::TrafficDrop,
        Signature::ResourceExhaustion,
        Signature::AttackBurst,
        Signature::Overload,
        Signature::Unknown,
    ];
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An anomaly episode opens with `Firing` and ends with `Cleared`, both with one `anomaly_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyState {
    Firing,
    Cleared,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Up,
    Down,
}

/// How much one metric contributes to an anomaly, and which way it moved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contribution {
    pub metric: String,
    pub value: f64,
    pub expected: f64,
    /// Share of the anomaly score, 0..=1.
    pub share: f64,
    pub direction: Direction,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    pub anomaly_id: String,
    pub service: ServiceName,
    pub instance: String,
    pub container_id: String,
    pub state: AnomalyState,
    pub signature: Signature,
    /// Which detector spoke: `rule:<name>` or `pca`.
    pub detector: String,
    pub score: f64,
    pub threshold: f64,
    pub contributions: Vec<Contribution>,
    /// One sentence an operator can read.
    pub reason: String,
    pub started_ms: u64,
    /// The services the anomalous one calls, as its labels say; the decider acts on the
    /// deepest anomalous dependency first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<ServiceName>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentState {
    Opened,
    Acting,
    Verifying,
    Recovered,
    Escalated,
    Closed,
}

/// One line of an incident's story.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub at_ms: u64,
    pub what: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub incident_id: String,
    pub service: ServiceName,
    pub state: IncidentState,
    pub signature: Signature,
    /// Set when the decider knows the fault was injected by a chaos run.
    pub chaos_run: Option<String>,
    pub opened_ms: u64,
    pub timeline: Vec<TimelineEntry>,
}

/// A repair the executor knows how to carry out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    Restart,
    Recreate,
    ScaleOut,
    ScaleIn,
    Pause,
    Unpause,
    UpdateLimits,
    Rollback,
    ReconnectNetwork,
    Throttle,
    CircuitBreaker,
    FeatureFlag,
    /// Block the clients the service's request screen keeps refusing (an attack's sources),
    /// through its admin endpoint: `state` `on` or `off`.
    BlockSources,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Restart => "restart",
            ActionKind::Recreate => "recreate",
            ActionKind::ScaleOut => "scale_out",
            ActionKind::ScaleIn => "scale_in",
            ActionKind::Pause => "pause",
            ActionKind::Unpause => "unpause",
            ActionKind::UpdateLimits => "update_limits",
            ActionKind::Rollback => "rollback",
            ActionKind::ReconnectNetwork => "reconnect_network",
            ActionKind::Throttle => "throttle",
            ActionKind::CircuitBreaker => "circuit_breaker",
            ActionKind::FeatureFlag => "feature_flag",
            ActionKind::BlockSources => "block_sources",
        }
    }
}

impl fmt::Display for ActionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The decider asks the executor to carry out one action on one container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRequest {
    pub action_id: String,
    pub incident_id: String,
    pub service: ServiceName,
    pub instance: String,
    pub container_id: String,
    pub action: ActionKind,
    pub params: BTreeMap<String, String>,
    pub timeout_ms: u64,
    pub reason: String,
}

impl ActionRequest {
    /// Whether it sets a stopgap, holding a service up without repairing it (a throttle, an
    /// open circuit, blocked sources: `Some(true)`), lifts one (`rps` 0 or `off`, `closed`,
    /// `off`: `Some(false)`), or is no stopgap action at all (`None`).
    pub fn stopgap(&self) -> Option<bool> {
        let param = |k: &str| self.params.get(k).map(|v| v.trim().to_ascii_lowercase());
        Some(match self.action {
            ActionKind::Throttle => !matches!(param("rps").as_deref(), Some("0" | "off")),
            ActionKind::CircuitBreaker => param("state").as_deref() == Some("open"),
            ActionKind::BlockSources => param("state").as_deref() != Some("off"),
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionOutcome {
    Succeeded,
    Failed,
    /// A guard refused it (not labelled, wrong project, unknown action); nothing was done.
    Refused,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionResult {
    pub action_id: String,
    pub incident_id: String,
    pub service: ServiceName,
    pub instance: String,
    pub action: ActionKind,
    pub outcome: ActionOutcome,
    pub error: Option<String>,
    pub duration_ms: u64,
    pub finished_ms: u64,
    /// The container that now stands where the target stood, when the action put another
    /// one there under the same name (a recreate, a rollback): what the next action on the
    /// instance is sent to. `None` when the target kept its id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced_by: Option<String>,
}

/// A fault the chaos stage can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// The process exits (through the service's `/fault` endpoint).
    Crash,
    /// The process stops answering (through `/fault`).
    Hang,
    /// SIGKILL through Docker.
    Kill,
    Stop,
    /// Freeze every process of the container.
    Pause,
    Restart,
    NetworkDisconnect,
    Latency,
    Errors,
    MemoryLeak,
    CpuBurn,
    /// Malicious request payloads sent at the service (SQL injection, XSS, ...): a
    /// security fault; the service should refuse them.
    Attack,
    /// A load spike beyond the service's capacity, from the load generator that sends the
    /// service its traffic (labelled `immune.loadgen.target=<service>`).
    Overload,
}

impl FaultKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Crash => "crash",
            FaultKind::Hang => "hang",
            FaultKind::Kill => "kill",
            FaultKind::Stop => "stop",
            FaultKind::Pause => "pause",
            FaultKind::Restart => "restart",
            FaultKind::NetworkDisconnect => "network_disconnect",
            FaultKind::Latency => "latency",
            FaultKind::Errors => "errors",
            FaultKind::MemoryLeak => "memory_leak",
            FaultKind::CpuBurn => "cpu_burn",
            FaultKind::Attack => "attack",
            FaultKind::Overload => "overload",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for FaultKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const ALL: [FaultKind; 13] = [
            FaultKind::Crash,
            FaultKind::Hang,
            FaultKind::Kill,
            FaultKind::Stop,
            FaultKind::Pause,
            FaultKind::Restart,
            FaultKind::NetworkDisconnect,
            FaultKind::Latency,
            FaultKind::Errors,
            FaultKind::MemoryLeak,
            FaultKind::CpuBurn,
            FaultKind::Attack,
            FaultKind::Overload,
        ];
        ALL.into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| format!("unknown fault {s:?}"))
    }
}

/// Anyone (CLI, test, dashboard, a user's own code) asks the chaos stage for a fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChaosRequest {
    /// Chosen by the requester to follow the run; the chaos stage makes one up when absent.
    pub run_id: Option<String>,
    pub service: ServiceName,
    pub fault: FaultKind,
    /// How long the fault lasts before it is reverted.
    pub duration_ms: u64,
    pub params: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChaosInjected {
    pub run_id: String,
    pub service: ServiceName,
    pub instance: String,
    pub container_id: String,
    pub fault: FaultKind,
    pub params: BTreeMap<String, String>,
    pub injected_ms: u64,
    pub revert_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChaosReverted {
    pub run_id: String,
    pub service: ServiceName,
    pub instance: String,
    pub fault: FaultKind,
    /// What the revert found and did, e.g. "already healed" or "fault cleared".
    pub note: String,
    pub reverted_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChaosRejected {
    pub run_id: String,
    pub service: ServiceName,
    pub fault: FaultKind,
    pub reason: String,
}

/// What a stage did, why, and how it ended: the operator's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub stage: Stage,
    pub service: ServiceName,
    /// A dotted code ([`crate::AuditCode`]), e.g. `anomaly.firing`, `incident.recovered`.
    pub what: String,
    pub why: String,
    pub outcome: String,
    /// The event this record is about.
    pub about: Option<EventId>,
    /// The action the record is about, when it is about one (`action.held` names the action
    /// an operator approves). Absent in records written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_id: Option<String>,
}

impl AuditRecord {
    /// The record's code, when this build knows it.
    pub fn code(&self) -> Option<crate::AuditCode> {
        crate::AuditCode::parse(&self.what)
    }
}

/// A message a stage could not use, kept with the reason instead of being lost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub stage: Stage,
    pub subject: String,
    pub reason: String,
    /// The error kind, as in the stage's `dead_letters_total{reason}` counter.
    pub reason_kind: String,
    /// The payload as received, cut at [`DeadLetter::MAX_PAYLOAD`] bytes.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    pub payload_len: u64,
}

impl DeadLetter {
    pub const MAX_PAYLOAD: usize = 64 * 1024;
}

/// What was tried for an incident, and how it went: one line of an escalation's story.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionTried {
    pub action_id: String,
    pub action: ActionKind,
    /// `succeeded`, `failed`, `refused`, `not_verified` (succeeded, but no steady state
    /// within the deadline) or `no_result` (the executor never answered).
    pub outcome: String,
    pub detail: String,
    pub requested_ms: u64,
}

/// The decider gives up and hands an incident to a human, with the whole story: the signals
/// seen, the actions tried with their results, and the incident's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Escalation {
    pub incident_id: String,
    pub service: ServiceName,
    pub signature: Signature,
    pub chaos_run: Option<String>,
    /// Why the decider stopped acting.
    pub reason: String,
    /// The anomalies (reasons as the detector wrote them) seen during the incident.
    pub signals: Vec<String>,
    pub actions: Vec<ActionTried>,
    pub timeline: Vec<TimelineEntry>,
    pub opened_ms: u64,
    pub escalated_ms: u64,
}

/// An operator's answer to an action the decider holds for approval (its risk is above the
/// configured threshold), published on `immune.approvals.<service>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    pub service: ServiceName,
    pub incident_id: String,
    /// The held action's id, as the `action.held` audit record names it.
    pub action_id: String,
    pub approved: bool,
    /// Who answered, for the audit trail.
    pub by: String,
}
