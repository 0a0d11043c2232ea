//! The integration tests: one test binary (so the crate's dependencies link once), a module per
//! area. End-to-end tests spawn the real `terrarium` binary with the real Terraform (stdio and
//! HTTP through rmcp's client; GitHub through a local double speaking its REST shapes to
//! octocrab); `common` is the shared harness and `fixtures/` the workspaces and stand-ins.

mod common;

mod architecture;
mod archive;
mod audit;
mod ci;
mod cli;
mod confinement;
mod escape;
mod github;
mod http;
mod load;
mod plans;
mod process;
mod stdio_flow;
