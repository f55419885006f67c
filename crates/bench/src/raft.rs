//! Raft scenarios: commit throughput and latency, leader failover.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use shoal_proto::v1::{CreateServiceRequest, UpdateServiceRequest};
use shoal_tests::{Cluster, connect};
use shoal_types::ServiceSpec;
use tokio::time::Instant;

use crate::report::{Figure, Report, percentile};

fn spec(name: &str) -> String {
    serde_json::to_string(&ServiceSpec::new(name, "shoal/busybox:1")).expect("spec serialises")
}

/// CPU time a process (all its threads, live and exited) has used so far, in µs, from
/// `/proc/<pid>/stat`; `None` where the kernel does not expose it. The kernel reports it in
/// USER_HZ ticks, which its ABI fixes at 100 per second: 10 ms resolution, fine over a phase of
/// seconds.
fn cpu_micros(pid: Option<u32>) -> Option<f64> {
    const MICROS_PER_TICK: f64 = 10_000.0;
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) may hold spaces; the fields after it are plain numbers.
    let mut fields = text.rsplit_once(')')?.1.split_whitespace();
    let user: f64 = fields.nth(11)?.parse().ok()?;
    let system: f64 = fields.next()?.parse().ok()?;
    Some((user + system) * MICROS_PER_TICK)
}

/// CPU used by the leader, the followers and this client (the bench process) over one phase.
pub struct CpuMeter {
    leader: Option<u32>,
    followers: Vec<Option<u32>>,
    start: Option<[f64; 3]>,
}

impl CpuMeter {
    pub fn new(cluster: &Cluster, leader: usize) -> CpuMeter {
        let followers =
            (0..cluster.managers.len()).filter(|i| *i != leader).map(|i| cluster.managers[i].pid()).collect();
        CpuMeter::of(cluster.managers[leader].pid(), followers)
    }

    /// For any replicated process (the etcd comparison's members).
    pub fn of(leader: Option<u32>, followers: Vec<Option<u32>>) -> CpuMeter {
        CpuMeter { leader, followers, start: None }
    }

    /// [leader, all followers together, client] in µs.
    fn read(&self) -> Option<[f64; 3]> {
        let mut followers = 0.0;
        for pid in &self.followers {
            followers += cpu_micros(Some((*pid)?))?;
        }
        Some([cpu_micros(Some(self.leader?))?, followers, cpu_micros(None)?])
    }

    pub fn start(&mut self) {
        self.start = self.read();
    }

    /// CPU µs per operation since `start`: [leader, per follower, client].
    pub fn per_op(&self, ops: usize) -> Option<[f64; 3]> {
        let (start, end) = (self.start?, self.read()?);
        let ops = ops.max(1) as f64;
        let followers = self.followers.len().max(1) as f64;
        Some([(end[0] - start[0]) / ops, (end[1] - start[1]) / ops / followers, (end[2] - start[2]) / ops])
    }
}

/// Pushes the CPU cost per operation of one phase, by process.
fn push_cpu(report: &mut Report, scenario: &str, what: &str, per_op: Option<[f64; 3]>, samples: usize) {
    let Some([leader, follower, client]) = per_op else { return };
    for (who, value) in [("leader", leader), ("each follower", follower), ("client", client)] {
        report.push(Figure::new(scenario, &format!("CPU per {what}, {who}"), value, "µs").samples(samples));
    }
}

/// One client of a write load: [`sequential`] and [`in_flight`] time its writes, whatever system
/// it writes to (shoal here, etcd in `etcd.rs`), so both are driven the same way.
pub trait Writer: Send + 'static {
    /// Makes the `i`-th write of this client and returns once the system acknowledged it.
    fn write(&mut self, i: usize) -> impl Future<Output = Result<()>> + Send;
}

/// The latencies (ms, sorted) and wall time (s) of one load phase.
pub struct Phase {
    pub latencies: Vec<f64>,
    pub elapsed: f64,
}

impl Phase {
    pub fn writes(&self) -> usize {
        self.latencies.len()
    }

    pub fn throughput(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed
    }

    pub fn p50(&self) -> f64 {
        percentile(&self.latencies, 50.0)
    }

    pub fn p99(&self) -> f64 {
        percentile(&self.latencies, 99.0)
    }
}

/// `writes` writes of one client, one after another.
pub async fn sequential<W: Writer>(writer: &mut W, writes: usize) -> Result<Phase> {
    let mut latencies = Vec::with_capacity(writes);
    let started = Instant::now();
    for i in 0..writes {
        let t = Instant::now();
        writer.write(i).await?;
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    Ok(Phase { latencies, elapsed })
}

/// Every writer makes `per_writer` writes one after another, all writers at once (a task each):
/// as many writes in flight as writers. The writers come back for another phase.
pub async fn in_flight<W: Writer>(writers: Vec<W>, per_writer: usize) -> Result<(Phase, Vec<W>)> {
    let started = Instant::now();
    let mut handles = Vec::with_capacity(writers.len());
    for mut writer in writers {
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_writer);
            for i in 0..per_writer {
                let t = Instant::now();
                writer.write(i).await?;
                latencies.push(t.elapsed().as_secs_f64() * 1e3);
            }
            Ok::<_, anyhow::Error>((writer, latencies))
        }));
    }
    let mut latencies = Vec::with_capacity(handles.len() * per_writer);
    let mut writers = Vec::with_capacity(handles.len());
    for h in handles {
        let (writer, l) = h.await??;
        writers.push(writer);
        latencies.extend(l);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    Ok((Phase { latencies, elapsed }, writers))
}

/// A shoal client that commits label updates of its own 0-replica service, each sending the
/// version it last saw (what `service update -d --label-add` sends).
pub struct LabelWriter {
    client: crate::svc::Client,
    name: String,
    spec: ServiceSpec,
    version: u64,
}

impl LabelWriter {
    /// Creates the 0-replica service `name` through `client`.
    pub async fn create(mut client: crate::svc::Client, name: &str) -> Result<LabelWriter> {
        let mut spec = ServiceSpec::new(name, "shoal/busybox:1");
        spec.mode = shoal_types::ServiceMode::Replicated { replicas: 0 };
        let created = client
            .create_service(CreateServiceRequest { spec_json: serde_json::to_string(&spec)?, ..Default::default() })
            .await?;
        let version = serde_json::from_str::<shoal_types::Service>(&created.into_inner().service_json)?.version;
        Ok(LabelWriter { client, name: name.to_string(), spec, version })
    }

    /// Goes on through `client` (a new connection after a failed write), from the version the
    /// manager holds now: the failed write may have been applied.
    pub async fn resume(&mut self, client: crate::svc::Client) -> Result<()> {
        self.client = client;
        let request = shoal_proto::v1::GetServiceRequest { service: self.name.clone() };
        let json = self.client.get_service(request).await?.into_inner().service_json;
        self.version = serde_json::from_str::<Versioned>(&json)?.version;
        Ok(())
    }

    /// Bytes of the spec JSON one update sends.
    pub fn request_bytes(&self) -> usize {
        serde_json::to_string(&self.spec).map(|s| s.len()).unwrap_or(0)
    }

    /// Bytes of the service JSON the manager returns for this service (the object a write replaces).
    pub async fn service_bytes(&mut self) -> Result<usize> {
        let request = shoal_proto::v1::GetServiceRequest { service: self.name.clone() };
        Ok(self.client.get_service(request).await?.into_inner().service_json.len())
    }
}

impl Writer for LabelWriter {
    async fn write(&mut self, i: usize) -> Result<()> {
        self.spec.labels.insert("bench.counter".into(), i.to_string());
        let response = self
            .client
            .update_service(UpdateServiceRequest {
                service: self.name.clone(),
                version: self.version,
                spec_json: serde_json::to_string(&self.spec)?,
                rollback: false,
                ..Default::default()
            })
            .await?;
        self.version = serde_json::from_str::<Versioned>(&response.into_inner().service_json)?.version;
        Ok(())
    }
}

/// All the load generator reads of a written service: it shares the managers' 2 cores, so
/// building the whole service (both specs) per commit would take CPU from what is measured.
#[derive(serde::Deserialize)]
struct Versioned {
    version: u64,
}

/// Sequential and pipelined commits through the leader of a 3-manager cluster. Each commit is a
/// service update (a label, with the version read): the whole write path (API, raft with a quorum
/// fsync, apply) without growing the orchestrated state, so the figure is raft's, not the
/// orchestrator's.
pub async fn raft_commits(quick: bool, report: &mut Report) -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let leader = cluster.leader().await?;
    let addr = cluster.managers[leader].addr.clone();
    let mut client = connect(&addr).await?;

    let sequential_writes = if quick { 200 } else { 3000 };
    let mut writer = LabelWriter::create(client.clone(), "seq").await?;
    // The floor under a commit's latency on this machine: a read served by the leader from memory
    // over the same connection (TLS, gRPC, JSON), no raft.
    let mut reads = Vec::with_capacity(sequential_writes);
    for _ in 0..sequential_writes {
        let t = Instant::now();
        client.get_service(shoal_proto::v1::GetServiceRequest { service: "seq".into() }).await?;
        reads.push(t.elapsed().as_secs_f64() * 1e3);
    }
    reads.sort_by(f64::total_cmp);
    let phase = sequential(&mut writer, sequential_writes).await?;
    let scenario = "raft commits, 3 managers, 1 sequential client";
    report.push(
        Figure::new(scenario, "throughput", phase.throughput(), "commits/s")
            .target(">= 1000 commits/s")
            .samples(sequential_writes),
    );
    report.push(Figure::new(scenario, "latency p50", phase.p50(), "ms").target("<= 1 ms").samples(sequential_writes));
    report.push(Figure::new(scenario, "latency p99", phase.p99(), "ms").samples(sequential_writes));
    report.push(
        Figure::new(scenario, "read round trip p50 (no raft; the floor)", percentile(&reads, 50.0), "ms")
            .samples(sequential_writes),
    );

    let total = if quick { 2000 } else { 30_000 };
    let in_flight_writers = 256;
    let per_worker = total / in_flight_writers;
    let mut workers = Vec::new();
    for w in 0..in_flight_writers {
        workers.push(LabelWriter::create(client.clone(), &format!("par-{w}")).await?);
    }
    // The ceiling over the commit throughput below: the same clients, connection and response
    // size, reading instead of writing (leader's memory, no raft, no followers).
    let mut cpu = CpuMeter::new(&cluster, leader);
    cpu.start();
    let started = Instant::now();
    let mut handles = Vec::new();
    for worker in &workers {
        let mut client = worker.client.clone();
        let name = worker.name.clone();
        handles.push(tokio::spawn(async move {
            for _ in 0..per_worker {
                client.get_service(shoal_proto::v1::GetServiceRequest { service: name.clone() }).await?;
            }
            Ok::<_, anyhow::Error>(per_worker)
        }));
    }
    let mut reads_done = 0;
    for h in handles {
        reads_done += h.await??;
    }
    let read_throughput = reads_done as f64 / started.elapsed().as_secs_f64();
    let read_cpu = cpu.per_op(reads_done);

    cpu.start();
    let (phase, _) = in_flight(workers, per_worker).await?;
    let done = phase.writes();
    let commit_cpu = cpu.per_op(done);
    let scenario = "raft commits, 3 managers, 256 in flight";
    report.push(
        Figure::new(scenario, "throughput", phase.throughput(), "commits/s").target(">= 20000 commits/s").samples(done),
    );
    report.push(Figure::new(scenario, "latency p50", phase.p50(), "ms").samples(done));
    report.push(Figure::new(scenario, "latency p99", phase.p99(), "ms").samples(done));
    report.push(
        Figure::new(scenario, "read throughput (no raft; the ceiling)", read_throughput, "reads/s").samples(reads_done),
    );
    push_cpu(report, scenario, "commit", commit_cpu, done);
    push_cpu(report, scenario, "read", read_cpu, reads_done);
    report.how(
        "raft commits",
        format!(
            "3 `shoal-manager` processes on loopback. Each commit is a `service update` changing one label and \
             carrying the version read, sent to the leader; it returns once the entry is committed (fsynced by a \
             quorum) and applied, and the client reads only the new version from the service it returns. One client makes {sequential_writes} updates of one service one after another; then \
             256 clients each update their own service {per_worker} times concurrently ({done} commits); before \
             that, the same 256 clients read their service as often, which gives the API's ceiling on this \
             machine without raft. CPU per operation is each process's CPU time over a phase \
             (user + system, all threads, from `/proc/<pid>/stat`, 10 ms ticks) divided by the operations it \
             completed; the client is `shoal-bench` \
             itself, on the same 2 cores. \
             Services have 0 replicas so the orchestrator has nothing to do. No reference: Swarm's raft is not \
             reachable on its own."
        ),
    );
    let info = shoal_tests::cluster_info(&addr).await?;
    if info.services != 1 + in_flight_writers {
        bail!("expected {} services after the run, found {}", 1 + in_flight_writers, info.services);
    }
    Ok(())
}

/// kill -9 of the leader until a write succeeds through another manager.
pub async fn leader_failover(quick: bool, report: &mut Report) -> Result<()> {
    let trials = if quick { 3 } else { 20 };
    let mut cluster = Cluster::start(3).await?;
    let mut times = Vec::new();
    for trial in 0..trials {
        let leader = cluster.leader().await?;
        let old = cluster.managers[leader].addr.clone();
        let others: Vec<String> = cluster.running_addrs().into_iter().filter(|a| *a != old).collect();
        let mut clients = Vec::new();
        for addr in &others {
            clients.push(connect(addr).await?);
        }
        cluster.managers[leader].kill9();
        let killed = Instant::now();
        let mut attempt = 0usize;
        loop {
            let n = clients.len();
            let client = &mut clients[attempt % n];
            attempt += 1;
            let request =
                CreateServiceRequest { spec_json: spec(&format!("failover-{trial}-{attempt}")), ..Default::default() };
            match tokio::time::timeout(Duration::from_millis(500), client.create_service(request)).await {
                Ok(Ok(_)) => break,
                _ if killed.elapsed() > Duration::from_secs(30) => {
                    bail!("no write succeeded within 30s of killing the leader")
                }
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
        times.push(killed.elapsed().as_secs_f64() * 1e3);
        cluster.managers[leader].restart()?;
        let commit = cluster.wait_for(Duration::from_secs(10), |i| i.leader.is_some()).await?.raft.commit;
        shoal_tests::wait_applied(&old, commit, Duration::from_secs(20))
            .await
            .context("restarted manager catching up")?;
    }
    report.how(
        "leader failover",
        format!(
            "3 managers; {trials} trials of: SIGKILL the leader, then create a service through the other managers \
             (500 ms per attempt, round robin) until one succeeds; the time is from the kill to that success. The \
             killed manager is restarted and caught up before the next trial. Swarm elects after 10 ticks of 1 s \
             (swarm-semantics §0), not measured here."
        ),
    );
    times.sort_by(f64::total_cmp);
    let scenario = "leader failover after kill -9 (3 managers; until a write succeeds)";
    report.push(Figure::new(scenario, "p50", percentile(&times, 50.0), "ms").target("<= 500 ms").samples(trials));
    report.push(Figure::new(scenario, "p99", percentile(&times, 99.0), "ms").target("<= 1500 ms").samples(trials));
    Ok(())
}
