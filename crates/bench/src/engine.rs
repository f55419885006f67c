//! The local Docker engine: the raw-Docker floor (bollard), counting running containers, and a Docker
//! Swarm session that leaves the engine's swarm state as it found it.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder, StartContainerOptions,
    StopContainerOptionsBuilder,
};
use tokio::time::Instant;

pub const IMAGE_V1: &str = "shoal/busybox:1";
pub const IMAGE_V2: &str = "shoal/busybox:2";
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
        Ok(self
            .list(label, false)
            .await?
            .iter()
            .filter(|c| c.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING))
            .filter(|c| image_id.is_none_or(|id| c.image_id.as_deref() == Some(id)))
            .count())
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
        loop {
            let count = self.running(label, image_id).await?;
            if count >= n {
                return Ok(since.elapsed().as_secs_f64());
            }
            if since.elapsed() > timeout {
                bail!("{count} of {n} containers with {label} run after {timeout:?}");
            }
            tokio::time::sleep(POLL).await;
        }
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
