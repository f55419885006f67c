//! The agent's side of the container runtime.
//!
//! [`Executor`] is what an agent needs from a container engine to run shoal tasks, following
//! Swarm's controller steps (swarm-semantics §1.3): `prepare` (create, never pull), `start` (and
//! wait until healthy), `wait`, `shutdown` (graceful stop), `remove`, plus `list`/`events` to adopt
//! and watch containers after an agent restart or behind its back.
//!
//! Two implementations: [`DockerExecutor`] talks to a Docker engine through bollard, and
//! [`FakeExecutor`] keeps containers in memory for other crates' tests.
//!
//! Several agents may share one engine (tests, local clusters), so every container carries the
//! node's id in the [`LABEL_NODE_ID`] label and every lookup filters on it.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use futures::stream::BoxStream;

pub mod docker;
pub mod fake;
pub mod files;
pub mod mapping;

pub use docker::DockerExecutor;
pub use fake::{FakeExecutor, FakeOp, FakeStatus};
pub use mapping::{container_body, container_labels, container_name};

/// Label keys put on every container shoal creates.
pub const LABEL_SERVICE_ID: &str = "org.shoal.service.id";
pub const LABEL_SERVICE_NAME: &str = "org.shoal.service.name";
pub const LABEL_TASK_ID: &str = "org.shoal.task.id";
pub const LABEL_TASK_SLOT: &str = "org.shoal.task.slot";
pub const LABEL_NODE_ID: &str = "org.shoal.node.id";

/// Everything the executor needs to run one task (built by the agent from a
/// [`shoal_types::Task`], see [`TaskPlan::from_task`]).
#[derive(Clone, Debug, PartialEq)]
pub struct TaskPlan {
    pub task_id: String,
    pub service_id: String,
    pub service_name: String,
    /// Replica slot from 1; 0 for tasks of global services.
    pub slot: u64,
    pub node_id: String,
    pub container: shoal_types::ContainerSpec,
    pub resources: shoal_types::Resources,
    /// Only `mode: host` ports are published by the executor; others are ignored.
    pub ports: Vec<shoal_types::PortConfig>,
    /// The target ports of the task's ingress ports: published on a host port the engine picks,
    /// where the ingress proxies of other nodes reach them (see [`Executor::ports`]).
    pub ingress_targets: Vec<u16>,
    /// The stopped container of another task to restart instead of creating one (a rollback to
    /// the spec it ran); if it is gone, `prepare` creates the task's own as usual.
    pub adopts: Option<shoal_types::Adoption>,
    /// The task's secrets and configs as files (filled in by the agent from what the leader
    /// sent; never logged).
    pub files: Vec<shoal_types::TaskFile>,
    /// Whether the task is on a shoal network: the ports its image exposes are published too,
    /// so the proxies reach them at its virtual IP.
    pub networked: bool,
    /// `name:address` entries for the container's /etc/hosts: the services of its networks at
    /// their virtual IPs (filled in by the agent from what the leader sent).
    pub extra_hosts: Vec<String>,
}

impl TaskPlan {
    /// The plan for `task` as stored by the managers (its spec, slot, node and endpoint).
    pub fn from_task(task: &shoal_types::Task) -> TaskPlan {
        TaskPlan {
            task_id: task.id.clone(),
            service_id: task.service_id.clone(),
            service_name: task.service_name.clone(),
            slot: task.slot,
            node_id: task.node_id.clone(),
            container: task.spec.container.clone(),
            resources: task.spec.resources.clone(),
            ports: task.endpoint.ports.iter().filter(|p| p.mode == shoal_types::PublishMode::Host).cloned().collect(),
            ingress_targets: {
                let mut targets: Vec<u16> =
                    task.endpoint.ports.iter().filter(|p| p.is_reachable()).map(|p| p.target).collect();
                targets.sort_unstable();
                targets.dedup();
                targets
            },
            adopts: task.adopts.clone(),
            files: Vec::new(),
            networked: !task.spec.networks.is_empty(),
            extra_hosts: Vec::new(),
        }
    }

    /// The task id the container to adopt carries, if any.
    pub fn adopted_task(&self) -> Option<&str> {
        self.adopts.as_ref().map(|a| a.container_task.as_str())
    }
}

/// Why an executor step failed. The agent maps these onto task states: [`ImageNotFound`] and
/// [`Fatal`] before STARTING make the task REJECTED, after it FAILED; [`Unhealthy`] is FAILED;
/// [`Temporary`] is retried.
///
/// [`ImageNotFound`]: ExecError::ImageNotFound
/// [`Fatal`]: ExecError::Fatal
/// [`Unhealthy`]: ExecError::Unhealthy
/// [`Temporary`]: ExecError::Temporary
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    /// The image is not present on the engine. shoal never pulls, so this is fatal.
    #[error("image {0} not found locally (shoal never pulls images)")]
    ImageNotFound(String),
    /// The container's health check failed (the text says which container and the probe output).
    #[error("{0}")]
    Unhealthy(String),
    /// Anything else the engine refused; retrying will not help.
    #[error("{0}")]
    Fatal(String),
    /// The engine could not be reached or timed out; the same step may succeed later.
    #[error("{0}")]
    Temporary(String),
}

impl ExecError {
    /// Whether the step should be retried rather than fail the task.
    pub fn is_temporary(&self) -> bool {
        matches!(self, ExecError::Temporary(_))
    }
}

/// How a container ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitStatus {
    pub code: i64,
}

impl ExitStatus {
    pub fn success(&self) -> bool {
        self.code == 0
    }
}

/// One of this node's containers, as seen by [`Executor::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerInfo {
    pub task_id: String,
    pub container_id: String,
    pub running: bool,
    /// Set once the container has exited (None while created or running).
    pub exit_code: Option<i64>,
    /// All of the container's labels (shoal's `org.shoal.*` ones included).
    pub labels: BTreeMap<String, String>,
}

/// What the node offers, for the node description the agent sends to the managers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeResources {
    pub hostname: String,
    pub nano_cpus: u64,
    pub memory_bytes: u64,
    pub engine_labels: BTreeMap<String, String>,
    /// e.g. `linux`.
    pub os: String,
    /// e.g. `x86_64`.
    pub arch: String,
    pub engine_version: String,
}

impl NodeResources {
    pub fn to_description(&self) -> shoal_types::NodeDescription {
        shoal_types::NodeDescription {
            hostname: self.hostname.clone(),
            nano_cpus: self.nano_cpus,
            memory_bytes: self.memory_bytes,
            engine_labels: self.engine_labels.clone(),
            platform_os: self.os.clone(),
            platform_arch: self.arch.clone(),
            engine_version: self.engine_version.clone(),
            ingress_addr: String::new(),
        }
    }
}

/// Something that happened to one of this node's containers, possibly behind the agent's back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContainerEvent {
    Started {
        task_id: String,
        container_id: String,
    },
    /// The container's process ended (also after our own `shutdown`).
    Died {
        task_id: String,
        container_id: String,
        exit_code: Option<i64>,
    },
    /// The kernel killed a process of the container for lack of memory (a `Died` follows).
    Oom {
        task_id: String,
        container_id: String,
    },
    /// The health check changed to healthy or unhealthy.
    Health {
        task_id: String,
        container_id: String,
        healthy: bool,
    },
    /// The container was removed.
    Destroyed {
        task_id: String,
        container_id: String,
    },
    /// The event stream broke and was re-established (or events were dropped): edges may have
    /// been missed, so the consumer should reconcile with [`Executor::list`].
    Resync,
}

impl ContainerEvent {
    /// The task the event is about (None for [`ContainerEvent::Resync`]).
    pub fn task_id(&self) -> Option<&str> {
        match self {
            ContainerEvent::Started { task_id, .. }
            | ContainerEvent::Died { task_id, .. }
            | ContainerEvent::Oom { task_id, .. }
            | ContainerEvent::Health { task_id, .. }
            | ContainerEvent::Destroyed { task_id, .. } => Some(task_id),
            ContainerEvent::Resync => None,
        }
    }
}

/// What a log read returns (see [`Executor::logs`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep reading while the container runs.
    pub follow: bool,
    /// Only the last this many lines; `None`: all.
    pub tail: Option<u64>,
    /// Only lines at or after this time (Unix nanoseconds); 0: from the start.
    pub since_unix_nanos: i64,
}

/// One line a container wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// Written to standard error (else standard output).
    pub stderr: bool,
    /// When the engine received it (Unix nanoseconds).
    pub time_unix_nanos: i64,
    /// The line without its newline.
    pub data: Vec<u8>,
}

/// A container's log lines, in order.
pub type LogStream = BoxStream<'static, Result<LogEntry, ExecError>>;

/// The agent's interface to a container engine. All methods are safe to call again after a
/// failure or an agent restart (they look the task's container up by label).
#[async_trait::async_trait]
pub trait Executor: Send + Sync + 'static {
    /// The node's hostname, CPUs, memory, engine labels, OS, architecture and engine version.
    async fn describe(&self) -> Result<NodeResources, ExecError>;

    /// Creates the task's container without starting it and returns its id. If the container
    /// already exists it is returned as is. Fails with [`ExecError::ImageNotFound`] (and creates
    /// nothing) when the image is not on the engine: images are never pulled.
    async fn prepare(&self, plan: &TaskPlan) -> Result<String, ExecError>;

    /// Starts the prepared container. A container that was started before is left alone (Ok).
    /// If the container has a health check (its own or its image's), returns only once it is
    /// healthy; [`ExecError::Unhealthy`] if it turns unhealthy (the container is then stopped),
    /// [`ExecError::Fatal`] if it exits first.
    async fn start(&self, plan: &TaskPlan) -> Result<(), ExecError>;

    /// Waits until the container exits and returns its exit code. If the container has a health
    /// check and turns unhealthy meanwhile, stops it and returns [`ExecError::Unhealthy`].
    async fn wait(&self, plan: &TaskPlan) -> Result<ExitStatus, ExecError>;

    /// Stops the container, giving it `stop_grace_period` after the stop signal before it is
    /// killed. A container that is absent or not running is fine.
    async fn shutdown(&self, plan: &TaskPlan) -> Result<(), ExecError>;

    /// Force-removes the task's container (and its anonymous volumes) if there is one, and
    /// its files.
    async fn remove(&self, task_id: &str) -> Result<(), ExecError>;

    /// Removes the files of the task's secrets and configs from the node (the task ended; its
    /// stopped container keeps only the mount points).
    async fn remove_files(&self, task_id: &str) -> Result<(), ExecError>;

    /// This node's containers (running or not).
    async fn list(&self) -> Result<Vec<ContainerInfo>, ExecError>;

    /// Where the started container's ingress ports answer: the host port the engine published
    /// each target port on, and the container's address. Empty when the task has none.
    async fn ports(&self, plan: &TaskPlan) -> Result<Vec<shoal_types::TaskPort>, ExecError> {
        let _ = plan;
        Ok(Vec::new())
    }

    /// The log lines of the container that carries `task_id` (a task's own, or the one a task
    /// restarted in place runs in), or `None` if there is none. Without `follow` the stream ends
    /// after the last line written so far; with it, when the container stops. Lines before
    /// `since` are never yielded.
    async fn logs(&self, task_id: &str, options: LogOptions) -> Result<Option<LogStream>, ExecError>;

    /// Start/die/oom/health/destroy events of this node's containers from now on. The stream
    /// reconnects by itself (yielding [`ContainerEvent::Resync`]) and never ends.
    fn events(&self) -> BoxStream<'static, ContainerEvent>;
}
