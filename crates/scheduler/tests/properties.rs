//! Properties of `solve` over random problems, checked against an independent oracle: every
//! decision is replayed in order and must have passed every filter at that moment.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::sample::Index;
use shoal_scheduler::{
    Amounts, Availability, Constraint, ConstraintOp, Failure, NodeRole, PendingTask, PlacedTask, PlacementPreference,
    PortProtocol, Problem, SchedNode, Solution, solve,
};

const HALF_CPU: u64 = 500_000_000;
const GB: u64 = 1_000_000_000;

const PORTS: [(PortProtocol, u16); 5] = [
    (PortProtocol::Tcp, 80),
    (PortProtocol::Udp, 80),
    (PortProtocol::Tcp, 443),
    (PortProtocol::Sctp, 80),
    (PortProtocol::Tcp, 0),
];

const CONSTRAINTS: [&str; 14] = [
    "node.labels.zone==z0",
    "node.labels.zone!=z1",
    "node.labels.zone==Z2",
    "node.role==manager",
    "node.role!=manager",
    "node.platform.os==linux",
    "engine.labels.disk==ssd",
    "engine.labels.disk!=SSD",
    "node.hostname!=h1",
    "node.id==n1",
    "node.id!=n0",
    "node.labels.rack!=r0",
    "node.labels.Zone!=z0",
    "node.bogus==x",
];

const SPREADS: [&str; 3] = ["node.labels.zone", "node.labels.rack", "engine.labels.disk"];

fn constraint(text: &str) -> Constraint {
    let (key, op, value) = match text.split_once("==") {
        Some((k, v)) => (k, ConstraintOp::Eq, v),
        None => {
            let (k, v) = text.split_once("!=").unwrap();
            (k, ConstraintOp::Ne, v)
        }
    };
    Constraint { key: key.to_string(), op, value: value.to_string() }
}

/// Oracle for the constraint pool above (written independently of the crate's matcher).
fn oracle_matches(c: &Constraint, n: &SchedNode) -> bool {
    let actual = match c.key.as_str() {
        "node.id" => n.id.clone(),
        "node.hostname" => n.hostname.clone(),
        "node.role" => if n.role == NodeRole::Manager { "manager" } else { "worker" }.to_string(),
        "node.platform.os" => n.platform_os.clone(),
        k => {
            if let Some(l) = k.strip_prefix("node.labels.") {
                n.labels.get(l).cloned().unwrap_or_default()
            } else if let Some(l) = k.strip_prefix("engine.labels.") {
                n.engine_labels.get(l).cloned().unwrap_or_default()
            } else {
                return false;
            }
        }
    };
    let equal = actual.to_lowercase() == c.value.to_lowercase();
    (c.op == ConstraintOp::Eq) == equal
}

fn ports_of(list: &[(PortProtocol, u16)]) -> BTreeSet<(PortProtocol, u16)> {
    list.iter().copied().filter(|&(_, p)| p != 0).collect()
}

#[derive(Clone, Default)]
struct NodeUse {
    cpus: u64,
    memory: u64,
    ports: BTreeSet<(PortProtocol, u16)>,
    services: BTreeMap<String, u64>,
}

impl NodeUse {
    fn add(&mut self, service: &str, reservations: Amounts, ports: &[(PortProtocol, u16)]) {
        self.cpus += reservations.nano_cpus;
        self.memory += reservations.memory_bytes;
        self.ports.extend(ports_of(ports));
        *self.services.entry(service.to_string()).or_insert(0) += 1;
    }
}

/// Why `t` may not go to `n` given its current use, if it may not.
fn oracle_rejects(t: &PendingTask, n: &SchedNode, u: &NodeUse) -> Option<&'static str> {
    if !n.ready || n.availability != Availability::Active {
        return Some("ready");
    }
    let r = t.reservations;
    if (r.nano_cpus > 0 || r.memory_bytes > 0)
        && (u.cpus + r.nano_cpus > n.capacity.nano_cpus || u.memory + r.memory_bytes > n.capacity.memory_bytes)
    {
        return Some("resources");
    }
    if !t.constraints.iter().all(|c| oracle_matches(c, n)) {
        return Some("constraints");
    }
    if !ports_of(&t.host_ports).is_disjoint(&u.ports) {
        return Some("port");
    }
    if t.max_replicas_per_node > 0 && u.services.get(&t.service_id).copied().unwrap_or(0) >= t.max_replicas_per_node {
        return Some("max replicas");
    }
    None
}

fn check(p: &Problem, s: &Solution) -> Result<(), TestCaseError> {
    // Every pending task exactly once.
    let mut seen: Vec<&str> =
        s.assignments.iter().map(|(t, _)| t.as_str()).chain(s.unschedulable.iter().map(|(t, _)| t.as_str())).collect();
    seen.sort_unstable();
    let mut want: Vec<&str> = p.pending.iter().map(|t| t.id.as_str()).collect();
    want.sort_unstable();
    prop_assert_eq!(seen, want);

    let nodes: BTreeMap<&str, &SchedNode> = p.nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    let tasks: BTreeMap<&str, &PendingTask> = p.pending.iter().map(|t| (t.id.as_str(), t)).collect();
    let mut usage: BTreeMap<&str, NodeUse> = nodes.keys().map(|&id| (id, NodeUse::default())).collect();
    for t in &p.placed {
        if let Some(u) = usage.get_mut(t.node_id.as_str()) {
            u.add(&t.service_id, t.reservations, &t.host_ports);
        }
    }

    // Replay: each decision passed every filter when it was made.
    for (tid, nid) in &s.assignments {
        let t = tasks[tid.as_str()];
        let n = nodes.get(nid.as_str()).copied();
        prop_assert!(n.is_some(), "{} assigned to unknown node {}", tid, nid);
        let n = n.unwrap();
        if let Some(pre) = &t.preassigned_node {
            prop_assert_eq!(pre, nid);
        }
        let u = usage.get_mut(nid.as_str()).unwrap();
        prop_assert_eq!(oracle_rejects(t, n, u), None, "{} on {}", tid, nid);
        u.add(&t.service_id, t.reservations, &t.host_ports);
    }
    for (id, u) in &usage {
        let n = nodes[id];
        prop_assert!(u.cpus <= n.capacity.nano_cpus && u.memory <= n.capacity.memory_bytes, "{} over capacity", id);
    }

    // Nothing was refused that some node could still take (filters only get stricter as tasks
    // are placed, so this holds in the final state too).
    for (tid, reason) in &s.unschedulable {
        let t = tasks[tid.as_str()];
        match &t.preassigned_node {
            Some(pre) => match nodes.get(pre.as_str()) {
                None => prop_assert_eq!(reason, &format!("node {pre} not found")),
                Some(n) => {
                    prop_assert!(oracle_rejects(t, n, &usage[pre.as_str()]).is_some(), "{} refused", tid);
                    let singles = [
                        "1 node not available for new tasks",
                        "insufficient resources on 1 node",
                        "scheduling constraints not satisfied on 1 node",
                        "host-mode port already in use on 1 node",
                        "max replicas per node limit exceed",
                    ];
                    prop_assert!(singles.contains(&reason.as_str()), "{}", reason);
                }
            },
            None => {
                for (id, n) in &nodes {
                    prop_assert!(oracle_rejects(t, n, &usage[id]).is_some(), "{} refused but fits {}", tid, id);
                }
                if nodes.is_empty() {
                    prop_assert_eq!(reason, "no suitable node");
                } else {
                    prop_assert!(reason.starts_with("no suitable node (") && reason.ends_with(')'), "{}", reason);
                }
            }
        }
    }
    Ok(())
}

/// (ready, availability, manager, zone, rack, ssd, linux, half-CPUs, GB, hostname).
type RawNode = (bool, u8, bool, Option<u8>, Option<u8>, Option<bool>, bool, u64, u64, u8);

fn arb_node() -> impl Strategy<Value = RawNode> {
    (
        prop::bool::weighted(0.85),
        prop_oneof![6 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
        any::<bool>(),
        prop::option::of(0u8..3),
        prop::option::of(0u8..2),
        prop::option::of(any::<bool>()),
        prop::bool::weighted(0.8),
        0u64..6,
        0u64..6,
        0u8..3,
    )
}

fn arb_ports() -> impl Strategy<Value = Vec<(PortProtocol, u16)>> {
    prop::collection::btree_set(0..PORTS.len(), 0..3).prop_map(|s| s.into_iter().map(|i| PORTS[i]).collect())
}

/// A task spec: ((service, version, reservation kind, cpus, memory), constraints, spreads,
/// max replicas, ports). Tasks pick one from a small pool so groups have several tasks.
#[allow(clippy::type_complexity)]
fn arb_spec() -> impl Strategy<Value = ((u8, u64, u8, u64, u64), Vec<usize>, Vec<usize>, u64, Vec<(PortProtocol, u16)>)>
{
    (
        (0u8..3, 1u64..3, 0u8..4, 1u64..4, 1u64..4),
        prop::collection::vec(0..CONSTRAINTS.len(), 0..3),
        prop::collection::vec(0..SPREADS.len(), 0..3),
        prop_oneof![2 => Just(0u64), 1 => 1u64..4],
        arb_ports(),
    )
}

prop_compose! {
    fn arb_problem()(
        raw_nodes in prop::collection::vec(arb_node(), 0..9),
        raw_placed in prop::collection::vec((any::<Index>(), 0u8..3, 0u64..3, 0u64..3, arb_ports()), 0..14),
        raw_specs in prop::collection::vec(arb_spec(), 1..5),
        raw_pending in prop::collection::vec(
            (any::<Index>(), prop::option::weighted(0.15, prop::option::weighted(0.85, any::<Index>()))),
            0..30,
        ),
        raw_failures in prop::collection::vec((any::<Index>(), 0u8..3, 1u64..3, 0u32..8), 0..5),
    ) -> Problem {
        let nodes: Vec<SchedNode> = raw_nodes
            .iter()
            .enumerate()
            .map(|(i, &(ready, avail, manager, zone, rack, ssd, linux, cpus, mem, host))| {
                let mut labels = BTreeMap::new();
                if let Some(z) = zone { labels.insert("zone".to_string(), if z == 2 { "z2".to_string() } else { format!("z{z}") }); }
                if let Some(r) = rack { labels.insert("rack".to_string(), format!("r{r}")); }
                let mut engine_labels = BTreeMap::new();
                if let Some(ssd) = ssd { engine_labels.insert("disk".to_string(), if ssd { "ssd" } else { "hdd" }.to_string()); }
                SchedNode {
                    id: format!("n{i}"),
                    hostname: format!("h{host}"),
                    role: if manager { NodeRole::Manager } else { NodeRole::Worker },
                    ready,
                    availability: [Availability::Active, Availability::Pause, Availability::Drain][avail as usize],
                    labels,
                    engine_labels,
                    platform_os: if linux { "linux" } else { "windows" }.to_string(),
                    platform_arch: "x86_64".to_string(),
                    addr: String::new(),
                    capacity: Amounts { nano_cpus: cpus * HALF_CPU, memory_bytes: mem * GB },
                }
            })
            .collect();

        // Placed tasks that fit their node and do not clash on ports.
        let mut placed = Vec::new();
        let mut usage: BTreeMap<usize, NodeUse> = BTreeMap::new();
        if !nodes.is_empty() {
            for (idx, service, cpus, mem, ports) in raw_placed {
                let i = idx.index(nodes.len());
                let u = usage.entry(i).or_default();
                let reservations = Amounts { nano_cpus: cpus * HALF_CPU, memory_bytes: mem * GB };
                if u.cpus + reservations.nano_cpus > nodes[i].capacity.nano_cpus
                    || u.memory + reservations.memory_bytes > nodes[i].capacity.memory_bytes
                    || !ports_of(&ports).is_disjoint(&u.ports)
                {
                    continue;
                }
                let service_id = format!("s{service}");
                u.add(&service_id, reservations, &ports);
                placed.push(PlacedTask { node_id: nodes[i].id.clone(), service_id, reservations, host_ports: ports });
            }
        }

        let pending = raw_pending
            .into_iter()
            .enumerate()
            .map(|(j, (spec, pre))| (j, raw_specs[spec.index(raw_specs.len())].clone(), pre))
            .map(|(j, ((service, version, res_kind, cpus, mem), cs, prefs, max, ports), pre)| PendingTask {
                id: format!("t{j}"),
                service_id: format!("s{service}"),
                spec_version: version,
                reservations: Amounts {
                    nano_cpus: if res_kind & 1 == 1 { cpus * HALF_CPU } else { 0 },
                    memory_bytes: if res_kind & 2 == 2 { mem * GB } else { 0 },
                },
                constraints: cs.iter().map(|&c| constraint(CONSTRAINTS[c])).collect(),
                preferences: prefs.iter().map(|&s| PlacementPreference { spread: SPREADS[s].to_string() }).collect(),
                max_replicas_per_node: max,
                host_ports: ports,
                preassigned_node: pre.map(|node| match node {
                    Some(idx) if !nodes.is_empty() => nodes[idx.index(nodes.len())].id.clone(),
                    _ => "ghost".to_string(),
                }),
            })
            .collect();

        let failures = if nodes.is_empty() {
            Vec::new()
        } else {
            raw_failures
                .into_iter()
                .map(|(idx, service, version, count)| Failure {
                    node_id: nodes[idx.index(nodes.len())].id.clone(),
                    service_id: format!("s{service}"),
                    spec_version: version,
                    count,
                })
                .collect()
        };
        Problem { nodes, placed, pending, failures }
    }
}

fn counts_per_node(p: &Problem, s: &Solution) -> BTreeMap<String, usize> {
    let mut counts: BTreeMap<String, usize> = p.nodes.iter().map(|n| (n.id.clone(), 0)).collect();
    for (_, n) in &s.assignments {
        *counts.get_mut(n).unwrap() += 1;
    }
    counts
}

fn plain_node(i: usize, zone: Option<usize>) -> SchedNode {
    SchedNode {
        id: format!("node-{i:03}"),
        hostname: format!("host-{i}"),
        ready: true,
        availability: Availability::Active,
        labels: zone.map(|z| ("zone".to_string(), format!("z{z}"))).into_iter().collect(),
        capacity: Amounts { nano_cpus: 4 * GB, memory_bytes: 16 * GB },
        ..Default::default()
    }
}

fn service_tasks(n: usize, preferences: Vec<PlacementPreference>) -> Vec<PendingTask> {
    (0..n)
        .map(|j| PendingTask {
            id: format!("task-{j}"),
            service_id: "svc".to_string(),
            spec_version: 1,
            preferences: preferences.clone(),
            ..Default::default()
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decisions_respect_every_filter(p in arb_problem()) {
        let s = solve(&p);
        check(&p, &s)?;
    }

    #[test]
    fn deterministic_and_independent_of_input_order(p in arb_problem()) {
        let s = solve(&p);
        prop_assert_eq!(&solve(&p), &s);
        let mut shuffled = p.clone();
        shuffled.nodes.reverse();
        shuffled.placed.reverse();
        shuffled.failures.reverse();
        prop_assert_eq!(&solve(&shuffled), &s);
    }

    #[test]
    fn one_service_is_balanced_on_identical_nodes(
        k in 1usize..25,
        tasks in 0usize..300,
        others in prop::collection::vec((any::<Index>(), 0u8..3), 0..40),
    ) {
        let nodes: Vec<SchedNode> = (0..k).map(|i| plain_node(i, None)).collect();
        // Tasks of other services change total counts, never the service's balance.
        let placed = others
            .iter()
            .map(|(idx, s)| PlacedTask {
                node_id: nodes[idx.index(k)].id.clone(),
                service_id: format!("other{s}"),
                ..Default::default()
            })
            .collect();
        let p = Problem { nodes, placed, pending: service_tasks(tasks, Vec::new()), failures: Vec::new() };
        let s = solve(&p);
        prop_assert!(s.unschedulable.is_empty());
        let counts = counts_per_node(&p, &s);
        let (min, max) = (counts.values().min().unwrap(), counts.values().max().unwrap());
        prop_assert!(max - min <= 1, "{:?}", counts);
    }

    #[test]
    fn spread_balances_branches_then_nodes(
        zones in prop::collection::vec(prop::option::of(0usize..4), 1..20),
        tasks in 0usize..200,
    ) {
        let nodes: Vec<SchedNode> = zones.iter().enumerate().map(|(i, &z)| plain_node(i, z)).collect();
        let prefs = vec![PlacementPreference { spread: "node.labels.zone".to_string() }];
        let p = Problem { nodes, placed: Vec::new(), pending: service_tasks(tasks, prefs), failures: Vec::new() };
        let s = solve(&p);
        prop_assert!(s.unschedulable.is_empty());
        let counts = counts_per_node(&p, &s);
        let mut branches: BTreeMap<Option<usize>, Vec<usize>> = BTreeMap::new();
        for (n, z) in p.nodes.iter().zip(&zones) {
            branches.entry(*z).or_default().push(counts[&n.id]);
        }
        let totals: Vec<usize> = branches.values().map(|c| c.iter().sum()).collect();
        prop_assert!(totals.iter().max().unwrap() - totals.iter().min().unwrap() <= 1, "{:?}", branches);
        for c in branches.values() {
            prop_assert!(c.iter().max().unwrap() - c.iter().min().unwrap() <= 1, "{:?}", branches);
        }
    }
}
