use shoal_types::{Node, TaskState};

use super::*;
use crate::testing::task;

fn change(kind: ChangeKind, index: u64, task: Task) -> Arc<Change> {
    Arc::new(Change { kind, index, at: 0, object: Object::Task(task) })
}

fn put(index: u64, id: &str, node: &str) -> Arc<Change> {
    change(ChangeKind::Update, index, task(id, "web", node, TaskState::Assigned))
}

fn node_change(kind: ChangeKind, index: u64, id: &str) -> Arc<Change> {
    let node = Node {
        id: id.into(),
        version: index,
        created_at: 0,
        updated_at: 0,
        spec: Default::default(),
        description: Default::default(),
        status: Default::default(),
        manager: None,
    };
    Arc::new(Change { kind, index, at: 0, object: Object::Node(node) })
}

/// The pending task changes as (task id, node id, index), oldest first.
fn pending(sub: &Subscription) -> Vec<(String, String, u64)> {
    match sub.take(usize::MAX) {
        Taken::Changes { tasks, .. } => tasks
            .iter()
            .map(|c| match &c.object {
                Object::Task(t) => (t.id.clone(), t.node_id.clone(), c.index),
                other => panic!("not a task: {other:?}"),
            })
            .collect(),
        Taken::Resync => panic!("unexpected resync"),
    }
}

fn owned(rows: &[(&str, &str, u64)]) -> Vec<(String, String, u64)> {
    rows.iter().map(|(t, n, i)| (t.to_string(), n.to_string(), *i)).collect()
}

#[test]
fn a_session_gets_its_own_nodes_changes_only() {
    let router = Arc::new(ChangeRouter::default());
    let a = router.subscribe("a", []);
    let b = router.subscribe("b", []);
    router.route(&[put(1, "t1", "a"), put(1, "t2", "b"), put(1, "t3", ""), put(1, "t4", "c")]);
    assert_eq!(pending(&a), owned(&[("t1", "a", 1)]));
    assert_eq!(pending(&b), owned(&[("t2", "b", 1)]));
    assert_eq!((a.routed(), b.routed()), (1, 1));
}

#[test]
fn ten_thousand_changes_for_other_nodes_never_reach_a_session() {
    let router = Arc::new(ChangeRouter::with_limit(100));
    let a = router.subscribe("a", []);
    let b = router.subscribe("b", []);
    let burst: Vec<Arc<Change>> = (0..10_000).map(|i| put(2, &format!("b{i}"), "b")).collect();
    router.route(&burst);
    assert_eq!(a.routed(), 0);
    assert!(a.take(usize::MAX).is_empty());
    // The node the burst was for fell behind its limit: it alone reads its tasks afresh.
    assert!(matches!(b.take(usize::MAX), Taken::Resync));
    router.route(&[put(3, "a1", "a")]);
    assert_eq!(pending(&a), owned(&[("a1", "a", 3)]));
}

#[test]
fn a_later_change_of_a_task_replaces_the_queued_one_in_its_place() {
    let router = Arc::new(ChangeRouter::default());
    let a = router.subscribe("a", []);
    let mut shutdown = task("t1", "web", "a", TaskState::Running);
    shutdown.desired_state = TaskState::Shutdown;
    router.route(&[put(1, "t1", "a"), put(2, "t2", "a")]);
    router.route(&[change(ChangeKind::Update, 3, shutdown)]);
    let Taken::Changes { tasks, node: None } = a.take(usize::MAX) else { panic!("expected task changes") };
    assert_eq!(tasks.len(), 2);
    let Object::Task(first) = &tasks[0].object else { panic!() };
    assert_eq!((first.id.as_str(), first.desired_state, tasks[0].index), ("t1", TaskState::Shutdown, 3));
    assert_eq!(tasks[1].index, 2);
}

#[test]
fn changes_are_taken_oldest_first_at_most_max_at_a_time() {
    let router = Arc::new(ChangeRouter::default());
    let a = router.subscribe("a", []);
    router.route(&[put(1, "t3", "a"), put(2, "t1", "a"), put(3, "t2", "a")]);
    let Taken::Changes { tasks, .. } = a.take(2) else { panic!("expected task changes") };
    assert_eq!(tasks.iter().map(|c| c.index).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(pending(&a), owned(&[("t2", "a", 3)]));
    assert!(a.take(2).is_empty());
}

#[test]
fn a_task_moved_to_another_node_reaches_the_node_it_left() {
    let router = Arc::new(ChangeRouter::default());
    // t1 was in a's complete set; t2 was routed to a later.
    let a = router.subscribe("a", ["t1"]);
    let b = router.subscribe("b", []);
    router.route(&[put(2, "t2", "a")]);
    assert_eq!(pending(&a).len(), 1);
    router.route(&[put(3, "t1", "b"), put(3, "t2", "c")]);
    assert_eq!(pending(&a), owned(&[("t1", "b", 3), ("t2", "c", 3)]));
    assert_eq!(pending(&b), owned(&[("t1", "b", 3)]));
    // From then on the tasks are no concern of a's.
    router.route(&[put(4, "t1", "b"), put(4, "t2", "c")]);
    assert!(a.take(usize::MAX).is_empty());
    assert_eq!(pending(&b), owned(&[("t1", "b", 4)]));
}

#[test]
fn a_removal_reaches_the_node_that_had_the_task() {
    let router = Arc::new(ChangeRouter::default());
    let a = router.subscribe("a", ["t1"]);
    router.route(&[change(ChangeKind::Remove, 2, task("t1", "web", "a", TaskState::Shutdown))]);
    let Taken::Changes { tasks, .. } = a.take(usize::MAX) else { panic!("expected task changes") };
    assert_eq!((tasks.len(), tasks[0].kind), (1, ChangeKind::Remove));
    assert!(router.routes.lock().owners.is_empty(), "a removed task is forgotten");
}

#[test]
fn a_session_past_its_limit_resyncs_alone_and_then_queues_again() {
    let router = Arc::new(ChangeRouter::with_limit(4));
    let a = router.subscribe("a", []);
    let b = router.subscribe("b", []);
    let burst: Vec<Arc<Change>> = (0..5).map(|i| put(2, &format!("t{i}"), "a")).collect();
    router.route(&burst);
    router.route(&[put(3, "b1", "b"), put(3, "t0", "a"), node_change(ChangeKind::Update, 3, "a")]);
    assert!(matches!(a.take(usize::MAX), Taken::Resync));
    assert_eq!(pending(&b), owned(&[("b1", "b", 3)]));
    // What arrived before the resync was taken is in the state it reads; only later changes queue.
    assert!(a.take(usize::MAX).is_empty());
    router.route(&[put(4, "t1", "a")]);
    assert_eq!(pending(&a), owned(&[("t1", "a", 4)]));
    // The same task changing again and again never counts twice against the limit.
    for index in 5..20 {
        router.route(&[put(index, "t1", "a")]);
    }
    assert_eq!(pending(&a), owned(&[("t1", "a", 19)]));
}

#[test]
fn only_the_latest_change_of_a_node_reaches_it() {
    let router = Arc::new(ChangeRouter::default());
    let a = router.subscribe("a", []);
    router.route(&[node_change(ChangeKind::Update, 1, "a"), node_change(ChangeKind::Update, 1, "b")]);
    router.route(&[node_change(ChangeKind::Remove, 2, "a")]);
    let Taken::Changes { tasks, node: Some(node) } = a.take(usize::MAX) else { panic!("expected the node") };
    assert!(tasks.is_empty());
    assert_eq!((node.kind, node.index), (ChangeKind::Remove, 2));
}

#[test]
fn every_session_of_a_node_gets_its_changes_until_it_ends() {
    let router = Arc::new(ChangeRouter::default());
    let old = router.subscribe("a", []);
    let new = router.subscribe("a", []);
    router.route(&[put(1, "t1", "a")]);
    assert_eq!(pending(&old), pending(&new));
    drop(old);
    router.route(&[put(2, "t1", "a")]);
    assert_eq!(pending(&new), owned(&[("t1", "a", 2)]));
    drop(new);
    router.route(&[put(3, "t1", "a")]);
    let routes = router.routes.lock();
    assert!(routes.nodes.is_empty() && routes.owners.is_empty(), "nothing kept without sessions");
}

#[test]
fn a_replaced_state_resyncs_every_session() {
    let router = Arc::new(ChangeRouter::default());
    let a = router.subscribe("a", ["t1"]);
    let b = router.subscribe("b", []);
    router.route(&[put(2, "b1", "b")]);
    router.resync_all();
    assert!(matches!(a.take(usize::MAX), Taken::Resync));
    assert!(matches!(b.take(usize::MAX), Taken::Resync));
    // The resync claims the node's tasks again, so a later move still reaches it.
    a.claim(["t1"]);
    router.route(&[put(3, "t1", "b")]);
    assert_eq!(pending(&a), owned(&[("t1", "b", 3)]));
}

#[tokio::test]
async fn a_queued_change_wakes_the_session() {
    let router = Arc::new(ChangeRouter::default());
    let a = router.subscribe("a", []);
    router.route(&[put(1, "t1", "a"), put(1, "t2", "a")]);
    // One wake-up for a burst: the session takes everything then.
    tokio::time::timeout(std::time::Duration::from_secs(10), a.changed()).await.expect("woken");
    assert_eq!(pending(&a).len(), 2);
}
