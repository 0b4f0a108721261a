//! A stage upgraded to listen to one more subject gets it from its existing durable consumer:
//! the consumer is updated to the new filters, not kept as the older build made it.

use std::time::Duration;

use immune_nats::streams::{ConsumerSpec, PIPELINE};
use immune_nats::{samples, Event, Stage};
use immune_runtime::{Bus, BusConfig, Shutdown, Telemetry};
use immune_testkit::{within, NatsServer};

#[tokio::test]
async fn an_existing_durable_takes_the_new_filters() {
    let nats = NatsServer::start().await;
    let config = BusConfig {
        url: nats.url(),
        ..Default::default()
    };
    let (_trigger, shutdown) = Shutdown::new();
    let bus = Bus::connect(&config, Telemetry::new(Stage::Decider), &shutdown)
        .await
        .expect("connect");
    let older = ConsumerSpec {
        durable: "UPGRADED",
        stream: PIPELINE,
        filters: &["immune.anomalies.>"],
        ack_wait: Duration::from_secs(30),
    };
    drop(bus.inbox(older).await.expect("older consumer"));
    let newer = ConsumerSpec {
        filters: &["immune.anomalies.>", "immune.results.>"],
        ..older
    };
    let mut inbox = bus.inbox(newer).await.expect("newer consumer");
    bus.publish(None, Event::ActionResult(samples::action_result()))
        .await
        .expect("publish");
    let delivery = within(
        Duration::from_secs(10),
        "the result through the updated consumer",
        inbox.next(),
    )
    .await;
    assert!(matches!(delivery.envelope.body, Event::ActionResult(_)));
}
