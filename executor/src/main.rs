//! `immune-executor [--config FILE]`: see the crate docs of `immune_executor`.

use std::path::PathBuf;

use clap::Parser;
use immune_runtime::{config, tracing_init, Shutdown, Telemetry};

#[derive(Parser)]
#[command(
    version,
    about = "immune executor: carries repairs out on Docker, exactly once"
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
    let config: immune_executor::Config =
        config::load(immune_executor::STAGE, args.config.as_deref())?;
    config.validate()?;
    immune_executor::run(
        config,
        Telemetry::new(immune_executor::STAGE),
        Shutdown::from_signals(),
    )
    .await?;
    Ok(())
}
