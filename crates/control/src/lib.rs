//! The manager: raft + store + control API on one gRPC port. `shoal-manager` is a thin wrapper
//! around [`start`].
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use shoal_proto::v1::JoinManagerRequest;
use shoal_proto::v1::control_client::ControlClient;
use shoal_proto::v1::control_server::ControlServer;
use shoal_proto::v1::raft_transport_server::RaftTransportServer;
use shoal_raft::{
    Engine, EngineConfig, GrpcTransport, Member, MemberChange, MemberChangeKind, Members, ProposeError, RaftHandle,
    RaftRole, RaftStatus, RaftStorage, RaftTransportService,
};
use shoal_store::{Action, Batch, Change, MembershipChange, MembershipKind, State};
use shoal_types::{Cluster, ClusterSpec};
use tokio::sync::{broadcast, watch};

pub mod api;
pub mod at_rest;
pub mod auth;
pub mod control_loop;
pub mod dashboard;
pub mod dispatcher;
pub mod error;
pub mod identity;
pub mod logs;
mod machine;
pub mod metrics;
pub mod router;
pub mod security;
pub mod stacks;
#[cfg(test)]
mod testing;
pub mod traffic;

pub use error::ApiError;
pub use identity::Identity;
pub use machine::{ApplyResult, StoreMachine};

/// Largest batch a proposal may carry (Swarm's limit).
pub const MAX_ENTRY_BYTES: usize = 1536 * 1024;

/// Room left in an entry for the batch's envelope (`{"at":…,"actions":[…]}`) when actions are packed.
const ENVELOPE_BYTES: usize = 256;

/// Independent actions packed into as few entries as fit under [`MAX_ENTRY_BYTES`], in order;
/// an action that alone is over the limit comes back apart with its encoded size.
pub struct Packed {
    pub entries: Vec<Vec<Action>>,
    pub too_large: Vec<(Action, usize)>,
}

/// Packs `actions` (which must not depend on landing together) into entries by encoded size.
pub fn pack_entries(actions: Vec<Action>) -> Packed {
    pack_steps(actions.into_iter().map(|action| vec![action]).collect())
}

/// [`pack_entries`] for steps: the actions of one step always share an entry (entries are cut
/// only between steps); a step over the limit on its own is refused whole.
pub fn pack_steps(steps: Vec<Vec<Action>>) -> Packed {
    let limit = MAX_ENTRY_BYTES - ENVELOPE_BYTES;
    let mut packed = Packed { entries: Vec::new(), too_large: Vec::new() };
    let mut current: Vec<Action> = Vec::new();
    let mut current_bytes = 0;
    for step in steps {
        // +1 for the comma after each action.
        let sizes: Vec<usize> = step.iter().map(encoded_len).collect();
        let size: usize = sizes.iter().map(|s| s + 1).sum();
        if size > limit {
            packed.too_large.extend(step.into_iter().zip(sizes));
            continue;
        }
        if current_bytes + size > limit {
            packed.entries.push(std::mem::take(&mut current));
            current_bytes = 0;
        }
        current_bytes += size;
        current.extend(step);
    }
    if !current.is_empty() {
        packed.entries.push(current);
    }
    packed
}

/// The length of an action's JSON, without keeping the bytes.
fn encoded_len(action: &Action) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, action) {
        Ok(()) => count.0,
        // Cannot be encoded, so cannot be proposed either: treat as over any limit.
        Err(_) => usize::MAX,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("{0}")]
    DataDir(String),
    #[error("{0}")]
    Join(String),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error(transparent)]
    Raft(#[from] shoal_raft::RaftError),
    #[error("{0}")]
    Config(String),
    /// An autolocked manager started without its unlock key, or with a wrong one.
    #[error("{0}")]
    Locked(String),
}

#[derive(Clone, Debug)]
pub struct ManagerConfig {
    pub data_dir: PathBuf,
    pub listen_addr: SocketAddr,
    /// The address other managers and clients use to reach this one.
    pub advertise_addr: String,
    pub join: Option<String>,
    /// The manager join token (`--token`), needed with `join`.
    pub token: Option<String>,
    /// On initialisation, also copy the admin bundle to `~/.shoal/tls` if that is empty.
    pub admin_bundle_to_home: bool,
    pub hostname: String,
    pub tick: Duration,
    pub election_tick: usize,
    pub heartbeat_tick: usize,
    pub snapshot_interval: u64,
    /// Cluster settings used when this manager initialises a new cluster.
    pub cluster_spec: ClusterSpec,
    /// Keep this manager's data key sealed with the cluster's unlock key, never on its disk
    /// (decided when the data dir is first written).
    pub autolock: bool,
    /// The cluster's unlock key: to start an autolocked manager, or to join with `autolock`.
    pub unlock_key: Option<UnlockKey>,
    /// Serve Prometheus metrics on `/metrics` here (`--metrics-addr`); off when `None`.
    pub metrics_addr: Option<SocketAddr>,
    /// Serve the dashboard here (`--dashboard-addr`, loopback only); off when `None`.
    pub dashboard_addr: Option<SocketAddr>,
}

/// The cluster's unlock key as given to a manager; never printed by `Debug`.
#[derive(Clone)]
pub struct UnlockKey(String);

impl UnlockKey {
    pub fn new(key: String) -> UnlockKey {
        UnlockKey(key)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for UnlockKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UnlockKey(<secret>)")
    }
}

impl ManagerConfig {
    pub fn new(data_dir: PathBuf, listen_addr: SocketAddr) -> Self {
        ManagerConfig {
            data_dir,
            listen_addr,
            advertise_addr: listen_addr.to_string(),
            join: None,
            token: None,
            admin_bundle_to_home: true,
            hostname: hostname(),
            tick: Duration::from_millis(100),
            election_tick: 10,
            heartbeat_tick: 2,
            snapshot_interval: 10_000,
            cluster_spec: ClusterSpec::default(),
            autolock: false,
            unlock_key: None,
            metrics_addr: None,
            dashboard_addr: None,
        }
    }
}

/// This machine's host name, for `node ls`.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// Wall-clock milliseconds; the proposer stamps batches with it so replicas agree.
pub fn now_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A running manager.
pub struct Manager {
    pub identity: Identity,
    pub config: ManagerConfig,
    /// This manager's certificate (served to clients, presented to peers); renewed in place.
    pub tls: Arc<shoal_tls::NodeTls>,
    /// For calls to other managers (raft, forwarding).
    pub client_tls: shoal_tls::ClientConfig,
    raft: RaftHandle<ApplyResult>,
    state: Arc<RwLock<State>>,
    events: broadcast::Sender<Arc<Change>>,
    /// Each agent session's changes, routed by node (the broadcast is for watchers and the
    /// control loop).
    router: Arc<router::ChangeRouter>,
    /// Open `service logs` reads and the agents' log subscription streams (leader).
    logs: Arc<logs::LogBroker>,
    removals: Arc<machine::RemovalLog>,
    raft_thread: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
    shutdown: watch::Sender<bool>,
    /// Seals the raft data at rest (needed again to record the log's end after a stop).
    data_key: shoal_raft::DataKey,
    /// What the manager counts and measures (served with `--metrics-addr`).
    pub metrics: metrics::ManagerMetrics,
}

impl Manager {
    pub fn raft_status(&self) -> RaftStatus {
        self.raft.status()
    }

    pub fn watch_raft(&self) -> watch::Receiver<RaftStatus> {
        self.raft.watch_status()
    }

    pub fn state(&self) -> parking_lot::RwLockReadGuard<'_, State> {
        self.state.read()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.events.subscribe()
    }

    /// The routing of changes to agent sessions by node.
    pub fn router(&self) -> &Arc<router::ChangeRouter> {
        &self.router
    }

    /// The log broker: open `service logs` reads and the agents that answer them.
    pub fn logs(&self) -> &Arc<logs::LogBroker> {
        &self.logs
    }

    /// The recent removals (the last 10,000) after raft index `index` and at or after `at`.
    pub fn removals_since(&self, index: u64, at: u64) -> Vec<Change> {
        self.removals.since(index, at)
    }

    /// Proposes a batch and waits until it is applied here (so reads see it).
    pub async fn propose(&self, actions: Vec<Action>) -> Result<(), ApiError> {
        self.propose_as(actions, shoal_store::Origin::default()).await
    }

    /// [`Manager::propose`] of a user's change: who made it and why go with the revisions it
    /// makes.
    pub async fn propose_as(&self, actions: Vec<Action>, origin: shoal_store::Origin) -> Result<(), ApiError> {
        let batch = Batch { origin, ..Batch::new(now_millis(), actions) };
        let data = serde_json::to_vec(&batch).map_err(|e| ApiError::Internal(e.to_string()))?;
        if data.len() > MAX_ENTRY_BYTES {
            return Err(ApiError::TooLarge { size: data.len(), limit: MAX_ENTRY_BYTES });
        }
        let started = tokio::time::Instant::now();
        self.metrics.proposals.inc();
        let result = self.raft.propose(data).await;
        self.metrics.proposal_seconds.observe(started.elapsed().as_secs_f64());
        if !matches!(result, Ok(Ok(_))) {
            self.metrics.proposal_failures.inc();
        }
        Ok(result??)
    }

    /// Proposes independent actions (the control loop's, agents' statuses) as as many entries as
    /// their size needs. An action that alone is over the limit is dropped with an error log:
    /// retrying it could never succeed. Stops at the first entry that fails; returns how many
    /// entries were written.
    pub async fn propose_in_entries(&self, actions: Vec<Action>) -> Result<usize, ApiError> {
        self.propose_steps(actions.into_iter().map(|action| vec![action]).collect()).await
    }

    /// [`Manager::propose_in_entries`] for steps whose actions must share an entry (see
    /// [`pack_steps`]).
    pub async fn propose_steps(&self, steps: Vec<Vec<Action>>) -> Result<usize, ApiError> {
        let packed = pack_steps(steps);
        for (action, size) in &packed.too_large {
            tracing::error!(
                action = action_name(action),
                size,
                limit = MAX_ENTRY_BYTES,
                "a change is over the raft entry limit on its own; dropped"
            );
        }
        let written = packed.entries.len();
        for entry in packed.entries {
            self.propose(entry).await?;
        }
        Ok(written)
    }

    /// The raft error itself, so a caller can tell "another change is under way" by its type.
    pub async fn change_members(&self, change: MemberChange) -> Result<(), ProposeError> {
        self.raft.change_members(change).await
    }

    pub fn transfer_leader(&self, to: u64) {
        self.raft.transfer_leader(to);
    }

    /// Waits until the raft status satisfies `cond`, or the timeout passes.
    pub async fn wait_raft(&self, timeout: Duration, cond: impl Fn(&RaftStatus) -> bool) -> Option<RaftStatus> {
        let mut rx = self.raft.watch_status();
        let wait = async {
            loop {
                {
                    let st = rx.borrow_and_update();
                    if cond(&st) {
                        return st.clone();
                    }
                }
                if rx.changed().await.is_err() {
                    // The raft node stopped: wait out the timeout instead of spinning.
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.ok()
    }

    /// The voter best placed to take over leadership: reachable and most caught up.
    pub fn best_transferee(&self) -> Option<u64> {
        let st = self.raft.status();
        st.voters
            .iter()
            .filter(|id| **id != st.id)
            .filter_map(|id| st.progress.get(id).filter(|p| p.recent_active).map(|p| (p.matched, *id)))
            .max()
            .map(|(_, id)| id)
    }

    /// Graceful stop: a leader hands leadership to the best follower first, so the cluster does not
    /// wait out an election timeout.
    pub async fn shutdown(&self) {
        let st = self.raft.status();
        if st.role == RaftRole::Leader
            && let Some(to) = self.best_transferee()
        {
            tracing::info!(to, "transferring leadership before shutting down");
            self.raft.transfer_leader(to);
            let _ = self.wait_raft(Duration::from_secs(2), |s| s.role != RaftRole::Leader).await;
        }
        self.raft.shutdown();
        let _ = self.shutdown.send(true);
        let thread = self.raft_thread.lock().take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            // The raft thread owned sled; with it closed, record how far the log reached.
            let data_dir = self.config.data_dir.clone();
            let key = self.data_key.clone();
            match tokio::task::spawn_blocking(move || identity::record_stopped(&data_dir, &key)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "could not record the raft log's end for the next start"),
                Err(e) => tracing::warn!(error = %e, "could not record the raft log's end for the next start"),
            }
        }
    }

    /// Resolves when the manager should exit: shutdown was requested, or raft stopped because this
    /// manager was removed from the cluster.
    pub async fn stopped(&self) -> &'static str {
        let mut rx = self.raft.watch_status();
        let mut stop = self.shutdown.subscribe();
        loop {
            if rx.borrow().removed {
                return "this manager was removed from the cluster";
            }
            if *stop.borrow() {
                return "shutdown requested";
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { return "raft stopped" },
                _ = stop.changed() => {}
            }
        }
    }

    /// Leader-side: promotes learners to voters once they have caught up with the log.
    async fn promote_learners(self: Arc<Self>) {
        let mut ticker = tokio::time::interval(Duration::from_millis(100));
        loop {
            ticker.tick().await;
            if *self.shutdown.borrow() {
                return;
            }
            let st = self.raft.status();
            if st.role != RaftRole::Leader || !st.leader_ready {
                continue;
            }
            for learner in &st.learners {
                let caught_up = st.progress.get(learner).is_some_and(|p| p.recent_active && p.matched >= st.commit);
                let Some(member) = st.members.get(learner) else { continue };
                if caught_up {
                    let change = MemberChange {
                        kind: MemberChangeKind::Promote,
                        raft_id: *learner,
                        member: member.clone(),
                        at: now_millis(),
                    };
                    match self.raft.change_members(change).await {
                        Ok(()) => {
                            tracing::info!(raft_id = learner, node = %member.node_id, "promoted manager to voter")
                        }
                        Err(e) => tracing::warn!(raft_id = learner, error = %e, "promoting learner failed; will retry"),
                    }
                }
            }
        }
    }
}

/// Everything `start` returns: the manager and the task serving its gRPC port.
pub struct Running {
    pub manager: Arc<Manager>,
    pub server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    /// The unlock key of a cluster just initialised with autolock, to show the operator once.
    pub new_unlock_key: Option<String>,
}

fn initial_state(
    identity: &Identity,
    hostname: &str,
    at: u64,
    spec: &ClusterSpec,
    security: shoal_types::ClusterSecurity,
) -> State {
    let mut state = State::default();
    let cluster = Cluster { id: identity.cluster_id.clone(), version: 0, created_at: at, spec: spec.clone() };
    state
        .apply(1, &Batch::new(at, vec![Action::InitCluster { cluster }, Action::InitSecurity { security }]))
        .expect("a new store accepts the cluster object");
    state.apply_membership(
        1,
        &MembershipChange {
            kind: MembershipKind::Promote,
            raft_id: identity.raft_id,
            node_id: identity.node_id.clone(),
            addr: identity.addr.clone(),
            hostname: hostname.to_string(),
            at,
        },
    );
    state
}

fn new_raft_id() -> u64 {
    loop {
        let id: u64 = rand::random();
        if id != 0 {
            return id;
        }
    }
}

/// What a manager brings back from joining.
struct Joined {
    identity: Identity,
    members: Members,
    credentials: shoal_tls::Credentials,
    /// The admin client bundle for `<data-dir>/admin/` (none from a leader that signs none).
    admin: Option<shoal_tls::Credentials>,
}

async fn join_cluster(config: &ManagerConfig, target: &str) -> Result<Joined, ManagerError> {
    let credentials = shoal_tls::join::obtain_certificate(target, config.token.as_deref(), shoal_tls::Role::Manager)
        .await
        .map_err(|e| ManagerError::Join(e.to_string()))?;
    let node_id = credentials.identity().map_err(|e| ManagerError::Join(e.to_string()))?.node_id;
    let tls = shoal_tls::NodeTls::new(&credentials).map_err(|e| ManagerError::Join(e.to_string()))?;
    let client_tls = tls.client_config().map_err(|e| ManagerError::Join(e.to_string()))?;
    let endpoint = tonic::transport::Endpoint::from_shared(shoal_tls::client::uri(target))
        .map_err(|e| ManagerError::Join(format!("--join {target}: not a valid address: {e}")))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30));
    let channel = shoal_tls::client::connect(endpoint, client_tls).await.map_err(|e| {
        ManagerError::Join(format!(
            "cannot reach the manager at {target} to join: {}",
            shoal_tls::join::error_chain(&e)
        ))
    })?;
    let mut client = ControlClient::new(channel);
    // The admin key is made here and never leaves this machine; the leader signs its CSR.
    let (admin_key_pem, admin_csr_pem) =
        shoal_tls::new_key_and_csr().map_err(|e| ManagerError::Join(format!("creating the admin key: {e}")))?;
    let unlock_key_sha256 = match (&config.unlock_key, config.autolock) {
        (Some(key), true) => at_rest::unlock_key_digest(key.expose()),
        _ => String::new(),
    };
    let request = JoinManagerRequest {
        node_id: node_id.clone(),
        addr: config.advertise_addr.clone(),
        hostname: config.hostname.clone(),
        admin_csr_pem,
        unlock_key_sha256,
    };
    // The same node id makes a retry idempotent; retry while the cluster is electing a leader.
    let mut attempts = 0;
    let response = loop {
        attempts += 1;
        match client.join_manager(request.clone()).await {
            Ok(response) => break response.into_inner(),
            Err(status) if status.code() == tonic::Code::Unavailable && attempts < 4 => {
                tracing::warn!(error = status.message(), "joining: the cluster has no leader yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(status) => {
                return Err(ManagerError::Join(format!("joining through {target} failed: {}", status.message())));
            }
        }
    };
    let members: Members = serde_json::from_str(&response.members_json)
        .map_err(|e| ManagerError::Join(format!("the leader sent an unreadable member list: {e}")))?;
    let admin = admin_bundle(&credentials, admin_key_pem, response.admin_cert_pem)?;
    Ok(Joined {
        identity: Identity::new(response.cluster_id, node_id, response.raft_id, config.advertise_addr.clone()),
        members,
        credentials,
        admin,
    })
}

/// The admin bundle made of the key this manager generated and the certificate the leader signed,
/// checked to be an admin certificate of this cluster's CA.
fn admin_bundle(
    node: &shoal_tls::Credentials,
    key_pem: String,
    cert_pem: String,
) -> Result<Option<shoal_tls::Credentials>, ManagerError> {
    if cert_pem.is_empty() {
        tracing::warn!(
            "the leader signed no admin bundle for this manager (an older version?); the CLI needs one copied from another manager"
        );
        return Ok(None);
    }
    let admin = shoal_tls::Credentials { ca_pem: node.ca_pem.clone(), cert_pem, key_pem };
    let identity = admin.identity().map_err(|e| ManagerError::Join(format!("the leader's admin certificate: {e}")))?;
    if identity.role != shoal_tls::Role::Admin {
        return Err(ManagerError::Join(format!(
            "the leader signed a {} certificate where an admin one was asked for",
            identity.role
        )));
    }
    // Loads key and certificate as the CLI's TLS setup will, so a bad bundle fails the join and
    // not the first CLI call on this machine.
    shoal_tls::NodeTls::new(&admin).map_err(|e| ManagerError::Join(format!("the leader's admin certificate: {e}")))?;
    Ok(Some(admin))
}

/// Starts a manager: initialises a cluster (empty data dir, no --join), joins one (--join), or
/// resumes from the data dir.
pub async fn start(config: ManagerConfig) -> Result<Running, ManagerError> {
    if config.advertise_addr.starts_with("0.0.0.0") || config.advertise_addr.starts_with("[::]") {
        return Err(ManagerError::Config(format!(
            "--advertise-addr is required when listening on {} (other managers need a routable address)",
            config.listen_addr
        )));
    }
    let data_dir = identity::inspect(&config.data_dir)?;
    // Bind first: a port in use must fail before anything is written.
    let listener = tokio::net::TcpListener::bind(config.listen_addr)
        .await
        .map_err(|e| ManagerError::Listen(config.listen_addr, e))?;
    let dashboard_listener = match config.dashboard_addr {
        Some(addr) => {
            dashboard::check_addr(addr).map_err(ManagerError::Config)?;
            Some(tokio::net::TcpListener::bind(addr).await.map_err(|e| ManagerError::Listen(addr, e))?)
        }
        None => None,
    };
    let metrics_listener = match config.metrics_addr {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|e| ManagerError::Listen(addr, e))?),
        None => None,
    };
    let tls_dir = config.data_dir.join(security::TLS_DIR);
    let mut new_unlock_key = None;
    let (identity, storage, credentials, data_key) = match data_dir {
        identity::DataDir::Existing(identity) => {
            if config.join.is_some() {
                tracing::warn!("the data dir already holds a manager; ignoring --join and resuming");
            }
            let unlock_key = config.unlock_key.as_ref().map(UnlockKey::expose);
            at_rest::finish_rotation(&config.data_dir, unlock_key)?;
            let data_key = at_rest::load(&config.data_dir, unlock_key)?;
            if config.autolock && !at_rest::is_autolocked(&config.data_dir) {
                tracing::warn!("--autolock applies when a data dir is first written; this one is not autolocked");
            }
            let credentials = shoal_tls::Credentials::load(&tls_dir)
                .map_err(|e| ManagerError::DataDir(format!("data dir {}: {e}", config.data_dir.display())))?
                .ok_or_else(|| {
                    ManagerError::DataDir(format!(
                        "data dir {}: {}/ is missing; this manager's certificate is gone (remove the manager and join a new one)",
                        config.data_dir.display(),
                        security::TLS_DIR
                    ))
                })?;
            (identity, identity::open_existing_raft(&config.data_dir, &data_key)?, credentials, data_key)
        }
        identity::DataDir::Empty => match &config.join {
            Some(target) => {
                match (&config.unlock_key, config.autolock) {
                    (None, true) => {
                        return Err(ManagerError::Config(
                            "--autolock with --join needs the cluster's --unlock-key (`shoal cluster unlock-key`)"
                                .into(),
                        ));
                    }
                    // A malformed key is refused before the cluster is asked.
                    (Some(key), true) => at_rest::check_unlock_key(key.expose())?,
                    _ => {}
                }
                let Joined { identity, members, credentials, admin } = join_cluster(&config, target).await?;
                let (data_key, _) = at_rest::create(
                    &config.data_dir,
                    config.autolock,
                    config.unlock_key.as_ref().map(UnlockKey::expose),
                )?;
                let mut storage = RaftStorage::open(identity::open_sled(&config.data_dir, &data_key)?)?;
                storage.seed_members(&members)?;
                credentials
                    .save(&tls_dir)
                    .map_err(|e| ManagerError::DataDir(format!("data dir {}: {e}", config.data_dir.display())))?;
                let copied = match &admin {
                    Some(admin) => {
                        security::install_admin_bundle(&config.data_dir, admin, config.admin_bundle_to_home)?
                    }
                    None => None,
                };
                identity::write(&config.data_dir, &identity)?;
                tracing::info!(
                    node = %identity.node_id,
                    raft_id = identity.raft_id,
                    admin_bundle = %admin.as_ref().map(|_| config.data_dir.join(security::ADMIN_DIR).display().to_string()).unwrap_or_else(|| "-".into()),
                    copied_to = %copied.map(|p| p.display().to_string()).unwrap_or_else(|| "-".into()),
                    "joined the cluster as a learner"
                );
                (identity, storage, credentials, data_key)
            }
            None => {
                let identity = Identity::new(
                    shoal_types::ids::new_id(),
                    shoal_types::ids::new_id(),
                    new_raft_id(),
                    config.advertise_addr.clone(),
                );
                let mut material = security::init_material(
                    &identity.cluster_id,
                    &identity.node_id,
                    config.cluster_spec.node_cert_expiry.as_std(),
                )?;
                let (data_key, unlock_key) = at_rest::create(&config.data_dir, config.autolock, None)?;
                // In the replicated (and sealed) state, so `cluster unlock-key` can show it.
                material.security.unlock_key = unlock_key.clone();
                new_unlock_key = unlock_key;
                let state =
                    initial_state(&identity, &config.hostname, now_millis(), &config.cluster_spec, material.security);
                let members: Members = [(
                    identity.raft_id,
                    Member {
                        node_id: identity.node_id.clone(),
                        addr: identity.addr.clone(),
                        hostname: config.hostname.clone(),
                    },
                )]
                .into_iter()
                .collect();
                let storage = shoal_raft::bootstrap(
                    identity::open_sled(&config.data_dir, &data_key)?,
                    &members,
                    &state.snapshot(),
                )?;
                material
                    .manager
                    .save(&tls_dir)
                    .map_err(|e| ManagerError::DataDir(format!("data dir {}: {e}", config.data_dir.display())))?;
                let copied =
                    security::install_admin_bundle(&config.data_dir, &material.admin, config.admin_bundle_to_home)?;
                identity::write(&config.data_dir, &identity)?;
                tracing::info!(
                    cluster = %identity.cluster_id,
                    node = %identity.node_id,
                    admin_bundle = %config.data_dir.join(security::ADMIN_DIR).display(),
                    copied_to = %copied.map(|p| p.display().to_string()).unwrap_or_else(|| "-".into()),
                    "initialised a new cluster"
                );
                (identity, storage, material.manager, data_key)
            }
        },
    };
    let tls = shoal_tls::NodeTls::new(&credentials).map_err(|e| ManagerError::Config(e.to_string()))?;
    let server_tls = tls.server_config().map_err(|e| ManagerError::Config(e.to_string()))?;
    let client_tls = tls.client_config().map_err(|e| ManagerError::Config(e.to_string()))?;

    let state = Arc::new(RwLock::new(State::default()));
    let (events, _) = broadcast::channel(4096);
    let removals = Arc::new(machine::RemovalLog::default());
    let router = Arc::new(router::ChangeRouter::default());
    let machine = StoreMachine {
        state: state.clone(),
        events: events.clone(),
        removals: removals.clone(),
        router: router.clone(),
    };
    let mut engine_config = EngineConfig::new(identity.raft_id);
    engine_config.election_tick = config.election_tick;
    engine_config.heartbeat_tick = config.heartbeat_tick;
    engine_config.snapshot_interval = config.snapshot_interval;
    let engine = shoal_raft::storage::catch_panic("restoring the raft state", || {
        Engine::open(engine_config, storage, machine, &shoal_raft::slog_logger())
    })
    .map_err(|e| identity::raft_error(&config.data_dir, e))?;
    let transport = GrpcTransport::new(identity.raft_id, client_tls.clone());
    let (raft, raft_thread) = shoal_raft::spawn(engine, transport.clone(), config.tick);
    transport.set_feedback(Arc::new(raft.clone()));

    let (shutdown, _) = watch::channel(false);
    let manager = Arc::new(Manager {
        identity: identity.clone(),
        config: config.clone(),
        tls: tls.clone(),
        client_tls,
        raft: raft.clone(),
        state,
        events,
        router,
        logs: Arc::new(logs::LogBroker::default()),
        removals,
        raft_thread: parking_lot::Mutex::new(Some(raft_thread)),
        shutdown,
        data_key,
        metrics: metrics::ManagerMetrics::new(raft.sync_stats()),
    });
    tokio::spawn(manager.clone().promote_learners());
    tokio::spawn(control_loop::run(manager.clone()));
    if let Some(listener) = metrics_listener {
        tracing::info!(addr = ?listener.local_addr().ok(), "serving metrics on /metrics");
        tokio::spawn(metrics::serve(manager.clone(), listener));
    }
    if let Some(listener) = dashboard_listener {
        tracing::info!(addr = ?listener.local_addr().ok(), "serving the dashboard");
        tokio::spawn(dashboard::serve(manager.clone(), listener));
    }
    tokio::spawn(renew_own_certificate(manager.clone(), tls_dir));
    let dispatcher = shoal_proto::v1::dispatcher_server::DispatcherServer::new(dispatcher::DispatcherApi(
        dispatcher::DispatcherService::new(manager.clone()),
    ))
    .max_decoding_message_size(shoal_proto::MAX_MESSAGE_BYTES)
    .max_encoding_message_size(shoal_proto::MAX_MESSAGE_BYTES);

    let raft_service = RaftTransportServer::new(RaftTransportService::new(identity.raft_id, raft))
        .max_decoding_message_size(shoal_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(shoal_proto::MAX_MESSAGE_BYTES);
    let control = ControlServer::new(api::ControlApi::new(manager.clone()))
        .max_decoding_message_size(shoal_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(shoal_proto::MAX_MESSAGE_BYTES);
    let mut stop = manager.shutdown.subscribe();
    // Every connection is TLS; what each caller may do is decided per call (auth.rs).
    let incoming = shoal_tls::server::incoming(listener, server_tls);
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(auth::AuthLayer::new(manager.clone()))
            // Pings find clients (agents, peers) whose connection died without a reset. The
            // timeout leaves a busy client (a CLI writing a burst of log lines on a loaded
            // machine) time to answer: a dead agent is found by its missed heartbeats anyway.
            .http2_keepalive_interval(Some(Duration::from_secs(2)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            // Paused log readers hold their streams' windows; the connection's fits 64 of them
            // before an agent's heartbeats on the same connection would wait.
            .initial_stream_window_size(logs::STREAM_WINDOW)
            .initial_connection_window_size(logs::CONNECTION_WINDOW)
            .add_service(raft_service)
            .add_service(control)
            .add_service(dispatcher)
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop.wait_for(|s| *s).await;
            }),
    );
    tracing::info!(addr = %config.listen_addr, node = %identity.node_id, raft_id = identity.raft_id, "manager serving");
    Ok(Running { manager, server, new_unlock_key })
}

/// A manager signs its own renewed certificate with the CA in its copy of the store (every
/// manager has it), so renewal works even while it cannot reach the leader.
async fn renew_own_certificate(manager: Arc<Manager>, dir: PathBuf) {
    let tls = manager.tls.clone();
    let renewing = shoal_tls::join::keep_renewed(tls.clone(), dir, |csr| {
        let signed = security::renew(&manager.state(), &tls.identity(), &csr).map_err(|e| e.to_string());
        std::future::ready(signed)
    });
    let mut stop = manager.shutdown.subscribe();
    tokio::select! {
        _ = renewing => {}
        _ = stop.wait_for(|s| *s) => {}
    }
}

/// The action's tag as it appears in the log, for log lines.
fn action_name(action: &Action) -> &'static str {
    match action {
        Action::PutTask { .. } => "put_task",
        Action::DeleteTasks { .. } => "delete_tasks",
        Action::SetTaskStatus { .. } => "set_task_status",
        Action::SetUpdateStatus { .. } => "set_update_status",
        _ => "other",
    }
}

#[cfg(test)]
mod pack_tests {
    use super::*;

    fn delete(n: usize, id_len: usize) -> Action {
        Action::DeleteTasks { ids: (0..n).map(|i| format!("{i:0id_len$}")).collect() }
    }

    #[test]
    fn entries_stay_under_the_limit_and_keep_order() {
        // 400 actions of about 10 KB: about 150 fit an entry.
        let actions: Vec<Action> = (0..400).map(|_| delete(400, 24)).collect();
        let packed = pack_entries(actions.clone());
        assert!(packed.too_large.is_empty());
        assert!(packed.entries.len() >= 3, "{} entries", packed.entries.len());
        for entry in &packed.entries {
            let batch = Batch::new(u64::MAX, entry.clone());
            assert!(serde_json::to_vec(&batch).unwrap().len() <= MAX_ENTRY_BYTES);
        }
        assert_eq!(packed.entries.concat(), actions);
    }

    #[test]
    fn an_action_over_the_limit_alone_is_set_apart_with_its_size() {
        let huge = delete(70_000, 24);
        let size = serde_json::to_vec(&huge).unwrap().len();
        let packed = pack_entries(vec![delete(1, 24), huge.clone(), delete(2, 24)]);
        assert_eq!(packed.too_large, vec![(huge, size)]);
        assert_eq!(packed.entries, vec![vec![delete(1, 24), delete(2, 24)]]);
    }

    /// Entries are cut only between steps: however the sizes fall, a step's actions share an
    /// entry, and the order is kept.
    #[test]
    fn a_step_is_never_split_across_entries() {
        // Steps of one to three actions of about 10 KB: an entry holds about 150 actions, so
        // many steps sit where a cut by action would fall.
        let steps: Vec<Vec<Action>> = (0..300).map(|i| (0..=(i % 3)).map(|_| delete(400, 24)).collect()).collect();
        let packed = pack_steps(steps.clone());
        assert!(packed.too_large.is_empty() && packed.entries.len() >= 4, "{} entries", packed.entries.len());
        let mut rest = packed.entries.iter().map(Vec::len);
        let mut room = rest.next().expect("an entry");
        for step in &steps {
            if room == 0 {
                room = rest.next().expect("another entry");
            }
            assert!(step.len() <= room, "a step of {} actions was split ({room} left in its entry)", step.len());
            room -= step.len();
        }
        assert_eq!(packed.entries.concat(), steps.concat());
        for entry in &packed.entries {
            assert!(serde_json::to_vec(&Batch::new(u64::MAX, entry.clone())).unwrap().len() <= MAX_ENTRY_BYTES);
        }
    }
}
