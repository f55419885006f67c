//! A stack as one unit, with real managers, agents and containers: a deploy is one raft entry
//! (refused on the server, it writes nothing), stack revisions and `stack rollback`, atomic
//! deploys that roll every service back when one fails, rollouts ordered by `depends_on`, and a
//! leader killed during an atomic rollout.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use shoal_proto::v1::{ListRolloutsRequest, ListStackRevisionsRequest};
use shoal_tests::*;
use shoal_types::stack::{GroupState, MemberState, StackRevision};
use shoal_types::{Rollout, Service};

const NAMESPACE_LABEL: &str = "com.docker.stack.namespace";

/// A stack name no other test (or concurrent run sharing the Docker engine) uses.
fn unique(prefix: &str) -> String {
    format!("{prefix}{}x{}", std::process::id(), rand::random::<u16>())
}

fn write(dir: &tempfile::TempDir, name: &str, yaml: &str) -> Result<PathBuf> {
    let path = dir.path().join(name);
    std::fs::write(&path, yaml)?;
    Ok(path)
}

async fn stack_services(addr: &str, stack: &str) -> Result<Vec<Service>> {
    let mut found: Vec<Service> = list_services(addr)
        .await?
        .into_iter()
        .filter(|s| s.spec.labels.get(NAMESPACE_LABEL).map(String::as_str) == Some(stack))
        .collect();
    found.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    Ok(found)
}

async fn revisions(addr: &str, stack: &str) -> Result<Vec<StackRevision>> {
    let mut client = connect(addr).await?;
    let reply = client.list_stack_revisions(ListStackRevisionsRequest { stack: stack.into() }).await?.into_inner();
    reply.revisions_json.iter().map(|j| Ok(serde_json::from_str(j)?)).collect()
}

async fn rollouts(addr: &str, service: &str) -> Result<Vec<Rollout>> {
    let mut client = connect(addr).await?;
    let reply = client.list_rollouts(ListRolloutsRequest { service: service.into() }).await?.into_inner();
    reply.rollouts_json.iter().map(|j| Ok(serde_json::from_str(j)?)).collect()
}

/// The images of the service's tasks meant to run, once they all run that image (or a timeout).
async fn wait_images(addr: &str, service: &str, image: &str, replicas: usize) -> Result<()> {
    wait_tasks(addr, service, Duration::from_secs(60), &format!("{replicas} running tasks of {image}"), |tasks| {
        let live: Vec<_> = running(tasks);
        live.len() == replicas && live.iter().all(|t| t.spec.container.image == image)
    })
    .await
    .map(|_| ())
}

/// Three services; `images` gives each one's image, `extra` is added under `services:`.
fn three(images: [&str; 3], monitor: &str, extra: &str) -> String {
    let service = |name: &str, image: &str| {
        format!(
            "  {name}:\n    image: {image}\n    deploy:\n      replicas: 1\n      update_config:\n        monitor: {monitor}\n        failure_action: rollback\n      rollback_config:\n        monitor: 1s\n"
        )
    };
    format!(
        "services:\n{}{}{}{extra}",
        service("web", images[0]),
        service("api", images[1]),
        service("worker", images[2])
    )
}

/// A deploy the leader refuses while writing it (its last service publishes a port another
/// service holds, found only when the entry is applied) writes nothing: no service, no revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_refused_on_the_server_writes_nothing() -> Result<()> {
    let mut cluster = Cluster::start(1).await?;
    cluster.add_agent(&[]).await?;
    let host = cluster.running_addrs()[0].clone();
    let stack = unique("half");
    let port = 20_000 + rand::random::<u16>() % 20_000;
    ok(&shoal(
        &host,
        &[
            "service",
            "create",
            "--detach",
            "--name",
            &unique("squat"),
            "--publish",
            &format!("{port}:80"),
            "shoal/web:1",
        ],
    ));
    let dir = tempfile::tempdir()?;
    let yaml = format!(
        "services:\n  a:\n    image: shoal/busybox:1\n  b:\n    image: shoal/busybox:1\n  c:\n    image: shoal/web:1\n    ports: [\"{port}:80\"]\n"
    );
    let file = write(&dir, "stack.yml", &yaml)?;
    let out = shoal(&host, &["stack", "deploy", "-c", file.to_str().unwrap(), &stack]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out)
            .contains(&format!("stack {stack}: nothing was changed: port {port}/tcp is already published by service")),
        "{}",
        stderr(&out)
    );
    assert!(stack_services(&host, &stack).await?.is_empty(), "a and b were not created");
    assert!(revisions(&host, &stack).await?.is_empty());
    let out = shoal(&host, &["stack", "history", &stack]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&format!("stack {stack} has no revision")), "{}", stderr(&out));
    Ok(())
}

/// Two deploys make two stack revisions; `stack rollback` takes every service back to the
/// first as one stack rollout (a service added since stays unless --prune); bad rollbacks are
/// refused with one line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stack_rollback_after_two_deploys_brings_every_service_back() -> Result<()> {
    let mut cluster = Cluster::start(1).await?;
    cluster.add_agent(&[]).await?;
    let host = cluster.running_addrs()[0].clone();
    let stack = unique("hist");
    let dir = tempfile::tempdir()?;
    let v1 = write(&dir, "v1.yml", &three(["shoal/busybox:1"; 3], "1s", ""))?;
    let v2 = write(
        &dir,
        "v2.yml",
        &three(
            ["shoal/busybox:2", "shoal/busybox:2", "shoal/busybox:1"],
            "1s",
            "  extra:\n    image: shoal/busybox:1\n",
        ),
    )?;
    let out = shoal(&host, &["stack", "rollback", &stack]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("stack {stack} has no revision: there is nothing to roll back")),
        "{}",
        stderr(&out)
    );

    ok(&shoal(&host, &["stack", "deploy", "--change-cause", "first", "-c", v1.to_str().unwrap(), &stack]));
    let out = shoal(&host, &["stack", "rollback", &stack]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("stack {stack} has no earlier revision to roll back to (it is at revision 1)")),
        "{}",
        stderr(&out)
    );
    ok(&shoal(&host, &["stack", "deploy", "--change-cause", "second", "-c", v2.to_str().unwrap(), &stack]));
    // The same files again change nothing: no revision either.
    let again = ok(&shoal(&host, &["stack", "deploy", "-c", v2.to_str().unwrap(), &stack]));
    assert!(again.contains(&format!("Service {stack}_web is unchanged")), "{again}");
    let history = ok(&shoal(&host, &["stack", "history", &stack]));
    let lines: Vec<&str> = history.lines().collect();
    assert_eq!(lines.len(), 3, "{history}");
    assert!(lines[0].starts_with("REVISION") && lines[0].contains("SERVICES-CHANGED"), "{history}");
    assert!(lines[1].starts_with("1 ") && lines[1].contains("first"), "{history}");
    assert!(lines[2].starts_with("2 ") && lines[2].contains("second"), "{history}");
    assert!(lines[2].contains(&format!("{stack}_api,{stack}_extra,{stack}_web")), "{history}");

    let out = ok(&shoal(&host, &["stack", "rollback", &stack]));
    assert!(out.contains(&format!("Stack {stack} is at revision 3 (rollback to stack revision 1)")), "{out}");
    assert!(out.contains(&format!("Stack rollout {stack}-3 completed")), "{out}");
    for name in ["web", "api", "worker"] {
        wait_images(&host, &format!("{stack}_{name}"), "shoal/busybox:1", 1).await?;
    }
    let services = stack_services(&host, &stack).await?;
    assert!(services.iter().any(|s| s.spec.name == format!("{stack}_extra")), "extra stays without --prune");
    let newest = revisions(&host, &stack).await?.pop().context("revision 3")?;
    assert_eq!(newest.number, 3);
    assert_eq!(newest.changed(), [format!("{stack}_api"), format!("{stack}_web")]);
    let group = newest.rollout.context("a stack rollout")?;
    assert_eq!(group.state, GroupState::Completed);

    // Back to revision 1 with --prune: the service added since goes.
    let out = ok(&shoal(&host, &["stack", "rollback", "--to-revision", "1", "--prune", &stack]));
    assert!(out.contains(&format!("Removing service {stack}_extra")), "{out}");
    assert_eq!(stack_services(&host, &stack).await?.len(), 3);
    let out = shoal(&host, &["stack", "rollback", "--to-revision", "9", &stack]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&format!("revision 9 not found for stack {stack} (kept: 1-4)")), "{}", stderr(&out));
    ok(&shoal(&host, &["stack", "rm", &stack]));
    Ok(())
}

/// An atomic deploy whose one service's new image fails: all three services go back to their
/// images before the deploy (their tasks run them again), the service the deploy created is
/// removed, and the deploy exits 4 naming the failing service and task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_atomic_deploy_rolls_all_its_services_back_when_one_fails() -> Result<()> {
    let mut cluster = Cluster::start(1).await?;
    cluster.add_agent(&[]).await?;
    let host = cluster.running_addrs()[0].clone();
    let stack = unique("atom");
    let dir = tempfile::tempdir()?;
    let v1 = write(&dir, "v1.yml", &three(["shoal/busybox:1"; 3], "2s", ""))?;
    ok(&shoal(&host, &["stack", "deploy", "-c", v1.to_str().unwrap(), &stack]));
    let v2 = write(
        &dir,
        "v2.yml",
        &three(["shoal/busybox:2", "shoal/fail:1", "shoal/busybox:2"], "3s", "  fresh:\n    image: shoal/busybox:2\n"),
    )?;
    let out = shoal(&host, &["stack", "deploy", "--atomic", "-c", v2.to_str().unwrap(), &stack]);
    assert_eq!(out.status.code(), Some(4), "stdout: {}\nstderr: {}", stdout(&out), stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("stack {stack} rolled back: stack rollout rolled back: service {stack}_api: task ")),
        "{err}"
    );
    assert!(err.contains("non-zero exit (3)"), "{err}");
    for name in ["web", "api", "worker"] {
        let service = format!("{stack}_{name}");
        wait_images(&host, &service, "shoal/busybox:1", 1).await?;
        let spec = inspect_service(&host, &service)?.spec;
        assert_eq!(spec.task.container.image, "shoal/busybox:1", "{service}");
    }
    let names: Vec<String> = stack_services(&host, &stack).await?.into_iter().map(|s| s.spec.name).collect();
    assert!(!names.contains(&format!("{stack}_fresh")), "the created service is removed: {names:?}");
    let group = revisions(&host, &stack).await?.pop().and_then(|r| r.rollout).context("group")?;
    assert_eq!(group.state, GroupState::RollbackCompleted);
    assert_eq!(group.failed_service, format!("{stack}_api"));
    assert!(!group.failed_task.is_empty());
    // `rollout ls` shows the group and its members.
    let listed = ok(&shoal(&host, &["rollout", "ls"]));
    assert!(listed.contains(&format!("{stack}-2")), "{listed}");
    ok(&shoal(&host, &["stack", "rm", &stack]));
    Ok(())
}

/// With --atomic, a service rolls out only after those it depends on completed: each rollout
/// record starts after its dependency's ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_atomic_deploy_rolls_out_in_depends_on_order() -> Result<()> {
    let mut cluster = Cluster::start(1).await?;
    cluster.add_agent(&[]).await?;
    let host = cluster.running_addrs()[0].clone();
    let stack = unique("order");
    let dir = tempfile::tempdir()?;
    let deps = |image: &str| {
        format!(
            "x-atomic: true\nservices:\n  web:\n    image: {image}\n    depends_on: [api]\n    deploy: {{update_config: {{monitor: 1s}}}}\n  api:\n    image: {image}\n    depends_on: [db]\n    deploy: {{update_config: {{monitor: 1s}}}}\n  db:\n    image: {image}\n    deploy: {{update_config: {{monitor: 1s}}}}\n"
        )
    };
    let v1 = write(&dir, "v1.yml", &deps("shoal/busybox:1"))?;
    let out = ok(&shoal(&host, &["stack", "deploy", "-c", v1.to_str().unwrap(), &stack]));
    assert!(out.contains(&format!("Stack rollout {stack}-1 completed")), "{out}");
    let v2 = write(&dir, "v2.yml", &deps("shoal/busybox:2"))?;
    // The dry run prints the group's order and changes nothing.
    let plan = ok(&shoal(&host, &["stack", "deploy", "--dry-run", "-c", v2.to_str().unwrap(), &stack]));
    assert!(plan.contains("As one stack rollout: if a service fails, or all have not completed within 5m"), "{plan}");
    assert!(plan.contains(&format!("  1. {stack}_db\n  2. {stack}_api\n  3. {stack}_web\n")), "{plan}");
    assert_eq!(revisions(&host, &stack).await?.len(), 1);
    let out = ok(&shoal(&host, &["stack", "deploy", "-c", v2.to_str().unwrap(), &stack]));
    assert!(out.contains(&format!("{stack}_web: waiting for {stack}_api")), "{out}");
    assert!(out.contains(&format!("Stack rollout {stack}-2 completed")), "{out}");

    let record = |name: &str| {
        let host = host.clone();
        let service = format!("{stack}_{name}");
        async move {
            let found = rollouts(&host, &service).await?;
            found.into_iter().last().with_context(|| format!("a rollout of {service}"))
        }
    };
    let (db, api, web) = (record("db").await?, record("api").await?, record("web").await?);
    let ended = |r: &Rollout| r.finished_at.with_context(|| format!("{} ended", r.id));
    ensure!(api.started_at >= ended(&db)?, "api started at {} before db ended at {:?}", api.started_at, db.finished_at);
    ensure!(
        web.started_at >= ended(&api)?,
        "web started at {} before api ended at {:?}",
        web.started_at,
        api.finished_at
    );
    // The group's record says the same.
    let group = revisions(&host, &stack).await?.pop().and_then(|r| r.rollout).context("group")?;
    let member =
        |name: &str| group.members.iter().find(|m| m.name == format!("{stack}_{name}")).cloned().context("member");
    let (db_m, api_m) = (member("db")?, member("api")?);
    assert_eq!(api_m.depends_on, [format!("{stack}_db")]);
    ensure!(api_m.started_at >= db_m.finished_at, "{api_m:?} {db_m:?}");
    assert!(group.members.iter().all(|m| m.state == MemberState::Completed), "{group:?}");

    // A cycle is refused before anything is written, naming it.
    let cycle = write(
        &dir,
        "cycle.yml",
        "services:\n  a:\n    image: shoal/busybox:1\n    depends_on: [b]\n  b:\n    image: shoal/busybox:1\n    depends_on: [a]\n",
    )?;
    let out = shoal(&host, &["stack", "deploy", "--atomic", "-c", cycle.to_str().unwrap(), &stack]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("a cycle: a -> b -> a"), "{}", stderr(&out));
    assert_eq!(revisions(&host, &stack).await?.len(), 2);
    ok(&shoal(&host, &["stack", "rm", &stack]));
    Ok(())
}

/// The leader is killed (-9) while an atomic deploy's group rolls out; the new leader carries on
/// with the same group, which rolls back as a whole when its failing member fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_during_an_atomic_rollout_leaves_the_group_to_roll_back_whole() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    cluster.add_agent(&[]).await?;
    let leader = cluster.leader().await?;
    // Deployed through a follower, which forwards to the leader.
    let survivor = (0..3).find(|i| *i != leader).expect("another manager");
    let host = cluster.managers[survivor].addr.clone();
    let stack = unique("kill");
    let dir = tempfile::tempdir()?;
    let v1 = write(&dir, "v1.yml", &three(["shoal/busybox:1"; 3], "2s", ""))?;
    ok(&shoal(&host, &["stack", "deploy", "-c", v1.to_str().unwrap(), &stack]));
    // api's new version fails after a second; the others' are fine.
    let v2 = write(&dir, "v2.yml", &three(["shoal/busybox:2", "shoal/fail:1", "shoal/busybox:2"], "4s", ""))?;
    ok(&shoal(&host, &["stack", "deploy", "--atomic", "--detach", "-c", v2.to_str().unwrap(), &stack]));
    // Killed while the group rolls out (api's new task fails a second after it starts).
    let group = revisions(&host, &stack).await?.pop().and_then(|r| r.rollout).context("group")?;
    ensure!(group.state == GroupState::Updating, "the group ended before the kill: {group:?}");
    cluster.managers[leader].kill9();
    let other = host.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let group = loop {
        if let Ok(mut kept) = revisions(&other, &stack).await
            && let Some(group) = kept.pop().and_then(|r| r.rollout)
            && group.state.is_final()
        {
            break group;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the group did not end after the leader was killed");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(group.state, GroupState::RollbackCompleted, "{group:?}");
    assert_eq!(group.failed_service, format!("{stack}_api"));
    for name in ["web", "api", "worker"] {
        wait_images(&other, &format!("{stack}_{name}"), "shoal/busybox:1", 1).await?;
    }
    Ok(())
}
