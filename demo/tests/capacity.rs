//! The capacity of one demo service, measured: the load generator (in-process) steps its
//! rate against one demo container with the default limits (8 slots of 20 ms, queue 32:
//! about 400 req/s) and reads, per step, the p99 latency against 100 ms (straight off the
//! generator's 100 ms histogram bucket) and the share of 503s. Prints the table:
//!
//! `cargo test -p immune-demo --test capacity -- --nocapture`
//!
//! It asserts what the limits promise: at half the capacity no 503 and p99 under 100 ms;
//! at one and a half times the capacity, 503s.

mod common;

use std::time::Duration;

use common::{flat, sample, Loadgen};
use immune_testkit::{unique, DemoContainer, DemoSpec};

/// The base rate; each step is a spike of this times a multiplier.
const BASE: f64 = 50.0;
const STEPS: [f64; 10] = [
    100.0, 200.0, 300.0, 350.0, 365.0, 380.0, 400.0, 500.0, 600.0, 800.0,
];
const WARM: Duration = Duration::from_secs(1);
const MEASURE: Duration = Duration::from_secs(4);

#[derive(Debug, Clone, Copy)]
struct Step {
    rps: f64,
    sent: f64,
    ok: f64,
    shed: f64,
    /// Share of answered requests that took more than 100 ms.
    over_100ms: f64,
}

struct Snapshot {
    count: f64,
    within_100ms: f64,
    ok: f64,
    shed: f64,
}

async fn snapshot(loadgen: &Loadgen) -> Snapshot {
    let m = loadgen.metrics().await;
    Snapshot {
        count: sample(&m, "demo_loadgen_request_duration_seconds_count"),
        within_100ms: sample(
            &m,
            r#"demo_loadgen_request_duration_seconds_bucket{le="0.1"}"#,
        ),
        ok: sample(&m, r#"demo_loadgen_requests_total{status="200"}"#),
        shed: sample(&m, r#"demo_loadgen_requests_total{status="503"}"#),
    }
}

async fn step(loadgen: &Loadgen, rps: f64) -> Step {
    let http = common::client();
    let length = (WARM + MEASURE).as_millis() as u64 + 500;
    let response = http
        .post(format!("{}/load", loadgen.control))
        .json(&serde_json::json!({"multiplier": rps / BASE, "for_ms": length}))
        .send()
        .await
        .expect("POST /load");
    assert!(response.status().is_success(), "the spike is refused");
    tokio::time::sleep(WARM).await;
    let before = snapshot(loadgen).await;
    tokio::time::sleep(MEASURE).await;
    let after = snapshot(loadgen).await;
    let count = after.count - before.count;
    Step {
        rps,
        sent: count / MEASURE.as_secs_f64(),
        ok: (after.ok - before.ok) / MEASURE.as_secs_f64(),
        shed: (after.shed - before.shed) / count.max(1.0),
        over_100ms: 1.0 - (after.within_100ms - before.within_100ms) / count.max(1.0),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_service_serves_about_slots_over_work() {
    let demo = DemoContainer::start(DemoSpec::new("payments", &unique("demo-capacity"))).await;
    let ip = demo.address().await.expect("the container's address");
    let loadgen = Loadgen::start(&format!("http://{ip}:8080/"), flat(BASE), 2048).await;
    let mut steps = Vec::new();
    for rps in STEPS {
        steps.push(step(&loadgen, rps).await);
        // Let the queue empty between steps.
        let _ = common::client()
            .post(format!("{}/load", loadgen.control))
            .json(&serde_json::json!({"multiplier": 1.0, "for_ms": 0}))
            .send()
            .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    loadgen.stop().await;

    println!("one demo service, CAPACITY=8 WORK_MS=20 QUEUE=32 (slots/work = 400 req/s)");
    println!("target req/s | sent req/s | 200 req/s | 503 share | share > 100 ms | p99");
    for s in &steps {
        println!(
            "{:>12.0} | {:>10.0} | {:>9.0} | {:>8.1}% | {:>13.1}% | {}",
            s.rps,
            s.sent,
            s.ok,
            s.shed * 100.0,
            s.over_100ms * 100.0,
            if s.over_100ms > 0.01 {
                "> 100 ms"
            } else {
                "<= 100 ms"
            }
        );
    }
    let p99_passes = steps.iter().find(|s| s.over_100ms > 0.01).map(|s| s.rps);
    let shed_starts = steps.iter().find(|s| s.shed > 0.0).map(|s| s.rps);
    println!("p99 passes 100 ms at: {p99_passes:?} req/s; 503s start at: {shed_starts:?} req/s");

    let half = steps
        .iter()
        .find(|s| s.rps == 200.0)
        .expect("the 200 req/s step");
    assert_eq!(half.shed, 0.0, "no 503 at half the capacity: {half:?}");
    assert!(
        half.over_100ms <= 0.01,
        "p99 under 100 ms at half the capacity: {half:?}"
    );
    let over = steps
        .iter()
        .find(|s| s.rps == 600.0)
        .expect("the 600 req/s step");
    assert!(over.shed > 0.0, "503s at 1.5 times the capacity: {over:?}");
    assert!(
        over.ok < 480.0,
        "served no more than about the capacity (400 req/s): {over:?}"
    );
}
