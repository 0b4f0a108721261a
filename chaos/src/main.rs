//! `immune-chaos [--config FILE]`: the chaos stage (see the crate docs of `immune_chaos`).
//! Its clients are in the operator's command line: `immune chaos inject|run|attack` and
//! `immune kill-switch on|off --chaos`.

use std::path::PathBuf;

use clap::Parser;
use immune_runtime::{config, tracing_init, Shutdown, Telemetry};

#[derive(Parser)]
#[command(
    version,
    about = "immune chaos: injects faults within guardrails and reverts them"
)]
struct Args {
    /// TOML config of the stage; defaults and environment only when absent.
    #[arg(long, env = "IMMUNE_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_init::init();
    let args = Args::parse();
    let config: immune_chaos::Config = config::load(immune_chaos::STAGE, args.config.as_deref())?;
    config.validate()?;
    immune_chaos::run(
        config,
        Telemetry::new(immune_chaos::STAGE),
        Shutdown::from_signals(),
    )
    .await?;
    Ok(())
}
