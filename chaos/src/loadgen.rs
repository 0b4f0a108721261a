//! The load generator as a fault injector: the `overload` fault asks the load generator that
//! sends a service its traffic for a spike beyond the service's capacity, and puts the rate
//! back when reverted.
//!
//! A load generator is not a managed service: it is found by its labels
//! (`immune.loadgen=true`, the target's project, and `immune.loadgen.target`: the services
//! its traffic drives, comma-separated, the entry point it calls and those behind it), and
//! asked on its control endpoint (`immune.loadgen.control`, port 8089 by default):
//! `POST /load {"multiplier": m, "for_ms": d}`. The spike also ends by itself after `d`, so
//! a chaos process that dies cannot leave a service overloaded for good.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use bollard::query_parameters::{InspectContainerOptions, ListContainersOptions};
use bollard::Docker;
use immune_nats::ServiceName;
use immune_runtime::docker::labels;

/// The control port when the label does not say.
pub const DEFAULT_CONTROL_PORT: u16 = 8089;
/// How many times the base rate a spike sends when the request does not say (`multiplier`).
/// The demo's narrowest service, orders, serves about 160 req/s under a 20 req/s base: 12
/// times the base is 240 req/s, 1.5 times its capacity, which one more replica covers.
pub const DEFAULT_MULTIPLIER: f64 = 12.0;
/// The largest multiplier a request may ask for: a spike, not a flood of the host.
pub const MAX_MULTIPLIER: f64 = 50.0;

/// A load generator found for a service.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadGenerator {
    pub id: String,
    /// `http://<address>:<port>/load`
    pub url: String,
}

/// The multiplier a request asks for, checked.
pub fn multiplier(params: &BTreeMap<String, String>) -> Result<f64, String> {
    let Some(text) = params.get("multiplier") else {
        return Ok(DEFAULT_MULTIPLIER);
    };
    match text.parse::<f64>() {
        Ok(m) if m.is_finite() && m > 1.0 && m <= MAX_MULTIPLIER => Ok(m),
        _ => Err(format!(
            "multiplier={text:?}: expected a number above 1 and at most {MAX_MULTIPLIER}"
        )),
    }
}

/// The control URL of a load generator from its labels and address.
fn control_url(labels: &HashMap<String, String>, address: IpAddr) -> Result<String, String> {
    let port = match labels.get(labels::LOADGEN_CONTROL) {
        None => DEFAULT_CONTROL_PORT,
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("{}={p:?} is not a port", labels::LOADGEN_CONTROL))?,
    };
    Ok(format!("http://{address}:{port}/load"))
}

/// The running load generator that sends `service` its traffic, in `project`.
pub async fn find(
    docker: &Docker,
    service: &ServiceName,
    project: Option<&str>,
) -> Result<LoadGenerator, String> {
    let mut filters = vec![format!("{}=true", labels::LOADGEN)];
    if let Some(project) = project {
        filters.push(format!("{}={project}", labels::PROJECT));
    }
    let options = ListContainersOptions {
        filters: Some(HashMap::from([("label".to_string(), filters)])),
        ..Default::default()
    };
    let found = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| format!("cannot list load generators: {e}"))?;
    let ours = |c: &bollard::models::ContainerSummary| {
        c.labels
            .as_ref()
            .and_then(|l| l.get(labels::LOADGEN_TARGET))
            .is_some_and(|targets| drives(targets, service))
    };
    let first = found.into_iter().find(ours).ok_or_else(|| {
        format!(
            "no running load generator whose {} names {service}",
            labels::LOADGEN_TARGET
        )
    })?;
    at(docker, first.id.as_deref().unwrap_or_default()).await
}

/// Whether a load generator's target label names `service`.
fn drives(targets: &str, service: &ServiceName) -> bool {
    targets.split(',').any(|t| t.trim() == service.as_str())
}

/// The load generator `id` as it is now (its address may have changed since the spike).
pub async fn at(docker: &Docker, id: &str) -> Result<LoadGenerator, String> {
    let inspected = docker
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
        .map_err(|e| format!("load generator {id}: {e}"))?;
    let labels = inspected.config.and_then(|c| c.labels).unwrap_or_default();
    let mut addresses: Vec<(String, IpAddr)> = inspected
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(name, n)| Some((name, n.ip_address?.parse().ok()?)))
        .collect();
    addresses.sort();
    let (_, address) = addresses
        .into_iter()
        .next()
        .ok_or_else(|| format!("load generator {id} has no network address"))?;
    Ok(LoadGenerator {
        id: inspected.id.unwrap_or_else(|| id.to_string()),
        url: control_url(&labels, address)?,
    })
}

/// Asks `generator` for `multiplier` times its rate for `for_ms` (1 and 0: back to normal).
pub async fn set(
    http: &reqwest::Client,
    generator: &LoadGenerator,
    multiplier: f64,
    for_ms: u64,
) -> Result<(), String> {
    let response = http
        .post(&generator.url)
        .json(&serde_json::json!({ "multiplier": multiplier, "for_ms": for_ms }))
        .send()
        .await
        .map_err(|e| format!("POST {}: {e}", generator.url))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!(
            "POST {}: status {}",
            generator.url,
            response.status()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spike_is_bounded_and_its_endpoint_read_from_the_labels() {
        let params = |m: &str| BTreeMap::from([("multiplier".to_string(), m.to_string())]);
        assert_eq!(multiplier(&BTreeMap::new()), Ok(DEFAULT_MULTIPLIER));
        assert_eq!(multiplier(&params("3")), Ok(3.0));
        for bad in ["1", "0.5", "51", "NaN", "lots"] {
            assert!(multiplier(&params(bad)).is_err(), "{bad}");
        }
        let address: IpAddr = "10.0.0.7".parse().expect("ip");
        assert_eq!(
            control_url(&HashMap::new(), address),
            Ok("http://10.0.0.7:8089/load".to_string())
        );
        let labelled = HashMap::from([(labels::LOADGEN_CONTROL.to_string(), "9000".to_string())]);
        assert_eq!(
            control_url(&labelled, address),
            Ok("http://10.0.0.7:9000/load".to_string())
        );
        let bad = HashMap::from([(labels::LOADGEN_CONTROL.to_string(), "x".to_string())]);
        assert!(control_url(&bad, address).is_err());
        let orders = ServiceName::new("orders").expect("name");
        assert!(drives("gateway, orders", &orders));
        assert!(drives("orders", &orders));
        assert!(!drives("gateway,orders-v2", &orders));
    }
}
