//! `shoal-bench`: runs shoal's benchmarks against real processes and writes one report.
//! Figures are measured, never asserted: a scenario fails only if it breaks.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde::Serialize;
use shoal_proto::v1::CreateServiceRequest;
use shoal_tests::{Cluster, connect};
use shoal_types::ServiceSpec;
use tokio::time::Instant;

#[derive(Parser, Debug)]
#[command(name = "shoal-bench", about = "Runs shoal's benchmarks and writes docs/benchmarks.md and .json")]
struct Args {
    /// Small sample sizes (CI: checks every scenario still runs, in about a minute).
    #[arg(long)]
    quick: bool,
    /// Markdown report to write (the JSON goes next to it).
    #[arg(long, default_value = "docs/benchmarks.md")]
    out: PathBuf,
    /// Do not write the report, only print it.
    #[arg(long)]
    no_write: bool,
}

#[derive(Serialize, Debug, Clone)]
struct Figure {
    scenario: String,
    metric: String,
    value: f64,
    unit: String,
    target: String,
    samples: usize,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn spec(name: &str) -> String {
    serde_json::to_string(&ServiceSpec::new(name, "shoal/busybox:1")).expect("spec serialises")
}

/// Sequential and pipelined commits through the leader of a 3-manager cluster.
async fn raft_commits(quick: bool, figures: &mut Vec<Figure>) -> Result<()> {
    let mut cluster = Cluster::start(3).await?;
    let leader = cluster.leader().await?;
    let addr = cluster.managers[leader].addr.clone();

    let sequential = if quick { 200 } else { 3000 };
    let mut client = connect(&addr).await?;
    let mut latencies = Vec::with_capacity(sequential);
    let started = Instant::now();
    for i in 0..sequential {
        let t = Instant::now();
        client.create_service(CreateServiceRequest { spec_json: spec(&format!("seq-{i}")) }).await?;
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let scenario = "raft commits, 3 managers, 1 sequential client";
    figures.push(Figure { scenario: scenario.into(), metric: "throughput".into(), value: sequential as f64 / elapsed, unit: "commits/s".into(), target: ">= 1000".into(), samples: sequential });
    figures.push(Figure { scenario: scenario.into(), metric: "latency p50".into(), value: percentile(&latencies, 50.0), unit: "ms".into(), target: "<= 1".into(), samples: sequential });
    figures.push(Figure { scenario: scenario.into(), metric: "latency p99".into(), value: percentile(&latencies, 99.0), unit: "ms".into(), target: "".into(), samples: sequential });

    let total = if quick { 2000 } else { 30_000 };
    let in_flight = 256;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..in_flight {
        let (next, mut client) = (next.clone(), client.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= total {
                    return Ok::<_, anyhow::Error>(latencies);
                }
                let t = Instant::now();
                client.create_service(CreateServiceRequest { spec_json: spec(&format!("par-{i}")) }).await?;
                latencies.push(t.elapsed().as_secs_f64() * 1e3);
            }
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    for w in workers {
        latencies.extend(w.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let scenario = "raft commits, 3 managers, 256 in flight";
    figures.push(Figure { scenario: scenario.into(), metric: "throughput".into(), value: total as f64 / elapsed, unit: "commits/s".into(), target: ">= 20000".into(), samples: total });
    figures.push(Figure { scenario: scenario.into(), metric: "latency p50".into(), value: percentile(&latencies, 50.0), unit: "ms".into(), target: "".into(), samples: total });
    figures.push(Figure { scenario: scenario.into(), metric: "latency p99".into(), value: percentile(&latencies, 99.0), unit: "ms".into(), target: "".into(), samples: total });
    let info = shoal_tests::cluster_info(&addr).await?;
    if info.services != sequential + total {
        bail!("expected {} services after the run, found {}", sequential + total, info.services);
    }
    Ok(())
}

/// kill -9 of the leader until a write succeeds through another manager.
async fn leader_failover(quick: bool, figures: &mut Vec<Figure>) -> Result<()> {
    let trials = if quick { 3 } else { 20 };
    let mut cluster = Cluster::start(3).await?;
    let mut times = Vec::new();
    for trial in 0..trials {
        let leader = cluster.leader().await?;
        let old = cluster.managers[leader].addr.clone();
        let others: Vec<String> = cluster.running_addrs().into_iter().filter(|a| *a != old).collect();
        let mut clients = Vec::new();
        for addr in &others {
            clients.push(connect(addr).await?);
        }
        cluster.managers[leader].kill9();
        let killed = Instant::now();
        let mut attempt = 0usize;
        loop {
            let n = clients.len();
            let client = &mut clients[attempt % n];
            attempt += 1;
            let request = CreateServiceRequest { spec_json: spec(&format!("failover-{trial}-{attempt}")) };
            match tokio::time::timeout(Duration::from_millis(500), client.create_service(request)).await {
                Ok(Ok(_)) => break,
                _ if killed.elapsed() > Duration::from_secs(30) => bail!("no write succeeded within 30s of killing the leader"),
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
        times.push(killed.elapsed().as_secs_f64() * 1e3);
        cluster.managers[leader].restart()?;
        let commit = cluster.wait_for(Duration::from_secs(10), |i| i.leader.is_some()).await?.raft.commit;
        shoal_tests::wait_applied(&old, commit, Duration::from_secs(20)).await.context("restarted manager catching up")?;
    }
    times.sort_by(f64::total_cmp);
    let scenario = "leader failover after kill -9 (3 managers; until a write succeeds)";
    figures.push(Figure { scenario: scenario.into(), metric: "p50".into(), value: percentile(&times, 50.0), unit: "ms".into(), target: "<= 500".into(), samples: trials });
    figures.push(Figure { scenario: scenario.into(), metric: "p99".into(), value: percentile(&times, 99.0), unit: "ms".into(), target: "<= 1500".into(), samples: trials });
    Ok(())
}

fn render(figures: &[Figure], args: &Args, command: &str) -> String {
    let mut out = String::new();
    out.push_str("# shoal benchmarks\n\n");
    out.push_str(&format!(
        "Produced by `{command}` on {} ({} cores){}. Figures are measured on this machine in one run; \
         nothing here is asserted by tests.\n\n",
        shoal_control_free_hostname(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        if args.quick { ", quick mode (small samples: a smoke check, not a measurement)" } else { "" }
    ));
    out.push_str("| scenario | metric | shoal | target | samples |\n|---|---|---|---|---|\n");
    for f in figures {
        out.push_str(&format!(
            "| {} | {} | {:.2} {} | {} | {} |\n",
            f.scenario, f.metric, f.value, f.unit, if f.target.is_empty() { "—".into() } else { format!("{} {}", f.target, f.unit) }, f.samples
        ));
    }
    out
}

fn shoal_control_free_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_else(|_| "this machine".into())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let command = std::env::args().map(|a| if a.contains("target/") { "shoal-bench".into() } else { a }).collect::<Vec<_>>().join(" ");
    let mut figures = Vec::new();
    eprintln!("==> raft commits");
    raft_commits(args.quick, &mut figures).await.context("raft commits scenario")?;
    eprintln!("==> leader failover");
    leader_failover(args.quick, &mut figures).await.context("leader failover scenario")?;
    let report = render(&figures, &args, &command);
    println!("{report}");
    if !args.no_write {
        std::fs::write(&args.out, &report)?;
        std::fs::write(args.out.with_extension("json"), serde_json::to_string_pretty(&figures)?)?;
        eprintln!("wrote {} and {}", args.out.display(), args.out.with_extension("json").display());
    }
    Ok(())
}
