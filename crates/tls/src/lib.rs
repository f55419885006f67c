//! shoal's cluster PKI and mutual TLS.
//!
//! - [`ClusterCa`]: the cluster's root CA, created when the first manager initialises the cluster
//!   and kept in the replicated store, so whichever manager leads can sign.
//! - [`Credentials`]: a node's (or an admin's) `ca.pem`, `cert.pem` and `key.pem`. The
//!   certificate's subject says who it is: CN = node id, OU = role, O = cluster id.
//! - [`JoinToken`]: `SHLTKN-1-<sha256 of the CA certificate>-<secret>`; the digest lets a joining
//!   node check it talks to the right cluster before it sends the secret.
//! - [`NodeTls`]: rustls configurations whose certificate can be swapped at run time (renewal),
//!   [`server::incoming`] for tonic servers and [`client::connect`] for tonic channels.
#![forbid(unsafe_code)]

use std::time::{Duration, SystemTime};

pub mod client;
mod config;
pub mod join;
mod pki;
pub mod private_files;
pub mod server;
mod token;

pub use config::{NodeTls, PinnedCa};
pub use pki::{CaDigest, ClusterCa, Credentials, new_key_and_csr};
pub use rustls;
pub use token::{JoinToken, TokenError};

/// The client side of a connection to managers.
pub type ClientConfig = std::sync::Arc<rustls::ClientConfig>;

/// Every manager certificate names this DNS SAN and clients verify it, whatever address they dial
/// (as Swarm's `swarm-manager`): the same certificate serves on 127.0.0.1, a container network
/// alias or a public IP.
pub const MANAGER_SERVER_NAME: &str = "shoal-manager";

/// Validity of the admin client certificate written at initialisation.
pub const ADMIN_CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// What a certificate allows its holder to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Raft, the control API, the dispatcher's manager side.
    Manager,
    /// The dispatcher, for its own node only.
    Worker,
    /// The control API (the CLI's certificate); not a node.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Manager => "manager",
            Role::Worker => "worker",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "manager" => Some(Role::Manager),
            "worker" => Some(Role::Worker),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a verified certificate belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    pub node_id: String,
    pub role: Role,
    pub cluster_id: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// Hex serial number, to tell a renewed certificate from the one it replaced.
    pub serial: String,
}

impl PeerIdentity {
    /// When to ask for a new certificate: at a random point between 50% and 80% of its lifetime
    /// (as Swarm), so a fleet issued at once does not renew at once.
    pub fn renew_at(&self, fraction: f64) -> SystemTime {
        let lifetime = self.not_after.duration_since(self.not_before).unwrap_or_default();
        let fraction = fraction.clamp(0.5, 0.8);
        self.not_before + lifetime.mul_f64(fraction)
    }

    pub fn is_expired(&self, now: SystemTime) -> bool {
        now >= self.not_after
    }
}

/// Where to find what this crate needs to know about a peer connection inside a request handler
/// (tonic puts it into every request's extensions).
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub remote_addr: Option<std::net::SocketAddr>,
    /// `None`: the client presented no certificate (only joining may be asked for then).
    pub identity: Option<PeerIdentity>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{0}")]
    Certificate(String),
    #[error("{path}: {message}")]
    Files { path: String, message: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

impl From<rcgen::Error> for TlsError {
    fn from(e: rcgen::Error) -> Self {
        TlsError::Certificate(e.to_string())
    }
}

impl From<rustls::Error> for TlsError {
    fn from(e: rustls::Error) -> Self {
        TlsError::Config(e.to_string())
    }
}

/// The crypto provider every configuration uses (ring: no C toolchain beyond gcc, no cmake).
pub(crate) fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// Hex of some bytes (digests, serials).
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
