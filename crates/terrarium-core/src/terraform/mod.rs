//! What terraform is asked to do and what its answers mean: argv built from typed values, and
//! parsers for its JSON outputs. Nothing here spawns a process or touches the file system; the
//! executor acts on the values built here.

pub mod invocation;
pub mod plan_summary;
pub mod state;
pub mod stream;
pub mod values;

pub use invocation::{Arg, Invocation, Subcommand};
