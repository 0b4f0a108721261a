//! `immune-scorecard`: runs the resilience scorecard against the real deployment and
//! writes `docs/scorecard.md` with its plots. See `immune_scorecard::Config` for the flags.

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "immune-scorecard",
    about = "Inject every fault into the real deployment and write the resilience scorecard"
)]
struct Cli {
    /// Render the markdown and plots again from a `report.json` an earlier run wrote
    /// (into --out), without running anything.
    #[arg(long)]
    render: Option<std::path::PathBuf>,
    #[command(flatten)]
    config: immune_scorecard::Config,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    immune_runtime::tracing_init::init();
    let cli = Cli::parse();
    let out = cli.config.out.clone();
    let report = match &cli.render {
        Some(json) => {
            let report = immune_scorecard::report::read(json)?;
            immune_scorecard::report::write(&report, &out, &cli.config.font)?;
            report
        }
        None => immune_scorecard::run(cli.config).await?,
    };
    for t in report.targets() {
        let met = match t.met {
            Some(true) => "met",
            Some(false) => "NOT met",
            None => "not measured",
        };
        println!("{}: {} (goal {}): {met}", t.what, t.measured, t.goal);
    }
    println!("report: {}", out.join("scorecard.md").display());
    Ok(())
}
