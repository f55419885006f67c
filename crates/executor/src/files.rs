//! The files of a task's secrets and configs on the node: written under a directory only root
//! can enter (a tmpfs by default, see the agent's `--secrets-dir`), one directory per task, and
//! bind-mounted read-only into the container. They are removed when the task ends.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bollard::models::{Mount as DockerMount, MountType};
use shoal_types::TaskFile;

use crate::ExecError;

/// Where a task's files go under `root`.
pub fn task_dir(root: &Path, task_id: &str) -> PathBuf {
    root.join(task_id)
}

/// Writes `files` for `task_id` under `root` (0700 directories, each file with its mode and
/// owner) and returns the bind mounts that put them in the container.
pub fn write(root: &Path, task_id: &str, files: &[TaskFile]) -> Result<Vec<DockerMount>, ExecError> {
    let failed = |what: &str, path: &Path, e: std::io::Error| {
        ExecError::Fatal(format!("{what} {} for the task's secrets and configs: {e}", path.display()))
    };
    // The root may sit in a directory everyone writes to (/dev/shm): one that exists must be a
    // real directory of this agent's user, or another user could read or redirect the files.
    match std::fs::symlink_metadata(root) {
        Ok(meta) => {
            let own = own_uid();
            if meta.file_type().is_symlink() || !meta.is_dir() || own.is_some_and(|uid| meta.uid() != uid) {
                return Err(ExecError::Fatal(format!(
                    "{} is not a directory of this agent's user (uid {}; a symlink or another user's): remove it, it may have been planted",
                    root.display(),
                    meta.uid()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(root).map_err(|e| failed("creating", root, e))?;
        }
        Err(e) => return Err(failed("reading", root, e)),
    }
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| failed("restricting", root, e))?;
    // Made afresh inside the private root: nothing there can be another user's.
    let dir = task_dir(root, task_id);
    remove(root, task_id)?;
    std::fs::create_dir(&dir).map_err(|e| failed("creating", &dir, e))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| failed("restricting", &dir, e))?;
    let mut mounts = Vec::with_capacity(files.len());
    for (i, file) in files.iter().enumerate() {
        let path = dir.join(i.to_string());
        // Written 0600 first, owned and opened up to its mode only once complete.
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| failed("writing", &path, e))?;
        out.write_all(&file.data).map_err(|e| failed("writing", &path, e))?;
        drop(out);
        std::os::unix::fs::chown(&path, Some(file.uid), Some(file.gid)).map_err(|e| {
            ExecError::Fatal(format!(
                "{} {}: cannot give its file to uid {} gid {} ({e}; the agent must run as root to set owners)",
                file.kind, file.source, file.uid, file.gid
            ))
        })?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(file.mode))
            .map_err(|e| failed("setting the mode of", &path, e))?;
        mounts.push(DockerMount {
            target: Some(file.path.clone()),
            source: Some(path.display().to_string()),
            typ: Some(MountType::BIND),
            read_only: Some(true),
            ..DockerMount::default()
        });
    }
    Ok(mounts)
}

/// This process's user id (its files' owner).
fn own_uid() -> Option<u32> {
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// Removes the task's files (nothing there is fine).
pub fn remove(root: &Path, task_id: &str) -> Result<(), ExecError> {
    let dir = task_dir(root, task_id);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ExecError::Fatal(format!("removing {}: {e}", dir.display()))),
    }
}

#[cfg(test)]
mod tests {
    use shoal_types::DataKind;

    use super::*;

    #[test]
    fn files_are_written_private_with_their_mode_and_removed() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path().join("secrets");
        let file = |mode, data: &[u8]| TaskFile {
            kind: DataKind::Secret,
            source: "pw".into(),
            path: "/run/secrets/pw".into(),
            uid: nix_uid(),
            gid: nix_gid(),
            mode,
            data: data.to_vec(),
        };
        let mounts = write(&root, "t1", &[file(0o400, b"hunter2"), file(0o444, b"conf")]).unwrap();
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[0].target.as_deref(), Some("/run/secrets/pw"));
        assert_eq!(mounts[0].read_only, Some(true));
        let source = PathBuf::from(mounts[0].source.clone().unwrap());
        assert_eq!(std::fs::read(&source).unwrap(), b"hunter2");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&source), 0o400);
        assert_eq!(mode(&root), 0o700, "only root enters the directory");
        assert_eq!(mode(&task_dir(&root, "t1")), 0o700);
        remove(&root, "t1").unwrap();
        assert!(!task_dir(&root, "t1").exists());
        remove(&root, "t1").unwrap();
    }

    #[test]
    fn a_planted_root_is_refused() {
        let base = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let root = base.path().join("planted");
        std::os::unix::fs::symlink(elsewhere.path(), &root).unwrap();
        let file = TaskFile {
            kind: DataKind::Secret,
            source: "pw".into(),
            path: "/run/secrets/pw".into(),
            uid: nix_uid(),
            gid: nix_gid(),
            mode: 0o400,
            data: b"x".to_vec(),
        };
        let err = write(&root, "t1", &[file]).unwrap_err().to_string();
        assert!(err.contains("is not a directory of this agent's user"), "{err}");
        assert!(std::fs::read_dir(elsewhere.path()).unwrap().next().is_none(), "nothing written through the link");
    }

    fn nix_uid() -> u32 {
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap())
    }

    fn nix_gid() -> u32 {
        std::os::unix::fs::MetadataExt::gid(&std::fs::metadata("/proc/self").unwrap())
    }
}
