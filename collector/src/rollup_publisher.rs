//! Publishing the service roll-ups: the target tasks hand every instance snapshot to this
//! task, which every interval publishes one [`rollup`](crate::rollup) per service over the
//! instances seen in it.

use std::time::Duration;

use immune_nats::{envelope::now_ms, Event, MetricSnapshot};
use immune_runtime::{Bus, Shutdown};
use tokio::sync::mpsc;

use crate::rollup;

/// Publishes one roll-up per service every interval, over the instances seen in it.
pub(crate) async fn publish_rollups(
    bus: Bus,
    interval: Duration,
    mut snapshots: mpsc::Receiver<MetricSnapshot>,
    mut shutdown: Shutdown,
) {
    let mut rollups = rollup::Rollups::default();
    let interval_ms = interval.as_millis() as u64;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            Some(s) = snapshots.recv() => rollups.record(s),
            _ = tick.tick() => {
                let now = now_ms();
                // An instance counts while its latest snapshot is from the last interval and a half.
                let since = now.saturating_sub(interval_ms * 3 / 2);
                for snapshot in rollups.roll_up(now, since, interval_ms) {
                    if let Err(e) = bus.publish(None, Event::MetricSnapshot(snapshot)).await {
                        bus.telemetry().failed("publish_rollup", &e);
                    }
                }
            }
        }
    }
}
