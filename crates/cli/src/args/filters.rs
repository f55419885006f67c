//! `--filter KEY=VALUE` of `service ls`, `stack services` and `node ls`, with docker's keys and matching: ids and
//! names by prefix; filters with the same key are alternatives (any may match) and filters with
//! different keys must all match, except labels: every `label` filter must match, as in swarmkit.

use shoal_types::{Labels, Node, ServiceMode};

/// The modes `service ls --filter mode=…` accepts.
const MODES: &[&str] = &["replicated", "global", "replicated-job", "global-job"];

/// One `service ls --filter`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceFilter {
    /// A service id prefix.
    Id(String),
    /// A service name prefix.
    Name(String),
    /// `label=KEY` (the label is set) or `label=KEY=VALUE`.
    Label(String, Option<String>),
    /// `replicated`, `global`, `replicated-job` or `global-job`.
    Mode(String),
}

pub const SERVICE_FILTER_KEYS: &str = "id, label, mode, name";

/// One `node ls --filter`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeFilter {
    /// A node id prefix.
    Id(String),
    /// A hostname prefix.
    Name(String),
    /// `label=KEY[=VALUE]`: an engine label (the agent's `--label`).
    Label(String, Option<String>),
    /// `node.label=KEY[=VALUE]`: a node label (`node update --label-add`).
    NodeLabel(String, Option<String>),
    /// `manager` or `worker`.
    Role(String),
    /// `accepted` or `pending`: every node that joined is accepted (a join is refused, never
    /// left pending), so `pending` matches none.
    Membership(String),
}

pub const NODE_FILTER_KEYS: &str = "id, label, membership, name, node.label, role";

fn split(text: &str, keys: &str) -> Result<(String, String), String> {
    let (key, value) = text.split_once('=').ok_or_else(|| format!("expected KEY=VALUE with KEY one of {keys}"))?;
    let value = value.trim();
    if value.is_empty() {
        return Err(format!("the value of filter {:?} must not be empty", key.trim()));
    }
    Ok((key.trim().to_ascii_lowercase(), value.to_string()))
}

fn label(value: &str) -> (String, Option<String>) {
    match value.split_once('=') {
        Some((k, v)) => (k.to_string(), Some(v.to_string())),
        None => (value.to_string(), None),
    }
}

fn one_of(key: &str, value: &str, allowed: &[&str]) -> Result<String, String> {
    let lower = value.to_ascii_lowercase();
    if allowed.contains(&lower.as_str()) {
        Ok(lower)
    } else {
        Err(format!("invalid {key} filter {value:?} (allowed: {})", allowed.join(", ")))
    }
}

/// Parses `service ls --filter KEY=VALUE`.
pub fn service_filter(text: &str) -> Result<ServiceFilter, String> {
    let (key, value) = split(text, SERVICE_FILTER_KEYS)?;
    match key.as_str() {
        "id" => Ok(ServiceFilter::Id(value)),
        "name" => Ok(ServiceFilter::Name(value)),
        "label" => {
            let (k, v) = label(&value);
            Ok(ServiceFilter::Label(k, v))
        }
        "mode" => one_of("mode", &value, MODES).map(ServiceFilter::Mode),
        other => Err(format!("unknown filter key {other:?} (allowed: {SERVICE_FILTER_KEYS})")),
    }
}

/// Parses `node ls --filter KEY=VALUE`.
pub fn node_filter(text: &str) -> Result<NodeFilter, String> {
    let (key, value) = split(text, NODE_FILTER_KEYS)?;
    match key.as_str() {
        "id" => Ok(NodeFilter::Id(value)),
        "name" => Ok(NodeFilter::Name(value)),
        "label" => {
            let (k, v) = label(&value);
            Ok(NodeFilter::Label(k, v))
        }
        "node.label" => {
            let (k, v) = label(&value);
            Ok(NodeFilter::NodeLabel(k, v))
        }
        "role" => one_of("role", &value, &["manager", "worker"]).map(NodeFilter::Role),
        "membership" => one_of("membership", &value, &["accepted", "pending"]).map(NodeFilter::Membership),
        other => Err(format!("unknown filter key {other:?} (allowed: {NODE_FILTER_KEYS})")),
    }
}

fn has_label<'a>(labels: impl IntoIterator<Item = (&'a String, &'a String)>, key: &str, value: Option<&str>) -> bool {
    labels.into_iter().any(|(k, v)| k == key && value.is_none_or(|want| v == want))
}

/// What a service filter looks at (both `Service` and `ServiceSummary` have it).
pub struct ServiceFacts<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub mode: &'a ServiceMode,
    pub labels: &'a Labels,
}

impl ServiceFilter {
    fn key(&self) -> &'static str {
        match self {
            ServiceFilter::Id(_) => "id",
            ServiceFilter::Name(_) => "name",
            ServiceFilter::Label(..) => "label",
            ServiceFilter::Mode(_) => "mode",
        }
    }

    fn matches(&self, s: &ServiceFacts<'_>) -> bool {
        match self {
            ServiceFilter::Id(id) => s.id.starts_with(id.as_str()),
            ServiceFilter::Name(name) => s.name.starts_with(name.as_str()),
            ServiceFilter::Label(k, v) => has_label(s.labels, k, v.as_deref()),
            ServiceFilter::Mode(mode) => s.mode.as_str() == mode,
        }
    }
}

impl NodeFilter {
    fn key(&self) -> &'static str {
        match self {
            NodeFilter::Id(_) => "id",
            NodeFilter::Name(_) => "name",
            NodeFilter::Label(..) => "label",
            NodeFilter::NodeLabel(..) => "node.label",
            NodeFilter::Role(_) => "role",
            NodeFilter::Membership(_) => "membership",
        }
    }

    fn matches(&self, node: &Node) -> bool {
        match self {
            NodeFilter::Id(id) => node.id.starts_with(id.as_str()),
            NodeFilter::Name(name) => node.description.hostname.starts_with(name.as_str()),
            NodeFilter::Label(k, v) => has_label(&node.description.engine_labels, k, v.as_deref()),
            NodeFilter::NodeLabel(k, v) => has_label(&node.spec.labels, k, v.as_deref()),
            NodeFilter::Role(role) => node.spec.role.as_str() == role,
            NodeFilter::Membership(membership) => membership == "accepted",
        }
    }
}

/// Same key: any may match; different keys: all must; label keys: every filter must match.
fn passes<F>(filters: &[F], key: impl Fn(&F) -> &'static str, matches: impl Fn(&F) -> bool) -> bool {
    let mut keys: Vec<&str> = filters.iter().map(&key).collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter().all(|k| {
        let mut of_key = filters.iter().filter(|f| key(f) == k);
        if k.ends_with("label") { of_key.all(&matches) } else { of_key.any(&matches) }
    })
}

/// Whether a service passes every `service ls` filter.
pub fn service_passes(filters: &[ServiceFilter], service: &ServiceFacts<'_>) -> bool {
    passes(filters, ServiceFilter::key, |f| f.matches(service))
}

/// Whether a node passes every `node ls` filter.
pub fn node_passes(filters: &[NodeFilter], node: &Node) -> bool {
    passes(filters, NodeFilter::key, |f| f.matches(node))
}
