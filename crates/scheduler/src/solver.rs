//! The scheduling algorithm. Cost: building the node table and per-group filter pass are
//! O(nodes) (constraints evaluated once per node per distinct constraint set), and each placement
//! is O(log nodes): candidates of a tree leaf sit in a min-heap keyed by
//! (faulty-node failures, service tasks, active tasks, node rank) and only the node just used is
//! re-checked and pushed back.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::rc::Rc;

use crate::filter::{self, Filter, Spread};
use crate::{
    Amounts, Availability, Constraint, FAULTY_NODE_FAILURES, NodeRole, PendingTask, PlacementPreference, PortProtocol,
    Problem, SchedNode, Solution,
};

pub(crate) fn solve(problem: &Problem) -> Solution {
    let mut solver = Solver::new(problem);

    let mut preassigned = Vec::new();
    // Groups of tasks sharing service, spec version and placement fields, in order of first task.
    let mut groups: Vec<Vec<&PendingTask>> = Vec::new();
    let mut group_index: HashMap<(&str, u64), Vec<usize>> = HashMap::new();
    for task in &problem.pending {
        if let Some(node) = &task.preassigned_node {
            preassigned.push((task, node.as_str()));
            continue;
        }
        let candidates = group_index.entry((task.service_id.as_str(), task.spec_version)).or_default();
        match candidates.iter().find(|&&g| same_placement(groups[g][0], task)) {
            Some(&g) => groups[g].push(task),
            None => {
                candidates.push(groups.len());
                groups.push(vec![task]);
            }
        }
    }

    // Swarm handles preassigned (global) tasks first, then the groups.
    for (task, node) in preassigned {
        solver.schedule_preassigned(task, node);
    }
    for group in &groups {
        solver.schedule_group(group);
    }
    solver.solution
}

/// Tasks of one service + spec version are normally identical; if a caller mixes placement fields
/// anyway, each variant is scheduled as its own group.
fn same_placement(a: &PendingTask, b: &PendingTask) -> bool {
    a.reservations == b.reservations
        && a.constraints == b.constraints
        && a.preferences == b.preferences
        && a.max_replicas_per_node == b.max_replicas_per_node
        && a.host_ports == b.host_ports
}

/// (protocol, published port) as one number; port 0 means "not published" and yields None.
fn port_key((protocol, port): (PortProtocol, u16)) -> Option<u32> {
    let protocol: u32 = match protocol {
        PortProtocol::Tcp => 0,
        PortProtocol::Udp => 1,
        PortProtocol::Sctp => 2,
    };
    (port != 0).then_some((protocol << 16) | u32::from(port))
}

struct NodeState<'a> {
    src: &'a SchedNode,
    /// Status READY and availability ACTIVE.
    usable: bool,
    /// Capacity minus reservations; may go negative when placed tasks over-commit (as in Swarm).
    free_cpus: i128,
    free_memory: i128,
    active_tasks: u32,
    by_service: HashMap<u32, u32>,
    ports: HashSet<u32>,
}

impl NodeState<'_> {
    fn service_tasks(&self, service: u32) -> u32 {
        self.by_service.get(&service).copied().unwrap_or(0)
    }

    fn add_task(&mut self, service: u32, reservations: Amounts, ports: impl IntoIterator<Item = u32>) {
        self.free_cpus -= i128::from(reservations.nano_cpus);
        self.free_memory -= i128::from(reservations.memory_bytes);
        self.active_tasks += 1;
        *self.by_service.entry(service).or_insert(0) += 1;
        self.ports.extend(ports);
    }
}

/// What the filters and the decision tree read from a pending task.
struct Spec<'a> {
    service: u32,
    service_id: &'a str,
    spec_version: u64,
    reservations: Amounts,
    constraints: &'a [Constraint],
    preferences: &'a [PlacementPreference],
    max_replicas: u64,
    ports: Vec<u32>,
}

/// Heap key, smaller is better: (failures if faulty else 0, service tasks, active tasks, node rank).
type Key = (u32, u32, u32, u32);

/// A level of the decision tree: one value of a spread label, or a leaf holding nodes.
#[derive(Default)]
struct Branch<'a> {
    /// Active tasks of the service on all nodes below (whether they pass the filters or not),
    /// kept up to date as tasks are placed.
    tasks: u64,
    children: BTreeMap<&'a str, Branch<'a>>,
    /// Leaf only: nodes that passed every filter when the tree was built.
    candidates: Vec<usize>,
    heap: Option<BinaryHeap<Reverse<Key>>>,
}

struct Group<'a, 't> {
    spec: Spec<'a>,
    tasks: &'t [&'a PendingTask],
    /// Next task of `tasks` to place.
    next: usize,
    /// Per node: recent failures of this service + spec version when ≥ FAULTY_NODE_FAILURES, else 0
    /// (empty when no node has failures of it).
    faulty: Vec<u32>,
}

impl Group<'_, '_> {
    fn faulty(&self, i: usize) -> u32 {
        self.faulty.get(i).copied().unwrap_or(0)
    }
}

struct Solver<'a> {
    /// Sorted by id (the final tie-break), duplicates dropped.
    nodes: Vec<NodeState<'a>>,
    by_id: HashMap<&'a str, usize>,
    services: HashMap<&'a str, u32>,
    /// Active tasks per service (by service number) on all nodes.
    service_totals: Vec<u64>,
    failures: HashMap<(&'a str, u64), Vec<(usize, u32)>>,
    /// Constraint set (as text) → which nodes match it.
    constraint_cache: HashMap<String, Rc<[bool]>>,
    solution: Solution,
}

impl<'a> Solver<'a> {
    fn new(problem: &'a Problem) -> Self {
        let mut sorted: Vec<&SchedNode> = problem.nodes.iter().collect();
        sorted.sort_by(|a, b| a.id.cmp(&b.id));
        sorted.dedup_by(|a, b| a.id == b.id);
        let nodes: Vec<NodeState<'a>> = sorted
            .into_iter()
            .map(|src| NodeState {
                src,
                usable: src.ready && src.availability == Availability::Active,
                free_cpus: i128::from(src.capacity.nano_cpus),
                free_memory: i128::from(src.capacity.memory_bytes),
                active_tasks: 0,
                by_service: HashMap::new(),
                ports: HashSet::new(),
            })
            .collect();
        let by_id = nodes.iter().enumerate().map(|(i, n)| (n.src.id.as_str(), i)).collect();
        let mut solver = Solver {
            nodes,
            by_id,
            services: HashMap::new(),
            service_totals: Vec::new(),
            failures: HashMap::new(),
            constraint_cache: HashMap::new(),
            solution: Solution::default(),
        };
        for task in &problem.placed {
            let Some(&i) = solver.by_id.get(task.node_id.as_str()) else { continue };
            let service = solver.service(&task.service_id);
            solver.nodes[i].add_task(service, task.reservations, task.host_ports.iter().copied().filter_map(port_key));
            solver.service_totals[service as usize] += 1;
        }
        for f in &problem.failures {
            let Some(&i) = solver.by_id.get(f.node_id.as_str()) else { continue };
            solver.failures.entry((f.service_id.as_str(), f.spec_version)).or_default().push((i, f.count));
        }
        solver
    }

    fn service(&mut self, id: &'a str) -> u32 {
        let next = self.services.len() as u32;
        let service = *self.services.entry(id).or_insert(next);
        if service == next {
            self.service_totals.push(0);
        }
        service
    }

    fn spec(&mut self, task: &'a PendingTask) -> Spec<'a> {
        let mut ports: Vec<u32> = task.host_ports.iter().copied().filter_map(port_key).collect();
        ports.sort_unstable();
        ports.dedup();
        Spec {
            service: self.service(&task.service_id),
            service_id: &task.service_id,
            spec_version: task.spec_version,
            reservations: task.reservations,
            constraints: &task.constraints,
            preferences: &task.preferences,
            max_replicas: task.max_replicas_per_node,
            ports,
        }
    }

    /// Which nodes satisfy `constraints`; None when there are none (every node does).
    fn constraint_matches(&mut self, constraints: &[Constraint]) -> Option<Rc<[bool]>> {
        if constraints.is_empty() {
            return None;
        }
        let key =
            constraints.iter().map(|c| format!("{}\0{:?}\0{}", c.key, c.op, c.value)).collect::<Vec<_>>().join("\0\0");
        let nodes = &self.nodes;
        let matches = self
            .constraint_cache
            .entry(key)
            .or_insert_with(|| nodes.iter().map(|n| filter::node_matches(constraints, n.src)).collect());
        Some(Rc::clone(matches))
    }

    fn fits(node: &NodeState<'_>, reservations: Amounts) -> bool {
        // The resource filter is only enabled when something is reserved.
        reservations.is_zero()
            || (i128::from(reservations.nano_cpus) <= node.free_cpus
                && i128::from(reservations.memory_bytes) <= node.free_memory)
    }

    /// The filters whose outcome changes as tasks are placed: resources, host ports, max replicas.
    fn dynamic_ok(node: &NodeState<'_>, spec: &Spec<'_>) -> bool {
        Self::fits(node, spec.reservations)
            && !spec.ports.iter().any(|p| node.ports.contains(p))
            && (spec.max_replicas == 0 || u64::from(node.service_tasks(spec.service)) < spec.max_replicas)
    }

    /// The first filter (in pipeline order) that rejects node `i`, if any.
    fn first_failure(&self, i: usize, spec: &Spec<'_>, constraints_ok: bool) -> Option<Filter> {
        let node = &self.nodes[i];
        if !node.usable {
            Some(Filter::Ready)
        } else if !Self::fits(node, spec.reservations) {
            Some(Filter::Resources)
        } else if !constraints_ok {
            Some(Filter::Constraints)
        } else if spec.ports.iter().any(|p| node.ports.contains(p)) {
            Some(Filter::HostPort)
        } else if spec.max_replicas > 0 && u64::from(node.service_tasks(spec.service)) >= spec.max_replicas {
            Some(Filter::MaxReplicas)
        } else {
            None
        }
    }

    fn place(&mut self, task: &PendingTask, i: usize, spec: &Spec<'_>) {
        let node = &mut self.nodes[i];
        node.add_task(spec.service, spec.reservations, spec.ports.iter().copied());
        self.service_totals[spec.service as usize] += 1;
        self.solution.assignments.push((task.id.clone(), node.src.id.clone()));
    }

    fn schedule_preassigned(&mut self, task: &'a PendingTask, node_id: &str) {
        let Some(&i) = self.by_id.get(node_id) else {
            // Swarm silently leaves such a task pending; say why.
            self.solution.unschedulable.push((task.id.clone(), format!("node {node_id} not found")));
            self.solution.unschedulable_kinds.push(crate::Unschedulable::NodeNotFound);
            return;
        };
        let spec = self.spec(task);
        let constraints_ok = filter::node_matches(spec.constraints, self.nodes[i].src);
        match self.first_failure(i, &spec, constraints_ok) {
            None => self.place(task, i, &spec),
            Some(f) => {
                let mut counts = [0; 5];
                counts[f as usize] = 1;
                // Swarm's taskFitNode stores the bare pipeline explanation.
                self.solution.unschedulable.push((task.id.clone(), filter::explanation(&counts)));
                self.solution.unschedulable_kinds.push(filter::main_kind(&counts));
            }
        }
    }

    fn faulty(&self, spec: &Spec<'_>) -> Vec<u32> {
        let Some(list) = self.failures.get(&(spec.service_id, spec.spec_version)) else { return Vec::new() };
        let mut failures = vec![0u32; self.nodes.len()];
        for &(i, count) in list {
            failures[i] = failures[i].saturating_add(count);
        }
        for f in &mut failures {
            if *f < FAULTY_NODE_FAILURES {
                *f = 0;
            }
        }
        failures
    }

    fn schedule_group(&mut self, tasks: &[&'a PendingTask]) {
        let spec = self.spec(tasks[0]);
        let constraints = self.constraint_matches(spec.constraints);
        let spreads: Vec<Spread<'a>> = spec.preferences.iter().filter_map(|p| Spread::parse(&p.spread)).collect();

        let service_anywhere = self.service_totals[spec.service as usize] > 0;
        let mut root = Branch::default();
        for (i, node) in self.nodes.iter().enumerate() {
            let count = if service_anywhere { u64::from(node.service_tasks(spec.service)) } else { 0 };
            let mut branch = &mut root;
            for spread in &spreads {
                branch.tasks += count;
                branch = branch.children.entry(spread.value(node.src)).or_default();
            }
            branch.tasks += count;
            if node.usable && constraints.as_ref().is_none_or(|m| m[i]) && Self::dynamic_ok(node, &spec) {
                branch.candidates.push(i);
            }
        }

        let faulty = self.faulty(&spec);
        let mut group = Group { spec, tasks, next: 0, faulty };
        self.schedule_subtree(&mut root, tasks.len(), &mut group);

        if group.next < tasks.len() {
            // Nodes, but none a manager: what the control loop hands over, since shoal's managers
            // run no tasks. (With no node at all, that is the reason, as in Swarm.)
            let only_workers = !self.nodes.is_empty() && self.nodes.iter().all(|n| n.src.role != NodeRole::Manager);
            let (reason, kind) = if let Some(c) = filter::manager_only(group.spec.constraints).filter(|_| only_workers)
            {
                (filter::managers_run_no_tasks(c), crate::Unschedulable::ManagersRunNoTasks)
            } else if self.nodes.is_empty() {
                ("no suitable node".to_string(), crate::Unschedulable::NoNode)
            } else {
                let mut counts = [0usize; 5];
                for i in 0..self.nodes.len() {
                    let constraints_ok = constraints.as_ref().is_none_or(|m| m[i]);
                    if let Some(f) = self.first_failure(i, &group.spec, constraints_ok) {
                        counts[f as usize] += 1;
                    }
                }
                (filter::no_suitable_node(&counts), filter::main_kind(&counts))
            };
            for task in &tasks[group.next..] {
                self.solution.unschedulable.push((task.id.clone(), reason.clone()));
                self.solution.unschedulable_kinds.push(kind);
            }
        }
    }

    /// Places up to `n` tasks of the group below `branch`, evening out the service's total task
    /// count across its children (Swarm's `scheduleNTasksOnSubtree`). Returns how many it placed.
    fn schedule_subtree(&mut self, branch: &mut Branch<'a>, n: usize, group: &mut Group<'a, '_>) -> usize {
        if n == 0 {
            return 0;
        }
        let scheduled = if branch.children.is_empty() {
            self.schedule_leaf(branch, n, group)
        } else {
            let mut full = vec![false; branch.children.len()];
            let mut scheduled = 0usize;
            while scheduled < n {
                let usable = full.iter().filter(|f| !**f).count() as u64;
                if usable == 0 {
                    break;
                }
                let in_usable: u64 =
                    branch.children.values().zip(&full).filter(|(_, f)| !**f).map(|(c, _)| c.tasks).sum();
                let total = in_usable + (n - scheduled) as u64;
                let desired = total / usable;
                let mut remainder = total % usable;
                let mut progress = false;
                for (child, full) in branch.children.values_mut().zip(full.iter_mut()) {
                    if *full || scheduled == n {
                        continue;
                    }
                    if child.tasks < desired || (child.tasks == desired && remainder > 0) {
                        let share = desired - child.tasks + u64::from(remainder > 0);
                        let share = share.min((n - scheduled) as u64) as usize;
                        let placed = self.schedule_subtree(child, share, group);
                        if placed < share {
                            *full = true;
                        } else {
                            remainder = remainder.saturating_sub(1);
                        }
                        scheduled += placed;
                        progress = true;
                    }
                }
                if !progress {
                    break;
                }
            }
            scheduled
        };
        branch.tasks += scheduled as u64;
        scheduled
    }

    /// Places up to `n` tasks on the leaf's nodes, always on the best node still passing the
    /// filters, so service counts stay level (Swarm fills the best node until it is no better than
    /// the next, then goes round-robin).
    fn schedule_leaf(&mut self, leaf: &mut Branch<'a>, n: usize, group: &mut Group<'a, '_>) -> usize {
        let key = |nodes: &[NodeState<'_>], i: usize, group: &Group<'_, '_>| -> Key {
            let node = &nodes[i];
            (group.faulty(i), node.service_tasks(group.spec.service), node.active_tasks, i as u32)
        };
        let heap = leaf.heap.get_or_insert_with(|| {
            let mut keys: Vec<Key> = leaf.candidates.iter().map(|&i| key(&self.nodes, i, group)).collect();
            // The group can use at most one new node per task, always the best ones left, so (as
            // in Swarm) a leaf only needs its `group size` best nodes.
            let limit = group.tasks.len();
            if keys.len() > limit {
                keys.select_nth_unstable(limit - 1);
                keys.truncate(limit);
            }
            keys.into_iter().map(Reverse).collect()
        });
        let mut placed = 0;
        while placed < n {
            let Some(Reverse((_, _, _, i))) = heap.pop() else { break };
            let i = i as usize;
            let task = group.tasks[group.next];
            group.next += 1;
            self.place(task, i, &group.spec);
            placed += 1;
            if Self::dynamic_ok(&self.nodes[i], &group.spec) {
                heap.push(Reverse(key(&self.nodes, i, group)));
            }
        }
        placed
    }
}
