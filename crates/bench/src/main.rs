//! `shoal-bench`: runs shoal's benchmarks against real processes and writes one report.
//! Figures are measured, never asserted: a scenario fails only if it breaks.
//!
//! Every container, service and process a scenario makes is removed when the scenario ends, also on
//! error, panic or Ctrl-C; a Docker Swarm initialised for the references is left again.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use anyhow::{Result, anyhow};
use clap::{Parser, ValueEnum};

mod atrest;
mod converge;
mod engine;
mod etcd;
mod memory;
mod nodeloss;
mod nodes;
mod raft;
mod report;
mod scale;
mod sched;
mod svc;
mod traffic;
mod update;

use engine::Swarm;
use report::{Meta, Report};

#[derive(Parser, Debug)]
#[command(name = "shoal-bench", about = "Runs shoal's benchmarks and writes docs/benchmarks.md and .json")]
struct Args {
    /// Small sample sizes (CI: checks every scenario still runs, in under two minutes). Fails only if a
    /// scenario breaks, never because of a figure.
    #[arg(long)]
    quick: bool,
    /// Run only these scenarios (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Scenario>,
    /// Markdown report to write (the JSON goes next to it).
    #[arg(long, default_value = "docs/benchmarks.md")]
    out: PathBuf,
    /// Do not write the report, only print it.
    #[arg(long)]
    no_write: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    /// Raft commit throughput and latency (3 managers).
    Raft,
    /// Leader failover after kill -9.
    Failover,
    /// Scheduler placements per second (in process).
    Scheduler,
    /// Time to N running replicas: shoal, raw Docker, Docker Swarm.
    Converge,
    /// Rolling updates: shoal, raw Docker, Docker Swarm.
    Update,
    /// kill -9 of an agent until its tasks run elsewhere.
    NodeLoss,
    /// Resident memory, raft data size and restart time.
    Memory,
    /// One write's latency and the leader's CPU with 0, 10k and 100k tasks in the store.
    WriteCost,
    /// 1,000 simulated nodes (in-process agents, real managers): converge, roll, lose 100.
    Nodes,
    /// shoal's raft write path against a 3-member etcd, with and without TLS.
    Etcd,
    /// The raft log's write and read cost sealed (encryption at rest) and in the clear.
    AtRest,
    /// Ingress: proxy cost against HAProxy and direct, failed requests during a rolling update.
    Traffic,
}

const ALL: [Scenario; 12] = [
    Scenario::Raft,
    Scenario::Failover,
    Scenario::Scheduler,
    Scenario::Converge,
    Scenario::Update,
    Scenario::NodeLoss,
    Scenario::Memory,
    Scenario::WriteCost,
    Scenario::Nodes,
    Scenario::Etcd,
    Scenario::AtRest,
    Scenario::Traffic,
];

/// What the scenarios share: the mode, and a Docker Swarm made on first use and left when a scenario is done
/// with it (or at the end, also on error or Ctrl-C).
pub struct Ctx {
    pub quick: bool,
    swarm: Option<std::result::Result<Swarm, String>>,
}

impl Ctx {
    /// The swarm session, or why there is none (a missing reference never fails a scenario).
    pub fn swarm(&mut self) -> std::result::Result<&mut Swarm, String> {
        if self.swarm.is_none() {
            self.swarm = Some(Swarm::start().map_err(|e| format!("{e:#}")));
        }
        match self.swarm.as_mut().expect("just set") {
            Ok(swarm) => Ok(swarm),
            Err(e) => Err(e.clone()),
        }
    }

    /// Ends the swarm session (leaving the swarm if this run made it), so that the engine is
    /// measured outside swarm mode everywhere else.
    pub fn leave_swarm(&mut self) {
        self.swarm = None;
    }
}

/// Ctrl-C during the run.
#[derive(Debug)]
struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

/// Runs every scenario; one that breaks is reported and the others still run (the report is
/// written either way); the error names every scenario that broke.
async fn run(args: &Args, scenarios: &[Scenario], report: &mut Report) -> Result<()> {
    let mut ctx = Ctx { quick: args.quick, swarm: None };
    let mut broken = Vec::new();
    for scenario in scenarios {
        let name = scenario.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default();
        eprintln!("==> {name}");
        let result = match scenario {
            Scenario::Raft => raft::raft_commits(args.quick, report).await,
            Scenario::Failover => raft::leader_failover(args.quick, report).await,
            Scenario::Scheduler => sched::placements(report).await,
            Scenario::Converge => converge::converge(&mut ctx, report).await,
            Scenario::Update => update::rolling_update(&mut ctx, report).await,
            Scenario::NodeLoss => nodeloss::node_loss(args.quick, report).await,
            Scenario::Memory => memory::memory(args.quick, report).await,
            Scenario::WriteCost => scale::write_cost(args.quick, report).await,
            Scenario::Nodes => nodes::simulated_nodes(args.quick, report).await,
            Scenario::Etcd => etcd::raft_vs_etcd(args.quick, report).await,
            Scenario::AtRest => atrest::at_rest(args.quick, report).await,
            Scenario::Traffic => traffic::traffic(&mut ctx, report).await,
        };
        if let Err(e) = result {
            eprintln!("shoal-bench: the {name} scenario broke: {e:#}");
            report.how(&format!("{name} (broke)"), format!("This scenario broke in this run: {e:#}"));
            broken.push(name);
        }
    }
    if broken.is_empty() { Ok(()) } else { Err(anyhow!("scenarios that broke: {}", broken.join(", "))) }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let command = std::env::args()
        .enumerate()
        .map(|(i, a)| if i == 0 { "shoal-bench".into() } else { a })
        .collect::<Vec<_>>()
        .join(" ");
    let scenarios: Vec<Scenario> =
        if args.only.is_empty() { ALL.to_vec() } else { ALL.into_iter().filter(|s| args.only.contains(s)).collect() };
    let docker = match engine::Engine::connect().await {
        Ok(engine) => engine.version().await,
        Err(_) => "unreachable".into(),
    };
    let meta = Meta {
        command,
        host: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "this machine".into()),
        cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        cpu: std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| {
                    l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
                })
            })
            .unwrap_or_else(|| "unknown CPU".into()),
        profile: if cfg!(debug_assertions) { "debug" } else { "release" },
        quick: args.quick,
        docker,
    };
    eprintln!("shoal-bench: {} build, {} cores{}", meta.profile, meta.cores, if args.quick { ", quick" } else { "" });

    let mut report = Report::default();
    // Ctrl-C drops the running scenario, whose guards clean up after it.
    let outcome = tokio::select! {
        r = run(&args, &scenarios, &mut report) => r,
        _ = tokio::signal::ctrl_c() => Err(Interrupted.into()),
    };
    // Ctrl-C: no report of a run cut short.
    if outcome.as_ref().is_err_and(|e| e.is::<Interrupted>()) {
        return outcome;
    }

    let markdown = report::render(&report, &meta);
    println!("{markdown}");
    if !args.no_write {
        std::fs::write(&args.out, &markdown)?;
        std::fs::write(args.out.with_extension("json"), report::json(&report, &meta)?)?;
        eprintln!("wrote {} and {}", args.out.display(), args.out.with_extension("json").display());
    }
    outcome?;
    Ok(())
}
