//! A group rollout's progress (an atomic stack deploy, a stack rollback), seen one member at a
//! time: the pass that looks at a service of the group decides whether that member completed,
//! failed or finished rolling back, and whether the group ran out of time. The store does the
//! rest in the same entry (starting members whose dependencies completed, rolling the group back,
//! ending it), so the decision survives a change of leader.

use shoal_store::{Action, State};
use shoal_types::stack::{GroupState, MemberState};
use shoal_types::{Service, ServiceMode, Task, TaskState, Timestamp, UpdateState};

use crate::{Ctx, Plan};

/// The member's failure, if a task of a service the group created failed: it ended before it
/// ran, or within the monitor window after (the updater judges updated members).
fn created_member_failure<'a>(state: &'a State, service: &Service) -> Option<&'a Task> {
    let monitor = service.spec.update_config.monitor.as_std().as_millis() as u64;
    state
        .tasks_of_service(&service.id)
        .filter(|t| matches!(t.status.state, TaskState::Failed | TaskState::Rejected))
        .filter(|t| t.running_at.is_none_or(|at| t.status.timestamp <= at + monitor))
        .min_by_key(|t| (t.status.timestamp, t.id.clone()))
}

/// When every task of the service meant to run has run for the monitor window: `Ok(at)` once
/// that time has come (or `Err(Some(at))` to look again then, `Err(None)` while a task is not
/// running yet).
fn converged(state: &State, service: &Service, now: Timestamp) -> Result<(), Option<Timestamp>> {
    if service.spec.mode.is_job() {
        return Ok(());
    }
    let monitor = service.spec.update_config.monitor.as_std().as_millis() as u64;
    // Tasks up to date with the spec: a change that replaces no task (a scale, a label) leaves
    // the old ones counting.
    let wanted: Vec<&Task> = state
        .tasks_of_service(&service.id)
        .filter(|t| t.desired_state == TaskState::Running && !t.kept && !t.prepared_ahead())
        .filter(|t| !crate::update::is_dirty(state, service, t))
        .collect();
    let enough = match service.spec.mode {
        ServiceMode::Replicated { replicas } => wanted.len() as u64 >= replicas,
        _ => !wanted.is_empty(),
    };
    if !enough || wanted.iter().any(|t| t.status.state != TaskState::Running) {
        return Err(None);
    }
    // Nothing meant to run (zero replicas): done now.
    let Some(last) = wanted.iter().filter_map(|t| t.running_at).max() else { return Ok(()) };
    if now >= last + monitor { Ok(()) } else { Err(Some(last + monitor)) }
}

fn set(stack: &str, revision: u64, service: &Service, state: MemberState) -> Action {
    Action::SetGroupMember { stack: stack.to_string(), revision, service_id: service.id.clone(), state }
}

/// What the group of `service` (if it is in one) should record about it now.
pub fn member_progress(state: &State, service: &Service, ctx: &Ctx<'_>, plan: &mut Plan) {
    let Some(mark) = &service.group else { return };
    let Some(group) = state.group(mark) else { return };
    let Some(member) = group.member(&service.id) else { return };
    if group.state.is_final() || member.state.is_final() {
        return;
    }
    let (stack, revision, now) = (mark.stack.as_str(), mark.revision, ctx.now);
    let status = service.update_status.as_ref();
    match group.state {
        GroupState::Updating => {
            if let Some(deadline) = group.deadline {
                if now >= deadline {
                    let waiting: Vec<String> =
                        group.members.iter().filter(|m| !m.state.is_final()).map(|m| m.name.clone()).collect();
                    let timeout = (deadline - group.started_at) / 1000;
                    plan.actions.push(Action::FailGroup {
                        stack: stack.to_string(),
                        revision,
                        service_id: service.id.clone(),
                        task_id: String::new(),
                        message: format!(
                            "the stack rollout did not complete within its timeout ({timeout}s); not done: {}",
                            waiting.join(", ")
                        ),
                    });
                    return;
                }
                plan.wake(&service.id, deadline);
            }
            if member.state != MemberState::Updating {
                return;
            }
            if member.created {
                if let Some(task) = created_member_failure(state, service) {
                    let error = if task.status.err.is_empty() { &task.status.message } else { &task.status.err };
                    plan.actions.push(Action::FailGroup {
                        stack: stack.to_string(),
                        revision,
                        service_id: service.id.clone(),
                        task_id: task.id.clone(),
                        message: format!("task {} {}: {error}", task.id, task.status.state.as_str()),
                    });
                    return;
                }
                match converged(state, service, now) {
                    Ok(()) => plan.actions.push(set(stack, revision, service, MemberState::Completed)),
                    Err(Some(at)) => plan.wake(&service.id, at),
                    Err(None) => {}
                }
                return;
            }
            // The group's own spec, or one set since by hand or by a rollback.
            let own = service.spec_version == member.spec_version;
            let rollback = matches!(
                status.map(|s| s.state),
                Some(UpdateState::RollbackStarted | UpdateState::RollbackPaused | UpdateState::RollbackCompleted)
            );
            if !own {
                if rollback && group.atomic {
                    // Rolled back by hand (`service rollback`, `rollout abort`): so is the group.
                    plan.actions.push(Action::FailGroup {
                        stack: stack.to_string(),
                        revision,
                        service_id: service.id.clone(),
                        task_id: String::new(),
                        message: "it was rolled back by hand".into(),
                    });
                } else {
                    // Rolled back by its own failure action (a group that does not roll back),
                    // or changed by hand: its part in the group is over.
                    let state = if rollback { MemberState::Failed } else { MemberState::Completed };
                    plan.actions.push(set(stack, revision, service, state));
                }
                return;
            }
            match status.map(|s| s.state) {
                // A stack rollback's members roll out as rollbacks.
                Some(UpdateState::Completed | UpdateState::RollbackCompleted) => {
                    plan.actions.push(set(stack, revision, service, MemberState::Completed));
                }
                // A group that does not roll back: the member's own failure action ran.
                Some(UpdateState::Paused | UpdateState::RollbackPaused) if !group.atomic => {
                    plan.actions.push(set(stack, revision, service, MemberState::Failed));
                }
                // Nothing to replace (a label change): done once its tasks run.
                None => match converged(state, service, now) {
                    Ok(()) => plan.actions.push(set(stack, revision, service, MemberState::Completed)),
                    Err(Some(at)) => plan.wake(&service.id, at),
                    Err(None) => {}
                },
                _ => {}
            }
        }
        GroupState::RollbackStarted => {
            if member.state != MemberState::RollingBack {
                return;
            }
            // A rollback gets as long again as the rollout had; one still going then (its tasks
            // cannot be placed, say) ends the group as failed rather than keep it open.
            if let Some(deadline) = group.deadline {
                let rollback_deadline = deadline.saturating_add(deadline.saturating_sub(group.started_at));
                if now >= rollback_deadline {
                    plan.actions.push(set(stack, revision, service, MemberState::Failed));
                    return;
                }
                plan.wake(&service.id, rollback_deadline);
            }
            match status.map(|s| s.state) {
                Some(UpdateState::RollbackCompleted) => {
                    plan.actions.push(set(stack, revision, service, MemberState::RolledBack));
                }
                // Stuck: the group ends all the same, with this member's rollback paused.
                Some(UpdateState::RollbackPaused) => {
                    plan.actions.push(set(stack, revision, service, MemberState::Failed));
                }
                _ => {}
            }
        }
        _ => {}
    }
}
