//! The collector against synthetic targets on loopback and a real nats-server: good targets
//! are scraped every interval while bad ones (malformed, truncated, huge, hanging, vanished)
//! each give a scrape-error snapshot and a counter, never a crash and never a delay for the
//! others; replicas of one service are rolled up under it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use immune_collector::{Config, StaticTarget, STAGE};
use immune_nats::{decode, feature, Event, MetricSnapshot, SnapshotScope};
use immune_runtime::{BusConfig, Telemetry};
use immune_testkit::synthetic::{Behaviour, SyntheticTarget};
use immune_testkit::{within, NatsServer, RunningStage};

fn target(service: &str, instance: &str, t: &SyntheticTarget) -> StaticTarget {
    StaticTarget {
        service: service.into(),
        instance: Some(instance.into()),
        address: t.address.to_string(),
        metrics_path: "/metrics".into(),
        health_path: "/health".into(),
    }
}

/// The collector running as a task of the test, stopped within 5 s.
fn start_collector(config: Config) -> RunningStage<Telemetry> {
    RunningStage::start(
        "the collector",
        Telemetry::new(STAGE),
        |telemetry, shutdown| immune_collector::run(config, telemetry, shutdown),
    )
    .stop_within(Duration::from_secs(5), "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_targets_give_errors_and_delay_nobody() {
    let nats = NatsServer::start().await;
    let good_a = SyntheticTarget::start(Behaviour::Healthy { series: 1000 })
        .await
        .expect("a");
    let good_b = SyntheticTarget::start(Behaviour::Healthy { series: 500 })
        .await
        .expect("b");
    let malformed = SyntheticTarget::start(Behaviour::Text(
        "http_requests_total{status=\"200\"} 5\nhttp_requests_total{status=\"500\" 1\n".into(),
    ))
    .await
    .expect("malformed");
    let truncated = SyntheticTarget::start(Behaviour::Truncated)
        .await
        .expect("truncated");
    let huge = SyntheticTarget::start(Behaviour::Huge { bytes: 300_000 })
        .await
        .expect("huge");
    let hang = SyntheticTarget::start(Behaviour::Hang).await.expect("hang");
    let vanishing = SyntheticTarget::start(Behaviour::Healthy { series: 400 })
        .await
        .expect("v");

    let config = Config {
        nats: BusConfig {
            url: nats.url(),
            ..Default::default()
        },
        discover_docker: false,
        interval_ms: 500,
        probe_timeout_ms: 300,
        scrape_timeout_ms: 300,
        max_exposition_bytes: 256 * 1024,
        targets: vec![
            target("shop", "shop-1", &good_a),
            target("shop", "shop-2", &good_b),
            target("broken", "malformed", &malformed),
            target("broken", "truncated", &truncated),
            target("broken", "huge", &huge),
            target("broken", "hang", &hang),
            target("gone", "vanishing", &vanishing),
        ],
        ..Default::default()
    };
    config.validate().expect("valid config");
    let client = nats.client().await;
    let mut metrics = client
        .subscribe("immune.metrics.>")
        .await
        .expect("subscribe");
    let collector = start_collector(config);
    let telemetry = collector.telemetry.clone();

    // Phase 1: everything as started, for 3 s; then the vanishing target goes, 2 s more.
    let mut seen: HashMap<String, Vec<(Instant, MetricSnapshot)>> = HashMap::new();
    let started = Instant::now();
    let mut vanished = false;
    within(
        Duration::from_secs(20),
        "snapshots from the collector",
        async {
            while started.elapsed() < Duration::from_secs(5) {
                if !vanished && started.elapsed() > Duration::from_secs(3) {
                    vanishing.vanish();
                    vanished = true;
                }
                let Ok(Some(m)) =
                    tokio::time::timeout(Duration::from_millis(200), metrics.next()).await
                else {
                    continue;
                };
                let Ok(envelope) = decode(&m.payload) else {
                    panic!("the collector published an undecodable message");
                };
                if let Event::MetricSnapshot(s) = envelope.body {
                    seen.entry(s.instance.clone())
                        .or_default()
                        .push((Instant::now(), s));
                }
            }
        },
    )
    .await;
    collector.stop().await;

    // Good targets: scraped every interval, never held up by the hanging one.
    for instance in ["shop-1", "shop-2"] {
        let snaps = &seen[instance];
        assert!(
            snaps.len() >= 8,
            "{instance}: {} snapshots in 5 s at 500 ms",
            snaps.len()
        );
        assert!(snaps
            .iter()
            .all(|(_, s)| s.scrape.as_ref().is_some_and(|o| o.ok)));
        let worst_gap = snaps
            .windows(2)
            .map(|w| w[1].0 - w[0].0)
            .max()
            .expect("gaps");
        assert!(
            worst_gap < Duration::from_millis(900),
            "{instance}: gap {worst_gap:?}"
        );
        let last = &snaps.last().expect("last").1;
        assert!(
            last.features.contains_key(feature::REQUEST_RATE),
            "{last:?}"
        );
        assert!(last.features[feature::ERROR_RATIO] > 0.0);
    }
    assert_eq!(
        seen["shop-1"][0].1.scrape.as_ref().map(|o| o.samples),
        Some(1000)
    );

    // Each bad target: a scrape-error snapshot saying why.
    let error_of = |instance: &str| -> String {
        seen[instance]
            .iter()
            .rev()
            .find_map(|(_, s)| s.scrape.as_ref().and_then(|o| o.error.clone()))
            .unwrap_or_else(|| panic!("{instance}: no scrape error reported"))
    };
    assert!(
        error_of("malformed").contains("bad labels at line 2"),
        "{}",
        error_of("malformed")
    );
    assert!(
        error_of("truncated").contains("truncated"),
        "{}",
        error_of("truncated")
    );
    assert!(
        error_of("huge").contains("larger than 262144 bytes"),
        "{}",
        error_of("huge")
    );
    assert!(
        error_of("hang").contains("no exposition within"),
        "{}",
        error_of("hang")
    );
    assert!(seen["hang"]
        .iter()
        .all(|(_, s)| s.health.as_ref().is_some_and(|h| !h.ok)));
    assert!(
        seen["vanishing"]
            .iter()
            .any(|(_, s)| s.scrape.as_ref().is_some_and(|o| o.ok)),
        "scraped before it vanished"
    );
    assert!(
        error_of("vanishing").contains("error"),
        "{}",
        error_of("vanishing")
    );

    // Counted, each under its own kind.
    for kind in [
        "scrape_malformed",
        "scrape_too_large",
        "scrape_timeout",
        "scrape_unreachable",
    ] {
        assert!(telemetry.count("failed", kind) >= 1, "{kind} not counted");
    }
    assert!(
        telemetry.count("failed", "scrape_malformed") >= 4,
        "malformed and truncated"
    );

    // Replicas roll up under their service.
    let rollup = seen["*"]
        .iter()
        .map(|(_, s)| s)
        .rfind(|s| s.service.as_str() == "shop" && s.scope == SnapshotScope::Service)
        .expect("a roll-up of shop");
    assert_eq!(rollup.replicas.map(|r| (r.total, r.healthy)), Some((2, 2)));
    let rate = |i: &str| seen[i].last().expect("last").1.features[feature::REQUEST_RATE];
    let sum = rate("shop-1") + rate("shop-2");
    assert!(
        (rollup.features[feature::REQUEST_RATE] - sum).abs() <= sum * 0.5,
        "roll-up {} vs sum {sum}",
        rollup.features[feature::REQUEST_RATE]
    );
}
