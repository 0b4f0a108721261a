//! The envelope every message travels in.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::events::Event;

/// The schema version this build writes. Decoders accept every version in
/// [`crate::codec::SUPPORTED_VERSIONS`] and refuse the rest with a reason.
pub const SCHEMA_VERSION: u16 = 1;

/// Unique id of one event; also the JetStream message id, so a republished event is
/// de-duplicated by the server. UUIDv7: sortable by creation time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(pub String);

impl EventId {
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }
}

impl Default for EventId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The five stages, plus clients (CLI, tests, dashboards) that publish requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Collector,
    Detector,
    Decider,
    Executor,
    Chaos,
    Client,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Collector => "collector",
            Stage::Detector => "detector",
            Stage::Decider => "decider",
            Stage::Executor => "executor",
            Stage::Chaos => "chaos",
            Stage::Client => "client",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who produced an event: the stage and the instance of it (host name or replica id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Producer {
    pub stage: Stage,
    pub instance: String,
}

/// One message on the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub schema_version: u16,
    pub event_id: EventId,
    /// Milliseconds since the Unix epoch, when the producer created the event.
    pub timestamp_ms: u64,
    pub producer: Producer,
    /// Ties every event of one incident or chaos run together, across stages.
    pub correlation_id: Option<String>,
    pub body: Event,
}

impl Envelope {
    /// A new envelope stamped now, with a fresh event id.
    pub fn new(producer: Producer, correlation_id: Option<String>, body: Event) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            event_id: EventId::new(),
            timestamp_ms: now_ms(),
            producer,
            correlation_id,
            body,
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
