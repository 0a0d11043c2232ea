//! A local stand-in for the GitHub REST API, for the calls Terrarium makes, answering with the
//! real shapes: it verifies the App JWT (RS256 against the App's public key, `iss`, `iat`
//! back-dated, `exp` at most ten minutes after `iat`), issues installation tokens with an
//! expiry and a repository scope, checks those tokens on every repository call, redirects
//! tarball downloads to a "codeload" URL like GitHub does, and records comments and check runs.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

pub const APP_ID: u64 = 4242;
pub const INSTALLATION_ID: u64 = 77;

pub fn app_private_key() -> String {
    std::fs::read_to_string(super::manifest_dir().join("tests/fixtures/github/app-private.pem"))
        .unwrap()
}

pub fn wrong_private_key() -> String {
    std::fs::read_to_string(super::manifest_dir().join("tests/fixtures/github/wrong-private.pem"))
        .unwrap()
}

#[derive(Debug, Clone)]
pub struct Comment {
    pub id: u64,
    pub repo: String,
    pub issue: u64,
    pub body: String,
    pub user_type: String,
}

#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: String,
    pub expires_at: i64,
    pub repositories: Vec<String>,
}

#[derive(Default)]
pub struct MockState {
    /// `owner/repo` → installation id.
    pub installations: HashMap<String, u64>,
    /// Lifetime of issued installation tokens (GitHub: one hour).
    pub token_ttl_secs: i64,
    pub tokens: Vec<IssuedToken>,
    /// Claims of every App JWT accepted.
    pub jwt_claims: Vec<Value>,
    /// Why App JWTs were refused.
    pub jwt_rejections: Vec<String>,
    /// `owner/repo@ref` → tar.gz bytes.
    pub archives: HashMap<String, Vec<u8>>,
    /// `owner/repo#n` → pull request object and its changed files.
    pub pulls: HashMap<String, Value>,
    pub pull_files: HashMap<String, Vec<String>>,
    pub comments: BTreeMap<u64, Comment>,
    pub check_runs: BTreeMap<u64, Value>,
    /// "METHOD /path" of every request, in order.
    pub requests: Vec<String>,
    next_id: u64,
}

pub struct MockGitHub {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<MockState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockGitHub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockGitHub {
    /// Starts the mock on a free loopback port with `acme/infra` installed.
    pub async fn start() -> MockGitHub {
        let state = Arc::new(Mutex::new(MockState {
            token_ttl_secs: 3600,
            next_id: 1000,
            ..MockState::default()
        }));
        state
            .lock()
            .unwrap()
            .installations
            .insert("acme/infra".into(), INSTALLATION_ID);
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MockGitHub { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut MockState) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }

    /// Serves `fixture` (a directory under tests/fixtures) as `repo` at `reference`.
    pub fn serve_dir(&self, repo: &str, reference: &str, dir: &Path) {
        let top = format!(
            "{}-{}",
            repo.replace('/', "-"),
            &reference[..reference.len().min(7)]
        );
        let bytes = super::tarball::of_dir(dir, &top);
        self.serve_bytes(repo, reference, bytes);
    }

    pub fn serve_bytes(&self, repo: &str, reference: &str, bytes: Vec<u8>) {
        self.with(|s| s.archives.insert(format!("{repo}@{reference}"), bytes));
    }

    /// A pull request on `repo` from a branch of the same repository (or a fork).
    pub fn add_pull(&self, repo: &str, number: u64, head_sha: &str, files: &[&str], fork: bool) {
        let head_repo = if fork {
            "mallory/infra".to_string()
        } else {
            repo.to_string()
        };
        let pr = pull_json(repo, number, head_sha, &head_repo);
        self.with(|s| {
            s.pulls.insert(format!("{repo}#{number}"), pr);
            s.pull_files.insert(
                format!("{repo}#{number}"),
                files.iter().map(|f| f.to_string()).collect(),
            );
        });
    }

    pub fn pull_json(&self, repo: &str, number: u64) -> Value {
        self.with(|s| s.pulls[&format!("{repo}#{number}")].clone())
    }

    pub fn comments(&self) -> Vec<Comment> {
        self.with(|s| s.comments.values().cloned().collect())
    }

    pub fn check_runs(&self) -> Vec<Value> {
        self.with(|s| s.check_runs.values().cloned().collect())
    }

    pub fn token_requests(&self) -> usize {
        self.with(|s| s.tokens.len())
    }

    pub fn requests(&self) -> Vec<String> {
        self.with(|s| s.requests.clone())
    }
}

pub fn pull_json(repo: &str, number: u64, head_sha: &str, head_repo: &str) -> Value {
    let repo_obj = |full: &str| {
        json!({
            "id": 1296269, "node_id": "MDEwOlJlcG9zaXRvcnkxMjk2MjY5",
            "name": full.split('/').nth(1), "full_name": full,
            "owner": {"login": full.split('/').next(), "id": 1, "type": "Organization"},
            "private": true, "url": format!("https://api.github.com/repos/{full}"),
        })
    };
    json!({
        "url": format!("https://api.github.com/repos/{repo}/pulls/{number}"),
        "id": 1, "node_id": "MDExOlB1bGxSZXF1ZXN0MQ==", "number": number, "state": "open",
        "title": "Change infrastructure", "user": {"login": "octocat", "id": 1, "type": "User"},
        "head": {"label": "octocat:feature", "ref": "feature", "sha": head_sha,
                 "repo": repo_obj(head_repo)},
        "base": {"label": "acme:main", "ref": "main",
                 "sha": "0000000000000000000000000000000000000000", "repo": repo_obj(repo)},
    })
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn iso(t: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp(t, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({
            "message": message,
            "documentation_url": "https://docs.github.com/rest",
            "status": status.as_u16().to_string(),
        })),
    )
        .into_response()
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("token "))
        })
        .map(String::from)
}

/// Verifies an App JWT as GitHub does; records its claims.
fn check_app_jwt(state: &mut MockState, headers: &HeaderMap) -> Result<(), Response> {
    let unauthorized = |state: &mut MockState, why: String| {
        state.jwt_rejections.push(why);
        Err(error(
            StatusCode::UNAUTHORIZED,
            "A JSON web token could not be decoded",
        ))
    };
    let Some(token) = bearer(headers) else {
        return unauthorized(state, "no bearer".into());
    };
    let public =
        std::fs::read(super::manifest_dir().join("tests/fixtures/github/app-public.pem")).unwrap();
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(&public).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    // `iss` is the App id as a number, which jsonwebtoken checks only as a string: checked below.
    v.set_required_spec_claims(&["exp", "iat"]);
    v.leeway = 0;
    v.validate_aud = false;
    let claims = match jsonwebtoken::decode::<Value>(&token, &key, &v) {
        Ok(d) => d.claims,
        Err(e) => return unauthorized(state, format!("signature/claims: {e}")),
    };
    let iss_ok = claims["iss"].as_u64() == Some(APP_ID)
        || claims["iss"].as_str() == Some(&APP_ID.to_string());
    let iat = claims["iat"].as_i64().unwrap_or(i64::MAX);
    let exp = claims["exp"].as_i64().unwrap_or(0);
    if !iss_ok {
        return unauthorized(state, format!("iss {}", claims["iss"]));
    }
    if iat > now() - 30 {
        return unauthorized(state, "iat is not back-dated".into());
    }
    if exp - iat > 600 {
        return unauthorized(state, "exp is more than 10 minutes after iat".into());
    }
    state.jwt_claims.push(claims);
    Ok(())
}

/// Checks an installation token for a call on `repo`.
fn check_token(state: &MockState, headers: &HeaderMap, repo: &str) -> Result<(), Response> {
    let Some(token) = bearer(headers) else {
        return Err(error(StatusCode::UNAUTHORIZED, "Requires authentication"));
    };
    let Some(t) = state.tokens.iter().find(|t| t.token == token) else {
        return Err(error(StatusCode::UNAUTHORIZED, "Bad credentials"));
    };
    if t.expires_at <= now() {
        return Err(error(StatusCode::UNAUTHORIZED, "Bad credentials"));
    }
    let name = repo.split('/').nth(1).unwrap_or_default();
    if !t.repositories.is_empty() && !t.repositories.iter().any(|r| r == name) {
        return Err(error(StatusCode::NOT_FOUND, "Not Found"));
    }
    Ok(())
}

async fn handle(
    State(state): State<Arc<Mutex<MockState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // A download that never answers (the ref is named "stall").
    if uri.path().starts_with("/_codeload/") && uri.path().ends_with("/stall") {
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
    }
    let mut s = state.lock().unwrap();
    let path = uri.path().to_string();
    s.requests.push(format!("{method} {path}"));
    let seg: Vec<&str> = path.trim_matches('/').split('/').collect();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string();
    match (method.as_str(), seg.as_slice()) {
        ("GET", ["repos", o, r, "installation"]) => {
            if let Err(e) = check_app_jwt(&mut s, &headers) {
                return e;
            }
            match s.installations.get(&format!("{o}/{r}")) {
                Some(id) => axum::Json(json!({
                    "id": id, "app_id": APP_ID, "app_slug": "terrarium",
                    "target_id": 1, "target_type": "Organization",
                    "account": {"login": o, "id": 1, "type": "Organization"},
                    "access_tokens_url": format!("https://api.github.com/app/installations/{id}/access_tokens"),
                    "repositories_url": "https://api.github.com/installation/repositories",
                    "html_url": format!("https://github.com/organizations/{o}/settings/installations/{id}"),
                    "permissions": {"contents": "read", "pull_requests": "write", "checks": "write", "metadata": "read"},
                    "events": ["pull_request"], "repository_selection": "selected",
                    "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
                }))
                .into_response(),
                None => error(StatusCode::NOT_FOUND, "Not Found"),
            }
        }
        ("POST", ["app", "installations", id, "access_tokens"]) => {
            if let Err(e) = check_app_jwt(&mut s, &headers) {
                return e;
            }
            if !s.installations.values().any(|i| i.to_string() == *id) {
                return error(StatusCode::NOT_FOUND, "Not Found");
            }
            let repositories: Vec<String> = body["repositories"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            s.next_id += 1;
            let token = format!("ghs_mock{:032}", s.next_id);
            let expires_at = now() + s.token_ttl_secs;
            s.tokens.push(IssuedToken {
                token: token.clone(),
                expires_at,
                repositories: repositories.clone(),
            });
            (
                StatusCode::CREATED,
                axum::Json(json!({
                    "token": token,
                    "expires_at": iso(expires_at),
                    "permissions": {"contents": "read", "pull_requests": "write", "checks": "write", "metadata": "read"},
                    "repository_selection": "selected",
                    "repositories": repositories.iter().map(|r| json!({
                        "id": 1296269, "node_id": "MDEwOlJlcG9zaXRvcnkxMjk2MjY5", "name": r,
                        "full_name": format!("acme/{r}"), "private": true,
                        "url": format!("https://api.github.com/repos/acme/{r}"),
                    })).collect::<Vec<_>>(),
                })),
            )
                .into_response()
        }
        ("GET", ["repos", o, r, "tarball", rest @ ..]) => {
            let repo = format!("{o}/{r}");
            if let Err(e) = check_token(&s, &headers, &repo) {
                return e;
            }
            let reference = rest.join("/");
            if !s.archives.contains_key(&format!("{repo}@{reference}")) {
                return error(StatusCode::NOT_FOUND, "Not Found");
            }
            // GitHub answers with a redirect to codeload, another origin, carrying its own
            // short-lived token. `localhost` is another origin than `127.0.0.1` here.
            let port = host.rsplit(':').next().unwrap_or_default();
            let location = format!(
                "http://localhost:{port}/_codeload/{o}/{r}/legacy.tar.gz/{reference}?token=AAAA"
            );
            (StatusCode::FOUND, [("location", location)]).into_response()
        }
        ("GET", ["_codeload", o, r, "legacy.tar.gz", rest @ ..]) => {
            // Codeload needs no Authorization header; a client must not send its token here.
            if headers.contains_key("authorization") {
                return error(StatusCode::BAD_REQUEST, "credentials sent to codeload");
            }
            let key = format!("{o}/{r}@{}", rest.join("/"));
            match s.archives.get(&key) {
                Some(bytes) => (
                    StatusCode::OK,
                    [("content-type", "application/x-gzip")],
                    bytes.clone(),
                )
                    .into_response(),
                None => error(StatusCode::NOT_FOUND, "Not Found"),
            }
        }
        ("GET", ["repos", o, r, "pulls", n]) => {
            let repo = format!("{o}/{r}");
            if let Err(e) = check_token(&s, &headers, &repo) {
                return e;
            }
            match s.pulls.get(&format!("{repo}#{n}")) {
                Some(pr) => axum::Json(pr.clone()).into_response(),
                None => error(StatusCode::NOT_FOUND, "Not Found"),
            }
        }
        ("GET", ["repos", o, r, "pulls", n, "files"]) => {
            let repo = format!("{o}/{r}");
            if let Err(e) = check_token(&s, &headers, &repo) {
                return e;
            }
            let files = s
                .pull_files
                .get(&format!("{repo}#{n}"))
                .cloned()
                .unwrap_or_default();
            let page: usize = query(&uri, "page")
                .and_then(|p| p.parse().ok())
                .unwrap_or(1);
            let per: usize = query(&uri, "per_page")
                .and_then(|p| p.parse().ok())
                .unwrap_or(30);
            let items: Vec<Value> = files
                .iter()
                .skip((page - 1) * per)
                .take(per)
                .map(|f| {
                    json!({"sha": "bbcd538c8e72b8c175046e27cc8f907076331401", "filename": f,
                           "status": "modified", "additions": 1, "deletions": 0, "changes": 1,
                           "patch": "@@ -1 +1 @@"})
                })
                .collect();
            axum::Json(items).into_response()
        }
        ("GET", ["repos", o, r, "issues", n, "comments"]) => {
            let repo = format!("{o}/{r}");
            if let Err(e) = check_token(&s, &headers, &repo) {
                return e;
            }
            let n: u64 = n.parse().unwrap_or(0);
            let page: usize = query(&uri, "page")
                .and_then(|p| p.parse().ok())
                .unwrap_or(1);
            let per: usize = query(&uri, "per_page")
                .and_then(|p| p.parse().ok())
                .unwrap_or(30);
            let items: Vec<Value> = s
                .comments
                .values()
                .filter(|c| c.repo == repo && c.issue == n)
                .skip((page - 1) * per)
                .take(per)
                .map(comment_json)
                .collect();
            axum::Json(items).into_response()
        }
        ("POST", ["repos", o, r, "issues", n, "comments"]) => {
            let repo = format!("{o}/{r}");
            if let Err(e) = check_token(&s, &headers, &repo) {
                return e;
            }
            let Some(text) = body["body"].as_str() else {
                return error(StatusCode::UNPROCESSABLE_ENTITY, "body is required");
            };
            if text.chars().count() > 65_536 {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Validation Failed: body is too long (maximum is 65536 characters)",
                );
            }
            s.next_id += 1;
            let c = Comment {
                id: s.next_id,
                repo,
                issue: n.parse().unwrap_or(0),
                body: text.to_string(),
                user_type: "Bot".into(),
            };
            s.comments.insert(c.id, c.clone());
            (StatusCode::CREATED, axum::Json(comment_json(&c))).into_response()
        }
        ("PATCH", ["repos", o, r, "issues", "comments", id]) => {
            let repo = format!("{o}/{r}");
            if let Err(e) = check_token(&s, &headers, &repo) {
                return e;
            }
            let Some(text) = body["body"].as_str() else {
                return error(StatusCode::UNPROCESSABLE_ENTITY, "body is required");
            };
            if text.chars().count() > 65_536 {
                return error(StatusCode::UNPROCESSABLE_ENTITY, "body is too long");
            }
            let id: u64 = id.parse().unwrap_or(0);
            match s.comments.get_mut(&id) {
                Some(c) if c.repo == repo => {
                    c.body = text.to_string();
                    let c = c.clone();
                    axum::Json(comment_json(&c)).into_response()
                }
                _ => error(StatusCode::NOT_FOUND, "Not Found"),
            }
        }
        ("DELETE", ["repos", o, r, "issues", "comments", id]) => {
            let repo = format!("{o}/{r}");
            if let Err(e) = check_token(&s, &headers, &repo) {
                return e;
            }
            let id: u64 = id.parse().unwrap_or(0);
            match s.comments.remove(&id) {
                Some(_) => StatusCode::NO_CONTENT.into_response(),
                None => error(StatusCode::NOT_FOUND, "Not Found"),
            }
        }
        ("POST", ["repos", o, r, "check-runs"]) => {
            let repo = format!("{o}/{r}");
            if let Err(e) = check_token(&s, &headers, &repo) {
                return e;
            }
            if body["name"].as_str().is_none() || body["head_sha"].as_str().is_none() {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "name and head_sha are required",
                );
            }
            s.next_id += 1;
            let id = s.next_id;
            let mut run = body.clone();
            run["id"] = json!(id);
            run["repo"] = json!(repo);
            s.check_runs.insert(id, run.clone());
            (StatusCode::CREATED, axum::Json(run)).into_response()
        }
        ("PATCH", ["repos", o, r, "check-runs", id]) => {
            let repo = format!("{o}/{r}");
            if let Err(e) = check_token(&s, &headers, &repo) {
                return e;
            }
            let id: u64 = id.parse().unwrap_or(0);
            let Some(run) = s.check_runs.get_mut(&id) else {
                return error(StatusCode::NOT_FOUND, "Not Found");
            };
            if let Some(obj) = body.as_object() {
                for (k, v) in obj {
                    run[k] = v.clone();
                }
            }
            let out = run.clone();
            if out["status"] == "completed"
                && !matches!(
                    out["conclusion"].as_str(),
                    Some(
                        "success"
                            | "failure"
                            | "neutral"
                            | "cancelled"
                            | "skipped"
                            | "timed_out"
                            | "action_required"
                    )
                )
            {
                return error(StatusCode::UNPROCESSABLE_ENTITY, "conclusion is invalid");
            }
            axum::Json(out).into_response()
        }
        _ => error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

fn query(uri: &Uri, key: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.to_string())
    })
}

fn comment_json(c: &Comment) -> Value {
    json!({
        "id": c.id, "node_id": "IC_kwDOA", "url": format!("https://api.github.com/repos/{}/issues/comments/{}", c.repo, c.id),
        "html_url": format!("https://github.com/{}/pull/{}#issuecomment-{}", c.repo, c.issue, c.id),
        "body": c.body,
        "user": {"login": if c.user_type == "Bot" { "terrarium[bot]" } else { "octocat" }, "id": 2, "type": c.user_type},
        "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
        "author_association": "NONE",
    })
}
