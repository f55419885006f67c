//! The agent: holds a session with the leader, runs its assigned tasks through an [`Executor`]
//! and reports every state change. `shoal-agent` wires it to Docker; tests wire it to the fake.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use shoal_executor::Executor;
use shoal_proto::v1::dispatcher_client::DispatcherClient;
use shoal_proto::v1::{AssignmentKind, HeartbeatRequest, SessionRequest, TaskStatusUpdate, UpdateTaskStatusRequest};
use shoal_types::{NodeDescription, Task};
use tokio::sync::watch;
use tonic::transport::Channel;

mod data;
pub mod ingress;
mod logs;
pub mod metrics;
mod report;
mod runner;
mod traffic;
mod vip;

pub use report::Reporter;

/// Response metadata a follower sets to name the leader (see the dispatcher).
const LEADER_HEADER: &str = "x-shoal-leader";
const IDENTITY_FILE: &str = "agent.json";

/// How long dialling a manager (TCP and TLS) may take. The kernel of a stopped or hung manager
/// still accepts the TCP connection and then nothing answers, so only this bound moves the agent
/// on to another manager.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long opening a session may take until its first message: the leader writes the node's
/// registration to the raft log before it answers.
const SESSION_OPEN_TIMEOUT: Duration = Duration::from_secs(3);
/// The shortest time a heartbeat or status call may take, whatever the heartbeat period.
const MIN_CALL_TIMEOUT: Duration = Duration::from_millis(500);
/// Reconnection backoff after every known manager failed in turn (Swarm: 100 ms to 8 s).
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(8);

#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// This node's certificate (from [`join_or_resume`]); renewed in place.
    pub tls: Arc<shoal_tls::NodeTls>,
    pub data_dir: PathBuf,
    /// Managers to try, in order; the leader's address and the cluster's other managers are
    /// learned from the session.
    pub managers: Vec<String>,
    pub hostname: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Where the ingress proxy listens (`--ingress-addr`); `None`: no proxy (in-process tests).
    pub ingress_addr: Option<std::net::IpAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("data dir {0}: {1}")]
    DataDir(PathBuf, String),
    #[error("{0}")]
    Join(String),
    #[error("managers: the list is empty; an agent needs at least one manager address (HOST:PORT)")]
    NoManagers,
}

/// Where the agent keeps its certificate and key, under its data dir.
pub const TLS_DIR: &str = "tls";

#[derive(Serialize, Deserialize)]
struct Identity {
    node_id: String,
}

/// This agent's node id and certificate: read from its data dir, or, on first start, obtained
/// from the manager at `join` with the worker join token (the node id comes with the
/// certificate). Refuses a directory that holds something else.
pub async fn join_or_resume(
    dir: &Path,
    join: &str,
    token: Option<&str>,
) -> Result<(String, shoal_tls::Credentials), AgentError> {
    let err = |m: String| AgentError::DataDir(dir.to_path_buf(), m);
    let private = |e: shoal_tls::private_files::PrivateFileError| err(e.to_string());
    // The directory holds this node's key: 0700 before anything is written in it.
    let existed = dir.exists();
    if !existed {
        shoal_tls::private_files::create_dir(dir).map_err(private)?;
    }
    let path = dir.join(IDENTITY_FILE);
    if path.exists() {
        shoal_tls::private_files::harden_and_warn(dir).map_err(private)?;
        let bytes = std::fs::read(&path).map_err(|e| err(format!("cannot read {IDENTITY_FILE}: {e}")))?;
        let identity: Identity = serde_json::from_slice(&bytes)
            .map_err(|e| err(format!("{IDENTITY_FILE} is corrupt or not a shoal agent's ({e})")))?;
        let credentials = shoal_tls::Credentials::load(&dir.join(TLS_DIR))
            .map_err(|e| err(e.to_string()))?
            .ok_or_else(|| err(format!("{TLS_DIR}/ is missing: this node's certificate is gone; remove the node (`shoal node rm`), empty the data dir and join again with a token")))?;
        let certified = credentials.identity().map_err(|e| err(e.to_string()))?;
        if certified.node_id != identity.node_id {
            return Err(err(format!(
                "{TLS_DIR}/cert.pem is for node {}, not this node ({})",
                certified.node_id, identity.node_id
            )));
        }
        return Ok((identity.node_id, credentials));
    }
    if std::fs::read_dir(dir).map_err(|e| err(e.to_string()))?.next().is_some() {
        return Err(err(format!("is not empty but holds no shoal agent state ({IDENTITY_FILE} is missing)")));
    }
    if existed {
        shoal_tls::private_files::create_dir(dir).map_err(private)?;
    }
    let credentials = shoal_tls::join::obtain_certificate(join, token, shoal_tls::Role::Worker)
        .await
        .map_err(|e| AgentError::Join(e.to_string()))?;
    let node_id = credentials.identity().map_err(|e| AgentError::Join(e.to_string()))?.node_id;
    credentials.save(&dir.join(TLS_DIR)).map_err(|e| err(e.to_string()))?;
    let identity = Identity { node_id: node_id.clone() };
    shoal_tls::private_files::write(&path, &serde_json::to_vec(&identity).expect("serialises")).map_err(private)?;
    tracing::info!(node = %node_id, "joined the cluster as a worker");
    Ok((node_id, credentials))
}

pub struct Agent {
    pub node_id: String,
    config: AgentConfig,
    executor: Arc<dyn Executor>,
    reporter: Arc<Reporter>,
    /// The secrets and configs the leader sent for this node's tasks.
    data: Arc<data::DataStore>,
    runners: Mutex<HashMap<String, runner::Runner>>,
    /// The ingress proxy, when this agent runs one.
    ingress: Option<Arc<ingress::Ingress>>,
    /// Managers learned from the last session.
    managers: Mutex<Vec<String>>,
    client_tls: shoal_tls::ClientConfig,
    connected: watch::Sender<bool>,
}

impl Agent {
    pub fn new(node_id: String, config: AgentConfig, executor: Arc<dyn Executor>) -> Result<Arc<Agent>, AgentError> {
        let managers = config.managers.clone();
        if managers.is_empty() {
            return Err(AgentError::NoManagers);
        }
        let client_tls = config.tls.client_config().map_err(|e| AgentError::Join(e.to_string()))?;
        let ingress = config.ingress_addr.map(|addr| ingress::Ingress::new(addr, node_id.clone()));
        Ok(Arc::new(Agent {
            ingress,
            client_tls,
            node_id,
            config,
            executor,
            reporter: Arc::new(Reporter::default()),
            data: Arc::default(),
            runners: Mutex::new(HashMap::new()),
            managers: Mutex::new(managers),
            connected: watch::channel(false).0,
        }))
    }

    /// This node's tasks by the state the agent last reported for each.
    pub fn task_states(&self) -> std::collections::BTreeMap<shoal_types::TaskState, usize> {
        self.reporter.counts_by_state()
    }

    /// The ingress proxy, when this agent runs one.
    pub fn ingress(&self) -> Option<&Arc<ingress::Ingress>> {
        self.ingress.as_ref()
    }

    /// Keeps this node's certificate renewed through whichever manager answers.
    pub async fn renew_certificate(self: Arc<Self>) {
        let tls = self.config.tls.clone();
        let dir = self.config.data_dir.join(TLS_DIR);
        shoal_tls::join::keep_renewed(tls, dir, |csr| {
            let agent = self.clone();
            async move { agent.renew_via_any_manager(csr).await }
        })
        .await;
    }

    async fn renew_via_any_manager(&self, csr_pem: String) -> Result<String, String> {
        let managers = self.managers.lock().clone();
        let mut last = String::from("no manager known");
        for addr in managers {
            let endpoint = tonic::transport::Endpoint::from_shared(shoal_tls::client::uri(&addr))
                .map_err(|e| e.to_string())?
                .connect_timeout(Duration::from_secs(2))
                .timeout(Duration::from_secs(10));
            match shoal_tls::client::connect(endpoint, self.client_tls.clone()).await {
                Ok(channel) => {
                    let request = shoal_proto::v1::RenewNodeCertificateRequest { csr_pem: csr_pem.clone() };
                    match shoal_proto::v1::control_client::ControlClient::new(channel)
                        .renew_node_certificate(request)
                        .await
                    {
                        Ok(r) => return Ok(r.into_inner().cert_pem),
                        Err(status) => last = format!("{addr}: {}", status.message()),
                    }
                }
                Err(e) => last = format!("{addr}: {}", shoal_tls::join::error_chain(&e)),
            }
        }
        Err(last)
    }

    /// Adds why a connection may have been refused when this node's certificate has expired.
    fn explain(&self, mut why: String) -> String {
        let identity = self.config.tls.identity();
        if identity.is_expired(std::time::SystemTime::now()) {
            why.push_str(&format!(
                " (this node's certificate expired {}s ago; remove the node, empty the data dir and join again with a token)",
                std::time::SystemTime::now().duration_since(identity.not_after).unwrap_or_default().as_secs()
            ));
        }
        why
    }

    /// True while a session with the leader is open.
    pub fn watch_connected(&self) -> watch::Receiver<bool> {
        self.connected.subscribe()
    }

    async fn description(&self) -> NodeDescription {
        let mut delay = Duration::from_millis(500);
        loop {
            match self.executor.describe().await {
                Ok(resources) => {
                    let mut description = resources.to_description();
                    if let Some(hostname) = &self.config.hostname {
                        description.hostname = hostname.clone();
                    }
                    if let Some(addr) = self.config.ingress_addr {
                        description.ingress_addr = addr.to_string();
                    }
                    return description;
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot describe this node: is the container engine reachable? retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Runs sessions with the cluster forever.
    ///
    /// When a session ends or a manager does not answer, the agent tries the next known manager
    /// at once (following a follower's pointer to the leader), and backs off only after every
    /// known manager failed in turn: a frozen leader must not hold the agent up for longer than a
    /// connect timeout, because a new leader gives the agent only a few heartbeat periods.
    pub async fn run(self: Arc<Self>) {
        let description = self.description().await;
        self.remove_orphans_on_start().await;
        let mut backoff = MIN_BACKOFF;
        let mut next: Option<String> = None;
        let mut cursor = 0usize;
        // Failed attempts since the last open session or the last backoff.
        let mut failures = 0usize;
        // Redirects followed in a row (two stale followers could point at each other).
        let mut redirects = 0usize;
        loop {
            let addr = match next.take() {
                Some(leader) => leader,
                None => {
                    let Some(addr) = self.manager_at(cursor) else {
                        tracing::error!("no manager address is known; the agent cannot reach the cluster");
                        return;
                    };
                    cursor += 1;
                    addr
                }
            };
            let known = self.managers.lock().len();
            match self.clone().session(&addr, &description).await {
                SessionEnd::Redirect(leader) if redirects < known => {
                    tracing::debug!(manager = %addr, leader = %leader, "redirected to the leader");
                    redirects += 1;
                    next = Some(leader);
                    continue;
                }
                SessionEnd::Redirect(leader) => {
                    redirects = 0;
                    tracing::warn!(manager = %addr, leader = %leader, "redirected in a circle; trying the next manager");
                }
                SessionEnd::Ended { why, was_open } => {
                    redirects = 0;
                    if was_open {
                        backoff = MIN_BACKOFF;
                        failures = 0;
                        // Start the next round after the manager that just failed.
                        cursor = self.managers.lock().iter().position(|m| *m == addr).map_or(cursor, |i| i + 1);
                    }
                    let _ = self.connected.send(false);
                    tracing::warn!(manager = %addr, reason = %why, "session with the cluster ended; trying the next manager");
                }
            }
            failures += 1;
            // Jitter so that the agents of a failed leader do not all arrive at the same instant.
            let jitter = Duration::from_millis(rand::random::<u64>() % 50);
            if failures < known {
                tokio::time::sleep(jitter).await;
                continue;
            }
            failures = 0;
            tokio::time::sleep(backoff + jitter).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// The known manager at position `cursor` (modulo their number).
    fn manager_at(&self, cursor: usize) -> Option<String> {
        let managers = self.managers.lock();
        match managers.len() {
            0 => self.config.managers.first().cloned(),
            n => managers.get(cursor % n).cloned(),
        }
    }

    /// Containers left from a previous run whose tasks the cluster no longer knows are removed
    /// once the first complete assignment arrives (see `apply_complete`); nothing to do here but
    /// log what was found.
    async fn remove_orphans_on_start(&self) {
        match self.executor.list().await {
            Ok(list) => tracing::info!(containers = list.len(), "containers of this node found at start"),
            Err(e) => tracing::warn!(error = %e, "cannot list this node's containers yet"),
        }
    }

    /// A connection to the manager at `addr` (an error names what failed).
    async fn connect(&self, addr: &str) -> Result<Channel, String> {
        let endpoint = tonic::transport::Endpoint::from_shared(shoal_tls::client::uri(addr))
            .map_err(|e| format!("invalid manager address {addr}: {e}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(2))
            .keep_alive_while_idle(true);
        shoal_tls::client::connect(endpoint, self.client_tls.clone())
            .await
            .map_err(|e| shoal_tls::join::error_chain(&e))
    }

    async fn session(self: Arc<Self>, addr: &str, description: &NodeDescription) -> SessionEnd {
        let channel = match self.connect(addr).await {
            Ok(c) => c,
            Err(e) => return SessionEnd::failed(format!("cannot reach {addr}: {}", self.explain(e))),
        };
        let mut client = DispatcherClient::new(channel).max_decoding_message_size(256 << 20);
        let request = SessionRequest {
            node_id: self.node_id.clone(),
            description_json: serde_json::to_string(description).expect("serialises"),
            labels: self.config.labels.clone().into_iter().collect(),
        };
        let open = async {
            let mut stream = client.session(request).await?.into_inner();
            let first = stream.message().await?;
            Ok::<_, tonic::Status>((stream, first))
        };
        let (mut stream, first) = match tokio::time::timeout(SESSION_OPEN_TIMEOUT, open).await {
            Ok(Ok((stream, Some(first)))) => (stream, first),
            Ok(Ok((_, None))) => return SessionEnd::failed(format!("{addr}: the session closed at once")),
            Ok(Err(status)) => {
                if status.code() == tonic::Code::Unavailable
                    && let Some(leader) = status.metadata().get(LEADER_HEADER).and_then(|v| v.to_str().ok())
                    && leader != addr
                {
                    return SessionEnd::Redirect(leader.to_string());
                }
                return SessionEnd::failed(format!("{}: {}", addr, self.explain(status.message().to_string())));
            }
            Err(_) => {
                return SessionEnd::failed(format!("{addr}: no session within {SESSION_OPEN_TIMEOUT:?}"));
            }
        };
        let session_id = first.session_id.clone();
        let period = Duration::from_millis(first.heartbeat_period_ms.max(100));
        if !first.managers.is_empty() {
            *self.managers.lock() = first.managers.clone();
        }
        tracing::info!(manager = %addr, node = %self.node_id, tasks = first.tasks_json.len(), "session open");
        self.apply(&first).await;
        let _ = self.connected.send(true);
        self.reporter.resend_all();

        // The leader declares this node down 3 periods after its last heartbeat; a heartbeat
        // that is not answered within a period ends the session, so at most 2 periods after the
        // last answered one the agent is already looking for the leader elsewhere.
        let heartbeat = {
            let (mut client, node_id, session_id) = (client.clone(), self.node_id.clone(), session_id.clone());
            async move {
                let mut period = period;
                loop {
                    tokio::time::sleep(period).await;
                    let beat = HeartbeatRequest { node_id: node_id.clone(), session_id: session_id.clone() };
                    let timeout = call_timeout(period);
                    match tokio::time::timeout(timeout, client.heartbeat(beat)).await {
                        Ok(Ok(r)) => period = Duration::from_millis(r.into_inner().period_ms.max(100)),
                        Ok(Err(e)) => return format!("heartbeat refused: {}", e.message()),
                        Err(_) => return format!("heartbeat not answered within {timeout:?}"),
                    }
                }
            }
        };
        let reports = {
            let (mut client, node_id, session_id, reporter) =
                (client.clone(), self.node_id.clone(), session_id.clone(), self.reporter.clone());
            async move {
                loop {
                    let batch = reporter.take_batch();
                    if batch.is_empty() {
                        reporter.notify.notified().await;
                        continue;
                    }
                    let updates = batch
                        .iter()
                        .map(|(id, s)| TaskStatusUpdate {
                            task_id: id.clone(),
                            status_json: serde_json::to_string(s).expect("serialises"),
                        })
                        .collect();
                    let request =
                        UpdateTaskStatusRequest { node_id: node_id.clone(), session_id: session_id.clone(), updates };
                    let timeout = call_timeout(period);
                    match tokio::time::timeout(timeout, client.update_task_status(request)).await {
                        Ok(Ok(_)) => {}
                        // Statuses the leader will never take (not this node's tasks, unreadable);
                        // an unknown session is `NotFound` and is retried on the next session.
                        Ok(Err(e))
                            if matches!(e.code(), tonic::Code::PermissionDenied | tonic::Code::InvalidArgument) =>
                        {
                            tracing::error!(error = e.message(), "the leader refused task statuses; dropping them");
                        }
                        Ok(Err(e)) => {
                            reporter.requeue(batch);
                            return format!("reporting task status failed: {}", e.message());
                        }
                        Err(_) => {
                            reporter.requeue(batch);
                            return format!("reporting task status not answered within {timeout:?}");
                        }
                    }
                }
            }
        };
        let log_reads = logs::serve(self.clone(), addr.to_string(), session_id.clone());
        let traffic = traffic::serve(self.ingress.clone(), client.clone(), self.node_id.clone(), session_id.clone());
        let assignments = async {
            loop {
                match stream.message().await {
                    Ok(Some(msg)) => self.apply(&msg).await,
                    Ok(None) => return "the leader closed the session".to_string(),
                    Err(e) => return format!("assignment stream: {}", e.message()),
                }
            }
        };
        let why = tokio::select! {
            why = heartbeat => why,
            why = reports => why,
            why = assignments => why,
            why = log_reads => why,
            why = traffic => why,
        };
        SessionEnd::Ended { why, was_open: true }
    }

    async fn apply(&self, msg: &shoal_proto::v1::SessionMessage) {
        let mut tasks = Vec::with_capacity(msg.tasks_json.len());
        for json in &msg.tasks_json {
            match serde_json::from_str::<Task>(json) {
                Ok(task) => tasks.push(task),
                Err(e) => tracing::error!(error = %e, "unreadable task in an assignment; skipped"),
            }
        }
        // Before the tasks that use them start.
        for json in &msg.data_json {
            match serde_json::from_str::<shoal_types::DataObject>(json) {
                Ok(object) => self.data.put(object),
                // The error text never quotes the input: it holds a secret's value.
                Err(e) => tracing::error!(
                    line = e.line(),
                    column = e.column(),
                    "unreadable secret or config in an assignment; skipped"
                ),
            }
        }
        let complete = msg.kind == AssignmentKind::Complete as i32;
        let mut hosts = HashMap::with_capacity(msg.hosts_json.len());
        for (key, json) in &msg.hosts_json {
            match serde_json::from_str::<Vec<String>>(json) {
                Ok(entries) => {
                    hosts.insert(key.clone(), entries);
                }
                Err(e) => tracing::error!(spec = %key, error = %e, "unreadable host entries in an assignment; skipped"),
            }
        }
        self.data.put_hosts(hosts, complete);
        let mut to_remove: Vec<String> = msg.removed.clone();
        // The containers of the tasks removed, by the id they carry (a task restarted in place
        // runs in the container of the task that made it), and those a remaining task still uses.
        let (mut removed_containers, in_use): (Vec<String>, HashSet<String>);
        {
            let mut runners = self.runners.lock();
            if complete {
                let keep: HashSet<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
                let gone: Vec<String> = runners.keys().filter(|id| !keep.contains(id.as_str())).cloned().collect();
                to_remove.extend(gone);
            }
            for task in tasks {
                match runners.get(&task.id) {
                    Some(runner) => {
                        runner.task.send_replace(task);
                    }
                    None => {
                        let id = task.id.clone();
                        let (tx, rx) = watch::channel(task);
                        let handle = tokio::spawn(runner::run(
                            rx,
                            self.executor.clone(),
                            self.reporter.clone(),
                            self.data.clone(),
                            self.ingress.clone(),
                        ));
                        runners.insert(id, runner::Runner { task: tx, handle });
                    }
                }
            }
            removed_containers = Vec::with_capacity(to_remove.len());
            for id in &to_remove {
                match runners.remove(id) {
                    Some(runner) => {
                        runner.handle.abort();
                        removed_containers.extend(runner.task.borrow().container_tasks().map(String::from));
                    }
                    None => removed_containers.push(id.clone()),
                }
                self.reporter.forget(id);
            }
            // Log reads that follow new tasks look again.
            self.reporter.changed.send_replace(());
            if complete {
                // Values no task here uses any more leave the agent's memory.
                let used: HashSet<(shoal_types::DataKind, String)> = runners
                    .values()
                    .filter(|runner| runner.task.borrow().desired_state <= shoal_types::TaskState::Running)
                    .flat_map(|runner| {
                        let task = runner.task.borrow();
                        task.spec.container.data_references().map(|(k, r)| (k, r.source.clone())).collect::<Vec<_>>()
                    })
                    .collect();
                self.data.retain(&used);
            }
            in_use = runners
                .values()
                .flat_map(|runner| runner.task.borrow().container_tasks().map(String::from).collect::<Vec<_>>())
                .collect();
        }
        removed_containers.sort();
        removed_containers.dedup();
        // A container a remaining task restarted in place stays, though the task that made it went.
        for id in removed_containers.iter().filter(|id| !in_use.contains(*id)) {
            if let Err(e) = self.executor.remove(id).await {
                tracing::warn!(task = %id, error = %e, "removing a container failed");
            }
        }
        if complete {
            // Containers of tasks this node no longer has (e.g. removed while the agent was down).
            let known = in_use;
            if let Ok(list) = self.executor.list().await {
                for container in list.into_iter().filter(|c| !known.contains(&c.task_id)) {
                    tracing::info!(task = %container.task_id, "removing a container of a task no longer assigned here");
                    if let Err(e) = self.executor.remove(&container.task_id).await {
                        tracing::warn!(task = %container.task_id, error = %e, "removing a container failed");
                    }
                }
            }
        }
    }
}

enum SessionEnd {
    /// A follower named the leader.
    Redirect(String),
    /// The session ended, or never opened (`was_open` false).
    Ended { why: String, was_open: bool },
}

impl SessionEnd {
    fn failed(why: String) -> SessionEnd {
        SessionEnd::Ended { why, was_open: false }
    }
}

/// How long a heartbeat or status call may take with heartbeat period `period`.
fn call_timeout(period: Duration) -> Duration {
    period.max(MIN_CALL_TIMEOUT)
}

/// Checks `--join` is `host:port`.
pub fn parse_manager_addr(text: &str) -> Result<String, String> {
    let (host, port) = text.rsplit_once(':').ok_or_else(|| format!("{text:?} is not HOST:PORT"))?;
    if host.is_empty() || host.contains('/') || host.contains(' ') {
        return Err(format!("{text:?} is not HOST:PORT (bad host)"));
    }
    port.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| format!("{text:?} is not HOST:PORT (bad port)"))?;
    Ok(text.to_string())
}

pub use shoal_executor;
pub use shoal_tls;

/// Unused-client guard so the type stays referenced in docs.
pub type ManagerClient = DispatcherClient<Channel>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_manager_list_is_refused() {
        let now = std::time::SystemTime::now();
        let ca = shoal_tls::ClusterCa::generate("cluster", now).expect("a CA");
        let credentials = ca
            .issue_with_new_key("cluster", "node1", shoal_tls::Role::Worker, Duration::from_secs(3600), now)
            .expect("a certificate");
        let config = AgentConfig {
            tls: shoal_tls::NodeTls::new(&credentials).expect("TLS"),
            data_dir: PathBuf::from("/nonexistent"),
            managers: Vec::new(),
            hostname: None,
            labels: BTreeMap::new(),
            ingress_addr: None,
        };
        let executor = Arc::new(shoal_executor::fake::FakeExecutor::new("node1"));
        let err = Agent::new("node1".into(), config, executor).err().expect("refused");
        assert!(matches!(err, AgentError::NoManagers));
        assert_eq!(
            err.to_string(),
            "managers: the list is empty; an agent needs at least one manager address (HOST:PORT)"
        );
    }
}
