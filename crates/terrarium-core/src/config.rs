//! The core's configuration: plain typed values, no loading. The binary's `settings` module is
//! the one place that reads files and the environment and builds a [`Config`].

use std::path::PathBuf;
use std::time::Duration;

use crate::audit::AuditConfig;
use crate::sandbox::LayerKind;
use crate::sandbox::env::ChildEnv;

pub use crate::sandbox::env::{ENV_PREFIX, FORBIDDEN_PASSTHROUGH, is_forbidden_env};
pub use crate::sandbox::{Limits, SandboxMode};

/// What the core needs to run tools: built by the binary's settings loader, which checked every
/// value. Front-door settings (HTTP, GitHub credentials, logging) are not here: the tools never
/// see them.
#[derive(Debug, Clone)]
pub struct Config {
    /// Canonical directory under which every workspace must lie.
    pub workspace_root: PathBuf,
    /// The terraform executable: a path, or a name looked up on `PATH` at load time.
    pub terraform_bin: PathBuf,
    /// Wall-clock limit of one terraform run.
    pub timeout: Duration,
    /// How long terraform gets to stop after SIGINT before the group is killed.
    pub kill_grace: Duration,
    pub enable_apply: bool,
    pub enable_destroy: bool,
    /// Server-owned files (saved plans, per-run private dirs, plugin cache), outside the root.
    pub state_dir: PathBuf,
    /// How long a saved plan may be applied after it was made.
    pub plan_ttl: Duration,
    /// Bytes kept of each of stdout and stderr per run.
    pub output_limit_bytes: usize,
    /// Runs allowed at once across all workspaces.
    pub max_concurrent_runs: usize,
    /// How long a call waits for a busy workspace (or a free run slot) before giving up.
    pub queue_wait: Duration,
    /// Runs one principal may have at once: its fair share of `max_concurrent_runs`, so that
    /// one caller's slow runs cannot hold every slot.
    pub max_runs_per_principal: usize,
    /// On SIGTERM/SIGINT, how long runs in flight may finish before they are interrupted.
    pub shutdown_grace: Duration,
    /// `PATH` given to terraform (and so to `local-exec` provisioners).
    pub child_path: String,
    /// Environment variables passed through to terraform by exact name (provider credentials).
    pub passthrough_env: Vec<String>,
    /// Environment variables passed through by prefix, e.g. `AWS_`.
    pub passthrough_prefixes: Vec<String>,
    pub limits: Limits,
    /// Where audit events go.
    pub audit: AuditConfig,
    /// The policy file in force (`None`: the built-in `policies/default.toml`).
    /// The executor loads it at start and again on SIGHUP.
    pub policy_file: Option<PathBuf>,
    pub sandbox: SandboxMode,
    /// TCP ports terraform may connect to in actions that need the network.
    pub sandbox_connect_ports: Vec<u16>,
    /// Extra paths terraform may read (credential files, custom CA bundles).
    pub sandbox_read_paths: Vec<PathBuf>,
    /// Layers the operator turned off on purpose (`landlock`, `seccomp`, `namespaces`).
    pub sandbox_disable: Vec<LayerKind>,
}

impl Config {
    /// What a run's environment is built from (see [`crate::sandbox::env`]).
    pub fn child_env(&self) -> ChildEnv<'_> {
        ChildEnv {
            path: &self.child_path,
            passthrough_env: &self.passthrough_env,
            passthrough_prefixes: &self.passthrough_prefixes,
        }
    }
}

#[cfg(test)]
impl Config {
    /// A configuration for unit tests (the real defaults live in the binary's settings).
    pub(crate) fn for_tests(
        workspace_root: PathBuf,
        terraform_bin: PathBuf,
        state_dir: PathBuf,
    ) -> Config {
        Config {
            workspace_root,
            terraform_bin,
            timeout: Duration::from_secs(60),
            kill_grace: Duration::from_secs(1),
            enable_apply: false,
            enable_destroy: false,
            state_dir,
            plan_ttl: Duration::from_secs(3600),
            output_limit_bytes: 1 << 20,
            max_concurrent_runs: 2,
            queue_wait: Duration::from_secs(1),
            max_runs_per_principal: 2,
            shutdown_grace: Duration::from_secs(1),
            child_path: "/usr/bin:/bin".into(),
            passthrough_env: Vec::new(),
            passthrough_prefixes: Vec::new(),
            limits: Limits::default(),
            audit: AuditConfig {
                dir: None,
                retention_days: 1,
                syslog: None,
                stderr: false,
                omit_personal_data: false,
            },
            policy_file: None,
            sandbox: SandboxMode::BestEffort,
            sandbox_connect_ports: vec![443],
            sandbox_read_paths: Vec::new(),
            sandbox_disable: Vec::new(),
        }
    }
}
