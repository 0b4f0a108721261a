//! Approvals: an operator's answer to a held step; granted issues it under the held action
//! id, denied moves on to the next step.

use immune_nats::Approval;
use immune_nats::AuditCode;

use super::incident::{emit_action_audit, note, Phase};
use super::{Decided, Decider};

impl Decider {
    pub(super) fn on_approval(&mut self, approval: &Approval, now_ms: u64, out: &mut Vec<Decided>) {
        let Some(open) = self.open.get_mut(&approval.service) else {
            return;
        };
        let Phase::Held { request, .. } = &open.phase else {
            return;
        };
        if request.action_id != approval.action_id {
            return;
        }
        let action = request.action;
        let action_id = request.action_id.clone();
        if approval.approved {
            note(
                open,
                now_ms,
                format!("{action} approved by {}", approval.by),
            );
            emit_action_audit(
                open,
                out,
                AuditCode::ApprovalGranted,
                &action_id,
                format!("{} approved {action}", approval.by),
                format!("issuing {action_id}"),
            );
            open.approved = Some(action_id);
            open.phase = Phase::Pending { blocked: None };
            self.try_issue(&approval.service, now_ms, out);
        } else {
            emit_action_audit(
                open,
                out,
                AuditCode::ApprovalDenied,
                &action_id,
                format!("{} denied {action}", approval.by),
                "trying the next step".into(),
            );
            let detail = format!("denied by {}", approval.by);
            self.step_failed(&approval.service, "denied", detail, false, now_ms, out);
        }
    }
}
