//! `immune-detector [--config FILE]`: see the crate docs of `immune_detector`.

use std::path::PathBuf;

use clap::Parser;
use immune_runtime::{config, tracing_init, Shutdown, Telemetry};

#[derive(Parser)]
#[command(
    version,
    about = "immune detector: turns metrics and container events into anomalies"
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
    let config: immune_detector::Config =
        config::load(immune_detector::STAGE, args.config.as_deref())?;
    config.validate()?;
    immune_detector::run(
        config,
        Telemetry::new(immune_detector::STAGE),
        Shutdown::from_signals(),
    )
    .await?;
    Ok(())
}
