//! The core: every call from every front door goes through [`Executor::call`].
//!
//! validate (schema) → confine (workspace) → authorize (policy) → lock → run (sandbox) →
//! redact → audit. The front doors only translate their protocol to a [`CallContext`] and a
//! JSON arguments object, and the [`ToolResponse`] back.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tokio::sync::{Notify, OwnedMutexGuard, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::audit::{AuditError, Auditor, ToolEvent, rfc3339_now};
use crate::call::{CallContext, ToolResponse, Transport};
use crate::config::Config;
use crate::files::create_private_dir;
use crate::plans::{PlanError, PlanStore};
use crate::policy::{self, PolicyError};
use crate::redact::Redactor;
use crate::run::{RunCtx, RunEnv, ToolError};
use crate::sandbox::env::{self};
use crate::sandbox::{KernelSandbox, Runner};
use crate::schema::{FieldError, SchemaError, Schemas};
use crate::secrets::SecretStore;
use crate::source::WorkspaceSource;
use crate::tools::{self, ToolKind, ToolOutput};
use crate::workspace::{FileId, Workspace, WorkspaceRoot};
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("state dir {path}: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyFileError),
    #[error("workspace root {path}: {source}")]
    Root {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub struct Executor {
    /// What runs share: configuration, confinement, plan store, sandbox, policy, run slots.
    env: RunEnv,
    schemas: Schemas,
    /// Secret values remembered per workspace (see `secrets`).
    secrets: SecretStore,
    audit: Arc<Auditor>,
    /// Per-workspace locks, keyed by the directory's identity (two names, one lock).
    locks: Mutex<HashMap<FileId, Arc<tokio::sync::Mutex<()>>>>,
    /// Holds this instance's lock on the runs dir for its whole life.
    _runs: RunsDir,
    /// And on its directory for mount skeletons, when that is not the runs dir.
    _skeletons: Option<RunsDir>,
    /// Cancelled when the server shuts down: every run in flight is interrupted.
    shutdown: CancellationToken,
    in_flight: AtomicUsize,
    idle: Notify,
}

/// What start-up opens besides the sandbox probe.
struct Opened {
    runs: RunsDir,
    runs_dir: PathBuf,
    skeletons: Option<RunsDir>,
    skeletons_dir: PathBuf,
    root: WorkspaceRoot,
    plans: PlanStore,
    secrets: SecretStore,
    audit: Arc<Auditor>,
    policy: crate::policy::Policy,
    schemas: Schemas,
    plugin_cache: PathBuf,
}

impl Opened {
    fn open(config: &Config) -> Result<Opened, StartError> {
        let state_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StartError::StateDir { path, source }
        };
        let runs_root = config.state_dir.join("runs");
        let plugin_cache = config.state_dir.join("plugin-cache");
        create_private_dir(&config.state_dir).map_err(state_err(&config.state_dir))?;
        create_private_dir(&runs_root).map_err(state_err(&runs_root))?;
        create_private_dir(&plugin_cache).map_err(state_err(&plugin_cache))?;
        let runs = RunsDir::claim(&runs_root).map_err(state_err(&runs_root))?;
        let runs_dir = runs.path.clone();
        let skeletons = skeleton_dir();
        let skeletons_dir = skeletons
            .as_ref()
            .map_or_else(|| runs_dir.clone(), |s| s.path.clone());
        let root = WorkspaceRoot::open(config.workspace_root.clone()).map_err(|source| {
            StartError::Root {
                path: config.workspace_root.clone(),
                source,
            }
        })?;
        let plans = PlanStore::open(&config.state_dir, config.plan_ttl)
            .map_err(state_err(&config.state_dir))?;
        plans.sweep();
        let secrets = SecretStore::open(&config.state_dir).map_err(state_err(&config.state_dir))?;
        let audit = Arc::new(Auditor::new(&config.audit)?);
        let policy = crate::policy::Policy::load(config.policy_file.as_deref())?;
        // Parsed only: each tool's schema is compiled on its first call (see `schema`).
        let schemas = Schemas::load()?;
        Ok(Opened {
            runs,
            runs_dir,
            skeletons,
            skeletons_dir,
            root,
            plans,
            secrets,
            audit,
            policy,
            schemas,
            plugin_cache,
        })
    }
}

impl Executor {
    /// `host_env` is the server's environment, the only source of pass-through credentials.
    pub fn new(
        config: Config,
        runner: Arc<dyn Runner>,
        host_env: BTreeMap<String, String>,
        source: Option<Arc<dyn WorkspaceSource>>,
    ) -> Result<Executor, StartError> {
        // The slowest step of start-up, the sandbox probe (~3 ms: a child process that creates
        // the run's namespaces), runs beside the rest.
        let (sandbox, state) = std::thread::scope(|scope| {
            let probe = scope.spawn(|| {
                KernelSandbox::new(
                    config.sandbox,
                    &config.sandbox_disable,
                    config.sandbox_connect_ports.clone(),
                    config.sandbox_read_paths.clone(),
                )
            });
            let state = Opened::open(&config);
            let sandbox = probe
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (sandbox, state)
        });
        let o = state?;
        Ok(Executor {
            env: RunEnv {
                slots: Arc::new(Semaphore::new(config.max_concurrent_runs)),
                principal_slots: Mutex::new(HashMap::new()),
                policy: std::sync::RwLock::new(Arc::new(o.policy)),
                source,
                sandbox,
                root: o.root,
                plans: o.plans,
                runner,
                host_env,
                runs_dir: o.runs_dir,
                skeletons_dir: o.skeletons_dir,
                plugin_cache: o.plugin_cache,
                config: Arc::new(config),
            },
            shutdown: CancellationToken::new(),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            schemas: o.schemas,
            secrets: o.secrets,
            audit: o.audit,
            locks: Mutex::new(HashMap::new()),
            _runs: o.runs,
            _skeletons: o.skeletons,
        })
    }

    pub fn config(&self) -> &Config {
        &self.env.config
    }

    /// The workspace root, held open.
    pub fn root(&self) -> &WorkspaceRoot {
        &self.env.root
    }

    /// The audit trail, for front doors' own events (start-up, shutdown, auth failures).
    pub fn auditor(&self) -> &Arc<Auditor> {
        &self.audit
    }

    /// Cancelled when the server shuts down (for work outside `call`, like webhook plans).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.child_token()
    }

    /// The kernel sandbox layers and their status on this machine.
    pub fn sandbox(&self) -> &KernelSandbox {
        &self.env.sandbox
    }

    fn sandbox_report(&self) -> Value {
        let layers: Map<String, Value> = self
            .env
            .sandbox
            .layers()
            .iter()
            .map(|l| {
                let state = l.state(self.env.sandbox.mode());
                (l.name.to_string(), json!(state))
            })
            .collect();
        json!({"mode": self.env.sandbox.mode().as_str(), "layers": layers, "teardown": self.env.sandbox.teardown(), "warnings": self.env.sandbox.warnings()})
    }

    /// The tools a caller may use, in order, with their schema documents.
    pub fn listed_tools_for(
        &self,
        transport: Transport,
        principal: &str,
    ) -> Vec<(ToolKind, Arc<Map<String, Value>>)> {
        let policy = self.policy();
        self.listed_tools()
            .into_iter()
            .filter(|(k, _)| policy::check_access(&policy, transport, principal, *k, None).is_ok())
            .collect()
    }

    /// The tools this server offers, in order, with their schema documents.
    pub fn listed_tools(&self) -> Vec<(ToolKind, Arc<Map<String, Value>>)> {
        ToolKind::ALL
            .iter()
            .filter(|k| {
                policy::is_listed(
                    &self.env.config,
                    &self.policy(),
                    k.name(),
                    self.env.source.is_some(),
                )
            })
            .filter_map(|k| self.schemas.document(k.name()).map(|d| (*k, d)))
            .collect()
    }

    /// Runs one tool call end to end and audits it. Never panics on caller input; every failure
    /// becomes an error response that says what to do.
    pub async fn call(&self, tool: &str, arguments: Value, mut ctx: CallContext) -> ToolResponse {
        let started = Instant::now();
        let _in_flight = InFlight::enter(self);
        // The run stops when the caller cancels or the server shuts down, whichever is first.
        let caller = ctx.cancel.clone();
        ctx.cancel = self.shutdown.child_token();
        let linked = ctx.cancel.clone();
        let relay = tokio::spawn(async move {
            caller.cancelled().await;
            linked.cancel();
        });
        let _relay = AbortOnDrop(relay);
        let rctx = RunCtx {
            env: &self.env,
            call: &ctx,
            redactor: Mutex::new(self.base_redactor()),
        };
        let mut workspace = None;
        let result = self.dispatch(tool, &arguments, &rctx, &mut workspace).await;
        let duration = started.elapsed().as_secs_f64();
        let redactor = rctx.redactor.lock().map(|r| r.clone()).unwrap_or_default();

        let (response, event) = match result {
            Ok(out) => self.success_response(tool, workspace.as_ref(), out, duration, &ctx),
            Err(err) => self.error_response(tool, workspace.as_ref(), &err, duration, &ctx),
        };
        let mut response = response;
        redactor.value(&mut response.structured);
        response.text = redactor.text(&response.text);
        let mut event = event;
        event.error = event.error.map(|e| redactor.text(&e));
        event.command = event.command.map(|c| redactor.text(&c));
        event.action = event.action.map(|a| redactor.text(&a));
        // A failure here is logged and reported by `healthy()`; this call's result still goes
        // back (read-only work continues), but apply is refused until the trail is writable.
        let _ = self.audit.record_tool(&event);
        response
    }

    fn base_redactor(&self) -> Redactor {
        let mut r = Redactor::new();
        for v in env::passthrough_values(&self.env.config.child_env(), &self.env.host_env) {
            r.add(&v);
        }
        r
    }

    async fn dispatch(
        &self,
        tool: &str,
        arguments: &Value,
        ctx: &RunCtx<'_>,
        workspace: &mut Option<Workspace>,
    ) -> Result<ToolOutput, ToolError> {
        policy::check_tool(
            &self.env.config,
            &self.policy(),
            tool,
            self.env.source.is_some(),
        )?;
        let kind =
            ToolKind::from_name(tool).ok_or_else(|| PolicyError::UnknownTool(tool.to_string()))?;
        let arguments = if arguments.is_null() {
            json!({})
        } else {
            arguments.clone()
        };
        self.schemas
            .validate(tool, &arguments)
            .map_err(ToolError::Validation)?;
        let policy = self.policy();
        if !kind.needs_workspace() {
            policy::check_access(&policy, ctx.call.transport, &ctx.call.principal, kind, None)?;
            let out = tools::run(kind, ctx, None, arguments).await?;
            // A tool that created a workspace names it in the audit event.
            if let Some(path) = out.data.get("path").and_then(Value::as_str) {
                *workspace = self.env.root.workspace("path", path).ok();
            }
            return Ok(out);
        }
        let path = arguments
            .get("path")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if kind.mutates_infrastructure() {
            // Fail closed: nothing that changes infrastructure runs unless it can be audited.
            self.audit.healthy()?;
        }
        let ws = self.env.root.workspace("path", path)?;
        *workspace = Some(ws.clone());
        policy::check_access(
            &policy,
            ctx.call.transport,
            &ctx.call.principal,
            kind,
            Some(&ws.relative),
        )?;
        let _guard = self.lock_workspace(&ws, &ctx.call.cancel).await?;
        // Secrets of earlier calls on this workspace (now in its plans and state) are masked in
        // this one; the ones this call adds are remembered for later calls, under the lock, so
        // the next call on the workspace sees them.
        let known = self
            .secrets
            .load(&ws.dir)
            .map_err(|e| ToolError::Internal(e.to_string()))?;
        ctx.add_secrets(&known);
        let out = tools::run(kind, ctx, Some(&ws), arguments).await;
        let learned = ctx.secret_values();
        if learned.len() > known.len()
            && let Err(e) = self.secrets.remember(&ws.dir, &learned)
        {
            tracing::error!(workspace = %ws.relative, error = %e, "remembering secrets failed");
            if out.is_ok() {
                return Err(ToolError::Internal(format!(
                    "the run finished, but the values to redact from later results could not be recorded: {e}"
                )));
            }
        }
        out
    }

    async fn lock_workspace(
        &self,
        ws: &Workspace,
        cancel: &CancellationToken,
    ) -> Result<OwnedMutexGuard<()>, ToolError> {
        let lock = {
            let mut locks = self
                .locks
                .lock()
                .map_err(|_| ToolError::Internal("lock table poisoned".into()))?;
            locks.retain(|_, l| Arc::strong_count(l) > 1 || l.try_lock().is_err());
            locks.entry(ws.id()).or_default().clone()
        };
        tokio::select! {
            r = tokio::time::timeout(self.env.config.queue_wait, lock.lock_owned()) => {
                r.map_err(|_| ToolError::Busy(ws.relative.clone()))
            }
            _ = cancel.cancelled() => Err(ToolError::Busy(ws.relative.clone())),
        }
    }

    fn success_response(
        &self,
        tool: &str,
        ws: Option<&Workspace>,
        out: ToolOutput,
        duration: f64,
        ctx: &CallContext,
    ) -> (ToolResponse, ToolEvent) {
        let mut s = Map::new();
        s.insert("tool".into(), json!(tool));
        if let Some(ws) = ws {
            s.insert("path".into(), json!(ws.relative));
        }
        s.insert("success".into(), json!(out.success));
        let run = out.run.as_ref();
        s.insert("exit_code".into(), json!(run.and_then(|r| r.exit_code)));
        s.insert("duration_secs".into(), json!(round3(duration)));
        s.insert("timed_out".into(), json!(run.is_some_and(|r| r.timed_out)));
        s.insert("cancelled".into(), json!(run.is_some_and(|r| r.cancelled)));
        for (k, v) in out.data {
            s.insert(k, v);
        }
        if let Some(r) = run {
            s.insert(
                "terraform_duration_secs".into(),
                json!(round3(r.duration.as_secs_f64())),
            );
            if let Some(sig) = r.signal {
                s.insert("signal".into(), json!(sig));
            }
            s.insert("stdout".into(), json!(r.stdout.text));
            s.insert("stderr".into(), json!(r.stderr.text));
            s.insert(
                "truncated".into(),
                json!(r.stdout.truncated || r.stderr.truncated),
            );
            s.insert("stragglers_killed".into(), json!(r.stragglers_killed));
            s.insert("sandbox".into(), self.sandbox_report());
        }
        let mut text = out.text.clone();
        if let Some(r) = run {
            text.push_str(&format!(
                "\n\nexit code: {}{}{} · {:.2}s",
                r.exit_code
                    .map_or_else(|| "none".to_string(), |c| c.to_string()),
                if r.timed_out {
                    " · TIMED OUT (process group interrupted, then killed)"
                } else {
                    ""
                },
                if r.cancelled { " · CANCELLED" } else { "" },
                r.duration.as_secs_f64()
            ));
            if !r.stderr.text.trim().is_empty() {
                text.push_str(&format!("\n\nstderr:\n{}", r.stderr.text.trim_end()));
            }
            if r.stdout.truncated || r.stderr.truncated {
                text.push_str("\n\n(output truncated)");
            }
            // Stated in the text too, where a reader (human or model) actually looks.
            let warnings = self.env.sandbox.warnings();
            if !warnings.is_empty() {
                text.push_str(&format!(
                    "\n\nWARNING: the sandbox is not strict: {}",
                    warnings.join("; ")
                ));
            }
        }
        let event = ToolEvent {
            timestamp: rfc3339_now(),
            level: if out.success { "info" } else { "warn" },
            event: "terraform_operation",
            request_id: ctx.request_id.clone(),
            principal: ctx.principal.clone(),
            transport: ctx.transport.as_str(),
            source_ip: ctx.source_ip.clone(),
            tool: tool.to_string(),
            action: out
                .action
                .as_deref()
                .and_then(|c| c.split_whitespace().nth(1))
                .map(String::from),
            command: out.action.clone(),
            variables: out.variables.clone(),
            workspace: ws.map(|w| w.relative.clone()),
            duration: round3(duration),
            success: out.success,
            outcome: if out.success {
                "ok".into()
            } else {
                "terraform".into()
            },
            exit_code: run.and_then(|r| r.exit_code),
            timed_out: run.is_some_and(|r| r.timed_out),
            cancelled: run.is_some_and(|r| r.cancelled),
            plan_id: out.plan_id.clone(),
            resources_affected: out.resources_affected.clone(),
            fields: Vec::new(),
            error: None,
        };
        (
            ToolResponse {
                is_error: !out.success,
                structured: Value::Object(s),
                text,
            },
            event,
        )
    }

    fn error_response(
        &self,
        tool: &str,
        ws: Option<&Workspace>,
        err: &ToolError,
        duration: f64,
        ctx: &CallContext,
    ) -> (ToolResponse, ToolEvent) {
        let fields: Vec<FieldError> = match err {
            ToolError::Validation(f) => f.clone(),
            _ => Vec::new(),
        };
        // Where a rejected call went wrong, as JSON pointers; a confinement rejection names
        // its field (the path itself is never recorded).
        let mut pointers: Vec<String> = fields.iter().map(|f| f.pointer.clone()).collect();
        if let ToolError::Workspace(e) = err {
            let field = e.field();
            pointers.push(if field.starts_with('/') {
                field.to_string()
            } else {
                format!("/{field}")
            });
        }
        let message = err.to_string();
        let structured = json!({
            "tool": tool,
            "path": ws.map(|w| w.relative.clone()),
            "success": false,
            "exit_code": null,
            "duration_secs": round3(duration),
            "timed_out": false,
            "cancelled": false,
            "error": {"kind": err.kind(), "message": message, "fields": fields},
        });
        let kind = match err {
            ToolError::Validation(_) => "validation_rejected",
            ToolError::Workspace(_) => "confinement_rejected",
            ToolError::Policy(_) | ToolError::Plan(PlanError::NotYours { .. }) => {
                "authorization_denied"
            }
            _ => "terraform_operation",
        };
        let event = ToolEvent {
            timestamp: rfc3339_now(),
            level: "warn",
            event: kind,
            request_id: ctx.request_id.clone(),
            principal: ctx.principal.clone(),
            transport: ctx.transport.as_str(),
            source_ip: ctx.source_ip.clone(),
            tool: tool.to_string(),
            action: None,
            command: None,
            variables: Vec::new(),
            workspace: ws.map(|w| w.relative.clone()),
            duration: round3(duration),
            success: false,
            outcome: err.kind().to_string(),
            exit_code: None,
            timed_out: false,
            cancelled: false,
            plan_id: None,
            resources_affected: None,
            fields: pointers,
            // Never the caller's values: the message shown to the caller may quote them.
            error: Some(err.audit_message().into_owned()),
        };
        (
            ToolResponse {
                is_error: true,
                structured,
                text: format!("Error ({}): {message}", err.kind()),
            },
            event,
        )
    }
}

/// Counts a call in flight for the lifetime of the guard.
struct InFlight<'a>(&'a Executor);

impl<'a> InFlight<'a> {
    fn enter(exec: &'a Executor) -> InFlight<'a> {
        exec.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(exec)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Executor {
    /// The policy in force.
    pub fn policy(&self) -> Arc<crate::policy::Policy> {
        self.env.policy()
    }

    /// Re-reads the policy file (SIGHUP). On error the old policy stays in force.
    pub fn reload_policy(&self) -> Result<(), crate::policy::PolicyFileError> {
        let fresh = crate::policy::Policy::load(self.env.config.policy_file.as_deref())?;
        match self.env.policy.write() {
            Ok(mut p) => *p = Arc::new(fresh),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(fresh),
        }
        Ok(())
    }

    /// Calls currently running.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Waits until no call is in flight, or `limit` passes; true when idle.
    async fn wait_idle(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.idle.notified();
            if self.in_flight() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.in_flight() == 0;
            }
        }
    }

    /// Graceful shutdown: runs in flight get `grace` to finish; then terraform is interrupted
    /// (SIGINT, then SIGKILL after the kill grace) and waited for. Returns how many calls were
    /// interrupted.
    pub async fn shutdown(&self, grace: Duration) -> usize {
        if self.wait_idle(grace).await {
            return 0;
        }
        let interrupted = self.in_flight();
        self.shutdown.cancel();
        self.wait_idle(self.env.config.kill_grace + Duration::from_secs(5))
            .await;
        interrupted
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
/// This instance's directory for run dirs, `runs/<instance>`, locked (`flock`) for the
/// instance's life. At start-up an instance removes only the directories whose lock it can
/// take — those of instances that are gone — so a second server, `check-config` or `ci plan`
/// on the same state dir never deletes a live run's files. Removal is by descriptor
/// (std's `remove_dir_all` never follows a link), so a run that planted links in its own
/// directory cannot steer it elsewhere.
struct RunsDir {
    path: PathBuf,
    _lock: std::fs::File,
}

impl RunsDir {
    fn claim(root: &Path) -> std::io::Result<RunsDir> {
        for e in std::fs::read_dir(root)?.flatten() {
            let Ok(f) = std::fs::File::open(e.path()) else {
                continue;
            };
            if try_lock(&f) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let path = root.join(uuid::Uuid::new_v4().simple().to_string());
        create_private_dir(&path)?;
        let lock = std::fs::File::open(&path)?;
        if !try_lock(&lock) {
            return Err(std::io::Error::other("cannot lock a fresh runs directory"));
        }
        Ok(RunsDir { path, _lock: lock })
    }
}

/// Where the per-run mount skeletons go: a private directory on the memory file system at
/// `/dev/shm` when there is one. A skeleton is some sixty empty directories and files made
/// before the run and removed after it; on a journalling disk that costs ~10 ms a run, in
/// memory a few hundred microseconds. `/dev/shm` is shared by every user, so the directory
/// (`terrarium-<uid>`) is used only if it is a real directory, not a link, owned by this user
/// and closed to everyone else; otherwise (and where there is no tmpfs) skeletons go to the
/// runs dir. Each instance claims a subdirectory under a lock, as in the runs dir, so a crashed
/// instance's leftovers are removed by the next one.
fn skeleton_dir() -> Option<RunsDir> {
    skeleton_dir_in(Path::new("/dev/shm"))
}

fn skeleton_dir_in(shm: &Path) -> Option<RunsDir> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let fs = nix::sys::statfs::statfs(shm).ok()?;
    if fs.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC {
        return None;
    }
    // SAFETY: a plain getter.
    let uid = unsafe { libc::geteuid() };
    let base = shm.join(format!("terrarium-{uid}"));
    match std::fs::DirBuilder::new().mode(0o700).create(&base) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(_) => return None,
    }
    let meta = std::fs::symlink_metadata(&base).ok()?;
    if !meta.file_type().is_dir() || meta.uid() != uid || meta.mode() & 0o077 != 0 {
        tracing::warn!(
            path = %base.display(),
            "not using the memory file system for mount skeletons: the directory is not this user's own"
        );
        return None;
    }
    RunsDir::claim(&base).ok()
}

/// An exclusive, non-blocking `flock`; held until the file is closed.
fn try_lock(f: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor we own.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// The executor in-process: the checks that come before any spawn (schema, confinement, policy)
/// and the one audit event each call writes. Terraform itself is exercised end to end by the
/// integration tests, which spawn the real binary.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::ProcessRunner;

    struct Fixture {
        _dir: tempfile::TempDir,
        audit: PathBuf,
        exec: Executor,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("ws")).expect("mkdir");
        std::fs::write(root.join("ws/main.tf"), "").expect("write");
        let mut config = Config::for_tests(
            root.canonicalize().expect("canonical"),
            // Never spawned by these tests: every call is refused before a run.
            PathBuf::from("/bin/false"),
            dir.path().join("state"),
        );
        let audit = dir.path().join("audit");
        config.audit.dir = Some(audit.clone());
        let exec = Executor::new(
            config,
            Arc::new(ProcessRunner::new()),
            BTreeMap::new(),
            None,
        )
        .expect("executor");
        Fixture {
            _dir: dir,
            audit,
            exec,
        }
    }

    fn events(audit: &Path) -> Vec<Value> {
        crate::audit::file::files(audit)
            .iter()
            .flat_map(|f| {
                std::fs::read_to_string(f)
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    async fn call(f: &Fixture, tool: &str, args: Value) -> ToolResponse {
        f.exec
            .call(tool, args, CallContext::new("tester", Transport::Stdio))
            .await
    }

    #[tokio::test]
    async fn bad_input_names_its_field_and_is_audited_once() {
        let f = fixture();
        let r = call(&f, "terraform_plan", json!({"path": 5})).await;
        assert!(r.is_error);
        assert_eq!(r.structured["error"]["kind"], "validation");
        assert!(r.text.contains("/path"), "{}", r.text);
        let r = call(&f, "terraform_plan", json!({"path": "../zzqx-name"})).await;
        assert!(r.is_error);
        assert_eq!(r.structured["error"]["kind"], "confinement");
        let r = call(&f, "terraform_console", json!({})).await;
        assert!(r.is_error);
        assert_eq!(r.structured["error"]["kind"], "policy");
        let tool_events: Vec<Value> = events(&f.audit)
            .into_iter()
            .filter(|e| e.get("tool").is_some())
            .collect();
        assert_eq!(tool_events.len(), 3, "{tool_events:?}");
        // The path the caller gave is never recorded for a refused confinement.
        let text = serde_json::to_string(&tool_events).unwrap();
        assert!(!text.contains("zzqx"), "{text}");
    }

    #[tokio::test]
    async fn apply_is_refused_unless_enabled_and_listed_only_then() {
        let f = fixture();
        let names: Vec<&str> = f
            .exec
            .listed_tools()
            .iter()
            .map(|(k, _)| k.name())
            .collect();
        assert!(!names.contains(&"terraform_apply"));
        assert!(
            !names.contains(&"github_prepare_workspace"),
            "no source configured"
        );
        let r = call(
            &f,
            "terraform_apply",
            json!({"path": "ws", "plan_id": "0123456789abcdef0123456789abcdef"}),
        )
        .await;
        assert!(r.is_error);
        assert_eq!(r.structured["error"]["kind"], "policy");
    }
}

#[cfg(test)]
mod skeleton_tests {
    use super::*;

    #[test]
    fn skeletons_go_to_memory_only_into_a_directory_of_our_own() {
        let Ok(shm) = tempfile::tempdir_in("/dev/shm") else {
            eprintln!("no /dev/shm here");
            return;
        };
        // SAFETY: a plain getter.
        let uid = unsafe { libc::geteuid() };
        let dir = skeleton_dir_in(shm.path()).expect("a tmpfs directory of our own");
        assert!(
            dir.path
                .starts_with(shm.path().join(format!("terrarium-{uid}")))
        );
        // Not on a tmpfs: the runs dir instead.
        assert!(skeleton_dir_in(Path::new(env!("CARGO_MANIFEST_DIR"))).is_none());
        // A link planted where the directory goes, or a directory open to others: refused.
        let other = tempfile::tempdir_in("/dev/shm").unwrap();
        let planted = tempfile::tempdir_in("/dev/shm").unwrap();
        std::os::unix::fs::symlink(
            other.path(),
            planted.path().join(format!("terrarium-{uid}")),
        )
        .unwrap();
        assert!(skeleton_dir_in(planted.path()).is_none());
        let open = tempfile::tempdir_in("/dev/shm").unwrap();
        let base = open.path().join(format!("terrarium-{uid}"));
        std::fs::create_dir(&base).unwrap();
        std::fs::set_permissions(&base, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        assert!(skeleton_dir_in(open.path()).is_none());
    }
}
