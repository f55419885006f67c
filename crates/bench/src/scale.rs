//! The control plane's cost as the cluster grows (issue 22): one write's latency and the
//! leader's CPU per write with 0, 10k and 100k tasks in the store, the idle leader's CPU, and
//! what `service ls` and `service ps` cost at that size.

use std::time::Duration;

use anyhow::{Context, Result};
use shoal_proto::v1::{ListServicesRequest, ListTasksRequest};
use shoal_tests::{Cluster, connect};
use tokio::time::Instant;

use crate::report::{Figure, Report, median, percentile};
use crate::svc;

/// Replicas per service used to fill the store.
const REPLICAS_PER_SERVICE: usize = 1000;

/// CPU time (user + system) a process used so far, in seconds. `/proc/<pid>/stat` counts in
/// clock ticks, which are 1/100 s on Linux (USER_HZ).
fn cpu_seconds(pid: Option<u32>) -> Result<f64> {
    let pid = pid.context("the process does not run")?;
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name may hold spaces; the fields after it are space-separated.
    let after_name = stat.rsplit_once(')').context("no ')' in /proc/<pid>/stat")?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks = |i: usize| -> Result<f64> { Ok(fields.get(i).context("short /proc/<pid>/stat")?.parse::<f64>()?) };
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

/// Milliseconds of `f`'s call, median of `runs`.
async fn timed<F, Fut>(runs: usize, mut f: F) -> Result<f64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        f().await?;
        samples.push(started.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(&samples))
}

/// `writes` sequential updates of a new 0-replica service, each changing a label (what `service
/// update -d --label-add` sends); their latencies in ms, sorted.
async fn sequential_updates(client: &svc::Client, writes: usize) -> Result<Vec<f64>> {
    let mut writer = crate::raft::LabelWriter::create(client.clone(), "sb-tiny").await?;
    Ok(crate::raft::sequential(&mut writer, writes).await?.latencies)
}

/// Milliseconds of the `shoal` CLI run with `args` against `addr`, start to exit (process start,
/// TLS handshake, every page, the table printed), median of `runs`.
async fn cli_timed(addr: &str, args: &[&str], runs: usize) -> Result<f64> {
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let (addr, owned) = (addr.to_string(), args.iter().map(|a| a.to_string()).collect::<Vec<_>>());
        let started = Instant::now();
        let output = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = owned.iter().map(String::as_str).collect();
            shoal_tests::shoal(&addr, &args)
        })
        .await?;
        samples.push(started.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(output.status.success(), "shoal {args:?} failed: {}", shoal_tests::stderr(&output));
    }
    Ok(median(&samples))
}

/// Replicas of the one large service at the largest size, whose `service ps` is measured.
const LARGE_SERVICE: usize = 10_000;

pub async fn write_cost(quick: bool, report: &mut Report) -> Result<()> {
    let sizes: &[usize] = if quick { &[0, 2_000] } else { &[0, 10_000, 100_000] };
    let writes = if quick { 20 } else { 200 };
    let idle_window = Duration::from_secs(if quick { 2 } else { 20 });
    let mut p50_at = Vec::new();
    for &tasks in sizes {
        let cluster = Cluster::start(1).await?;
        let addr = cluster.managers[0].addr.clone();
        let pid = cluster.managers[0].pid();
        let mut client = connect(&addr).await?;
        let fill_timeout = Duration::from_secs(if quick { 120 } else { 900 });
        // At 100k, one service of 10k replicas among services of 1000: `service ps` of a large
        // service in a large cluster.
        let large = if tasks >= 10 * LARGE_SERVICE { LARGE_SERVICE } else { 0 };
        svc::fill(
            &cluster,
            &mut client,
            "sb-scale",
            (tasks - large) / REPLICAS_PER_SERVICE,
            REPLICAS_PER_SERVICE,
            fill_timeout,
        )
        .await?;
        if large > 0 {
            svc::fill(&cluster, &mut client, "sb-large", 1, large, fill_timeout).await?;
        }
        let size = if tasks == 0 { "no tasks".to_string() } else { format!("{}k pending tasks", tasks / 1000) };
        let scenario = format!("write cost, {size} in the store (1 manager, no agents)");
        // Let the passes the fill triggered end, then the idle leader.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let cpu_before = cpu_seconds(pid)?;
        tokio::time::sleep(idle_window).await;
        let idle = (cpu_seconds(pid)? - cpu_before) / idle_window.as_secs_f64() * 100.0;
        report.push(Figure::new(&scenario, "idle leader CPU", idle, "% of a core").target("<= 1 % at 100k tasks"));

        // Sequential updates of a 0-replica service (a label changes), as `service update -d
        // --label-add` does, through the API: the latency is the manager's, not a CLI start.
        let cpu_before = cpu_seconds(pid)?;
        let latencies = sequential_updates(&client, writes).await?;
        // The passes the last writes triggered finish before the CPU is read.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let cpu_per_write = (cpu_seconds(pid)? - cpu_before) / writes as f64 * 1e3;
        let p50 = percentile(&latencies, 50.0);
        p50_at.push((tasks, p50));
        report.push(Figure::new(&scenario, "service update p50", p50, "ms").samples(writes));
        report.push(Figure::new(&scenario, "service update p99", percentile(&latencies, 99.0), "ms").samples(writes));
        report.push(
            Figure::new(&scenario, "leader CPU per write (incl. the 500 ms after)", cpu_per_write, "ms")
                .samples(writes),
        );

        // What `service ls` and `service ps` of one 1000-task service cost at this size.
        let ls = timed(5, || {
            let mut client = client.clone();
            async move {
                client.list_services(ListServicesRequest { summaries: true }).await?;
                Ok(())
            }
        })
        .await?;
        report.push(Figure::new(&scenario, "service ls (summaries)", ls, "ms").samples(5).target("<= 200 ms"));
        if tasks > 0 {
            let ps = timed(5, || {
                let mut client = client.clone();
                async move {
                    let request = ListTasksRequest { service: "sb-scale-0".into(), ..Default::default() };
                    client.list_tasks(request).await?;
                    Ok(())
                }
            })
            .await?;
            report.push(
                Figure::new(&scenario, "service ps of a 1000-task service", ps, "ms").samples(5).target("<= 200 ms"),
            );
        }
        // The same as a user sees it: the CLI, from its start to its exit.
        report.push(
            Figure::new(
                &scenario,
                "`shoal service ls` (CLI, start to exit)",
                cli_timed(&addr, &["service", "ls"], 5).await?,
                "ms",
            )
            .samples(5)
            .target("<= 200 ms"),
        );
        if large > 0 {
            let ps = cli_timed(&addr, &["service", "ps", "sb-large-0"], 5).await?;
            report.push(
                Figure::new(&scenario, "`shoal service ps` of a 10k-task service (CLI, start to exit)", ps, "ms")
                    .samples(5)
                    .target("<= 200 ms"),
            );
        }
    }
    // A snapshot of the whole store is copied on the raft thread and serialised off it: with a
    // snapshot every 100 entries, some of these writes wait for one at the largest size.
    let largest = *sizes.last().expect("sizes");
    {
        let cluster = Cluster::start_with(1, &["--snapshot-interval", "100"]).await?;
        let mut client = connect(&cluster.managers[0].addr).await?;
        let fill_timeout = Duration::from_secs(if quick { 120 } else { 900 });
        let services = largest / REPLICAS_PER_SERVICE;
        svc::fill(&cluster, &mut client, "sb-snap", services, REPLICAS_PER_SERVICE, fill_timeout).await?;
        let latencies = sequential_updates(&client, 300).await?;
        let info = shoal_tests::cluster_info(&cluster.managers[0].addr).await?;
        let scenario = format!(
            "write cost, {}k pending tasks, a raft snapshot every 100 entries ({:.0} MB each)",
            largest / 1000,
            info.raft.snapshot_bytes as f64 / 1e6
        );
        report.push(Figure::new(&scenario, "service update p50", percentile(&latencies, 50.0), "ms").samples(300));
        report.push(Figure::new(&scenario, "service update p99", percentile(&latencies, 99.0), "ms").samples(300));
        report.push(
            Figure::new(&scenario, "service update max (a write that waited for a snapshot)", latencies[299], "ms")
                .samples(300),
        );
    }
    if let (Some((_, base)), Some((largest, p50))) = (p50_at.first(), p50_at.last()) {
        report.push(
            Figure::new(&format!("write cost, {}k tasks vs none", largest / 1000), "p50 ratio", p50 / base, "×")
                .target("<= 1.5×"),
        );
    }
    report.how(
        "write cost",
        format!(
            "For each size a fresh 1-manager cluster without agents is filled with services of {REPLICAS_PER_SERVICE} \
             replicas (at 100k: 90 of them and one of {LARGE_SERVICE}) (every task stays pending, the worst case for the scheduler: it has work it cannot do). Idle \
             CPU: utime+stime of the manager from `/proc/<pid>/stat` over {idle_window:?}, 2 s after the fill. \
             Writes: {writes} sequential `UpdateService` calls on a 0-replica service, each changing a label (what \
             `service update -d --label-add` sends), timed at the caller over mutual TLS on loopback; CPU per write \
             is the manager's CPU over the writes and the 500 ms after, divided by the writes. `service ls`: \
             `ListServices` with server-side summaries; `service ps`: `ListTasks` of one 1000-task service; medians \
             of 5; the CLI rows run the `shoal` binary as a user does (process start, TLS, every page of 5,000 \
             tasks, the table), median of 5. The snapshot rows: the largest size again on a manager started with \
             `--snapshot-interval 100`, 300 writes, so about three snapshots of the whole store are taken among \
             them: the raft thread takes a copy-on-write view of the store, and its serialisation, write and sync \
             happen on a thread of their own."
        ),
    );
    Ok(())
}
