//! The `pre_exec` hook: runs in the forked child, before exec, so it only makes
//! async-signal-safe calls (syscall wrappers; allocation only on error paths).
//!
//! Order matters: session and limits first; then the namespaces, which need a fork (a new PID
//! namespace applies to children, so the child forks once more and the grandchild, PID 1 of the
//! namespace, becomes terraform while the child stays behind to relay its exit status) and the
//! run's mount namespace view (`mounts`); then Landlock and last seccomp, whose deny list
//! includes the very calls made before it.

use std::io;
use std::os::fd::AsFd;

use nix::sys::prctl;
use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::Signal;
use nix::sys::stat::{Mode, umask};
use nix::unistd::{getppid, setsid};

use super::kernel::ChildSetup;

/// Applies everything the child must have before terraform starts.
///
/// # Safety
/// Called between fork and exec.
pub unsafe fn prepare(setup: &mut ChildSetup) -> io::Result<()> {
    // A new session, so the run is its own process group: the group is what timeouts kill,
    // and no controlling terminal leaks in.
    setsid()?;
    // Into the run's own cgroup first, so every process it ever starts is in it too.
    if let Some(fd) = setup.cgroup_procs {
        // SAFETY: a write of a static buffer to a descriptor the parent keeps open.
        if unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) } != 1 {
            return Err(io::Error::last_os_error());
        }
    }
    let limits = &setup.limits;
    let set = |resource, value: u64| setrlimit(resource, value, value);
    set(Resource::RLIMIT_CORE, 0)?;
    set(Resource::RLIMIT_CPU, limits.cpu_secs)?;
    set(Resource::RLIMIT_AS, limits.address_space_bytes)?;
    set(Resource::RLIMIT_NOFILE, limits.open_files)?;
    set(Resource::RLIMIT_NPROC, limits.processes)?;
    set(Resource::RLIMIT_FSIZE, limits.file_size_bytes)?;
    prctl::set_no_new_privs()?;
    // If the server dies, the run dies with it rather than running on unsupervised.
    prctl::set_pdeathsig(Signal::SIGKILL)?;
    // The server may itself have a subreaper above it, so "re-parented" means "not the server
    // any more", not "parent is 1".
    if getppid().as_raw() != setup.server_pid {
        return Err(io::Error::other("server exited during spawn"));
    }
    umask(Mode::from_bits_truncate(0o077));
    // Every descriptor beyond stdio is closed at exec (the standard library's own exec-error
    // pipe is already close-on-exec, so it keeps working).
    close_range(3, libc::CLOSE_RANGE_CLOEXEC)?;
    // The working directory is the descriptor that was checked, never a name (a name can be
    // swapped for a symlink between the check and this moment).
    if let Some(cwd) = &setup.cwd {
        nix::unistd::fchdir(cwd)?;
    }

    if setup.namespaces != 0 {
        // SAFETY: plain syscalls; the child is single-threaded after fork.
        unsafe {
            if libc::unshare(setup.namespaces) != 0 {
                return Err(io::Error::last_os_error());
            }
            match libc::fork() {
                -1 => return Err(io::Error::last_os_error()),
                0 => {
                    // PID 1 of the new namespace: when it exits, the kernel kills everything
                    // left in the namespace, including setsid()'d and double-forked descendants.
                    prctl::set_pdeathsig(Signal::SIGKILL)?;
                }
                pid => relay(pid),
            }
        }
        // PID 1 of the namespace enters the run's own view of the file system (its /proc must
        // be mounted from inside the PID namespace).
        if let Some(mounts) = &setup.mounts {
            // SAFETY: we are between fork and exec; `enter` makes only syscalls.
            unsafe { mounts.enter(setup.landlock_fd.as_ref().map(|f| f.as_fd()))? };
        }
    }
    if let Some(ruleset) = setup.landlock.take() {
        ruleset.restrict_self().map_err(io::Error::other)?;
    }
    if let Some(filters) = &setup.seccomp {
        for f in filters.iter() {
            seccompiler::apply_filter(f).map_err(io::Error::other)?;
        }
    }
    Ok(())
}

fn close_range(first: u32, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: a plain syscall with integer arguments.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, flags) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The child that stayed outside the namespace: it holds nothing (so the server's pipes and its
/// exec-error pipe belong to terraform alone), ignores the group's SIGINT (terraform handles
/// it), waits, and exits the way terraform did.
///
/// # Safety
/// Called between fork and exec; never returns.
unsafe fn relay(pid: libc::pid_t) -> ! {
    // SAFETY: async-signal-safe calls only.
    unsafe {
        let _ = close_range(0, 0);
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        let mut status = 0;
        while libc::waitpid(pid, &mut status, 0) < 0 {
            if *libc::__errno_location() != libc::EINTR {
                libc::_exit(127);
            }
        }
        if libc::WIFEXITED(status) {
            libc::_exit(libc::WEXITSTATUS(status));
        }
        if libc::WIFSIGNALED(status) {
            let sig = libc::WTERMSIG(status);
            libc::signal(sig, libc::SIG_DFL);
            libc::kill(libc::getpid(), sig);
            libc::_exit(128 + sig);
        }
        libc::_exit(127)
    }
}
