//! The leader's control loop: after every applied change (and at the orchestrator's wake-up
//! times) run the orchestrators, then the scheduler, and propose what they decided. One loop,
//! sequential, so the scheduler always sees the orchestrator's latest tasks and no decision is
//! made twice from the same view.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLockReadGuard;
use shoal_orchestrator::Dirty;
use shoal_raft::{RaftRole, RaftStatus};
use shoal_scheduler::FailureLog;
use shoal_store::{Action, Change, Object, State};
use shoal_types::{NodeState, PublishMode, TaskState};
use tokio::sync::{broadcast, watch};

use crate::{ApiError, Manager};

/// What the control loop needs of the manager it runs in: the state as applied here, its
/// changes, the raft status, proposals and the wall clock. [`Manager`] provides it over raft;
/// the unit tests over an in-memory store (see the dispatcher's `Backend`).
pub trait LoopBackend: Send + Sync + 'static {
    fn state(&self) -> RwLockReadGuard<'_, State>;
    /// Every change applied from now on, in order.
    fn subscribe(&self) -> broadcast::Receiver<Arc<Change>>;
    fn watch_raft(&self) -> watch::Receiver<RaftStatus>;
    /// Proposes steps (each one entry's worth, see `Plan::into_steps`), packed into as few
    /// entries as fit; resolves once they are applied here, with how many entries were written.
    fn propose_steps(&self, steps: Vec<Vec<Action>>) -> impl Future<Output = Result<usize, ApiError>> + Send;
    /// Unix milliseconds.
    fn now_millis(&self) -> u64;
    /// Where passes and placements are counted (none in unit tests).
    fn metrics(&self) -> Option<&crate::metrics::ManagerMetrics> {
        None
    }
}

impl LoopBackend for Manager {
    fn state(&self) -> RwLockReadGuard<'_, State> {
        Manager::state(self)
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        Manager::subscribe(self)
    }

    fn watch_raft(&self) -> watch::Receiver<RaftStatus> {
        Manager::watch_raft(self)
    }

    fn propose_steps(&self, steps: Vec<Vec<Action>>) -> impl Future<Output = Result<usize, ApiError>> + Send {
        Manager::propose_steps(self, steps)
    }

    fn now_millis(&self) -> u64 {
        crate::now_millis()
    }

    fn metrics(&self) -> Option<&crate::metrics::ManagerMetrics> {
        Some(&self.metrics)
    }
}

/// Runs forever; acts only while this manager is the ready leader.
pub async fn run<B: LoopBackend>(manager: Arc<B>) {
    let mut raft = manager.watch_raft();
    loop {
        let term = {
            let st = raft.borrow_and_update().clone();
            (st.role == RaftRole::Leader && st.leader_ready).then_some(st.term)
        };
        match term {
            Some(term) => lead(manager.as_ref(), term).await,
            None => {
                if raft.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}

/// How often the leader reconciles everything although nothing changed: the safety net behind
/// the incremental passes (kube-rs's periodic resync).
const RESYNC: Duration = Duration::from_secs(60);

async fn lead<B: LoopBackend>(manager: &B, term: u64) {
    tracing::info!(term, "leading: orchestrators and scheduler running");
    let mut events = manager.subscribe();
    let mut raft = manager.watch_raft();
    // The faulty-node rule's failures, kept in this leader's memory as Swarm's scheduler keeps
    // them: fed from every task change, so a failed task the reaper deletes still counts. They
    // start from the failed tasks the store holds (a new leader knows no more), and a lagging
    // event stream falls back to that too; a leader change loses at most the failures beyond
    // those, as in Swarm. Writing them to the raft log instead would cost an entry per failure
    // and grow the replicated state for a placement hint.
    let mut failures = FailureLog::new();
    observe_stored_failures(manager, &mut failures);
    // What changed since the last pass (a new leader looks at everything once), when each
    // service must be looked at again although nothing changes, and when the scheduler must
    // (a restarted task's backoff ends).
    let mut dirty = Dirty::everything();
    let mut timers = Timers::default();
    let mut schedule_at: Option<u64> = None;
    let mut resync_at = manager.now_millis() + RESYNC.as_millis() as u64;
    loop {
        {
            let st = raft.borrow_and_update();
            if st.role != RaftRole::Leader || st.term != term {
                tracing::info!(term, "leadership lost: orchestrators and scheduler stopped");
                return;
            }
        }
        let now = manager.now_millis();
        if now >= resync_at {
            dirty.all = true;
            dirty.schedule = true;
            resync_at = now + RESYNC.as_millis() as u64;
        }
        if timers.take_due(now, &mut dirty.services) {
            // A backoff or start delay may have ended: held tasks become placeable by time alone.
            dirty.schedule = true;
        }
        if schedule_at.is_some_and(|at| at <= now) {
            schedule_at = None;
            dirty.schedule = true;
        }
        let pass = dirty.take();
        let pass_started = tokio::time::Instant::now();
        let mut steps: Vec<Vec<Action>> = Vec::new();
        if pass.all || !pass.services.is_empty() || !pass.nodes.is_empty() {
            if let Some(metrics) = manager.metrics() {
                let looked_at = if pass.all { manager.state().services().count() } else { pass.services.len() };
                metrics.loop_dirty_services.observe(looked_at as f64);
            }
            let mut new_id = shoal_types::ids::new_id;
            // The store's read lock is taken per service, never for the whole pass.
            let mut plan = shoal_orchestrator::reconcile_dirty(
                || manager.state(),
                &mut shoal_orchestrator::Ctx { now, new_id: &mut new_id },
                &pass,
            );
            timers.replace(&pass, std::mem::take(&mut plan.wakeups));
            if plan.unfinished {
                // Services past the point where the budget ran out get their turn next pass.
                dirty.merge(Dirty { schedule: false, ..pass.clone() });
            }
            steps = plan.into_steps();
        }
        if pass.schedule {
            if steps.is_empty() {
                let now = manager.now_millis();
                let (scheduled, held_until) = schedule(manager, now, failures.failures(now));
                steps = scheduled.into_iter().map(|action| vec![action]).collect();
                schedule_at = held_until;
            } else {
                // The orchestrators go first; the scheduler places what they decided next pass.
                dirty.schedule = true;
            }
        }
        if !steps.is_empty() {
            // The loop's steps are independent (each action is stale-tolerant; a step's actions
            // go together), so a large pass — a service of thousands of replicas — goes into the
            // log as several entries, packed by encoded size to stay under the entry limit and
            // cut only between steps.
            let proposed = manager.propose_steps(steps).await;
            if let Some(metrics) = manager.metrics() {
                metrics.loop_pass_seconds.observe(pass_started.elapsed().as_secs_f64());
            }
            match proposed {
                // Everything was over the entry limit (and dropped): wait for a change rather
                // than decide the same thing again at once.
                Ok(0) => {}
                Ok(_) => {
                    // Applied here before the proposal returns: its changes are waiting.
                    if drain(manager, &mut events, &mut dirty, &mut failures) {
                        observe_stored_failures(manager, &mut failures);
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "control loop proposal failed; retrying");
                    // Whatever this pass looked at is looked at again.
                    dirty.merge(pass);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        if !dirty.is_empty() {
            continue;
        }
        let wake = [timers.next(), schedule_at, Some(resync_at)].into_iter().flatten().min().unwrap_or(resync_at);
        let sleep = Duration::from_millis(wake.saturating_sub(manager.now_millis()).max(1));
        tokio::select! {
            change = events.recv() => {
                use tokio::sync::broadcast::error::RecvError;
                let lagged = match change {
                    Err(RecvError::Closed) => return,
                    Err(RecvError::Lagged(_)) => true,
                    Ok(change) => {
                        observe(manager, &change, &mut dirty, &mut failures);
                        false
                    }
                };
                // Drain the burst: one pass covers all of it.
                if drain(manager, &mut events, &mut dirty, &mut failures) || lagged {
                    // Changes were lost: look at everything.
                    dirty.merge(Dirty::everything());
                    observe_stored_failures(manager, &mut failures);
                }
            }
            _ = tokio::time::sleep(sleep) => {}
            _ = raft.changed() => {}
        }
    }
}

/// The services' wake-up times (a timer heap: by time, and by service to replace a service's).
#[derive(Default)]
struct Timers {
    by_time: std::collections::BTreeSet<(u64, String)>,
    by_service: std::collections::HashMap<String, u64>,
}

impl Timers {
    /// Moves the services whose time came into `due`; whether there were any.
    fn take_due(&mut self, now: u64, due: &mut std::collections::BTreeSet<String>) -> bool {
        let mut any = false;
        while let Some((at, _)) = self.by_time.first()
            && *at <= now
        {
            let (_, service) = self.by_time.pop_first().expect("checked");
            self.by_service.remove(&service);
            due.insert(service);
            any = true;
        }
        any
    }

    /// After a pass over `pass`: its services' times are what the pass returned.
    fn replace(&mut self, pass: &Dirty, wakeups: std::collections::BTreeMap<String, u64>) {
        if pass.all {
            self.by_time.clear();
            self.by_service.clear();
        } else {
            for service in &pass.services {
                if let Some(at) = self.by_service.remove(service) {
                    self.by_time.remove(&(at, service.clone()));
                }
            }
        }
        for (service, at) in wakeups {
            if let Some(old) = self.by_service.insert(service.clone(), at) {
                self.by_time.remove(&(old, service.clone()));
            }
            self.by_time.insert((at, service));
        }
    }

    fn next(&self) -> Option<u64> {
        self.by_time.first().map(|(at, _)| *at)
    }
}

/// Takes every change waiting in `events` into `dirty`; whether some were lost (lagged).
fn drain<B: LoopBackend>(
    manager: &B,
    events: &mut tokio::sync::broadcast::Receiver<Arc<Change>>,
    dirty: &mut Dirty,
    failures: &mut FailureLog,
) -> bool {
    use tokio::sync::broadcast::error::TryRecvError;
    let mut lagged = false;
    loop {
        match events.try_recv() {
            Ok(change) => observe(manager, &change, dirty, failures),
            Err(TryRecvError::Lagged(_)) => lagged = true,
            Err(_) => break,
        }
    }
    if lagged {
        dirty.merge(Dirty::everything());
    }
    lagged
}

fn observe<B: LoopBackend>(manager: &B, change: &Change, dirty: &mut Dirty, failures: &mut FailureLog) {
    observe_failure(change, failures);
    if let Some(metrics) = manager.metrics() {
        observe_rollout(change, metrics);
        observe_batch(manager, change, metrics);
    }
    dirty.observe(change, || manager.state());
}

/// A rollout's new task that just ran (how long it took) or just failed.
fn observe_rollout(change: &Change, metrics: &crate::metrics::ManagerMetrics) {
    let Object::Task(task) = &change.object else { return };
    if task.origin != shoal_types::TaskOrigin::Update {
        return;
    }
    if task.status.state == TaskState::Running && task.running_at == Some(change.at) {
        metrics.rollout_slot_seconds.observe(change.at.saturating_sub(task.created_at) as f64 / 1000.0);
    }
    // The entry that recorded the failure (the orchestrator shuts it down in a later one).
    if matches!(task.status.state, TaskState::Failed | TaskState::Rejected)
        && task.desired_state <= TaskState::Running
        && task.version == change.index
    {
        metrics.rollout_task_failures.inc();
    }
}

/// A rollout batch whose last slot just ran: how long the batch took, from its start to its last
/// new task running. Counted once, on the change of the slot that ran last (ties by name).
fn observe_batch<B: LoopBackend>(manager: &B, change: &Change, metrics: &crate::metrics::ManagerMetrics) {
    let Object::Task(task) = &change.object else { return };
    if task.origin != shoal_types::TaskOrigin::Update
        || task.status.state != TaskState::Running
        || task.running_at != Some(change.at)
    {
        return;
    }
    let state = manager.state();
    let Some(record) = state.rollouts(&task.service_id).iter().rev().find(|r| r.spec_version == task.spec_version)
    else {
        return;
    };
    let Some(batch) = record.batches.iter().find(|b| b.slots.iter().any(|s| s.new_task == task.id)) else { return };
    // Every slot ran or failed, and this one ran last.
    if batch.slots.iter().any(|s| s.running_at.is_none() && s.failed_at.is_none()) {
        return;
    }
    let last = batch
        .slots
        .iter()
        .filter(|s| s.running_at.is_some())
        .max_by(|a, b| (a.running_at, &a.name).cmp(&(b.running_at, &b.name)));
    if last.is_some_and(|s| s.new_task == task.id) {
        metrics.rollout_batch_seconds.observe(change.at.saturating_sub(batch.started_at) as f64 / 1000.0);
    }
}

/// Records a task that failed or was rejected on a node (a no-op for anything else).
fn observe_failure(change: &Change, failures: &mut FailureLog) {
    if let Object::Task(task) = &change.object {
        failures.observe(task, change.at);
    }
}

/// Records every failed task the store holds (counted once each, however often seen).
fn observe_stored_failures<B: LoopBackend>(manager: &B, failures: &mut FailureLog) {
    let state = manager.state();
    let now = manager.now_millis();
    for task in state.tasks() {
        failures.observe(task, now);
    }
}

/// Places the pending tasks: the problem is built from the store under its read lock (pending
/// tasks from the store's index; nothing at all when none wait), solved after the lock is
/// dropped, and turned into actions. Also returns when a task held by its restart backoff
/// becomes placeable, to be called again then.
fn schedule<B: LoopBackend>(
    manager: &B,
    now: u64,
    failures: Vec<shoal_scheduler::Failure>,
) -> (Vec<Action>, Option<u64>) {
    let (problem, held_until) = {
        let state = manager.state();
        scheduling_problem(&state, now, failures)
    };
    let Some(problem) = problem else { return (Vec::new(), held_until) };
    let solution = shoal_scheduler::solve(&problem);
    let mut actions: Vec<Action> =
        solution.assignments.into_iter().map(|(id, node_id)| Action::AssignTask { id, node_id }).collect();
    if let Some(metrics) = manager.metrics() {
        metrics.placements.inc_by(actions.len() as u64);
    }
    if !solution.unschedulable.is_empty() {
        let state = manager.state();
        for ((id, err), kind) in solution.unschedulable.into_iter().zip(solution.unschedulable_kinds) {
            // Only when the reason changed: the store would skip it anyway, but not proposing
            // keeps an idle cluster's log quiet.
            let unchanged =
                state.task(&id).is_some_and(|t| t.status.state == TaskState::Pending && t.status.err == err);
            if !unchanged {
                actions.push(Action::MarkUnschedulable { id, err });
                if let Some(metrics) = manager.metrics() {
                    metrics.unschedulable.get_or_create(&vec![("reason".to_string(), kind.as_str().to_string())]).inc();
                }
            }
        }
    }
    (actions, held_until)
}

/// The scheduling problem from the store and the recent failures per node and service version:
/// `None` when no task waits to be placed now; and the earliest end of a restart backoff among
/// the waiting tasks.
pub fn scheduling_problem(
    state: &State,
    now: u64,
    failures: Vec<shoal_scheduler::Failure>,
) -> (Option<shoal_scheduler::Problem>, Option<u64>) {
    use shoal_scheduler::{Amounts, PendingTask, PlacedTask, Problem, SchedNode};
    let host_ports = |t: &shoal_types::Task| -> Vec<(shoal_types::PortProtocol, u16)> {
        t.endpoint
            .ports
            .iter()
            .filter(|p| p.mode == PublishMode::Host && p.published != 0)
            .map(|p| (p.protocol, p.published))
            .collect()
    };
    let amounts = |r: &shoal_types::ResourceAmounts| Amounts { nano_cpus: r.nano_cpus, memory_bytes: r.memory_bytes };
    let mut pending = Vec::new();
    // Tasks prepared ahead of their slot's turn are placed after every other task, so they never
    // take the node (reservations, ports, max per node) a slot being updated now needs.
    let mut prepared = Vec::new();
    let mut held_until: Option<u64> = None;
    for t in state.pending_tasks() {
        if let Some(until) = t.restart_held_until(now) {
            // Not placed until its restart backoff ends.
            held_until = Some(held_until.map_or(until, |h| h.min(until)));
            continue;
        }
        let queue = if t.prepared_ahead() { &mut prepared } else { &mut pending };
        queue.push(PendingTask {
            id: t.id.clone(),
            service_id: t.service_id.clone(),
            spec_version: t.spec_version,
            reservations: amounts(&t.spec.resources.reservations),
            constraints: t.spec.placement.constraints.clone(),
            preferences: t.spec.placement.preferences.clone(),
            max_replicas_per_node: t.spec.placement.max_replicas_per_node,
            host_ports: host_ports(t),
            preassigned_node: (!t.node_id.is_empty()).then(|| t.node_id.clone()),
        });
    }
    pending.append(&mut prepared);
    if pending.is_empty() {
        return (None, held_until);
    }
    let runs_tasks: Vec<&shoal_types::Node> = state.nodes().filter(|n| n.runs_tasks()).collect();
    let mut placed = Vec::new();
    for node in &runs_tasks {
        for t in state.tasks_on_node(&node.id) {
            if t.desired_state <= TaskState::Complete
                && (TaskState::Assigned..=TaskState::Running).contains(&t.status.state)
            {
                placed.push(PlacedTask {
                    node_id: t.node_id.clone(),
                    service_id: t.service_id.clone(),
                    reservations: amounts(&t.spec.resources.reservations),
                    host_ports: host_ports(t),
                });
            }
        }
    }
    let nodes = runs_tasks
        .into_iter()
        .map(|n| SchedNode {
            id: n.id.clone(),
            hostname: n.description.hostname.clone(),
            role: n.spec.role,
            ready: n.status.state == NodeState::Ready,
            availability: n.spec.availability,
            labels: n.spec.labels.clone(),
            engine_labels: n.description.engine_labels.clone(),
            platform_os: n.description.platform_os.clone(),
            platform_arch: n.description.platform_arch.clone(),
            addr: n.status.addr.clone(),
            capacity: Amounts { nano_cpus: n.description.nano_cpus, memory_bytes: n.description.memory_bytes },
        })
        .collect();
    (Some(Problem { nodes, placed, pending, failures }), held_until)
}

#[cfg(test)]
mod tests;
