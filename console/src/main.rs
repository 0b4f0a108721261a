//! `immune-console [--config FILE] [--nats URL] [--listen ADDR]`: see the crate docs of
//! `immune_console`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use immune_console::Config;
use immune_runtime::{tracing_init, Shutdown, Telemetry};

#[derive(Parser)]
#[command(
    version,
    about = "immune console: a live web page of services, incidents, the audit feed and chaos buttons"
)]
struct Args {
    /// TOML config; defaults and environment only when absent.
    #[arg(long, env = "IMMUNE_CONFIG")]
    config: Option<PathBuf>,
    /// NATS URL (overrides the config's `nats.url`).
    #[arg(long, env = "IMMUNE_NATS_URL")]
    nats: Option<String>,
    #[arg(long = "nats-user", env = "IMMUNE_NATS_USER")]
    nats_user: Option<String>,
    #[arg(
        long = "nats-password",
        env = "IMMUNE_NATS_PASSWORD",
        hide_env_values = true
    )]
    nats_password: Option<String>,
    /// Where to serve the page (overrides the config's `listen`).
    #[arg(long)]
    listen: Option<SocketAddr>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_init::init();
    let args = Args::parse();
    let mut config = Config::load(args.config.as_deref())?;
    if let Some(url) = args.nats {
        config.nats.url = url;
    }
    if let Some(user) = args.nats_user {
        config.nats.user = Some(user);
    }
    if let Some(password) = args.nats_password {
        config.nats.password = Some(password);
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    immune_console::run(
        config,
        Telemetry::new(immune_console::STAGE),
        Shutdown::from_signals(),
    )
    .await?;
    Ok(())
}
