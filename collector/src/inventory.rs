//! The targets the collector watches: containers that opted in with labels, kept current from
//! Docker's event stream (a full listing every `resync_ms` is the safety net for a missed
//! event), and static targets from the config, which never go away.
//!
//! This part is pure: [`Inventory::apply`] turns what was seen into [`Delta`]s (a target to
//! start watching, to update, to stop watching); `discovery` is the Docker I/O that feeds
//! it [`Change`]s, and `watching` runs one task per target.

use std::collections::HashMap;

use immune_runtime::docker::ManagedContainer;

/// Where a target came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Docker,
    Static,
}

/// One target as its watching task sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub container: ManagedContainer,
    pub source: Source,
    /// Starts seen since the collector began watching it (restarts, by policy or by hand).
    pub starts: u64,
}

/// Something learnt about Docker's containers.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A container freshly inspected after one of its events; `started` when the event was a
    /// start.
    Seen {
        container: Box<ManagedContainer>,
        started: bool,
    },
    /// The container was destroyed.
    Removed { id: String },
    /// Every managed container Docker has now.
    Listed(Vec<ManagedContainer>),
}

/// What the set of watched targets must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Delta {
    Added(Target),
    Updated(Target),
    Removed(String),
}

#[derive(Debug, Default)]
pub struct Inventory {
    targets: HashMap<String, Target>,
}

impl Inventory {
    /// An inventory holding the static targets; the deltas start watching them.
    pub fn new(static_targets: Vec<ManagedContainer>) -> (Self, Vec<Delta>) {
        let mut inventory = Self::default();
        let deltas = static_targets
            .into_iter()
            .filter_map(|c| inventory.upsert(c, Source::Static, false))
            .collect();
        (inventory, deltas)
    }

    pub fn len(&self) -> usize {
        self.targets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    pub fn apply(&mut self, change: Change) -> Vec<Delta> {
        match change {
            Change::Seen { container, started } => self
                .upsert(*container, Source::Docker, started)
                .into_iter()
                .collect(),
            Change::Removed { id } => self.remove(&id).into_iter().collect(),
            Change::Listed(containers) => {
                let listed: std::collections::HashSet<String> =
                    containers.iter().map(|c| c.id.clone()).collect();
                let gone: Vec<String> = self
                    .targets
                    .values()
                    .filter(|t| t.source == Source::Docker && !listed.contains(&t.container.id))
                    .map(|t| t.container.id.clone())
                    .collect();
                let mut deltas: Vec<Delta> = gone.iter().filter_map(|id| self.remove(id)).collect();
                deltas.extend(
                    containers
                        .into_iter()
                        .filter_map(|c| self.upsert(c, Source::Docker, false)),
                );
                deltas
            }
        }
    }

    fn upsert(
        &mut self,
        container: ManagedContainer,
        source: Source,
        started: bool,
    ) -> Option<Delta> {
        match self.targets.get_mut(&container.id) {
            Some(known) => {
                if known.container == container && !started {
                    return None;
                }
                known.container = container;
                if started {
                    known.starts += 1;
                }
                Some(Delta::Updated(known.clone()))
            }
            None => {
                let target = Target {
                    container,
                    source,
                    starts: 0,
                };
                self.targets
                    .insert(target.container.id.clone(), target.clone());
                Some(Delta::Added(target))
            }
        }
    }

    fn remove(&mut self, id: &str) -> Option<Delta> {
        match self.targets.get(id) {
            Some(t) if t.source == Source::Docker => {
                self.targets.remove(id);
                Some(Delta::Removed(id.to_string()))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use immune_nats::{ContainerState, ServiceName};

    fn container(id: &str, service: &str, state: ContainerState) -> ManagedContainer {
        ManagedContainer {
            id: id.into(),
            name: format!("{service}-{id}"),
            service: ServiceName::new(service).expect("valid"),
            state,
            address: None,
            metrics: None,
            health: None,
            admin: None,
            chaos: false,
            project: None,
            depends_on: vec![],
        }
    }

    #[test]
    fn events_add_update_and_remove_targets() {
        let (mut inv, deltas) = Inventory::new(vec![]);
        assert!(deltas.is_empty());
        let running = container("a", "orders", ContainerState::Running);
        let d = inv.apply(Change::Seen {
            container: Box::new(running.clone()),
            started: true,
        });
        assert!(matches!(&d[..], [Delta::Added(t)] if t.starts == 0));
        // The same container seen again unchanged: nothing to do.
        assert!(inv
            .apply(Change::Seen {
                container: Box::new(running.clone()),
                started: false
            })
            .is_empty());
        let died = container("a", "orders", ContainerState::Exited);
        assert!(
            matches!(&inv.apply(Change::Seen { container: Box::new(died), started: false })[..],
            [Delta::Updated(t)] if t.container.state == ContainerState::Exited)
        );
        let d = inv.apply(Change::Seen {
            container: Box::new(running),
            started: true,
        });
        assert!(
            matches!(&d[..], [Delta::Updated(t)] if t.starts == 1),
            "{d:?}"
        );
        assert_eq!(
            inv.apply(Change::Removed { id: "a".into() }),
            vec![Delta::Removed("a".into())]
        );
        assert!(inv.is_empty());
    }

    #[test]
    fn a_listing_catches_what_events_missed_and_keeps_static_targets() {
        let (mut inv, deltas) =
            Inventory::new(vec![container("static:x", "x", ContainerState::Running)]);
        assert_eq!(deltas.len(), 1);
        inv.apply(Change::Listed(vec![
            container("a", "orders", ContainerState::Running),
            container("b", "orders", ContainerState::Running),
        ]));
        assert_eq!(inv.len(), 3);
        // b vanished without a destroy event reaching us; a scaled replica c appeared.
        let d = inv.apply(Change::Listed(vec![
            container("a", "orders", ContainerState::Running),
            container("c", "orders", ContainerState::Running),
        ]));
        assert!(d.contains(&Delta::Removed("b".into())), "{d:?}");
        assert!(d
            .iter()
            .any(|x| matches!(x, Delta::Added(t) if t.container.id == "c")));
        assert_eq!(inv.len(), 3, "static target kept");
        assert!(inv
            .apply(Change::Removed {
                id: "static:x".into()
            })
            .is_empty());
    }
}
