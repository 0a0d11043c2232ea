//! `workspace_list`: the directories under the root that hold Terraform configuration.

use serde_json::json;

use super::ToolOutput;
use crate::run::{RunCtx, ToolError};

/// Bounds on the walk, so a huge tree cannot make a call slow.
const MAX_DEPTH: usize = 8;
const MAX_ENTRIES: usize = 1000;

pub(super) fn run(ctx: &RunCtx<'_>) -> Result<ToolOutput, ToolError> {
    let policy = ctx.policy();
    let (principal, transport) = ctx.caller();
    let workspaces: Vec<String> = ctx
        .root()
        .list(MAX_DEPTH, MAX_ENTRIES)
        .into_iter()
        .filter(|w| crate::policy::workspace_visible(&policy, transport, principal, w))
        .collect();
    let text = if workspaces.is_empty() {
        "No Terraform workspaces under the workspace root.".to_string()
    } else {
        format!(
            "{} workspace(s):\n{}",
            workspaces.len(),
            workspaces.join("\n")
        )
    };
    let mut out = ToolOutput {
        success: true,
        text,
        ..ToolOutput::default()
    };
    out.data.insert("workspaces".into(), json!(workspaces));
    Ok(out)
}
