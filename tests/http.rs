//! The Streamable HTTP front door over real HTTP on a loopback port: authentication, request
//! checks, probes, metrics, an MCP client library end to end, and graceful shutdown.

use std::time::Duration;

use crate::common::*;
use serde_json::{Value, json};

const ALICE: &str = "alice-token-0123456789abcdef0123456789";
const BOB: &str = "bob-token-fedcba9876543210fedcba9876543";

fn env(sb: &Sandbox, extra: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    let tokens = format!("alice:{ALICE},bob:{BOB}");
    let mut e = sb.env(&terraform(), &[("TERRARIUM_AUTH_TOKENS", tokens.as_str())]);
    for (k, v) in extra {
        e.insert(k.to_string(), v.to_string());
    }
    e
}

/// A server set-up with Alice's and Bob's tokens.
fn setup(fixtures: &[&str]) -> Setup {
    let tokens = format!("alice:{ALICE},bob:{BOB}");
    Setup::new(fixtures).env("TERRARIUM_AUTH_TOKENS", &tokens)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
           "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
}

/// A POST to /mcp with the headers an MCP client sends, and a bearer token.
fn mcp_post(url: &str, token: &str) -> reqwest::RequestBuilder {
    client()
        .post(url)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
}

async fn post(url: &str, token: Option<&str>, body: &str, content_type: &str) -> reqwest::Response {
    let mut req = client()
        .post(url)
        .header("content-type", content_type)
        .header("accept", "application/json, text/event-stream")
        .body(body.to_string());
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn tokens_are_required_and_failures_are_counted_and_audited() {
    let (sb, server) = setup(&["basic"]).http(&[]);
    let mcp = server.url("/mcp");
    let body = initialize().to_string();

    let r = post(&mcp, None, &body, "application/json").await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        r#"Bearer realm="terrarium""#
    );
    let r = post(
        &mcp,
        Some("wrong-token-0123456789abcdef0123456789"),
        &body,
        "application/json",
    )
    .await;
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );
    let r = post(
        &mcp,
        Some(&ALICE[..ALICE.len() - 1]),
        &body,
        "application/json",
    )
    .await;
    assert_eq!(r.status(), 401, "a prefix of a valid token is not valid");
    let r = client().get(server.url("/anything")).send().await.unwrap();
    assert_eq!(r.status(), 401, "everything but the probes needs a token");

    let r = post(&mcp, Some(ALICE), &body, "application/json").await;
    assert_eq!(r.status(), 200);
    let r = post(&mcp, Some(BOB), &body, "application/json").await;
    assert_eq!(r.status(), 200, "several tokens are valid at once");

    let metrics = client()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("terrarium_auth_failures_total 4"),
        "{metrics}"
    );
    let failures: Vec<Value> = sb
        .all_audit_events()
        .into_iter()
        .filter(|e| e["event"] == "auth_failure")
        .collect();
    assert_eq!(failures.len(), 4);
    assert_eq!(failures[0]["source_ip"], "127.0.0.1");
    assert_eq!(failures[1]["reason"], "invalid_token");
    assert!(
        !sb.audit_text().contains("wrong-token"),
        "presented tokens are never recorded"
    );
}

#[tokio::test]
async fn probes_report_readiness_and_metrics_move() {
    let (_sb, server) = setup(&["basic"]).http(&[]);
    let r = client().get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = client().get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ready: Value = r.json().await.unwrap();
    assert_eq!(ready["status"], "ready");
    for layer in ["landlock", "seccomp", "namespaces"] {
        assert_eq!(ready["checks"]["sandbox"]["layers"][layer], "enforced");
    }

    let session = connect_http(&server.url("/mcp"), ALICE).await;
    call_ok(&session, "terraform_validate", json!({"path": "basic"})).await;
    let _ = call(&session, "terraform_plan", json!({"path": "../x"})).await;
    let metrics = client()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"terrarium_tool_calls_total{tool="terraform_validate",outcome="ok"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"terrarium_tool_calls_total{tool="terraform_plan",outcome="confinement"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("terrarium_tool_call_duration_seconds_count{tool=\"terraform_validate\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("terrarium_sessions 1"), "{metrics}");
    session.cancel().await.unwrap();

    // Not ready when the audit trail cannot be written.
    let sb2 = Sandbox::new(&["basic"]);
    std::fs::create_dir_all(&sb2.audit).unwrap();
    let today = terrarium_core::audit::time::date(std::time::SystemTime::now());
    std::os::unix::fs::symlink("/dev/full", sb2.audit.join(format!("audit-{today}.jsonl")))
        .unwrap();
    let server2 = HttpServer::start(&env(&sb2, &[]), &[]);
    let r = client().get(server2.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["failing"], json!(["audit"]));
}

/// A policy granting bob apply everywhere, alice read and plan on `basic` only.
fn access_policy(sb: &Sandbox) -> String {
    let path = sb.dir.path().join("access.toml");
    let mut text = terrarium_core::policy::DEFAULT_POLICY.replace(
        "[principals.\"*\"]\nscopes = [\"read\", \"plan\"]\nworkspaces = [\"*\"]",
        "",
    );
    text.push_str(
        "\n[principals.bob]\nscopes = [\"read\", \"plan\", \"apply\"]\n\n[principals.alice]\nscopes = [\"read\", \"plan\"]\nworkspaces = [\"basic\"]\n",
    );
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn scopes_and_workspace_globs_decide_who_may_call_what() {
    let sb = Sandbox::new(&["basic", "replace"]);
    let policy = access_policy(&sb);
    let server = HttpServer::start(
        &env(
            &sb,
            &[
                ("TERRARIUM_ENABLE_APPLY", "true"),
                ("TERRARIUM_POLICY_FILE", &policy),
            ],
        ),
        &[],
    );
    let alice = connect_http(&server.url("/mcp"), ALICE).await;
    let names: Vec<String> = alice
        .list_all_tools()
        .await
        .unwrap()
        .iter()
        .map(|t| t.name.to_string())
        .collect();
    assert!(
        !names.contains(&"terraform_apply".to_string()),
        "alice is not offered apply: {names:?}"
    );
    let listed = call_ok(&alice, "workspace_list", json!({})).await;
    assert_eq!(
        listed["workspaces"],
        json!(["basic"]),
        "alice sees only her workspaces"
    );
    call_ok(&alice, "terraform_init", json!({"path": "basic"})).await;
    let plan = call_ok(&alice, "terraform_plan", json!({"path": "basic"})).await;
    let r = call(
        &alice,
        "terraform_apply",
        json!({"path": "basic", "plan_id": plan["plan_id"]}),
    )
    .await;
    assert!(is_error(&r));
    assert!(text(&r).contains("needs the apply scope"), "{}", text(&r));
    let r = call(&alice, "terraform_validate", json!({"path": "replace"})).await;
    assert!(is_error(&r));
    assert!(
        text(&r).contains("may not use workspace replace"),
        "{}",
        text(&r)
    );
    alice.cancel().await.unwrap();
    let denied: Vec<Value> = sb
        .audit_events()
        .into_iter()
        .filter(|e| e["event"] == "authorization_denied")
        .collect();
    assert_eq!(denied.len(), 2);
    assert_eq!(denied[0]["principal"], "alice");
    assert!(!sb.root.join("basic/terraform.tfstate").exists());
}

#[tokio::test]
async fn an_mcp_client_library_works_end_to_end_and_calls_are_attributed() {
    let sb = Sandbox::new(&["basic"]);
    let policy = access_policy(&sb);
    let server = HttpServer::start(
        &env(
            &sb,
            &[
                ("TERRARIUM_ENABLE_APPLY", "true"),
                ("TERRARIUM_POLICY_FILE", &policy),
            ],
        ),
        &[],
    );
    let session = connect_http(&server.url("/mcp"), BOB).await;
    let tools = session.list_all_tools().await.unwrap();
    assert_eq!(tools.len(), 11);
    call_ok(&session, "terraform_init", json!({"path": "basic"})).await;
    let plan = call_ok(&session, "terraform_plan", json!({"path": "basic"})).await;
    let r = call_ok(
        &session,
        "terraform_apply",
        json!({"path": "basic", "plan_id": plan["plan_id"]}),
    )
    .await;
    assert_eq!(r["resources_affected"]["add"], 1);
    session.cancel().await.unwrap();
    let events = sb.audit_events();
    assert_eq!(events.len(), 3);
    for e in &events {
        assert_eq!(e["principal"], "bob");
        assert_eq!(e["transport"], "http");
        assert_eq!(e["source_ip"], "127.0.0.1");
    }
}

#[tokio::test]
async fn development_mode_and_refusals_at_startup() {
    let sb = Sandbox::new(&["basic"]);
    // No token on loopback: one is generated and printed once, with a client command.
    let server = HttpServer::start(&sb.env(&terraform(), &[]), &[]);
    let stderr = server.stderr.lock().unwrap().clone();
    let token = stderr
        .lines()
        .skip_while(|l| !l.contains("development token"))
        .nth(1)
        .expect("the token is printed")
        .trim()
        .to_string();
    assert_eq!(token.len(), 64);
    assert!(
        stderr.contains("--header \"Authorization: Bearer"),
        "{stderr}"
    );
    let r = post(
        &server.url("/mcp"),
        Some(&token),
        &initialize().to_string(),
        "application/json",
    )
    .await;
    assert_eq!(r.status(), 200);
    drop(server);

    let run = |args: &[&str], env: &std::collections::BTreeMap<String, String>| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_terrarium"))
            .args(["serve", "--http"])
            .args(args)
            .env_clear()
            .envs(env)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = run(&["--listen", "0.0.0.0:0"], &env(&sb, &[]));
    assert!(
        !ok && err.contains("without TLS") && err.contains("TERRARIUM_HTTP_BEHIND_PROXY"),
        "{err}"
    );
    let (ok, err) = run(
        &["--listen", "0.0.0.0:0", "--behind-proxy"],
        &sb.env(&terraform(), &[]),
    );
    assert!(!ok && err.contains("without authentication"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_slow_run_interrupts_it_audits_it_and_exits_zero() {
    let sb = Sandbox::new(&["basic"]);
    let mut e = env(
        &sb,
        &[
            ("TERRARIUM_SHUTDOWN_GRACE_SECS", "1"),
            ("TERRARIUM_KILL_GRACE_SECS", "1"),
        ],
    );
    e.insert(
        "TERRARIUM_TERRAFORM_BIN".into(),
        standin("stubborn.sh").display().to_string(),
    );
    let mut server = HttpServer::start(&e, &[]);
    let session = connect_http(&server.url("/mcp"), ALICE).await;
    let slow = spawn_call(&session, "terraform_validate", json!({"path": "basic"}));
    read_pid(&sb.root.join("basic/parent.pid"));
    server.signal(libc::SIGTERM);
    let result = tokio::time::timeout(Duration::from_secs(20), slow)
        .await
        .expect("the call got an answer");
    let result = result
        .unwrap()
        .expect("the interrupted call is answered, not dropped");
    assert_eq!(result.structured_content.unwrap()["cancelled"], true);
    assert!(none_left_in(&sb.root.join("basic"), 5));
    let code = tokio::task::spawn_blocking(move || server.wait(20))
        .await
        .unwrap();
    assert_eq!(code, Some(0));
    let events = sb.all_audit_events();
    assert!(
        events
            .iter()
            .any(|e| e["tool"] == "terraform_validate" && e["cancelled"] == true)
    );
    assert_eq!(events.last().unwrap()["event"], "shutdown");
    assert_eq!(events.last().unwrap()["reason"], "SIGTERM");
}

#[tokio::test]
async fn rate_limits_answer_429_with_headers_and_count_failed_logins() {
    let sb = Sandbox::new(&["basic"]);
    let server = HttpServer::start(
        &env(
            &sb,
            &[
                ("TERRARIUM_RATE_LIMIT_PER_SEC", "1"),
                ("TERRARIUM_RATE_LIMIT_BURST", "5"),
            ],
        ),
        &[],
    );
    let mcp = server.url("/mcp");
    let body = initialize().to_string();
    // Guessing tokens: the failures use up the address's budget.
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(
            post(
                &mcp,
                Some("guess-0123456789abcdef0123456789abcd"),
                &body,
                "application/json",
            )
            .await
            .status()
            .as_u16(),
        );
    }
    assert_eq!(&statuses[..5], &[401; 5]);
    assert_eq!(statuses[7], 429, "{statuses:?}");
    let r = post(&mcp, Some(ALICE), &body, "application/json").await;
    assert_eq!(
        r.status(),
        429,
        "the right token does not help an address that is over its limit"
    );
    let h = r.headers();
    assert_eq!(h["ratelimit-limit"], "5");
    assert_eq!(h["ratelimit-remaining"], "0");
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    assert_eq!(h["ratelimit-reset"], h["retry-after"]);
    // Probes are not limited.
    assert_eq!(
        client()
            .get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = client()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("terrarium_rate_limited_total 4"),
        "{metrics}"
    );
    assert!(
        sb.all_audit_events()
            .iter()
            .any(|e| e["event"] == "rate_limited")
    );
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let (sb, server) = setup(&["basic"])
        .envs(&[("TERRARIUM_HTTP_TRUSTED_PROXIES", "127.0.0.1")])
        .http(&[]);
    let r = client()
        .post(server.url("/mcp"))
        .header("x-forwarded-for", "198.51.100.7")
        .header("content-type", "application/json")
        .body(initialize().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let failure = sb
        .all_audit_events()
        .into_iter()
        .find(|e| e["event"] == "auth_failure")
        .unwrap();
    assert_eq!(failure["source_ip"], "198.51.100.7");

    let (sb, server) = setup(&["basic"]).http(&[]);
    let r = client()
        .post(server.url("/mcp"))
        .header("x-forwarded-for", "198.51.100.7")
        .body(initialize().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let failure = sb
        .all_audit_events()
        .into_iter()
        .find(|e| e["event"] == "auth_failure")
        .unwrap();
    assert_eq!(
        failure["source_ip"], "127.0.0.1",
        "a spoofed header from an untrusted peer is ignored"
    );
}

#[test]
fn the_healthcheck_command_probes_the_server() {
    let (_sb, server) = setup(&["basic"]).http(&[]);
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_terrarium"))
        .args(["healthcheck", "--addr", &server.addr.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    drop(server);
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_terrarium"))
        .args(["healthcheck", "--addr", "127.0.0.1:9"])
        .status()
        .unwrap();
    assert!(!status.success());
}

fn jwt(key_file: &str, claims: Value) -> String {
    let pem = std::fs::read(manifest_dir().join("tests/fixtures/jwt").join(key_file)).unwrap();
    let key = jsonwebtoken::EncodingKey::from_ec_pem(&pem).unwrap();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
        &claims,
        &key,
    )
    .unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn jwts_are_checked_for_signature_issuer_audience_and_expiry() {
    let sb = Sandbox::new(&["basic"]);
    let public = manifest_dir().join("tests/fixtures/jwt/test-ec-public.pem");
    let mut e = sb.env(
        &terraform(),
        &[
            ("TERRARIUM_JWT_ISSUER", "https://auth.example.com"),
            (
                "TERRARIUM_JWT_AUDIENCE",
                "https://terrarium.example.com/mcp",
            ),
            (
                "TERRARIUM_RESOURCE_URL",
                "https://terrarium.example.com/mcp",
            ),
        ],
    );
    e.insert(
        "TERRARIUM_JWT_PUBLIC_KEY_FILE".into(),
        public.display().to_string(),
    );
    let server = HttpServer::start(&e, &[]);
    assert!(
        !server.stderr.lock().unwrap().contains("development token"),
        "no dev token in JWT mode"
    );
    let mcp = server.url("/mcp");
    let body = initialize().to_string();
    let good = json!({"iss": "https://auth.example.com", "aud": "https://terrarium.example.com/mcp",
                      "sub": "carol", "exp": now() + 300, "iat": now()});

    let token = jwt("test-ec-private.pk8.pem", good.clone());
    let r = post(&mcp, Some(&token), &body, "application/json").await;
    assert_eq!(r.status(), 200);

    let mut cases = Vec::new();
    let mut expired = good.clone();
    expired["exp"] = json!(now() - 3600);
    cases.push((
        "expired",
        jwt("test-ec-private.pk8.pem", expired),
        "expired",
    ));
    let mut wrong_aud = good.clone();
    wrong_aud["aud"] = json!("https://other.example.com");
    cases.push((
        "wrong audience",
        jwt("test-ec-private.pk8.pem", wrong_aud),
        "not issued for this resource",
    ));
    let mut wrong_iss = good.clone();
    wrong_iss["iss"] = json!("https://evil.example.com");
    cases.push((
        "wrong issuer",
        jwt("test-ec-private.pk8.pem", wrong_iss),
        "not issued for this resource",
    ));
    cases.push((
        "other key",
        jwt("other-ec-private.pk8.pem", good.clone()),
        "signature",
    ));
    // alg=none: header and claims without a signature.
    use base64_like::encode;
    let none = format!(
        "{}.{}.",
        encode(br#"{"alg":"none","typ":"JWT"}"#),
        encode(good.to_string().as_bytes())
    );
    cases.push(("alg none", none, "invalid_token"));
    for (name, token, expect) in cases {
        let r = post(&mcp, Some(&token), &body, "application/json").await;
        assert_eq!(r.status(), 401, "{name}");
        let challenge = r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            challenge.contains(r#"resource_metadata="https://terrarium.example.com/.well-known/oauth-protected-resource""#),
            "{name}: {challenge}"
        );
        assert!(challenge.contains(expect), "{name}: {challenge}");
    }

    let meta: Value = client()
        .get(server.url("/.well-known/oauth-protected-resource"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["resource"], "https://terrarium.example.com/mcp");
    assert_eq!(
        meta["authorization_servers"],
        json!(["https://auth.example.com"])
    );

    // The subject is the principal.
    let session = connect_http(&mcp, &token_for(&good)).await;
    call_ok(&session, "terraform_validate", json!({"path": "basic"})).await;
    session.cancel().await.unwrap();
    assert_eq!(sb.audit_events().last().unwrap()["principal"], "carol");
    assert!(
        !sb.audit_text().contains(&token),
        "tokens are never recorded"
    );
}

fn token_for(claims: &Value) -> String {
    jwt("test-ec-private.pk8.pem", claims.clone())
}

/// Unpadded base64url, enough to forge an unsigned token.
mod base64_like {
    pub(crate) fn encode(bytes: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..=chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }
}

/// Fetches /healthz over TLS with the openssl client, forcing one protocol version.
fn openssl_get(addr: &str, version_flag: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            addr,
            "-servername",
            "localhost",
            "-quiet",
            version_flag,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the openssl client");
    let _ = child
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (
        text.starts_with("HTTP/1.1 200"),
        text + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn native_tls_speaks_tls_1_2_and_1_3_only_and_sends_hsts() {
    let sb = Sandbox::new(&["basic"]);
    let dir = manifest_dir().join("tests/fixtures/tls");
    let mut e = env(&sb, &[]);
    e.insert(
        "TERRARIUM_HTTP_TLS_CERT_FILE".into(),
        dir.join("test-cert.pem").display().to_string(),
    );
    e.insert(
        "TERRARIUM_HTTP_TLS_KEY_FILE".into(),
        dir.join("test-key.pem").display().to_string(),
    );
    let server = HttpServer::start(&e, &[]);
    assert!(server.stderr.lock().unwrap().contains("https://"));
    let addr = server.addr.to_string();
    for flag in ["-tls1_3", "-tls1_2"] {
        let (ok, text) = openssl_get(&addr, flag);
        assert!(ok, "{flag}: {text}");
        assert!(
            text.to_lowercase()
                .contains("strict-transport-security: max-age="),
            "{flag}: {text}"
        );
    }
    let (ok, _) = openssl_get(&addr, "-tls1_1");
    assert!(!ok, "TLS 1.1 must be refused");
    drop(server);

    // With TLS, a non-loopback address needs no proxy acknowledgement.
    let server = HttpServer::start(&e, &["--listen", "0.0.0.0:0"]);
    assert!(server.stderr.lock().unwrap().contains("https://"));
}

#[tokio::test]
async fn cors_answers_only_configured_origins() {
    let sb = Sandbox::new(&["basic"]);
    let server = HttpServer::start(
        &env(
            &sb,
            &[("TERRARIUM_HTTP_ALLOWED_ORIGINS", "https://app.example.com")],
        ),
        &[],
    );
    let preflight = |origin: &'static str| {
        client()
            .request(reqwest::Method::OPTIONS, server.url("/mcp"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
    };
    let r = preflight("https://app.example.com").await.unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert!(
        r.headers()
            .get("access-control-allow-credentials")
            .is_none()
    );
    let r = preflight("https://evil.example.com").await.unwrap();
    assert!(
        r.headers().get("access-control-allow-origin").is_none(),
        "no CORS for other origins"
    );
    // A real request from the allowed origin passes the Origin check too.
    let r = client()
        .post(server.url("/mcp"))
        .header("origin", "https://app.example.com")
        .header("authorization", format!("Bearer {ALICE}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(initialize().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
}

#[tokio::test]
async fn tokens_rotate_without_downtime_on_sighup() {
    let sb = Sandbox::new(&["basic"]);
    let file = sb.dir.path().join("tokens");
    std::fs::write(&file, format!("alice:{ALICE}\n")).unwrap();
    let mut e = sb.env(&terraform(), &[]);
    e.insert(
        "TERRARIUM_AUTH_TOKENS_FILE".into(),
        file.display().to_string(),
    );
    let server = HttpServer::start(&e, &[]);
    let mcp = server.url("/mcp");
    let body = initialize().to_string();
    let status = |t: &'static str| {
        let (mcp, body) = (mcp.clone(), body.clone());
        async move {
            post(&mcp, Some(t), &body, "application/json")
                .await
                .status()
                .as_u16()
        }
    };
    assert_eq!(status(ALICE).await, 200);
    assert_eq!(status(BOB).await, 401);
    // Step 1: add the new token; both work.
    std::fs::write(&file, format!("alice:{ALICE}\nbob:{BOB}\n")).unwrap();
    server.signal(libc::SIGHUP);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status(ALICE).await, 200);
    assert_eq!(status(BOB).await, 200);
    // Step 2: remove the old one.
    std::fs::write(&file, format!("bob:{BOB}\n")).unwrap();
    server.signal(libc::SIGHUP);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status(ALICE).await, 401);
    assert_eq!(status(BOB).await, 200);
    let reloads: Vec<Value> = sb
        .all_audit_events()
        .into_iter()
        .filter(|e| e["event"] == "config_reload" && e["what"] == "auth_tokens")
        .collect();
    assert_eq!(reloads.len(), 2);
    assert!(
        !sb.audit_text().contains(BOB),
        "tokens never reach the audit trail"
    );
}

#[tokio::test]
async fn sessions_are_capped_and_expire_when_idle() {
    let sb = Sandbox::new(&["basic"]);
    let server = HttpServer::start(
        &env(
            &sb,
            &[
                ("TERRARIUM_HTTP_MAX_SESSIONS", "1"),
                ("TERRARIUM_HTTP_SESSION_IDLE_SECS", "1"),
            ],
        ),
        &[],
    );
    let mcp = server.url("/mcp");
    let body = initialize().to_string();
    let r = post(&mcp, Some(ALICE), &body, "application/json").await;
    assert_eq!(r.status(), 200);
    let session = r.headers()["mcp-session-id"].to_str().unwrap().to_string();
    drop(r);
    let r = post(&mcp, Some(ALICE), &body, "application/json").await;
    assert_eq!(r.status(), 503, "the cap is one session");
    assert!(r.headers().contains_key("retry-after"));
    // Idle past the TTL: the session is gone, and a new one may be opened.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r = mcp_post(&mcp, ALICE)
        .header("mcp-session-id", &session)
        .body(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "an expired session is not found");
    let r = post(&mcp, Some(ALICE), &body, "application/json").await;
    assert_eq!(r.status(), 200);
}

/// What became of a raw connection: when the server closed it (from when it was opened), or
/// `None` if it was still open when we gave up.
async fn watch_raw(
    addr: std::net::SocketAddr,
    first: &'static [u8],
    dribble: bool,
    give_up: Duration,
) -> Option<Duration> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let opened = std::time::Instant::now();
    if !first.is_empty() {
        s.write_all(first).await.ok()?;
    }
    let mut buf = [0u8; 4096];
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            r = s.read(&mut buf) => match r {
                // The server's answer to a complete request: keep the connection and wait.
                Ok(n) if n > 0 => {}
                _ => return Some(opened.elapsed()),
            },
            _ = tick.tick() => {
                if opened.elapsed() > give_up {
                    return None;
                }
                // A header line that never ends, one byte at a time.
                if dribble && s.write_all(b"a").await.is_err() {
                    return Some(opened.elapsed());
                }
            }
        }
    }
}

/// Slowloris: more connections than the cap, each sending nothing or dribbling its headers a
/// byte at a time. The probes and an authenticated initialize still answer at once; every
/// dribbler is closed by the header timeout; a kept-alive connection outlives the header
/// timeout but not the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_silent_connections_cannot_lock_out_probes_or_clients() {
    let sb = Sandbox::new(&["basic"]);
    let server = HttpServer::start(
        &env(
            &sb,
            &[
                ("TERRARIUM_HTTP_MAX_CONNECTIONS", "8"),
                ("TERRARIUM_HTTP_HEADER_TIMEOUT_SECS", "2"),
                ("TERRARIUM_HTTP_IDLE_TIMEOUT_SECS", "5"),
            ],
        ),
        &[],
    );
    let addr = server.addr;
    let give_up = Duration::from_secs(12);
    let mut flood = Vec::new();
    for i in 0..24 {
        let (first, dribble): (&'static [u8], bool) = if i % 2 == 0 {
            (b"", false)
        } else {
            (
                b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ",
                true,
            )
        };
        flood.push(tokio::spawn(watch_raw(addr, first, dribble, give_up)));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let quick = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let r = quick
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("/healthz answers during the flood");
    assert_eq!(r.status(), 200);
    let r = quick
        .post(server.url("/mcp"))
        .header("authorization", format!("Bearer {ALICE}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(initialize().to_string())
        .send()
        .await
        .expect("an authenticated initialize answers during the flood");
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("mcp-session-id"));
    drop(r);

    for (i, c) in flood.into_iter().enumerate() {
        let closed = c.await.unwrap();
        assert!(
            closed.is_some_and(|t| t < Duration::from_millis(4500)),
            "connection {i} was not closed by the header timeout: {closed:?}"
        );
    }
    // A kept-alive connection that completed a request lives past the header timeout.
    let kept = watch_raw(
        addr,
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        false,
        give_up,
    )
    .await;
    assert!(
        kept.is_some_and(|t| t > Duration::from_millis(2500) && t < Duration::from_secs(9)),
        "a kept-alive connection is closed by the idle timeout, not the header timeout: {kept:?}"
    );
    // The server still answers afterwards, and counts what it closed.
    let metrics = quick
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for reason in ["header_timeout", "idle_timeout", "cap"] {
        assert!(
            metrics.contains(&format!(
                "terrarium_http_connections_closed_total{{reason=\"{reason}\"}}"
            )),
            "{metrics}"
        );
    }
    assert!(metrics.contains("terrarium_http_connections "), "{metrics}");
}

/// The TLS listener has the same deadline: a connection that never starts its handshake, or
/// stops in the middle of it, is closed by the header timeout.
#[tokio::test]
async fn tls_connections_that_never_finish_the_handshake_are_closed() {
    let sb = Sandbox::new(&["basic"]);
    let dir = manifest_dir().join("tests/fixtures/tls");
    let e = env(
        &sb,
        &[
            (
                "TERRARIUM_HTTP_TLS_CERT_FILE",
                dir.join("test-cert.pem").to_str().unwrap(),
            ),
            (
                "TERRARIUM_HTTP_TLS_KEY_FILE",
                dir.join("test-key.pem").to_str().unwrap(),
            ),
            ("TERRARIUM_HTTP_HEADER_TIMEOUT_SECS", "2"),
            ("TERRARIUM_HTTP_MAX_CONNECTIONS", "4"),
        ],
    );
    let server = HttpServer::start(&e, &[]);
    let give_up = Duration::from_secs(10);
    let mut conns = Vec::new();
    for i in 0..8 {
        // Half send nothing; half send the first bytes of a ClientHello and stop.
        let first: &'static [u8] = if i % 2 == 0 {
            b""
        } else {
            b"\x16\x03\x01\x02\x00\x01"
        };
        conns.push(tokio::spawn(watch_raw(server.addr, first, false, give_up)));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let addr = server.addr.to_string();
    let (ok, text) = tokio::task::spawn_blocking(move || openssl_get(&addr, "-tls1_3"))
        .await
        .unwrap();
    assert!(
        ok,
        "/healthz over TLS answers while the cap is full: {text}"
    );
    for (i, c) in conns.into_iter().enumerate() {
        let closed = c.await.unwrap();
        assert!(
            closed.is_some_and(|t| t < Duration::from_millis(4500)),
            "TLS connection {i} was not closed by the header timeout: {closed:?}"
        );
    }
}

/// Opens a session as `token` the way a client does (initialize, then `initialized`) and
/// returns its id.
async fn open_session(mcp: &str, token: &str) -> String {
    let r = mcp_post(mcp, token)
        .body(initialize().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = r.headers()["mcp-session-id"].to_str().unwrap().to_string();
    drop(r);
    let r = mcp_post(mcp, token)
        .header("mcp-session-id", &id)
        .body(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    id
}

/// tools/list in a session: the status, and the body (an SSE stream that ends after the
/// answer), read with a deadline.
async fn list_tools_in(mcp: &str, token: &str, session: &str) -> (u16, String) {
    let r = mcp_post(mcp, token)
        .header("mcp-session-id", session)
        .body(json!({"jsonrpc": "2.0", "id": 7, "method": "tools/list"}).to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body = tokio::time::timeout(Duration::from_secs(10), r.text())
        .await
        .map(|t| t.unwrap_or_default())
        .unwrap_or_default();
    (status, body)
}

/// A session belongs to the principal that opened it: another principal, with its own valid
/// token, cannot resume its stream, post into it or delete it — to it the session does not
/// exist — and the owner's session goes on working.
#[tokio::test]
async fn another_principal_cannot_use_or_end_a_session() {
    let (sb, server) = setup(&["basic"]).http(&[]);
    let mcp = server.url("/mcp");
    let alices = open_session(&mcp, ALICE).await;

    // Resume the stream (GET), as a client does to read results.
    let r = client()
        .get(&mcp)
        .header("authorization", format!("Bearer {BOB}"))
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &alices)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "bob resumed alice's stream");
    drop(r);
    // Post into it.
    let (status, body) = list_tools_in(&mcp, BOB, &alices).await;
    assert_eq!(status, 404, "bob posted into alice's session: {body}");
    assert!(!body.contains("terraform_plan"), "{body}");
    // End it.
    let r = client()
        .delete(&mcp)
        .header("authorization", format!("Bearer {BOB}"))
        .header("mcp-session-id", &alices)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "bob deleted alice's session");
    // Refused exactly as an unknown session is.
    let (status, unknown) = list_tools_in(&mcp, BOB, "0123456789abcdef0123456789abcdef").await;
    assert_eq!(status, 404);
    let (_, refused) = list_tools_in(&mcp, BOB, &alices).await;
    assert_eq!(
        refused, unknown,
        "the answer does not confirm the id exists"
    );

    // Alice's session is untouched and still hers.
    let (status, body) = list_tools_in(&mcp, ALICE, &alices).await;
    assert_eq!(status, 200);
    assert!(body.contains("terraform_plan"), "{body}");
    let refusals = sb
        .all_audit_events()
        .into_iter()
        .filter(|e| e["event"] == "session_refused" && e["principal"] == "bob")
        .count();
    assert_eq!(refusals, 5);
    assert!(
        !sb.audit_text().contains(&alices),
        "session ids stay out of the trail"
    );
    // Her own DELETE ends it.
    let r = client()
        .delete(&mcp)
        .header("authorization", format!("Bearer {ALICE}"))
        .header("mcp-session-id", &alices)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let (status, _) = list_tools_in(&mcp, ALICE, &alices).await;
    assert_eq!(status, 404);
}

/// One principal cannot take every session the server allows: it has its own cap in front of
/// the global one, and another principal can still open sessions.
#[tokio::test]
async fn one_principal_cannot_fill_the_session_cap() {
    let sb = Sandbox::new(&["basic"]);
    let server = HttpServer::start(
        &env(
            &sb,
            // By default a principal's share is half the server's sessions.
            &[("TERRARIUM_HTTP_MAX_SESSIONS", "4")],
        ),
        &[],
    );
    let mcp = server.url("/mcp");
    let body = initialize().to_string();
    let first = open_session(&mcp, ALICE).await;
    open_session(&mcp, ALICE).await;
    for _ in 0..3 {
        let r = post(&mcp, Some(ALICE), &body, "application/json").await;
        assert_eq!(r.status(), 429, "alice's share is two sessions");
        assert!(r.headers().contains_key("retry-after"));
    }
    let bobs = open_session(&mcp, BOB).await;
    let (status, _) = list_tools_in(&mcp, BOB, &bobs).await;
    assert_eq!(status, 200, "bob still gets a session");
    // Ending one of hers gives alice room again.
    let r = client()
        .delete(&mcp)
        .header("authorization", format!("Bearer {ALICE}"))
        .header("mcp-session-id", &first)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    open_session(&mcp, ALICE).await;
}

/// One principal's slow runs hold only its share of the run slots: another principal's run
/// still starts at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_principals_slow_runs_do_not_starve_another() {
    let sb = Sandbox::new(&["basic", "replace", "noop"]);
    let mut e = env(
        &sb,
        &[
            // Two slots: by default a principal may hold one of them.
            ("TERRARIUM_MAX_CONCURRENT_RUNS", "2"),
            ("TERRARIUM_QUEUE_WAIT_SECS", "3"),
            ("TERRARIUM_KILL_GRACE_SECS", "1"),
            ("TERRARIUM_TIMEOUT_SECS", "30"),
        ],
    );
    e.insert(
        "TERRARIUM_TERRAFORM_BIN".into(),
        standin("stubborn.sh").display().to_string(),
    );
    let server = HttpServer::start(&e, &[]);
    let alice = connect_http(&server.url("/mcp"), ALICE).await;
    let bob = connect_http(&server.url("/mcp"), BOB).await;
    let a1 = start_call(&alice, "terraform_validate", json!({"path": "basic"})).await;
    read_pid(&sb.root.join("basic/parent.pid"));
    let a2 = start_call(&alice, "terraform_validate", json!({"path": "replace"})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let b = start_call(&bob, "terraform_validate", json!({"path": "noop"})).await;
    let b_pid = sb.root.join("noop/parent.pid");
    let started = std::time::Instant::now();
    while !b_pid.exists() && started.elapsed() < Duration::from_secs(6) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        b_pid.exists(),
        "bob's run did not start while alice's runs held the slots"
    );
    assert!(
        !sb.root.join("replace/parent.pid").exists(),
        "alice's second run waits for her own share"
    );
    // Alice's second call gives up waiting for her share, with the usual answer.
    let r = tokio::time::timeout(Duration::from_secs(10), a2.await_response())
        .await
        .expect("alice's queued call is answered");
    let text = format!("{r:?}");
    assert!(text.contains("maximum number of terraform runs"), "{text}");
    a1.cancel(Some("test".into())).await.unwrap();
    b.cancel(Some("test".into())).await.unwrap();
    assert!(none_left_in(&sb.root.join("basic"), 10));
    assert!(none_left_in(&sb.root.join("noop"), 10));
}

/// Starts the server through `sh -c 'ulimit -n N; exec terrarium ...'`: a process with few file
/// descriptors, where connections run out of descriptors before they reach a large cap.
fn start_with_open_files_limit(
    env: &std::collections::BTreeMap<String, String>,
    nofile: u32,
) -> HttpServer {
    use std::io::BufRead;
    use std::sync::{Arc, Mutex};
    let mut child = std::process::Command::new("/bin/sh")
        .args([
            "-c",
            &format!("ulimit -n {nofile} && exec \"$0\" serve --http --listen 127.0.0.1:0"),
            env!("CARGO_BIN_EXE_terrarium"),
        ])
        .env_clear()
        .envs(env)
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let pipe = child.stderr.take().unwrap();
    let sink = stderr.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
            sink.lock().unwrap().push_str(&format!("{line}\n"));
            if let Some(rest) = line.strip_prefix("terrarium: serving MCP at http://") {
                let _ = tx.send(rest.trim_end_matches("/mcp").to_string());
            }
        }
    });
    let addr = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(a) => a.parse().unwrap(),
        Err(_) => {
            let _ = child.kill();
            panic!("the HTTP server did not start: {}", stderr.lock().unwrap());
        }
    };
    HttpServer {
        child,
        addr,
        stderr,
    }
}

/// The lock-out itself: a server allowed few open files, and more silent connections than it
/// can hold. The default cap is fitted under the descriptor limit, so the flood is closed to
/// make room and `/healthz` and clients still get in (before, accept failed for want of
/// descriptors and nobody got in until the flood went away).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_connections_cannot_exhaust_the_servers_file_descriptors() {
    let sb = Sandbox::new(&["basic"]);
    let server = start_with_open_files_limit(&env(&sb, &[]), 200);
    let mut flood = Vec::new();
    for _ in 0..300 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(server.addr),
        )
        .await
        {
            flood.push(s);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let r = quick
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("/healthz answers with the flood connected");
    assert_eq!(r.status(), 200);
    let r = quick
        .post(server.url("/mcp"))
        .header("authorization", format!("Bearer {ALICE}"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(initialize().to_string())
        .send()
        .await
        .expect("an authenticated initialize answers with the flood connected");
    assert_eq!(r.status(), 200);
    drop(flood);
}

/// Long requests (resumed SSE streams) holding every connection the cap allows do not lock
/// out the probes: a little headroom beyond the cap is kept for short requests.
#[tokio::test]
async fn probes_answer_while_long_requests_hold_every_connection() {
    let sb = Sandbox::new(&["basic"]);
    let server = HttpServer::start(
        &env(
            &sb,
            &[
                ("TERRARIUM_HTTP_MAX_CONNECTIONS", "4"),
                ("TERRARIUM_HTTP_HEADER_TIMEOUT_SECS", "2"),
            ],
        ),
        &[],
    );
    let mcp = server.url("/mcp");
    let mut streams = Vec::new();
    for token in [ALICE, ALICE, BOB, BOB] {
        let session = open_session(&mcp, token).await;
        let r = client()
            .get(&mcp)
            .header("authorization", format!("Bearer {token}"))
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &session)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        streams.push(r);
    }
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    for _ in 0..3 {
        let r = quick
            .get(server.url("/healthz"))
            .send()
            .await
            .expect("/healthz answers while streams hold the cap");
        assert_eq!(r.status(), 200);
    }
    drop(streams);
}

/// A policy giving alice and bob every scope on every workspace; `bob_extra` is added to bob's
/// entry.
fn plan_owner_policy(sb: &Sandbox, name: &str, bob_extra: &str) -> String {
    let path = sb.dir.path().join(name);
    let mut text = terrarium_core::policy::DEFAULT_POLICY.replace(
        "[principals.\"*\"]\nscopes = [\"read\", \"plan\"]\nworkspaces = [\"*\"]",
        "",
    );
    text.push_str(&format!(
        "\n[principals.alice]\nscopes = [\"read\", \"plan\", \"apply\"]\n\n[principals.bob]\nscopes = [\"read\", \"plan\", \"apply\"]\n{bob_extra}\n"
    ));
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Issue 11, item 9: a plan id is not a bearer capability. Bob, with apply scope on the
/// workspace, can neither apply nor show a plan alice made (and learns nothing of it), unless
/// the policy grants him `apply_others_plans`; alice can use her own.
#[tokio::test]
async fn plans_belong_to_the_principal_that_made_them() {
    let sb = Sandbox::new(&["basic", "noop"]);
    let strict = plan_owner_policy(&sb, "strict.toml", "");
    let server = HttpServer::start(
        &env(
            &sb,
            &[
                ("TERRARIUM_ENABLE_APPLY", "true"),
                ("TERRARIUM_POLICY_FILE", &strict),
            ],
        ),
        &[],
    );
    let alice = connect_http(&server.url("/mcp"), ALICE).await;
    let bob = connect_http(&server.url("/mcp"), BOB).await;
    call_ok(&alice, "terraform_init", json!({"path": "basic"})).await;
    let plan = call_ok(
        &alice,
        "terraform_plan",
        json!({"path": "basic", "vars": {"name": "alice-only-value"}}),
    )
    .await;
    let id = plan["plan_id"].as_str().unwrap().to_string();
    for tool in ["terraform_apply", "terraform_show"] {
        let r = call(&bob, tool, json!({"path": "basic", "plan_id": id})).await;
        assert!(is_error(&r), "{tool}: {}", text(&r));
        let s = sc(&r);
        assert_eq!(s["error"]["kind"], "policy", "{s}");
        let m = s["error"]["message"].as_str().unwrap();
        assert!(m.contains("made by another caller"), "{m}");
        assert!(m.contains("apply_others_plans"), "{m}");
        let all = serde_json::to_string(&r).unwrap();
        for detail in ["alice", "alice-only-value", "terraform_data", "greeting"] {
            assert!(!all.contains(detail), "{tool} told bob {detail:?}: {all}");
        }
    }
    // Also from another workspace: the plan's own workspace is not told.
    let r = call(
        &bob,
        "terraform_show",
        json!({"path": "noop", "plan_id": id}),
    )
    .await;
    assert!(is_error(&r));
    assert!(text(&r).contains("made by another caller"), "{}", text(&r));
    assert!(!text(&r).contains("basic"), "{}", text(&r));
    assert!(
        !sb.root.join("basic/terraform.tfstate").exists(),
        "nothing was applied"
    );
    let denied: Vec<Value> = sb
        .audit_events()
        .into_iter()
        .filter(|e| e["event"] == "authorization_denied" && e["principal"] == "bob")
        .collect();
    assert_eq!(denied.len(), 3, "the refusals are audited as such");

    // The refusals left the plan usable: alice shows and applies her own plan.
    let shown = call_ok(
        &alice,
        "terraform_show",
        json!({"path": "basic", "plan_id": id}),
    )
    .await;
    assert_eq!(shown["plan_id"], id.as_str());
    let applied = call_ok(
        &alice,
        "terraform_apply",
        json!({"path": "basic", "plan_id": id}),
    )
    .await;
    assert_eq!(applied["resources_affected"]["add"], 1);
    let second = call_ok(
        &alice,
        "terraform_plan",
        json!({"path": "basic", "vars": {"name": "second"}}),
    )
    .await;
    let second = second["plan_id"].as_str().unwrap().to_string();
    alice.cancel().await.unwrap();
    bob.cancel().await.unwrap();
    drop(server);

    // With the explicit grant, bob may show and apply alice's plan.
    let granted = plan_owner_policy(&sb, "granted.toml", "apply_others_plans = true");
    let server = HttpServer::start(
        &env(
            &sb,
            &[
                ("TERRARIUM_ENABLE_APPLY", "true"),
                ("TERRARIUM_POLICY_FILE", &granted),
            ],
        ),
        &[],
    );
    let bob = connect_http(&server.url("/mcp"), BOB).await;
    call_ok(
        &bob,
        "terraform_show",
        json!({"path": "basic", "plan_id": second}),
    )
    .await;
    let applied = call_ok(
        &bob,
        "terraform_apply",
        json!({"path": "basic", "plan_id": second}),
    )
    .await;
    assert_eq!(applied["resources_affected"]["change"], 1, "{applied}");
    bob.cancel().await.unwrap();
}
