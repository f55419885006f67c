//! What the leader sends every agent's ingress proxy: for each published port, the tasks that
//! take its new connections.

use serde::{Deserialize, Serialize};

/// One published port on every node, and where its connections go.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    /// Where it listens: empty for a published port (the node's ingress address), or a
    /// service's virtual IP (its port then is the service's target port).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    pub port: u16,
    /// The service that publishes it (for log lines).
    pub service: String,
    /// Running, healthy tasks that are not told to stop, ordered by task id.
    pub backends: Vec<Backend>,
}

impl Listener {
    pub fn key(&self) -> ListenerKey {
        ListenerKey { address: self.address.clone(), port: self.port }
    }
}

/// What tells listeners apart: a published port, or a virtual IP and a port.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ListenerKey {
    /// Empty for a published port on the node's ingress address.
    pub address: String,
    pub port: u16,
}

impl ListenerKey {
    /// A published port on every node's ingress address.
    pub fn published(port: u16) -> ListenerKey {
        ListenerKey { address: String::new(), port }
    }
}

impl std::fmt::Display for ListenerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.address.is_empty() { write!(f, "*:{}", self.port) } else { write!(f, "{}:{}", self.address, self.port) }
    }
}

/// One task behind a published port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    pub task_id: String,
    pub node_id: String,
    /// `ip:port` at the task's node (the engine's published host port), for other nodes.
    pub remote: String,
    /// `ip:port` of the container itself, for the task's own node (skips the engine's proxy).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub local: String,
    /// Relative share of new connections (equal weights: the power of two choices instead).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

fn is_one(w: &u32) -> bool {
    *w == 1
}

impl Backend {
    /// The address a proxy on node `here` connects to.
    pub fn address_from(&self, here: &str) -> &str {
        if self.node_id == here && !self.local.is_empty() { &self.local } else { &self.remote }
    }
}

/// A published port whose connections go to the tasks of every service its selector matches
/// (`shoal route create`): a canary by labels, or by weight.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub id: String,
    pub version: u64,
    pub created_at: crate::Timestamp,
    pub updated_at: crate::Timestamp,
    pub spec: RouteSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "crate::Labels::is_empty")]
    pub labels: crate::Labels,
    /// The published port, on every node.
    pub port: u16,
    /// The port the selected services' tasks listen on (they publish it, in ingress mode).
    pub target: u16,
    /// Service labels a service must all carry to be selected.
    pub selector: crate::Labels,
    /// Shares of the traffic, in per cent, by service name. Empty: connections divide by the
    /// number of running tasks of the selected services. Otherwise a named service gets its
    /// share, and the selected services not named split what is left equally; within a service
    /// the share divides among its tasks.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub weights: std::collections::BTreeMap<String, u32>,
}

impl RouteSpec {
    /// Checks the spec alone (names, ports, selector, weights): the error names the field.
    pub fn validate(&self) -> Result<(), crate::ValidationError> {
        use crate::ValidationError;
        crate::validate_name("name", &self.name)?;
        if self.port == 0 {
            return Err(ValidationError::new("port", "0 is outside [1, 65535]"));
        }
        if self.target == 0 {
            return Err(ValidationError::new("target", "0 is outside [1, 65535]"));
        }
        let most = crate::limits::MAX_LIST_ENTRIES;
        for (field, n) in
            [("selector", self.selector.len()), ("weights", self.weights.len()), ("labels", self.labels.len())]
        {
            if n > most {
                return Err(ValidationError::new(field, format!("{n} entries is above the limit {most}")));
            }
        }
        if self.weights.keys().any(String::is_empty) {
            return Err(ValidationError::new("weights", "a service name is empty"));
        }
        if self.selector.is_empty() {
            return Err(ValidationError::new(
                "selector",
                "empty: a route selects services by at least one label (--select KEY=VALUE)",
            ));
        }
        if self.selector.keys().any(String::is_empty) {
            return Err(ValidationError::new("selector", "a label key is empty"));
        }
        if let Some((service, weight)) = self.weights.iter().find(|(_, w)| **w > 100) {
            return Err(ValidationError::new(
                "weights",
                format!("{service}={weight}: a weight is a share in per cent, 0 to 100"),
            ));
        }
        let total: u32 = self.weights.values().sum();
        if total > 100 {
            return Err(ValidationError::new("weights", format!("the shares add up to {total}%, more than 100%")));
        }
        if !self.weights.is_empty() && total == 0 {
            return Err(ValidationError::new("weights", "every weight is 0: no service would get traffic"));
        }
        Ok(())
    }

    /// Whether the route selects a service with these labels.
    pub fn selects(&self, labels: &crate::Labels) -> bool {
        self.selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}
