//! Exclusive locks on lock files, so that two processes never write the same output at once: the
//! second one stops at once with a message naming the lock file and who holds it.
//!
//! The operating system releases a lock when its process ends, even when killed, so a rerun
//! after a crash (e.g. `rf-train --resume`) finds it free.
use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;

use crate::error::{Error, Result};

/// An exclusive lock, held until dropped.
#[derive(Debug)]
pub struct ExclusiveLock {
    /// The open lock file; closing it releases the lock.
    _file: File,
}

/// Takes the exclusive lock on the file `path`, created (with its folder) if missing, or errors
/// at once when another process holds it: the error names `path` and says `another {holder} now;
/// wait for it to finish or stop it`, so `holder` says what the holder does, e.g.
/// `"rf-train is training this layer"`.
pub fn exclusive(path: &Path, holder: &str) -> Result<ExclusiveLock> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(ExclusiveLock { _file: file }),
        Err(TryLockError::WouldBlock) => Err(Error::format(
            path,
            format!("another {holder} now; wait for it to finish or stop it"),
        )),
        Err(TryLockError::Error(e)) => Err(Error::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_refuses_a_second_taker_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/layer_0.lock");
        let held = exclusive(&path, "rf-train is training this layer").unwrap();
        let err = exclusive(&path, "rf-train is training this layer")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(&path.display().to_string()), "{err}");
        assert!(
            err.contains("another rf-train is training this layer now; wait for it"),
            "{err}"
        );
        drop(held);
        exclusive(&path, "rf-train is training this layer").unwrap();
    }
}
