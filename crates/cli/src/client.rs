//! A thin typed wrapper over the generated Control client: objects are decoded from the JSON the
//! manager sends, errors become [`CliError`]s.

use std::time::Duration;

use serde::de::DeserializeOwned;
use shoal_proto::v1 as pb;
use shoal_proto::v1::control_client::ControlClient;
use shoal_types::{ClusterInfo, Node, NodeSpec, Service, ServiceSpec, ServiceSummary, Task};
use tonic::transport::{Channel, Endpoint};

use crate::error::{CliError, error_chain};

/// Tasks per `ListTasks` page: about 5 MB of JSON, far under the message limit.
pub const TASK_PAGE: u32 = 5_000;
/// How long a TCP connect may take before the manager is reported unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The whole connection set-up (TCP and HTTP/2 handshake) is bounded by this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Each call must be answered within this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a long-lived stream pings its manager, and how long a ping may go unanswered before
/// the connection counts as dead: a manager that froze or was cut off closes nothing, so without
/// pings `events` would wait on it forever.
const STREAM_KEEPALIVE: Duration = Duration::from_secs(5);

/// The managers named by `--host`/`SHOAL_HOST`: one address, or several separated by commas
/// (`m1:4242,m2:4242`), tried in order.
pub fn host_addrs(host: &str) -> Vec<&str> {
    let addrs: Vec<&str> = host.split(',').map(str::trim).filter(|a| !a.is_empty()).collect();
    // Nothing but commas and blanks: keep it whole, so the error names what was given.
    if addrs.is_empty() { vec![host] } else { addrs }
}

/// `host:port` becomes `http://host:port`; anything with a scheme is used as given.
pub fn endpoint_uri(addr: &str) -> String {
    if addr.contains("://") { addr.to_string() } else { format!("http://{addr}") }
}

/// Where the client certificate bundle is: `--tls-dir`/`SHOAL_TLS_DIR`, else `~/.shoal/tls`.
static TLS_DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Sets the bundle directory for this process (from the command line); `None` means the default.
pub fn use_tls_dir(dir: Option<std::path::PathBuf>) {
    let dir = dir.unwrap_or_else(default_tls_dir);
    let _ = TLS_DIR.set(dir);
}

fn default_tls_dir() -> std::path::PathBuf {
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from).unwrap_or_else(|| "/".into());
    home.join(".shoal").join("tls")
}

/// The TLS configuration of this CLI: the admin (or any) certificate in the bundle directory.
fn client_tls() -> Result<(shoal_tls::ClientConfig, std::path::PathBuf), CliError> {
    client_tls_from(TLS_DIR.get_or_init(default_tls_dir))
}

fn client_tls_from(dir: &std::path::Path) -> Result<(shoal_tls::ClientConfig, std::path::PathBuf), CliError> {
    let dir = dir.to_path_buf();
    let credentials = shoal_tls::Credentials::load(&dir)
        .map_err(|e| CliError::Message(format!("the client certificate bundle is unusable: {e}")))?
        .ok_or_else(|| {
            CliError::Message(format!(
                "no client certificate in {}: copy a manager's <data-dir>/admin/ (ca.pem, cert.pem, key.pem) there, or use --tls-dir or SHOAL_TLS_DIR",
                dir.display()
            ))
        })?;
    let tls = shoal_tls::NodeTls::new(&credentials).and_then(|t| t.client_config()).map_err(|e| {
        CliError::Message(format!("the client certificate bundle in {} is unusable: {e}", dir.display()))
    })?;
    Ok((tls, dir))
}

pub struct Client {
    inner: ControlClient<Channel>,
    addr: String,
    /// Sent with every service write, recorded with the revision it makes (see
    /// [`Client::set_change_cause`]).
    change_cause: String,
    /// Sent with every service write: the id of the rollout it starts (empty: the manager names
    /// it).
    rollout_id: String,
}

impl Client {
    /// Connects eagerly so a dead address fails fast with one clear line. `host` may name several
    /// managers (comma-separated): the first that answers is used.
    pub async fn connect(host: &str) -> Result<Client, CliError> {
        Client::connect_any(&host_addrs(host), Some(REQUEST_TIMEOUT)).await
    }

    /// Connects for a long-lived stream (`events`): no per-request timeout, pings instead.
    pub async fn connect_streaming(host: &str) -> Result<Client, CliError> {
        Client::connect_any(&host_addrs(host), None).await
    }

    /// Like [`Client::connect_streaming`], but tries the managers of `host` that come after
    /// `away_from` first and `away_from` last: the stream through it just broke.
    pub async fn reconnect_streaming(host: &str, away_from: &str) -> Result<Client, CliError> {
        let mut addrs = host_addrs(host);
        if let Some(i) = addrs.iter().position(|a| *a == away_from) {
            addrs.rotate_left(i + 1);
        }
        Client::connect_any(&addrs, None).await
    }

    /// The first of `addrs` that answers. A manager that cannot be reached is skipped; any other
    /// failure (an unusable bundle, a refused certificate) would be the same with every manager
    /// and ends the search.
    async fn connect_any(addrs: &[&str], request_timeout: Option<Duration>) -> Result<Client, CliError> {
        let mut unreachable: Vec<(String, String)> = Vec::new();
        for addr in addrs {
            match Client::connect_with(addr, request_timeout).await {
                Ok(client) => return Ok(client),
                Err(CliError::Unreachable { addr, reason }) => unreachable.push((addr, reason)),
                Err(e) => return Err(e),
            }
        }
        match unreachable.len() {
            0 => Err(CliError::Unreachable { addr: String::new(), reason: "no manager address given".into() }),
            1 => {
                let (addr, reason) = unreachable.remove(0);
                Err(CliError::Unreachable { addr, reason })
            }
            _ => Err(CliError::Unreachable {
                addr: addrs.join(","),
                reason: unreachable.iter().map(|(a, r)| format!("{a}: {r}")).collect::<Vec<_>>().join("; "),
            }),
        }
    }

    async fn connect_with(addr: &str, request_timeout: Option<Duration>) -> Result<Client, CliError> {
        let unreachable = |reason: String| CliError::Unreachable { addr: addr.to_string(), reason };
        let mut endpoint = Endpoint::from_shared(endpoint_uri(addr))
            .map_err(|e| unreachable(format!("invalid address: {}", error_chain(&e))))?
            .connect_timeout(CONNECT_TIMEOUT);
        endpoint = match request_timeout {
            Some(timeout) => endpoint.timeout(timeout),
            None => endpoint
                .http2_keep_alive_interval(STREAM_KEEPALIVE)
                .keep_alive_timeout(STREAM_KEEPALIVE)
                .keep_alive_while_idle(true),
        };
        let (tls, dir) = client_tls()?;
        let connecting = shoal_tls::client::connect(endpoint, tls);
        let channel = match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
            Ok(Ok(channel)) => channel,
            Ok(Err(e)) => {
                let reason = error_chain(&e);
                if shoal_tls::client::is_handshake_failure(&e) {
                    return Err(CliError::Message(format!(
                        "TLS with the manager at {addr} failed: {reason} (the bundle in {} must be this cluster's admin bundle and not expired)",
                        dir.display()
                    )));
                }
                return Err(unreachable(reason));
            }
            Err(_) => {
                return Err(unreachable(format!("no answer within {}s", HANDSHAKE_TIMEOUT.as_secs())));
            }
        };
        // Explicit and equal to the manager's: tonic's default 4 MiB broke `service inspect` of a
        // service with a large spec history.
        let inner = ControlClient::new(channel)
            .max_decoding_message_size(shoal_proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(shoal_proto::MAX_MESSAGE_BYTES);
        Ok(Client { inner, addr: addr.to_string(), change_cause: String::new(), rollout_id: String::new() })
    }

    /// Why the service writes made through this client are made (`--change-cause`, or the
    /// command line): kept with the revisions they make.
    pub fn set_change_cause(&mut self, cause: String) {
        self.change_cause = cause;
    }

    /// The id of the rollout the next service write starts (`--rollout-id`).
    pub fn set_rollout_id(&mut self, id: Option<String>) {
        self.rollout_id = id.unwrap_or_default();
    }

    pub async fn create_service(&mut self, spec: &ServiceSpec) -> Result<Service, CliError> {
        let spec_json = encode(spec)?;
        let reply = self
            .inner
            .create_service(pb::CreateServiceRequest { spec_json, change_cause: self.change_cause.clone() })
            .await
            .map_err(|s| failed(&self.addr, s))?
            .into_inner();
        decode("service", &reply.service_json)
    }

    pub async fn get_service(&mut self, service: &str) -> Result<Service, CliError> {
        let request = pb::GetServiceRequest { service: service.to_string() };
        let reply = self
            .inner
            .get_service(request)
            .await
            .map_err(|s| failed(&self.addr, s).not_found_as("service", service))?;
        decode("service", &reply.into_inner().service_json)
    }

    /// Like [`Client::get_service`], but a service that does not exist (any more) is `None`.
    pub async fn find_service(&mut self, service: &str) -> Result<Option<Service>, CliError> {
        let request = pb::GetServiceRequest { service: service.to_string() };
        match self.inner.get_service(request).await {
            Ok(reply) => decode("service", &reply.into_inner().service_json).map(Some),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
            Err(status) => Err(failed(&self.addr, status)),
        }
    }

    /// The current (or, with `rotate`, a new) join token for "worker" or "manager".
    pub async fn join_token(&mut self, role: &str, rotate: bool) -> Result<String, CliError> {
        let request = pb::JoinTokenRequest { role: role.to_string(), rotate };
        let reply = self.inner.join_token(request).await.map_err(|s| failed(&self.addr, s))?;
        Ok(reply.into_inner().token)
    }

    /// Changes the cluster's settings; `None` leaves one as it is.
    /// Pauses, resumes or aborts a service's update or rollback.
    pub async fn control_rollout(&mut self, service: &str, op: pb::RolloutOp) -> Result<Service, CliError> {
        let request = pb::ControlRolloutRequest {
            service: service.to_string(),
            op: op as i32,
            change_cause: self.change_cause.clone(),
            rollout_id: self.rollout_id.clone(),
        };
        let reply = self
            .inner
            .control_rollout(request)
            .await
            .map_err(|s| failed(&self.addr, s).not_found_as("service", service))?
            .into_inner();
        decode("service", &reply.service_json)
    }

    /// What an update of `service` to `spec` would do (nothing is written).
    pub async fn plan_update(
        &mut self,
        service: &str,
        spec: &ServiceSpec,
    ) -> Result<shoal_types::UpdatePlan, CliError> {
        let request = pb::PlanUpdateRequest { service: service.to_string(), spec_json: encode(spec)? };
        let reply = self
            .inner
            .plan_update(request)
            .await
            .map_err(|s| failed(&self.addr, s).not_found_as("service", service))?
            .into_inner();
        decode("plan", &reply.plan_json)
    }

    /// The kept rollout records of one service (or of all for ""), oldest first per service.
    pub async fn list_rollouts(&mut self, service: &str) -> Result<Vec<shoal_types::Rollout>, CliError> {
        let request = pb::ListRolloutsRequest { service: service.to_string() };
        let reply = self
            .inner
            .list_rollouts(request)
            .await
            .map_err(|s| failed(&self.addr, s).not_found_as("service", service))?
            .into_inner();
        reply.rollouts_json.iter().map(|json| decode("rollout", json)).collect()
    }

    /// A service's kept revisions, oldest first.
    pub async fn list_revisions(&mut self, service: &str) -> Result<Vec<shoal_types::Revision>, CliError> {
        let request = pb::ListRevisionsRequest { service: service.to_string() };
        let reply = self
            .inner
            .list_revisions(request)
            .await
            .map_err(|s| failed(&self.addr, s).not_found_as("service", service))?
            .into_inner();
        reply.revisions_json.iter().map(|json| decode("revision", json)).collect()
    }

    /// Changes the settings given (`None` leaves one as it is).
    pub async fn update_cluster(
        &mut self,
        settings: &crate::args::ClusterUpdateArgs,
    ) -> Result<shoal_types::Cluster, CliError> {
        let request = pb::UpdateClusterRequest {
            max_replicas: settings.max_replicas.unwrap_or(0),
            task_history_limit: settings.task_history_limit.unwrap_or(0),
            revision_history_limit: settings.revision_history_limit.unwrap_or(0),
        };
        let reply = self.inner.update_cluster(request).await.map_err(|s| failed(&self.addr, s))?;
        decode("cluster", &reply.into_inner().cluster_json)
    }

    /// The manager address this client talks to, as given.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Replaces the spec of `service` (id, name or id prefix), based on the `version` read.
    pub async fn update_service(
        &mut self,
        service: &str,
        version: u64,
        spec: &ServiceSpec,
    ) -> Result<Service, CliError> {
        let request = pb::UpdateServiceRequest {
            service: service.to_string(),
            version,
            spec_json: encode(spec)?,
            change_cause: self.change_cause.clone(),
            rollout_id: self.rollout_id.clone(),
            ..Default::default()
        };
        let reply = self
            .inner
            .update_service(request)
            .await
            .map_err(|s| failed(&self.addr, s).not_found_as("service", service))?;
        decode("service", &reply.into_inner().service_json)
    }

    /// Makes the previous spec of `service` current again, based on the `version` read.
    /// Push-style rollback, or with `to_revision` a rollback to that kept revision.
    pub async fn rollback_service(
        &mut self,
        service: &str,
        version: u64,
        to_revision: Option<u64>,
    ) -> Result<Service, CliError> {
        let request = pb::UpdateServiceRequest {
            service: service.to_string(),
            version,
            rollback: true,
            rollback_to_revision: to_revision.unwrap_or(0),
            change_cause: self.change_cause.clone(),
            rollout_id: self.rollout_id.clone(),
            ..Default::default()
        };
        let reply = self.inner.update_service(request).await.map_err(|s| match to_revision {
            // The manager's own words: `revision 7 not found for service web (kept: 3-12)`.
            Some(_) => failed(&self.addr, s),
            None => failed(&self.addr, s).not_found_as("service", service),
        })?;
        decode("service", &reply.into_inner().service_json)
    }

    pub async fn list_services(&mut self) -> Result<Vec<Service>, CliError> {
        let request = pb::ListServicesRequest { summaries: false };
        let reply = self.inner.list_services(request).await.map_err(|s| failed(&self.addr, s))?.into_inner();
        reply.services_json.iter().map(|json| decode("service", json)).collect()
    }

    /// What `service ls` shows, counted by the manager: never whole specs.
    pub async fn list_service_summaries(&mut self) -> Result<Vec<ServiceSummary>, CliError> {
        let request = pb::ListServicesRequest { summaries: true };
        let reply = self.inner.list_services(request).await.map_err(|s| failed(&self.addr, s))?.into_inner();
        reply.summaries_json.iter().map(|json| decode("service", json)).collect()
    }

    /// Removes a service and returns its id.
    pub async fn remove_service(&mut self, service: &str) -> Result<String, CliError> {
        let request = pb::RemoveServiceRequest { service: service.to_string() };
        let reply = self
            .inner
            .remove_service(request)
            .await
            .map_err(|s| failed(&self.addr, s).not_found_as("service", service))?;
        Ok(reply.into_inner().id)
    }

    /// Tasks, optionally only those of one service and/or one node (empty = all), fetched in
    /// pages of [`TASK_PAGE`] so no answer grows with the cluster.
    pub async fn list_tasks(&mut self, service: &str, node: &str) -> Result<Vec<Task>, CliError> {
        let mut tasks = Vec::new();
        let mut after = String::new();
        loop {
            let request = pb::ListTasksRequest {
                service: service.to_string(),
                node: node.to_string(),
                limit: TASK_PAGE,
                after,
                ..Default::default()
            };
            let reply = self.inner.list_tasks(request).await.map_err(|s| failed(&self.addr, s))?.into_inner();
            for json in &reply.tasks_json {
                tasks.push(decode("task", json)?);
            }
            if reply.next_after.is_empty() {
                return Ok(tasks);
            }
            after = reply.next_after;
        }
    }

    pub async fn list_nodes(&mut self) -> Result<Vec<Node>, CliError> {
        let reply =
            self.inner.list_nodes(pb::ListNodesRequest {}).await.map_err(|s| failed(&self.addr, s))?.into_inner();
        reply.nodes_json.iter().map(|json| decode("node", json)).collect()
    }

    pub async fn get_node(&mut self, node: &str) -> Result<Node, CliError> {
        let request = pb::GetNodeRequest { node: node.to_string() };
        let reply = self.inner.get_node(request).await.map_err(|s| failed(&self.addr, s).not_found_as("node", node))?;
        decode("node", &reply.into_inner().node_json)
    }

    /// Replaces the spec (availability, labels) of `node`, based on the `version` read.
    pub async fn update_node(&mut self, node: &str, version: u64, spec: &NodeSpec) -> Result<Node, CliError> {
        let request = pb::UpdateNodeRequest { node: node.to_string(), version, spec_json: encode(spec)? };
        let reply =
            self.inner.update_node(request).await.map_err(|s| failed(&self.addr, s).not_found_as("node", node))?;
        decode("node", &reply.into_inner().node_json)
    }

    /// Opens the stream of changes: only objects of `types` (empty: all), only those of `service`
    /// (empty: all), after replaying the objects changed (and removed) since `since`. Use a client
    /// from [`Client::connect_streaming`].
    pub async fn watch(
        &mut self,
        types: Vec<String>,
        service: &str,
        since: Option<crate::args::events::Since>,
    ) -> Result<tonic::Streaming<pb::WatchEvent>, CliError> {
        use crate::args::events::Since;
        let (since_index, since_time) = match since {
            None => (0, 0),
            Some(Since::Index(index)) => (index, 0),
            Some(Since::Time(at)) => (0, at),
        };
        let request = pb::WatchRequest { types, service: service.to_string(), since_index, since_time };
        let reply =
            self.inner.watch(request).await.map_err(|s| failed(&self.addr, s).not_found_as("service", service))?;
        Ok(reply.into_inner())
    }

    /// Creates a secret or config; the answer leaves the value out.
    pub async fn create_data(
        &mut self,
        kind: shoal_types::DataKind,
        spec: &shoal_types::DataSpec,
    ) -> Result<shoal_types::DataObject, CliError> {
        let request = pb::CreateDataRequest { kind: kind.as_str().to_string(), spec_json: encode(spec)? };
        let reply = self.inner.create_data(request).await.map_err(|s| failed(&self.addr, s))?;
        decode(kind.as_str(), &reply.into_inner().object_json)
    }

    pub async fn list_data(&mut self, kind: shoal_types::DataKind) -> Result<Vec<shoal_types::DataObject>, CliError> {
        let request = pb::ListDataRequest { kind: kind.as_str().to_string() };
        let reply = self.inner.list_data(request).await.map_err(|s| failed(&self.addr, s))?;
        reply.into_inner().objects_json.iter().map(|json| decode(kind.as_str(), json)).collect()
    }

    pub async fn get_data(
        &mut self,
        kind: shoal_types::DataKind,
        reference: &str,
    ) -> Result<shoal_types::DataObject, CliError> {
        let request = pb::GetDataRequest { kind: kind.as_str().to_string(), reference: reference.to_string() };
        let reply = self.inner.get_data(request).await.map_err(|s| failed(&self.addr, s))?;
        decode(kind.as_str(), &reply.into_inner().object_json)
    }

    pub async fn remove_data(&mut self, kind: shoal_types::DataKind, reference: &str) -> Result<String, CliError> {
        let request = pb::RemoveDataRequest { kind: kind.as_str().to_string(), reference: reference.to_string() };
        let reply = self.inner.remove_data(request).await.map_err(|s| failed(&self.addr, s))?;
        Ok(reply.into_inner().id)
    }

    /// `stack deploy`: the whole stack in one write; the stack's new revision (none when the
    /// deploy changed nothing) and warnings.
    pub async fn deploy_stack(
        &mut self,
        deploy: &shoal_types::stack::StackDeploy,
    ) -> Result<(Option<shoal_types::stack::StackRevision>, Vec<String>), CliError> {
        let request = pb::DeployStackRequest { deploy_json: encode(deploy)?, change_cause: self.change_cause.clone() };
        let reply = self.inner.deploy_stack(request).await.map_err(|s| failed(&self.addr, s))?.into_inner();
        if reply.revision_json.is_empty() {
            return Ok((None, reply.warnings));
        }
        Ok((Some(decode("stack revision", &reply.revision_json)?), reply.warnings))
    }

    /// `stack rollback`: the stack's new revision and warnings.
    pub async fn rollback_stack(
        &mut self,
        stack: &str,
        to_revision: u64,
        prune: bool,
    ) -> Result<(shoal_types::stack::StackRevision, Vec<String>), CliError> {
        let request = pb::RollbackStackRequest {
            stack: stack.to_string(),
            to_revision,
            prune,
            change_cause: self.change_cause.clone(),
        };
        let reply = self.inner.rollback_stack(request).await.map_err(|s| failed(&self.addr, s))?.into_inner();
        Ok((decode("stack revision", &reply.revision_json)?, reply.warnings))
    }

    /// The stack's kept revisions, oldest first.
    pub async fn list_stack_revisions(
        &mut self,
        stack: &str,
    ) -> Result<Vec<shoal_types::stack::StackRevision>, CliError> {
        let request = pb::ListStackRevisionsRequest { stack: stack.to_string() };
        let reply = self.inner.list_stack_revisions(request).await.map_err(|s| failed(&self.addr, s))?;
        reply.into_inner().revisions_json.iter().map(|json| decode("stack revision", json)).collect()
    }

    /// Creates a route; its warnings come with it.
    pub async fn create_route(
        &mut self,
        spec: &shoal_types::traffic::RouteSpec,
    ) -> Result<(shoal_types::traffic::Route, Vec<String>), CliError> {
        let request = pb::CreateRouteRequest { spec_json: encode(spec)? };
        let reply = self.inner.create_route(request).await.map_err(|s| failed(&self.addr, s))?.into_inner();
        Ok((decode("route", &reply.route_json)?, reply.warnings))
    }

    pub async fn update_route(
        &mut self,
        route: &str,
        version: u64,
        spec: &shoal_types::traffic::RouteSpec,
    ) -> Result<(shoal_types::traffic::Route, Vec<String>), CliError> {
        let request = pb::UpdateRouteRequest { route: route.to_string(), version, spec_json: encode(spec)? };
        let reply = self.inner.update_route(request).await.map_err(|s| failed(&self.addr, s))?.into_inner();
        Ok((decode("route", &reply.route_json)?, reply.warnings))
    }

    pub async fn list_routes(&mut self) -> Result<Vec<shoal_types::traffic::Route>, CliError> {
        let reply = self.inner.list_routes(pb::ListRoutesRequest {}).await.map_err(|s| failed(&self.addr, s))?;
        reply.into_inner().routes_json.iter().map(|json| decode("route", json)).collect()
    }

    pub async fn remove_route(&mut self, route: &str) -> Result<String, CliError> {
        let request = pb::RemoveRouteRequest { route: route.to_string() };
        let reply = self.inner.remove_route(request).await.map_err(|s| failed(&self.addr, s))?;
        Ok(reply.into_inner().id)
    }

    /// The cluster's unlock key (autolock).
    pub async fn unlock_key(&mut self) -> Result<String, CliError> {
        let reply = self.inner.unlock_key(pb::UnlockKeyRequest {}).await.map_err(|s| failed(&self.addr, s))?;
        Ok(reply.into_inner().key)
    }

    /// The lines of a service's or task's containers (`service logs`).
    pub async fn service_logs(
        &mut self,
        request: pb::ServiceLogsRequest,
    ) -> Result<tonic::Streaming<pb::ServiceLogsMessage>, CliError> {
        let reply = self.inner.service_logs(request).await.map_err(|s| failed(&self.addr, s))?;
        Ok(reply.into_inner())
    }

    /// [`Client::watch`] replaying from a raft index (0: live changes only), with the manager's
    /// errors as they are (a missing service is `NotFound`): what the progress display follows.
    pub async fn watch_from(
        &mut self,
        types: Vec<String>,
        service: &str,
        since_index: u64,
    ) -> Result<tonic::Streaming<pb::WatchEvent>, CliError> {
        let request = pb::WatchRequest { types, service: service.to_string(), since_index, since_time: 0 };
        let reply = self.inner.watch(request).await.map_err(|s| failed(&self.addr, s))?;
        Ok(reply.into_inner())
    }

    /// Removes a node and returns its id.
    pub async fn remove_node(&mut self, node: &str, force: bool) -> Result<String, CliError> {
        let request = pb::RemoveNodeRequest { node: node.to_string(), force };
        let reply =
            self.inner.remove_node(request).await.map_err(|s| failed(&self.addr, s).not_found_as("node", node))?;
        Ok(reply.into_inner().id)
    }

    pub async fn demote_node(&mut self, node: &str) -> Result<Node, CliError> {
        let request = pb::DemoteNodeRequest { node: node.to_string() };
        let reply =
            self.inner.demote_node(request).await.map_err(|s| failed(&self.addr, s).not_found_as("node", node))?;
        decode("node", &reply.into_inner().node_json)
    }

    /// The leader's view, or with `local` the contacted manager's own.
    pub async fn cluster_info(&mut self, local: bool) -> Result<ClusterInfo, CliError> {
        let reply = self
            .inner
            .cluster_info(pb::ClusterInfoRequest { local })
            .await
            .map_err(|s| failed(&self.addr, s))?
            .into_inner();
        decode("cluster info", &reply.info_json)
    }
}

/// A failed call as a [`CliError`]; tonic's bare "Timeout expired" says which manager and how long.
fn failed(addr: &str, status: tonic::Status) -> CliError {
    if status.message() == "Timeout expired" {
        return CliError::Message(format!(
            "the manager at {addr} did not answer within {}s",
            REQUEST_TIMEOUT.as_secs()
        ));
    }
    CliError::from(status)
}

fn encode<T: serde::Serialize>(value: &T) -> Result<String, CliError> {
    serde_json::to_string(value).map_err(|e| CliError::Message(format!("cannot encode the request: {e}")))
}

fn decode<T: DeserializeOwned>(what: &str, json: &str) -> Result<T, CliError> {
    serde_json::from_str(json)
        .map_err(|e| CliError::Message(format!("cannot decode the {what} sent by the manager: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Points this test process's CLI client at a throwaway admin bundle (the connection
    /// errors below happen before any certificate is shown to anyone).
    fn use_test_bundle() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            let dir = std::env::temp_dir().join(format!("shoal-cli-test-bundle-{}", std::process::id()));
            let now = std::time::SystemTime::now();
            let ca = shoal_tls::ClusterCa::generate("test", now).unwrap();
            let admin =
                ca.issue_with_new_key("test", "admin", shoal_tls::Role::Admin, Duration::from_secs(3600), now).unwrap();
            admin.save(&dir).unwrap();
            use_tls_dir(Some(dir));
        });
    }

    #[tokio::test]
    async fn a_missing_bundle_is_named_with_what_to_do() {
        let dir = std::env::temp_dir().join("shoal-cli-test-no-bundle-here");
        let err = client_tls_from(&dir).expect_err("no bundle");
        let text = err.to_string();
        assert!(text.contains("no client certificate in") && text.contains("--tls-dir or SHOAL_TLS_DIR"), "{text}");
    }

    #[test]
    fn host_names_one_or_several_managers() {
        assert_eq!(host_addrs("127.0.0.1:4242"), vec!["127.0.0.1:4242"]);
        assert_eq!(host_addrs("m1:4242, m2:4242,,m3:4242 "), vec!["m1:4242", "m2:4242", "m3:4242"]);
        assert_eq!(host_addrs(" , "), vec![" , "]);
    }

    #[tokio::test]
    async fn the_next_manager_is_tried_when_one_does_not_answer() {
        use_test_bundle();
        let closed = || {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            format!("127.0.0.1:{port}")
        };
        let (a, b) = (closed(), closed());
        let err = match Client::connect(&format!("{a},{b}")).await {
            Ok(_) => panic!("connected to closed ports"),
            Err(e) => e,
        };
        // Both were tried, and the error names each with its reason.
        let text = err.to_string();
        assert!(text.starts_with(&format!("cannot reach a manager at {a},{b}: {a}: ")), "{text}");
        assert!(text.contains(&format!("; {b}: ")), "{text}");
    }

    #[test]
    fn addresses_become_http_uris() {
        assert_eq!(endpoint_uri("127.0.0.1:4242"), "http://127.0.0.1:4242");
        assert_eq!(endpoint_uri("https://m1:4242"), "https://m1:4242");
    }

    #[tokio::test]
    async fn a_closed_port_fails_fast_with_a_clear_line() {
        use_test_bundle();
        // Bind then drop a listener so the port is (almost certainly) closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = format!("127.0.0.1:{port}");
        let err = match Client::connect(&addr).await {
            Ok(_) => panic!("connected to a closed port"),
            Err(e) => e,
        };
        let text = err.to_string();
        assert!(text.starts_with(&format!("cannot reach a manager at {addr}: ")), "{text}");
        assert!(text.ends_with("(is shoal-manager running? use --host or SHOAL_HOST)"), "{text}");
        assert_eq!(err.exit_code(), 1);
    }

    #[tokio::test]
    async fn a_malformed_address_is_reported_as_unreachable() {
        let err = match Client::connect("not a host").await {
            Ok(_) => panic!("connected to a malformed address"),
            Err(e) => e,
        };
        assert!(err.to_string().starts_with("cannot reach a manager at not a host: invalid address"), "{err}");
    }
}
