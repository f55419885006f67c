//! Certificates: the cluster CA, node and admin certificates, CSRs, and the files a node keeps.

use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::{MANAGER_SERVER_NAME, PeerIdentity, Role, TlsError, hex};

/// The cluster CA lives this long (Swarm's root CA: 20 years).
const CA_VALIDITY: Duration = Duration::from_secs(20 * 365 * 24 * 3600);
/// Certificates start a little in the past so a node whose clock is slightly behind accepts them:
/// a minute, or a tenth of the validity for short-lived (test) certificates, so the renewal
/// point (a fraction of the whole lifetime) stays ahead of the issue time.
const BACKDATE: Duration = Duration::from_secs(60);

fn backdate(validity: Duration) -> Duration {
    BACKDATE.min(validity / 10)
}

/// SHA-256 of the CA certificate (DER): what a join token pins.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CaDigest(pub [u8; 32]);

impl CaDigest {
    pub fn of_der(der: &[u8]) -> CaDigest {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        CaDigest(out)
    }
}

impl std::fmt::Display for CaDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", hex(&self.0))
    }
}

impl std::fmt::Debug for CaDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// The cluster's root CA: certificate and private key, both PEM.
#[derive(Clone)]
pub struct ClusterCa {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa").finish_non_exhaustive()
    }
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // A positive integer with no leading zero byte.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

fn first_cert_der(pem: &str, what: &str) -> Result<CertificateDer<'static>, TlsError> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| TlsError::Certificate(format!("{what} is not a PEM certificate ({e})")))
}

impl ClusterCa {
    pub fn generate(cluster_id: &str, now: SystemTime) -> Result<ClusterCa, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "shoal root CA");
        dn.push(DnType::OrganizationName, cluster_id);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + CA_VALIDITY).into();
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key)?;
        Ok(ClusterCa { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    pub fn digest(&self) -> Result<CaDigest, TlsError> {
        Ok(CaDigest::of_der(&first_cert_der(&self.cert_pem, "the cluster CA")?))
    }

    /// Signs a certificate for `node_id` in `role` over the public key of `csr_pem`. Everything
    /// else the CSR asks for (subject, extensions) is ignored: the CA decides who the holder is.
    pub fn issue(
        &self,
        csr_pem: &str,
        cluster_id: &str,
        node_id: &str,
        role: Role,
        validity: Duration,
        now: SystemTime,
    ) -> Result<String, TlsError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| TlsError::Certificate(format!("the certificate signing request is invalid: {e}")))?;
        let params = node_params(cluster_id, node_id, role, validity, now)?;
        let request = CertificateSigningRequestParams { params, public_key: csr.public_key };
        let ca_key = KeyPair::from_pem(&self.key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, ca_key)?;
        Ok(request.signed_by(&issuer)?.pem())
    }

    /// A key pair and its certificate in one step (the first manager, the admin bundle).
    pub fn issue_with_new_key(
        &self,
        cluster_id: &str,
        node_id: &str,
        role: Role,
        validity: Duration,
        now: SystemTime,
    ) -> Result<Credentials, TlsError> {
        let (key_pem, csr_pem) = new_key_and_csr()?;
        let cert_pem = self.issue(&csr_pem, cluster_id, node_id, role, validity, now)?;
        Ok(Credentials { ca_pem: self.cert_pem.clone(), cert_pem, key_pem })
    }
}

fn node_params(
    cluster_id: &str,
    node_id: &str,
    role: Role,
    validity: Duration,
    now: SystemTime,
) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, node_id);
    dn.push(DnType::OrganizationalUnitName, role.as_str());
    dn.push(DnType::OrganizationName, cluster_id);
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    if role == Role::Manager {
        // Managers serve (the API, raft) as well as call each other.
        params.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
        params.subject_alt_names = vec![SanType::DnsName(
            MANAGER_SERVER_NAME.try_into().map_err(|e: rcgen::Error| TlsError::Certificate(e.to_string()))?,
        )];
    }
    params.not_before = (now - backdate(validity)).into();
    params.not_after = (now + validity).into();
    params.serial_number = Some(random_serial());
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// A new private key and a CSR for it; the subject is left for the CA to decide.
pub fn new_key_and_csr() -> Result<(String, String), TlsError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    let csr = params.serialize_request(&key)?;
    let csr_pem = csr.pem().map_err(|e| TlsError::Certificate(e.to_string()))?;
    Ok((key.serialize_pem(), csr_pem))
}

/// Reads who a certificate (DER) belongs to from its subject.
pub(crate) fn identity_of(der: &[u8]) -> Result<PeerIdentity, TlsError> {
    let bad = |m: &str| TlsError::Certificate(format!("not a shoal certificate: {m}"));
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| bad(&e.to_string()))?;
    let subject = cert.subject();
    let node_id = subject.iter_common_name().next().and_then(|a| a.as_str().ok()).map(str::to_string);
    let role = subject.iter_organizational_unit().next().and_then(|a| a.as_str().ok()).and_then(Role::parse);
    let cluster_id = subject.iter_organization().next().and_then(|a| a.as_str().ok()).map(str::to_string);
    let (Some(node_id), Some(role), Some(cluster_id)) = (node_id, role, cluster_id) else {
        return Err(bad("its subject names no node id, role and cluster"));
    };
    let time = |t: x509_parser::time::ASN1Time| {
        SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(t.timestamp()).unwrap_or(0))
    };
    Ok(PeerIdentity {
        node_id,
        role,
        cluster_id,
        not_before: time(cert.validity().not_before),
        not_after: time(cert.validity().not_after),
        serial: hex(cert.raw_serial()),
    })
}

/// What a node (or the CLI) holds: the cluster CA certificate, its own certificate and key, PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").finish_non_exhaustive()
    }
}

pub const CA_FILE: &str = "ca.pem";
pub const CERT_FILE: &str = "cert.pem";
pub const KEY_FILE: &str = "key.pem";

impl Credentials {
    /// Reads `ca.pem`, `cert.pem`, `key.pem` from `dir`. `Ok(None)` when none of them exists.
    /// Each file is checked (a certificate, a certificate naming its holder, a private key), so
    /// a damaged one is reported by its path and what is wrong with it, not later by a TLS
    /// handshake.
    pub fn load(dir: &Path) -> Result<Option<Credentials>, TlsError> {
        let files = [CA_FILE, CERT_FILE, KEY_FILE];
        let present: Vec<bool> = files.iter().map(|f| dir.join(f).exists()).collect();
        if present.iter().all(|p| !p) {
            return Ok(None);
        }
        let damaged =
            |name: &str, message: String| TlsError::Files { path: dir.join(name).display().to_string(), message };
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name)).map_err(|e| damaged(name, format!("cannot read it: {e}")))
        };
        let credentials = Credentials { ca_pem: read(CA_FILE)?, cert_pem: read(CERT_FILE)?, key_pem: read(KEY_FILE)? };
        credentials.ca_der().map_err(|e| damaged(CA_FILE, format!("damaged: {e}")))?;
        credentials.identity().map_err(|e| damaged(CERT_FILE, format!("damaged: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(credentials.key_pem.as_bytes())
            .map_err(|e| damaged(KEY_FILE, format!("damaged: not a PEM private key ({e})")))?;
        crate::provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| damaged(KEY_FILE, format!("damaged: not a usable private key ({e})")))?;
        Ok(Some(credentials))
    }

    /// Writes the three files into `dir` (created 0700 if missing), each readable by its owner
    /// only and each through a temporary file and a rename, so a crash never leaves half a key.
    /// The certificates are not secret, but the whole bundle says who may act as this node, and
    /// one rule for every file in a private directory is easier to check.
    pub fn save(&self, dir: &Path) -> Result<(), TlsError> {
        let err = |e: crate::private_files::PrivateFileError| TlsError::Files {
            path: e.path.display().to_string(),
            message: format!("{}: {}", e.what, e.source),
        };
        crate::private_files::create_dir(dir).map_err(err)?;
        for (name, contents) in [(CA_FILE, &self.ca_pem), (CERT_FILE, &self.cert_pem), (KEY_FILE, &self.key_pem)] {
            crate::private_files::write(&dir.join(name), contents.as_bytes()).map_err(err)?;
        }
        Ok(())
    }

    /// Who this certificate says its holder is.
    pub fn identity(&self) -> Result<PeerIdentity, TlsError> {
        identity_of(&first_cert_der(&self.cert_pem, "the certificate")?)
    }

    pub fn ca_digest(&self) -> Result<CaDigest, TlsError> {
        Ok(CaDigest::of_der(&first_cert_der(&self.ca_pem, "the CA certificate")?))
    }

    pub(crate) fn ca_der(&self) -> Result<CertificateDer<'static>, TlsError> {
        first_cert_der(&self.ca_pem, "the CA certificate")
    }

    pub(crate) fn cert_der(&self) -> Result<CertificateDer<'static>, TlsError> {
        first_cert_der(&self.cert_pem, "the certificate")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_certificate_names_the_node_role_and_cluster_and_ignores_the_csr_subject() {
        let now = SystemTime::now();
        let ca = ClusterCa::generate("cluster-1", now).unwrap();
        let (key, csr) = new_key_and_csr().unwrap();
        let cert = ca.issue(&csr, "cluster-1", "node-a", Role::Worker, Duration::from_secs(3600), now).unwrap();
        let credentials = Credentials { ca_pem: ca.cert_pem.clone(), cert_pem: cert, key_pem: key };
        let id = credentials.identity().unwrap();
        assert_eq!((id.node_id.as_str(), id.role, id.cluster_id.as_str()), ("node-a", Role::Worker, "cluster-1"));
        let lifetime = id.not_after.duration_since(id.not_before).unwrap();
        assert_eq!(lifetime, Duration::from_secs(3600) + BACKDATE);
        let renew_at = id.renew_at(0.5);
        assert!(renew_at > now && renew_at < now + Duration::from_secs(1830), "renewal half way through");
        assert_eq!(credentials.ca_digest().unwrap(), ca.digest().unwrap());
    }

    #[test]
    fn serials_differ_between_issues() {
        let now = SystemTime::now();
        let ca = ClusterCa::generate("c", now).unwrap();
        let a = ca.issue_with_new_key("c", "n", Role::Manager, Duration::from_secs(60), now).unwrap();
        let b = ca.issue_with_new_key("c", "n", Role::Manager, Duration::from_secs(60), now).unwrap();
        assert_ne!(a.identity().unwrap().serial, b.identity().unwrap().serial);
    }

    #[test]
    fn a_garbage_csr_is_refused_with_a_message() {
        let ca = ClusterCa::generate("c", SystemTime::now()).unwrap();
        let err =
            ca.issue("not a csr", "c", "n", Role::Worker, Duration::from_secs(60), SystemTime::now()).unwrap_err();
        assert!(err.to_string().contains("certificate signing request is invalid"), "{err}");
    }

    #[test]
    fn files_round_trip_and_a_partial_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Credentials::load(dir.path()).unwrap().is_none());
        let ca = ClusterCa::generate("c", SystemTime::now()).unwrap();
        let creds =
            ca.issue_with_new_key("c", "admin", Role::Admin, Duration::from_secs(60), SystemTime::now()).unwrap();
        creds.save(dir.path()).unwrap();
        assert_eq!(Credentials::load(dir.path()).unwrap(), Some(creds));
        std::fs::remove_file(dir.path().join(KEY_FILE)).unwrap();
        let err = Credentials::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("key.pem") && err.contains("cannot read"), "{err}");
    }

    #[test]
    fn saved_files_are_private_and_a_truncated_file_is_named_when_loading() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("tls");
        let ca = ClusterCa::generate("c", SystemTime::now()).unwrap();
        let creds = ca.issue_with_new_key("c", "n", Role::Worker, Duration::from_secs(60), SystemTime::now()).unwrap();
        creds.save(&dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&dir), 0o700);
        for name in [CA_FILE, CERT_FILE, KEY_FILE] {
            assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
        }
        for name in [CA_FILE, CERT_FILE, KEY_FILE] {
            creds.save(&dir).unwrap();
            let full = std::fs::read(dir.join(name)).unwrap();
            std::fs::write(dir.join(name), &full[..full.len() / 2]).unwrap();
            let err = Credentials::load(&dir).unwrap_err().to_string();
            assert!(err.contains(&dir.join(name).display().to_string()) && err.contains("damaged"), "{name}: {err}");
        }
    }
}
