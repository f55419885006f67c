//! The control API. Every call is served by the leader (as in Swarm): a follower forwards it, so a
//! client may talk to any manager and always sees every acknowledged write.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use shoal_proto::v1::control_client::ControlClient;
use shoal_proto::v1::control_server::Control;
use shoal_proto::v1::*;
use shoal_raft::{Member, MemberChange, MemberChangeKind, ProposeError, RaftRole, RaftStatus};
use shoal_store::{Action, Origin, State};
use shoal_types::traffic::{Route as TrafficRoute, RouteSpec};
use shoal_types::{
    ClusterInfo, DataKind, DataObject, DataSpec, ManagerRef, Node, NodeState, RaftSummary, Service, ServiceSpec, Task,
};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::{ApiError, Manager, now_millis};

/// Set on calls a follower forwarded, so they are never forwarded twice.
const FORWARDED: &str = "x-shoal-forwarded";
/// Set by a forwarding manager: who called it (`<role> <node id>`), so the leader checks the
/// original caller, not the forwarder.
const FORWARDED_FOR: &str = "x-shoal-forwarded-for";

/// Whether `request` was forwarded by another manager. The marker counts only on a call made
/// with a manager's certificate: an admin or anyone else setting it is ignored, since it makes
/// the leader take the caller's identity from the forwarder.
fn forwarded<T>(request: &Request<T>) -> bool {
    request.metadata().contains_key(FORWARDED)
        && crate::auth::peer(request).is_some_and(|p| p.role == shoal_tls::Role::Manager)
}

/// Who made the call: its certificate's identity, or for a call a manager forwarded, the
/// identity the forwarding manager names. `None` for a call without a certificate.
fn caller<T>(request: &Request<T>) -> Option<(shoal_tls::Role, String)> {
    if forwarded(request) {
        let value = request.metadata().get(FORWARDED_FOR)?.to_str().ok()?;
        let (role, node_id) = value.split_once(' ')?;
        return Some((shoal_tls::Role::parse(role)?, node_id.to_string()));
    }
    crate::auth::peer(request).map(|p| (p.role, p.node_id.clone()))
}
/// The caller's identity as a revision records it: `role:node-id`, empty without a certificate.
fn caller_name<T>(request: &Request<T>) -> String {
    caller(request).map(|(role, node_id)| format!("{role}:{node_id}")).unwrap_or_default()
}

/// Who and why, for the revisions a write makes, and the id of the rollout it starts; a cause
/// over the limit or a malformed id is refused.
fn origin(by: String, cause: String, rollout_id: String) -> Result<Origin, ApiError> {
    let most = shoal_types::limits::MAX_CHANGE_CAUSE_BYTES;
    if cause.len() > most {
        return Err(ApiError::InvalidArgument(format!("change cause: {} bytes, at most {most}", cause.len())));
    }
    if !rollout_id.is_empty() {
        shoal_types::validate_rollout_id(&rollout_id)
            .map_err(|why| ApiError::InvalidArgument(format!("rollout id {rollout_id:?}: {why}")))?;
    }
    Ok(Origin { by, cause, rollout_id })
}

/// How long a call waits for a leader to be elected (or to become ready) before giving up.
const LEADER_WAIT: Duration = Duration::from_secs(5);
/// Log lines about refused joins (IssueNodeCertificate): at most one a second.
static JOIN_REFUSED: shoal_tls::server::LogThrottle = shoal_tls::server::LogThrottle::per_second();

pub struct ControlApi {
    manager: Arc<Manager>,
    clients: Mutex<HashMap<String, ControlClient<Channel>>>,
    /// Connections to the leader for forwarded log streams only: a reader that pauses holds
    /// its stream's flow-control window, which must not hold up forwarded calls.
    log_clients: Mutex<HashMap<String, ControlClient<Channel>>>,
    /// Stack deploys and rollbacks, one at a time: each plans against what the one before wrote.
    stack_writes: tokio::sync::Mutex<()>,
}

enum Route {
    Local,
    Forward(ControlClient<Channel>, String),
}

fn no_leader_message(st: &RaftStatus) -> String {
    format!(
        "no leader is available (this manager knows {} of {} managers; a majority must be running and connected); retry",
        if st.leader_id == 0 { "no leader" } else { "a leader but cannot reach it" },
        st.voters.len().max(1)
    )
}

impl ControlApi {
    pub fn new(manager: Arc<Manager>) -> Self {
        ControlApi {
            manager,
            clients: Mutex::new(HashMap::new()),
            log_clients: Mutex::new(HashMap::new()),
            stack_writes: tokio::sync::Mutex::new(()),
        }
    }

    /// How this manager dials the leader to forward a call.
    fn leader_endpoint(addr: &str) -> Result<tonic::transport::Endpoint, tonic::transport::Error> {
        Ok(tonic::transport::Endpoint::from_shared(shoal_tls::client::uri(addr))?
            .connect_timeout(Duration::from_secs(1))
            // A forward over a connection that died silently fails within seconds instead of
            // waiting forever.
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(2))
            .keep_alive_while_idle(true))
    }

    async fn client(&self, addr: &str) -> Result<ControlClient<Channel>, tonic::transport::Error> {
        if let Some(client) = self.clients.lock().get(addr) {
            return Ok(client.clone());
        }
        let endpoint = Self::leader_endpoint(addr)?;
        let channel = shoal_tls::client::connect(endpoint, self.manager.client_tls.clone()).await?;
        let client = ControlClient::new(channel)
            .max_decoding_message_size(shoal_proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(shoal_proto::MAX_MESSAGE_BYTES);
        self.clients.lock().insert(addr.to_string(), client.clone());
        Ok(client)
    }

    /// Decides whether this manager serves the call or forwards it to the leader, waiting out an
    /// election if there is no leader right now.
    async fn route<T>(&self, request: &Request<T>) -> Result<Route, Status> {
        let forwarded = forwarded(request);
        let deadline = tokio::time::Instant::now() + LEADER_WAIT;
        let mut rx = self.manager.watch_raft();
        loop {
            let st = rx.borrow_and_update().clone();
            if st.removed {
                return Err(ApiError::Unavailable("this manager was removed from the cluster".into()).into());
            }
            if st.role == RaftRole::Leader {
                if st.leader_ready {
                    return Ok(Route::Local);
                }
            } else if st.leader_id != 0
                && !forwarded
                && let Some(Member { addr, .. }) = st.members.get(&st.leader_id)
            {
                match self.client(addr).await {
                    Ok(client) => return Ok(Route::Forward(client, addr.clone())),
                    Err(e) => tracing::debug!(leader = st.leader_id, addr, error = %e, "leader unreachable; waiting"),
                }
            }
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return Err(ApiError::Unavailable(no_leader_message(&st)).into());
            }
            let _ = tokio::time::timeout(remaining.min(Duration::from_millis(200)), rx.changed()).await;
        }
    }

    fn forget(&self, addr: &str) {
        self.clients.lock().remove(addr);
        self.log_clients.lock().remove(addr);
    }

    /// The connection forwarded log streams to the leader at `addr` share. Its connection
    /// window is far larger than a stream's, so many paused readers fit before it fills.
    async fn log_client(&self, addr: &str) -> Result<ControlClient<Channel>, tonic::transport::Error> {
        if let Some(client) = self.log_clients.lock().get(addr) {
            return Ok(client.clone());
        }
        let endpoint = Self::leader_endpoint(addr)?
            .initial_stream_window_size(crate::logs::STREAM_WINDOW)
            .initial_connection_window_size(crate::logs::CONNECTION_WINDOW);
        let channel = shoal_tls::client::connect(endpoint, self.manager.client_tls.clone()).await?;
        let client = ControlClient::new(channel)
            .max_decoding_message_size(shoal_proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(shoal_proto::MAX_MESSAGE_BYTES);
        self.log_clients.lock().insert(addr.to_string(), client.clone());
        Ok(client)
    }

    fn find_service<'a>(state: &'a State, reference: &str) -> Result<&'a Service, ApiError> {
        // Ids and names are indexed (and a name is unique), so only an id prefix needs a scan.
        if let Some(service) = state.service(reference).or_else(|| state.service_by_name(reference)) {
            return Ok(service);
        }
        find(state.services(), reference, |s| &s.id, |s| &s.spec.name).map_err(|e| e.for_kind("service", reference))
    }

    fn find_node<'a>(state: &'a State, reference: &str) -> Result<&'a Node, ApiError> {
        find(state.nodes(), reference, |n| &n.id, |n| &n.description.hostname)
            .map_err(|e| e.for_kind("node", reference))
    }

    /// Fills in what only the leader knows: which managers are reachable.
    fn present_node(&self, mut node: Node, st: &RaftStatus) -> Node {
        if let Some(manager) = node.manager.as_mut() {
            manager.leader = manager.raft_id == st.leader_id;
            let reachable = manager.leader || st.progress.get(&manager.raft_id).is_some_and(|p| p.recent_active);
            manager.reachability = Some(
                if manager.leader {
                    "leader"
                } else if st.learners.contains(&manager.raft_id) {
                    if reachable { "joining" } else { "unreachable" }
                } else if reachable {
                    "reachable"
                } else {
                    "unreachable"
                }
                .to_string(),
            );
            node.status.state = if reachable { NodeState::Ready } else { NodeState::Down };
            node.status.addr = manager.addr.clone();
        }
        node
    }

    /// A spec as the client sent it, checked on its own and against the cluster's limits.
    fn parse_spec(&self, json: &str) -> Result<ServiceSpec, ApiError> {
        let spec: ServiceSpec =
            serde_json::from_str(json).map_err(|e| ApiError::InvalidArgument(format!("invalid service spec: {e}")))?;
        spec.validate().map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
        let state = self.manager.state();
        if let Some(cluster) = state.cluster() {
            spec.validate_against(&cluster.spec).map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
        }
        // Unknown secrets and configs are refused before anything is written.
        for (list, references) in [("secrets", &spec.task.container.secrets), ("configs", &spec.task.container.configs)]
        {
            let kind = if list == "secrets" { DataKind::Secret } else { DataKind::Config };
            for (i, reference) in references.iter().enumerate() {
                if state.data_by_name(kind, &reference.source).is_none() {
                    return Err(ApiError::NotFound(format!(
                        "task.container.{list}[{i}]: {kind} {} not found (create it first: shoal {kind} create {} FILE)",
                        reference.source, reference.source
                    )));
                }
            }
        }
        for (i, network) in spec.task.networks.iter().enumerate() {
            if state.data_by_name(DataKind::Network, network).is_none() {
                return Err(ApiError::NotFound(format!(
                    "task.networks[{i}]: network {network} not found (create it first: shoal network create {network})"
                )));
            }
        }
        drop(state);
        Ok(spec)
    }

    /// The stack's newest revision (just written), without its services' specs.
    fn stack_response(&self, stack: &str, warnings: Vec<String>) -> Result<StackResponse, ApiError> {
        let state = self.manager.state();
        let revision = state
            .stack_revisions(stack)
            .last()
            .ok_or_else(|| ApiError::Internal(format!("the revision of stack {stack} vanished")))?;
        Ok(StackResponse { revision_json: to_json(&revision.without_specs()), warnings })
    }

    fn kind(text: &str) -> Result<DataKind, ApiError> {
        DataKind::parse(text).ok_or_else(|| {
            ApiError::InvalidArgument(format!("kind {text:?}: expected \"secret\", \"config\" or \"network\""))
        })
    }

    fn route_spec(json: &str) -> Result<RouteSpec, ApiError> {
        let spec: RouteSpec =
            serde_json::from_str(json).map_err(|e| ApiError::InvalidArgument(format!("invalid route spec: {e}")))?;
        spec.validate().map_err(|e| ApiError::InvalidArgument(format!("route {}: {e}", spec.name)))?;
        Ok(spec)
    }

    fn find_route<'a>(state: &'a State, reference: &str) -> Result<&'a TrafficRoute, ApiError> {
        if let Some(found) = state.route_by_name(reference) {
            return Ok(found);
        }
        find(state.routes(), reference, |r| &r.id, |r| &r.spec.name).map_err(|e| e.for_kind("route", reference))
    }

    fn find_data<'a>(state: &'a State, kind: DataKind, reference: &str) -> Result<&'a DataObject, ApiError> {
        if let Some(found) = state.data_by_name(kind, reference) {
            return Ok(found);
        }
        find(state.data_objects(kind), reference, |d| &d.id, |d| &d.spec.name)
            .map_err(|e| e.for_kind(kind.as_str(), reference))
    }

    fn local_info(&self) -> Result<ClusterInfo, ApiError> {
        let st = self.manager.raft_status();
        let state = self.manager.state();
        let cluster = state
            .cluster()
            .ok_or_else(|| ApiError::Unavailable("this manager has not received the cluster state yet".into()))?;
        let leader = st.members.get(&st.leader_id).map(|m| ManagerRef {
            node_id: m.node_id.clone(),
            raft_id: st.leader_id,
            addr: m.addr.clone(),
        });
        Ok(ClusterInfo {
            cluster_id: cluster.id.clone(),
            created_at: cluster.created_at,
            leader,
            answered_by: None,
            managers: st.members.len(),
            services: state.services().count(),
            tasks: state.tasks().count(),
            raft: RaftSummary {
                term: st.term,
                commit: st.commit,
                applied: st.applied,
                voters: st.voters.clone(),
                learners: st.learners.clone(),
                snapshot_index: st.snapshot_index,
                snapshot_bytes: st.snapshot_bytes,
            },
            spec: Some(cluster.spec.clone()),
        })
    }

    async fn demote_local(&self, node: Node) -> Result<Node, ApiError> {
        let Some(info) = node.manager.clone() else {
            return Err(ApiError::FailedPrecondition(format!("node {} is not a manager", node.id)));
        };
        let st = self.manager.raft_status();
        let target = info.raft_id;
        if st.voters.contains(&target) {
            if st.voters.len() == 1 {
                return Err(ApiError::FailedPrecondition(
                    "attempting to demote the last manager of the cluster".into(),
                ));
            }
            let remaining: Vec<u64> = st.voters.iter().copied().filter(|v| *v != target).collect();
            let reachable = remaining
                .iter()
                .filter(|v| **v == st.id || st.progress.get(v).is_some_and(|p| p.recent_active))
                .count();
            if reachable < remaining.len() / 2 + 1 {
                return Err(ApiError::FailedPrecondition(
                    "can't remove member from the raft: this would result in a loss of quorum".into(),
                ));
            }
        }
        let member = st.members.get(&target).cloned().unwrap_or_default();
        self.manager
            .change_members(MemberChange { kind: MemberChangeKind::Remove, raft_id: target, member, at: now_millis() })
            .await?;
        let state = self.manager.state();
        Ok(state.node(&node.id).cloned().unwrap_or(node))
    }
}

enum FindError {
    None,
    Ambiguous(usize),
}

impl FindError {
    fn for_kind(self, kind: &str, reference: &str) -> ApiError {
        match self {
            FindError::None => ApiError::NotFound(format!("{kind} {reference} not found")),
            FindError::Ambiguous(n) => {
                ApiError::InvalidArgument(format!("{kind} {reference} is ambiguous ({n} matches); use more of the id"))
            }
        }
    }
}

/// Resolves an exact id, then an exact name, then a unique id prefix (as docker does).
fn find<'a, T: 'a>(
    items: impl Iterator<Item = &'a T>,
    reference: &str,
    id: impl Fn(&T) -> &String,
    name: impl Fn(&T) -> &String,
) -> Result<&'a T, FindError> {
    let items: Vec<&T> = items.collect();
    if reference.is_empty() {
        return Err(FindError::None);
    }
    if let Some(found) = items.iter().find(|i| id(i) == reference) {
        return Ok(found);
    }
    let by_name: Vec<_> = items.iter().filter(|i| name(i) == reference).collect();
    match by_name.len() {
        1 => return Ok(by_name[0]),
        n if n > 1 => return Err(FindError::Ambiguous(n)),
        _ => {}
    }
    let by_prefix: Vec<_> = items.iter().filter(|i| id(i).starts_with(reference)).collect();
    match by_prefix.len() {
        0 => Err(FindError::None),
        1 => Ok(by_prefix[0]),
        n => Err(FindError::Ambiguous(n)),
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("objects serialise")
}

/// Whether a forwarded call may be sent again after the leader went away in the middle of it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// A read: sending it again is harmless.
    Always,
    /// A write: sent again only if the leader cannot have received it.
    IfNeverSent,
}

/// Serves the call here, or forwards it to the leader with the same request. When the leader
/// goes away (killed, partitioned) the call is routed again once a new leader is known, within
/// the usual wait: always for a read, and for a write only if it never left this manager. A
/// write that was cut off in flight may have been applied, so it is not repeated behind the
/// caller's back; the caller gets `Unavailable` saying so.
macro_rules! routed {
    ($self:ident, $request:ident, $method:ident, $retry:expr, $local:expr) => {{
        let deadline = tokio::time::Instant::now() + LEADER_WAIT;
        loop {
            match $self.route(&$request).await? {
                Route::Forward(mut client, addr) => {
                    match client.$method(forward_request(&$request)).await {
                        Ok(response) => break Ok(response),
                        Err(status) => match forward_failure(&status) {
                            ForwardFailure::Answered => break Err(status),
                            failure => {
                                $self.forget(&addr);
                                let retry = failure == ForwardFailure::NeverSent || $retry == Retry::Always;
                                if retry && tokio::time::Instant::now() < deadline {
                                    tracing::debug!(leader = %addr, error = %status, "forwarded call failed; routing it again");
                                    tokio::time::sleep(Duration::from_millis(50)).await;
                                    continue;
                                }
                                break Err(interrupted_forward(&addr, failure, &status));
                            }
                        },
                    }
                }
                Route::Local => {
                    let $request = $request.into_inner();
                    let result: Result<_, ApiError> = $local.await;
                    break result.map(Response::new).map_err(Status::from);
                }
            }
        }
    }};
}

/// The same request for the leader, marked as forwarded and naming the original caller.
fn forward_request<T: Clone>(request: &Request<T>) -> Request<T> {
    let mut forwarded = Request::new(request.get_ref().clone());
    forwarded.metadata_mut().insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
    if let Some((role, node_id)) = caller(request)
        && let Ok(value) = tonic::metadata::MetadataValue::try_from(format!("{role} {node_id}"))
    {
        forwarded.metadata_mut().insert(FORWARDED_FOR, value);
    }
    forwarded
}

/// How a forwarded call failed, told by the type of the error, never by its text.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ForwardFailure {
    /// The leader answered with this status (an answer carries no local error source).
    Answered,
    /// The call never left this manager: no connection could be made, or the request was
    /// dropped from the connection's queue before it was written (hyper's `Canceled`).
    NeverSent,
    /// The connection broke while the call was in flight: the leader may have applied it.
    InFlight,
}

fn forward_failure(status: &Status) -> ForwardFailure {
    use std::error::Error as _;
    // A status decoded from the leader's response has no source; a transport failure always
    // carries the error it came from.
    let mut next = status.source();
    if next.is_none() {
        return ForwardFailure::Answered;
    }
    while let Some(error) = next {
        if error.is::<tonic::ConnectError>()
            || error.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_canceled)
        {
            return ForwardFailure::NeverSent;
        }
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && matches!(io.kind(), std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotConnected)
        {
            return ForwardFailure::NeverSent;
        }
        next = error.source();
    }
    ForwardFailure::InFlight
}

/// What the caller is told when a forward failed and was not (or no longer) retried.
fn interrupted_forward(addr: &str, failure: ForwardFailure, status: &Status) -> Status {
    match failure {
        ForwardFailure::InFlight => Status::unavailable(format!(
            "the leader ({addr}) went away while handling this call, so it may or may not have been applied; \
             check the current state (inspect or ls) before retrying ({status})"
        )),
        _ => Status::unavailable(format!(
            "the leader ({addr}) could not be reached and no other leader was elected in time; retry ({status})"
        )),
    }
}

/// The JSON line `shoal events` prints for one change.
#[derive(serde::Serialize)]
struct EventOut<'a> {
    time: u64,
    #[serde(rename = "type")]
    kind: &'static str,
    action: shoal_store::ChangeKind,
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    service: Option<&'a str>,
    index: u64,
    /// The object as it is after the change (before it, for a removal).
    object: serde_json::Value,
}

/// What route `route` will not do as asked, for the user to see (the change stands).
fn route_warnings(state: &State, route: &TrafficRoute) -> Vec<String> {
    let spec = &route.spec;
    let selected: Vec<&shoal_types::Service> = state.services().filter(|s| spec.selects(&s.spec.labels)).collect();
    let selector = spec.selector.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
    let mut warnings = Vec::new();
    if selected.is_empty() {
        warnings.push(format!(
            "route {} selects no service ({selector}): connections to port {} are closed until one matches",
            spec.name, spec.port
        ));
    }
    for service in &selected {
        if !service.spec.endpoint.ports.iter().any(|p| p.is_reachable() && p.target == spec.target) {
            warnings.push(format!(
                "service {} does not publish port {} in ingress mode (add it with --publish-add {}): this route sends it nothing",
                service.spec.name, spec.target, spec.target
            ));
        }
    }
    for name in spec.weights.keys() {
        if !selected.iter().any(|s| &s.spec.name == name) {
            warnings.push(format!("--weight {name}: the route does not select a service {name}"));
        }
    }
    // However many services or weights: a screenful says enough.
    const MAX_WARNINGS: usize = 20;
    if warnings.len() > MAX_WARNINGS {
        let more = warnings.len() - MAX_WARNINGS;
        warnings.truncate(MAX_WARNINGS);
        warnings.push(format!("… and {more} more"));
    }
    warnings
}

fn event_json(change: &shoal_store::Change) -> String {
    use shoal_store::Object;
    let (kind, id, service) = match &change.object {
        Object::Cluster(c) => ("cluster", c.id.as_str(), None),
        Object::Service(s) => ("service", s.id.as_str(), Some(s.id.as_str())),
        Object::Task(t) => ("task", t.id.as_str(), Some(t.service_id.as_str())),
        Object::Node(n) => ("node", n.id.as_str(), None),
        Object::Route(r) => ("route", r.id.as_str(), None),
    };
    let object = match &change.object {
        Object::Cluster(c) => serde_json::to_value(c),
        Object::Service(s) => serde_json::to_value(s),
        Object::Task(t) => serde_json::to_value(t),
        Object::Node(n) => serde_json::to_value(n),
        Object::Route(r) => serde_json::to_value(r),
    }
    .expect("objects serialise");
    to_json(&EventOut { time: change.at, kind, action: change.kind, id, service, index: change.index, object })
}

/// What `Watch` replays for `since_index` / `since_time`: the objects that exist and changed
/// after the index (their version is the raft index of their last change) and at or after the
/// time, oldest first, as updates. Removals come from the manager's removal log (see `watch`).
fn changed_since(state: &shoal_store::State, since_index: u64, since_time: u64) -> Vec<shoal_store::Change> {
    use shoal_store::{Change, ChangeKind, Object};
    let recent = |version: u64, at: u64| version > since_index && at >= since_time;
    let change = |index: u64, at: u64, object: Object| Change { kind: ChangeKind::Update, index, at, object };
    let mut changes: Vec<Change> = Vec::new();
    // The cluster object records no time of change; only an index asks for it.
    if let Some(cluster) = state.cluster().filter(|c| since_index > 0 && recent(c.version, since_time)) {
        changes.push(change(cluster.version, 0, Object::Cluster(cluster.clone())));
    }
    changes.extend(state.services().filter(|s| recent(s.version.max(s.status_version), s.updated_at)).map(|s| {
        let index = s.version.max(s.status_version);
        change(index, s.updated_at, Object::Service(std::sync::Arc::new(s.clone())))
    }));
    changes.extend(
        state
            .nodes()
            .filter(|n| recent(n.version, n.updated_at))
            .map(|n| change(n.version, n.updated_at, Object::Node(n.clone()))),
    );
    changes.extend(
        state
            .tasks()
            .filter(|t| recent(t.version, t.updated_at))
            .map(|t| change(t.version, t.updated_at, Object::Task(t.clone()))),
    );
    changes.sort_by_key(|c| c.index);
    changes
}

type WatchStream = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<WatchEvent, Status>> + Send>>;
type ServiceLogsStream = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<ServiceLogsMessage, Status>> + Send>>;

impl ControlApi {
    /// Opens a log read of a service (id, name or id prefix) or else a task (id or id prefix)
    /// on this manager, the leader.
    fn open_logs(&self, request: &ServiceLogsRequest) -> Result<crate::logs::OpenRead, ApiError> {
        if request.since_unix_nanos < 0 {
            return Err(ApiError::InvalidArgument(format!(
                "since: {} is before 1970; expected Unix nanoseconds, 0 for all",
                request.since_unix_nanos
            )));
        }
        let state = self.manager.state();
        let reference = request.reference.as_str();
        let (service_id, task_ids, tasks): (String, Vec<String>, Vec<&Task>) =
            match Self::find_service(&state, reference) {
                Ok(service) => (service.id.clone(), Vec::new(), state.tasks_of_service(&service.id).collect()),
                Err(ApiError::NotFound(_)) => {
                    // Tasks only by id: the scan happens once per read, and only for a reference
                    // that names no service.
                    let task = state
                        .task(reference)
                        .map(Ok)
                        .unwrap_or_else(|| find(state.tasks(), reference, |t| &t.id, |t| &t.id))
                        .map_err(|e| match e {
                            FindError::None => ApiError::NotFound(format!("no such service or task: {reference}")),
                            ambiguous => ambiguous.for_kind("task", reference),
                        })?;
                    (String::new(), vec![task.id.clone()], vec![task])
                }
                Err(e) => return Err(e),
            };
        let mut holders: Vec<crate::logs::NodeRef> = Vec::new();
        for task in tasks.iter().filter(|t| !t.node_id.is_empty()) {
            if holders.iter().any(|h| h.id == task.node_id) {
                continue;
            }
            let node = state.node(&task.node_id);
            holders.push(crate::logs::NodeRef {
                id: task.node_id.clone(),
                hostname: node.map(|n| n.description.hostname.clone()).unwrap_or_default(),
                down: node.is_none_or(|n| n.status.state == NodeState::Down),
            });
        }
        drop(state);
        let subscription = LogSubscription {
            id: String::new(),
            service_id,
            task_ids,
            follow: request.follow,
            tail: request.tail,
            since_unix_nanos: request.since_unix_nanos,
            close: false,
            from_now: false,
        };
        self.manager.logs().open(subscription, &holders)
    }
}

#[tonic::async_trait]
impl Control for ControlApi {
    type WatchStream = WatchStream;
    type ServiceLogsStream = ServiceLogsStream;

    /// Served by the leader, which holds the agents' sessions; a follower passes the stream on.
    async fn service_logs(
        &self,
        request: Request<ServiceLogsRequest>,
    ) -> Result<Response<Self::ServiceLogsStream>, Status> {
        match self.route(&request).await? {
            Route::Forward(_, addr) => match self.log_client(&addr).await {
                Err(e) => {
                    self.forget(&addr);
                    Err(ApiError::Unavailable(format!("the leader ({addr}) could not be reached: {e}; retry")).into())
                }
                Ok(mut client) => match client.service_logs(forward_request(&request)).await {
                    Ok(response) => Ok(Response::new(Box::pin(response.into_inner()))),
                    Err(status) => {
                        if forward_failure(&status) != ForwardFailure::Answered {
                            self.forget(&addr);
                            return Err(interrupted_forward(&addr, ForwardFailure::NeverSent, &status));
                        }
                        Err(status)
                    }
                },
            },
            Route::Local => {
                let crate::logs::OpenRead { mut rx, guard } = self.open_logs(request.get_ref())?;
                let mut raft = self.manager.watch_raft();
                let (tx, out) = tokio::sync::mpsc::channel(1);
                // The agents' sessions go to the new leader: this read cannot go on.
                let stopped_leading = async move {
                    let _ = raft.wait_for(|st| st.role != RaftRole::Leader).await.is_ok();
                };
                tokio::spawn(async move {
                    // The read stays open as long as this task: the reader going away closes it.
                    let _guard = guard;
                    tokio::pin!(stopped_leading);
                    loop {
                        tokio::select! {
                            item = rx.recv() => match item {
                                Some(item) => if tx.send(item).await.is_err() { return },
                                None => return,
                            },
                            () = &mut stopped_leading => {
                                let why = "this manager stopped leading while reading logs; run the command again";
                                let _ = tx.send(Err(Status::unavailable(why))).await;
                                return;
                            }
                            _ = tx.closed() => return,
                        }
                    }
                });
                let stream = tokio_stream::wrappers::ReceiverStream::new(out);
                Ok(Response::new(Box::pin(stream)))
            }
        }
    }

    /// Served by the manager the client talks to, from changes as it applies them (every manager
    /// applies the same changes).
    async fn watch(&self, request: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let request = request.into_inner();
        let service_id = if request.service.is_empty() {
            None
        } else {
            Some(Self::find_service(&self.manager.state(), &request.service).map_err(Status::from)?.id.clone())
        };
        for t in &request.types {
            if !matches!(t.as_str(), "service" | "task" | "node" | "cluster") {
                return Err(ApiError::InvalidArgument(format!(
                    "event type {t:?} is not one of service, task, node, cluster"
                ))
                .into());
            }
        }
        // Subscribed before the state is read: every change after the state's applied index
        // arrives live, and those up to it are in the replay.
        let mut rx = self.manager.subscribe();
        let (replay, replayed_to) = if request.since_index > 0 || request.since_time > 0 {
            let state = self.manager.state();
            let mut replay = changed_since(&state, request.since_index, request.since_time);
            // Read under the state's lock: exactly the removals up to its applied index.
            replay.extend(self.manager.removals_since(request.since_index, request.since_time));
            replay.sort_by_key(|c| c.index);
            (replay, state.applied_index())
        } else {
            (Vec::new(), 0)
        };
        let (tx, out) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(async move {
            let wanted = |change: &shoal_store::Change| {
                let (kind, service) = match &change.object {
                    shoal_store::Object::Cluster(_) => ("cluster", None),
                    shoal_store::Object::Service(s) => ("service", Some(s.id.as_str())),
                    shoal_store::Object::Task(t) => ("task", Some(t.service_id.as_str())),
                    shoal_store::Object::Node(_) => ("node", None),
                    shoal_store::Object::Route(_) => ("route", None),
                };
                (request.types.is_empty() || request.types.iter().any(|t| t == kind))
                    && service_id.as_ref().is_none_or(|wanted| service == Some(wanted.as_str()))
            };
            for change in replay.iter().filter(|c| wanted(c)) {
                if tx.send(Ok(WatchEvent { event_json: event_json(change) })).await.is_err() {
                    return;
                }
            }
            loop {
                let change = match rx.recv().await {
                    Ok(change) => change,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        let _ = tx
                            .send(Err(Status::data_loss(format!(
                                "{n} events were dropped: the client reads too slowly"
                            ))))
                            .await;
                        return;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                if change.index <= replayed_to || !wanted(&change) {
                    continue;
                }
                if tx.send(Ok(WatchEvent { event_json: event_json(&change) })).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(out))))
    }

    async fn update_node(&self, request: Request<UpdateNodeRequest>) -> Result<Response<NodeResponse>, Status> {
        routed!(self, request, update_node, Retry::IfNeverSent, async {
            let node = Self::find_node(&self.manager.state(), &request.node)?.clone();
            let spec: shoal_types::NodeSpec = serde_json::from_str(&request.spec_json)
                .map_err(|e| ApiError::InvalidArgument(format!("invalid node spec: {e}")))?;
            for key in spec.labels.keys() {
                if key.is_empty() {
                    return Err(ApiError::InvalidArgument("spec.labels: label keys must not be empty".into()));
                }
            }
            if request.version == 0 {
                return Err(ApiError::InvalidArgument("version is required: send the version you read".into()));
            }
            self.manager
                .propose(vec![Action::UpdateNodeSpec { id: node.id.clone(), expected_version: request.version, spec }])
                .await?;
            let st = self.manager.raft_status();
            let node = self
                .manager
                .state()
                .node(&node.id)
                .cloned()
                .ok_or_else(|| ApiError::NotFound(format!("node {} not found", request.node)))?;
            Ok(NodeResponse { node_json: to_json(&self.present_node(node, &st)) })
        })
    }

    async fn create_service(
        &self,
        request: Request<CreateServiceRequest>,
    ) -> Result<Response<ServiceResponse>, Status> {
        let by = caller_name(&request);
        routed!(self, request, create_service, Retry::IfNeverSent, async {
            let spec = self.parse_spec(&request.spec_json)?;
            let origin = origin(by, request.change_cause, String::new())?;
            let id = shoal_types::ids::new_id();
            self.manager.propose_as(vec![Action::CreateService { id: id.clone(), spec }], origin).await?;
            let state = self.manager.state();
            let service = state.service(&id).ok_or_else(|| ApiError::Internal("created service vanished".into()))?;
            Ok(ServiceResponse { service_json: to_json(service) })
        })
    }

    async fn update_service(
        &self,
        request: Request<UpdateServiceRequest>,
    ) -> Result<Response<ServiceResponse>, Status> {
        let by = caller_name(&request);
        routed!(self, request, update_service, Retry::IfNeverSent, async {
            let id = Self::find_service(&self.manager.state(), &request.service)?.id.clone();
            if request.version == 0 {
                return Err(ApiError::InvalidArgument(
                    "version is required: send the version you read with the spec you changed".into(),
                ));
            }
            let origin = origin(by, request.change_cause, request.rollout_id)?;
            let action = if request.rollback_to_revision != 0 {
                Action::RollbackServiceTo {
                    id: id.clone(),
                    expected_version: request.version,
                    revision: request.rollback_to_revision,
                }
            } else if request.rollback {
                Action::RollbackService { id: id.clone(), expected_version: request.version }
            } else {
                let spec = self.parse_spec(&request.spec_json)?;
                Action::UpdateService { id: id.clone(), expected_version: request.version, spec }
            };
            self.manager.propose_as(vec![action], origin).await?;
            let state = self.manager.state();
            let service = state
                .service(&id)
                .ok_or_else(|| ApiError::NotFound(format!("service {} not found", request.service)))?;
            Ok(ServiceResponse { service_json: to_json(service) })
        })
    }

    async fn create_data(&self, request: Request<CreateDataRequest>) -> Result<Response<DataResponse>, Status> {
        routed!(self, request, create_data, Retry::IfNeverSent, async {
            let kind = Self::kind(&request.kind)?;
            let spec: DataSpec = serde_json::from_str(&request.spec_json)
                .map_err(|e| ApiError::InvalidArgument(format!("invalid {kind} spec: {e}")))?;
            if let Some(problem) = spec.problems(kind).into_iter().next() {
                return Err(ApiError::InvalidArgument(problem));
            }
            let id = shoal_types::ids::new_id();
            let object = DataObject { id: id.clone(), kind, version: 0, created_at: 0, updated_at: 0, spec, size: 0 };
            self.manager.propose(vec![Action::CreateData { object }]).await?;
            let state = self.manager.state();
            let object =
                state.data_object(&id).ok_or_else(|| ApiError::Internal(format!("created {kind} vanished")))?;
            Ok(DataResponse { object_json: to_json(&object.without_data()) })
        })
    }

    async fn deploy_stack(&self, request: Request<DeployStackRequest>) -> Result<Response<StackResponse>, Status> {
        let by = caller_name(&request);
        routed!(self, request, deploy_stack, Retry::IfNeverSent, async {
            let deploy: shoal_types::stack::StackDeploy = serde_json::from_str(&request.deploy_json)
                .map_err(|e| ApiError::InvalidArgument(format!("invalid stack deploy: {e}")))?;
            let origin = origin(by, request.change_cause, String::new())?;
            let stack = deploy.stack.clone();
            let route_names: Vec<String> = deploy.routes.iter().map(|r| r.name.clone()).collect();
            let _one_at_a_time = self.stack_writes.lock().await;
            let planned = crate::stacks::plan(&self.manager.state(), deploy, shoal_types::ids::new_id)?;
            if planned.actions.is_empty() {
                // Nothing changes: no entry, no revision.
                return Ok(StackResponse { revision_json: String::new(), warnings: planned.warnings });
            }
            self.manager.propose_as(planned.actions, origin).await?;
            let mut warnings = planned.warnings;
            {
                let state = self.manager.state();
                for route in route_names.iter().filter_map(|name| state.route_by_name(name)) {
                    warnings.extend(route_warnings(&state, route));
                }
            }
            self.stack_response(&stack, warnings)
        })
    }

    async fn rollback_stack(&self, request: Request<RollbackStackRequest>) -> Result<Response<StackResponse>, Status> {
        let by = caller_name(&request);
        routed!(self, request, rollback_stack, Retry::IfNeverSent, async {
            let _one_at_a_time = self.stack_writes.lock().await;
            let (planned, to) = crate::stacks::plan_rollback(
                &self.manager.state(),
                &request.stack,
                request.to_revision,
                request.prune,
                shoal_types::ids::new_id,
            )?;
            let cause = if request.change_cause.is_empty() {
                format!("rollback to stack revision {to}")
            } else {
                request.change_cause
            };
            self.manager.propose_as(planned.actions, origin(by, cause, String::new())?).await?;
            self.stack_response(&request.stack, planned.warnings)
        })
    }

    async fn list_stack_revisions(
        &self,
        request: Request<ListStackRevisionsRequest>,
    ) -> Result<Response<ListStackRevisionsResponse>, Status> {
        routed!(self, request, list_stack_revisions, Retry::Always, async {
            let state = self.manager.state();
            // Without a stack: the revisions of every stack that carry a stack rollout.
            let revisions = if request.stack.is_empty() {
                let names: Vec<String> = state.stack_names().map(str::to_string).collect();
                names
                    .iter()
                    .flat_map(|name| state.stack_revisions(name).iter())
                    .filter(|r| r.rollout.is_some())
                    .map(|r| to_json(&r.without_specs()))
                    .collect()
            } else {
                state.stack_revisions(&request.stack).iter().map(|r| to_json(&r.without_specs())).collect()
            };
            Ok(ListStackRevisionsResponse { revisions_json: revisions })
        })
    }

    async fn create_route(&self, request: Request<CreateRouteRequest>) -> Result<Response<RouteResponse>, Status> {
        routed!(self, request, create_route, Retry::IfNeverSent, async {
            let spec = Self::route_spec(&request.spec_json)?;
            let id = shoal_types::ids::new_id();
            let route = TrafficRoute { id: id.clone(), spec, ..TrafficRoute::default() };
            self.manager.propose(vec![Action::CreateRoute { route }]).await?;
            let state = self.manager.state();
            let route = state.route(&id).ok_or_else(|| ApiError::Internal("created route vanished".into()))?;
            Ok(RouteResponse { route_json: to_json(route), warnings: route_warnings(&state, route) })
        })
    }

    async fn update_route(&self, request: Request<UpdateRouteRequest>) -> Result<Response<RouteResponse>, Status> {
        routed!(self, request, update_route, Retry::IfNeverSent, async {
            let spec = Self::route_spec(&request.spec_json)?;
            let id = Self::find_route(&self.manager.state(), &request.route)?.id.clone();
            self.manager
                .propose(vec![Action::UpdateRoute { id: id.clone(), expected_version: request.version, spec }])
                .await?;
            let state = self.manager.state();
            let route = state.route(&id).ok_or_else(|| ApiError::Internal("updated route vanished".into()))?;
            Ok(RouteResponse { route_json: to_json(route), warnings: route_warnings(&state, route) })
        })
    }

    async fn list_routes(&self, request: Request<ListRoutesRequest>) -> Result<Response<ListRoutesResponse>, Status> {
        routed!(self, request, list_routes, Retry::Always, async {
            let ListRoutesRequest {} = request;
            let state = self.manager.state();
            let mut routes: Vec<&TrafficRoute> = state.routes().collect();
            routes.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
            Ok(ListRoutesResponse { routes_json: routes.iter().map(to_json).collect() })
        })
    }

    async fn remove_route(
        &self,
        request: Request<RemoveRouteRequest>,
    ) -> Result<Response<RemoveRouteResponse>, Status> {
        routed!(self, request, remove_route, Retry::IfNeverSent, async {
            let id = Self::find_route(&self.manager.state(), &request.route)?.id.clone();
            self.manager.propose(vec![Action::RemoveRoute { id: id.clone() }]).await?;
            Ok(RemoveRouteResponse { id })
        })
    }

    async fn list_data(&self, request: Request<ListDataRequest>) -> Result<Response<ListDataResponse>, Status> {
        routed!(self, request, list_data, Retry::Always, async {
            let kind = Self::kind(&request.kind)?;
            let state = self.manager.state();
            let mut objects: Vec<&DataObject> = state.data_objects(kind).collect();
            objects.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
            Ok(ListDataResponse { objects_json: objects.iter().map(|d| to_json(&d.without_data())).collect() })
        })
    }

    async fn get_data(&self, request: Request<GetDataRequest>) -> Result<Response<DataResponse>, Status> {
        routed!(self, request, get_data, Retry::Always, async {
            let kind = Self::kind(&request.kind)?;
            let state = self.manager.state();
            let object = Self::find_data(&state, kind, &request.reference)?;
            // A config's value is shown, as docker shows it; a secret's never.
            let shown = if kind == DataKind::Config { object.clone() } else { object.without_data() };
            Ok(DataResponse { object_json: to_json(&shown) })
        })
    }

    async fn remove_data(&self, request: Request<RemoveDataRequest>) -> Result<Response<RemoveDataResponse>, Status> {
        routed!(self, request, remove_data, Retry::IfNeverSent, async {
            let kind = Self::kind(&request.kind)?;
            let id = Self::find_data(&self.manager.state(), kind, &request.reference)?.id.clone();
            self.manager.propose(vec![Action::RemoveData { id: id.clone() }]).await?;
            Ok(RemoveDataResponse { id })
        })
    }

    async fn remove_service(
        &self,
        request: Request<RemoveServiceRequest>,
    ) -> Result<Response<RemoveServiceResponse>, Status> {
        routed!(self, request, remove_service, Retry::IfNeverSent, async {
            let id = Self::find_service(&self.manager.state(), &request.service)?.id.clone();
            self.manager.propose(vec![Action::RemoveService { id: id.clone() }]).await?;
            Ok(RemoveServiceResponse { id })
        })
    }

    async fn list_revisions(
        &self,
        request: Request<ListRevisionsRequest>,
    ) -> Result<Response<ListRevisionsResponse>, Status> {
        routed!(self, request, list_revisions, Retry::Always, async {
            let revisions: Vec<Arc<shoal_types::Revision>> = {
                let state = self.manager.state();
                let id = &Self::find_service(&state, &request.service)?.id;
                state.revisions(id).to_vec()
            };
            Ok(ListRevisionsResponse { revisions_json: revisions.iter().map(|r| to_json(&**r)).collect() })
        })
    }

    async fn list_rollouts(
        &self,
        request: Request<ListRolloutsRequest>,
    ) -> Result<Response<ListRolloutsResponse>, Status> {
        routed!(self, request, list_rollouts, Retry::Always, async {
            // Copies of the shared records under the lock; serialised after it.
            let rollouts: Vec<Arc<shoal_types::Rollout>> = {
                let state = self.manager.state();
                if request.service.is_empty() {
                    state.all_rollouts().cloned().collect()
                } else {
                    let id = &Self::find_service(&state, &request.service)?.id;
                    state.rollouts(id).to_vec()
                }
            };
            Ok(ListRolloutsResponse { rollouts_json: rollouts.iter().map(|r| to_json(&**r)).collect() })
        })
    }

    async fn plan_update(&self, request: Request<PlanUpdateRequest>) -> Result<Response<PlanUpdateResponse>, Status> {
        routed!(self, request, plan_update, Retry::Always, async {
            let next = self.parse_spec(&request.spec_json)?;
            let state = self.manager.state();
            let service = Self::find_service(&state, &request.service)?;
            // Refused as the update itself would be.
            if service.spec.name != next.name {
                return Err(shoal_store::StoreError::Rename { name: service.spec.name.clone() }.into());
            }
            if std::mem::discriminant(&service.spec.mode) != std::mem::discriminant(&next.mode) {
                return Err(shoal_store::StoreError::ModeChange { name: service.spec.name.clone() }.into());
            }
            let plan = shoal_orchestrator::plan::plan_update(&state, service, &next);
            drop(state);
            Ok(PlanUpdateResponse { plan_json: to_json(&plan) })
        })
    }

    async fn control_rollout(
        &self,
        request: Request<ControlRolloutRequest>,
    ) -> Result<Response<ServiceResponse>, Status> {
        let by = caller_name(&request);
        routed!(self, request, control_rollout, Retry::IfNeverSent, async {
            let id = Self::find_service(&self.manager.state(), &request.service)?.id.clone();
            let action = match RolloutOp::try_from(request.op) {
                Ok(RolloutOp::Pause) => Action::PauseRollout { id: id.clone() },
                Ok(RolloutOp::Resume) => Action::ResumeRollout { id: id.clone() },
                Ok(RolloutOp::Abort) => Action::AbortRollout { id: id.clone() },
                Ok(RolloutOp::Approve) => Action::ApproveRollout { id: id.clone() },
                Ok(RolloutOp::Finish) => Action::FinishRollout { id: id.clone() },
                _ => {
                    return Err(ApiError::InvalidArgument(format!(
                        "op: {} is not pause (1), resume (2), abort (3), approve (4) or finish (5)",
                        request.op
                    )));
                }
            };
            self.manager.propose_as(vec![action], origin(by, request.change_cause, request.rollout_id)?).await?;
            let state = self.manager.state();
            let service = state
                .service(&id)
                .ok_or_else(|| ApiError::NotFound(format!("service {} not found", request.service)))?;
            Ok(ServiceResponse { service_json: to_json(service) })
        })
    }

    async fn get_service(&self, request: Request<GetServiceRequest>) -> Result<Response<ServiceResponse>, Status> {
        routed!(self, request, get_service, Retry::Always, async {
            let state = self.manager.state();
            Ok(ServiceResponse { service_json: to_json(Self::find_service(&state, &request.service)?) })
        })
    }

    async fn list_services(
        &self,
        request: Request<ListServicesRequest>,
    ) -> Result<Response<ListServicesResponse>, Status> {
        routed!(self, request, list_services, Retry::Always, async {
            if request.summaries {
                let ids: Vec<String> = {
                    let state = self.manager.state();
                    let mut services: Vec<&Service> = state.services().collect();
                    services.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
                    services.into_iter().map(|s| s.id.clone()).collect()
                };
                // The store's lock is taken per service and serialising happens after it:
                // counting 100k tasks under one lock held the raft thread's applies up for
                // about 100 ms. A service removed meanwhile is left out.
                let mut summaries = Vec::with_capacity(ids.len());
                for id in ids {
                    let summary = {
                        let state = self.manager.state();
                        let down = |node: &str| {
                            !node.is_empty()
                                && state.node(node).is_some_and(|n| n.status.state == shoal_types::NodeState::Down)
                        };
                        state
                            .service(&id)
                            .map(|s| shoal_types::ServiceSummary::new(s, state.tasks_of_service(&id), down))
                    };
                    summaries.extend(summary.as_ref().map(to_json));
                }
                return Ok(ListServicesResponse { services_json: Vec::new(), summaries_json: summaries });
            }
            let state = self.manager.state();
            let mut services: Vec<&Service> = state.services().collect();
            services.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
            Ok(ListServicesResponse {
                services_json: services.into_iter().map(to_json).collect(),
                summaries_json: Vec::new(),
            })
        })
    }

    async fn list_tasks(&self, request: Request<ListTasksRequest>) -> Result<Response<ListTasksResponse>, Status> {
        routed!(self, request, list_tasks, Retry::Always, async {
            let mut desired = Vec::with_capacity(request.desired_states.len());
            for name in &request.desired_states {
                desired.push(shoal_types::TaskState::parse(name).ok_or_else(|| {
                    let allowed: Vec<&str> = shoal_types::TaskState::ALL.iter().map(|s| s.as_str()).collect();
                    ApiError::InvalidArgument(format!(
                        "desired state {name:?} is not a task state (allowed: {})",
                        allowed.join(", ")
                    ))
                })?);
            }
            let limit = if request.limit == 0 { usize::MAX } else { request.limit as usize };
            // Copied under the lock (a task's spec is shared, not copied), serialised after it
            // is dropped, so a large answer never holds up the raft thread's applies.
            let (tasks, more) = {
                let state = self.manager.state();
                let service = if request.service.is_empty() {
                    None
                } else {
                    Some(Self::find_service(&state, &request.service)?.id.clone())
                };
                let node = if request.node.is_empty() {
                    None
                } else {
                    Some(Self::find_node(&state, &request.node)?.id.clone())
                };
                // Through the store's indexes: `service ps` of one service costs its own tasks,
                // not every task in the cluster (D9).
                let mut matching = state
                    .tasks_after(service.as_deref(), node.as_deref(), &request.after)
                    .filter(|t| desired.is_empty() || desired.contains(&t.desired_state));
                let tasks: Vec<Task> = matching.by_ref().take(limit).cloned().collect();
                let more = matching.next().is_some();
                (tasks, more)
            };
            let next_after = if more { tasks.last().map(|t| t.id.clone()).unwrap_or_default() } else { String::new() };
            Ok(ListTasksResponse { tasks_json: tasks.iter().map(to_json).collect(), next_after })
        })
    }

    async fn list_nodes(&self, request: Request<ListNodesRequest>) -> Result<Response<ListNodesResponse>, Status> {
        routed!(self, request, list_nodes, Retry::Always, async {
            let _ = request;
            let st = self.manager.raft_status();
            let state = self.manager.state();
            let mut nodes: Vec<Node> = state.nodes().cloned().map(|n| self.present_node(n, &st)).collect();
            nodes.sort_by(|a, b| a.description.hostname.cmp(&b.description.hostname).then(a.id.cmp(&b.id)));
            Ok(ListNodesResponse { nodes_json: nodes.iter().map(to_json).collect() })
        })
    }

    async fn get_node(&self, request: Request<GetNodeRequest>) -> Result<Response<NodeResponse>, Status> {
        routed!(self, request, get_node, Retry::Always, async {
            let st = self.manager.raft_status();
            let node = Self::find_node(&self.manager.state(), &request.node)?.clone();
            Ok(NodeResponse { node_json: to_json(&self.present_node(node, &st)) })
        })
    }

    async fn remove_node(&self, request: Request<RemoveNodeRequest>) -> Result<Response<RemoveNodeResponse>, Status> {
        routed!(self, request, remove_node, Retry::IfNeverSent, async {
            let st = self.manager.raft_status();
            let node = self.present_node(Self::find_node(&self.manager.state(), &request.node)?.clone(), &st);
            if node.manager.is_some() {
                return Err(ApiError::FailedPrecondition(format!(
                    "node {} is a cluster manager and is a member of the raft cluster. It must be demoted to worker before removal",
                    node.id
                )));
            }
            if node.status.state != NodeState::Down && !request.force {
                return Err(ApiError::FailedPrecondition(format!(
                    "node {} is not down and can't be removed (use --force to remove it anyway)",
                    node.id
                )));
            }
            self.manager.propose(vec![Action::RemoveNode { id: node.id.clone() }]).await?;
            Ok(RemoveNodeResponse { id: node.id })
        })
    }

    async fn demote_node(&self, request: Request<DemoteNodeRequest>) -> Result<Response<NodeResponse>, Status> {
        // A leader cannot remove itself safely: it hands leadership over first, then the new
        // leader performs the removal.
        if let Route::Local = self.route(&request).await? {
            let node = Self::find_node(&self.manager.state(), &request.get_ref().node).map_err(Status::from)?.clone();
            let st = self.manager.raft_status();
            if node.manager.as_ref().is_some_and(|m| m.raft_id == st.id) {
                let Some(to) = self.manager.best_transferee() else {
                    return Err(ApiError::FailedPrecondition(
                        "can't remove member from the raft: this would result in a loss of quorum".into(),
                    )
                    .into());
                };
                self.manager.transfer_leader(to);
                let moved = self
                    .manager
                    .wait_raft(LEADER_WAIT, |s| s.role != RaftRole::Leader && s.leader_id != 0 && s.leader_id != st.id)
                    .await;
                if moved.is_none() {
                    return Err(ApiError::Unavailable("leadership transfer did not complete; retry".into()).into());
                }
            }
        }
        routed!(self, request, demote_node, Retry::IfNeverSent, async {
            let st = self.manager.raft_status();
            let node = Self::find_node(&self.manager.state(), &request.node)?.clone();
            if node.manager.as_ref().is_some_and(|m| m.raft_id == st.id) {
                return Err(ApiError::Unavailable("this manager is the leader; retry".into()));
            }
            let node = self.demote_local(node).await?;
            Ok(NodeResponse { node_json: to_json(&self.present_node(node, &self.manager.raft_status())) })
        })
    }

    async fn cluster_info(
        &self,
        request: Request<ClusterInfoRequest>,
    ) -> Result<Response<ClusterInfoResponse>, Status> {
        let answered_by = {
            let me = &self.manager.identity;
            ManagerRef { node_id: me.node_id.clone(), raft_id: me.raft_id, addr: me.addr.clone() }
        };
        if request.get_ref().local {
            let mut info = self.local_info().map_err(Status::from)?;
            info.answered_by = Some(answered_by);
            return Ok(Response::new(ClusterInfoResponse { info_json: to_json(&info) }));
        }
        let forwarded = forwarded(&request);
        let mut response = routed!(self, request, cluster_info, Retry::Always, async {
            let _ = request;
            self.local_info().map(|info| ClusterInfoResponse { info_json: to_json(&info) })
        })?;
        if !forwarded && let Ok(mut info) = serde_json::from_str::<ClusterInfo>(&response.get_ref().info_json) {
            info.answered_by = Some(answered_by);
            response.get_mut().info_json = to_json(&info);
        }
        Ok(response)
    }

    async fn update_cluster(
        &self,
        request: Request<UpdateClusterRequest>,
    ) -> Result<Response<UpdateClusterResponse>, Status> {
        routed!(self, request, update_cluster, Retry::IfNeverSent, async {
            let (version, spec) = {
                let state = self.manager.state();
                let cluster = state.cluster().ok_or_else(|| {
                    ApiError::Unavailable("this manager has not received the cluster state yet".into())
                })?;
                let mut spec = cluster.spec.clone();
                if request.max_replicas != 0 {
                    let ceiling = shoal_types::limits::MAX_REPLICAS_CEILING;
                    if request.max_replicas > ceiling {
                        return Err(ApiError::InvalidArgument(format!(
                            "max_replicas: {} is above the ceiling {ceiling} (every task is held in the managers' memory)",
                            request.max_replicas
                        )));
                    }
                    // Lowering the limit under a running service would leave it over the limit.
                    let over = state.services().find_map(|s| match s.spec.mode {
                        shoal_types::ServiceMode::Replicated { replicas }
                        | shoal_types::ServiceMode::ReplicatedJob { total_completions: replicas, .. }
                            if replicas > request.max_replicas =>
                        {
                            Some((s.spec.name.clone(), replicas))
                        }
                        _ => None,
                    });
                    if let Some((name, replicas)) = over {
                        return Err(ApiError::InvalidArgument(format!(
                            "max_replicas: {} is below the {replicas} replicas of service {name}; scale it down first",
                            request.max_replicas
                        )));
                    }
                    spec.max_replicas = request.max_replicas;
                }
                if request.task_history_limit != 0 {
                    spec.task_history_limit = request.task_history_limit;
                }
                if request.revision_history_limit != 0 {
                    let most = shoal_types::limits::MAX_REVISION_HISTORY_LIMIT;
                    if request.revision_history_limit > most {
                        return Err(ApiError::InvalidArgument(format!(
                            "revision_history_limit: {} is above {most} (each revision holds a whole spec)",
                            request.revision_history_limit
                        )));
                    }
                    spec.revision_history_limit = request.revision_history_limit;
                }
                (cluster.version, spec)
            };
            self.manager.propose(vec![Action::UpdateCluster { expected_version: version, spec }]).await?;
            let state = self.manager.state();
            let cluster = state.cluster().ok_or_else(|| ApiError::Internal("the cluster object vanished".into()))?;
            Ok(UpdateClusterResponse { cluster_json: to_json(cluster) })
        })
    }

    async fn join_manager(
        &self,
        request: Request<JoinManagerRequest>,
    ) -> Result<Response<JoinManagerResponse>, Status> {
        // A manager joins under the node id its certificate names; for a forwarded call, the
        // certificate of the caller the forwarding manager names (checked here again, so a
        // forwarded marker set by anyone but a manager changes nothing).
        let joiner = caller(&request);
        if joiner
            .as_ref()
            .is_none_or(|(role, node_id)| *role != shoal_tls::Role::Manager || *node_id != request.get_ref().node_id)
        {
            let presented = match &joiner {
                Some((role, node_id)) => format!("{role} {node_id} presented its own"),
                None => "the call came without one".to_string(),
            };
            let reason = format!(
                "joining as manager {} needs that manager's certificate; {presented}",
                request.get_ref().node_id,
            );
            tracing::warn!(peer = %crate::auth::remote(&request), reason = %reason, "join refused");
            return Err(ApiError::PermissionDenied(reason).into());
        }
        routed!(self, request, join_manager, Retry::IfNeverSent, async {
            if request.node_id.is_empty() || request.addr.is_empty() {
                return Err(ApiError::InvalidArgument("a joining manager must give its node id and address".into()));
            }
            // Checked before anything is written: a refused joiner leaves no member behind.
            let cluster_key = self.manager.state().security().and_then(|s| s.unlock_key.clone());
            match (cluster_key, request.unlock_key_sha256.as_str()) {
                (None, "") => {}
                (Some(_), "") => {
                    return Err(ApiError::FailedPrecondition(
                        "this cluster is autolocked: join with --autolock and its --unlock-key (shoal cluster unlock-key), or every manager's data would be as safe as the one with a key file only".into(),
                    ));
                }
                (None, _) => {
                    return Err(ApiError::FailedPrecondition(
                        "this cluster is not autolocked (it was initialised without --autolock): join without --autolock".into(),
                    ));
                }
                (Some(key), digest) if crate::at_rest::unlock_key_digest(&key) != digest => {
                    return Err(ApiError::FailedPrecondition(
                        "--unlock-key is not this cluster's unlock key (shoal cluster unlock-key shows it)".into(),
                    ));
                }
                (Some(_), _) => {}
            }
            let st = self.manager.raft_status();
            let cluster_id = self.manager.state().cluster().map(|c| c.id.clone()).unwrap_or_default();
            let members_json = to_json(&st.members);
            // Signed before the membership change, so a bad CSR refuses the join with nothing
            // written; a retried join gets a fresh certificate for its fresh key.
            let admin_cert_pem = if request.admin_csr_pem.is_empty() {
                String::new()
            } else {
                crate::security::issue_admin(&self.manager.state(), &request.admin_csr_pem)?
            };
            if let Some((raft_id, _)) = st.members.iter().find(|(_, m)| m.node_id == request.node_id) {
                return Ok(JoinManagerResponse {
                    raft_id: *raft_id,
                    cluster_id,
                    leader_raft_id: st.id,
                    members_json,
                    admin_cert_pem,
                });
            }
            if let Some((_, m)) = st.members.iter().find(|(_, m)| m.addr == request.addr) {
                return Err(ApiError::AlreadyExists(format!(
                    "manager {} already uses address {}; remove it first or use another address",
                    m.node_id, request.addr
                )));
            }
            let raft_id = loop {
                let id = crate::new_raft_id();
                if !st.members.contains_key(&id) {
                    break id;
                }
            };
            let member = Member {
                node_id: request.node_id.clone(),
                addr: request.addr.clone(),
                hostname: request.hostname.clone(),
            };
            // One membership change at a time: a join that races a learner's promotion waits.
            let mut attempts = 0;
            loop {
                let change = MemberChange {
                    kind: MemberChangeKind::AddLearner,
                    raft_id,
                    member: member.clone(),
                    at: now_millis(),
                };
                match self.manager.change_members(change).await {
                    Ok(()) => break,
                    Err(ProposeError::MemberChangePending) if attempts < 40 => {
                        attempts += 1;
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            tracing::info!(
                raft_id,
                node = %request.node_id,
                addr = %request.addr,
                admin_bundle = !admin_cert_pem.is_empty(),
                "manager joined as learner"
            );
            Ok(JoinManagerResponse { raft_id, cluster_id, leader_raft_id: st.id, members_json, admin_cert_pem })
        })
    }

    async fn issue_node_certificate(
        &self,
        request: Request<IssueNodeCertificateRequest>,
    ) -> Result<Response<IssueNodeCertificateResponse>, Status> {
        let remote = crate::auth::remote(&request);
        // The leader decides, so a token rotated a moment ago is never accepted by a lagging
        // follower.
        routed!(self, request, issue_node_certificate, Retry::IfNeverSent, async {
            let issued = crate::security::issue(&self.manager.state(), &request.token, &request.role, &request.csr_pem);
            match issued {
                Ok(issued) => {
                    tracing::info!(peer = %remote, node = %issued.node_id, role = %request.role, "issued a certificate to a joining node");
                    Ok(IssueNodeCertificateResponse {
                        node_id: issued.node_id,
                        cert_pem: issued.cert_pem,
                        ca_pem: issued.ca_pem,
                        cluster_id: issued.cluster_id,
                    })
                }
                Err(e) => {
                    // Anyone may ask (no certificate needed), so a flood of bad tokens writes a
                    // line a second, not a line per attempt.
                    if let Some(suppressed) = JOIN_REFUSED.admit() {
                        tracing::warn!(peer = %remote, role = %request.role, reason = %e, suppressed, "join refused");
                    }
                    Err(e)
                }
            }
        })
    }

    async fn renew_node_certificate(
        &self,
        request: Request<RenewNodeCertificateRequest>,
    ) -> Result<Response<RenewNodeCertificateResponse>, Status> {
        let Some(peer) = crate::auth::peer(&request).cloned() else {
            return Err(ApiError::PermissionDenied("renewing needs the certificate to renew".into()).into());
        };
        let cert_pem = crate::security::renew(&self.manager.state(), &peer, &request.get_ref().csr_pem)?;
        tracing::info!(node = %peer.node_id, role = %peer.role, "renewed a node certificate");
        Ok(Response::new(RenewNodeCertificateResponse { cert_pem }))
    }

    async fn unlock_key(&self, request: Request<UnlockKeyRequest>) -> Result<Response<UnlockKeyResponse>, Status> {
        routed!(self, request, unlock_key, Retry::Always, async {
            let UnlockKeyRequest {} = request;
            let state = self.manager.state();
            let key = state.security().and_then(|s| s.unlock_key.clone()).ok_or_else(|| {
                ApiError::FailedPrecondition(
                    "this cluster has no unlock key: it was not initialised with autolock (shoal-manager --autolock)"
                        .into(),
                )
            })?;
            Ok(UnlockKeyResponse { key })
        })
    }

    async fn join_token(&self, request: Request<JoinTokenRequest>) -> Result<Response<JoinTokenResponse>, Status> {
        routed!(
            self,
            request,
            join_token,
            if request.get_ref().rotate { Retry::IfNeverSent } else { Retry::Always },
            async {
                let role = crate::security::parse_join_role(&request.role)?;
                if request.rotate {
                    let token = crate::security::new_token(&self.manager.state())?;
                    self.manager.propose(vec![Action::SetJoinToken { role, token: token.clone() }]).await?;
                    tracing::info!(role = %request.role, "join token rotated");
                    return Ok(JoinTokenResponse { token });
                }
                Ok(JoinTokenResponse { token: crate::security::token(&self.manager.state(), role)? })
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use shoal_store::Batch;

    use super::*;

    /// A forward to an address where nothing listens fails before anything is sent; an answer
    /// from the leader is an answer, whatever its code; any other transport failure may have
    /// reached the leader.
    #[tokio::test]
    async fn forward_failures_are_told_apart_by_type() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let addr = closed.local_addr().expect("address").to_string();
        drop(closed);
        let tls = shoal_tls::PinnedCa::new(None).client_config().expect("a client configuration");
        let endpoint = tonic::transport::Endpoint::from_shared(shoal_tls::client::uri(&addr)).expect("uri");
        let channel = shoal_tls::client::connect_lazy(endpoint, tls);
        let refused = ControlClient::new(channel).list_services(ListServicesRequest::default()).await;
        let refused = refused.expect_err("nothing listens there");
        assert_eq!(forward_failure(&refused), ForwardFailure::NeverSent, "{refused:?}");

        let answered = Status::unavailable("no leader is available");
        assert_eq!(forward_failure(&answered), ForwardFailure::Answered);
        let broken = Status::from_error(Box::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe)));
        assert_eq!(forward_failure(&broken), ForwardFailure::InFlight, "{broken:?}");
        let message = interrupted_forward(&addr, ForwardFailure::InFlight, &broken);
        assert_eq!(message.code(), tonic::Code::Unavailable);
        assert!(message.message().contains("may or may not have been applied"), "{}", message.message());
    }

    #[test]
    fn services_are_found_by_id_name_or_unique_id_prefix() {
        let mut state = State::default();
        let create =
            |id: &str, name: &str| Action::CreateService { id: id.into(), spec: ServiceSpec::new(name, "busybox") };
        state.apply(1, &Batch::new(1, vec![create("abc123", "web"), create("abd456", "abc123x")])).unwrap();
        let found = |reference: &str| ControlApi::find_service(&state, reference).map(|s| s.id.clone());
        assert_eq!(found("abc123").unwrap(), "abc123");
        assert_eq!(found("web").unwrap(), "abc123");
        assert_eq!(found("abc123x").unwrap(), "abd456");
        assert_eq!(found("abd").unwrap(), "abd456");
        assert!(found("ab").unwrap_err().to_string().contains("ambiguous"), "{:?}", found("ab"));
        assert!(found("").is_err());
        assert!(found("nope").is_err());
    }
}
