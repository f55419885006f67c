//! Time from "create" to N running containers: shoal, the raw Docker floor and Docker Swarm.

use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use shoal_tests::{Cluster, connect};

use crate::Ctx;
use crate::engine::{Engine, IMAGE_V1, RAW_LABEL, RawGuard, swarm_label};
use crate::report::{Figure, Kind, Report, median};
use crate::svc;

const TIMEOUT: Duration = Duration::from_secs(120);

pub async fn converge(ctx: &mut Ctx, report: &mut Report) -> Result<()> {
    let n = if ctx.quick { 6 } else { 30 };
    let trials = if ctx.quick { 1 } else { 3 };
    let engine = Engine::connect().await?;

    // Raw Docker floor: N concurrent create+start calls; done when the last start returned.
    let mut raw = Vec::new();
    {
        let _guard = RawGuard;
        for _ in 0..trials {
            let since = SystemTime::now();
            futures::future::try_join_all((0..n).map(|_| engine.run(IMAGE_V1))).await?;
            let running = engine.running_ids(RAW_LABEL, None).await?;
            if running.len() != n {
                bail!("raw docker: {} of {n} containers run", running.len());
            }
            raw.push(engine.last_start(&running, since).await?);
            engine.remove_all(RAW_LABEL).await?;
        }
    }

    // shoal: 1 manager + 2 agents; create, then watch the engine.
    let mut shoal = Vec::new();
    {
        let mut cluster = Cluster::start(1).await?;
        cluster.add_agent(&[]).await?;
        cluster.add_agent(&[]).await?;
        let addr = cluster.running_addrs()[0].clone();
        let mut client = connect(&addr).await?;
        for trial in 0..trials {
            let name = format!("sb-converge-{trial}");
            let spec = svc::replicated(&name, IMAGE_V1, n);
            let since = SystemTime::now();
            svc::create(&mut client, &spec).await?;
            let secs = engine
                .wait_started(&svc::label(&name), None, n, since, TIMEOUT)
                .await
                .with_context(|| format!("shoal did not converge; logs:\n{}", cluster.logs()))?;
            shoal.push(secs);
            svc::remove(&mut client, &name).await?;
            if let Err(e) = engine.wait_gone(&svc::label(&name), Duration::from_secs(60)).await {
                eprintln!("    warning: shoal: {e:#}");
            }
        }
    }

    // Docker Swarm on this engine.
    let mut swarm_note = String::new();
    let swarm: Option<Vec<f64>> = match ctx.swarm() {
        Err(e) => {
            swarm_note = format!(" **Docker Swarm could not be measured in this run: {e}.**");
            None
        }
        Ok(swarm) => {
            let mut times = Vec::new();
            let mut failure = None;
            for _ in 0..trials {
                let name = "sb_converge";
                let since = SystemTime::now();
                let outcome = async {
                    swarm.create(name, n, &[], IMAGE_V1).await?;
                    engine.wait_started(&swarm_label(name), None, n, since, TIMEOUT).await
                }
                .await;
                let removed = swarm.remove(&engine, name).await;
                match outcome.and_then(|t| removed.map(|_| t)) {
                    Ok(t) => times.push(t),
                    Err(e) => {
                        failure = Some(format!("{e:#}"));
                        break;
                    }
                }
            }
            match failure {
                Some(e) => {
                    eprintln!("    warning: Docker Swarm: {e}");
                    swarm_note = format!(" **Docker Swarm failed in this run: {e}.**");
                    None
                }
                None => Some(times),
            }
        }
    };
    ctx.leave_swarm();

    let scenario = format!("converge {n} replicas (1 manager + 2 agents)");
    let mut figure = Figure::new(&scenario, "create → all running", median(&shoal), "s")
        .reference("raw docker", median(&raw), Kind::Measured)
        .target("<= 1.2× raw docker; < Docker Swarm")
        .samples(trials);
    if let Some(times) = &swarm {
        figure = figure.reference("Docker Swarm", median(times), Kind::Measured);
    }
    report.push(figure);
    report.how(
        "converge N replicas",
        format!(
            "N = {n}, median of {trials} trial(s). One Docker engine runs everything. **shoal**: 1 `shoal-manager` + 2 \
             `shoal-agent` processes; the clock starts before the `CreateService` call ({n} replicas of \
             `{IMAGE_V1}`); the benchmark follows the engine's `start` events (it does not poll the engine, whose \
             list calls would slow the starts being timed; a safety look once a second) until {n} containers labelled \
             `org.shoal.service.name=<name>` run, and the clock stops at the latest of their `State.StartedAt` (the \
             engine's own record of when each container started, so the figure does not depend on when the benchmark looks). **raw docker** (floor): {n} \
             concurrent create+start calls through the Docker API (bollard, the equivalent of `docker run -d`); the \
             clock stops at the last of their start times, as for shoal. **Docker \
             Swarm**: `docker service create --detach --no-resolve-image --replicas {n}` on this engine (a one-node \
             swarm, initialised for the run with `docker swarm init --advertise-addr 127.0.0.1` if the engine was not \
             in one, and left afterwards); the clock starts before the CLI runs; once {n} containers \
             labelled `com.docker.swarm.service.name=sb_converge` run (watched the same way), it stops at the last of \
             their start times, as for shoal. Services and \
             containers are removed between trials. The swarm exists only while Swarm is measured: raw Docker and shoal run on an engine outside swarm mode.{swarm_note}"
        ),
    );
    Ok(())
}
