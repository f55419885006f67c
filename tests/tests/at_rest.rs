//! Raft data encrypted at rest, with the real binaries: what a manager's data dir holds after a
//! service with a secret was created and the manager stopped (no service name, secret value or
//! CA key in any file), and autolock: a copied data dir of an autolocked manager holds nothing
//! readable either, and the manager refuses to start without its unlock key or with a wrong one.
//! Run `cargo build --workspace --bins` and `deploy/images/build.sh` first.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use shoal_tests::shoal_ok as ok;
use shoal_tests::*;
use shoal_types::ClusterInfo;

/// The files under `dir` (recursively) that contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return found };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_containing(&path, needle));
        } else if let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            found.push(path.display().to_string());
        }
    }
    found
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// A service named `service` using a secret of value `value`, running.
async fn service_with_secret(addr: &str, service: &str, value: &str) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("value");
    std::fs::write(&file, value)?;
    ok(addr, &["secret", "create", "db_password", &file.display().to_string()])?;
    ok(addr, &["service", "create", "--name", service, "--secret", "db_password", "shoal/busybox:1"])?;
    wait_tasks(addr, service, Duration::from_secs(60), "1 running task", |t| running(t).len() == 1).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_managers_data_dir_and_log_hold_no_secret_or_service_name() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    cluster.add_agent(&[]).await?;
    let addr = cluster.running_addrs()[0].clone();
    let service = format!("svc{:012x}", rand::random::<u64>());
    let value = format!("pw-{:016x}", rand::random::<u64>());
    service_with_secret(&addr, &service, &value).await?;
    // Every manager has applied it (followers get it by replication).
    let leader = cluster_info(&addr).await?.raft.commit;
    for manager in cluster.running_addrs() {
        wait_applied(&manager, leader, Duration::from_secs(10)).await?;
    }
    for manager in &mut cluster.managers {
        manager.terminate()?;
    }
    for manager in &cluster.managers {
        let dir = manager.data_dir();
        for needle in [service.as_bytes(), value.as_bytes(), b"PRIVATE KEY-----\nMII" as &[u8]] {
            let raft = files_containing(&dir.join("raft"), needle);
            ensure!(raft.is_empty(), "{:?} in the clear in {raft:?}", String::from_utf8_lossy(needle));
        }
        let everywhere = files_containing(dir, value.as_bytes());
        ensure!(everywhere.is_empty(), "the secret's value in {everywhere:?}");
        ensure!(!manager.log().contains(&value), "the secret's value in a manager's log");
    }

    // The data key of a stopped manager is replaced: everything sealed anew, and it resumes.
    let dir = cluster.managers[0].data_dir().to_path_buf();
    let before = std::fs::read(dir.join("raft-key.json"))?;
    let out = std::process::Command::new(bin("shoal-manager"))
        .args(["--data-dir", &dir.display().to_string(), "--rotate-data-key"])
        .output()?;
    ensure!(out.status.success(), "rotation: {}", String::from_utf8_lossy(&out.stderr));
    ensure!(String::from_utf8_lossy(&out.stdout).contains("values sealed with the new key"));
    ensure!(std::fs::read(dir.join("raft-key.json"))? != before, "a new data key");

    for manager in &mut cluster.managers {
        manager.restart()?;
    }
    listed_again(&addr, &service, &cluster).await
}

/// Waits (30 s at most) until `service ls` through `addr` lists `service` again.
async fn listed_again(addr: &str, service: &str, cluster: &Cluster) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(listed) = ok(addr, &["service", "ls"])
            && listed.contains(service)
        {
            return Ok(());
        }
        ensure!(tokio::time::Instant::now() < deadline, "the cluster did not come back: {}", cluster.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_autolocked_manager_reveals_nothing_and_starts_only_with_its_key() -> Result<()> {
    let mut cluster = Cluster::start_with(1, &["--autolock"]).await?;
    cluster.add_agent(&[]).await?;
    let addr = cluster.running_addrs()[0].clone();
    let key = ok(&addr, &["cluster", "unlock-key", "-q"])?.trim().to_string();
    ensure!(key.starts_with("SHLUNLOCK-"), "{key}");
    let service = format!("svc{:012x}", rand::random::<u64>());
    let value = format!("pw-{:016x}", rand::random::<u64>());
    service_with_secret(&addr, &service, &value).await?;
    cluster.managers[0].terminate()?;

    // A copy of the whole data dir: nothing readable, no key on disk that opens it.
    let copy = tempfile::tempdir()?;
    copy_dir(cluster.managers[0].data_dir(), copy.path())?;
    for needle in [service.as_bytes(), value.as_bytes(), key.as_bytes()] {
        let found = files_containing(copy.path(), needle);
        ensure!(found.is_empty(), "{:?} in the copied data dir: {found:?}", String::from_utf8_lossy(needle));
    }
    ensure!(!copy.path().join("raft-kek").exists(), "no key-encryption key on disk");

    // Locked: refused without the key and with another one, each saying why.
    cluster.managers[0].restart()?;
    let status = cluster.managers[0].wait_exit(Duration::from_secs(10))?;
    ensure!(!status.success(), "a locked manager must not start");
    let log = cluster.managers[0].log();
    ensure!(log.contains("this manager is locked (autolock): start it with --unlock-key"), "{log}");
    cluster.managers[0].set_env("SHOAL_UNLOCK_KEY", "SHLUNLOCK-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    cluster.managers[0].restart()?;
    ensure!(!cluster.managers[0].wait_exit(Duration::from_secs(10))?.success());
    ensure!(cluster.managers[0].log().contains("the unlock key does not open this manager's data key"));

    // With its key it resumes, service and all.
    cluster.set_env("SHOAL_UNLOCK_KEY", &key);
    cluster.managers[0].restart()?;
    listed_again(&addr, &service, &cluster).await?;
    let tasks = list_tasks(&addr, &service).await.context("tasks")?;
    ensure!(!tasks.is_empty());

    // A manager joins an autolocked cluster only autolocked, with the cluster's key; a refused
    // one leaves no member behind.
    let voters = |info: &ClusterInfo| info.raft.voters.len();
    cluster.set_extra_args(&[]);
    ensure!(cluster.add_manager().await.is_err(), "a manager without --autolock joined");
    let refused = cluster.managers.pop().context("the refused joiner")?;
    ensure!(refused.log().contains("this cluster is autolocked: join with --autolock"), "{}", refused.log());
    ensure!(voters(&cluster_info(&addr).await?) == 1, "the refused joiner left a member behind");
    cluster.set_extra_args(&["--autolock"]);
    cluster.set_env("SHOAL_UNLOCK_KEY", &shoal_control_like_key());
    ensure!(cluster.add_manager().await.is_err(), "a manager with another unlock key joined");
    let refused = cluster.managers.pop().context("the refused joiner")?;
    ensure!(refused.log().contains("--unlock-key is not this cluster's unlock key"), "{}", refused.log());
    ensure!(voters(&cluster_info(&addr).await?) == 1);
    cluster.set_env("SHOAL_UNLOCK_KEY", &key);
    cluster.add_manager().await.context("joining with the cluster's unlock key")?;
    ensure!(voters(&cluster_info(&addr).await?) == 2);
    Ok(())
}

/// A well-formed unlock key that is not the cluster's.
fn shoal_control_like_key() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    format!("SHLUNLOCK-{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}
