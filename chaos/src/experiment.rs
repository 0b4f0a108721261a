//! Chaos experiments from TOML files (`immune chaos run experiment.toml`), in the manner of
//! the Principles of Chaos: a steady-state hypothesis (thresholds on the service's snapshot
//! features) checked before and after, a method (faults in order, each through the chaos
//! stage and its guardrails), rollbacks (HTTP calls made at the end or on abort), and an
//! automatic abort when, during the method, a feature goes beyond its abort limit.
//!
//! The judging is pure ([`judge`]); [`run`] does the I/O: it reads the service's
//! `immune.metrics.<service>` snapshots and publishes `immune.chaos.requests`.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use immune_nats::{
    decode, subject, ChaosRequest, Event, FaultKind, MetricSnapshot, ServiceName, SnapshotScope,
};
use immune_runtime::{Bus, BusError};
use serde::{Deserialize, Serialize};

use crate::follow::Answer;

/// How long a step waits for the chaos stage to answer its request.
const ANSWER_WITHIN: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Experiment {
    pub title: String,
    /// The service the hypothesis is about and the method breaks (a step may name another).
    pub service: String,
    pub steady_state: SteadyState,
    pub method: Vec<Step>,
    pub rollbacks: Vec<Rollback>,
    /// Wait after the last step before checking the steady state again.
    pub settle_ms: u64,
}

impl Default for Experiment {
    fn default() -> Self {
        Self {
            title: String::new(),
            service: String::new(),
            steady_state: SteadyState::default(),
            method: Vec::new(),
            rollbacks: Vec::new(),
            settle_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SteadyState {
    pub probes: Vec<Probe>,
    /// How long each check watches snapshots.
    pub window_ms: u64,
    /// Snapshots a check needs to conclude anything.
    pub min_snapshots: usize,
}

impl Default for SteadyState {
    fn default() -> Self {
        Self {
            probes: Vec::new(),
            window_ms: 10_000,
            min_snapshots: 2,
        }
    }
}

/// One feature's bounds: `min`/`max` are the steady state, `abort_min`/`abort_max` the limits
/// beyond which the method is stopped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    pub feature: String,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub abort_min: Option<f64>,
    pub abort_max: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub fault: FaultKind,
    /// Another service than the experiment's.
    #[serde(default)]
    pub service: Option<String>,
    pub duration_ms: u64,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Wait after the fault's duration before the next step.
    #[serde(default)]
    pub pause_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    #[serde(default = "post")]
    pub method: String,
    pub url: String,
    #[serde(default)]
    pub body: Option<String>,
}

fn post() -> String {
    "POST".into()
}

impl Experiment {
    /// Parses and validates an experiment file's text; the error names the bad key.
    pub fn parse(text: &str) -> Result<Experiment, String> {
        let experiment: Experiment =
            immune_runtime::config::parse(text).map_err(|e| e.to_string())?;
        experiment.validate()?;
        Ok(experiment)
    }

    pub fn validate(&self) -> Result<(), String> {
        ServiceName::new(self.service.clone()).map_err(|e| format!("service: {e}"))?;
        if self.steady_state.probes.is_empty() {
            return Err("steady_state.probes: state at least one threshold".into());
        }
        for (i, p) in self.steady_state.probes.iter().enumerate() {
            if p.min.is_none() && p.max.is_none() {
                return Err(format!("steady_state.probes[{i}]: give min or max"));
            }
        }
        if self.method.is_empty() {
            return Err("method: name at least one fault".into());
        }
        for (i, step) in self.method.iter().enumerate() {
            if step.duration_ms == 0 {
                return Err(format!("method[{i}].duration_ms: must be at least 1"));
            }
            if let Some(s) = &step.service {
                ServiceName::new(s.clone()).map_err(|e| format!("method[{i}].service: {e}"))?;
            }
        }
        for (i, r) in self.rollbacks.iter().enumerate() {
            if !matches!(r.method.as_str(), "GET" | "POST" | "PUT" | "DELETE") {
                return Err(format!("rollbacks[{i}].method: GET, POST, PUT or DELETE"));
            }
        }
        Ok(())
    }
}

/// How one snapshot stands against the probes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Judgement {
    /// Probes outside the steady state (a missing feature counts: it cannot be confirmed).
    pub breached: Vec<String>,
    /// Probes beyond their abort limits.
    pub beyond_limit: Vec<String>,
}

/// Judges a snapshot's features against the probes. Pure.
pub fn judge(probes: &[Probe], features: &BTreeMap<String, f64>) -> Judgement {
    let mut judgement = Judgement::default();
    for p in probes {
        let Some(&value) = features.get(&p.feature) else {
            judgement
                .breached
                .push(format!("{} not measured", p.feature));
            continue;
        };
        let f = &p.feature;
        if let Some(min) = p.min.filter(|m| value < *m) {
            judgement.breached.push(format!("{f} {value:.3} < {min}"));
        }
        if let Some(max) = p.max.filter(|m| value > *m) {
            judgement.breached.push(format!("{f} {value:.3} > {max}"));
        }
        if let Some(limit) = p.abort_min.filter(|m| value < *m) {
            judgement
                .beyond_limit
                .push(format!("{f} {value:.3} < abort limit {limit}"));
        }
        if let Some(limit) = p.abort_max.filter(|m| value > *m) {
            judgement
                .beyond_limit
                .push(format!("{f} {value:.3} > abort limit {limit}"));
        }
    }
    judgement
}

/// How an experiment ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The steady state held before and after the method.
    Held,
    /// The steady state was not there to begin with: nothing was injected.
    NotSteadyBefore(String),
    /// A step was refused or a limit was crossed: the rest of the method was skipped.
    Aborted { step: usize, reason: String },
    /// The method ran, and the service did not come back to its steady state.
    Deviated(String),
}

/// Snapshots of one service as they arrive.
struct Snapshots {
    subscriber: async_nats::Subscriber,
}

impl Snapshots {
    async fn next(&mut self) -> Option<MetricSnapshot> {
        loop {
            let message = self.subscriber.next().await?;
            if let Ok(envelope) = decode(&message.payload) {
                if let Event::MetricSnapshot(s) = envelope.body {
                    if s.scope != SnapshotScope::Service {
                        return Some(s);
                    }
                }
            }
        }
    }

    /// Watches `window`: `Ok` when at least `min` snapshots came and all were steady.
    async fn check(&mut self, steady: &SteadyState) -> Result<usize, String> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(steady.window_ms);
        let mut seen = 0;
        loop {
            let next = tokio::time::timeout_at(deadline, self.next()).await;
            let Ok(Some(snapshot)) = next else { break };
            seen += 1;
            let judgement = judge(&steady.probes, &snapshot.features);
            if !judgement.breached.is_empty() {
                return Err(format!(
                    "{}: {}",
                    snapshot.instance,
                    judgement.breached.join(", ")
                ));
            }
        }
        if seen < steady.min_snapshots.max(1) {
            return Err(format!(
                "{seen} snapshots in {} ms, {} needed (is the collector running?)",
                steady.window_ms, steady.min_snapshots
            ));
        }
        Ok(seen)
    }
}

/// Runs an experiment through the chaos stage; `say` gets a line per thing that happens.
pub async fn run(
    bus: &Bus,
    experiment: &Experiment,
    run_id: &str,
    mut say: impl FnMut(&str),
) -> Result<Verdict, BusError> {
    let service =
        ServiceName::new(experiment.service.clone()).map_err(|e| BusError::Provision {
            what: "experiment".into(),
            reason: e.to_string(),
        })?;
    let subscribe = |subject: String| async move {
        bus.client()
            .subscribe(subject)
            .await
            .map_err(|e| BusError::Provision {
                what: "subscription".into(),
                reason: e.to_string(),
            })
    };
    let mut snapshots = Snapshots {
        subscriber: subscribe(subject::metrics_of(&service)).await?,
    };
    let mut answers = crate::follow::Answers::subscribe(bus.client())
        .await
        .map_err(|e| BusError::Provision {
            what: "subscription".into(),
            reason: e.to_string(),
        })?;
    let steady = &experiment.steady_state;

    say(&format!(
        "{}: checking the steady state of {service}",
        experiment.title
    ));
    if let Err(why) = snapshots.check(steady).await {
        say(&format!("not steady before the method: {why}"));
        return Ok(Verdict::NotSteadyBefore(why));
    }
    let mut verdict = None;
    'method: for (i, step) in experiment.method.iter().enumerate() {
        let target = match &step.service {
            Some(s) => ServiceName::new(s.clone()).unwrap_or_else(|_| service.clone()),
            None => service.clone(),
        };
        let request = ChaosRequest {
            run_id: Some(run_id.to_string()),
            service: target.clone(),
            fault: step.fault,
            duration_ms: step.duration_ms,
            params: step.params.clone(),
        };
        bus.publish(Some(run_id.to_string()), Event::ChaosRequest(request))
            .await?;
        match answers.of(run_id, ANSWER_WITHIN).await {
            Answer::Injected(_) => say(&format!(
                "step {}: {} injected into {target} for {} ms",
                i + 1,
                step.fault,
                step.duration_ms
            )),
            Answer::Rejected(e) => {
                verdict = Some(Verdict::Aborted {
                    step: i + 1,
                    reason: format!("refused by chaos: {}", e.reason),
                });
                break 'method;
            }
            Answer::Silent => {
                verdict = Some(Verdict::Aborted {
                    step: i + 1,
                    reason: format!(
                        "no answer from the chaos stage within {} s",
                        ANSWER_WITHIN.as_secs()
                    ),
                });
                break 'method;
            }
        }
        let until =
            tokio::time::Instant::now() + Duration::from_millis(step.duration_ms + step.pause_ms);
        loop {
            let next = tokio::time::timeout_at(until, snapshots.next()).await;
            let Ok(Some(snapshot)) = next else { break };
            let judgement = judge(&steady.probes, &snapshot.features);
            if !judgement.beyond_limit.is_empty() {
                verdict = Some(Verdict::Aborted {
                    step: i + 1,
                    reason: format!(
                        "{}: {}",
                        snapshot.instance,
                        judgement.beyond_limit.join(", ")
                    ),
                });
                break 'method;
            }
        }
    }
    if let Some(Verdict::Aborted { step, reason }) = &verdict {
        say(&format!("aborted at step {step}: {reason}"));
    }
    for rollback in &experiment.rollbacks {
        say(&format!(
            "rollback {} {}: {}",
            rollback.method,
            rollback.url,
            call(rollback).await
        ));
    }
    if let Some(verdict) = verdict {
        return Ok(verdict);
    }
    tokio::time::sleep(Duration::from_millis(experiment.settle_ms)).await;
    say("checking the steady state again");
    Ok(match snapshots.check(steady).await {
        Ok(n) => {
            say(&format!("steady state held ({n} snapshots)"));
            Verdict::Held
        }
        Err(why) => {
            say(&format!("steady state not back: {why}"));
            Verdict::Deviated(why)
        }
    })
}

async fn call(rollback: &Rollback) -> String {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default();
    let method =
        reqwest::Method::from_bytes(rollback.method.as_bytes()).unwrap_or(reqwest::Method::POST);
    let mut request = client.request(method, &rollback.url);
    if let Some(body) = &rollback.body {
        request = request
            .header("content-type", "application/json")
            .body(body.clone());
    }
    match request.send().await {
        Ok(r) => format!("status {}", r.status().as_u16()),
        Err(e) => format!("failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn probes() -> Vec<Probe> {
        vec![
            Probe {
                feature: "error_ratio".into(),
                max: Some(0.05),
                abort_max: Some(0.5),
                ..Probe::default()
            },
            Probe {
                feature: "health_ok".into(),
                min: Some(1.0),
                ..Probe::default()
            },
        ]
    }

    #[test]
    fn within_the_thresholds_is_steady() {
        let j = judge(
            &probes(),
            &features(&[("error_ratio", 0.01), ("health_ok", 1.0)]),
        );
        assert_eq!(j, Judgement::default());
    }

    #[test]
    fn a_breach_is_not_an_abort_until_the_limit() {
        let j = judge(
            &probes(),
            &features(&[("error_ratio", 0.2), ("health_ok", 1.0)]),
        );
        assert_eq!(j.breached, ["error_ratio 0.200 > 0.05"]);
        assert!(j.beyond_limit.is_empty());
        let j = judge(
            &probes(),
            &features(&[("error_ratio", 0.9), ("health_ok", 0.0)]),
        );
        assert_eq!(j.breached.len(), 2);
        assert_eq!(j.beyond_limit, ["error_ratio 0.900 > abort limit 0.5"]);
    }

    #[test]
    fn a_missing_feature_cannot_confirm_the_steady_state() {
        let j = judge(&probes(), &features(&[("health_ok", 1.0)]));
        assert_eq!(j.breached, ["error_ratio not measured"]);
        assert!(j.beyond_limit.is_empty());
    }

    #[test]
    fn the_shipped_example_parses() {
        let text = include_str!("../experiments/orders-latency.toml");
        let experiment = Experiment::parse(text).expect("the example is valid");
        assert_eq!(experiment.service, "orders");
        assert!(!experiment.method.is_empty());
        assert!(!experiment.rollbacks.is_empty());
    }

    #[test]
    fn bad_experiments_name_the_key() {
        let bad = |text: &str| Experiment::parse(text).expect_err("invalid");
        assert!(
            bad("service = \"orders\"\n[[method]]\nfault = \"kill\"\nduration_ms = 1\n")
                .starts_with("steady_state.probes")
        );
        assert!(
            bad("service = \"orders\"\n[[steady_state.probes]]\nfeature = \"x\"\nmax = 1.0\n")
                .starts_with("method")
        );
        assert!(bad("service = \"orders\"\nsurprise = 1\n").contains("surprise"));
        assert!(bad(
            "service = \"orders\"\n[[steady_state.probes]]\nfeature = \"x\"\nmax = 1.0\n[[method]]\nfault = \"meteor\"\nduration_ms = 1\n"
        )
        .contains("meteor"));
    }
}
