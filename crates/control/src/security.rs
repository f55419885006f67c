//! The manager's side of cluster security: creating the CA and tokens at initialisation, the admin
//! bundle, issuing certificates to joining nodes and renewing them.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use shoal_store::State;
use shoal_tls::{ClusterCa, Credentials, JoinToken, PeerIdentity, Role};
use shoal_types::{ClusterSecurity, NodeRole};

use crate::{ApiError, ManagerError};

/// The manager's own certificate and key, under its data dir.
pub const TLS_DIR: &str = "tls";
/// The admin client bundle written at initialisation, for the CLI.
pub const ADMIN_DIR: &str = "admin";

pub struct InitMaterial {
    pub security: ClusterSecurity,
    pub manager: Credentials,
    pub admin: Credentials,
}

/// A new CA, the first manager's certificate, an admin bundle and both join tokens.
pub fn init_material(
    cluster_id: &str,
    node_id: &str,
    node_cert_expiry: Duration,
) -> Result<InitMaterial, ManagerError> {
    let err = |e: shoal_tls::TlsError| ManagerError::Config(format!("creating the cluster CA: {e}"));
    let now = SystemTime::now();
    let ca = ClusterCa::generate(cluster_id, now).map_err(err)?;
    let digest = ca.digest().map_err(err)?;
    let manager = ca.issue_with_new_key(cluster_id, node_id, Role::Manager, node_cert_expiry, now).map_err(err)?;
    let admin = ca
        .issue_with_new_key(cluster_id, &new_admin_id(), Role::Admin, shoal_tls::ADMIN_CERT_VALIDITY, now)
        .map_err(err)?;
    let security = ClusterSecurity {
        ca_cert_pem: ca.cert_pem,
        ca_key_pem: ca.key_pem,
        worker_token: JoinToken::generate(digest).to_string(),
        manager_token: JoinToken::generate(digest).to_string(),
        unlock_key: None,
    };
    Ok(InitMaterial { security, manager, admin })
}

/// Writes `<data-dir>/admin/{ca,cert,key}.pem` and, if `~/.shoal/tls` holds no bundle yet,
/// copies it there so the CLI on this machine works without flags. Both copies are the cluster's
/// admin credentials: their directories are 0700 and the files 0600 (`Credentials::save`), and a
/// missing `~/.shoal` is created 0700 too.
pub fn install_admin_bundle(
    data_dir: &Path,
    admin: &Credentials,
    to_home: bool,
) -> Result<Option<PathBuf>, ManagerError> {
    let dir = data_dir.join(ADMIN_DIR);
    admin.save(&dir).map_err(|e| ManagerError::DataDir(format!("writing the admin bundle: {e}")))?;
    if !to_home {
        return Ok(None);
    }
    let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) else { return Ok(None) };
    let user_dir = PathBuf::from(home).join(".shoal").join("tls");
    let empty = std::fs::read_dir(&user_dir).map(|mut d| d.next().is_none()).unwrap_or(true);
    if !empty {
        tracing::info!(dir = %user_dir.display(), "~/.shoal/tls already holds a bundle; left as it is (use --tls-dir or SHOAL_TLS_DIR with {})", dir.display());
        return Ok(None);
    }
    match admin.save(&user_dir) {
        Ok(()) => Ok(Some(user_dir)),
        Err(e) => {
            tracing::warn!(error = %e, "could not copy the admin bundle to ~/.shoal/tls");
            Ok(None)
        }
    }
}

/// Admin certificates are not nodes: each gets an id of its own, never listed by `node ls`.
fn new_admin_id() -> String {
    let id = shoal_types::ids::new_id();
    format!("admin-{}", id.get(..12).unwrap_or(&id))
}

/// Signs an admin client certificate over `csr_pem` for a manager that joins, so the CLI works on
/// its machine as on the first manager's. Only a caller holding a manager certificate reaches
/// this (`JoinManager` checks it), and a manager may act as an admin anyway.
pub fn issue_admin(state: &State, csr_pem: &str) -> Result<String, ApiError> {
    let security =
        state.security().ok_or_else(|| ApiError::Unavailable("the cluster CA is not initialised yet".into()))?;
    let cluster = state.cluster().ok_or_else(|| ApiError::Unavailable("the cluster is not initialised yet".into()))?;
    ca(security)
        .issue(csr_pem, &cluster.id, &new_admin_id(), Role::Admin, shoal_tls::ADMIN_CERT_VALIDITY, SystemTime::now())
        .map_err(|e| ApiError::InvalidArgument(format!("admin_csr_pem: {e}")))
}

fn ca(security: &ClusterSecurity) -> ClusterCa {
    ClusterCa { cert_pem: security.ca_cert_pem.clone(), key_pem: security.ca_key_pem.clone() }
}

/// A join role as the API names it: "worker" or "manager".
pub fn parse_join_role(role: &str) -> Result<NodeRole, ApiError> {
    match role {
        "worker" => Ok(NodeRole::Worker),
        "manager" => Ok(NodeRole::Manager),
        other => Err(ApiError::InvalidArgument(format!("role: {other:?} is not one of worker, manager"))),
    }
}

fn current_token(security: &ClusterSecurity, role: NodeRole) -> &str {
    match role {
        NodeRole::Worker => &security.worker_token,
        NodeRole::Manager => &security.manager_token,
    }
}

/// What a joining node receives.
pub struct IssuedCertificate {
    pub node_id: String,
    pub cert_pem: String,
    pub ca_pem: String,
    pub cluster_id: String,
}

/// Checks a join token for `role` and signs the CSR for a new node id. Reads the store only:
/// a refused join writes nothing.
pub fn issue(state: &State, token: &str, role: &str, csr_pem: &str) -> Result<IssuedCertificate, ApiError> {
    let node_role = parse_join_role(role)?;
    let (role, other_role) = match node_role {
        NodeRole::Worker => (Role::Worker, NodeRole::Manager),
        NodeRole::Manager => (Role::Manager, NodeRole::Worker),
    };
    let security =
        state.security().ok_or_else(|| ApiError::Unavailable("the cluster CA is not initialised yet".into()))?;
    let cluster = state.cluster().ok_or_else(|| ApiError::Unavailable("the cluster is not initialised yet".into()))?;
    let token = token.trim();
    let wanted = node_role.as_str();
    if token.is_empty() {
        return Err(ApiError::PermissionDenied(format!(
            "a join token is required to join as a {wanted}: get one with `shoal cluster join-token {wanted}` on a manager"
        )));
    }
    let matches = |r: NodeRole| {
        current_token(security, r).parse::<JoinToken>().map(|known| known.matches(token)).unwrap_or(false)
    };
    if !matches(node_role) {
        if matches(other_role) {
            return Err(ApiError::PermissionDenied(format!(
                "this is the cluster's {} join token; joining as a {wanted} needs the {wanted} token (`shoal cluster join-token {wanted}`)",
                other_role.as_str()
            )));
        }
        let digest = ca(security).digest().map_err(|e| ApiError::Internal(e.to_string()))?;
        return Err(ApiError::PermissionDenied(match token.parse::<JoinToken>() {
            Err(e) => e.to_string(),
            Ok(t) if t.ca_digest != digest => "the join token is for another cluster (its CA digest differs)".into(),
            Ok(_) => "invalid join token: it is not the cluster's current token (was it rotated?)".into(),
        }));
    }
    let node_id = shoal_types::ids::new_id();
    let validity = cluster.spec.node_cert_expiry.as_std();
    let cert_pem = ca(security)
        .issue(csr_pem, &cluster.id, &node_id, role, validity, SystemTime::now())
        .map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
    Ok(IssuedCertificate { node_id, cert_pem, ca_pem: security.ca_cert_pem.clone(), cluster_id: cluster.id.clone() })
}

/// A new certificate for the holder of `peer` (same node id and role).
pub fn renew(state: &State, peer: &PeerIdentity, csr_pem: &str) -> Result<String, ApiError> {
    let security =
        state.security().ok_or_else(|| ApiError::Unavailable("the cluster CA is not initialised yet".into()))?;
    let cluster = state.cluster().ok_or_else(|| ApiError::Unavailable("the cluster is not initialised yet".into()))?;
    if state.is_revoked(&peer.node_id) {
        return Err(ApiError::PermissionDenied(format!("node {} was removed from the cluster", peer.node_id)));
    }
    ca(security)
        .issue(
            csr_pem,
            &cluster.id,
            &peer.node_id,
            peer.role,
            cluster.spec.node_cert_expiry.as_std(),
            SystemTime::now(),
        )
        .map_err(|e| ApiError::InvalidArgument(e.to_string()))
}

/// The current token for `role` ("worker" or "manager").
pub fn token(state: &State, role: NodeRole) -> Result<String, ApiError> {
    let security =
        state.security().ok_or_else(|| ApiError::Unavailable("the cluster CA is not initialised yet".into()))?;
    Ok(current_token(security, role).to_string())
}

/// A fresh token for `role` (rotation), pinned to the same CA.
pub fn new_token(state: &State) -> Result<String, ApiError> {
    let security =
        state.security().ok_or_else(|| ApiError::Unavailable("the cluster CA is not initialised yet".into()))?;
    let digest = ca(security).digest().map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(JoinToken::generate(digest).to_string())
}
