//! `github_prepare_workspace`: a repository on GitHub, at a ref, as a fresh workspace.
//!
//! The tool decides where the tree goes and checks the caller may use that place; the
//! [`WorkspaceSource`](crate::source::WorkspaceSource) the binary configured downloads and
//! extracts it.

use serde::Deserialize;
use serde_json::json;

use super::ToolOutput;
use crate::policy::PolicyError;
use crate::run::{RunCtx, ToolError};
use crate::source::{self, SourceError};

#[derive(Debug, Deserialize)]
pub(super) struct Args {
    owner: String,
    repo: String,
    #[serde(rename = "ref")]
    reference: String,
    #[serde(default)]
    subdir: Option<String>,
}

pub(super) async fn run(ctx: &RunCtx<'_>, args: Args) -> Result<ToolOutput, ToolError> {
    let src = ctx.source().ok_or(PolicyError::GitHubNotConfigured)?;
    let checked = src.check(&args.owner, &args.repo, &args.reference)?;
    let relative = source::fresh_dir(source::PREPARED_DIR, &checked);
    // A caller limited to some workspaces may only create one where they could use it.
    ctx.check_workspace_grant(&relative)?;
    let stats = src
        .fetch(
            &checked,
            ctx.root().path(),
            &relative,
            ctx.config().timeout,
            ctx.cancel_token(),
        )
        .await?;
    let path = match &args.subdir {
        None => relative.clone(),
        Some(sub) => {
            let candidate = format!("{relative}/{}", sub.trim_end_matches('/'));
            // Confined to the extracted tree, not merely to the root: the resolved (canonical,
            // links followed) relative path must still lie in the tree.
            let inside = ctx
                .root()
                .workspace("subdir", &candidate)
                .ok()
                .filter(|ws| {
                    ws.relative == relative || ws.relative.starts_with(&format!("{relative}/"))
                });
            match inside {
                Some(ws) => ws.relative,
                None => {
                    source::remove_tree(ctx.root().path(), &relative);
                    return Err(SourceError {
                        kind: "github",
                        message: format!("subdir {sub:?} does not exist in the repository archive"),
                        audit: "subdir does not exist in the repository archive".into(),
                    }
                    .into());
                }
            }
        }
    };
    let repo = checked.full();
    let mut out = ToolOutput {
        success: true,
        text: format!(
            "Fetched {repo}@{} ({} files, {} bytes) into workspace {path}",
            checked.reference, stats.files, stats.bytes
        ),
        // The audit trail's `command`: the shape, never the caller's values.
        action: Some("github archive".into()),
        ..ToolOutput::default()
    };
    out.data.insert("path".into(), json!(path));
    out.data.insert("repository".into(), json!(repo));
    out.data.insert("ref".into(), json!(checked.reference));
    out.data.insert("files".into(), json!(stats.files));
    out.data.insert("bytes".into(), json!(stats.bytes));
    Ok(out)
}
