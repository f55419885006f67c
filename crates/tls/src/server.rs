//! Accepting TLS connections for a tonic server: each handshake runs in its own task (a slow or
//! hostile client cannot hold up the others) and a refused one is logged with the reason.
//!
//! Before its handshake ends nobody is authenticated, and a client without a certificate may
//! still join, so what a stranger can cost is bounded here (see [`Limits`]): how fast new
//! connections are taken on, how many handshakes run at once and for how long, and how many
//! connections without a certificate stay open, and for how long. What such a connection may send
//! is bounded per call by the control crate's authorisation layer. Log lines about refused
//! connections are throttled per kind ([`LogThrottle`]).

mod limits;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

pub use limits::{LogThrottle, TokenBucket};
use rustls::{AlertDescription, CertificateError, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

use crate::{PeerInfo, pki};

/// What the accept loop lets unauthenticated peers cost. The defaults are what `shoal-manager`
/// uses; `docs/security.md` explains them.
#[derive(Clone, Debug)]
pub struct Limits {
    /// A handshake must finish within this, or the connection is dropped.
    pub handshake_timeout: Duration,
    /// Handshakes in progress at once; a connection past this is closed before its handshake.
    pub max_handshakes: usize,
    /// New connections taken on at once (the bucket's size) ...
    pub handshake_burst: u32,
    /// ... and per second after that; a connection past this is closed before its handshake.
    pub handshakes_per_second: u32,
    /// Connections open at once whose client presented no certificate (joining nodes); one past
    /// this is closed right after its handshake.
    pub max_anonymous: usize,
    /// A connection without a certificate is closed this long after its handshake, whatever it is
    /// doing (a join takes one call of a few milliseconds), so a slot is never held for good.
    pub anonymous_lifetime: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake_timeout: Duration::from_secs(10),
            max_handshakes: 512,
            handshake_burst: 512,
            handshakes_per_second: 256,
            max_anonymous: 256,
            anonymous_lifetime: Duration::from_secs(60),
        }
    }
}

/// One accepted, authenticated (or anonymous) connection.
pub struct TlsConnection {
    stream: TlsStream<TcpStream>,
    info: PeerInfo,
    /// Set when the client presented no certificate.
    anonymous: Option<Anonymous>,
}

/// What a connection without a certificate holds: its slot among [`Limits::max_anonymous`], and
/// the moment it is closed.
struct Anonymous {
    _slot: OwnedSemaphorePermit,
    closes: Pin<Box<tokio::time::Sleep>>,
}

impl tonic::transport::server::Connected for TlsConnection {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl TlsConnection {
    /// An error once an anonymous connection has lived its time. The server reads from every
    /// connection all the time, so checking here (which also arms the timer's wake-up) closes
    /// it on time.
    fn expired(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        let anonymous = self.anonymous.as_mut()?;
        anonymous.closes.as_mut().poll(cx).is_ready().then(|| {
            io::Error::new(io::ErrorKind::TimedOut, "a connection without a client certificate lived its time")
        })
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.expired(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
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

/// Accepts connections on `listener` and yields those whose TLS handshake succeeded, within the
/// default [`Limits`]. Stops when the returned stream is dropped.
pub fn incoming(listener: TcpListener, config: Arc<ServerConfig>) -> ReceiverStream<Result<TlsConnection, io::Error>> {
    incoming_with(listener, config, Limits::default())
}

/// [`incoming`] with explicit limits.
pub fn incoming_with(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    limits: Limits,
) -> ReceiverStream<Result<TlsConnection, io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    let handshakes = Arc::new(Semaphore::new(limits.max_handshakes));
    let anonymous = Arc::new(Semaphore::new(limits.max_anonymous));
    let mut bucket =
        TokenBucket::new(limits.handshake_burst, limits.handshakes_per_second, tokio::time::Instant::now());
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = tx.closed() => return,
            };
            let (tcp, remote) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    if let Some(suppressed) = ACCEPT_FAILED.admit() {
                        tracing::warn!(error = %e, suppressed, "accepting a connection failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Refused before any TLS work: closing costs nothing, and the client retries.
            if !bucket.try_take(tokio::time::Instant::now()) {
                refused(Refusal::RateLimited, remote, None);
                continue;
            }
            let Ok(handshake) = handshakes.clone().try_acquire_owned() else {
                refused(Refusal::TooManyHandshakes, remote, None);
                continue;
            };
            // Raft and API messages are small and latency-bound: no Nagle delay.
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx, anonymous, lifetime) =
                (acceptor.clone(), tx.clone(), anonymous.clone(), limits.anonymous_lifetime);
            tokio::spawn(async move {
                let stream = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => return refused(Refusal::Handshake(handshake_failure(&e)), remote, Some(&e)),
                    Err(_) => return refused(Refusal::HandshakeTimedOut, remote, None),
                };
                drop(handshake);
                let info = peer_info(&stream, remote);
                let anonymous = if info.identity.is_none() {
                    let Ok(slot) = anonymous.try_acquire_owned() else {
                        return refused(Refusal::TooManyAnonymous, remote, None);
                    };
                    Some(Anonymous { _slot: slot, closes: Box::pin(tokio::time::sleep(lifetime)) })
                } else {
                    None
                };
                let _ = tx.send(Ok(TlsConnection { stream, info, anonymous })).await;
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
                if let Some(suppressed) = NAMELESS_CERTIFICATE.admit() {
                    tracing::warn!(peer = %remote, error = %e, suppressed, "a client certificate signed by the cluster CA names no node");
                }
                None
            }
        }
    });
    PeerInfo { remote_addr: Some(remote), identity }
}

/// Why a connection was closed before the server saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    RateLimited,
    TooManyHandshakes,
    HandshakeTimedOut,
    Handshake(HandshakeFailure),
    TooManyAnonymous,
}

/// Why a handshake failed, from the rustls error inside tokio-rustls' `io::Error`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HandshakeFailure {
    NotTls,
    Expired,
    ForeignCertificate,
    ClientDistrustsCa,
    Other,
}

fn handshake_failure(error: &io::Error) -> HandshakeFailure {
    match error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidMessage(_)) => HandshakeFailure::NotTls,
        Some(rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        )) => HandshakeFailure::Expired,
        Some(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer | CertificateError::BadSignature)) => {
            HandshakeFailure::ForeignCertificate
        }
        Some(rustls::Error::AlertReceived(AlertDescription::UnknownCA)) => HandshakeFailure::ClientDistrustsCa,
        _ => HandshakeFailure::Other,
    }
}

/// One throttle per kind of refusal: a flood of one kind does not hide the others.
static RATE_LIMITED: LogThrottle = LogThrottle::per_second();
static TOO_MANY_HANDSHAKES: LogThrottle = LogThrottle::per_second();
static HANDSHAKE_TIMED_OUT: LogThrottle = LogThrottle::per_second();
static TOO_MANY_ANONYMOUS: LogThrottle = LogThrottle::per_second();
static NOT_TLS: LogThrottle = LogThrottle::per_second();
static EXPIRED: LogThrottle = LogThrottle::per_second();
static FOREIGN_CERTIFICATE: LogThrottle = LogThrottle::per_second();
static CLIENT_DISTRUSTS_CA: LogThrottle = LogThrottle::per_second();
static OTHER_HANDSHAKE_FAILURE: LogThrottle = LogThrottle::per_second();
static ACCEPT_FAILED: LogThrottle = LogThrottle::per_second();
static NAMELESS_CERTIFICATE: LogThrottle = LogThrottle::per_second();

/// Logs a refusal, within its kind's throttle; a failed handshake's line names its error.
fn refused(refusal: Refusal, remote: SocketAddr, error: Option<&io::Error>) {
    let throttle = match refusal {
        Refusal::RateLimited => &RATE_LIMITED,
        Refusal::TooManyHandshakes => &TOO_MANY_HANDSHAKES,
        Refusal::HandshakeTimedOut => &HANDSHAKE_TIMED_OUT,
        Refusal::TooManyAnonymous => &TOO_MANY_ANONYMOUS,
        Refusal::Handshake(HandshakeFailure::NotTls) => &NOT_TLS,
        Refusal::Handshake(HandshakeFailure::Expired) => &EXPIRED,
        Refusal::Handshake(HandshakeFailure::ForeignCertificate) => &FOREIGN_CERTIFICATE,
        Refusal::Handshake(HandshakeFailure::ClientDistrustsCa) => &CLIENT_DISTRUSTS_CA,
        Refusal::Handshake(HandshakeFailure::Other) => &OTHER_HANDSHAKE_FAILURE,
    };
    let Some(suppressed) = throttle.admit() else {
        return;
    };
    match refusal {
        Refusal::RateLimited => tracing::warn!(
            peer = %remote,
            suppressed,
            "connection refused: too many new connections per second (before the TLS handshake)"
        ),
        Refusal::TooManyHandshakes => {
            tracing::warn!(peer = %remote, suppressed, "connection refused: too many TLS handshakes in progress")
        }
        Refusal::HandshakeTimedOut => {
            tracing::warn!(peer = %remote, suppressed, "TLS handshake timed out; connection dropped")
        }
        Refusal::TooManyAnonymous => tracing::warn!(
            peer = %remote,
            suppressed,
            "connection refused: too many open connections without a client certificate"
        ),
        Refusal::Handshake(failure) => {
            let hint = match failure {
                HandshakeFailure::NotTls => " (the client does not speak TLS: a plaintext connection was refused)",
                HandshakeFailure::Expired => {
                    " (the client's certificate has expired: the node must rejoin with a token)"
                }
                HandshakeFailure::ForeignCertificate => {
                    " (the client's certificate was not issued by this cluster's CA)"
                }
                HandshakeFailure::ClientDistrustsCa => {
                    " (the client does not trust this cluster's CA: its join token is for another cluster)"
                }
                HandshakeFailure::Other => "",
            };
            let error = error.map(ToString::to_string).unwrap_or_default();
            tracing::warn!(peer = %remote, error = %error, suppressed, "TLS handshake refused{hint}");
        }
    }
}
