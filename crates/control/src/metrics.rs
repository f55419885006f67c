//! The manager's Prometheus metrics (`shoal-manager --metrics-addr`): counters and histograms
//! that the raft proposals, the control loop, the scheduler and the dispatcher record as they
//! work, and gauges read from the raft status and the store when a scraper asks. Labels are low
//! cardinality only (a kind, a state), never an id.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use shoal_raft::{RaftRole, RaftStatus};
use shoal_store::State;

type Labels = Vec<(String, String)>;

fn label(key: &str, value: &str) -> Labels {
    vec![(key.to_string(), value.to_string())]
}

pub struct ManagerMetrics {
    registry: Registry,
    /// One scrape at a time: a scrape clears and refills the families of the store's gauges.
    scraping: parking_lot::Mutex<()>,
    pub proposals: Counter,
    pub proposal_failures: Counter,
    pub proposal_seconds: Histogram,
    pub loop_pass_seconds: Histogram,
    pub loop_dirty_services: Histogram,
    pub placements: Counter,
    pub unschedulable: Family<Labels, Counter>,
    pub sessions: Gauge,
    pub heartbeats_missed: Counter,
    pub leader_changes: Counter,
    raft_term: Gauge,
    raft_commit_index: Gauge,
    raft_applied_index: Gauge,
    raft_last_index: Gauge,
    raft_is_leader: Gauge,
    raft_voters: Gauge,
    raft_snapshot_bytes: Gauge,
    raft_snapshot_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// From a rollout's new task being made to its running (healthy), per slot.
    pub rollout_slot_seconds: Histogram,
    /// From a rollout batch's start to its last new task running.
    pub rollout_batch_seconds: Histogram,
    /// New tasks of rollouts that failed (ended before running, or within the monitor window).
    pub rollout_task_failures: Counter,
    objects: Family<Labels, Gauge>,
    tasks: Family<Labels, Gauge>,
    nodes: Family<Labels, Gauge>,
    rollouts: Family<Labels, Gauge>,
    rollout_failed_slots: Gauge,
    stack_rollouts: Family<Labels, Gauge>,
}

impl ManagerMetrics {
    /// The manager's metrics; `syncs` is where its raft log times its syncs.
    pub fn new(syncs: &shoal_raft::storage::SyncStats) -> ManagerMetrics {
        let mut registry = Registry::with_prefix("shoal");
        let proposals = Counter::default();
        let proposal_failures = Counter::default();
        // 100 µs to about 13 s.
        let proposal_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 18));
        let loop_pass_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 18));
        let loop_dirty_services = Histogram::new(exponential_buckets(1.0, 4.0, 10));
        let metrics = ManagerMetrics {
            proposals,
            proposal_failures,
            proposal_seconds,
            loop_pass_seconds,
            loop_dirty_services,
            placements: Counter::default(),
            unschedulable: Family::default(),
            sessions: Gauge::default(),
            heartbeats_missed: Counter::default(),
            leader_changes: Counter::default(),
            raft_term: Gauge::default(),
            raft_commit_index: Gauge::default(),
            raft_applied_index: Gauge::default(),
            raft_last_index: Gauge::default(),
            raft_is_leader: Gauge::default(),
            raft_voters: Gauge::default(),
            raft_snapshot_bytes: Gauge::default(),
            raft_snapshot_seconds: Gauge::default(),
            // 10 ms to about 20 min.
            rollout_slot_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 18)),
            rollout_batch_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 18)),
            rollout_task_failures: Counter::default(),
            objects: Family::default(),
            tasks: Family::default(),
            nodes: Family::default(),
            rollouts: Family::default(),
            rollout_failed_slots: Gauge::default(),
            stack_rollouts: Family::default(),
            registry: Registry::default(),
            scraping: parking_lot::Mutex::new(()),
        };
        registry.register("raft_proposals", "Entries this manager proposed", metrics.proposals.clone());
        registry.register(
            "raft_proposal_failures",
            "Proposals refused or lost (not leader, refused batch, timeout)",
            metrics.proposal_failures.clone(),
        );
        registry.register_with_unit(
            "raft_proposal_duration",
            "From proposing an entry to its being applied here",
            Unit::Seconds,
            metrics.proposal_seconds.clone(),
        );
        registry.register("raft_leader_changes", "Leader changes this manager saw", metrics.leader_changes.clone());
        registry.register("raft_term", "The raft term", metrics.raft_term.clone());
        registry.register("raft_commit_index", "The raft commit index", metrics.raft_commit_index.clone());
        registry.register(
            "raft_applied_index",
            "The last raft index applied to the store",
            metrics.raft_applied_index.clone(),
        );
        registry.register(
            "raft_last_index",
            "The last raft index in this manager's log",
            metrics.raft_last_index.clone(),
        );
        registry.register("raft_is_leader", "1 on the leader, 0 elsewhere", metrics.raft_is_leader.clone());
        registry.register("raft_voters", "Voting managers", metrics.raft_voters.clone());
        registry.register_with_unit(
            "raft_snapshot_size",
            "The newest raft snapshot's data",
            Unit::Bytes,
            metrics.raft_snapshot_bytes.clone(),
        );
        registry.register_with_unit(
            "raft_snapshot_duration",
            "How long this manager's newest own snapshot took to serialise and make durable",
            Unit::Seconds,
            metrics.raft_snapshot_seconds.clone(),
        );
        registry.register_with_unit(
            "raft_fsync_duration",
            "Durable syncs of the raft log (one per batch of writes)",
            Unit::Seconds,
            syncs.latency.clone(),
        );
        registry.register_with_unit(
            "rollout_slot_duration",
            "From a rollout's new task being made to its running (healthy)",
            Unit::Seconds,
            metrics.rollout_slot_seconds.clone(),
        );
        registry.register_with_unit(
            "rollout_batch_duration",
            "From a rollout batch's start to its last new task running",
            Unit::Seconds,
            metrics.rollout_batch_seconds.clone(),
        );
        registry.register(
            "rollout_task_failures",
            "New tasks of rollouts that ended before running or within the monitor window",
            metrics.rollout_task_failures.clone(),
        );
        registry.register_with_unit(
            "control_loop_pass_duration",
            "One pass of the leader's control loop that proposed changes, its proposals included",
            Unit::Seconds,
            metrics.loop_pass_seconds.clone(),
        );
        registry.register(
            "control_loop_dirty_services",
            "Services one pass of the control loop looked at",
            metrics.loop_dirty_services.clone(),
        );
        registry.register("scheduler_placements", "Tasks the scheduler placed on a node", metrics.placements.clone());
        registry.register(
            "scheduler_unschedulable",
            "Times the scheduler found a task it could not place (once per new reason), by the kind of reason",
            metrics.unschedulable.clone(),
        );
        registry.register("dispatcher_sessions", "Agent sessions open on this manager", metrics.sessions.clone());
        registry.register(
            "dispatcher_heartbeats_missed",
            "Nodes marked down for missed heartbeats",
            metrics.heartbeats_missed.clone(),
        );
        registry.register("store_objects", "Objects in the store, by kind", metrics.objects.clone());
        registry.register("store_tasks", "Tasks in the store, by observed state", metrics.tasks.clone());
        registry.register("store_nodes", "Nodes, by state", metrics.nodes.clone());
        registry.register("rollouts", "Kept rollout records, by state", metrics.rollouts.clone());
        registry.register(
            "rollout_failed_slots",
            "Slots of kept rollout records whose new task failed",
            metrics.rollout_failed_slots.clone(),
        );
        registry.register("stack_rollouts", "Kept stack rollouts, by state", metrics.stack_rollouts.clone());
        ManagerMetrics { registry, ..metrics }
    }

    /// The metrics as Prometheus text, with the gauges read from `status` and the store now (its
    /// read lock is held for the counting only, not the encoding).
    pub fn render<'a>(
        &self,
        status: &RaftStatus,
        state: impl FnOnce() -> parking_lot::RwLockReadGuard<'a, State>,
    ) -> String {
        let _one_scrape = self.scraping.lock();
        self.refresh(status, &state());
        shoal_metrics::encode(&self.registry)
    }

    fn refresh(&self, status: &RaftStatus, state: &State) {
        self.raft_snapshot_seconds.set(status.snapshot_millis as f64 / 1000.0);
        let gauge = |g: &Gauge, v: u64| {
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        gauge(&self.raft_term, status.term);
        gauge(&self.raft_commit_index, status.commit);
        gauge(&self.raft_applied_index, status.applied);
        gauge(&self.raft_last_index, status.last_index);
        gauge(&self.raft_is_leader, u64::from(status.role == RaftRole::Leader));
        gauge(&self.raft_voters, status.voters.len() as u64);
        gauge(&self.raft_snapshot_bytes, status.snapshot_bytes);
        let set = |family: &Family<Labels, Gauge>, key: &str, counts: std::collections::BTreeMap<String, u64>| {
            family.clear();
            for (value, n) in counts {
                gauge(&family.get_or_create(&label(key, &value)), n);
            }
        };
        let mut objects = std::collections::BTreeMap::new();
        objects.insert("service".to_string(), state.services().count() as u64);
        objects.insert("task".to_string(), state.tasks().count() as u64);
        objects.insert("node".to_string(), state.nodes().count() as u64);
        objects.insert("route".to_string(), state.routes().count() as u64);
        objects.insert("secret".to_string(), state.data_objects(shoal_types::DataKind::Secret).count() as u64);
        objects.insert("config".to_string(), state.data_objects(shoal_types::DataKind::Config).count() as u64);
        objects.insert("network".to_string(), state.data_objects(shoal_types::DataKind::Network).count() as u64);
        objects.insert("stack".to_string(), state.stack_names().count() as u64);
        set(&self.objects, "kind", objects);
        let mut tasks = std::collections::BTreeMap::new();
        for task in state.tasks() {
            *tasks.entry(task.status.state.as_str().to_string()).or_insert(0) += 1;
        }
        set(&self.tasks, "state", tasks);
        let mut nodes = std::collections::BTreeMap::new();
        for node in state.nodes() {
            *nodes.entry(node.status.state.as_str().to_string()).or_insert(0) += 1;
        }
        set(&self.nodes, "state", nodes);
        let mut rollouts = std::collections::BTreeMap::new();
        let mut failed = 0u64;
        for record in state.all_rollouts() {
            *rollouts.entry(record.state.as_str().to_string()).or_insert(0) += 1;
            failed += record.batches.iter().flat_map(|b| &b.slots).filter(|s| s.failure.is_some()).count() as u64;
        }
        set(&self.rollouts, "state", rollouts);
        gauge(&self.rollout_failed_slots, failed);
        let mut groups = std::collections::BTreeMap::new();
        let names: Vec<String> = state.stack_names().map(str::to_string).collect();
        for group in names.iter().flat_map(|n| state.stack_revisions(n)).filter_map(|r| r.rollout.as_ref()) {
            *groups.entry(group.state.as_str().to_string()).or_insert(0) += 1;
        }
        set(&self.stack_rollouts, "state", groups);
    }
}

/// Serves the manager's metrics on `listener` until the manager stops; counts leader changes.
pub async fn serve(manager: Arc<crate::Manager>, listener: tokio::net::TcpListener) {
    let watcher = manager.clone();
    tokio::spawn(async move {
        let mut raft = watcher.watch_raft();
        let mut leader = raft.borrow().leader_id;
        while raft.changed().await.is_ok() {
            let now = raft.borrow().leader_id;
            if now != leader && now != 0 {
                watcher.metrics.leader_changes.inc();
            }
            if now != 0 {
                leader = now;
            }
        }
    });
    let render: shoal_metrics::Render = Arc::new(move || {
        let status = manager.raft_status();
        manager.metrics.render(&status, || manager.state())
    });
    shoal_metrics::serve(listener, render).await;
}
