//! Rough edges of the real `shoal` binary against real managers (issue 21): stack files with
//! keys shoal does not support yet, `--with-registry-auth`, `node update`'s output, help,
//! completion and man pages. Run `cargo build --workspace --bins` first so the binaries are
//! current.

use anyhow::Result;
use shoal_tests::*;

fn fails(out: &std::process::Output, code: i32, needle: &str) {
    assert_eq!(out.status.code(), Some(code), "stdout: {}\nstderr: {}", stdout(out), stderr(out));
    assert!(stderr(out).contains(needle), "stderr lacks {needle:?}: {}", stderr(out));
}

/// A stack file's networks are made with the stack (`<stack>_default` for the services that
/// name none); an external network that does not exist refuses the deploy and nothing is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stack_networks_are_made_with_the_stack() -> Result<()> {
    let cluster = Cluster::start(1).await?;
    let host = cluster.managers[0].addr.clone();
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("db.yml");
    std::fs::write(
        &path,
        "services:\n  db:\n    image: shoal/busybox:1\n  web:\n    image: shoal/busybox:1\n    \
         networks: [front, shared]\nnetworks:\n  front:\n    labels: {tier: web}\n  shared:\n    external: true\n",
    )?;
    let file = path.display().to_string();

    let out = shoal(&host, &["stack", "deploy", "-d", "-c", &file, "app"]);
    fails(
        &out,
        1,
        "network shared (external, networks.shared of the stack file) not found: create it first (shoal network create shared)",
    );
    assert!(list_services(&host).await?.is_empty(), "nothing was created");
    assert!(!ok(&shoal(&host, &["network", "ls"])).contains("app_"), "no network was made");

    ok(&shoal(&host, &["network", "create", "shared"]));
    let out = shoal(&host, &["stack", "deploy", "-d", "-c", &file, "app"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let networks = ok(&shoal(&host, &["network", "ls", "--format", "json"]));
    let networks: Vec<shoal_types::DataObject> = serde_json::from_str(&networks)?;
    let names: Vec<&str> = networks.iter().map(|n| n.spec.name.as_str()).collect();
    assert_eq!(names, ["app_default", "app_front", "shared"]);
    assert_eq!(networks[1].spec.labels.get("tier").map(String::as_str), Some("web"));
    assert_eq!(networks[1].spec.labels.get("com.docker.stack.namespace").map(String::as_str), Some("app"));
    let services = list_services(&host).await?;
    let on = |name: &str| services.iter().find(|s| s.spec.name == name).map(|s| s.spec.task.networks.clone());
    assert_eq!(on("app_db"), Some(vec!["app_default".to_string()]));
    assert_eq!(on("app_web"), Some(vec!["app_front".to_string(), "shared".to_string()]));
    assert!(services.iter().all(|s| !s.virtual_ip.is_empty()), "each service on a network has a virtual IP");

    // The stack's networks go with it; an external one stays.
    ok(&shoal(&host, &["stack", "rm", "app"]));
    let left = ok(&shoal(&host, &["network", "ls", "-q"]));
    assert_eq!(left.lines().count(), 1, "only the external network is left: {left}");
    Ok(())
}

/// `--with-registry-auth` is accepted by create, update and deploy, changes nothing and says so
/// once on stderr; `node update` prints the node as it was named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_flags_and_outputs_scripts_rely_on() -> Result<()> {
    let cluster = Cluster::start(1).await?;
    let host = cluster.managers[0].addr.clone();
    let note = "note: --with-registry-auth has no effect";

    let out = shoal(&host, &["service", "create", "-d", "--with-registry-auth", "--name", "reg", "shoal/busybox:1"]);
    let id = ok(&out);
    assert_eq!(stderr(&out).matches(note).count(), 1, "said once: {}", stderr(&out));
    let out = shoal(&host, &["service", "update", "-d", "--with-registry-auth", "--replicas", "2", "reg"]);
    ok(&out);
    assert_eq!(stderr(&out).matches(note).count(), 1, "said once: {}", stderr(&out));
    let services = list_services(&host).await?;
    assert_eq!(services.len(), 1);
    assert_eq!(services[0].id, id.trim());
    assert_eq!(services[0].spec.mode, shoal_types::ServiceMode::Replicated { replicas: 2 });
    let out = shoal(&host, &["service", "ls"]);
    assert!(!stderr(&out).contains(note), "only where the flag is given: {}", stderr(&out));

    let dir = tempfile::tempdir()?;
    let file = dir.path().join("s.yml");
    std::fs::write(&file, "services:\n  web:\n    image: shoal/busybox:1\n")?;
    let out =
        shoal(&host, &["stack", "deploy", "-d", "--with-registry-auth", "-c", &file.display().to_string(), "app"]);
    assert!(ok(&out).contains("Creating service app_web"), "{}", stdout(&out));
    assert_eq!(stderr(&out).matches(note).count(), 1, "said once: {}", stderr(&out));

    // node update: what was typed, whether a hostname or an id prefix.
    let node = list_nodes(&host).await?.into_iter().next().expect("the manager's node");
    let hostname = node.description.hostname.clone();
    let out = ok(&shoal(&host, &["node", "update", "--label-add", "zone=a", &hostname]));
    assert_eq!(out, format!("{hostname}\n"));
    let prefix = &node.id[..6];
    let out = ok(&shoal(&host, &["node", "update", "--label-rm", "zone", prefix]));
    assert_eq!(out, format!("{prefix}\n"));
    let node = list_nodes(&host).await?.into_iter().find(|n| n.id == node.id).expect("still there");
    assert!(node.spec.labels.is_empty(), "{:?}", node.spec.labels);
    Ok(())
}

/// `service create --help` from the real binary: IMAGE under Arguments, the global flags under
/// their own heading.
#[test]
fn service_create_help_separates_global_flags() {
    let out = std::process::Command::new(bin("shoal")).args(["service", "create", "--help"]).output().expect("shoal");
    let help = ok(&out);
    let arguments = help.find("Arguments:").expect("an Arguments section");
    let options = help.find("\nOptions:").expect("an Options section");
    let global = help.find("Global options:").expect("a Global options section");
    let image = help.find("<IMAGE>").expect("<IMAGE>");
    assert!(arguments < image && image < options, "{help}");
    let host = help.find("--host <ADDR>").expect("--host");
    assert!(host > global, "{help}");
    assert!(!help[options..global].contains("--host <ADDR>"), "{help}");
}

/// A container that cannot start: the error names the cause first, so `service ps`, which cuts
/// the column, still shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_failure_shows_its_cause_first_in_service_ps() -> Result<()> {
    let mut cluster = Cluster::start(1).await?;
    cluster.add_agent(&[]).await?;
    let host = cluster.managers[0].addr.clone();
    let name = format!("nostart{}x{}", std::process::id(), rand::random::<u16>());
    ok(&shoal(
        &host,
        &["service", "create", "-d", "--restart-condition", "none", "--name", &name, "shoal/busybox:1", "/nonexistent"],
    ));
    let marker = format!(" container {name}.1.");
    let tasks = wait_tasks(&host, &name, std::time::Duration::from_secs(60), "the start fails", |tasks| {
        tasks.iter().any(|t| t.status.err.contains(&marker))
    })
    .await?;
    let failed = tasks.iter().find(|t| t.status.err.contains(&marker)).expect("found");
    let err = &failed.status.err;
    assert!(err.ends_with(&format!("{marker}{})", failed.id)), "the container comes last: {err}");
    assert!(!err.starts_with("starting container") && !err.starts_with("creating container"), "{err}");

    let ps = ok(&shoal(&host, &["service", "ps", &name]));
    let start: String = err.chars().take(20).collect();
    assert!(ps.contains(&format!("\"{start}")), "the cause starts the ERROR column: {ps}");
    let _ = shoal(&host, &["service", "rm", &name]);
    Ok(())
}

/// `shoal completion` and `shoal man` from the real binary: no manager needed; an unknown shell
/// is a usage error naming the allowed ones.
#[test]
fn completion_scripts_and_man_pages() {
    let run = |args: &[&str]| {
        std::process::Command::new(bin("shoal"))
            .args(["--host", "127.0.0.1:1"])
            .args(args)
            .env_remove("SHOAL_HOST")
            .output()
            .expect("shoal")
    };
    let bash = ok(&run(&["completion", "bash"]));
    assert!(bash.contains("complete -F") && bash.contains("with-registry-auth"), "{bash}");
    let fish = ok(&run(&["completion", "fish"]));
    assert!(fish.contains("complete -c shoal"), "{fish}");
    fails(&run(&["completion", "tcsh"]), 2, "[possible values: bash, zsh, fish]");

    let dir = tempfile::tempdir().expect("tempdir");
    let man = dir.path().join("man1");
    let out = ok(&run(&["man", &man.display().to_string()]));
    assert!(out.starts_with("Wrote ") && out.contains("man pages to"), "{out}");
    let page = std::fs::read_to_string(man.join("shoal-service-create.1")).expect("shoal-service-create.1");
    assert!(page.contains(".TH") && page.contains("update\\-parallelism"), "{page}");
    assert!(man.join("shoal.1").exists() && man.join("shoal-stack-deploy.1").exists());

    let file = dir.path().join("file");
    std::fs::write(&file, "").expect("write");
    fails(&run(&["man", &file.join("man1").display().to_string()]), 1, "cannot write man pages to");
}

/// Scaling 6 -> 3 with real containers: the progress never counts more tasks than replicas, and
/// once `service scale` has said converged, `service ls` shows 3/3 (the removed slots' tasks
/// have stopped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_down_converges_only_once_removed_tasks_stopped() -> Result<()> {
    let mut cluster = Cluster::start(1).await?;
    cluster.add_agent(&[]).await?;
    let host = cluster.managers[0].addr.clone();
    let name = format!("down{}x{}", std::process::id(), rand::random::<u16>());
    ok(&shoal(&host, &["service", "create", "--replicas", "6", "--name", &name, "shoal/busybox:1"]));

    let out = ok(&shoal(&host, &["service", "scale", &format!("{name}=3")]));
    assert!(out.contains(&format!("verify: Service {name} converged")), "{out}");
    for line in out.lines().filter(|l| l.starts_with("overall progress: ")) {
        let counted: u64 = line["overall progress: ".len()..].split(' ').next().unwrap_or("").parse()?;
        assert!(counted <= 3, "more tasks counted than replicas: {line}\n{out}");
        assert!(line.ends_with(" out of 3 tasks"), "{line}");
    }
    let ls = ok(&shoal(&host, &["service", "ls"]));
    let row = ls.lines().find(|l| l.contains(&name)).unwrap_or_default();
    assert!(row.contains(" 3/3 "), "service ls right after convergence: {ls}");
    let _ = shoal(&host, &["service", "rm", &name]);
    Ok(())
}
