//! Bounds a typo or a large cluster cannot cross (issue: "nothing a typo, a stranger on the host or
//! a large removal can break"), against real manager processes, the real CLI and, for the restart
//! backoff, a real agent and Docker engine. Run `cargo build --workspace --bins` first.

use std::process::Output;
use std::time::Duration;

use anyhow::{Result, bail};
use shoal_proto::v1::UpdateServiceRequest;
use shoal_tests::*;
use shoal_types::{ServiceMode, ServiceSpec, TaskState};

fn fails(out: &Output, needle: &str) {
    assert_ne!(out.status.code(), Some(0), "expected a failure; stdout: {}", stdout(out));
    assert!(stderr(out).contains(needle), "stderr lacks {needle:?}: {}", stderr(out));
}

fn replicated(name: &str, image: &str, replicas: u64) -> ServiceSpec {
    let mut spec = ServiceSpec::new(name, image);
    spec.mode = ServiceMode::Replicated { replicas };
    spec
}

/// Polls `cond` on the cluster's info until it holds or `timeout` passes.
async fn wait_info(
    addr: &str,
    timeout: Duration,
    what: &str,
    cond: impl Fn(&shoal_types::ClusterInfo) -> bool,
) -> Result<shoal_types::ClusterInfo> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let info = cluster_info(addr).await?;
        if cond(&info) {
            return Ok(info);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for {what}; last info: {info:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_over_the_cluster_limit_are_refused_and_change_nothing() -> Result<()> {
    let cluster = Cluster::start(1).await?;
    let addr = cluster.managers[0].addr.clone();
    let before = cluster_info(&addr).await?;

    let out =
        shoal(&addr, &["service", "create", "-d", "--name", "typo", "--replicas", "1000000000", "shoal/busybox:1"]);
    fails(&out, "replicas: 1000000000 is above the limit 100000; raise it with shoal cluster update --max-replicas");
    let after = cluster_info(&addr).await?;
    assert_eq!((after.services, after.tasks, after.raft.commit), (0, 0, before.raft.commit), "nothing written");

    // The limit is the cluster's: it cannot drop under a service that exists, nor rise past the ceiling.
    ok(&shoal(&addr, &["service", "create", "-d", "--name", "web", "--replicas", "3", "shoal/busybox:1"]));
    fails(
        &shoal(&addr, &["cluster", "update", "--max-replicas", "2"]),
        "max_replicas: 2 is below the 3 replicas of service web",
    );
    fails(
        &shoal(&addr, &["cluster", "update", "--max-replicas", "2000000"]),
        "max_replicas: 2000000 is above the ceiling 1000000",
    );
    fails(&shoal(&addr, &["cluster", "update", "--max-replicas", "0"]), "0 is below the minimum of 1");
    assert_eq!(stdout(&shoal(&addr, &["cluster", "update", "--max-replicas", "4"])), "Cluster updated.\n");
    fails(&shoal(&addr, &["service", "scale", "-d", "web=5"]), "replicas: 5 is above the limit 4");
    ok(&shoal(&addr, &["service", "scale", "-d", "web=4"]));
    wait_info(&addr, Duration::from_secs(20), "4 tasks", |i| i.tasks == 4).await?;

    // A change over the raft entry limit (2 MB of node labels) is refused with its size and the
    // limit, and nothing is written.
    let node = list_nodes(&addr).await?.into_iter().next().expect("the manager's node");
    let mut spec = node.spec.clone();
    spec.labels.insert("big".into(), "x".repeat(2_000_000));
    let before = cluster_info(&addr).await?.raft.commit;
    let err = connect(&addr)
        .await?
        .update_node(shoal_proto::v1::UpdateNodeRequest {
            node: node.id.clone(),
            version: node.version,
            spec_json: serde_json::to_string(&spec)?,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().starts_with("the change is too large: "), "{}", err.message());
    assert!(err.message().ends_with("bytes encoded, at most 1572864"), "{}", err.message());
    assert_eq!(cluster_info(&addr).await?.raft.commit, before);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_image_tag_is_refused_from_the_cli_and_from_a_stack_file() -> Result<()> {
    let cluster = Cluster::start(1).await?;
    let addr = cluster.managers[0].addr.clone();
    let before = cluster_info(&addr).await?;

    let out = shoal(&addr, &["service", "create", "-d", "--name", "x", "shoal/busybox:"]);
    fails(&out, "task.container.image: \"shoal/busybox:\" is not a valid image reference: has an empty tag");
    let out = shoal(&addr, &["service", "create", "-d", "--name", "x", "shoal/Busybox:1"]);
    fails(&out, "repository names must be lowercase");

    // docker's behaviour for an unset variable (a warning, an empty value) is kept, and the
    // reference it leaves is refused before anything is written.
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("stack.yml");
    std::fs::write(&file, "services:\n  web:\n    image: shoal/busybox:${SHOAL_TEST_UNSET_TAG}\n")?;
    let out = std::process::Command::new(bin("shoal"))
        .args(["--host", &addr, "stack", "deploy", "-d", "-c"])
        .arg(&file)
        .arg("tagless")
        .env("SHOAL_TLS_DIR", admin_bundle(&addr).expect("bundle"))
        .env_remove("SHOAL_TEST_UNSET_TAG")
        .output()?;
    fails(&out, "SHOAL_TEST_UNSET_TAG");
    fails(&out, "has an empty tag");
    let after = cluster_info(&addr).await?;
    assert_eq!((after.services, after.raft.commit), (0, before.raft.commit), "nothing written");
    Ok(())
}

/// Removing a service whose cleanup is more than one raft entry can hold: it completes, and the
/// control loop goes on scheduling (before, the cleanup was retried forever and nothing else
/// was decided again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_larger_than_one_entry_completes_and_scheduling_continues() -> Result<()> {
    const REPLICAS: usize = 60_000;
    let cluster = Cluster::start(1).await?;
    let addr = cluster.managers[0].addr.clone();
    // No agents: every task stays pending, and removing them is the reaper's work alone.
    create_service(&addr, &replicated("huge", "shoal/busybox:1", REPLICAS as u64)).await?;
    wait_info(&addr, Duration::from_secs(300), "60,000 tasks", |i| i.tasks == REPLICAS).await?;
    // 60,000 task ids are about 1.7 MB: over the 1.5 MiB entry limit in one action.
    ok(&shoal(&addr, &["service", "rm", "huge"]));
    wait_info(&addr, Duration::from_secs(300), "every task deleted", |i| i.tasks == 0 && i.services == 0).await?;

    // Scheduling continues: a new service's task is created and the scheduler decides about it.
    create_service(&addr, &replicated("after", "shoal/busybox:1", 1)).await?;
    wait_tasks(&addr, "after", Duration::from_secs(30), "a scheduling decision", |tasks| {
        tasks.len() == 1 && tasks[0].status.state == TaskState::Pending && !tasks[0].status.err.is_empty()
    })
    .await?;
    let log = cluster.managers[0].log();
    assert!(!log.contains("too large"), "no write was over the limit:\n{log}");
    Ok(())
}

/// One service with a 1 MB environment, updated three times (its history holds four such specs):
/// listing, inspecting and ps all still work, for it and for everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_works_beside_a_service_with_a_1mb_env() -> Result<()> {
    let cluster = Cluster::start(1).await?;
    let addr = cluster.managers[0].addr.clone();
    create_service(&addr, &replicated("small", "shoal/busybox:1", 1)).await?;
    let mut big = replicated("big", "shoal/busybox:1", 1);
    big.task.container.env = vec![format!("BIG={}", "x".repeat(1_000_000))];
    create_service(&addr, &big).await?;
    let mut client = connect(&addr).await?;
    for round in 0..3 {
        // The updater's status writes move the service's version too, so an update read just
        // before one is refused as out of sequence: read again and retry, as the message says.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let current = get_service(&mut client, "big").await?;
            let mut spec = current.spec.clone();
            spec.task.container.env.push(format!("ROUND={round}"));
            let request = UpdateServiceRequest {
                service: "big".into(),
                version: current.version,
                spec_json: serde_json::to_string(&spec)?,
                rollback: false,
                ..Default::default()
            };
            match client.update_service(request).await {
                Ok(_) => break,
                Err(e) if e.code() == tonic::Code::FailedPrecondition && attempts < 20 => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
    let ls = ok(&shoal(&addr, &["service", "ls"]));
    assert!(ls.contains(" big ") && ls.contains(" small "), "{ls}");
    let inspect = ok(&shoal(&addr, &["service", "inspect", "big"]));
    assert!(inspect.len() > 2_000_000, "the spec and the previous spec come back: {} bytes", inspect.len());
    let history = ok(&shoal(&addr, &["rollout", "history", "--format", "json", "big"]));
    assert!(history.len() > 4_000_000, "the whole history comes back: {} bytes", history.len());
    ok(&shoal(&addr, &["service", "ps", "small"]));
    ok(&shoal(&addr, &["service", "ps", "big"]));
    ok(&shoal(&addr, &["service", "ls", "-q"]));

    // A spec over 1 MiB is refused with its size and the limit, and nothing is written.
    let before = cluster_info(&addr).await?;
    let mut huge = replicated("huge", "shoal/busybox:1", 1);
    huge.task.container.env = vec![format!("BIG={}", "x".repeat(1_100_000))];
    let err = create_service(&addr, &huge).await.unwrap_err();
    assert!(format!("{err:#}").contains("is above the limit of 1048576 bytes"), "{err:#}");
    assert_eq!(cluster_info(&addr).await?.raft.commit, before.raft.commit);
    Ok(())
}

/// A mistyped image: every task fails in create. The restart backoff holds each replacement back
/// (5 s, 10 s, 20 s, 40 s, …), so the failing service costs a handful of raft entries a minute
/// (before: hundreds a second), and `service ps` says when the next try comes and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_costs_a_handful_of_raft_entries_a_minute() -> Result<()> {
    let mut cluster = Cluster::start(1).await?;
    cluster.add_agent(&[]).await?;
    let addr = cluster.managers[0].addr.clone();
    ok(&shoal(&addr, &["service", "create", "-d", "--name", "typo", "shoal/busybox:99"]));
    // From the acknowledged create on: every entry after it is the failing service's cost.
    let start = cluster_info(&addr).await?.raft.commit;
    let started = tokio::time::Instant::now();
    // The first failure shows up as a restart waiting out its delay.
    let deadline = started + Duration::from_secs(30);
    loop {
        let ps = stdout(&shoal(&addr, &["service", "ps", "--no-trunc", "typo"]));
        if ps.contains("restarting in") {
            assert!(ps.contains("shoal/busybox:99"), "{ps}");
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("no restart backoff shown in service ps:\n{ps}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep_until(started + Duration::from_secs(60)).await;
    let end = cluster_info(&addr).await?.raft.commit;
    let entries = end - start;
    println!("raft entries in the first minute of a missing image: {entries}");
    assert!(entries <= 20, "{entries} raft entries in a minute");
    let tasks = list_tasks(&addr, "typo").await?;
    assert!(tasks.iter().all(|t| t.status.state != TaskState::Running), "nothing ran");
    assert!(tasks.len() >= 2, "it was retried: {tasks:?}");
    Ok(())
}

/// `ListTasks` pages through the store's indexes: a service of 12,000 tasks comes in pages of
/// at most the limit, in id order, none twice, none missing; the desired-state filter is
/// applied on the server; a state that does not exist is refused naming it; `service ps`
/// pages on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_tasks_pages_through_a_large_service_and_filters_by_desired_state() -> Result<()> {
    let cluster = Cluster::start(1).await?;
    let addr = cluster.managers[0].addr.clone();
    create_service(&addr, &replicated("big", "shoal/busybox:1", 12_000)).await?;
    create_service(&addr, &replicated("small", "shoal/busybox:1", 3)).await?;
    wait_info(&addr, Duration::from_secs(120), "12,003 tasks stored", |i| i.tasks == 12_003).await?;
    let mut client = connect(&addr).await?;
    let page = |after: String, limit: u32, desired: &[&str]| shoal_proto::v1::ListTasksRequest {
        service: "big".into(),
        limit,
        after,
        desired_states: desired.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let (mut ids, mut after, mut pages) = (Vec::<String>::new(), String::new(), 0);
    loop {
        let reply = client.list_tasks(page(after, 5_000, &[])).await?.into_inner();
        assert!(reply.tasks_json.len() <= 5_000, "a page of {}", reply.tasks_json.len());
        pages += 1;
        for json in &reply.tasks_json {
            let task: shoal_types::Task = serde_json::from_str(json)?;
            assert_eq!(task.service_name, "big");
            ids.push(task.id);
        }
        if reply.next_after.is_empty() {
            break;
        }
        after = reply.next_after;
    }
    assert_eq!((pages, ids.len()), (3, 12_000));
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in id order, none twice");

    let running = client.list_tasks(page(String::new(), 0, &["running"])).await?.into_inner();
    assert_eq!((running.tasks_json.len(), running.next_after.as_str()), (12_000, ""));
    let shutdown = client.list_tasks(page(String::new(), 0, &["Shutdown"])).await?.into_inner();
    assert!(shutdown.tasks_json.is_empty());
    let err = client.list_tasks(page(String::new(), 0, &["runing"])).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("desired state \"runing\" is not a task state (allowed: new,"), "{}", err.message());

    let out = shoal(&addr, &["service", "ps", "-q", "big"]);
    assert_eq!(ok(&out).lines().count(), 12_000);
    Ok(())
}
