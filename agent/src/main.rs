//! `shoal-agent`: runs a node's tasks as Docker containers for a shoal cluster.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use clap::Parser;

/// Joins a shoal cluster as a worker node and runs the tasks it is assigned as Docker containers.
#[derive(Parser, Debug)]
#[command(name = "shoal-agent", version)]
struct Args {
    /// Where the agent keeps its node id.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// A manager's address (any manager; the agent finds the leader).
    #[arg(long, value_name = "HOST:PORT", value_parser = shoal_agent::parse_manager_addr)]
    join: String,
    /// The worker join token (`shoal cluster join-token worker` on a manager); needed on the first
    /// start only (then the node has its certificate).
    #[arg(long, value_name = "TOKEN", env = "SHOAL_JOIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Host name shown by `shoal node ls` (default: the Docker engine's).
    #[arg(long)]
    hostname: Option<String>,
    /// A node label (`node.labels.<key>` in constraints); repeatable.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// The Docker engine to use.
    #[arg(long, value_name = "URL", default_value = "unix:///var/run/docker.sock")]
    docker_host: String,
    /// Where the files of tasks' secrets and configs are written before they are bind-mounted
    /// into containers (a directory only root may enter is made under it, per node) [default:
    /// /dev/shm, a tmpfs, so they never reach a disk; else DATA_DIR/run]
    #[arg(long, value_name = "DIR")]
    secrets_dir: Option<PathBuf>,
    /// The address the ingress proxy listens on for every published ingress port (several agents
    /// on one machine use distinct 127.0.0.x addresses); tasks' target ports are published on it
    /// too, where other nodes' proxies reach them.
    #[arg(long, value_name = "IP", default_value = "0.0.0.0")]
    ingress_addr: std::net::IpAddr,
    /// Serve Prometheus metrics on http://ADDR/metrics: PORT (on 127.0.0.1) or IP:PORT. Off by
    /// default
    #[arg(long, value_name = "ADDR", value_parser = shoal_metrics::parse_addr)]
    metrics_addr: Option<std::net::SocketAddr>,
}

/// The directory of this node's secret and config files: under `--secrets-dir`, `/dev/shm`
/// (memory) when it exists, else the data dir.
fn files_dir(args: &Args, node_id: &str) -> PathBuf {
    let base = match &args.secrets_dir {
        Some(dir) => dir.clone(),
        None if std::path::Path::new("/dev/shm").is_dir() => PathBuf::from("/dev/shm"),
        None => args.data_dir.join("run"),
    };
    base.join(format!("shoal-{node_id}"))
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,h2=warn,tower=warn,hyper=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    shoal_agent::ingress::raise_open_files_limit();
    let (node_id, credentials) = shoal_agent::join_or_resume(&args.data_dir, &args.join, args.token.as_deref()).await?;
    let tls = shoal_agent::shoal_tls::NodeTls::new(&credentials)?;
    let mut delay = std::time::Duration::from_millis(500);
    let executor = loop {
        match shoal_agent::shoal_executor::DockerExecutor::connect(Some(&args.docker_host), &node_id).await {
            Ok(executor) => {
                break executor.with_files_dir(files_dir(&args, &node_id)).with_ingress_ip(args.ingress_addr);
            }
            Err(e) => {
                tracing::error!(docker = %args.docker_host, error = %e, "cannot reach the Docker engine; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(10));
            }
        }
    };
    let config = shoal_agent::AgentConfig {
        tls,
        data_dir: args.data_dir,
        managers: vec![args.join],
        hostname: args.hostname,
        labels: args.labels.into_iter().collect::<BTreeMap<_, _>>(),
        ingress_addr: Some(args.ingress_addr),
    };
    tracing::info!(node = %node_id, "agent starting");
    // Bound before anything runs: a port in use is an error at start.
    let metrics = match args.metrics_addr {
        Some(addr) => Some((
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} for metrics"))?,
            Arc::new(shoal_agent::metrics::AgentMetrics::new()),
        )),
        None => None,
    };
    let executor: Arc<dyn shoal_agent::shoal_executor::Executor> = match &metrics {
        Some((_, metrics)) => {
            Arc::new(shoal_agent::metrics::TimedExecutor { inner: Arc::new(executor), metrics: metrics.clone() })
        }
        None => Arc::new(executor),
    };
    let agent = shoal_agent::Agent::new(node_id, config, executor)?;
    if let Some((listener, metrics)) = metrics {
        tracing::info!(addr = ?listener.local_addr().ok(), "serving metrics on /metrics");
        tokio::spawn(shoal_agent::metrics::serve(agent.clone(), metrics, listener));
    }
    tokio::spawn(agent.clone().renew_certificate());
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = agent.run() => {}
        _ = sigterm.recv() => tracing::info!("SIGTERM: stopping the agent; its containers keep running and are adopted on restart"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping the agent"),
    }
    Ok(())
}
