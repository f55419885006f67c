//! Ingress traffic with the real binaries and Docker: one manager and two agents, each with its
//! own loopback ingress address; `shoal/web` containers answer with their version and hostname.
//! Requests through either agent reach tasks on both; a rolling update under a steady request
//! loop fails no request; a held-open connection keeps its old task draining until it closes,
//! or until the drain timeout; a task not yet healthy takes no connection; bad input is refused.
//! Run `cargo build --workspace --bins` and `deploy/images/build.sh` first.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use shoal_tests::shoal_ok as ok;
use shoal_tests::*;
use shoal_types::TaskState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One HTTP/1.0 request on a new connection; the body ("web <version> <hostname>").
async fn get(addr: &str) -> Result<String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
        stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        let text = String::from_utf8_lossy(&response).to_string();
        let Some((head, body)) = text.split_once("\r\n\r\n") else { bail!("no HTTP response: {text:?}") };
        ensure!(head.starts_with("HTTP/1.") && head.contains(" 200 "), "not a 200: {head:?}");
        Ok(body.trim().to_string())
    };
    tokio::time::timeout(Duration::from_secs(5), exchange).await.context("no answer within 5s")?
}

/// The hostname a `shoal/web` container answers with: its container id's first 12 characters.
fn hostname(task: &shoal_types::Task) -> String {
    task.status.container_id.chars().take(12).collect()
}

/// Polls `addr` until a request succeeds (the proxy binds its port once the leader's table
/// arrives).
async fn wait_answering(addr: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match get(addr).await {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() > deadline => return Err(e.context(format!("{addr} never answered"))),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn two_agents() -> Result<(Cluster, String)> {
    let mut cluster = Cluster::start(1).await?;
    cluster.add_agent(&[]).await?;
    cluster.add_agent(&[]).await?;
    let addr = cluster.running_addrs()[0].clone();
    Ok((cluster, addr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_through_either_agent_reach_tasks_on_both_nodes() -> Result<()> {
    let (cluster, addr) = two_agents().await?;
    let addr = addr.as_str();
    ok(addr, &["service", "create", "--name", "web", "--replicas", "4", "-p", "8080:80", "shoal/web:1"])?;
    let tasks = wait_tasks(addr, "web", Duration::from_secs(60), "4 running", |t| running(t).len() == 4).await?;
    let nodes: BTreeSet<&str> = running(&tasks).iter().map(|t| t.node_id.as_str()).collect();
    ensure!(nodes.len() == 2, "the replicas are spread over both agents: {nodes:?}");
    let expected: BTreeMap<String, String> = running(&tasks).iter().map(|t| (hostname(t), t.node_id.clone())).collect();
    for agent in &cluster.agents {
        let through = agent.ingress(8080);
        wait_answering(&through).await?;
        let mut seen = BTreeSet::new();
        for _ in 0..60 {
            let body = get(&through).await?;
            let host = body.strip_prefix("web 1 ").with_context(|| format!("unexpected body {body:?}"))?;
            ensure!(expected.contains_key(host), "{host} is not one of the service's tasks {expected:?}");
            seen.insert(host.to_string());
        }
        let reached: BTreeSet<&str> = seen.iter().map(|h| expected[h].as_str()).collect();
        ensure!(reached.len() == 2, "through {} requests reached tasks on both nodes: {reached:?}", agent.name);
        ensure!(seen.len() == 4, "through {} requests reached every task: {seen:?}", agent.name);
    }

    // A second service cannot take the same published port; the first keeps it.
    let out = shoal(addr, &["service", "create", "--name", "other", "-p", "8080:80", "shoal/web:2"]);
    ensure!(!out.status.success(), "a second owner of 8080 is refused");
    ensure!(stderr(&out).contains("port 8080/tcp is already published by service web"), "{}", stderr(&out));
    ensure!(list_services(addr).await?.len() == 1, "nothing was created");
    // UDP ingress is refused at create, naming the field and what to do instead.
    let out = shoal(addr, &["service", "create", "--name", "dns", "-p", "5353:53/udp", "shoal/web:1"]);
    ensure!(!out.status.success(), "UDP ingress is refused");
    ensure!(stderr(&out).contains("the ingress proxy carries TCP only; publish it with mode=host"), "{}", stderr(&out));

    // The port closes when the service goes; connections are refused then.
    ok(addr, &["service", "rm", "web"])?;
    let through = cluster.agents[0].ingress(8080);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(&through).await.is_ok() {
        ensure!(tokio::time::Instant::now() < deadline, "{through} still listens after service rm");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_under_a_request_loop_fails_no_request() -> Result<()> {
    let (cluster, addr) = two_agents().await?;
    let addr = addr.as_str();
    ok(addr, &["service", "create", "--name", "web", "--replicas", "6", "-p", "8081:80", "shoal/web:1"])?;
    wait_tasks(addr, "web", Duration::from_secs(60), "6 running", |t| running(t).len() == 6).await?;
    let entries: Vec<String> = cluster.agents.iter().map(|a| a.ingress(8081)).collect();
    for entry in &entries {
        wait_answering(entry).await?;
    }
    // Four clients, a new connection per request, through both agents, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let versions = Arc::new(std::sync::Mutex::new(BTreeMap::<String, u64>::new()));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for i in 0..4 {
        let entry = entries[i % entries.len()].clone();
        let (stop, done, failed) = (stop.clone(), done.clone(), failed.clone());
        let (versions, failures) = (versions.clone(), failures.clone());
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match get(&entry).await {
                    Ok(body) => {
                        let version = body.split(' ').nth(1).unwrap_or("?").to_string();
                        *versions.lock().expect("lock").entry(version).or_default() += 1;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        failures.lock().expect("lock").push(format!("{entry}: {e:#}"));
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    ok(addr, &["service", "update", "--detach", "--image", "shoal/web:2", "web"])?;
    wait_tasks(addr, "web", Duration::from_secs(120), "6 running web:2", |tasks| {
        let run = running(tasks);
        run.len() == 6
            && run.iter().all(|t| t.spec.container.image == "shoal/web:2")
            && tasks.iter().filter(|t| t.spec.container.image == "shoal/web:1").all(|t| t.status.state.is_terminal())
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await?;
    }
    let (done, failed) = (done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let versions = versions.lock().expect("lock").clone();
    eprintln!("requests: {done} answered, {failed} failed; by version {versions:?}");
    ensure!(
        failed == 0,
        "{failed} requests failed during the update: {:?}",
        &failures.lock().expect("lock")[..failed.min(10) as usize]
    );
    ensure!(done >= 100, "the loop ran through the update: {done} requests");
    ensure!(versions.get("1").is_some_and(|n| *n > 0) && versions.get("2").is_some_and(|n| *n > 0), "{versions:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_connection_keeps_its_task_draining_until_it_closes_or_the_timeout() -> Result<()> {
    let (mut cluster, addr) = single_node().await?;
    let addr = addr.as_str();
    let agent = cluster.agents.remove(0);
    ok(addr, &["service", "create", "--name", "web", "-p", "8082:80", "--stop-drain-timeout", "1m", "shoal/web:1"])?;
    let tasks = wait_tasks(addr, "web", Duration::from_secs(60), "1 running", |t| running(t).len() == 1).await?;
    let old = running(&tasks)[0].id.clone();
    let entry = agent.ingress(8082);
    wait_answering(&entry).await?;

    // Half a request: the connection is open and the old container has not answered yet.
    let mut held = TcpStream::connect(&entry).await?;
    held.write_all(b"GET / HTTP/1.0\r\n").await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    ok(addr, &["service", "update", "--detach", "--image", "shoal/web:2", "web"])?;
    let is =
        |tasks: &[shoal_types::Task], state: TaskState| tasks.iter().any(|t| t.id == old && t.status.state == state);
    wait_tasks(addr, "web", Duration::from_secs(20), "the old task draining", |t| is(t, TaskState::Draining)).await?;
    let ps = ok(addr, &["service", "ps", "web"])?;
    ensure!(ps.contains("Draining"), "service ps shows the state:\n{ps}");
    // It keeps draining while the connection is open (stop-first: the new task waits for it).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let tasks = list_tasks(addr, "web").await?;
    ensure!(is(&tasks, TaskState::Draining), "still draining with a connection open: {tasks:?}");
    // The held request is answered by the old version, then the connection closes.
    held.write_all(b"\r\n").await?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), held.read_to_string(&mut response)).await??;
    ensure!(response.contains("web 1 "), "the draining task answered: {response:?}");
    drop(held);
    let stopped = tokio::time::Instant::now();
    wait_tasks(addr, "web", Duration::from_secs(10), "the old task shut down", |t| is(t, TaskState::Shutdown)).await?;
    ensure!(stopped.elapsed() < Duration::from_secs(5), "stopped soon after the last connection closed");
    wait_tasks(addr, "web", Duration::from_secs(30), "web:2 running", |t| {
        running(t).iter().any(|t| t.spec.container.image == "shoal/web:2")
    })
    .await?;

    // With a short drain timeout, a connection held open does not keep the task past it.
    ok(addr, &["service", "update", "--detach", "--stop-drain-timeout", "2s", "web"])?;
    let tasks = wait_tasks(addr, "web", Duration::from_secs(60), "the 2s spec running", |t| {
        running(t)
            .iter()
            .any(|t| t.spec.container.stop_drain_timeout.is_some_and(|d| d.as_std() == Duration::from_secs(2)))
    })
    .await?;
    let current = running(&tasks)[0].id.clone();
    wait_answering(&entry).await?;
    let mut held = TcpStream::connect(&entry).await?;
    held.write_all(b"GET / HTTP/1.0\r\n").await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    ok(addr, &["service", "scale", "--detach", "web=0"])?;
    let started = tokio::time::Instant::now();
    // Scaled down to 0, the task's record goes once it has stopped.
    let stopped = |tasks: &[shoal_types::Task]| !tasks.iter().any(|t| t.id == current && !t.status.state.is_terminal());
    let draining =
        |tasks: &[shoal_types::Task]| tasks.iter().any(|t| t.id == current && t.status.state == TaskState::Draining);
    wait_tasks(addr, "web", Duration::from_secs(10), "the task draining", draining).await?;
    wait_tasks(addr, "web", Duration::from_secs(20), "the task stopped after its drain timeout", stopped).await?;
    let waited = started.elapsed();
    ensure!(waited >= Duration::from_millis(1500), "it drained for its timeout first ({waited:?})");
    // Its connection ended with it.
    let mut rest = Vec::new();
    let end = tokio::time::timeout(Duration::from_secs(5), held.read_to_end(&mut rest)).await;
    ensure!(end.is_ok(), "the held connection was closed when the task stopped");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_is_not_healthy_yet_takes_no_connection() -> Result<()> {
    let (cluster, addr) = single_node().await?;
    let addr = addr.as_str();
    // Healthy once /www/ready exists; failures do not count for a minute, so the other task
    // stays STARTING (its web server answers, but it is not healthy).
    ok(
        addr,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "web",
            "--replicas",
            "2",
            "-p",
            "8083:80",
            "--health-cmd",
            "test -e /www/ready",
            "--health-interval",
            "300ms",
            "--health-start-period",
            "60s",
            "shoal/web:1",
        ],
    )?;
    let tasks = wait_tasks(addr, "web", Duration::from_secs(60), "2 starting with containers", |t| {
        t.iter().filter(|t| t.status.state == TaskState::Starting && !t.status.container_id.is_empty()).count() == 2
    })
    .await?;
    let ready = &tasks.iter().find(|t| t.status.state == TaskState::Starting).context("a task")?.status.container_id;
    let status = std::process::Command::new("docker").args(["exec", ready, "touch", "/www/ready"]).status()?;
    ensure!(status.success(), "docker exec touch");
    let tasks = wait_tasks(addr, "web", Duration::from_secs(20), "one running", |t| running(t).len() == 1).await?;
    let healthy = hostname(running(&tasks)[0]);
    let entry = cluster.agents[0].ingress(8083);
    wait_answering(&entry).await?;
    for _ in 0..40 {
        let body = get(&entry).await?;
        ensure!(body == format!("web 1 {healthy}"), "only the healthy task answers: {body:?} (healthy: {healthy})");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_restart_keeps_its_tasks_and_binds_its_ports_again() -> Result<()> {
    let (mut cluster, addr) = single_node().await?;
    let addr = addr.as_str();
    ok(addr, &["service", "create", "--name", "web", "--replicas", "2", "-p", "8084:80", "shoal/web:1"])?;
    let before = wait_tasks(addr, "web", Duration::from_secs(60), "2 running", |t| running(t).len() == 2).await?;
    let hosts: BTreeSet<String> = running(&before).iter().map(|t| hostname(t)).collect();
    let entry = cluster.agents[0].ingress(8084);
    wait_answering(&entry).await?;
    cluster.agents[0].restart()?;
    wait_answering(&entry).await?;
    let mut seen = BTreeSet::new();
    for _ in 0..30 {
        let body = get(&entry).await?;
        seen.insert(body.strip_prefix("web 1 ").with_context(|| format!("unexpected body {body:?}"))?.to_string());
    }
    ensure!(seen == hosts, "the same containers answer after the restart: {seen:?} vs {hosts:?}");
    let after = list_tasks(addr, "web").await?;
    let ids = |tasks: &[shoal_types::Task]| running(tasks).iter().map(|t| t.id.clone()).collect::<BTreeSet<_>>();
    ensure!(ids(&after) == ids(&before), "no task was replaced: {after:?}");
    Ok(())
}

/// The share of `n` requests through `entry` that version 2 answered.
async fn share_of_v2(entry: &str, n: usize) -> Result<f64> {
    let mut v2 = 0usize;
    for _ in 0..n {
        let body = get(entry).await?;
        if body.starts_with("web 2 ") {
            v2 += 1;
        } else {
            ensure!(body.starts_with("web 1 "), "unexpected body {body:?}");
        }
    }
    Ok(v2 as f64 / n as f64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_splits_by_task_count_then_by_weight_and_refuses_bad_input() -> Result<()> {
    let (cluster, addr) = two_agents().await?;
    let addr = addr.as_str();
    // Two services behind one route: their target port is reachable (`-p 80`), not published.
    ok(
        addr,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            "web",
            "--label",
            "app=web",
            "--replicas",
            "9",
            "-p",
            "80",
            "shoal/web:1",
        ],
    )?;
    ok(
        addr,
        &["service", "create", "--detach", "--name", "web-canary", "--label", "app=web", "-p", "80", "shoal/web:2"],
    )?;
    wait_tasks(addr, "web", Duration::from_secs(90), "9 running", |t| running(t).len() == 9).await?;
    wait_tasks(addr, "web-canary", Duration::from_secs(60), "1 running", |t| running(t).len() == 1).await?;
    let out = shoal(addr, &["route", "create", "canary", "--publish", "8085:80", "--select", "app=web"]);
    ensure!(out.status.success(), "route create: {}", stderr(&out));
    ensure!(stderr(&out).is_empty(), "no warning: {}", stderr(&out));
    let entry = cluster.agents[1].ingress(8085);
    wait_answering(&entry).await?;
    // 1 task of 10: about a tenth.
    let share = share_of_v2(&entry, 300).await?;
    ensure!((0.03..=0.2).contains(&share), "by task count the canary gets about 10%: {share}");

    // A weight moves new connections at once, on every agent.
    ok(addr, &["route", "update", "canary", "--weight", "web-canary=50"])?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for agent in &cluster.agents {
        let share = share_of_v2(&agent.ingress(8085), 200).await?;
        ensure!((0.35..=0.65).contains(&share), "through {} the canary gets about 50%: {share}", agent.name);
    }
    ok(addr, &["route", "update", "canary", "--weight", "web-canary=0", "--weight", "web=100"])?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    ensure!(share_of_v2(&entry, 50).await? == 0.0, "a weight of 0 takes no connection");
    let table = ok(addr, &["route", "ls"])?;
    ensure!(
        table.lines().any(|l| l.contains("canary") && l.contains("*:8085->80/tcp") && l.contains("app=web")),
        "{table}"
    );

    // Bad input changes nothing and says why.
    let refused = |args: &[&str], says: &str| -> Result<()> {
        let out = shoal(addr, args);
        ensure!(!out.status.success(), "{args:?} is refused");
        ensure!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
        Ok(())
    };
    refused(
        &["route", "create", "other", "--publish", "8085:80", "--select", "app=web"],
        "port 8085/tcp is already published by route canary",
    )?;
    refused(
        &["service", "create", "--name", "clash", "-p", "8085:80", "shoal/web:1"],
        "port 8085/tcp is already published by route canary",
    )?;
    refused(&["route", "update", "canary", "--weight", "web=0"], "every weight is 0")?;
    refused(
        &["route", "create", "neg", "--publish", "8086:80", "--select", "app=web", "--weight", "web=-5"],
        "from 0 to 100",
    )?;
    refused(
        &[
            "route",
            "create",
            "over",
            "--publish",
            "8086:80",
            "--select",
            "app=web",
            "--weight",
            "web=70",
            "--weight",
            "web-canary=40",
        ],
        "add up to 110%",
    )?;
    ensure!(ok(addr, &["route", "ls", "-q"])?.lines().count() == 1, "only the first route exists");

    // A selector that matches nothing: accepted with a warning; connections are closed.
    let out = shoal(addr, &["route", "create", "empty", "--publish", "8087:80", "--select", "app=none"]);
    ensure!(out.status.success(), "{}", stderr(&out));
    ensure!(stderr(&out).contains("warning: route empty selects no service (app=none)"), "{}", stderr(&out));
    let empty = cluster.agents[0].ingress(8087);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        // Once the port is open, a connection is closed without an answer.
        if let Ok(mut conn) = TcpStream::connect(&empty).await {
            conn.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
            let mut buf = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut buf)).await;
            ensure!(buf.is_empty(), "no answer: {buf:?}");
            break;
        }
        ensure!(tokio::time::Instant::now() < deadline, "{empty} never opened");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ok(addr, &["route", "rm", "empty", "canary"])?;
    ensure!(ok(addr, &["route", "ls", "-q"])?.trim().is_empty(), "both routes removed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stacks_x_routes_are_deployed_with_it_and_removed_with_it() -> Result<()> {
    let (cluster, addr) = single_node().await?;
    let addr = addr.as_str();
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("stack.yml");
    let stack = "services:\n  web:\n    image: shoal/web:1\n    ports: [\"80\"]\n    deploy:\n      replicas: 3\n      labels: [app=web]\n  canary:\n    image: shoal/web:2\n    ports: [\"80\"]\n    deploy:\n      labels: [app=web]\nx-routes:\n  front:\n    publish: \"8089:80\"\n    select: {app: web}\n    weights: {canary: 50}\n";
    // A route on a port one of the stack's services publishes: refused before anything changes.
    std::fs::write(
        &file,
        stack.replace(
            "ports: [\"80\"]\n    deploy:\n      replicas: 3",
            "ports: [\"8089:80\"]\n    deploy:\n      replicas: 3",
        ),
    )?;
    let path = file.to_string_lossy().to_string();
    let out = shoal(addr, &["stack", "deploy", "-c", &path, "app"]);
    ensure!(!out.status.success(), "a route clashing with the stack's own port is refused");
    ensure!(stderr(&out).contains("port 8089/tcp is also published by the stack's service web"), "{}", stderr(&out));
    ensure!(list_services(addr).await?.is_empty(), "nothing was deployed");
    std::fs::write(&file, stack)?;
    let file = file.to_string_lossy().to_string();
    let out = ok(addr, &["stack", "deploy", "-c", &file, "app"])?;
    ensure!(out.contains("Creating route app_front"), "{out}");
    let entry = cluster.agents[0].ingress(8089);
    wait_answering(&entry).await?;
    let share = share_of_v2(&entry, 200).await?;
    ensure!((0.35..=0.65).contains(&share), "the canary gets its 50% (not 1 in 4): {share}");
    // Deployed again unchanged: the route is left alone.
    let out = ok(addr, &["stack", "deploy", "-c", &file, "app"])?;
    ensure!(out.contains("Route app_front is unchanged"), "{out}");
    let out = ok(addr, &["stack", "rm", "app"])?;
    ensure!(out.contains("Removing route app_front"), "{out}");
    ensure!(ok(addr, &["route", "ls", "-q"])?.trim().is_empty(), "the stack's route is gone");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_step_sets_the_new_versions_share_of_traffic_whatever_its_task_count() -> Result<()> {
    let (cluster, addr) = single_node().await?;
    let addr = addr.as_str();
    ok(addr, &["service", "create", "--name", "web", "--replicas", "4", "-p", "8090:80", "shoal/web:1"])?;
    let entry = cluster.agents[0].ingress(8090);
    wait_answering(&entry).await?;
    // One task of four runs the new version, but it takes half of the connections.
    let out = ok(
        addr,
        &[
            "service",
            "update",
            "--update-step",
            "1:approve:traffic=50%",
            "--update-step",
            "100%",
            "--image",
            "shoal/web:2",
            "web",
        ],
    )?;
    ensure!(out.contains("waiting for approval"), "{out}");
    let tasks = list_tasks(addr, "web").await?;
    let new = running(&tasks).iter().filter(|t| t.spec.container.image == "shoal/web:2").count();
    ensure!(new == 1, "one new task at step 1: {new}");
    let share = share_of_v2(&entry, 200).await?;
    ensure!((0.35..=0.65).contains(&share), "the step's 50%, not 1 in 4: {share}");
    ok(addr, &["rollout", "approve", "web"])?;
    wait_tasks(addr, "web", Duration::from_secs(60), "4 running web:2", |tasks| {
        running(tasks).len() == 4 && running(tasks).iter().all(|t| t.spec.container.image == "shoal/web:2")
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(share_of_v2(&entry, 40).await? == 1.0, "after the rollout every connection reaches the new version");
    Ok(())
}
