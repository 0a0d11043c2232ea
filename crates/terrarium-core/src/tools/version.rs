//! `terraform_version`: which terraform this server runs.

use serde_json::{Value, json};

use super::{ToolOutput, from_run, stdout_json};
use crate::run::{RunCtx, ToolError};
use crate::terraform::Invocation;
use crate::terraform::Subcommand;

pub(super) async fn run(ctx: &RunCtx<'_>) -> Result<ToolOutput, ToolError> {
    let inv = Invocation::new(Subcommand::Version).flag("json");
    let dir = ctx.run_dir()?;
    // Runs in its private dir: it needs no workspace.
    let outcome = ctx
        .terraform(crate::run::Cwd::RunDir, &dir, &inv, false)
        .await?;
    let v = if outcome.success() {
        stdout_json(&outcome, "terraform version")?
    } else {
        Value::Null
    };
    let version = v
        .get("terraform_version")
        .and_then(Value::as_str)
        .map(String::from);
    let text = match &version {
        Some(ver) => format!("Terraform v{ver}"),
        None => String::new(),
    };
    let mut out = from_run(outcome, &inv, text);
    out.data.insert("terraform_version".into(), json!(version));
    out.data.insert(
        "platform".into(),
        v.get("platform").cloned().unwrap_or(Value::Null),
    );
    Ok(out)
}
