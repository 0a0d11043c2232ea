//! The `terrarium` binary: argument parsing, logging set-up, and the choice of command. The
//! front doors ([`serve`] over [`mcp`] and [`http`], [`ci`], the [`github`] webhook) and the
//! [`settings`] loader are this crate's private modules, on top of `terrarium_core`; nothing in
//! the core imports them. `anyhow` lives only in this crate.

mod auth;
mod check;
mod ci;
mod cli;
mod github;
mod http;
mod logging;
mod mcp;
mod memory;
mod metrics;
mod serve;
mod settings;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use cli::{AuditCommand, CiCommand, Cli, Command};
use serve::Door;
use settings::sources::{Prepared, Request};
use settings::{Settings, parse_log_level};

fn main() -> ExitCode {
    memory::tune_allocator();
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
    if let Command::CheckConfig {
        list_settings: true,
    } = &cli.command
    {
        print!("{}", settings::defs::markdown_table());
        return ExitCode::SUCCESS;
    }
    if matches!(
        cli.command,
        Command::Serve { .. } | Command::Ci { .. } | Command::CheckConfig { .. }
    ) {
        // The slowest step of start-up, overlapped with configuration loading (see `start_probe`).
        terrarium_core::sandbox::kernel::start_probe();
    }
    // Configuration never comes from workspace content (see `settings::sources`): the sources
    // are checked before anything of them is used.
    let request = Request {
        config_file: cli.config.clone(),
        env_file: cli.env_file.clone(),
        ci: matches!(cli.command, Command::Ci { .. }),
    };
    let sources = match Prepared::from_process(&request) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("terrarium: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    match run(cli, sources) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("terrarium: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli, sources: Prepared) -> anyhow::Result<ExitCode> {
    let settings = Settings::load_layered(&sources.env, &sources.fallbacks, sources.cwd())
        .context("invalid configuration")?;
    sources.check_loaded(&settings)?;
    let level = match &cli.log_level {
        Some(l) => parse_log_level(l).map_err(|m| anyhow::anyhow!("--log-level: {m}"))?,
        None => settings.log_level.clone(),
    };
    let log_file = cli.log_file.clone().or_else(|| settings.log_file.clone());
    let _log_guard = logging::init(&level, log_file.as_deref())?;
    // A misspelt name is a setting that silently does not apply: `check-config` refuses it,
    // every other command says so.
    if !matches!(cli.command, Command::CheckConfig { .. }) {
        for u in &settings.unknown {
            tracing::warn!("{u}");
        }
    }
    // The server's environment with the `--env-file`/`.env` values under it: the only source of
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
            Command::CheckConfig { .. } => check::check_config(settings, host_env).await,
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
    // Run dirs still being removed in the background (see `files::remove_later`) go before
    // the process does.
    terrarium_core::files::drain(Duration::from_secs(10));
    result
}
