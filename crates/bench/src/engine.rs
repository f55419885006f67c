//! The local Docker engine: the raw-Docker floor (bollard), counting running containers, and a Docker
//! Swarm session that leaves the engine's swarm state as it found it.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptions, EventsOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    StartContainerOptions, StopContainerOptionsBuilder,
};
use futures::StreamExt;
use tokio::time::Instant;

pub const IMAGE_V1: &str = "shoal/busybox:1";
pub const IMAGE_V2: &str = "shoal/busybox:2";
/// How often [`Engine::wait_started`] lists containers when no start event comes.
const SAFETY_LOOK: Duration = Duration::from_secs(1);
/// Label on every container the raw-Docker floor makes.
pub const RAW_LABEL: &str = "shoalbench=1";
/// How often the benchmarks look at the engine while they wait.
pub const POLL: Duration = Duration::from_millis(25);

#[derive(Clone)]
pub struct Engine {
    docker: Docker,
}

impl Engine {
    pub async fn connect() -> Result<Engine> {
        let docker = Docker::connect_with_local_defaults().context("connecting to the Docker engine")?;
        let docker = docker.negotiate_version().await.context("connecting to the Docker engine")?;
        Ok(Engine { docker })
    }

    pub async fn version(&self) -> String {
        match self.docker.version().await {
            Ok(v) => format!("{} (API {})", v.version.unwrap_or_default(), v.api_version.unwrap_or_default()),
            Err(_) => "unknown".into(),
        }
    }

    /// The id (`sha256:…`) of a local image.
    pub async fn image_id(&self, image: &str) -> Result<String> {
        let info = self.docker.inspect_image(image).await.with_context(|| format!("image {image} is not local"))?;
        info.id.context("image without id")
    }

    async fn list(&self, label: &str, all: bool) -> Result<Vec<bollard::models::ContainerSummary>> {
        let filters = HashMap::from([("label".to_string(), vec![label.to_string()])]);
        let opts = ListContainersOptionsBuilder::default().all(all).filters(&filters).build();
        self.docker.list_containers(Some(opts)).await.context("listing containers")
    }

    /// Running containers carrying `label` (`key=value`), of image `image_id` if given.
    pub async fn running(&self, label: &str, image_id: Option<&str>) -> Result<usize> {
        Ok(self.running_ids(label, image_id).await?.len())
    }

    /// Polls until `n` containers with `label` (and of `image_id`) run; returns the seconds since `since`.
    pub async fn wait_running(
        &self,
        label: &str,
        image_id: Option<&str>,
        n: usize,
        since: Instant,
        timeout: Duration,
    ) -> Result<f64> {
        self.poll_running(label, image_id, since + timeout, &format!("at least {n}"), |count| count >= n).await?;
        Ok(since.elapsed().as_secs_f64())
    }

    /// Polls the running containers with `label` (and of `image_id`) until their number satisfies
    /// `done`; returns their ids. `wanted` says what `done` waits for, for the error at `deadline`.
    async fn poll_running(
        &self,
        label: &str,
        image_id: Option<&str>,
        deadline: Instant,
        wanted: &str,
        done: impl Fn(usize) -> bool,
    ) -> Result<Vec<String>> {
        loop {
            let ids = self.running_ids(label, image_id).await?;
            if done(ids.len()) {
                return Ok(ids);
            }
            if Instant::now() > deadline {
                let image = image_id.map(|id| format!(" of {id}")).unwrap_or_default();
                bail!(
                    "{} containers{image} with {label} run, waiting for {wanted}, when the wait timed out",
                    ids.len()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Ids of the running containers carrying `label`, of image `image_id` if given.
    pub async fn running_ids(&self, label: &str, image_id: Option<&str>) -> Result<Vec<String>> {
        Ok(self
            .list(label, false)
            .await?
            .into_iter()
            .filter(|c| c.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING))
            .filter(|c| image_id.is_none_or(|id| c.image_id.as_deref() == Some(id)))
            .filter_map(|c| c.id)
            .collect())
    }

    /// Seconds from `since` to the latest start among the containers `ids`, as the engine recorded
    /// it (`State.StartedAt`): a figure taken from these does not depend on how often the benchmark
    /// polls, and is taken the same way for every system measured.
    pub async fn last_start(&self, ids: &[String], since: SystemTime) -> Result<f64> {
        let mut latest: Option<i128> = None;
        for id in ids {
            let info = self.docker.inspect_container(id, None).await.context("inspecting a container")?;
            let started = info.state.and_then(|s| s.started_at).context("a running container without StartedAt")?;
            let at = parse_rfc3339_nanos(&started)
                .with_context(|| format!("container {id}: StartedAt {started:?} is not an RFC 3339 UTC time"))?;
            latest = Some(latest.map_or(at, |l| l.max(at)));
        }
        let latest = latest.context("no containers to time")?;
        let secs = (latest - nanos_since_epoch(since)) as f64 / 1e9;
        if secs < 0.0 {
            bail!(
                "every one of the {} containers timed started before the clock did: old ones were counted",
                ids.len()
            );
        }
        Ok(secs)
    }

    /// Waits until `n` containers with `label` (and of `image_id`) run, then returns the seconds from
    /// `since` to the last of their starts (see [`Engine::last_start`]).
    ///
    /// It follows the engine's `start` events from `since` instead of listing containers over and
    /// over: a list costs the engine a few milliseconds of CPU per call, which every 25 ms slowed
    /// the very starts being timed (the raw-Docker floor is timed without any such load). The
    /// containers are listed only once enough of them have started.
    pub async fn wait_started(
        &self,
        label: &str,
        image_id: Option<&str>,
        n: usize,
        since: SystemTime,
        timeout: Duration,
    ) -> Result<f64> {
        let deadline = Instant::now() + timeout;
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            ("event".to_string(), vec!["start".to_string()]),
            ("label".to_string(), vec![label.to_string()]),
        ]);
        let from = nanos_since_epoch(since);
        let from = format!("{}.{:09}", from.div_euclid(1_000_000_000), from.rem_euclid(1_000_000_000));
        let opts = EventsOptionsBuilder::default().since(&from).filters(&filters).build();
        let mut events = self.docker.events(Some(opts));
        let mut starts = 0;
        let mut look = false;
        loop {
            if starts >= n || look {
                let ids = self.running_ids(label, image_id).await?;
                if ids.len() >= n {
                    return self.last_start(&ids, since).await;
                }
            }
            if Instant::now() > deadline {
                let image = image_id.map(|id| format!(" of {id}")).unwrap_or_default();
                bail!(
                    "fewer than {n} containers{image} with {label} run when the wait timed out ({starts} started \
                     since the clock started)"
                );
            }
            // A look once a second as well: the engine replays only its last events to a late
            // subscriber, so a start may be missed.
            match tokio::time::timeout(SAFETY_LOOK, events.next()).await {
                Ok(Some(Ok(_))) => {
                    starts += 1;
                    look = false;
                }
                Ok(Some(Err(_)) | None) => {
                    let wanted = format!("at least {n}");
                    let ids = self.poll_running(label, image_id, deadline, &wanted, |count| count >= n).await?;
                    return self.last_start(&ids, since).await;
                }
                Err(_) => look = true,
            }
        }
    }

    /// Polls until no container of `image_id` with `label` runs (e.g. a start-first update's old
    /// containers, stopped after their replacements run).
    pub async fn wait_none_running(&self, label: &str, image_id: &str, timeout: Duration) -> Result<()> {
        self.poll_running(label, Some(image_id), Instant::now() + timeout, "none", |count| count == 0).await?;
        Ok(())
    }

    /// Polls until no container (running or not) carries `label`.
    pub async fn wait_gone(&self, label: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = self.list(label, true).await?.len();
            if left == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{left} containers with {label} are still there after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `docker run -d` through the API: create, then start. Returns once the container runs.
    pub async fn run(&self, image: &str) -> Result<String> {
        let (key, value) = RAW_LABEL.split_once('=').expect("label is key=value");
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            labels: Some(HashMap::from([(key.to_string(), value.to_string())])),
            ..Default::default()
        };
        let created =
            self.docker.create_container(None::<CreateContainerOptions>, body).await.context("creating a container")?;
        self.docker
            .start_container(&created.id, None::<StartContainerOptions>)
            .await
            .context("starting a container")?;
        Ok(created.id)
    }

    /// `docker stop -t 10`.
    pub async fn stop(&self, id: &str) -> Result<()> {
        let client = self.docker.clone().with_timeout(Duration::from_secs(60));
        let opts = StopContainerOptionsBuilder::default().t(10).build();
        client.stop_container(id, Some(opts)).await.context("stopping a container")
    }

    /// Force-removes every container with `label`.
    pub async fn remove_all(&self, label: &str) -> Result<()> {
        for c in self.list(label, true).await? {
            if let Some(id) = c.id {
                let opts = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
                self.docker.remove_container(&id, Some(opts)).await.context("removing a container")?;
            }
        }
        Ok(())
    }
}

fn nanos_since_epoch(t: SystemTime) -> i128 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i128).unwrap_or(0)
}

/// Nanoseconds since the epoch of a time as Docker writes it: `2006-01-02T15:04:05.999999999Z`
/// (UTC, up to nine fractional digits).
fn parse_rfc3339_nanos(text: &str) -> Option<i128> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut date_parts = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (date_parts.next()??, date_parts.next()??, date_parts.next()??);
    let (clock, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut clock_parts = clock.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hour, minute, second) = (clock_parts.next()??, clock_parts.next()??, clock_parts.next()??);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || fraction.len() > 9 {
        return None;
    }
    let nanos: i64 = if fraction.is_empty() { 0 } else { format!("{fraction:0<9}").parse().ok()? };
    let days = shoal_types::duration::days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second;
    Some(i128::from(seconds) * 1_000_000_000 + i128::from(nanos))
}

/// Removes the raw-Docker floor's containers when dropped (also on error or panic).
pub struct RawGuard;

impl Drop for RawGuard {
    fn drop(&mut self) {
        force_remove(&format!("label={RAW_LABEL}"));
    }
}

fn force_remove(filter: &str) {
    let ids = shoal_tests::docker_ids(filter, true);
    if !ids.is_empty() {
        let _ = Command::new("docker").arg("rm").arg("-f").args(&ids).output();
    }
}

fn docker(args: &[&str]) -> Result<String> {
    let out =
        Command::new("docker").args(args).output().with_context(|| format!("running docker {}", args.join(" ")))?;
    if !out.status.success() {
        bail!("docker {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A Docker Swarm on the local engine. If the engine was not in a swarm, this initialises one and
/// leaves it when dropped (also on error or panic), removing what `swarm init` left behind; services it
/// created are removed in any case.
pub struct Swarm {
    initialised: bool,
    gwbridge_existed: bool,
    services: Vec<String>,
}

pub fn swarm_label(service: &str) -> String {
    format!("com.docker.swarm.service.name={service}")
}

impl Swarm {
    pub fn start() -> Result<Swarm> {
        let state = docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"])?;
        let gwbridge_existed = docker(&["network", "inspect", "docker_gwbridge"]).is_ok();
        match state.as_str() {
            "inactive" => {
                let mut swarm = Swarm { initialised: true, gwbridge_existed, services: Vec::new() };
                eprintln!("    docker swarm init --advertise-addr 127.0.0.1 (left again at the end)");
                docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"]).inspect_err(|_| {
                    // Drop leaves whatever half-made swarm there is.
                    swarm.initialised = docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"])
                        .map(|s| s != "inactive")
                        .unwrap_or(true);
                })?;
                Ok(swarm)
            }
            "active" => {
                if docker(&["info", "--format", "{{.Swarm.ControlAvailable}}"])? != "true" {
                    bail!("this engine is a worker of an existing swarm: services cannot be created here");
                }
                eprintln!("    using the engine's existing swarm (it stays as it is)");
                Ok(Swarm { initialised: false, gwbridge_existed, services: Vec::new() })
            }
            other => bail!("the engine's swarm state is {other:?}"),
        }
    }

    /// `docker service create --detach --no-resolve-image --replicas N --name NAME [extra] IMAGE`.
    pub async fn create(&mut self, name: &str, replicas: usize, extra: &[&str], image: &str) -> Result<()> {
        self.services.push(name.to_string());
        let replicas = replicas.to_string();
        let mut args =
            vec!["service", "create", "--detach", "--no-resolve-image", "--replicas", &replicas, "--name", name];
        args.extend_from_slice(extra);
        args.push(image);
        run_async(&args).await
    }

    /// `docker service update --detach --no-resolve-image [args] NAME`.
    pub async fn update(&mut self, name: &str, extra: &[&str]) -> Result<()> {
        let mut args = vec!["service", "update", "--detach", "--no-resolve-image"];
        args.extend_from_slice(extra);
        args.push(name);
        run_async(&args).await
    }

    /// `docker service rollback --detach NAME` (`update --rollback` refuses other flags).
    pub async fn rollback(&mut self, name: &str) -> Result<()> {
        run_async(&["service", "rollback", "--detach", name]).await
    }

    /// `docker service rm`, then waits until its containers are gone.
    pub async fn remove(&mut self, engine: &Engine, name: &str) -> Result<()> {
        run_async(&["service", "rm", name]).await?;
        self.services.retain(|s| s != name);
        if let Err(e) = engine.wait_gone(&swarm_label(name), Duration::from_secs(60)).await {
            eprintln!("    warning: {e:#}; removing them by force");
            force_remove(&format!("label={}", swarm_label(name)));
        }
        Ok(())
    }
}

async fn run_async(args: &[&str]) -> Result<()> {
    let out = tokio::process::Command::new("docker")
        .args(args)
        .output()
        .await
        .with_context(|| format!("running docker {}", args.join(" ")))?;
    if !out.status.success() {
        bail!("docker {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

impl Drop for Swarm {
    fn drop(&mut self) {
        for name in std::mem::take(&mut self.services) {
            let _ = docker(&["service", "rm", &name]);
            let filter = format!("label={}", swarm_label(&name));
            for _ in 0..300 {
                if shoal_tests::docker_ids(&filter, true).is_empty() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            force_remove(&filter);
        }
        if self.initialised {
            match docker(&["swarm", "leave", "--force"]) {
                Ok(_) => eprintln!("    docker swarm leave --force: the engine is out of the swarm again"),
                Err(e) => eprintln!("    warning: {e:#}"),
            }
            if !self.gwbridge_existed {
                let _ = docker(&["network", "rm", "docker_gwbridge"]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_times_parse_to_nanoseconds() {
        assert_eq!(parse_rfc3339_nanos("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339_nanos("1970-01-01T00:00:01.5Z"), Some(1_500_000_000));
        // `date -u -d 2026-11-30T20:35:35 +%s` = 1796070935
        assert_eq!(parse_rfc3339_nanos("2026-11-30T20:35:35.528304641Z"), Some(1_796_070_935_528_304_641));
        assert_eq!(parse_rfc3339_nanos("2000-02-29T23:59:59.000000001Z"), Some(951_868_799_000_000_001));
        assert_eq!(parse_rfc3339_nanos("2026-11-30T20:35:35+01:00"), None);
        assert_eq!(parse_rfc3339_nanos("2026-13-30T20:35:35Z"), None);
    }
}
