//! `terrarium serve`: one life cycle for every MCP transport — build the executor, start the
//! front door, record the start-up, answer signals (SIGHUP reloads, SIGTERM/SIGINT stop), drain
//! and record the shutdown.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use serde_json::json;
use terrarium_core::audit;
use terrarium_core::sandbox::ProcessRunner;
use terrarium_core::source::WorkspaceSource;
use terrarium_core::{Executor, Transport};
use tokio::signal::unix::{SignalKind, signal};

use crate::github::GitHub;
use crate::settings::Settings;

/// Which MCP transport to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Door {
    Stdio,
    /// Streamable HTTP; the flags override the settings.
    Http {
        listen: Option<SocketAddr>,
        behind_proxy: bool,
    },
}

impl Door {
    fn transport(self) -> Transport {
        match self {
            Door::Stdio => Transport::Stdio,
            Door::Http { .. } => Transport::Http,
        }
    }
}

/// The front door while it runs.
enum Front {
    Stdio(Pin<Box<dyn Future<Output = std::io::Result<()>>>>),
    Http(crate::http::Running),
}

/// What woke the serve loop.
enum Event {
    Closed(std::io::Result<()>),
    Stop(&'static str),
    Reload,
}

/// Serves until the client goes away (stdio) or a stop signal; runs in flight get the grace
/// period, then are interrupted.
pub(crate) async fn run(
    mut settings: Settings,
    host_env: BTreeMap<String, String>,
    door: Door,
) -> anyhow::Result<ExitCode> {
    if let Door::Http {
        listen,
        behind_proxy,
    } = door
    {
        if let Some(addr) = listen {
            settings.http.listen = addr;
        }
        settings.http.behind_proxy |= behind_proxy;
    }
    let transport = door.transport();
    let core = &settings.core;
    tracing::info!(
        workspace_root = %core.workspace_root.display(),
        terraform = %core.terraform_bin.display(),
        apply = core.enable_apply,
        destroy = core.enable_destroy,
        %transport,
        "terrarium starting"
    );
    let grace = core.shutdown_grace;
    let github = GitHub::from_config(&settings.github)?.map(Arc::new);
    let source = github.clone().map(|g| g as Arc<dyn WorkspaceSource>);
    let exec = Arc::new(Executor::new(
        core.clone(),
        Arc::new(ProcessRunner::new()),
        host_env,
        source,
    )?);
    log_sandbox(&exec);
    if exec.auditor().recovered_torn() {
        tracing::warn!(
            "the audit trail ended in a torn line (a crash while writing); `terrarium audit verify` reports it"
        );
    }
    let mut startup = startup_event(&exec, &settings, transport);
    let (mut front, announce) = match door {
        Door::Stdio => (
            Front::Stdio(Box::pin(crate::mcp::serve_stdio(exec.clone()))),
            None,
        ),
        Door::Http { .. } => {
            let running = crate::http::start(exec.clone(), &settings, github).await?;
            startup["listen"] = json!(running.addr.to_string());
            let scheme = if running.tls { "https" } else { "http" };
            let line = format!("terrarium: serving MCP at {scheme}://{}/mcp", running.addr);
            (Front::Http(running), Some(line))
        }
    };
    // Recorded before the address is announced: whoever waits for the announcement (an
    // orchestrator, a test) sees a server whose start-up, and its audit health, are settled.
    let _ = exec.auditor().record(startup);
    if let Some(line) = announce {
        eprintln!("{line}");
    }

    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let reason = loop {
        let event = {
            let closed = async {
                match &mut front {
                    Front::Stdio(server) => server.await,
                    Front::Http(_) => std::future::pending().await,
                }
            };
            tokio::select! {
                r = closed => Event::Closed(r),
                _ = term.recv() => Event::Stop("SIGTERM"),
                _ = int.recv() => Event::Stop("SIGINT"),
                _ = hup.recv() => Event::Reload,
            }
        };
        match event {
            Event::Closed(r) => {
                r?;
                break "stdin closed";
            }
            Event::Stop(signal) => break signal,
            Event::Reload => reload(&exec, &settings, &front),
        }
    };
    tracing::info!(
        reason,
        "shutting down: no new connections; runs in flight get the grace period"
    );
    let interrupted = match front {
        Front::Stdio(_) => exec.shutdown(grace).await,
        Front::Http(running) => running.shutdown(grace).await?,
    };
    let _ = exec.auditor().record(audit::event(
        "shutdown",
        "info",
        json!({"reason": reason, "runs_interrupted": interrupted}),
    ));
    Ok(ExitCode::SUCCESS)
}

/// The start-up audit event: version, transport, every effective setting (secrets masked) and
/// the sandbox layers.
fn startup_event(exec: &Executor, settings: &Settings, transport: Transport) -> serde_json::Value {
    let config: serde_json::Map<String, serde_json::Value> = settings
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
            "transport": transport.as_str(),
            "pid": std::process::id(),
            "config": config,
            "sandbox": {"mode": exec.sandbox().mode().as_str(), "layers": sandbox},
            "audit_recovered_torn_line": exec.auditor().recovered_torn(),
        }),
    )
}

/// SIGHUP: re-read the policy file (and over HTTP the token file); each outcome is audited.
fn reload(exec: &Executor, settings: &Settings, front: &Front) {
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
    if let Front::Http(running) = front
        && settings.http.tokens_file.is_some()
    {
        let (level, fields) = match running.state.reload_tokens() {
            Ok(n) => (
                "info",
                json!({"what": "auth_tokens", "success": true, "tokens": n}),
            ),
            Err(e) => {
                tracing::error!(error = %e, "token reload failed; the previous tokens stay valid");
                (
                    "error",
                    json!({"what": "auth_tokens", "success": false, "error": e.to_string()}),
                )
            }
        };
        let _ = exec
            .auditor()
            .record(audit::event("config_reload", level, fields));
    }
}

/// Reports each sandbox layer at start-up; missing layers and `off` as warnings.
fn log_sandbox(exec: &Executor) {
    let sandbox = exec.sandbox();
    for l in sandbox.layers() {
        tracing::info!(layer = %l.name, state = l.state(sandbox.mode()), detail = %l.detail, "sandbox layer");
    }
    tracing::info!(teardown = %sandbox.teardown(), "run teardown");
    for w in sandbox.warnings() {
        tracing::warn!("{w}");
    }
    if let Some(refusal) = sandbox.refusal() {
        tracing::error!("{refusal}");
    }
}
