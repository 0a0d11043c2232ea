//! The `pre_exec` hook: runs in the forked child, before exec, so it may only make
//! async-signal-safe calls (nix's thin syscall wrappers, no allocation, no locks).

use std::io;

use nix::sys::prctl;
use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::Signal;
use nix::sys::stat::{Mode, umask};
use nix::unistd::{getppid, setsid};

use crate::config::Limits;

/// Applies everything the child must have before terraform starts.
///
/// # Safety
/// Called between fork and exec: it only issues syscalls and touches no locks or heap.
pub unsafe fn prepare(limits: &Limits) -> io::Result<()> {
    // A new session, so the run is its own process group: the group is what timeouts kill,
    // and no controlling terminal leaks in.
    setsid()?;
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
    if getppid().as_raw() == 1 {
        return Err(io::Error::other("server exited during spawn"));
    }
    umask(Mode::from_bits_truncate(0o077));
    // Every descriptor beyond stdio is closed at exec (the standard library's own exec-error
    // pipe is already close-on-exec, so it keeps working). nix has no wrapper for this one.
    // SAFETY: a plain syscall with integer arguments.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
