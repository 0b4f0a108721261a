//! The scorecard's eyes: everything published on the bus, recorded as it arrives, and
//! `/health` probes of one service's container sent every 100 ms, each on its own so a
//! hanging probe delays none of the next.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use futures::StreamExt;
use immune_nats::{decode, Envelope};
use tokio::task::JoinHandle;

use crate::deployment::instances;
use crate::measure::Probe;
use crate::{now_ms, ScorecardError};

/// Every decodable message on `immune.>`, in arrival order.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    seen: Arc<Mutex<Vec<Envelope>>>,
    undecodable: Arc<Mutex<u64>>,
}

impl Recorder {
    pub async fn start(
        client: &async_nats::Client,
    ) -> Result<(Recorder, JoinHandle<()>), ScorecardError> {
        let mut subscriber = client
            .subscribe("immune.>")
            .await
            .map_err(|e| ScorecardError::Bus(e.to_string()))?;
        let recorder = Recorder::default();
        let writer = recorder.clone();
        let task = tokio::spawn(async move {
            while let Some(message) = subscriber.next().await {
                match decode(&message.payload) {
                    Ok(envelope) => lock(&writer.seen).push(envelope),
                    Err(_) => *lock(&writer.undecodable) += 1,
                }
            }
        });
        Ok((recorder, task))
    }

    pub fn len(&self) -> usize {
        lock(&self.seen).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What arrived from position `from` on.
    pub fn since(&self, from: usize) -> Vec<Envelope> {
        let seen = lock(&self.seen);
        seen[from.min(seen.len())..].to_vec()
    }

    /// `f` applied to every event seen so far, without copying them.
    pub fn with_all<R>(&self, f: impl FnOnce(&[Envelope]) -> R) -> R {
        f(&lock(&self.seen))
    }

    pub fn undecodable(&self) -> u64 {
        *lock(&self.undecodable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compose_container_not_replica() {
        assert!(is_compose_container(
            "immune-scorecard_payments_1",
            "payments"
        ));
        assert!(!is_compose_container(
            "immune-scorecard_payments_1-replica-4df1a3ae",
            "payments"
        ));
        assert!(!is_compose_container(
            "immune-scorecard_orders_1",
            "payments"
        ));
    }

    #[test]
    fn a_pass_does_not_count_while_an_earlier_probe_is_still_out() {
        let probe = |sent_ms, ok| Probe {
            sent_ms,
            answered_ms: sent_ms + 5,
            ok,
        };
        // Sent at 200 to the address of a container that just died: out for its timeout,
        // while the probes after the restart already passed.
        let probes = Probes {
            answered: vec![probe(300, true), probe(100, true), probe(400, true)],
            out: vec![200],
        };
        assert_eq!(probes.settled(), vec![probe(100, true)]);
        let probes = Probes {
            answered: vec![probe(300, true), probe(100, true), probe(200, false)],
            out: vec![],
        };
        assert_eq!(
            probes.settled(),
            vec![probe(100, true), probe(200, false), probe(300, true)]
        );
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The probes answered, and the send times of those still out: a probe of an address that
/// vanished with its container waits out its whole timeout, so it answers after probes sent
/// later.
#[derive(Debug, Default)]
struct Probes {
    answered: Vec<Probe>,
    out: Vec<u64>,
}

impl Probes {
    /// The answered probes sent before the oldest one still out, by the time they were sent.
    fn settled(&self) -> Vec<Probe> {
        let oldest_out = self.out.iter().min().copied().unwrap_or(u64::MAX);
        let mut answered: Vec<Probe> = self
            .answered
            .iter()
            .filter(|p| p.sent_ms < oldest_out)
            .copied()
            .collect();
        answered.sort_by_key(|p| p.sent_ms);
        answered
    }
}

/// Probes `/health` of one instance of `service` every 100 ms: the compose container (not
/// a replica a scale out made) until [`Prober::focus`] names the one a fault went into.
#[derive(Debug)]
pub struct Prober {
    probes: Arc<Mutex<Probes>>,
    focus: Arc<Mutex<Option<String>>>,
    task: JoinHandle<()>,
}

/// Whether `name` is the compose container of `service` (`<project>_<service>_<n>`).
pub fn is_compose_container(name: &str, service: &str) -> bool {
    name.rsplit_once(&format!("_{service}_"))
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

impl Prober {
    pub fn start(docker: Docker, demo_project: String, service: String) -> Prober {
        let probes: Arc<Mutex<Probes>> = Arc::default();
        let focus: Arc<Mutex<Option<String>>> = Arc::default();
        let (sink, focused) = (probes.clone(), focus.clone());
        let http = reqwest::Client::new();
        let task = tokio::spawn(async move {
            let mut url: Option<String> = None;
            let mut resolved_ms = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let sent_ms = now_ms();
                // The address may change when the container is restarted or recreated.
                if url.is_none() || sent_ms - resolved_ms > 1_000 {
                    resolved_ms = sent_ms;
                    if let Ok(found) = instances(&docker, &demo_project, &service).await {
                        let focus = lock(&focused).clone();
                        let chosen = found.iter().find(|c| match &focus {
                            Some(name) => c.name == *name,
                            None => is_compose_container(&c.name, &service),
                        });
                        // Off its network (no address): keep probing the address it had.
                        url = chosen
                            .and_then(|c| Some(c.health.as_ref()?.url(c.address?)))
                            .or(url);
                    }
                }
                let (http, sink) = (http.clone(), sink.clone());
                let target = url.clone();
                lock(&sink).out.push(sent_ms);
                tokio::spawn(async move {
                    let ok = match target {
                        Some(url) => http
                            .get(url)
                            .timeout(PROBE_TIMEOUT)
                            .send()
                            .await
                            .is_ok_and(|r| r.status().is_success()),
                        None => false,
                    };
                    let mut probes = lock(&sink);
                    if let Some(i) = probes.out.iter().position(|&t| t == sent_ms) {
                        probes.out.swap_remove(i);
                    }
                    probes.answered.push(Probe {
                        sent_ms,
                        answered_ms: now_ms(),
                        ok,
                    });
                });
            }
        });
        Prober {
            probes,
            focus,
            task,
        }
    }

    /// Probe this instance (by container name) from now on.
    pub fn focus(&self, instance: &str) {
        *lock(&self.focus) = Some(instance.to_string());
    }

    /// The probes so far whose every earlier probe has answered, by the time they were
    /// sent: a pass answered while an earlier probe is still out must not hide that one's
    /// failure.
    pub fn probes(&self) -> Vec<Probe> {
        lock(&self.probes).settled()
    }

    /// Stops probing and waits for the probes still out (at most their timeout), then
    /// returns every probe, by the time it was sent.
    pub async fn finish(&self) -> Vec<Probe> {
        self.task.abort();
        let deadline = tokio::time::Instant::now() + PROBE_TIMEOUT + Duration::from_millis(500);
        while !lock(&self.probes).out.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut all = lock(&self.probes).answered.clone();
        all.sort_by_key(|p| p.sent_ms);
        all
    }

    /// Whether the last `n` answered probes all passed (and at least `n` answered).
    pub fn healthy_for(&self, n: usize) -> bool {
        let probes = self.probes();
        probes.len() >= n && probes[probes.len() - n..].iter().all(|p| p.ok)
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.task.abort();
    }
}
