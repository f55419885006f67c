//! `shoal service logs` with the real binaries and Docker: three managers, two agents, a
//! 3-replica service whose containers write to standard output and standard error. Logs through
//! every manager, `--tail`, a task's logs, `-f` across a rolling update, an agent down during a
//! read, and bad input. Run `cargo build --workspace --bins` and `deploy/images/build.sh` first.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use shoal_tests::shoal_ok as ok;
use shoal_tests::*;

/// Says which image it runs on standard output, writes one line to standard error, then ticks
/// every 200 ms; exits at once on SIGTERM.
const TALKER: &str = r#"trap 'exit 0' TERM; echo "start v$(cat /VERSION)"; echo "warn from $HOSTNAME" >&2; i=0; while :; do i=$((i+1)); echo "tick $i"; sleep 0.2 & wait $!; done"#;

/// Kills a `service logs -f` left running when a test fails.
struct Follower(std::process::Child);

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_of_a_service_through_any_manager_follow_an_update_and_survive_an_agent_down() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    cluster.add_agent(&[]).await?;
    cluster.add_agent(&[]).await?;
    let addrs = cluster.running_addrs();
    let leader = cluster.leader().await?;
    let follower = addrs.iter().find(|a| **a != addrs[leader]).cloned().context("a follower")?;
    let addr = addrs[leader].as_str();
    ok(addr, &["service", "create", "--name", "web", "--replicas", "3", "shoal/busybox:1", "sh", "-c", TALKER])?;
    let tasks = wait_tasks(addr, "web", Duration::from_secs(60), "3 running tasks", |t| running(t).len() == 3).await?;
    let hosts: std::collections::BTreeSet<String> = running(&tasks).iter().map(|t| t.node_id.clone()).collect();
    ensure!(hosts.len() == 2, "the replicas are spread over both agents: {hosts:?}");
    // Enough ticks for --tail to cut.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Every manager serves the read (followers pass it on to the leader).
    for manager in &addrs {
        let out = shoal(manager, &["service", "logs", "web"]);
        let (text, err) = (stdout(&out), stderr(&out));
        ensure!(out.status.success(), "logs through {manager}: {err}");
        for task in running(&tasks) {
            let prefix = format!("web.{}.{}@", task.slot, &task.id[..12]);
            let host = if cluster.agents[0].node_id == task.node_id { "agent1" } else { "agent2" };
            let start = format!("{prefix}{host}    | start v1");
            ensure!(text.lines().any(|l| l == start), "{start:?} through {manager}:\n{text}");
            ensure!(err.lines().any(|l| l.starts_with(&prefix) && l.contains("| warn from")), "stderr apart:\n{err}");
        }
        ensure!(!text.contains("warn from"), "standard error stays on stderr:\n{text}");
    }

    // --tail: the last N lines of each task only; -t puts the time in front.
    let out = shoal(&follower, &["service", "logs", "--tail", "2", "-t", "web"]);
    ensure!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for task in running(&tasks) {
        let prefix = format!("web.{}.{}@", task.slot, &task.id[..12]);
        let lines: Vec<&str> = text.lines().filter(|l| l.contains(&prefix)).collect();
        ensure!(lines.len() <= 2 && !lines.is_empty(), "--tail 2 gave {} lines of {prefix}:\n{text}", lines.len());
        ensure!(lines.iter().all(|l| l.contains("| tick ")), "only the latest lines:\n{text}");
        ensure!(lines.iter().all(|l| l.len() > 31 && l.as_bytes()[10] == b'T' && &l[29..31] == "Z "), "{text}");
    }

    // A task's logs (by id prefix), raw.
    let one = running(&tasks)[0].clone();
    let out = shoal(addr, &["service", "logs", "--raw", &one.id[..10]]);
    ensure!(out.status.success(), "{}", stderr(&out));
    ensure!(stdout(&out).starts_with("start v1\ntick 1\n"), "{}", stdout(&out));
    ensure!(stderr(&out).trim() == format!("warn from {}", &one.status.container_id[..12]), "{}", stderr(&out));

    // -f through a follower: a rolling update's new tasks join the stream.
    let mut child = Command::new(bin("shoal"))
        .args(["--host", &follower, "service", "logs", "-f", "--tail", "1", "web"])
        .env("SHOAL_TLS_DIR", cluster.admin_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let lines = collect_lines(child.stdout.take().context("stdout")?);
    let follow = Follower(child);
    wait_line(&lines, "| tick", "the followed stream").await?;
    ok(addr, &["service", "update", "--image", "shoal/busybox:2", "--update-parallelism", "3", "web"])?;
    wait_line(&lines, "| start v2", "a new task's first line in the followed stream").await?;
    let updated = list_tasks(addr, "web").await?;
    let new_ids: Vec<String> = running(&updated)
        .iter()
        .filter(|t| t.spec.container.image == "shoal/busybox:2")
        .map(|t| t.id.clone())
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (missing, seen) = {
            let seen = lines.lock().expect("lines").clone();
            let missing: Vec<String> = new_ids
                .iter()
                .filter(|id| !seen.iter().any(|l| l.contains(&format!(".{}@", &id[..12])) && l.ends_with("| start v2")))
                .cloned()
                .collect();
            (missing, seen)
        };
        if missing.is_empty() {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "new tasks {missing:?} not in the stream:\n{}",
            seen.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(follow);

    // An agent down: named in one warning, the other's lines still come.
    let updated = list_tasks(addr, "web").await?;
    cluster.agents[1].kill9();
    let (down_id, up_id) = (cluster.agents[1].node_id.clone(), cluster.agents[0].node_id.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let out = shoal(addr, &["service", "logs", "web"]);
    let (text, err) = (stdout(&out), stderr(&out));
    ensure!(out.status.success(), "{err}");
    let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("warning: ")).collect();
    ensure!(
        warnings.len() == 1 && warnings[0].contains(&format!("node agent2 ({down_id})")),
        "one warning naming the agent that is down:\n{err}"
    );
    for task in running(&updated).iter().filter(|t| t.node_id == up_id) {
        let prefix = format!("web.{}.{}@agent1", task.slot, &task.id[..12]);
        ensure!(text.contains(&format!("{prefix}    | start v2")), "{prefix} still streams:\n{text}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_log_reads_are_refused_with_what_is_allowed() -> Result<()> {
    let (_cluster, addr) = single_node().await?;
    let addr = addr.as_str();
    let out = shoal(addr, &["service", "logs", "nosuch"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("no such service or task: nosuch"), "{}", stderr(&out));
    let out = shoal(addr, &["service", "logs", "--tail", "ten", "web"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("invalid value 'ten' for '--tail <N>': expected \"all\" or a number of lines"),
        "{}",
        stderr(&out)
    );
    let out = shoal(addr, &["service", "logs", "--since", "yesterday", "web"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--since"), "{}", stderr(&out));
    Ok(())
}

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .context("VmRSS")?
        .parse()?;
    Ok(kib * 1024)
}

/// A reader that stops reading holds everything up to the engine: neither the leader nor the
/// agent buffers the 3 MB of lines the container wrote (kept under the engine's log rotation
/// here, 10 MB a file: Docker drops lines a follower has not read when it rotates them away).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_reading_makes_nobody_buffer() -> Result<()> {
    let (cluster, addr) = single_node().await?;
    let addr = addr.as_str();
    // 30,000 lines of 100 bytes, then quiet.
    let writer = "trap 'exit 0' TERM; yes 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' | head -n 30000; echo written; while :; do sleep 1 & wait $!; done";
    ok(addr, &["service", "create", "--name", "spam", "shoal/busybox:1", "sh", "-c", writer])?;
    let tasks = wait_tasks(addr, "spam", Duration::from_secs(60), "1 running task", |t| running(t).len() == 1).await?;
    let task = running(&tasks)[0].clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let out = shoal(addr, &["service", "logs", "--tail", "1", "--raw", "spam"]);
        if stdout(&out).trim() == "written" {
            break;
        }
        ensure!(tokio::time::Instant::now() < deadline, "the container did not finish writing: {}", stdout(&out));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (manager_pid, agent_pid) =
        (cluster.managers[0].pid().context("manager pid")?, cluster.agents[0].pid().context("agent pid")?);
    let (manager_before, agent_before) = (rss(manager_pid)?, rss(agent_pid)?);

    // Following from the start, into a pipe nobody reads.
    let mut child = Command::new(bin("shoal"))
        .args(["--host", addr, "service", "logs", "-f", "spam"])
        .env("SHOAL_TLS_DIR", cluster.admin_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pipe = child.stdout.take().context("stdout")?;
    let errors = collect_lines(child.stderr.take().context("stderr")?);
    let reader = Follower(child);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (manager_grew, agent_grew) =
        (rss(manager_pid)?.saturating_sub(manager_before), rss(agent_pid)?.saturating_sub(agent_before));
    // The agent's heartbeats do not wait behind the held lines: its node stays ready and its
    // session open.
    let nodes = list_nodes(addr).await?;
    let node = nodes.iter().find(|n| n.id == cluster.agents[0].node_id).context("the agent's node")?;
    ensure!(node.status.state == shoal_types::NodeState::Ready, "the agent's node is {:?}", node.status);
    let sessions = cluster.agents[0].log().matches("session open").count();
    ensure!(sessions <= 2, "the agent's session was reopened while the reader paused:\n{}", cluster.agents[0].log());
    // Holding every line takes more than 8 MB (each line is a message field with its task id):
    // with the reader's queue unbounded, the leader grew by more than that here.
    ensure!(manager_grew < 8 << 20, "the leader grew by {manager_grew} bytes for a reader that does not read");
    ensure!(agent_grew < 8 << 20, "the agent grew by {agent_grew} bytes for a reader that does not read");

    // Once read, every line arrives, in order, and nothing is lost while held up.
    let counted = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = 0usize;
        for line in std::io::BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if line.ends_with("| written") {
                return lines;
            }
            lines += 1;
        }
        lines
    });
    // (Until the last line: a stream that ended early comes back with fewer.)
    let lines = tokio::task::spawn_blocking(move || counted.join().expect("reader thread")).await?;
    drop(reader);
    let errors = errors.lock().expect("lines").join("\n");
    ensure!(lines == 30_000, "{lines} lines before the last of task {}; stderr: {errors}", task.id);
    Ok(())
}
