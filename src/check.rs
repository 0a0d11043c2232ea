//! The one-shot commands: `check-config` (print the effective settings and prove terraform runs
//! in the sandbox), `healthcheck` (for container HEALTHCHECKs without curl) and
//! `audit verify` (check the hash chain of audit files).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use terrarium_core::audit::verify;
use terrarium_core::sandbox::ProcessRunner;
use terrarium_core::{CallContext, Executor, Transport};

use crate::settings::Settings;

/// Prints every effective setting, the sandbox layers, and runs `terraform version` through the
/// executor: exit 0 only if a real run works and the audit trail is writable.
pub(crate) async fn check_config(
    settings: Settings,
    host_env: BTreeMap<String, String>,
) -> anyhow::Result<ExitCode> {
    print!("{settings}");
    if !settings.unknown.is_empty() {
        for u in &settings.unknown {
            eprintln!("terrarium: {u}");
        }
        return Ok(ExitCode::FAILURE);
    }
    // The GitHub App's key and settings are checked too (a client is built, nothing is sent).
    crate::github::GitHub::from_config(&settings.github)?;
    let mut config = settings.core;
    config.timeout = Duration::from_secs(30);
    let exec = Executor::new(config, Arc::new(ProcessRunner::new()), host_env, None)?;
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
            CallContext::new("check-config", Transport::Cli),
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

/// Exit 0 if the HTTP server at `addr` answers `/healthz` with 200.
pub(crate) fn healthcheck(addr: Option<String>) -> ExitCode {
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

/// Checks the hash chain of audit files: exit 0 intact, 1 broken, 2 intact with torn lines, 3
/// unreadable.
pub(crate) fn audit_verify(files: &[PathBuf], as_json: bool) -> ExitCode {
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
