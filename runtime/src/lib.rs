//! What every immune stage shares, so that each stage's crate holds only its own logic:
//!
//! - [`config`]: typed TOML config with defaults, env overrides and unknown keys rejected.
//! - [`bus`]: the JetStream client: provisioning, de-duplicated publish, durable inboxes that
//!   send undecodable messages to the dead-letter subject, key-value buckets.
//! - [`delivery`]: the one delivery rule: a handler returns a [`Disposition`] and
//!   [`Delivery::settle`] acknowledges, hands back, counts and traces the message.
//! - [`telemetry`]: typed self-observations that both log and count, served on `/metrics`.
//! - [`shutdown`] and [`tracing_init`]: the process plumbing `main` needs.

pub mod bus;
pub mod config;
pub mod delivery;
pub mod docker;
pub mod shutdown;
pub mod telemetry;
pub mod tracing_init;

pub use bus::{Audit, Bus, BusError, Inbox};
pub use config::{BusConfig, ConfigError, TelemetryConfig};
pub use delivery::{Delivery, Disposition};
pub use shutdown::Shutdown;
pub use telemetry::Telemetry;
