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

use std::sync::Arc;
use std::task::{Context, Poll};

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

/// A tower layer applying [`authorize`] to every request before it reaches a service.
#[derive(Clone)]
pub struct AuthLayer {
    pub manager: Arc<Manager>,
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Authorized<S>;

    fn layer(&self, inner: S) -> Authorized<S> {
        Authorized { inner, manager: self.manager.clone() }
    }
}

#[derive(Clone)]
pub struct Authorized<S> {
    inner: S,
    manager: Arc<Manager>,
}

type BoxFuture<T, E> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, E>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Authorized<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let info = request.extensions().get::<PeerInfo>();
        let decision = {
            let state = self.manager.state();
            authorize(
                request.uri().path(),
                info.and_then(|i| i.identity.as_ref()),
                state.cluster().map(|c| c.id.as_str()),
                |node| state.is_revoked(node),
            )
        };
        match decision {
            Ok(()) => {
                // The service that was polled ready serves this call; a fresh clone waits for the next.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Box::pin(inner.call(request))
            }
            Err(reason) => {
                let remote = info.and_then(|i| i.remote_addr).map(|a| a.to_string()).unwrap_or_default();
                tracing::warn!(peer = %remote, path = request.uri().path(), reason = %reason, "call refused");
                Box::pin(async move { Ok(Status::permission_denied(reason).into_http()) })
            }
        }
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
