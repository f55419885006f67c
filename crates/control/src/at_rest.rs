//! The manager's data key: what seals its raft data at rest (see `shoal_raft::at_rest`), and
//! how it is kept in the data dir.
//!
//! `raft-key.json` holds the data key sealed with a key-encryption key. Without autolock that
//! key is `raft-kek`, a private file beside it: a copy of the `raft/` directory alone reveals
//! nothing, a copy of the whole data dir everything (as in Swarm without autolock). With
//! autolock (`--autolock`) the key-encryption key is the cluster's unlock key, which is never
//! written to this manager's disk: a locked manager starts only with `--unlock-key`, and a copy
//! of its whole data dir reveals nothing.

use std::path::Path;

use base64::Engine;
use serde::{Deserialize, Serialize};
use shoal_raft::DataKey;
use shoal_raft::at_rest::{KEY_LEN, random_bytes};
use shoal_tls::private_files;

use crate::ManagerError;

pub const KEY_FILE: &str = "raft-key.json";
pub const KEK_FILE: &str = "raft-kek";
/// The new data key while a rotation seals the raft data anew (see [`rotate`]).
pub const NEXT_KEY_FILE: &str = "raft-key.next.json";
/// What an unlock key looks like: `SHLUNLOCK-` and 32 bytes in URL-safe base64.
const UNLOCK_PREFIX: &str = "SHLUNLOCK-";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    /// The data key is sealed with the unlock key (not stored here) instead of `raft-kek`.
    autolock: bool,
    /// The data key, sealed, in base64.
    wrapped: String,
}

/// A new unlock key, as the operator keeps it.
pub fn new_unlock_key() -> String {
    format!("{UNLOCK_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes()))
}

/// SHA-256 of an unlock key, in hex: what a joining manager shows of its key.
pub fn unlock_key_digest(text: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, text.trim().as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Refuses a malformed unlock key.
pub fn check_unlock_key(text: &str) -> Result<(), ManagerError> {
    parse_unlock_key(text).map(|_| ())
}

/// The key-encryption key an unlock key stands for.
fn parse_unlock_key(text: &str) -> Result<[u8; KEY_LEN], ManagerError> {
    let bad = || {
        ManagerError::Config(format!(
            "--unlock-key: not an unlock key (expected {UNLOCK_PREFIX} and 43 characters, as `shoal cluster unlock-key` prints it)"
        ))
    };
    let encoded = text.trim().strip_prefix(UNLOCK_PREFIX).ok_or_else(bad)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded).map_err(|_| bad())?;
    bytes.try_into().map_err(|_| bad())
}

fn data_dir_error(dir: &Path, what: String) -> ManagerError {
    ManagerError::DataDir(format!("data dir {}: {what}", dir.display()))
}

/// Makes the data key of a new data dir and writes its files. With `autolock`, it is sealed
/// with `unlock_key` (the cluster's, when joining) or with a new unlock key, returned to be
/// shown once.
pub fn create(dir: &Path, autolock: bool, unlock_key: Option<&str>) -> Result<(DataKey, Option<String>), ManagerError> {
    let key = DataKey::generate();
    let private = |e: private_files::PrivateFileError| data_dir_error(dir, e.to_string());
    let (kek, new_unlock) = if autolock {
        match unlock_key {
            Some(text) => (parse_unlock_key(text)?, None),
            None => {
                let text = new_unlock_key();
                (parse_unlock_key(&text)?, Some(text))
            }
        }
    } else {
        let kek = random_bytes();
        private_files::write(&dir.join(KEK_FILE), &kek).map_err(private)?;
        (kek, None)
    };
    let file = KeyFile { autolock, wrapped: base64::engine::general_purpose::STANDARD.encode(key.wrap(&kek)) };
    let bytes = serde_json::to_vec_pretty(&file).expect("serialises");
    private_files::write(&dir.join(KEY_FILE), &bytes).map_err(private)?;
    Ok((key, new_unlock))
}

/// The data key of an existing data dir. A data dir from before encryption at rest gets one
/// (without autolock); its raft data is sealed when opened.
pub fn load(dir: &Path, unlock_key: Option<&str>) -> Result<DataKey, ManagerError> {
    match std::fs::metadata(dir.join(KEY_FILE)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Only a store in the clear may get a new key; a sealed one lost its key file.
            let raft = dir.join(crate::identity::RAFT_DIR);
            if shoal_raft::SledDurable::is_sealed(&raft).map_err(|e| crate::identity::raft_error(dir, e))? {
                return Err(data_dir_error(
                    dir,
                    format!(
                        "{KEY_FILE} is missing but raft/ is encrypted: restore {KEY_FILE} and {KEK_FILE} from the same backup as raft/"
                    ),
                ));
            }
            tracing::info!("this data dir predates encryption at rest: making its data key");
            create(dir, false, None).map(|(key, _)| key)
        }
        _ => load_from(dir, KEY_FILE, unlock_key),
    }
}

/// Replaces the data key of a stopped manager: a new key, every raft value sealed with it,
/// then the new key becomes the data dir's. A crash on the way leaves [`NEXT_KEY_FILE`], and
/// the manager's next start (or rotation) finishes the job. Returns how many values were sealed
/// anew.
pub fn rotate(dir: &Path, unlock_key: Option<&str>) -> Result<usize, ManagerError> {
    finish_rotation(dir, unlock_key)?;
    let old = load(dir, unlock_key)?;
    // A running manager holds the store's lock: refused before anything is written.
    let raft = dir.join(crate::identity::RAFT_DIR);
    drop(
        shoal_raft::SledDurable::open_with_key(&raft, Some(old.clone()))
            .map_err(|e| crate::identity::raft_error(dir, e))?,
    );
    let autolock = is_autolocked(dir);
    let kek = key_encryption_key(dir, autolock, unlock_key)?;
    let new = DataKey::generate();
    let file = KeyFile { autolock, wrapped: base64::engine::general_purpose::STANDARD.encode(new.wrap(&kek)) };
    private_files::write(&dir.join(NEXT_KEY_FILE), &serde_json::to_vec_pretty(&file).expect("serialises"))
        .map_err(|e| data_dir_error(dir, e.to_string()))?;
    reseal_and_switch(dir, &old, &new)
}

/// Finishes a rotation a crash interrupted (before the raft store is opened).
pub fn finish_rotation(dir: &Path, unlock_key: Option<&str>) -> Result<(), ManagerError> {
    if !dir.join(NEXT_KEY_FILE).exists() {
        return Ok(());
    }
    tracing::warn!("a data key rotation was interrupted; finishing it");
    let old = load_from(dir, KEY_FILE, unlock_key)?;
    let new = load_from(dir, NEXT_KEY_FILE, unlock_key)?;
    reseal_and_switch(dir, &old, &new).map(|_| ())
}

fn reseal_and_switch(dir: &Path, old: &DataKey, new: &DataKey) -> Result<usize, ManagerError> {
    let raft = dir.join(crate::identity::RAFT_DIR);
    let count = shoal_raft::SledDurable::reseal(&raft, old, new).map_err(|e| crate::identity::raft_error(dir, e))?;
    // Files sled made meanwhile follow the umask.
    private_files::harden(&raft).map_err(|e| data_dir_error(dir, e.to_string()))?;
    std::fs::rename(dir.join(NEXT_KEY_FILE), dir.join(KEY_FILE))
        .map_err(|e| data_dir_error(dir, format!("making the new data key current: {e}")))?;
    Ok(count)
}

/// The key that opens a key file: the unlock key with autolock, else `raft-kek`.
fn key_encryption_key(dir: &Path, autolock: bool, unlock_key: Option<&str>) -> Result<[u8; KEY_LEN], ManagerError> {
    if autolock {
        let Some(text) = unlock_key else {
            return Err(ManagerError::Locked(format!(
                "this manager is locked (autolock): start it with --unlock-key KEY or SHOAL_UNLOCK_KEY (`shoal cluster unlock-key` on a running manager shows the key); data dir {}",
                dir.display()
            )));
        };
        return parse_unlock_key(text);
    }
    let kek = std::fs::read(dir.join(KEK_FILE))
        .map_err(|e| data_dir_error(dir, format!("cannot read {KEK_FILE}, the key of {KEY_FILE}: {e}")))?;
    kek.try_into().map_err(|_| data_dir_error(dir, format!("{KEK_FILE} is corrupt (not {KEY_LEN} bytes)")))
}

/// The data key in key file `name` of `dir`.
fn load_from(dir: &Path, name: &str, unlock_key: Option<&str>) -> Result<DataKey, ManagerError> {
    let bytes = std::fs::read(dir.join(name)).map_err(|e| data_dir_error(dir, format!("cannot read {name}: {e}")))?;
    let file: KeyFile =
        serde_json::from_slice(&bytes).map_err(|e| data_dir_error(dir, format!("{name} is corrupt ({e})")))?;
    let wrapped = base64::engine::general_purpose::STANDARD
        .decode(&file.wrapped)
        .map_err(|e| data_dir_error(dir, format!("{name} is corrupt ({e})")))?;
    let kek = key_encryption_key(dir, file.autolock, unlock_key)?;
    DataKey::unwrap(&wrapped, &kek).ok_or_else(|| {
        if file.autolock {
            ManagerError::Locked(format!(
                "the unlock key does not open this manager's data key (data dir {}): it is not this cluster's current unlock key",
                dir.display()
            ))
        } else {
            data_dir_error(dir, format!("{KEK_FILE} does not open {name}: one of them was replaced or damaged"))
        }
    })
}

/// Whether the data dir's key needs the unlock key.
pub fn is_autolocked(dir: &Path) -> bool {
    std::fs::read(dir.join(KEY_FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<KeyFile>(&bytes).ok())
        .is_some_and(|file| file.autolock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_without_autolock_opens_with_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let (key, shown) = create(dir.path(), false, None).unwrap();
        assert!(shown.is_none());
        let loaded = load(dir.path(), None).unwrap();
        assert_eq!(loaded.open(&key.seal(b"x")).unwrap(), b"x");
        std::fs::write(dir.path().join(KEK_FILE), random_bytes()).unwrap();
        let err = load(dir.path(), None).unwrap_err().to_string();
        assert!(err.contains("raft-kek does not open raft-key.json"), "{err}");
    }

    #[test]
    fn an_autolocked_key_opens_only_with_the_unlock_key() {
        let dir = tempfile::tempdir().unwrap();
        let (key, shown) = create(dir.path(), true, None).unwrap();
        let unlock = shown.expect("a new unlock key is shown once");
        assert!(unlock.starts_with("SHLUNLOCK-") && unlock.len() == 10 + 43, "{unlock}");
        assert!(!dir.path().join(KEK_FILE).exists(), "nothing on disk opens it");
        assert!(is_autolocked(dir.path()));
        let locked = load(dir.path(), None).unwrap_err();
        assert!(matches!(locked, ManagerError::Locked(_)), "{locked}");
        assert!(locked.to_string().contains("start it with --unlock-key"), "{locked}");
        let wrong = load(dir.path(), Some(&new_unlock_key())).unwrap_err().to_string();
        assert!(wrong.contains("the unlock key does not open this manager's data key"), "{wrong}");
        let bad = load(dir.path(), Some("hunter2")).unwrap_err().to_string();
        assert!(bad.contains("--unlock-key: not an unlock key"), "{bad}");
        let loaded = load(dir.path(), Some(&unlock)).unwrap();
        assert_eq!(loaded.open(&key.seal(b"x")).unwrap(), b"x");
        // A joining manager seals its own data key with the cluster's unlock key.
        let joined = tempfile::tempdir().unwrap();
        let (_, shown) = create(joined.path(), true, Some(&unlock)).unwrap();
        assert!(shown.is_none());
        assert!(load(joined.path(), Some(&unlock)).is_ok());
    }

    /// A rotation seals every raft value with a new key; one a crash interrupted (the new key
    /// written, some values sealed anew) is finished before the store opens.
    #[test]
    fn a_rotation_seals_everything_anew_and_an_interrupted_one_is_finished() {
        use shoal_raft::{Durable, Op, SledDurable};
        let dir = tempfile::tempdir().unwrap();
        let raft = dir.path().join(crate::identity::RAFT_DIR);
        let (old, _) = create(dir.path(), false, None).unwrap();
        let write = |key: &DataKey, pairs: &[(&[u8], &[u8])]| {
            let mut store = SledDurable::open_with_key(&raft, Some(key.clone())).unwrap();
            store.write(pairs.iter().map(|(k, v)| Op::Put(k.to_vec(), v.to_vec())).collect()).unwrap();
            store.sync().unwrap();
        };
        write(&old, &[(b"m:a", b"alpha"), (b"m:b", b"beta")]);
        let count = rotate(dir.path(), None).unwrap();
        assert!(count >= 2, "{count}");
        let new = load(dir.path(), None).unwrap();
        let store = SledDurable::open_with_key(&raft, Some(new.clone())).unwrap();
        assert_eq!(store.get(b"m:a").unwrap().as_deref(), Some(&b"alpha"[..]));
        assert!(store.get(b"m:b").is_ok());
        drop(store);
        let stale = SledDurable::open_with_key(&raft, Some(old)).unwrap();
        assert!(stale.get(b"m:a").is_err(), "the old key opens nothing any more");
        drop(stale);

        // Interrupted: the next key is written and one value sealed with it, the other not.
        let next = DataKey::generate();
        let kek: [u8; KEY_LEN] = std::fs::read(dir.path().join(KEK_FILE)).unwrap().try_into().unwrap();
        let file =
            KeyFile { autolock: false, wrapped: base64::engine::general_purpose::STANDARD.encode(next.wrap(&kek)) };
        std::fs::write(dir.path().join(NEXT_KEY_FILE), serde_json::to_vec(&file).unwrap()).unwrap();
        write(&next, &[(b"m:c", b"gamma")]);
        finish_rotation(dir.path(), None).unwrap();
        assert!(!dir.path().join(NEXT_KEY_FILE).exists());
        let current = load(dir.path(), None).unwrap();
        let store = SledDurable::open_with_key(&raft, Some(current)).unwrap();
        for (k, v) in [(&b"m:a"[..], &b"alpha"[..]), (b"m:b", b"beta"), (b"m:c", b"gamma")] {
            assert_eq!(store.get(k).unwrap().as_deref(), Some(v));
        }
    }
}
