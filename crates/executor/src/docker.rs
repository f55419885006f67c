//! [`Executor`] on a Docker engine, through bollard.
//!
//! Engines here speak API 1.41 (Docker 20.10) while bollard 0.21 is built for 1.53, so the client
//! always negotiates the version and nothing relies on post-1.41 fields.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummary, ContainerSummaryStateEnum, EventMessage,
    EventMessageTypeEnum, HealthConfig, HealthStatusEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, EventsOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, StartContainerOptions, StopContainerOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use futures::StreamExt;
use futures::stream::BoxStream;

use crate::mapping::{container_body, container_name, grace_secs};
use crate::{
    ContainerEvent, ContainerInfo, ExecError, Executor, ExitStatus, LABEL_NODE_ID, LABEL_TASK_ID, LogEntry, LogOptions,
    LogStream, NodeResources, TaskPlan,
};

/// How often `start` looks at a container's health while it waits for it to become healthy.
const HEALTH_POLL: Duration = Duration::from_millis(250);
/// How often `wait` looks at a running container's health (for as long as it runs).
const HEALTH_WATCH_POLL: Duration = Duration::from_secs(1);
/// Extra time the client gives `stop` beyond the grace period before it calls the engine lost.
const STOP_SLACK: Duration = Duration::from_secs(30);
/// Reconnection backoff for the events stream.
const EVENTS_BACKOFF_MIN: Duration = Duration::from_millis(100);
const EVENTS_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Runs tasks as containers on a Docker engine. Cheap to clone (the client is shared).
#[derive(Clone, Debug)]
pub struct DockerExecutor {
    docker: Docker,
    node_id: String,
    /// Containers this executor created, by task id.
    made: Arc<parking_lot::Mutex<HashMap<String, Made>>>,
    /// Where the files of tasks' secrets and configs are written (see [`crate::files`]).
    files_dir: Option<std::path::PathBuf>,
    /// The host address ingress target ports are published on (all addresses when `None`).
    ingress_host_ip: Option<String>,
}

/// A container this executor created, so the steps after `prepare` need no lookup by label: a
/// label-filtered list makes the engine scan every container, and with three lookups per task
/// they slowed a 30-replica start on a busy engine by about a fifth. Only a hint: the lookup is
/// used whenever the hint is missing (e.g. after an agent restart) or may be stale.
#[derive(Clone, Debug)]
struct Made {
    id: String,
    /// The spec or the image defines a health check (the container's own may still disable it).
    may_check_health: bool,
    /// `start` was called once; a second call goes through the lookup, which never starts a
    /// container that has run before.
    start_called: bool,
    /// That call succeeded: the container has run (it may have exited since).
    started: bool,
}

impl DockerExecutor {
    /// Connects to `docker_host` (`unix:///var/run/docker.sock`, a bare socket path, or
    /// `tcp://host:port`; None uses `DOCKER_HOST` or the local socket) and negotiates the API
    /// version. Containers made by this executor are labelled with `node_id`, and only those are
    /// seen by its lookups.
    pub async fn connect(docker_host: Option<&str>, node_id: &str) -> Result<Self, ExecError> {
        if node_id.is_empty() {
            return Err(ExecError::Fatal("executor needs a node id".into()));
        }
        let where_ = docker_host.unwrap_or("the default Docker socket").to_string();
        let docker = match docker_host {
            None => Docker::connect_with_local_defaults(),
            Some(host) if host.starts_with('/') => Docker::connect_with_unix(host, 120, bollard::API_DEFAULT_VERSION),
            Some(host) => Docker::connect_with_host(host),
        }
        .map_err(|e| engine_error(&format!("connecting to Docker at {where_}"), e))?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| engine_error(&format!("connecting to Docker at {where_}"), e))?;
        Ok(DockerExecutor {
            docker,
            node_id: node_id.to_string(),
            made: Default::default(),
            files_dir: None,
            ingress_host_ip: None,
        })
    }

    /// Publishes tasks' ingress target ports on `ip` only (the agent's ingress address), so
    /// several agents on one machine keep their tasks apart; unspecified: all addresses.
    pub fn with_ingress_ip(mut self, ip: std::net::IpAddr) -> Self {
        self.ingress_host_ip = (!ip.is_unspecified()).then(|| ip.to_string());
        self
    }

    /// Writes tasks' secrets and configs under `dir` (created 0700 if missing).
    pub fn with_files_dir(mut self, dir: std::path::PathBuf) -> Self {
        self.files_dir = Some(dir);
        self
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The underlying client (for tools and tests).
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    fn filters(&self, task_id: Option<&str>) -> HashMap<String, Vec<String>> {
        let mut labels = vec![format!("{LABEL_NODE_ID}={}", self.node_id)];
        if let Some(task_id) = task_id {
            labels.push(format!("{LABEL_TASK_ID}={task_id}"));
        }
        HashMap::from([("label".to_string(), labels)])
    }

    async fn list_summaries(&self, task_id: Option<&str>) -> Result<Vec<ContainerSummary>, ExecError> {
        let opts = ListContainersOptionsBuilder::default().all(true).filters(&self.filters(task_id)).build();
        self.docker.list_containers(Some(opts)).await.map_err(|e| engine_error("listing containers", e))
    }

    /// This node's container for `task_id`, if any.
    async fn find(&self, task_id: &str) -> Result<Option<ContainerSummary>, ExecError> {
        let mut found = self.list_summaries(Some(task_id)).await?;
        // Several would mean someone made one by hand; prefer one that was started.
        found.sort_by_key(|c| c.state == Some(ContainerSummaryStateEnum::CREATED));
        Ok(found.into_iter().find(|c| c.id.is_some()))
    }

    /// The container of `plan`: the stopped container it adopts, or (when it adopts none, or
    /// that one was gone and `prepare` made the task its own) the task's own.
    async fn find_for(&self, plan: &TaskPlan) -> Result<Option<ContainerSummary>, ExecError> {
        if let Some(adopted) = plan.adopted_task()
            && let Some(found) = self.find(adopted).await?
        {
            return Ok(Some(found));
        }
        self.find(&plan.task_id).await
    }

    /// Takes over the stopped container `plan` adopts (a rollback restarting it in place): no
    /// create, `start` restarts it. None when it is gone.
    async fn adopt(&self, plan: &TaskPlan, adopted: &str) -> Result<Option<String>, ExecError> {
        let Some(id) = self.find(adopted).await?.and_then(|c| c.id) else { return Ok(None) };
        let Some(info) = self.inspect(&id).await? else { return Ok(None) };
        let may_check_health = has_healthcheck(info.config.as_ref().and_then(|c| c.healthcheck.as_ref()));
        let mut made = self.made.lock();
        // The task that made it must not reach it through its stale entry any more.
        made.remove(adopted);
        made.insert(
            plan.task_id.clone(),
            Made { id: id.clone(), may_check_health, start_called: false, started: false },
        );
        Ok(Some(id))
    }

    async fn inspect(&self, id: &str) -> Result<Option<ContainerInspectResponse>, ExecError> {
        match self.docker.inspect_container(id, None::<InspectContainerOptions>).await {
            Ok(info) => Ok(Some(info)),
            Err(e) if status(&e) == Some(404) => Ok(None),
            Err(e) => Err(engine_error(&format!("inspecting container {id}"), e)),
        }
    }

    /// Whether `start` is to start container `id` although it ran before: `plan` adopts it, it is
    /// not running, and it has not been started since the task that last ran it stopped.
    async fn to_restart(&self, plan: &TaskPlan, id: &str) -> Result<bool, ExecError> {
        let Some(adoption) = &plan.adopts else { return Ok(false) };
        let Some(info) = self.inspect(id).await? else { return Ok(false) };
        let state = info.state.unwrap_or_default();
        if state.running == Some(true) {
            return Ok(false);
        }
        let started_at = state.started_at.as_deref().and_then(rfc3339_millis).unwrap_or(0);
        Ok(started_at <= adoption.stopped_at)
    }

    /// Waits until container `id` meets `condition` (`not-running` or `next-exit`) and returns
    /// its exit code.
    async fn wait_exit(&self, id: &str, name: &str, condition: &str) -> Result<ExitStatus, ExecError> {
        let opts = WaitContainerOptionsBuilder::default().condition(condition).build();
        let mut waiter = self.docker.wait_container(id, Some(opts));
        match waiter.next().await {
            Some(Ok(resp)) => Ok(ExitStatus { code: resp.status_code }),
            // bollard reports a non-zero exit as an error.
            Some(Err(DockerError::DockerContainerWaitError { code, .. })) => Ok(ExitStatus { code }),
            Some(Err(e)) if status(&e) == Some(404) => Err(container_gone(name)),
            Some(Err(e)) => Err(engine_error(&format!("waiting for container {name}"), e)),
            None => Err(ExecError::Temporary(format!(
                "waiting for container {name}: the Docker engine closed the connection"
            ))),
        }
    }

    /// Stops container `id` unless it is not running; `Ok(false)` if the engine does not know it.
    async fn stop(&self, id: &str, name: &str, grace: Duration) -> Result<bool, ExecError> {
        let t = grace_secs(grace);
        let client = self.docker.clone().with_timeout(Duration::from_secs(t.unsigned_abs()) + STOP_SLACK);
        let opts = StopContainerOptionsBuilder::default().t(i32::try_from(t).unwrap_or(i32::MAX)).build();
        match client.stop_container(id, Some(opts)).await {
            Ok(()) => Ok(true),
            // 304: not running (created, exited or already stopping).
            Err(e) if status(&e) == Some(304) => Ok(true),
            Err(e) if status(&e) == Some(404) => Ok(false),
            Err(e) => Err(engine_error(&format!("stopping container {name}"), e)),
        }
    }

    /// After a start: a container whose configuration has a health check counts as started only
    /// once the check passes (Swarm's RUNNING); any other is started already.
    async fn healthy_after_start(&self, plan: &TaskPlan, id: &str) -> Result<(), ExecError> {
        let Some(info) = self.inspect(id).await? else {
            return Err(ExecError::Fatal(format!("container {} was removed while starting", container_name(plan))));
        };
        if has_healthcheck(info.config.as_ref().and_then(|c| c.healthcheck.as_ref())) {
            self.wait_healthy(plan, id).await?;
        }
        Ok(())
    }

    /// Polls the container until its health check passes.
    async fn wait_healthy(&self, plan: &TaskPlan, id: &str) -> Result<(), ExecError> {
        let name = container_name(plan);
        loop {
            let Some(info) = self.inspect(id).await? else {
                return Err(ExecError::Fatal(format!("container {name} was removed before it became healthy")));
            };
            let state = info.state.unwrap_or_default();
            if state.running != Some(true) {
                let code = state.exit_code.unwrap_or(-1);
                return Err(ExecError::Fatal(format!(
                    "container {name} exited with code {code} before it became healthy"
                )));
            }
            let health = state.health.unwrap_or_default();
            match health.status {
                Some(HealthStatusEnum::HEALTHY) => return Ok(()),
                Some(HealthStatusEnum::UNHEALTHY) => {
                    let err = unhealthy_error(&name, health.log.as_deref());
                    self.stop(id, &name, plan.container.stop_grace_period.as_std()).await?;
                    return Err(err);
                }
                // No health state at all: the engine does not check this container.
                None | Some(HealthStatusEnum::NONE | HealthStatusEnum::EMPTY) => return Ok(()),
                Some(HealthStatusEnum::STARTING) => tokio::time::sleep(HEALTH_POLL).await,
            }
        }
    }

    /// Resolves once a running container turns unhealthy; never resolves otherwise. Does not
    /// stop the container: the caller must, after it stopped waiting for the exit (or the exit
    /// caused by the stop would win the race).
    async fn watch_unhealthy(&self, plan: &TaskPlan, id: &str) -> ExecError {
        let name = container_name(plan);
        loop {
            tokio::time::sleep(HEALTH_WATCH_POLL).await;
            let Ok(Some(info)) = self.inspect(id).await else { continue };
            let state = info.state.unwrap_or_default();
            let health = state.health.unwrap_or_default();
            if state.running == Some(true) && health.status == Some(HealthStatusEnum::UNHEALTHY) {
                return unhealthy_error(&name, health.log.as_deref());
            }
        }
    }

    async fn exit_code_of(&self, summary: &ContainerSummary) -> Option<i64> {
        if !matches!(summary.state, Some(ContainerSummaryStateEnum::EXITED | ContainerSummaryStateEnum::DEAD)) {
            return None;
        }
        if let Some(code) = summary.status.as_deref().and_then(parse_exit_status) {
            return Some(code);
        }
        let id = summary.id.as_deref()?;
        self.inspect(id).await.ok().flatten()?.state?.exit_code
    }
}

#[async_trait::async_trait]
impl Executor for DockerExecutor {
    async fn describe(&self) -> Result<NodeResources, ExecError> {
        let info = self.docker.info().await.map_err(|e| engine_error("reading Docker engine info", e))?;
        let engine_labels = info
            .labels
            .unwrap_or_default()
            .into_iter()
            .map(|l| match l.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (l, String::new()),
            })
            .collect();
        Ok(NodeResources {
            hostname: info.name.unwrap_or_default(),
            nano_cpus: u64::try_from(info.ncpu.unwrap_or(0)).unwrap_or(0) * 1_000_000_000,
            memory_bytes: u64::try_from(info.mem_total.unwrap_or(0)).unwrap_or(0),
            engine_labels,
            os: info.os_type.unwrap_or_default(),
            arch: info.architecture.unwrap_or_default(),
            engine_version: info.server_version.unwrap_or_default(),
        })
    }

    async fn prepare(&self, plan: &TaskPlan) -> Result<String, ExecError> {
        if let Some(made) = self.made.lock().get(&plan.task_id) {
            return Ok(made.id.clone());
        }
        if let Some(adopted) = plan.adopted_task() {
            if let Some(id) = self.adopt(plan, adopted).await? {
                return Ok(id);
            }
            tracing::info!(task = %plan.task_id, adopted, "the stopped container to restart is gone; creating one");
        }
        // No lookup first: the container's name is the task's, so one made earlier (before an
        // agent restart) makes the create fail with 409, handled below.
        let image = &plan.container.image;
        if image.is_empty() {
            return Err(ExecError::Fatal(format!("task {} has no image", plan.task_id)));
        }
        let (image_checks_health, image_exposed) = match self.docker.inspect_image(image).await {
            Ok(info) => (
                has_healthcheck(info.config.as_ref().and_then(|c| c.healthcheck.as_ref())),
                tcp_ports(info.config.as_ref().and_then(|c| c.exposed_ports.as_ref())),
            ),
            Err(e) if status(&e) == Some(404) => return Err(ExecError::ImageNotFound(image.clone())),
            Err(e) => return Err(engine_error(&format!("inspecting image {image}"), e)),
        };
        let name = container_name(plan);
        let opts = CreateContainerOptionsBuilder::default().name(&name).build();
        let mut body = container_body(plan, &self.node_id);
        crate::mapping::publish_ingress(&mut body, plan, &image_exposed, self.ingress_host_ip.as_deref());
        if !plan.files.is_empty() {
            let Some(dir) = &self.files_dir else {
                return Err(ExecError::Fatal("this agent has no directory for secrets and configs".into()));
            };
            let mounts = crate::files::write(dir, &plan.task_id, &plan.files)?;
            body.host_config.get_or_insert_with(Default::default).mounts.get_or_insert_with(Vec::new).extend(mounts);
        }
        match self.docker.create_container(Some(opts), body).await {
            Ok(created) => {
                for warning in &created.warnings {
                    tracing::warn!(container = %name, "{warning}");
                }
                let made = Made {
                    id: created.id.clone(),
                    may_check_health: image_checks_health || plan.container.healthcheck.is_some(),
                    start_called: false,
                    started: false,
                };
                self.made.lock().insert(plan.task_id.clone(), made);
                Ok(created.id)
            }
            // The image went away between the check and the create.
            Err(e) if status(&e) == Some(404) => Err(ExecError::ImageNotFound(image.clone())),
            // Name taken: ours (a concurrent prepare) or a stranger's.
            Err(e) if status(&e) == Some(409) => match self.find(&plan.task_id).await?.and_then(|c| c.id) {
                Some(id) => Ok(id),
                None => Err(engine_error(&format!("creating container {name}"), e)),
            },
            Err(e) => Err(engine_error(&format!("creating container {name}"), e)),
        }
    }

    async fn start(&self, plan: &TaskPlan) -> Result<(), ExecError> {
        let name = container_name(plan);
        let made = self.made.lock().get_mut(&plan.task_id).and_then(|made| {
            let first = !made.start_called;
            made.start_called = true;
            first.then(|| made.clone())
        });
        if let Some(made) = made {
            let started = self.docker.start_container(&made.id, None::<StartContainerOptions>).await;
            if started.is_ok()
                && let Some(made) = self.made.lock().get_mut(&plan.task_id)
            {
                made.started = true;
            }
            match started {
                Ok(()) if made.may_check_health => return self.healthy_after_start(plan, &made.id).await,
                Ok(()) => return Ok(()),
                // Gone or changed behind our back: the lookup below decides.
                Err(e) if matches!(status(&e), Some(304 | 404)) => {}
                Err(e) => return Err(engine_error(&format!("starting container {name}"), e)),
            }
        }
        let Some(summary) = self.find_for(plan).await? else {
            return Err(ExecError::Fatal(format!("container {name} does not exist (it must be prepared first)")));
        };
        let id = summary.id.unwrap_or_default();
        // Like Swarm: a container that has ever been started is not started again; one adopted
        // (restarted in place) is started once more if it has not run since it was stopped.
        if summary.state != Some(ContainerSummaryStateEnum::CREATED) && !self.to_restart(plan, &id).await? {
            return Ok(());
        }
        self.docker
            .start_container(&id, None::<StartContainerOptions>)
            .await
            .map_err(|e| engine_error(&format!("starting container {name}"), e))?;
        self.healthy_after_start(plan, &id).await
    }

    async fn wait(&self, plan: &TaskPlan) -> Result<ExitStatus, ExecError> {
        let name = container_name(plan);
        let known = self.made.lock().get(&plan.task_id).filter(|m| m.start_called).cloned();
        if let Some(made) = &known
            && made.started
            && !made.may_check_health
        {
            // Started by this executor and no health check can apply: nothing to inspect. Each
            // inspect is another engine call while an all-at-once update is still starting the
            // rest of its containers.
            return self.wait_exit(&made.id, &name, "not-running").await;
        }
        let id = match known.map(|made| made.id) {
            Some(id) => id,
            None => {
                let Some(summary) = self.find_for(plan).await? else { return Err(container_gone(&name)) };
                summary.id.unwrap_or_default()
            }
        };
        let Some(info) = self.inspect(&id).await? else { return Err(container_gone(&name)) };
        let state = info.state.unwrap_or_default();
        // "not-running" returns at once for a created container; wait for its first run instead.
        let condition =
            if state.status == Some(ContainerStateStatusEnum::CREATED) { "next-exit" } else { "not-running" };
        let exited = self.wait_exit(&id, &name, condition);
        let watches_health =
            state.running == Some(true) && has_healthcheck(info.config.as_ref().and_then(|c| c.healthcheck.as_ref()));
        if !watches_health {
            return exited.await;
        }
        let unhealthy = tokio::select! {
            result = exited => return result,
            err = self.watch_unhealthy(plan, &id) => err,
        };
        if let Err(stop_err) = self.stop(&id, &name, plan.container.stop_grace_period.as_std()).await {
            tracing::warn!(container = %name, error = %stop_err, "stopping unhealthy container failed");
        }
        Err(unhealthy)
    }

    async fn shutdown(&self, plan: &TaskPlan) -> Result<(), ExecError> {
        let name = container_name(plan);
        let grace = plan.container.stop_grace_period.as_std();
        // The container this executor made: stop it without a lookup (the engine answers 304 for
        // one that is not running). An all-at-once stop-first update stops every old container
        // at once, on an engine busy creating the new ones. Gone from the engine: a container
        // made behind our back may still carry the task's label, so look.
        let made = self.made.lock().get(&plan.task_id).map(|made| made.id.clone());
        if let Some(id) = made
            && self.stop(&id, &name, grace).await?
        {
            return Ok(());
        }
        let Some(summary) = self.find_for(plan).await? else { return Ok(()) };
        let running = matches!(
            summary.state,
            Some(
                ContainerSummaryStateEnum::RUNNING
                    | ContainerSummaryStateEnum::PAUSED
                    | ContainerSummaryStateEnum::RESTARTING
            )
        );
        if !running {
            return Ok(());
        }
        let id = summary.id.unwrap_or_default();
        self.stop(&id, &name, grace).await.map(|_| ())
    }

    async fn remove_files(&self, task_id: &str) -> Result<(), ExecError> {
        match &self.files_dir {
            Some(dir) => crate::files::remove(dir, task_id),
            None => Ok(()),
        }
    }

    async fn remove(&self, task_id: &str) -> Result<(), ExecError> {
        if let Err(e) = self.remove_files(task_id).await {
            tracing::warn!(task = %task_id, error = %e, "removing the task's secret and config files failed");
        }
        self.made.lock().remove(task_id);
        for summary in self.list_summaries(Some(task_id)).await? {
            let Some(id) = summary.id else { continue };
            // A task that adopted it may know it by its own id.
            self.made.lock().retain(|_, made| made.id != id);
            let opts = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
            match self.docker.remove_container(&id, Some(opts)).await {
                Ok(()) => {}
                // 404: already gone; 409: a removal is already in progress.
                Err(e) if matches!(status(&e), Some(404 | 409)) => {}
                Err(e) => return Err(engine_error(&format!("removing container of task {task_id}"), e)),
            }
        }
        Ok(())
    }

    async fn ports(&self, plan: &TaskPlan) -> Result<Vec<shoal_types::TaskPort>, ExecError> {
        if plan.ingress_targets.is_empty() && !plan.networked {
            return Ok(Vec::new());
        }
        let hint = self.made.lock().get(&plan.task_id).map(|m| m.id.clone());
        let id = match hint {
            Some(id) => id,
            None => match self.find_for(plan).await? {
                Some(summary) => summary.id.unwrap_or_default(),
                None => {
                    let name = container_name(plan);
                    return Err(ExecError::Fatal(format!("container {name} does not exist")));
                }
            },
        };
        let info = self
            .docker
            .inspect_container(&id, None::<InspectContainerOptions>)
            .await
            .map_err(|e| engine_error(&format!("inspecting container {id}"), e))?;
        let settings = info.network_settings.unwrap_or_default();
        let container_ip = settings
            .networks
            .as_ref()
            .and_then(|n| n.values().find_map(|e| e.ip_address.clone().filter(|ip| !ip.is_empty())));
        let published = settings.ports.unwrap_or_default();
        // A task on a network: every TCP port published for it (its image's exposed ones too).
        let mut targets = plan.ingress_targets.clone();
        if plan.networked {
            targets.extend(published.keys().filter_map(|key| key.strip_suffix("/tcp")?.parse::<u16>().ok()));
            targets.sort_unstable();
            targets.dedup();
        }
        Ok(targets
            .iter()
            .map(|target| {
                let host_port = published
                    .get(&format!("{target}/tcp"))
                    .and_then(|bindings| bindings.as_ref())
                    .and_then(|bindings| bindings.iter().find_map(|b| b.host_port.as_deref()?.parse::<u16>().ok()))
                    .unwrap_or(0);
                shoal_types::TaskPort {
                    target: *target,
                    host_port,
                    container_ip: container_ip.clone().unwrap_or_default(),
                }
            })
            .collect())
    }

    async fn list(&self) -> Result<Vec<ContainerInfo>, ExecError> {
        let mut out = Vec::new();
        for summary in self.list_summaries(None).await? {
            let Some(container_id) = summary.id.clone() else { continue };
            let labels: BTreeMap<String, String> = summary.labels.clone().unwrap_or_default().into_iter().collect();
            let exit_code = self.exit_code_of(&summary).await;
            out.push(ContainerInfo {
                task_id: labels.get(LABEL_TASK_ID).cloned().unwrap_or_default(),
                container_id,
                running: summary.state == Some(ContainerSummaryStateEnum::RUNNING),
                exit_code,
                labels,
            });
        }
        out.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        Ok(out)
    }

    async fn logs(&self, task_id: &str, options: LogOptions) -> Result<Option<LogStream>, ExecError> {
        let Some(id) = self.find(task_id).await?.and_then(|c| c.id) else { return Ok(None) };
        let tail = options.tail.map_or_else(|| "all".to_string(), |n| n.to_string());
        // The engine takes whole seconds; the lines of the second before `since` are dropped here.
        let since_secs = i32::try_from(options.since_unix_nanos.max(0) / 1_000_000_000).unwrap_or(i32::MAX);
        let opts = LogsOptionsBuilder::default()
            .follow(options.follow)
            .stdout(true)
            .stderr(true)
            .timestamps(true)
            .tail(&tail)
            .since(since_secs)
            .build();
        let since = options.since_unix_nanos;
        let lines = self.docker.logs(&id, Some(opts)).filter_map(move |frame| {
            std::future::ready(match frame {
                Ok(output) => log_entry(output).filter(|entry| entry.time_unix_nanos >= since).map(Ok),
                Err(e) if status(&e) == Some(404) => None,
                Err(e) => Some(Err(engine_error("reading container logs", e))),
            })
        });
        Ok(Some(lines.boxed()))
    }

    fn events(&self) -> BoxStream<'static, ContainerEvent> {
        let state = EventsState {
            docker: self.docker.clone(),
            node_id: self.node_id.clone(),
            since: now_nanos(),
            inner: None,
            broken: false,
            backoff: EVENTS_BACKOFF_MIN,
        };
        futures::stream::unfold(state, |mut st| async move {
            let event = st.next_event().await;
            Some((event, st))
        })
        .boxed()
    }
}

struct EventsState {
    docker: Docker,
    node_id: String,
    /// Nanoseconds since the epoch to ask the engine for events from when (re)connecting.
    since: i128,
    inner: Option<BoxStream<'static, Result<EventMessage, DockerError>>>,
    broken: bool,
    backoff: Duration,
}

impl EventsState {
    async fn next_event(&mut self) -> ContainerEvent {
        loop {
            let inner = match &mut self.inner {
                Some(inner) => inner,
                None => {
                    let reconnecting = self.broken;
                    if reconnecting {
                        tokio::time::sleep(self.backoff).await;
                        self.backoff = (self.backoff * 2).min(EVENTS_BACKOFF_MAX);
                        if self.docker.ping().await.is_err() {
                            continue;
                        }
                        self.broken = false;
                    }
                    let filters = HashMap::from([
                        ("type".to_string(), vec!["container".to_string()]),
                        ("label".to_string(), vec![format!("{LABEL_NODE_ID}={}", self.node_id)]),
                        (
                            "event".to_string(),
                            ["start", "die", "oom", "health_status", "destroy"].map(String::from).to_vec(),
                        ),
                    ]);
                    let since =
                        format!("{}.{:09}", self.since.div_euclid(1_000_000_000), self.since.rem_euclid(1_000_000_000));
                    let opts = EventsOptionsBuilder::default().since(&since).filters(&filters).build();
                    self.inner = Some(self.docker.events(Some(opts)).boxed());
                    if reconnecting {
                        return ContainerEvent::Resync;
                    }
                    continue;
                }
            };
            match inner.next().await {
                Some(Ok(msg)) => {
                    self.backoff = EVENTS_BACKOFF_MIN;
                    if let Some(nanos) = msg.time_nano.or(msg.time.map(|s| s.saturating_mul(1_000_000_000))) {
                        // The engine replays events at or after `since`; skip the one we have.
                        self.since = self.since.max(i128::from(nanos) + 1);
                    }
                    if let Some(event) = convert_event(&msg, &self.node_id) {
                        return event;
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "Docker events stream failed; reconnecting");
                    self.inner = None;
                    self.broken = true;
                }
                None => {
                    tracing::info!("Docker events stream ended; reconnecting");
                    self.inner = None;
                    self.broken = true;
                }
            }
        }
    }
}

fn convert_event(msg: &EventMessage, node_id: &str) -> Option<ContainerEvent> {
    if msg.typ != Some(EventMessageTypeEnum::CONTAINER) {
        return None;
    }
    let actor = msg.actor.as_ref()?;
    let attrs = actor.attributes.as_ref()?;
    if attrs.get(LABEL_NODE_ID).map(String::as_str) != Some(node_id) {
        return None;
    }
    let task_id = attrs.get(LABEL_TASK_ID)?.clone();
    let container_id = actor.id.clone().unwrap_or_default();
    let action = msg.action.as_deref()?;
    Some(match action {
        "start" => ContainerEvent::Started { task_id, container_id },
        "die" => ContainerEvent::Died {
            task_id,
            container_id,
            exit_code: attrs.get("exitCode").and_then(|c| c.parse().ok()),
        },
        "oom" => ContainerEvent::Oom { task_id, container_id },
        "destroy" => ContainerEvent::Destroyed { task_id, container_id },
        "health_status: healthy" => ContainerEvent::Health { task_id, container_id, healthy: true },
        "health_status: unhealthy" => ContainerEvent::Health { task_id, container_id, healthy: false },
        _ => return None,
    })
}

/// Docker's RFC 3339 UTC time (`2026-12-06T23:40:01.123456789Z`) in milliseconds since the epoch.
fn rfc3339_millis(text: &str) -> Option<u64> {
    u64::try_from(rfc3339_nanos(text)? / 1_000_000).ok()
}

/// The same in nanoseconds; `None` before 1970 or if it is not such a time.
fn rfc3339_nanos(text: &str) -> Option<i64> {
    let (date, time) = text.trim_end_matches('Z').split_once('T')?;
    let mut ymd = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (ymd.next()??, ymd.next()??, ymd.next()??);
    let (hms, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let mut parts = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (h, min, s) = (parts.next()??, parts.next()??, parts.next()??);
    if fraction.is_empty() || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos: i64 = format!("{fraction:0<9}").get(..9)?.parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = ((days * 24 + h) * 60 + min) * 60 + s;
    if seconds < 0 {
        return None;
    }
    seconds.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// One frame of `docker logs --timestamps`: `<RFC 3339 time> <line>\n`.
fn log_entry(output: bollard::container::LogOutput) -> Option<LogEntry> {
    let (stderr, message) = match output {
        bollard::container::LogOutput::StdErr { message } => (true, message),
        bollard::container::LogOutput::StdOut { message } | bollard::container::LogOutput::Console { message } => {
            (false, message)
        }
        bollard::container::LogOutput::StdIn { .. } => return None,
    };
    let message = message.strip_suffix(b"\n").unwrap_or(&message);
    let (time, data) = match message.iter().position(|b| *b == b' ') {
        Some(space) => (std::str::from_utf8(&message[..space]).ok().and_then(rfc3339_nanos), &message[space + 1..]),
        None => (None, message),
    };
    match time {
        Some(time_unix_nanos) => Some(LogEntry { stderr, time_unix_nanos, data: data.to_vec() }),
        // Not a timestamp: the whole frame is the line.
        None => Some(LogEntry { stderr, time_unix_nanos: 0, data: message.to_vec() }),
    }
}

fn now_nanos() -> i128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i128).unwrap_or(0)
}

/// The HTTP status of an engine refusal.
fn status(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The task's container was removed behind the executor's back.
fn container_gone(name: &str) -> ExecError {
    ExecError::Fatal(format!("container {name} no longer exists"))
}

/// Turns a bollard error into an [`ExecError`]: refusals by the engine are fatal, failures to
/// reach it temporary. The cause comes first and `context` (which names the container, a long
/// `<service>.<slot>.<task id>`) after it, so that `service ps`, which cuts the error column,
/// shows why rather than what (docker's order too).
fn engine_error(context: &str, e: DockerError) -> ExecError {
    match e {
        DockerError::DockerResponseServerError { message, .. } => {
            ExecError::Fatal(format!("{} ({context})", message.trim()))
        }
        DockerError::RequestTimeoutError => {
            ExecError::Temporary(format!("the Docker engine did not answer in time ({context})"))
        }
        DockerError::SocketNotFoundError(path) => {
            ExecError::Temporary(format!("Docker socket {path} not found (is the Docker daemon running?) ({context})"))
        }
        DockerError::IOError { .. }
        | DockerError::HyperResponseError { .. }
        | DockerError::HyperLegacyError { .. }
        | DockerError::HttpClientError { .. } => {
            ExecError::Temporary(format!("cannot reach the Docker engine: {e} ({context})"))
        }
        other => ExecError::Fatal(format!("{other} ({context})")),
    }
}

/// The TCP ports of an image's `EXPOSE` lines (`"80/tcp"`, `"5432"`).
fn tcp_ports(exposed: Option<&Vec<String>>) -> Vec<u16> {
    exposed
        .into_iter()
        .flatten()
        .filter_map(|key| {
            let (port, protocol) = key.split_once('/').unwrap_or((key, "tcp"));
            if protocol == "tcp" { port.parse().ok() } else { None }
        })
        .collect()
}

fn has_healthcheck(hc: Option<&HealthConfig>) -> bool {
    match hc.and_then(|h| h.test.as_deref()) {
        None | Some([]) => false,
        Some([first, ..]) => first != "NONE",
    }
}

fn unhealthy_error(name: &str, log: Option<&[bollard::models::HealthcheckResult]>) -> ExecError {
    let last = log.and_then(|l| l.last());
    let detail = match last {
        Some(probe) => {
            let output = probe.output.as_deref().unwrap_or("").trim();
            let code = probe.exit_code.unwrap_or(-1);
            if output.is_empty() {
                format!(" (health check exited with code {code})")
            } else {
                format!(" (health check exited with code {code}: {output})")
            }
        }
        None => String::new(),
    };
    ExecError::Unhealthy(format!("container {name} is unhealthy{detail}"))
}

/// The exit code in a `docker ps` status such as `Exited (3) 2 seconds ago`.
fn parse_exit_status(status: &str) -> Option<i64> {
    let rest = status.strip_prefix("Exited (")?;
    rest.split_once(')')?.0.parse().ok()
}

#[cfg(test)]
mod tests {
    use bollard::models::EventActor;

    use super::*;

    #[test]
    fn docker_times_are_read_as_epoch_milliseconds() {
        assert_eq!(rfc3339_millis("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339_millis("2026-12-06T23:40:01.123456789Z"), Some(1_796_600_401_123));
        assert_eq!(rfc3339_millis("2000-02-29T12:00:00.5Z"), Some(951_825_600_500));
        assert_eq!(rfc3339_millis("0001-01-01T00:00:00Z"), None, "Docker's zero time: never started");
        assert_eq!(rfc3339_millis("yesterday"), None);
        assert_eq!(rfc3339_nanos("2026-12-06T23:40:01.123456789Z"), Some(1_796_600_401_123_456_789));
        assert_eq!(rfc3339_nanos("2026-12-06T23:40:01Z"), Some(1_796_600_401_000_000_000));
        assert_eq!(rfc3339_nanos("2026-12-06T23:40:01.Z"), None);
    }

    #[test]
    fn exit_status_text_is_parsed() {
        assert_eq!(parse_exit_status("Exited (3) 2 seconds ago"), Some(3));
        assert_eq!(parse_exit_status("Exited (0) About a minute ago"), Some(0));
        assert_eq!(parse_exit_status("Exited (137) 1 hour ago"), Some(137));
        assert_eq!(parse_exit_status("Up 3 seconds"), None);
        assert_eq!(parse_exit_status("Created"), None);
    }

    #[test]
    fn healthcheck_detection() {
        let hc = |test: &[&str]| HealthConfig {
            test: Some(test.iter().map(|s| s.to_string()).collect()),
            ..HealthConfig::default()
        };
        assert!(!has_healthcheck(None));
        assert!(!has_healthcheck(Some(&HealthConfig::default())));
        assert!(!has_healthcheck(Some(&hc(&[]))));
        assert!(!has_healthcheck(Some(&hc(&["NONE"]))));
        assert!(has_healthcheck(Some(&hc(&["CMD", "/bin/true"]))));
        assert!(has_healthcheck(Some(&hc(&["CMD-SHELL", "true"]))));
    }

    fn msg(action: &str, attrs: &[(&str, &str)]) -> EventMessage {
        EventMessage {
            typ: Some(EventMessageTypeEnum::CONTAINER),
            action: Some(action.into()),
            actor: Some(EventActor {
                id: Some("c1".into()),
                attributes: Some(attrs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            }),
            ..EventMessage::default()
        }
    }

    #[test]
    fn events_are_converted() {
        let ours = [(LABEL_NODE_ID, "n1"), (LABEL_TASK_ID, "t1"), ("exitCode", "137")];
        assert_eq!(
            convert_event(&msg("die", &ours), "n1"),
            Some(ContainerEvent::Died { task_id: "t1".into(), container_id: "c1".into(), exit_code: Some(137) })
        );
        assert_eq!(
            convert_event(&msg("start", &ours), "n1"),
            Some(ContainerEvent::Started { task_id: "t1".into(), container_id: "c1".into() })
        );
        assert_eq!(
            convert_event(&msg("health_status: unhealthy", &ours), "n1"),
            Some(ContainerEvent::Health { task_id: "t1".into(), container_id: "c1".into(), healthy: false })
        );
        assert_eq!(
            convert_event(&msg("destroy", &ours), "n1"),
            Some(ContainerEvent::Destroyed { task_id: "t1".into(), container_id: "c1".into() })
        );
        assert_eq!(convert_event(&msg("health_status: starting", &ours), "n1"), None);
        assert_eq!(convert_event(&msg("die", &ours), "n2"), None, "another node's container");
        assert_eq!(convert_event(&msg("die", &[(LABEL_NODE_ID, "n1")]), "n1"), None, "not a task");
    }

    #[test]
    fn engine_errors_are_classified() {
        let refused = DockerError::DockerResponseServerError { status_code: 500, message: "boom\n".into() };
        // The cause first (issue 21: `service ps` cuts the column and hid it behind the name).
        assert_eq!(
            engine_error("starting container x", refused),
            ExecError::Fatal("boom (starting container x)".into())
        );
        assert!(engine_error("x", DockerError::RequestTimeoutError).is_temporary());
        let missing = engine_error("connecting", DockerError::SocketNotFoundError("/nope.sock".into()));
        assert!(missing.is_temporary());
        assert!(missing.to_string().contains("/nope.sock"), "{missing}");
    }
}
