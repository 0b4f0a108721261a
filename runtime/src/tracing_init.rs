//! One tracing style for every binary: `RUST_LOG` filter, `info` by default, JSON lines when
//! `IMMUNE_LOG_FORMAT=json` (for log shippers), human-readable otherwise.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,async_nats=warn,bollard=warn,hyper=warn"));
    let json = std::env::var("IMMUNE_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let result = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    // A second init (tests start several stages in one process) keeps the first subscriber.
    let _ = result;
}
