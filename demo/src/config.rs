//! A demo service's configuration, read from its environment: typed, defaulted, and
//! validated with a message that names the bad variable.

use std::time::Duration;

use crate::capacity::Limits;
use crate::upstream::{Upstream, UpstreamError};

/// Longest service time a request may be given.
const MAX_WORK: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct ServiceConfig {
    /// `SERVICE_NAME` (`demo`).
    pub name: String,
    /// `PORT` (8080).
    pub port: u16,
    /// `UPSTREAMS`: comma-separated base URLs, called in order by every `/`.
    pub upstreams: Vec<Upstream>,
    /// `DRAIN_MS` (0): how long it keeps serving after SIGTERM.
    pub drain: Duration,
    /// `CAPACITY` (8) slots of `WORK_MS` (20) each, `QUEUE` (32) waiting.
    pub limits: Limits,
}

/// A variable that does not parse or is out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}={value:?}: {expected}")]
pub struct ConfigError {
    pub key: &'static str,
    pub value: String,
    pub expected: String,
}

impl ServiceConfig {
    /// Reads the configuration through `var` (the process environment in `main`).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let number = |key: &'static str, default: u64, range: std::ops::RangeInclusive<u64>| {
            let Some(value) = var(key) else {
                return Ok(default);
            };
            value
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| range.contains(n))
                .ok_or_else(|| ConfigError {
                    key,
                    value: value.clone(),
                    expected: format!("a whole number from {} to {}", range.start(), range.end()),
                })
        };
        let upstreams = var("UPSTREAMS")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().trim_end_matches('/'))
            .filter(|s| !s.is_empty())
            .map(Upstream::parse)
            .collect::<Result<Vec<_>, UpstreamError>>()
            .map_err(|e| ConfigError {
                key: "UPSTREAMS",
                value: var("UPSTREAMS").unwrap_or_default(),
                expected: e.to_string(),
            })?;
        Ok(Self {
            name: var("SERVICE_NAME").unwrap_or_else(|| "demo".into()),
            port: number("PORT", 8080, 1..=65535)? as u16,
            upstreams,
            drain: Duration::from_millis(number("DRAIN_MS", 0, 0..=600_000)?),
            limits: Limits {
                slots: number("CAPACITY", 8, 1..=10_000)? as usize,
                work: Duration::from_millis(number(
                    "WORK_MS",
                    20,
                    0..=MAX_WORK.as_millis() as u64,
                )?),
                queue: number("QUEUE", 32, 0..=100_000)? as usize,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn read(vars: &[(&str, &str)]) -> Result<ServiceConfig, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ServiceConfig::from_vars(|k| vars.get(k).cloned())
    }

    #[test]
    fn defaults_serve_400_requests_a_second() {
        let config = read(&[]).expect("defaults");
        assert_eq!(config.name, "demo");
        assert_eq!(config.port, 8080);
        assert!(config.upstreams.is_empty());
        assert_eq!(
            config.limits,
            Limits {
                slots: 8,
                work: Duration::from_millis(20),
                queue: 32
            }
        );
        assert_eq!(config.limits.throughput(), 400.0);
    }

    #[test]
    fn reads_the_shipped_settings() {
        let config = read(&[
            ("SERVICE_NAME", "orders"),
            ("UPSTREAMS", "http://payments:8080/, http://auth:8080"),
            ("CAPACITY", "4"),
            ("WORK_MS", "25"),
            ("QUEUE", "16"),
        ])
        .expect("valid");
        let hosts: Vec<&str> = config.upstreams.iter().map(|u| u.host()).collect();
        assert_eq!(hosts, ["payments", "auth"]);
        assert_eq!(config.limits.throughput(), 160.0);
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        for (key, value) in [
            ("CAPACITY", "0"),
            ("CAPACITY", "eight"),
            ("WORK_MS", "-1"),
            ("QUEUE", "1e9"),
            ("PORT", "70000"),
            ("UPSTREAMS", "payments:8080"),
        ] {
            let error = read(&[(key, value)]).expect_err(key);
            assert_eq!(error.key, key);
            assert!(error.to_string().starts_with(&format!("{key}=")), "{error}");
        }
    }
}
