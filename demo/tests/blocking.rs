//! `POST /admin/block` over real HTTP: a client the screen keeps refusing is blocked while
//! blocking is on, another client (its own loopback address) is served all along, and off
//! unblocks everyone. The service runs in-process on 127.0.0.1; clients bind 127.0.0.x.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use immune_demo::config::ServiceConfig;

const ATTACK: &str = "/?id=1%27%20OR%20%271%27%3D%271";

fn client(last: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

async fn status(client: &reqwest::Client, url: &str) -> u16 {
    client
        .get(url)
        .send()
        .await
        .expect("answered")
        .status()
        .as_u16()
}

async fn set_block(base: &str, state: &str) {
    let r = client(1)
        .post(format!("{base}/admin/block"))
        .json(&serde_json::json!({ "state": state }))
        .send()
        .await
        .expect("admin answered");
    assert!(r.status().is_success(), "{}", r.status());
}

#[tokio::test]
async fn a_repeat_attacker_is_blocked_and_users_are_served() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let config =
        ServiceConfig::from_vars(|k| (k == "SERVICE_NAME").then(|| "shop".into())).expect("config");
    tokio::spawn(immune_demo::service::serve(
        config,
        listener,
        std::future::pending(),
    ));
    let (attacker, user) = (client(9), client(2));
    for _ in 0..3 {
        assert_eq!(status(&attacker, &format!("{base}{ATTACK}")).await, 400);
    }
    assert_eq!(
        status(&attacker, &format!("{base}/")).await,
        200,
        "off: nobody blocked"
    );

    set_block(&base, "on").await;
    assert_eq!(status(&attacker, &format!("{base}{ATTACK}")).await, 403);
    assert_eq!(status(&attacker, &format!("{base}/")).await, 403);
    assert_eq!(
        status(&user, &format!("{base}/")).await,
        200,
        "users are served"
    );
    assert_eq!(
        status(&attacker, &format!("{base}/health")).await,
        200,
        "monitoring behind the attacker's address still reads health"
    );
    let metrics = user
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("demo_blocked_requests_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("demo_admin_blocked_sources 1"),
        "{metrics}"
    );

    set_block(&base, "off").await;
    assert_eq!(
        status(&attacker, &format!("{base}/")).await,
        200,
        "unblocked"
    );
    let bad = client(1)
        .post(format!("{base}/admin/block"))
        .json(&serde_json::json!({ "state": "maybe" }))
        .send()
        .await
        .expect("answered");
    assert!(bad.status().is_client_error(), "{}", bad.status());
}
