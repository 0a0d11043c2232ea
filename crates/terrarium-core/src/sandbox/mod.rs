//! The child side of a run: what terraform's process looks like and how it is ended.
//!
//! `env` builds the scrubbed environment; `kernel` knows which kernel layers this machine can
//! apply and prepares them per run (`access`: Landlock rules, `seccomp`: the syscall filter);
//! `setup` is what one run's child gets; `spawn` creates it with one `clone3`, already in its
//! cgroup and namespaces, and `child` applies the rest between clone and exec (session,
//! rlimits, no-new-privs, parent-death signal, umask, no inherited descriptors, the mount view,
//! Landlock, seccomp), reporting a failed `step`; `capture` keeps a bounded copy of each output
//! stream; `process` runs, waits, and on timeout or cancellation interrupts and then kills the
//! whole process group and cgroup.

pub mod access;
pub mod capture;
pub mod cgroup;
pub mod child;
pub mod env;
pub mod kernel;
pub mod mounts;
pub mod process;
pub mod reaper;
pub mod seccomp;
pub mod setup;
pub mod spawn;
pub mod step;

pub use capture::Captured;
pub use kernel::{
    ChildSetup, KernelSandbox, Layer, LayerKind, Limits, RunPlace, SandboxError, SandboxMode,
};
pub use process::{ProcessRunner, RunOutcome, RunSpec, Runner, SpawnError, StreamLine};
