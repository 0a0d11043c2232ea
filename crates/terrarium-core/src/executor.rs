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
use tokio::sync::{Notify, OwnedMutexGuard, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::audit::{AuditError, Auditor, ToolEvent, rfc3339_now};
use crate::call::{CallContext, ToolResponse, Transport};
use crate::config::Config;
use crate::plans::{
    PlanError, PlanOwner, PlanStore, Requester, create_private_dir, write_private_file,
};
use crate::policy::{self, PolicyError};
use crate::redact::Redactor;
use crate::sandbox::access::{Grant, RunAccess};
use crate::sandbox::env::{self, RunDirs};
use crate::sandbox::{
    KernelSandbox, RunOutcome, RunPlace, RunSpec, Runner, SandboxError, SpawnError, StreamLine,
};
use crate::schema::{FieldError, SchemaError, Schemas};
use crate::secrets::SecretStore;
use crate::source::WorkspaceSource;
use crate::terraform::{Invocation, stream};
use crate::tools::{self, ToolKind, ToolOutput};
use crate::workspace::{FileId, Workspace, WorkspaceError, WorkspaceRoot};

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
    config: Arc<Config>,
    schemas: Schemas,
    root: WorkspaceRoot,
    plans: PlanStore,
    /// Secret values remembered per workspace (see `secrets`).
    secrets: SecretStore,
    runner: Arc<dyn Runner>,
    audit: Arc<Auditor>,
    host_env: BTreeMap<String, String>,
    /// Per-workspace locks, keyed by the directory's identity (two names, one lock).
    locks: Mutex<HashMap<FileId, Arc<tokio::sync::Mutex<()>>>>,
    slots: Arc<Semaphore>,
    /// Each principal's share of `slots` (`max_runs_per_principal`), taken before a global slot
    /// so that one caller's queued runs wait behind its own share, not in front of others.
    principal_slots: Mutex<HashMap<String, Arc<Semaphore>>>,
    runs_dir: PathBuf,
    /// Holds this instance's lock on `runs_dir` for its whole life.
    _runs: RunsDir,
    plugin_cache: PathBuf,
    sandbox: KernelSandbox,
    /// The policy in force; replaced by [`Executor::reload_policy`] (SIGHUP).
    policy: std::sync::RwLock<Arc<crate::policy::Policy>>,
    /// Cancelled when the server shuts down: every run in flight is interrupted.
    shutdown: CancellationToken,
    in_flight: AtomicUsize,
    idle: Notify,
    /// Where `github_prepare_workspace` fetches from, when the binary configured one.
    source: Option<Arc<dyn WorkspaceSource>>,
}

impl Executor {
    /// `host_env` is the server's environment, the only source of pass-through credentials.
    pub fn new(
        config: Config,
        runner: Arc<dyn Runner>,
        host_env: BTreeMap<String, String>,
        source: Option<Arc<dyn WorkspaceSource>>,
    ) -> Result<Executor, StartError> {
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
        let sandbox = KernelSandbox::new(&config);
        Ok(Executor {
            source,
            policy: std::sync::RwLock::new(Arc::new(policy)),
            shutdown: CancellationToken::new(),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            sandbox,
            schemas: Schemas::load()?,
            root,
            plans,
            secrets,
            runner,
            audit,
            host_env,
            locks: Mutex::new(HashMap::new()),
            slots: Arc::new(Semaphore::new(config.max_concurrent_runs)),
            principal_slots: Mutex::new(HashMap::new()),
            runs_dir,
            _runs: runs,
            plugin_cache,
            config: Arc::new(config),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The workspace root, held open.
    pub fn root(&self) -> &WorkspaceRoot {
        &self.root
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
        &self.sandbox
    }

    fn sandbox_report(&self) -> Value {
        let layers: Map<String, Value> = self
            .sandbox
            .layers()
            .iter()
            .map(|l| {
                let state = l.state(self.sandbox.mode());
                (l.name.to_string(), json!(state))
            })
            .collect();
        json!({"mode": self.sandbox.mode().as_str(), "layers": layers, "teardown": self.sandbox.teardown(), "warnings": self.sandbox.warnings()})
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
                    &self.config,
                    &self.policy(),
                    k.name(),
                    self.source.is_some(),
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
            exec: self,
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
        for v in env::passthrough_values(&self.config, &self.host_env) {
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
        policy::check_tool(&self.config, &self.policy(), tool, self.source.is_some())?;
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
                *workspace = self.root.workspace("path", path).ok();
            }
            return Ok(out);
        }
        let path = arguments
            .get("path")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if kind.hints().destructive {
            // Fail closed: nothing that changes infrastructure runs unless it can be audited.
            self.audit.healthy()?;
        }
        let ws = self.root.workspace("path", path)?;
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
            r = tokio::time::timeout(self.config.queue_wait, lock.lock_owned()) => {
                r.map_err(|_| ToolError::Busy(ws.relative.clone()))
            }
            _ = cancel.cancelled() => Err(ToolError::Busy(ws.relative.clone())),
        }
    }

    /// A run slot: first one of `principal`'s share, then one of the global slots, both within
    /// `queue_wait`. The two permits are held together for the run.
    async fn run_slot(
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
            let warnings = self.sandbox.warnings();
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
        self.policy
            .read()
            .map(|p| p.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Re-reads the policy file (SIGHUP). On error the old policy stays in force.
    pub fn reload_policy(&self) -> Result<(), crate::policy::PolicyFileError> {
        let fresh = crate::policy::Policy::load(self.config.policy_file.as_deref())?;
        match self.policy.write() {
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
        self.wait_idle(self.config.kill_grace + Duration::from_secs(5))
            .await;
        interrupted
    }
}

/// Bound on JSON documents the server reads from terraform for itself.
const INTERNAL_OUTPUT_LIMIT: usize = 64 << 20;

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// What a tool may use while it runs: the configuration, the confinement, the plan store, a
/// redactor it can add secrets to, and terraform runs through the sandbox.
pub struct RunCtx<'a> {
    exec: &'a Executor,
    call: &'a CallContext,
    redactor: Mutex<Redactor>,
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

/// An exclusive, non-blocking `flock`; held until the file is closed.
fn try_lock(f: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor we own.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

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

/// The mount skeleton of one spawn, removed (without crossing file systems) when the run is
/// over, whatever happened.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        // std's removal works by descriptor and never follows a link; nothing is mounted here
        // in the server's namespace (the run's mounts lived in its own).
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A run's private directory (HOME, TMPDIR, CLI config, generated var files); removed on drop.
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes a private file into the run dir and returns its absolute path.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<PathBuf, ToolError> {
        let p = self.path.join(name);
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
            &self.path,
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

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

impl RunCtx<'_> {
    pub fn config(&self) -> &Config {
        &self.exec.config
    }

    pub fn root(&self) -> &WorkspaceRoot {
        &self.exec.root
    }

    pub fn plans(&self) -> &PlanStore {
        &self.exec.plans
    }

    /// Where workspaces can be fetched from, when configured.
    pub fn source(&self) -> Option<&dyn WorkspaceSource> {
        self.exec.source.as_deref()
    }

    /// Fires when the caller cancels or the server shuts down.
    pub fn cancel_token(&self) -> &CancellationToken {
        &self.call.cancel
    }

    /// For tools that create a workspace: may this caller use a workspace at `relative`?
    pub fn check_workspace_grant(&self, relative: &str) -> Result<(), ToolError> {
        let kind = crate::tools::ToolKind::Plan;
        policy::check_access(
            &self.exec.policy(),
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
        self.exec.policy()
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
                &self.exec.policy(),
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
        let path = self
            .exec
            .runs_dir
            .join(uuid::Uuid::new_v4().simple().to_string());
        for sub in ["", "home", "tmp"] {
            create_private_dir(&path.join(sub))
                .map_err(|e| ToolError::Internal(format!("creating run dir: {e}")))?;
        }
        let dir = RunDir { path };
        dir.write(
            "terraform.rc",
            env::cli_config(&self.exec.plugin_cache).as_bytes(),
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
            self.exec.config.output_limit_bytes,
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
        let _slot = self.exec.run_slot(&self.call.principal).await?;
        let cfg = &self.exec.config;
        let home = dir.path.join("home");
        let tmp = dir.path.join("tmp");
        let cli_config = dir.path.join("terraform.rc");
        let env = env::build(
            cfg,
            &self.exec.host_env,
            &RunDirs {
                home: &home,
                tmp: &tmp,
                cli_config: &cli_config,
                plugin_cache: &self.exec.plugin_cache,
            },
        );
        // What this run may touch: its workspace and private dir, terraform itself, the plugin
        // cache (written only by init), and the network only for actions that need it.
        let network = matches!(inv.subcommand, "init" | "plan" | "apply");
        // The working directory: the workspace by the descriptor that was checked.
        let cwd_grant = match cwd {
            Cwd::Workspace(ws) => Grant::Held {
                fd: ws.fd().clone(),
                path: ws.dir.clone(),
            },
            Cwd::RunDir => Grant::Path(dir.path.clone()),
        };
        let mut access = RunAccess {
            read_write: vec![Grant::Path(dir.path.clone())],
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
            && let Some(tree) = crate::source::trusted_tree(&self.exec.root, &ws.relative)
        {
            access.read_only.push(Grant::Held {
                fd: tree.fd().clone(),
                path: tree.dir.clone(),
            });
        }
        let cache = Grant::Path(self.exec.plugin_cache.clone());
        if inv.subcommand == "init" {
            access.read_write.push(cache);
        } else {
            access.read_exec.push(cache);
        }
        let scratch = Scratch(
            self.exec
                .runs_dir
                .join(format!("{}.mnt", uuid::Uuid::new_v4().simple())),
        );
        let setup = self.exec.sandbox.setup(
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
            .exec
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
