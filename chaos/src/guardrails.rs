//! The guardrails: whether a chaos request may be carried out, on which container and for how
//! long. [`admit`] is a pure function of the request, the config, what the stage read just
//! before (the kill switch, the managed containers) and how many faults are in force; the
//! stage does that reading and acts on the [`Admission`]. A request is admitted only while the
//! kill switch is released, into a running managed container of the requested service, of the
//! configured project and labelled `immune.chaos=true`, for at most `max_duration_ms`, and
//! only while fewer than `max_concurrent_faults` are in force. In dry-run mode an admitted
//! request is only described.

use immune_nats::{ChaosRequest, ContainerState, ServiceName};
use immune_runtime::docker::ManagedContainer;

use crate::Config;

/// The kill switch as the stage read it just before the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KillSwitch {
    Released,
    Engaged,
    /// It could not be read: refused, as if engaged.
    Unreadable(String),
}

impl From<Result<bool, String>> for KillSwitch {
    fn from(read: Result<bool, String>) -> Self {
        match read {
            Ok(false) => KillSwitch::Released,
            Ok(true) => KillSwitch::Engaged,
            Err(e) => KillSwitch::Unreadable(e),
        }
    }
}

/// A request the guardrails let through: the container it breaks and for how long.
#[derive(Debug, Clone, PartialEq)]
pub struct Admitted {
    pub target: ManagedContainer,
    pub duration_ms: u64,
}

/// What the guardrails say of a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    Inject(Admitted),
    /// Admitted, but the stage is in dry-run mode: nothing is touched.
    DryRun(Admitted),
    Refused(Refusal),
}

/// Why the guardrails refused; its text is the `ChaosRejected` reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the chaos kill switch is engaged")]
    KillSwitchEngaged,
    #[error("cannot read the kill switch ({0}): refusing")]
    KillSwitchUnreadable(String),
    #[error("no running managed container of service {service} in project {project:?}")]
    NoRunningContainer {
        service: ServiceName,
        project: Option<String>,
    },
    #[error("no container of service {service} is labelled immune.chaos=true")]
    NotLabelled { service: ServiceName },
    #[error("duration {asked_ms} ms exceeds max_duration_ms {max_ms}")]
    TooLong { asked_ms: u64, max_ms: u64 },
    #[error("{max} faults already in force (max_concurrent_faults)")]
    TooManyInForce { max: usize },
}

/// Decides a request: `containers` are the managed containers the stage listed (any state,
/// any service), `in_force` the number of faults in force now.
pub fn admit(
    config: &Config,
    request: &ChaosRequest,
    kill_switch: &KillSwitch,
    containers: &[ManagedContainer],
    in_force: usize,
) -> Admission {
    match kill_switch {
        KillSwitch::Released => {}
        KillSwitch::Engaged => return Admission::Refused(Refusal::KillSwitchEngaged),
        KillSwitch::Unreadable(e) => {
            return Admission::Refused(Refusal::KillSwitchUnreadable(e.clone()))
        }
    }
    let project = config.project.as_deref();
    let candidates: Vec<&ManagedContainer> = containers
        .iter()
        .filter(|c| {
            c.service == request.service
                && c.state == ContainerState::Running
                && (project.is_none() || c.project.as_deref() == project)
        })
        .collect();
    let Some(target) = candidates.iter().find(|c| c.chaos) else {
        return Admission::Refused(if candidates.is_empty() {
            Refusal::NoRunningContainer {
                service: request.service.clone(),
                project: config.project.clone(),
            }
        } else {
            Refusal::NotLabelled {
                service: request.service.clone(),
            }
        });
    };
    let duration_ms = match request.duration_ms {
        0 => config.default_duration_ms,
        d if d > config.max_duration_ms => {
            return Admission::Refused(Refusal::TooLong {
                asked_ms: d,
                max_ms: config.max_duration_ms,
            })
        }
        d => d,
    };
    let admitted = Admitted {
        target: (*target).clone(),
        duration_ms,
    };
    if config.dry_run {
        return Admission::DryRun(admitted);
    }
    if in_force >= config.max_concurrent_faults {
        return Admission::Refused(Refusal::TooManyInForce {
            max: config.max_concurrent_faults,
        });
    }
    Admission::Inject(admitted)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use immune_nats::FaultKind;

    use super::*;

    fn service(name: &str) -> ServiceName {
        ServiceName::new(name).expect("a valid service name")
    }

    /// A running container of `orders` in project `demo`, labelled `immune.chaos=true`.
    fn container(name: &str) -> ManagedContainer {
        ManagedContainer {
            id: format!("id-{name}"),
            name: name.to_string(),
            service: service("orders"),
            state: ContainerState::Running,
            address: None,
            metrics: None,
            health: None,
            admin: None,
            chaos: true,
            project: Some("demo".to_string()),
            depends_on: Vec::new(),
        }
    }

    fn request(duration_ms: u64) -> ChaosRequest {
        ChaosRequest {
            run_id: None,
            service: service("orders"),
            fault: FaultKind::Crash,
            duration_ms,
            params: BTreeMap::new(),
        }
    }

    fn config() -> Config {
        Config {
            project: Some("demo".to_string()),
            max_concurrent_faults: 2,
            default_duration_ms: 30_000,
            max_duration_ms: 60_000,
            ..Config::default()
        }
    }

    fn refusal(admission: Admission) -> Refusal {
        match admission {
            Admission::Refused(refusal) => refusal,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_labelled_running_container_is_admitted_for_the_asked_duration() {
        let containers = [container("orders-1")];
        let admission = admit(
            &config(),
            &request(5_000),
            &KillSwitch::Released,
            &containers,
            1,
        );
        assert_eq!(
            admission,
            Admission::Inject(Admitted {
                target: container("orders-1"),
                duration_ms: 5_000
            })
        );
    }

    #[test]
    fn a_duration_of_zero_is_the_default_and_the_first_labelled_container_is_chosen() {
        let unlabelled = ManagedContainer {
            chaos: false,
            ..container("orders-1")
        };
        let containers = [unlabelled, container("orders-2"), container("orders-3")];
        let admission = admit(
            &config(),
            &request(0),
            &KillSwitch::Released,
            &containers,
            0,
        );
        assert_eq!(
            admission,
            Admission::Inject(Admitted {
                target: container("orders-2"),
                duration_ms: 30_000
            })
        );
    }

    #[test]
    fn an_engaged_kill_switch_refuses_everything() {
        let containers = [container("orders-1")];
        let refused = refusal(admit(
            &config(),
            &request(5_000),
            &KillSwitch::Engaged,
            &containers,
            0,
        ));
        assert_eq!(refused, Refusal::KillSwitchEngaged);
        assert_eq!(refused.to_string(), "the chaos kill switch is engaged");
    }

    #[test]
    fn an_unreadable_kill_switch_refuses_everything() {
        let containers = [container("orders-1")];
        let refused = refusal(admit(
            &config(),
            &request(5_000),
            &KillSwitch::from(Err("timed out".to_string())),
            &containers,
            0,
        ));
        assert_eq!(
            refused.to_string(),
            "cannot read the kill switch (timed out): refusing"
        );
    }

    #[test]
    fn no_running_container_of_the_service_in_the_project_is_refused() {
        let stopped = ManagedContainer {
            state: ContainerState::Exited,
            ..container("orders-1")
        };
        let elsewhere = ManagedContainer {
            project: Some("other".to_string()),
            ..container("orders-2")
        };
        let payments = ManagedContainer {
            service: service("payments"),
            ..container("payments-1")
        };
        let refused = refusal(admit(
            &config(),
            &request(5_000),
            &KillSwitch::Released,
            &[stopped, elsewhere, payments],
            0,
        ));
        assert_eq!(
            refused.to_string(),
            "no running managed container of service orders in project Some(\"demo\")"
        );
        let unset = Config {
            project: None,
            ..config()
        };
        let refused = refusal(admit(
            &unset,
            &request(5_000),
            &KillSwitch::Released,
            &[],
            0,
        ));
        assert_eq!(
            refused.to_string(),
            "no running managed container of service orders in project None"
        );
    }

    #[test]
    fn without_a_configured_project_any_project_is_a_candidate() {
        let elsewhere = ManagedContainer {
            project: Some("other".to_string()),
            ..container("orders-1")
        };
        let unset = Config {
            project: None,
            ..config()
        };
        let admission = admit(
            &unset,
            &request(5_000),
            &KillSwitch::Released,
            std::slice::from_ref(&elsewhere),
            0,
        );
        assert_eq!(
            admission,
            Admission::Inject(Admitted {
                target: elsewhere,
                duration_ms: 5_000
            })
        );
    }

    #[test]
    fn running_containers_without_the_chaos_label_are_refused() {
        let unlabelled = ManagedContainer {
            chaos: false,
            ..container("orders-1")
        };
        let refused = refusal(admit(
            &config(),
            &request(5_000),
            &KillSwitch::Released,
            &[unlabelled],
            0,
        ));
        assert_eq!(
            refused.to_string(),
            "no container of service orders is labelled immune.chaos=true"
        );
    }

    #[test]
    fn a_duration_beyond_the_maximum_is_refused() {
        let containers = [container("orders-1")];
        let refused = refusal(admit(
            &config(),
            &request(60_001),
            &KillSwitch::Released,
            &containers,
            0,
        ));
        assert_eq!(
            refused.to_string(),
            "duration 60001 ms exceeds max_duration_ms 60000"
        );
    }

    #[test]
    fn at_the_limit_of_faults_in_force_a_request_is_refused() {
        let containers = [container("orders-1")];
        let refused = refusal(admit(
            &config(),
            &request(5_000),
            &KillSwitch::Released,
            &containers,
            2,
        ));
        assert_eq!(
            refused.to_string(),
            "2 faults already in force (max_concurrent_faults)"
        );
    }

    #[test]
    fn a_dry_run_is_admitted_whatever_is_in_force() {
        let dry = Config {
            dry_run: true,
            ..config()
        };
        let containers = [container("orders-1")];
        let admission = admit(&dry, &request(5_000), &KillSwitch::Released, &containers, 2);
        assert_eq!(
            admission,
            Admission::DryRun(Admitted {
                target: container("orders-1"),
                duration_ms: 5_000
            })
        );
    }
}
