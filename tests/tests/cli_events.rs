//! `shoal events --since` and a reconnect without gaps (issue 21 item 10), with the real `shoal`
//! binary against real managers. Run `cargo build --workspace --bins` first.

use anyhow::Result;
use shoal_tests::*;
use std::sync::{Arc, Mutex};

/// Unix milliseconds as `YYYY-MM-DDTHH:MM:SSZ`, from the system's `date` (not from the code
/// under test).
fn format_utc(millis: u64) -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{}", millis / 1000), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .expect("date runs");
    String::from_utf8(out.stdout).expect("utf-8").trim().to_string()
}

/// `shoal events` as a child, killed when the test ends however it ends.
struct Events {
    child: std::process::Child,
    out: Arc<Mutex<Vec<String>>>,
    err: Arc<Mutex<Vec<String>>>,
}

impl Events {
    fn start(hosts: &str, tls_dir: &std::path::Path, args: &[&str]) -> Result<Events> {
        let mut child = std::process::Command::new(bin("shoal"))
            .args(["--host", hosts, "events", "--format", "json"])
            .args(args)
            .env_remove("SHOAL_HOST")
            .env("SHOAL_TLS_DIR", tls_dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        let out = collect_lines(child.stdout.take().expect("stdout"));
        let err = collect_lines(child.stderr.take().expect("stderr"));
        Ok(Events { child, out, err })
    }

    fn out_text(&self) -> String {
        self.out.lock().expect("lines lock").join("\n")
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `--since INDEX` replays the objects changed after the index (and not those before), removals
/// included, then goes on live; `--since 1h` and `--since <date-time>` replay by time; bad values
/// are usage errors naming what is allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_replays_what_changed_after_an_index_or_a_time() -> Result<()> {
    let cluster = Cluster::start(1).await?;
    let host = cluster.managers[0].addr.clone();
    ok(&shoal(&host, &["service", "create", "-d", "--name", "early", "shoal/busybox:1"]));
    let early = list_services(&host).await?.into_iter().find(|s| s.spec.name == "early").expect("early");
    ok(&shoal(&host, &["service", "create", "-d", "--name", "late", "shoal/busybox:1"]));
    ok(&shoal(&host, &["service", "create", "-d", "--name", "gone", "shoal/busybox:1"]));
    ok(&shoal(&host, &["service", "rm", "gone"]));

    let since = early.version.to_string();
    let events = Events::start(&host, &cluster.admin_dir(), &["--filter", "type=service", "--since", &since])?;
    wait_line(&events.out, "\"name\":\"late\"", "replayed service").await?;
    // The removed service is replayed as its removal (its creation left nothing to replay).
    wait_line(&events.out, "\"name\":\"gone\"", "replayed removal").await?;
    let gone: Vec<String> =
        events.out.lock().expect("lines lock").iter().filter(|l| l.contains("\"name\":\"gone\"")).cloned().collect();
    assert!(gone.len() == 1 && gone[0].contains("\"action\":\"remove\""), "{gone:?}");
    assert!(
        !events.out_text().contains("\"name\":\"early\""),
        "replayed a change before the index:\n{}",
        events.out_text()
    );
    // Live changes follow the replay.
    ok(&shoal(&host, &["service", "create", "-d", "--name", "live", "shoal/busybox:1"]));
    wait_line(&events.out, "\"name\":\"live\"", "live service").await?;
    drop(events);

    let events = Events::start(&host, &cluster.admin_dir(), &["--filter", "type=service", "--since", "1h"])?;
    wait_line(&events.out, "\"name\":\"early\"", "replayed by time").await?;
    wait_line(&events.out, "\"name\":\"late\"", "replayed by time").await?;
    drop(events);
    // A date-time as docker takes it: a minute before `late` was last changed.
    let late = list_services(&host).await?.into_iter().find(|s| s.spec.name == "late").expect("late");
    let since = format_utc(late.updated_at.saturating_sub(60_000));
    let events = Events::start(&host, &cluster.admin_dir(), &["--filter", "type=service", "--since", &since])?;
    wait_line(&events.out, "\"name\":\"late\"", "replayed by date-time").await?;
    wait_line(&events.out, "\"name\":\"gone\"", "removal replayed by date-time").await?;
    drop(events);

    for (value, needle) in [
        ("0", "invalid value '0' for '--since <INDEX|DURATION>'"),
        ("yesterday", "expected a raft index (the events' index, e.g. 1234), a duration ago"),
        ("2024-02-30", "or a time (e.g. 2024-03-01T12:34:56Z)"),
    ] {
        let out = shoal(&host, &["events", "--since", value]);
        assert_eq!(out.status.code(), Some(2), "{value}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{value}: {}", stderr(&out));
    }
    Ok(())
}

/// The manager `events` watches through hangs (SIGSTOP): a change made while it hangs reaches
/// the stream only through the replay of the manager it reconnects to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_replays_the_changes_made_while_the_manager_hung() -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let leader = cluster.leader().await?;
    let follower = (0..3).find(|i| *i != leader).expect("a follower");
    let other = (0..3).find(|i| *i != leader && *i != follower).expect("another follower");
    let addr = |i: usize| cluster.managers[i].addr.clone();
    let hosts = format!("{},{}", addr(follower), addr(other));
    let events = Events::start(&hosts, &cluster.admin_dir(), &["--filter", "type=service"])?;

    // The stream is open once a change made after the start shows.
    let mut n = 0;
    loop {
        n += 1;
        let name = format!("before{n}");
        ok(&shoal(&addr(leader), &["service", "create", "-d", "--name", &name, "shoal/busybox:1"]));
        if wait_line(&events.out, &format!("\"name\":\"{name}\""), "first event").await.is_ok() {
            break;
        }
        anyhow::ensure!(n < 3, "events printed nothing:\n{}", events.err.lock().expect("lines lock").join("\n"));
    }

    // The watched follower hangs; the leader and the other follower still commit.
    let pid = cluster.managers[follower].pid().expect("the follower runs");
    let frozen = Frozen::stop(pid)?;
    ok(&shoal(&addr(leader), &["service", "create", "-d", "--name", "gap", "shoal/busybox:1"]));
    wait_line(&events.err, "continuing through", "reconnection note").await?;
    wait_line(&events.out, "\"name\":\"gap\"", "the change made while the manager hung").await?;
    let note = events.err.lock().expect("lines lock").join("\n");
    assert!(note.contains("replaying the objects changed after index"), "{note}");
    frozen.resume()?;
    Ok(())
}
