//! What a restarted decider must know to carry on where the last one stopped: every open
//! incident (its phase, the action in flight, what was tried), cooldowns, containers with an
//! action in flight, rate budgets, chaos runs in force, stopgaps waiting to be lifted and
//! the anomalies that have cleared.
//!
//! Pure: [`Decider::memory`] gives one MessagePack entry per key, [`Decider::remember`] takes
//! them back. `open.<service>` holds one open incident, [`SHARED_KEY`] the rest; the stage
//! stores the entries in a key-value bucket, rewriting only those that changed.

use immune_nats::AuditCode;
use std::collections::BTreeMap;

use immune_nats::{ActionKind, ServiceName};
use serde::{Deserialize, Serialize};

use super::incident::{emit_audit, note, Open, Phase};
use super::mitigation::Lift;
use super::{Decided, Decider, Decision};
use crate::safety::TokenBucket;

/// The key of the state shared by all incidents.
pub const SHARED_KEY: &str = "shared";
/// The prefix of an open incident's key; the service name follows.
pub const OPEN_PREFIX: &str = "open.";

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct Shared {
    cooldown_until: Vec<(ServiceName, ActionKind, u64)>,
    busy: Vec<(String, String)>,
    chaos_runs: Vec<(ServiceName, String)>,
    depends_on: Vec<(ServiceName, Vec<ServiceName>)>,
    lifts: Vec<Lift>,
    /// Tokens left and when they were counted.
    global_budget: Option<(f64, u64)>,
    service_budgets: Vec<(ServiceName, f64, u64)>,
    /// Cleared anomalies and when they cleared.
    settled: Vec<(String, u64)>,
}

#[derive(Debug, thiserror::Error)]
#[error("decider memory {key}: {reason}")]
pub struct MemoryError {
    pub key: String,
    pub reason: String,
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

impl Decider {
    /// The durable state, one encoded entry per key, in a stable order: an unchanged part
    /// encodes to the same bytes, so the caller rewrites only what changed.
    pub fn memory(&self) -> BTreeMap<String, Vec<u8>> {
        let mut entries = BTreeMap::new();
        for (service, open) in &self.open {
            if let Ok(bytes) = rmp_serde::to_vec_named(open) {
                entries.insert(format!("{OPEN_PREFIX}{service}"), bytes);
            }
        }
        let shared = Shared {
            cooldown_until: sorted(
                self.cooldown_until
                    .iter()
                    .map(|((s, a), until)| (s.clone(), *a, *until))
                    .collect(),
            ),
            busy: sorted(
                self.busy
                    .iter()
                    .map(|(c, a)| (c.clone(), a.clone()))
                    .collect(),
            ),
            chaos_runs: sorted(
                self.chaos_runs
                    .iter()
                    .map(|(s, r)| (s.clone(), r.clone()))
                    .collect(),
            ),
            depends_on: sorted(
                self.depends_on
                    .iter()
                    .map(|(s, d)| (s.clone(), d.clone()))
                    .collect(),
            ),
            lifts: self.lifts.clone(),
            global_budget: Some(self.global_budget.level()),
            service_budgets: {
                let mut v: Vec<_> = self
                    .service_budgets
                    .iter()
                    .map(|(s, b)| {
                        let (tokens, at) = b.level();
                        (s.clone(), tokens, at)
                    })
                    .collect();
                v.sort_by(|a, b| a.0.cmp(&b.0));
                v
            },
            settled: sorted(
                self.settled
                    .iter()
                    .map(|(id, at)| (id.clone(), *at))
                    .collect(),
            ),
        };
        if let Ok(bytes) = rmp_serde::to_vec_named(&shared) {
            entries.insert(SHARED_KEY.to_string(), bytes);
        }
        entries
    }

    /// Takes back one entry of [`Decider::memory`]; an unknown key or unreadable entry is
    /// refused with the reason and changes nothing.
    pub fn remember(&mut self, key: &str, bytes: &[u8]) -> Result<(), MemoryError> {
        let refuse = |reason: String| MemoryError {
            key: key.to_string(),
            reason,
        };
        if key == SHARED_KEY {
            let shared: Shared = rmp_serde::from_slice(bytes).map_err(|e| refuse(e.to_string()))?;
            self.cooldown_until = shared
                .cooldown_until
                .into_iter()
                .map(|(s, a, until)| ((s, a), until))
                .collect();
            self.busy = shared.busy.into_iter().collect();
            self.chaos_runs = shared.chaos_runs.into_iter().collect();
            self.depends_on = shared.depends_on.into_iter().collect();
            self.lifts = shared.lifts;
            self.settled = shared.settled.into_iter().collect();
            if let Some((tokens, at)) = shared.global_budget {
                self.global_budget.set_level(tokens, at);
            }
            let budget = self.config.service_budget;
            for (service, tokens, at) in shared.service_budgets {
                self.service_budgets
                    .entry(service)
                    .or_insert_with(|| TokenBucket::new(budget, at))
                    .set_level(tokens, at);
            }
            return Ok(());
        }
        let Some(service) = key.strip_prefix(OPEN_PREFIX) else {
            return Err(refuse("not a key the decider writes".into()));
        };
        let open: Open = rmp_serde::from_slice(bytes).map_err(|e| refuse(e.to_string()))?;
        if open.incident.service.as_str() != service {
            return Err(refuse(format!(
                "holds an incident of {}, not of {service}",
                open.incident.service
            )));
        }
        self.open.insert(open.incident.service.clone(), open);
        Ok(())
    }

    /// After [`Decider::remember`]: every action that was in flight is requested again with
    /// the same action id (the executor answers a request it has already carried out with
    /// the stored result, so nothing is done twice, and a request lost with the old decider
    /// is carried out now), and each resumed incident is audited.
    pub fn resume(&mut self, now_ms: u64) -> Vec<Decided> {
        let mut out = Vec::new();
        for open in self.open.values_mut() {
            note(open, now_ms, "resumed by a restarted decider".to_string());
            let phase = match &open.phase {
                Phase::Pending { .. } => "waiting to act",
                Phase::Held { .. } => "waiting for an approval",
                Phase::InFlight { .. } => "action in flight",
                Phase::Verifying { .. } => "verifying",
            };
            emit_audit(
                open,
                &mut out,
                AuditCode::IncidentResumed,
                "the decider restarted with this incident open".to_string(),
                format!("incident {} resumed: {phase}", open.incident.incident_id),
            );
            if let Phase::InFlight { request, .. } = &open.phase {
                out.push(Decided {
                    correlation_id: open.correlation_id.clone(),
                    decision: Decision::Action(request.clone()),
                });
            }
        }
        out
    }
}
