//! Fault injection with shoal managers and agents running as containers (image
//! `shoal/shoal:local`, built from the debug binaries by `deploy/image/build.sh debug`) on Docker
//! networks each test creates and removes.
//!
//! Networking. Every test creates two user-defined bridge networks:
//!
//! - `raft`: everything between shoal nodes. Managers advertise `managerN:4242`, a network alias
//!   that exists only on this network; agents are attached only to it. Disconnecting a manager
//!   from it (`docker network disconnect`) cuts it off from the other managers and the agents.
//! - `api`: the test process calls each manager at its address on this network (the host can
//!   reach the containers of a bridge network). Nothing inside the cluster uses it: no shoal node
//!   knows an `api` address, and the `managerN` aliases do not resolve there. So a manager cut off
//!   from `raft` is still reachable by the test, which can send it writes and watch what it does.
//!   The containers get no `--hostname`: Docker (20.10 here) makes a container's hostname an alias
//!   on every network it joins, so `--hostname manager2` would let a partitioned manager1 still
//!   reach manager2 through `api`. Node names come from shoal's own `--hostname` flag.
//!
//! (Publishing ports was the alternative, but a published port is forwarded to the container's
//! address on one particular network, which is the one a partition takes away.)
//!
//! Agents drive this machine's Docker engine through its socket: task containers are siblings on
//! the host, labelled with the agent's node id and the service's name. Every name (networks,
//! containers, services) carries a random suffix; [`Env`]'s `Drop` removes the nodes' containers,
//! every task container of the test's agents and services, both networks and the managers' data
//! volumes. (An agent's `/data` lives in its container's writable layer, which survives
//! `docker kill` + `docker start`; a manager is restarted by recreating its container on its named
//! data volume, see [`Env::restart_manager`].)
//!
//! The tests take one at a time (a process-wide lock; nextest runs the `shoal-tests` package one
//! test at a time anyway): each starts up to six containers on a two-core machine, and raft's timers
//! should not compete with another cluster for the CPU.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use rand::Rng;
use shoal_proto::v1::control_client::ControlClient;
use shoal_proto::v1::*;
use shoal_tests::{list_nodes, list_tasks, running, slots_in_transition, wait_tasks};
use shoal_types::{
    ClusterInfo, GoDuration, NodeState, Service, ServiceMode, ServiceSpec, Task, TaskOrigin, TaskState, UpdateState,
};
use tokio::time::Instant;
use tonic::transport::Channel;

const IMAGE: &str = "shoal/shoal:local";
const PORT: u16 = 4242;

/// One fault test at a time within this test binary.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

// ---------------------------------------------------------------------------------------------
// docker

/// Runs `docker ARGS`; its stdout, or an error with its stderr.
fn docker(args: &[&str]) -> Result<String> {
    let out = Command::new("docker").args(args).output().context("running docker")?;
    if !out.status.success() {
        bail!("docker {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Ids of the containers matching a filter (running only, or all).
fn container_ids(filter: &str, all: bool) -> Vec<String> {
    let mut args = vec!["ps", "-q", "--no-trunc", "--filter", filter];
    if all {
        args.push("-a");
    }
    docker(&args).map(|s| s.lines().map(str::to_string).collect()).unwrap_or_default()
}

/// A running task container, from its labels.
#[derive(Debug, Clone)]
struct TaskContainer {
    id: String,
    slot: u64,
    node: String,
    task: String,
    image: String,
}

/// The running task containers of a service, on this engine.
fn task_containers(service: &str) -> Vec<TaskContainer> {
    let filter = format!("label=org.shoal.service.name={service}");
    let format = r#"{{.ID}} {{.Label "org.shoal.task.slot"}} {{.Label "org.shoal.node.id"}} {{.Label "org.shoal.task.id"}} {{.Image}}"#;
    let out = docker(&["ps", "--no-trunc", "--filter", &filter, "--format", format]).unwrap_or_default();
    out.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() == 5).then(|| TaskContainer {
                id: f[0].to_string(),
                slot: f[1].parse().unwrap_or(0),
                node: f[2].to_string(),
                task: f[3].to_string(),
                image: f[4].to_string(),
            })
        })
        .collect()
}

/// True when exactly `n` task containers of the service run, one for each slot 1..=n.
fn one_container_per_slot(containers: &[TaskContainer], n: u64) -> bool {
    let mut slots: Vec<u64> = containers.iter().map(|c| c.slot).collect();
    slots.sort();
    slots == (1..=n).collect::<Vec<_>>()
}

fn describe(containers: &[TaskContainer]) -> String {
    containers
        .iter()
        .map(|c| format!("slot {} task {} node {} {} {}", c.slot, c.task, c.node, c.image, &c.id[..12]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Strips the terminal colour codes tracing writes.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// gRPC

/// A control client with the admin bundle manager1 wrote (copied out of its container).
async fn client(addr: &str, timeout: Duration) -> Result<ControlClient<Channel>> {
    let bundle = shoal_tests::admin_bundle(addr).ok_or_else(|| anyhow!("no admin bundle for {addr}"))?;
    Ok(ControlClient::new(shoal_tests::tls_channel(addr, &shoal_tests::load_bundle(&bundle)?, timeout).await?))
}

async fn info(addr: &str, local: bool) -> Result<ClusterInfo> {
    let response = client(addr, Duration::from_secs(10)).await?.cluster_info(ClusterInfoRequest { local }).await?;
    Ok(serde_json::from_str(&response.into_inner().info_json)?)
}

async fn get_service(addr: &str, name: &str, timeout: Duration) -> Result<Service> {
    let response = client(addr, timeout).await?.get_service(GetServiceRequest { service: name.into() }).await?;
    Ok(serde_json::from_str(&response.into_inner().service_json)?)
}

async fn create(addr: &str, spec: &ServiceSpec) -> Result<Service> {
    create_with(addr, spec, Duration::from_secs(15)).await
}

async fn create_with(addr: &str, spec: &ServiceSpec, timeout: Duration) -> Result<Service> {
    let response = client(addr, timeout)
        .await?
        .create_service(CreateServiceRequest { spec_json: serde_json::to_string(spec)?, ..Default::default() })
        .await?;
    Ok(serde_json::from_str(&response.into_inner().service_json)?)
}

async fn update_spec(addr: &str, name: &str, version: u64, spec: &ServiceSpec, timeout: Duration) -> Result<Service> {
    let response = client(addr, timeout)
        .await?
        .update_service(UpdateServiceRequest {
            service: name.into(),
            version,
            spec_json: serde_json::to_string(spec)?,
            rollback: false,
            ..Default::default()
        })
        .await?;
    Ok(serde_json::from_str(&response.into_inner().service_json)?)
}

async fn service_names(addr: &str) -> Result<BTreeSet<String>> {
    let response = client(addr, Duration::from_secs(15)).await?.list_services(ListServicesRequest::default()).await?;
    response.into_inner().services_json.iter().map(|j| Ok(serde_json::from_str::<Service>(j)?.spec.name)).collect()
}

fn replicated(name: &str, image: &str, replicas: u64) -> ServiceSpec {
    let mut spec = ServiceSpec::new(name, image);
    spec.mode = ServiceMode::Replicated { replicas };
    spec.task.restart_policy.delay = GoDuration::from_millis(500);
    spec
}

// ---------------------------------------------------------------------------------------------
// The environment: networks, manager and agent containers, cleanup

struct Env {
    suffix: String,
    raft_net: String,
    api_net: String,
    /// Container names; index i is `manager{i+1}`.
    managers: Vec<String>,
    /// Raft ids, by manager index.
    raft_ids: Vec<u64>,
    /// Container names; index i is `agent{i+1}`.
    agents: Vec<String>,
    /// Node ids, by agent index.
    agent_ids: Vec<String>,
    /// Unique service names this test created (their task containers are removed at the end).
    services: Vec<String>,
    /// Named volumes (the managers' data dirs), by manager index.
    volumes: Vec<String>,
    /// Other containers the test started.
    others: Vec<String>,
    /// Set at the end of a passing test; otherwise `Drop` prints the nodes' logs.
    passed: bool,
    /// Holds the admin bundle copied out of manager1's data volume.
    bundle_dir: tempfile::TempDir,
    /// Join tokens (manager, worker), read once manager1 is up.
    tokens: Option<(String, String)>,
}

impl Env {
    /// Creates the networks, starts `managers` managers (the first initialises, the others join
    /// it one at a time and become voters) and `agents` agents, and waits until every agent's
    /// node is ready.
    async fn start(managers: usize, agents: usize) -> Result<Env> {
        docker(&["image", "inspect", "-f", "{{.Id}}", IMAGE])
            .with_context(|| format!("{IMAGE} is missing: run `bash deploy/image/build.sh debug`"))?;
        let suffix: String = rand::thread_rng()
            .sample_iter(&rand::distributions::Alphanumeric)
            .take(8)
            .map(|b| char::from(b).to_ascii_lowercase())
            .collect();
        let mut env = Env {
            raft_net: format!("shoal-faults-{suffix}-raft"),
            api_net: format!("shoal-faults-{suffix}-api"),
            suffix,
            managers: Vec::new(),
            raft_ids: Vec::new(),
            agents: Vec::new(),
            agent_ids: Vec::new(),
            services: Vec::new(),
            volumes: Vec::new(),
            others: Vec::new(),
            passed: false,
            bundle_dir: tempfile::tempdir()?,
            tokens: None,
        };
        docker(&["network", "create", "--label", "org.shoal.test=faults", &env.raft_net])?;
        docker(&["network", "create", "--label", "org.shoal.test=faults", &env.api_net])?;
        for i in 0..managers {
            env.add_manager(i).await?;
        }
        for i in 0..agents {
            env.add_agent(i, managers).await?;
        }
        Ok(env)
    }

    async fn add_manager(&mut self, i: usize) -> Result<()> {
        let name = format!("shoal-faults-{}-manager{}", self.suffix, i + 1);
        self.volumes.push(format!("{name}-data"));
        self.managers.push(name);
        self.create_manager_container(i)?;
        let n = i + 1;
        let alias = format!("manager{n}");
        let addr = self.api(i)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        let bundle = self.bundle_dir.path().join("admin");
        if i == 0 {
            // The first manager writes the admin bundle when it initialises; copy it out.
            while docker(&["cp", &format!("{}:/data/admin", self.managers[0]), bundle.to_str().unwrap()]).is_err()
                || !bundle.join("key.pem").exists()
            {
                if Instant::now() > deadline {
                    bail!("{alias} wrote no admin bundle within 20s");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        shoal_tests::register_admin_bundle(&addr, &bundle);
        loop {
            let ok = match info(&addr, false).await {
                Ok(info) => info.leader.is_some() && info.raft.voters.len() == n && info.raft.learners.is_empty(),
                Err(_) => false,
            };
            if ok {
                break;
            }
            if Instant::now() > deadline {
                bail!("{alias} did not become a voter within 20s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let me = info(&addr, true).await?.answered_by.ok_or_else(|| anyhow!("no answered_by"))?;
        self.raft_ids.push(me.raft_id);
        if i == 0 {
            let manager = shoal_tests::join_token(&addr, "manager").await?;
            let worker = shoal_tests::join_token(&addr, "worker").await?;
            self.tokens = Some((manager, worker));
        }
        Ok(())
    }

    /// Creates and starts manager `i`'s container: on `raft` with its alias, then on `api`; its
    /// data dir is a named volume, so a new container resumes where the last one stopped.
    fn create_manager_container(&self, i: usize) -> Result<()> {
        let n = i + 1;
        let name = &self.managers[i];
        let alias = format!("manager{n}");
        let advertise = format!("manager{n}:{PORT}");
        let listen = format!("0.0.0.0:{PORT}");
        let volume = format!("{}:/data", self.volumes[i]);
        #[rustfmt::skip]
        let mut args = vec![
            "create", "--name", name, "--label", "org.shoal.test=faults",
            "--network", &self.raft_net, "--network-alias", &alias, "-v", &volume, "-e", "RUST_LOG=info",
            IMAGE, "shoal-manager", "--data-dir", "/data", "--listen-addr", &listen, "--advertise-addr", &advertise,
            "--hostname", &alias,
        ];
        let join = format!("manager1:{PORT}");
        let token = self.tokens.as_ref().map(|(manager, _)| manager.clone()).unwrap_or_default();
        if i > 0 {
            // Ignored when the data dir already holds a manager (a restart).
            args.extend(["--join", join.as_str(), "--token", token.as_str()]);
        }
        docker(&args)?;
        docker(&["network", "connect", &self.api_net, name])?;
        docker(&["start", name])?;
        Ok(())
    }

    /// Starts manager `i` again on its data dir after `docker kill`. The container is recreated
    /// rather than `docker start`ed: with Docker 20.10 on this machine, a restarted container that
    /// is attached to two networks sometimes gets an embedded DNS that answers NXDOMAIN for every
    /// name (for good), so the manager could never reach its peers. Seen with
    /// `docker exec <c> shoal --host manager2:4242 …` → "dns error"; never with a new container.
    fn restart_manager(&self, i: usize) -> Result<()> {
        docker(&["rm", "-f", &self.managers[i]])?;
        self.create_manager_container(i)
    }

    async fn add_agent(&mut self, i: usize, managers: usize) -> Result<()> {
        let n = i + 1;
        let name = format!("shoal-faults-{}-agent{n}", self.suffix);
        let hostname = format!("agent{n}");
        let join = format!("manager{}:{PORT}", i % managers + 1);
        let token = self.tokens.as_ref().map(|(_, worker)| worker.clone()).ok_or_else(|| anyhow!("no worker token"))?;
        #[rustfmt::skip]
        let args = [
            "run", "-d", "--name", &name, "--label", "org.shoal.test=faults",
            "--network", &self.raft_net, "-v", "/var/run/docker.sock:/var/run/docker.sock", "-e", "RUST_LOG=info",
            IMAGE, "shoal-agent", "--data-dir", "/data", "--join", &join, "--hostname", &hostname,
            "--token", &token,
        ];
        docker(&args)?;
        self.agents.push(name);
        let addr = self.api(0)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let nodes = list_nodes(&addr).await.unwrap_or_default();
            if let Some(node) =
                nodes.iter().find(|n| n.description.hostname == hostname && n.status.state == NodeState::Ready)
            {
                self.agent_ids.push(node.id.clone());
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{hostname} did not register within 20s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A service name unique to this run (task containers are named and labelled with it).
    fn service(&mut self, base: &str) -> String {
        let name = format!("{base}-{}", self.suffix);
        self.services.push(name.clone());
        name
    }

    /// `ip:4242` of manager `i` on the api network (asked each time: a restarted container may get
    /// another address).
    fn api(&self, i: usize) -> Result<String> {
        let format = format!("{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}", self.api_net);
        let ip = docker(&["inspect", "-f", &format, &self.managers[i]])?;
        ensure!(!ip.is_empty(), "{} has no address on {}", self.managers[i], self.api_net);
        Ok(format!("{ip}:{PORT}"))
    }

    fn apis(&self) -> Result<Vec<String>> {
        (0..self.managers.len()).map(|i| self.api(i)).collect()
    }

    fn index_of_raft_id(&self, raft_id: u64) -> Option<usize> {
        self.raft_ids.iter().position(|r| *r == raft_id)
    }

    /// Waits until every manager in `among` reports (in its own view) the same leader, itself one
    /// of `among`; returns its index.
    async fn leader_among(&self, among: &[usize], timeout: Duration) -> Result<usize> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            let mut leaders = BTreeSet::new();
            for &i in among {
                match async { info(&self.api(i)?, true).await }.await {
                    Ok(info) => {
                        leaders.insert(info.leader.map(|l| l.raft_id));
                    }
                    Err(e) => {
                        leaders.insert(None);
                        last = format!("{e:#}");
                    }
                }
            }
            if leaders.len() == 1
                && let Some(Some(raft_id)) = leaders.first()
                && let Some(i) = self.index_of_raft_id(*raft_id)
                && among.contains(&i)
            {
                return Ok(i);
            }
            if Instant::now() > deadline {
                bail!("managers {among:?} agreed on no leader among themselves within {timeout:?}: {leaders:?} {last}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn leader(&self) -> Result<usize> {
        let all: Vec<usize> = (0..self.managers.len()).collect();
        self.leader_among(&all, Duration::from_secs(15)).await
    }

    /// Manager `i`'s IP address on the raft network.
    fn raft_ip(&self, i: usize) -> Result<String> {
        let format = format!("{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}", self.raft_net);
        docker(&["inspect", "-f", &format, &self.managers[i]])
    }

    /// Cuts manager `i` off from the other nodes.
    fn partition(&self, i: usize) -> Result<()> {
        docker(&["network", "disconnect", &self.raft_net, &self.managers[i]]).map(drop)
    }

    fn heal(&self, i: usize) -> Result<()> {
        let alias = format!("manager{}", i + 1);
        docker(&["network", "connect", "--alias", &alias, &self.raft_net, &self.managers[i]]).map(drop)
    }

    /// Waits until all managers report the same leader (not `not_leader`), applied index, term and
    /// number of services and tasks in their own views; returns those views.
    async fn converged(&self, not_leader: Option<usize>, timeout: Duration) -> Result<Vec<ClusterInfo>> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut views = Vec::new();
            for i in 0..self.managers.len() {
                if let Ok(info) = async { info(&self.api(i)?, true).await }.await {
                    views.push(info);
                }
            }
            let key = |i: &ClusterInfo| {
                (i.leader.as_ref().map(|l| l.raft_id), i.raft.applied, i.raft.term, i.services, i.tasks)
            };
            let keys: BTreeSet<_> = views.iter().map(key).collect();
            let leader_ok = views
                .first()
                .and_then(|v| v.leader.as_ref())
                .and_then(|l| self.index_of_raft_id(l.raft_id))
                .is_some_and(|l| Some(l) != not_leader);
            if views.len() == self.managers.len() && keys.len() == 1 && leader_ok {
                return Ok(views);
            }
            if Instant::now() > deadline {
                bail!(
                    "managers did not converge within {timeout:?}: (leader, applied, term, services, tasks) = {keys:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for name in self.managers.iter().chain(&self.agents) {
            let logs = Command::new("docker").args(["logs", "--tail", "150", name]).output();
            let text =
                logs.map(|o| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)));
            out.push_str(&format!("==== {name}\n{}\n", strip_ansi(&text.unwrap_or_default())));
        }
        out
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if !self.passed {
            eprintln!("{}", self.logs());
        }
        // Nodes first (no agent may start a container after its tasks' containers are gone), then
        // every task container of this run, then the networks.
        let nodes: Vec<&str> =
            self.managers.iter().chain(&self.agents).chain(&self.others).map(String::as_str).collect();
        if !nodes.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(nodes);
            let _ = docker(&args);
        }
        let filters = self
            .agent_ids
            .iter()
            .map(|id| format!("label=org.shoal.node.id={id}"))
            .chain(self.services.iter().map(|s| format!("label=org.shoal.service.name={s}")));
        for filter in filters {
            let ids = container_ids(&filter, true);
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f", "-v"];
                args.extend(ids.iter().map(String::as_str));
                let _ = docker(&args);
            }
        }
        if !self.volumes.is_empty() {
            let mut args = vec!["volume", "rm", "-f"];
            args.extend(self.volumes.iter().map(String::as_str));
            let _ = docker(&args);
        }
        let _ = docker(&["network", "rm", &self.raft_net, &self.api_net]);
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Partitioned leader

/// The leader is cut off from the other managers: the majority elects a new leader, the old one
/// stops accepting writes, no acknowledged write is lost, and after healing every manager holds
/// the same state and the old leader follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_is_replaced_and_rejoins_as_a_follower() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let mut env = Env::start(3, 0).await?;
    let mut acked = BTreeSet::new();
    // Replicas 0: these services make no tasks, so the managers go quiet and their views can be
    // compared exactly.
    for i in 0..3 {
        let name = env.service(&format!("before{i}"));
        create(&env.api(i)?, &replicated(&name, "shoal/busybox:1", 0)).await?;
        acked.insert(name);
    }
    let old = env.leader().await?;
    let old_term = info(&env.api(old)?, true).await?.raft.term;
    let majority: Vec<usize> = (0..3).filter(|i| *i != old).collect();

    env.partition(old)?;
    let cut = Instant::now();
    let new = env.leader_among(&majority, Duration::from_secs(15)).await?;
    let elected_after = cut.elapsed();
    eprintln!("manager{} partitioned; manager{} leads after {elected_after:?}", old + 1, new + 1);
    let new_term = info(&env.api(new)?, true).await?.raft.term;
    assert!(new_term > old_term, "a new term: {old_term} -> {new_term}");

    // The majority accepts writes, through the new leader and through its follower.
    for &i in &majority {
        let name = env.service(&format!("during{i}"));
        create(&env.api(i)?, &replicated(&name, "shoal/busybox:1", 0)).await?;
        acked.insert(name);
    }

    // The old leader, still reachable by the test on the api network, acknowledges no write.
    let lost = env.service("lost");
    let old_api = env.api(old)?;
    let asked = Instant::now();
    let refused = create(&old_api, &replicated(&lost, "shoal/busybox:1", 0)).await;
    eprintln!("write to the partitioned old leader: {refused:?} after {:?}", asked.elapsed());
    assert!(refused.is_err(), "the partitioned old leader acknowledged a write");
    // In its own view it is no longer the leader (check_quorum made it step down).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let view = info(&old_api, true).await?;
        if view.leader.as_ref().is_none_or(|l| l.raft_id != env.raft_ids[old]) {
            break;
        }
        assert!(Instant::now() < deadline, "the partitioned manager still calls itself leader: {view:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    env.heal(old)?;
    let healed = Instant::now();
    let views = env.converged(Some(old), Duration::from_secs(20)).await?;
    eprintln!("converged {:?} after healing: {:?}", healed.elapsed(), views[0].raft);
    let leader = views[0].leader.as_ref().map(|l| l.raft_id);
    assert_ne!(leader, Some(env.raft_ids[old]), "the old leader follows");
    assert!(
        views.iter().all(|v| v.services == acked.len()),
        "every manager holds exactly the acknowledged services: {views:?}"
    );
    // The same names, through each manager (answered by the leader), the unacknowledged one absent:
    // it was only ever in the log of a leader without a majority.
    for i in 0..3 {
        assert_eq!(service_names(&env.api(i)?).await?, acked, "services through manager{}", i + 1);
    }
    // The old leader accepts writes again (forwarding them to the leader), and they replicate.
    let after = env.service("after");
    create(&old_api, &replicated(&after, "shoal/busybox:1", 0)).await?;
    acked.insert(after);
    let views = env.converged(Some(old), Duration::from_secs(10)).await?;
    assert!(views.iter().all(|v| v.services == acked.len()), "{views:?}");
    env.passed = true;
    Ok(())
}

/// A call sent through a follower just after the leader was cut off must still be answered once
/// the majority has a new leader (the follower waits for a leader for up to 5 s, as documented).
///
/// Regression test (fixed by HTTP/2 keepalives on every long-lived connection): before the fix, the follower forwards the call over the
/// connection it keeps to the old leader; that connection goes dead without an error (packets are
/// dropped, nothing refuses), the forward has no deadline and is not re-routed when the new leader
/// appears ~1-2 s later, so the call hangs until the caller's own deadline (the CLI's 30 s: "the
/// manager at …:4242 did not answer within 30s"). The next call through the same follower is
/// answered at once by the new leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_through_a_follower_is_answered_when_the_leader_is_partitioned() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let mut env = Env::start(3, 0).await?;
    let old = env.leader().await?;
    let follower = (old + 1) % 3;
    let follower_api = env.api(follower)?;
    // The follower forwards a call to the leader, as it does for every call it gets.
    let warm = env.service("warm");
    create(&follower_api, &replicated(&warm, "shoal/busybox:1", 0)).await?;

    env.partition(old)?;
    let name = env.service("through-follower");
    let spec = replicated(&name, "shoal/busybox:1", 0);
    let sent = Instant::now();
    let answer =
        tokio::time::timeout(Duration::from_secs(15), create_with(&follower_api, &spec, Duration::from_secs(60))).await;
    eprintln!("create through manager{} after the partition: {answer:?} after {:?}", follower + 1, sent.elapsed());
    let majority: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    let new = env.leader_among(&majority, Duration::from_secs(15)).await?;
    let answer = answer.map_err(|_| {
        anyhow!(
            "a create sent through manager{} (a follower of the majority) right after the leader manager{} was \
             partitioned got no answer within 15s, although manager{} was elected meanwhile",
            follower + 1,
            old + 1,
            new + 1
        )
    })?;
    // Answered: acknowledged, or refused with a retryable error, after which a retry works.
    if answer.is_err() {
        create(&follower_api, &spec).await?;
    }
    for &i in &majority {
        let names = service_names(&env.api(i)?).await?;
        assert!(names.contains(&name) && names.contains(&warm), "services through manager{}: {names:?}", i + 1);
    }
    env.passed = true;
    Ok(())
}

/// A manager cut off from the others comes back with another address (here because another
/// container took its old one meanwhile, as happens on any network with churn): it must catch up.
///
/// Regression test (fixed by HTTP/2 keepalives on every long-lived connection): before the fix, it never does (not within 20 s here,
/// nor within 67 s by hand). Its raft streams to the other managers were opened from its old
/// address and are never found dead (no HTTP/2 keepalive, no timeout on the long-lived
/// `RaftTransport.Send` stream): `ss` in its network namespace shows them ESTABLISHED from the old
/// address with a growing send queue. So the leader never hears its append responses: the
/// manager knows the leader (heartbeats arrive on the leader's fresh stream) but applies nothing.
/// With the same address back, the same dead streams recover only after TCP's retransmission
/// backoff (measured 5.6-6.3 s after a 6 s partition in the concurrent-clients test, ~1 s after
/// a short one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_back_from_a_partition_with_another_address_catches_up() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let mut env = Env::start(3, 0).await?;
    let leader = env.leader().await?;
    let cut = (leader + 1) % 3;
    let before = env.raft_ip(cut)?;
    env.partition(cut)?;
    // Another container takes the address it released (Docker hands out the lowest free one).
    let squatter = format!("shoal-faults-{}-squatter", env.suffix);
    docker(&[
        "run",
        "-d",
        "--name",
        &squatter,
        "--label",
        "org.shoal.test=faults",
        "--network",
        &env.raft_net,
        "shoal/busybox:1",
        "sleep",
        "600",
    ])?;
    env.others.push(squatter.clone());
    let format = format!("{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}", env.raft_net);
    let taken = docker(&["inspect", "-f", &format, &squatter])?;
    ensure!(taken == before, "precondition: the placeholder got {taken}, not the released {before}");
    let leader_api = env.api(leader)?;
    for i in 0..3 {
        let name = env.service(&format!("meanwhile{i}"));
        create(&leader_api, &replicated(&name, "shoal/busybox:1", 0)).await?;
    }
    // Let the cut-off manager notice it is alone (its streams have unanswered data).
    tokio::time::sleep(Duration::from_secs(2)).await;
    env.heal(cut)?;
    let after = env.raft_ip(cut)?;
    assert_ne!(after, before, "it came back with another address");
    let healed = Instant::now();
    let result = env.converged(None, Duration::from_secs(20)).await;
    eprintln!(
        "manager{} back as {after} (was {before}): {:?} after {:?}",
        cut + 1,
        result.as_ref().map(|v| v.len()),
        healed.elapsed()
    );
    let views = result?;
    assert!(views.iter().all(|v| v.services == 3), "{views:?}");
    env.passed = true;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 2. Paused agent

/// `docker pause` of an agent (its task containers keep running: they are not in its cgroup):
/// its node goes DOWN and its tasks run elsewhere; after `docker unpause` the node is READY again,
/// the tasks it still ran are shut down, and exactly one container per slot runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_agents_tasks_move_and_none_run_twice_after_unpause() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let mut env = Env::start(1, 3).await?;
    let addr = env.api(0)?;
    let svc = env.service("paused");
    create(&addr, &replicated(&svc, "shoal/busybox:1", 6)).await?;
    wait_tasks(&addr, &svc, Duration::from_secs(30), "6 running", |t| running(t).len() == 6).await?;
    let victim = env.agent_ids[0].clone();
    let before = task_containers(&svc);
    let on_victim: Vec<&TaskContainer> = before.iter().filter(|c| c.node == victim).collect();
    assert!(!on_victim.is_empty(), "agent1 runs some tasks:\n{}", describe(&before));

    docker(&["pause", &env.agents[0]])?;
    let paused = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let nodes = list_nodes(&addr).await?;
        if nodes.iter().any(|n| n.id == victim && n.status.state == NodeState::Down) {
            break;
        }
        assert!(Instant::now() < deadline, "agent1 not DOWN 15s after docker pause");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("agent1 DOWN {:?} after pause", paused.elapsed());
    wait_tasks(&addr, &svc, Duration::from_secs(20), "6 running elsewhere", |t| {
        running(t).iter().filter(|t| t.node_id != victim).count() == 6
    })
    .await?;
    eprintln!("its tasks run elsewhere {:?} after pause", paused.elapsed());

    docker(&["unpause", &env.agents[0]])?;
    // The agent returns: the tasks it still runs are shut down, so each slot runs once.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = task_containers(&svc);
        if one_container_per_slot(&now, 6) && now.iter().all(|c| c.node != victim) {
            break;
        }
        assert!(Instant::now() < deadline, "30s after unpause, the service's running containers:\n{}", describe(&now));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let nodes = list_nodes(&addr).await?;
        if nodes.iter().any(|n| n.id == victim && n.status.state == NodeState::Ready) {
            break;
        }
        assert!(Instant::now() < deadline, "agent1 not READY again 15s after unpause: {nodes:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And it stays that way: no slot is started twice later.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let now = task_containers(&svc);
    assert!(one_container_per_slot(&now, 6), "running containers:\n{}", describe(&now));
    let tasks = list_tasks(&addr, &svc).await?;
    let mut slots: Vec<u64> = running(&tasks).iter().map(|t| t.slot).collect();
    slots.sort();
    assert_eq!(slots, vec![1, 2, 3, 4, 5, 6], "one running task per slot");
    let ids: BTreeSet<&str> = running(&tasks).iter().map(|t| t.status.container_id.as_str()).collect();
    let docker_ids: BTreeSet<&str> = now.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, docker_ids, "the running tasks are exactly the running containers");
    env.passed = true;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 3. Leader killed during a rolling update

/// Counts, from the task events a manager streams, how many slots are between "old task told to
/// stop" and "new task running" at each moment; returns the maximum, once `stop` is set.
fn watch_transitions(
    addr: String,
    service_id: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Result<usize>> {
    tokio::spawn(async move {
        let mut stream = client(&addr, Duration::from_secs(3600))
            .await?
            .watch(WatchRequest { types: vec!["task".into()], service: service_id, ..Default::default() })
            .await?
            .into_inner();
        let mut tasks: BTreeMap<String, Task> = BTreeMap::new();
        let mut max = 0;
        while !stop.load(Ordering::SeqCst) {
            let event = match tokio::time::timeout(Duration::from_millis(200), stream.message()).await {
                Err(_) => continue,
                Ok(Ok(Some(event))) => event,
                Ok(Ok(None)) => bail!("the watch stream ended"),
                Ok(Err(e)) => bail!("the watch stream failed: {e}"),
            };
            let v: serde_json::Value = serde_json::from_str(&event.event_json)?;
            let task: Task = serde_json::from_value(v["object"].clone())?;
            if v["action"] == "remove" {
                tasks.remove(&task.id);
            } else {
                tasks.insert(task.id.clone(), task);
            }
            max = max.max(slots_in_transition(tasks.values()));
        }
        Ok(max)
    })
}

/// `docker kill` of the leader's container while a rolling update (6 replicas, parallelism 2,
/// delay 1 s) runs: the update completes, never more than 2 slots in transition (counted from the
/// task events a surviving manager streams), each slot replaced exactly once, and 6 new containers
/// run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_container_mid_update_completes_it_once() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let mut env = Env::start(3, 3).await?;
    let leader = env.leader().await?;
    let survivor = (leader + 1) % 3;
    let addr = env.api(survivor)?;
    let svc = env.service("rolling");
    let created = create(&addr, &replicated(&svc, "shoal/busybox:1", 6)).await?;
    wait_tasks(&addr, &svc, Duration::from_secs(30), "6 running", |t| running(t).len() == 6).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_transitions(addr.clone(), created.id.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let current = get_service(&addr, &svc, Duration::from_secs(15)).await?;
    let mut spec = current.spec.clone();
    spec.task.container.image = "shoal/busybox:2".into();
    spec.update_config.parallelism = 2;
    spec.update_config.delay = GoDuration::from_secs(1);
    spec.update_config.monitor = GoDuration::from_secs(1);
    update_spec(&addr, &svc, current.version, &spec, Duration::from_secs(15)).await?;
    // Once the first batch runs, kill the leader's container (SIGKILL).
    wait_tasks(&addr, &svc, Duration::from_secs(20), "first slots updated", |t| {
        running(t).iter().filter(|t| t.spec.container.image == "shoal/busybox:2").count() >= 2
    })
    .await?;
    docker(&["kill", &env.managers[leader]])?;
    let killed = Instant::now();
    let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let new = env.leader_among(&survivors, Duration::from_secs(15)).await?;
    eprintln!("manager{} killed; manager{} leads after {:?}", leader + 1, new + 1, killed.elapsed());

    let deadline = Instant::now() + Duration::from_secs(45);
    let done = loop {
        let s = get_service(&addr, &svc, Duration::from_secs(15)).await?;
        if s.update_status.as_ref().is_some_and(|u| u.state == UpdateState::Completed) {
            break s;
        }
        if Instant::now() > deadline {
            let tasks = list_tasks(&addr, &svc).await.unwrap_or_default();
            let lines: Vec<String> = tasks
                .iter()
                .map(|t| {
                    format!(
                        "{} {} v{} {:?} {}/{} {}",
                        t.id,
                        t.name(),
                        t.spec_version,
                        t.origin,
                        t.status.state,
                        t.desired_state,
                        t.status.err
                    )
                })
                .collect();
            bail!("update not completed 45s after the kill: {:?}\n{}", s.update_status, lines.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("update completed {:?} after the kill", killed.elapsed());
    // Let the watcher see the last events, then stop it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let max = watcher.await??;
    assert!((1..=2).contains(&max), "slots in transition at once: {max} (parallelism 2)");

    assert_eq!(done.spec.task.container.image, "shoal/busybox:2");
    let tasks = list_tasks(&addr, &svc).await?;
    let mut images: Vec<&str> = running(&tasks).iter().map(|t| t.spec.container.image.as_str()).collect();
    images.sort();
    assert_eq!(images, vec!["shoal/busybox:2"; 6]);
    let mut updated: Vec<u64> = tasks
        .iter()
        .filter(|t| t.origin == TaskOrigin::Update && t.spec_version == done.spec_version)
        .map(|t| t.slot)
        .collect();
    updated.sort();
    assert_eq!(updated, vec![1, 2, 3, 4, 5, 6], "each slot replaced exactly once");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = task_containers(&svc);
        if one_container_per_slot(&now, 6) && now.iter().all(|c| c.image == "shoal/busybox:2") {
            break;
        }
        assert!(Instant::now() < deadline, "running containers:\n{}", describe(&now));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    env.passed = true;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 4. Task containers killed behind an agent's back

/// Waits until the service runs `n` tasks, none of them one of `killed`, each killed task ended
/// FAILED, and exactly one container per slot runs on the engine.
async fn wait_reconciled(addr: &str, svc: &str, n: u64, killed: &BTreeSet<String>) -> Result<()> {
    wait_tasks(addr, svc, Duration::from_secs(30), "killed tasks replaced", |t| {
        running(t).len() == n as usize
            && running(t).iter().all(|t| !killed.contains(&t.id))
            && killed.iter().all(|k| t.iter().any(|t| &t.id == k && t.status.state == TaskState::Failed))
    })
    .await?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = task_containers(svc);
        if one_container_per_slot(&now, n) && now.iter().all(|c| !killed.contains(&c.task)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("running containers:\n{}", describe(&now));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every task container of one agent's node is killed: (a) while the agent runs, (b) while the
/// agent's own container is killed too and then started again. Each time the killed tasks end
/// FAILED, replacements run, and exactly one container per slot runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_containers_killed_behind_an_agents_back_are_replaced() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let mut env = Env::start(1, 2).await?;
    let addr = env.api(0)?;
    let svc = env.service("killed");
    create(&addr, &replicated(&svc, "shoal/busybox:1", 6)).await?;
    wait_tasks(&addr, &svc, Duration::from_secs(30), "6 running", |t| running(t).len() == 6).await?;
    let node = env.agent_ids[0].clone();

    // a) The agent runs: every task container of its node is killed.
    let victims: Vec<TaskContainer> = task_containers(&svc).into_iter().filter(|c| c.node == node).collect();
    assert_eq!(victims.len(), 3, "agent1 runs half of the replicas");
    let mut args = vec!["kill"];
    args.extend(victims.iter().map(|c| c.id.as_str()));
    docker(&args)?;
    let killed: BTreeSet<String> = victims.iter().map(|c| c.task.clone()).collect();
    wait_reconciled(&addr, &svc, 6, &killed).await?;
    let tasks = list_tasks(&addr, &svc).await?;
    for t in tasks.iter().filter(|t| killed.contains(&t.id)) {
        assert_eq!(t.status.err, "task: non-zero exit (137)", "task {}", t.id);
    }

    // b) The agent's own container is killed too, its task containers are killed while it is
    //    gone, and it comes back (same data dir, same node id) within the heartbeat grace.
    let victims: Vec<TaskContainer> = task_containers(&svc).into_iter().filter(|c| c.node == node).collect();
    assert!(!victims.is_empty(), "agent1 runs tasks again");
    docker(&["kill", &env.agents[0]])?;
    let mut args = vec!["kill"];
    args.extend(victims.iter().map(|c| c.id.as_str()));
    docker(&args)?;
    docker(&["start", &env.agents[0]])?;
    let mut killed2: BTreeSet<String> = victims.iter().map(|c| c.task.clone()).collect();
    wait_reconciled(&addr, &svc, 6, &killed2).await?;
    killed2.extend(killed);
    let tasks = list_tasks(&addr, &svc).await?;
    assert!(
        tasks.iter().filter(|t| killed2.contains(&t.id)).all(|t| t.status.state == TaskState::Failed),
        "every killed task ended FAILED"
    );
    env.passed = true;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 5. Concurrent clients under faults

/// What one client saw of its own service.
#[derive(Debug, Default)]
struct History {
    /// The last value an acknowledged update wrote.
    acked: u64,
    /// Values of updates that failed after the last acknowledged one (they may or may not have
    /// been applied).
    unacked_since: Vec<u64>,
    /// Every value ever sent.
    sent: BTreeSet<u64>,
    /// The highest service version seen in any successful read or write.
    version: u64,
    acks: usize,
    failures: usize,
    reads: usize,
    /// Why updates failed (gRPC code and message, the manager's index in the list), in order.
    errors: Vec<String>,
    violations: Vec<String>,
}

const COUNTER: &str = "counter";

fn counter(s: &Service) -> u64 {
    s.spec.labels.get(COUNTER).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// One client: reads its service through one manager and updates its label with the next value
/// through another, with the version read; checks every answer against what it already knows.
async fn run_client(
    id: usize,
    svc: String,
    apis: Arc<std::sync::RwLock<Vec<String>>>,
    stop: Arc<AtomicBool>,
) -> History {
    let mut h = History::default();
    let timeout = Duration::from_secs(8);
    let mut k = id;
    while !stop.load(Ordering::SeqCst) {
        k += 1;
        let (read_at, write_at) = {
            let apis = apis.read().expect("lock");
            (apis[k % apis.len()].clone(), apis[(k + 1) % apis.len()].clone())
        };
        let current = match get_service(&read_at, &svc, timeout).await {
            Ok(s) => s,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        h.reads += 1;
        let value = counter(&current);
        if current.version < h.version {
            h.violations.push(format!("read version {} after seeing {} (via {read_at})", current.version, h.version));
        }
        if value < h.acked {
            h.violations.push(format!("read value {value} after {} was acknowledged (via {read_at})", h.acked));
        }
        if value != 0 && !h.sent.contains(&value) {
            h.violations.push(format!("read value {value}, which was never sent"));
        }
        h.version = h.version.max(current.version);

        let next = h.sent.last().copied().unwrap_or(0) + 1;
        h.sent.insert(next);
        let mut spec = current.spec.clone();
        spec.labels.insert(COUNTER.into(), next.to_string());
        match update_spec(&write_at, &svc, current.version, &spec, timeout).await {
            Ok(updated) => {
                if updated.version <= h.version {
                    h.violations.push(format!(
                        "update acknowledged with version {} after seeing {}",
                        updated.version, h.version
                    ));
                }
                if counter(&updated) != next {
                    h.violations.push(format!("update to {next} acknowledged with value {}", counter(&updated)));
                }
                h.version = h.version.max(updated.version);
                h.acked = next;
                h.unacked_since.clear();
                h.acks += 1;
            }
            Err(e) => {
                let why = match e.downcast_ref::<tonic::Status>() {
                    Some(status) => format!("{:?}: {}", status.code(), status.message()),
                    None => format!("{e:#}"),
                };
                h.errors.push(format!("{next} via {write_at}: {why}"));
                h.unacked_since.push(next);
                h.failures += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    h
}

/// Four clients, each owning a service, read it through one manager and update a label with the
/// next value and the version read through another, while the leader's container is killed (and
/// later recreated on its data) and then the next leader is partitioned and healed. Checked on
/// every answer: versions never go back and an acknowledged update gets a higher version; a read
/// never shows less than the client's last acknowledged value, nor a value never sent. Checked at
/// the end, through every manager: the value is the last acknowledged one, or a later one whose
/// update failed on the client's side but was applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_survive_leader_kill_and_partition() -> Result<()> {
    let _serial = SERIAL.lock().await;
    let mut env = Env::start(3, 0).await?;
    const CLIENTS: usize = 4;
    let mut names = Vec::new();
    for c in 0..CLIENTS {
        let name = env.service(&format!("lin{c}"));
        create(&env.api(c % 3)?, &replicated(&name, "shoal/busybox:1", 0)).await?;
        names.push(name);
    }
    let apis = Arc::new(std::sync::RwLock::new(env.apis()?));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(c, name)| tokio::spawn(run_client(c, name.clone(), apis.clone(), stop.clone())))
        .collect();

    // Faults, with the clients running throughout.
    let faults = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        // a) kill -9 the leader's container; bring it back later.
        let leader = env.leader().await?;
        docker(&["kill", &env.managers[leader]])?;
        let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
        let t = Instant::now();
        let new = env.leader_among(&others, Duration::from_secs(15)).await?;
        eprintln!("killed manager{}; manager{} leads after {:?}", leader + 1, new + 1, t.elapsed());
        tokio::time::sleep(Duration::from_secs(2)).await;
        env.restart_manager(leader)?;
        *apis.write().expect("lock") = env.apis()?;
        // It resumes from its data dir and catches up with what was committed meanwhile.
        let commit = info(&env.api(new)?, true).await?.raft.commit;
        let back = env.api(leader)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !info(&back, true).await.is_ok_and(|i| i.raft.applied >= commit) {
            ensure!(
                Instant::now() < deadline,
                "restarted manager{} did not apply up to {commit} within 20s",
                leader + 1
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;

        // b) partition the (new) leader from the other managers; heal.
        let leader = env.leader().await?;
        env.partition(leader)?;
        let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
        let t = Instant::now();
        let new = env.leader_among(&others, Duration::from_secs(15)).await?;
        eprintln!("partitioned manager{}; manager{} leads after {:?}", leader + 1, new + 1, t.elapsed());
        // Longer than a manager waits for a leader (5 s): calls to the cut-off manager fail.
        tokio::time::sleep(Duration::from_secs(6)).await;
        env.heal(leader)?;
        let t = Instant::now();
        let healed = env.api(leader)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !info(&healed, true).await.is_ok_and(|i| i.leader.is_some_and(|l| l.raft_id != env.raft_ids[leader])) {
            ensure!(Instant::now() < deadline, "healed manager{} follows no leader after 20s", leader + 1);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("healed manager{} follows a leader after {:?}", leader + 1, t.elapsed());
        tokio::time::sleep(Duration::from_secs(3)).await;
        Ok::<_, anyhow::Error>(())
    };
    let fault_result = faults.await;
    stop.store(true, Ordering::SeqCst);
    let mut histories = Vec::new();
    for c in clients {
        histories.push(c.await?);
    }
    fault_result?;

    // Every manager holds the same state, and each service shows the last acknowledged update
    // (or a later one that failed on the client's side but was applied).
    env.converged(None, Duration::from_secs(20)).await?;
    let mut problems = Vec::new();
    for (c, (name, h)) in names.iter().zip(&histories).enumerate() {
        eprintln!(
            "client {c}: {} reads, {} acknowledged updates, {} failed; last acknowledged {}, failed since {:?}",
            h.reads, h.acks, h.failures, h.acked, h.unacked_since
        );
        for e in &h.errors {
            eprintln!("  failed update {e}");
        }
        problems.extend(h.violations.iter().map(|v| format!("client {c}: {v}")));
        for i in 0..3 {
            let s = get_service(&env.api(i)?, name, Duration::from_secs(15)).await?;
            let value = counter(&s);
            if !(value == h.acked || (value > h.acked && h.unacked_since.contains(&value))) {
                problems.push(format!(
                    "client {c}: final value {value} via manager{} (last acknowledged {}, failed since {:?})",
                    i + 1,
                    h.acked,
                    h.unacked_since
                ));
            }
            if s.version < h.version {
                problems.push(format!("client {c}: final version {} below {} seen", s.version, h.version));
            }
        }
        assert!(h.acks >= 5, "client {c} got only {} updates acknowledged", h.acks);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    env.passed = true;
    Ok(())
}
