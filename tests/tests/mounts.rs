//! Mounts with the real `shoal` binary, a real manager and an agent running real containers: a
//! read-only bind mount, a named volume that outlives a task's replacement, a tmpfs of the size
//! asked, `--mount-rm`, a stack's named volume, and bad mounts refused with nothing created. Run
//! `cargo build --workspace --bins` and `deploy/images/build.sh` first.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use shoal_tests::shoal_ok as ok;
use shoal_tests::*;
use shoal_types::Task;

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker").args(args).output().expect("running docker")
}

/// `docker exec CONTAINER sh -c SCRIPT`: its stdout, or an error with its stderr.
fn exec(container: &str, script: &str) -> Result<String> {
    let out = docker(&["exec", container, "sh", "-c", script]);
    ensure!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The container of the one running task of `web` whose image is `image`.
async fn running_container(addr: &str, image: &str, exclude: &[&str]) -> Result<String> {
    let what = format!("one running {image} task");
    let tasks = wait_tasks(addr, "web", Duration::from_secs(60), &what, |tasks| {
        running(tasks)
            .iter()
            .any(|t| t.spec.container.image == image && !exclude.contains(&t.status.container_id.as_str()))
    })
    .await?;
    let task: &Task = running(&tasks)
        .into_iter()
        .find(|t| t.spec.container.image == image && !exclude.contains(&t.status.container_id.as_str()))
        .context("running task")?;
    Ok(task.status.container_id.clone())
}

struct Volume(String);

impl Drop for Volume {
    fn drop(&mut self) {
        // Dropped before the cluster whose containers may still use it: those go first.
        let users = docker_ids(&format!("volume={}", self.0), true);
        if !users.is_empty() {
            let _ = Command::new("docker").arg("rm").arg("-f").args(&users).output();
        }
        let _ = docker(&["volume", "rm", "-f", &self.0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_volume_and_tmpfs_mounts_reach_the_container() -> Result<()> {
    let (_cluster, addr) = single_node().await?;
    let addr = addr.as_str();
    let host_dir = tempfile::tempdir()?;
    std::fs::write(host_dir.path().join("hello.txt"), "from the node\n")?;
    let volume = Volume(format!("shoaltest{:08x}", rand::random::<u32>()));
    let bind = format!("type=bind,source={},target=/data,readonly", host_dir.path().display());
    let named = format!("type=volume,source={},target=/state,volume-label=purpose=test", volume.0);
    let create = [
        "service",
        "create",
        "--name",
        "web",
        "--mount",
        &bind,
        "--mount",
        &named,
        "--mount",
        "type=tmpfs,target=/scratch,tmpfs-size=1m",
        "shoal/busybox:1",
    ];
    ok(addr, &create)?;
    let first = running_container(addr, "shoal/busybox:1", &[]).await?;
    assert_eq!(exec(&first, "cat /data/hello.txt")?, "from the node");
    assert!(exec(&first, "echo no > /data/written").is_err(), "the bind mount is read-only");
    exec(&first, "echo kept > /state/file")?;
    let mounts = docker_inspect(&first, "{{range .Mounts}}{{.Type}}:{{.Destination}} {{end}}");
    for expected in ["bind:/data", "volume:/state", "tmpfs:/scratch"] {
        assert!(mounts.contains(expected), "{expected} in {mounts}");
    }
    let host_mounts = docker_inspect(&first, "{{json .HostConfig.Mounts}}");
    assert!(host_mounts.contains("\"SizeBytes\":1048576"), "{host_mounts}");
    let labels = String::from_utf8_lossy(&docker(&["volume", "inspect", "-f", "{{json .Labels}}", &volume.0]).stdout)
        .to_string();
    assert!(labels.contains("\"purpose\":\"test\""), "the volume was created with its labels: {labels}");
    let pretty = ok(addr, &["service", "inspect", "--pretty", "web"])?;
    assert!(pretty.contains("Mounts:") && pretty.contains("/state"), "{pretty}");

    // A rolling update replaces the task: the named volume keeps what the old task wrote.
    ok(addr, &["service", "update", "--image", "shoal/busybox:2", "web"])?;
    let second = running_container(addr, "shoal/busybox:2", &[]).await?;
    assert_ne!(second, first);
    assert_eq!(exec(&second, "cat /state/file")?, "kept");

    // --mount-rm rolls the service; the new container has no /data.
    ok(addr, &["service", "update", "--mount-rm", "/data", "web"])?;
    let third = running_container(addr, "shoal/busybox:2", &[&second]).await?;
    assert!(exec(&third, "test -e /data/hello.txt").is_err(), "/data is gone");
    assert_eq!(exec(&third, "cat /state/file")?, "kept");
    Ok(())
}

/// Bad mounts are refused with the flag, the value and what is allowed; nothing is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_mounts_are_refused_and_nothing_is_created() -> Result<()> {
    let (_cluster, addr) = single_node().await?;
    let addr = addr.as_str();
    for (mount, expected) in [
        ("type=bind,source=relative,target=/x", "invalid bind source \"relative\": it must be an absolute path"),
        ("type=volume,source=v,target=x", "invalid mount target \"x\": it must be an absolute path"),
        ("type=nfs,target=/x", "invalid mount type \"nfs\" (allowed: bind, volume, tmpfs)"),
        ("type=tmpfs,target=/x,tmpfs-mode=999", "invalid tmpfs-mode \"999\""),
    ] {
        let out = shoal(addr, &["service", "create", "--name", "web", "--mount", mount, "shoal/busybox:1"]);
        // A flag's bad value is a usage error (exit 2, as for every flag); the manager's own
        // check (below) exits 1.
        assert_eq!(out.status.code(), Some(2), "{mount}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("--mount") && err.contains(expected), "{mount}: {err}");
    }
    let out = shoal(
        addr,
        &[
            "service",
            "create",
            "--name",
            "web",
            "--mount",
            "target=/x",
            "--mount",
            "type=tmpfs,target=/x",
            "shoal/busybox:1",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("duplicate mount target /x"), "{}", stderr(&out));
    assert!(list_services(addr).await?.is_empty(), "nothing was created");
    Ok(())
}

/// A stack's named volume is created as `<stack>_<name>` with the stack's label, and kept by
/// `stack rm` (as docker does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_volume_is_named_and_labelled_with_the_stack() -> Result<()> {
    let (_cluster, addr) = single_node().await?;
    let addr = addr.as_str();
    let stack = format!("vt{:06x}", rand::random::<u32>() & 0xff_ffff);
    let volume = Volume(format!("{stack}_data"));
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("stack.yml");
    std::fs::write(
        &file,
        "services:\n  db:\n    image: shoal/busybox:1\n    volumes: [\"data:/var/lib/db\"]\nvolumes:\n  data:\n    labels: {tier: db}\n",
    )?;
    ok(addr, &["stack", "deploy", "-c", &file.display().to_string(), &stack])?;
    let labels = String::from_utf8_lossy(&docker(&["volume", "inspect", "-f", "{{json .Labels}}", &volume.0]).stdout)
        .to_string();
    assert!(labels.contains(&format!("\"com.docker.stack.namespace\":\"{stack}\"")), "{labels}");
    assert!(labels.contains("\"tier\":\"db\""), "{labels}");
    ok(addr, &["stack", "rm", &stack])?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !docker_ids(&format!("label=com.docker.stack.namespace={stack}"), true).is_empty() {
        ensure!(tokio::time::Instant::now() < deadline, "the stack's containers are still there");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(docker(&["volume", "inspect", &volume.0]).status.success(), "stack rm keeps the volume");
    Ok(())
}
