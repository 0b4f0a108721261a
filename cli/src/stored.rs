//! Reading what the JetStream streams keep, through ephemeral ordered consumers that the
//! server forgets when the command ends: the last message of each subject (`status`), and
//! every message of a filter from some point on (`audit tail`, `approve`).

use std::time::{Duration, SystemTime};

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use futures::StreamExt;
use immune_nats::streams::StreamSpec;
use immune_nats::{decode, CodecError, Envelope};
use immune_runtime::Bus;

use crate::CliError;

/// Where a read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The oldest message the stream keeps.
    All,
    /// The first message stored at or after this time.
    Since(SystemTime),
    /// The newest message of every subject that matches the filter.
    LastPerSubject,
}

/// One message as the stream keeps it.
#[derive(Debug)]
pub struct Stored {
    pub subject: String,
    /// The decoded envelope, or why it could not be decoded.
    pub envelope: Result<Envelope, CodecError>,
    /// Messages matching the filter still stored after this one when it was delivered.
    pub pending: u64,
}

/// An ephemeral ordered consumer over one filter of one stream.
pub struct Reader {
    stream: &'static str,
    messages: pull::Ordered,
    /// Messages waiting when the reader was opened: 0 means nothing is stored yet.
    pub pending_at_start: u64,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("stream", &self.stream)
            .field("pending_at_start", &self.pending_at_start)
            .finish()
    }
}

fn stream_error(stream: &str, e: impl std::fmt::Display) -> CliError {
    CliError::Stream {
        stream: stream.to_string(),
        reason: e.to_string(),
    }
}

impl Reader {
    pub async fn open(
        bus: &Bus,
        spec: StreamSpec,
        filter: &str,
        start: Start,
    ) -> Result<Reader, CliError> {
        let stream = bus
            .jetstream()
            .get_stream(spec.name)
            .await
            .map_err(|e| stream_error(spec.name, e))?;
        let deliver_policy = match start {
            Start::All => DeliverPolicy::All,
            Start::LastPerSubject => DeliverPolicy::LastPerSubject,
            Start::Since(at) => DeliverPolicy::ByStartTime {
                start_time: time::OffsetDateTime::from(at),
            },
        };
        let mut consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: filter.to_string(),
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|e| stream_error(spec.name, e))?;
        let pending_at_start = consumer
            .info()
            .await
            .map_err(|e| stream_error(spec.name, e))?
            .num_pending;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| stream_error(spec.name, e))?;
        Ok(Reader {
            stream: spec.name,
            messages,
            pending_at_start,
        })
    }

    /// The next message; waits for one to be stored when the reader has caught up.
    pub async fn next(&mut self) -> Result<Stored, CliError> {
        let message = self
            .messages
            .next()
            .await
            .ok_or_else(|| stream_error(self.stream, "the consumer ended"))?
            .map_err(|e| stream_error(self.stream, e))?;
        let pending = message
            .info()
            .map_err(|e| stream_error(self.stream, e))?
            .pending;
        Ok(Stored {
            subject: message.subject.to_string(),
            envelope: decode(&message.payload),
            pending,
        })
    }

    /// Every message stored when the reader was opened (and any stored while reading it),
    /// bounded by `limit` so a server that stops answering cannot hold the command.
    pub async fn drain(&mut self, limit: Duration) -> Result<Vec<Stored>, CliError> {
        let mut all = Vec::new();
        if self.pending_at_start == 0 {
            return Ok(all);
        }
        let reading = async {
            loop {
                let stored = self.next().await?;
                let done = stored.pending == 0;
                all.push(stored);
                if done {
                    return Ok::<_, CliError>(());
                }
            }
        };
        tokio::time::timeout(limit, reading).await.map_err(|_| {
            CliError::TimedOut(format!(
                "reading stream {} took over {limit:?}",
                self.stream
            ))
        })??;
        Ok(all)
    }
}
