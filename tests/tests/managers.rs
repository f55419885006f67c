//! Real `shoal-manager` processes on loopback: replication, failover, restarts, membership.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Result;
use shoal_tests::*;
use shoal_types::ServiceSpec;

fn names(services: &[shoal_types::Service]) -> BTreeSet<String> {
    services.iter().map(|s| s.spec.name.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_managers_replicate_fail_over_restart_and_change_membership() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let addrs = cluster.running_addrs();

    // Any manager accepts writes: followers forward them to the leader.
    let mut expected = BTreeSet::new();
    for (i, addr) in addrs.iter().enumerate() {
        let name = format!("svc-{i}");
        create_service(addr, &ServiceSpec::new(&name, "shoal/busybox:1")).await?;
        expected.insert(name);
    }
    for addr in &addrs {
        assert_eq!(names(&list_services(addr).await?), expected, "services seen through {addr}");
    }

    // kill -9 the leader: the others elect a new one and every acknowledged service is there.
    let old = cluster.leader().await?;
    let old_addr = cluster.managers[old].addr.clone();
    cluster.managers[old].kill9();
    let info =
        cluster.wait_for(Duration::from_secs(15), |i| i.leader.as_ref().is_some_and(|l| l.addr != old_addr)).await?;
    assert!(info.raft.term > 2, "a new term began: {info:?}");
    let survivor = cluster.running_addrs()[0].clone();
    assert_eq!(names(&list_services(&survivor).await?), expected);
    create_service(&survivor, &ServiceSpec::new("after-failover", "shoal/busybox:1")).await?;
    expected.insert("after-failover".into());

    // The killed manager restarts from its data dir and catches up.
    cluster.managers[old].restart()?;
    let commit = cluster.wait_for(Duration::from_secs(10), |_| true).await?.raft.commit;
    let caught_up = wait_applied(&old_addr, commit, Duration::from_secs(15)).await?;
    assert_eq!(caught_up.services, expected.len(), "restarted manager's own store has every service");

    // Restart all three: the state survives (and a leader is elected again).
    for m in cluster.managers.iter_mut() {
        m.kill9();
    }
    for m in cluster.managers.iter_mut() {
        m.restart()?;
    }
    cluster.wait_for(Duration::from_secs(20), |i| i.leader.is_some()).await?;
    for addr in cluster.running_addrs() {
        assert_eq!(names(&list_services(&addr).await?), expected, "after full restart, via {addr}");
    }

    // A fourth manager joins, becomes a voter, then is demoted (removed from raft).
    let fourth = cluster.add_manager().await?;
    let fourth_addr = cluster.managers[fourth].addr.clone();
    let info = cluster.wait_for(Duration::from_secs(5), |i| i.raft.voters.len() == 4).await?;
    assert_eq!(info.managers, 4);
    let nodes = list_nodes(&survivor).await?;
    let node = nodes.iter().find(|n| n.manager.as_ref().is_some_and(|m| m.addr == fourth_addr)).expect("4th listed");
    let mut client = connect(&survivor).await?;
    client.demote_node(shoal_proto::v1::DemoteNodeRequest { node: node.id.clone() }).await?;
    cluster.wait_for(Duration::from_secs(10), |i| i.raft.voters.len() == 3 && i.managers == 3).await?;
    // The removed manager notices and exits on its own.
    for _ in 0..50 {
        if !cluster.managers[fourth].is_running() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!cluster.managers[fourth].is_running(), "a removed manager stops");
    // Its node stays listed as a demoted worker until removed, as in Swarm.
    let demoted = list_nodes(&survivor).await?.into_iter().find(|n| n.id == node.id).expect("still listed");
    assert!(demoted.manager.is_none());
    client.remove_node(shoal_proto::v1::RemoveNodeRequest { node: node.id.clone(), force: false }).await?;
    assert!(list_nodes(&survivor).await?.iter().all(|n| n.id != node.id));
    // Writes still commit with three voters.
    create_service(&survivor, &ServiceSpec::new("after-removal", "shoal/busybox:1")).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demotion_that_would_lose_quorum_is_refused() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let leader = cluster.leader().await?;
    let leader_addr = cluster.managers[leader].addr.clone();
    // Stop one follower: two of three voters remain, so removing the other follower would leave
    // one reachable voter out of two.
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    cluster.managers[followers[0]].kill9();
    // Until the leader sees it gone (raft's recent_active lapses), which the quorum check uses.
    let killed_addr = cluster.managers[followers[0]].addr.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let nodes = list_nodes(&leader_addr).await?;
        let seen_gone = nodes.iter().any(|n| {
            n.manager
                .as_ref()
                .is_some_and(|m| m.addr == killed_addr && m.reachability.as_deref() == Some("unreachable"))
        });
        if seen_gone {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the leader never saw the killed follower as unreachable");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let nodes = list_nodes(&leader_addr).await?;
    let target_addr = cluster.managers[followers[1]].addr.clone();
    let target = nodes.iter().find(|n| n.manager.as_ref().is_some_and(|m| m.addr == target_addr)).unwrap();
    let err = connect(&leader_addr)
        .await?
        .demote_node(shoal_proto::v1::DemoteNodeRequest { node: target.id.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("loss of quorum"), "{}", err.message());
    let info = cluster.wait_for(Duration::from_secs(5), |_| true).await?;
    assert_eq!(info.raft.voters.len(), 3, "nothing changed");
    // A manager cannot be removed without demotion.
    let err = connect(&leader_addr)
        .await?
        .remove_node(shoal_proto::v1::RemoveNodeRequest { node: target.id.clone(), force: true })
        .await
        .unwrap_err();
    assert!(err.message().contains("must be demoted"), "{}", err.message());
    Ok(())
}

/// A call through a follower right after the leader is killed: the follower's forward to the
/// dead leader fails (connection refused, or the request dropped from the dying connection's
/// queue), and the follower routes it again to the new leader instead of returning a raw
/// transport error ("operation was canceled") to the caller. Reads always; writes because they
/// never reached the dead leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_through_a_follower_right_after_the_leader_dies_are_routed_to_the_new_leader() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    for round in 0..2 {
        let leader = cluster.leader().await?;
        let follower = (leader + 1) % cluster.managers.len();
        let follower_addr = cluster.managers[follower].addr.clone();
        // The follower holds an open connection to the leader, as it does in use.
        list_services(&follower_addr).await?;
        let mut client = connect(&follower_addr).await?;
        cluster.managers[leader].kill9();
        let info = client.cluster_info(shoal_proto::v1::ClusterInfoRequest { local: false }).await;
        let info = info.map_err(|s| anyhow::anyhow!("round {round}: cluster info through the follower: {s:?}"))?;
        let info: shoal_types::ClusterInfo = serde_json::from_str(&info.get_ref().info_json)?;
        let new_leader = info.leader.expect("answered by a leader");
        assert_ne!(new_leader.addr, cluster.managers[leader].addr, "round {round}: answered by the new leader");
        let name = format!("after-kill-{round}");
        create_service(&follower_addr, &ServiceSpec::new(&name, "shoal/busybox:1"))
            .await
            .map_err(|e| anyhow::anyhow!("round {round}: create through the follower: {e:?}"))?;
        assert!(names(&list_services(&follower_addr).await?).contains(&name));
        cluster.managers[leader].restart()?;
        let commit = cluster.wait_for(Duration::from_secs(10), |_| true).await?.raft.commit;
        let restarted = cluster.managers[leader].addr.clone();
        wait_applied(&restarted, commit, Duration::from_secs(15)).await?;
    }
    Ok(())
}

/// Writers keep creating services through every manager while the leader is killed with -9 again
/// and again; every create that was acknowledged must exist at the end, also after restarting all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_repeated_leader_kills() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let acked = std::sync::Arc::new(parking_lot_free::Acked::default());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let addrs = cluster.running_addrs();
    let mut writers = Vec::new();
    for w in 0..4 {
        let (acked, stop, addrs) = (acked.clone(), stop.clone(), addrs.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let name = format!("w{w}-{n}");
                n += 1;
                let addr = &addrs[n % addrs.len()];
                let spec = ServiceSpec::new(&name, "shoal/busybox:1");
                if tokio::time::timeout(Duration::from_secs(5), create_service(addr, &spec))
                    .await
                    .is_ok_and(|r| r.is_ok())
                {
                    acked.push(name);
                }
            }
        }));
    }
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let leader = cluster.leader().await?;
        let leader_addr = cluster.managers[leader].addr.clone();
        cluster.managers[leader].kill9();
        cluster.wait_for(Duration::from_secs(15), |i| i.leader.as_ref().is_some_and(|l| l.addr != leader_addr)).await?;
        cluster.managers[leader].restart()?;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for w in writers {
        w.await?;
    }
    let acked = acked.take();
    assert!(acked.len() > 20, "the writers made progress: {} acknowledged", acked.len());
    cluster.wait_for(Duration::from_secs(15), |i| i.leader.is_some()).await?;
    let present = names(&list_services(&cluster.running_addrs()[0]).await?);
    let lost: Vec<_> = acked.iter().filter(|n| !present.contains(*n)).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}\n{}", cluster.logs());

    for m in cluster.managers.iter_mut() {
        m.kill9();
    }
    for m in cluster.managers.iter_mut() {
        m.restart()?;
    }
    cluster.wait_for(Duration::from_secs(20), |i| i.leader.is_some()).await?;
    let present = names(&list_services(&cluster.running_addrs()[1]).await?);
    let lost: Vec<_> = acked.iter().filter(|n| !present.contains(*n)).collect();
    assert!(lost.is_empty(), "lost after restarting all managers: {lost:?}");
    Ok(())
}

mod parking_lot_free {
    /// A list shared by writer tasks.
    #[derive(Default)]
    pub struct Acked(std::sync::Mutex<Vec<String>>);

    impl Acked {
        pub fn push(&self, name: String) {
            self.0.lock().expect("not poisoned").push(name);
        }
        pub fn take(&self) -> Vec<String> {
            std::mem::take(&mut *self.0.lock().expect("not poisoned"))
        }
    }
}

/// A manager joining a cluster whose state is larger than one snapshot chunk (1 MiB) receives it
/// in several chunks and catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_manager_catches_up_from_a_multi_chunk_snapshot() -> Result<()> {
    let mut cluster = Cluster::start(1).await?;
    let addr = cluster.running_addrs()[0].clone();
    // 4000 pending tasks (no agents) make a store of a few MiB.
    let mut spec = ServiceSpec::new("big", "shoal/busybox:1");
    spec.mode = shoal_types::ServiceMode::Replicated { replicas: 4000 };
    create_service(&addr, &spec).await?;
    let full = cluster.wait_for(Duration::from_secs(30), |i| i.tasks == 4000).await?;
    let index = cluster.add_manager().await?;
    let joined = cluster.managers[index].addr.clone();
    let info = wait_applied(&joined, full.raft.commit, Duration::from_secs(30)).await?;
    assert_eq!(info.tasks, 4000, "the new manager's own store holds every task");
    let log = cluster.managers[0].log();
    let chunks: usize = log
        .lines()
        .filter(|l| l.contains("sending raft snapshot"))
        .filter_map(|l| {
            l.split("chunks=").nth(1).and_then(|c| c.split_whitespace().next()).and_then(|c| c.parse().ok())
        })
        .max()
        .unwrap_or(0);
    assert!(chunks > 1, "the snapshot went in several chunks (saw {chunks})");
    Ok(())
}

/// SIGTERM is a clean stop: a leader hands leadership over before it exits, every manager exits
/// with status 0 even when all of them are stopped at the same moment, and nothing acknowledged is
/// lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_managers_cleanly_and_keeps_every_write() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let leader = cluster.leader().await?;
    let leader_addr = cluster.managers[leader].addr.clone();
    create_service(&leader_addr, &ServiceSpec::new("before", "shoal/busybox:1")).await?;
    let term_before = cluster_info(&leader_addr).await?.raft.term;

    let status = tokio::task::block_in_place(|| cluster.managers[leader].terminate())?;
    assert!(status.success(), "the leader exits cleanly on SIGTERM: {status}");
    let log = cluster.managers[leader].log_text()?;
    assert!(log.contains("transferring leadership before shutting down"), "no handover logged:\n{log}");
    let info =
        cluster.wait_for(Duration::from_secs(10), |i| i.leader.as_ref().is_some_and(|l| l.addr != leader_addr)).await?;
    assert_eq!(info.raft.term, term_before + 1, "one new term: the leader handed over ({info:?})");
    let survivor = cluster.running_addrs()[0].clone();
    create_service(&survivor, &ServiceSpec::new("after", "shoal/busybox:1")).await?;

    cluster.managers[leader].restart()?;
    cluster.wait_for(Duration::from_secs(20), |i| i.leader.is_some() && i.raft.voters.len() == 3).await?;
    let commit = cluster_info(&survivor).await?.raft.commit;
    wait_applied(&leader_addr, commit, Duration::from_secs(15)).await?;

    // All three at once, as `docker compose down` does: each exits on its own, none hangs on the
    // leadership transfer to a peer that is going away too.
    for m in &cluster.managers {
        m.send_sigterm()?;
    }
    for m in cluster.managers.iter_mut() {
        let status = tokio::task::block_in_place(|| m.wait_exit(Duration::from_secs(10)))?;
        assert!(status.success(), "{status}");
    }
    for m in cluster.managers.iter_mut() {
        m.restart()?;
    }
    cluster.wait_for(Duration::from_secs(20), |i| i.leader.is_some()).await?;
    let expected: BTreeSet<String> = ["before", "after"].into_iter().map(String::from).collect();
    for addr in cluster.running_addrs() {
        assert_eq!(names(&list_services(&addr).await?), expected, "after a clean stop of all, via {addr}");
    }
    Ok(())
}
