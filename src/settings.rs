//! The one typed configuration, loaded once at start-up and validated before anything runs.
//!
//! Every setting is defined once, in [`defs`]; [`layers`] reads its value (default < the TOML
//! file < the environment, `NAME_FILE` for any of them) and this module turns the values into
//! the core's [`Config`] and the front doors' own settings, checking what involves more than one
//! setting. Which files may be read at all (`--config`, `--env-file`, and the implicit
//! `terrarium.toml`/`.env` of the current directory, never from workspace content) is decided
//! and checked by [`sources`] before this runs.
//!
//! Loading takes its inputs as plain maps so that it is unit-testable without touching the
//! process environment.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(crate) mod defs;
mod github;
mod layers;
pub(crate) mod sources;

pub(crate) use github::GitHubConfig;
pub(crate) use layers::Unknown;

use defs as d;
use layers::Layers;
use terrarium_core::audit::AuditConfig;
use terrarium_core::config::{
    Config, ENV_PREFIX, FORBIDDEN_PASSTHROUGH, Limits, SandboxMode, is_forbidden_env,
};
use terrarium_core::policy::Policy;
use terrarium_core::sandbox::LayerKind;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    #[error("{name}: {message}")]
    Invalid { name: String, message: String },
    #[error("both {name} and {name}_FILE are set; set only one of them")]
    Ambiguous { name: String },
    #[error("{name}: cannot read {path}: {source}")]
    SecretFile {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
}

fn invalid(name: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name: name.to_string(),
        message: message.into(),
    }
}

/// Everything the binary loaded: the core's [`Config`] and the front doors' own settings, which
/// the core (and so every tool) never sees.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub core: Config,
    /// Diagnostic logs go to this file instead of stderr.
    pub log_file: Option<PathBuf>,
    /// Diagnostic log level: error, warn, info or debug.
    pub log_level: String,
    pub http: HttpConfig,
    pub github: GitHubConfig,
    /// The files settings were read from.
    pub sources: SourceFiles,
    /// Every file the configuration named (`NAME_FILE`s, the policy, keys, certificates): the
    /// sources check refuses any inside the workspace root or CI checkout.
    pub named_files: Vec<PathBuf>,
    /// Names no setting has (a warning at `serve`, an error at `check-config`).
    pub unknown: Vec<Unknown>,
}

/// The TOML file and the env file that were read, if any.
#[derive(Debug, Clone, Default)]
pub(crate) struct SourceFiles {
    pub config: Option<PathBuf>,
    pub env_file: Option<PathBuf>,
}

/// A secret string: never printed, never in `Debug` output.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(****)")
    }
}

/// The Streamable HTTP front door.
#[derive(Debug, Clone)]
pub(crate) struct HttpConfig {
    pub listen: std::net::SocketAddr,
    /// The operator says a TLS-terminating proxy is in front (needed for non-loopback binds).
    pub behind_proxy: bool,
    /// `Host` values accepted (DNS-rebinding protection); loopback names by default.
    pub allowed_hosts: Vec<String>,
    /// `Origin` values accepted; requests without `Origin` are not browser requests and pass.
    pub allowed_origins: Vec<String>,
    pub max_body_bytes: usize,
    pub session_idle: Duration,
    pub max_sessions: usize,
    /// Open sessions one principal may hold, in front of `max_sessions`.
    pub max_sessions_per_principal: usize,
    /// Time a client has to send a request's headers (counted from the connection's accept, or
    /// from the first byte of a later request), and again its body.
    pub header_timeout: Duration,
    /// A kept-alive connection with no request in flight is closed after this.
    pub idle_timeout: Duration,
    /// Connections open at once; beyond it the longest-waiting connection without a request
    /// in flight is closed to make room.
    pub max_connections: usize,
    /// `name:token` or `name:sha256:HEX` entries.
    pub tokens: Secret,
    /// Where the tokens came from, kept so that SIGHUP can re-read it.
    pub tokens_file: Option<PathBuf>,
    /// Token bucket per client IP and per principal: sustained rate and burst.
    pub rate_per_sec: u32,
    pub rate_burst: u32,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// OAuth resource-server mode: accept JWTs from this issuer for this audience.
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    pub jwt_jwks_file: Option<PathBuf>,
    pub jwt_public_key_file: Option<PathBuf>,
    /// The resource identifier advertised in RFC 9728 metadata (default `http://LISTEN/mcp`).
    pub resource_url: Option<String>,
    /// Authorization servers advertised in the metadata (default: the JWT issuer).
    pub authorization_servers: Vec<String>,
    /// Native TLS: certificate chain and private key (PEM).
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
}

impl Settings {
    /// Loads from an environment snapshot; `cwd` is where relative paths start.
    #[cfg(test)]
    pub(crate) fn load(
        env: &BTreeMap<String, String>,
        cwd: &Path,
    ) -> Result<Settings, ConfigError> {
        Settings::load_layered(env, &BTreeMap::new(), cwd)
    }

    /// Loads with `fallbacks` (by environment name) below every layer.
    pub(crate) fn load_layered(
        env: &BTreeMap<String, String>,
        fallbacks: &BTreeMap<String, String>,
        cwd: &Path,
    ) -> Result<Settings, ConfigError> {
        let l = Layers::new(env, fallbacks, cwd)?;

        let workspace_root = l.path(&d::WORKSPACE_ROOT)?.ok_or_else(|| {
            invalid(
                d::WORKSPACE_ROOT.name,
                "not set; point it at the directory that holds your Terraform workspaces",
            )
        })?;
        let root_label = l.label(&d::WORKSPACE_ROOT);
        let workspace_root = std::fs::canonicalize(&workspace_root)
            .map_err(|e| invalid(&root_label, format!("{}: {e}", workspace_root.display())))?;
        if !workspace_root.is_dir() {
            return Err(invalid(
                &root_label,
                format!("{} is not a directory", workspace_root.display()),
            ));
        }
        // Runs may read the system directories: the root must not be one of them.
        for sys in terrarium_core::sandbox::access::SYSTEM_READ_EXEC
            .iter()
            .chain(terrarium_core::sandbox::access::SYSTEM_READ)
        {
            if workspace_root.starts_with(sys) {
                return Err(invalid(
                    &root_label,
                    format!(
                        "{} lies in {sys}, which every run may read; choose a root outside system directories",
                        workspace_root.display()
                    ),
                ));
            }
        }

        let terraform_bin = l
            .text(&d::TERRAFORM_BIN)?
            .unwrap_or_else(|| "terraform".into());
        let tf_label = l.label(&d::TERRAFORM_BIN);
        let terraform_bin = resolve_executable(Path::new(terraform_bin.trim()), env.get("PATH"))
            .map_err(|m| invalid(&tf_label, m))?;
        // Every run may read and execute terraform's directory, opened by name for each run:
        // inside the root, a run could swap it for a link to `/`.
        if let Some(dir) = terraform_bin.parent() {
            let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
            outside_root(&tf_label, &dir, &workspace_root, "its directory ")
                .map_err(|e| e.with_hint("install terraform outside it"))?;
        }

        let state_dir = l
            .path(&d::STATE_DIR)?
            .unwrap_or_else(|| default_state_dir(env));
        let state_label = l.label(&d::STATE_DIR);
        std::fs::create_dir_all(&state_dir).map_err(|e| {
            invalid(
                &state_label,
                format!("cannot create {}: {e}", state_dir.display()),
            )
        })?;
        let state_dir = std::fs::canonicalize(&state_dir)
            .map_err(|e| invalid(&state_label, format!("{}: {e}", state_dir.display())))?;
        outside_root(&state_label, &state_dir, &workspace_root, "")
            .map_err(|e| e.with_hint("saved plans must live outside it"))?;

        let max_concurrent_runs: usize = l.number(&d::MAX_CONCURRENT_RUNS)?;
        // By default one principal may use all slots but one, so another caller always finds
        // a slot that a single principal's slow runs cannot take.
        let max_runs_per_principal = match l.int(&d::MAX_RUNS_PER_PRINCIPAL)? {
            Some(n) => n as usize,
            None => max_concurrent_runs.saturating_sub(1).max(1),
        };

        let passthrough_env = l.list(&d::PASSTHROUGH_ENV)?;
        let passthrough_prefixes = l.list(&d::PASSTHROUGH_PREFIXES)?;
        validate_passthrough(&passthrough_env, &passthrough_prefixes)?;

        let limits = Limits {
            cpu_secs: l.number(&d::LIMIT_CPU_SECS)?,
            address_space_bytes: l.number(&d::LIMIT_ADDRESS_SPACE_BYTES)?,
            open_files: l.number(&d::LIMIT_OPEN_FILES)?,
            processes: l.number(&d::LIMIT_PROCESSES)?,
            file_size_bytes: l.number(&d::LIMIT_FILE_SIZE_BYTES)?,
        };

        let inside_root = |p: &Path| {
            let mut probe = p.to_path_buf();
            // The directory may not exist yet: check its nearest existing ancestor.
            while !probe.exists() && probe.pop() {}
            std::fs::canonicalize(&probe).is_ok_and(|c| c.starts_with(&workspace_root))
        };
        let audit_dir = l
            .path(&d::AUDIT_DIR)?
            .unwrap_or_else(|| state_dir.join("audit"));
        if inside_root(&audit_dir) {
            return Err(invalid(
                &l.label(&d::AUDIT_DIR),
                "must not lie inside the workspace root, where terraform runs could edit it",
            ));
        }
        let audit_syslog = l.text(&d::AUDIT_SYSLOG)?;
        if let Some(url) = &audit_syslog {
            terrarium_core::audit::syslog::parse_url(url)
                .map_err(|e| invalid(&l.label(&d::AUDIT_SYSLOG), e.to_string()))?;
        }
        let audit = AuditConfig {
            dir: Some(audit_dir),
            retention_days: l.number(&d::AUDIT_RETENTION_DAYS)?,
            syslog: audit_syslog,
            stderr: l.bool(&d::AUDIT_STDERR)?,
            omit_personal_data: l.bool(&d::AUDIT_OMIT_PERSONAL_DATA)?,
        };
        let log_file = l.path(&d::LOG_FILE)?;
        if log_file.as_deref().is_some_and(inside_root) {
            return Err(invalid(
                &l.label(&d::LOG_FILE),
                "must not lie inside the workspace root",
            ));
        }
        let log_level = parse_log_level(&l.string(&d::LOG_LEVEL)?)
            .map_err(|m| invalid(&l.label(&d::LOG_LEVEL), m))?;

        let policy_file = l.path(&d::POLICY_FILE)?;
        // Checked here so a bad file is a configuration error; the executor loads its own copy
        // (and re-loads it on SIGHUP), so no stale one is kept in the configuration.
        Policy::load(policy_file.as_deref())
            .map_err(|e| invalid(&l.label(&d::POLICY_FILE), e.to_string()))?;

        let sandbox = match l.string(&d::SANDBOX)?.trim().to_ascii_lowercase().as_str() {
            "strict" => SandboxMode::Strict,
            "best-effort" | "best_effort" => SandboxMode::BestEffort,
            "off" => SandboxMode::Off,
            other => {
                return Err(invalid(
                    &l.label(&d::SANDBOX),
                    format!("expected strict, best-effort or off, got {other:?}"),
                ));
            }
        };
        let sandbox_connect_ports: Vec<u16> =
            l.parsed_list(&d::SANDBOX_CONNECT_PORTS, "a TCP port number, e.g. 443")?;
        if sandbox_connect_ports.contains(&0) {
            return Err(invalid(
                &l.label(&d::SANDBOX_CONNECT_PORTS),
                "0 is not a TCP port number",
            ));
        }
        let sandbox_read_paths: Vec<PathBuf> = l
            .list(&d::SANDBOX_READ_PATHS)?
            .into_iter()
            .map(PathBuf::from)
            .collect();
        for p in &sandbox_read_paths {
            let label = l.label(&d::SANDBOX_READ_PATHS);
            if !p.is_absolute() {
                return Err(invalid(
                    &label,
                    format!("{} is not an absolute path", p.display()),
                ));
            }
            // Granted to every run by name: inside the root a run could swap it for a link to
            // `/`; around the root it would open every workspace to every run.
            let real = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
            outside_root(&label, &real, &workspace_root, "")?;
        }
        let sandbox_disable = l
            .list(&d::SANDBOX_DISABLE)?
            .iter()
            .map(|s| s.parse::<LayerKind>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|m| invalid(&l.label(&d::SANDBOX_DISABLE), m.to_string()))?;

        let http = load_http(&l)?;
        let github = github::load(&l)?;

        let core = Config {
            sandbox_disable,
            sandbox,
            sandbox_connect_ports,
            sandbox_read_paths,
            policy_file,
            workspace_root,
            terraform_bin,
            timeout: l.secs(&d::TIMEOUT_SECS)?,
            kill_grace: l.secs(&d::KILL_GRACE_SECS)?,
            enable_apply: l.bool(&d::ENABLE_APPLY)?,
            enable_destroy: l.bool(&d::ENABLE_DESTROY)?,
            state_dir,
            plan_ttl: l.secs(&d::PLAN_TTL_SECS)?,
            output_limit_bytes: l.number(&d::OUTPUT_LIMIT_BYTES)?,
            max_concurrent_runs,
            queue_wait: l.secs(&d::QUEUE_WAIT_SECS)?,
            max_runs_per_principal,
            shutdown_grace: l.secs(&d::SHUTDOWN_GRACE_SECS)?,
            child_path: l.string(&d::CHILD_PATH)?,
            passthrough_env,
            passthrough_prefixes,
            limits,
            audit,
        };
        Ok(Settings {
            core,
            log_file,
            log_level,
            http,
            github,
            sources: SourceFiles {
                config: l.path(&d::CONFIG)?,
                env_file: l.path(&d::ENV_FILE)?,
            },
            named_files: l.named_files()?,
            unknown: l.unknown(),
        })
    }

    /// The effective settings as `(env name, value)` pairs, every definition in order, for
    /// `check-config` and the start-up audit event. Credentials are masked; pass-through
    /// variables are listed by name only.
    pub(crate) fn effective(&self) -> Vec<(&'static str, String)> {
        d::ALL.iter().map(|d| (d.name, (d.show)(self))).collect()
    }
}

/// The HTTP front door's settings (and its authentication).
fn load_http(l: &Layers<'_>) -> Result<HttpConfig, ConfigError> {
    let listen = l.string(&d::HTTP_LISTEN)?;
    let listen: std::net::SocketAddr = listen.trim().parse().map_err(|_| {
        invalid(
            &l.label(&d::HTTP_LISTEN),
            format!("expected IP:PORT, got {listen:?}"),
        )
    })?;
    let tokens = l.secret(&d::AUTH_TOKENS)?;
    crate::auth::TokenSet::parse(tokens.expose())
        .map_err(|m| invalid(&l.label(&d::AUTH_TOKENS), m.to_string()))?;
    // Kept so that SIGHUP can re-read the tokens (the other `NAME_FILE`s are read once).
    let tokens_file = l.indirect_file(&d::AUTH_TOKENS);
    let max_sessions: usize = l.number(&d::HTTP_MAX_SESSIONS)?;
    let jwt_issuer = l.text(&d::JWT_ISSUER)?;
    let jwt_audience = l.text(&d::JWT_AUDIENCE)?;
    let jwt_jwks_file = l.path(&d::JWT_JWKS_FILE)?;
    let jwt_public_key_file = l.path(&d::JWT_PUBLIC_KEY_FILE)?;
    if let Some(issuer) = &jwt_issuer {
        let audience = jwt_audience.as_deref().ok_or_else(|| {
            invalid(
                d::JWT_AUDIENCE.name,
                "required with TERRARIUM_JWT_ISSUER (the resource's identifier)",
            )
        })?;
        crate::auth::jwt::JwtVerifier::new(
            issuer,
            audience,
            jwt_jwks_file.as_deref(),
            jwt_public_key_file.as_deref(),
        )
        .map_err(|m| invalid(&l.label(&d::JWT_ISSUER), m.to_string()))?;
    }
    let tls_cert_file = l.path(&d::HTTP_TLS_CERT_FILE)?;
    let tls_key_file = l.path(&d::HTTP_TLS_KEY_FILE)?;
    if tls_cert_file.is_some() != tls_key_file.is_some() {
        return Err(invalid(
            d::HTTP_TLS_CERT_FILE.name,
            "set both TERRARIUM_HTTP_TLS_CERT_FILE and TERRARIUM_HTTP_TLS_KEY_FILE, or neither",
        ));
    }
    Ok(HttpConfig {
        listen,
        behind_proxy: l.bool(&d::HTTP_BEHIND_PROXY)?,
        allowed_hosts: l.list(&d::HTTP_ALLOWED_HOSTS)?,
        allowed_origins: l.list(&d::HTTP_ALLOWED_ORIGINS)?,
        max_body_bytes: l.number(&d::HTTP_MAX_BODY_BYTES)?,
        session_idle: l.secs(&d::HTTP_SESSION_IDLE_SECS)?,
        max_sessions,
        // By default half the server's sessions (at most 32): one principal never holds them all.
        max_sessions_per_principal: match l.int(&d::HTTP_MAX_SESSIONS_PER_PRINCIPAL)? {
            Some(n) => n as usize,
            None => (max_sessions / 2).clamp(1, 32),
        },
        header_timeout: l.secs(&d::HTTP_HEADER_TIMEOUT_SECS)?,
        idle_timeout: l.secs(&d::HTTP_IDLE_TIMEOUT_SECS)?,
        max_connections: l.number(&d::HTTP_MAX_CONNECTIONS)?,
        tokens,
        tokens_file,
        rate_per_sec: l.number(&d::RATE_LIMIT_PER_SEC)?,
        rate_burst: l.number(&d::RATE_LIMIT_BURST)?,
        trusted_proxies: l.parsed_list(&d::HTTP_TRUSTED_PROXIES, "an IP address")?,
        authorization_servers: l
            .list_opt(&d::OAUTH_AUTHORIZATION_SERVERS)?
            .unwrap_or_else(|| jwt_issuer.iter().cloned().collect()),
        jwt_issuer,
        jwt_audience,
        jwt_jwks_file,
        jwt_public_key_file,
        resource_url: l.text(&d::RESOURCE_URL)?,
        tls_cert_file,
        tls_key_file,
    })
}

impl fmt::Display for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, v) in self.effective() {
            writeln!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

fn default_state_dir(env: &BTreeMap<String, String>) -> PathBuf {
    if let Some(x) = env.get("XDG_STATE_HOME").filter(|s| !s.is_empty()) {
        return PathBuf::from(x).join("terrarium");
    }
    if let Some(h) = env.get("HOME").filter(|s| !s.is_empty()) {
        return PathBuf::from(h).join(".local/state/terrarium");
    }
    std::env::temp_dir().join("terrarium-state")
}

/// Finds the executable now, so a wrong name fails at start-up rather than on the first call.
fn resolve_executable(bin: &Path, path_var: Option<&String>) -> Result<PathBuf, String> {
    let candidate = if bin.components().count() > 1 || bin.is_absolute() {
        Some(bin.to_path_buf())
    } else {
        path_var.and_then(|paths| {
            std::env::split_paths(paths)
                .map(|dir| dir.join(bin))
                .find(|p| is_executable(p))
        })
    };
    let found = candidate.ok_or_else(|| {
        format!(
            "{} was not found on PATH; install it (scripts/install-terraform) or set the full path",
            bin.display()
        )
    })?;
    if !is_executable(&found) {
        return Err(format!("{} is not an executable file", found.display()));
    }
    std::fs::canonicalize(&found).map_err(|e| format!("{}: {e}", found.display()))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn validate_passthrough(names: &[String], prefixes: &[String]) -> Result<(), ConfigError> {
    let valid = |s: &str| {
        !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    for n in names {
        if !valid(n) {
            return Err(invalid(
                d::PASSTHROUGH_ENV.name,
                format!("{n:?} is not a variable name"),
            ));
        }
        if is_forbidden_env(n) {
            return Err(invalid(
                d::PASSTHROUGH_ENV.name,
                format!("{n} may not be passed to terraform: it would change what terraform runs"),
            ));
        }
    }
    for p in prefixes {
        if !valid(p) || p.len() < 2 {
            return Err(invalid(
                d::PASSTHROUGH_PREFIXES.name,
                format!("{p:?} is not a usable prefix"),
            ));
        }
        if FORBIDDEN_PASSTHROUGH
            .iter()
            .chain(&[ENV_PREFIX])
            .any(|f| f.starts_with(p.as_str()) || p.starts_with(ENV_PREFIX))
        {
            return Err(invalid(
                d::PASSTHROUGH_PREFIXES.name,
                format!(
                    "prefix {p} would pass forbidden variables (such as TF_CLI_ARGS) to terraform"
                ),
            ));
        }
    }
    Ok(())
}

/// Accepts names and the numeric levels 1–4 (error, warn, info, debug).
pub(crate) fn parse_log_level(s: &str) -> Result<String, String> {
    let level = match s.trim().to_ascii_lowercase().as_str() {
        "1" | "error" => "error",
        "2" | "warn" | "warning" => "warn",
        "3" | "info" => "info",
        "4" | "debug" => "debug",
        other => {
            return Err(format!(
                "expected error, warn, info, debug or 1-4, got {other:?}"
            ));
        }
    };
    Ok(level.to_string())
}

/// A path the server trusts (or grants every run by name) must neither lie inside the root nor
/// contain it: inside, a run could swap it for a link to `/`; around it, every workspace would be
/// open to every run.
fn outside_root(label: &str, path: &Path, root: &Path, what: &str) -> Result<(), ConfigError> {
    if path.starts_with(root) || root.starts_with(path) {
        return Err(invalid(
            label,
            format!(
                "{what}{} overlaps the workspace root {}",
                path.display(),
                root.display()
            ),
        ));
    }
    Ok(())
}

impl ConfigError {
    /// The same error with advice appended to its message.
    fn with_hint(self, hint: &str) -> ConfigError {
        match self {
            ConfigError::Invalid { name, message } => ConfigError::Invalid {
                name,
                message: format!("{message}; {hint}"),
            },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn base(dir: &Path) -> Vec<(String, String)> {
        vec![
            (
                "TERRARIUM_WORKSPACE_ROOT".into(),
                dir.join("root").display().to_string(),
            ),
            ("TERRARIUM_TERRAFORM_BIN".into(), "/bin/sh".into()),
            (
                "TERRARIUM_STATE_DIR".into(),
                dir.join("state").display().to_string(),
            ),
        ]
    }

    fn load_with(dir: &Path, extra: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        std::fs::create_dir_all(dir.join("root")).unwrap();
        let mut e: BTreeMap<String, String> = base(dir).into_iter().collect();
        e.extend(env(extra));
        Settings::load(&e, dir)
    }

    #[test]
    fn defaults_are_safe() {
        let dir = tempfile::tempdir().unwrap();
        let c = load_with(dir.path(), &[]).unwrap();
        assert!(!c.core.enable_apply);
        assert!(!c.core.enable_destroy);
        assert_eq!(c.core.timeout, Duration::from_secs(300));
        assert_eq!(c.log_level, "warn");
    }

    #[test]
    fn connection_session_and_run_shares_have_safe_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let c = load_with(dir.path(), &[]).unwrap();
        assert_eq!(c.http.header_timeout, Duration::from_secs(10));
        assert_eq!(c.http.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.http.max_connections, 512);
        assert_eq!(c.http.max_sessions_per_principal, 32);
        let c = load_with(dir.path(), &[("TERRARIUM_HTTP_MAX_SESSIONS", "4")]).unwrap();
        assert_eq!(c.http.max_sessions_per_principal, 2);
        // One principal never gets every run slot.
        assert_eq!(
            c.core.max_runs_per_principal,
            c.core.max_concurrent_runs - 1
        );
        let c = load_with(dir.path(), &[("TERRARIUM_MAX_CONCURRENT_RUNS", "1")]).unwrap();
        assert_eq!(c.core.max_runs_per_principal, 1);
        for (name, bad) in [
            ("TERRARIUM_HTTP_HEADER_TIMEOUT_SECS", "0"),
            ("TERRARIUM_HTTP_IDLE_TIMEOUT_SECS", "0"),
            ("TERRARIUM_HTTP_MAX_CONNECTIONS", "1"),
            ("TERRARIUM_HTTP_MAX_SESSIONS_PER_PRINCIPAL", "0"),
            ("TERRARIUM_MAX_RUNS_PER_PRINCIPAL", "0"),
        ] {
            let err = load_with(dir.path(), &[(name, bad)]).unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
        let shown = load_with(dir.path(), &[]).unwrap().to_string();
        assert!(
            shown.contains("TERRARIUM_HTTP_MAX_CONNECTIONS=512"),
            "{shown}"
        );
        assert!(
            shown.contains("TERRARIUM_MAX_RUNS_PER_PRINCIPAL=3"),
            "{shown}"
        );
    }

    #[test]
    fn invalid_values_name_the_variable() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_with(dir.path(), &[("TERRARIUM_TIMEOUT_SECS", "soon")]).unwrap_err();
        assert!(err.to_string().contains("TERRARIUM_TIMEOUT_SECS"), "{err}");
        let err = load_with(dir.path(), &[("TERRARIUM_ENABLE_APPLY", "maybe")]).unwrap_err();
        assert!(err.to_string().contains("TERRARIUM_ENABLE_APPLY"), "{err}");
        let err = load_with(
            dir.path(),
            &[("TERRARIUM_TERRAFORM_BIN", "/nonexistent/tf")],
        )
        .unwrap_err();
        assert!(err.to_string().contains("TERRARIUM_TERRAFORM_BIN"), "{err}");
    }

    #[test]
    fn github_settings_are_checked_and_masked() {
        let dir = tempfile::tempdir().unwrap();
        let key = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/github/app-private.pem"),
        )
        .unwrap();
        let err = load_with(dir.path(), &[("TERRARIUM_GITHUB_APP_ID", "1")]).unwrap_err();
        assert!(
            err.to_string().contains("TERRARIUM_GITHUB_PRIVATE_KEY"),
            "{err}"
        );
        let bad = "-----BEGIN RSA PRIVATE KEY-----\nnot-a-key-SECRETBITS\n-----END RSA PRIVATE KEY-----\n";
        let err = load_with(
            dir.path(),
            &[
                ("TERRARIUM_GITHUB_APP_ID", "1"),
                ("TERRARIUM_GITHUB_PRIVATE_KEY", bad),
            ],
        )
        .unwrap_err();
        assert!(err.to_string().contains("TERRARIUM_GITHUB_PRIVATE_KEY"));
        assert!(!err.to_string().contains("SECRETBITS"), "{err}");
        let err = load_with(dir.path(), &[("TERRARIUM_GITHUB_WEBHOOK_SECRET", "s")]).unwrap_err();
        assert!(err.to_string().contains("TERRARIUM_GITHUB_WEBHOOK_SECRET"));
        let err = load_with(dir.path(), &[("TERRARIUM_GITHUB_REPOS", "acme")]).unwrap_err();
        assert!(err.to_string().contains("TERRARIUM_GITHUB_REPOS"));
        let cfg = load_with(
            dir.path(),
            &[
                ("TERRARIUM_GITHUB_APP_ID", "1"),
                ("TERRARIUM_GITHUB_PRIVATE_KEY", &key),
                ("TERRARIUM_GITHUB_WEBHOOK_SECRET", "hook-secret-value"),
                ("TERRARIUM_GITHUB_REPOS", "Acme/*"),
            ],
        )
        .unwrap();
        assert!(cfg.github.repo_allowed("acme/infra"));
        assert!(!cfg.github.repo_allowed("other/infra"));
        let shown = cfg.to_string();
        assert!(
            shown.contains("TERRARIUM_GITHUB_PRIVATE_KEY=****"),
            "{shown}"
        );
        assert!(shown.contains("TERRARIUM_GITHUB_WEBHOOK_SECRET=****"));
        assert!(
            !shown.contains("hook-secret-value") && !shown.contains(key.lines().nth(1).unwrap())
        );
        assert!(!format!("{cfg:?}").contains("hook-secret-value"));
    }

    #[test]
    fn missing_workspace_root_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let e = env(&[("TERRARIUM_TERRAFORM_BIN", "/bin/sh")]);
        let err = Settings::load(&e, dir.path()).unwrap_err();
        assert!(
            err.to_string().contains("TERRARIUM_WORKSPACE_ROOT"),
            "{err}"
        );
    }

    #[test]
    fn file_values_and_env_precedence() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("terrarium.toml"),
            "timeout_secs = 42\nenable_apply = true\n",
        )
        .unwrap();
        let c = load_with(dir.path(), &[]).unwrap();
        assert_eq!(
            c.core.timeout,
            Duration::from_secs(300),
            "never read unless named"
        );
        let c = load_with(dir.path(), &[("TERRARIUM_CONFIG", "terrarium.toml")]).unwrap();
        assert_eq!(c.core.timeout, Duration::from_secs(42));
        assert!(c.core.enable_apply);
        let c = load_with(
            dir.path(),
            &[
                ("TERRARIUM_CONFIG", "terrarium.toml"),
                ("TERRARIUM_TIMEOUT_SECS", "7"),
            ],
        )
        .unwrap();
        assert_eq!(c.core.timeout, Duration::from_secs(7), "env wins over file");
    }

    #[test]
    fn unknown_names_are_reported_with_the_closest_valid_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("terrarium.toml"), "timeout = 42\n").unwrap();
        let c = load_with(
            dir.path(),
            &[
                ("TERRARIUM_CONFIG", "terrarium.toml"),
                ("TERRARIUM_ENABLE_APLY", "true"),
                ("TERRARIUM_GITHUB_PRIVATE_KEYS_FILE", "/nowhere"),
                ("TERRARIUM_ZZZZZZZZZZZZZZZZZZZZ", "1"),
                // Both forms of a known name are known.
                ("TERRARIUM_KILL_GRACE_SECS_FILE", ""),
            ],
        );
        // An empty NAME_FILE still names a file: it cannot be read.
        assert!(c.is_err());
        let c = load_with(
            dir.path(),
            &[
                ("TERRARIUM_CONFIG", "terrarium.toml"),
                ("TERRARIUM_ENABLE_APLY", "true"),
                ("TERRARIUM_GITHUB_PRIVATE_KEYS_FILE", "/nowhere"),
                ("TERRARIUM_ZZZZZZZZZZZZZZZZZZZZ", "1"),
            ],
        )
        .unwrap();
        assert!(!c.core.enable_apply, "a misspelt name applies nothing");
        let shown: Vec<String> = c.unknown.iter().map(ToString::to_string).collect();
        assert_eq!(shown.len(), 4, "{shown:?}");
        let find = |needle: &str| {
            shown
                .iter()
                .find(|s| s.contains(needle))
                .unwrap_or_else(|| panic!("{needle}: {shown:?}"))
                .clone()
        };
        assert!(find("TERRARIUM_ENABLE_APLY ").contains("did you mean TERRARIUM_ENABLE_APPLY?"));
        assert!(
            find("TERRARIUM_GITHUB_PRIVATE_KEYS_FILE")
                .contains("did you mean TERRARIUM_GITHUB_PRIVATE_KEY?")
        );
        assert!(!find("TERRARIUM_ZZZZ").contains("did you mean"));
        let key = find("`timeout`");
        assert!(
            key.contains("terrarium.toml") && key.contains("did you mean `timeout_secs`?"),
            "{key}"
        );
    }

    /// A sample for every setting the file accepts, unlike its default; the test below fails
    /// for a setting added without one.
    fn samples(dir: &Path) -> BTreeMap<&'static str, String> {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let q = |p: PathBuf| format!("{:?}", p.display().to_string());
        let policy = dir.join("policy.toml");
        std::fs::write(
            &policy,
            std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/default.toml"),
            )
            .unwrap(),
        )
        .unwrap();
        let key = std::fs::read_to_string(fixtures.join("github/app-private.pem")).unwrap();
        let pairs: Vec<(&str, String)> = vec![
            ("WORKSPACE_ROOT", q(dir.join("root2"))),
            ("TERRAFORM_BIN", q(PathBuf::from("/bin/true"))),
            ("TIMEOUT_SECS", "301".into()),
            ("KILL_GRACE_SECS", "11".into()),
            ("ENABLE_APPLY", "true".into()),
            ("ENABLE_DESTROY", "true".into()),
            ("STATE_DIR", q(dir.join("state2"))),
            ("PLAN_TTL_SECS", "3601".into()),
            ("OUTPUT_LIMIT_BYTES", "2048".into()),
            ("MAX_CONCURRENT_RUNS", "5".into()),
            ("QUEUE_WAIT_SECS", "31".into()),
            ("MAX_RUNS_PER_PRINCIPAL", "2".into()),
            ("SHUTDOWN_GRACE_SECS", "32".into()),
            ("CHILD_PATH", "\"/usr/bin:/bin\"".into()),
            ("PASSTHROUGH_ENV", "[\"AWS_REGION\"]".into()),
            ("PASSTHROUGH_PREFIXES", "[\"TF_VAR_\"]".into()),
            ("POLICY_FILE", q(policy)),
            ("LIMIT_CPU_SECS", "901".into()),
            ("LIMIT_ADDRESS_SPACE_BYTES", "8589934593".into()),
            ("LIMIT_OPEN_FILES", "4097".into()),
            ("LIMIT_PROCESSES", "4097".into()),
            ("LIMIT_FILE_SIZE_BYTES", "1073741825".into()),
            ("SANDBOX", "\"best-effort\"".into()),
            ("SANDBOX_CONNECT_PORTS", "[443, 5432]".into()),
            ("SANDBOX_READ_PATHS", "[\"/etc/ssl\"]".into()),
            ("SANDBOX_DISABLE", "[\"cgroup\"]".into()),
            ("AUDIT_DIR", q(dir.join("audit2"))),
            ("AUDIT_RETENTION_DAYS", "91".into()),
            ("AUDIT_SYSLOG", "\"udp://127.0.0.1:514\"".into()),
            ("AUDIT_STDERR", "true".into()),
            ("AUDIT_OMIT_PERSONAL_DATA", "true".into()),
            ("LOG_FILE", q(dir.join("log"))),
            ("LOG_LEVEL", "\"debug\"".into()),
            ("HTTP_LISTEN", "\"127.0.0.1:9090\"".into()),
            ("HTTP_BEHIND_PROXY", "true".into()),
            ("HTTP_ALLOWED_HOSTS", "[\"mcp.example.com\"]".into()),
            (
                "HTTP_ALLOWED_ORIGINS",
                "[\"https://app.example.com:443\"]".into(),
            ),
            ("HTTP_MAX_BODY_BYTES", "4096".into()),
            ("HTTP_SESSION_IDLE_SECS", "901".into()),
            ("HTTP_MAX_SESSIONS", "9".into()),
            ("HTTP_MAX_SESSIONS_PER_PRINCIPAL", "3".into()),
            ("HTTP_HEADER_TIMEOUT_SECS", "11".into()),
            ("HTTP_IDLE_TIMEOUT_SECS", "61".into()),
            ("HTTP_MAX_CONNECTIONS", "513".into()),
            ("RATE_LIMIT_PER_SEC", "21".into()),
            ("RATE_LIMIT_BURST", "101".into()),
            ("HTTP_TRUSTED_PROXIES", "[\"10.0.0.1\"]".into()),
            ("HTTP_TLS_CERT_FILE", q(fixtures.join("tls/test-cert.pem"))),
            ("HTTP_TLS_KEY_FILE", q(fixtures.join("tls/test-key.pem"))),
            (
                "AUTH_TOKENS",
                "\"ci:abcdefghijklmnopqrstuvwxyz012345\"".into(),
            ),
            ("JWT_ISSUER", "\"https://issuer.example.com\"".into()),
            ("JWT_AUDIENCE", "\"https://mcp.example.com/mcp\"".into()),
            (
                "JWT_PUBLIC_KEY_FILE",
                q(fixtures.join("jwt/test-ec-public.pem")),
            ),
            ("JWT_JWKS_FILE", q(dir.join("jwks.json"))),
            ("RESOURCE_URL", "\"https://mcp.example.com/mcp\"".into()),
            (
                "OAUTH_AUTHORIZATION_SERVERS",
                "[\"https://auth.example.com\"]".into(),
            ),
            ("GITHUB_APP_ID", "7".into()),
            ("GITHUB_PRIVATE_KEY", format!("{key:?}")),
            (
                "GITHUB_API_URL",
                "\"https://ghe.example.com/api/v3\"".into(),
            ),
            ("GITHUB_REPOS", "[\"acme/*\"]".into()),
            ("GITHUB_WEBHOOK_SECRET", "\"hook\"".into()),
            ("GITHUB_ALLOW_FORKS", "true".into()),
            ("GITHUB_ARCHIVE_MAX_BYTES", "104857601".into()),
            ("GITHUB_EXTRACT_MAX_BYTES", "268435457".into()),
            ("GITHUB_EXTRACT_MAX_FILES", "20001".into()),
            ("GITHUB_QUEUE_SIZE", "33".into()),
            ("GITHUB_WEBHOOK_MAX_BYTES", "5242881".into()),
            ("GITHUB_CHECK_NAME", "\"Plan\"".into()),
            ("GITHUB_API_TIMEOUT_SECS", "31".into()),
        ];
        pairs.into_iter().collect()
    }

    #[test]
    fn the_file_accepts_every_setting_and_each_applies() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("root2")).unwrap();
        let jwks = r#"{"keys":[]}"#;
        std::fs::write(dir.path().join("jwks.json"), jwks).unwrap();
        let samples = samples(dir.path());
        // Every setting but the GitHub token, which excludes App credentials (tried last).
        let in_file: Vec<&defs::Def> = defs::ALL
            .iter()
            .copied()
            .filter(|d| d.in_file && d.name != defs::GITHUB_TOKEN.name)
            .collect();
        let mut toml = String::new();
        for def in &in_file {
            let key = def.name.strip_prefix(ENV_PREFIX).unwrap();
            let value = samples
                .get(key)
                .unwrap_or_else(|| panic!("no sample for {}: add one here", def.name));
            toml.push_str(&format!("{} = {value}\n", def.file_key()));
        }
        let file = dir.path().join("all.toml");
        std::fs::write(&file, &toml).unwrap();
        // Nothing but the file: every value below comes from it.
        let env: BTreeMap<String, String> = [("TERRARIUM_CONFIG", file.display().to_string())]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let from_file = Settings::load(&env, dir.path()).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        assert!(from_file.unknown.is_empty(), "{:?}", from_file.unknown);
        let defaults = load_with(dir.path(), &[]).unwrap();
        for def in &in_file {
            let (a, b) = ((def.show)(&from_file), (def.show)(&defaults));
            assert_ne!(a, b, "{} from the file did not apply", def.name);
        }
        // The same values as `NAME_FILE`s in the file: every one is read through its file.
        let mut indirect = String::new();
        for (i, def) in in_file.iter().enumerate() {
            let value: toml::Value = toml::from_str::<toml::Table>(&format!(
                "v = {}",
                samples[&def.name[ENV_PREFIX.len()..]]
            ))
            .unwrap()
            .remove("v")
            .unwrap();
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Array(a) => a
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .map(String::from)
                            .unwrap_or_else(|| v.to_string())
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            let f = dir.path().join(format!("v{i}"));
            std::fs::write(&f, format!("{text}\n")).unwrap();
            indirect.push_str(&format!(
                "{}_file = {:?}\n",
                def.file_key(),
                f.display().to_string()
            ));
        }
        std::fs::write(&file, &indirect).unwrap();
        let through_files = Settings::load(&env, dir.path()).unwrap_or_else(|e| panic!("{e}"));
        for def in &in_file {
            assert_eq!(
                (def.show)(&through_files),
                (def.show)(&from_file),
                "{} through its _file",
                def.name
            );
        }
        assert!(through_files.named_files.len() >= in_file.len());
        // A token instead of App credentials: the one setting the set above cannot hold too.
        std::fs::write(&file, "github_token = \"ghs_x\"\n").unwrap();
        let c = load_with(dir.path(), &[("TERRARIUM_CONFIG", file.to_str().unwrap())]).unwrap();
        assert_eq!(c.github.token.expose(), "ghs_x");
    }

    #[test]
    fn errors_never_quote_a_value_read_from_a_file_or_a_broken_toml_line() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "ghp_SECRETSECRETSECRET\n").unwrap();
        let err = load_with(
            dir.path(),
            &[("TERRARIUM_TIMEOUT_SECS_FILE", key.to_str().unwrap())],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("TERRARIUM_TIMEOUT_SECS_FILE"), "{err}");
        assert!(!err.contains("SECRET"), "{err}");
        let file = dir.path().join("t.toml");
        std::fs::write(
            &file,
            "timeout_secs = 5\nauth_tokens = \"ci:SECRETSECRETSECRET\n",
        )
        .unwrap();
        let err = load_with(dir.path(), &[("TERRARIUM_CONFIG", file.to_str().unwrap())])
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(!err.contains("SECRET"), "{err}");
    }

    #[test]
    fn check_config_lists_every_setting() {
        let dir = tempfile::tempdir().unwrap();
        let shown = load_with(dir.path(), &[]).unwrap().to_string();
        for def in defs::ALL {
            assert!(shown.contains(&format!("{}=", def.name)), "{}", def.name);
        }
    }

    #[test]
    fn file_values_are_checked_and_named_by_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.toml");
        std::fs::write(&file, "timeout_secs = \"soon\"\n").unwrap();
        let err = load_with(dir.path(), &[("TERRARIUM_CONFIG", file.to_str().unwrap())])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`timeout_secs`") && err.contains("t.toml"),
            "{err}"
        );
        std::fs::write(&file, "timeout_secs = [1, 2]\n").unwrap();
        let err = load_with(dir.path(), &[("TERRARIUM_CONFIG", file.to_str().unwrap())])
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a list"), "{err}");
        std::fs::write(&file, "timeout_secs = 5\ntimeout_secs_file = \"/x\"\n").unwrap();
        let err = load_with(dir.path(), &[("TERRARIUM_CONFIG", file.to_str().unwrap())])
            .unwrap_err()
            .to_string();
        assert!(err.contains("only one"), "{err}");
    }

    #[test]
    fn file_convention_and_ambiguity() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("t");
        std::fs::write(&secret, "17\n").unwrap();
        let s = secret.display().to_string();
        let c = load_with(dir.path(), &[("TERRARIUM_TIMEOUT_SECS_FILE", &s)]).unwrap();
        assert_eq!(c.core.timeout, Duration::from_secs(17));
        let err = load_with(
            dir.path(),
            &[
                ("TERRARIUM_TIMEOUT_SECS_FILE", &s),
                ("TERRARIUM_TIMEOUT_SECS", "3"),
            ],
        )
        .unwrap_err();
        assert!(matches!(err, ConfigError::Ambiguous { .. }));
    }

    #[test]
    fn state_dir_inside_root_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let inside = dir.path().join("root/state").display().to_string();
        let err = load_with(dir.path(), &[("TERRARIUM_STATE_DIR", &inside)]).unwrap_err();
        assert!(err.to_string().contains("TERRARIUM_STATE_DIR"), "{err}");
    }

    #[test]
    fn forbidden_passthrough_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for (k, v) in [
            ("TERRARIUM_PASSTHROUGH_ENV", "TF_CLI_ARGS_plan"),
            ("TERRARIUM_PASSTHROUGH_ENV", "TF_LOG"),
            ("TERRARIUM_PASSTHROUGH_ENV", "TF_CLI_CONFIG_FILE"),
            ("TERRARIUM_PASSTHROUGH_PREFIXES", "TF_"),
            ("TERRARIUM_PASSTHROUGH_PREFIXES", "TF_CLI"),
            ("TERRARIUM_PASSTHROUGH_PREFIXES", "LD_"),
            // The server's own settings (the GitHub App key, tokens) never reach terraform.
            ("TERRARIUM_PASSTHROUGH_ENV", "TERRARIUM_GITHUB_PRIVATE_KEY"),
            ("TERRARIUM_PASSTHROUGH_PREFIXES", "TERRARIUM_GITHUB_"),
            ("TERRARIUM_PASSTHROUGH_PREFIXES", "TERRA"),
        ] {
            let err = load_with(dir.path(), &[(k, v)]).unwrap_err();
            assert!(err.to_string().contains(k), "{v}: {err}");
        }
        let c = load_with(
            dir.path(),
            &[
                ("TERRARIUM_PASSTHROUGH_ENV", "AWS_ACCESS_KEY_ID"),
                ("TERRARIUM_PASSTHROUGH_PREFIXES", "TF_VAR_"),
            ],
        )
        .unwrap();
        assert_eq!(c.core.passthrough_prefixes, vec!["TF_VAR_"]);
    }

    #[test]
    fn forbidden_env_matching() {
        assert!(is_forbidden_env("TF_CLI_ARGS"));
        assert!(is_forbidden_env("TF_CLI_ARGS_apply"));
        assert!(is_forbidden_env("TF_LOG_PATH"));
        assert!(!is_forbidden_env("TF_LOGGER"));
        assert!(!is_forbidden_env("AWS_REGION"));
    }

    #[test]
    fn policy_file_is_loaded_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let c = load_with(dir.path(), &[]).unwrap();
        let policy = Policy::load(c.core.policy_file.as_deref()).unwrap();
        assert!(policy.tools.allow.iter().any(|t| t == "terraform_apply"));
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "[tools]\nallow = [\"terraform_console\"]\n").unwrap();
        let err = load_with(
            dir.path(),
            &[("TERRARIUM_POLICY_FILE", bad.to_str().unwrap())],
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("TERRARIUM_POLICY_FILE")
                && err.to_string().contains("terraform_console"),
            "{err}"
        );
    }

    #[test]
    fn log_levels() {
        assert_eq!(parse_log_level("4").unwrap(), "debug");
        assert_eq!(parse_log_level("WARN").unwrap(), "warn");
        assert!(parse_log_level("loud").is_err());
    }

    #[test]
    fn terraform_and_read_paths_may_not_overlap_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("tools")).unwrap();
        let tf = root.join("tools/terraform");
        std::fs::write(&tf, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&tf, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let base = |extra: &[(&str, String)]| {
            let mut env: BTreeMap<String, String> = [
                ("TERRARIUM_WORKSPACE_ROOT", root.display().to_string()),
                ("TERRARIUM_TERRAFORM_BIN", "/bin/sh".to_string()),
                (
                    "TERRARIUM_STATE_DIR",
                    dir.path().join("state").display().to_string(),
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            for (k, v) in extra {
                env.insert(k.to_string(), v.clone());
            }
            Settings::load(&env, dir.path())
        };
        assert!(base(&[]).is_ok());
        let err = base(&[("TERRARIUM_TERRAFORM_BIN", tf.display().to_string())])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("TERRARIUM_TERRAFORM_BIN") && err.contains("overlaps"),
            "{err}"
        );
        for p in [root.join("tools"), dir.path().to_path_buf()] {
            let err = base(&[("TERRARIUM_SANDBOX_READ_PATHS", p.display().to_string())])
                .unwrap_err()
                .to_string();
            assert!(err.contains("TERRARIUM_SANDBOX_READ_PATHS"), "{err}");
        }
    }
}
