//! The target tasks now running, one per target by container id, kept in step with the
//! [`Delta`]s of the inventory: a task starts for a new target, is told of an updated one,
//! and is stopped when its target goes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use immune_runtime::Shutdown;
use tokio::sync::watch;

use crate::inventory::{Delta, Target};
use crate::target;

/// The running target tasks, by container id.
#[derive(Default)]
pub(crate) struct Watched {
    tasks: HashMap<String, (watch::Sender<Target>, tokio::task::JoinHandle<()>)>,
}

impl Watched {
    pub(crate) fn apply(
        &mut self,
        deltas: Vec<Delta>,
        context: &Arc<target::Context>,
        shutdown: &Shutdown,
    ) {
        for delta in deltas {
            match delta {
                Delta::Added(t) => {
                    tracing::info!(service = %t.container.service, instance = %t.container.name, "watching target");
                    let id = t.container.id.clone();
                    let (tx, rx) = watch::channel(t);
                    let task = tokio::spawn(target::watch(context.clone(), rx, shutdown.clone()));
                    if let Some((_, old)) = self.tasks.insert(id, (tx, task)) {
                        old.abort();
                    }
                }
                Delta::Updated(t) => {
                    if let Some((tx, _)) = self.tasks.get(&t.container.id) {
                        tx.send_replace(t);
                    }
                }
                Delta::Removed(id) => {
                    if let Some((_, task)) = self.tasks.remove(&id) {
                        tracing::info!(container = %id, "target gone");
                        task.abort();
                    }
                }
            }
        }
    }

    /// Waits up to `within` for every task to see the shutdown and finish its interval
    /// (its snapshot published and acknowledged), then stops whatever is still running.
    pub(crate) async fn stop(self, within: Duration) {
        let mut tasks: Vec<_> = self.tasks.into_values().map(|(_, task)| task).collect();
        let finished = futures::future::join_all(tasks.iter_mut());
        if tokio::time::timeout(within, finished).await.is_err() {
            for task in &tasks {
                task.abort();
            }
        }
    }
}
