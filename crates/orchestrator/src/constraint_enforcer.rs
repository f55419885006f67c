//! Swarm's constraint enforcer: a replicated task whose node no longer satisfies its placement
//! constraints (after `node update --label-rm`, say), or whose reservations no longer fit on the
//! node, is marked REJECTED. The restart supervisor then replaces it per the restart policy, and
//! the scheduler, which filters on constraints and resources, places the replacement elsewhere.
//!
//! The constraints checked are the task's own: for a task of the service's current spec they are
//! the service's, and a task of an older spec whose placement differs is the rolling updater's
//! (it is dirty once its node stops matching), so a `--constraint-add` still rolls out slot by
//! slot instead of being rejected all at once.
//!
//! Global tasks are left to the global orchestrator, which shuts them down without a replacement
//! (Swarm). Nodes that are paused or drained are skipped as in Swarm (a paused node's tasks are
//! left alone; a drained node's are moved by the orchestrator), and so are nodes that are down
//! (their tasks are replaced at once as lost, not rejected).

use shoal_store::{Action, State};
use shoal_types::{Availability, Node, NodeState, ServiceMode, Task, TaskState, TaskStatus, Timestamp};

/// The status message Swarm gives a task the enforcer rejects.
pub const REJECT_MESSAGE: &str = "task rejected by constraint enforcer";
/// The status error Swarm gives a task the enforcer rejects.
pub const REJECT_ERR: &str = "assigned node no longer meets constraints";

/// Whether the enforcer looks at `task` at all: desired READY..COMPLETE (Swarm: ASSIGNED..COMPLETE,
/// which shoal's desired states reach as READY and RUNNING) and not yet ended.
fn enforced(task: &Task) -> bool {
    (TaskState::Assigned..=TaskState::Complete).contains(&task.desired_state)
        && task.status.state >= TaskState::Assigned
        && task.status.state <= TaskState::Running
}

/// The tasks on `node` to reject, in the order of the node's tasks by creation. Reservations are
/// taken from the node's capacity oldest task first, so when they no longer all fit the newest
/// arrivals go (Swarm leaves that order to its index; a fixed one keeps this deterministic).
fn noncompliant<'a>(state: &'a State, node: &Node) -> Vec<&'a Task> {
    let mut tasks: Vec<&Task> = state.tasks_on_node(&node.id).filter(|t| enforced(t)).collect();
    tasks.sort_by_key(|t| (t.created_at, t.id.as_str()));
    let mut free_cpus = node.description.nano_cpus;
    let mut free_memory = node.description.memory_bytes;
    let mut rejected = Vec::new();
    for task in tasks {
        let replicated =
            state.service(&task.service_id).is_some_and(|s| matches!(s.spec.mode, ServiceMode::Replicated { .. }));
        if !replicated {
            continue;
        }
        if !task.spec.placement.constraints.iter().all(|c| c.matches(|k| node.attribute(k))) {
            rejected.push(task);
            continue;
        }
        let reserved = &task.spec.resources.reservations;
        // Like the scheduler's resource filter: only a task that reserves something is checked.
        if reserved.nano_cpus == 0 && reserved.memory_bytes == 0 {
            continue;
        }
        if reserved.nano_cpus > free_cpus || reserved.memory_bytes > free_memory {
            rejected.push(task);
            continue;
        }
        free_cpus -= reserved.nano_cpus;
        free_memory -= reserved.memory_bytes;
    }
    rejected
}

/// Rejects every replicated task whose node no longer meets its constraints or reservations.
/// Each rejection is one `SetTaskStatus` to REJECTED; the store drops it if the task ended
/// meanwhile, so a decision made on a slightly old view changes nothing.
pub fn enforce(state: &State, now: Timestamp) -> Vec<Action> {
    state.nodes().flat_map(|node| enforce_node(state, &node.id, now)).collect()
}

/// [`enforce`] for the tasks on one node (a node that changed, or received or lost a task).
pub fn enforce_node(state: &State, node_id: &str, now: Timestamp) -> Vec<Action> {
    let Some(node) = state.node(node_id) else { return Vec::new() };
    if node.spec.availability != Availability::Active || node.status.state == NodeState::Down {
        return Vec::new();
    }
    noncompliant(state, node)
        .into_iter()
        .map(|task| {
            let status = TaskStatus {
                state: TaskState::Rejected,
                timestamp: now,
                message: REJECT_MESSAGE.into(),
                err: REJECT_ERR.into(),
                ..Default::default()
            };
            Action::SetTaskStatus { id: task.id.clone(), status }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use shoal_types::{Constraint, ServiceSpec, TaskOrigin};

    use super::*;
    use crate::tests::World;

    fn spec(name: &str, replicas: u64, constraints: &[&str]) -> ServiceSpec {
        let mut s = ServiceSpec::new(name, "shoal/busybox:1");
        s.mode = ServiceMode::Replicated { replicas };
        s.task.placement.constraints = constraints.iter().map(|c| Constraint::parse(c).unwrap()).collect();
        s
    }

    fn label(w: &mut World, node: &str, key: &str, value: Option<&str>) {
        w.node_update(node, |n| match value {
            Some(v) => {
                n.spec.labels.insert(key.into(), v.into());
            }
            None => {
                n.spec.labels.remove(key);
            }
        });
    }

    /// A world of two labelled nodes with one running task of a service constrained to the label.
    fn one_task_on_n1(constraint: &str) -> (World, String, String) {
        let mut w = World::new(&["n1"]);
        label(&mut w, "n1", "zone", Some("a"));
        let svc = w.service(spec("web", 1, &[constraint]));
        w.settle();
        w.run_all();
        w.add_node("n2");
        label(&mut w, "n2", "zone", Some("a"));
        let task = w.tasks(&svc)[0].clone();
        assert_eq!((task.node_id.as_str(), task.status.state), ("n1", TaskState::Running));
        (w, svc, task.id)
    }

    #[test]
    fn a_label_removed_rejects_the_task_and_the_supervisor_replaces_it() {
        let (mut w, svc, old) = one_task_on_n1("node.labels.zone==a");
        assert!(enforce(&w.state, w.now).is_empty(), "the node still matches");
        label(&mut w, "n1", "zone", None);
        w.step();
        let rejected = w.state.task(&old).unwrap();
        assert_eq!(rejected.status.state, TaskState::Rejected);
        assert_eq!(rejected.status.message, REJECT_MESSAGE);
        assert_eq!(rejected.status.err, REJECT_ERR);
        // Next pass: the restart supervisor shuts it down and makes a replacement for the slot,
        // which the scheduler (filtering on the constraint) can only place on n2.
        w.step();
        let tasks = w.tasks(&svc);
        assert_eq!(tasks.len(), 2);
        let new = tasks.iter().find(|t| t.id != old).expect("a replacement");
        assert_eq!((new.slot, new.origin, new.node_id.as_str()), (1, TaskOrigin::Restart, ""));
        assert_eq!(w.state.task(&old).unwrap().desired_state, TaskState::Shutdown);
        assert!(enforce(&w.state, w.now).is_empty(), "a rejected task is not rejected again");
    }

    #[test]
    fn a_changed_label_value_and_a_not_equal_constraint_are_enforced_too() {
        let (mut w, _svc, old) = one_task_on_n1("node.labels.zone!=b");
        label(&mut w, "n1", "zone", Some("b"));
        let actions = enforce(&w.state, w.now);
        assert!(matches!(actions.as_slice(), [Action::SetTaskStatus { id, .. }] if *id == old), "{actions:?}");
    }

    #[test]
    fn paused_drained_and_down_nodes_are_left_to_others() {
        for how in ["pause", "drain", "down"] {
            let (mut w, _svc, _old) = one_task_on_n1("node.labels.zone==a");
            w.node_update("n1", |n| {
                n.spec.labels.clear();
                match how {
                    "pause" => n.spec.availability = Availability::Pause,
                    "drain" => n.spec.availability = Availability::Drain,
                    _ => n.status.state = NodeState::Down,
                }
            });
            assert!(enforce(&w.state, w.now).is_empty(), "{how}");
        }
    }

    #[test]
    fn global_tasks_are_left_to_the_global_orchestrator() {
        let mut w = World::new(&["n1"]);
        label(&mut w, "n1", "zone", Some("a"));
        let mut s = spec("agent", 0, &["node.labels.zone==a"]);
        s.mode = ServiceMode::Global;
        let svc = w.service(s);
        w.settle();
        w.run_all();
        label(&mut w, "n1", "zone", None);
        assert!(enforce(&w.state, w.now).is_empty());
        w.settle();
        let tasks = w.tasks(&svc);
        assert_eq!(tasks.len(), 1, "shut down, not replaced");
        assert_eq!(tasks[0].desired_state, TaskState::Shutdown);
        assert_eq!(tasks[0].status.state, TaskState::Running, "not rejected");
    }

    #[test]
    fn reservations_that_no_longer_fit_reject_the_newest_tasks() {
        let mut w = World::new(&["n1"]);
        w.node_update("n1", |n| n.description.memory_bytes = 3 << 30);
        let mut s = spec("db", 3, &[]);
        s.task.resources.reservations.memory_bytes = 1 << 30;
        let svc = w.service(s);
        w.settle();
        w.run_all();
        let mut tasks = w.tasks(&svc);
        assert!(tasks.iter().all(|t| t.node_id == "n1" && t.status.state == TaskState::Running));
        assert!(enforce(&w.state, w.now).is_empty(), "3 GiB hold three 1 GiB reservations");
        // The agent came back with less memory: two still fit, the newest task goes.
        w.node_update("n1", |n| n.description.memory_bytes = (2 << 30) + 1);
        tasks.sort_by_key(|t| (t.created_at, t.id.clone()));
        let actions = enforce(&w.state, w.now);
        let newest = &tasks[2].id;
        assert!(
            matches!(actions.as_slice(), [Action::SetTaskStatus { id, status }]
            if id == newest && status.state == TaskState::Rejected),
            "{actions:?}"
        );
    }

    #[test]
    fn a_task_of_an_older_spec_is_checked_against_its_own_constraints() {
        // The service's new constraint no longer matches n1, but the task was made for the old
        // one: it is the rolling updater's to replace (slot by slot), not the enforcer's.
        let (mut w, svc, _old) = one_task_on_n1("node.labels.zone==a");
        let service = w.state.service(&svc).unwrap().clone();
        let mut new_spec = service.spec.clone();
        new_spec.task.placement.constraints = vec![Constraint::parse("node.labels.zone==b").unwrap()];
        w.apply(vec![Action::UpdateService { id: svc.clone(), expected_version: service.version, spec: new_spec }]);
        assert!(enforce(&w.state, w.now).is_empty());
    }

    proptest! {
        /// A task is rejected exactly when its node fails one of its constraints.
        #[test]
        fn rejected_iff_a_constraint_fails(
            node_zone in proptest::option::of(0u8..3),
            wanted in 0u8..3,
            equal in any::<bool>(),
        ) {
            let op = if equal { "==" } else { "!=" };
            let constraint = format!("node.labels.zone{op}z{wanted}");
            let mut w = World::new(&["n1"]);
            let svc = w.service(spec("web", 1, &[constraint.as_str()]));
            w.settle();
            w.run_all();
            label(&mut w, "n1", "zone", node_zone.map(|z| format!("z{z}")).as_deref());
            let matches = (node_zone == Some(wanted)) == equal;
            let rejected = enforce(&w.state, w.now).len();
            prop_assert_eq!(rejected, usize::from(!matches));
            prop_assert_eq!(w.tasks(&svc).len(), 1);
        }
    }
}
