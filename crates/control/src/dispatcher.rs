//! The dispatcher (leader only): agent sessions, heartbeats and node health, assignment streams,
//! and batched task status writes. Followers answer `Unavailable` with the leader's address.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use shoal_proto::v1::dispatcher_server::Dispatcher;
use shoal_proto::v1::*;
use shoal_raft::RaftRole;
use shoal_store::{Action, ChangeKind, Object};
use shoal_types::{
    Availability, Node, NodeDescription, NodeRole, NodeSpec, NodeState, NodeStatus, Task, TaskState, TaskStatus,
};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::{ApiError, Manager, now_millis};

/// Response metadata naming the leader's address when a follower refuses an agent.
pub const LEADER_HEADER: &str = "x-shoal-leader";
/// A node is DOWN after this many missed heartbeats (Swarm: 3).
const MISSED_BEATS: u32 = 3;
/// After a leader change, nodes get this many periods to reconnect before they can be DOWN
/// (Swarm: 6), so a failover does not reschedule healthy nodes' tasks.
const FAILOVER_GRACE_BEATS: u32 = 6;
/// A pause this long between two health checks (every 100 ms) means this manager did not run:
/// the process was stopped, its VM paused or its runtime starved.
const STALL: Duration = Duration::from_millis(500);
/// Most task statuses written in one raft entry.
const MAX_STATUS_BATCH: usize = 1000;

struct Session {
    id: String,
    last_seen: Instant,
    /// Not declared down before this, whatever `last_seen` says (set after a stall).
    grace_until: Option<Instant>,
    /// Dropping it ends the node's assignment stream.
    _stop: tokio::sync::oneshot::Sender<()>,
}

pub struct DispatcherService {
    manager: Arc<Manager>,
    sessions: Mutex<HashMap<String, Session>>,
    statuses: Mutex<BTreeMap<String, TaskStatus>>,
    flush: Notify,
    /// When this manager last became leader, and in which term.
    leadership: Mutex<Option<(u64, Instant)>>,
}

type SessionStream = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<SessionMessage, Status>> + Send>>;

impl DispatcherService {
    pub fn new(manager: Arc<Manager>) -> Arc<Self> {
        let dispatcher = Arc::new(DispatcherService {
            manager,
            sessions: Mutex::new(HashMap::new()),
            statuses: Mutex::new(BTreeMap::new()),
            flush: Notify::new(),
            leadership: Mutex::new(None),
        });
        tokio::spawn(dispatcher.clone().flush_statuses());
        tokio::spawn(dispatcher.clone().watch_health());
        dispatcher
    }

    fn period(&self) -> Duration {
        self.manager.state().cluster().map(|c| c.spec.heartbeat_period.as_std()).unwrap_or(Duration::from_secs(1))
    }

    /// Refuses the call unless this manager is the leader, pointing the agent at the leader.
    fn check_leader(&self) -> Result<(), Status> {
        let st = self.manager.raft_status();
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

    fn check_session(&self, node_id: &str, session_id: &str) -> Result<(), Status> {
        let mut sessions = self.sessions.lock();
        match sessions.get_mut(node_id) {
            Some(s) if s.id == session_id => {
                s.last_seen = Instant::now();
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
                if let Err(e) = self.manager.propose_in_entries(actions).await {
                    // Agents re-report every task's status when they reconnect, so a lost batch heals.
                    tracing::warn!(error = %e, "writing task statuses failed");
                }
            }
        }
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
            let st = self.manager.raft_status();
            if st.role != RaftRole::Leader || !st.leader_ready {
                if self.leadership.lock().take().is_some() {
                    // Leadership lost: end every session so agents find the new leader.
                    self.sessions.lock().clear();
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
                        now
                    }
                }
            };
            let period = self.period();
            let mut down = Vec::new();
            {
                let state = self.manager.state();
                let mut sessions = self.sessions.lock();
                for node in state.nodes().filter(|n| n.runs_tasks() && n.status.state != NodeState::Down) {
                    let expired = match sessions.get(&node.id) {
                        Some(s) => {
                            now.duration_since(s.last_seen) > period * MISSED_BEATS
                                && s.grace_until.is_none_or(|until| now > until)
                        }
                        None => now.duration_since(since) > period * FAILOVER_GRACE_BEATS,
                    };
                    if expired {
                        sessions.remove(&node.id);
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
            if !down.is_empty() {
                tracing::warn!(nodes = down.len(), "nodes missed their heartbeats; marking them down");
                if let Err(e) = self.manager.propose(down).await {
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
        let existing = self.manager.state().node(&request.node_id).cloned();
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
                let at = now_millis();
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
        self.manager.propose(vec![action]).await?;
        Ok(())
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
    }
}

/// The tasks an agent is told about: bound to its node and past the scheduler.
fn agent_visible(task: &Task, node_id: &str) -> bool {
    task.node_id == node_id && task.status.state >= TaskState::Assigned
}

/// The gRPC face of the dispatcher (its state is shared with background tasks).
pub struct DispatcherApi(pub Arc<DispatcherService>);

impl std::ops::Deref for DispatcherApi {
    type Target = DispatcherService;
    fn deref(&self) -> &DispatcherService {
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
impl Dispatcher for DispatcherApi {
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
        // Subscribe before registering so no change after the complete set is missed.
        let mut events = self.manager.subscribe();
        self.register(&request, addr).await.map_err(Status::from)?;
        let node_id = request.node_id.clone();
        let session_id = shoal_types::ids::new_id();
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel();
        self.sessions.lock().insert(
            node_id.clone(),
            Session { id: session_id.clone(), last_seen: Instant::now(), grace_until: None, _stop: stop_tx },
        );
        let period = self.period();
        let managers: Vec<String> = self.manager.raft_status().members.values().map(|m| m.addr.clone()).collect();
        let (tx, rx) = mpsc::channel(256);
        let mut sent: HashMap<String, TaskState> = HashMap::new();
        let complete: Vec<Task> = {
            let state = self.manager.state();
            state.tasks_on_node(&node_id).filter(|t| agent_visible(t, &node_id)).cloned().collect()
        };
        for t in &complete {
            sent.insert(t.id.clone(), t.desired_state);
        }
        tracing::info!(node = %node_id, tasks = complete.len(), "agent session opened");
        let first =
            assignment(&session_id, period, &managers, AssignmentKind::Complete, complete.iter().collect(), Vec::new());
        if tx.send(Ok(first)).await.is_err() {
            return Err(Status::cancelled("agent went away"));
        }
        tokio::spawn(async move {
            loop {
                let change = tokio::select! {
                    _ = &mut stop_rx => return,
                    change = events.recv() => change,
                };
                let mut batch = match change {
                    Ok(c) => vec![c],
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        // Missed changes: the agent must resync; ending the stream makes it reconnect.
                        let _ = tx.send(Err(Status::aborted("assignment stream fell behind; reconnect"))).await;
                        return;
                    }
                    Err(_) => return,
                };
                while batch.len() < 1000 {
                    match events.try_recv() {
                        Ok(c) => batch.push(c),
                        Err(_) => break,
                    }
                }
                let mut updated: Vec<Task> = Vec::new();
                let mut removed = Vec::new();
                for change in batch {
                    let Object::Task(task) = &change.object else { continue };
                    if change.kind == ChangeKind::Remove {
                        if sent.remove(&task.id).is_some() {
                            removed.push(task.id.clone());
                        }
                        continue;
                    }
                    if !agent_visible(task, &node_id) {
                        continue;
                    }
                    // The agent reports statuses itself; it only needs new tasks and desired-state changes.
                    if sent.get(&task.id) != Some(&task.desired_state) {
                        sent.insert(task.id.clone(), task.desired_state);
                        updated.retain(|t| t.id != task.id);
                        updated.push(task.clone());
                    }
                }
                if updated.is_empty() && removed.is_empty() {
                    continue;
                }
                let msg = assignment(
                    &session_id,
                    period,
                    &managers,
                    AssignmentKind::Incremental,
                    updated.iter().collect(),
                    removed,
                );
                if tx.send(Ok(msg)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn heartbeat(&self, request: Request<HeartbeatRequest>) -> Result<Response<HeartbeatResponse>, Status> {
        self.check_leader()?;
        own_node(&request, &request.get_ref().node_id)?;
        let request = request.into_inner();
        self.check_session(&request.node_id, &request.session_id)?;
        Ok(Response::new(HeartbeatResponse { period_ms: self.period().as_millis() as u64 }))
    }

    async fn update_task_status(
        &self,
        request: Request<UpdateTaskStatusRequest>,
    ) -> Result<Response<UpdateTaskStatusResponse>, Status> {
        self.check_leader()?;
        own_node(&request, &request.get_ref().node_id)?;
        let request = request.into_inner();
        self.check_session(&request.node_id, &request.session_id)?;
        let mut parsed = Vec::with_capacity(request.updates.len());
        {
            let state = self.manager.state();
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
