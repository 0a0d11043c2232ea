//! The `terrarium` binary: argument parsing, logging set-up, and the choice of command. The
//! front doors ([`serve`] over [`mcp`] and [`http`], [`ci`], the [`github`] webhook) and the
//! [`settings`] loader are this crate's private modules, on top of `terrarium_core`; nothing in
//! the core imports them. `anyhow` lives only in this crate.

mod auth;
mod check;
mod ci;
mod github;
mod http;
mod mcp;
mod metrics;
mod serve;
mod settings;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serve::Door;
use settings::sources::{Prepared, Request};
use settings::{Settings, parse_log_level};
use terrarium_core::audit::AUDIT_TARGET;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Parser)]
#[command(
    name = "terrarium",
    version,
    about = "A sandboxed Terraform executor over MCP"
)]
struct Cli {
    /// Diagnostic log level: error, warn, info, debug (or 1-4). Overrides TERRARIUM_LOG_LEVEL.
    #[arg(long, global = true)]
    log_level: Option<String>,
    /// Write diagnostic logs to this file instead of stderr. Overrides TERRARIUM_LOG_FILE.
    #[arg(long, global = true)]
    log_file: Option<PathBuf>,
    /// Read settings from this TOML file (keys as in the environment, lower-cased, without the
    /// prefix). Overrides TERRARIUM_CONFIG. Must lie outside the workspace root and CI checkout;
    /// when given, the current directory is not searched for terrarium.toml or .env.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Read KEY=value settings from this file (the environment wins). Overrides
    /// TERRARIUM_ENV_FILE. Same rules as --config.
    #[arg(long, global = true, value_name = "FILE")]
    env_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    /// Print the effective configuration (secrets masked) and check that it works.
    CheckConfig,
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
enum CiCommand {
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
enum AuditCommand {
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

fn main() -> ExitCode {
    // Not dumpable: the server's memory and /proc entries (its environment holds credentials)
    // stay out of reach of same-user processes without CAP_SYS_PTRACE, sandbox or not.
    // SAFETY: a prctl with integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    let cli = Cli::parse();
    if let Command::Audit {
        command: AuditCommand::Verify { files, json },
    } = &cli.command
    {
        // Needs no configuration: it can run anywhere the files are.
        return check::audit_verify(files, *json);
    }
    if let Command::Healthcheck { addr } = &cli.command {
        return check::healthcheck(addr.clone());
    }
    // Configuration never comes from workspace content (see `config::sources`): the sources
    // are checked before anything of them is used.
    let (sources, cwd) = match prepare_sources(&cli) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("terrarium: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    match run(cli, sources, &cwd) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("terrarium: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The checked configuration sources: `--config`, `--env-file`, the implicit files of the
/// current directory (only outside the workspace root and CI checkout), the environment.
fn prepare_sources(cli: &Cli) -> anyhow::Result<(Prepared, PathBuf)> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let process_env: BTreeMap<String, String> = std::env::vars().collect();
    let ci = matches!(cli.command, Command::Ci { .. });
    let request = Request {
        config_file: cli.config.clone(),
        env_file: cli.env_file.clone(),
        ci,
    };
    let mut sources = Prepared::new(&request, &process_env, &cwd)?;
    if ci && !sources.env.contains_key("TERRARIUM_WORKSPACE_ROOT") {
        // In CI the code is the checkout: GitHub Actions names it, elsewhere it is here.
        let root = sources
            .env
            .get("GITHUB_WORKSPACE")
            .cloned()
            .unwrap_or_else(|| cwd.display().to_string());
        sources
            .env
            .insert("TERRARIUM_WORKSPACE_ROOT".into(), root.clone());
        sources
            .additions
            .push(("TERRARIUM_WORKSPACE_ROOT".into(), root));
    }
    Ok((sources, cwd))
}

fn run(cli: Cli, sources: Prepared, cwd: &std::path::Path) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(&sources.env, cwd).context("invalid configuration")?;
    sources.check_loaded(&settings.core)?;
    let level = match &cli.log_level {
        Some(l) => parse_log_level(l).map_err(|m| anyhow::anyhow!("--log-level: {m}"))?,
        None => settings.log_level.clone(),
    };
    let log_file = cli.log_file.clone().or_else(|| settings.log_file.clone());
    let _log_guard = init_logging(&level, log_file.as_deref())?;
    // The server's environment with the `--env-file`/`.env` additions: the only source of
    // pass-through credentials (the process environment itself is never modified).
    let host_env = sources.env;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve {
                http,
                listen,
                behind_proxy,
            } => {
                let door = if http {
                    Door::Http {
                        listen,
                        behind_proxy,
                    }
                } else {
                    Door::Stdio
                };
                serve::run(settings, host_env, door).await
            }
            Command::CheckConfig => check::check_config(settings, host_env).await,
            Command::Ci {
                command:
                    CiCommand::Plan {
                        dirs,
                        base,
                        repo,
                        pr,
                    },
            } => ci::run(settings, host_env, dirs, base, repo.zip(pr)).await,
            Command::Audit { .. } | Command::Healthcheck { .. } => Ok(ExitCode::SUCCESS),
        }
    });
    // The stdio transport's blocking stdin read never ends while the client keeps the pipe
    // open: do not wait for it (everything that matters, the audit trail included, is done).
    runtime.shutdown_timeout(Duration::from_millis(200));
    result
}

/// Diagnostics go to stderr (stdout belongs to the MCP stdio transport) or to a file, written
/// by tracing-appender's worker thread so a slow disk never holds up a call (lossless: a full
/// buffer waits). The returned guard flushes the file when dropped. Audit events have their own
/// sinks and are left out here.
fn init_logging(
    level: &str,
    file: Option<&std::path::Path>,
) -> anyhow::Result<Option<tracing_appender::non_blocking::WorkerGuard>> {
    let filter = tracing_subscriber::EnvFilter::new(format!(
        "warn,terrarium={level},terrarium_core={level},{AUDIT_TARGET}=off"
    ));
    let layer = tracing_subscriber::fmt::layer().with_ansi(false);
    let (layer, guard) = match file {
        Some(path) => {
            use std::os::unix::fs::OpenOptionsExt;
            let f = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("--log-file {}", path.display()))?;
            let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
                .lossy(false)
                .finish(f);
            (
                layer.with_writer(writer).with_filter(filter).boxed(),
                Some(guard),
            )
        }
        None => (
            layer
                .with_writer(std::io::stderr)
                .with_filter(filter)
                .boxed(),
            None,
        ),
    };
    tracing_subscriber::registry().with(layer).init();
    Ok(guard)
}
