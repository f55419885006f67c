//! The leader's control loop: after every applied change (and at the orchestrator's wake-up
//! times) run the orchestrators, then the scheduler, and propose what they decided. One loop,
//! sequential, so the scheduler always sees the orchestrator's latest tasks and no decision is
//! made twice from the same view.

use std::sync::Arc;
use std::time::Duration;

use shoal_raft::RaftRole;
use shoal_scheduler::FailureLog;
use shoal_store::{Action, Change, Object, State};
use shoal_types::{NodeState, PublishMode, TaskState};

use crate::{Manager, now_millis};

/// Runs forever; acts only while this manager is the ready leader.
pub async fn run(manager: Arc<Manager>) {
    let mut raft = manager.watch_raft();
    loop {
        let term = {
            let st = raft.borrow_and_update().clone();
            (st.role == RaftRole::Leader && st.leader_ready).then_some(st.term)
        };
        match term {
            Some(term) => lead(&manager, term).await,
            None => {
                if raft.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn lead(manager: &Arc<Manager>, term: u64) {
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
    loop {
        {
            let st = raft.borrow_and_update();
            if st.role != RaftRole::Leader || st.term != term {
                tracing::info!(term, "leadership lost: orchestrators and scheduler stopped");
                return;
            }
        }
        let (actions, next) = {
            let state = manager.state();
            let mut new_id = shoal_types::ids::new_id;
            let plan = shoal_orchestrator::reconcile(
                &state,
                &mut shoal_orchestrator::Ctx { now: now_millis(), new_id: &mut new_id },
            );
            let mut actions = plan.actions;
            if actions.is_empty() {
                let now = now_millis();
                actions = schedule(&state, now, failures.failures(now));
            }
            (actions, plan.next_wakeup)
        };
        let wakeup = next;
        if !actions.is_empty() {
            // The loop's actions are independent (each is stale-tolerant), so a large pass — a
            // service of thousands of replicas — goes into the log as several entries, each
            // packed by encoded size to stay under the entry limit.
            match manager.propose_in_entries(actions).await {
                // Everything was over the entry limit (and dropped): wait for a change rather
                // than decide the same thing again at once.
                Ok(0) => {}
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "control loop proposal failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
        }
        let sleep = wakeup
            .map(|at| Duration::from_millis(at.saturating_sub(now_millis()).max(1)))
            .unwrap_or(Duration::from_secs(5));
        tokio::select! {
            change = events.recv() => {
                use tokio::sync::broadcast::error::{RecvError, TryRecvError};
                let mut lagged = false;
                match change {
                    Err(RecvError::Closed) => return,
                    Err(RecvError::Lagged(_)) => lagged = true,
                    Ok(change) => observe_failure(&change, &mut failures),
                }
                // Drain the burst: one pass covers all of it.
                loop {
                    match events.try_recv() {
                        Ok(change) => observe_failure(&change, &mut failures),
                        Err(TryRecvError::Lagged(_)) => lagged = true,
                        Err(_) => break,
                    }
                }
                if lagged {
                    observe_stored_failures(manager, &mut failures);
                }
            }
            _ = tokio::time::sleep(sleep) => {}
            _ = raft.changed() => {}
        }
    }
}

/// Records a task that failed or was rejected on a node (a no-op for anything else).
fn observe_failure(change: &Change, failures: &mut FailureLog) {
    if let Object::Task(task) = &change.object {
        failures.observe(task, change.at);
    }
}

/// Records every failed task the store holds (counted once each, however often seen).
fn observe_stored_failures(manager: &Manager, failures: &mut FailureLog) {
    let state = manager.state();
    let now = now_millis();
    for task in state.tasks() {
        failures.observe(task, now);
    }
}

/// Builds the scheduling problem from the store and the recent failures per node and service
/// version, and turns the solution into actions.
pub fn schedule(state: &State, now: u64, failures: Vec<shoal_scheduler::Failure>) -> Vec<Action> {
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
    let mut placed = Vec::new();
    for t in state.tasks() {
        let runnable = t.desired_state <= TaskState::Running;
        if runnable && shoal_orchestrator::held_by_backoff(t, now) {
            // Not placed until its restart backoff ends: the orchestrator's wake-up opens it.
            continue;
        }
        if runnable && t.status.state < TaskState::Assigned {
            pending.push(PendingTask {
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
        } else if !t.node_id.is_empty()
            && t.desired_state <= TaskState::Complete
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
    if pending.is_empty() {
        return Vec::new();
    }
    let nodes = state
        .nodes()
        .filter(|n| n.runs_tasks())
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
    let problem = Problem { nodes, placed, pending, failures };
    let solution = shoal_scheduler::solve(&problem);
    let mut actions: Vec<Action> =
        solution.assignments.into_iter().map(|(id, node_id)| Action::AssignTask { id, node_id }).collect();
    for (id, err) in solution.unschedulable {
        // Only when the reason changed: the store would skip it anyway, but not proposing keeps
        // an idle cluster's log quiet.
        let unchanged = state.task(&id).is_some_and(|t| t.status.state == TaskState::Pending && t.status.err == err);
        if !unchanged {
            actions.push(Action::MarkUnschedulable { id, err });
        }
    }
    actions
}
