//! Every setting, defined once: its environment name (the TOML key is the same name without the
//! prefix, lower-cased), what kind of value it takes, its default, what it means, and how its
//! effective value is shown. The loader reads values through these definitions, `check-config`
//! and the start-up audit event print [`ALL`], the unknown-name check suggests from it, and the
//! README's configuration table is rendered from it (a test keeps the two equal).
//!
//! Adding a setting is one entry here plus the line in `Settings::load` that turns its value
//! into the typed field: nothing else lists settings.

use super::Settings;

/// What a setting's value is, which decides how it is parsed (the same way from the
/// environment, a `NAME_FILE` and the TOML file) and how it is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
    Bool,
    /// A whole number within the range (inclusive).
    Int { min: u64, max: u64 },
    /// Free text (a name, a URL, an address).
    Text,
    /// A path the server writes or creates (relative paths are taken from the current directory).
    Path,
    /// A file the server reads as configuration: like every `NAME_FILE`, it must lie outside the
    /// workspace root and the CI checkout.
    ConfigFile,
    /// Items separated by commas, spaces or newlines; a TOML array.
    List,
    /// A credential: never shown, never logged.
    Secret,
}

/// What applies when a setting is not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fallback {
    /// This value, parsed like a given one (an empty string: nothing).
    Value(&'static str),
    /// Derived from other settings or the machine; the text says how.
    Derived(&'static str),
}

/// One setting.
#[derive(Debug)]
pub(crate) struct Def {
    /// The environment variable, `TERRARIUM_…`.
    pub name: &'static str,
    pub kind: Kind,
    pub default: Fallback,
    /// One line for the README table and `check-config --help`-style listings.
    pub doc: &'static str,
    /// Whether `terrarium.toml` may set it (not the two settings that name the files read).
    pub in_file: bool,
    /// The effective value, as `check-config` prints it (credentials masked).
    pub show: fn(&Settings) -> String,
}

impl Def {
    /// The key in `terrarium.toml`.
    pub(crate) fn file_key(&self) -> String {
        self.name
            .strip_prefix(PREFIX)
            .unwrap_or(self.name)
            .to_ascii_lowercase()
    }

    /// The default's raw value, when it is a plain value.
    pub(crate) fn default_value(&self) -> Option<&'static str> {
        match self.default {
            Fallback::Value(v) => Some(v),
            Fallback::Derived(_) => None,
        }
    }
}

/// Every setting's environment name starts with it (the macro below spells it out for `concat!`).
pub(crate) use terrarium_core::config::ENV_PREFIX as PREFIX;

const FILE: bool = true;
const ENV_ONLY: bool = false;

fn masked(set: bool) -> String {
    if set { "****".into() } else { String::new() }
}

fn path_or(p: &Option<std::path::PathBuf>, none: &str) -> String {
    p.as_ref()
        .map_or_else(|| none.to_string(), |p| p.display().to_string())
}

fn joined<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

macro_rules! settings {
    ($( $id:ident: $kind:expr, $default:expr, $in_file:expr, $doc:literal, $show:expr; )*) => {
        $(
            pub(crate) const $id: Def = Def {
                name: concat!("TERRARIUM_", stringify!($id)),
                kind: $kind,
                default: $default,
                doc: $doc,
                in_file: $in_file,
                show: $show,
            };
        )*
        /// Every setting, in the order of the README table and `check-config`.
        pub(crate) const ALL: &[&Def] = &[$(&$id),*];
    };
}

use Fallback::{Derived, Value};
use Kind::{Bool, ConfigFile, List, Path, Secret, Text};

const fn int(min: u64, max: u64) -> Kind {
    Kind::Int { min, max }
}
const ANY: u64 = u32::MAX as u64;
const SECS: Kind = int(1, ANY);
const SECS_OR_ZERO: Kind = int(0, ANY);
const POSITIVE: Kind = int(1, u64::MAX);

settings! {
    CONFIG: ConfigFile, Derived("`./terrarium.toml` outside the root"), ENV_ONLY,
        "The TOML settings file (`--config` overrides); keys are these names without the prefix, lower-cased",
        |s| path_or(&s.sources.config, "");
    ENV_FILE: ConfigFile, Derived("`./.env` outside the root"), ENV_ONLY,
        "A file of `KEY=value` lines (`--env-file` overrides); the environment wins over it",
        |s| path_or(&s.sources.env_file, "");
    WORKSPACE_ROOT: Path, Derived("(required)"), FILE,
        "Directory under which every workspace `path` must lie",
        |s| s.core.workspace_root.display().to_string();
    TERRAFORM_BIN: Path, Derived("`terraform` on `PATH`"), FILE,
        "The terraform executable",
        |s| s.core.terraform_bin.display().to_string();
    TIMEOUT_SECS: SECS, Value("300"), FILE,
        "Wall-clock limit of one terraform run",
        |s| s.core.timeout.as_secs().to_string();
    KILL_GRACE_SECS: SECS_OR_ZERO, Value("10"), FILE,
        "Time between SIGINT and SIGKILL of the run's process group",
        |s| s.core.kill_grace.as_secs().to_string();
    ENABLE_APPLY: Bool, Value("false"), FILE,
        "Offer `terraform_apply` (of saved plans only)",
        |s| s.core.enable_apply.to_string();
    ENABLE_DESTROY: Bool, Value("false"), FILE,
        "Allow applying plans that delete or replace resources",
        |s| s.core.enable_destroy.to_string();
    STATE_DIR: Path, Derived("`$XDG_STATE_HOME/terrarium` or `~/.local/state/terrarium`"), FILE,
        "Saved plans, per-run private dirs, plugin cache; must be outside the root",
        |s| s.core.state_dir.display().to_string();
    PLAN_TTL_SECS: SECS, Value("3600"), FILE,
        "How long a saved plan may be applied",
        |s| s.core.plan_ttl.as_secs().to_string();
    OUTPUT_LIMIT_BYTES: int(1024, 64 << 20), Value("1048576"), FILE,
        "Bytes kept of each of stdout and stderr (head and tail)",
        |s| s.core.output_limit_bytes.to_string();
    MAX_CONCURRENT_RUNS: int(1, 1024), Value("4"), FILE,
        "Terraform runs at once, across workspaces",
        |s| s.core.max_concurrent_runs.to_string();
    QUEUE_WAIT_SECS: SECS_OR_ZERO, Value("30"), FILE,
        "How long a call waits for a busy workspace or a run slot",
        |s| s.core.queue_wait.as_secs().to_string();
    MAX_RUNS_PER_PRINCIPAL: int(1, 1024), Derived("max runs − 1 (at least 1)"), FILE,
        "Runs one principal may have at once (its share of the run slots)",
        |s| s.core.max_runs_per_principal.to_string();
    SHUTDOWN_GRACE_SECS: SECS_OR_ZERO, Value("30"), FILE,
        "On SIGTERM/SIGINT, how long runs in flight may finish before terraform is interrupted",
        |s| s.core.shutdown_grace.as_secs().to_string();
    CHILD_PATH: Text, Value("/usr/local/bin:/usr/bin:/bin"), FILE,
        "`PATH` given to terraform",
        |s| s.core.child_path.clone();
    PASSTHROUGH_ENV: List, Value(""), FILE,
        "Variable names passed to terraform (provider credentials); their values are redacted from results",
        |s| s.core.passthrough_env.join(",");
    PASSTHROUGH_PREFIXES: List, Value(""), FILE,
        "Prefixes passed through, e.g. `AWS_,TF_VAR_` (never `TF_CLI_ARGS*`, `TF_LOG*`, `TF_CLI_CONFIG_FILE`, ...)",
        |s| s.core.passthrough_prefixes.join(",");
    POLICY_FILE: ConfigFile, Derived("built-in `policies/default.toml`"), FILE,
        "Tool allowlist, per-principal scopes, resources protected from deletion, most deletions per apply",
        |s| path_or(&s.core.policy_file, "(built-in policies/default.toml)");
    LIMIT_CPU_SECS: POSITIVE, Value("900"), FILE,
        "RLIMIT_CPU of terraform and its children",
        |s| s.core.limits.cpu_secs.to_string();
    LIMIT_ADDRESS_SPACE_BYTES: POSITIVE, Value("8589934592"), FILE,
        "RLIMIT_AS",
        |s| s.core.limits.address_space_bytes.to_string();
    LIMIT_OPEN_FILES: POSITIVE, Value("4096"), FILE,
        "RLIMIT_NOFILE",
        |s| s.core.limits.open_files.to_string();
    LIMIT_PROCESSES: POSITIVE, Value("4096"), FILE,
        "RLIMIT_NPROC: processes a run may have at once (counted in the run's user namespace; without one, per user across runs; not enforced for root)",
        |s| s.core.limits.processes.to_string();
    LIMIT_FILE_SIZE_BYTES: POSITIVE, Value("1073741824"), FILE,
        "RLIMIT_FSIZE",
        |s| s.core.limits.file_size_bytes.to_string();
    SANDBOX: Text, Value("strict"), FILE,
        "`strict`, `best-effort` or `off` (see the kernel sandbox)",
        |s| s.core.sandbox.as_str().to_string();
    SANDBOX_CONNECT_PORTS: List, Value("443"), FILE,
        "TCP ports `init`, `plan` and `apply` may connect to (add `5432` for a `pg` backend)",
        |s| joined(&s.core.sandbox_connect_ports);
    SANDBOX_READ_PATHS: List, Value(""), FILE,
        "Extra absolute paths terraform may read (credential files, CA bundles)",
        |s| joined(&s.core.sandbox_read_paths.iter().map(|p| p.display()).collect::<Vec<_>>());
    SANDBOX_DISABLE: List, Value(""), FILE,
        "Layers to leave off on purpose: `landlock`, `seccomp`, `namespaces`, `cgroup` (the per-run cgroup used for teardown)",
        |s| joined(&s.core.sandbox_disable.iter().map(|l| l.as_str()).collect::<Vec<_>>());
    AUDIT_DIR: Path, Derived("`$TERRARIUM_STATE_DIR/audit`"), FILE,
        "Audit trail: `audit-YYYY-MM-DD.jsonl`, one JSON event per line, a new file each UTC day (must be outside the root)",
        |s| path_or(&s.core.audit.dir, "");
    AUDIT_RETENTION_DAYS: int(1, ANY), Value("90"), FILE,
        "Audit files older than this are removed",
        |s| s.core.audit.retention_days.to_string();
    AUDIT_SYSLOG: Text, Value(""), FILE,
        "Also send every event to syslog: `udp://HOST:PORT` or `tcp://HOST:PORT` (RFC 5424, octet-counted on TCP)",
        |s| s.core.audit.syslog.clone().unwrap_or_default();
    AUDIT_STDERR: Bool, Value("false"), FILE,
        "Also write every event to stderr as JSON (for containers)",
        |s| s.core.audit.stderr.to_string();
    AUDIT_OMIT_PERSONAL_DATA: Bool, Value("false"), FILE,
        "Leave `principal` and `source_ip` out of audit events",
        |s| s.core.audit.omit_personal_data.to_string();
    LOG_FILE: Path, Derived("stderr"), FILE,
        "Diagnostic log file (`--log-file` overrides)",
        |s| path_or(&s.log_file, "(stderr)");
    LOG_LEVEL: Text, Value("warn"), FILE,
        "`error`, `warn`, `info`, `debug` (or 1–4); `--log-level` overrides",
        |s| s.log_level.clone();
    HTTP_LISTEN: Text, Value("127.0.0.1:8080"), FILE,
        "Address for `serve --http` (`--listen` overrides)",
        |s| s.http.listen.to_string();
    HTTP_BEHIND_PROXY: Bool, Value("false"), FILE,
        "A TLS-terminating proxy is in front; required for non-loopback addresses",
        |s| s.http.behind_proxy.to_string();
    HTTP_ALLOWED_HOSTS: List, Value("localhost,127.0.0.1,[::1]"), FILE,
        "Accepted `Host` values",
        |s| s.http.allowed_hosts.join(",");
    HTTP_ALLOWED_ORIGINS: List, Value(""), FILE,
        "Accepted browser `Origin` values (e.g. `https://app.example.com:443`)",
        |s| s.http.allowed_origins.join(",");
    HTTP_MAX_BODY_BYTES: int(1024, ANY), Value("1048576"), FILE,
        "Request body limit (413 above)",
        |s| s.http.max_body_bytes.to_string();
    HTTP_SESSION_IDLE_SECS: SECS, Value("900"), FILE,
        "Idle MCP sessions are closed after this",
        |s| s.http.session_idle.as_secs().to_string();
    HTTP_MAX_SESSIONS: int(1, ANY), Value("256"), FILE,
        "New sessions beyond this get 503",
        |s| s.http.max_sessions.to_string();
    HTTP_MAX_SESSIONS_PER_PRINCIPAL: int(1, ANY), Derived("half of the above, at most `32`"), FILE,
        "Sessions one principal may hold; beyond it 429",
        |s| s.http.max_sessions_per_principal.to_string();
    HTTP_HEADER_TIMEOUT_SECS: SECS, Value("10"), FILE,
        "Time a connection has for its TLS handshake and first request's headers (later requests: from their first byte), and again for a body",
        |s| s.http.header_timeout.as_secs().to_string();
    HTTP_IDLE_TIMEOUT_SECS: SECS, Value("60"), FILE,
        "A kept-alive connection with no request in flight is closed after this",
        |s| s.http.idle_timeout.as_secs().to_string();
    HTTP_MAX_CONNECTIONS: int(2, 1 << 20), Value("512"), FILE,
        "Open connections; at the cap an idle or still-silent connection is closed for the new one",
        |s| s.http.max_connections.to_string();
    RATE_LIMIT_PER_SEC: int(1, ANY), Value("20"), FILE,
        "Token bucket per client IP and per principal: sustained requests per second",
        |s| s.http.rate_per_sec.to_string();
    RATE_LIMIT_BURST: int(1, ANY), Value("100"), FILE,
        "Token bucket per client IP and per principal: burst",
        |s| s.http.rate_burst.to_string();
    HTTP_TRUSTED_PROXIES: List, Value(""), FILE,
        "Peers whose `X-Forwarded-For` is believed",
        |s| joined(&s.http.trusted_proxies);
    HTTP_TLS_CERT_FILE: ConfigFile, Value(""), FILE,
        "Native TLS: PEM certificate chain (with `HTTP_TLS_KEY_FILE`)",
        |s| path_or(&s.http.tls_cert_file, "");
    HTTP_TLS_KEY_FILE: ConfigFile, Value(""), FILE,
        "Native TLS: PEM private key",
        |s| path_or(&s.http.tls_key_file, "");
    AUTH_TOKENS: Secret, Derived("(none; dev token on loopback)"), FILE,
        "Bearer tokens, `name:token` or `name:sha256:HEX`, comma- or newline-separated (`_FILE` is re-read on SIGHUP)",
        |s| crate::auth::TokenSet::parse(s.http.tokens.expose())
            .map(|t| joined(&t.names().iter().map(|n| format!("{n}:****")).collect::<Vec<_>>()))
            .unwrap_or_default();
    JWT_ISSUER: Text, Value(""), FILE,
        "OAuth resource-server mode: accept JWTs from this issuer (`sub` is the principal)",
        |s| s.http.jwt_issuer.clone().unwrap_or_default();
    JWT_AUDIENCE: Text, Value(""), FILE,
        "The audience JWTs must name (required with `JWT_ISSUER`)",
        |s| s.http.jwt_audience.clone().unwrap_or_default();
    JWT_JWKS_FILE: ConfigFile, Value(""), FILE,
        "JWT verification keys: a JWKS file",
        |s| path_or(&s.http.jwt_jwks_file, "");
    JWT_PUBLIC_KEY_FILE: ConfigFile, Value(""), FILE,
        "JWT verification key: one PEM public key (RSA, P-256 or Ed25519)",
        |s| path_or(&s.http.jwt_public_key_file, "");
    RESOURCE_URL: Text, Derived("`http://LISTEN/mcp`"), FILE,
        "The resource identifier in `/.well-known/oauth-protected-resource` (RFC 9728)",
        |s| s.http.resource_url.clone().unwrap_or_default();
    OAUTH_AUTHORIZATION_SERVERS: List, Derived("the JWT issuer"), FILE,
        "Authorization servers advertised in that metadata",
        |s| s.http.authorization_servers.join(",");
    GITHUB_APP_ID: int(1, u64::MAX), Value(""), FILE,
        "GitHub App id (with the private key)",
        |s| s.github.app_id.map(|i| i.to_string()).unwrap_or_default();
    GITHUB_PRIVATE_KEY: Secret, Value(""), FILE,
        "The App's private key (PEM); checked at start-up",
        |s| masked(!s.github.private_key.expose().is_empty());
    GITHUB_TOKEN: Secret, Value(""), FILE,
        "A token instead of App credentials (e.g. Actions' `GITHUB_TOKEN`)",
        |s| masked(!s.github.token.expose().is_empty());
    GITHUB_API_URL: Text, Value("https://api.github.com"), FILE,
        "REST API base (GitHub Enterprise: `https://HOST/api/v3`); `http` only to loopback",
        |s| s.github.api_url.clone();
    GITHUB_REPOS: List, Derived("(none: nothing allowed)"), FILE,
        "`owner/repo` globs the App may fetch, plan and report on",
        |s| s.github.repos.join(",");
    GITHUB_WEBHOOK_SECRET: Secret, Derived("(none: no webhook)"), FILE,
        "Secret of `X-Hub-Signature-256`",
        |s| masked(!s.github.webhook_secret.expose().is_empty());
    GITHUB_ALLOW_FORKS: Bool, Value("false"), FILE,
        "Plan pull requests whose head is in a fork",
        |s| s.github.allow_forks.to_string();
    GITHUB_ARCHIVE_MAX_BYTES: POSITIVE, Value("104857600"), FILE,
        "Largest archive downloaded",
        |s| s.github.archive_max_bytes.to_string();
    GITHUB_EXTRACT_MAX_BYTES: POSITIVE, Value("268435456"), FILE,
        "Largest extracted size",
        |s| s.github.extract_max_bytes.to_string();
    GITHUB_EXTRACT_MAX_FILES: POSITIVE, Value("20000"), FILE,
        "Largest extracted entry count",
        |s| s.github.extract_max_files.to_string();
    GITHUB_QUEUE_SIZE: int(1, 1 << 20), Value("32"), FILE,
        "Webhook plans waiting at most",
        |s| s.github.queue_size.to_string();
    GITHUB_WEBHOOK_MAX_BYTES: int(1, ANY), Value("5242880"), FILE,
        "Largest webhook delivery",
        |s| s.github.webhook_max_bytes.to_string();
    GITHUB_CHECK_NAME: Text, Value("Terrarium plan"), FILE,
        "Name of the check run",
        |s| s.github.check_name.clone();
    GITHUB_API_TIMEOUT_SECS: SECS, Value("30"), FILE,
        "Connect/read/write timeout of API calls",
        |s| s.github.api_timeout.as_secs().to_string();
}

/// The definition of an environment name (`TERRARIUM_X`) or a TOML key (`x`).
pub(crate) fn by_name(name: &str) -> Option<&'static Def> {
    ALL.iter().copied().find(|d| d.name == name)
}

pub(crate) fn by_file_key(key: &str) -> Option<&'static Def> {
    ALL.iter()
        .copied()
        .find(|d| d.in_file && d.file_key() == key)
}

/// The valid name closest to a misspelt one, if any is close enough to be a likely typo.
pub(crate) fn closest<'a>(
    wrong: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    let wrong = wrong.to_ascii_lowercase();
    candidates
        .map(|c| (strsim::jaro_winkler(&wrong, &c.to_ascii_lowercase()), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// The README's configuration table, rendered from [`ALL`].
pub(crate) fn markdown_table() -> String {
    let mut out = String::from("| Variable | Default | Meaning |\n|---|---|---|\n");
    for d in ALL {
        let default = match d.default {
            Fallback::Value("") => "(none)".to_string(),
            Fallback::Value(v) => format!("`{v}`"),
            Fallback::Derived(text) => text.to_string(),
        };
        let mut meaning = d.doc.to_string();
        if !d.in_file {
            meaning.push_str(" (environment only)");
        }
        out.push_str(&format!("| `{}` | {default} | {meaning} |\n", d.name));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_prefixed_and_defaults_parse() {
        let mut seen = std::collections::BTreeSet::new();
        for d in ALL {
            assert!(d.name.starts_with(PREFIX), "{}", d.name);
            assert!(seen.insert(d.name), "{} is defined twice", d.name);
            // A plain default is a value of the setting's own kind.
            if let (Some(v), Kind::Int { min, max }) = (d.default_value(), d.kind)
                && !v.is_empty()
            {
                let n: u64 = v.parse().unwrap_or_else(|_| panic!("{}: {v}", d.name));
                assert!((min..=max).contains(&n), "{}: {n} out of range", d.name);
            }
            if let (Some(v), Kind::Bool) = (d.default_value(), d.kind) {
                assert!(v == "true" || v == "false", "{}", d.name);
            }
        }
    }

    #[test]
    fn a_typo_gets_the_closest_name() {
        let names = || ALL.iter().map(|d| d.name);
        assert_eq!(
            closest("TERRARIUM_ENABLE_APLY", names()),
            Some("TERRARIUM_ENABLE_APPLY")
        );
        assert_eq!(
            closest("TERRARIUM_TIMEOUT_SEC", names()),
            Some("TERRARIUM_TIMEOUT_SECS")
        );
        assert_eq!(closest("TERRARIUM_XYZZY_QQQQQQQQQQQQ", names()), None);
    }

    /// The README's table is this module's: regenerate it with `BLESS=1 cargo test`.
    #[test]
    fn the_readme_table_is_rendered_from_the_definitions() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
        let readme = std::fs::read_to_string(&path).unwrap();
        let (begin, end) = ("<!-- settings:begin -->\n", "<!-- settings:end -->");
        let start = readme.find(begin).expect("README has the settings markers") + begin.len();
        let stop = readme[start..].find(end).expect("end marker") + start;
        let table = markdown_table();
        if readme[start..stop] != table {
            if std::env::var_os("BLESS").is_some() {
                let updated = format!("{}{table}{}", &readme[..start], &readme[stop..]);
                std::fs::write(&path, updated).unwrap();
            } else {
                panic!(
                    "README.md's settings table differs from src/settings/defs.rs; run \
                     `BLESS=1 cargo test --bin terrarium readme_table` to regenerate it"
                );
            }
        }
    }
}
