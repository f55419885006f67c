//! Tonic channels over TLS: the connector dials TCP and runs the TLS handshake itself, so the
//! same configuration types serve a node's swappable certificate and a joining node's pinning.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::transport::{Channel, Endpoint, Uri};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Connecting = Pin<Box<dyn Future<Output = Result<TokioIo<TlsStream<TcpStream>>, BoxError>> + Send>>;

/// A tower service from a URI (`http://host:port`) to a TLS stream to that manager.
#[derive(Clone)]
pub struct ManagerConnector {
    config: Arc<ClientConfig>,
}

impl tower::Service<Uri> for ManagerConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let config = self.config.clone();
        Box::pin(async move {
            let host = uri.host().ok_or("the address has no host")?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port = uri.port_u16().unwrap_or(4242);
            let tcp = TcpStream::connect((host, port)).await?;
            let _ = tcp.set_nodelay(true);
            let name = ServerName::try_from(crate::MANAGER_SERVER_NAME).expect("a valid DNS name");
            let tls = TlsConnector::from(config).connect(name, tcp).await.map_err(HandshakeError)?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// The TCP connection was made but the TLS handshake failed (another cluster's CA, an expired
/// or foreign certificate, a refused client certificate). A type of its own, so a caller tells it
/// from an unreachable address without reading the message.
#[derive(Debug, thiserror::Error)]
#[error("TLS handshake failed: {0}")]
pub struct HandshakeError(#[source] pub std::io::Error);

/// Whether `error` or anything in its source chain is a failed TLS handshake.
pub fn is_handshake_failure(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if error.is::<HandshakeError>() {
            return true;
        }
        next = error.source();
    }
    false
}

/// The connector for `config`.
pub fn connector(config: Arc<ClientConfig>) -> ManagerConnector {
    ManagerConnector { config }
}

/// Connects `endpoint` (an `http://host:port` URI; TLS is added here) now.
pub async fn connect(endpoint: Endpoint, config: Arc<ClientConfig>) -> Result<Channel, tonic::transport::Error> {
    endpoint.connect_with_connector(connector(config)).await
}

/// A channel that connects on first use (and reconnects after failures).
pub fn connect_lazy(endpoint: Endpoint, config: Arc<ClientConfig>) -> Channel {
    endpoint.connect_with_connector_lazy(connector(config))
}

/// `host:port` → `http://host:port` (the scheme tonic wants; TLS is the connector's job).
pub fn uri(addr: &str) -> String {
    let addr = addr.trim_start_matches("http://").trim_start_matches("https://");
    format!("http://{addr}")
}
