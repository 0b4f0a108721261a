//! The decision rules, one by one, without NATS: one file per concept of the policy, named
//! after the module of `policy/` it tests (`learning`: the policy's use of
//! [`crate::learning`]), and the builders they share in `fixtures`.

mod approval;
mod control;
mod escalation;
mod fixtures;
mod incident;
mod learning;
mod learning_curve;
mod memory;
mod mitigation;
mod root_cause;
mod rules;
mod step;
mod verification;
