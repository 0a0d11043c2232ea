//! `terraform_show`: the current state, or a saved plan, with sensitive values redacted (and the
//! secrets remembered with the plan and the workspace, which the executor loads).

use serde::Deserialize;
use serde_json::json;

use super::{ToolOutput, from_run, stdout_json};
use crate::run::{RunCtx, ToolError};
use crate::terraform::Subcommand;
use crate::terraform::{Invocation, state};
use crate::workspace::Workspace;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Args {
    plan_id: Option<String>,
}

pub(super) async fn run(
    ctx: &RunCtx<'_>,
    ws: &Workspace,
    args: Args,
) -> Result<ToolOutput, ToolError> {
    let dir = ctx.run_dir()?;
    if let Some(id) = &args.plan_id {
        // The human rendering of the saved plan (terraform masks sensitive values in it) and
        // the summary recorded when it was made.
        let who = ctx.plan_requester(crate::policy::PlanUse::Show);
        let crate::plans::VerifiedPlan {
            record,
            bytes,
            secrets,
        } = ctx.plans().verify(id, &ws.relative, &who)?;
        ctx.add_secrets(&secrets);
        // Terraform reads a verified copy in its run dir; the plan store stays out of its reach.
        let copy = dir.write("plan.tfplan", &bytes)?;
        let inv = Invocation::new(Subcommand::Show)
            .flag("no-color")
            .path(copy);
        let outcome = ctx.terraform(ws, &dir, &inv, false).await?;
        let mut out = from_run(outcome, &inv, String::new());
        out.data.insert("plan_id".into(), json!(id));
        out.data.insert("summary".into(), json!(record.summary));
        out.plan_id = Some(id.clone());
        return Ok(out);
    }
    let inv = Invocation::new(Subcommand::Show)
        .flag("json")
        .flag("no-color");
    let outcome = ctx.terraform_json(ws, &dir, &inv).await?;
    if !outcome.success() {
        return Ok(from_run(outcome, &inv, String::new()));
    }
    let raw = stdout_json(&outcome, "terraform show -json")?;
    let summary = state::summarize_state(&raw);
    let resources = summary["resources"].as_array().cloned().unwrap_or_default();
    let mut text = format!("{} resource(s) in state.", resources.len());
    for r in &resources {
        text.push_str(&format!(
            "\n  {}",
            r["address"].as_str().unwrap_or_default()
        ));
    }
    let mut out = from_run(outcome, &inv, text);
    if let Some(r) = out.run.as_mut() {
        r.stdout.text = String::new();
    }
    out.data.insert("state".into(), summary);
    Ok(out)
}
