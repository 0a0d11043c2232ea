//! Server-owned files: directories and files only the server's user can read. A leaf module,
//! used by the plan store, the audit trail, the secret store and the run dirs.

use std::path::Path;

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
