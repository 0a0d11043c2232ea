//! One file per tool, like mini-redis's `cmd/`: each turns its typed arguments into terraform
//! invocations through [`RunCtx`] and shapes the answer. The registry here is the one list of
//! what exists; nothing else is reachable.

mod apply;
mod fmt;
mod github_prepare;
mod graph;
mod init;
pub mod kind;
mod output;
mod plan;
mod providers;
mod show;
mod validate;
mod version;
mod workspace_list;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::run::{RunCtx, ToolError};
use crate::sandbox::RunOutcome;
use crate::schema::FieldError;
use crate::terraform::Invocation;
use crate::workspace::Workspace;

pub use kind::{Hints, ToolKind};

/// What a tool produced, before the executor adds the common fields, redacts and audits.
#[derive(Debug, Default)]
pub struct ToolOutput {
    pub success: bool,
    /// Tool-specific structured fields.
    pub data: Map<String, Value>,
    /// Readable text for the content block.
    pub text: String,
    /// The terraform run that decides the outcome, if any.
    pub run: Option<RunOutcome>,
    pub action: Option<String>,
    pub plan_id: Option<String>,
    pub resources_affected: Option<Value>,
    /// Names (never values) of the variables the call passed, for the audit trail.
    pub variables: Vec<String>,
}

pub async fn run(
    kind: ToolKind,
    ctx: &RunCtx<'_>,
    ws: Option<&Workspace>,
    mut arguments: Value,
) -> Result<ToolOutput, ToolError> {
    // The workspace was resolved from `path` (by descriptor) before the tool runs: the tool
    // gets that, never the caller's string, so its arguments do not carry it.
    if ws.is_some()
        && let Some(args) = arguments.as_object_mut()
    {
        args.remove("path");
    }
    let need_ws = || ws.ok_or_else(|| ToolError::Internal("tool needs a workspace".into()));
    match kind {
        ToolKind::WorkspaceList => workspace_list::run(ctx),
        ToolKind::Version => version::run(ctx).await,
        ToolKind::Init => init::run(ctx, need_ws()?, parse(arguments)?).await,
        ToolKind::Validate => validate::run(ctx, need_ws()?).await,
        ToolKind::Fmt => fmt::run(ctx, need_ws()?, parse(arguments)?).await,
        ToolKind::Plan => plan::run(ctx, need_ws()?, parse(arguments)?).await,
        ToolKind::Show => show::run(ctx, need_ws()?, parse(arguments)?).await,
        ToolKind::Output => output::run(ctx, need_ws()?, parse(arguments)?).await,
        ToolKind::Graph => graph::run(ctx, need_ws()?, parse(arguments)?).await,
        ToolKind::Providers => providers::run(ctx, need_ws()?).await,
        ToolKind::Apply => apply::run(ctx, need_ws()?, parse(arguments)?).await,
        ToolKind::GitHubPrepare => github_prepare::run(ctx, parse(arguments)?).await,
    }
}

/// `#[serde(default = "super::yes")]`: a flag that is on unless the caller turns it off.
fn yes() -> bool {
    true
}

/// Typed arguments. The schema has already accepted them, so a failure here is a mismatch
/// between a schema file and its struct; it is still reported as a field error.
fn parse<T: DeserializeOwned>(arguments: Value) -> Result<T, ToolError> {
    serde_json::from_value(arguments).map_err(|e| {
        ToolError::Validation(vec![FieldError {
            pointer: String::new(),
            message: e.to_string(),
        }])
    })
}

/// Runs one invocation with a fresh private run dir and wraps the outcome.
async fn simple(
    ctx: &RunCtx<'_>,
    ws: &Workspace,
    inv: Invocation,
) -> Result<ToolOutput, ToolError> {
    let dir = ctx.run_dir()?;
    let outcome = ctx.terraform(ws, &dir, &inv, false).await?;
    Ok(from_run(outcome, &inv, String::new()))
}

/// The common shape: success from the exit code, the text from stdout unless the tool gave one.
fn from_run(outcome: RunOutcome, inv: &Invocation, text: String) -> ToolOutput {
    let text = if text.is_empty() {
        outcome.stdout.text.trim_end().to_string()
    } else {
        text
    };
    ToolOutput {
        success: outcome.success(),
        text,
        action: Some(inv.describe()),
        run: Some(outcome),
        ..ToolOutput::default()
    }
}

/// Parses a run's stdout as JSON, with a clear error when terraform printed something else.
fn stdout_json(outcome: &RunOutcome, what: &str) -> Result<Value, ToolError> {
    serde_json::from_str(outcome.stdout.text.trim()).map_err(|e| {
        ToolError::Terraform(format!(
            "{what}: terraform did not print JSON ({e}); exit code {:?}; stderr: {}",
            outcome.exit_code,
            outcome.stderr.text.trim()
        ))
    })
}

/// Diagnostics as readable lines, for the text block of a failed run.
fn diagnostics_text(diagnostics: &[crate::terraform::stream::Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(|d| {
            let mut line = format!("{}: {}", d.severity, d.summary);
            if !d.detail.is_empty() {
                line.push_str(&format!(" — {}", d.detail));
            }
            line
        })
        .collect::<Vec<_>>()
        .join("\n")
}
