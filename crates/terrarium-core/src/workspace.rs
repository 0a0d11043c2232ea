//! Path confinement by descriptor: a caller's relative path in, an open directory inside the
//! root out — resolved once, never by name again.
//!
//! Workspace content is hostile and may change while a call runs: code in a parent workspace can
//! exchange a checked directory with a symlink to `/` (`renameat2(RENAME_EXCHANGE)`). A check on
//! a path string followed by a use of the same string is therefore a race. Here a path is walked
//! one component at a time from the root's descriptor with `O_PATH | O_NOFOLLOW`; symlinks met on
//! the way are resolved by this walk itself (an absolute target must name a place under the root,
//! `..` is taken lexically against the components walked so far and can never climb above the
//! root), so the kernel never follows a link on our behalf. The result holds the descriptor of
//! what was checked: the run's working directory (`fchdir`), its Landlock rule and every file
//! read for it come from that descriptor, wherever the name points by then.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat, readlinkat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WorkspaceError {
    #[error("{field}: must be a relative path (it is resolved against the workspace root)")]
    Absolute { field: String },
    #[error("{field}: contains a NUL or control character")]
    BadCharacter { field: String },
    #[error("{field}: must not be empty")]
    Empty { field: String },
    #[error("{field}: resolves outside the workspace root")]
    Escapes { field: String },
    #[error("{field}: no such directory in the workspace root")]
    NotFound { field: String },
    #[error("{field}: is not a directory")]
    NotADirectory { field: String },
    #[error("{field}: is not a regular file")]
    NotAFile { field: String },
    #[error("{field}: too many symbolic links on the way (more than {MAX_LINKS})")]
    TooManyLinks { field: String },
    #[error(
        "{field}: the workspace directory was moved or replaced while this call ran; try again"
    )]
    Changed { field: String },
    #[error("{field}: cannot be opened ({errno})")]
    Io { field: String, errno: Errno },
}

impl WorkspaceError {
    /// The argument that was refused (`path`, `var_files/0`, ...), for the audit trail's
    /// `fields`; the value itself is never recorded.
    pub fn field(&self) -> &str {
        match self {
            WorkspaceError::Absolute { field }
            | WorkspaceError::BadCharacter { field }
            | WorkspaceError::Empty { field }
            | WorkspaceError::Escapes { field }
            | WorkspaceError::NotFound { field }
            | WorkspaceError::NotADirectory { field }
            | WorkspaceError::NotAFile { field }
            | WorkspaceError::TooManyLinks { field }
            | WorkspaceError::Changed { field }
            | WorkspaceError::Io { field, .. } => field,
        }
    }
}

/// Directories a listing visits at most (a workspace can create any number).
const MAX_LISTED_DIRS: usize = 20_000;

/// Symlinks followed in one resolution before giving up (the kernel's own limit).
const MAX_LINKS: usize = 40;

/// The root directory, held open, and the operations that keep paths inside it.
#[derive(Debug, Clone)]
pub struct WorkspaceRoot {
    root: PathBuf,
    fd: Arc<OwnedFd>,
}

/// A workspace directory that has passed confinement, held by descriptor.
#[derive(Debug, Clone)]
pub struct Workspace {
    /// The absolute path it had when it was resolved: for messages and display only. Nothing
    /// opens it by name; use [`Workspace::fd`].
    pub dir: PathBuf,
    /// Path relative to the root, as shown to callers ("." for the root itself).
    pub relative: String,
    fd: Arc<OwnedFd>,
    id: FileId,
}

/// Device and inode: what a directory is, whatever it is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    fn of(st: &FileStat) -> FileId {
        FileId {
            dev: st.st_dev,
            ino: st.st_ino,
        }
    }
}

impl PartialEq for Workspace {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.relative == other.relative
    }
}

impl Eq for Workspace {}

impl Workspace {
    /// The `O_PATH` descriptor of the directory that was checked.
    pub fn fd(&self) -> &Arc<OwnedFd> {
        &self.fd
    }

    /// Identity of the directory (for locks: two names of one directory share a lock).
    pub fn id(&self) -> FileId {
        self.id
    }

    /// Whether `name` directly in this directory is a regular file (not a link to one).
    pub fn has_plain_file(&self, name: &str) -> bool {
        nix::sys::stat::fstatat(
            self.fd.as_fd(),
            name,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .is_ok_and(|st| is_type(&st, SFlag::S_IFREG))
    }
}

/// A file inside the root, opened for reading after confinement.
#[derive(Debug)]
pub struct ConfinedFile {
    pub file: File,
    /// Path relative to the root.
    pub relative: String,
    /// The directory holding it, relative to the root ("." for the root).
    pub parent_relative: String,
    pub size: u64,
}

impl ConfinedFile {
    /// Reads the whole file, refusing more than `limit` bytes (it may grow after the check).
    pub fn read_limited(mut self, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
        let mut bytes = Vec::new();
        (&mut self.file).take(limit + 1).read_to_end(&mut bytes)?;
        Ok((bytes.len() as u64 <= limit).then_some(bytes))
    }
}

/// Where a walk ended: the descriptors of every directory on the way (so `..` is lexical).
struct Walk {
    names: Vec<OsString>,
    fds: Vec<OwnedFd>,
    last: FileStat,
}

impl Walk {
    fn relative(&self) -> String {
        if self.names.is_empty() {
            ".".into()
        } else {
            self.names
                .iter()
                .map(|n| n.to_string_lossy())
                .collect::<Vec<_>>()
                .join("/")
        }
    }
}

fn o_path() -> OFlag {
    OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

impl WorkspaceRoot {
    /// Opens the root. `root` must already be canonical (the config loader canonicalizes it).
    pub fn open(root: PathBuf) -> std::io::Result<WorkspaceRoot> {
        let fd = nix::fcntl::open(
            &root,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(WorkspaceRoot {
            root,
            fd: Arc::new(fd),
        })
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Resolves the `path` argument of a tool to an existing workspace directory.
    pub fn workspace(&self, field: &str, path: &str) -> Result<Workspace, WorkspaceError> {
        let comps = lexical(field, path)?;
        let walk = self.walk(field, Vec::new(), Vec::new(), comps)?;
        self.finish_workspace(field, walk)
    }

    /// Resolves a directory inside the root that must contain no symlink at all on the way (a
    /// server-made path such as a fetched repository's tree, or a workspace's canonical path).
    pub fn plain_dir(&self, field: &str, relative: &str) -> Result<Workspace, WorkspaceError> {
        let walk = self.plain_walk(field, relative)?;
        self.finish_workspace(field, walk)
    }

    fn plain_walk(&self, field: &str, relative: &str) -> Result<Walk, WorkspaceError> {
        let comps = lexical(field, relative)?;
        if comps.iter().any(|c| c == "..") {
            return Err(WorkspaceError::Escapes {
                field: field.into(),
            });
        }
        let mut walk = Walk {
            names: Vec::new(),
            fds: Vec::new(),
            last: fstat(self.fd.as_fd()).map_err(|errno| io_err(field, errno))?,
        };
        for c in comps {
            let parent = walk.fds.last().map_or(self.fd.as_fd(), |f| f.as_fd());
            let fd = open_component(field, parent, &c)?;
            let st = fstat(fd.as_fd()).map_err(|errno| io_err(field, errno))?;
            if is_type(&st, SFlag::S_IFLNK) {
                return Err(WorkspaceError::Escapes {
                    field: field.into(),
                });
            }
            walk.names.push(c);
            walk.fds.push(fd);
            walk.last = st;
        }
        Ok(walk)
    }

    fn finish_workspace(&self, field: &str, walk: Walk) -> Result<Workspace, WorkspaceError> {
        if !is_type(&walk.last, SFlag::S_IFDIR) {
            return Err(WorkspaceError::NotADirectory {
                field: field.into(),
            });
        }
        let relative = walk.relative();
        let id = FileId::of(&walk.last);
        let fd = match walk.fds.into_iter().last() {
            Some(fd) => Arc::new(fd),
            None => self.fd.clone(),
        };
        let dir = if relative == "." {
            self.root.clone()
        } else {
            self.root.join(&relative)
        };
        Ok(Workspace {
            dir,
            relative,
            fd,
            id,
        })
    }

    /// Opens a file named relative to a workspace (such as a var file), still confined to the
    /// root. The walk starts at the root and passes through the workspace's own components,
    /// which must still lead to the very directory that was checked (same device and inode).
    pub fn file_in(
        &self,
        field: &str,
        ws: &Workspace,
        path: &str,
    ) -> Result<ConfinedFile, WorkspaceError> {
        let comps = lexical(field, path)?;
        // Re-walk the workspace's canonical components without following anything: each must
        // be a plain directory, and the end must be the checked directory.
        let base = self.plain_walk(field, &ws.relative)?;
        if FileId::of(&base.last) != ws.id {
            return Err(WorkspaceError::Changed {
                field: field.into(),
            });
        }
        let walk = self.walk(field, base.names, base.fds, comps)?;
        if !is_type(&walk.last, SFlag::S_IFREG) {
            return Err(WorkspaceError::NotAFile {
                field: field.into(),
            });
        }
        let parent = match walk.fds.len().checked_sub(2) {
            Some(i) => walk.fds[i].as_fd(),
            None => self.fd.as_fd(),
        };
        self.open_file_at(field, &walk, parent)
    }

    fn open_file_at(
        &self,
        field: &str,
        walk: &Walk,
        parent: BorrowedFd<'_>,
    ) -> Result<ConfinedFile, WorkspaceError> {
        let name = walk.names.last().ok_or_else(|| WorkspaceError::NotAFile {
            field: field.into(),
        })?;
        // O_NONBLOCK: a FIFO swapped in cannot hang the server; the identity check below
        // refuses it anyway.
        let fd = openat(
            parent,
            name.as_os_str(),
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| io_err(field, errno))?;
        let st = fstat(fd.as_fd()).map_err(|errno| io_err(field, errno))?;
        if !is_type(&st, SFlag::S_IFREG) || FileId::of(&st) != FileId::of(&walk.last) {
            return Err(WorkspaceError::Changed {
                field: field.into(),
            });
        }
        let relative = walk.relative();
        let parent_relative = match relative.rsplit_once('/') {
            Some((p, _)) => p.to_string(),
            None => ".".to_string(),
        };
        Ok(ConfinedFile {
            file: File::from(fd),
            relative,
            parent_relative,
            size: st.st_size as u64,
        })
    }

    /// Walks `todo` from the directories in `fds` (the root when empty), resolving symlinks
    /// itself; never lets the kernel follow one.
    fn walk(
        &self,
        field: &str,
        mut names: Vec<OsString>,
        mut fds: Vec<OwnedFd>,
        comps: Vec<OsString>,
    ) -> Result<Walk, WorkspaceError> {
        let escapes = || WorkspaceError::Escapes {
            field: field.into(),
        };
        let mut todo: VecDeque<OsString> = comps.into();
        let mut links = 0;
        let mut last = match fds.last() {
            Some(fd) => fstat(fd.as_fd()),
            None => fstat(self.fd.as_fd()),
        }
        .map_err(|errno| io_err(field, errno))?;
        while let Some(c) = todo.pop_front() {
            if c == ".." {
                names.pop().ok_or_else(escapes)?;
                fds.pop();
                last = match fds.last() {
                    Some(fd) => fstat(fd.as_fd()),
                    None => fstat(self.fd.as_fd()),
                }
                .map_err(|errno| io_err(field, errno))?;
                continue;
            }
            if !is_type(&last, SFlag::S_IFDIR) {
                return Err(WorkspaceError::NotADirectory {
                    field: field.into(),
                });
            }
            let parent = fds.last().map_or(self.fd.as_fd(), |f| f.as_fd());
            let fd = open_component(field, parent, &c)?;
            let st = fstat(fd.as_fd()).map_err(|errno| io_err(field, errno))?;
            if !is_type(&st, SFlag::S_IFLNK) {
                names.push(c);
                fds.push(fd);
                last = st;
                continue;
            }
            links += 1;
            if links > MAX_LINKS {
                return Err(WorkspaceError::TooManyLinks {
                    field: field.into(),
                });
            }
            let target = readlinkat(fd.as_fd(), "").map_err(|errno| io_err(field, errno))?;
            let target = PathBuf::from(target);
            if target.is_absolute() {
                // Only a target that names a place under the root, walked again from the root.
                let inside = target.strip_prefix(&self.root).map_err(|_| escapes())?;
                names.clear();
                fds.clear();
                last = fstat(self.fd.as_fd()).map_err(|errno| io_err(field, errno))?;
                prepend(&mut todo, inside);
            } else {
                prepend(&mut todo, &target);
            }
        }
        Ok(Walk { names, fds, last })
    }

    /// Workspaces under the root: directories holding at least one `.tf` or `.tf.json` file,
    /// found by descriptor without following symlinks, skipping hidden directories (such as
    /// `.terraform`).
    pub fn list(&self, max_depth: usize, max_entries: usize) -> Vec<String> {
        self.list_from(self.fd.as_fd(), max_depth, max_entries)
    }

    /// Like [`WorkspaceRoot::list`], below `start` (the result is relative to it).
    pub fn list_in(&self, start: &Workspace, max_depth: usize, max_entries: usize) -> Vec<String> {
        self.list_from(start.fd.as_fd(), max_depth, max_entries)
    }

    fn list_from(
        &self,
        start: BorrowedFd<'_>,
        max_depth: usize,
        max_entries: usize,
    ) -> Vec<String> {
        let mut found = Vec::new();
        let Ok(start) = start.try_clone_to_owned() else {
            return found;
        };
        // Directories are opened only when their turn comes, each relative to its parent's
        // descriptor (shared by its pending siblings): at most one descriptor per level is open,
        // however many directories a workspace creates; and the walk is bounded.
        let mut stack: Vec<(Arc<OwnedFd>, OsString, String, usize)> =
            vec![(Arc::new(start), OsString::from("."), String::new(), 0)];
        let mut visited = 0usize;
        while let Some((parent, name, rel, depth)) = stack.pop() {
            visited += 1;
            if visited > MAX_LISTED_DIRS {
                tracing::warn!(
                    limit = MAX_LISTED_DIRS,
                    "workspace listing stopped at its directory limit"
                );
                break;
            }
            let Ok(fd) = openat(
                parent.as_fd(),
                name.as_os_str(),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            ) else {
                continue;
            };
            drop(parent);
            let Ok(this) = fd.try_clone() else {
                continue;
            };
            let Ok(mut dir) = nix::dir::Dir::from_fd(fd) else {
                continue;
            };
            let this = Arc::new(this);
            let mut has_tf = false;
            for entry in dir.iter().flatten() {
                let raw = entry.file_name().to_bytes();
                if raw == b"." || raw == b".." {
                    continue;
                }
                let name = String::from_utf8_lossy(raw).into_owned();
                match entry.file_type() {
                    Some(nix::dir::Type::Directory)
                        if !name.starts_with('.') && depth < max_depth =>
                    {
                        let sub_rel = if rel.is_empty() {
                            name
                        } else {
                            format!("{rel}/{name}")
                        };
                        stack.push((
                            this.clone(),
                            OsStr::from_bytes(raw).to_os_string(),
                            sub_rel,
                            depth + 1,
                        ));
                    }
                    Some(nix::dir::Type::File)
                        if name.ends_with(".tf") || name.ends_with(".tf.json") =>
                    {
                        has_tf = true
                    }
                    _ => {}
                }
            }
            if has_tf {
                found.push(if rel.is_empty() {
                    ".".to_string()
                } else {
                    rel.clone()
                });
                if found.len() >= max_entries {
                    break;
                }
            }
        }
        found.sort();
        found
    }
}

/// Opens one path component below `parent` without following it.
fn open_component(
    field: &str,
    parent: BorrowedFd<'_>,
    name: &OsStr,
) -> Result<OwnedFd, WorkspaceError> {
    openat(parent, name, o_path(), Mode::empty()).map_err(|errno| match errno {
        Errno::ENOENT => WorkspaceError::NotFound {
            field: field.into(),
        },
        Errno::ENOTDIR => WorkspaceError::NotADirectory {
            field: field.into(),
        },
        errno => io_err(field, errno),
    })
}

fn io_err(field: &str, errno: Errno) -> WorkspaceError {
    WorkspaceError::Io {
        field: field.into(),
        errno,
    }
}

fn is_type(st: &FileStat, kind: SFlag) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == kind
}

/// Puts a link target's components in front of what is left to walk.
fn prepend(todo: &mut VecDeque<OsString>, target: &Path) {
    let comps: Vec<OsString> = target
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    for c in comps.into_iter().rev() {
        todo.push_front(c);
    }
}

/// The checks that need no file system: non-empty, no control characters, relative, and no
/// `..` that climbs out lexically (a clear error even when the target does not exist).
fn lexical(field: &str, path: &str) -> Result<Vec<OsString>, WorkspaceError> {
    let field = field.to_string();
    if path.is_empty() {
        return Err(WorkspaceError::Empty { field });
    }
    if path.chars().any(|c| c.is_control()) {
        return Err(WorkspaceError::BadCharacter { field });
    }
    let p = Path::new(path);
    if p.is_absolute()
        || p.components()
            .any(|c| matches!(c, Component::RootDir | Component::Prefix(_)))
    {
        return Err(WorkspaceError::Absolute { field });
    }
    let mut comps = Vec::new();
    for c in p.components() {
        match c {
            Component::ParentDir => comps.push(OsString::from("..")),
            Component::Normal(n) => comps.push(n.to_os_string()),
            _ => {}
        }
    }
    Ok(comps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn setup() -> (tempfile::TempDir, WorkspaceRoot) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(dir.path().join("outside")).unwrap();
        std::fs::write(root.join("a/main.tf"), "").unwrap();
        std::fs::write(root.join("a/x.tfvars"), "x = 1").unwrap();
        std::fs::write(dir.path().join("outside/secret.tfvars"), "").unwrap();
        symlink(dir.path().join("outside"), root.join("link_out")).unwrap();
        symlink(root.join("a/b"), root.join("link_in")).unwrap();
        symlink("a/b", root.join("link_rel")).unwrap();
        symlink("/nonexistent/target", root.join("dangling")).unwrap();
        symlink("/proc/self/environ", root.join("a/environ.tfvars")).unwrap();
        symlink("loop2", root.join("loop1")).unwrap();
        symlink("loop1", root.join("loop2")).unwrap();
        let canonical = std::fs::canonicalize(&root).unwrap();
        (dir, WorkspaceRoot::open(canonical).unwrap())
    }

    #[test]
    fn accepts_paths_inside() {
        let (_d, r) = setup();
        assert_eq!(r.workspace("path", "a").unwrap().relative, "a");
        assert_eq!(r.workspace("path", "a/b/..").unwrap().relative, "a");
        assert_eq!(r.workspace("path", "./a/./b").unwrap().relative, "a/b");
        assert_eq!(r.workspace("path", ".").unwrap().relative, ".");
        assert_eq!(r.workspace("path", "link_in").unwrap().relative, "a/b");
        assert_eq!(r.workspace("path", "link_rel").unwrap().relative, "a/b");
        assert_eq!(r.workspace("path", "link_rel/..").unwrap().relative, "a");
        assert_eq!(
            r.workspace("path", "link_in").unwrap().id(),
            r.workspace("path", "a/b").unwrap().id()
        );
    }

    #[test]
    fn rejects_escapes() {
        let (_d, r) = setup();
        let f = || "path".to_string();
        let cases = [
            ("..", WorkspaceError::Escapes { field: f() }),
            ("a/../..", WorkspaceError::Escapes { field: f() }),
            ("a/../../outside", WorkspaceError::Escapes { field: f() }),
            ("link_rel/../../..", WorkspaceError::Escapes { field: f() }),
            ("/etc", WorkspaceError::Absolute { field: f() }),
            ("link_out", WorkspaceError::Escapes { field: f() }),
            ("link_out/x", WorkspaceError::Escapes { field: f() }),
            ("dangling", WorkspaceError::Escapes { field: f() }),
            ("loop1", WorkspaceError::TooManyLinks { field: f() }),
            ("a\0b", WorkspaceError::BadCharacter { field: f() }),
            ("a\nb", WorkspaceError::BadCharacter { field: f() }),
            ("", WorkspaceError::Empty { field: f() }),
            ("missing", WorkspaceError::NotFound { field: f() }),
            ("a/main.tf", WorkspaceError::NotADirectory { field: f() }),
            ("a/main.tf/x", WorkspaceError::NotADirectory { field: f() }),
        ];
        for (input, want) in cases {
            assert_eq!(r.workspace("path", input).unwrap_err(), want, "{input:?}");
        }
        // Percent-encoded traversal is just a strange directory name, which does not exist.
        assert_eq!(
            r.workspace("path", "%2e%2e").unwrap_err(),
            WorkspaceError::NotFound { field: f() }
        );
    }

    #[test]
    fn files_are_confined_too() {
        let (_d, r) = setup();
        let ws = r.workspace("path", "a").unwrap();
        let file = r.file_in("var_files/0", &ws, "x.tfvars").unwrap();
        assert_eq!(file.relative, "a/x.tfvars");
        assert_eq!(file.parent_relative, "a");
        assert_eq!(file.read_limited(100).unwrap().unwrap(), b"x = 1");
        let big = r.file_in("var_files/0", &ws, "x.tfvars").unwrap();
        assert_eq!(big.read_limited(2).unwrap(), None);
        let field = || "var_files/0".to_string();
        for (input, want) in [
            (
                "../link_out/secret.tfvars",
                WorkspaceError::Escapes { field: field() },
            ),
            (
                "../../outside/secret.tfvars",
                WorkspaceError::Escapes { field: field() },
            ),
            // The server's own environment through a link: never read.
            ("environ.tfvars", WorkspaceError::Escapes { field: field() }),
            ("b", WorkspaceError::NotAFile { field: field() }),
        ] {
            assert_eq!(
                r.file_in("var_files/0", &ws, input).unwrap_err(),
                want,
                "{input}"
            );
        }
    }

    #[test]
    fn a_descriptor_stays_with_the_checked_directory() {
        let (d, r) = setup();
        let ws = r.workspace("path", "a").unwrap();
        // The name is swapped for a link out of the root after the check.
        std::fs::rename(r.path().join("a"), r.path().join("moved")).unwrap();
        symlink(d.path().join("outside"), r.path().join("a")).unwrap();
        let st = fstat(ws.fd().as_fd()).unwrap();
        assert_eq!(FileId::of(&st), ws.id());
        // A file named relative to the workspace is refused: the name no longer leads there.
        assert!(matches!(
            r.file_in("var_files/0", &ws, "x.tfvars").unwrap_err(),
            WorkspaceError::Escapes { .. } | WorkspaceError::Changed { .. }
        ));
    }

    #[test]
    fn lists_workspaces_without_following_links() {
        let (_d, r) = setup();
        assert_eq!(r.list(8, 100), vec!["a".to_string()]);
    }
}
