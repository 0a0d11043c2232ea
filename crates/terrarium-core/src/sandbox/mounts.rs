//! The run's own file system view: a mount namespace that shows only what the run is granted.
//!
//! Landlock decides what a run may open, but not what it may `connect()` to: a pathname UNIX
//! socket (`/var/run/docker.sock`, containerd, D-Bus, a database's socket) is reached by name and
//! no Landlock right covers it. So, with the namespaces layer, the run gets a mount namespace
//! whose root is a skeleton directory with bind mounts of exactly the places it is granted
//! (system directories, terraform, its workspace — by descriptor —, its private dir) and a
//! `/proc` of its own PID namespace. Whatever is not granted does not exist for the run, sockets
//! included; terraform's own plugin sockets live in the run's TMPDIR, which is granted.
//!
//! The skeleton (empty directories and files to mount on) is made by the server before the
//! spawn in a fresh directory of the state dir; the child only mounts, pivots and changes
//! directory, with strings built here beforehand (it runs between fork and exec).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::access::{self, Grant, RunAccess};
use super::step::{self, ChildError, Step};

/// One bind mount: source, target inside the skeleton, and for a held grant the identity the
/// mounted directory must have.
#[derive(Debug)]
struct Bind {
    source: CString,
    target: CString,
    expect: Option<(u64, u64)>,
}

/// Everything the child needs to enter its own view, prepared in the server.
#[derive(Debug)]
pub struct MountPlan {
    skeleton: PathBuf,
    skeleton_c: CString,
    binds: Vec<Bind>,
    /// `<skeleton>/proc`, where the run's own procfs is mounted.
    proc_target: Option<CString>,
    /// The working directory inside the new root, and what it must be (device, inode).
    cwd: CString,
    cwd_id: (u64, u64),
    /// Keeps held descriptors open until the child has mounted them.
    _held: Vec<Grant>,
}

impl MountPlan {
    /// Builds the skeleton at `skeleton` (which must not exist) for a run with `access`,
    /// working in `cwd`.
    pub fn prepare(
        skeleton: &Path,
        access: &RunAccess,
        extra_read: &[PathBuf],
        cwd: &Grant,
    ) -> io::Result<MountPlan> {
        crate::files::create_private_dir(skeleton)?;
        // World-traversable, so a run under another uid mapping can still walk into it.
        std::fs::set_permissions(
            skeleton,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        let mut grants: Vec<Grant> = Vec::new();
        for p in access::SYSTEM_READ_EXEC
            .iter()
            .chain(access::SYSTEM_READ)
            .chain(access::SYSTEM_READ_WRITE)
        {
            grants.push(Grant::Path(PathBuf::from(p)));
        }
        grants.extend(access.read_exec.iter().cloned());
        grants.extend(access.read_only.iter().cloned());
        grants.extend(extra_read.iter().cloned().map(Grant::Path));
        grants.extend(access.read_write.iter().cloned());
        if !grants.iter().any(|g| g.path() == cwd.path()) {
            grants.push(cwd.clone());
        }
        // Parents before children, so a nested grant is mounted on top of its parent's mount.
        grants.sort_by_key(|g| g.path().components().count());

        let mut binds = Vec::new();
        let mut proc_target = None;
        let mut mounted: Vec<PathBuf> = Vec::new();
        let mut held = Vec::new();
        for g in grants {
            let path = g.path().to_path_buf();
            if !path.is_absolute() {
                continue;
            }
            let source = cstring(path.as_os_str().as_bytes())?;
            let (expect, is_dir) = match &g {
                Grant::Path(p) => {
                    // A place under one already mounted by path is visible through it.
                    if mounted.iter().any(|m| p.starts_with(m)) {
                        continue;
                    }
                    match std::fs::metadata(p) {
                        Ok(m) => (None, m.is_dir()),
                        Err(_) => continue,
                    }
                }
                Grant::Held { fd, .. } => {
                    // A descriptor opened before the child's `unshare` belongs to the server's
                    // mount namespace and cannot be bound from the new one; the child binds the
                    // name instead and then checks that what it mounted is this very directory
                    // (device and inode: unique while the descriptor keeps it alive), so a name
                    // swapped in the meantime makes the run fail, never move.
                    let st = nix::sys::stat::fstat(fd.as_fd()).map_err(io::Error::from)?;
                    let dir = nix::sys::stat::SFlag::from_bits_truncate(st.st_mode)
                        & nix::sys::stat::SFlag::S_IFMT
                        == nix::sys::stat::SFlag::S_IFDIR;
                    held.push(g.clone());
                    (Some((st.st_dev, st.st_ino)), dir)
                }
            };
            let target = skeleton.join(relative(&path));
            if is_dir {
                std::fs::create_dir_all(&target)?;
            } else {
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                if !target.exists() {
                    std::fs::File::create(&target)?;
                }
            }
            if path == Path::new("/proc") {
                proc_target = Some(cstring(target.as_os_str().as_bytes())?);
            } else {
                binds.push(Bind {
                    source,
                    target: cstring(target.as_os_str().as_bytes())?,
                    expect,
                });
            }
            if matches!(g, Grant::Path(_)) {
                mounted.push(path);
            }
        }
        let cwd_id = match cwd {
            Grant::Held { fd, .. } => {
                let st = nix::sys::stat::fstat(fd.as_fd()).map_err(io::Error::from)?;
                (st.st_dev, st.st_ino)
            }
            Grant::Path(p) => {
                let st = nix::sys::stat::stat(p).map_err(io::Error::from)?;
                (st.st_dev, st.st_ino)
            }
        };
        Ok(MountPlan {
            skeleton: skeleton.to_path_buf(),
            skeleton_c: cstring(skeleton.as_os_str().as_bytes())?,
            binds,
            proc_target,
            cwd: cstring(cwd.path().as_os_str().as_bytes())?,
            cwd_id,
            _held: held,
        })
    }

    /// The skeleton directory (removed by the caller after the run).
    pub fn skeleton(&self) -> &Path {
        &self.skeleton
    }

    /// Enters the view: makes every mount private, mounts the grants on the skeleton, mounts
    /// the run's `/proc`, pivots into the skeleton, drops the old root and changes into the
    /// working directory, checking it is the directory that was granted.
    ///
    /// # Safety
    /// Called between fork and exec, in the process that will exec (PID 1 of the run's PID
    /// namespace, inside its user and mount namespaces): only syscalls on prepared strings.
    pub unsafe fn enter(&self, landlock: Option<BorrowedFd<'_>>) -> Result<(), ChildError> {
        let check = |r: libc::c_int, step: Step| step::check(r as libc::c_long, step);
        let null = std::ptr::null::<libc::c_char>();
        // SAFETY: plain syscalls with NUL-terminated strings prepared before fork.
        unsafe {
            check(
                libc::mount(
                    null,
                    c"/".as_ptr(),
                    null,
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ),
                Step::MountPrivate,
            )?;
            check(
                libc::mount(
                    self.skeleton_c.as_ptr(),
                    self.skeleton_c.as_ptr(),
                    null,
                    libc::MS_BIND,
                    std::ptr::null(),
                ),
                Step::MountRoot,
            )?;
            for b in &self.binds {
                check(
                    libc::mount(
                        b.source.as_ptr(),
                        b.target.as_ptr(),
                        null,
                        libc::MS_BIND | libc::MS_REC,
                        std::ptr::null(),
                    ),
                    Step::MountBind,
                )?;
                if let Some(expect) = b.expect {
                    let mut st: libc::stat = std::mem::zeroed();
                    check(libc::lstat(b.target.as_ptr(), &mut st), Step::MountBind)?;
                    if (st.st_dev, st.st_ino) != expect {
                        return Err(ChildError::new(Step::BoundPathChanged, libc::ESTALE));
                    }
                }
            }
            if let Some(proc_target) = &self.proc_target {
                // The run's own procfs shows only its PID namespace. Never the host's instead:
                // the start-up probe already refused this layer where it cannot be mounted.
                check(
                    libc::mount(
                        c"proc".as_ptr(),
                        proc_target.as_ptr(),
                        c"proc".as_ptr(),
                        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        std::ptr::null(),
                    ),
                    Step::MountProc,
                )?;
            }
            check(libc::chdir(self.skeleton_c.as_ptr()), Step::PivotRoot)?;
            let pivot = libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr());
            check(pivot as libc::c_int, Step::PivotRoot)?;
            check(
                libc::umount2(c".".as_ptr(), libc::MNT_DETACH),
                Step::DetachOldRoot,
            )?;
            check(libc::chdir(c"/".as_ptr()), Step::PivotRoot)?;
            if let (Some(ruleset), Some(_)) = (landlock, &self.proc_target) {
                grant_proc(ruleset).map_err(|e| ChildError::new(Step::MountProc, e))?;
            }
            check(libc::chdir(self.cwd.as_ptr()), Step::EnterWorkspace)?;
            let mut st: libc::stat = std::mem::zeroed();
            check(libc::stat(c".".as_ptr(), &mut st), Step::EnterWorkspace)?;
            if (st.st_dev, st.st_ino) != self.cwd_id {
                // The workspace was replaced while the run started: ESTALE, not a moved run.
                return Err(ChildError::new(Step::WorkspaceChanged, libc::ESTALE));
            }
        }
        Ok(())
    }
}

/// Adds "read `/proc`" to the Landlock ruleset, for the procfs mounted in the child.
///
/// # Safety
/// Between fork and exec: syscalls only.
unsafe fn grant_proc(ruleset: BorrowedFd<'_>) -> Result<(), i32> {
    #[repr(C, packed)]
    struct PathBeneathAttr {
        allowed_access: u64,
        parent_fd: i32,
    }
    const LANDLOCK_RULE_PATH_BENEATH: libc::c_int = 1;
    const READ_FILE: u64 = 1 << 2;
    const READ_DIR: u64 = 1 << 3;
    // SAFETY: plain syscalls; the attribute lives on the stack for the call.
    unsafe {
        let fd = libc::open(c"/proc".as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(errno());
        }
        let attr = PathBeneathAttr {
            allowed_access: READ_FILE | READ_DIR,
            parent_fd: fd,
        };
        let r = libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset.as_raw_fd(),
            LANDLOCK_RULE_PATH_BENEATH,
            &attr as *const PathBeneathAttr,
            0,
        );
        let err = errno();
        libc::close(fd);
        if r < 0 {
            return Err(err);
        }
    }
    Ok(())
}

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::other("path contains a NUL byte"))
}

/// `/a/b` → `a/b` (what to join onto the skeleton).
fn relative(p: &Path) -> PathBuf {
    p.components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_skeleton_has_a_place_for_every_grant_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("root/ws");
        std::fs::create_dir_all(&ws).unwrap();
        let fd = nix::fcntl::open(
            &ws,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap();
        let held = Grant::Held {
            fd: std::sync::Arc::new(fd),
            path: ws.clone(),
        };
        let access = RunAccess {
            read_write: vec![held.clone()],
            ..RunAccess::default()
        };
        let skel = dir.path().join("skel");
        let plan = MountPlan::prepare(&skel, &access, &[], &held).unwrap();
        assert!(skel.join("usr").is_dir());
        assert!(skel.join(relative(&ws)).is_dir());
        assert!(skel.join("dev/null").is_file());
        assert!(
            !skel.join("var").exists() && !skel.join("run").exists() && !skel.join("home").exists()
        );
        assert!(plan.proc_target.is_some());
        assert!(
            plan.binds
                .iter()
                .any(|b| b.source.as_bytes() == ws.as_os_str().as_bytes() && b.expect.is_some()),
            "the workspace's mount is checked against its descriptor"
        );
        // /usr/bin is under /usr: mounted once, through /usr.
        assert!(
            !plan
                .binds
                .iter()
                .any(|b| b.source.to_bytes() == b"/usr/bin")
        );
    }
}
