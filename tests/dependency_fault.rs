//! A dependency fault, against the real things: a real nats-server, the five stages, and a
//! chain of three demo containers on their own network (`gateway` calls `orders`, which
//! calls `payments`) under steady load on the gateway. Chaos makes `payments` answer half its
//! calls with errors; its callers fail with it. immune must heal it by acting on `payments`
//! alone: the callers' anomalies wait for their dependency and clear with it, and the
//! incident of `payments` recovers only once its callers are served again (a circuit opened
//! on `payments` clears its own errors while every call of `orders` fails).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::models::NetworkCreateRequest;
use futures::StreamExt;
use immune_chaos::follow::{self, Follower, RunEnd};
use immune_nats::streams::DETECTOR_MODELS;
use immune_nats::{decode, AnomalyState, ChaosRequest, Event, FaultKind, ServiceName};
use immune_testkit::{unique, within, DemoContainer, DemoSpec, NatsServer};
use immune_tests::load::{remove_replicas, Load};
use immune_tests::{Pipeline, PipelineConfig};

/// The load on the gateway (what the demo's load generator sends, well within capacity).
const LOAD_RPS: u64 = 20;
/// How long the fault would last before chaos reverts it: a recovery before is immune's.
const FAULT_MS: u64 = 150_000;

/// What the bus showed, per service: anomalies that fired, actions requested; and which
/// anomalies of the callers were still firing when payments' incident recovered.
#[derive(Debug, Default)]
struct Seen {
    fired: BTreeMap<String, BTreeSet<String>>,
    actions: Vec<(String, String)>,
    /// Anomaly id → "service signature", while it fires.
    firing: BTreeMap<String, String>,
    firing_at_recovery: Option<Vec<String>>,
    /// The last action requested on payments, and the one before its incident recovered,
    /// each with whether it set a stopgap.
    last_on_payments: Option<(String, bool)>,
    credited: Option<(String, bool)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn errors_in_payments_are_healed_on_payments_and_its_callers_are_left_alone() {
    let nats = NatsServer::start().await;
    let project = unique("dependency");
    let docker = bollard::Docker::connect_with_local_defaults().expect("docker");
    let network = unique("dependency-net");
    docker
        .create_network(NetworkCreateRequest {
            name: network.clone(),
            ..Default::default()
        })
        .await
        .expect("create the chain's network");
    let link = |service: &str, calls: Option<&str>| {
        let mut spec = DemoSpec::new(service, &project);
        spec.network = Some((network.clone(), vec![service.to_string()]));
        spec.chaos = service == "payments";
        if let Some(callee) = calls {
            spec.env.push(format!("UPSTREAMS=http://{callee}:8080"));
            spec.extra_labels
                .push(("immune.depends_on".into(), callee.into()));
        }
        spec
    };
    let payments = DemoContainer::start(link("payments", None)).await;
    let orders = DemoContainer::start(link("orders", Some("payments"))).await;
    let gateway = DemoContainer::start(link("gateway", Some("orders"))).await;

    let mut config = PipelineConfig::new(&nats.url(), &project);
    config.detector.learned = immune_detector::LearnedConfig::default(); // with its warm-up
    config.decider.policy.learning.epsilon = 0.0;
    config.decider.policy.verify_deadline_ms = 12_000;
    let pipeline = Pipeline::start(config);
    let bus = immune_tests::client_bus(&nats.url()).await;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let t0 = Instant::now();
    for subject in [
        immune_nats::subject::ANOMALIES_ALL,
        immune_nats::subject::ACTIONS_ALL,
        immune_nats::subject::AUDIT_ALL,
    ] {
        let mut sub = bus
            .client()
            .subscribe(subject)
            .await
            .expect("subscribe to the bus");
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                let Ok(event) = decode(&m.payload).map(|e| e.body) else {
                    continue;
                };
                let at = t0.elapsed().as_secs_f64();
                let mut seen = seen.lock().expect("not poisoned");
                match event {
                    Event::Anomaly(a) if a.state == AnomalyState::Firing => {
                        eprintln!("{at:6.1} s anomaly {} {}", a.service, a.signature);
                        seen.fired
                            .entry(a.service.to_string())
                            .or_default()
                            .insert(a.signature.to_string());
                        seen.firing
                            .insert(a.anomaly_id, format!("{} {}", a.service, a.signature));
                    }
                    Event::Anomaly(a) => {
                        eprintln!("{at:6.1} s cleared {} {}", a.service, a.signature);
                        seen.firing.remove(&a.anomaly_id);
                    }
                    Event::ActionRequest(r) => {
                        eprintln!("{at:6.1} s action {} on {}", r.action, r.service);
                        // (the undoing of a stopgap is no step of the walk)
                        if r.service.as_str() == "payments" && r.stopgap() != Some(false) {
                            seen.last_on_payments =
                                Some((r.action.to_string(), r.stopgap() == Some(true)));
                        }
                        seen.actions
                            .push((r.service.to_string(), r.action.to_string()));
                    }
                    Event::Audit(r) => {
                        if r.what == "incident.recovered"
                            && r.service.as_str() == "payments"
                            && seen.firing_at_recovery.is_none()
                        {
                            let callers = seen
                                .firing
                                .values()
                                .filter(|f| !f.starts_with("payments"))
                                .cloned()
                                .collect();
                            seen.firing_at_recovery = Some(callers);
                            seen.credited = seen.last_on_payments.clone();
                        }
                        eprintln!(
                            "{at:6.1} s {} {}: {} | {}",
                            r.stage, r.what, r.outcome, r.why
                        );
                    }
                    _ => {}
                }
            }
        });
    }
    let load = Load::start(&gateway, LOAD_RPS).await;

    // every service of the chain has its warm-up model before the fault
    let models = bus.bucket(DETECTOR_MODELS).await.expect("models bucket");
    within(
        Duration::from_secs(120),
        "the detector's warm-up models of the chain",
        async {
            for service in ["gateway", "orders", "payments"] {
                while models.get(service).await.ok().flatten().is_none() {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        },
    )
    .await;
    // (a service fits its model on its own first windows: let the last to warm settle)
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = seen.lock().expect("not poisoned").actions.len();
    assert_eq!(before, 0, "no action on the fault-free chain");

    let mut follower = Follower::subscribe(bus.client())
        .await
        .expect("subscribe to the audit stream");
    let injected = Instant::now();
    let run_id = follow::request(
        &bus,
        ChaosRequest {
            run_id: None,
            service: ServiceName::new("payments").expect("name"),
            fault: FaultKind::Errors,
            duration_ms: FAULT_MS,
            params: BTreeMap::from([("error_rate".to_string(), "0.5".to_string())]),
        },
    )
    .await
    .expect("chaos request published");
    let end = follower
        .until_end(&run_id, Duration::from_secs(120), |_, _| {})
        .await;
    let healed_after = injected.elapsed();
    // the callers' anomalies clear with their dependency, and nothing is done to them
    tokio::time::sleep(Duration::from_secs(20)).await;
    load.stop().await;
    drop(pipeline);
    let seen = std::mem::take(&mut *seen.lock().expect("not poisoned"));
    println!(
        "healed after {:.1} s; anomalies {:?}; actions {:?}",
        healed_after.as_secs_f64(),
        seen.fired,
        seen.actions
    );
    assert_eq!(end, RunEnd::Recovered, "payments not healed: {seen:?}");
    assert!(
        healed_after < Duration::from_millis(FAULT_MS),
        "recovered only when chaos reverted it"
    );
    assert!(
        seen.fired.contains_key("orders") || seen.fired.contains_key("gateway"),
        "the fault showed in the callers: {seen:?}"
    );
    assert!(
        seen.actions.iter().any(|(s, _)| s == "payments"),
        "payments acted on: {seen:?}"
    );
    // A stopgap on payments (its circuit opened) may clear payments' own errors while
    // orders fails every call it makes: it counts only once the callers are served. (A
    // repair counts when payments' own anomaly clears; the callers' clear a second later.)
    if seen.credited.as_ref().is_some_and(|(_, stopgap)| *stopgap) {
        assert_eq!(
            seen.firing_at_recovery,
            Some(Vec::new()),
            "a stopgap counted while the callers of payments still failed: {seen:?}"
        );
    }
    let on_callers: Vec<_> = seen
        .actions
        .iter()
        .filter(|(s, _)| s != "payments")
        .collect();
    assert!(on_callers.is_empty(), "the callers were acted on: {seen:?}");

    remove_replicas(&project).await;
    drop((gateway, orders, payments));
    // the containers are gone once dropped; the network then has no endpoint left
    let _ = docker.remove_network(&network).await;
}
