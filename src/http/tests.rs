//! The router driven in process (`tower::ServiceExt::oneshot`): the checks every request passes
//! before anything reaches the executor. Spawning the binary would add nothing here; the
//! end-to-end tests in `tests/http.rs` cover the listener, MCP clients and signals.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response, StatusCode};
use serde_json::{Value, json};
use terrarium_core::Executor;
use terrarium_core::sandbox::ProcessRunner;
use tower::ServiceExt;

use super::{App, app};
use crate::settings::Settings;

const ALICE: &str = "alice-token-0123456789abcdef0123456789";
const BOB: &str = "bob-token-fedcba9876543210fedcba9876543";
const PEER: &str = "127.0.0.1:40000";

/// A server's application over a temporary root, with two principals' tokens.
struct Harness {
    app: App,
    dir: tempfile::TempDir,
}

impl Harness {
    fn new(extra: &[(&str, &str)]) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("ws")).unwrap();
        let mut env: BTreeMap<String, String> = [
            ("TERRARIUM_WORKSPACE_ROOT", root.display().to_string()),
            (
                "TERRARIUM_STATE_DIR",
                dir.path().join("state").display().to_string(),
            ),
            ("TERRARIUM_TERRAFORM_BIN", "/bin/sh".into()),
            ("TERRARIUM_AUTH_TOKENS", format!("alice:{ALICE},bob:{BOB}")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (k, v) in extra {
            env.insert(k.to_string(), v.to_string());
        }
        let settings = Settings::load(&env, dir.path()).unwrap();
        let exec = Executor::new(
            settings.core.clone(),
            Arc::new(ProcessRunner::new()),
            BTreeMap::new(),
            None,
        )
        .unwrap();
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let app = app(Arc::new(exec), &settings, None, addr, false).unwrap();
        Harness { app, dir }
    }

    async fn send(&self, req: Request<Body>) -> Response<Body> {
        let mut req = req;
        let peer: SocketAddr = PEER.parse().unwrap();
        req.extensions_mut().insert(ConnectInfo(peer));
        self.app.router.clone().oneshot(req).await.unwrap()
    }

    /// The tool-call audit events so far (none may exist when a check refused the request).
    fn tool_events(&self) -> Vec<Value> {
        let audit = self.dir.path().join("state/audit");
        std::fs::read_dir(audit)
            .map(|rd| {
                rd.flatten()
                    .flat_map(|e| {
                        std::fs::read_to_string(e.path())
                            .unwrap_or_default()
                            .lines()
                            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                            .collect::<Vec<_>>()
                    })
                    .filter(|e| e.get("tool").is_some())
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
           "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                      "clientInfo": {"name": "t", "version": "1"}}})
}

/// A POST to /mcp as an MCP client sends it, to `host`.
fn mcp_to(host: &str, token: Option<&str>, content_type: &str) -> axum::http::request::Builder {
    let b = Request::post("/mcp")
        .header("host", host)
        .header("content-type", content_type)
        .header("accept", "application/json, text/event-stream");
    match token {
        Some(t) => b.header("authorization", format!("Bearer {t}")),
        None => b,
    }
}

fn mcp(token: Option<&str>, content_type: &str) -> axum::http::request::Builder {
    mcp_to("127.0.0.1:8080", token, content_type)
}

/// A GET from a client without a token.
fn get(path: &str) -> Request<Body> {
    Request::get(path)
        .header("host", "127.0.0.1:8080")
        .body(Body::empty())
        .unwrap()
}

fn post(token: Option<&str>, content_type: &str, body: String) -> Request<Body> {
    mcp(token, content_type).body(Body::from(body)).unwrap()
}

async fn text(r: Response<Body>) -> String {
    let bytes = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test]
async fn everything_but_the_probes_and_the_webhook_needs_a_valid_token() {
    let h = Harness::new(&[]);
    let body = initialize().to_string();
    let r = h.send(post(None, "application/json", body.clone())).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.headers()["www-authenticate"],
        r#"Bearer realm="terrarium""#
    );
    let r = h
        .send(post(
            Some(&ALICE[..ALICE.len() - 1]),
            "application/json",
            body.clone(),
        ))
        .await;
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "a token's prefix is not valid"
    );
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    for path in ["/anything", "/mcp/../healthz", "/metricsx"] {
        let r = h.send(get(path)).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = h.send(get(path)).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    // The webhook is public but unconfigured here: not found, never the executor.
    let r = h
        .send(
            Request::post("/github/webhook")
                .header("host", "127.0.0.1:8080")
                .body(Body::from("{}"))
                .unwrap(),
        )
        .await;
    assert_ne!(r.status(), StatusCode::OK);
    let r = h.send(post(Some(ALICE), "application/json", body)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().contains_key("mcp-session-id"));
    assert!(h.tool_events().is_empty());
}

#[tokio::test]
async fn malformed_oversized_and_cross_site_requests_never_reach_the_executor() {
    let h = Harness::new(&[("TERRARIUM_HTTP_MAX_BODY_BYTES", "4096")]);
    let init = initialize().to_string();
    let r = h.send(post(Some(ALICE), "text/plain", init.clone())).await;
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let big = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                     "params": {"name": "terraform_plan", "arguments": {"path": "ws", "pad": "x".repeat(10_000)}}});
    let r = h
        .send(post(Some(ALICE), "application/json", big.to_string()))
        .await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let r = h
        .send(post(Some(ALICE), "application/json", "{not json".into()))
        .await;
    let status = r.status();
    let body = text(r).await;
    assert!(
        status.is_client_error() && body.contains("-32700"),
        "{status} {body}"
    );

    let rebinding = mcp_to("evil.example.com", Some(ALICE), "application/json")
        .body(Body::from(init.clone()))
        .unwrap();
    assert_eq!(
        h.send(rebinding).await.status(),
        StatusCode::FORBIDDEN,
        "DNS rebinding"
    );
    let cross_site = mcp(Some(ALICE), "application/json")
        .header("origin", "https://evil.example.com")
        .body(Body::from(init))
        .unwrap();
    assert_eq!(
        h.send(cross_site).await.status(),
        StatusCode::FORBIDDEN,
        "foreign Origin"
    );

    for path in ["/healthz", "/readyz", "/metrics", "/mcp"] {
        let r = h.send(get(path)).await;
        let headers = r.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
        assert_eq!(headers["cache-control"], "no-store", "{path}");
        assert!(
            !headers.contains_key("strict-transport-security"),
            "plain HTTP: no HSTS"
        );
    }
    assert!(
        h.tool_events().is_empty(),
        "no request reached the executor"
    );
}

#[tokio::test]
async fn a_session_answers_only_the_principal_that_opened_it() {
    let h = Harness::new(&[]);
    let r = h
        .send(post(
            Some(ALICE),
            "application/json",
            initialize().to_string(),
        ))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let session = r.headers()["mcp-session-id"].to_str().unwrap().to_string();
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}).to_string();
    let as_bob = mcp(Some(BOB), "application/json")
        .header("mcp-session-id", &session)
        .header("mcp-protocol-version", "2025-06-18")
        .body(Body::from(list.clone()))
        .unwrap();
    assert_eq!(h.send(as_bob).await.status(), StatusCode::NOT_FOUND);
    let unknown = mcp(Some(ALICE), "application/json")
        .header("mcp-session-id", "no-such-session")
        .header("mcp-protocol-version", "2025-06-18")
        .body(Body::from(list))
        .unwrap();
    assert_eq!(h.send(unknown).await.status(), StatusCode::NOT_FOUND);
}
