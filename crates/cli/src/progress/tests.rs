//! Frames, renderings and outcomes for small fixtures.

use shoal_types::{
    Constraint, GoDuration, Node, NodeDescription, NodeSpec, NodeStatus, Service, ServiceMode, ServiceSpec, Task,
    TaskOrigin, TaskSpec, TaskState, TaskStatus, UpdateState, UpdateStatus,
};

use super::*;

const NOW: u64 = 1_709_300_000_000;
const FULL: &str = "[==================================================>]";

fn service(replicas: u64, status: Option<(UpdateState, &str)>) -> Service {
    let mut spec = ServiceSpec::new("web", "shoal/busybox:2");
    spec.mode = ServiceMode::Replicated { replicas };
    Service {
        id: "svc1".to_string(),
        version: 30,
        created_at: NOW - 60_000,
        updated_at: NOW - 10_000,
        spec,
        spec_version: 20,
        previous_spec: None,
        previous_spec_version: None,
        update_status: status.map(|(state, message)| UpdateStatus {
            state,
            message: message.to_string(),
            started_at: Some(NOW - 10_000),
            completed_at: None,
            slots: None,
            step: None,
        }),
        status_version: 0,
        revision: 1,
        rollout_id: String::new(),
        group: None,
        virtual_ip: String::new(),
    }
}

fn global(status: Option<(UpdateState, &str)>) -> Service {
    let mut s = service(0, status);
    s.spec.mode = ServiceMode::Global;
    s
}

fn old_spec(service: &Service) -> TaskSpec {
    let mut spec = service.spec.task.clone();
    spec.container.image = "shoal/busybox:1".to_string();
    spec
}

/// A task of `service` running its current spec (version 20) in `slot`.
fn task(service: &Service, slot: u64, state: TaskState) -> Task {
    Task {
        id: format!("t{slot}-{}", state.as_str()),
        version: 1,
        created_at: NOW - 5_000 + slot,
        updated_at: NOW - 5_000,
        service_id: service.id.clone(),
        service_name: service.spec.name.clone(),
        slot,
        node_id: String::new(),
        spec_version: service.spec_version,
        spec: service.spec.task.clone().into(),
        endpoint: service.spec.endpoint.clone(),
        desired_state: TaskState::Running,
        status: TaskStatus { state, timestamp: NOW - 5_000, ..Default::default() },
        origin: TaskOrigin::Update,
        start_gate: None,
        running_at: (state == TaskState::Running).then_some(NOW - 5_000),
        restart_failures: 0,
        remove_container: false,
        kept: false,
        adopts: None,
    }
}

/// A task from before the update (version 10, the old image), created earlier.
fn old_task(service: &Service, slot: u64, state: TaskState, desired: TaskState) -> Task {
    let mut t = task(service, slot, state);
    t.id = format!("old{slot}");
    t.created_at = NOW - 50_000;
    t.spec_version = 10;
    t.spec = old_spec(service).into();
    t.desired_state = desired;
    t
}

fn on_node(mut t: Task, node: &str) -> Task {
    t.slot = 0;
    t.id = format!("{}-{node}", t.id);
    t.node_id = node.to_string();
    t
}

fn with_err(mut t: Task, err: &str) -> Task {
    t.status.err = err.to_string();
    t
}

fn node(id: &str, labels: &[(&str, &str)]) -> Node {
    Node {
        id: id.to_string(),
        version: 1,
        created_at: 0,
        updated_at: 0,
        spec: NodeSpec {
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        },
        description: NodeDescription { hostname: id.to_string(), ..Default::default() },
        status: NodeStatus::default(),
        manager: None,
    }
}

/// The update in flight: slot 1 replaced and running, slot 2 starting, slot 3's new task cannot
/// be placed, slots 4–6 still on the old spec.
fn mid_update() -> (Service, Vec<Task>) {
    let s = service(
        6,
        Some((
            UpdateState::Updating,
            "update in progress; web.3: no suitable node (1 node not available for new tasks)",
        )),
    );
    let tasks = vec![
        old_task(&s, 1, TaskState::Shutdown, TaskState::Shutdown),
        task(&s, 1, TaskState::Running),
        old_task(&s, 2, TaskState::Shutdown, TaskState::Shutdown),
        task(&s, 2, TaskState::Starting),
        old_task(&s, 3, TaskState::Shutdown, TaskState::Shutdown),
        with_err(task(&s, 3, TaskState::Pending), "no suitable node (1 node not available for new tasks)"),
        old_task(&s, 4, TaskState::Running, TaskState::Running),
        old_task(&s, 5, TaskState::Running, TaskState::Running),
        old_task(&s, 6, TaskState::Running, TaskState::Running),
    ];
    (s, tasks)
}

#[test]
fn bars_follow_the_state_ordinal_out_of_nine() {
    let lengths: Vec<usize> = [
        TaskState::New,
        TaskState::Pending,
        TaskState::Assigned,
        TaskState::Accepted,
        TaskState::Preparing,
        TaskState::Ready,
        TaskState::Starting,
        TaskState::Running,
    ]
    .into_iter()
    .map(|state| bar(state_steps(state)).matches('=').count())
    .collect();
    assert_eq!(lengths, vec![5, 11, 16, 22, 27, 33, 38, 50]);
    assert_eq!(bar(state_steps(TaskState::Running)), FULL);
    assert_eq!(bar(state_steps(TaskState::New)), format!("[=====>{}]", " ".repeat(45)));
    assert!(bar(0).starts_with("[>"));
    assert_eq!(bar(7).chars().count(), 53, "every bar has the same width");
}

#[test]
fn an_update_in_flight_counts_only_current_running_slots() {
    let (s, tasks) = mid_update();
    let f = frame(&s, &tasks, NOW);
    assert_eq!((f.running, f.total, f.all_running), (1, 6, false));
    assert_eq!(f.verify, None);
    assert_eq!(
        f.tty_lines(),
        vec![
            "overall progress: 1 out of 6 tasks".to_string(),
            format!("1/6: running   {FULL}"),
            format!("2/6: starting  [{}>{}]", "=".repeat(38), " ".repeat(12)),
            "3/6: pending   no suitable node (1 node not available for new tasks)".to_string(),
            "4/6:".to_string(),
            "5/6:".to_string(),
            "6/6:".to_string(),
        ]
    );
    let plain: Vec<String> = f.plain_lines().into_iter().map(|(_, line)| line).collect();
    assert_eq!(
        plain,
        vec![
            "overall progress: 1 out of 6 tasks",
            "web.1: running",
            "web.2: starting",
            "web.3: pending: no suitable node (1 node not available for new tasks)",
        ]
    );
}

#[test]
fn failed_and_rejected_slots_show_state_and_error() {
    let s = service(3, Some((UpdateState::Updating, "update in progress")));
    let tasks = vec![
        task(&s, 1, TaskState::Running),
        with_err(task(&s, 2, TaskState::Failed), "task: non-zero exit (1)"),
        with_err(task(&s, 3, TaskState::Rejected), "pull access denied for shoal/nope\nretry later"),
    ];
    let f = frame(&s, &tasks, NOW);
    assert_eq!(
        f.tty_lines(),
        vec![
            "overall progress: 1 out of 3 tasks",
            "1/3: running   [==================================================>]",
            "2/3: failed    task: non-zero exit (1)",
            "3/3: rejected  pull access denied for shoal/nope retry later",
        ]
    );
    let plain: Vec<String> = f.plain_lines().into_iter().map(|(_, line)| line).collect();
    assert_eq!(
        plain,
        vec![
            "overall progress: 1 out of 3 tasks",
            "web.1: running",
            "web.2: failed: task: non-zero exit (1)",
            "web.3: rejected: pull access denied for shoal/nope retry later",
        ]
    );
}

#[test]
fn long_errors_are_cut_on_a_terminal_only() {
    let s = service(1, None);
    let err = "x".repeat(100);
    let f = frame(&s, &[with_err(task(&s, 1, TaskState::Failed), &err)], NOW);
    assert_eq!(f.tty_lines()[1], format!("1/1: failed    {}…", "x".repeat(74)));
    assert_eq!(f.plain_lines()[1].1, format!("web.1: failed: {err}"));
}

#[test]
fn a_slot_that_ended_without_replacement_still_shows_its_failure() {
    let s = service(2, None);
    let mut failed = with_err(task(&s, 2, TaskState::Failed), "task: non-zero exit (2)");
    failed.desired_state = TaskState::Shutdown;
    let f = frame(&s, &[task(&s, 1, TaskState::Running), failed], NOW);
    assert_eq!(f.tty_lines()[2], "2/2: failed    task: non-zero exit (2)");
    assert_eq!((f.running, f.all_running), (1, false));
}

#[test]
fn a_restarted_slot_shows_its_replacement() {
    let s = service(1, None);
    let mut failed = with_err(task(&s, 1, TaskState::Failed), "task: non-zero exit (1)");
    failed.desired_state = TaskState::Shutdown;
    let mut replacement = task(&s, 1, TaskState::New);
    replacement.id = "t1-restart".into();
    replacement.created_at = failed.created_at + 1;
    replacement.desired_state = TaskState::Ready;
    let f = frame(&s, &[failed, replacement], NOW);
    assert_eq!(f.tty_lines()[1], format!("1/1: new       [=====>{}]", " ".repeat(45)));
}

#[test]
fn all_current_and_running_while_updating_waits_for_the_monitor() {
    let mut s = service(2, Some((UpdateState::Updating, "update in progress")));
    s.spec.update_config.monitor = GoDuration::from_secs(5);
    let mut a = task(&s, 1, TaskState::Running);
    a.running_at = Some(NOW - 3_000);
    let mut b = task(&s, 2, TaskState::Running);
    b.running_at = Some(NOW - 1_200);
    let tasks = vec![old_task(&s, 1, TaskState::Shutdown, TaskState::Shutdown), a, b];
    let f = frame(&s, &tasks, NOW);
    assert_eq!(f.verify, Some(Verify::Waiting { seconds: 4 }), "5s from the last task seen running, 1.2s ago");
    assert_eq!(
        f.tty_lines(),
        vec![
            "overall progress: 2 out of 2 tasks".to_string(),
            format!("1/2: running   {FULL}"),
            format!("2/2: running   {FULL}"),
            "verify: Waiting 4 seconds to verify that tasks are stable...".to_string(),
        ]
    );
    assert_eq!(f.plain_lines().last().unwrap().1, "verify: waiting for tasks to be stable");
    // Counting down, never below 1 while the manager has not said it completed.
    assert_eq!(frame(&s, &tasks, NOW + 2_500).verify, Some(Verify::Waiting { seconds: 2 }));
    assert_eq!(frame(&s, &tasks, NOW + 60_000).verify, Some(Verify::Waiting { seconds: 1 }));
    // A clock behind the manager's shows the whole window, not more.
    assert_eq!(frame(&s, &tasks, NOW - 60_000).verify, Some(Verify::Waiting { seconds: 5 }));
    // A delay at least as long as the monitor makes the manager wait delay + delay + 1s.
    s.spec.update_config.delay = GoDuration::from_secs(5);
    assert_eq!(frame(&s, &tasks, NOW).verify, Some(Verify::Waiting { seconds: 10 }));
}

#[test]
fn a_rollback_uses_the_rollback_monitor() {
    let mut s = service(1, Some((UpdateState::RollbackStarted, MANUAL_ROLLBACK_MESSAGE)));
    s.spec.update_config.monitor = GoDuration::from_secs(30);
    s.spec.rollback_config.monitor = GoDuration::from_secs(2);
    let mut t = task(&s, 1, TaskState::Running);
    t.running_at = None;
    assert_eq!(frame(&s, &[t], NOW).verify, Some(Verify::Waiting { seconds: 2 }));
}

#[test]
fn completed_says_converged_with_the_service_name() {
    let s = service(1, Some((UpdateState::Completed, "update completed")));
    let f = frame(&s, &[task(&s, 1, TaskState::Running)], NOW);
    assert_eq!(f.tty_lines().last().unwrap(), "verify: Service web converged");
    assert_eq!(f.plain_lines().last().unwrap().1, "verify: Service web converged");
}

#[test]
fn paused_shows_no_verify_line() {
    let s = service(1, Some((UpdateState::Paused, "update paused due to failure or early termination of task t1")));
    let f = frame(&s, &[task(&s, 1, TaskState::Running)], NOW);
    assert_eq!(f.verify, None);
}

#[test]
fn a_rollback_is_worded_as_one_and_counts_the_restored_spec() {
    // After an automatic rollback the restored spec has a new version: tasks that kept the old
    // spec are current by their spec, the failed update's tasks are not.
    let mut s = service(
        3,
        Some((
            UpdateState::RollbackStarted,
            "update rolled back due to failure or early termination of task t2-failed",
        )),
    );
    s.spec.task = old_spec(&s);
    s.spec_version = 25;
    let mut kept = old_task(&s, 1, TaskState::Running, TaskState::Running);
    kept.spec = s.spec.task.clone().into();
    let mut updated = task(&s, 2, TaskState::Running);
    updated.spec_version = 20;
    std::sync::Arc::make_mut(&mut updated.spec).container.image = "shoal/busybox:2".into();
    let mut restored = task(&s, 3, TaskState::Preparing);
    restored.spec_version = 25;
    let f = frame(&s, &[kept, updated, restored], NOW);
    assert_eq!(
        f.tty_lines(),
        vec![
            "rolling back update: 1 out of 3 tasks".to_string(),
            format!("1/3: running   {FULL}"),
            "2/3:".to_string(),
            format!("3/3: preparing [{}>{}]", "=".repeat(27), " ".repeat(23)),
            "rollback: update rolled back due to failure or early termination of task t2-failed".to_string(),
        ]
    );
    let plain: Vec<String> = f.plain_lines().into_iter().map(|(_, line)| line).collect();
    assert_eq!(
        plain,
        vec![
            "rolling back update: 1 out of 3 tasks",
            "web.1: running",
            "web.3: preparing",
            "rollback: update rolled back due to failure or early termination of task t2-failed",
        ]
    );
}

#[test]
fn a_completed_rollback_says_so_and_converged() {
    let s = service(1, Some((UpdateState::RollbackCompleted, "rollback completed")));
    let f = frame(&s, &[task(&s, 1, TaskState::Running)], NOW);
    assert_eq!(
        f.tty_lines(),
        vec![
            "rolling back update: 1 out of 1 tasks".to_string(),
            format!("1/1: running   {FULL}"),
            "rollback: rollback completed".to_string(),
            "verify: Service web converged".to_string(),
        ]
    );
}

#[test]
fn without_an_update_status_running_current_tasks_are_convergence() {
    // Created, scaled, or changed in a way that replaces no task (labels, replicas).
    let s = service(2, None);
    let mut labels_only = task(&s, 1, TaskState::Running);
    labels_only.spec_version = 10;
    let tasks = vec![labels_only, task(&s, 2, TaskState::Running)];
    let f = frame(&s, &tasks, NOW);
    assert!(f.all_running);
    assert_eq!(f.verify, Some(Verify::Converged));
    // An update that will replace tasks has no status yet at first: old tasks do not count.
    let tasks = vec![
        old_task(&s, 1, TaskState::Running, TaskState::Running),
        old_task(&s, 2, TaskState::Running, TaskState::Running),
    ];
    let f = frame(&s, &tasks, NOW);
    assert_eq!((f.running, f.all_running, f.verify), (0, false, None));
}

#[test]
fn an_endpoint_change_makes_tasks_out_of_date() {
    let mut s = service(1, None);
    let t = {
        let mut t = task(&s, 1, TaskState::Running);
        t.spec_version = 10;
        t
    };
    s.spec.endpoint.ports.push(shoal_types::PortConfig {
        target: 80,
        published: 8080,
        protocol: Default::default(),
        mode: Default::default(),
    });
    assert!(!up_to_date(&s, &t, None));
}

#[test]
fn a_placement_only_change_keeps_tasks_on_fitting_nodes() {
    let mut s = service(2, None);
    let mut a = task(&s, 1, TaskState::Running);
    a.spec_version = 10;
    a.node_id = "n1".into();
    let mut b = task(&s, 2, TaskState::Running);
    b.spec_version = 10;
    b.node_id = "n2".into();
    s.spec.task.placement.constraints.push(Constraint::parse("node.labels.zone==a").unwrap());
    let tasks = vec![a, b];
    assert!(needs_nodes(&s, &tasks));
    let nodes = vec![node("n1", &[("zone", "a")]), node("n2", &[("zone", "b")])];
    let f = frame_on(&s, &tasks, Some(&nodes), NOW);
    assert_eq!((f.running, f.all_running), (1, false));
    let f = frame(&s, &tasks, NOW);
    assert_eq!((f.running, f.all_running), (2, true), "without nodes they are taken to fit");
}

#[test]
fn scaled_away_slots_are_not_shown() {
    let s = service(1, None);
    let mut removed = task(&s, 2, TaskState::Shutdown);
    removed.desired_state = TaskState::Remove;
    let f = frame(&s, &[task(&s, 1, TaskState::Running), removed], NOW);
    assert_eq!(f.slots.len(), 1);
    assert!(f.all_running);
}

/// Issue 21 (changes the case above, where the removed task still ran and that counted as
/// converged): scaling 6 -> 3 counts only the slots that remain, and is not converged while a
/// removed slot's task still runs (`service ls` would show 6/3).
#[test]
fn scaling_down_counts_only_remaining_slots_and_waits_for_removed_tasks() {
    let s = service(3, None);
    // Before the orchestrator acted: six slots meant to run, one of them still starting.
    let mut tasks: Vec<Task> = (1..=6).map(|slot| task(&s, slot, TaskState::Running)).collect();
    tasks[1] = task(&s, 2, TaskState::Starting);
    let f = frame(&s, &tasks, NOW);
    assert_eq!(f.header, "overall progress: 3 out of 3 tasks");
    let names: Vec<&str> = f.slots.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["web.1", "web.3", "web.4"], "running slots first, then the lowest");
    assert_eq!((f.running, f.total, f.all_running, f.verify), (3, 3, false, None));

    // The orchestrator removed slots 4-6; their containers still run.
    for t in &mut tasks[3..] {
        t.desired_state = TaskState::Remove;
    }
    tasks[1] = task(&s, 2, TaskState::Running);
    let f = frame(&s, &tasks, NOW);
    assert_eq!(f.header, "overall progress: 3 out of 3 tasks");
    assert_eq!(f.slots.len(), 3);
    assert_eq!((f.all_running, f.verify), (false, None), "removed tasks still run");
    assert!(Watch::new(Operation::Scale, &s).outcome(&s, &f).is_none());

    // Two have stopped, one is gone: converged.
    tasks[3].status.state = TaskState::Shutdown;
    tasks[4].status.state = TaskState::Shutdown;
    tasks.pop();
    let f = frame(&s, &tasks, NOW);
    assert_eq!((f.running, f.total, f.all_running, f.verify), (3, 3, true, Some(Verify::Converged)));
    assert_eq!(code(Watch::new(Operation::Scale, &s).outcome(&s, &f)), Some(0));
}

#[test]
fn at_most_twenty_slot_lines_on_a_terminal() {
    let s = service(25, None);
    let tasks: Vec<Task> = (1..=25).map(|slot| task(&s, slot, TaskState::Running)).collect();
    let f = frame(&s, &tasks, NOW);
    let lines = f.tty_lines();
    assert_eq!(lines.len(), 1 + MAX_BARS + 1);
    assert_eq!(lines[20], format!("20/25: running   {FULL}"));
    assert_eq!(f.plain_lines().len(), 1 + 25 + 1, "plain output names every slot");
}

#[test]
fn global_services_show_one_line_per_node() {
    let s = global(None);
    let f = frame(&s, &[], NOW);
    assert_eq!(f.header, "overall progress: waiting for new tasks");
    assert!(!f.all_running, "no tasks yet is not convergence");
    let tasks = vec![
        on_node(task(&s, 1, TaskState::Running), "n1aaaaaaaaaaaaaaaaaaaaaaa"),
        on_node(task(&s, 1, TaskState::Assigned), "n2bbbbbbbbbbbbbbbbbbbbbbb"),
    ];
    let f = frame(&s, &tasks, NOW);
    assert_eq!(
        f.tty_lines(),
        vec![
            "overall progress: 1 out of 2 tasks".to_string(),
            format!("n1aaaaaaaaaa: running   {FULL}"),
            format!("n2bbbbbbbbbb: assigned  [{}>{}]", "=".repeat(16), " ".repeat(34)),
        ]
    );
    assert_eq!(f.plain_lines()[1].1, "web.n1aaaaaaaaaaaaaaaaaaaaaaa: running");
}

#[test]
fn plain_output_prints_only_what_changed() {
    let s = service(2, None);
    let mut plain = Plain::default();
    let first = frame(&s, &[task(&s, 1, TaskState::Running), task(&s, 2, TaskState::Pending)], NOW);
    assert_eq!(plain.render(&first), "overall progress: 1 out of 2 tasks\nweb.1: running\nweb.2: pending\n");
    assert_eq!(plain.render(&first), "");
    let second = frame(&s, &[task(&s, 1, TaskState::Running), task(&s, 2, TaskState::Running)], NOW);
    assert_eq!(
        plain.render(&second),
        "overall progress: 2 out of 2 tasks\nweb.2: running\nverify: Service web converged\n"
    );
    assert!(!plain.render(&first).contains('\x1b'));
}

#[test]
fn a_terminal_frame_is_redrawn_in_place() {
    let mut tty = Tty::new(80);
    let first = tty.render(&["a".to_string(), "b".to_string()]);
    assert_eq!(first, "\r\x1b[2Ka\n\r\x1b[2Kb\n");
    assert_eq!(tty.render(&["a".to_string(), "b".to_string()]), "", "nothing changed");
    let grown = tty.render(&["a".to_string(), "c".to_string(), "d".to_string()]);
    assert_eq!(grown, "\x1b[2A\r\x1b[2Ka\n\r\x1b[2Kc\n\r\x1b[2Kd\n");
    let shrunk = tty.render(&["e".to_string()]);
    assert_eq!(shrunk, "\x1b[3A\r\x1b[2Ke\n\r\x1b[2K\n\r\x1b[2K\n\x1b[2A");
    let mut narrow = Tty::new(20);
    assert_eq!(narrow.render(&["x".repeat(30)]), format!("\r\x1b[2K{}\n", "x".repeat(19)));
}

fn code(result: Option<Result<(), CliError>>) -> Option<u8> {
    result.map(|r| match r {
        Ok(()) => 0,
        Err(e) => e.exit_code(),
    })
}

fn ends(operation: Operation, seen: &[Service]) -> Option<Result<(), CliError>> {
    let mut watch = Watch::new(operation, &seen[0]);
    let mut last = None;
    for s in seen {
        watch.observe(s);
        let f = frame(s, &[task(s, 1, TaskState::Running)], NOW);
        last = watch.outcome(s, &f);
    }
    last
}

fn at(state: UpdateState, message: &str) -> Service {
    service(1, Some((state, message)))
}

#[test]
fn exit_codes_from_the_final_service() {
    let auto = "update rolled back due to failure or early termination of task t9";
    // Completed update: 0.
    assert_eq!(
        code(ends(Operation::Update, &[service(1, None), at(UpdateState::Completed, "update completed")])),
        Some(0)
    );
    // Paused: 3, with docker's message.
    let paused = ends(
        Operation::Update,
        &[service(1, None), at(UpdateState::Paused, "update paused due to failure or early termination of task t9")],
    );
    let err = paused.unwrap().unwrap_err();
    assert_eq!(err.exit_code(), 3);
    assert_eq!(err.to_string(), "service update paused: update paused due to failure or early termination of task t9");
    // Rolled back automatically, rollback completed: 4, with the rollback_started message.
    let back = ends(
        Operation::Update,
        &[
            service(1, None),
            at(UpdateState::RollbackStarted, auto),
            at(UpdateState::RollbackCompleted, "rollback completed"),
        ],
    );
    let err = back.unwrap().unwrap_err();
    assert_eq!(err.exit_code(), 4);
    assert_eq!(err.to_string(), format!("service rolled back: {auto}"));
    // A manual rollback that completed: 0.
    let manual = [
        at(UpdateState::RollbackStarted, MANUAL_ROLLBACK_MESSAGE),
        at(UpdateState::RollbackCompleted, "rollback completed"),
    ];
    assert_eq!(code(ends(Operation::Rollback, &manual)), Some(0));
    // The rollback paused: 5.
    let stuck = ends(
        Operation::Rollback,
        &[
            at(UpdateState::RollbackStarted, MANUAL_ROLLBACK_MESSAGE),
            at(UpdateState::RollbackPaused, "rollback paused due to failure or early termination of task t7"),
        ],
    );
    let err = stuck.unwrap().unwrap_err();
    assert_eq!(err.exit_code(), 5);
    assert_eq!(
        err.to_string(),
        "service rollback paused: rollback paused due to failure or early termination of task t7"
    );
    // An automatic rollback that then paused: 5 as well.
    let stuck = ends(
        Operation::Update,
        &[service(1, None), at(UpdateState::RollbackStarted, auto), at(UpdateState::RollbackPaused, "p")],
    );
    assert_eq!(code(stuck), Some(5));
}

#[test]
fn a_rollback_first_seen_completed_is_manual_only_for_rollback() {
    let done = at(UpdateState::RollbackCompleted, "rollback completed");
    assert_eq!(code(ends(Operation::Rollback, std::slice::from_ref(&done))), Some(0));
    let err = ends(Operation::Update, std::slice::from_ref(&done)).unwrap().unwrap_err();
    assert_eq!((err.exit_code(), err.to_string().as_str()), (4, "service rolled back: rollback completed"));
}

#[test]
fn create_and_scale_only_exit_0_or_1() {
    let paused = at(UpdateState::Paused, "update paused due to failure or early termination of task t9");
    assert_eq!(code(ends(Operation::Scale, &[service(1, None), paused.clone()])), Some(1));
    assert_eq!(code(ends(Operation::Create, &[service(1, None), paused])), Some(1));
    let auto = "update rolled back due to failure or early termination of task t9";
    let back = [
        service(1, None),
        at(UpdateState::RollbackStarted, auto),
        at(UpdateState::RollbackCompleted, "rollback completed"),
    ];
    let err = ends(Operation::Scale, &back).unwrap().unwrap_err();
    assert_eq!((err.exit_code(), err.to_string()), (1, format!("service rolled back: {auto}")));
}

#[test]
fn waiting_goes_on_until_the_status_or_the_tasks_say_done() {
    let s = service(1, None);
    let watch = Watch::new(Operation::Create, &s);
    let f = frame(&s, &[task(&s, 1, TaskState::Starting)], NOW);
    assert!(watch.outcome(&s, &f).is_none());
    let f = frame(&s, &[task(&s, 1, TaskState::Running)], NOW);
    assert_eq!(code(watch.outcome(&s, &f)), Some(0));
    for state in [UpdateState::Updating, UpdateState::RollbackStarted] {
        let s = at(state, "x");
        let f = frame(&s, &[task(&s, 1, TaskState::Running)], NOW);
        assert!(Watch::new(Operation::Update, &s).outcome(&s, &f).is_none(), "{state:?} keeps waiting");
    }
}

/// A replacement holding out its restart backoff until `at`, carrying the failure it replaces.
fn held(service: &Service, slot: u64, err: &str, at: u64) -> Task {
    let mut t = with_err(task(service, slot, TaskState::New), err);
    t.id = format!("t{slot}-held-{at}");
    t.origin = TaskOrigin::Restart;
    t.desired_state = TaskState::Ready;
    t.start_gate = Some(shoal_types::StartGate {
        not_before: at,
        after_task: None,
        deadline: at,
        after_older_tasks: false,
        prepared_ahead: false,
    });
    t
}

#[test]
fn a_held_restart_shows_its_countdown_and_cause_on_the_slot_line() {
    let s = service(1, None);
    let why = "image shoal/busybox:99 not found locally (shoal never pulls images)";
    let f = frame(&s, &[held(&s, 1, why, NOW + 37_000)], NOW);
    assert_eq!(f.tty_lines()[1], format!("1/1: new       restarting in 37s: {why}"));
    assert_eq!(f.plain_lines()[1].1, format!("web.1: new: restarting in 37s: {why}"));
}

#[test]
fn plain_output_prints_a_line_per_state_change_not_per_poll() {
    let s = service(1, None);
    let why = "image shoal/busybox:99 not found locally (shoal never pulls images)";
    let mut plain = Plain::default();
    let mut out = String::new();
    // A slot that cannot come up, polled every 100 ms for 80 s: it is rejected, waits out its
    // backoff (the countdown changes every second), tries again and is rejected again.
    let mut at = NOW;
    for poll in 0..800u64 {
        let now = NOW + poll * 100;
        let attempt = poll / 200;
        let tasks = match poll % 200 {
            0..=4 => vec![task(&s, 1, TaskState::Pending)],
            5..=9 => vec![task(&s, 1, TaskState::Preparing)],
            10..=19 => vec![with_err(task(&s, 1, TaskState::Rejected), why)],
            _ => {
                if poll % 200 == 20 {
                    at = now + 5_000 * (attempt + 1);
                }
                vec![held(&s, 1, why, at)]
            }
        };
        out.push_str(&plain.render(&frame(&s, &tasks, now)));
    }
    let lines: Vec<&str> = out.lines().collect();
    // The header once, then per attempt: pending, preparing, rejected, the held restart and,
    // once its backoff has passed, the restart waiting to be placed.
    assert_eq!(lines[0], "overall progress: 0 out of 1 tasks");
    assert_eq!(lines.iter().filter(|l| l.starts_with("overall")).count(), 1);
    assert!(lines.len() <= 1 + 4 * 5, "{} lines:\n{out}", lines.len());
    assert!(lines.contains(&format!("web.1: rejected: {why}").as_str()), "{out}");
    assert!(lines.contains(&format!("web.1: new: restarting in 5s: {why}").as_str()), "{out}");
    assert!(lines.contains(&format!("web.1: new: restarting in 10s: {why}").as_str()), "{out}");
    assert!(!lines.iter().any(|l| l.contains("restarting in 4s")), "a countdown alone prints nothing:\n{out}");
}

#[test]
fn a_timeout_names_the_duration_the_count_and_a_slot_error() {
    let s = service(2, None);
    let why = "image shoal/busybox:99 not found locally (shoal never pulls images)";
    let f = frame(&s, &[task(&s, 1, TaskState::Running), held(&s, 2, why, NOW + 5_000)], NOW);
    let message = timeout_error("web", GoDuration::from_secs(5), Some(&f)).to_string();
    assert_eq!(
        message,
        format!(
            "service web did not converge within --timeout 5s (1 out of 2 tasks running; web.2: restarting in 5s: {why}); \
             it goes on converging in the cluster (see `shoal service ps web`)"
        )
    );
    let bare = timeout_error("web", GoDuration::from_secs(90), None).to_string();
    assert!(bare.starts_with("service web did not converge within --timeout 1m30s;"), "{bare}");
}

// --- Following the change stream: the view the frames are drawn from ---

/// An event as the manager's `Watch` sends it.
fn event_json(kind: &str, action: &str, index: u64, id: &str, object: serde_json::Value) -> String {
    serde_json::json!({
        "time": NOW,
        "type": kind,
        "action": action,
        "id": id,
        "service": "svc1",
        "index": index,
        "object": object,
    })
    .to_string()
}

fn task_event(action: &str, index: u64, t: &Task) -> Event {
    parse_event(&event_json("task", action, index, &t.id, serde_json::to_value(t).unwrap())).unwrap()
}

fn service_event(action: &str, index: u64, s: &Service) -> Event {
    parse_event(&event_json("service", action, index, &s.id, serde_json::to_value(s).unwrap())).unwrap()
}

fn node_event(action: &str, index: u64, n: &Node) -> Event {
    parse_event(&event_json("node", action, index, &n.id, serde_json::to_value(n).unwrap())).unwrap()
}

/// The ids of the view's tasks, sorted.
fn ids(view: &View) -> Vec<String> {
    let mut ids: Vec<String> = view.tasks().map(|t| t.id.clone()).collect();
    ids.sort();
    ids
}

fn at_version(mut t: Task, version: u64) -> Task {
    t.version = version;
    t
}

#[test]
fn events_decode_into_the_objects_they_carry() {
    let s = service(2, None);
    let t = task(&s, 1, TaskState::Running);
    let e = task_event("create", 41, &t);
    assert_eq!((e.index, e.action, e.id.as_str()), (41, Action::Create, t.id.as_str()));
    assert_eq!(e.object, Changed::Task(Box::new(t.clone())));
    let e = service_event("update", 42, &s);
    assert_eq!((e.action, e.object), (Action::Update, Changed::Service(Box::new(s.clone()))));
    let n = node("n1", &[("zone", "a")]);
    assert_eq!(node_event("remove", 43, &n).object, Changed::Node(Box::new(n)));
    // The store's tagged form of an object is read too; other types are carried as such.
    let tagged = serde_json::json!({"type": "task", "object": serde_json::to_value(&t).unwrap()});
    assert_eq!(
        parse_event(&event_json("task", "update", 44, &t.id, tagged)).unwrap().object,
        Changed::Task(Box::new(t))
    );
    let cluster = parse_event(&event_json("cluster", "update", 45, "c1", serde_json::json!({"id": "c1"}))).unwrap();
    assert_eq!(cluster.object, Changed::Other);
    // Garbage is an error naming what could not be read.
    assert!(parse_event("{").unwrap_err().starts_with("cannot decode the event sent by the manager"));
    let bad = parse_event(&event_json("task", "update", 46, "t", serde_json::json!({"id": 3}))).unwrap_err();
    assert!(bad.starts_with("cannot decode the task sent by the manager"), "{bad}");
}

#[test]
fn task_events_create_update_and_remove_tasks_of_the_view() {
    let s = service(2, None);
    let one = at_version(task(&s, 1, TaskState::Pending), 50);
    let mut view = View::new(s.clone(), vec![one.clone()], 40);
    assert!(view.take_changed(), "a new view is drawn");
    assert!(!view.take_changed());

    // Create.
    let two = at_version(task(&s, 2, TaskState::New), 51);
    assert!(view.apply(task_event("create", 51, &two)));
    assert_eq!(ids(&view), vec![one.id.clone(), two.id.clone()]);
    assert!(view.take_changed());

    // Update: the task as the event carries it replaces the one kept.
    let mut running = one.clone();
    running.status.state = TaskState::Running;
    assert!(view.apply(task_event("update", 52, &running)));
    let kept = view.tasks().find(|t| t.id == one.id).unwrap();
    assert_eq!(kept.status.state, TaskState::Running);

    // Remove.
    assert!(view.apply(task_event("remove", 53, &two)));
    assert_eq!(ids(&view), vec![one.id.clone()]);
    assert_eq!(view.resume_index(), 52, "resumes with the last index seen replayed");
}

#[test]
fn events_older_than_what_the_view_holds_are_ignored() {
    let s = service(2, None);
    let one = at_version(task(&s, 1, TaskState::Running), 60);
    let mut view = View::new(s.clone(), vec![one.clone()], 40);
    view.take_changed();

    // The read already has index 60: an earlier change of the task (the stream starts before
    // the read, and a resumed stream replays) changes nothing.
    let mut older = one.clone();
    older.status.state = TaskState::Pending;
    assert!(!view.apply(task_event("update", 55, &older)));
    assert_eq!(view.tasks().next().unwrap().status.state, TaskState::Running);
    assert!(!view.take_changed());
    // The same index is applied: one raft entry may change a task twice, in order.
    let mut same = one.clone();
    same.desired_state = TaskState::Shutdown;
    assert!(view.apply(task_event("update", 60, &same)));
    assert_eq!(view.tasks().next().unwrap().desired_state, TaskState::Shutdown);

    // A removed task stays removed: an older create or update does not bring it back.
    assert!(view.apply(task_event("remove", 70, &one)));
    assert!(!view.apply(task_event("update", 65, &one)));
    assert!(!view.apply(task_event("create", 41, &one)));
    assert!(ids(&view).is_empty());

    // Older events still count as seen for resuming, but never move it back.
    assert_eq!(view.resume_index(), 69);
    view.apply(task_event("update", 42, &one));
    assert_eq!(view.resume_index(), 69);
}

#[test]
fn service_events_update_or_remove_the_service() {
    let s = service(2, None);
    let mut view = View::new(s.clone(), Vec::new(), s.version);
    let mut updating = at(UpdateState::Updating, "update in progress");
    updating.status_version = 35;
    assert!(view.apply(service_event("update", 35, &updating)));
    assert_eq!(view.service().unwrap().update_status.as_ref().unwrap().state, UpdateState::Updating);
    // A replayed older state of the service is ignored.
    assert!(!view.apply(service_event("update", 31, &s)));
    assert_eq!(view.service().unwrap().update_status.as_ref().unwrap().state, UpdateState::Updating);
    assert!(view.apply(service_event("remove", 36, &updating)));
    assert!(view.service().is_none());
    assert!(!view.needs_nodes());
    // Another service's events (not sent to a filtered stream) change nothing.
    let mut other = service(1, None);
    other.id = "svc2".into();
    let mut view = View::new(s.clone(), Vec::new(), s.version);
    assert!(!view.apply(service_event("update", 99, &other)));
    assert!(!view.apply(task_event("create", 99, &task(&other, 1, TaskState::New))));
    assert!(ids(&view).is_empty());
}

#[test]
fn node_events_apply_once_the_nodes_were_read() {
    let mut s = service(2, None);
    let mut placed = task(&s, 1, TaskState::Running);
    placed.spec_version = 10;
    placed.node_id = "n1".into();
    s.spec.task.placement.constraints.push(Constraint::parse("node.labels.zone==a").unwrap());
    let mut view = View::new(s.clone(), vec![placed], 40);
    assert!(view.needs_nodes());
    let n1 = at_version_node(node("n1", &[("zone", "b")]), 30);
    // Before the nodes are read, their events change nothing.
    assert!(!view.apply_node(node_event("update", 41, &n1)));
    assert!(!view.has_nodes());
    view.set_nodes(vec![n1.clone()]);
    let f = frame_on(view.service().unwrap(), view.tasks(), view.nodes().as_deref(), NOW);
    assert_eq!(f.running, 0, "n1 is not in zone a");
    // n1 is relabelled: the task now fits.
    let relabelled = at_version_node(node("n1", &[("zone", "a")]), 45);
    assert!(view.apply_node(node_event("update", 45, &relabelled)));
    assert!(!view.apply_node(node_event("update", 44, &n1)), "older than what is kept");
    let f = frame_on(view.service().unwrap(), view.tasks(), view.nodes().as_deref(), NOW);
    assert_eq!(f.running, 1);
    assert!(view.apply_node(node_event("remove", 46, &relabelled)));
    assert_eq!(view.nodes().unwrap().len(), 0);
}

fn at_version_node(mut n: Node, version: u64) -> Node {
    n.version = version;
    n
}

#[test]
fn a_view_fed_by_events_draws_what_a_read_of_the_same_tasks_draws() {
    let (s, tasks) = mid_update();
    let mut view = View::new(s.clone(), Vec::new(), s.version);
    for (i, t) in tasks.iter().enumerate() {
        view.apply(task_event("create", 100 + i as u64, t));
    }
    let from_events = frame_on(view.service().unwrap(), view.tasks(), None, NOW);
    assert_eq!(from_events, frame(&s, &tasks, NOW));
    let read = View::new(s.clone(), tasks.clone(), s.version);
    assert_eq!(frame_on(read.service().unwrap(), read.tasks(), None, NOW), from_events);
}

#[test]
fn only_countdowns_make_a_frame_change_with_time() {
    let s = service(1, None);
    assert!(!frame(&s, &[task(&s, 1, TaskState::Starting)], NOW).changes_with_time());
    let why = "image shoal/busybox:99 not found locally (shoal never pulls images)";
    assert!(frame(&s, &[held(&s, 1, why, NOW + 5_000)], NOW).changes_with_time());
    let updating = at(UpdateState::Updating, "x");
    let f = frame(&updating, &[task(&updating, 1, TaskState::Running)], NOW);
    assert!(matches!(f.verify, Some(Verify::Waiting { .. })));
    assert!(f.changes_with_time());
}

#[test]
fn a_redraw_happens_when_the_view_changed_and_ends_the_wait_on_convergence() {
    let s = service(1, None);
    let starting = at_version(task(&s, 1, TaskState::Starting), 50);
    let mut view = View::new(s.clone(), vec![starting.clone()], 40);
    let mut progress = Progress { output: Output::Quiet, watch: Watch::new(Operation::Create, &s), last: None };
    assert!(progress.redraw(&mut view, NOW).is_none());
    assert_eq!(progress.last.as_ref().unwrap().header, "overall progress: 0 out of 1 tasks");
    // Nothing changed: no new frame.
    progress.last = None;
    assert!(progress.redraw(&mut view, NOW).is_none());
    assert!(progress.last.is_none());
    let mut running = starting.clone();
    running.status.state = TaskState::Running;
    view.apply(task_event("update", 51, &running));
    assert_eq!(code(progress.redraw(&mut view, NOW)), Some(0));
    assert_eq!(progress.last.as_ref().unwrap().verify, Some(Verify::Converged));
}

#[test]
fn a_service_older_than_the_change_is_not_drawn() {
    let s = service(1, None);
    let mut old = s.clone();
    old.version = 10;
    let mut view = View::new(old, vec![task(&s, 1, TaskState::Running)], 10);
    let mut progress = Progress { output: Output::Quiet, watch: Watch::new(Operation::Create, &s), last: None };
    assert!(progress.redraw(&mut view, NOW).is_none(), "converged, but not yet the service the change made");
    assert!(progress.last.is_none());
    view.apply(service_event("update", s.version, &s));
    assert_eq!(code(progress.redraw(&mut view, NOW)), Some(0));
}

#[test]
fn broken_streams_are_resumed_and_refusals_end_the_wait() {
    use tonic::{Code, Status};
    for code in [Code::Unavailable, Code::Internal, Code::Unknown, Code::Cancelled, Code::DataLoss] {
        assert!(matches!(received(Err(Status::new(code, "x"))), Err(Stop::Broken(_))), "{code:?}");
    }
    assert!(matches!(received(Ok(None)), Err(Stop::Broken(_))), "a closed stream is resumed");
    for code in [Code::PermissionDenied, Code::InvalidArgument, Code::NotFound] {
        assert!(matches!(received(Err(Status::new(code, "x"))), Err(Stop::Done(Err(_)))), "{code:?}");
    }
    let bad = pb::WatchEvent { event_json: "{".into() };
    assert!(matches!(received(Ok(Some(bad))), Err(Stop::Done(Err(_)))));
}
