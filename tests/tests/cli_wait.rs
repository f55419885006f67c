//! Waiting for a service that cannot come up (issue 21 item 11), with the real `shoal` binary,
//! real managers, a real agent and Docker: `--timeout` ends the wait with a message naming it and
//! leaves the service in the cluster; output to a pipe (as here: stdout is never a terminal in
//! tests) is a bounded number of state-change lines, the slot's line carrying its error. Run
//! `cargo build --workspace --bins` first so the binaries are current.

use anyhow::Result;
use shoal_tests::*;

/// A name no other test's containers on the shared Docker engine use.
fn unique(prefix: &str) -> String {
    format!("{prefix}{}x{}", std::process::id(), rand::random::<u16>())
}

/// The missing image's error as the agent reports it.
const MISSING: &str = "image shoal/busybox:99 not found locally (shoal never pulls images)";

/// `service create --timeout 5s` of an image that does not exist: exit 1 once the timeout is
/// reached, naming it; a few lines of progress (not one per poll), the error on the slot's line;
/// the service stays and keeps being retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_of_a_missing_image_times_out_with_a_few_lines() -> Result<()> {
    let mut cluster = Cluster::start(1).await?;
    cluster.add_agent(&[]).await?;
    let host = cluster.managers[0].addr.clone();
    let name = unique("typo");

    let out = shoal(&host, &["service", "create", "--timeout", "5s", "--name", &name, "shoal/busybox:99"]);
    let (text, err) = (stdout(&out), stderr(&out));
    println!("stdout:\n{text}stderr:\n{err}");
    assert_eq!(out.status.code(), Some(1), "stdout:\n{text}\nstderr:\n{err}");
    assert!(
        err.contains(&format!("Error: service {name} did not converge within --timeout 5s (0 out of 1 tasks running")),
        "{err}"
    );
    assert!(err.contains("it goes on converging in the cluster"), "{err}");

    let lines: Vec<&str> = text.lines().collect();
    // The id, the header, and a handful of lines per attempt (5 s allow one or two attempts);
    // a frame per 100 ms poll would be about 50.
    assert!(lines.len() <= 20, "{} lines:\n{text}", lines.len());
    assert!(!text.contains('\x1b'), "no terminal control codes in a pipe:\n{text}");
    assert_eq!(lines.iter().filter(|l| l.starts_with("overall progress:")).count(), 1, "{text}");
    assert!(lines.contains(&"overall progress: 0 out of 1 tasks"), "{text}");
    let slot = format!("{name}.1: ");
    assert!(
        lines.iter().any(|l| l.starts_with(&slot) && l.ends_with(MISSING)),
        "the slot's line carries the missing image's error:\n{text}"
    );
    // Each printed line says something new about its slot.
    let slot_lines: Vec<&&str> = lines.iter().filter(|l| l.starts_with(&slot)).collect();
    assert!(slot_lines.windows(2).all(|w| w[0] != w[1]), "a line repeated:\n{text}");

    // The timeout ended the wait, not the service.
    let services = list_services(&host).await?;
    assert!(services.iter().any(|s| s.spec.name == name), "the service is still there");
    let _ = shoal(&host, &["service", "rm", &name]);
    Ok(())
}

/// `stack deploy --timeout` ends the same way, naming the stack's service; a service that does
/// come up within the timeout converges as without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stack_deploy_times_out_and_a_working_service_converges_within_its_timeout() -> Result<()> {
    let mut cluster = Cluster::start(1).await?;
    cluster.add_agent(&[]).await?;
    let host = cluster.managers[0].addr.clone();

    let name = unique("fine");
    let out = ok(&shoal(&host, &["service", "create", "--timeout", "2m", "--name", &name, "shoal/busybox:1"]));
    assert!(out.contains(&format!("verify: Service {name} converged")), "{out}");
    let _ = shoal(&host, &["service", "rm", &name]);

    let stack = unique("st");
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("stack.yml");
    std::fs::write(&file, "services:\n  typo:\n    image: shoal/busybox:99\n")?;
    let out = shoal(&host, &["stack", "deploy", "--timeout", "3s", "-c", &file.display().to_string(), &stack]);
    let (text, err) = (stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "stdout:\n{text}\nstderr:\n{err}");
    assert!(err.contains(&format!("service {stack}_typo did not converge within --timeout 3s")), "{err}");
    assert!(text.lines().count() <= 20, "{text}");
    assert!(list_services(&host).await?.iter().any(|s| s.spec.name == format!("{stack}_typo")));
    let _ = shoal(&host, &["stack", "rm", &stack]);
    Ok(())
}

/// A bad `--timeout` is a usage error naming the flag, the value and what is allowed; nothing is
/// sent to a manager (none listens at the address).
#[test]
fn bad_timeouts_are_usage_errors() {
    let host = "127.0.0.1:1";
    for (args, needle) in [
        (
            vec!["service", "create", "--timeout", "0s", "shoal/busybox:1"],
            "invalid value '0s' for '--timeout <DURATION>': must be longer than 0",
        ),
        (vec!["service", "update", "--timeout", "soon", "web"], "invalid value 'soon' for '--timeout <DURATION>'"),
        (
            vec!["stack", "deploy", "--timeout", "-5s", "-c", "x.yml", "st"],
            "invalid value '-5s' for '--timeout <DURATION>'",
        ),
        (vec!["service", "create", "-d", "--timeout", "5s", "shoal/busybox:1"], "cannot be used with"),
    ] {
        let out = shoal(host, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
}

// --- The wait follows the manager's change stream (issue 22 item 3) ---

/// A `shoal` process running in the background, its output gathered line by line; killed when
/// the test ends, however it ends.
struct Running {
    child: std::process::Child,
    out: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    err: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Running {
    fn start(host: &str, admin_dir: &std::path::Path, args: &[&str]) -> Result<Running> {
        let mut child = std::process::Command::new(bin("shoal"))
            .arg("--host")
            .arg(host)
            .args(args)
            .env_remove("SHOAL_HOST")
            .env("SHOAL_TLS_DIR", admin_dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        let out = shoal_tests::collect_lines(child.stdout.take().expect("stdout"));
        let err = shoal_tests::collect_lines(child.stderr.take().expect("stderr"));
        Ok(Running { child, out, err })
    }

    fn out(&self) -> Vec<String> {
        self.out.lock().expect("lines lock").clone()
    }

    fn err(&self) -> String {
        self.err.lock().expect("lines lock").join("\n")
    }

    /// Waits (up to a minute) until the output has a line for which `found` holds.
    async fn wait_for(&mut self, what: &str, found: impl Fn(&[String]) -> bool) -> Result<()> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if found(&self.out()) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!(
                    "{what}: shoal exited ({status}) first:\n{}\nstderr: {}",
                    self.out().join("\n"),
                    self.err()
                );
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{what}: not seen; output so far:\n{}\nstderr: {}",
                self.out().join("\n"),
                self.err()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Waits (up to a minute) for the process to exit; its exit code.
    async fn exit_code(&mut self) -> Result<Option<i32>> {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait()? {
                // The pipes' last lines are read by their threads.
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                return Ok(status.code());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "shoal did not exit; output:\n{}\nstderr: {}",
                self.out().join("\n"),
                self.err()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Ctrl-C.
    fn interrupt(&self) -> Result<()> {
        let sent = std::process::Command::new("kill").arg("-INT").arg(self.child.id().to_string()).status()?;
        anyhow::ensure!(sent.success(), "kill -INT failed");
        Ok(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The slots (`<name>.<slot>: …` lines) plain output has shown.
fn slots_shown(lines: &[String], name: &str) -> std::collections::BTreeSet<u64> {
    let prefix = format!("{name}.");
    lines.iter().filter_map(|l| l.strip_prefix(&prefix)?.split(':').next()?.parse().ok()).collect()
}

/// A service of 5,000 replicas on a cluster without agents (its tasks stay pending): the wait of
/// `service create` shows every slot (read once, then followed through the change stream while
/// the tasks are being made), `service scale` shows the new slot, Ctrl-C ends either wait with
/// 130, and `service update --timeout` ends as it always did, naming the timeout and the count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_on_a_large_service_follow_its_changes() -> Result<()> {
    const REPLICAS: u64 = 5_000;
    let cluster = Cluster::start(1).await?;
    let host = cluster.managers[0].addr.clone();
    let replicas = REPLICAS.to_string();

    let mut create = Running::start(
        &host,
        &cluster.admin_dir(),
        &["service", "create", "--replicas", &replicas, "--name", "big", "shoal/busybox:1"],
    )?;
    create
        .wait_for("every slot of the new service", |lines| slots_shown(lines, "big").len() as u64 == REPLICAS)
        .await?;
    create.interrupt()?;
    assert_eq!(create.exit_code().await?, Some(130), "stderr: {}", create.err());
    assert!(create.err().contains("stopped waiting; the update continues in the cluster"), "{}", create.err());
    let lines = create.out();
    assert_eq!(lines.iter().filter(|l| l.starts_with("overall progress:")).count(), 1, "{}", lines[..5].join("\n"));
    assert!(lines.contains(&format!("overall progress: 0 out of {REPLICAS} tasks")), "{}", lines[..5].join("\n"));
    assert!(lines.iter().all(|l| !l.contains('\x1b')), "no terminal control codes in a pipe");

    // Scaling up by one: the new slot's task is made after the wait read the tasks.
    let more = (REPLICAS + 1).to_string();
    let mut scale = Running::start(&host, &cluster.admin_dir(), &["service", "scale", &format!("big={more}")])?;
    scale.wait_for("the new slot", |lines| slots_shown(lines, "big").contains(&(REPLICAS + 1))).await?;
    let lines = scale.out();
    assert_eq!(lines[0], format!("big scaled to {more}"));
    assert!(lines.contains(&format!("overall progress: 0 out of {more} tasks")), "{}", lines[..3].join("\n"));
    scale.interrupt()?;
    assert_eq!(scale.exit_code().await?, Some(130), "stderr: {}", scale.err());

    // An update that cannot progress (nothing runs the new tasks) ends at its --timeout.
    let out = shoal(&host, &["service", "update", "--timeout", "3s", "--env-add", "X=1", "big"]);
    let (text, err) = (stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "stdout:\n{text}\nstderr:\n{err}");
    assert!(
        err.contains(&format!(
            "Error: service big did not converge within --timeout 3s (0 out of {more} tasks running"
        )),
        "{err}"
    );
    assert!(err.contains("it goes on converging in the cluster (see `shoal service ps big`)"), "{err}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "big");
    assert_eq!(lines.iter().filter(|l| l.starts_with("overall progress:")).count(), 1, "{text}");
    assert!(lines.contains(&format!("overall progress: 0 out of {more} tasks").as_str()), "{text}");
    Ok(())
}

/// The manager a wait follows is killed: the wait goes on through another manager of `--host`
/// (resuming after the last change it saw) and ends when the service converges, a change made
/// through another manager after the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_goes_on_through_another_manager_when_its_manager_dies() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let hosts: Vec<String> = cluster.managers.iter().map(|m| m.addr.clone()).collect();
    let name = unique("w");

    // No agents: the two tasks stay pending, and the wait with them.
    let mut create = Running::start(
        &hosts.join(","),
        &cluster.admin_dir(),
        &["service", "create", "--replicas", "2", "--name", &name, "shoal/busybox:1"],
    )?;
    create.wait_for("the first frame", |lines| lines.iter().any(|l| l == "overall progress: 0 out of 2 tasks")).await?;
    create.wait_for("both slots", |lines| slots_shown(lines, &name).len() == 2).await?;

    // It follows the first manager of the list: kill it.
    cluster.managers[0].kill9();
    // Scaled to 0 through another manager (once a new leader is elected): converged.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = shoal(&hosts[1..].join(","), &["service", "scale", "-d", &format!("{name}=0")]);
        if out.status.success() {
            break;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "scale after the kill: {}", stderr(&out));
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(create.exit_code().await?, Some(0), "stdout:\n{}\nstderr: {}", create.out().join("\n"), create.err());
    let lines = create.out();
    assert!(lines.contains(&"overall progress: 0 out of 0 tasks".to_string()), "{}", lines.join("\n"));
    assert_eq!(lines.last().map(String::as_str), Some(format!("verify: Service {name} converged").as_str()));
    Ok(())
}
