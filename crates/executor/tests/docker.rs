//! The Docker executor against a real engine. Needs a reachable Docker daemon (these tests fail,
//! not skip, without one) and the local test images from `deploy/images/build.sh`, which are
//! built on first use if missing. Every test uses its own random node id and removes the
//! containers of that node id when it ends, pass or fail.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use bollard::models::{ContainerStateStatusEnum, HealthStatusEnum, RestartPolicyNameEnum};
use bollard::query_parameters::{
    InspectContainerOptions, KillContainerOptions, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures::StreamExt;
use shoal_executor::{
    ContainerEvent, DockerExecutor, ExecError, Executor, ExitStatus, LABEL_NODE_ID, LABEL_TASK_ID, TaskPlan,
    container_name,
};
use shoal_types::{
    ContainerSpec, GoDuration, HealthConfig, PortConfig, PortProtocol, PublishMode, ResourceAmounts, Resources,
};
use tokio::time::{Instant, timeout};

const IMAGES: &[&str] =
    &["shoal/busybox:1", "shoal/busybox:2", "shoal/exit0:1", "shoal/fail:1", "shoal/healthy:1", "shoal/unhealthy:1"];

/// Builds the test images once per test binary if any is missing.
fn ensure_images() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let present = std::process::Command::new("docker")
            .args(["image", "inspect", "--format", "{{.Id}}"])
            .args(IMAGES)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if present {
            return;
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/images/build.sh");
        let out =
            std::process::Command::new("bash").arg(script).output().unwrap_or_else(|e| panic!("running {script}: {e}"));
        assert!(
            out.status.success(),
            "building the test images with {script} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// What shoal/busybox, shoal/healthy and shoal/unhealthy are meant to run: forever, exiting 0 at
/// once on SIGTERM. Tests set it as the command explicitly because the images' CMD, as built by
/// `deploy/images/build.sh` at the time of writing, is not valid JSON (unescaped inner quotes),
/// so Docker runs it in shell form and the container exits 127 immediately.
const FOREVER: &str = "trap 'exit 0' TERM INT; while :; do sleep 1 & wait $!; done";

fn random_id(prefix: &str) -> String {
    format!("{prefix}{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

/// One executor with a fresh node id; dropping it removes every container of that node id.
struct Node {
    exec: DockerExecutor,
    node_id: String,
}

impl Node {
    async fn new() -> Node {
        ensure_images();
        let node_id = random_id("exectest-");
        let exec = DockerExecutor::connect(None, &node_id)
            .await
            .unwrap_or_else(|e| panic!("these tests need a running Docker daemon, and connecting to it failed: {e}"));
        Node { exec, node_id }
    }

    fn plan(&self, image: &str) -> TaskPlan {
        let runs_forever =
            ["shoal/busybox:", "shoal/healthy:", "shoal/unhealthy:"].iter().any(|p| image.starts_with(p));
        let command =
            if runs_forever { vec!["/bin/sh".to_string(), "-c".to_string(), FOREVER.to_string()] } else { Vec::new() };
        TaskPlan {
            task_id: random_id("task"),
            service_id: "svcexec".into(),
            service_name: "exectest".into(),
            slot: 1,
            node_id: self.node_id.clone(),
            container: ContainerSpec { image: image.into(), command, ..ContainerSpec::default() },
            resources: Resources::default(),
            ports: Vec::new(),
            ingress_targets: Vec::new(),
            adopts: None,
            files: Vec::new(),
            networked: false,
            extra_hosts: Vec::new(),
        }
    }

    async fn inspect(&self, id: &str) -> Option<bollard::models::ContainerInspectResponse> {
        match self.exec.client().inspect_container(id, None::<InspectContainerOptions>).await {
            Ok(info) => Some(info),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => None,
            Err(e) => panic!("inspecting {id}: {e}"),
        }
    }

    async fn status(&self, id: &str) -> ContainerStateStatusEnum {
        self.inspect(id).await.expect("container exists").state.unwrap().status.unwrap()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let node_id = self.node_id.clone();
        // Drop cannot await; clean up on a runtime of our own.
        let cleaned = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(remove_node_containers(&node_id))
        })
        .join();
        if let Ok(Err(e)) | Err(e) = cleaned.map_err(|_| "cleanup thread panicked".to_string()) {
            eprintln!("cleaning up containers of {}: {e}", self.node_id);
        }
    }
}

async fn remove_node_containers(node_id: &str) -> Result<(), String> {
    let docker = bollard::Docker::connect_with_local_defaults()
        .map_err(|e| e.to_string())?
        .negotiate_version()
        .await
        .map_err(|e| e.to_string())?;
    let filters = std::collections::HashMap::from([("label", vec![format!("{LABEL_NODE_ID}={node_id}")])]);
    let list = docker
        .list_containers(Some(ListContainersOptionsBuilder::default().all(true).filters(&filters).build()))
        .await
        .map_err(|e| e.to_string())?;
    for c in list {
        let id = c.id.unwrap_or_default();
        let opts = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
        if let Err(e) = docker.remove_container(&id, Some(opts)).await {
            eprintln!("removing {id}: {e}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn prepare_creates_without_starting_and_is_idempotent() {
    let node = Node::new().await;
    let mut plan = node.plan("shoal/busybox:1");
    plan.container.env = vec!["GREETING=hello".into()];
    plan.container.labels = BTreeMap::from([("app".to_string(), "shop".to_string())]);
    plan.container.stop_grace_period = GoDuration::from_secs(3);
    plan.container.hostname = Some("boxhost".into());
    plan.resources.limits = ResourceAmounts { nano_cpus: 500_000_000, memory_bytes: 64 << 20, pids: 50 };
    plan.resources.reservations.memory_bytes = 16 << 20;
    plan.ports = vec![PortConfig { target: 8080, published: 0, protocol: PortProtocol::Tcp, mode: PublishMode::Host }];

    let id = node.exec.prepare(&plan).await.expect("prepare");
    assert_eq!(node.status(&id).await, ContainerStateStatusEnum::CREATED, "prepare must not start");
    assert_eq!(node.exec.prepare(&plan).await.unwrap(), id, "prepare is idempotent");

    let info = node.inspect(&id).await.unwrap();
    assert_eq!(info.name.as_deref(), Some(format!("/exectest.1.{}", plan.task_id).as_str()));
    let config = info.config.unwrap();
    let labels = config.labels.unwrap();
    assert_eq!(labels["app"], "shop");
    assert_eq!(labels[LABEL_TASK_ID], plan.task_id);
    assert_eq!(labels[LABEL_NODE_ID], node.node_id);
    assert_eq!(labels["org.shoal.service.id"], "svcexec");
    assert_eq!(labels["org.shoal.task.slot"], "1");
    assert!(config.env.unwrap().contains(&"GREETING=hello".to_string()));
    assert_eq!(config.hostname.as_deref(), Some("boxhost"));
    assert_eq!(config.stop_timeout, Some(3));
    let host = info.host_config.unwrap();
    assert_eq!(host.nano_cpus, Some(500_000_000));
    assert_eq!(host.memory, Some(64 << 20));
    assert_eq!(host.pids_limit, Some(50));
    assert_eq!(host.memory_reservation, Some(16 << 20));
    assert_eq!(host.restart_policy.unwrap().name, Some(RestartPolicyNameEnum::NO));
    assert!(host.port_bindings.unwrap().contains_key("8080/tcp"));

    let listed = node.exec.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].task_id, plan.task_id);
    assert_eq!(listed[0].container_id, id);
    assert!(!listed[0].running);
    assert_eq!(listed[0].exit_code, None);

    node.exec.remove(&plan.task_id).await.unwrap();
    assert!(node.inspect(&id).await.is_none(), "remove removes");
    node.exec.remove(&plan.task_id).await.expect("removing twice is fine");
    assert!(node.exec.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn start_runs_and_shutdown_stops_promptly() {
    let node = Node::new().await;
    let plan = node.plan("shoal/busybox:1"); // default 10s grace; exits at once on SIGTERM
    let id = node.exec.prepare(&plan).await.unwrap();
    node.exec.start(&plan).await.expect("start");
    assert_eq!(node.status(&id).await, ContainerStateStatusEnum::RUNNING);
    node.exec.start(&plan).await.expect("start is idempotent");
    let listed = node.exec.list().await.unwrap();
    assert!(listed[0].running);

    node.exec.shutdown(&plan).await.expect("shutdown");
    assert_eq!(node.status(&id).await, ContainerStateStatusEnum::EXITED);
    node.exec.shutdown(&plan).await.expect("stopping a stopped container is fine");
    // 0, not 137: it exited on SIGTERM, it was not killed at the end of the 10s grace period.
    assert_eq!(node.exec.wait(&plan).await.unwrap(), ExitStatus { code: 0 });
    let listed = node.exec.list().await.unwrap();
    assert_eq!((listed[0].running, listed[0].exit_code), (false, Some(0)));

    node.exec.remove(&plan.task_id).await.unwrap();
    node.exec.shutdown(&plan).await.expect("stopping an absent container is fine");
    assert!(node.inspect(&id).await.is_none());
}

/// The executor stops a container it made by its id, without a lookup; one it did not make (an
/// agent restarted since) or one replaced behind its back is found by the task's label.
#[tokio::test]
async fn shutdown_finds_containers_this_executor_did_not_make() {
    let node = Node::new().await;
    let plan = node.plan("shoal/busybox:1");
    let first = node.exec.prepare(&plan).await.unwrap();
    node.exec.start(&plan).await.unwrap();

    // A restarted agent: a new executor of the same node knows nothing of the container.
    let restarted = DockerExecutor::connect(None, &node.node_id).await.unwrap();
    restarted.shutdown(&plan).await.expect("shutdown after a restart");
    assert_eq!(node.status(&first).await, ContainerStateStatusEnum::EXITED, "found by label and stopped");

    // Replaced behind the first executor's back: its id is stale, the task's new container runs.
    let remove = RemoveContainerOptionsBuilder::default().force(true).build();
    node.exec.client().remove_container(&first, Some(remove)).await.unwrap();
    let replacement = restarted.prepare(&plan).await.unwrap();
    restarted.start(&plan).await.unwrap();
    assert_ne!(replacement, first);
    node.exec.shutdown(&plan).await.expect("shutdown with a stale id");
    assert_eq!(node.status(&replacement).await, ContainerStateStatusEnum::EXITED, "the stale id did not hide it");
}

#[tokio::test]
async fn shutdown_gives_the_grace_period_then_kills() {
    let node = Node::new().await;
    let mut plan = node.plan("shoal/busybox:1");
    plan.container.command = vec!["/bin/sh".into(), "-c".into(), "trap '' TERM; while :; do sleep 1; done".into()];
    plan.container.stop_grace_period = GoDuration::from_millis(1000);
    node.exec.prepare(&plan).await.unwrap();
    node.exec.start(&plan).await.unwrap();

    let t0 = Instant::now();
    node.exec.shutdown(&plan).await.expect("shutdown");
    let took = t0.elapsed();
    // A lower bound only: a loaded host can make a stop slower, never faster than the grace.
    assert!(took >= Duration::from_millis(900), "stopped after {took:?}, before the 1s grace period");
    assert_eq!(node.exec.wait(&plan).await.unwrap(), ExitStatus { code: 137 }, "killed after the grace period");
}

#[tokio::test]
async fn wait_returns_the_exit_code() {
    let node = Node::new().await;
    let failing = node.plan("shoal/fail:1");
    let succeeding = node.plan("shoal/exit0:1");
    for plan in [&failing, &succeeding] {
        node.exec.prepare(plan).await.unwrap();
        node.exec.start(plan).await.unwrap();
    }
    let (a, b) = tokio::join!(node.exec.wait(&failing), node.exec.wait(&succeeding));
    assert_eq!(a.unwrap(), ExitStatus { code: 3 });
    assert_eq!(b.unwrap(), ExitStatus { code: 0 });
    // Waiting again on an exited container returns at once; start leaves it alone.
    assert_eq!(node.exec.wait(&failing).await.unwrap(), ExitStatus { code: 3 });
    node.exec.start(&failing).await.unwrap();
    let listed = node.exec.list().await.unwrap();
    let code_of = |task: &str| listed.iter().find(|c| c.task_id == task).unwrap().exit_code;
    assert_eq!(code_of(&failing.task_id), Some(3));
    assert_eq!(code_of(&succeeding.task_id), Some(0));
}

#[tokio::test]
async fn missing_image_is_not_found_and_nothing_is_created() {
    let node = Node::new().await;
    let plan = node.plan("shoal/nope:1");
    let err = node.exec.prepare(&plan).await.unwrap_err();
    assert_eq!(err, ExecError::ImageNotFound("shoal/nope:1".into()));
    assert_eq!(err.to_string(), "image shoal/nope:1 not found locally (shoal never pulls images)");
    assert!(!err.is_temporary());
    assert!(node.exec.list().await.unwrap().is_empty());
    assert!(node.inspect(&container_name(&plan)).await.is_none());
}

#[tokio::test]
async fn start_returns_once_healthy() {
    let node = Node::new().await;
    let plan = node.plan("shoal/healthy:1");
    let id = node.exec.prepare(&plan).await.unwrap();
    node.exec.start(&plan).await.expect("healthy container starts");
    let state = node.inspect(&id).await.unwrap().state.unwrap();
    assert_eq!(state.health.unwrap().status, Some(HealthStatusEnum::HEALTHY));
    assert_eq!(state.running, Some(true));
}

#[tokio::test]
async fn start_fails_when_unhealthy() {
    let node = Node::new().await;
    let plan = node.plan("shoal/unhealthy:1");
    let id = node.exec.prepare(&plan).await.unwrap();
    let err = timeout(Duration::from_secs(30), node.exec.start(&plan)).await.expect("start gave up in time");
    let err = err.unwrap_err();
    assert!(matches!(err, ExecError::Unhealthy(_)), "{err:?}");
    assert!(err.to_string().contains(&container_name(&plan)), "{err}");
    assert_ne!(node.status(&id).await, ContainerStateStatusEnum::RUNNING, "the unhealthy container is stopped");
}

#[tokio::test]
async fn wait_fails_when_a_running_container_turns_unhealthy() {
    let node = Node::new().await;
    let mut plan = node.plan("shoal/busybox:1");
    // Passes once, then fails.
    plan.container.healthcheck = Some(HealthConfig {
        test: vec!["CMD-SHELL".into(), "test ! -f /probed && touch /probed".into()],
        interval: GoDuration::from_secs(1),
        timeout: GoDuration::from_secs(1),
        retries: 1,
        start_period: GoDuration::ZERO,
    });
    let id = node.exec.prepare(&plan).await.unwrap();
    node.exec.start(&plan).await.expect("healthy at first");
    let err = timeout(Duration::from_secs(30), node.exec.wait(&plan)).await.expect("wait noticed in time");
    let err = err.unwrap_err();
    assert!(matches!(err, ExecError::Unhealthy(_)), "{err:?}");
    assert_ne!(node.status(&id).await, ContainerStateStatusEnum::RUNNING, "the unhealthy container is stopped");
}

#[tokio::test]
async fn disabling_the_image_healthcheck_starts_at_once() {
    let node = Node::new().await;
    let mut plan = node.plan("shoal/unhealthy:1");
    plan.container.healthcheck = Some(HealthConfig { test: vec!["NONE".into()], ..HealthConfig::default() });
    let id = node.exec.prepare(&plan).await.unwrap();
    node.exec.start(&plan).await.expect("no health check, no waiting");
    assert_eq!(node.status(&id).await, ContainerStateStatusEnum::RUNNING);
}

#[tokio::test]
async fn list_sees_only_this_nodes_containers() {
    let a = Node::new().await;
    let b = Node::new().await;
    let pa = a.plan("shoal/busybox:1");
    let pb = b.plan("shoal/busybox:1");
    a.exec.prepare(&pa).await.unwrap();
    b.exec.prepare(&pb).await.unwrap();
    let la: Vec<String> = a.exec.list().await.unwrap().into_iter().map(|c| c.task_id).collect();
    let lb: Vec<String> = b.exec.list().await.unwrap().into_iter().map(|c| c.task_id).collect();
    assert_eq!(la, vec![pa.task_id.clone()]);
    assert_eq!(lb, vec![pb.task_id.clone()]);
    // Node a cannot touch b's task either.
    a.exec.remove(&pb.task_id).await.unwrap();
    assert_eq!(b.exec.list().await.unwrap().len(), 1);
    assert!(matches!(a.exec.start(&pb).await, Err(ExecError::Fatal(_))));
}

#[tokio::test]
async fn events_report_a_kill_behind_our_back() {
    let node = Node::new().await;
    let mut events = node.exec.events();
    let plan = node.plan("shoal/busybox:1");
    let id = node.exec.prepare(&plan).await.unwrap();
    node.exec.start(&plan).await.unwrap();
    node.exec.client().kill_container(&id, None::<KillContainerOptions>).await.expect("docker kill");

    let mut seen = Vec::new();
    let died = timeout(Duration::from_secs(15), async {
        while let Some(event) = events.next().await {
            seen.push(event.clone());
            if let ContainerEvent::Died { task_id, exit_code, container_id } = event
                && task_id == plan.task_id
            {
                return (container_id, exit_code);
            }
        }
        panic!("event stream ended");
    })
    .await
    .unwrap_or_else(|_| panic!("no die event within 15s; saw {seen:?}"));
    assert_eq!(died, (id.clone(), Some(137)));
    assert!(
        seen.contains(&ContainerEvent::Started { task_id: plan.task_id.clone(), container_id: id.clone() }),
        "{seen:?}"
    );
    assert_eq!(node.exec.wait(&plan).await.unwrap(), ExitStatus { code: 137 });
}

#[tokio::test]
async fn describe_reports_the_engine() {
    let node = Node::new().await;
    let r = node.exec.describe().await.expect("describe");
    assert!(!r.hostname.is_empty());
    assert!(r.nano_cpus >= 1_000_000_000, "{r:?}");
    assert!(r.memory_bytes > 0, "{r:?}");
    assert_eq!(r.os, "linux");
    assert!(!r.arch.is_empty() && !r.engine_version.is_empty(), "{r:?}");
}

#[tokio::test]
async fn unreachable_engine_is_a_temporary_error() {
    let err = DockerExecutor::connect(Some("unix:///nonexistent/docker.sock"), "n1").await.unwrap_err();
    assert!(err.is_temporary(), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/docker.sock"), "{err}");
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A rollback restarting a stopped container in place: the adopting task's plan gets the old
/// task's container (no create), starts it once more, waits for and stops that run; an executor
/// that did not prepare it (an agent restarted in between) starts it once too, and never again
/// once it ran for the adopting task. When the container is gone, prepare makes the task's own.
#[tokio::test]
async fn an_adopted_stopped_container_is_restarted_once() {
    let node = Node::new().await;
    let old = node.plan("shoal/busybox:1");
    let id = node.exec.prepare(&old).await.unwrap();
    node.exec.start(&old).await.unwrap();
    node.exec.shutdown(&old).await.unwrap();
    assert_eq!(node.status(&id).await, ContainerStateStatusEnum::EXITED);
    let stopped_at = now_ms();

    let adopt = shoal_types::Adoption { container_task: old.task_id.clone(), stopped_at };
    let mut new = node.plan("shoal/busybox:1");
    new.adopts = Some(adopt.clone());
    assert_eq!(node.exec.prepare(&new).await.unwrap(), id, "the stopped container, not a new one");
    // An agent restarted between prepare and start: a fresh executor knows nothing of it.
    let restarted = DockerExecutor::connect(None, &node.node_id).await.unwrap();
    restarted.start(&new).await.unwrap();
    assert_eq!(node.status(&id).await, ContainerStateStatusEnum::RUNNING, "restarted in place");
    let waited = {
        let exec = restarted.clone();
        let plan = new.clone();
        tokio::spawn(async move { exec.wait(&plan).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waited.is_finished(), "wait follows the new run, not the old exit");
    restarted.shutdown(&new).await.unwrap();
    assert_eq!(waited.await.unwrap().unwrap(), ExitStatus { code: 0 });
    // It ran for the adopting task since `stopped_at`: never started again for it.
    DockerExecutor::connect(None, &node.node_id).await.unwrap().start(&new).await.unwrap();
    assert_eq!(node.status(&id).await, ContainerStateStatusEnum::EXITED);
    let listed = node.exec.list().await.unwrap();
    assert_eq!(listed.len(), 1, "one container throughout: {listed:?}");

    // Gone (removed by hand): the adopting task gets a container of its own.
    node.exec.remove(&old.task_id).await.unwrap();
    let mut fresh = node.plan("shoal/busybox:1");
    fresh.adopts = Some(adopt);
    let own = node.exec.prepare(&fresh).await.unwrap();
    assert_ne!(own, id);
    node.exec.start(&fresh).await.unwrap();
    assert_eq!(node.status(&own).await, ContainerStateStatusEnum::RUNNING);
}
