//! Resident memory of idle processes and of a manager holding many tasks; raft data size and
//! restart time at that size.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use shoal_tests::{Cluster, connect};
use tokio::time::Instant;

use crate::report::{Figure, Report};
use crate::svc;

const REPLICAS_PER_SERVICE: usize = 1000;

/// VmRSS of a process, in MB (10^6 bytes).
pub fn rss_mb(pid: Option<u32>) -> Result<f64> {
    let pid = pid.context("the process does not run")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS line")?;
    Ok(kb * 1024.0 / 1e6)
}

/// Bytes allocated on disk under `dir` (what `du -s` counts), and the files' apparent size.
fn disk_usage(dir: &Path) -> Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let (mut allocated, mut apparent) = (0, 0);
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            let (a, b) = disk_usage(&entry.path())?;
            allocated += a;
            apparent += b;
        } else {
            allocated += meta.blocks() * 512;
            apparent += meta.len();
        }
    }
    Ok((allocated, apparent))
}

pub async fn memory(quick: bool, report: &mut Report) -> Result<()> {
    let settle = Duration::from_secs(2);
    // Idle: a 1-manager cluster without services, then one agent joined to it.
    let (manager_idle, agent_idle) = {
        let mut cluster = Cluster::start(1).await?;
        tokio::time::sleep(settle).await;
        let manager = rss_mb(cluster.managers[0].pid())?;
        cluster.add_agent(&[]).await?;
        tokio::time::sleep(settle).await;
        let agent = rss_mb(cluster.agents[0].pid())?;
        (manager, agent)
    };
    report.push(
        Figure::new("memory, manager idle (1 manager, no services)", "RSS", manager_idle, "MB").target("<= 30 MB"),
    );
    report.push(Figure::new("memory, agent idle (no tasks)", "RSS", agent_idle, "MB").target("<= 15 MB"));

    // A manager with many tasks in its store and no agents: every task stays pending.
    let services = if quick { 10 } else { 100 };
    let total = services * REPLICAS_PER_SERVICE;
    let mut cluster = Cluster::start(1).await?;
    let addr = cluster.managers[0].addr.clone();
    let mut client = connect(&addr).await?;
    let started = Instant::now();
    // One service at a time, each waited for until its tasks are stored.
    let timeout = Duration::from_secs(if quick { 120 } else { 600 });
    svc::fill(&cluster, &mut client, "sb-mem", services, REPLICAS_PER_SERVICE, timeout).await?;
    let info = shoal_tests::cluster_info(&addr).await?;
    let filled = started.elapsed().as_secs_f64();
    tokio::time::sleep(settle).await;
    let manager_full = rss_mb(cluster.managers[0].pid())?;
    let scenario =
        format!("memory, manager with {}k pending tasks ({services} services × 1000, no agents)", total / 1000);
    report.push(Figure::new(&scenario, "RSS", manager_full, "MB").target("<= 400 MB at 100k tasks"));

    report.push(
        Figure::new(
            &scenario,
            &format!("newest raft snapshot's data (index {} of {})", info.raft.snapshot_index, info.raft.commit),
            info.raft.snapshot_bytes as f64 / 1e6,
            "MB",
        )
        .samples(1),
    );
    let raft_dir = cluster.managers[0].data_dir.join("raft");
    let (allocated, apparent) = disk_usage(&raft_dir)?;
    report.push(Figure::new(&scenario, "raft data on disk (du of <data-dir>/raft)", allocated as f64 / 1e6, "MB"));

    // Restart on the same data dir: time until the control API answers with every task.
    let started = Instant::now();
    cluster.managers[0].restart()?;
    let restored = loop {
        if let Ok(Ok(i)) = tokio::time::timeout(Duration::from_secs(2), shoal_tests::cluster_info(&addr)).await {
            if i.tasks >= total {
                break started.elapsed().as_secs_f64();
            }
            bail!("after the restart the store holds {} tasks instead of {total}", i.tasks);
        }
        if started.elapsed() > Duration::from_secs(if quick { 60 } else { 300 }) {
            bail!(
                "the manager did not answer within {:?} of its restart; log:\n{}",
                started.elapsed(),
                cluster.managers[0].log()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    report.push(Figure::new(&scenario, "restart → cluster_info answers (restore)", restored, "s"));
    tokio::time::sleep(settle).await;
    let manager_restored = rss_mb(cluster.managers[0].pid())?;
    report.push(Figure::new(&scenario, "RSS after the restart", manager_restored, "MB"));

    report.how(
        "memory",
        format!(
            "VmRSS from `/proc/<pid>/status` (MB = 10^6 bytes), read {settle:?} after the state is reached. Idle: a \
             1-manager cluster with no services, then one `shoal-agent` joined (no tasks). Loaded: a fresh 1-manager \
             cluster without agents; {services} services of 1000 replicas are created one after another, each once the previous one's tasks are stored (all stored in \
             {filled:.1} s, raft commit index {}); with no node every task stays pending, so all {total} tasks stay in \
             the store and the scheduler runs against no node. Raft data = allocated size of `<data-dir>/raft` \
             (sled: the log, and the newest snapshot, taken every 10,000 entries or 16 MiB of applied log); the snapshot row is the size of the newest snapshot's data as the manager reports it (`cluster info`), taken at the raft index shown, {:.1} MB apparent. Restore: SIGKILL and \
             restart of the manager on the same data dir; the time runs from the restart until `ClusterInfo` answers \
             (it includes process start, rebuilding the store from snapshot + log, the election of the lone voter \
             and applying an entry of its term) and reports all {total} tasks. No Swarm reference: Swarm's manager \
             runs inside `dockerd`.",
            info.raft.commit,
            apparent as f64 / 1e6
        ),
    );
    Ok(())
}
