//! The immune console: one web page, live over server-sent events.
//!
//! The console is a bus client like the CLI: it subscribes (core NATS, nothing durable:
//! it only shows) to metric snapshots, anomalies, incidents, actions and their results,
//! chaos injections and reverts, escalations and the audit stream; keeps a bounded view of
//! them in memory ([`view`]); and serves:
//!
//! | route | what |
//! |---|---|
//! | `GET /` | the page (embedded, no external resource) |
//! | `GET /events` | server-sent events: a `snapshot` on connect, then `delta`s |
//! | `POST /api/chaos` | `{service, fault, duration_ms, params}` published as a `ChaosRequest`; answers the run id |
//! | `GET /api/state` | the view as JSON |
//! | `GET /metrics` | the console's own counters |
//! | `GET /health` | 200 once connected to NATS |
//!
//! Like every stage, it also keeps the shared self-metrics ([`Telemetry`]: its bus
//! connection's publishes, failures and refusals), served on `[telemetry] listen` when set.
//!
//! `main` reads the config ([`Config::load`]), starts tracing and calls [`run`].

pub mod telemetry;
pub mod view;
pub mod web;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use immune_nats::{decode, subject, Stage};
use immune_runtime::{Bus, BusConfig, BusError, ConfigError, Shutdown, Telemetry, TelemetryConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

pub use telemetry::{ConsoleTelemetry, Seen};
pub use view::{Limits, View};

/// The subjects the console watches, from the bus contract.
pub const WATCHED: [&str; 8] = [
    subject::METRICS_ALL,
    subject::ANOMALIES_ALL,
    subject::INCIDENTS_ALL,
    subject::ACTIONS_ALL,
    subject::RESULTS_ALL,
    subject::CHAOS_ALL,
    subject::ESCALATIONS_ALL,
    subject::AUDIT_ALL,
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub nats: BusConfig,
    /// Where the shared self-metrics are served; the page's own `/metrics` is always served.
    pub telemetry: TelemetryConfig,
    /// Where the page is served.
    pub listen: SocketAddr,
    /// At start, read this much of the past (incidents, anomalies, actions, results, chaos,
    /// audit; not metrics) from the JetStream streams into the view; 0 starts empty.
    pub history_ms: u64,
    /// How much the view keeps.
    pub limits: Limits,
    pub chaos: ChaosLimits,
}

/// What the chaos buttons may ask for (the chaos stage applies its own guardrails too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChaosLimits {
    /// Used when a request names no duration.
    pub default_duration_ms: u64,
    /// Longest duration the page may ask for.
    pub max_duration_ms: u64,
}

impl Default for ChaosLimits {
    fn default() -> Self {
        Self {
            default_duration_ms: 30_000,
            max_duration_ms: 600_000,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            nats: BusConfig::default(),
            telemetry: TelemetryConfig::default(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8088)),
            history_ms: 3_600_000,
            limits: Limits::default(),
            chaos: ChaosLimits::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("cannot subscribe to {subject}: {reason}")]
    Subscribe { subject: String, reason: String },
    #[error("cannot serve on {listen}: {source}")]
    Serve {
        listen: String,
        source: std::io::Error,
    },
}

impl From<ConfigError> for ConsoleError {
    fn from(e: ConfigError) -> Self {
        match e {
            ConfigError::Invalid(why) => ConsoleError::Config(why),
            missing @ ConfigError::Missing(_) => ConsoleError::Config(missing.to_string()),
        }
    }
}

impl ConsoleError {
    /// The error as a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            ConsoleError::Config(_) => "config",
            ConsoleError::Bus(e) => e.kind(),
            ConsoleError::Subscribe { .. } => "subscribe",
            ConsoleError::Serve { .. } => "serve",
        }
    }
}

impl Config {
    /// Defaults, then the TOML file (when given), then the environment, read by the runtime's
    /// loader as every stage's is ([`immune_runtime::config::load_as`]): the bus settings
    /// (`IMMUNE_NATS_URL`, `IMMUNE_NATS_USER`, ...) and `IMMUNE_CONSOLE__<SECTION>__<KEY>`.
    pub fn load(path: Option<&Path>) -> Result<Config, ConsoleError> {
        let config: Config = immune_runtime::config::load_as("console", path)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses config text (tests of the shipped file), as [`immune_runtime::config::parse`]
    /// does for every stage.
    pub fn parse(text: &str) -> Result<Config, ConsoleError> {
        let config: Config = immune_runtime::config::parse(text)?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConsoleError> {
        let bad = |key: &str, why: &str| Err(ConsoleError::Config(format!("{key}: {why}")));
        let l = &self.limits;
        for (key, value) in [
            ("limits.points", l.points),
            ("limits.incidents", l.incidents),
            ("limits.timeline", l.timeline),
            ("limits.audit", l.audit),
            ("limits.services", l.services),
        ] {
            if value == 0 || value > 100_000 {
                return bad(key, "must be between 1 and 100000");
            }
        }
        if self.chaos.max_duration_ms == 0 {
            return bad("chaos.max_duration_ms", "must be above 0");
        }
        if self.chaos.default_duration_ms == 0
            || self.chaos.default_duration_ms > self.chaos.max_duration_ms
        {
            return bad(
                "chaos.default_duration_ms",
                "must be above 0 and at most chaos.max_duration_ms",
            );
        }
        Ok(())
    }
}

/// What the web handlers share with the task that feeds the view.
#[derive(Debug)]
pub struct Shared {
    pub view: Mutex<View>,
    /// Deltas as JSON, serialized once for every page.
    pub deltas: broadcast::Sender<Arc<str>>,
    pub bus: Bus,
    pub telemetry: ConsoleTelemetry,
    pub chaos: ChaosLimits,
    pub shutdown: Shutdown,
}

/// Binds `config.listen` and runs until `shutdown`; `telemetry` is the shared self-metrics,
/// served on `config.telemetry.listen` when set.
pub async fn run(
    config: Config,
    telemetry: Telemetry,
    shutdown: Shutdown,
) -> Result<(), ConsoleError> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ConsoleError::Serve {
            listen: config.listen.to_string(),
            source,
        })?;
    serve(
        config,
        listener,
        telemetry,
        ConsoleTelemetry::new(),
        shutdown,
    )
    .await
}

/// Runs on a listener the caller bound (tests bind port 0), with the console's counters in
/// `telemetry`.
pub async fn run_on(
    config: Config,
    listener: tokio::net::TcpListener,
    telemetry: ConsoleTelemetry,
    shutdown: Shutdown,
) -> Result<(), ConsoleError> {
    serve(config, listener, Telemetry::new(STAGE), telemetry, shutdown).await
}

/// The stage the console's bus connection and shared self-metrics are labelled with.
/// `immune_nats::Stage` has no console stage yet, so it is a client, like the CLI.
pub const STAGE: Stage = Stage::Client;

async fn serve(
    config: Config,
    listener: tokio::net::TcpListener,
    stage_telemetry: Telemetry,
    telemetry: ConsoleTelemetry,
    shutdown: Shutdown,
) -> Result<(), ConsoleError> {
    let listen = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    // Waits for NATS as long as it takes (or until shutdown), like every stage.
    let bus = Bus::start_stage(&config.nats, &config.telemetry, stage_telemetry, &shutdown).await?;
    let mut subscriptions = Vec::new();
    for filter in WATCHED {
        let subscriber =
            bus.client()
                .subscribe(filter)
                .await
                .map_err(|e| ConsoleError::Subscribe {
                    subject: filter.to_string(),
                    reason: e.to_string(),
                })?;
        subscriptions.push(subscriber);
    }
    // The server has every subscription before the first page can ask for anything.
    bus.client()
        .flush()
        .await
        .map_err(|e| ConsoleError::Subscribe {
            subject: "(flush)".to_string(),
            reason: e.to_string(),
        })?;
    let (deltas, _) = broadcast::channel(1024);
    let shared = Arc::new(Shared {
        view: Mutex::new(View::new(config.limits)),
        deltas,
        bus: bus.clone(),
        telemetry,
        chaos: config.chaos,
        shutdown: shutdown.clone(),
    });
    let feeding = tokio::spawn(feed(
        shared.clone(),
        futures::stream::select_all(subscriptions),
        config.history_ms,
        shutdown.clone(),
    ));
    tracing::info!(%listen, "console serving");
    let mut stop = shutdown.clone();
    let served = axum::serve(listener, web::router(shared))
        .with_graceful_shutdown(async move { stop.wait().await })
        .await;
    let _ = feeding.await;
    bus.close().await;
    served.map_err(|source| ConsoleError::Serve { listen, source })
}

/// Event ids remembered to apply an event read twice (history and live) once.
const REMEMBERED_IDS: usize = 50_000;

/// Takes the recent past, then every watched message, into the view and hands the deltas
/// to the pages. The live subscriptions are open before the history is read, so nothing
/// falls between the two; what both deliver is applied once.
async fn feed(
    shared: Arc<Shared>,
    mut messages: futures::stream::SelectAll<async_nats::Subscriber>,
    history_ms: u64,
    mut shutdown: Shutdown,
) {
    let mut seen = view::SeenIds::new(REMEMBERED_IDS);
    if history_ms > 0 {
        let replay = replay_history(&shared, history_ms, &mut seen);
        tokio::select! {
            _ = shutdown.wait() => return,
            replayed = replay => match replayed {
                Ok(events) => shared.telemetry.observe(Seen::Replayed { events }),
                Err(error) => shared.telemetry.observe(Seen::ReplayFailed { error: &error }),
            },
        }
    }
    loop {
        let message = tokio::select! {
            _ = shutdown.wait() => return,
            m = messages.next() => match m {
                Some(m) => m,
                None => return,
            },
        };
        let envelope = match decode(&message.payload) {
            Ok(e) => e,
            Err(e) => {
                shared.telemetry.observe(Seen::Undecodable {
                    subject: message.subject.as_str(),
                    reason_kind: e.kind(),
                    reason: &e.to_string(),
                });
                continue;
            }
        };
        shared.telemetry.observe(Seen::Received {
            kind: envelope.body.kind(),
        });
        if !seen.first_time(&envelope.event_id.0) {
            continue;
        }
        if !take_in(&shared, &envelope) {
            return;
        }
    }
}

/// Applies one event and sends its deltas; false when the view is unusable.
fn take_in(shared: &Shared, envelope: &immune_nats::Envelope) -> bool {
    // Applied and sent under the lock, so a page that takes a snapshot and subscribes
    // under the same lock misses nothing and sees nothing twice.
    let Ok(mut view) = shared.view.lock() else {
        tracing::error!("view lock poisoned; console stops feeding");
        return false;
    };
    for delta in view.apply(envelope) {
        match serde_json::to_string(&delta) {
            Ok(json) => {
                // No page connected is not an error.
                let _ = shared.deltas.send(Arc::from(json));
            }
            Err(e) => tracing::error!(error = %e, "cannot serialize a delta"),
        }
    }
    true
}

/// Reads the last `history_ms` of the pipeline (not metrics) and audit streams into the
/// view, through ordered consumers (ephemeral: nothing is left on the server). Returns how
/// many events were taken in.
async fn replay_history(
    shared: &Shared,
    history_ms: u64,
    seen: &mut view::SeenIds,
) -> Result<usize, String> {
    use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
    use immune_nats::streams::{AUDIT, PIPELINE};

    let start_ms = immune_nats::envelope::now_ms().saturating_sub(history_ms);
    let start_time =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(start_ms) * 1_000_000)
            .map_err(|e| format!("history start: {e}"))?;
    let pipeline = [
        subject::ANOMALIES_ALL,
        subject::INCIDENTS_ALL,
        subject::ACTIONS_ALL,
        subject::RESULTS_ALL,
        subject::CHAOS_ALL,
        subject::ESCALATIONS_ALL,
    ];
    let mut taken = 0;
    for (spec, filters) in [
        (PIPELINE, &pipeline[..]),
        (AUDIT, &[subject::AUDIT_ALL][..]),
    ] {
        let stream = shared
            .bus
            .jetstream()
            .get_stream(spec.name)
            .await
            .map_err(|e| format!("stream {}: {e}", spec.name))?;
        let mut consumer = stream
            .create_consumer(OrderedConfig {
                filter_subjects: filters.iter().map(|s| s.to_string()).collect(),
                deliver_policy: DeliverPolicy::ByStartTime { start_time },
                ..Default::default()
            })
            .await
            .map_err(|e| format!("replay consumer on {}: {e}", spec.name))?;
        let pending = consumer
            .info()
            .await
            .map_err(|e| format!("replay consumer on {}: {e}", spec.name))?
            .num_pending;
        if pending == 0 {
            continue;
        }
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| format!("replay of {}: {e}", spec.name))?;
        loop {
            let next = tokio::time::timeout(std::time::Duration::from_secs(10), messages.next())
                .await
                .map_err(|_| format!("replay of {} stalled", spec.name))?;
            let Some(message) = next else { break };
            let message = message.map_err(|e| format!("replay of {}: {e}", spec.name))?;
            let left = message.info().map(|i| i.pending).unwrap_or(0);
            if let Ok(envelope) = decode(&message.payload) {
                if seen.first_time(&envelope.event_id.0) {
                    if !take_in(shared, &envelope) {
                        return Err("view lock poisoned".into());
                    }
                    taken += 1;
                }
            }
            if left == 0 {
                break;
            }
        }
    }
    Ok(taken)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_config_parses_and_validates() {
        let text = include_str!("../console.toml");
        let config = Config::parse(text).expect("console/console.toml");
        assert_eq!(config.listen.port(), 8088);
    }

    #[test]
    fn credentials_and_overrides_come_from_the_environment() {
        // The only test of this crate that reads the environment.
        std::env::set_var("IMMUNE_NATS_URL", "nats://bus:4222");
        std::env::set_var("IMMUNE_NATS_USER", "console");
        std::env::set_var("IMMUNE_NATS_PASSWORD", "s3cret");
        std::env::set_var("IMMUNE_CONSOLE__LIMITS__AUDIT", "7");
        let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("console.toml");
        let config = Config::load(Some(&path)).expect("loads");
        for key in [
            "IMMUNE_NATS_URL",
            "IMMUNE_NATS_USER",
            "IMMUNE_NATS_PASSWORD",
            "IMMUNE_CONSOLE__LIMITS__AUDIT",
        ] {
            std::env::remove_var(key);
        }
        assert_eq!(config.nats.url, "nats://bus:4222");
        assert_eq!(config.nats.user.as_deref(), Some("console"));
        assert_eq!(config.nats.password.as_deref(), Some("s3cret"));
        assert_eq!(config.limits.audit, 7);
        assert_eq!(config.listen.port(), 8088, "the file still counts");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let err = Config::parse("[limits]\npointz = 5").expect_err("unknown key");
        assert!(err.to_string().contains("pointz"), "{err}");
        let err = Config::parse("[limits]\npoints = 0").expect_err("zero points");
        assert!(err.to_string().contains("limits.points"), "{err}");
        let err = Config::parse("[chaos]\ndefault_duration_ms = 700000").expect_err("too long");
        assert!(
            err.to_string().contains("chaos.default_duration_ms"),
            "{err}"
        );
        let err = Config::parse("listen = \"nowhere\"").expect_err("bad address");
        assert!(err.to_string().contains("listen"), "{err}");
    }
}
