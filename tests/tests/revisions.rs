//! Revision history and rollback to any revision (issue 23, items 1 and 2), with the real `shoal`
//! binary, a real manager and an agent running real containers. Run `cargo build --workspace
//! --bins` and `deploy/images/build.sh` first.

use std::time::Duration;

use anyhow::{Result, ensure};
use shoal_tests::*;
use shoal_types::{Revision, Service};

/// Runs the CLI and fails with its output unless it succeeded.
fn ok(addr: &str, args: &[&str]) -> Result<String> {
    let out = shoal(addr, args);
    ensure!(out.status.success(), "shoal {args:?} failed: {}{}", stdout(&out), stderr(&out));
    Ok(stdout(&out))
}

fn inspect(addr: &str) -> Result<Service> {
    let text = ok(addr, &["service", "inspect", "web"])?;
    let mut services: Vec<Service> = serde_json::from_str(&text)?;
    Ok(services.remove(0))
}

async fn wait_image(addr: &str, image: &str) -> Result<()> {
    let what = format!("2 tasks running {image}");
    wait_tasks(addr, "web", Duration::from_secs(60), &what, |tasks| {
        let running = running(tasks);
        running.len() == 2 && running.iter().all(|t| t.spec.container.image == image)
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_records_every_spec_change_and_rollback_goes_to_any_revision() -> Result<()> {
    let mut cluster = Cluster::start(1).await?;
    cluster.add_agent(&[]).await?;
    let addr = cluster.running_addrs()[0].clone();
    let addr = addr.as_str();

    ok(
        addr,
        &[
            "service",
            "create",
            "--name",
            "web",
            "--replicas",
            "2",
            "--change-cause",
            "first release",
            "shoal/busybox:1",
        ],
    )?;
    ok(addr, &["service", "update", "--image", "shoal/busybox:2", "web"])?;
    ok(addr, &["service", "update", "--label-add", "tier=front", "-d", "web"])?;
    ok(addr, &["service", "update", "--env-add", "MODE=fast", "web"])?;
    ok(addr, &["service", "rollback", "web"])?;
    wait_image(addr, "shoal/busybox:2").await?;

    // Five revisions: the create, three updates, the rollback; each with its cause (the command
    // line when none was given), newest last.
    let table = ok(addr, &["rollout", "history", "web"])?;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 6, "{table}");
    assert!(lines[0].starts_with("REVISION") && lines[0].contains("CHANGE-CAUSE"), "{table}");
    assert!(lines[1].starts_with("1 ") && lines[1].contains("first release") && lines[1].ends_with("shoal/busybox:1"));
    assert!(lines[2].starts_with("2 ") && lines[2].contains("service update --image shoal/busybox:2 web"), "{table}");
    assert!(lines[5].starts_with("5 ") && lines[5].contains("service rollback web"), "{table}");
    let json = ok(addr, &["rollout", "history", "--format", "json", "web"])?;
    let revisions: Vec<Revision> = serde_json::from_str(&json)?;
    assert_eq!(revisions.iter().map(|r| r.number).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert!(revisions.iter().all(|r| r.created_by.starts_with("admin:")), "{revisions:?}");
    // The rollback went back to revision 3's spec (the label, no env).
    assert_eq!(*revisions[4].spec, *revisions[2].spec);
    let detail = ok(addr, &["rollout", "history", "--revision", "2", "web"])?;
    assert!(
        detail.contains("- \"image\": \"shoal/busybox:1\",") && detail.contains("+ \"image\": \"shoal/busybox:2\","),
        "{detail}"
    );

    // Back to the first image, as a new revision; a plain rollback afterwards toggles back.
    let before = inspect(addr)?;
    ok(addr, &["service", "rollback", "--to-revision", "1", "web"])?;
    wait_image(addr, "shoal/busybox:1").await?;
    let service = inspect(addr)?;
    assert_eq!(service.spec, *revisions[0].spec);
    assert_eq!(service.previous_spec.as_ref(), Some(&before.spec));
    assert_eq!(service.revision, 6);
    let status = service.update_status.expect("the rollback's status");
    assert_eq!(status.state, shoal_types::UpdateState::RollbackCompleted, "{status:?}");
    ok(addr, &["rollout", "undo", "-q", "web"])?;
    wait_image(addr, "shoal/busybox:2").await?;
    assert_eq!(inspect(addr)?.revision, 7);

    // An unknown revision: one clear line, non-zero, nothing changed.
    let before = inspect(addr)?;
    let out = shoal(addr, &["service", "rollback", "--to-revision", "99", "web"]);
    assert!(!out.status.success());
    assert_eq!(stderr(&out).trim(), "Error: revision 99 not found for service web (kept: 1-7)", "{}", stderr(&out));
    let out = shoal(addr, &["rollout", "history", "--revision", "99", "web"]);
    assert!(!out.status.success() && stderr(&out).contains("revision 99 not found for service web (kept: 1-7)"));
    assert_eq!(inspect(addr)?.version, before.version);

    // The history is bounded by the cluster's setting, from the next change on.
    ok(addr, &["cluster", "update", "--revision-history-limit", "3"])?;
    ok(addr, &["service", "update", "--label-add", "n=1", "-d", "web"])?;
    let revisions: Vec<Revision> =
        serde_json::from_str(&ok(addr, &["rollout", "history", "--format", "json", "web"])?)?;
    assert_eq!(revisions.iter().map(|r| r.number).collect::<Vec<_>>(), [6, 7, 8]);
    Ok(())
}
