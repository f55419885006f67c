//! shoal's task scheduler: a pure, deterministic, IO-free function from a [`Problem`] (nodes, tasks
//! already placed, tasks waiting for a node, recent failures) to a [`Solution`] (which pending task
//! goes to which node, and why the others cannot be placed).
//!
//! It follows Docker Swarm's scheduler (SwarmKit `manager/scheduler`), see
//! `swarm-semantics.md` §6:
//!
//! * **Filters**, in order, the first failing one stops for a node: ready (status READY and
//!   availability ACTIVE), resources (only when the task reserves something), constraints, host-mode
//!   published ports, max replicas per node. A task nobody can take gets
//!   `"no suitable node (<explanations>)"`, the explanations ordered by descending node count
//!   (ties in filter order), e.g.
//!   `"no suitable node (2 nodes not available for new tasks; insufficient resources on 1 node)"`,
//!   or `"no suitable node"` when there is no node at all.
//! * **Node choice**: a node with ≥ 5 recent failures of the task's service + spec version loses
//!   to one with fewer; then fewer active tasks of the service; then fewer active tasks in total;
//!   then the smaller node id (Swarm leaves that last tie to map order).
//! * **Groups**: pending tasks of one service + spec version (and identical placement spec) are
//!   placed together over a decision tree built from the `spread=` placement preferences, so that
//!   branches end up with equal *total* numbers of the service's tasks; a branch that cannot take its
//!   share is marked full and the rest spill over to the others.
//! * **Preassigned** tasks (global services) are only checked against their node. As in Swarm,
//!   their reason is the bare explanation (`"1 node not available for new tasks"`).
//!
//! Every decision updates the chosen node's counts, free resources and used host ports at once, so
//! later decisions of the same [`solve`] see them. Ties never depend on hash order: the same
//! problem always gives the same solution, whatever the order of `nodes` and `placed`.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

pub use shoal_types::{Availability, Constraint, ConstraintOp, NodeRole, PlacementPreference, PortProtocol};

mod failures;
mod filter;
mod solver;
mod synthetic;

pub use failures::{FAULTY_WINDOW_MS, FailureLog};
pub use synthetic::synthetic_problem;

/// A node with at least this many recent failures of a service + spec version is sorted after
/// every node with fewer (Swarm's `maxFailures`).
pub const FAULTY_NODE_FAILURES: u32 = 5;

/// CPU and memory: a node's capacity, or a task's reservations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Amounts {
    pub nano_cpus: u64,
    pub memory_bytes: u64,
}

impl Amounts {
    pub fn is_zero(&self) -> bool {
        self.nano_cpus == 0 && self.memory_bytes == 0
    }
}

/// A node as the scheduler sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SchedNode {
    pub id: String,
    pub hostname: String,
    pub role: NodeRole,
    /// Status READY.
    pub ready: bool,
    pub availability: Availability,
    /// `node.labels.*` (set by `node update --label-add`).
    pub labels: BTreeMap<String, String>,
    /// `engine.labels.*` (daemon labels).
    pub engine_labels: BTreeMap<String, String>,
    pub platform_os: String,
    pub platform_arch: String,
    /// Only used by `node.ip` constraints (an IP, or `ip:port`).
    pub addr: String,
    /// Total CPU and memory.
    pub capacity: Amounts,
}

/// A task already on a node and active (desired ≤ COMPLETE, observed PENDING..RUNNING): it uses
/// resources and host ports and counts for spreading. Tasks on unknown nodes are ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlacedTask {
    pub node_id: String,
    pub service_id: String,
    pub reservations: Amounts,
    /// Host-mode published ports; port 0 is ignored.
    pub host_ports: Vec<(PortProtocol, u16)>,
}

/// A task waiting for a node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PendingTask {
    pub id: String,
    pub service_id: String,
    pub spec_version: u64,
    pub reservations: Amounts,
    /// All must hold.
    pub constraints: Vec<Constraint>,
    /// `spread=node.labels.X` / `spread=engine.labels.X`, outermost first.
    pub preferences: Vec<PlacementPreference>,
    /// 0 = unlimited.
    pub max_replicas_per_node: u64,
    /// Host-mode published ports; port 0 is ignored.
    pub host_ports: Vec<(PortProtocol, u16)>,
    /// Global-service tasks: only this node is checked.
    pub preassigned_node: Option<String>,
}

/// Recent failures (the caller applies the 5-minute window; [`FailureLog`] does) of a service + spec
/// version on a node.
/// Several entries for the same triple add up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Failure {
    pub node_id: String,
    pub service_id: String,
    pub spec_version: u64,
    pub count: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Problem {
    pub nodes: Vec<SchedNode>,
    pub placed: Vec<PlacedTask>,
    pub pending: Vec<PendingTask>,
    pub failures: Vec<Failure>,
}

/// Every pending task appears exactly once, in `assignments` or in `unschedulable`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Solution {
    /// `(task id, node id)` in decision order: preassigned tasks first (input order), then the
    /// groups in order of their first task in `pending`. Each decision saw all earlier ones.
    pub assignments: Vec<(String, String)>,
    /// `(task id, reason)`; the reason is what Swarm puts in the task's `Status.Err`.
    pub unschedulable: Vec<(String, String)>,
    /// What kept each of `unschedulable` (same order) off every node, as a word for metrics.
    pub unschedulable_kinds: Vec<Unschedulable>,
}

/// Why a task could not be placed, by type: the filter that turned away the most nodes, or why
/// there was no node to try.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Unschedulable {
    NoNode,
    NodeNotFound,
    ManagersRunNoTasks,
    NotReady,
    Resources,
    Constraints,
    HostPort,
    MaxReplicas,
}

impl Unschedulable {
    pub fn as_str(self) -> &'static str {
        match self {
            Unschedulable::NoNode => "no_node",
            Unschedulable::NodeNotFound => "node_not_found",
            Unschedulable::ManagersRunNoTasks => "managers_run_no_tasks",
            Unschedulable::NotReady => "not_ready",
            Unschedulable::Resources => "resources",
            Unschedulable::Constraints => "constraints",
            Unschedulable::HostPort => "host_port",
            Unschedulable::MaxReplicas => "max_replicas",
        }
    }
}

/// Places the pending tasks. Pure and deterministic.
pub fn solve(problem: &Problem) -> Solution {
    solver::solve(problem)
}

#[cfg(test)]
mod tests;
