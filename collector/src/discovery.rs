//! Discovery: the Docker side of the [`inventory`](crate::inventory). Follows Docker's event
//! stream for containers that opted in with labels (reconnecting with backoff when it
//! breaks), inspects a container after each of its events, lists every managed container
//! every `resync_ms` in case an event was missed, and hands what it learnt to `run` as
//! [`Change`]s. Lifecycle events (die, oom, start, ...) are also published at once as
//! [`ContainerEvent`]s, so a crash is known without waiting for a scrape.
//!
//! The bookkeeping of what those changes mean for the watched targets is pure and lives in
//! [`Inventory`](crate::inventory::Inventory); this module is the I/O.

use std::collections::HashMap;
use std::time::Duration;

use bollard::query_parameters::EventsOptions;
use futures::StreamExt;
use immune_nats::{envelope::now_ms, ContainerEvent, ContainerEventKind, Event, ServiceName};
use immune_runtime::docker::{self, labels};
use immune_runtime::telemetry::Observation;
use immune_runtime::{Bus, Shutdown, Telemetry};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::inventory::Change;

/// Starts following Docker: its event stream and the periodic full listing, both sending
/// into `changes` until shutdown.
pub(crate) fn spawn(
    docker: &bollard::Docker,
    bus: &Bus,
    project: Option<String>,
    resync_every: Duration,
    changes: mpsc::Sender<Change>,
    shutdown: &Shutdown,
) -> Vec<JoinHandle<()>> {
    vec![
        tokio::spawn(forward_docker_events(
            docker.clone(),
            bus.clone(),
            project.clone(),
            changes.clone(),
            shutdown.clone(),
        )),
        tokio::spawn(resync(
            docker.clone(),
            bus.telemetry().clone(),
            project,
            resync_every,
            changes,
            shutdown.clone(),
        )),
    ]
}

/// Every `resync`, the full list of managed containers, in case an event was missed.
async fn resync(
    docker: bollard::Docker,
    telemetry: Telemetry,
    project: Option<String>,
    every: Duration,
    changes: mpsc::Sender<Change>,
    mut shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tick.tick() => {}
        }
        let started = std::time::Instant::now();
        let listed = match docker::list_managed(&docker, project.as_deref()).await {
            Ok(list) => list,
            Err(e) => {
                telemetry.failed("discovery", &e);
                continue;
            }
        };
        telemetry.time("discovery", started.elapsed());
        let mut managed = Vec::with_capacity(listed.len());
        for c in listed {
            match c {
                Ok(c) => managed.push(c),
                Err(e) => telemetry.refused("target", &e.to_string()),
            }
        }
        if changes.send(Change::Listed(managed)).await.is_err() {
            return;
        }
    }
}

/// Forwards lifecycle events of managed containers as they happen; reconnects to Docker's
/// event stream with backoff when it breaks.
async fn forward_docker_events(
    docker: bollard::Docker,
    bus: Bus,
    project: Option<String>,
    changes: mpsc::Sender<Change>,
    mut shutdown: Shutdown,
) {
    let mut label_filters = vec![format!("{}=true", labels::ENABLE)];
    if let Some(p) = &project {
        label_filters.push(format!("{}={p}", labels::PROJECT));
    }
    let filters = HashMap::from([
        ("type".to_string(), vec!["container".to_string()]),
        ("label".to_string(), label_filters),
    ]);
    let mut attempt = 0u32;
    loop {
        let options = EventsOptions {
            since: Some(format!("{}", now_ms() / 1000)),
            filters: Some(filters.clone()),
            ..Default::default()
        };
        let mut stream = docker.events(Some(options));
        loop {
            let next = tokio::select! {
                _ = shutdown.wait() => return,
                n = stream.next() => n,
            };
            match next {
                Some(Ok(message)) => {
                    attempt = 0;
                    if let Some(event) = container_event(&message) {
                        let service = event.service.to_string();
                        let change = match event.kind {
                            ContainerEventKind::Destroyed => Some(Change::Removed {
                                id: event.container_id.clone(),
                            }),
                            _ => {
                                match docker::inspect_managed(&docker, &event.container_id).await {
                                    Ok(container) => Some(Change::Seen {
                                        container: Box::new(container),
                                        started: event.kind == ContainerEventKind::Started,
                                    }),
                                    Err(e) => {
                                        bus.telemetry().failed("inspect", &e);
                                        None
                                    }
                                }
                            }
                        };
                        if let Err(e) = bus.publish(None, Event::ContainerEvent(event)).await {
                            bus.telemetry().failed("publish_event", &e);
                        } else {
                            bus.telemetry().observe(Observation::Acted {
                                what: "container_event",
                                service: &service,
                            });
                        }
                        if let Some(change) = change {
                            if changes.send(change).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                Some(Err(e)) => {
                    bus.telemetry().failed("docker_events", &e);
                    break;
                }
                None => break,
            }
        }
        attempt += 1;
        tokio::time::sleep(Duration::from_millis((100u64 << attempt.min(5)).min(3_000))).await;
    }
}

/// Maps a Docker event to ours; `None` for actions we do not forward.
fn container_event(message: &bollard::models::EventMessage) -> Option<ContainerEvent> {
    let action = message.action.as_deref()?;
    let kind = match action {
        "start" => ContainerEventKind::Started,
        "die" => ContainerEventKind::Died,
        "oom" => ContainerEventKind::OomKilled,
        "restart" => ContainerEventKind::Restarted,
        "pause" => ContainerEventKind::Paused,
        "unpause" => ContainerEventKind::Unpaused,
        "destroy" => ContainerEventKind::Destroyed,
        "health_status: healthy" => ContainerEventKind::Healthy,
        "health_status: unhealthy" => ContainerEventKind::Unhealthy,
        _ => return None,
    };
    let actor = message.actor.as_ref()?;
    let attributes = actor.attributes.as_ref()?;
    let service = ServiceName::new(attributes.get(labels::SERVICE)?.clone()).ok()?;
    let observed_ms = message
        .time_nano
        .map(|ns| (ns / 1_000_000) as u64)
        .unwrap_or_else(now_ms);
    Some(ContainerEvent {
        service,
        instance: attributes.get("name").cloned().unwrap_or_default(),
        container_id: actor.id.clone().unwrap_or_default(),
        kind,
        exit_code: attributes.get("exitCode").and_then(|c| c.parse().ok()),
        observed_ms,
    })
}
