//! The proxy over real loopback sockets: backends that refuse are skipped, connections are
//! counted per task while open, a port without backends closes connections, and closing a port
//! leaves the connections it carried open.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// A server that answers every connection with `name` and echoes what it reads after that.
async fn server(name: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let _ = conn.write_all(name.as_bytes()).await;
                let mut buf = [0u8; 64];
                while let Ok(n) = conn.read(&mut buf).await {
                    if n == 0 || conn.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// An address nothing listens on.
async fn refusing() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr").to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn backend(task: &str, remote: String) -> Backend {
    Backend { task_id: task.into(), node_id: "other".into(), remote, local: String::new(), weight: 1 }
}

async fn proxy_with(backends: Vec<Backend>) -> (Arc<Ingress>, String) {
    proxy_limited(backends, MAX_CONNECTIONS_PER_PORT).await
}

async fn proxy_limited(backends: Vec<Backend>, limit: usize) -> (Arc<Ingress>, String) {
    let ingress = Ingress::with_limit("127.0.0.1".parse().expect("ip"), "here".into(), limit);
    let port = free_port();
    ingress.apply(
        1,
        true,
        vec![Listener { address: String::new(), port, service: "web".into(), backends }],
        &[],
        Vec::new(),
        None,
    );
    let entry = format!("127.0.0.1:{port}");
    for _ in 0..200 {
        if let Ok(mut probe) = TcpStream::connect(&entry).await {
            // Read what comes (a backend's greeting, or the close): the probe's connection is
            // counted by then, so a test that waits for no connections waits for this one too.
            let mut buf = [0u8; 16];
            let _ = tokio::time::timeout(Duration::from_secs(5), probe.read(&mut buf)).await;
            return (ingress, entry);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the proxy never listened on {entry}");
}

async fn greeting(stream: &mut TcpStream) -> String {
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await.expect("in time").expect("read");
    String::from_utf8_lossy(&buf[..n]).to_string()
}

#[tokio::test]
async fn a_refusing_backend_is_skipped_for_another() {
    let live = server("live").await;
    let (_ingress, entry) = proxy_with(vec![backend("dead", refusing().await), backend("live", live)]).await;
    for _ in 0..20 {
        let mut conn = TcpStream::connect(&entry).await.expect("connect");
        assert_eq!(greeting(&mut conn).await, "live");
    }
}

#[tokio::test]
async fn open_connections_are_counted_per_task_and_reported() {
    let (ingress, entry) = proxy_with(vec![backend("a", server("a").await)]).await;
    // The readiness probe of `proxy_with` opened and closed one connection: wait until it is gone.
    for _ in 0..200 {
        if ingress.connections_to("a") == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut held = TcpStream::connect(&entry).await.expect("connect");
    assert_eq!(greeting(&mut held).await, "a");
    assert_eq!(ingress.connections_to("a"), 1);
    let (version, connections) = ingress.report();
    assert_eq!((version, connections.get("a").copied()), (1, Some(1)));
    // Bytes pass both ways.
    held.write_all(b"ping").await.expect("write");
    assert_eq!(greeting(&mut held).await, "ping");
    drop(held);
    for _ in 0..200 {
        if ingress.connections_to("a") == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the closed connection is still counted");
}

#[tokio::test]
async fn a_port_without_backends_closes_connections_and_a_closed_port_keeps_carried_ones() {
    let (ingress, entry) = proxy_with(Vec::new()).await;
    let mut conn = TcpStream::connect(&entry).await.expect("connect");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut buf)).await.expect("closed in time");
    assert!(read.is_ok_and(|n| n == 0), "closed without a byte");

    let port: u16 = entry.rsplit_once(':').expect("port").1.parse().expect("port");
    ingress.apply(
        2,
        false,
        vec![Listener {
            address: String::new(),
            port,
            service: "web".into(),
            backends: vec![backend("a", server("a").await)],
        }],
        &[],
        Vec::new(),
        None,
    );
    let mut carried = TcpStream::connect(&entry).await.expect("connect");
    assert_eq!(greeting(&mut carried).await, "a");
    ingress.apply(3, true, Vec::new(), &[], Vec::new(), None);
    for _ in 0..200 {
        if TcpStream::connect(&entry).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(TcpStream::connect(&entry).await.is_err(), "the port is closed");
    carried.write_all(b"still").await.expect("write");
    assert_eq!(greeting(&mut carried).await, "still", "the carried connection goes on");
}

#[tokio::test]
async fn drained_tasks_wake_their_waiters() {
    let ingress = Ingress::new("127.0.0.1".parse().expect("ip"), "here".into());
    let waiter = {
        let ingress = ingress.clone();
        tokio::spawn(async move { ingress.wait_drained("t1").await })
    };
    ingress.apply(1, false, Vec::new(), &[], vec!["t1".into()], None);
    tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("woken").expect("joined");
}

#[tokio::test]
async fn a_half_close_and_garbage_pass_through() {
    let (_ingress, entry) = proxy_with(vec![backend("a", server("a").await)]).await;
    let mut conn = TcpStream::connect(&entry).await.expect("connect");
    assert_eq!(greeting(&mut conn).await, "a");
    // Bytes that mean nothing to anyone are carried as they are.
    let garbage: Vec<u8> = (0..=255u8).rev().take(40).collect();
    conn.write_all(&garbage).await.expect("write");
    let mut echoed = vec![0u8; garbage.len()];
    tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut echoed)).await.expect("in time").expect("read");
    assert_eq!(echoed, garbage);
    // The client closes its sending side: the backend sees the end and closes; the client
    // reads to the end.
    conn.shutdown().await.expect("half-close");
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut rest)).await.expect("closed").expect("read");
    assert!(rest.is_empty());
}

#[tokio::test]
async fn past_the_limit_new_connections_are_closed_and_stalled_ones_hold_no_one_else_up() {
    let (ingress, entry) = proxy_limited(vec![backend("a", server("a").await)], 4).await;
    // The probe's connection ends first (it would hold a slot).
    for _ in 0..200 {
        if ingress.connections_to("a") == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Four clients that connect and then send nothing: each holds a slot.
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let mut conn = TcpStream::connect(&entry).await.expect("connect");
        assert_eq!(greeting(&mut conn).await, "a", "a stalled client does not hold the others up");
        stalled.push(conn);
    }
    assert_eq!(ingress.connections_to("a"), 4);
    // The fifth is closed at once, without reaching the backend.
    let mut fifth = TcpStream::connect(&entry).await.expect("the kernel still accepts");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), fifth.read_to_end(&mut buf)).await.expect("closed in time");
    assert!(read.map_or(true, |n| n == 0), "closed without a byte: {buf:?}");
    // A slot freed is taken again.
    stalled.pop();
    for _ in 0..200 {
        if ingress.connections_to("a") == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut again = TcpStream::connect(&entry).await.expect("connect");
    assert_eq!(greeting(&mut again).await, "a");
}
