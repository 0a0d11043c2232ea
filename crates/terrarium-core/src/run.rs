//! What a tool may do while it runs ([`RunCtx`]): use the configuration, the confinement and the
//! plan store, mark secrets, and run terraform through the sandbox in a private run dir — and
//! how it fails ([`ToolError`]).
//!
//! Architecture invariant: this module (and so every tool) never imports the executor; the
//! executor builds a `RunCtx` over the [`RunEnv`] it owns and hands it to a tool.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::audit::AuditError;
use crate::call::{CallContext, Transport};
use crate::config::Config;
use crate::files::{create_private_dir, write_private_file};
use crate::plans::{PlanError, PlanOwner, PlanStore, Requester};
use crate::policy::{self, PolicyError};
use crate::redact::Redactor;
use crate::sandbox::access::{Grant, RunAccess};
use crate::sandbox::env::{self, RunDirs};
use crate::sandbox::{
    KernelSandbox, RunOutcome, RunPlace, RunSpec, Runner, SandboxError, SpawnError, StreamLine,
};
use crate::schema::FieldError;
use crate::source::WorkspaceSource;
use crate::terraform::{Invocation, stream};
use crate::workspace::{Workspace, WorkspaceError, WorkspaceRoot};

/// What every run shares, owned by the [`Executor`](crate::executor::Executor) and lent to each
/// tool call's [`RunCtx`]: the configuration, the root, the plan store, the sandbox, the policy
/// in force, run slots and where fetched workspaces come from.
pub(crate) struct RunEnv {
    pub(crate) config: Arc<Config>,
    pub(crate) root: WorkspaceRoot,
    pub(crate) plans: PlanStore,
    pub(crate) runner: Arc<dyn Runner>,
    /// The server's environment, the only source of pass-through credentials.
    pub(crate) host_env: BTreeMap<String, String>,
    pub(crate) slots: Arc<Semaphore>,
    /// Each principal's share of `slots` (`max_runs_per_principal`), taken before a global slot
    /// so that one caller's queued runs wait behind its own share, not in front of others.
    pub(crate) principal_slots: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// This instance's directory for run dirs (see the executor's `RunsDir`).
    pub(crate) runs_dir: PathBuf,
    /// This instance's directory for mount skeletons: in memory where possible (see the
    /// executor's `skeleton_dir`), else the runs dir.
    pub(crate) skeletons_dir: PathBuf,
    pub(crate) plugin_cache: PathBuf,
    pub(crate) sandbox: KernelSandbox,
    /// The policy in force; replaced on reload (SIGHUP).
    pub(crate) policy: std::sync::RwLock<Arc<crate::policy::Policy>>,
    /// Where `github_prepare_workspace` fetches from, when the binary configured one.
    pub(crate) source: Option<Arc<dyn WorkspaceSource>>,
}

impl RunEnv {
    /// The policy in force.
    pub(crate) fn policy(&self) -> Arc<crate::policy::Policy> {
        self.policy
            .read()
            .map(|p| p.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// A run slot: first one of `principal`'s share, then one of the global slots, both within
    /// `queue_wait`. The two permits are held together for the run.
    pub(crate) async fn run_slot(
        &self,
        principal: &str,
    ) -> Result<(OwnedSemaphorePermit, OwnedSemaphorePermit), ToolError> {
        let share = {
            let mut shares = self
                .principal_slots
                .lock()
                .map_err(|_| ToolError::Internal("run slot table poisoned".into()))?;
            // Forget principals with nothing running or waiting.
            let max = self.config.max_runs_per_principal;
            shares.retain(|_, s| Arc::strong_count(s) > 1 || s.available_permits() < max);
            shares
                .entry(principal.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(max)))
                .clone()
        };
        tokio::time::timeout(self.config.queue_wait, async {
            let own = share.acquire_owned().await;
            let global = self.slots.clone().acquire_owned().await;
            Ok::<_, tokio::sync::AcquireError>((own?, global?))
        })
        .await
        .map_err(|_| ToolError::NoSlot)?
        .map_err(|_| ToolError::NoSlot)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("invalid arguments: {}", describe_fields(.0))]
    Validation(Vec<FieldError>),
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("workspace {0} is busy with another run; try again when it finishes")]
    Busy(String),
    #[error("the server is running its maximum number of terraform runs; try again shortly")]
    NoSlot,
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("{0}")]
    Terraform(String),
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ToolError {
    pub fn kind(&self) -> &'static str {
        match self {
            ToolError::Validation(_) => "validation",
            ToolError::Workspace(_) => "confinement",
            ToolError::Policy(_) | ToolError::Plan(PlanError::NotYours { .. }) => "policy",
            ToolError::Plan(_) => "plan",
            ToolError::Busy(_) | ToolError::NoSlot => "busy",
            ToolError::Spawn(_) => "spawn",
            ToolError::Sandbox(_) => "sandbox",
            ToolError::Audit(_) => "audit",
            ToolError::Terraform(_) => "terraform",
            ToolError::Source(e) => e.kind,
            ToolError::Internal(_) => "internal",
        }
    }
}

impl ToolError {
    /// What the audit trail records of this error: never a value the caller gave (or that
    /// terraform or a fetched archive printed), only where and why. The match is exhaustive on
    /// purpose: a new variant must decide what of it is safe to record. Messages shown to the
    /// caller (`Display`) may quote their own values; this one may not.
    pub fn audit_message(&self) -> std::borrow::Cow<'static, str> {
        use std::borrow::Cow;
        match self {
            // Schema messages name pointers and constraints, never values (schema.rs).
            ToolError::Validation(f) => {
                Cow::Owned(format!("invalid arguments: {}", describe_fields(f)))
            }
            // "<field>: <reason>"; the path itself is never part of the message.
            ToolError::Workspace(e) => Cow::Owned(e.to_string()),
            ToolError::Policy(e) => policy_audit_message(e),
            ToolError::Plan(e) => match e {
                PlanError::WrongWorkspace { .. } => {
                    Cow::Borrowed("plan_id: the plan was made for another workspace")
                }
                PlanError::Corrupt(_) => Cow::Borrowed("plan store: corrupt plan record"),
                // Names the requesting principal (already in the event), never the plan.
                PlanError::NotYours { .. }
                | PlanError::Unknown
                | PlanError::Expired { .. }
                | PlanError::Tampered
                | PlanError::Mismatch
                | PlanError::Io(_) => Cow::Owned(e.to_string()),
            },
            ToolError::Busy(_) => Cow::Borrowed("the workspace is busy with another run"),
            ToolError::Sandbox(SandboxError::Setup(_)) => {
                Cow::Borrowed("sandbox set-up failed (details in the result)")
            }
            ToolError::NoSlot
            | ToolError::Spawn(_)
            | ToolError::Sandbox(SandboxError::Unavailable { .. })
            | ToolError::Audit(_) => Cow::Owned(self.to_string()),
            // Built from terraform's output, which can echo variable values.
            ToolError::Terraform(_) => Cow::Borrowed(
                "terraform failed or printed something that could not be used (details in the result)",
            ),
            ToolError::Source(e) => e.audit.clone(),
            ToolError::Internal(_) => Cow::Borrowed("internal error (details in the result)"),
        }
    }
}

fn policy_audit_message(e: &PolicyError) -> std::borrow::Cow<'static, str> {
    use std::borrow::Cow;
    match e {
        PolicyError::UnknownTool(_) => Cow::Borrowed("unknown tool"),
        PolicyError::ToolNotAllowed(_) => {
            Cow::Borrowed("the tool is not allowed by this server's policy (tools.allow)")
        }
        PolicyError::Protected { .. } => Cow::Borrowed(
            "the plan would delete or replace a protected resource (policy apply.protected)",
        ),
        PolicyError::DestroyDisabled { .. } => {
            Cow::Borrowed("the plan deletes resources; deleting is disabled on this server")
        }
        PolicyError::MissingScope { scope, .. } => Cow::Owned(format!(
            "the principal lacks the {scope} scope this tool needs"
        )),
        PolicyError::WorkspaceNotGranted { .. } => Cow::Borrowed(
            "the principal may not use this workspace (policy principals.<name>.workspaces)",
        ),
        PolicyError::TooManyDeletes { .. }
        | PolicyError::ApplyDisabled
        | PolicyError::GitHubNotConfigured
        | PolicyError::NothingToApply => Cow::Owned(e.to_string()),
    }
}

fn describe_fields(fields: &[FieldError]) -> String {
    fields
        .iter()
        .map(|f| {
            let at = if f.pointer.is_empty() {
                "(arguments)"
            } else {
                f.pointer.as_str()
            };
            format!("{at}: {}", f.message)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// What a tool may use while it runs: the configuration, the confinement, the plan store, a
/// redactor it can add secrets to, and terraform runs through the sandbox.
pub struct RunCtx<'a> {
    pub(crate) env: &'a RunEnv,
    pub(crate) call: &'a CallContext,
    pub(crate) redactor: Mutex<Redactor>,
}

/// Bound on JSON documents the server reads from terraform for itself.
const INTERNAL_OUTPUT_LIMIT: usize = 64 << 20;

/// Where a run starts: a workspace (by its descriptor) or, for actions that need none, the
/// run's private dir.
#[derive(Debug, Clone, Copy)]
pub enum Cwd<'a> {
    Workspace(&'a Workspace),
    RunDir,
}

impl<'a> From<&'a Workspace> for Cwd<'a> {
    fn from(ws: &'a Workspace) -> Cwd<'a> {
        Cwd::Workspace(ws)
    }
}

/// The mount skeleton of one spawn, removed when the run is over, whatever happened: in the
/// background, after the result (sixty directories: ~1 ms even in memory).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        // std's removal works by descriptor and never follows a link; nothing is mounted here
        // in the server's namespace (the run's mounts lived in its own).
        crate::files::remove_later(std::mem::take(&mut self.0));
    }
}

/// A run's private directory (HOME, TMPDIR, CLI config, generated var files); removed when
/// dropped, in the background (see [`remove_later`](crate::files::remove_later)).
pub struct RunDir {
    /// Created 0700 under this instance's runs dir.
    path: PathBuf,
}

impl Drop for RunDir {
    fn drop(&mut self) {
        // The files the server wrote at the top — variable values, a plan with them, the CLI
        // configuration — go now, with the call; only the run's HOME and TMPDIR trees wait for
        // the background removal.
        if let Ok(entries) = std::fs::read_dir(&self.path) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| !t.is_dir()) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        crate::files::remove_later(std::mem::take(&mut self.path));
    }
}

impl RunDir {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes a private file into the run dir and returns its absolute path.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<PathBuf, ToolError> {
        let p = self.path().join(name);
        write_private_file(&p, bytes)
            .map_err(|e| ToolError::Internal(format!("writing run file: {e}")))?;
        Ok(p)
    }
}

impl RunDir {
    /// Reads back a file the run wrote into this dir. The run could have replaced it with a
    /// link (to a server file), a FIFO (to hang the server) or a device: it is opened
    /// relative to the dir, never following a link, without blocking, and must be a regular
    /// file with one name and at most `limit` bytes.
    pub fn read_back(&self, name: &str, limit: u64) -> Result<Vec<u8>, ToolError> {
        use nix::fcntl::{OFlag, open, openat};
        use nix::sys::stat::{Mode, SFlag, fstat};
        use std::io::Read;
        let fail = |why: String| ToolError::Terraform(format!("the run's {name}: {why}"));
        let dir = open(
            self.path(),
            OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY,
            Mode::empty(),
        )
        .map_err(|e| ToolError::Internal(format!("opening the run dir: {e}")))?;
        let fd = openat(
            &dir,
            name,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| fail(format!("cannot be opened as a plain file ({e})")))?;
        let st = fstat(&fd).map_err(|e| fail(e.to_string()))?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG
            || st.st_nlink != 1
        {
            return Err(fail("is not a plain file".into()));
        }
        if st.st_size as u64 > limit {
            return Err(fail(format!("is larger than {limit} bytes")));
        }
        let mut bytes = Vec::new();
        std::fs::File::from(fd)
            .take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| fail(e.to_string()))?;
        if bytes.len() as u64 > limit {
            return Err(fail(format!("is larger than {limit} bytes")));
        }
        Ok(bytes)
    }
}

impl RunCtx<'_> {
    pub fn config(&self) -> &Config {
        &self.env.config
    }

    pub fn root(&self) -> &WorkspaceRoot {
        &self.env.root
    }

    pub fn plans(&self) -> &PlanStore {
        &self.env.plans
    }

    /// Where workspaces can be fetched from, when configured.
    pub fn source(&self) -> Option<&dyn WorkspaceSource> {
        self.env.source.as_deref()
    }

    /// Fires when the caller cancels or the server shuts down.
    pub fn cancel_token(&self) -> &CancellationToken {
        &self.call.cancel
    }

    /// For tools that create a workspace: may this caller use a workspace at `relative`?
    pub fn check_workspace_grant(&self, relative: &str) -> Result<(), ToolError> {
        let kind = crate::tools::kind::ToolKind::Plan;
        policy::check_access(
            &self.env.policy(),
            self.call.transport,
            &self.call.principal,
            kind,
            Some(relative),
        )?;
        Ok(())
    }

    /// Who is calling, and over which transport.
    pub fn caller(&self) -> (&str, Transport) {
        (&self.call.principal, self.call.transport)
    }

    /// The policy in force for this call.
    pub fn policy(&self) -> Arc<crate::policy::Policy> {
        self.env.policy()
    }

    /// Marks a value as secret for the rest of this call: it is masked in the result, in
    /// progress messages and in the audit event. In a call on a workspace it is also
    /// remembered with the workspace, and masked in every later call on it.
    pub fn add_secret(&self, v: &Value) {
        if let Ok(mut r) = self.redactor.lock() {
            r.add_value(v);
        }
    }

    /// Marks several strings as secret (see [`RunCtx::add_secret`]).
    pub fn add_secrets(&self, values: &[String]) {
        if let Ok(mut r) = self.redactor.lock() {
            r.add_all(values);
        }
    }

    /// Every value this call treats as secret (pass-through credentials, the workspace's and
    /// the plan's remembered secrets, and what the tool added), to remember with a saved plan.
    pub fn secret_values(&self) -> Vec<String> {
        self.redactor
            .lock()
            .map(|r| r.sources().to_vec())
            .unwrap_or_default()
    }

    /// This caller as the owner of a plan it makes.
    pub fn plan_owner(&self) -> PlanOwner {
        PlanOwner {
            principal: self.call.principal.clone(),
            transport: self.call.transport.as_str().to_string(),
        }
    }

    /// This caller as it asks for a saved plan, with what the policy lets it do with others'.
    pub fn plan_requester(&self, how: policy::PlanUse) -> Requester {
        Requester {
            caller: self.plan_owner(),
            others_allowed: policy::may_use_others_plans(
                &self.env.policy(),
                self.call.transport,
                &self.call.principal,
                how,
            ),
        }
    }

    pub fn redact(&self, s: &str) -> String {
        self.redactor.lock().map(|r| r.text(s)).unwrap_or_default()
    }

    pub fn run_dir(&self) -> Result<RunDir, ToolError> {
        use std::os::unix::fs::PermissionsExt;
        let fail = |e: std::io::Error| ToolError::Internal(format!("creating run dir: {e}"));
        let dir = tempfile::Builder::new()
            .prefix("run-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(&self.env.runs_dir)
            .map_err(fail)?;
        let dir = RunDir { path: dir.keep() };
        for sub in ["home", "tmp"] {
            create_private_dir(&dir.path().join(sub)).map_err(fail)?;
        }
        dir.write(
            "terraform.rc",
            env::cli_config(&self.env.plugin_cache).as_bytes(),
        )?;
        Ok(dir)
    }

    /// Runs terraform in `cwd` with the run's private dir. `json_stream` says stdout is
    /// terraform's `-json` UI stream, whose `@message`s are forwarded as progress.
    pub async fn terraform(
        &self,
        cwd: impl Into<Cwd<'_>>,
        dir: &RunDir,
        inv: &Invocation,
        json_stream: bool,
    ) -> Result<RunOutcome, ToolError> {
        self.spawn(
            cwd.into(),
            dir,
            inv,
            Some(json_stream),
            self.env.config.output_limit_bytes,
        )
        .await
    }

    /// Runs terraform for JSON the server parses itself (`show -json`, `output -json`): the
    /// output is kept whole up to a much larger bound, since a cut document cannot be parsed,
    /// and it is never shown raw to the caller.
    pub async fn terraform_json(
        &self,
        cwd: impl Into<Cwd<'_>>,
        dir: &RunDir,
        inv: &Invocation,
    ) -> Result<RunOutcome, ToolError> {
        self.spawn(cwd.into(), dir, inv, None, INTERNAL_OUTPUT_LIMIT)
            .await
    }

    async fn spawn(
        &self,
        cwd: Cwd<'_>,
        dir: &RunDir,
        inv: &Invocation,
        // None: no progress from this run; Some(true): stdout is the `-json` UI stream.
        progress_stream: Option<bool>,
        output_limit: usize,
    ) -> Result<RunOutcome, ToolError> {
        let json_stream = progress_stream == Some(true);
        let _slot = self.env.run_slot(&self.call.principal).await?;
        let cfg = &self.env.config;
        let home = dir.path().join("home");
        let tmp = dir.path().join("tmp");
        let cli_config = dir.path().join("terraform.rc");
        let env = env::build(
            &cfg.child_env(),
            &self.env.host_env,
            &RunDirs {
                home: &home,
                tmp: &tmp,
                cli_config: &cli_config,
                plugin_cache: &self.env.plugin_cache,
            },
        );
        // What this run may touch: its workspace and private dir, terraform itself, the plugin
        // cache (written only by init), and the network only for actions that need it.
        let network = inv.subcommand.needs_network();
        // The working directory: the workspace by the descriptor that was checked.
        let cwd_grant = match cwd {
            Cwd::Workspace(ws) => Grant::Held {
                fd: ws.fd().clone(),
                path: ws.dir.clone(),
            },
            Cwd::RunDir => Grant::Path(dir.path().to_path_buf()),
        };
        let mut access = RunAccess {
            read_write: vec![Grant::Path(dir.path().to_path_buf())],
            ..RunAccess::default()
        };
        if let Cwd::Workspace(_) = cwd {
            access.read_write.push(cwd_grant.clone());
        }
        if let Some(tf_dir) = cfg.terraform_bin.parent() {
            access.read_exec.push(Grant::Path(tf_dir.to_path_buf()));
        }
        // In a repository fetched from GitHub, the rest of that repository (its modules): a
        // server-made tree, resolved by descriptor with no symlink on the way, holding the
        // marker the fetch wrote as a plain file.
        if let Cwd::Workspace(ws) = cwd
            && let Some(tree) = crate::source::trusted_tree(&self.env.root, &ws.relative)
        {
            access.read_only.push(Grant::Held {
                fd: tree.fd().clone(),
                path: tree.dir.clone(),
            });
        }
        let cache = Grant::Path(self.env.plugin_cache.clone());
        if inv.subcommand.writes_plugin_cache() {
            access.read_write.push(cache);
        } else {
            access.read_exec.push(cache);
        }
        let scratch = Scratch(
            self.env
                .skeletons_dir
                .join(format!("{}.mnt", uuid::Uuid::new_v4().simple())),
        );
        let setup = self.env.sandbox.setup(
            cfg.limits.clone(),
            RunPlace {
                access,
                network,
                cwd: &cwd_grant,
                scratch: &scratch.0,
            },
        )?;
        let spec = RunSpec {
            program: cfg.terraform_bin.clone(),
            argv: inv.argv(),
            env,
            timeout: cfg.timeout,
            kill_grace: cfg.kill_grace,
            setup,
            output_limit,
        };
        tracing::debug!(command = %inv.describe(), cwd = %cwd_grant.path().display(), "starting terraform");
        let progress = self
            .call
            .progress
            .clone()
            .filter(|_| progress_stream.is_some());
        let on_line = move |line: StreamLine| {
            let Some(p) = &progress else { return };
            let text = match line {
                StreamLine::Stdout(l) if json_stream => match stream::message_of(&l) {
                    Some(m) => m,
                    None => return,
                },
                StreamLine::Stdout(l) | StreamLine::Stderr(l) => l,
            };
            if text.trim().is_empty() {
                return;
            }
            p(self.redact(&text));
        };
        let sink: Option<&(dyn Fn(StreamLine) + Send + Sync)> =
            if self.call.progress.is_some() && progress_stream.is_some() {
                Some(&on_line)
            } else {
                None
            };
        let outcome = self
            .env
            .runner
            .run(spec, sink, self.call.cancel.clone())
            .await?;
        tracing::debug!(
            command = %inv.describe(),
            exit_code = ?outcome.exit_code,
            timed_out = outcome.timed_out,
            duration_ms = outcome.duration.as_millis() as u64,
            "terraform finished"
        );
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_dir_loses_its_files_with_the_call_and_its_trees_soon_after() {
        let base = tempfile::tempdir().unwrap();
        let path = base.path().join("run-x");
        std::fs::create_dir_all(path.join("home/.terraform.d")).unwrap();
        std::fs::write(path.join("home/.terraform.d/f"), "x").unwrap();
        let dir = RunDir { path: path.clone() };
        dir.write("terrarium-vars.tfvars.json", b"{\"password\":\"hunter2\"}")
            .unwrap();
        dir.write("plan.tfplan", b"plan with values").unwrap();
        drop(dir);
        // The files with values are gone when the drop returns, not when the thread gets to it.
        assert!(!path.join("terrarium-vars.tfvars.json").exists());
        assert!(!path.join("plan.tfplan").exists());
        assert!(crate::files::drain(std::time::Duration::from_secs(10)));
        assert!(!path.exists());
    }
}
