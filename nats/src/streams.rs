//! JetStream streams, durable consumers and key-value buckets: names and retention as data.
//! The runtime crate creates them from these specs, so every stage provisions the same thing.

use std::time::Duration;

use crate::subject;

/// A stream to create (or update) on start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSpec {
    pub name: &'static str,
    pub subjects: &'static [&'static str],
    pub max_age: Duration,
    pub description: &'static str,
}

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// Metric snapshots: high volume, short retention (enough to replay the last hours).
pub const METRICS: StreamSpec = StreamSpec {
    name: "IMMUNE_METRICS",
    subjects: &[subject::METRICS_ALL],
    max_age: Duration::from_secs(6 * 3600),
    description: "metric snapshots from the collector",
};

/// The pipeline: container events, anomalies, incidents, actions, results, chaos.
pub const PIPELINE: StreamSpec = StreamSpec {
    name: "IMMUNE_PIPELINE",
    subjects: &[
        subject::EVENTS_ALL,
        subject::ANOMALIES_ALL,
        subject::INCIDENTS_ALL,
        subject::ACTIONS_ALL,
        subject::RESULTS_ALL,
        subject::CHAOS_ALL,
        subject::ESCALATIONS_ALL,
        subject::APPROVALS_ALL,
    ],
    max_age: Duration::from_secs(7 * 24 * 3600),
    description: "events, anomalies, incidents, actions, results, chaos, escalations, approvals",
};

/// The audit trail and dead letters: kept longest.
pub const AUDIT: StreamSpec = StreamSpec {
    name: "IMMUNE_AUDIT",
    subjects: &[subject::AUDIT_ALL, subject::DEAD_LETTER_ALL],
    max_age: Duration::from_secs(90 * 24 * 3600),
    description: "audit records of every stage, and dead letters",
};

pub const ALL_STREAMS: [StreamSpec; 3] = [METRICS, PIPELINE, AUDIT];

/// The window in which JetStream de-duplicates a republished event id.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(2 * 60);

/// A durable pull consumer: a restarted stage resumes where it stopped; instances of a
/// stage that share the name share the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerSpec {
    pub durable: &'static str,
    pub stream: StreamSpec,
    pub filters: &'static [&'static str],
    /// How long a delivered message may stay unacknowledged before it is redelivered.
    pub ack_wait: Duration,
}

pub const DETECTOR_METRICS: ConsumerSpec = ConsumerSpec {
    durable: "detector-metrics",
    stream: METRICS,
    filters: &[subject::METRICS_ALL],
    ack_wait: Duration::from_secs(30),
};

/// The detector reads chaos events only to label anomalies with the run that caused them
/// (ground truth for measurement); they never influence detection.
pub const DETECTOR_EVENTS: ConsumerSpec = ConsumerSpec {
    durable: "detector-events",
    stream: PIPELINE,
    filters: &[
        subject::EVENTS_ALL,
        subject::CHAOS_INJECTED_ALL,
        subject::CHAOS_REVERTED_ALL,
    ],
    ack_wait: Duration::from_secs(30),
};

pub const DECIDER: ConsumerSpec = ConsumerSpec {
    durable: "decider",
    stream: PIPELINE,
    filters: &[
        subject::ANOMALIES_ALL,
        subject::RESULTS_ALL,
        subject::CHAOS_INJECTED_ALL,
        subject::CHAOS_REVERTED_ALL,
        subject::APPROVALS_ALL,
    ],
    ack_wait: Duration::from_secs(30),
};

/// Longer than the longest action timeout, so an action in progress is not redelivered.
pub const EXECUTOR: ConsumerSpec = ConsumerSpec {
    durable: "executor",
    stream: PIPELINE,
    filters: &[subject::ACTIONS_ALL],
    ack_wait: Duration::from_secs(120),
};

pub const CHAOS: ConsumerSpec = ConsumerSpec {
    durable: "chaos",
    stream: PIPELINE,
    filters: &[subject::CHAOS_REQUESTS],
    ack_wait: Duration::from_secs(30),
};

/// `text` as one part of a key-value key: keys allow `[-/_=.a-zA-Z0-9]`; anything else
/// becomes `_`, dots and slashes too, so the part cannot look like a prefix (`attempt.`,
/// `fault.`) or span levels.
pub fn kv_key_part(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_=".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Key-value buckets: durable state that must outlive a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketSpec {
    pub name: &'static str,
    pub history: i64,
    pub max_age: Duration,
}

/// Results of actions by action id: a redelivered request republishes, never re-acts.
pub const EXECUTOR_RESULTS: BucketSpec = BucketSpec {
    name: "immune_executor_results",
    history: 1,
    max_age: DAY,
};

/// Per-container locks of the executor: created only when absent, renewed by the holder while
/// it acts, and gone after `max_age` without renewal, so a crashed executor's lock does not
/// last. Executors may create the bucket with their configured lock TTL instead.
pub const EXECUTOR_LOCKS: BucketSpec = BucketSpec {
    name: "immune_executor_locks",
    history: 1,
    max_age: Duration::from_secs(15),
};

/// Faults in force, so a restarted chaos stage still reverts them.
pub const CHAOS_FAULTS: BucketSpec = BucketSpec {
    name: "immune_chaos_faults",
    history: 1,
    max_age: HOUR,
};

/// Chaos controls changeable at run time: key `kill_switch` (`on` refuses every request).
pub const CHAOS_CONTROL: BucketSpec = BucketSpec {
    name: "immune_chaos_control",
    history: 1,
    max_age: Duration::ZERO,
};

/// The learned detector's model per service, so a restarted detector resumes without a new
/// warm-up. Kept a month: an idle service's model is not worth more.
pub const DETECTOR_MODELS: BucketSpec = BucketSpec {
    name: "immune_detector_models",
    history: 1,
    max_age: Duration::from_secs(30 * 24 * 3600),
};

/// The decider's run-time switches, changeable while it runs: key `kill_switch` (`on` stops
/// every action), `maintenance.<service>` (a window: `<from_ms>..<until_ms>` in Unix ms, no
/// action on that service inside it). Kept until deleted.
pub const DECIDER_CONTROL: BucketSpec = BucketSpec {
    name: "immune_decider_control",
    history: 5,
    max_age: Duration::ZERO,
};

/// The decider's learned value per (signature, action), so a restart keeps what it learned.
pub const DECIDER_VALUES: BucketSpec = BucketSpec {
    name: "immune_decider_values",
    history: 1,
    max_age: Duration::ZERO,
};

/// The decider's open incidents and the state around them (cooldowns, containers acted on,
/// rate budgets), so a restarted decider finishes the incidents its predecessor opened: key
/// `open.<service>` per open incident, `shared` for the rest (MessagePack, written by the
/// decider only). A closed incident's key is deleted.
pub const DECIDER_STATE: BucketSpec = BucketSpec {
    name: "immune_decider_state",
    history: 1,
    max_age: Duration::ZERO,
};
