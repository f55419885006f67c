//! Ingress traffic: what shoal's proxy costs against HAProxy and direct connections, and failed
//! requests during a rolling update under a steady load, shoal against HAProxy in front of a
//! raw-Docker rolling replacement. Docker Swarm's routing mesh needs IPVS, which this machine's
//! kernel lacks (a swarm service's published port does not answer here), so it is cited from its
//! issue tracker instead of measured.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use shoal_tests::{Cluster, list_tasks, running, shoal_ok};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::Ctx;
use crate::engine::{RAW_LABEL, RawGuard};
use crate::report::{Figure, Kind, Report, percentile};

const TITLE_COST: &str = "ingress proxy cost, 1 web task";
/// A network of fixed addresses for the raw-Docker replacement, so HAProxy's static server list
/// stays right across it.
const RAW_NETWORK: &str = "shoalbench-traffic";
const RAW_SUBNET: &str = "172.31.250.0/24";
/// Requests a second during the rolling updates (a new connection each).
const RATE: u32 = 200;
const REPLICAS: usize = 10;
/// Requests a second of a second each (so about this many in flight).
const SLOW_RATE: u32 = 50;

/// The outcome of a load run.
#[derive(Default)]
struct Load {
    ok: u64,
    failed: u64,
    /// Latencies of answered requests, in microseconds, sorted.
    micros: Vec<f64>,
    seconds: f64,
}

impl Load {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.seconds
    }
    fn p(&self, p: f64) -> f64 {
        percentile(&self.micros, p)
    }
}

/// One HTTP/1.0 GET on a new connection; Ok when a 200 came back whole.
async fn request(addr: &str, path: &str) -> Result<()> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        stream.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes()).await?;
        let mut response = Vec::with_capacity(256);
        stream.read_to_end(&mut response).await?;
        if !response.starts_with(b"HTTP/1.") || !response.windows(5).any(|w| w == b" 200 ") {
            bail!("not a 200: {:?}", String::from_utf8_lossy(&response));
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(5), exchange).await.context("no answer within 5s")?
}

/// `clients` loops, each sending requests one after the other for `length`.
async fn closed_loop(addr: &str, clients: usize, length: Duration) -> Load {
    let start = Instant::now();
    let mut loops = Vec::new();
    for _ in 0..clients {
        let addr = addr.to_string();
        loops.push(tokio::spawn(async move {
            let mut load = Load::default();
            while start.elapsed() < length {
                let t = Instant::now();
                match request(&addr, "/").await {
                    Ok(()) => {
                        load.ok += 1;
                        load.micros.push(t.elapsed().as_secs_f64() * 1e6);
                    }
                    Err(_) => load.failed += 1,
                }
            }
            load
        }));
    }
    let mut total = Load::default();
    for handle in loops {
        if let Ok(load) = handle.await {
            total.ok += load.ok;
            total.failed += load.failed;
            total.micros.extend(load.micros);
        }
    }
    total.seconds = start.elapsed().as_secs_f64();
    total.micros.sort_by(f64::total_cmp);
    total
}

/// A request every 1/`rate` s, each on its own task, until `stop` is set.
async fn paced(addr: String, path: &'static str, rate: u32, stop: Arc<AtomicBool>) -> Load {
    let start = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / rate);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut requests = tokio::task::JoinSet::new();
    while !stop.load(Ordering::Relaxed) {
        ticker.tick().await;
        let addr = addr.clone();
        requests.spawn(async move {
            let t = Instant::now();
            request(&addr, path).await.map(|()| t.elapsed().as_secs_f64() * 1e6)
        });
    }
    let mut load = Load { seconds: start.elapsed().as_secs_f64(), ..Load::default() };
    while let Some(done) = requests.join_next().await {
        match done {
            Ok(Ok(micros)) => {
                load.ok += 1;
                load.micros.push(micros);
            }
            _ => load.failed += 1,
        }
    }
    load.micros.sort_by(f64::total_cmp);
    load
}

/// HAProxy in TCP mode on `listen`, health-checking `servers` every second; killed when dropped.
struct HaProxy {
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl HaProxy {
    async fn start(listen: &str, servers: &[String]) -> Result<HaProxy> {
        let dir = tempfile::tempdir()?;
        let mut config = format!(
            "global\n  maxconn 8000\ndefaults\n  mode tcp\n  timeout connect 1s\n  timeout client 30s\n  timeout server 30s\n\
             frontend web\n  bind {listen}\n  default_backend tasks\nbackend tasks\n  balance leastconn\n"
        );
        for (i, server) in servers.iter().enumerate() {
            config.push_str(&format!("  server s{i} {server} check inter 1s\n"));
        }
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config)?;
        let child = tokio::process::Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting haproxy")?;
        let proxy = HaProxy { child, _dir: dir };
        wait_answering(listen).await.context("HAProxy never answered")?;
        Ok(proxy)
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// HAProxy on PATH, installed from Debian's packages when it is missing and this is root.
fn haproxy_available() -> bool {
    let present = || std::process::Command::new("haproxy").arg("-v").output().is_ok_and(|o| o.status.success());
    if present() {
        return true;
    }
    eprintln!("    haproxy not found: trying apt-get install haproxy");
    let _ = std::process::Command::new("apt-get")
        .args(["install", "-y", "-qq", "haproxy"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    present()
}

async fn wait_answering(addr: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match request(addr, "/").await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e.context(format!("{addr} never answered"))),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A docker CLI call that does not hold up the runtime's threads (the load runs meanwhile).
async fn docker(args: &[&str]) -> Result<String> {
    let out = tokio::process::Command::new("docker").args(args).output().await.context("running docker")?;
    if !out.status.success() {
        bail!("docker {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Removes the raw network when dropped (after the containers' guard).
struct NetworkGuard;

impl Drop for NetworkGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker").args(["network", "rm", RAW_NETWORK]).output();
    }
}

pub async fn traffic(ctx: &mut Ctx, report: &mut Report) -> Result<()> {
    let haproxy = haproxy_available();
    let mut cluster = Cluster::start(1).await?;
    cluster.add_agent(&[]).await?;
    let addr = cluster.running_addrs()[0].clone();
    let result = measure(ctx, report, &mut cluster, &addr, haproxy).await;
    for name in ["bench-web", "bench-roll"] {
        let _ = shoal_ok(&addr, &["service", "rm", name]);
    }
    result
}

async fn measure(ctx: &mut Ctx, report: &mut Report, cluster: &mut Cluster, addr: &str, haproxy: bool) -> Result<()> {
    let quick = ctx.quick;
    let ingress = cluster.agents[0].ingress_addr;
    // --- Proxy cost: one task, closed loops, direct vs shoal vs HAProxy, alternating rounds.
    shoal_ok(addr, &["service", "create", "--name", "bench-web", "-p", "18080:80", "shoal/web:1"])?;
    let tasks = list_tasks(addr, "bench-web").await?;
    let task = running(&tasks).first().copied().context("a running bench-web task")?.clone();
    let container_ip = task.status.ports.first().map(|p| p.container_ip.clone()).unwrap_or_default();
    let direct = format!("{container_ip}:80");
    let through_shoal = format!("{ingress}:18080");
    let through_haproxy = format!("{ingress}:18090");
    wait_answering(&through_shoal).await?;
    let _haproxy =
        if haproxy { Some(HaProxy::start(&through_haproxy, std::slice::from_ref(&direct)).await?) } else { None };
    let (clients, length, rounds) =
        if quick { (4, Duration::from_millis(500), 1) } else { (8, Duration::from_secs(4), 3) };
    let mut runs: [Vec<Load>; 3] = Default::default();
    for _ in 0..rounds {
        runs[0].push(closed_loop(&direct, clients, length).await);
        runs[1].push(closed_loop(&through_shoal, clients, length).await);
        if haproxy {
            runs[2].push(closed_loop(&through_haproxy, clients, length).await);
        }
    }
    // The median round by throughput, for each path.
    let pick = |loads: &mut Vec<Load>| -> Option<Load> {
        loads.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
        let middle = loads.len() / 2;
        (!loads.is_empty()).then(|| loads.swap_remove(middle))
    };
    let direct_load = pick(&mut runs[0]).context("direct runs")?;
    let shoal_load = pick(&mut runs[1]).context("shoal runs")?;
    let haproxy_load = pick(&mut runs[2]);
    let scenario = format!("{TITLE_COST}, {clients} clients, a new connection per request");
    let with_refs = |figure: Figure, direct: f64, haproxy: Option<f64>| {
        let figure = figure.reference("direct to the container", direct, Kind::Measured);
        match haproxy {
            Some(v) => figure.reference("HAProxy 2.6 (tcp)", v, Kind::Measured),
            None => figure,
        }
    };
    report.push(
        with_refs(
            Figure::new(&scenario, "requests/s through shoal's ingress", shoal_load.rate(), "req/s"),
            direct_load.rate(),
            haproxy_load.as_ref().map(Load::rate),
        )
        .target("≥ 0.8× direct, ≥ HAProxy")
        .samples(rounds),
    );
    for (p, name) in [(0.5, "p50"), (0.99, "p99")] {
        let target = if p == 0.5 { "≤ direct + 100 µs" } else { "" };
        report.push(
            with_refs(
                Figure::new(
                    &scenario,
                    &format!("{name} request latency through shoal's ingress"),
                    shoal_load.p(p),
                    "µs",
                ),
                direct_load.p(p),
                haproxy_load.as_ref().map(|l| l.p(p)),
            )
            .target(target)
            .samples(shoal_load.ok as usize),
        );
    }
    let failed = direct_load.failed + shoal_load.failed + haproxy_load.as_ref().map_or(0, |l| l.failed);
    if failed > 0 {
        eprintln!(
            "    {failed} requests failed in the cost runs (direct {}, shoal {})",
            direct_load.failed, shoal_load.failed
        );
    }
    drop(_haproxy);
    shoal_ok(addr, &["service", "rm", "bench-web"])?;

    // --- Rolling updates under a steady load: quick requests, then requests of a second each
    // (in flight when a container stops).
    let replicas = if quick { 3 } else { REPLICAS };
    for (path, rate, what) in [("/", RATE, "quick requests"), ("/cgi-bin/slow", SLOW_RATE, "1 s requests")] {
        let shoal_roll = shoal_rolling(addr, &ingress.to_string(), replicas, path, rate).await?;
        let raw = if haproxy { Some(raw_replacement(replicas, &ingress.to_string(), path, rate).await?) } else { None };
        let scenario = format!("rolling update under load, {replicas} web replicas, {rate} new connections/s, {what}");
        let (shoal_load, shoal_update) = &shoal_roll;
        let mut figure = Figure::new(
            &scenario,
            "failed requests during shoal's rolling update",
            shoal_load.failed as f64,
            "requests",
        )
        .target("0")
        .samples((shoal_load.ok + shoal_load.failed) as usize);
        if let Some((raw_load, _)) = &raw {
            figure = figure.reference("HAProxy + raw-Docker replacement", raw_load.failed as f64, Kind::Measured);
        }
        report.push(figure);
        let mut figure = Figure::new(&scenario, "p99 request latency during the update", shoal_load.p(0.99), "µs")
            .samples(shoal_load.ok as usize);
        if let Some((raw_load, _)) = &raw {
            figure = figure.reference("HAProxy + raw-Docker replacement", raw_load.p(0.99), Kind::Measured);
        }
        report.push(figure);
        let mut figure = Figure::new(&scenario, "update duration (incl. the 5 s update monitor)", *shoal_update, "s");
        if let Some((_, raw_seconds)) = &raw {
            figure = figure.reference("raw-Docker replacement", *raw_seconds, Kind::Measured);
        }
        report.push(figure);
    }
    let haproxy_note = if haproxy {
        ""
    } else {
        " HAProxy was not available in this run (Debian: `apt-get install haproxy`), so its references are missing."
    };
    report.how(
        "Ingress traffic",
        format!(
            "One manager and one agent (release binaries, the agent's ingress on a loopback address), `shoal/web` \
             (busybox httpd) tasks. Proxy cost: {clients} client loops, each a new TCP connection and one HTTP/1.0 GET \
             per request, for {length:?} per path and round, {rounds} round(s) alternating direct (the container's \
             address), shoal's ingress (the agent's proxy; the task is local, so it connects to the container's \
             address) and HAProxy 2.6 in TCP mode in front of the same container (leastconn, health check every 1s); \
             the median round by throughput is shown. The load generator, the proxies and the web server share the \
             machine's cores. Rolling update: {replicas} replicas `shoal/web:1` → `:2`, default settings (parallelism \
             1, stop-first, so each old task drains first), while a paced load opens {RATE} connections a second \
             for `/` (answered at once), then {SLOW_RATE} a second for `/cgi-bin/slow` (answered after 1 s, so \
             about {SLOW_RATE} requests are in flight at any time), through the agent's ingress; a request fails on a connect error, a reset, a timeout (5 s) or an answer \
             that is not a whole 200. Reference: the same {replicas} containers on a Docker network with fixed \
             addresses behind HAProxy, replaced one after the other by a script (`docker stop` (SIGTERM; the web \
             server exits at once), `docker rm`, `docker run` of `:2` at the same address), HAProxy finding out \
             through its health checks, under the same load. Docker Swarm's routing mesh could not be measured (no \
             IPVS in this kernel); its issue tracker reports failed requests during rolling updates: moby/moby#30321 \
             (502s with start-first, 2018; \"doesn't work when it is distributed among multiple nodes\", 2019), \
             moby/moby#32079 (\"every other request timed out\" after a service update), moby/moby#39459 \
             (`Connection refused` during a rolling update, 18.03) and moby/moby#44815 (502s during rolling updates, \
             open since 2023).{haproxy_note}"
        ),
    );
    Ok(())
}

/// shoal's rolling update of `replicas` tasks `shoal/web:1` → `:2` (default settings) while a
/// paced load asks for `path` `rate` times a second through the agent's ingress: the load and the
/// update's duration.
async fn shoal_rolling(
    addr: &str,
    ingress: &str,
    replicas: usize,
    path: &'static str,
    rate: u32,
) -> Result<(Load, f64)> {
    let replicas_text = replicas.to_string();
    shoal_ok(
        addr,
        &["service", "create", "--name", "bench-roll", "--replicas", &replicas_text, "-p", "18081:80", "shoal/web:1"],
    )?;
    let entry = format!("{ingress}:18081");
    wait_answering(&entry).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(paced(entry.clone(), path, rate, stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let update_addr = addr.to_string();
    tokio::task::spawn_blocking(move || {
        shoal_ok(&update_addr, &["service", "update", "--image", "shoal/web:2", "bench-roll"])
    })
    .await??;
    let seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let load = load.await?;
    shoal_ok(addr, &["service", "rm", "bench-roll"])?;
    // The port is free again before the next run publishes it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok((load, seconds))
}

/// `replicas` `shoal/web:1` containers at fixed addresses behind HAProxy, replaced by `:2` one
/// after the other under the paced load: the failed requests and the replacement's duration.
async fn raw_replacement(replicas: usize, ingress: &str, path: &'static str, rate: u32) -> Result<(Load, f64)> {
    let _ = docker(&["network", "rm", RAW_NETWORK]).await;
    docker(&["network", "create", "--subnet", RAW_SUBNET, RAW_NETWORK]).await?;
    // Dropped in reverse: the containers go first, then the network they were attached to.
    let _network = NetworkGuard;
    let _containers = RawGuard;
    let ip = |i: usize| format!("172.31.250.{}", 10 + i);
    let run = |i: usize, image: &'static str| {
        let (ip, name) = (ip(i), format!("shoalbench-web-{i}"));
        async move {
            docker(&["run", "-d", "--label", RAW_LABEL, "--network", RAW_NETWORK, "--ip", &ip, "--name", &name, image])
                .await
        }
    };
    for i in 0..replicas {
        run(i, "shoal/web:1").await?;
    }
    let servers: Vec<String> = (0..replicas).map(|i| format!("{}:80", ip(i))).collect();
    let listen = format!("{ingress}:18091");
    let _haproxy = HaProxy::start(&listen, &servers).await?;
    // Every server up in HAProxy's eyes (its first checks).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(paced(listen.clone(), path, rate, stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    for i in 0..replicas {
        let name = format!("shoalbench-web-{i}");
        docker(&["stop", &name]).await?;
        docker(&["rm", &name]).await?;
        run(i, "shoal/web:2").await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    Ok((load.await?, seconds))
}
