//! shoal's raft write path against etcd's (issue 22): a 3-member etcd on loopback, with mutual TLS
//! on client and peer connections like shoal's and again without TLS, driven by the load
//! generator of the `raft` scenario (one sequential client, then 256 in flight) next to a
//! 3-manager shoal measured in the same run, with an empty store and again with pending tasks in
//! it. etcd is a reference: if it is not installed, or breaks, the scenario says so and goes on.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use shoal_tests::{Cluster, connect, free_addr};
use shoal_tls::rustls;
use shoal_tls::rustls::pki_types::pem::PemObject;
use shoal_tls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::raft::{CpuMeter, LabelWriter, Phase, Writer, in_flight, sequential};
use crate::report::{Figure, Kind, Report, num};

/// etcd's v3 API, the two calls the benchmark makes (proto/etcd.proto).
mod pb {
    #![allow(clippy::all)]
    tonic::include_proto!("etcdserverpb");
}

use pb::kv_client::KvClient;
use pb::maintenance_client::MaintenanceClient;

const MEMBERS: usize = 3;
const IN_FLIGHT: usize = 256;
const VALUE_BYTES: usize = 1024;
/// Replicas per service when filling shoal's store with pending tasks.
const REPLICAS_PER_SERVICE: usize = 1000;
const TITLE: &str = "raft write path vs etcd";

/// How much load one system gets.
struct Load {
    sequential: usize,
    per_writer: usize,
}

/// What one system did under the load: the sequential phase, the 256-in-flight phase, and the CPU
/// its processes used per write in the latter ([leader, each follower, client] µs).
struct Measured {
    sequential: Phase,
    in_flight: Phase,
    cpu: Option<[f64; 3]>,
}

/// The sequential phase with `writer`, then the in-flight phase with `writers`, the latter's CPU
/// read by `cpu`.
async fn round<W: Writer>(
    writer: &mut W,
    writers: Vec<W>,
    load: &Load,
    mut cpu: CpuMeter,
) -> Result<(Measured, Vec<W>)> {
    let sequential = sequential(writer, load.sequential).await?;
    cpu.start();
    let (in_flight, writers) = in_flight(writers, load.per_writer).await?;
    let cpu = cpu.per_op(in_flight.writes());
    Ok((Measured { sequential, in_flight, cpu }, writers))
}

/// `etcd` on PATH.
fn find_etcd() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join("etcd")).find(|p| p.is_file())
}

/// "3.4.23" from `etcd --version`.
fn etcd_version(bin: &Path) -> String {
    Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find_map(|l| l.strip_prefix("etcd Version:").map(|v| v.trim().to_string()))
        })
        .unwrap_or_else(|| "(unknown version)".into())
}

/// A CA and, signed by it, a certificate for each member (serving clients and peers, calling
/// peers) and one for the benchmark's client, all PEM, from the same rcgen shoal's PKI uses.
struct Pki {
    ca_pem: String,
    /// (certificate, key) per member.
    members: Vec<(String, String)>,
    client: (String, String),
}

impl Pki {
    fn generate(members: usize) -> Result<Pki> {
        let mut ca = CertificateParams::default();
        ca.distinguished_name.push(DnType::CommonName, "shoal-bench etcd CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
        let leaf = |name: &str, server: bool| -> Result<(String, String)> {
            // Members are dialled as 127.0.0.1 by each other (Go verifies the IP) and by
            // shoal's TLS connector under the name it verifies for managers.
            let mut params =
                CertificateParams::new(vec!["localhost".to_string(), shoal_tls::MANAGER_SERVER_NAME.to_string()])?;
            params.subject_alt_names.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
            params.distinguished_name.push(DnType::CommonName, name);
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            if server {
                params.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
            }
            let key = KeyPair::generate()?;
            let cert = params.signed_by(&key, &ca)?;
            Ok((cert.pem(), key.serialize_pem()))
        };
        let members = (0..members).map(|i| leaf(&format!("etcd-{i}"), true)).collect::<Result<_>>()?;
        let client = leaf("shoal-bench", false)?;
        Ok(Pki { ca_pem: ca.pem(), members, client })
    }

    /// The benchmark's side: TLS 1.3, h2, the client certificate, the CA as the only root; the
    /// same settings as shoal's own client configuration.
    fn client_config(&self) -> Result<Arc<rustls::ClientConfig>> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(self.ca_pem.as_bytes())?)?;
        let cert = CertificateDer::from_pem_slice(self.client.0.as_bytes())?;
        let key = PrivateKeyDer::from_pem_slice(self.client.1.as_bytes())?;
        let mut config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS13])?
                .with_root_certificates(roots)
                .with_client_auth_cert(vec![cert], key)?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

struct Member {
    /// host:port of the client URL.
    client: String,
    child: Child,
    log: PathBuf,
}

/// A running etcd cluster in a temporary directory: its members are killed and the directory
/// removed when it is dropped (also on error, panic or Ctrl-C).
struct Etcd {
    members: Vec<Member>,
    /// The client's TLS configuration; `None` without TLS.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Data directories, certificates and logs; removed after `drop` killed the members.
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for member in &mut self.members {
            let _ = member.child.kill();
            let _ = member.child.wait();
        }
    }
}

impl Etcd {
    fn start(bin: &Path, tls: bool) -> Result<Etcd> {
        let dir = tempfile::tempdir()?;
        let scheme = if tls { "https" } else { "http" };
        let clients: Vec<String> = (0..MEMBERS).map(|_| free_addr()).collect();
        let peers: Vec<String> = (0..MEMBERS).map(|_| free_addr()).collect();
        let initial = (0..MEMBERS).map(|i| format!("e{i}={scheme}://{}", peers[i])).collect::<Vec<_>>().join(",");
        let pki = if tls { Some(Pki::generate(MEMBERS)?) } else { None };
        let root = dir.path().to_path_buf();
        let path = |name: &str| root.join(name).display().to_string();
        if let Some(pki) = &pki {
            std::fs::write(path("ca.pem"), &pki.ca_pem)?;
            for (i, (cert, key)) in pki.members.iter().enumerate() {
                std::fs::write(path(&format!("e{i}.pem")), cert)?;
                std::fs::write(path(&format!("e{i}-key.pem")), key)?;
            }
        }
        let tls = pki.as_ref().map(Pki::client_config).transpose()?;
        let mut etcd = Etcd { members: Vec::new(), tls, _dir: dir };
        for i in 0..MEMBERS {
            let log = root.join(format!("e{i}.log"));
            let client_url = format!("{scheme}://{}", clients[i]);
            let peer_url = format!("{scheme}://{}", peers[i]);
            let mut cmd = Command::new(bin);
            cmd.arg(format!("--name=e{i}"))
                .arg(format!("--data-dir={}", path(&format!("e{i}.data"))))
                .arg(format!("--listen-client-urls={client_url}"))
                .arg(format!("--advertise-client-urls={client_url}"))
                .arg(format!("--listen-peer-urls={peer_url}"))
                .arg(format!("--initial-advertise-peer-urls={peer_url}"))
                .arg(format!("--initial-cluster={initial}"))
                .arg("--initial-cluster-state=new")
                .arg("--initial-cluster-token=shoal-bench")
                .arg("--logger=zap")
                .arg("--log-level=warn");
            if pki.is_some() {
                let (cert, key, ca) = (path(&format!("e{i}.pem")), path(&format!("e{i}-key.pem")), path("ca.pem"));
                cmd.arg(format!("--cert-file={cert}"))
                    .arg(format!("--key-file={key}"))
                    .arg(format!("--trusted-ca-file={ca}"))
                    .arg("--client-cert-auth")
                    .arg(format!("--peer-cert-file={cert}"))
                    .arg(format!("--peer-key-file={key}"))
                    .arg(format!("--peer-trusted-ca-file={ca}"))
                    .arg("--peer-client-cert-auth");
            }
            // Only the flags above configure it.
            for (name, _) in std::env::vars_os() {
                if name.to_string_lossy().starts_with("ETCD") {
                    cmd.env_remove(name);
                }
            }
            cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(std::fs::File::create(&log)?);
            let child = cmd.spawn().with_context(|| format!("spawning {}", bin.display()))?;
            etcd.members.push(Member { client: clients[i].clone(), child, log });
        }
        Ok(etcd)
    }

    /// The last lines of every member's log.
    fn logs(&self) -> String {
        let mut out = String::new();
        for (i, member) in self.members.iter().enumerate() {
            let text = std::fs::read_to_string(&member.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- e{i}\n{}\n", lines[lines.len().saturating_sub(20)..].join("\n")));
        }
        out
    }

    async fn channel(&self, member: usize) -> Result<Channel> {
        let endpoint = Endpoint::from_shared(format!("http://{}", self.members[member].client))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(15));
        Ok(match &self.tls {
            // shoal's own connector (TCP_NODELAY, rustls), as shoal's clients use.
            Some(config) => shoal_tls::client::connect(endpoint, config.clone()).await?,
            None => endpoint.tcp_nodelay(true).connect().await?,
        })
    }

    /// The leader's index once every member names the same one (Maintenance/Status: each member
    /// says who it is and whom it follows).
    async fn leader(&mut self, timeout: Duration) -> Result<usize> {
        let started = Instant::now();
        loop {
            let exited = self
                .members
                .iter_mut()
                .enumerate()
                .find_map(|(i, m)| m.child.try_wait().ok().flatten().map(|status| (i, status)));
            if let Some((i, status)) = exited {
                bail!("etcd member e{i} exited ({status}); logs:\n{}", self.logs());
            }
            let last = match self.statuses().await {
                Ok(statuses) => {
                    let leader = statuses[0].1;
                    if leader != 0
                        && statuses.iter().all(|(_, l)| *l == leader)
                        && let Some(i) = statuses.iter().position(|(id, _)| *id == leader)
                    {
                        return Ok(i);
                    }
                    format!("(member id, leader id) per member: {statuses:?}")
                }
                Err(e) => format!("{e:#}"),
            };
            if started.elapsed() > timeout {
                bail!("no etcd leader within {timeout:?} ({last}); logs:\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// (member id, leader id) of each member.
    async fn statuses(&self) -> Result<Vec<(u64, u64)>> {
        let mut out = Vec::with_capacity(self.members.len());
        for i in 0..self.members.len() {
            let mut client = MaintenanceClient::new(self.channel(i).await?);
            let status = client.status(pb::StatusRequest {}).await?.into_inner();
            out.push((status.header.map(|h| h.member_id).unwrap_or(0), status.leader));
        }
        Ok(out)
    }

    fn pid(&self, member: usize) -> Option<u32> {
        Some(self.members[member].child.id())
    }
}

/// An etcd client putting 1 KiB values to its own key.
struct PutWriter {
    client: KvClient<Channel>,
    key: Vec<u8>,
    value: Vec<u8>,
}

impl PutWriter {
    /// Writes `key` once, so that the key exists before it is timed (as shoal's service does).
    async fn create(client: KvClient<Channel>, key: &str) -> Result<PutWriter> {
        let mut writer = PutWriter { client, key: key.as_bytes().to_vec(), value: vec![b'x'; VALUE_BYTES] };
        writer.write(0).await?;
        Ok(writer)
    }
}

impl Writer for PutWriter {
    async fn write(&mut self, i: usize) -> Result<()> {
        // Each value differs from the last, as each of shoal's writes does.
        self.value[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let request = pb::PutRequest { key: self.key.clone(), value: self.value.clone(), ..Default::default() };
        self.client.put(request).await?;
        Ok(())
    }
}

/// etcd with or without TLS, sent to the leader.
async fn measure_etcd(bin: &Path, tls: bool, load: &Load) -> Result<Measured> {
    let mut etcd = Etcd::start(bin, tls)?;
    let leader = etcd.leader(Duration::from_secs(30)).await?;
    let client = KvClient::new(etcd.channel(leader).await?);
    let mut writer = PutWriter::create(client.clone(), "seq").await?;
    let mut writers = Vec::with_capacity(IN_FLIGHT);
    for w in 0..IN_FLIGHT {
        writers.push(PutWriter::create(client.clone(), &format!("par-{w}")).await?);
    }
    let followers = (0..MEMBERS).filter(|i| *i != leader).map(|i| etcd.pid(i)).collect();
    let cpu = CpuMeter::of(etcd.pid(leader), followers);
    let (measured, _) = round(&mut writer, writers, load, cpu).await?;
    let after = etcd.leader(Duration::from_secs(5)).await?;
    if after != leader {
        bail!("etcd's leader changed during the run (e{leader} → e{after}); logs:\n{}", etcd.logs());
    }
    Ok(measured)
}

/// What shoal measured, with an empty store and with `filled` pending tasks, and the sizes of
/// one write (the spec JSON sent, the service JSON the store holds and returns).
struct Shoal {
    empty: Measured,
    filled: Measured,
    spec_bytes: usize,
    service_bytes: usize,
    /// Size of a raft snapshot of the filled store (the last one taken).
    snapshot_bytes: u64,
    /// Raft entries committed during the round with the filled store.
    round_entries: u64,
}

async fn measure_shoal(load: &Load, filled: usize, quick: bool) -> Result<Shoal> {
    let mut cluster = Cluster::start(MEMBERS).await?;
    let leader = cluster.leader().await?;
    let mut client = connect(&cluster.managers[leader].addr).await?;
    let mut writer = LabelWriter::create(client.clone(), "seq").await?;
    let mut writers = Vec::with_capacity(IN_FLIGHT);
    for w in 0..IN_FLIGHT {
        writers.push(LabelWriter::create(client.clone(), &format!("par-{w}")).await?);
    }
    let (empty, writers) = round(&mut writer, writers, load, CpuMeter::new(&cluster, leader)).await?;

    let fill_timeout = Duration::from_secs(if quick { 120 } else { 900 });
    let services = filled / REPLICAS_PER_SERVICE;
    crate::svc::fill(&cluster, &mut client, "sb-etcd", services, REPLICAS_PER_SERVICE, fill_timeout).await?;
    // Let the control-loop passes the fill triggered end.
    tokio::time::sleep(Duration::from_secs(2)).await;
    if cluster.leader().await? != leader {
        bail!("shoal's leader changed during the run; logs:\n{}", cluster.logs());
    }
    let addr = cluster.managers[leader].addr.clone();
    let first = shoal_tests::cluster_info(&addr).await?.raft.commit;
    let (filled, _) = round(&mut writer, writers, load, CpuMeter::new(&cluster, leader)).await?;
    let info = shoal_tests::cluster_info(&addr).await?;
    let round_entries = info.raft.commit - first;
    let spec_bytes = writer.request_bytes();
    let service_bytes = writer.service_bytes().await?;
    Ok(Shoal { empty, filled, spec_bytes, service_bytes, snapshot_bytes: info.raft.snapshot_bytes, round_entries })
}

/// shoal's figure with each reference measured in this run.
fn compare(scenario: &str, metric: &str, unit: &str, value: f64, samples: usize, refs: &[(String, f64)]) -> Figure {
    let mut figure = Figure::new(scenario, metric, value, unit).samples(samples);
    for (name, value) in refs {
        figure = figure.reference(name, *value, Kind::Measured);
    }
    figure
}

pub async fn raft_vs_etcd(quick: bool, report: &mut Report) -> Result<()> {
    let Some(bin) = find_etcd() else {
        eprintln!("    etcd not installed (apt-get install etcd-server): the comparison is skipped");
        report.push(Figure::new(TITLE, "etcd not installed (apt-get install etcd-server)", f64::NAN, "").samples(0));
        report.how(
            TITLE,
            "Not measured in this run: no `etcd` on PATH (Debian: `apt-get install etcd-server`). See the scenario \
             in `crates/bench/src/etcd.rs`.",
        );
        return Ok(());
    };
    let version = etcd_version(&bin);
    let load = if quick { Load { sequential: 100, per_writer: 2 } } else { Load { sequential: 3000, per_writer: 117 } };
    let filled = if quick { REPLICAS_PER_SERVICE } else { 100_000 };

    let shoal = measure_shoal(&load, filled, quick).await?;
    let mut failures = Vec::new();
    let mut references: Vec<(String, Measured)> = Vec::new();
    for (tls, name) in [(true, format!("etcd {version} mTLS")), (false, format!("etcd {version} no TLS"))] {
        match measure_etcd(&bin, tls, &load).await {
            Ok(measured) => references.push((name, measured)),
            Err(e) => {
                eprintln!("    warning: {name}: {e:#}");
                failures.push(format!("{name} failed in this run: {e:#}"));
            }
        }
    }

    let refs = |f: &dyn Fn(&Measured) -> Option<f64>| -> Vec<(String, f64)> {
        references.iter().filter_map(|(name, m)| f(m).map(|v| (name.clone(), v))).collect()
    };
    let size = |tasks: usize| {
        if tasks == 0 { "empty store".to_string() } else { format!("{}k pending tasks in shoal's store", tasks / 1000) }
    };
    /// The sequential phase and the in-flight one: how each is named, read and targeted.
    type PhaseOf = fn(&Measured) -> &Phase;
    let phases: [(String, PhaseOf, &str); 2] = [
        ("1 sequential client".to_string(), |m| &m.sequential, ">= 1.5× etcd mTLS"),
        (format!("{IN_FLIGHT} in flight"), |m| &m.in_flight, ">= 1.5× etcd mTLS; >= 1× etcd no TLS"),
    ];
    for (tasks, measured) in [(0, &shoal.empty), (filled, &shoal.filled)] {
        let mut scenario = String::new();
        let mut n = 0;
        for (load, phase_of, target) in &phases {
            scenario = format!("{TITLE}, 3 members, {load}, {}", size(tasks));
            let phase = phase_of(measured);
            n = phase.writes();
            let reference = |f: fn(&Phase) -> f64| refs(&|m| Some(f(phase_of(m))));
            report.push(
                compare(&scenario, "throughput", "commits/s", phase.throughput(), n, &reference(Phase::throughput))
                    .target(target),
            );
            report.push(compare(&scenario, "latency p50", "ms", phase.p50(), n, &reference(Phase::p50)));
            report.push(compare(&scenario, "latency p99", "ms", phase.p99(), n, &reference(Phase::p99)));
        }
        // CPU is measured over the in-flight phase: its rows follow that phase's.
        for (who, i) in [("leader", 0), ("each follower", 1)] {
            if let Some(cpu) = measured.cpu {
                let metric = format!("CPU per write, {who}");
                report.push(compare(&scenario, &metric, "µs", cpu[i], n, &refs(&|m| m.cpu.map(|c| c[i]))));
            }
        }
    }

    // shoal's default --snapshot-interval; etcd's default --snapshot-count is 100,000.
    let per_round = shoal.round_entries / 10_000;
    let snapshots = if per_round == 0 {
        format!(
            "shoal snapshots its store every 10,000 applied entries and etcd every 100,000 (`--snapshot-count`); \
             a round here spans {} raft entries, so neither takes one.",
            num(shoal.round_entries as f64)
        )
    } else {
        format!(
            "shoal snapshots its store every 10,000 applied entries (`--snapshot-interval`), so a round of writes \
             ({} raft entries with the filled store) includes about {per_round} snapshots, small with an empty \
             store and of {} MB each with the filled one, each copied on the raft thread and serialised, written and synced on a thread of its own, so they cost CPU on the shared cores rather than a stall; etcd \
             snapshots every 100,000 (`--snapshot-count`) and takes none in this run.",
            num(shoal.round_entries as f64),
            num(shoal.snapshot_bytes as f64 / 1e6)
        )
    };
    let failures = if failures.is_empty() { String::new() } else { format!(" **{}.**", failures.join("; ")) };
    report.how(
        TITLE,
        format!(
            "Both systems run 3 members on loopback on this machine, one after the other (shoal first, then etcd \
             with TLS, then etcd without), each started fresh in a temporary directory and removed afterwards. \
             The load generator is the `raft` scenario's, the same code for both: one client makes {seq} writes one \
             after another, then {IN_FLIGHT} clients make {per} writes each concurrently ({total} writes), all \
             sent to the leader over one HTTP/2 connection (tonic, TCP_NODELAY); a write is timed from the call \
             to its answer; CPU per write is each process's CPU time over the concurrent phase divided by the \
             writes. \
             **shoal** (its `shoal-manager` processes, mutual TLS 1.3 between clients, managers and peers, as \
             always): each write is a `service update` of the client's own 0-replica service changing one label \
             and carrying the version read: the API parses the {spec} bytes of spec JSON and validates them, the \
             leader proposes a JSON batch holding the update, raft-rs appends it to sled and fsyncs it on every \
             manager, and once a quorum has it each manager decodes the JSON and applies it to its in-memory \
             store (version check, the whole service object replaced, its previous spec kept, a change event for \
             the control loop); the leader answers with the whole service as JSON ({service} bytes), of which \
             the client parses only the version. The filled rows repeat the same load, on the same cluster, after \
             {filled_text} pending tasks were added ({services} service(s) of {REPLICAS_PER_SERVICE} replicas, no agents). \
             **etcd** (Debian's `etcd-server`, `etcd --version` {version}): each write is a KV `Put` of a \
             {VALUE_BYTES}-byte value (opaque bytes, never parsed) to the client's own key, whose answer is a \
             response header: the leader proposes the request to etcd's raft, every member appends it to its WAL \
             and fsyncs it, and once a quorum has it each member applies it to its MVCC store (a new revision in \
             the in-memory key index and a bbolt write, committed to disk in batches, by default every 100 ms or \
             10,000 writes: the WAL fsync is what makes a write durable). The client is generated with tonic from \
             a minimal proto (`crates/bench/proto/etcd.proto`: `KV/Put`, `Maintenance/Status`); the leader is \
             the member every member's `Maintenance/Status` names, and is checked again after the run. **With \
             TLS**: a CA, a certificate per member and a client certificate generated with rcgen (ECDSA P-256, as \
             shoal's), `--cert-file --key-file --trusted-ca-file --client-cert-auth` and the `--peer-*` \
             equivalents, https URLs; the client connects through shoal's own TLS connector (rustls, TLS 1.3). \
             etcd 3.4 then serves gRPC through Go's net/http server rather than grpc-go's own transport \
             (etcd-io/etcd#13722); there is no `--listen-client-http-urls` in 3.4 to avoid it. **Without TLS**: \
             the same cluster with http URLs and no certificates. Neither system is tuned: etcd runs with its \
             defaults except `--logger=zap --log-level=warn`, shoal with its own. Among them: {snapshots} \
             etcd holds no tasks: the same etcd figures are the \
             references of the empty and the filled rows. Targets (issue 22): shoal at least 1.5× etcd with TLS in \
             both loads, and at least etcd without TLS at {IN_FLIGHT} in flight, at 0 and at 100k tasks.{failures}",
            seq = load.sequential,
            per = load.per_writer,
            total = load.per_writer * IN_FLIGHT,
            spec = shoal.spec_bytes,
            service = num(shoal.service_bytes as f64),
            filled_text = num(filled as f64),
            snapshots = snapshots,
            services = filled / REPLICAS_PER_SERVICE,
        ),
    );
    Ok(())
}
