//! The agent's Prometheus metrics (`shoal-agent --metrics-addr`): Docker call latency by call
//! (measured around the executor), tasks by the state last reported, and what the ingress proxy
//! carried. Labels are a call name or a state, never an id.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::stream::BoxStream;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use shoal_executor::{
    ContainerEvent, ContainerInfo, ExecError, Executor, ExitStatus, LogOptions, LogStream, NodeResources, TaskPlan,
};

type Labels = Vec<(String, String)>;

fn label(key: &str, value: &str) -> Labels {
    vec![(key.to_string(), value.to_string())]
}

pub struct AgentMetrics {
    registry: Registry,
    /// One scrape at a time: a scrape refills the task family and moves the ingress counters.
    scraping: parking_lot::Mutex<()>,
    docker_seconds: Family<Labels, Histogram>,
    docker_errors: Family<Labels, Counter>,
    tasks: Family<Labels, Gauge>,
    ingress_carried: Counter,
    ingress_refused: Counter,
    ingress_bytes_in: Counter,
    ingress_bytes_out: Counter,
    ingress_open: Gauge,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        AgentMetrics::new()
    }
}

impl AgentMetrics {
    pub fn new() -> AgentMetrics {
        let mut registry = Registry::with_prefix("shoal_agent");
        // 1 ms to about 65 s: a container start with a health check can take a while.
        let docker_seconds =
            Family::<Labels, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 17)));
        let metrics = AgentMetrics {
            registry: Registry::default(),
            scraping: parking_lot::Mutex::new(()),
            docker_seconds,
            docker_errors: Family::default(),
            tasks: Family::default(),
            ingress_carried: Counter::default(),
            ingress_refused: Counter::default(),
            ingress_bytes_in: Counter::default(),
            ingress_bytes_out: Counter::default(),
            ingress_open: Gauge::default(),
        };
        registry.register_with_unit(
            "docker_call_duration",
            "Docker engine calls made for tasks, by call",
            Unit::Seconds,
            metrics.docker_seconds.clone(),
        );
        registry.register(
            "docker_call_errors",
            "Docker engine calls that failed, by call",
            metrics.docker_errors.clone(),
        );
        registry.register("tasks", "This node's tasks, by the state last reported", metrics.tasks.clone());
        registry.register(
            "ingress_connections_carried",
            "Connections the ingress proxy carried to a task",
            metrics.ingress_carried.clone(),
        );
        registry.register(
            "ingress_connections_refused",
            "Connections the ingress proxy closed at once (a limit, or no task took it)",
            metrics.ingress_refused.clone(),
        );
        registry.register_with_unit(
            "ingress_received",
            "Bytes from clients to tasks through the ingress proxy",
            Unit::Bytes,
            metrics.ingress_bytes_in.clone(),
        );
        registry.register_with_unit(
            "ingress_sent",
            "Bytes from tasks to clients through the ingress proxy",
            Unit::Bytes,
            metrics.ingress_bytes_out.clone(),
        );
        registry.register(
            "ingress_connections_open",
            "Connections the ingress proxy holds now",
            metrics.ingress_open.clone(),
        );
        AgentMetrics { registry, ..metrics }
    }

    fn observe<T>(&self, call: &str, started: tokio::time::Instant, result: &Result<T, ExecError>) {
        self.docker_seconds.get_or_create(&label("call", call)).observe(started.elapsed().as_secs_f64());
        if result.is_err() {
            self.docker_errors.get_or_create(&label("call", call)).inc();
        }
    }

    /// The metrics as Prometheus text, with the task and ingress figures read now.
    pub fn render(&self, agent: &crate::Agent) -> String {
        let _one_scrape = self.scraping.lock();
        self.tasks.clear();
        for (state, n) in agent.task_states() {
            self.tasks.get_or_create(&label("state", state.as_str())).set(n as i64);
        }
        if let Some(ingress) = agent.ingress() {
            let stats = &ingress.stats;
            let set = |counter: &Counter, value: u64| {
                let now = counter.get();
                counter.inc_by(value.saturating_sub(now));
            };
            set(&self.ingress_carried, stats.carried.load(Ordering::Relaxed));
            set(&self.ingress_refused, stats.refused.load(Ordering::Relaxed));
            set(&self.ingress_bytes_in, stats.bytes_in.load(Ordering::Relaxed));
            set(&self.ingress_bytes_out, stats.bytes_out.load(Ordering::Relaxed));
            self.ingress_open.set(ingress.report().1.values().map(|n| i64::from(*n)).sum());
        }
        shoal_metrics::encode(&self.registry)
    }
}

/// An executor that times every Docker call of the one it wraps.
pub struct TimedExecutor {
    pub inner: Arc<dyn Executor>,
    pub metrics: Arc<AgentMetrics>,
}

macro_rules! timed {
    ($self:ident, $call:literal, $body:expr) => {{
        let started = tokio::time::Instant::now();
        let result = $body.await;
        $self.metrics.observe($call, started, &result);
        result
    }};
}

#[async_trait::async_trait]
impl Executor for TimedExecutor {
    async fn describe(&self) -> Result<NodeResources, ExecError> {
        timed!(self, "describe", self.inner.describe())
    }

    async fn prepare(&self, plan: &TaskPlan) -> Result<String, ExecError> {
        timed!(self, "prepare", self.inner.prepare(plan))
    }

    async fn start(&self, plan: &TaskPlan) -> Result<(), ExecError> {
        timed!(self, "start", self.inner.start(plan))
    }

    /// Not timed: it lasts as long as the container runs.
    async fn wait(&self, plan: &TaskPlan) -> Result<ExitStatus, ExecError> {
        self.inner.wait(plan).await
    }

    async fn shutdown(&self, plan: &TaskPlan) -> Result<(), ExecError> {
        timed!(self, "shutdown", self.inner.shutdown(plan))
    }

    async fn remove(&self, task_id: &str) -> Result<(), ExecError> {
        timed!(self, "remove", self.inner.remove(task_id))
    }

    async fn remove_files(&self, task_id: &str) -> Result<(), ExecError> {
        self.inner.remove_files(task_id).await
    }

    async fn list(&self) -> Result<Vec<ContainerInfo>, ExecError> {
        timed!(self, "list", self.inner.list())
    }

    async fn ports(&self, plan: &TaskPlan) -> Result<Vec<shoal_types::TaskPort>, ExecError> {
        timed!(self, "ports", self.inner.ports(plan))
    }

    async fn logs(&self, task_id: &str, options: LogOptions) -> Result<Option<LogStream>, ExecError> {
        self.inner.logs(task_id, options).await
    }

    fn events(&self) -> BoxStream<'static, ContainerEvent> {
        self.inner.events()
    }
}

/// Serves the agent's metrics on `listener`.
pub async fn serve(agent: Arc<crate::Agent>, metrics: Arc<AgentMetrics>, listener: tokio::net::TcpListener) {
    let render: shoal_metrics::Render = Arc::new(move || metrics.render(&agent));
    shoal_metrics::serve(listener, render).await;
}
