use serde::{Deserialize, Serialize};
use shoal_types::{
    Cluster, ClusterSecurity, Node, NodeDescription, NodeRole, NodeSpec, NodeStatus, ServiceSpec, Task, TaskState,
    TaskStatus, Timestamp, UpdateStatus,
};

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
    InitCluster {
        cluster: Cluster,
    },
    /// Stores the cluster CA and the first join tokens; refused if they exist (the CA never
    /// changes, or every node certificate would stop verifying).
    InitSecurity {
        security: ClusterSecurity,
    },
    /// `cluster join-token --rotate`: replaces one role's token; nodes that joined keep working.
    SetJoinToken {
        role: NodeRole,
        token: String,
    },
    CreateService {
        id: String,
        spec: ServiceSpec,
    },
    /// Replaces the spec if the service is still at `expected_version` (optimistic concurrency).
    UpdateService {
        id: String,
        expected_version: u64,
        spec: ServiceSpec,
    },
    /// Push-style rollback: swaps spec and previous spec.
    RollbackService {
        id: String,
        expected_version: u64,
    },
    SetUpdateStatus {
        id: String,
        status: Option<UpdateStatus>,
    },
    /// The updater's automatic rollback: the previous spec becomes current (as a new version)
    /// and is forgotten, so a later manual rollback has nothing to return to (Swarm). Skipped
    /// if the service changed since `expected_version` or has no previous spec.
    AutoRollback {
        id: String,
        expected_version: u64,
        status: UpdateStatus,
    },
    RemoveService {
        id: String,
    },
    PutNode {
        node: Node,
    },
    /// Replaces a node's availability and labels if it is still at `expected_version`; the role
    /// only changes through raft membership (demotion).
    UpdateNodeSpec {
        id: String,
        expected_version: u64,
        spec: NodeSpec,
    },
    RemoveNode {
        id: String,
    },
    PutTask {
        task: Task,
    },
    RemoveTask {
        id: String,
    },
    // The actions below are proposed by the leader's control loops from a view that may be a
    // little behind the log. They never fail a batch: a task that is gone, or a change that would
    // move a state backwards, is skipped.
    /// Raises a task's desired state (never lowers it).
    SetDesiredState {
        id: String,
        desired: TaskState,
    },
    /// An observed status from an agent; applied only if it moves forward (or, at the same state,
    /// differs).
    SetTaskStatus {
        id: String,
        status: TaskStatus,
    },
    /// The scheduler's decision: bind an unassigned task (or confirm a preassigned one) to a node.
    AssignTask {
        id: String,
        node_id: String,
    },
    /// The scheduler could not place the task: PENDING with the reason.
    MarkUnschedulable {
        id: String,
        err: String,
    },
    /// Deletes tasks that still exist (the task reaper).
    DeleteTasks {
        ids: Vec<String>,
    },
    /// Node health and description as the dispatcher sees them.
    SetNodeStatus {
        id: String,
        status: NodeStatus,
        description: Option<NodeDescription>,
    },
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
