//! Rolling updates and rollbacks with real containers, watched through the event stream.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use shoal_proto::v1::WatchRequest;
use shoal_tests::*;
use shoal_types::{FailureAction, GoDuration, ServiceMode, ServiceSpec, Task, TaskOrigin, UpdateState};

fn images(tasks: &[Task]) -> Vec<String> {
    let mut v: Vec<String> = running(tasks).iter().map(|t| t.spec.container.image.clone()).collect();
    v.sort();
    v
}

/// Counts, from task events, how many slots are between "old task told to stop" and "new task
/// running" at each moment; returns the maximum seen.
fn watch_transitions(addr: String, service_id: String) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut client = connect(&addr).await.expect("connect");
        let mut stream = client
            .watch(WatchRequest { types: vec!["task".into()], service: service_id, ..Default::default() })
            .await
            .expect("watch")
            .into_inner();
        let mut tasks: BTreeMap<String, Task> = BTreeMap::new();
        let mut max = 0;
        while let Ok(Ok(Some(event))) = tokio::time::timeout(Duration::from_secs(20), stream.message()).await {
            let v: serde_json::Value = serde_json::from_str(&event.event_json).expect("event json");
            let task: Task = serde_json::from_value(v["object"].clone()).expect("task object");
            if v["action"] == "remove" {
                tasks.remove(&task.id);
            } else {
                tasks.insert(task.id.clone(), task);
            }
            max = max.max(slots_in_transition(tasks.values()));
        }
        max
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_respects_parallelism_and_rollback_toggles() -> Result<()> {
    let mut cluster = Cluster::start(1).await?;
    cluster.add_agent(&[]).await?;
    cluster.add_agent(&[]).await?;
    let addr = cluster.running_addrs()[0].clone();
    let mut spec = ServiceSpec::new("web", "shoal/busybox:1");
    spec.mode = ServiceMode::Replicated { replicas: 6 };
    spec.rollback_config.parallelism = 0;
    spec.rollback_config.monitor = GoDuration::from_secs(1);
    let svc = create_service(&addr, &spec).await?;
    wait_tasks(&addr, "web", Duration::from_secs(30), "6 running", |t| running(t).len() == 6).await?;

    let watcher = watch_transitions(addr.clone(), svc.id.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    update_by_name(&addr, "web", |s| {
        s.task.container.image = "shoal/busybox:2".into();
        s.update_config.parallelism = 2;
        s.update_config.delay = GoDuration::from_secs(1);
        s.update_config.monitor = GoDuration::from_secs(1);
    })
    .await?;
    let done = wait_update_status(&addr, "web", UpdateState::Completed, Duration::from_secs(60)).await?;
    assert_eq!(done.update_status.unwrap().message, "update completed");
    let tasks = list_tasks(&addr, "web").await?;
    assert_eq!(images(&tasks), vec!["shoal/busybox:2"; 6]);
    let v2_containers: usize = cluster
        .agents
        .iter()
        .map(|a| {
            a.containers(false).iter().filter(|id| docker_inspect(id, "{{.Config.Image}}") == "shoal/busybox:2").count()
        })
        .sum();
    assert_eq!(v2_containers, 6, "six v2 containers run");
    let max = watcher.await?;
    assert!((1..=2).contains(&max), "slots in transition at once: {max}");

    // Push-style rollback toggles between the last two specs.
    rollback_by_name(&addr, "web").await?;
    let s = wait_update_status(&addr, "web", UpdateState::RollbackCompleted, Duration::from_secs(60)).await?;
    assert_eq!(s.spec.task.container.image, "shoal/busybox:1");
    wait_tasks(&addr, "web", Duration::from_secs(30), "v1 again", |t| images(t) == vec!["shoal/busybox:1"; 6]).await?;
    rollback_by_name(&addr, "web").await?;
    let s = wait_update_status(&addr, "web", UpdateState::RollbackCompleted, Duration::from_secs(60)).await?;
    assert_eq!(s.spec.task.container.image, "shoal/busybox:2");
    wait_tasks(&addr, "web", Duration::from_secs(30), "v2 again", |t| images(t) == vec!["shoal/busybox:2"; 6]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_image_rolls_back_automatically() -> Result<()> {
    let mut cluster = Cluster::start(1).await?;
    cluster.add_agent(&[]).await?;
    let addr = cluster.running_addrs()[0].clone();
    let mut spec = ServiceSpec::new("api", "shoal/busybox:1");
    spec.mode = ServiceMode::Replicated { replicas: 3 };
    spec.rollback_config.monitor = GoDuration::from_secs(1);
    create_service(&addr, &spec).await?;
    wait_tasks(&addr, "api", Duration::from_secs(30), "3 running", |t| running(t).len() == 3).await?;
    update_by_name(&addr, "api", |s| {
        s.task.container.image = "shoal/fail:1".into();
        s.update_config.failure_action = FailureAction::Rollback;
        // The new container fails 1 s after it starts: a 2 s per-slot delay lets the updater
        // see that before it moves to the next slot.
        s.update_config.delay = GoDuration::from_secs(2);
    })
    .await?;
    let s = wait_update_status(&addr, "api", UpdateState::RollbackCompleted, Duration::from_secs(60)).await?;
    assert_eq!(s.spec.task.container.image, "shoal/busybox:1");
    assert!(s.previous_spec.is_none());
    let tasks = list_tasks(&addr, "api").await?;
    assert_eq!(images(&tasks), vec!["shoal/busybox:1"; 3]);
    let failed: Vec<&Task> =
        tasks.iter().filter(|t| t.spec.container.image == "shoal/fail:1" && t.origin == TaskOrigin::Update).collect();
    assert_eq!(failed.len(), 1, "the first failure rolled back (ratio 0)");
    assert_eq!(failed[0].status.err, "task: non-zero exit (3)");
    Ok(())
}

/// kill -9 of the leader in the middle of a rolling update: the new leader carries on from the
/// store, without redoing finished slots and without exceeding parallelism.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_mid_update_completes_it_once() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    cluster.add_agent(&[]).await?;
    cluster.add_agent(&[]).await?;
    let leader = cluster.leader().await?;
    let watcher_addr = cluster.managers[(leader + 1) % 3].addr.clone();
    let mut spec = ServiceSpec::new("web", "shoal/busybox:1");
    spec.mode = ServiceMode::Replicated { replicas: 6 };
    let svc = create_service(&watcher_addr, &spec).await?;
    wait_tasks(&watcher_addr, "web", Duration::from_secs(30), "6 running", |t| running(t).len() == 6).await?;

    let watcher = watch_transitions(watcher_addr.clone(), svc.id.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    update_by_name(&watcher_addr, "web", |s| {
        s.task.container.image = "shoal/busybox:2".into();
        s.update_config.parallelism = 2;
        s.update_config.delay = GoDuration::from_secs(1);
        s.update_config.monitor = GoDuration::from_secs(1);
    })
    .await?;
    // Let the first batch get going, then kill the leader.
    wait_tasks(&watcher_addr, "web", Duration::from_secs(20), "first slots updated", |t| {
        running(t).iter().filter(|t| t.spec.container.image == "shoal/busybox:2").count() >= 2
    })
    .await?;
    cluster.managers[leader].kill9();
    let done = wait_update_status(&watcher_addr, "web", UpdateState::Completed, Duration::from_secs(90)).await?;
    assert_eq!(done.spec.task.container.image, "shoal/busybox:2");
    let tasks = list_tasks(&watcher_addr, "web").await?;
    assert_eq!(images(&tasks), vec!["shoal/busybox:2"; 6]);
    let made: Vec<&Task> =
        tasks.iter().filter(|t| t.origin == TaskOrigin::Update && t.spec_version == done.spec_version).collect();
    let mut slots: Vec<u64> = made.iter().map(|t| t.slot).collect();
    slots.sort();
    assert_eq!(slots, vec![1, 2, 3, 4, 5, 6], "each slot replaced exactly once");
    let max = watcher.await?;
    assert!(max <= 2, "slots in transition at once: {max}");
    // The rollout record the old leader opened was carried on by the new one: one record for the
    // spec, every slot once, batches within parallelism.
    let out = shoal(&watcher_addr, &["rollout", "ls", "--format", "json", "web"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let records: Vec<shoal_types::Rollout> = serde_json::from_str(&stdout(&out))?;
    let mine: Vec<&shoal_types::Rollout> = records.iter().filter(|r| r.spec_version == done.spec_version).collect();
    assert_eq!(mine.len(), 1, "{records:?}");
    assert_eq!(mine[0].state, shoal_types::RolloutState::Completed);
    let mut recorded: Vec<String> =
        mine[0].batches.iter().flat_map(|b| b.slots.iter().map(|s| s.name.clone())).collect();
    recorded.sort();
    assert_eq!(recorded, ["web.1", "web.2", "web.3", "web.4", "web.5", "web.6"], "{:?}", mine[0]);
    assert!(mine[0].batches.iter().all(|b| b.slots.len() <= 2), "{:?}", mine[0]);
    Ok(())
}

/// The CLI waits for the rollout and says how it ended in its exit code: 0 converged, 4 rolled
/// back automatically (docker exits 0 there), and a stale or impossible request changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_update_waits_and_exits_non_zero_after_an_automatic_rollback() -> Result<()> {
    let mut cluster = Cluster::start(1).await?;
    cluster.add_agent(&[]).await?;
    let host = cluster.running_addrs()[0].clone();
    let out = shoal(
        &host,
        &[
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            "2",
            "--update-monitor",
            "1s",
            "--rollback-monitor",
            "1s",
            "shoal/busybox:1",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("verify: Service web converged"), "{}", stdout(&out));

    let out = shoal(&host, &["service", "update", "--image", "shoal/busybox:2", "web"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("overall progress: 2 out of 2 tasks"), "{}", stdout(&out));

    let out = shoal(&host, &["service", "rollback", "web"]);
    assert_eq!(out.status.code(), Some(0), "a manual rollback that completes is a success: {}", stderr(&out));
    assert!(stdout(&out).contains("rollback: manually requested rollback"), "{}", stdout(&out));

    let out = shoal(
        &host,
        &[
            "service",
            "update",
            "--image",
            "shoal/fail:1",
            "--update-failure-action",
            "rollback",
            "--update-delay",
            "2s",
            "--update-monitor",
            "3s",
            "web",
        ],
    );
    assert_eq!(out.status.code(), Some(4), "stdout: {}\nstderr: {}", stdout(&out), stderr(&out));
    assert!(
        stderr(&out).contains("service rolled back: update rolled back due to failure or early termination of task"),
        "{}",
        stderr(&out)
    );
    let s = service_by_name(&host, "web").await?;
    assert_eq!(s.update_status.unwrap().state, UpdateState::RollbackCompleted);
    assert_eq!(s.spec.task.container.image, "shoal/busybox:1");

    // No previous spec after an automatic rollback: refused, exit 1, nothing changes.
    let out = shoal(&host, &["service", "rollback", "web"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("service web does not have a previous spec"), "{}", stderr(&out));
    let out = shoal(&host, &["service", "update", "--rollback", "--image", "x", "web"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("other flags may not be combined with --rollback"), "{}", stderr(&out));
    assert_eq!(service_by_name(&host, "web").await?.version, s.version, "refused requests changed nothing");
    Ok(())
}
