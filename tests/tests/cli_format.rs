//! The real `shoal` binary against real managers: `stack deploy -c -` (stack file from standard
//! input), `--filter` on `service ls` and `node ls`, and Go-template `--format`. Run
//! `cargo build --workspace --bins` first so the binaries are current.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use anyhow::Result;
use shoal_tests::*;

fn fails(out: &Output, code: i32, needle: &str) {
    assert_eq!(out.status.code(), Some(code), "stdout: {}\nstderr: {}", stdout(out), stderr(out));
    assert!(stderr(out).contains(needle), "stderr lacks {needle:?}: {}", stderr(out));
}

/// Runs `shoal` against `host` in `dir`, writing `input` to its standard input.
fn shoal_stdin(host: &str, dir: &Path, args: &[&str], input: &str) -> Output {
    let mut cmd = Command::new(bin("shoal"));
    cmd.arg("--host").arg(host).args(args).env_remove("SHOAL_HOST").env_remove("SHOAL_TLS_DIR").current_dir(dir);
    if let Some(bundle) = admin_bundle(host) {
        cmd.env("SHOAL_TLS_DIR", bundle);
    }
    let mut child =
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("running shoal");
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(input.as_bytes()).expect("writing stdin");
    drop(stdin);
    child.wait_with_output().expect("waiting for shoal")
}

const STDIN_STACK: &str = "\
services:
  web:
    image: shoal/busybox:1
    env_file: conf/web.env
    deploy:
      replicas: 2
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stack_deploy_reads_the_file_from_stdin_and_resolves_env_files_in_the_current_directory() -> Result<()> {
    let mut cluster = Cluster::start(1).await?;
    let host = cluster.running_addrs()[0].clone();
    let dir = tempfile::tempdir()?;
    std::fs::create_dir(dir.path().join("conf"))?;
    std::fs::write(dir.path().join("conf/web.env"), "FROM_ENV_FILE=yes\n")?;

    // No agents: -d returns once the service exists.
    let out = shoal_stdin(&host, dir.path(), &["stack", "deploy", "-d", "-c", "-", "fromstdin"], STDIN_STACK);
    let text = ok(&out);
    assert!(text.contains("Creating service fromstdin_web\n"), "{text}");
    let services = list_services(&host).await?;
    let web = services.iter().find(|s| s.spec.name == "fromstdin_web").expect("created");
    assert_eq!(web.spec.task.container.env, ["FROM_ENV_FILE=yes"]);
    assert_eq!(web.spec.mode, shoal_types::ServiceMode::Replicated { replicas: 2 });

    // Errors name the file <stdin>; nothing is deployed.
    let bad = "services:\n  web:\n    image: shoal/busybox:1\n    deploy:\n      replicas: three\n";
    let out = shoal_stdin(&host, dir.path(), &["stack", "deploy", "-d", "-c", "-", "badstdin"], bad);
    fails(&out, 1, "<stdin>:5:17: services.web.deploy.replicas");
    assert!(!list_services(&host).await?.iter().any(|s| s.spec.name.starts_with("badstdin_")));

    // A relative env_file that is not in the current directory is reported as such.
    let elsewhere = tempfile::tempdir()?;
    let out = shoal_stdin(&host, elsewhere.path(), &["stack", "config", "-c", "-"], STDIN_STACK);
    fails(&out, 1, "<stdin>:4:15: services.web.env_file: cannot read ");

    // Standard input can be read once.
    let out = shoal_stdin(&host, dir.path(), &["stack", "config", "-c", "-", "-c", "-"], STDIN_STACK);
    fails(&out, 1, "-c - (read the stack file from standard input) may be given only once");
    Ok(())
}
