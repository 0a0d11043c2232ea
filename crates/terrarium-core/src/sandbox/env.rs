//! The environment terraform gets: cleared, then rebuilt from an allowlist.

use std::collections::BTreeMap;
use std::path::Path;

/// Environment variable prefix for every setting.
pub const ENV_PREFIX: &str = "TERRARIUM_";

/// Names that must never be passed through to terraform: each changes what terraform does behind
/// the executor's back (extra arguments, another CLI config, debug logs that print secrets, another
/// data directory).
pub const FORBIDDEN_PASSTHROUGH: &[&str] = &[
    "TF_CLI_ARGS",
    "TF_CLI_CONFIG_FILE",
    "TF_LOG",
    "TF_DATA_DIR",
    "TF_PLUGIN_CACHE_DIR",
    "TF_IN_AUTOMATION",
    "TF_INPUT",
    "TF_REATTACH_PROVIDERS",
    "TF_DISABLE_PLUGIN_TLS",
    "TF_SKIP_PROVIDER_VERIFY",
    "TF_CLI_CONFIG",
    "TF_IGNORE",
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "LD_AUDIT",
    "PATH",
    "HOME",
    "TMPDIR",
];

/// True for names that never reach terraform, whatever the configuration says.
pub fn is_forbidden_env(name: &str) -> bool {
    // The server's own settings hold its credentials (the GitHub App key, tokens): never
    // terraform's, whatever a configuration asks.
    name.starts_with(ENV_PREFIX)
        || FORBIDDEN_PASSTHROUGH.iter().any(|f| {
            name == *f || (name.starts_with(f) && name.as_bytes().get(f.len()) == Some(&b'_'))
        })
}

/// What the configuration says of a run's environment.
#[derive(Debug, Clone, Copy)]
pub struct ChildEnv<'a> {
    /// `PATH` given to terraform (and so to `local-exec` provisioners).
    pub path: &'a str,
    /// Variables passed through by exact name (provider credentials).
    pub passthrough_env: &'a [String],
    /// Variables passed through by prefix, e.g. `AWS_`.
    pub passthrough_prefixes: &'a [String],
}

/// The per-run private directories that the environment points into.
pub struct RunDirs<'a> {
    pub home: &'a Path,
    pub tmp: &'a Path,
    pub cli_config: &'a Path,
    pub plugin_cache: &'a Path,
}

/// Builds terraform's environment. `host` is the server's own environment, from which only the
/// configured pass-through names and prefixes are copied (and never a forbidden name).
pub fn build(
    config: &ChildEnv<'_>,
    host: &BTreeMap<String, String>,
    dirs: &RunDirs<'_>,
) -> Vec<(String, String)> {
    let mut env: BTreeMap<String, String> = host
        .iter()
        .filter(|(k, _)| passes_through(config, k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let fixed = [
        ("PATH", config.path.to_string()),
        ("HOME", dirs.home.display().to_string()),
        ("TMPDIR", dirs.tmp.display().to_string()),
        ("TF_IN_AUTOMATION", "1".to_string()),
        ("TF_INPUT", "0".to_string()),
        ("CHECKPOINT_DISABLE", "1".to_string()),
        ("TF_CLI_CONFIG_FILE", dirs.cli_config.display().to_string()),
        (
            "TF_PLUGIN_CACHE_DIR",
            dirs.plugin_cache.display().to_string(),
        ),
        ("LANG", "C.UTF-8".to_string()),
    ];
    for (k, v) in fixed {
        env.insert(k.to_string(), v);
    }
    env.into_iter().collect()
}

/// The values of pass-through variables: credentials, to be redacted from every result.
pub fn passthrough_values(config: &ChildEnv<'_>, host: &BTreeMap<String, String>) -> Vec<String> {
    host.iter()
        .filter(|(k, _)| passes_through(config, k))
        .map(|(_, v)| v.clone())
        .collect()
}

/// The one rule for what reaches terraform from the host: configured by name or prefix, and
/// never a forbidden name.
fn passes_through(config: &ChildEnv<'_>, name: &str) -> bool {
    !is_forbidden_env(name)
        && (config.passthrough_env.iter().any(|n| n == name)
            || config
                .passthrough_prefixes
                .iter()
                .any(|p| name.starts_with(p.as_str())))
}

/// The CLI configuration file the server writes for each run: the plugin cache and nothing else,
/// so no host `.terraformrc` (with its credentials or provider overrides) is ever read.
pub fn cli_config(plugin_cache: &Path) -> String {
    let escaped = plugin_cache
        .display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    format!("plugin_cache_dir = \"{escaped}\"\ndisable_checkpoint = true\n")
}
