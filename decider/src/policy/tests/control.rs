//! Controls: a value the decider cannot read is refused, audited, and changes nothing.

use immune_nats::Signature;

use super::fixtures::{actions, audits, config, decider, fire, firing};
use crate::policy::Input;
use crate::safety::KILL_SWITCH_KEY;

#[test]
fn a_bad_control_value_is_refused_and_audited() {
    let mut d = decider(config());
    let out = d.decide(
        Input::Control {
            key: KILL_SWITCH_KEY,
            value: Some("yes please"),
        },
        0,
    );
    assert_eq!(audits(&out), ["control.rejected"]);
    assert_eq!(
        actions(&fire(&mut d, &firing(Signature::Crashed), 1)).len(),
        1
    );
}
