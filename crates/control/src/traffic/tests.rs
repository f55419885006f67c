//! The ingress table over a store without raft: which tasks are backends, when a task that left
//! counts as drained, and that a change refreshes only what it touched.

use shoal_store::{Action, Batch};
use shoal_types::{PortConfig, ServiceSpec, TaskPort};

use super::*;
use crate::testing::{task, worker};

struct World {
    state: State,
    index: u64,
    table: TrafficTable,
}

impl World {
    /// Nodes n1 and n2 and service `web` publishing 8080 → 80.
    fn new() -> World {
        let mut w = World { state: State::default(), index: 0, table: TrafficTable::default() };
        let mut spec = ServiceSpec::new("web", "shoal/web:1");
        spec.endpoint.ports = vec![PortConfig { target: 80, published: 8080, ..PortConfig::default() }];
        let mut n2 = worker("n2");
        n2.description.ingress_addr = "127.0.0.2".into();
        w.apply(vec![
            Action::PutNode { node: worker("n1") },
            Action::PutNode { node: n2 },
            Action::CreateService { id: "web".into(), spec },
        ]);
        w
    }

    fn apply(&mut self, actions: Vec<Action>) {
        self.index += 1;
        let changes = self.state.apply(self.index, &Batch::new(1_000, actions)).expect("applies");
        // As the dispatcher's loop does: a change that names no services refreshes them all.
        let touched: Option<Vec<String>> = changes.iter().map(touched_services).try_fold(Vec::new(), |mut all, ids| {
            all.extend(ids?);
            Some(all)
        });
        match touched {
            Some(ids) => self.table.refresh(&self.state, ids.iter().map(String::as_str)),
            None => self.table.refresh_all(&self.state),
        };
    }

    /// A task of `web` on `node`, observed `state`, answering at host port `host_port`.
    fn put(&mut self, id: &str, node: &str, state: TaskState, host_port: u16) {
        let mut t = task(id, "web", node, state);
        t.endpoint.ports = vec![PortConfig { target: 80, published: 8080, ..PortConfig::default() }];
        t.status.ports = vec![TaskPort { target: 80, host_port, container_ip: format!("172.17.0.{host_port}") }];
        self.apply(vec![Action::PutTask { task: t }]);
    }

    fn backends(&self) -> Vec<String> {
        self.table.published(8080).map(|l| l.backends.iter().map(|b| b.task_id.clone()).collect()).unwrap_or_default()
    }

    fn set_state(&mut self, id: &str, state: TaskState) {
        let mut status = self.state.task(id).expect("task").status.clone();
        status.state = state;
        self.apply(vec![Action::SetTaskStatus { id: id.into(), status }]);
    }
}

#[test]
fn only_running_tasks_told_to_run_with_reported_ports_are_backends() {
    let mut w = World::new();
    w.put("a", "n1", TaskState::Running, 31);
    w.put("b", "n2", TaskState::Running, 32);
    w.put("c", "n1", TaskState::Starting, 33);
    let mut no_ports = task("d", "web", "n1", TaskState::Running);
    no_ports.endpoint = w.state.task("a").expect("a").endpoint.clone();
    w.apply(vec![Action::PutTask { task: no_ports }]);
    assert_eq!(w.backends(), ["a", "b"]);
    let listener = &w.table.published(8080).unwrap();
    // n1 has no ingress address: the address the leader sees it at; n2 its own.
    assert_eq!(listener.backends[0].remote, "127.0.0.1:31");
    assert_eq!(listener.backends[1].remote, "127.0.0.2:32");
    assert_eq!(listener.backends[0].local, "172.17.0.31:80");
    assert_eq!(listener.backends[0].address_from("n1"), "172.17.0.31:80");
    assert_eq!(listener.backends[0].address_from("n2"), "127.0.0.1:31");
}

#[test]
fn a_task_told_to_stop_leaves_at_once_and_drains_once_every_node_reported_none() {
    let mut w = World::new();
    w.put("a", "n1", TaskState::Running, 31);
    w.put("b", "n2", TaskState::Running, 32);
    let before = w.table.version();
    // Both nodes' proxies use the table and hold a connection to `a` (from n2).
    w.table.report("n1", 1, before, HashMap::new());
    w.table.report("n2", 2, before, HashMap::from([("a".to_string(), 1)]));
    w.apply(vec![Action::SetDesiredState { id: "a".into(), desired: TaskState::Shutdown }]);
    assert_eq!(w.backends(), ["b"], "gone from the table in the entry that told it to stop");
    let left = w.table.version();
    assert!(left > before);
    w.set_state("a", TaskState::Draining);
    assert!(w.table.drained("n1").is_empty(), "n2 still holds a connection");
    // n2 applied the new table but its connection is still open.
    w.table.report("n2", 2, left, HashMap::from([("a".to_string(), 1)]));
    assert!(w.table.drained("n1").is_empty());
    w.table.report("n2", 2, left, HashMap::new());
    assert!(w.table.drained("n1").is_empty(), "n1 has not reported the table without `a` yet");
    w.table.report("n1", 1, left, HashMap::new());
    assert_eq!(w.table.drained("n1"), ["a"]);
    assert!(w.table.drained("n2").is_empty(), "only the task's own node is told");
}

#[test]
fn a_proxy_node_without_a_current_report_holds_the_drain_up_until_it_reports_or_goes_down() {
    let mut w = World::new();
    w.put("a", "n1", TaskState::Running, 31);
    // n2 runs a proxy (it has an ingress address); n1 does not.
    w.table.report("n2", 5, w.table.version(), HashMap::from([("a".to_string(), 3)]));
    w.apply(vec![Action::SetDesiredState { id: "a".into(), desired: TaskState::Shutdown }]);
    w.set_state("a", TaskState::Draining);
    let v = w.table.version();
    // A report from n2's older stream is ignored; its current one still counts 3.
    w.table.report("n2", 4, v, HashMap::new());
    assert_eq!(w.table.connections("a"), 3);
    assert!(w.table.drained("n1").is_empty());
    // n2's stream ends (its agent reconnects, or a new leader took over): its proxy and its
    // connections live on, so the drain waits for its next report.
    w.table.stream_ended("n2", 5);
    assert!(w.table.drained("n1").is_empty(), "a ready proxy node that has not reported holds it up");
    // Its new stream's first report (nothing applied from this manager yet) does not count.
    w.table.report("n2", 6, 0, HashMap::new());
    assert!(w.table.drained("n1").is_empty());
    w.table.report("n2", 6, v, HashMap::new());
    assert_eq!(w.table.drained("n1"), ["a"]);

    // A node that is down holds nothing up.
    w.put("b", "n1", TaskState::Running, 32);
    w.apply(vec![Action::SetDesiredState { id: "b".into(), desired: TaskState::Shutdown }]);
    w.set_state("b", TaskState::Draining);
    w.table.stream_ended("n2", 6);
    assert!(w.table.drained("n1").is_empty(), "a and b wait for n2");
    let mut n2 = w.state.node("n2").expect("n2").clone();
    n2.status.state = NodeState::Down;
    w.apply(vec![Action::PutNode { node: n2 }]);
    assert_eq!(w.table.drained("n1"), ["a", "b"]);
}

#[test]
fn a_task_this_manager_never_saw_leave_drains_only_after_a_table_of_its_own_was_applied() {
    let mut w = World::new();
    // Draining already when this manager's table was built (e.g. a new leader).
    w.put("a", "n1", TaskState::Draining, 31);
    let mut a = w.state.task("a").expect("a").clone();
    a.desired_state = TaskState::Shutdown;
    w.apply(vec![Action::PutTask { task: a }]);
    w.table.report("n2", 1, 0, HashMap::new());
    assert!(w.table.drained("n1").is_empty(), "version 0: n2 applied nothing from this manager yet");
    w.table.report("n2", 1, w.table.version(), HashMap::new());
    assert_eq!(w.table.drained("n1"), ["a"]);
}

#[test]
fn a_port_that_moves_to_another_service_in_one_batch_stays_open_for_the_new_one() {
    let mut w = World::new();
    w.put("a", "n1", TaskState::Running, 31);
    // `web` stops publishing 8080 and `api` (whose id sorts first) takes it, in one entry.
    let mut web = w.state.service("web").expect("web").spec.clone();
    web.endpoint.ports.clear();
    let mut api = ServiceSpec::new("api", "shoal/web:2");
    api.endpoint.ports = vec![PortConfig { target: 80, published: 8080, ..PortConfig::default() }];
    let version = w.state.service("web").expect("web").version;
    w.apply(vec![
        Action::UpdateService { id: "web".into(), expected_version: version, spec: web },
        Action::CreateService { id: "a-api".into(), spec: api },
    ]);
    let mut t = task("x", "a-api", "n2", TaskState::Running);
    t.endpoint.ports = vec![PortConfig { target: 80, published: 8080, ..PortConfig::default() }];
    t.status.ports = vec![TaskPort { target: 80, host_port: 40, container_ip: String::new() }];
    w.apply(vec![Action::PutTask { task: t }]);
    w.table.refresh_all(&w.state);
    let listener = &w.table.published(8080).unwrap();
    assert_eq!(listener.service, "api");
    assert_eq!(w.backends(), ["x"]);
}

#[test]
fn the_version_moves_only_when_a_listener_changes_and_removing_the_service_closes_its_port() {
    let mut w = World::new();
    w.put("a", "n1", TaskState::Running, 31);
    let v = w.table.version();
    // A status change that keeps the backend set (same state, new message) is no new table.
    let mut status = w.state.task("a").expect("a").status.clone();
    status.message = "still running".into();
    w.apply(vec![Action::SetTaskStatus { id: "a".into(), status }]);
    assert_eq!(w.table.version(), v);
    w.apply(vec![Action::RemoveService { id: "web".into() }]);
    assert!(w.table.listeners().is_empty());
    assert!(w.table.version() > v);
}

#[test]
fn a_node_that_is_down_takes_no_connections() {
    let mut w = World::new();
    w.put("a", "n1", TaskState::Running, 31);
    w.put("b", "n2", TaskState::Running, 32);
    let mut n2 = w.state.node("n2").expect("n2").clone();
    n2.status.state = NodeState::Down;
    // A node change touches every service.
    w.apply(vec![Action::PutNode { node: n2 }]);
    assert_eq!(w.backends(), ["a"]);
}

#[test]
fn a_route_weighs_tasks_equally_or_by_the_services_shares() {
    use shoal_types::traffic::{Route, RouteSpec};
    let mut w = World::new();
    let labelled = |name: &str| {
        let mut spec = ServiceSpec::new(name, "shoal/web:1");
        spec.labels.insert("app".into(), "web".into());
        spec.endpoint.ports = vec![PortConfig { target: 80, published: 0, ..PortConfig::default() }];
        spec
    };
    w.apply(vec![
        Action::CreateService { id: "s-main".into(), spec: labelled("main") },
        Action::CreateService { id: "s-canary".into(), spec: labelled("canary") },
    ]);
    for (id, service, port) in
        [("m1", "s-main", 41), ("m2", "s-main", 42), ("m3", "s-main", 43), ("c1", "s-canary", 44)]
    {
        let mut t = task(id, service, "n1", TaskState::Running);
        t.endpoint.ports = vec![PortConfig { target: 80, published: 0, ..PortConfig::default() }];
        t.status.ports = vec![TaskPort { target: 80, host_port: port, container_ip: String::new() }];
        w.apply(vec![Action::PutTask { task: t }]);
    }
    let spec = RouteSpec {
        name: "front".into(),
        port: 9000,
        target: 80,
        selector: [("app".to_string(), "web".to_string())].into(),
        ..RouteSpec::default()
    };
    w.apply(vec![Action::CreateRoute { route: Route { id: "r1".into(), spec: spec.clone(), ..Route::default() } }]);
    let weights = |w: &World| -> Vec<(String, u32)> {
        w.table.published(9000).unwrap().backends.iter().map(|b| (b.task_id.clone(), b.weight)).collect()
    };
    // By task count: every task the same.
    assert_eq!(weights(&w), [("c1".into(), 1), ("m1".into(), 1), ("m2".into(), 1), ("m3".into(), 1)]);
    // main 99%: canary (not named) gets the 1% left, not 0.
    let version = w.state.route("r1").expect("r1").version;
    let mostly_main = RouteSpec { weights: [("main".to_string(), 99)].into(), ..spec.clone() };
    w.apply(vec![Action::UpdateRoute { id: "r1".into(), expected_version: version, spec: mostly_main }]);
    assert_eq!(weights(&w)[0], ("c1".into(), WEIGHT_UNITS));
    // canary 40%: its one task 40%; main (not named) gets the other 60%, 20% per task.
    let version = w.state.route("r1").expect("r1").version;
    let weighted = RouteSpec { weights: [("canary".to_string(), 40)].into(), ..spec };
    w.apply(vec![Action::UpdateRoute { id: "r1".into(), expected_version: version, spec: weighted }]);
    assert_eq!(
        weights(&w),
        [("c1".into(), 400_000), ("m1".into(), 200_000), ("m2".into(), 200_000), ("m3".into(), 200_000)]
    );
    // A task of a selected service that stops leaves the route's listener too (and is drained).
    w.apply(vec![Action::SetDesiredState { id: "m1".into(), desired: TaskState::Shutdown }]);
    assert!(!weights(&w).iter().any(|(t, _)| t == "m1"));
    w.apply(vec![Action::RemoveRoute { id: "r1".into() }]);
    assert!(!w.table.listeners().contains_key(&shoal_types::traffic::ListenerKey::published(9000)));
}

#[test]
fn shares_left_to_several_services_do_not_round_to_nothing_and_a_step_share_shapes_versions() {
    let backend = |task: &str| Backend {
        task_id: task.into(),
        node_id: "n1".into(),
        remote: "127.0.0.1:1".into(),
        local: String::new(),
        weight: 1,
    };
    // A step's 5% for the one new task, 95% for the three old ones.
    let mut backends = vec![backend("new"), backend("o1"), backend("o2"), backend("o3")];
    shape(&mut backends, 5, |t| t == "new");
    let weights: Vec<u32> = backends.iter().map(|b| b.weight).collect();
    assert_eq!(weights, [5 * WEIGHT_UNITS, 95 * WEIGHT_UNITS / 3, 95 * WEIGHT_UNITS / 3, 95 * WEIGHT_UNITS / 3]);
    // An absurd share is held at 100% (the spec's validation refuses it first).
    let mut backends = vec![backend("new"), backend("old")];
    shape(&mut backends, 200, |t| t == "new");
    assert_eq!(backends[1].weight, 0);
    // Only one version present: weights stay equal.
    let mut backends = vec![backend("o1"), backend("o2")];
    shape(&mut backends, 5, |_| false);
    assert!(backends.iter().all(|b| b.weight == 1));
}

/// A service on a network is reached at its virtual IP on each target port its running tasks
/// reported (published or not), with the same backends a published port has; a service off
/// every network has no such listener, and a task told to stop leaves it at once.
#[test]
fn a_service_on_a_network_listens_on_its_virtual_ip_for_each_reported_target_port() {
    let mut w = World::new();
    let network = shoal_types::DataObject {
        id: "n".into(),
        kind: shoal_types::DataKind::Network,
        version: 0,
        created_at: 0,
        updated_at: 0,
        spec: shoal_types::DataSpec { name: "net".into(), labels: Default::default(), data: Vec::new() },
        size: 0,
    };
    let mut db = ServiceSpec::new("db", "shoal/web:1");
    db.task.networks = vec!["net".into()];
    w.apply(vec![Action::CreateData { object: network }, Action::CreateService { id: "db".into(), spec: db }]);
    let vip = w.state.service("db").expect("db").virtual_ip.clone();
    assert!(!vip.is_empty());
    // Its task reports 5432 (from its image) and 9100; web, off every network, has none.
    let mut t = task("d1", "db", "n2", TaskState::Running);
    t.status.ports = vec![
        TaskPort { target: 5432, host_port: 41, container_ip: "172.17.0.41".into() },
        TaskPort { target: 9100, host_port: 42, container_ip: "172.17.0.41".into() },
    ];
    w.apply(vec![Action::PutTask { task: t }]);
    w.put("a", "n1", TaskState::Running, 31);
    let keys: Vec<ListenerKey> = w.table.listeners().keys().cloned().collect();
    let on_vip = |port| ListenerKey { address: vip.clone(), port };
    assert_eq!(keys, [ListenerKey::published(8080), on_vip(5432), on_vip(9100)]);
    let listener = &w.table.listeners()[&on_vip(5432)];
    assert_eq!(listener.service, "db");
    assert_eq!(listener.backends.len(), 1);
    assert_eq!(listener.backends[0].remote, "127.0.0.2:41");
    assert_eq!(listener.backends[0].address_from("n2"), "172.17.0.41:5432");
    // Told to stop: it leaves the listeners in the same entry; they stay open once it ended
    // (an ended task reports no ports).
    w.apply(vec![Action::SetDesiredState { id: "d1".into(), desired: TaskState::Shutdown }]);
    assert!(w.table.listeners()[&on_vip(5432)].backends.is_empty());
    let mut status = w.state.task("d1").expect("d1").status.clone();
    status.state = TaskState::Shutdown;
    status.ports.clear();
    w.apply(vec![Action::SetTaskStatus { id: "d1".into(), status }]);
    assert!(w.table.listeners().contains_key(&on_vip(5432)) && w.table.listeners().contains_key(&on_vip(9100)));
    // Off its networks, its listeners go.
    let version = w.state.service("db").expect("db").version;
    w.apply(vec![Action::UpdateService {
        id: "db".into(),
        expected_version: version,
        spec: ServiceSpec::new("db", "shoal/web:2"),
    }]);
    assert_eq!(w.table.listeners().keys().cloned().collect::<Vec<_>>(), [ListenerKey::published(8080)]);
}
