//! A manager's data directory: `manager.json` (who this manager is) and `raft/` (sled).

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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
pub fn inspect(dir: &Path) -> Result<DataDir, ManagerError> {
    let err = |msg: String| ManagerError::DataDir(format!("data dir {}: {msg}", dir.display()));
    if !dir.exists() {
        fs::create_dir_all(dir).map_err(|e| err(format!("cannot create it: {e}")))?;
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
        return Ok(DataDir::Empty);
    }
    let bytes = fs::read(&identity_path).map_err(|e| err(format!("cannot read {IDENTITY_FILE}: {e}")))?;
    let identity: Identity = serde_json::from_slice(&bytes)
        .map_err(|e| err(format!("{IDENTITY_FILE} is corrupt or not a shoal manager's ({e})")))?;
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

/// Writes `manager.json` durably (temp file, fsync, rename, fsync of the directory).
pub fn write(dir: &Path, identity: &Identity) -> Result<(), ManagerError> {
    let err =
        |e: std::io::Error| ManagerError::DataDir(format!("data dir {}: writing {IDENTITY_FILE}: {e}", dir.display()));
    let tmp: PathBuf = dir.join(format!("{IDENTITY_FILE}.tmp"));
    let mut file = fs::File::create(&tmp).map_err(err)?;
    file.write_all(&serde_json::to_vec_pretty(identity).expect("identity serialises")).map_err(err)?;
    file.sync_all().map_err(err)?;
    fs::rename(&tmp, dir.join(IDENTITY_FILE)).map_err(err)?;
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
    Ok(())
}
