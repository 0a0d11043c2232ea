//! `terraform_validate`: configuration checks, with structured diagnostics.

use serde_json::{Value, json};

use super::{ToolOutput, from_run};
use crate::run::{RunCtx, ToolError};
use crate::terraform::Subcommand;
use crate::terraform::{Invocation, stream};
use crate::workspace::Workspace;

pub(super) async fn run(ctx: &RunCtx<'_>, ws: &Workspace) -> Result<ToolOutput, ToolError> {
    let inv = Invocation::new(Subcommand::Validate)
        .flag("json")
        .flag("no-color");
    let dir = ctx.run_dir()?;
    let outcome = ctx.terraform(ws, &dir, &inv, false).await?;
    let parsed: Option<Value> = serde_json::from_str(outcome.stdout.text.trim()).ok();
    let Some(v) = parsed else {
        // Not JSON: terraform failed before validating (for instance, not initialized).
        return Ok(from_run(outcome, &inv, String::new()));
    };
    let diagnostics: Vec<stream::Diagnostic> = v
        .get("diagnostics")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(stream::diagnostic).collect())
        .unwrap_or_default();
    let valid = v.get("valid").and_then(Value::as_bool).unwrap_or(false);
    let mut text = if valid {
        "The configuration is valid.".to_string()
    } else {
        "The configuration is invalid.".to_string()
    };
    for d in &diagnostics {
        text.push_str(&format!("\n{}: {}", d.severity, d.summary));
        if !d.detail.is_empty() {
            text.push_str(&format!(" — {}", d.detail));
        }
    }
    let mut out = from_run(outcome, &inv, text);
    // The parsed diagnostics below replace the raw JSON.
    if let Some(r) = out.run.as_mut() {
        r.stdout.text = String::new();
    }
    out.data.insert("valid".into(), json!(valid));
    out.data.insert(
        "error_count".into(),
        v.get("error_count").cloned().unwrap_or(json!(0)),
    );
    out.data.insert(
        "warning_count".into(),
        v.get("warning_count").cloned().unwrap_or(json!(0)),
    );
    out.data.insert("diagnostics".into(), json!(diagnostics));
    Ok(out)
}
