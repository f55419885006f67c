//! A deterministic in-memory raft cluster: engines over `MemDurable`, a message queue driven by a
//! seeded RNG (drops, reordering, partitions), crash-restart from what was synced, and invariant
//! checks after every step.
//!
//! Everything the simulator decides (which message is delivered when, which is dropped, which
//! node crashes, what is proposed) comes from the seed. raft-rs 0.7 draws each node's randomised
//! election timeout from `rand::thread_rng()`, which no test can seed, so election timing is
//! the one source of noise left; a failing seed is therefore re-run a few times by setting
//! `SIM_SEED=<seed>` (see `seeds`).

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use raft::Storage as _;
use raft::prelude::{Message, MessageType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use shoal_raft::{
    Engine, EngineConfig, MemDurable, Member, MemberChange, MemberChangeKind, Members, ProposeError, RaftRole,
    RaftStatus, RaftStorage, StateMachine,
};

/// What a state machine applied at one index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    Data(String),
    Member { kind: MemberChangeKind, raft_id: u64 },
}

/// Index -> what was applied there, by whichever node applied it first. Every later application
/// of the same index, on any node and any incarnation, must match (state machine safety).
pub type Committed = Arc<Mutex<BTreeMap<u64, Applied>>>;

fn check_committed(committed: &Committed, node: u64, index: u64, applied: &Applied) {
    let mut committed = committed.lock().unwrap();
    match committed.get(&index) {
        Some(prev) => assert_eq!(
            prev, applied,
            "state machine safety violated: node {node} applied {applied:?} at index {index}, another node applied {prev:?}"
        ),
        None => {
            committed.insert(index, applied.clone());
        }
    }
}

/// Records every applied entry, in order, so nodes can be compared.
pub struct TestSm {
    node: u64,
    pub log: Vec<(u64, Applied)>,
    committed: Committed,
}

impl TestSm {
    pub fn new(node: u64, committed: Committed) -> Self {
        TestSm { node, log: Vec::new(), committed }
    }

    fn record(&mut self, index: u64, applied: Applied) {
        if let Some((last, _)) = self.log.last() {
            assert!(index > *last, "node {} applied index {index} after index {last}", self.node);
        }
        check_committed(&self.committed, self.node, index, &applied);
        self.log.push((index, applied));
    }

    pub fn last_index(&self) -> u64 {
        self.log.last().map_or(0, |(i, _)| *i)
    }
}

impl StateMachine for TestSm {
    /// The index the entry was applied at.
    type Output = u64;

    fn apply(&mut self, index: u64, data: &[u8]) -> u64 {
        let data = String::from_utf8(data.to_vec()).expect("test data is utf-8");
        self.record(index, Applied::Data(data));
        index
    }

    fn apply_membership(&mut self, index: u64, change: &MemberChange) {
        self.record(index, Applied::Member { kind: change.kind, raft_id: change.raft_id });
    }

    fn snapshot(&self) -> shoal_raft::SnapshotWriteFn {
        let log = self.log.clone();
        Box::new(move |out| serde_json::to_writer(out, &log).map_err(std::io::Error::other))
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), String> {
        let log: Vec<(u64, Applied)> = serde_json::from_slice(data).map_err(|e| e.to_string())?;
        for pair in log.windows(2) {
            assert!(pair[0].0 < pair[1].0, "node {}: snapshot log out of order: {pair:?}", self.node);
        }
        for (index, applied) in &log {
            check_committed(&self.committed, self.node, *index, applied);
        }
        // A snapshot only ever moves a state machine forward: what was applied must be a prefix.
        assert!(
            log.len() >= self.log.len() && log[..self.log.len()] == self.log[..],
            "node {}: restoring a snapshot would lose applied entries (had up to {}, snapshot has up to {})",
            self.node,
            self.last_index(),
            log.last().map_or(0, |(i, _)| *i)
        );
        self.log = log;
        Ok(())
    }
}

/// The state machine bytes `bootstrap` starts from.
pub fn initial_state() -> Vec<u8> {
    serde_json::to_vec(&Vec::<(u64, Applied)>::new()).unwrap()
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pending,
    Acked(u64),
    Failed(ProposeError),
}

type Outcomes = Arc<Mutex<BTreeMap<String, (u64, Outcome)>>>;

pub type TestEngine = Engine<MemDurable, TestSm>;

pub struct Node {
    pub id: u64,
    pub config: EngineConfig,
    pub durable: MemDurable,
    pub engine: Option<TestEngine>,
    /// Highest applied index seen for the current incarnation.
    last_applied: u64,
    /// What the node's log held when it crashed; a restart must find exactly that.
    at_crash: Option<DiskView>,
}

/// The parts of a node's raft storage a crash between two steps must not change: every Ready
/// syncs before it returns (only the commit index written after `advance` may be behind).
#[derive(Clone, Debug, PartialEq)]
pub struct DiskView {
    pub entries: Vec<raft::prelude::Entry>,
    pub term: u64,
    pub vote: u64,
    pub snapshot_index: u64,
    pub first_index: u64,
}

fn disk_view(storage: &RaftStorage<MemDurable>) -> DiskView {
    let first = storage.first_index().unwrap();
    let last = storage.last_index().unwrap();
    let entries = storage.entries(first, last + 1, None, raft::GetEntriesContext::empty(false)).unwrap();
    DiskView {
        entries,
        term: storage.hard_state().term,
        vote: storage.hard_state().vote,
        snapshot_index: storage.snapshot_metadata().index,
        first_index: first,
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub election_tick: usize,
    pub heartbeat_tick: usize,
    pub snapshot_interval: u64,
    pub keep_entries: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options { election_tick: 5, heartbeat_tick: 1, snapshot_interval: 10_000, keep_entries: 500 }
    }
}

impl Options {
    pub fn small_snapshots() -> Self {
        Options { snapshot_interval: 20, keep_entries: 5, ..Options::default() }
    }

    fn engine_config(&self, id: u64) -> EngineConfig {
        let mut config = EngineConfig::new(id);
        config.election_tick = self.election_tick;
        config.heartbeat_tick = self.heartbeat_tick;
        config.snapshot_interval = self.snapshot_interval;
        config.keep_entries = self.keep_entries;
        config
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub delivered: u64,
    pub dropped: u64,
    pub snapshots_delivered: u64,
    pub snapshots_dropped: u64,
    pub restarts: u64,
}

pub struct Sim {
    pub name: String,
    pub seed: u64,
    pub rng: StdRng,
    pub step: u64,
    pub options: Options,
    pub nodes: BTreeMap<u64, Node>,
    queue: VecDeque<Message>,
    /// Probability that a delivered message is lost.
    pub drop_prob: f64,
    /// Deliver a random queued message instead of the oldest, and only part of the queue per step.
    pub reorder: bool,
    /// Links (from, to) on which every message is lost.
    pub blocked: BTreeSet<(u64, u64)>,
    pub committed: Committed,
    /// Nodes to crash in the middle of their next Ready.
    pub crash_mid_ready: BTreeSet<u64>,
    /// Crash this node in the middle of the Ready that installs the next snapshot it receives.
    pub crash_on_snapshot: Option<u64>,
    outcomes: Outcomes,
    /// term -> the one node that was leader in it.
    pub leaders: BTreeMap<u64, u64>,
    /// Terms whose leader was checked for every acknowledged write when it became ready.
    ready_terms: BTreeSet<u64>,
    pub stats: Stats,
    next_value: u64,
    logger: slog::Logger,
    events: Vec<String>,
}

pub fn member(id: u64) -> Member {
    Member { node_id: format!("node-{id}"), addr: format!("10.0.0.{id}:4242"), hostname: format!("host{id}") }
}

impl Sim {
    /// `voters` nodes, all bootstrapped with the same configuration.
    pub fn new(name: &str, seed: u64, voters: u64, options: Options) -> Sim {
        let mut sim = Sim::empty(name, seed, options);
        let members: Members = (1..=voters).map(|id| (id, member(id))).collect();
        for id in 1..=voters {
            let durable = MemDurable::default();
            shoal_raft::bootstrap(durable.clone(), &members, &initial_state()).expect("bootstrap");
            sim.add_node(id, durable);
        }
        sim
    }

    pub fn empty(name: &str, seed: u64, options: Options) -> Sim {
        Sim {
            name: name.to_string(),
            seed,
            rng: StdRng::seed_from_u64(seed),
            step: 0,
            options,
            nodes: BTreeMap::new(),
            queue: VecDeque::new(),
            drop_prob: 0.0,
            reorder: false,
            blocked: BTreeSet::new(),
            committed: Arc::new(Mutex::new(BTreeMap::new())),
            crash_mid_ready: BTreeSet::new(),
            crash_on_snapshot: None,
            outcomes: Arc::new(Mutex::new(BTreeMap::new())),
            leaders: BTreeMap::new(),
            ready_terms: BTreeSet::new(),
            stats: Stats::default(),
            next_value: 0,
            logger: slog::Logger::root(slog::Discard, slog::o!()),
            events: Vec::new(),
        }
    }

    /// Starts a node over `durable` (bootstrapped or empty, for a node that joins later).
    pub fn add_node(&mut self, id: u64, durable: MemDurable) {
        assert!(!self.nodes.contains_key(&id), "node {id} exists");
        let config = self.options.engine_config(id);
        self.nodes.insert(id, Node { id, config, durable, engine: None, last_applied: 0, at_crash: None });
        self.open(id);
    }

    fn open(&mut self, id: u64) {
        let committed = self.committed.clone();
        let node = self.nodes.get_mut(&id).unwrap();
        assert!(node.engine.is_none());
        let storage = RaftStorage::open(node.durable.clone()).expect("reopen raft storage");
        let engine = Engine::open(node.config.clone(), storage, TestSm::new(id, committed), &self.logger)
            .unwrap_or_else(|e| panic!("seed {}: opening node {id}: {e}", self.seed));
        node.last_applied = engine.status().applied;
        node.engine = Some(engine);
    }

    pub fn event(&mut self, what: String) {
        self.events.push(format!("step {}: {what}", self.step));
    }

    // ----- nodes -----

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    pub fn live_ids(&self) -> Vec<u64> {
        self.nodes.values().filter(|n| n.engine.is_some()).map(|n| n.id).collect()
    }

    pub fn is_live(&self, id: u64) -> bool {
        self.nodes.get(&id).is_some_and(|n| n.engine.is_some())
    }

    pub fn engine(&self, id: u64) -> &TestEngine {
        self.nodes[&id].engine.as_ref().unwrap_or_else(|| panic!("node {id} is down"))
    }

    pub fn engine_mut(&mut self, id: u64) -> &mut TestEngine {
        self.nodes.get_mut(&id).unwrap().engine.as_mut().unwrap_or_else(|| panic!("node {id} is down"))
    }

    pub fn status(&self, id: u64) -> RaftStatus {
        self.engine(id).status()
    }

    pub fn log(&self, id: u64) -> &[(u64, Applied)] {
        &self.engine(id).state_machine().log
    }

    /// The data values `id` applied, in order (membership changes left out).
    pub fn applied_values(&self, id: u64) -> Vec<String> {
        self.log(id)
            .iter()
            .filter_map(|(_, a)| match a {
                Applied::Data(v) => Some(v.clone()),
                Applied::Member { .. } => None,
            })
            .collect()
    }

    /// Power loss: the engine is gone; synced writes remain, and some prefix of the later ones.
    pub fn crash(&mut self, id: u64) {
        let node = self.nodes.get_mut(&id).unwrap();
        let engine = node.engine.take().unwrap_or_else(|| panic!("node {id} already down"));
        node.at_crash = Some(disk_view(engine.storage()));
        drop(engine);
        let kept = self.rng.gen_range(0..=node.durable.unsynced_units());
        node.durable = node.durable.crash_keeping(kept);
        self.event(format!("crash {id}"));
    }

    pub fn restart(&mut self, id: u64) {
        self.stats.restarts += 1;
        self.open(id);
        let node = &self.nodes[&id];
        if let Some(before) = &node.at_crash {
            let after = disk_view(node.engine.as_ref().unwrap().storage());
            assert!(
                *before == after,
                "[{} seed {}] node {id} restarted with a different log than it crashed with:\nbefore: {before:?}\nafter:  {after:?}",
                self.name,
                self.seed
            );
        }
        let applied = self.status(id).applied;
        self.event(format!("restart {id} (snapshot at {applied})"));
    }

    pub fn crash_restart(&mut self, id: u64) {
        self.crash(id);
        self.restart(id);
    }

    // ----- network -----

    pub fn isolate(&mut self, group: &[u64]) {
        for a in self.ids() {
            for &b in group {
                if !group.contains(&a) {
                    self.blocked.insert((a, b));
                    self.blocked.insert((b, a));
                }
            }
        }
        self.event(format!("isolate {group:?}"));
    }

    pub fn heal(&mut self) {
        self.blocked.clear();
        self.drop_prob = 0.0;
        self.event("heal".to_string());
    }

    fn deliver(&mut self, msg: Message) {
        let (from, to) = (msg.from, msg.to);
        let snapshot = msg.get_msg_type() == MessageType::MsgSnapshot;
        let unreachable = !self.is_live(to) || self.blocked.contains(&(from, to));
        let lost = unreachable || (self.drop_prob > 0.0 && self.rng.gen_bool(self.drop_prob));
        if lost {
            self.stats.dropped += 1;
            if snapshot {
                self.stats.snapshots_dropped += 1;
            }
            if let Some(sender) = self.nodes.get_mut(&from).and_then(|n| n.engine.as_mut()) {
                // What a transport reports when it cannot reach a peer or loses a snapshot.
                if snapshot {
                    sender.report_snapshot(to, false);
                }
                if unreachable {
                    sender.report_unreachable(to);
                }
            }
            return;
        }
        self.stats.delivered += 1;
        self.engine_mut(to).step(msg);
        if snapshot {
            self.stats.snapshots_delivered += 1;
            if self.crash_on_snapshot == Some(to) {
                self.crash_on_snapshot = None;
                self.crash_mid_ready.insert(to);
            }
            if let Some(sender) = self.nodes.get_mut(&from).and_then(|n| n.engine.as_mut()) {
                sender.report_snapshot(to, true);
            }
        }
    }

    // ----- time -----

    /// One tick of every live node, a round of deliveries, one Ready on every live node.
    pub fn step(&mut self) {
        self.step += 1;
        for node in self.nodes.values_mut() {
            if let Some(engine) = node.engine.as_mut() {
                engine.tick();
            }
        }
        let queued = self.queue.len();
        let count = if self.reorder && queued > 0 { self.rng.gen_range(queued.div_ceil(2)..=queued) } else { queued };
        for _ in 0..count {
            let msg = if self.reorder {
                let i = self.rng.gen_range(0..self.queue.len());
                self.queue.swap_remove_back(i).unwrap()
            } else {
                self.queue.pop_front().unwrap()
            };
            self.deliver(msg);
        }
        self.process_all();
        self.check_invariants();
    }

    pub fn process_all(&mut self) {
        let seed = self.seed;
        let mut crashed = Vec::new();
        for node in self.nodes.values_mut() {
            let Some(engine) = node.engine.as_mut() else { continue };
            let mid_ready = self.crash_mid_ready.remove(&node.id);
            let mut out = Vec::new();
            // For a crash in the middle of a Ready: the disk as it was each time messages left.
            let mut images: Vec<(usize, MemDurable)> = Vec::new();
            let durable = node.durable.clone();
            let rng = &mut self.rng;
            engine
                .process_ready(&mut |msgs| {
                    out.extend(msgs);
                    if mid_ready {
                        // The disk may hold any prefix of what was written since the last sync.
                        let kept = rng.gen_range(0..=durable.unsynced_units());
                        images.push((out.len(), durable.crash_keeping(kept)));
                    }
                })
                .unwrap_or_else(|e| panic!("seed {seed}: node {}: process_ready: {e}", node.id));
            for msg in &out {
                assert_eq!(msg.from, node.id, "message from {} sent by node {}", msg.from, node.id);
            }
            if mid_ready {
                // Power fails right after one batch of messages was sent: the peers got those
                // messages, the node keeps only what was synced by then.
                node.engine = None;
                node.at_crash = None;
                match images.len() {
                    0 => node.durable = node.durable.crash(),
                    n => {
                        let (sent, image) = images.swap_remove(self.rng.gen_range(0..n));
                        out.truncate(sent);
                        node.durable = image;
                    }
                }
                crashed.push(format!("crash {} in the middle of a Ready ({} messages out)", node.id, out.len()));
            }
            self.queue.extend(out);
        }
        for event in crashed {
            self.event(event);
        }
    }

    /// Crashes `id` during its next Ready, right after it hands out messages (see `process_all`).
    pub fn crash_during_next_ready(&mut self, id: u64) {
        assert!(self.is_live(id));
        self.crash_mid_ready.insert(id);
        self.step();
        assert!(!self.is_live(id));
    }

    pub fn run(&mut self, steps: u64) {
        for _ in 0..steps {
            self.step();
        }
    }

    /// Steps until `cond` holds; panics (naming seed and step) after `max_steps`.
    pub fn run_until(&mut self, what: &str, max_steps: u64, mut cond: impl FnMut(&mut Sim) -> bool) {
        let start = self.step;
        loop {
            if cond(self) {
                return;
            }
            if self.step - start >= max_steps {
                panic!(
                    "[{} seed {}] `{what}` not reached within {max_steps} steps (at step {})\n{}",
                    self.name,
                    self.seed,
                    self.step,
                    self.describe()
                );
            }
            self.step();
        }
    }

    // ----- invariants -----

    fn check_invariants(&mut self) {
        let seed = self.seed;
        for node in self.nodes.values_mut() {
            let Some(engine) = node.engine.as_ref() else { continue };
            let status = engine.status();
            if status.role == RaftRole::Leader {
                let leader = *self.leaders.entry(status.term).or_insert(node.id);
                assert_eq!(
                    leader, node.id,
                    "seed {seed} step {}: two leaders in term {}: {leader} and {}",
                    self.step, status.term, node.id
                );
            }
            if status.leader_ready && self.ready_terms.insert(status.term) {
                // A ready leader serves reads from its state: it must hold every write
                // acknowledged so far, by any leader.
                let log: BTreeMap<u64, &Applied> = engine.state_machine().log.iter().map(|(i, a)| (*i, a)).collect();
                for (value, (_, outcome)) in self.outcomes.lock().unwrap().iter() {
                    if let Outcome::Acked(index) = outcome {
                        assert_eq!(
                            log.get(index).copied(),
                            Some(&Applied::Data(value.clone())),
                            "seed {seed} step {}: node {} is a ready leader of term {} without acknowledged {value} at {index}",
                            self.step,
                            node.id,
                            status.term
                        );
                    }
                }
            }
            assert!(
                status.applied >= node.last_applied,
                "seed {seed} step {}: node {} applied index went back from {} to {}",
                self.step,
                node.id,
                node.last_applied,
                status.applied
            );
            node.last_applied = status.applied;
            assert!(
                status.applied <= status.commit,
                "node {} applied {} > commit {}",
                node.id,
                status.applied,
                status.commit
            );
            let sm_last = engine.state_machine().last_index();
            assert!(
                sm_last <= status.applied,
                "node {}: state machine has index {sm_last} beyond applied {}",
                node.id,
                status.applied
            );
        }
    }

    /// Every pair of live nodes agrees on the indexes both applied.
    pub fn check_prefixes(&self) {
        let live = self.live_ids();
        for (i, &a) in live.iter().enumerate() {
            for &b in &live[i + 1..] {
                let la: BTreeMap<u64, &Applied> = self.log(a).iter().map(|(i, x)| (*i, x)).collect();
                for (index, x) in self.log(b) {
                    if let Some(y) = la.get(index) {
                        assert_eq!(*y, x, "seed {}: nodes {a} and {b} disagree at index {index}", self.seed);
                    }
                }
            }
        }
    }

    // ----- leaders and proposals -----

    /// The live leader of the highest term, if any.
    pub fn leader(&self) -> Option<u64> {
        self.live_ids()
            .into_iter()
            .map(|id| self.status(id))
            .filter(|s| s.role == RaftRole::Leader)
            .max_by_key(|s| s.term)
            .map(|s| s.id)
    }

    pub fn wait_leader(&mut self, max_steps: u64) -> u64 {
        self.run_until("a leader that applied an entry of its term", max_steps, |sim| {
            sim.leader().is_some_and(|l| sim.status(l).leader_ready)
        });
        self.leader().unwrap()
    }

    /// Waits for a ready leader among `ids` (e.g. the majority side of a partition).
    pub fn wait_leader_among(&mut self, ids: &[u64], max_steps: u64) -> u64 {
        self.run_until(&format!("a ready leader among {ids:?}"), max_steps, |sim| {
            sim.leader().is_some_and(|l| ids.contains(&l) && sim.status(l).leader_ready)
        });
        self.leader().unwrap()
    }

    fn fresh_value(&mut self) -> String {
        self.next_value += 1;
        format!("{}-{}-v{}", self.name, self.seed, self.next_value)
    }

    /// Proposes a new unique value at `node`. Returns the value and whether raft took it (a
    /// proposal refused at once, e.g. by a follower, has outcome `Failed`).
    pub fn propose(&mut self, node: u64) -> (String, bool) {
        let mut proposed = self.propose_many(node, 1);
        proposed.pop().expect("one proposal")
    }

    /// Proposes `count` new unique values at `node` together, as the raft thread hands over
    /// proposals that queued up between two Readies.
    pub fn propose_many(&mut self, node: u64, count: usize) -> Vec<(String, bool)> {
        let mut batch = Vec::with_capacity(count);
        let mut values = Vec::with_capacity(count);
        for _ in 0..count {
            let value = self.fresh_value();
            self.outcomes.lock().unwrap().insert(value.clone(), (node, Outcome::Pending));
            let outcomes = self.outcomes.clone();
            let key = value.clone();
            let reply: shoal_raft::Reply<u64> = Box::new(move |result: Result<u64, ProposeError>| {
                let mut outcomes = outcomes.lock().unwrap();
                let entry = outcomes.get_mut(&key).expect("proposal recorded");
                assert_eq!(entry.1, Outcome::Pending, "proposal {key} completed twice");
                entry.1 = match result {
                    Ok(index) => Outcome::Acked(index),
                    Err(e) => Outcome::Failed(e),
                };
            });
            batch.push((value.clone().into_bytes(), reply));
            values.push(value);
        }
        self.engine_mut(node).propose_many(batch);
        values
            .into_iter()
            .map(|value| {
                let taken = self.outcome(&value) == Outcome::Pending;
                (value, taken)
            })
            .collect()
    }

    /// Messages sent and not yet delivered.
    pub fn in_flight(&self) -> impl Iterator<Item = &Message> {
        self.queue.iter()
    }

    /// Proposes at the current leader, if there is one.
    pub fn propose_at_leader(&mut self) -> Option<String> {
        let leader = self.leader()?;
        Some(self.propose(leader).0)
    }

    pub fn outcome(&self, value: &str) -> Outcome {
        self.outcomes.lock().unwrap()[value].1.clone()
    }

    pub fn acked(&self) -> Vec<(String, u64)> {
        self.outcomes
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(v, (_, o))| match o {
                Outcome::Acked(i) => Some((v.clone(), *i)),
                _ => None,
            })
            .collect()
    }

    pub fn proposals(&self) -> Vec<(String, u64, Outcome)> {
        self.outcomes.lock().unwrap().iter().map(|(v, (n, o))| (v.clone(), *n, o.clone())).collect()
    }

    /// Steps `steps` times, proposing one to three values together at the leader with
    /// probability `p` before each step.
    pub fn run_with_writes(&mut self, steps: u64, p: f64) {
        for _ in 0..steps {
            if self.rng.gen_bool(p)
                && let Some(leader) = self.leader()
            {
                let count = self.rng.gen_range(1..=3);
                self.propose_many(leader, count);
            }
            self.step();
        }
    }

    /// Gets `count` new values acknowledged, re-proposing at whoever leads when one fails.
    pub fn write_acked(&mut self, count: usize, max_steps: u64) -> Vec<String> {
        let mut done = Vec::new();
        let mut current: Option<String> = None;
        let start = self.step;
        while done.len() < count {
            if self.step - start > max_steps {
                panic!(
                    "[{} seed {}] only {} of {count} writes acknowledged within {max_steps} steps\n{}",
                    self.name,
                    self.seed,
                    done.len(),
                    self.describe()
                );
            }
            match current.as_ref().map(|v| self.outcome(v)) {
                Some(Outcome::Acked(_)) => done.push(current.take().unwrap()),
                Some(Outcome::Pending) => self.step(),
                Some(Outcome::Failed(_)) | None => {
                    current = self.propose_at_leader();
                    if current.is_none() {
                        self.step();
                    }
                }
            }
        }
        done
    }

    /// Proposes a membership change at the leader and steps until it is acknowledged.
    pub fn change_members(&mut self, kind: MemberChangeKind, raft_id: u64, max_steps: u64) {
        let done: Arc<Mutex<Option<Result<(), ProposeError>>>> = Arc::new(Mutex::new(None));
        let leader = self.wait_leader(max_steps);
        let change = MemberChange { kind, raft_id, member: member(raft_id), at: self.step };
        let slot = done.clone();
        self.engine_mut(leader).propose_member_change(change, Box::new(move |r| *slot.lock().unwrap() = Some(r)));
        self.event(format!("{kind:?} {raft_id} proposed at {leader}"));
        self.run_until(&format!("{kind:?} {raft_id} acknowledged"), max_steps, |_| done.lock().unwrap().is_some());
        let result = done.lock().unwrap().take().unwrap();
        assert_eq!(result, Ok(()), "[{} seed {}] {kind:?} {raft_id} failed", self.name, self.seed);
    }

    // ----- convergence -----

    /// Live nodes that still belong to the cluster.
    pub fn live_members(&self) -> Vec<u64> {
        self.live_ids().into_iter().filter(|&id| !self.engine(id).is_removed()).collect()
    }

    /// Steps until one leader committed its whole log and every live member applied all of it,
    /// then checks every such node holds the same applied list.
    pub fn wait_converged(&mut self, max_steps: u64) {
        self.run_until("convergence", max_steps, |sim| {
            let Some(leader) = sim.leader() else { return false };
            let ls = sim.status(leader);
            if !ls.leader_ready || ls.commit != ls.last_index {
                return false;
            }
            sim.live_members().into_iter().all(|id| {
                let s = sim.status(id);
                s.applied == ls.last_index && s.last_index == ls.last_index && s.leader_id == leader
            })
        });
        self.check_converged();
    }

    pub fn check_converged(&self) {
        let members = self.live_members();
        let first = members[0];
        for &id in &members[1..] {
            assert!(
                self.log(id) == self.log(first),
                "[{} seed {}] nodes {first} and {id} applied different lists:\n{first}: {:?}\n{id}: {:?}",
                self.name,
                self.seed,
                self.log(first),
                self.log(id)
            );
        }
        self.check_prefixes();
        self.check_acked_present();
    }

    /// Every acknowledged value is in every live member's applied list, at the index it was
    /// acknowledged with.
    pub fn check_acked_present(&self) {
        for id in self.live_members() {
            let log: BTreeMap<u64, &Applied> = self.log(id).iter().map(|(i, x)| (*i, x)).collect();
            for (value, index) in self.acked() {
                assert_eq!(
                    log.get(&index).copied(),
                    Some(&Applied::Data(value.clone())),
                    "[{} seed {}] acknowledged {value} at index {index} is missing on node {id}\n{}",
                    self.name,
                    self.seed,
                    self.describe()
                );
            }
        }
    }

    /// First index still held in `id`'s log (everything below was compacted into a snapshot).
    pub fn first_log_index(&self, id: u64) -> u64 {
        self.engine(id).storage().first_index().unwrap()
    }

    pub fn describe(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "sim {} seed {} step {}: queue {}, drop {}, reorder {}, blocked {:?}, stats {:?}",
            self.name,
            self.seed,
            self.step,
            self.queue.len(),
            self.drop_prob,
            self.reorder,
            self.blocked,
            self.stats
        );
        for node in self.nodes.values() {
            match &node.engine {
                Some(e) => {
                    let s = e.status();
                    let _ = writeln!(
                        out,
                        "  node {}: {:?} term {} leader {} commit {} applied {} last {} voters {:?} learners {:?} removed {}",
                        node.id,
                        s.role,
                        s.term,
                        s.leader_id,
                        s.commit,
                        s.applied,
                        s.last_index,
                        s.voters,
                        s.learners,
                        s.removed
                    );
                }
                None => {
                    let _ = writeln!(out, "  node {}: down", node.id);
                }
            }
        }
        let tail = self.events.len().saturating_sub(30);
        for event in &self.events[tail..] {
            let _ = writeln!(out, "  {event}");
        }
        out
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "*** cluster sim `{}` failed with seed {} at step {} (rerun: SIM_SEED={} cargo test -p shoal-raft --test cluster_sim) ***",
                self.name, self.seed, self.step, self.seed
            );
            let tail = self.events.len().saturating_sub(30);
            for event in &self.events[tail..] {
                eprintln!("  {event}");
            }
        }
    }
}

/// The seeds a scenario runs: `SIM_SEED` picks one, `SIM_SEEDS` overrides how many.
pub fn seeds(base: u64, default_count: u64) -> Vec<u64> {
    if let Ok(seed) = std::env::var("SIM_SEED") {
        return vec![seed.parse().expect("SIM_SEED is a number")];
    }
    let count = std::env::var("SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(default_count);
    (0..count).map(|i| base + i).collect()
}
