//! One file per tool, like mini-redis's `cmd/`: each turns its typed arguments into terraform
//! invocations through [`RunCtx`] and shapes the answer. The registry here is the one list of
//! what exists; nothing else is reachable.

mod apply;
mod fmt;
mod github_prepare;
mod graph;
mod init;
mod output;
mod plan;
mod providers;
mod show;
mod validate;
mod version;
mod workspace_list;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::executor::{RunCtx, ToolError};
use crate::sandbox::RunOutcome;
use crate::schema::FieldError;
use crate::terraform::Invocation;
use crate::workspace::Workspace;

/// Every tool, in the order `tools/list` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ToolKind {
    WorkspaceList,
    Version,
    Init,
    Validate,
    Fmt,
    Plan,
    Show,
    Output,
    Graph,
    Providers,
    Apply,
    GitHubPrepare,
}

/// MCP tool annotations. They must tell the truth: clients decide on confirmation prompts
/// from them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hints {
    pub read_only: bool,
    pub destructive: bool,
    pub idempotent: bool,
    pub open_world: bool,
}

impl ToolKind {
    pub const ALL: &'static [ToolKind] = &[
        ToolKind::WorkspaceList,
        ToolKind::Version,
        ToolKind::Init,
        ToolKind::Validate,
        ToolKind::Fmt,
        ToolKind::Plan,
        ToolKind::Show,
        ToolKind::Output,
        ToolKind::Graph,
        ToolKind::Providers,
        ToolKind::Apply,
        ToolKind::GitHubPrepare,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ToolKind::WorkspaceList => "workspace_list",
            ToolKind::Version => "terraform_version",
            ToolKind::Init => "terraform_init",
            ToolKind::Validate => "terraform_validate",
            ToolKind::Fmt => "terraform_fmt",
            ToolKind::Plan => "terraform_plan",
            ToolKind::Show => "terraform_show",
            ToolKind::Output => "terraform_output",
            ToolKind::Graph => "terraform_graph",
            ToolKind::Providers => "terraform_providers",
            ToolKind::Apply => "terraform_apply",
            ToolKind::GitHubPrepare => "github_prepare_workspace",
        }
    }

    pub fn from_name(name: &str) -> Option<ToolKind> {
        ToolKind::ALL.iter().copied().find(|k| k.name() == name)
    }

    pub fn title(self) -> &'static str {
        match self {
            ToolKind::WorkspaceList => "List workspaces",
            ToolKind::Version => "Terraform version",
            ToolKind::Init => "terraform init",
            ToolKind::Validate => "terraform validate",
            ToolKind::Fmt => "terraform fmt",
            ToolKind::Plan => "terraform plan",
            ToolKind::Show => "terraform show",
            ToolKind::Output => "terraform output",
            ToolKind::Graph => "terraform graph",
            ToolKind::Providers => "terraform providers",
            ToolKind::Apply => "terraform apply (saved plan)",
            ToolKind::GitHubPrepare => "Prepare a workspace from GitHub",
        }
    }

    /// Whether the tool takes a `path` and runs inside a workspace (and so holds its lock).
    pub fn needs_workspace(self) -> bool {
        !matches!(
            self,
            ToolKind::WorkspaceList | ToolKind::Version | ToolKind::GitHubPrepare
        )
    }

    pub fn hints(self) -> Hints {
        let read = Hints {
            read_only: true,
            destructive: false,
            idempotent: true,
            open_world: false,
        };
        match self {
            ToolKind::WorkspaceList
            | ToolKind::Version
            | ToolKind::Validate
            | ToolKind::Show
            | ToolKind::Output
            | ToolKind::Graph
            | ToolKind::Providers => read,
            // Downloads modules and providers (from the cache or registries) into .terraform.
            ToolKind::Init => Hints {
                read_only: false,
                destructive: false,
                idempotent: true,
                open_world: true,
            },
            // Rewrites files only with write: true; formatting twice changes nothing more.
            ToolKind::Fmt => Hints {
                read_only: false,
                destructive: false,
                idempotent: true,
                open_world: false,
            },
            // Reads real infrastructure (refresh, data sources) and saves a plan file in the
            // server's state dir; changes nothing in the infrastructure or the workspace.
            ToolKind::Plan => Hints {
                read_only: true,
                destructive: false,
                idempotent: false,
                open_world: true,
            },
            ToolKind::Apply => Hints {
                read_only: false,
                destructive: true,
                idempotent: false,
                open_world: true,
            },
            // Creates a new directory under the root from a repository on GitHub; touches
            // nothing that exists.
            ToolKind::GitHubPrepare => Hints {
                read_only: false,
                destructive: false,
                idempotent: false,
                open_world: true,
            },
        }
    }
}

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
    arguments: Value,
) -> Result<ToolOutput, ToolError> {
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
