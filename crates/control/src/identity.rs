//! A manager's data directory: `manager.json` (who this manager is) and `raft/` (sled).
//!
//! The directory holds the cluster CA's key and the join tokens (in the raft log), so it is kept
//! 0700 and every file in it 0600 (see `shoal_tls::private_files`).

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};
use shoal_raft::{RaftStorage, SledDurable};
use shoal_tls::private_files;

use crate::ManagerError;

pub const IDENTITY_FILE: &str = "manager.json";
pub const RAFT_DIR: &str = "raft";
const FORMAT: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    pub format: u32,
    pub cluster_id: String,
    pub node_id: String,
    pub raft_id: u64,
    pub addr: String,
}

impl Identity {
    pub fn new(cluster_id: String, node_id: String, raft_id: u64, addr: String) -> Self {
        Identity { format: FORMAT, cluster_id, node_id, raft_id, addr }
    }
}

pub enum DataDir {
    /// No manager state: initialise a cluster or join one.
    Empty,
    /// A manager's state: resume it.
    Existing(Identity),
}

/// Decides what a data directory holds; anything unexpected is an error, never overwritten.
/// A missing directory is created 0700 (before anything is written in it); a manager's directory
/// has the modes of everything in it repaired, with a warning for each (a foreign directory is
/// left as it is).
pub fn inspect(dir: &Path) -> Result<DataDir, ManagerError> {
    let err = |msg: String| ManagerError::DataDir(format!("data dir {}: {msg}", dir.display()));
    let private = |e: private_files::PrivateFileError| err(e.to_string());
    if !dir.exists() {
        private_files::create_dir(dir).map_err(private)?;
        return Ok(DataDir::Empty);
    }
    if !dir.is_dir() {
        return Err(err("is not a directory".into()));
    }
    let identity_path = dir.join(IDENTITY_FILE);
    if !identity_path.exists() {
        let mut entries = fs::read_dir(dir).map_err(|e| err(format!("cannot read it: {e}")))?;
        if entries.next().is_some() {
            return Err(err(format!(
                "is not empty but holds no shoal manager state ({IDENTITY_FILE} is missing); use an empty directory"
            )));
        }
        // An empty directory someone made for us: nothing in it was exposed, so no warning.
        private_files::create_dir(dir).map_err(private)?;
        return Ok(DataDir::Empty);
    }
    private_files::harden_and_warn(dir).map_err(private)?;
    let bytes = fs::read(&identity_path).map_err(|e| err(format!("cannot read {IDENTITY_FILE}: {e}")))?;
    if bytes.is_empty() {
        return Err(err(format!("{} is empty (truncated?)", identity_path.display())));
    }
    let identity: Identity = serde_json::from_slice(&bytes)
        .map_err(|e| err(format!("{} is corrupt or not a shoal manager's ({e})", identity_path.display())))?;
    if identity.format != FORMAT {
        return Err(err(format!(
            "{IDENTITY_FILE} has format {} but this shoal-manager reads format {FORMAT}",
            identity.format
        )));
    }
    if identity.raft_id == 0 || identity.node_id.is_empty() {
        return Err(err(format!("{IDENTITY_FILE} is corrupt (missing node or raft id)")));
    }
    if !dir.join(RAFT_DIR).is_dir() {
        return Err(err(format!("{RAFT_DIR}/ is missing; the raft log of this manager is gone")));
    }
    Ok(DataDir::Existing(identity))
}

/// Writes `manager.json` durably and privately (0600; temp file, fsync, rename, fsync of the
/// directory).
pub fn write(dir: &Path, identity: &Identity) -> Result<(), ManagerError> {
    let bytes = serde_json::to_vec_pretty(identity).expect("identity serialises");
    private_files::write(&dir.join(IDENTITY_FILE), &bytes)
        .map_err(|e| ManagerError::DataDir(format!("data dir {}: writing {IDENTITY_FILE}: {e}", dir.display())))
}

/// Written by a manager that stopped cleanly: how far its raft log reached, so the next start can
/// tell a log that lost entries (a truncated or damaged `raft/db`, which sled's recovery takes for
/// a torn write and silently shortens) from one that did not. Removed once checked, so a crash
/// later is never compared with it.
pub const STOPPED_FILE: &str = "stopped.json";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Stopped {
    last_index: u64,
    /// The length of sled's `db` file once closed. sled reads a shortened file as a write torn
    /// by a crash and recovers what precedes the cut without a word.
    db_bytes: u64,
}

/// A raft storage error as a data dir error naming sled's files: damage is reported as such.
pub fn raft_error(dir: &Path, e: shoal_raft::RaftError) -> ManagerError {
    let raft = dir.join(RAFT_DIR);
    match e {
        // sled keeps the log in `db` (and its settings in `conf`, which it names when that is the problem).
        shoal_raft::RaftError::Corrupt(m) => ManagerError::DataDir(format!(
            "data dir {}: the raft log {} is damaged: {m}",
            dir.display(),
            raft.join("db").display()
        )),
        shoal_raft::RaftError::Storage(m) => ManagerError::DataDir(format!(
            "data dir {}: {m} (is another shoal-manager using this data dir?)",
            dir.display()
        )),
        other => ManagerError::Raft(other),
    }
}

/// Opens sled in `path` (a manager's `raft/`) and makes the files sled just created with the
/// umask private. Quietly: sled creating files is expected, not a sign of tampering, and nobody
/// else could reach them through the 0700 data dir.
pub fn open_sled(dir: &Path, key: &shoal_raft::DataKey) -> Result<SledDurable, ManagerError> {
    let path = dir.join(RAFT_DIR);
    let durable = SledDurable::open_with_key(&path, Some(key.clone())).map_err(|e| raft_error(dir, e))?;
    let repaired = private_files::harden(&path).map_err(|e| ManagerError::DataDir(e.to_string()))?;
    if !repaired.is_empty() {
        tracing::debug!(files = repaired.len(), "made the files sled created private");
    }
    Ok(durable)
}

/// Opens an existing manager's raft log and checks it holds what the data dir says it should:
/// some raft state at all, and every entry it had when the manager last stopped cleanly.
pub fn open_existing_raft(dir: &Path, key: &shoal_raft::DataKey) -> Result<RaftStorage<SledDurable>, ManagerError> {
    let db = dir.join(RAFT_DIR).join("db");
    let damaged =
        |m: String| ManagerError::DataDir(format!("data dir {}: {} is damaged: {m}", dir.display(), db.display()));
    let stopped_path = dir.join(STOPPED_FILE);
    let stopped: Option<Stopped> = match fs::read(&stopped_path) {
        Ok(bytes) => Some(serde_json::from_slice(&bytes).map_err(|e| {
            ManagerError::DataDir(format!("data dir {}: {} is corrupt ({e})", dir.display(), stopped_path.display()))
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(ManagerError::DataDir(format!(
                "data dir {}: cannot read {}: {e}",
                dir.display(),
                stopped_path.display()
            )));
        }
    };
    // Before sled opens it: sled would take the cut for a torn write and recover silently.
    if let Some(stopped) = &stopped {
        let len = fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
        if len < stopped.db_bytes {
            return Err(damaged(format!(
                "it is {len} bytes long but was {} bytes when this manager last stopped (truncated?)",
                stopped.db_bytes
            )));
        }
    }
    let durable = open_sled(dir, key)?;
    let storage = shoal_raft::storage::catch_panic("reading the raft log", || RaftStorage::open(durable))
        .map_err(|e| raft_error(dir, e))?;
    // Even a manager that crashed right after joining has its member list there (it is written
    // before manager.json).
    if storage.members().is_empty() && !storage.is_initialised() {
        return Err(damaged("it holds no raft state although manager.json names this manager (truncated?)".into()));
    }
    if let Some(stopped) = stopped {
        if storage.log_end() < stopped.last_index {
            return Err(damaged(format!(
                "the raft log ends at index {} but reached {} when this manager last stopped: entries were lost (truncated?)",
                storage.log_end(),
                stopped.last_index
            )));
        }
        // Checked: a crash later must not be compared with this stop.
        fs::remove_file(&stopped_path).map_err(|e| {
            ManagerError::DataDir(format!("data dir {}: removing {}: {e}", dir.display(), stopped_path.display()))
        })?;
    }
    Ok(storage)
}

/// Records [`STOPPED_FILE`] after a clean stop. The log is read back from disk (sled must be
/// closed), so what is recorded is what is durable, never entries still in memory.
pub fn record_stopped(dir: &Path, key: &shoal_raft::DataKey) -> Result<(), ManagerError> {
    let storage = shoal_raft::storage::catch_panic("reading the raft log", || {
        RaftStorage::open(SledDurable::open_with_key(&dir.join(RAFT_DIR), Some(key.clone()))?)
    })
    .map_err(|e| raft_error(dir, e))?;
    let last_index = storage.log_end();
    drop(storage);
    let db = dir.join(RAFT_DIR).join("db");
    let db_bytes = fs::metadata(&db).map_err(|e| ManagerError::DataDir(format!("{}: {e}", db.display())))?.len();
    let stopped = Stopped { last_index, db_bytes };
    private_files::harden(&dir.join(RAFT_DIR)).map_err(|e| ManagerError::DataDir(e.to_string()))?;
    let bytes = serde_json::to_vec(&stopped).expect("serialises");
    private_files::write(&dir.join(STOPPED_FILE), &bytes).map_err(|e| ManagerError::DataDir(e.to_string()))
}
