//! `immune status`: what the platform looks like now, read from what the bus keeps.
//!
//! - Services: the last metric snapshot of every `immune.metrics.<service>` subject (one
//!   JetStream "last message per subject" read of the metrics stream). That snapshot is an
//!   instance's or the collector's roll-up of the service's replicas, whichever came last.
//! - Incidents: the last incident event per service from the pipeline stream; the open ones
//!   (opened, acting, verifying) and the escalated ones (a human must act).
//! - Controls: both kill switches and the maintenance windows.

use std::time::Duration;

use immune_nats::streams::{METRICS, PIPELINE};
use immune_nats::{feature, subject, Event, IncidentState, MetricSnapshot, SnapshotScope};
use immune_runtime::Bus;
use serde::Serialize;

use crate::controls::{self, Controls, WindowState};
use crate::stored::{Reader, Start};
use crate::{rfc3339, span, CliError};

/// A snapshot older than this is marked stale: the collector no longer sees the service.
pub const STALE_AFTER_MS: u64 = 30_000;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceStatus {
    pub service: String,
    /// The container the snapshot is of, or `*` for the service roll-up.
    pub instance: String,
    pub state: String,
    /// The health probe passed (an instance), or every replica's did (a roll-up).
    pub healthy: Option<bool>,
    pub request_rate: Option<f64>,
    pub error_ratio: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    /// Replicas `running/total` and healthy ones, for a roll-up.
    pub replicas: Option<ReplicaCount>,
    pub observed_ms: u64,
    pub stale: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ReplicaCount {
    pub total: u32,
    pub running: u32,
    pub healthy: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IncidentStatus {
    pub incident_id: String,
    pub service: String,
    pub state: String,
    pub signature: String,
    pub chaos_run: Option<String>,
    pub opened_ms: u64,
    /// The latest line of its timeline.
    pub latest: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    pub services: Vec<ServiceStatus>,
    pub incidents: Vec<IncidentStatus>,
    pub controls: Controls,
    /// Stored messages that could not be decoded (skipped).
    pub undecodable: usize,
    pub at_ms: u64,
}

fn snake(debug: impl std::fmt::Debug) -> String {
    let text = format!("{debug:?}");
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// One service's line, from its latest snapshot. Pure.
pub fn service_status(s: &MetricSnapshot, now_ms: u64) -> ServiceStatus {
    let f = |name: &str| s.features.get(name).copied();
    let healthy = match (s.scope, &s.health) {
        (SnapshotScope::Instance, Some(probe)) => Some(probe.ok),
        _ => f(feature::HEALTH_OK).map(|share| share >= 1.0),
    };
    ServiceStatus {
        service: s.service.to_string(),
        instance: s.instance.clone(),
        state: snake(s.state),
        healthy,
        request_rate: f(feature::REQUEST_RATE),
        error_ratio: f(feature::ERROR_RATIO),
        latency_p95_ms: f(feature::LATENCY_P95_MS),
        replicas: s.replicas.map(|r| ReplicaCount {
            total: r.total,
            running: r.running,
            healthy: r.healthy,
        }),
        observed_ms: s.observed_ms,
        stale: now_ms.saturating_sub(s.observed_ms) > STALE_AFTER_MS,
    }
}

/// Reads services, incidents and controls.
pub async fn gather(bus: &Bus, now_ms: u64, limit: Duration) -> Result<Status, CliError> {
    let mut undecodable = 0;
    let mut services = Vec::new();
    let mut metrics =
        Reader::open(bus, METRICS, subject::METRICS_ALL, Start::LastPerSubject).await?;
    for stored in metrics.drain(limit).await? {
        match stored.envelope {
            Ok(envelope) => {
                if let Event::MetricSnapshot(s) = &envelope.body {
                    services.push(service_status(s, now_ms));
                }
            }
            Err(_) => undecodable += 1,
        }
    }
    services.sort_by(|a, b| a.service.cmp(&b.service));
    let mut incidents = Vec::new();
    let mut stream =
        Reader::open(bus, PIPELINE, subject::INCIDENTS_ALL, Start::LastPerSubject).await?;
    for stored in stream.drain(limit).await? {
        match stored.envelope {
            Ok(envelope) => {
                let Event::Incident(i) = &envelope.body else {
                    continue;
                };
                let open = matches!(
                    i.state,
                    IncidentState::Opened
                        | IncidentState::Acting
                        | IncidentState::Verifying
                        | IncidentState::Escalated
                );
                if open {
                    incidents.push(IncidentStatus {
                        incident_id: i.incident_id.clone(),
                        service: i.service.to_string(),
                        state: snake(i.state),
                        signature: i.signature.to_string(),
                        chaos_run: i.chaos_run.clone(),
                        opened_ms: i.opened_ms,
                        latest: i.timeline.last().map(|t| t.what.clone()),
                    });
                }
            }
            Err(_) => undecodable += 1,
        }
    }
    incidents.sort_by(|a, b| a.service.cmp(&b.service));
    Ok(Status {
        services,
        incidents,
        controls: controls::read(bus, now_ms).await?,
        undecodable,
        at_ms: now_ms,
    })
}

/// Lays rows out in columns two spaces apart.
pub fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| format!("{cell:<w$}", w = widths[c]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn number(v: Option<f64>, decimals: usize) -> String {
    v.map(|v| format!("{v:.decimals$}"))
        .unwrap_or_else(|| "-".into())
}

/// The human view. Pure.
pub fn render(status: &Status) -> String {
    let now = status.at_ms;
    let mut out = String::new();
    let c = &status.controls;
    let onoff = |b: bool| if b { "ON" } else { "off" };
    out.push_str(&format!(
        "kill switch: healing {}, chaos {}\n",
        onoff(c.healing_kill_switch),
        onoff(c.chaos_kill_switch)
    ));
    let windows: Vec<String> = c
        .maintenance
        .iter()
        .filter(|w| w.state != WindowState::Expired)
        .map(|w| match w.state {
            WindowState::Active => format!("{} until {}", w.service, rfc3339(w.until_ms)),
            _ => format!("{} from {}", w.service, rfc3339(w.from_ms)),
        })
        .collect();
    out.push_str(&format!(
        "maintenance: {}\n",
        if windows.is_empty() {
            "none".to_string()
        } else {
            windows.join(", ")
        }
    ));
    for why in &c.unreadable {
        out.push_str(&format!("unreadable control: {why}\n"));
    }
    out.push('\n');
    if status.services.is_empty() {
        out.push_str(
            "services: none seen (no metric snapshots stored: is the collector running?)\n",
        );
    } else {
        let mut rows = vec![[
            "SERVICE", "INSTANCE", "STATE", "HEALTH", "REQ/S", "ERR%", "P95 MS", "REPLICAS", "SEEN",
        ]
        .map(String::from)
        .to_vec()];
        for s in &status.services {
            rows.push(vec![
                s.service.clone(),
                s.instance.clone(),
                s.state.clone(),
                match s.healthy {
                    Some(true) => "ok".into(),
                    Some(false) => "FAILING".into(),
                    None => "-".into(),
                },
                number(s.request_rate, 1),
                number(s.error_ratio.map(|r| r * 100.0), 1),
                number(s.latency_p95_ms, 1),
                s.replicas
                    .map(|r| format!("{}/{} ({} healthy)", r.running, r.total, r.healthy))
                    .unwrap_or_else(|| "-".into()),
                format!(
                    "{} ago{}",
                    span(now.saturating_sub(s.observed_ms)),
                    if s.stale { " STALE" } else { "" }
                ),
            ]);
        }
        out.push_str(&table(&rows));
    }
    out.push('\n');
    if status.incidents.is_empty() {
        out.push_str("incidents: none open\n");
    } else {
        let mut rows = vec![[
            "INCIDENT",
            "SERVICE",
            "STATE",
            "SIGNATURE",
            "OPEN FOR",
            "LATEST",
        ]
        .map(String::from)
        .to_vec()];
        for i in &status.incidents {
            rows.push(vec![
                i.incident_id.clone(),
                i.service.clone(),
                if i.state == "escalated" {
                    "ESCALATED".into()
                } else {
                    i.state.clone()
                },
                i.signature.clone(),
                span(now.saturating_sub(i.opened_ms)),
                i.latest.clone().unwrap_or_default(),
            ]);
        }
        out.push_str(&table(&rows));
    }
    if status.undecodable > 0 {
        out.push_str(&format!(
            "\n{} stored message(s) could not be decoded and were skipped\n",
            status.undecodable
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use immune_nats::samples;

    #[test]
    fn a_snapshot_becomes_a_service_line() {
        let snapshot = samples::metric_snapshot();
        let s = service_status(&snapshot, snapshot.observed_ms + 1_000);
        assert_eq!(s.service, "orders");
        assert_eq!(s.state, "running");
        assert_eq!(s.healthy, Some(true));
        assert_eq!(s.request_rate, Some(20.0));
        assert_eq!(s.latency_p95_ms, Some(12.5));
        assert!(!s.stale);
        let old = service_status(&snapshot, snapshot.observed_ms + STALE_AFTER_MS + 1);
        assert!(old.stale);
    }

    #[test]
    fn the_table_names_services_and_incidents() {
        let snapshot = samples::metric_snapshot();
        let now = snapshot.observed_ms + 2_000;
        let status = Status {
            services: vec![service_status(&snapshot, now)],
            incidents: vec![IncidentStatus {
                incident_id: "inc-1".into(),
                service: "orders".into(),
                state: "escalated".into(),
                signature: "crashed".into(),
                chaos_run: None,
                opened_ms: now - 61_000,
                latest: Some("escalated to a human".into()),
            }],
            controls: Controls {
                healing_kill_switch: true,
                chaos_kill_switch: false,
                maintenance: vec![],
                unreadable: vec![],
            },
            undecodable: 0,
            at_ms: now,
        };
        let text = render(&status);
        assert!(text.contains("healing ON, chaos off"), "{text}");
        assert!(text.contains("orders   orders-1  running  ok"), "{text}");
        assert!(text.contains("ESCALATED"), "{text}");
        assert!(text.contains("1m01s"), "{text}");
        assert_eq!(snake(IncidentState::Verifying), "verifying");
        assert_eq!(snake(immune_nats::ContainerState::Running), "running");
    }
}
