//! Secrets and configs with the real binaries and Docker: created from a file and from standard
//! input, listed and inspected without their values, mounted into a service's containers with
//! the owner and mode asked, refused removal while in use, `--secret-rm` rolling the service and
//! taking the file away (from the container and the node), and bad input refused with nothing
//! created. Run `cargo build --workspace --bins` and `deploy/images/build.sh` first.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use shoal_tests::shoal_ok as ok;
use shoal_tests::*;
use shoal_types::Task;

/// `docker exec CONTAINER sh -c SCRIPT`: its stdout, or an error with its stderr.
fn exec(container: &str, script: &str) -> Result<String> {
    let out = Command::new("docker").args(["exec", container, "sh", "-c", script]).output()?;
    ensure!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The running task of `web` whose container is not one of `exclude`.
async fn running_task(addr: &str, exclude: &[&str]) -> Result<Task> {
    let tasks = wait_tasks(addr, "web", Duration::from_secs(60), "a new running task", |tasks| {
        running(tasks).iter().any(|t| !exclude.contains(&t.status.container_id.as_str()))
    })
    .await?;
    running(&tasks).into_iter().find(|t| !exclude.contains(&t.status.container_id.as_str())).cloned().context("task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_configs_reach_containers_as_files_and_nowhere_else() -> Result<()> {
    let (cluster, addr) = single_node().await?;
    let addr = addr.as_str();
    let dir = tempfile::tempdir()?;
    let value = format!("pw-{:016x}", rand::random::<u64>());
    let secret_file = dir.path().join("password");
    std::fs::write(&secret_file, &value)?;
    ok(addr, &["secret", "create", "--label", "app=db", "db_password", &secret_file.display().to_string()])?;

    // A config from standard input.
    let mut child = Command::new(bin("shoal"))
        .args(["--host", addr, "config", "create", "app_conf", "-"])
        .env("SHOAL_TLS_DIR", cluster.admin_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child.stdin.take().context("stdin")?.write_all(b"listen = 8080\n")?;
    let out = child.wait_with_output()?;
    ensure!(out.status.success(), "config create -: {}", stderr(&out));

    let listed = ok(addr, &["secret", "ls"])?;
    ensure!(listed.starts_with("ID") && listed.contains("db_password"), "{listed}");
    let inspected = ok(addr, &["secret", "inspect", "db_password"])?;
    ensure!(inspected.contains("\"app\": \"db\"") || inspected.contains("\"app\":\"db\""), "{inspected}");
    let encoded = base64_of(&value);
    ensure!(!inspected.contains(&value) && !inspected.contains(&encoded), "inspect shows no value: {inspected}");
    ensure!(ok(addr, &["config", "ls", "-q"])?.lines().count() == 1, "one config");

    ok(
        addr,
        &[
            "service",
            "create",
            "--name",
            "web",
            "--secret",
            "source=db_password,target=pw,uid=1000,gid=1000,mode=0400",
            "--config",
            "source=app_conf,target=/etc/app.conf",
            "shoal/busybox:1",
        ],
    )?;
    let first = running_task(addr, &[]).await?;
    let container = first.status.container_id.clone();
    ensure!(exec(&container, "cat /run/secrets/pw")? == value, "the secret's value in the file");
    ensure!(exec(&container, "stat -c '%u %g %a' /run/secrets/pw")? == "1000 1000 400", "owner and mode asked");
    ensure!(exec(&container, "cat /etc/app.conf")? == "listen = 8080");
    ensure!(exec(&container, "stat -c '%u %g %a' /etc/app.conf")? == "0 0 444", "a config's defaults");
    ensure!(exec(&container, "echo x > /run/secrets/pw").is_err(), "read-only");
    // On the node, the files sit in a directory only root enters, on a tmpfs.
    let node_dir = std::path::PathBuf::from(format!("/dev/shm/shoal-{}", cluster.agents[0].node_id));
    let task_dir = node_dir.join(&first.id);
    ensure!(task_dir.is_dir(), "{} holds the task's files", task_dir.display());
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&node_dir)?.permissions()) & 0o777;
    ensure!(mode == 0o700, "{} is {mode:o}", node_dir.display());

    // In use: refused, naming the service; nothing removed.
    let out = shoal(addr, &["secret", "rm", "db_password"]);
    ensure!(out.status.code() == Some(1), "{}", stderr(&out));
    ensure!(stderr(&out).contains("secret db_password is in use by service web"), "{}", stderr(&out));
    ensure!(ok(addr, &["secret", "ls", "-q"])?.lines().count() == 1);

    // --secret-rm rolls the service: the new container has no file; the old task's files are
    // gone from the node.
    ok(addr, &["service", "update", "--secret-rm", "db_password", "web"])?;
    let second = running_task(addr, &[&container]).await?;
    ensure!(exec(&second.status.container_id, "test -e /run/secrets/pw").is_err(), "the secret is gone");
    ensure!(exec(&second.status.container_id, "cat /etc/app.conf")? == "listen = 8080", "the config stays");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while task_dir.exists() {
        ensure!(tokio::time::Instant::now() < deadline, "{} was not removed when its task ended", task_dir.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The previous spec still uses it (a rollback would bring it back): still refused.
    let out = shoal(addr, &["secret", "rm", "db_password"]);
    ensure!(stderr(&out).contains("still in the previous spec of service web"), "{}", stderr(&out));
    ok(addr, &["service", "rm", "web"])?;
    ok(addr, &["secret", "rm", "db_password"])?;
    ensure!(ok(addr, &["secret", "ls", "-q"])?.is_empty());

    // The value was never logged, by the manager or the agent.
    for (who, log) in [("manager", cluster.managers[0].log()), ("agent", cluster.agents[0].log())] {
        ensure!(!log.contains(&value) && !log.contains(&encoded), "the {who}'s log holds the secret's value");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_secrets_and_references_are_refused_and_nothing_is_created() -> Result<()> {
    let (_cluster, addr) = single_node().await?;
    let addr = addr.as_str();
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("v");
    std::fs::write(&file, "value")?;
    let file = file.display().to_string();

    let missing = dir.path().join("nope").display().to_string();
    let out = shoal(addr, &["secret", "create", "x", &missing]);
    ensure!(
        out.status.code() == Some(1) && stderr(&out).contains(&format!("secret file {missing}")),
        "{}",
        stderr(&out)
    );
    let big = dir.path().join("big");
    std::fs::write(&big, vec![b'x'; 600 * 1024])?;
    let out = shoal(addr, &["secret", "create", "x", &big.display().to_string()]);
    ensure!(
        stderr(&out).contains("larger than 512000 bytes (500 KiB, Swarm's limit for a secret)"),
        "{}",
        stderr(&out)
    );
    let out = shoal(addr, &["secret", "create", "bad!", &file]);
    ensure!(out.status.code() == Some(2) && stderr(&out).contains("invalid name \"bad!\""), "{}", stderr(&out));
    ok(addr, &["secret", "create", "a", &file])?;
    let out = shoal(addr, &["secret", "create", "a", &file]);
    ensure!(out.status.code() == Some(1) && stderr(&out).contains("secret a already exists"), "{}", stderr(&out));

    for (flag, expected, code) in [
        ("nosuch", "task.container.secrets[0]: secret nosuch not found", 1),
        ("source=a,mode=999", "invalid mode \"999\": expected an octal file mode from 0 to 0777", 2),
        ("source=a,target=../x", "target \"../x\": must be a file path without '.', '..' or empty parts", 2),
    ] {
        let out = shoal(addr, &["service", "create", "--name", "web", "--secret", flag, "shoal/busybox:1"]);
        ensure!(out.status.code() == Some(code), "{flag}: {}", stderr(&out));
        ensure!(stderr(&out).contains(expected), "{flag}: {}", stderr(&out));
    }
    let out = shoal(
        addr,
        &["service", "create", "--name", "web", "--secret", "a", "--secret", "source=a,target=a", "shoal/busybox:1"],
    );
    ensure!(out.status.code() == Some(1), "{}", stderr(&out));
    ensure!(stderr(&out).contains("duplicate target /run/secrets/a"), "{}", stderr(&out));
    ensure!(ok(addr, &["service", "ls", "-q"])?.is_empty(), "no service was created");
    Ok(())
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// A stack with a database whose volume and password secret are used: the stack's secrets and
/// configs are created as `<stack>_<key>` before its services, an external one must exist (or
/// nothing is created), and `stack rm` removes what the stack created but not the external one
/// (nor the volume, as docker keeps volumes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_with_a_database_gets_its_volume_secret_and_config() -> Result<()> {
    let (_cluster, addr) = single_node().await?;
    let addr = addr.as_str();
    let stack = format!("db{:06x}", rand::random::<u32>() & 0xff_ffff);
    let dir = tempfile::tempdir()?;
    let value = format!("pw-{:016x}", rand::random::<u64>());
    std::fs::write(dir.path().join("password.txt"), &value)?;
    std::fs::write(dir.path().join("db.conf"), "max_connections = 10\n")?;
    let file = dir.path().join("stack.yml");
    std::fs::write(
        &file,
        "services:\n  db:\n    image: shoal/busybox:1\n    volumes: [\"dbdata:/var/lib/db\"]\n    secrets:\n      - source: db_password\n        target: password\n        uid: '999'\n        mode: 0400\n      - shared_key\n    configs: [db_conf]\nvolumes:\n  dbdata:\nsecrets:\n  db_password: {file: ./password.txt}\n  shared_key: {external: true}\nconfigs:\n  db_conf: {file: db.conf}\n",
    )?;
    let file = file.display().to_string();

    // The external secret does not exist: refused, nothing created.
    let out = shoal(addr, &["stack", "deploy", "-c", &file, &stack]);
    ensure!(out.status.code() == Some(1), "{}", stderr(&out));
    ensure!(
        stderr(&out).contains("secret shared_key (external, secrets.shared_key of the stack file) not found"),
        "{}",
        stderr(&out)
    );
    ensure!(ok(addr, &["secret", "ls", "-q"])?.is_empty() && ok(addr, &["config", "ls", "-q"])?.is_empty());
    ensure!(list_services(addr).await?.is_empty(), "no service was created");

    let key_file = dir.path().join("key");
    std::fs::write(&key_file, "shared")?;
    ok(addr, &["secret", "create", "shared_key", &key_file.display().to_string()])?;
    let out = ok(addr, &["stack", "deploy", "-c", &file, &stack])?;
    ensure!(out.contains(&format!("Creating secret {stack}_db_password")), "{out}");
    ensure!(out.contains(&format!("Creating config {stack}_db_conf")), "{out}");
    let secrets = ok(addr, &["secret", "ls"])?;
    ensure!(secrets.contains(&format!("{stack}_db_password")) && secrets.contains("shared_key"), "{secrets}");

    let service = format!("{stack}_db");
    let tasks =
        wait_tasks(addr, &service, Duration::from_secs(60), "the db running", |t| running(t).len() == 1).await?;
    let container = running(&tasks)[0].status.container_id.clone();
    ensure!(exec(&container, "cat /run/secrets/password")? == value);
    ensure!(exec(&container, "stat -c '%u %a' /run/secrets/password")? == "999 400");
    ensure!(exec(&container, "cat /run/secrets/shared_key")? == "shared");
    ensure!(exec(&container, "cat /db_conf")? == "max_connections = 10");
    exec(&container, "echo rows > /var/lib/db/table")?;
    let volume = format!("{stack}_dbdata");
    let mounts =
        Command::new("docker").args(["inspect", "-f", "{{range .Mounts}}{{.Name}} {{end}}", &container]).output()?;
    ensure!(String::from_utf8_lossy(&mounts.stdout).contains(&volume), "the stack's volume is mounted");

    // A second deploy keeps what exists.
    let again = ok(addr, &["stack", "deploy", "-c", &file, &stack])?;
    ensure!(!again.contains("Creating secret"), "{again}");

    let removed = ok(addr, &["stack", "rm", &stack])?;
    ensure!(removed.contains(&format!("Removing secret {stack}_db_password")), "{removed}");
    ensure!(removed.contains(&format!("Removing config {stack}_db_conf")), "{removed}");
    ensure!(ok(addr, &["secret", "ls", "-q"])?.lines().count() == 1, "the external secret stays");
    ensure!(ok(addr, &["config", "ls", "-q"])?.is_empty());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !docker_ids(&format!("label=com.docker.stack.namespace={stack}"), true).is_empty() {
        ensure!(tokio::time::Instant::now() < deadline, "the stack's containers are still there");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kept = Command::new("docker").args(["volume", "rm", &volume]).output()?;
    ensure!(kept.status.success(), "stack rm keeps the volume: {}", String::from_utf8_lossy(&kept.stderr));
    Ok(())
}
