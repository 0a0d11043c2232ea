//! `terraform_show`: the current state, or a saved plan, with sensitive values redacted (and the
//! secrets remembered with the plan and the workspace, which the executor loads).

use serde::Deserialize;
use serde_json::{Value, json};

use super::{ToolOutput, from_run, stdout_json};
use crate::run::{RunCtx, ToolError};
use crate::terraform::Subcommand;
use crate::terraform::{Invocation, plan_summary, state};
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
    if let Some(id) = &args.plan_id {
        // The saved plan with its values (sensitive ones masked, unknown ones marked), from the
        // full JSON plan: made at most once per plan (by the first show or the apply), then
        // read from beside the plan. The plan's secrets are masked before anything is shown.
        let who = ctx.plan_requester(crate::policy::PlanUse::Show);
        let crate::plans::VerifiedPlan {
            record,
            bytes,
            secrets,
        } = ctx.plans().verify(id, &ws.relative, &who)?;
        ctx.add_secrets(&secrets);
        let (plan, run) = super::plan::full_plan_run(ctx, ws, id, &bytes).await?;
        let details = plan_summary::detailed_changes(&plan);
        // The counts of the plan itself, the same source as the details (the recorded summary
        // is from the plan run's stream).
        let summary = plan_summary::summarize(&plan, record.summary.destroy_mode)
            .map_err(|e| ToolError::Terraform(e.to_string()))?;
        let c = &summary.counts;
        let mut text = format!(
            "Plan {id}: {} to add, {} to change, {} to destroy.",
            c.add, c.change, c.destroy
        );
        for rc in details["resource_changes"].as_array().into_iter().flatten() {
            let actions: Vec<&str> = rc["actions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            text.push_str(&format!(
                "\n  {} {}",
                actions.join("/"),
                rc["address"].as_str().unwrap_or_default()
            ));
        }
        for (name, o) in details["output_changes"].as_object().into_iter().flatten() {
            text.push_str(&format!("\n  output {name} = {}", o["after"]));
        }
        // When terraform ran, its run is reported like any other (exit code, stderr, sandbox
        // state, a sandbox that is not strict stated in the text); its stdout was emptied.
        let mut out = ToolOutput {
            success: true,
            text,
            action: Some(format!("show saved plan {id}")),
            run,
            ..ToolOutput::default()
        };
        out.data.insert("plan_id".into(), json!(id));
        out.data.insert("summary".into(), json!(summary));
        out.data.insert("plan".into(), details);
        out.plan_id = Some(id.clone());
        return Ok(out);
    }
    let dir = ctx.run_dir()?;
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
