//! Service to service by name, with the real binaries and Docker: one manager and two agents
//! with their own labels. A task of one service reaches another service on the same network by
//! name from the other node (through its own node's proxy, at the service's virtual IP); a
//! service off the network gets no such name; a stack's services reach each other by their
//! names in the stack file; bad input is refused with nothing changed. Run `cargo build
//! --workspace --bins` and `deploy/images/build.sh` first.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use shoal_tests::shoal_ok as ok;
use shoal_tests::*;
use shoal_types::Task;

/// `docker exec CONTAINER sh -c SCRIPT`: its stdout, or an error with its stderr.
fn exec(container: &str, script: &str) -> Result<String> {
    let out = Command::new("docker").args(["exec", container, "sh", "-c", script]).output()?;
    ensure!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The one running task of `service`.
async fn one_running(addr: &str, service: &str) -> Result<Task> {
    let tasks =
        wait_tasks(addr, service, Duration::from_secs(60), "one running task", |t| running(t).len() == 1).await?;
    running(&tasks).first().map(|t| (*t).clone()).context("running task")
}

/// What `wget` in `container` gets from `url`, retried until it answers (the proxies listen on
/// a service's virtual IP once its task reported its ports).
async fn fetch_from(container: &str, url: &str) -> Result<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        // busybox's static wget crashes with -T: the shell's timeout bounds it instead.
        match exec(container, &format!("timeout 5 wget -q -O - {url}")) {
            Ok(body) => return Ok(body),
            Err(e) if tokio::time::Instant::now() > deadline => return Err(e.context(format!("{url} never answered"))),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

fn fails(addr: &str, args: &[&str]) -> Result<String> {
    let out = shoal(addr, args);
    ensure!(!out.status.success(), "shoal {args:?} succeeded: {}", stdout(&out));
    Ok(stderr(&out))
}

/// One manager and two agents labelled side=a and side=b; the manager's address.
async fn two_sides() -> Result<(Cluster, String)> {
    let mut cluster = Cluster::start(1).await?;
    cluster.add_agent(&["side=a"]).await?;
    cluster.add_agent(&["side=b"]).await?;
    let addr = cluster.running_addrs()[0].clone();
    Ok((cluster, addr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_reaches_a_service_on_its_network_by_name_from_another_node() -> Result<()> {
    let (_cluster, addr) = two_sides().await?;
    let addr = addr.as_str();

    ok(addr, &["network", "create", "backend"])?;
    ok(addr, &["network", "create", "--driver", "overlay", "other"])?;
    let listed = ok(addr, &["network", "ls"])?;
    ensure!(listed.contains("backend") && listed.contains("other"), "network ls: {listed}");

    // Bad input first: nothing is created.
    let err = fails(addr, &["service", "create", "--name", "api", "--network", "nope", "shoal/web:1"])?;
    ensure!(err.contains("network nope not found"), "unknown network: {err}");
    let err = fails(addr, &["network", "create", "--driver", "bridge", "x"])?;
    ensure!(err.contains("--driver") && err.contains("bridge"), "bad driver: {err}");
    ensure!(!ok(addr, &["service", "ls", "-q"])?.contains(char::is_alphanumeric), "nothing was created");

    // api (port 80 from the image's EXPOSE, published nowhere) on node a, client on node b.
    ok(
        addr,
        &[
            "service",
            "create",
            "--name",
            "api",
            "--network",
            "backend",
            "--constraint",
            "node.labels.side==a",
            "shoal/web:1",
        ],
    )?;
    ok(
        addr,
        &[
            "service",
            "create",
            "--name",
            "client",
            "--network",
            "backend",
            "--constraint",
            "node.labels.side==b",
            "shoal/busybox:1",
        ],
    )?;
    ok(
        addr,
        &[
            "service",
            "create",
            "--name",
            "outsider",
            "--network",
            "other",
            "--constraint",
            "node.labels.side==b",
            "shoal/busybox:1",
        ],
    )?;
    let api = one_running(addr, "api").await?;
    let client = one_running(addr, "client").await?;
    let outsider = one_running(addr, "outsider").await?;
    ensure!(api.node_id != client.node_id, "api and client run on different nodes");

    let vip = inspect_service(addr, "api")?.virtual_ip;
    ensure!(!vip.is_empty(), "api has a virtual IP");
    let hosts = exec(&client.status.container_id, "cat /etc/hosts")?;
    ensure!(
        hosts.lines().any(|l| l.contains(&vip) && l.contains("api")),
        "client's /etc/hosts names api at {vip}: {hosts}"
    );

    let api_host: String = api.status.container_id.chars().take(12).collect();
    let body = fetch_from(&client.status.container_id, "http://api/").await?;
    ensure!(body == format!("web 1 {api_host}"), "client reached api's task by name: {body:?}");

    // A service on another network has no such name.
    let hosts = exec(&outsider.status.container_id, "cat /etc/hosts")?;
    ensure!(!hosts.contains("api"), "outsider's /etc/hosts does not name api: {hosts}");
    ensure!(
        exec(&outsider.status.container_id, "timeout 5 wget -q -O - http://api/").is_err(),
        "outsider cannot resolve api"
    );

    // A start-first rolling update of api under a request loop in the client: the old task
    // drains, the name reaches the new one, and no request fails.
    let loop_script = "n=0; while [ ! -e /stop ]; do \
        if b=$(timeout 5 wget -q -O - http://api/); then echo \"$b\"; else echo FAILED; fi; n=$((n+1)); done";
    let requests = Command::new("docker")
        .args(["exec", &client.status.container_id, "sh", "-c", loop_script])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    ok(addr, &["service", "update", "--update-order", "start-first", "--image", "shoal/web:2", "api"])?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let body = fetch_from(&client.status.container_id, "http://api/").await?;
        if body.starts_with("web 2 ") {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("after the update api still answers {body:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    exec(&client.status.container_id, "touch /stop")?;
    let answers = String::from_utf8_lossy(&requests.wait_with_output()?.stdout).to_string();
    let (old, new) = (
        answers.lines().filter(|l| l.starts_with("web 1 ")).count(),
        answers.lines().filter(|l| l.starts_with("web 2 ")).count(),
    );
    ensure!(!answers.contains("FAILED"), "a request by name failed during the update:\n{answers}");
    ensure!(
        old > 0 && new > 0 && old + new == answers.lines().count(),
        "answers from both versions only: {old} old, {new} new"
    );

    // A network in use is kept; one that is not goes.
    let err = fails(addr, &["network", "rm", "backend"])?;
    ensure!(err.contains("in use by service") && err.contains("api"), "network rm in use: {err}");
    ok(addr, &["service", "rm", "outsider"])?;
    ok(addr, &["network", "rm", "other"])?;
    ensure!(!ok(addr, &["network", "ls"])?.contains("other"), "other is gone");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stacks_services_reach_each_other_by_their_names_in_the_stack_file() -> Result<()> {
    let (_cluster, addr) = two_sides().await?;
    let addr = addr.as_str();
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("stack.yml");
    std::fs::write(
        &file,
        "services:\n  db:\n    image: shoal/web:1\n    deploy:\n      placement:\n        constraints: [node.labels.side==a]\n  app:\n    image: shoal/busybox:1\n    deploy:\n      placement:\n        constraints: [node.labels.side==b]\n",
    )?;
    let file = file.display().to_string();
    ok(addr, &["stack", "deploy", "-c", &file, "shop"])?;
    let listed = ok(addr, &["network", "ls"])?;
    ensure!(listed.contains("shop_default"), "the stack's default network is made: {listed}");
    let db = one_running(addr, "shop_db").await?;
    let app = one_running(addr, "shop_app").await?;
    let db_host: String = db.status.container_id.chars().take(12).collect();
    for name in ["db", "shop_db"] {
        let body = fetch_from(&app.status.container_id, &format!("http://{name}/")).await?;
        ensure!(body == format!("web 1 {db_host}"), "app reached db as {name}: {body:?}");
    }

    // An undeclared network is refused at its place in the file.
    std::fs::write(dir.path().join("bad.yml"), "services:\n  db:\n    image: shoal/web:1\n    networks: [front]\n")?;
    let err = fails(addr, &["stack", "deploy", "-c", &dir.path().join("bad.yml").display().to_string(), "bad"])?;
    ensure!(err.contains("services.db.networks[0]") && err.contains("front"), "undeclared network: {err}");

    ok(addr, &["stack", "rm", "shop"])?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while ok(addr, &["network", "ls"])?.contains("shop_default") {
        ensure!(tokio::time::Instant::now() < deadline, "stack rm removes the stack's network");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
