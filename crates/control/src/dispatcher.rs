//! The dispatcher (leader only): agent sessions, heartbeats and node health, assignment streams,
//! and batched task status writes. Followers answer `Unavailable` with the leader's address.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLockReadGuard};
use shoal_proto::v1::dispatcher_server::Dispatcher;
use shoal_proto::v1::*;
use shoal_raft::{RaftRole, RaftStatus};
use shoal_store::{Action, Change, ChangeKind, Object, State};
use shoal_types::{
    Availability, Node, NodeDescription, NodeRole, NodeSpec, NodeState, NodeStatus, Task, TaskState, TaskStatus,
};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::logs::LogBroker;
use crate::router::{ChangeRouter, Subscription, Taken};
use crate::traffic::TrafficTable;
use crate::{ApiError, Manager};

/// What the dispatcher needs of the manager it runs in, and nothing more: the state as applied
/// here, proposals, the raft status (is this manager the leader, where are the others), the
/// changes of each node and the wall clock. [`Manager`] provides it over raft; the unit tests
/// over an in-memory store, as swarmkit tests its dispatcher on `NewMemoryStore(nil)`.
/// Heartbeat deadlines use tokio's clock, which a test can pause.
pub trait Backend: Send + Sync + 'static {
    fn state(&self) -> RwLockReadGuard<'_, State>;
    fn raft_status(&self) -> RaftStatus;
    /// Proposes a batch; resolves once it is applied here (so reads see it).
    fn propose(&self, actions: Vec<Action>) -> impl Future<Output = Result<(), ApiError>> + Send;
    /// Proposes independent actions in as many entries as their size needs.
    fn propose_in_entries(&self, actions: Vec<Action>) -> impl Future<Output = Result<usize, ApiError>> + Send;
    /// Where every applied change is routed to the sessions of the nodes it concerns.
    fn router(&self) -> &Arc<ChangeRouter>;
    /// Open `service logs` reads, which the agents answer.
    fn logs(&self) -> &Arc<LogBroker>;
    /// Unix milliseconds, for the objects the dispatcher creates.
    fn now_millis(&self) -> u64;
    /// Where sessions and missed heartbeats are counted (none in unit tests).
    fn metrics(&self) -> Option<&crate::metrics::ManagerMetrics> {
        None
    }
    /// Every applied change (the ingress table follows services, tasks and nodes).
    fn changes(&self) -> tokio::sync::broadcast::Receiver<Arc<Change>>;
}

impl Backend for Manager {
    fn state(&self) -> RwLockReadGuard<'_, State> {
        Manager::state(self)
    }

    fn raft_status(&self) -> RaftStatus {
        Manager::raft_status(self)
    }

    fn propose(&self, actions: Vec<Action>) -> impl Future<Output = Result<(), ApiError>> + Send {
        Manager::propose(self, actions)
    }

    fn propose_in_entries(&self, actions: Vec<Action>) -> impl Future<Output = Result<usize, ApiError>> + Send {
        Manager::propose_in_entries(self, actions)
    }

    fn router(&self) -> &Arc<ChangeRouter> {
        Manager::router(self)
    }

    fn logs(&self) -> &Arc<LogBroker> {
        Manager::logs(self)
    }

    fn now_millis(&self) -> u64 {
        crate::now_millis()
    }

    fn metrics(&self) -> Option<&crate::metrics::ManagerMetrics> {
        Some(&self.metrics)
    }

    fn changes(&self) -> tokio::sync::broadcast::Receiver<Arc<Change>> {
        Manager::subscribe(self)
    }
}

/// Response metadata naming the leader's address when a follower refuses an agent.
pub const LEADER_HEADER: &str = "x-shoal-leader";
/// A node is DOWN after this many missed heartbeats (Swarm: 3).
const MISSED_BEATS: u32 = 3;
/// The leader answers about this many heartbeats a second at most: past 200 nodes the period
/// grows with their number, as Nomad's `max_heartbeats_per_second` makes it, so a thousand nodes
/// beat every 5 s (Swarm's default) instead of a thousand times a second, and a leader busy with
/// a large change is not also flooded with heartbeats it must answer in time.
const MAX_HEARTBEATS_PER_SECOND: u32 = 200;

/// The heartbeat period when the cluster asks for `configured` and `nodes` nodes run tasks.
pub(crate) fn heartbeat_period(configured: Duration, nodes: usize) -> Duration {
    let nodes = u32::try_from(nodes).unwrap_or(u32::MAX);
    configured.max(Duration::from_secs(1) * nodes / MAX_HEARTBEATS_PER_SECOND)
}

/// After a leader change, nodes get this many periods to reconnect before they can be DOWN
/// (Swarm: 6), so a failover does not reschedule healthy nodes' tasks.
const FAILOVER_GRACE_BEATS: u32 = 6;
/// A pause this long between two health checks (every 100 ms) means this manager did not run:
/// the process was stopped, its VM paused or its runtime starved.
const STALL: Duration = Duration::from_millis(500);
/// Most task statuses written in one raft entry.
const MAX_STATUS_BATCH: usize = 1000;
/// Most task changes sent to an agent in one assignment message.
const MAX_ASSIGNMENT_CHANGES: usize = 1000;
/// Assignment messages waiting for a slow agent. Beyond them the session stops taking from its
/// queue, where further changes coalesce per task.
const ASSIGNMENT_BUFFER: usize = 256;

struct Session {
    id: String,
    last_seen: Instant,
    /// The period the agent was last told: it waits that long before its next beat, even if
    /// the period has shrunk since (nodes left).
    told: Duration,
    /// Not declared down before this, whatever `last_seen` says (set after a stall).
    grace_until: Option<Instant>,
    /// Dropping it ends the node's assignment stream.
    _stop: oneshot::Sender<()>,
}

pub struct DispatcherService<B: Backend = Manager> {
    backend: Arc<B>,
    sessions: Mutex<HashMap<String, Session>>,
    statuses: Mutex<BTreeMap<String, TaskStatus>>,
    flush: Notify,
    /// When this manager last became leader, and in which term.
    leadership: Mutex<Option<(u64, Instant)>>,
    /// Nodes that run tasks, counted every health tick: the heartbeat period grows with them.
    nodes: std::sync::atomic::AtomicUsize,
    /// The ingress table and what the nodes' proxies reported (kept on every manager, so a new
    /// leader has the table at once).
    traffic: Mutex<TrafficTable>,
    /// Bumped when the table, the draining tasks or a report changed: traffic streams look again.
    traffic_tick: tokio::sync::watch::Sender<u64>,
    /// Numbers traffic streams, so a node's newer stream supersedes its older one.
    traffic_streams: std::sync::atomic::AtomicU64,
}

type SessionStream = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<SessionMessage, Status>> + Send>>;
type TrafficStream = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<TrafficUpdate, Status>> + Send>>;
type LogSubscriptionStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<LogSubscription, Status>> + Send>>;
/// The longest log line passed on; longer ones are cut (Docker splits lines at 16 KiB).
const MAX_LOG_LINE: usize = 64 << 10;

impl<B: Backend> DispatcherService<B> {
    pub fn new(backend: Arc<B>) -> Arc<Self> {
        let dispatcher = Arc::new(DispatcherService {
            backend,
            sessions: Mutex::new(HashMap::new()),
            statuses: Mutex::new(BTreeMap::new()),
            flush: Notify::new(),
            leadership: Mutex::new(None),
            nodes: std::sync::atomic::AtomicUsize::new(0),
            traffic: Mutex::new(TrafficTable::default()),
            traffic_tick: tokio::sync::watch::Sender::new(0),
            traffic_streams: std::sync::atomic::AtomicU64::new(0),
        });
        tokio::spawn(dispatcher.clone().maintain_traffic());
        tokio::spawn(dispatcher.clone().flush_statuses());
        tokio::spawn(dispatcher.clone().watch_health());
        dispatcher
    }

    /// The heartbeat period now: the cluster's, longer in a large cluster (see
    /// [`MAX_HEARTBEATS_PER_SECOND`]).
    fn period(&self) -> Duration {
        let configured =
            self.backend.state().cluster().map(|c| c.spec.heartbeat_period.as_std()).unwrap_or(Duration::from_secs(1));
        heartbeat_period(configured, self.nodes.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Refuses the call unless this manager is the leader, pointing the agent at the leader.
    fn check_leader(&self) -> Result<(), Status> {
        let st = self.backend.raft_status();
        if st.role == RaftRole::Leader && st.leader_ready {
            return Ok(());
        }
        let mut status = Status::unavailable("this manager is not the leader; reconnect to the leader");
        if let Some(leader) = st.members.get(&st.leader_id)
            && let Ok(value) = leader.addr.parse()
        {
            status.metadata_mut().insert(LEADER_HEADER, value);
        }
        Err(status)
    }

    /// Checks the session is the node's current one and counts the call as a sign of life;
    /// `told`: the heartbeat period this call's answer tells the agent.
    fn check_session(&self, node_id: &str, session_id: &str, told: Option<Duration>) -> Result<(), Status> {
        let mut sessions = self.sessions.lock();
        match sessions.get_mut(node_id) {
            Some(s) if s.id == session_id => {
                s.last_seen = Instant::now();
                if let Some(told) = told {
                    s.told = told;
                }
                Ok(())
            }
            // Its own code, so an agent tells "open a new session" from "this request is bad".
            _ => Err(Status::not_found("session invalid: no such session on this leader; open a new session")),
        }
    }

    /// Writes queued task statuses; the store keeps only forward transitions.
    ///
    /// A group commit: a status that arrives while nothing is being written goes into the log at
    /// once (rolling updates and restarts wait on it), and whatever arrives while a write is in
    /// flight is merged and written together right after it. Swarm instead waits up to 100 ms to
    /// gather a batch; a fixed wait adds its length to every step an update waits on.
    async fn flush_statuses(self: Arc<Self>) {
        loop {
            self.flush.notified().await;
            loop {
                let batch: Vec<(String, TaskStatus)> = {
                    let mut queue = self.statuses.lock();
                    let keys: Vec<String> = queue.keys().take(MAX_STATUS_BATCH).cloned().collect();
                    keys.into_iter().filter_map(|k| queue.remove(&k).map(|v| (k, v))).collect()
                };
                if batch.is_empty() {
                    break;
                }
                let actions = batch.into_iter().map(|(id, status)| Action::SetTaskStatus { id, status }).collect();
                // Packed by size: a thousand statuses with long error texts can exceed one entry.
                if let Err(e) = self.backend.propose_in_entries(actions).await {
                    // Agents re-report every task's status when they reconnect, so a lost batch heals.
                    tracing::warn!(error = %e, "writing task statuses failed");
                }
            }
        }
    }

    /// Keeps the ingress table current: refreshes the services each applied change touches, and
    /// everything every [`TRAFFIC_RESYNC`] (the safety net: an installed snapshot announces no
    /// changes).
    async fn maintain_traffic(self: Arc<Self>) {
        use tokio::sync::broadcast::error::RecvError;
        let mut changes = self.backend.changes();
        let mut resync = tokio::time::interval(TRAFFIC_RESYNC);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut services: Vec<String> = Vec::new();
            let mut all = false;
            tokio::select! {
                _ = resync.tick() => all = true,
                change = changes.recv() => match change {
                    Ok(change) => match crate::traffic::touched_services(&change) {
                        Some(ids) => services.extend(ids),
                        None => all = true,
                    },
                    Err(RecvError::Lagged(_)) => all = true,
                    Err(RecvError::Closed) => return,
                },
            }
            // Whatever else is queued goes into the same refresh.
            loop {
                match changes.try_recv() {
                    Ok(change) => match crate::traffic::touched_services(&change) {
                        Some(ids) => services.extend(ids),
                        None => all = true,
                    },
                    Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => all = true,
                    Err(_) => break,
                }
            }
            let changed = {
                let state = self.backend.state();
                let mut table = self.traffic.lock();
                if all {
                    table.refresh_all(&state)
                } else {
                    services.sort();
                    services.dedup();
                    table.refresh(&state, services.iter().map(String::as_str))
                }
            };
            // Streams look again only when the table or the draining tasks changed.
            if changed {
                self.traffic_tick.send_modify(|n| *n += 1);
            }
        }
    }

    /// What traffic stream `stream` of node `node_id` is sent next: the whole table the first
    /// time, then the listeners that changed and the node's tasks newly drained.
    fn traffic_update(&self, node_id: &str, sent: &mut TrafficSent) -> Option<TrafficUpdate> {
        let complete = sent.version.is_none();
        // Read before the table is locked: the table's refresh takes the store's read lock and
        // then the table's, so the other order could deadlock behind a waiting store write.
        let vip_pool = if complete {
            self.backend.state().cluster().map(|c| c.spec.vip_pool.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        let table = self.traffic.lock();
        let mut update = TrafficUpdate { version: table.version(), complete, vip_pool, ..TrafficUpdate::default() };
        for (key, listener) in table.listeners() {
            if sent.listeners.get(key).is_none_or(|old| !Arc::ptr_eq(old, listener)) {
                let json = serde_json::to_string(&**listener).expect("listeners serialise");
                if key.address.is_empty() {
                    update.listeners_json.push(json);
                } else {
                    update.vip_listeners_json.push(json);
                }
                sent.listeners.insert(key.clone(), listener.clone());
            }
        }
        let closed: Vec<shoal_types::traffic::ListenerKey> =
            sent.listeners.keys().filter(|k| !table.listeners().contains_key(k)).cloned().collect();
        for key in closed {
            sent.listeners.remove(&key);
            if key.address.is_empty() {
                update.closed_ports.push(u32::from(key.port));
            } else {
                update.closed_json.push(serde_json::to_string(&key).expect("listener keys serialise"));
            }
        }
        let drained = table.drained(node_id);
        sent.drained.retain(|t| drained.contains(t));
        update.drained = drained.into_iter().filter(|t| sent.drained.insert(t.clone())).collect();
        let news = !update.listeners_json.is_empty()
            || !update.vip_listeners_json.is_empty()
            || !update.closed_ports.is_empty()
            || !update.closed_json.is_empty()
            || !update.drained.is_empty();
        if !complete && !news && sent.version == Some(update.version) {
            return None;
        }
        sent.version = Some(update.version);
        Some(update)
    }

    /// Marks nodes DOWN after missed heartbeats (leader only).
    ///
    /// Only time this manager was running counts: after a stall (the process stopped, a VM
    /// paused, the runtime starved) no heartbeat could have been received, so every node gets a
    /// fresh grace (see `forgive_stall`). A stopped leader that is resumed would otherwise find
    /// every session expired and declare every node down before it even learns that another
    /// manager leads now (and with a single manager nobody else would stop it).
    async fn watch_health(self: Arc<Self>) {
        let tick = Duration::from_millis(100);
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_tick = Instant::now();
        loop {
            ticker.tick().await;
            let now = Instant::now();
            let gap = now.duration_since(last_tick);
            last_tick = now;
            if gap > STALL.max(tick * 2) {
                self.forgive_stall(gap - tick);
            }
            // Counted on every manager, so a new leader tells agents the period they already use.
            let nodes = self.backend.state().nodes().filter(|n| n.runs_tasks()).count();
            self.nodes.store(nodes, std::sync::atomic::Ordering::Relaxed);
            let st = self.backend.raft_status();
            if st.role != RaftRole::Leader || !st.leader_ready {
                if self.leadership.lock().take().is_some() {
                    // Leadership lost: end every session so agents find the new leader.
                    self.sessions.lock().clear();
                    if let Some(metrics) = self.backend.metrics() {
                        metrics.sessions.set(0);
                    }
                    self.backend.logs().close_all("the leader changed while reading logs; run the command again");
                }
                continue;
            }
            let since = {
                let mut leadership = self.leadership.lock();
                match *leadership {
                    Some((term, since)) if term == st.term => since,
                    _ => {
                        let now = Instant::now();
                        *leadership = Some((st.term, now));
                        self.sessions.lock().clear();
                        if let Some(metrics) = self.backend.metrics() {
                            metrics.sessions.set(0);
                        }
                        now
                    }
                }
            };
            let period = self.period();
            let mut down = Vec::new();
            {
                let state = self.backend.state();
                let mut sessions = self.sessions.lock();
                for node in state.nodes().filter(|n| n.runs_tasks() && n.status.state != NodeState::Down) {
                    let expired = match sessions.get(&node.id) {
                        Some(s) => {
                            now.duration_since(s.last_seen) > period.max(s.told) * MISSED_BEATS
                                && s.grace_until.is_none_or(|until| now > until)
                        }
                        None => now.duration_since(since) > period * FAILOVER_GRACE_BEATS,
                    };
                    if expired {
                        sessions.remove(&node.id);
                        if let Some(metrics) = self.backend.metrics() {
                            metrics.heartbeats_missed.inc();
                        }
                        down.push(Action::SetNodeStatus {
                            id: node.id.clone(),
                            status: NodeStatus {
                                state: NodeState::Down,
                                message: "heartbeat failure".into(),
                                addr: node.status.addr.clone(),
                            },
                            description: None,
                        });
                    }
                }
            }
            if let Some(metrics) = self.backend.metrics() {
                metrics.sessions.set(self.sessions.lock().len() as i64);
            }
            if !down.is_empty() {
                tracing::warn!(nodes = down.len(), "nodes missed their heartbeats; marking them down");
                if let Err(e) = self.backend.propose(down).await {
                    tracing::warn!(error = %e, "marking nodes down failed");
                }
            }
        }
    }

    /// After `stalled`, a time during which this manager did not run, every node gets the grace
    /// of a failover from now: its agent saw this manager stop answering, went looking for
    /// another and may be waiting out its reconnection backoff.
    fn forgive_stall(&self, stalled: Duration) {
        let now = Instant::now();
        let grace_until = now + self.period() * FAILOVER_GRACE_BEATS;
        let leading = match self.leadership.lock().as_mut() {
            Some((_, since)) => {
                *since = now;
                true
            }
            None => false,
        };
        let mut sessions = self.sessions.lock();
        if leading || !sessions.is_empty() {
            tracing::warn!(
                stalled_ms = stalled.as_millis() as u64,
                sessions = sessions.len(),
                "this manager did not run for a while; every node gets a fresh heartbeat grace"
            );
        }
        for session in sessions.values_mut() {
            session.grace_until = Some(grace_until);
        }
    }

    async fn register(&self, request: &SessionRequest, addr: String) -> Result<(), ApiError> {
        if request.node_id.is_empty() {
            return Err(ApiError::InvalidArgument("node_id is required".into()));
        }
        let description: NodeDescription = serde_json::from_str(&request.description_json)
            .map_err(|e| ApiError::InvalidArgument(format!("invalid node description: {e}")))?;
        let existing = self.backend.state().node(&request.node_id).cloned();
        let status = NodeStatus { state: NodeState::Ready, message: String::new(), addr };
        let action = match existing {
            Some(node) if node.manager.is_some() || node.spec.role == NodeRole::Manager => {
                return Err(ApiError::FailedPrecondition(format!(
                    "node {} is a manager; an agent needs its own data dir (node id)",
                    node.id
                )));
            }
            Some(node) => Action::SetNodeStatus { id: node.id, status, description: Some(description) },
            None => {
                let at = self.backend.now_millis();
                Action::PutNode {
                    node: Node {
                        id: request.node_id.clone(),
                        version: 0,
                        created_at: at,
                        updated_at: at,
                        spec: NodeSpec {
                            role: NodeRole::Worker,
                            availability: Availability::Active,
                            labels: request.labels.clone().into_iter().collect(),
                        },
                        description,
                        status,
                        manager: None,
                    },
                }
            }
        };
        self.backend.propose(vec![action]).await?;
        Ok(())
    }

    /// Forgets the session of `node_id` if it is still `session_id` (its stream ended for good).
    fn end_session(&self, node_id: &str, session_id: &str) {
        let mut sessions = self.sessions.lock();
        if sessions.get(node_id).is_some_and(|s| s.id == session_id) {
            sessions.remove(node_id);
        }
    }
}

fn assignment(
    session_id: &str,
    period: Duration,
    managers: &[String],
    kind: AssignmentKind,
    tasks: Vec<&Task>,
    removed: Vec<String>,
) -> SessionMessage {
    SessionMessage {
        session_id: session_id.to_string(),
        heartbeat_period_ms: period.as_millis() as u64,
        managers: managers.to_vec(),
        kind: kind as i32,
        tasks_json: tasks.into_iter().map(|t| serde_json::to_string(t).expect("tasks serialise")).collect(),
        removed,
        data_json: Vec::new(),
        hosts_json: HashMap::new(),
    }
}

/// The host entries of the containers of `tasks` on networks, by [`shoal_types::hosts_key`]
/// (service and spec version: tasks of one spec share them): every service on one of the
/// task's networks (itself included) by its name at its virtual IP, and, within one stack, by
/// its name in the stack file too (as docker's stack aliases do; a full name wins over an
/// alias). Tasks told to stop need none. Computed once per spec in a message, from the
/// networks' members only.
fn hosts_for<'a>(state: &State, tasks: impl IntoIterator<Item = &'a Task>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for task in tasks {
        if task.spec.networks.is_empty() || task.desired_state > TaskState::Running {
            continue;
        }
        let key = shoal_types::hosts_key(&task.service_id, task.spec_version);
        if out.contains_key(&key) {
            continue;
        }
        let stack =
            state.service(&task.service_id).and_then(|s| s.spec.labels.get(shoal_types::stack::NAMESPACE_LABEL));
        let mut members: Vec<&shoal_types::Service> = task
            .spec
            .networks
            .iter()
            .flat_map(|n| state.services_on_network(n))
            .filter(|s| !s.virtual_ip.is_empty())
            .collect();
        members.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        members.dedup_by(|a, b| a.id == b.id);
        let mut names: HashSet<&str> = members.iter().map(|s| s.spec.name.as_str()).collect();
        let mut hosts: Vec<String> = members.iter().map(|s| format!("{}:{}", s.spec.name, s.virtual_ip)).collect();
        for member in &members {
            let short = stack
                .filter(|s| member.spec.labels.get(shoal_types::stack::NAMESPACE_LABEL) == Some(*s))
                .and_then(|s| member.spec.name.strip_prefix(s.as_str())?.strip_prefix('_'));
            if let Some(short) = short
                && names.insert(short)
            {
                hosts.push(format!("{short}:{}", member.virtual_ip));
            }
        }
        out.insert(key, serde_json::to_string(&hosts).expect("host entries serialise"));
    }
    out
}

/// The secrets and configs `tasks` use that the session has not sent yet (`sent`: their ids),
/// as JSON with their values: an agent receives only those its tasks use.
fn data_for<'a>(state: &State, tasks: impl IntoIterator<Item = &'a Task>, sent: &mut HashSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    // A task that has ended or is ending needs none (its files are gone with it).
    for task in tasks.into_iter().filter(|t| t.desired_state <= TaskState::Running) {
        for (kind, reference) in task.spec.container.data_references() {
            let Some(object) = state.data_by_name(kind, &reference.source) else { continue };
            if sent.insert(object.id.clone()) {
                out.push(serde_json::to_string(object).expect("data objects serialise"));
            }
        }
    }
    out
}

/// The tasks an agent is told about: bound to its node and past the scheduler.
fn agent_visible(task: &Task, node_id: &str) -> bool {
    task.node_id == node_id && task.status.state >= TaskState::Assigned
}

/// The node's tasks its agent is told about, and the index of the state they were read from.
fn node_tasks(state: &State, node_id: &str) -> (Vec<Task>, u64) {
    let tasks = state.tasks_on_node(node_id).filter(|t| agent_visible(t, node_id)).cloned().collect();
    (tasks, state.applied_index())
}

fn node_removed(node_id: &str) -> Status {
    Status::permission_denied(format!("node {node_id} was removed from the cluster"))
}

/// One agent session's assignment stream: the node's complete task set, then what changes.
struct AssignmentStream {
    node_id: String,
    session_id: String,
    period: Duration,
    managers: Vec<String>,
    /// The desired state each task was last sent with.
    sent: HashMap<String, TaskState>,
    /// The secrets and configs sent in this session, by id.
    sent_data: HashSet<String>,
    /// The applied index of the state the complete set was read from: it already holds every
    /// change up to there, which the router may still deliver (it routes after applying).
    floor: u64,
    subscription: Subscription,
    tx: mpsc::Sender<Result<SessionMessage, Status>>,
}

impl AssignmentStream {
    fn complete(
        &mut self,
        tasks: Vec<Task>,
        floor: u64,
        (data_json, hosts_json): (Vec<String>, HashMap<String, String>),
    ) -> SessionMessage {
        self.sent = tasks.iter().map(|t| (t.id.clone(), t.desired_state)).collect();
        self.floor = floor;
        let mut message = assignment(
            &self.session_id,
            self.period,
            &self.managers,
            AssignmentKind::Complete,
            tasks.iter().collect(),
            Vec::new(),
        );
        message.data_json = data_json;
        message.hosts_json = hosts_json;
        message
    }

    /// Reads the node's tasks afresh after its queue dropped changes; `None` if the node is gone.
    fn resync<B: Backend>(&mut self, backend: &B) -> Option<SessionMessage> {
        let (tasks, floor, data) = {
            let state = backend.state();
            state.node(&self.node_id)?;
            self.subscription.claim(state.tasks_on_node(&self.node_id).map(|t| t.id.as_str()));
            let (tasks, floor) = node_tasks(&state, &self.node_id);
            // A complete set makes the agent forget what its tasks no longer use: send afresh.
            self.sent_data.clear();
            let data = data_for(&state, &tasks, &mut self.sent_data);
            let hosts = hosts_for(&state, &tasks);
            (tasks, floor, (data, hosts))
        };
        tracing::info!(node = %self.node_id, tasks = tasks.len(), "agent session resent its node's complete task set");
        Some(self.complete(tasks, floor, data))
    }

    /// The message for a batch of the node's changes, if the agent needs one: new tasks,
    /// desired-state changes and removals (the agent reports statuses itself).
    fn incremental<B: Backend>(
        &mut self,
        backend: &B,
        tasks: Vec<Arc<Change>>,
        node: Option<Arc<Change>>,
    ) -> Result<Option<SessionMessage>, Status> {
        if node.is_some_and(|change| change.kind == ChangeKind::Remove && change.index > self.floor) {
            return Err(node_removed(&self.node_id));
        }
        let mut updated: Vec<&Task> = Vec::new();
        let mut removed = Vec::new();
        for change in &tasks {
            let Object::Task(task) = &change.object else { continue };
            if change.index <= self.floor {
                continue;
            }
            if change.kind != ChangeKind::Remove && agent_visible(task, &self.node_id) {
                if self.sent.insert(task.id.clone(), task.desired_state) != Some(task.desired_state) {
                    updated.push(task);
                }
            } else if self.sent.remove(&task.id).is_some() {
                // Removed, or moved to another node.
                removed.push(task.id.clone());
            }
        }
        if updated.is_empty() && removed.is_empty() {
            return Ok(None);
        }
        // The state is read only when a task uses secrets or configs, or is on a network.
        let (data, hosts) = if updated
            .iter()
            .any(|t| t.spec.container.data_references().next().is_some() || !t.spec.networks.is_empty())
        {
            let state = backend.state();
            (data_for(&state, updated.iter().copied(), &mut self.sent_data), hosts_for(&state, updated.iter().copied()))
        } else {
            (Vec::new(), HashMap::new())
        };
        let mut message =
            assignment(&self.session_id, self.period, &self.managers, AssignmentKind::Incremental, updated, removed);
        message.data_json = data;
        message.hosts_json = hosts;
        Ok(Some(message))
    }

    /// Sends the node's changes as they come until the session is stopped (replaced, expired,
    /// leadership lost), the agent goes away, or the node is removed.
    async fn run<B: Backend>(mut self, dispatcher: Arc<DispatcherService<B>>, mut stop: oneshot::Receiver<()>) {
        let why = 'stream: loop {
            tokio::select! {
                _ = &mut stop => break "stopped",
                _ = self.subscription.changed() => {}
            }
            loop {
                let message = match self.subscription.take(MAX_ASSIGNMENT_CHANGES) {
                    taken if taken.is_empty() => break,
                    Taken::Resync => self.resync(&*dispatcher.backend).ok_or_else(|| node_removed(&self.node_id)),
                    Taken::Changes { tasks, node } => match self.incremental(&*dispatcher.backend, tasks, node) {
                        Ok(Some(message)) => Ok(message),
                        Ok(None) => continue,
                        Err(status) => Err(status),
                    },
                };
                let last = message.is_err();
                // A slow agent holds this send up; meanwhile its node's changes coalesce in the queue.
                let sent = tokio::select! {
                    _ = &mut stop => break 'stream "stopped",
                    sent = self.tx.send(message) => sent.is_ok(),
                };
                if last {
                    // Its heartbeats must fail too (ending the session drops `stop`, so only now).
                    dispatcher.end_session(&self.node_id, &self.session_id);
                    break 'stream "the node was removed";
                }
                if !sent {
                    break 'stream "the agent went away";
                }
            }
        };
        tracing::debug!(node = %self.node_id, session = %self.session_id, routed = self.subscription.routed(), why, "assignment stream ended");
    }
}

/// How often the ingress table is recomputed whole, whatever changed.
const TRAFFIC_RESYNC: Duration = Duration::from_secs(10);

/// What one traffic stream has sent its agent.
#[derive(Default)]
struct TrafficSent {
    version: Option<u64>,
    listeners: HashMap<shoal_types::traffic::ListenerKey, Arc<shoal_types::traffic::Listener>>,
    drained: HashSet<String>,
}

/// The connection counts of a report, bounded (an agent cannot grow the leader's memory).
fn reported_connections(report: &mut TrafficReport) -> HashMap<String, u32> {
    const MAX_REPORTED_TASKS: usize = 100_000;
    std::mem::take(&mut report.connections).into_iter().filter(|(_, n)| *n > 0).take(MAX_REPORTED_TASKS).collect()
}

/// The gRPC face of the dispatcher (its state is shared with background tasks).
pub struct DispatcherApi<B: Backend = Manager>(pub Arc<DispatcherService<B>>);

impl<B: Backend> std::ops::Deref for DispatcherApi<B> {
    type Target = DispatcherService<B>;
    fn deref(&self) -> &DispatcherService<B> {
        &self.0
    }
}

/// A worker acts only for the node its certificate names: it cannot open another node's session
/// or report another node's tasks.
fn own_node<T>(request: &Request<T>, node_id: &str) -> Result<(), Status> {
    match crate::auth::peer(request) {
        Some(peer) if peer.node_id == node_id => Ok(()),
        Some(peer) => {
            let reason = format!("the certificate of node {} may not act for node {node_id}", peer.node_id);
            tracing::warn!(peer = %crate::auth::remote(request), reason = %reason, "dispatcher call refused");
            Err(Status::permission_denied(reason))
        }
        None => Err(Status::permission_denied("the dispatcher needs a worker certificate")),
    }
}

#[tonic::async_trait]
impl<B: Backend> Dispatcher for DispatcherApi<B> {
    type SessionStream = SessionStream;

    async fn session(&self, request: Request<SessionRequest>) -> Result<Response<SessionStream>, Status> {
        self.check_leader()?;
        own_node(&request, &request.get_ref().node_id)?;
        let addr = request
            .extensions()
            .get::<shoal_tls::PeerInfo>()
            .and_then(|p| p.remote_addr)
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        let request = request.into_inner();
        self.register(&request, addr).await.map_err(Status::from)?;
        let node_id = request.node_id.clone();
        // Subscribed in the same view of the state the complete set is read from: every later
        // change reaches the session, including one that moves a task of the set elsewhere.
        let mut sent_data = HashSet::new();
        let (subscription, complete, floor, data) = {
            let state = self.backend.state();
            if state.node(&node_id).is_none() {
                return Err(node_removed(&node_id));
            }
            let subscription =
                self.backend.router().subscribe(&node_id, state.tasks_on_node(&node_id).map(|t| t.id.as_str()));
            let (complete, floor) = node_tasks(&state, &node_id);
            let data = data_for(&state, &complete, &mut sent_data);
            let hosts = hosts_for(&state, &complete);
            (subscription, complete, floor, (data, hosts))
        };
        let session_id = shoal_types::ids::new_id();
        let (stop_tx, stop_rx) = oneshot::channel();
        let period = self.period();
        self.sessions.lock().insert(
            node_id.clone(),
            Session {
                id: session_id.clone(),
                last_seen: Instant::now(),
                told: period,
                grace_until: None,
                _stop: stop_tx,
            },
        );
        let (tx, rx) = mpsc::channel(ASSIGNMENT_BUFFER);
        let mut stream = AssignmentStream {
            node_id,
            session_id,
            period,
            managers: self.backend.raft_status().members.values().map(|m| m.addr.clone()).collect(),
            sent: HashMap::new(),
            sent_data,
            floor,
            subscription,
            tx,
        };
        tracing::info!(node = %stream.node_id, tasks = complete.len(), "agent session opened");
        let first = stream.complete(complete, floor, data);
        if stream.tx.send(Ok(first)).await.is_err() {
            return Err(Status::cancelled("agent went away"));
        }
        tokio::spawn(stream.run(self.0.clone(), stop_rx));
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    type LogSubscriptionsStream = LogSubscriptionStream;

    async fn log_subscriptions(
        &self,
        request: Request<LogSubscriptionsRequest>,
    ) -> Result<Response<LogSubscriptionStream>, Status> {
        self.check_leader()?;
        own_node(&request, &request.get_ref().node_id)?;
        let request = request.into_inner();
        self.check_session(&request.node_id, &request.session_id, None)?;
        let broker = self.backend.logs().clone();
        let rx = broker.listen(&request.node_id, &request.session_id);
        // Forgets the agent's stream when it ends (the agent went away or opened a new one).
        let guard = Unlisten { broker, node_id: request.node_id, session_id: request.session_id };
        let stream = tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), move |s| {
            let _ = &guard;
            Ok(s)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn publish_logs(
        &self,
        request: Request<tonic::Streaming<PublishLogsMessage>>,
    ) -> Result<Response<PublishLogsResponse>, Status> {
        self.check_leader()?;
        let Some(node_id) = crate::auth::peer(&request).map(|p| p.node_id.clone()) else {
            return Err(Status::permission_denied("the dispatcher needs a worker certificate"));
        };
        let mut stream = request.into_inner();
        let Some(first) = stream.message().await? else { return Ok(Response::new(PublishLogsResponse {})) };
        if first.node_id != node_id {
            return Err(Status::permission_denied(format!(
                "the certificate of node {node_id} may not act for node {}",
                first.node_id
            )));
        }
        self.check_session(&node_id, &first.session_id, None)?;
        let read = first.subscription_id.clone();
        let broker = self.backend.logs().clone();
        let Some((tx, selection)) = broker.publisher(&read, &node_id) else {
            return Err(Status::not_found(format!("log read {read} is closed (its reader went away)")));
        };
        // However the call ends (the agent's last line, an error, the agent gone), a read
        // without follow stops waiting for this node.
        let _finished = Finished { broker, read: read.clone(), node_id: node_id.clone() };
        let mut described: HashSet<String> = HashSet::new();
        let mut next = Some(first);
        while let Some(message) = next {
            if message.subscription_id != read {
                return Err(Status::invalid_argument("one PublishLogs call publishes one log read"));
            }
            let out = self.reader_message(&node_id, &selection, message.lines, message.error, &mut described);
            if (!out.lines.is_empty() || !out.warnings.is_empty()) && tx.send(Ok(out)).await.is_err() {
                return Err(Status::not_found(format!("log read {read} is closed (its reader went away)")));
            }
            if message.close {
                break;
            }
            next = stream.message().await?;
        }
        Ok(Response::new(PublishLogsResponse {}))
    }

    type TrafficStream = TrafficStream;

    async fn traffic(
        &self,
        request: Request<tonic::Streaming<TrafficReport>>,
    ) -> Result<Response<TrafficStream>, Status> {
        self.check_leader()?;
        let Some(node_id) = crate::auth::peer(&request).map(|p| p.node_id.clone()) else {
            return Err(Status::permission_denied("the dispatcher needs a worker certificate"));
        };
        let mut inbound = request.into_inner();
        let Some(mut first) = inbound.message().await? else {
            return Err(Status::invalid_argument("a traffic stream starts with a report"));
        };
        if first.node_id != node_id {
            return Err(Status::permission_denied(format!(
                "the certificate of node {node_id} may not act for node {}",
                first.node_id
            )));
        }
        self.check_session(&node_id, &first.session_id, None)?;
        let stream = self.traffic_streams.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let connections = reported_connections(&mut first);
        self.traffic.lock().report(&node_id, stream, first.version, connections);
        let (tx, rx) = mpsc::channel(16);
        let dispatcher = self.0.clone();
        tokio::spawn(async move {
            let mut tick = dispatcher.traffic_tick.subscribe();
            let mut sent = TrafficSent::default();
            loop {
                if let Some(update) = dispatcher.traffic_update(&node_id, &mut sent)
                    && tx.send(Ok(update)).await.is_err()
                {
                    break;
                }
                tokio::select! {
                    changed = tick.changed() => if changed.is_err() { break },
                    report = inbound.message() => match report {
                        Ok(Some(mut report)) => {
                            let connections = reported_connections(&mut report);
                            if dispatcher.traffic.lock().report(&node_id, stream, report.version, connections) {
                                dispatcher.traffic_tick.send_modify(|n| *n += 1);
                            }
                        }
                        _ => break,
                    },
                }
            }
            dispatcher.traffic.lock().stream_ended(&node_id, stream);
            dispatcher.traffic_tick.send_modify(|n| *n += 1);
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn heartbeat(&self, request: Request<HeartbeatRequest>) -> Result<Response<HeartbeatResponse>, Status> {
        self.check_leader()?;
        own_node(&request, &request.get_ref().node_id)?;
        let request = request.into_inner();
        let period = self.period();
        self.check_session(&request.node_id, &request.session_id, Some(period))?;
        Ok(Response::new(HeartbeatResponse { period_ms: period.as_millis() as u64 }))
    }

    async fn update_task_status(
        &self,
        request: Request<UpdateTaskStatusRequest>,
    ) -> Result<Response<UpdateTaskStatusResponse>, Status> {
        self.check_leader()?;
        own_node(&request, &request.get_ref().node_id)?;
        let request = request.into_inner();
        self.check_session(&request.node_id, &request.session_id, None)?;
        let mut parsed = Vec::with_capacity(request.updates.len());
        {
            let state = self.backend.state();
            for update in &request.updates {
                let mut status: TaskStatus = serde_json::from_str(&update.status_json).map_err(|e| {
                    Status::invalid_argument(format!("invalid status for task {}: {e}", update.task_id))
                })?;
                // An engine's error text is the agent's to send but the store's to keep for every
                // task of history: bounded, so no status can approach an entry's size.
                cap_text(&mut status.message);
                cap_text(&mut status.err);
                match state.task(&update.task_id) {
                    // A deleted task's late status is simply dropped.
                    None => continue,
                    Some(task) if task.node_id != request.node_id => {
                        tracing::warn!(node = %request.node_id, task = %update.task_id, "node reported a task of another node");
                        return Err(Status::permission_denied("cannot update a task not assigned this node"));
                    }
                    Some(_) => parsed.push((update.task_id.clone(), status)),
                }
            }
        }
        {
            let mut queue = self.statuses.lock();
            for (id, status) in parsed {
                // Later reports overwrite earlier ones; the store drops backwards moves.
                let replace = queue.get(&id).is_none_or(|queued| status.state >= queued.state);
                if replace {
                    queue.insert(id, status);
                }
            }
        }
        self.flush.notify_one();
        Ok(Response::new(UpdateTaskStatusResponse {}))
    }
}

/// Ends an agent's log subscription stream in the broker when the stream is dropped.
struct Unlisten {
    broker: Arc<LogBroker>,
    node_id: String,
    session_id: String,
}

impl Drop for Unlisten {
    fn drop(&mut self) {
        self.broker.unlisten(&self.node_id, &self.session_id);
    }
}

/// Tells the broker a node is done with a read when its `PublishLogs` call ends.
struct Finished {
    broker: Arc<LogBroker>,
    read: String,
    node_id: String,
}

impl Drop for Finished {
    fn drop(&mut self) {
        self.broker.finished(&self.read, &self.node_id);
    }
}

impl<B: Backend> DispatcherService<B> {
    /// What a reader is sent for lines `node_id` published: only lines of the node's own tasks
    /// that the read selects (an agent cannot speak for another node or slip other lines into
    /// a read), each task described the first time it appears (`described`), and the agent's
    /// error as a warning.
    fn reader_message(
        &self,
        node_id: &str,
        selection: &crate::logs::Selection,
        lines: Vec<LogLine>,
        error: String,
        described: &mut HashSet<String>,
    ) -> ServiceLogsMessage {
        let mut out = ServiceLogsMessage::default();
        if !error.is_empty() {
            let mut error = error;
            cap_text(&mut error);
            out.warnings.push(format!("node {node_id}: {error}"));
        }
        let state = self.backend.state();
        for mut line in lines {
            let own = described.contains(&line.task_id) || {
                let Some(task) = state
                    .task(&line.task_id)
                    .filter(|t| t.node_id == node_id && selection.selects(&t.service_id, &t.id))
                else {
                    continue;
                };
                described.insert(task.id.clone());
                let node = state.node(node_id);
                let replicas = state
                    .service(&task.service_id)
                    .and_then(|s| match s.spec.mode {
                        shoal_types::ServiceMode::Replicated { replicas } => Some(replicas),
                        _ => None,
                    })
                    .unwrap_or(0);
                out.tasks.push(LogTask {
                    task_id: task.id.clone(),
                    service_name: task.service_name.clone(),
                    slot: task.slot,
                    node_id: node_id.to_string(),
                    node_hostname: node.map(|n| n.description.hostname.clone()).unwrap_or_default(),
                    replicas,
                });
                true
            };
            if own {
                line.data.truncate(MAX_LOG_LINE);
                out.lines.push(line);
            }
        }
        out
    }
}

/// The longest status message or error kept, in bytes.
const MAX_STATUS_TEXT: usize = 4096;

/// Cuts `text` to [`MAX_STATUS_TEXT`] bytes at a character boundary, marking the cut with `…`.
fn cap_text(text: &mut String) {
    if text.len() <= MAX_STATUS_TEXT {
        return;
    }
    let mut end = MAX_STATUS_TEXT - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push('…');
}

#[cfg(test)]
mod cap_tests {
    use super::*;

    #[test]
    fn long_status_texts_are_cut_at_a_character_boundary() {
        let mut short = "no such image".to_string();
        cap_text(&mut short);
        assert_eq!(short, "no such image");
        let mut long = "é".repeat(5_000);
        cap_text(&mut long);
        assert!(long.len() <= MAX_STATUS_TEXT, "{}", long.len());
        assert!(long.ends_with('…'));
        assert!(long.trim_end_matches('…').chars().all(|c| c == 'é'));
    }
}

#[cfg(test)]
mod tests;
