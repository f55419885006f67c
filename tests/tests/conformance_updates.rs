//! Where rolling updates and the restart supervisor must behave as Swarm does (issue 21, items
//! 1, 2 and 8), with real containers.

use std::time::Duration;

use anyhow::Result;
use shoal_tests::*;
use shoal_types::{
    FailureAction, GoDuration, RestartCondition, ServiceMode, ServiceSpec, Task, TaskOrigin, TaskState, UpdateState,
};

/// Every task of the service stopped and none is meant to run: the slots stopped for good.
fn all_stopped(tasks: &[Task], at_least: usize) -> bool {
    tasks.len() >= at_least
        && tasks.iter().all(|t| t.desired_state >= TaskState::Shutdown && t.status.state > TaskState::Running)
}

fn replicated(name: &str, image: &str, replicas: u64, configure: impl FnOnce(&mut ServiceSpec)) -> ServiceSpec {
    let mut spec = ServiceSpec::new(name, image);
    spec.mode = ServiceMode::Replicated { replicas };
    spec.update_config.monitor = GoDuration::from_secs(1);
    configure(&mut spec);
    spec
}

/// Waits for `want` tasks running `image` in the update's own tasks, checking by polling that the
/// update never has more than one slot in transition (parallelism 1).
async fn wait_revived(addr: &str, name: &str, image: &str, want: usize) -> Result<Vec<Task>> {
    // The shared wait, with the most slots seen in transition at any poll kept on the side.
    let max_in_transition = std::cell::Cell::new(0);
    let tasks = wait_tasks(addr, name, Duration::from_secs(60), &format!("{want} revived tasks"), |tasks| {
        max_in_transition.set(max_in_transition.get().max(slots_in_transition(tasks)));
        running(tasks).iter().filter(|t| t.spec.container.image == image && t.origin == TaskOrigin::Update).count()
            == want
    })
    .await?;
    let max_in_transition = max_in_transition.get();
    assert!(max_in_transition <= 1, "{name}: {max_in_transition} slots in transition at once");
    Ok(tasks)
}

/// Item 1: a slot whose task stopped for good — completed under on-failure, stopped under none,
/// or out of restart attempts — is replaced by an update (a new image or `--force`), slot by
/// slot with the update's parallelism. Before, such slots were left as they were (0/2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_brings_back_slots_that_stopped_for_good() -> Result<()> {
    let mut cluster = Cluster::start(1).await?;
    cluster.add_agent(&[]).await?;
    cluster.add_agent(&[]).await?;
    let addr = cluster.running_addrs()[0].clone();

    // Exits 0 after 1 s: not restarted under on-failure.
    let done = replicated("done", "shoal/exit0:1", 2, |s| {
        s.task.restart_policy.condition = RestartCondition::OnFailure;
    });
    // Runs until killed: not restarted under none.
    let none = replicated("none", "shoal/busybox:1", 2, |s| {
        s.task.restart_policy.condition = RestartCondition::None;
    });
    // Fails after 1 s, restarted once, fails again: out of attempts.
    let spent = replicated("spent", "shoal/fail:1", 2, |s| {
        s.task.restart_policy.condition = RestartCondition::Any;
        s.task.restart_policy.max_attempts = 1;
        s.task.restart_policy.delay = GoDuration::from_millis(100);
    });
    for spec in [&done, &none, &spent] {
        create_service(&addr, spec).await?;
    }
    let tasks = wait_tasks(&addr, "none", Duration::from_secs(30), "2 running", |t| running(t).len() == 2).await?;
    for t in running(&tasks) {
        for id in docker_ids(&format!("label=org.shoal.task.id={}", t.id), false) {
            let out = std::process::Command::new("docker").args(["kill", &id]).output()?;
            assert!(out.status.success(), "docker kill: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    let timeout = Duration::from_secs(60);
    wait_tasks(&addr, "done", timeout, "both completed", |t| all_stopped(t, 2)).await?;
    wait_tasks(&addr, "none", timeout, "both killed", |t| all_stopped(t, 2)).await?;
    wait_tasks(&addr, "spent", timeout, "both slots out of attempts", |t| all_stopped(t, 4)).await?;
    // Nothing restarts them by itself (the service stays 0/2).
    tokio::time::sleep(Duration::from_secs(2)).await;
    for name in ["done", "none", "spent"] {
        let tasks = list_tasks(&addr, name).await?;
        assert!(all_stopped(&tasks, 2), "{name} stays stopped without an update");
    }

    // A new image for two of them, `service update --force` for the one whose image still works.
    for name in ["done", "spent"] {
        update_by_name(&addr, name, |s| s.task.container.image = "shoal/busybox:2".into()).await?;
    }
    let out = shoal(&addr, &["service", "update", "--force", "--detach", "none"]);
    ok(&out);

    for (name, image) in [("done", "shoal/busybox:2"), ("spent", "shoal/busybox:2"), ("none", "shoal/busybox:1")] {
        let tasks = wait_revived(&addr, name, image, 2).await?;
        let mut slots: Vec<u64> = running(&tasks).iter().map(|t| t.slot).collect();
        slots.sort();
        assert_eq!(slots, vec![1, 2], "{name}: each slot brought back in place");
        wait_update_status(&addr, name, UpdateState::Completed, Duration::from_secs(30)).await?;
    }
    Ok(())
}

/// Item 2: with `--update-failure-action continue`, an update whose new tasks crash and are
/// restarted completes one monitor window after the last slot. Before, it waited for every task
/// to run, which restarts kept pushing out for ever (each run lasts 1 s, the window is 2 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continue_completes_while_the_new_tasks_crash_and_restart() -> Result<()> {
    let mut cluster = Cluster::start(1).await?;
    cluster.add_agent(&[]).await?;
    let addr = cluster.running_addrs()[0].clone();
    let spec = replicated("crash", "shoal/busybox:1", 2, |s| {
        s.task.restart_policy.condition = RestartCondition::Any;
        s.task.restart_policy.delay = GoDuration::from_millis(100);
    });
    create_service(&addr, &spec).await?;
    wait_tasks(&addr, "crash", Duration::from_secs(30), "2 running", |t| running(t).len() == 2).await?;
    update_by_name(&addr, "crash", |s| {
        s.task.container.image = "shoal/fail:1".into();
        s.update_config.failure_action = FailureAction::Continue;
        s.update_config.monitor = GoDuration::from_secs(2);
    })
    .await?;
    let s = wait_update_status(&addr, "crash", UpdateState::Completed, Duration::from_secs(60)).await?;
    assert_eq!(s.update_status.as_ref().map(|u| u.message.as_str()), Some("update completed"));
    let tasks = list_tasks(&addr, "crash").await?;
    let mut updated: Vec<u64> = tasks
        .iter()
        .filter(|t| t.origin == TaskOrigin::Update && t.spec.container.image == "shoal/fail:1")
        .map(|t| t.slot)
        .collect();
    updated.sort();
    assert_eq!(updated, vec![1, 2], "every slot got the new version once");
    // The supervisor keeps restarting the crashing tasks; the update did not wait for them.
    wait_tasks(&addr, "crash", Duration::from_secs(30), "a restart of the new version", |t| {
        t.iter().any(|t| t.origin == TaskOrigin::Restart && t.spec.container.image == "shoal/fail:1")
    })
    .await?;
    Ok(())
}

/// Item 8: the automatic rollback names the task whose failure made the failure ratio cross
/// `max_failure_ratio` (here the second: 1/4 is tolerated, 2/4 is not), not the first one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rollback_names_the_task_that_crossed_the_ratio() -> Result<()> {
    let mut cluster = Cluster::start(1).await?;
    cluster.add_agent(&[]).await?;
    let addr = cluster.running_addrs()[0].clone();
    let spec = replicated("ratio", "shoal/busybox:1", 4, |s| {
        s.task.restart_policy.condition = RestartCondition::None;
        s.rollback_config.monitor = GoDuration::from_secs(1);
    });
    create_service(&addr, &spec).await?;
    wait_tasks(&addr, "ratio", Duration::from_secs(30), "4 running", |t| running(t).len() == 4).await?;
    update_by_name(&addr, "ratio", |s| {
        s.task.container.image = "shoal/fail:1".into();
        s.update_config.failure_action = FailureAction::Rollback;
        s.update_config.max_failure_ratio = 0.25;
        s.update_config.monitor = GoDuration::from_secs(5);
        // The new container fails 1 s after it starts: a 2 s per-slot delay lets the updater
        // see that before it moves to the next slot.
        s.update_config.delay = GoDuration::from_secs(2);
    })
    .await?;
    let s = wait_update_status(&addr, "ratio", UpdateState::RollbackStarted, Duration::from_secs(60)).await?;
    let message = s.update_status.map(|u| u.message).unwrap_or_default();
    let tasks = list_tasks(&addr, "ratio").await?;
    let mut failed: Vec<&Task> = tasks
        .iter()
        .filter(|t| {
            t.origin == TaskOrigin::Update
                && t.spec.container.image == "shoal/fail:1"
                && t.status.state > TaskState::Running
        })
        .collect();
    failed.sort_by_key(|t| (t.status.timestamp, t.id.clone()));
    assert!(failed.len() >= 2, "two failures before the rollback: {failed:?}");
    assert_eq!(
        message,
        format!("update rolled back due to failure or early termination of task {}", failed[1].id),
        "the second failure crossed 0.25 (the first was {})",
        failed[0].id
    );
    let s = wait_update_status(&addr, "ratio", UpdateState::RollbackCompleted, Duration::from_secs(60)).await?;
    assert_eq!(s.spec.task.container.image, "shoal/busybox:1");
    wait_tasks(&addr, "ratio", Duration::from_secs(30), "4 running the old image", |t| {
        running(t).iter().filter(|t| t.spec.container.image == "shoal/busybox:1").count() == 4
    })
    .await?;
    Ok(())
}
