//! The Streamable HTTP front door: `/mcp` (rmcp's Streamable HTTP service over the same
//! executor as stdio) behind authentication, request checks and security headers, plus the
//! unauthenticated probes `/healthz`, `/readyz` and `/metrics`.
//!
//! Layering, outermost first: the listener (`serve.rs`: header and idle deadlines, connection
//! cap) → security headers → metrics → (for everything but the probes) bearer authentication →
//! session ownership, content-type and session-cap checks → rmcp, which validates `Host` and
//! `Origin` (DNS rebinding), enforces the body size limit and parses JSON-RPC.

pub(crate) mod limits;
mod probes;
mod serve;
mod sessions;
mod tls;
mod webhook;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::auth::{self, TokenSet, jwt};
use crate::github::GitHub;
use crate::mcp::TerrariumServer;
use crate::metrics::{Metrics, RouteLabels};
use crate::settings::{HttpConfig, Settings};
use terrarium_core::Transport;
use terrarium_core::audit;
use terrarium_core::executor::Executor;

pub(crate) use crate::mcp::ClientIp;

#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpError {
    #[error(
        "refusing to listen on {0} without TLS: terminate TLS in a reverse proxy and set \
         TERRARIUM_HTTP_BEHIND_PROXY=true (or --behind-proxy), or listen on a loopback address"
    )]
    PlainTextOnPublicAddress(SocketAddr),
    #[error(
        "refusing to listen on {0} without authentication: set TERRARIUM_AUTH_TOKENS or \
         TERRARIUM_AUTH_TOKENS_FILE (development tokens are generated only for loopback addresses)"
    )]
    NoAuthOnPublicAddress(SocketAddr),
    #[error("TERRARIUM_AUTH_TOKENS: {0}")]
    Tokens(crate::auth::TokenError),
    #[error("TERRARIUM_JWT_ISSUER: {0}")]
    JwtKey(crate::auth::jwt::KeyError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP server: {0}")]
    Serve(std::io::Error),
}

pub(crate) struct HttpState {
    pub exec: Arc<Executor>,
    /// This front door's settings (the core never sees them).
    config: HttpConfig,
    tokens: RwLock<TokenSet>,
    pub metrics: Arc<Metrics>,
    sessions: Arc<LocalSessionManager>,
    max_sessions: usize,
    /// Who opened each session: only that principal may use it.
    owners: sessions::Owners,
    max_sessions_per_principal: usize,
    started: Instant,
    limiters: limits::Limiters,
    jwt: Option<jwt::JwtVerifier>,
    /// The RFC 9728 metadata document, when JWTs are accepted.
    resource_metadata: Option<serde_json::Value>,
    /// Its URL, for `WWW-Authenticate`.
    resource_metadata_url: Option<String>,
    /// The GitHub webhook, when configured.
    webhook: Option<Arc<crate::github::webhook::Receiver>>,
}

/// Why the token file could not be re-read (the previous tokens stay valid).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReloadError {
    #[error("no TERRARIUM_AUTH_TOKENS_FILE to re-read")]
    NoFile,
    #[error("{}: {source}", path.display())]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tokens(#[from] crate::auth::TokenError),
}

impl HttpState {
    /// Re-reads the token file (SIGHUP): new tokens work and removed ones stop working at once.
    pub(crate) fn reload_tokens(&self) -> Result<usize, ReloadError> {
        let path = self
            .config
            .tokens_file
            .as_ref()
            .ok_or(ReloadError::NoFile)?;
        let text = std::fs::read_to_string(path).map_err(|source| ReloadError::Read {
            path: path.clone(),
            source,
        })?;
        let fresh = TokenSet::parse(&text)?;
        let n = fresh.names().len();
        match self.tokens.write() {
            Ok(mut t) => *t = fresh,
            Err(p) => *p.into_inner() = fresh,
        }
        Ok(n)
    }
}

/// How long answers already produced may take to reach their clients at shutdown.
const RESPONSE_DRAIN: Duration = Duration::from_millis(500);

/// A running HTTP server: its address and how to stop it.
pub(crate) struct Running {
    pub addr: SocketAddr,
    /// Whether this server speaks TLS itself.
    pub tls: bool,
    pub state: Arc<HttpState>,
    stop: CancellationToken,
    sessions_stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), HttpError>>,
}

impl Running {
    /// Stops accepting, lets runs finish within `grace`, interrupts the rest, closes sessions.
    pub(crate) async fn shutdown(self, grace: Duration) -> Result<usize, HttpError> {
        self.stop.cancel();
        let interrupted = self.state.exec.shutdown(grace).await;
        // The last results travel from the executor through rmcp's session to the client's
        // stream after the call itself has ended: give them a moment before sessions close.
        tokio::time::sleep(RESPONSE_DRAIN).await;
        self.sessions_stop.cancel();
        match tokio::time::timeout(Duration::from_secs(10), self.task).await {
            Ok(Ok(r)) => r?,
            Ok(Err(e)) => return Err(HttpError::Serve(std::io::Error::other(e.to_string()))),
            Err(_) => tracing::warn!("HTTP connections did not close within 10s of shutdown"),
        }
        Ok(interrupted)
    }
}

fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// Binds and starts serving. With no tokens configured on a loopback address, a development
/// token is generated and printed once to stderr.
pub(crate) async fn start(
    exec: Arc<Executor>,
    settings: &Settings,
    github: Option<Arc<GitHub>>,
) -> Result<Running, HttpError> {
    let cfg = &settings.http;
    let tls = match (&cfg.tls_cert_file, &cfg.tls_key_file) {
        (Some(cert), Some(key)) => Some(tls::server_config(cert, key).map_err(HttpError::Tls)?),
        _ => None,
    };
    if !is_loopback(&cfg.listen) && !cfg.behind_proxy && tls.is_none() {
        return Err(HttpError::PlainTextOnPublicAddress(cfg.listen));
    }
    // Before binding: a bad token list never opens a port.
    TokenSet::parse(cfg.tokens.expose()).map_err(HttpError::Tokens)?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| HttpError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(HttpError::Serve)?;
    let is_tls = tls.is_some();
    let App {
        router: app,
        state,
        sessions_stop,
    } = app(exec, settings, github, addr, is_tls)?;
    let stop = CancellationToken::new();
    let limits = serve::Limits {
        header_timeout: cfg.header_timeout,
        idle_timeout: cfg.idle_timeout,
        max_connections: cfg.max_connections,
    };
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let serving = serve::serve(
        listener,
        app,
        acceptor,
        limits,
        state.metrics.clone(),
        stop.clone(),
    );
    let task = tokio::spawn(async move { serving.await.map_err(HttpError::Serve) });
    tracing::info!(%addr, "serving MCP over Streamable HTTP at /mcp");
    Ok(Running {
        tls: is_tls,
        addr,
        state,
        stop,
        sessions_stop,
        task,
    })
}

/// The application a listener serves: every route and check, without the socket (so the
/// router can be driven in process).
pub(crate) struct App {
    pub router: Router,
    pub state: Arc<HttpState>,
    /// Ends every MCP session (shutdown).
    pub sessions_stop: CancellationToken,
}

/// Builds the router for a server reachable at `addr` (`tls`: whether this server itself
/// speaks TLS, for HSTS). Must run inside the runtime: it starts the pruning task.
pub(crate) fn app(
    exec: Arc<Executor>,
    settings: &Settings,
    github: Option<Arc<GitHub>>,
    addr: SocketAddr,
    tls: bool,
) -> Result<App, HttpError> {
    let cfg = settings.http.clone();
    let mut tokens = TokenSet::parse(cfg.tokens.expose()).map_err(HttpError::Tokens)?;
    if tokens.is_empty() && cfg.jwt_issuer.is_none() {
        if !is_loopback(&addr) {
            return Err(HttpError::NoAuthOnPublicAddress(addr));
        }
        let token = auth::generate_token().map_err(HttpError::Serve)?;
        tokens = TokenSet::parse(&format!("dev:{token}")).map_err(HttpError::Tokens)?;
        eprintln!(
            "terrarium: no TERRARIUM_AUTH_TOKENS set; development token for this run (loopback only):\n  \
             {token}\nconnect with, for example:\n  npx @modelcontextprotocol/inspector --transport http \
             --server-url http://{addr}/mcp --header \"Authorization: Bearer {token}\""
        );
    }

    let jwt = match (&cfg.jwt_issuer, &cfg.jwt_audience) {
        (Some(issuer), Some(audience)) => Some(
            jwt::JwtVerifier::new(
                issuer,
                audience,
                cfg.jwt_jwks_file.as_deref(),
                cfg.jwt_public_key_file.as_deref(),
            )
            .map_err(HttpError::JwtKey)?,
        ),
        _ => None,
    };
    let resource = cfg
        .resource_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}/mcp"));
    let (resource_metadata, resource_metadata_url) = match &jwt {
        Some(_) => {
            let origin = resource
                .split("/mcp")
                .next()
                .unwrap_or(&resource)
                .trim_end_matches('/')
                .to_string();
            (
                Some(json!({
                    "resource": resource,
                    "authorization_servers": cfg.authorization_servers,
                    "bearer_methods_supported": ["header"],
                    "scopes_supported": ["read", "plan", "apply"],
                    "resource_name": "Terrarium",
                })),
                Some(format!("{origin}/.well-known/oauth-protected-resource")),
            )
        }
        None => (None, None),
    };
    let metrics = Arc::new(Metrics::new());
    let mut manager = LocalSessionManager::default();
    manager.session_config.keep_alive = Some(cfg.session_idle);
    let sessions = Arc::new(manager);
    let sessions_stop = CancellationToken::new();
    let mcp_config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(cfg.allowed_hosts.clone())
        .with_allowed_origins(cfg.allowed_origins.clone())
        .with_max_request_body_bytes(cfg.max_body_bytes)
        .with_cancellation_token(sessions_stop.clone());
    let mcp_config = if cfg.allowed_origins.is_empty() {
        // No browser origin is allowed unless configured: an `Origin` header means a browser.
        mcp_config.enforce_origin_validation()
    } else {
        mcp_config
    };
    let factory_exec = exec.clone();
    let factory_metrics = metrics.clone();
    let mcp = StreamableHttpService::new(
        move || {
            Ok(
                TerrariumServer::new(factory_exec.clone(), Transport::Http, "anonymous")
                    .with_metrics(factory_metrics.clone()),
            )
        },
        sessions.clone(),
        mcp_config,
    );
    let state = Arc::new(HttpState {
        exec: exec.clone(),
        config: cfg.clone(),
        tokens: RwLock::new(tokens),
        metrics: metrics.clone(),
        sessions,
        max_sessions: cfg.max_sessions,
        owners: sessions::Owners::default(),
        max_sessions_per_principal: cfg.max_sessions_per_principal,
        started: Instant::now(),
        limiters: limits::Limiters::new(
            cfg.rate_per_sec,
            cfg.rate_burst,
            cfg.trusted_proxies.clone(),
        ),
        jwt,
        resource_metadata,
        resource_metadata_url,
        webhook: crate::github::webhook::Receiver::start(exec.clone(), github),
    });
    let prune_state = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            prune_state.limiters.prune();
            live_sessions(&prune_state).await;
        }
    });

    let protected = Router::new()
        .nest_service("/mcp", mcp)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), mcp_checks))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            limit_principal,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(middleware::from_fn_with_state(state.clone(), limit_ip));
    // GitHub signs its deliveries instead of sending a bearer token: rate-limited per IP,
    // capped in size, and authenticated by the signature in the handler.
    let github_body_limit = settings.github.webhook_max_bytes;
    let github = Router::new()
        .route("/github/webhook", axum::routing::post(webhook::receive))
        .layer(axum::extract::DefaultBodyLimit::max(github_body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), limit_ip));
    let app = Router::new()
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz))
        .route("/metrics", get(probes::metrics))
        .route(
            "/.well-known/oauth-protected-resource",
            get(probes::resource_metadata),
        )
        .route(
            "/.well-known/oauth-protected-resource/mcp",
            get(probes::resource_metadata),
        )
        .merge(github)
        .merge(protected)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        // HSTS only where this server itself speaks TLS (a proxy sets its own).
        .layer(SetResponseHeaderLayer::if_not_present(
            header::STRICT_TRANSPORT_SECURITY,
            if tls {
                Some(HeaderValue::from_static(
                    "max-age=63072000; includeSubDomains",
                ))
            } else {
                None
            },
        ))
        .with_state(state.clone());

    // CORS only for the configured origins (never `*`; no credentials: callers send bearer
    // headers, not cookies). Preflights are answered here, before authentication.
    let app = if cfg.allowed_origins.is_empty() {
        app
    } else {
        let origins: Vec<HeaderValue> = cfg
            .allowed_origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o.trim_end_matches(":*")).ok())
            .collect();
        app.layer(
            tower_http::cors::CorsLayer::new()
                .allow_origin(origins)
                .allow_methods([Method::GET, Method::POST, Method::DELETE])
                .allow_headers([
                    header::AUTHORIZATION,
                    header::CONTENT_TYPE,
                    header::ACCEPT,
                    header::HeaderName::from_static("mcp-session-id"),
                    header::HeaderName::from_static("mcp-protocol-version"),
                    header::HeaderName::from_static("last-event-id"),
                ])
                .expose_headers([header::HeaderName::from_static("mcp-session-id")])
                .max_age(Duration::from_secs(600)),
        )
    };
    Ok(App {
        router: app,
        state,
        sessions_stop,
    })
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

fn client_ip(req: &Request) -> String {
    req.extensions()
        .get::<ClientIp>()
        .map(|c| c.0.clone())
        .unwrap_or_else(|| "unknown".into())
}

/// A 429 with the `RateLimit-*` and `Retry-After` headers, a metric and an audit event.
fn too_many(
    state: &HttpState,
    decision: limits::Decision,
    ip: &str,
    principal: Option<&str>,
) -> Response {
    let limits::Decision::Deny {
        limit,
        retry_after_secs,
    } = decision
    else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    state.metrics.rate_limited.inc();
    let _ = state.exec.auditor().record(audit::event(
        "rate_limited",
        "warn",
        json!({"transport": "http", "source_ip": ip, "principal": principal, "retry_after": retry_after_secs}),
    ));
    let mut r = json_error(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        &format!("too many requests; retry in {retry_after_secs}s"),
    );
    let h = r.headers_mut();
    let n = |v: u64| HeaderValue::from_str(&v.to_string()).unwrap_or(HeaderValue::from_static("0"));
    h.insert("ratelimit-limit", n(u64::from(limit)));
    h.insert("ratelimit-remaining", HeaderValue::from_static("0"));
    h.insert("ratelimit-reset", n(retry_after_secs));
    h.insert(header::RETRY_AFTER, n(retry_after_secs));
    r
}

/// Works out the client's address and applies its rate limit, before authentication.
async fn limit_ip(State(state): State<Arc<HttpState>>, mut req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let forwarded = req
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok());
    let ip = state.limiters.client_ip(peer, forwarded).to_string();
    let decision = state.limiters.check_ip(&ip);
    if matches!(decision, limits::Decision::Deny { .. }) {
        return too_many(&state, decision, &ip, None);
    }
    req.extensions_mut().insert(ClientIp(ip));
    next.run(req).await
}

/// The per-principal limit, after authentication; allowed responses carry the remaining budget.
async fn limit_principal(
    State(state): State<Arc<HttpState>>,
    req: Request,
    next: Next,
) -> Response {
    let principal = req
        .extensions()
        .get::<auth::Principal>()
        .map(|p| p.0.clone())
        .unwrap_or_default();
    let decision = state.limiters.check_principal(&principal);
    match decision {
        limits::Decision::Deny { .. } => {
            too_many(&state, decision, &client_ip(&req), Some(&principal))
        }
        limits::Decision::Allow { limit, remaining } => {
            let mut r = next.run(req).await;
            let h = r.headers_mut();
            h.insert("ratelimit-limit", HeaderValue::from(limit));
            h.insert("ratelimit-remaining", HeaderValue::from(remaining));
            r
        }
    }
}

/// Counts every request by route and status, with its duration.
async fn observe(State(state): State<Arc<HttpState>>, req: Request, next: Next) -> Response {
    let route = match req.uri().path() {
        p @ ("/healthz" | "/readyz" | "/metrics" | "/mcp" | "/github/webhook") => p.to_string(),
        _ => "other".to_string(),
    };
    let started = Instant::now();
    let response = next.run(req).await;
    let labels = RouteLabels {
        route,
        status: response.status().as_u16(),
    };
    state.metrics.requests.get_or_create(&labels).inc();
    state
        .metrics
        .request_duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Bearer authentication for everything but the probes. A refusal is a 401 that says how to
/// authenticate, an audit event and a metric; the token itself is never logged.
async fn authenticate(
    State(state): State<Arc<HttpState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let ip = client_ip(&req);
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    let presented = header.and_then(auth::bearer);
    let mut refusal: Option<jwt::Refusal> = None;
    let principal = presented.and_then(|t| {
        if let Some(p) = state.tokens.read().ok().and_then(|set| set.authenticate(t)) {
            return Some(p);
        }
        let verifier = state.jwt.as_ref()?;
        match verifier.verify(t) {
            Ok(p) => Some(p),
            Err(r) => {
                refusal = Some(r);
                None
            }
        }
    });
    let Some(principal) = principal else {
        state.metrics.auth_failures.inc();
        let reason = match (&presented, &refusal) {
            (None, _) => "missing_token",
            (Some(_), Some(jwt::Refusal::Expired)) => "expired_token",
            (Some(_), Some(jwt::Refusal::WrongIssuerOrAudience)) => "wrong_audience",
            (Some(_), _) => "invalid_token",
        };
        let _ = state.exec.auditor().record(audit::event(
            "auth_failure",
            "warn",
            json!({"transport": "http", "source_ip": ip, "reason": reason, "path": req.uri().path()}),
        ));
        let mut challenge = String::from(r#"Bearer realm="terrarium""#);
        if let Some(url) = &state.resource_metadata_url {
            challenge.push_str(&format!(r#", resource_metadata="{url}""#));
        }
        if presented.is_some() {
            challenge.push_str(r#", error="invalid_token""#);
            if let Some(r) = &refusal {
                challenge.push_str(&format!(r#", error_description="{}""#, r.description()));
            }
        }
        let mut r = (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": reason, "message": "send Authorization: Bearer <token>"})),
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        return r;
    };
    req.extensions_mut().insert(principal);
    next.run(req).await
}

fn json_error(status: StatusCode, error: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": error, "message": message})),
    )
        .into_response()
}

/// Forgets the owners of sessions that have ended (closed, or expired when idle) and updates
/// the sessions gauge.
async fn live_sessions(state: &HttpState) {
    let mark = state.owners.mark();
    let live: std::collections::HashSet<String> = state
        .sessions
        .sessions
        .read()
        .await
        .keys()
        .map(|k| k.to_string())
        .collect();
    state.owners.retain_live(mark, &live);
    state.metrics.sessions.set(live.len() as i64);
}

/// What rmcp answers for an unknown session: also the answer for another principal's session,
/// so that a guessed or leaked id is not even confirmed to exist.
fn session_not_found() -> Response {
    (StatusCode::NOT_FOUND, "Not Found: Session not found").into_response()
}

/// 503 (the server's cap) or 429 (the caller's own share), with `Retry-After`.
fn too_many_sessions(status: StatusCode, message: &str) -> Response {
    let mut r = (
        status,
        axum::Json(json!({"error": "too_many_sessions", "message": message})),
    )
        .into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
    r
}

/// Request checks rmcp does not make (or makes differently): a session id must name one of the
/// caller's own sessions; the content type of posted messages, the body size, well-formed JSON
/// (a JSON-RPC parse error otherwise); the per-principal and the global session caps. Nothing
/// that fails here reaches the executor.
async fn mcp_checks(State(state): State<Arc<HttpState>>, req: Request, next: Next) -> Response {
    let principal = req
        .extensions()
        .get::<auth::Principal>()
        .map(|p| p.0.clone())
        .unwrap_or_default();
    // `Some(None)`: a session id that is not even text.
    let session_id = req
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().ok().map(str::to_string));
    if let Some(id) = &session_id {
        let owned = id
            .as_deref()
            .is_some_and(|id| state.owners.access(id, &principal) == sessions::Access::Owner);
        if !owned {
            let _ = state.exec.auditor().record(audit::event(
                "session_refused",
                "warn",
                json!({"transport": "http", "source_ip": client_ip(&req), "principal": principal,
                       "method": req.method().as_str()}),
            ));
            return session_not_found();
        }
    }
    let deleting = req.method() == Method::DELETE;
    let mut opening = None;
    let req = if req.method() == Method::POST {
        let json_body = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !json_body {
            return json_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "POST /mcp takes Content-Type: application/json",
            );
        }
        let limit = state.config.max_body_bytes;
        let (parts, body) = req.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                &format!("the request body is larger than {limit} bytes (or arrived too slowly)"),
            );
        };
        if serde_json::from_slice::<serde_json::Value>(&bytes).is_err() {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "Parse error: the body is not valid JSON"}})),
            )
                .into_response();
        }
        let req = Request::from_parts(parts, axum::body::Body::from(bytes));
        if session_id.is_none() {
            // Forget ended sessions, then: the server's cap, and below it each caller's share,
            // so that one principal cannot take every session.
            live_sessions(&state).await;
            match state.owners.try_open(
                &principal,
                state.max_sessions_per_principal,
                state.max_sessions,
            ) {
                Ok(o) => opening = Some(o),
                Err(sessions::Full::Server) => {
                    return too_many_sessions(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the server's session limit is reached; retry later",
                    );
                }
                Err(sessions::Full::Principal(held)) => {
                    return too_many_sessions(
                        StatusCode::TOO_MANY_REQUESTS,
                        &format!(
                            "you hold {held} open sessions, the most one caller may; close one \
                             (DELETE /mcp with its Mcp-Session-Id) or let it expire"
                        ),
                    );
                }
            }
        }
        req
    } else {
        req
    };
    let response = next.run(req).await;
    if let Some(opening) = opening
        && let Some(id) = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
    {
        opening.opened(id);
    }
    if deleting
        && response.status().is_success()
        && let Some(Some(id)) = &session_id
    {
        state.owners.forget(id);
    }
    let open = state.sessions.sessions.read().await.len();
    state.metrics.sessions.set(open as i64);
    response
}

/// Used by probes and tests: how long the server has been up.
pub(crate) fn uptime(state: &HttpState) -> Duration {
    state.started.elapsed()
}

#[cfg(test)]
mod tests;
