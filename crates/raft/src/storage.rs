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

use crate::at_rest::DataKey;
use crate::{Members, RaftError};

/// One write to the durable store.
#[derive(Clone, Debug)]
pub enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

impl Op {
    fn key(&self) -> &[u8] {
        match self {
            Op::Put(k, _) | Op::Delete(k) => k,
        }
    }

    /// The value the key has after this write (`None`: deleted).
    fn value(&self) -> Option<&Vec<u8>> {
        match self {
            Op::Put(_, v) => Some(v),
            Op::Delete(_) => None,
        }
    }
}

/// Every key and value of a durable store, in key order.
pub type KeyValues = Vec<(Vec<u8>, Vec<u8>)>;

/// A narrow key-value store: atomic batches, an explicit sync, a scan at start-up and point reads.
///
/// A crash keeps everything synced and, of the writes since the last sync, some prefix in the
/// order they were made: an atomic write survives whole or not at all, each operation of an
/// ordered write on its own.
///
/// Log entries (keys made by [`log_key`]) are special: they are only written in order, and
/// dropped with [`Durable::discard_log_before`] rather than deleted one by one, so a store can
/// keep them in segments it frees whole.
pub trait Durable: Send + 'static {
    /// Applies all operations atomically (all or none survive a crash once synced). Log entries
    /// are refused here: they go through [`Durable::write_in_order`].
    fn write(&mut self, ops: Vec<Op>) -> Result<(), RaftError>;
    /// Applies operations one after another: a crash before the next sync may keep any prefix
    /// of them. Cheaper than [`Durable::write`] where every prefix is a consistent state.
    fn write_in_order(&mut self, ops: Vec<Op>) -> Result<(), RaftError>;
    /// Log entries below `index` are no longer needed. They go only after every write made so
    /// far is durable, and only as far as is cheap: some may stay on disk for good (the log
    /// ignores entries at or below its truncation point when it loads).
    fn discard_log_before(&mut self, index: u64) -> Result<(), RaftError>;
    /// Makes every write so far durable.
    fn sync(&mut self) -> Result<(), RaftError>;
    /// Every key starting with `prefix` and its value, in key order.
    fn scan(&self, prefix: &[u8]) -> Result<KeyValues, RaftError>;
    /// One key's value.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, RaftError>;
    /// The keys starting with `prefix`, without reading their values.
    fn keys(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, RaftError>;
    /// A writer for snapshot data that works on another thread, if this store has one: a large
    /// snapshot is then written and made durable without holding up the raft thread.
    fn detached_snapshot_writer(&self) -> Option<Box<dyn DetachedSnapshotWriter>> {
        None
    }
}

/// Writes snapshot data chunks from a thread of its own (see
/// [`Durable::detached_snapshot_writer`]).
pub trait DetachedSnapshotWriter: Send {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), RaftError>;
    /// Makes every chunk put so far durable.
    fn flush(&mut self) -> Result<(), RaftError>;
}

/// Snapshot data straight into sled's snapshot tree, which sled lets any thread write.
struct SledSnapshotWriter {
    db: sled::Db,
    snapshots: sled::Tree,
    key: Option<DataKey>,
}

impl DetachedSnapshotWriter for SledSnapshotWriter {
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), RaftError> {
        debug_assert!(key.starts_with(SNAPSHOT_DATA_PREFIX));
        let value = match &self.key {
            Some(data_key) => data_key.seal_for(&key, &value),
            None => value,
        };
        self.snapshots.insert(key, value).map_err(sled_error)?;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), RaftError> {
        self.db.flush().map_err(sled_error)?;
        Ok(())
    }
}

/// Refuses an atomic write that holds a log entry (see [`Durable`]).
fn check_no_log_entries(ops: &[Op]) -> Result<(), RaftError> {
    match ops.iter().find_map(|op| log_index(op.key())) {
        Some(index) => Err(RaftError::Storage(format!(
            "log entry {index} in an atomic write: log entries are written in order and discarded by index"
        ))),
        None => Ok(()),
    }
}

/// A log segment (a sled tree of its own) holds at most this many entries...
const LOG_SEGMENT_ENTRIES: u64 = 4096;
/// ...and is closed once this many bytes were written to it. Compaction drops whole segments
/// instead of deleting entries one by one (each sled delete copies a leaf and merges emptied
/// ones: about a quarter of a follower's CPU under load), and leaves the entries of a partly
/// compacted segment on disk, so a segment's size bounds that waste.
const LOG_SEGMENT_BYTES: u64 = 4 << 20;

/// A segment that spans at most this many indexes was closed by size: its entries average 4 KiB
/// or more. sled writes a leaf over about 128 KiB as a blob file of its own, and when it frees a
/// dropped tree's page that is a lone blob it takes it for a moved pointer and keeps the file
/// until the next start (sled 0.34.7, `mark_replace`). The entries of such a segment are deleted
/// one by one before the drop (few of them, by definition), which lets sled remove the files.
const LOG_SEGMENT_SPAN_OF_LARGE_ENTRIES: u64 = 1024;

/// The sled tree of the log segment whose first index is `first`.
fn log_segment_tree_name(first: u64) -> String {
    format!("raft-log-{first:016x}")
}

/// A sled error as a [`RaftError`]: what sled reports as damage (corruption, or a file it
/// cannot read) is [`RaftError::Corrupt`], so callers tell a damaged data dir from an IO error by
/// type.
fn sled_error(e: sled::Error) -> RaftError {
    match e {
        sled::Error::Corruption { .. } | sled::Error::Unsupported(_) | sled::Error::ReportableBug(_) => {
            RaftError::Corrupt(e.to_string())
        }
        sled::Error::Io(_) | sled::Error::CollectionNotFound(_) => RaftError::Storage(e.to_string()),
    }
}

thread_local! {
    /// Set while [`catch_panic`] runs on this thread: its panics are reported as errors, so the
    /// default hook's message would only be noise.
    static QUIET_PANICS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, turning a panic inside it (sled and raft-rs panic on some damaged files) into
/// [`RaftError::Corrupt`] with the panic's message, without the panic being printed. Other
/// threads' panics are printed as before: the hook stays quiet only on the calling thread.
pub fn catch_panic<T>(what: &str, f: impl FnOnce() -> Result<T, RaftError>) -> Result<T, RaftError> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET_PANICS.with(|q| q.get()) {
                previous(info);
            }
        }));
    });
    let was_quiet = QUIET_PANICS.with(|q| q.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET_PANICS.with(|q| q.set(was_quiet));
    result.unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        Err(RaftError::Corrupt(format!("{what}: the data could not be read (it made the reader panic: {message})")))
    })
}

/// sled, pinned to 0.34.7.
///
/// Writes are gathered in memory and handed to sled at `sync`. Every sled batch rolls sled's IO
/// buffer twice (each roll is a disk write handed to sled's IO threads, waking all of them), so
/// ordered and single-operation writes (a Ready's entries and hard state, nearly every sync) go
/// in as plain inserts, in order, and the flush is the only disk write: sled recovers a prefix
/// of its log, which is what [`Durable`] promises. Only an atomic write of several operations
/// becomes a batch.
///
/// Three kinds of tree:
/// - `raft`: hard state, configuration, snapshot metadata (one tree, so a batch is atomic);
/// - `raft-log-<first index>`: log entries, a new tree every [`LOG_SEGMENT_ENTRIES`] entries or
///   [`LOG_SEGMENT_BYTES`] bytes; an index belongs to the segment with the greatest first index
///   at or below it, and a segment is dropped whole once the log is compacted past its end;
/// - `raft-snapshots`: snapshot data (keys starting with [`SNAPSHOT_DATA_PREFIX`]). sled
///   rewrites a whole leaf when it consolidates one, so a multi-megabyte value next to the hard
///   state would be rewritten (as a new blob file) every few commits.
///
/// Data dirs written before the log had trees of its own keep entries in `raft`; opening one
/// moves them over.
pub struct SledDurable {
    db: sled::Db,
    tree: sled::Tree,
    snapshots: sled::Tree,
    /// The log's trees by their first index.
    log_segments: BTreeMap<u64, sled::Tree>,
    /// Bytes written to the last segment since this process opened it (an estimate after a
    /// restart: it only decides when the next segment starts).
    last_segment_bytes: u64,
    /// Writes not yet handed to sled, in order.
    pending: Vec<Op>,
    /// Where each pending atomic write of several operations starts and ends in `pending`.
    atomic_groups: Vec<std::ops::Range<usize>>,
    /// The position in `pending` of each key's newest write, for reads before the sync.
    newest: BTreeMap<Vec<u8>, usize>,
    /// Log entries below this index may go after the next flush.
    discard_before: u64,
    /// Seals every value written and opens every value read (see [`crate::at_rest`]); `None`
    /// for a store kept in the clear (tests, benchmarks).
    key: Option<DataKey>,
}

/// Where sled's default tree records that every value is sealed, and how.
const ENCRYPTION_MARKER: &[u8] = b"shoal:encryption";
const ENCRYPTION_FORMAT: &[u8] = b"aes-256-gcm/v1";

impl SledDurable {
    /// Opens (or creates) the sled database in `path`. Damage sled detects is
    /// [`RaftError::Corrupt`], naming the path; so is a panic of sled's recovery on a damaged
    /// file (caught here: a damaged data dir must give an error, not a crash).
    pub fn open(path: &std::path::Path) -> Result<Self, RaftError> {
        Self::open_with_key(path, None)
    }

    /// [`SledDurable::open`] with every value sealed with `key`. A store written in the clear
    /// is sealed on the way (once); one sealed is refused without a key.
    pub fn open_with_key(path: &std::path::Path, key: Option<DataKey>) -> Result<Self, RaftError> {
        catch_panic(&format!("opening {}", path.display()), || Self::open_unguarded(path, key)).map_err(|e| match e {
            RaftError::Corrupt(m) if !m.contains(&path.display().to_string()) => {
                RaftError::Corrupt(format!("{}: {m}", path.display()))
            }
            other => other,
        })
    }

    fn open_unguarded(path: &std::path::Path, key: Option<DataKey>) -> Result<Self, RaftError> {
        let db = sled::Config::new()
            .path(path)
            // Durability comes from our explicit flush per Ready, not sled's background timer.
            .flush_every_ms(None)
            // sled's page cache defaults to 1 GiB; the store already lives in memory and raft
            // reads the log from its own copy (only snapshot data is read back from sled), so a
            // small cache keeps a loaded manager's RSS down.
            .cache_capacity(16 << 20)
            .open()
            .map_err(|e| match sled_error(e) {
                RaftError::Corrupt(m) => RaftError::Corrupt(format!("{}: {m}", path.display())),
                RaftError::Storage(m) => RaftError::Storage(format!("opening {}: {m}", path.display())),
                other => other,
            })?;
        let tree = db.open_tree("raft").map_err(sled_error)?;
        let snapshots = db.open_tree("raft-snapshots").map_err(sled_error)?;
        let mut log_segments = BTreeMap::new();
        for name in db.tree_names() {
            let Some(first) = std::str::from_utf8(&name)
                .ok()
                .and_then(|name| name.strip_prefix("raft-log-"))
                .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            else {
                continue;
            };
            log_segments.insert(first, db.open_tree(&name).map_err(sled_error)?);
        }
        let mut durable = SledDurable {
            db,
            tree,
            snapshots,
            log_segments,
            last_segment_bytes: 0,
            pending: Vec::new(),
            atomic_groups: Vec::new(),
            newest: BTreeMap::new(),
            discard_before: 0,
            key: None,
        };
        durable.move_log_out_of_the_main_tree()?;
        let sealed = durable.db.get(ENCRYPTION_MARKER).map_err(sled_error)?.is_some();
        match (key, sealed) {
            (Some(key), true) => durable.key = Some(key),
            (Some(key), false) => durable.seal_everything(key)?,
            (None, true) => {
                return Err(RaftError::Storage(format!(
                    "{} is encrypted: it opens only with this manager's data key",
                    path.display()
                )));
            }
            (None, false) => {}
        }
        Ok(durable)
    }

    /// Seals every value of a store written in the clear (a data dir from before encryption at
    /// rest), then marks it sealed. A crash before the mark leaves some values sealed and some
    /// not, which the next open finishes: a value that already opens with the key is left.
    fn seal_everything(&mut self, key: DataKey) -> Result<(), RaftError> {
        let mut count = 0usize;
        let trees: Vec<sled::Tree> = [self.tree.clone(), self.snapshots.clone()]
            .into_iter()
            .chain(self.log_segments.values().cloned())
            .collect();
        for tree in trees {
            for kv in tree.iter() {
                let (k, v) = kv.map_err(sled_error)?;
                if key.open_for(&k, &v).is_ok() {
                    continue;
                }
                tree.insert(k.clone(), key.seal_for(&k, &v)).map_err(sled_error)?;
                count += 1;
            }
        }
        self.db.flush().map_err(sled_error)?;
        self.db.insert(ENCRYPTION_MARKER, ENCRYPTION_FORMAT).map_err(sled_error)?;
        self.db.flush().map_err(sled_error)?;
        if count > 0 {
            tracing::info!(values = count, "encrypted the raft data written before encryption at rest");
        }
        self.key = Some(key);
        Ok(())
    }

    /// Whether the (closed) store in `path` is sealed; false if there is none.
    pub fn is_sealed(path: &std::path::Path) -> Result<bool, RaftError> {
        if !path.join("db").exists() {
            return Ok(false);
        }
        let db = sled::Config::new().path(path).open().map_err(sled_error)?;
        Ok(db.get(ENCRYPTION_MARKER).map_err(sled_error)?.is_some())
    }

    /// Seals every value of the (closed) store in `path` anew: a value `new` opens is left (a
    /// rotation that was interrupted and runs again), one `old` opens is sealed with `new`. Every
    /// value opens with `new` afterwards, once flushed; returns how many were sealed anew.
    pub fn reseal(path: &std::path::Path, old: &DataKey, new: &DataKey) -> Result<usize, RaftError> {
        let durable = Self::open_with_key(path, Some(old.clone()))?;
        let trees: Vec<sled::Tree> = [durable.tree.clone(), durable.snapshots.clone()]
            .into_iter()
            .chain(durable.log_segments.values().cloned())
            .collect();
        let mut count = 0usize;
        for tree in trees {
            for kv in tree.iter() {
                let (k, v) = kv.map_err(sled_error)?;
                if new.open_for(&k, &v).is_ok() {
                    continue;
                }
                let plain = old.open_for(&k, &v)?;
                tree.insert(k.clone(), new.seal_for(&k, &plain)).map_err(sled_error)?;
                count += 1;
            }
        }
        durable.db.flush().map_err(sled_error)?;
        Ok(count)
    }

    /// `value` as it is stored under `key`: sealed when the store has a data key.
    fn sealed(&self, key: &[u8], value: Vec<u8>) -> Vec<u8> {
        match &self.key {
            Some(data_key) => data_key.seal_for(key, &value),
            None => value,
        }
    }

    /// A value stored under `key` as it was written.
    fn opened(&self, key: &[u8], stored: &[u8]) -> Result<Vec<u8>, RaftError> {
        match &self.key {
            Some(data_key) => data_key.open_for(key, stored),
            None => Ok(stored.to_vec()),
        }
    }

    /// Moves log entries an older shoal kept in the `raft` tree into their segment trees. The
    /// copies are flushed before the originals are deleted, so a crash in between only leaves
    /// the same entry in both places, and the next open moves it again.
    fn move_log_out_of_the_main_tree(&mut self) -> Result<(), RaftError> {
        let mut moved = sled::Batch::default();
        let mut count = 0usize;
        for kv in self.tree.scan_prefix([LOG_PREFIX]) {
            let (key, value) = kv.map_err(sled_error)?;
            // A malformed key stays where it is, for `RaftStorage::open` to report.
            let Some(index) = log_index(&key) else { continue };
            self.segment_for_write(index, value.len())?.insert(key.clone(), value).map_err(sled_error)?;
            moved.remove(key);
            count += 1;
        }
        if count > 0 {
            self.db.flush().map_err(sled_error)?;
            self.tree.apply_batch(moved).map_err(sled_error)?;
            self.db.flush().map_err(sled_error)?;
            tracing::info!(entries = count, "moved the raft log into per-segment trees");
        }
        Ok(())
    }

    /// The first index of the segment `index` belongs to.
    fn segment_of(&self, index: u64) -> Option<u64> {
        self.log_segments.range(..=index).next_back().map(|(first, _)| *first)
    }

    /// The tree to write the entry at `index` (`bytes` long) to, starting a new segment there
    /// when the last one is full.
    fn segment_for_write(&mut self, index: u64, bytes: usize) -> Result<&sled::Tree, RaftError> {
        let last = self.log_segments.keys().next_back().copied();
        let (first, is_last) = match (self.segment_of(index), last) {
            (Some(first), Some(last))
                if first != last
                    || index == last
                    || (index - last < LOG_SEGMENT_ENTRIES && self.last_segment_bytes < LOG_SEGMENT_BYTES) =>
            {
                (first, first == last)
            }
            _ => {
                let tree = self.db.open_tree(log_segment_tree_name(index)).map_err(sled_error)?;
                let is_last = last.is_none_or(|last| index > last);
                if is_last {
                    self.last_segment_bytes = 0;
                }
                self.log_segments.insert(index, tree);
                (index, is_last)
            }
        };
        if is_last {
            self.last_segment_bytes += bytes as u64;
        }
        Ok(&self.log_segments[&first])
    }

    /// Writes not yet handed to sled under `prefix`, in key order (`None`: a delete).
    fn pending_under<'a>(&'a self, prefix: &'a [u8]) -> impl Iterator<Item = (&'a Vec<u8>, Option<&'a Vec<u8>>)> {
        self.newest
            .range(prefix.to_vec()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(k, at)| (k, self.pending[*at].value()))
    }

    /// Queues the writes that go through `pending` and applies snapshot data at once; returns
    /// where the queued ones sit in `pending`.
    fn queue(&mut self, ops: Vec<Op>) -> Result<std::ops::Range<usize>, RaftError> {
        let start = self.pending.len();
        for op in ops {
            let op = match op {
                Op::Put(k, v) => {
                    let v = self.sealed(&k, v);
                    Op::Put(k, v)
                }
                delete => delete,
            };
            match op {
                // Snapshot data goes to sled at once, chunk by chunk, so a large snapshot is
                // never held whole in memory. It is keyed by its index and nothing points to it
                // until the metadata naming it is synced (sled recovers a prefix of its log), so
                // a crash never pairs metadata with data of another index; old data is deleted
                // only once newer metadata is durable.
                Op::Put(k, v) if k.starts_with(SNAPSHOT_DATA_PREFIX) => {
                    self.snapshots.insert(k, v).map_err(sled_error)?;
                }
                Op::Delete(k) if k.starts_with(SNAPSHOT_DATA_PREFIX) => {
                    self.snapshots.remove(k).map_err(sled_error)?;
                }
                op => {
                    self.newest.insert(op.key().to_vec(), self.pending.len());
                    self.pending.push(op);
                }
            }
        }
        Ok(start..self.pending.len())
    }

    /// The trees that may hold keys starting with `prefix`.
    fn trees_under(&self, prefix: &[u8]) -> Vec<&sled::Tree> {
        if prefix.starts_with(SNAPSHOT_DATA_PREFIX) {
            vec![&self.snapshots]
        } else if prefix.first() == Some(&LOG_PREFIX) {
            self.log_segments.values().collect()
        } else if prefix.is_empty() {
            [&self.tree, &self.snapshots].into_iter().chain(self.log_segments.values()).collect()
        } else {
            vec![&self.tree]
        }
    }

    /// The tree that holds `key`, if it exists yet.
    fn tree_for(&self, key: &[u8]) -> Option<&sled::Tree> {
        if key.starts_with(SNAPSHOT_DATA_PREFIX) {
            Some(&self.snapshots)
        } else if let Some(index) = log_index(key) {
            self.segment_of(index).map(|first| &self.log_segments[&first])
        } else {
            Some(&self.tree)
        }
    }

    /// Drops the log's segments that end below `discard_before`: those followed by a segment
    /// that starts at or below it. The last segment always stays.
    fn drop_discarded_segments(&mut self) -> Result<(), RaftError> {
        let firsts: Vec<u64> = self.log_segments.keys().copied().collect();
        let whole = firsts.windows(2).take_while(|pair| pair[1] <= self.discard_before).map(|pair| (pair[0], pair[1]));
        for (first, next) in whole.collect::<Vec<_>>() {
            let Some(tree) = self.log_segments.remove(&first) else { continue };
            if next - first <= LOG_SEGMENT_SPAN_OF_LARGE_ENTRIES {
                for key in tree.iter().keys() {
                    tree.remove(key.map_err(sled_error)?).map_err(sled_error)?;
                }
            }
            self.db.drop_tree(log_segment_tree_name(first)).map_err(sled_error)?;
        }
        Ok(())
    }

    /// Bytes sled uses on disk, for benchmarks and the space soak test.
    pub fn size_on_disk(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

impl Durable for SledDurable {
    fn write(&mut self, ops: Vec<Op>) -> Result<(), RaftError> {
        check_no_log_entries(&ops)?;
        let queued = self.queue(ops)?;
        if queued.len() > 1 {
            self.atomic_groups.push(queued);
        }
        Ok(())
    }

    fn write_in_order(&mut self, ops: Vec<Op>) -> Result<(), RaftError> {
        self.queue(ops).map(|_| ())
    }

    fn detached_snapshot_writer(&self) -> Option<Box<dyn DetachedSnapshotWriter>> {
        // Chunks go straight to the snapshot tree, as `queue` puts them: nothing points to
        // them until the metadata naming their index is synced on the raft thread.
        Some(Box::new(SledSnapshotWriter {
            db: self.db.clone(),
            snapshots: self.snapshots.clone(),
            key: self.key.clone(),
        }))
    }

    fn discard_log_before(&mut self, index: u64) -> Result<(), RaftError> {
        self.discard_before = self.discard_before.max(index);
        Ok(())
    }

    fn sync(&mut self) -> Result<(), RaftError> {
        let pending = std::mem::take(&mut self.pending);
        let mut groups = std::mem::take(&mut self.atomic_groups).into_iter().peekable();
        self.newest.clear();
        let mut ops = pending.into_iter();
        let mut at = 0;
        while ops.len() > 0 {
            if let Some(group) = groups.next_if(|group| group.start == at) {
                // Atomic writes never hold log entries, so the whole group is in `raft`. A batch
                // keeps the last write per key, so the writes go in as they came.
                let mut batch = sled::Batch::default();
                for op in ops.by_ref().take(group.len()) {
                    match op {
                        Op::Put(k, v) => batch.insert(k, v),
                        Op::Delete(k) => batch.remove(k),
                    }
                }
                self.tree.apply_batch(batch).map_err(sled_error)?;
                at = group.end;
                continue;
            }
            let op = ops.next().expect("checked: ops are left");
            at += 1;
            match (log_index(op.key()), op) {
                (Some(index), Op::Put(k, v)) => self.segment_for_write(index, v.len())?.insert(k, v).map(|_| ()),
                // An entry below every segment was never written (or was dropped with its segment).
                (Some(index), Op::Delete(k)) => match self.segment_of(index) {
                    Some(first) => self.log_segments[&first].remove(k).map(|_| ()),
                    None => Ok(()),
                },
                (None, Op::Put(k, v)) => self.tree.insert(k, v).map(|_| ()),
                (None, Op::Delete(k)) => self.tree.remove(k).map(|_| ()),
            }
            .map_err(sled_error)?;
        }
        self.db.flush().map_err(sled_error)?;
        self.drop_discarded_segments()
    }

    fn scan(&self, prefix: &[u8]) -> Result<KeyValues, RaftError> {
        let mut merged = BTreeMap::new();
        for tree in self.trees_under(prefix) {
            for kv in tree.scan_prefix(prefix) {
                let (k, v) = kv.map_err(sled_error)?;
                merged.insert(k.to_vec(), Some(v.to_vec()));
            }
        }
        for (k, v) in self.pending_under(prefix) {
            merged.insert(k.clone(), v.cloned());
        }
        merged.into_iter().filter_map(|(k, v)| v.map(|v| self.opened(&k, &v).map(|v| (k, v)))).collect()
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, RaftError> {
        if let Some(at) = self.newest.get(key) {
            return self.pending[*at].value().map(|v| self.opened(key, v)).transpose();
        }
        let Some(tree) = self.tree_for(key) else { return Ok(None) };
        let stored = tree.get(key).map_err(sled_error)?;
        stored.map(|v| self.opened(key, &v)).transpose()
    }

    fn keys(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, RaftError> {
        let mut keys = std::collections::BTreeSet::new();
        for tree in self.trees_under(prefix) {
            for key in tree.scan_prefix(prefix).keys() {
                keys.insert(key.map_err(sled_error)?.to_vec());
            }
        }
        for (k, v) in self.pending_under(prefix) {
            if v.is_some() {
                keys.insert(k.clone());
            } else {
                keys.remove(k);
            }
        }
        Ok(keys.into_iter().collect())
    }
}

/// An in-memory durable store for deterministic tests: writes are visible at once but only
/// `sync` makes them certain to survive [`MemDurable::crash`], so a test can prove nothing is
/// promised before it is synced. [`MemDurable::crash_keeping`] also keeps a prefix of the writes
/// made since, as a real disk may.
#[derive(Clone, Default)]
pub struct MemDurable {
    inner: Arc<Mutex<MemDurableInner>>,
}

#[derive(Default)]
struct MemDurableInner {
    synced: BTreeMap<Vec<u8>, Vec<u8>>,
    visible: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Writes since the last sync, in order; each unit survives a crash whole or not at all.
    unsynced: Vec<Vec<Op>>,
}

fn apply_ops(map: &mut BTreeMap<Vec<u8>, Vec<u8>>, ops: impl IntoIterator<Item = Op>) {
    for op in ops {
        match op {
            Op::Put(k, v) => {
                map.insert(k, v);
            }
            Op::Delete(k) => {
                map.remove(&k);
            }
        }
    }
}

impl MemDurable {
    /// What a machine would find on disk after losing power now, if none of the writes since
    /// the last sync reached the disk.
    pub fn crash(&self) -> MemDurable {
        self.crash_keeping(0)
    }

    /// Writes since the last sync that a crash may keep some of (see [`Durable`]).
    pub fn unsynced_units(&self) -> usize {
        self.inner.lock().unsynced.len()
    }

    /// What a machine would find on disk after losing power now, if the first `units` writes
    /// since the last sync reached the disk (atomic writes count as one).
    pub fn crash_keeping(&self, units: usize) -> MemDurable {
        let inner = self.inner.lock();
        let mut disk = inner.synced.clone();
        apply_ops(&mut disk, inner.unsynced.iter().take(units).flatten().cloned());
        MemDurable {
            inner: Arc::new(Mutex::new(MemDurableInner { visible: disk.clone(), synced: disk, unsynced: Vec::new() })),
        }
    }
}

impl Durable for MemDurable {
    fn write(&mut self, ops: Vec<Op>) -> Result<(), RaftError> {
        check_no_log_entries(&ops)?;
        let mut inner = self.inner.lock();
        apply_ops(&mut inner.visible, ops.iter().cloned());
        inner.unsynced.push(ops);
        Ok(())
    }

    fn write_in_order(&mut self, ops: Vec<Op>) -> Result<(), RaftError> {
        let mut inner = self.inner.lock();
        apply_ops(&mut inner.visible, ops.iter().cloned());
        inner.unsynced.extend(ops.into_iter().map(|op| vec![op]));
        Ok(())
    }

    /// Deletes every entry below `index`, oldest first, each on its own (a crash may keep any
    /// prefix of the deletes), after the writes made so far.
    fn discard_log_before(&mut self, index: u64) -> Result<(), RaftError> {
        let stale: Vec<Op> = self
            .inner
            .lock()
            .visible
            .range(log_key(0)..log_key(index))
            .map(|(key, _)| Op::Delete(key.clone()))
            .collect();
        self.write_in_order(stale)
    }

    fn sync(&mut self) -> Result<(), RaftError> {
        let mut inner = self.inner.lock();
        inner.synced = inner.visible.clone();
        inner.unsynced.clear();
        Ok(())
    }

    fn scan(&self, prefix: &[u8]) -> Result<KeyValues, RaftError> {
        let inner = self.inner.lock();
        Ok(inner
            .visible
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, RaftError> {
        Ok(self.inner.lock().visible.get(key).cloned())
    }

    fn keys(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, RaftError> {
        Ok(self.scan(prefix)?.into_iter().map(|(k, _)| k).collect())
    }
}

const LOG_PREFIX: u8 = b'l';
const META_PREFIX: &[u8] = b"m:";
const KEY_HARD_STATE: &[u8] = b"m:hard_state";
const KEY_CONF_STATE: &[u8] = b"m:conf_state";
const KEY_MEMBERS: &[u8] = b"m:members";
const KEY_TRUNCATED: &[u8] = b"m:truncated";
/// The newest snapshot's metadata. (Before shoal kept the data apart, this held the data too.)
const KEY_SNAPSHOT: &[u8] = b"m:snapshot";
/// Snapshot data: the whole state machine, in chunks keyed by the snapshot's index and the
/// chunk's number. Only read at start-up and when a follower needs a snapshot, so it is not kept
/// in memory.
pub const SNAPSHOT_DATA_PREFIX: &[u8] = b"s:";
/// Snapshot data is written in chunks of this size as it is serialised.
const SNAPSHOT_DATA_CHUNK: usize = 1 << 20;

fn snapshot_data_prefix(index: u64) -> Vec<u8> {
    let mut key = SNAPSHOT_DATA_PREFIX.to_vec();
    key.extend_from_slice(&index.to_be_bytes());
    key
}

fn snapshot_chunk_key(index: u64, chunk: u32) -> Vec<u8> {
    let mut key = snapshot_data_prefix(index);
    key.extend_from_slice(&chunk.to_be_bytes());
    key
}

/// Writes the data of the snapshot at `index` to the durable store as it is produced (see
/// [`RaftStorage::snapshot_writer`]); `finish` writes the last chunk.
pub struct SnapshotWriter<'a, D: Durable> {
    durable: &'a mut D,
    index: u64,
    buf: Vec<u8>,
    chunks: u32,
    bytes: u64,
}

impl<D: Durable> SnapshotWriter<'_, D> {
    fn put_chunk(&mut self, chunk: Vec<u8>) -> Result<(), RaftError> {
        self.bytes += chunk.len() as u64;
        self.durable.write(vec![Op::Put(snapshot_chunk_key(self.index, self.chunks), chunk)])?;
        self.chunks += 1;
        Ok(())
    }

    /// Writes what is left and returns the size of the whole data.
    pub fn finish(mut self) -> Result<u64, RaftError> {
        let rest = std::mem::take(&mut self.buf);
        self.put_chunk(rest)?;
        Ok(self.bytes)
    }
}

impl<D: Durable> std::io::Write for SnapshotWriter<'_, D> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        while self.buf.len() >= SNAPSHOT_DATA_CHUNK {
            let rest = self.buf.split_off(SNAPSHOT_DATA_CHUNK);
            let chunk = std::mem::replace(&mut self.buf, rest);
            self.put_chunk(chunk).map_err(std::io::Error::other)?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Snapshot data cut into chunks as it is serialised, each put through a
/// [`DetachedSnapshotWriter`] (see [`RaftStorage::write_snapshot_detached`]).
struct DetachedChunks {
    writer: Box<dyn DetachedSnapshotWriter>,
    index: u64,
    buf: Vec<u8>,
    chunks: u32,
    bytes: u64,
    /// Why storing a chunk failed: the serialiser only sees an `io::Error`.
    failed: Option<RaftError>,
}

impl DetachedChunks {
    fn put_chunk(&mut self, chunk: Vec<u8>) -> Result<(), RaftError> {
        self.bytes += chunk.len() as u64;
        self.writer.put(snapshot_chunk_key(self.index, self.chunks), chunk)?;
        self.chunks += 1;
        Ok(())
    }

    /// Stores what is left, makes every chunk durable and returns the size of the whole data.
    fn finish(&mut self) -> Result<u64, RaftError> {
        let rest = std::mem::take(&mut self.buf);
        self.put_chunk(rest)?;
        self.writer.flush()?;
        Ok(self.bytes)
    }
}

impl std::io::Write for DetachedChunks {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        while self.buf.len() >= SNAPSHOT_DATA_CHUNK {
            let rest = self.buf.split_off(SNAPSHOT_DATA_CHUNK);
            let chunk = std::mem::replace(&mut self.buf, rest);
            if let Err(e) = self.put_chunk(chunk) {
                let error = std::io::Error::other(e.to_string());
                self.failed = Some(e);
                return Err(error);
            }
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The key of the log entry at `index`.
pub fn log_key(index: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(LOG_PREFIX);
    key.extend_from_slice(&index.to_be_bytes());
    key
}

/// The index of the log entry `key` names (`None`: not a log entry's key).
fn log_index(key: &[u8]) -> Option<u64> {
    match key {
        [LOG_PREFIX, index @ ..] => Some(u64::from_be_bytes(index.try_into().ok()?)),
        _ => None,
    }
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
    /// The newest snapshot's metadata; its data stays on disk.
    snapshot: SnapshotMetadata,
    /// Index and term of the entry just before the first one kept.
    truncated: (u64, u64),
    entries: VecDeque<Entry>,
    /// Set when raft asked for a snapshot newer than the one we hold.
    snapshot_wanted: Arc<AtomicBool>,
    /// Indexes of replaced snapshots whose data is deleted after the next sync.
    stale_snapshots: Vec<u64>,
    /// Syncs made, and the time they took (for the manager's metrics).
    syncs: Arc<SyncStats>,
}

/// How long the log's durable syncs (one per batch of raft writes) took, in seconds: kept
/// outside [`crate::RaftStatus`], which moves with every write and wakes its watchers when it
/// changes.
#[derive(Debug)]
pub struct SyncStats {
    pub latency: prometheus_client::metrics::histogram::Histogram,
}

impl Default for SyncStats {
    fn default() -> Self {
        // 50 µs to about 1.6 s.
        let buckets = prometheus_client::metrics::histogram::exponential_buckets(0.000_05, 2.0, 16);
        SyncStats { latency: prometheus_client::metrics::histogram::Histogram::new(buckets) }
    }
}

impl<D: Durable> RaftStorage<D> {
    /// Loads what the durable store holds. An empty store gives an empty, uninitialised log.
    pub fn open(durable: D) -> Result<Self, RaftError> {
        let mut storage = RaftStorage {
            durable,
            hard_state: HardState::default(),
            conf_state: ConfState::default(),
            members: Members::new(),
            snapshot: SnapshotMetadata::default(),
            truncated: (0, 0),
            entries: VecDeque::new(),
            snapshot_wanted: Arc::new(AtomicBool::new(false)),
            stale_snapshots: Vec::new(),
            syncs: Arc::default(),
        };
        for (key, value) in storage.durable.scan(META_PREFIX)? {
            if key == KEY_HARD_STATE {
                storage.hard_state = decode("hard state", &value)?;
            } else if key == KEY_CONF_STATE {
                storage.conf_state = decode("conf state", &value)?;
            } else if key == KEY_MEMBERS {
                storage.members =
                    serde_json::from_slice(&value).map_err(|e| RaftError::Corrupt(format!("members: {e}")))?;
            } else if key == KEY_SNAPSHOT {
                storage.snapshot = decode::<Snapshot>("snapshot", &value)?.take_metadata();
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
        for (key, value) in storage.durable.scan(&[LOG_PREFIX])? {
            let Some(index) = log_index(&key) else {
                return Err(RaftError::Corrupt(format!("unexpected key {:?}", String::from_utf8_lossy(&key))));
            };
            // Compaction leaves entries at or below the truncation point on disk where deleting
            // them is not cheap (see `Durable::discard_log_before`).
            if index > storage.truncated.0 {
                storage.entries.push_back(decode("log entry", &value)?);
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
        let snap_index = storage.snapshot.index;
        // Data of other snapshots is left over from a crash between writing a snapshot and
        // deleting the one it replaced.
        let current = snapshot_data_prefix(snap_index);
        let leftovers: Vec<Op> = storage
            .durable
            .keys(SNAPSHOT_DATA_PREFIX)?
            .into_iter()
            .filter(|k| !k.starts_with(&current))
            .map(Op::Delete)
            .collect();
        if !leftovers.is_empty() {
            storage.durable.write(leftovers)?;
        }
        // Entries a crash kept between a compaction and their discarding.
        storage.durable.discard_log_before(storage.truncated.0 + 1)?;
        if storage.hard_state.commit < snap_index {
            storage.hard_state.commit = snap_index;
        }
        // Every append writes its entries before the hard state that commits them, so a crash
        // never leaves a commit index past the log's end: missing committed entries mean the
        // files lost data (raft-rs would panic on it later).
        if storage.hard_state.commit > storage.log_end() {
            return Err(RaftError::Corrupt(format!(
                "entries up to index {} were committed but the log ends at {}: committed entries are missing",
                storage.hard_state.commit,
                storage.log_end()
            )));
        }
        Ok(storage)
    }

    /// The index of the last entry on disk (or of the snapshot when the log is empty).
    pub fn log_end(&self) -> u64 {
        self.last().max(self.snapshot.index)
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

    /// Index, term and configuration of the newest snapshot (index 0: none yet).
    pub fn snapshot_metadata(&self) -> &SnapshotMetadata {
        &self.snapshot
    }

    /// The newest snapshot's data, read from disk.
    pub fn snapshot_data(&self) -> Result<Option<Vec<u8>>, RaftError> {
        let chunks = self.durable.keys(&snapshot_data_prefix(self.snapshot.index))?;
        if !chunks.is_empty() {
            let mut data = Vec::new();
            for (number, key) in chunks.iter().enumerate() {
                if *key != snapshot_chunk_key(self.snapshot.index, number as u32) {
                    return Err(RaftError::Corrupt(format!("snapshot data chunk {number} is missing")));
                }
                let chunk =
                    self.durable.get(key)?.ok_or_else(|| RaftError::Corrupt("snapshot chunk vanished".into()))?;
                data.extend_from_slice(&chunk);
            }
            return Ok(Some(data));
        }
        // A data dir written before the data had its own key keeps it inside the metadata.
        let Some(bytes) = self.durable.get(KEY_SNAPSHOT)? else { return Ok(None) };
        let mut snapshot: Snapshot = decode("snapshot", &bytes)?;
        Ok((!snapshot.get_data().is_empty()).then(|| snapshot.take_data().to_vec()))
    }

    /// The index to compact the log to after a snapshot at `index` so that at most
    /// `keep_entries` entries and about `keep_bytes` bytes of entries stay below it: large
    /// entries (a pass creating thousands of tasks) must not pin hundreds of megabytes.
    pub fn compaction_point(&self, index: u64, keep_entries: u64, keep_bytes: u64) -> u64 {
        let mut compact_to = index.min(self.last());
        let mut kept = 0u64;
        while compact_to > self.truncated.0 && index - compact_to < keep_entries {
            let entry = &self.entries[(compact_to - self.truncated.0 - 1) as usize];
            kept += (entry.data.len() + entry.context.len()) as u64;
            if kept > keep_bytes {
                break;
            }
            compact_to -= 1;
        }
        compact_to
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
        // Newest first, then the new entries oldest first: whatever prefix of these a crash
        // keeps, the log on disk is contiguous and a prefix of either the old or the new log.
        let mut ops = Vec::with_capacity(entries.len() + 4);
        for index in (first.index..=self.last()).rev() {
            ops.push(Op::Delete(log_key(index)));
        }
        let keep = (first.index - self.truncated.0 - 1) as usize;
        self.entries.truncate(keep);
        for entry in entries {
            ops.push(Op::Put(log_key(entry.index), encode(entry)));
            self.entries.push_back(entry.clone());
        }
        self.durable.write_in_order(ops)
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
        // Entries above the snapshot go first, newest first: raft-rs installs a snapshot only
        // when the log lacks its index or holds another term there, so none of them is
        // committed, and any prefix of these deletes a crash keeps leaves a prefix of the old
        // log. Entries at or below the snapshot are ignored once its metadata is durable.
        let above: Vec<Op> = (meta.index + 1..=self.last()).rev().map(|i| Op::Delete(log_key(i))).collect();
        self.durable.write_in_order(above)?;
        self.entries.clear();
        self.truncated = (meta.index, meta.term);
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        self.conf_state = meta.get_conf_state().clone();
        self.members = members.clone();
        self.supersede_snapshot_data(meta.index);
        self.snapshot = meta.clone();
        let mut writer = self.snapshot_writer(meta.index);
        std::io::Write::write_all(&mut writer, snapshot.get_data())
            .map_err(|e| RaftError::Storage(format!("writing the snapshot at {}: {e}", meta.index)))?;
        writer.finish()?;
        let meta_ops = self.meta_ops();
        self.durable.write(meta_ops)?;
        self.durable.discard_log_before(meta.index + 1)
    }

    /// Where the state machine writes the data of a snapshot at `index`, before
    /// [`RaftStorage::save_snapshot`] records it.
    /// Serialises the data of the snapshot at `index` with `write` on a thread of its own, storing
    /// it chunk by chunk as it comes and making it durable there, if the durable store can (see
    /// [`Durable::detached_snapshot_writer`]); the receiver then yields the data's size, or why it
    /// failed. `Err`: write it with [`RaftStorage::snapshot_writer`] instead (`write` is handed
    /// back).
    pub fn write_snapshot_detached(
        &self,
        index: u64,
        write: crate::SnapshotWriteFn,
    ) -> Result<std::sync::mpsc::Receiver<Result<u64, RaftError>>, crate::SnapshotWriteFn> {
        let Some(writer) = self.durable.detached_snapshot_writer() else { return Err(write) };
        let (done, receiver) = std::sync::mpsc::sync_channel(1);
        let spawned = std::thread::Builder::new().name("raft-snapshot".into()).spawn(move || {
            let mut chunks = DetachedChunks { writer, index, buf: Vec::new(), chunks: 0, bytes: 0, failed: None };
            let serialised = write(&mut chunks);
            let written = match (serialised, chunks.failed.take()) {
                (_, Some(stored)) => Err(stored),
                (Err(e), None) => Err(RaftError::Storage(format!("serialising the snapshot at {index}: {e}"))),
                (Ok(()), None) => chunks.finish(),
            };
            let _ = done.send(written);
        });
        match spawned {
            Ok(_) => Ok(receiver),
            // No thread to be had: the writer was moved into the closure and is gone with it, so
            // say so; the caller takes the snapshot again inline.
            Err(e) => {
                tracing::warn!(index, error = %e, "no thread for the snapshot write; writing it inline next time");
                let (failed, receiver) = std::sync::mpsc::sync_channel(1);
                let _ = failed.send(Err(RaftError::Storage(format!("spawning the snapshot writer: {e}"))));
                Ok(receiver)
            }
        }
    }

    /// Data of a snapshot at `index` that will never be named by the metadata (a newer
    /// snapshot was installed meanwhile): deleted after the next sync.
    pub fn discard_snapshot_data(&mut self, index: u64) {
        if index != self.snapshot.index {
            self.stale_snapshots.push(index);
        }
    }

    pub fn snapshot_writer(&mut self, index: u64) -> SnapshotWriter<'_, D> {
        SnapshotWriter { durable: &mut self.durable, index, buf: Vec::new(), chunks: 0, bytes: 0 }
    }

    /// Records a snapshot the local state machine made at `meta.index`, whose data was written
    /// through [`RaftStorage::snapshot_writer`], and drops log entries up to `compact_to` (kept
    /// below the snapshot so slow followers can still catch up from the log).
    pub fn save_snapshot(&mut self, meta: SnapshotMetadata, compact_to: u64) -> Result<(), RaftError> {
        let compact_to = compact_to.min(meta.index);
        self.supersede_snapshot_data(meta.index);
        self.snapshot = meta;
        let compacts = compact_to > self.truncated.0;
        if compacts {
            let term = self.term(compact_to).map_err(|e| RaftError::Storage(e.to_string()))?;
            self.entries.drain(..(compact_to - self.truncated.0) as usize);
            self.truncated = (compact_to, term);
        }
        let meta_ops = self.meta_ops();
        self.durable.write(meta_ops)?;
        if compacts {
            self.durable.discard_log_before(compact_to + 1)?;
        }
        Ok(())
    }

    fn meta_ops(&self) -> Vec<Op> {
        let mut truncated = Vec::with_capacity(16);
        truncated.extend_from_slice(&self.truncated.0.to_be_bytes());
        truncated.extend_from_slice(&self.truncated.1.to_be_bytes());
        let mut snapshot = Snapshot::default();
        snapshot.set_metadata(self.snapshot.clone());
        vec![
            Op::Put(KEY_SNAPSHOT.to_vec(), encode(&snapshot)),
            Op::Put(KEY_TRUNCATED.to_vec(), truncated),
            Op::Put(KEY_HARD_STATE.to_vec(), encode(&self.hard_state)),
            Op::Put(KEY_CONF_STATE.to_vec(), encode(&self.conf_state)),
            Op::Put(KEY_MEMBERS.to_vec(), serde_json::to_vec(&self.members).expect("members serialise")),
        ]
    }

    /// The syncs made so far (shared: it goes on counting).
    pub fn sync_stats(&self) -> Arc<SyncStats> {
        self.syncs.clone()
    }

    pub fn sync(&mut self) -> Result<(), RaftError> {
        let started = tokio::time::Instant::now();
        self.durable.sync()?;
        self.syncs.latency.observe(started.elapsed().as_secs_f64());
        // The metadata naming the newer snapshot is durable now, so older data may go.
        for index in std::mem::take(&mut self.stale_snapshots) {
            let stale = self.durable.keys(&snapshot_data_prefix(index))?;
            self.durable.write(stale.into_iter().map(Op::Delete).collect())?;
        }
        Ok(())
    }

    /// Notes that the snapshot data of the current snapshot is replaced by the one at `index`.
    fn supersede_snapshot_data(&mut self, index: u64) {
        if self.snapshot.index != 0 && self.snapshot.index != index {
            self.stale_snapshots.push(self.snapshot.index);
        }
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
        if self.snapshot.index >= request_index && self.snapshot.index > 0 {
            let data = self
                .snapshot_data()
                .map_err(|e| raft::Error::Store(RaftStorageError::Other(Box::new(e))))?
                .ok_or_else(|| {
                    raft::Error::Store(RaftStorageError::Other(Box::new(RaftError::Corrupt(
                        "the snapshot's data is missing".into(),
                    ))))
                })?;
            let mut snapshot = Snapshot::default();
            snapshot.set_metadata(self.snapshot.clone());
            snapshot.set_data(data.into());
            return Ok(snapshot);
        }
        // The engine notices the flag and snapshots the state machine at its applied index.
        self.snapshot_wanted.store(true, Ordering::SeqCst);
        Err(raft::Error::Store(RaftStorageError::SnapshotTemporarilyUnavailable))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, bytes: usize) -> Entry {
        Entry { index, term: 1, data: vec![b'x'; bytes].into(), ..Default::default() }
    }

    fn writes(data: Vec<u8>) -> crate::SnapshotWriteFn {
        Box::new(move |out| out.write_all(&data))
    }

    fn big_state() -> Vec<u8> {
        (0..SNAPSHOT_DATA_CHUNK * 2 + 10).map(|i| (i % 251) as u8).collect()
    }

    fn bootstrapped<D: Durable>(durable: D) -> RaftStorage<D> {
        let mut storage = RaftStorage::open(durable).unwrap();
        let mut meta = SnapshotMetadata { index: 1, term: 1, ..Default::default() };
        meta.set_conf_state(ConfState::from((vec![1], vec![])));
        let mut snapshot = Snapshot::default();
        snapshot.set_metadata(meta);
        snapshot.set_data(b"state-at-1".to_vec().into());
        storage.apply_snapshot(&snapshot, &Members::new()).unwrap();
        storage.sync().unwrap();
        storage
    }

    /// Every file under the store's directory, concatenated.
    fn files_bytes(dir: &std::path::Path) -> Vec<u8> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(files_bytes(&path));
            } else {
                out.extend(std::fs::read(&path).unwrap());
            }
        }
        out
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    /// Sealed, the log, the snapshot and the hard state never reach the files in the clear;
    /// the store opens only with its key; a store written in the clear is sealed when it is
    /// first opened with a key.
    #[test]
    fn a_store_opened_with_a_key_keeps_nothing_in_the_clear() {
        let marker = b"service-name-in-the-clear";
        let entry_with = |index: u64| Entry { index, term: 1, data: marker.to_vec().into(), ..Default::default() };
        let big_marked: Vec<u8> = big_state().into_iter().chain(marker.iter().copied()).collect();
        let key = DataKey::generate();
        let sealed_dir = tempfile::tempdir().unwrap();
        {
            let mut storage = bootstrapped(SledDurable::open_with_key(sealed_dir.path(), Some(key.clone())).unwrap());
            storage.append(&(2..=10).map(entry_with).collect::<Vec<_>>()).unwrap();
            let done = storage.write_snapshot_detached(8, writes(big_marked.clone())).ok().expect("detached");
            done.recv().unwrap().unwrap();
            storage.save_snapshot(SnapshotMetadata { index: 8, term: 1, ..Default::default() }, 6).unwrap();
            storage.sync().unwrap();
            assert_eq!(storage.durable.get(&log_key(9)).unwrap().map(|v| contains(&v, marker)), Some(true));
        }
        assert!(!contains(&files_bytes(sealed_dir.path()), marker), "nothing in the clear on disk");
        let refused = SledDurable::open(sealed_dir.path()).err().expect("refused without the key");
        assert!(refused.to_string().contains("is encrypted: it opens only with this manager's data key"), "{refused}");
        let wrong =
            RaftStorage::open(SledDurable::open_with_key(sealed_dir.path(), Some(DataKey::generate())).unwrap());
        assert!(wrong.is_err(), "another key opens nothing");
        let storage = RaftStorage::open(SledDurable::open_with_key(sealed_dir.path(), Some(key)).unwrap()).unwrap();
        assert_eq!(storage.snapshot_data().unwrap(), Some(big_marked.clone()));
        assert_eq!(storage.last_index().unwrap(), 10);
        drop(storage);

        // A data dir from before encryption at rest: sealed on its first open with a key.
        let plain_dir = tempfile::tempdir().unwrap();
        {
            let mut storage = bootstrapped(SledDurable::open(plain_dir.path()).unwrap());
            storage.append(&(2..=5).map(entry_with).collect::<Vec<_>>()).unwrap();
            storage.sync().unwrap();
        }
        assert!(contains(&files_bytes(plain_dir.path()), marker), "the old store is in the clear");
        let key = DataKey::generate();
        let storage =
            RaftStorage::open(SledDurable::open_with_key(plain_dir.path(), Some(key.clone())).unwrap()).unwrap();
        assert_eq!(storage.last_index().unwrap(), 5);
        drop(storage);
        let storage = RaftStorage::open(SledDurable::open_with_key(plain_dir.path(), Some(key)).unwrap()).unwrap();
        assert_eq!(storage.entries(2, 6, None, GetEntriesContext::empty(false)).unwrap().len(), 4);
    }

    #[test]
    fn snapshot_data_is_read_from_disk_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut storage = bootstrapped(SledDurable::open(dir.path()).unwrap());
            let entries: Vec<Entry> = (2..=10).map(|i| entry(i, 10)).collect();
            storage.append(&entries).unwrap();
            let meta = SnapshotMetadata { index: 8, term: 1, ..Default::default() };
            // Larger than a chunk, so it is stored in several.
            let mut writer = storage.snapshot_writer(8);
            std::io::Write::write_all(&mut writer, &big_state()).unwrap();
            writer.finish().unwrap();
            storage.save_snapshot(meta, 6).unwrap();
            storage.sync().unwrap();
            storage.sync().unwrap();
            // The bootstrap snapshot's data is gone once the new metadata is durable.
            assert!(storage.durable.keys(&snapshot_data_prefix(1)).unwrap().is_empty());
        }
        let storage = RaftStorage::open(reopen(dir.path())).unwrap();
        assert_eq!(storage.snapshot_metadata().index, 8);
        assert_eq!(storage.durable.keys(&snapshot_data_prefix(8)).unwrap().len(), 3);
        assert_eq!(storage.snapshot_data().unwrap(), Some(big_state()));
        assert_eq!(storage.first_index().unwrap(), 7);
        assert_eq!(storage.last_index().unwrap(), 10);
        let snapshot = Storage::snapshot(&storage, 8, 2).unwrap();
        assert_eq!(snapshot.get_metadata().index, 8);
        assert_eq!(snapshot.get_data(), big_state().as_slice());
        // A newer snapshot than the one held is asked of the engine.
        assert!(Storage::snapshot(&storage, 9, 2).is_err());
        assert!(storage.snapshot_wanted());
    }

    /// The data written on the snapshot writer's own thread is what a reopen reads, in the same
    /// chunks; data the metadata never named (superseded) is deleted after the next sync; the
    /// in-memory store has no such thread and hands the writer back.
    #[test]
    fn snapshot_data_written_off_the_raft_thread_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut storage = bootstrapped(SledDurable::open(dir.path()).unwrap());
            let entries: Vec<Entry> = (2..=10).map(|i| entry(i, 10)).collect();
            storage.append(&entries).unwrap();
            let done =
                storage.write_snapshot_detached(8, writes(big_state())).ok().expect("sled writes on its own thread");
            assert_eq!(done.recv().unwrap().unwrap(), big_state().len() as u64);
            storage.save_snapshot(SnapshotMetadata { index: 8, term: 1, ..Default::default() }, 6).unwrap();
            storage.sync().unwrap();
            // A snapshot superseded before its metadata was written leaves no data behind.
            let done =
                storage.write_snapshot_detached(9, writes(big_state())).ok().expect("sled writes on its own thread");
            done.recv().unwrap().unwrap();
            storage.discard_snapshot_data(9);
            storage.sync().unwrap();
            assert!(storage.durable.keys(&snapshot_data_prefix(9)).unwrap().is_empty());
        }
        let storage = RaftStorage::open(reopen(dir.path())).unwrap();
        assert_eq!(storage.snapshot_metadata().index, 8);
        assert_eq!(storage.durable.keys(&snapshot_data_prefix(8)).unwrap().len(), 3);
        assert_eq!(storage.snapshot_data().unwrap(), Some(big_state()));
        // A serialiser that fails leaves the snapshot unwritten and says why.
        let failing: crate::SnapshotWriteFn = Box::new(|out| {
            out.write_all(&big_state())?;
            Err(std::io::Error::other("the state machine could not serialise"))
        });
        let done = storage.write_snapshot_detached(10, failing).ok().expect("sled writes on its own thread");
        let error = done.recv().unwrap().unwrap_err();
        assert!(matches!(error, RaftError::Storage(_)), "{error:?}");
        let memory = bootstrapped(MemDurable::default());
        assert!(memory.write_snapshot_detached(8, writes(big_state())).is_err());
    }

    /// Opens a sled dir again in the same process. sled's IO threads may still hold the database
    /// (and with it the lock on its files) for a moment after the last handle is dropped; a
    /// manager never reopens in-process, a restart is a new process.
    fn reopen(path: &std::path::Path) -> SledDurable {
        for _ in 0..500 {
            match SledDurable::open(path) {
                Ok(durable) => return durable,
                Err(e) if e.to_string().contains("could not acquire lock") => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => panic!("reopening {}: {e}", path.display()),
            }
        }
        panic!("{} stayed locked for 5 s after its handle was dropped", path.display())
    }

    fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
        HardState { term, vote, commit, ..Default::default() }
    }

    fn termed(index: u64, term: u64) -> Entry {
        Entry { index, term, data: format!("{index}@{term}").into_bytes().into(), ..Default::default() }
    }

    /// A follower replaces a conflicting suffix and moves its hard state in one Ready; the power
    /// fails before the sync, after any number of those writes reached the disk.
    #[test]
    fn every_crash_prefix_of_a_conflicting_append_is_a_contiguous_old_or_new_log() {
        let old: Vec<Entry> = (2..=6).map(|i| termed(i, 1)).collect();
        let new: Vec<Entry> = (4..=8).map(|i| termed(i, 2)).collect();
        let durable = MemDurable::default();
        let mut storage = bootstrapped(durable.clone());
        storage.append(&old).unwrap();
        storage.set_hard_state(&hard_state(1, 1, 3)).unwrap();
        storage.sync().unwrap();
        storage.append(&new).unwrap();
        storage.set_hard_state(&hard_state(2, 0, 7)).unwrap();
        let units = durable.unsynced_units();
        assert!(units >= new.len() + 4, "the append was not written op by op ({units} units)");
        for kept in 0..=units {
            let reopened = RaftStorage::open(durable.crash_keeping(kept))
                .unwrap_or_else(|e| panic!("keeping {kept} of {units} writes: {e}"));
            let log: Vec<Entry> = reopened.entries.iter().cloned().collect();
            let old_prefix = old.starts_with(&log);
            let new_prefix = log.len() >= 2 && log[..2] == old[..2] && new.starts_with(&log[2..]);
            assert!(old_prefix || new_prefix, "keeping {kept} of {units} writes left the log {log:?}");
            let hs = reopened.hard_state();
            assert!(hs.commit <= reopened.last(), "keeping {kept}: commit {} beyond the log", hs.commit);
            if hs.term == 2 {
                assert_eq!(log, [&old[..2], &new[..]].concat(), "the new hard state came before the entries");
            }
        }
    }

    #[test]
    fn ordered_writes_reach_sled_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut storage = bootstrapped(SledDurable::open(dir.path()).unwrap());
            storage.append(&(2..=6).map(|i| termed(i, 1)).collect::<Vec<_>>()).unwrap();
            storage.set_hard_state(&hard_state(1, 1, 3)).unwrap();
            storage.sync().unwrap();
            assert!(storage.durable.atomic_groups.is_empty(), "entries and a hard state need no batch");
            storage.append(&(4..=8).map(|i| termed(i, 2)).collect::<Vec<_>>()).unwrap();
            storage.set_hard_state(&hard_state(2, 0, 7)).unwrap();
            // Reads before the sync see the pending writes.
            assert_eq!(storage.durable.get(&log_key(4)).unwrap(), Some(encode(&termed(4, 2))));
            storage.sync().unwrap();
        }
        let storage = RaftStorage::open(reopen(dir.path())).unwrap();
        let terms: Vec<(u64, u64)> = storage.entries.iter().map(|e| (e.index, e.term)).collect();
        assert_eq!(terms, [(2, 1), (3, 1), (4, 2), (5, 2), (6, 2), (7, 2), (8, 2)]);
        assert_eq!(storage.hard_state(), &hard_state(2, 0, 7));
    }

    #[test]
    fn a_data_dir_with_the_data_inside_the_snapshot_metadata_still_opens() {
        let durable = MemDurable::default();
        let mut snapshot = Snapshot::default();
        snapshot.mut_metadata().index = 5;
        snapshot.mut_metadata().term = 2;
        snapshot.mut_metadata().set_conf_state(ConfState::from((vec![1], vec![])));
        snapshot.set_data(b"old-layout".to_vec().into());
        let mut writer = durable.clone();
        writer.write(vec![Op::Put(KEY_SNAPSHOT.to_vec(), encode(&snapshot))]).unwrap();
        let storage = RaftStorage::open(durable).unwrap();
        assert_eq!(storage.snapshot_metadata().index, 5);
        assert_eq!(storage.snapshot_data().unwrap().as_deref(), Some(&b"old-layout"[..]));
    }

    /// Compaction frees the log's sled trees that lie wholly below the new first index, and
    /// only once the metadata naming that index is durable; entries left in a partly compacted
    /// tree are ignored when the log loads.
    #[test]
    fn compaction_drops_whole_log_segments_and_ignores_what_it_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let last = 2 * LOG_SEGMENT_ENTRIES + 100;
        let compact_to = 2 * LOG_SEGMENT_ENTRIES + 10;
        {
            let mut storage = bootstrapped(SledDurable::open(dir.path()).unwrap());
            let entries: Vec<Entry> = (2..=last).map(|i| termed(i, 1)).collect();
            storage.append(&entries).unwrap();
            storage.sync().unwrap();
            assert_eq!(storage.durable.log_segments.len(), 3);
            storage
                .save_snapshot(SnapshotMetadata { index: compact_to + 20, term: 1, ..Default::default() }, compact_to)
                .unwrap();
            // Nothing is freed before the metadata is durable.
            assert_eq!(storage.durable.log_segments.len(), 3);
            storage.sync().unwrap();
            assert_eq!(storage.durable.log_segments.len(), 1);
            // The last segment still holds entries at and below the truncation point.
            assert!(storage.durable.get(&log_key(compact_to)).unwrap().is_some());
            assert_eq!(storage.first_index().unwrap(), compact_to + 1);
        }
        let storage = RaftStorage::open(reopen(dir.path())).unwrap();
        assert_eq!(storage.first_index().unwrap(), compact_to + 1);
        assert_eq!(storage.last_index().unwrap(), last);
        let loaded: Vec<Entry> = storage.entries.iter().cloned().collect();
        assert_eq!(loaded, (compact_to + 1..=last).map(|i| termed(i, 1)).collect::<Vec<_>>());
    }

    /// Large entries close a segment early, so a partly compacted segment never leaves much more
    /// than `LOG_SEGMENT_BYTES` on disk.
    #[test]
    fn large_entries_start_a_new_log_segment_once_one_holds_enough_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let big = (LOG_SEGMENT_BYTES * 3 / 4) as usize;
        let mut storage = bootstrapped(SledDurable::open(dir.path()).unwrap());
        storage.append(&(2..=4).map(|i| entry(i, big)).collect::<Vec<_>>()).unwrap();
        storage.sync().unwrap();
        // 2 and 3 fill the first segment past its budget; 4 starts the next.
        assert_eq!(storage.durable.log_segments.keys().copied().collect::<Vec<_>>(), [2, 4]);
        storage.save_snapshot(SnapshotMetadata { index: 4, term: 1, ..Default::default() }, 3).unwrap();
        storage.sync().unwrap();
        assert_eq!(storage.durable.log_segments.keys().copied().collect::<Vec<_>>(), [4]);
        drop(storage);
        let storage = RaftStorage::open(reopen(dir.path())).unwrap();
        assert_eq!((storage.first_index().unwrap(), storage.last_index().unwrap()), (4, 4));
        assert_eq!(storage.entries[0], entry(4, big));
    }

    /// A bootstrapped in-memory log holding entries 2..=`last` of term 1, synced.
    fn synced_log_in_memory(last: u64) -> (MemDurable, RaftStorage<MemDurable>, Vec<Entry>) {
        let durable = MemDurable::default();
        let mut storage = bootstrapped(durable.clone());
        let entries: Vec<Entry> = (2..=last).map(|i| termed(i, 1)).collect();
        storage.append(&entries).unwrap();
        storage.sync().unwrap();
        (durable, storage, entries)
    }

    /// A crash at any point of a compaction leaves a log that opens, holding either the old
    /// first index or the new one, and the same entries above it.
    #[test]
    fn every_crash_prefix_of_a_compaction_opens_with_the_old_or_the_new_log() {
        let (durable, mut storage, entries) = synced_log_in_memory(20);
        storage.save_snapshot(SnapshotMetadata { index: 15, term: 1, ..Default::default() }, 12).unwrap();
        let units = durable.unsynced_units();
        assert!(units > 11, "the discarded entries were not deleted one by one ({units} units)");
        for kept in 0..=units {
            let reopened = RaftStorage::open(durable.crash_keeping(kept))
                .unwrap_or_else(|e| panic!("keeping {kept} of {units} writes: {e}"));
            let first = reopened.first_index().unwrap();
            assert!(first == 2 || first == 13, "keeping {kept}: first index {first}");
            let loaded: Vec<Entry> = reopened.entries.iter().cloned().collect();
            assert_eq!(loaded, entries[(first - 2) as usize..], "keeping {kept}");
        }
    }

    /// A follower installs a snapshot over a log that holds another term at its index: the
    /// entries above go, and whatever part of that a crash keeps, the log opens as a prefix of
    /// the old one or as the snapshot.
    #[test]
    fn every_crash_prefix_of_installing_a_snapshot_is_the_old_log_or_the_snapshot() {
        let (durable, mut storage, old) = synced_log_in_memory(10);
        let mut snapshot = Snapshot::default();
        snapshot.mut_metadata().index = 6;
        snapshot.mut_metadata().term = 2;
        snapshot.mut_metadata().set_conf_state(ConfState::from((vec![1], vec![])));
        snapshot.set_data(b"state-at-6".to_vec().into());
        storage.apply_snapshot(&snapshot, &Members::new()).unwrap();
        let units = durable.unsynced_units();
        for kept in 0..=units {
            let reopened = RaftStorage::open(durable.crash_keeping(kept))
                .unwrap_or_else(|e| panic!("keeping {kept} of {units} writes: {e}"));
            let loaded: Vec<Entry> = reopened.entries.iter().cloned().collect();
            if reopened.snapshot_metadata().index == 6 {
                assert_eq!((reopened.first_index().unwrap(), reopened.last_index().unwrap()), (7, 6), "keeping {kept}");
                assert_eq!(reopened.snapshot_data().unwrap().as_deref(), Some(&b"state-at-6"[..]));
            } else {
                assert!(old.starts_with(&loaded), "keeping {kept} of {units} writes left the log {loaded:?}");
            }
        }
        storage.sync().unwrap();
        let reopened = RaftStorage::open(durable.crash()).unwrap();
        assert_eq!(reopened.snapshot_metadata().index, 6);
        assert_eq!(reopened.last_index().unwrap(), 6);
    }

    /// An older shoal kept the log in the `raft` tree; opening its data dir moves the entries to
    /// segment trees and loses none.
    #[test]
    fn a_data_dir_with_the_log_in_the_main_tree_is_moved_to_segments() {
        let dir = tempfile::tempdir().unwrap();
        let last = LOG_SEGMENT_ENTRIES + 5;
        {
            let mut storage = bootstrapped(SledDurable::open(dir.path()).unwrap());
            storage.set_hard_state(&hard_state(1, 1, 3)).unwrap();
            storage.sync().unwrap();
        }
        {
            // Written as the older layout did: entries among the metadata.
            let db = (0..500)
                .find_map(|_| {
                    let opened = sled::open(dir.path()).ok();
                    if opened.is_none() {
                        // Still locked by the handle just dropped (see `reopen`).
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    opened
                })
                .expect("the data dir stayed locked");
            let tree = db.open_tree("raft").unwrap();
            for i in 2..=last {
                tree.insert(log_key(i), encode(&termed(i, 1))).unwrap();
            }
            db.flush().unwrap();
        }
        let durable = reopen(dir.path());
        assert_eq!(durable.tree.scan_prefix([LOG_PREFIX]).count(), 0, "entries stayed in the main tree");
        assert_eq!(durable.log_segments.len(), 2);
        let storage = RaftStorage::open(durable).unwrap();
        assert_eq!((storage.first_index().unwrap(), storage.last_index().unwrap()), (2, last));
        assert_eq!(storage.entries[0], termed(2, 1));
        assert_eq!(storage.hard_state(), &hard_state(1, 1, 3));
        drop(storage);
        let storage = RaftStorage::open(reopen(dir.path())).unwrap();
        assert_eq!(storage.last_index().unwrap(), last);
    }

    #[test]
    fn an_atomic_write_of_a_log_entry_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ops = || vec![Op::Put(KEY_HARD_STATE.to_vec(), vec![]), Op::Put(log_key(7), vec![1])];
        for mut durable in
            [Box::new(MemDurable::default()) as Box<dyn Durable>, Box::new(SledDurable::open(dir.path()).unwrap())]
        {
            let error = durable.write(ops()).unwrap_err().to_string();
            assert!(error.contains("log entry 7 in an atomic write"), "{error}");
            assert_eq!(durable.get(KEY_HARD_STATE).unwrap(), None, "a refused write changed the store");
        }
    }

    #[test]
    fn compaction_keeps_at_most_the_entry_and_byte_budget() {
        let mut storage = bootstrapped(MemDurable::default());
        let entries: Vec<Entry> = (2..=21).map(|i| entry(i, 1000)).collect();
        storage.append(&entries).unwrap();
        // Entries are small enough: the count decides.
        assert_eq!(storage.compaction_point(21, 5, 1 << 20), 16);
        // 3.5 entries' worth of bytes: three are kept below index 21.
        assert_eq!(storage.compaction_point(21, 500, 3500), 18);
        // Never below what is already compacted.
        assert_eq!(storage.compaction_point(21, 500, 1 << 20), 1);
        assert_eq!(storage.compaction_point(21, 0, 1 << 20), 21);
    }
}
