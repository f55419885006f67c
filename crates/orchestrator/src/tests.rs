use proptest::prelude::*;
use shoal_store::{Action, Batch, State};
use shoal_types::*;

use super::*;

/// A small world: a cluster, worker nodes, services and tasks, built through real store actions.
pub(crate) struct World {
    pub state: State,
    pub index: u64,
    next_id: u64,
    pub now: Timestamp,
    /// What the changes since the last step made dirty, and the services' wake-up times: the
    /// control loop's bookkeeping, so every test here runs the incremental pass.
    dirty: Dirty,
    timers: BTreeMap<String, Timestamp>,
}

impl World {
    pub fn new(nodes: &[&str]) -> World {
        let mut w = World {
            state: State::default(),
            index: 0,
            next_id: 0,
            now: 1_000_000,
            dirty: Dirty::default(),
            timers: BTreeMap::new(),
        };
        let cluster = Cluster { id: "c".into(), version: 0, created_at: 0, spec: ClusterSpec::default() };
        w.apply(vec![Action::InitCluster { cluster }]);
        for n in nodes {
            w.add_node(n);
        }
        w
    }

    pub fn add_node(&mut self, id: &str) {
        let node = Node {
            id: id.into(),
            version: 0,
            created_at: 0,
            updated_at: 0,
            spec: NodeSpec::default(),
            description: NodeDescription { hostname: id.into(), ..Default::default() },
            status: NodeStatus { state: NodeState::Ready, ..Default::default() },
            manager: None,
        };
        self.apply(vec![Action::PutNode { node }]);
    }

    pub fn apply(&mut self, actions: Vec<Action>) {
        self.index += 1;
        let changes = self.state.apply(self.index, &Batch::new(self.now, actions)).expect("batch applies");
        for change in &changes {
            self.dirty.observe(change, || &self.state);
        }
    }

    pub fn service(&mut self, spec: ServiceSpec) -> String {
        let id = format!("svc-{}", spec.name);
        self.apply(vec![Action::CreateService { id: id.clone(), spec }]);
        id
    }

    /// One reconcile pass, applied; returns the plan. The pass is the incremental one, over what
    /// changed since the last step and the services whose wake-up time came; it must decide
    /// exactly what a pass over everything decides.
    pub fn step(&mut self) -> Plan {
        let mut dirty = self.dirty.take();
        let due: Vec<String> = self.timers.iter().filter(|(_, at)| **at <= self.now).map(|(s, _)| s.clone()).collect();
        dirty.services.extend(due);
        let ids_from = |mut next_id: u64| {
            move || {
                next_id += 1;
                format!("t{next_id:03}")
            }
        };
        let mut ids = ids_from(self.next_id);
        let full = reconcile(&self.state, &mut Ctx { now: self.now, new_id: &mut ids });
        let mut next_id = self.next_id;
        let mut ids = || {
            next_id += 1;
            format!("t{next_id:03}")
        };
        let plan = reconcile_dirty(|| &self.state, &mut Ctx { now: self.now, new_id: &mut ids }, &dirty);
        self.next_id = next_id;
        assert_eq!(
            format!("{:?}", plan.actions),
            format!("{:?}", full.actions),
            "the incremental pass over {dirty:?} decided otherwise than a full pass"
        );
        if dirty.all {
            self.timers.clear();
        } else {
            for service in &dirty.services {
                self.timers.remove(service);
            }
        }
        self.timers.extend(plan.wakeups.iter().map(|(s, at)| (s.clone(), *at)));
        if plan.unfinished {
            self.dirty.merge(dirty);
        }
        if !plan.actions.is_empty() {
            self.apply(plan.actions.clone());
        }
        plan
    }

    /// Reconciles until nothing changes (as the runtime does after each applied batch).
    pub fn settle(&mut self) {
        for _ in 0..20 {
            if self.step().actions.is_empty() {
                return;
            }
        }
        panic!("reconcile did not settle");
    }

    /// Plays the scheduler and agents: assigns unassigned runnable tasks round-robin and runs
    /// every task whose desired state is RUNNING.
    pub fn run_all(&mut self) {
        let nodes: Vec<String> = self
            .state
            .nodes()
            .filter(|n| n.status.state == NodeState::Ready && n.spec.availability == Availability::Active)
            .map(|n| n.id.clone())
            .collect();
        let mut actions = Vec::new();
        for (i, t) in self.state.tasks().enumerate() {
            if t.node_id.is_empty() && t.desired_state <= TaskState::Running && !nodes.is_empty() {
                actions.push(Action::AssignTask { id: t.id.clone(), node_id: nodes[i % nodes.len()].clone() });
            }
        }
        self.apply(actions);
        let mut actions = Vec::new();
        for t in self.state.tasks() {
            if !t.node_id.is_empty() && t.status.state < TaskState::Running {
                let state = if t.desired_state == TaskState::Running {
                    TaskState::Running
                } else if t.desired_state == TaskState::Ready {
                    TaskState::Ready
                } else {
                    continue;
                };
                actions.push(Action::SetTaskStatus {
                    id: t.id.clone(),
                    status: TaskStatus { state, timestamp: self.now, ..Default::default() },
                });
            }
        }
        self.apply(actions);
    }

    pub fn set_status(&mut self, task: &str, state: TaskState) {
        let status = TaskStatus { state, timestamp: self.now, ..Default::default() };
        self.apply(vec![Action::SetTaskStatus { id: task.into(), status }]);
    }

    pub fn tasks(&self, service: &str) -> Vec<Task> {
        let mut tasks: Vec<Task> = self.state.tasks_of_service(service).cloned().collect();
        tasks.sort_by_key(|t| (t.slot, t.created_at, t.id.clone()));
        tasks
    }

    pub fn runnable(&self, service: &str) -> Vec<Task> {
        self.tasks(service).into_iter().filter(|t| t.desired_state <= TaskState::Running).collect()
    }

    pub fn node_update(&mut self, id: &str, f: impl FnOnce(&mut Node)) {
        let mut node = self.state.node(id).unwrap().clone();
        f(&mut node);
        self.apply(vec![Action::PutNode { node }]);
    }
}

fn spec(name: &str, replicas: u64) -> ServiceSpec {
    let mut s = ServiceSpec::new(name, "shoal/busybox:1");
    s.mode = ServiceMode::Replicated { replicas };
    s
}

#[test]
fn creates_one_task_per_slot_from_one() {
    let mut w = World::new(&["n1", "n2"]);
    let svc = w.service(spec("web", 3));
    w.settle();
    let tasks = w.tasks(&svc);
    assert_eq!(tasks.iter().map(|t| t.slot).collect::<Vec<_>>(), [1, 2, 3]);
    for t in &tasks {
        assert_eq!(
            (t.desired_state, t.status.state, t.origin),
            (TaskState::Running, TaskState::New, TaskOrigin::Orchestrator)
        );
        assert_eq!(t.service_name, "web");
        assert!(t.node_id.is_empty(), "the scheduler assigns nodes");
    }
}

#[test]
fn failed_task_is_replaced_after_the_restart_delay() {
    let mut w = World::new(&["n1"]);
    let svc = w.service(spec("web", 1));
    w.settle();
    w.run_all();
    let old = w.tasks(&svc)[0].id.clone();
    w.set_status(&old, TaskState::Failed);
    let plan = w.step();
    assert!(
        plan.actions
            .iter()
            .any(|a| matches!(a, Action::SetDesiredState { id, desired: TaskState::Shutdown } if *id == old))
    );
    let tasks = w.tasks(&svc);
    let new = tasks.iter().find(|t| t.id != old).expect("replacement");
    // The old task already stopped, so only time gates the new one: it is RUNNING at once and
    // held from the scheduler (no node sees it) until the delay has passed.
    assert_eq!((new.slot, new.desired_state, new.origin), (1, TaskState::Running, TaskOrigin::Restart));
    let gate = new.start_gate.clone().expect("gated by the 5s default delay");
    assert_eq!(gate.not_before, w.now + 5_000);
    assert_eq!(gate.after_task, None, "the old task already stopped");
    assert_eq!(plan.next_wakeup, Some(w.now + 5_000));
    // Not yet: 4.9 s later the task is still held, and the pass asks to be woken at 5 s.
    w.now += 4_900;
    assert_eq!(w.step().next_wakeup, Some(w.now + 100));
    assert!(held_by_backoff(w.state.task(&new.id).unwrap(), w.now));
    w.now += 100;
    assert!(!held_by_backoff(w.state.task(&new.id).unwrap(), w.now));
    assert!(w.step().actions.is_empty(), "no write is needed to release it");
}

#[test]
fn restart_conditions() {
    for (condition, end, restarted) in [
        (RestartCondition::Any, TaskState::Complete, true),
        (RestartCondition::Any, TaskState::Failed, true),
        (RestartCondition::OnFailure, TaskState::Complete, false),
        (RestartCondition::OnFailure, TaskState::Failed, true),
        (RestartCondition::OnFailure, TaskState::Rejected, true),
        (RestartCondition::None, TaskState::Failed, false),
        (RestartCondition::None, TaskState::Complete, false),
    ] {
        let mut w = World::new(&["n1"]);
        let mut s = spec("web", 2);
        s.task.restart_policy.condition = condition;
        s.task.restart_policy.delay = GoDuration::ZERO;
        let svc = w.service(s);
        w.settle();
        w.run_all();
        let first = w.tasks(&svc)[0].id.clone();
        w.set_status(&first, end);
        w.settle();
        let tasks = w.tasks(&svc);
        assert_eq!(tasks.len(), if restarted { 3 } else { 2 }, "{condition:?} after {end:?}");
        assert_eq!(w.state.task(&first).unwrap().desired_state, TaskState::Shutdown);
        // A slot that is not restarted still counts: no extra task appears later either.
        w.settle();
        assert_eq!(w.tasks(&svc).len(), tasks.len());
        if restarted {
            let new = tasks.iter().find(|t| t.origin == TaskOrigin::Restart).unwrap();
            assert_eq!((new.slot, new.desired_state), (1, TaskState::Running), "delay 0 starts at once");
        }
    }
}

#[test]
fn max_attempts_and_window() {
    let mut w = World::new(&["n1"]);
    let mut s = spec("web", 1);
    s.task.restart_policy.delay = GoDuration::ZERO;
    s.task.restart_policy.max_attempts = 1;
    s.task.restart_policy.window = GoDuration::from_millis(500);
    let svc = w.service(s);
    w.settle();
    w.run_all();
    let first = w.runnable(&svc)[0].id.clone();
    w.set_status(&first, TaskState::Failed);
    w.settle();
    w.run_all();
    let second = w.runnable(&svc)[0].id.clone();
    assert_ne!(first, second, "first failure restarted");
    w.set_status(&second, TaskState::Failed);
    w.settle();
    assert!(w.runnable(&svc).is_empty(), "second failure within the window is not restarted");
    // After the window, a new failure would be restarted again: the old restart has aged out.
    let failed = w.state.task(&second).unwrap().clone();
    let slot: Vec<&Task> = w.state.tasks_of_service(&svc).collect();
    let mut later = failed.clone();
    later.status.timestamp = w.now + 1_000;
    assert!(should_restart(&w.state.service(&svc).unwrap().spec, &later, &slot, w.now + 1_000));
}

#[test]
fn a_new_spec_version_resets_the_restart_budget() {
    let mut w = World::new(&["n1"]);
    let mut s = spec("web", 1);
    s.task.restart_policy.delay = GoDuration::ZERO;
    s.task.restart_policy.max_attempts = 1;
    let svc = w.service(s);
    w.settle();
    let service = w.state.service(&svc).unwrap().clone();
    let slot: Vec<Task> = w.tasks(&svc);
    let mut restart = slot[0].clone();
    restart.origin = TaskOrigin::Restart;
    restart.status.state = TaskState::Failed;
    let refs: Vec<&Task> = vec![&restart];
    assert!(!should_restart(&service.spec, &restart, &refs, w.now), "budget of 1 used");
    let mut newer = restart.clone();
    newer.spec_version += 1;
    newer.origin = TaskOrigin::Update;
    let refs: Vec<&Task> = vec![&restart, &newer];
    assert!(should_restart(&service.spec, &newer, &refs, w.now), "restarts of older spec versions do not count");
}

#[test]
fn down_node_tasks_are_replaced_at_once_drained_ones_wait_for_the_old_task() {
    let mut w = World::new(&["n1", "n2"]);
    let svc = w.service(spec("web", 2));
    w.settle();
    w.run_all();
    let on = |w: &World, n: &str| w.runnable(&svc).into_iter().find(|t| t.node_id == n).unwrap();
    let lost = on(&w, "n1");
    w.node_update("n1", |n| n.status.state = NodeState::Down);
    w.settle();
    assert_eq!(w.state.task(&lost.id).unwrap().desired_state, TaskState::Shutdown);
    let replacement = w.runnable(&svc).into_iter().find(|t| t.slot == lost.slot).unwrap();
    assert_eq!(
        (replacement.desired_state, replacement.node_id.as_str()),
        (TaskState::Running, ""),
        "no delay, rescheduled anywhere"
    );

    let drained = on(&w, "n2");
    w.node_update("n2", |n| n.spec.availability = Availability::Drain);
    w.settle();
    let replacement = w.runnable(&svc).into_iter().find(|t| t.slot == drained.slot && t.id != drained.id).unwrap();
    assert_eq!(replacement.desired_state, TaskState::Ready, "waits for the old task to stop");
    assert_eq!(replacement.start_gate.as_ref().unwrap().after_task.as_deref(), Some(drained.id.as_str()));
    w.set_status(&drained.id, TaskState::Shutdown);
    w.settle();
    assert_eq!(w.state.task(&replacement.id).unwrap().desired_state, TaskState::Running);
}

#[test]
fn an_old_task_that_never_stops_is_waited_for_one_minute() {
    let mut w = World::new(&["n1", "n2"]);
    let svc = w.service(spec("web", 1));
    w.settle();
    w.run_all();
    let old = w.runnable(&svc)[0].clone();
    w.node_update(&old.node_id.clone(), |n| n.spec.availability = Availability::Drain);
    let plan = w.step();
    let new = w.runnable(&svc).into_iter().find(|t| t.id != old.id).unwrap();
    assert_eq!(plan.next_wakeup, Some(w.now + OLD_TASK_TIMEOUT_MS));
    w.now += OLD_TASK_TIMEOUT_MS - 1;
    w.settle();
    assert_eq!(w.state.task(&new.id).unwrap().desired_state, TaskState::Ready);
    w.now += 1;
    w.settle();
    assert_eq!(w.state.task(&new.id).unwrap().desired_state, TaskState::Running);
}

#[test]
fn scale_up_fills_the_lowest_free_slots() {
    let mut w = World::new(&["n1"]);
    let svc = w.service(spec("web", 3));
    w.settle();
    let two = w.tasks(&svc).into_iter().find(|t| t.slot == 2).unwrap();
    w.apply(vec![Action::SetDesiredState { id: two.id.clone(), desired: TaskState::Remove }]);
    let mut s = w.state.service(&svc).unwrap().clone();
    s.spec.mode = ServiceMode::Replicated { replicas: 4 };
    w.apply(vec![Action::UpdateService { id: svc.clone(), expected_version: s.version, spec: s.spec }]);
    w.settle();
    let mut slots: Vec<u64> = w.runnable(&svc).iter().map(|t| t.slot).collect();
    slots.sort();
    assert_eq!(slots, [1, 2, 3, 4]);
}

/// Swarm's TestReplicatedScaleDown.
#[test]
fn scale_down_removes_from_the_busiest_nodes_and_non_running_first() {
    let mut w = World::new(&["n1", "n2", "n3"]);
    let svc = w.service(spec("web", 7));
    w.settle();
    let placement = [
        ("n1", TaskState::Starting),
        ("n2", TaskState::Running),
        ("n2", TaskState::Running),
        ("n3", TaskState::Running),
        ("n3", TaskState::Running),
        ("n3", TaskState::Running),
    ];
    let tasks = w.tasks(&svc);
    for (task, (node, state)) in tasks.iter().zip(placement) {
        w.apply(vec![Action::AssignTask { id: task.id.clone(), node_id: node.into() }]);
        w.set_status(&task.id, state);
    }
    let by_slot = |w: &World| w.runnable(&svc).iter().map(|t| (t.slot, t.node_id.clone())).collect::<Vec<_>>();
    let scale = |w: &mut World, n: u64| {
        let s = w.state.service(&svc).unwrap().clone();
        let mut spec = s.spec.clone();
        spec.mode = ServiceMode::Replicated { replicas: n };
        w.apply(vec![Action::UpdateService { id: svc.clone(), expected_version: s.version, spec }]);
        w.settle();
    };
    scale(&mut w, 6);
    assert!(by_slot(&w).iter().all(|(slot, _)| *slot != 7), "the unassigned task goes first: {:?}", by_slot(&w));
    scale(&mut w, 4);
    let nodes: Vec<String> = by_slot(&w).into_iter().map(|(_, n)| n).collect();
    assert_eq!(nodes.iter().filter(|n| *n == "n3").count(), 1, "two removed from n3: {nodes:?}");
    assert!(by_slot(&w).contains(&(4, "n3".to_string())), "the lowest slot on n3 survives: {:?}", by_slot(&w));
    scale(&mut w, 2);
    let left = by_slot(&w);
    assert_eq!(left, [(2, "n2".to_string()), (4, "n3".to_string())], "not-running n1 and n2's second copy go");
}

#[test]
fn removed_services_tasks_are_removed_then_reaped() {
    let mut w = World::new(&["n1"]);
    let svc = w.service(spec("web", 2));
    w.settle();
    w.run_all();
    w.apply(vec![Action::RemoveService { id: svc.clone() }]);
    w.settle();
    assert!(w.tasks(&svc).iter().all(|t| t.desired_state == TaskState::Remove));
    assert_eq!(w.tasks(&svc).len(), 2, "running tasks stay until their containers stop");
    for t in w.tasks(&svc) {
        w.set_status(&t.id, TaskState::Shutdown);
    }
    w.settle();
    assert!(w.tasks(&svc).is_empty());
}

#[test]
fn reaper_keeps_the_history_limit_per_slot() {
    let mut w = World::new(&["n1"]);
    let mut s = spec("web", 1);
    s.task.restart_policy.delay = GoDuration::ZERO;
    let svc = w.service(s);
    w.settle();
    for _ in 0..9 {
        w.run_all();
        let current = w.runnable(&svc)[0].id.clone();
        w.now += 10;
        w.set_status(&current, TaskState::Failed);
        w.settle();
    }
    let tasks = w.tasks(&svc);
    assert_eq!(tasks.len(), 5, "default task history limit");
    assert_eq!(tasks.iter().filter(|t| t.desired_state <= TaskState::Running).count(), 1);
}

#[test]
fn global_service_follows_nodes() {
    let mut w = World::new(&["n1", "n2"]);
    let mut s = spec("agent", 0);
    s.mode = ServiceMode::Global;
    let svc = w.service(s);
    w.settle();
    let nodes = |w: &World| {
        let mut n: Vec<String> = w.runnable(&svc).iter().map(|t| t.node_id.clone()).collect();
        n.sort();
        n
    };
    assert_eq!(nodes(&w), ["n1", "n2"]);
    assert!(w.tasks(&svc).iter().all(|t| t.slot == 0));
    w.add_node("n3");
    w.settle();
    assert_eq!(nodes(&w), ["n1", "n2", "n3"]);
    w.node_update("n2", |n| n.spec.availability = Availability::Drain);
    w.settle();
    assert_eq!(nodes(&w), ["n1", "n3"], "drained: shut down, not moved");
    w.node_update("n3", |n| {
        n.spec.labels.insert("zone".into(), "b".into());
    });
    let mut s = w.state.service(&svc).unwrap().clone();
    s.spec.task.placement.constraints = vec![Constraint::parse("node.labels.zone==b").unwrap()];
    w.apply(vec![Action::UpdateService { id: svc.clone(), expected_version: s.version, spec: s.spec }]);
    w.settle();
    assert_eq!(nodes(&w), ["n3"], "constraint change shuts down non-matching nodes' tasks");
    // Managers never get global tasks (shoal managers do not run containers).
    w.node_update("n1", |n| {
        n.spec.labels.insert("zone".into(), "b".into());
        n.spec.role = NodeRole::Manager;
    });
    w.settle();
    assert_eq!(nodes(&w), ["n3"]);
}

#[test]
fn global_failed_task_restarts_on_the_same_node() {
    let mut w = World::new(&["n1"]);
    let mut s = spec("agent", 0);
    s.mode = ServiceMode::Global;
    s.task.restart_policy.delay = GoDuration::ZERO;
    let svc = w.service(s);
    w.settle();
    w.run_all();
    let first = w.runnable(&svc)[0].clone();
    w.set_status(&first.id, TaskState::Failed);
    w.settle();
    let next = w.runnable(&svc);
    assert_eq!(next.len(), 1);
    assert_eq!((next[0].node_id.as_str(), next[0].origin), ("n1", TaskOrigin::Restart));
}

proptest! {
    /// Whatever happens to tasks and nodes, after settling a replicated service has exactly
    /// `replicas` slots with a runnable task (or a not-to-be-restarted one), numbered from 1, and
    /// no slot has two runnable tasks without one of them waiting to start.
    #[test]
    fn replicated_converges_to_the_replica_count(
        replicas in 0u64..7,
        events in prop::collection::vec((0usize..10, 0u8..5), 0..25),
    ) {
        let mut w = World::new(&["n1", "n2", "n3"]);
        let mut s = spec("web", replicas);
        s.task.restart_policy.delay = GoDuration::ZERO;
        let svc = w.service(s);
        w.settle();
        for (pick, what) in events {
            w.run_all();
            let tasks = w.runnable(&svc);
            if tasks.is_empty() { continue; }
            let t = &tasks[pick % tasks.len()];
            match what {
                0 => w.set_status(&t.id, TaskState::Failed),
                1 => w.set_status(&t.id, TaskState::Complete),
                2 if !t.node_id.is_empty() => { let n = t.node_id.clone(); w.node_update(&n, |n| n.status.state = NodeState::Down) }
                3 => { let n = format!("n{}", 1 + pick % 3); w.node_update(&n, |n| n.status.state = NodeState::Ready) }
                _ => w.now += 1_000,
            }
            w.settle();
        }
        w.settle();
        let runnable = w.runnable(&svc);
        let mut slots: Vec<u64> = runnable.iter().map(|t| t.slot).collect();
        slots.sort();
        slots.dedup();
        prop_assert_eq!(slots.len() as u64, replicas, "slots {:?}", slots);
        prop_assert!(slots.iter().all(|s| *s >= 1 && *s <= replicas), "slots {:?}", slots);
        for slot in &slots {
            let in_slot: Vec<&Task> = runnable.iter().filter(|t| t.slot == *slot).collect();
            let running = in_slot.iter().filter(|t| t.desired_state == TaskState::Running).count();
            prop_assert!(running <= 1, "slot {} has {} tasks meant to run", slot, running);
        }
    }
}

#[test]
fn restart_backoff_doubles_to_five_minutes() {
    let seconds: Vec<u64> = (1..=10).map(|n| restart_backoff(5_000, n) / 1_000).collect();
    assert_eq!(seconds, [5, 10, 20, 40, 80, 160, 300, 300, 300, 300]);
    // A delay of 0 restarts the first failure at once, then backs off from a second.
    assert_eq!((1..=4).map(|n| restart_backoff(0, n)).collect::<Vec<_>>(), [0, 2_000, 4_000, 8_000]);
    // Never shorter than the policy's own delay, and no overflow for absurd counts.
    assert_eq!(restart_backoff(600_000, 3), 600_000);
    assert_eq!(restart_backoff(5_000, u32::MAX), MAX_RESTART_BACKOFF_MS);
}

/// A slot whose task fails before it ever runs (a missing image fails in create) backs off
/// exponentially, its replacement is held from the scheduler until then, and `service ps` has
/// the reason to show.
#[test]
fn a_task_failing_in_create_backs_off_exponentially() {
    let mut w = World::new(&["n1"]);
    let svc = w.service(spec("web", 1));
    w.settle();
    let mut waits = Vec::new();
    for round in 1..=6u32 {
        w.run_all();
        let current = w.runnable(&svc).pop().expect("a runnable task");
        let status = TaskStatus {
            state: TaskState::Rejected,
            timestamp: w.now,
            err: "No such image: shoal/busybox:99".into(),
            ..Default::default()
        };
        w.apply(vec![Action::SetTaskStatus { id: current.id.clone(), status }]);
        w.step();
        let replacement = w.runnable(&svc).pop().expect("a replacement");
        assert_ne!(replacement.id, current.id);
        assert_eq!(replacement.restart_failures, round);
        assert_eq!(replacement.status.err, "No such image: shoal/busybox:99");
        let gate = replacement.start_gate.clone().expect("gated");
        assert!(held_by_backoff(&replacement, w.now), "not placed while it waits");
        waits.push((gate.not_before - w.now) / 1_000);
        w.now = gate.not_before;
        assert!(!held_by_backoff(&replacement, w.now));
        w.settle();
        assert_eq!(w.state.task(&replacement.id).unwrap().desired_state, TaskState::Running);
    }
    assert_eq!(waits, [5, 10, 20, 40, 80, 160]);
}

/// A task that ran for a while before it failed resets the backoff: the next restart waits only
/// the policy's delay.
#[test]
fn a_task_that_ran_long_resets_the_backoff() {
    let mut w = World::new(&["n1"]);
    let svc = w.service(spec("web", 1));
    w.settle();
    for _ in 0..3 {
        w.run_all();
        let current = w.runnable(&svc).pop().unwrap();
        w.set_status(&current.id, TaskState::Failed);
        w.step();
        w.now += 10 * 60_000;
        w.settle();
    }
    assert_eq!(w.runnable(&svc).pop().unwrap().restart_failures, 3);
    w.run_all();
    let current = w.runnable(&svc).pop().unwrap();
    assert!(current.running_at.is_some());
    w.now += BACKOFF_RESET_MS;
    w.set_status(&current.id, TaskState::Failed);
    w.step();
    let replacement = w.runnable(&svc).pop().unwrap();
    assert_eq!(replacement.restart_failures, 1);
    assert_eq!(replacement.start_gate.unwrap().not_before, w.now + 5_000);
}

/// A mistyped replica count (or one replayed from a log written before the limit existed) never
/// makes a pass build more than a bounded number of tasks, nor a service more than the limit.
#[test]
fn task_creation_is_bounded_per_pass_and_per_service() {
    let mut w = World::new(&["n1"]);
    let mut cluster = w.state.cluster().unwrap().clone();
    cluster.spec.max_replicas = 5_000;
    w.apply(vec![Action::UpdateCluster { expected_version: cluster.version, spec: cluster.spec }]);
    // Written straight to the store, as an old log would have it: no validation on this path.
    let svc = w.service(spec("huge", 1_000_000_000));
    let mut passes = 0;
    loop {
        let plan = w.step();
        let created = plan.actions.iter().filter(|a| matches!(a, Action::PutTask { .. })).count();
        assert!(created <= shoal_types::limits::MAX_NEW_TASKS_PER_PASS, "{created} tasks in one pass");
        if created == 0 {
            break;
        }
        passes += 1;
        assert!(passes < 10, "creation does not stop");
    }
    assert_eq!(w.tasks(&svc).len(), 5_000);
    assert_eq!(passes, 3);
}

/// Removing a service with many tasks deletes them in actions of bounded size.
#[test]
fn removal_of_a_large_service_deletes_in_pieces() {
    let mut w = World::new(&["n1"]);
    let svc = w.service(spec("big", 2_500));
    w.settle();
    assert_eq!(w.tasks(&svc).len(), 2_500);
    w.apply(vec![Action::RemoveService { id: svc.clone() }]);
    w.settle();
    assert_eq!(w.state.tasks().count(), 0);
    let mut w = World::new(&["n1"]);
    let svc = w.service(spec("big", 2_500));
    w.settle();
    w.apply(vec![Action::RemoveService { id: svc }]);
    let mut deletes = Vec::new();
    for _ in 0..5 {
        let plan = w.step();
        deletes.extend(plan.actions.into_iter().filter_map(|a| match a {
            Action::DeleteTasks { ids } => Some(ids.len()),
            _ => None,
        }));
    }
    assert_eq!(deletes, [1_000, 1_000, 500]);
}

/// A pass that runs out of its budget of new tasks in one service leaves the services after it
/// dirty: they get their tasks in the next passes, not at the next resync.
#[test]
fn services_past_the_new_task_budget_get_their_turn_in_the_next_pass() {
    let mut w = World::new(&["n1"]);
    let budget = shoal_types::limits::MAX_NEW_TASKS_PER_PASS as u64;
    let big = w.service(spec("a-big", budget + 500));
    let small = w.service(spec("b-small", 1));
    let plan = w.step();
    assert!(plan.unfinished, "the budget ran out");
    assert_eq!(w.tasks(&big).len() as u64, budget);
    assert!(w.tasks(&small).is_empty(), "after the budget ran out");
    w.settle();
    assert_eq!(w.tasks(&big).len() as u64, budget + 500);
    assert_eq!(w.tasks(&small).len(), 1);
}
