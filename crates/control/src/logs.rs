//! The log broker (leader only): `shoal service logs` fanned in from the agents that hold the
//! containers, as Swarm's log broker does.
//!
//! A read opens a subscription. The broker sends it to the agents concerned over their
//! `LogSubscriptions` streams (every connected agent when following, since new tasks may start
//! anywhere); each agent answers in its own `PublishLogs` call, which feeds the reader's bounded
//! queue. A slow reader fills that queue, the publishing call stops reading, HTTP/2 flow control
//! stops the agent, and the agent stops reading the engine: nothing on the way buffers without
//! bound. A reader that goes away closes the subscription and the agents are told to stop.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use shoal_proto::v1::{LogSubscription, ServiceLogsMessage};
use tokio::sync::mpsc;
use tonic::Status;

/// Log reads open at once, cluster-wide; one more is refused (`ResourceExhausted`).
pub const MAX_LOG_READS: usize = 256;
/// Messages waiting for a reader before publishers wait; an agent sends at most
/// `MAX_MESSAGE_BYTES` of lines in one, so a paused reader holds about 2 MiB here.
const READER_QUEUE: usize = 8;
/// HTTP/2 flow-control windows of the connections log lines travel on (the manager's server,
/// forwarding to the leader): a stream of a paused reader holds at most its own window, and the
/// connection's holds 64 of them before other streams on it wait.
pub const STREAM_WINDOW: u32 = 1 << 20;
pub const CONNECTION_WINDOW: u32 = 64 << 20;
/// The most line bytes an agent puts in one message.
pub const MAX_MESSAGE_BYTES: usize = 256 << 10;
/// Subscription messages waiting for an agent; an agent this far behind misses the read (and
/// its reader is warned).
const LISTENER_QUEUE: usize = 1024;

impl Inner {
    /// Forgets `node_id`'s agent stream: each read it was part of is told (`what` happened), a
    /// read without follow stops waiting for it, and one left with nothing to wait for ends.
    fn drop_listener(&mut self, node_id: &str, what: &str) {
        self.listeners.remove(node_id);
        let mut finished = Vec::new();
        for (id, read) in self.reads.iter_mut() {
            if !read.nodes.remove(node_id) {
                continue;
            }
            let warning = if read.subscription.follow {
                format!("node {node_id} {what}: lines its containers wrote meanwhile are not shown")
            } else {
                format!("node {node_id} {what} before sending all its logs")
            };
            let _ = read.tx.try_send(Ok(ServiceLogsMessage { warnings: vec![warning], ..Default::default() }));
            if read.pending.remove(node_id) && read.pending.is_empty() {
                finished.push(id.clone());
            }
        }
        for id in finished {
            self.reads.remove(&id);
        }
    }
}

/// What a reader receives.
pub type ReaderItem = Result<ServiceLogsMessage, Status>;

#[derive(Default)]
pub struct LogBroker {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    reads: HashMap<String, Read>,
    /// Each connected agent's subscription stream, by node id.
    listeners: HashMap<String, Listener>,
}

struct Listener {
    /// The agent session the stream belongs to (a reconnecting agent replaces it).
    session: String,
    tx: mpsc::Sender<LogSubscription>,
}

struct Read {
    subscription: LogSubscription,
    tx: mpsc::Sender<ReaderItem>,
    /// Nodes that were sent the subscription (and may publish to it).
    nodes: HashSet<String>,
    /// Nodes whose last lines are still to come (without follow).
    pending: HashSet<String>,
}

/// The tasks a read selects: a publisher's lines of other tasks are dropped.
#[derive(Clone, Debug)]
pub struct Selection {
    service_id: String,
    task_ids: Vec<String>,
}

impl Selection {
    /// Whether the task `task_id` of service `service_id` is the read's.
    pub fn selects(&self, service_id: &str, task_id: &str) -> bool {
        (!self.service_id.is_empty() && service_id == self.service_id) || self.task_ids.iter().any(|t| t == task_id)
    }
}

/// A node that holds tasks a read selects, for a warning when its agent is not connected.
#[derive(Clone, Debug)]
pub struct NodeRef {
    pub id: String,
    pub hostname: String,
    pub down: bool,
}

/// An open read: its lines come out of `rx`; dropping it closes the subscription everywhere.
pub struct OpenRead {
    pub rx: mpsc::Receiver<ReaderItem>,
    pub guard: ReadGuard,
}

pub struct ReadGuard {
    broker: Arc<LogBroker>,
    id: String,
}

impl Drop for ReadGuard {
    fn drop(&mut self) {
        self.broker.close(&self.id);
    }
}

impl LogBroker {
    /// Opens a read of `subscription` (its id is set here). `holders`: the nodes holding the
    /// selected tasks; without follow only they are asked, and the read ends once each has sent
    /// its last line or gone away. Those without a connected agent get a warning line.
    pub fn open(
        self: &Arc<Self>,
        mut subscription: LogSubscription,
        holders: &[NodeRef],
    ) -> Result<OpenRead, crate::ApiError> {
        subscription.id = shoal_types::ids::new_id();
        subscription.close = false;
        let (tx, rx) = mpsc::channel(READER_QUEUE);
        let mut warnings = Vec::new();
        let mut inner = self.inner.lock();
        if inner.reads.len() >= MAX_LOG_READS {
            return Err(crate::ApiError::ResourceExhausted(format!(
                "{MAX_LOG_READS} log reads are open already, the most at once; end one (a `service logs -f`) and retry"
            )));
        }
        for node in holders.iter().filter(|n| !inner.listeners.contains_key(&n.id)) {
            let why = if node.down { "is down" } else { "is not connected to the leader" };
            warnings.push(format!("node {} ({}) {why}: the logs of its tasks are not shown", node.hostname, node.id));
        }
        let targets: Vec<String> = if subscription.follow {
            inner.listeners.keys().cloned().collect()
        } else {
            holders.iter().filter(|n| inner.listeners.contains_key(&n.id)).map(|n| n.id.clone()).collect()
        };
        let mut nodes = HashSet::new();
        for node in targets {
            let listener = &inner.listeners[&node];
            match listener.tx.try_send(subscription.clone()) {
                Ok(()) => {
                    nodes.insert(node);
                }
                Err(_) => {
                    warnings.push(format!("node {node} is not keeping up with log reads: its logs are not shown"))
                }
            }
        }
        if !warnings.is_empty() {
            // The queue is new and empty: the warnings fit.
            let _ = tx.try_send(Ok(ServiceLogsMessage { warnings, ..ServiceLogsMessage::default() }));
        }
        let pending = if subscription.follow { HashSet::new() } else { nodes.clone() };
        let id = subscription.id.clone();
        let done = !subscription.follow && pending.is_empty();
        if !done {
            inner.reads.insert(id.clone(), Read { subscription, tx, nodes, pending });
        }
        // Without anything to wait for, the sender is dropped here and the read ends after the
        // warnings.
        Ok(OpenRead { rx, guard: ReadGuard { broker: self.clone(), id } })
    }

    /// The reader went away: the agents stop publishing.
    fn close(&self, id: &str) {
        let mut inner = self.inner.lock();
        let Some(read) = inner.reads.remove(id) else { return };
        let close = LogSubscription { id: id.to_string(), close: true, ..LogSubscription::default() };
        for node in &read.nodes {
            if let Some(listener) = inner.listeners.get(node) {
                // A full queue: the agent's publisher finds the read gone at its next message.
                let _ = listener.tx.try_send(close.clone());
            }
        }
    }

    /// Registers the subscription stream of `node_id`'s agent (session `session`), replacing
    /// an earlier one (whose reads are settled as if it had gone away). The reads that follow
    /// are sent at once, for lines from now on: the agent may have restarted, or be new.
    pub fn listen(&self, node_id: &str, session: &str) -> mpsc::Receiver<LogSubscription> {
        let (tx, rx) = mpsc::channel(LISTENER_QUEUE);
        let mut inner = self.inner.lock();
        if inner.listeners.contains_key(node_id) {
            inner.drop_listener(node_id, "reconnected");
        }
        for read in inner.reads.values_mut().filter(|r| r.subscription.follow) {
            let subscription = LogSubscription { from_now: true, ..read.subscription.clone() };
            if tx.try_send(subscription).is_ok() {
                read.nodes.insert(node_id.to_string());
            }
        }
        inner.listeners.insert(node_id.to_string(), Listener { session: session.to_string(), tx });
        rx
    }

    /// The subscription stream of `node_id`'s session `session` ended (the agent went away, or
    /// the session was replaced): reads waiting for that node's lines are told and go on.
    pub fn unlisten(&self, node_id: &str, session: &str) {
        let mut inner = self.inner.lock();
        if inner.listeners.get(node_id).is_none_or(|l| l.session != session) {
            return;
        }
        inner.drop_listener(node_id, "went away");
    }

    /// Where `node_id` sends its lines for read `id`, and what the read selects; `None` if the
    /// read is closed or the node was not asked.
    pub fn publisher(&self, id: &str, node_id: &str) -> Option<(mpsc::Sender<ReaderItem>, Selection)> {
        let inner = self.inner.lock();
        inner.reads.get(id).filter(|r| r.nodes.contains(node_id)).map(|r| {
            let selection =
                Selection { service_id: r.subscription.service_id.clone(), task_ids: r.subscription.task_ids.clone() };
            (r.tx.clone(), selection)
        })
    }

    /// `node_id` has sent its last line for read `id`; the read ends when no node is left.
    pub fn finished(&self, id: &str, node_id: &str) {
        let mut inner = self.inner.lock();
        let Some(read) = inner.reads.get_mut(id) else { return };
        read.pending.remove(node_id);
        read.nodes.remove(node_id);
        if !read.subscription.follow && read.pending.is_empty() {
            inner.reads.remove(id);
        }
    }

    /// Reads open now (for tests and limits).
    pub fn open_reads(&self) -> usize {
        self.inner.lock().reads.len()
    }

    /// Every read ends (this manager stopped leading): readers see the stream end with `why`.
    pub fn close_all(&self, why: &str) {
        let mut inner = self.inner.lock();
        for (_, read) in inner.reads.drain() {
            let _ = read.tx.try_send(Err(Status::unavailable(why.to_string())));
        }
        inner.listeners.clear();
    }
}

#[cfg(test)]
mod tests;
