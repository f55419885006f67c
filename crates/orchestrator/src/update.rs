//! The updater (Swarm §2) as a function of state. Everything it needs is in the store: the
//! service's update status (with the slot count the failure ratio divides by), and the tasks it
//! made (origin Update, this spec version) with their states and `running_at`. A new leader
//! therefore resumes an update exactly where the old one was: finished slots are clean, and the
//! slots still in transition occupy their workers.

use std::collections::{BTreeMap, BTreeSet};

use shoal_store::{Action, State};
use shoal_types::{
    Availability, FailureAction, OldTasks, RolloutStrategy, Service, ServiceMode, StartGate, StepPause, StepStatus,
    StepWait, Task, TaskOrigin, TaskState, Timestamp, UpdateConfig, UpdateOrder, UpdateState, UpdateStatus,
};

use crate::strategy::{Capped, RolloutView, SlotPhase, SlotView, Start, Strategy};
use crate::{Ctx, OLD_TASK_TIMEOUT_MS, Plan, new_task};

/// At most this many tasks are prepared ahead per pass (`--update-prepare-ahead`): a rollout of
/// many slots prepares them over several passes (each pass's changes trigger the next), so no
/// pass or raft entry grows with the service.
pub const MAX_PREPARED_PER_PASS: usize = 512;

/// A slot's tasks as the updater hands them to [`start_slot`]: the ones it replaces, and the new
/// task prepared ahead for it, if any.
struct SlotTasks<'a> {
    updatable: Vec<&'a Task>,
    prepared: Option<&'a Task>,
    /// Every task of the slot (its history), to find a stopped container a rollback restarts.
    history: &'a [&'a Task],
}

/// For a rollback's slot: the newest of its stopped tasks whose container ran exactly the spec
/// rolled back to, so the rollback restarts that container on its node instead of creating one.
/// A container is judged by the last task that ran it (several may have, one after the other): it
/// must be stopped by shoal (not failed), not to be removed, not kept; its node must be ready and
/// active. The new task is pinned to that node, so a service whose placement could keep it off the
/// node while another slot's task sits there (resource reservations, host-mode ports, a maximum
/// per node) always gets new containers instead: a pinned task that cannot be placed would hold
/// the rollback up.
pub fn restartable<'a>(state: &State, service: &Service, history: &[&'a Task]) -> Option<&'a Task> {
    let task = &service.spec.task;
    let pinning_may_block = task.resources.reservations != shoal_types::ResourceAmounts::default()
        || task.placement.max_replicas_per_node > 0
        || service.spec.endpoint.ports.iter().any(|p| p.mode == shoal_types::PublishMode::Host && p.published != 0);
    // A stopped container's secret and config files were removed with its task: it cannot
    // start again.
    if pinning_may_block || task.container.data_references().next().is_some() {
        return None;
    }
    let mut last_user: BTreeMap<&str, &Task> = BTreeMap::new();
    for t in history {
        let entry = last_user.entry(t.container_task()).or_insert(t);
        if (t.created_at, t.id.as_str()) > (entry.created_at, entry.id.as_str()) {
            *entry = t;
        }
    }
    last_user
        .into_values()
        .filter(|t| {
            t.status.state == TaskState::Shutdown
                && t.desired_state == TaskState::Shutdown
                && !t.remove_container
                && !t.kept
                && !t.prepared_ahead()
                && !t.status.container_id.is_empty()
                && state.node(&t.node_id).is_some_and(|n| n.accepts_tasks())
                && t.endpoint == service.spec.endpoint
                && *t.spec == service.spec.task
        })
        .max_by_key(|t| (t.status.timestamp, t.created_at))
}

/// Swarm §2.4: a task is out of date if its spec (or endpoint) differs from the service's; a
/// placement-only change leaves a task alone if its node still satisfies the new constraints.
pub fn is_dirty(state: &State, service: &Service, task: &Task) -> bool {
    if task.spec_version == service.spec_version {
        return false;
    }
    let wanted = &service.spec.task;
    if task.endpoint != service.spec.endpoint {
        return true;
    }
    if *task.spec == *wanted {
        return false;
    }
    let mut same_but_placement = (*task.spec).clone();
    same_but_placement.placement = wanted.placement.clone();
    if same_but_placement == *wanted && !task.node_id.is_empty() {
        let fits = state
            .node(&task.node_id)
            .is_some_and(|node| wanted.placement.constraints.iter().all(|c| c.matches(|k| node.attribute(k))));
        return !fits;
    }
    true
}

fn slot_key(service: &Service, task: &Task) -> String {
    match service.spec.mode {
        ServiceMode::Replicated { .. } | ServiceMode::ReplicatedJob { .. } => format!("{:020}", task.slot),
        ServiceMode::Global | ServiceMode::GlobalJob => task.node_id.clone(),
    }
}

/// When an update-made task finished its step: reached RUNNING, or ended before it.
fn done_at(task: &Task) -> Option<Timestamp> {
    if let Some(at) = task.running_at {
        return Some(at);
    }
    task.status.state.is_terminal().then_some(task.status.timestamp)
}

fn ms(d: shoal_types::GoDuration) -> u64 {
    d.as_std().as_millis() as u64
}

fn status(state: UpdateState, message: String, started_at: Option<Timestamp>, slots: Option<u64>) -> UpdateStatus {
    UpdateStatus { state, message, started_at, completed_at: None, slots, step: None }
}

/// One step of the service's rolling update (or rollback), appended to `plan`.
pub fn update_service(state: &State, service: &Service, ctx: &mut Ctx<'_>, plan: &mut Plan) {
    // A job is not rolled: every update starts a new run of it instead (Swarm's JobIteration),
    // which the job orchestrator does.
    if service.spec.mode.is_job() {
        // A rollback of a job is the same: a new run, with the previous spec; it is done at once.
        if let Some(current) = service.update_status.as_ref().filter(|s| s.state == UpdateState::RollbackStarted) {
            let mut done =
                status(UpdateState::RollbackCompleted, "rollback completed".into(), current.started_at, None);
            done.completed_at = Some(ctx.now);
            plan.actions.push(Action::SetUpdateStatus { id: service.id.clone(), status: Some(done) });
        }
        return;
    }
    let current = service.update_status.clone();
    let rolling_back = current.as_ref().is_some_and(|s| s.state == UpdateState::RollbackStarted);
    // Paused (by a failure or by hand): no new slot starts, but a slot in transition finishes;
    // for stop-first the slot supervisor opens its new task's gate, for start-first the loop
    // below shuts the old task down once the new one runs.
    let paused = current.as_ref().is_some_and(|s| matches!(s.state, UpdateState::Paused | UpdateState::RollbackPaused));
    let config: &UpdateConfig = if rolling_back { &service.spec.rollback_config } else { &service.spec.update_config };
    let now = ctx.now;

    let mut slots: BTreeMap<String, Vec<&Task>> = BTreeMap::new();
    for task in state.tasks_of_service(&service.id) {
        slots.entry(slot_key(service, task)).or_default().push(task);
    }
    let mine = |t: &Task| t.origin == TaskOrigin::Update && t.spec_version == service.spec_version;
    let delay = ms(config.delay);
    let monitor = ms(config.monitor);
    // Kubernetes' availability (minReadySeconds = monitor): a task counts once it has run (and
    // been healthy: RUNNING comes after the health check passes) for the monitor window.
    let available = |t: &Task| {
        t.status.state == TaskState::Running
            && t.desired_state == TaskState::Running
            && t.running_at.is_none_or(|at| now >= at + monitor)
    };
    let budgeted = config.strategy == RolloutStrategy::Rolling && config.budget().is_some();
    // What the strategy sees, gathered in the one walk of the slots below.
    let mut slot_views: Vec<SlotView<'_>> = Vec::with_capacity(slots.len());
    let (mut live, mut available_now) = (0u64, 0u64);
    let mut kept: Vec<&Task> = Vec::new();
    // Tasks prepared ahead (`--update-prepare-ahead`) for this spec, per out-of-date slot; and
    // those no slot will use (a newer spec or a rollback came, or the slot is up to date another
    // way), whose containers are removed.
    let mut prepared: BTreeMap<&String, &Task> = BTreeMap::new();
    let mut unused_prepared: Vec<&Task> = Vec::new();
    // Slots prepared once for this spec already: one whose preparation failed gets its task just
    // in time at its turn, not a new preparation (and a new failure) every pass.
    let mut prepared_once: BTreeSet<&String> = BTreeSet::new();

    // Per slot, the tasks the update replaces: its runnable tasks, or the task of a slot that
    // stopped for good (Swarm's `UpdatableTasksInSlot`), so an update brings such a slot back.
    // While rolling back, the orchestrator re-creates those slots itself.
    let mut updatable: BTreeMap<&String, Vec<&Task>> = BTreeMap::new();
    let mut dirty: Vec<&String> = Vec::new();
    let mut busy = 0usize;
    let mut transition_wakeup: Option<Timestamp> = None;
    let mut pending_reason: Option<String> = None;
    for (key, tasks) in &slots {
        for t in tasks {
            if t.kept {
                kept.extend((t.desired_state <= TaskState::Running).then_some(*t));
                continue;
            }
            if t.prepared_ahead() {
                // Not started, so neither live nor available; outside the slot until released.
                if t.spec_version == service.spec_version {
                    prepared_once.insert(key);
                }
                if t.desired_state <= TaskState::Running {
                    let usable = t.spec_version == service.spec_version && !t.status.state.is_terminal();
                    match usable.then(|| prepared.insert(key, *t)) {
                        Some(None) => {}
                        Some(Some(twin)) => unused_prepared.push(twin),
                        None => unused_prepared.push(t),
                    }
                }
                continue;
            }
            live += u64::from(!t.status.state.is_terminal() && t.desired_state != TaskState::Ready);
            available_now += u64::from(available(t));
        }
        // Tasks kept running by an earlier slot's `--update-old-tasks keep` are outside the slot.
        let runnable: Vec<&Task> = tasks
            .iter()
            .copied()
            .filter(|t| t.desired_state <= TaskState::Running && !t.kept && !t.prepared_ahead())
            .collect();
        let candidates = if runnable.is_empty() && !rolling_back && may_revive(state, service, key) {
            crate::stopped_for_good(&service.spec, tasks, now).into_iter().collect()
        } else {
            runnable.clone()
        };
        let mut in_transition = false;
        for t in tasks.iter().filter(|t| mine(t) && !t.prepared_ahead()) {
            match done_at(t) {
                None if t.desired_state <= TaskState::Running => {
                    in_transition = true;
                    if t.status.state == TaskState::Pending && !t.status.err.is_empty() {
                        pending_reason.get_or_insert_with(|| format!("{}: {}", t.name(), t.status.err));
                    }
                }
                Some(at) if now < at + delay => {
                    in_transition = true;
                    transition_wakeup = Some(transition_wakeup.map_or(at + delay, |w| w.min(at + delay)));
                }
                _ => {}
            }
        }
        let old_tasks: Vec<&Task> = runnable.iter().copied().filter(|t| is_dirty(state, service, t)).collect();
        let new_running = runnable.iter().find(|t| mine(t) && t.status.state == TaskState::Running);
        let mut retirable = false;
        if budgeted {
            // Availability comes with time (the monitor window): look again when it does.
            for t in runnable.iter().filter(|t| t.status.state == TaskState::Running && !available(t)) {
                if let Some(at) = t.running_at.map(|at| at + monitor).filter(|at| *at > now) {
                    transition_wakeup = Some(transition_wakeup.map_or(at, |w| w.min(at)));
                }
            }
            // A budgeted start-first slot keeps its old task until the new one is available and
            // the unavailability budget allows shutting the old one down (the strategy decides).
            if let (Some(new), false) = (new_running, old_tasks.is_empty()) {
                in_transition = true;
                retirable = available(new);
            }
        } else if config.order == UpdateOrder::StartFirst && new_running.is_some() {
            // start-first: once the new task runs, its slot's old tasks are shut down.
            for old in &old_tasks {
                plan.actions.push(retire_action(config.old_tasks, &old.id));
            }
        }
        // A slot whose replacement this rollout made and that ended (failed) is not replaced
        // again: its failure counted once, and a start-first old task left running stays, as in
        // Swarm, where each slot goes to a worker once.
        let failed_here = tasks.iter().any(|t| mine(t) && t.status.state.is_terminal() && !t.prepared_ahead());
        let phase = if in_transition {
            busy += 1;
            SlotPhase::InTransition
        } else if !failed_here
            && (candidates.len() > 1 || candidates.first().is_some_and(|t| is_dirty(state, service, t)))
        {
            dirty.push(key);
            SlotPhase::OutOfDate
        } else {
            SlotPhase::UpToDate
        };
        if phase != SlotPhase::OutOfDate {
            unused_prepared.extend(prepared.remove(key));
        }
        let old_available = old_tasks.iter().any(|t| available(t));
        slot_views.push(SlotView { key: key.as_str(), phase, old_available, retirable });
        updatable.insert(key, candidates);
    }
    for task in unused_prepared {
        plan.actions.push(Action::RetireTask { id: task.id.clone(), remove_container: true });
    }
    // The strategy decides from the slots' phases and the service's live and available tasks.
    let replicas = match service.spec.mode {
        ServiceMode::Replicated { replicas } => replicas,
        _ => updatable.values().filter(|tasks| !tasks.is_empty()).count() as u64,
    };
    let view = RolloutView { slots: slot_views, now, replicas, live, available: available_now };
    let strategy = crate::strategy::strategy_for(config);
    if paused {
        // A paused budgeted rollout still lets the slots in transition finish.
        retire(state, strategy.decide(&view).retire, &updatable, service, config, plan);
        note(plan, &service.id, transition_wakeup);
        return;
    }

    // Failures of tasks this rollout made: ended before running, or within `monitor` of it. A
    // task prepared ahead counts when it failed (a missing image fails every slot's preparation
    // at once), not when the updater retired it unused.
    let mut failures: Vec<&Task> = state
        .tasks_of_service(&service.id)
        .filter(|t| mine(t) && t.status.state.is_terminal())
        .filter(|t| !t.prepared_ahead() || matches!(t.status.state, TaskState::Failed | TaskState::Rejected))
        .filter(|t| t.running_at.is_none_or(|at| t.status.timestamp <= at + monitor))
        .collect();
    failures.sort_by_key(|t| (t.status.timestamp, t.id.clone()));

    let started_at = current.as_ref().and_then(|s| s.started_at).or(Some(now));
    let mut current = current;
    // Tasks an earlier rollout kept running (`--update-old-tasks keep`) are stopped and removed
    // by the next rollout, an update or a rollback.
    if (current.is_none() && !dirty.is_empty()) || rolling_back {
        for task in &kept {
            plan.actions.push(Action::RetireTask { id: task.id.clone(), remove_container: true });
        }
    }
    if current.is_none() {
        if dirty.is_empty() {
            return;
        }
        let fresh = status(UpdateState::Updating, "update in progress".into(), Some(now), Some(dirty.len() as u64));
        plan.actions.push(Action::SetUpdateStatus { id: service.id.clone(), status: Some(fresh.clone()) });
        current = Some(fresh);
    }
    let current = current.expect("set above");
    if !matches!(current.state, UpdateState::Updating | UpdateState::RollbackStarted) {
        return;
    }
    let total = current.slots.unwrap_or(dirty.len() as u64 + busy as u64).max(1);

    // A member of an atomic group (updating, not rolling back) fails the group whatever its own
    // failure action: `--atomic` means all or nothing.
    let atomic_group = service.group.as_ref().filter(|_| !rolling_back).filter(|mark| {
        state.group(mark).is_some_and(|g| g.atomic && g.state == shoal_types::stack::GroupState::Updating)
    });
    // Swarm names the task whose failure made the ratio cross `max_failure_ratio`, not the first.
    if (config.failure_action != FailureAction::Continue || atomic_group.is_some())
        && let Some(crossing) = failures
            .iter()
            .enumerate()
            .find(|(seen, _)| (seen + 1) as f32 / total as f32 > config.max_failure_ratio)
            .map(|(_, t)| t)
    {
        let task = &crossing.id;
        // A member of an atomic group: the whole group rolls back, in one entry.
        if let Some(mark) = atomic_group {
            let error = if crossing.status.err.is_empty() { &crossing.status.message } else { &crossing.status.err };
            plan.actions.push(Action::FailGroup {
                stack: mark.stack.clone(),
                revision: mark.revision,
                service_id: service.id.clone(),
                task_id: task.clone(),
                message: format!("task {task} {}: {error}", crossing.status.state.as_str()),
            });
            return;
        }
        if rolling_back {
            let paused = status(
                UpdateState::RollbackPaused,
                format!("rollback paused due to failure or early termination of task {task}"),
                started_at,
                current.slots,
            );
            plan.actions.push(Action::SetUpdateStatus { id: service.id.clone(), status: Some(paused) });
        } else if config.failure_action == FailureAction::Rollback {
            if service.previous_spec.is_some() {
                let rollback = status(
                    UpdateState::RollbackStarted,
                    format!("update rolled back due to failure or early termination of task {task}"),
                    started_at,
                    None,
                );
                plan.actions.push(Action::AutoRollback {
                    id: service.id.clone(),
                    expected_version: service.version,
                    status: rollback,
                });
            }
            // Without a previous spec Swarm's rollback writes nothing and the update stops
            // where it is (still "updating").
        } else {
            let paused = status(
                UpdateState::Paused,
                format!("update paused due to failure or early termination of task {task}"),
                started_at,
                current.slots,
            );
            plan.actions.push(Action::SetUpdateStatus { id: service.id.clone(), status: Some(paused) });
        }
        return;
    }

    if dirty.is_empty() {
        if busy > 0 {
            retire(state, strategy.decide(&view).retire, &updatable, service, config, plan);
            note(plan, &service.id, transition_wakeup);
            return;
        }
        // Converged means every task meant to run runs (a slot the orchestrator re-created during
        // a rollback included); its change comes back as an event. Restarts of crashed tasks are
        // not waited for (Swarm's workers are done once their new task reached RUNNING or ended):
        // a crash-looping new version would otherwise keep the update open for ever.
        let counted = |t: &Task| t.origin != TaskOrigin::Restart;
        if state
            .tasks_of_service(&service.id)
            .any(|t| counted(t) && t.desired_state == TaskState::Running && t.status.state < TaskState::Running)
        {
            return;
        }
        // The final monitor window (Swarm: monitor, or delay + 1s when delay ≥ monitor) after
        // the last slot's worker finished its delay, counting tasks this rollout made or re-made.
        let since = current.started_at.unwrap_or(0);
        let last = state
            .tasks_of_service(&service.id)
            .filter(|t| counted(t))
            .filter(|t| mine(t) || (t.spec_version == service.spec_version && t.created_at >= since))
            .filter(|t| !t.prepared_ahead())
            .filter_map(done_at)
            .max();
        let window = if delay >= monitor && delay > 0 { delay + 1_000 } else { monitor };
        let finish = last.map_or(now, |at| at + delay + window);
        if now >= finish {
            let (state_done, message) = if rolling_back {
                (UpdateState::RollbackCompleted, "rollback completed")
            } else {
                (UpdateState::Completed, "update completed")
            };
            let mut done = status(state_done, message.into(), started_at, current.slots);
            done.completed_at = Some(now);
            plan.actions.push(Action::SetUpdateStatus { id: service.id.clone(), status: Some(done) });
        } else {
            note(plan, &service.id, Some(finish));
        }
        return;
    }

    // Say why an update is stuck (a new task that cannot be scheduled); a canary step that
    // waits keeps saying so.
    let step_waits = current.step.as_ref().is_some_and(|s| s.waiting.is_some());
    if current.state == UpdateState::Updating && !step_waits {
        let message = match &pending_reason {
            Some(reason) => format!("update in progress; {reason}"),
            None => "update in progress".to_string(),
        };
        if message != current.message {
            let mut changed = current.clone();
            changed.message = message;
            plan.actions.push(Action::SetUpdateStatus { id: service.id.clone(), status: Some(changed) });
        }
    }

    // Canary steps (updates only; a rollback goes in one go): the current step caps how many
    // slots may move, and a reached step waits for its pause or an approval.
    let decision = match (rolling_back, config.steps.is_empty()) {
        (false, false) => {
            let Some(target) = canary_step(service, &current, &view, busy, now, plan) else {
                retire(state, strategy.decide(&view).retire, &updatable, service, config, plan);
                note(plan, &service.id, transition_wakeup);
                return;
            };
            Capped { inner: strategy, target }.decide(&view)
        }
        _ => strategy.decide(&view),
    };
    let starting: BTreeSet<&str> = decision.start.iter().map(|(key, _)| *key).collect();
    for (key, how) in decision.start {
        let key = key.to_string();
        let tasks = SlotTasks {
            updatable: updatable[&key].clone(),
            prepared: prepared.get(&key).copied(),
            history: &slots[&key],
        };
        start_slot(state, service, tasks, how, config, ctx, plan);
    }
    retire(state, decision.retire, &updatable, service, config, plan);
    if config.prepare_ahead {
        // Every other out-of-date slot gets its new task now, placed and prepared but held.
        // A rollback's slot whose stopped container is restarted in place needs nothing prepared.
        let restarts_in_place = |key: &str| rolling_back && restartable(state, service, &slots[key]).is_some();
        let waiting = dirty.iter().filter(|key| {
            let has_task = starting.contains(key.as_str()) || prepared_once.contains(*key);
            !has_task && !restarts_in_place(key.as_str())
        });
        for key in waiting.take(MAX_PREPARED_PER_PASS) {
            let Some(old) = updatable[*key].first() else { continue };
            let gate = Some(StartGate::prepared_ahead());
            let task = new_task(ctx, service, old.slot, slot_node(service, old), TaskOrigin::Update, gate);
            plan.actions.push(Action::PutTask { task });
        }
    }
    note(plan, &service.id, transition_wakeup);
}

/// Shuts down the old tasks of the slots a budgeted strategy retires.
fn retire(
    state: &State,
    keys: Vec<&str>,
    updatable: &BTreeMap<&String, Vec<&Task>>,
    service: &Service,
    config: &UpdateConfig,
    plan: &mut Plan,
) {
    for key in keys {
        for old in updatable[&key.to_string()].iter().filter(|t| is_dirty(state, service, t)) {
            plan.actions.push(retire_action(config.old_tasks, &old.id));
        }
    }
}

/// The canary step the update is at, as the number of slots it may bring to the new spec; `None`
/// when no slot may start now (the step is reached and waits, or its status is being written).
/// Every step's replica count is worked out from the replicas now (Kruise), so scaling during a
/// rollout moves the targets.
fn canary_step(
    service: &Service,
    current: &UpdateStatus,
    view: &RolloutView<'_>,
    busy: usize,
    now: Timestamp,
    plan: &mut Plan,
) -> Option<u64> {
    let steps = &service.spec.update_config.steps;
    let count = steps.len() as u32;
    let mut step = current.step.clone().unwrap_or(StepStatus { index: 0, count, waiting: None });
    step.index = step.index.min(count - 1);
    step.count = count;
    let write = |plan: &mut Plan, step: StepStatus, message: String| {
        let mut changed = current.clone();
        changed.step = Some(step);
        changed.message = message;
        plan.actions.push(Action::SetUpdateStatus { id: service.id.clone(), status: Some(changed) });
    };
    let next = |step: &StepStatus| StepStatus { index: step.index + 1, count, waiting: None };
    match step.waiting {
        Some(StepWait::Approval) => return None,
        Some(StepWait::Until(at)) if now < at => {
            plan.wake(&service.id, at);
            return None;
        }
        Some(StepWait::Until(_)) => {
            write(plan, next(&step), "update in progress".into());
            return None;
        }
        None => {}
    }
    if current.step.as_ref() != Some(&step) {
        write(plan, step, current.message.clone());
        return None;
    }
    let definition = steps[step.index as usize];
    let target = definition.target(view.replicas);
    let updated = view.count(SlotPhase::UpToDate) as u64;
    let last = step.index + 1 == count;
    if last || updated < target || busy > 0 {
        return Some(target);
    }
    // The step is reached: pause as it says.
    let reached = format!("step {}/{count}: {updated}/{} updated", step.index + 1, view.replicas);
    match definition.pause {
        StepPause::Approve => {
            let waiting = StepStatus { waiting: Some(StepWait::Approval), ..step };
            write(plan, waiting, format!("{reached}, waiting for approval"));
        }
        StepPause::For(pause) if !pause.is_zero() => {
            let until = now + ms(pause);
            let waiting = StepStatus { waiting: Some(StepWait::Until(until)), ..step };
            write(plan, waiting, format!("{reached}, paused for {pause}"));
            plan.wake(&service.id, until);
        }
        StepPause::For(_) => write(plan, next(&step), "update in progress".into()),
    }
    None
}

/// Shuts down a task the rollout replaced, asking for its container to be removed once stopped
/// when the rollout's old-task policy says so.
fn retire_action(old_tasks: OldTasks, id: &str) -> Action {
    match old_tasks {
        OldTasks::Stop => Action::SetDesiredState { id: id.to_string(), desired: TaskState::Shutdown },
        OldTasks::Remove => Action::RetireTask { id: id.to_string(), remove_container: true },
        OldTasks::Keep => Action::KeepTask { id: id.to_string() },
    }
}

fn note(plan: &mut Plan, service_id: &str, at: Option<Timestamp>) {
    if let Some(at) = at {
        plan.wake(service_id, at);
    }
}

/// Whether a slot that stopped for good may get a new task: a global service's node must still
/// be one the global orchestrator would put a task on (active, eligible).
fn may_revive(state: &State, service: &Service, key: &str) -> bool {
    match service.spec.mode {
        ServiceMode::Replicated { .. } | ServiceMode::ReplicatedJob { .. } => true,
        ServiceMode::Global | ServiceMode::GlobalJob => state.node(key).is_some_and(|node| {
            crate::global_eligible(node, &service.spec) && node.spec.availability == Availability::Active
        }),
    }
}

/// The node a slot's new task is made on: a global service's slot is its node; a replica's task is
/// placed by the scheduler.
fn slot_node<'a>(service: &Service, old: &'a Task) -> &'a str {
    match service.spec.mode {
        ServiceMode::Global | ServiceMode::GlobalJob => old.node_id.as_str(),
        ServiceMode::Replicated { .. } | ServiceMode::ReplicatedJob { .. } => "",
    }
}

/// Replaces one slot's out-of-date task (Swarm's worker step). `updatable` holds the slot's
/// runnable tasks, or the one task of a slot that stopped for good; a task prepared ahead for the
/// slot is released instead of a new one being made.
fn start_slot(
    state: &State,
    service: &Service,
    tasks: SlotTasks<'_>,
    how: Start,
    config: &UpdateConfig,
    ctx: &mut Ctx<'_>,
    plan: &mut Plan,
) {
    let (recreate, old_tasks) = (config.strategy == RolloutStrategy::Recreate, config.old_tasks);
    let updatable = tasks.updatable.as_slice();
    // A clean task already in the slot is used instead of making a new one.
    let clean = updatable
        .iter()
        .filter(|t| !is_dirty(state, service, t))
        .max_by_key(|t| (t.desired_state == TaskState::Running, t.created_at));
    if let Some(clean) = clean {
        for other in updatable.iter().filter(|t| t.id != clean.id) {
            plan.actions.push(retire_action(old_tasks, &other.id));
        }
        return;
    }
    let Some(old) = updatable.first() else { return };
    let step_start = plan.actions.len();
    let node = slot_node(service, old);
    let retire_runnable = |plan: &mut Plan| {
        for t in updatable.iter().filter(|t| t.desired_state <= TaskState::Running) {
            plan.actions.push(retire_action(old_tasks, &t.id));
        }
    };
    let gate = match how {
        // A Recreate task waits for every old task of the service, however long that takes.
        _ if recreate => {
            retire_runnable(plan);
            Some(StartGate {
                not_before: ctx.now,
                after_task: None,
                deadline: u64::MAX,
                after_older_tasks: true,
                prepared_ahead: false,
            })
        }
        // A slot that stopped for good has nothing to wait for: its new task starts at once.
        _ if updatable.iter().all(|t| t.desired_state > TaskState::Running) => None,
        // `--update-old-tasks keep`: the old task is kept running and the new one starts beside it.
        _ if old_tasks == OldTasks::Keep => {
            retire_runnable(plan);
            None
        }
        // The new task is prepared (container created) while the old one stops, then started.
        Start::StopFirst => {
            for t in updatable {
                plan.actions.push(retire_action(old_tasks, &t.id));
            }
            Some(StartGate {
                not_before: ctx.now,
                after_task: Some(old.id.clone()),
                deadline: ctx.now + OLD_TASK_TIMEOUT_MS,
                after_older_tasks: false,
                prepared_ahead: false,
            })
        }
        Start::StartFirst => None,
    };
    // A rollback restarts the slot's stopped container of the spec it returns to, in place.
    let rolling_back = service.update_status.as_ref().is_some_and(|s| s.state == UpdateState::RollbackStarted);
    let restart = rolling_back.then(|| restartable(state, service, tasks.history)).flatten();
    match (restart, tasks.prepared) {
        (Some(stopped), _) => {
            let mut task = new_task(ctx, service, old.slot, &stopped.node_id, TaskOrigin::Update, gate);
            task.adopts = Some(shoal_types::Adoption {
                container_task: stopped.container_task().to_string(),
                stopped_at: stopped.status.timestamp,
            });
            plan.actions.push(Action::PutTask { task });
        }
        (None, Some(prepared)) => {
            // Should the prepared task have ended meanwhile, the store puts this one instead, so
            // the old task's shutdown never goes without a replacement.
            let otherwise = new_task(ctx, service, old.slot, node, TaskOrigin::Update, gate.clone());
            plan.actions.push(Action::ReleaseTask { id: prepared.id.clone(), gate, otherwise });
        }
        (None, None) => {
            let task = new_task(ctx, service, old.slot, node, TaskOrigin::Update, gate);
            plan.actions.push(Action::PutTask { task });
        }
    }
    // The old task's shutdown and its replacement are one step (SwarmKit writes them in one
    // store batch).
    if plan.actions.len() - step_start > 1 {
        plan.atomic.push(step_start..plan.actions.len());
    }
}
