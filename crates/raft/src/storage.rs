//! Raft persistence: an in-memory copy of the log (what raft-rs reads through `Storage`) kept in
//! step with a narrow durable key-value store (what survives a crash).
//!
//! Every write goes to both; `sync` makes the durable side crash-safe. The engine syncs once per
//! Ready, before it sends messages that promise persistence (votes, append acks) and before a
//! proposal is acknowledged.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use raft::prelude::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, Storage, StorageError as RaftStorageError};

use crate::{Members, RaftError};

/// One write to the durable store.
#[derive(Clone, Debug)]
pub enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

/// Every key and value of a durable store, in key order.
pub type KeyValues = Vec<(Vec<u8>, Vec<u8>)>;

/// A narrow key-value store: atomic batches, an explicit sync, and a full scan at start-up.
pub trait Durable: Send + 'static {
    /// Applies all operations atomically (all or none survive a crash once synced).
    fn write(&mut self, ops: Vec<Op>) -> Result<(), RaftError>;
    /// Makes every write so far durable.
    fn sync(&mut self) -> Result<(), RaftError>;
    /// Every key and value, in key order.
    fn scan(&self) -> Result<KeyValues, RaftError>;
}

/// sled, pinned to 0.34.7. Everything raft keeps lives in one tree so a batch is atomic.
pub struct SledDurable {
    db: sled::Db,
    tree: sled::Tree,
}

impl SledDurable {
    pub fn open(path: &std::path::Path) -> Result<Self, RaftError> {
        let db = sled::Config::new()
            .path(path)
            // Durability comes from our explicit flush per Ready, not sled's background timer.
            .flush_every_ms(None)
            // sled's page cache defaults to 1 GiB; the store already lives in memory, and raft
            // reads little but the log's tail, so a small cache keeps a loaded manager's RSS down.
            .cache_capacity(64 << 20)
            .open()
            .map_err(|e| RaftError::Storage(format!("opening {}: {e}", path.display())))?;
        let tree = db.open_tree("raft").map_err(|e| RaftError::Storage(e.to_string()))?;
        Ok(SledDurable { db, tree })
    }

    /// Bytes sled uses on disk, for benchmarks and the space soak test.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

impl Durable for SledDurable {
    fn write(&mut self, ops: Vec<Op>) -> Result<(), RaftError> {
        let mut batch = sled::Batch::default();
        for op in ops {
            match op {
                Op::Put(k, v) => batch.insert(k, v),
                Op::Delete(k) => batch.remove(k),
            }
        }
        self.tree.apply_batch(batch).map_err(|e| RaftError::Storage(e.to_string()))
    }

    fn sync(&mut self) -> Result<(), RaftError> {
        self.db.flush().map(|_| ()).map_err(|e| RaftError::Storage(e.to_string()))
    }

    fn scan(&self) -> Result<KeyValues, RaftError> {
        self.tree
            .iter()
            .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(|e| RaftError::Storage(e.to_string())))
            .collect()
    }
}

/// An in-memory durable store for deterministic tests: writes are visible at once but only
/// `sync` makes them survive [`MemDurable::crash`], so a test can prove nothing is promised
/// before it is synced.
#[derive(Clone, Default)]
pub struct MemDurable {
    inner: Arc<Mutex<MemDurableInner>>,
}

#[derive(Default)]
struct MemDurableInner {
    synced: BTreeMap<Vec<u8>, Vec<u8>>,
    visible: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl MemDurable {
    /// What a machine would find on disk after losing power now.
    pub fn crash(&self) -> MemDurable {
        let synced = self.inner.lock().synced.clone();
        MemDurable { inner: Arc::new(Mutex::new(MemDurableInner { visible: synced.clone(), synced })) }
    }
}

impl Durable for MemDurable {
    fn write(&mut self, ops: Vec<Op>) -> Result<(), RaftError> {
        let mut inner = self.inner.lock();
        for op in ops {
            match op {
                Op::Put(k, v) => {
                    inner.visible.insert(k, v);
                }
                Op::Delete(k) => {
                    inner.visible.remove(&k);
                }
            }
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), RaftError> {
        let mut inner = self.inner.lock();
        inner.synced = inner.visible.clone();
        Ok(())
    }

    fn scan(&self) -> Result<KeyValues, RaftError> {
        Ok(self.inner.lock().visible.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }
}

const LOG_PREFIX: u8 = b'l';
const KEY_HARD_STATE: &[u8] = b"m:hard_state";
const KEY_CONF_STATE: &[u8] = b"m:conf_state";
const KEY_MEMBERS: &[u8] = b"m:members";
const KEY_SNAPSHOT: &[u8] = b"m:snapshot";
const KEY_TRUNCATED: &[u8] = b"m:truncated";

fn log_key(index: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(LOG_PREFIX);
    key.extend_from_slice(&index.to_be_bytes());
    key
}

fn encode<M: protobuf::Message>(m: &M) -> Vec<u8> {
    m.write_to_bytes().expect("raft protobuf messages always encode")
}

fn decode<M: protobuf::Message>(what: &str, bytes: &[u8]) -> Result<M, RaftError> {
    M::parse_from_bytes(bytes).map_err(|e| RaftError::Corrupt(format!("{what}: {e}")))
}

/// The log as raft-rs sees it, plus the durable store behind it.
pub struct RaftStorage<D: Durable> {
    durable: D,
    hard_state: HardState,
    conf_state: ConfState,
    members: Members,
    /// The newest snapshot, with the state machine's data.
    snapshot: Snapshot,
    /// Index and term of the entry just before the first one kept.
    truncated: (u64, u64),
    entries: VecDeque<Entry>,
    /// Set when raft asked for a snapshot newer than the one we hold.
    snapshot_wanted: Arc<AtomicBool>,
}

impl<D: Durable> RaftStorage<D> {
    /// Loads what the durable store holds. An empty store gives an empty, uninitialised log.
    pub fn open(durable: D) -> Result<Self, RaftError> {
        let mut storage = RaftStorage {
            durable,
            hard_state: HardState::default(),
            conf_state: ConfState::default(),
            members: Members::new(),
            snapshot: Snapshot::default(),
            truncated: (0, 0),
            entries: VecDeque::new(),
            snapshot_wanted: Arc::new(AtomicBool::new(false)),
        };
        for (key, value) in storage.durable.scan()? {
            if key.first() == Some(&LOG_PREFIX) && key.len() == 9 {
                storage.entries.push_back(decode("log entry", &value)?);
            } else if key == KEY_HARD_STATE {
                storage.hard_state = decode("hard state", &value)?;
            } else if key == KEY_CONF_STATE {
                storage.conf_state = decode("conf state", &value)?;
            } else if key == KEY_MEMBERS {
                storage.members =
                    serde_json::from_slice(&value).map_err(|e| RaftError::Corrupt(format!("members: {e}")))?;
            } else if key == KEY_SNAPSHOT {
                storage.snapshot = decode("snapshot", &value)?;
            } else if key == KEY_TRUNCATED {
                let bytes: [u8; 16] =
                    value.as_slice().try_into().map_err(|_| RaftError::Corrupt("truncated index".into()))?;
                storage.truncated = (
                    u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes")),
                    u64::from_be_bytes(bytes[8..].try_into().expect("8 bytes")),
                );
            } else {
                return Err(RaftError::Corrupt(format!("unexpected key {:?}", String::from_utf8_lossy(&key))));
            }
        }
        // The log must continue right after the truncation point without gaps.
        for (offset, entry) in storage.entries.iter().enumerate() {
            if entry.index != storage.truncated.0 + 1 + offset as u64 {
                return Err(RaftError::Corrupt(format!(
                    "log has a gap: expected index {}, found {}",
                    storage.truncated.0 + 1 + offset as u64,
                    entry.index
                )));
            }
        }
        let snap_index = storage.snapshot.get_metadata().index;
        if storage.hard_state.commit < snap_index {
            storage.hard_state.commit = snap_index;
        }
        Ok(storage)
    }

    /// True once the log holds a configuration (a bootstrap or a received snapshot).
    pub fn is_initialised(&self) -> bool {
        !self.conf_state.voters.is_empty() || self.truncated.0 > 0 || !self.entries.is_empty()
    }

    pub fn members(&self) -> &Members {
        &self.members
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn latest_snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    pub fn durable(&self) -> &D {
        &self.durable
    }

    pub(crate) fn snapshot_wanted(&self) -> bool {
        self.snapshot_wanted.swap(false, Ordering::SeqCst)
    }

    fn last(&self) -> u64 {
        self.truncated.0 + self.entries.len() as u64
    }

    /// Appends entries from a Ready, dropping any conflicting suffix first.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), RaftError> {
        let Some(first) = entries.first() else { return Ok(()) };
        if first.index <= self.truncated.0 {
            return Err(RaftError::Storage(format!(
                "append at {} would overwrite the compacted log (compacted to {})",
                first.index, self.truncated.0
            )));
        }
        if first.index > self.last() + 1 {
            return Err(RaftError::Storage(format!("append at {} leaves a gap after {}", first.index, self.last())));
        }
        let mut ops = Vec::with_capacity(entries.len() + 4);
        for index in first.index..=self.last() {
            ops.push(Op::Delete(log_key(index)));
        }
        let keep = (first.index - self.truncated.0 - 1) as usize;
        self.entries.truncate(keep);
        for entry in entries {
            ops.push(Op::Put(log_key(entry.index), encode(entry)));
            self.entries.push_back(entry.clone());
        }
        self.durable.write(ops)
    }

    pub fn set_hard_state(&mut self, hs: &HardState) -> Result<(), RaftError> {
        self.hard_state = hs.clone();
        self.durable.write(vec![Op::Put(KEY_HARD_STATE.to_vec(), encode(hs))])
    }

    pub fn set_commit(&mut self, commit: u64) -> Result<(), RaftError> {
        let mut hs = self.hard_state.clone();
        hs.commit = commit;
        self.set_hard_state(&hs)
    }

    /// Records the configuration in force after applying a membership change.
    pub fn set_conf_state(&mut self, cs: &ConfState, members: &Members) -> Result<(), RaftError> {
        self.conf_state = cs.clone();
        self.members = members.clone();
        self.durable.write(vec![
            Op::Put(KEY_CONF_STATE.to_vec(), encode(cs)),
            Op::Put(KEY_MEMBERS.to_vec(), serde_json::to_vec(members).expect("members serialise")),
        ])
    }

    /// Records peer addresses before this manager has a configuration (a joining manager learns
    /// them from the join response, so it can answer the leader before the first snapshot).
    pub fn seed_members(&mut self, members: &Members) -> Result<(), RaftError> {
        self.members = members.clone();
        self.durable
            .write(vec![Op::Put(KEY_MEMBERS.to_vec(), serde_json::to_vec(members).expect("members serialise"))])?;
        self.durable.sync()
    }

    /// Installs a snapshot received from the leader: the whole log is replaced by it.
    pub fn apply_snapshot(&mut self, snapshot: &Snapshot, members: &Members) -> Result<(), RaftError> {
        let meta = snapshot.get_metadata();
        let mut ops: Vec<Op> = (self.truncated.0 + 1..=self.last()).map(|i| Op::Delete(log_key(i))).collect();
        self.entries.clear();
        self.truncated = (meta.index, meta.term);
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        self.conf_state = meta.get_conf_state().clone();
        self.members = members.clone();
        self.snapshot = snapshot.clone();
        ops.extend(self.meta_ops());
        self.durable.write(ops)
    }

    /// Saves a snapshot the local state machine made at `meta.index` and drops log entries up to
    /// `compact_to` (kept below the snapshot so slow followers can still catch up from the log).
    pub fn save_snapshot(&mut self, snapshot: Snapshot, compact_to: u64) -> Result<(), RaftError> {
        let compact_to = compact_to.min(snapshot.get_metadata().index);
        self.snapshot = snapshot;
        let mut ops = Vec::new();
        if compact_to > self.truncated.0 {
            let term = self.term(compact_to).map_err(|e| RaftError::Storage(e.to_string()))?;
            for index in self.truncated.0 + 1..=compact_to {
                ops.push(Op::Delete(log_key(index)));
                self.entries.pop_front();
            }
            self.truncated = (compact_to, term);
        }
        ops.extend(self.meta_ops());
        self.durable.write(ops)
    }

    fn meta_ops(&self) -> Vec<Op> {
        let mut truncated = Vec::with_capacity(16);
        truncated.extend_from_slice(&self.truncated.0.to_be_bytes());
        truncated.extend_from_slice(&self.truncated.1.to_be_bytes());
        vec![
            Op::Put(KEY_SNAPSHOT.to_vec(), encode(&self.snapshot)),
            Op::Put(KEY_TRUNCATED.to_vec(), truncated),
            Op::Put(KEY_HARD_STATE.to_vec(), encode(&self.hard_state)),
            Op::Put(KEY_CONF_STATE.to_vec(), encode(&self.conf_state)),
            Op::Put(KEY_MEMBERS.to_vec(), serde_json::to_vec(&self.members).expect("members serialise")),
        ]
    }

    pub fn sync(&mut self) -> Result<(), RaftError> {
        self.durable.sync()
    }

    /// Number of entries kept in the log (for compaction tests and benchmarks).
    pub fn log_len(&self) -> usize {
        self.entries.len()
    }

    /// Writes the first snapshot of a brand-new cluster.
    pub fn bootstrap(&mut self, meta: SnapshotMetadata, data: Vec<u8>, members: &Members) -> Result<(), RaftError> {
        if self.is_initialised() {
            return Err(RaftError::Storage("cannot bootstrap: the raft log is already initialised".into()));
        }
        let mut snapshot = Snapshot::default();
        snapshot.set_metadata(meta);
        snapshot.set_data(data.into());
        self.apply_snapshot(&snapshot, members)?;
        self.sync()
    }
}

impl<D: Durable> Storage for RaftStorage<D> {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState { hard_state: self.hard_state.clone(), conf_state: self.conf_state.clone() })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.truncated.0 {
            return Err(raft::Error::Store(RaftStorageError::Compacted));
        }
        if high > self.last() + 1 {
            return Err(raft::Error::Store(RaftStorageError::Unavailable));
        }
        let start = (low - self.truncated.0 - 1) as usize;
        let end = (high - self.truncated.0 - 1) as usize;
        let mut entries: Vec<Entry> = self.entries.range(start..end).cloned().collect();
        raft::util::limit_size(&mut entries, max_size.into());
        Ok(entries)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.truncated.0 {
            return Ok(self.truncated.1);
        }
        if idx < self.truncated.0 {
            return Err(raft::Error::Store(RaftStorageError::Compacted));
        }
        if idx > self.last() {
            return Err(raft::Error::Store(RaftStorageError::Unavailable));
        }
        Ok(self.entries[(idx - self.truncated.0 - 1) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.truncated.0 + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.snapshot.get_metadata().index >= request_index && !self.snapshot.is_empty() {
            return Ok(self.snapshot.clone());
        }
        // The engine notices the flag and snapshots the state machine at its applied index.
        self.snapshot_wanted.store(true, Ordering::SeqCst);
        Err(raft::Error::Store(RaftStorageError::SnapshotTemporarilyUnavailable))
    }
}
