//! The `terrarium` binary: argument parsing, logging set-up, and the choice of front door.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use terrarium::config::{Config, parse_log_level};
use terrarium::executor::{CallContext, Executor};
use terrarium::sandbox::ProcessRunner;

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
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve MCP over stdio (for Claude Desktop, Cursor and other local MCP clients).
    Serve,
    /// Print the effective configuration (secrets masked) and check that it works.
    CheckConfig,
}

fn main() -> ExitCode {
    // Not dumpable: the server's memory and /proc entries (its environment holds credentials)
    // stay out of reach of same-user processes without CAP_SYS_PTRACE, sandbox or not.
    // SAFETY: a prctl with integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    let cli = Cli::parse();
    // `.env` fills in variables that are not already set; the environment wins.
    let _ = dotenvy::dotenv();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("terrarium: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = Config::from_process().context("invalid configuration")?;
    let level = match &cli.log_level {
        Some(l) => parse_log_level(l).map_err(|m| anyhow::anyhow!("--log-level: {m}"))?,
        None => config.log_level.clone(),
    };
    init_logging(&level);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Serve => serve(config).await,
            Command::CheckConfig => check_config(config).await,
        }
    })
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::new(format!("warn,terrarium={level}"));
    // Diagnostics go to stderr only: stdout belongs to the MCP stdio transport.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

fn host_env() -> BTreeMap<String, String> {
    std::env::vars().collect()
}

async fn serve(config: Config) -> anyhow::Result<ExitCode> {
    tracing::info!(
        workspace_root = %config.workspace_root.display(),
        terraform = %config.terraform_bin.display(),
        apply = config.enable_apply,
        destroy = config.enable_destroy,
        "terrarium starting (stdio)"
    );
    let exec = Arc::new(Executor::new(
        config,
        Arc::new(ProcessRunner::new()),
        host_env(),
    )?);
    log_sandbox(&exec);
    terrarium::mcp::serve_stdio(exec).await?;
    Ok(ExitCode::SUCCESS)
}

/// Reports each sandbox layer at start-up; missing layers and `off` as warnings.
fn log_sandbox(exec: &Executor) {
    let sandbox = exec.sandbox();
    for l in sandbox.layers() {
        tracing::info!(layer = l.name, available = l.available, detail = %l.detail, mode = sandbox.mode().as_str(), "sandbox layer");
    }
    for w in sandbox.warnings() {
        tracing::warn!("{w}");
    }
    if let Some(refusal) = sandbox.refusal() {
        tracing::error!("{refusal}");
    }
}

async fn check_config(config: Config) -> anyhow::Result<ExitCode> {
    print!("{config}");
    let mut config = config;
    config.timeout = Duration::from_secs(30);
    let exec = Executor::new(config, Arc::new(ProcessRunner::new()), host_env())?;
    let sandbox = exec.sandbox();
    for l in sandbox.layers() {
        let state = l.state(sandbox.mode());
        println!("# sandbox {}: {state} ({})", l.name, l.detail);
    }
    for w in sandbox.warnings() {
        println!("# warning: {w}");
    }
    if let Some(refusal) = sandbox.refusal() {
        eprintln!("terrarium: {refusal}");
        return Ok(ExitCode::FAILURE);
    }
    let response = exec
        .call(
            "terraform_version",
            serde_json::json!({}),
            CallContext::new("check-config", "cli"),
        )
        .await;
    if response.is_error {
        eprintln!("terrarium: terraform is not runnable: {}", response.text);
        return Ok(ExitCode::FAILURE);
    }
    let version = response.structured["terraform_version"]
        .as_str()
        .unwrap_or("?");
    println!("# terraform runnable: v{version}");
    println!("# configuration OK");
    Ok(ExitCode::SUCCESS)
}
