//! What a client without a certificate can cost a manager, against a real `shoal-manager`: the
//! join call is open to anyone, so connections, calls and request sizes of such clients are
//! bounded, and refusals are logged at most once a second per kind (docs/security.md, "The join
//! endpoint's limits").
//!
//! The attacking clients are real HTTP/2 clients (tonic channels over TLS without a client
//! certificate) whose request bodies are fed by hand, so a request can announce a large gRPC
//! message and then send only part of it.

use std::io::{Read, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use http_body::Frame;
use shoal_tests::*;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::Code;
use tonic::codegen::{Bytes, Service, http};
use tonic::transport::Channel;

const JOIN_PATH: &str = "/shoal.v1.Control/IssueNodeCertificate";

/// The manager's limits (shoal_tls::server::Limits, shoal_control::auth) this test relies on.
const MAX_ANONYMOUS_CONNECTIONS: usize = 256;
const MAX_ANONYMOUS_REQUEST: usize = 64 * 1024;

/// A request body fed through a channel: chunks go out as they are sent; the body ends when the
/// sender is dropped, so holding the sender holds the request half-sent.
struct FedBody(mpsc::Receiver<Bytes>);

impl http_body::Body for FedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        self.0.poll_recv(cx).map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}

/// A gRPC message prefix: not compressed, `len` bytes announced.
fn prefix(len: u32) -> Bytes {
    let mut out = vec![0u8];
    out.extend_from_slice(&len.to_be_bytes());
    Bytes::from(out)
}

/// A join call started on `channel` whose body is `first`, then `filler` bytes in 16 KiB chunks,
/// then nothing more while the returned sender lives. The task yields the call's gRPC status code
/// (`None`: the call failed below gRPC, e.g. the connection was closed).
fn half_sent_call(
    channel: &Channel,
    first: Bytes,
    filler: usize,
) -> (mpsc::Sender<Bytes>, tokio::task::JoinHandle<Option<Code>>) {
    // Capacity 1: a chunk is taken once HTTP/2 has taken the one before it.
    let (tx, rx) = mpsc::channel(1);
    let request = http::Request::builder()
        .method("POST")
        .uri(JOIN_PATH)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(FedBody(rx)))
        .expect("a valid request");
    let mut channel = channel.clone();
    let feeder = tx.clone();
    tokio::spawn(async move {
        if feeder.send(first).await.is_err() {
            return;
        }
        let mut left = filler;
        while left > 0 {
            let n = left.min(16 * 1024);
            // A refused call drops its body: the send fails and feeding stops.
            if feeder.send(Bytes::from(vec![b'x'; n])).await.is_err() {
                return;
            }
            left -= n;
        }
    });
    let call = tokio::spawn(async move {
        std::future::poll_fn(|cx| channel.poll_ready(cx)).await.ok()?;
        let response = channel.call(request).await.ok()?;
        // A refusal is a trailers-only response: the status is in the headers.
        let status = tonic::Status::from_header_map(response.headers()).map(|s| s.code()).unwrap_or(Code::Ok);
        Some(status)
    });
    (tx, call)
}

/// Waits for a call's outcome within `limit`.
async fn outcome(call: &mut tokio::task::JoinHandle<Option<Code>>, limit: Duration) -> Result<Option<Code>> {
    Ok(tokio::time::timeout(limit, call).await.context("no answer")??)
}

/// What one attacking connection got.
enum Connection {
    /// Closed by the manager (over the cap of connections without a certificate).
    Refused,
    /// Accepted: its two half-sent calls are held (senders and pending answers kept).
    Held { _channel: Channel, held: Vec<(mpsc::Sender<Bytes>, tokio::task::JoinHandle<Option<Code>>)> },
}

/// One attacking connection: a call announcing 4 MiB (the most tonic itself would accept) must be
/// refused at once; then of three calls announcing just under the per-call limit and sending most
/// of it, two are held half-sent and the third is refused (too many calls at once).
async fn attack(addr: String) -> Result<Connection> {
    let config = shoal_tls::PinnedCa::new(None).client_config()?;
    let endpoint = tonic::transport::Endpoint::from_shared(shoal_tls::client::uri(&addr))?
        .connect_timeout(Duration::from_secs(10));
    let Ok(channel) = shoal_tls::client::connect(endpoint, config).await else {
        return Ok(Connection::Refused);
    };
    let (_big_tx, mut big) = half_sent_call(&channel, prefix(4 * 1024 * 1024 - 1), 256 * 1024);
    match outcome(&mut big, Duration::from_secs(30)).await.context("the 4 MiB call")? {
        Some(Code::ResourceExhausted) => {}
        None | Some(Code::Unavailable | Code::Unknown | Code::Cancelled) => return Ok(Connection::Refused),
        Some(other) => bail!("a call announcing 4 MiB without a certificate got {other:?}, not ResourceExhausted"),
    }
    let announced = (MAX_ANONYMOUS_REQUEST - 5) as u32;
    let sent = MAX_ANONYMOUS_REQUEST - 8 * 1024;
    // The manager takes up concurrent calls in no fixed order: whichever comes third is refused.
    let calls: Vec<_> = (0..3).map(|_| half_sent_call(&channel, prefix(announced), sent)).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !calls.iter().any(|(_, call)| call.is_finished()) {
        ensure!(Instant::now() < deadline, "none of 3 calls on one connection was refused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut held = Vec::new();
    for (tx, mut call) in calls {
        if call.is_finished() {
            let code = outcome(&mut call, Duration::from_secs(1)).await?;
            ensure!(code == Some(Code::ResourceExhausted), "a third call on one connection got {code:?}");
        } else {
            held.push((tx, call));
        }
    }
    ensure!(held.len() == 2, "{} of 3 calls on one connection are held, not 2", held.len());
    Ok(Connection::Held { _channel: channel, held })
}

/// VmRSS of a process, in bytes.
fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS line")?;
    Ok(kb * 1024)
}

/// The log lines of one kind (`needle`) and the sum of the `suppressed=N` counts they carry.
fn log_lines(log: &str, needle: &str) -> (usize, u64) {
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(needle)).collect();
    let suppressed = lines
        .iter()
        .filter_map(|l| l.split("suppressed=").nth(1))
        .filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse::<u64>().ok())
        .sum();
    (lines.len(), suppressed)
}

/// At most one line per kind per second, plus the first: the bound for a run of `elapsed`.
fn throttled(elapsed: Duration) -> usize {
    elapsed.as_secs() as usize + 2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_streams_are_bounded() -> Result<()> {
    let cluster = Cluster::start(1).await?;
    let manager = &cluster.managers[0];
    let addr = manager.addr.clone();
    let pid = manager.pid().context("the manager runs")?;
    let before = rss_bytes(pid)?;
    let started = Instant::now();

    // 300 connections without a certificate at once, each trying 4 calls.
    const CONNECTIONS: usize = 300;
    let mut attacks = tokio::task::JoinSet::new();
    for _ in 0..CONNECTIONS {
        attacks.spawn(attack(addr.clone()));
    }
    let mut connections = Vec::new();
    while let Some(result) = attacks.join_next().await {
        connections.push(result?.with_context(|| manager.log())?);
    }
    let held = connections.iter().filter(|c| matches!(c, Connection::Held { .. })).count();
    eprintln!(
        "{held} of {CONNECTIONS} connections without a certificate were accepted, each holding 2 half-sent calls"
    );
    ensure!(held <= MAX_ANONYMOUS_CONNECTIONS, "{held} connections without a certificate were accepted at once");
    // The load is real: nearly every connection up to the cap got in (a connection whose client
    // is slow to start its calls may have been overtaken by the cap's refusals; none lost).
    ensure!(held >= 200, "only {held} connections were accepted; the test did not load the manager");

    // While all that is held: the manager's memory stays bounded, and it still serves.
    let mut peak = 0;
    for _ in 0..20 {
        peak = peak.max(rss_bytes(pid)?);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let info = cluster_info(&addr).await.context("an authenticated call under load")?;
    ensure!(info.raft.voters.len() == 1, "cluster info under load: {info:?}");
    peak = peak.max(rss_bytes(pid)?);
    eprintln!("manager RSS: {} MB before, {} MB peak while held", before / 1_000_000, peak / 1_000_000);
    // Bound: 256 connections × 2 calls × 64 KiB of request (32 MiB) plus their TLS and HTTP/2
    // state (well under 100 KiB each: 25 MiB), over an idle manager of ~20-30 MB, with room to
    // spare for the allocator. Before the limits 200 such calls pinned 807 MB.
    ensure!(peak < 150_000_000, "the manager's RSS reached {} MB under the unauthenticated load", peak / 1_000_000);

    // Every held call is still pending: nothing answered them, nothing let them grow.
    let pending = connections
        .iter()
        .map(|c| match c {
            Connection::Held { held, .. } => held.iter().filter(|(_, call)| !call.is_finished()).count(),
            Connection::Refused => 0,
        })
        .sum::<usize>();
    ensure!(pending == 2 * held, "{pending} of {} held calls are still pending", 2 * held);
    for connection in connections {
        if let Connection::Held { held, .. } = connection {
            for (_, call) in held {
                call.abort();
            }
        }
    }

    // Once the attackers are gone, a real join works (its slot frees as soon as the manager sees
    // the connections close).
    let deadline = Instant::now() + Duration::from_secs(30);
    let joined = loop {
        match node_credentials(&addr, shoal_tls::Role::Worker).await {
            Ok(credentials) => break credentials,
            Err(e) if Instant::now() < deadline => {
                eprintln!("join not yet possible: {e:#}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.context("a legitimate join after the load")),
        }
    };
    ensure!(joined.identity()?.role == shoal_tls::Role::Worker);

    // Hundreds of refusals of each kind, yet at most a line a second per kind.
    let elapsed = started.elapsed();
    let log = manager.log();
    for (needle, events) in [
        ("call refused: request too large", held),
        ("call refused: too many calls at once", held),
        ("connection refused: too many open connections without a client certificate", CONNECTIONS - held),
    ] {
        let (lines, suppressed) = log_lines(&log, needle);
        eprintln!("{needle:?}: {lines} lines, {suppressed} suppressed, for {events} events");
        if events > 0 {
            ensure!(lines >= 1, "no line says {needle:?}:\n{log}");
        }
        ensure!(
            lines <= throttled(elapsed),
            "{lines} lines say {needle:?} in {elapsed:?}: not throttled to one a second"
        );
    }
    Ok(())
}

/// One plaintext connection: the manager must refuse its handshake and close it.
fn plaintext_attempt(addr: &str) -> Result<()> {
    let mut tcp = std::net::TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(20)))?;
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: shoal\r\n\r\n")?;
    let mut sink = Vec::new();
    // Until the manager closes it (an error such as a reset counts as closed too).
    let _ = tcp.read_to_end(&mut sink);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_handshakes_log_a_line_a_second_with_a_count_of_the_others() -> Result<()> {
    let cluster = Cluster::start(1).await?;
    let manager = &cluster.managers[0];
    let addr = manager.addr.clone();
    const NEEDLE: &str = "TLS handshake refused (the client does not speak TLS";
    let started = Instant::now();

    // A burst of 200 plaintext connections (within the new-connection rate, so every one reaches
    // its handshake and is refused there).
    let attempts = Arc::new(AtomicUsize::new(0));
    let mut burst = Vec::new();
    for _ in 0..8 {
        let (addr, attempts) = (addr.clone(), attempts.clone());
        burst.push(tokio::task::spawn_blocking(move || -> Result<()> {
            for _ in 0..25 {
                // Counted before it is made: the manager may log it before the client sees it closed.
                attempts.fetch_add(1, Ordering::SeqCst);
                plaintext_attempt(&addr)?;
            }
            Ok(())
        }));
    }
    for task in burst {
        task.await??;
    }

    // The lines written plus the refusals they report as left out account for every attempt once
    // a later line reports the last ones: probe (slowly) until it does.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (lines, suppressed) = loop {
        let (lines, suppressed) = log_lines(&manager.log(), NEEDLE);
        let total = attempts.load(Ordering::SeqCst);
        if lines as u64 + suppressed == total as u64 {
            break (lines, suppressed);
        }
        ensure!(
            (lines as u64 + suppressed) < total as u64,
            "{lines} lines and {suppressed} suppressed for {total} attempts"
        );
        if Instant::now() > deadline {
            bail!("{lines} lines and {suppressed} suppressed never accounted for {total} attempts:\n{}", manager.log());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        let addr = addr.clone();
        attempts.fetch_add(1, Ordering::SeqCst);
        tokio::task::spawn_blocking(move || plaintext_attempt(&addr)).await??;
    };
    let elapsed = started.elapsed();
    let total = attempts.load(Ordering::SeqCst);
    eprintln!(
        "{total} plaintext connections refused in {elapsed:?}: {lines} log lines, {suppressed} counted as suppressed"
    );
    ensure!(lines <= throttled(elapsed), "{lines} lines in {elapsed:?}: not throttled to one a second");
    ensure!(suppressed > 0, "no line reported suppressed refusals");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_time_out_with_a_line_a_second() -> Result<()> {
    let cluster = Cluster::start(1).await?;
    let manager = &cluster.managers[0];
    const NEEDLE: &str = "TLS handshake timed out";
    let started = Instant::now();

    // 150 connections that never start a handshake, then one more a moment later: all are dropped
    // after the 10 s handshake limit, the last one's line reporting the others it left out.
    let mut idle = Vec::new();
    for _ in 0..150 {
        idle.push(tokio::net::TcpStream::connect(&manager.addr).await?);
    }
    // The gap puts the last timeout in a later second than the others.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    idle.push(tokio::net::TcpStream::connect(&manager.addr).await?);

    let deadline = Instant::now() + Duration::from_secs(40);
    let (lines, suppressed) = loop {
        let (lines, suppressed) = log_lines(&manager.log(), NEEDLE);
        if lines as u64 + suppressed == idle.len() as u64 {
            break (lines, suppressed);
        }
        if Instant::now() > deadline {
            bail!("{lines} lines and {suppressed} suppressed for {} idle connections:\n{}", idle.len(), manager.log());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let elapsed = started.elapsed();
    eprintln!("{} idle connections timed out: {lines} log lines, {suppressed} counted as suppressed", idle.len());
    ensure!(lines <= throttled(elapsed), "{lines} lines in {elapsed:?}: not throttled to one a second");
    // The manager closed them: reading gives end of file (or a reset), not a hang.
    for mut tcp in idle {
        let mut buf = [0u8; 16];
        let read =
            tokio::time::timeout(Duration::from_secs(5), tokio::io::AsyncReadExt::read(&mut tcp, &mut buf)).await;
        ensure!(
            matches!(read, Ok(Ok(0) | Err(_))),
            "an idle connection is still open after its handshake limit: {read:?}"
        );
    }
    Ok(())
}
