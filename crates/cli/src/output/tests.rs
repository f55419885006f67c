//! Exact renderings for small fixtures.

use shoal_types::{
    Availability, ClusterInfo, ManagerInfo, ManagerRef, Node, NodeDescription, NodeRole, NodeSpec, NodeState,
    NodeStatus, PortConfig, PortProtocol, PublishMode, RaftSummary, Service, ServiceMode, ServiceSpec, Task, TaskState,
    TaskStatus, UpdateState, UpdateStatus,
};

use super::*;

fn service(id: &str, name: &str, mode: ServiceMode, image: &str) -> Service {
    let mut spec = ServiceSpec::new(name, image);
    spec.mode = mode;
    Service {
        id: id.to_string(),
        version: 7,
        created_at: 1_709_296_496_789,
        updated_at: 1_709_296_500_000,
        spec,
        spec_version: 7,
        previous_spec: None,
        previous_spec_version: None,
        update_status: None,
        revisions: Vec::new(),
    }
}

fn task(service_id: &str, node_id: &str, state: TaskState, desired: TaskState) -> Task {
    Task {
        id: format!("t-{service_id}-{node_id}-{}", state.as_str()),
        version: 1,
        created_at: 0,
        updated_at: 0,
        service_id: service_id.to_string(),
        slot: 1,
        node_id: node_id.to_string(),
        spec_version: 7,
        spec: Default::default(),
        service_name: String::new(),
        endpoint: Default::default(),
        origin: Default::default(),
        start_gate: None,
        running_at: None,
        desired_state: desired,
        status: TaskStatus { state, timestamp: 0, message: String::new(), err: String::new(), ..Default::default() },
    }
}

fn node(id: &str, hostname: &str, state: NodeState, availability: Availability, manager: Option<ManagerInfo>) -> Node {
    Node {
        id: id.to_string(),
        version: 1,
        created_at: 1_709_296_496_789,
        updated_at: 0,
        spec: NodeSpec {
            role: if manager.is_some() { NodeRole::Manager } else { NodeRole::Worker },
            availability,
            labels: Default::default(),
        },
        description: NodeDescription {
            hostname: hostname.to_string(),
            nano_cpus: 2_000_000_000,
            memory_bytes: 2 << 30,
            engine_labels: Default::default(),
            ..Default::default()
        },
        status: NodeStatus { state, message: String::new(), addr: "10.0.0.5".to_string() },
        manager,
    }
}

fn manager(raft_id: u64, addr: &str, reachability: &str, leader: bool) -> Option<ManagerInfo> {
    Some(ManagerInfo { raft_id, addr: addr.to_string(), reachability: Some(reachability.to_string()), leader })
}

const N1: &str = "n1aaaaaaaaaaaaaaaaaaaaaaa";
const N2: &str = "n2bbbbbbbbbbbbbbbbbbbbbbb";
const N3: &str = "n3ccccccccccccccccccccccc";
const W1: &str = "w1ddddddddddddddddddddddd";

fn nodes() -> Vec<Node> {
    vec![
        node(W1, "worker-1", NodeState::Ready, Availability::Pause, None),
        node(N3, "m3", NodeState::Down, Availability::Active, manager(3, "127.0.0.1:4244", "unreachable", false)),
        node(N1, "m1", NodeState::Ready, Availability::Active, manager(1, "127.0.0.1:4242", "leader", true)),
        node(N2, "m2", NodeState::Ready, Availability::Drain, manager(2, "127.0.0.1:4243", "reachable", false)),
    ]
}

const WEB: &str = "w3bw3bw3bw3bw3bw3bw3bw3bw";
const API: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a";
const AGENT: &str = "g0g0g0g0g0g0g0g0g0g0g0g0g";

fn services() -> Vec<Service> {
    let mut web = service(WEB, "web", ServiceMode::Replicated { replicas: 3 }, "shoal/busybox:1");
    web.spec.task.placement.max_replicas_per_node = 2;
    web.spec.endpoint.ports = vec![
        PortConfig { target: 80, published: 8080, protocol: PortProtocol::Tcp, mode: PublishMode::Ingress },
        PortConfig { target: 53, published: 5353, protocol: PortProtocol::Udp, mode: PublishMode::Host },
    ];
    let mut api = service(API, "api", ServiceMode::Replicated { replicas: 2 }, "shoal/busybox:2");
    // Not published (the cluster would choose): not shown.
    api.spec.endpoint.ports = vec![PortConfig { target: 9000, ..PortConfig::default() }];
    let agent = service(AGENT, "agent-x", ServiceMode::Global, "nginx:1.25");
    vec![web, api, agent]
}

fn tasks() -> Vec<Task> {
    use TaskState::*;
    vec![
        // web: three running, but one on a down node; an old failed task.
        task(WEB, N1, Running, Running),
        task(WEB, N2, Running, Running),
        task(WEB, N3, Running, Running),
        task(WEB, N1, Failed, Shutdown),
        // api: one running, one still starting.
        task(API, N1, Running, Running),
        task(API, N2, Starting, Running),
        // agent-x (global): running on n1, pending on n2, on the down n3, and a shut-down one.
        task(AGENT, N1, Running, Running),
        task(AGENT, N2, Pending, Running),
        task(AGENT, N3, Running, Running),
        task(AGENT, W1, Shutdown, Shutdown),
    ]
}

#[test]
fn service_ls_table() {
    let text = service_table(&services(), &tasks(), &nodes());
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "ID             NAME      MODE         REPLICAS               IMAGE             PORTS",
            "g0g0g0g0g0g0   agent-x   global       1/2                    nginx:1.25",
            "a1a1a1a1a1a1   api       replicated   1/2                    shoal/busybox:2",
            "w3bw3bw3bw3b   web       replicated   2/3 (max 2 per node)   shoal/busybox:1   *:8080->80/tcp, *:5353->53/udp",
        ]
    );
    assert!(text.ends_with('\n'));
}

#[test]
fn service_ls_without_node_information_counts_every_running_task() {
    let text = service_table(&services(), &tasks(), &[]);
    assert!(text.contains("   3/3 (max 2 per node)   "), "{text}");
    assert!(text.contains("   global       2/3   "), "{text}");
}

#[test]
fn service_ls_of_nothing_is_the_header() {
    assert_eq!(service_table(&[], &[], &[]), "ID        NAME      MODE      REPLICAS   IMAGE     PORTS\n");
}

#[test]
fn service_ids_are_short_and_in_table_order() {
    assert_eq!(service_ids(&services()), "g0g0g0g0g0g0\na1a1a1a1a1a1\nw3bw3bw3bw3b\n");
}

#[test]
fn node_ls_table() {
    let text = node_table(&nodes());
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "ID                          HOSTNAME   STATUS    AVAILABILITY   MANAGER STATUS   ADDRESS",
            "n1aaaaaaaaaaaaaaaaaaaaaaa   m1         Ready     Active         Leader           127.0.0.1:4242",
            "n2bbbbbbbbbbbbbbbbbbbbbbb   m2         Ready     Drain          Reachable        127.0.0.1:4243",
            "n3ccccccccccccccccccccccc   m3         Down      Active         Unreachable      127.0.0.1:4244",
            "w1ddddddddddddddddddddddd   worker-1   Ready     Pause                           10.0.0.5",
        ]
    );
    assert_eq!(node_ids(&nodes()), format!("{N1}\n{N2}\n{N3}\n{W1}\n"));
}

#[test]
fn manager_status_prefers_the_leader_flag() {
    let mut n = node(N1, "m1", NodeState::Ready, Availability::Active, manager(1, "a:1", "reachable", true));
    assert_eq!(manager_status(&n), "Leader");
    n.manager = Some(ManagerInfo { raft_id: 1, addr: String::new(), reachability: None, leader: false });
    assert_eq!(manager_status(&n), "");
    assert_eq!(node_address(&n), "10.0.0.5", "falls back to the reported address");
}

#[test]
fn json_output_round_trips() {
    let services = services();
    let text = json_array(&services);
    assert!(text.starts_with("[\n"));
    let back: Vec<Service> = serde_json::from_str(&text).unwrap();
    assert_eq!(back, services);
    let empty: Vec<Service> = Vec::new();
    assert_eq!(json_array(&empty), "[]\n");
}

#[test]
fn cluster_info_lines() {
    let info = ClusterInfo {
        cluster_id: "c0ffee".into(),
        created_at: 1_709_296_496_789,
        leader: Some(ManagerRef { node_id: N1.into(), raft_id: 1, addr: "127.0.0.1:4242".into() }),
        answered_by: Some(ManagerRef { node_id: N2.into(), raft_id: 2, addr: "127.0.0.1:4243".into() }),
        managers: 3,
        services: 2,
        tasks: 7,
        raft: RaftSummary { term: 4, commit: 120, applied: 119, voters: vec![1, 2, 3], learners: vec![] },
    };
    let expected = format!(
        "Cluster ID: c0ffee\n\
         Created: 2024-03-01T12:34:56.789Z\n\
         Managers: 3\n\
         Leader: {N1} (127.0.0.1:4242, raft id 1)\n\
         Answered by: {N2} (127.0.0.1:4243, raft id 2)\n\
         Services: 2\n\
         Tasks: 7\n\
         Raft term: 4\n\
         Raft commit: 120\n\
         Raft applied: 119\n\
         Voters: 1, 2, 3\n\
         Learners: none\n"
    );
    assert_eq!(cluster_info_text(&info), expected);
    let leaderless = ClusterInfo { leader: None, ..info };
    assert!(cluster_info_text(&leaderless).contains("\nLeader: none\n"));
}

#[test]
fn service_pretty_summary() {
    let mut web = services().remove(0);
    web.spec.update_config.parallelism = 2;
    web.spec.task.container.args = vec!["sleep".into(), "100".into()];
    web.spec.task.resources.reservations.memory_bytes = 64 << 20;
    web.spec.task.resources.limits.nano_cpus = 500_000_000;
    web.update_status = Some(UpdateStatus {
        state: UpdateState::Completed,
        message: "update completed".into(),
        started_at: Some(1_709_296_496_789),
        completed_at: Some(1_709_296_500_000),
        slots: None,
    });
    let text = service_pretty(&web);
    for line in [
        format!("ID:                     {WEB}"),
        "Name:                   web".to_string(),
        "Service Mode:           Replicated".to_string(),
        " Replicas:              3".to_string(),
        "UpdateStatus:".to_string(),
        " State:                 completed".to_string(),
        " Completed:             2024-03-01T12:35:00.000Z".to_string(),
        " Message:               update completed".to_string(),
        " Max Replicas Per Node: 2".to_string(),
        "UpdateConfig:".to_string(),
        " Parallelism:           2".to_string(),
        " On failure:            pause".to_string(),
        " Monitoring Period:     5s".to_string(),
        " Update order:          stop-first".to_string(),
        "RollbackConfig:".to_string(),
        " Rollback order:        stop-first".to_string(),
        "RestartPolicy:".to_string(),
        " Condition:             any".to_string(),
        " Max attempts:          0 (unlimited)".to_string(),
        " Image:                 shoal/busybox:1".to_string(),
        " Args:                  sleep 100".to_string(),
        "  Memory:               64MiB".to_string(),
        "  CPU:                  0.5".to_string(),
        "Endpoint Mode:          vip".to_string(),
        " PublishedPort = 8080".to_string(),
        "  PublishMode = host".to_string(),
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
}

#[test]
fn node_pretty_summary() {
    let text = node_pretty(&nodes()[2]);
    for line in [
        format!("ID:                     {N1}"),
        "Hostname:               m1".to_string(),
        "Joined at:              2024-03-01T12:34:56.789Z".to_string(),
        " State:                 Ready".to_string(),
        " Availability:          Active".to_string(),
        "Manager Status:".to_string(),
        " Address:               127.0.0.1:4242".to_string(),
        " Raft Status:           Leader".to_string(),
        " Leader:                Yes".to_string(),
        " CPUs:                  2".to_string(),
        " Memory:                2GiB".to_string(),
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
}

#[test]
fn capitalizes_like_docker() {
    assert_eq!(capitalize("ready"), "Ready");
    assert_eq!(capitalize(""), "");
}
