//! Creating terraform's process: one `clone3` that starts the child inside the run's cgroup
//! (`CLONE_INTO_CGROUP`) and its new user, PID, mount and network namespaces, with a pidfd to
//! wait on — no relay process, no migration into the cgroup afterwards.
//!
//! Why not `std::process::Command` with a `pre_exec` hook: it can only fork, so the child had
//! to `unshare` and fork again (a new PID namespace applies to children) and write itself into
//! its cgroup. That write moves a process between cgroups, which waits for an RCU grace period:
//! 8–16 ms on every run, more than everything else the sandbox costs together. Created by
//! `clone3`, the child is born where it belongs, and terraform is PID 1 of its namespace.
//!
//! Where `clone3` is refused (Linux before 5.3, or a container seccomp profile that answers
//! `ENOSYS` to make glibc fall back), the classic `clone` takes the same namespace flags and
//! the child joins its cgroup by writing `cgroup.procs`.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
#[cfg(test)]
use std::sync::Arc;

use super::child;
use super::setup::ChildSetup;
use super::step::{ChildError, Step};

/// The kernel's `struct clone_args` (version 2, with `cgroup`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// A started terraform process.
#[derive(Debug)]
pub struct Spawned {
    pub pid: libc::pid_t,
    /// Readable once the process has exited; then `waitpid(pid)` reaps it without blocking.
    pub pidfd: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnFailure {
    /// The server could not create the process.
    #[error("{0}")]
    Server(#[from] io::Error),
    /// The child failed a step of its set-up, or the exec itself.
    #[error(transparent)]
    Child(#[from] ChildError),
}

/// Starts `program` with `argv` (including argv\[0\]) and exactly `env`, applying `setup` in the
/// child; stdin is `/dev/null`, stdout and stderr are returned as pipes.
pub fn spawn(
    program: &CStr,
    argv: &[CString],
    env: &[CString],
    setup: &mut ChildSetup,
) -> Result<Spawned, SpawnFailure> {
    spawn_with(program, argv, env, setup, Call::Clone3)
}

/// Which system call creates the child: `clone3`, falling back to `clone` where it is refused
/// (or `clone` directly, so tests can cover that path on a kernel that has both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Clone3,
    #[cfg_attr(not(test), allow(dead_code))]
    Clone,
}

fn spawn_with(
    program: &CStr,
    argv: &[CString],
    env: &[CString],
    setup: &mut ChildSetup,
    call: Call,
) -> Result<Spawned, SpawnFailure> {
    let argv_ptrs: Vec<*const libc::c_char> = argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let env_ptrs: Vec<*const libc::c_char> = env
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let devnull = open_devnull()?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (report_r, report_w) = pipe()?;
    let fds = Fds {
        stdin: devnull.as_raw_fd(),
        stdout: out_w.as_raw_fd(),
        stderr: err_w.as_raw_fd(),
        report: report_w.as_raw_fd(),
    };
    let ns = setup.namespaces as u64;
    let cgroup = setup.cgroup.as_ref().map(|c| c.dir_fd.as_raw_fd());

    let mut pidfd: libc::c_int = -1;
    let mut args = CloneArgs {
        flags: libc::CLONE_PIDFD as u64 | ns | cgroup.map_or(0, |_| CLONE_INTO_CGROUP),
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.map_or(0, |fd| fd as u64),
        ..CloneArgs::default()
    };
    // No signal handler of the server may run in the child before it has reset them all: the
    // spawning thread blocks every signal across the clone (the child clears its mask once
    // the handlers are back to their defaults), then restores its own mask.
    let blocked = BlockSignals::new();
    // SAFETY: `clone3` without CLONE_VM behaves like fork: the child gets a copy of this
    // address space with one thread, and runs only `child_main`, which never returns.
    let mut pid = match call {
        Call::Clone3 => unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &mut args as *mut CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        },
        Call::Clone => {
            // SAFETY: setting errno for the check below.
            unsafe { *libc::__errno_location() = libc::ENOSYS };
            -1
        }
    };
    // ENOSYS: no clone3 (Linux before 5.3). EPERM: container seccomp profiles of before
    // 2021 refuse clone3 outright. Either way the classic call may still be allowed.
    let refused = matches!(
        io::Error::last_os_error().raw_os_error(),
        Some(libc::ENOSYS | libc::EPERM)
    );
    if pid < 0 && refused && cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
        // The classic call: the same namespaces, the pidfd in `parent_tid` (its third argument
        // on x86_64 and aarch64; other architectures order them differently); the child joins
        // its cgroup itself.
        setup.cgroup_procs = setup.cgroup.as_ref().map(|c| c.procs.as_raw_fd());
        // SAFETY: as above; with a null stack the child runs on a copy of this one.
        pid = unsafe {
            libc::syscall(
                libc::SYS_clone,
                libc::CLONE_PIDFD as libc::c_ulong | ns as libc::c_ulong | libc::SIGCHLD as u64,
                0usize,
                &mut pidfd as *mut libc::c_int,
                0usize,
                0usize,
            )
        };
    }
    if pid == 0 {
        // SAFETY: we are the child.
        unsafe { child_main(program, &argv_ptrs, &env_ptrs, fds, setup) }
    }
    let clone_error = io::Error::last_os_error();
    drop(blocked);
    if pid < 0 {
        return Err(SpawnFailure::Server(clone_error));
    }
    let pid = pid as libc::pid_t;
    // SAFETY: the kernel wrote a new descriptor there.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    // Only the child may hold the write ends: EOF on the report pipe then means exec.
    drop((out_w, err_w, report_w, devnull));
    match read_report(&report_r) {
        Ok(None) => Ok(Spawned {
            pid,
            pidfd,
            stdout: out_r,
            stderr: err_r,
        }),
        Ok(Some(e)) => {
            let _ = reap(pid);
            Err(SpawnFailure::Child(e))
        }
        Err(e) => {
            // SAFETY: signalling our own child, which is then reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = reap(pid);
            Err(SpawnFailure::Server(e))
        }
    }
}

/// Waits for the process to be gone and collects it: its wait status.
pub fn reap(pid: libc::pid_t) -> io::Result<libc::c_int> {
    let mut status = 0;
    // SAFETY: waiting for our own child.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
    Ok(status)
}

/// Every signal blocked in this thread until dropped, when the previous mask comes back.
struct BlockSignals {
    previous: libc::sigset_t,
}

impl BlockSignals {
    fn new() -> BlockSignals {
        // SAFETY: plain signal-mask calls on local sets.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut previous: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut previous);
            BlockSignals { previous }
        }
    }
}

impl Drop for BlockSignals {
    fn drop(&mut self) {
        // SAFETY: restoring the mask saved by `new`.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.previous, std::ptr::null_mut());
        }
    }
}

#[derive(Clone, Copy)]
struct Fds {
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    report: RawFd,
}

/// The child: connect the streams, apply the set-up, exec; on failure report the step and
/// exit.
///
/// # Safety
/// Only in the child of `clone3`/`clone`; never returns.
unsafe fn child_main(
    program: &CStr,
    argv: &[*const libc::c_char],
    env: &[*const libc::c_char],
    fds: Fds,
    setup: &mut ChildSetup,
) -> ! {
    // SAFETY: async-signal-safe calls on data prepared before the clone.
    unsafe {
        let mut run = || -> Result<(), ChildError> {
            child::install(fds.stdin, 0)?;
            child::install(fds.stdout, 1)?;
            child::install(fds.stderr, 2)?;
            child::prepare(setup)?;
            libc::execve(program.as_ptr(), argv.as_ptr(), env.as_ptr());
            Err(ChildError::last(Step::Exec))
        };
        let err = match run() {
            Err(e) => e,
            Ok(()) => ChildError::new(Step::Exec, libc::EIO),
        };
        let bytes = err.encode();
        libc::write(fds.report, bytes.as_ptr().cast(), bytes.len());
        libc::_exit(127)
    }
}

/// `None` when the child reached exec (the pipe closed with nothing written).
fn read_report(fd: &OwnedFd) -> io::Result<Option<ChildError>> {
    let mut buf = [0u8; 8];
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: reading into a local buffer.
        let n = unsafe {
            libc::read(
                fd.as_raw_fd(),
                buf[got..].as_mut_ptr().cast(),
                buf.len() - got,
            )
        };
        match n {
            0 => break,
            n if n > 0 => got += n as usize,
            _ => {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINTR) {
                    return Err(e);
                }
            }
        }
    }
    match got {
        0 => Ok(None),
        8 => Ok(Some(ChildError::decode(buf))),
        _ => Err(io::Error::other("the child sent a short report")),
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: the kernel fills the array with two new descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both are new descriptors we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn open_devnull() -> io::Result<OwnedFd> {
    // SAFETY: opening a constant path.
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::cgroup::RunCgroups;
    use crate::sandbox::setup::Limits;

    fn c(s: &str) -> CString {
        CString::new(s).unwrap()
    }

    /// Runs `sh -c script` and returns (stdout, wait status).
    fn sh(script: &str, setup: &mut ChildSetup, call: Call) -> Result<(String, i32), SpawnFailure> {
        use std::io::Read;
        let argv = [c("sh"), c("-c"), c(script)];
        let env = [c("PATH=/usr/bin:/bin"), c("ONLY=this")];
        let child = spawn_with(c"/bin/sh", &argv, &env, setup, call)?;
        let mut out = String::new();
        std::fs::File::from(child.stdout)
            .read_to_string(&mut out)
            .unwrap();
        Ok((out, reap(child.pid).unwrap()))
    }

    #[test]
    fn the_child_gets_exactly_its_arguments_and_environment() {
        for call in [Call::Clone3, Call::Clone] {
            let mut setup = ChildSetup::plain(Limits::default());
            let (out, status) = sh("echo \"$ONLY\"; env | wc -l", &mut setup, call).unwrap();
            assert_eq!(status, 0, "{call:?}");
            let lines: Vec<&str> = out.lines().collect();
            assert_eq!(lines[0], "this", "{call:?}");
            // PATH, ONLY and the shell's own PWD/SHLVL/_ at most.
            assert!(
                lines[1].trim().parse::<u32>().unwrap() <= 5,
                "{call:?}: {out}"
            );
        }
    }

    #[test]
    fn a_failed_step_is_reported_with_its_errno() {
        let mut setup = ChildSetup::plain(Limits::default());
        let err = spawn(
            c"/nonexistent/terraform",
            &[c("terraform")],
            &[],
            &mut setup,
        )
        .unwrap_err();
        match err {
            SpawnFailure::Child(e) => {
                assert_eq!((e.step, e.errno), (Step::Exec, libc::ENOENT));
                assert!(e.to_string().starts_with("executing terraform: "), "{e}");
            }
            other => panic!("{other:?}"),
        }
        // A working directory that is not a directory.
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut setup = ChildSetup::plain(Limits::default());
        setup.cwd = Some(Arc::new(OwnedFd::from(file.reopen().unwrap())));
        match sh("true", &mut setup, Call::Clone3) {
            Err(SpawnFailure::Child(e)) => {
                assert_eq!((e.step, e.errno), (Step::WorkingDir, libc::ENOTDIR))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_child_is_pid_1_of_its_namespace_and_born_in_its_cgroup() {
        let Ok(cgroups) = RunCgroups::open() else {
            eprintln!("no cgroup v2 here: the namespace part only");
            return;
        };
        for call in [Call::Clone3, Call::Clone] {
            let cg = cgroups.create().unwrap();
            let name = cg
                .path_for_tests()
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            let mut setup = ChildSetup::plain(Limits::default());
            setup.namespaces = libc::CLONE_NEWUSER | libc::CLONE_NEWPID;
            setup.cgroup = Some(cg);
            let (out, status) = sh("echo $$; cat /proc/self/cgroup", &mut setup, call).unwrap();
            assert_eq!(status, 0, "{call:?}: {out}");
            assert_eq!(out.lines().next(), Some("1"), "{call:?}: {out}");
            assert!(out.contains(&name), "{call:?}: not in its cgroup: {out}");
            // Joining by writing cgroup.procs is only for the fallback.
            assert_eq!(
                setup.cgroup_procs.is_some(),
                call == Call::Clone,
                "{call:?}"
            );
        }
    }
}
