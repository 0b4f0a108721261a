//! `immune`: the operator's command line (see the crate docs of `immune_cli`). This file only
//! reads the command line, connects, calls the library and turns the outcome into output and
//! an exit code: results on stdout, progress and errors on stderr.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Args, Parser, Subcommand, ValueEnum};
use immune_chaos::experiment::Verdict;
use immune_chaos::follow::{parse_duration, RunEnd};
use immune_cli::controls::{self, Switches};
use immune_cli::{
    approve, audit, chaos, exit, replay, rfc3339, service_name, status, CliError, EXIT_CODES_HELP,
};
use immune_nats::envelope::now_ms;
use immune_nats::{AuditCode, FaultKind, Stage};
use immune_runtime::BusConfig;

#[derive(Parser)]
#[command(
    name = "immune",
    version,
    about = "immune: the operator's command line for the self-healing platform",
    long_about = "immune: the operator's command line for the self-healing platform. It talks \
only to NATS: status, the audit trail, chaos, kill switches, maintenance windows, approvals \
and replays. Results go to stdout (JSON lines with --json), progress and errors to stderr; \
IMMUNE_CLI_LOG=debug (a RUST_LOG-style filter) adds logs on stderr.",
    after_help = EXIT_CODES_HELP,
    propagate_version = true
)]
struct Cli {
    #[command(flatten)]
    nats: NatsArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct NatsArgs {
    /// NATS URL.
    #[arg(
        long,
        global = true,
        env = "IMMUNE_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    nats: String,
    /// NATS user (user/password authentication).
    #[arg(long, global = true, env = "IMMUNE_NATS_USER")]
    nats_user: Option<String>,
    /// NATS password.
    #[arg(
        long,
        global = true,
        env = "IMMUNE_NATS_PASSWORD",
        hide_env_values = true
    )]
    nats_password: Option<String>,
    /// NATS credentials file (user JWT and seed).
    #[arg(long, global = true, env = "IMMUNE_NATS_CREDENTIALS")]
    nats_credentials: Option<PathBuf>,
    /// How long to wait for NATS, and for reading what a stream keeps.
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration)]
    connect_timeout: Duration,
}

impl NatsArgs {
    fn bus_config(&self) -> BusConfig {
        BusConfig {
            url: self.nats.clone(),
            user: self.nats_user.clone(),
            password: self.nats_password.clone(),
            credentials: self.nats_credentials.clone(),
            ..Default::default()
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Services (last snapshot of each), open incidents, kill switches and maintenance windows.
    #[command(after_help = EXIT_CODES_HELP)]
    Status {
        /// One JSON object instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// The audit trail: what every stage did, why, and how it ended.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Break things on purpose, within the chaos stage's guardrails.
    #[command(subcommand)]
    Chaos(ChaosCommand),
    /// Stop (on) or allow (off) all healing actions and all fault injection; `status` shows both.
    #[command(after_help = format!(
        "Without --healing or --chaos both switches are set. The healing switch (decider) stops \
every repair action; the chaos switch reverts every fault in force and refuses new ones.\n\n{EXIT_CODES_HELP}"
    ))]
    KillSwitch {
        state: SwitchState,
        /// Only the decider's switch (healing actions).
        #[arg(long)]
        healing: bool,
        /// Only the chaos stage's switch (fault injection).
        #[arg(long)]
        chaos: bool,
        /// Why, for the audit trail.
        #[arg(long, default_value = "")]
        reason: String,
        /// Who, for the audit trail (default: $USER).
        #[arg(long)]
        by: Option<String>,
        /// `status` as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Maintenance windows: no healing action on a service inside its window.
    #[command(subcommand)]
    Maintenance(MaintenanceCommand),
    /// Approve (or reject) an action the decider holds for approval, and wait for its word.
    #[command(after_help = format!(
        "The action id is in the decider's `action.held` audit record (immune audit tail --stage \
decider). Exit 0 once the decider acknowledged the answer; 1 when no such held action is \
found; 3 when the decider did not acknowledge in time.\n\n{EXIT_CODES_HELP}"
    ))]
    Approve {
        action_id: String,
        /// Refuse the action instead: the decider tries its next step.
        #[arg(long)]
        reject: bool,
        /// Who answers, for the audit trail (default: $USER).
        #[arg(long)]
        by: Option<String>,
        /// The service, when the held record is not in the audit trail any more.
        #[arg(long)]
        service: Option<String>,
        /// The incident id, when known better than the decider's records say.
        #[arg(long)]
        incident: Option<String>,
        /// How long to wait for the decider's acknowledgement.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        wait: Duration,
        /// How far back to look for the held action.
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        search: Duration,
    },
    /// Re-score stored metrics with a detector configuration; publishes nothing.
    #[command(after_help = EXIT_CODES_HELP)]
    Replay {
        /// Detector TOML config (defaults and IMMUNE_DETECTOR__* when absent).
        #[arg(long)]
        config: Option<PathBuf>,
        /// First stream sequence (default: the oldest kept).
        #[arg(long)]
        from_seq: Option<u64>,
        /// Last stream sequence (default: the newest now).
        #[arg(long)]
        to_seq: Option<u64>,
        /// Only this service's snapshots.
        #[arg(long)]
        service: Option<String>,
        /// Findings as JSON lines.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SwitchState {
    On,
    Off,
    Status,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Show audit records (stored ones from --since, then new ones unless --no-follow).
    #[command(after_help = EXIT_CODES_HELP)]
    Tail {
        /// Only this service's records.
        #[arg(long)]
        service: Option<String>,
        /// Only this stage's records: collector, detector, decider, executor, chaos, client.
        #[arg(long, value_parser = audit::parse_stage)]
        stage: Option<Stage>,
        /// How far back to start (e.g. 90s, 10m, 2h).
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        since: Duration,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Keep showing new records until interrupted (the default).
        #[arg(long, overrides_with = "no_follow")]
        follow: bool,
        /// Show what is stored and exit.
        #[arg(long)]
        no_follow: bool,
    },
}

#[derive(Subcommand)]
enum ChaosCommand {
    /// Ask the chaos stage for a fault and report its answer.
    #[command(after_help = format!(
        "Faults: crash, hang, kill, stop, pause, restart, network_disconnect, latency, errors, \
memory_leak, cpu_burn, attack. With --follow, exit 0 when the incident it caused recovered, 1 \
when it escalated, 3 when the run did not end in time.\n\n{EXIT_CODES_HELP}"
    ))]
    Inject {
        /// The service (`immune.service` label) to break.
        service: String,
        /// The fault.
        fault: FaultKind,
        /// How long the fault lasts before chaos reverts it.
        #[arg(long = "for", default_value = "30s", value_parser = parse_duration)]
        duration: Duration,
        /// A fault parameter, e.g. `--param latency_ms=800` (repeatable).
        #[arg(long = "param", value_parser = immune_cli::parse_param)]
        params: Vec<(String, String)>,
        /// Follow the run's audit trail until its incident is recovered or escalated.
        #[arg(long)]
        follow: bool,
        /// How long to follow (`--timeout` too, as the old `immune-chaos inject` had it).
        #[arg(long, alias = "timeout", default_value = "90s", value_parser = parse_duration)]
        follow_for: Duration,
        /// How long to wait for the chaos stage's answer.
        #[arg(long, default_value = "15s", value_parser = parse_duration)]
        answer_within: Duration,
    },
    /// Run an experiment file: steady state, method, rollbacks, steady state again.
    #[command(after_help = format!(
        "Exit 0 when the steady state held; 1 when it was not there before, the method was \
aborted, or it did not come back; 2 for an invalid file.\n\n{EXIT_CODES_HELP}"
    ))]
    Run {
        /// The experiment (see chaos/experiments/).
        file: PathBuf,
    },
    /// Send the attack catalogue at a URL and report what was rejected and accepted.
    #[command(after_help = format!("Exit 1 when any payload was accepted.\n\n{EXIT_CODES_HELP}"))]
    Attack {
        /// e.g. http://127.0.0.1:8080/
        #[arg(long)]
        url: String,
        /// Rounds of the whole catalogue.
        #[arg(long, default_value_t = 1)]
        rounds: u32,
    },
}

#[derive(Subcommand)]
enum MaintenanceCommand {
    /// Open a maintenance window for a service (replaces its earlier one).
    #[command(after_help = EXIT_CODES_HELP)]
    Add {
        service: String,
        /// How long the window lasts.
        #[arg(long = "for", value_parser = parse_duration)]
        duration: Duration,
        /// Start later than now.
        #[arg(long, default_value = "0s", value_parser = parse_duration)]
        starts_in: Duration,
        /// Why, for the audit trail.
        #[arg(long, default_value = "")]
        reason: String,
        /// Who, for the audit trail (default: $USER).
        #[arg(long)]
        by: Option<String>,
    },
    /// The maintenance windows (scheduled and active; --all shows expired ones too).
    #[command(after_help = EXIT_CODES_HELP)]
    List {
        /// One JSON object per window per line.
        #[arg(long)]
        json: bool,
        #[arg(long)]
        all: bool,
    },
    /// Close a service's maintenance window (exit 1 when it had none).
    #[command(after_help = EXIT_CODES_HELP)]
    Remove {
        service: String,
        /// Who, for the audit trail (default: $USER).
        #[arg(long)]
        by: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs only when asked with IMMUNE_CLI_LOG (a RUST_LOG-style filter), never RUST_LOG: the
    // image sets that for the stages, and the CLI's stderr is for progress and errors.
    if let Ok(filter) = std::env::var("IMMUNE_CLI_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("immune: error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("immune: error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Writes one result to stdout. A reader that went away (`immune audit tail | head`) ends
/// the command quietly, as it would end any Unix filter, instead of a panic.
fn emit(text: impl std::fmt::Display) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{text}").and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(i32::from(exit::OK));
        }
        eprintln!("immune: error: cannot write to stdout: {e}");
        std::process::exit(i32::from(exit::FAILED));
    }
}

fn progress(line: &str) {
    eprintln!("{line}");
}

fn json_line(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

async fn dispatch(cli: Cli) -> Result<u8, CliError> {
    let config = cli.nats.bus_config();
    let limit = cli.nats.connect_timeout;
    // Check what can be checked before connecting: a usage error should not wait for NATS.
    match cli.command {
        Command::Status { json } => {
            let bus = immune_cli::connect(&config, limit).await?;
            let status = status::gather(&bus, now_ms(), limit).await?;
            if json {
                emit(json_line(&status));
            } else {
                emit(status::render(&status).trim_end());
            }
            Ok(exit::OK)
        }
        Command::Audit(AuditCommand::Tail {
            service,
            stage,
            since,
            json,
            follow: _,
            no_follow,
        }) => {
            let filter = audit::Filter {
                service: service.as_deref().map(service_name).transpose()?,
                stage,
            };
            let bus = immune_cli::connect(&config, limit).await?;
            let start = SystemTime::now()
                .checked_sub(since)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let show = |line: &audit::Line| {
                if json {
                    emit(audit::json(line));
                } else {
                    emit(audit::human(line));
                }
            };
            let tailing = audit::tail(&bus, &filter, Some(start), !no_follow, limit, show);
            let tailed = tokio::select! {
                t = tailing => t?,
                _ = tokio::signal::ctrl_c() => return Ok(exit::OK),
            };
            if tailed.undecodable > 0 {
                progress(&format!(
                    "{} stored record(s) could not be decoded and were skipped",
                    tailed.undecodable
                ));
            }
            Ok(exit::OK)
        }
        Command::Chaos(command) => chaos_command(command, &config, limit).await,
        Command::KillSwitch {
            state,
            healing,
            chaos,
            reason,
            by,
            json,
        } => {
            let bus = immune_cli::connect(&config, limit).await?;
            let switches = Switches::chosen(healing, chaos);
            match state {
                SwitchState::Status => {
                    let c = controls::read(&bus, now_ms()).await?;
                    if json {
                        emit(serde_json::json!({
                            "healing": c.healing_kill_switch,
                            "chaos": c.chaos_kill_switch,
                        }));
                    } else {
                        let word = |b: bool| if b { "on" } else { "off" };
                        emit(format!(
                            "healing kill switch: {}",
                            word(c.healing_kill_switch)
                        ));
                        emit(format!("chaos kill switch: {}", word(c.chaos_kill_switch)));
                    }
                }
                SwitchState::On | SwitchState::Off => {
                    let on = state == SwitchState::On;
                    controls::set_kill_switch(&bus, switches, on).await?;
                    let who = controls::operator(by);
                    let word = if on { "on" } else { "off" };
                    controls::audit_change(
                        &bus,
                        &controls::all_services(),
                        if on {
                            AuditCode::KillSwitchEngaged
                        } else {
                            AuditCode::KillSwitchReleased
                        },
                        format!("{who}: {reason}")
                            .trim_end_matches([':', ' '])
                            .to_string(),
                        format!("{} kill switch {word}", switches.describe()),
                    )
                    .await;
                    emit(format!("{} kill switch {word}", switches.describe()));
                }
            }
            Ok(exit::OK)
        }
        Command::Maintenance(command) => maintenance_command(command, &config, limit).await,
        Command::Approve {
            action_id,
            reject,
            by,
            service,
            incident,
            wait,
            search,
        } => {
            let answer = approve::Answer {
                action_id,
                approved: !reject,
                by: controls::operator(by),
                service: service.as_deref().map(service_name).transpose()?,
                incident_id: incident,
                search,
                wait,
            };
            let bus = immune_cli::connect(&config, limit).await?;
            match approve::answer(&bus, &answer, limit, progress).await? {
                approve::Acknowledged::Granted(l) if answer.approved => {
                    emit(format!(
                        "approved {}: {} — {}",
                        answer.action_id, l.outcome, l.why
                    ));
                    Ok(exit::OK)
                }
                approve::Acknowledged::Denied(l) if !answer.approved => {
                    emit(format!(
                        "rejected {}: {} — {}",
                        answer.action_id, l.outcome, l.why
                    ));
                    Ok(exit::OK)
                }
                other => Err(CliError::Failed(format!(
                    "the decider answered otherwise than asked: {other:?}"
                ))),
            }
        }
        Command::Replay {
            config: detector_config,
            from_seq,
            to_seq,
            service,
            json,
        } => {
            let service = service.as_deref().map(service_name).transpose()?;
            let detector = replay::detector_config(detector_config.as_deref())?;
            let bus = immune_cli::connect(&config, limit).await?;
            progress("replaying the metrics stream (publishes nothing)");
            let report = replay::run(&bus, &detector, from_seq, to_seq, service).await?;
            for finding in &report.findings {
                if json {
                    emit(json_line(&replay::FindingLine {
                        correlation_id: &finding.correlation_id,
                        anomaly: &finding.anomaly,
                    }));
                } else {
                    emit(immune_detector::replay::describe(finding));
                }
            }
            progress(&replay::summary(&report));
            Ok(exit::OK)
        }
    }
}

async fn chaos_command(
    command: ChaosCommand,
    config: &BusConfig,
    limit: Duration,
) -> Result<u8, CliError> {
    match command {
        ChaosCommand::Inject {
            service,
            fault,
            duration,
            params,
            follow,
            follow_for,
            answer_within,
        } => {
            let inject = chaos::Inject {
                service: service_name(&service)?,
                fault,
                duration,
                params: params.into_iter().collect::<BTreeMap<_, _>>(),
                answer_within,
                follow: follow.then_some(follow_for),
            };
            let bus = immune_cli::connect(config, limit).await?;
            let done = chaos::inject(&bus, &inject, progress).await?;
            emit(format!(
                "chaos run {}: {} injected into {} ({}) until {}",
                done.run_id,
                done.injected.fault,
                done.injected.instance,
                done.injected.service,
                rfc3339(done.injected.revert_at_ms)
            ));
            match done.end {
                None => Ok(exit::OK),
                Some(end) => {
                    emit(format!("chaos run {} ended: {}", done.run_id, run_end(end)));
                    match end {
                        RunEnd::Recovered => Ok(exit::OK),
                        RunEnd::Escalated | RunEnd::Rejected => Ok(exit::FAILED),
                        RunEnd::TimedOut => Err(CliError::TimedOut(format!(
                            "chaos run {}: no recovery or escalation within {}",
                            done.run_id,
                            immune_cli::span(follow_for.as_millis() as u64)
                        ))),
                    }
                }
            }
        }
        ChaosCommand::Run { file } => {
            let experiment = chaos::read_experiment(&file)?;
            let bus = immune_cli::connect(config, limit).await?;
            let run_id = format!("experiment-{:x}", now_ms());
            progress(&format!("chaos run {run_id}: {}", experiment.title));
            let verdict = chaos::run_experiment(&bus, &experiment, &run_id, progress).await?;
            let (code, text) = match &verdict {
                Verdict::Held => (exit::OK, "held".to_string()),
                Verdict::NotSteadyBefore(why) => {
                    (exit::FAILED, format!("not steady before the method: {why}"))
                }
                Verdict::Aborted { step, reason } => {
                    (exit::FAILED, format!("aborted at step {step}: {reason}"))
                }
                Verdict::Deviated(why) => (exit::FAILED, format!("steady state not back: {why}")),
            };
            emit(format!("experiment {run_id}: {text}"));
            Ok(code)
        }
        ChaosCommand::Attack { url, rounds } => {
            let report = chaos::attack(&url, rounds, |payload, verdict| {
                emit(format!(
                    "{:<18} {:<22} {verdict:?}",
                    payload.class, payload.name
                ));
            })
            .await?;
            emit(&report);
            Ok(if report.total().accepted == 0 {
                exit::OK
            } else {
                exit::FAILED
            })
        }
    }
}

fn run_end(end: RunEnd) -> &'static str {
    match end {
        RunEnd::Recovered => "recovered",
        RunEnd::Escalated => "escalated",
        RunEnd::Rejected => "rejected",
        RunEnd::TimedOut => "timed out",
    }
}

async fn maintenance_command(
    command: MaintenanceCommand,
    config: &BusConfig,
    limit: Duration,
) -> Result<u8, CliError> {
    match command {
        MaintenanceCommand::Add {
            service,
            duration,
            starts_in,
            reason,
            by,
        } => {
            let service = service_name(&service)?;
            if duration.is_zero() {
                return Err(CliError::Usage("--for must be longer than 0".into()));
            }
            let bus = immune_cli::connect(config, limit).await?;
            let from = now_ms() + starts_in.as_millis() as u64;
            let until = from + duration.as_millis() as u64;
            controls::add_window(&bus, &service, from, until).await?;
            let who = controls::operator(by);
            let window = format!("{}..{}", rfc3339(from), rfc3339(until));
            controls::audit_change(
                &bus,
                &service,
                AuditCode::MaintenanceAdded,
                format!("{who}: {reason}")
                    .trim_end_matches([':', ' '])
                    .to_string(),
                format!("no healing action on {service} {window}"),
            )
            .await;
            emit(format!("maintenance window of {service}: {window}"));
            Ok(exit::OK)
        }
        MaintenanceCommand::List { json, all } => {
            let bus = immune_cli::connect(config, limit).await?;
            let c = controls::read(&bus, now_ms()).await?;
            let shown = c
                .maintenance
                .iter()
                .filter(|w| all || w.state != controls::WindowState::Expired);
            let mut rows = vec![["SERVICE", "STATE", "FROM", "UNTIL"]
                .map(String::from)
                .to_vec()];
            for w in shown {
                if json {
                    emit(json_line(w));
                } else {
                    rows.push(vec![
                        w.service.clone(),
                        json_line(&w.state).trim_matches('"').to_string(),
                        rfc3339(w.from_ms),
                        rfc3339(w.until_ms),
                    ]);
                }
            }
            if !json {
                if rows.len() == 1 {
                    emit("no maintenance windows");
                } else {
                    emit(status::table(&rows).trim_end());
                }
            }
            for why in &c.unreadable {
                progress(&format!("unreadable control: {why}"));
            }
            Ok(exit::OK)
        }
        MaintenanceCommand::Remove { service, by } => {
            let service = service_name(&service)?;
            let bus = immune_cli::connect(config, limit).await?;
            if !controls::remove_window(&bus, &service).await? {
                return Err(CliError::Failed(format!(
                    "{service} has no maintenance window"
                )));
            }
            let who = controls::operator(by);
            controls::audit_change(
                &bus,
                &service,
                AuditCode::MaintenanceRemoved,
                who,
                format!("healing actions on {service} allowed again"),
            )
            .await;
            emit(format!("maintenance window of {service} removed"));
            Ok(exit::OK)
        }
    }
}
