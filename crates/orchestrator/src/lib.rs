//! The orchestrators as plain functions of state: given the store and the time, what should change.
//! No IO, no clock, no randomness (ids come from the caller), so every rule is tested directly.
//!
//! [`reconcile`] covers the replicated and global orchestrators, the restart supervisor (its
//! delays kept in the store as [`StartGate`]s), and the task reaper. The leader's runtime calls it
//! after every applied change and at the wake-up time it returns, and proposes the actions.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};

use shoal_store::{Action, State};
use shoal_types::{
    Availability, Node, NodeState, RestartCondition, Service, ServiceMode, ServiceSpec, StartGate, Task, TaskOrigin,
    TaskState, TaskStatus, Timestamp,
};

pub mod constraint_enforcer;
pub mod group;
#[cfg(test)]
mod group_tests;
mod jobs;
pub mod plan;
#[cfg(test)]
mod prepare_tests;
pub mod reaper;
pub mod strategy;
#[cfg(test)]
mod strategy_tests;
#[cfg(test)]
mod tests;
pub mod update;
#[cfg(test)]
mod update_tests;

/// Swarm's `defaultOldTaskTimeout`: a replacement starts anyway if the old task has not stopped.
pub const OLD_TASK_TIMEOUT_MS: u64 = 60_000;

/// The restart backoff never waits longer than this (Kubernetes' CrashLoopBackOff cap)…
pub const MAX_RESTART_BACKOFF_MS: u64 = 5 * 60_000;
/// …and doubles from at least this, so a restart delay of 0 still backs off.
pub const MIN_RESTART_BACKOFF_MS: u64 = 1_000;
/// A task that ran this long before it ended resets its slot's backoff (Kubernetes: 10 minutes).
pub const BACKOFF_RESET_MS: u64 = 10 * 60_000;

/// How long to wait before the replacement for the `failures`-th task in a row of a slot that
/// ended without running for [`BACKOFF_RESET_MS`]: the restart policy's delay for the first, then
/// doubling up to [`MAX_RESTART_BACKOFF_MS`] (never below the policy's delay).
pub fn restart_backoff(policy_delay_ms: u64, failures: u32) -> u64 {
    if failures <= 1 {
        return policy_delay_ms;
    }
    let base = policy_delay_ms.max(MIN_RESTART_BACKOFF_MS);
    let doubled = base.saturating_mul(1u64 << (failures - 1).min(32));
    doubled.min(MAX_RESTART_BACKOFF_MS).max(policy_delay_ms)
}

/// Whether a restarted task is still held back by its backoff: the scheduler does not place it
/// (so no node prepares it, and a task that fails in create cannot loop) until the gate opens.
pub fn held_by_backoff(task: &Task, now: Timestamp) -> bool {
    task.restart_held_until(now).is_some()
}

/// What one reconcile pass decided.
#[derive(Debug, Default)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// The earliest time a pending start gate may open: call again then (if nothing else happens).
    pub next_wakeup: Option<Timestamp>,
    /// The same per service: when each service of the pass must be looked at again although
    /// nothing changes (a start gate's delay, an update's monitor window).
    pub wakeups: BTreeMap<String, Timestamp>,
    /// The pass used up its budget of new tasks: services after that point may want more, so
    /// what it looked at must be looked at again.
    pub unfinished: bool,
    /// Runs of `actions` that must reach the store in one raft entry (a stop-first slot's
    /// "shut the old task down" and "create its replacement"): split, the slot could lose its
    /// task between the two and be refilled without the update's gate.
    pub atomic: Vec<std::ops::Range<usize>>,
}

impl Plan {
    /// The actions as steps, in order: each atomic run is one step, every other action a step
    /// of its own. A step is written in one raft entry; entries are cut only between steps.
    pub fn into_steps(self) -> Vec<Vec<Action>> {
        let mut steps = Vec::with_capacity(self.actions.len());
        let mut atomic = self.atomic.into_iter().peekable();
        let mut actions = self.actions.into_iter().enumerate().peekable();
        while let Some((at, action)) = actions.next() {
            match atomic.next_if(|run| run.start == at) {
                Some(run) => {
                    let mut step = vec![action];
                    while let Some((_, next)) = actions.next_if(|(i, _)| *i < run.end) {
                        step.push(next);
                    }
                    steps.push(step);
                }
                None => steps.push(vec![action]),
            }
        }
        steps
    }

    /// Asks for `service_id` to be reconciled again at `at` at the latest.
    pub fn wake(&mut self, service_id: &str, at: Timestamp) {
        self.next_wakeup = Some(self.next_wakeup.map_or(at, |w| w.min(at)));
        let entry = self.wakeups.entry(service_id.to_string()).or_insert(at);
        *entry = (*entry).min(at);
    }
}

/// What the next pass must look at, gathered from the store's changes (kube-rs's trigger queue:
/// each object once however often it changed). A service is dirty when it, one of its tasks or a
/// node its tasks sit on changed; every global service is dirty when any node changed (a node
/// may become eligible). Nodes are dirty for the constraint enforcer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dirty {
    /// Everything: a new leader's first pass, a cluster change, a lost event, the periodic resync.
    pub all: bool,
    pub services: BTreeSet<String>,
    pub nodes: BTreeSet<String>,
    /// Whether the scheduler may now place something it could not before: a task became
    /// pending, a node changed, or a task left its node (freeing its resources and ports).
    pub schedule: bool,
}

impl Dirty {
    /// A pass over everything.
    pub fn everything() -> Dirty {
        Dirty { all: true, schedule: true, ..Dirty::default() }
    }

    pub fn is_empty(&self) -> bool {
        !self.all && !self.schedule && self.services.is_empty() && self.nodes.is_empty()
    }

    /// Hands over what was gathered and starts again empty.
    pub fn take(&mut self) -> Dirty {
        std::mem::take(self)
    }

    /// Adds what `other` marks.
    pub fn merge(&mut self, other: Dirty) {
        self.all |= other.all;
        self.schedule |= other.schedule;
        self.services.extend(other.services);
        self.nodes.extend(other.nodes);
    }

    /// Marks what `change` may affect. Only a node change reads the store (after the change, or
    /// later) through `read`: which services have tasks on the node, which are global.
    pub fn observe<G: std::ops::Deref<Target = State>>(
        &mut self,
        change: &shoal_store::Change,
        read: impl FnOnce() -> G,
    ) {
        use shoal_store::Object;
        match &change.object {
            Object::Cluster(_) => {
                // The history limit or the replica ceiling may have changed: every service.
                self.all = true;
                self.schedule = true;
            }
            Object::Service(service) => {
                self.services.insert(service.id.clone());
            }
            Object::Task(task) => {
                self.services.insert(task.service_id.clone());
                if !task.node_id.is_empty() {
                    self.nodes.insert(task.node_id.clone());
                }
                let left_node = !task.node_id.is_empty()
                    && (task.status.state > TaskState::Running || task.desired_state > TaskState::Running);
                if shoal_store::is_pending(task) || left_node || change.kind == shoal_store::ChangeKind::Remove {
                    self.schedule = true;
                }
            }
            // Routes carry traffic; orchestrators do not look at them.
            Object::Route(_) => {}
            Object::Node(node) => {
                self.nodes.insert(node.id.clone());
                self.schedule = true;
                let state = read();
                for task in state.tasks_on_node(&node.id) {
                    if !self.services.contains(&task.service_id) {
                        self.services.insert(task.service_id.clone());
                    }
                }
                for service in state.services() {
                    if matches!(service.spec.mode, ServiceMode::Global | ServiceMode::GlobalJob) {
                        self.services.insert(service.id.clone());
                    }
                }
            }
        }
    }
}

/// What every service's reconcile in one pass shares: the cluster's limits and the budget of
/// new tasks.
struct PassLimits {
    history_limit: u64,
    max_replicas: u64,
    budget: usize,
}

impl PassLimits {
    fn new(state: &State) -> PassLimits {
        PassLimits {
            history_limit: state.cluster().map(|c| c.spec.task_history_limit).unwrap_or(5),
            // A spec over the cluster's limit can only come from a log written before the limit
            // existed; it runs at the limit instead of exhausting memory.
            max_replicas: state
                .cluster()
                .map(|c| c.spec.max_replicas)
                .unwrap_or(shoal_types::limits::DEFAULT_MAX_REPLICAS),
            budget: shoal_types::limits::MAX_NEW_TASKS_PER_PASS,
        }
    }
}

/// Inputs besides the store.
pub struct Ctx<'a> {
    pub now: Timestamp,
    pub new_id: &'a mut dyn FnMut() -> String,
}

/// Whether the node a task sits on can still host it. A task with no node yet is fine.
fn node_ok(state: &State, node_id: &str) -> bool {
    if node_id.is_empty() {
        return true;
    }
    match state.node(node_id) {
        Some(node) => node.status.state != NodeState::Down && node.spec.availability != Availability::Drain,
        None => false,
    }
}

fn node_down_or_gone(state: &State, node_id: &str) -> bool {
    !node_id.is_empty() && state.node(node_id).is_none_or(|n| n.status.state == NodeState::Down)
}

fn node_drained(state: &State, node_id: &str) -> bool {
    state.node(node_id).is_some_and(|n| n.spec.availability == Availability::Drain)
}

/// Swarm's `shouldRestart`: the condition, then max_attempts within the window, counting the
/// restarts (replacement tasks) of this slot made for the same spec version.
pub fn should_restart(service: &ServiceSpec, failed: &Task, slot_tasks: &[&Task], now: Timestamp) -> bool {
    let policy = &service.task.restart_policy;
    let condition_allows = match policy.condition {
        RestartCondition::None => false,
        RestartCondition::OnFailure => failed.status.state != TaskState::Complete,
        RestartCondition::Any => true,
    };
    if !condition_allows {
        return false;
    }
    if policy.max_attempts == 0 {
        return true;
    }
    let reference = if failed.status.timestamp > 0 { failed.status.timestamp } else { now };
    let window = policy.window.as_std().as_millis() as u64;
    let restarts = slot_tasks
        .iter()
        .filter(|t| t.origin == TaskOrigin::Restart && t.spec_version == failed.spec_version)
        .filter(|t| window == 0 || t.created_at + window > reference)
        .count() as u64;
    restarts < policy.max_attempts
}

/// The task of a slot that stopped for good: its newest task ended, was shut down and is not to
/// be restarted. Swarm counts such a slot toward the replicas and hands it to the updater (its
/// `UpdatableTasksInSlot`), so a later update replaces it.
pub fn stopped_for_good<'a>(service: &ServiceSpec, slot_tasks: &[&'a Task], now: Timestamp) -> Option<&'a Task> {
    // A task prepared ahead of its turn is not (yet) the slot's.
    let newest =
        slot_tasks.iter().copied().filter(|t| !t.prepared_ahead()).max_by_key(|t| (t.created_at, t.id.as_str()))?;
    (newest.desired_state == TaskState::Shutdown
        && newest.status.state.is_terminal()
        && !should_restart(service, newest, slot_tasks, now))
    .then_some(newest)
}

/// A new task for `service` in `slot` (replicated) or on `node_id` (global).
fn new_task(
    ctx: &mut Ctx<'_>,
    service: &Service,
    slot: u64,
    node_id: &str,
    origin: TaskOrigin,
    gate: Option<StartGate>,
) -> Task {
    let desired = if gate.is_some() { TaskState::Ready } else { TaskState::Running };
    Task {
        id: (ctx.new_id)(),
        version: 0,
        created_at: ctx.now,
        updated_at: ctx.now,
        service_id: service.id.clone(),
        service_name: service.spec.name.clone(),
        slot,
        node_id: node_id.to_string(),
        spec_version: service.spec_version,
        spec: std::sync::Arc::new(service.spec.task.clone()),
        endpoint: service.spec.endpoint.clone(),
        desired_state: desired,
        status: TaskStatus {
            state: TaskState::New,
            timestamp: ctx.now,
            message: "created".into(),
            ..Default::default()
        },
        origin,
        start_gate: gate,
        running_at: None,
        restart_failures: 0,
        remove_container: false,
        kept: false,
        adopts: None,
    }
}

/// A task cancelled before the scheduler placed it: no container exists or will.
fn never_ran(task: &Task) -> bool {
    task.status.state < TaskState::Assigned && task.desired_state > TaskState::Running
}

/// Whether a task that once ran (or may be running) no longer holds anything up: it stopped
/// (observed past RUNNING), never ran, or its node is down or gone.
fn stopped_or_lost(state: &State, task: &Task) -> bool {
    task.status.state.is_terminal() || never_ran(task) || node_down_or_gone(state, &task.node_id)
}

/// Whether every task of a service that runs another spec than the one asked about has stopped
/// (a Recreate gate): worked out once per pass and spec version, so a Recreate of many slots
/// costs one walk of the service's tasks, not one per slot.
pub struct OlderTasks<'a> {
    state: &'a State,
    service_id: &'a str,
    known: BTreeMap<u64, bool>,
}

impl<'a> OlderTasks<'a> {
    pub fn new(state: &'a State, service_id: &'a str) -> OlderTasks<'a> {
        OlderTasks { state, service_id, known: BTreeMap::new() }
    }

    pub fn stopped(&mut self, spec_version: u64) -> bool {
        let (state, service_id) = (self.state, self.service_id);
        *self.known.entry(spec_version).or_insert_with(|| {
            state.tasks_of_service(service_id).all(|t| t.spec_version == spec_version || stopped_or_lost(state, t))
        })
    }
}

/// Whether `task`, gated by `gate`, may now be raised from READY to RUNNING.
pub fn gate_open(state: &State, task: &Task, gate: &StartGate, now: Timestamp, older: &mut OlderTasks<'_>) -> bool {
    // Only the updater opens a prepared task's gate, by replacing it at the slot's turn.
    if gate.prepared_ahead || now < gate.not_before {
        return false;
    }
    if gate.after_older_tasks && !older.stopped(task.spec_version) {
        return false;
    }
    match &gate.after_task {
        None => true,
        Some(old) => match state.task(old) {
            None => true,
            Some(old) => stopped_or_lost(state, old) || now >= gate.deadline,
        },
    }
}

/// Decides everything the orchestrators, the restart supervisor and the reaper want changed,
/// looking at every service and node (what a resync does).
pub fn reconcile(state: &State, ctx: &mut Ctx<'_>) -> Plan {
    reconcile_dirty(|| state, ctx, &Dirty::everything())
}

/// Decides what the orchestrators, the restart supervisor, the constraint enforcer and the reaper
/// want changed for what `dirty` names only. The store is read through `read`, once per service
/// and per node, so a caller holding the store behind a lock holds it for one service's work at
/// a time (the raft thread applies between two), never for a whole pass; every action is
/// stale-tolerant, so a later service's view being newer is harmless.
pub fn reconcile_dirty<G: std::ops::Deref<Target = State>>(
    read: impl Fn() -> G,
    ctx: &mut Ctx<'_>,
    dirty: &Dirty,
) -> Plan {
    let mut plan = Plan::default();
    let (mut limits, services, nodes) = {
        let state = read();
        let (services, nodes): (Vec<String>, Vec<String>) = if dirty.all {
            let mut services: BTreeSet<String> = state.services().map(|s| s.id.clone()).collect();
            // Removed services whose tasks are still to be removed and reaped.
            services.extend(state.services_with_tasks().map(str::to_string));
            (services.into_iter().collect(), state.nodes().map(|n| n.id.clone()).collect())
        } else {
            (dirty.services.iter().cloned().collect(), dirty.nodes.iter().cloned().collect())
        };
        (PassLimits::new(&state), services, nodes)
    };
    for service_id in &services {
        let state = read();
        reconcile_service(&state, service_id, ctx, &mut limits, &mut plan);
    }
    plan.unfinished = limits.budget == 0;
    // Replicated tasks whose node stopped meeting their constraints or reservations: rejected
    // here, replaced elsewhere by the restart supervisor in the next pass.
    for node_id in &nodes {
        let state = read();
        plan.actions.extend(constraint_enforcer::enforce_node(&state, node_id, ctx.now));
    }
    plan
}

/// One service's part of a pass: its orchestrator (or its rollout), the tasks cancelled before
/// placement, and its reaper. A service that is gone has its remaining tasks removed.
fn reconcile_service(state: &State, service_id: &str, ctx: &mut Ctx<'_>, limits: &mut PassLimits, plan: &mut Plan) {
    if let Some(service) = state.service(service_id) {
        // A member of a group rollout that waits for the members it depends on: nothing of its
        // new spec starts (a service the deploy created has no task yet), and its old tasks are
        // left as they are (one that fails is replaced once the member's turn comes, with the
        // new spec; the group's deadline bounds the wait).
        let waiting = service.group.as_ref().is_some_and(|g| g.waiting);
        if waiting {
            group::member_progress(state, service, ctx, plan);
        }
        let before = plan.actions.len();
        let budget = &mut limits.budget;
        match service.spec.mode {
            _ if waiting => {}
            ServiceMode::Replicated { replicas } => {
                let replicas = replicas.min(limits.max_replicas);
                reconcile_replicated(state, service, replicas, ctx, plan, budget)
            }
            ServiceMode::Global => reconcile_global(state, service, ctx, plan, budget),
            ServiceMode::ReplicatedJob { total_completions, max_concurrent } => {
                let total = total_completions.min(limits.max_replicas);
                jobs::reconcile_replicated_job(state, service, total, max_concurrent, ctx, plan, budget)
            }
            ServiceMode::GlobalJob => jobs::reconcile_global_job(state, service, ctx, plan, budget),
        }
        // One decision maker per service per pass: the rollout moves once the orchestrator has
        // nothing left to fix (its changes come back as events and trigger the next pass).
        if plan.actions.len() == before && !waiting {
            update::update_service(state, service, ctx, plan);
            group::member_progress(state, service, ctx, plan);
        }
    }
    let service_exists = state.service(service_id).is_some();
    for task in state.tasks_of_service(service_id) {
        // Swarm's scheduler marks tasks cancelled before placement SHUTDOWN, so nothing waits
        // for them and they read as finished.
        if never_ran(task) && task.status.state != TaskState::Shutdown {
            let status = TaskStatus {
                state: TaskState::Shutdown,
                timestamp: ctx.now,
                message: "shutdown before it was scheduled".into(),
                ..Default::default()
            };
            plan.actions.push(Action::SetTaskStatus { id: task.id.clone(), status });
        }
        // Tasks whose service is gone are removed (Swarm: desired REMOVE, then the reaper).
        if !service_exists && task.desired_state < TaskState::Remove {
            plan.actions.push(Action::SetDesiredState { id: task.id.clone(), desired: TaskState::Remove });
        }
    }
    let doomed = reaper::reap_service(state, service_id, limits.history_limit);
    // In pieces, so removing a service of 100k tasks is not one action over the entry limit.
    for ids in doomed.chunks(reaper::MAX_IDS_PER_DELETE) {
        plan.actions.push(Action::DeleteTasks { ids: ids.to_vec() });
    }
}

/// Opens start gates and restarts failed tasks or tasks on lost nodes; returns per-slot whether
/// the slot still counts toward the replicas.
fn supervise(
    state: &State,
    service: &Service,
    slot_tasks: &[&Task],
    ctx: &mut Ctx<'_>,
    plan: &mut Plan,
    global_node: Option<&str>,
    older: &mut OlderTasks<'_>,
) -> bool {
    let mut counts = false;
    // During a rollback a slot whose tasks all stopped is dead and gets a fresh task with the
    // restored spec, so a rollback always ends with every replica running (Swarm §3).
    let rolling_back =
        service.update_status.as_ref().is_some_and(|s| s.state == shoal_types::UpdateState::RollbackStarted);
    for task in slot_tasks {
        if task.desired_state > TaskState::Running {
            continue;
        }
        let failed = task.status.state.is_terminal();
        let lost = !node_ok(state, &task.node_id);
        if task.prepared_ahead() {
            // Prepared ahead of its slot's turn: not one of the replicas yet, and never
            // restarted; one that ended or lost its node is retired, and its slot gets a new
            // task the usual way at its turn.
            if failed || lost {
                plan.actions.push(Action::RetireTask { id: task.id.clone(), remove_container: true });
            }
            continue;
        }
        if task.kept {
            // Kept by a rollout (`--update-old-tasks keep`): outside the replicas, so never
            // counted and never restarted; one that ends or loses its node is just shut down.
            if failed || lost {
                plan.actions.push(Action::SetDesiredState { id: task.id.clone(), desired: TaskState::Shutdown });
            }
            continue;
        }
        if failed || lost {
            plan.actions.push(Action::SetDesiredState { id: task.id.clone(), desired: TaskState::Shutdown });
            // A global task on a drained, down or paused node is not replaced (Swarm).
            let global_blocked = global_node.is_some_and(|n| {
                lost || state.node(n).is_some_and(|node| node.spec.availability != Availability::Active)
            });
            if global_blocked || !should_restart(&service.spec, task, slot_tasks, ctx.now) {
                // A slot whose newest task should not be restarted keeps counting (Swarm's
                // "updatable" slot), so no other task is made to compensate.
                counts |= failed && !lost && !rolling_back;
                continue;
            }
            // The restart delay guards against crash loops. A drained node (Swarm) or a lost one
            // (shoal: the node failed, not the task) starts the replacement at once.
            // Every end of a task before it ran for a while counts toward the slot's backoff,
            // whether it failed in create (a missing image) or exited at once.
            let node_lost = node_drained(state, &task.node_id) || node_down_or_gone(state, &task.node_id);
            let ran_long = task.running_at.is_some_and(|r| task.status.timestamp.saturating_sub(r) >= BACKOFF_RESET_MS);
            let failures = match (failed && !node_lost, ran_long) {
                (false, _) => 0,
                (true, true) => 1,
                (true, false) => task.restart_failures.saturating_add(1),
            };
            let delay = if node_lost {
                0
            } else {
                let policy_delay = service.spec.task.restart_policy.delay.as_std().as_millis() as u64;
                restart_backoff(policy_delay, failures)
            };
            let wait_stop = !(failed || node_down_or_gone(state, &task.node_id));
            let gate = (delay > 0 || wait_stop).then(|| StartGate {
                not_before: ctx.now + delay,
                after_task: wait_stop.then(|| task.id.clone()),
                deadline: ctx.now + delay + OLD_TASK_TIMEOUT_MS,
                after_older_tasks: false,
                prepared_ahead: false,
            });
            let node = global_node.unwrap_or("");
            let mut replacement = new_task(ctx, service, task.slot, node, TaskOrigin::Restart, gate);
            replacement.restart_failures = failures;
            if !wait_stop {
                // Nothing to wait for but time: the scheduler holds the task until `not_before`
                // (no node sees it before), so it can be made RUNNING now, which saves the
                // write that would open its gate later.
                replacement.desired_state = TaskState::Running;
            }
            if delay > 0 {
                // What `service ps` shows while the task waits: why it is being restarted.
                let reason = if task.status.err.is_empty() { &task.status.message } else { &task.status.err };
                replacement.status.message = "restart delayed".into();
                replacement.status.err = reason.clone();
            }
            note_wakeup(plan, &service.id, replacement.start_gate.as_ref(), ctx.now);
            plan.actions.push(Action::PutTask { task: replacement });
            counts = true;
            continue;
        }
        counts = true;
        if task.desired_state == TaskState::Ready
            && let Some(gate) = &task.start_gate
        {
            if gate_open(state, task, gate, ctx.now, older) {
                plan.actions.push(Action::SetDesiredState { id: task.id.clone(), desired: TaskState::Running });
            } else {
                note_wakeup(plan, &service.id, Some(gate), ctx.now);
            }
        } else if task.restart_held_until(ctx.now).is_some() {
            // Held from the scheduler until then: the loop must look again at that time.
            note_wakeup(plan, &service.id, task.start_gate.as_ref(), ctx.now);
        }
    }
    if !counts && !rolling_back {
        // The newest task ended and was not to be restarted in an earlier pass.
        counts = stopped_for_good(&service.spec, slot_tasks, ctx.now).is_some();
    }
    counts
}

/// A closed gate opens at `not_before`, or, when it waits for an old task, at `deadline` at the
/// latest (the old task stopping is a store change, which triggers a pass by itself).
fn note_wakeup(plan: &mut Plan, service_id: &str, gate: Option<&StartGate>, now: Timestamp) {
    if let Some(gate) = gate {
        let at = if now < gate.not_before { gate.not_before } else { gate.deadline };
        plan.wake(service_id, at);
    }
}

fn reconcile_replicated(
    state: &State,
    service: &Service,
    replicas: u64,
    ctx: &mut Ctx<'_>,
    plan: &mut Plan,
    budget: &mut usize,
) {
    let mut slots: BTreeMap<u64, Vec<&Task>> = BTreeMap::new();
    for task in state.tasks_of_service(&service.id) {
        slots.entry(task.slot).or_default().push(task);
    }
    let mut counted: Vec<u64> = Vec::new();
    let mut older = OlderTasks::new(state, &service.id);
    for (slot, tasks) in &slots {
        if supervise(state, service, tasks, ctx, plan, None, &mut older) {
            counted.push(*slot);
        }
    }
    let counted_len = counted.len() as u64;
    if counted_len < replicas {
        let taken: BTreeSet<u64> = counted.iter().copied().collect();
        let mut slot = 0;
        let missing = (replicas - counted_len).min(*budget as u64);
        *budget -= missing as usize;
        for _ in 0..missing {
            slot += 1;
            while taken.contains(&slot) {
                slot += 1;
            }
            let task = new_task(ctx, service, slot, "", TaskOrigin::Orchestrator, None);
            plan.actions.push(Action::PutTask { task });
        }
    } else if counted_len > replicas {
        let keep = scale_down_order(state, &slots, &counted);
        for slot in keep.into_iter().skip(replicas as usize) {
            for task in &slots[&slot] {
                if task.desired_state < TaskState::Remove {
                    plan.actions.push(Action::SetDesiredState { id: task.id.clone(), desired: TaskState::Remove });
                }
            }
        }
    }
}

/// Swarm §5.3: slots with a running task first (then by slot number); then spread: a slot's rank
/// is its ordinal among this service's slots on the same node, so nodes with the most copies lose
/// theirs first. Returns slots best-to-keep first.
pub fn scale_down_order(state: &State, slots: &BTreeMap<u64, Vec<&Task>>, counted: &[u64]) -> Vec<u64> {
    let runnable = |slot: u64| -> Vec<&Task> {
        slots[&slot].iter().copied().filter(|t| t.desired_state <= TaskState::Running && !t.prepared_ahead()).collect()
    };
    let mut order: Vec<u64> = counted.to_vec();
    order.sort_by_key(|slot| {
        let running = runnable(*slot).iter().any(|t| t.status.state == TaskState::Running);
        (!running, *slot)
    });
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    let mut ranked: Vec<(usize, usize, u64)> = Vec::new();
    for (position, slot) in order.iter().enumerate() {
        let tasks = runnable(*slot);
        let rank = match tasks.as_slice() {
            [only] if !only.node_id.is_empty() && state.node(&only.node_id).is_some() => {
                let n = per_node.entry(only.node_id.clone()).or_default();
                *n += 1;
                *n
            }
            _ => usize::MAX,
        };
        ranked.push((rank, position, *slot));
    }
    ranked.sort();
    ranked.into_iter().map(|(_, _, slot)| slot).collect()
}

fn global_eligible(node: &Node, service: &ServiceSpec) -> bool {
    node.runs_tasks()
        && node.spec.availability != Availability::Drain
        && node.status.state != NodeState::Down
        && service.task.placement.constraints.iter().all(|c| c.matches(|k| node.attribute(k)))
}

fn reconcile_global(state: &State, service: &Service, ctx: &mut Ctx<'_>, plan: &mut Plan, budget: &mut usize) {
    let mut by_node: BTreeMap<&str, Vec<&Task>> = BTreeMap::new();
    for task in state.tasks_of_service(&service.id) {
        by_node.entry(task.node_id.as_str()).or_default().push(task);
    }
    let mut older = OlderTasks::new(state, &service.id);
    for (node_id, tasks) in &by_node {
        let eligible = state.node(node_id).is_some_and(|n| global_eligible(n, &service.spec));
        if !eligible {
            // Drained, down, deleted or no longer matching: shut down, never replaced elsewhere.
            for task in tasks {
                if task.desired_state <= TaskState::Running {
                    plan.actions.push(Action::SetDesiredState { id: task.id.clone(), desired: TaskState::Shutdown });
                }
            }
            continue;
        }
        supervise(state, service, tasks, ctx, plan, Some(node_id), &mut older);
    }
    for node in state.nodes() {
        if !global_eligible(node, &service.spec) || node.spec.availability == Availability::Pause {
            continue;
        }
        let has_task = by_node.get(node.id.as_str()).is_some_and(|tasks| {
            tasks.iter().any(|t| t.desired_state <= TaskState::Running && !t.prepared_ahead())
                || tasks
                    .iter()
                    .filter(|t| !t.prepared_ahead())
                    .max_by_key(|t| (t.created_at, t.id.as_str()))
                    .is_some_and(|newest| {
                        newest.status.state.is_terminal()
                            && newest.desired_state == TaskState::Shutdown
                            && !should_restart(&service.spec, newest, tasks, ctx.now)
                    })
        });
        if !has_task && *budget > 0 {
            *budget -= 1;
            let task = new_task(ctx, service, 0, &node.id, TaskOrigin::Orchestrator, None);
            plan.actions.push(Action::PutTask { task });
        }
    }
}
