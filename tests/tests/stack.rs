//! `shoal stack …` with the real CLI binary, real managers and agents running real containers:
//! deploy, a redeploy that rolls only the changed service, --prune, rm, and bad input that changes
//! nothing. Run `cargo build --workspace --bins` first so the binaries are current.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use anyhow::{Result, bail};
use shoal_tests::*;
use shoal_types::{Service, UpdateState};

const NAMESPACE_LABEL: &str = "com.docker.stack.namespace";

fn example(file: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples").join(file).display().to_string()
}

/// A stack name no other test (or concurrent run sharing the Docker engine) uses.
fn unique(prefix: &str) -> String {
    format!("{prefix}{}x{}", std::process::id(), rand::random::<u16>())
}

fn fails(out: &Output, code: i32, needle: &str) {
    assert_eq!(out.status.code(), Some(code), "stdout: {}\nstderr: {}", stdout(out), stderr(out));
    assert!(stderr(out).contains(needle), "stderr lacks {needle:?}: {}", stderr(out));
}

async fn service(addr: &str, name: &str) -> Result<Option<Service>> {
    Ok(list_services(addr).await?.into_iter().find(|s| s.spec.name == name))
}

async fn stack_services(addr: &str, stack: &str) -> Result<Vec<Service>> {
    Ok(list_services(addr)
        .await?
        .into_iter()
        .filter(|s| s.spec.labels.get(NAMESPACE_LABEL).map(String::as_str) == Some(stack))
        .collect())
}

fn task_ids(tasks: &[shoal_types::Task]) -> BTreeSet<String> {
    tasks.iter().map(|t| t.id.clone()).collect()
}

/// Polls `docker ps -a` until no container matches `filter`.
async fn wait_no_containers(filter: &str, timeout: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = docker_ids(filter, true);
        if left.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("containers with {filter} still there after {timeout:?}: {left:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stack_deploy_rolls_only_changed_services_then_prunes_and_removes() -> Result<()> {
    let mut cluster = Cluster::start(1).await?;
    cluster.add_agent(&[]).await?;
    cluster.add_agent(&[]).await?;
    let host = cluster.running_addrs()[0].clone();
    let stack = unique("app");
    let (web, worker) = (format!("{stack}_web"), format!("{stack}_worker"));
    let in_stack = format!("label={NAMESPACE_LABEL}={stack}");

    // Deploy: both services created, labelled, and running before the CLI returns.
    let out = ok(&shoal(&host, &["stack", "deploy", "-c", &example("web-worker.yml"), &stack]));
    assert!(out.contains(&format!("Creating service {web}\n")), "{out}");
    assert!(out.contains(&format!("Creating service {worker}\n")), "{out}");
    assert!(out.contains(&format!("verify: Service {web} converged")), "{out}");
    assert!(out.contains(&format!("verify: Service {worker} converged")), "{out}");
    assert_eq!(docker_ids(&in_stack, false).len(), 3, "2 web + 1 worker containers run");
    let services = stack_services(&host, &stack).await?;
    let mut names: Vec<&str> = services.iter().map(|s| s.spec.name.as_str()).collect();
    names.sort();
    assert_eq!(names, [web.as_str(), worker.as_str()]);
    assert!(services.iter().all(|s| s.spec.task.container.labels.get(NAMESPACE_LABEL) == Some(&stack)));

    let ls = ok(&shoal(&host, &["stack", "ls"]));
    assert!(ls.starts_with("NAME") && ls.lines().next().unwrap_or_default().contains("SERVICES"), "{ls}");
    assert!(ls.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == [stack.as_str(), "2"]), "{ls}");
    let table = ok(&shoal(&host, &["stack", "services", &stack]));
    assert!(table.lines().any(|l| l.contains(&web) && l.contains("2/2") && l.contains("*:8080->80/tcp")), "{table}");
    assert!(table.lines().any(|l| l.contains(&worker) && l.contains("1/1")), "{table}");
    assert_eq!(ok(&shoal(&host, &["stack", "services", "-q", &stack])).lines().count(), 2);
    let ps = ok(&shoal(&host, &["stack", "ps", &stack]));
    assert!(
        ps.contains(&format!("{web}.1")) && ps.contains(&format!("{web}.2")) && ps.contains(&format!("{worker}.1")),
        "{ps}"
    );
    assert_eq!(ok(&shoal(&host, &["stack", "ps", "-q", &stack])).lines().count(), 3);

    let worker_before = service(&host, &worker).await?.expect("worker exists");
    let worker_tasks = task_ids(&list_tasks(&host, &worker).await?);
    let web_tasks = task_ids(&list_tasks(&host, &web).await?);
    assert_eq!((worker_tasks.len(), web_tasks.len()), (1, 2));

    // Redeploy with web's image changed: web rolls (start-first, one at a time), the worker is
    // not touched at all.
    let out = ok(&shoal(&host, &["stack", "deploy", "-c", &example("web-worker-v2.yml"), &stack]));
    assert!(out.contains(&format!("Updating service {web} (id: ")), "{out}");
    assert!(out.contains(&format!("Service {worker} is unchanged\n")), "{out}");
    assert!(!out.contains(&format!("Updating service {worker}")), "{out}");
    assert!(out.contains(&format!("verify: Service {web} converged")), "{out}");
    let web_after = service(&host, &web).await?.expect("web exists");
    assert_eq!(web_after.update_status.as_ref().map(|s| s.state), Some(UpdateState::Completed));
    assert_eq!(web_after.spec.task.container.image, "shoal/busybox:2");
    let tasks = list_tasks(&host, &web).await?;
    let now_running = running(&tasks);
    assert_eq!(now_running.len(), 2, "two web tasks run");
    assert!(now_running.iter().all(|t| t.spec.container.image == "shoal/busybox:2" && !web_tasks.contains(&t.id)));
    let worker_after = service(&host, &worker).await?.expect("worker exists");
    assert_eq!(worker_after.version, worker_before.version, "the worker service was not updated");
    assert_eq!(worker_after.spec_version, worker_before.spec_version);
    assert_eq!(task_ids(&list_tasks(&host, &worker).await?), worker_tasks, "the worker's task was not replaced");
    let containers = docker_ids(&in_stack, false);
    assert_eq!(containers.len(), 3, "still 2 web + 1 worker containers");
    let v2 = containers.iter().filter(|id| docker_inspect(id, "{{.Config.Image}}") == "shoal/busybox:2").count();
    assert_eq!(v2, 2, "both web containers run busybox:2");

    // The same files again: nothing to do.
    let out = ok(&shoal(&host, &["stack", "deploy", "-c", &example("web-worker-v2.yml"), &stack]));
    assert!(
        out.contains(&format!("Service {web} is unchanged\n"))
            && out.contains(&format!("Service {worker} is unchanged\n")),
        "{out}"
    );
    assert_eq!(service(&host, &web).await?.expect("web").version, web_after.version);

    // --prune with a file without the worker: the worker goes, with its container.
    let dir = tempfile::tempdir()?;
    let web_only: PathBuf = dir.path().join("web-only.yml");
    let v2_text = std::fs::read_to_string(example("web-worker-v2.yml"))?;
    let cut = v2_text.find("\n  worker:").expect("the example has a worker");
    std::fs::write(&web_only, &v2_text[..=cut])?;
    let out = ok(&shoal(&host, &["stack", "deploy", "--prune", "-c", &web_only.display().to_string(), &stack]));
    assert!(out.contains(&format!("Removing service {worker}\n")), "{out}");
    assert!(out.contains(&format!("Service {web} is unchanged\n")), "{out}");
    assert!(service(&host, &worker).await?.is_none(), "the worker was pruned");
    wait_no_containers(&format!("label=org.shoal.service.name={worker}"), Duration::from_secs(30)).await?;
    assert_eq!(docker_ids(&in_stack, false).len(), 2, "the web containers still run");

    // rm: every service and container of the stack goes.
    let out = ok(&shoal(&host, &["stack", "rm", &stack]));
    // As docker: the stack's default network goes with it.
    assert_eq!(out, format!("Removing service {web}\nRemoving network {stack}_default\n"));
    assert!(stack_services(&host, &stack).await?.is_empty());
    wait_no_containers(&in_stack, Duration::from_secs(30)).await?;
    assert!(!ok(&shoal(&host, &["stack", "ls"])).contains(&stack));
    fails(&shoal(&host, &["stack", "rm", &stack]), 1, &format!("Error: nothing found in stack: {stack}"));
    fails(&shoal(&host, &["stack", "ps", &stack]), 1, &format!("Error: nothing found in stack: {stack}"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_stack_files_and_conflicts_change_nothing() -> Result<()> {
    let cluster = Cluster::start(1).await?;
    let host = cluster.managers[0].addr.clone();
    let stack = unique("bad");
    let dir = tempfile::tempdir()?;
    let write = |name: &str, text: &str| -> Result<String> {
        let path = dir.path().join(name);
        std::fs::write(&path, text)?;
        Ok(path.display().to_string())
    };

    // `replicas: three`: file:line:column, exit 1, no service.
    let three =
        write("three.yml", "services:\n  web:\n    image: shoal/busybox:1\n    deploy:\n      replicas: three\n")?;
    let out = shoal(&host, &["stack", "deploy", "-c", &three, &stack]);
    fails(&out, 1, &format!("Error: {three}:5:17: services.web.deploy.replicas: "));
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    let out = shoal(&host, &["stack", "services", &stack]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    assert!(stderr(&out).contains(&format!("Nothing found in stack: {stack}")), "{}", stderr(&out));

    // A valid service beside an invalid one: the whole file is checked before anything is created.
    let order = write(
        "order.yml",
        "services:\n  a:\n    image: shoal/busybox:1\n  b:\n    image: shoal/busybox:1\n    deploy:\n      update_config:\n        order: sideways\n",
    )?;
    fails(
        &shoal(&host, &["stack", "deploy", "-c", &order, &stack]),
        1,
        &format!("{order}:8:16: services.b.deploy.update_config.order"),
    );
    let required =
        write("required.yml", "services:\n  a:\n    image: shoal/busybox:${SHOAL_TEST_UNSET_TAG:?set the tag}\n")?;
    fails(&shoal(&host, &["stack", "deploy", "-c", &required, &stack]), 1, "set the tag");
    fails(
        &shoal(&host, &["stack", "deploy", "-c", &example("web-worker.yml"), "my stack"]),
        1,
        "invalid stack name \"my stack\"",
    );
    fails(
        &shoal(&host, &["stack", "deploy", "-c", &dir.path().join("missing.yml").display().to_string(), &stack]),
        1,
        "missing.yml: cannot read",
    );
    fails(&shoal(&host, &["stack", "deploy", &stack]), 2, "--compose-file");
    assert!(list_services(&host).await?.is_empty(), "bad input created nothing");

    // A service of the stack's name that is not the stack's: refused before anything changes.
    let web = format!("{stack}_web");
    ok(&shoal(&host, &["service", "create", "-d", "--name", &web, "shoal/busybox:1"]));
    let before = service(&host, &web).await?.expect("created");
    fails(
        &shoal(&host, &["stack", "deploy", "-c", &example("web-worker.yml"), &stack]),
        1,
        &format!("Error: service {web} already exists and is not part of stack {stack}"),
    );
    let after = list_services(&host).await?;
    assert_eq!(after.len(), 1, "the worker was not created");
    assert_eq!(after[0].version, before.version, "the conflicting service was not touched");

    // `stack config` needs no manager; warnings go to stderr; the environment is interpolated.
    let warned = write("warned.yml", "services:\n  web:\n    image: shoal/busybox:${WEB_TAG}\n    build: .\n")?;
    let out = std::process::Command::new(bin("shoal"))
        .args(["--host", "127.0.0.1:1", "stack", "config", "-c", &warned])
        .env("WEB_TAG", "2")
        .output()?;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("image: shoal/busybox:2"), "{}", stdout(&out));
    assert!(stderr(&out).contains("warning: services.web.build: not supported by shoal; ignored"), "{}", stderr(&out));
    Ok(())
}

/// A redeploy whose updates fail: `stack deploy` waits, names each failing service, and exits
/// with the update's code (3 for the first one, which paused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_redeploy_exits_non_zero_naming_the_services() -> Result<()> {
    let mut cluster = Cluster::start(1).await?;
    cluster.add_agent(&[]).await?;
    let host = cluster.running_addrs()[0].clone();
    let stack = unique("fail");
    let dir = tempfile::tempdir()?;
    let file = |image: &str| -> Result<PathBuf> {
        let path = dir.path().join(format!("{}.yml", image.replace(['/', ':'], "_")));
        std::fs::write(
            &path,
            format!(
                "services:\n  web:\n    image: {image}\n    deploy:\n      update_config:\n        failure_action: pause\n        monitor: 3s\n  worker:\n    image: {image}\n    deploy:\n      update_config:\n        failure_action: rollback\n        monitor: 3s\n      rollback_config:\n        monitor: 1s\n"
            ),
        )?;
        Ok(path)
    };
    let good = file("shoal/busybox:1")?;
    ok(&shoal(&host, &["stack", "deploy", "-c", good.to_str().unwrap(), &stack]));
    let bad = file("shoal/fail:1")?;
    let out = shoal(&host, &["stack", "deploy", "-c", bad.to_str().unwrap(), &stack]);
    fails(
        &out,
        3,
        &format!("{stack}_web: service update paused: update paused due to failure or early termination of task"),
    );
    assert!(
        stderr(&out).contains(&format!(
            "{stack}_worker: service rolled back: update rolled back due to failure or early termination of task"
        )),
        "{}",
        stderr(&out)
    );
    let web = service(&host, &format!("{stack}_web")).await?.expect("web exists");
    assert_eq!(web.update_status.map(|s| s.state), Some(UpdateState::Paused));
    let worker = service(&host, &format!("{stack}_worker")).await?.expect("worker exists");
    assert_eq!(worker.update_status.map(|s| s.state), Some(UpdateState::RollbackCompleted));
    assert_eq!(worker.spec.task.container.image, "shoal/busybox:1");
    ok(&shoal(&host, &["stack", "rm", &stack]));
    wait_no_containers(&format!("label={NAMESPACE_LABEL}={stack}"), Duration::from_secs(30)).await?;
    Ok(())
}
