use proptest::prelude::*;
use shoal_types::{
    MANUALLY_ABORTED, MANUALLY_PAUSED, RolloutKind, RolloutSlot, RolloutState, ServiceSpec, TaskSpec, TaskState,
    TaskStatus,
};

use super::*;

fn batch(actions: Vec<Action>) -> Batch {
    Batch::new(1_000, actions)
}

fn create(id: &str, name: &str) -> Action {
    Action::CreateService { id: id.into(), spec: ServiceSpec::new(name, "busybox") }
}

fn task(id: &str, service: &str, node: &str) -> Task {
    Task {
        id: id.into(),
        version: 0,
        created_at: 0,
        updated_at: 0,
        service_id: service.into(),
        slot: 1,
        node_id: node.into(),
        spec_version: 1,
        spec: TaskSpec::default().into(),
        service_name: String::new(),
        endpoint: Default::default(),
        origin: Default::default(),
        start_gate: None,
        running_at: None,
        restart_failures: 0,
        remove_container: false,
        kept: false,
        adopts: None,
        desired_state: TaskState::Running,
        status: TaskStatus {
            state: TaskState::New,
            timestamp: 0,
            message: "created".into(),
            err: String::new(),
            ..Default::default()
        },
    }
}

#[test]
fn create_and_version() {
    let mut state = State::default();
    let changes = state.apply(7, &batch(vec![create("s1", "web")])).unwrap();
    assert_eq!(changes.len(), 1);
    let service = state.service("s1").unwrap();
    assert_eq!((service.version, service.spec_version, service.created_at), (7, 7, 1_000));
    assert_eq!(state.applied_index(), 7);
}

#[test]
fn duplicate_names_are_refused_and_nothing_changes() {
    let mut state = State::default();
    state.apply(1, &batch(vec![create("s1", "web")])).unwrap();
    let before = state.clone();
    let err = state.apply(2, &batch(vec![create("s2", "api"), create("s3", "web")])).unwrap_err();
    assert_eq!(err.to_string(), "service web already exists");
    assert!(state.service("s2").is_none(), "first action of a refused batch must be undone");
    assert_eq!(state.services().count(), before.services().count());
}

#[test]
fn stale_update_is_refused() {
    let mut state = State::default();
    state.apply(1, &batch(vec![create("s1", "web")])).unwrap();
    let mut spec = ServiceSpec::new("web", "busybox:2");
    state
        .apply(2, &batch(vec![Action::UpdateService { id: "s1".into(), expected_version: 1, spec: spec.clone() }]))
        .unwrap();
    spec.task.container.image = "busybox:3".into();
    let err =
        state.apply(3, &batch(vec![Action::UpdateService { id: "s1".into(), expected_version: 1, spec }])).unwrap_err();
    assert!(matches!(err, StoreError::OutOfSequence { current: 2, expected: 1, .. }), "{err}");
    assert_eq!(state.service("s1").unwrap().spec.task.container.image, "busybox:2");
}

#[test]
fn update_moves_the_spec_to_previous_and_shares_the_new_service_with_its_change() {
    let mut state = State::default();
    state.apply(1, &batch(vec![create("s1", "web")])).unwrap();
    let status = UpdateStatus {
        state: UpdateState::Completed,
        message: "update completed".into(),
        started_at: Some(1_000),
        completed_at: Some(1_500),
        slots: Some(1),
        step: None,
    };
    let read_before_the_status = state.service("s1").unwrap().version;
    state.apply(2, &batch(vec![Action::SetUpdateStatus { id: "s1".into(), status: Some(status) }])).unwrap();
    let before = state.service("s1").unwrap().clone();
    // The updater's progress is not a change of the spec: a read-modify-write of the spec made
    // from a read before it still applies (it used to fail "out of sequence").
    assert_eq!((before.version, before.status_version), (1, 2));
    let v2 = ServiceSpec::new("web", "busybox:2");
    let update = Action::UpdateService { id: "s1".into(), expected_version: read_before_the_status, spec: v2.clone() };
    let changes = state.apply(3, &Batch::new(2_000, vec![update])).unwrap();
    let service = state.service("s1").unwrap();
    assert_eq!((service.version, service.spec_version, service.created_at, service.updated_at), (3, 3, 1_000, 2_000));
    assert_eq!(service.spec, v2);
    assert_eq!(service.previous_spec.as_ref(), Some(&before.spec));
    assert_eq!(service.previous_spec_version, Some(1));
    assert_eq!(service.update_status, None, "a new update starts without the last one's status");
    let revisions: Vec<(u64, u64)> = state.revisions("s1").iter().map(|r| (r.number, r.spec_version)).collect();
    assert_eq!(revisions, vec![(1, 1), (2, 3)]);
    assert_eq!(service.revision, 2);
    assert_eq!(*state.revisions("s1")[1].spec, v2);
    let [Change { kind: ChangeKind::Update, index: 3, at: 2_000, object: Object::Service(changed) }] = &changes[..]
    else {
        panic!("expected one service update, got {changes:?}");
    };
    assert!(std::ptr::eq(&**changed, service), "the change event shares the stored service");
}

#[test]
fn a_refused_batch_puts_an_updated_service_back() {
    let mut state = State::default();
    state.apply(1, &batch(vec![create("s1", "web"), create("s2", "api")])).unwrap();
    let before = state.clone();
    let update =
        Action::UpdateService { id: "s1".into(), expected_version: 1, spec: ServiceSpec::new("web", "busybox:2") };
    let err = state.apply(2, &batch(vec![update, create("s3", "api")])).unwrap_err();
    assert_eq!(err.to_string(), "service api already exists");
    assert_eq!(state.service("s1"), before.service("s1"));
    assert_eq!(state.service_by_name("web").map(|s| s.id.as_str()), Some("s1"));
    assert_eq!(state.services().count(), 2);
}

#[test]
fn rename_and_mode_change_are_refused() {
    let mut state = State::default();
    state.apply(1, &batch(vec![create("s1", "web")])).unwrap();
    let renamed = ServiceSpec::new("api", "busybox");
    let err =
        state.apply(2, &batch(vec![Action::UpdateService { id: "s1".into(), expected_version: 1, spec: renamed }]));
    assert!(matches!(err, Err(StoreError::Rename { .. })));
    let mut global = ServiceSpec::new("web", "busybox");
    global.mode = shoal_types::ServiceMode::Global;
    let err =
        state.apply(3, &batch(vec![Action::UpdateService { id: "s1".into(), expected_version: 1, spec: global }]));
    assert!(matches!(err, Err(StoreError::ModeChange { .. })));
}

#[test]
fn rollback_toggles_and_needs_a_previous_spec() {
    let mut state = State::default();
    state.apply(1, &batch(vec![create("s1", "web")])).unwrap();
    let err =
        state.apply(2, &batch(vec![Action::RollbackService { id: "s1".into(), expected_version: 1 }])).unwrap_err();
    assert_eq!(err.to_string(), "service web does not have a previous spec");
    let v2 = ServiceSpec::new("web", "busybox:2");
    state.apply(3, &batch(vec![Action::UpdateService { id: "s1".into(), expected_version: 1, spec: v2 }])).unwrap();
    let image = |s: &State| s.service("s1").unwrap().spec.task.container.image.clone();
    assert_eq!(image(&state), "busybox:2");
    let mut version = 3;
    for (i, expected) in ["busybox", "busybox:2", "busybox"].into_iter().enumerate() {
        let index = 4 + i as u64;
        state
            .apply(index, &batch(vec![Action::RollbackService { id: "s1".into(), expected_version: version }]))
            .unwrap();
        version = index;
        assert_eq!(image(&state), expected);
        let status = state.service("s1").unwrap().update_status.clone().unwrap();
        assert_eq!(
            (status.state, status.message.as_str()),
            (UpdateState::RollbackStarted, "manually requested rollback")
        );
    }
    assert_eq!(state.revisions("s1").len(), 5);
}

/// Revisions: numbered per service from 1, each with who and why (the batch's origin), kept up
/// to the cluster's limit; a rollback to one makes its spec current as a new revision, keeps
/// what was current as the previous spec (so a plain rollback toggles back), and an unknown
/// number is refused naming the ones kept.
#[test]
fn revisions_are_numbered_kept_to_the_limit_and_rolled_back_to() {
    let mut state = State::default();
    let cluster = shoal_types::Cluster {
        id: "c".into(),
        version: 0,
        created_at: 0,
        spec: shoal_types::ClusterSpec { revision_history_limit: 3, ..Default::default() },
    };
    state.apply(1, &batch(vec![Action::InitCluster { cluster }])).unwrap();
    let origin = |cause: &str| Origin { by: "admin:a1".into(), cause: cause.into(), rollout_id: String::new() };
    let with_origin = |actions, cause: &str| Batch { origin: origin(cause), ..Batch::new(1_000, actions) };
    state.apply(2, &with_origin(vec![create("s1", "web")], "shoal service create web")).unwrap();
    let mut version = 2;
    for (i, image) in ["busybox:2", "busybox:3", "busybox:4"].into_iter().enumerate() {
        let index = 3 + i as u64;
        let update =
            Action::UpdateService { id: "s1".into(), expected_version: version, spec: ServiceSpec::new("web", image) };
        state.apply(index, &with_origin(vec![update], &format!("deploy {image}"))).unwrap();
        version = index;
    }
    let kept: Vec<(u64, String, String)> = state
        .revisions("s1")
        .iter()
        .map(|r| (r.number, r.spec.task.container.image.clone(), r.change_cause.clone()))
        .collect();
    assert_eq!(
        kept,
        [
            (2, "busybox:2".to_string(), "deploy busybox:2".to_string()),
            (3, "busybox:3".to_string(), "deploy busybox:3".to_string()),
            (4, "busybox:4".to_string(), "deploy busybox:4".to_string()),
        ]
    );
    assert!(state.revisions("s1").iter().all(|r| r.created_by == "admin:a1"));

    // Revision 1 is no longer kept: refused, naming what is, and nothing changes.
    let before = state.clone();
    let to = |revision, expected_version| Action::RollbackServiceTo { id: "s1".into(), expected_version, revision };
    let err = state.apply(6, &batch(vec![to(1, version)])).unwrap_err();
    assert_eq!(err.to_string(), "revision 1 not found for service web (kept: 2-4)");
    assert!(matches!(err, StoreError::RevisionNotFound { revision: 1, .. }));
    assert_eq!(state.revisions("s1"), before.revisions("s1"));
    assert_eq!(state.service("s1"), before.service("s1"));

    state.apply(7, &with_origin(vec![to(2, version)], "back to 2")).unwrap();
    let service = state.service("s1").unwrap();
    assert_eq!(service.spec.task.container.image, "busybox:2");
    assert_eq!(service.previous_spec.as_ref().unwrap().task.container.image, "busybox:4");
    assert_eq!((service.revision, service.spec_version), (5, 7));
    let status = service.update_status.clone().unwrap();
    assert_eq!(
        (status.state, status.message.as_str()),
        (UpdateState::RollbackStarted, "manually requested rollback to revision 2")
    );
    let numbers: Vec<u64> = state.revisions("s1").iter().map(|r| r.number).collect();
    assert_eq!(numbers, [3, 4, 5]);
    // A plain rollback toggles back to what was current before.
    state.apply(8, &batch(vec![Action::RollbackService { id: "s1".into(), expected_version: 7 }])).unwrap();
    assert_eq!(state.service("s1").unwrap().spec.task.container.image, "busybox:4");
    assert_eq!(state.service("s1").unwrap().revision, 6);

    // A removed service takes its revisions with it; a refused removal keeps them.
    state.apply(9, &batch(vec![Action::RemoveService { id: "s1".into() }])).unwrap();
    assert!(state.revisions("s1").is_empty());
    assert_eq!(State::restore(&state.snapshot()).unwrap(), state);
}

#[test]
fn tasks_are_indexed_and_skipped_without_their_service() {
    let mut state = State::default();
    state.apply(1, &batch(vec![create("s1", "web")])).unwrap();
    state
        .apply(
            2,
            &batch(vec![
                Action::PutTask { task: task("t1", "s1", "n1") },
                Action::PutTask { task: task("t2", "s1", "n2") },
            ]),
        )
        .unwrap();
    assert_eq!(state.tasks_of_service("s1").count(), 2);
    assert_eq!(state.tasks_on_node("n2").map(|t| t.id.as_str()).collect::<Vec<_>>(), ["t2"]);
    // A task for a service that is gone (the control loop's view predates the removal) is
    // skipped, and the rest of its entry still applies.
    let changes = state
        .apply(
            3,
            &batch(vec![
                Action::PutTask { task: task("t3", "nope", "n1") },
                Action::PutTask { task: task("t4", "s1", "n1") },
            ]),
        )
        .unwrap();
    assert_eq!(changes.len(), 1);
    assert!(state.task("t3").is_none());
    assert!(state.task("t4").is_some());
    state.apply(31, &batch(vec![Action::RemoveTask { id: "t4".into() }])).unwrap();
    state.apply(4, &batch(vec![Action::RemoveTask { id: "t1".into() }])).unwrap();
    assert_eq!(state.tasks_on_node("n1").count(), 0);
}

#[test]
fn pages_of_tasks_and_the_pending_index_follow_every_change() {
    let mut state = State::default();
    state.apply(1, &batch(vec![create("s1", "web"), create("s2", "api")])).unwrap();
    let mut puts: Vec<Action> = Vec::new();
    for (id, service, node) in
        [("a", "s1", "n1"), ("b", "s2", "n1"), ("c", "s1", ""), ("d", "s1", "n2"), ("e", "s2", "")]
    {
        puts.push(Action::PutTask { task: task(id, service, node) });
    }
    state.apply(2, &batch(puts)).unwrap();
    let page = |state: &State, service: Option<&str>, node: Option<&str>, after: &str| -> Vec<String> {
        state.tasks_after(service, node, after).map(|t| t.id.clone()).collect()
    };
    assert_eq!(page(&state, None, None, ""), ["a", "b", "c", "d", "e"]);
    assert_eq!(page(&state, None, None, "b"), ["c", "d", "e"]);
    assert_eq!(page(&state, Some("s1"), None, "a"), ["c", "d"]);
    assert_eq!(page(&state, Some("s1"), Some("n1"), ""), ["a"]);
    assert_eq!(page(&state, None, Some("n1"), "a"), ["b"]);
    assert!(page(&state, Some("gone"), None, "").is_empty());
    // Pending: meant to run and not on a node yet; kept by every write and on restore.
    let pending = |state: &State| -> Vec<String> { state.pending_tasks().map(|t| t.id.clone()).collect() };
    assert_eq!(pending(&state), ["a", "b", "c", "d", "e"]);
    state.apply(3, &batch(vec![Action::AssignTask { id: "a".into(), node_id: "n1".into() }])).unwrap();
    state.apply(4, &batch(vec![Action::SetDesiredState { id: "c".into(), desired: TaskState::Shutdown }])).unwrap();
    state.apply(5, &batch(vec![Action::RemoveTask { id: "e".into() }])).unwrap();
    assert_eq!(pending(&state), ["b", "d"]);
    assert_eq!(pending(&State::restore(&state.snapshot()).unwrap()), ["b", "d"]);
}

#[test]
fn malformed_entries_change_nothing_but_the_index() {
    let mut state = State::default();
    state.apply(1, &batch(vec![create("s1", "web")])).unwrap();
    let before = state.services().cloned().collect::<Vec<_>>();
    assert!(matches!(state.apply_entry(2, b"{not json"), Err(StoreError::Malformed(_))));
    assert_eq!(state.services().cloned().collect::<Vec<_>>(), before);
    assert_eq!(state.applied_index(), 2);
}

#[test]
fn membership_changes_make_manager_nodes() {
    let mut state = State::default();
    let add = MembershipChange {
        kind: MembershipKind::AddLearner,
        raft_id: 9,
        node_id: "n9".into(),
        addr: "127.0.0.1:4243".into(),
        hostname: "m2".into(),
        at: 5,
    };
    state.apply_membership(3, &add);
    let node = state.node("n9").unwrap();
    assert_eq!(node.manager.as_ref().unwrap().raft_id, 9);
    state.apply_membership(4, &MembershipChange { kind: MembershipKind::Remove, ..add });
    let node = state.node("n9").unwrap();
    assert!(node.manager.is_none());
    assert_eq!((node.spec.role, node.status.state), (shoal_types::NodeRole::Worker, shoal_types::NodeState::Down));
}

#[test]
fn task_states_only_move_forward_and_stale_actions_are_skipped() {
    let mut state = State::default();
    state.apply(1, &batch(vec![create("s1", "web"), Action::PutTask { task: task("t1", "s1", "") }])).unwrap();
    state.apply(2, &batch(vec![Action::AssignTask { id: "t1".into(), node_id: "n1".into() }])).unwrap();
    let running =
        TaskStatus { state: TaskState::Running, timestamp: 3, message: "started".into(), ..Default::default() };
    state.apply(3, &batch(vec![Action::SetTaskStatus { id: "t1".into(), status: running.clone() }])).unwrap();
    // Backwards status, backwards desired state, re-assignment and a missing task: all no-ops.
    let accepted =
        TaskStatus { state: TaskState::Accepted, timestamp: 4, message: "accepted".into(), ..Default::default() };
    let changes = state
        .apply(
            4,
            &batch(vec![
                Action::SetTaskStatus { id: "t1".into(), status: accepted },
                Action::SetDesiredState { id: "t1".into(), desired: TaskState::Ready },
                Action::AssignTask { id: "t1".into(), node_id: "n2".into() },
                Action::SetTaskStatus { id: "gone".into(), status: running.clone() },
                Action::DeleteTasks { ids: vec!["gone".into()] },
            ]),
        )
        .unwrap();
    assert!(changes.is_empty(), "{changes:?}");
    let t = state.task("t1").unwrap();
    assert_eq!((t.status.state, t.desired_state, t.node_id.as_str()), (TaskState::Running, TaskState::Running, "n1"));
    state.apply(5, &batch(vec![Action::SetDesiredState { id: "t1".into(), desired: TaskState::Shutdown }])).unwrap();
    assert_eq!(state.task("t1").unwrap().desired_state, TaskState::Shutdown);
    state.apply(6, &batch(vec![Action::DeleteTasks { ids: vec!["t1".into()] }])).unwrap();
    assert!(state.task("t1").is_none());
}

#[test]
fn unschedulable_tasks_record_the_reason_once() {
    let mut state = State::default();
    state.apply(1, &batch(vec![create("s1", "web"), Action::PutTask { task: task("t1", "s1", "") }])).unwrap();
    let mark = Action::MarkUnschedulable { id: "t1".into(), err: "no suitable node".into() };
    assert_eq!(state.apply(2, &batch(vec![mark.clone()])).unwrap().len(), 1);
    assert!(state.apply(3, &batch(vec![mark])).unwrap().is_empty(), "same reason: no churn");
    let t = state.task("t1").unwrap();
    assert_eq!((t.status.state, t.status.err.as_str()), (TaskState::Pending, "no suitable node"));
}

/// The actions the leader's control loops propose (not the whole-object writes).
fn arb_loop_action() -> impl Strategy<Value = Action> {
    let task = prop::sample::select(vec!["t1", "t2", "gone"]);
    let state = prop::sample::select(TaskState::ALL.to_vec());
    prop_oneof![
        (task.clone(), state.clone()).prop_map(|(t, s)| Action::SetTaskStatus {
            id: t.into(),
            status: TaskStatus { state: s, ..Default::default() }
        }),
        (task.clone(), state).prop_map(|(t, s)| Action::SetDesiredState { id: t.into(), desired: s }),
        (task.clone(), prop::sample::select(vec!["n1", "n2"]))
            .prop_map(|(t, n)| Action::AssignTask { id: t.into(), node_id: n.into() }),
        (task.clone(), prop::sample::select(vec!["no suitable node", "x"]))
            .prop_map(|(t, e)| Action::MarkUnschedulable { id: t.into(), err: e.into() }),
        // A new task (its id is made unique by the test) for the service or for one that is gone.
        prop::sample::select(vec!["a", "gone"])
            .prop_map(|s| Action::PutTask { task: super::tests::task("new", s, "") }),
        prop::sample::select(vec!["a", "gone"]).prop_map(|s| Action::SetUpdateStatus { id: s.into(), status: None }),
        (prop::sample::select(vec!["a", "gone"]), 0u64..4).prop_map(|(s, v)| Action::AutoRollback {
            id: s.into(),
            expected_version: v,
            status: UpdateStatus {
                state: UpdateState::RollbackStarted,
                message: "update rolled back".into(),
                started_at: None,
                completed_at: None,
                slots: None,
                step: None,
            },
        }),
        prop::collection::vec(task, 0..3)
            .prop_map(|ids| Action::DeleteTasks { ids: ids.into_iter().map(String::from).collect() }),
        prop::sample::select(vec!["n1", "gone"]).prop_map(|n| Action::SetNodeStatus {
            id: n.into(),
            status: NodeStatus { state: NodeState::Down, ..Default::default() },
            description: None,
        }),
    ]
}

fn arb_action() -> impl Strategy<Value = Action> {
    let id = prop::sample::select(vec!["a", "b", "c"]);
    let name = prop::sample::select(vec!["web", "api", "db"]);
    prop_oneof![
        (id.clone(), name.clone()).prop_map(|(i, n)| create(i, n)),
        (id.clone(), name.clone(), 0u64..12).prop_map(|(i, n, v)| Action::UpdateService {
            id: i.into(),
            expected_version: v,
            spec: ServiceSpec::new(n, "busybox:2"),
        }),
        (id.clone(), 0u64..12).prop_map(|(i, v)| Action::RollbackService { id: i.into(), expected_version: v }),
        (id.clone(), 0u64..12, 0u64..6).prop_map(|(i, v, revision)| Action::RollbackServiceTo {
            id: i.into(),
            expected_version: v,
            revision
        }),
        id.clone().prop_map(|i| Action::PauseRollout { id: i.into() }),
        id.clone().prop_map(|i| Action::ResumeRollout { id: i.into() }),
        id.clone().prop_map(|i| Action::AbortRollout { id: i.into() }),
        id.clone().prop_map(|i| Action::RemoveService { id: i.into() }),
        // Networks: services on one get a virtual IP, kept while they live.
        Just(network_action("n1", "net")),
        Just(Action::RemoveData { id: "n1".into() }),
        (id.clone(), name.clone(), any::<bool>()).prop_map(|(i, n, create)| {
            let spec = spec_on(n, "net");
            if create {
                Action::CreateService { id: i.into(), spec }
            } else {
                Action::UpdateService { id: i.into(), expected_version: 0, spec }
            }
        }),
        (id.clone(), name.clone(), 0u64..12).prop_map(|(i, n, v)| Action::UpdateService {
            id: i.into(),
            expected_version: v,
            spec: spec_on(n, "net"),
        }),
        // Stacks: services of stack `s`, its revisions, groups and their progress.
        (id.clone(), name.clone()).prop_map(|(i, n)| {
            let mut spec = ServiceSpec::new(format!("s_{n}"), "busybox");
            spec.labels.insert(shoal_types::stack::NAMESPACE_LABEL.into(), "s".into());
            Action::CreateService { id: i.into(), spec }
        }),
        (0u64..3, any::<bool>(), any::<bool>()).prop_map(|(expected, group, deps)| Action::RecordStack {
            stack: "s".into(),
            expected_revision: expected,
            digest: String::new(),
            removed: Vec::new(),
            group: group.then(|| shoal_types::stack::GroupPlan {
                atomic: true,
                timeout_ms: 0,
                depends_on: if deps {
                    [("s_web".to_string(), vec!["s_db".to_string()])].into()
                } else {
                    Default::default()
                },
            }),
        }),
        (
            1u64..3,
            id.clone(),
            prop::sample::select(vec![
                shoal_types::stack::MemberState::Completed,
                shoal_types::stack::MemberState::RolledBack,
                shoal_types::stack::MemberState::Failed
            ])
        )
            .prop_map(|(revision, i, state)| Action::SetGroupMember {
                stack: "s".into(),
                revision,
                service_id: i.into(),
                state
            }),
        (1u64..3, id.clone()).prop_map(|(revision, i)| Action::FailGroup {
            stack: "s".into(),
            revision,
            service_id: i.into(),
            task_id: String::new(),
            message: "failed".into(),
        }),
        (prop::sample::select(vec!["t1", "t2"]), id.clone())
            .prop_map(|(t, s)| Action::PutTask { task: task(t, s, "n1") }),
        prop::sample::select(vec!["t1", "t2"]).prop_map(|t| Action::RemoveTask { id: t.into() }),
        (prop::sample::select(vec!["t1", "t2"]), prop::sample::select(TaskState::ALL.to_vec())).prop_map(|(t, s)| {
            Action::SetTaskStatus { id: t.into(), status: TaskStatus { state: s, ..Default::default() } }
        }),
        (prop::sample::select(vec!["t1", "t2"]), prop::sample::select(TaskState::ALL.to_vec()))
            .prop_map(|(t, s)| Action::SetDesiredState { id: t.into(), desired: s }),
        (prop::sample::select(vec!["t1", "t2"]), prop::sample::select(vec!["n1", "n2"]))
            .prop_map(|(t, n)| Action::AssignTask { id: t.into(), node_id: n.into() }),
    ]
}

proptest! {
    /// Whatever the leader's loops propose, a task's observed and desired states never go back.
    #[test]
    fn task_states_never_move_backwards(actions in prop::collection::vec(arb_loop_action(), 1..60)) {
        let mut state = State::default();
        state
            .apply(1, &batch(vec![create("a", "web"), Action::PutTask { task: task("t1", "a", "") }, Action::PutTask { task: task("t2", "a", "") }]))
            .unwrap();
        let snapshot = |s: &State| s.tasks().map(|t| (t.id.clone(), (t.status.state, t.desired_state))).collect::<std::collections::BTreeMap<_, _>>();
        let mut before = snapshot(&state);
        for (i, mut action) in actions.into_iter().enumerate() {
            if let Action::PutTask { task } = &mut action {
                // The loop makes each task with a fresh id.
                task.id = format!("new{i}");
            }
            state.apply(i as u64 + 2, &batch(vec![action])).expect("control-loop actions never fail a batch");
            let after = snapshot(&state);
            for (id, (obs, des)) in &after {
                let Some((obs0, des0)) = before.get(id).copied() else { continue };
                prop_assert!(*obs >= obs0, "{id}: observed {obs0} -> {obs}");
                prop_assert!(*des >= des0, "{id}: desired {des0} -> {des}");
            }
            before = after;
        }
    }

    /// Two managers applying the same entries hold equal state, and a snapshot restores it exactly.
    #[test]
    fn apply_is_deterministic_and_snapshots_restore(batches in prop::collection::vec(prop::collection::vec(arb_action(), 1..4), 1..12)) {
        let mut a = State::default();
        let mut b = State::default();
        for (i, actions) in batches.iter().enumerate() {
            let entry = serde_json::to_vec(&batch(actions.clone())).unwrap();
            let ra = a.apply_entry(i as u64 + 1, &entry);
            let rb = b.apply_entry(i as u64 + 1, &entry);
            prop_assert_eq!(ra, rb);
        }
        prop_assert_eq!(&a, &b);
        let restored = State::restore(&a.snapshot()).unwrap();
        prop_assert_eq!(&restored, &a);
        for service in a.services() {
            prop_assert_eq!(restored.tasks_of_service(&service.id).count(), a.tasks_of_service(&service.id).count());
        }
    }

    /// A snapshot view taken between entries keeps the state of that moment while the state goes
    /// on applying (it shares the tasks), and writes the same bytes the state itself did then.
    #[test]
    fn a_snapshot_view_is_the_state_when_it_was_taken(
        before in prop::collection::vec(prop::collection::vec(arb_action(), 1..4), 1..8),
        after in prop::collection::vec(prop::collection::vec(prop_oneof![arb_action(), arb_loop_action()], 1..4), 1..8),
    ) {
        let mut state = State::default();
        let mut index = 0;
        for actions in before {
            index += 1;
            let _ = state.apply_entry(index, &serde_json::to_vec(&batch(actions)).unwrap());
        }
        let then = state.clone();
        let view = state.snapshot_view();
        for actions in after {
            index += 1;
            let _ = state.apply_entry(index, &serde_json::to_vec(&batch(actions)).unwrap());
        }
        let mut written = Vec::new();
        view.write(&mut written).unwrap();
        prop_assert_eq!(&written, &then.snapshot());
        prop_assert_eq!(&State::restore(&written).unwrap(), &then);
    }

    /// Entries decode to exactly the actions encoded, whether the tag comes first (as shoal
    /// writes it) or last (the buffered path).
    #[test]
    fn entries_decode_to_the_actions_encoded(actions in prop::collection::vec(prop_oneof![arb_action(), arb_loop_action()], 1..6)) {
        let encoded = batch(actions.clone());
        let entry = serde_json::to_vec(&encoded).unwrap();
        prop_assert_eq!(&serde_json::from_slice::<Batch>(&entry).unwrap(), &encoded);

        let tag_last: Vec<String> = actions
            .iter()
            .map(|a| {
                let json = serde_json::to_string(a).unwrap();
                let (tag, rest) = json.strip_prefix('{').unwrap().split_once(',').unwrap();
                assert!(tag.starts_with("\"action\":"), "the tag is written first: {json}");
                format!("{{{},{tag}}}", rest.strip_suffix('}').unwrap())
            })
            .collect();
        let entry = format!("{{\"at\":1000,\"actions\":[{}]}}", tag_last.join(","));
        prop_assert_eq!(&serde_json::from_str::<Batch>(&entry).unwrap(), &encoded);
    }

    /// A refused batch leaves the state exactly as it was.
    #[test]
    fn refused_batches_change_nothing(setup in prop::collection::vec(arb_action(), 0..8), actions in prop::collection::vec(arb_action(), 1..5)) {
        let mut state = State::default();
        for (i, action) in setup.into_iter().enumerate() {
            let _ = state.apply(i as u64 + 1, &batch(vec![action]));
        }
        let before = state.clone();
        if state.apply(100, &batch(actions)).is_err() {
            let mut expected = before;
            expected.applied_index = 100;
            prop_assert_eq!(state, expected);
        }
    }
}

#[test]
fn tasks_of_one_service_version_share_their_spec_in_memory_and_after_a_restore() {
    let mut state = State::default();
    state.apply(1, &batch(vec![create("s1", "web")])).unwrap();
    // Each task arrives with its own copy, as it does when decoded from a raft entry.
    let mut other = task("t3", "s1", "n1");
    other.spec_version = 2;
    std::sync::Arc::make_mut(&mut other.spec).container.image = "busybox:2".into();
    let actions = vec![
        Action::PutTask { task: task("t1", "s1", "n1") },
        Action::PutTask { task: task("t2", "s1", "n2") },
        Action::PutTask { task: other },
    ];
    state.apply(2, &batch(actions)).unwrap();
    let spec = |s: &State, id: &str| s.task(id).unwrap().spec.clone();
    assert!(std::sync::Arc::ptr_eq(&spec(&state, "t1"), &spec(&state, "t2")));
    assert!(!std::sync::Arc::ptr_eq(&spec(&state, "t1"), &spec(&state, "t3")));
    assert_eq!(spec(&state, "t3").container.image, "busybox:2");

    let restored = State::restore(&state.snapshot()).unwrap();
    assert_eq!(restored, state);
    assert!(std::sync::Arc::ptr_eq(&spec(&restored, "t1"), &spec(&restored, "t2")));
    assert_eq!(spec(&restored, "t1").container.image, spec(&state, "t1").container.image);
}

#[test]
fn actions_that_do_not_decode_say_why() {
    let err = |json: &str| serde_json::from_str::<Action>(json).unwrap_err().to_string();
    assert!(err(r#"{"action":"explode","id":"a"}"#).contains("unknown variant `explode`"));
    assert!(err(r#"{"id":"a","action":"explode"}"#).contains("unknown variant `explode`"));
    assert!(err(r#"{"action":"remove_service"}"#).contains("missing field `id`"));
    assert!(err(r#"{"id":"a"}"#).contains("missing field `action`"));
    assert!(err(r#"{}"#).contains("missing field `action`"));
    assert!(err(r#"{"id":"a","action":7}"#).contains("not a string"));
    assert!(err(r#"{"action":"remove_service","id":5}"#).contains("invalid type"));
    assert!(err(r#"[1]"#).contains("invalid type"));
}

#[test]
fn cluster_update_needs_the_version_read() {
    let mut state = State::default();
    let cluster = shoal_types::Cluster {
        id: "c".into(),
        version: 0,
        created_at: 1_000,
        spec: shoal_types::ClusterSpec::default(),
    };
    let spec = shoal_types::ClusterSpec { max_replicas: 10, ..Default::default() };
    let err = state.apply(1, &batch(vec![Action::UpdateCluster { expected_version: 1, spec: spec.clone() }]));
    assert!(matches!(err, Err(StoreError::NoCluster)));
    state.apply(2, &batch(vec![Action::InitCluster { cluster }])).unwrap();
    let err = state.apply(3, &batch(vec![Action::UpdateCluster { expected_version: 1, spec: spec.clone() }]));
    assert!(matches!(err, Err(StoreError::ClusterOutOfSequence { current: 2, expected: 1 })));
    assert_eq!(state.cluster().unwrap().spec.max_replicas, shoal_types::limits::DEFAULT_MAX_REPLICAS);
    state.apply(4, &batch(vec![Action::UpdateCluster { expected_version: 2, spec }])).unwrap();
    let cluster = state.cluster().unwrap();
    assert_eq!((cluster.version, cluster.spec.max_replicas), (4, 10));
}

/// `rollout pause` and `resume`: only an update or rollback in progress pauses, only a paused one
/// resumes, each refusal says where the rollout stands and changes nothing; the spec version
/// (what tasks are compared with) is left as it is.
#[test]
fn pause_and_resume_move_only_a_rollout_that_can() {
    let mut state = State::default();
    state.apply(1, &batch(vec![create("s1", "web")])).unwrap();
    let pause = || batch(vec![Action::PauseRollout { id: "s1".into() }]);
    let resume = || batch(vec![Action::ResumeRollout { id: "s1".into() }]);
    assert_eq!(
        state.apply(2, &pause()).unwrap_err().to_string(),
        "service web is not rolling out (no update has run): there is nothing to pause"
    );
    let update =
        Action::UpdateService { id: "s1".into(), expected_version: 1, spec: ServiceSpec::new("web", "busybox:2") };
    let updating = UpdateStatus {
        state: UpdateState::Updating,
        message: "update in progress".into(),
        started_at: Some(1),
        completed_at: None,
        slots: Some(3),
        step: None,
    };
    state.apply(3, &batch(vec![update, Action::SetUpdateStatus { id: "s1".into(), status: Some(updating) }])).unwrap();
    assert_eq!(
        state.apply(4, &resume()).unwrap_err().to_string(),
        "service web is not paused (its update is updating): there is nothing to resume"
    );
    let before = state.service("s1").unwrap().clone();
    state.apply(5, &pause()).unwrap();
    let paused = state.service("s1").unwrap().clone();
    let status = paused.update_status.clone().unwrap();
    assert_eq!((status.state, status.message.as_str(), status.slots), (UpdateState::Paused, MANUALLY_PAUSED, Some(3)));
    assert_eq!((paused.version, paused.spec_version, paused.status_version), (before.version, before.spec_version, 5));
    assert!(state.apply(6, &pause()).unwrap_err().to_string().contains("(its update is paused)"));
    state.apply(7, &resume()).unwrap();
    let status = state.service("s1").unwrap().update_status.clone().unwrap();
    assert_eq!((status.state, status.message.as_str()), (UpdateState::Updating, "update resumed"));

    // A rollback pauses and resumes as a rollback.
    state.apply(8, &batch(vec![Action::RollbackService { id: "s1".into(), expected_version: 3 }])).unwrap();
    state.apply(9, &pause()).unwrap();
    assert_eq!(state.service("s1").unwrap().update_status.as_ref().unwrap().state, UpdateState::RollbackPaused);
    state.apply(10, &resume()).unwrap();
    assert_eq!(state.service("s1").unwrap().update_status.as_ref().unwrap().state, UpdateState::RollbackStarted);
}

/// `rollout abort`: an update in progress or paused rolls back to the spec before it, as a new
/// revision; anything else has nothing to abort and changes nothing.
#[test]
fn abort_rolls_an_update_back_and_refuses_anything_else() {
    let mut state = State::default();
    state.apply(1, &batch(vec![create("s1", "web")])).unwrap();
    let abort = || batch(vec![Action::AbortRollout { id: "s1".into() }]);
    assert_eq!(
        state.apply(2, &abort()).unwrap_err().to_string(),
        "service web is not updating (no update has run): there is nothing to abort"
    );
    let update =
        Action::UpdateService { id: "s1".into(), expected_version: 1, spec: ServiceSpec::new("web", "busybox:2") };
    let updating = UpdateStatus {
        state: UpdateState::Updating,
        message: "update in progress".into(),
        started_at: Some(1),
        completed_at: None,
        slots: Some(3),
        step: None,
    };
    state.apply(3, &batch(vec![update, Action::SetUpdateStatus { id: "s1".into(), status: Some(updating) }])).unwrap();
    state.apply(4, &batch(vec![Action::PauseRollout { id: "s1".into() }])).unwrap();
    state.apply(5, &abort()).unwrap();
    let service = state.service("s1").unwrap();
    assert_eq!(service.spec.task.container.image, "busybox");
    assert_eq!(service.previous_spec.as_ref().unwrap().task.container.image, "busybox:2");
    assert_eq!((service.revision, service.spec_version), (3, 5));
    let status = service.update_status.clone().unwrap();
    assert_eq!(status.state, UpdateState::RollbackStarted);
    assert_eq!(status.message, format!("{MANUALLY_ABORTED} (revision 2); rolling back"));
    // A rollback in progress is not an update: nothing to abort.
    let before = state.clone();
    assert!(state.apply(6, &abort()).unwrap_err().to_string().contains("(its update is rollback started)"));
    assert_eq!(state.service("s1"), before.service("s1"));
    assert_eq!(state.revisions("s1"), before.revisions("s1"));
}

/// A rollout record follows its service's update status from the first to the last, collects
/// the updater's tasks into batches by entry, keeps every change as an event, is superseded by
/// a newer spec's rollout, aborted by `rollout abort`, named by the caller's id when given (and
/// refused when that id is taken), put back with a refused batch, kept to the limit, and
/// restored from a snapshot.
#[test]
fn rollout_records_follow_the_update_status_and_the_updaters_tasks() {
    let mut state = State::default();
    state.apply(1, &batch(vec![create("s1", "web")])).unwrap();
    assert!(state.rollouts("s1").is_empty(), "a create starts no rollout");
    let with = |actions, rollout_id: &str| Batch {
        origin: Origin { by: "admin:a1".into(), cause: String::new(), rollout_id: rollout_id.into() },
        ..Batch::new(1_000, actions)
    };
    let status = |state: UpdateState, message: &str| {
        Some(UpdateStatus {
            state,
            message: message.into(),
            started_at: Some(1_000),
            completed_at: None,
            slots: Some(2),
            step: None,
        })
    };
    let set = |s: Option<UpdateStatus>| Action::SetUpdateStatus { id: "s1".into(), status: s };
    let update = |version, image: &str| Action::UpdateService {
        id: "s1".into(),
        expected_version: version,
        spec: ServiceSpec::new("web", image),
    };
    let made = |id: &str, slot: u64, spec_version: u64| {
        let mut t = task(id, "s1", "n1");
        t.slot = slot;
        t.service_name = "web".into();
        t.spec_version = spec_version;
        t.origin = shoal_types::TaskOrigin::Update;
        Action::PutTask { task: t }
    };

    state.apply(2, &with(vec![update(1, "busybox:2")], "release-7")).unwrap();
    state.apply(3, &batch(vec![set(status(UpdateState::Updating, "update in progress")), made("n1", 1, 2)])).unwrap();
    state.apply(4, &batch(vec![made("n2", 2, 2)])).unwrap();
    state.apply(5, &batch(vec![Action::PauseRollout { id: "s1".into() }])).unwrap();
    state.apply(6, &batch(vec![Action::ResumeRollout { id: "s1".into() }])).unwrap();
    let mut done = status(UpdateState::Completed, "update completed").unwrap();
    done.completed_at = Some(9_000);
    state.apply(7, &batch(vec![set(Some(done))])).unwrap();
    let [record] = state.rollouts("s1") else { panic!("one record: {:?}", state.rollouts("s1")) };
    assert_eq!(record.id, "release-7");
    assert_eq!(
        (record.kind, record.from_revision, record.to_revision, record.spec_version),
        (RolloutKind::Update, 1, 2, 2)
    );
    assert_eq!(
        (record.state, record.finished_at, record.started_by.as_str()),
        (RolloutState::Completed, Some(9_000), "admin:a1")
    );
    let events: Vec<(RolloutState, &str)> = record.events.iter().map(|e| (e.state, e.message.as_str())).collect();
    assert_eq!(
        events,
        [
            (RolloutState::Updating, "update in progress"),
            (RolloutState::Paused, "manually paused"),
            (RolloutState::Updating, "update resumed"),
            (RolloutState::Completed, "update completed"),
        ]
    );
    let batches: Vec<(u64, Vec<&str>)> =
        record.batches.iter().map(|b| (b.number, b.slots.iter().map(|s| s.new_task.as_str()).collect())).collect();
    assert_eq!(batches, [(1, vec!["n1"]), (2, vec!["n2"])]);

    // The same id again is refused, and nothing changes.
    let before = state.clone();
    let err = state.apply(8, &with(vec![update(2, "busybox:3")], "release-7")).unwrap_err();
    assert_eq!(err.to_string(), "rollout id release-7 is already used by a rollout of service web");
    assert_eq!(state, State { applied_index: 8, ..before });

    // A new update while one is in progress supersedes it; an abort marks its own aborted.
    state.apply(9, &batch(vec![update(2, "busybox:3")])).unwrap();
    state.apply(10, &batch(vec![set(status(UpdateState::Updating, "update in progress"))])).unwrap();
    state.apply(11, &batch(vec![update(9, "busybox:4")])).unwrap();
    state.apply(12, &batch(vec![set(status(UpdateState::Updating, "update in progress")), made("n3", 1, 11)])).unwrap();
    state.apply(13, &batch(vec![Action::AbortRollout { id: "s1".into() }])).unwrap();
    let records = state.rollouts("s1");
    let summary: Vec<(&str, RolloutKind, RolloutState)> =
        records.iter().map(|r| (r.id.as_str(), r.kind, r.state)).collect();
    assert_eq!(
        summary,
        [
            ("release-7", RolloutKind::Update, RolloutState::Completed),
            ("web-3", RolloutKind::Update, RolloutState::Superseded),
            ("web-4", RolloutKind::Update, RolloutState::Aborted),
            ("web-5", RolloutKind::Rollback, RolloutState::RollbackStarted),
        ]
    );
    assert_eq!(records[2].batches.len(), 1);
    assert_eq!(State::restore(&state.snapshot()).unwrap(), state);

    // Kept to the cluster's limit (10 by default): the oldest go first.
    let mut version = 13;
    for i in 0..12u64 {
        let index = 14 + 2 * i;
        state.apply(index, &batch(vec![update(version, &format!("busybox:{}", 10 + i))])).unwrap();
        state.apply(index + 1, &batch(vec![set(status(UpdateState::Updating, "update in progress"))])).unwrap();
        version = index;
    }
    assert_eq!(state.rollouts("s1").len(), 10);
    assert!(state.rollouts("s1").iter().all(|r| r.id != "release-7"));
}

/// Every rollout command in every state of a service's update status: what is allowed moves the
/// status as documented, everything else is refused and changes nothing.
#[test]
fn every_rollout_command_in_every_state() {
    use UpdateState::*;
    let states = [
        None,
        Some(Updating),
        Some(Paused),
        Some(Completed),
        Some(RollbackStarted),
        Some(RollbackPaused),
        Some(RollbackCompleted),
    ];
    for from in states {
        for command in ["pause", "resume", "abort"] {
            let mut state = State::default();
            state.apply(1, &batch(vec![create("s1", "web")])).unwrap();
            let update = Action::UpdateService {
                id: "s1".into(),
                expected_version: 1,
                spec: ServiceSpec::new("web", "busybox:2"),
            };
            state.apply(2, &batch(vec![update])).unwrap();
            if let Some(from) = from {
                let status = UpdateStatus {
                    state: from,
                    message: "m".into(),
                    started_at: Some(1),
                    completed_at: None,
                    slots: Some(1),
                    step: None,
                };
                state
                    .apply(3, &batch(vec![Action::SetUpdateStatus { id: "s1".into(), status: Some(status) }]))
                    .unwrap();
            }
            let action = match command {
                "pause" => Action::PauseRollout { id: "s1".into() },
                "resume" => Action::ResumeRollout { id: "s1".into() },
                _ => Action::AbortRollout { id: "s1".into() },
            };
            let expected = match (command, from) {
                ("pause", Some(Updating)) => Some(Paused),
                ("pause", Some(RollbackStarted)) => Some(RollbackPaused),
                ("resume", Some(Paused)) => Some(Updating),
                ("resume", Some(RollbackPaused)) => Some(RollbackStarted),
                ("abort", Some(Updating | Paused)) => Some(RollbackStarted),
                _ => None,
            };
            let before = state.clone();
            let result = state.apply(4, &batch(vec![action]));
            match expected {
                Some(to) => {
                    assert!(result.is_ok(), "{command} from {from:?}: {result:?}");
                    assert_eq!(
                        state.service("s1").unwrap().update_status.as_ref().map(|s| s.state),
                        Some(to),
                        "{command} from {from:?}"
                    );
                    let open: Vec<_> = state.rollouts("s1").iter().filter(|r| !r.state.is_final()).collect();
                    assert_eq!(open.len(), 1, "{command} from {from:?}: one open record: {:?}", state.rollouts("s1"));
                }
                None => {
                    assert!(result.is_err(), "{command} from {from:?} was allowed");
                    assert_eq!(
                        state,
                        State { applied_index: 4, ..before },
                        "{command} from {from:?} changed something"
                    );
                }
            }
        }
    }
}

proptest! {
    /// Whatever the sequence of writes, a service's rollout records are at most the limit, at
    /// most one is open (and then it is the newest, for the current spec version), and each
    /// names its own service.
    #[test]
    fn rollout_records_stay_consistent(actions in prop::collection::vec(prop_oneof![arb_action(), arb_loop_action(), arb_status()], 1..40)) {
        let mut state = State::default();
        for (i, mut action) in actions.into_iter().enumerate() {
            // Spec changes carry the version read, as a user's would, so that they apply.
            match &mut action {
                Action::UpdateService { id, expected_version, .. }
                | Action::RollbackService { id, expected_version }
                | Action::RollbackServiceTo { id, expected_version, .. } => {
                    if let Some(service) = state.service(id) {
                        *expected_version = service.version;
                    }
                }
                _ => {}
            }
            let _ = state.apply(i as u64 + 1, &batch(vec![action]));
            for service in state.services() {
                let records = state.rollouts(&service.id);
                prop_assert!(records.len() <= 10);
                let open: Vec<usize> = records.iter().enumerate().filter(|(_, r)| !r.state.is_final()).map(|(i, _)| i).collect();
                prop_assert!(open.len() <= 1, "{:?}", records);
                if let Some(&at) = open.first() {
                    prop_assert_eq!(at, records.len() - 1);
                    prop_assert_eq!(records[at].spec_version, service.spec_version);
                }
                prop_assert!(records.iter().all(|r| r.service_id == service.id));
            }
        }
        prop_assert_eq!(State::restore(&state.snapshot()).unwrap(), state);
    }
}

fn arb_status() -> impl Strategy<Value = Action> {
    (
        prop::sample::select(vec!["a", "b", "c"]),
        prop::sample::select(vec![
            UpdateState::Updating,
            UpdateState::Paused,
            UpdateState::Completed,
            UpdateState::RollbackStarted,
            UpdateState::RollbackPaused,
            UpdateState::RollbackCompleted,
        ]),
    )
        .prop_map(|(id, state)| Action::SetUpdateStatus {
            id: id.into(),
            status: Some(UpdateStatus {
                state,
                message: "m".into(),
                started_at: Some(1),
                completed_at: None,
                slots: Some(1),
                step: None,
            }),
        })
}

/// Each slot of an open rollout record keeps when its old task was told to stop and stopped and
/// when its new task started, ran or failed, as the store applied them; the updater's
/// stop-first step (the old task's shutdown just before the new task, in one entry) and a
/// start-first shutdown in a later entry are both seen; a refused entry changes no slot.
#[test]
fn rollout_slots_record_the_timeline_of_their_tasks() {
    let mut state = State::default();
    state.apply(1, &batch(vec![create("s1", "web")])).unwrap();
    let running = |id: &str, slot: u64| {
        let mut t = task(id, "s1", "n1");
        t.slot = slot;
        t.service_name = "web".into();
        t.status.state = TaskState::Running;
        Action::PutTask { task: t }
    };
    state.apply(2, &batch(vec![running("old1", 1), running("old2", 2)])).unwrap();
    let update =
        Action::UpdateService { id: "s1".into(), expected_version: 1, spec: ServiceSpec::new("web", "busybox:2") };
    let updating = UpdateStatus {
        state: UpdateState::Updating,
        message: "update in progress".into(),
        started_at: Some(1),
        completed_at: None,
        slots: Some(2),
        step: None,
    };
    state.apply(3, &batch(vec![update, Action::SetUpdateStatus { id: "s1".into(), status: Some(updating) }])).unwrap();
    let made = |id: &str, slot: u64| {
        let mut t = task(id, "s1", "n1");
        t.slot = slot;
        t.service_name = "web".into();
        t.spec_version = 3;
        t.origin = shoal_types::TaskOrigin::Update;
        Action::PutTask { task: t }
    };
    let stop = |id: &str| Action::SetDesiredState { id: id.into(), desired: TaskState::Shutdown };
    let status = |id: &str, state: TaskState, err: &str| Action::SetTaskStatus {
        id: id.into(),
        status: TaskStatus { state, err: err.into(), ..Default::default() },
    };
    let at = |time: u64, actions| Batch::new(time, actions);
    // Stop-first: the old task's shutdown and the new task in one entry.
    state.apply(4, &at(10, vec![stop("old1"), made("new1", 1)])).unwrap();
    state.apply(5, &at(20, vec![status("old1", TaskState::Shutdown, "")])).unwrap();
    state.apply(6, &at(30, vec![status("new1", TaskState::Starting, "")])).unwrap();
    state.apply(7, &at(40, vec![status("new1", TaskState::Running, "")])).unwrap();
    // Start-first: the new task first, the old one told to stop in a later entry; the new one fails.
    state.apply(8, &at(50, vec![made("new2", 2)])).unwrap();
    state.apply(9, &at(60, vec![stop("old2")])).unwrap();
    state.apply(10, &at(70, vec![status("new2", TaskState::Failed, "boom")])).unwrap();
    // A refused entry changes no slot.
    let before = state.clone();
    let refused = at(80, vec![status("old2", TaskState::Shutdown, ""), create("s2", "web")]);
    assert!(state.apply(11, &refused).is_err());
    assert_eq!(state.rollouts("s1"), before.rollouts("s1"));

    let record = &state.rollouts("s1")[0];
    let slots: Vec<&RolloutSlot> = record.batches.iter().flat_map(|b| &b.slots).collect();
    let expected_one = RolloutSlot {
        name: "web.1".into(),
        new_task: "new1".into(),
        node: "n1".into(),
        old_tasks: vec!["old1".into()],
        stop_requested_at: Some(10),
        stopped_at: Some(20),
        started_at: Some(30),
        running_at: Some(40),
        failure: None,
        failed_at: None,
    };
    assert_eq!(*slots[0], expected_one);
    let expected_two = RolloutSlot {
        name: "web.2".into(),
        new_task: "new2".into(),
        node: "n1".into(),
        old_tasks: vec!["old2".into()],
        stop_requested_at: Some(60),
        stopped_at: None,
        started_at: None,
        running_at: None,
        failure: Some("failed: boom".into()),
        failed_at: Some(70),
    };
    assert_eq!(*slots[1], expected_two);
    // A restored manager records the rest of the timeline the same way.
    let mut restored = State::restore(&state.snapshot()).unwrap();
    assert_eq!(restored, state);
    for s in [&mut state, &mut restored] {
        s.apply(12, &at(90, vec![status("old2", TaskState::Shutdown, "")])).unwrap();
    }
    assert_eq!(restored.rollouts("s1"), state.rollouts("s1"));
    assert_eq!(state.rollouts("s1")[0].batches[1].slots[0].stopped_at, Some(90));
}

/// `ReleaseTask` raises a prepared task (to RUNNING without a gate, or with the new gate) and only
/// a prepared one still waiting; a prepared task that ended meanwhile is replaced by the
/// release's fallback task, so the slot still gets its replacement in the same entry.
#[test]
fn a_release_raises_a_waiting_prepared_task_or_puts_its_fallback() {
    let mut state = State::default();
    state.apply(1, &batch(vec![create("s1", "web")])).unwrap();
    let prepared = |id: &str| Task {
        desired_state: TaskState::Ready,
        start_gate: Some(shoal_types::StartGate::prepared_ahead()),
        ..task(id, "s1", "")
    };
    state
        .apply(2, &batch(vec![Action::PutTask { task: prepared("p1") }, Action::PutTask { task: prepared("p2") }]))
        .unwrap();
    let fallback = |id: &str| Task { desired_state: TaskState::Running, ..task(id, "s1", "") };

    state
        .apply(3, &batch(vec![Action::ReleaseTask { id: "p1".into(), gate: None, otherwise: fallback("f1") }]))
        .unwrap();
    let p1 = state.task("p1").unwrap();
    assert_eq!((p1.desired_state, p1.start_gate.is_none(), p1.prepared_ahead()), (TaskState::Running, true, false));
    assert!(state.task("f1").is_none(), "no fallback when the release applies");

    let rejected = TaskStatus { state: TaskState::Rejected, timestamp: 5, ..Default::default() };
    state.apply(4, &batch(vec![Action::SetTaskStatus { id: "p2".into(), status: rejected }])).unwrap();
    state
        .apply(5, &batch(vec![Action::ReleaseTask { id: "p2".into(), gate: None, otherwise: fallback("f2") }]))
        .unwrap();
    assert_eq!(state.task("p2").unwrap().desired_state, TaskState::Ready, "an ended task is not raised");
    assert_eq!(state.task("f2").unwrap().desired_state, TaskState::Running, "the fallback took its place");
}

fn data_action(id: &str, kind: shoal_types::DataKind, name: &str) -> Action {
    let spec = shoal_types::DataSpec { name: name.into(), labels: Default::default(), data: b"value".to_vec() };
    Action::CreateData {
        object: shoal_types::DataObject {
            id: id.into(),
            kind,
            version: 0,
            created_at: 0,
            updated_at: 0,
            spec,
            size: 0,
        },
    }
}

fn spec_using(name: &str, secret: &str) -> ServiceSpec {
    let mut spec = ServiceSpec::new(name, "busybox");
    spec.task.container.secrets = vec![shoal_types::DataReference::named(secret)];
    spec
}

#[test]
fn secrets_and_configs_are_named_per_kind_used_by_name_and_kept_while_used() {
    use shoal_types::DataKind::{Config, Secret};
    let mut state = State::default();
    state.apply(2, &batch(vec![data_action("d1", Secret, "pw"), data_action("d2", Config, "pw")])).unwrap();
    let secret = state.data_by_name(Secret, "pw").unwrap();
    assert_eq!((secret.id.as_str(), secret.version, secret.size), ("d1", 2, 5));
    assert_eq!(state.data_by_name(Config, "pw").unwrap().id, "d2", "a secret and a config may share a name");
    let err = state.apply(3, &batch(vec![data_action("d3", Secret, "pw")])).unwrap_err();
    assert_eq!(err, StoreError::AlreadyExists { kind: "secret", name: "pw".into() });

    // A service may not name a secret that does not exist; one that does is kept while used.
    let err = state
        .apply(4, &batch(vec![Action::CreateService { id: "s1".into(), spec: spec_using("web", "nosuch") }]))
        .unwrap_err();
    assert_eq!(err, StoreError::NotFound { kind: "secret", id: "nosuch".into() });
    state.apply(5, &batch(vec![Action::CreateService { id: "s1".into(), spec: spec_using("web", "pw") }])).unwrap();
    let err = state.apply(6, &batch(vec![Action::RemoveData { id: "d1".into() }])).unwrap_err();
    assert_eq!(err.to_string(), "secret pw is in use by service web: remove it from them first (--secret-rm)");
    // No longer in the spec but in the previous one, which a rollback makes current again.
    let update =
        Action::UpdateService { id: "s1".into(), expected_version: 5, spec: ServiceSpec::new("web", "busybox") };
    state.apply(7, &batch(vec![update])).unwrap();
    let err = state.apply(8, &batch(vec![Action::RemoveData { id: "d1".into() }])).unwrap_err();
    assert!(matches!(err, StoreError::DataInPreviousSpec { .. }), "{err}");
    assert!(err.to_string().contains("update the service once more (e.g. --force)"), "{err}");
    state.apply(9, &batch(vec![Action::RemoveService { id: "s1".into() }])).unwrap();
    // The config of the same name was never in use; a refused batch put nothing back wrong.
    state
        .apply(10, &batch(vec![Action::RemoveData { id: "d1".into() }, Action::RemoveData { id: "d2".into() }]))
        .unwrap();
    assert!(state.data_by_name(Secret, "pw").is_none() && state.data_by_name(Config, "pw").is_none());

    // A failed batch undoes a creation; a snapshot keeps what exists.
    let err = state.apply(11, &batch(vec![data_action("d4", Secret, "db"), Action::RemoveData { id: "gone".into() }]));
    assert!(err.is_err());
    assert!(state.data_by_name(Secret, "db").is_none(), "undone");
    state.apply(12, &batch(vec![data_action("d4", Secret, "db")])).unwrap();
    let mut snapshot = Vec::new();
    state.write_snapshot(&mut snapshot).unwrap();
    let restored = State::restore(&snapshot).unwrap();
    assert_eq!(restored.data_by_name(Secret, "db").unwrap().spec.data, b"value");
}

fn network_action(id: &str, name: &str) -> Action {
    let spec = shoal_types::DataSpec { name: name.into(), labels: Default::default(), data: Vec::new() };
    Action::CreateData {
        object: shoal_types::DataObject {
            id: id.into(),
            kind: shoal_types::DataKind::Network,
            version: 0,
            created_at: 0,
            updated_at: 0,
            spec,
            size: 0,
        },
    }
}

fn spec_on(name: &str, network: &str) -> ServiceSpec {
    let mut spec = ServiceSpec::new(name, "busybox");
    spec.task.networks = vec![network.to_string()];
    spec
}

/// Updates service `id` (named as its id) to a spec on no network, at raft index `index`.
fn take_off_networks(state: &mut State, index: u64, id: &str) {
    let version = state.service(id).unwrap().version;
    let update =
        Action::UpdateService { id: id.into(), expected_version: version, spec: ServiceSpec::new(id, "busybox") };
    state.apply(index, &batch(vec![update])).unwrap();
}

fn cluster_with_pool(pool: &str) -> Action {
    let mut cluster = shoal_types::Cluster { id: "c".into(), version: 0, created_at: 0, spec: Default::default() };
    cluster.spec.vip_pool = pool.into();
    Action::InitCluster { cluster }
}

#[test]
fn services_on_a_network_get_the_lowest_free_virtual_ip_and_keep_it_until_removed() {
    let mut state = State::default();
    state.apply(1, &batch(vec![cluster_with_pool("10.9.0.0/30"), network_action("n1", "net")])).unwrap();
    // No network yet: refused, nothing written.
    let err =
        state.apply(2, &batch(vec![Action::CreateService { id: "a".into(), spec: spec_on("a", "nope") }])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "service a: task.networks[0]: network nope not found (create it first: shoal network create nope)"
    );
    // Off a network: no address.
    state.apply(3, &batch(vec![create("plain", "plain")])).unwrap();
    assert_eq!(state.service("plain").unwrap().virtual_ip, "");
    // A /30 has two usable addresses.
    state.apply(4, &batch(vec![Action::CreateService { id: "a".into(), spec: spec_on("a", "net") }])).unwrap();
    state.apply(5, &batch(vec![Action::CreateService { id: "b".into(), spec: spec_on("b", "net") }])).unwrap();
    assert_eq!(state.service("a").unwrap().virtual_ip, "10.9.0.1");
    assert_eq!(state.service("b").unwrap().virtual_ip, "10.9.0.2");
    let before = state.clone();
    let err =
        state.apply(6, &batch(vec![Action::CreateService { id: "c".into(), spec: spec_on("c", "net") }])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "service c: task.networks: every virtual IP of the cluster's pool 10.9.0.0/30 is given (the pool is set by shoal-manager --vip-pool at init); remove a service on a network first"
    );
    assert!(state.service("c").is_none() && state.vips == before.vips, "a refused create changes nothing");
    // A service moved off its network keeps its address; one joining takes none while full.
    take_off_networks(&mut state, 7, "a");
    assert_eq!(state.service("a").unwrap().virtual_ip, "10.9.0.1");
    let version = state.service("plain").unwrap().version;
    let err = state
        .apply(
            8,
            &batch(vec![Action::UpdateService {
                id: "plain".into(),
                expected_version: version,
                spec: spec_on("plain", "net"),
            }]),
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::NoVirtualIp { .. }), "{err}");
    // A rollback keeps it; a removed service's address is the next one given.
    let version = state.service("a").unwrap().version;
    state.apply(9, &batch(vec![Action::RollbackService { id: "a".into(), expected_version: version }])).unwrap();
    assert_eq!(state.service("a").unwrap().virtual_ip, "10.9.0.1");
    state.apply(10, &batch(vec![Action::RemoveService { id: "a".into() }])).unwrap();
    state.apply(11, &batch(vec![Action::CreateService { id: "c".into(), spec: spec_on("c", "net") }])).unwrap();
    assert_eq!(state.service("c").unwrap().virtual_ip, "10.9.0.1");
    // The index is rebuilt from a snapshot.
    let restored = State::restore(&state.snapshot()).unwrap();
    assert_eq!(restored, state);
}

#[test]
fn a_network_is_kept_while_a_service_or_its_previous_spec_is_on_it() {
    let mut state = State::default();
    state
        .apply(
            1,
            &batch(vec![
                network_action("n1", "net"),
                Action::CreateService { id: "a".into(), spec: spec_on("a", "net") },
            ]),
        )
        .unwrap();
    let err = state.apply(2, &batch(vec![Action::RemoveData { id: "n1".into() }])).unwrap_err();
    assert_eq!(err.to_string(), "network net is in use by service a: remove it from them first (--network-rm)");
    take_off_networks(&mut state, 3, "a");
    let err = state.apply(4, &batch(vec![Action::RemoveData { id: "n1".into() }])).unwrap_err();
    assert!(matches!(err, StoreError::DataInPreviousSpec { .. }), "{err}");
    state.apply(5, &batch(vec![Action::RemoveService { id: "a".into() }])).unwrap();
    state.apply(6, &batch(vec![Action::RemoveData { id: "n1".into() }])).unwrap();
    assert!(state.data_by_name(shoal_types::DataKind::Network, "net").is_none());
}

#[test]
fn a_removed_services_virtual_ip_is_given_again_only_once_the_pool_came_round() {
    let mut state = State::default();
    state.apply(1, &batch(vec![cluster_with_pool("10.9.0.0/29"), network_action("n1", "net")])).unwrap();
    for (i, id) in ["a", "b"].into_iter().enumerate() {
        state
            .apply(2 + i as u64, &batch(vec![Action::CreateService { id: id.into(), spec: spec_on(id, "net") }]))
            .unwrap();
    }
    state.apply(4, &batch(vec![Action::RemoveService { id: "a".into() }])).unwrap();
    let given: Vec<String> = ["c", "d", "e", "f", "g"]
        .into_iter()
        .enumerate()
        .map(|(i, id)| {
            state
                .apply(5 + i as u64, &batch(vec![Action::CreateService { id: id.into(), spec: spec_on(id, "net") }]))
                .unwrap();
            state.service(id).unwrap().virtual_ip.clone()
        })
        .collect();
    // .1 (a's) is given last, once .3 to .6 are.
    assert_eq!(given, ["10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6", "10.9.0.1"]);
    // The cursor is part of the state: a snapshot gives the next one as the state does.
    let mut restored = State::restore(&state.snapshot()).unwrap();
    state.apply(10, &batch(vec![Action::RemoveService { id: "d".into() }])).unwrap();
    restored.apply(10, &batch(vec![Action::RemoveService { id: "d".into() }])).unwrap();
    for s in [&mut state, &mut restored] {
        s.apply(11, &batch(vec![Action::CreateService { id: "h".into(), spec: spec_on("h", "net") }])).unwrap();
    }
    assert_eq!(state.service("h").unwrap().virtual_ip, "10.9.0.4");
    assert_eq!(restored, state);
}
