//! Server-owned files: directories and files only the server's user can read. A leaf module,
//! used by the plan store, the audit trail, the secret store and the run dirs.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Creates `dir` (and its parents) with mode 0700, and makes it 0700 if it existed.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Writes a file only the server's user can read, durably (fsync): for records that must
/// survive a crash.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_private_file(path, bytes)?.sync_all()
}

/// Writes a file only the server's user can read, without fsync: for per-run scratch files
/// that are worthless after a crash.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<std::fs::File> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    Ok(f)
}

/// Trees handed to [`remove_later`] and not yet removed, and their thread's queue.
struct Remover {
    queue: Option<SyncSender<PathBuf>>,
    pending: Mutex<usize>,
    done: Condvar,
}

fn remover() -> &'static Remover {
    static REMOVER: OnceLock<Remover> = OnceLock::new();
    REMOVER.get_or_init(|| {
        // Bounded: a producer faster than the removal (runs that leave many files) removes
        // its own tree inline instead of piling up a backlog.
        let (tx, rx) = sync_channel::<PathBuf>(64);
        let queue = std::thread::Builder::new()
            .name("remove-later".into())
            .spawn(move || {
                for path in rx {
                    let _ = std::fs::remove_dir_all(&path);
                    let r = remover();
                    let mut pending = r.pending.lock().unwrap_or_else(|p| p.into_inner());
                    *pending = pending.saturating_sub(1);
                    r.done.notify_all();
                }
            })
            .ok()
            .map(|_| tx);
        Remover {
            queue,
            pending: Mutex::new(0),
            done: Condvar::new(),
        }
    })
}

/// Removes a directory tree on a background thread, one tree after another. A run's private
/// directory is removed after its result has been returned, not before: on a journalled disk
/// its removal takes milliseconds, a few percent of a small `terraform validate`. Removal is
/// std's (by descriptor, never following a link the run planted). A binary calls [`drain`]
/// before it exits; whatever a crash cuts short stays in the instance's runs dir, which the
/// next start-up on that state dir removes.
pub fn remove_later(path: PathBuf) {
    let r = remover();
    let path = match &r.queue {
        Some(tx) => {
            *r.pending.lock().unwrap_or_else(|p| p.into_inner()) += 1;
            match tx.try_send(path) {
                Ok(()) => return,
                Err(TrySendError::Full(path) | TrySendError::Disconnected(path)) => {
                    let mut pending = r.pending.lock().unwrap_or_else(|p| p.into_inner());
                    *pending = pending.saturating_sub(1);
                    path
                }
            }
        }
        None => path,
    };
    let _ = std::fs::remove_dir_all(&path);
}

/// Waits until every tree handed to [`remove_later`] is removed, or `limit` has passed; true
/// when none is left.
pub fn drain(limit: Duration) -> bool {
    let r = remover();
    let deadline = Instant::now() + limit;
    let mut pending = r.pending.lock().unwrap_or_else(|p| p.into_inner());
    while *pending > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        pending = match r.done.wait_timeout(pending, left) {
            Ok((guard, _)) => guard,
            Err(poisoned) => poisoned.into_inner().0,
        };
    }
    true
}

#[cfg(test)]
mod remove_tests {
    use super::*;

    #[test]
    fn a_tree_given_to_remove_later_is_gone_soon_without_following_its_links() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), "x").unwrap();
        let base = tempfile::tempdir().unwrap();
        let tree = base.path().join("run");
        std::fs::create_dir_all(tree.join("home/deep")).unwrap();
        std::fs::write(tree.join("home/deep/f"), "y").unwrap();
        std::os::unix::fs::symlink(outside.path(), tree.join("link")).unwrap();
        remove_later(tree.clone());
        assert!(drain(Duration::from_secs(10)), "the removal did not finish");
        assert!(!tree.exists(), "the tree is still there");
        assert!(outside.path().join("keep").exists(), "a link was followed");
    }
}
