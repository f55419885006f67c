//! Task status reporting: every change is queued; the session sends queued statuses in batches
//! and, after reconnecting, re-sends the latest status of every task (the new leader may not have
//! seen the last ones).

use std::collections::{BTreeMap, HashMap};

use parking_lot::Mutex;
use shoal_types::{TaskState, TaskStatus};
use tokio::sync::{Notify, watch};

pub struct Reporter {
    inner: Mutex<Inner>,
    pub notify: Notify,
    /// Touched on every status and every assignment, for log reads that follow new tasks.
    pub changed: watch::Sender<()>,
}

impl Default for Reporter {
    fn default() -> Self {
        Reporter { inner: Mutex::default(), notify: Notify::new(), changed: watch::channel(()).0 }
    }
}

#[derive(Default)]
struct Inner {
    pending: BTreeMap<String, TaskStatus>,
    latest: HashMap<String, TaskStatus>,
}

/// At most this many statuses per `UpdateTaskStatus` call (Swarm: 1024).
pub const MAX_BATCH: usize = 1024;

impl Reporter {
    pub fn report(&self, task_id: &str, status: TaskStatus) {
        let mut inner = self.inner.lock();
        inner.latest.insert(task_id.to_string(), status.clone());
        inner.pending.insert(task_id.to_string(), status);
        drop(inner);
        self.notify.notify_one();
        self.changed.send_replace(());
    }

    /// The state this agent last reported for the task.
    pub fn state(&self, task_id: &str) -> Option<TaskState> {
        self.inner.lock().latest.get(task_id).map(|s| s.state)
    }

    /// How many tasks were last reported in each state.
    pub fn counts_by_state(&self) -> std::collections::BTreeMap<TaskState, usize> {
        let mut counts = std::collections::BTreeMap::new();
        for status in self.inner.lock().latest.values() {
            *counts.entry(status.state).or_insert(0) += 1;
        }
        counts
    }

    /// Takes up to one batch of queued statuses.
    pub fn take_batch(&self) -> Vec<(String, TaskStatus)> {
        let mut inner = self.inner.lock();
        let keys: Vec<String> = inner.pending.keys().take(MAX_BATCH).cloned().collect();
        keys.into_iter().filter_map(|k| inner.pending.remove(&k).map(|s| (k, s))).collect()
    }

    /// Puts back a batch that could not be sent (newer statuses queued meanwhile win).
    pub fn requeue(&self, batch: Vec<(String, TaskStatus)>) {
        let mut inner = self.inner.lock();
        for (id, status) in batch {
            inner.pending.entry(id).or_insert(status);
        }
    }

    /// Queues every task's latest status again, for a new session.
    pub fn resend_all(&self) {
        let mut inner = self.inner.lock();
        let latest: Vec<(String, TaskStatus)> = inner.latest.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (id, status) in latest {
            inner.pending.insert(id, status);
        }
        drop(inner);
        self.notify.notify_one();
    }

    pub fn forget(&self, task_id: &str) {
        let mut inner = self.inner.lock();
        inner.latest.remove(task_id);
        inner.pending.remove(task_id);
    }
}
