//! One task's life on the agent: Swarm's `exec.Do`, one step at a time, states only forward.

use std::sync::Arc;
use std::time::Duration;

use shoal_executor::{ExecError, Executor, TaskPlan};
use shoal_types::{Task, TaskState, TaskStatus};
use tokio::sync::watch;

use crate::data::DataStore;
use crate::ingress::Ingress;
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
    ingress: Option<Arc<Ingress>>,
) {
    let mut observed = task_rx.borrow().status.clone();
    let task_id = task_rx.borrow().id.clone();
    // `--update-old-tasks remove`: the container of a replaced task goes once it has stopped.
    let mut container_removed = false;
    // The files of its secrets and configs leave the node once the task has ended.
    let mut files_removed = false;
    // A task on a network reports the ports its image exposes once it runs; whether it did
    // (it may have none).
    let mut ports_read = false;
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
                ports: if state.is_terminal() { Vec::new() } else { observed.ports.clone() },
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
            // Told to stop while it takes ingress traffic: no proxy sends it new connections
            // any more; it stops once none is open on any node, or after its drain timeout.
            // Right after an agent restart the leader's first table may not be here yet: wait a
            // little for it rather than stop a task other nodes' proxies still use.
            if observed.state == TaskState::Running
                && drains(&task, &observed)
                && let Some(ingress) = &ingress
                && ingress.wait_active(FIRST_TABLE_WAIT).await
            {
                report(TaskState::Draining, "draining", String::new(), &mut observed);
                continue;
            }
            if observed.state == TaskState::Draining
                && let Some(ingress) = &ingress
            {
                // From the DRAINING status's time, so an agent restarted mid-drain does not
                // start the timeout over.
                let drained_for = Duration::from_millis(now_millis().saturating_sub(observed.timestamp));
                let left = task.spec.container.drain_timeout().saturating_sub(drained_for);
                tokio::select! {
                    _ = ingress.wait_drained(&task_id) => {
                        tracing::debug!(task = %task_id, "drained: no open connection left");
                    }
                    // A container that ends while it drains is stopped for good: nothing to wait for.
                    exit = executor.wait(&plan) => {
                        tracing::info!(task = %task_id, exit = ?exit.map(|e| e.code), "the container ended while draining");
                    }
                    _ = tokio::time::sleep(left) => {
                        tracing::info!(task = %task_id, open = ingress.connections_to(&task_id), "drain timeout passed; stopping the task with connections open");
                    }
                    changed = task_rx.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        continue;
                    }
                }
                ingress.forget(&task_id);
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
                plan.extra_hosts = data.hosts_for(&task);
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
                Ok(()) => {
                    // A task with ingress ports counts as running (available to the updater)
                    // once its ports accept connections, for up to PORT_READY_WAIT; a task
                    // slower than that runs without traffic until they do (see RUNNING).
                    // A task on a network with only its image's exposed ports bounds its own wait
                    // (EXPOSED_READY_WAIT), and is then reported with them whether they answer.
                    let wait =
                        if plan.ingress_targets.is_empty() { EXPOSED_READY_WAIT + RETRY } else { PORT_READY_WAIT };
                    if (!plan.ingress_targets.is_empty() || plan.networked)
                        && let Ok(ports) = tokio::time::timeout(wait, ports_accepting(&*executor, &plan)).await
                    {
                        observed.ports = ports;
                        ports_read = true;
                    }
                    report(TaskState::Running, "started", String::new(), &mut observed)
                }
                Err(e) => fail_or_retry(&task_id, e, TaskState::Failed, &mut observed, &mut report).await,
            },
            TaskState::Running => {
                // A task with ingress ports takes connections once its ports accept them: the
                // endpoints are reported then (a second RUNNING status), not at start.
                let awaiting_ports =
                    (!plan.ingress_targets.is_empty() && observed.ports.is_empty()) || (plan.networked && !ports_read);
                let ready = async {
                    if awaiting_ports { ports_accepting(&*executor, &plan).await } else { std::future::pending().await }
                };
                tokio::select! {
                    ports = ready => {
                        observed.ports = ports;
                        ports_read = true;
                        report(TaskState::Running, "started", String::new(), &mut observed);
                    }
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

/// How long a task told to stop waits for this agent's first ingress table before it stops
/// without draining (a leader that sends none is of an older version).
const FIRST_TABLE_WAIT: Duration = Duration::from_secs(3);
/// How long a started task with ingress ports may take to accept connections before it is
/// reported RUNNING anyway (without traffic until its ports answer).
const PORT_READY_WAIT: Duration = Duration::from_secs(10);
/// How often a started task's ingress ports are tried until they accept connections.
const PORT_PROBE_EVERY: Duration = Duration::from_millis(50);

/// How long a task on a network with no ingress port waits for the ports its image exposes
/// before it is reported with them anyway: an image may expose ports it does not serve.
const EXPOSED_READY_WAIT: Duration = Duration::from_secs(10);

/// The started task's endpoints, once every ingress one accepts a TCP connection at the
/// container's address (or, without one, at the published host port). Until then the proxies
/// would reach a container whose server is not listening yet, and the engine's port proxy
/// accepts and closes such connections: clients would see them fail. A task on a network with
/// only the ports its image exposes waits for them for [`EXPOSED_READY_WAIT`] at most: those it
/// does not serve are skipped by the proxies (a refused connect tries another task).
async fn ports_accepting(executor: &dyn Executor, plan: &TaskPlan) -> Vec<shoal_types::TaskPort> {
    let ports = loop {
        match executor.ports(plan).await {
            Ok(ports) if !ports.is_empty() => break ports,
            // A task on a network whose image exposes nothing and that publishes nothing.
            Ok(_) if plan.ingress_targets.is_empty() => {
                tracing::info!(task = %plan.task_id, service = %plan.service_name, "the task is on a network but has no TCP port to be reached at by name: publish one (-p TARGET, compose expose:) or EXPOSE it in the image");
                return Vec::new();
            }
            Ok(_) => return std::future::pending().await,
            Err(e) => {
                tracing::warn!(task = %plan.task_id, error = %e, "cannot read the task's published ports; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    };
    let gated = ports.iter().any(|p| plan.ingress_targets.contains(&p.target));
    let addrs: Vec<String> = ports
        .iter()
        .filter(|p| !gated || plan.ingress_targets.contains(&p.target))
        .map(|p| {
            if p.container_ip.is_empty() {
                format!("127.0.0.1:{}", p.host_port)
            } else if p.container_ip.contains(':') {
                format!("[{}]:{}", p.container_ip, p.target)
            } else {
                format!("{}:{}", p.container_ip, p.target)
            }
        })
        .collect();
    let mut logged = false;
    let started = tokio::time::Instant::now();
    loop {
        let mut all = true;
        for addr in &addrs {
            let connect = tokio::net::TcpStream::connect(addr.as_str());
            if !matches!(tokio::time::timeout(Duration::from_secs(1), connect).await, Ok(Ok(_))) {
                all = false;
                break;
            }
        }
        if all || (!gated && started.elapsed() > EXPOSED_READY_WAIT) {
            return ports;
        }
        if !logged && started.elapsed() > Duration::from_secs(10) {
            logged = true;
            tracing::warn!(task = %plan.task_id, ports = ?addrs, "the task's ingress ports do not accept connections yet; it takes no ingress traffic until they do");
        }
        tokio::time::sleep(PORT_PROBE_EVERY).await;
    }
}

/// Whether a task told to stop drains first: it publishes ingress ports or is on a network (so
/// proxies reach it at its service's virtual IP), was reachable at its ports, and its drain
/// timeout is not zero.
fn drains(task: &Task, observed: &TaskStatus) -> bool {
    (task.endpoint.ports.iter().any(|p| p.is_reachable()) || !task.spec.networks.is_empty())
        && !observed.ports.is_empty()
        && !task.spec.container.drain_timeout().is_zero()
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
