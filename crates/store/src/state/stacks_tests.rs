//! Stack revisions and group rollouts in the store: a deploy's entry records the revision and
//! starts the group; members complete, wait for their dependencies, fail and roll back as the
//! entries that decide it say.

use shoal_types::stack::{GroupPlan, GroupState, MemberChange, MemberState, NAMESPACE_LABEL};
use shoal_types::{ServiceSpec, UpdateState};

use super::*;

fn spec(stack: &str, name: &str, image: &str) -> ServiceSpec {
    let mut spec = ServiceSpec::new(format!("{stack}_{name}"), image);
    spec.labels.insert(NAMESPACE_LABEL.into(), stack.into());
    spec
}

fn record(stack: &str, expected: u64, group: Option<GroupPlan>) -> Action {
    Action::RecordStack {
        stack: stack.into(),
        expected_revision: expected,
        digest: "d".into(),
        removed: Vec::new(),
        group,
    }
}

fn atomic(deps: &[(&str, &[&str])]) -> Option<GroupPlan> {
    Some(GroupPlan {
        atomic: true,
        timeout_ms: 60_000,
        depends_on: deps.iter().map(|(k, v)| (k.to_string(), v.iter().map(|d| d.to_string()).collect())).collect(),
    })
}

fn apply(state: &mut State, index: u64, actions: Vec<Action>) -> Result<Vec<Change>, StoreError> {
    state.apply(index, &Batch::new(index * 10, actions))
}

fn member_state(state: &State, stack: &str, revision: u64, name: &str) -> MemberState {
    let group = state.group(&GroupRef { stack: stack.into(), revision, waiting: false }).expect("group");
    group.members.iter().find(|m| m.name == name).expect("member").state
}

fn set(stack: &str, revision: u64, id: &str, state: MemberState) -> Action {
    Action::SetGroupMember { stack: stack.into(), revision, service_id: id.into(), state }
}

#[test]
fn a_deploy_records_a_revision_and_a_moved_stack_refuses_the_whole_entry() {
    let mut state = State::default();
    apply(
        &mut state,
        1,
        vec![
            Action::CreateService { id: "w".into(), spec: spec("app", "web", "busybox:1") },
            Action::CreateService { id: "d".into(), spec: spec("app", "db", "busybox:1") },
            record("app", 0, None),
        ],
    )
    .unwrap();
    let kept = state.stack_revisions("app");
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].changed(), ["app_db", "app_web"]);
    assert!(kept[0].services.iter().all(|s| s.change == MemberChange::Created && s.spec.is_some()));

    // A deploy planned on revision 0 comes second: nothing of it is written.
    let stale = vec![
        Action::UpdateService { id: "w".into(), expected_version: 1, spec: spec("app", "web", "busybox:2") },
        Action::CreateService { id: "x".into(), spec: spec("app", "extra", "busybox:1") },
        record("app", 0, None),
    ];
    let err = apply(&mut state, 2, stale).unwrap_err();
    assert!(matches!(err, StoreError::StackMoved { current: 1, expected: 0, .. }), "{err}");
    assert!(state.service("x").is_none());
    assert_eq!(state.service("w").unwrap().spec.task.container.image, "busybox:1");
    assert_eq!(state.stack_revisions("app").len(), 1);

    apply(
        &mut state,
        3,
        vec![
            Action::UpdateService { id: "w".into(), expected_version: 1, spec: spec("app", "web", "busybox:2") },
            record("app", 1, None),
        ],
    )
    .unwrap();
    let newest = state.stack_revisions("app").last().unwrap().clone();
    assert_eq!(newest.number, 2);
    assert_eq!(newest.changed(), ["app_web"]);
    assert_eq!(newest.services.iter().find(|s| s.name == "app_web").unwrap().revision, 2);
}

#[test]
fn members_wait_for_their_dependencies_and_the_group_completes_when_all_have() {
    let mut state = State::default();
    apply(
        &mut state,
        1,
        vec![
            Action::CreateService { id: "db".into(), spec: spec("app", "db", "busybox:1") },
            Action::CreateService { id: "api".into(), spec: spec("app", "api", "busybox:1") },
            Action::CreateService { id: "web".into(), spec: spec("app", "web", "busybox:1") },
            record("app", 0, atomic(&[("app_api", &["app_db"]), ("app_web", &["app_api", "app_db"])])),
        ],
    )
    .unwrap();
    assert_eq!(member_state(&state, "app", 1, "app_db"), MemberState::Updating);
    assert_eq!(member_state(&state, "app", 1, "app_api"), MemberState::Waiting);
    assert!(state.service("web").unwrap().group.as_ref().unwrap().waiting);

    apply(&mut state, 2, vec![set("app", 1, "db", MemberState::Completed)]).unwrap();
    assert_eq!(member_state(&state, "app", 1, "app_api"), MemberState::Updating);
    assert!(!state.service("api").unwrap().group.as_ref().unwrap().waiting);
    assert_eq!(member_state(&state, "app", 1, "app_web"), MemberState::Waiting, "web also waits for api");

    apply(&mut state, 3, vec![set("app", 1, "api", MemberState::Completed)]).unwrap();
    assert_eq!(member_state(&state, "app", 1, "app_web"), MemberState::Updating);
    // A repeated or stale progress entry changes nothing.
    apply(&mut state, 4, vec![set("app", 1, "api", MemberState::Failed)]).unwrap();
    assert_eq!(member_state(&state, "app", 1, "app_api"), MemberState::Completed);

    apply(&mut state, 5, vec![set("app", 1, "web", MemberState::Completed)]).unwrap();
    let group = state.stack_revisions("app")[0].rollout.clone().unwrap();
    assert_eq!(group.state, GroupState::Completed);
    assert!(state.services().all(|s| s.group.is_none()), "the group's marks are gone");
}

#[test]
fn a_failed_member_rolls_the_whole_group_back_in_one_entry() {
    let mut state = State::default();
    apply(
        &mut state,
        1,
        vec![
            Action::CreateService { id: "web".into(), spec: spec("app", "web", "busybox:1") },
            Action::CreateService { id: "api".into(), spec: spec("app", "api", "busybox:1") },
            record("app", 0, None),
        ],
    )
    .unwrap();
    apply(
        &mut state,
        2,
        vec![
            Action::UpdateService { id: "web".into(), expected_version: 1, spec: spec("app", "web", "busybox:2") },
            Action::UpdateService { id: "api".into(), expected_version: 1, spec: spec("app", "api", "busybox:2") },
            Action::CreateService { id: "new".into(), spec: spec("app", "new", "busybox:2") },
            record("app", 1, atomic(&[])),
        ],
    )
    .unwrap();
    apply(&mut state, 3, vec![set("app", 2, "web", MemberState::Completed)]).unwrap();
    let fail = Action::FailGroup {
        stack: "app".into(),
        revision: 2,
        service_id: "api".into(),
        task_id: "t1".into(),
        message: "task t1 failed: no such image".into(),
    };
    apply(&mut state, 4, vec![fail.clone()]).unwrap();
    for id in ["web", "api"] {
        let service = state.service(id).unwrap();
        assert_eq!(service.spec.task.container.image, "busybox:1", "{id} is back on its old spec");
        assert_eq!(service.update_status.as_ref().unwrap().state, UpdateState::RollbackStarted);
    }
    assert!(state.service("new").is_none(), "the service the deploy created is removed");
    let group = state.stack_revisions("app")[1].rollout.clone().unwrap();
    assert_eq!(group.state, GroupState::RollbackStarted);
    assert_eq!((group.failed_service.as_str(), group.failed_task.as_str()), ("app_api", "t1"));
    assert!(group.message.contains("service app_api: task t1 failed: no such image"), "{}", group.message);
    // A second failure finds the group rolling back: nothing more happens.
    let before = state.service("web").unwrap().version;
    apply(&mut state, 5, vec![fail]).unwrap();
    assert_eq!(state.service("web").unwrap().version, before);

    // A progress entry decided before the rollback began does not count now.
    apply(&mut state, 6, vec![set("app", 2, "api", MemberState::Completed)]).unwrap();
    assert_eq!(member_state(&state, "app", 2, "app_api"), MemberState::RollingBack);
    apply(&mut state, 6, vec![set("app", 2, "web", MemberState::RolledBack)]).unwrap();
    assert_eq!(state.stack_revisions("app")[1].rollout.as_ref().unwrap().state, GroupState::RollbackStarted);
    apply(&mut state, 7, vec![set("app", 2, "api", MemberState::RolledBack)]).unwrap();
    let group = state.stack_revisions("app")[1].rollout.clone().unwrap();
    assert_eq!(group.state, GroupState::RollbackCompleted);
    assert!(state.services().all(|s| s.group.is_none()));
}

#[test]
fn a_newer_deploy_supersedes_an_unfinished_group_and_releases_its_waiting_services() {
    let mut state = State::default();
    apply(
        &mut state,
        1,
        vec![
            Action::CreateService { id: "db".into(), spec: spec("app", "db", "busybox:1") },
            Action::CreateService { id: "web".into(), spec: spec("app", "web", "busybox:1") },
            record("app", 0, atomic(&[("app_web", &["app_db"])])),
        ],
    )
    .unwrap();
    assert!(state.service("web").unwrap().group.as_ref().unwrap().waiting);
    // The next deploy updates every member: the old group is superseded, not completed.
    let db_version = state.service("db").unwrap().version;
    let web_version = state.service("web").unwrap().version;
    apply(
        &mut state,
        2,
        vec![
            Action::UpdateService {
                id: "db".into(),
                expected_version: db_version,
                spec: spec("app", "db", "busybox:2"),
            },
            Action::UpdateService {
                id: "web".into(),
                expected_version: web_version,
                spec: spec("app", "web", "busybox:2"),
            },
            record("app", 1, None),
        ],
    )
    .unwrap();
    assert_eq!(state.stack_revisions("app")[0].rollout.as_ref().unwrap().state, GroupState::Superseded);
    assert!(state.services().all(|s| s.group.is_none()), "nothing waits for a group that is over");
}

#[test]
fn stack_revisions_survive_a_snapshot() {
    let mut state = State::default();
    apply(
        &mut state,
        1,
        vec![
            Action::CreateService { id: "web".into(), spec: spec("app", "web", "busybox:1") },
            record("app", 0, atomic(&[])),
        ],
    )
    .unwrap();
    let restored = State::restore(&state.snapshot()).unwrap();
    assert_eq!(restored.stack_revisions("app"), state.stack_revisions("app"));
    assert_eq!(restored.service("web").unwrap().group, state.service("web").unwrap().group);
}
