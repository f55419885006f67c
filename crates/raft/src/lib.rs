//! shoal's consensus layer: raft-rs (TiKV) driven by a synchronous [`Engine`] that owns the
//! `RawNode`, persists through a narrow [`Durable`] store (sled in production) and applies
//! committed entries to a [`StateMachine`]. [`node`] runs an engine on its own thread and
//! [`transport`] carries messages between managers over gRPC. All raft-rs types stay inside
//! this crate.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub mod engine;
pub mod node;
pub mod storage;
pub mod transport;

pub use engine::{Engine, EngineConfig, PeerProgress, RaftRole, RaftStatus, Reply};
pub use node::{RaftHandle, spawn};
pub mod at_rest;
pub use at_rest::DataKey;
pub use storage::{Durable, MemDurable, Op, RaftStorage, SledDurable};
pub use transport::{GrpcTransport, RaftTransportService, Transport};

/// Raft messages as raft-rs defines them; other crates see them only as opaque values.
pub use raft::prelude::Message as RaftMessage;

/// A manager in the raft configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub node_id: String,
    pub addr: String,
    #[serde(default)]
    pub hostname: String,
}

pub type Members = BTreeMap<u64, Member>;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberChangeKind {
    /// Joins as a learner: receives the log but does not vote.
    AddLearner,
    /// A caught-up learner becomes a voter.
    Promote,
    Remove,
}

/// A membership change as proposed and as applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberChange {
    pub kind: MemberChangeKind,
    pub raft_id: u64,
    pub member: Member,
    /// Proposer's wall clock, so every manager records the same time.
    pub at: u64,
}

/// Writes a state machine's snapshot (see [`StateMachine::snapshot`]).
pub type SnapshotWriteFn = Box<dyn FnOnce(&mut dyn std::io::Write) -> std::io::Result<()> + Send>;

/// The replicated state machine that committed entries are applied to.
pub trait StateMachine: Send + 'static {
    type Output: Send + 'static;
    /// Applies a committed entry. Must be deterministic: same entries, same state.
    fn apply(&mut self, index: u64, data: &[u8]) -> Self::Output;
    fn apply_membership(&mut self, index: u64, change: &MemberChange);
    /// The whole state as it is now, to be written later: the engine calls it on the raft
    /// thread and runs the writer on a thread of its own where the storage allows, so the copy
    /// must be cheap (shared, copy-on-write) and serialising it must not need the state machine.
    /// The writer's `out` stores the data as it comes: a large state is never held whole in
    /// memory a second time.
    fn snapshot(&self) -> SnapshotWriteFn;
    fn restore(&mut self, data: &[u8]) -> Result<(), String>;
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RaftError {
    #[error("raft storage: {0}")]
    Storage(String),
    #[error("raft data is corrupt: {0}")]
    Corrupt(String),
    #[error("raft: {0}")]
    Raft(String),
}

/// Why a proposal did not complete. The change may still have been committed only for
/// `LeadershipLost`; in every other case it was not.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("this manager is not the leader")]
    NotLeader { leader: Option<u64> },
    #[error("leadership changed before the change was applied; it may or may not have been applied")]
    LeadershipLost,
    #[error("the proposal was dropped by raft: {0}")]
    Dropped(String),
    #[error("the raft node has stopped")]
    Stopped,
    /// More proposals are waiting than the node takes (see `MAX_PENDING_PROPOSALS`): refused at
    /// once instead of queueing without bound.
    #[error("manager overloaded: {pending} changes are waiting to be committed; retry")]
    Overloaded { pending: usize },
    /// raft takes one membership change at a time; this one came while another is unapplied.
    #[error("another membership change is still being applied; retry once it is")]
    MemberChangePending,
    #[error("{0}")]
    Refused(String),
}

/// Snapshot data: the membership (so a new manager learns every address) and the state machine.
pub(crate) fn encode_snapshot_data(members: &Members, state: &[u8]) -> Vec<u8> {
    let mut out = snapshot_header(members);
    out.extend_from_slice(state);
    out
}

/// The start of snapshot data: the membership.
pub(crate) fn snapshot_header(members: &Members) -> Vec<u8> {
    let members = serde_json::to_vec(members).expect("members serialise");
    let mut out = Vec::with_capacity(4 + members.len());
    out.extend_from_slice(&(members.len() as u32).to_be_bytes());
    out.extend_from_slice(&members);
    out
}

pub(crate) fn decode_snapshot_data(data: &[u8]) -> Result<(Members, &[u8]), RaftError> {
    let corrupt = |what: &str| RaftError::Corrupt(format!("snapshot data: {what}"));
    let len_bytes: [u8; 4] = data.get(..4).ok_or_else(|| corrupt("too short"))?.try_into().expect("4 bytes");
    let len = u32::from_be_bytes(len_bytes) as usize;
    let members_bytes = data.get(4..4 + len).ok_or_else(|| corrupt("truncated membership"))?;
    let members = serde_json::from_slice(members_bytes).map_err(|e| corrupt(&e.to_string()))?;
    Ok((members, &data[4 + len..]))
}

/// Creates the first snapshot of a new cluster in `durable`: `members` are its voters (one for a
/// manager started without --join; several in tests), and the state machine starts from
/// `initial_state`.
pub fn bootstrap<D: Durable>(durable: D, members: &Members, initial_state: &[u8]) -> Result<RaftStorage<D>, RaftError> {
    let mut storage = RaftStorage::open(durable)?;
    let mut meta = raft::prelude::SnapshotMetadata { index: 1, term: 1, ..Default::default() };
    meta.set_conf_state(raft::prelude::ConfState::from((members.keys().copied().collect::<Vec<_>>(), vec![])));
    storage.bootstrap(meta, encode_snapshot_data(members, initial_state), members)?;
    Ok(storage)
}

/// raft-rs logs through slog; this routes it into the `log` facade, which `tracing` picks up.
pub fn slog_logger() -> slog::Logger {
    use slog::Drain as _;
    slog::Logger::root(slog_stdlog::StdLog.fuse(), slog::o!())
}
