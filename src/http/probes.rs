//! `/healthz` (the process answers), `/readyz` (it can do its job) and `/metrics`. None of them
//! needs authentication, and none reveals a secret or a path.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::HttpState;

pub(super) async fn healthz() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

fn check(ok: bool, detail: impl Into<String>) -> Value {
    json!({"ok": ok, "detail": detail.into()})
}

/// Ready when terraform is runnable, the workspace root readable, the state dir and the audit
/// trail writable, and (in strict mode) every sandbox layer can be applied.
pub(super) async fn readyz(State(state): State<Arc<HttpState>>) -> Response {
    let exec = state.exec.clone();
    let checks = tokio::task::spawn_blocking(move || {
        let cfg = exec.config();
        let mut checks = Map::new();
        let tf_ok = {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(&cfg.terraform_bin).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        };
        checks.insert("terraform".into(), check(tf_ok, if tf_ok { "executable" } else { "missing or not executable" }));
        let root_ok = std::fs::read_dir(&cfg.workspace_root).is_ok();
        checks.insert("workspace_root".into(), check(root_ok, if root_ok { "readable" } else { "not readable" }));
        let probe = cfg.state_dir.join(format!(".readyz-{}", std::process::id()));
        let state_ok = std::fs::write(&probe, b"").is_ok() && std::fs::remove_file(&probe).is_ok();
        checks.insert("state_dir".into(), check(state_ok, if state_ok { "writable" } else { "not writable" }));
        let audit = exec.auditor().healthy();
        checks.insert(
            "audit".into(),
            check(audit.is_ok(), audit.err().map_or_else(|| "writable".to_string(), |e| e.to_string())),
        );
        let sandbox = exec.sandbox();
        let layers: Map<String, Value> = sandbox
            .layers()
            .iter()
            .map(|l| (l.name.to_string(), json!(l.state(sandbox.mode()))))
            .collect();
        let refusal = sandbox.refusal();
        checks.insert(
            "sandbox".into(),
            json!({
                "ok": refusal.is_none(),
                "mode": sandbox.mode().as_str(),
                "layers": layers,
                "detail": refusal.map_or_else(|| "every layer the mode needs can be applied".into(), |r| r.to_string()),
            }),
        );
        checks
    })
    .await
    .unwrap_or_default();
    let failing: Vec<String> = checks
        .iter()
        .filter(|(_, v)| v["ok"] != true)
        .map(|(k, _)| k.clone())
        .collect();
    let status = if failing.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if failing.is_empty() { "ready" } else { "not ready" },
        "failing": failing,
        "checks": checks,
        "runs_in_flight": state.exec.in_flight(),
        "uptime_secs": super::uptime(&state).as_secs(),
    });
    (status, axum::Json(body)).into_response()
}

pub(super) async fn metrics(State(state): State<Arc<HttpState>>) -> Response {
    state
        .metrics
        .runs_in_flight
        .set(state.exec.in_flight() as i64);
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// RFC 9728 protected-resource metadata: where clients get tokens for this server.
pub(super) async fn resource_metadata(State(state): State<Arc<HttpState>>) -> Response {
    match &state.resource_metadata {
        Some(doc) => (StatusCode::OK, axum::Json(doc.clone())).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "not an OAuth protected resource (no TERRARIUM_JWT_ISSUER)\n",
        )
            .into_response(),
    }
}
