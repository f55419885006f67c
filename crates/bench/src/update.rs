//! Rolling updates `shoal/busybox:1` → `shoal/busybox:2` at several parallelism values, stop-first
//! and start-first, and rollbacks back to `:1`: shoal, the raw Docker floor and Docker Swarm.

use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use shoal_tests::{Cluster, connect};
use shoal_types::{GoDuration, Quantity, UpdateOrder, UpdateState};
use tokio::time::Instant;

use crate::Ctx;
use crate::engine::{Engine, IMAGE_V1, IMAGE_V2, POLL, RAW_LABEL, RawGuard, Swarm, swarm_label};
use crate::report::{Figure, Kind, Report, median};
use crate::svc::{self, Client};

const PARALLELISM: usize = 5;
const TIMEOUT: Duration = Duration::from_secs(180);

#[derive(Clone, Copy, PartialEq)]
struct Variant {
    replicas: usize,
    /// Tasks replaced at once; 0 = all (Swarm's meaning).
    parallelism: usize,
    order: UpdateOrder,
    /// Measure the rollback (`:2` back to `:1`, with the same settings) instead of the update.
    rollback: bool,
    /// A surge budget (max surge, max unavailable, as counts) instead of parallelism and order,
    /// with monitor 0 (Kubernetes' default minReadySeconds): a task is available once it runs.
    budget: Option<(usize, usize)>,
    /// shoal's `--update-prepare-ahead` (and `--rollback-prepare-ahead`): every new container is
    /// created when the rollout starts. Raw Docker and Swarm have no such thing: a prepared
    /// variant is compared with the figures of its unprepared twin.
    prepare_ahead: bool,
    /// The update removes the containers it replaced (`--update-old-tasks remove`), so the
    /// rollback creates new containers instead of restarting the stopped ones in place.
    old_removed: bool,
}

impl Variant {
    /// The same variant as raw Docker and Swarm run it: without preparing ahead, containers kept
    /// (a shoal-only variant is compared with their figures for it).
    fn baseline(self) -> Variant {
        Variant { prepare_ahead: false, old_removed: false, ..self }
    }

    fn shoal_only(self) -> bool {
        self != self.baseline()
    }

    fn batch_size(self) -> usize {
        match self.budget {
            Some((surge, unavailable)) => surge + unavailable,
            None if self.parallelism == 0 => self.replicas,
            None => self.parallelism,
        }
    }

    fn batches(self) -> usize {
        self.replicas.div_ceil(self.batch_size())
    }

    fn scenario(self) -> String {
        let what = match (self.rollback, self.prepare_ahead, self.old_removed) {
            (true, _, true) => "rollback, containers created anew",
            (true, true, false) => "rollback prepared ahead",
            (true, false, false) => "rollback",
            (false, false, _) => "rolling update",
            (false, true, _) => "rolling update prepared ahead",
        };
        if let Some((surge, unavailable)) = self.budget {
            return format!("{what}, {} replicas, max surge {surge}, max unavailable {unavailable}", self.replicas);
        }
        if self.replicas == 1 {
            return format!("{what}, 1 replica, {}", self.order.as_str());
        }
        let parallelism =
            if self.parallelism == 0 { "0 (all at once)".to_string() } else { self.parallelism.to_string() };
        format!("{what}, {} replicas, parallelism {parallelism}, {}", self.replicas, self.order.as_str())
    }
}

struct Images {
    v1: String,
    v2: String,
}

pub async fn rolling_update(ctx: &mut Ctx, report: &mut Report) -> Result<()> {
    let n = if ctx.quick { 6 } else { 30 };
    let trials = if ctx.quick { 1 } else { 3 };
    let v = |replicas, parallelism, order, rollback| Variant {
        replicas,
        parallelism,
        order,
        rollback,
        budget: None,
        prepare_ahead: false,
        old_removed: false,
    };
    let budgeted = |replicas, surge, unavailable| Variant {
        replicas,
        parallelism: 1,
        order: UpdateOrder::StopFirst,
        rollback: false,
        budget: Some((surge, unavailable)),
        prepare_ahead: false,
        old_removed: false,
    };
    let mut variants: Vec<Variant> = if ctx.quick {
        // One of each kind (parallelism values, orders, a single replica, a rollback), so the smoke
        // run stays under two minutes.
        vec![
            v(n, PARALLELISM, UpdateOrder::StopFirst, false),
            v(n, 0, UpdateOrder::StartFirst, false),
            v(1, 1, UpdateOrder::StopFirst, false),
            v(n, PARALLELISM, UpdateOrder::StartFirst, true),
            budgeted(n, 2, 1),
        ]
    } else {
        vec![
            v(n, PARALLELISM, UpdateOrder::StopFirst, false),
            v(n, PARALLELISM, UpdateOrder::StartFirst, false),
            v(n, 1, UpdateOrder::StopFirst, false),
            v(n, 0, UpdateOrder::StopFirst, false),
            v(n, 0, UpdateOrder::StartFirst, false),
            v(1, PARALLELISM, UpdateOrder::StopFirst, false),
            v(1, PARALLELISM, UpdateOrder::StartFirst, false),
            v(n, PARALLELISM, UpdateOrder::StopFirst, true),
            v(n, PARALLELISM, UpdateOrder::StartFirst, true),
            // Kubernetes' default budget, 25% / 25% of 30: surge 8 (rounded up), unavailable 7.
            budgeted(n, n.div_ceil(4), n / 4),
            budgeted(n, 1, 0),
        ]
    };
    // Each Swarm-style variant once more with every new container prepared when the rollout
    // starts (a surge budget excludes preparing ahead; the smoke run takes one).
    let prepared: Vec<Variant> = variants
        .iter()
        .filter(|v| v.budget.is_none() && v.parallelism != 0)
        .map(|v| Variant { prepare_ahead: true, ..*v })
        .take(if ctx.quick { 1 } else { usize::MAX })
        .collect();
    // Each rollback once more with the update's old containers removed: the rollback then
    // creates containers instead of restarting the stopped ones in place.
    let anew: Vec<Variant> = variants
        .iter()
        .filter(|v| v.rollback && !v.prepare_ahead)
        .map(|v| Variant { old_removed: true, ..*v })
        .collect();
    variants.extend(prepared);
    variants.extend(anew);
    let engine = Engine::connect().await?;
    let images = Images { v1: engine.image_id(IMAGE_V1).await?, v2: engine.image_id(IMAGE_V2).await? };

    // Raw Docker floor: (to all v2 running, total including the last stops), per variant and trial.
    let mut raw: Vec<Vec<(f64, f64)>> = vec![Vec::new(); variants.len()];
    {
        let _guard = RawGuard;
        for (i, v) in variants.iter().enumerate() {
            if v.shoal_only() {
                continue;
            }
            for _ in 0..trials {
                raw[i].push(raw_update(&engine, &images, *v).await?);
            }
        }
    }

    // shoal: (to all v2 running, to update completed).
    let mut shoal: Vec<Vec<(f64, f64)>> = vec![Vec::new(); variants.len()];
    {
        let mut cluster = Cluster::start(1).await?;
        cluster.add_agent(&[]).await?;
        cluster.add_agent(&[]).await?;
        let addr = cluster.running_addrs()[0].clone();
        let mut client = connect(&addr).await?;
        let mut k = 0;
        for (i, v) in variants.iter().enumerate() {
            for _ in 0..trials {
                k += 1;
                let name = format!("sb-update-{k}");
                let result = shoal_update(&engine, &mut client, &images, *v, &name).await.with_context(|| {
                    format!("shoal {} update of {} replicas; logs:\n{}", v.order.as_str(), v.replicas, cluster.logs())
                })?;
                shoal[i].push(result);
            }
        }
    }

    // Docker Swarm: to all v2 running.
    let mut swarm_note = String::new();
    let swarm: Option<Vec<Vec<f64>>> = match ctx.swarm() {
        Err(e) => {
            swarm_note = format!(" **Docker Swarm could not be measured in this run: {e}.**");
            None
        }
        Ok(swarm) => {
            let mut all = vec![Vec::new(); variants.len()];
            let mut failure = None;
            'outer: for (i, v) in variants.iter().enumerate() {
                // Swarm has no surge budget: nothing to compare with; a prepared variant is
                // compared with its unprepared twin's figure.
                if v.budget.is_some() || v.shoal_only() {
                    continue;
                }
                for _ in 0..trials {
                    match swarm_update(&engine, swarm, &images, *v).await {
                        Ok(t) => all[i].push(t),
                        Err(e) => {
                            failure = Some(format!("{e:#}"));
                            break 'outer;
                        }
                    }
                }
            }
            match failure {
                Some(e) => {
                    eprintln!("    warning: Docker Swarm: {e}");
                    swarm_note = format!(" **Docker Swarm failed in this run: {e}.**");
                    None
                }
                None => Some(all),
            }
        }
    };
    ctx.leave_swarm();

    let mut raw_totals = Vec::new();
    for (i, v) in variants.iter().enumerate() {
        let scenario = v.scenario();
        // Raw Docker and Swarm figures come from the baseline twin's run.
        let twin = variants.iter().position(|b| *b == v.baseline()).unwrap_or(i);
        let shoal_v2 = median(&shoal[i].iter().map(|r| r.0).collect::<Vec<_>>());
        let shoal_done = median(&shoal[i].iter().map(|r| r.1).collect::<Vec<_>>());
        let raw_v2 = median(&raw[twin].iter().map(|r| r.0).collect::<Vec<_>>());
        let raw_total = median(&raw[twin].iter().map(|r| r.1).collect::<Vec<_>>());
        if !v.shoal_only() {
            raw_totals.push(format!("{scenario}: {raw_total:.2} s"));
        }
        let measure = if v.rollback { "rollback call → all v1 running" } else { "update call → all v2 running" };
        let target = match (v.prepare_ahead, v.parallelism, v.order, v.rollback) {
            (true, PARALLELISM, UpdateOrder::StopFirst, false) => "<= 0.7× raw docker (prepare-ahead goal)",
            (true, ..) => "<= raw docker; <= 0.5× Docker Swarm",
            (false, ..) => "<= 1.15× raw docker; <= 0.5× Docker Swarm",
        };
        let mut figure = Figure::new(&scenario, measure, shoal_v2, "s")
            .reference("raw docker", raw_v2, Kind::Measured)
            .target(target)
            .samples(trials);
        if let Some(swarm) = swarm.as_ref().filter(|swarm| !swarm[twin].is_empty()) {
            figure = figure.reference("Docker Swarm", median(&swarm[twin]), Kind::Measured);
        }
        // A rollback restarting the stopped containers in place, beside the same rollback
        // creating new ones.
        if v.rollback
            && !v.old_removed
            && let Some(anew) = variants.iter().position(|b| *b == Variant { old_removed: true, ..*v })
        {
            let anew_v1 = median(&shoal[anew].iter().map(|r| r.0).collect::<Vec<_>>());
            figure = figure.reference("shoal, containers created anew", anew_v1, Kind::Measured);
        }
        report.push(figure);
        report.push(
            Figure::new(
                &scenario,
                "per-batch overhead over raw docker",
                (shoal_v2 - raw_v2) * 1e3 / v.batches() as f64,
                "ms",
            )
            .target("<= 50 ms")
            .samples(v.batches()),
        );
        let done = match (v.rollback, v.budget) {
            (true, _) => "rollback call → update_status rollback_completed (incl. 5 s monitor)",
            (false, Some(_)) => "update call → update_status completed (monitor 0)",
            (false, None) => "update call → update_status completed (incl. 5 s monitor)",
        };
        report.push(Figure::new(&scenario, done, shoal_done, "s").samples(trials));
    }
    report.how(
        "rolling update",
        format!(
            "N = {n} (and 1) replicas of `{IMAGE_V1}` updated to `{IMAGE_V2}` with parallelism {PARALLELISM}, 1 and 0 \
             (all at once), delay 0, stop-first and start-first; median of {trials} trial(s) per variant; a fresh \
             service per trial. **Surge budget** variants (Kubernetes' RollingUpdate: max surge S, max unavailable U, \
             monitor 0 so a task is available once it runs; Swarm has none, so no Swarm figure): the raw floor \
             replaces the containers in waves of S + U, the first S of a wave started beside their old container, \
             the rest after it stopped. **Prepared ahead** variants: the same service with `--update-prepare-ahead` \
             (and `--rollback-prepare-ahead`), so every new container is created when the rollout starts and each \
             batch only stops the old containers and starts the prepared ones; raw Docker and Swarm have no such \
             mode, so those rows repeat the raw Docker and Swarm figures of the same variant without it. \
             **Rollback, containers created anew**: the update runs with `--update-old-tasks remove`, so the \
             rollback has no stopped container to restart in place and creates new ones; the plain rollback rows \
             (old containers stopped and kept, Swarm's default) restart them, and carry this figure beside theirs. **Rollback** variants: the service is created with the same rollback settings \
             (`rollback_config` parallelism {PARALLELISM}, delay 0, same order), updated to `{IMAGE_V2}`; once all v2 \
             containers run and no v1 container runs any more, the clock starts before the rollback call (shoal: `UpdateService` with `rollback`; Swarm: \
             `docker service rollback --detach`) and stops when N containers run the v1 image; the raw \
             floor replaces N v2 containers by v1 ones exactly as for an update. \
             **shoal** (1 manager + 2 agents): the service is created with that update config (other fields at \
             their defaults, so monitor 5 s), all N v1 containers run, then the clock starts before the \
             `UpdateService` call (spec with the new image, version just read); the benchmark follows the engine's `start` events until \
             N containers of the service run the v2 image id (it does not poll the engine meanwhile: a container \
             list costs the engine milliseconds of CPU, which slowed the starts being timed, while the raw floor \
             runs unobserved; a safety look once a second), and \"all v2 running\" is the \
             moment the last of those N containers started, taken from the engine's own record of it (`State.StartedAt`, so the \
             figure does not depend on when the benchmark looks). `GetService` is polled only after that. \"update_status completed\" is when `GetService` shows `completed`, which includes the final 5 s monitor window, so it is \
             not comparable. **raw docker** (floor, bollard): N v1 containers run; then batches of {PARALLELISM}, one \
             after the other; within a batch, for each container in parallel: stop-first = stop the old one \
             (`docker stop -t 10`) then create+start a new one; start-first = create+start the new one then stop the old one. The \
             figure is the moment the last of the N v2 containers started (its `State.StartedAt`, as for \
             shoal); the whole run, including the last stops, took: {}. \
             **Docker Swarm**: the service is created with `--update-parallelism P --update-delay 0s \
             --update-order <order>` (and the same `--rollback-*`), then the clock starts before `docker service update --detach \
             --no-resolve-image --image {IMAGE_V2} --update-parallelism P --update-delay 0s \
             --update-order <order>`; once N running containers labelled \
             `com.docker.swarm.service.name=sb_update` have the v2 image id (watched like shoal's), the figure is \
             the last of their start times, as for shoal. Per-batch overhead \
             = (shoal − raw docker) / ⌈N/P⌉ batches. The swarm exists only while Swarm is measured: raw Docker and shoal run on an engine outside swarm mode.{swarm_note}",
            raw_totals.join(", ")
        ),
    );
    Ok(())
}

async fn raw_update(engine: &Engine, images: &Images, v: Variant) -> Result<(f64, f64)> {
    // A rollback replaces v2 containers by v1 ones: the same work the other way round.
    let (from, to, to_id) =
        if v.rollback { (IMAGE_V2, IMAGE_V1, &images.v1) } else { (IMAGE_V1, IMAGE_V2, &images.v2) };
    let olds = futures::future::try_join_all((0..v.replicas).map(|_| engine.run(from))).await?;
    let since = SystemTime::now();
    let started = Instant::now();
    for batch in olds.chunks(v.batch_size()) {
        futures::future::try_join_all(batch.iter().enumerate().map(|(k, old)| async move {
            // A budget's wave: the first `surge` replacements start beside their old container,
            // the rest after it stopped.
            let order = match v.budget {
                Some((surge, _)) if k < surge => UpdateOrder::StartFirst,
                Some(_) => UpdateOrder::StopFirst,
                None => v.order,
            };
            match order {
                UpdateOrder::StopFirst => {
                    engine.stop(old).await?;
                    engine.run(to).await?;
                }
                UpdateOrder::StartFirst => {
                    engine.run(to).await?;
                    engine.stop(old).await?;
                }
            }
            Ok::<_, anyhow::Error>(())
        }))
        .await?;
    }
    let total = started.elapsed().as_secs_f64();
    let news = engine.running_ids(RAW_LABEL, Some(to_id)).await?;
    if news.len() != v.replicas {
        bail!("raw docker: {} of {} new containers run", news.len(), v.replicas);
    }
    let all_v2 = engine.last_start(&news, since).await?;
    engine.remove_all(RAW_LABEL).await?;
    Ok((all_v2, total))
}

async fn shoal_update(
    engine: &Engine,
    client: &mut Client,
    images: &Images,
    v: Variant,
    name: &str,
) -> Result<(f64, f64)> {
    let label = svc::label(name);
    let mut spec = svc::replicated(name, IMAGE_V1, v.replicas);
    for config in [&mut spec.update_config, &mut spec.rollback_config] {
        config.parallelism = v.parallelism as u64;
        config.delay = GoDuration::from_secs(0);
        config.order = v.order;
        config.prepare_ahead = v.prepare_ahead;
        if v.old_removed {
            config.old_tasks = shoal_types::OldTasks::Remove;
        }
        if let Some((surge, unavailable)) = v.budget {
            config.max_surge = Some(Quantity::Count(surge as u64));
            config.max_unavailable = Some(Quantity::Count(unavailable as u64));
            config.monitor = GoDuration::ZERO;
        }
    }
    svc::create(client, &spec).await?;
    engine.wait_running(&label, Some(&images.v1), v.replicas, Instant::now(), TIMEOUT).await?;

    let mut since = SystemTime::now();
    let mut started = Instant::now();
    svc::update(client, name, |s| s.task.container.image = IMAGE_V2.into()).await?;
    let (target, done_state) = if v.rollback {
        engine.wait_running(&label, Some(&images.v2), v.replicas, started, TIMEOUT).await?;
        // The rollback starts from a finished update: a start-first update's last v1 containers
        // may still be stopping, and must not count as rolled back.
        engine.wait_none_running(&label, &images.v1, TIMEOUT).await?;
        since = SystemTime::now();
        started = Instant::now();
        svc::rollback(client, name).await?;
        (&images.v1, UpdateState::RollbackCompleted)
    } else {
        (&images.v2, UpdateState::Completed)
    };
    // The engine is not polled while it starts the new containers (see `Engine::wait_started`);
    // the manager is asked for the update's state only once they all run.
    let v2_running = engine.wait_started(&label, Some(target), v.replicas, since, TIMEOUT).await?;
    let completed = loop {
        let service = svc::get(client, name).await?;
        if service.update_status.as_ref().is_some_and(|u| u.state == done_state) {
            break started.elapsed().as_secs_f64();
        }
        if started.elapsed() > TIMEOUT {
            bail!("update not done after {TIMEOUT:?}: all new containers ran at {v2_running:.2} s");
        }
        tokio::time::sleep(POLL).await;
    };
    svc::remove(client, name).await?;
    if let Err(e) = engine.wait_gone(&label, Duration::from_secs(60)).await {
        eprintln!("    warning: shoal: {e:#}");
    }
    Ok((v2_running, completed))
}

async fn swarm_update(engine: &Engine, swarm: &mut Swarm, images: &Images, v: Variant) -> Result<f64> {
    let name = "sb_update";
    let label = swarm_label(name);
    let parallelism = v.parallelism.to_string();
    let order = v.order.as_str();
    let flags = ["--update-parallelism", &parallelism, "--update-delay", "0s", "--update-order", order];
    let rollback_flags = ["--rollback-parallelism", &parallelism, "--rollback-delay", "0s", "--rollback-order", order];
    let outcome = async {
        let create: Vec<&str> = flags.iter().chain(rollback_flags.iter()).copied().collect();
        swarm.create(name, v.replicas, &create, IMAGE_V1).await?;
        engine.wait_running(&label, Some(&images.v1), v.replicas, Instant::now(), TIMEOUT).await?;
        let since = SystemTime::now();
        let mut args = vec!["--image", IMAGE_V2];
        args.extend_from_slice(&flags);
        swarm.update(name, &args).await?;
        let to_v2 = engine.wait_started(&label, Some(&images.v2), v.replicas, since, TIMEOUT).await?;
        if !v.rollback {
            return Ok(to_v2);
        }
        engine.wait_none_running(&label, &images.v1, TIMEOUT).await?;
        let since = SystemTime::now();
        swarm.rollback(name).await?;
        engine.wait_started(&label, Some(&images.v1), v.replicas, since, TIMEOUT).await
    }
    .await;
    let removed = swarm.remove(engine, name).await;
    let t = outcome?;
    removed?;
    Ok(t)
}
