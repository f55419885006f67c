//! Who may call what, decided per request from the client's certificate (mutual TLS):
//!
//! | API | allowed |
//! |---|---|
//! | `Control/IssueNodeCertificate` | anyone (a join token is checked inside) |
//! | `Control/RenewNodeCertificate` | managers and workers, for their own certificate |
//! | the rest of `Control` | managers and admins |
//! | `RaftTransport` | managers |
//! | `Dispatcher` | workers (for their own node id, checked in the dispatcher) |
//!
//! Certificates of removed nodes are refused everywhere.
//!
//! A caller without a certificate can reach the join call only, and cheaply: at most
//! [`MAX_ANONYMOUS_CALLS_PER_CONNECTION`] of its calls run at once on one connection, and each may
//! send at most [`MAX_ANONYMOUS_REQUEST_BYTES`] (a token and a CSR are about 1 KiB). The accept loop
//! (`shoal_tls::server`) bounds how many such connections there are and for how long.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body::{Frame, SizeHint};
use parking_lot::Mutex;
use shoal_tls::server::LogThrottle;
use shoal_tls::{PeerIdentity, PeerInfo, Role};
use tonic::Status;

use crate::Manager;

/// What a gRPC method requires of its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Anyone,
    OwnCertificate,
    ManagerOrAdmin,
    Manager,
    Worker,
}

pub fn required_access(path: &str) -> Access {
    match path {
        "/shoal.v1.Control/IssueNodeCertificate" => Access::Anyone,
        "/shoal.v1.Control/RenewNodeCertificate" => Access::OwnCertificate,
        p if p.starts_with("/shoal.v1.RaftTransport/") => Access::Manager,
        p if p.starts_with("/shoal.v1.Dispatcher/") => Access::Worker,
        _ => Access::ManagerOrAdmin,
    }
}

/// Decides one call. `revoked` says whether a node id was removed from the cluster.
pub fn authorize(
    path: &str,
    peer: Option<&PeerIdentity>,
    cluster_id: Option<&str>,
    revoked: impl Fn(&str) -> bool,
) -> Result<(), String> {
    let access = required_access(path);
    if access == Access::Anyone {
        return Ok(());
    }
    let Some(peer) = peer else {
        return Err(format!(
            "{path} needs a client certificate; none was presented (a node joins with `--token`, the CLI uses the admin bundle in ~/.shoal/tls or --tls-dir)"
        ));
    };
    if let Some(cluster_id) = cluster_id
        && peer.cluster_id != cluster_id
    {
        return Err(format!(
            "the certificate of {} {} belongs to cluster {}, not this one",
            peer.role, peer.node_id, peer.cluster_id
        ));
    }
    if peer.role != Role::Admin && revoked(&peer.node_id) {
        return Err(format!(
            "node {} was removed from the cluster; its certificate is no longer accepted",
            peer.node_id
        ));
    }
    let allowed = match access {
        Access::Anyone => true,
        Access::OwnCertificate => matches!(peer.role, Role::Manager | Role::Worker),
        Access::ManagerOrAdmin => matches!(peer.role, Role::Manager | Role::Admin),
        Access::Manager => peer.role == Role::Manager,
        Access::Worker => peer.role == Role::Worker,
    };
    if allowed {
        Ok(())
    } else {
        let needed = match access {
            Access::OwnCertificate => "a node certificate",
            Access::ManagerOrAdmin => "a manager or admin certificate",
            Access::Manager => "a manager certificate",
            Access::Worker => "a worker certificate",
            Access::Anyone => unreachable!("allowed above"),
        };
        Err(format!("{path} needs {needed}; {} {} presented a {} certificate", peer.role, peer.node_id, peer.role))
    }
}

/// The caller's verified identity, if it presented a certificate.
pub fn peer<T>(request: &tonic::Request<T>) -> Option<&PeerIdentity> {
    request.extensions().get::<PeerInfo>().and_then(|p| p.identity.as_ref())
}

pub fn remote<T>(request: &tonic::Request<T>) -> String {
    request
        .extensions()
        .get::<PeerInfo>()
        .and_then(|p| p.remote_addr)
        .map(|a| a.to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// What one call of a client without a certificate may send, in bytes (the whole request body,
/// gRPC framing included). tonic reserves a message's announced length as soon as its 5-byte
/// prefix arrives, so the announced length is checked too, before tonic sees it.
pub const MAX_ANONYMOUS_REQUEST_BYTES: usize = 64 * 1024;
/// Calls of a client without a certificate running at once on one connection (a joining node
/// makes one).
pub const MAX_ANONYMOUS_CALLS_PER_CONNECTION: usize = 2;

static CALL_REFUSED: LogThrottle = LogThrottle::per_second();
static TOO_MANY_ANONYMOUS_CALLS: LogThrottle = LogThrottle::per_second();
static ANONYMOUS_REQUEST_TOO_LARGE: LogThrottle = LogThrottle::per_second();

/// A tower layer applying [`authorize`] to every request before it reaches a service, and the
/// limits above to callers without a certificate.
#[derive(Clone)]
pub struct AuthLayer {
    manager: Arc<Manager>,
    anonymous_calls: Arc<Mutex<HashMap<SocketAddr, usize>>>,
}

impl AuthLayer {
    pub fn new(manager: Arc<Manager>) -> AuthLayer {
        AuthLayer { manager, anonymous_calls: Arc::default() }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Authorized<S>;

    fn layer(&self, inner: S) -> Authorized<S> {
        Authorized { inner, manager: self.manager.clone(), anonymous_calls: self.anonymous_calls.clone() }
    }
}

#[derive(Clone)]
pub struct Authorized<S> {
    inner: S,
    manager: Arc<Manager>,
    /// Calls in progress per connection (a connection's remote address is unique while it is
    /// open) of callers without a certificate.
    anonymous_calls: Arc<Mutex<HashMap<SocketAddr, usize>>>,
}

/// One running call of a caller without a certificate; gives its place back when dropped.
struct AnonymousCall {
    calls: Arc<Mutex<HashMap<SocketAddr, usize>>>,
    remote: SocketAddr,
}

impl AnonymousCall {
    fn start(calls: &Arc<Mutex<HashMap<SocketAddr, usize>>>, remote: SocketAddr) -> Option<AnonymousCall> {
        let mut running = calls.lock();
        let count = running.entry(remote).or_insert(0);
        if *count >= MAX_ANONYMOUS_CALLS_PER_CONNECTION {
            return None;
        }
        *count += 1;
        Some(AnonymousCall { calls: calls.clone(), remote })
    }
}

impl Drop for AnonymousCall {
    fn drop(&mut self) {
        let mut running = self.calls.lock();
        if let Some(count) = running.get_mut(&self.remote) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                running.remove(&self.remote);
            }
        }
    }
}

type BoxFuture<T, E> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, E>> + Send>>;

impl<S> tower::Service<http::Request<tonic::body::Body>> for Authorized<S>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let info = request.extensions().get::<PeerInfo>();
        let remote = info.and_then(|i| i.remote_addr);
        let anonymous = info.is_none_or(|i| i.identity.is_none());
        let decision = {
            let state = self.manager.state();
            authorize(
                request.uri().path(),
                info.and_then(|i| i.identity.as_ref()),
                state.cluster().map(|c| c.id.as_str()),
                |node| state.is_revoked(node),
            )
        };
        if let Err(reason) = decision {
            if let Some(suppressed) = CALL_REFUSED.admit() {
                let peer = remote.map(|a| a.to_string()).unwrap_or_default();
                tracing::warn!(peer = %peer, path = request.uri().path(), reason = %reason, suppressed, "call refused");
            }
            return Box::pin(async move { Ok(Status::permission_denied(reason).into_http()) });
        }
        let mut slot = None;
        let request = if anonymous {
            if let Some(remote) = remote {
                match AnonymousCall::start(&self.anonymous_calls, remote) {
                    Some(call) => slot = Some(call),
                    None => {
                        if let Some(suppressed) = TOO_MANY_ANONYMOUS_CALLS.admit() {
                            tracing::warn!(
                                peer = %remote,
                                path = request.uri().path(),
                                limit = MAX_ANONYMOUS_CALLS_PER_CONNECTION,
                                suppressed,
                                "call refused: too many calls at once on one connection without a client certificate"
                            );
                        }
                        let status = Status::resource_exhausted(format!(
                            "a connection without a client certificate may run at most {MAX_ANONYMOUS_CALLS_PER_CONNECTION} calls at once"
                        ));
                        return Box::pin(async move { Ok(status.into_http()) });
                    }
                }
            }
            request.map(|body| tonic::body::Body::new(LimitedBody::new(body, MAX_ANONYMOUS_REQUEST_BYTES, remote)))
        } else {
            request
        };
        // The service that was polled ready serves this call; a fresh clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let response = inner.call(request);
        Box::pin(async move {
            // Held until the call is answered: a unary call's body has been read by then.
            let _slot = slot;
            response.await
        })
    }
}

/// A request body that fails with `ResourceExhausted` once more than `limit` bytes arrived, or as
/// soon as a gRPC message announces a length that would take it past `limit`.
struct LimitedBody {
    inner: tonic::body::Body,
    limit: usize,
    remote: Option<SocketAddr>,
    /// Bytes received so far.
    seen: usize,
    /// The prefix of the message being received (compression flag, 4-byte length), while partial.
    prefix: [u8; 5],
    prefix_len: usize,
    /// Bytes of the current message still to come.
    message_left: usize,
    failed: bool,
}

impl LimitedBody {
    fn new(inner: tonic::body::Body, limit: usize, remote: Option<SocketAddr>) -> LimitedBody {
        LimitedBody { inner, limit, remote, seen: 0, prefix: [0; 5], prefix_len: 0, message_left: 0, failed: false }
    }

    /// Follows the gRPC framing through `chunk`; `Err` once the limit would be passed.
    fn check(&mut self, chunk: &[u8]) -> Result<(), Status> {
        let start = self.seen;
        self.seen += chunk.len();
        if self.seen > self.limit {
            return Err(self.too_large(self.seen));
        }
        let mut at = 0;
        while at < chunk.len() {
            if self.message_left > 0 {
                let n = self.message_left.min(chunk.len() - at);
                self.message_left -= n;
                at += n;
                continue;
            }
            let n = (self.prefix.len() - self.prefix_len).min(chunk.len() - at);
            self.prefix[self.prefix_len..self.prefix_len + n].copy_from_slice(&chunk[at..at + n]);
            self.prefix_len += n;
            at += n;
            if self.prefix_len == self.prefix.len() {
                self.prefix_len = 0;
                let announced = u32::from_be_bytes([self.prefix[1], self.prefix[2], self.prefix[3], self.prefix[4]]);
                let announced = usize::try_from(announced).unwrap_or(usize::MAX);
                let total = (start + at).saturating_add(announced);
                if total > self.limit {
                    return Err(self.too_large(total));
                }
                self.message_left = announced;
            }
        }
        Ok(())
    }

    fn too_large(&self, bytes: usize) -> Status {
        if let Some(suppressed) = ANONYMOUS_REQUEST_TOO_LARGE.admit() {
            let peer = self.remote.map(|a| a.to_string()).unwrap_or_default();
            tracing::warn!(peer = %peer, bytes, limit = self.limit, suppressed, "call refused: request too large for a caller without a client certificate");
        }
        Status::resource_exhausted(format!(
            "a call without a client certificate may send at most {} bytes; this one would send {bytes}",
            self.limit
        ))
    }
}

impl http_body::Body for LimitedBody {
    type Data = tonic::codegen::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        if let Some(data) = frame.data_ref()
            && let Err(status) = self.check(data)
        {
            self.failed = true;
            return Poll::Ready(Some(Err(status)));
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    fn id(role: Role, node: &str) -> PeerIdentity {
        PeerIdentity {
            node_id: node.into(),
            role,
            cluster_id: "c1".into(),
            not_before: SystemTime::UNIX_EPOCH,
            not_after: SystemTime::UNIX_EPOCH,
            serial: String::new(),
        }
    }

    const PATHS: [&str; 6] = [
        "/shoal.v1.Control/IssueNodeCertificate",
        "/shoal.v1.Control/RenewNodeCertificate",
        "/shoal.v1.Control/ListServices",
        "/shoal.v1.RaftTransport/Send",
        "/shoal.v1.Dispatcher/Session",
        "/shoal.v1.Unknown/Call",
    ];

    fn table(peer: Option<&PeerIdentity>, revoked: bool) -> Vec<bool> {
        PATHS.iter().map(|p| authorize(p, peer, Some("c1"), |_| revoked).is_ok()).collect()
    }

    #[test]
    fn each_role_reaches_exactly_its_apis() {
        assert_eq!(table(None, false), [true, false, false, false, false, false]);
        assert_eq!(table(Some(&id(Role::Admin, "admin")), false), [true, false, true, false, false, true]);
        assert_eq!(table(Some(&id(Role::Manager, "m")), false), [true, true, true, true, false, true]);
        assert_eq!(table(Some(&id(Role::Worker, "w")), false), [true, true, false, false, true, false]);
    }

    #[test]
    fn removed_nodes_and_foreign_clusters_are_refused_everywhere_but_joining() {
        assert_eq!(table(Some(&id(Role::Worker, "w")), true), [true, false, false, false, false, false]);
        assert_eq!(table(Some(&id(Role::Manager, "m")), true), [true, false, false, false, false, false]);
        let mut foreign = id(Role::Manager, "m");
        foreign.cluster_id = "other".into();
        let err = authorize("/shoal.v1.Control/ListServices", Some(&foreign), Some("c1"), |_| false).unwrap_err();
        assert!(err.contains("belongs to cluster other"), "{err}");
    }

    fn grpc_prefix(len: u32) -> Vec<u8> {
        let mut out = vec![0u8];
        out.extend_from_slice(&len.to_be_bytes());
        out
    }

    #[test]
    fn an_anonymous_body_is_refused_as_soon_as_a_message_announces_more_than_the_limit() {
        let mut body = LimitedBody::new(tonic::body::Body::empty(), 1024, None);
        // The prefix split over two chunks is still read; 1,000 announced bytes fit.
        assert!(body.check(&grpc_prefix(1000)[..2]).is_ok());
        assert!(body.check(&grpc_prefix(1000)[2..]).is_ok());
        assert!(body.check(&[b'x'; 1000]).is_ok());
        // The next message announces 100 bytes: 1,005 + 5 + 100 would pass 1,024.
        let status = body.check(&grpc_prefix(100)).unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);

        let mut body = LimitedBody::new(tonic::body::Body::empty(), 1024, None);
        assert_eq!(body.check(&grpc_prefix(4 << 20)).unwrap_err().code(), tonic::Code::ResourceExhausted);
    }

    #[test]
    fn an_anonymous_body_is_refused_past_the_limit_whatever_it_announced() {
        let mut body = LimitedBody::new(tonic::body::Body::empty(), 1024, None);
        assert!(body.check(&grpc_prefix(10)).is_ok());
        assert!(body.check(&[b'x'; 10]).is_ok());
        assert!(body.check(&[b'x'; 1000]).is_err());
    }

    #[test]
    fn a_connection_runs_a_bounded_number_of_anonymous_calls() {
        let calls = Arc::default();
        let remote: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let first = AnonymousCall::start(&calls, remote).unwrap();
        let _second = AnonymousCall::start(&calls, remote).unwrap();
        assert!(AnonymousCall::start(&calls, remote).is_none());
        // Another connection has its own count; a finished call gives its place back.
        assert!(AnonymousCall::start(&calls, "127.0.0.1:1001".parse().unwrap()).is_some());
        drop(first);
        assert!(AnonymousCall::start(&calls, remote).is_some());
    }

    #[test]
    fn a_refusal_names_the_call_what_it_needs_and_what_was_presented() {
        let err = authorize("/shoal.v1.Control/ListServices", Some(&id(Role::Worker, "w1")), Some("c1"), |_| false)
            .unwrap_err();
        assert_eq!(
            err,
            "/shoal.v1.Control/ListServices needs a manager or admin certificate; worker w1 presented a worker certificate"
        );
    }
}
