//! Rollout strategies beyond Swarm's (issue 24) with the real `shoal` binary, a real manager and
//! an agent running real containers: Recreate's ordering, a surge budget sampled from Docker,
//! canary steps with approval, and a new release in the middle of a canary. Run `cargo build
//! --workspace --bins` and `deploy/images/build.sh` first.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use shoal_tests::*;
use shoal_types::{Service, StepWait, Task, UpdateState};

use shoal_tests::shoal_ok as ok;

fn inspect(addr: &str) -> Result<Service> {
    inspect_service(addr, "web")
}

/// Until `docker ps -a` lists exactly `n` containers matching `filter`.
async fn wait_containers(filter: &str, n: usize) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while docker_ids(filter, true).len() != n {
        ensure!(tokio::time::Instant::now() < deadline, "docker ps -a still shows {:?}", docker_ids(filter, true));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Running tasks of `web` by image.
fn images(tasks: &[Task]) -> Vec<String> {
    let mut images: Vec<String> = running(tasks).iter().map(|t| t.spec.container.image.clone()).collect();
    images.sort();
    images
}

async fn wait_images(addr: &str, expected: &[&str]) -> Result<Vec<Task>> {
    let expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    let what = format!("running images {expected:?}");
    wait_tasks(addr, "web", Duration::from_secs(60), &what, |tasks| images(tasks) == expected).await
}

/// Docker's RFC 3339 time (nanoseconds, trailing zeros trimmed) as a sortable key.
fn docker_time(text: &str) -> (String, String) {
    let text = text.trim_end_matches('Z');
    let (seconds, fraction) = text.split_once('.').unwrap_or((text, ""));
    (seconds.to_string(), format!("{fraction:0<9}"))
}

/// Recreate: every old container has finished before the first new one started (as Docker
/// recorded it), and the update completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_stops_every_old_task_before_any_new_one_starts() -> Result<()> {
    let (_cluster, addr) = single_node().await?;
    let addr = addr.as_str();
    ok(
        addr,
        &["service", "create", "--name", "web", "--replicas", "3", "--update-strategy", "recreate", "shoal/busybox:1"],
    )?;
    let old = wait_images(addr, &["shoal/busybox:1"; 3]).await?;
    let pretty = ok(addr, &["service", "inspect", "--pretty", "web"])?;
    assert!(pretty.contains("recreate: every old task stops before any new one starts"), "{pretty}");
    ok(addr, &["service", "update", "--image", "shoal/busybox:2", "web"])?;
    let new = wait_images(addr, &["shoal/busybox:2"; 3]).await?;
    let service = inspect(addr)?;
    assert_eq!(service.update_status.map(|s| s.state), Some(UpdateState::Completed));

    let container = |t: &Task| t.status.container_id.clone();
    let last_finish = running(&old)
        .iter()
        .map(|t| docker_time(&docker_inspect(&container(t), "{{.State.FinishedAt}}")))
        .max()
        .context("old containers")?;
    let first_start = running(&new)
        .iter()
        .map(|t| docker_time(&docker_inspect(&container(t), "{{.State.StartedAt}}")))
        .min()
        .context("new containers")?;
    assert!(
        last_finish < first_start,
        "an old container finished at {last_finish:?}, a new one started at {first_start:?}"
    );
    Ok(())
}

/// Surge 1, unavailable 0 on 4 replicas: sampled from Docker throughout, never fewer than 4
/// containers running, never more than 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_surge_budget_holds_while_sampled_from_docker() -> Result<()> {
    let (_cluster, addr) = single_node().await?;
    let addr = addr.as_str();
    ok(
        addr,
        &[
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            "4",
            "--update-max-surge",
            "1",
            "--update-max-unavailable",
            "0",
            "--update-monitor",
            "1s",
            "shoal/busybox:1",
        ],
    )?;
    wait_images(addr, &["shoal/busybox:1"; 4]).await?;
    // Kubernetes' availability: a task counts once it has run for the monitor window
    // (minReadySeconds); before that, replacing it costs no availability.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let service_id = inspect(addr)?.id;
    let filter = format!("label=org.shoal.service.id={service_id}");
    let out = shoal(addr, &["service", "update", "-d", "--image", "shoal/busybox:2", "web"]);
    ensure!(out.status.success(), "{}", stderr(&out));
    let (mut fewest, mut most, mut samples) = (usize::MAX, 0, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let n = docker_ids(&filter, false).len();
        (fewest, most, samples) = (fewest.min(n), most.max(n), samples + 1);
        let service = inspect(addr)?;
        if service.update_status.as_ref().is_some_and(|s| s.state == UpdateState::Completed) {
            break;
        }
        ensure!(tokio::time::Instant::now() < deadline, "the update did not complete: {:?}", service.update_status);
    }
    let tasks = wait_images(addr, &["shoal/busybox:2"; 4]).await?;
    assert!(fewest >= 4 && most <= 5, "running containers ranged {fewest}..={most} over {samples} samples");
    // It surged: some sample saw the fifth container.
    assert_eq!(most, 5, "{samples} samples");
    assert_eq!(running(&tasks).len(), 4);
    Ok(())
}

fn step_wait(service: &Service) -> Option<(u32, Option<StepWait>)> {
    let step = service.update_status.as_ref()?.step.as_ref()?;
    Some((step.index, step.waiting))
}

/// Canary 1 → 50% → 100% on 4 replicas: `service update` returns once step 1 waits for
/// approval with one new task running; each `rollout approve` moves one step; approving when
/// nothing waits is one line, exit 1. A new release while step 2 waits starts again from step 1
/// towards it, replacing the intermediate version's tasks like old ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_steps_wait_for_approval_and_a_new_release_starts_again() -> Result<()> {
    let (_cluster, addr) = single_node().await?;
    let addr = addr.as_str();
    ok(
        addr,
        &["service", "create", "--name", "web", "--replicas", "4", "--update-monitor", "500ms", "shoal/busybox:1"],
    )?;
    wait_images(addr, &["shoal/busybox:1"; 4]).await?;

    let out = ok(
        addr,
        &[
            "service",
            "update",
            "--update-step",
            "1",
            "--update-step",
            "50%",
            "--update-step",
            "100%",
            "--rollout-id",
            "release-2",
            "--image",
            "shoal/busybox:2",
            "web",
        ],
    )?;
    assert!(out.contains("canary: step 1/3: 1/4 updated, waiting for approval"), "{out}");
    let tasks = list_tasks(addr, "web").await?;
    assert_eq!(images(&tasks), ["shoal/busybox:1", "shoal/busybox:1", "shoal/busybox:1", "shoal/busybox:2"]);
    assert_eq!(step_wait(&inspect(addr)?), Some((0, Some(StepWait::Approval))));
    let status = ok(addr, &["rollout", "status", "web"])?;
    assert!(status.contains("canary: step 1/3: 1/4 updated, waiting for approval"), "{status}");
    let record = ok(addr, &["rollout", "inspect", "release-2"])?;
    assert!(record.contains("step 1/3: 1/4 updated, waiting for approval"), "{record}");

    // Nothing more moves until approved.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(images(&list_tasks(addr, "web").await?).iter().filter(|i| *i == "shoal/busybox:2").count(), 1);
    let approved = ok(addr, &["rollout", "approve", "web"])?;
    assert_eq!(approved.trim(), "web: step 1/3 approved");
    wait_images(addr, &["shoal/busybox:1", "shoal/busybox:1", "shoal/busybox:2", "shoal/busybox:2"]).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while step_wait(&inspect(addr)?) != Some((1, Some(StepWait::Approval))) {
        ensure!(tokio::time::Instant::now() < deadline, "step 2 never waited: {:?}", inspect(addr)?.update_status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A new release while step 2 waits: back to step 1, one task on it.
    let v3 = ok(addr, &["service", "update", "--env-add", "RELEASE=3", "--rollout-id", "release-3", "web"])?;
    assert!(v3.contains("canary: step 1/3: 1/4 updated, waiting for approval"), "{v3}");
    let service = inspect(addr)?;
    let tasks = list_tasks(addr, "web").await?;
    let on_v3 = running(&tasks).iter().filter(|t| t.spec_version == service.spec_version).count();
    assert_eq!(on_v3, 1, "{:?}", images(&tasks));

    // Approving twice takes it to every replica; a third approval has nothing to approve.
    ok(addr, &["rollout", "approve", "web"])?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while step_wait(&inspect(addr)?) != Some((1, Some(StepWait::Approval))) {
        ensure!(tokio::time::Instant::now() < deadline, "step 2 of release 3 never waited");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ok(addr, &["rollout", "approve", "web"])?;
    ok(addr, &["rollout", "status", "web"])?;
    let service = inspect(addr)?;
    assert_eq!(service.update_status.as_ref().map(|s| s.state), Some(UpdateState::Completed));
    let tasks = list_tasks(addr, "web").await?;
    let runs = running(&tasks);
    assert!(runs.len() == 4 && runs.iter().all(|t| t.spec_version == service.spec_version), "{:?}", images(&tasks));
    let out = shoal(addr, &["rollout", "approve", "web"]);
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out).trim(),
        "Error: service web has no canary step waiting for approval (its update is completed): there is nothing to approve"
    );
    Ok(())
}

/// `--update-old-tasks remove`: the replaced containers are gone from `docker ps -a` once the
/// update completed, while their tasks stay in the history; the default (stop) keeps them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_task_policy_decides_what_docker_ps_a_shows() -> Result<()> {
    let (_cluster, addr) = single_node().await?;
    let addr = addr.as_str();
    ok(
        addr,
        &["service", "create", "--name", "web", "--replicas", "2", "--update-old-tasks", "remove", "shoal/busybox:1"],
    )?;
    wait_images(addr, &["shoal/busybox:1"; 2]).await?;
    let filter = format!("label=org.shoal.service.id={}", inspect(addr)?.id);
    ok(addr, &["service", "update", "--image", "shoal/busybox:2", "web"])?;
    wait_containers(&filter, 2).await?;
    let tasks = list_tasks(addr, "web").await?;
    assert_eq!(tasks.len(), 4, "the replaced tasks stay in the history");
    assert!(tasks.iter().filter(|t| t.spec.container.image == "shoal/busybox:1").all(|t| t.remove_container));

    // Back to the default: the next update's replaced containers stay, exited.
    ok(addr, &["service", "update", "--update-old-tasks", "stop", "--image", "shoal/busybox:1", "web"])?;
    wait_images(addr, &["shoal/busybox:1"; 2]).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let all = docker_ids(&filter, true);
    let running = docker_ids(&filter, false);
    assert_eq!((all.len(), running.len()), (4, 2), "docker ps -a: {all:?}");
    Ok(())
}

/// `--update-old-tasks keep`: the old containers keep running beside the new ones (`service ps`
/// says kept) until `rollout finish` stops and removes them; finishing again is one line, exit 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_old_tasks_run_until_the_rollout_is_finished() -> Result<()> {
    let (_cluster, addr) = single_node().await?;
    let addr = addr.as_str();
    ok(
        addr,
        &["service", "create", "--name", "web", "--replicas", "2", "--update-old-tasks", "keep", "shoal/busybox:1"],
    )?;
    wait_images(addr, &["shoal/busybox:1"; 2]).await?;
    let filter = format!("label=org.shoal.service.id={}", inspect(addr)?.id);
    ok(addr, &["service", "update", "--image", "shoal/busybox:2", "web"])?;
    wait_images(addr, &["shoal/busybox:1", "shoal/busybox:1", "shoal/busybox:2", "shoal/busybox:2"]).await?;
    assert_eq!(docker_ids(&filter, false).len(), 4);
    let ps = ok(addr, &["service", "ps", "web"])?;
    assert_eq!(ps.matches("Running (kept)").count(), 2, "{ps}");
    let ls = ok(addr, &["service", "ls"])?;
    assert!(ls.contains("2/2"), "the kept tasks are not replicas: {ls}");

    let finished = ok(addr, &["rollout", "finish", "web"])?;
    assert_eq!(finished.trim(), "web: kept old tasks stopping");
    wait_images(addr, &["shoal/busybox:2"; 2]).await?;
    wait_containers(&filter, 2).await?;
    let out = shoal(addr, &["rollout", "finish", "web"]);
    assert!(!out.status.success());
    assert_eq!(stderr(&out).trim(), "Error: service web has no kept old tasks: there is nothing to finish");
    Ok(())
}

/// `--update-prepare-ahead`: once the update starts, every slot's new container exists in Docker
/// (created, not started) while old ones still run; the update then starts exactly those
/// containers, one slot at a time. A newer spec mid-rollout removes the prepared containers it
/// will not use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_ahead_creates_every_container_first_and_a_newer_spec_removes_the_unused() -> Result<()> {
    let (_cluster, addr) = single_node().await?;
    let addr = addr.as_str();
    let create = [
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "4",
        "--update-prepare-ahead",
        "--update-delay",
        "2s",
        "--update-monitor",
        "1s",
        "shoal/busybox:1",
    ];
    ok(addr, &create)?;
    wait_images(addr, &["shoal/busybox:1"; 4]).await?;
    let pretty = ok(addr, &["service", "inspect", "--pretty", "web"])?;
    assert!(pretty.contains("every new task prepared (container created) when the rollout starts"), "{pretty}");

    ok(addr, &["service", "update", "-d", "--image", "shoal/busybox:2", "web"])?;
    let prepared_ready = |tasks: &[Task]| {
        tasks.iter().filter(|t| t.prepared_ahead() && t.status.state == shoal_types::TaskState::Ready).count() >= 3
    };
    let tasks = wait_tasks(addr, "web", Duration::from_secs(30), "3 tasks prepared ahead", prepared_ready).await?;
    let prepared: Vec<String> =
        tasks.iter().filter(|t| t.prepared_ahead()).map(|t| t.status.container_id.clone()).collect();
    for id in &prepared {
        assert_eq!(docker_inspect(id, "{{.State.Status}}"), "created", "prepared container {id}");
    }
    let old_running = running(&tasks).iter().filter(|t| t.spec.container.image == "shoal/busybox:1").count();
    assert!(old_running >= 2, "prepared while the old tasks still ran ({old_running} running)");
    let ps = ok(addr, &["service", "ps", "web"])?;
    assert!(ps.contains("Ready (prepared)"), "{ps}");

    let tasks = wait_images(addr, &["shoal/busybox:2"; 4]).await?;
    let started: Vec<String> = running(&tasks).iter().map(|t| t.status.container_id.clone()).collect();
    for id in &prepared {
        assert!(started.contains(id), "prepared container {id} was not the one started: {started:?}");
    }
    let service_id = inspect(addr)?.id;
    let made = docker_ids(&format!("label=org.shoal.service.id={service_id}"), true).len();
    assert_eq!(made, 8, "4 old containers (stopped) and the 4 prepared ones, none made twice");

    // A newer spec while tasks wait prepared: their containers are removed.
    ok(addr, &["service", "update", "-d", "--image", "shoal/busybox:1", "web"])?;
    let tasks = wait_tasks(addr, "web", Duration::from_secs(30), "3 tasks prepared ahead", prepared_ready).await?;
    let unused: Vec<String> =
        tasks.iter().filter(|t| t.prepared_ahead()).map(|t| t.status.container_id.clone()).collect();
    ok(addr, &["service", "update", "-d", "--env-add", "RELEASE=3", "web"])?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while unused.iter().any(|id| !docker_inspect(id, "{{.State.Status}}").is_empty()) {
        ensure!(tokio::time::Instant::now() < deadline, "prepared containers {unused:?} still exist");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tasks = wait_tasks(addr, "web", Duration::from_secs(90), "4 tasks with RELEASE=3", |tasks| {
        let running = running(tasks);
        running.len() == 4 && running.iter().all(|t| t.spec.container.env.iter().any(|e| e == "RELEASE=3"))
    })
    .await?;
    assert!(tasks.iter().all(|t| !t.prepared_ahead() || t.desired_state > shoal_types::TaskState::Running));
    Ok(())
}

/// A rollback restarts the old tasks' stopped containers in place (`docker ps -a` shows no new
/// container, each slot runs its old container again); once the tasks that made them leave the
/// history, the agent keeps the containers the running tasks use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_restarts_the_stopped_containers_in_place() -> Result<()> {
    let (_cluster, addr) = single_node().await?;
    let addr = addr.as_str();
    ok(
        addr,
        &["service", "create", "--name", "web", "--replicas", "3", "--update-parallelism", "3", "shoal/busybox:1"],
    )?;
    let v1 = wait_images(addr, &["shoal/busybox:1"; 3]).await?;
    let mut v1_containers: Vec<String> = running(&v1).iter().map(|t| t.status.container_id.clone()).collect();
    v1_containers.sort();
    ok(addr, &["service", "update", "--image", "shoal/busybox:2", "web"])?;
    wait_images(addr, &["shoal/busybox:2"; 3]).await?;
    for id in &v1_containers {
        assert_eq!(docker_inspect(id, "{{.State.Status}}"), "exited", "old container {id} stopped and kept");
    }

    ok(addr, &["service", "rollback", "web"])?;
    let back = wait_images(addr, &["shoal/busybox:1"; 3]).await?;
    let mut back_containers: Vec<String> = running(&back).iter().map(|t| t.status.container_id.clone()).collect();
    back_containers.sort();
    assert_eq!(back_containers, v1_containers, "the rollback ran the old containers again");
    let service_id = inspect(addr)?.id;
    let filter = format!("label=org.shoal.service.id={service_id}");
    assert_eq!(docker_ids(&filter, true).len(), 6, "3 v1 containers (running again) and 3 v2 (stopped)");

    // The tasks that made the v1 containers leave the history; the containers stay and run.
    ok(addr, &["cluster", "update", "--task-history-limit", "1"])?;
    wait_containers(&filter, 3).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut still: Vec<String> = docker_ids(&filter, false);
    still.sort();
    assert_eq!(still, v1_containers, "the running tasks' containers are kept");
    Ok(())
}
