//! The ingress proxy: a TCP listener on this node's ingress address for every published ingress
//! port in the cluster. Each new connection goes to one of the port's backends (running, healthy
//! tasks on any node), chosen by the power of two choices on open connections; a backend that
//! refuses the connection is skipped for another (nothing has been sent yet). Connections are
//! counted per task and reported to the leader, which says when a draining task has none left.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use shoal_types::traffic::{Backend, Listener, ListenerKey};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};

/// Open connections one published port takes on this node; more are closed at once (with a log
/// line), so no flood of clients can exhaust the agent's file descriptors.
pub const MAX_CONNECTIONS_PER_PORT: usize = 4096;
/// How long connecting to one backend may take before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a port that could not be bound is tried again: soon at first (a port closed and
/// opened again at once may still be held by the listener being dropped), then every 2 s.
const REBIND_FIRST: Duration = Duration::from_millis(20);
const REBIND_EVERY: Duration = Duration::from_secs(2);
/// At most one "connection limit reached" line per port in this period.
const LIMIT_LOG_EVERY: Duration = Duration::from_secs(10);
/// File descriptors kept for the agent's own work (its sessions, the engine, containers' logs)
/// when the proxies' share is worked out from the open-files limit.
const RESERVED_FDS: u64 = 512;
/// TCP keepalive on proxied connections, so a peer that vanished (a client's machine gone, a
/// cable pulled) releases its connection, and a draining task, within a couple of minutes.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// Raises this process's open-files limit to its hard limit (proxied connections take two
/// descriptors each); returns the soft limit in force.
pub fn raise_open_files_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if let (Some(current), Some(hard)) = (limit.current, limit.maximum)
        && current < hard
    {
        limit.current = Some(hard);
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(error = %e, current, hard, "cannot raise the open-files limit");
            return current;
        }
        tracing::info!(from = current, to = hard, "raised the open-files limit for the ingress proxy");
        return hard;
    }
    limit.current.unwrap_or(u64::MAX)
}

/// Proxied connections this process can hold at once under its open-files limit, all ports
/// together.
fn connection_budget() -> usize {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(1 << 20);
    usize::try_from(soft.saturating_sub(RESERVED_FDS) / 2).unwrap_or(usize::MAX).clamp(16, 1 << 20)
}

fn keep_alive(stream: &TcpStream) {
    let keepalive = socket2::TcpKeepalive::new().with_time(KEEPALIVE_IDLE).with_interval(KEEPALIVE_INTERVAL);
    let _ = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive);
}

/// The backends of one port, swapped whole when the leader sends a new set.
type Backends = Arc<RwLock<Arc<Vec<Backend>>>>;

struct Port {
    backends: Backends,
    service: Arc<RwLock<String>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Port {
    /// Closes the listener; connections already proxied carry on.
    fn drop(&mut self) {
        self.accept.abort();
    }
}

pub struct Ingress {
    addr: IpAddr,
    /// Open connections one port takes on this node ([`MAX_CONNECTIONS_PER_PORT`]).
    max_per_port: usize,
    /// Open connections all ports take together (from the open-files limit).
    total: Arc<Semaphore>,
    total_limit: usize,
    node_id: String,
    ports: Mutex<HashMap<ListenerKey, Port>>,
    /// Open proxied connections per task.
    connections: Arc<Mutex<HashMap<String, u32>>>,
    /// Signalled when a count changes, so the agent reports it.
    pub counts_changed: Arc<Notify>,
    /// The table version the proxies use.
    version: Mutex<u64>,
    /// Draining tasks of this node that the leader says no proxy holds a connection to.
    drained: watch::Sender<HashSet<String>>,
    /// What the proxies carried, for the agent's metrics.
    pub stats: IngressStats,
    /// The virtual IPs the listeners use, on this host's loopback interface.
    vips: Arc<crate::vip::Vips>,
}

/// A stream whose reads add to a counter (the proxy's bytes, as they pass).
struct CountingStream<'a, S> {
    inner: &'a mut S,
    read: &'a std::sync::atomic::AtomicU64,
}

impl<'a, S> CountingStream<'a, S> {
    fn reads(inner: &'a mut S, read: &'a std::sync::atomic::AtomicU64) -> Self {
        CountingStream { inner, read }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for CountingStream<'_, S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut *self.inner).poll_read(cx, buf);
        let read = buf.filled().len().saturating_sub(before) as u64;
        if read > 0 {
            self.read.fetch_add(read, std::sync::atomic::Ordering::Relaxed);
        }
        polled
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for CountingStream<'_, S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut *self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

/// Counts of the proxies' work since the agent started.
#[derive(Debug, Default)]
pub struct IngressStats {
    /// Connections carried to a backend.
    pub carried: std::sync::atomic::AtomicU64,
    /// Connections closed at once: a connection limit, or no backend took it.
    pub refused: std::sync::atomic::AtomicU64,
    /// Bytes from clients to backends, and back.
    pub bytes_in: std::sync::atomic::AtomicU64,
    pub bytes_out: std::sync::atomic::AtomicU64,
}

impl Ingress {
    pub fn new(addr: IpAddr, node_id: String) -> Arc<Ingress> {
        Ingress::with_limit(addr, node_id, MAX_CONNECTIONS_PER_PORT)
    }

    /// An ingress whose ports take at most `max_per_port` open connections each.
    pub fn with_limit(addr: IpAddr, node_id: String, max_per_port: usize) -> Arc<Ingress> {
        let total_limit = connection_budget();
        Arc::new(Ingress {
            addr,
            max_per_port,
            total: Arc::new(Semaphore::new(total_limit)),
            total_limit,
            node_id,
            ports: Mutex::new(HashMap::new()),
            connections: Arc::default(),
            counts_changed: Arc::new(Notify::new()),
            version: Mutex::new(0),
            drained: watch::Sender::new(HashSet::new()),
            stats: IngressStats::default(),
            vips: Arc::default(),
        })
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// Applies the leader's update: binds new ports, swaps backend sets, closes ports no longer
    /// published (a complete update closes every port it does not list).
    pub fn apply(
        self: &Arc<Self>,
        version: u64,
        complete: bool,
        listeners: Vec<Listener>,
        closed: &[ListenerKey],
        drained: Vec<String>,
        vip_pool: Option<(u32, u32)>,
    ) {
        {
            let mut ports = self.ports.lock();
            let mut gone: Vec<ListenerKey> = Vec::new();
            if complete {
                let keep: HashSet<ListenerKey> = listeners.iter().map(Listener::key).collect();
                gone.extend(ports.keys().filter(|k| !keep.contains(*k)).cloned());
            }
            gone.extend(closed.iter().cloned());
            for key in gone {
                if ports.remove(&key).is_some() {
                    tracing::info!(listener = %key, "ingress port closed");
                }
            }
            for listener in listeners {
                match ports.get(&listener.key()) {
                    Some(port) => {
                        *port.backends.write() = Arc::new(listener.backends);
                        *port.service.write() = listener.service;
                    }
                    None => {
                        let key = listener.key();
                        let backends: Backends = Arc::new(RwLock::new(Arc::new(listener.backends)));
                        let service = Arc::new(RwLock::new(listener.service));
                        let accept = tokio::spawn(self.clone().serve(key.clone(), backends.clone(), service.clone()));
                        ports.insert(key, Port { backends, service, accept });
                    }
                }
            }
            // A virtual IP goes with its last listener (after the new ones are in: one moved
            // to another port stays).
            let wanted: HashSet<String> =
                ports.keys().filter(|k| !k.address.is_empty()).map(|k| k.address.clone()).collect();
            if !wanted.is_empty() || vip_pool.is_some() || self.vips.wants_any() {
                self.vips.want(wanted, vip_pool, complete);
            }
        }
        *self.version.lock() = version;
        if complete {
            self.drained.send_replace(drained.into_iter().collect());
        } else if !drained.is_empty() {
            self.drained.send_modify(|set| set.extend(drained));
        }
    }

    /// Whether a leader ever sent this proxy a table (one that does not serve them, of an older
    /// version, never says a task is drained: its tasks are not drained then).
    pub fn active(&self) -> bool {
        *self.version.lock() > 0
    }

    /// Whether a table arrives within `limit` (at once if one did already).
    pub async fn wait_active(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.active() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }

    /// The table version in use and the open connections per task.
    pub fn report(&self) -> (u64, HashMap<String, u32>) {
        let version = *self.version.lock();
        let connections =
            self.connections.lock().iter().filter(|(_, n)| **n > 0).map(|(t, n)| (t.clone(), *n)).collect();
        (version, connections)
    }

    /// Resolves once the leader says `task` has no proxied connection left on any node.
    pub async fn wait_drained(&self, task: &str) {
        let mut drained = self.drained.subscribe();
        let _ = drained.wait_for(|set| set.contains(task)).await;
    }

    /// Forgets the drained mark of a task that has stopped.
    pub fn forget(&self, task: &str) {
        self.drained.send_if_modified(|set| set.remove(task));
    }

    /// Open proxied connections to `task` from this node.
    pub fn connections_to(&self, task: &str) -> u32 {
        self.connections.lock().get(task).copied().unwrap_or(0)
    }

    /// Accepts connections on `port` for as long as the port is published (binding again until
    /// it succeeds: the port may be in use for a while, e.g. by an agent that is stopping).
    async fn serve(self: Arc<Self>, key: ListenerKey, backends: Backends, service: Arc<RwLock<String>>) {
        let port = key.port;
        let addr = if key.address.is_empty() {
            self.addr
        } else {
            match key.address.parse::<IpAddr>() {
                Ok(vip) => vip,
                Err(_) => {
                    tracing::error!(listener = %key, "unreadable virtual IP; not listening");
                    return;
                }
            }
        };
        let at = SocketAddr::new(addr, port);
        let mut wait = REBIND_FIRST;
        let listener = loop {
            if !key.address.is_empty() && self.vips.claim(&key.address).await.is_err() {
                tokio::time::sleep(REBIND_EVERY).await;
                continue;
            }
            // A virtual IP's listener shares its port with the ingress listener on all addresses
            // and with the other agents of this host; a published port on a specific address
            // is this agent's alone (a second agent on it must not split its traffic).
            let shared = !key.address.is_empty() || self.addr.is_unspecified();
            match bind(at, shared) {
                Ok(listener) => break listener,
                Err(e) => {
                    if wait >= REBIND_EVERY {
                        tracing::error!(addr = %at, service = %service.read(), error = %e, "cannot listen on an ingress port; retrying");
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(REBIND_EVERY);
                }
            }
        };
        tracing::info!(addr = %at, service = %service.read(), "ingress port open");
        let limit = Arc::new(Semaphore::new(self.max_per_port));
        let mut last_limit_log: Option<tokio::time::Instant> = None;
        loop {
            let (client, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(addr = %at, error = %e, "accepting an ingress connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let permits =
                limit.clone().try_acquire_owned().and_then(|port| Ok((port, self.total.clone().try_acquire_owned()?)));
            let Ok(permit) = permits else {
                if last_limit_log.is_none_or(|t| t.elapsed() >= LIMIT_LOG_EVERY) {
                    last_limit_log = Some(tokio::time::Instant::now());
                    tracing::warn!(
                        addr = %at,
                        service = %service.read(),
                        port_limit = self.max_per_port,
                        node_limit = self.total_limit,
                        "ingress connection limit reached on this node; closing new connections until some end"
                    );
                }
                drop(client);
                self.stats.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                continue;
            };
            let proxy = self.clone();
            let backends = backends.clone();
            tokio::spawn(async move {
                proxy.carry(client, peer, port, backends).await;
                drop(permit);
            });
        }
    }

    /// Connects `client` to a backend and copies bytes both ways until both sides are done.
    async fn carry(&self, client: TcpStream, peer: SocketAddr, port: u16, backends: Backends) {
        let candidates = backends.read().clone();
        // A backend weighing 0 (a route's service with no share) takes no connection.
        let mut untried: Vec<&Backend> = candidates.iter().filter(|b| b.weight > 0).collect();
        let mut upstream = None;
        while !untried.is_empty() {
            let pick = self.choose(&untried);
            let backend = untried.swap_remove(pick);
            let target = backend.address_from(&self.node_id);
            // Counted from before the connect: a report sent while it is under way must not let
            // the leader think the task has no connection (and stop it under this one).
            let counted = Counted::new(self.connections.clone(), self.counts_changed.clone(), backend.task_id.clone());
            // Counted now, the task must still be a backend: a table applied (and reported)
            // since the pick may have removed it, and its drain may be over already.
            if !backends.read().iter().any(|b| b.task_id == backend.task_id) {
                continue;
            }
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await {
                Ok(Ok(stream)) => {
                    upstream = Some((stream, counted));
                    break;
                }
                Ok(Err(e)) => {
                    tracing::debug!(port, task = %backend.task_id, target, error = %e, "backend refused; trying another")
                }
                Err(_) => {
                    tracing::debug!(port, task = %backend.task_id, target, "backend did not answer; trying another")
                }
            }
        }
        let Some((mut server, _counted)) = upstream else {
            tracing::debug!(port, client = %peer, backends = candidates.len(), "no backend took the connection; closing it");
            self.stats.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        };
        self.stats.carried.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        keep_alive(&client);
        keep_alive(&server);
        let mut client = client;
        // Each direction ends on its own (a half-close is passed on). On an error (one side
        // reset, or the task stopped at its drain timeout) both are reset, so the other side does
        // not mistake a cut answer for a whole one.
        // Counted as the bytes go, so a connection that is reset or held open counts too.
        let copied = {
            let mut client = CountingStream::reads(&mut client, &self.stats.bytes_in);
            let mut server = CountingStream::reads(&mut server, &self.stats.bytes_out);
            tokio::io::copy_bidirectional(&mut client, &mut server).await
        };
        if copied.is_err() {
            #[allow(deprecated)] // tokio deprecates set_linger only for its blocking close; a reset is the point here
            {
                let _ = client.set_linger(Some(Duration::ZERO));
                let _ = server.set_linger(Some(Duration::ZERO));
            }
        }
    }

    /// The power of two choices: of two random candidates, the one with fewer open connections
    /// from this node. Candidates of different weights (a route's shares) are drawn with
    /// probability proportional to their weight instead.
    fn choose(&self, candidates: &[&Backend]) -> usize {
        if candidates.len() == 1 {
            return 0;
        }
        if candidates.iter().any(|b| b.weight != candidates[0].weight) {
            let total: u64 = candidates.iter().map(|b| u64::from(b.weight)).sum();
            let mut draw = rand::random::<u64>() % total.max(1);
            for (i, backend) in candidates.iter().enumerate() {
                let weight = u64::from(backend.weight);
                if draw < weight {
                    return i;
                }
                draw -= weight;
            }
            return candidates.len() - 1;
        }
        let a = rand::random::<usize>() % candidates.len();
        let mut b = rand::random::<usize>() % (candidates.len() - 1);
        if b >= a {
            b += 1;
        }
        let counts = self.connections.lock();
        let load = |i: usize| counts.get(&candidates[i].task_id).copied().unwrap_or(0);
        if load(b) < load(a) { b } else { a }
    }
}

/// A listener on `at`; `shared`: one that other listeners on the same port may share (a virtual
/// IP's listener beside the ingress listener on all addresses, and the proxies of several agents
/// on one host on one virtual IP: the kernel spreads connections among them, and each goes to
/// the same tasks).
fn bind(at: SocketAddr, shared: bool) -> std::io::Result<TcpListener> {
    let socket = if at.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(shared)?;
    socket.bind(at)?;
    socket.listen(1024)
}

/// One open proxied connection, counted against its task until dropped.
struct Counted {
    connections: Arc<Mutex<HashMap<String, u32>>>,
    changed: Arc<Notify>,
    task: String,
}

impl Counted {
    fn new(connections: Arc<Mutex<HashMap<String, u32>>>, changed: Arc<Notify>, task: String) -> Counted {
        *connections.lock().entry(task.clone()).or_default() += 1;
        changed.notify_one();
        Counted { connections, changed, task }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut connections = self.connections.lock();
        if let Some(n) = connections.get_mut(&self.task) {
            *n -= 1;
            if *n == 0 {
                connections.remove(&self.task);
            }
        }
        self.changed.notify_one();
    }
}

#[cfg(test)]
mod tests;
