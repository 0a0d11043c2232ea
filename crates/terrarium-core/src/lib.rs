//! Terrarium's core: everything between a tool call and `execve`, with no protocol in it.
//!
//! A call's path (see ARCHITECTURE.md): a front door builds a [`call::CallContext`] and hands the
//! call to [`executor::Executor::call`], which validates it against its [`schema`], confines its
//! paths ([`workspace`]), checks the [`policy`], runs the [`tools`] entry that builds typed
//! [`terraform`] invocations, spawns them through the [`sandbox`], redacts the result
//! ([`redact`]) and writes one [`audit`] event. Saved plans live in [`plans`], remembered secret
//! values in [`secrets`]; fetched workspaces come through a [`source::WorkspaceSource`] the
//! binary provides and are unpacked by [`archive`]. [`config::Config`] is plain values: loading
//! settings is the binary's job.
//!
//! Architecture invariant: this crate depends on no front-door crate (rmcp, axum, hyper,
//! octocrab, clap, anyhow) and never names a front door's module.

pub mod archive;
pub mod audit;
pub mod call;
pub mod config;
pub mod executor;
pub mod files;
pub mod plans;
pub mod policy;
pub mod redact;
pub mod run;
pub mod sandbox;
pub mod schema;
pub mod secrets;
pub mod source;
pub mod terraform;
pub mod tools;
pub mod workspace;

pub use call::{CallContext, ToolResponse, Transport};
pub use config::Config;
pub use executor::Executor;
