//! `immune-chaos [--config FILE]` runs the chaos stage;
//! `immune-chaos inject --service S --fault F [--for 30s] [--follow]` asks it for a fault;
//! `immune-chaos run EXPERIMENT.toml` runs an experiment (see `chaos/experiments/`);
//! `immune-chaos attack --url URL` sends the attack catalogue at a URL and reports;
//! `immune-chaos kill-switch on|off` engages or releases the global kill switch.
//! The client subcommands take `--nats URL`, `--nats-user`, `--nats-password` (or
//! `IMMUNE_NATS_URL`, `IMMUNE_NATS_USER`, `IMMUNE_NATS_PASSWORD`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use immune_chaos::follow::{self, Follower, RunEnd};
use immune_nats::{envelope::now_ms, ChaosRequest, FaultKind, ServiceName};
use immune_runtime::{config, tracing_init, BusConfig, Shutdown, Telemetry};

#[derive(Parser)]
#[command(
    version,
    about = "immune chaos: injects faults within guardrails and reverts them"
)]
struct Args {
    /// TOML config of the stage; defaults and environment only when absent.
    #[arg(long, env = "IMMUNE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Ask the chaos stage for a fault (over NATS, like any client).
    Inject {
        #[command(flatten)]
        nats: NatsArgs,
        /// The service (`immune.service` label) to break.
        #[arg(long)]
        service: String,
        /// crash, hang, kill, stop, pause, restart, network_disconnect, latency, errors,
        /// memory_leak, cpu_burn, attack
        #[arg(long)]
        fault: FaultKind,
        /// How long the fault lasts before chaos reverts it.
        #[arg(long = "for", default_value = "30s", value_parser = follow::parse_duration)]
        duration: Duration,
        /// Fault parameters, e.g. `--param latency_ms=800`.
        #[arg(long = "param", value_parser = parse_param)]
        params: Vec<(String, String)>,
        /// Print the run's audit trail until the incident is recovered or escalated.
        #[arg(long)]
        follow: bool,
        /// How long to follow.
        #[arg(long, default_value = "90s", value_parser = follow::parse_duration)]
        timeout: Duration,
    },
    /// Run an experiment file: steady state before, the method, rollbacks, steady state after.
    Run {
        #[command(flatten)]
        nats: NatsArgs,
        file: PathBuf,
    },
    /// Send the attack catalogue (SQL injection, XSS, path traversal, command injection,
    /// oversized headers and body) at a URL and report what was rejected and accepted.
    Attack {
        /// e.g. http://127.0.0.1:8080/
        #[arg(long)]
        url: String,
        /// Rounds of the whole catalogue.
        #[arg(long, default_value_t = 1)]
        rounds: u32,
    },
    /// Engage (`on`) or release (`off`) the global kill switch: while on, chaos refuses every
    /// request.
    KillSwitch {
        #[command(flatten)]
        nats: NatsArgs,
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
}

/// How a subcommand reaches NATS (as the `operator` user when the server requires a login).
#[derive(clap::Args)]
struct NatsArgs {
    #[arg(long, env = "IMMUNE_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// NATS user (the shipped server config has `operator` for the command line).
    #[arg(long, env = "IMMUNE_NATS_USER")]
    nats_user: Option<String>,
    #[arg(long, env = "IMMUNE_NATS_PASSWORD", hide_env_values = true)]
    nats_password: Option<String>,
    /// A NATS credentials file, instead of user and password.
    #[arg(long, env = "IMMUNE_NATS_CREDENTIALS")]
    nats_credentials: Option<PathBuf>,
}

impl NatsArgs {
    fn bus_config(self) -> BusConfig {
        BusConfig {
            user: self.nats_user,
            password: self.nats_password,
            credentials: self.nats_credentials,
            ..BusConfig::at(self.nats)
        }
    }
}

/// A run id unique enough for a person to follow: the time in milliseconds, in hex.
fn uuid_like() -> String {
    format!("{:x}", now_ms())
}

fn parse_param(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected key=value, got {text:?}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    tracing_init::init();
    let args = Args::parse();
    match args.command {
        None => {
            let config: immune_chaos::Config =
                config::load(immune_chaos::STAGE, args.config.as_deref())?;
            config.validate()?;
            immune_chaos::run(
                config,
                Telemetry::new(immune_chaos::STAGE),
                Shutdown::from_signals(),
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Run { nats, file }) => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let experiment = immune_chaos::experiment::Experiment::parse(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let bus = immune_runtime::Bus::connect_client(&nats.bus_config()).await?;
            let run_id = format!("experiment-{}", uuid_like());
            let started = now_ms();
            println!("chaos run {run_id}");
            let verdict = immune_chaos::experiment::run(&bus, &experiment, &run_id, |line| {
                let at = now_ms().saturating_sub(started) as f64 / 1000.0;
                println!("[+{at:6.2}s] {line}");
            })
            .await?;
            println!("experiment ended: {verdict:?}");
            Ok(if verdict == immune_chaos::experiment::Verdict::Held {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Some(Command::Attack { url, rounds }) => {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?;
            let mut report = immune_chaos::attack::AttackReport::default();
            for _ in 0..rounds {
                for payload in immune_chaos::attack::catalogue() {
                    let verdict = immune_chaos::attack::send(&client, &url, &payload).await;
                    println!("{:<18} {:<22} {verdict:?}", payload.class, payload.name);
                    report.record(&payload, verdict);
                }
            }
            println!("{report}");
            Ok(if report.total().accepted == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Some(Command::KillSwitch { nats, state }) => {
            let bus = immune_runtime::Bus::connect_client(&nats.bus_config()).await?;
            immune_chaos::set_kill_switch(&bus, state == "on").await?;
            println!("chaos kill switch {state}");
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Inject {
            nats,
            service,
            fault,
            duration,
            params,
            follow,
            timeout,
        }) => {
            let bus = immune_runtime::Bus::connect_client(&nats.bus_config()).await?;
            let mut follower = Follower::subscribe(bus.client()).await?;
            let request = ChaosRequest {
                run_id: None,
                service: ServiceName::new(service)?,
                fault,
                duration_ms: duration.as_millis() as u64,
                params: params.into_iter().collect::<BTreeMap<_, _>>(),
            };
            let started = now_ms();
            let run_id = follow::request(&bus, request).await?;
            println!("chaos run {run_id}: {fault} requested");
            if !follow {
                return Ok(ExitCode::SUCCESS);
            }
            let end = follower
                .until_end(&run_id, timeout, |envelope, record| {
                    let at = envelope.timestamp_ms.saturating_sub(started) as f64 / 1000.0;
                    println!(
                        "[+{at:6.2}s] {:<9} {:<22} {} — {}",
                        record.stage, record.what, record.outcome, record.why
                    );
                })
                .await;
            println!("run {run_id} ended: {end:?}");
            Ok(if end == RunEnd::Recovered {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
