//! The `terrarium` binary: argument parsing, logging set-up, signals, and the choice of front
//! door. `anyhow` lives only here.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::json;
use terrarium::audit::{self, AUDIT_TARGET, verify};
use terrarium::config::{Config, parse_log_level};
use terrarium::executor::{CallContext, Executor};
use terrarium::sandbox::ProcessRunner;
use tokio::signal::unix::{SignalKind, signal};
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
        return audit_verify(files, *json);
    }
    if let Command::Healthcheck { addr } = &cli.command {
        return healthcheck(addr.clone());
    }
    // `.env` fills in variables that are not already set; the environment wins.
    let _ = dotenvy::dotenv();
    if matches!(cli.command, Command::Ci { .. })
        && std::env::var_os("TERRARIUM_WORKSPACE_ROOT").is_none()
    {
        // In CI the code is the checkout: GitHub Actions names it, elsewhere it is here.
        let root = std::env::var_os("GITHUB_WORKSPACE")
            .map(PathBuf::from)
            .or_else(|| std::env::current_dir().ok());
        if let Some(root) = root {
            // SAFETY: single-threaded here; no other thread reads the environment yet.
            unsafe { std::env::set_var("TERRARIUM_WORKSPACE_ROOT", root) };
        }
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("terrarium: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn healthcheck(addr: Option<String>) -> ExitCode {
    use std::io::{Read, Write};
    let addr = addr
        .or_else(|| std::env::var("TERRARIUM_HTTP_LISTEN").ok())
        .unwrap_or_else(|| "127.0.0.1:8080".into())
        .replace("0.0.0.0", "127.0.0.1");
    let check = || -> std::io::Result<bool> {
        let target: std::net::SocketAddr = addr.parse().map_err(std::io::Error::other)?;
        let mut s = std::net::TcpStream::connect_timeout(&target, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        write!(
            s,
            "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head)?;
        Ok(head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200"))
    };
    match check() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("terrarium: healthcheck {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn audit_verify(files: &[PathBuf], as_json: bool) -> ExitCode {
    match verify::verify(files) {
        Ok(report) => {
            if as_json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                print!("{}", verify::describe(&report, files));
            }
            ExitCode::from(report.exit_code())
        }
        Err(e) => {
            eprintln!("terrarium: audit verify: {e}");
            ExitCode::from(3)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = Config::from_process().context("invalid configuration")?;
    let level = match &cli.log_level {
        Some(l) => parse_log_level(l).map_err(|m| anyhow::anyhow!("--log-level: {m}"))?,
        None => config.log_level.clone(),
    };
    let log_file = cli.log_file.clone().or_else(|| config.log_file.clone());
    init_logging(&level, log_file.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve {
                http: true,
                listen,
                behind_proxy,
            } => {
                let mut config = config;
                if let Some(addr) = listen {
                    config.http.listen = addr;
                }
                config.http.behind_proxy |= behind_proxy;
                serve_http(config).await
            }
            Command::Serve { .. } => serve(config).await,
            Command::CheckConfig => check_config(config).await,
            Command::Ci {
                command:
                    CiCommand::Plan {
                        dirs,
                        base,
                        repo,
                        pr,
                    },
            } => ci_plan(config, dirs, base, repo.zip(pr)).await,
            Command::Audit { .. } | Command::Healthcheck { .. } => Ok(ExitCode::SUCCESS),
        }
    });
    // The stdio transport's blocking stdin read never ends while the client keeps the pipe
    // open: do not wait for it (everything that matters, the audit trail included, is done).
    runtime.shutdown_timeout(Duration::from_millis(200));
    result
}

/// Diagnostics go to stderr (stdout belongs to the MCP stdio transport) or to a file. Audit
/// events have their own sinks and are left out here.
fn init_logging(level: &str, file: Option<&std::path::Path>) -> anyhow::Result<()> {
    let filter =
        tracing_subscriber::EnvFilter::new(format!("warn,terrarium={level},{AUDIT_TARGET}=off"));
    let layer = tracing_subscriber::fmt::layer().with_ansi(false);
    let layer = match file {
        Some(path) => {
            use std::os::unix::fs::OpenOptionsExt;
            let f = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("--log-file {}", path.display()))?;
            layer
                .with_writer(std::sync::Mutex::new(f))
                .with_filter(filter)
                .boxed()
        }
        None => layer
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    tracing_subscriber::registry().with(layer).init();
    Ok(())
}

fn host_env() -> BTreeMap<String, String> {
    std::env::vars().collect()
}

fn startup_event(exec: &Executor, transport: &str) -> serde_json::Value {
    let config: serde_json::Map<String, serde_json::Value> = exec
        .config()
        .effective()
        .into_iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let sandbox: serde_json::Map<String, serde_json::Value> = exec
        .sandbox()
        .layers()
        .iter()
        .map(|l| (l.name.to_string(), json!(l.state(exec.sandbox().mode()))))
        .collect();
    audit::event(
        "startup",
        "info",
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "transport": transport,
            "pid": std::process::id(),
            "config": config,
            "sandbox": {"mode": exec.sandbox().mode().as_str(), "layers": sandbox},
            "audit_recovered_torn_line": exec.auditor().recovered_torn(),
        }),
    )
}

async fn serve(config: Config) -> anyhow::Result<ExitCode> {
    tracing::info!(
        workspace_root = %config.workspace_root.display(),
        terraform = %config.terraform_bin.display(),
        apply = config.enable_apply,
        destroy = config.enable_destroy,
        "terrarium starting (stdio)"
    );
    let grace = config.shutdown_grace;
    let exec = Arc::new(Executor::new(
        config,
        Arc::new(ProcessRunner::new()),
        host_env(),
    )?);
    log_sandbox(&exec);
    if exec.auditor().recovered_torn() {
        tracing::warn!(
            "the audit trail ended in a torn line (a crash while writing); `terrarium audit verify` reports it"
        );
    }
    let _ = exec.auditor().record(startup_event(&exec, "stdio"));

    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let server = terrarium::mcp::serve_stdio(exec.clone());
    tokio::pin!(server);
    let reason = loop {
        tokio::select! {
            r = &mut server => {
                r?;
                break "stdin closed";
            }
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = hup.recv() => reload(&exec),
        }
    };
    let interrupted = exec.shutdown(grace).await;
    let _ = exec.auditor().record(audit::event(
        "shutdown",
        "info",
        json!({"reason": reason, "runs_interrupted": interrupted}),
    ));
    Ok(ExitCode::SUCCESS)
}

async fn serve_http(config: Config) -> anyhow::Result<ExitCode> {
    let grace = config.shutdown_grace;
    let exec = Arc::new(Executor::new(
        config,
        Arc::new(ProcessRunner::new()),
        host_env(),
    )?);
    log_sandbox(&exec);
    let running = terrarium::http::start(exec.clone()).await?;
    let mut startup = startup_event(&exec, "http");
    startup["listen"] = json!(running.addr.to_string());
    let _ = exec.auditor().record(startup);
    let scheme = if running.tls { "https" } else { "http" };
    eprintln!("terrarium: serving MCP at {scheme}://{}/mcp", running.addr);

    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let reason = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = hup.recv() => {
                reload(&exec);
                if exec.config().http.tokens_file.is_some() {
                    let (level, fields) = match running.state.reload_tokens() {
                        Ok(n) => ("info", json!({"what": "auth_tokens", "success": true, "tokens": n})),
                        Err(e) => {
                            tracing::error!(error = %e, "token reload failed; the previous tokens stay valid");
                            ("error", json!({"what": "auth_tokens", "success": false, "error": e}))
                        }
                    };
                    let _ = exec.auditor().record(audit::event("config_reload", level, fields));
                }
            }
        }
    };
    tracing::info!(
        reason,
        "shutting down: no new connections; runs in flight get the grace period"
    );
    let interrupted = running.shutdown(grace).await?;
    let _ = exec.auditor().record(audit::event(
        "shutdown",
        "info",
        json!({"reason": reason, "runs_interrupted": interrupted}),
    ));
    Ok(ExitCode::SUCCESS)
}

async fn ci_plan(
    config: Config,
    dirs: Vec<String>,
    base: Option<String>,
    pull: Option<(String, u64)>,
) -> anyhow::Result<ExitCode> {
    let root = config.workspace_root.clone();
    // The root is one repository's checkout: a directory may read the rest of it (its
    // `../../modules`), as in a fetched repository. Writes stay confined to the directory.
    let mut config = config;
    config.sandbox_read_paths.push(root.clone());
    let exec = Executor::new(config, Arc::new(ProcessRunner::new()), host_env())?;
    let event_path = std::env::var_os("GITHUB_EVENT_PATH").map(PathBuf::from);
    let target = terrarium::github::pull::ci_target(
        pull.as_ref().map(|p| p.0.as_str()),
        pull.as_ref().map(|p| p.1),
        event_path.as_deref(),
    )?;
    let report = match (exec.github(), target) {
        (Some(gh), Some((repo, number))) => {
            // Report back on the pull request; its files decide the directories.
            let client = gh.repo(&repo, None).await?;
            let pr = client.pull(number).await?;
            let run =
                terrarium::github::pull::PullRun::start(&client, pr, &gh.config().check_name).await;
            let dirs = if dirs.is_empty() {
                match run.changed_dirs(&exec, "").await {
                    Ok(d) => d,
                    Err(e) => {
                        run.fail(&e.to_string()).await;
                        return Err(e.into());
                    }
                }
            } else {
                dirs
            };
            let report = run.plan(&exec, "", &dirs, "ci", "cli").await;
            run.finish(&report).await?;
            report
        }
        (None, Some((repo, number))) => {
            tracing::warn!(%repo, number, "no GitHub credentials: planning without reporting on the pull request");
            terrarium::ci::plan(&exec, &ci_dirs(&exec, &root, dirs, base)?).await
        }
        (_, None) => terrarium::ci::plan(&exec, &ci_dirs(&exec, &root, dirs, base)?).await,
    };
    let md = terrarium::ci::markdown(&report);
    print!("{md}");
    if let Some(path) = std::env::var_os("GITHUB_STEP_SUMMARY") {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .context("writing GITHUB_STEP_SUMMARY")?;
        f.write_all(md.as_bytes())?;
    }
    Ok(ExitCode::from(report.exit_code()))
}

/// Directories for a plain CI run: given, changed since `--base`, or every root module.
fn ci_dirs(
    exec: &Executor,
    root: &std::path::Path,
    dirs: Vec<String>,
    base: Option<String>,
) -> anyhow::Result<Vec<String>> {
    Ok(if !dirs.is_empty() {
        dirs
    } else if let Some(base) = base {
        // A ref that looks like an option would be read by git as one.
        if base.starts_with('-') || base.chars().any(|c| c.is_whitespace() || c.is_control()) {
            anyhow::bail!("--base {base:?} is not a git ref");
        }
        let out = std::process::Command::new("git")
            .args(["diff", "--name-only", &format!("{base}...HEAD"), "--"])
            .current_dir(root)
            .output()
            .context("running git diff (is git installed and the root a checkout?)")?;
        if !out.status.success() {
            anyhow::bail!(
                "git diff {base}...HEAD failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let files: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect();
        terrarium::ci::dirs_of_changed_files(exec, "", &files)
    } else {
        terrarium::ci::root_modules(exec, "")
    })
}

/// SIGHUP: re-read the policy file; the outcome is audited either way.
fn reload(exec: &Executor) {
    let (level, fields) = match exec.reload_policy() {
        Ok(()) => ("info", json!({"what": "policy", "success": true})),
        Err(e) => {
            tracing::error!(error = %e, "policy reload failed; the previous policy stays in force");
            (
                "error",
                json!({"what": "policy", "success": false, "error": e.to_string()}),
            )
        }
    };
    let _ = exec
        .auditor()
        .record(audit::event("config_reload", level, fields));
}

/// Reports each sandbox layer at start-up; missing layers and `off` as warnings.
fn log_sandbox(exec: &Executor) {
    let sandbox = exec.sandbox();
    for l in sandbox.layers() {
        tracing::info!(layer = l.name, state = l.state(sandbox.mode()), detail = %l.detail, "sandbox layer");
    }
    tracing::info!(teardown = %sandbox.teardown(), "run teardown");
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
        println!(
            "# sandbox {}: {} ({})",
            l.name,
            l.state(sandbox.mode()),
            l.detail
        );
    }
    println!("# run teardown: {}", sandbox.teardown());
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
    if let Err(e) = exec.auditor().healthy() {
        eprintln!("terrarium: {e}");
        return Ok(ExitCode::FAILURE);
    }
    let version = response.structured["terraform_version"]
        .as_str()
        .unwrap_or("?");
    println!("# terraform runnable: v{version}");
    println!("# configuration OK");
    Ok(ExitCode::SUCCESS)
}
