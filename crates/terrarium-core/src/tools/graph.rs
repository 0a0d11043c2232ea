//! `terraform_graph`: the dependency graph in DOT.

use serde::Deserialize;
use serde_json::json;

use super::ToolOutput;
use crate::run::{RunCtx, ToolError};
use crate::terraform::Invocation;
use crate::terraform::Subcommand;
use crate::workspace::Workspace;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Args {
    #[serde(rename = "type")]
    graph_type: Option<GraphType>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum GraphType {
    Plan,
    PlanRefreshOnly,
    PlanDestroy,
    Apply,
}

impl GraphType {
    fn flag(self) -> &'static str {
        match self {
            GraphType::Plan => "plan",
            GraphType::PlanRefreshOnly => "plan-refresh-only",
            GraphType::PlanDestroy => "plan-destroy",
            GraphType::Apply => "apply",
        }
    }
}

pub(super) async fn run(
    ctx: &RunCtx<'_>,
    ws: &Workspace,
    args: Args,
) -> Result<ToolOutput, ToolError> {
    let mut inv = Invocation::new(Subcommand::Graph);
    if let Some(t) = args.graph_type {
        inv = inv.value("type", t.flag());
    }
    let mut out = super::simple(ctx, ws, inv).await?;
    let dot = out
        .run
        .as_ref()
        .map(|r| r.stdout.text.clone())
        .unwrap_or_default();
    out.data.insert("dot".into(), json!(dot));
    Ok(out)
}
