//! The client side of chaos: publish a request, wait for the chaos stage's answer (injected
//! or rejected), then follow its run through the audit stream until the incident it caused is
//! recovered or escalated. Used by `immune chaos inject`, experiments and tests.

use std::time::Duration;

use futures::StreamExt;
use immune_nats::{
    decode, subject, AuditCode, AuditRecord, ChaosInjected, ChaosRejected, ChaosRequest, Envelope,
    Event,
};
use immune_runtime::{Bus, BusError};

/// How a followed run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    Recovered,
    Escalated,
    Rejected,
    TimedOut,
}

/// A subscription to the audit stream, opened before the request is published so that
/// nothing of the run is missed.
#[derive(Debug)]
pub struct Follower {
    subscriber: async_nats::Subscriber,
}

impl Follower {
    pub async fn subscribe(
        client: &async_nats::Client,
    ) -> Result<Follower, async_nats::SubscribeError> {
        Ok(Follower {
            subscriber: client.subscribe(subject::AUDIT_ALL).await?,
        })
    }

    /// Reads audit records of `run_id` until the run ends or `limit` passes.
    pub async fn until_end(
        &mut self,
        run_id: &str,
        limit: Duration,
        mut on_record: impl FnMut(&Envelope, &AuditRecord),
    ) -> RunEnd {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let message = match tokio::time::timeout_at(deadline, self.subscriber.next()).await {
                Ok(Some(m)) => m,
                Ok(None) | Err(_) => return RunEnd::TimedOut,
            };
            let Ok(envelope) = decode(&message.payload) else {
                continue;
            };
            if envelope.correlation_id.as_deref() != Some(run_id) {
                continue;
            }
            let Event::Audit(record) = &envelope.body else {
                continue;
            };
            on_record(&envelope, record);
            match record.code() {
                Some(AuditCode::IncidentRecovered) => return RunEnd::Recovered,
                Some(AuditCode::IncidentEscalated) => return RunEnd::Escalated,
                Some(AuditCode::ChaosRejected) => return RunEnd::Rejected,
                _ => {}
            }
        }
    }
}

/// What the chaos stage answered to one run's request.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Injected(ChaosInjected),
    /// Refused by a guardrail, or recorded only (dry run); the reason says which.
    Rejected(ChaosRejected),
    /// No answer within the limit (is the chaos stage running?), or the connection closed.
    Silent,
}

/// A subscription to the chaos stage's answers, opened before the request is published.
#[derive(Debug)]
pub struct Answers {
    subscriber: async_nats::Subscriber,
}

impl Answers {
    pub async fn subscribe(
        client: &async_nats::Client,
    ) -> Result<Answers, async_nats::SubscribeError> {
        Ok(Answers {
            subscriber: client.subscribe(subject::CHAOS_ALL).await?,
        })
    }

    /// The chaos stage's answer to the latest request of `run_id`, within `limit`.
    pub async fn of(&mut self, run_id: &str, limit: Duration) -> Answer {
        let answer = tokio::time::timeout(limit, async {
            while let Some(message) = self.subscriber.next().await {
                let Ok(envelope) = decode(&message.payload) else {
                    continue;
                };
                match envelope.body {
                    Event::ChaosInjected(e) if e.run_id == run_id => return Answer::Injected(e),
                    Event::ChaosRejected(e) if e.run_id == run_id => return Answer::Rejected(e),
                    _ => {}
                }
            }
            Answer::Silent
        })
        .await;
        answer.unwrap_or(Answer::Silent)
    }
}

/// Publishes a chaos request; returns the run id that follows it through the pipeline.
pub async fn request(bus: &Bus, mut request: ChaosRequest) -> Result<String, BusError> {
    let run_id = request
        .run_id
        .get_or_insert_with(|| uuid::Uuid::now_v7().to_string())
        .clone();
    bus.publish(Some(run_id.clone()), Event::ChaosRequest(request))
        .await?;
    Ok(run_id)
}

/// A duration written as `500ms`, `30s`, `2m`, `1h` or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| text.split_at(i))
        .unwrap_or((text, "s"));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. 30s, 500ms, 2m, 1h"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!(
            "invalid duration {text:?}: unit must be ms, s, m or h"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("abc").is_err());
    }
}
