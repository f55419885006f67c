//! Bad input against real processes: one clear error, a non-zero exit, and no change of state.

use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use shoal_proto::v1::raft_transport_client::RaftTransportClient;
use shoal_proto::v1::*;
use shoal_tests::*;
use shoal_types::ServiceSpec;

/// Runs shoal-manager expecting it to exit on its own; returns (exit code, stderr).
fn manager_exits(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(bin("shoal-manager"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn shoal-manager");
    for _ in 0..100 {
        if child.try_wait().expect("wait").is_some() {
            let out = child.wait_with_output().expect("output");
            return (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("shoal-manager {args:?} kept running instead of refusing its input");
}

#[test]
fn manager_refuses_foreign_corrupt_and_busy_data_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "not shoal").unwrap();
    let addr = free_addr();
    let (code, err) = manager_exits(&["--data-dir", foreign.to_str().unwrap(), "--listen-addr", &addr]);
    assert_eq!(code, Some(1));
    assert!(err.contains("is not empty but holds no shoal manager state"), "{err}");
    assert_eq!(std::fs::read_dir(&foreign).unwrap().count(), 1, "nothing was written");

    let corrupt = dir.path().join("corrupt");
    std::fs::create_dir(&corrupt).unwrap();
    std::fs::write(corrupt.join("manager.json"), "{ half").unwrap();
    let (code, err) = manager_exits(&["--data-dir", corrupt.to_str().unwrap(), "--listen-addr", &addr]);
    assert_eq!(code, Some(1));
    assert!(err.contains("manager.json is corrupt"), "{err}");
    assert_eq!(std::fs::read_to_string(corrupt.join("manager.json")).unwrap(), "{ half", "left untouched");

    let not_dir = dir.path().join("file");
    std::fs::write(&not_dir, "x").unwrap();
    let (code, err) = manager_exits(&["--data-dir", not_dir.to_str().unwrap(), "--listen-addr", &addr]);
    assert_eq!(code, Some(1));
    assert!(err.contains("is not a directory"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manager_refuses_busy_port_second_process_and_unreachable_join() -> Result<()> {
    let mut cluster = Cluster::start(1).await?;
    let addr = cluster.managers[0].addr.clone();
    let dir = tempfile::tempdir()?;

    let fresh = dir.path().join("fresh");
    let (code, err) = manager_exits(&["--data-dir", fresh.to_str().unwrap(), "--listen-addr", &addr]);
    assert_eq!(code, Some(1));
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
    assert!(std::fs::read_dir(&fresh).map(|d| d.count()).unwrap_or(0) == 0, "nothing written for a busy port");

    // A second process on the same data dir is refused while the first holds it.
    let data_dir = cluster.managers[0].data_dir.clone();
    let (code, err) = manager_exits(&["--data-dir", data_dir.to_str().unwrap(), "--listen-addr", &free_addr()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("another shoal-manager using this data dir"), "{err}");

    // Joining through an address where nothing answers fails fast and writes nothing.
    let dead = free_addr();
    let joiner = dir.path().join("joiner");
    let (code, err) =
        manager_exits(&["--data-dir", joiner.to_str().unwrap(), "--listen-addr", &free_addr(), "--join", &dead]);
    assert_eq!(code, Some(1));
    assert!(err.contains(&format!("cannot reach the manager at {dead}")), "{err}");
    assert!(!joiner.join("manager.json").exists(), "no identity written for a failed join");

    let (code, err) = manager_exits(&["--data-dir", joiner.to_str().unwrap(), "--listen-addr", "not-an-address"]);
    assert_eq!(code, Some(2), "usage error: {err}");
    assert!(err.contains("--listen-addr"), "{err}");
    assert!(cluster.managers[0].is_running(), "the running manager is unaffected");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_refuses_invalid_specs_duplicates_unknown_and_stale_versions() -> Result<()> {
    let cluster = Cluster::start(1).await?;
    let addr = cluster.managers[0].addr.clone();
    let mut client = connect(&addr).await?;
    let web = create_service(&addr, &ServiceSpec::new("web", "shoal/busybox:1")).await?;

    let mut bad = ServiceSpec::new("api", "shoal/busybox:1");
    bad.update_config.max_failure_ratio = 1.5;
    let err = client
        .create_service(CreateServiceRequest { spec_json: serde_json::to_string(&bad)?, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(err.message(), "update_config.max_failure_ratio: 1.5 is outside [0, 1]");

    // Swarm's refusal of a job that has an update or rollback config.
    let mut job = ServiceSpec::new("api", "shoal/busybox:1");
    job.mode = shoal_types::ServiceMode::GlobalJob;
    job.update_config.parallelism = 2;
    let err = client
        .create_service(CreateServiceRequest { spec_json: serde_json::to_string(&job)?, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (tonic::Code::InvalidArgument, "update_config: Jobs may not have an update config")
    );
    job.update_config = Default::default();
    job.rollback_config.monitor = shoal_types::GoDuration::from_secs(1);
    let err = client
        .create_service(CreateServiceRequest { spec_json: serde_json::to_string(&job)?, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (tonic::Code::InvalidArgument, "rollback_config: Jobs may not have a rollback config")
    );

    let err = client
        .create_service(CreateServiceRequest {
            spec_json: r#"{"name":"api","task":{"container":{"imag":"x"}}}"#.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("unknown field `imag`"), "{}", err.message());

    let err = client
        .create_service(CreateServiceRequest {
            spec_json: serde_json::to_string(&ServiceSpec::new("web", "other"))?,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    assert_eq!(err.message(), "service web already exists");

    let err = client.get_service(GetServiceRequest { service: "nope".into() }).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (tonic::Code::NotFound, "service nope not found"));
    let err = client.remove_service(RemoveServiceRequest { service: "nope".into() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    // Optimistic concurrency: the first update wins, the second (same version read) is refused.
    let mut v2 = web.spec.clone();
    v2.task.container.image = "shoal/busybox:2".into();
    let updated: shoal_types::Service = serde_json::from_str(
        &client
            .update_service(UpdateServiceRequest {
                service: "web".into(),
                version: web.version,
                spec_json: serde_json::to_string(&v2)?,
                rollback: false,
                ..Default::default()
            })
            .await?
            .into_inner()
            .service_json,
    )?;
    assert_eq!(updated.previous_spec.as_ref().unwrap().task.container.image, "shoal/busybox:1");
    assert_eq!(updated.revision, 2, "the update is the service's second revision");
    let mut v3 = web.spec.clone();
    v3.task.container.image = "shoal/busybox:3".into();
    let err = client
        .update_service(UpdateServiceRequest {
            service: "web".into(),
            version: web.version,
            spec_json: serde_json::to_string(&v3)?,
            rollback: false,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().starts_with("update out of sequence"), "{}", err.message());

    let services = list_services(&addr).await?;
    assert_eq!(services.len(), 1, "nothing created by refused calls");
    // The accepted update started a rollout (which moves the version on); the stale one changed
    // nothing: the spec is the accepted one and its previous spec is the original.
    assert_eq!(services[0].spec.task.container.image, "shoal/busybox:2", "stale update changed nothing");
    assert_eq!(services[0].previous_spec.as_ref().unwrap().task.container.image, "shoal/busybox:1");
    assert_eq!(services[0].spec_version, updated.spec_version);
    let revisions = client.list_revisions(ListRevisionsRequest { service: "web".into() }).await?.into_inner();
    let history: Vec<String> = revisions
        .revisions_json
        .iter()
        .map(|json| Ok(serde_json::from_str::<shoal_types::Revision>(json)?.spec.task.container.image.clone()))
        .collect::<Result<_>>()?;
    assert_eq!(history, ["shoal/busybox:1", "shoal/busybox:2"], "the refused update made no revision");
    // A change cause over the limit is refused, naming the limit; nothing changes.
    let err = client
        .update_service(UpdateServiceRequest {
            service: "web".into(),
            version: services[0].version,
            spec_json: serde_json::to_string(&v3)?,
            change_cause: "x".repeat(4097),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!((err.code(), err.message()), (tonic::Code::InvalidArgument, "change cause: 4097 bytes, at most 4096"));
    let err = client.list_revisions(ListRevisionsRequest { service: "nope".into() }).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (tonic::Code::NotFound, "service nope not found"));
    assert_eq!(list_services(&addr).await?[0].version, services[0].version);
    Ok(())
}

/// A peer that sends garbage on the raft port gets errors; the manager neither panics nor stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manager_survives_malformed_peer_messages() -> Result<()> {
    let mut cluster = Cluster::start(1).await?;
    let addr = cluster.managers[0].addr.clone();
    let info = cluster_info(&addr).await?;
    let me = info.leader.unwrap().raft_id;
    // A peer with a real manager certificate (raft refuses anyone else) that is no raft member.
    let credentials = node_credentials(&addr, shoal_tls::Role::Manager).await?;
    let mut raft = RaftTransportClient::new(channel_as(&addr, &credentials).await?);
    let garbage = vec![vec![0xff; 64], vec![], b"\x08\x96\x01not raft".to_vec(), vec![0x0a; 10_000]];
    let batches = vec![
        RaftBatch { from: 7, to: me, msgs: garbage.clone() },
        RaftBatch { from: 7, to: me + 1, msgs: garbage.clone() },
    ];
    raft.send(tokio_stream_iter(batches)).await?;
    let chunks = vec![SnapshotChunk { from: 7, to: me, offset: 0, data: vec![0xff; 100], last: true }];
    assert!(raft.install_snapshot(tokio_stream_iter(chunks)).await.is_err(), "garbage snapshot refused");
    let chunks = vec![SnapshotChunk { from: 7, to: me, offset: 5, data: vec![1; 10], last: false }];
    assert!(raft.install_snapshot(tokio_stream_iter(chunks)).await.is_err(), "out-of-order chunk refused");

    assert!(cluster.managers[0].is_running());
    create_service(&addr, &ServiceSpec::new("still-works", "shoal/busybox:1")).await?;
    assert!(!cluster.managers[0].log().contains("panicked"));
    Ok(())
}

fn tokio_stream_iter<T: Send + 'static>(items: Vec<T>) -> impl tonic::IntoStreamingRequest<Message = T> {
    futures_iter(items)
}

fn futures_iter<T: Send + 'static>(items: Vec<T>) -> tokio_stream::Iter<std::vec::IntoIter<T>> {
    tokio_stream::iter(items)
}

#[test]
fn agent_refuses_a_malformed_manager_address() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["nohost", "host:port", "host:0", ":4242"] {
        let out = Command::new(bin("shoal-agent"))
            .args(["--data-dir", dir.path().to_str().unwrap(), "--join", bad])
            .output()
            .expect("run shoal-agent");
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--join") && err.contains("is not HOST:PORT"), "{bad}: {err}");
    }
}

/// With no Docker engine at the given address the agent keeps running, says so, and retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_reports_an_unreachable_docker_engine_and_retries() {
    let cluster = Cluster::start(1).await.unwrap();
    let addr = cluster.managers[0].addr.clone();
    let token = join_token(&addr, "worker").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("agent.log");
    let mut child = Command::new(bin("shoal-agent"))
        .args(["--data-dir", dir.path().join("a").to_str().unwrap(), "--join", &addr, "--token", &token])
        .args(["--docker-host", "unix:///nonexistent/docker.sock"])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn shoal-agent");
    // Until it has said so twice (a retry), however slow the host; it must not exit meanwhile.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (still_running, text) = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let running = child.try_wait().unwrap().is_none();
        if !running || text.matches("cannot reach the Docker engine").count() >= 2 {
            break (running, text);
        }
        if tokio::time::Instant::now() > deadline {
            break (running, text);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(still_running, "the agent exited instead of retrying: {text}");
    let attempts = text.matches("cannot reach the Docker engine").count();
    assert!(attempts >= 2, "the agent reports the engine and retries ({attempts} attempts): {text}");
    assert!(text.contains("/nonexistent/docker.sock"), "{text}");
}
