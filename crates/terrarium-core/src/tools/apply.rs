//! `terraform_apply`: exactly one saved plan, exactly once.
//!
//! Order matters: verify (without consuming; a plan another caller made is refused unless the
//! policy allows it) → policy (a refused plan stays usable) → take (consumed, re-hashed) → apply
//! the verified bytes from the run's private dir, with the plan's secrets masked.

use serde::Deserialize;
use serde_json::{Value, json};

use super::{ToolOutput, diagnostics_text, from_run};
use crate::policy;
use crate::run::{RunCtx, ToolError};
use crate::terraform::Subcommand;
use crate::terraform::{Invocation, plan_summary, state, stream};
use crate::workspace::Workspace;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Args {
    plan_id: String,
}

pub(super) async fn run(
    ctx: &RunCtx<'_>,
    ws: &Workspace,
    args: Args,
) -> Result<ToolOutput, ToolError> {
    let who = ctx.plan_requester(policy::PlanUse::Apply);
    let verified = ctx.plans().verify(&args.plan_id, &ws.relative, &who)?;
    // The plan holds the variables of the call that made it; whatever the apply prints of them
    // is masked here, and the executor remembers them with the workspace (they go into state).
    ctx.add_secrets(&verified.secrets);
    // The rules are checked against the summary recorded at plan time first (a refusal costs
    // no terraform process), then against the full JSON plan of the exact bytes that will be
    // applied: workspace code running during the plan could have swapped the plan file after
    // terraform wrote its stream, so the stream's summary alone is not proof of what the bytes
    // do. The full plan (made once per plan; cached if the plan was shown) also names the
    // secret variable values, masked before anything is applied. No JSON plan, no apply.
    let recorded = &verified.record.summary;
    policy::check_apply(ctx.config().enable_destroy, &ctx.policy(), recorded)?;
    let full = super::plan::full_plan(ctx, ws, &args.plan_id, &verified.bytes).await?;
    let actual = plan_summary::summarize(&full, recorded.destroy_mode)
        .map_err(|e| ToolError::Terraform(e.to_string()))?;
    if !actual.same_changes(recorded) {
        return Err(crate::plans::PlanError::Mismatch.into());
    }
    policy::check_apply(ctx.config().enable_destroy, &ctx.policy(), &actual)?;
    let taken = ctx.plans().take(&args.plan_id, &ws.relative, &who)?;
    let dir = ctx.run_dir()?;
    let plan_file = dir.write("plan.tfplan", &taken.bytes)?;
    let inv = Invocation::new(Subcommand::Apply)
        .flag("input=false")
        .flag("no-color")
        .flag("json")
        .path(plan_file);
    let outcome = ctx.terraform(ws, &dir, &inv, true).await?;
    let report = stream::parse(&outcome.stdout.text);
    let messages = report.messages.join("\n");
    let changes = report.change_summary.clone().unwrap_or(Value::Null);
    let outputs = report
        .outputs
        .as_ref()
        .map(state::outputs)
        .unwrap_or_default();
    let affected = json!({
        "add": changes.get("add").cloned().unwrap_or(json!(0)),
        "change": changes.get("change").cloned().unwrap_or(json!(0)),
        "destroy": changes.get("remove").cloned().unwrap_or(json!(0)),
    });
    let text = if outcome.success() {
        format!(
            "Applied plan {}: {} added, {} changed, {} destroyed.\n\n{messages}",
            args.plan_id, affected["add"], affected["change"], affected["destroy"]
        )
    } else {
        format!(
            "Applying plan {} failed.\n{}\n\n{messages}",
            args.plan_id,
            diagnostics_text(&report.diagnostics)
        )
    };
    let mut out = from_run(outcome, &inv, text);
    if let Some(r) = out.run.as_mut() {
        r.stdout.text = messages;
    }
    out.data.insert("plan_id".into(), json!(args.plan_id));
    out.data
        .insert("resources_affected".into(), affected.clone());
    out.data.insert("outputs".into(), json!(outputs));
    out.data
        .insert("diagnostics".into(), json!(report.diagnostics));
    out.plan_id = Some(args.plan_id);
    out.resources_affected = Some(affected);
    Ok(out)
}
