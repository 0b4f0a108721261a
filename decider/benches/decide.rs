//! Decision latency per anomaly, excluding I/O: the pure policy fed a stream of firing and
//! clearing anomalies over many services (with results in between), each `decide` call
//! timed. Prints p50, p99 and max per input kind; the target is p99 under 100 µs.
//!
//! `cargo bench -p immune-decider --bench decide`

use std::time::Instant;

use immune_decider::{Decider, Input, Playbook, PolicyConfig};
use immune_nats::{
    samples, ActionOutcome, ActionResult, Anomaly, AnomalyState, ServiceName, Signature,
};

const SERVICES: usize = 200;
const ROUNDS: usize = 50;

fn percentile(sorted: &[u128], p: f64) -> u128 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn report(what: &str, mut ns: Vec<u128>) {
    ns.sort_unstable();
    println!(
        "{what:<28} n={:<7} p50={:>7.2} µs  p99={:>7.2} µs  max={:>8.2} µs",
        ns.len(),
        percentile(&ns, 0.50) as f64 / 1_000.0,
        percentile(&ns, 0.99) as f64 / 1_000.0,
        *ns.last().unwrap_or(&0) as f64 / 1_000.0,
    );
}

fn main() {
    let signatures = [
        Signature::Crashed,
        Signature::Unresponsive,
        Signature::LatencyUp,
        Signature::ErrorsUp,
        Signature::ResourceExhaustion,
    ];
    let services: Vec<ServiceName> = (0..SERVICES)
        .map(|i| ServiceName::new(format!("svc{i:03}")).expect("name"))
        .collect();
    let mut config = PolicyConfig {
        cooldown_ms: 0,
        max_services_acting: SERVICES,
        ..Default::default()
    };
    config.global_budget.burst = 1_000_000;
    config.service_budget.burst = 1_000_000;
    let mut decider = Decider::new(config, Playbook::default());
    let (mut firing_ns, mut cleared_ns, mut result_ns, mut tick_ns, mut memory_ns) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut memory_bytes = 0;
    let mut now = 1_000u64;
    for round in 0..ROUNDS {
        let mut requests = Vec::new();
        for (i, service) in services.iter().enumerate() {
            let anomaly = Anomaly {
                // one id per episode: the decider ignores an id it has settled
                anomaly_id: format!("{service}-{round}"),
                service: service.clone(),
                instance: format!("{service}-1"),
                container_id: format!("c-{service}"),
                state: AnomalyState::Firing,
                signature: signatures[(i + round) % signatures.len()],
                // a chain: every tenth service calls the next one
                depends_on: if i % 10 == 0 && i + 1 < SERVICES {
                    vec![services[i + 1].clone()]
                } else {
                    Vec::new()
                },
                ..samples::anomaly()
            };
            let started = Instant::now();
            let out = decider.decide(
                Input::Anomaly {
                    anomaly: &anomaly,
                    correlation_id: None,
                },
                now,
            );
            firing_ns.push(started.elapsed().as_nanos());
            requests.extend(out.into_iter().filter_map(|d| match d.decision {
                immune_decider::Decision::Action(a) => Some(a),
                _ => None,
            }));
        }
        now += 100;
        for request in &requests {
            let result = ActionResult {
                action_id: request.action_id.clone(),
                service: request.service.clone(),
                action: request.action,
                outcome: ActionOutcome::Succeeded,
                ..samples::action_result()
            };
            let started = Instant::now();
            decider.decide(Input::Result(&result), now);
            result_ns.push(started.elapsed().as_nanos());
        }
        let started = Instant::now();
        decider.decide(Input::Tick, now);
        tick_ns.push(started.elapsed().as_nanos());
        now += 100;
        let started = Instant::now();
        let memory = decider.memory();
        memory_ns.push(started.elapsed().as_nanos());
        memory_bytes = memory.values().map(Vec::len).sum();
        for service in &services {
            let anomaly = Anomaly {
                anomaly_id: format!("{service}-{round}"),
                service: service.clone(),
                state: AnomalyState::Cleared,
                ..samples::anomaly()
            };
            let started = Instant::now();
            decider.decide(
                Input::Anomaly {
                    anomaly: &anomaly,
                    correlation_id: None,
                },
                now,
            );
            cleared_ns.push(started.elapsed().as_nanos());
        }
        now += 60_000;
    }
    println!("decision latency, pure policy, {SERVICES} services x {ROUNDS} rounds (no I/O):");
    let mut per_anomaly = firing_ns.clone();
    per_anomaly.extend(&cleared_ns);
    report("anomaly (firing+cleared)", per_anomaly);
    report("anomaly firing (opens)", firing_ns);
    report("anomaly cleared (recovers)", cleared_ns);
    report("action result", result_ns);
    report(&format!("tick ({SERVICES} open)"), tick_ns);
    // What the running decider encodes after each input (and each tick that decided
    // something) to find what changed; it writes only the entries that did: all open
    // incidents and the shared state, with the settled anomalies at their cap by the last
    // rounds.
    report(&format!("memory encode ({SERVICES} open)"), memory_ns);
    let started = Instant::now();
    let settled = decider.memory();
    let took = started.elapsed().as_nanos();
    println!(
        "memory encode, none open, settled at cap: {:.2} µs, {} bytes ({} bytes with {SERVICES} open)",
        took as f64 / 1_000.0,
        settled.values().map(Vec::len).sum::<usize>(),
        memory_bytes
    );
}
