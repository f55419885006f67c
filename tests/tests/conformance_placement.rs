//! Placement as Swarm does it, with real managers, agents and containers (images from
//! deploy/images/build.sh): the constraint enforcer, and the faulty-node rule for one
//! crash-looping slot.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Result, bail};
use shoal_tests::*;
use shoal_types::{Constraint, GoDuration, ServiceMode, ServiceSpec, Task, TaskState};

fn replicated(name: &str, image: &str, replicas: u64) -> ServiceSpec {
    let mut spec = ServiceSpec::new(name, image);
    spec.mode = ServiceMode::Replicated { replicas };
    spec.task.restart_policy.delay = GoDuration::from_millis(0);
    spec
}

fn ps(tasks: &[Task]) -> String {
    tasks
        .iter()
        .map(|t| {
            format!(
                "{} {} node={} {}/{} {} {}",
                t.id,
                t.name(),
                t.node_id,
                t.status.state,
                t.desired_state,
                t.status.message,
                t.status.err
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `node update --label-rm` makes the node stop matching: the task there is rejected by the
/// constraint enforcer (Swarm's message and error), its container stops, and the replacement
/// runs on the other node, which still matches. A service without the constraint on the same
/// node is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_matching_loses_its_task_to_a_node_that_matches() -> Result<()> {
    let mut cluster = Cluster::start(1).await?;
    cluster.add_agent(&["zone=a"]).await?;
    cluster.add_agent(&["zone=a"]).await?;
    let addr = cluster.running_addrs()[0].clone();

    let mut pinned = replicated("pinned", "shoal/busybox:1", 1);
    pinned.task.placement.constraints = vec![Constraint::parse("node.labels.zone==a")?];
    create_service(&addr, &pinned).await?;
    let tasks = wait_tasks(&addr, "pinned", Duration::from_secs(30), "pinned runs", |t| running(t).len() == 1).await?;
    let old = running(&tasks)[0].clone();
    let other = cluster.agents.iter().map(|a| a.node_id.clone()).find(|id| *id != old.node_id).expect("2 agents");
    // A service without constraints, placed on the same node, as a control.
    let mut free = replicated("free", "shoal/busybox:1", 2);
    free.task.placement.constraints.clear();
    create_service(&addr, &free).await?;
    let free_before =
        wait_tasks(&addr, "free", Duration::from_secs(30), "free runs", |t| running(t).len() == 2).await?;

    let out = shoal(&addr, &["node", "update", "--label-rm", "zone", &old.node_id]);
    assert!(out.status.success(), "node update failed: {}", stderr(&out));

    let tasks = wait_tasks(&addr, "pinned", Duration::from_secs(60), "rejected and replaced on the other node", |t| {
        let rejected = t.iter().any(|x| x.id == old.id && x.status.state == TaskState::Rejected);
        rejected && running(t).iter().any(|x| x.slot == old.slot && x.node_id == other)
    })
    .await?;
    let rejected = tasks.iter().find(|t| t.id == old.id).expect("old task kept in history");
    assert_eq!(rejected.status.message, "task rejected by constraint enforcer", "{}", ps(&tasks));
    assert_eq!(rejected.status.err, "assigned node no longer meets constraints", "{}", ps(&tasks));
    assert_eq!(rejected.desired_state, TaskState::Shutdown);
    assert_eq!(running(&tasks).len(), 1, "one replica: {}", ps(&tasks));
    assert!(
        tasks.iter().filter(|t| t.id != old.id).all(|t| t.node_id != old.node_id),
        "nothing went back to the node that no longer matches: {}",
        ps(&tasks)
    );

    // The rejected task's container stops.
    let container = old.status.container_id.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while docker_inspect(&container, "{{.State.Running}}") == "true" {
        if tokio::time::Instant::now() > deadline {
            bail!("the rejected task's container still runs\n{}", cluster.logs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The unconstrained service kept its tasks where they were.
    let free_after = list_tasks(&addr, "free").await?;
    let ids = |t: &[Task]| -> Vec<(String, String)> {
        let mut v: Vec<_> = running(t).iter().map(|x| (x.id.clone(), x.node_id.clone())).collect();
        v.sort();
        v
    };
    assert_eq!(ids(&free_after), ids(&free_before), "{}", ps(&free_after));
    Ok(())
}

/// One replica whose container exits at once, on two nodes: its tasks keep landing on the same
/// node (equal counts, then the node id decides) until 5 of them failed there; the next one goes
/// to the other node. The store keeps at most 5 tasks of the slot, so the failures must be counted
/// on their own, not from the tasks still stored. Every task is seen by polling the store (a task
/// stays stored until four newer ones of its slot exist, seconds later with the backoff).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_failures_on_a_node_send_a_crash_looping_slot_to_the_other_node() -> Result<()> {
    let mut cluster = Cluster::start(1).await?;
    cluster.add_agent(&[]).await?;
    cluster.add_agent(&[]).await?;
    let addr = cluster.running_addrs()[0].clone();
    // Exits 3 after 1 s; restart delay 0, so the backoff waits 0, 2, 4, 8, 16 s.
    create_service(&addr, &replicated("crash", "shoal/fail:1", 1)).await?;

    let mut seen: BTreeMap<String, Task> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    let (first_node, moved) = loop {
        for task in list_tasks(&addr, "crash").await.unwrap_or_default() {
            if !task.node_id.is_empty() {
                seen.insert(task.id.clone(), task);
            }
        }
        let mut placed: Vec<&Task> = seen.values().collect();
        placed.sort_by_key(|t| (t.created_at, t.id.clone()));
        if let Some(first) = placed.first()
            && let Some(moved) = placed.iter().find(|t| t.node_id != first.node_id)
        {
            break (first.node_id.clone(), (*moved).clone());
        }
        if tokio::time::Instant::now() > deadline {
            let all: Vec<Task> = seen.values().cloned().collect();
            bail!("the slot never left its node; tasks seen:\n{}", ps(&all));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let before: Vec<&Task> = seen.values().filter(|t| t.created_at < moved.created_at).collect();
    let all: Vec<Task> = seen.values().cloned().collect();
    assert_eq!(before.len(), 5, "the slot moved after 5 tasks on its first node: {}", ps(&all));
    assert!(before.iter().all(|t| t.node_id == first_node), "{}", ps(&all));
    // Each of the five failed: its last state seen (the first ones are reaped once newer ones of
    // the slot exist, but each was seen failed before that).
    assert!(before.iter().all(|t| t.status.state == TaskState::Failed), "{}", ps(&all));
    assert_eq!(moved.slot, before[0].slot);
    Ok(())
}

/// `--constraint node.role==manager` cannot be met (managers run no tasks): the task stays
/// pending, and its error says why and what to do, instead of a bare "no suitable node".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_only_constraint_says_that_managers_run_no_tasks() -> Result<()> {
    let mut cluster = Cluster::start(1).await?;
    cluster.add_agent(&[]).await?;
    let addr = cluster.managers[0].addr.clone();
    ok(&shoal(
        &addr,
        &["service", "create", "-d", "--name", "onmgr", "--constraint", "node.role==manager", "shoal/busybox:1"],
    ));
    let tasks = wait_tasks(&addr, "onmgr", Duration::from_secs(30), "an unschedulable reason", |tasks| {
        tasks.iter().any(|t| t.status.state == TaskState::Pending && !t.status.err.is_empty())
    })
    .await?;
    let err = &tasks[0].status.err;
    assert!(err.starts_with("no suitable node (managers run no tasks"), "{}", ps(&tasks));
    assert!(err.contains("run shoal-agent on a manager's machine"), "{err}");
    let ps_out = ok(&shoal(&addr, &["service", "ps", "--no-trunc", "onmgr"]));
    assert!(ps_out.contains("managers run no tasks"), "{ps_out}");
    Ok(())
}
