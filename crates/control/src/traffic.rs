//! The ingress table the leader sends every agent's proxy, and the drain bookkeeping.
//!
//! For every published ingress port the table lists the tasks that take new connections: running
//! (so healthy, where the task has a health check: the agent reports RUNNING only then), told to
//! keep running, on a ready node, with the endpoint their agent reported. A task told to stop
//! leaves the table in the same raft entry that tells it, so every proxy stops sending it new
//! connections at once; its agent reports it DRAINING and stops it once no proxy on any node
//! holds a connection to it ([`TrafficTable::drained`]) or its drain timeout has passed.
//!
//! The table is kept per service and refreshed only for the services a change touched: its cost
//! grows with the change, not with the cluster.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use shoal_store::{Change, Object, State};
use shoal_types::traffic::{Backend, Listener};
use shoal_types::{NodeState, Service, Task, TaskState};

/// What one node's proxies last reported.
#[derive(Clone, Debug, Default)]
struct Report {
    /// The traffic stream it came on: a newer stream of the node replaces the older.
    stream: u64,
    /// The table version the node's proxies use.
    version: u64,
    /// Open connections per task (absent: none).
    connections: HashMap<String, u32>,
}

#[derive(Debug, Default)]
pub struct TrafficTable {
    /// Bumped whenever a listener changes.
    version: u64,
    listeners: BTreeMap<u16, Arc<Listener>>,
    /// The published ports of each service in the table.
    ports_of: HashMap<String, Vec<u16>>,
    /// Every task that is a backend of some listener now.
    backends: HashSet<String>,
    /// The version at which a task stopped being a backend: a node's proxies that use this
    /// version or a later one open no new connection to it.
    left_at: HashMap<String, u64>,
    /// Draining tasks and their nodes.
    draining: HashMap<String, String>,
    reports: HashMap<String, Report>,
}

/// Services whose listeners a change may alter, or `None` when every one must be looked at.
pub fn touched_services(change: &Change) -> Option<Vec<String>> {
    match &change.object {
        Object::Task(task) => Some(vec![task.service_id.clone()]),
        Object::Service(service) => Some(vec![service.id.clone()]),
        // A node's address or state moves all of its tasks.
        Object::Node(_) => None,
        Object::Cluster(_) => Some(Vec::new()),
    }
}

impl TrafficTable {
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn listeners(&self) -> &BTreeMap<u16, Arc<Listener>> {
        &self.listeners
    }

    /// Recomputes the listeners of every service.
    pub fn refresh_all(&mut self, state: &State) {
        let ids: Vec<String> = state.services().map(|s| s.id.clone()).chain(self.ports_of.keys().cloned()).collect();
        self.refresh(state, ids.iter().map(String::as_str));
    }

    /// Recomputes the listeners of `services` (and the draining tasks among their tasks).
    pub fn refresh<'a>(&mut self, state: &State, services: impl IntoIterator<Item = &'a str>) {
        let mut changed = false;
        let mut seen = HashSet::new();
        for id in services {
            if !seen.insert(id) {
                continue;
            }
            let tasks: Vec<&Task> = state.tasks_of_service(id).collect();
            for task in &tasks {
                if task.status.state == TaskState::Draining {
                    self.draining.insert(task.id.clone(), task.node_id.clone());
                } else {
                    self.draining.remove(&task.id);
                }
            }
            let wanted = state.service(id).map(|s| listeners_of(state, s, &tasks)).unwrap_or_default();
            let old_ports = self.ports_of.remove(id).unwrap_or_default();
            let mut before: HashSet<&str> = HashSet::new();
            let mut old_listeners = Vec::new();
            for port in &old_ports {
                if let Some(listener) = self.listeners.get(port) {
                    old_listeners.push(listener.clone());
                }
            }
            for listener in &old_listeners {
                before.extend(listener.backends.iter().map(|b| b.task_id.as_str()));
            }
            let after: HashSet<&str> =
                wanted.iter().flat_map(|l| l.backends.iter().map(|b| b.task_id.as_str())).collect();
            let ports: Vec<u16> = wanted.iter().map(|l| l.port).collect();
            let same = old_listeners.len() == wanted.len()
                && old_listeners.iter().zip(&wanted).all(|(old, new)| **old == *new);
            if same {
                self.ports_of.insert(id.to_string(), ports);
                continue;
            }
            changed = true;
            let next = self.version + 1;
            for gone in before.difference(&after) {
                self.backends.remove(*gone);
                self.left_at.insert(gone.to_string(), next);
            }
            for added in after.difference(&before) {
                self.backends.insert(added.to_string());
                self.left_at.remove(*added);
            }
            for port in &old_ports {
                self.listeners.remove(port);
            }
            for listener in wanted {
                self.listeners.insert(listener.port, Arc::new(listener));
            }
            if !ports.is_empty() {
                self.ports_of.insert(id.to_string(), ports);
            }
        }
        if changed {
            self.version += 1;
        }
        // Tasks gone from the store need no bookkeeping.
        self.left_at.retain(|task, _| state.task(task).is_some());
        self.draining.retain(|task, _| state.task(task).is_some_and(|t| t.status.state == TaskState::Draining));
    }

    /// Records what node `node_id`'s proxies reported on traffic stream `stream`.
    pub fn report(&mut self, node_id: &str, stream: u64, version: u64, connections: HashMap<String, u32>) {
        let entry = self.reports.entry(node_id.to_string()).or_default();
        if entry.stream > stream {
            return;
        }
        *entry = Report { stream, version, connections };
    }

    /// Forgets node `node_id`'s reports when its traffic stream `stream` ended (a newer stream's
    /// stay): a node that is gone holds no connection.
    pub fn stream_ended(&mut self, node_id: &str, stream: u64) {
        if self.reports.get(node_id).is_some_and(|r| r.stream == stream) {
            self.reports.remove(node_id);
        }
    }

    /// The draining tasks of `node_id` no proxy holds a connection to: every node with an open
    /// traffic stream uses a table without them and reports none open.
    pub fn drained(&self, node_id: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .draining
            .iter()
            .filter(|(task, node)| *node == node_id && !self.backends.contains(*task))
            .filter(|(task, _)| {
                // A task that left the table before this leader saw it: the leader's first table.
                let left = self.left_at.get(*task).copied().unwrap_or(0);
                self.reports.values().all(|r| r.version >= left && r.connections.get(*task).is_none_or(|n| *n == 0))
            })
            .map(|(task, _)| task.clone())
            .collect();
        out.sort();
        out
    }

    /// Open connections to `task` over every node, as reported.
    pub fn connections(&self, task: &str) -> u32 {
        self.reports.values().filter_map(|r| r.connections.get(task)).sum()
    }
}

/// The address other nodes reach node `node_id`'s published ports at: its ingress address, or
/// the address the leader sees it at when that is unspecified.
fn node_addr(state: &State, node_id: &str) -> Option<String> {
    let node = state.node(node_id)?;
    if node.status.state != NodeState::Ready {
        return None;
    }
    let ingress = node.description.ingress_addr.as_str();
    let unspecified = ingress.parse::<std::net::IpAddr>().map(|ip| ip.is_unspecified()).unwrap_or(true);
    let addr = if unspecified { node.status.addr.as_str() } else { ingress };
    (!addr.is_empty()).then(|| addr.to_string())
}

fn join(ip: &str, port: u16) -> String {
    if ip.contains(':') { format!("[{ip}]:{port}") } else { format!("{ip}:{port}") }
}

/// The listeners of `service` over its `tasks`, by port.
fn listeners_of(state: &State, service: &Service, tasks: &[&Task]) -> Vec<Listener> {
    let mut out = Vec::new();
    for port in service.spec.endpoint.ports.iter().filter(|p| p.is_ingress()) {
        let mut backends = Vec::new();
        for task in
            tasks.iter().filter(|t| t.desired_state <= TaskState::Running && t.status.state == TaskState::Running)
        {
            // The task's own endpoint decides its target port (an older spec may differ).
            let Some(target) = task.endpoint.ports.iter().find(|p| p.is_ingress() && p.published == port.published)
            else {
                continue;
            };
            let Some(reported) = task.status.ports.iter().find(|p| p.target == target.target) else { continue };
            let Some(addr) = node_addr(state, &task.node_id) else { continue };
            if reported.host_port == 0 && reported.container_ip.is_empty() {
                continue;
            }
            backends.push(Backend {
                task_id: task.id.clone(),
                node_id: task.node_id.clone(),
                remote: if reported.host_port == 0 { String::new() } else { join(&addr, reported.host_port) },
                local: if reported.container_ip.is_empty() {
                    String::new()
                } else {
                    join(&reported.container_ip, target.target)
                },
            });
        }
        backends.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        out.push(Listener { port: port.published, service: service.spec.name.clone(), backends });
    }
    out.sort_by_key(|l| l.port);
    out
}

#[cfg(test)]
mod tests;
