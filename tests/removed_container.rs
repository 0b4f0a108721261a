//! A container removed for good (scaled in, `docker rm -f` by an operator) is not left as an
//! open incident: its death fires `crashed`, its destroy clears it ("container removed"), and
//! the decider's incident for it ends instead of waiting forever for a container that is gone.

use std::time::Duration;

use futures::StreamExt;
use immune_nats::{decode, AnomalyState, Event, IncidentState, Signature};
use immune_testkit::{unique, within, DemoContainer, DemoSpec, NatsServer};
use immune_tests::{await_healthy_snapshot, Pipeline, PipelineConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_removed_container_clears_its_anomaly_and_its_incident_ends() {
    let nats = NatsServer::start().await;
    let project = unique("removed");
    let demo = DemoContainer::start(DemoSpec::new("orders", &project)).await;
    let pipeline = Pipeline::start(PipelineConfig::new(&nats.url(), &project));
    let bus = immune_tests::client_bus(&nats.url()).await;
    let mut anomalies = bus
        .client()
        .subscribe("immune.anomalies.orders")
        .await
        .expect("subscribe");
    let mut incidents = bus
        .client()
        .subscribe("immune.incidents.orders")
        .await
        .expect("subscribe");
    await_healthy_snapshot(&bus, &demo).await;

    let removed = std::process::Command::new("docker")
        .args(["rm", "-f", &demo.id])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("docker rm");
    assert!(removed.success());

    within(
        Duration::from_secs(20),
        "the death to fire and the removal to clear it",
        async {
            let mut fired = None;
            while let Some(m) = anomalies.next().await {
                let Ok(env) = decode(&m.payload) else {
                    continue;
                };
                let Event::Anomaly(a) = env.body else {
                    continue;
                };
                if a.instance != demo.name {
                    continue;
                }
                match a.state {
                    AnomalyState::Firing => {
                        assert_eq!(a.signature, Signature::Crashed, "{a:?}");
                        fired = Some(a.anomaly_id);
                    }
                    AnomalyState::Cleared => {
                        assert_eq!(Some(&a.anomaly_id), fired.as_ref(), "clears what fired");
                        assert!(a.reason.starts_with("container removed"), "{}", a.reason);
                        return;
                    }
                }
            }
            panic!("anomaly subscription ended");
        },
    )
    .await;

    within(
        Duration::from_secs(40),
        "the incident for the removed container to end",
        async {
            while let Some(m) = incidents.next().await {
                let Ok(env) = decode(&m.payload) else {
                    continue;
                };
                let Event::Incident(i) = env.body else {
                    continue;
                };
                // This test's NATS server holds this container's incident only.
                if matches!(
                    i.state,
                    IncidentState::Recovered | IncidentState::Closed | IncidentState::Escalated
                ) {
                    return;
                }
            }
            panic!("incident subscription ended");
        },
    )
    .await;
    pipeline.stop().await;
}
