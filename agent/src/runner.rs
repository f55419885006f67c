//! One task's life on the agent: Swarm's `exec.Do`, one step at a time, states only forward.

use std::sync::Arc;
use std::time::Duration;

use shoal_executor::{ExecError, Executor, TaskPlan};
use shoal_types::{Task, TaskState, TaskStatus};
use tokio::sync::watch;

use crate::data::DataStore;
use crate::report::Reporter;

fn now_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// How long to wait before retrying a step that failed temporarily (engine unreachable).
const RETRY: Duration = Duration::from_secs(1);

pub struct Runner {
    pub task: watch::Sender<Task>,
    pub handle: tokio::task::JoinHandle<()>,
}

/// Runs until the task's sender is dropped (the task was removed from this node).
pub async fn run(
    mut task_rx: watch::Receiver<Task>,
    executor: Arc<dyn Executor>,
    reporter: Arc<Reporter>,
    data: Arc<DataStore>,
) {
    let mut observed = task_rx.borrow().status.clone();
    let task_id = task_rx.borrow().id.clone();
    // `--update-old-tasks remove`: the container of a replaced task goes once it has stopped.
    let mut container_removed = false;
    // The files of its secrets and configs leave the node once the task has ended.
    let mut files_removed = false;
    loop {
        let task = task_rx.borrow_and_update().clone();
        let plan = TaskPlan::from_task(&task);
        if observed.state >= TaskState::Complete
            && !files_removed
            && task.spec.container.data_references().next().is_some()
        {
            match executor.remove_files(&task_id).await {
                Ok(()) => files_removed = true,
                Err(e) => {
                    tracing::warn!(task = %task_id, error = %e, "removing the task's secret and config files failed");
                    files_removed = true;
                }
            }
        }
        let desired = task.desired_state;
        let mut report = |state: TaskState, message: &str, err: String, observed: &mut TaskStatus| {
            let status = TaskStatus {
                state,
                timestamp: now_millis(),
                message: message.to_string(),
                err,
                container_id: observed.container_id.clone(),
                exit_code: observed.exit_code,
            };
            tracing::debug!(task = %task_id, from = %observed.state, to = %state, "task state");
            *observed = status.clone();
            reporter.report(&task_id, status);
        };

        if desired >= TaskState::Shutdown {
            if observed.state >= TaskState::Complete {
                if task.remove_container && !container_removed {
                    // A task restarting another's container removes that one too.
                    let mut removed = Ok(());
                    for container in task.container_tasks() {
                        removed = executor.remove(container).await;
                        if removed.is_err() {
                            break;
                        }
                    }
                    match removed {
                        Ok(()) => container_removed = true,
                        Err(e) if e.is_temporary() => {
                            tracing::warn!(task = %task_id, error = %e, "removing the container failed; retrying");
                            tokio::time::sleep(RETRY).await;
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!(task = %task_id, error = %e, "removing the container failed");
                            container_removed = true;
                        }
                    }
                }
                if task_rx.changed().await.is_err() {
                    return;
                }
                continue;
            }
            match executor.shutdown(&plan).await {
                Ok(()) => report(TaskState::Shutdown, "shutdown", String::new(), &mut observed),
                Err(e) if e.is_temporary() => {
                    tracing::warn!(task = %task_id, error = %e, "stopping the container failed; retrying");
                    tokio::time::sleep(RETRY).await;
                }
                Err(e) => report(TaskState::Shutdown, "shutdown", e.to_string(), &mut observed),
            }
            continue;
        }
        // Swarm's rules: past the desired state, pause; PREPARING, STARTING and RUNNING carry on
        // (their step is under way); the other states advance only while below the desired one.
        let in_progress = matches!(observed.state, TaskState::Preparing | TaskState::Starting | TaskState::Running);
        if observed.state > desired || (!in_progress && observed.state >= desired) {
            if task_rx.changed().await.is_err() {
                return;
            }
            continue;
        }
        match observed.state {
            TaskState::New | TaskState::Pending | TaskState::Assigned => {
                report(TaskState::Accepted, "accepted", String::new(), &mut observed)
            }
            TaskState::Accepted => report(TaskState::Preparing, "preparing", String::new(), &mut observed),
            TaskState::Preparing => {
                let mut plan = plan;
                match data.files_for(&task) {
                    Ok(files) => plan.files = files,
                    Err(why) => {
                        report(TaskState::Rejected, "preparing", why, &mut observed);
                        continue;
                    }
                }
                match executor.prepare(&plan).await {
                    Ok(container_id) => {
                        observed.container_id = container_id;
                        report(TaskState::Ready, "prepared", String::new(), &mut observed);
                    }
                    Err(e) => fail_or_retry(&task_id, e, TaskState::Rejected, &mut observed, &mut report).await,
                }
            }
            TaskState::Ready => report(TaskState::Starting, "starting", String::new(), &mut observed),
            TaskState::Starting => match executor.start(&plan).await {
                Ok(()) => report(TaskState::Running, "started", String::new(), &mut observed),
                Err(e) => fail_or_retry(&task_id, e, TaskState::Failed, &mut observed, &mut report).await,
            },
            TaskState::Running => {
                tokio::select! {
                    exit = executor.wait(&plan) => match exit {
                        Ok(status) if status.success() => {
                            observed.exit_code = Some(0);
                            report(TaskState::Complete, "finished", String::new(), &mut observed);
                        }
                        Ok(status) => {
                            observed.exit_code = Some(status.code);
                            report(TaskState::Failed, "started", format!("task: non-zero exit ({})", status.code), &mut observed);
                        }
                        Err(e) => fail_or_retry(&task_id, e, TaskState::Failed, &mut observed, &mut report).await,
                    },
                    changed = task_rx.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                }
            }
            _ => {
                if task_rx.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn fail_or_retry(
    task_id: &str,
    error: ExecError,
    fatal_state: TaskState,
    observed: &mut TaskStatus,
    report: &mut impl FnMut(TaskState, &str, String, &mut TaskStatus),
) {
    if error.is_temporary() {
        tracing::warn!(task = %task_id, error = %error, "container engine step failed; retrying");
        tokio::time::sleep(RETRY).await;
        return;
    }
    let message = observed.message.clone();
    report(fatal_state, &message, error.to_string(), observed);
}
