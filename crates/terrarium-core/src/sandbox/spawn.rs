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

/// The child shares the server's memory until it execs, and the spawning thread waits until
/// then (what `posix_spawn` does): no copy of the server's page tables, no copy-on-write fault
/// in either process, ~2 ms less per run. The child writes no server data but its own stack
/// and the spawning thread's `errno` (see `child_main`). Starting a `clone3` child on a new stack takes a few instructions of
/// assembly, written for x86_64; elsewhere `clone3` copies the address space like `fork`.
#[cfg(target_arch = "x86_64")]
const SHARE_UNTIL_EXEC: u64 = (libc::CLONE_VM | libc::CLONE_VFORK) as u64;
#[cfg(not(target_arch = "x86_64"))]
const SHARE_UNTIL_EXEC: u64 = 0;

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
    let mut child = ChildArgs {
        program,
        argv: &argv_ptrs,
        env: &env_ptrs,
        fds,
        setup,
    };
    let stack = ChildStack::new()?;

    let mut pidfd: libc::c_int = -1;
    let mut args = CloneArgs {
        flags: libc::CLONE_PIDFD as u64
            | ns
            | cgroup.map_or(0, |_| CLONE_INTO_CGROUP)
            | SHARE_UNTIL_EXEC,
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        // A `clone3` child without CLONE_VM runs on a copy of this stack.
        stack: if SHARE_UNTIL_EXEC != 0 {
            stack.base() as u64
        } else {
            0
        },
        stack_size: if SHARE_UNTIL_EXEC != 0 {
            stack.size() as u64
        } else {
            0
        },
        cgroup: cgroup.map_or(0, |fd| fd as u64),
        ..CloneArgs::default()
    };
    // No signal handler of the server may run in the child before it has reset them all: the
    // spawning thread blocks every signal across the clone (the child clears its mask once
    // the handlers are back to their defaults), then restores its own mask.
    let blocked = BlockSignals::new();
    let mut pid = match call {
        // SAFETY: see `clone3_child`; `child` outlives the call (the parent is suspended until
        // the child has exec'd or exited).
        Call::Clone3 => unsafe { clone3_child(&mut args, &mut child) },
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
    if pid < 0 && refused {
        // The classic call, through the C library's wrapper (which starts the child on its
        // stack in `child_entry`): the same namespaces, the pidfd in `parent_tid`; the child
        // joins its cgroup itself.
        child.setup.cgroup_procs = child.setup.cgroup.as_ref().map(|c| c.procs.as_raw_fd());
        // SAFETY: as for `clone3_child`: the child runs only `child_entry` on its own stack,
        // sharing this address space until exec with this thread suspended.
        pid = unsafe {
            libc::clone(
                child_entry,
                stack.top(),
                libc::CLONE_VM
                    | libc::CLONE_VFORK
                    | libc::CLONE_PIDFD
                    | ns as libc::c_int
                    | libc::SIGCHLD,
                (&mut child as *mut ChildArgs).cast(),
                &mut pidfd as *mut libc::c_int,
            )
        } as libc::c_long;
    }
    // Meaningful only when the clone failed: a child that shared this thread's memory may have
    // written its errno since.
    let clone_error = io::Error::last_os_error();
    drop(blocked);
    // The child has exec'd or exited: its stack is free.
    drop(stack);
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

/// What the child needs, on the spawning thread's stack (which stays put: that thread is
/// suspended until the child has exec'd or exited).
struct ChildArgs<'a> {
    program: &'a CStr,
    argv: &'a [*const libc::c_char],
    env: &'a [*const libc::c_char],
    fds: Fds,
    setup: &'a mut ChildSetup,
}

/// Creates the child with `clone3` and starts it in [`child_entry`] on the stack `args` names.
///
/// # Safety
/// `args.stack` is a fresh stack of `args.stack_size` bytes (16-byte aligned top) that nothing
/// else uses; `child` stays valid until the child has exec'd or exited (CLONE_VFORK).
#[cfg(target_arch = "x86_64")]
unsafe fn clone3_child(args: &mut CloneArgs, child: &mut ChildArgs) -> libc::c_long {
    let ret: libc::c_long;
    // The kernel returns twice: 0 in the child, which is on its new stack with no frame to
    // return to, so it calls the entry point at once (and faults should it ever return).
    // SAFETY: the clone3 system call; registers other than rax, rcx and r11 survive it.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r12",
            "call r13",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") args as *mut CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") child as *mut ChildArgs,
            in("r13") child_entry as extern "C" fn(*mut libc::c_void) -> libc::c_int,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    if ret < 0 {
        // SAFETY: the raw call returns -errno; set errno as the C wrappers do.
        unsafe { *libc::__errno_location() = -ret as libc::c_int };
        return -1;
    }
    ret
}

/// Creates the child with `clone3`, a copy of this address space (see [`SHARE_UNTIL_EXEC`]).
///
/// # Safety
/// The child runs only [`child_entry`], which never returns.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn clone3_child(args: &mut CloneArgs, child: &mut ChildArgs) -> libc::c_long {
    // SAFETY: without CLONE_VM this behaves like fork.
    unsafe {
        let pid = libc::syscall(
            libc::SYS_clone3,
            args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        );
        if pid == 0 {
            child_entry((child as *mut ChildArgs).cast());
        }
        pid
    }
}

/// The child's stack: mapped per spawn (pages are only touched as used), with a guard page
/// below it, unmapped once the child has exec'd.
struct ChildStack {
    map: *mut libc::c_void,
    len: usize,
    guard: usize,
}

impl ChildStack {
    /// Far more than the child's set-up needs (a few KiB): its frames are small and it never
    /// recurses.
    const SIZE: usize = 256 << 10;

    fn new() -> io::Result<ChildStack> {
        // SAFETY: a query.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        let len = Self::SIZE + page;
        // SAFETY: a new private anonymous mapping; the first page becomes the guard.
        unsafe {
            let map = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
                -1,
                0,
            );
            if map == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            let stack = ChildStack {
                map,
                len,
                guard: page,
            };
            if libc::mprotect(map, page, libc::PROT_NONE) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(stack)
        }
    }

    /// The lowest usable address.
    fn base(&self) -> *mut libc::c_void {
        // SAFETY: within the mapping.
        unsafe { self.map.cast::<u8>().add(self.guard).cast() }
    }

    fn size(&self) -> usize {
        self.len - self.guard
    }

    /// One past the highest address (stacks grow down); page-aligned, so 16-byte aligned.
    fn top(&self) -> *mut libc::c_void {
        // SAFETY: one past the end of the mapping.
        unsafe { self.map.cast::<u8>().add(self.len).cast() }
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: our own mapping, no longer used by anyone.
        unsafe {
            libc::munmap(self.map, self.len);
        }
    }
}

/// Where the child starts, on its own stack.
extern "C" fn child_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the spawn's `ChildArgs`, alive while the parent waits for this child.
    unsafe {
        let args = &*(arg as *const ChildArgs);
        child_main(args.program, args.argv, args.env, args.fds, &*args.setup)
    }
}

/// The child: connect the streams, apply the set-up, exec; on failure report the step and
/// exit. It shares the server's memory until exec and writes none of its data: it reads
/// `setup` and writes its own stack (and, through the C library, the suspended spawning
/// thread's `errno`, which that thread reads only when the clone failed).
///
/// # Safety
/// Only in the child of `clone3`/`clone`; never returns.
unsafe fn child_main(
    program: &CStr,
    argv: &[*const libc::c_char],
    env: &[*const libc::c_char],
    fds: Fds,
    setup: &ChildSetup,
) -> ! {
    // SAFETY: async-signal-safe calls on data prepared before the clone.
    unsafe {
        let run = || -> Result<(), ChildError> {
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
    fn children_spawned_from_many_threads_at_once_each_run_their_own_command() {
        // The child shares the spawning thread's memory until exec: concurrent spawns, each
        // with its own stack, arguments and result, on both system calls.
        std::thread::scope(|scope| {
            for t in 0..4 {
                scope.spawn(move || {
                    for i in 0..25 {
                        let call = if i % 2 == 0 {
                            Call::Clone3
                        } else {
                            Call::Clone
                        };
                        let mut setup = ChildSetup::plain(Limits::default());
                        let (out, status) = sh(&format!("echo {t}-{i}"), &mut setup, call).unwrap();
                        assert_eq!(status, 0, "{call:?}");
                        assert_eq!(out.trim(), format!("{t}-{i}"), "{call:?}");
                    }
                });
            }
        });
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
