//! Injection and revert timing through the real bus:
//! `cargo bench -p immune-chaos --bench inject --profile dev` (`-- <runs>`, default 10).
//!
//! Each run asks a chaos stage (in-process, real nats-server, real demo container) for a
//! 500 ms `latency` fault and measures:
//! - request published → the fault observable on the target (`GET /fault` says `latency`),
//! - request published → `chaos_injected` received (read once the fault was observed, so an
//!   upper bound),
//! - lateness of the revert: `chaos_reverted.reverted_ms` − `revert_at_ms`.
//!
//! Prints p50, p95 and max of each. No target is set by the issue; these are the figures.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use immune_nats::{decode, subject, ChaosRequest, Event, FaultKind, ServiceName, Stage};
use immune_runtime::{Bus, BusConfig, Shutdown, Telemetry};
use immune_testkit::{unique, within, DemoContainer, DemoSpec, NatsServer};

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((sorted.len() as f64) * q).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn report(name: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    println!(
        "{name:<36} p50 {:>7.1} ms   p95 {:>7.1} ms   max {:>7.1} ms   (n={})",
        quantile(&ms, 0.5),
        quantile(&ms, 0.95),
        ms.last().copied().unwrap_or(0.0),
        ms.len()
    );
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10);
    let nats = NatsServer::start().await;
    let project = unique("chaos-bench");
    let (trigger, shutdown) = Shutdown::new();
    let config = immune_chaos::Config {
        nats: BusConfig {
            url: nats.url(),
            ..Default::default()
        },
        project: Some(project.clone()),
        ..Default::default()
    };
    let chaos = tokio::spawn(immune_chaos::run(
        config.clone(),
        Telemetry::new(Stage::Chaos),
        shutdown.clone(),
    ));
    let bus = Bus::connect(&config.nats, Telemetry::new(Stage::Client), &shutdown)
        .await
        .expect("client bus");
    let mut said = bus
        .client()
        .subscribe(subject::CHAOS_ALL)
        .await
        .expect("subscribe");
    let demo = DemoContainer::start(DemoSpec::new("orders", &project)).await;
    let fault_url = format!(
        "http://{}:8080/fault",
        demo.address().await.expect("address")
    );
    let http = reqwest::Client::new();

    let (mut observed, mut injected, mut late) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let run_id = unique("run");
        let request = ChaosRequest {
            run_id: Some(run_id.clone()),
            service: ServiceName::new("orders").expect("name"),
            fault: FaultKind::Latency,
            duration_ms: 500,
            params: BTreeMap::from([("latency_ms".to_string(), "50".to_string())]),
        };
        let started = Instant::now();
        bus.publish(Some(run_id.clone()), Event::ChaosRequest(request))
            .await
            .expect("publish");
        within(Duration::from_secs(10), "the fault on the target", async {
            loop {
                let mode = http.get(&fault_url).send().await.ok();
                if let Some(r) = mode {
                    if r.text().await.unwrap_or_default().contains("\"latency\"") {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await;
        observed.push(started.elapsed().as_secs_f64() * 1000.0);
        within(Duration::from_secs(10), "injected and reverted", async {
            loop {
                let message = said.next().await.expect("subscription");
                let Ok(envelope) = decode(&message.payload) else {
                    continue;
                };
                match envelope.body {
                    Event::ChaosInjected(e) if e.run_id == run_id => {
                        injected.push(started.elapsed().as_secs_f64() * 1000.0);
                        late.push(0.0 - e.revert_at_ms as f64);
                    }
                    Event::ChaosReverted(e) if e.run_id == run_id => {
                        if let Some(l) = late.last_mut() {
                            *l += e.reverted_ms as f64;
                        }
                        return;
                    }
                    Event::ChaosRejected(e) if e.run_id == run_id => {
                        panic!("rejected: {}", e.reason)
                    }
                    _ => {}
                }
            }
        })
        .await;
    }
    report("request -> fault on the target", observed);
    report("request -> chaos_injected received", injected);
    report("revert lateness (reverted - due)", late);
    trigger.trigger();
    let _ = within(Duration::from_secs(30), "chaos to stop", chaos).await;
}
