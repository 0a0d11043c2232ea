//! Server-owned files: directories and files only the server's user can read. A leaf module,
//! used by the plan store, the audit trail, the secret store and the run dirs.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::mpsc::{Sender, channel};

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

/// Removes a directory tree on a background thread, one tree after another. A run's private
/// directory is removed after its result has been returned, not before: on a journalled disk
/// its removal takes milliseconds, a few percent of a small `terraform validate`. Removal is
/// std's (by descriptor, never following a link the run planted). Whatever a process exit cuts
/// short stays in the instance's runs dir, which the next start-up removes.
pub fn remove_later(path: PathBuf) {
    static QUEUE: OnceLock<Option<Sender<PathBuf>>> = OnceLock::new();
    let queue = QUEUE.get_or_init(|| {
        let (tx, rx) = channel::<PathBuf>();
        std::thread::Builder::new()
            .name("remove-later".into())
            .spawn(move || {
                for path in rx {
                    let _ = std::fs::remove_dir_all(&path);
                }
            })
            .ok()
            .map(|_| tx)
    });
    let path = match queue {
        Some(tx) => match tx.send(path) {
            Ok(()) => return,
            Err(failed) => failed.0,
        },
        None => path,
    };
    // No background thread: remove it now.
    let _ = std::fs::remove_dir_all(&path);
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
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while tree.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!tree.exists(), "the tree is still there");
        assert!(outside.path().join("keep").exists(), "a link was followed");
    }
}
