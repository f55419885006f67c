//! Many simulated nodes (issue 22): agents that run in this process with the in-memory executor
//! but talk to three real managers over the real mutual-TLS dispatcher. Converge a large number
//! of tasks, roll them all with parallelism 100, lose a tenth of the nodes at once, then kill the
//! leader; API write latency is sampled throughout.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use shoal_agent::{Agent, AgentConfig};
use shoal_executor::FakeExecutor;
use shoal_proto::v1::{ListServicesRequest, UpdateServiceRequest};
use shoal_tests::{Cluster, connect};
use shoal_types::{GoDuration, NodeState, ServiceSummary, UpdateState};
use tokio::time::Instant;

use crate::memory::rss_mb;
use crate::report::{Figure, Report, percentile};
use crate::svc;

/// The phases the write probe labels its samples with.
const PHASES: [&str; 4] = ["nodes joining", "converging", "rolling update", "nodes were lost"];

/// `100k` for 100,000, `200` for 200.
fn count(n: u64) -> String {
    if n >= 1000 && n.is_multiple_of(1000) { format!("{}k", n / 1000) } else { n.to_string() }
}

/// Updates a 0-replica service every 100 ms through a follower-or-leader manager and records
/// each latency under the current phase; a write that fails is counted (and the probe
/// reconnects): the 2 cores are shared with a thousand agents, and a connection whose pings go
/// unanswered for 2 s is closed by the manager.
struct WriteProbe {
    phase: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<Result<ProbeResult>>,
}

/// The probe's latencies by phase (ms) and how many of its writes failed.
type ProbeResult = (Vec<(usize, f64)>, usize);

impl WriteProbe {
    async fn start(addr: String) -> Result<WriteProbe> {
        let mut writer = crate::raft::LabelWriter::create(connect(&addr).await?, "sb-probe").await?;
        let phase = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (phase.clone(), stop.clone());
        let handle = tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut failed = 0;
            let mut i = 0;
            while !s.load(Ordering::SeqCst) {
                i += 1;
                let started = Instant::now();
                match crate::raft::Writer::write(&mut writer, i).await {
                    Ok(()) => samples.push((p.load(Ordering::SeqCst), started.elapsed().as_secs_f64() * 1e3)),
                    Err(_) => {
                        failed += 1;
                        if let Ok(fresh) = connect(&addr).await {
                            let _ = writer.resume(fresh).await;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok((samples, failed))
        });
        Ok(WriteProbe { phase, stop, handle })
    }

    fn phase(&self, phase: usize) {
        self.phase.store(phase, Ordering::SeqCst);
    }

    async fn finish(self) -> Result<ProbeResult> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.await?
    }
}

/// Running tasks of the services named `sb-sim-*`, summed from the manager's summaries.
async fn running(client: &mut svc::Client) -> Result<u64> {
    let reply = client.list_services(ListServicesRequest { summaries: true }).await?.into_inner();
    let mut running = 0;
    for json in &reply.summaries_json {
        let summary: ServiceSummary = serde_json::from_str(json)?;
        if summary.name.starts_with("sb-sim-") {
            running += summary.running_tasks;
        }
    }
    Ok(running)
}

/// Polls `cond` every `every` until it holds; the seconds it took, or an error after `timeout`
/// (with the last failed poll's error: a poll may fail while the process is overloaded).
async fn until<F, Fut>(what: &str, timeout: Duration, every: Duration, mut cond: F) -> Result<f64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let started = Instant::now();
    let mut last_error = None;
    loop {
        match cond().await {
            Ok(true) => return Ok(started.elapsed().as_secs_f64()),
            Ok(false) => {}
            Err(e) => last_error = Some(e),
        }
        if started.elapsed() > timeout {
            match last_error {
                Some(e) => bail!("{what}: not reached within {timeout:?}; last poll: {e:#}"),
                None => bail!("{what}: not reached within {timeout:?}"),
            }
        }
        tokio::time::sleep(every).await;
    }
}

pub async fn simulated_nodes(quick: bool, report: &mut Report) -> Result<()> {
    let (nodes, services, replicas) = if quick { (20, 2, 100) } else { (1000, 100, 1000) };
    let lost = nodes / 10;
    let total = (services * replicas) as u64;
    let timeout = Duration::from_secs(if quick { 120 } else { 900 });
    let mut cluster = Cluster::start(3).await?;
    let addrs = cluster.running_addrs();
    let leader = cluster.leader().await?;
    let leader_addr = cluster.managers[leader].addr.clone();
    let probe = WriteProbe::start(addrs[(leader + 1) % addrs.len()].clone()).await?;

    // The nodes join (each with its own key and certificate) and open their sessions.
    let dir = tempfile::tempdir()?;
    let token = shoal_tests::join_token(&leader_addr, "worker").await?;
    let started = Instant::now();
    let mut agents: Vec<(String, tokio::task::JoinHandle<()>)> = Vec::with_capacity(nodes);
    for i in 0..nodes {
        let data_dir = dir.path().join(format!("a{i}"));
        let join = &addrs[i % addrs.len()];
        let (node_id, credentials) = shoal_agent::join_or_resume(&data_dir, join, Some(&token)).await?;
        let executor = Arc::new(FakeExecutor::new(&node_id));
        let config = AgentConfig {
            tls: shoal_agent::shoal_tls::NodeTls::new(&credentials)?,
            data_dir,
            managers: addrs.clone(),
            hostname: Some(format!("sim{i}")),
            labels: Default::default(),
            ingress_addr: None,
        };
        let agent = Agent::new(node_id.clone(), config, executor)?;
        agents.push((node_id, tokio::spawn(agent.run())));
    }
    let ready_workers = |nodes: &[shoal_types::Node]| {
        nodes.iter().filter(|n| n.manager.is_none() && n.status.state == NodeState::Ready).count()
    };
    until("every node ready", timeout, Duration::from_millis(500), || {
        let addr = leader_addr.clone();
        async move { Ok(ready_workers(&shoal_tests::list_nodes(&addr).await?) == nodes) }
    })
    .await?;
    let joined = started.elapsed().as_secs_f64();
    let scenario = format!("{nodes} simulated nodes, {} tasks, 3 managers", count(total));
    report.push(Figure::new(&scenario, "all nodes joined and ready", joined, "s").samples(1));

    // The joins kept this process's 2 threads busy: a connection made before them may have been
    // closed for unanswered pings.
    let mut client = connect(&leader_addr).await?;
    // Converge: every service created at once; the time until all tasks run.
    probe.phase(1);
    let started = Instant::now();
    for s in 0..services {
        svc::create(&mut client, &svc::replicated(&format!("sb-sim-{s}"), crate::engine::IMAGE_V1, replicas)).await?;
    }
    let mut c = client.clone();
    until("all tasks running", timeout, Duration::from_millis(250), || {
        let mut c = c.clone();
        async move { Ok(running(&mut c).await? == total) }
    })
    .await?;
    let converged = started.elapsed().as_secs_f64();
    report.push(
        Figure::new(&scenario, &format!("converge {} tasks (create → all running)", count(total)), converged, "s")
            .samples(1)
            .target("<= 30 s at 100k tasks"),
    );

    // Roll every service at once, 100 slots at a time each.
    probe.phase(2);
    let started = Instant::now();
    for s in 0..services {
        let name = format!("sb-sim-{s}");
        let current = svc::get(&mut c, &name).await?;
        let mut spec = current.spec.clone();
        spec.task.force_update += 1;
        spec.update_config.parallelism = 100;
        spec.update_config.monitor = GoDuration::from_secs(1);
        let request = UpdateServiceRequest {
            service: name,
            version: current.version,
            spec_json: serde_json::to_string(&spec)?,
            rollback: false,
            ..Default::default()
        };
        c.update_service(request).await?;
    }
    until("every update completed", timeout, Duration::from_millis(500), || {
        let mut c = c.clone();
        async move {
            let reply = c.list_services(ListServicesRequest { summaries: false }).await?.into_inner();
            let mut done = 0;
            for json in &reply.services_json {
                let service: shoal_types::Service = serde_json::from_str(json)?;
                if service.spec.name.starts_with("sb-sim-")
                    && service.update_status.as_ref().is_some_and(|u| u.state == UpdateState::Completed)
                {
                    done += 1;
                }
            }
            Ok(done == services)
        }
    })
    .await?;
    let rolled = started.elapsed().as_secs_f64();
    report.push(
        Figure::new(&scenario, "roll every task (parallelism 100, monitor 1 s) → all completed", rolled, "s")
            .samples(1),
    );

    // A tenth of the nodes are lost at once: their tasks run elsewhere.
    probe.phase(3);
    let started = Instant::now();
    let mut killed = std::collections::BTreeSet::new();
    for (node_id, handle) in agents.iter().take(lost) {
        handle.abort();
        killed.insert(node_id.clone());
    }
    let killed_ref = &killed;
    until("lost nodes down and every task running again", timeout, Duration::from_millis(250), || {
        let (addr, mut c) = (leader_addr.clone(), c.clone());
        async move {
            let listed = shoal_tests::list_nodes(&addr).await?;
            let down =
                listed.iter().filter(|n| killed_ref.contains(&n.id) && n.status.state == NodeState::Down).count();
            Ok(down == killed_ref.len() && running(&mut c).await? == total)
        }
    })
    .await?;
    let recovered = started.elapsed().as_secs_f64();
    report.push(
        Figure::new(&scenario, &format!("{lost} nodes lost at once → their tasks running elsewhere"), recovered, "s")
            .samples(1),
    );
    let listed = shoal_tests::list_nodes(&leader_addr).await?;
    let false_down =
        listed.iter().filter(|n| n.manager.is_none() && !killed.contains(&n.id) && n.status.state != NodeState::Ready);
    report.push(
        Figure::new(&scenario, "nodes wrongly seen down (heartbeat misses)", false_down.count() as f64, "nodes")
            .samples(1)
            .target("0"),
    );
    report.push(Figure::new(&scenario, "leader RSS", rss_mb(cluster.managers[leader].pid())?, "MB").samples(1));

    let (samples, probe_failures) = probe.finish().await?;
    report.push(
        Figure::new(
            &scenario,
            "probe writes that failed (connection closed under load)",
            probe_failures as f64,
            "writes",
        )
        .samples(samples.len() + probe_failures),
    );
    for (phase, name) in PHASES.iter().enumerate() {
        let mut latencies: Vec<f64> = samples.iter().filter(|(p, _)| *p == phase).map(|(_, ms)| *ms).collect();
        if latencies.is_empty() {
            continue;
        }
        latencies.sort_by(f64::total_cmp);
        report.push(
            Figure::new(&scenario, &format!("API write p99 while {name}"), percentile(&latencies, 99.0), "ms")
                .samples(latencies.len())
                .target("<= 100 ms"),
        );
    }

    // Failover at this size: kill -9 of the leader until another manager answers as leader.
    let started = Instant::now();
    cluster.managers[leader].kill9();
    let survivor = addrs.iter().find(|a| **a != leader_addr).context("another manager")?.clone();
    until("a new leader answers", Duration::from_secs(60), Duration::from_millis(20), || {
        let survivor = survivor.clone();
        let old = leader_addr.clone();
        async move {
            Ok(matches!(
                tokio::time::timeout(Duration::from_secs(1), shoal_tests::cluster_info(&survivor)).await,
                Ok(Ok(info)) if info.leader.as_ref().is_some_and(|l| l.addr != old)
            ))
        }
    })
    .await?;
    report.push(
        Figure::new(
            &scenario,
            "leader failover after kill -9 (→ a new leader answers)",
            started.elapsed().as_secs_f64() * 1e3,
            "ms",
        )
        .samples(1),
    );
    for (_, handle) in &agents {
        handle.abort();
    }
    report.how(
        "simulated nodes",
        format!(
            "Three `shoal-manager` processes on loopback; {nodes} agents run inside `shoal-bench` (the real agent \
             code with the in-memory executor, each with its own key, certificate and mutual-TLS session to the \
             leader's dispatcher), so the managers see {nodes} nodes joining, heartbeating and reporting every task \
             state. All share this machine's 2 cores with the managers. {services} services of {replicas} replicas \
             are created at once; converge = until the managers' summaries count {total} running tasks. Then every \
             service is force-updated at once with parallelism 100 and a 1 s monitor, until every update status is \
             `completed`. Then {lost} agents are stopped at once (their sessions end without a word, as a crashed \
             host's do) until those nodes are down and {total} tasks run again. A probe updates a 0-replica \
             service through a follower every 100 ms throughout; its p99 is given per phase. Failover: kill -9 of \
             the leader until another manager answers `cluster info` naming a new leader."
        ),
    );
    Ok(())
}
