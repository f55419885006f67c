//! The real `shoal` binary against real managers: output, exit codes, and bad input that changes
//! nothing.

use anyhow::Result;
use shoal_tests::*;

fn fails(out: &std::process::Output, code: i32, needle: &str) {
    assert_eq!(out.status.code(), Some(code), "stdout: {}\nstderr: {}", stdout(out), stderr(out));
    assert!(stderr(out).contains(needle), "stderr lacks {needle:?}: {}", stderr(out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_creates_lists_inspects_and_removes_services() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let leader = cluster.leader().await?;
    let follower = cluster.managers[(leader + 1) % 3].addr.clone();

    // Through a follower: the call is forwarded to the leader.
    let id = ok(&shoal(
        &follower,
        &[
            "service",
            "create",
            "-d",
            "--name",
            "web",
            "--replicas",
            "3",
            "--update-parallelism",
            "2",
            "--update-delay",
            "5s",
            "--env",
            "A=1",
            "shoal/busybox:1",
        ],
    ));
    assert_eq!(id.trim().len(), 25, "prints the new id: {id:?}");

    let ls = ok(&shoal(&follower, &["service", "ls"]));
    let lines: Vec<&str> = ls.lines().collect();
    assert!(lines[0].starts_with("ID") && lines[0].contains("NAME") && lines[0].contains("REPLICAS"), "{ls}");
    assert!(
        lines[1].contains("web")
            && lines[1].contains("replicated")
            && lines[1].contains("0/3")
            && lines[1].contains("shoal/busybox:1"),
        "{ls}"
    );
    assert_eq!(ok(&shoal(&follower, &["service", "ls", "-q"])).trim(), &id.trim()[..12]);

    let inspect = ok(&shoal(&follower, &["service", "inspect", "web"]));
    let services: Vec<shoal_types::Service> = serde_json::from_str(&inspect)?;
    assert_eq!(services.len(), 1);
    let spec = &services[0].spec;
    assert_eq!(spec.update_config.parallelism, 2);
    assert_eq!(spec.update_config.delay.to_string(), "5s");
    assert_eq!(spec.update_config.monitor.to_string(), "5s", "Swarm default");
    assert_eq!(spec.task.container.env, vec!["A=1".to_string()]);
    assert!(services[0].version > 0);
    let pretty = ok(&shoal(&follower, &["service", "inspect", "--pretty", "web"]));
    assert!(pretty.contains("web") && pretty.contains("shoal/busybox:1"), "{pretty}");

    let nodes = ok(&shoal(&follower, &["node", "ls"]));
    assert!(nodes.contains("MANAGER STATUS"), "{nodes}");
    assert_eq!(nodes.matches("Leader").count(), 1, "{nodes}");
    assert_eq!(nodes.matches("Reachable").count(), 2, "{nodes}");
    let info = ok(&shoal(&follower, &["cluster", "info"]));
    assert!(info.contains("Leader") && info.contains("Managers: 3"), "{info}");

    ok(&shoal(&follower, &["service", "rm", "web"]));
    assert_eq!(ok(&shoal(&follower, &["service", "ls", "-q"])).trim(), "");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_bad_input_is_refused_and_changes_nothing() -> Result<()> {
    let cluster = Cluster::start(1).await?;
    let host = cluster.managers[0].addr.clone();
    ok(&shoal(&host, &["service", "create", "-d", "--name", "web", "shoal/busybox:1"]));
    let before = ok(&shoal(&host, &["service", "inspect", "web"]));

    let usage_errors: &[(&[&str], &str)] = &[
        (&["--update-parallelism", "-1"], "--update-parallelism"),
        (&["--update-delay", "abc"], "--update-delay"),
        (&["--update-max-failure-ratio", "2"], "2 is outside [0, 1]"),
        (&["--update-order", "sideways"], "--update-order"),
        (&["--rollback-failure-action", "rollback"], "--rollback-failure-action"),
        (&["--constraint", "node.labels.a=b"], "constraint expected one operator from ==, !="),
        (&["--replicas", "-1"], "--replicas"),
        (&["--mode", "global", "--replicas", "2"], "replicas can only be used with replicated mode"),
        (&["--restart-condition", "sometimes"], "--restart-condition"),
        (&["--placement-pref", "pack=node.labels.x"], "only spread is supported"),
        (&["--limit-memory", "lots"], "--limit-memory"),
        (&["--name", "bad name!"], "--name"),
    ];
    for (flags, needle) in usage_errors {
        let mut args = vec!["service", "create", "-d", "--name", "api"];
        args.extend_from_slice(flags);
        args.push("shoal/busybox:1");
        fails(&shoal(&host, &args), 2, needle);
    }
    // Errors only the spec validation or the cluster can see: exit 1, one line.
    fails(
        &shoal(&host, &["service", "create", "-d", "--name", "api", "--reserve-memory", "1k", "shoal/busybox:1"]),
        1,
        "task.resources.reservations.memory_bytes",
    );
    fails(
        &shoal(&host, &["service", "create", "-d", "--name", "web", "shoal/busybox:1"]),
        1,
        "service web already exists",
    );
    fails(&shoal(&host, &["service", "inspect", "nope"]), 1, "service nope not found");
    fails(&shoal(&host, &["service", "rm", "nope"]), 1, "service nope not found");
    fails(&shoal(&host, &["node", "inspect", "nope"]), 1, "node nope not found");
    fails(&shoal(&host, &["service", "frobnicate"]), 2, "frobnicate");

    assert_eq!(ok(&shoal(&host, &["service", "ls", "-q"])).lines().count(), 1, "only web exists");
    assert_eq!(ok(&shoal(&host, &["service", "inspect", "web"])), before, "web is unchanged");

    // A manager address where nothing listens: one clear line, exit 1, quickly.
    let dead = free_addr();
    let out = shoal(&dead, &["service", "ls"]);
    fails(&out, 1, &format!("cannot reach a manager at {dead}"));
    assert_eq!(stderr(&out).lines().count(), 1, "one line: {}", stderr(&out));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_info_shows_the_settings_cluster_update_changes() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let leader = cluster.leader().await?;
    let follower = cluster.managers[(leader + 1) % 3].addr.clone();

    let info = ok(&shoal(&follower, &["cluster", "info"]));
    for line in [
        "Task history limit: 5\n",
        "Max replicas: 100000\n",
        "Heartbeat period: 1s\n",
        "Certificate expiry: 2160h0m0s\n",
    ] {
        assert!(info.contains(line), "defaults: lacks {line:?}:\n{info}");
    }

    assert_eq!(ok(&shoal(&follower, &["cluster", "update", "--task-history-limit", "2"])), "Cluster updated.\n");
    let info = ok(&shoal(&follower, &["cluster", "info"]));
    assert!(info.contains("Task history limit: 2\n") && info.contains("Max replicas: 100000\n"), "{info}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&shoal(&follower, &["cluster", "info", "--format", "json"])))?;
    assert_eq!(json["spec"]["task_history_limit"], 2, "{json}");
    assert_eq!(json["spec"]["max_replicas"], 100_000, "{json}");
    assert_eq!(json["spec"]["heartbeat_period"], "1s", "{json}");
    assert_eq!(json["spec"]["node_cert_expiry"], "2160h0m0s", "{json}");

    // The setting is replicated: every manager's own view shows it once it has caught up.
    for manager in cluster.running_addrs() {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let local = ok(&shoal(&manager, &["cluster", "info", "--local"]));
            if local.contains("Task history limit: 2\n") {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{manager} never showed the new limit:\n{local}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// Kills the child when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_carry_on_through_another_manager_when_theirs_dies() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let hosts: Vec<String> = cluster.managers.iter().map(|m| m.addr.clone()).collect();
    let mut child = std::process::Command::new(bin("shoal"))
        .args(["--host", &hosts.join(","), "events", "--filter", "type=service", "--format", "json"])
        .env_remove("SHOAL_HOST")
        .env("SHOAL_TLS_DIR", cluster.admin_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let out = shoal_tests::collect_lines(child.stdout.take().expect("stdout"));
    let err = shoal_tests::collect_lines(child.stderr.take().expect("stderr"));
    let mut events = KillOnDrop(child);

    // The stream is open once a change made after the start shows (a watch sees only new ones).
    let mut n = 0;
    loop {
        n += 1;
        let name = format!("before{n}");
        ok(&shoal(&hosts[1], &["service", "create", "-d", "--name", &name, "shoal/busybox:1"]));
        if wait_line(&out, &format!("\"name\":\"{name}\""), "first event").await.is_ok() {
            break;
        }
        anyhow::ensure!(n < 3, "events printed nothing:\n{}", err.lock().expect("lines lock").join("\n"));
    }

    // It talks to the first manager of the list: kill it.
    cluster.managers[0].kill9();
    wait_line(&err, "continuing through", "reconnection note").await?;
    anyhow::ensure!(events.0.try_wait()?.is_none(), "events exited:\n{}", err.lock().expect("lines lock").join("\n"));

    // Changes made now are printed: the stream goes on through another manager.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = shoal(&hosts[2], &["service", "create", "-d", "--name", "after", "shoal/busybox:1"]);
        if out.status.success() {
            break;
        }
        // A new leader is being elected.
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "create after the kill: {}", stderr(&out));
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    wait_line(&out, "\"name\":\"after\"", "event after the kill").await?;
    let note = err.lock().expect("lines lock").join("\n");
    anyhow::ensure!(note.contains(&format!("lost the manager at {}", hosts[0])), "{note}");
    anyhow::ensure!(events.0.try_wait()?.is_none(), "events exited:\n{note}");
    Ok(())
}
