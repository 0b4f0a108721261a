//! `immune-decider [--config FILE]`: see the crate docs of `immune_decider`.

use std::path::PathBuf;

use clap::Parser;
use immune_runtime::{config, tracing_init, Shutdown, Telemetry};

#[derive(Parser)]
#[command(
    version,
    about = "immune decider: incidents, playbooks, verification, escalation"
)]
struct Args {
    /// TOML config; defaults and environment only when absent.
    #[arg(long, env = "IMMUNE_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_init::init();
    let args = Args::parse();
    let config: immune_decider::Config =
        config::load(immune_decider::STAGE, args.config.as_deref())?;
    config.validate()?;
    immune_decider::run(
        config,
        Telemetry::new(immune_decider::STAGE),
        Shutdown::from_signals(),
    )
    .await?;
    Ok(())
}
