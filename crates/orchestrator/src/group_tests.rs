//! Group rollouts through the orchestrator: members that wait for their dependencies start no
//! task, complete once their tasks have run for the monitor window, and a group out of time
//! rolls back as a whole. Every pass here is the incremental one, checked against a full pass.

use shoal_store::Action;
use shoal_types::stack::{GroupPlan, GroupState, MemberState, NAMESPACE_LABEL};
use shoal_types::*;

use crate::tests::World;

fn spec(name: &str) -> ServiceSpec {
    let mut s = ServiceSpec::new(format!("app_{name}"), "shoal/busybox:1");
    s.mode = ServiceMode::Replicated { replicas: 2 };
    s.labels.insert(NAMESPACE_LABEL.into(), "app".into());
    s.update_config.monitor = GoDuration::from_secs(1);
    s
}

fn deploy(w: &mut World, timeout_ms: u64, deps: &[(&str, &[&str])]) {
    let mut actions: Vec<Action> =
        ["db", "web"].iter().map(|n| Action::CreateService { id: format!("svc-{n}"), spec: spec(n) }).collect();
    let depends_on =
        deps.iter().map(|(k, v)| (format!("app_{k}"), v.iter().map(|d| format!("app_{d}")).collect())).collect();
    actions.push(Action::RecordStack {
        stack: "app".into(),
        expected_revision: 0,
        digest: String::new(),
        removed: Vec::new(),
        group: Some(GroupPlan { atomic: true, timeout_ms, depends_on }),
    });
    w.apply(actions);
}

fn member(w: &World, name: &str) -> MemberState {
    let group = w.state.stack_revisions("app")[0].rollout.clone().expect("group");
    group.members.iter().find(|m| m.name == format!("app_{name}")).expect("member").state
}

#[test]
fn a_member_starts_only_once_its_dependency_completed() {
    let mut w = World::new(&["n1", "n2"]);
    deploy(&mut w, 0, &[("web", &["db"])]);
    w.settle();
    assert_eq!(w.tasks("svc-db").len(), 2);
    assert!(w.tasks("svc-web").is_empty(), "web waits for db: no task yet");
    w.run_all();
    w.settle();
    assert_eq!(member(&w, "db"), MemberState::Updating, "running, but not for the monitor window yet");
    w.now += 1_000;
    w.settle();
    assert_eq!(member(&w, "db"), MemberState::Completed);
    assert_eq!(member(&w, "web"), MemberState::Updating);
    assert_eq!(w.tasks("svc-web").len(), 2, "released: web's tasks are created");
    w.run_all();
    w.now += 1_000;
    w.settle();
    let group = w.state.stack_revisions("app")[0].rollout.clone().unwrap();
    assert_eq!(group.state, GroupState::Completed);
    assert!(w.state.services().all(|s| s.group.is_none()));
}

#[test]
fn a_member_whose_change_replaces_no_task_completes_once_its_tasks_run() {
    let mut w = World::new(&["n1", "n2"]);
    deploy(&mut w, 0, &[]);
    w.settle();
    w.run_all();
    w.now += 1_000;
    w.settle();
    assert_eq!(w.state.stack_revisions("app")[0].rollout.as_ref().unwrap().state, GroupState::Completed);
    // An atomic redeploy that only scales db up (and web to zero): no task is out of date.
    let db = w.state.service("svc-db").unwrap().clone();
    let web = w.state.service("svc-web").unwrap().clone();
    let mut more = db.spec.clone();
    more.mode = ServiceMode::Replicated { replicas: 3 };
    let mut none = web.spec.clone();
    none.mode = ServiceMode::Replicated { replicas: 0 };
    w.apply(vec![
        Action::UpdateService { id: db.id.clone(), expected_version: db.version, spec: more },
        Action::UpdateService { id: web.id.clone(), expected_version: web.version, spec: none },
        Action::RecordStack {
            stack: "app".into(),
            expected_revision: 1,
            digest: String::new(),
            removed: Vec::new(),
            group: Some(GroupPlan { atomic: true, timeout_ms: 60_000, depends_on: Default::default() }),
        },
    ]);
    w.settle();
    w.run_all();
    w.now += 1_000;
    w.settle();
    let group = w.state.stack_revisions("app")[1].rollout.clone().unwrap();
    assert_eq!(group.state, GroupState::Completed, "{group:?}");
    assert_eq!(w.runnable("svc-db").len(), 3);
}

#[test]
fn a_group_out_of_time_is_rolled_back_whole() {
    // No node: nothing can run.
    let mut w = World::new(&[]);
    deploy(&mut w, 10_000, &[("web", &["db"])]);
    w.settle();
    assert_eq!(member(&w, "web"), MemberState::Waiting);
    w.now += 10_000;
    w.settle();
    let group = w.state.stack_revisions("app")[0].rollout.clone().unwrap();
    assert_eq!(group.state, GroupState::RollbackCompleted, "{group:?}");
    assert!(group.message.contains("did not complete within its timeout (10s)"), "{}", group.message);
    assert!(w.state.service("svc-db").is_none() && w.state.service("svc-web").is_none(), "created members go");
}

#[test]
fn a_failing_task_of_a_created_member_fails_the_group() {
    let mut w = World::new(&["n1"]);
    deploy(&mut w, 0, &[]);
    w.settle();
    w.run_all();
    let task = w.tasks("svc-web")[0].id.clone();
    w.set_status(&task, TaskState::Failed);
    w.settle();
    let group = w.state.stack_revisions("app")[0].rollout.clone().unwrap();
    assert_eq!(group.state, GroupState::RollbackCompleted, "{group:?}");
    assert_eq!((group.failed_service.as_str(), group.failed_task.as_str()), ("app_web", task.as_str()));
}

#[test]
fn a_rollback_that_cannot_finish_ends_the_group_failed_in_time() {
    let mut w = World::new(&["n1"]);
    deploy(&mut w, 0, &[]);
    w.settle();
    w.run_all();
    w.now += 1_000;
    w.settle();
    // An atomic update whose new tasks never run (the node is drained): out of time after 10 s.
    let db = w.state.service("svc-db").unwrap().clone();
    let mut next = db.spec.clone();
    next.task.container.image = "shoal/busybox:2".into();
    w.apply(vec![
        Action::UpdateService { id: db.id.clone(), expected_version: db.version, spec: next },
        Action::RecordStack {
            stack: "app".into(),
            expected_revision: 1,
            digest: String::new(),
            removed: Vec::new(),
            group: Some(GroupPlan { atomic: true, timeout_ms: 10_000, depends_on: Default::default() }),
        },
    ]);
    w.node_update("n1", |n| n.spec.availability = Availability::Drain);
    w.settle();
    w.now += 10_000;
    w.settle();
    let group = w.state.stack_revisions("app")[1].rollout.clone().unwrap();
    assert_eq!(group.state, GroupState::RollbackStarted, "{group:?}");
    assert_eq!(w.state.service("svc-db").unwrap().spec.task.container.image, "shoal/busybox:1");
    // The rollback cannot place its tasks either: as long again, then the group ends failed.
    w.now += 10_000;
    w.settle();
    let group = w.state.stack_revisions("app")[1].rollout.clone().unwrap();
    assert_eq!(group.state, GroupState::Failed, "{group:?}");
    assert!(group.message.contains("the rollback of app_db did not complete"), "{}", group.message);
    assert!(w.state.services().all(|s| s.group.is_none()));
}
