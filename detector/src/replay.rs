//! Re-scores a stored range of the metrics stream with another configuration, without
//! touching live targets or publishing anything: for example a new threshold over yesterday's
//! metrics, to see which anomalies it would have raised.

use std::collections::BTreeMap;

use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use futures::StreamExt;
use immune_nats::streams::METRICS;
use immune_nats::{decode, subject, AnomalyState, Event, ServiceName};
use immune_runtime::Bus;

use crate::learned::LearnedDetector;
use crate::rules::{Finding, RuleEngine};
use crate::Config;

/// Which part of the stream to replay.
#[derive(Debug, Clone, Default)]
pub struct Range {
    /// First stream sequence (default: the oldest kept).
    pub from_seq: Option<u64>,
    /// Last stream sequence (default: the newest when the replay starts).
    pub to_seq: Option<u64>,
    /// Only this service's snapshots.
    pub service: Option<ServiceName>,
}

#[derive(Debug, Default)]
pub struct ReplayReport {
    pub snapshots: u64,
    pub undecodable: u64,
    pub findings: Vec<Finding>,
    /// Models fitted during the replay, by service.
    pub fits: BTreeMap<String, u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read stream {stream}: {reason}")]
    Stream {
        stream: &'static str,
        reason: String,
    },
}

fn stream_error(e: impl std::fmt::Display) -> ReplayError {
    ReplayError::Stream {
        stream: METRICS.name,
        reason: e.to_string(),
    }
}

/// Replays `range` through fresh detectors built from `config` (no stored models are read
/// or written: the replay starts from a warm-up, as a new configuration would).
pub async fn run(bus: &Bus, config: &Config, range: &Range) -> Result<ReplayReport, ReplayError> {
    let mut stream = bus
        .jetstream()
        .get_stream(METRICS.name)
        .await
        .map_err(stream_error)?;
    let last = stream
        .info()
        .await
        .map_err(stream_error)?
        .state
        .last_sequence;
    let to = range.to_seq.unwrap_or(last).min(last);
    let mut report = ReplayReport::default();
    if to == 0 || range.from_seq.is_some_and(|f| f > to) {
        return Ok(report);
    }
    let filter = match &range.service {
        Some(s) => subject::metrics_of(s),
        None => subject::METRICS_ALL.to_string(),
    };
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject: filter,
            deliver_policy: match range.from_seq {
                Some(start_sequence) => DeliverPolicy::ByStartSequence { start_sequence },
                None => DeliverPolicy::All,
            },
            ..Default::default()
        })
        .await
        .map_err(stream_error)?;
    let mut messages = consumer.messages().await.map_err(stream_error)?;
    let mut rules = RuleEngine::new(config.rules.clone());
    let mut learned = LearnedDetector::new(config.learned.clone());
    loop {
        let next = tokio::time::timeout(std::time::Duration::from_secs(2), messages.next()).await;
        let Ok(Some(message)) = next else {
            break; // nothing more within the range (filtered subjects may end early)
        };
        let message = message.map_err(stream_error)?;
        let seq = message.info().map_err(stream_error)?.stream_sequence;
        if seq > to {
            break;
        }
        match decode(&message.payload) {
            Ok(envelope) => {
                if let Event::MetricSnapshot(s) = envelope.body {
                    report.snapshots += 1;
                    report.findings.extend(rules.on_snapshot(&s));
                    let outcome = learned.on_snapshot(&s, crate::learned::Context::default());
                    if outcome.fitted.is_some() {
                        *report.fits.entry(s.service.to_string()).or_default() += 1;
                    }
                    report.findings.extend(outcome.finding);
                }
            }
            Err(_) => report.undecodable += 1,
        }
        if seq == to {
            break;
        }
    }
    Ok(report)
}

/// One line per finding, for the terminal.
pub fn describe(finding: &Finding) -> String {
    let a = &finding.anomaly;
    format!(
        "{} {} {}/{} {} score {:.2} threshold {:.2}: {}",
        a.started_ms,
        match a.state {
            AnomalyState::Firing => "firing",
            AnomalyState::Cleared => "cleared",
        },
        a.service,
        a.instance,
        a.signature,
        a.score,
        a.threshold,
        a.reason
    )
}
