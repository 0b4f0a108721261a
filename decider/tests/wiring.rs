//! The decider stage wired to a real nats-server: anomalies and results in; action
//! requests, incidents, escalations (and the webhook), audit records and learned values out;
//! the kill switch flipped in the control bucket while it runs.

use std::time::Duration;

use futures::StreamExt;
use immune_nats::streams::{DECIDER_CONTROL, DECIDER_VALUES};
use immune_nats::{
    decode, samples, ActionKind, ActionOutcome, ActionRequest, ActionResult, Anomaly, AnomalyState,
    Approval, Envelope, Event, IncidentState, ServiceName, Signature, Stage,
};
use immune_runtime::Telemetry;
use immune_testkit::{client_bus, within, NatsServer, RunningStage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(15);

/// The decider running as a task of the test.
fn start_decider(config: immune_decider::Config) -> RunningStage<Telemetry> {
    RunningStage::start(
        "the decider",
        Telemetry::new(Stage::Decider),
        |telemetry, shutdown| immune_decider::run(config, telemetry, shutdown),
    )
    .stop_within(WAIT, "")
}

/// The anomaly of `service` (one per service: its firing and its clearing share the id).
fn anomaly(service: &str, state: AnomalyState) -> Anomaly {
    Anomaly {
        anomaly_id: format!("anomaly-{service}"),
        service: ServiceName::new(service).expect("name"),
        instance: format!("{service}-1"),
        container_id: format!("container-{service}"),
        state,
        signature: Signature::Crashed,
        ..samples::anomaly()
    }
}

fn result_of(request: &ActionRequest, outcome: ActionOutcome) -> ActionResult {
    ActionResult {
        action_id: request.action_id.clone(),
        incident_id: request.incident_id.clone(),
        service: request.service.clone(),
        instance: request.instance.clone(),
        action: request.action,
        outcome,
        error: (outcome != ActionOutcome::Succeeded).then(|| "test says no".to_string()),
        duration_ms: 5,
        finished_ms: 0,
        replaced_by: None,
    }
}

/// The next envelope on `sub` that `pick` accepts.
async fn next<T>(
    sub: &mut async_nats::Subscriber,
    what: &str,
    mut pick: impl FnMut(&Envelope) -> Option<T>,
) -> T {
    within(WAIT, what, async {
        loop {
            let m = sub.next().await.expect("subscription open");
            if let Ok(envelope) = decode(&m.payload) {
                if let Some(t) = pick(&envelope) {
                    return t;
                }
            }
        }
    })
    .await
}

fn action_for(service: &str) -> impl FnMut(&Envelope) -> Option<ActionRequest> + '_ {
    move |e| match &e.body {
        Event::ActionRequest(a) if a.service.as_str() == service => Some(a.clone()),
        _ => None,
    }
}

fn audit(what: &'static str) -> impl FnMut(&Envelope) -> Option<String> {
    move |e| match &e.body {
        Event::Audit(a) if a.what == what => Some(format!("{} | {}", a.why, a.outcome)),
        _ => None,
    }
}

/// A one-shot HTTP endpoint: returns the request it gets (head and body).
async fn webhook() -> (String, tokio::task::JoinHandle<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.expect("webhook called");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = conn.read(&mut chunk).await.expect("read");
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if body.len() >= len || n == 0 {
                    conn.write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                        .await
                        .expect("answer");
                    return format!("{head}\r\n\r\n{body}");
                }
            }
        }
    });
    (url, task)
}

#[tokio::test(flavor = "multi_thread")]
async fn decides_over_a_real_nats_server_and_obeys_the_kill_switch_at_run_time() {
    let nats = NatsServer::start().await;
    let bus = client_bus(&nats.url()).await;
    let mut sub = bus.client().subscribe("immune.>").await.expect("subscribe");
    let (hook_url, hook) = webhook().await;

    let mut config = immune_decider::Config::default();
    config.nats.url = nats.url();
    config.policy.cooldown_ms = 0;
    config.policy.escalation_webhook = Some(hook_url);
    config.validate().expect("valid test config");
    let decider = start_decider(config);

    // 1. a crash: one restart, verification, recovery
    bus.publish(
        Some("run-1".into()),
        Event::Anomaly(anomaly("orders", AnomalyState::Firing)),
    )
    .await
    .expect("publish");
    // the audit record goes out before the request it explains
    let why = next(
        &mut sub,
        "the audit of the request",
        audit("action.requested"),
    )
    .await;
    assert!(why.contains("candidates [restart risk 2"), "{why}");
    let restart = next(
        &mut sub,
        "a restart request for orders",
        action_for("orders"),
    )
    .await;
    assert_eq!(restart.action.as_str(), "restart");
    bus.publish(
        None,
        Event::ActionResult(result_of(&restart, ActionOutcome::Succeeded)),
    )
    .await
    .expect("publish");
    bus.publish(
        None,
        Event::Anomaly(anomaly("orders", AnomalyState::Cleared)),
    )
    .await
    .expect("publish");
    next(&mut sub, "the incident to close", |e| match &e.body {
        Event::Incident(i) if i.state == IncidentState::Closed => Some(()),
        _ => None,
    })
    .await;

    // 2. the kill switch, flipped in the bucket while the decider runs
    let controls = bus.bucket(DECIDER_CONTROL).await.expect("control bucket");
    controls
        .put("kill_switch", "on".into())
        .await
        .expect("put kill switch");
    let changed = next(&mut sub, "the control change", audit("control.changed")).await;
    assert!(changed.contains("kill switch on"), "{changed}");
    bus.publish(
        None,
        Event::Anomaly(anomaly("payments", AnomalyState::Firing)),
    )
    .await
    .expect("publish");
    let blocked = next(&mut sub, "the blocked action", audit("action.blocked")).await;
    assert!(blocked.contains("kill switch is on"), "{blocked}");
    let early = tokio::time::timeout(
        Duration::from_secs(1),
        next(&mut sub, "-", action_for("payments")),
    )
    .await;
    assert!(early.is_err(), "no action while the kill switch is on");
    controls
        .put("kill_switch", "off".into())
        .await
        .expect("put kill switch");
    let first = next(
        &mut sub,
        "the action once the switch is off",
        action_for("payments"),
    )
    .await;

    // 3. every step fails: escalation with the story, on the subject and the webhook
    bus.publish(
        None,
        Event::ActionResult(result_of(&first, ActionOutcome::Failed)),
    )
    .await
    .expect("publish");
    let second = next(&mut sub, "the next step", action_for("payments")).await;
    assert_eq!(second.action.as_str(), "recreate");
    bus.publish(
        None,
        Event::ActionResult(result_of(&second, ActionOutcome::Failed)),
    )
    .await
    .expect("publish");
    let escalation = next(&mut sub, "the escalation", |e| match &e.body {
        Event::Escalation(x) => Some(x.clone()),
        _ => None,
    })
    .await;
    assert_eq!(escalation.actions.len(), 2);
    assert!(escalation.actions.iter().all(|a| a.outcome == "failed"));
    let posted = within(WAIT, "the escalation webhook", hook)
        .await
        .expect("webhook task");
    assert!(posted.starts_with("POST /hook"), "{posted}");
    assert!(posted.contains(&escalation.incident_id), "{posted}");

    // 4. what was learned is in the values bucket
    let values = bus.bucket(DECIDER_VALUES).await.expect("values bucket");
    let restart_value = within(WAIT, "the learned value of restart", async {
        loop {
            if let Ok(Some(v)) = values.get("crashed.restart").await {
                return String::from_utf8_lossy(&v)
                    .parse::<f64>()
                    .expect("a number");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // one recovery (+) then one failure (-): below the recovery's value
    assert!(restart_value < 0.3, "{restart_value}");

    // 5. a bad control value is refused, the decider goes on
    controls
        .put("kill_switch", "perhaps".into())
        .await
        .expect("put");
    let refused = next(&mut sub, "the refused control", audit("control.rejected")).await;
    assert!(refused.contains("expected on or off"), "{refused}");

    decider.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_risky_step_waits_for_an_approval_sent_over_the_bus() {
    let nats = NatsServer::start().await;
    let bus = client_bus(&nats.url()).await;
    let mut sub = bus.client().subscribe("immune.>").await.expect("subscribe");
    let dir = tempfile::tempdir().expect("temp dir");
    let playbook = dir.path().join("playbook.toml");
    std::fs::write(&playbook, "[[crashed]]\naction = \"rollback\"\nrisk = 5\n").expect("write");

    let mut config = immune_decider::Config::default();
    config.nats.url = nats.url();
    config.policy.playbook_file = Some(playbook);
    config.validate().expect("valid test config");
    let decider = start_decider(config);

    bus.publish(
        None,
        Event::Anomaly(anomaly("orders", AnomalyState::Firing)),
    )
    .await
    .expect("publish");
    let held = next(&mut sub, "the held rollback", audit("action.held")).await;
    let action_id = held
        .split("approve action_id ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .expect("the held action id in the audit record")
        .to_string();
    let early = tokio::time::timeout(
        Duration::from_secs(1),
        next(&mut sub, "-", action_for("orders")),
    )
    .await;
    assert!(early.is_err(), "no rollback before the approval");
    bus.publish(
        None,
        Event::Approval(Approval {
            service: ServiceName::new("orders").expect("name"),
            incident_id: String::new(),
            action_id: action_id.clone(),
            approved: true,
            by: "oncall".into(),
        }),
    )
    .await
    .expect("publish approval");
    let rollback = next(&mut sub, "the approved rollback", action_for("orders")).await;
    assert_eq!(rollback.action, ActionKind::Rollback);
    assert_eq!(rollback.action_id, action_id);

    decider.stop().await;
}
