//! The console's HTTP side against a real nats-server: the chaos endpoint publishes a real
//! `ChaosRequest` (and refuses bad ones with a reason and a counter), events published on
//! the bus show up in `/api/state` and on `/events` (snapshot, then deltas), garbage on a
//! watched subject is counted and skipped, and shutdown ends open `/events` streams. A
//! console started later reads the recent past from the streams.

mod support;

use std::time::Duration;

use futures::StreamExt;
use immune_nats::{
    decode, subject, AuditCode, AuditRecord, Event, FaultKind, Incident, IncidentState,
    ServiceName, Signature, Stage,
};
use immune_runtime::Audit;
use immune_testkit::{within, NatsServer};
use support::{http, start_console};

fn incident(state: IncidentState) -> Event {
    Event::Incident(Incident {
        incident_id: "inc-api-1".into(),
        service: ServiceName::new("payments").expect("name"),
        state,
        signature: Signature::Unresponsive,
        chaos_run: None,
        opened_ms: 1,
        timeline: Vec::new(),
    })
}

/// Reads server-sent events from a streaming response until `done` says enough.
async fn read_events(
    response: &mut reqwest::Response,
    buffer: &mut String,
    mut done: impl FnMut(&str, &serde_json::Value) -> bool,
) {
    loop {
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let mut name = "message";
            let mut data = String::new();
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event:") {
                    name = n.trim();
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                }
            }
            if data.is_empty() {
                continue;
            }
            let value: serde_json::Value =
                serde_json::from_str(&data).expect("every /events message is JSON");
            if done(name, &value) {
                return;
            }
        }
        let chunk = response
            .chunk()
            .await
            .expect("the /events stream reads")
            .expect("the /events stream stays open");
        buffer.push_str(std::str::from_utf8(&chunk).expect("utf-8 events"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_requests_state_and_live_events_over_a_real_bus() {
    let nats = NatsServer::start().await;
    let console = start_console(&nats.url()).await;
    let client = http();
    let bus = immune_testkit::client_bus(&nats.url()).await;
    let mut requests = bus
        .client()
        .subscribe(subject::CHAOS_REQUESTS)
        .await
        .expect("subscribe to chaos requests");
    bus.client().flush().await.expect("flush");

    // A chaos button's request reaches the bus as a ChaosRequest under its run id.
    let response = client
        .post(console.url("/api/chaos"))
        .json(
            &serde_json::json!({"service": "orders", "fault": "latency", "duration_ms": 5000,
                                  "params": {"latency_ms": "300"}}),
        )
        .send()
        .await
        .expect("POST /api/chaos");
    assert_eq!(response.status(), 202, "a valid chaos request is accepted");
    let accepted: serde_json::Value = response.json().await.expect("JSON answer");
    let run_id = accepted["run_id"].as_str().expect("run id").to_string();
    let published = within(
        Duration::from_secs(10),
        "the ChaosRequest the console published",
        requests.next(),
    )
    .await
    .expect("subscription open");
    let envelope = decode(&published.payload).expect("a decodable envelope");
    assert_eq!(envelope.correlation_id.as_deref(), Some(run_id.as_str()));
    let Event::ChaosRequest(request) = envelope.body else {
        panic!("not a chaos request: {:?}", envelope.body);
    };
    assert_eq!(request.fault, FaultKind::Latency);
    assert_eq!(request.service.as_str(), "orders");
    assert_eq!(request.duration_ms, 5000);
    assert_eq!(request.run_id.as_deref(), Some(run_id.as_str()));
    assert_eq!(
        request.params.get("latency_ms").map(String::as_str),
        Some("300")
    );

    // Bad requests are refused with the field named, counted, and never published.
    for (body, field) in [
        (
            serde_json::json!({"service": "orders", "fault": "meteor"}),
            "fault",
        ),
        (
            serde_json::json!({"service": "a b", "fault": "crash"}),
            "service",
        ),
        (
            serde_json::json!({"service": "orders", "fault": "crash", "duration_ms": 0}),
            "duration_ms",
        ),
        (
            serde_json::json!({"service": "orders", "fault": "crash", "colour": 1}),
            "colour",
        ),
    ] {
        let response = client
            .post(console.url("/api/chaos"))
            .json(&body)
            .send()
            .await
            .expect("POST /api/chaos");
        let status = response.status();
        let text = response.text().await.expect("body");
        assert!(status.is_client_error(), "{body} answered {status}: {text}");
        assert!(
            text.contains(field),
            "{body}: the reason names {field}: {text}"
        );
    }
    let not_json = client
        .post(console.url("/api/chaos"))
        .body("service=orders&fault=crash")
        .header("content-type", "application/x-www-form-urlencoded")
        .send()
        .await
        .expect("POST form");
    assert_eq!(not_json.status(), 415, "only JSON is taken");
    assert_eq!(console.telemetry.count("chaos_refused", ""), 5);
    assert_eq!(console.telemetry.count("chaos_requested", "latency"), 1);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), requests.next())
            .await
            .is_err(),
        "a refused request must not reach the bus"
    );

    // A page connects: a snapshot first, then the deltas of what is published after.
    let mut events = client
        .get(console.url("/events"))
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .expect("GET /events");
    assert_eq!(
        events
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let mut buffer = String::new();
    within(Duration::from_secs(10), "the snapshot on /events", async {
        read_events(&mut events, &mut buffer, |name, value| {
            assert_eq!(name, "snapshot", "the first message is the snapshot");
            assert!(value["incidents"].is_array(), "{value}");
            true
        })
        .await
    })
    .await;

    bus.publish(Some("corr-api-1".into()), incident(IncidentState::Opened))
        .await
        .expect("publish incident");
    within(
        Duration::from_secs(10),
        "the incident delta on /events",
        async {
            read_events(&mut events, &mut buffer, |name, value| {
                name == "delta"
                    && value["type"] == "incident"
                    && value["key"] == "corr-api-1"
                    && value["status"] == "open"
            })
            .await
        },
    )
    .await;

    // Latency from a publish on the bus to its delta on /events (figures printed, not
    // asserted: the machine is shared).
    let mut took = Vec::new();
    for n in 0..50 {
        let what = format!("latency.probe{n}");
        let sent = std::time::Instant::now();
        bus.publish(
            Some("corr-latency".into()),
            Event::Audit(AuditRecord {
                stage: Stage::Client,
                service: ServiceName::new("payments").expect("name"),
                what: what.clone(),
                why: "probe".into(),
                outcome: "ok".into(),
                about: None,
                action_id: None,
            }),
        )
        .await
        .expect("publish audit");
        within(
            Duration::from_secs(10),
            "an audit delta on /events",
            async {
                read_events(&mut events, &mut buffer, |name, value| {
                    name == "delta" && value["type"] == "audit" && value["what"] == what.as_str()
                })
                .await
            },
        )
        .await;
        took.push(sent.elapsed());
    }
    took.sort();
    println!(
        "bus publish -> /events delta over {} audit records: p50 {:?}, p95 {:?}, max {:?}",
        took.len(),
        took[took.len() / 2],
        took[took.len() * 95 / 100],
        took[took.len() - 1]
    );

    // Garbage on a watched subject is counted and skipped; the console keeps going.
    bus.client()
        .publish("immune.incidents.payments", "not msgpack".into())
        .await
        .expect("publish garbage");
    bus.publish(
        Some("corr-api-1".into()),
        incident(IncidentState::Recovered),
    )
    .await
    .expect("publish incident");
    within(
        Duration::from_secs(10),
        "the recovered delta after the garbage",
        async {
            read_events(&mut events, &mut buffer, |name, value| {
                name == "delta" && value["key"] == "corr-api-1" && value["status"] == "recovered"
            })
            .await
        },
    )
    .await;
    assert_eq!(
        console.telemetry.count("undecodable", "malformed"),
        1,
        "the garbage is counted"
    );
    let metrics = client
        .get(console.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    assert!(
        metrics
            .contains(r#"immune_console_events_total{event="undecodable",detail="malformed"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("immune_console_pages 1"), "{metrics}");

    // The state as JSON holds the story.
    let state: serde_json::Value = client
        .get(console.url("/api/state"))
        .send()
        .await
        .expect("GET /api/state")
        .json()
        .await
        .expect("state JSON");
    let story = state["incidents"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["key"] == "corr-api-1"))
        .unwrap_or_else(|| panic!("incident corr-api-1 in {state}"));
    assert_eq!(story["status"], "recovered");
    assert_eq!(
        story["timeline"].as_array().map(Vec::len),
        Some(2),
        "{story}"
    );

    // The page is served, self-contained.
    let page = client
        .get(console.url("/"))
        .send()
        .await
        .expect("GET /")
        .text()
        .await
        .expect("page");
    assert!(
        page.contains("new EventSource(\"/events\")"),
        "the page reads /events"
    );
    assert!(
        !page.contains("http://") && !page.contains("https://") && !page.contains("src="),
        "the page fetches nothing from elsewhere"
    );

    // Shutdown ends the open /events stream instead of waiting for it.
    console.stop().await;
    drop(events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_started_later_shows_the_recent_past() {
    let nats = NatsServer::start().await;
    let bus = immune_testkit::client_bus(&nats.url()).await;
    bus.publish(Some("corr-past".into()), incident(IncidentState::Opened))
        .await
        .expect("publish incident");
    bus.publish(Some("corr-past".into()), incident(IncidentState::Escalated))
        .await
        .expect("publish incident");
    bus.audit(
        Some("corr-past".into()),
        Audit::new(
            &ServiceName::new("payments").expect("name"),
            AuditCode::IncidentEscalated,
            "playbook exhausted",
            "escalated",
        ),
    )
    .await
    .expect("publish audit");

    let console = start_console(&nats.url()).await;
    let client = http();
    let state = within(
        Duration::from_secs(20),
        "the replayed incident and audit record in /api/state",
        async {
            loop {
                let state: serde_json::Value = client
                    .get(console.url("/api/state"))
                    .send()
                    .await
                    .expect("GET /api/state")
                    .json()
                    .await
                    .expect("state JSON");
                let has_incident = state["incidents"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|i| i["key"] == "corr-past"));
                let has_audit = state["audit"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|l| l["what"] == "incident.escalated"));
                if has_incident && has_audit {
                    return state;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        },
    )
    .await;
    let story = state["incidents"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["key"] == "corr-past"))
        .expect("incident");
    assert_eq!(story["status"], "escalated");
    assert_eq!(
        story["timeline"].as_array().map(Vec::len),
        Some(2),
        "each event once: {story}"
    );
    assert_eq!(console.telemetry.count("replayed", ""), 1);
    assert_eq!(console.telemetry.count("replay_failed", ""), 0);
    console.stop().await;
}
