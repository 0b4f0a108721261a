//! The security loop over the real things: chaos sends its attack catalogue at a demo
//! container, the demo refuses and counts each payload, the collector reads the rejection rate,
//! and the detector opens an `attack_burst` anomaly under the chaos run's correlation id;
//! the decider has the demo block the sources its screen keeps refusing, and the anomaly
//! clears while the attack still runs (its requests now answered 403 unread), healed by
//! immune before chaos reverts the fault.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use immune_chaos::follow;
use immune_nats::{
    decode, ActionKind, AnomalyState, ChaosRequest, Event, FaultKind, ServiceName, Signature,
};
use immune_testkit::{unique, within, DemoContainer, DemoSpec, NatsServer};
use immune_tests::{Pipeline, PipelineConfig};

/// Long enough that a clearing within the test's 40 s wait is immune's, not the revert's.
const ATTACK_MS: u64 = 60_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_attack_is_detected_and_healed_by_blocking_its_sources() {
    let nats = NatsServer::start().await;
    let project = unique("attack");
    let demo = DemoContainer::start(DemoSpec::new("storefront", &project)).await;
    let pipeline = Pipeline::start(PipelineConfig::new(&nats.url(), &project));
    let bus = immune_tests::client_bus(&nats.url()).await;
    let mut anomalies = bus
        .client()
        .subscribe("immune.anomalies.storefront")
        .await
        .expect("subscribe");
    let mut actions = bus
        .client()
        .subscribe("immune.actions.storefront")
        .await
        .expect("subscribe");
    let mut reverted = bus
        .client()
        .subscribe("immune.chaos.reverted.storefront")
        .await
        .expect("subscribe");
    let mut metrics = bus
        .client()
        .subscribe("immune.metrics.storefront")
        .await
        .expect("subscribe");
    within(
        Duration::from_secs(30),
        "the collector to see the demo",
        async {
            while let Some(m) = metrics.next().await {
                if let Ok(env) = decode(&m.payload) {
                    if let Event::MetricSnapshot(s) = env.body {
                        if s.instance == demo.name && s.scrape.is_some_and(|o| o.ok) {
                            return;
                        }
                    }
                }
            }
        },
    )
    .await;

    let run_id = follow::request(
        &bus,
        ChaosRequest {
            run_id: None,
            service: ServiceName::new("storefront").expect("name"),
            fault: FaultKind::Attack,
            duration_ms: ATTACK_MS,
            params: BTreeMap::new(),
        },
    )
    .await
    .expect("chaos request");

    let mut fired = false;
    within(
        Duration::from_secs(40),
        "attack_burst to fire under the run id and then clear, the attack still on",
        async {
            while let Some(m) = anomalies.next().await {
                let Ok(env) = decode(&m.payload) else {
                    continue;
                };
                let Event::Anomaly(a) = env.body else {
                    continue;
                };
                if a.signature != Signature::AttackBurst {
                    continue;
                }
                match a.state {
                    AnomalyState::Firing => {
                        assert_eq!(env.correlation_id.as_deref(), Some(run_id.as_str()));
                        assert!(a.reason.contains("refused"), "{}", a.reason);
                        fired = true;
                    }
                    AnomalyState::Cleared if fired => return,
                    AnomalyState::Cleared => {}
                }
            }
        },
    )
    .await;
    // healed by immune: chaos has not reverted the attack yet
    assert!(
        tokio::time::timeout(Duration::from_millis(100), reverted.next())
            .await
            .is_err(),
        "the attack was reverted before the anomaly cleared"
    );
    let mut sent = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), actions.next()).await {
        if let Ok(Event::ActionRequest(r)) = decode(&m.payload).map(|e| e.body) {
            sent.push((r.action, r.params.get("state").cloned()));
        }
    }
    assert_eq!(
        sent.first(),
        Some(&(ActionKind::BlockSources, Some("on".to_string()))),
        "the sources blocked first: {sent:?}"
    );
    assert!(
        !sent.iter().any(|(a, _)| *a == ActionKind::CircuitBreaker),
        "every user shed: {sent:?}"
    );
    pipeline.stop().await;
}
