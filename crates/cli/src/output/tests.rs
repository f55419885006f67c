//! Exact renderings for small fixtures.

use shoal_types::{
    Availability, ClusterInfo, ManagerInfo, ManagerRef, Node, NodeDescription, NodeRole, NodeSpec, NodeState,
    NodeStatus, PortConfig, PortProtocol, PublishMode, RaftSummary, Service, ServiceMode, ServiceSpec, ServiceSummary,
    Task, TaskState, TaskStatus, UpdateState, UpdateStatus,
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
        status_version: 0,
        revision: 1,
        rollout_id: String::new(),
        group: None,
        virtual_ip: String::new(),
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
        restart_failures: 0,
        remove_container: false,
        kept: false,
        adopts: None,
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

/// The summaries a manager would send for these services, tasks and nodes.
fn summaries(services: &[Service], tasks: &[Task], nodes: &[Node]) -> Vec<ServiceSummary> {
    let down = |id: &str| nodes.iter().any(|n| n.id == id && n.status.state == NodeState::Down);
    services.iter().map(|s| ServiceSummary::new(s, tasks.iter(), down)).collect()
}

#[test]
fn service_ls_table() {
    let text = service_table(&summaries(&services(), &tasks(), &nodes()));
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
    let text = service_table(&summaries(&services(), &tasks(), &[]));
    assert!(text.contains("   3/3 (max 2 per node)   "), "{text}");
    assert!(text.contains("   global       2/3   "), "{text}");
}

#[test]
fn service_ls_of_nothing_is_the_header() {
    assert_eq!(service_table(&[]), "ID        NAME      MODE      REPLICAS   IMAGE     PORTS\n");
}

#[test]
fn service_ids_are_short_and_in_table_order() {
    assert_eq!(service_ids(&summaries(&services(), &[], &[])), "g0g0g0g0g0g0\na1a1a1a1a1a1\nw3bw3bw3bw3b\n");
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
        raft: RaftSummary {
            term: 4,
            commit: 120,
            applied: 119,
            voters: vec![1, 2, 3],
            learners: vec![],
            snapshot_index: 100,
            snapshot_bytes: 52_000,
        },
        spec: Some(shoal_types::ClusterSpec { task_history_limit: 2, ..Default::default() }),
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
         Raft snapshot: index 100, 50.781KiB\n\
         Voters: 1, 2, 3\n\
         Learners: none\n\
         Task history limit: 2\n\
         Max replicas: 100000\n\
         Heartbeat period: 1s\n\
         Certificate expiry: 2160h0m0s\n"
    );
    assert_eq!(cluster_info_text(&info), expected);
    let leaderless = ClusterInfo { leader: None, ..info.clone() };
    assert!(cluster_info_text(&leaderless).contains("\nLeader: none\n"));
    // An older manager reports no settings: none are shown (not defaults it may not have).
    let without_settings = ClusterInfo { spec: None, ..info };
    assert!(cluster_info_text(&without_settings).ends_with("Learners: none\n"));
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
        step: None,
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

// ---- service ps / node ps ----

const NOW: u64 = 1_800_000_000_000;
const SEC: u64 = 1_000;

/// A task of `web` in `slot` (0: global, keyed by `node`), created `created` ms before NOW, whose
/// status changed `age` ms before NOW.
fn ps_task(id: &str, slot: u64, node: &str, desired: TaskState, state: TaskState, created: u64, age: u64) -> Task {
    let mut t = task(WEB, node, state, desired);
    t.id = id.to_string();
    t.service_name = "web".to_string();
    t.slot = slot;
    t.created_at = NOW - created;
    t.status.timestamp = NOW - age;
    std::sync::Arc::make_mut(&mut t.spec).container.image = "shoal/busybox:2".to_string();
    t
}

fn ps_tasks() -> Vec<Task> {
    use TaskState::*;
    let mut failed = ps_task("t1oldfailed0000000000000a", 1, N1, Shutdown, Failed, 600 * SEC, 125 * SEC);
    failed.status.err = "task: non-zero exit (1): the container exited badly".to_string();
    std::sync::Arc::make_mut(&mut failed.spec).container.image = "shoal/busybox:1@sha256:abcdef".to_string();
    let mut older = ps_task("t1older00000000000000000b", 1, N2, Shutdown, Shutdown, 900 * SEC, 400 * SEC);
    std::sync::Arc::make_mut(&mut older.spec).container.image = "shoal/busybox:1".to_string();
    let mut pending = ps_task("t10pending000000000000000", 10, "", Running, Pending, 2 * SEC, 500);
    pending.status.err = "no suitable node (max replicas per node limit exceed)".to_string();
    let mut host = ps_task("t2running000000000000000c", 2, N2, Running, Running, 30 * SEC, 5 * SEC);
    host.endpoint.ports = vec![
        PortConfig { target: 80, published: 8080, protocol: PortProtocol::Tcp, mode: PublishMode::Host },
        PortConfig { target: 53, published: 5353, protocol: PortProtocol::Udp, mode: PublishMode::Host },
        PortConfig { target: 90, published: 9090, protocol: PortProtocol::Tcp, mode: PublishMode::Ingress },
    ];
    pending.endpoint.ports = host.endpoint.ports.clone();
    vec![
        pending,
        older,
        host,
        ps_task("t1running000000000000000d", 1, N1, Running, Running, 60 * SEC, 61 * SEC),
        failed,
        ps_task("t3ready00000000000000000e", 3, W1, Ready, Ready, SEC, 3_700 * SEC),
        ps_task("t3old0000000000000000000f", 3, N3, Remove, Complete, 5 * 86_400 * SEC, 3 * 86_400 * SEC),
    ]
}

fn ps_options(no_trunc: bool) -> PsOptions {
    PsOptions { no_trunc, no_resolve: false, now: NOW }
}

fn names() -> ServiceNames {
    [(WEB.to_string(), "web".to_string())].into_iter().collect()
}

#[test]
fn service_ps_table_lists_history_under_the_newest_task_of_each_slot() {
    let tasks = ps_tasks();
    let selected = select_tasks(&tasks, &[], &names(), &nodes());
    let text = task_table(&selected, &names(), &nodes(), &ps_options(false));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "ID             NAME        IMAGE             NODE       DESIRED STATE   CURRENT STATE                    ERROR                              PORTS",
            "t1running000   web.1       shoal/busybox:2   m1         Running         Running about a minute ago",
            "t1oldfailed0    \\_ web.1   shoal/busybox:1   m1         Shutdown        Failed 2 minutes ago             \"task: non-zero exit (1): the …\"",
            "t1older00000    \\_ web.1   shoal/busybox:1   m2         Shutdown        Shutdown 6 minutes ago",
            "t2running000   web.2       shoal/busybox:2   m2         Running         Running 5 seconds ago                                               *:8080->80/tcp,*:5353->53/udp",
            "t3ready00000   web.3       shoal/busybox:2   worker-1   Ready           Ready about an hour ago",
            "t3old0000000    \\_ web.3   shoal/busybox:2   m3         Remove          Complete 3 days ago",
            "t10pending00   web.10      shoal/busybox:2              Running         Pending less than a second ago   \"no suitable node (max replica…\"",
        ]
    );
    assert_eq!(
        task_ids(&selected, false),
        "t1running000\nt1oldfailed0\nt1older00000\nt2running000\nt3ready00000\nt3old0000000\nt10pending00\n"
    );
}

#[test]
fn service_ps_no_trunc_shows_whole_ids_errors_and_images() {
    let tasks = ps_tasks();
    let selected = select_tasks(&tasks, &[], &names(), &nodes());
    let text = task_table(&selected, &names(), &nodes(), &ps_options(true));
    assert!(text.contains("t1oldfailed0000000000000a    \\_ web.1 "), "{text}");
    assert!(text.contains("   shoal/busybox:1@sha256:abcdef   "), "{text}");
    assert!(text.contains("   \"task: non-zero exit (1): the container exited badly\"\n"), "{text}");
    assert!(text.contains("   \"no suitable node (max replicas per node limit exceed)\""), "{text}");
    assert!(task_ids(&selected, true).starts_with("t1running000000000000000d\nt1oldfailed0000000000000a\n"));
}

#[test]
fn service_ps_without_node_names_shows_node_ids() {
    let tasks = ps_tasks();
    let selected = select_tasks(&tasks, &[], &names(), &[]);
    let text = task_table(&selected, &names(), &[], &ps_options(false));
    assert!(text.lines().nth(1).unwrap().contains(&format!("   {N1}   ")), "{text}");
    let resolved_but_unwanted = PsOptions { no_resolve: true, ..ps_options(false) };
    let text = task_table(&selected, &names(), &nodes(), &resolved_but_unwanted);
    assert!(text.lines().nth(1).unwrap().contains(&format!("   {N1}   ")), "{text}");
}

#[test]
fn service_ps_of_no_tasks_is_the_header() {
    assert_eq!(
        task_table(&[], &names(), &[], &ps_options(false)),
        "ID        NAME      IMAGE     NODE      DESIRED STATE   CURRENT STATE   ERROR     PORTS\n"
    );
}

#[test]
fn global_tasks_are_named_by_node_and_sorted_by_node() {
    use TaskState::*;
    let tasks = vec![
        ps_task("g2", 0, N2, Running, Running, 10 * SEC, SEC),
        ps_task("g1new", 0, N1, Running, Running, 10 * SEC, SEC),
        ps_task("g1old", 0, N1, Shutdown, Failed, 20 * SEC, 15 * SEC),
    ];
    let selected = select_tasks(&tasks, &[], &names(), &nodes());
    let ids: Vec<&str> = selected.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["g1new", "g1old", "g2"]);
    assert_eq!(task_name(selected[0], &names()), format!("web.{N1}"));
    let text = task_table(&selected, &names(), &nodes(), &ps_options(false));
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[1].starts_with(&format!("g1new     web.{N1}      ")), "{text}");
    assert!(lines[2].starts_with(&format!("g1old      \\_ web.{N1}  ")), "{text}");
    assert!(lines[3].starts_with(&format!("g2        web.{N2}      ")), "{text}");
}

#[test]
fn a_task_without_its_service_name_takes_the_services() {
    let mut t = ps_task("x", 4, N1, TaskState::Running, TaskState::Running, SEC, SEC);
    t.service_name = String::new();
    assert_eq!(task_name(&t, &names()), "web.4");
    assert_eq!(task_name(&t, &ServiceNames::new()), format!("{WEB}.4"));
}

#[test]
fn ps_filters() {
    use crate::args::TaskFilter::*;
    let tasks = ps_tasks();
    let ids = |filters: &[crate::args::TaskFilter]| -> Vec<String> {
        select_tasks(&tasks, filters, &names(), &nodes()).iter().map(|t| t.id[..3].to_string()).collect()
    };
    assert_eq!(ids(&[DesiredState(TaskState::Running)]), ["t1r", "t2r", "t10"]);
    assert_eq!(ids(&[DesiredState(TaskState::Shutdown)]), ["t1o", "t1o"]);
    assert_eq!(ids(&[DesiredState(TaskState::Accepted)]), Vec::<String>::new());
    assert_eq!(ids(&[Name("web.1".into())]), ["t1r", "t1o", "t1o"], "web.1 does not match web.10");
    assert_eq!(ids(&[Name("web.1.t1ol".into())]), ["t1o", "t1o"], "name and id prefix");
    assert_eq!(ids(&[Name("web".into())]).len(), 7, "the service name matches all its tasks");
    assert_eq!(ids(&[Node("m2".into())]), ["t1o", "t2r"], "hostname");
    assert_eq!(ids(&[Node(W1.into())]), ["t3r"], "id");
    assert_eq!(ids(&[Node("n3c".into())]), ["t3o"], "id prefix");
    assert_eq!(ids(&[Id("t3".into())]), ["t3r", "t3o"]);
    // Same key: any; different keys: all.
    assert_eq!(ids(&[Node("m1".into()), Node("m2".into())]), ["t1r", "t1o", "t1o", "t2r"]);
    assert_eq!(ids(&[Node("m1".into()), Node("m2".into()), DesiredState(TaskState::Running)]), ["t1r", "t2r"]);
}

#[test]
fn ps_columns() {
    assert_eq!(tasks::error_column("", false), "");
    assert_eq!(tasks::error_column("short", false), "\"short\"");
    let exactly_30 = "x".repeat(30);
    assert_eq!(tasks::error_column(&exactly_30, false), format!("\"{exactly_30}\""));
    assert_eq!(tasks::error_column(&"x".repeat(31), false), format!("\"{}…\"", "x".repeat(29)));
    assert_eq!(tasks::error_column("two\nlines", false), "\"two lines\"");
    assert_eq!(tasks::ellipsis("héllo wörld", 5), "héll…");
    let mut t = ps_task("x", 1, N1, TaskState::Remove, TaskState::Rejected, SEC, 7 * SEC);
    assert_eq!(tasks::current_state_column(&t, NOW), "Rejected 7 seconds ago");
    t.status.timestamp = NOW + 5 * SEC;
    assert_eq!(tasks::current_state_column(&t, NOW), "Rejected less than a second ago", "clock skew");
    t.status.timestamp = 0;
    assert_eq!(tasks::current_state_column(&t, NOW), "Rejected");
    assert_eq!(capitalize(t.desired_state.as_str()), "Remove");
    t.endpoint.ports =
        vec![PortConfig { target: 80, published: 0, protocol: PortProtocol::Tcp, mode: PublishMode::Host }];
    assert_eq!(tasks::task_ports_column(&t), "", "no published port");
}

#[test]
fn ps_json_is_an_array_of_whole_tasks() {
    let tasks = ps_tasks();
    let selected = select_tasks(&tasks, &[], &names(), &nodes());
    let text = json_array(&selected);
    let back: Vec<Task> = serde_json::from_str(&text).unwrap();
    assert_eq!(back.len(), 7);
    assert_eq!(back[0], tasks[3]);
}

// ---- events ----

#[test]
fn task_event_line() {
    let json = r#"{"time":1795320200283,"type":"task","action":"update","id":"l05dax65xl1p5bcx75fygx03m",
        "service":"nwga3jklzbrwchcpj42fg7r8z","index":7,
        "object":{"type":"task","object":{"id":"l05dax65xl1p5bcx75fygx03m","service_id":"nwga3jklzbrwchcpj42fg7r8z",
        "service_name":"web","slot":3,"desired_state":"running","status":{"state":"running","timestamp":1}}}}"#;
    assert_eq!(
        event_line(json),
        "2026-11-22T04:03:20.283Z task update l05dax65xl1p5bcx75fygx03m (service=web, state=running, desired=running)"
    );
    assert_eq!(event_action(json), "update");
    // A bare object, without the service's name: the service id is shown.
    let json = r#"{"time":0,"type":"task","action":"create","id":"t1","service":"s1",
        "object":{"id":"t1","service_id":"s1","desired_state":"running","status":{"state":"new"}}}"#;
    assert_eq!(event_line(json), "1970-01-01T00:00:00.000Z task create t1 (service=s1, state=new, desired=running)");
}

#[test]
fn service_node_and_cluster_event_lines() {
    let service = r#"{"time":1795320200282,"type":"service","action":"update","id":"s1","service":"s1","index":6,
        "object":{"type":"service","object":{"id":"s1","spec":{"name":"web"}}}}"#;
    assert_eq!(event_line(service), "2026-11-22T04:03:20.282Z service update s1 (name=web)");
    let updating = r#"{"time":1795320200282,"type":"service","action":"update","id":"s1",
        "object":{"id":"s1","spec":{"name":"web"},"update_status":{"state":"rollback_started","message":"m"}}}"#;
    assert_eq!(
        event_line(updating),
        "2026-11-22T04:03:20.282Z service update s1 (name=web, update_state=rollback_started)"
    );
    let node = r#"{"time":1795320200369,"type":"node","action":"update","id":"n1","index":9,
        "object":{"type":"node","object":{"id":"n1","spec":{"role":"worker","availability":"drain","labels":{}},
        "description":{"hostname":"m1"},"status":{"state":"ready"}}}}"#;
    assert_eq!(
        event_line(node),
        "2026-11-22T04:03:20.369Z node update n1 (hostname=m1, state=ready, availability=drain)"
    );
    let cluster =
        r#"{"time":1795320200369,"type":"cluster","action":"create","id":"c1","index":1,"object":{"id":"c1"}}"#;
    assert_eq!(event_line(cluster), "2026-11-22T04:03:20.369Z cluster create c1");
    assert_eq!(event_action(cluster), "create");
}

#[test]
fn unreadable_events_are_shown_as_they_came() {
    assert_eq!(event_line("not json\n"), "not json");
    assert_eq!(event_line("[1,2]"), "[1,2]");
    assert_eq!(event_action("not json"), "");
    let removed = r#"{"time":1795320200369,"type":"task","action":"remove","id":"t9"}"#;
    assert_eq!(event_line(removed), "2026-11-22T04:03:20.369Z task remove t9 (service=, state=, desired=)");
}

#[test]
fn a_restart_waiting_out_its_backoff_says_when_and_why() {
    let mut t = ps_task("t1restart000000000000000", 1, "", TaskState::Ready, TaskState::New, 0, 0);
    t.origin = shoal_types::TaskOrigin::Restart;
    t.status.err = "No such image: shoal/busybox:99".to_string();
    t.start_gate = Some(shoal_types::StartGate {
        not_before: NOW + 39_500,
        after_task: None,
        deadline: NOW + 99_500,
        after_older_tasks: false,
        prepared_ahead: false,
    });
    assert_eq!(tasks::error_text(&t, NOW), "restarting in 40s: No such image: shoal/busybox:99");
    // Once the wait is over (or the task was placed) it is an ordinary task again.
    assert_eq!(tasks::error_text(&t, NOW + 39_500), "No such image: shoal/busybox:99");
    t.status.state = TaskState::Assigned;
    assert_eq!(tasks::error_text(&t, NOW), "No such image: shoal/busybox:99");
}

fn template(text: &str, fields: &[(&str, &str)]) -> Template {
    match crate::args::format::parse_list_output(text, fields) {
        Ok(crate::args::ListOutput::Template(t)) => t,
        other => panic!("not a template: {other:?}"),
    }
}

#[test]
fn service_ls_template_prints_one_line_per_service_without_a_header() {
    use crate::args::format::SERVICE_FIELDS;
    let rows = service_rows(&summaries(&services(), &tasks(), &nodes()));
    let text = template_rows(&template("{{.Name}} {{.Replicas}}", SERVICE_FIELDS), SERVICE_FIELDS, &rows);
    assert_eq!(text, "agent-x 1/2\napi 1/2\nweb 2/3 (max 2 per node)\n");
    let text = template_rows(&template(r"{{.ID}}:{{.Mode}}\n", SERVICE_FIELDS), SERVICE_FIELDS, &rows[..1]);
    assert_eq!(text, "g0g0g0g0g0g0:global\n\n", "\\n is a newline, as in docker");
}

#[test]
fn table_templates_print_a_header_and_align_tab_separated_cells() {
    use crate::args::format::{NODE_FIELDS, SERVICE_FIELDS};
    let rows = service_rows(&summaries(&services(), &tasks(), &nodes()));
    let text =
        template_rows(&template(r"table {{.Name}}\t{{.Image}}\t{{.Ports}}", SERVICE_FIELDS), SERVICE_FIELDS, &rows);
    assert_eq!(
        text,
        "NAME      IMAGE             PORTS\n\
         agent-x   nginx:1.25\n\
         api       shoal/busybox:2\n\
         web       shoal/busybox:1   *:8080->80/tcp, *:5353->53/udp\n"
    );
    let text = template_rows(
        &template(r"table {{.Hostname}}\t{{.ManagerStatus}}", NODE_FIELDS),
        NODE_FIELDS,
        &node_rows(&nodes()),
    );
    assert_eq!(
        text,
        "HOSTNAME   MANAGER STATUS\nm1         Leader\nm2         Reachable\nm3         Unreachable\nworker-1\n"
    );
    assert_eq!(
        template_rows(&template("table {{.Hostname}}", NODE_FIELDS), NODE_FIELDS, &[]),
        "HOSTNAME\n",
        "no rows: the header alone"
    );
}

#[test]
fn task_templates_use_the_ps_columns() {
    use crate::args::format::TASK_FIELDS;
    let tasks = ps_tasks();
    let selected = select_tasks(&tasks, &[], &names(), &nodes());
    let rows = task_rows(&selected, &names(), &nodes(), &ps_options(false));
    let text =
        template_rows(&template("{{.Name}}|{{.Node}}|{{.DesiredState}}|{{.Error}}", TASK_FIELDS), TASK_FIELDS, &rows);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "web.1|m1|Running|");
    assert_eq!(lines[1], " \\_ web.1|m1|Shutdown|\"task: non-zero exit (1): the …\"");
    assert_eq!(lines[6], "web.10||Running|\"no suitable node (max replica…\"");
}

fn revision(number: u64, image: &str, cause: &str, created_at: u64) -> shoal_types::Revision {
    shoal_types::Revision {
        service_id: "s1".into(),
        number,
        spec_version: number * 10,
        created_at,
        created_by: "admin:a1".into(),
        change_cause: cause.into(),
        spec: std::sync::Arc::new(ServiceSpec::new("web", image)),
    }
}

#[test]
fn revision_history_is_a_table_oldest_first() {
    let now = 10 * 3_600_000;
    let revisions =
        [revision(3, "busybox:1", "", now - 2 * 3_600_000), revision(4, "busybox:2", "deploy\nv2", now - 90_000)];
    assert_eq!(
        revision_table(&revisions, now),
        "REVISION   CREATED              CHANGE-CAUSE   IMAGE\n\
         3          2 hours ago          <none>         busybox:1\n\
         4          About a minute ago   deploy v2      busybox:2\n"
    );
}

#[test]
fn a_revision_in_full_shows_what_changed_from_the_one_before() {
    let before = ServiceSpec::new("web", "busybox:1");
    let shown = revision_detail(&revision(4, "busybox:2", "deploy v2", 0), Some(&before));
    assert!(shown.starts_with("Revision:      4\nCreated:       1970-01-01T00:00:00.000Z\nCreated by:    admin:a1\nChange cause:  deploy v2\nSpec:\n"), "{shown}");
    let changes = shown.split("Changes from the revision before:\n").nth(1).expect("a changes section");
    assert_eq!(changes, "  - \"image\": \"busybox:1\",\n  + \"image\": \"busybox:2\",\n");
    let first = revision_detail(&revision(1, "busybox:1", "", 0), None);
    assert!(first.ends_with("Changes: none (the first revision kept)\n"), "{first}");
}

#[test]
fn line_diff_lists_removed_and_added_lines_in_order() {
    assert_eq!(line_diff("a\nb\nc\n", "a\nc\nd\n"), ["- b", "+ d"]);
    assert!(line_diff("a\nb", "a\nb").is_empty());
    assert_eq!(line_diff("", "x"), ["+ x"]);
}

#[test]
fn a_dry_run_plan_reads_top_to_bottom() {
    let plan = shoal_types::UpdatePlan {
        service: "web".into(),
        spec_changes: vec!["- \"image\": \"a:1\",".into(), "+ \"image\": \"a:2\",".into()],
        tasks: 3,
        out_of_date: vec![
            shoal_types::OutOfDateTask {
                name: "web.1".into(),
                task_id: "t1".into(),
                node: "n1".into(),
                reasons: vec!["image a:1 → a:2".into()],
            },
            shoal_types::OutOfDateTask {
                name: "web.2".into(),
                task_id: "t2".into(),
                node: String::new(),
                reasons: vec!["image a:1 → a:2".into(), "env changed".into()],
            },
        ],
        batches: vec![vec!["web.1".into()], vec!["web.2".into()]],
        parallelism: 1,
        order: shoal_types::UpdateOrder::StopFirst,
        strategy: "rolling, 1 task at a time, stop-first; canary steps 1 (then wait for approval) → 100%".into(),
        step_ends: vec![(0, "step 1/2 (1) reached: waits for `shoal rollout approve`".into())],
        task_start_secs: 0.5,
        estimate_secs: 8.0,
        warnings: vec!["stop-first with 1 replica: …".into()],
    };
    assert_eq!(
        update_plan(&plan),
        "Dry run: nothing was changed. An update of web would:\n\
         \n\
         Spec changes:\n  - \"image\": \"a:1\",\n  + \"image\": \"a:2\",\n\
         \n\
         Out of date: 2 of 3 tasks\n  web.1 on n1: image a:1 → a:2\n  web.2 not placed: image a:1 → a:2; env changed\n\
         \n\
         Strategy: rolling, 1 task at a time, stop-first; canary steps 1 (then wait for approval) → 100%\n\
         \n\
         Batches:\n  1: web.1 (n1)\n     -- step 1/2 (1) reached: waits for `shoal rollout approve`\n  2: web.2\n\
         \n\
         Estimated duration: about 8 s (2 batches × (0.5 s to start a task + the update delay), then the monitor window)\n\
         \n\
         Warnings:\n  - stop-first with 1 replica: …\n"
    );
}

#[test]
fn a_rollout_reads_as_a_timeline() {
    let config = shoal_types::UpdateConfig { monitor: shoal_types::GoDuration::from_secs(5), ..Default::default() };
    let slot = shoal_types::RolloutSlot {
        name: "web.1".into(),
        new_task: "new1".into(),
        node: "n1".into(),
        old_tasks: vec!["old1".into()],
        stop_requested_at: Some(1_000),
        stopped_at: Some(1_300),
        started_at: Some(1_400),
        running_at: Some(1_600),
        failure: None,
        failed_at: None,
    };
    let failed = shoal_types::RolloutSlot {
        name: "web.2".into(),
        new_task: "new2".into(),
        failure: Some("failed: boom".into()),
        failed_at: Some(2_000),
        ..Default::default()
    };
    let rollout = shoal_types::Rollout {
        id: "web-2".into(),
        service_id: "s1".into(),
        service_name: "web".into(),
        kind: shoal_types::RolloutKind::Update,
        from_revision: 1,
        to_revision: 2,
        spec_version: 9,
        config,
        state: shoal_types::RolloutState::Paused,
        message: "update paused due to failure or early termination of task new2".into(),
        started_by: "admin:a1".into(),
        started_at: 1_000,
        finished_at: None,
        events: vec![],
        batches: vec![shoal_types::RolloutBatch { number: 1, index: 5, started_at: 1_000, slots: vec![slot, failed] }],
        unrecorded_slots: 0,
        group: String::new(),
    };
    let shown = rollout_detail(&rollout, &[]);
    assert!(shown.contains("Kind:      update (revision 1 → 2)\nState:     paused (update paused due to"), "{shown}");
    let rows: Vec<&str> = shown.lines().skip_while(|l| !l.starts_with("BATCH")).collect();
    assert!(
        rows[0].starts_with("BATCH") && rows[0].contains("OLD TOLD TO STOP") && rows[0].ends_with("RESULT"),
        "{shown}"
    );
    let cells = |row: &str| row.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(
        cells(rows[1]),
        ["1", "web.1", "n1", "new1", "+0.0s", "+0.3s", "+0.0s", "+0.6s", "+5.6s", "(removed)", "ok"]
    );
    assert_eq!(
        cells(rows[2])[..],
        ["1", "web.2", "new2", "-", "-", "+0.0s", "-", "-", "(removed)", "failed:", "boom"][..],
        "{shown}"
    );
}
