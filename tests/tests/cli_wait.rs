//! Waiting for a service that cannot come up (issue 21 item 11), with the real `shoal` binary,
//! real managers, a real agent and Docker: `--timeout` ends the wait with a message naming it and
//! leaves the service in the cluster; output to a pipe (as here: stdout is never a terminal in
//! tests) is a bounded number of state-change lines, the slot's line carrying its error. Run
//! `cargo build --workspace --bins` first so the binaries are current.

use anyhow::Result;
use shoal_tests::*;

/// A name no other test's containers on the shared Docker engine use.
fn unique(prefix: &str) -> String {
    format!("{prefix}{}x{}", std::process::id(), rand::random::<u16>())
}

/// The missing image's error as the agent reports it.
const MISSING: &str = "image shoal/busybox:99 not found locally (shoal never pulls images)";

/// `service create --timeout 5s` of an image that does not exist: exit 1 once the timeout is
/// reached, naming it; a few lines of progress (not one per poll), the error on the slot's line;
/// the service stays and keeps being retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_of_a_missing_image_times_out_with_a_few_lines() -> Result<()> {
    let mut cluster = Cluster::start(1).await?;
    cluster.add_agent(&[]).await?;
    let host = cluster.managers[0].addr.clone();
    let name = unique("typo");

    let out = shoal(&host, &["service", "create", "--timeout", "5s", "--name", &name, "shoal/busybox:99"]);
    let (text, err) = (stdout(&out), stderr(&out));
    println!("stdout:\n{text}stderr:\n{err}");
    assert_eq!(out.status.code(), Some(1), "stdout:\n{text}\nstderr:\n{err}");
    assert!(
        err.contains(&format!("Error: service {name} did not converge within --timeout 5s (0 out of 1 tasks running")),
        "{err}"
    );
    assert!(err.contains("it goes on converging in the cluster"), "{err}");

    let lines: Vec<&str> = text.lines().collect();
    // The id, the header, and a handful of lines per attempt (5 s allow one or two attempts);
    // a frame per 100 ms poll would be about 50.
    assert!(lines.len() <= 20, "{} lines:\n{text}", lines.len());
    assert!(!text.contains('\x1b'), "no terminal control codes in a pipe:\n{text}");
    assert_eq!(lines.iter().filter(|l| l.starts_with("overall progress:")).count(), 1, "{text}");
    assert!(lines.contains(&"overall progress: 0 out of 1 tasks"), "{text}");
    let slot = format!("{name}.1: ");
    assert!(
        lines.iter().any(|l| l.starts_with(&slot) && l.ends_with(MISSING)),
        "the slot's line carries the missing image's error:\n{text}"
    );
    // Each printed line says something new about its slot.
    let slot_lines: Vec<&&str> = lines.iter().filter(|l| l.starts_with(&slot)).collect();
    assert!(slot_lines.windows(2).all(|w| w[0] != w[1]), "a line repeated:\n{text}");

    // The timeout ended the wait, not the service.
    let services = list_services(&host).await?;
    assert!(services.iter().any(|s| s.spec.name == name), "the service is still there");
    let _ = shoal(&host, &["service", "rm", &name]);
    Ok(())
}

/// `stack deploy --timeout` ends the same way, naming the stack's service; a service that does
/// come up within the timeout converges as without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stack_deploy_times_out_and_a_working_service_converges_within_its_timeout() -> Result<()> {
    let mut cluster = Cluster::start(1).await?;
    cluster.add_agent(&[]).await?;
    let host = cluster.managers[0].addr.clone();

    let name = unique("fine");
    let out = ok(&shoal(&host, &["service", "create", "--timeout", "2m", "--name", &name, "shoal/busybox:1"]));
    assert!(out.contains(&format!("verify: Service {name} converged")), "{out}");
    let _ = shoal(&host, &["service", "rm", &name]);

    let stack = unique("st");
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("stack.yml");
    std::fs::write(&file, "services:\n  typo:\n    image: shoal/busybox:99\n")?;
    let out = shoal(&host, &["stack", "deploy", "--timeout", "3s", "-c", &file.display().to_string(), &stack]);
    let (text, err) = (stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "stdout:\n{text}\nstderr:\n{err}");
    assert!(err.contains(&format!("service {stack}_typo did not converge within --timeout 3s")), "{err}");
    assert!(text.lines().count() <= 20, "{text}");
    assert!(list_services(&host).await?.iter().any(|s| s.spec.name == format!("{stack}_typo")));
    let _ = shoal(&host, &["stack", "rm", &stack]);
    Ok(())
}

/// A bad `--timeout` is a usage error naming the flag, the value and what is allowed; nothing is
/// sent to a manager (none listens at the address).
#[test]
fn bad_timeouts_are_usage_errors() {
    let host = "127.0.0.1:1";
    for (args, needle) in [
        (
            vec!["service", "create", "--timeout", "0s", "shoal/busybox:1"],
            "invalid value '0s' for '--timeout <DURATION>': must be longer than 0",
        ),
        (vec!["service", "update", "--timeout", "soon", "web"], "invalid value 'soon' for '--timeout <DURATION>'"),
        (
            vec!["stack", "deploy", "--timeout", "-5s", "-c", "x.yml", "st"],
            "invalid value '-5s' for '--timeout <DURATION>'",
        ),
        (vec!["service", "create", "-d", "--timeout", "5s", "shoal/busybox:1"], "cannot be used with"),
    ] {
        let out = shoal(host, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
}
