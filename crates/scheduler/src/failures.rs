//! The failures behind the faulty-node rule, remembered on their own (Swarm's `nodeInfo.
//! recentFailures`): a task that failed or was rejected on a node counts against that node for
//! its service + spec version for [`FAULTY_WINDOW_MS`], whether or not the task is still stored.
//! Counting only the failed tasks the store still holds missed a single crash-looping slot: the
//! reaper keeps a few tasks per slot, fewer than [`crate::FAULTY_NODE_FAILURES`].
//!
//! The log is fed by whoever sees task changes (the leader's control loop) and asked for the
//! [`Failure`]s at a given time; it holds no clock of its own.

use std::collections::{BTreeMap, HashMap};

use shoal_types::{Task, TaskState, Timestamp};

use crate::Failure;

/// How long a failure counts against its node (Swarm: 5 minutes).
pub const FAULTY_WINDOW_MS: u64 = 5 * 60_000;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Recorded {
    node_id: String,
    service_id: String,
    spec_version: u64,
    at: Timestamp,
}

/// Recent task failures by task id, so seeing the same failed task again (a later change to it,
/// or a rescan of the store) counts it once.
#[derive(Clone, Debug, Default)]
pub struct FailureLog {
    by_task: HashMap<String, Recorded>,
}

impl FailureLog {
    pub fn new() -> FailureLog {
        FailureLog::default()
    }

    /// Records `task` if it failed or was rejected on a node. `at` stands in for a missing
    /// status timestamp.
    pub fn observe(&mut self, task: &Task, at: Timestamp) {
        if !matches!(task.status.state, TaskState::Failed | TaskState::Rejected) || task.node_id.is_empty() {
            return;
        }
        if self.by_task.contains_key(&task.id) {
            return;
        }
        let at = if task.status.timestamp > 0 { task.status.timestamp } else { at };
        let recorded = Recorded {
            node_id: task.node_id.clone(),
            service_id: task.service_id.clone(),
            spec_version: task.spec_version,
            at,
        };
        self.by_task.insert(task.id.clone(), recorded);
    }

    /// Forgets failures older than the window, then counts the rest per node, service and spec
    /// version (in a fixed order, so the same log always gives the same problem).
    pub fn failures(&mut self, now: Timestamp) -> Vec<Failure> {
        self.by_task.retain(|_, r| r.at.saturating_add(FAULTY_WINDOW_MS) > now);
        let mut counts: BTreeMap<(&str, &str, u64), u32> = BTreeMap::new();
        for r in self.by_task.values() {
            *counts.entry((&r.node_id, &r.service_id, r.spec_version)).or_default() += 1;
        }
        counts
            .into_iter()
            .map(|((node_id, service_id, spec_version), count)| Failure {
                node_id: node_id.to_string(),
                service_id: service_id.to_string(),
                spec_version,
                count,
            })
            .collect()
    }

    /// How many failures are remembered (pruned by [`FailureLog::failures`]).
    pub fn len(&self) -> usize {
        self.by_task.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_task.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use shoal_types::TaskStatus;

    use super::*;
    use crate::{PendingTask, Problem, SchedNode};

    fn task(id: &str, node: &str, version: u64, state: TaskState, at: Timestamp) -> Task {
        Task {
            id: id.into(),
            version: 0,
            created_at: 0,
            updated_at: 0,
            service_id: "svc".into(),
            service_name: "svc".into(),
            slot: 1,
            node_id: node.into(),
            spec_version: version,
            spec: Default::default(),
            endpoint: Default::default(),
            desired_state: TaskState::Running,
            status: TaskStatus { state, timestamp: at, ..Default::default() },
            origin: Default::default(),
            start_gate: None,
            running_at: None,
            restart_failures: 0,
            remove_container: false,
            kept: false,
            adopts: None,
        }
    }

    #[test]
    fn counts_failed_and_rejected_tasks_once_each_per_node_and_version() {
        let mut log = FailureLog::new();
        for i in 0..3 {
            log.observe(&task(&format!("f{i}"), "n1", 7, TaskState::Failed, 1_000), 0);
        }
        log.observe(&task("r", "n1", 7, TaskState::Rejected, 1_000), 0);
        log.observe(&task("f0", "n1", 7, TaskState::Failed, 2_000), 0); // seen again
        log.observe(&task("other-version", "n1", 8, TaskState::Failed, 1_000), 0);
        log.observe(&task("n2", "n2", 7, TaskState::Failed, 1_000), 0);
        log.observe(&task("done", "n1", 7, TaskState::Complete, 1_000), 0);
        log.observe(&task("shut", "n1", 7, TaskState::Shutdown, 1_000), 0);
        log.observe(&task("unplaced", "", 7, TaskState::Rejected, 1_000), 0);
        let counts: Vec<(String, u64, u32)> =
            log.failures(1_000).into_iter().map(|f| (f.node_id, f.spec_version, f.count)).collect();
        assert_eq!(counts, [("n1".to_string(), 7, 4), ("n1".to_string(), 8, 1), ("n2".to_string(), 7, 1)]);
    }

    #[test]
    fn failures_older_than_the_window_are_forgotten() {
        let mut log = FailureLog::new();
        log.observe(&task("old", "n1", 1, TaskState::Failed, 1_000), 0);
        log.observe(&task("new", "n1", 1, TaskState::Failed, 61_000), 0);
        assert_eq!(log.failures(1_000 + FAULTY_WINDOW_MS - 1)[0].count, 2);
        assert_eq!(log.failures(1_000 + FAULTY_WINDOW_MS)[0].count, 1);
        assert_eq!(log.len(), 1, "pruned");
        assert!(log.failures(61_000 + FAULTY_WINDOW_MS).is_empty());
        assert!(log.is_empty());
    }

    #[test]
    fn a_missing_status_timestamp_takes_the_time_given() {
        let mut log = FailureLog::new();
        log.observe(&task("t", "n1", 1, TaskState::Failed, 0), 5_000);
        assert_eq!(log.failures(5_000 + FAULTY_WINDOW_MS - 1).len(), 1);
        assert!(log.failures(5_000 + FAULTY_WINDOW_MS).is_empty());
    }

    /// The rule the log exists for: one crash-looping slot's five failures on a node, of which
    /// the store keeps only a few, send its next task to the other node, although that node
    /// already runs more of the service.
    #[test]
    fn five_failures_of_one_slot_move_its_next_task_away() {
        let node = |id: &str| SchedNode { id: id.into(), ready: true, ..Default::default() };
        let mut log = FailureLog::new();
        for i in 0..5 {
            log.observe(&task(&format!("f{i}"), "a", 3, TaskState::Failed, 10_000 + i), 0);
        }
        let pending =
            PendingTask { id: "next".into(), service_id: "svc".into(), spec_version: 3, ..Default::default() };
        let placed = crate::PlacedTask { node_id: "b".into(), service_id: "svc".into(), ..Default::default() };
        let mut problem = Problem {
            nodes: vec![node("a"), node("b")],
            placed: vec![placed],
            pending: vec![pending],
            failures: vec![],
        };
        problem.failures = log.failures(20_000);
        assert_eq!(crate::solve(&problem).assignments, [("next".to_string(), "b".to_string())]);
        // Four are not enough: the node with fewer of the service's tasks wins.
        let mut four = FailureLog::new();
        for i in 0..4 {
            four.observe(&task(&format!("f{i}"), "a", 3, TaskState::Failed, 10_000), 0);
        }
        problem.failures = four.failures(20_000);
        assert_eq!(crate::solve(&problem).assignments, [("next".to_string(), "a".to_string())]);
    }

    proptest! {
        /// Whatever the order and repetition of observations, each failed task within the window
        /// counts exactly once.
        #[test]
        fn each_failure_counts_once(
            events in proptest::collection::vec((0u8..12, 0u8..3, 0u64..600_000, any::<bool>()), 0..60),
            now in 0u64..900_000,
        ) {
            let mut log = FailureLog::new();
            let mut first: BTreeMap<String, (String, Timestamp, bool)> = BTreeMap::new();
            for (id, node, at, failed) in events {
                let id = format!("t{id}");
                let node = format!("n{node}");
                let state = if failed { TaskState::Failed } else { TaskState::Running };
                log.observe(&task(&id, &node, 1, state, at), 0);
                if failed {
                    first.entry(id).or_insert((node, at, true));
                }
            }
            let mut expected: BTreeMap<String, u32> = BTreeMap::new();
            for (node, at, _) in first.values() {
                if at + FAULTY_WINDOW_MS > now {
                    *expected.entry(node.clone()).or_default() += 1;
                }
            }
            let got: BTreeMap<String, u32> = log.failures(now).into_iter().map(|f| (f.node_id, f.count)).collect();
            prop_assert_eq!(got, expected);
        }
    }
}
