//! `POST /github/webhook`: the HTTP side of [`crate::github::webhook`]. Not behind bearer
//! authentication (GitHub signs instead of sending a token), but behind the per-IP rate limit
//! and its own body cap; the signature is checked before the body is parsed.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{ClientIp, HttpState, json_error};
use crate::github::webhook::{Accepted, Rejected};

pub(super) async fn receive(
    State(state): State<Arc<HttpState>>,
    ip: Option<axum::Extension<ClientIp>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(receiver) = state.webhook.as_ref() else {
        return json_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "the GitHub webhook is not configured (TERRARIUM_GITHUB_WEBHOOK_SECRET and App credentials)",
        );
    };
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let ip = ip.map(|i| i.0.0.clone()).unwrap_or_default();
    let result = receiver.receive(
        h("x-github-event"),
        h("x-github-delivery"),
        h("x-hub-signature-256"),
        &body,
        &ip,
    );
    match result {
        Ok(Accepted::Queued) => (
            StatusCode::ACCEPTED,
            axum::Json(json!({"status": "queued"})),
        )
            .into_response(),
        Ok(Accepted::Pong) => axum::Json(json!({"status": "pong"})).into_response(),
        Ok(Accepted::Duplicate) => axum::Json(json!({"status": "duplicate"})).into_response(),
        Ok(Accepted::Ignored(reason)) => {
            axum::Json(json!({"status": "ignored", "reason": reason})).into_response()
        }
        Err(Rejected::Signature) => {
            state.metrics.auth_failures.inc();
            json_error(
                StatusCode::UNAUTHORIZED,
                "invalid_signature",
                "missing or invalid X-Hub-Signature-256",
            )
        }
        Err(Rejected::BadRequest(m)) => json_error(StatusCode::BAD_REQUEST, "bad_request", &m),
        Err(Rejected::Busy) => {
            let mut r = json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "queue_full",
                "the plan queue is full; redeliver later",
            );
            r.headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("60"));
            r
        }
        // The reason (a path in the state dir) is in the log and the audit trail, not here.
        Err(Rejected::Unavailable(_)) => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the delivery could not be recorded; redeliver later",
        ),
    }
}
