//! The load generator against a real HTTP server on loopback: it keeps its rate, never has
//! more than its bound in flight, and takes spikes on its control endpoint.

mod common;

use std::future::IntoFuture;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use common::{client, flat, sample, Loadgen};
use immune_demo::loadgen::LoadState;
use immune_testkit::within;

/// A loopback server counting the requests it gets; `hang` never answers them.
async fn target(hang: bool) -> (String, Arc<AtomicU64>) {
    let count = Arc::new(AtomicU64::new(0));
    let counted = count.clone();
    let app = Router::new().route(
        "/",
        get(move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                if hang {
                    std::future::pending::<()>().await;
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let address = listener.local_addr().expect("its address");
    tokio::spawn(axum::serve(listener, app).into_future());
    (format!("http://{address}/"), count)
}

#[tokio::test(flavor = "multi_thread")]
async fn keeps_its_rate_and_stops_cleanly() {
    let (url, count) = target(false).await;
    let loadgen = Loadgen::start(&url, flat(50.0), 64).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let metrics = loadgen.metrics().await;
    loadgen.stop().await;
    let sent = count.load(Ordering::SeqCst);
    // 50 a second for 3 s; a tick of slack either side.
    assert!(
        (135..=165).contains(&sent),
        "sent {sent} in 3 s at 50 req/s"
    );
    assert_eq!(sample(&metrics, "demo_loadgen_target_rps"), 50.0);
    assert!(sample(&metrics, r#"demo_loadgen_requests_total{status="200"}"#) >= 130.0);
    assert_eq!(
        sample(&metrics, r#"demo_loadgen_requests_total{status="skipped"}"#),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn never_more_than_its_bound_in_flight() {
    let (url, count) = target(true).await;
    let loadgen = Loadgen::start(&url, flat(100.0), 5).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let metrics = loadgen.metrics().await;
    assert_eq!(
        count.load(Ordering::SeqCst),
        5,
        "the target got only the bound"
    );
    assert_eq!(sample(&metrics, "demo_loadgen_in_flight_requests"), 5.0);
    let skipped = sample(&metrics, r#"demo_loadgen_requests_total{status="skipped"}"#);
    assert!(
        skipped >= 80.0,
        "the rest is skipped, not queued: {skipped}"
    );
    // The hung requests time out (2 s), so the stop is bounded.
    loadgen.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spike_multiplies_the_rate_for_its_length() {
    let (url, count) = target(false).await;
    let loadgen = Loadgen::start(&url, flat(20.0), 64).await;
    let http = client();
    let before: LoadState = http
        .get(format!("{}/load", loadgen.control))
        .send()
        .await
        .expect("GET /load")
        .json()
        .await
        .expect("a load state");
    assert_eq!(before.target_rps, 20.0);
    assert_eq!(before.multiplier, 1.0);

    let refused = http
        .post(format!("{}/load", loadgen.control))
        .json(&serde_json::json!({"multiplier": -2.0, "for_ms": 1000}))
        .send()
        .await
        .expect("POST /load");
    assert_eq!(refused.status(), 400);
    assert!(refused
        .text()
        .await
        .unwrap_or_default()
        .starts_with("multiplier -2"));

    let spiked: LoadState = http
        .post(format!("{}/load", loadgen.control))
        .json(&serde_json::json!({"multiplier": 5.0, "for_ms": 2000}))
        .send()
        .await
        .expect("POST /load")
        .json()
        .await
        .expect("a load state");
    assert_eq!(spiked.target_rps, 100.0);
    let at_spike = count.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let in_spike = count.load(Ordering::SeqCst) - at_spike;
    assert!(
        (85..=115).contains(&in_spike),
        "{in_spike} in a second at 100 req/s"
    );
    within(Duration::from_secs(3), "the 2 s spike to end", async {
        loop {
            let state: LoadState = http
                .get(format!("{}/load", loadgen.control))
                .send()
                .await
                .expect("GET /load")
                .json()
                .await
                .expect("a load state");
            if state.target_rps == 20.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    loadgen.stop().await;
}
