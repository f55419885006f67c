//! The task reaper (Swarm §1.4): keeps a bounded history per slot and deletes removed tasks.

use std::collections::BTreeMap;

use shoal_store::State;
use shoal_types::{ServiceMode, Task, TaskState};

/// Ids per `DeleteTasks` action: 1,000 ids are about 30 KB, far under a raft entry's limit.
pub const MAX_IDS_PER_DELETE: usize = 1_000;

/// Ids of tasks to delete now, of every service.
pub fn reap(state: &State, history_limit: u64) -> Vec<String> {
    state.services_with_tasks().flat_map(|id| reap_service(state, id, history_limit)).collect()
}

/// Ids of `service_id`'s tasks to delete now: removed tasks (all of them once the service is
/// gone) that are not running, and the oldest finished tasks of each slot beyond the history
/// limit. Reads only the service's own tasks.
pub fn reap_service(state: &State, service_id: &str, history_limit: u64) -> Vec<String> {
    let service = state.service(service_id);
    let not_running = |t: &Task| t.status.state < TaskState::Assigned || t.status.state >= TaskState::Complete;
    let mut doomed = Vec::new();
    // A replicated slot by its number, a global one by its node.
    let mut slots: BTreeMap<(u64, &str), Vec<&Task>> = BTreeMap::new();
    for task in state.tasks_of_service(service_id) {
        let removed = task.desired_state >= TaskState::Remove || service.is_none();
        if removed && not_running(task) {
            doomed.push(task.id.clone());
            continue;
        }
        let Some(service) = service else { continue };
        let key = match service.spec.mode {
            ServiceMode::Replicated { .. } | ServiceMode::ReplicatedJob { .. } => (task.slot, ""),
            ServiceMode::Global | ServiceMode::GlobalJob => (0, task.node_id.as_str()),
        };
        slots.entry(key).or_default().push(task);
    }
    let Some(service) = service else { return doomed };
    let policy = &service.spec.task.restart_policy;
    let limit = if policy.max_attempts > 0 { policy.max_attempts + 1 } else { history_limit } as usize;
    for mut tasks in slots.into_values() {
        if tasks.len() <= limit {
            continue;
        }
        tasks.sort_by_key(|t| (t.status.timestamp.max(t.created_at), t.id.clone()));
        let mut excess = tasks.len() - limit;
        for task in tasks {
            if excess == 0 {
                break;
            }
            let finished = task.status.state.is_terminal();
            let never_ran = task.status.state < TaskState::Assigned && task.desired_state > TaskState::Running;
            if finished || never_ran {
                doomed.push(task.id.clone());
                excess -= 1;
            }
        }
    }
    doomed
}
