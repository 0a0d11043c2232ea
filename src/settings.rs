//! The one typed configuration, loaded once at start-up and validated before anything runs.
//!
//! Sources, lowest precedence first: built-in defaults, the TOML file named by `TERRARIUM_CONFIG`,
//! then the environment. Which files may be read at all (`--config`, `--env-file`, and the
//! implicit `terrarium.toml`/`.env` of the current directory, never from workspace content) is
//! decided and checked by [`sources`] before this runs. Every
//! value `NAME` may instead be given as `NAME_FILE` (the Docker/Kubernetes secrets convention);
//! giving both is an error, because silently picking one hides a deployment mistake.
//!
//! Loading takes its inputs as plain maps so that it is unit-testable without touching the
//! process environment.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod github;
pub(crate) mod sources;

pub(crate) use github::GitHubConfig;

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
    #[error("{name}_FILE: cannot read {path}: {source}")]
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
    /// `name:token` or `name:sha256:HEX` entries; where the tokens came from (for messages).
    pub tokens: Secret,
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

/// What a `terrarium.toml` may contain: the same settings as the environment, lower-cased and
/// without the prefix.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    workspace_root: Option<PathBuf>,
    terraform_bin: Option<PathBuf>,
    timeout_secs: Option<u64>,
    kill_grace_secs: Option<u64>,
    enable_apply: Option<bool>,
    enable_destroy: Option<bool>,
    state_dir: Option<PathBuf>,
    plan_ttl_secs: Option<u64>,
    output_limit_bytes: Option<usize>,
    max_concurrent_runs: Option<usize>,
    queue_wait_secs: Option<u64>,
    shutdown_grace_secs: Option<u64>,
    child_path: Option<String>,
    passthrough_env: Option<Vec<String>>,
    passthrough_prefixes: Option<Vec<String>>,
    limit_cpu_secs: Option<u64>,
    limit_address_space_bytes: Option<u64>,
    limit_open_files: Option<u64>,
    limit_processes: Option<u64>,
    limit_file_size_bytes: Option<u64>,
    audit_dir: Option<PathBuf>,
    audit_retention_days: Option<u32>,
    audit_syslog: Option<String>,
    audit_stderr: Option<bool>,
    audit_omit_personal_data: Option<bool>,
    log_file: Option<PathBuf>,
    log_level: Option<String>,
    policy_file: Option<PathBuf>,
    sandbox: Option<String>,
    sandbox_connect_ports: Option<Vec<u16>>,
    sandbox_read_paths: Option<Vec<PathBuf>>,
    sandbox_disable: Option<Vec<String>>,
    http_listen: Option<String>,
    http_behind_proxy: Option<bool>,
    http_allowed_hosts: Option<Vec<String>>,
    http_allowed_origins: Option<Vec<String>>,
    http_max_body_bytes: Option<usize>,
    http_session_idle_secs: Option<u64>,
    http_max_sessions: Option<usize>,
    http_max_sessions_per_principal: Option<usize>,
    http_header_timeout_secs: Option<u64>,
    http_idle_timeout_secs: Option<u64>,
    http_max_connections: Option<usize>,
    max_runs_per_principal: Option<usize>,
    rate_limit_per_sec: Option<u32>,
    rate_limit_burst: Option<u32>,
    http_trusted_proxies: Option<Vec<String>>,
}

/// Reads settings from an environment snapshot, honouring `NAME_FILE`.
struct EnvReader<'a> {
    env: &'a BTreeMap<String, String>,
}

impl EnvReader<'_> {
    fn get(&self, key: &str) -> Result<Option<String>, ConfigError> {
        let name = format!("{ENV_PREFIX}{key}");
        let file_name = format!("{name}_FILE");
        match (self.env.get(&name), self.env.get(&file_name)) {
            (Some(_), Some(_)) => Err(ConfigError::Ambiguous { name }),
            (Some(v), None) => Ok(Some(v.clone())),
            (None, Some(path)) => {
                let path = PathBuf::from(path);
                let text =
                    std::fs::read_to_string(&path).map_err(|source| ConfigError::SecretFile {
                        name: name.clone(),
                        path: path.clone(),
                        source,
                    })?;
                Ok(Some(text.trim_end_matches(['\n', '\r']).to_string()))
            }
            (None, None) => Ok(None),
        }
    }

    fn parse<T: std::str::FromStr>(&self, key: &str, what: &str) -> Result<Option<T>, ConfigError> {
        match self.get(key)? {
            None => Ok(None),
            Some(v) => v.trim().parse::<T>().map(Some).map_err(|_| {
                invalid(
                    &format!("{ENV_PREFIX}{key}"),
                    format!("expected {what}, got {v:?}"),
                )
            }),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.get(key)? {
            None => Ok(None),
            Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(Some(true)),
                "0" | "false" | "no" | "off" | "" => Ok(Some(false)),
                _ => Err(invalid(
                    &format!("{ENV_PREFIX}{key}"),
                    format!("expected true or false, got {v:?}"),
                )),
            },
        }
    }

    fn list(&self, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
        Ok(self.get(key)?.map(|v| {
            v.split([',', ' ', '\n'])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        }))
    }
}

impl Settings {
    /// Loads from an environment snapshot; `cwd` is where `terrarium.toml` is looked for.
    pub(crate) fn load(
        env: &BTreeMap<String, String>,
        cwd: &Path,
    ) -> Result<Settings, ConfigError> {
        let reader = EnvReader { env };
        let file = load_file(&reader, cwd)?;

        let workspace_root = reader
            .get("WORKSPACE_ROOT")?
            .map(PathBuf::from)
            .or(file.workspace_root)
            .ok_or_else(|| {
                invalid(
                    "TERRARIUM_WORKSPACE_ROOT",
                    "not set; point it at the directory that holds your Terraform workspaces",
                )
            })?;
        let workspace_root = std::fs::canonicalize(&workspace_root).map_err(|e| {
            invalid(
                "TERRARIUM_WORKSPACE_ROOT",
                format!("{}: {e}", workspace_root.display()),
            )
        })?;
        if !workspace_root.is_dir() {
            return Err(invalid(
                "TERRARIUM_WORKSPACE_ROOT",
                format!("{} is not a directory", workspace_root.display()),
            ));
        }

        let terraform_bin = reader
            .get("TERRAFORM_BIN")?
            .map(PathBuf::from)
            .or(file.terraform_bin)
            .unwrap_or_else(|| PathBuf::from("terraform"));
        let terraform_bin = resolve_executable(&terraform_bin, env.get("PATH"))
            .map_err(|m| invalid("TERRARIUM_TERRAFORM_BIN", m))?;
        // Every run may read and execute terraform's directory, opened by name for each run:
        // inside the root, a run could swap it for a link to `/`.
        if let Some(dir) = terraform_bin.parent() {
            let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
            if overlaps(&dir, &workspace_root) {
                return Err(invalid(
                    "TERRARIUM_TERRAFORM_BIN",
                    format!(
                        "its directory {} overlaps the workspace root {}; install terraform outside it",
                        dir.display(),
                        workspace_root.display()
                    ),
                ));
            }
        }
        // Runs may read the system directories: the root must not be one of them.
        for sys in terrarium_core::sandbox::access::SYSTEM_READ_EXEC
            .iter()
            .chain(terrarium_core::sandbox::access::SYSTEM_READ)
        {
            if workspace_root.starts_with(sys) {
                return Err(invalid(
                    "TERRARIUM_WORKSPACE_ROOT",
                    format!(
                        "{} lies in {sys}, which every run may read; choose a root outside system directories",
                        workspace_root.display()
                    ),
                ));
            }
        }

        let secs = |key: &str,
                    file_value: Option<u64>,
                    default: u64,
                    min: u64|
         -> Result<Duration, ConfigError> {
            let v = reader
                .parse::<u64>(key, "a whole number of seconds")?
                .or(file_value)
                .unwrap_or(default);
            if v < min {
                return Err(invalid(
                    &format!("{ENV_PREFIX}{key}"),
                    format!("must be at least {min}"),
                ));
            }
            Ok(Duration::from_secs(v))
        };
        let timeout = secs("TIMEOUT_SECS", file.timeout_secs, 300, 1)?;
        let kill_grace = secs("KILL_GRACE_SECS", file.kill_grace_secs, 10, 0)?;
        let plan_ttl = secs("PLAN_TTL_SECS", file.plan_ttl_secs, 3600, 1)?;
        let queue_wait = secs("QUEUE_WAIT_SECS", file.queue_wait_secs, 30, 0)?;
        let shutdown_grace = secs("SHUTDOWN_GRACE_SECS", file.shutdown_grace_secs, 30, 0)?;

        let enable_apply = reader
            .bool("ENABLE_APPLY")?
            .or(file.enable_apply)
            .unwrap_or(false);
        let enable_destroy = reader
            .bool("ENABLE_DESTROY")?
            .or(file.enable_destroy)
            .unwrap_or(false);

        let state_dir = reader
            .get("STATE_DIR")?
            .map(PathBuf::from)
            .or(file.state_dir)
            .unwrap_or_else(|| default_state_dir(env));
        let state_dir = absolutize(&state_dir, cwd);
        std::fs::create_dir_all(&state_dir).map_err(|e| {
            invalid(
                "TERRARIUM_STATE_DIR",
                format!("cannot create {}: {e}", state_dir.display()),
            )
        })?;
        let state_dir = std::fs::canonicalize(&state_dir).map_err(|e| {
            invalid(
                "TERRARIUM_STATE_DIR",
                format!("{}: {e}", state_dir.display()),
            )
        })?;
        if state_dir.starts_with(&workspace_root) || workspace_root.starts_with(&state_dir) {
            return Err(invalid(
                "TERRARIUM_STATE_DIR",
                format!(
                    "{} overlaps the workspace root {}; saved plans must live outside it",
                    state_dir.display(),
                    workspace_root.display()
                ),
            ));
        }

        let output_limit_bytes = reader
            .parse::<usize>("OUTPUT_LIMIT_BYTES", "a number of bytes")?
            .or(file.output_limit_bytes)
            .unwrap_or(1 << 20);
        if !(1024..=64 << 20).contains(&output_limit_bytes) {
            return Err(invalid(
                "TERRARIUM_OUTPUT_LIMIT_BYTES",
                "must be between 1024 and 67108864",
            ));
        }
        let max_concurrent_runs = reader
            .parse::<usize>("MAX_CONCURRENT_RUNS", "a whole number")?
            .or(file.max_concurrent_runs)
            .unwrap_or(4);
        if max_concurrent_runs == 0 || max_concurrent_runs > 1024 {
            return Err(invalid(
                "TERRARIUM_MAX_CONCURRENT_RUNS",
                "must be between 1 and 1024",
            ));
        }
        // By default one principal may use all slots but one, so another caller always finds
        // a slot that a single principal's slow runs cannot take.
        let max_runs_per_principal = reader
            .parse::<usize>("MAX_RUNS_PER_PRINCIPAL", "a whole number")?
            .or(file.max_runs_per_principal)
            .unwrap_or(max_concurrent_runs.saturating_sub(1).max(1));
        if max_runs_per_principal == 0 || max_runs_per_principal > 1024 {
            return Err(invalid(
                "TERRARIUM_MAX_RUNS_PER_PRINCIPAL",
                "must be between 1 and 1024",
            ));
        }

        let child_path = reader
            .get("CHILD_PATH")?
            .or(file.child_path)
            .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".to_string());
        let passthrough_env = reader
            .list("PASSTHROUGH_ENV")?
            .or(file.passthrough_env)
            .unwrap_or_default();
        let passthrough_prefixes = reader
            .list("PASSTHROUGH_PREFIXES")?
            .or(file.passthrough_prefixes)
            .unwrap_or_default();
        validate_passthrough(&passthrough_env, &passthrough_prefixes)?;

        let defaults = Limits::default();
        let limit =
            |key: &str, file_value: Option<u64>, default: u64| -> Result<u64, ConfigError> {
                let v = reader
                    .parse::<u64>(key, "a whole number")?
                    .or(file_value)
                    .unwrap_or(default);
                if v == 0 {
                    return Err(invalid(
                        &format!("{ENV_PREFIX}{key}"),
                        "must be greater than 0",
                    ));
                }
                Ok(v)
            };
        let limits = Limits {
            cpu_secs: limit("LIMIT_CPU_SECS", file.limit_cpu_secs, defaults.cpu_secs)?,
            address_space_bytes: limit(
                "LIMIT_ADDRESS_SPACE_BYTES",
                file.limit_address_space_bytes,
                defaults.address_space_bytes,
            )?,
            open_files: limit(
                "LIMIT_OPEN_FILES",
                file.limit_open_files,
                defaults.open_files,
            )?,
            processes: limit("LIMIT_PROCESSES", file.limit_processes, defaults.processes)?,
            file_size_bytes: limit(
                "LIMIT_FILE_SIZE_BYTES",
                file.limit_file_size_bytes,
                defaults.file_size_bytes,
            )?,
        };

        let audit_dir = reader
            .get("AUDIT_DIR")?
            .map(PathBuf::from)
            .or(file.audit_dir)
            .map(|p| absolutize(&p, cwd))
            .unwrap_or_else(|| state_dir.join("audit"));
        let inside = |p: &Path| {
            let mut probe = p.to_path_buf();
            // The directory may not exist yet: check its nearest existing ancestor.
            while !probe.exists() && probe.pop() {}
            std::fs::canonicalize(&probe).is_ok_and(|c| c.starts_with(&workspace_root))
        };
        if inside(&audit_dir) {
            return Err(invalid(
                "TERRARIUM_AUDIT_DIR",
                "must not lie inside the workspace root, where terraform runs could edit it",
            ));
        }
        let audit_retention_days = reader
            .parse::<u32>("AUDIT_RETENTION_DAYS", "a whole number of days")?
            .or(file.audit_retention_days)
            .unwrap_or(90);
        if audit_retention_days == 0 {
            return Err(invalid(
                "TERRARIUM_AUDIT_RETENTION_DAYS",
                "must be at least 1",
            ));
        }
        let audit_syslog = reader
            .get("AUDIT_SYSLOG")?
            .or(file.audit_syslog)
            .filter(|s| !s.is_empty());
        if let Some(url) = &audit_syslog {
            terrarium_core::audit::syslog::parse_url(url)
                .map_err(|e| invalid("TERRARIUM_AUDIT_SYSLOG", e.to_string()))?;
        }
        let audit = AuditConfig {
            dir: Some(audit_dir),
            retention_days: audit_retention_days,
            syslog: audit_syslog,
            stderr: reader
                .bool("AUDIT_STDERR")?
                .or(file.audit_stderr)
                .unwrap_or(false),
            omit_personal_data: reader
                .bool("AUDIT_OMIT_PERSONAL_DATA")?
                .or(file.audit_omit_personal_data)
                .unwrap_or(false),
        };
        let log_file = reader
            .get("LOG_FILE")?
            .map(PathBuf::from)
            .or(file.log_file)
            .map(|p| absolutize(&p, cwd));
        if let Some(p) = &log_file
            && inside(p)
        {
            return Err(invalid(
                "TERRARIUM_LOG_FILE",
                "must not lie inside the workspace root",
            ));
        }

        let log_level = reader
            .get("LOG_LEVEL")?
            .or(file.log_level)
            .unwrap_or_else(|| "warn".to_string());
        let log_level =
            parse_log_level(&log_level).map_err(|m| invalid("TERRARIUM_LOG_LEVEL", m))?;

        let policy_file = reader
            .get("POLICY_FILE")?
            .map(PathBuf::from)
            .or(file.policy_file)
            .map(|p| absolutize(&p, cwd));
        // Checked here so a bad file is a configuration error; the executor loads its own copy
        // (and re-loads it on SIGHUP), so no stale one is kept in the configuration.
        Policy::load(policy_file.as_deref())
            .map_err(|e| invalid("TERRARIUM_POLICY_FILE", e.to_string()))?;

        let sandbox = match reader
            .get("SANDBOX")?
            .or(file.sandbox)
            .unwrap_or_else(|| "strict".into())
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "strict" => SandboxMode::Strict,
            "best-effort" | "best_effort" => SandboxMode::BestEffort,
            "off" => SandboxMode::Off,
            other => {
                return Err(invalid(
                    "TERRARIUM_SANDBOX",
                    format!("expected strict, best-effort or off, got {other:?}"),
                ));
            }
        };
        let sandbox_connect_ports = match reader.list("SANDBOX_CONNECT_PORTS")? {
            Some(list) => list
                .iter()
                .map(|p| p.parse::<u16>().ok().filter(|p| *p > 0))
                .collect::<Option<Vec<u16>>>()
                .ok_or_else(|| {
                    invalid(
                        "TERRARIUM_SANDBOX_CONNECT_PORTS",
                        "expected TCP port numbers, e.g. 443,5432",
                    )
                })?,
            None => file.sandbox_connect_ports.unwrap_or_else(|| vec![443]),
        };
        let sandbox_read_paths: Vec<PathBuf> = reader
            .list("SANDBOX_READ_PATHS")?
            .map(|v| v.into_iter().map(PathBuf::from).collect())
            .or(file.sandbox_read_paths)
            .unwrap_or_default();
        for p in &sandbox_read_paths {
            if !p.is_absolute() {
                return Err(invalid(
                    "TERRARIUM_SANDBOX_READ_PATHS",
                    format!("{} is not an absolute path", p.display()),
                ));
            }
            // Granted to every run by name: inside the root a run could swap it for a link to
            // `/`; around the root it would open every workspace to every run.
            let real = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
            if overlaps(&real, &workspace_root) {
                return Err(invalid(
                    "TERRARIUM_SANDBOX_READ_PATHS",
                    format!(
                        "{} overlaps the workspace root {}",
                        p.display(),
                        workspace_root.display()
                    ),
                ));
            }
        }

        let sandbox_disable = reader
            .list("SANDBOX_DISABLE")?
            .or(file.sandbox_disable)
            .unwrap_or_default()
            .iter()
            .map(|l| l.parse::<LayerKind>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|m| invalid("TERRARIUM_SANDBOX_DISABLE", m))?;

        let listen = reader
            .get("HTTP_LISTEN")?
            .or(file.http_listen)
            .unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen: std::net::SocketAddr = listen.parse().map_err(|_| {
            invalid(
                "TERRARIUM_HTTP_LISTEN",
                format!("expected IP:PORT, got {listen:?}"),
            )
        })?;
        // Tokens come from the variable, or from the file named by TERRARIUM_AUTH_TOKENS_FILE,
        // which is kept so that SIGHUP can re-read it.
        let tokens_file = env.get("TERRARIUM_AUTH_TOKENS_FILE").map(PathBuf::from);
        let tokens = Secret::new(reader.get("AUTH_TOKENS")?.unwrap_or_default());
        let http = HttpConfig {
            listen,
            behind_proxy: reader
                .bool("HTTP_BEHIND_PROXY")?
                .or(file.http_behind_proxy)
                .unwrap_or(false),
            allowed_hosts: reader
                .list("HTTP_ALLOWED_HOSTS")?
                .or(file.http_allowed_hosts)
                .unwrap_or_else(|| vec!["localhost".into(), "127.0.0.1".into(), "[::1]".into()]),
            allowed_origins: reader
                .list("HTTP_ALLOWED_ORIGINS")?
                .or(file.http_allowed_origins)
                .unwrap_or_default(),
            max_body_bytes: reader
                .parse::<usize>("HTTP_MAX_BODY_BYTES", "a number of bytes")?
                .or(file.http_max_body_bytes)
                .unwrap_or(1 << 20),
            session_idle: secs(
                "HTTP_SESSION_IDLE_SECS",
                file.http_session_idle_secs,
                900,
                1,
            )?,
            max_sessions: reader
                .parse::<usize>("HTTP_MAX_SESSIONS", "a whole number")?
                .or(file.http_max_sessions)
                .unwrap_or(256),
            // Set below, from the global cap.
            max_sessions_per_principal: 0,
            header_timeout: secs(
                "HTTP_HEADER_TIMEOUT_SECS",
                file.http_header_timeout_secs,
                10,
                1,
            )?,
            idle_timeout: secs("HTTP_IDLE_TIMEOUT_SECS", file.http_idle_timeout_secs, 60, 1)?,
            max_connections: reader
                .parse::<usize>("HTTP_MAX_CONNECTIONS", "a whole number")?
                .or(file.http_max_connections)
                .unwrap_or(512),
            tokens,
            tokens_file,
            rate_per_sec: reader
                .parse::<u32>(
                    "RATE_LIMIT_PER_SEC",
                    "a whole number of requests per second",
                )?
                .or(file.rate_limit_per_sec)
                .unwrap_or(20),
            rate_burst: reader
                .parse::<u32>("RATE_LIMIT_BURST", "a whole number of requests")?
                .or(file.rate_limit_burst)
                .unwrap_or(100),
            jwt_issuer: None,
            jwt_audience: None,
            jwt_jwks_file: None,
            jwt_public_key_file: None,
            resource_url: None,
            authorization_servers: Vec::new(),
            tls_cert_file: None,
            tls_key_file: None,
            trusted_proxies: reader
                .list("HTTP_TRUSTED_PROXIES")?
                .or(file.http_trusted_proxies)
                .unwrap_or_default()
                .iter()
                .map(|s| s.parse::<std::net::IpAddr>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| {
                    invalid(
                        "TERRARIUM_HTTP_TRUSTED_PROXIES",
                        "expected IP addresses, comma-separated",
                    )
                })?,
        };
        let mut http = http;
        http.jwt_issuer = reader.get("JWT_ISSUER")?.filter(|s| !s.is_empty());
        http.jwt_audience = reader.get("JWT_AUDIENCE")?.filter(|s| !s.is_empty());
        http.jwt_jwks_file = reader
            .get("JWT_JWKS_FILE")?
            .map(|p| absolutize(Path::new(&p), cwd));
        http.jwt_public_key_file = reader
            .get("JWT_PUBLIC_KEY_FILE")?
            .map(|p| absolutize(Path::new(&p), cwd));
        http.resource_url = reader.get("RESOURCE_URL")?.filter(|s| !s.is_empty());
        http.tls_cert_file = reader
            .get("HTTP_TLS_CERT_FILE")?
            .map(|p| absolutize(Path::new(&p), cwd));
        http.tls_key_file = reader
            .get("HTTP_TLS_KEY_FILE")?
            .map(|p| absolutize(Path::new(&p), cwd));
        if http.tls_cert_file.is_some() != http.tls_key_file.is_some() {
            return Err(invalid(
                "TERRARIUM_HTTP_TLS_CERT_FILE",
                "set both TERRARIUM_HTTP_TLS_CERT_FILE and TERRARIUM_HTTP_TLS_KEY_FILE, or neither",
            ));
        }
        http.authorization_servers = reader
            .list("OAUTH_AUTHORIZATION_SERVERS")?
            .unwrap_or_else(|| http.jwt_issuer.iter().cloned().collect());
        if let Some(issuer) = &http.jwt_issuer {
            let audience = http.jwt_audience.as_deref().ok_or_else(|| {
                invalid(
                    "TERRARIUM_JWT_AUDIENCE",
                    "required with TERRARIUM_JWT_ISSUER (the resource's identifier)",
                )
            })?;
            crate::auth::jwt::JwtVerifier::new(
                issuer,
                audience,
                http.jwt_jwks_file.as_deref(),
                http.jwt_public_key_file.as_deref(),
            )
            .map_err(|m| invalid("TERRARIUM_JWT_ISSUER", m))?;
        }
        if http.rate_per_sec == 0 || http.rate_burst == 0 {
            return Err(invalid(
                "TERRARIUM_RATE_LIMIT_PER_SEC",
                "rate and burst must be at least 1",
            ));
        }
        // By default half the server's sessions (at most 32): one principal never holds them all.
        http.max_sessions_per_principal = reader
            .parse::<usize>("HTTP_MAX_SESSIONS_PER_PRINCIPAL", "a whole number")?
            .or(file.http_max_sessions_per_principal)
            .unwrap_or((http.max_sessions / 2).clamp(1, 32));
        if http.max_sessions_per_principal == 0 {
            return Err(invalid(
                "TERRARIUM_HTTP_MAX_SESSIONS_PER_PRINCIPAL",
                "must be at least 1",
            ));
        }
        if !(2..=1 << 20).contains(&http.max_connections) {
            return Err(invalid(
                "TERRARIUM_HTTP_MAX_CONNECTIONS",
                "must be between 2 and 1048576",
            ));
        }
        if http.max_body_bytes < 1024 {
            return Err(invalid(
                "TERRARIUM_HTTP_MAX_BODY_BYTES",
                "must be at least 1024",
            ));
        }
        crate::auth::TokenSet::parse(http.tokens.expose())
            .map_err(|m| invalid("TERRARIUM_AUTH_TOKENS", m))?;

        let github = github::load(&reader)?;

        Ok(Settings {
            http,
            github,
            log_file,
            log_level,
            core: Config {
                sandbox_disable,
                sandbox,
                sandbox_connect_ports,
                sandbox_read_paths,
                policy_file,
                workspace_root,
                terraform_bin,
                timeout,
                kill_grace,
                enable_apply,
                enable_destroy,
                state_dir,
                plan_ttl,
                output_limit_bytes,
                max_concurrent_runs,
                queue_wait,
                max_runs_per_principal,
                shutdown_grace,
                child_path,
                passthrough_env,
                passthrough_prefixes,
                limits,
                audit,
            },
        })
    }

    /// The effective settings as `(env name, value)` pairs, for `check-config` and the startup
    /// log. Pass-through variables are listed by name only: their values are credentials.
    pub(crate) fn effective(&self) -> Vec<(&'static str, String)> {
        let mut all = self.effective_core();
        all.extend(self.github.effective());
        all
    }

    fn effective_core(&self) -> Vec<(&'static str, String)> {
        let d = |d: Duration| d.as_secs().to_string();
        vec![
            (
                "TERRARIUM_WORKSPACE_ROOT",
                self.core.workspace_root.display().to_string(),
            ),
            (
                "TERRARIUM_TERRAFORM_BIN",
                self.core.terraform_bin.display().to_string(),
            ),
            ("TERRARIUM_TIMEOUT_SECS", d(self.core.timeout)),
            ("TERRARIUM_KILL_GRACE_SECS", d(self.core.kill_grace)),
            ("TERRARIUM_ENABLE_APPLY", self.core.enable_apply.to_string()),
            (
                "TERRARIUM_ENABLE_DESTROY",
                self.core.enable_destroy.to_string(),
            ),
            (
                "TERRARIUM_STATE_DIR",
                self.core.state_dir.display().to_string(),
            ),
            ("TERRARIUM_PLAN_TTL_SECS", d(self.core.plan_ttl)),
            (
                "TERRARIUM_OUTPUT_LIMIT_BYTES",
                self.core.output_limit_bytes.to_string(),
            ),
            (
                "TERRARIUM_MAX_CONCURRENT_RUNS",
                self.core.max_concurrent_runs.to_string(),
            ),
            ("TERRARIUM_QUEUE_WAIT_SECS", d(self.core.queue_wait)),
            (
                "TERRARIUM_MAX_RUNS_PER_PRINCIPAL",
                self.core.max_runs_per_principal.to_string(),
            ),
            ("TERRARIUM_SHUTDOWN_GRACE_SECS", d(self.core.shutdown_grace)),
            ("TERRARIUM_CHILD_PATH", self.core.child_path.clone()),
            (
                "TERRARIUM_PASSTHROUGH_ENV",
                self.core.passthrough_env.join(","),
            ),
            (
                "TERRARIUM_PASSTHROUGH_PREFIXES",
                self.core.passthrough_prefixes.join(","),
            ),
            (
                "TERRARIUM_LIMIT_CPU_SECS",
                self.core.limits.cpu_secs.to_string(),
            ),
            (
                "TERRARIUM_LIMIT_ADDRESS_SPACE_BYTES",
                self.core.limits.address_space_bytes.to_string(),
            ),
            (
                "TERRARIUM_LIMIT_OPEN_FILES",
                self.core.limits.open_files.to_string(),
            ),
            (
                "TERRARIUM_LIMIT_PROCESSES",
                self.core.limits.processes.to_string(),
            ),
            (
                "TERRARIUM_LIMIT_FILE_SIZE_BYTES",
                self.core.limits.file_size_bytes.to_string(),
            ),
            (
                "TERRARIUM_AUDIT_DIR",
                self.core
                    .audit
                    .dir
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
            (
                "TERRARIUM_AUDIT_RETENTION_DAYS",
                self.core.audit.retention_days.to_string(),
            ),
            (
                "TERRARIUM_AUDIT_SYSLOG",
                self.core.audit.syslog.clone().unwrap_or_default(),
            ),
            ("TERRARIUM_AUDIT_STDERR", self.core.audit.stderr.to_string()),
            (
                "TERRARIUM_AUDIT_OMIT_PERSONAL_DATA",
                self.core.audit.omit_personal_data.to_string(),
            ),
            (
                "TERRARIUM_LOG_FILE",
                self.log_file
                    .as_ref()
                    .map_or_else(|| "(stderr)".to_string(), |p| p.display().to_string()),
            ),
            ("TERRARIUM_LOG_LEVEL", self.log_level.clone()),
            ("TERRARIUM_SANDBOX", self.core.sandbox.as_str().to_string()),
            (
                "TERRARIUM_SANDBOX_CONNECT_PORTS",
                self.core
                    .sandbox_connect_ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            (
                "TERRARIUM_SANDBOX_DISABLE",
                self.core
                    .sandbox_disable
                    .iter()
                    .map(|l| l.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            ("TERRARIUM_HTTP_LISTEN", self.http.listen.to_string()),
            (
                "TERRARIUM_HTTP_BEHIND_PROXY",
                self.http.behind_proxy.to_string(),
            ),
            (
                "TERRARIUM_HTTP_ALLOWED_HOSTS",
                self.http.allowed_hosts.join(","),
            ),
            (
                "TERRARIUM_HTTP_ALLOWED_ORIGINS",
                self.http.allowed_origins.join(","),
            ),
            (
                "TERRARIUM_HTTP_MAX_BODY_BYTES",
                self.http.max_body_bytes.to_string(),
            ),
            (
                "TERRARIUM_HTTP_SESSION_IDLE_SECS",
                d(self.http.session_idle),
            ),
            (
                "TERRARIUM_HTTP_MAX_SESSIONS",
                self.http.max_sessions.to_string(),
            ),
            (
                "TERRARIUM_HTTP_MAX_SESSIONS_PER_PRINCIPAL",
                self.http.max_sessions_per_principal.to_string(),
            ),
            (
                "TERRARIUM_HTTP_HEADER_TIMEOUT_SECS",
                d(self.http.header_timeout),
            ),
            (
                "TERRARIUM_HTTP_IDLE_TIMEOUT_SECS",
                d(self.http.idle_timeout),
            ),
            (
                "TERRARIUM_HTTP_MAX_CONNECTIONS",
                self.http.max_connections.to_string(),
            ),
            (
                "TERRARIUM_AUTH_TOKENS",
                // Names only: the tokens themselves are secrets.
                crate::auth::TokenSet::parse(self.http.tokens.expose())
                    .map(|t| {
                        t.names()
                            .iter()
                            .map(|n| format!("{n}:****"))
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default(),
            ),
            (
                "TERRARIUM_SANDBOX_READ_PATHS",
                self.core
                    .sandbox_read_paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            (
                "TERRARIUM_POLICY_FILE",
                self.core.policy_file.as_ref().map_or_else(
                    || "(built-in policies/default.toml)".to_string(),
                    |p| p.display().to_string(),
                ),
            ),
        ]
    }
}

impl fmt::Display for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, v) in self.effective() {
            writeln!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

fn load_file(reader: &EnvReader<'_>, cwd: &Path) -> Result<FileConfig, ConfigError> {
    // Only the file named explicitly: whether an implicit `terrarium.toml` may be read is
    // `sources`' decision (never from workspace content), which names it here when it may.
    let path = match reader.get("CONFIG")? {
        Some(p) => absolutize(Path::new(&p), cwd),
        None => return Ok(FileConfig::default()),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            return Err(ConfigError::File {
                path,
                message: e.to_string(),
            });
        }
    };
    toml::from_str(&text).map_err(|e| ConfigError::File {
        path,
        message: e.to_string(),
    })
}

fn absolutize(p: &Path, cwd: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        let base = std::fs::canonicalize(cwd).unwrap_or_else(|_| cwd.to_path_buf());
        base.join(p)
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
                "TERRARIUM_PASSTHROUGH_ENV",
                format!("{n:?} is not a variable name"),
            ));
        }
        if is_forbidden_env(n) {
            return Err(invalid(
                "TERRARIUM_PASSTHROUGH_ENV",
                format!("{n} may not be passed to terraform: it would change what terraform runs"),
            ));
        }
    }
    for p in prefixes {
        if !valid(p) || p.len() < 2 {
            return Err(invalid(
                "TERRARIUM_PASSTHROUGH_PREFIXES",
                format!("{p:?} is not a usable prefix"),
            ));
        }
        if FORBIDDEN_PASSTHROUGH
            .iter()
            .chain(&[ENV_PREFIX])
            .any(|f| f.starts_with(p.as_str()) || p.starts_with(ENV_PREFIX))
        {
            return Err(invalid(
                "TERRARIUM_PASSTHROUGH_PREFIXES",
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

/// Whether one path lies inside the other (either way).
fn overlaps(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
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
    fn unknown_file_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("terrarium.toml"), "timeout = 42\n").unwrap();
        let err = load_with(dir.path(), &[("TERRARIUM_CONFIG", "terrarium.toml")]).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
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
