//! Per-node change routing for the dispatcher's agent sessions (code review D8).
//!
//! Each agent session needs only its own node's changes: its tasks, before and after a change,
//! and its node object. Reading the cluster-wide broadcast, every session received every change
//! and filtered it, and a pass that wrote more changes than the broadcast holds made every
//! session lag and every agent reconnect at once. The router is fed by the state machine right
//! after each apply and hands each session only what concerns its node, through a queue that
//! coalesces by task id: a burst leaves at most one pending change per task, and the cost of a
//! change is that of the sessions of the nodes it concerns, whatever the number of sessions.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use shoal_store::{Change, ChangeKind, Object};
use shoal_types::Task;
use tokio::sync::Notify;

/// Distinct tasks a session may have waiting. A session that falls this far behind (its agent
/// reads slowly while a pass rewrites its node's tasks) reads its node's tasks afresh instead:
/// past this size the complete set costs less than the queue.
pub const MAX_PENDING_TASKS: usize = 65_536;

/// Routes applied changes to the sessions of the nodes they concern.
pub struct ChangeRouter {
    routes: Mutex<Routes>,
    limit: usize,
}

impl Default for ChangeRouter {
    fn default() -> Self {
        ChangeRouter::with_limit(MAX_PENDING_TASKS)
    }
}

#[derive(Default)]
struct Routes {
    /// Open sessions by node id: one per node, two while a reconnecting agent's old session
    /// has not ended yet.
    nodes: HashMap<String, NodeRoutes>,
    /// The node whose sessions were last routed each task (or read it in their complete set),
    /// so a change that moves the task elsewhere reaches them too: a change carries only the
    /// task as it is now. Kept only for nodes with a session; an entry of a node whose sessions
    /// all ended stays until the task changes again or is removed (no session sees it), and
    /// the whole map is dropped when the last session ends.
    owners: HashMap<String, Arc<str>>,
}

struct NodeRoutes {
    /// The node id, shared with `owners`.
    id: Arc<str>,
    queues: Vec<Arc<Queue>>,
}

impl ChangeRouter {
    /// A router whose sessions resync after `limit` distinct pending tasks.
    pub fn with_limit(limit: usize) -> ChangeRouter {
        ChangeRouter { routes: Mutex::new(Routes::default()), limit: limit.max(1) }
    }

    /// Delivers `changes` (one applied entry's, in order) to the sessions they concern.
    ///
    /// Called on the raft thread after the state's write lock is released: it only looks up
    /// hash maps and moves `Arc`s into queues, never waits for a session, and costs nothing
    /// beyond a lock while no agent is connected (always, on a follower).
    pub fn route(&self, changes: &[Arc<Change>]) {
        let mut routes = self.routes.lock();
        if routes.nodes.is_empty() {
            return;
        }
        for change in changes {
            match &change.object {
                Object::Task(task) => routes.route_task(change, task, self.limit),
                Object::Node(node) => {
                    if let Some(routes) = routes.nodes.get(&node.id) {
                        for queue in &routes.queues {
                            queue.push_node(change.clone());
                        }
                    }
                }
                Object::Cluster(_) | Object::Service(_) | Object::Route(_) => {}
            }
        }
    }

    /// Every session must read its node afresh: the state was replaced (a snapshot was
    /// installed) without changes that could be routed.
    pub fn resync_all(&self) {
        let mut routes = self.routes.lock();
        routes.owners.clear();
        for routes in routes.nodes.values() {
            for queue in &routes.queues {
                queue.request_resync();
            }
        }
    }

    /// Opens a queue for a session of `node_id`, which is told of `tasks` (the node's tasks)
    /// now.
    ///
    /// Call it holding the state's read lock, with the node's tasks from that state: every
    /// change applied after that state is then routed to the new queue, including one that
    /// moves a task of `tasks` to another node. A change applied before it may be routed to the
    /// queue too (routing follows the apply); the session skips those by their index.
    pub fn subscribe<'a>(self: &Arc<Self>, node_id: &str, tasks: impl IntoIterator<Item = &'a str>) -> Subscription {
        let queue = Arc::new(Queue::new(self.limit));
        let mut routes = self.routes.lock();
        let node = routes
            .nodes
            .entry(node_id.to_string())
            .or_insert_with(|| NodeRoutes { id: Arc::from(node_id), queues: Vec::new() });
        node.queues.push(queue.clone());
        let id = node.id.clone();
        routes.claim(&id, tasks);
        Subscription { router: self.clone(), node: id, queue }
    }

    fn unsubscribe(&self, node: &str, queue: &Arc<Queue>) {
        let mut routes = self.routes.lock();
        if let Some(entry) = routes.nodes.get_mut(node) {
            entry.queues.retain(|q| !Arc::ptr_eq(q, queue));
            if entry.queues.is_empty() {
                routes.nodes.remove(node);
            }
        }
        if routes.nodes.is_empty() {
            // No session left to route to: forget every task's node rather than keep entries
            // that only a later change or removal would clear.
            routes.owners = HashMap::new();
        }
    }
}

impl Routes {
    fn route_task(&mut self, change: &Arc<Change>, task: &Task, limit: usize) {
        let node = self.nodes.get(task.node_id.as_str());
        let previous = match (change.kind, node) {
            (ChangeKind::Remove, _) | (_, None) => self.owners.remove(&task.id),
            (_, Some(node)) => match self.owners.entry(task.id.clone()) {
                Entry::Occupied(mut owner) => Some(std::mem::replace(owner.get_mut(), node.id.clone())),
                Entry::Vacant(owner) => {
                    owner.insert(node.id.clone());
                    None
                }
            },
        };
        // The node the task left: its sessions were told of the task and must learn it is gone.
        if let Some(previous) = previous.filter(|p| **p != *task.node_id)
            && let Some(old) = self.nodes.get(&*previous)
        {
            old.deliver(change, limit);
        }
        if let Some(node) = node {
            node.deliver(change, limit);
        }
    }

    fn claim<'a>(&mut self, node: &Arc<str>, tasks: impl IntoIterator<Item = &'a str>) {
        for task in tasks {
            match self.owners.get_mut(task) {
                Some(owner) => *owner = node.clone(),
                None => {
                    self.owners.insert(task.to_string(), node.clone());
                }
            }
        }
    }
}

impl NodeRoutes {
    fn deliver(&self, change: &Arc<Change>, limit: usize) {
        for queue in &self.queues {
            if queue.push_task(change.clone()) {
                tracing::warn!(
                    node = %self.id,
                    pending = limit,
                    "an agent session fell too far behind its node's changes; it will resend the node's complete task set"
                );
            }
        }
    }
}

/// What a session takes from its queue.
#[derive(Debug)]
pub enum Taken {
    /// Changes were dropped (the queue overflowed, or the state was replaced): read the node's
    /// tasks afresh, through [`Subscription::claim`].
    Resync,
    /// The pending changes, oldest first, each task's latest only; the node's latest change.
    Changes { tasks: Vec<Arc<Change>>, node: Option<Arc<Change>> },
}

impl Taken {
    pub fn is_empty(&self) -> bool {
        matches!(self, Taken::Changes { tasks, node: None } if tasks.is_empty())
    }
}

/// One session's pending changes.
struct Queue {
    pending: Mutex<Pending>,
    ready: Notify,
    limit: usize,
}

#[derive(Default)]
struct Pending {
    /// Task ids in the order their first undelivered change arrived: a later change of the same
    /// task replaces the earlier one in `tasks` and keeps its place, so a task changing all the
    /// time cannot starve the others.
    order: VecDeque<String>,
    tasks: HashMap<String, Arc<Change>>,
    node: Option<Arc<Change>>,
    /// Set when changes were dropped; the session then reads its node's tasks afresh, which
    /// includes every change routed until it takes this.
    resync: bool,
    /// Changes routed to this session in all, for its closing log line.
    routed: u64,
}

impl Queue {
    fn new(limit: usize) -> Queue {
        Queue { pending: Mutex::new(Pending::default()), ready: Notify::new(), limit }
    }

    /// Queues a task change, coalesced with one of the same task not yet taken. True if this
    /// change made the queue overflow.
    fn push_task(&self, change: Arc<Change>) -> bool {
        let Object::Task(task) = &change.object else { return false };
        let mut pending = self.pending.lock();
        pending.routed += 1;
        if pending.resync {
            // The coming resync reads a state that already holds this change.
            return false;
        }
        let full = pending.tasks.len() >= self.limit;
        let overflowed = match pending.tasks.get_mut(&task.id) {
            Some(queued) => {
                *queued = change.clone();
                false
            }
            None if full => {
                pending.drop_all();
                true
            }
            None => {
                pending.order.push_back(task.id.clone());
                pending.tasks.insert(task.id.clone(), change.clone());
                false
            }
        };
        drop(pending);
        self.ready.notify_one();
        overflowed
    }

    fn push_node(&self, change: Arc<Change>) {
        let mut pending = self.pending.lock();
        pending.routed += 1;
        if !pending.resync {
            pending.node = Some(change);
        }
        drop(pending);
        self.ready.notify_one();
    }

    fn request_resync(&self) {
        self.pending.lock().drop_all();
        self.ready.notify_one();
    }

    fn take(&self, max: usize) -> Taken {
        let mut pending = self.pending.lock();
        if pending.resync {
            pending.resync = false;
            return Taken::Resync;
        }
        let count = max.min(pending.order.len());
        let ids: Vec<String> = pending.order.drain(..count).collect();
        let tasks = ids.iter().filter_map(|id| pending.tasks.remove(id)).collect();
        if pending.order.is_empty() && pending.tasks.capacity() > 1024 {
            // A burst is over: give back its memory rather than keep it for every session.
            pending.order = VecDeque::new();
            pending.tasks = HashMap::new();
        }
        Taken::Changes { tasks, node: pending.node.take() }
    }
}

impl Pending {
    fn drop_all(&mut self) {
        self.resync = true;
        self.order = VecDeque::new();
        self.tasks = HashMap::new();
        self.node = None;
    }
}

/// A session's subscription to its node's changes; dropping it ends the routing.
pub struct Subscription {
    router: Arc<ChangeRouter>,
    node: Arc<str>,
    queue: Arc<Queue>,
}

impl Subscription {
    /// Resolves once something was queued since the last time it resolved (at once if that
    /// happened meanwhile).
    pub async fn changed(&self) {
        self.queue.ready.notified().await
    }

    /// At most `max` pending task changes (and the node's latest change), or [`Taken::Resync`].
    pub fn take(&self, max: usize) -> Taken {
        self.queue.take(max)
    }

    /// Records that this session is told of `tasks` (the node's tasks in a state read for a
    /// resync). The same rule as [`ChangeRouter::subscribe`]: call it holding the state's read
    /// lock.
    pub fn claim<'a>(&self, tasks: impl IntoIterator<Item = &'a str>) {
        self.router.routes.lock().claim(&self.node, tasks);
    }

    /// How many changes were routed to this session.
    pub fn routed(&self) -> u64 {
        self.queue.pending.lock().routed
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.router.unsubscribe(&self.node, &self.queue);
    }
}

#[cfg(test)]
mod tests;
