//! What one run's child applies before exec ([`ChildSetup`]), prepared by `kernel` in the
//! server and applied by `child`.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;

use seccompiler::BpfProgram;

use super::mounts::MountPlan;

/// Resource limits applied to every terraform process (and inherited by what it starts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub cpu_secs: u64,
    pub address_space_bytes: u64,
    pub open_files: u64,
    pub processes: u64,
    pub file_size_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            cpu_secs: 900,
            address_space_bytes: 8 << 30,
            open_files: 4096,
            processes: 4096,
            file_size_bytes: 1 << 30,
        }
    }
}

/// Everything the child applies before exec (see `child::prepare`).
pub struct ChildSetup {
    pub limits: Limits,
    /// The server's pid, taken before the spawn: without a PID namespace, the child's parent
    /// must still be it.
    pub server_pid: libc::pid_t,
    /// The server's pidfd, which the child polls to learn the server is still there.
    pub server_pidfd: Option<libc::c_int>,
    /// Namespace flags for `clone3`; 0 for none.
    pub namespaces: libc::c_int,
    /// The run's Landlock ruleset, by its descriptor: the child adds the rule for the `/proc`
    /// it mounts itself (a new superblock no rule made in the server can name), then restricts
    /// itself with it. A descriptor, not the `landlock` crate's ruleset value: the child shares
    /// the server's memory until exec (see `spawn`) and must not move or drop anything in it.
    pub landlock: Option<OwnedFd>,
    pub seccomp: Option<Arc<Vec<BpfProgram>>>,
    /// The directory the run starts in, held open: the child `fchdir`s to it (never a name).
    pub cwd: Option<Arc<OwnedFd>>,
    /// The run's own mount namespace view (with the namespaces layer).
    pub mounts: Option<MountPlan>,
    /// The run's cgroup, where the server may create cgroups: the child is created in it, the
    /// parent keeps it (to kill it at the end).
    pub cgroup: Option<super::cgroup::RunCgroup>,
    /// Raw descriptor of the cgroup's `cgroup.procs`, for a child that could not be created
    /// in the cgroup and joins it itself; valid in the child until exec.
    pub cgroup_procs: Option<libc::c_int>,
}

impl std::fmt::Debug for ChildSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSetup")
            .field("limits", &self.limits)
            .field("namespaces", &self.namespaces)
            .field("landlock", &self.landlock.is_some())
            .field("seccomp", &self.seccomp.is_some())
            .field("cwd", &self.cwd)
            .field("mounts", &self.mounts)
            .finish()
    }
}

impl ChildSetup {
    /// Process-level limits only (no kernel layers).
    pub fn plain(limits: Limits) -> ChildSetup {
        ChildSetup {
            limits,
            server_pid: std::process::id() as libc::pid_t,
            server_pidfd: server_pidfd(),
            namespaces: 0,
            landlock: None,
            seccomp: None,
            cwd: None,
            mounts: None,
            cgroup: None,
            cgroup_procs: None,
        }
    }

    /// The skeleton of the mount namespace view, to remove once the run has ended.
    pub fn skeleton(&self) -> Option<&Path> {
        self.mounts.as_ref().map(|m| m.skeleton())
    }
}

/// A pidfd of the server itself, opened once: a child in a new PID namespace polls it to learn
/// whether the server exited before its parent-death signal was set.
fn server_pidfd() -> Option<libc::c_int> {
    use std::os::fd::{AsRawFd, FromRawFd};
    static FD: std::sync::OnceLock<Option<OwnedFd>> = std::sync::OnceLock::new();
    FD.get_or_init(|| {
        // SAFETY: a plain syscall; the result is a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
        // SAFETY: a new descriptor we own.
        (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
    })
    .as_ref()
    .map(|f| f.as_raw_fd())
}
