//! Helpers for cluster-level tests: start real `shoal-manager` processes on loopback ports, kill
//! and restart them, and talk to them through the real gRPC API or the real `shoal` CLI.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use shoal_proto::v1::control_client::ControlClient;
use shoal_proto::v1::*;
use shoal_types::{ClusterInfo, Node, Service, ServiceSpec};
use tonic::transport::Channel;

/// Path of a workspace binary: next to the running executable (shoal-bench) or next to the test
/// executable's `deps/` directory (tests).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    let dir = exe.parent().expect("executable directory");
    let candidates = [dir.join(name), dir.parent().map(|p| p.join(name)).unwrap_or_default()];
    candidates.iter().find(|p| p.exists()).cloned().unwrap_or_else(|| {
        panic!("{name} is missing next to {}: run `cargo build --workspace --bins` first", exe.display())
    })
}

/// A free loopback port (bound then released; tests use distinct 127.0.0.x addresses to avoid
/// clashing with each other).
pub fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").to_string()
}

/// Which admin bundle talks to which manager address: every cluster a test starts registers its
/// managers here, so [`connect`] and [`shoal`] find the right certificate by address alone.
static ADMIN_BUNDLES: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());

/// Records that the manager at `addr` belongs to the cluster whose admin bundle is `dir`.
pub fn register_admin_bundle(addr: &str, dir: &std::path::Path) {
    let mut bundles = ADMIN_BUNDLES.lock().expect("registry lock");
    bundles.retain(|(a, _)| a != addr);
    bundles.push((addr.to_string(), dir.to_path_buf()));
}

/// The admin bundle for `addr`; for an address no cluster registered (a dead one, in tests of
/// unreachable managers), the most recently registered bundle.
pub fn admin_bundle(addr: &str) -> Option<PathBuf> {
    let bundles = ADMIN_BUNDLES.lock().expect("registry lock");
    bundles.iter().find(|(a, _)| a == addr).or(bundles.last()).map(|(_, d)| d.clone())
}

/// The credentials in a bundle directory (`ca.pem`, `cert.pem`, `key.pem`).
pub fn load_bundle(dir: &std::path::Path) -> Result<shoal_tls::Credentials> {
    shoal_tls::Credentials::load(dir)?.ok_or_else(|| anyhow!("no bundle in {}", dir.display()))
}

/// A channel to `addr` over mutual TLS presenting `credentials`; each call must be answered
/// within `timeout`.
pub async fn tls_channel(addr: &str, credentials: &shoal_tls::Credentials, timeout: Duration) -> Result<Channel> {
    let tls = shoal_tls::NodeTls::new(credentials)?.client_config()?;
    let endpoint = tonic::transport::Endpoint::from_shared(shoal_tls::client::uri(addr))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(timeout);
    shoal_tls::client::connect(endpoint, tls).await.with_context(|| format!("connecting to {addr}"))
}

/// A control client over mutual TLS with the certificate in `dir`.
pub async fn connect_with(addr: &str, dir: &std::path::Path) -> Result<ControlClient<Channel>> {
    Ok(ControlClient::new(tls_channel(addr, &load_bundle(dir)?, Duration::from_secs(15)).await?)
        .max_decoding_message_size(shoal_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(shoal_proto::MAX_MESSAGE_BYTES))
}

/// The current join token for "worker" or "manager".
pub async fn join_token(addr: &str, role: &str) -> Result<String> {
    let response = connect(addr).await?.join_token(JoinTokenRequest { role: role.into(), rotate: false }).await?;
    Ok(response.into_inner().token)
}

/// One `shoal-manager` process and its data directory.
pub struct ManagerProc {
    pub name: String,
    pub addr: String,
    pub data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    extra_args: Vec<String>,
    /// HOME of the process: the test's directory, so the admin bundle copy to `~/.shoal/tls`
    /// lands there and not in the real home.
    home: PathBuf,
    extra_env: Vec<(String, String)>,
}

impl ManagerProc {
    fn spawn(&mut self, join: Option<(&str, &str)>) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut cmd = Command::new(bin("shoal-manager"));
        cmd.arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen-addr")
            .arg(&self.addr)
            .arg("--hostname")
            .arg(&self.name);
        if let Some((join, token)) = join {
            cmd.arg("--join").arg(join).arg("--token").arg(token);
        }
        cmd.args(&self.extra_args);
        cmd.env("HOME", &self.home).env_remove("SHOAL_JOIN_TOKEN");
        cmd.envs(self.extra_env.iter().map(|(k, v)| (k, v)));
        cmd.env("RUST_LOG", std::env::var("SHOAL_TEST_LOG").unwrap_or_else(|_| "info,raft=warn".into()));
        cmd.stdout(Stdio::null()).stderr(log);
        self.child = Some(cmd.spawn().context("spawning shoal-manager")?);
        Ok(())
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Everything the manager has logged so far (all its runs).
    pub fn log_text(&self) -> Result<String> {
        std::fs::read_to_string(&self.log).with_context(|| format!("reading {}", self.log.display()))
    }

    /// SIGKILL: the process gets no chance to flush or hand over anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a graceful exit.
    pub fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        self.send_sigterm()?;
        self.wait_exit(Duration::from_secs(5))
    }

    /// Sends SIGTERM without waiting (to stop several managers at the same moment).
    pub fn send_sigterm(&self) -> Result<()> {
        let child = self.child.as_ref().ok_or_else(|| anyhow!("{} is not running", self.name))?;
        let sent = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status()?;
        if !sent.success() {
            bail!("kill -TERM {} failed", child.id());
        }
        Ok(())
    }

    /// Waits for the process to exit; kills it and fails if it is still running after `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Result<std::process::ExitStatus> {
        let mut child = self.child.take().ok_or_else(|| anyhow!("{} is not running", self.name))?;
        let poll = Duration::from_millis(20);
        for _ in 0..=limit.as_millis() / poll.as_millis() {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(poll);
        }
        let _ = child.kill();
        let _ = child.wait();
        bail!("{} did not exit within {limit:?}", self.name)
    }

    /// Sets (or replaces) an environment variable for the next start.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.extra_env.retain(|(k, _)| k != key);
        self.extra_env.push((key.to_string(), value.to_string()));
    }

    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// Starts the process again on the same data dir (resume).
    pub fn restart(&mut self) -> Result<()> {
        self.kill9();
        self.spawn(None)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn client(&self) -> Result<ControlClient<Channel>> {
        connect(&self.addr).await
    }
}

impl Drop for ManagerProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A control client with the admin certificate of the cluster `addr` belongs to.
pub async fn connect(addr: &str) -> Result<ControlClient<Channel>> {
    let dir = admin_bundle(addr).ok_or_else(|| anyhow!("no admin bundle is registered for {addr}"))?;
    connect_with(addr, &dir).await
}

/// One `shoal-agent` process driving the local Docker engine.
pub struct AgentProc {
    pub name: String,
    pub data_dir: PathBuf,
    pub node_id: String,
    join: String,
    /// The worker join token (used on the first start only).
    pub token: String,
    log: PathBuf,
    child: Option<Child>,
    labels: Vec<String>,
    /// The agent's `--ingress-addr`: a loopback address of its own, so the agents of one test
    /// (and of tests running at the same time) never share an ingress port.
    pub ingress_addr: std::net::Ipv4Addr,
    /// More flags for `shoal-agent`.
    pub extra_args: Vec<String>,
}

/// A /24 of 10.0.0.0/8 (out of 10.213.0.0/16, the default pool) for one test cluster's virtual
/// IPs, which no other cluster of this machine's tests is likely to use.
pub fn random_vip_pool() -> String {
    let r: u32 = rand::random();
    let (a, b) = (1 + (r % 250) as u8, (r >> 8) as u8);
    let a = if a == 213 { 214 } else { a };
    format!("10.{a}.{b}.0/24")
}

/// A loopback address no other agent of this machine's tests is likely to use.
pub fn random_loopback() -> std::net::Ipv4Addr {
    let r: u32 = rand::random();
    std::net::Ipv4Addr::new(127, 1 + (r % 250) as u8, 1 + ((r >> 8) % 250) as u8, 1 + ((r >> 16) % 250) as u8)
}

impl AgentProc {
    /// `ip:port` of this agent's ingress proxy for published port `port`.
    pub fn ingress(&self, port: u16) -> String {
        format!("{}:{port}", self.ingress_addr)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut cmd = Command::new(bin("shoal-agent"));
        cmd.arg("--data-dir").arg(&self.data_dir).arg("--join").arg(&self.join).arg("--hostname").arg(&self.name);
        cmd.arg("--token").arg(&self.token).env_remove("SHOAL_JOIN_TOKEN");
        cmd.arg("--ingress-addr").arg(self.ingress_addr.to_string());
        for label in &self.labels {
            cmd.arg("--label").arg(label);
        }
        cmd.args(&self.extra_args);
        cmd.env("RUST_LOG", std::env::var("SHOAL_TEST_LOG").unwrap_or_else(|_| "info".into()));
        cmd.stdout(Stdio::null()).stderr(log);
        self.child = Some(cmd.spawn().context("spawning shoal-agent")?);
        Ok(())
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) -> Result<()> {
        self.kill9();
        self.spawn()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Ids of this agent's containers (running only, or all).
    pub fn containers(&self, all: bool) -> Vec<String> {
        docker_ids(&format!("label=org.shoal.node.id={}", self.node_id), all)
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.kill9();
        // Leave the engine as we found it. A create the killed agent had in flight completes in
        // the engine after it died: look again a little later for such a straggler.
        for round in 0..2 {
            if round > 0 {
                std::thread::sleep(Duration::from_millis(300));
            }
            let ids = self.containers(true);
            if !ids.is_empty() {
                let _ = Command::new("docker").arg("rm").arg("-f").args(&ids).output();
            }
        }
    }
}

/// Container ids matching a `docker ps --filter`.
pub fn docker_ids(filter: &str, all: bool) -> Vec<String> {
    let mut cmd = Command::new("docker");
    cmd.arg("ps").arg("-q").arg("--no-trunc").arg("--filter").arg(filter);
    if all {
        cmd.arg("-a");
    }
    let out = cmd.output().expect("running docker ps");
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

/// `docker inspect -f FORMAT ID`.
pub fn docker_inspect(id: &str, format: &str) -> String {
    let out = Command::new("docker").args(["inspect", "-f", format, id]).output().expect("docker inspect");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A set of managers started from scratch in a temporary directory.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub managers: Vec<ManagerProc>,
    pub agents: Vec<AgentProc>,
    extra_args: Vec<String>,
    extra_env: Vec<(String, String)>,
    /// The cluster's `--vip-pool`: its own, as the clusters of tests running at once share this
    /// host's loopback interface, where the agents add the virtual IPs in use.
    pub vip_pool: String,
}

impl Drop for Cluster {
    /// Takes the cluster's virtual IPs off the loopback interface (the agents, killed, leave them).
    fn drop(&mut self) {
        // The agents first: a running one would add an address again.
        self.agents.clear();
        let Ok((first, last)) = shoal_types::vip_pool_range(&self.vip_pool) else { return };
        let Ok(shown) = Command::new("ip").args(["-o", "-4", "address", "show", "dev", "lo"]).output() else { return };
        for line in String::from_utf8_lossy(&shown.stdout).lines() {
            let Some(cidr) = line.split_whitespace().skip_while(|w| *w != "inet").nth(1) else { continue };
            let Some(Ok(ip)) = cidr.split('/').next().map(str::parse::<std::net::Ipv4Addr>) else { continue };
            if (first..=last).contains(&u32::from(ip)) {
                let _ = Command::new("ip").args(["address", "del", cidr, "dev", "lo"]).output();
            }
        }
    }
}

impl Cluster {
    /// Starts `n` managers: the first initialises, the others join it and are promoted to voters.
    pub async fn start(n: usize) -> Result<Cluster> {
        Cluster::start_with(n, &[]).await
    }

    pub async fn start_with(n: usize, extra_args: &[&str]) -> Result<Cluster> {
        Cluster::start_with_env(n, extra_args, &[]).await
    }

    /// Like [`Cluster::start_with`], with extra environment variables for every manager.
    pub async fn start_with_env(n: usize, extra_args: &[&str], extra_env: &[(&str, &str)]) -> Result<Cluster> {
        let mut extra_args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        let vip_pool = match extra_args.iter().position(|a| a == "--vip-pool") {
            Some(i) => extra_args.get(i + 1).cloned().unwrap_or_default(),
            None => {
                let pool = random_vip_pool();
                extra_args.extend(["--vip-pool".to_string(), pool.clone()]);
                pool
            }
        };
        let mut cluster = Cluster {
            dir: tempfile::tempdir()?,
            managers: Vec::new(),
            agents: Vec::new(),
            extra_args,
            extra_env: extra_env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            vip_pool,
        };
        for _ in 0..n {
            cluster.add_manager().await?;
        }
        Ok(cluster)
    }

    /// Starts one more manager, joining through the first running one, and waits until it votes.
    pub async fn add_manager(&mut self) -> Result<usize> {
        let index = self.managers.len();
        let name = format!("m{}", index + 1);
        let join = self.managers.iter_mut().find_map(|m| if m.is_running() { Some(m.addr.clone()) } else { None });
        let token = match &join {
            Some(addr) => Some(join_token(addr, "manager").await?),
            None => None,
        };
        let mut manager = ManagerProc {
            name: name.clone(),
            addr: free_addr(),
            data_dir: self.dir.path().join(&name),
            log: self.dir.path().join(format!("{name}.log")),
            child: None,
            extra_args: self.extra_args.clone(),
            home: self.dir.path().to_path_buf(),
            extra_env: self.extra_env.clone(),
        };
        manager.spawn(join.as_deref().zip(token.as_deref()))?;
        if index == 0 {
            // The first manager initialises the cluster and writes the admin bundle.
            let bundle = self.admin_dir();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while !bundle.join("key.pem").exists() {
                if tokio::time::Instant::now() > deadline || !manager.is_running() {
                    bail!("{name} wrote no admin bundle; its log:\n{}", manager.log());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        register_admin_bundle(&manager.addr, &self.admin_dir());
        self.managers.push(manager);
        let expected = self.managers.len();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let voted = self
                .wait_for(Duration::from_millis(500), |info| {
                    info.raft.voters.len() == expected && info.raft.learners.is_empty()
                })
                .await;
            if voted.is_ok() {
                return Ok(index);
            }
            // A joiner that exited (refused) will never vote: no need to wait out the deadline.
            if !self.managers[index].is_running() || tokio::time::Instant::now() > deadline {
                bail!("{name} did not become a voter; its log:\n{}", self.managers[index].log());
            }
        }
    }

    /// Sets an environment variable for every manager started from now on (and restarts).
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.extra_env.retain(|(k, _)| k != key);
        self.extra_env.push((key.to_string(), value.to_string()));
        for manager in &mut self.managers {
            manager.set_env(key, value);
        }
    }

    /// Replaces the extra arguments of the managers started from now on.
    pub fn set_extra_args(&mut self, args: &[&str]) {
        self.extra_args = args.iter().map(|s| s.to_string()).collect();
    }

    /// The admin client bundle the first manager wrote when it initialised the cluster.
    pub fn admin_dir(&self) -> PathBuf {
        self.dir.path().join("m1").join("admin")
    }

    /// Starts an agent joined through the first running manager and waits until its node is ready.
    pub async fn add_agent(&mut self, labels: &[&str]) -> Result<usize> {
        self.add_agent_with(labels, &[]).await
    }

    /// [`Cluster::add_agent`] with more `shoal-agent` flags.
    pub async fn add_agent_with(&mut self, labels: &[&str], extra_args: &[&str]) -> Result<usize> {
        let index = self.agents.len();
        let name = format!("agent{}", index + 1);
        let join = self.running_addrs().first().cloned().ok_or_else(|| anyhow!("no manager runs"))?;
        let data_dir = self.dir.path().join(&name);
        let token = join_token(&join, "worker").await?;
        let mut agent = AgentProc {
            name: name.clone(),
            data_dir: data_dir.clone(),
            node_id: String::new(),
            token,
            join,
            log: self.dir.path().join(format!("{name}.log")),
            child: None,
            labels: labels.iter().map(|s| s.to_string()).collect(),
            ingress_addr: random_loopback(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        };
        agent.spawn()?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(bytes) = std::fs::read(data_dir.join("agent.json")) {
                let v: serde_json::Value = serde_json::from_slice(&bytes)?;
                agent.node_id = v["node_id"].as_str().unwrap_or_default().to_string();
                break;
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{name} wrote no identity; log:\n{}", agent.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let node_id = agent.node_id.clone();
        self.agents.push(agent);
        let addr = self.running_addrs()[0].clone();
        loop {
            let ready = list_nodes(&addr)
                .await
                .map(|nodes| nodes.iter().any(|n| n.id == node_id && n.status.state == shoal_types::NodeState::Ready))
                .unwrap_or(false);
            if ready {
                return Ok(index);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{name} did not register; log:\n{}", self.agents[index].log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls cluster info through any running manager until `cond` holds.
    pub async fn wait_for(&mut self, timeout: Duration, cond: impl Fn(&ClusterInfo) -> bool) -> Result<ClusterInfo> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = String::from("no answer");
        loop {
            let addrs: Vec<String> = self
                .managers
                .iter_mut()
                .filter_map(|m| if m.is_running() { Some(m.addr.clone()) } else { None })
                .collect();
            for addr in addrs {
                match cluster_info(&addr).await {
                    Ok(info) if cond(&info) => return Ok(info),
                    Ok(info) => last = format!("{info:?}"),
                    Err(e) => last = format!("{e:#}"),
                }
            }
            if tokio::time::Instant::now() > deadline {
                bail!("condition not reached within {timeout:?}; last: {last}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Index of the manager that currently leads.
    pub async fn leader(&mut self) -> Result<usize> {
        let info = self.wait_for(Duration::from_secs(15), |i| i.leader.is_some()).await?;
        let leader = info.leader.expect("checked");
        self.managers.iter().position(|m| m.addr == leader.addr).ok_or_else(|| anyhow!("unknown leader {leader:?}"))
    }

    pub fn running_addrs(&mut self) -> Vec<String> {
        self.managers.iter_mut().filter_map(|m| if m.is_running() { Some(m.addr.clone()) } else { None }).collect()
    }

    pub fn logs(&self) -> String {
        let managers: String =
            self.managers.iter().map(|m| format!("==== {} ({})\n{}", m.name, m.addr, m.log())).collect();
        let agents: String =
            self.agents.iter().map(|a| format!("==== {} ({})\n{}", a.name, a.node_id, a.log())).collect();
        managers + &agents
    }
}

pub async fn cluster_info(addr: &str) -> Result<ClusterInfo> {
    let response = connect(addr).await?.cluster_info(ClusterInfoRequest { local: false }).await?;
    Ok(serde_json::from_str(&response.into_inner().info_json)?)
}

pub async fn create_service(addr: &str, spec: &ServiceSpec) -> Result<Service> {
    let response = connect(addr)
        .await?
        .create_service(CreateServiceRequest { spec_json: serde_json::to_string(spec)?, ..Default::default() })
        .await?;
    Ok(serde_json::from_str(&response.into_inner().service_json)?)
}

pub async fn list_services(addr: &str) -> Result<Vec<Service>> {
    let response = connect(addr).await?.list_services(ListServicesRequest::default()).await?;
    response.into_inner().services_json.iter().map(|j| Ok(serde_json::from_str(j)?)).collect()
}

pub async fn list_tasks(addr: &str, service: &str) -> Result<Vec<shoal_types::Task>> {
    let response = connect(addr)
        .await?
        .list_tasks(ListTasksRequest { service: service.to_string(), ..Default::default() })
        .await?;
    response.into_inner().tasks_json.iter().map(|j| Ok(serde_json::from_str(j)?)).collect()
}

/// Polls until `cond` holds for the service's tasks, or fails with what was last seen.
pub async fn wait_tasks(
    addr: &str,
    service: &str,
    timeout: Duration,
    what: &str,
    cond: impl Fn(&[shoal_types::Task]) -> bool,
) -> Result<Vec<shoal_types::Task>> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let tasks = list_tasks(addr, service).await.unwrap_or_default();
        if cond(&tasks) {
            return Ok(tasks);
        }
        if tokio::time::Instant::now() > deadline {
            let lines: Vec<String> = tasks
                .iter()
                .map(|t| {
                    format!(
                        "{} {} node={} {}/{} {}",
                        t.id,
                        t.name(),
                        t.node_id,
                        t.status.state,
                        t.desired_state,
                        t.status.err
                    )
                })
                .collect();
            bail!("{what}: not reached within {timeout:?}; tasks:\n{}", lines.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Tasks observed and desired RUNNING.
pub fn running(tasks: &[shoal_types::Task]) -> Vec<&shoal_types::Task> {
    tasks
        .iter()
        .filter(|t| {
            t.status.state == shoal_types::TaskState::Running && t.desired_state == shoal_types::TaskState::Running
        })
        .collect()
}

pub async fn list_nodes(addr: &str) -> Result<Vec<Node>> {
    let response = connect(addr).await?.list_nodes(ListNodesRequest {}).await?;
    response.into_inner().nodes_json.iter().map(|j| Ok(serde_json::from_str(j)?)).collect()
}

/// Runs the `shoal` CLI against `host` with the admin bundle of its cluster.
pub fn shoal(host: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin("shoal"));
    cmd.arg("--host").arg(host).args(args).env_remove("SHOAL_HOST").env_remove("SHOAL_TLS_DIR");
    if let Some(dir) = admin_bundle(host) {
        cmd.env("SHOAL_TLS_DIR", dir);
    }
    cmd.output().expect("running shoal")
}

/// Lines a child process writes to one of its pipes, gathered by a thread.
pub fn collect_lines(pipe: impl std::io::Read + Send + 'static) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    use std::io::BufRead;
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
            sink.lock().expect("lines lock").push(line);
        }
    });
    lines
}

/// Waits (up to 30 s) until one of `lines` contains `needle`; `what` names the wait in the error.
pub async fn wait_line(lines: &std::sync::Mutex<Vec<String>>, needle: &str, what: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if lines.lock().expect("lines lock").iter().any(|l| l.contains(needle)) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{what}: no line with {needle:?}; got:\n{}", lines.lock().expect("lines lock").join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// One manager's own view (not forwarded to the leader).
pub async fn local_info(addr: &str) -> Result<ClusterInfo> {
    let response = connect(addr).await?.cluster_info(ClusterInfoRequest { local: true }).await?;
    Ok(serde_json::from_str(&response.into_inner().info_json)?)
}

/// Waits until the manager at `addr` has applied at least `index` (it caught up).
pub async fn wait_applied(addr: &str, index: u64, timeout: Duration) -> Result<ClusterInfo> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match local_info(addr).await {
            Ok(info) if info.raft.applied >= index => return Ok(info),
            Ok(_) | Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(info) => bail!("{addr} applied only {} of {index}", info.raft.applied),
            Err(e) => return Err(e),
        }
    }
}

impl ManagerProc {
    /// The process id while the manager runs (for resource measurements).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl AgentProc {
    /// The process id while the agent runs (for resource measurements).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// Certificate credentials for a new node of `role` ("worker" or "manager"), obtained with the
/// cluster's current join token like a joining node would: a test can then call the manager
/// exactly as that node could.
pub async fn node_credentials(addr: &str, role: shoal_tls::Role) -> Result<shoal_tls::Credentials> {
    let token = join_token(addr, role.as_str()).await?;
    Ok(shoal_tls::join::obtain_certificate(addr, Some(&token), role).await?)
}

/// A channel to `addr` presenting `credentials`.
pub async fn channel_as(addr: &str, credentials: &shoal_tls::Credentials) -> Result<Channel> {
    tls_channel(addr, credentials, Duration::from_secs(15)).await
}

/// The stdout of a command that must have succeeded; otherwise panics showing both streams.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "expected success, got {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        stdout(out),
        stderr(out)
    );
    stdout(out)
}

/// Runs the CLI against `addr`; its stdout, or an error with both streams unless it succeeded.
pub fn shoal_ok(addr: &str, args: &[&str]) -> Result<String> {
    let out = shoal(addr, args);
    if !out.status.success() {
        bail!("shoal {args:?} failed: {}{}", stdout(&out), stderr(&out));
    }
    Ok(stdout(&out))
}

/// `shoal service inspect NAME`, parsed.
pub fn inspect_service(addr: &str, name: &str) -> Result<Service> {
    let text = shoal_ok(addr, &["service", "inspect", name])?;
    let mut services: Vec<Service> = serde_json::from_str(&text)?;
    services.pop().context("service inspect printed no service")
}

/// One manager and one agent running real containers; the manager's address.
pub async fn single_node() -> Result<(Cluster, String)> {
    let mut cluster = Cluster::start(1).await?;
    cluster.add_agent(&[]).await?;
    let addr = cluster.running_addrs()[0].clone();
    Ok((cluster, addr))
}

/// Reads service `name` and sends its spec changed by `change`, with the version just read.
pub async fn update_service(
    client: &mut ControlClient<Channel>,
    name: &str,
    change: impl FnOnce(&mut ServiceSpec),
) -> Result<()> {
    let current = get_service(client, name).await?;
    let mut spec = current.spec.clone();
    change(&mut spec);
    let request = UpdateServiceRequest {
        service: name.into(),
        version: current.version,
        spec_json: serde_json::to_string(&spec)?,
        rollback: false,
        ..Default::default()
    };
    client.update_service(request).await?;
    Ok(())
}

/// Push-style rollback of service `name` (its previous spec becomes current), with the version
/// just read.
pub async fn rollback_service(client: &mut ControlClient<Channel>, name: &str) -> Result<()> {
    let current = get_service(client, name).await?;
    let request = UpdateServiceRequest {
        service: name.into(),
        version: current.version,
        spec_json: String::new(),
        rollback: true,
        ..Default::default()
    };
    client.update_service(request).await?;
    Ok(())
}

pub async fn get_service(client: &mut ControlClient<Channel>, name: &str) -> Result<Service> {
    let response = client.get_service(GetServiceRequest { service: name.into() }).await?;
    Ok(serde_json::from_str(&response.into_inner().service_json)?)
}

/// Slots a rolling update has in transition: an old task being stopped that still runs, or an
/// update's new task not running yet (what `parallelism` bounds).
pub fn slots_in_transition<'a>(tasks: impl IntoIterator<Item = &'a shoal_types::Task>) -> usize {
    use shoal_types::{TaskOrigin, TaskState};
    let mut slots = std::collections::BTreeSet::new();
    for t in tasks {
        let old_stopping = t.desired_state >= TaskState::Shutdown
            && t.status.state <= TaskState::Running
            && t.origin != TaskOrigin::Update;
        let new_starting = t.origin == TaskOrigin::Update
            && t.desired_state <= TaskState::Running
            && t.status.state < TaskState::Running;
        if old_stopping || new_starting {
            slots.insert(t.slot);
        }
    }
    slots.len()
}

/// A process stopped with SIGSTOP: what a VM pause or a hung host does to it (its sockets stay
/// open, the kernel still accepts connections, nothing answers). Dropping it sends SIGCONT, so a
/// failing test never leaves the process stopped.
pub struct Frozen {
    pid: u32,
    running: bool,
}

impl Frozen {
    /// `kill -STOP pid`.
    pub fn stop(pid: u32) -> Result<Frozen> {
        signal(pid, "-STOP")?;
        Ok(Frozen { pid, running: false })
    }

    /// `kill -CONT pid`.
    pub fn resume(mut self) -> Result<()> {
        self.running = true;
        signal(self.pid, "-CONT")
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if !self.running {
            let _ = signal(self.pid, "-CONT");
        }
    }
}

fn signal(pid: u32, which: &str) -> Result<()> {
    let status = Command::new("kill").arg(which).arg(pid.to_string()).status()?;
    if !status.success() {
        bail!("kill {which} {pid} failed");
    }
    Ok(())
}

/// The service named `name` (it must exist).
pub async fn service_by_name(addr: &str, name: &str) -> Result<Service> {
    list_services(addr).await?.into_iter().find(|s| s.spec.name == name).ok_or_else(|| anyhow!("no service {name}"))
}

/// Reads the service, applies `change` to its spec and sends it back with the version read.
pub async fn update_by_name(addr: &str, name: &str, change: impl FnOnce(&mut ServiceSpec)) -> Result<()> {
    update_service(&mut connect(addr).await?, name, change).await
}

/// `service rollback` through the API.
pub async fn rollback_by_name(addr: &str, name: &str) -> Result<()> {
    rollback_service(&mut connect(addr).await?, name).await
}

/// Polls until the service's update status is `want`; fails at the deadline with every task of
/// the service. A poll cut off by a leader change is retried; only the deadline ends the wait.
pub async fn wait_update_status(
    addr: &str,
    name: &str,
    want: shoal_types::UpdateState,
    timeout: Duration,
) -> Result<Service> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let s = match service_by_name(addr, name).await {
            Ok(s) => s,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("polling {name} failed ({e:#}); retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        if s.update_status.as_ref().is_some_and(|u| u.state == want) {
            return Ok(s);
        }
        if tokio::time::Instant::now() > deadline {
            let tasks = list_tasks(addr, name).await.unwrap_or_default();
            let lines: Vec<String> = tasks
                .iter()
                .map(|t| {
                    format!(
                        "{} {} {} v{} {:?} {}/{} running_at={:?} {}",
                        t.id,
                        t.name(),
                        t.spec.container.image,
                        t.spec_version,
                        t.origin,
                        t.status.state,
                        t.desired_state,
                        t.running_at,
                        t.status.err
                    )
                })
                .collect();
            bail!(
                "update status {:?} instead of {want:?}; service spec_version {}\n{}",
                s.update_status,
                s.spec_version,
                lines.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
