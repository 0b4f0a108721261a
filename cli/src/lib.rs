//! `immune`, the operator's command line. It is one more client on the bus: it reads what
//! the streams and key-value buckets keep and publishes requests like any other client, so it
//! needs nothing but a NATS connection (`--nats`, `--nats-user`, `--nats-password`,
//! `--nats-credentials` or their `IMMUNE_NATS_*` variables).
//!
//! - [`status`]: services (last metric snapshot per subject), open incidents, controls.
//! - [`audit`]: the audit trail, filtered, as lines or JSON, stored and live.
//! - [`controls`]: the kill switches (healing and chaos) and maintenance windows.
//! - [`approve`]: answers an action the decider holds for approval, and waits for its word.
//! - [`chaos`]: inject a fault, run an experiment, send the attack catalogue, through the
//!   chaos crate's client code.
//! - [`replay`]: the detector's replay over the stored metrics.
//!
//! Results go to stdout (one JSON object per line with `--json`), progress and errors to
//! stderr, and the exit code says how it went: see [`exit`].

pub mod approve;
pub mod audit;
pub mod chaos;
pub mod controls;
pub mod replay;
pub mod status;
pub mod stored;

use std::time::Duration;

use immune_runtime::{Bus, BusConfig, BusError};

/// Exit codes scripts can rely on.
pub mod exit {
    /// The operation did what was asked.
    pub const OK: u8 = 0;
    /// It ran and did not succeed: an incident escalated, a request refused, an experiment
    /// whose steady state did not hold, nothing to remove.
    pub const FAILED: u8 = 1;
    /// Usage error: a bad flag or argument (clap's code), an invalid service name or file.
    pub const USAGE: u8 = 2;
    /// NATS cannot be reached (or refused the credentials), or an answer did not come in time.
    pub const UNREACHABLE: u8 = 3;
}

/// The text `--help` shows after the options of every command.
pub const EXIT_CODES_HELP: &str =
    "Exit codes: 0 ok; 1 the operation failed (incident escalated, request refused, \
steady state not held, nothing to act on); 2 usage error (bad flag, argument or file); \
3 NATS unreachable, credentials refused, or no answer in time.";

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot reach NATS at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{0}")]
    TimedOut(String),
    #[error("cannot read stream {stream}: {reason}")]
    Stream { stream: String, reason: String },
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("{0}")]
    Failed(String),
    #[error("{0}")]
    Usage(String),
}

impl CliError {
    /// The process exit code for this error (see [`exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Unreachable { .. } | CliError::TimedOut(_) => exit::UNREACHABLE,
            CliError::Bus(BusError::Connect { .. } | BusError::Publish { .. })
            | CliError::Bus(BusError::ShutDown) => exit::UNREACHABLE,
            CliError::Stream { .. } | CliError::Bus(_) | CliError::Failed(_) => exit::FAILED,
            CliError::Usage(_) => exit::USAGE,
        }
    }

    /// A stable name, e.g. for a wrapper script's logs.
    pub fn kind(&self) -> &'static str {
        match self {
            CliError::Unreachable { .. } => "unreachable",
            CliError::TimedOut(_) => "timed_out",
            CliError::Stream { .. } => "stream",
            CliError::Bus(e) => e.kind(),
            CliError::Failed(_) => "failed",
            CliError::Usage(_) => "usage",
        }
    }
}

/// Connects as a client within `limit`. One plain connection attempt comes first, so that a
/// refused connection or refused credentials are reported with NATS's own reason at once
/// (the bus client itself would keep waiting for NATS, as a stage should).
pub async fn connect(config: &BusConfig, limit: Duration) -> Result<Bus, CliError> {
    let unreachable = |reason: String| CliError::Unreachable {
        url: config.url.clone(),
        reason,
    };
    let mut options = async_nats::ConnectOptions::new()
        .name("immune-cli")
        .connection_timeout(limit);
    if let Some(path) = &config.credentials {
        options = options
            .credentials_file(path)
            .await
            .map_err(|e| CliError::Usage(format!("credentials {}: {e}", path.display())))?;
    }
    if let (Some(user), Some(password)) = (&config.user, &config.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    let probe = tokio::time::timeout(limit, options.connect(config.url.as_str()))
        .await
        .map_err(|_| unreachable(format!("no answer within {limit:?}")))?
        .map_err(|e| unreachable(e.to_string()))?;
    drop(probe);
    tokio::time::timeout(limit, Bus::connect_client(config))
        .await
        .map_err(|_| unreachable(format!("no answer within {limit:?}")))?
        .map_err(CliError::from)
}

/// A time in Unix milliseconds as RFC 3339 in UTC, to the millisecond.
pub fn rfc3339(ms: u64) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| ms.to_string())
}

/// A span of time as an operator reads it: `950ms`, `42s`, `3m12s`, `2h05m`, `3d04h`.
pub fn span(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        _ if ms < 1000 => format!("{ms}ms"),
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// `key=value`, as `--param` takes it.
pub fn parse_param(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected key=value, got {text:?}"))
}

/// A service name from the command line; a bad one is a usage error.
pub fn service_name(text: &str) -> Result<immune_nats::ServiceName, CliError> {
    immune_nats::ServiceName::new(text).map_err(|e| CliError::Usage(format!("service: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_spans_read_well() {
        assert_eq!(rfc3339(1_767_225_600_123), "2026-01-01T00:00:00.123Z");
        assert_eq!(span(950), "950ms");
        assert_eq!(span(42_000), "42s");
        assert_eq!(span(192_000), "3m12s");
        assert_eq!(span(7_500_000), "2h05m");
        assert_eq!(span(3 * 86_400_000 + 4 * 3_600_000), "3d04h");
    }

    #[test]
    fn params_need_a_key() {
        assert_eq!(
            parse_param("latency_ms=800"),
            Ok(("latency_ms".into(), "800".into()))
        );
        assert_eq!(parse_param("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_param("novalue").is_err());
        assert!(parse_param("=x").is_err());
    }

    #[test]
    fn errors_map_to_the_documented_exit_codes() {
        let unreachable = CliError::Unreachable {
            url: "nats://x".into(),
            reason: "refused".into(),
        };
        assert_eq!(unreachable.exit_code(), exit::UNREACHABLE);
        assert_eq!(
            CliError::TimedOut("t".into()).exit_code(),
            exit::UNREACHABLE
        );
        assert_eq!(CliError::Failed("f".into()).exit_code(), exit::FAILED);
        assert_eq!(CliError::Usage("u".into()).exit_code(), exit::USAGE);
        assert_eq!(
            CliError::Bus(BusError::Publish {
                subject: "s".into(),
                attempts: 1,
                reason: "r".into()
            })
            .exit_code(),
            exit::UNREACHABLE
        );
    }
}
