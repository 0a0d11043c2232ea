//! What the child does between its creation and `execve`: it runs in a copy of a multi-threaded
//! server, so it only makes async-signal-safe calls (syscall wrappers on data prepared before
//! the spawn) and never allocates — a failure is reported as a [`ChildError`] (a step and an
//! errno), which the spawn sends back to the server through a pipe.
//!
//! The child is created by `clone3` already inside the run's cgroup and namespaces (see
//! `spawn`), so terraform itself is PID 1 of its PID namespace: when it exits, the kernel kills
//! whatever is left there. Order matters: session and limits first; then the run's own view of
//! the file system (`mounts`); then Landlock, and last seccomp, whose deny list includes the
//! very calls made before it.

use std::os::fd::{AsFd, AsRawFd, RawFd};

use super::setup::ChildSetup;
pub use super::step::{ChildError, Step, check};

/// Applies everything the child must have before terraform starts.
///
/// # Safety
/// Called in the child between `clone3` and `execve`.
pub unsafe fn prepare(setup: &ChildSetup) -> Result<(), ChildError> {
    // SAFETY: plain syscalls on integers and on data prepared before the spawn.
    unsafe {
        // Signals arrive blocked (see `spawn`). Every handler goes back to its default
        // first — the server's handlers must never run here, and an ignored signal (SIGPIPE,
        // or whatever the server was started with) would survive exec — then the mask is
        // cleared, so terraform starts with the defaults.
        for sig in 1..=libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                // Signals the C library reserves for itself refuse this; they need no reset.
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        check(
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) as _,
            Step::Signals,
        )?;
        // A new session, so the run is its own process group: the group is what timeouts
        // kill, and no controlling terminal leaks in.
        check(libc::setsid() as _, Step::Session)?;
        // Where `clone3` could not place the child in its cgroup (an older kernel, a container
        // that refuses `clone3`), it joins now, before it can start anything.
        if let Some(fd) = setup.cgroup_procs
            && libc::write(fd, b"0".as_ptr().cast(), 1) != 1
        {
            return Err(ChildError::last(Step::Cgroup));
        }
        let limits = &setup.limits;
        for (resource, value) in [
            (libc::RLIMIT_CORE, 0),
            (libc::RLIMIT_CPU, limits.cpu_secs),
            (libc::RLIMIT_AS, limits.address_space_bytes),
            (libc::RLIMIT_NOFILE, limits.open_files),
            (libc::RLIMIT_NPROC, limits.processes),
            (libc::RLIMIT_FSIZE, limits.file_size_bytes),
        ] {
            let lim = libc::rlimit {
                rlim_cur: value as libc::rlim_t,
                rlim_max: value as libc::rlim_t,
            };
            check(libc::setrlimit(resource, &lim) as _, Step::Limits)?;
        }
        check(
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) as _,
            Step::NoNewPrivs,
        )?;
        // If the server dies, the run dies with it rather than running on unsupervised. The
        // signal follows the *thread* that created the child: runs are spawned on the
        // runtime's worker threads, which live as long as the server (never spawn one from
        // `spawn_blocking`, whose threads exit when idle).
        check(
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) as _,
            Step::DeathSignal,
        )?;
        // ... unless it died before the line above: then nobody would send that signal.
        if server_gone(setup) {
            return Err(ChildError::new(Step::ServerGone, libc::ESRCH));
        }
        libc::umask(0o077);
        // Every descriptor beyond stdio is closed at exec (the spawn's own report pipe is
        // close-on-exec already, so it keeps working until then).
        check(
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            ),
            Step::Descriptors,
        )?;
        // The working directory is the descriptor that was checked, never a name (a name can
        // be swapped for a symlink between the check and this moment).
        if let Some(cwd) = &setup.cwd {
            check(libc::fchdir(cwd.as_raw_fd()) as _, Step::WorkingDir)?;
        }
        if let Some(mounts) = &setup.mounts {
            mounts.enter(setup.landlock.as_ref().map(|f| f.as_fd()))?;
        }
        // no_new_privs is set above, as Landlock requires of an unprivileged process.
        if let Some(ruleset) = &setup.landlock {
            check(
                libc::syscall(libc::SYS_landlock_restrict_self, ruleset.as_raw_fd(), 0u32),
                Step::Landlock,
            )?;
        }
    }
    if let Some(filters) = &setup.seccomp {
        for f in filters.iter() {
            seccompiler::apply_filter(f)
                .map_err(|_| ChildError::new(Step::Seccomp, libc::EPERM))?;
        }
    }
    Ok(())
}

/// Whether the server exited after creating this child. With a PID namespace the child has no
/// visible parent (`getppid` is 0), so it asks the server's pidfd, which becomes readable when
/// the server has exited; without one, its parent must still be the server.
///
/// # Safety
/// Between clone and exec: syscalls only.
unsafe fn server_gone(setup: &ChildSetup) -> bool {
    // SAFETY: plain syscalls.
    unsafe {
        if setup.namespaces & libc::CLONE_NEWPID == 0 && libc::getppid() != setup.server_pid {
            return true;
        }
        match setup.server_pidfd {
            Some(fd) => {
                let mut p = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                libc::poll(&mut p, 1, 0) != 0
            }
            // Without a pidfd a child in a PID namespace cannot tell: it does not run.
            None => setup.namespaces & libc::CLONE_NEWPID != 0,
        }
    }
}

/// Puts `fd` at `target` for the exec (a descriptor already there loses close-on-exec).
///
/// # Safety
/// Between clone and exec: syscalls only.
pub(crate) unsafe fn install(fd: RawFd, target: RawFd) -> Result<(), ChildError> {
    // SAFETY: plain syscalls on integers.
    unsafe {
        if fd == target {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            check(
                libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) as _,
                Step::Stdio,
            )
        } else {
            check(libc::dup2(fd, target) as _, Step::Stdio)
        }
    }
}
