//! Safe extraction of a repository archive (a GitHub tarball) into a fresh directory.
//!
//! An archive is attacker-controlled input (any pull request reaches it through the webhook),
//! so extraction never resolves a path by name. The fresh directory is created and opened once;
//! every later write is an `*at()` call relative to a descriptor obtained from it by walking
//! one component at a time with `O_NOFOLLOW | O_DIRECTORY`:
//!
//! - an entry whose parent (at any depth) is a symbolic link or a file is refused, never
//!   followed — an earlier `a -> .` or `a -> /etc` cannot redirect a later `a/x`;
//! - files are created `O_CREAT | O_EXCL | O_NOFOLLOW`: nothing is written through something
//!   already there, and a path taken by an earlier entry is refused (no duplicates);
//! - hard links are made with `linkat` (never a copy through a path) and only to a regular file
//!   extracted earlier, never to a symbolic link;
//! - symbolic links must stay inside: lexically when planted, and once the whole tree exists,
//!   each target is resolved against where the link really is, following the links inside the
//!   tree as the kernel would (`d/up -> ../..` makes `x -> d/up/..` leave the tree, although
//!   it looks harmless);
//! - device files and FIFOs are refused; absolute paths and `..` in entry names too;
//! - the total size, the entry count and the decompressed stream are capped (a gzip bomb stops
//!   at the cap).
//!
//! The entries are written by a dedicated thread that first restricts itself with Landlock to
//! the fresh directory (where the kernel supports it): defence in depth should a bug let a
//! write escape the descriptor walk. The first path component (GitHub's `owner-repo-sha/`) is
//! stripped. On any refusal the fresh directory is emptied and removed, descriptor-relative as
//! well: a refused archive leaves nothing behind, inside or outside.

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, readlinkat};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstat, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, linkat, symlinkat, unlinkat};

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

/// Longest entry path or link target accepted (Linux's `PATH_MAX`).
const MAX_PATH_BYTES: usize = 4096;
/// Deepest entry accepted: bounds the descriptors held while walking and removing.
const MAX_DEPTH: usize = 128;
/// Symbolic links followed while resolving one target (the kernel's own limit).
const MAX_LINK_HOPS: u32 = 40;
/// Lookups spent checking every link target of one archive: a crafted archive cannot make
/// the check itself the denial of service.
const LOOKUP_BUDGET: u64 = 1_000_000;

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
    #[error(
        "archive entry {0:?}: a parent directory is a symbolic link or a file; nothing is \
         written through a link"
    )]
    ThroughLink(String),
    #[error("archive entry {0:?}: the path is already taken by an earlier entry")]
    Duplicate(String),
    #[error(
        "archive entry {entry:?}: a hard link must name a regular file extracted earlier, \
         not {target:?}"
    )]
    HardLinkTarget { entry: String, target: String },
    #[error(
        "archive entry {0:?}: the path or link target is longer than {MAX_PATH_BYTES} bytes or \
         deeper than {MAX_DEPTH} directories"
    )]
    TooDeep(String),
    #[error("the archive has too many symbolic links to check")]
    TooManyLinks,
    #[error("archive entry {0:?}: device files, FIFOs and other special files are not allowed")]
    Special(String),
    #[error("the archive is larger than the limit of {0} bytes")]
    TooLarge(u64),
    #[error("the archive has more than {0} entries")]
    TooManyEntries(u64),
    #[error("the destination {0} already exists; extraction needs a fresh directory")]
    Exists(PathBuf),
    #[error(
        "the destination {0} lies under a symbolic link or a file; refusing to extract through it"
    )]
    UnsafeDestination(PathBuf),
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

/// Whether a link at `entry` (relative to the destination) pointing at `target` stays inside,
/// lexically. A first filter only: [`resolves_inside`] decides on the finished tree.
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

fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

/// Opens the directory `name` in `at`; a symbolic link there is an error (`ELOOP`), not followed.
fn open_dir(at: BorrowedFd<'_>, name: &OsStr) -> nix::Result<OwnedFd> {
    openat(at, name, dir_flags(), Mode::empty())
}

fn file_kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

/// Opens the directory `parts` beneath `top`, one component at a time with `O_NOFOLLOW`: a
/// symbolic link or a file anywhere on the way is an error, never followed. With `create`,
/// missing directories are made (0755).
fn open_beneath(top: BorrowedFd<'_>, parts: &[&OsStr], create: bool) -> nix::Result<OwnedFd> {
    let mut cur = top.try_clone_to_owned().map_err(|_| Errno::EMFILE)?;
    for part in parts {
        cur = match open_dir(cur.as_fd(), part) {
            Err(Errno::ENOENT) if create => {
                match mkdirat(cur.as_fd(), *part, Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(e),
                }
                open_dir(cur.as_fd(), part)?
            }
            r => r?,
        };
    }
    Ok(cur)
}

/// Empties the directory `dir`, depth first, descriptor-relative: a symbolic link inside is
/// removed, never followed.
fn remove_contents(dir: BorrowedFd<'_>) -> nix::Result<()> {
    let mut names: Vec<OsString> = Vec::new();
    {
        let mut d = nix::dir::Dir::openat(dir, ".", dir_flags(), Mode::empty())?;
        for e in d.iter() {
            let e = e?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(OsStr::from_bytes(n).to_os_string());
            }
        }
    }
    for name in names {
        let st = match fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(e),
        };
        if file_kind(&st) == SFlag::S_IFDIR {
            let sub = open_dir(dir, &name)?;
            remove_contents(sub.as_fd())?;
            unlinkat(dir, name.as_os_str(), UnlinkatFlags::RemoveDir)?;
        } else {
            unlinkat(dir, name.as_os_str(), UnlinkatFlags::NoRemoveDir)?;
        }
    }
    Ok(())
}

/// The `Normal` components of a server-chosen relative path; `None` if it has anything else.
fn plain_parts(relative: &Path) -> Option<Vec<&OsStr>> {
    relative
        .components()
        .map(|c| match c {
            Component::Normal(p) => Some(p),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()
        .filter(|p| !p.is_empty())
}

/// Removes the tree at `base/relative` (a fetched repository), walking to it with `O_NOFOLLOW`
/// from `base` and removing descriptor-relative: a link planted on the way is not followed.
/// Nothing there is not an error.
pub fn remove_beneath(base: &Path, relative: &Path) -> std::io::Result<()> {
    let parts = plain_parts(relative).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a plain relative path",
        )
    })?;
    let Some((name, parents)) = parts.split_last() else {
        return Ok(());
    };
    let base_fd = nix::fcntl::open(
        base,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let parent = match open_beneath(base_fd.as_fd(), parents, false) {
        Ok(p) => p,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    match open_dir(parent.as_fd(), name) {
        Ok(dir) => {
            remove_contents(dir.as_fd())?;
            unlinkat(parent.as_fd(), *name, UnlinkatFlags::RemoveDir)?;
        }
        Err(Errno::ENOENT) => {}
        // A link or a file where the tree was: remove that name, nothing it points to.
        Err(Errno::ELOOP | Errno::ENOTDIR) => {
            unlinkat(parent.as_fd(), *name, UnlinkatFlags::NoRemoveDir)?;
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// Extracts a gzip-compressed tarball into `dest`, which must not exist yet; its parent must.
pub fn extract_tar_gz(
    archive: impl Read + Send,
    dest: &Path,
    limits: Limits,
) -> Result<Extracted, ArchiveError> {
    let (Some(base), Some(name)) = (dest.parent(), dest.file_name()) else {
        return Err(ArchiveError::UnsafeDestination(dest.to_path_buf()));
    };
    let base = if base.as_os_str().is_empty() {
        Path::new(".")
    } else {
        base
    };
    extract_beneath(archive, base, Path::new(name), limits, None)
}

/// Extracts a gzip-compressed tarball into `base/relative`, which must not exist yet. `base`
/// is trusted (the workspace root); the directories of `relative` are walked (and created)
/// with `O_NOFOLLOW`, so a link planted in the workspace root cannot redirect the fetch. When
/// given, `marker` (name, content) is written at the top of the tree after a successful
/// extraction, replacing whatever the archive put under that name.
pub fn extract_beneath(
    archive: impl Read + Send,
    base: &Path,
    relative: &Path,
    limits: Limits,
    marker: Option<(&str, &[u8])>,
) -> Result<Extracted, ArchiveError> {
    let dest = base.join(relative);
    let unsafe_dest = || ArchiveError::UnsafeDestination(dest.clone());
    let write_err = |source: Errno| ArchiveError::Write {
        path: dest.clone(),
        source: source.into(),
    };
    let parts = plain_parts(relative).ok_or_else(unsafe_dest)?;
    let (name, parents) = parts.split_last().ok_or_else(unsafe_dest)?;
    let base_fd = nix::fcntl::open(
        base,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(write_err)?;
    let parent = open_beneath(base_fd.as_fd(), parents, true).map_err(|e| match e {
        Errno::ELOOP | Errno::ENOTDIR => unsafe_dest(),
        e => write_err(e),
    })?;
    match mkdirat(parent.as_fd(), *name, Mode::from_bits_truncate(0o700)) {
        Ok(()) => {}
        Err(Errno::EEXIST) => return Err(ArchiveError::Exists(dest.clone())),
        Err(e) => return Err(write_err(e)),
    }
    let top = match open_dir(parent.as_fd(), name) {
        Ok(fd) => fd,
        Err(e) => return Err(write_err(e)),
    };
    let _ = fchmod(top.as_fd(), Mode::from_bits_truncate(0o700));
    let identity = fstat(top.as_fd()).map_err(write_err)?;

    let top_fd = top.as_fd();
    let result = std::thread::scope(|s| {
        s.spawn(move || {
            let _ = confine_thread_to(top_fd);
            let r = extract_entries(top_fd, archive, limits).and_then(|stats| {
                if let Some((name, content)) = marker {
                    write_marker(top_fd, OsStr::new(name), content).map_err(|source| {
                        ArchiveError::Write {
                            path: PathBuf::from(name),
                            source: source.into(),
                        }
                    })?;
                }
                Ok(stats)
            });
            if r.is_err() {
                let _ = remove_contents(top_fd);
            }
            r
        })
        .join()
        .unwrap_or_else(|_| Err(ArchiveError::Read("the extraction thread panicked".into())))
    });
    if result.is_err() {
        // Again from here (the thread may have died half-way); a no-op when already empty.
        let _ = remove_contents(top.as_fd());
        // Only the directory created above is removed, not whatever might stand in its place.
        if let Ok(st) = fstatat(parent.as_fd(), *name, AtFlags::AT_SYMLINK_NOFOLLOW)
            && (st.st_dev, st.st_ino) == (identity.st_dev, identity.st_ino)
        {
            let _ = unlinkat(parent.as_fd(), *name, UnlinkatFlags::RemoveDir);
        }
    }
    result
}

/// Restricts the calling thread (only it: Landlock domains are per thread unless asked
/// otherwise) to the directory `dir`: no file outside it can be opened, created or removed,
/// and no TCP used. Best effort: on a kernel without Landlock the descriptor walk alone holds.
/// `true` when the kernel enforces it fully.
fn confine_thread_to(dir: BorrowedFd<'_>) -> bool {
    use landlock::{
        ABI, Access, AccessFs, AccessNet, PathBeneath, Ruleset, RulesetAttr, RulesetCreatedAttr,
    };
    let abi = ABI::V6;
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .and_then(|r| r.handle_access(AccessNet::from_all(abi)))
        .and_then(|r| r.create())
        .and_then(|r| r.add_rule(PathBeneath::new(dir, AccessFs::from_all(abi))))
        .and_then(|r| r.restrict_self());
    match status {
        Ok(s) => s.ruleset == landlock::RulesetStatus::FullyEnforced,
        Err(e) => {
            tracing::debug!("archive extraction runs without Landlock: {e}");
            false
        }
    }
}

/// Replaces whatever is at `name` in `top` with a fresh private file holding `content`.
fn write_marker(top: BorrowedFd<'_>, name: &OsStr, content: &[u8]) -> nix::Result<()> {
    match fstatat(top, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if file_kind(&st) == SFlag::S_IFDIR => {
            let sub = open_dir(top, name)?;
            remove_contents(sub.as_fd())?;
            unlinkat(top, name, UnlinkatFlags::RemoveDir)?;
        }
        Ok(_) => unlinkat(top, name, UnlinkatFlags::NoRemoveDir)?,
        Err(Errno::ENOENT) => {}
        Err(e) => return Err(e),
    }
    let fd = openat(
        top,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )?;
    std::fs::File::from(fd)
        .write_all(content)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
}

/// The writes of one extraction, all relative to the fresh directory's descriptor.
fn extract_entries(
    top: BorrowedFd<'_>,
    archive: impl Read,
    limits: Limits,
) -> Result<Extracted, ArchiveError> {
    let stream = Capped {
        inner: flate2::read::GzDecoder::new(archive),
        left: limits.max_stream_bytes,
        limit: limits.max_stream_bytes,
    };
    let mut tar = tar::Archive::new(stream);
    let mut stats = Extracted::default();
    let mut entries = 0u64;
    let mut symlinks: Vec<(PathBuf, PathBuf, String)> = Vec::new();
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
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink
        ) {
            continue;
        }
        let raw = entry.path().map_err(read_err)?.into_owned();
        let shown = raw.display().to_string();
        let Some(rel) = entry_path(&raw, &shown)? else {
            continue;
        };
        let parts: Vec<&OsStr> = rel.iter().collect();
        if rel.as_os_str().len() > MAX_PATH_BYTES || parts.len() > MAX_DEPTH {
            return Err(ArchiveError::TooDeep(shown));
        }
        let Some((name, parents)) = parts.split_last() else {
            continue;
        };
        let write_err = |source: Errno| ArchiveError::Write {
            path: rel.clone(),
            source: source.into(),
        };
        let taken = |e: Errno| match e {
            Errno::EEXIST => ArchiveError::Duplicate(shown.clone()),
            e => write_err(e),
        };
        let created = |r: nix::Result<()>| r.map_err(taken);
        // The parent, created as needed, every component a real directory.
        let parent = || {
            open_beneath(top, parents, true).map_err(|e| match e {
                Errno::ELOOP | Errno::ENOTDIR => ArchiveError::ThroughLink(shown.clone()),
                e => write_err(e),
            })
        };
        match kind {
            tar::EntryType::Directory => {
                let dir = parent()?;
                match mkdirat(dir.as_fd(), *name, Mode::from_bits_truncate(0o755)) {
                    Err(Errno::EEXIST) => {
                        // An implicit parent made earlier is fine; anything else is taken.
                        let st = fstatat(dir.as_fd(), *name, AtFlags::AT_SYMLINK_NOFOLLOW)
                            .map_err(write_err)?;
                        if file_kind(&st) != SFlag::S_IFDIR {
                            return Err(ArchiveError::Duplicate(shown));
                        }
                    }
                    r => created(r)?,
                }
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.size();
                if stats.bytes.saturating_add(size) > limits.max_total_bytes {
                    return Err(ArchiveError::TooLarge(limits.max_total_bytes));
                }
                let mode = entry.header().mode().unwrap_or(0o644);
                let dir = parent()?;
                let fd = openat(
                    dir.as_fd(),
                    *name,
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(if mode & 0o111 != 0 { 0o700 } else { 0o600 }),
                );
                let mut file = std::fs::File::from(fd.map_err(taken)?);
                let copied =
                    std::io::copy(&mut (&mut entry).take(size), &mut file).map_err(read_err)?;
                stats.bytes += copied;
                stats.files += 1;
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(read_err)?
                    .map(|l| l.into_owned())
                    .unwrap_or_default();
                let outside = || ArchiveError::LinkOutside {
                    entry: shown.clone(),
                    target: link.display().to_string(),
                };
                if link.as_os_str().len() > MAX_PATH_BYTES {
                    return Err(ArchiveError::TooDeep(shown));
                }
                if link.as_os_str().is_empty() || !link_inside(&rel, &link) {
                    return Err(outside());
                }
                let dir = parent()?;
                created(symlinkat(link.as_path(), dir.as_fd(), *name))?;
                symlinks.push((rel.clone(), link, shown));
            }
            tar::EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(read_err)?
                    .map(|l| l.into_owned())
                    .unwrap_or_default();
                let link_shown = link.display().to_string();
                let bad_target = || ArchiveError::HardLinkTarget {
                    entry: shown.clone(),
                    target: link_shown.clone(),
                };
                // Hard links name another entry of the archive (with its top component).
                let Some(source_rel) = entry_path(&link, &link_shown)? else {
                    return Err(bad_target());
                };
                let source_parts: Vec<&OsStr> = source_rel.iter().collect();
                let Some((source_name, source_parents)) = source_parts.split_last() else {
                    return Err(bad_target());
                };
                let source_dir =
                    open_beneath(top, source_parents, false).map_err(|_| bad_target())?;
                let source = fstatat(
                    source_dir.as_fd(),
                    *source_name,
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(|_| bad_target())?;
                if file_kind(&source) != SFlag::S_IFREG {
                    return Err(bad_target());
                }
                let size = u64::try_from(source.st_size).unwrap_or(0);
                if stats.bytes.saturating_add(size) > limits.max_total_bytes {
                    return Err(ArchiveError::TooLarge(limits.max_total_bytes));
                }
                let dir = parent()?;
                // No AT_SYMLINK_FOLLOW: the name itself is linked, never what it points to.
                created(linkat(
                    source_dir.as_fd(),
                    *source_name,
                    dir.as_fd(),
                    *name,
                    AtFlags::empty(),
                ))?;
                let made =
                    fstatat(dir.as_fd(), *name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(write_err)?;
                if (made.st_dev, made.st_ino) != (source.st_dev, source.st_ino) {
                    return Err(bad_target());
                }
                stats.bytes += size;
                stats.files += 1;
            }
            _ => return Err(ArchiveError::Special(shown)),
        }
    }
    // Every link checked against the finished tree: what it resolves to now cannot change by a
    // later entry any more.
    let mut budget = LOOKUP_BUDGET;
    for (rel, target, shown) in symlinks {
        if !resolves_inside(top, &rel, &target, &mut budget)? {
            return Err(ArchiveError::LinkOutside {
                entry: shown,
                target: target.display().to_string(),
            });
        }
    }
    Ok(stats)
}

enum Step {
    Up,
    Name(OsString),
}

/// The steps of a link target; `None` for an absolute one.
fn steps(target: &Path) -> Option<Vec<Step>> {
    target
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .map(|c| match c {
            Component::ParentDir => Some(Step::Up),
            Component::Normal(n) => Some(Step::Name(n.to_os_string())),
            _ => None,
        })
        .collect()
}

enum Found {
    Dir,
    Link(PathBuf),
    Other,
}

/// What is at `stack/name` in the tree, without following anything.
fn lookup(top: BorrowedFd<'_>, stack: &[OsString], name: &OsStr) -> Option<Found> {
    let parts: Vec<&OsStr> = stack.iter().map(|s| s.as_os_str()).collect();
    let dir = open_beneath(top, &parts, false).ok()?;
    let st = fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW).ok()?;
    Some(match file_kind(&st) {
        SFlag::S_IFDIR => Found::Dir,
        SFlag::S_IFLNK => Found::Link(PathBuf::from(readlinkat(dir.as_fd(), name).ok()?)),
        _ => Found::Other,
    })
}

/// Resolves the link at `link` (relative to the tree) to `target` as the kernel would: from
/// the directory the link really is in, following the links it meets inside the tree. `false`
/// as soon as the walk climbs above the top, meets an absolute target, or loops. A missing
/// component is taken lexically (a dangling link stays allowed if it stays inside).
fn resolves_inside(
    top: BorrowedFd<'_>,
    link: &Path,
    target: &Path,
    budget: &mut u64,
) -> Result<bool, ArchiveError> {
    let mut stack: Vec<OsString> = link
        .parent()
        .map(|p| p.iter().map(|c| c.to_os_string()).collect())
        .unwrap_or_default();
    let Some(first) = steps(target) else {
        return Ok(false);
    };
    let mut pending: Vec<Step> = first.into_iter().rev().collect();
    let mut hops = 0;
    while let Some(step) = pending.pop() {
        match step {
            Step::Up => {
                if stack.pop().is_none() {
                    return Ok(false);
                }
            }
            Step::Name(n) => {
                *budget = budget.checked_sub(1).ok_or(ArchiveError::TooManyLinks)?;
                match lookup(top, &stack, &n) {
                    Some(Found::Link(t)) => {
                        hops += 1;
                        if hops > MAX_LINK_HOPS {
                            return Ok(false);
                        }
                        let Some(more) = steps(&t) else {
                            return Ok(false);
                        };
                        pending.extend(more.into_iter().rev());
                    }
                    Some(Found::Dir | Found::Other) | None => stack.push(n),
                }
            }
        }
    }
    Ok(true)
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

    #[test]
    fn link_targets_are_resolved_through_the_links_of_the_tree() {
        let d = tempfile::tempdir().unwrap();
        let t = d.path();
        std::fs::create_dir_all(t.join("d1/d2")).unwrap();
        std::os::unix::fs::symlink("../..", t.join("d1/d2/up")).unwrap();
        std::os::unix::fs::symlink("d1/d2", t.join("deep")).unwrap();
        let top = nix::fcntl::open(t, dir_flags(), Mode::empty()).unwrap();
        let mut budget = LOOKUP_BUDGET;
        let mut inside = |link: &str, target: &str| {
            resolves_inside(top.as_fd(), Path::new(link), Path::new(target), &mut budget).unwrap()
        };
        // Lexically inside, really outside: `up` is the top, so `up/..` is above it.
        assert!(!inside("x", "d1/d2/up/.."));
        assert!(inside("x", "d1/d2/up"));
        // Lexically outside but really inside is refused earlier, by `link_inside`; here the
        // real walk follows `deep` down, so `..` twice lands on the top.
        assert!(inside("x", "deep/../.."));
        assert!(!inside("x", "deep/../../.."));
        assert!(inside("d1/x", "../missing/file"));
        assert!(!inside("x", "/etc"));
    }

    #[test]
    fn the_extracting_thread_is_confined_to_the_fresh_directory() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("fresh")).unwrap();
        let fresh = nix::fcntl::open(&d.path().join("fresh"), dir_flags(), Mode::empty()).unwrap();
        let (enforced, inside, outside) = std::thread::scope(|s| {
            s.spawn(|| {
                let enforced = confine_thread_to(fresh.as_fd());
                let inside = std::fs::write(d.path().join("fresh/ok"), b"x").is_ok();
                let outside = std::fs::write(d.path().join("escaped"), b"x").is_ok();
                (enforced, inside, outside)
            })
            .join()
            .unwrap()
        });
        assert!(inside);
        if enforced {
            assert!(!outside, "Landlock let the confined thread write outside");
        }
        // Only that thread: the rest of the server is unaffected.
        assert!(std::fs::write(d.path().join("after"), b"x").is_ok());
    }

    #[test]
    fn link_loops_are_refused() {
        let d = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("b", d.path().join("a")).unwrap();
        std::os::unix::fs::symlink("a", d.path().join("b")).unwrap();
        let top = nix::fcntl::open(d.path(), dir_flags(), Mode::empty()).unwrap();
        let mut budget = LOOKUP_BUDGET;
        assert!(
            !resolves_inside(top.as_fd(), Path::new("x"), Path::new("a"), &mut budget).unwrap()
        );
    }
}
