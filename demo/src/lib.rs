//! The demo system immune heals: one service binary that is gateway, orders, payments or
//! auth (set by its environment), or the load generator (`--loadgen`). `main.rs` describes
//! what a service answers; each concept is its own module here, where tests reach it.

pub mod blocklist;
pub mod capacity;
pub mod config;
pub mod fault;
pub mod loadgen;
pub mod profile;
mod screen;
pub mod service;
pub mod upstream;

pub use config::{ConfigError, ServiceConfig};
pub use loadgen::LoadgenConfig;
pub use profile::Profile;
