//! An in-memory [`Executor`] for tests of the agent and of whole clusters without Docker.
//!
//! Containers live in a map; tests steer them (`exit`, `set_unhealthy`, `fail_start`, …) and read
//! back what happened (`ops`, `prepared`, `started`, …). Nothing here sleeps except an explicit
//! [`FakeExecutor::delay_start`], which uses tokio time, so paused-time tests work.
//! Clones share the same engine: hand a clone to a restarted agent to test adoption.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use parking_lot::Mutex;
use tokio::sync::{broadcast, watch};

use crate::mapping::{container_labels, container_name};
use crate::{
    ContainerEvent, ContainerInfo, ExecError, Executor, ExitStatus, LogEntry, LogOptions, LogStream, NodeResources,
    TaskPlan,
};

/// Exit code a fake container reports after `shutdown` (the test images exit 0 on SIGTERM).
pub const FAKE_STOP_EXIT_CODE: i64 = 0;
/// Exit code after the executor stopped an unhealthy container.
pub const FAKE_UNHEALTHY_EXIT_CODE: i64 = 143;

/// One call made to the fake, in order (see [`FakeExecutor::ops`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FakeOp {
    Describe,
    Prepare(String),
    Start(String),
    Wait(String),
    Shutdown(String),
    Remove(String),
    List,
    Logs(String),
}

/// Where a fake container is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FakeStatus {
    Created,
    Running,
    Exited(i64),
}

#[derive(Clone, Debug)]
struct FakeContainer {
    id: String,
    plan: TaskPlan,
    status: FakeStatus,
    /// The task that adopted and restarted this (exited) container, if one did.
    restarted_for: Option<String>,
    /// What the container wrote (see [`FakeExecutor::write_log`]).
    logs: Vec<LogEntry>,
}

/// Where `plan`'s container is kept: under the task it adopts while that one exists, else its own.
fn container_key(st: &State, plan: &TaskPlan) -> String {
    match plan.adopted_task() {
        Some(adopted) if st.containers.contains_key(adopted) => adopted.to_string(),
        _ => plan.task_id.clone(),
    }
}

#[derive(Default)]
struct State {
    containers: BTreeMap<String, FakeContainer>,
    missing_images: BTreeSet<String>,
    prepare_failures: HashMap<String, ExecError>,
    start_failures: HashMap<String, ExecError>,
    start_delays: HashMap<String, Duration>,
    unhealthy: BTreeSet<String>,
    unreachable: bool,
    /// Each task's files as `prepare` was given them, until removed.
    files: HashMap<String, Vec<shoal_types::TaskFile>>,
    resources: NodeResources,
    ops: Vec<FakeOp>,
    next_id: u64,
    prepared: usize,
    started: usize,
    stopped: usize,
    removed: usize,
}

struct Inner {
    node_id: String,
    state: Mutex<State>,
    /// Bumped on every container change, to wake `wait`ers.
    changed: watch::Sender<u64>,
    events: broadcast::Sender<ContainerEvent>,
}

/// In-memory containers for one node. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct FakeExecutor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FakeExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeExecutor").field("node_id", &self.inner.node_id).finish_non_exhaustive()
    }
}

impl FakeExecutor {
    /// A fake engine for node `node_id` with 4 CPUs and 8 GiB of memory and every image present.
    pub fn new(node_id: &str) -> Self {
        let resources = NodeResources {
            hostname: format!("fake-{node_id}"),
            nano_cpus: 4_000_000_000,
            memory_bytes: 8 << 30,
            engine_labels: BTreeMap::new(),
            os: "linux".into(),
            arch: "x86_64".into(),
            engine_version: "fake".into(),
        };
        let (changed, _) = watch::channel(0);
        let (events, _) = broadcast::channel(1024);
        FakeExecutor {
            inner: Arc::new(Inner {
                node_id: node_id.to_string(),
                state: Mutex::new(State { resources, ..State::default() }),
                changed,
                events,
            }),
        }
    }

    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    // ---- steering ----

    /// What `describe` returns.
    pub fn set_resources(&self, resources: NodeResources) {
        self.inner.state.lock().resources = resources;
    }

    /// Makes `image` absent: `prepare` fails with [`ExecError::ImageNotFound`].
    pub fn set_image_missing(&self, image: &str) {
        self.inner.state.lock().missing_images.insert(image.to_string());
    }

    pub fn set_image_present(&self, image: &str) {
        self.inner.state.lock().missing_images.remove(image);
    }

    /// Every `prepare` of `task_id` fails with `err` (until [`FakeExecutor::clear_failures`]).
    pub fn fail_prepare(&self, task_id: &str, err: ExecError) {
        self.inner.state.lock().prepare_failures.insert(task_id.to_string(), err);
    }

    /// Every `start` of `task_id` fails with a fatal error (the container stays created).
    pub fn fail_start(&self, task_id: &str) {
        let err = ExecError::Fatal(format!("fake start failure (starting container of task {task_id})"));
        self.fail_start_with(task_id, err);
    }

    /// Every `start` of `task_id` fails with `err`.
    pub fn fail_start_with(&self, task_id: &str, err: ExecError) {
        self.inner.state.lock().start_failures.insert(task_id.to_string(), err);
    }

    /// `start` of `task_id` takes `delay` (as if waiting for a health check) after the container
    /// runs.
    pub fn delay_start(&self, task_id: &str, delay: Duration) {
        self.inner.state.lock().start_delays.insert(task_id.to_string(), delay);
    }

    /// Forgets `fail_prepare`, `fail_start` and `delay_start` settings.
    pub fn clear_failures(&self) {
        let mut st = self.inner.state.lock();
        st.prepare_failures.clear();
        st.start_failures.clear();
        st.start_delays.clear();
    }

    /// While set, every call fails with [`ExecError::Temporary`] (an engine that is down).
    pub fn set_unreachable(&self, unreachable: bool) {
        self.inner.state.lock().unreachable = unreachable;
    }

    /// Ends the task's container with `code` (as if its process exited or was killed behind our
    /// back): `wait` returns and a `Died` event is sent. Returns false if there is no container
    /// or it had already exited.
    pub fn exit(&self, task_id: &str, code: i64) -> bool {
        let event = {
            let mut st = self.inner.state.lock();
            let Some(c) = st.containers.get_mut(task_id) else { return false };
            if matches!(c.status, FakeStatus::Exited(_)) {
                return false;
            }
            c.status = FakeStatus::Exited(code);
            died(c, code)
        };
        self.notify(Some(event));
        true
    }

    /// The files of the task's secrets and configs, as written by `prepare` and not removed yet.
    pub fn files(&self, task_id: &str) -> Option<Vec<shoal_types::TaskFile>> {
        self.inner.state.lock().files.get(task_id).cloned()
    }

    /// Makes the container of `task_id` write `line` (to standard error if `stderr`), stamped
    /// with the wall clock; false if it has no container.
    pub fn write_log(&self, task_id: &str, stderr: bool, line: &str) -> bool {
        {
            let mut st = self.inner.state.lock();
            let Some(c) = st.containers.get_mut(task_id) else { return false };
            let time_unix_nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
            c.logs.push(LogEntry { stderr, time_unix_nanos, data: line.as_bytes().to_vec() });
        }
        self.notify(None);
        true
    }

    /// Marks the task's container unhealthy: a pending or later `start` fails with
    /// [`ExecError::Unhealthy`], as does a `wait` on a running container (both stop it first).
    /// A `Health` event is sent if the container is running.
    pub fn set_unhealthy(&self, task_id: &str) {
        let event = {
            let mut st = self.inner.state.lock();
            st.unhealthy.insert(task_id.to_string());
            st.containers.get(task_id).filter(|c| c.status == FakeStatus::Running).map(|c| ContainerEvent::Health {
                task_id: task_id.to_string(),
                container_id: c.id.clone(),
                healthy: false,
            })
        };
        self.notify(event);
    }

    /// Removes the task's container behind the agent's back (sends `Destroyed`).
    pub fn destroy(&self, task_id: &str) -> bool {
        let event = {
            let mut st = self.inner.state.lock();
            let Some(c) = st.containers.remove(task_id) else { return false };
            ContainerEvent::Destroyed { task_id: task_id.to_string(), container_id: c.id }
        };
        self.notify(Some(event));
        true
    }

    /// Sends [`ContainerEvent::Resync`] to event subscribers (as after an engine restart).
    pub fn resync(&self) {
        self.notify(Some(ContainerEvent::Resync));
    }

    // ---- observation ----

    /// Every call so far, in order.
    pub fn ops(&self) -> Vec<FakeOp> {
        self.inner.state.lock().ops.clone()
    }

    /// Containers created by `prepare` (idempotent repeats not counted).
    pub fn prepared(&self) -> usize {
        self.inner.state.lock().prepared
    }

    /// Containers started by `start`.
    pub fn started(&self) -> usize {
        self.inner.state.lock().started
    }

    /// Running containers stopped by `shutdown` (or for being unhealthy).
    pub fn stopped(&self) -> usize {
        self.inner.state.lock().stopped
    }

    /// Containers removed by `remove`.
    pub fn removed(&self) -> usize {
        self.inner.state.lock().removed
    }

    /// The status of the task's container, if it exists.
    pub fn status(&self, task_id: &str) -> Option<FakeStatus> {
        self.inner.state.lock().containers.get(task_id).map(|c| c.status)
    }

    /// Task ids of the containers that are running now.
    pub fn running(&self) -> Vec<String> {
        let st = self.inner.state.lock();
        st.containers.values().filter(|c| c.status == FakeStatus::Running).map(|c| c.plan.task_id.clone()).collect()
    }

    /// The plan the task's container was created from.
    pub fn plan(&self, task_id: &str) -> Option<TaskPlan> {
        self.inner.state.lock().containers.get(task_id).map(|c| c.plan.clone())
    }

    // ---- internals ----

    fn notify(&self, event: Option<ContainerEvent>) {
        self.inner.changed.send_modify(|n| *n = n.wrapping_add(1));
        if let Some(event) = event {
            // No subscribers is fine.
            let _ = self.inner.events.send(event);
        }
    }

    /// Records the call and fails it if the engine is "down".
    fn begin(&self, op: FakeOp) -> Result<(), ExecError> {
        let mut st = self.inner.state.lock();
        st.ops.push(op);
        if st.unreachable {
            return Err(ExecError::Temporary("cannot reach the (fake) container engine".into()));
        }
        Ok(())
    }

    /// Stops a running unhealthy container; returns the error and events to send.
    fn stop_unhealthy(st: &mut State, task_id: &str) -> (ExecError, Vec<ContainerEvent>) {
        let mut events = Vec::new();
        let mut name = task_id.to_string();
        if let Some(c) = st.containers.get_mut(task_id) {
            name = container_name(&c.plan);
            if c.status == FakeStatus::Running {
                c.status = FakeStatus::Exited(FAKE_UNHEALTHY_EXIT_CODE);
                events.push(died(c, FAKE_UNHEALTHY_EXIT_CODE));
                st.stopped += 1;
            }
        }
        (ExecError::Unhealthy(format!("container {name} is unhealthy")), events)
    }
}

fn died(c: &FakeContainer, code: i64) -> ContainerEvent {
    ContainerEvent::Died { task_id: c.plan.task_id.clone(), container_id: c.id.clone(), exit_code: Some(code) }
}

#[async_trait::async_trait]
impl Executor for FakeExecutor {
    async fn describe(&self) -> Result<NodeResources, ExecError> {
        self.begin(FakeOp::Describe)?;
        Ok(self.inner.state.lock().resources.clone())
    }

    async fn prepare(&self, plan: &TaskPlan) -> Result<String, ExecError> {
        self.begin(FakeOp::Prepare(plan.task_id.clone()))?;
        let id = {
            let mut st = self.inner.state.lock();
            if let Some(c) = st.containers.get(&container_key(&st, plan)) {
                return Ok(c.id.clone());
            }
            if let Some(err) = st.prepare_failures.get(&plan.task_id) {
                return Err(err.clone());
            }
            if plan.container.image.is_empty() {
                return Err(ExecError::Fatal(format!("task {} has no image", plan.task_id)));
            }
            if st.missing_images.contains(&plan.container.image) {
                return Err(ExecError::ImageNotFound(plan.container.image.clone()));
            }
            if !plan.files.is_empty() {
                st.files.insert(plan.task_id.clone(), plan.files.clone());
            }
            st.next_id += 1;
            let id = format!("fake{:060x}", st.next_id);
            st.containers.insert(
                plan.task_id.clone(),
                FakeContainer {
                    id: id.clone(),
                    plan: plan.clone(),
                    status: FakeStatus::Created,
                    restarted_for: None,
                    logs: Vec::new(),
                },
            );
            st.prepared += 1;
            id
        };
        self.notify(None);
        Ok(id)
    }

    async fn start(&self, plan: &TaskPlan) -> Result<(), ExecError> {
        self.begin(FakeOp::Start(plan.task_id.clone()))?;
        let key = container_key(&self.inner.state.lock(), plan);
        let task_id = &key;
        let (events, delay) = {
            let mut st = self.inner.state.lock();
            let Some(c) = st.containers.get_mut(task_id) else {
                return Err(ExecError::Fatal(format!(
                    "container {} does not exist (it must be prepared first)",
                    container_name(plan)
                )));
            };
            // An adopted container (a rollback restarting it in place) runs once more, once.
            let restart = matches!(c.status, FakeStatus::Exited(_))
                && plan.adopts.is_some()
                && c.restarted_for.as_deref() != Some(plan.task_id.as_str());
            if c.status != FakeStatus::Created && !restart {
                return Ok(());
            }
            if restart {
                c.restarted_for = Some(plan.task_id.clone());
            }
            if let Some(err) = st.start_failures.get(task_id) {
                return Err(err.clone());
            }
            let c = st.containers.get_mut(task_id).expect("checked above");
            c.status = FakeStatus::Running;
            let mut events = vec![ContainerEvent::Started { task_id: task_id.clone(), container_id: c.id.clone() }];
            st.started += 1;
            let delay = st.start_delays.get(task_id).copied();
            if delay.is_none() && st.unhealthy.contains(task_id) {
                let (err, more) = Self::stop_unhealthy(&mut st, task_id);
                events.extend(more);
                drop(st);
                for e in events {
                    self.notify(Some(e));
                }
                return Err(err);
            }
            (events, delay)
        };
        for e in events {
            self.notify(Some(e));
        }
        let Some(delay) = delay else { return Ok(()) };
        tokio::time::sleep(delay).await;
        let (result, events) = {
            let mut st = self.inner.state.lock();
            match st.containers.get(task_id).map(|c| c.status) {
                None => (
                    Err(ExecError::Fatal(format!(
                        "container {} was removed before it became healthy",
                        container_name(plan)
                    ))),
                    Vec::new(),
                ),
                Some(FakeStatus::Exited(code)) => (
                    Err(ExecError::Fatal(format!(
                        "container {} exited with code {code} before it became healthy",
                        container_name(plan)
                    ))),
                    Vec::new(),
                ),
                Some(_) if st.unhealthy.contains(task_id) => {
                    let (err, events) = Self::stop_unhealthy(&mut st, task_id);
                    (Err(err), events)
                }
                Some(_) => (Ok(()), Vec::new()),
            }
        };
        for e in events {
            self.notify(Some(e));
        }
        result
    }

    async fn wait(&self, plan: &TaskPlan) -> Result<ExitStatus, ExecError> {
        self.begin(FakeOp::Wait(plan.task_id.clone()))?;
        let mut changes = self.inner.changed.subscribe();
        loop {
            let outcome = {
                let mut st = self.inner.state.lock();
                if st.unreachable {
                    Some((Err(ExecError::Temporary("cannot reach the (fake) container engine".into())), vec![]))
                } else {
                    let key = container_key(&st, plan);
                    match st.containers.get(&key).map(|c| c.status) {
                        None => Some((
                            Err(ExecError::Fatal(format!("container {} no longer exists", container_name(plan)))),
                            vec![],
                        )),
                        Some(FakeStatus::Exited(code)) => Some((Ok(ExitStatus { code }), vec![])),
                        Some(FakeStatus::Running) if st.unhealthy.contains(&key) => {
                            let (err, events) = Self::stop_unhealthy(&mut st, &key);
                            Some((Err(err), events))
                        }
                        Some(_) => None,
                    }
                }
            };
            if let Some((result, events)) = outcome {
                for e in events {
                    self.notify(Some(e));
                }
                return result;
            }
            if changes.changed().await.is_err() {
                // The sender lives as long as `self`; this cannot happen.
                return Err(ExecError::Temporary("fake engine went away".into()));
            }
        }
    }

    async fn shutdown(&self, plan: &TaskPlan) -> Result<(), ExecError> {
        self.begin(FakeOp::Shutdown(plan.task_id.clone()))?;
        let event = {
            let mut st = self.inner.state.lock();
            let key = container_key(&st, plan);
            let Some(c) = st.containers.get_mut(&key) else { return Ok(()) };
            if c.status != FakeStatus::Running {
                return Ok(());
            }
            c.status = FakeStatus::Exited(FAKE_STOP_EXIT_CODE);
            let event = died(c, FAKE_STOP_EXIT_CODE);
            st.stopped += 1;
            event
        };
        self.notify(Some(event));
        Ok(())
    }

    async fn remove_files(&self, task_id: &str) -> Result<(), ExecError> {
        self.inner.state.lock().files.remove(task_id);
        Ok(())
    }

    async fn remove(&self, task_id: &str) -> Result<(), ExecError> {
        self.inner.state.lock().files.remove(task_id);
        self.begin(FakeOp::Remove(task_id.to_string()))?;
        let events = {
            let mut st = self.inner.state.lock();
            let Some(c) = st.containers.remove(task_id) else { return Ok(()) };
            st.removed += 1;
            let mut events = Vec::new();
            if c.status == FakeStatus::Running {
                events.push(died(&c, 137));
            }
            events.push(ContainerEvent::Destroyed { task_id: task_id.to_string(), container_id: c.id });
            events
        };
        for e in events {
            self.notify(Some(e));
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<ContainerInfo>, ExecError> {
        self.begin(FakeOp::List)?;
        let st = self.inner.state.lock();
        Ok(st
            .containers
            .values()
            .map(|c| ContainerInfo {
                task_id: c.plan.task_id.clone(),
                container_id: c.id.clone(),
                running: c.status == FakeStatus::Running,
                exit_code: match c.status {
                    FakeStatus::Exited(code) => Some(code),
                    _ => None,
                },
                labels: container_labels(&c.plan, &self.inner.node_id).into_iter().collect(),
            })
            .collect())
    }

    async fn logs(&self, task_id: &str, options: LogOptions) -> Result<Option<LogStream>, ExecError> {
        self.begin(FakeOp::Logs(task_id.to_string()))?;
        let first = {
            let st = self.inner.state.lock();
            let Some(c) = st.containers.get(task_id) else { return Ok(None) };
            options.tail.map_or(0, |n| c.logs.len().saturating_sub(usize::try_from(n).unwrap_or(usize::MAX)))
        };
        let (fake, task_id) = (self.clone(), task_id.to_string());
        let changed = self.inner.changed.subscribe();
        let lines = futures::stream::unfold((first, changed), move |(mut next, mut changed)| {
            let (fake, task_id) = (fake.clone(), task_id.clone());
            async move {
                loop {
                    {
                        let st = fake.inner.state.lock();
                        let c = st.containers.get(&task_id)?;
                        if let Some(entry) = c.logs.get(next) {
                            next += 1;
                            if entry.time_unix_nanos < options.since_unix_nanos {
                                continue;
                            }
                            return Some((Ok(entry.clone()), (next, changed)));
                        }
                        if !options.follow || c.status != FakeStatus::Running {
                            return None;
                        }
                        changed.mark_unchanged();
                    }
                    changed.changed().await.ok()?;
                }
            }
        });
        Ok(Some(lines.boxed()))
    }

    /// Events from now on; a subscriber that falls more than 1024 events behind gets `Resync`.
    /// The stream ends when every clone of the fake is dropped.
    fn events(&self) -> BoxStream<'static, ContainerEvent> {
        let rx = self.inner.events.subscribe();
        futures::stream::unfold(rx, |mut rx| async move {
            match rx.recv().await {
                Ok(event) => Some((event, rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => Some((ContainerEvent::Resync, rx)),
                Err(broadcast::error::RecvError::Closed) => None,
            }
        })
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use shoal_types::{ContainerSpec, Resources};

    use super::*;

    fn plan(task_id: &str, image: &str) -> TaskPlan {
        TaskPlan {
            task_id: task_id.into(),
            service_id: "svc".into(),
            service_name: "web".into(),
            slot: 1,
            node_id: "n1".into(),
            container: ContainerSpec { image: image.into(), ..ContainerSpec::default() },
            resources: Resources::default(),
            ports: Vec::new(),
            ingress_targets: Vec::new(),
            adopts: None,
            files: Vec::new(),
            networked: false,
            extra_hosts: Vec::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn lifecycle_and_counters() {
        let fake = FakeExecutor::new("n1");
        let p = plan("t1", "shoal/busybox:1");
        let id = fake.prepare(&p).await.unwrap();
        assert_eq!(fake.prepare(&p).await.unwrap(), id, "prepare is idempotent");
        assert_eq!(fake.prepared(), 1);
        assert_eq!(fake.status("t1"), Some(FakeStatus::Created));

        fake.start(&p).await.unwrap();
        fake.start(&p).await.unwrap();
        assert_eq!(fake.started(), 1);
        assert_eq!(fake.running(), vec!["t1".to_string()]);

        let listed = fake.list().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].running);
        assert_eq!(listed[0].labels[crate::LABEL_NODE_ID], "n1");

        fake.shutdown(&p).await.unwrap();
        fake.shutdown(&p).await.unwrap();
        assert_eq!(fake.stopped(), 1);
        assert_eq!(fake.wait(&p).await.unwrap(), ExitStatus { code: FAKE_STOP_EXIT_CODE });

        fake.remove("t1").await.unwrap();
        fake.remove("t1").await.unwrap();
        assert_eq!(fake.removed(), 1);
        assert!(fake.list().await.unwrap().is_empty());
        assert_eq!(
            fake.ops(),
            vec![
                FakeOp::Prepare("t1".into()),
                FakeOp::Prepare("t1".into()),
                FakeOp::Start("t1".into()),
                FakeOp::Start("t1".into()),
                FakeOp::List,
                FakeOp::Shutdown("t1".into()),
                FakeOp::Shutdown("t1".into()),
                FakeOp::Wait("t1".into()),
                FakeOp::Remove("t1".into()),
                FakeOp::Remove("t1".into()),
                FakeOp::List,
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn wait_returns_when_the_test_exits_the_container() {
        let fake = FakeExecutor::new("n1");
        let p = plan("t1", "img");
        fake.prepare(&p).await.unwrap();
        fake.start(&p).await.unwrap();
        let waiter = tokio::spawn({
            let fake = fake.clone();
            let p = p.clone();
            async move { fake.wait(&p).await }
        });
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(!waiter.is_finished());
        assert!(fake.exit("t1", 3));
        assert!(!fake.exit("t1", 4), "already exited");
        assert_eq!(waiter.await.unwrap().unwrap(), ExitStatus { code: 3 });
        assert_eq!(fake.list().await.unwrap()[0].exit_code, Some(3));
    }

    #[tokio::test(start_paused = true)]
    async fn missing_image_is_rejected_and_creates_nothing() {
        let fake = FakeExecutor::new("n1");
        fake.set_image_missing("shoal/nope:1");
        let err = fake.prepare(&plan("t1", "shoal/nope:1")).await.unwrap_err();
        assert_eq!(err, ExecError::ImageNotFound("shoal/nope:1".into()));
        assert_eq!(err.to_string(), "image shoal/nope:1 not found locally (shoal never pulls images)");
        assert_eq!(fake.prepared(), 0);
        assert!(fake.list().await.unwrap().is_empty());
        fake.set_image_present("shoal/nope:1");
        fake.prepare(&plan("t1", "shoal/nope:1")).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn injected_failures() {
        let fake = FakeExecutor::new("n1");
        let p = plan("t1", "img");
        fake.fail_prepare("t1", ExecError::Fatal("no space".into()));
        assert_eq!(fake.prepare(&p).await.unwrap_err(), ExecError::Fatal("no space".into()));
        fake.clear_failures();
        fake.prepare(&p).await.unwrap();
        fake.fail_start("t1");
        assert!(matches!(fake.start(&p).await, Err(ExecError::Fatal(_))));
        assert_eq!(fake.status("t1"), Some(FakeStatus::Created));
        fake.clear_failures();
        fake.start(&p).await.unwrap();

        fake.set_unreachable(true);
        assert!(fake.list().await.unwrap_err().is_temporary());
        assert!(fake.wait(&p).await.unwrap_err().is_temporary());
        fake.set_unreachable(false);
        assert_eq!(fake.list().await.unwrap().len(), 1);

        let unstarted = plan("t2", "img");
        assert!(matches!(fake.start(&unstarted).await, Err(ExecError::Fatal(_))));
        assert!(matches!(fake.wait(&unstarted).await, Err(ExecError::Fatal(_))));
        fake.shutdown(&unstarted).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn unhealthy_fails_start_and_wait() {
        let fake = FakeExecutor::new("n1");
        let a = plan("a", "img");
        fake.prepare(&a).await.unwrap();
        fake.set_unhealthy("a");
        assert!(matches!(fake.start(&a).await, Err(ExecError::Unhealthy(_))));
        assert_eq!(fake.status("a"), Some(FakeStatus::Exited(FAKE_UNHEALTHY_EXIT_CODE)));

        // Turning unhealthy while a health wait is in progress.
        let b = plan("b", "img");
        fake.prepare(&b).await.unwrap();
        fake.delay_start("b", Duration::from_secs(5));
        let starter = tokio::spawn({
            let (fake, b) = (fake.clone(), b.clone());
            async move { fake.start(&b).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        fake.set_unhealthy("b");
        let err = starter.await.unwrap().unwrap_err();
        assert!(matches!(err, ExecError::Unhealthy(_)), "{err:?}");
        assert!(err.to_string().contains("web.1.b"), "{err}");

        // Turning unhealthy while running.
        let c = plan("c", "img");
        fake.prepare(&c).await.unwrap();
        fake.start(&c).await.unwrap();
        let waiter = tokio::spawn({
            let (fake, c) = (fake.clone(), c.clone());
            async move { fake.wait(&c).await }
        });
        tokio::task::yield_now().await;
        fake.set_unhealthy("c");
        assert!(matches!(waiter.await.unwrap(), Err(ExecError::Unhealthy(_))));
        assert!(fake.running().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_start_returns_after_the_delay_unless_the_container_exits() {
        let fake = FakeExecutor::new("n1");
        let p = plan("t1", "img");
        fake.prepare(&p).await.unwrap();
        fake.delay_start("t1", Duration::from_secs(10));
        let t0 = tokio::time::Instant::now();
        fake.start(&p).await.unwrap();
        assert_eq!(t0.elapsed(), Duration::from_secs(10));

        let q = plan("t2", "img");
        fake.prepare(&q).await.unwrap();
        fake.delay_start("t2", Duration::from_secs(10));
        let starter = tokio::spawn({
            let (fake, q) = (fake.clone(), q.clone());
            async move { fake.start(&q).await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        fake.exit("t2", 1);
        let err = starter.await.unwrap().unwrap_err();
        assert!(err.to_string().contains("exited with code 1 before it became healthy"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn events_report_lifecycle_and_kills_behind_our_back() {
        let fake = FakeExecutor::new("n1");
        let mut events = fake.events();
        let p = plan("t1", "img");
        let id = fake.prepare(&p).await.unwrap();
        fake.start(&p).await.unwrap();
        fake.exit("t1", 137);
        fake.resync();
        fake.remove("t1").await.unwrap();
        let expected = vec![
            ContainerEvent::Started { task_id: "t1".into(), container_id: id.clone() },
            ContainerEvent::Died { task_id: "t1".into(), container_id: id.clone(), exit_code: Some(137) },
            ContainerEvent::Resync,
            ContainerEvent::Destroyed { task_id: "t1".into(), container_id: id.clone() },
        ];
        let mut got = Vec::new();
        for _ in 0..expected.len() {
            got.push(events.next().await.unwrap());
        }
        assert_eq!(got, expected);
        assert_eq!(got[1].task_id(), Some("t1"));

        // A clone shares the engine (an agent restart adopts the same containers).
        let q = plan("t2", "img");
        fake.prepare(&q).await.unwrap();
        let again = fake.clone();
        assert_eq!(again.list().await.unwrap()[0].task_id, "t2");
        drop(events);
    }

    #[tokio::test(start_paused = true)]
    async fn describe_is_configurable() {
        let fake = FakeExecutor::new("n1");
        let r = fake.describe().await.unwrap();
        assert_eq!(r.hostname, "fake-n1");
        assert_eq!(r.nano_cpus, 4_000_000_000);
        fake.set_resources(NodeResources { hostname: "h".into(), nano_cpus: 1, ..NodeResources::default() });
        assert_eq!(fake.describe().await.unwrap().to_description().hostname, "h");
    }
}
