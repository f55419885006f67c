//! Joining: a node without a certificate asks a manager for one with a join token, and keeps the
//! one it has renewed before it expires.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use shoal_proto::v1::IssueNodeCertificateRequest;
use shoal_proto::v1::control_client::ControlClient;
use tonic::transport::Endpoint;

use crate::{Credentials, JoinToken, NodeTls, PinnedCa, Role, new_key_and_csr};

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// No token, a malformed one, or one for another cluster: refused before any secret is sent
    /// (or by the manager).
    #[error("{0}")]
    Refused(String),
    /// The manager could not be reached or answered with an error worth retrying.
    #[error("{0}")]
    Unreachable(String),
}

/// Asks the manager at `addr` for a certificate as `role`, presenting `token`. The manager must
/// prove it belongs to the cluster the token names (its CA's digest) before the token's secret is
/// sent. Returns the node's new credentials (its node id is in the certificate).
pub async fn obtain_certificate(addr: &str, token: Option<&str>, role: Role) -> Result<Credentials, JoinError> {
    let parsed = match token {
        Some(t) => Some(t.parse::<JoinToken>().map_err(|e| JoinError::Refused(format!("--token: {e}")))?),
        None => None,
    };
    let pinned = PinnedCa::new(parsed.as_ref().map(|t| t.ca_digest));
    let config = pinned.client_config().map_err(|e| JoinError::Refused(e.to_string()))?;
    let endpoint = Endpoint::from_shared(crate::client::uri(addr))
        .map_err(|e| JoinError::Refused(format!("--join {addr}: not a valid address: {e}")))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30));
    let channel = match crate::client::connect(endpoint, config).await {
        Ok(channel) => channel,
        Err(e) => {
            if let Some(expected) = parsed.as_ref().map(|t| t.ca_digest)
                && !pinned.presented().is_empty()
            {
                let presented: Vec<String> = pinned.presented().iter().map(ToString::to_string).collect();
                return Err(JoinError::Refused(format!(
                    "the join token is for another cluster: the manager at {addr} presented CA {} but the token expects {expected}; nothing was sent",
                    presented.join(", ")
                )));
            }
            return Err(JoinError::Unreachable(format!("cannot reach the manager at {addr}: {}", error_chain(&e))));
        }
    };
    let (key_pem, csr_pem) = new_key_and_csr().map_err(|e| JoinError::Refused(e.to_string()))?;
    let request = IssueNodeCertificateRequest {
        token: token.unwrap_or_default().trim().to_string(),
        role: role.as_str().to_string(),
        csr_pem,
    };
    let mut client = ControlClient::new(channel);
    let mut attempts = 0;
    let response = loop {
        attempts += 1;
        match client.issue_node_certificate(request.clone()).await {
            Ok(r) => break r.into_inner(),
            Err(status) if status.code() == tonic::Code::Unavailable && attempts < 5 => {
                tracing::warn!(error = status.message(), "joining: the cluster has no leader yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(status) if status.code() == tonic::Code::Unavailable => {
                return Err(JoinError::Unreachable(format!("joining through {addr} failed: {}", status.message())));
            }
            Err(status) => {
                return Err(JoinError::Refused(format!("joining through {addr} was refused: {}", status.message())));
            }
        }
    };
    let credentials = Credentials { ca_pem: response.ca_pem, cert_pem: response.cert_pem, key_pem };
    // The handshake only trusted a CA with the token's digest; the CA in the answer must be it.
    if let Some(token) = &parsed {
        let answered = credentials.ca_digest().map_err(|e| JoinError::Refused(e.to_string()))?;
        if answered != token.ca_digest {
            return Err(JoinError::Refused("the manager answered with a CA other than the one it presented".into()));
        }
    }
    let identity = credentials.identity().map_err(|e| JoinError::Refused(e.to_string()))?;
    if identity.role != role {
        return Err(JoinError::Refused(format!(
            "the manager issued a {} certificate, not a {role} one",
            identity.role
        )));
    }
    Ok(credentials)
}

/// The whole chain of an error, `a: b: c`.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Renews this node's certificate at a random point between 50% and 80% of its lifetime, saves it
/// to `dir` and installs it; on failure retries with backoff (the old one stays valid meanwhile).
/// `renew` gets a CSR and returns the new certificate (PEM). Runs until the future is dropped.
pub async fn keep_renewed<F, Fut>(tls: Arc<NodeTls>, dir: PathBuf, renew: F)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<String, String>>,
{
    loop {
        let identity = tls.identity();
        let at = identity.renew_at(0.5 + rand::random::<f64>() * 0.3);
        let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
        tokio::time::sleep(wait).await;
        let mut backoff = Duration::from_millis(200);
        loop {
            match renew_once(&tls, &dir, &renew).await {
                Ok(new) => {
                    tracing::info!(node = %new.node_id, serial = %new.serial, not_after = ?new.not_after, "renewed this node's certificate");
                    break;
                }
                Err(e) => {
                    let expired = tls.identity().is_expired(SystemTime::now());
                    tracing::warn!(error = %e, expired, "renewing this node's certificate failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

async fn renew_once<F, Fut>(tls: &NodeTls, dir: &std::path::Path, renew: &F) -> Result<crate::PeerIdentity, String>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<String, String>>,
{
    let (key_pem, csr_pem) = new_key_and_csr().map_err(|e| e.to_string())?;
    let cert_pem = renew(csr_pem).await?;
    let credentials = Credentials { ca_pem: tls.credentials().ca_pem, cert_pem, key_pem };
    let identity = credentials.identity().map_err(|e| e.to_string())?;
    let old = tls.identity();
    if identity.node_id != old.node_id || identity.role != old.role {
        return Err(format!("the renewed certificate is for {} {}, not this node", identity.role, identity.node_id));
    }
    credentials.save(dir).map_err(|e| e.to_string())?;
    tls.replace(&credentials).map_err(|e| e.to_string())?;
    Ok(identity)
}
