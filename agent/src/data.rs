//! The secrets and configs the leader sent this agent for its tasks, kept in memory only (the
//! executor writes a task's files when it prepares its container).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use shoal_types::{DataKind, DataObject, Task, TaskFile};

#[derive(Default)]
pub struct DataStore {
    objects: Mutex<HashMap<(DataKind, String), Arc<DataObject>>>,
    /// The host entries of the containers of each service spec on a network, as the leader last
    /// sent them.
    hosts: Mutex<HashMap<String, Vec<String>>>,
}

impl DataStore {
    /// Keeps an object the leader sent (replacing one of the same kind and name).
    pub fn put(&self, object: DataObject) {
        self.objects.lock().insert((object.kind, object.spec.name.clone()), Arc::new(object));
    }

    /// Keeps the host entries the leader sent for the containers of a service's spec (by
    /// [`shoal_types::hosts_key`]); a complete assignment's replace them all.
    pub fn put_hosts(&self, hosts: HashMap<String, Vec<String>>, complete: bool) {
        let mut kept = self.hosts.lock();
        if complete {
            *kept = hosts;
        } else {
            kept.extend(hosts);
        }
    }

    /// The host entries `task`'s container gets ("name:address"); none off networks.
    pub fn hosts_for(&self, task: &Task) -> Vec<String> {
        if task.spec.networks.is_empty() {
            return Vec::new();
        }
        let key = shoal_types::hosts_key(&task.service_id, task.spec_version);
        self.hosts.lock().get(&key).cloned().unwrap_or_default()
    }

    /// Forgets the objects not in `used` (by kind and name).
    pub fn retain(&self, used: &HashSet<(DataKind, String)>) {
        self.objects.lock().retain(|key, _| used.contains(key));
    }

    /// The files `task`'s container gets; an error names a secret or config this agent was not
    /// sent (the task is rejected).
    pub fn files_for(&self, task: &Task) -> Result<Vec<TaskFile>, String> {
        let objects = self.objects.lock();
        task.spec
            .container
            .data_references()
            .map(|(kind, reference)| {
                let object = objects.get(&(kind, reference.source.clone())).ok_or_else(|| {
                    format!("{kind} {} was not sent to this node; it may have been removed", reference.source)
                })?;
                let id = |text: &str, what: &str| {
                    text.parse::<u32>()
                        .map_err(|_| format!("{kind} {}: {what} {text:?} is not a number", reference.source))
                };
                Ok(TaskFile {
                    kind,
                    source: reference.source.clone(),
                    path: reference.path(kind),
                    uid: id(&reference.uid, "uid")?,
                    gid: id(&reference.gid, "gid")?,
                    mode: reference.mode,
                    data: object.spec.data.clone(),
                })
            })
            .collect()
    }
}
