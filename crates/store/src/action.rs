use serde::{Deserialize, Serialize};
use shoal_types::{Cluster, Node, NodeSpec, ServiceSpec, Task, Timestamp, UpdateStatus};

/// One raft log entry's worth of changes, applied all or nothing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// Wall-clock time at the proposing leader; becomes created_at/updated_at.
    pub at: Timestamp,
    pub actions: Vec<Action>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Action {
    /// Creates the cluster object; refused if one exists.
    InitCluster { cluster: Cluster },
    CreateService { id: String, spec: ServiceSpec },
    /// Replaces the spec if the service is still at `expected_version` (optimistic concurrency).
    UpdateService { id: String, expected_version: u64, spec: ServiceSpec },
    /// Push-style rollback: swaps spec and previous spec.
    RollbackService { id: String, expected_version: u64 },
    SetUpdateStatus { id: String, status: Option<UpdateStatus> },
    RemoveService { id: String },
    PutNode { node: Node },
    /// Replaces a node's availability and labels if it is still at `expected_version`; the role
    /// only changes through raft membership (demotion).
    UpdateNodeSpec { id: String, expected_version: u64, spec: NodeSpec },
    RemoveNode { id: String },
    PutTask { task: Task },
    RemoveTask { id: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MembershipKind {
    AddLearner,
    Promote,
    Remove,
}

/// A raft membership change as the store sees it (decoded from the conf change context).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipChange {
    pub kind: MembershipKind,
    pub raft_id: u64,
    #[serde(default)]
    pub node_id: String,
    #[serde(default)]
    pub addr: String,
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub at: Timestamp,
}
