//! The `pre_exec` hook: runs in the forked child, before exec, so it may only make
//! async-signal-safe calls (raw syscalls, no allocation).

use std::io;

use crate::config::Limits;

/// Applies everything the child must have before terraform starts.
///
/// # Safety
/// Called between fork and exec: it only issues syscalls and touches no locks or heap.
pub unsafe fn prepare(limits: &Limits) -> io::Result<()> {
    // A new session, so the run is its own process group: the group is what timeouts kill,
    // and no controlling terminal leaks in.
    if unsafe { libc::setsid() } < 0 {
        return Err(io::Error::last_os_error());
    }
    let set = |resource, value: u64| -> io::Result<()> {
        let lim = libc::rlimit {
            rlim_cur: value as libc::rlim_t,
            rlim_max: value as libc::rlim_t,
        };
        if unsafe { libc::setrlimit(resource, &lim) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    set(libc::RLIMIT_CORE, 0)?;
    set(libc::RLIMIT_CPU, limits.cpu_secs)?;
    set(libc::RLIMIT_AS, limits.address_space_bytes)?;
    set(libc::RLIMIT_NOFILE, limits.open_files)?;
    set(libc::RLIMIT_NPROC, limits.processes)?;
    set(libc::RLIMIT_FSIZE, limits.file_size_bytes)?;
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
        // If the server dies, the run dies with it rather than running on unsupervised.
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::getppid() == 1 {
            return Err(io::Error::other("server exited during spawn"));
        }
        libc::umask(0o077);
        // Every descriptor beyond stdio is closed at exec (the standard library's own
        // exec-error pipe is already close-on-exec, so it keeps working).
        let r = libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
