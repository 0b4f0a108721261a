//! `immune-collector [--config FILE]`: see the crate docs of `immune_collector`.

use std::path::PathBuf;

use clap::Parser;
use immune_runtime::{config, tracing_init, Shutdown, Telemetry};

#[derive(Parser)]
#[command(
    version,
    about = "immune collector: discovers labelled containers, scrapes and probes them"
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
    let config: immune_collector::Config =
        config::load(immune_collector::STAGE, args.config.as_deref())?;
    config.validate()?;
    immune_collector::run(
        config,
        Telemetry::new(immune_collector::STAGE),
        Shutdown::from_signals(),
    )
    .await?;
    Ok(())
}
