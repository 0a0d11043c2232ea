//! `github_prepare_workspace`: a repository on GitHub, at a ref, as a fresh workspace.

use serde::Deserialize;
use serde_json::json;

use super::ToolOutput;
use crate::executor::{RunCtx, ToolError};
use crate::github::{self, GitHubError, RepoName, fetch};

#[derive(Debug, Deserialize)]
pub struct Args {
    owner: String,
    repo: String,
    #[serde(rename = "ref")]
    reference: String,
    #[serde(default)]
    subdir: Option<String>,
}

pub async fn run(ctx: &RunCtx<'_>, args: Args) -> Result<ToolOutput, ToolError> {
    let gh = ctx.github().ok_or(GitHubError::NotConfigured)?;
    let repo = RepoName::new(&args.owner, &args.repo)?;
    github::check_ref(&args.reference)?;
    let client = gh.repo(&repo, None).await?;
    let (_, relative) = fetch::fresh_dir(
        ctx.root().path(),
        fetch::PREPARED_DIR,
        &repo,
        &args.reference,
    );
    // A caller limited to some workspaces may only create one where they could use it.
    ctx.check_workspace_grant(&relative)?;
    let stats = fetch::fetch_into(
        &client,
        &args.reference,
        ctx.root().path(),
        &relative,
        gh.config(),
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
                    fetch::remove_tree(ctx.root().path(), &relative);
                    return Err(GitHubError::NoSubdir(sub.clone()).into());
                }
            }
        }
    };
    let mut out = ToolOutput {
        success: true,
        text: format!(
            "Fetched {repo}@{} ({} files, {} bytes) into workspace {path}",
            args.reference, stats.files, stats.bytes
        ),
        action: Some(format!("github archive {repo}@{}", args.reference)),
        ..ToolOutput::default()
    };
    out.data.insert("path".into(), json!(path));
    out.data.insert("repository".into(), json!(repo.full()));
    out.data.insert("ref".into(), json!(args.reference));
    out.data.insert("files".into(), json!(stats.files));
    out.data.insert("bytes".into(), json!(stats.bytes));
    Ok(out)
}
