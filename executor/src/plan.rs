//! What to do for one action request: the guards and the reading of its parameters. Pure
//! functions of the request and what Docker says about the target, tested without I/O.
//!
//! Parameters (`ActionRequest::params`) each action takes; any other key is refused, except
//! `stop_grace_s`, which every action accepts (the decider sends it with each request):
//!
//! | action | params |
//! |---|---|
//! | `restart` | `stop_grace_s` (default 1): seconds between SIGTERM and SIGKILL |
//! | `recreate` | `stop_grace_s` |
//! | `scale_out` | none: one more replica with the same config, labels, networks, aliases |
//! | `scale_in` | `stop_grace_s`: the newest replica is removed, never the last instance |
//! | `pause`, `unpause` | none |
//! | `update_limits` | `cpus` (e.g. `0.5`), `memory` (bytes, or `256m`, `1g`); at least one |
//! | `rollback` | `stop_grace_s`: recreated from the first image of `immune.image_history` |
//! | `reconnect_network` | `network` (default: every network it is on) |
//! | `throttle` | `rps`: requests per second allowed, `0` or `off` lifts the limit |
//! | `circuit_breaker` | `state`: `open` or `closed` |
//! | `feature_flag` | `flag`: the name; `state`: `on` or `off` |
//! | `block_sources` | `state`: `on` or `off` |

use std::collections::BTreeMap;

use immune_nats::{ActionKind, ActionRequest};
use immune_runtime::docker::ManagedContainer;

/// One action, its parameters read and checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Restart { stop_grace_s: u32 },
    Recreate { stop_grace_s: u32 },
    ScaleOut,
    ScaleIn { stop_grace_s: u32 },
    Pause,
    Unpause,
    UpdateLimits(Limits),
    Rollback { stop_grace_s: u32 },
    ReconnectNetwork { network: Option<String> },
    Throttle { rps: u32 },
    CircuitBreaker { open: bool },
    FeatureFlag { flag: String, on: bool },
    BlockSources { on: bool },
}

/// New CPU and memory limits; `None` leaves one as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// CPU in billionths of a core (Docker's `NanoCpus`).
    pub nano_cpus: Option<i64>,
    pub memory_bytes: Option<i64>,
}

impl Step {
    /// Whether the step goes through the service's admin endpoint rather than Docker.
    pub fn is_admin(&self) -> bool {
        matches!(
            self,
            Step::Throttle { .. }
                | Step::CircuitBreaker { .. }
                | Step::FeatureFlag { .. }
                | Step::BlockSources { .. }
        )
    }

    /// Scaling changes the service's set of containers: it is locked per service.
    pub fn locks_service(&self) -> bool {
        matches!(self, Step::ScaleOut | Step::ScaleIn { .. })
    }
}

/// The default seconds between SIGTERM and SIGKILL when a container is stopped.
pub const DEFAULT_STOP_GRACE_S: u32 = 1;
/// The longest stop grace a request may ask for.
pub const MAX_STOP_GRACE_S: u32 = 300;

/// Reads the request's parameters into a [`Step`]; `Err` says which parameter is wrong.
pub fn plan(request: &ActionRequest) -> Result<Step, String> {
    let params = Params::new(request.action, &request.params);
    let step = match request.action {
        ActionKind::Restart => Step::Restart {
            stop_grace_s: params.stop_grace()?,
        },
        ActionKind::Recreate => Step::Recreate {
            stop_grace_s: params.stop_grace()?,
        },
        ActionKind::ScaleOut => Step::ScaleOut,
        ActionKind::ScaleIn => Step::ScaleIn {
            stop_grace_s: params.stop_grace()?,
        },
        ActionKind::Pause => Step::Pause,
        ActionKind::Unpause => Step::Unpause,
        ActionKind::UpdateLimits => {
            let limits = Limits {
                nano_cpus: params.get("cpus").map(parse_cpus).transpose()?,
                memory_bytes: params.get("memory").map(parse_memory).transpose()?,
            };
            if limits.nano_cpus.is_none() && limits.memory_bytes.is_none() {
                return Err("update_limits needs params.cpus or params.memory".into());
            }
            Step::UpdateLimits(limits)
        }
        ActionKind::Rollback => Step::Rollback {
            stop_grace_s: params.stop_grace()?,
        },
        ActionKind::ReconnectNetwork => Step::ReconnectNetwork {
            network: params.get("network").map(str::to_string),
        },
        ActionKind::Throttle => {
            let rps = params.required("rps")?;
            let rps = match rps {
                "off" => 0,
                n => n
                    .parse::<u32>()
                    .map_err(|_| format!("params.rps={n:?}: expected a whole number or off"))?,
            };
            Step::Throttle { rps }
        }
        ActionKind::CircuitBreaker => Step::CircuitBreaker {
            open: params.switch("state", "open", "closed")?,
        },
        ActionKind::BlockSources => Step::BlockSources {
            on: params.switch("state", "on", "off")?,
        },
        ActionKind::FeatureFlag => {
            let flag = params.required("flag")?;
            if flag.is_empty()
                || !flag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(format!(
                    "params.flag={flag:?}: expected letters, digits, _ or -"
                ));
            }
            Step::FeatureFlag {
                flag: flag.to_string(),
                on: params.switch("state", "on", "off")?,
            }
        }
    };
    params.no_others()?;
    Ok(step)
}

/// The guards: the container opted in (checked when its labels were read), belongs to the
/// executor's project and to the service the request names, and has what the step needs.
pub fn guard(
    target: &ManagedContainer,
    request: &ActionRequest,
    step: &Step,
    project: Option<&str>,
) -> Result<(), String> {
    if !target.in_project(project) {
        return Err(format!(
            "container {} belongs to project {}, this executor serves {}",
            target.name,
            target.project.as_deref().unwrap_or("(none)"),
            project.unwrap_or("(any)")
        ));
    }
    if target.service != request.service {
        return Err(format!(
            "container {} is service {}, not {}",
            target.name, target.service, request.service
        ));
    }
    if step.is_admin() && target.admin.is_none() {
        return Err(format!(
            "container {} has no immune.admin label: no admin endpoint for {}",
            target.name, request.action
        ));
    }
    Ok(())
}

/// The parameters of one request, remembering which were read.
struct Params<'a> {
    action: ActionKind,
    all: &'a BTreeMap<String, String>,
    read: std::cell::RefCell<Vec<&'static str>>,
}

impl<'a> Params<'a> {
    fn new(action: ActionKind, all: &'a BTreeMap<String, String>) -> Self {
        Self {
            action,
            all,
            read: std::cell::RefCell::new(vec!["stop_grace_s"]),
        }
    }

    fn get(&self, key: &'static str) -> Option<&'a str> {
        self.read.borrow_mut().push(key);
        self.all.get(key).map(|v| v.trim())
    }

    fn required(&self, key: &'static str) -> Result<&'a str, String> {
        self.get(key)
            .ok_or_else(|| format!("{} needs params.{key}", self.action))
    }

    fn switch(&self, key: &'static str, yes: &str, no: &str) -> Result<bool, String> {
        match self.required(key)? {
            v if v == yes => Ok(true),
            v if v == no => Ok(false),
            v => Err(format!("params.{key}={v:?}: expected {yes} or {no}")),
        }
    }

    fn stop_grace(&self) -> Result<u32, String> {
        match self.get("stop_grace_s") {
            None => Ok(DEFAULT_STOP_GRACE_S),
            Some(v) => match v.parse::<u32>() {
                Ok(s) if s <= MAX_STOP_GRACE_S => Ok(s),
                _ => Err(format!(
                    "params.stop_grace_s={v:?}: expected whole seconds, at most {MAX_STOP_GRACE_S}"
                )),
            },
        }
    }

    fn no_others(&self) -> Result<(), String> {
        let read = self.read.borrow();
        let unknown: Vec<&str> = self
            .all
            .keys()
            .map(String::as_str)
            .filter(|k| !read.contains(k))
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} does not take params {}",
                self.action,
                unknown.join(", ")
            ))
        }
    }
}

/// `0.5` cores → 500 000 000 nano-CPUs.
pub fn parse_cpus(value: &str) -> Result<i64, String> {
    match value.parse::<f64>() {
        Ok(c) if (0.01..=1024.0).contains(&c) => Ok((c * 1e9).round() as i64),
        _ => Err(format!(
            "params.cpus={value:?}: expected cores between 0.01 and 1024, e.g. 0.5"
        )),
    }
}

/// `268435456`, `256k`, `256m`, `1g` (powers of 1024) → bytes; at least 6 MiB (Docker's floor).
pub fn parse_memory(value: &str) -> Result<i64, String> {
    let lower = value.to_ascii_lowercase();
    let lower = lower.trim_end_matches('b');
    let (digits, unit) = match lower.char_indices().last() {
        Some((i, 'k')) => (&lower[..i], 1i64 << 10),
        Some((i, 'm')) => (&lower[..i], 1 << 20),
        Some((i, 'g')) => (&lower[..i], 1 << 30),
        _ => (lower, 1),
    };
    let bad =
        || format!("params.memory={value:?}: expected bytes or a size like 256m, 1g (at least 6m)");
    let n = digits.parse::<i64>().map_err(|_| bad())?;
    let bytes = n.checked_mul(unit).ok_or_else(bad)?;
    if bytes < 6 << 20 {
        return Err(bad());
    }
    Ok(bytes)
}

/// The image a rollback goes back to, and the history the new container keeps.
pub fn rollback_target(history: Option<&str>) -> Result<(String, Option<String>), String> {
    let mut images = history
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let previous = images.next().ok_or_else(|| {
        "no earlier image recorded: the container has no immune.image_history label".to_string()
    })?;
    let rest: Vec<&str> = images.collect();
    let rest = (!rest.is_empty()).then(|| rest.join(","));
    Ok((previous.to_string(), rest))
}

/// One container of a service, as scale in sees it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Instance {
    pub id: String,
    pub name: String,
    /// Created by a scale out (carries `immune.replica_of`).
    pub replica: bool,
    pub running: bool,
    /// Creation time, RFC 3339 as Docker gives it (sorts by time).
    pub created: String,
}

/// The replica a scale in removes: the newest one the executor created, and only while
/// another instance keeps running.
pub fn scale_in_victim(instances: &[Instance]) -> Result<&Instance, String> {
    let running = instances.iter().filter(|i| i.running).count();
    let victim = instances
        .iter()
        .filter(|i| i.replica)
        .max_by(|a, b| a.created.cmp(&b.created).then(a.name.cmp(&b.name)))
        .ok_or("no replica created by a scale out to remove; the original is never removed")?;
    let others_running = running - usize::from(victim.running);
    if others_running == 0 {
        return Err(format!(
            "{} is the last running instance of the service; not removed",
            victim.name
        ));
    }
    Ok(victim)
}

/// The name of the replica a scale out creates: fixed by the action id, so a redelivered
/// request finds the replica it already made instead of making another.
pub fn replica_name(original: &str, action_id: &str) -> String {
    // FNV-1a: stable across builds and platforms.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in action_id.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let base = original.split("-replica-").next().unwrap_or(original);
    format!("{base}-replica-{:08x}", hash as u32)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use immune_nats::{samples, ContainerState};

    use super::*;

    fn request(action: ActionKind, params: &[(&str, &str)]) -> ActionRequest {
        let mut r = samples::action_request();
        r.action = action;
        r.params = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        r
    }

    fn target(labels: &[(&str, &str)]) -> ManagedContainer {
        let labels: HashMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ManagedContainer::from_labels("id", "/orders-1", &labels, ContainerState::Running, None)
            .expect("managed")
    }

    #[test]
    fn reads_each_actions_params() {
        assert_eq!(
            plan(&request(ActionKind::Restart, &[])),
            Ok(Step::Restart { stop_grace_s: 1 })
        );
        assert_eq!(
            plan(&request(ActionKind::Restart, &[("stop_grace_s", "7")])),
            Ok(Step::Restart { stop_grace_s: 7 })
        );
        assert_eq!(
            plan(&request(
                ActionKind::UpdateLimits,
                &[("cpus", "0.5"), ("memory", "256m")]
            )),
            Ok(Step::UpdateLimits(Limits {
                nano_cpus: Some(500_000_000),
                memory_bytes: Some(256 << 20)
            }))
        );
        assert_eq!(
            plan(&request(ActionKind::Throttle, &[("rps", "off")])),
            Ok(Step::Throttle { rps: 0 })
        );
        assert_eq!(
            plan(&request(ActionKind::CircuitBreaker, &[("state", "open")])),
            Ok(Step::CircuitBreaker { open: true })
        );
        assert_eq!(
            plan(&request(ActionKind::BlockSources, &[("state", "on")])),
            Ok(Step::BlockSources { on: true })
        );
        assert_eq!(
            plan(&request(
                ActionKind::FeatureFlag,
                &[("flag", "upstream_calls"), ("state", "off")]
            )),
            Ok(Step::FeatureFlag {
                flag: "upstream_calls".into(),
                on: false
            })
        );
        // Every action accepts the decider's stop grace.
        assert_eq!(
            plan(&request(ActionKind::Pause, &[("stop_grace_s", "2")])),
            Ok(Step::Pause)
        );
    }

    #[test]
    fn bad_params_are_refused_with_the_key_named() {
        type Case<'a> = (ActionKind, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case] = &[
            (
                ActionKind::Restart,
                &[("stop_grace_s", "-1")],
                "stop_grace_s",
            ),
            (
                ActionKind::Restart,
                &[("stop_grace_s", "9999")],
                "stop_grace_s",
            ),
            (ActionKind::Restart, &[("force", "yes")], "force"),
            (ActionKind::UpdateLimits, &[], "cpus"),
            (ActionKind::UpdateLimits, &[("cpus", "lots")], "cpus"),
            (ActionKind::UpdateLimits, &[("memory", "1k")], "memory"),
            (ActionKind::Throttle, &[], "rps"),
            (ActionKind::Throttle, &[("rps", "1.5")], "rps"),
            (ActionKind::CircuitBreaker, &[("state", "half")], "state"),
            (ActionKind::BlockSources, &[("state", "all")], "state"),
            (ActionKind::FeatureFlag, &[("state", "on")], "flag"),
            (
                ActionKind::FeatureFlag,
                &[("flag", "a/b"), ("state", "on")],
                "flag",
            ),
        ];
        for (action, params, key) in cases {
            let err = plan(&request(*action, params)).expect_err("refused");
            assert!(err.contains(key), "{action} {params:?}: {err}");
        }
    }

    #[test]
    fn sizes_read_as_operators_write_them() {
        assert_eq!(parse_memory("1g"), Ok(1 << 30));
        assert_eq!(parse_memory("64MB"), Ok(64 << 20));
        assert_eq!(parse_memory("10485760"), Ok(10 << 20));
        assert!(parse_memory("5m").is_err());
        assert!(parse_memory("m").is_err());
        assert_eq!(parse_cpus("1.5"), Ok(1_500_000_000));
        assert!(parse_cpus("0").is_err() && parse_cpus("NaN").is_err());
    }

    #[test]
    fn guards_refuse_other_projects_services_and_missing_admin() {
        let step = Step::Restart { stop_grace_s: 1 };
        let shop = target(&[
            ("immune.enable", "true"),
            ("immune.service", "orders"),
            ("immune.project", "shop"),
        ]);
        let mut r = request(ActionKind::Restart, &[]);
        r.service = immune_nats::ServiceName::new("orders").expect("name");
        assert_eq!(guard(&shop, &r, &step, Some("shop")), Ok(()));
        assert_eq!(guard(&shop, &r, &step, None), Ok(()));
        let err = guard(&shop, &r, &step, Some("bank")).expect_err("other project");
        assert!(
            err.contains("project shop") && err.contains("bank"),
            "{err}"
        );
        let unowned = target(&[("immune.enable", "true"), ("immune.service", "orders")]);
        assert!(guard(&unowned, &r, &step, Some("shop")).is_err());
        r.service = immune_nats::ServiceName::new("payments").expect("name");
        let err = guard(&shop, &r, &step, Some("shop")).expect_err("other service");
        assert!(err.contains("not payments"), "{err}");
        r.service = immune_nats::ServiceName::new("orders").expect("name");
        let err = guard(&shop, &r, &Step::Throttle { rps: 5 }, Some("shop"))
            .expect_err("no admin endpoint");
        assert!(err.contains("immune.admin"), "{err}");
    }

    #[test]
    fn rollback_takes_the_newest_earlier_image() {
        assert_eq!(
            rollback_target(Some("demo:v2, demo:v1")),
            Ok(("demo:v2".into(), Some("demo:v1".into())))
        );
        assert_eq!(
            rollback_target(Some("demo:v1")),
            Ok(("demo:v1".into(), None))
        );
        assert!(rollback_target(None).is_err());
        assert!(rollback_target(Some(" , ")).is_err());
    }

    fn instance(name: &str, replica: bool, running: bool, created: &str) -> Instance {
        Instance {
            id: format!("id-{name}"),
            name: name.into(),
            replica,
            running,
            created: created.into(),
        }
    }

    #[test]
    fn scale_in_removes_the_newest_replica_never_the_last_instance() {
        let all = [
            instance("orders", false, true, "2024-01-01T00:00:00Z"),
            instance("orders-replica-a", true, true, "2024-01-01T00:00:02Z"),
            instance("orders-replica-b", true, true, "2024-01-01T00:00:01Z"),
        ];
        assert_eq!(
            scale_in_victim(&all).map(|i| i.name.as_str()),
            Ok("orders-replica-a")
        );
        assert!(scale_in_victim(&all[..1]).is_err(), "no replica");
        let only_replica_runs = [
            instance("orders", false, false, "2024-01-01T00:00:00Z"),
            instance("orders-replica-a", true, true, "2024-01-01T00:00:02Z"),
        ];
        let err = scale_in_victim(&only_replica_runs).expect_err("last running");
        assert!(err.contains("last running"), "{err}");
    }

    #[test]
    fn replica_names_follow_the_action_id() {
        let a = replica_name("orders-1", "action-1");
        assert_eq!(a, replica_name("orders-1", "action-1"));
        assert_ne!(a, replica_name("orders-1", "action-2"));
        assert!(a.starts_with("orders-1-replica-"), "{a}");
        // A replica of a replica is named after the original.
        assert!(replica_name(&a, "action-3").starts_with("orders-1-replica-"));
    }
}
