//! Typed configuration: defaults, then the TOML file, then environment overrides.
//!
//! Environment: `IMMUNE_NATS_URL`, `IMMUNE_NATS_USER`, `IMMUNE_NATS_PASSWORD` and
//! `IMMUNE_NATS_CREDENTIALS` set `nats.url`, `nats.user`, `nats.password` and
//! `nats.credentials` for every stage (the settings all of them share);
//! `IMMUNE_<STAGE>__<SECTION>__<KEY>` overrides any other key of that stage,
//! e.g. `IMMUNE_COLLECTOR__SCRAPE__INTERVAL_MS=500`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use immune_nats::Stage;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The config could not be read or has a bad key; the message names the key and the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    Missing(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// How a stage reaches NATS.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    pub url: String,
    /// A NATS credentials file (user JWT and seed), when the server requires one.
    pub credentials: Option<PathBuf>,
    /// user/password authentication, when the server uses it.
    pub user: Option<String>,
    pub password: Option<String>,
    /// Attempts for one publish before the stage gives up on the message (it is then
    /// redelivered later, never dropped).
    pub publish_attempts: u32,
}

impl BusConfig {
    /// Defaults, at `url`.
    pub fn at(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Default::default()
        }
    }
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            credentials: None,
            user: None,
            password: None,
            publish_attempts: 8,
        }
    }
}

/// Where a stage serves its own `/metrics`; `None` serves nothing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    pub listen: Option<SocketAddr>,
}

/// The environment variables every stage reads into its [`BusConfig`], and their keys.
pub const BUS_ENV: [(&str, &str); 4] = [
    ("IMMUNE_NATS_URL", "nats.url"),
    ("IMMUNE_NATS_USER", "nats.user"),
    ("IMMUNE_NATS_PASSWORD", "nats.password"),
    ("IMMUNE_NATS_CREDENTIALS", "nats.credentials"),
];

/// Reads a stage's config. `path` absent means defaults and environment only.
pub fn load<T>(stage: Stage, path: Option<&Path>) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
{
    load_as(stage.as_str(), path)
}

/// Reads the config of the process `name` (a stage, or the console): defaults, then the TOML
/// file, then the bus settings of [`BUS_ENV`], then `IMMUNE_<NAME>__<SECTION>__<KEY>`.
pub fn load_as<T>(name: &str, path: Option<&Path>) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
{
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(path) = path {
        if !path.exists() {
            return Err(ConfigError::Missing(path.to_path_buf()));
        }
        figment = figment.merge(Toml::file(path));
    }
    // Taken as plain strings (never parsed as numbers or booleans): a password is a password.
    for (var, key) in BUS_ENV {
        if let Some(value) = std::env::var(var).ok().filter(|v| !v.is_empty()) {
            figment = figment.merge(Serialized::default(key, value));
        }
    }
    figment =
        figment.merge(Env::prefixed(&format!("IMMUNE_{}__", name.to_uppercase())).split("__"));
    figment
        .extract()
        .map_err(|e| ConfigError::Invalid(e.to_string()))
}

/// Parses config text as a stage would (used by tests of shipped configs).
pub fn parse<T>(text: &str) -> Result<T, ConfigError>
where
    T: DeserializeOwned + Serialize + Default,
{
    Figment::from(Serialized::defaults(T::default()))
        .merge(Toml::string(text))
        .extract()
        .map_err(|e| ConfigError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Sample {
        nats: BusConfig,
        interval_ms: u64,
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = parse::<Sample>("[nats]\nurll = \"x\"").expect_err("unknown key");
        assert!(err.to_string().contains("urll"), "{err}");
    }

    #[test]
    fn defaults_fill_what_the_file_leaves_out() {
        let s: Sample = parse("interval_ms = 5").expect("parses");
        assert_eq!(s.interval_ms, 5);
        assert_eq!(s.nats, BusConfig::default());
    }

    #[test]
    fn the_bus_settings_come_from_the_environment_as_plain_strings() {
        std::env::set_var("IMMUNE_NATS_URL", "nats://nats:4222");
        std::env::set_var("IMMUNE_NATS_USER", "collector");
        // A password that looks like a number stays a string.
        std::env::set_var("IMMUNE_NATS_PASSWORD", "12345");
        std::env::set_var("IMMUNE_NATS_CREDENTIALS", "");
        let s: Result<Sample, _> = load(Stage::Collector, None);
        for (var, _) in BUS_ENV {
            std::env::remove_var(var);
        }
        let s = s.expect("loads");
        assert_eq!(s.nats.url, "nats://nats:4222");
        assert_eq!(s.nats.user.as_deref(), Some("collector"));
        assert_eq!(s.nats.password.as_deref(), Some("12345"));
        assert_eq!(s.nats.credentials, None, "an empty variable is no setting");
    }

    #[test]
    fn a_missing_file_is_an_error_not_defaults() {
        let err = load::<Sample>(Stage::Collector, Some(Path::new("/nonexistent/x.toml")))
            .expect_err("missing");
        assert!(matches!(err, ConfigError::Missing(_)));
    }
}
