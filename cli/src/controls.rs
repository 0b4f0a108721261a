//! The run-time controls an operator flips: the two kill switches and maintenance windows.
//!
//! - The **healing** kill switch is key `kill_switch` of the decider's bucket
//!   `immune_decider_control`: engaged, the decider takes no action at all (incidents are
//!   still opened and audited).
//! - The **chaos** kill switch is key `kill_switch` of `immune_chaos_control`: engaged, every
//!   fault in force is reverted at once and every chaos request is refused.
//! - A **maintenance window** is key `maintenance.<service>` = `<from_ms>..<until_ms>` in the
//!   decider's bucket: no action on that service inside it.
//!
//! Both stages watch their bucket, so a change takes effect while they run. Every change made
//! here is also written to the audit trail (stage `client`) with who made it and why.

use async_nats::jetstream::kv;
use futures::TryStreamExt;
use immune_decider::safety::{self, KILL_SWITCH_KEY, MAINTENANCE_PREFIX};
use immune_nats::streams::{BucketSpec, CHAOS_CONTROL, DECIDER_CONTROL};
use immune_nats::{control, AuditCode, ServiceName};
use immune_runtime::{Audit, Bus, BusError};
use serde::Serialize;

use crate::CliError;

/// Which kill switches a command touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switches {
    /// The decider's: no healing action while on.
    pub healing: bool,
    /// The chaos stage's: no fault injected while on.
    pub chaos: bool,
}

impl Switches {
    /// `--healing` / `--chaos` as given; neither means both.
    pub fn chosen(healing: bool, chaos: bool) -> Switches {
        if healing || chaos {
            Switches { healing, chaos }
        } else {
            Switches {
                healing: true,
                chaos: true,
            }
        }
    }

    pub fn describe(self) -> &'static str {
        match (self.healing, self.chaos) {
            (true, true) => "healing and chaos",
            (true, false) => "healing",
            _ => "chaos",
        }
    }
}

/// Whether a maintenance window holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowState {
    Scheduled,
    Active,
    Expired,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Window {
    pub service: String,
    pub from_ms: u64,
    pub until_ms: u64,
    pub state: WindowState,
}

impl Window {
    pub fn new(service: String, from_ms: u64, until_ms: u64, now_ms: u64) -> Window {
        let state = if now_ms < from_ms {
            WindowState::Scheduled
        } else if now_ms < until_ms {
            WindowState::Active
        } else {
            WindowState::Expired
        };
        Window {
            service,
            from_ms,
            until_ms,
            state,
        }
    }
}

/// The controls as the buckets hold them now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Controls {
    pub healing_kill_switch: bool,
    pub chaos_kill_switch: bool,
    pub maintenance: Vec<Window>,
    /// Entries the decider would refuse too (with the reason), so an operator sees them.
    pub unreadable: Vec<String>,
}

fn kv_error(spec: BucketSpec, e: impl std::fmt::Display) -> CliError {
    CliError::Bus(BusError::KeyValue {
        bucket: spec.name.to_string(),
        reason: e.to_string(),
    })
}

async fn switch_on(store: &kv::Store, spec: BucketSpec) -> Result<bool, CliError> {
    let value = store
        .get(KILL_SWITCH_KEY)
        .await
        .map_err(|e| kv_error(spec, e))?;
    Ok(value.is_some_and(|v| v.as_ref() == control::ON.as_bytes()))
}

/// Reads both kill switches and every maintenance window.
pub async fn read(bus: &Bus, now_ms: u64) -> Result<Controls, CliError> {
    let decider = bus.bucket(DECIDER_CONTROL).await?;
    let chaos = bus.bucket(CHAOS_CONTROL).await?;
    let mut controls = Controls {
        healing_kill_switch: switch_on(&decider, DECIDER_CONTROL).await?,
        chaos_kill_switch: switch_on(&chaos, CHAOS_CONTROL).await?,
        maintenance: Vec::new(),
        unreadable: Vec::new(),
    };
    let keys: Vec<String> = decider
        .keys()
        .await
        .map_err(|e| kv_error(DECIDER_CONTROL, e))?
        .try_collect()
        .await
        .map_err(|e| kv_error(DECIDER_CONTROL, e))?;
    // The decider's own reading of each entry, so both agree on what a window is.
    let mut parsed = safety::Controls::default();
    for key in keys.iter().filter(|k| k.starts_with(MAINTENANCE_PREFIX)) {
        let Some(value) = decider
            .get(key.as_str())
            .await
            .map_err(|e| kv_error(DECIDER_CONTROL, e))?
        else {
            continue;
        };
        if let Err(why) = parsed.apply(key, Some(&String::from_utf8_lossy(&value))) {
            controls.unreadable.push(why);
        }
    }
    controls.maintenance = parsed
        .maintenance
        .into_iter()
        .map(|(service, (from, until))| Window::new(service.to_string(), from, until, now_ms))
        .collect();
    Ok(controls)
}

/// Engages (`on`) or releases the chosen kill switches.
pub async fn set_kill_switch(bus: &Bus, switches: Switches, on: bool) -> Result<(), CliError> {
    let value = if on { control::ON } else { control::OFF };
    if switches.healing {
        let store = bus.bucket(DECIDER_CONTROL).await?;
        store
            .put(KILL_SWITCH_KEY, value.into())
            .await
            .map_err(|e| kv_error(DECIDER_CONTROL, e))?;
    }
    if switches.chaos {
        immune_chaos::set_kill_switch(bus, on).await?;
    }
    Ok(())
}

/// The key of `service`'s maintenance window.
pub fn window_key(service: &ServiceName) -> String {
    format!("{MAINTENANCE_PREFIX}{service}")
}

/// Sets `service`'s maintenance window (replacing any earlier one).
pub async fn add_window(
    bus: &Bus,
    service: &ServiceName,
    from_ms: u64,
    until_ms: u64,
) -> Result<(), CliError> {
    if from_ms >= until_ms {
        return Err(CliError::Usage(
            "the window must end after it starts".into(),
        ));
    }
    let store = bus.bucket(DECIDER_CONTROL).await?;
    store
        .put(window_key(service), format!("{from_ms}..{until_ms}").into())
        .await
        .map_err(|e| kv_error(DECIDER_CONTROL, e))?;
    Ok(())
}

/// Removes `service`'s maintenance window; `false` when it had none.
pub async fn remove_window(bus: &Bus, service: &ServiceName) -> Result<bool, CliError> {
    let store = bus.bucket(DECIDER_CONTROL).await?;
    let key = window_key(service);
    let existed = store
        .get(key.as_str())
        .await
        .map_err(|e| kv_error(DECIDER_CONTROL, e))?
        .is_some();
    if existed {
        store
            .delete(key.as_str())
            .await
            .map_err(|e| kv_error(DECIDER_CONTROL, e))?;
    }
    Ok(existed)
}

/// Writes a control change to the audit trail; a failure is reported, not fatal (the change
/// itself is made).
pub async fn audit_change(
    bus: &Bus,
    service: &ServiceName,
    what: AuditCode,
    why: String,
    outcome: String,
) {
    if let Err(e) = bus
        .audit(None, Audit::new(service, what, why, outcome))
        .await
    {
        eprintln!("warning: the change was made but not written to the audit trail: {e}");
    }
}

/// The service name control changes that concern every service are audited under.
pub fn all_services() -> ServiceName {
    ServiceName::new("all").expect("a valid name")
}

/// Who is making a change: `--by`, else `$USER`, else `operator`.
pub fn operator(by: Option<String>) -> String {
    by.or_else(|| std::env::var("USER").ok())
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "operator".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neither_switch_named_means_both() {
        assert_eq!(
            Switches::chosen(false, false).describe(),
            "healing and chaos"
        );
        assert_eq!(Switches::chosen(true, false).describe(), "healing");
        assert_eq!(
            Switches::chosen(false, true),
            Switches {
                healing: false,
                chaos: true
            }
        );
    }

    #[test]
    fn a_window_knows_whether_it_holds() {
        assert_eq!(
            Window::new("a".into(), 10, 20, 5).state,
            WindowState::Scheduled
        );
        assert_eq!(
            Window::new("a".into(), 10, 20, 10).state,
            WindowState::Active
        );
        assert_eq!(
            Window::new("a".into(), 10, 20, 20).state,
            WindowState::Expired
        );
    }

    #[test]
    fn the_key_is_the_one_the_decider_reads() {
        let orders = ServiceName::new("orders").expect("valid");
        let mut c = safety::Controls::default();
        c.apply(&window_key(&orders), Some("1..2"))
            .expect("the decider accepts it");
        assert_eq!(c.in_maintenance(&orders, 1), Some(2));
    }
}
