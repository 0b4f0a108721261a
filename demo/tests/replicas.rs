//! Calls spread over every replica, against real containers: two `payments` containers share
//! the network alias `payments` on a user-defined network, and an `orders` container calls
//! `http://payments:8080`. Each replica serves its share; one that joins gets its share
//! within a second, one that is removed drops out within a second.

mod common;

use std::time::Duration;

use bollard::models::NetworkCreateRequest;
use common::{client, get_text, sample};
use immune_testkit::{unique, within, DemoContainer, DemoSpec};

const SERVED: &str = r#"demo_http_requests_total{status="200"}"#;

/// A user-defined network, removed on drop (after the containers on it).
struct Network {
    docker: bollard::Docker,
    name: String,
}

impl Network {
    async fn create() -> Network {
        let docker = bollard::Docker::connect_with_local_defaults().expect("Docker engine");
        let name = unique("demo-net");
        docker
            .create_network(NetworkCreateRequest {
                name: name.clone(),
                ..Default::default()
            })
            .await
            .expect("create a test network");
        Network { docker, name }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["network", "rm", &self.name])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        let _ = &self.docker;
    }
}

async fn on_network(service: &str, network: &Network, env: &[&str]) -> DemoContainer {
    let mut spec = DemoSpec::new(service, &unique("demo-replicas"));
    spec.network = Some((network.name.clone(), vec![service.to_string()]));
    spec.env = env.iter().map(|e| e.to_string()).collect();
    DemoContainer::start(spec).await
}

async fn base(container: &DemoContainer) -> String {
    let ip = container.address().await.expect("the container's address");
    format!("http://{ip}:8080")
}

async fn served(container: &DemoContainer) -> f64 {
    sample(
        &get_text(&format!("{}/metrics", base(container).await)).await,
        SERVED,
    )
}

/// Sends `n` calls to orders' `/`, one after another; all must succeed.
async fn call(orders: &str, n: usize) {
    let http = client();
    within(
        Duration::from_secs(30),
        "orders to answer its calls",
        async {
            for i in 0..n {
                let response = http.get(format!("{orders}/")).send().await.expect("GET /");
                assert_eq!(
                    response.status(),
                    200,
                    "call {i}: orders could not reach a payments replica"
                );
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_go_to_every_replica_behind_an_alias() {
    let network = Network::create().await;
    let first = on_network("payments", &network, &[]).await;
    let orders = on_network("orders", &network, &["UPSTREAMS=http://payments:8080"]).await;
    let orders_url = base(&orders).await;
    call(&orders_url, 20).await;
    assert_eq!(
        served(&first).await,
        20.0,
        "one replica: it serves every call"
    );

    // scale_out: a second container with the same alias.
    let second = on_network("payments", &network, &[]).await;
    // Orders resolves again at most once a second: after that the new replica is in turn.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (a0, b0) = (served(&first).await, served(&second).await);
    call(&orders_url, 200).await;
    let (a, b) = (served(&first).await - a0, served(&second).await - b0);
    assert_eq!(a + b, 200.0, "every call reached one replica");
    assert!(a > 50.0 && b > 50.0, "each serves over 25%: {a} and {b}");
    let metrics = get_text(&format!("{orders_url}/metrics")).await;
    assert_eq!(
        sample(&metrics, r#"demo_upstream_addresses{upstream="payments"}"#),
        2.0
    );

    // scale_in: the first replica goes; within a second its address drops out.
    drop(first);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let b0 = served(&second).await;
    call(&orders_url, 50).await;
    assert_eq!(
        served(&second).await - b0,
        50.0,
        "the remaining replica serves all"
    );
}
