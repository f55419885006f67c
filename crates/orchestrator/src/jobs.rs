//! The job orchestrators (Swarm 20.10's replicated and global jobs): tasks run to completion.
//!
//! A run of a job is one spec version of its service (Swarm's JobIteration): every update of
//! the service, `service update --force` included, makes a new version and so runs the job
//! again; tasks of an earlier run that still run are stopped. Within a run a slot (replicated)
//! or a node (global) is done once one of its tasks completed: it is never restarted then. A
//! task that failed is restarted in its slot by the restart supervisor, with the restart
//! policy's delay and backoff, as for services; the condition `any` acts as `on-failure`, since
//! a completed task is never run again. A completed task's desired state becomes `Complete`, as
//! docker shows it; tasks stopped before they completed get `Shutdown`.

use std::collections::BTreeMap;

use shoal_store::{Action, State};
use shoal_types::{Availability, RestartCondition, Service, Task, TaskOrigin, TaskState, Timestamp};

use crate::{Ctx, Plan, global_eligible, new_task, node_ok, should_restart, supervise};

/// The service as the restart supervisor must see it for a job: a completed task is final.
fn job_view(service: &Service) -> Service {
    let mut view = service.clone();
    if view.spec.task.restart_policy.condition == RestartCondition::Any {
        view.spec.task.restart_policy.condition = RestartCondition::OnFailure;
    }
    view
}

fn completed(tasks: &[&Task]) -> bool {
    tasks.iter().any(|t| t.status.state == TaskState::Complete)
}

/// Ends the tasks still meant to run: one that completed is marked desired `Complete` (Swarm's
/// job tasks are desired `Complete` from the start), any other is stopped (`Shutdown`).
fn stop_all(tasks: &[&Task], plan: &mut Plan) {
    for task in tasks {
        if task.desired_state <= TaskState::Running {
            let desired =
                if task.status.state == TaskState::Complete { TaskState::Complete } else { TaskState::Shutdown };
            plan.actions.push(Action::SetDesiredState { id: task.id.clone(), desired });
        }
    }
}

/// Whether a global job's node needs no new task in this run: one of its tasks completed, one is
/// meant to run (or waits for its restart), or the newest failed and is not to be restarted. A
/// task stopped because its node went down or was drained did not fail: once the node is
/// eligible again, the job runs there again.
fn node_settled(service: &Service, tasks: &[&Task], now: Timestamp) -> bool {
    completed(tasks)
        || tasks.iter().any(|t| t.desired_state <= TaskState::Running)
        || tasks.iter().max_by_key(|t| (t.created_at, t.id.as_str())).is_some_and(|newest| {
            matches!(newest.status.state, TaskState::Failed | TaskState::Rejected)
                && !should_restart(&service.spec, newest, tasks, now)
        })
}

/// Splits the service's tasks into those of the current run (by `key`) and stops the running
/// tasks of earlier runs.
fn current_run<'a, K: Ord>(
    state: &'a State,
    service: &Service,
    plan: &mut Plan,
    key: impl Fn(&'a Task) -> K,
) -> BTreeMap<K, Vec<&'a Task>> {
    let mut groups: BTreeMap<K, Vec<&Task>> = BTreeMap::new();
    for task in state.tasks_of_service(&service.id) {
        if task.spec_version != service.spec_version {
            stop_all(&[task], plan);
            continue;
        }
        groups.entry(key(task)).or_default().push(task);
    }
    groups
}

/// Slots 1..=`total` each need one completed task; at most `max_concurrent` slots are at work
/// at once (running, starting, or waiting for a restart).
pub(crate) fn reconcile_replicated_job(
    state: &State,
    service: &Service,
    total: u64,
    max_concurrent: u64,
    ctx: &mut Ctx<'_>,
    plan: &mut Plan,
    budget: &mut usize,
) {
    let service = &job_view(service);
    let slots = current_run(state, service, plan, |t| t.slot);
    let mut active = 0u64;
    let mut older = crate::OlderTasks::new(state, &service.id);
    for (slot, tasks) in &slots {
        if *slot == 0 || *slot > total || completed(tasks) {
            // Done, or beyond the completions after a change of them: nothing more runs here.
            stop_all(tasks, plan);
            continue;
        }
        let before = plan.actions.len();
        supervise(state, service, tasks, ctx, plan, None, &mut older);
        let restarted = plan.actions[before..].iter().any(|a| matches!(a, Action::PutTask { .. }));
        let at_work = tasks.iter().any(|t| {
            t.desired_state <= TaskState::Running && t.status.state <= TaskState::Running && node_ok(state, &t.node_id)
        });
        // A slot whose failed task is not to be restarted is given up: neither at work nor
        // counted as completed, as in Swarm.
        active += u64::from(restarted || at_work);
    }
    let room = max_concurrent.saturating_sub(active).min(*budget as u64);
    let free = (1..=total).filter(|slot| !slots.contains_key(slot)).take(room as usize);
    for slot in free {
        *budget -= 1;
        let task = new_task(ctx, service, slot, "", TaskOrigin::Orchestrator, None);
        plan.actions.push(Action::PutTask { task });
    }
}

/// One completed task on every eligible node per run; a node that joins (or becomes eligible)
/// during a run gets its task too, as in Swarm, and so does a node whose task was stopped when
/// it went down or was drained (its new task is a restart of that node's run).
pub(crate) fn reconcile_global_job(
    state: &State,
    service: &Service,
    ctx: &mut Ctx<'_>,
    plan: &mut Plan,
    budget: &mut usize,
) {
    let service = &job_view(service);
    let by_node = current_run(state, service, plan, |t| t.node_id.as_str());
    let mut older = crate::OlderTasks::new(state, &service.id);
    for (node_id, tasks) in &by_node {
        let eligible = state.node(node_id).is_some_and(|n| global_eligible(n, &service.spec));
        if !eligible || completed(tasks) {
            stop_all(tasks, plan);
            continue;
        }
        supervise(state, service, tasks, ctx, plan, Some(node_id), &mut older);
    }
    for node in state.nodes() {
        if !global_eligible(node, &service.spec) || node.spec.availability == Availability::Pause || *budget == 0 {
            continue;
        }
        let origin = match by_node.get(node.id.as_str()) {
            None => TaskOrigin::Orchestrator,
            Some(tasks) if !node_settled(service, tasks, ctx.now) => TaskOrigin::Restart,
            Some(_) => continue,
        };
        *budget -= 1;
        let task = new_task(ctx, service, 0, &node.id, origin, None);
        plan.actions.push(Action::PutTask { task });
    }
}

#[cfg(test)]
mod tests {
    use shoal_types::{
        Availability, NodeState, RestartCondition, ServiceMode, ServiceSpec, Task, TaskOrigin, TaskState,
    };

    use crate::tests::World;
    use shoal_store::Action;

    fn job(total: u64, max_concurrent: u64) -> ServiceSpec {
        let mut s = ServiceSpec::new("job", "shoal/busybox:1");
        s.mode = ServiceMode::ReplicatedJob { total_completions: total, max_concurrent };
        s
    }

    /// Tasks the agents would be running now.
    fn at_work(w: &World, svc: &str) -> Vec<Task> {
        w.tasks(svc)
            .into_iter()
            .filter(|t| t.desired_state <= TaskState::Running && t.status.state <= TaskState::Running)
            .collect()
    }

    fn complete_all(w: &mut World, svc: &str) {
        for t in at_work(w, svc) {
            w.set_status(&t.id, TaskState::Complete);
        }
    }

    fn force_update(w: &mut World, svc: &str) {
        let s = w.state.service(svc).expect("service").clone();
        let mut spec = s.spec.clone();
        spec.task.force_update += 1;
        w.apply(vec![Action::UpdateService { id: svc.into(), expected_version: s.version, spec }]);
    }

    #[test]
    fn runs_to_the_completions_never_more_than_max_concurrent_at_once() {
        let mut w = World::new(&["n1", "n2"]);
        let svc = w.service(job(5, 2));
        for _ in 0..10 {
            w.settle();
            w.run_all();
            let running = at_work(&w, &svc);
            assert!(running.len() <= 2, "{} tasks at work", running.len());
            // One at a time, so a freed place is refilled before the next completes.
            if let Some(t) = running.first() {
                w.set_status(&t.id, TaskState::Complete);
            }
        }
        w.settle();
        let tasks = w.tasks(&svc);
        assert_eq!(tasks.iter().map(|t| t.slot).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        assert!(tasks.iter().all(|t| t.status.state == TaskState::Complete && t.origin == TaskOrigin::Orchestrator));
        // Completed: nothing is restarted (the default condition `any` acts as on-failure), and
        // every task shows desired Complete, as docker's do.
        assert!(w.step().actions.is_empty());
        assert!(tasks.iter().all(|t| t.desired_state == TaskState::Complete), "{tasks:#?}");
    }

    #[test]
    fn a_failed_task_is_restarted_in_its_slot_per_the_restart_policy() {
        let mut w = World::new(&["n1"]);
        let svc = w.service(job(1, 1));
        w.settle();
        w.run_all();
        let first = w.tasks(&svc)[0].id.clone();
        w.set_status(&first, TaskState::Failed);
        w.settle();
        let tasks = w.tasks(&svc);
        assert_eq!(tasks.len(), 2);
        let again = tasks.iter().find(|t| t.id != first).expect("a restart");
        assert_eq!((again.slot, again.origin), (1, TaskOrigin::Restart));
        w.now += 5_000;
        w.settle();
        w.run_all();
        complete_all(&mut w, &svc);
        w.settle();
        assert_eq!(w.tasks(&svc).len(), 2, "completed: no more tasks");

        // Condition none: a failed task is not restarted and its slot is given up.
        let mut w = World::new(&["n1"]);
        let mut spec = job(2, 1);
        spec.task.restart_policy.condition = RestartCondition::None;
        let svc = w.service(spec);
        w.settle();
        w.run_all();
        let first = w.tasks(&svc)[0].clone();
        w.set_status(&first.id, TaskState::Failed);
        w.settle();
        let tasks = w.tasks(&svc);
        assert_eq!(tasks.len(), 2, "the next slot runs instead");
        assert_eq!((tasks[1].slot, tasks[1].origin), (2, TaskOrigin::Orchestrator));
    }

    #[test]
    fn an_update_runs_the_job_again_and_stops_the_previous_run() {
        let mut w = World::new(&["n1", "n2"]);
        let svc = w.service(job(3, 3));
        w.settle();
        w.run_all();
        complete_all(&mut w, &svc);
        w.settle();
        assert_eq!(w.tasks(&svc).len(), 3);
        force_update(&mut w, &svc);
        w.settle();
        let version = w.state.service(&svc).expect("service").spec_version;
        let new: Vec<Task> = w.tasks(&svc).into_iter().filter(|t| t.spec_version == version).collect();
        assert_eq!(new.len(), 3, "a new run of three");
        assert!(new.iter().all(|t| t.origin == TaskOrigin::Orchestrator), "not rolled by the updater");
        // Updated again while that run is at work: its tasks stop and a third run starts; the
        // first run's completed tasks stay desired Complete.
        w.run_all();
        force_update(&mut w, &svc);
        w.settle();
        assert!(new.iter().all(|t| w.state.task(&t.id).is_some_and(|t| t.desired_state == TaskState::Shutdown)));
        let first: Vec<Task> = w.tasks(&svc).into_iter().filter(|t| t.status.state == TaskState::Complete).collect();
        assert_eq!(first.len(), 3);
        assert!(first.iter().all(|t| t.desired_state == TaskState::Complete), "{first:#?}");
        let version = w.state.service(&svc).expect("service").spec_version;
        assert_eq!(w.tasks(&svc).iter().filter(|t| t.spec_version == version).count(), 3);
    }

    #[test]
    fn a_rollback_runs_the_previous_spec_and_completes_at_once() {
        let mut w = World::new(&["n1"]);
        let svc = w.service(job(1, 1));
        w.settle();
        force_update(&mut w, &svc);
        w.settle();
        let s = w.state.service(&svc).expect("service").clone();
        w.apply(vec![Action::RollbackService { id: svc.clone(), expected_version: s.version }]);
        w.settle();
        let s = w.state.service(&svc).expect("service").clone();
        assert_eq!(s.update_status.map(|u| u.state), Some(shoal_types::UpdateState::RollbackCompleted));
        let run: Vec<Task> = w.tasks(&svc).into_iter().filter(|t| t.spec_version == s.spec_version).collect();
        assert_eq!(run.len(), 1, "a new run");
        assert_eq!(run[0].spec.force_update, 0, "with the previous spec");
    }

    #[test]
    fn a_global_job_runs_once_per_node_and_on_nodes_that_join() {
        let mut w = World::new(&["n1", "n2"]);
        let mut spec = job(0, 1);
        spec.mode = ServiceMode::GlobalJob;
        let svc = w.service(spec);
        w.settle();
        w.run_all();
        assert_eq!(w.tasks(&svc).len(), 2);
        complete_all(&mut w, &svc);
        w.settle();
        assert_eq!(w.tasks(&svc).len(), 2, "completed: not run again");
        w.add_node("n3");
        w.settle();
        let tasks = w.tasks(&svc);
        assert_eq!(tasks.len(), 3);
        assert!(tasks.iter().any(|t| t.node_id == "n3" && t.desired_state == TaskState::Running));
        force_update(&mut w, &svc);
        w.settle();
        let version = w.state.service(&svc).expect("service").spec_version;
        assert_eq!(w.tasks(&svc).iter().filter(|t| t.spec_version == version).count(), 3);
    }

    fn global_job(w: &mut World) -> String {
        let mut spec = job(0, 1);
        spec.mode = ServiceMode::GlobalJob;
        w.service(spec)
    }

    fn on_node(w: &World, svc: &str, node: &str) -> Vec<Task> {
        w.tasks(svc).into_iter().filter(|t| t.node_id == node).collect()
    }

    #[test]
    fn a_global_job_runs_again_on_a_node_that_was_drained_or_down_while_its_task_was_at_work() {
        let mut w = World::new(&["n1", "n2"]);
        let svc = global_job(&mut w);
        w.settle();
        w.run_all();
        // n1 is drained while its task runs: the task is stopped, nothing replaces it elsewhere.
        w.node_update("n1", |n| n.spec.availability = Availability::Drain);
        w.settle();
        let stopped = on_node(&w, &svc, "n1");
        assert_eq!(stopped.len(), 1);
        assert_eq!(stopped[0].desired_state, TaskState::Shutdown);
        w.set_status(&stopped[0].id, TaskState::Shutdown);
        w.settle();
        assert_eq!(w.tasks(&svc).len(), 2, "not while n1 is drained");
        // Active again, and no task completed there: the job runs there again.
        w.node_update("n1", |n| n.spec.availability = Availability::Active);
        w.settle();
        let again = on_node(&w, &svc, "n1");
        assert_eq!(again.len(), 2, "{again:#?}");
        assert_eq!((again[1].desired_state, again[1].origin), (TaskState::Running, TaskOrigin::Restart));
        w.run_all();
        complete_all(&mut w, &svc);
        w.settle();
        assert_eq!(w.tasks(&svc).len(), 3, "completed on both nodes: no more tasks");

        // n2 goes down while a new run's task is at work, and comes back.
        force_update(&mut w, &svc);
        w.settle();
        w.run_all();
        w.node_update("n2", |n| n.status.state = NodeState::Down);
        w.settle();
        let version = w.state.service(&svc).expect("service").spec_version;
        let current = |w: &World| -> Vec<Task> {
            on_node(w, &svc, "n2").into_iter().filter(|t| t.spec_version == version).collect()
        };
        assert_eq!(current(&w).len(), 1);
        assert_eq!(current(&w)[0].desired_state, TaskState::Shutdown);
        w.node_update("n2", |n| n.status.state = NodeState::Ready);
        w.settle();
        let tasks = current(&w);
        assert_eq!(tasks.len(), 2, "{tasks:#?}");
        assert_eq!(tasks[1].desired_state, TaskState::Running);
        // Once it completed there, it is not run again.
        w.run_all();
        w.set_status(&tasks[1].id, TaskState::Complete);
        w.settle();
        assert_eq!(current(&w).len(), 2);
        assert_eq!(w.state.task(&tasks[1].id).expect("task").desired_state, TaskState::Complete);
    }

    #[test]
    fn a_global_job_does_not_run_again_where_its_task_failed_for_good_or_completed() {
        let mut w = World::new(&["n1", "n2"]);
        let mut spec = job(0, 1);
        spec.mode = ServiceMode::GlobalJob;
        spec.task.restart_policy.condition = RestartCondition::None;
        let svc = w.service(spec);
        w.settle();
        w.run_all();
        let tasks = w.tasks(&svc);
        let (n1, n2) = if tasks[0].node_id == "n1" { (&tasks[0], &tasks[1]) } else { (&tasks[1], &tasks[0]) };
        w.set_status(&n1.id, TaskState::Failed);
        w.set_status(&n2.id, TaskState::Complete);
        w.settle();
        // Drained and back: neither node runs the job again.
        for node in ["n1", "n2"] {
            w.node_update(node, |n| n.spec.availability = Availability::Drain);
            w.settle();
            w.node_update(node, |n| n.spec.availability = Availability::Active);
            w.settle();
        }
        assert_eq!(w.tasks(&svc).len(), 2, "{:#?}", w.tasks(&svc));
        assert_eq!(w.state.task(&n2.id).expect("task").desired_state, TaskState::Complete);
        assert_eq!(w.state.task(&n1.id).expect("task").desired_state, TaskState::Shutdown);
    }
}
