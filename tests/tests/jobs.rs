//! Jobs (Swarm 20.10's `--mode replicated-job|global-job`) with real agents and containers.

use std::time::Duration;

use anyhow::{Result, bail};
use shoal_tests::*;
use shoal_types::{ServiceMode, Task, TaskOrigin, TaskState};

/// Tasks between assignment and running: what an agent may be running at this moment.
fn at_work(tasks: &[Task]) -> usize {
    tasks
        .iter()
        .filter(|t| t.desired_state <= TaskState::Running)
        .filter(|t| t.status.state >= TaskState::Assigned && t.status.state <= TaskState::Running)
        .count()
}

/// A Docker timestamp (RFC 3339 with up to 9 fraction digits, trailing zeros trimmed) made
/// comparable as a string.
fn comparable(ts: &str) -> String {
    let ts = ts.trim_end_matches('Z');
    let (secs, frac) = ts.split_once('.').unwrap_or((ts, ""));
    format!("{secs}.{frac:0<9}")
}

/// The most containers of `tasks` that ran at the same time, by Docker's own start and finish
/// records.
fn max_overlap(tasks: &[&Task]) -> Result<usize> {
    let mut events = Vec::new();
    for task in tasks {
        let id = &task.status.container_id;
        let started = docker_inspect(id, "{{.State.StartedAt}}");
        let finished = docker_inspect(id, "{{.State.FinishedAt}}");
        if started.is_empty() || finished.is_empty() {
            bail!("container {id} of task {} is gone", task.id);
        }
        // Ends sort before starts at the same instant: back to back is not at once.
        events.push((comparable(&started), 1, 1i32));
        events.push((comparable(&finished), 0, -1i32));
    }
    events.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, _, delta) in events {
        now += delta;
        most = most.max(now);
    }
    Ok(usize::try_from(most)?)
}

/// Polls the job's tasks until `count` of the current run completed, checking at every poll
/// that no more than `max` were at work.
async fn wait_completed(addr: &str, name: &str, spec_version: u64, count: usize, max: usize) -> Result<Vec<Task>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let tasks = list_tasks(addr, name).await?;
        let current: Vec<Task> = tasks.iter().filter(|t| t.spec_version == spec_version).cloned().collect();
        assert!(at_work(&current) <= max, "more than {max} tasks at work: {current:#?}");
        let done = current.iter().filter(|t| t.status.state == TaskState::Complete).count();
        if done >= count {
            return Ok(tasks);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{count} completions of {name} not reached; tasks: {tasks:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `count` tasks of the job completed and every completed one is desired Complete.
async fn wait_desired_complete(addr: &str, name: &str, count: usize) -> Result<Vec<Task>> {
    wait_tasks(addr, name, Duration::from_secs(30), "completed tasks desired Complete", |tasks| {
        let done: Vec<&Task> = tasks.iter().filter(|t| t.status.state == TaskState::Complete).collect();
        done.len() == count && done.iter().all(|t| t.desired_state == TaskState::Complete)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_job_runs_to_its_completions_at_most_max_concurrent_at_once_and_reruns_on_force() -> Result<()> {
    let mut cluster = Cluster::start(1).await?;
    cluster.add_agent(&[]).await?;
    cluster.add_agent(&[]).await?;
    let addr = cluster.running_addrs()[0].clone();

    // Each task sleeps 2s and exits 0: long enough that two at once visibly overlap.
    let out = shoal(
        &addr,
        &[
            "service",
            "create",
            "--name",
            "job",
            "--mode",
            "replicated-job",
            "--replicas",
            "3",
            "--max-concurrent",
            "2",
            "shoal/busybox:1",
            "sh",
            "-c",
            "sleep 2; exit 0",
        ],
    );
    // Not `-d`: the CLI does not wait for a job to finish its work.
    ok(&out);
    let service = list_services(&addr).await?.into_iter().find(|s| s.spec.name == "job").expect("created");
    assert_eq!(service.spec.mode, ServiceMode::ReplicatedJob { total_completions: 3, max_concurrent: 2 });
    let first_run = service.spec_version;

    let tasks = wait_completed(&addr, "job", first_run, 3, 2).await?;
    // Settled: no fourth task is made, nothing is restarted.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tasks_after = list_tasks(&addr, "job").await?;
    assert_eq!(tasks_after.len(), 3, "three tasks, no more: {tasks_after:#?}");
    let mut slots: Vec<u64> = tasks_after.iter().map(|t| t.slot).collect();
    slots.sort_unstable();
    assert_eq!(slots, [1, 2, 3]);
    for task in &tasks_after {
        assert_eq!((task.status.state, task.origin), (TaskState::Complete, TaskOrigin::Orchestrator), "{task:#?}");
    }
    let refs: Vec<&Task> = tasks.iter().collect();
    let overlap = max_overlap(&refs)?;
    assert!((1..=2).contains(&overlap), "{overlap} containers ran at once");

    let ls = ok(&shoal(&addr, &["service", "ls"]));
    let line = ls.lines().find(|l| l.contains(" job ")).unwrap_or_default();
    assert!(line.contains("replicated-job"), "{ls}");
    assert!(line.contains("0/0 (3/3 completed)"), "{ls}");
    // Completed tasks are desired Complete, as docker shows them.
    wait_desired_complete(&addr, "job", 3).await?;
    let ps = ok(&shoal(&addr, &["service", "ps", "--format", "{{.Name}} {{.DesiredState}} {{.CurrentState}}", "job"]));
    let mut shown: Vec<String> =
        ps.lines().map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")).collect();
    shown.sort();
    assert_eq!(shown, ["job.1 Complete Complete", "job.2 Complete Complete", "job.3 Complete Complete"], "{ps}");

    // `service update --force` runs the job again: three new tasks, the old ones left as they are;
    // `--max-concurrent 1` runs them one at a time.
    let out = shoal(&addr, &["service", "update", "--update-parallelism", "2", "job"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--update-parallelism cannot be used with a replicated-job service"),
        "{}",
        stderr(&out)
    );
    ok(&shoal(&addr, &["service", "update", "--force", "--max-concurrent", "1", "job"]));
    let service = list_services(&addr).await?.into_iter().find(|s| s.spec.name == "job").expect("exists");
    assert!(service.spec_version > first_run);
    assert_eq!(service.spec.mode, ServiceMode::ReplicatedJob { total_completions: 3, max_concurrent: 1 });
    let tasks = wait_completed(&addr, "job", service.spec_version, 3, 1).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tasks_after = list_tasks(&addr, "job").await?;
    assert_eq!(tasks_after.len(), 6, "{tasks_after:#?}");
    let second: Vec<&Task> = tasks.iter().filter(|t| t.spec_version == service.spec_version).collect();
    assert_eq!(second.len(), 3);
    assert!(second.iter().all(|t| t.origin == TaskOrigin::Orchestrator), "not rolled by the updater");
    assert!(max_overlap(&second)? <= 1);
    let ls = ok(&shoal(&addr, &["service", "ls"]));
    assert!(ls.lines().any(|l| l.contains(" job ") && l.contains("(3/3 completed)")), "{ls}");
    // Both runs' tasks stay desired Complete.
    wait_desired_complete(&addr, "job", 6).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_job_completes_once_per_agent_and_bad_job_flags_are_refused() -> Result<()> {
    let mut cluster = Cluster::start(1).await?;
    cluster.add_agent(&[]).await?;
    cluster.add_agent(&[]).await?;
    let addr = cluster.running_addrs()[0].clone();

    let out = shoal(
        &addr,
        &["service", "create", "-d", "--name", "once", "--replicas", "2", "--max-concurrent", "1", "shoal/busybox:1"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--max-concurrent 1: can only be used with --mode replicated-job"),
        "{}",
        stderr(&out)
    );
    let out = shoal(&addr, &["service", "create", "-d", "--mode", "global-job", "--replicas", "2", "shoal/busybox:1"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = shoal(
        &addr,
        &["service", "create", "-d", "--mode", "global-job", "--rollback-order", "start-first", "shoal/busybox:1"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out)
            .contains("--rollback-order cannot be used with --mode global-job: jobs may not have a rollback config"),
        "{}",
        stderr(&out)
    );
    let out = shoal(
        &addr,
        &["service", "create", "-d", "--mode", "replicated-job", "--max-concurrent", "0", "shoal/busybox:1"],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("'--max-concurrent <N>': 0 is below the minimum 1"), "{}", stderr(&out));

    ok(&shoal(&addr, &["service", "create", "--name", "once", "--mode", "global-job", "shoal/busybox:1", "true"]));
    let tasks = wait_tasks(&addr, "once", Duration::from_secs(30), "both agents completed", |t| {
        t.iter().filter(|t| t.status.state == TaskState::Complete).count() == 2
    })
    .await?;
    let mut nodes: Vec<&str> = tasks.iter().map(|t| t.node_id.as_str()).collect();
    nodes.sort_unstable();
    nodes.dedup();
    assert_eq!(nodes.len(), 2, "one per agent: {tasks:#?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(list_tasks(&addr, "once").await?.len(), 2, "completed tasks are not restarted");
    let ls = ok(&shoal(&addr, &["service", "ls"]));
    assert!(ls.lines().any(|l| l.contains(" once ") && l.contains("0/0 (2/2 completed)")), "{ls}");
    wait_desired_complete(&addr, "once", 2).await?;
    let ps = ok(&shoal(&addr, &["service", "ps", "-q", "--filter", "desired-state=complete", "once"]));
    assert_eq!(ps.lines().count(), 2, "{ps}");
    Ok(())
}
