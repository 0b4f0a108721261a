//! Probing `/health` and scraping `/metrics` of one target, each bounded in time and size.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use immune_nats::{feature, ContainerState, HealthProbe, MetricSnapshot, ScrapeOutcome};

use crate::features::{self, Reading, SeriesNames};
use crate::{snapshot_of, Config, Target};

#[derive(Debug)]
pub(crate) struct Scraper {
    client: reqwest::Client,
    probe_timeout: Duration,
    scrape_timeout: Duration,
    max_bytes: usize,
    series: SeriesNames,
}

/// What one interval found out about a target.
#[derive(Debug)]
pub(crate) struct Observed {
    health: Option<HealthProbe>,
    scrape: Option<(ScrapeOutcome, Option<Reading>)>,
    at_ms: u64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Scraper {
    pub(crate) fn new(config: &Config) -> Self {
        Self {
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(2)
                .build()
                .unwrap_or_default(),
            probe_timeout: Duration::from_millis(config.probe_timeout_ms),
            scrape_timeout: Duration::from_millis(config.scrape_timeout_ms),
            max_bytes: config.max_exposition_bytes,
            series: config.series.clone(),
        }
    }

    pub(crate) async fn observe(&self, target: &Target) -> Observed {
        let at_ms = immune_nats::envelope::now_ms();
        if target.state != ContainerState::Running {
            return Observed {
                health: None,
                scrape: None,
                at_ms,
            };
        }
        let Some(address) = target.address else {
            let health = Some(HealthProbe {
                ok: false,
                status: None,
                latency_ms: 0.0,
                error: Some("container has no network address".into()),
            });
            return Observed {
                health,
                scrape: None,
                at_ms,
            };
        };
        let health = async {
            let endpoint = target.health.as_ref()?;
            Some(self.probe(&endpoint.url(address)).await)
        };
        let scrape = async {
            let endpoint = target.metrics.as_ref()?;
            Some(self.scrape(&endpoint.url(address), at_ms).await)
        };
        let (health, scrape) = tokio::join!(health, scrape);
        Observed {
            health,
            scrape,
            at_ms,
        }
    }

    async fn probe(&self, url: &str) -> HealthProbe {
        let started = Instant::now();
        let result = self
            .client
            .get(url)
            .timeout(self.probe_timeout)
            .send()
            .await;
        let latency_ms = ms(started.elapsed());
        match result {
            Ok(r) => HealthProbe {
                ok: r.status().is_success(),
                status: Some(r.status().as_u16()),
                latency_ms,
                error: (!r.status().is_success()).then(|| format!("status {}", r.status())),
            },
            Err(e) => HealthProbe {
                ok: false,
                status: None,
                latency_ms,
                error: Some(if e.is_timeout() {
                    format!("no answer within {:?}", self.probe_timeout)
                } else {
                    e.to_string()
                }),
            },
        }
    }

    async fn scrape(&self, url: &str, at_ms: u64) -> (ScrapeOutcome, Option<Reading>) {
        let started = Instant::now();
        let body = tokio::time::timeout(self.scrape_timeout, self.fetch(url)).await;
        let latency_ms = ms(started.elapsed());
        let failed = |error: String, bytes: usize| {
            (
                ScrapeOutcome {
                    ok: false,
                    samples: 0,
                    bytes: bytes as u32,
                    latency_ms,
                    error: Some(error),
                },
                None,
            )
        };
        let text = match body {
            Err(_) => return failed(format!("no exposition within {:?}", self.scrape_timeout), 0),
            Ok(Err(e)) => return failed(e, 0),
            Ok(Ok(text)) => text,
        };
        match prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))) {
            Ok(parsed) => {
                let samples = parsed.samples.len() as u32;
                let counters = features::read_counters(&parsed, &self.series, at_ms);
                (
                    ScrapeOutcome {
                        ok: true,
                        samples,
                        bytes: text.len() as u32,
                        latency_ms,
                        error: None,
                    },
                    Some(counters),
                )
            }
            Err(e) => failed(format!("malformed exposition: {e}"), text.len()),
        }
    }

    /// The body, refused past the size limit before it is all read.
    async fn fetch(&self, url: &str) -> Result<String, String> {
        let mut response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("status {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + chunk.len() > self.max_bytes {
                return Err(format!("exposition larger than {} bytes", self.max_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        String::from_utf8(body).map_err(|_| "exposition is not UTF-8".to_string())
    }
}

impl Observed {
    /// The snapshot of this interval; remembers this scrape's counters for the next one.
    pub(crate) fn into_snapshot(
        self,
        target: &Target,
        interval_ms: u64,
        previous: &mut HashMap<String, features::Counters>,
    ) -> MetricSnapshot {
        let mut snapshot = snapshot_of(target, interval_ms);
        snapshot.observed_ms = self.at_ms;
        if let Some(h) = &self.health {
            snapshot
                .features
                .insert(feature::HEALTH_OK.into(), if h.ok { 1.0 } else { 0.0 });
            snapshot
                .features
                .insert(feature::PROBE_LATENCY_MS.into(), h.latency_ms);
        }
        if let Some((outcome, counters)) = self.scrape {
            snapshot.features.insert(
                feature::SCRAPE_OK.into(),
                if outcome.ok { 1.0 } else { 0.0 },
            );
            if let Some(Reading {
                counters,
                in_flight,
            }) = counters
            {
                snapshot.features.extend(features::interval_features(
                    previous.get(&target.id),
                    &counters,
                    in_flight,
                ));
                previous.insert(target.id.clone(), counters);
            }
            snapshot.scrape = Some(outcome);
        }
        snapshot.health = self.health;
        snapshot
    }
}
