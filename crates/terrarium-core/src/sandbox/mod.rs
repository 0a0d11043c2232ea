//! The child side of a run: what terraform's process looks like and how it is ended.
//!
//! `env` builds the scrubbed environment; `kernel` knows which kernel layers this machine can
//! apply and prepares them per run (`access`: Landlock rules, `seccomp`: the syscall filter);
//! `child` is the `pre_exec` hook that applies everything (session, rlimits, no-new-privs,
//! parent-death signal, umask, no inherited descriptors, namespaces, Landlock, seccomp);
//! `capture` keeps a bounded copy of each output stream; `process` spawns, waits, and on
//! timeout or cancellation interrupts and then kills the whole process group.

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

pub use capture::Captured;
pub use kernel::{
    ChildSetup, KernelSandbox, Layer, LayerKind, Limits, RunPlace, SandboxError, SandboxMode,
};
pub use process::{ProcessRunner, RunOutcome, RunSpec, Runner, SpawnError, StreamLine};
