//! Safe extraction of a repository archive (a GitHub tarball) into a fresh directory.
//!
//! An archive is attacker-controlled input: every entry's path is checked lexically (no
//! absolute paths, no `..`, nothing that leaves the destination), symbolic links and hard links
//! must point inside the destination, device files and FIFOs are refused, and the total size,
//! the entry count and the decompressed stream are capped (a gzip bomb stops at the cap). The
//! first path component (GitHub's `owner-repo-sha/`) is stripped. On any refusal the whole
//! destination is removed: a failed extraction leaves nothing behind.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of file content, in total.
    pub max_total_bytes: u64,
    pub max_entries: u64,
    /// Bytes read out of the decompressor (bounds the tar headers and padding too).
    pub max_stream_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_total_bytes: 256 << 20,
            max_entries: 20_000,
            max_stream_bytes: 320 << 20,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("archive entry {0:?}: absolute paths are not allowed")]
    Absolute(String),
    #[error("archive entry {0:?}: the path leaves the extraction directory")]
    Traversal(String),
    #[error(
        "archive entry {entry:?}: a link to {target:?} points outside the extraction directory"
    )]
    LinkOutside { entry: String, target: String },
    #[error("archive entry {0:?}: device files, FIFOs and other special files are not allowed")]
    Special(String),
    #[error("the archive is larger than the limit of {0} bytes")]
    TooLarge(u64),
    #[error("the archive has more than {0} entries")]
    TooManyEntries(u64),
    #[error("the destination {0} already exists; extraction needs a fresh directory")]
    Exists(PathBuf),
    #[error("reading the archive: {0}")]
    Read(String),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Extracted {
    pub files: u64,
    pub bytes: u64,
}

/// A reader that fails once more than `limit` bytes have been read.
struct Capped<R> {
    inner: R,
    left: u64,
    limit: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            return Err(std::io::Error::other(format!(
                "stream exceeds {} bytes",
                self.limit
            )));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Lexically normalizes an entry path with the first component stripped; `None` for the
/// top-level directory itself.
fn entry_path(raw: &Path, shown: &str) -> Result<Option<PathBuf>, ArchiveError> {
    if raw.is_absolute()
        || raw
            .components()
            .any(|c| matches!(c, Component::RootDir | Component::Prefix(_)))
    {
        return Err(ArchiveError::Absolute(shown.to_string()));
    }
    let mut out = PathBuf::new();
    for (i, c) in raw.components().enumerate() {
        match c {
            Component::ParentDir => return Err(ArchiveError::Traversal(shown.to_string())),
            Component::CurDir => {}
            Component::Normal(part) if i > 0 => out.push(part),
            Component::Normal(_) => {}
            _ => return Err(ArchiveError::Absolute(shown.to_string())),
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Whether a link at `entry` (relative to the destination) pointing at `target` stays inside.
fn link_inside(entry: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: i64 = entry.components().count() as i64 - 1;
    for c in target.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            _ => return false,
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

/// Extracts a gzip-compressed tarball into `dest`, which must not exist yet.
pub fn extract_tar_gz(
    archive: impl Read,
    dest: &Path,
    limits: Limits,
) -> Result<Extracted, ArchiveError> {
    if dest.exists() {
        return Err(ArchiveError::Exists(dest.to_path_buf()));
    }
    let result = extract_inner(archive, dest, limits);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(dest);
    }
    result
}

fn extract_inner(
    archive: impl Read,
    dest: &Path,
    limits: Limits,
) -> Result<Extracted, ArchiveError> {
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ArchiveError::Write { path, source }
    };
    crate::plans::create_private_dir(dest).map_err(write_err(dest))?;
    let root = std::fs::canonicalize(dest).map_err(write_err(dest))?;
    let stream = Capped {
        inner: flate2::read::GzDecoder::new(archive),
        left: limits.max_stream_bytes,
        limit: limits.max_stream_bytes,
    };
    let mut tar = tar::Archive::new(stream);
    let mut stats = Extracted::default();
    let mut entries = 0u64;
    let read_err = |e: std::io::Error| {
        if e.to_string().contains("stream exceeds") {
            ArchiveError::TooLarge(limits.max_stream_bytes)
        } else {
            ArchiveError::Read(e.to_string())
        }
    };
    for entry in tar.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        entries += 1;
        if entries > limits.max_entries {
            return Err(ArchiveError::TooManyEntries(limits.max_entries));
        }
        let raw = entry.path().map_err(read_err)?.into_owned();
        let shown = raw.display().to_string();
        let Some(rel) = entry_path(&raw, &shown)? else {
            continue;
        };
        let target = root.join(&rel);
        // The parent must be a real directory inside the destination (not a symlink out).
        let parent = target.parent().unwrap_or(&root).to_path_buf();
        std::fs::create_dir_all(&parent).map_err(write_err(&parent))?;
        let parent_real = std::fs::canonicalize(&parent).map_err(write_err(&parent))?;
        if !parent_real.starts_with(&root) {
            return Err(ArchiveError::Traversal(shown));
        }
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Directory => {
                std::fs::create_dir_all(&target).map_err(write_err(&target))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.header().size().map_err(read_err)?;
                if stats.bytes + size > limits.max_total_bytes {
                    return Err(ArchiveError::TooLarge(limits.max_total_bytes));
                }
                let mode = entry.header().mode().unwrap_or(0o644);
                let mut file = {
                    use std::os::unix::fs::OpenOptionsExt;
                    // create_new: never write through something already there (a planted link).
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(if mode & 0o111 != 0 { 0o700 } else { 0o600 })
                        .custom_flags(libc::O_NOFOLLOW)
                        .open(&target)
                        .map_err(write_err(&target))?
                };
                let copied =
                    std::io::copy(&mut (&mut entry).take(size), &mut file).map_err(read_err)?;
                stats.bytes += copied;
                stats.files += 1;
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(read_err)?
                    .map(|l| l.into_owned())
                    .unwrap_or_default();
                if kind == tar::EntryType::Symlink {
                    if !link_inside(&rel, &link) {
                        return Err(ArchiveError::LinkOutside {
                            entry: shown,
                            target: link.display().to_string(),
                        });
                    }
                    std::os::unix::fs::symlink(&link, &target).map_err(write_err(&target))?;
                } else {
                    // Hard links name another entry of the archive (with its top component).
                    let Some(source_rel) = entry_path(&link, &link.display().to_string())? else {
                        return Err(ArchiveError::Traversal(shown));
                    };
                    let source = root.join(&source_rel);
                    let real =
                        std::fs::canonicalize(&source).map_err(|_| ArchiveError::LinkOutside {
                            entry: shown.clone(),
                            target: link.display().to_string(),
                        })?;
                    if !real.starts_with(&root) || !real.is_file() {
                        return Err(ArchiveError::LinkOutside {
                            entry: shown,
                            target: link.display().to_string(),
                        });
                    }
                    // A copy, not a link: the extracted tree shares no inode with anything.
                    let copied = std::fs::copy(&real, &target).map_err(write_err(&target))?;
                    stats.bytes += copied;
                    stats.files += 1;
                    if stats.bytes > limits.max_total_bytes {
                        return Err(ArchiveError::TooLarge(limits.max_total_bytes));
                    }
                }
            }
            tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => {}
            _ => return Err(ArchiveError::Special(shown)),
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked_lexically() {
        assert_eq!(
            entry_path(Path::new("top/a/b.tf"), "").unwrap(),
            Some(PathBuf::from("a/b.tf"))
        );
        assert_eq!(entry_path(Path::new("top/"), "").unwrap(), None);
        assert!(matches!(
            entry_path(Path::new("top/../x"), ""),
            Err(ArchiveError::Traversal(_))
        ));
        assert!(matches!(
            entry_path(Path::new("/etc/x"), ""),
            Err(ArchiveError::Absolute(_))
        ));
        assert!(link_inside(Path::new("a/link"), Path::new("../b")));
        assert!(!link_inside(Path::new("a/link"), Path::new("../../b")));
        assert!(!link_inside(Path::new("link"), Path::new("/etc/passwd")));
    }
}
