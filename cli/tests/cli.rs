//! The `immune` binary as an operator runs it, against a real nats-server (and, for chaos, a
//! real chaos stage and a demo container on the real Docker engine): help and exit codes,
//! kill switches and maintenance windows in the buckets the stages read, approvals the
//! decider acts on, the audit trail with filters, chaos injections, and status.

use std::process::Output;
use std::time::{Duration, Instant};

use futures::StreamExt;
use immune_nats::streams::{CHAOS_CONTROL, DECIDER_CONTROL};
use immune_nats::{
    decode, samples, subject, ActionKind, Anomaly, AnomalyState, AuditRecord, Event, IncidentState,
    ServiceName, Signature, Stage,
};
use immune_runtime::{BusConfig, Telemetry};
use immune_testkit::{
    client_bus, unique, within, DemoContainer, DemoSpec, NatsServer, RunningStage,
};

const WAIT: Duration = Duration::from_secs(30);

/// Runs `immune` with `args` (after `--nats url` when given), bounded.
async fn immune(nats: Option<&str>, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_immune"));
    for var in [
        "IMMUNE_NATS_URL",
        "IMMUNE_NATS_USER",
        "IMMUNE_NATS_PASSWORD",
        "IMMUNE_NATS_CREDENTIALS",
        "IMMUNE_CLI_LOG",
    ] {
        command.env_remove(var);
    }
    if let Some(url) = nats {
        command.args(["--nats", url]);
    }
    // as in the image: the stages' log setting must not make the CLI log
    command.env("RUST_LOG", "info");
    command.args(args).kill_on_drop(true);
    within(
        Duration::from_secs(90),
        &format!("immune {} to finish", args.join(" ")),
        command.output(),
    )
    .await
    .expect("the immune binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts the exit code, showing what the command said when it differs.
fn expect_code(output: &Output, code: i32, what: &str) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "{what}: stdout:\n{}\nstderr:\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
}

fn name(s: &str) -> ServiceName {
    ServiceName::new(s).expect("valid name")
}

#[tokio::test]
async fn help_of_every_command_exits_0_and_documents_exit_codes() {
    let commands: &[&[&str]] = &[
        &[],
        &["status"],
        &["audit"],
        &["audit", "tail"],
        &["chaos"],
        &["chaos", "inject"],
        &["chaos", "run"],
        &["chaos", "attack"],
        &["kill-switch"],
        &["maintenance"],
        &["maintenance", "add"],
        &["maintenance", "list"],
        &["maintenance", "remove"],
        &["approve"],
        &["replay"],
    ];
    for command in commands {
        let mut args = command.to_vec();
        args.push("--help");
        let output = immune(None, &args).await;
        expect_code(&output, 0, &format!("{args:?}"));
        let help = text(&output.stdout);
        assert!(help.contains("Usage: immune"), "{args:?}: {help}");
        let leaf = !matches!(*command, [] | ["audit"] | ["chaos"] | ["maintenance"]);
        if leaf {
            assert!(help.contains("Exit codes: 0 ok"), "{args:?}: {help}");
        }
    }
}

#[tokio::test]
async fn usage_errors_exit_2() {
    for args in [
        &["status", "--no-such-flag"][..],
        &["chaos", "inject", "orders", "meteor"],
        &["kill-switch", "maybe"],
        &["maintenance", "add", "orders", "--for", "soon"],
        &["audit", "tail", "--stage", "janitor"],
        &["frobnicate"],
    ] {
        let output = immune(None, args).await;
        expect_code(&output, 2, &format!("{args:?}"));
        assert!(
            !text(&output.stderr).trim().is_empty(),
            "{args:?}: no message"
        );
    }
    // caught after parsing, still before connecting: a bad service name
    let output = immune(
        Some("nats://127.0.0.1:9"),
        &["maintenance", "add", "bad.name", "--for", "1h"],
    )
    .await;
    expect_code(&output, 2, "an invalid service name");
    assert!(text(&output.stderr).contains("service"));
}

#[tokio::test]
async fn unreachable_nats_exits_3_fast_with_one_clear_line() {
    // a port nothing listens on: bound then released
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let started = Instant::now();
    let output = immune(Some(&url), &["status"]).await;
    let took = started.elapsed();
    expect_code(&output, 3, "status against a closed port");
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with("immune: error: cannot reach NATS at nats://127.0.0.1:"),
        "{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    // generous for a busy machine: the default connect timeout is 5 s, refusal is at once
    assert!(took < Duration::from_secs(15), "took {took:?}");
}

#[tokio::test]
async fn the_kill_switch_lands_in_both_buckets_and_shows_in_status() {
    let nats = NatsServer::start().await;
    let url = nats.url();
    let output = immune(Some(&url), &["kill-switch", "on", "--reason", "test"]).await;
    expect_code(&output, 0, "kill-switch on");
    assert!(text(&output.stdout).contains("healing and chaos kill switch on"));

    let output = immune(Some(&url), &["status", "--json"]).await;
    expect_code(&output, 0, "status --json");
    let status: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("status --json is one JSON object");
    assert_eq!(status["controls"]["healing_kill_switch"], true, "{status}");
    assert_eq!(status["controls"]["chaos_kill_switch"], true, "{status}");

    let bus = client_bus(&url).await;
    let decider = bus.bucket(DECIDER_CONTROL).await.expect("decider bucket");
    let value = decider
        .get(immune_decider::safety::KILL_SWITCH_KEY)
        .await
        .expect("read")
        .expect("the decider's kill switch is set");
    let mut controls = immune_decider::safety::Controls::default();
    controls
        .apply(immune_decider::safety::KILL_SWITCH_KEY, Some(&text(&value)))
        .expect("the decider reads the value");
    assert!(controls.kill_switch);
    let chaos = bus.bucket(CHAOS_CONTROL).await.expect("chaos bucket");
    assert!(immune_chaos::kill_switch(&chaos).await.expect("read"));

    // one switch only
    let output = immune(Some(&url), &["kill-switch", "off", "--chaos"]).await;
    expect_code(&output, 0, "kill-switch off --chaos");
    let output = immune(Some(&url), &["kill-switch", "status", "--json"]).await;
    expect_code(&output, 0, "kill-switch status");
    let state: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(state, serde_json::json!({"healing": true, "chaos": false}));
    assert!(!immune_chaos::kill_switch(&chaos).await.expect("read"));

    // the change is on the audit trail, with who and why
    let output = immune(
        Some(&url),
        &[
            "audit",
            "tail",
            "--stage",
            "client",
            "--json",
            "--no-follow",
        ],
    )
    .await;
    expect_code(&output, 0, "audit tail of the client stage");
    let lines = text(&output.stdout);
    assert!(
        lines.contains("\"what\":\"kill_switch.engaged\"") && lines.contains("test"),
        "{lines}"
    );
}

#[tokio::test]
async fn maintenance_windows_round_trip() {
    let nats = NatsServer::start().await;
    let url = nats.url();
    let output = immune(
        Some(&url),
        &[
            "maintenance",
            "add",
            "orders",
            "--for",
            "1h",
            "--reason",
            "deploy",
        ],
    )
    .await;
    expect_code(&output, 0, "maintenance add");

    let output = immune(Some(&url), &["maintenance", "list", "--json"]).await;
    expect_code(&output, 0, "maintenance list --json");
    let windows: Vec<serde_json::Value> = text(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(windows.len(), 1, "{windows:?}");
    assert_eq!(windows[0]["service"], "orders");
    assert_eq!(windows[0]["state"], "active");
    let from = windows[0]["from_ms"].as_u64().expect("from");
    let until = windows[0]["until_ms"].as_u64().expect("until");
    assert_eq!(until - from, 3_600_000);

    // the decider reads the same window from its bucket
    let bus = client_bus(&url).await;
    let decider = bus.bucket(DECIDER_CONTROL).await.expect("decider bucket");
    let value = decider
        .get("maintenance.orders")
        .await
        .expect("read")
        .expect("the window is in the decider's bucket");
    let mut controls = immune_decider::safety::Controls::default();
    controls
        .apply("maintenance.orders", Some(&text(&value)))
        .expect("the decider accepts it");
    assert_eq!(
        controls.in_maintenance(&name("orders"), from + 1),
        Some(until)
    );

    let output = immune(Some(&url), &["maintenance", "list"]).await;
    assert!(text(&output.stdout).contains("orders"), "{output:?}");

    let output = immune(Some(&url), &["maintenance", "remove", "orders"]).await;
    expect_code(&output, 0, "maintenance remove");
    let output = immune(Some(&url), &["maintenance", "list"]).await;
    expect_code(&output, 0, "maintenance list");
    assert!(text(&output.stdout).contains("no maintenance windows"));
    assert!(decider
        .get("maintenance.orders")
        .await
        .expect("read")
        .is_none());
    let output = immune(Some(&url), &["maintenance", "remove", "orders"]).await;
    expect_code(&output, 1, "removing a window that is not there");
}

fn audit(stage: Stage, service: &str, what: &str) -> Event {
    Event::Audit(AuditRecord {
        stage,
        service: name(service),
        what: what.into(),
        why: format!("{what} because the test says so"),
        outcome: "done".into(),
        about: None,
        action_id: None,
    })
}

#[tokio::test]
async fn audit_tail_shows_stored_records_with_the_filters_applied() {
    let nats = NatsServer::start().await;
    let url = nats.url();
    let bus = client_bus(&url).await;
    for (stage, service, what) in [
        (Stage::Decider, "orders", "incident.opened"),
        (Stage::Decider, "payments", "incident.opened"),
        (Stage::Executor, "orders", "action.succeeded"),
        (Stage::Chaos, "payments", "chaos.injected"),
    ] {
        bus.publish(Some("run-7".into()), audit(stage, service, what))
            .await
            .expect("publish audit record");
    }
    let tail = |args: &'static [&'static str]| {
        let url = url.clone();
        async move {
            let mut all = vec!["audit", "tail", "--json", "--no-follow"];
            all.extend_from_slice(args);
            let output = immune(Some(&url), &all).await;
            expect_code(&output, 0, &format!("{all:?}"));
            text(&output.stdout)
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON line"))
                .map(|v| {
                    format!(
                        "{}/{}/{}",
                        v["stage"].as_str().unwrap_or("?"),
                        v["service"].as_str().unwrap_or("?"),
                        v["what"].as_str().unwrap_or("?")
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(tail(&[]).await.len(), 4);
    assert_eq!(
        tail(&["--service", "orders"]).await,
        [
            "decider/orders/incident.opened",
            "executor/orders/action.succeeded"
        ]
    );
    assert_eq!(
        tail(&["--stage", "decider"]).await,
        [
            "decider/orders/incident.opened",
            "decider/payments/incident.opened"
        ]
    );
    assert_eq!(
        tail(&["--stage", "chaos", "--service", "payments"]).await,
        ["chaos/payments/chaos.injected"]
    );
    assert!(tail(&["--stage", "executor", "--service", "payments"])
        .await
        .is_empty());

    // the human form: one line per record with stage, service, what, outcome, why, run
    let output = immune(
        Some(&url),
        &["audit", "tail", "--no-follow", "--service", "payments"],
    )
    .await;
    expect_code(&output, 0, "audit tail (human)");
    let human = text(&output.stdout);
    assert_eq!(human.lines().count(), 2, "{human}");
    assert!(human
        .lines()
        .all(|l| l.contains("payments") && l.ends_with("[run-7]")));
    assert!(
        human.contains("chaos.injected because the test says so"),
        "{human}"
    );

    // a reader that goes away (`immune audit tail | head -1`) ends it quietly, no panic
    let mut closed = tokio::process::Command::new(env!("CARGO_BIN_EXE_immune"))
        .args(["--nats", &url, "audit", "tail", "--no-follow"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("immune audit tail runs");
    drop(closed.stdout.take());
    let output = within(
        WAIT,
        "audit tail into a closed pipe",
        closed.wait_with_output(),
    )
    .await
    .expect("waits");
    expect_code(&output, 0, "audit tail into a closed pipe");
    assert!(!text(&output.stderr).contains("panicked"), "{output:?}");

    // following: a record published after the tail started shows up
    let mut follower = tokio::process::Command::new(env!("CARGO_BIN_EXE_immune"))
        .args([
            "--nats",
            &url,
            "audit",
            "tail",
            "--json",
            "--service",
            "late",
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("immune audit tail runs");
    let stdout = follower.stdout.take().expect("stdout");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    tokio::time::sleep(Duration::from_millis(500)).await;
    bus.publish(None, audit(Stage::Detector, "late", "anomaly.firing"))
        .await
        .expect("publish");
    let line = within(WAIT, "the followed record", lines.next_line())
        .await
        .expect("read")
        .expect("a line");
    assert!(line.contains("\"what\":\"anomaly.firing\""), "{line}");
    follower.kill().await.expect("stop the tail");
}

#[tokio::test]
async fn status_shows_the_latest_snapshot_of_each_service_and_open_incidents() {
    let nats = NatsServer::start().await;
    let url = nats.url();
    let output = immune(Some(&url), &["status"]).await;
    expect_code(&output, 0, "status of an empty bus");
    assert!(text(&output.stdout).contains("services: none seen"));

    let bus = client_bus(&url).await;
    let now = immune_nats::envelope::now_ms();
    for (service, rate) in [("orders", 5.0), ("payments", 7.0), ("orders", 42.0)] {
        let mut snapshot = samples::metric_snapshot();
        snapshot.service = name(service);
        snapshot.instance = format!("{service}-1");
        snapshot.observed_ms = now;
        snapshot
            .features
            .insert(immune_nats::feature::REQUEST_RATE.into(), rate);
        bus.publish(None, Event::MetricSnapshot(snapshot))
            .await
            .expect("publish snapshot");
    }
    let mut incident = samples::incident();
    incident.service = name("payments");
    incident.state = IncidentState::Acting;
    bus.publish(None, Event::Incident(incident.clone()))
        .await
        .expect("publish incident");
    let mut closed = samples::incident();
    closed.service = name("orders");
    closed.state = IncidentState::Closed;
    bus.publish(None, Event::Incident(closed))
        .await
        .expect("publish incident");

    let output = immune(Some(&url), &["status", "--json"]).await;
    expect_code(&output, 0, "status --json");
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let services = status["services"].as_array().expect("services");
    assert_eq!(services.len(), 2, "{status}");
    assert_eq!(services[0]["service"], "orders");
    assert_eq!(
        services[0]["request_rate"], 42.0,
        "the latest snapshot wins"
    );
    assert_eq!(services[0]["healthy"], true);
    assert_eq!(services[1]["service"], "payments");
    let incidents = status["incidents"].as_array().expect("incidents");
    assert_eq!(incidents.len(), 1, "only the open one: {status}");
    assert_eq!(incidents[0]["service"], "payments");
    assert_eq!(incidents[0]["state"], "acting");

    let output = immune(Some(&url), &["status"]).await;
    expect_code(&output, 0, "status");
    let table = text(&output.stdout);
    assert!(
        table.contains("SERVICE") && table.contains("orders-1"),
        "{table}"
    );
    assert!(table.contains("42.0"), "{table}");
    assert!(table.contains(&incident.incident_id), "{table}");
}

fn firing(service: &str) -> Anomaly {
    Anomaly {
        service: name(service),
        instance: format!("{service}-1"),
        container_id: format!("container-{service}"),
        state: AnomalyState::Firing,
        signature: Signature::Crashed,
        ..samples::anomaly()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_answers_the_held_action_and_the_decider_acts_on_it() {
    let nats = NatsServer::start().await;
    let url = nats.url();
    let bus = client_bus(&url).await;
    let mut seen = bus.client().subscribe("immune.>").await.expect("subscribe");

    // a real decider whose only step for a crash is risky enough to need an approval
    let dir = tempfile::tempdir().expect("temp dir");
    let playbook = dir.path().join("playbook.toml");
    std::fs::write(&playbook, "[[crashed]]\naction = \"rollback\"\nrisk = 5\n").expect("write");
    let mut config = immune_decider::Config::default();
    config.nats.url = url.clone();
    config.policy.playbook_file = Some(playbook);
    config.validate().expect("valid test config");
    let decider = RunningStage::start("the decider", Telemetry::new(Stage::Decider), |t, s| {
        immune_decider::run(config, t, s)
    })
    .stop_within(WAIT, "");

    // an unknown action is refused before anything is published
    let output = immune(Some(&url), &["approve", "no-such-action"]).await;
    expect_code(&output, 1, "approving an action nobody holds");
    assert!(text(&output.stderr).contains("no held action no-such-action"));

    bus.publish(None, Event::Anomaly(firing("orders")))
        .await
        .expect("publish anomaly");
    let action_id = within(WAIT, "the decider to hold the rollback", async {
        loop {
            let m = seen.next().await.expect("subscription open");
            if let Ok(e) = decode(&m.payload) {
                if let Event::Audit(a) = &e.body {
                    if a.what == "action.held" {
                        let id = a.outcome.split("approve action_id ").nth(1);
                        return id
                            .and_then(|s| s.split(' ').next())
                            .expect("the held action id in the record")
                            .to_string();
                    }
                }
            }
        }
    })
    .await;

    let output = immune(Some(&url), &["approve", &action_id, "--by", "oncall"]).await;
    expect_code(&output, 0, "approve");
    assert!(
        text(&output.stdout).starts_with(&format!("approved {action_id}")),
        "{output:?}"
    );
    // on the bus: the approval on the decider's subject, then the action it allowed
    let (mut approval, mut action) = (None, None);
    within(WAIT, "the approval and the approved action", async {
        while approval.is_none() || action.is_none() {
            let m = seen.next().await.expect("subscription open");
            let Ok(e) = decode(&m.payload) else { continue };
            match e.body {
                Event::Approval(a) => {
                    assert_eq!(m.subject.as_str(), "immune.approvals.orders");
                    approval = Some(a);
                }
                Event::ActionRequest(r) => action = Some(r),
                _ => {}
            }
        }
    })
    .await;
    let approval = approval.expect("approval");
    assert_eq!(approval.action_id, action_id);
    assert!(approval.approved);
    assert_eq!(approval.by, "oncall");
    assert!(!approval.incident_id.is_empty(), "the open incident's id");
    let action = action.expect("action");
    assert_eq!(action.action, ActionKind::Rollback);
    assert_eq!(action.action_id, action_id);

    decider.stop().await;

    // nobody to acknowledge: published all the same, then exit 3 after the wait
    let mut approvals = bus
        .client()
        .subscribe(subject::APPROVALS_ALL)
        .await
        .expect("subscribe");
    let output = immune(
        Some(&url),
        &[
            "approve",
            "later-id",
            "--reject",
            "--service",
            "payments",
            "--wait",
            "2s",
        ],
    )
    .await;
    expect_code(&output, 3, "no decider to acknowledge");
    assert!(text(&output.stderr).contains("did not acknowledge"));
    let m = within(WAIT, "the rejection on the bus", approvals.next())
        .await
        .expect("a message");
    let Event::Approval(rejection) = decode(&m.payload).expect("decodes").body else {
        panic!("not an approval");
    };
    assert_eq!(rejection.action_id, "later-id");
    assert!(!rejection.approved);
    assert_eq!(rejection.service.as_str(), "payments");
}

#[tokio::test]
async fn chaos_run_checks_the_file_then_the_steady_state() {
    let nats = NatsServer::start().await;
    let url = nats.url();
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "service = \"orders\"\nsurprise = 1\n").expect("write");
    let output = immune(Some(&url), &["chaos", "run", bad.to_str().expect("utf-8")]).await;
    expect_code(&output, 2, "an invalid experiment file");
    assert!(
        text(&output.stderr).contains("surprise"),
        "names the bad key"
    );

    // valid, but no snapshots come (no collector): not steady before, nothing injected
    let file = dir.path().join("quiet.toml");
    std::fs::write(
        &file,
        "title = \"quiet\"\nservice = \"orders\"\n[steady_state]\nwindow_ms = 1000\n\
         [[steady_state.probes]]\nfeature = \"health_ok\"\nmin = 1.0\n\
         [[method]]\nfault = \"kill\"\nduration_ms = 1000\n",
    )
    .expect("write");
    let bus = client_bus(&url).await;
    let mut requests = bus
        .client()
        .subscribe(subject::CHAOS_REQUESTS)
        .await
        .expect("subscribe");
    let output = immune(Some(&url), &["chaos", "run", file.to_str().expect("utf-8")]).await;
    expect_code(&output, 1, "an experiment without a steady state");
    assert!(
        text(&output.stdout).contains("not steady before the method"),
        "{output:?}"
    );
    assert!(
        text(&output.stderr).contains("checking the steady state of orders"),
        "progress lines on stderr: {output:?}"
    );
    let injected = tokio::time::timeout(Duration::from_millis(500), requests.next()).await;
    assert!(injected.is_err(), "no fault requested");
}

/// A chaos stage running in this test, stopped (and its faults reverted) on `stop`.
fn start_chaos(url: &str, project: &str) -> RunningStage<Telemetry> {
    let config = immune_chaos::Config {
        nats: BusConfig::at(url),
        project: Some(project.to_string()),
        ..Default::default()
    };
    RunningStage::start("the chaos stage", Telemetry::new(Stage::Chaos), |t, s| {
        immune_chaos::run(config, t, s)
    })
    .stop_within(WAIT, "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_inject_reports_the_injection_and_refusals() {
    let nats = NatsServer::start().await;
    let url = nats.url();
    let project = unique("cli");
    let service = unique("clisvc");
    let demo = DemoContainer::start(DemoSpec::new(&service, &project)).await;
    let chaos = start_chaos(&url, &project);
    let bus = client_bus(&url).await;
    let mut reverted = bus
        .client()
        .subscribe(subject::CHAOS_REVERTED_ALL)
        .await
        .expect("subscribe");

    let output = immune(
        Some(&url),
        &[
            "chaos",
            "inject",
            &service,
            "latency",
            "--for",
            "3s",
            "--param",
            "latency_ms=300",
        ],
    )
    .await;
    expect_code(&output, 0, "chaos inject latency");
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains(&format!("latency injected into {} ({service})", demo.name)),
        "{stdout}"
    );
    assert!(
        text(&output.stderr).contains("requested"),
        "progress on stderr"
    );
    // the fault was real: the demo's /admin or /health is slower now; the revert follows
    let ip = demo.address().await.expect("container address");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("http client");
    let started = Instant::now();
    let _ = http.get(format!("http://{ip}:8080/")).send().await;
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "a request took {:?} under a 300 ms latency fault",
        started.elapsed()
    );
    within(WAIT, "the latency fault to be reverted", reverted.next())
        .await
        .expect("reverted");

    // refused by a guardrail: a service with no chaos-enabled container
    let output = immune(Some(&url), &["chaos", "inject", "nosuchsvc", "crash"]).await;
    expect_code(&output, 1, "chaos inject against nothing");
    let stderr = text(&output.stderr);
    assert!(stderr.contains("refused"), "{stderr}");

    chaos.stop().await;
    // no chaos stage to answer: a timeout (exit 3)
    let output = immune(
        Some(&url),
        &[
            "chaos",
            "inject",
            &service,
            "crash",
            "--answer-within",
            "2s",
        ],
    )
    .await;
    expect_code(&output, 3, "chaos inject with no chaos stage");
    drop(demo);
}

/// Under the shipped NATS config, the CLI's `operator` user may do everything the CLI does,
/// and a stage's user may not set the controls.
#[tokio::test]
async fn every_control_command_works_as_the_operator_under_the_shipped_permissions() {
    let nats = NatsServer::start_secured().await;
    let url = nats.url();
    let password = nats.password("operator");
    let as_operator = |args: &[&str]| {
        let mut all = vec!["--nats-user", "operator", "--nats-password", &password];
        all.extend_from_slice(args);
        all.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    for args in [
        &["kill-switch", "on", "--reason", "drill"][..],
        &["kill-switch", "status", "--json"],
        &["maintenance", "add", "orders", "--for", "1h"],
        &["maintenance", "list", "--json"],
        &["maintenance", "remove", "orders"],
        &["kill-switch", "off"],
        &["status", "--json"],
        &["audit", "tail", "--no-follow", "--json"],
    ] {
        let args = as_operator(args);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = immune(Some(&url), &refs).await;
        expect_code(
            &output,
            0,
            &format!("as operator: immune {}", args[4..].join(" ")),
        );
    }
    let output = immune(
        Some(&url),
        &as_operator(&["audit", "tail", "--no-follow"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
    .await;
    assert!(
        text(&output.stdout).contains("kill_switch.engaged"),
        "the operator's change is on the audit trail: {}",
        text(&output.stdout)
    );

    let collector = nats.password("collector");
    let output = immune(
        Some(&url),
        &[
            "--nats-user",
            "collector",
            "--nats-password",
            &collector,
            "kill-switch",
            "on",
        ],
    )
    .await;
    assert_ne!(
        output.status.code(),
        Some(0),
        "a stage's user must not set the kill switch: {}",
        text(&output.stdout)
    );
}
