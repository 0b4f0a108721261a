//! The bus a test talks through: connected as a client (the CLI's and the console's view),
//! which also provisions every stream, under a timeout that says what probably broke.

use std::time::Duration;

use immune_runtime::{Bus, BusConfig};

use crate::within;

/// How long a test client may take to connect and provision the streams.
pub const CONNECT_LIMIT: Duration = Duration::from_secs(20);

/// A client bus to the nats-server at `url`.
pub async fn client_bus(url: &str) -> Bus {
    client_bus_as(&BusConfig::at(url)).await
}

/// A client bus with `config` (a user and password of the shipped config, say).
pub async fn client_bus_as(config: &BusConfig) -> Bus {
    let what = format!(
        "a test client to connect to nats-server at {} and provision the streams \
         (is the server up, with JetStream?)",
        config.url
    );
    within(CONNECT_LIMIT, &what, Bus::connect_client(config))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "test client could not connect to nats-server at {} \
                 (server gone, wrong user, or a stream that cannot be provisioned?): {e}",
                config.url
            )
        })
}
