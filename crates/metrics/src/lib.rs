//! Prometheus metrics for shoal's daemons: the `prometheus-client` types they register, and a
//! minimal HTTP/1.1 server answering `GET /metrics` with the text format. One request per
//! connection, a bounded request head read within a deadline and a cap on open connections, so
//! a scraper that stalls or sends garbage costs a task and a few KiB, never the daemon.
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

pub use prometheus_client;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Renders the metrics at scrape time (it may refresh gauges from the daemon's state first).
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// The largest request head read; a longer one is answered 431 and closed.
const MAX_HEAD: usize = 8 << 10;
/// How long a client has to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Scrapes served at once; more wait in the listen queue.
const MAX_OPEN: usize = 16;
/// How long one request may take from its first byte to the end of its answer: a client that
/// stops reading gives its connection back after this.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// `--metrics-addr`: `IP:PORT`, or a bare `PORT` on loopback (metrics are not for everyone to
/// read unless the operator says so).
pub fn parse_addr(text: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    text.parse().map_err(|_| format!("{text:?} is not an address: expected PORT (on 127.0.0.1) or IP:PORT"))
}

/// `registry` in the Prometheus text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::error!(error = %e, "encoding metrics failed");
    }
    out
}

/// Accepts connections on `listener` for ever, each handled by `handle` on a task of its own,
/// at most `max_open` at once (more wait in the listen queue).
pub async fn accept_each<F, Fut>(listener: TcpListener, max_open: usize, what: &'static str, handle: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<()>> + Send + 'static,
{
    let open = Arc::new(tokio::sync::Semaphore::new(max_open));
    loop {
        let Ok(permit) = open.clone().acquire_owned().await else { return };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(server = what, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let handled = handle(stream);
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = handled.await {
                tracing::debug!(server = what, error = %e, "request failed");
            }
        });
    }
}

/// Serves `render()` on `GET /metrics` until the task is dropped.
pub async fn serve(listener: TcpListener, render: Render) {
    accept_each(listener, MAX_OPEN, "metrics", move |stream| {
        let render = render.clone();
        async move {
            match tokio::time::timeout(ANSWER_TIMEOUT, answer(stream, &render)).await {
                Ok(answered) => answered,
                Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
            }
        }
    })
    .await
}

/// A request's head: method, path and headers (names lower-cased).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Reads a request's head (up to the blank line; a body is not read), within [`READ_TIMEOUT`]
/// and [`MAX_HEAD`] bytes: `None` when it is larger.
pub async fn read_request(stream: &mut TcpStream) -> std::io::Result<Option<RequestHead>> {
    let head = tokio::time::timeout(READ_TIMEOUT, read_head(stream))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    Ok(head)
}

/// Writes a whole response and closes the connection.
pub async fn respond(stream: &mut TcpStream, status: &str, content_type: &str, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}

/// The request's method, path and headers, once its head (up to the blank line) is read.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<RequestHead>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() >= MAX_HEAD {
            return Ok(None);
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split_whitespace();
    let (method, path) = (first.next().unwrap_or_default(), first.next().unwrap_or_default());
    let headers = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Some(RequestHead { method: method.to_string(), path: path.to_string(), headers }))
}

async fn answer(mut stream: TcpStream, render: &Render) -> std::io::Result<()> {
    let head = read_request(&mut stream).await?;
    let (status, content_type, body) = match head {
        None => ("431 Request Header Fields Too Large", "text/plain", "request head too large\n".to_string()),
        Some(head) if head.method != "GET" => ("405 Method Not Allowed", "text/plain", "only GET\n".to_string()),
        Some(head) if head.path == "/metrics" || head.path.starts_with("/metrics?") => {
            ("200 OK", "application/openmetrics-text; version=1.0.0; charset=utf-8", render())
        }
        Some(_) => ("404 Not Found", "text/plain", "metrics are at /metrics\n".to_string()),
    };
    respond(&mut stream, status, content_type, body.as_bytes()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    async fn get(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).await.unwrap();
        out
    }

    #[test]
    fn an_address_is_a_port_on_loopback_or_ip_and_port() {
        assert_eq!(parse_addr("9323").unwrap().to_string(), "127.0.0.1:9323");
        assert_eq!(parse_addr("0.0.0.0:9323").unwrap().to_string(), "0.0.0.0:9323");
        assert!(parse_addr("nine").unwrap_err().contains("expected PORT (on 127.0.0.1) or IP:PORT"));
    }

    #[tokio::test]
    async fn serves_the_registry_on_metrics_only() {
        let mut registry = Registry::default();
        let counter: Counter = Counter::default();
        registry.register("shoal_test_things", "Things", counter.clone());
        counter.inc_by(3);
        let registry = Arc::new(registry);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let render: Render = Arc::new(move || encode(&registry));
        tokio::spawn(serve(listener, render));
        let ok = get(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK"), "{ok}");
        assert!(ok.contains("shoal_test_things_total 3"), "{ok}");
        assert!(ok.ends_with("# EOF\n"), "{ok}");
        assert!(get(addr, b"GET / HTTP/1.1\r\n\r\n").await.starts_with("HTTP/1.1 404"));
        assert!(get(addr, b"POST /metrics HTTP/1.1\r\n\r\n").await.starts_with("HTTP/1.1 405"));
        let huge = vec![b'a'; MAX_HEAD * 2];
        assert!(get(addr, &huge).await.starts_with("HTTP/1.1 431"));
        // A client that sends garbage and closes does not stop the server.
        drop(TcpStream::connect(addr).await.unwrap());
        assert!(get(addr, b"GET /metrics HTTP/1.0\r\n\r\n").await.starts_with("HTTP/1.1 200 OK"));
    }
}
