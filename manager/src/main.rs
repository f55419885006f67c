//! `shoal-manager`: keeps the cluster's desired state in raft and serves the control API.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use shoal_control::ManagerConfig;

// glibc's malloc cost about a fifth of the manager's CPU under write load (arena lock wake-ups,
// free-list consolidation); mimalloc's per-thread heaps avoid both.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Runs a shoal manager. With an empty data dir and no --join it initialises a new cluster; with
/// --join it joins an existing one; with a data dir from an earlier run it resumes.
#[derive(Parser, Debug)]
#[command(name = "shoal-manager", version)]
struct Args {
    /// Where this manager keeps its raft log, snapshots and identity.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// Address to serve the control API and raft on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:4242")]
    listen_addr: SocketAddr,
    /// Address other managers and clients reach this manager at (default: --listen-addr).
    #[arg(long, value_name = "ADDR")]
    advertise_addr: Option<String>,
    /// Join the cluster of the manager at ADDR (any manager; the call is forwarded to the leader).
    #[arg(long, value_name = "ADDR")]
    join: Option<String>,
    /// The manager join token (`shoal cluster join-token manager` on a manager); with --join.
    #[arg(long, value_name = "TOKEN", env = "SHOAL_JOIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// When initialising a cluster: how long node certificates are valid (nodes renew them at
    /// 50-80% of that). At least 1h.
    #[arg(long, value_name = "DURATION", default_value = "2160h", value_parser = parse_cert_expiry)]
    cert_expiry: shoal_types::GoDuration,
    /// Host name shown by `shoal node ls` (default: this machine's).
    #[arg(long)]
    hostname: Option<String>,
    /// Raft tick in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    tick_ms: u64,
    /// Ticks without a leader before an election (randomised up to twice this).
    #[arg(long, value_name = "TICKS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..=1000))]
    election_ticks: u64,
    /// Ticks between leader heartbeats; must be less than --election-ticks.
    #[arg(long, value_name = "TICKS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=1000))]
    heartbeat_ticks: u64,
    /// Applied entries between raft snapshots (older log entries are then compacted).
    #[arg(long, value_name = "ENTRIES", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(10..))]
    snapshot_interval: u64,
    /// When initialising a cluster: how often agents heartbeat (a node is down after 3 misses).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_heartbeat)]
    dispatcher_heartbeat: shoal_types::GoDuration,
    /// When initialising a cluster: finished tasks kept per slot.
    #[arg(long, value_name = "N", default_value_t = 5)]
    task_history_limit: u64,
    /// When initialising a cluster: the IPv4 range services on networks get their virtual IPs
    /// from. Every node adds the ones in use to its loopback interface, so pick a range nothing
    /// else on the hosts uses.
    #[arg(long, value_name = "CIDR", default_value = shoal_types::DEFAULT_VIP_POOL, value_parser = parse_vip_pool)]
    vip_pool: String,
    /// Keep this manager's data key sealed with the cluster's unlock key, never on its disk: a
    /// copy of the data dir reveals nothing, and the manager starts only with --unlock-key. On
    /// initialisation the key is made and printed once; when joining, pass the cluster's.
    #[arg(long)]
    autolock: bool,
    /// The cluster's unlock key (`shoal cluster unlock-key`): to start an autolocked manager, or
    /// to join with --autolock.
    #[arg(long, value_name = "KEY", env = "SHOAL_UNLOCK_KEY", hide_env_values = true)]
    unlock_key: Option<String>,
    /// Replace this (stopped) manager's data key: seal every raft value with a new one, then
    /// exit. Run it on each manager in turn; an interrupted rotation is finished at the next
    /// start.
    #[arg(long)]
    rotate_data_key: bool,
    /// Serve Prometheus metrics on http://ADDR/metrics: PORT (on 127.0.0.1) or IP:PORT. Off by
    /// default
    #[arg(long, value_name = "ADDR", value_parser = shoal_metrics::parse_addr)]
    metrics_addr: Option<SocketAddr>,
    /// Serve the dashboard (services, nodes, rollouts, live) on http://ADDR/: PORT or
    /// 127.0.0.1:PORT; loopback only, as it has no authentication. Off by default
    #[arg(long, value_name = "ADDR", value_parser = shoal_metrics::parse_addr)]
    dashboard_addr: Option<SocketAddr>,
}

fn parse_heartbeat(text: &str) -> Result<shoal_types::GoDuration, String> {
    let d = shoal_types::GoDuration::parse(text).map_err(|e| e.to_string())?;
    if d.as_std() < std::time::Duration::from_millis(100) {
        return Err(format!("{d} is below the minimum of 100ms"));
    }
    Ok(d)
}

/// `--vip-pool`: a range the hosts can lend (see [`shoal_types::vip_pool_range`]).
fn parse_vip_pool(text: &str) -> Result<String, String> {
    shoal_types::vip_pool_range(text).map(|_| text.to_string())
}

/// Like Swarm, certificates live at least an hour. Tests of renewal set
/// SHOAL_TEST_MIN_CERT_EXPIRY=1s to go lower (a test build knob, not for production).
fn parse_cert_expiry(text: &str) -> Result<shoal_types::GoDuration, String> {
    let d = shoal_types::GoDuration::parse(text).map_err(|e| e.to_string())?;
    let minimum = std::env::var("SHOAL_TEST_MIN_CERT_EXPIRY")
        .ok()
        .and_then(|m| shoal_types::GoDuration::parse(&m).ok())
        .map(|m| m.as_std())
        .unwrap_or(Duration::from_secs(3600));
    if d.as_std() < minimum {
        return Err(format!(
            "{d} is below the minimum of {}",
            shoal_types::GoDuration::from_millis(minimum.as_millis() as u64)
        ));
    }
    Ok(d)
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,raft=warn,sled=warn,h2=warn,tower=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    if args.heartbeat_ticks >= args.election_ticks {
        eprintln!(
            "error: --heartbeat-ticks ({}) must be less than --election-ticks ({})",
            args.heartbeat_ticks, args.election_ticks
        );
        return std::process::ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
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
    if args.rotate_data_key {
        let dir = args.data_dir.clone();
        let unlock = args.unlock_key.clone();
        let sealed =
            tokio::task::spawn_blocking(move || shoal_control::at_rest::rotate(&dir, unlock.as_deref())).await??;
        println!("Rotated the data key of {}: {sealed} values sealed with the new key.", args.data_dir.display());
        return Ok(());
    }
    let mut config = ManagerConfig::new(args.data_dir, args.listen_addr);
    if let Some(addr) = args.advertise_addr {
        config.advertise_addr = addr;
    }
    config.join = args.join;
    config.token = args.token;
    config.cluster_spec.node_cert_expiry = args.cert_expiry;
    if let Some(hostname) = args.hostname {
        config.hostname = hostname;
    }
    config.tick = Duration::from_millis(args.tick_ms);
    config.election_tick = args.election_ticks as usize;
    config.heartbeat_tick = args.heartbeat_ticks as usize;
    config.snapshot_interval = args.snapshot_interval;
    config.cluster_spec.heartbeat_period = args.dispatcher_heartbeat;
    config.cluster_spec.task_history_limit = args.task_history_limit;
    config.cluster_spec.vip_pool = args.vip_pool.clone();
    config.autolock = args.autolock;
    config.unlock_key = args.unlock_key.map(shoal_control::UnlockKey::new);
    config.metrics_addr = args.metrics_addr;
    config.dashboard_addr = args.dashboard_addr;

    let running = shoal_control::start(config).await?;
    if let Some(key) = &running.new_unlock_key {
        // On standard output only, never in the log.
        println!(
            "This cluster is autolocked: a restarted manager starts only with its unlock key.\n\
             Keep it safe (a password manager), and give it in the environment, which other users cannot read:\n\
             \n    SHOAL_UNLOCK_KEY={key} shoal-manager ...\n\n\
             (`shoal cluster unlock-key` shows it again while a manager runs.)"
        );
    }
    let manager = running.manager.clone();
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let reason = tokio::select! {
        _ = sigterm.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
        why = manager.stopped() => why,
    };
    tracing::info!(reason, "shutting down");
    manager.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), running.server).await;
    Ok(())
}
