//! A deterministic problem generator for benchmarks and scale tests.

use std::collections::BTreeMap;

use crate::{Amounts, Availability, Constraint, ConstraintOp, NodeRole, PendingTask, PlacedTask, Problem, SchedNode};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

/// `nodes` ready, active, identical nodes (8 CPUs, 32 GiB; the first three are managers; labels
/// `zone=zone-<i%3>`, `tier=gold` on every third node starting with the first, `silver` elsewhere)
/// carrying `i % 3` placed tasks of a `background` service, and `tasks` pending tasks of one
/// service `web` (spec version 1, reserving 0.05 CPU and 32 MiB each). With `constrained_third`
/// the tasks require `node.labels.tier==gold`, which matches one third of the nodes (rounded up).
pub fn synthetic_problem(nodes: usize, tasks: usize, constrained_third: bool) -> Problem {
    let nodes_list: Vec<SchedNode> = (0..nodes)
        .map(|i| SchedNode {
            id: format!("node-{i:06}"),
            hostname: format!("host-{i:06}"),
            role: if i < 3 { NodeRole::Manager } else { NodeRole::Worker },
            ready: true,
            availability: Availability::Active,
            labels: BTreeMap::from([
                ("zone".to_string(), format!("zone-{}", i % 3)),
                ("tier".to_string(), if i % 3 == 0 { "gold" } else { "silver" }.to_string()),
            ]),
            engine_labels: BTreeMap::from([("storage".to_string(), "ssd".to_string())]),
            platform_os: "linux".to_string(),
            platform_arch: "x86_64".to_string(),
            addr: format!("10.{}.{}.{}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff),
            capacity: Amounts { nano_cpus: 8_000_000_000, memory_bytes: 32 * GIB },
        })
        .collect();
    let placed = nodes_list
        .iter()
        .enumerate()
        .flat_map(|(i, n)| {
            (0..i % 3).map(|_| PlacedTask {
                node_id: n.id.clone(),
                service_id: "background".to_string(),
                reservations: Amounts { nano_cpus: 500_000_000, memory_bytes: 256 * MIB },
                host_ports: Vec::new(),
            })
        })
        .collect();
    let constraints = if constrained_third {
        vec![Constraint { key: "node.labels.tier".to_string(), op: ConstraintOp::Eq, value: "gold".to_string() }]
    } else {
        Vec::new()
    };
    let pending = (0..tasks)
        .map(|j| PendingTask {
            id: format!("task-{j:07}"),
            service_id: "web".to_string(),
            spec_version: 1,
            reservations: Amounts { nano_cpus: 50_000_000, memory_bytes: 32 * MIB },
            constraints: constraints.clone(),
            preferences: Vec::new(),
            max_replicas_per_node: 0,
            host_ports: Vec::new(),
            preassigned_node: None,
        })
        .collect();
    Problem { nodes: nodes_list, placed, pending, failures: Vec::new() }
}
