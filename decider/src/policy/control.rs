//! Controls: an entry of the control bucket changed (the kill switch, a maintenance
//! window); the change is applied and audited, or refused with the reason, and every
//! waiting step is re-checked.

use immune_nats::AuditCode;
use immune_nats::ServiceName;

use super::{Decided, Decider, Decision};

impl Decider {
    pub(super) fn on_control(
        &mut self,
        key: &str,
        value: Option<&str>,
        now_ms: u64,
        out: &mut Vec<Decided>,
    ) {
        let service = ServiceName::new("decider").expect("valid name");
        let (what, why) = match self.controls.apply(key, value) {
            Ok(changed) => (AuditCode::ControlChanged, changed),
            Err(reason) => (AuditCode::ControlRejected, reason),
        };
        out.push(Decided {
            correlation_id: format!("control-{now_ms}"),
            decision: Decision::Audit {
                service,
                what,
                why,
                outcome: format!("{key} = {}", value.unwrap_or("(deleted)")),
                action_id: None,
            },
        });
        if what == AuditCode::ControlChanged {
            self.retry_pending(now_ms, out);
        }
    }
}
