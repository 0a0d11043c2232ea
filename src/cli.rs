//! The command line: subcommands and flags (clap). Settings that also have an environment name
//! say which one they override; the definitions of those live in `settings::defs`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "terrarium",
    version,
    about = "A sandboxed Terraform executor over MCP"
)]
pub(crate) struct Cli {
    /// Diagnostic log level: error, warn, info, debug (or 1-4). Overrides TERRARIUM_LOG_LEVEL.
    #[arg(long, global = true)]
    pub(crate) log_level: Option<String>,
    /// Write diagnostic logs to this file instead of stderr. Overrides TERRARIUM_LOG_FILE.
    #[arg(long, global = true)]
    pub(crate) log_file: Option<PathBuf>,
    /// Read settings from this TOML file (keys as in the environment, lower-cased, without the
    /// prefix). Overrides TERRARIUM_CONFIG. Must lie outside the workspace root and CI checkout;
    /// when given, the current directory is not searched for terrarium.toml or .env.
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Read KEY=value settings from this file (the environment wins). Overrides
    /// TERRARIUM_ENV_FILE. Same rules as --config.
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) env_file: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Serve MCP over stdio (for Claude Desktop, Cursor and other local MCP clients), or over
    /// Streamable HTTP at /mcp with --http.
    Serve {
        /// Serve Streamable HTTP instead of stdio.
        #[arg(long)]
        http: bool,
        /// Address to listen on (with --http). Overrides TERRARIUM_HTTP_LISTEN.
        #[arg(long, requires = "http")]
        listen: Option<std::net::SocketAddr>,
        /// Acknowledge that a TLS-terminating proxy is in front (needed for non-loopback
        /// addresses). Overrides TERRARIUM_HTTP_BEHIND_PROXY.
        #[arg(long, requires = "http")]
        behind_proxy: bool,
    },
    /// Print the effective configuration (secrets masked) and check that it works; an unknown
    /// TERRARIUM_* variable or file key is an error here.
    CheckConfig {
        /// Print every setting (name, default, meaning) as a Markdown table instead.
        #[arg(long)]
        list_settings: bool,
    },
    /// Exit 0 if the HTTP server at ADDR answers /healthz (for container HEALTHCHECKs, which
    /// then need no curl in the image).
    Healthcheck {
        /// host:port of the server; default TERRARIUM_HTTP_LISTEN or 127.0.0.1:8080.
        #[arg(long)]
        addr: Option<String>,
    },
    /// CI: plan Terraform directories and report (exit 0 no changes, 2 changes, 1 error).
    Ci {
        #[command(subcommand)]
        command: CiCommand,
    },
    /// Work with the audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
pub(crate) enum CiCommand {
    /// Init and plan directories under the workspace root (TERRARIUM_WORKSPACE_ROOT, else
    /// GITHUB_WORKSPACE, else the current directory) and print a Markdown summary, also to
    /// GITHUB_STEP_SUMMARY when set.
    Plan {
        /// Directories to plan, relative to the root (repeatable).
        #[arg(long = "dir")]
        dirs: Vec<String>,
        /// Plan the root modules with files changed since this git ref (`git diff REF...HEAD`).
        #[arg(long)]
        base: Option<String>,
        /// The pull request's repository (owner/name); with GitHub credentials the changed
        /// directories come from the pull request and the plan is reported on it. Default: the
        /// event at GITHUB_EVENT_PATH.
        #[arg(long, requires = "pr")]
        repo: Option<String>,
        /// The pull request's number (with --repo).
        #[arg(long, requires = "repo")]
        pr: Option<u64>,
    },
}

#[derive(Subcommand)]
pub(crate) enum AuditCommand {
    /// Check the hash chain of audit files (oldest first); exit 1 if it is broken, 2 if it is
    /// intact but has torn lines from a crash.
    Verify {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}
