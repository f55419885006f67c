//! Scenarios from SwarmKit's `manager/scheduler/scheduler_test.go` (swarm-semantics.md §6.4),
//! replayed as successive `solve` calls where Swarm runs several ticks.

use std::collections::BTreeMap;

use super::*;

const GB: u64 = 1_000_000_000;

fn node(id: &str) -> SchedNode {
    SchedNode {
        id: id.to_string(),
        hostname: id.to_string(),
        ready: true,
        availability: Availability::Active,
        platform_os: "linux".to_string(),
        platform_arch: "x86_64".to_string(),
        capacity: Amounts { nano_cpus: 4 * GB, memory_bytes: 8 * GB },
        ..Default::default()
    }
}

fn labelled(id: &str, labels: &[(&str, &str)]) -> SchedNode {
    let mut n = node(id);
    n.labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    n
}

fn task(id: &str, service: &str) -> PendingTask {
    PendingTask { id: id.to_string(), service_id: service.to_string(), spec_version: 1, ..Default::default() }
}

fn tasks(prefix: &str, service: &str, range: std::ops::Range<usize>) -> Vec<PendingTask> {
    range.map(|i| task(&format!("{prefix}{i}"), service)).collect()
}

fn placed(node: &str, service: &str) -> PlacedTask {
    PlacedTask { node_id: node.to_string(), service_id: service.to_string(), ..Default::default() }
}

fn spread(descriptor: &str) -> PlacementPreference {
    PlacementPreference { spread: descriptor.to_string() }
}

fn constraint(text: &str) -> Constraint {
    Constraint::parse(text).unwrap()
}

/// Task count per node id among the assignments.
fn per_node(solution: &Solution) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (_, n) in &solution.assignments {
        *counts.entry(n.clone()).or_insert(0) += 1;
    }
    counts
}

/// Moves the solution's assignments into `problem.placed` and empties `pending` (the next tick).
fn commit(problem: &mut Problem, solution: &Solution) {
    let by_id: BTreeMap<&str, &PendingTask> = problem.pending.iter().map(|t| (t.id.as_str(), t)).collect();
    let mut new_placed = Vec::new();
    for (t, n) in &solution.assignments {
        let t = by_id[t.as_str()];
        new_placed.push(PlacedTask {
            node_id: n.clone(),
            service_id: t.service_id.clone(),
            reservations: t.reservations,
            host_ports: t.host_ports.clone(),
        });
    }
    problem.placed.extend(new_placed);
    problem.pending.clear();
}

fn service_counts(problem: &Problem, service: &str) -> BTreeMap<String, usize> {
    let mut counts: BTreeMap<String, usize> = problem.nodes.iter().map(|n| (n.id.clone(), 0)).collect();
    for p in problem.placed.iter().filter(|p| p.service_id == service) {
        *counts.get_mut(&p.node_id).unwrap() += 1;
    }
    counts
}

fn reasons(solution: &Solution) -> Vec<&str> {
    solution.unschedulable.iter().map(|(_, r)| r.as_str()).collect()
}

#[test]
fn scheduler_spreads_and_skips_unusable_nodes() {
    // TestScheduler.
    let mut down = node("id0");
    down.ready = false;
    let mut drained = node("id4");
    drained.availability = Availability::Drain;
    let mut paused = node("id5");
    paused.availability = Availability::Pause;
    let mut p = Problem {
        nodes: vec![down, node("id1"), node("id2"), node("id3"), drained, paused],
        placed: vec![placed("id1", "s1")],
        pending: tasks("t", "s1", 0..2),
        failures: vec![],
    };
    let s = solve(&p);
    assert_eq!(s.assignments, vec![("t0".into(), "id2".into()), ("t1".into(), "id3".into())]);
    assert!(s.unschedulable.is_empty());
    commit(&mut p, &s);

    // Deleting id1's task makes id1 the next choice.
    p.placed.retain(|t| t.node_id != "id1");
    p.pending = vec![task("t2", "s1")];
    let s = solve(&p);
    assert_eq!(s.assignments, vec![("t2".into(), "id1".into())]);
    commit(&mut p, &s);

    // Removing id1 from the node list: the next task goes elsewhere, never to unusable nodes.
    p.nodes.retain(|n| n.id != "id1");
    p.pending = tasks("u", "s1", 0..4);
    let s = solve(&p);
    for (_, n) in &s.assignments {
        assert!(n == "id2" || n == "id3", "{n}");
    }
    assert_eq!(s.assignments.len(), 4);
}

#[test]
fn ha_balances_service_then_total_counts() {
    // TestHA.
    let mut p = Problem {
        nodes: ["id1", "id2", "id3", "id4", "id5"].map(node).to_vec(),
        pending: tasks("t1id", "service1", 0..18),
        ..Default::default()
    };
    let s = solve(&p);
    assert_eq!(s.assignments.len(), 18);
    let mut counts: Vec<usize> = per_node(&s).values().copied().collect();
    counts.sort_unstable();
    assert_eq!(counts, vec![3, 3, 4, 4, 4]);
    commit(&mut p, &s);
    let s1 = service_counts(&p, "service1");
    assert_eq!(s1.values().copied().collect::<Vec<_>>(), vec![4, 4, 4, 3, 3]);

    // Two service2 tasks fill the two nodes with only 3 tasks (total-count tie-break).
    p.pending = tasks("t2id", "service2", 0..2);
    let s = solve(&p);
    let t2_nodes: Vec<String> = per_node(&s).into_keys().collect();
    assert_eq!(t2_nodes.len(), 2);
    for n in &t2_nodes {
        assert_eq!(s1[n], 3);
    }
    commit(&mut p, &s);

    // Scaling service1 by 3: the two service2 nodes plus one other, never twice the same node.
    p.pending = tasks("t1id", "service1", 18..21);
    let s = solve(&p);
    let new = per_node(&s);
    assert_eq!(new.len(), 3);
    assert!(t2_nodes.iter().all(|n| new.contains_key(n)));
    commit(&mut p, &s);
    let s1 = service_counts(&p, "service1");
    let mut counts: Vec<usize> = s1.values().copied().collect();
    counts.sort_unstable();
    assert_eq!(counts, vec![4, 4, 4, 4, 5]);

    // Another service2 task avoids the node with 5 service1 tasks and the service2 nodes.
    p.pending = vec![task("t2id4", "service2")];
    let s = solve(&p);
    let (_, n) = &s.assignments[0];
    assert_ne!(s1[n], 5);
    assert!(!t2_nodes.contains(n));
    commit(&mut p, &s);

    // After deleting everything on id1, 4 service1 tasks all land on id1 and one of two service2
    // tasks too, whichever group goes first.
    p.placed.retain(|t| t.node_id != "id1");
    for service1_first in [true, false] {
        let mut q = p.clone();
        let mut s1_tasks = tasks("t1id", "service1", 22..26);
        let mut s2_tasks = tasks("t2id", "service2", 5..7);
        q.pending = if service1_first {
            s1_tasks.append(&mut s2_tasks);
            s1_tasks
        } else {
            s2_tasks.append(&mut s1_tasks);
            s2_tasks
        };
        let s = solve(&q);
        let on_id1: Vec<&str> = s.assignments.iter().filter(|(_, n)| n == "id1").map(|(t, _)| t.as_str()).collect();
        assert_eq!(on_id1.iter().filter(|t| t.starts_with("t1")).count(), 4, "{service1_first}");
        assert_eq!(on_id1.iter().filter(|t| t.starts_with("t2")).count(), 1, "{service1_first}");
    }
}

#[test]
fn preferences_spread_over_label_values() {
    // TestPreferences: az1 {id1}, az2 {id2..id5}.
    let mut nodes = vec![labelled("id1", &[("az", "az1")])];
    nodes.extend(["id2", "id3", "id4", "id5"].map(|id| labelled(id, &[("az", "az2")])));
    let mut pending = tasks("t1id", "service1", 0..8);
    for t in &mut pending {
        t.preferences = vec![spread("node.labels.az")];
    }
    let s = solve(&Problem { nodes, pending, ..Default::default() });
    let counts = per_node(&s);
    assert_eq!(counts.len(), 5);
    assert_eq!(counts["id1"], 4);
    for id in ["id2", "id3", "id4", "id5"] {
        assert_eq!(counts[id], 1, "{id}");
    }
}

#[test]
fn multiple_preferences_with_full_branches() {
    // TestMultiplePreferences, with memory standing in for the "apple" generic resource: id0 can
    // take no task, id1 at most 5, the 7 others go to az2 split 4/3 between its racks.
    let mut nodes = Vec::new();
    for (id, az, rack, memory) in [
        ("id0", "az1", "rack1", GB / 10),
        ("id1", "az1", "rack1", GB),
        ("id2", "az2", "rack1", GB),
        ("id3", "az2", "rack1", GB),
        ("id4", "az2", "rack1", GB),
        ("id5", "az2", "rack2", GB),
        ("id6", "az2", "rack2", GB),
    ] {
        let mut n = labelled(id, &[("az", az), ("rack", rack)]);
        n.capacity = Amounts { nano_cpus: GB, memory_bytes: memory };
        nodes.push(n);
    }
    let mut pending = tasks("t1id", "service1", 0..12);
    for t in &mut pending {
        t.preferences = vec![spread("node.labels.az"), spread("node.labels.rack")];
        t.reservations = Amounts { nano_cpus: 0, memory_bytes: GB / 5 };
    }
    let s = solve(&Problem { nodes, pending, ..Default::default() });
    assert!(s.unschedulable.is_empty());
    let counts = per_node(&s);
    assert!(!counts.contains_key("id0"));
    assert_eq!(counts["id1"], 5);
    let rack1 = counts["id2"] + counts["id3"] + counts["id4"];
    let rack2 = counts["id5"] + counts["id6"];
    assert!((rack1, rack2) == (4, 3) || (rack1, rack2) == (3, 4));
    for id in ["id2", "id3", "id4", "id5", "id6"] {
        assert!((1..=2).contains(&counts[id]), "{id}");
    }
}

#[test]
fn multiple_preferences_scale_up_terminates() {
    // TestMultiplePreferencesScaleUp (an infinite loop in older Swarm).
    let nodes = vec![
        labelled("id11", &[("az", "dc1"), ("rack", "r1")]),
        labelled("id12", &[("az", "dc1"), ("rack", "r2")]),
        labelled("id21", &[("az", "dc2"), ("rack", "r1")]),
    ];
    let mut placed_tasks = Vec::new();
    for (n, count) in [("id11", 3), ("id12", 1), ("id21", 3)] {
        placed_tasks.extend((0..count).map(|_| placed(n, "service1")));
    }
    let mut pending = tasks("t1id", "service1", 0..2);
    for t in &mut pending {
        t.preferences = vec![spread("node.labels.az"), spread("node.labels.rack")];
    }
    let s = solve(&Problem { nodes, placed: placed_tasks, pending, failures: vec![] });
    let counts = per_node(&s);
    assert_eq!(s.assignments.len(), 2);
    assert_eq!(counts.get("id12").unwrap_or(&0) + counts.get("id21").unwrap_or(&0), 2);
}

#[test]
fn spread_equalises_totals_and_unlabelled_nodes_form_a_branch() {
    // Existing tasks count: az1 already has 4, so 4 new tasks all go to az2.
    let nodes = vec![labelled("a", &[("az", "az1")]), labelled("b", &[("az", "az2")])];
    let mut pending = tasks("t", "s", 0..4);
    for t in &mut pending {
        t.preferences = vec![spread("node.labels.az")];
    }
    let placed_tasks = (0..4).map(|_| placed("a", "s")).collect();
    let s = solve(&Problem { nodes, placed: placed_tasks, pending: pending.clone(), failures: vec![] });
    assert_eq!(per_node(&s), BTreeMap::from([("b".to_string(), 4)]));

    // Nodes without the label share the "" branch.
    let nodes = vec![labelled("a", &[("zone", "x")]), labelled("b", &[("zone", "y")]), node("c"), node("d")];
    let mut pending = tasks("t", "s", 0..6);
    for t in &mut pending {
        t.preferences = vec![spread("node.labels.zone")];
    }
    let s = solve(&Problem { nodes, pending, ..Default::default() });
    let counts = per_node(&s);
    assert_eq!(counts["a"], 2);
    assert_eq!(counts["b"], 2);
    assert_eq!(counts["c"] + counts["d"], 2);

    // Engine labels work the same way; unsupported descriptors add no level.
    let mut e1 = node("e1");
    e1.engine_labels.insert("disk".into(), "ssd".into());
    let e2 = node("e2");
    let e3 = node("e3");
    let mut pending = tasks("t", "s", 0..4);
    for t in &mut pending {
        t.preferences = vec![spread("engine.labels.disk"), spread("node.hostname")];
    }
    let s = solve(&Problem { nodes: vec![e1, e2, e3], pending, ..Default::default() });
    let counts = per_node(&s);
    assert_eq!(counts["e1"], 2);
    assert_eq!(counts["e2"] + counts["e3"], 2);
}

#[test]
fn no_ready_nodes() {
    // TestSchedulerNoReadyNodes.
    let mut p = Problem { pending: vec![task("id1", "serviceID1")], ..Default::default() };
    let s = solve(&p);
    assert_eq!(s.unschedulable, vec![("id1".to_string(), "no suitable node".to_string())]);

    let mut down = node("down");
    down.ready = false;
    p.nodes.push(down);
    assert_eq!(reasons(&solve(&p)), vec!["no suitable node (1 node not available for new tasks)"]);

    p.nodes.push(node("newnode"));
    let s = solve(&p);
    assert_eq!(s.assignments, vec![("id1".into(), "newnode".into())]);
    assert!(s.unschedulable.is_empty());
}

#[test]
fn resource_constraint_message() {
    // TestSchedulerResourceConstraint.
    let mut under = node("underprovisioned");
    under.capacity = Amounts { nano_cpus: GB, memory_bytes: GB };
    let mut nonready1 = node("nonready1");
    nonready1.ready = false;
    nonready1.capacity = Amounts { nano_cpus: 2 * GB, memory_bytes: 2 * GB };
    let mut nonready2 = nonready1.clone();
    nonready2.id = "nonready2".into();
    let mut t = task("id1", "serviceID1");
    t.reservations = Amounts { nano_cpus: 0, memory_bytes: 2 * GB };
    let mut p = Problem { nodes: vec![under, nonready1, nonready2], pending: vec![t], ..Default::default() };
    assert_eq!(
        reasons(&solve(&p)),
        vec!["no suitable node (2 nodes not available for new tasks; insufficient resources on 1 node)"]
    );

    let mut big = node("bignode");
    big.capacity = Amounts { nano_cpus: 4 * GB, memory_bytes: 4 * GB };
    p.nodes.push(big);
    let s = solve(&p);
    assert_eq!(s.assignments, vec![("id1".into(), "bignode".into())]);

    // Reservations of placed tasks (and of earlier decisions) count: two 2 GB tasks fit on
    // bignode, the third does not.
    p.pending = ["a", "b", "c"]
        .map(|id| PendingTask { reservations: Amounts { nano_cpus: 0, memory_bytes: 2 * GB }, ..task(id, "s") })
        .to_vec();
    let s = solve(&p);
    assert_eq!(s.assignments.len(), 2);
    assert_eq!(
        reasons(&s),
        // Equal counts keep filter order, as in Swarm.
        vec!["no suitable node (2 nodes not available for new tasks; insufficient resources on 2 nodes)"]
    );
    p.placed.push(PlacedTask {
        reservations: Amounts { nano_cpus: 0, memory_bytes: 3 * GB },
        ..placed("bignode", "other")
    });
    let s = solve(&p);
    assert!(s.assignments.is_empty());
    assert_eq!(s.unschedulable.len(), 3);
    // Ties keep filter order: not ready comes before resources.
    assert_eq!(s.unschedulable_kinds, vec![crate::Unschedulable::NotReady; 3]);
}

#[test]
fn faulty_node_sorted_last() {
    // TestSchedulerFaultyNode: id1 already runs a service1 task, so new tasks prefer id2 until id2
    // has 5 recent failures of service1 at this spec version.
    let p = |failures: u32, spec_version: u64| Problem {
        nodes: vec![node("id1"), node("id2")],
        placed: vec![placed("id1", "service1"), placed("id1", "service2")],
        pending: vec![PendingTask { spec_version, ..task("t", "service1") }],
        failures: vec![Failure {
            node_id: "id2".into(),
            service_id: "service1".into(),
            spec_version: 1,
            count: failures,
        }],
    };
    for (failures, spec_version, want) in [(0, 1, "id2"), (4, 1, "id2"), (5, 1, "id1"), (9, 1, "id1"), (5, 2, "id2")] {
        let s = solve(&p(failures, spec_version));
        assert_eq!(s.assignments, vec![("t".into(), want.into())], "{failures} failures, v{spec_version}");
    }

    // Failures of other services do not count; entries for one node add up.
    let mut q = p(3, 1);
    q.failures.push(Failure { node_id: "id2".into(), service_id: "service2".into(), spec_version: 1, count: 9 });
    assert_eq!(solve(&q).assignments[0].1, "id2");
    q.failures.push(Failure { node_id: "id2".into(), service_id: "service1".into(), spec_version: 1, count: 2 });
    assert_eq!(solve(&q).assignments[0].1, "id1");

    // When both are faulty, fewer failures wins even against more service tasks.
    let mut q = p(6, 1);
    q.failures.push(Failure { node_id: "id1".into(), service_id: "service1".into(), spec_version: 1, count: 5 });
    assert_eq!(solve(&q).assignments[0].1, "id1");
}

#[test]
fn host_port_message() {
    // TestSchedulerHostPort.
    let nodes = vec![node("nodeid1"), node("nodeid2")];
    let with_ports = |id: &str, ports: &[(PortProtocol, u16)]| PendingTask {
        host_ports: ports.to_vec(),
        spec_version: 0,
        ..task(id, "serviceID1")
    };
    let mut p = Problem {
        nodes,
        pending: vec![with_ports("id1", &[(PortProtocol::Tcp, 58)]), with_ports("id2", &[(PortProtocol::Udp, 58)])],
        ..Default::default()
    };
    let s = solve(&p);
    assert_eq!(s.assignments.len(), 2);
    assert_ne!(s.assignments[0].1, s.assignments[1].1);
    commit(&mut p, &s);
    p.pending = vec![with_ports("id3", &[(PortProtocol::Udp, 58), (PortProtocol::Tcp, 58)])];
    assert_eq!(reasons(&solve(&p)), vec!["no suitable node (host-mode port already in use on 2 nodes)"]);

    // Within one solve: three tasks publishing the same port on two nodes.
    let mut q = Problem { nodes: p.nodes.clone(), ..Default::default() };
    q.pending = ["a", "b", "c"].map(|id| with_ports(id, &[(PortProtocol::Tcp, 80)])).to_vec();
    let s = solve(&q);
    assert_eq!(s.assignments.len(), 2);
    assert_ne!(s.assignments[0].1, s.assignments[1].1);
    assert_eq!(
        s.unschedulable,
        vec![("c".into(), "no suitable node (host-mode port already in use on 2 nodes)".into())]
    );

    // Port 0 is not a published port.
    q.pending = ["a", "b", "c"].map(|id| with_ports(id, &[(PortProtocol::Tcp, 0)])).to_vec();
    assert_eq!(solve(&q).assignments.len(), 3);
}

#[test]
fn max_replicas_message() {
    // TestSchedulerMaxReplicas.
    let limited = |id: &str| PendingTask { max_replicas_per_node: 1, ..task(id, "serviceID1") };
    let mut p = Problem {
        nodes: vec![node("nodeid1"), node("nodeid2")],
        pending: vec![limited("id1"), limited("id2")],
        ..Default::default()
    };
    let s = solve(&p);
    assert_eq!(s.assignments.len(), 2);
    assert_ne!(s.assignments[0].1, s.assignments[1].1);
    commit(&mut p, &s);
    p.pending = vec![limited("id3")];
    assert_eq!(reasons(&solve(&p)), vec!["no suitable node (max replicas per node limit exceed)"]);
    p.nodes.push(node("nodeid3"));
    assert_eq!(solve(&p).assignments, vec![("id3".into(), "nodeid3".into())]);

    // Within one solve, with a node that is not ready: counts sort first.
    let mut down = node("nodeid0");
    down.ready = false;
    let q = Problem {
        nodes: vec![down, node("nodeid1"), node("nodeid2")],
        pending: vec![limited("a"), limited("b"), limited("c")],
        ..Default::default()
    };
    let s = solve(&q);
    assert_eq!(s.assignments.len(), 2);
    assert_eq!(
        reasons(&s),
        vec!["no suitable node (max replicas per node limit exceed; 1 node not available for new tasks)"]
    );
}

#[test]
fn constraints_message_and_matching() {
    let mut manager = labelled("m1", &[("zone", "east")]);
    manager.role = NodeRole::Manager;
    let nodes = vec![manager, labelled("w1", &[("zone", "east")]), labelled("w2", &[("zone", "west")])];
    let with = |id: &str, cs: &[&str]| PendingTask {
        constraints: cs.iter().map(|c| constraint(c)).collect(),
        ..task(id, "s")
    };
    let p = Problem {
        nodes: nodes.clone(),
        pending: vec![
            with("east", &["node.labels.zone==EAST", "node.role!=manager"]),
            with("nowhere", &["node.labels.zone==north"]),
            with("manager", &["node.role==manager"]),
            with("missing", &["node.labels.rack!=r1"]),
        ],
        ..Default::default()
    };
    let s = solve(&p);
    assert_eq!(
        s.assignments,
        vec![("east".into(), "w1".into()), ("manager".into(), "m1".into()), ("missing".into(), "w2".into())]
    );
    assert_eq!(
        s.unschedulable,
        vec![("nowhere".into(), "no suitable node (scheduling constraints not satisfied on 3 nodes)".into())]
    );
}

#[test]
fn preassigned_tasks_only_check_their_node() {
    let mut paused = node("paused");
    paused.availability = Availability::Pause;
    let mut small = node("small");
    small.capacity = Amounts { nano_cpus: GB, memory_bytes: GB };
    let global = |id: &str, node: &str| PendingTask {
        preassigned_node: Some(node.to_string()),
        reservations: Amounts { nano_cpus: GB / 2, memory_bytes: 2 * GB },
        host_ports: vec![(PortProtocol::Tcp, 9100)],
        ..task(id, "global")
    };
    let p = Problem {
        nodes: vec![node("a"), node("b"), paused, small],
        pending: vec![
            task("replica", "web"),
            PendingTask {
                host_ports: vec![(PortProtocol::Tcp, 9100)],
                constraints: vec![constraint("node.hostname!=small")],
                ..task("replica2", "web2")
            },
            global("g-a", "a"),
            global("g-paused", "paused"),
            global("g-small", "small"),
            global("g-ghost", "ghost"),
            PendingTask { constraints: vec![constraint("node.labels.x==y")], ..global("g-b", "b") },
        ],
        ..Default::default()
    };
    let s = solve(&p);
    // Preassigned tasks are handled first, so the replicas see g-a's task and port on "a":
    // replica2 would tie between a and b on task counts, but its port is taken on a.
    assert_eq!(
        s.assignments,
        vec![("g-a".into(), "a".into()), ("replica".into(), "b".into()), ("replica2".into(), "b".into())]
    );
    assert_eq!(
        s.unschedulable,
        vec![
            ("g-paused".into(), "1 node not available for new tasks".into()),
            ("g-small".into(), "insufficient resources on 1 node".into()),
            ("g-ghost".into(), "node ghost not found".into()),
            ("g-b".into(), "scheduling constraints not satisfied on 1 node".into()),
        ]
    );
}

#[test]
fn mixed_specs_in_one_group_and_input_order_independence() {
    let mut a = task("a", "s");
    a.max_replicas_per_node = 1;
    let b = task("b", "s");
    let c = PendingTask { max_replicas_per_node: 1, ..task("c", "s") };
    let p = Problem {
        nodes: vec![node("n2"), node("n1"), node("n3"), node("n1")],
        placed: vec![placed("n1", "s"), placed("n3", "x"), placed("ghost", "s")],
        pending: vec![a, b, c, task("d", "t")],
        failures: vec![],
    };
    let s = solve(&p);
    assert_eq!(solve(&p), s);
    // a and c share a spec (max 1) and avoid n1; b is its own group.
    assert_eq!(
        s.assignments,
        vec![
            ("a".into(), "n2".into()),
            ("c".into(), "n3".into()),
            ("b".into(), "n1".into()),
            ("d".into(), "n2".into()),
        ]
    );
    let mut reversed = p.clone();
    reversed.nodes.reverse();
    reversed.placed.reverse();
    assert_eq!(solve(&reversed), s);
}

#[test]
fn synthetic_problem_is_fully_placed_and_balanced() {
    let p = synthetic_problem(1000, 10_000, false);
    assert_eq!(p, synthetic_problem(1000, 10_000, false));
    let s = solve(&p);
    assert_eq!(s.assignments.len(), 10_000);
    assert!(s.unschedulable.is_empty());
    let counts = per_node(&s);
    assert_eq!(counts.len(), 1000);
    let (min, max) = (counts.values().min().unwrap(), counts.values().max().unwrap());
    assert!(max - min <= 1, "{min}..{max}");

    let p = synthetic_problem(300, 3000, true);
    let s = solve(&p);
    assert_eq!(s.assignments.len(), 3000);
    let counts = per_node(&s);
    assert_eq!(counts.len(), 100);
    let gold: Vec<&str> = p.nodes.iter().filter(|n| n.labels["tier"] == "gold").map(|n| n.id.as_str()).collect();
    assert!(counts.keys().all(|n| gold.contains(&n.as_str())));
    assert!(counts.values().all(|&c| c == 30));
}

#[test]
fn a_manager_only_constraint_says_that_managers_run_no_tasks() {
    // The nodes the control loop hands over are agents' worker nodes: managers run no tasks.
    let with = |id: &str, cs: &[&str]| PendingTask {
        constraints: cs.iter().map(|c| constraint(c)).collect(),
        ..task(id, "s")
    };
    let p = Problem {
        nodes: vec![node("w1"), node("w2")],
        pending: vec![
            with("manager", &["node.role==manager"]),
            with("not-worker", &["node.labels.zone==east", "NODE.ROLE!=worker"]),
            with("worker", &["node.role==worker"]),
            with("nowhere", &["node.labels.zone==north", "node.role!=manager"]),
        ],
        ..Default::default()
    };
    let s = solve(&p);
    assert_eq!(s.assignments.len(), 1, "{s:?}");
    assert_eq!(s.assignments[0].0, "worker");
    let hint =
        "matches no node; run shoal-agent on a manager's machine and constrain on its node.hostname or a node label)";
    assert_eq!(
        s.unschedulable,
        vec![
            ("manager".into(), format!("no suitable node (managers run no tasks, so node.role==manager {hint}")),
            ("not-worker".into(), format!("no suitable node (managers run no tasks, so NODE.ROLE!=worker {hint}")),
            ("nowhere".into(), "no suitable node (scheduling constraints not satisfied on 2 nodes)".into()),
        ]
    );
    // With no node at all, that is the reason (as in Swarm), whatever the constraints.
    let empty = Problem { nodes: vec![], ..p.clone() };
    assert_eq!(reasons(&solve(&empty))[0], "no suitable node");
    // A problem that does hold a manager (the scheduler itself is general) places the task there.
    let mut manager = node("m1");
    manager.role = NodeRole::Manager;
    let with_manager = Problem {
        nodes: vec![manager, node("w1")],
        pending: vec![with("m", &["node.role==manager"])],
        ..Default::default()
    };
    assert_eq!(solve(&with_manager).assignments, vec![("m".to_string(), "m1".to_string())]);
}
