//! The control loop over an in-memory store: no raft, no network. Entries are applied by the
//! same state machine a manager runs, so the loop sees its own writes as change events, exactly
//! as on a leader. The clock is the wall clock (the loop's timers compare Unix milliseconds).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use shoal_raft::StateMachine;
use shoal_store::Batch;
use shoal_types::{GoDuration, ServiceMode, ServiceSpec, Task, TaskStatus};

use super::*;
use crate::StoreMachine;
use crate::machine::RemovalLog;
use crate::router::ChangeRouter;
use crate::testing::worker;

/// How long a test waits for something that should happen at once.
const WAIT: Duration = Duration::from_secs(10);

struct MemLoop {
    state: Arc<RwLock<State>>,
    /// The state machine and the last index it applied.
    machine: Mutex<(StoreMachine, u64)>,
    raft: watch::Sender<RaftStatus>,
    /// Every entry the loop wrote, in order.
    entries: Mutex<Vec<Vec<Action>>>,
    /// How many of the next proposals are refused (as a lost leadership or a full queue would).
    refuse: AtomicUsize,
}

fn leader() -> RaftStatus {
    RaftStatus { id: 1, term: 1, role: RaftRole::Leader, leader_id: 1, leader_ready: true, ..Default::default() }
}

impl MemLoop {
    /// A leader whose change stream holds `capacity` changes before the loop lags, with one
    /// ready worker node `n1`.
    fn new(capacity: usize) -> Arc<MemLoop> {
        let state = Arc::new(RwLock::new(State::default()));
        let machine = StoreMachine {
            state: state.clone(),
            events: broadcast::channel(capacity).0,
            removals: Arc::new(RemovalLog::default()),
            router: Arc::new(ChangeRouter::with_limit(1_000)),
        };
        let backend = Arc::new(MemLoop {
            state,
            machine: Mutex::new((machine, 0)),
            raft: watch::Sender::new(leader()),
            entries: Mutex::new(Vec::new()),
            refuse: AtomicUsize::new(0),
        });
        backend.write(vec![Action::PutNode { node: worker("n1") }]);
        backend
    }

    /// Applies `actions` as one entry now, as a user's write would be.
    fn write(&self, actions: Vec<Action>) {
        self.apply(actions).expect("the entry applies");
    }

    fn apply(&self, actions: Vec<Action>) -> Result<(), ApiError> {
        let mut machine = self.machine.lock();
        machine.1 += 1;
        let index = machine.1;
        let data = serde_json::to_vec(&Batch::new(crate::now_millis(), actions)).expect("serialises");
        Ok(machine.0.apply(index, &data)?)
    }

    fn create(&self, id: &str, replicas: u64) {
        let mut spec = ServiceSpec::new(id, "busybox");
        spec.mode = ServiceMode::Replicated { replicas };
        self.write(vec![Action::CreateService { id: id.into(), spec }]);
    }

    fn scale(&self, id: &str, replicas: u64) {
        let service = self.state.read().service(id).cloned().expect("the service exists");
        let mut spec = service.spec.clone();
        spec.mode = ServiceMode::Replicated { replicas };
        self.write(vec![Action::UpdateService { id: id.into(), expected_version: service.version, spec }]);
    }

    /// The tasks of `service` meant to run that the scheduler placed on a node.
    fn placed(&self, service: &str) -> Vec<Task> {
        let state = self.state.read();
        state
            .tasks_of_service(service)
            .filter(|t| t.desired_state == TaskState::Running && t.status.state == TaskState::Assigned)
            .cloned()
            .collect()
    }

    /// Waits until `service` has `replicas` placed tasks (and no more).
    async fn wait_placed(&self, service: &str, replicas: usize) -> Vec<Task> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let placed = self.placed(service);
            if placed.len() == replicas {
                return placed;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{service}: {} of {replicas} tasks placed after {WAIT:?}; entries written: {:?}",
                placed.len(),
                self.entries.lock()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl LoopBackend for MemLoop {
    fn state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read()
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.machine.lock().0.events.subscribe()
    }

    fn watch_raft(&self) -> watch::Receiver<RaftStatus> {
        self.raft.subscribe()
    }

    async fn propose_steps(&self, steps: Vec<Vec<Action>>) -> Result<usize, ApiError> {
        if self.refuse.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            return Err(ApiError::Unavailable("refused by the test".into()));
        }
        let packed = crate::pack_steps(steps);
        let written = packed.entries.len();
        for entry in packed.entries {
            self.entries.lock().push(entry.clone());
            self.apply(entry)?;
        }
        Ok(written)
    }

    fn now_millis(&self) -> u64 {
        crate::now_millis()
    }
}

/// The service every action of `entry` concerns (`None` for an action of no service, or a task
/// the store no longer holds).
fn services_of(state: &State, entry: &[Action]) -> Vec<Option<String>> {
    entry
        .iter()
        .map(|action| match action {
            Action::PutTask { task } => Some(task.service_id.clone()),
            Action::AssignTask { id, .. }
            | Action::MarkUnschedulable { id, .. }
            | Action::SetTaskStatus { id, .. }
            | Action::SetDesiredState { id, .. } => state.task(id).map(|t| t.service_id.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_new_service_gets_its_tasks_created_and_placed() {
    let backend = MemLoop::new(1024);
    let control = tokio::spawn(run(backend.clone()));
    backend.create("web", 3);
    let placed = backend.wait_placed("web", 3).await;
    assert!(placed.iter().all(|t| t.node_id == "n1"), "{placed:?}");
    let mut slots: Vec<u64> = placed.iter().map(|t| t.slot).collect();
    slots.sort_unstable();
    assert_eq!(slots, [1, 2, 3]);
    control.abort();
}

/// Once the cluster converged, a change to one service makes the loop write for that service
/// alone: nothing is decided again for the others. (That an incremental pass decides what a
/// full one would is the orchestrator's property test.)
#[tokio::test]
async fn a_change_to_one_service_writes_for_that_service_alone() {
    let backend = MemLoop::new(1024);
    let control = tokio::spawn(run(backend.clone()));
    for service in ["a", "b", "c"] {
        backend.create(service, 2);
    }
    for service in ["a", "b", "c"] {
        backend.wait_placed(service, 2).await;
    }
    let before = backend.entries.lock().len();
    backend.scale("b", 4);
    backend.wait_placed("b", 4).await;
    let entries = backend.entries.lock()[before..].to_vec();
    assert!(!entries.is_empty());
    let state = backend.state.read();
    for entry in &entries {
        for service in services_of(&state, entry) {
            assert_eq!(service.as_deref(), Some("b"), "an entry after scaling b: {entry:?}");
        }
    }
    drop(state);
    assert_eq!(backend.placed("a").len(), 2);
    assert_eq!(backend.placed("c").len(), 2);
    control.abort();
}

/// More changes than the stream holds arrive while the loop cannot run (this runtime has one
/// thread, and the writes never yield): the loop lags, falls back to a full pass, and every
/// service still gets its tasks.
#[tokio::test]
async fn a_lagged_change_stream_falls_back_to_a_full_pass() {
    let backend = MemLoop::new(4);
    let control = tokio::spawn(run(backend.clone()));
    // Let the loop subscribe and settle into waiting for changes.
    backend.create("first", 1);
    backend.wait_placed("first", 1).await;
    let services: Vec<String> = (0..20).map(|i| format!("s{i}")).collect();
    for service in &services {
        backend.create(service, 1);
    }
    for service in &services {
        backend.wait_placed(service, 1).await;
    }
    control.abort();
}

/// A follower's loop decides nothing; once this manager leads, it catches up on what changed.
#[tokio::test]
async fn only_the_leader_decides() {
    let backend = MemLoop::new(1024);
    backend.raft.send_replace(RaftStatus { role: RaftRole::Follower, leader_id: 2, ..leader() });
    let control = tokio::spawn(run(backend.clone()));
    backend.create("web", 2);
    // Whatever the loop would do, it has had the chance to: it runs on this thread whenever the
    // test waits.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(backend.entries.lock().is_empty(), "a follower wrote {:?}", backend.entries.lock());
    assert_eq!(backend.state.read().tasks_of_service("web").count(), 0);
    backend.raft.send_replace(RaftStatus { term: 2, ..leader() });
    backend.wait_placed("web", 2).await;
    control.abort();
}

/// A refused proposal is not lost: what the pass looked at is looked at again.
#[tokio::test]
async fn a_refused_proposal_is_decided_again() {
    let backend = MemLoop::new(1024);
    backend.refuse.store(2, Ordering::SeqCst);
    let control = tokio::spawn(run(backend.clone()));
    backend.create("web", 2);
    backend.wait_placed("web", 2).await;
    assert_eq!(backend.refuse.load(Ordering::SeqCst), 0, "both refusals were met");
    control.abort();
}

/// A task that failed is replaced after the restart delay without any further change: the loop
/// wakes up for the end of the backoff by itself.
#[tokio::test]
async fn a_failed_task_is_replaced_when_its_restart_delay_ends() {
    let backend = MemLoop::new(1024);
    let control = tokio::spawn(run(backend.clone()));
    let mut spec = ServiceSpec::new("web", "busybox");
    spec.mode = ServiceMode::Replicated { replicas: 1 };
    spec.task.restart_policy.delay = GoDuration::from_millis(300);
    backend.write(vec![Action::CreateService { id: "web".into(), spec }]);
    let first = backend.wait_placed("web", 1).await.remove(0);
    backend.write(vec![Action::SetTaskStatus {
        id: first.id.clone(),
        status: TaskStatus { state: TaskState::Failed, err: "exit 1".into(), ..Default::default() },
    }]);
    let replacement = backend.wait_placed("web", 1).await.remove(0);
    assert_ne!(replacement.id, first.id);
    assert_eq!(replacement.slot, first.slot);
    control.abort();
}

/// Tasks prepared ahead of their slot's turn come after every other waiting task in the
/// scheduling problem, so they never take the node a slot being updated needs.
#[test]
fn prepared_tasks_are_scheduled_after_the_others() {
    let mut state = State::default();
    let create = Action::CreateService { id: "s1".into(), spec: ServiceSpec::new("web", "busybox") };
    let prepared = |id: &str| Task {
        desired_state: shoal_types::TaskState::Ready,
        start_gate: Some(shoal_types::StartGate::prepared_ahead()),
        ..crate::testing::task(id, "s1", "", shoal_types::TaskState::New)
    };
    let plain = crate::testing::task("b-now", "s1", "", shoal_types::TaskState::New);
    let puts = vec![
        Action::PutTask { task: prepared("a-later") },
        Action::PutTask { task: plain },
        Action::PutTask { task: prepared("c-later") },
    ];
    state.apply(1, &Batch::new(0, vec![create])).unwrap();
    state.apply(2, &Batch::new(0, puts)).unwrap();
    let (problem, _) = scheduling_problem(&state, 0, Vec::new());
    let order: Vec<String> = problem.expect("tasks wait").pending.iter().map(|t| t.id.clone()).collect();
    assert_eq!(order.first().map(String::as_str), Some("b-now"), "{order:?}");
    assert_eq!(order.len(), 3);
}
