//! Data directories: private whatever the umask, repaired when loosened, and a damaged one refused
//! with one line naming the file, never a panic. Real `shoal-manager` and `shoal-agent` processes,
//! started through `sh -c 'umask 022; exec …'` so the umask really is 022.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use shoal_tests::*;
use shoal_types::ServiceSpec;

/// Starts `binary args…` under umask 022 with stderr appended to `log`.
fn spawn_umask_022(binary: &Path, args: &[&str], home: &Path, log: &Path) -> Result<Child> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    let child = Command::new("sh")
        .arg("-c")
        .arg("umask 022; exec \"$@\"")
        .arg("sh")
        .arg(binary)
        .args(args)
        .env("HOME", home)
        .env_remove("SHOAL_JOIN_TOKEN")
        .env("RUST_LOG", "info,raft=warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("spawning {}", binary.display()))?;
    Ok(child)
}

struct Manager {
    child: Option<Child>,
    addr: String,
    data_dir: PathBuf,
    home: PathBuf,
    log: PathBuf,
}

impl Manager {
    fn start(root: &Path, name: &str) -> Result<Manager> {
        let home = root.join("home");
        std::fs::create_dir_all(&home)?;
        let mut manager = Manager {
            child: None,
            addr: free_addr(),
            data_dir: root.join(name),
            home,
            log: root.join(format!("{name}.log")),
        };
        manager.spawn()?;
        Ok(manager)
    }

    fn spawn(&mut self) -> Result<()> {
        let data_dir = self.data_dir.to_str().context("utf-8 path")?.to_string();
        self.child = Some(spawn_umask_022(
            &bin("shoal-manager"),
            &["--data-dir", &data_dir, "--listen-addr", &self.addr],
            &self.home,
            &self.log,
        )?);
        Ok(())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the manager answers as leader (its admin bundle registered for its address).
    async fn wait_ready(&mut self) -> Result<()> {
        let bundle = self.data_dir.join("admin");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if bundle.join("key.pem").exists() {
                register_admin_bundle(&self.addr, &bundle);
                if cluster_info(&self.addr).await.is_ok_and(|i| i.leader.is_some()) {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() > deadline {
                bail!("the manager did not become ready; its log:\n{}", self.log());
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("the manager exited ({status}); its log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then waits (bounded) for the exit status.
    fn stop(&mut self) -> Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("not running")?;
        Command::new("kill").arg("-TERM").arg(child.id().to_string()).status()?;
        wait_exit(&mut child, Duration::from_secs(15))
    }

    /// Starts the manager again expecting it to refuse: returns (exit status, what it logged on this run).
    fn start_expecting_refusal(&mut self) -> Result<(std::process::ExitStatus, String)> {
        let before = self.log().len();
        self.spawn()?;
        let mut child = self.child.take().context("spawned")?;
        let status = wait_exit(&mut child, Duration::from_secs(20))
            .with_context(|| format!("the manager kept running on a damaged data dir; log:\n{}", self.log()))?;
        Ok((status, self.log()[before..].to_string()))
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_exit(child: &mut Child, limit: Duration) -> Result<std::process::ExitStatus> {
    let deadline = std::time::SystemTime::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if std::time::SystemTime::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("process {} did not exit within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).map(|m| m.permissions().mode() & 0o7777).unwrap_or(0)
}

/// Every directory and file under `dir` (itself included) with a mode other than 0700 / 0600.
fn loose_paths(dir: &Path) -> Vec<String> {
    let mut loose = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).expect("metadata");
        let wanted = if meta.is_dir() { 0o700 } else { 0o600 };
        if mode(&path) != wanted {
            loose.push(format!("{} is {:04o}", path.display(), mode(&path)));
        }
        if meta.is_dir() {
            stack.extend(std::fs::read_dir(&path).expect("list").map(|e| e.expect("entry").path()));
        }
    }
    loose
}

fn spec(name: &str) -> ServiceSpec {
    ServiceSpec::new(name, "shoal/busybox:1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dirs_and_bundles_are_private_under_umask_022() -> Result<()> {
    let root = tempfile::tempdir()?;
    let mut manager = Manager::start(root.path(), "m1")?;
    manager.wait_ready().await?;
    create_service(&manager.addr, &spec("web")).await?;

    let agent_dir = root.path().join("agent1");
    let token = join_token(&manager.addr, "worker").await?;
    let mut agent = spawn_umask_022(
        &bin("shoal-agent"),
        &["--data-dir", agent_dir.to_str().context("utf-8")?, "--join", &manager.addr, "--token", &token],
        &manager.home,
        &root.path().join("agent1.log"),
    )?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !agent_dir.join("agent.json").exists() {
        if tokio::time::Instant::now() > deadline || agent.try_wait()?.is_some() {
            bail!("the agent wrote no identity; log:\n{}", std::fs::read_to_string(root.path().join("agent1.log"))?);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let home_bundle = manager.home.join(".shoal");
    for dir in [&manager.data_dir, &agent_dir, &home_bundle] {
        let loose = loose_paths(dir);
        assert!(loose.is_empty(), "loose modes under {}:\n{}", dir.display(), loose.join("\n"));
    }
    assert!(manager.data_dir.join("raft").join("db").exists(), "the walk covered sled's files");
    assert!(home_bundle.join("tls").join("key.pem").exists(), "the walk covered the ~/.shoal/tls copy");
    assert!(agent_dir.join("tls").join("key.pem").exists(), "the walk covered the agent's key");
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(manager.stop()?.success());
    let loose = loose_paths(&manager.data_dir);
    assert!(loose.is_empty(), "loose modes after a clean stop:\n{}", loose.join("\n"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loosened_modes_are_repaired_on_the_next_start_with_a_warning() -> Result<()> {
    let root = tempfile::tempdir()?;
    let mut manager = Manager::start(root.path(), "m1")?;
    manager.wait_ready().await?;
    assert!(manager.stop()?.success());

    let dir = manager.data_dir.clone();
    let key = dir.join("tls").join("key.pem");
    let db = dir.join("raft").join("db");
    for (path, loose) in [(&dir, 0o755), (&dir.join("raft"), 0o755), (&key, 0o644), (&db, 0o644)] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(loose))?;
    }
    let before = manager.log().len();
    manager.spawn()?;
    manager.wait_ready().await?;
    let log = manager.log()[before..].to_string();
    for (path, old) in [(&dir, "0755"), (&key, "0644"), (&db, "0644")] {
        let warned = log.lines().any(|l| {
            l.contains("WARN")
                && l.contains(&format!("path={}", path.display()))
                && l.contains(&format!("old_mode={old}"))
        });
        assert!(warned, "no warning naming {} and its old mode {old}:\n{log}", path.display());
    }
    let loose = loose_paths(&dir);
    assert!(loose.is_empty(), "still loose after the start:\n{}", loose.join("\n"));
    Ok(())
}

/// Initialises a manager, writes a service, stops it cleanly, damages `file` with `damage` and
/// starts it again: it must exit non-zero with a line naming the file and saying what is wrong.
async fn refused_after_damage(file: &str, damage: impl FnOnce(&Path) -> Result<()>, problem: &str) -> Result<()> {
    let root = tempfile::tempdir()?;
    let mut manager = Manager::start(root.path(), "m1")?;
    manager.wait_ready().await?;
    create_service(&manager.addr, &spec("web")).await?;
    assert!(manager.stop()?.success(), "a clean stop; log:\n{}", manager.log());

    let path = manager.data_dir.join(file);
    damage(&path)?;
    let (status, log) = manager.start_expecting_refusal()?;
    assert!(!status.success(), "exit status {status} on a damaged {file}; log:\n{log}");
    assert!(!log.contains("panicked"), "a panic instead of an error:\n{log}");
    let named = log.lines().any(|l| l.contains(&path.display().to_string()) && l.contains(problem));
    assert!(named, "no line names {} and says {problem:?}:\n{log}", path.display());
    Ok(())
}

fn truncate_to_half(path: &Path) -> Result<()> {
    let len = std::fs::metadata(path)?.len();
    std::fs::OpenOptions::new().write(true).open(path)?.set_len(len / 2)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_raft_db_is_refused_naming_it() -> Result<()> {
    refused_after_damage("raft/db", truncate_to_half, "is damaged").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_raft_db_is_refused_naming_it() -> Result<()> {
    refused_after_damage("raft/db", |p| Ok(std::fs::OpenOptions::new().write(true).open(p)?.set_len(0)?), "is damaged")
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_manager_json_is_refused_naming_it() -> Result<()> {
    refused_after_damage("manager.json", truncate_to_half, "is corrupt").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_tls_key_is_refused_naming_it() -> Result<()> {
    refused_after_damage("tls/key.pem", truncate_to_half, "damaged").await
}
