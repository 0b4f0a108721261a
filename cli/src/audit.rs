//! `immune audit tail`: the audit trail of every stage (what was done, why, how it ended, and
//! the correlation id tying an incident or a chaos run together), read from the audit stream
//! with an ephemeral ordered consumer. The stage and service filters become the consumer's
//! subject filter (`immune.audit.<stage>.<service>`), so the server sends only what matches.

use std::time::{Duration, SystemTime};

use immune_nats::streams::AUDIT;
use immune_nats::{subject, Envelope, Event, ServiceName, Stage};
use immune_runtime::Bus;
use serde::Serialize;

use crate::stored::{Reader, Start};
use crate::{rfc3339, CliError};

/// Which records to show.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub service: Option<ServiceName>,
    pub stage: Option<Stage>,
}

impl Filter {
    /// The subject filter of the consumer.
    pub fn subject(&self) -> String {
        subject::audit_filter(self.stage, self.service.as_ref())
    }

    /// Whether a record matches (the server already filters; this checks the body too).
    pub fn accepts(&self, line: &Line) -> bool {
        self.service
            .as_ref()
            .is_none_or(|s| s.as_str() == line.service)
            && self.stage.is_none_or(|s| s.as_str() == line.stage)
    }
}

/// A stage name as written on the command line.
pub fn parse_stage(text: &str) -> Result<Stage, String> {
    const ALL: [Stage; 6] = [
        Stage::Collector,
        Stage::Detector,
        Stage::Decider,
        Stage::Executor,
        Stage::Chaos,
        Stage::Client,
    ];
    ALL.into_iter().find(|s| s.as_str() == text).ok_or_else(|| {
        format!("unknown stage {text:?}: collector, detector, decider, executor, chaos or client")
    })
}

/// One audit record as the CLI prints it (and as `--json` writes it, one object per line).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Line {
    pub time: String,
    pub timestamp_ms: u64,
    pub stage: String,
    pub service: String,
    pub what: String,
    pub outcome: String,
    pub why: String,
    pub correlation_id: Option<String>,
    pub event_id: String,
    /// The event the record is about.
    pub about: Option<String>,
    /// The instance of the stage that wrote it.
    pub instance: String,
    /// The action the record is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action_id: Option<String>,
}

/// The line of an audit envelope; `None` for any other event.
pub fn line(envelope: &Envelope) -> Option<Line> {
    let Event::Audit(record) = &envelope.body else {
        return None;
    };
    Some(Line {
        time: rfc3339(envelope.timestamp_ms),
        timestamp_ms: envelope.timestamp_ms,
        stage: record.stage.to_string(),
        service: record.service.to_string(),
        what: record.what.clone(),
        outcome: record.outcome.clone(),
        why: record.why.clone(),
        correlation_id: envelope.correlation_id.clone(),
        event_id: envelope.event_id.to_string(),
        about: record.about.as_ref().map(|id| id.to_string()),
        instance: envelope.producer.instance.clone(),
        action_id: record.action_id.clone(),
    })
}

/// The human form: time, stage, service, what, outcome, why, correlation id.
pub fn human(line: &Line) -> String {
    format!(
        "{} {:<9} {:<12} {:<22} {} — {} [{}]",
        line.time,
        line.stage,
        line.service,
        line.what,
        line.outcome,
        line.why,
        line.correlation_id.as_deref().unwrap_or("-")
    )
}

/// The JSON form: one object, one line.
pub fn json(line: &Line) -> String {
    serde_json::to_string(line).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// How a tail went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tailed {
    pub shown: u64,
    pub undecodable: u64,
}

/// Shows the stored records from `since` (all when `None`) that match `filter`; with `follow`
/// keeps showing new ones until the caller stops it, else returns once caught up (reading
/// what is stored is bounded by `limit`).
pub async fn tail(
    bus: &Bus,
    filter: &Filter,
    since: Option<SystemTime>,
    follow: bool,
    limit: Duration,
    mut show: impl FnMut(&Line),
) -> Result<Tailed, CliError> {
    let start = since.map(Start::Since).unwrap_or(Start::All);
    let mut reader = Reader::open(bus, AUDIT, &filter.subject(), start).await?;
    let mut tailed = Tailed::default();
    let mut take = |stored: crate::stored::Stored, tailed: &mut Tailed| match stored.envelope {
        Ok(envelope) => {
            if let Some(line) = line(&envelope).filter(|l| filter.accepts(l)) {
                show(&line);
                tailed.shown += 1;
            }
        }
        Err(_) => tailed.undecodable += 1,
    };
    if !follow {
        for stored in reader.drain(limit).await? {
            take(stored, &mut tailed);
        }
        return Ok(tailed);
    }
    loop {
        let stored = reader.next().await?;
        take(stored, &mut tailed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use immune_nats::samples;

    #[test]
    fn a_record_reads_as_one_line() {
        let envelope = samples::envelope(Stage::Decider, Event::Audit(samples::audit_record()));
        let line = line(&envelope).expect("an audit record");
        let text = human(&line);
        assert!(text.starts_with("2026-01-01T00:00:00.000Z "), "{text}");
        assert!(
            text.contains(&line.what) && text.contains("[run-42]"),
            "{text}"
        );
        let value: serde_json::Value = serde_json::from_str(&json(&line)).expect("JSON");
        assert_eq!(value["correlation_id"], "run-42");
        assert_eq!(value["service"], line.service.as_str());
        assert!(!json(&line).contains('\n'));
    }

    #[test]
    fn filters_check_service_and_stage() {
        let envelope = samples::envelope(Stage::Decider, Event::Audit(samples::audit_record()));
        let line = line(&envelope).expect("an audit record");
        let stage = parse_stage(&line.stage).expect("a stage");
        let service = ServiceName::new(line.service.clone()).expect("valid");
        let other = ServiceName::new("other").expect("valid");
        assert!(Filter::default().accepts(&line));
        assert!(Filter {
            service: Some(service.clone()),
            stage: Some(stage)
        }
        .accepts(&line));
        assert!(!Filter {
            service: Some(other),
            stage: None
        }
        .accepts(&line));
        assert!(parse_stage("janitor").is_err());
    }
}
