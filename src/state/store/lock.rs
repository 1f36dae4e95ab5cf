//! The applier lock: one `apply` or `watch` per state file.
//!
//! It is an OS lock (`flock(2)` through [`File::try_lock`]) on a file beside
//! the state file, not a flag inside it. The kernel drops it when the holder
//! exits however it exits, `kill -9` included, so there is never a stale lock
//! to clean up by hand. It is separate from redb's own lock on the state file
//! because that one is held only for the length of a transaction, so that
//! readers such as `get` and `plan` keep working while an applier runs.
//!
//! The holder writes who it is into the lock file, so that a refused applier
//! can say whom it is waiting for.

use super::{StateError, create_parent};
use crate::model::Timestamp;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Proof that this process is the only applier of a state file. Dropping it releases the lock.
#[derive(Debug)]
#[must_use = "the applier lock is released as soon as it is dropped"]
pub struct ApplyLock {
    file: File,
    path: PathBuf,
}

impl ApplyLock {
    /// The lock file (the state file's path with `.lock` appended).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ApplyLock {
    fn drop(&mut self) {
        // Forget the holder while still holding the lock, so that the text
        // never describes a process that is gone. The file itself stays:
        // unlinking a lock file races with a process that has just opened it
        // and would then lock an inode nobody else can see.
        let _ = self.file.set_len(0);
    }
}

/// `<state>.lock`, beside the state file.
pub(super) fn lock_path(state: &Path) -> PathBuf {
    let mut name = state.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

pub(super) fn acquire(state: &Path, command: &str) -> Result<ApplyLock, StateError> {
    let path = lock_path(state);
    let io = |action: &'static str| {
        move |cause: std::io::Error| StateError::Io {
            path: state.to_path_buf(),
            action,
            cause,
        }
    };
    create_parent(state)?;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        // The holder's text is replaced only once the lock is ours.
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io("open the applier lock file"))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            // Best effort: the lock itself is the answer, the text only explains it.
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let holder = if holder.is_empty() {
                // The holder has locked but not yet written its line.
                "a process that has not recorded itself yet".to_owned()
            } else {
                holder.to_owned()
            };
            return Err(StateError::Locked {
                path: state.to_path_buf(),
                holder,
            });
        }
        Err(TryLockError::Error(e)) => return Err(io("lock the applier lock file")(e)),
    }
    let line = format!(
        "pid {} ({}) since {}\n",
        std::process::id(),
        command,
        Timestamp::now().rfc3339()
    );
    file.set_len(0)
        .and_then(|()| file.write_all(line.as_bytes()))
        .map_err(io("record the holder in the applier lock file"))?;
    Ok(ApplyLock { file, path })
}
