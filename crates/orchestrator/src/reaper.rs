//! The task reaper (Swarm §1.4): keeps a bounded history per slot and deletes removed tasks.

use std::collections::{BTreeMap, HashSet};

use shoal_store::State;
use shoal_types::{ServiceMode, Task, TaskState};

/// Ids per `DeleteTasks` action: 1,000 ids are about 30 KB, far under a raft entry's limit.
pub const MAX_IDS_PER_DELETE: usize = 1_000;

/// Ids of tasks to delete now.
pub fn reap(state: &State, history_limit: u64) -> Vec<String> {
    let mut doomed = Vec::new();
    for task in state.tasks() {
        let removed = task.desired_state >= TaskState::Remove
            && (task.status.state < TaskState::Assigned || task.status.state >= TaskState::Complete);
        let serviceless = state.service(&task.service_id).is_none()
            && (task.status.state < TaskState::Assigned || task.status.state >= TaskState::Complete);
        if removed || serviceless {
            doomed.push(task.id.clone());
        }
    }
    // A set, not the list: removing a large service dooms thousands of tasks, and every task of
    // every other service is checked against them.
    let already: HashSet<String> = doomed.iter().cloned().collect();
    for service in state.services() {
        let policy = &service.spec.task.restart_policy;
        let limit = if policy.max_attempts > 0 { policy.max_attempts + 1 } else { history_limit } as usize;
        let mut slots: BTreeMap<String, Vec<&Task>> = BTreeMap::new();
        for task in state.tasks_of_service(&service.id) {
            let key = match service.spec.mode {
                ServiceMode::Replicated { .. } | ServiceMode::ReplicatedJob { .. } => task.slot.to_string(),
                ServiceMode::Global | ServiceMode::GlobalJob => task.node_id.clone(),
            };
            slots.entry(key).or_default().push(task);
        }
        for mut tasks in slots.into_values() {
            tasks.retain(|t| !already.contains(&t.id));
            if tasks.len() <= limit {
                continue;
            }
            tasks.sort_by_key(|t| (t.status.timestamp.max(t.created_at), t.id.clone()));
            let mut excess = tasks.len() - limit;
            for task in tasks {
                if excess == 0 {
                    break;
                }
                let finished = task.status.state > TaskState::Running;
                let never_ran = task.status.state < TaskState::Assigned && task.desired_state > TaskState::Running;
                if finished || never_ran {
                    doomed.push(task.id.clone());
                    excess -= 1;
                }
            }
        }
    }
    doomed
}
