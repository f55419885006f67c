//! Managers and agents in one process: the real manager code and gRPC over loopback, with agents
//! driving the in-memory fake executor, so container behaviour is under the test's control.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use shoal_agent::{Agent, AgentConfig};
use shoal_control::ManagerConfig;
use shoal_executor::FakeExecutor;
use shoal_proto::v1::*;
use shoal_tests::{connect, create_service, free_addr};
use shoal_types::{Availability, NodeSpec, ServiceMode, ServiceSpec, Task, TaskState};

struct TestAgent {
    agent: Arc<Agent>,
    fake: Arc<FakeExecutor>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl TestAgent {
    fn alive(&self) -> bool {
        self.handle.is_some()
    }
    /// The agent process dies (its containers keep running, like a crashed agent).
    fn kill(&mut self) {
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}

struct World {
    dir: tempfile::TempDir,
    managers: Vec<(String, Option<shoal_control::Running>)>,
    agents: Vec<TestAgent>,
}

impl World {
    async fn start(managers: usize, agents: usize) -> Result<World> {
        let mut w = World { dir: tempfile::tempdir()?, managers: Vec::new(), agents: Vec::new() };
        for i in 0..managers {
            let addr = free_addr();
            let mut config = ManagerConfig::new(w.dir.path().join(format!("m{i}")), addr.parse()?);
            config.hostname = format!("m{i}");
            config.admin_bundle_to_home = false;
            if i > 0 {
                config.join = Some(w.managers[0].0.clone());
                config.token = Some(shoal_tests::join_token(&w.managers[0].0, "manager").await?);
            }
            let running = shoal_control::start(config).await?;
            shoal_tests::register_admin_bundle(&addr, &w.dir.path().join("m0").join("admin"));
            w.managers.push((addr, Some(running)));
            w.wait(Duration::from_secs(20), |info| info.raft.voters.len() == i + 1).await?;
        }
        for _ in 0..agents {
            w.add_agent(&[]).await?;
        }
        Ok(w)
    }

    fn addr(&self) -> String {
        self.managers.iter().find(|(_, r)| r.is_some()).map(|(a, _)| a.clone()).expect("a manager runs")
    }

    async fn add_agent(&mut self, labels: &[(&str, &str)]) -> Result<usize> {
        let i = self.agents.len();
        let dir = self.dir.path().join(format!("a{i}"));
        let token = shoal_tests::join_token(&self.addr(), "worker").await?;
        let (node_id, credentials) = shoal_agent::join_or_resume(&dir, &self.addr(), Some(&token)).await?;
        let fake = Arc::new(FakeExecutor::new(&node_id));
        let config = AgentConfig {
            tls: shoal_agent::shoal_tls::NodeTls::new(&credentials)?,
            data_dir: dir,
            managers: self.managers.iter().map(|(a, _)| a.clone()).collect(),
            hostname: Some(format!("agent{i}")),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ingress_addr: None,
        };
        let agent = Agent::new(node_id, config, fake.clone())?;
        let handle = tokio::spawn(agent.clone().run());
        self.agents.push(TestAgent { agent, fake, handle: Some(handle) });
        let n = self.agents.len();
        self.until(Duration::from_secs(10), "agent registered", |_, nodes| {
            nodes.iter().filter(|n| n.manager.is_none() && n.status.state == shoal_types::NodeState::Ready).count() == n
        })
        .await?;
        Ok(i)
    }

    async fn wait(&self, timeout: Duration, cond: impl Fn(&shoal_types::ClusterInfo) -> bool) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            for (addr, running) in &self.managers {
                if running.is_some()
                    && let Ok(info) = shoal_tests::cluster_info(addr).await
                    && cond(&info)
                {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() > deadline {
                bail!("cluster condition not reached");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn tasks(&self) -> Result<Vec<Task>> {
        let r = connect(&self.addr()).await?.list_tasks(ListTasksRequest::default()).await?;
        Ok(r.into_inner().tasks_json.iter().map(|j| serde_json::from_str(j).unwrap()).collect())
    }

    async fn nodes(&self) -> Result<Vec<shoal_types::Node>> {
        shoal_tests::list_nodes(&self.addr()).await
    }

    /// Polls tasks and nodes until `cond` holds.
    async fn until(
        &self,
        timeout: Duration,
        what: &str,
        cond: impl Fn(&[Task], &[shoal_types::Node]) -> bool,
    ) -> Result<Vec<Task>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let (Ok(tasks), Ok(nodes)) = (self.tasks().await, self.nodes().await)
                && cond(&tasks, &nodes)
            {
                return Ok(tasks);
            }
            if tokio::time::Instant::now() > deadline {
                let tasks = self.tasks().await.unwrap_or_default();
                let summary: Vec<String> = tasks
                    .iter()
                    .map(|t| {
                        format!(
                            "{} slot{} node={} {}→{} {}",
                            &t.id[..6],
                            t.slot,
                            t.node_id.get(..6).unwrap_or(""),
                            t.status.state,
                            t.desired_state,
                            t.status.err
                        )
                    })
                    .collect();
                bail!("{what}: not reached within {timeout:?}; tasks:\n{}", summary.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Containers the fake engines of live agents are running, per agent.
    fn running_per_agent(&self) -> Vec<usize> {
        self.agents.iter().filter(|a| a.alive()).map(|a| a.fake.running().len()).collect()
    }
}

fn running_of<'a>(tasks: &'a [Task], service: &str) -> Vec<&'a Task> {
    tasks
        .iter()
        .filter(|t| {
            t.service_id == service && t.status.state == TaskState::Running && t.desired_state == TaskState::Running
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_spread_and_are_replaced_when_an_agent_is_lost() -> Result<()> {
    let mut w = World::start(1, 3).await?;
    let svc = create_service(&w.addr(), &{
        let mut s = ServiceSpec::new("web", "shoal/busybox:1");
        s.mode = ServiceMode::Replicated { replicas: 6 };
        s
    })
    .await?;
    w.until(Duration::from_secs(10), "6 running", |t, _| running_of(t, &svc.id).len() == 6).await?;
    assert_eq!(w.running_per_agent(), vec![2, 2, 2], "spread evenly over the agents");

    // The agent on node 0 dies: after 3 missed heartbeats its node is DOWN and its two tasks
    // run elsewhere; the replacements start without the restart delay.
    let lost_node = w.agents[0].agent.node_id.clone();
    w.agents[0].kill();
    let tasks = w
        .until(Duration::from_secs(10), "replaced after node loss", |t, nodes| {
            nodes.iter().any(|n| n.id == lost_node && n.status.state == shoal_types::NodeState::Down)
                && running_of(t, &svc.id).iter().filter(|t| t.node_id != lost_node).count() == 6
        })
        .await?;
    let lost: Vec<&Task> = tasks.iter().filter(|t| t.node_id == lost_node).collect();
    assert!(lost.iter().all(|t| t.desired_state == TaskState::Shutdown), "tasks on the lost node are shut down");
    assert_eq!(w.running_per_agent().iter().sum::<usize>(), 6);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_moves_tasks_and_a_failed_container_is_restarted() -> Result<()> {
    let w = World::start(1, 2).await?;
    let mut spec = ServiceSpec::new("web", "shoal/busybox:1");
    spec.mode = ServiceMode::Replicated { replicas: 2 };
    spec.task.restart_policy.delay = shoal_types::GoDuration::from_millis(200);
    let svc = create_service(&w.addr(), &spec).await?;
    w.until(Duration::from_secs(10), "2 running", |t, _| running_of(t, &svc.id).len() == 2).await?;

    // A container exits non-zero behind the agent's back: FAILED with the exit code, replaced.
    let victim = w.agents[0].fake.running()[0].clone();
    assert!(w.agents[0].fake.exit(&victim, 137));
    let tasks = w
        .until(Duration::from_secs(10), "restarted", |t, _| {
            running_of(t, &svc.id).len() == 2 && t.iter().any(|x| x.id == victim && x.status.state == TaskState::Failed)
        })
        .await?;
    let failed = tasks.iter().find(|t| t.id == victim).unwrap();
    assert_eq!(failed.status.err, "task: non-zero exit (137)");
    assert_eq!(failed.status.exit_code, Some(137));

    // Drain node 0: its task moves to node 1.
    let node0 = w.agents[0].agent.node_id.clone();
    let node = w.nodes().await?.into_iter().find(|n| n.id == node0).unwrap();
    let spec = NodeSpec { availability: Availability::Drain, ..node.spec.clone() };
    connect(&w.addr())
        .await?
        .update_node(UpdateNodeRequest {
            node: node0.clone(),
            version: node.version,
            spec_json: serde_json::to_string(&spec)?,
        })
        .await?;
    w.until(Duration::from_secs(10), "drained", |t, _| {
        let running = running_of(t, &svc.id);
        running.len() == 2 && running.iter().all(|t| t.node_id != node0)
    })
    .await?;
    assert!(w.agents[0].fake.running().is_empty(), "the drained node's container was stopped");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_service_follows_nodes() -> Result<()> {
    let mut w = World::start(1, 2).await?;
    let mut spec = ServiceSpec::new("monitor", "shoal/busybox:1");
    spec.mode = ServiceMode::Global;
    let svc = create_service(&w.addr(), &spec).await?;
    w.until(Duration::from_secs(10), "one per node", |t, _| running_of(t, &svc.id).len() == 2).await?;
    w.add_agent(&[]).await?;
    w.until(Duration::from_secs(10), "new node gets one", |t, _| running_of(t, &svc.id).len() == 3).await?;
    assert_eq!(w.running_per_agent(), vec![1, 1, 1]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_failover_restarts_no_task() -> Result<()> {
    let mut w = World::start(3, 2).await?;
    let mut spec = ServiceSpec::new("web", "shoal/busybox:1");
    spec.mode = ServiceMode::Replicated { replicas: 4 };
    let svc = create_service(&w.addr(), &spec).await?;
    let before = w.until(Duration::from_secs(10), "4 running", |t, _| running_of(t, &svc.id).len() == 4).await?;
    let started_before: usize = w.agents.iter().map(|a| a.fake.started()).sum();
    let leader_addr = shoal_tests::cluster_info(&w.addr()).await?.leader.unwrap().addr;
    let index = w.managers.iter().position(|(a, _)| *a == leader_addr).unwrap();
    let running = w.managers[index].1.take().unwrap();
    running.manager.shutdown().await;
    w.wait(Duration::from_secs(10), |i| i.leader.as_ref().is_some_and(|l| l.addr != leader_addr)).await?;
    // Longer than the failover grace would allow if nodes were wrongly declared down.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = w.until(Duration::from_secs(10), "still 4 running", |t, _| running_of(t, &svc.id).len() == 4).await?;
    let ids = |t: &[Task]| {
        let mut v: Vec<String> = running_of(t, &svc.id).iter().map(|t| t.id.clone()).collect();
        v.sort();
        v
    };
    assert_eq!(ids(&before), ids(&after), "the same tasks run");
    let started_after: usize = w.agents.iter().map(|a| a.fake.started()).sum();
    assert_eq!(started_before, started_after, "no container was started again");
    assert!(
        w.nodes()
            .await?
            .iter()
            .filter(|n| n.manager.is_none())
            .all(|n| n.status.state == shoal_types::NodeState::Ready)
    );
    Ok(())
}
