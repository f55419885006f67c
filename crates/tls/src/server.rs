//! Accepting TLS connections for a tonic server: each handshake runs in its own task (a slow or
//! hostile client cannot hold up the others) and a refused one is logged with the reason.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

use crate::{PeerInfo, pki};

/// A handshake must finish within this, or the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// One accepted, authenticated (or anonymous) connection.
pub struct TlsConnection {
    stream: TlsStream<TcpStream>,
    info: PeerInfo,
}

impl tonic::transport::server::Connected for TlsConnection {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Accepts connections on `listener` and yields those whose TLS handshake succeeded. Stops when
/// the returned stream is dropped.
pub fn incoming(listener: TcpListener, config: Arc<ServerConfig>) -> ReceiverStream<Result<TlsConnection, io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = tx.closed() => return,
            };
            let (tcp, remote) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Raft and API messages are small and latency-bound: no Nagle delay.
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let info = peer_info(&stream, remote);
                        let _ = tx.send(Ok(TlsConnection { stream, info })).await;
                    }
                    Ok(Err(e)) => log_refused(remote, &e),
                    Err(_) => tracing::warn!(peer = %remote, "TLS handshake timed out; connection dropped"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

fn peer_info(stream: &TlsStream<TcpStream>, remote: SocketAddr) -> PeerInfo {
    let identity = stream.get_ref().1.peer_certificates().and_then(|chain| chain.first()).and_then(|leaf| {
        match pki::identity_of(leaf.as_ref()) {
            Ok(identity) => Some(identity),
            Err(e) => {
                tracing::warn!(peer = %remote, error = %e, "a client certificate signed by the cluster CA names no node");
                None
            }
        }
    });
    PeerInfo { remote_addr: Some(remote), identity }
}

fn log_refused(remote: SocketAddr, error: &io::Error) {
    let reason = error.to_string();
    let lower = reason.to_lowercase();
    let hint = if lower.contains("invalidcontenttype") || lower.contains("corrupt message") {
        " (the client does not speak TLS: a plaintext connection was refused)"
    } else if lower.contains("expired") {
        " (the client's certificate has expired: the node must rejoin with a token)"
    } else if lower.contains("unknownissuer") || lower.contains("unknown issuer") || lower.contains("badsignature") {
        " (the client's certificate was not issued by this cluster's CA)"
    } else if lower.contains("unknownca") || lower.contains("unknown ca") {
        " (the client does not trust this cluster's CA: its join token is for another cluster)"
    } else {
        ""
    };
    tracing::warn!(peer = %remote, error = %reason, "TLS handshake refused{hint}");
}
