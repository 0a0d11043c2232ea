//! GitHub: fetching a repository's code safely (more — the App, pull-request reporting and the
//! webhook — builds on this).

pub mod archive;
