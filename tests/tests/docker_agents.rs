//! Real managers and agents as processes, real containers on the local Docker engine (images from
//! deploy/images/build.sh).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use shoal_proto::v1::UpdateServiceRequest;
use shoal_tests::*;
use shoal_types::{GoDuration, ServiceMode, ServiceSpec, TaskState};

fn replicated(name: &str, image: &str, replicas: u64) -> ServiceSpec {
    let mut spec = ServiceSpec::new(name, image);
    spec.mode = ServiceMode::Replicated { replicas };
    spec.task.restart_policy.delay = GoDuration::from_millis(500);
    spec
}

async fn scale(addr: &str, service: &str, replicas: u64) -> Result<()> {
    let current = list_services(addr).await?.into_iter().find(|s| s.spec.name == service).expect("service exists");
    let mut spec = current.spec.clone();
    spec.mode = ServiceMode::Replicated { replicas };
    connect(addr)
        .await?
        .update_service(UpdateServiceRequest {
            service: service.into(),
            version: current.version,
            spec_json: serde_json::to_string(&spec)?,
            rollback: false,
            ..Default::default()
        })
        .await?;
    Ok(())
}

fn per_agent(cluster: &Cluster) -> Vec<usize> {
    cluster.agents.iter().map(|a| a.containers(false).len()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_run_spread_restart_adopt_scale_and_go_away() -> Result<()> {
    let mut cluster = Cluster::start(1).await?;
    for _ in 0..3 {
        cluster.add_agent(&[]).await?;
    }
    let addr = cluster.running_addrs()[0].clone();
    create_service(&addr, &replicated("web", "shoal/busybox:1", 6)).await?;
    let tasks = wait_tasks(&addr, "web", Duration::from_secs(30), "6 running", |t| running(t).len() == 6).await?;
    assert_eq!(per_agent(&cluster), vec![2, 2, 2], "spread evenly");
    for task in running(&tasks) {
        let name = format!("web.{}.{}", task.slot, task.id);
        assert_eq!(docker_inspect(&task.status.container_id, "{{.Name}}"), format!("/{name}"));
        assert_eq!(docker_inspect(&task.status.container_id, "{{.State.Running}}"), "true");
    }

    // docker kill behind shoal's back: the task fails and is replaced after the restart delay.
    let victim = running(&tasks)[0].clone();
    std::process::Command::new("docker").args(["kill", &victim.status.container_id]).output()?;
    let tasks = wait_tasks(&addr, "web", Duration::from_secs(20), "replaced after docker kill", |t| {
        running(t).len() == 6 && t.iter().any(|x| x.id == victim.id && x.status.state == TaskState::Failed)
    })
    .await?;
    let failed = tasks.iter().find(|t| t.id == victim.id).unwrap();
    assert_eq!(failed.status.err, "task: non-zero exit (137)");
    let replacement = running(&tasks).into_iter().find(|t| t.slot == victim.slot).unwrap();
    assert_ne!(replacement.id, victim.id);

    // Restart an agent: its running containers are adopted, not restarted or duplicated.
    let agent = &mut cluster.agents[1];
    let before: BTreeMap<String, String> = agent
        .containers(false)
        .into_iter()
        .map(|id| (id.clone(), docker_inspect(&id, "{{.State.StartedAt}}")))
        .collect();
    assert_eq!(before.len(), 2);
    agent.kill9();
    tokio::time::sleep(Duration::from_millis(500)).await;
    agent.restart()?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after: BTreeMap<String, String> = agent
        .containers(false)
        .into_iter()
        .map(|id| (id.clone(), docker_inspect(&id, "{{.State.StartedAt}}")))
        .collect();
    assert_eq!(before, after, "same containers, same start times");
    wait_tasks(&addr, "web", Duration::from_secs(10), "still 6", |t| running(t).len() == 6).await?;

    // Scale down, then up.
    scale(&addr, "web", 3).await?;
    wait_tasks(&addr, "web", Duration::from_secs(20), "3 running", |t| running(t).len() == 3).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while per_agent(&cluster).iter().sum::<usize>() != 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(per_agent(&cluster).iter().sum::<usize>(), 3, "scaled-down containers stopped");
    scale(&addr, "web", 5).await?;
    wait_tasks(&addr, "web", Duration::from_secs(20), "5 running", |t| running(t).len() == 5).await?;

    // rm removes every container.
    connect(&addr).await?.remove_service(shoal_proto::v1::RemoveServiceRequest { service: "web".into() }).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left: usize = cluster.agents.iter().map(|a| a.containers(true).len()).sum();
        if left == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{left} containers left after service rm\n{}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_agents_tasks_run_elsewhere_and_no_duplicates_remain() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    for _ in 0..3 {
        cluster.add_agent(&[]).await?;
    }
    let addr = cluster.running_addrs()[0].clone();
    create_service(&addr, &replicated("api", "shoal/busybox:1", 6)).await?;
    wait_tasks(&addr, "api", Duration::from_secs(30), "6 running", |t| running(t).len() == 6).await?;
    let lost = cluster.agents[0].node_id.clone();
    cluster.agents[0].kill9();
    // How fast is shoal-bench's to measure (node loss → replacement running); here it must happen.
    wait_tasks(&addr, "api", Duration::from_secs(60), "replaced elsewhere", |t| {
        running(t).iter().filter(|t| t.node_id != lost).count() == 6
    })
    .await?;
    // The agent comes back: the tasks it still runs are shut down, so no slot runs twice.
    cluster.agents[0].restart()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !cluster.agents[0].containers(false).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the returning agent kept its old containers\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(per_agent(&cluster).iter().sum::<usize>(), 6, "exactly one container per slot");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_gates_running_and_missing_images_are_rejected() -> Result<()> {
    let mut cluster = Cluster::start(1).await?;
    cluster.add_agent(&[]).await?;
    let addr = cluster.running_addrs()[0].clone();

    create_service(&addr, &replicated("healthy", "shoal/healthy:1", 1)).await?;
    let tasks =
        wait_tasks(&addr, "healthy", Duration::from_secs(20), "healthy running", |t| running(t).len() == 1).await?;
    let id = &running(&tasks)[0].status.container_id;
    assert_eq!(docker_inspect(id, "{{.State.Health.Status}}"), "healthy", "RUNNING only once healthy");

    create_service(&addr, &replicated("sick", "shoal/unhealthy:1", 1)).await?;
    let tasks = wait_tasks(&addr, "sick", Duration::from_secs(30), "unhealthy fails", |t| {
        t.iter().any(|t| t.status.state == TaskState::Failed)
    })
    .await?;
    assert!(running(&tasks).is_empty(), "an unhealthy task never counts as running");
    let failed = tasks.iter().find(|t| t.status.state == TaskState::Failed).unwrap();
    assert!(failed.status.err.to_lowercase().contains("unhealthy"), "{}", failed.status.err);

    create_service(&addr, &replicated("ghost", "shoal/does-not-exist:1", 1)).await?;
    let tasks = wait_tasks(&addr, "ghost", Duration::from_secs(20), "rejected", |t| {
        t.iter().any(|t| t.status.state == TaskState::Rejected)
    })
    .await?;
    let rejected = tasks.iter().find(|t| t.status.state == TaskState::Rejected).unwrap();
    assert_eq!(rejected.status.err, "image shoal/does-not-exist:1 not found locally (shoal never pulls images)");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_update_task_history_limit_changes_how_many_tasks_a_slot_keeps() -> Result<()> {
    let mut cluster = Cluster::start(1).await?;
    cluster.add_agent(&[]).await?;
    let addr = cluster.managers[0].addr.clone();
    ok(&shoal(&addr, &["service", "create", "--quiet", "--name", "hist", "shoal/busybox:1"]));
    // Each forced update replaces the slot's task: one running, the others shut down.
    for _ in 0..5 {
        ok(&shoal(&addr, &["service", "update", "--quiet", "--force", "hist"]));
    }
    // 6 tasks made; the default history (5) keeps 5 of them.
    let tasks =
        wait_tasks(&addr, "hist", Duration::from_secs(30), "5 kept", |t| t.len() == 5 && running(t).len() == 1).await?;
    assert!(tasks.iter().all(|t| t.slot == 1), "one slot");

    assert_eq!(ok(&shoal(&addr, &["cluster", "update", "--task-history-limit", "2"])), "Cluster updated.\n");
    // The reaper applies the new limit at once: the running task and the newest old one stay.
    let kept =
        wait_tasks(&addr, "hist", Duration::from_secs(30), "2 kept", |t| t.len() == 2 && running(t).len() == 1).await?;
    let newest_old = tasks
        .iter()
        .filter(|t| t.desired_state > TaskState::Running)
        .max_by_key(|t| (t.status.timestamp.max(t.created_at), t.id.clone()))
        .expect("old tasks");
    assert!(kept.iter().any(|t| t.id == newest_old.id), "the newest old task is kept: {kept:?}");
    // And it holds for the next replacement too.
    ok(&shoal(&addr, &["service", "update", "--quiet", "--force", "hist"]));
    let after = wait_tasks(&addr, "hist", Duration::from_secs(30), "2 kept after another update", |t| {
        t.len() == 2 && running(t).len() == 1 && !t.iter().any(|t| t.id == newest_old.id)
    })
    .await?;
    assert!(after.iter().all(|t| t.slot == 1));
    ok(&shoal(&addr, &["service", "rm", "hist"]));
    Ok(())
}
