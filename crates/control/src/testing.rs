//! Fixtures shared by this crate's unit tests.

use shoal_types::{Availability, Node, NodeRole, NodeSpec, NodeState, NodeStatus, Task, TaskState, TaskStatus};

/// A task of service `service` on `node` ("" for none), desired RUNNING, observed `state`.
pub(crate) fn task(id: &str, service: &str, node: &str, state: TaskState) -> Task {
    Task {
        id: id.into(),
        version: 0,
        created_at: 0,
        updated_at: 0,
        service_id: service.into(),
        service_name: service.into(),
        slot: 1,
        node_id: node.into(),
        spec_version: 1,
        spec: Default::default(),
        endpoint: Default::default(),
        desired_state: TaskState::Running,
        status: TaskStatus { state, ..Default::default() },
        origin: Default::default(),
        start_gate: None,
        running_at: None,
        restart_failures: 0,
        remove_container: false,
        kept: false,
        adopts: None,
    }
}

/// A ready worker node `id`.
pub(crate) fn worker(id: &str) -> Node {
    Node {
        id: id.into(),
        version: 0,
        created_at: 0,
        updated_at: 0,
        spec: NodeSpec { role: NodeRole::Worker, availability: Availability::Active, labels: Default::default() },
        description: Default::default(),
        status: NodeStatus { state: NodeState::Ready, message: String::new(), addr: "127.0.0.1".into() },
        manager: None,
    }
}
