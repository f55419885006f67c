//! The synchronous raft engine: one owner of `RawNode`, run by [`crate::node`] on a thread and by
//! the deterministic cluster tests directly. It follows raft-rs's documented Ready order and
//! syncs storage before any message that promises persistence is sent.

use std::collections::{BTreeMap, HashMap};

use protobuf::Message as _;
use raft::prelude::{ConfChangeSingle, ConfChangeType, ConfChangeV2, Entry, EntryType, Message, MessageType, Snapshot};
use raft::{RawNode, StateRole, Storage};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::storage::{Durable, RaftStorage};
use crate::{
    MemberChange, MemberChangeKind, Members, ProposeError, RaftError, StateMachine, decode_snapshot_data,
    snapshot_header,
};

/// A callback that completes a proposal.
pub type Reply<T> = Box<dyn FnOnce(Result<T, ProposeError>) + Send>;

#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub id: u64,
    /// Ticks without a leader before an election (randomised by raft-rs up to twice this).
    pub election_tick: usize,
    pub heartbeat_tick: usize,
    /// Entries applied between snapshots of the state machine.
    pub snapshot_interval: u64,
    /// Bytes of entries applied since the last snapshot that also trigger one: the log is held
    /// in memory, so a few huge entries must not wait for `snapshot_interval`.
    pub snapshot_log_bytes: u64,
    /// Entries kept below a snapshot so a slow follower can catch up without a snapshot...
    pub keep_entries: u64,
    /// ...and at most about this many bytes of them.
    pub keep_bytes: u64,
    pub max_size_per_msg: u64,
    pub max_inflight_msgs: usize,
}

impl EngineConfig {
    pub fn new(id: u64) -> Self {
        EngineConfig {
            id,
            election_tick: 10,
            heartbeat_tick: 2,
            snapshot_interval: 10_000,
            snapshot_log_bytes: 16 << 20,
            keep_entries: 500,
            keep_bytes: 4 << 20,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RaftRole {
    #[default]
    Follower,
    Candidate,
    PreCandidate,
    Leader,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerProgress {
    pub matched: u64,
    pub recent_active: bool,
    pub learner: bool,
}

/// What a manager knows of raft right now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftStatus {
    pub id: u64,
    pub term: u64,
    pub role: RaftRole,
    /// 0 when no leader is known.
    pub leader_id: u64,
    pub commit: u64,
    pub applied: u64,
    pub last_index: u64,
    /// A leader is ready to serve reads once it applied an entry of its own term: only then does
    /// its state include every write acknowledged by earlier leaders.
    pub leader_ready: bool,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    pub members: Members,
    /// Filled on the leader only.
    pub progress: BTreeMap<u64, PeerProgress>,
    /// Set once this manager applied its own removal.
    pub removed: bool,
    /// Index and size of the newest snapshot's data (0 before the first one is read or taken).
    #[serde(default)]
    pub snapshot_index: u64,
    #[serde(default)]
    pub snapshot_bytes: u64,
    /// How long taking the newest snapshot this manager took itself lasted (serialising and
    /// making it durable), in milliseconds.
    #[serde(default)]
    pub snapshot_millis: u64,
}

enum Pending<O> {
    Data(Reply<O>),
    Conf(Reply<()>),
}

pub struct Engine<D: Durable, M: StateMachine> {
    raw: RawNode<RaftStorage<D>>,
    sm: M,
    config: EngineConfig,
    pending: HashMap<u64, Pending<M::Output>>,
    next_seq: u64,
    applied: u64,
    /// Term of the last applied entry: a leader whose own term's first entry (its no-op) is
    /// applied has applied everything earlier leaders committed.
    applied_term: u64,
    last_role: StateRole,
    last_leader: u64,
    last_term: u64,
    removed: bool,
    /// raft-rs refuses a snapshot whose configuration lacks the receiver, so after a learner is
    /// added the next snapshot must be taken at (or after) that change.
    snapshot_now: bool,
    /// Bytes of entries applied since the last snapshot (see `snapshot_log_bytes`).
    applied_bytes: u64,
    /// Size of the newest snapshot's data.
    snapshot_bytes: u64,
    snapshot_millis: u64,
    /// A snapshot whose data is being written and made durable on another thread.
    snapshot_job: Option<SnapshotJob>,
}

/// A snapshot taken at `meta.index` whose data a thread of its own writes: once it is durable,
/// the raft thread records the metadata and compacts the log (see `finish_snapshot`).
struct SnapshotJob {
    meta: raft::prelude::SnapshotMetadata,
    compact_to: u64,
    started: tokio::time::Instant,
    done: std::sync::mpsc::Receiver<Result<u64, RaftError>>,
}

fn proposal_context(id: u64, seq: u64) -> Vec<u8> {
    let mut ctx = Vec::with_capacity(16);
    ctx.extend_from_slice(&id.to_be_bytes());
    ctx.extend_from_slice(&seq.to_be_bytes());
    ctx
}

fn parse_context(ctx: &[u8]) -> Option<(u64, u64)> {
    if ctx.len() != 16 {
        return None;
    }
    Some((u64::from_be_bytes(ctx[..8].try_into().ok()?), u64::from_be_bytes(ctx[8..].try_into().ok()?)))
}

fn raft_err(e: raft::Error) -> RaftError {
    RaftError::Raft(e.to_string())
}

impl<D: Durable, M: StateMachine> Engine<D, M> {
    /// Opens an engine over `storage`, restoring the state machine from the newest snapshot; the
    /// entries committed after it are re-applied by the first Readies.
    pub fn open(
        config: EngineConfig,
        storage: RaftStorage<D>,
        mut sm: M,
        logger: &slog::Logger,
    ) -> Result<Self, RaftError> {
        let applied = storage.snapshot_metadata().index;
        let mut snapshot_bytes = 0;
        if applied > 0 {
            let data = storage
                .snapshot_data()?
                .ok_or_else(|| RaftError::Corrupt(format!("the data of the snapshot at {applied} is missing")))?;
            snapshot_bytes = data.len() as u64;
            let (_, state) = decode_snapshot_data(&data)?;
            sm.restore(state).map_err(RaftError::Corrupt)?;
        }
        // The stored configuration is the last one applied. An initialised manager is missing from
        // it only after applying its own removal (raft-rs refuses snapshots whose configuration
        // lacks the receiver); if a snapshot covers that removal it is never re-applied, so the
        // flag must come from here.
        let cs = storage.conf_state();
        let removed = storage.is_initialised()
            && ![&cs.voters, &cs.learners, &cs.voters_outgoing, &cs.learners_next]
                .iter()
                .any(|ids| ids.contains(&config.id));
        let raft_config = raft::Config {
            id: config.id,
            election_tick: config.election_tick,
            heartbeat_tick: config.heartbeat_tick,
            applied,
            max_size_per_msg: config.max_size_per_msg,
            max_inflight_msgs: config.max_inflight_msgs,
            check_quorum: true,
            pre_vote: true,
            max_committed_size_per_ready: 16 << 20,
            // Followers learn a new commit index from the next append or heartbeat (at most
            // `heartbeat_tick` later) instead of from an extra append round to every follower
            // per commit. Every call is served by the leader, so nothing reads a follower's
            // state in between; the extra round competed for the CPU with the next commit
            // (sequential commits ~735 -> ~840/s here). (raft-rs's `batch_append` stays off:
            // the simulations make it panic with "to_commit out of range".)
            skip_bcast_commit: true,
            ..raft::Config::default()
        };
        raft_config.validate().map_err(raft_err)?;
        let mut raw = RawNode::new(&raft_config, storage, logger).map_err(raft_err)?;
        // A lone voter need not wait out an election timeout to lead.
        let voters = raw.raft.prs().conf().voters().ids();
        if voters.len() == 1 && voters.contains(config.id) {
            raw.campaign().map_err(raft_err)?;
        }
        Ok(Engine {
            raw,
            sm,
            config,
            pending: HashMap::new(),
            next_seq: rand::thread_rng().r#gen(),
            applied,
            applied_term: 0,
            last_role: StateRole::Follower,
            last_leader: 0,
            last_term: 0,
            removed,
            snapshot_now: false,
            applied_bytes: 0,
            snapshot_bytes,
            snapshot_millis: 0,
            snapshot_job: None,
        })
    }

    pub fn id(&self) -> u64 {
        self.config.id
    }

    pub fn state_machine(&self) -> &M {
        &self.sm
    }

    pub fn storage(&self) -> &RaftStorage<D> {
        self.raw.store()
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    pub fn is_removed(&self) -> bool {
        self.removed
    }

    pub fn tick(&mut self) {
        self.raw.tick();
    }

    pub fn campaign(&mut self) -> Result<(), RaftError> {
        self.raw.campaign().map_err(raft_err)
    }

    /// Feeds a message from a peer. Messages from unknown or removed peers are ignored.
    pub fn step(&mut self, msg: Message) {
        if msg.to != self.config.id {
            return;
        }
        match self.raw.step(msg) {
            Ok(()) | Err(raft::Error::StepPeerNotFound) | Err(raft::Error::StepLocalMsg) => {}
            Err(e) => tracing::debug!(error = %e, "raft step refused a message"),
        }
    }

    pub fn report_unreachable(&mut self, peer: u64) {
        self.raw.report_unreachable(peer);
    }

    /// Called when the leader's process is known to be gone (its port refuses connections):
    /// forget it and campaign now instead of after an election timeout. Elections are safe at any
    /// time; this only changes when one starts.
    pub fn leader_down(&mut self, peer: u64) {
        let raft = &mut self.raw.raft;
        if raft.state != StateRole::Follower || raft.leader_id != peer || peer == self.config.id {
            return;
        }
        if !raft.prs().conf().voters().contains(self.config.id) {
            return;
        }
        tracing::info!(leader = peer, "leader's port refuses connections; starting an election now");
        let term = raft.term;
        raft.become_follower(term, raft::INVALID_ID);
        if let Err(e) = self.raw.campaign() {
            tracing::debug!(error = %e, "early campaign refused");
        }
    }

    pub fn report_snapshot(&mut self, peer: u64, ok: bool) {
        let status = if ok { raft::SnapshotStatus::Finish } else { raft::SnapshotStatus::Failure };
        self.raw.report_snapshot(peer, status);
    }

    pub fn transfer_leader(&mut self, to: u64) {
        self.raw.transfer_leader(to);
    }

    fn not_leader(&self) -> ProposeError {
        let leader = self.raw.raft.leader_id;
        ProposeError::NotLeader { leader: (leader != 0).then_some(leader) }
    }

    /// Proposes state machine entries, in order, as one raft message, so they go to each follower
    /// in one append (and come back as one acknowledgement) instead of one append per entry. Each
    /// reply runs once its entry is applied here, or fails; either all entries are taken or none.
    pub fn propose_many(&mut self, proposals: Vec<(Vec<u8>, Reply<M::Output>)>) {
        if proposals.is_empty() {
            return;
        }
        if !self.is_leader() {
            for (_, reply) in proposals {
                reply(Err(self.not_leader()));
            }
            return;
        }
        let mut entries = Vec::with_capacity(proposals.len());
        let mut seqs = Vec::with_capacity(proposals.len());
        for (data, reply) in proposals {
            let seq = self.next_seq;
            self.next_seq = self.next_seq.wrapping_add(1);
            entries.push(Entry {
                data: data.into(),
                context: proposal_context(self.config.id, seq).into(),
                ..Default::default()
            });
            self.pending.insert(seq, Pending::Data(reply));
            seqs.push(seq);
        }
        let mut msg = Message::default();
        msg.set_msg_type(MessageType::MsgPropose);
        msg.from = self.config.id;
        msg.set_entries(entries.into());
        if let Err(e) = self.raw.raft.step(msg) {
            for seq in seqs {
                if let Some(Pending::Data(reply)) = self.pending.remove(&seq) {
                    reply(Err(ProposeError::Dropped(e.to_string())));
                }
            }
        }
    }

    /// Proposes a membership change (one change at a time, so raft needs no joint consensus).
    pub fn propose_member_change(&mut self, change: MemberChange, reply: Reply<()>) {
        if !self.is_leader() {
            return reply(Err(self.not_leader()));
        }
        // raft-rs turns a conf change proposed while another is unapplied into an empty entry,
        // which would leave `reply` pending forever; refuse it here on the same condition.
        if self.raw.raft.has_pending_conf() {
            return reply(Err(ProposeError::MemberChangePending));
        }
        let conf = self.raw.raft.prs().conf();
        let is_voter = conf.voters().contains(change.raft_id);
        let is_learner = conf.learners().contains(&change.raft_id);
        let change_type = match change.kind {
            MemberChangeKind::AddLearner if is_voter || is_learner => {
                return reply(Err(ProposeError::Refused(format!("raft member {} already exists", change.raft_id))));
            }
            MemberChangeKind::AddLearner => ConfChangeType::AddLearnerNode,
            MemberChangeKind::Promote if !is_learner => {
                return reply(Err(ProposeError::Refused(format!("raft member {} is not a learner", change.raft_id))));
            }
            MemberChangeKind::Promote => ConfChangeType::AddNode,
            MemberChangeKind::Remove if !is_voter && !is_learner => {
                return reply(Err(ProposeError::Refused(format!("raft member {} does not exist", change.raft_id))));
            }
            MemberChangeKind::Remove => ConfChangeType::RemoveNode,
        };
        let mut single = ConfChangeSingle::default();
        single.set_change_type(change_type);
        single.node_id = change.raft_id;
        let mut cc = ConfChangeV2::default();
        cc.set_changes(vec![single].into());
        cc.set_context(serde_json::to_vec(&change).expect("member change serialises").into());
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        match self.raw.propose_conf_change(proposal_context(self.config.id, seq), cc) {
            Ok(()) => {
                self.pending.insert(seq, Pending::Conf(reply));
            }
            Err(e) => reply(Err(ProposeError::Dropped(e.to_string()))),
        }
    }

    /// Runs one Ready: sends, persists, syncs, applies. `send` receives messages in the order they
    /// may leave this manager.
    pub fn process_ready(&mut self, send: &mut dyn FnMut(Vec<Message>)) -> Result<(), RaftError> {
        if !self.raw.has_ready() {
            self.after_ready()?;
            return Ok(());
        }
        let mut rd = self.raw.ready();
        // A leader may send appends before persisting them; followers persist in parallel.
        let messages = rd.take_messages();
        if !messages.is_empty() {
            send(messages);
        }
        // Only new entries, a snapshot, a new term or a vote must be on disk before the messages
        // below leave (etcd's MustSync); a Ready that only moves the commit index skips the
        // fsync, which would otherwise delay the next proposal on the leader.
        let old_hs = self.raw.store().hard_state();
        let must_sync = !rd.entries().is_empty()
            || !rd.snapshot().is_empty()
            || rd.hs().is_some_and(|hs| hs.term != old_hs.term || hs.vote != old_hs.vote);
        if !rd.snapshot().is_empty() {
            self.install_snapshot(rd.snapshot().clone())?;
        }
        self.raw.mut_store().append(rd.entries())?;
        if let Some(hs) = rd.hs() {
            self.raw.mut_store().set_hard_state(hs)?;
        }
        // Votes and append acknowledgements below promise durability.
        if must_sync {
            self.raw.mut_store().sync()?;
        }
        let persisted = rd.take_persisted_messages();
        if !persisted.is_empty() {
            send(persisted);
        }
        // Committed entries are applied once the acknowledgements are on their way, so a
        // follower's apply never delays the leader's next commit.
        let committed = rd.take_committed_entries();
        self.apply_entries(committed)?;
        let mut light = self.raw.advance(rd);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit)?;
        }
        let messages = light.take_messages();
        if !messages.is_empty() {
            send(messages);
        }
        let committed = light.take_committed_entries();
        self.apply_entries(committed)?;
        self.raw.advance_apply();
        self.after_ready()
    }

    fn install_snapshot(&mut self, snapshot: Snapshot) -> Result<(), RaftError> {
        let index = snapshot.get_metadata().index;
        let (members, state) = decode_snapshot_data(snapshot.get_data())?;
        self.sm.restore(state).map_err(RaftError::Corrupt)?;
        self.raw.mut_store().apply_snapshot(&snapshot, &members)?;
        self.applied = index;
        self.applied_term = snapshot.get_metadata().term;
        self.applied_bytes = 0;
        self.snapshot_bytes = snapshot.get_data().len() as u64;
        tracing::info!(index, "installed raft snapshot from the leader");
        Ok(())
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<(), RaftError> {
        // A membership change is recorded on disk at once: a Ready that only moves the commit
        // index skips the fsync, and a removed manager that lost the record of its removal in a
        // crash would never learn it again (the others no longer talk to it).
        let membership = entries.iter().any(|e| e.get_entry_type() != EntryType::EntryNormal);
        self.apply_entries_inner(entries)?;
        if membership {
            self.raw.mut_store().sync()?;
        }
        Ok(())
    }

    fn apply_entries_inner(&mut self, entries: Vec<Entry>) -> Result<(), RaftError> {
        for entry in entries {
            let index = entry.index;
            self.applied_bytes += (entry.data.len() + entry.context.len()) as u64;
            let mine = parse_context(&entry.context).filter(|(id, _)| *id == self.config.id).map(|(_, seq)| seq);
            match entry.get_entry_type() {
                EntryType::EntryNormal => {
                    if !entry.data.is_empty() {
                        let output = self.sm.apply(index, &entry.data);
                        if let Some(Pending::Data(reply)) = mine.and_then(|seq| self.pending.remove(&seq)) {
                            reply(Ok(output));
                        }
                    }
                }
                EntryType::EntryConfChangeV2 => {
                    let cc = ConfChangeV2::parse_from_bytes(&entry.data)
                        .map_err(|e| RaftError::Corrupt(format!("conf change at {index}: {e}")))?;
                    self.apply_conf_change(index, &cc)?;
                    if let Some(Pending::Conf(reply)) = mine.and_then(|seq| self.pending.remove(&seq)) {
                        reply(Ok(()));
                    }
                }
                EntryType::EntryConfChange => {
                    tracing::warn!(index, "ignoring a v1 conf change entry; shoal only proposes v2");
                }
            }
            self.applied = index;
            self.applied_term = entry.term;
        }
        Ok(())
    }

    fn apply_conf_change(&mut self, index: u64, cc: &ConfChangeV2) -> Result<(), RaftError> {
        let change: Option<MemberChange> = serde_json::from_slice(cc.get_context()).ok();
        let cs = self.raw.apply_conf_change(cc).map_err(raft_err)?;
        let mut members = self.raw.store().members().clone();
        if let Some(change) = &change {
            match change.kind {
                MemberChangeKind::AddLearner | MemberChangeKind::Promote => {
                    members.insert(change.raft_id, change.member.clone());
                }
                MemberChangeKind::Remove => {
                    members.remove(&change.raft_id);
                }
            }
            self.sm.apply_membership(index, change);
            if change.kind == MemberChangeKind::AddLearner {
                self.snapshot_now = true;
            }
            if change.kind == MemberChangeKind::Remove && change.raft_id == self.config.id {
                self.removed = true;
            }
        }
        self.raw.mut_store().set_conf_state(&cs, &members)
    }

    /// Fails proposals that can no longer complete and takes a snapshot when one is due.
    fn after_ready(&mut self) -> Result<(), RaftError> {
        let raft = &self.raw.raft;
        let (role, leader, term) = (raft.state, raft.leader_id, raft.term);
        if role != self.last_role || leader != self.last_leader || term != self.last_term {
            if self.last_role == StateRole::Leader && (role != StateRole::Leader || term != self.last_term) {
                for (_, pending) in self.pending.drain() {
                    match pending {
                        Pending::Data(reply) => reply(Err(ProposeError::LeadershipLost)),
                        Pending::Conf(reply) => reply(Err(ProposeError::LeadershipLost)),
                    }
                }
            }
            tracing::info!(id = self.config.id, term, leader, role = ?role, "raft role changed");
            self.last_role = role;
            self.last_leader = leader;
            self.last_term = term;
        }
        let snap_index = self.raw.store().snapshot_metadata().index;
        let wanted = self.raw.store().snapshot_wanted();
        let due = wanted
            || self.snapshot_now
            || self.applied - snap_index.min(self.applied) >= self.config.snapshot_interval
            || self.applied_bytes >= self.config.snapshot_log_bytes;
        self.finish_snapshot()?;
        if self.applied > snap_index && due && self.snapshot_job.is_none() {
            self.snapshot_now = false;
            self.take_snapshot()?;
        }
        Ok(())
    }

    /// Records a snapshot whose data the writer thread has made durable: its metadata, then the
    /// log compaction below it. A snapshot installed from the leader meanwhile supersedes it
    /// (its data is dropped); a failed write is logged and taken again when next due.
    fn finish_snapshot(&mut self) -> Result<(), RaftError> {
        let Some(job) = &self.snapshot_job else { return Ok(()) };
        let written = match job.done.try_recv() {
            Ok(written) => written,
            Err(std::sync::mpsc::TryRecvError::Empty) => return Ok(()),
            Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                Err(RaftError::Storage("the snapshot writer thread ended without an answer".into()))
            }
        };
        let job = self.snapshot_job.take().expect("checked");
        let index = job.meta.index;
        match written {
            Ok(bytes) if index > self.raw.store().snapshot_metadata().index => {
                self.snapshot_bytes = bytes;
                self.snapshot_millis = job.started.elapsed().as_millis() as u64;
                self.raw.mut_store().save_snapshot(job.meta, job.compact_to)?;
                self.raw.mut_store().sync()?;
                tracing::debug!(
                    index,
                    compact_to = job.compact_to,
                    bytes,
                    "took raft snapshot (written off the raft thread)"
                );
            }
            Ok(_) => {
                self.raw.mut_store().discard_snapshot_data(index);
                tracing::debug!(index, "own snapshot superseded by one installed from the leader");
            }
            Err(e) => {
                self.raw.mut_store().discard_snapshot_data(index);
                self.snapshot_now = true;
                tracing::warn!(index, error = %e, "writing the raft snapshot failed; taking it again");
            }
        }
        Ok(())
    }

    /// Snapshots the state machine at the applied index and compacts the log below it.
    pub fn take_snapshot(&mut self) -> Result<(), RaftError> {
        let index = self.applied;
        let term = self.raw.store().term(index).map_err(raft_err)?;
        let store = self.raw.store();
        let header = snapshot_header(store.members());
        let mut meta = raft::prelude::SnapshotMetadata { index, term, ..Default::default() };
        meta.set_conf_state(store.conf_state().clone());
        let compact_to = store.compaction_point(index, self.config.keep_entries, self.config.keep_bytes);
        // The state machine hands over a cheap copy of its state; serialising it (~150 ms at
        // 100k tasks) and writing and syncing tens of megabytes happen on a thread of their own
        // where the store allows: done here, they held up heartbeats and applies for most of a
        // second.
        let started = tokio::time::Instant::now();
        let state = self.sm.snapshot();
        let write: crate::SnapshotWriteFn = Box::new(move |out| {
            out.write_all(&header)?;
            state(out)
        });
        self.applied_bytes = 0;
        let write = match self.raw.store().write_snapshot_detached(index, write) {
            Ok(done) => {
                self.snapshot_job = Some(SnapshotJob { meta, compact_to, started, done });
                return Ok(());
            }
            Err(write) => write,
        };
        let mut writer = self.raw.mut_store().snapshot_writer(index);
        write(&mut writer).map_err(|e| RaftError::Storage(format!("writing the snapshot at {index}: {e}")))?;
        self.snapshot_bytes = writer.finish()?;
        self.raw.mut_store().save_snapshot(meta, compact_to)?;
        self.raw.mut_store().sync()?;
        self.snapshot_millis = started.elapsed().as_millis() as u64;
        self.applied_bytes = 0;
        tracing::debug!(index, compact_to, "took raft snapshot");
        Ok(())
    }

    /// The log's durable syncs so far (read by other threads).
    pub fn sync_stats(&self) -> std::sync::Arc<crate::storage::SyncStats> {
        self.raw.store().sync_stats()
    }

    pub fn status(&self) -> RaftStatus {
        let raft = &self.raw.raft;
        let conf = raft.prs().conf();
        let mut voters: Vec<u64> = conf.voters().ids().iter().collect();
        voters.sort_unstable();
        let mut learners: Vec<u64> = conf.learners().iter().copied().collect();
        learners.sort_unstable();
        let progress = if raft.state == StateRole::Leader {
            raft.prs()
                .iter()
                .map(|(id, pr)| {
                    let active = *id == self.config.id || pr.recent_active;
                    (
                        *id,
                        PeerProgress {
                            matched: pr.matched,
                            recent_active: active,
                            learner: conf.learners().contains(id),
                        },
                    )
                })
                .collect()
        } else {
            BTreeMap::new()
        };
        RaftStatus {
            id: self.config.id,
            term: raft.term,
            role: match raft.state {
                StateRole::Follower => RaftRole::Follower,
                StateRole::Candidate => RaftRole::Candidate,
                StateRole::PreCandidate => RaftRole::PreCandidate,
                StateRole::Leader => RaftRole::Leader,
            },
            leader_id: raft.leader_id,
            commit: raft.raft_log.committed,
            applied: self.applied,
            last_index: raft.raft_log.last_index(),
            leader_ready: raft.state == StateRole::Leader && self.applied_term == raft.term,
            voters,
            learners,
            members: self.raw.store().members().clone(),
            progress,
            removed: self.removed,
            snapshot_index: self.raw.store().snapshot_metadata().index,
            snapshot_bytes: self.snapshot_bytes,
            snapshot_millis: self.snapshot_millis,
        }
    }

    /// Fails every pending proposal, e.g. when the node stops.
    pub fn fail_pending(&mut self, error: ProposeError) {
        for (_, pending) in self.pending.drain() {
            match pending {
                Pending::Data(reply) => reply(Err(error.clone())),
                Pending::Conf(reply) => reply(Err(error.clone())),
            }
        }
    }
}
