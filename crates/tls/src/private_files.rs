//! Files only their owner may read: data directories and TLS bundles.
//!
//! A manager's data dir holds the cluster CA's private key and both join tokens (inside the raft
//! log), so anyone who can read it can mint an admin certificate. Every directory shoal keeps
//! state in is 0700 and every file under it 0600, whatever the process umask: directories are
//! created 0700 before anything is written in them, shoal's own files are created 0600, and
//! [`harden`] repairs what others (sled, which creates its files with the umask; a `chmod`; a
//! restore from a backup) left looser.
//!
//! The directory's mode is what protects files created while a process runs (sled's blob files
//! follow the umask): no other user can reach them through a 0700 directory.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// Mode of every directory shoal keeps state in.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file in them.
pub const FILE_MODE: u32 = 0o600;

/// A file system operation on one path failed.
#[derive(Debug, thiserror::Error)]
#[error("{}: {what}: {source}", path.display())]
pub struct PrivateFileError {
    pub path: PathBuf,
    pub what: &'static str,
    #[source]
    pub source: std::io::Error,
}

fn fail<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(std::io::Error) -> PrivateFileError + 'a {
    move |source| PrivateFileError { path: path.to_path_buf(), what, source }
}

/// A path whose mode [`harden`] tightened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loosened {
    pub path: PathBuf,
    /// The permission bits it had (`0o644`, …).
    pub old_mode: u32,
    /// The permission bits it has now.
    pub new_mode: u32,
}

/// Creates `dir` (and missing parents) with mode 0700, or sets an existing `dir` to 0700. The
/// mode is given at creation, so the directory is never open to others, not even for an instant;
/// it is set again afterwards because creation is subject to the umask.
pub fn create_dir(dir: &Path) -> Result<(), PrivateFileError> {
    fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir).map_err(fail(dir, "cannot create it"))?;
    set_mode(dir, DIR_MODE)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), PrivateFileError> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(fail(path, "cannot change its mode"))
}

/// Sets `dir` and every directory under it to 0700 and every file under it to 0600, returning
/// what was looser (or otherwise different) before. Symbolic links are neither followed nor
/// changed (shoal creates none; a link's own mode means nothing on Linux).
pub fn harden(dir: &Path) -> Result<Vec<Loosened>, PrivateFileError> {
    let mut changed = Vec::new();
    harden_into(dir, &mut changed)?;
    Ok(changed)
}

fn harden_into(path: &Path, changed: &mut Vec<Loosened>) -> Result<(), PrivateFileError> {
    let meta = fs::symlink_metadata(path).map_err(fail(path, "cannot read its metadata"))?;
    let file_type = meta.file_type();
    let wanted = if file_type.is_dir() {
        DIR_MODE
    } else if file_type.is_file() {
        FILE_MODE
    } else {
        return Ok(());
    };
    let old_mode = meta.permissions().mode() & 0o7777;
    if old_mode != wanted {
        set_mode(path, wanted)?;
        changed.push(Loosened { path: path.to_path_buf(), old_mode, new_mode: wanted });
    }
    if file_type.is_dir() {
        for entry in fs::read_dir(path).map_err(fail(path, "cannot list it"))? {
            let entry = entry.map_err(fail(path, "cannot list it"))?;
            harden_into(&entry.path(), changed)?;
        }
    }
    Ok(())
}

/// [`harden`], logging a warning for every path that was looser: someone (or an older shoal)
/// left it readable by others, which the operator should know about.
pub fn harden_and_warn(dir: &Path) -> Result<Vec<Loosened>, PrivateFileError> {
    let changed = harden(dir)?;
    for c in &changed {
        tracing::warn!(
            path = %c.path.display(),
            old_mode = format_args!("{:04o}", c.old_mode),
            new_mode = format_args!("{:04o}", c.new_mode),
            "repaired the permissions of a private file: it was accessible to other users"
        );
    }
    Ok(changed)
}

/// Writes `contents` to `path` with mode 0600: through a temporary file beside it, fsynced and
/// renamed over `path`, then the directory fsynced, so a crash leaves the old file or the new
/// one, never half of one. The parent directory must exist.
pub fn write(path: &Path, contents: &[u8]) -> Result<(), PrivateFileError> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(&tmp)
        .map_err(fail(&tmp, "cannot create it"))?;
    // The mode given at creation is masked by the umask and ignored for a temporary file left by
    // a crash: set it explicitly before any byte is written.
    file.set_permissions(fs::Permissions::from_mode(FILE_MODE)).map_err(fail(&tmp, "cannot change its mode"))?;
    file.write_all(contents).map_err(fail(&tmp, "cannot write it"))?;
    file.sync_all().map_err(fail(&tmp, "cannot sync it"))?;
    fs::rename(&tmp, path).map_err(fail(path, "cannot rename the temporary file over it"))?;
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(fail(dir, "cannot sync the directory"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn harden_tightens_every_directory_and_file_and_reports_what_it_changed() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        create_dir(&dir.join("raft")).unwrap();
        write(&dir.join("manager.json"), b"{}").unwrap();
        fs::write(dir.join("raft").join("db"), b"x").unwrap();
        fs::set_permissions(dir.join("raft").join("db"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.join("link")).unwrap();

        let changed = harden(&dir).unwrap();
        let mut summary: Vec<(PathBuf, u32)> = changed.iter().map(|c| (c.path.clone(), c.old_mode)).collect();
        summary.sort();
        assert_eq!(summary, vec![(dir.clone(), 0o755), (dir.join("raft").join("db"), 0o644)]);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("raft")), 0o700);
        assert_eq!(mode(&dir.join("raft").join("db")), 0o600);
        assert_eq!(mode(&dir.join("manager.json")), 0o600);
        assert!(harden(&dir).unwrap().is_empty(), "a second pass has nothing to do");
    }

    #[test]
    fn write_replaces_a_file_and_a_stale_temporary_file_does_not_lend_it_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        fs::write(dir.path().join(".key.pem.tmp"), b"old").unwrap();
        fs::set_permissions(dir.path().join(".key.pem.tmp"), fs::Permissions::from_mode(0o666)).unwrap();
        write(&path, b"secret").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"secret");
        assert_eq!(mode(&path), 0o600);
        assert!(!dir.path().join(".key.pem.tmp").exists());
    }

    #[test]
    fn create_dir_tightens_an_existing_directory() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        create_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
    }
}
