//! A short freeze of the leader manager (SIGSTOP: what a VM pause or a hung host does; its
//! sockets stay open and nothing answers) must not move any task: the agents find the new leader
//! within its failover grace, and the resumed old leader declares nobody down.
//!
//! Real processes: 3 managers, 2 agents, containers on the local Docker engine (images from
//! deploy/images/build.sh).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Result, bail, ensure};
use shoal_proto::v1::UpdateServiceRequest;
use shoal_tests::*;
use shoal_types::{GoDuration, NodeState, ServiceMode, ServiceSpec, Task};
use tokio::time::Instant;

const SERVICE: &str = "steady";

/// One test at a time: each runs up to five processes on a two-core machine, and a freeze test
/// must not have its heartbeats compete with another cluster for the CPU.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn replicated(name: &str, image: &str, replicas: u64) -> ServiceSpec {
    let mut spec = ServiceSpec::new(name, image);
    spec.mode = ServiceMode::Replicated { replicas };
    spec.task.restart_policy.delay = GoDuration::from_millis(500);
    spec
}

/// The service's task containers on this engine: container id → (task id, start time).
fn containers(cluster: &Cluster) -> BTreeMap<String, (String, String)> {
    cluster
        .agents
        .iter()
        .flat_map(|a| a.containers(true))
        .map(|id| {
            let task = docker_inspect(&id, r#"{{index .Config.Labels "org.shoal.task.id"}}"#);
            let started = docker_inspect(&id, "{{.State.StartedAt}}");
            (id, (task, started))
        })
        .collect()
}

fn ids(tasks: &[Task]) -> BTreeSet<String> {
    tasks.iter().map(|t| t.id.clone()).collect()
}

fn describe(tasks: &[Task]) -> String {
    tasks
        .iter()
        .map(|t| {
            format!(
                "{} slot {} node {} {}/{} {}",
                t.id, t.slot, t.node_id, t.status.state, t.desired_state, t.status.err
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Stops the manager `frozen` (the leader) for 5 s, resumes it, and checks through the manager
/// at `reader` that nothing moves while the cluster settles.
async fn freeze_and_check(
    cluster: &mut Cluster,
    frozen: usize,
    reader: &str,
    steady: &Steady,
    round: u32,
) -> Result<()> {
    let (before, agent_nodes) = (&steady.tasks, &steady.agents);
    let pid = cluster.managers[frozen].pid().expect("the manager runs");
    let stopped = Frozen::stop(pid)?;
    // The fault itself: the manager stays stopped for 5 s.
    tokio::time::sleep(Duration::from_secs(5)).await;
    stopped.resume()?;

    // Nothing may move while the cluster settles. A node is declared down at the latest 6
    // heartbeat periods (6 s) after a new leader took over, and a new leader is elected within
    // about 2.5 s of the freeze, so 15 s after the resume covers every moment a node could be
    // declared down and its tasks restarted elsewhere.
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        // Reads may fail while leadership moves; only what they return is judged.
        if let Ok(nodes) = list_nodes(reader).await {
            let down: Vec<String> = nodes
                .iter()
                .filter(|n| agent_nodes.contains(&n.id) && n.status.state == NodeState::Down)
                .map(|n| format!("{} ({})", n.id, n.status.message))
                .collect();
            if !down.is_empty() {
                bail!("round {round}: agents declared down after a 5 s leader freeze: {down:?}\n{}", cluster.logs());
            }
        }
        if let Ok(tasks) = list_tasks(reader, SERVICE).await
            && (ids(&tasks) != *before || running(&tasks).len() != 4)
        {
            bail!(
                "round {round}: tasks changed after a 5 s leader freeze\nbefore: {before:?}\nnow:\n{}\n{}",
                describe(&tasks),
                cluster.logs()
            );
        }
        if Instant::now() > until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let tasks = list_tasks(reader, SERVICE).await?;
    assert_eq!(ids(&tasks), *before, "round {round}: task ids before and after the freeze");
    assert_eq!(containers(cluster), steady.containers, "round {round}: the same containers, never restarted");
    let nodes = list_nodes(reader).await?;
    for node in nodes.iter().filter(|n| agent_nodes.contains(&n.id)) {
        assert_eq!(node.status.state, NodeState::Ready, "round {round}: agent node {} after the freeze", node.id);
    }
    Ok(())
}

/// What must not change: the service's task ids, its containers (with their start times) and
/// the agents' node ids.
struct Steady {
    tasks: BTreeSet<String>,
    containers: BTreeMap<String, (String, String)>,
    agents: BTreeSet<String>,
}

/// `managers` managers, 2 agents, and a service of 4 replicas running 2 on each agent.
async fn steady_cluster(managers: usize) -> Result<(Cluster, Steady)> {
    let mut cluster = Cluster::start(managers).await?;
    for _ in 0..2 {
        cluster.add_agent(&[]).await?;
    }
    let addr = cluster.running_addrs()[0].clone();
    create_service(&addr, &replicated(SERVICE, "shoal/busybox:1", 4)).await?;
    let tasks = wait_tasks(&addr, SERVICE, Duration::from_secs(30), "4 running", |t| running(t).len() == 4).await?;
    let per_agent: Vec<usize> = cluster.agents.iter().map(|a| a.containers(false).len()).collect();
    ensure!(per_agent == vec![2, 2], "tasks run on both agents: {per_agent:?}");
    let steady = Steady {
        tasks: ids(&tasks),
        containers: containers(&cluster),
        agents: cluster.agents.iter().map(|a| a.node_id.clone()).collect(),
    };
    Ok((cluster, steady))
}

/// Scales the service to 6: both agents hold live sessions with the current leader when the new
/// tasks reach them and run, and the original 4 still run.
async fn scale_up_reaches_both_agents(cluster: &Cluster, addr: &str, steady: &Steady) -> Result<()> {
    let current = list_services(addr).await?.into_iter().find(|s| s.spec.name == SERVICE).expect("service exists");
    let mut spec = current.spec.clone();
    spec.mode = ServiceMode::Replicated { replicas: 6 };
    connect(addr)
        .await?
        .update_service(UpdateServiceRequest {
            service: SERVICE.into(),
            version: current.version,
            spec_json: serde_json::to_string(&spec)?,
            rollback: false,
            ..Default::default()
        })
        .await?;
    let tasks =
        wait_tasks(addr, SERVICE, Duration::from_secs(30), "6 running after scaling up", |t| running(t).len() == 6)
            .await?;
    let running_ids: BTreeSet<String> = running(&tasks).iter().map(|t| t.id.clone()).collect();
    assert!(running_ids.is_superset(&steady.tasks), "the 4 original tasks still run after scaling up");
    let per_agent: Vec<usize> = cluster.agents.iter().map(|a| a.containers(false).len()).collect();
    assert_eq!(per_agent, vec![3, 3], "both agents took new tasks");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_five_second_leader_freeze_moves_no_task() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let (mut cluster, steady) = steady_cluster(3).await?;
    // Two rounds: the first freezes the manager the agents joined through (it initialised the
    // cluster and leads), the second the leader that replaced it, which the agents reach through
    // the list of managers they learned.
    let mut leader = cluster.leader().await?;
    for round in 1..=2 {
        // Every read goes to a manager that is not frozen (a call to a stopped process hangs).
        let reader = cluster.managers[(leader + 1) % cluster.managers.len()].addr.clone();
        freeze_and_check(&mut cluster, leader, &reader, &steady, round).await?;
        leader = cluster.leader().await?;
    }
    let addr = cluster.managers[leader].addr.clone();
    scale_up_reaches_both_agents(&cluster, &addr, &steady).await
}

/// With a single manager nobody takes over: when it resumes, it must not count the time it was
/// stopped as heartbeats its agents missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_five_second_freeze_of_the_only_manager_moves_no_task() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let (mut cluster, steady) = steady_cluster(1).await?;
    let addr = cluster.managers[0].addr.clone();
    freeze_and_check(&mut cluster, 0, &addr, &steady, 1).await?;
    scale_up_reaches_both_agents(&cluster, &addr, &steady).await
}
