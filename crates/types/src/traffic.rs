//! What the leader sends every agent's ingress proxy: for each published port, the tasks that
//! take its new connections.

use serde::{Deserialize, Serialize};

/// One published port on every node, and where its connections go.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    pub port: u16,
    /// The service that publishes it (for log lines).
    pub service: String,
    /// Running, healthy tasks that are not told to stop, ordered by task id.
    pub backends: Vec<Backend>,
}

/// One task behind a published port.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    pub task_id: String,
    pub node_id: String,
    /// `ip:port` at the task's node (the engine's published host port), for other nodes.
    pub remote: String,
    /// `ip:port` of the container itself, for the task's own node (skips the engine's proxy).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub local: String,
}

impl Backend {
    /// The address a proxy on node `here` connects to.
    pub fn address_from(&self, here: &str) -> &str {
        if self.node_id == here && !self.local.is_empty() { &self.local } else { &self.remote }
    }
}
