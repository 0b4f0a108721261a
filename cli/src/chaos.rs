//! `immune chaos ...`: the chaos crate's client code behind the operator's command line.
//!
//! - `inject`: publishes a chaos request ([`immune_chaos::follow::request`]), waits for the
//!   chaos stage's answer ([`immune_chaos::follow::Answers`]) and, with `--follow`, follows
//!   the run's audit trail until its incident is recovered or escalated
//!   ([`immune_chaos::follow::Follower`]).
//! - `run`: an experiment file through [`immune_chaos::experiment::run`].
//! - `attack`: the attack catalogue at a URL through [`immune_chaos::attack`].

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use immune_chaos::attack::{self, AttackReport};
use immune_chaos::experiment::{self, Experiment, Verdict};
use immune_chaos::follow::{self, Answer, Answers, Follower, RunEnd};
use immune_nats::{ChaosInjected, ChaosRequest, FaultKind, ServiceName};
use immune_runtime::Bus;

use crate::CliError;

/// A fault to ask for.
#[derive(Debug, Clone)]
pub struct Inject {
    pub service: ServiceName,
    pub fault: FaultKind,
    pub duration: Duration,
    pub params: BTreeMap<String, String>,
    /// How long to wait for the chaos stage to answer.
    pub answer_within: Duration,
    /// Follow the run's audit trail this long (`None`: do not follow).
    pub follow: Option<Duration>,
}

/// What became of an injection.
#[derive(Debug, Clone, PartialEq)]
pub struct Injected {
    pub run_id: String,
    pub injected: ChaosInjected,
    /// How the followed run ended, when followed.
    pub end: Option<RunEnd>,
}

fn subscribe_error(e: impl std::fmt::Display) -> CliError {
    CliError::Unreachable {
        url: "(connected)".into(),
        reason: format!("cannot subscribe: {e}"),
    }
}

/// Asks for the fault and reports the chaos stage's answer; a refusal is an error.
pub async fn inject(
    bus: &Bus,
    inject: &Inject,
    mut progress: impl FnMut(&str),
) -> Result<Injected, CliError> {
    // Both subscriptions first: nothing of the run may be missed.
    let mut answers = Answers::subscribe(bus.client())
        .await
        .map_err(subscribe_error)?;
    let mut follower = match inject.follow {
        Some(_) => Some(
            Follower::subscribe(bus.client())
                .await
                .map_err(subscribe_error)?,
        ),
        None => None,
    };
    let request = ChaosRequest {
        run_id: None,
        service: inject.service.clone(),
        fault: inject.fault,
        duration_ms: inject.duration.as_millis() as u64,
        params: inject.params.clone(),
    };
    let started = immune_nats::envelope::now_ms();
    let run_id = follow::request(bus, request).await?;
    progress(&format!(
        "chaos run {run_id}: {} on {} requested for {}",
        inject.fault,
        inject.service,
        crate::span(inject.duration.as_millis() as u64)
    ));
    let injected = match answers.of(&run_id, inject.answer_within).await {
        Answer::Injected(injected) => injected,
        Answer::Rejected(rejected) => {
            return Err(CliError::Failed(format!(
                "chaos run {run_id}: refused: {}",
                rejected.reason
            )))
        }
        Answer::Silent => {
            return Err(CliError::TimedOut(format!(
                "chaos run {run_id}: no answer from the chaos stage within {} (is it running?)",
                crate::span(inject.answer_within.as_millis() as u64)
            )))
        }
    };
    let (Some(limit), Some(follower)) = (inject.follow, follower.as_mut()) else {
        return Ok(Injected {
            run_id,
            injected,
            end: None,
        });
    };
    progress(&format!(
        "injected into {}; following the run for up to {}",
        injected.instance,
        crate::span(limit.as_millis() as u64)
    ));
    let end = follower
        .until_end(&run_id, limit, |envelope, record| {
            let at = envelope.timestamp_ms.saturating_sub(started) as f64 / 1000.0;
            progress(&format!(
                "[+{at:6.2}s] {:<9} {:<22} {} — {}",
                record.stage.as_str(),
                record.what,
                record.outcome,
                record.why
            ));
        })
        .await;
    Ok(Injected {
        run_id,
        injected,
        end: Some(end),
    })
}

/// Reads and validates an experiment file; a bad one is a usage error naming the key.
pub fn read_experiment(path: &Path) -> Result<Experiment, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
    Experiment::parse(&text).map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))
}

/// Runs an experiment; `progress` gets a line per step.
pub async fn run_experiment(
    bus: &Bus,
    experiment: &Experiment,
    run_id: &str,
    mut progress: impl FnMut(&str),
) -> Result<Verdict, CliError> {
    let started = immune_nats::envelope::now_ms();
    let verdict = experiment::run(bus, experiment, run_id, |line| {
        let at = immune_nats::envelope::now_ms().saturating_sub(started) as f64 / 1000.0;
        progress(&format!("[+{at:6.2}s] {line}"));
    })
    .await?;
    Ok(verdict)
}

/// Sends the attack catalogue `rounds` times at `url`; `each` gets every payload's verdict.
pub async fn attack(
    url: &str,
    rounds: u32,
    mut each: impl FnMut(&attack::Payload, attack::Verdict),
) -> Result<AttackReport, CliError> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| CliError::Failed(format!("HTTP client: {e}")))?;
    let mut report = AttackReport::default();
    for _ in 0..rounds {
        for payload in attack::catalogue() {
            let verdict = attack::send(&client, url, &payload).await;
            each(&payload, verdict);
            report.record(&payload, verdict);
        }
    }
    Ok(report)
}
