use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use shoal_types::{
    Cluster, ClusterSecurity, DataKind, DataObject, ManagerInfo, Node, NodeDescription, NodeRole, NodeSpec, NodeState,
    NodeStatus, Revision, Rollout, RolloutBatch, RolloutEvent, RolloutKind, RolloutSlot, RolloutState, Service,
    ServiceSpec, StepWait, Task, TaskOrigin, TaskSpec, TaskState, TaskStatus, UpdateState, UpdateStatus,
};

use crate::action::{Action, Batch, MembershipChange, MembershipKind, Origin};
use shoal_types::GroupRef;
use shoal_types::stack::{MemberState, StackRevision};
use shoal_types::traffic::Route;
use shoal_types::{MANUALLY_ABORTED, MANUALLY_PAUSED};

/// Why a batch was refused. The store is left exactly as it was.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum StoreError {
    #[error("{kind} {name} already exists")]
    AlreadyExists { kind: &'static str, name: String },
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    #[error(
        "update out of sequence: node {id} is at version {current}, the update was based on version {expected}; inspect it again and retry"
    )]
    NodeOutOfSequence { id: String, current: u64, expected: u64 },
    #[error(
        "update out of sequence: service {name} is at version {current}, the update was based on version {expected}; inspect it again and retry"
    )]
    OutOfSequence { name: String, current: u64, expected: u64 },
    #[error("service {name}: renaming services is not supported")]
    Rename { name: String },
    #[error("service {name}: service mode change is not allowed")]
    ModeChange { name: String },
    #[error("service {name} does not have a previous spec")]
    NoPreviousSpec { name: String },
    #[error("service {name} is not rolling out ({now}): there is nothing to pause")]
    NothingToPause { name: String, now: String },
    #[error("service {name} is not paused ({now}): there is nothing to resume")]
    NothingToResume { name: String, now: String },
    #[error("service {name} has no kept old tasks: there is nothing to finish")]
    NothingToFinish { name: String },
    #[error("service {name} has no canary step waiting for approval ({now}): there is nothing to approve")]
    NothingToApprove { name: String, now: String },
    #[error("service {name} is not updating ({now}): there is nothing to abort")]
    NothingToAbort { name: String, now: String },
    #[error("rollout id {id} is already used by a rollout of service {name}")]
    RolloutIdTaken { name: String, id: String },
    #[error("revision {revision} not found for service {name} (kept: {kept})")]
    RevisionNotFound { name: String, revision: u64, kept: String },
    #[error(
        "update out of sequence: the cluster is at version {current}, the update was based on version {expected}; inspect it again and retry"
    )]
    ClusterOutOfSequence { current: u64, expected: u64 },
    #[error(
        "service {service}: task.networks[{index}]: network {name} not found (create it first: shoal network create {name})"
    )]
    NetworkNotFound { service: String, index: usize, name: String },
    #[error(
        "service {service}: task.networks: every virtual IP of the cluster's pool {pool} is given (the pool is set by shoal-manager --vip-pool at init); remove a service on a network first"
    )]
    NoVirtualIp { service: String, pool: String },
    #[error("{kind} {name} is in use by service {services}: remove it from them first (--{kind}-rm)")]
    DataInUse { kind: &'static str, name: String, services: String },
    #[error(
        "{kind} {name} is still in the previous spec of service {services}, which a rollback would bring back: update the service once more (e.g. --force) or remove it first"
    )]
    DataInPreviousSpec { kind: &'static str, name: String, services: String },
    #[error("port {port}/tcp is already published by {owner}: choose another --publish port or remove it there first")]
    PortInUse { port: u16, owner: String },
    #[error(
        "stack {stack} changed while this deploy was written (now at revision {current}, the deploy was planned on revision {expected}); run it again"
    )]
    StackMoved { stack: String, current: u64, expected: u64 },
    #[error("the cluster is not initialised")]
    NoCluster,
    #[error("cluster is already initialised")]
    ClusterExists,
    #[error("the cluster CA is already initialised")]
    SecurityExists,
    #[error("the cluster CA is not initialised")]
    NoSecurity,
    #[error("malformed log entry: {0}")]
    Malformed(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Create,
    Update,
    Remove,
}

// Changes are short-lived values passed to watchers; boxing would only add allocations.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "type", content = "object")]
pub enum Object {
    Cluster(Cluster),
    Service(Arc<Service>),
    Task(Task),
    Node(Node),
    Route(Arc<Route>),
}

/// One object's change, published to watchers after its batch applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub kind: ChangeKind,
    pub index: u64,
    /// When the change was proposed (the batch's timestamp), Unix milliseconds.
    pub at: u64,
    pub object: Object,
}

/// A virtual IP as a number (`None` for none, or an unreadable one).
fn vip_number(vip: &str) -> Option<u32> {
    vip.parse::<std::net::Ipv4Addr>().ok().map(u32::from)
}

/// A task the scheduler has to place: meant to run and not assigned to a node yet.
pub fn is_pending(task: &Task) -> bool {
    task.desired_state <= TaskState::Running && task.status.state < TaskState::Assigned
}

/// The whole desired and observed state of the cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    cluster: Option<Cluster>,
    /// Shared with change events and undo records, so a write copies a service once at most.
    services: BTreeMap<String, Arc<Service>>,
    nodes: BTreeMap<String, Node>,
    /// Persistent, so [`State::snapshot_view`] copies it in O(1): a write after the copy copies
    /// only the path to the task it changes (pointers to the tasks beside it), not 100,000 tasks.
    tasks: imbl::OrdMap<String, Arc<Task>>,
    #[serde(default)]
    security: Option<ClusterSecurity>,
    /// Nodes removed (`node rm`) or demoted out of raft: their certificates are refused.
    #[serde(default)]
    revoked_nodes: BTreeSet<String>,
    /// Raft index of the last entry applied (batches and membership changes alike).
    applied_index: u64,
    /// Each service's kept revisions, oldest first (see [`Revision`]).
    #[serde(default)]
    revisions: BTreeMap<String, Vec<Arc<Revision>>>,
    /// Each service's kept rollout records, oldest first (see [`Rollout`]).
    #[serde(default)]
    rollouts: BTreeMap<String, Vec<Arc<Rollout>>>,
    /// Secrets and configs by id, values included.
    #[serde(default)]
    data: BTreeMap<String, Arc<DataObject>>,
    /// Routes by id.
    #[serde(default)]
    routes: BTreeMap<String, Arc<Route>>,
    /// Each stack's kept revisions, oldest first (see [`StackRevision`]).
    #[serde(default)]
    stacks: BTreeMap<String, Vec<Arc<StackRevision>>>,
    #[serde(skip)]
    service_names: BTreeMap<String, String>,
    /// Secret and config ids by kind and name (derived, rebuilt on restore).
    #[serde(skip)]
    data_names: BTreeMap<(DataKind, String), String>,
    #[serde(skip)]
    tasks_by_service: BTreeMap<String, BTreeSet<String>>,
    #[serde(skip)]
    tasks_by_node: BTreeMap<String, BTreeSet<String>>,
    /// Tasks waiting for the scheduler (see [`is_pending`]): it returns at once when there are
    /// none, instead of walking every task.
    #[serde(skip)]
    pending: BTreeSet<String>,
    #[serde(skip)]
    task_specs: SpecPool,
    /// Where each task of an open rollout record sits in it (derived, rebuilt on restore).
    #[serde(skip)]
    slot_index: SlotIndexes,
    /// The virtual IPs given to services, as numbers, and their services (derived).
    #[serde(skip)]
    vips: BTreeMap<u32, String>,
    /// The services on each network, by network name (derived).
    #[serde(skip)]
    network_members: BTreeMap<String, BTreeSet<String>>,
    /// The virtual IP given last: the next one is looked for after it, so an address a removed
    /// service had goes to another service only once the pool has come round (containers that
    /// knew it by the old name would reach the new service otherwise).
    #[serde(default)]
    vip_cursor: u32,
}

/// Per service with an open rollout record: its slots by new task id and by slot name, and the
/// old tasks told to stop in the entry being applied before their slot was recorded (the
/// updater writes a stop-first slot's shutdown just before its new task). A cache, not state.
#[derive(Clone, Default)]
struct SlotIndexes {
    services: std::collections::HashMap<String, SlotIndex>,
    stopping: Vec<(String, String, String, u64)>,
}

#[derive(Clone, Default)]
struct SlotIndex {
    by_task: std::collections::HashMap<String, (usize, usize)>,
    by_name: std::collections::HashMap<String, (usize, usize)>,
}

impl PartialEq for SlotIndexes {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for SlotIndexes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SlotIndexes")
    }
}

/// The replicated part of a [`State`] at one applied index, taken by [`State::snapshot_view`].
/// It serialises to exactly what [`State`] does (same fields, same order), so
/// [`State::restore`] reads either.
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotView {
    cluster: Option<Cluster>,
    services: BTreeMap<String, Arc<Service>>,
    nodes: BTreeMap<String, Node>,
    tasks: imbl::OrdMap<String, Arc<Task>>,
    security: Option<ClusterSecurity>,
    revoked_nodes: BTreeSet<String>,
    applied_index: u64,
    revisions: BTreeMap<String, Vec<Arc<Revision>>>,
    rollouts: BTreeMap<String, Vec<Arc<Rollout>>>,
    data: BTreeMap<String, Arc<DataObject>>,
    routes: BTreeMap<String, Arc<Route>>,
    stacks: BTreeMap<String, Vec<Arc<StackRevision>>>,
    /// Last, as in [`State`]: a snapshot of either is the same bytes.
    vip_cursor: u32,
}

impl SnapshotView {
    /// Writes the snapshot to `out` as it is produced, without a copy of a large state.
    pub fn write(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        let mut buffered = std::io::BufWriter::with_capacity(64 << 10, out);
        serde_json::to_writer(&mut buffered, self).map_err(std::io::Error::other)?;
        std::io::Write::flush(&mut buffered)
    }
}

/// The task specs of each service version, shared by its tasks: a service of 1000 replicas
/// holds its spec once instead of 1000 times. A cache, not state: it never changes what a task
/// holds, only whether equal specs share one allocation.
#[derive(Clone, Default)]
struct SpecPool(BTreeMap<String, Vec<(u64, std::sync::Weak<TaskSpec>)>>);

impl PartialEq for SpecPool {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for SpecPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SpecPool({} services)", self.0.len())
    }
}

impl SpecPool {
    fn intern(&mut self, task: &mut Task) {
        let versions = self.0.entry(task.service_id.clone()).or_default();
        versions.retain(|(_, spec)| spec.strong_count() > 0);
        match versions.iter().find(|(v, _)| *v == task.spec_version).and_then(|(_, spec)| spec.upgrade()) {
            Some(shared) if std::sync::Arc::ptr_eq(&shared, &task.spec) => {}
            Some(shared) if *shared == *task.spec => task.spec = shared,
            Some(_) => {}
            None => versions.push((task.spec_version, std::sync::Arc::downgrade(&task.spec))),
        }
    }

    fn forget(&mut self, service_id: &str) {
        self.0.remove(service_id);
    }
}

/// How to put back what a failed batch changed.
#[allow(clippy::large_enum_variant)]
enum Undo {
    Cluster(Option<Cluster>),
    Security(Option<ClusterSecurity>),
    Unrevoke(String),
    Service(String, Option<Arc<Service>>),
    Node(String, Option<Node>),
    Task(String, Option<Task>),
    Revisions(String, Option<Vec<Arc<Revision>>>),
    Data(String, Option<Arc<DataObject>>),
    Route(String, Option<Arc<Route>>),
    Stack(String, Option<Vec<Arc<StackRevision>>>),
    Rollouts(String, Option<Vec<Arc<Rollout>>>),
    /// A slot appended to the service's newest rollout record: taken off again.
    RolloutSlot(String),
    /// A slot counted, not listed, in the service's newest rollout record.
    RolloutUnrecorded(String),
    /// A slot of the service's newest rollout record, as it was before a task of it changed.
    RolloutSlotWas(String, usize, usize, RolloutSlot),
    /// The virtual IP last given, before a service got one.
    VipCursor(u32),
}

impl State {
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_ref()
    }

    pub fn security(&self) -> Option<&ClusterSecurity> {
        self.security.as_ref()
    }

    /// True if the node was removed from the cluster: its certificate no longer admits it.
    pub fn is_revoked(&self, node_id: &str) -> bool {
        self.revoked_nodes.contains(node_id)
    }

    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.services.values().map(|s| &**s)
    }

    pub fn service(&self, id: &str) -> Option<&Service> {
        self.services.get(id).map(|s| &**s)
    }

    /// Secrets or configs, by id.
    pub fn data_objects(&self, kind: DataKind) -> impl Iterator<Item = &DataObject> {
        self.data.values().filter(move |d| d.kind == kind).map(|d| &**d)
    }

    pub fn data_object(&self, id: &str) -> Option<&DataObject> {
        self.data.get(id).map(|d| &**d)
    }

    pub fn data_by_name(&self, kind: DataKind, name: &str) -> Option<&DataObject> {
        self.data_names.get(&(kind, name.to_string())).and_then(|id| self.data_object(id))
    }

    /// Names of the services whose spec uses the secret or config, and of those whose previous
    /// spec alone does (a rollback would make it current again).
    pub fn services_using(&self, kind: DataKind, name: &str) -> (Vec<String>, Vec<String>) {
        let uses = |spec: &ServiceSpec| match kind {
            DataKind::Network => spec.task.networks.iter().any(|n| n == name),
            _ => spec.task.container.data_references().any(|(k, r)| k == kind && r.source == name),
        };
        let mut current = Vec::new();
        let mut previous = Vec::new();
        for service in self.services.values() {
            if uses(&service.spec) {
                current.push(service.spec.name.clone());
            } else if service.previous_spec.as_ref().is_some_and(uses) {
                previous.push(service.spec.name.clone());
            }
        }
        (current, previous)
    }

    /// Refuses a spec whose ingress ports another service (not `id`) or a route publishes
    /// already: one published port carries one owner's traffic on every node.
    fn check_ingress_ports(&self, id: &str, spec: &ServiceSpec) -> Result<(), StoreError> {
        for port in spec.endpoint.ports.iter().filter(|p| p.is_ingress()) {
            self.check_port_free(port.published, id)?;
        }
        Ok(())
    }

    /// Refuses `port` if a service or route other than `owner` (an id) publishes it.
    fn check_port_free(&self, port: u16, owner: &str) -> Result<(), StoreError> {
        for other in self.services.values().filter(|s| s.id != owner) {
            if other.spec.endpoint.ports.iter().any(|p| p.is_ingress() && p.published == port) {
                return Err(StoreError::PortInUse { port, owner: format!("service {}", other.spec.name) });
            }
        }
        if let Some(route) = self.routes.values().find(|r| r.id != owner && r.spec.port == port) {
            return Err(StoreError::PortInUse { port, owner: format!("route {}", route.spec.name) });
        }
        Ok(())
    }

    /// Routes by id.
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.routes.values().map(|r| &**r)
    }

    pub fn route(&self, id: &str) -> Option<&Route> {
        self.routes.get(id).map(|r| &**r)
    }

    pub fn route_by_name(&self, name: &str) -> Option<&Route> {
        self.routes.values().find(|r| r.spec.name == name).map(|r| &**r)
    }

    /// Refuses a spec that uses a secret or config that does not exist.
    fn check_data_references(&self, spec: &ServiceSpec) -> Result<(), StoreError> {
        for (kind, reference) in spec.task.container.data_references() {
            if self.data_by_name(kind, &reference.source).is_none() {
                return Err(StoreError::NotFound { kind: kind.as_str(), id: reference.source.clone() });
            }
        }
        Ok(())
    }

    pub fn service_by_name(&self, name: &str) -> Option<&Service> {
        self.service_names.get(name).and_then(|id| self.service(id))
    }

    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.get(id)
    }

    /// The kept revisions of service `id`, oldest first.
    pub fn revisions(&self, id: &str) -> &[Arc<Revision>] {
        self.revisions.get(id).map(Vec::as_slice).unwrap_or_default()
    }

    /// The kept rollout records of service `id`, oldest first.
    pub fn rollouts(&self, id: &str) -> &[Arc<Rollout>] {
        self.rollouts.get(id).map(Vec::as_slice).unwrap_or_default()
    }

    /// Every kept rollout record, by service id then oldest first.
    pub fn all_rollouts(&self) -> impl Iterator<Item = &Arc<Rollout>> {
        self.rollouts.values().flatten()
    }

    pub fn tasks(&self) -> impl Iterator<Item = &Task> {
        self.tasks.values().map(|t| &**t)
    }

    pub fn task(&self, id: &str) -> Option<&Task> {
        self.tasks.get(id).map(|t| &**t)
    }

    /// The tasks in id order after `after` (all of them for ""), of one service and/or one node
    /// (`None`: any) through the indexes: a page of one service's tasks costs that page.
    pub fn tasks_after<'a>(
        &'a self,
        service_id: Option<&str>,
        node_id: Option<&str>,
        after: &'a str,
    ) -> Box<dyn Iterator<Item = &'a Task> + 'a> {
        use std::ops::Bound::{Excluded, Unbounded};
        let ids = |index: Option<&'a BTreeSet<String>>| {
            index.into_iter().flat_map(move |set| set.range::<str, _>((Excluded(after), Unbounded)))
        };
        match (service_id, node_id) {
            (Some(service), node) => {
                let node = node.map(str::to_string);
                Box::new(
                    ids(self.tasks_by_service.get(service))
                        .filter_map(|id| self.task(id))
                        .filter(move |t| node.as_ref().is_none_or(|n| t.node_id == *n)),
                )
            }
            (None, Some(node)) => Box::new(ids(self.tasks_by_node.get(node)).filter_map(|id| self.task(id))),
            (None, None) => Box::new(self.tasks.range::<_, str>((Excluded(after), Unbounded)).map(|(_, t)| &**t)),
        }
    }

    pub fn tasks_of_service<'a>(&'a self, service_id: &str) -> impl Iterator<Item = &'a Task> + 'a {
        self.tasks_by_service.get(service_id).into_iter().flatten().filter_map(|id| self.task(id))
    }

    /// The tasks waiting to be placed, by id.
    pub fn pending_tasks(&self) -> impl Iterator<Item = &Task> {
        self.pending.iter().filter_map(|id| self.task(id))
    }

    /// Ids of the services that have tasks, removed services whose tasks remain included.
    pub fn services_with_tasks(&self) -> impl Iterator<Item = &str> {
        self.tasks_by_service.keys().map(String::as_str)
    }

    pub fn tasks_on_node<'a>(&'a self, node_id: &str) -> impl Iterator<Item = &'a Task> + 'a {
        self.tasks_by_node.get(node_id).into_iter().flatten().filter_map(|id| self.task(id))
    }

    /// Serialises the whole state (indexes are rebuilt on restore).
    pub fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("state serialises")
    }

    /// Writes the snapshot to `out` as it is produced, without a copy of a large state.
    pub fn write_snapshot(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        self.snapshot_view().write(out)
    }

    /// A copy of everything a snapshot holds, cheap enough to take on the raft thread (the tasks
    /// are shared, see [`State::tasks`]); it is serialised later, on another thread, while the
    /// state goes on applying entries.
    pub fn snapshot_view(&self) -> SnapshotView {
        SnapshotView {
            cluster: self.cluster.clone(),
            services: self.services.clone(),
            nodes: self.nodes.clone(),
            tasks: self.tasks.clone(),
            security: self.security.clone(),
            revoked_nodes: self.revoked_nodes.clone(),
            applied_index: self.applied_index,
            revisions: self.revisions.clone(),
            rollouts: self.rollouts.clone(),
            data: self.data.clone(),
            routes: self.routes.clone(),
            stacks: self.stacks.clone(),
            vip_cursor: self.vip_cursor,
        }
    }

    pub fn restore(data: &[u8]) -> Result<State, StoreError> {
        let mut state: State = serde_json::from_slice(data).map_err(|e| StoreError::Malformed(e.to_string()))?;
        let restored = std::mem::take(&mut state.tasks);
        let mut tasks = imbl::OrdMap::new();
        for (id, task) in restored {
            let mut task = Arc::unwrap_or_clone(task);
            state.task_specs.intern(&mut task);
            state.index_task(&task);
            tasks.insert(id, Arc::new(task));
        }
        state.tasks = tasks;
        let services: Vec<String> = state.rollouts.keys().cloned().collect();
        for id in services {
            state.reindex_slots(&id);
        }
        state.service_names = state.services.values().map(|s| (s.spec.name.clone(), s.id.clone())).collect();
        state.vips = state.services.values().filter_map(|s| Some((vip_number(&s.virtual_ip)?, s.id.clone()))).collect();
        for service in state.services.values() {
            for network in &service.spec.task.networks {
                state.network_members.entry(network.clone()).or_default().insert(service.id.clone());
            }
        }
        state.data_names = state.data.values().map(|d| ((d.kind, d.spec.name.clone()), d.id.clone())).collect();
        Ok(state)
    }

    /// Applies a committed log entry's bytes. A malformed entry or a refused batch changes
    /// nothing but the applied index, identically on every manager.
    pub fn apply_entry(&mut self, index: u64, data: &[u8]) -> Result<Vec<Change>, StoreError> {
        match serde_json::from_slice::<Batch>(data) {
            Ok(batch) => self.apply_owned(index, batch),
            Err(e) => {
                self.applied_index = index;
                Err(StoreError::Malformed(e.to_string()))
            }
        }
    }

    /// Applies a batch atomically at raft index `index`.
    pub fn apply(&mut self, index: u64, batch: &Batch) -> Result<Vec<Change>, StoreError> {
        self.apply_owned(index, batch.clone())
    }

    /// [`State::apply`] for a batch the caller no longer needs: its specs and tasks move into
    /// the store instead of being copied.
    pub fn apply_owned(&mut self, index: u64, batch: Batch) -> Result<Vec<Change>, StoreError> {
        self.applied_index = index;
        let mut undo = Vec::new();
        let mut changes = Vec::new();
        for action in batch.actions {
            if let Err(e) = self.apply_action(index, batch.at, &batch.origin, action, &mut undo, &mut changes) {
                self.slot_index.stopping.clear();
                for step in undo.into_iter().rev() {
                    self.undo(step);
                }
                return Err(e);
            }
        }
        self.slot_index.stopping.clear();
        Ok(changes)
    }

    /// Records a raft membership change: managers are nodes too.
    pub fn apply_membership(&mut self, index: u64, change: &MembershipChange) -> Vec<Change> {
        self.applied_index = index;
        let existing = self.nodes.values().find(|n| n.manager.as_ref().is_some_and(|m| m.raft_id == change.raft_id));
        match change.kind {
            MembershipKind::AddLearner | MembershipKind::Promote => {
                let mut node = match existing {
                    Some(node) => node.clone(),
                    None => Node {
                        id: change.node_id.clone(),
                        version: index,
                        created_at: change.at,
                        updated_at: change.at,
                        spec: NodeSpec { role: NodeRole::Manager, ..NodeSpec::default() },
                        description: NodeDescription { hostname: change.hostname.clone(), ..Default::default() },
                        status: NodeStatus {
                            state: NodeState::Ready,
                            message: String::new(),
                            addr: change.addr.clone(),
                        },
                        manager: None,
                    },
                };
                if node.id.is_empty() {
                    return Vec::new();
                }
                node.version = index;
                node.updated_at = change.at.max(node.updated_at);
                node.spec.role = NodeRole::Manager;
                node.manager = Some(ManagerInfo {
                    raft_id: change.raft_id,
                    addr: change.addr.clone(),
                    reachability: None,
                    leader: false,
                });
                let kind = if self.nodes.contains_key(&node.id) { ChangeKind::Update } else { ChangeKind::Create };
                self.nodes.insert(node.id.clone(), node.clone());
                vec![Change { kind, index, at: change.at, object: Object::Node(node) }]
            }
            // Like a Swarm demotion: the node stays (as a worker) until `node rm` removes it.
            MembershipKind::Remove => match existing.cloned() {
                Some(mut node) => {
                    // Its manager certificate must not reach raft or the control API any more.
                    self.revoked_nodes.insert(node.id.clone());
                    node.version = index;
                    node.updated_at = change.at.max(node.updated_at);
                    node.spec.role = NodeRole::Worker;
                    node.manager = None;
                    node.status.state = NodeState::Down;
                    node.status.message = "demoted: removed from the raft cluster".into();
                    self.nodes.insert(node.id.clone(), node.clone());
                    vec![Change { kind: ChangeKind::Update, index, at: change.at, object: Object::Node(node) }]
                }
                None => Vec::new(),
            },
        }
    }

    fn apply_action(
        &mut self,
        index: u64,
        at: u64,
        origin: &Origin,
        action: Action,
        undo: &mut Vec<Undo>,
        changes: &mut Vec<Change>,
    ) -> Result<(), StoreError> {
        match action {
            Action::InitCluster { mut cluster } => {
                if self.cluster.is_some() {
                    return Err(StoreError::ClusterExists);
                }
                cluster.version = index;
                undo.push(Undo::Cluster(None));
                self.cluster = Some(cluster.clone());
                changes.push(Change { kind: ChangeKind::Create, index, at, object: Object::Cluster(cluster) });
            }
            Action::UpdateCluster { expected_version, spec } => {
                let Some(mut cluster) = self.cluster.clone() else { return Err(StoreError::NoCluster) };
                if cluster.version != expected_version {
                    return Err(StoreError::ClusterOutOfSequence {
                        current: cluster.version,
                        expected: expected_version,
                    });
                }
                undo.push(Undo::Cluster(Some(cluster.clone())));
                cluster.spec = spec;
                cluster.version = index;
                self.cluster = Some(cluster.clone());
                changes.push(Change { kind: ChangeKind::Update, index, at, object: Object::Cluster(cluster) });
            }
            Action::CreateRoute { mut route } => {
                if self.routes.contains_key(&route.id) {
                    return Err(StoreError::AlreadyExists { kind: "route", name: route.id });
                }
                if self.route_by_name(&route.spec.name).is_some() {
                    return Err(StoreError::AlreadyExists { kind: "route", name: route.spec.name });
                }
                self.check_port_free(route.spec.port, &route.id)?;
                route.version = index;
                route.created_at = at;
                route.updated_at = at;
                let route = Arc::new(route);
                undo.push(Undo::Route(route.id.clone(), None));
                self.routes.insert(route.id.clone(), route.clone());
                changes.push(Change { kind: ChangeKind::Create, index, at, object: Object::Route(route) });
            }
            Action::UpdateRoute { id, expected_version, spec } => {
                let current = self
                    .routes
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| StoreError::NotFound { kind: "route", id: id.clone() })?;
                if current.version != expected_version {
                    return Err(StoreError::OutOfSequence {
                        name: current.spec.name.clone(),
                        current: current.version,
                        expected: expected_version,
                    });
                }
                if spec.name != current.spec.name {
                    return Err(StoreError::Rename { name: current.spec.name.clone() });
                }
                self.check_port_free(spec.port, &id)?;
                let route = Arc::new(Route { version: index, updated_at: at, spec, ..Route::clone(&current) });
                undo.push(Undo::Route(id.clone(), Some(current)));
                self.routes.insert(id, route.clone());
                changes.push(Change { kind: ChangeKind::Update, index, at, object: Object::Route(route) });
            }
            Action::RemoveRoute { id } => {
                let route =
                    self.routes.remove(&id).ok_or_else(|| StoreError::NotFound { kind: "route", id: id.clone() })?;
                undo.push(Undo::Route(id, Some(route.clone())));
                changes.push(Change { kind: ChangeKind::Remove, index, at, object: Object::Route(route) });
            }
            Action::CreateData { mut object } => {
                if self.data.contains_key(&object.id) {
                    return Err(StoreError::AlreadyExists { kind: object.kind.as_str(), name: object.id });
                }
                if self.data_by_name(object.kind, &object.spec.name).is_some() {
                    return Err(StoreError::AlreadyExists { kind: object.kind.as_str(), name: object.spec.name });
                }
                object.version = index;
                object.created_at = at;
                object.updated_at = at;
                object.size = object.spec.data.len() as u64;
                undo.push(Undo::Data(object.id.clone(), None));
                self.data_names.insert((object.kind, object.spec.name.clone()), object.id.clone());
                self.data.insert(object.id.clone(), Arc::new(object));
            }
            Action::RemoveData { id } => {
                let object = self
                    .data
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| StoreError::NotFound { kind: "secret, config or network", id: id.clone() })?;
                let (current, previous) = self.services_using(object.kind, &object.spec.name);
                if !current.is_empty() {
                    return Err(StoreError::DataInUse {
                        kind: object.kind.as_str(),
                        name: object.spec.name.clone(),
                        services: current.join(", "),
                    });
                }
                if !previous.is_empty() {
                    return Err(StoreError::DataInPreviousSpec {
                        kind: object.kind.as_str(),
                        name: object.spec.name.clone(),
                        services: previous.join(", "),
                    });
                }
                self.data.remove(&id);
                self.data_names.remove(&(object.kind, object.spec.name.clone()));
                undo.push(Undo::Data(id, Some(object)));
            }
            Action::InitSecurity { security } => {
                if self.security.is_some() {
                    return Err(StoreError::SecurityExists);
                }
                undo.push(Undo::Security(None));
                self.security = Some(security);
            }
            Action::SetJoinToken { role, token } => {
                let security = self.security.as_mut().ok_or(StoreError::NoSecurity)?;
                let old = security.clone();
                match role {
                    NodeRole::Worker => security.worker_token = token,
                    NodeRole::Manager => security.manager_token = token,
                }
                undo.push(Undo::Security(Some(old)));
            }
            Action::CreateService { id, spec } => {
                self.check_data_references(&spec)?;
                self.check_ingress_ports(&id, &spec)?;
                self.check_networks(&id, &spec)?;
                if self.services.contains_key(&id) {
                    return Err(StoreError::AlreadyExists { kind: "service", name: id });
                }
                if self.service_by_name(&spec.name).is_some() {
                    return Err(StoreError::AlreadyExists { kind: "service", name: spec.name.clone() });
                }
                let mut service = Service {
                    id,
                    version: index,
                    created_at: at,
                    updated_at: at,
                    spec,
                    spec_version: index,
                    previous_spec: None,
                    previous_spec_version: None,
                    update_status: None,
                    status_version: 0,
                    revision: 0,
                    rollout_id: String::new(),
                    group: None,
                    virtual_ip: String::new(),
                };
                self.record_revision(&mut service, origin, undo)?;
                self.put_service(service, ChangeKind::Create, undo, changes);
            }
            Action::UpdateService { id, expected_version, spec } => {
                let current = self.checked_service(&id, expected_version)?;
                self.check_data_references(&spec)?;
                self.check_ingress_ports(&id, &spec)?;
                self.check_networks(&id, &spec)?;
                if current.spec.name != spec.name {
                    return Err(StoreError::Rename { name: current.spec.name.clone() });
                }
                if std::mem::discriminant(&current.spec.mode) != std::mem::discriminant(&spec.mode) {
                    return Err(StoreError::ModeChange { name: current.spec.name.clone() });
                }
                // Built field by field: the outgoing previous spec is dropped, so it is not copied.
                let mut service = Service {
                    id: current.id.clone(),
                    version: index,
                    created_at: current.created_at,
                    updated_at: at,
                    spec,
                    spec_version: index,
                    previous_spec: Some(current.spec.clone()),
                    previous_spec_version: Some(current.spec_version),
                    update_status: None,
                    status_version: current.status_version,
                    revision: current.revision,
                    rollout_id: current.rollout_id.clone(),
                    // Its group sees the change (a new spec version) and ends its part; a
                    // deploy's own entry replaces the group.
                    group: current.group.clone(),
                    virtual_ip: current.virtual_ip.clone(),
                };
                self.record_revision(&mut service, origin, undo)?;
                self.put_service(service, ChangeKind::Update, undo, changes);
            }
            Action::RollbackService { id, expected_version } => {
                let current = self.checked_service(&id, expected_version)?;
                let Some(previous) = current.previous_spec.clone() else {
                    return Err(StoreError::NoPreviousSpec { name: current.spec.name.clone() });
                };
                self.check_data_references(&previous)?;
                self.check_ingress_ports(&id, &previous)?;
                self.check_networks(&id, &previous)?;
                let service = rolled_back(current, previous, "manually requested rollback".into(), index, at);
                self.put_rollback(service, origin, undo, changes)?;
            }
            Action::RollbackServiceTo { id, expected_version, revision } => {
                let current = self.checked_service(&id, expected_version)?;
                let kept = self.revisions(&id);
                let Some(target) = kept.iter().find(|r| r.number == revision) else {
                    let kept = match (kept.first(), kept.last()) {
                        (Some(first), Some(last)) => format!("{}-{}", first.number, last.number),
                        _ => "none".into(),
                    };
                    return Err(StoreError::RevisionNotFound { name: current.spec.name.clone(), revision, kept });
                };
                self.check_data_references(&target.spec)?;
                self.check_ingress_ports(&id, &target.spec)?;
                // A kept revision may name a network removed since.
                self.check_networks(&id, &target.spec)?;
                let message = format!("manually requested rollback to revision {revision}");
                let service = rolled_back(current, ServiceSpec::clone(&target.spec), message, index, at);
                self.put_rollback(service, origin, undo, changes)?;
            }
            Action::RollbackServiceToSpec { id, expected_version, spec, message } => {
                let current = self.checked_service(&id, expected_version)?;
                if current.spec.name != spec.name {
                    return Err(StoreError::Rename { name: current.spec.name.clone() });
                }
                if std::mem::discriminant(&current.spec.mode) != std::mem::discriminant(&spec.mode) {
                    return Err(StoreError::ModeChange { name: current.spec.name.clone() });
                }
                self.check_data_references(&spec)?;
                self.check_ingress_ports(&id, &spec)?;
                self.check_networks(&id, &spec)?;
                let service = rolled_back(current, spec, message, index, at);
                self.put_rollback(service, origin, undo, changes)?;
            }
            Action::AutoRollback { id, expected_version, status } => {
                if let Some(current) = self.services.get(&id)
                    && current.version == expected_version
                    && current.previous_spec.is_some()
                {
                    let mut service = Service::clone(current);
                    service.spec = service.previous_spec.take().expect("checked");
                    service.previous_spec_version = None;
                    service.spec_version = index;
                    let cause = format!("automatic rollback: {}", status.message);
                    service.update_status = Some(status);
                    service.version = index;
                    service.updated_at = at;
                    self.record_revision(&mut service, &Origin { cause, ..Origin::default() }, undo)?;
                    self.put_service(service, ChangeKind::Update, undo, changes);
                }
            }
            Action::SetUpdateStatus { id, status } => {
                // The updater's view may be older than a removal: nothing left to report on.
                let Some(service) = self.service(&id) else { return Ok(()) };
                let mut service = service.clone();
                service.update_status = status;
                service.status_version = index;
                service.updated_at = at;
                self.put_service(service, ChangeKind::Update, undo, changes);
            }
            Action::PauseRollout { id } => {
                let pause = |state| match state {
                    UpdateState::Updating => Some((UpdateState::Paused, MANUALLY_PAUSED)),
                    UpdateState::RollbackStarted => Some((UpdateState::RollbackPaused, MANUALLY_PAUSED)),
                    _ => None,
                };
                let refuse = |name, now| StoreError::NothingToPause { name, now };
                self.move_rollout(&id, pause, refuse, index, at, undo, changes)?;
            }
            Action::ResumeRollout { id } => {
                let resume = |state| match state {
                    UpdateState::Paused => Some((UpdateState::Updating, "update resumed")),
                    UpdateState::RollbackPaused => Some((UpdateState::RollbackStarted, "rollback resumed")),
                    _ => None,
                };
                let refuse = |name, now| StoreError::NothingToResume { name, now };
                self.move_rollout(&id, resume, refuse, index, at, undo, changes)?;
            }
            Action::ApproveRollout { id } => {
                let current =
                    self.services.get(&id).ok_or_else(|| StoreError::NotFound { kind: "service", id: id.clone() })?;
                let waiting = current.update_status.as_ref().is_some_and(|s| {
                    s.state == UpdateState::Updating
                        && s.step.as_ref().is_some_and(|step| step.waiting == Some(StepWait::Approval))
                });
                if !waiting {
                    return Err(StoreError::NothingToApprove {
                        name: current.spec.name.clone(),
                        now: rollout_state(current),
                    });
                }
                let mut service = Service::clone(current);
                let status = service.update_status.as_mut().expect("checked above");
                let step = status.step.as_mut().expect("checked above");
                status.message = format!("step {}/{} approved", step.index + 1, step.count);
                step.index += 1;
                step.waiting = None;
                service.status_version = index;
                service.updated_at = at;
                self.put_service(service, ChangeKind::Update, undo, changes);
            }
            Action::AbortRollout { id } => {
                let current =
                    self.services.get(&id).ok_or_else(|| StoreError::NotFound { kind: "service", id: id.clone() })?;
                let abortable = matches!(
                    current.update_status.as_ref().map(|s| s.state),
                    Some(UpdateState::Updating | UpdateState::Paused)
                );
                let Some(previous) = current.previous_spec.clone().filter(|_| abortable) else {
                    return Err(StoreError::NothingToAbort {
                        name: current.spec.name.clone(),
                        now: rollout_state(current),
                    });
                };
                let message = format!("{MANUALLY_ABORTED} (revision {}); rolling back", current.revision);
                let service = rolled_back(current, previous, message, index, at);
                self.abort_rollout_record(&id, at, undo);
                self.put_rollback(service, origin, undo, changes)?;
            }
            Action::RecordStack { stack, expected_revision, digest, removed, group } => {
                self.record_stack(
                    stacks::StackRecord { stack, expected_revision, digest, removed, group },
                    index,
                    at,
                    origin,
                    undo,
                    changes,
                )?;
            }
            Action::SetGroupMember { stack, revision, service_id, state } => {
                let group = GroupRef { stack, revision, waiting: false };
                self.set_member(group, &service_id, state, index, at, undo, changes);
            }
            Action::FailGroup { stack, revision, service_id, task_id, message } => {
                let group = GroupRef { stack, revision, waiting: false };
                self.fail_group(group, &service_id, &task_id, message, index, at, undo, changes);
            }
            Action::RemoveService { id } => {
                let service =
                    self.remove_service(&id).ok_or_else(|| StoreError::NotFound { kind: "service", id: id.clone() })?;
                if let Some(group) = &service.group {
                    self.set_member(group.clone(), &id, MemberState::Removed, index, at, undo, changes);
                }
                undo.push(Undo::Revisions(id.clone(), self.revisions.remove(&id)));
                undo.push(Undo::Rollouts(id.clone(), self.rollouts.remove(&id)));
                self.slot_index.services.remove(&id);
                undo.push(Undo::Service(id, Some(service.clone())));
                changes.push(Change { kind: ChangeKind::Remove, index, at, object: Object::Service(service) });
            }
            Action::PutNode { mut node } => {
                node.version = index;
                node.updated_at = at;
                let old = self.nodes.insert(node.id.clone(), node.clone());
                let kind = if old.is_some() { ChangeKind::Update } else { ChangeKind::Create };
                undo.push(Undo::Node(node.id.clone(), old));
                changes.push(Change { kind, index, at, object: Object::Node(node) });
            }
            Action::UpdateNodeSpec { id, expected_version, spec } => {
                let mut node =
                    self.nodes.get(&id).ok_or_else(|| StoreError::NotFound { kind: "node", id: id.clone() })?.clone();
                if node.version != expected_version {
                    return Err(StoreError::NodeOutOfSequence {
                        id: id.clone(),
                        current: node.version,
                        expected: expected_version,
                    });
                }
                let role = node.spec.role;
                node.spec = spec;
                node.spec.role = role;
                node.version = index;
                node.updated_at = at;
                let old = self.nodes.insert(node.id.clone(), node.clone());
                undo.push(Undo::Node(node.id.clone(), old));
                changes.push(Change { kind: ChangeKind::Update, index, at, object: Object::Node(node) });
            }
            Action::RemoveNode { id } => {
                let node =
                    self.nodes.remove(&id).ok_or_else(|| StoreError::NotFound { kind: "node", id: id.clone() })?;
                undo.push(Undo::Node(id.clone(), Some(node.clone())));
                if self.revoked_nodes.insert(id.clone()) {
                    undo.push(Undo::Unrevoke(id.clone()));
                }
                changes.push(Change { kind: ChangeKind::Remove, index, at, object: Object::Node(node) });
            }
            Action::PutTask { task } => self.put_task(task, index, at, undo, changes),
            Action::SetDesiredState { id, desired } => {
                if let Some(task) = self.task(&id)
                    && desired > task.desired_state
                {
                    let mut task = task.clone();
                    task.desired_state = desired;
                    self.put_task_change(task, index, at, undo, changes);
                }
            }
            Action::ReleaseTask { id, gate, otherwise } => match self.task(&id) {
                Some(task)
                    if task.prepared_ahead()
                        && task.desired_state == TaskState::Ready
                        && !task.status.state.is_terminal() =>
                {
                    let mut task = task.clone();
                    if gate.is_none() {
                        task.desired_state = TaskState::Running;
                    }
                    task.start_gate = gate;
                    if task.origin == TaskOrigin::Update {
                        self.record_slot(&task, index, at, undo);
                    }
                    self.put_task_change(task, index, at, undo, changes);
                }
                _ => self.put_task(otherwise, index, at, undo, changes),
            },
            Action::KeepTask { id } => {
                if let Some(task) = self.task(&id)
                    && task.desired_state <= TaskState::Running
                    && !task.kept
                {
                    let mut task = task.clone();
                    task.kept = true;
                    self.put_task_change(task, index, at, undo, changes);
                }
            }
            Action::FinishRollout { id } => {
                let service =
                    self.services.get(&id).ok_or_else(|| StoreError::NotFound { kind: "service", id: id.clone() })?;
                let name = service.spec.name.clone();
                let kept: Vec<Task> = self
                    .tasks_of_service(&id)
                    .filter(|t| t.kept && t.desired_state <= TaskState::Running)
                    .map(Task::clone)
                    .collect();
                if kept.is_empty() {
                    return Err(StoreError::NothingToFinish { name });
                }
                for mut task in kept {
                    task.desired_state = TaskState::Shutdown;
                    task.remove_container = true;
                    self.put_task_change(task, index, at, undo, changes);
                }
            }
            Action::RetireTask { id, remove_container } => {
                if let Some(task) = self.task(&id)
                    && (task.desired_state < TaskState::Shutdown || (remove_container && !task.remove_container))
                {
                    let mut task = task.clone();
                    task.desired_state = task.desired_state.max(TaskState::Shutdown);
                    task.remove_container |= remove_container;
                    self.put_task_change(task, index, at, undo, changes);
                }
            }
            Action::SetTaskStatus { id, status } => {
                if let Some(task) = self.task(&id)
                    && (status.state > task.status.state
                        || (status.state == task.status.state && status != task.status))
                {
                    let mut task = task.clone();
                    task.status = status;
                    if task.status.state == TaskState::Running && task.running_at.is_none() {
                        task.running_at = Some(at);
                    }
                    self.put_task_change(task, index, at, undo, changes);
                }
            }
            Action::AssignTask { id, node_id } => {
                if let Some(task) = self.task(&id)
                    && task.status.state < TaskState::Assigned
                    && (task.node_id.is_empty() || task.node_id == node_id)
                {
                    let mut task = task.clone();
                    let message = if task.node_id.is_empty() {
                        "scheduler assigned task to node"
                    } else {
                        "scheduler confirmed task can run on preassigned node"
                    };
                    task.node_id = node_id;
                    task.status = TaskStatus {
                        state: TaskState::Assigned,
                        timestamp: at,
                        message: message.into(),
                        ..Default::default()
                    };
                    self.put_task_change(task, index, at, undo, changes);
                }
            }
            Action::MarkUnschedulable { id, err } => {
                if let Some(task) = self.task(&id)
                    && task.status.state < TaskState::Assigned
                    && (task.status.state != TaskState::Pending || task.status.err != err)
                {
                    let mut task = task.clone();
                    task.status = TaskStatus {
                        state: TaskState::Pending,
                        timestamp: at,
                        message: "pending task scheduling".into(),
                        err,
                        ..Default::default()
                    };
                    self.put_task_change(task, index, at, undo, changes);
                }
            }
            Action::DeleteTasks { ids } => {
                for id in ids {
                    if let Some(task) = self.remove_task(&id) {
                        undo.push(Undo::Task(id.clone(), Some(task.clone())));
                        changes.push(Change { kind: ChangeKind::Remove, index, at, object: Object::Task(task) });
                    }
                }
            }
            Action::SetNodeStatus { id, status, description } => {
                if let Some(node) = self.nodes.get(&id)
                    && (node.status != status || description.as_ref().is_some_and(|d| *d != node.description))
                {
                    let mut node = node.clone();
                    node.status = status;
                    if let Some(description) = description {
                        node.description = description;
                    }
                    node.version = index;
                    node.updated_at = at;
                    let old = self.nodes.insert(node.id.clone(), node.clone());
                    undo.push(Undo::Node(node.id.clone(), old));
                    changes.push(Change { kind: ChangeKind::Update, index, at, object: Object::Node(node) });
                }
            }
            Action::RemoveTask { id } => {
                let task =
                    self.remove_task(&id).ok_or_else(|| StoreError::NotFound { kind: "task", id: id.clone() })?;
                undo.push(Undo::Task(id.clone(), Some(task.clone())));
                changes.push(Change { kind: ChangeKind::Remove, index, at, object: Object::Task(task) });
            }
        }
        Ok(())
    }

    /// A task written whole (`PutTask`, or a release's fallback). Proposed by the control loop from
    /// a view that may predate the service's removal: a task for a service that is gone is
    /// skipped, so the rest of the entry (other services' tasks) still applies.
    fn put_task(&mut self, mut task: Task, index: u64, at: u64, undo: &mut Vec<Undo>, changes: &mut Vec<Change>) {
        if !self.services.contains_key(&task.service_id) {
            return;
        }
        task.version = index;
        task.updated_at = at;
        let old = self.set_task(task.clone());
        let kind = if old.is_some() { ChangeKind::Update } else { ChangeKind::Create };
        undo.push(Undo::Task(task.id.clone(), old.clone()));
        // A task prepared ahead joins the rollout's record when it is released.
        if old.is_none() && task.origin == TaskOrigin::Update && !task.prepared_ahead() {
            self.record_slot(&task, index, at, undo);
        }
        changes.push(Change { kind, index, at, object: Object::Task(task) });
    }

    fn put_task_change(
        &mut self,
        mut task: Task,
        index: u64,
        at: u64,
        undo: &mut Vec<Undo>,
        changes: &mut Vec<Change>,
    ) {
        task.version = index;
        task.updated_at = at;
        let old = self.set_task(task.clone());
        if let Some(before) = &old {
            self.observe_slot_task(before, &task, at, undo);
        }
        undo.push(Undo::Task(task.id.clone(), old));
        changes.push(Change { kind: ChangeKind::Update, index, at, object: Object::Task(task) });
    }

    fn checked_service(&self, id: &str, expected_version: u64) -> Result<&Service, StoreError> {
        let service =
            self.services.get(id).ok_or_else(|| StoreError::NotFound { kind: "service", id: id.to_string() })?;
        if service.version != expected_version {
            return Err(StoreError::OutOfSequence {
                name: service.spec.name.clone(),
                current: service.version,
                expected: expected_version,
            });
        }
        Ok(service)
    }

    /// Writes a rolled-back service (see [`rolled_back`]) as its next revision.
    fn put_rollback(
        &mut self,
        mut service: Service,
        origin: &Origin,
        undo: &mut Vec<Undo>,
        changes: &mut Vec<Change>,
    ) -> Result<(), StoreError> {
        self.record_revision(&mut service, origin, undo)?;
        self.put_service(service, ChangeKind::Update, undo, changes);
        Ok(())
    }

    /// `rollout pause` and `resume`: the service's update status moves as `to` says (a status-only
    /// write), or the command is refused (`refuse(name, where it stands)`) when `to` says none.
    #[allow(clippy::too_many_arguments)]
    fn move_rollout(
        &mut self,
        id: &str,
        to: impl Fn(UpdateState) -> Option<(UpdateState, &'static str)>,
        refuse: impl Fn(String, String) -> StoreError,
        index: u64,
        at: u64,
        undo: &mut Vec<Undo>,
        changes: &mut Vec<Change>,
    ) -> Result<(), StoreError> {
        let current =
            self.services.get(id).ok_or_else(|| StoreError::NotFound { kind: "service", id: id.to_string() })?;
        let Some((state, message)) = current.update_status.as_ref().and_then(|s| to(s.state)) else {
            return Err(refuse(current.spec.name.clone(), rollout_state(current)));
        };
        let mut service = Service::clone(current);
        let status = service.update_status.as_mut().expect("checked by `to`");
        status.state = state;
        status.message = message.into();
        service.status_version = index;
        service.updated_at = at;
        self.put_service(service, ChangeKind::Update, undo, changes);
        Ok(())
    }

    /// `service`'s spec (just made current at `service.spec_version`, `service.updated_at`) as its
    /// next revision, keeping the newest `revision_history_limit` of the service.
    fn record_revision(
        &mut self,
        service: &mut Service,
        origin: &Origin,
        undo: &mut Vec<Undo>,
    ) -> Result<(), StoreError> {
        let limit = self.revision_history_limit();
        service.revision += 1;
        let revision = Revision {
            service_id: service.id.clone(),
            number: service.revision,
            spec_version: service.spec_version,
            created_at: service.updated_at,
            created_by: origin.by.clone(),
            change_cause: origin.cause.clone(),
            spec: Arc::new(service.spec.clone()),
        };
        undo.push(Undo::Revisions(service.id.clone(), self.revisions.get(&service.id).cloned()));
        let kept = self.revisions.entry(service.id.clone()).or_default();
        kept.push(Arc::new(revision));
        let excess = kept.len().saturating_sub(usize::try_from(limit).unwrap_or(usize::MAX));
        kept.drain(..excess);
        // The id of the rollout this spec change starts (if it starts one).
        if origin.rollout_id.is_empty() {
            service.rollout_id = format!("{}-{}", service.spec.name, service.revision);
        } else if self.rollouts(&service.id).iter().any(|r| r.id == origin.rollout_id) {
            return Err(StoreError::RolloutIdTaken { name: service.spec.name.clone(), id: origin.rollout_id.clone() });
        } else {
            service.rollout_id = origin.rollout_id.clone();
        }
        Ok(())
    }

    /// Records `service`'s rollout as its update status changed (`old`: the service before the
    /// write): a new spec's first status opens a record (and supersedes an unfinished one),
    /// later ones update it and add to its events. In the same write as the status, so every
    /// manager holds the same records and a new leader appends to them.
    fn track_rollout(&mut self, service: &Service, old: Option<&Service>, at: u64, undo: &mut Vec<Undo>) {
        let Some(status) = &service.update_status else {
            // A new spec whose rollout has not begun yet (or never will: nothing to replace):
            // an unfinished rollout of an older spec is over all the same.
            if let Some(last) = self.rollouts.get(&service.id).and_then(|r| r.last())
                && !last.state.is_final()
                && last.spec_version != service.spec_version
            {
                undo.push(Undo::Rollouts(service.id.clone(), self.rollouts.get(&service.id).cloned()));
                let last = self.rollouts.get_mut(&service.id).and_then(|r| r.last_mut()).expect("checked");
                supersede(Arc::make_mut(last), service.revision, at);
            }
            return;
        };
        if old.is_some_and(|o| o.spec_version == service.spec_version && o.update_status.as_ref() == Some(status)) {
            return;
        }
        let state = RolloutState::from(status.state);
        let limit = self.revision_history_limit();
        let started_by = self
            .revisions(&service.id)
            .iter()
            .rev()
            .find(|r| r.number == service.revision)
            .map(|r| r.created_by.clone())
            .unwrap_or_default();
        undo.push(Undo::Rollouts(service.id.clone(), self.rollouts.get(&service.id).cloned()));
        let records = self.rollouts.entry(service.id.clone()).or_default();
        let finished = |state: RolloutState| state.is_final().then(|| status.completed_at.unwrap_or(at));
        if let Some(last) = records.last_mut()
            && last.spec_version == service.spec_version
        {
            let record = Arc::make_mut(last);
            // An ended record stays ended (a late status of an aborted update changes nothing).
            if record.state.is_final() {
                return;
            }
            record.state = state;
            record.message.clone_from(&status.message);
            record.finished_at = finished(state);
            push_event(record, RolloutEvent { at, state, message: status.message.clone() });
            return;
        }
        if let Some(last) = records.last_mut()
            && !last.state.is_final()
        {
            supersede(Arc::make_mut(last), service.revision, at);
        }
        let rollback = matches!(
            state,
            RolloutState::RollbackStarted | RolloutState::RollbackPaused | RolloutState::RollbackCompleted
        );
        let id = if service.rollout_id.is_empty() {
            format!("{}-{}", service.spec.name, service.revision)
        } else {
            service.rollout_id.clone()
        };
        records.push(Arc::new(Rollout {
            id,
            service_id: service.id.clone(),
            service_name: service.spec.name.clone(),
            kind: if rollback { RolloutKind::Rollback } else { RolloutKind::Update },
            from_revision: service.revision.saturating_sub(1),
            to_revision: service.revision,
            spec_version: service.spec_version,
            config: if rollback { service.spec.rollback_config.clone() } else { service.spec.update_config.clone() },
            state,
            message: status.message.clone(),
            started_by,
            started_at: status.started_at.unwrap_or(at),
            finished_at: finished(state),
            events: vec![RolloutEvent { at, state, message: status.message.clone() }],
            batches: Vec::new(),
            unrecorded_slots: 0,
            group: service.group.as_ref().map(|g| format!("{}-{}", g.stack, g.revision)).unwrap_or_default(),
        }));
        let excess = records.len().saturating_sub(usize::try_from(limit).unwrap_or(usize::MAX));
        records.drain(..excess);
    }

    /// A task the updater made (origin `update`): a slot of the current batch of its rollout, or
    /// the first of a new batch when it comes in a later entry.
    fn record_slot(&mut self, task: &Task, index: u64, at: u64, undo: &mut Vec<Undo>) {
        let Some(last) = self.rollouts.get_mut(&task.service_id).and_then(|r| r.last_mut()) else { return };
        if last.spec_version != task.spec_version || last.state.is_final() {
            return;
        }
        let record = Arc::make_mut(last);
        // The open record's slots are all in its index: counted there, not by walking its batches
        // on every task the updater makes.
        let listed = self.slot_index.services.get(&task.service_id).map_or(0, |slots| slots.by_task.len());
        if listed >= shoal_types::ROLLOUT_SLOTS_KEPT {
            record.unrecorded_slots += 1;
            undo.push(Undo::RolloutUnrecorded(task.service_id.clone()));
            return;
        }
        let name = task.name();
        let mut slot = RolloutSlot {
            name: name.clone(),
            new_task: task.id.clone(),
            node: task.node_id.clone(),
            ..Default::default()
        };
        // Its old tasks told to stop just before it, in this entry (stop-first).
        let stopping = &mut self.slot_index.stopping;
        for (_, _, old, told_at) in
            stopping.extract_if(.., |(service, old_name, _, _)| *service == task.service_id && *old_name == name)
        {
            slot.old_tasks.push(old);
            slot.stop_requested_at.get_or_insert(told_at);
        }
        match record.batches.last_mut() {
            Some(batch) if batch.index == index => batch.slots.push(slot),
            _ => {
                let number = record.batches.len() as u64 + 1;
                record.batches.push(RolloutBatch { number, index, started_at: at, slots: vec![slot] });
            }
        }
        let at_batch = record.batches.len() - 1;
        let at_slot = record.batches[at_batch].slots.len() - 1;
        let slots = self.slot_index.services.entry(task.service_id.clone()).or_default();
        slots.by_task.insert(task.id.clone(), (at_batch, at_slot));
        slots.by_name.insert(name, (at_batch, at_slot));
        undo.push(Undo::RolloutSlot(task.service_id.clone()));
    }

    /// A task changed (`before` → `after`): if it is the new task or an old task of a slot of its
    /// service's open rollout, the slot records when it was told to stop, stopped, started, ran
    /// or failed.
    fn observe_slot_task(&mut self, before: &Task, after: &Task, at: u64, undo: &mut Vec<Undo>) {
        let Some(slots) = self.slot_index.services.get(&after.service_id) else { return };
        let Some(record) = self.rollouts.get(&after.service_id).and_then(|r| r.last()) else { return };
        let (monitor, spec_version) = (record.config.monitor.as_std().as_millis() as u64, record.spec_version);
        let new = slots.by_task.get(&after.id).copied();
        let old = (new.is_none() && after.spec_version < spec_version)
            .then(|| slots.by_name.get(&after.name()).copied())
            .flatten();
        let told_to_stop = before.desired_state <= TaskState::Running && after.desired_state > TaskState::Running;
        let Some((batch, index)) = new.or(old) else {
            if told_to_stop
                && after.spec_version < spec_version
                && after.origin != TaskOrigin::Restart
                && !after.prepared_ahead()
            {
                // Maybe the old task of a slot recorded next in this entry (stop-first).
                let entry = (after.service_id.clone(), after.name(), after.id.clone(), at);
                self.slot_index.stopping.push(entry);
            }
            return;
        };
        let was = record.batches[batch].slots[index].clone();
        let mut slot = was.clone();
        let (from, to) = (before.status.state, after.status.state);
        if new.is_some() {
            if !after.node_id.is_empty() {
                slot.node.clone_from(&after.node_id);
            }
            // Started: it got as far as starting (a task that failed before has no start time).
            if from < TaskState::Starting
                && (TaskState::Starting..=TaskState::Running).contains(&to)
                && slot.started_at.is_none()
            {
                slot.started_at = Some(at);
            }
            if from < TaskState::Running
                && to >= TaskState::Running
                && slot.running_at.is_none()
                && to == TaskState::Running
            {
                slot.running_at = Some(at);
            }
            let failed =
                to.is_terminal() && !from.is_terminal() && to != TaskState::Complete && to != TaskState::Shutdown;
            if failed && slot.failure.is_none() && slot.running_at.is_none_or(|running| at <= running + monitor) {
                let why = if after.status.err.is_empty() { &after.status.message } else { &after.status.err };
                slot.failure = Some(format!("{}: {why}", to.as_str()));
                slot.failed_at = Some(at);
            }
        } else {
            if told_to_stop {
                if !slot.old_tasks.contains(&after.id) {
                    slot.old_tasks.push(after.id.clone());
                }
                slot.stop_requested_at.get_or_insert(at);
            }
            if !from.is_terminal() && to.is_terminal() && slot.old_tasks.contains(&after.id) {
                slot.stopped_at = Some(at);
            }
        }
        if slot != was {
            let service_id = after.service_id.clone();
            let record = self.rollouts.get_mut(&service_id).and_then(|r| r.last_mut()).expect("found above");
            Arc::make_mut(record).batches[batch].slots[index] = slot;
            undo.push(Undo::RolloutSlotWas(service_id, batch, index, was));
        }
    }

    /// Rebuilds the slot index of service `id` from its open rollout record (none if it has none).
    fn reindex_slots(&mut self, id: &str) {
        let Some(record) = self.rollouts.get(id).and_then(|r| r.last()).filter(|r| !r.state.is_final()) else {
            self.slot_index.services.remove(id);
            return;
        };
        let mut slots = SlotIndex::default();
        for (b, batch) in record.batches.iter().enumerate() {
            for (i, slot) in batch.slots.iter().enumerate() {
                slots.by_task.insert(slot.new_task.clone(), (b, i));
                slots.by_name.insert(slot.name.clone(), (b, i));
            }
        }
        self.slot_index.services.insert(id.to_string(), slots);
    }

    /// Marks the newest rollout record of `id` aborted (`rollout abort`).
    fn abort_rollout_record(&mut self, id: &str, at: u64, undo: &mut Vec<Undo>) {
        undo.push(Undo::Rollouts(id.to_string(), self.rollouts.get(id).cloned()));
        if let Some(last) = self.rollouts.get_mut(id).and_then(|r| r.last_mut())
            && !last.state.is_final()
        {
            let record = Arc::make_mut(last);
            record.state = RolloutState::Aborted;
            record.finished_at = Some(at);
            record.message = "aborted by hand; rolling back".into();
            push_event(record, RolloutEvent { at, state: RolloutState::Aborted, message: record.message.clone() });
        }
    }

    fn revision_history_limit(&self) -> u64 {
        self.cluster
            .as_ref()
            .map_or(shoal_types::limits::DEFAULT_REVISION_HISTORY_LIMIT, |c| c.spec.revision_history_limit)
            .max(1)
    }

    fn put_service(&mut self, service: Service, kind: ChangeKind, undo: &mut Vec<Undo>, changes: &mut Vec<Change>) {
        // The entry that wrote it: a status-only write leaves `version` and sets `status_version`.
        let (index, at) = (service.version.max(service.status_version), service.updated_at);
        let mut service = service;
        if service.virtual_ip.is_empty() && !service.spec.task.networks.is_empty() {
            // Kept from an earlier version when it had one; the user-facing writes checked
            // that the pool has one left (a rollback to a spec on a network may find none).
            match self.services.get(&service.id).map(|s| s.virtual_ip.clone()).filter(|v| !v.is_empty()) {
                Some(vip) => service.virtual_ip = vip,
                None => match self.free_vip() {
                    Some(vip) => {
                        undo.push(Undo::VipCursor(self.vip_cursor));
                        self.vip_cursor = vip;
                        service.virtual_ip = std::net::Ipv4Addr::from(vip).to_string();
                    }
                    None => {
                        tracing::warn!(service = %service.spec.name, "no virtual IP left in the pool; its name does not resolve")
                    }
                },
            }
        }
        let service = Arc::new(service);
        let old = self.set_service(service.clone());
        let status_changed = old
            .as_deref()
            .is_none_or(|o| o.spec_version != service.spec_version || o.update_status != service.update_status);
        if status_changed {
            self.track_rollout(&service, old.as_deref(), at, undo);
            self.reindex_slots(&service.id);
        }
        undo.push(Undo::Service(service.id.clone(), old));
        changes.push(Change { kind, index, at, object: Object::Service(service) });
    }

    fn set_service(&mut self, service: Arc<Service>) -> Option<Arc<Service>> {
        let old = self.remove_service(&service.id);
        self.service_names.insert(service.spec.name.clone(), service.id.clone());
        if let Some(vip) = vip_number(&service.virtual_ip) {
            self.vips.insert(vip, service.id.clone());
        }
        for network in &service.spec.task.networks {
            self.network_members.entry(network.clone()).or_default().insert(service.id.clone());
        }
        self.services.insert(service.id.clone(), service);
        old
    }

    fn remove_service(&mut self, id: &str) -> Option<Arc<Service>> {
        let service = self.services.remove(id)?;
        if self.service_names.get(&service.spec.name).is_some_and(|owner| owner == id) {
            self.service_names.remove(&service.spec.name);
        }
        if let Some(vip) = vip_number(&service.virtual_ip)
            && self.vips.get(&vip).is_some_and(|owner| owner == id)
        {
            self.vips.remove(&vip);
        }
        for network in &service.spec.task.networks {
            if let Some(members) = self.network_members.get_mut(network) {
                members.remove(id);
                if members.is_empty() {
                    self.network_members.remove(network);
                }
            }
        }
        Some(service)
    }

    /// The services whose current spec is on network `name`.
    pub fn services_on_network<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a Service> + 'a {
        self.network_members.get(name).into_iter().flatten().filter_map(|id| self.service(id))
    }

    /// The cluster's virtual IP pool.
    fn vip_pool(&self) -> &str {
        self.cluster.as_ref().map(|c| c.spec.vip_pool.as_str()).unwrap_or(shoal_types::DEFAULT_VIP_POOL)
    }

    /// The first address of the cluster's virtual IP pool after the one given last that no
    /// service has, coming round to the start of the pool.
    fn free_vip(&self) -> Option<u32> {
        let (first, last) = shoal_types::vip_pool_range(self.vip_pool()).ok()?;
        let start = if (first..last).contains(&self.vip_cursor) { self.vip_cursor + 1 } else { first };
        let lowest_free = |from: u32, to: u32| {
            let mut candidate = from;
            for used in self.vips.range(from..=to).map(|(n, _)| *n) {
                if used != candidate {
                    break;
                }
                candidate += 1;
            }
            (candidate <= to).then_some(candidate)
        };
        lowest_free(start, last).or_else(|| if start > first { lowest_free(first, start - 1) } else { None })
    }

    /// Refuses a spec on networks that do not exist, or one that needs a virtual IP (service
    /// `id` has none yet) when the pool has none left.
    fn check_networks(&self, id: &str, spec: &ServiceSpec) -> Result<(), StoreError> {
        for (i, network) in spec.task.networks.iter().enumerate() {
            if self.data_by_name(DataKind::Network, network).is_none() {
                return Err(StoreError::NetworkNotFound {
                    service: spec.name.clone(),
                    index: i,
                    name: network.clone(),
                });
            }
        }
        let has_vip = self.services.get(id).is_some_and(|s| !s.virtual_ip.is_empty());
        if !spec.task.networks.is_empty() && !has_vip && self.free_vip().is_none() {
            return Err(StoreError::NoVirtualIp { service: spec.name.clone(), pool: self.vip_pool().to_string() });
        }
        Ok(())
    }

    fn set_task(&mut self, mut task: Task) -> Option<Task> {
        self.task_specs.intern(&mut task);
        let old = self.remove_task(&task.id);
        self.index_task(&task);
        self.tasks.insert(task.id.clone(), Arc::new(task));
        old
    }

    fn index_task(&mut self, task: &Task) {
        self.tasks_by_service.entry(task.service_id.clone()).or_default().insert(task.id.clone());
        if is_pending(task) {
            self.pending.insert(task.id.clone());
        }
        if !task.node_id.is_empty() {
            self.tasks_by_node.entry(task.node_id.clone()).or_default().insert(task.id.clone());
        }
    }

    fn remove_task(&mut self, id: &str) -> Option<Task> {
        // Shared only with a snapshot view being written; copied then, moved otherwise.
        let task = Arc::unwrap_or_clone(self.tasks.remove(id)?);
        self.pending.remove(id);
        for (index, key) in [(&mut self.tasks_by_service, &task.service_id), (&mut self.tasks_by_node, &task.node_id)] {
            if let Some(set) = index.get_mut(key) {
                set.remove(id);
                if set.is_empty() {
                    index.remove(key);
                }
            }
        }
        if !self.tasks_by_service.contains_key(&task.service_id) {
            self.task_specs.forget(&task.service_id);
        }
        Some(task)
    }

    fn undo(&mut self, step: Undo) {
        match step {
            Undo::Cluster(old) => self.cluster = old,
            Undo::Security(old) => self.security = old,
            Undo::Stack(name, old) => match old {
                Some(old) => {
                    self.stacks.insert(name, old);
                }
                None => {
                    self.stacks.remove(&name);
                }
            },
            Undo::Route(id, old) => match old {
                Some(old) => {
                    self.routes.insert(id, old);
                }
                None => {
                    self.routes.remove(&id);
                }
            },
            Undo::Data(id, old) => {
                if let Some(gone) = self.data.remove(&id) {
                    self.data_names.remove(&(gone.kind, gone.spec.name.clone()));
                }
                if let Some(old) = old {
                    self.data_names.insert((old.kind, old.spec.name.clone()), id.clone());
                    self.data.insert(id, old);
                }
            }
            Undo::Unrevoke(id) => {
                self.revoked_nodes.remove(&id);
            }
            Undo::VipCursor(cursor) => self.vip_cursor = cursor,
            Undo::Service(id, old) => {
                self.remove_service(&id);
                if let Some(old) = old {
                    self.set_service(old);
                }
            }
            Undo::Node(id, Some(old)) => {
                self.nodes.insert(id, old);
            }
            Undo::Node(id, None) => {
                self.nodes.remove(&id);
            }
            Undo::Task(id, old) => {
                self.remove_task(&id);
                if let Some(old) = old {
                    self.set_task(old);
                }
            }
            Undo::Revisions(id, Some(old)) => {
                self.revisions.insert(id, old);
            }
            Undo::Revisions(id, None) => {
                self.revisions.remove(&id);
            }
            Undo::Rollouts(id, Some(old)) => {
                self.rollouts.insert(id.clone(), old);
                self.reindex_slots(&id);
            }
            Undo::Rollouts(id, None) => {
                self.rollouts.remove(&id);
                self.reindex_slots(&id);
            }
            Undo::RolloutSlotWas(id, batch, slot, was) => {
                if let Some(record) = self.rollouts.get_mut(&id).and_then(|r| r.last_mut()) {
                    Arc::make_mut(record).batches[batch].slots[slot] = was;
                }
            }
            Undo::RolloutUnrecorded(id) => {
                if let Some(record) = self.rollouts.get_mut(&id).and_then(|r| r.last_mut()) {
                    Arc::make_mut(record).unrecorded_slots -= 1;
                }
            }
            Undo::RolloutSlot(id) => {
                if let Some(record) = self.rollouts.get_mut(&id).and_then(|r| r.last_mut()) {
                    let record = Arc::make_mut(record);
                    if let Some(batch) = record.batches.last_mut() {
                        batch.slots.pop();
                        if batch.slots.is_empty() {
                            record.batches.pop();
                        }
                    }
                }
                self.reindex_slots(&id);
            }
        }
    }
}

/// `current` rolled back by hand to `spec`, push-style: `spec` becomes current as a new version
/// (so rolling back twice returns to where it started and the history records both steps), what
/// was current becomes the previous spec, and the rollback starts with `message`.
fn rolled_back(current: &Service, spec: ServiceSpec, message: String, index: u64, at: u64) -> Service {
    let mut service = current.clone();
    service.previous_spec = Some(std::mem::replace(&mut service.spec, spec));
    service.previous_spec_version = Some(service.spec_version);
    service.spec_version = index;
    service.update_status = Some(UpdateStatus {
        state: UpdateState::RollbackStarted,
        message,
        started_at: Some(at),
        completed_at: None,
        slots: None,
        step: None,
    });
    service.version = index;
    service.updated_at = at;
    service
}

/// Ends an unfinished rollout record: the spec of revision `revision` replaced what it rolled out.
fn supersede(record: &mut Rollout, revision: u64, at: u64) {
    record.state = RolloutState::Superseded;
    record.finished_at = Some(at);
    record.message = format!("superseded by revision {revision}");
    push_event(record, RolloutEvent { at, state: RolloutState::Superseded, message: record.message.clone() });
}

/// Adds `event` to `record`'s events, keeping the newest [`shoal_types::ROLLOUT_EVENTS_KEPT`].
fn push_event(record: &mut Rollout, event: RolloutEvent) {
    if record.events.len() == shoal_types::ROLLOUT_EVENTS_KEPT {
        record.events.remove(1);
    }
    record.events.push(event);
}

/// Where a service's rollout stands, in words, for a refused pause or resume.
fn rollout_state(service: &Service) -> String {
    match &service.update_status {
        None => "no update has run".into(),
        Some(status) => {
            let state = status.state.as_str().replace('_', " ");
            match &status.step {
                Some(step) => format!("its update is {state}, at step {}/{}", step.index + 1, step.count),
                None => format!("its update is {state}"),
            }
        }
    }
}

mod stacks;
#[cfg(test)]
mod stacks_tests;
#[cfg(test)]
mod tests;
