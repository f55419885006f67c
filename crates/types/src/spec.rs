//! Desired-state specifications. Defaults are Swarm's (swarm-semantics §0), applied when a field
//! is omitted, so `inspect` always shows the values that are in force.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::constraint::{Constraint, PlacementPreference};
use crate::duration::GoDuration;
use crate::rollout::{CanaryStep, OldTasks, Quantity, RolloutStrategy};

pub type Labels = BTreeMap<String, String>;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub name: String,
    #[serde(default)]
    pub labels: Labels,
    #[serde(default)]
    pub mode: ServiceMode,
    pub task: TaskSpec,
    #[serde(default)]
    pub update_config: UpdateConfig,
    #[serde(default)]
    pub rollback_config: UpdateConfig,
    #[serde(default)]
    pub endpoint: EndpointSpec,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum ServiceMode {
    Replicated {
        replicas: u64,
    },
    Global,
    /// Swarm's replicated job: tasks run to completion (never restarted after exit 0) until
    /// `total_completions` of them have completed, at most `max_concurrent` at a time. Every
    /// update of the service starts the job again (Swarm's JobIteration: here the spec version).
    #[serde(rename = "replicated_job")]
    ReplicatedJob {
        total_completions: u64,
        max_concurrent: u64,
    },
    /// Swarm's global job: one task run to completion on every eligible node, once per update.
    #[serde(rename = "global_job")]
    GlobalJob,
}

impl Default for ServiceMode {
    fn default() -> Self {
        ServiceMode::Replicated { replicas: 1 }
    }
}

impl ServiceMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            ServiceMode::Replicated { .. } => "replicated",
            ServiceMode::Global => "global",
            ServiceMode::ReplicatedJob { .. } => "replicated-job",
            ServiceMode::GlobalJob => "global-job",
        }
    }

    /// Jobs run their tasks to completion and are never rolled by the updater.
    pub fn is_job(&self) -> bool {
        matches!(self, ServiceMode::ReplicatedJob { .. } | ServiceMode::GlobalJob)
    }

    /// One task per eligible node (global services and global jobs).
    pub fn is_global(&self) -> bool {
        matches!(self, ServiceMode::Global | ServiceMode::GlobalJob)
    }
}

/// Everything that shapes a task. A change here (and only here) makes running tasks out of date.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    pub container: ContainerSpec,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    #[serde(default)]
    pub placement: Placement,
    /// Bumped by `service update --force` so every task is replaced even if nothing else changed.
    #[serde(default)]
    pub force_update: u64,
    /// The shoal networks the tasks are on (`--network`): they reach the services of these
    /// networks by name, through their node's proxy, and are reached by theirs. A change
    /// replaces the tasks, as their host entries are set when their containers are made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    pub image: String,
    /// Overrides the image's entrypoint (docker's `--entrypoint`; compose `entrypoint`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Overrides the image's CMD (the arguments after the image on `service create`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// `KEY=VALUE` entries, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Labels put on the container (docker's `--container-label`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    #[serde(default = "default_stop_grace_period")]
    pub stop_grace_period: GoDuration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// How long a task that receives ingress traffic may keep its open connections once told to
    /// stop, before it is stopped anyway (`--stop-drain-timeout`); `None`: one minute, like
    /// KraftCloud; zero: no draining.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_drain_timeout: Option<GoDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthConfig>,
    /// Bind mounts, volumes and tmpfs (docker's `--mount`; compose `volumes`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<crate::Mount>,
    /// Secrets mounted as files (docker's `--secret`; compose `secrets`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<crate::DataReference>,
    /// Configs mounted as files (docker's `--config`; compose `configs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<crate::DataReference>,
}

/// The drain timeout of a task whose spec does not set one.
pub const DEFAULT_STOP_DRAIN_TIMEOUT: GoDuration = GoDuration::from_secs(60);

impl ContainerSpec {
    /// How long the task's open ingress connections may last once it is told to stop.
    pub fn drain_timeout(&self) -> std::time::Duration {
        self.stop_drain_timeout.unwrap_or(DEFAULT_STOP_DRAIN_TIMEOUT).as_std()
    }

    /// The secrets and configs the container uses, with their kind.
    pub fn data_references(&self) -> impl Iterator<Item = (crate::DataKind, &crate::DataReference)> {
        let secrets = self.secrets.iter().map(|r| (crate::DataKind::Secret, r));
        secrets.chain(self.configs.iter().map(|r| (crate::DataKind::Config, r)))
    }
}

impl Default for ContainerSpec {
    fn default() -> Self {
        ContainerSpec {
            image: String::new(),
            command: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
            labels: Labels::new(),
            hostname: None,
            user: None,
            workdir: None,
            stop_grace_period: default_stop_grace_period(),
            stop_signal: None,
            stop_drain_timeout: None,
            healthcheck: None,
            mounts: Vec::new(),
            secrets: Vec::new(),
            configs: Vec::new(),
        }
    }
}

fn default_stop_grace_period() -> GoDuration {
    GoDuration::from_secs(10)
}

/// A container health check. `test` follows Docker: `["NONE"]` disables the image's check,
/// `["CMD-SHELL", cmd]` runs through a shell, `["CMD", exe, args…]` runs directly.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    #[serde(default)]
    pub test: Vec<String>,
    #[serde(default)]
    pub interval: GoDuration,
    #[serde(default)]
    pub timeout: GoDuration,
    #[serde(default)]
    pub retries: u32,
    #[serde(default)]
    pub start_period: GoDuration,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    #[serde(default)]
    pub limits: ResourceAmounts,
    #[serde(default)]
    pub reservations: ResourceAmounts,
}

/// CPU in nano-CPUs (1e9 = one core) and memory in bytes, as the Engine API counts them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceAmounts {
    #[serde(default)]
    pub nano_cpus: u64,
    #[serde(default)]
    pub memory_bytes: u64,
    /// Only meaningful as a limit.
    #[serde(default)]
    pub pids: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartCondition {
    None,
    OnFailure,
    #[default]
    Any,
}

impl RestartCondition {
    pub fn as_str(self) -> &'static str {
        match self {
            RestartCondition::None => "none",
            RestartCondition::OnFailure => "on-failure",
            RestartCondition::Any => "any",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartPolicy {
    #[serde(default)]
    pub condition: RestartCondition,
    #[serde(default = "default_restart_delay")]
    pub delay: GoDuration,
    /// 0 means unlimited.
    #[serde(default)]
    pub max_attempts: u64,
    /// 0 means unbounded.
    #[serde(default)]
    pub window: GoDuration,
}

fn default_restart_delay() -> GoDuration {
    GoDuration::from_secs(5)
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            condition: RestartCondition::Any,
            delay: default_restart_delay(),
            max_attempts: 0,
            window: GoDuration::ZERO,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<Constraint>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferences: Vec<PlacementPreference>,
    /// 0 means unlimited.
    #[serde(default)]
    pub max_replicas_per_node: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureAction {
    #[default]
    Pause,
    Continue,
    Rollback,
}

impl FailureAction {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureAction::Pause => "pause",
            FailureAction::Continue => "continue",
            FailureAction::Rollback => "rollback",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    #[default]
    StopFirst,
    StartFirst,
}

impl UpdateOrder {
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateOrder::StopFirst => "stop-first",
            UpdateOrder::StartFirst => "start-first",
        }
    }
}

/// How a rolling update (or a rollback) proceeds. Defaults: 1 / 0s / pause / 5s / 0 / stop-first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateConfig {
    /// Slots replaced at once; 0 means all at once.
    #[serde(default = "one")]
    pub parallelism: u64,
    #[serde(default)]
    pub delay: GoDuration,
    #[serde(default)]
    pub failure_action: FailureAction,
    #[serde(default = "default_monitor")]
    pub monitor: GoDuration,
    #[serde(default)]
    pub max_failure_ratio: f32,
    #[serde(default)]
    pub order: UpdateOrder,
    /// Rolling (the default) or recreate.
    #[serde(default, skip_serializing_if = "RolloutStrategy::is_rolling")]
    pub strategy: RolloutStrategy,
    /// Kubernetes' maxSurge: tasks beyond the replicas while rolling. With `max_unavailable`,
    /// replaces `parallelism` and `order` (either given alone means 25% for the other).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<Quantity>,
    /// Kubernetes' maxUnavailable: replicas that may be unavailable while rolling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<Quantity>,
    /// Canary steps (OpenKruise): the update moves step by step, pausing between them; the last
    /// is 100%. Empty: one go. Never used by a rollback.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<CanaryStep>,
    /// What happens to the containers of the tasks the rollout replaced.
    #[serde(default, skip_serializing_if = "OldTasks::is_stop")]
    pub old_tasks: OldTasks,
    /// Every out-of-date slot's new task is placed and its container created (READY, not
    /// started) when the rollout starts, so each slot's turn costs only the old task's stop and
    /// the new one's start. Off by default: `service ps` and `docker ps -a` then show every new
    /// task at once, which Swarm users do not expect.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prepare_ahead: bool,
}

impl UpdateConfig {
    /// The surge and unavailability budget when the rollout is budgeted (Kubernetes'
    /// RollingUpdate), each 25% unless given.
    pub fn budget(&self) -> Option<(Quantity, Quantity)> {
        if self.max_surge.is_none() && self.max_unavailable.is_none() {
            return None;
        }
        let quarter = Quantity::Percent(25);
        Some((self.max_surge.unwrap_or(quarter), self.max_unavailable.unwrap_or(quarter)))
    }
}

fn one() -> u64 {
    1
}

fn default_monitor() -> GoDuration {
    GoDuration::from_secs(5)
}

impl Default for UpdateConfig {
    fn default() -> Self {
        UpdateConfig {
            parallelism: 1,
            delay: GoDuration::ZERO,
            failure_action: FailureAction::Pause,
            monitor: default_monitor(),
            max_failure_ratio: 0.0,
            order: UpdateOrder::StopFirst,
            strategy: RolloutStrategy::Rolling,
            max_surge: None,
            max_unavailable: None,
            steps: Vec::new(),
            old_tasks: OldTasks::Stop,
            prepare_ahead: false,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndpointMode {
    #[default]
    Vip,
    Dnsrr,
}

impl EndpointMode {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointMode::Vip => "vip",
            EndpointMode::Dnsrr => "dnsrr",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    #[serde(default)]
    pub mode: EndpointMode,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortConfig>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortProtocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

impl PortProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            PortProtocol::Tcp => "tcp",
            PortProtocol::Udp => "udp",
            PortProtocol::Sctp => "sctp",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    #[default]
    Ingress,
    Host,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    pub target: u16,
    /// 0 lets the cluster choose (ingress) or leaves the port unpublished.
    #[serde(default)]
    pub published: u16,
    #[serde(default)]
    pub protocol: PortProtocol,
    #[serde(default)]
    pub mode: PublishMode,
}

impl PortConfig {
    /// Whether the cluster's proxies carry this port (a published TCP port in ingress mode).
    pub fn is_ingress(&self) -> bool {
        self.is_reachable() && self.published != 0
    }

    /// Whether the cluster's proxies can reach the target port: an ingress-mode TCP port,
    /// published on every node or not (`-p 80`: for routes only).
    pub fn is_reachable(&self) -> bool {
        self.mode == PublishMode::Ingress && self.protocol == PortProtocol::Tcp
    }
}

impl ServiceSpec {
    /// A replicated service with one replica of `image` and every other field at its default.
    pub fn new(name: impl Into<String>, image: impl Into<String>) -> Self {
        ServiceSpec {
            name: name.into(),
            labels: Labels::new(),
            mode: ServiceMode::default(),
            task: TaskSpec {
                container: ContainerSpec { image: image.into(), ..ContainerSpec::default() },
                ..TaskSpec::default()
            },
            update_config: UpdateConfig::default(),
            rollback_config: UpdateConfig::default(),
            endpoint: EndpointSpec::default(),
        }
    }

    pub fn replicas(&self) -> Option<u64> {
        match self.mode {
            ServiceMode::Replicated { replicas } => Some(replicas),
            ServiceMode::ReplicatedJob { total_completions, .. } => Some(total_completions),
            ServiceMode::Global | ServiceMode::GlobalJob => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn omitted_fields_take_swarm_defaults() {
        let spec: ServiceSpec =
            serde_json::from_str(r#"{"name":"web","task":{"container":{"image":"busybox"}}}"#).unwrap();
        assert_eq!(spec, ServiceSpec::new("web", "busybox"));
        assert_eq!(spec.mode, ServiceMode::Replicated { replicas: 1 });
        let update = &spec.update_config;
        assert_eq!(update.parallelism, 1);
        assert_eq!(update.delay, GoDuration::ZERO);
        assert_eq!(update.failure_action, FailureAction::Pause);
        assert_eq!(update.monitor, GoDuration::from_secs(5));
        assert_eq!(update.max_failure_ratio, 0.0);
        assert_eq!(update.order, UpdateOrder::StopFirst);
        assert_eq!(spec.rollback_config, UpdateConfig::default());
        let restart = &spec.task.restart_policy;
        assert_eq!(restart.condition, RestartCondition::Any);
        assert_eq!(restart.delay, GoDuration::from_secs(5));
        assert_eq!(restart.max_attempts, 0);
        assert_eq!(restart.window, GoDuration::ZERO);
        assert_eq!(spec.task.container.stop_grace_period, GoDuration::from_secs(10));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<ServiceSpec>(
            r#"{"name":"web","task":{"container":{"image":"busybox","imagee":"x"}}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `imagee`"), "{err}");
    }

    #[test]
    fn round_trips_through_json() {
        let mut spec = ServiceSpec::new("web", "busybox");
        spec.mode = ServiceMode::Global;
        spec.update_config.order = UpdateOrder::StartFirst;
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<ServiceSpec>(&json).unwrap(), spec);
    }
}
