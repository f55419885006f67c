//! Cluster security end to end, against real processes: join tokens, mutual TLS, authorisation
//! by certificate role, token rotation, certificate renewal and expiry. Every refusal must be a
//! clear error on the client side, a log line on the manager, and no change to the cluster state.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use shoal_proto::v1::control_client::ControlClient;
use shoal_proto::v1::dispatcher_client::DispatcherClient;
use shoal_proto::v1::*;
use shoal_tests::*;
use shoal_tls::{Credentials, Role};
use shoal_types::{NodeState, ServiceSpec, TaskState};

/// Runs a binary expecting it to exit on its own within 15 s; returns (exit code, stderr).
fn exits(binary: &str, args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(bin(binary))
        .args(args)
        .env_remove("SHOAL_JOIN_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    for _ in 0..300 {
        if let Ok(Some(_)) = child.try_wait() {
            let out = child.wait_with_output().expect("output");
            return (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("output");
    (None, format!("did not exit within 15s: {}", String::from_utf8_lossy(&out.stderr)))
}

/// A fresh agent data dir joining `addr` with `token` (if any); returns (exit code, stderr).
fn agent_join(dir: &std::path::Path, addr: &str, token: Option<&str>) -> (Option<i32>, String) {
    let mut args =
        vec!["--data-dir", dir.to_str().unwrap(), "--join", addr, "--docker-host", "unix:///nonexistent.sock"];
    if let Some(token) = token {
        args.extend(["--token", token]);
    }
    exits("shoal-agent", &args)
}

async fn node_count(addr: &str) -> Result<usize> {
    Ok(list_nodes(addr).await?.len())
}

/// Waits until the manager's log holds `needle` (log lines are written asynchronously).
async fn log_shows(manager: &ManagerProc, needle: &str) -> Result<()> {
    for _ in 0..50 {
        if manager.log().contains(needle) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the manager's log does not show {needle:?}:\n{}", manager.log())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_needs_the_right_token_for_the_right_role_and_cluster() -> Result<()> {
    let cluster = Cluster::start(1).await?;
    let addr = cluster.managers[0].addr.clone();
    let other = Cluster::start(1).await?;
    let worker_token = join_token(&addr, "worker").await?;
    let manager_token = join_token(&addr, "manager").await?;
    ensure!(worker_token != manager_token, "worker and manager tokens differ");
    let nodes_before = node_count(&addr).await?;
    let dir = tempfile::tempdir()?;

    // No token: the manager refuses (nothing secret was sent) and says how to get one.
    let (code, err) = agent_join(&dir.path().join("a1"), &addr, None);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("a join token is required") && err.contains("shoal cluster join-token worker"), "{err}");
    log_shows(&cluster.managers[0], "join refused").await?;

    // A token with this cluster's CA digest but a wrong secret.
    let (digest, _) = worker_token.rsplit_once('-').unwrap();
    let wrong = format!("{digest}-{}", "a".repeat(26));
    let (code, err) = agent_join(&dir.path().join("a2"), &addr, Some(&wrong));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("invalid join token"), "{err}");

    // Something that is not a token at all is refused before connecting.
    let (code, err) = agent_join(&dir.path().join("a3"), &addr, Some("SWMTKN-1-abc-def"));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--token: invalid join token: not a shoal join token"), "{err}");

    // The other cluster's token: its CA digest does not match what this manager presents, so the
    // joining node stops before sending the secret.
    let foreign = join_token(&other.managers[0].addr, "worker").await?;
    let (code, err) = agent_join(&dir.path().join("a4"), &addr, Some(&foreign));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("the join token is for another cluster"), "{err}");
    log_shows(&cluster.managers[0], "TLS handshake refused").await?;

    // A worker token does not make a manager.
    let joiner = dir.path().join("m2");
    let (code, err) = exits(
        "shoal-manager",
        &[
            "--data-dir",
            joiner.to_str().unwrap(),
            "--listen-addr",
            &free_addr(),
            "--join",
            &addr,
            "--token",
            &worker_token,
        ],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("this is the cluster's worker join token; joining as a manager needs the manager token"),
        "{err}"
    );
    assert!(!joiner.join("manager.json").exists(), "no identity written for a refused join");

    // Nothing of the refused joins reached the cluster state or the nodes' data dirs.
    assert_eq!(node_count(&addr).await?, nodes_before);
    for a in ["a1", "a2", "a3", "a4"] {
        assert!(!dir.path().join(a).join("agent.json").exists(), "{a} wrote no identity");
    }
    // The right token joins (the agent then waits for Docker; its node id comes with the certificate).
    let good = dir.path().join("a5");
    let mut agent = Command::new(bin("shoal-agent"))
        .args(["--data-dir", good.to_str().unwrap(), "--join", &addr, "--token", &worker_token])
        .args(["--docker-host", "unix:///nonexistent.sock"])
        .stderr(Stdio::null())
        .spawn()?;
    let mut joined = false;
    for _ in 0..100 {
        if good.join("agent.json").exists() && good.join("tls/key.pem").exists() {
            joined = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(joined, "the agent joined with the worker token");
    let credentials = Credentials::load(&good.join("tls"))?.context("credentials saved")?;
    assert_eq!(credentials.identity()?.role, Role::Worker);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_decide_who_may_call_what() -> Result<()> {
    let mut cluster = Cluster::start(1).await?;
    let addr = cluster.managers[0].addr.clone();
    cluster.add_agent(&[]).await?;
    let agent_node = cluster.agents[0].node_id.clone();
    let mut spec = ServiceSpec::new("web", "shoal/busybox:1");
    spec.mode = shoal_types::ServiceMode::Replicated { replicas: 1 };
    create_service(&addr, &spec).await?;
    let tasks = wait_tasks(&addr, "web", Duration::from_secs(30), "1 running", |t| running(t).len() == 1).await?;
    let task = running(&tasks)[0].clone();
    let dir = tempfile::tempdir()?;

    // A plaintext client on the TLS port gets nowhere; the manager logs why.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5));
    let refused = match plain.connect().await {
        Ok(channel) => ControlClient::new(channel).list_services(ListServicesRequest::default()).await.is_err(),
        Err(_) => true,
    };
    assert!(refused, "a plaintext call must fail");
    log_shows(&cluster.managers[0], "plaintext connection was refused").await?;

    // TLS without a client certificate may only ask to join.
    let anonymous = shoal_tls::PinnedCa::new(None).client_config()?;
    let endpoint = tonic::transport::Endpoint::from_shared(shoal_tls::client::uri(&addr))?;
    let channel = shoal_tls::client::connect(endpoint, anonymous).await?;
    let err = ControlClient::new(channel).list_services(ListServicesRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(err.message().contains("needs a client certificate"), "{}", err.message());

    // Another cluster's admin bundle: its certificate is foreign here, and so is the manager's to it.
    let other = Cluster::start(1).await?;
    let out = shoal(&addr, &["--tls-dir", other.admin_dir().to_str().unwrap(), "service", "ls"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("TLS with the manager at"), "{}", stderr(&out));
    log_shows(&cluster.managers[0], "TLS handshake refused").await?;

    // The forwarded marker counts only on a manager's call: an admin setting it to join a
    // manager under another node id is refused, and no raft member is added.
    let mut join = tonic::Request::new(shoal_proto::v1::JoinManagerRequest {
        node_id: "intruder".into(),
        addr: "127.0.0.1:9".into(),
        hostname: "intruder".into(),
        admin_csr_pem: String::new(),
        unlock_key_sha256: String::new(),
    });
    join.metadata_mut().insert("x-shoal-forwarded", tonic::metadata::MetadataValue::from_static("1"));
    join.metadata_mut()
        .insert("x-shoal-forwarded-for", tonic::metadata::MetadataValue::from_static("manager intruder"));
    let err = connect(&addr).await?.join_manager(join).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("needs that manager's certificate; admin"), "{}", err.message());
    let raft = cluster_info(&addr).await?.raft;
    assert!(raft.voters.len() == 1 && raft.learners.is_empty(), "no raft member was added: {raft:?}");

    // A worker certificate cannot use the control API, through the CLI or otherwise.
    let rogue = node_credentials(&addr, Role::Worker).await?;
    let rogue_id = rogue.identity()?.node_id;
    let rogue_dir = dir.path().join("rogue");
    rogue.save(&rogue_dir)?;
    let out = shoal(&addr, &["--tls-dir", rogue_dir.to_str().unwrap(), "service", "rm", "web"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("needs a manager or admin certificate"), "{}", stderr(&out));
    log_shows(&cluster.managers[0], "call refused").await?;
    let out = shoal(&addr, &["--tls-dir", rogue_dir.to_str().unwrap(), "cluster", "join-token", "manager"]);
    assert_eq!(out.status.code(), Some(1), "a worker cannot read the manager token");

    // Nor can it act for another node: open its session or report its tasks.
    let mut dispatcher = DispatcherClient::new(channel_as(&addr, &rogue).await?);
    let err = dispatcher
        .session(SessionRequest {
            node_id: agent_node.clone(),
            description_json: "{}".into(),
            labels: Default::default(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(err.message().contains(&format!("may not act for node {agent_node}")), "{}", err.message());
    let mut failed = task.status.clone();
    failed.state = TaskState::Failed;
    failed.err = "forged".into();
    let forged = UpdateTaskStatusRequest {
        node_id: agent_node.clone(),
        session_id: String::new(),
        updates: vec![TaskStatusUpdate { task_id: task.id.clone(), status_json: serde_json::to_string(&failed)? }],
    };
    let err = dispatcher.update_task_status(forged).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    // Under its own node id it has no session, and the task is not its own anyway.
    let forged = UpdateTaskStatusRequest {
        node_id: rogue_id.clone(),
        session_id: String::new(),
        updates: vec![TaskStatusUpdate { task_id: task.id.clone(), status_json: serde_json::to_string(&failed)? }],
    };
    assert!(dispatcher.update_task_status(forged).await.is_err());
    // The manager certificate of a joined-but-unused identity cannot be a worker either.
    let manager_creds = node_credentials(&addr, Role::Manager).await?;
    let err = DispatcherClient::new(channel_as(&addr, &manager_creds).await?)
        .heartbeat(HeartbeatRequest { node_id: agent_node.clone(), session_id: String::new() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);

    // Nothing changed: the service is there with its running task, untouched.
    let tasks = list_tasks(&addr, "web").await?;
    let same = tasks.iter().find(|t| t.id == task.id).context("task still there")?;
    assert_eq!((same.status.state, same.status.err.as_str()), (TaskState::Running, ""));
    assert_eq!(list_services(&addr).await?.len(), 1);

    // A removed node's certificate is refused from then on.
    let agent_credentials = Credentials::load(&cluster.agents[0].data_dir.join("tls"))?.context("agent credentials")?;
    cluster.agents[0].kill9();
    let out = shoal(&addr, &["node", "rm", "--force", &agent_node]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = DispatcherClient::new(channel_as(&addr, &agent_credentials).await?)
        .heartbeat(HeartbeatRequest { node_id: agent_node.clone(), session_id: String::new() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(err.message().contains("was removed from the cluster"), "{}", err.message());
    assert!(!list_nodes(&addr).await?.iter().any(|n| n.id == agent_node), "the removed node did not come back");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_joined_with_tokens_survives_token_rotation() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    cluster.add_agent(&[]).await?;
    cluster.add_agent(&[]).await?;
    let addr = cluster.managers[1].addr.clone();
    let old_worker = join_token(&addr, "worker").await?;
    let old_manager = join_token(&addr, "manager").await?;

    let out = shoal(&addr, &["cluster", "join-token", "worker"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("shoal-agent --data-dir DIR --join {addr} --token {old_worker}")),
        "{}",
        stdout(&out)
    );
    let out = shoal(&addr, &["cluster", "join-token", "--rotate", "worker"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("Successfully rotated worker join token."), "{}", stdout(&out));
    let out = shoal(&addr, &["cluster", "join-token", "--rotate", "-q", "manager"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let new_manager = stdout(&out).trim().to_string();
    let new_worker = join_token(&cluster.managers[2].addr, "worker").await?;
    assert_ne!(new_worker, old_worker);
    assert_ne!(new_manager, old_manager);
    assert_eq!(
        join_token(&cluster.managers[0].addr, "manager").await?,
        new_manager,
        "every manager serves the new token"
    );

    // The old tokens no longer join, through any manager.
    let dir = tempfile::tempdir()?;
    let (code, err) = agent_join(&dir.path().join("late"), &cluster.managers[2].addr, Some(&old_worker));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("was it rotated?"), "{err}");
    let (code, err) = exits(
        "shoal-manager",
        &[
            "--data-dir",
            dir.path().join("m4").to_str().unwrap(),
            "--listen-addr",
            &free_addr(),
            "--join",
            &addr,
            "--token",
            &old_manager,
        ],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("was it rotated?"), "{err}");

    // Nodes that joined earlier keep working: both agents stay ready and run a service.
    let mut spec = ServiceSpec::new("rotated", "shoal/busybox:1");
    spec.mode = shoal_types::ServiceMode::Replicated { replicas: 4 };
    create_service(&addr, &spec).await?;
    let tasks = wait_tasks(&addr, "rotated", Duration::from_secs(30), "4 running", |t| running(t).len() == 4).await?;
    let nodes: std::collections::BTreeSet<_> = running(&tasks).iter().map(|t| t.node_id.clone()).collect();
    assert_eq!(nodes.len(), 2, "spread over both agents");
    // An agent restarted after the rotation resumes with its certificate (no token needed).
    cluster.agents[0].restart()?;
    let node = cluster.agents[0].node_id.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ready = list_nodes(&addr).await?.iter().any(|n| n.id == node && n.status.state == NodeState::Ready);
        if ready && cluster.agents[0].log().matches("session open").count() >= 2 {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the restarted agent did not reconnect:\n{}",
            cluster.agents[0].log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And the new token joins a third agent and a fourth manager.
    cluster.add_agent(&[]).await?;
    cluster.add_manager().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_renewed_before_they_expire_and_expired_ones_are_refused() -> Result<()> {
    // A test build knob lets certificates live 6 s (the minimum is otherwise an hour).
    let mut cluster =
        Cluster::start_with_env(1, &["--cert-expiry", "6s"], &[("SHOAL_TEST_MIN_CERT_EXPIRY", "1s")]).await?;
    let addr = cluster.managers[0].addr.clone();
    cluster.add_agent(&[]).await?;
    let serial = |dir: &std::path::Path| -> Result<String> {
        Ok(Credentials::load(&dir.join("tls"))?.context("credentials")?.identity()?.serial)
    };
    let manager_dir = cluster.managers[0].data_dir.clone();
    let agent_dir = cluster.agents[0].data_dir.clone();
    let mut manager_serials = std::collections::BTreeSet::from([serial(&manager_dir)?]);
    let mut agent_serials = std::collections::BTreeSet::from([serial(&agent_dir)?]);
    let node = cluster.agents[0].node_id.clone();

    // Over three lifetimes both certificates are replaced several times, and the agent's node
    // stays ready throughout.
    for _ in 0..36 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        manager_serials.insert(serial(&manager_dir)?);
        agent_serials.insert(serial(&agent_dir)?);
        let nodes = list_nodes(&addr).await?;
        let state = nodes.iter().find(|n| n.id == node).map(|n| n.status.state);
        assert_eq!(state, Some(NodeState::Ready), "the agent stays connected while its certificates turn over");
    }
    assert!(manager_serials.len() >= 3, "manager renewed {} times", manager_serials.len() - 1);
    assert!(agent_serials.len() >= 3, "agent renewed {} times", agent_serials.len() - 1);
    let renewed = cluster.agents[0].log().matches("renewed this node's certificate").count();
    assert!(renewed >= 2, "agent log shows {renewed} renewals");

    // New connections use the renewed certificates: the restarted manager serves with its own
    // (renewed) one, the restarted agent presents its renewed one.
    cluster.managers[0].restart()?;
    cluster.wait_for(Duration::from_secs(20), |i| i.leader.is_some()).await?;
    cluster.agents[0].restart()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while cluster.agents[0].log().matches("session open").count() < 2 {
        ensure!(tokio::time::Instant::now() < deadline, "the agent did not reconnect:\n{}", cluster.agents[0].log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // An agent that was down past its certificate's expiry is refused, and says why.
    cluster.agents[0].kill9();
    tokio::time::sleep(Duration::from_secs(7)).await;
    cluster.agents[0].restart()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !cluster.agents[0].log().contains("certificate expired") {
        ensure!(tokio::time::Instant::now() < deadline, "no expiry reported:\n{}", cluster.agents[0].log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    log_shows(&cluster.managers[0], "certificate has expired").await?;
    let nodes = list_nodes(&addr).await?;
    let state = nodes.iter().find(|n| n.id == node).map(|n| n.status.state);
    assert_eq!(state, Some(NodeState::Down), "the expired agent did not get a session");
    Ok(())
}

/// `shoal --tls-dir DIR ARGS` against `host`, with nothing else to find a bundle in (no
/// SHOAL_TLS_DIR, a HOME without `.shoal`).
fn shoal_with_bundle(host: &str, dir: &std::path::Path, home: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(bin("shoal"))
        .arg("--host")
        .arg(host)
        .arg("--tls-dir")
        .arg(dir)
        .args(args)
        .env_remove("SHOAL_HOST")
        .env_remove("SHOAL_TLS_DIR")
        .env("HOME", home)
        .output()
        .expect("running shoal")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_joined_manager_has_an_admin_bundle_of_its_own() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut cluster = Cluster::start(3).await?;
    let home = tempfile::tempdir()?;
    let first = load_bundle(&cluster.admin_dir())?.identity()?;
    let mut admin_ids = vec![first.node_id.clone()];
    for i in 1..3 {
        let manager = &cluster.managers[i];
        let dir = manager.data_dir.join("admin");
        let mode = |p: &std::path::Path| -> Result<u32> { Ok(std::fs::metadata(p)?.permissions().mode() & 0o777) };
        ensure!(mode(&dir)? == 0o700, "{}: mode {:o}", dir.display(), mode(&dir)?);
        for file in ["ca.pem", "cert.pem", "key.pem"] {
            let path = dir.join(file);
            ensure!(mode(&path)? == 0o600, "{}: mode {:o}", path.display(), mode(&path)?);
        }
        let identity = load_bundle(&dir)?.identity()?;
        ensure!(identity.role == Role::Admin, "{}: a {} certificate", dir.display(), identity.role);
        ensure!(identity.cluster_id == first.cluster_id, "{}: another cluster's bundle", dir.display());
        admin_ids.push(identity.node_id);
        // The CLI on this manager's machine works with this manager's own bundle.
        let out = shoal_with_bundle(&manager.addr, &dir, home.path(), &["node", "ls", "-q"]);
        let listed = ok(&out);
        ensure!(listed.lines().count() == 3, "{} listed:\n{listed}", manager.name);
    }
    admin_ids.sort();
    admin_ids.dedup();
    ensure!(admin_ids.len() == 3, "each manager's bundle is a certificate of its own: {admin_ids:?}");

    // With the manager that initialised the cluster gone, the others' bundles still work (the
    // containerised cluster's partitioned manager1).
    cluster.managers[0].kill9();
    for i in 1..3 {
        let manager = &cluster.managers[i];
        let dir = manager.data_dir.join("admin");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let out = shoal_with_bundle(&manager.addr, &dir, home.path(), &["service", "ls", "-q"]);
            if out.status.success() {
                break;
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "{} with its own bundle after m1 died: {}",
                manager.name,
                stderr(&out)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}
