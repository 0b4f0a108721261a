//! `immune approve <action-id> [--reject]`: answers an action the decider holds for approval.
//!
//! The decider holds a step whose risk is above its `approval_risk` and says so in an
//! `action.held` audit record naming the action id. This finds that record (for the service
//! and the correlation id), publishes an [`Approval`] on `immune.approvals.<service>`, and
//! waits, bounded, for the decider's `approval.granted` or `approval.denied` record.

use std::time::{Duration, SystemTime};

use futures::StreamExt;
use immune_nats::streams::{AUDIT, PIPELINE};
use immune_nats::{
    decode, subject, Approval, AuditCode, AuditRecord, Event, IncidentState, ServiceName, Stage,
};
use immune_runtime::Bus;

use crate::audit::{line, Line};
use crate::stored::{Reader, Start};
use crate::CliError;

/// What the operator answers.
#[derive(Debug, Clone)]
pub struct Answer {
    pub action_id: String,
    pub approved: bool,
    pub by: String,
    /// The service, when the audit trail cannot be searched for the held action.
    pub service: Option<ServiceName>,
    /// The incident id, when known better than the decider's records say.
    pub incident_id: Option<String>,
    /// How far back to look for the `action.held` record.
    pub search: Duration,
    /// How long to wait for the decider to acknowledge.
    pub wait: Duration,
}

/// The `action.held` record of an action.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub service: ServiceName,
    pub correlation_id: Option<String>,
    pub why: String,
}

/// What the decider said.
#[derive(Debug, Clone, PartialEq)]
pub enum Acknowledged {
    Granted(Line),
    Denied(Line),
}

/// The newest `action.held` record naming `action_id`, within `search` back from now.
pub async fn find_held(
    bus: &Bus,
    action_id: &str,
    service: Option<&ServiceName>,
    search: Duration,
    limit: Duration,
) -> Result<Option<Held>, CliError> {
    let since = SystemTime::now()
        .checked_sub(search)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let filter = subject::audit_filter(Some(Stage::Decider), service);
    let mut reader = Reader::open(bus, AUDIT, &filter, Start::Since(since)).await?;
    let mut held = None;
    for stored in reader.drain(limit).await? {
        let Ok(envelope) = stored.envelope else {
            continue;
        };
        if let Event::Audit(record) = &envelope.body {
            if record.code() == Some(AuditCode::ActionHeld) && names(record, action_id) {
                held = Some(Held {
                    service: record.service.clone(),
                    correlation_id: envelope.correlation_id.clone(),
                    why: record.why.clone(),
                });
            }
        }
    }
    Ok(held)
}

/// Whether `record` is about `action_id`: by its field; a record written before the field
/// existed names the action only in its outcome text.
fn names(record: &AuditRecord, action_id: &str) -> bool {
    match &record.action_id {
        Some(id) => id == action_id,
        None => record.outcome.contains(action_id),
    }
}

/// The id of `service`'s incident when its last one is still open.
pub async fn open_incident(
    bus: &Bus,
    service: &ServiceName,
    limit: Duration,
) -> Result<Option<String>, CliError> {
    let mut reader = Reader::open(
        bus,
        PIPELINE,
        &subject::incidents_of(service),
        Start::LastPerSubject,
    )
    .await?;
    let mut found = None;
    for stored in reader.drain(limit).await? {
        if let Ok(envelope) = stored.envelope {
            if let Event::Incident(i) = envelope.body {
                let open = matches!(
                    i.state,
                    IncidentState::Opened | IncidentState::Acting | IncidentState::Verifying
                );
                found = open.then_some(i.incident_id);
            }
        }
    }
    Ok(found)
}

/// Publishes the answer and waits for the decider's acknowledgement. `progress` gets a line
/// per step.
pub async fn answer(
    bus: &Bus,
    answer: &Answer,
    limit: Duration,
    mut progress: impl FnMut(&str),
) -> Result<Acknowledged, CliError> {
    let held = find_held(
        bus,
        &answer.action_id,
        answer.service.as_ref(),
        answer.search,
        limit,
    )
    .await?;
    if let Some(h) = &held {
        progress(&format!(
            "found the held action {} on {}: {}",
            answer.action_id, h.service, h.why
        ));
    }
    let service = match (&answer.service, &held) {
        (Some(s), _) => s.clone(),
        (None, Some(h)) => h.service.clone(),
        (None, None) => {
            return Err(CliError::Failed(format!(
                "no held action {} in the audit trail of the last {}: check the id (audit tail --stage decider), or give --service to send the answer anyway",
                answer.action_id,
                crate::span(answer.search.as_millis() as u64)
            )))
        }
    };
    let correlation_id = held.as_ref().and_then(|h| h.correlation_id.clone());
    let incident_id = match &answer.incident_id {
        Some(id) => id.clone(),
        None => open_incident(bus, &service, limit)
            .await?
            .or_else(|| correlation_id.clone())
            .unwrap_or_default(),
    };
    // Subscribe before publishing, so the acknowledgement cannot be missed.
    let mut acks = bus
        .client()
        .subscribe(subject::audit_filter(Some(Stage::Decider), Some(&service)))
        .await
        .map_err(|e| CliError::Unreachable {
            url: "(connected)".into(),
            reason: format!("cannot subscribe to the audit trail: {e}"),
        })?;
    let approval = Approval {
        service: service.clone(),
        incident_id,
        action_id: answer.action_id.clone(),
        approved: answer.approved,
        by: answer.by.clone(),
    };
    bus.publish(correlation_id.clone(), Event::Approval(approval))
        .await?;
    progress(&format!(
        "{} of {} by {} published; waiting up to {} for the decider",
        if answer.approved {
            "approval"
        } else {
            "rejection"
        },
        answer.action_id,
        answer.by,
        crate::span(answer.wait.as_millis() as u64)
    ));
    let waiting = async {
        while let Some(message) = acks.next().await {
            let Ok(envelope) = decode(&message.payload) else {
                continue;
            };
            let Some(l) = line(&envelope) else { continue };
            let same_run = correlation_id.is_none() || l.correlation_id == correlation_id;
            // A record names its action; one written before the field existed only in text.
            let names_it = match &l.action_id {
                Some(id) => *id == answer.action_id,
                None => l.outcome.contains(&answer.action_id),
            };
            let not_another = l
                .action_id
                .as_ref()
                .is_none_or(|id| *id == answer.action_id);
            match AuditCode::parse(&l.what) {
                Some(AuditCode::ApprovalGranted) if names_it => {
                    return Some(Acknowledged::Granted(l))
                }
                Some(AuditCode::ApprovalDenied)
                    if same_run && not_another && l.why.contains(&answer.by) =>
                {
                    return Some(Acknowledged::Denied(l))
                }
                _ => {}
            }
        }
        None
    };
    match tokio::time::timeout(answer.wait, waiting).await {
        Ok(Some(ack)) => Ok(ack),
        Ok(None) | Err(_) => Err(CliError::TimedOut(format!(
            "published, but the decider did not acknowledge {} within {}: it is not running, or the action is no longer held (expired, answered, or its incident ended)",
            answer.action_id,
            crate::span(answer.wait.as_millis() as u64)
        ))),
    }
}
