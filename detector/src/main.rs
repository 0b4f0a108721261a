//! `immune-detector [--config FILE] [run | eval ... | replay ...]`: see the crate docs of
//! `immune_detector`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use immune_nats::ServiceName;
use immune_runtime::{config, tracing_init, Shutdown, Telemetry};

#[derive(Parser)]
#[command(
    version,
    about = "immune detector: turns metrics and container events into anomalies"
)]
struct Args {
    /// TOML config; defaults and environment only when absent.
    #[arg(long, env = "IMMUNE_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// The live stage (the default).
    Run,
    /// Runs the detector over NAB and ASD and writes a markdown results table.
    Eval {
        /// The folder holding `nab/` and `asd/`.
        #[arg(long, default_value = "../shared/datasets")]
        datasets: PathBuf,
        /// Where to write the table.
        #[arg(long, default_value = "docs/detector-eval.md")]
        out: PathBuf,
    },
    /// Re-scores a stored range of the metrics stream with this config; publishes nothing.
    Replay {
        #[arg(long)]
        from_seq: Option<u64>,
        #[arg(long)]
        to_seq: Option<u64>,
        #[arg(long)]
        service: Option<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_init::init();
    let args = Args::parse();
    let config: immune_detector::Config =
        config::load(immune_detector::STAGE, args.config.as_deref())?;
    config.validate()?;
    match args.command.unwrap_or(Command::Run) {
        Command::Run => {
            immune_detector::run(
                config,
                Telemetry::new(immune_detector::STAGE),
                Shutdown::from_signals(),
            )
            .await?
        }
        Command::Eval { datasets, out } => {
            let report = immune_detector::eval::run(&datasets, &config.eval)?;
            if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            std::fs::write(&out, &report).with_context(|| format!("writing {}", out.display()))?;
            println!("{report}");
            eprintln!("written to {}", out.display());
        }
        Command::Replay {
            from_seq,
            to_seq,
            service,
        } => {
            let service = service.map(ServiceName::new).transpose()?;
            let bus = immune_runtime::Bus::connect_client(&config.nats).await?;
            let range = immune_detector::replay::Range {
                from_seq,
                to_seq,
                service,
            };
            let report = immune_detector::replay::run(&bus, &config, &range).await?;
            for finding in &report.findings {
                println!("{}", immune_detector::replay::describe(finding));
            }
            println!(
                "replayed {} snapshots ({} undecodable), {} findings, fits {:?}",
                report.snapshots,
                report.undecodable,
                report.findings.len(),
                report.fits
            );
        }
    }
    Ok(())
}
