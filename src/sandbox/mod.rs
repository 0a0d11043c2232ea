//! The child side of a run: what terraform's process looks like and how it is ended.
//!
//! `env` builds the scrubbed environment, `child` is the `pre_exec` hook (session, rlimits,
//! no-new-privs, parent-death signal, umask, no inherited descriptors), `capture` keeps a bounded
//! copy of each output stream, and `process` spawns, waits, and on timeout or cancellation
//! interrupts and then kills the whole process group so nothing outlives the run.

pub mod capture;
pub mod child;
pub mod env;
pub mod process;

pub use capture::Captured;
pub use process::{ProcessRunner, RunOutcome, RunSpec, Runner, SpawnError, StreamLine};
