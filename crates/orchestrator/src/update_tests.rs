//! The updater, driven step by step with simulated agents; invariants checked at every step.

use std::collections::BTreeMap;

use shoal_store::Action;
use shoal_types::*;

use crate::tests::World;

/// How the simulated agents treat a task.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Behaviour {
    Works,
    /// Fails at start, never reaching RUNNING.
    FailsAtStart,
    /// Runs, then fails 1 s later.
    FailsAfterRunning,
    /// Its container cannot be created (a missing image): REJECTED while preparing.
    FailsAtPrepare,
}

pub(crate) struct Sim {
    pub(crate) w: World,
    pub(crate) svc: String,
    pub(crate) behaviour: BTreeMap<String, Behaviour>,
    /// Old tasks never stop when told to.
    stuck: bool,
    /// Most slots seen in transition at once.
    max_in_transition: usize,
    log: Vec<String>,
}

impl Sim {
    pub(crate) fn new(replicas: u64, configure: impl FnOnce(&mut ServiceSpec)) -> Sim {
        let mut w = World::new(&["n1", "n2", "n3"]);
        let mut spec = ServiceSpec::new("web", "app:1");
        spec.mode = ServiceMode::Replicated { replicas };
        spec.task.restart_policy.delay = GoDuration::ZERO;
        spec.task.restart_policy.condition = RestartCondition::None;
        configure(&mut spec);
        let svc = w.service(spec);
        let mut sim = Sim { w, svc, behaviour: BTreeMap::new(), stuck: false, max_in_transition: 0, log: Vec::new() };
        sim.behaviour.insert("app:1".into(), Behaviour::Works);
        sim.run_until(|s| s.running_images().len() == replicas as usize, 200);
        sim
    }

    pub(crate) fn service(&self) -> Service {
        self.w.state.service(&self.svc).unwrap().clone()
    }

    pub(crate) fn update(&mut self, change: impl FnOnce(&mut ServiceSpec)) {
        let s = self.service();
        let mut spec = s.spec.clone();
        change(&mut spec);
        self.w.apply(vec![Action::UpdateService { id: self.svc.clone(), expected_version: s.version, spec }]);
    }

    pub(crate) fn rollback(&mut self) {
        let s = self.service();
        self.w.apply(vec![Action::RollbackService { id: self.svc.clone(), expected_version: s.version }]);
    }

    pub(crate) fn status(&self) -> Option<UpdateState> {
        self.service().update_status.map(|s| s.state)
    }

    pub(crate) fn running_images(&self) -> Vec<String> {
        self.w
            .runnable(&self.svc)
            .iter()
            .filter(|t| t.status.state == TaskState::Running)
            .map(|t| t.spec.container.image.clone())
            .collect()
    }

    /// Simulated agents: assign, prepare/start up to the desired state, stop when told.
    fn agents(&mut self) {
        let now = self.w.now;
        let nodes = ["n1", "n2", "n3"];
        let mut actions = Vec::new();
        let tasks: Vec<Task> = self.w.state.tasks_of_service(&self.svc).cloned().collect();
        for (i, t) in tasks.iter().enumerate() {
            let behaviour = self.behaviour.get(&t.spec.container.image).copied().unwrap_or(Behaviour::Works);
            // The container (named by the task that made it) exists from READY on, as on an agent.
            let status = |state: TaskState, err: &str| TaskStatus {
                state,
                timestamp: now,
                err: err.into(),
                container_id: if state >= TaskState::Ready {
                    format!("ctr-{}", t.container_task())
                } else {
                    String::new()
                },
                ..Default::default()
            };
            if t.desired_state >= TaskState::Shutdown {
                if t.status.state <= TaskState::Running && !self.stuck {
                    actions.push(Action::SetTaskStatus { id: t.id.clone(), status: status(TaskState::Shutdown, "") });
                }
                continue;
            }
            if t.node_id.is_empty() {
                actions.push(Action::AssignTask { id: t.id.clone(), node_id: nodes[i % 3].into() });
                continue;
            }
            match (t.status.state, t.desired_state) {
                (s, TaskState::Ready | TaskState::Running)
                    if s < TaskState::Ready && behaviour == Behaviour::FailsAtPrepare =>
                {
                    actions.push(Action::SetTaskStatus {
                        id: t.id.clone(),
                        status: status(TaskState::Rejected, "No such image"),
                    })
                }
                (s, TaskState::Ready) if s < TaskState::Ready => {
                    actions.push(Action::SetTaskStatus { id: t.id.clone(), status: status(TaskState::Ready, "") })
                }
                (s, TaskState::Running) if s < TaskState::Running => {
                    if behaviour == Behaviour::FailsAtStart {
                        actions.push(Action::SetTaskStatus {
                            id: t.id.clone(),
                            status: status(TaskState::Failed, "boom"),
                        });
                    } else {
                        actions
                            .push(Action::SetTaskStatus { id: t.id.clone(), status: status(TaskState::Running, "") });
                    }
                }
                (TaskState::Running, TaskState::Running)
                    if behaviour == Behaviour::FailsAfterRunning
                        && t.running_at.is_some_and(|at| now >= at + 1_000) =>
                {
                    actions.push(Action::SetTaskStatus { id: t.id.clone(), status: status(TaskState::Failed, "late") });
                }
                _ => {}
            }
        }
        if !actions.is_empty() {
            self.w.apply(actions);
        }
    }

    /// One round: control loop until quiet, check invariants, agents act, 100 ms pass.
    pub(crate) fn round(&mut self) {
        self.round_checked(|_, _| {});
    }

    /// A round with `check` called once the control loop has settled, before the agents act,
    /// with the service's tasks as they were before the control loop ran.
    pub(crate) fn round_checked(&mut self, mut check: impl FnMut(&Sim, &BTreeMap<String, Task>)) {
        let before: BTreeMap<String, Task> =
            self.w.state.tasks_of_service(&self.svc).map(|t| (t.id.clone(), t.clone())).collect();
        self.w.settle();
        self.check(&before);
        check(self, &before);
        self.agents();
        self.w.now += 100;
    }

    fn check(&mut self, before: &BTreeMap<String, Task>) {
        let service = self.service();
        let rolling_back = service.update_status.as_ref().is_some_and(|s| s.state == UpdateState::RollbackStarted);
        let config = if rolling_back { &service.spec.rollback_config } else { &service.spec.update_config };
        let tasks: Vec<Task> = self.w.state.tasks_of_service(&self.svc).cloned().collect();
        let now = self.w.now;
        let delay = config.delay.as_std().as_millis() as u64;
        let mut in_transition = std::collections::BTreeSet::new();
        // A task prepared ahead is not in transition until released at its slot's turn.
        let made_here =
            |t: &&Task| t.origin == TaskOrigin::Update && t.spec_version == service.spec_version && !t.prepared_ahead();
        for t in tasks.iter().filter(made_here) {
            let done = t.running_at.or(t.status.state.is_terminal().then_some(t.status.timestamp));
            let busy = match done {
                None => t.desired_state <= TaskState::Running,
                Some(at) => now < at + delay,
            };
            if busy {
                in_transition.insert(t.slot);
            }
        }
        self.max_in_transition = self.max_in_transition.max(in_transition.len());
        // Recreate and budgeted rollouts have their own invariants (strategy_tests).
        if config.parallelism > 0 && config.strategy == RolloutStrategy::Rolling && config.budget().is_none() {
            assert!(
                in_transition.len() as u64 <= config.parallelism,
                "{} slots in transition > parallelism {}",
                in_transition.len(),
                config.parallelism
            );
        }
        for t in &tasks {
            let Some(old) = before.get(&t.id) else { continue };
            // stop-first: a new task is raised to RUNNING only after its slot's old task stopped.
            if t.origin == TaskOrigin::Update
                && old.desired_state == TaskState::Ready
                && t.desired_state == TaskState::Running
            {
                let olds: Vec<&Task> = tasks
                    .iter()
                    .filter(|o| {
                        o.slot == t.slot
                            && o.id != t.id
                            && o.created_at < t.created_at
                            && o.status.state <= TaskState::Running
                            && o.desired_state >= TaskState::Shutdown
                    })
                    .collect();
                let timeout = t.start_gate.as_ref().is_some_and(|g| now >= g.deadline);
                assert!(
                    olds.is_empty() || timeout || self.stuck,
                    "slot {} started before its old task stopped",
                    t.slot
                );
                self.log.push(format!("start {}", t.slot));
            }
            // start-first: an old task is told to stop only once its replacement runs.
            if config.order == UpdateOrder::StartFirst
                && old.desired_state == TaskState::Running
                && t.desired_state == TaskState::Shutdown
                && t.status.state == TaskState::Running
            {
                let replacement_running = tasks.iter().any(|n| {
                    n.slot == t.slot
                        && n.id != t.id
                        && n.origin == TaskOrigin::Update
                        && n.status.state == TaskState::Running
                });
                assert!(
                    replacement_running,
                    "start-first stopped slot {}'s old task before its replacement ran",
                    t.slot
                );
            }
        }
    }

    pub(crate) fn run_until(&mut self, cond: impl Fn(&Sim) -> bool, max_rounds: usize) {
        for _ in 0..max_rounds {
            if cond(self) {
                return;
            }
            self.round();
        }
        panic!(
            "not reached; status {:?}; tasks {:?}",
            self.status(),
            self.w
                .tasks(&self.svc)
                .iter()
                .map(|t| (t.slot, t.spec.container.image.clone(), t.status.state, t.desired_state))
                .collect::<Vec<_>>()
        );
    }

    pub(crate) fn settled_on(&self, image: &str, replicas: usize) -> bool {
        let images = self.running_images();
        images.len() == replicas && images.iter().all(|i| i == image)
    }
}

pub(crate) fn image(s: &mut ServiceSpec, image: &str) {
    s.task.container.image = image.into();
}

#[test]
fn default_update_replaces_one_slot_at_a_time_stop_first() {
    let mut sim = Sim::new(3, |_| {});
    sim.update(|s| image(s, "app:2"));
    sim.run_until(|s| s.status() == Some(UpdateState::Completed), 400);
    assert!(sim.settled_on("app:2", 3));
    assert_eq!(sim.max_in_transition, 1);
    assert_eq!(sim.log.iter().filter(|l| l.starts_with("start")).count(), 3);
    let status = sim.service().update_status.unwrap();
    assert_eq!(status.message, "update completed");
    assert!(status.completed_at.unwrap() >= status.started_at.unwrap() + 5_000, "waits the 5 s monitor window");
}

#[test]
fn parallelism_two_with_delay_never_exceeds_two() {
    let mut sim = Sim::new(6, |s| {
        s.update_config.parallelism = 2;
        s.update_config.delay = GoDuration::from_secs(1);
    });
    sim.update(|s| image(s, "app:2"));
    let start = sim.w.now;
    sim.run_until(|s| s.settled_on("app:2", 6), 400);
    assert_eq!(sim.max_in_transition, 2);
    // Three batches of two, each worker waiting 1 s after its slot: at least ~2 s.
    assert!(sim.w.now - start >= 2_000, "delay respected: {} ms", sim.w.now - start);
    sim.run_until(|s| s.status() == Some(UpdateState::Completed), 200);
}

#[test]
fn parallelism_zero_updates_every_slot_at_once() {
    let mut sim = Sim::new(5, |s| s.update_config.parallelism = 0);
    sim.update(|s| image(s, "app:2"));
    sim.run_until(|s| s.settled_on("app:2", 5), 100);
    assert_eq!(sim.max_in_transition, 5);
}

#[test]
fn start_first_runs_the_new_task_before_stopping_the_old() {
    let mut sim = Sim::new(3, |s| s.update_config.order = UpdateOrder::StartFirst);
    sim.update(|s| image(s, "app:2"));
    // The invariant check in every round asserts the ordering; here, that both ran together.
    let mut overlap = false;
    for _ in 0..200 {
        let running = sim.w.runnable(&sim.svc).iter().filter(|t| t.status.state == TaskState::Running).count();
        let all_running = sim.w.tasks(&sim.svc).iter().filter(|t| t.status.state == TaskState::Running).count();
        overlap |= all_running > 3 || running > 3;
        if sim.settled_on("app:2", 3) {
            break;
        }
        sim.round();
    }
    assert!(sim.settled_on("app:2", 3));
    assert!(overlap, "old and new ran at the same time");
}

#[test]
fn pause_on_failure_stops_after_exactly_one_failed_slot() {
    let mut sim = Sim::new(3, |s| {
        s.update_config.delay = GoDuration::from_millis(500);
        s.update_config.monitor = GoDuration::from_millis(500);
    });
    sim.behaviour.insert("app:2".into(), Behaviour::FailsAtStart);
    sim.update(|s| image(s, "app:2"));
    sim.run_until(|s| s.status() == Some(UpdateState::Paused), 200);
    for _ in 0..30 {
        sim.round();
    }
    let service = sim.service();
    let status = service.update_status.unwrap();
    assert!(
        status.message.starts_with("update paused due to failure or early termination of task "),
        "{}",
        status.message
    );
    let tasks = sim.w.tasks(&sim.svc);
    let new = tasks.iter().filter(|t| t.spec.container.image == "app:2").count();
    assert_eq!(new, 1, "exactly one slot was tried");
    assert_eq!(sim.running_images(), ["app:1", "app:1"], "the other two slots keep the old version");
    // A paused update does nothing more until the next `service update`.
    assert_eq!(sim.status(), Some(UpdateState::Paused));
}

#[test]
fn continue_ignores_failures() {
    let mut sim = Sim::new(3, |s| s.update_config.failure_action = FailureAction::Continue);
    sim.behaviour.insert("app:2".into(), Behaviour::FailsAtStart);
    sim.update(|s| image(s, "app:2"));
    sim.run_until(|s| s.status() == Some(UpdateState::Completed), 400);
    let tried: std::collections::BTreeSet<u64> =
        sim.w.tasks(&sim.svc).iter().filter(|t| t.spec.container.image == "app:2").map(|t| t.slot).collect();
    assert_eq!(tried.len(), 3, "every slot was updated despite failures");
}

#[test]
fn max_failure_ratio_is_strictly_greater_than() {
    // 4 slots, ratio 0.25: one failure (0.25) is tolerated, the second (0.5) pauses.
    let mut sim = Sim::new(4, |s| s.update_config.max_failure_ratio = 0.25);
    sim.behaviour.insert("app:2".into(), Behaviour::FailsAtStart);
    sim.update(|s| image(s, "app:2"));
    sim.run_until(|s| s.status() == Some(UpdateState::Paused), 400);
    let failed = sim
        .w
        .tasks(&sim.svc)
        .iter()
        .filter(|t| t.spec.container.image == "app:2" && t.status.state == TaskState::Failed)
        .count();
    assert_eq!(failed, 2);
    assert_eq!(sim.service().update_status.unwrap().slots, Some(4));
}

#[test]
fn a_late_failure_within_monitor_counts_one_after_it_does_not() {
    let mut sim = Sim::new(2, |s| s.update_config.monitor = GoDuration::from_secs(2));
    sim.behaviour.insert("app:2".into(), Behaviour::FailsAfterRunning);
    sim.update(|s| image(s, "app:2"));
    sim.run_until(|s| s.status() == Some(UpdateState::Paused), 200);
    let mut sim = Sim::new(2, |s| s.update_config.monitor = GoDuration::from_millis(500));
    sim.behaviour.insert("app:2".into(), Behaviour::FailsAfterRunning);
    sim.update(|s| image(s, "app:2"));
    sim.run_until(|s| s.status() == Some(UpdateState::Completed), 400);
}

#[test]
fn automatic_rollback_returns_to_the_previous_spec_and_forgets_it() {
    let mut sim = Sim::new(3, |s| {
        s.update_config.failure_action = FailureAction::Rollback;
        s.rollback_config.parallelism = 3;
    });
    sim.behaviour.insert("app:2".into(), Behaviour::FailsAtStart);
    sim.update(|s| image(s, "app:2"));
    sim.run_until(|s| s.status() == Some(UpdateState::RollbackCompleted), 400);
    assert!(
        sim.settled_on("app:1", 3),
        "{:?}",
        sim.w
            .tasks(&sim.svc)
            .iter()
            .map(|t| (t.slot, t.spec.container.image.clone(), t.status.state, t.desired_state, t.origin))
            .collect::<Vec<_>>()
    );
    let service = sim.service();
    assert!(service.previous_spec.is_none(), "automatic rollback clears the previous spec");
    assert_eq!(service.spec.task.container.image, "app:1");
    assert_eq!(service.update_status.unwrap().message, "rollback completed");
}

#[test]
fn a_failing_rollback_pauses_instead_of_rolling_back_again() {
    let mut sim = Sim::new(2, |s| s.update_config.failure_action = FailureAction::Rollback);
    sim.update(|s| image(s, "app:2"));
    sim.run_until(|s| s.status() == Some(UpdateState::Completed), 400);
    // The old version now fails too: rolling back to it must pause, not roll back the rollback.
    sim.behaviour.insert("app:1".into(), Behaviour::FailsAtStart);
    sim.rollback();
    sim.run_until(|s| s.status() == Some(UpdateState::RollbackPaused), 400);
    assert!(
        sim.service()
            .update_status
            .unwrap()
            .message
            .starts_with("rollback paused due to failure or early termination of task ")
    );
}

#[test]
fn manual_rollback_toggles_and_uses_the_rollback_config() {
    let mut sim = Sim::new(4, |s| {
        s.update_config.parallelism = 1;
        s.rollback_config.parallelism = 4;
    });
    sim.update(|s| image(s, "app:2"));
    sim.run_until(|s| s.status() == Some(UpdateState::Completed), 400);
    for expected in ["app:1", "app:2", "app:1"] {
        sim.max_in_transition = 0;
        sim.rollback();
        assert_eq!(sim.service().update_status.as_ref().unwrap().message, "manually requested rollback");
        sim.run_until(|s| s.status() == Some(UpdateState::RollbackCompleted) && s.settled_on(expected, 4), 400);
        assert_eq!(sim.max_in_transition, 4, "rollback_config.parallelism applies");
    }
}

#[test]
fn changes_that_do_not_touch_tasks_leave_tasks_and_status_alone() {
    let mut sim = Sim::new(3, |_| {});
    let before: Vec<String> = sim.w.runnable(&sim.svc).iter().map(|t| t.id.clone()).collect();
    sim.update(|s| {
        s.labels.insert("team".into(), "a".into());
        s.update_config.parallelism = 3;
    });
    for _ in 0..20 {
        sim.round();
    }
    let after: Vec<String> = sim.w.runnable(&sim.svc).iter().map(|t| t.id.clone()).collect();
    assert_eq!(before, after);
    assert_eq!(sim.status(), None, "no update status for a change that replaces nothing");
}

#[test]
fn force_replaces_every_task() {
    let mut sim = Sim::new(3, |_| {});
    let before: Vec<String> = sim.w.runnable(&sim.svc).iter().map(|t| t.id.clone()).collect();
    sim.update(|s| s.task.force_update += 1);
    sim.run_until(|s| s.status() == Some(UpdateState::Completed), 400);
    let after: Vec<String> = sim.w.runnable(&sim.svc).iter().map(|t| t.id.clone()).collect();
    assert!(after.iter().all(|id| !before.contains(id)));
}

#[test]
fn placement_only_change_keeps_tasks_on_matching_nodes() {
    let mut sim = Sim::new(3, |_| {});
    for n in ["n1", "n2", "n3"] {
        sim.w.node_update(n, |node| {
            node.spec.labels.insert("zone".into(), if n == "n3" { "b" } else { "a" }.into());
        });
    }
    let before: BTreeMap<String, String> =
        sim.w.runnable(&sim.svc).iter().map(|t| (t.id.clone(), t.node_id.clone())).collect();
    sim.update(|s| s.task.placement.constraints = vec![Constraint::parse("node.labels.zone==a").unwrap()]);
    sim.run_until(|s| s.status() == Some(UpdateState::Completed), 400);
    let after: BTreeMap<String, String> =
        sim.w.runnable(&sim.svc).iter().map(|t| (t.id.clone(), t.node_id.clone())).collect();
    for (id, node) in &before {
        assert_eq!(after.contains_key(id), node != "n3", "task on {node}");
    }
}

#[test]
fn an_old_task_that_never_stops_is_replaced_after_the_timeout() {
    let mut sim = Sim::new(1, |_| {});
    sim.stuck = true;
    sim.update(|s| image(s, "app:2"));
    let start = sim.w.now;
    sim.run_until(|s| s.running_images().contains(&"app:2".to_string()), 1_000);
    assert!(sim.w.now - start >= crate::OLD_TASK_TIMEOUT_MS, "started only after the one-minute timeout");
}

#[test]
fn a_new_leader_resumes_without_redoing_slots_or_exceeding_parallelism() {
    // The updater keeps no memory between passes: a "new leader" is simply the next pass over
    // the same store. Interleave passes that stop half-way through a batch.
    let mut sim = Sim::new(6, |s| s.update_config.parallelism = 2);
    sim.update(|s| image(s, "app:2"));
    let mut created = std::collections::BTreeSet::new();
    for _ in 0..400 {
        sim.round();
        created.extend(sim.w.tasks(&sim.svc).iter().filter(|t| t.origin == TaskOrigin::Update).map(|t| t.id.clone()));
        if sim.status() == Some(UpdateState::Completed) {
            break;
        }
    }
    assert_eq!(sim.status(), Some(UpdateState::Completed));
    assert_eq!(created.len(), 6, "each slot replaced exactly once");
    assert!(sim.max_in_transition <= 2);
}

#[test]
fn an_unschedulable_new_task_keeps_the_update_going_and_says_why() {
    let mut sim = Sim::new(2, |_| {});
    sim.update(|s| image(s, "app:2"));
    // Pretend the scheduler could not place the first new task.
    sim.w.settle();
    let new = sim.w.tasks(&sim.svc).into_iter().find(|t| t.origin == TaskOrigin::Update).unwrap();
    sim.w.apply(vec![Action::MarkUnschedulable {
        id: new.id.clone(),
        err: "no suitable node (2 nodes not available for new tasks)".into(),
    }]);
    sim.w.settle();
    let status = sim.service().update_status.unwrap();
    assert_eq!(status.state, UpdateState::Updating);
    assert!(status.message.contains("no suitable node (2 nodes not available for new tasks)"), "{}", status.message);
}

#[test]
fn automatic_rollback_does_not_wait_for_cancelled_restarts() {
    // Restarts on (with a delay): the failed task's restart is created, then cancelled by the
    // rollback before it is ever scheduled. The rollback's new task must not wait a minute for it.
    let mut sim = Sim::new(3, |s| {
        s.update_config.failure_action = FailureAction::Rollback;
        s.task.restart_policy.condition = RestartCondition::Any;
        s.task.restart_policy.delay = GoDuration::from_secs(5);
    });
    sim.behaviour.insert("app:2".into(), Behaviour::FailsAfterRunning);
    sim.update(|s| {
        image(s, "app:2");
        s.task.restart_policy.condition = RestartCondition::Any;
    });
    let start = sim.w.now;
    sim.run_until(|s| s.status() == Some(UpdateState::RollbackCompleted), 1_000);
    assert!(sim.settled_on("app:1", 3));
    assert!(sim.w.now - start < crate::OLD_TASK_TIMEOUT_MS, "took {} ms", sim.w.now - start);
    let stuck: Vec<Task> = sim.w.tasks(&sim.svc).into_iter().filter(|t| t.status.state < TaskState::Assigned).collect();
    assert!(stuck.is_empty(), "cancelled tasks are marked shut down: {stuck:?}");
}

/// Ends every running task of the service with `end` (an exit, or a container killed).
fn end_running(sim: &mut Sim, end: TaskState) {
    for t in sim.w.runnable(&sim.svc) {
        if t.status.state == TaskState::Running {
            sim.w.set_status(&t.id, end);
        }
    }
}

#[test]
fn slots_stopped_for_good_are_brought_back_by_an_update_slot_by_slot() {
    // (restart condition, how the tasks end, max attempts, update by --force rather than image)
    for (condition, end, max_attempts, force) in [
        (RestartCondition::OnFailure, TaskState::Complete, 0, true),
        (RestartCondition::OnFailure, TaskState::Complete, 0, false),
        (RestartCondition::None, TaskState::Failed, 0, true),
        (RestartCondition::None, TaskState::Complete, 0, false),
        (RestartCondition::Any, TaskState::Failed, 1, false),
    ] {
        let case = format!("{condition:?} after {end:?}, max attempts {max_attempts}, force {force}");
        let mut sim = Sim::new(3, |s| {
            s.task.restart_policy.condition = condition;
            s.task.restart_policy.max_attempts = max_attempts;
        });
        if max_attempts > 0 {
            // The one restart each slot is allowed fails too.
            sim.behaviour.insert("app:1".into(), Behaviour::FailsAtStart);
        }
        end_running(&mut sim, end);
        sim.run_until(|s| s.w.runnable(&s.svc).is_empty(), 200);
        for _ in 0..20 {
            sim.round();
        }
        assert!(sim.w.runnable(&sim.svc).is_empty(), "{case}: stopped slots stay stopped without an update");
        let stopped: Vec<String> = sim.w.tasks(&sim.svc).iter().map(|t| t.id.clone()).collect();

        let want = if force { "app:1" } else { "app:2" };
        if force {
            sim.behaviour.insert("app:1".into(), Behaviour::Works);
            sim.update(|s| s.task.force_update += 1);
        } else {
            sim.update(|s| image(s, "app:2"));
        }
        sim.run_until(|s| s.status() == Some(UpdateState::Completed) && s.settled_on(want, 3), 400);
        assert_eq!(sim.max_in_transition, 1, "{case}: one slot at a time (parallelism 1)");
        let new: Vec<Task> = sim.w.runnable(&sim.svc).into_iter().filter(|t| !stopped.contains(&t.id)).collect();
        assert_eq!(new.len(), 3, "{case}");
        assert!(new.iter().all(|t| t.origin == TaskOrigin::Update), "{case}: the updater brought them back");
        let slots: std::collections::BTreeSet<u64> = new.iter().map(|t| t.slot).collect();
        assert_eq!(slots, [1, 2, 3].into(), "{case}: in their own slots");
    }
}

#[test]
fn a_rollback_does_not_double_a_slot_that_stopped_for_good() {
    // Restart none: the failed new task stops its slot for good; while rolling back, the
    // orchestrator re-creates that slot and the updater must not add a second task to it.
    let mut sim = Sim::new(3, |s| s.update_config.failure_action = FailureAction::Rollback);
    sim.behaviour.insert("app:2".into(), Behaviour::FailsAtStart);
    sim.update(|s| image(s, "app:2"));
    sim.run_until(|s| s.status() == Some(UpdateState::RollbackCompleted), 400);
    assert!(sim.settled_on("app:1", 3));
    let runnable = sim.w.runnable(&sim.svc);
    assert_eq!(runnable.len(), 3, "{runnable:?}");
}

#[test]
fn continue_completes_while_the_new_tasks_crash_and_restart() {
    let mut sim = Sim::new(3, |s| {
        s.update_config.failure_action = FailureAction::Continue;
        s.update_config.monitor = GoDuration::from_secs(1);
        s.task.restart_policy.condition = RestartCondition::Any;
        s.task.restart_policy.delay = GoDuration::from_millis(100);
    });
    sim.behaviour.insert("app:2".into(), Behaviour::FailsAtStart);
    sim.update(|s| image(s, "app:2"));
    sim.run_until(|s| s.status() == Some(UpdateState::Completed), 600);
    let restarts = sim
        .w
        .tasks(&sim.svc)
        .iter()
        .filter(|t| t.origin == TaskOrigin::Restart && t.spec.container.image == "app:2")
        .count();
    assert!(restarts > 0, "the new tasks were being restarted while the update completed");
    let service = sim.service();
    let status = service.update_status.unwrap();
    assert_eq!(status.message, "update completed");
    // Every slot was handed the new version, even though none of them ever ran (the update's
    // own tasks may already be reaped behind their restarts).
    let tried: std::collections::BTreeSet<u64> =
        sim.w.tasks(&sim.svc).iter().filter(|t| t.spec.container.image == "app:2").map(|t| t.slot).collect();
    assert_eq!(tried.len(), 3);
}

#[test]
fn the_failure_action_names_the_task_whose_failure_crossed_the_ratio() {
    for action in [FailureAction::Pause, FailureAction::Rollback] {
        // 4 slots, ratio 0.25: the first failure (0.25) is tolerated, the second (0.5) crosses.
        let mut sim = Sim::new(4, |s| {
            s.update_config.max_failure_ratio = 0.25;
            s.update_config.failure_action = action;
        });
        sim.behaviour.insert("app:2".into(), Behaviour::FailsAtStart);
        sim.update(|s| image(s, "app:2"));
        sim.run_until(
            |s| s.service().update_status.is_some_and(|u| u.message.contains("due to failure or early termination")),
            400,
        );
        let mut failed: Vec<Task> = sim
            .w
            .tasks(&sim.svc)
            .into_iter()
            .filter(|t| t.spec.container.image == "app:2" && t.status.state == TaskState::Failed)
            .collect();
        failed.sort_by_key(|t| (t.status.timestamp, t.id.clone()));
        assert_eq!(failed.len(), 2, "{action:?}");
        assert!(failed[0].status.timestamp < failed[1].status.timestamp, "one slot at a time");
        let message = sim.service().update_status.unwrap().message;
        assert!(message.ends_with(&format!("of task {}", failed[1].id)), "{action:?}: {message}");
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
    /// Whichever slots stopped for good (and how), an update ends with every replica running
    /// the new version, never more slots in transition than `parallelism` (checked each round).
    #[test]
    fn an_update_revives_any_mix_of_stopped_slots(
        ends in proptest::collection::vec(0u8..3, 4),
        parallelism in 1u64..4,
    ) {
        let mut sim = Sim::new(4, |s| {
            s.task.restart_policy.condition = RestartCondition::OnFailure;
            s.update_config.parallelism = parallelism;
        });
        let tasks = sim.w.runnable(&sim.svc);
        for (t, end) in tasks.iter().zip(&ends) {
            match end {
                // exit 0: not restarted under on-failure
                0 => sim.w.set_status(&t.id, TaskState::Complete),
                // a crash: restarted
                1 => sim.w.set_status(&t.id, TaskState::Failed),
                _ => {}
            }
        }
        // Until the crashed slots' replacements run (of the old version): otherwise the update
        // would find them not yet replaced, and the restarts would take the new spec on their own.
        let alive = 4 - ends.iter().filter(|e| **e == 0).count();
        sim.run_until(
            |s| {
                let runnable = s.w.runnable(&s.svc);
                runnable.len() == alive && runnable.iter().all(|t| t.status.state == TaskState::Running)
            },
            100,
        );
        sim.update(|s| image(s, "app:2"));
        sim.run_until(|s| s.status() == Some(UpdateState::Completed) && s.settled_on("app:2", 4), 600);
        proptest::prop_assert!(sim.max_in_transition as u64 <= parallelism);
    }
}

/// A stop-first slot's "shut the old task down" and "create its replacement" are one step of
/// the plan, so the control loop writes them in one raft entry.
#[test]
fn a_stop_first_slot_is_one_atomic_step() {
    let mut w = World::new(&["n1", "n2"]);
    let mut s = ServiceSpec::new("web", "shoal/busybox:1");
    s.mode = ServiceMode::Replicated { replicas: 3 };
    s.update_config.parallelism = 2;
    let svc = w.service(s);
    w.settle();
    w.run_all();
    w.settle();
    let service = w.state.service(&svc).expect("service").clone();
    let mut spec = service.spec.clone();
    spec.task.force_update += 1;
    w.apply(vec![Action::UpdateService { id: svc.clone(), expected_version: service.version, spec }]);
    let plan = w.step();
    let starts = plan.actions.iter().filter(|a| matches!(a, Action::PutTask { .. })).count();
    assert_eq!((starts, plan.atomic.len()), (2, 2), "{plan:?}");
    let steps = crate::Plan { actions: plan.actions.clone(), atomic: plan.atomic.clone(), ..crate::Plan::default() }
        .into_steps();
    let pairs: Vec<&Vec<Action>> = steps.iter().filter(|s| s.len() > 1).collect();
    assert_eq!(pairs.len(), 2);
    for pair in pairs {
        let [Action::SetDesiredState { id: old, desired: TaskState::Shutdown }, Action::PutTask { task }] = &pair[..]
        else {
            panic!("expected shut down old + put new: {pair:?}");
        };
        assert_eq!(task.start_gate.as_ref().and_then(|g| g.after_task.as_ref()), Some(old));
    }
    assert_eq!(steps.concat(), plan.actions, "the steps keep every action in order");
}

/// `rollout pause` mid-update: the slots in transition finish (start-first: the old task stops
/// once its replacement runs) but no new slot starts, however long it stays paused; `resume`
/// carries on where it stopped and completes.
#[test]
fn a_paused_update_starts_no_new_slot_and_resumes_where_it_stopped() {
    for order in [UpdateOrder::StopFirst, UpdateOrder::StartFirst] {
        let mut sim = Sim::new(4, |s| s.update_config.order = order);
        sim.update(|s| image(s, "app:2"));
        sim.run_until(|s| s.w.tasks(&s.svc).iter().any(|t| t.spec.container.image == "app:2"), 100);
        sim.w.apply(vec![Action::PauseRollout { id: sim.svc.clone() }]);
        assert_eq!(sim.status(), Some(UpdateState::Paused));
        for _ in 0..100 {
            sim.round();
        }
        let new_tasks = sim.w.tasks(&sim.svc).iter().filter(|t| t.spec.container.image == "app:2").count();
        assert_eq!(new_tasks, 1, "{order:?}: one slot was in transition when paused, and no other started");
        let running = sim.running_images();
        assert_eq!(running.len(), 4, "{order:?}: the slot in transition finished: {running:?}");
        assert_eq!(running.iter().filter(|i| *i == "app:2").count(), 1, "{order:?}");
        assert_eq!(sim.status(), Some(UpdateState::Paused), "{order:?}: still paused");

        sim.w.apply(vec![Action::ResumeRollout { id: sim.svc.clone() }]);
        sim.run_until(|s| s.status() == Some(UpdateState::Completed), 400);
        assert!(sim.settled_on("app:2", 4), "{order:?}");
        assert_eq!(sim.max_in_transition, 1, "{order:?}");
    }
}

/// `--dry-run`: the plan names the tasks the update then replaces, in its batches, with why; a
/// change that replaces nothing plans nothing; warnings come before the harm.
#[test]
fn the_dry_run_plan_is_what_the_update_then_does() {
    let mut sim = Sim::new(5, |s| {
        s.update_config.parallelism = 2;
        s.update_config.delay = GoDuration::from_secs(1);
        s.update_config.monitor = GoDuration::from_secs(2);
    });
    let service = sim.service();
    let mut next = service.spec.clone();
    next.labels.insert("tier".into(), "front".into());
    let plan = crate::plan::plan_update(&sim.w.state, &service, &next);
    assert!(plan.out_of_date.is_empty() && plan.batches.is_empty() && plan.estimate_secs == 0.0, "{plan:?}");

    image(&mut next, "app:2");
    let plan = crate::plan::plan_update(&sim.w.state, &service, &next);
    assert_eq!(plan.tasks, 5);
    assert_eq!(plan.batches, [vec!["web.1", "web.2"], vec!["web.3", "web.4"], vec!["web.5"]]);
    assert!(plan.out_of_date.iter().all(|t| t.reasons == ["image app:1 → app:2"] && !t.node.is_empty()), "{plan:?}");
    // 3 batches × (start + 1 s delay) + 2 s monitor.
    assert_eq!(plan.estimate_secs, 3.0 * (plan.task_start_secs + 1.0) + 2.0);
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);

    let planned: Vec<String> = plan.out_of_date.iter().map(|t| t.name.clone()).collect();
    sim.update(|s| image(s, "app:2"));
    sim.run_until(|s| s.status() == Some(UpdateState::Completed), 400);
    let done = sim.service();
    let mut replaced: Vec<String> = sim
        .w
        .tasks(&sim.svc)
        .iter()
        .filter(|t| t.origin == TaskOrigin::Update && t.spec_version == done.spec_version)
        .map(|t| t.name())
        .collect();
    replaced.sort();
    assert_eq!(replaced, planned, "the update replaced what the plan said");

    let mut risky = done.spec.clone();
    risky.mode = ServiceMode::Replicated { replicas: 1 };
    risky.task.placement.constraints = vec![Constraint::parse("node.labels.zone==mars").unwrap()];
    let plan = crate::plan::plan_update(&sim.w.state, &done, &risky);
    assert_eq!(
        plan.warnings,
        [
            "no new task can be placed: no ready, active node satisfies node.labels.zone==mars",
            "stop-first with 1 replica: the service has no running task while it is replaced (--update-order \
             start-first keeps the old one until the new one runs)"
        ]
    );
    assert!(plan.out_of_date.iter().all(|t| t.reasons == ["placement: its node no longer satisfies the constraints"]));
}
