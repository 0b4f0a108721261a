//! The keys of the control buckets (`immune_decider_control`, `immune_chaos_control`), typed
//! once: the decider, chaos, the CLI and the console read and write the same words.

use crate::service::ServiceName;

/// Key of a kill switch in its bucket: `on` engages it, `off` (or no entry) releases it.
/// In the decider's bucket it stops every healing action; in chaos's it reverts every fault
/// in force and refuses new ones.
pub const KILL_SWITCH: &str = "kill_switch";
/// A kill switch's value when engaged.
pub const ON: &str = "on";
/// A kill switch's value when released.
pub const OFF: &str = "off";
/// Prefix of a maintenance window's key in the decider's bucket:
/// `maintenance.<service>` = `<from_ms>..<until_ms>` (Unix ms).
pub const MAINTENANCE_PREFIX: &str = "maintenance.";

/// The key of `service`'s maintenance window.
pub fn maintenance_key(service: &ServiceName) -> String {
    format!("{MAINTENANCE_PREFIX}{service}")
}

/// The service a maintenance window's key names, if `key` is one (not yet checked as a name).
pub fn maintenance_service(key: &str) -> Option<&str> {
    key.strip_prefix(MAINTENANCE_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_maintenance_key_names_its_service() {
        let orders = ServiceName::new("orders").expect("a valid name");
        let key = maintenance_key(&orders);
        assert_eq!(key, "maintenance.orders");
        assert_eq!(maintenance_service(&key), Some("orders"));
        assert_eq!(maintenance_service(KILL_SWITCH), None);
    }
}
