//! Revision history, rollback to any revision and pause/resume by hand (issue 23, items 1, 2
//! and 4 without abort), with the real `shoal`
//! binary, a real manager and an agent running real containers. Run `cargo build --workspace
//! --bins` and `deploy/images/build.sh` first.

use std::time::Duration;

use anyhow::Result;
use shoal_tests::*;
use shoal_types::{GoDuration, Revision, Rollout, RolloutState, Service, Task, TaskOrigin, UpdateState};

/// Runs the CLI and fails with its output unless it succeeded.
use shoal_tests::shoal_ok as ok;

fn inspect(addr: &str) -> Result<Service> {
    inspect_service(addr, "web")
}

async fn wait_image(addr: &str, image: &str, replicas: usize) -> Result<()> {
    let what = format!("{replicas} tasks running {image}");
    wait_tasks(addr, "web", Duration::from_secs(60), &what, |tasks| {
        let running = running(tasks);
        running.len() == replicas && running.iter().all(|t| t.spec.container.image == image)
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_records_every_spec_change_and_rollback_goes_to_any_revision() -> Result<()> {
    let mut cluster = Cluster::start(1).await?;
    cluster.add_agent(&[]).await?;
    let addr = cluster.running_addrs()[0].clone();
    let addr = addr.as_str();

    ok(
        addr,
        &[
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            "2",
            "--change-cause",
            "first release",
            "shoal/busybox:1",
        ],
    )?;
    ok(addr, &["service", "update", "--image", "shoal/busybox:2", "web"])?;
    ok(addr, &["service", "update", "--label-add", "tier=front", "-d", "web"])?;
    ok(addr, &["service", "update", "--env-add", "MODE=fast", "web"])?;
    ok(addr, &["service", "rollback", "web"])?;
    wait_image(addr, "shoal/busybox:2", 2).await?;

    // Five revisions: the create, three updates, the rollback; each with its cause (the command
    // line when none was given), newest last.
    let table = ok(addr, &["rollout", "history", "web"])?;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 6, "{table}");
    assert!(lines[0].starts_with("REVISION") && lines[0].contains("CHANGE-CAUSE"), "{table}");
    assert!(lines[1].starts_with("1 ") && lines[1].contains("first release") && lines[1].ends_with("shoal/busybox:1"));
    assert!(lines[2].starts_with("2 ") && lines[2].contains("service update --image shoal/busybox:2 web"), "{table}");
    assert!(lines[5].starts_with("5 ") && lines[5].contains("service rollback web"), "{table}");
    let json = ok(addr, &["rollout", "history", "--format", "json", "web"])?;
    let revisions: Vec<Revision> = serde_json::from_str(&json)?;
    assert_eq!(revisions.iter().map(|r| r.number).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert!(revisions.iter().all(|r| r.created_by.starts_with("admin:")), "{revisions:?}");
    // The rollback went back to revision 3's spec (the label, no env).
    assert_eq!(*revisions[4].spec, *revisions[2].spec);
    let detail = ok(addr, &["rollout", "history", "--revision", "2", "web"])?;
    assert!(
        detail.contains("- \"image\": \"shoal/busybox:1\",") && detail.contains("+ \"image\": \"shoal/busybox:2\","),
        "{detail}"
    );

    // Back to the first image, as a new revision; a plain rollback afterwards toggles back.
    let before = inspect(addr)?;
    ok(addr, &["service", "rollback", "--to-revision", "1", "web"])?;
    wait_image(addr, "shoal/busybox:1", 2).await?;
    let service = inspect(addr)?;
    assert_eq!(service.spec, *revisions[0].spec);
    assert_eq!(service.previous_spec.as_ref(), Some(&before.spec));
    assert_eq!(service.revision, 6);
    let status = service.update_status.expect("the rollback's status");
    assert_eq!(status.state, shoal_types::UpdateState::RollbackCompleted, "{status:?}");
    ok(addr, &["rollout", "undo", "-q", "web"])?;
    wait_image(addr, "shoal/busybox:2", 2).await?;
    assert_eq!(inspect(addr)?.revision, 7);

    // An unknown revision: one clear line, non-zero, nothing changed.
    let before = inspect(addr)?;
    let out = shoal(addr, &["service", "rollback", "--to-revision", "99", "web"]);
    assert!(!out.status.success());
    assert_eq!(stderr(&out).trim(), "Error: revision 99 not found for service web (kept: 1-7)", "{}", stderr(&out));
    let out = shoal(addr, &["rollout", "history", "--revision", "99", "web"]);
    assert!(!out.status.success() && stderr(&out).contains("revision 99 not found for service web (kept: 1-7)"));
    assert_eq!(inspect(addr)?.version, before.version);

    // The history is bounded by the cluster's setting, from the next change on.
    ok(addr, &["cluster", "update", "--revision-history-limit", "3"])?;
    ok(addr, &["service", "update", "--label-add", "n=1", "-d", "web"])?;
    let revisions: Vec<Revision> =
        serde_json::from_str(&ok(addr, &["rollout", "history", "--format", "json", "web"])?)?;
    assert_eq!(revisions.iter().map(|r| r.number).collect::<Vec<_>>(), [6, 7, 8]);
    Ok(())
}

/// `rollout pause` mid-update: sampled for longer than the update's delay, no new slot starts;
/// `rollout resume` carries on to completion; `rollout abort` mid-update rolls back to the spec
/// before it; pausing, resuming or aborting what cannot be is one line, exit 1, nothing changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_update_starts_no_new_slot_until_resumed_and_an_abort_rolls_it_back() -> Result<()> {
    let mut cluster = Cluster::start(1).await?;
    cluster.add_agent(&[]).await?;
    let addr = cluster.running_addrs()[0].clone();
    let addr = addr.as_str();
    ok(addr, &["service", "create", "--name", "web", "--replicas", "3", "--update-delay", "2s", "shoal/busybox:1"])?;

    let out = shoal(addr, &["rollout", "pause", "web"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        "Error: service web is not rolling out (no update has run): there is nothing to pause"
    );

    let out = shoal(addr, &["service", "update", "-d", "--rollout-id", "a b", "--image", "shoal/busybox:2", "web"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("invalid value 'a b' for '--rollout-id <ID>': ' ' is not allowed"),
        "{}",
        stderr(&out)
    );
    ok(addr, &["service", "update", "-d", "--rollout-id", "release-42", "--image", "shoal/busybox:2", "web"])?;
    let new =
        |tasks: &[shoal_types::Task]| tasks.iter().filter(|t| t.spec.container.image == "shoal/busybox:2").count();
    wait_tasks(addr, "web", Duration::from_secs(30), "the first new task", |tasks| new(tasks) >= 1).await?;
    ok(addr, &["rollout", "pause", "web"])?;
    let status = inspect(addr)?.update_status.expect("a status");
    assert_eq!((status.state, status.message.as_str()), (shoal_types::UpdateState::Paused, "manually paused"));
    // Longer than the delay after the first slot: unpaused, the second slot would have started.
    let paused_with = new(&list_tasks(addr, "web").await?);
    for _ in 0..24 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let tasks = list_tasks(addr, "web").await?;
        assert_eq!(new(&tasks), paused_with, "a new slot started while paused");
    }
    assert!(paused_with <= 2, "at most the slot in transition finished: {paused_with}");

    // `rollout status` of a paused update ends at once as `service update` would: exit 3.
    let out = shoal(addr, &["rollout", "status", "-q", "web"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("manually paused"), "{}", stderr(&out));

    ok(addr, &["rollout", "resume", "web"])?;
    // Followed to its end: exit 0 once the update completed.
    ok(addr, &["rollout", "status", "-q", "--timeout", "60s", "web"])?;
    let record: Rollout = serde_json::from_str(&ok(addr, &["rollout", "inspect", "--format", "json", "release-42"])?)?;
    assert_eq!((record.state, record.service_name.as_str()), (RolloutState::Completed, "web"));
    assert_eq!(inspect(addr)?.update_status.map(|s| s.state), Some(shoal_types::UpdateState::Completed));
    wait_image(addr, "shoal/busybox:2", 3).await?;
    let before = inspect(addr)?;
    let out = shoal(addr, &["rollout", "resume", "web"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        "Error: service web is not paused (its update is completed): there is nothing to resume"
    );
    let out = shoal(addr, &["rollout", "pause", "nope"]);
    assert_eq!((out.status.code(), stderr(&out).trim()), (Some(1), "Error: service nope not found"));
    assert_eq!(inspect(addr)?.status_version, before.status_version);

    // Abort mid-update: back to the spec before it, as a new revision, waited for like a rollback.
    ok(addr, &["service", "update", "-d", "--image", "shoal/busybox:1", "web"])?;
    let old =
        |tasks: &[shoal_types::Task]| tasks.iter().filter(|t| t.spec.container.image == "shoal/busybox:1").count();
    wait_tasks(addr, "web", Duration::from_secs(30), "the first task of the update", |tasks| old(tasks) >= 1).await?;
    ok(addr, &["rollout", "abort", "-q", "--change-cause", "bad canary", "web"])?;
    wait_image(addr, "shoal/busybox:2", 3).await?;
    let service = inspect(addr)?;
    assert_eq!(service.spec.task.container.image, "shoal/busybox:2");
    assert_eq!(service.update_status.map(|s| s.state), Some(shoal_types::UpdateState::RollbackCompleted));
    let revisions: Vec<Revision> =
        serde_json::from_str(&ok(addr, &["rollout", "history", "--format", "json", "web"])?)?;
    let last = revisions.last().expect("revisions");
    assert_eq!((last.number, last.change_cause.as_str()), (service.revision, "bad canary"));
    // The aborted update's record says so; the rollback has its own.
    let records: Vec<Rollout> = serde_json::from_str(&ok(addr, &["rollout", "ls", "--format", "json", "web"])?)?;
    let states: Vec<RolloutState> = records.iter().rev().take(2).map(|r| r.state).collect();
    assert_eq!(states, [RolloutState::RollbackCompleted, RolloutState::Aborted], "{records:?}");
    let out = shoal(addr, &["rollout", "abort", "web"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        "Error: service web is not updating (its update is rollback completed): there is nothing to abort"
    );
    Ok(())
}

/// A pause is part of the replicated state: kill -9 of the leader while an update is paused, and
/// the next leader keeps it paused (no new slot, sampled); resumed through another manager, the
/// update completes with every slot replaced once and never more than `parallelism` at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_update_stays_paused_across_a_leader_kill_and_resumes_through_another_manager() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    cluster.add_agent(&[]).await?;
    cluster.add_agent(&[]).await?;
    let leader = cluster.leader().await?;
    let other = cluster.managers[(leader + 1) % 3].addr.clone();
    let other = other.as_str();
    let mut spec = shoal_types::ServiceSpec::new("web", "shoal/busybox:1");
    spec.mode = shoal_types::ServiceMode::Replicated { replicas: 6 };
    create_service(other, &spec).await?;
    wait_tasks(other, "web", Duration::from_secs(30), "6 running", |t| running(t).len() == 6).await?;
    update_by_name(other, "web", |s| {
        s.task.container.image = "shoal/busybox:2".into();
        s.update_config.parallelism = 2;
        s.update_config.delay = GoDuration::from_secs(2);
        s.update_config.monitor = GoDuration::from_secs(1);
    })
    .await?;
    let new = |tasks: &[Task]| tasks.iter().filter(|t| t.spec.container.image == "shoal/busybox:2").count();
    wait_tasks(other, "web", Duration::from_secs(30), "the first batch", |t| new(t) >= 2).await?;
    ok(other, &["rollout", "pause", "web"])?;
    cluster.managers[leader].kill9();

    // Longer than the update's delay, through the failover: still paused, no new slot.
    let mut seen = None;
    for _ in 0..24 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Ok(tasks) = list_tasks(other, "web").await else { continue };
        let now = new(&tasks);
        assert!(seen.is_none_or(|before| now == before), "a new slot started while paused: {seen:?} → {now}");
        seen = Some(now);
        assert!(now <= 4, "more than the batch in transition finished: {now}");
    }
    let service = inspect(other)?;
    let status = service.update_status.expect("a status");
    assert_eq!((status.state, status.message.as_str()), (UpdateState::Paused, "manually paused"));

    ok(other, &["rollout", "resume", "web"])?;
    let mut most_in_transition = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let done = loop {
        assert!(tokio::time::Instant::now() < deadline, "the resumed update did not complete in 90 s");
        let tasks = list_tasks(other, "web").await?;
        most_in_transition = most_in_transition.max(slots_in_transition(tasks.iter()));
        let service = inspect(other)?;
        if service.update_status.as_ref().map(|s| s.state) == Some(UpdateState::Completed) {
            break service;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let tasks = list_tasks(other, "web").await?;
    let made: Vec<&Task> =
        tasks.iter().filter(|t| t.origin == TaskOrigin::Update && t.spec_version == done.spec_version).collect();
    let mut slots: Vec<u64> = made.iter().map(|t| t.slot).collect();
    slots.sort();
    assert_eq!(slots, vec![1, 2, 3, 4, 5, 6], "each slot replaced exactly once");
    assert!(most_in_transition <= 2, "slots in transition at once: {most_in_transition}");

    // One rollout record, carried on by the new leader: every slot once, batches of at most
    // `parallelism`, the pause and the resume among its events.
    let record: Rollout = serde_json::from_str(&ok(other, &["rollout", "inspect", "--format", "json", "web"])?)?;
    assert_eq!((record.state, record.spec_version), (RolloutState::Completed, done.spec_version));
    let mut recorded: Vec<String> =
        record.batches.iter().flat_map(|b| b.slots.iter().map(|s| s.name.clone())).collect();
    recorded.sort();
    assert_eq!(recorded, ["web.1", "web.2", "web.3", "web.4", "web.5", "web.6"], "{record:?}");
    assert!(record.batches.iter().all(|b| b.slots.len() <= 2), "{record:?}");
    // Each slot's timeline, through the failover: its old task told to stop and stopped, its new
    // task running, no failure.
    for slot in record.batches.iter().flat_map(|b| &b.slots) {
        assert!(
            slot.old_tasks.len() == 1
                && slot.stop_requested_at.is_some()
                && slot.stopped_at.is_some()
                && slot.running_at.is_some()
                && slot.failure.is_none(),
            "{slot:?}"
        );
        assert!(slot.stop_requested_at <= slot.stopped_at && slot.stopped_at <= slot.running_at, "{slot:?}");
    }
    let events: Vec<&str> = record.events.iter().map(|e| e.message.as_str()).collect();
    assert!(events.contains(&"manually paused") && events.contains(&"update resumed"), "{events:?}");
    let listed = ok(other, &["rollout", "ls", "web"])?;
    assert!(listed.contains(&record.id) && listed.contains("completed"), "{listed}");
    let text = ok(other, &["rollout", "inspect", &record.id])?;
    assert!(text.contains("State:     completed (update completed)") && text.contains("OLD TOLD TO STOP"), "{text}");
    Ok(())
}

/// A stack deploy makes one revision per service it changes, all with the same cause: the stack
/// file's `x-change-cause`, or `--change-cause` over it. Services it does not change get none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_deploy_makes_one_revision_per_changed_service_with_its_cause() -> Result<()> {
    let mut cluster = Cluster::start(1).await?;
    let addr = cluster.running_addrs()[0].clone();
    let addr = addr.as_str();
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("stack.yml");
    let write = |web_image: &str| {
        std::fs::write(
            &file,
            format!(
                "x-change-cause: release of ${{USER_NOTE:-the week}}\nservices:\n  web:\n    image: {web_image}\n  api:\n    image: shoal/busybox:1\n"
            ),
        )
    };
    write("shoal/busybox:1")?;
    let path = file.to_str().expect("utf-8 path");
    ok(addr, &["stack", "deploy", "-d", "-c", path, "app"])?;
    write("shoal/busybox:2")?;
    // A dry run first: what would change, and nothing written.
    let commit = cluster_info(addr).await?.raft.commit;
    let text = ok(addr, &["stack", "deploy", "--dry-run", "-c", path, "app"])?;
    for expected in [
        "Dry run: nothing was changed. The deploy would:",
        "leave service app_api as it is",
        "update service app_web:",
        "app_web.1 not placed: image shoal/busybox:1 → shoal/busybox:2",
    ] {
        assert!(text.contains(expected), "no {expected:?} in:\n{text}");
    }
    assert_eq!(cluster_info(addr).await?.raft.commit, commit, "a dry run writes nothing");
    ok(addr, &["stack", "deploy", "-d", "--change-cause", "hotfix 2", "-c", path, "app"])?;

    let history = |service: &str| -> Result<Vec<(u64, String)>> {
        let json = ok(addr, &["rollout", "history", "--format", "json", service])?;
        let revisions: Vec<Revision> = serde_json::from_str(&json)?;
        Ok(revisions.into_iter().map(|r| (r.number, r.change_cause)).collect())
    };
    assert_eq!(history("app_web")?, [(1, "release of the week".to_string()), (2, "hotfix 2".to_string())]);
    assert_eq!(history("app_api")?, [(1, "release of the week".to_string())], "an unchanged service gets no revision");
    Ok(())
}

/// `service update --dry-run`: prints what the update would do and writes nothing (the raft log
/// does not move; versions and task ids are equal before and after).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_prints_the_plan_and_changes_nothing() -> Result<()> {
    let mut cluster = Cluster::start(1).await?;
    cluster.add_agent(&[]).await?;
    let addr = cluster.running_addrs()[0].clone();
    let addr = addr.as_str();
    ok(addr, &["service", "create", "--name", "web", "--replicas", "3", "shoal/busybox:1"])?;
    let ids = |tasks: &[Task]| {
        let mut ids: Vec<String> = tasks.iter().map(|t| t.id.clone()).collect();
        ids.sort();
        ids
    };
    let before = (inspect(addr)?, ids(&list_tasks(addr, "web").await?), cluster_info(addr).await?.raft.commit);

    let args = ["service", "update", "--dry-run", "--image", "shoal/busybox:2", "--update-parallelism", "2", "web"];
    let text = ok(addr, &args)?;
    for expected in [
        "Dry run: nothing was changed. An update of web would:",
        "- \"image\": \"shoal/busybox:1\",",
        "+ \"image\": \"shoal/busybox:2\",",
        "Out of date: 3 of 3 tasks",
        "web.1 on ",
        ": image shoal/busybox:1 → shoal/busybox:2",
        "Strategy: rolling, 2 tasks at a time, stop-first\n\nBatches:\n  1: web.1 (",
        "Estimated duration: about ",
    ] {
        assert!(text.contains(expected), "no {expected:?} in:\n{text}");
    }
    let plan: shoal_types::UpdatePlan = serde_json::from_str(&ok(
        addr,
        &["service", "update", "--dry-run", "--format", "json", "--image", "shoal/busybox:2", "web"],
    )?)?;
    assert_eq!((plan.tasks, plan.out_of_date.len(), plan.batches.len()), (3, 3, 3));
    let plan: shoal_types::UpdatePlan = serde_json::from_str(&ok(
        addr,
        &["service", "update", "--dry-run", "--format", "json", "--label-add", "a=b", "web"],
    )?)?;
    assert!(plan.out_of_date.is_empty() && plan.spec_changes.iter().any(|l| l.contains("\"a\": \"b\"")), "{plan:?}");
    let out = shoal(addr, &["service", "update", "--format", "json", "web"]);
    assert_eq!(out.status.code(), Some(2), "--format needs --dry-run: {}", stderr(&out));

    let after = (inspect(addr)?, ids(&list_tasks(addr, "web").await?), cluster_info(addr).await?.raft.commit);
    assert_eq!(after.0.version, before.0.version);
    assert_eq!(after.1, before.1, "the same tasks");
    assert_eq!(after.2, before.2, "nothing was written to the raft log");
    Ok(())
}
