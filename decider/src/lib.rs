//! The decider: incidents, playbooks, safety, verification, escalation and learning.
//!
//! The logic is the pure [`policy::Decider`]; this module only feeds it deliveries, control
//! changes and clock ticks and publishes what it decides: incidents on
//! `immune.incidents.<service>`, action requests on `immune.actions.<service>`, escalations
//! on `immune.escalations.<service>` (and the optional webhook), an audit record for every
//! decision, and learned values into the `immune_decider_values` bucket. The kill switch and
//! maintenance windows are read from the `immune_decider_control` bucket, at start-up and
//! whenever they change. Open incidents and the state around them are kept in the
//! `immune_decider_state` bucket (see [`policy`]'s memory), written before the decisions
//! are published, so a restarted decider finishes what its predecessor started: it
//! requests every action that was in flight again under the same action id, which the
//! executor answers from its ledger if it already acted. A delivery is acknowledged only
//! after its decisions are remembered and published.

pub mod learning;
pub mod playbook;
pub mod policy;
pub mod safety;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_nats::jetstream::kv::{Operation, Store};
use futures::StreamExt;
use immune_nats::streams::{DECIDER, DECIDER_CONTROL, DECIDER_STATE, DECIDER_VALUES};
use immune_nats::{envelope::now_ms, AuditCode, Escalation, Event, Stage};
use immune_runtime::telemetry::Observation;
use immune_runtime::{
    Audit, Bus, BusConfig, BusError, ConfigError, Delivery, Disposition, Shutdown, Telemetry,
    TelemetryConfig,
};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

pub use playbook::{Playbook, PlaybookError, Step};
pub use policy::{Decided, Decider, Decision, Input, PolicyConfig};

pub const STAGE: Stage = Stage::Decider;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub nats: BusConfig,
    pub telemetry: TelemetryConfig,
    pub policy: PolicyConfig,
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let p = &self.policy;
        let invalid = |m: &str| Err(ConfigError::Invalid(format!("policy.{m}")));
        if p.verify_deadline_ms == 0 {
            return invalid("verify_deadline_ms: must be positive");
        }
        if p.action_timeout_ms == 0 {
            return invalid("action_timeout_ms: must be positive");
        }
        if !(1..=playbook::MAX_RISK).contains(&p.approval_risk) {
            return invalid("approval_risk: must be within 1..=5");
        }
        if p.max_services_acting == 0 {
            return invalid("max_services_acting: must be at least 1");
        }
        for (key, b) in [
            ("service_budget", p.service_budget),
            ("global_budget", p.global_budget),
        ] {
            if b.burst == 0 || b.per_minute.is_nan() || b.per_minute <= 0.0 {
                return invalid(&format!(
                    "{key}: burst must be at least 1 and per_minute positive"
                ));
            }
        }
        if !(p.learning.alpha > 0.0 && p.learning.alpha <= 1.0) {
            return invalid("learning.alpha: must be within (0, 1]");
        }
        if !(0.0..=0.2).contains(&p.learning.epsilon) {
            return invalid("learning.epsilon: must be within 0..=0.2 (bounded exploration)");
        }
        if let Some(url) = &p.escalation_webhook {
            if !url.starts_with("http://") && !url.starts_with("https://") {
                return invalid(&format!(
                    "escalation_webhook: {url:?} is not an http(s) URL"
                ));
            }
        }
        p.load_playbook()
            .map_err(|e| ConfigError::Invalid(format!("policy.playbook_file: {e}")))?;
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeciderError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error(transparent)]
    Playbook(#[from] PlaybookError),
    #[error("bucket {bucket}: {reason}")]
    Bucket {
        bucket: &'static str,
        reason: String,
    },
}

impl DeciderError {
    pub fn kind(&self) -> &'static str {
        match self {
            DeciderError::Bus(e) => e.kind(),
            DeciderError::Playbook(e) => e.kind(),
            DeciderError::Bucket { .. } => "bucket",
        }
    }
}

/// How often deadlines (verification, held and waiting steps) are checked.
const TICK: Duration = Duration::from_millis(200);
/// How long the escalation webhook may take.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs until `shutdown`.
pub async fn run(
    config: Config,
    telemetry: Telemetry,
    mut shutdown: Shutdown,
) -> Result<(), DeciderError> {
    let playbook = config.policy.load_playbook()?;
    let bus = Bus::start_stage(
        &config.nats,
        &config.telemetry,
        telemetry.clone(),
        &shutdown,
    )
    .await?;
    let controls = bus.bucket(DECIDER_CONTROL).await?;
    let values = bus.bucket(DECIDER_VALUES).await?;
    let mut decider = Decider::new(config.policy.clone(), playbook);
    restore_values(&values, &mut decider, &telemetry).await?;
    let mut memory = Memory {
        store: bus.bucket(DECIDER_STATE).await?,
        saved: HashMap::new(),
        unwritten: false,
    };
    memory.restore(&mut decider, &telemetry).await?;
    // the last value of every control key first, then each change as it happens
    let mut control_changes =
        controls
            .watch_with_history(">")
            .await
            .map_err(|e| DeciderError::Bucket {
                bucket: DECIDER_CONTROL.name,
                reason: e.to_string(),
            })?;
    let mut inbox = bus.inbox(DECIDER).await?;
    let webhook = config.policy.escalation_webhook.clone().map(|url| {
        let client = reqwest::Client::builder()
            .timeout(WEBHOOK_TIMEOUT)
            .build()
            .expect("a client without TLS or proxies builds");
        (client, url)
    });
    let out = Outlet {
        bus: &bus,
        values: &values,
        webhook: webhook.as_ref(),
    };
    let resumed = decider.resume(now_ms());
    if !resumed.is_empty() {
        tracing::info!(
            open_incidents = decider.open_incidents().count(),
            "open incidents resumed"
        );
    }
    memory.save(&decider, &telemetry).await;
    out.publish_all(resumed).await;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tracing::info!(dry_run = config.policy.dry_run, "decider running");
    loop {
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = tick.tick() => {
                let decided = decider.decide(Input::Tick, now_ms());
                // A tick that decided nothing changed only what the clock gives back after a
                // restart (a budget's refill, a full budget created): no encoding, no write,
                // unless an earlier write failed.
                if !decided.is_empty() || memory.unwritten {
                    memory.save(&decider, &telemetry).await;
                }
                out.publish_all(decided).await;
            }
            change = control_changes.next() => {
                match change {
                    Some(Ok(entry)) => {
                        let deleted = !matches!(entry.operation, Operation::Put);
                        let text = String::from_utf8_lossy(&entry.value).into_owned();
                        let value = (!deleted).then_some(text.as_str());
                        let decided = decider.decide(Input::Control { key: &entry.key, value }, now_ms());
                        memory.save(&decider, &telemetry).await;
                        out.publish_all(decided).await;
                    }
                    Some(Err(e)) => telemetry.failed("control_watch", &e),
                    None => {
                        telemetry.observe(Observation::Failed { what: "control_watch", error: "the watch ended" });
                        control_changes = controls.watch_with_history(">").await.map_err(|e| DeciderError::Bucket {
                            bucket: DECIDER_CONTROL.name,
                            reason: e.to_string(),
                        })?;
                    }
                }
            }
            delivery = inbox.next() => {
                let handled = handle(&delivery, &mut decider, &mut memory, &out, &telemetry)
                    .instrument(delivery.span().clone())
                    .await;
                delivery.settle(handled).await;
            }
        }
    }
    bus.close().await;
    tracing::info!(
        open_incidents = decider.open_incidents().count(),
        "decider stopped"
    );
    Ok(())
}

/// Feeds one delivery to the policy, remembers and publishes what it decided: done then,
/// else delivered again.
async fn handle(
    delivery: &Delivery,
    decider: &mut Decider,
    memory: &mut Memory,
    out: &Outlet<'_>,
    telemetry: &Telemetry,
) -> Disposition {
    let correlation = delivery.envelope.correlation_id.clone();
    let input = match &delivery.envelope.body {
        Event::Anomaly(a) => Some(Input::Anomaly {
            anomaly: a,
            correlation_id: correlation.as_deref(),
        }),
        Event::ActionResult(r) => Some(Input::Result(r)),
        Event::Approval(a) => Some(Input::Approval(a)),
        Event::ChaosInjected(c) => Some(Input::ChaosInjected {
            service: &c.service,
            run_id: &c.run_id,
        }),
        Event::ChaosReverted(c) => Some(Input::ChaosReverted {
            service: &c.service,
            run_id: &c.run_id,
        }),
        other => {
            telemetry.refused("unexpected_event", other.kind());
            None
        }
    };
    let started = std::time::Instant::now();
    let decided = input
        .map(|i| decider.decide(i, now_ms()))
        .unwrap_or_default();
    telemetry.time("decide", started.elapsed());
    let remembered = memory.save(decider, telemetry).await;
    if out.publish_all(decided).await && remembered {
        Disposition::Done
    } else {
        Disposition::Retry
    }
}

/// Loads the values learned by earlier runs.
async fn restore_values(
    values: &Store,
    decider: &mut Decider,
    telemetry: &Telemetry,
) -> Result<(), DeciderError> {
    let bucket_error = |e: String| DeciderError::Bucket {
        bucket: DECIDER_VALUES.name,
        reason: e,
    };
    let mut keys = values
        .keys()
        .await
        .map_err(|e| bucket_error(e.to_string()))?;
    let mut restored = 0;
    while let Some(key) = keys.next().await {
        let key = key.map_err(|e| bucket_error(e.to_string()))?;
        let parsed = learning::parse_value_key(&key);
        let value = values
            .get(key.as_str())
            .await
            .map_err(|e| bucket_error(e.to_string()))?;
        let number = value.and_then(|v| String::from_utf8_lossy(&v).parse::<f64>().ok());
        match (parsed, number) {
            (Some((signature, action)), Some(v)) => {
                decider.restore_value(signature, action, v);
                restored += 1;
            }
            _ => telemetry.refused("learned_value", "unreadable key or value"),
        }
    }
    tracing::info!(restored, "learned values restored");
    Ok(())
}

/// The decider's memory in its bucket, and what was last written there: only entries that
/// changed are rewritten.
struct Memory {
    store: Store,
    saved: HashMap<String, Vec<u8>>,
    /// The last save left something unwritten.
    unwritten: bool,
}

impl Memory {
    fn bucket_error(e: impl ToString) -> DeciderError {
        DeciderError::Bucket {
            bucket: DECIDER_STATE.name,
            reason: e.to_string(),
        }
    }

    /// Loads what an earlier decider left; an unreadable entry is counted and skipped.
    async fn restore(
        &mut self,
        decider: &mut Decider,
        telemetry: &Telemetry,
    ) -> Result<(), DeciderError> {
        let mut keys = self.store.keys().await.map_err(Self::bucket_error)?;
        let mut entries = BTreeMap::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(Self::bucket_error)?;
            if let Some(bytes) = self
                .store
                .get(key.as_str())
                .await
                .map_err(Self::bucket_error)?
            {
                entries.insert(key, bytes.to_vec());
            }
        }
        // the shared state first: an incident's step checks cooldowns and busy containers
        let shared = entries.remove_entry(policy::SHARED_KEY);
        for (key, bytes) in shared.into_iter().chain(entries) {
            match decider.remember(&key, &bytes) {
                Ok(()) => {
                    self.saved.insert(key, bytes);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "decider memory entry skipped");
                    telemetry.refused("decider_memory", "unreadable entry");
                }
            }
        }
        tracing::info!(
            open_incidents = decider.open_incidents().count(),
            "decider memory restored"
        );
        Ok(())
    }

    /// Writes what changed since the last save; `false` when something could not be
    /// written (it is tried again on the next save, at the latest on the next tick).
    async fn save(&mut self, decider: &Decider, telemetry: &Telemetry) -> bool {
        let complete = self.write_changes(decider, telemetry).await;
        self.unwritten = !complete;
        complete
    }

    async fn write_changes(&mut self, decider: &Decider, telemetry: &Telemetry) -> bool {
        let now = decider.memory();
        let mut complete = true;
        for (key, bytes) in &now {
            if self.saved.get(key) == Some(bytes) {
                continue;
            }
            match self.store.put(key.as_str(), bytes.clone().into()).await {
                Ok(_) => {
                    self.saved.insert(key.clone(), bytes.clone());
                }
                Err(e) => {
                    complete = false;
                    telemetry.failed("persist_memory", &e);
                }
            }
        }
        let gone: Vec<String> = self
            .saved
            .keys()
            .filter(|k| !now.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            match self.store.delete(key.as_str()).await {
                Ok(()) => {
                    self.saved.remove(&key);
                }
                Err(e) => {
                    complete = false;
                    telemetry.failed("persist_memory", &e);
                }
            }
        }
        complete
    }
}

/// Where decisions go.
struct Outlet<'a> {
    bus: &'a Bus,
    values: &'a Store,
    webhook: Option<&'a (reqwest::Client, String)>,
}

impl Outlet<'_> {
    /// Publishes decisions in order; `false` when one could not be published.
    async fn publish_all(&self, decided: Vec<Decided>) -> bool {
        let bus = self.bus;
        for Decided {
            correlation_id,
            decision,
        } in decided
        {
            let correlation = Some(correlation_id);
            let result = match decision {
                Decision::Incident(incident) => {
                    tracing::info!(service = %incident.service, incident = %incident.incident_id, state = ?incident.state, "incident");
                    bus.publish(correlation, Event::Incident(incident))
                        .await
                        .map(|_| ())
                }
                Decision::Action(action) => {
                    tracing::info!(service = %action.service, action = %action.action, instance = %action.instance, "action requested");
                    bus.telemetry().observe(Observation::Acted {
                        what: action.action.as_str(),
                        service: action.service.as_str(),
                    });
                    bus.publish(correlation, Event::ActionRequest(action))
                        .await
                        .map(|_| ())
                }
                Decision::Escalation(escalation) => {
                    tracing::warn!(service = %escalation.service, incident = %escalation.incident_id, reason = %escalation.reason, "escalated to a human");
                    self.post_webhook(&escalation);
                    bus.publish(correlation, Event::Escalation(escalation))
                        .await
                        .map(|_| ())
                }
                Decision::Value {
                    signature,
                    action,
                    value,
                } => {
                    let key = learning::value_key(signature, action);
                    if let Err(e) = self.values.put(&key, value.to_string().into()).await {
                        // a lost value only slows learning down: count it, go on
                        bus.telemetry().failed("persist_value", &e);
                    }
                    Ok(())
                }
                Decision::Audit {
                    service,
                    what,
                    why,
                    outcome,
                    action_id,
                } => {
                    if what == AuditCode::ControlRejected {
                        bus.telemetry().refused("control", &why);
                    }
                    let mut audit = Audit::new(&service, what, why, outcome);
                    audit.action_id = action_id;
                    bus.audit(correlation, audit).await.map(|_| ())
                }
            };
            if let Err(e) = result {
                bus.telemetry().failed("publish_decision", &e);
                return false;
            }
        }
        true
    }

    /// POSTs the escalation as JSON, in the background: a slow webhook never holds decisions.
    fn post_webhook(&self, escalation: &Escalation) {
        let Some((client, url)) = self.webhook else {
            return;
        };
        let request = client.post(url).json(escalation);
        let telemetry = self.bus.telemetry().clone();
        tokio::spawn(async move {
            let outcome = request.send().await.and_then(|r| r.error_for_status());
            if let Err(e) = outcome {
                telemetry.failed("escalation_webhook", &e);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_bad_key() {
        let bad = |edit: fn(&mut PolicyConfig)| {
            let mut c = Config::default();
            edit(&mut c.policy);
            c.validate().expect_err("invalid").to_string()
        };
        assert!(bad(|p| p.learning.epsilon = 0.5).contains("learning.epsilon"));
        assert!(bad(|p| p.approval_risk = 0).contains("approval_risk"));
        assert!(bad(|p| p.global_budget.burst = 0).contains("global_budget"));
        assert!(bad(|p| p.max_services_acting = 0).contains("max_services_acting"));
        assert!(
            bad(|p| p.escalation_webhook = Some("ftp://x".into())).contains("escalation_webhook")
        );
        assert!(
            bad(|p| p.playbook_file = Some("/no/such/playbook.toml".into()))
                .contains("policy.playbook_file")
        );
        Config::default().validate().expect("defaults are valid");
    }
}
