//! Terrarium: a sandboxed Terraform executor reached over MCP.
//!
//! A request's path (see ARCHITECTURE.md): a front door ([`mcp`]) hands a tool call to the
//! [`executor`], which validates it against its [`schema`], confines its paths ([`workspace`]),
//! checks the [`policy`], runs the [`tools`] entry that builds typed [`terraform`] invocations,
//! spawns them through the [`sandbox`], redacts the result ([`redact`]) and writes one [`audit`]
//! event. Saved plans live in [`plans`]; everything configurable is in [`config`].

pub mod audit;
pub mod ci;
pub mod config;
pub mod executor;
pub mod github;
pub mod http;
pub mod mcp;
pub mod plans;
pub mod policy;
pub mod redact;
pub mod sandbox;
pub mod schema;
pub mod secrets;
pub mod terraform;
pub mod tools;
pub mod workspace;
