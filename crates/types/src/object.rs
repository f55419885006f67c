//! Objects kept in the replicated store. `version` is the raft log index of the object's last
//! change, so every manager assigns the same version and clients use it for optimistic concurrency.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::spec::{EndpointSpec, Labels, ServiceSpec, TaskSpec};
use crate::state::{Availability, NodeRole, NodeState, TaskState};

/// Milliseconds since the Unix epoch, stamped by the proposing manager so every replica agrees.
pub type Timestamp = u64;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub id: String,
    pub version: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub spec: ServiceSpec,
    /// The version at which `spec` became current; tasks record it to tell whether they are dirty.
    pub spec_version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_spec: Option<ServiceSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_spec_version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_status: Option<UpdateStatus>,
    /// Raft index of the last write of `update_status` alone (the updater's progress). Such a
    /// write leaves `version` as it is: `version` is what a read-modify-write of the spec must
    /// match, and the updater's progress is no conflict with it.
    #[serde(default)]
    pub status_version: u64,
    /// The number of the revision `spec` is: 1 at the create, one more at each spec change
    /// (Kubernetes' `deployment.kubernetes.io/revision`). The revisions themselves are kept in
    /// the store's own table, not here, so copying a service never copies its history.
    #[serde(default)]
    pub revision: u64,
    /// The id of the rollout of the current spec (`rollout inspect`): the caller's
    /// `--rollout-id`, or `<name>-<revision>`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rollout_id: String,
    /// The stack rollout (an atomic deploy's group) its current spec rolls out in, until the
    /// group ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupRef>,
    /// The address the tasks of the services sharing a network with it reach it at (Swarm's
    /// virtual IP): every node's proxy listens on it. Given once the service is on a network,
    /// kept until it is removed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub virtual_ip: String,
}

/// A service's place in a group rollout.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRef {
    pub stack: String,
    /// The stack revision whose rollout the group is.
    pub revision: u64,
    /// It waits for services it depends on: no task of its new spec starts yet.
    #[serde(default)]
    pub waiting: bool,
}

/// Where a rollout stands: `update_status`'s states, plus `aborted` (`rollout abort`) and
/// `superseded` (a newer spec change started another rollout before this one ended).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    Updating,
    Paused,
    Completed,
    RollbackStarted,
    RollbackPaused,
    RollbackCompleted,
    Aborted,
    Superseded,
}

impl RolloutState {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Updating => "updating",
            RolloutState::Paused => "paused",
            RolloutState::Completed => "completed",
            RolloutState::RollbackStarted => "rollback_started",
            RolloutState::RollbackPaused => "rollback_paused",
            RolloutState::RollbackCompleted => "rollback_completed",
            RolloutState::Aborted => "aborted",
            RolloutState::Superseded => "superseded",
        }
    }

    /// Ended: nothing more happens to it.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RolloutState::Completed
                | RolloutState::RollbackCompleted
                | RolloutState::Aborted
                | RolloutState::Superseded
        )
    }
}

impl From<UpdateState> for RolloutState {
    fn from(state: UpdateState) -> Self {
        match state {
            UpdateState::Updating => RolloutState::Updating,
            UpdateState::Paused => RolloutState::Paused,
            UpdateState::Completed => RolloutState::Completed,
            UpdateState::RollbackStarted => RolloutState::RollbackStarted,
            UpdateState::RollbackPaused => RolloutState::RollbackPaused,
            UpdateState::RollbackCompleted => RolloutState::RollbackCompleted,
        }
    }
}

/// An update or a rollback of one spec of a service, from its first status to its end: kept in
/// the replicated store (so a new leader appends to the same record), the newest
/// `revision_history_limit` per service. `update_status` is what Swarm shows of the current one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub id: String,
    pub service_id: String,
    pub service_name: String,
    /// `update` or `rollback` (by hand, to a revision, an abort's, or automatic: see `events`).
    pub kind: RolloutKind,
    pub from_revision: u64,
    pub to_revision: u64,
    /// The spec version it rolls out (a raft index; tasks carry it).
    pub spec_version: u64,
    /// The settings it runs with (`update_config`, or `rollback_config` for a rollback).
    pub config: crate::UpdateConfig,
    pub state: RolloutState,
    pub message: String,
    /// Who made the spec change that started it (as its revision records).
    #[serde(default)]
    pub started_by: String,
    pub started_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// Every change of state or message, oldest first (at most [`ROLLOUT_EVENTS_KEPT`]).
    pub events: Vec<RolloutEvent>,
    /// The batches of slots it started, in order (at most [`ROLLOUT_SLOTS_KEPT`] slots).
    pub batches: Vec<RolloutBatch>,
    /// Slots started past [`ROLLOUT_SLOTS_KEPT`]: counted, not listed.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub unrecorded_slots: u64,
    /// The stack rollout it is part of (`<stack>-<revision>`), if any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// Events kept per rollout record.
pub const ROLLOUT_EVENTS_KEPT: usize = 100;
/// Slots listed per rollout record: a rollout of a huge service keeps a bounded record.
pub const ROLLOUT_SLOTS_KEPT: usize = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutKind {
    Update,
    Rollback,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutEvent {
    pub at: Timestamp,
    pub state: RolloutState,
    pub message: String,
}

/// The slots the updater started together (in one raft entry, `index`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutBatch {
    pub number: u64,
    pub index: u64,
    pub started_at: Timestamp,
    pub slots: Vec<RolloutSlot>,
}

/// One slot of a batch: the task the rollout made for it, the ones it replaced, and when each
/// step happened, as the store applied it (so every manager records the same times).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutSlot {
    /// `web.3`.
    pub name: String,
    pub new_task: String,
    /// The node the new task runs on (empty: not placed yet).
    #[serde(default)]
    pub node: String,
    /// The slot's older tasks the rollout told to stop.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub old_tasks: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_requested_at: Option<Timestamp>,
    /// When the last of `old_tasks` ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<Timestamp>,
    /// When the new task was being started (container start asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// When the new task was running (healthy, with a health check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_at: Option<Timestamp>,
    /// A failure of the new task that counts against the rollout: it ended before running or
    /// within the monitor window after (`<state>: <error>`), and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<Timestamp>,
}

/// What an update to a new spec would do, decided from the store as the updater would decide
/// it, with nothing written (`service update --dry-run`, Nomad's `job plan`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UpdatePlan {
    pub service: String,
    /// The lines of the spec (as `service inspect` prints it) that would change: `- old`,
    /// `+ new`. Filled in by the CLI, which has both specs.
    #[serde(default)]
    pub spec_changes: Vec<String>,
    /// Tasks meant to run, now.
    pub tasks: u64,
    /// The tasks the update would replace, in the order it would, and why each is out of date.
    pub out_of_date: Vec<OutOfDateTask>,
    /// The slots (task names) of each batch, `parallelism` at a time, in order.
    pub batches: Vec<Vec<String>>,
    pub parallelism: u64,
    pub order: crate::UpdateOrder,
    /// The strategy in words (`UpdateConfig::describe`).
    #[serde(default)]
    pub strategy: String,
    /// Canary steps: after which batch (from 0) each step but the last ends, and what it then
    /// waits for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub step_ends: Vec<(usize, String)>,
    /// The seconds one task of this service took from created to running, median of those it
    /// has (1 s when none has run yet): what the estimate counts per batch.
    pub task_start_secs: f64,
    /// batches × (task start + delay) + the monitor window, in seconds.
    pub estimate_secs: f64,
    /// What is likely to hurt: a new task that cannot be placed, a gap in service, a new task
    /// that must wait for the old one, failures nobody watches.
    pub warnings: Vec<String>,
}

/// One task an update would replace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutOfDateTask {
    /// `web.3`, as `service ps` names it.
    pub name: String,
    pub task_id: String,
    /// The node's hostname (its id if it has none), empty if not placed.
    pub node: String,
    pub reasons: Vec<String>,
}

/// One spec a service had: `shoal rollout history`. Made by every spec change (create, update,
/// rollback, automatic rollback), numbered per service from 1; the store keeps the newest
/// `revision_history_limit` of each service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Revision {
    pub service_id: String,
    pub number: u64,
    /// The service's `spec_version` when this spec became current (a raft index).
    pub spec_version: u64,
    pub created_at: Timestamp,
    /// Who made the change: the caller's certificate identity (`role:node-id`), empty for the
    /// cluster itself (an automatic rollback).
    #[serde(default)]
    pub created_by: String,
    /// Why: the caller's `--change-cause`, or the command line that made the change.
    #[serde(default)]
    pub change_cause: String,
    pub spec: std::sync::Arc<ServiceSpec>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateState {
    Updating,
    Paused,
    Completed,
    RollbackStarted,
    RollbackPaused,
    RollbackCompleted,
}

/// The update status message of a rollout paused by hand (`rollout pause`).
pub const MANUALLY_PAUSED: &str = "manually paused";
/// How the update status message of a rollout aborted by hand (`rollout abort`) starts.
pub const MANUALLY_ABORTED: &str = "update aborted by hand";

impl UpdateState {
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateState::Updating => "updating",
            UpdateState::Paused => "paused",
            UpdateState::Completed => "completed",
            UpdateState::RollbackStarted => "rollback_started",
            UpdateState::RollbackPaused => "rollback_paused",
            UpdateState::RollbackCompleted => "rollback_completed",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateStatus {
    pub state: UpdateState,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Timestamp>,
    /// Out-of-date slots when this rollout started: the denominator of the failure ratio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots: Option<u64>,
    /// A canary rollout's step (update config `steps`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<crate::StepStatus>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: String,
    pub version: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub service_id: String,
    /// The service's name when the task was made (names containers `<service>.<slot>.<task>`).
    #[serde(default)]
    pub service_name: String,
    /// Replica slot, from 1; 0 for tasks of global services (they are keyed by node).
    pub slot: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_id: String,
    pub spec_version: u64,
    /// Shared by the tasks of one service version (the store interns it), so 100k tasks do not
    /// hold 100k copies of the same spec.
    pub spec: std::sync::Arc<TaskSpec>,
    /// The service's endpoint when the task was made (host-mode ports are per task).
    #[serde(default)]
    pub endpoint: EndpointSpec,
    pub desired_state: TaskState,
    pub status: TaskStatus,
    /// Who made the task: failures of tasks an update made count against the update.
    #[serde(default)]
    pub origin: TaskOrigin,
    /// For a task made with desired READY: when it may be raised to RUNNING. Kept in the store so
    /// a new leader honours a restart delay the old one started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_gate: Option<StartGate>,
    /// When the task was first observed RUNNING (set by the store): the update monitor measures
    /// failures from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_at: Option<Timestamp>,
    /// How many tasks of this slot in a row ended without running for a while before this one
    /// was made (0 for a task that is no restart): the restart backoff doubles with it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restart_failures: u32,
    /// The rollout that replaced this task asked for its container to be removed once stopped
    /// (`--update-old-tasks remove`); the agent removes it, the record stays in the history.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remove_container: bool,
    /// A task a rollout replaced with `--update-old-tasks keep`: it keeps running beside the new
    /// one, is not one of the replicas and is never restarted, until `rollout finish` or the next
    /// rollout stops it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kept: bool,
    /// A rollback to the spec a stopped container of this slot ran restarts that container on its
    /// node instead of creating one: the task runs in the container another task made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopts: Option<Adoption>,
}

/// The stopped container a task restarts in place of creating its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adoption {
    /// The task whose id the container carries (in its label and name): the task that made it.
    pub container_task: String,
    /// When the task that last ran the container reported it stopped, on the agent's clock (the
    /// engine's): a container started since then was restarted for the adopting task already.
    pub stopped_at: Timestamp,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskOrigin {
    /// Created to fill a slot (service create, scale up, global node join).
    #[default]
    Orchestrator,
    /// Replaces a failed task or one on a lost node.
    Restart,
    /// Replaces an out-of-date task during a rolling update or rollback.
    Update,
}

/// Conditions for starting a task that was created with desired READY.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartGate {
    /// Not before this time (restart delay).
    pub not_before: Timestamp,
    /// Not before this task has stopped (observed past RUNNING), is gone, or its node is down…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_task: Option<String>,
    /// …or this time has passed (Swarm's one-minute old-task timeout).
    pub deadline: Timestamp,
    /// Also not before every task of the service that runs another spec has stopped (is gone,
    /// or its node is down), however long that takes: a Recreate rollout never runs old and new
    /// tasks at once (Kubernetes waits as long for old pods to terminate).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub after_older_tasks: bool,
    /// Made ahead of its slot's turn (`--update-prepare-ahead`): the task is placed and its
    /// container created, but the gate opens only when the updater releases it (replacing this
    /// gate), never by itself. Still set on a prepared task that ended before its turn.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prepared_ahead: bool,
}

impl StartGate {
    /// The gate of a task prepared ahead of its slot's turn.
    pub fn prepared_ahead() -> StartGate {
        StartGate {
            not_before: 0,
            after_task: None,
            deadline: u64::MAX,
            after_older_tasks: false,
            prepared_ahead: true,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStatus {
    pub state: TaskState,
    pub timestamp: Timestamp,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub err: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub container_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// Where the task's ingress ports answer, reported once it runs: the proxies send it
    /// connections there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<TaskPort>,
}

/// One ingress port of a running task: its target port, the host port the engine published it
/// on (reached from other nodes at the node's address) and the container's own address (reached
/// from its node).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskPort {
    pub target: u16,
    #[serde(default)]
    pub host_port: u16,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub container_ip: String,
}

impl Task {
    /// For a restarted task still waiting out its restart backoff: when the wait ends. Such a
    /// task is not scheduled (so no node prepares it) until then.
    pub fn restart_held_until(&self, now: Timestamp) -> Option<Timestamp> {
        let gate = self.start_gate.as_ref()?;
        let held = self.origin == TaskOrigin::Restart
            && self.status.state < crate::TaskState::Assigned
            && gate.not_before > now;
        held.then_some(gate.not_before)
    }

    /// The id the task's container carries: its own, or that of the task whose stopped container
    /// it restarts.
    pub fn container_task(&self) -> &str {
        self.adopts.as_ref().map_or(&self.id, |a| &a.container_task)
    }

    /// Every id a container of this task may carry: its own, and that of the container it
    /// restarts (its own exists too if that one was gone when it was prepared).
    pub fn container_tasks(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.id.as_str()).chain(self.adopts.as_ref().map(|a| a.container_task.as_str()))
    }

    /// Whether the task was prepared ahead of its slot's turn and not released (yet).
    pub fn prepared_ahead(&self) -> bool {
        self.start_gate.as_ref().is_some_and(|g| g.prepared_ahead)
    }

    /// `web.3` for a replica, `web.<node id>` for a global task: what `service ps` shows.
    pub fn name(&self) -> String {
        if self.slot > 0 {
            format!("{}.{}", self.service_name, self.slot)
        } else {
            format!("{}.{}", self.service_name, self.node_id)
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub id: String,
    pub version: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub spec: NodeSpec,
    pub description: NodeDescription,
    pub status: NodeStatus,
    /// Present on managers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager: Option<ManagerInfo>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    pub role: NodeRole,
    pub availability: Availability,
    #[serde(default)]
    pub labels: Labels,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDescription {
    pub hostname: String,
    #[serde(default)]
    pub nano_cpus: u64,
    #[serde(default)]
    pub memory_bytes: u64,
    #[serde(default)]
    pub engine_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub platform_os: String,
    #[serde(default)]
    pub platform_arch: String,
    #[serde(default)]
    pub engine_version: String,
    /// The address the agent's ingress proxy listens on (`--ingress-addr`); where other nodes'
    /// proxies reach this node's tasks unless it is unspecified (then the address the leader
    /// sees the node at).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ingress_addr: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub state: NodeState,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub addr: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagerInfo {
    pub raft_id: u64,
    pub addr: String,
    /// Filled in when the object is served: `leader`, `reachable` or `unreachable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachability: Option<String>,
    #[serde(default)]
    pub leader: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    pub id: String,
    pub version: u64,
    pub created_at: Timestamp,
    pub spec: ClusterSpec,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSpec {
    /// Terminal tasks kept per slot (Swarm's `--task-history-limit`, default 5).
    pub task_history_limit: u64,
    /// Agents heartbeat this often; a node is DOWN after three missed beats.
    pub heartbeat_period: crate::GoDuration,
    /// Entries applied between raft snapshots.
    pub snapshot_interval: u64,
    /// How long node certificates are valid (Swarm's `--cert-expiry`, default 90 days); nodes
    /// renew theirs well before.
    #[serde(default = "default_node_cert_expiry")]
    pub node_cert_expiry: crate::GoDuration,
    /// The most replicas (tasks per slot set) one service may ask for (`--max-replicas`); a
    /// mistyped `--replicas 1000000000` is refused instead of building a billion tasks.
    #[serde(default = "default_max_replicas")]
    pub max_replicas: u64,
    /// Revisions kept per service, the current one included (`--revision-history-limit`, as
    /// Kubernetes' `revisionHistoryLimit`, default 10).
    #[serde(default = "default_revision_history_limit")]
    pub revision_history_limit: u64,
    /// The IPv4 range services on networks get their virtual IPs from (`shoal-manager init
    /// --vip-pool`). Each node's proxy adds them to its host's loopback interface, so the range
    /// must be one nothing else on the hosts uses.
    #[serde(default = "default_vip_pool")]
    pub vip_pool: String,
}

/// The key of the host entries the containers of a service's spec get (the assignment's
/// `hosts_json`).
pub fn hosts_key(service_id: &str, spec_version: u64) -> String {
    format!("{service_id}/{spec_version}")
}

/// The default range of virtual IPs: out of the ranges Docker gives its own networks.
pub const DEFAULT_VIP_POOL: &str = "10.213.0.0/16";

fn default_vip_pool() -> String {
    DEFAULT_VIP_POOL.to_string()
}

/// The addresses of a `vip_pool` (`a.b.c.d/len`, IPv4, prefix 8 to 30), network and broadcast
/// address left out, as the first and last usable address.
pub fn vip_pool_range(pool: &str) -> Result<(u32, u32), String> {
    let allowed = "an IPv4 range a.b.c.d/N with N from 8 to 30";
    let (addr, len) = pool.split_once('/').ok_or_else(|| format!("{pool:?}: not {allowed}"))?;
    let addr: std::net::Ipv4Addr = addr.parse().map_err(|_| format!("{pool:?}: not {allowed}"))?;
    let len: u32 = len.parse().map_err(|_| format!("{pool:?}: not {allowed}"))?;
    if !(8..=30).contains(&len) {
        return Err(format!("{pool:?}: prefix /{len} is not {allowed}"));
    }
    let mask = u32::MAX << (32 - len);
    let base = u32::from(addr) & mask;
    if base != u32::from(addr) {
        return Err(format!(
            "{pool:?}: host bits are set; the range starts at {}/{len}",
            std::net::Ipv4Addr::from(base)
        ));
    }
    let last = base | !mask;
    // On every host's loopback interface, these would take over addresses the hosts need (cloud
    // metadata at 169.254.169.254, loopback, multicast).
    const SPECIAL: [(u32, u32, &str); 4] = [
        (0x0000_0000, 0x00FF_FFFF, "0.0.0.0/8 (this network)"),
        (0x7F00_0000, 0x7FFF_FFFF, "127.0.0.0/8 (loopback)"),
        (0xA9FE_0000, 0xA9FE_FFFF, "169.254.0.0/16 (link-local, cloud metadata)"),
        (0xE000_0000, 0xFFFF_FFFF, "224.0.0.0/3 (multicast and reserved)"),
    ];
    if let Some((_, _, what)) = SPECIAL.iter().find(|(from, to, _)| base <= *to && last >= *from) {
        return Err(format!("{pool:?}: overlaps {what}, which hosts need; use a private range such as 10.213.0.0/16"));
    }
    Ok((base + 1, last - 1))
}

#[cfg(test)]
mod vip_pool_tests {
    use super::vip_pool_range;

    #[test]
    fn a_pool_is_an_ipv4_range_of_addresses_a_host_can_lend() {
        assert_eq!(vip_pool_range("10.213.0.0/16"), Ok((0x0AD5_0001, 0x0AD5_FFFE)));
        assert_eq!(vip_pool_range("192.168.7.0/30"), Ok((0xC0A8_0701, 0xC0A8_0702)));
        for (pool, says) in [
            ("10.213.0.0", "not an IPv4 range"),
            ("10.213.0.0/31", "prefix /31"),
            ("10.213.0.0/7", "prefix /7"),
            ("10.213.0.1/16", "host bits are set; the range starts at 10.213.0.0/16"),
            ("169.254.0.0/16", "link-local"),
            ("169.0.0.0/8", "overlaps 169.254.0.0/16"),
            ("127.0.0.0/8", "loopback"),
            ("240.0.0.0/8", "reserved"),
            ("fd00::/64", "not an IPv4 range"),
        ] {
            let err = vip_pool_range(pool).unwrap_err();
            assert!(err.contains(says) && err.contains(pool), "{pool}: {err}");
        }
    }
}

fn default_revision_history_limit() -> u64 {
    crate::limits::DEFAULT_REVISION_HISTORY_LIMIT
}

fn default_max_replicas() -> u64 {
    crate::limits::DEFAULT_MAX_REPLICAS
}

fn default_node_cert_expiry() -> crate::GoDuration {
    crate::GoDuration::from_secs(90 * 24 * 3600)
}

/// The cluster's secrets: its CA (so any leader can sign node certificates) and its join tokens.
/// Kept in the replicated store but apart from the cluster object, so `cluster info` and
/// `events` never show them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSecurity {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub worker_token: String,
    pub manager_token: String,
    /// With autolock: the key managers' data keys are sealed with (`shoal cluster unlock-key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unlock_key: Option<String>,
}

impl std::fmt::Debug for ClusterSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSecurity").finish_non_exhaustive()
    }
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            task_history_limit: 5,
            heartbeat_period: crate::GoDuration::from_secs(1),
            snapshot_interval: 10_000,
            node_cert_expiry: default_node_cert_expiry(),
            max_replicas: default_max_replicas(),
            revision_history_limit: default_revision_history_limit(),
            vip_pool: default_vip_pool(),
        }
    }
}

impl Service {
    /// A short, human id prefix as docker prints it.
    pub fn short_id(&self) -> &str {
        short(&self.id)
    }
}

impl Node {
    pub fn short_id(&self) -> &str {
        short(&self.id)
    }

    /// The value a placement constraint key refers to on this node, if any.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        match key.to_ascii_lowercase().as_str() {
            "node.id" => Some(&self.id),
            "node.hostname" => Some(&self.description.hostname),
            "node.role" => Some(self.spec.role.as_str()),
            "node.platform.os" => Some(&self.description.platform_os),
            "node.platform.arch" => Some(&self.description.platform_arch),
            _ => {
                if let Some(label) = key.strip_prefix("node.labels.") {
                    self.spec.labels.get(label).map(String::as_str)
                } else if let Some(label) = key.strip_prefix("engine.labels.") {
                    self.description.engine_labels.get(label).map(String::as_str)
                } else {
                    None
                }
            }
        }
    }

    /// shoal's managers do not run tasks; agents register as workers.
    pub fn runs_tasks(&self) -> bool {
        self.spec.role == NodeRole::Worker && self.manager.is_none()
    }

    /// Whether a new task may be placed here now: a worker that is ready and active.
    pub fn accepts_tasks(&self) -> bool {
        self.runs_tasks()
            && self.status.state == crate::NodeState::Ready
            && self.spec.availability == crate::Availability::Active
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// What `shoal cluster info` shows: answered by the leader, from its raft status and store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub cluster_id: String,
    pub created_at: Timestamp,
    pub leader: Option<ManagerRef>,
    /// The manager the client talked to (it may have forwarded the call to the leader).
    pub answered_by: Option<ManagerRef>,
    pub managers: usize,
    pub services: usize,
    pub tasks: usize,
    pub raft: RaftSummary,
    /// The cluster's settings (`shoal cluster update` changes them); absent from managers that
    /// predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<ClusterSpec>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagerRef {
    pub node_id: String,
    pub raft_id: u64,
    pub addr: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftSummary {
    pub term: u64,
    pub commit: u64,
    pub applied: u64,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    /// Raft index of the newest snapshot on the answering manager.
    #[serde(default)]
    pub snapshot_index: u64,
    /// Size of that snapshot's data (the whole store, serialised), in bytes.
    #[serde(default)]
    pub snapshot_bytes: u64,
}

/// What `service ls` shows of a service, counted by the manager (Docker's
/// `ServiceStatus{RunningTasks, DesiredTasks}`): listing never carries whole specs or their
/// revisions, so one large service cannot break `service ls` for everyone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSummary {
    pub id: String,
    pub name: String,
    pub mode: crate::ServiceMode,
    pub image: String,
    #[serde(default)]
    pub labels: crate::Labels,
    #[serde(default)]
    pub ports: Vec<crate::PortConfig>,
    #[serde(default)]
    pub max_replicas_per_node: u64,
    pub running_tasks: u64,
    pub desired_tasks: u64,
    /// Jobs: tasks of the current run (spec version) that completed; docker's `CompletedTasks`.
    #[serde(default)]
    pub completed_tasks: u64,
}

impl ServiceSummary {
    /// Counts as docker does: tasks on nodes known to be down (and tasks kept running by a
    /// rollout) are left out; desired is the
    /// replica count, or for a global service the tasks whose desired state is running.
    pub fn new<'a>(
        service: &Service,
        tasks: impl Iterator<Item = &'a Task>,
        node_down: impl Fn(&str) -> bool,
    ) -> ServiceSummary {
        let (mut running, mut desired_global, mut completed, mut job_nodes) = (0, 0, 0, 0);
        // Tasks a rollout kept running beside their replacements are not replicas.
        for task in tasks.filter(|t| t.service_id == service.id && !t.kept && !node_down(&t.node_id)) {
            running += u64::from(task.status.state == crate::TaskState::Running);
            desired_global += u64::from(task.desired_state == crate::TaskState::Running);
            if task.spec_version == service.spec_version {
                completed += u64::from(task.status.state == crate::TaskState::Complete);
                // A global job's run on a node: its first task there (restarts share the node).
                job_nodes += u64::from(task.origin == crate::TaskOrigin::Orchestrator);
            }
        }
        let spec = &service.spec;
        ServiceSummary {
            id: service.id.clone(),
            name: spec.name.clone(),
            mode: spec.mode,
            image: spec.task.container.image.clone(),
            labels: spec.labels.clone(),
            ports: spec.endpoint.ports.clone(),
            max_replicas_per_node: spec.task.placement.max_replicas_per_node,
            running_tasks: running,
            desired_tasks: match spec.mode {
                crate::ServiceMode::Replicated { replicas } => replicas,
                crate::ServiceMode::Global => desired_global,
                // Docker: what may run now, the concurrency capped by the completions left.
                crate::ServiceMode::ReplicatedJob { total_completions, max_concurrent } => {
                    max_concurrent.min(total_completions.saturating_sub(completed))
                }
                crate::ServiceMode::GlobalJob => job_nodes.saturating_sub(completed),
            },
            completed_tasks: completed,
        }
    }

    pub fn short_id(&self) -> &str {
        short(&self.id)
    }
}
