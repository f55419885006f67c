//! The scheduler on its own: placements per second of `shoal_scheduler::solve`, in process.

use anyhow::{Result, bail};
use tokio::time::Instant;

use crate::report::{Figure, Kind, Report, median};

/// SwarmKit's published scheduler benchmarks (moby/swarmkit PR #193, 2016, "a rather old laptop";
/// the times include creating the nodes and tasks).
const SWARMKIT_PR: &str = "https://github.com/moby/swarmkit/pull/193";

pub async fn placements(report: &mut Report) -> Result<()> {
    let runs = 5;
    // (nodes, tasks, constrained, SwarmKit's published (tasks, nodes, seconds) to compare with)
    let cases = [(1_000, 10_000, false, (10_000.0, 1_000, 1.8)), (10_000, 100_000, true, (100_000.0, 1_000, 22.6))];
    let mut lines = Vec::new();
    for (nodes, tasks, constrained, (ref_tasks, ref_nodes, ref_secs)) in cases {
        let mut secs = Vec::with_capacity(runs);
        let mut with_build = Vec::with_capacity(runs);
        for _ in 0..runs {
            let built = Instant::now();
            let problem = shoal_scheduler::synthetic_problem(nodes, tasks, constrained);
            let started = Instant::now();
            let solution = tokio::task::block_in_place(|| shoal_scheduler::solve(&problem));
            secs.push(started.elapsed().as_secs_f64());
            with_build.push(built.elapsed().as_secs_f64());
            if solution.assignments.len() != tasks || !solution.unschedulable.is_empty() {
                bail!(
                    "{tasks} tasks on {nodes} nodes: {} placed, {} unschedulable",
                    solution.assignments.len(),
                    solution.unschedulable.len()
                );
            }
        }
        let rate = tasks as f64 / median(&secs);
        let scenario = format!(
            "scheduler, {}k tasks on {}k nodes{}",
            tasks / 1000,
            nodes / 1000,
            if constrained { ", constraint matching 1/3 of the nodes" } else { "" }
        );
        let reference = format!("SwarmKit {}k tasks / {}k nodes", ref_tasks as u64 / 1000, ref_nodes / 1000);
        report.push(
            Figure::new(&scenario, "placements/s (median)", rate, "placements/s")
                .reference(&reference, ref_tasks / ref_secs, Kind::Published)
                .target(">= 40,000 placements/s")
                .samples(runs),
        );
        report.push(
            Figure::new(
                &scenario,
                "placements/s incl. building the problem (as SwarmKit's)",
                tasks as f64 / median(&with_build),
                "placements/s",
            )
            .reference(&reference, ref_tasks / ref_secs, Kind::Published)
            .samples(runs),
        );
        lines.push(format!(
            "{tasks} tasks on {nodes} nodes: median {:.3} s ({:.3} s with building)",
            median(&secs),
            median(&with_build)
        ));
    }
    report.how(
        "scheduler",
        format!(
            "In process: `shoal_scheduler::solve(&synthetic_problem(nodes, tasks, constrained))`, {runs} runs each, \
             median time of `solve` alone (the problem is built before the clock starts), and of building the problem + `solve`, which is what SwarmKit's figures include. The synthetic nodes have 8 CPUs / 32 GiB, a \
             third of them labelled `tier=gold` (the constraint), 0–2 background tasks each; every task reserves \
             0.05 CPU / 32 MiB; a run must place every task. Figures: {}. \
             **Reference (published, not measured here):** SwarmKit's own scheduler benchmarks in [moby/swarmkit PR \
             #193]({SWARMKIT_PR}) (2016, \"a rather old laptop\", times include creating the nodes and tasks): 10k \
             tasks on 1k nodes in 1.8 s (5,556/s), 100k tasks on 1k nodes in 22.6 s (4,425/s). Its 100k case used 1k \
             nodes without constraint, ours 10k nodes with a constraint, so that ratio is indicative only.",
            lines.join("; ")
        ),
    );
    Ok(())
}
