//! The dispatcher over an in-memory store: no raft, no network. Entries are applied by the same
//! state machine a manager runs, so changes reach the sessions through the real routing.

use std::time::{Duration, SystemTime};

use parking_lot::RwLock;
use shoal_raft::StateMachine;
use shoal_store::Batch;
use shoal_tls::{PeerIdentity, PeerInfo, Role};
use shoal_types::{Cluster, ClusterSpec, GoDuration, ServiceSpec};
use tokio::sync::{broadcast, watch};
use tokio_stream::StreamExt;

use super::*;
use crate::StoreMachine;
use crate::machine::RemovalLog;
use crate::router::MAX_PENDING_TASKS;
use crate::testing::{task, worker};

/// How long a test waits for something that should happen at once.
const WAIT: Duration = Duration::from_secs(10);

struct MemBackend {
    state: Arc<RwLock<State>>,
    /// The state machine and the last index it applied.
    machine: Mutex<(StoreMachine, u64)>,
    router: Arc<ChangeRouter>,
    logs: Arc<crate::logs::LogBroker>,
    /// Every proposal, as proposed.
    proposals: Mutex<Vec<Vec<Action>>>,
    /// Proposals wait while this is false, so a test can hold a write in flight.
    gate: watch::Sender<bool>,
}

impl MemBackend {
    /// A cluster (heartbeats every minute, so no node expires during a test) with a service
    /// `web`; sessions resync past `limit` pending tasks.
    fn new(limit: usize) -> Arc<MemBackend> {
        let state = Arc::new(RwLock::new(State::default()));
        let router = Arc::new(ChangeRouter::with_limit(limit));
        let machine = StoreMachine {
            state: state.clone(),
            events: broadcast::channel(16).0,
            removals: Arc::new(RemovalLog::default()),
            router: router.clone(),
        };
        let backend = Arc::new(MemBackend {
            state,
            machine: Mutex::new((machine, 0)),
            router,
            logs: Arc::default(),
            proposals: Mutex::new(Vec::new()),
            gate: watch::Sender::new(true),
        });
        let spec = ClusterSpec { heartbeat_period: GoDuration::from_secs(60), ..ClusterSpec::default() };
        let cluster = Cluster { id: "c".into(), version: 0, created_at: 0, spec };
        backend.write(vec![
            Action::InitCluster { cluster },
            Action::CreateService { id: "web".into(), spec: ServiceSpec::new("web", "busybox") },
        ]);
        backend
    }

    /// Applies `actions` as one entry now, as the control loop's writes would be.
    fn write(&self, actions: Vec<Action>) {
        self.apply(actions).expect("the entry applies");
    }

    fn apply(&self, actions: Vec<Action>) -> Result<(), ApiError> {
        let mut machine = self.machine.lock();
        machine.1 += 1;
        let index = machine.1;
        let data = serde_json::to_vec(&Batch::new(1_000, actions)).expect("serialises");
        Ok(machine.0.apply(index, &data)?)
    }

    fn put(&self, tasks: Vec<Task>) {
        self.write(tasks.into_iter().map(|task| Action::PutTask { task }).collect());
    }

    fn hold_writes(&self) {
        self.gate.send_replace(false);
    }

    fn release_writes(&self) {
        self.gate.send_replace(true);
    }
}

impl Backend for MemBackend {
    fn state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read()
    }

    fn raft_status(&self) -> RaftStatus {
        RaftStatus { id: 1, term: 1, role: RaftRole::Leader, leader_id: 1, leader_ready: true, ..Default::default() }
    }

    async fn propose(&self, actions: Vec<Action>) -> Result<(), ApiError> {
        self.proposals.lock().push(actions.clone());
        let mut gate = self.gate.subscribe();
        gate.wait_for(|open| *open).await.expect("the backend outlives its proposals");
        self.apply(actions)
    }

    async fn propose_in_entries(&self, actions: Vec<Action>) -> Result<usize, ApiError> {
        self.propose(actions).await.map(|()| 1)
    }

    fn router(&self) -> &Arc<ChangeRouter> {
        &self.router
    }

    fn logs(&self) -> &Arc<crate::logs::LogBroker> {
        &self.logs
    }

    fn now_millis(&self) -> u64 {
        1_000
    }

    fn changes(&self) -> broadcast::Receiver<Arc<Change>> {
        self.machine.lock().0.events.subscribe()
    }
}

/// A request as the node's worker certificate makes it.
fn from_node<T>(node: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.extensions_mut().insert(PeerInfo {
        remote_addr: None,
        identity: Some(PeerIdentity {
            node_id: node.into(),
            role: Role::Worker,
            cluster_id: "c".into(),
            not_before: SystemTime::UNIX_EPOCH,
            not_after: SystemTime::UNIX_EPOCH,
            serial: "1".into(),
        }),
    });
    request
}

struct Agent {
    node: String,
    session_id: String,
    stream: SessionStream,
}

async fn connect(api: &DispatcherApi<MemBackend>, node: &str) -> (Agent, SessionMessage) {
    let request = SessionRequest {
        node_id: node.into(),
        description_json: serde_json::to_string(&NodeDescription::default()).unwrap(),
        labels: Default::default(),
    };
    let mut stream = api.session(from_node(node, request)).await.expect("session opens").into_inner();
    let first = next(&mut stream).await.expect("the complete set");
    let agent = Agent { node: node.into(), session_id: first.session_id.clone(), stream };
    (agent, first)
}

async fn next(stream: &mut SessionStream) -> Result<SessionMessage, Status> {
    tokio::time::timeout(WAIT, stream.next()).await.expect("a message in time").expect("the stream is open")
}

/// The tasks of a message, as (id, desired state), by id.
fn tasks_of(message: &SessionMessage) -> Vec<(String, TaskState)> {
    let mut tasks: Vec<(String, TaskState)> = message
        .tasks_json
        .iter()
        .map(|json| serde_json::from_str::<Task>(json).unwrap())
        .map(|t| (t.id, t.desired_state))
        .collect();
    tasks.sort();
    tasks
}

fn running(ids: &[&str]) -> Vec<(String, TaskState)> {
    ids.iter().map(|id| (id.to_string(), TaskState::Running)).collect()
}

async fn setup(limit: usize) -> (Arc<MemBackend>, DispatcherApi<MemBackend>) {
    let backend = MemBackend::new(limit);
    let api = DispatcherApi(DispatcherService::new(backend.clone()));
    // A new term ends every session: open them only once the dispatcher has seen its term.
    wait_until("the dispatcher sees its leadership", || api.leadership.lock().is_some()).await;
    (backend, api)
}

async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_session_gets_its_nodes_tasks_and_not_others() {
    let (backend, api) = setup(MAX_PENDING_TASKS).await;
    let (_b, _) = connect(&api, "b").await;
    backend.put(vec![
        task("a1", "web", "a", TaskState::Assigned),
        task("b1", "web", "b", TaskState::Assigned),
        // Bound to a but not past the scheduler yet: not the agent's concern.
        task("a2", "web", "a", TaskState::Pending),
    ]);
    let (mut a, first) = connect(&api, "a").await;
    assert_eq!(first.kind, AssignmentKind::Complete as i32);
    assert_eq!(tasks_of(&first), running(&["a1"]));

    backend.put(vec![task("b2", "web", "b", TaskState::Assigned), task("a3", "web", "a", TaskState::Assigned)]);
    let message = next(&mut a.stream).await.unwrap();
    assert_eq!(message.kind, AssignmentKind::Incremental as i32);
    assert_eq!(tasks_of(&message), running(&["a3"]));
    assert!(message.removed.is_empty());

    // A status change alone is not sent (the agent reported it); a removal is.
    backend.write(vec![
        Action::SetTaskStatus {
            id: "a1".into(),
            status: TaskStatus { state: TaskState::Running, ..Default::default() },
        },
        Action::DeleteTasks { ids: vec!["a3".into(), "b1".into()] },
    ]);
    let message = next(&mut a.stream).await.unwrap();
    assert!(message.tasks_json.is_empty());
    assert_eq!(message.removed, ["a3"]);
}

#[tokio::test]
async fn a_burst_for_other_nodes_neither_reaches_nor_lags_a_session() {
    // A session that received even 100 of the burst's changes would resync with a complete set.
    let (backend, api) = setup(100).await;
    let (mut a, _) = connect(&api, "a").await;
    // One entry, applied before the session runs again: nothing could drain it meanwhile.
    let burst: Vec<Task> =
        (0..10_000).map(|i| task(&format!("o{i:05}"), "web", "other", TaskState::Assigned)).collect();
    backend.put(burst);
    backend.put(vec![task("a1", "web", "a", TaskState::Assigned)]);
    let message = next(&mut a.stream).await.unwrap();
    assert_eq!(message.kind, AssignmentKind::Incremental as i32);
    assert_eq!(tasks_of(&message), running(&["a1"]));
    assert!(message.removed.is_empty());
}

#[tokio::test]
async fn a_session_that_falls_behind_resends_its_complete_set_alone() {
    let (backend, api) = setup(100).await;
    let (mut a, _) = connect(&api, "a").await;
    let (mut b, _) = connect(&api, "b").await;
    let burst: Vec<Task> = (0..1_000).map(|i| task(&format!("b{i:04}"), "web", "b", TaskState::Assigned)).collect();
    backend.put(burst);
    backend.put(vec![task("a1", "web", "a", TaskState::Assigned)]);
    let message = next(&mut b.stream).await.unwrap();
    assert_eq!(message.kind, AssignmentKind::Complete as i32);
    assert_eq!(message.tasks_json.len(), 1_000);
    assert_eq!(message.session_id, b.session_id, "the same session, resynced in place");
    let message = next(&mut a.stream).await.unwrap();
    assert_eq!((message.kind, tasks_of(&message)), (AssignmentKind::Incremental as i32, running(&["a1"])));
    // After the resync b's changes flow as before.
    backend.write(vec![Action::SetDesiredState { id: "b0007".into(), desired: TaskState::Shutdown }]);
    let message = next(&mut b.stream).await.unwrap();
    assert_eq!(message.kind, AssignmentKind::Incremental as i32);
    assert_eq!(tasks_of(&message), [("b0007".to_string(), TaskState::Shutdown)]);
}

#[tokio::test]
async fn changes_a_session_has_not_sent_yet_coalesce_to_the_latest() {
    let (backend, api) = setup(MAX_PENDING_TASKS).await;
    backend.put(vec![task("a1", "web", "a", TaskState::Running)]);
    let (mut a, first) = connect(&api, "a").await;
    assert_eq!(tasks_of(&first), running(&["a1"]));
    // Three entries before the session runs again.
    backend.put(vec![task("a2", "web", "a", TaskState::Assigned)]);
    backend.write(vec![Action::SetDesiredState { id: "a2".into(), desired: TaskState::Shutdown }]);
    backend.write(vec![Action::SetDesiredState { id: "a1".into(), desired: TaskState::Shutdown }]);
    let message = next(&mut a.stream).await.unwrap();
    assert_eq!(
        tasks_of(&message),
        [("a1".to_string(), TaskState::Shutdown), ("a2".to_string(), TaskState::Shutdown)],
        "one message, each task once, in its latest state"
    );
}

#[tokio::test]
async fn a_task_moved_to_another_node_is_removed_from_the_one_it_left() {
    let (backend, api) = setup(MAX_PENDING_TASKS).await;
    backend.put(vec![task("t1", "web", "a", TaskState::Assigned)]);
    let (mut a, first) = connect(&api, "a").await;
    assert_eq!(tasks_of(&first), running(&["t1"]));
    let (mut b, first) = connect(&api, "b").await;
    assert!(first.tasks_json.is_empty());
    backend.put(vec![task("t1", "web", "b", TaskState::Assigned)]);
    let message = next(&mut a.stream).await.unwrap();
    assert_eq!((tasks_of(&message), message.removed), (Vec::new(), vec!["t1".to_string()]));
    let message = next(&mut b.stream).await.unwrap();
    assert_eq!(tasks_of(&message), running(&["t1"]));
}

#[tokio::test]
async fn status_reports_are_merged_into_the_next_write() {
    let (backend, api) = setup(MAX_PENDING_TASKS).await;
    backend.put(["a1", "a2", "a3"].iter().map(|id| task(id, "web", "a", TaskState::Assigned)).collect());
    let (a, _) = connect(&api, "a").await;
    let report = |updates: &[(&str, TaskState)]| {
        let request = UpdateTaskStatusRequest {
            node_id: a.node.clone(),
            session_id: a.session_id.clone(),
            updates: updates
                .iter()
                .map(|(id, state)| TaskStatusUpdate {
                    task_id: id.to_string(),
                    status_json: serde_json::to_string(&TaskStatus { state: *state, ..Default::default() }).unwrap(),
                })
                .collect(),
        };
        api.update_task_status(from_node(&a.node, request))
    };
    let proposed = || backend.proposals.lock().len();
    let before = proposed();
    backend.hold_writes();
    // Nothing is being written: the first report is written at once...
    report(&[("a1", TaskState::Preparing)]).await.expect("accepted");
    wait_until("the first report is proposed", || proposed() == before + 1).await;
    // ...and everything reported while it is in flight goes into the next write, a task's
    // latest status only.
    report(&[("a2", TaskState::Preparing), ("a3", TaskState::Preparing)]).await.expect("accepted");
    report(&[("a2", TaskState::Running)]).await.expect("accepted");
    backend.release_writes();
    wait_until("the reports are written", || {
        backend.state().task("a3").is_some_and(|t| t.status.state == TaskState::Preparing)
    })
    .await;
    let proposals = backend.proposals.lock()[before..].to_vec();
    let statuses: Vec<Vec<(String, TaskState)>> = proposals
        .iter()
        .map(|actions| {
            actions
                .iter()
                .map(|action| match action {
                    Action::SetTaskStatus { id, status } => (id.clone(), status.state),
                    other => panic!("not a status: {other:?}"),
                })
                .collect()
        })
        .collect();
    let expected = |rows: &[(&str, TaskState)]| rows.iter().map(|(id, s)| (id.to_string(), *s)).collect::<Vec<_>>();
    assert_eq!(
        statuses,
        [
            expected(&[("a1", TaskState::Preparing)]),
            expected(&[("a2", TaskState::Running), ("a3", TaskState::Preparing)])
        ]
    );
    assert_eq!(backend.state().task("a2").unwrap().status.state, TaskState::Running);
}

#[tokio::test]
async fn an_unknown_session_is_not_found() {
    let (backend, api) = setup(MAX_PENDING_TASKS).await;
    backend.put(vec![task("a1", "web", "a", TaskState::Assigned)]);
    let (old, _) = connect(&api, "a").await;
    let heartbeat = |session_id: &str| {
        api.heartbeat(from_node("a", HeartbeatRequest { node_id: "a".into(), session_id: session_id.into() }))
    };
    assert!(heartbeat(&old.session_id).await.is_ok());
    let err = heartbeat("no-such-session").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");
    // A new session replaces the old one, whose id is then unknown too.
    let (new, _) = connect(&api, "a").await;
    assert!(heartbeat(&new.session_id).await.is_ok());
    assert_eq!(heartbeat(&old.session_id).await.unwrap_err().code(), tonic::Code::NotFound);
    let stale = UpdateTaskStatusRequest {
        node_id: "a".into(),
        session_id: old.session_id.clone(),
        updates: vec![TaskStatusUpdate {
            task_id: "a1".into(),
            status_json: serde_json::to_string(&TaskStatus { state: TaskState::Running, ..Default::default() })
                .unwrap(),
        }],
    };
    assert_eq!(api.update_task_status(from_node("a", stale)).await.unwrap_err().code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn a_removed_node_loses_its_session() {
    let (backend, api) = setup(MAX_PENDING_TASKS).await;
    let (mut a, _) = connect(&api, "a").await;
    backend.write(vec![Action::RemoveNode { id: "a".into() }]);
    let err = next(&mut a.stream).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    let beat = HeartbeatRequest { node_id: "a".into(), session_id: a.session_id.clone() };
    assert_eq!(api.heartbeat(from_node("a", beat)).await.unwrap_err().code(), tonic::Code::NotFound);
}

#[test]
fn the_heartbeat_period_grows_past_200_nodes() {
    let second = Duration::from_secs(1);
    assert_eq!(heartbeat_period(second, 0), second);
    assert_eq!(heartbeat_period(second, 200), second);
    assert_eq!(heartbeat_period(second, 1_000), Duration::from_secs(5));
    assert_eq!(heartbeat_period(Duration::from_secs(10), 1_000), Duration::from_secs(10));
    assert_eq!(heartbeat_period(second, usize::MAX), second * u32::MAX / 200);
}

/// A thousand nodes are told to beat every 5 s; once most have left, the period shrinks again,
/// but an agent still waiting out the long period it was told is not declared down for it.
#[tokio::test(start_paused = true)]
async fn a_large_cluster_beats_less_often_and_a_shrinking_one_waits_for_the_period_it_told() {
    let (backend, api) = setup(MAX_PENDING_TASKS).await;
    let cluster = backend.state().cluster().cloned().unwrap();
    let spec = ClusterSpec { heartbeat_period: GoDuration::from_secs(1), ..cluster.spec.clone() };
    backend.write(vec![Action::UpdateCluster { expected_version: cluster.version, spec }]);
    let others: Vec<String> = (0..999).map(|i| format!("n{i}")).collect();
    backend.write(others.iter().map(|id| Action::PutNode { node: worker(id) }).collect());
    let (a, _) = connect(&api, "a").await;
    let beat =
        || api.heartbeat(from_node("a", HeartbeatRequest { node_id: "a".into(), session_id: a.session_id.clone() }));
    // The health tick counts the nodes (every 100 ms).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(beat().await.unwrap().into_inner().period_ms, 5_000);
    // All but `a` leave: the period is the cluster's again, but `a` was told 5 s.
    backend.write(others.iter().map(|id| Action::RemoveNode { id: id.clone() }).collect());
    tokio::time::sleep(Duration::from_millis(4_900)).await;
    assert_eq!(backend.state().node("a").unwrap().status.state, NodeState::Ready);
    assert_eq!(beat().await.unwrap().into_inner().period_ms, 1_000);
    // Told 1 s now: 3 missed beats and it is down.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    wait_until("a is down", || backend.state().node("a").unwrap().status.state == NodeState::Down).await;
}

fn data(id: &str, kind: shoal_types::DataKind, name: &str, value: &[u8]) -> Action {
    let spec = shoal_types::DataSpec { name: name.into(), labels: Default::default(), data: value.to_vec() };
    Action::CreateData {
        object: shoal_types::DataObject {
            id: id.into(),
            kind,
            version: 0,
            created_at: 0,
            updated_at: 0,
            spec,
            size: 0,
        },
    }
}

fn using(mut task: Task, secrets: &[&str], configs: &[&str]) -> Task {
    let spec = Arc::make_mut(&mut task.spec);
    spec.container.secrets = secrets.iter().map(|s| shoal_types::DataReference::named(s)).collect();
    spec.container.configs = configs.iter().map(|c| shoal_types::DataReference::named(c)).collect();
    task
}

/// The names and values of the secrets and configs in a message.
fn data_of(message: &SessionMessage) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = message
        .data_json
        .iter()
        .map(|json| serde_json::from_str::<shoal_types::DataObject>(json).unwrap())
        .map(|d| (d.spec.name, d.spec.data))
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn an_agent_gets_the_secrets_its_tasks_use_once_and_no_other() {
    use shoal_types::DataKind::{Config, Secret};
    let (backend, api) = setup(MAX_PENDING_TASKS).await;
    backend.write(vec![
        data("s1", Secret, "pw", b"hunter2"),
        data("s2", Secret, "other", b"not yours"),
        data("c1", Config, "conf", b"listen 80"),
    ]);
    backend.put(vec![
        using(task("a1", "web", "a", TaskState::Assigned), &["pw"], &[]),
        using(task("b1", "web", "b", TaskState::Assigned), &[], &[]),
    ]);
    let (mut a, first) = connect(&api, "a").await;
    assert_eq!(data_of(&first), vec![("pw".to_string(), b"hunter2".to_vec())], "only what its task uses");
    let (_b, first_b) = connect(&api, "b").await;
    assert!(first_b.data_json.is_empty(), "a node whose tasks use none gets none");

    // A new task using the same secret and a config: only the config is new to the session.
    backend.put(vec![using(task("a2", "web", "a", TaskState::Assigned), &["pw"], &["conf"])]);
    let message = next(&mut a.stream).await.unwrap();
    assert_eq!(tasks_of(&message), running(&["a2"]));
    assert_eq!(data_of(&message), vec![("conf".to_string(), b"listen 80".to_vec())]);

    // A new session starts over: the agent may have restarted and kept nothing.
    drop(a);
    let (_a, again) = connect(&api, "a").await;
    assert_eq!(data_of(&again).len(), 2);
}
