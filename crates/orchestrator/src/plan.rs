//! `service update --dry-run`: what an update to a new spec would do, as the updater would
//! decide it from the same store, with nothing written (Nomad's `job plan`). Pure: a function of
//! the state, the service, the spec it would get and nothing else.

use shoal_store::State;
use shoal_types::{
    FailureAction, OutOfDateTask, PublishMode, RolloutStrategy, Service, ServiceMode, ServiceSpec, StepPause, Task,
    TaskOrigin, TaskState, UpdateConfig, UpdateOrder, UpdatePlan,
};

use crate::strategy::Budgeted;
use crate::update::is_dirty;

/// The plan of an update of `service` to `next`.
pub fn plan_update(state: &State, service: &Service, next: &ServiceSpec) -> UpdatePlan {
    // The service as the update would leave it: a spec version newer than every task's.
    let updated = Service { spec: next.clone(), spec_version: u64::MAX, ..service.clone() };
    let mut runnable: Vec<&Task> =
        state.tasks_of_service(&service.id).filter(|t| t.desired_state <= TaskState::Running).collect();
    // The updater's order: by slot (replicated) or node (global).
    runnable.sort_by(|a, b| (a.slot, &a.node_id, &a.id).cmp(&(b.slot, &b.node_id, &b.id)));
    let hostname = |node_id: &str| match state.node(node_id) {
        Some(node) if !node.description.hostname.is_empty() => node.description.hostname.clone(),
        _ => node_id.to_string(),
    };
    let out_of_date: Vec<OutOfDateTask> = runnable
        .iter()
        .filter(|t| is_dirty(state, &updated, t))
        .map(|t| OutOfDateTask {
            name: t.name(),
            task_id: t.id.clone(),
            node: if t.node_id.is_empty() { String::new() } else { hostname(&t.node_id) },
            reasons: reasons(state, t, next),
        })
        .collect();
    let config = &next.update_config;
    let names: Vec<String> = out_of_date.iter().map(|t| t.name.clone()).collect();
    let replicas = match next.mode {
        ServiceMode::Replicated { replicas } => replicas,
        _ => runnable.len() as u64,
    };
    let (batches, step_ends) = batches_of(config, &names, replicas);
    let task_start_secs = median_start_secs(state, service);
    let secs = |d: shoal_types::GoDuration| d.as_std().as_secs_f64();
    let estimate_secs = if batches.is_empty() {
        0.0
    } else {
        batches.len() as f64 * (task_start_secs + secs(config.delay)) + secs(config.monitor)
    };
    UpdatePlan {
        service: service.spec.name.clone(),
        spec_changes: Vec::new(),
        tasks: runnable.len() as u64,
        out_of_date,
        batches,
        parallelism: config.parallelism,
        order: config.order,
        strategy: config.describe(),
        step_ends,
        task_start_secs,
        estimate_secs,
        warnings: warnings(state, next),
    }
}

/// The batches the strategy would make of the out-of-date slots `names` (in the updater's
/// order), every task taken to be available: Swarm's `parallelism` at a time, everything at once
/// for Recreate, surge + unavailable at a time for a budget; canary steps cut them at each step's
/// count. Returns the batches and, per step but the last, the batch it ends after and its wait.
fn batches_of(config: &UpdateConfig, names: &[String], replicas: u64) -> (Vec<Vec<String>>, Vec<(usize, String)>) {
    let per_batch = match (config.strategy, config.budget()) {
        (RolloutStrategy::Recreate, _) => names.len(),
        (RolloutStrategy::Rolling, Some((surge, unavailable))) => {
            let (surge, unavailable) = Budgeted { max_surge: surge, max_unavailable: unavailable }.limits(replicas);
            (surge + unavailable) as usize
        }
        (RolloutStrategy::Rolling, None) if config.parallelism == 0 => names.len(),
        (RolloutStrategy::Rolling, None) => config.parallelism as usize,
    }
    .max(1);
    let chunk = |names: &[String]| -> Vec<Vec<String>> { names.chunks(per_batch).map(<[String]>::to_vec).collect() };
    if config.steps.is_empty() {
        return (chunk(names), Vec::new());
    }
    // Slots already on the new spec count toward each step's target.
    let done = replicas.saturating_sub(names.len() as u64);
    let (mut batches, mut ends, mut taken) = (Vec::new(), Vec::new(), 0usize);
    let count = config.steps.len();
    for (i, step) in config.steps.iter().enumerate() {
        let target = step.target(replicas).saturating_sub(done) as usize;
        let upto = if i + 1 == count { names.len() } else { target.min(names.len()) };
        if upto <= taken {
            continue;
        }
        batches.extend(chunk(&names[taken..upto]));
        taken = upto;
        if i + 1 < count && taken < names.len() {
            let wait = match step.pause {
                StepPause::Approve => "waits for `shoal rollout approve`".to_string(),
                StepPause::For(pause) => format!("pauses {pause}"),
            };
            ends.push((batches.len() - 1, format!("step {}/{count} ({}) reached: {wait}", i + 1, step.replicas)));
        }
    }
    (batches, ends)
}

/// Why `task` is out of date against `next`, in the user's words.
fn reasons(state: &State, task: &Task, next: &ServiceSpec) -> Vec<String> {
    let (was, will) = (&task.spec, &next.task);
    let mut out = Vec::new();
    if was.container.image != will.container.image {
        out.push(format!("image {} → {}", was.container.image, will.container.image));
    }
    if was.container.env != will.container.env {
        out.push("env changed".into());
    }
    if was.container.command != will.container.command || was.container.args != will.container.args {
        out.push("command or args changed".into());
    }
    let mut rest_was = was.container.clone();
    rest_was.image.clone_from(&will.container.image);
    rest_was.env.clone_from(&will.container.env);
    rest_was.command.clone_from(&will.container.command);
    rest_was.args.clone_from(&will.container.args);
    if rest_was != will.container {
        out.push("container settings changed".into());
    }
    if was.resources != will.resources {
        out.push("resources changed".into());
    }
    if was.restart_policy != will.restart_policy {
        out.push("restart policy changed".into());
    }
    if was.force_update != will.force_update {
        out.push("forced (--force)".into());
    }
    if task.endpoint != next.endpoint {
        out.push("published ports changed".into());
    }
    if was.placement != will.placement {
        let fits = state
            .node(&task.node_id)
            .is_some_and(|node| will.placement.constraints.iter().all(|c| c.matches(|k| node.attribute(k))));
        if fits {
            out.push("placement changed".into());
        } else {
            out.push("placement: its node no longer satisfies the constraints".into());
        }
    }
    out
}

/// The median time from created to running of the service's tasks that ran, in seconds; 1 s
/// when none has.
fn median_start_secs(state: &State, service: &Service) -> f64 {
    let mut starts: Vec<u64> = state
        .tasks_of_service(&service.id)
        .filter(|t| t.origin != TaskOrigin::Restart)
        .filter_map(|t| t.running_at.map(|at| at.saturating_sub(t.created_at)))
        .collect();
    if starts.is_empty() {
        return 1.0;
    }
    starts.sort_unstable();
    starts[starts.len() / 2] as f64 / 1000.0
}

/// What is likely to hurt, said before it does.
fn warnings(state: &State, next: &ServiceSpec) -> Vec<String> {
    let mut out = Vec::new();
    let config = &next.update_config;
    let constraints = &next.task.placement.constraints;
    let eligible =
        state.nodes().filter(|n| n.accepts_tasks() && constraints.iter().all(|c| c.matches(|k| n.attribute(k))));
    if eligible.count() == 0 {
        let constraints: Vec<String> = constraints.iter().map(|c| c.to_string()).collect();
        out.push(if constraints.is_empty() {
            "no new task can be placed: no node is ready and active".to_string()
        } else {
            format!("no new task can be placed: no ready, active node satisfies {}", constraints.join(" and "))
        });
    }
    let replicas = match next.mode {
        ServiceMode::Replicated { replicas } => Some(replicas),
        _ => None,
    };
    if config.order == UpdateOrder::StopFirst && replicas == Some(1) {
        out.push(
            "stop-first with 1 replica: the service has no running task while it is replaced \
             (--update-order start-first keeps the old one until the new one runs)"
                .into(),
        );
    }
    if config.order == UpdateOrder::StartFirst {
        for port in next.endpoint.ports.iter().filter(|p| p.mode == PublishMode::Host && p.published != 0) {
            out.push(format!(
                "start-first with host-mode port {}: a new task cannot start on the node whose old task holds \
                 the port until that one stops",
                port.published
            ));
        }
        if next.task.placement.max_replicas_per_node > 0 {
            out.push(format!(
                "start-first with --replicas-max-per-node {}: a new task may wait for an old one to stop on a \
                 full node",
                next.task.placement.max_replicas_per_node
            ));
        }
    }
    if config.failure_action == FailureAction::Continue && config.monitor.is_zero() {
        out.push("failure action continue with monitor 0: failed new tasks are neither watched nor acted on".into());
    }
    out
}
