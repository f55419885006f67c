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
use shoal_types::traffic::{Backend, Listener, ListenerKey, Route};
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
    listeners: BTreeMap<ListenerKey, Arc<Listener>>,
    /// The listeners of each service in the table, and the service each listener is for.
    ports_of: HashMap<String, Vec<ListenerKey>>,
    owner: HashMap<ListenerKey, String>,
    /// Ready nodes that run an ingress proxy: a drain waits for every one of them to report.
    proxy_nodes: HashSet<String>,
    /// Every task that is a backend of some listener now (of how many), and the backends by
    /// owner (a service id, or [`ROUTE_OWNER`] and a route id).
    backends: HashMap<String, u32>,
    backends_of: HashMap<String, HashSet<String>>,
    /// The services each route selected at its last refresh.
    route_services: HashMap<String, HashSet<String>>,
    /// The version at which a task stopped being a backend: a node's proxies that use this
    /// version or a later one open no new connection to it.
    left_at: HashMap<String, u64>,
    /// Draining tasks and their nodes.
    draining: HashMap<String, String>,
    /// The target ports each service on a network was reached at: its tasks report their ports
    /// only while they run, and the service's virtual IP keeps its listeners between tasks (a
    /// rolling update of its only task, a restart).
    vip_targets: HashMap<String, std::collections::BTreeSet<u16>>,
    reports: HashMap<String, Report>,
}

/// Services whose listeners a change may alter, or `None` when every one must be looked at.
pub fn touched_services(change: &Change) -> Option<Vec<String>> {
    match &change.object {
        Object::Task(task) => Some(vec![task.service_id.clone()]),
        Object::Service(service) => Some(vec![service.id.clone()]),
        // A node's address or state moves all of its tasks; a route may select any service.
        Object::Node(_) | Object::Route(_) => None,
        Object::Cluster(_) => Some(Vec::new()),
    }
}

impl TrafficTable {
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn listeners(&self) -> &BTreeMap<ListenerKey, Arc<Listener>> {
        &self.listeners
    }

    /// The listener of published port `port`.
    pub fn published(&self, port: u16) -> Option<&Listener> {
        self.listeners.get(&ListenerKey::published(port)).map(|l| &**l)
    }

    /// Recomputes the listeners of every service and route, and which nodes run proxies. Tables
    /// are numbered from 1, so a node's report of version 0 (nothing applied from this manager
    /// yet) never counts for a drain.
    pub fn refresh_all(&mut self, state: &State) -> bool {
        self.version = self.version.max(1);
        let proxy_nodes: HashSet<String> = state
            .nodes()
            .filter(|n| n.status.state == NodeState::Ready && !n.description.ingress_addr.is_empty())
            .map(|n| n.id.clone())
            .collect();
        let nodes_changed = proxy_nodes != self.proxy_nodes;
        self.proxy_nodes = proxy_nodes;
        let ids: Vec<String> = state
            .services()
            .map(|s| s.id.clone())
            .chain(self.ports_of.keys().filter(|o| !o.starts_with(ROUTE_OWNER)).cloned())
            .collect();
        let changed = self.refresh(state, ids.iter().map(String::as_str));
        // Routes removed since.
        let gone: Vec<String> = self
            .ports_of
            .keys()
            .filter_map(|o| o.strip_prefix(ROUTE_OWNER))
            .filter(|id| state.route(id).is_none())
            .map(str::to_string)
            .collect();
        let mut removed = false;
        for id in gone {
            removed |= self.set_owned(state, &format!("{ROUTE_OWNER}{id}"), Vec::new());
            self.route_services.remove(&id);
        }
        if removed {
            self.version += 1;
        }
        changed || removed || nodes_changed
    }

    /// Recomputes the listeners of `services`, of the routes that select one of them (now or
    /// before), and the draining tasks among their tasks; whether the table or the draining
    /// tasks changed.
    pub fn refresh<'a>(&mut self, state: &State, services: impl IntoIterator<Item = &'a str>) -> bool {
        self.version = self.version.max(1);
        let draining_before = self.draining.len();
        let mut draining_changed = false;
        let mut changed = false;
        let mut seen: HashSet<&str> = HashSet::new();
        for id in services {
            if !seen.insert(id) {
                continue;
            }
            let tasks: Vec<&Task> = state.tasks_of_service(id).collect();
            for task in &tasks {
                if task.status.state == TaskState::Draining {
                    draining_changed |= self.draining.insert(task.id.clone(), task.node_id.clone()).is_none();
                } else {
                    draining_changed |= self.draining.remove(&task.id).is_some();
                }
            }
            let wanted = match state.service(id) {
                Some(service) => {
                    let remembered = self.vip_targets.entry(id.to_string()).or_default();
                    let listeners = listeners_of(state, service, &tasks, remembered);
                    if remembered.is_empty() {
                        self.vip_targets.remove(id);
                    }
                    listeners
                }
                None => {
                    self.vip_targets.remove(id);
                    Vec::new()
                }
            };
            changed |= self.set_owned(state, id, wanted);
        }
        for route in state.routes() {
            let selected: HashSet<String> =
                state.services().filter(|s| route.spec.selects(&s.spec.labels)).map(|s| s.id.clone()).collect();
            let before = self.route_services.get(&route.id);
            let touched = selected.iter().chain(before.into_iter().flatten()).any(|s| seen.contains(s.as_str()))
                || before != Some(&selected)
                || !self.ports_of.contains_key(&format!("{ROUTE_OWNER}{}", route.id));
            if !touched {
                continue;
            }
            let listener = route_listener(state, route, &selected);
            self.route_services.insert(route.id.clone(), selected);
            changed |= self.set_owned(state, &format!("{ROUTE_OWNER}{}", route.id), vec![listener]);
        }
        if changed {
            self.version += 1;
        }
        // Tasks gone from the store need no bookkeeping.
        self.left_at.retain(|task, _| state.task(task).is_some());
        self.draining.retain(|task, _| state.task(task).is_some_and(|t| t.status.state == TaskState::Draining));
        changed || draining_changed || self.draining.len() != draining_before
    }

    /// Makes `wanted` the listeners of `owner` (a service id, or a route's owner key): records
    /// which tasks stopped being backends (at the next version) and which became ones. Whether
    /// anything changed.
    fn set_owned(&mut self, state: &State, owner: &str, mut wanted: Vec<Listener>) -> bool {
        // A port another owner still publishes stays that owner's (the store refuses a second
        // one; an automatic rollback may still bring one back).
        wanted.retain(|listener| match self.owner.get(&listener.key()) {
            Some(other) if other != owner && still_publishes(state, other, &listener.key()) => {
                tracing::warn!(port = listener.port, service = %listener.service, "published port already carries other traffic; ignored here");
                false
            }
            _ => true,
        });
        let old_ports: Vec<ListenerKey> = self
            .ports_of
            .remove(owner)
            .unwrap_or_default()
            .into_iter()
            .filter(|p| self.owner.get(p).is_some_and(|o| o == owner))
            .collect();
        let old_listeners: Vec<Arc<Listener>> =
            old_ports.iter().filter_map(|port| self.listeners.get(port).cloned()).collect();
        let before = self.backends_of.remove(owner).unwrap_or_default();
        let after: HashSet<String> = wanted.iter().flat_map(|l| l.backends.iter().map(|b| b.task_id.clone())).collect();
        let ports: Vec<ListenerKey> = wanted.iter().map(Listener::key).collect();
        let same = old_listeners.len() == wanted.len()
            && old_listeners.iter().zip(&wanted).all(|(old, new)| **old == *new)
            && before == after;
        if same {
            if !ports.is_empty() {
                self.ports_of.insert(owner.to_string(), ports);
            }
            if !after.is_empty() {
                self.backends_of.insert(owner.to_string(), after);
            }
            return false;
        }
        let next = self.version + 1;
        for gone in before.difference(&after) {
            if let Some(n) = self.backends.get_mut(gone) {
                *n -= 1;
                if *n == 0 {
                    self.backends.remove(gone);
                    self.left_at.insert(gone.clone(), next);
                }
            }
        }
        for added in after.difference(&before) {
            *self.backends.entry(added.clone()).or_default() += 1;
            self.left_at.remove(added);
        }
        for port in &old_ports {
            self.listeners.remove(port);
            self.owner.remove(port);
        }
        for listener in wanted {
            self.owner.insert(listener.key(), owner.to_string());
            self.listeners.insert(listener.key(), Arc::new(listener));
        }
        if !ports.is_empty() {
            self.ports_of.insert(owner.to_string(), ports);
        }
        if !after.is_empty() {
            self.backends_of.insert(owner.to_string(), after);
        }
        true
    }

    /// Records what node `node_id`'s proxies reported on traffic stream `stream`; whether it
    /// may change which tasks are drained (a new version, or new counts of a draining task).
    pub fn report(&mut self, node_id: &str, stream: u64, version: u64, connections: HashMap<String, u32>) -> bool {
        let entry = self.reports.entry(node_id.to_string()).or_default();
        if entry.stream > stream {
            return false;
        }
        let matters = entry.stream != stream
            || entry.version != version
            || self.draining.keys().any(|t| entry.connections.get(t) != connections.get(t));
        *entry = Report { stream, version, connections };
        matters
    }

    /// Forgets node `node_id`'s reports when its traffic stream `stream` ended (a newer stream's
    /// stay). While the node is ready it still holds drains up (see [`TrafficTable::drained`]).
    pub fn stream_ended(&mut self, node_id: &str, stream: u64) {
        if self.reports.get(node_id).is_some_and(|r| r.stream == stream) {
            self.reports.remove(node_id);
        }
    }

    /// The draining tasks of `node_id` no proxy holds a connection to: every ready node with a
    /// proxy has an open traffic stream, uses a table without them and reports none open. A
    /// proxy node that has not (re)connected holds every drain up (its proxy lives on between
    /// sessions, and so do its connections); the task's drain timeout bounds the wait.
    pub fn drained(&self, node_id: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .draining
            .iter()
            .filter(|(task, node)| *node == node_id && !self.backends.contains_key(*task))
            .filter(|(task, _)| {
                // A task that left the table before this leader saw it: the leader's first table.
                let left = self.left_at.get(*task).copied().unwrap_or(0).max(1);
                let reported = |r: &Report| r.version >= left && r.connections.get(*task).is_none_or(|n| *n == 0);
                self.proxy_nodes.iter().all(|n| self.reports.get(n).is_some_and(reported))
                    && self.reports.values().all(reported)
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

/// The owner key of a route's listener: this and the route's id.
const ROUTE_OWNER: &str = "route:";

fn still_publishes(state: &State, owner: &str, key: &ListenerKey) -> bool {
    let port = key.port;
    match owner.strip_prefix(ROUTE_OWNER) {
        Some(route) => key.address.is_empty() && state.route(route).is_some_and(|r| r.spec.port == port),
        None if !key.address.is_empty() => state.service(owner).is_some_and(|s| s.virtual_ip == key.address),
        None => state
            .service(owner)
            .is_some_and(|s| s.spec.endpoint.ports.iter().any(|p| p.is_ingress() && p.published == port)),
    }
}

/// Task `task`'s backend for `target` (its reported endpoint), weight 1.
fn backend_of(state: &State, task: &Task, target: u16) -> Option<Backend> {
    if task.desired_state > TaskState::Running || task.status.state != TaskState::Running {
        return None;
    }
    let reported = task.status.ports.iter().find(|p| p.target == target)?;
    let addr = node_addr(state, &task.node_id)?;
    if reported.host_port == 0 && reported.container_ip.is_empty() {
        return None;
    }
    Some(Backend {
        task_id: task.id.clone(),
        node_id: task.node_id.clone(),
        remote: if reported.host_port == 0 { String::new() } else { join(&addr, reported.host_port) },
        local: if reported.container_ip.is_empty() { String::new() } else { join(&reported.container_ip, target) },
        weight: 1,
    })
}

/// Weight units a service's share (in per cent) is split into among its tasks.
const WEIGHT_UNITS: u32 = 10_000;

/// A route's listener: the tasks of the `selected` services that listen on its target port.
/// Without weights every task weighs the same; with them each service's share divides among
/// its tasks, and the services not named split what the named ones leave.
fn route_listener(state: &State, route: &Route, selected: &HashSet<String>) -> Listener {
    let spec = &route.spec;
    let mut by_service: Vec<(&Service, Vec<Backend>)> = state
        .services()
        .filter(|s| selected.contains(&s.id))
        .map(|s| (s, state.tasks_of_service(&s.id).filter_map(|t| backend_of(state, t, spec.target)).collect()))
        .collect();
    by_service.retain(|(_, backends)| !backends.is_empty());
    if !spec.weights.is_empty() {
        let named: u32 = spec.weights.values().sum();
        let unnamed = by_service.iter().filter(|(s, _)| !spec.weights.contains_key(&s.spec.name)).count() as u32;
        let rest = 100u32.saturating_sub(named);
        for (service, backends) in &mut by_service {
            // In weight units, so a rest split among several services does not round to 0.
            let units = match spec.weights.get(&service.spec.name) {
                Some(share) => share.min(&100) * WEIGHT_UNITS,
                None => rest * WEIGHT_UNITS / unnamed.max(1),
            };
            let each = units / backends.len().max(1) as u32;
            for backend in backends.iter_mut() {
                backend.weight = if units == 0 { 0 } else { each.max(1) };
            }
        }
    }
    let mut backends: Vec<Backend> = by_service.into_iter().flat_map(|(_, b)| b).collect();
    backends.sort_by(|a, b| a.task_id.cmp(&b.task_id));
    Listener { address: String::new(), port: spec.port, service: format!("route {}", spec.name), backends }
}

fn join(ip: &str, port: u16) -> String {
    if ip.contains(':') { format!("[{ip}]:{port}") } else { format!("{ip}:{port}") }
}

/// The listeners of `service` over its `tasks`, by port; `vip_targets`: the target ports its
/// virtual IP listens on, kept from earlier refreshes.
fn listeners_of(
    state: &State,
    service: &Service,
    tasks: &[&Task],
    vip_targets: &mut std::collections::BTreeSet<u16>,
) -> Vec<Listener> {
    let mut out = Vec::new();
    for port in service.spec.endpoint.ports.iter().filter(|p| p.is_ingress()) {
        let backends: Vec<Backend> = tasks
            .iter()
            .filter_map(|task| {
                // The task's own endpoint decides its target port (an older spec may differ).
                let target = task.endpoint.ports.iter().find(|p| p.is_ingress() && p.published == port.published)?;
                backend_of(state, task, target.target)
            })
            .collect();
        out.push(service_listener(service, tasks, String::new(), port.published, backends));
    }
    out.extend(virtual_ip_listeners(state, service, tasks, vip_targets));
    out.sort_by_key(Listener::key);
    out
}

/// The listeners on a service's virtual IP: one per target port of its spec's reachable ports
/// (`-p 80`, `expose:`) and per port its tasks reported (the ports their images expose), to its
/// running tasks on any node, with the same health, draining and step shares as its published
/// ports. Reported ports are remembered in `targets` (a task reports its ports only while it
/// runs), so the listeners stay while a rolling update replaces the only task: a client
/// connecting then is closed at once instead of waiting on an address nobody holds.
fn virtual_ip_listeners(
    state: &State,
    service: &Service,
    tasks: &[&Task],
    targets: &mut std::collections::BTreeSet<u16>,
) -> Vec<Listener> {
    if service.virtual_ip.is_empty() || service.spec.task.networks.is_empty() {
        targets.clear();
        return Vec::new();
    }
    targets.extend(service.spec.endpoint.ports.iter().filter(|p| p.is_reachable()).map(|p| p.target));
    targets.extend(tasks.iter().flat_map(|t| t.status.ports.iter().map(|p| p.target)));
    targets
        .iter()
        .map(|&target| {
            let backends: Vec<Backend> = tasks.iter().filter_map(|task| backend_of(state, task, target)).collect();
            service_listener(service, tasks, service.virtual_ip.clone(), target, backends)
        })
        .collect()
}

/// One listener of `service` over `backends` (of its `tasks`): shaped by the share its rollout's
/// step gives the new version, ordered by task id.
fn service_listener(
    service: &Service,
    tasks: &[&Task],
    address: String,
    port: u16,
    mut backends: Vec<Backend>,
) -> Listener {
    if let Some(share) = step_traffic(service) {
        let new: HashSet<&str> =
            tasks.iter().filter(|t| t.spec_version == service.spec_version).map(|t| t.id.as_str()).collect();
        shape(&mut backends, share, |task| new.contains(task));
    }
    backends.sort_by(|a, b| a.task_id.cmp(&b.task_id));
    Listener { address, port, service: service.spec.name.clone(), backends }
}

/// The traffic share of the new version the service's rollout is at (a canary step's
/// `traffic=N%`), while it rolls out or is paused at that step.
fn step_traffic(service: &Service) -> Option<u8> {
    let status = service.update_status.as_ref()?;
    if !matches!(status.state, shoal_types::UpdateState::Updating | shoal_types::UpdateState::Paused) {
        return None;
    }
    let step = status.step.as_ref()?;
    service.spec.update_config.steps.get(step.index as usize)?.traffic
}

/// Gives the backends `is_new` says run the new version `share` per cent of the connections and
/// the others the rest, each group's share split among its tasks. With one group empty the other
/// takes everything (weights stay equal).
fn shape(backends: &mut [Backend], share: u8, is_new: impl Fn(&str) -> bool) {
    let new = backends.iter().filter(|b| is_new(&b.task_id)).count() as u32;
    let old = backends.len() as u32 - new;
    if new == 0 || old == 0 {
        return;
    }
    let share = u32::from(share).min(100);
    for backend in backends.iter_mut() {
        let (group_share, count) = if is_new(&backend.task_id) { (share, new) } else { (100 - share, old) };
        backend.weight = if group_share == 0 { 0 } else { (group_share * WEIGHT_UNITS / count).max(1) };
    }
}

#[cfg(test)]
mod tests;
