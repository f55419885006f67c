//! rustls configurations: a node's (swappable) certificate for serving and calling, and the
//! verifier a joining node uses before it has the CA.

use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConfig, ResolvesClientCert};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert, ServerConfig, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;

use crate::{CaDigest, Credentials, PeerIdentity, TlsError, provider};

/// A node's TLS identity. The certificate can be replaced while servers and channels built from
/// it keep running (renewal): new handshakes use the new one.
pub struct NodeTls {
    roots: Arc<RootCertStore>,
    current: RwLock<Current>,
}

struct Current {
    key: Arc<CertifiedKey>,
    identity: PeerIdentity,
    credentials: Credentials,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTls").field("identity", &self.current.read().identity).finish_non_exhaustive()
    }
}

fn certified_key(credentials: &Credentials) -> Result<Arc<CertifiedKey>, TlsError> {
    let key = PrivateKeyDer::from_pem_slice(credentials.key_pem.as_bytes())
        .map_err(|e| TlsError::Certificate(format!("the private key is not PEM ({e})")))?;
    let signing_key = provider().key_provider.load_private_key(key)?;
    // The CA goes along in the chain: a joining node pins it by digest (see `PinnedCa`).
    let chain = vec![credentials.cert_der()?, credentials.ca_der()?];
    Ok(Arc::new(CertifiedKey::new(chain, signing_key)))
}

impl NodeTls {
    pub fn new(credentials: &Credentials) -> Result<Arc<NodeTls>, TlsError> {
        let mut roots = RootCertStore::empty();
        roots.add(credentials.ca_der()?).map_err(|e| TlsError::Certificate(format!("the CA certificate: {e}")))?;
        let current = Current {
            key: certified_key(credentials)?,
            identity: credentials.identity()?,
            credentials: credentials.clone(),
        };
        Ok(Arc::new(NodeTls { roots: Arc::new(roots), current: RwLock::new(current) }))
    }

    /// Installs a renewed certificate (same CA).
    pub fn replace(&self, credentials: &Credentials) -> Result<(), TlsError> {
        let current = Current {
            key: certified_key(credentials)?,
            identity: credentials.identity()?,
            credentials: credentials.clone(),
        };
        *self.current.write() = current;
        Ok(())
    }

    pub fn identity(&self) -> PeerIdentity {
        self.current.read().identity.clone()
    }

    pub fn credentials(&self) -> Credentials {
        self.current.read().credentials.clone()
    }

    /// For a manager's port: TLS 1.3, a client certificate verified against the cluster CA when
    /// one is presented. A client without one (a node joining with a token) gets through the
    /// handshake; what it may call is decided per request from [`crate::PeerInfo`].
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, TlsError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// For calling managers: verifies the manager against the cluster CA and presents this
    /// node's certificate.
    pub fn client_config(self: &Arc<Self>) -> Result<Arc<ClientConfig>, TlsError> {
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots.clone())
            .with_client_cert_resolver(Arc::new(Resolver(self.clone())));
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

#[derive(Debug)]
struct Resolver(Arc<NodeTls>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current.read().key.clone())
    }
}

impl ResolvesClientCert for Resolver {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current.read().key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The server verifier of a node that joins with a token: it trusts a manager only if the chain
/// the manager presents holds a CA certificate with the token's digest and the manager's
/// certificate verifies against that CA. With no digest (no token given) it accepts any server,
/// which is safe only because nothing secret is sent then.
#[derive(Debug)]
pub struct PinnedCa {
    digest: Option<CaDigest>,
    /// Digests of the CA certificates a manager presented when none matched the token.
    presented: Mutex<Vec<CaDigest>>,
}

impl PinnedCa {
    pub fn new(digest: Option<CaDigest>) -> Arc<PinnedCa> {
        Arc::new(PinnedCa { digest, presented: Mutex::new(Vec::new()) })
    }

    /// Digests of the CA certificates the manager presented when none matched the token.
    pub fn presented(&self) -> Vec<CaDigest> {
        self.presented.lock().clone()
    }

    /// A client configuration without a client certificate that verifies the server with this.
    pub fn client_config(self: &Arc<Self>) -> Result<Arc<ClientConfig>, TlsError> {
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(self.clone())
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(expected) = self.digest else {
            return Ok(ServerCertVerified::assertion());
        };
        let Some(ca) = intermediates.iter().find(|c| CaDigest::of_der(c.as_ref()) == expected) else {
            *self.presented.lock() = intermediates.iter().map(|c| CaDigest::of_der(c.as_ref())).collect();
            return Err(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer));
        };
        let mut roots = RootCertStore::empty();
        roots
            .add(ca.clone().into_owned())
            .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier.verify_server_cert(end_entity, &[], server_name, ocsp, now)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &provider().signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider().signature_verification_algorithms.supported_schemes()
    }
}
