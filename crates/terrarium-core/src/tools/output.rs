//! `terraform_output`: root module outputs, sensitive ones redacted.
//!
//! Always reads all outputs as JSON and picks one here: `terraform output -json NAME` would
//! print a sensitive value in the clear.

use serde::Deserialize;
use serde_json::{Value, json};

use super::{ToolOutput, from_run, stdout_json};
use crate::run::{RunCtx, ToolError};
use crate::terraform::Subcommand;
use crate::terraform::{Invocation, state};
use crate::workspace::Workspace;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Args {
    name: Option<String>,
}

pub(super) async fn run(
    ctx: &RunCtx<'_>,
    ws: &Workspace,
    args: Args,
) -> Result<ToolOutput, ToolError> {
    let inv = Invocation::new(Subcommand::Output)
        .flag("json")
        .flag("no-color");
    let dir = ctx.run_dir()?;
    let outcome = ctx.terraform_json(ws, &dir, &inv).await?;
    if !outcome.success() {
        return Ok(from_run(outcome, &inv, String::new()));
    }
    let raw = stdout_json(&outcome, "terraform output")?;
    let mut outputs = state::outputs(&raw);
    if let Some(name) = &args.name {
        let Some(one) = outputs.remove(name) else {
            return Err(ToolError::Terraform(format!(
                "name: the workspace has no output named {name:?} (it has: {})",
                outputs.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        };
        outputs = [(name.clone(), one)].into_iter().collect();
    }
    let text = if outputs.is_empty() {
        "No outputs.".to_string()
    } else {
        outputs
            .iter()
            .map(|(k, v)| format!("{k} = {}", v.get("value").map(render).unwrap_or_default()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut out = from_run(outcome, &inv, text);
    // The raw JSON on stdout holds sensitive values; only the redacted map is returned.
    if let Some(r) = out.run.as_mut() {
        r.stdout.text = String::new();
    }
    out.data.insert("outputs".into(), json!(outputs));
    Ok(out)
}

fn render(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}
