//! The real `shoal` binary against real managers: `stack deploy -c -` (stack file from standard
//! input), `--filter` on `service ls`, `stack services` and `node ls`, and Go-template `--format`. Run
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
    assert_eq!(ok(&shoal(&host, &["stack", "ls", "--format", "{{.Name}}: {{.Services}}"])), "fromstdin: 1\n");
    assert_eq!(ok(&shoal(&host, &["stack", "ls", "--format", "table {{.Name}}"])), "NAME\nfromstdin\n");

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

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_ls_filters_and_templates() -> Result<()> {
    let mut cluster = Cluster::start(1).await?;
    let host = cluster.running_addrs()[0].clone();
    let create = |args: &[&str]| {
        let mut full = vec!["service", "create", "-d"];
        full.extend_from_slice(args);
        ok(&shoal(&host, &full)).trim().to_string()
    };
    let web = create(&["--name", "web", "--replicas", "2", "--label", "tier=front", "shoal/busybox:1"]);
    create(&["--name", "webhook", "--label", "tier=back", "--label", "team=a", "shoal/busybox:2"]);
    create(&["--name", "agentx", "--mode", "global", "--label", "team=a", "shoal/busybox:1"]);

    let ls = |args: &[&str]| {
        let mut full = vec!["service", "ls"];
        full.extend_from_slice(args);
        ok(&shoal(&host, &full))
    };
    // No agents: nothing runs, so REPLICAS is 0/N (a global service with no node wants 0).
    assert_eq!(lines(&ls(&["--format", "{{.Name}} {{.Replicas}}"])), ["agentx 0/0", "web 0/2", "webhook 0/1"]);
    assert_eq!(lines(&ls(&["--filter", "name=web", "--format", "{{.Name}}"])), ["web", "webhook"], "name prefix");
    assert_eq!(
        lines(&ls(&["-f", "name=agentx", "-f", "name=webhook", "--format", "{{.Name}}"])),
        ["agentx", "webhook"]
    );
    assert_eq!(lines(&ls(&["-f", "name=web", "-f", "mode=replicated", "-f", "label=tier=front", "-q"])), [&web[..12]]);
    assert_eq!(lines(&ls(&["-f", "label=team=a", "-f", "label=tier", "--format", "{{.Name}}"])), ["webhook"]);
    assert_eq!(
        lines(&ls(&["-f", "mode=global", "--format", "{{.Name}}:{{.Mode}}:{{.Image}}"])),
        ["agentx:global:shoal/busybox:1"]
    );
    assert_eq!(lines(&ls(&["-f", &format!("id={}", &web[..6]), "--format", "{{.ID}}"])), [&web[..12]]);
    assert_eq!(ls(&["-f", "name=nothing"]), "ID        NAME      MODE      REPLICAS   IMAGE     PORTS\n");
    assert_eq!(
        ls(&["-f", "label=tier", "--format", r"table {{.Name}}\t{{.Replicas}}"]),
        "NAME      REPLICAS\nweb       0/2\nwebhook   0/1\n"
    );
    let json: Vec<shoal_types::Service> = serde_json::from_str(&ls(&["-f", "label=team=a", "--format", "json"]))?;
    let names: Vec<&str> = json.iter().map(|s| s.spec.name.as_str()).collect();
    assert_eq!(names, ["agentx", "webhook"], "json output is filtered too");

    fails(
        &shoal(&host, &["service", "ls", "--filter", "nmae=web"]),
        2,
        "unknown filter key \"nmae\" (allowed: id, label, mode, name)",
    );
    fails(&shoal(&host, &["service", "ls", "--filter", "mode=batch"]), 2, "invalid mode filter \"batch\"");
    fails(
        &shoal(&host, &["service", "ls", "--format", "{{.Replicas}} {{.Nodes}}"]),
        2,
        "unknown template field .Nodes (fields: .ID, .Name, .Mode, .Replicas, .Image, .Ports)",
    );

    // service ps: a template over the same columns as the table.
    let ps = ok(&shoal(&host, &["service", "ps", "--format", "{{.Name}}|{{.Node}}|{{.DesiredState}}", "web"]));
    assert_eq!(lines(&ps), ["web.1||Running", "web.2||Running"], "no node to run them");
    let ps = ok(&shoal(&host, &["service", "ps", "--format", r"table {{.Name}}\t{{.DesiredState}}", "web"]));
    assert_eq!(lines(&ps), ["NAME      DESIRED STATE", "web.1     Running", "web.2     Running"]);
    fails(
        &shoal(&host, &["service", "ps", "--format", "{{.Replicas}}", "web"]),
        2,
        "unknown template field .Replicas (fields: .ID, .Name, .Image, .Node, .DesiredState, .CurrentState, .Error, .Ports)",
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_ls_filters_and_templates() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let leader = cluster.leader().await?;
    let host = cluster.managers[leader].addr.clone();
    let nodes = list_nodes(&host).await?;
    let mut hostnames: Vec<String> = nodes.iter().map(|n| n.description.hostname.clone()).collect();
    hostnames.sort();
    let labelled = &nodes[0];
    ok(&shoal(&host, &["node", "update", "--label-add", "zone=z1", &labelled.id]));

    let ls = |args: &[&str]| {
        let mut full = vec!["node", "ls"];
        full.extend_from_slice(args);
        ok(&shoal(&host, &full))
    };
    assert_eq!(lines(&ls(&["--format", "{{.Hostname}}"])), hostnames);
    assert_eq!(
        lines(&ls(&["-f", "node.label=zone=z1", "--format", "{{.ID}} {{.Hostname}}"])),
        [format!("{} {}", labelled.id, labelled.description.hostname)]
    );
    assert_eq!(lines(&ls(&["-f", "node.label=zone=z2", "-q"])).len(), 0);
    assert_eq!(lines(&ls(&["-f", "role=manager", "-q"])).len(), 3);
    assert_eq!(lines(&ls(&["-f", "role=worker", "-q"])).len(), 0);
    assert_eq!(lines(&ls(&["-f", &format!("name={}", labelled.description.hostname), "-q"])), [labelled.id.as_str()]);
    assert_eq!(lines(&ls(&["-f", &format!("id={}", &labelled.id[..8]), "-q"])), [labelled.id.as_str()]);

    let status = ls(&["--format", "{{.Status}} {{.Availability}} {{.ManagerStatus}}"]);
    assert_eq!(lines(&status).iter().filter(|l| l.starts_with("Ready Active ")).count(), 3, "{status}");
    assert_eq!(lines(&status).iter().filter(|l| l.ends_with(" Leader")).count(), 1, "{status}");
    let table = ls(&["--format", r"table {{.Hostname}}\t{{.Availability}}"]);
    let widest = hostnames.iter().map(String::len).max().unwrap_or(0).max("HOSTNAME".len());
    assert_eq!(lines(&table)[0], format!("{:<w$}AVAILABILITY", "HOSTNAME", w = (widest + 3).max(10)));
    assert_eq!(lines(&table).len(), 4, "{table}");

    // Every node that joined is accepted; none is pending.
    assert_eq!(lines(&ls(&["-f", "membership=accepted", "-q"])).len(), 3);
    assert_eq!(lines(&ls(&["-f", "membership=pending", "-q"])).len(), 0);
    fails(
        &shoal(&host, &["node", "ls", "--filter", "membership=joined"]),
        2,
        "invalid membership filter \"joined\" (allowed: accepted, pending)",
    );
    fails(
        &shoal(&host, &["node", "ls", "--filter", "state=ready"]),
        2,
        "unknown filter key \"state\" (allowed: id, label, membership, name, node.label, role)",
    );
    fails(&shoal(&host, &["node", "ls", "--format", "{{.Replicas}}"]), 2, "unknown template field .Replicas");
    Ok(())
}

const FILTER_STACK: &str = "\
services:
  web:
    image: shoal/busybox:1
    deploy:
      replicas: 2
      labels: {tier: front}
  worker:
    image: shoal/busybox:2
    deploy:
      mode: global
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stack_services_takes_service_ls_filters_templates_and_quiet() -> Result<()> {
    let mut cluster = Cluster::start(1).await?;
    let host = cluster.running_addrs()[0].clone();
    let dir = tempfile::tempdir()?;
    ok(&shoal_stdin(&host, dir.path(), &["stack", "deploy", "-d", "-c", "-", "app"], FILTER_STACK));
    // Not in the stack, though its name and mode would pass the filters below.
    ok(&shoal(&host, &["service", "create", "-d", "--name", "app_web2", "--mode", "global", "shoal/busybox:1"]));
    let services = list_services(&host).await?;
    let id = |name: &str| services.iter().find(|s| s.spec.name == name).map(|s| s.id.clone()).expect("created");

    let services = |args: &[&str]| {
        let mut full = vec!["stack", "services"];
        full.extend_from_slice(args);
        full.push("app");
        ok(&shoal(&host, &full))
    };
    // No agents: nothing runs, so REPLICAS is 0/N.
    assert_eq!(
        lines(&services(&["--format", "{{.Name}} {{.Mode}} {{.Replicas}}"])),
        ["app_web replicated 0/2", "app_worker global 0/0"]
    );
    assert_eq!(lines(&services(&["-f", "mode=global", "-q"])), [&id("app_worker")[..12]]);
    assert_eq!(lines(&services(&["-f", "name=app_w", "-f", "label=tier=front", "--format", "{{.Name}}"])), ["app_web"]);
    assert_eq!(lines(&services(&["-f", "name=app_worker", "-f", "name=app_web", "-q"])).len(), 2, "same key: any");
    let table = services(&["--format", r"table {{.Name}}\t{{.Image}}"]);
    let rows: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows, [["NAME", "IMAGE"], ["app_web", "shoal/busybox:1"], ["app_worker", "shoal/busybox:2"]], "{table}");
    let json: Vec<shoal_types::Service> =
        serde_json::from_str(&services(&["-f", "mode=replicated", "--format", "json"]))?;
    let names: Vec<&str> = json.iter().map(|s| s.spec.name.as_str()).collect();
    assert_eq!(names, ["app_web"], "json output is filtered too");

    // Nothing passes: docker's message on stderr, exit 0 (JSON: an empty array).
    let out = shoal(&host, &["stack", "services", "-f", "label=tier=back", "app"]);
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(0), ""), "{}", stderr(&out));
    assert!(stderr(&out).contains("Nothing found in stack: app"), "{}", stderr(&out));
    assert_eq!(services(&["-f", "label=tier=back", "--format", "json"]).trim(), "[]");

    fails(
        &shoal(&host, &["stack", "services", "--filter", "node=x", "app"]),
        2,
        "unknown filter key \"node\" (allowed: id, label, mode, name)",
    );
    fails(&shoal(&host, &["stack", "services", "--format", "{{.Nodes}}", "app"]), 2, "unknown template field .Nodes");
    Ok(())
}
