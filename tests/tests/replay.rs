//! A spec over the cluster's limits that is already in the raft log (written before the limit
//! existed, or by a manager that did not check it) never takes a manager down: the control loop
//! builds at most `max_replicas` tasks for it, in bounded steps, and a restarted manager that
//! replays the log does the same. The real manager code in this process, its real sled data dir.

use std::time::Duration;

use anyhow::{Result, bail};
use shoal_control::ManagerConfig;
use shoal_store::Action;
use shoal_tests::{free_addr, register_admin_bundle, shoal};
use shoal_types::{ServiceMode, ServiceSpec};

const LIMIT: usize = 3_000;

async fn wait_tasks(manager: &shoal_control::Manager, timeout: Duration, want: usize) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let count = manager.state().tasks().count();
        if count == want {
            return Ok(());
        }
        if count > want {
            bail!("{count} tasks, more than the limit of {want}");
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{count} tasks after {timeout:?}, expected {want}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_limit_spec_in_the_log_runs_at_the_limit_and_replays() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let addr = free_addr();
    let mut config = ManagerConfig::new(dir.path().join("m0"), addr.parse()?);
    config.admin_bundle_to_home = false;
    config.hostname = "m0".into();
    let running = shoal_control::start(config.clone()).await?;
    register_admin_bundle(&addr, &dir.path().join("m0").join("admin"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !running.manager.raft_status().leader_ready {
        if tokio::time::Instant::now() > deadline {
            bail!("no leader");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = shoal(&addr, &["cluster", "update", "--max-replicas", &LIMIT.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Straight into the log, past the API's checks: what an older manager could have written.
    let mut spec = ServiceSpec::new("typo", "shoal/busybox:1");
    spec.mode = ServiceMode::Replicated { replicas: 1_000_000_000 };
    running.manager.propose(vec![Action::CreateService { id: "typo-service".into(), spec }]).await?;
    wait_tasks(&running.manager, Duration::from_secs(120), LIMIT).await?;
    // Later passes add nothing: a write that triggers one changes no count.
    let out = shoal(&addr, &["service", "create", "-d", "--name", "other", "--replicas", "1", "shoal/busybox:1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_tasks(&running.manager, Duration::from_secs(30), LIMIT + 1).await?;

    // Restart from the data dir: the log (and snapshot) is replayed, and the manager serves.
    running.manager.shutdown().await;
    let _ = running.server.await;
    let running = shoal_control::start(config).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !running.manager.raft_status().leader_ready {
        if tokio::time::Instant::now() > deadline {
            bail!("no leader after the restart");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_tasks(&running.manager, Duration::from_secs(30), LIMIT + 1).await?;
    let ls = shoal(&addr, &["service", "ls"]);
    assert!(ls.status.success(), "{}", String::from_utf8_lossy(&ls.stderr));
    let text = String::from_utf8_lossy(&ls.stdout).into_owned();
    assert!(text.contains("0/1000000000"), "{text}");
    running.manager.shutdown().await;
    Ok(())
}
