//! The filter pipeline's vocabulary: which filter rejected a node, how Swarm explains it, and how
//! constraints and spread descriptors read a node.

use std::net::{IpAddr, SocketAddr};

use crate::{Constraint, ConstraintOp, NodeRole, SchedNode};

/// Filters in pipeline order (SwarmKit `filter.go`); the first failing one stops for a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Filter {
    Ready,
    Resources,
    Constraints,
    HostPort,
    MaxReplicas,
}

impl Filter {
    pub(crate) const ALL: [Filter; 5] =
        [Filter::Ready, Filter::Resources, Filter::Constraints, Filter::HostPort, Filter::MaxReplicas];

    /// Swarm's `Explain(nodes)` text.
    pub(crate) fn explain(self, nodes: usize) -> String {
        let what = match self {
            Filter::Ready => return plural(nodes, "", " not available for new tasks"),
            Filter::Resources => "insufficient resources on ",
            Filter::Constraints => "scheduling constraints not satisfied on ",
            Filter::HostPort => "host-mode port already in use on ",
            Filter::MaxReplicas => return "max replicas per node limit exceed".to_string(),
        };
        plural(nodes, what, "")
    }
}

fn plural(nodes: usize, before: &str, after: &str) -> String {
    if nodes == 1 { format!("{before}1 node{after}") } else { format!("{before}{nodes} nodes{after}") }
}

/// The filter that turned away the most nodes (ties in filter order), as the kind of reason.
pub(crate) fn main_kind(counts: &[usize; 5]) -> crate::Unschedulable {
    let most = Filter::ALL
        .iter()
        .copied()
        .filter(|f| counts[*f as usize] > 0)
        .max_by(|a, b| counts[*a as usize].cmp(&counts[*b as usize]).then(b.cmp(a)));
    match most {
        Some(Filter::Ready) => crate::Unschedulable::NotReady,
        Some(Filter::Resources) => crate::Unschedulable::Resources,
        Some(Filter::Constraints) => crate::Unschedulable::Constraints,
        Some(Filter::HostPort) => crate::Unschedulable::HostPort,
        Some(Filter::MaxReplicas) => crate::Unschedulable::MaxReplicas,
        None => crate::Unschedulable::NoNode,
    }
}

/// `"no suitable node (a; b)"` from per-filter node counts, most nodes first, ties in filter order
/// (Go's sort of this 8-entry slice is an insertion sort, so Swarm keeps filter order too).
pub(crate) fn no_suitable_node(counts: &[usize; 5]) -> String {
    let explanation = explanation(counts);
    if explanation.is_empty() { "no suitable node".to_string() } else { format!("no suitable node ({explanation})") }
}

/// A constraint on `node.role` that only a manager satisfies (`node.role==manager`,
/// `node.role!=worker`), if `constraints` hold one.
pub(crate) fn manager_only(constraints: &[Constraint]) -> Option<&Constraint> {
    let as_role = |role| SchedNode { role, ..SchedNode::default() };
    let (manager, worker) = (as_role(NodeRole::Manager), as_role(NodeRole::Worker));
    constraints
        .iter()
        .filter(|c| c.key.eq_ignore_ascii_case("node.role"))
        .find(|c| matches_one(c, &manager) && !matches_one(c, &worker))
}

/// Why a task whose constraints only a manager satisfies waits when no manager is among the nodes:
/// shoal's managers run no tasks, which Swarm users do not expect, so the reason says so and what
/// to do instead (an agent on that machine registers as a worker, so the constraint must change).
pub(crate) fn managers_run_no_tasks(constraint: &Constraint) -> String {
    format!(
        "no suitable node (managers run no tasks, so {constraint} matches no node; run shoal-agent on a manager's machine and constrain on its node.hostname or a node label)"
    )
}

/// The pipeline's explanation alone (what Swarm reports for a preassigned task).
pub(crate) fn explanation(counts: &[usize; 5]) -> String {
    let mut entries: Vec<(usize, Filter)> =
        Filter::ALL.iter().map(|&f| (counts[f as usize], f)).filter(|&(n, _)| n > 0).collect();
    entries.sort_by_key(|&(n, _)| std::cmp::Reverse(n)); // stable
    entries.iter().map(|&(n, f)| f.explain(n)).collect::<Vec<_>>().join("; ")
}

const NODE_LABELS: &str = "node.labels.";
const ENGINE_LABELS: &str = "engine.labels.";

/// `text` minus a case-insensitive `prefix`, if what is left is not empty.
fn strip_prefix_ci<'t>(text: &'t str, prefix: &str) -> Option<&'t str> {
    let head = text.get(..prefix.len())?;
    let rest = &text[prefix.len()..];
    (head.eq_ignore_ascii_case(prefix) && !rest.is_empty()).then_some(rest)
}

/// Go's `strings.EqualFold`, near enough: ASCII fast path, else compares lowercased chars.
fn equal_fold(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        return a.eq_ignore_ascii_case(b);
    }
    a.chars().flat_map(char::to_lowercase).eq(b.chars().flat_map(char::to_lowercase))
}

/// Whether `node` satisfies every constraint (SwarmKit `constraint.NodeMatches`): keys are
/// case-insensitive, label names case-sensitive, values compared case-insensitively, a missing
/// attribute reads as "" and an unknown key matches no node.
pub(crate) fn node_matches(constraints: &[Constraint], node: &SchedNode) -> bool {
    constraints.iter().all(|c| matches_one(c, node))
}

fn matches_one(c: &Constraint, node: &SchedNode) -> bool {
    let key = c.key.as_str();
    let actual: &str = if key.eq_ignore_ascii_case("node.id") {
        &node.id
    } else if key.eq_ignore_ascii_case("node.hostname") {
        &node.hostname
    } else if key.eq_ignore_ascii_case("node.role") {
        match node.role {
            NodeRole::Manager => "manager",
            NodeRole::Worker => "worker",
        }
    } else if key.eq_ignore_ascii_case("node.platform.os") {
        &node.platform_os
    } else if key.eq_ignore_ascii_case("node.platform.arch") {
        &node.platform_arch
    } else if key.eq_ignore_ascii_case("node.ip") {
        return ip_matches(c, &node.addr);
    } else if let Some(label) = strip_prefix_ci(key, NODE_LABELS) {
        node.labels.get(label).map_or("", String::as_str)
    } else if let Some(label) = strip_prefix_ci(key, ENGINE_LABELS) {
        node.engine_labels.get(label).map_or("", String::as_str)
    } else {
        return false;
    };
    let equal = equal_fold(&c.value, actual);
    match c.op {
        ConstraintOp::Eq => equal,
        ConstraintOp::Ne => !equal,
    }
}

/// `node.ip==1.2.3.4` or `node.ip!=10.0.0.0/8`; a malformed value matches nothing.
fn ip_matches(c: &Constraint, addr: &str) -> bool {
    let node_ip = addr.parse::<IpAddr>().ok().or_else(|| addr.parse::<SocketAddr>().ok().map(|s| s.ip()));
    let value = c.value.trim();
    let inside = if let Ok(ip) = value.parse::<IpAddr>() {
        node_ip.is_some_and(|n| same_ip(n, ip))
    } else if let Some((net, bits)) = parse_cidr(value) {
        node_ip.is_some_and(|n| cidr_contains(net, bits, n))
    } else {
        return false;
    };
    match c.op {
        ConstraintOp::Eq => inside,
        ConstraintOp::Ne => !inside,
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    canonical(a) == canonical(b)
}

fn parse_cidr(text: &str) -> Option<(IpAddr, u32)> {
    let (ip, bits) = text.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    let bits: u32 = bits.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (bits <= max).then_some((ip, bits))
}

fn cidr_contains(net: IpAddr, bits: u32, ip: IpAddr) -> bool {
    let (net, ip) = match (net, canonical(ip)) {
        (IpAddr::V4(n), IpAddr::V4(i)) => (u128::from(u32::from(n)) << 96, u128::from(u32::from(i)) << 96),
        (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i)),
        _ => return false,
    };
    let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
    net & mask == ip & mask
}

/// Where a `spread=` descriptor reads its value.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Spread<'a> {
    NodeLabel(&'a str),
    EngineLabel(&'a str),
}

impl<'a> Spread<'a> {
    /// `node.labels.X` / `engine.labels.X` (prefix case-insensitive); other descriptors add no
    /// level to the tree, as in Swarm.
    pub(crate) fn parse(descriptor: &'a str) -> Option<Self> {
        let descriptor = descriptor.trim();
        if let Some(label) = strip_prefix_ci(descriptor, NODE_LABELS) {
            Some(Spread::NodeLabel(label))
        } else {
            strip_prefix_ci(descriptor, ENGINE_LABELS).map(Spread::EngineLabel)
        }
    }

    /// The node's branch at this level; "" when it lacks the label.
    pub(crate) fn value(self, node: &'a SchedNode) -> &'a str {
        let (labels, key) = match self {
            Spread::NodeLabel(k) => (&node.labels, k),
            Spread::EngineLabel(k) => (&node.engine_labels, k),
        };
        labels.get(key).map_or("", String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(text: &str) -> Constraint {
        // Built by hand so keys the shoal parser rejects (node.ip, unknown keys) can be tested.
        let (key, op, value) = if let Some((k, v)) = text.split_once("==") {
            (k, ConstraintOp::Eq, v)
        } else {
            let (k, v) = text.split_once("!=").unwrap();
            (k, ConstraintOp::Ne, v)
        };
        Constraint { key: key.to_string(), op, value: value.to_string() }
    }

    fn node() -> SchedNode {
        SchedNode {
            id: "abc123".into(),
            hostname: "Worker-1".into(),
            role: NodeRole::Manager,
            platform_os: "linux".into(),
            platform_arch: "x86_64".into(),
            addr: "10.1.2.3".into(),
            labels: [("zone".to_string(), "East".to_string())].into(),
            engine_labels: [("disk".to_string(), "ssd".to_string())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn constraint_keys_and_case() {
        let n = node();
        for (text, want) in [
            ("node.id==ABC123", true),
            ("NODE.ID==abc123", true),
            ("node.hostname==worker-1", true),
            ("node.hostname!=worker-1", false),
            ("node.role==manager", true),
            ("node.role==MANAGER", true),
            ("node.role!=worker", true),
            ("node.platform.os==Linux", true),
            ("node.platform.arch==x86_64", true),
            ("node.labels.zone==east", true),
            ("Node.Labels.zone==east", true),
            ("node.labels.Zone==east", false), // label key is case-sensitive
            ("node.labels.Zone!=east", true),  // missing label reads as ""
            ("node.labels.rack==", true),
            ("engine.labels.disk==SSD", true),
            ("engine.labels.disk!=ssd", false),
            ("engine.labels.gpu!=yes", true),
            ("node.unknown==x", false),
            ("node.unknown!=x", false),
            ("node.labels.==x", false),
            ("node.ip==10.1.2.3", true),
            ("node.ip!=10.1.2.3", false),
            ("node.ip==10.0.0.0/8", true),
            ("node.ip!=10.1.3.0/24", true),
            ("node.ip==10.1.3.0/24", false),
            ("node.ip==not-an-ip", false),
            ("node.ip!=not-an-ip", false),
        ] {
            assert_eq!(node_matches(&[c(text)], &n), want, "{text}");
        }
        assert!(node_matches(&[], &n));
        assert!(!node_matches(&[c("node.role==manager"), c("node.labels.zone==west")], &n));
        let mut with_port = node();
        with_port.addr = "10.1.2.3:2377".into();
        assert!(node_matches(&[c("node.ip==10.1.2.3")], &with_port));
        with_port.addr = String::new();
        assert!(node_matches(&[c("node.ip!=10.1.2.3")], &with_port));
        assert!(!node_matches(&[c("node.ip==10.1.2.3")], &with_port));
    }

    #[test]
    fn explanations() {
        assert_eq!(Filter::Ready.explain(1), "1 node not available for new tasks");
        assert_eq!(Filter::Ready.explain(2), "2 nodes not available for new tasks");
        assert_eq!(Filter::Resources.explain(1), "insufficient resources on 1 node");
        assert_eq!(Filter::Constraints.explain(3), "scheduling constraints not satisfied on 3 nodes");
        assert_eq!(Filter::HostPort.explain(2), "host-mode port already in use on 2 nodes");
        assert_eq!(Filter::MaxReplicas.explain(7), "max replicas per node limit exceed");
        assert_eq!(no_suitable_node(&[0; 5]), "no suitable node");
        assert_eq!(
            no_suitable_node(&[2, 1, 0, 0, 0]),
            "no suitable node (2 nodes not available for new tasks; insufficient resources on 1 node)"
        );
        assert_eq!(
            no_suitable_node(&[1, 3, 1, 0, 1]),
            "no suitable node (insufficient resources on 3 nodes; 1 node not available for new tasks; \
             scheduling constraints not satisfied on 1 node; max replicas per node limit exceed)"
        );
    }

    #[test]
    fn spread_descriptors() {
        let n = node();
        assert_eq!(Spread::parse("node.labels.zone").unwrap().value(&n), "East");
        assert_eq!(Spread::parse("NODE.LABELS.zone").unwrap().value(&n), "East");
        assert_eq!(Spread::parse("node.labels.rack").unwrap().value(&n), "");
        assert_eq!(Spread::parse("engine.labels.disk").unwrap().value(&n), "ssd");
        assert!(Spread::parse("node.labels.").is_none());
        assert!(Spread::parse("node.hostname").is_none());
    }
}
