//! `terraform_plan`: a saved plan and what it means.
//!
//! Variables never go on the command line: they are written to a private `.tfvars.json` in the
//! run dir. Var files are read (confined to the root, size-capped) and copied there too, so
//! terraform reads exactly what was checked. The plan file goes to the server's state dir with
//! the summary read from the run's own `-json` UI stream: one terraform process per plan.
//!
//! Secrets: values of secret-named variables (from `vars` and from var files) are masked from
//! the start. The full JSON plan ([`full_plan`], made at most once per plan and only when
//! something needs it: `terraform_show` of the plan, or its apply) also names every variable
//! terraform resolved from any source that is secret-named or `sensitive` in the configuration:
//! those values are masked from then on too. A plan's stream carries no variable values except
//! in diagnostics (a `check` block's message may quote one): a plan with diagnostics has its
//! full plan made before it answers. They are saved with the plan and, through the
//! executor, with the workspace, so later calls mask them as well.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{ToolOutput, diagnostics_text, from_run, stdout_json};
use crate::plans::new_id;
use crate::redact::name_looks_secret;
use crate::run::{RunCtx, ToolError};
use crate::secrets::var_file_values;
use crate::terraform::Subcommand;
use crate::terraform::plan_summary;
use crate::terraform::{Invocation, stream};
use crate::workspace::Workspace;

/// Largest saved plan accepted from a run.
const MAX_PLAN_BYTES: u64 = 256 << 20;

/// Resource changes listed in a plan's text block (the structured result has all of them).
const TEXT_RESOURCES: usize = 50;

/// Largest var file accepted.
const MAX_VAR_FILE_BYTES: u64 = 1 << 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Args {
    #[serde(default)]
    vars: Map<String, Value>,
    #[serde(default)]
    var_files: Vec<String>,
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    destroy: bool,
    #[serde(default = "super::yes")]
    refresh: bool,
}

pub(super) async fn run(
    ctx: &RunCtx<'_>,
    ws: &Workspace,
    args: Args,
) -> Result<ToolOutput, ToolError> {
    // Every variable the caller supplied, from var files and `vars` (which win, as in terraform).
    let mut supplied: Map<String, Value> = Map::new();
    let dir = ctx.run_dir()?;
    let mut var_file_paths: Vec<PathBuf> = Vec::new();
    for (i, rel) in args.var_files.iter().enumerate() {
        let field = format!("var_files/{i}");
        // Opened by descriptor beneath the workspace's own path, and only from a directory
        // this caller may use: never by name after the check, never by the server on a path
        // workspace content chose.
        let src = ctx.root().file_in(&field, ws, rel)?;
        ctx.check_workspace_grant(&src.parent_relative)?;
        let too_big = |size: u64| {
            ToolError::Validation(vec![crate::schema::FieldError {
                pointer: format!("/{field}"),
                message: format!("file is {size} bytes; the limit is {MAX_VAR_FILE_BYTES}"),
            }])
        };
        if src.size > MAX_VAR_FILE_BYTES {
            return Err(too_big(src.size));
        }
        let bytes = src
            .read_limited(MAX_VAR_FILE_BYTES)
            .map_err(|e| ToolError::Internal(format!("{field}: {e}")))?
            .ok_or_else(|| too_big(MAX_VAR_FILE_BYTES + 1))?;
        let suffix = if rel.ends_with(".tfvars.json") {
            "tfvars.json"
        } else {
            "tfvars"
        };
        var_file_paths.push(dir.write(&format!("var-file-{i}.{suffix}"), &bytes)?);
        supplied.extend(var_file_values(&bytes, suffix == "tfvars.json"));
    }
    supplied.extend(args.vars.clone());
    for (name, value) in &supplied {
        if name_looks_secret(name) {
            ctx.add_secret(value);
        }
    }
    if !args.vars.is_empty() {
        let text =
            serde_json::to_vec(&args.vars).map_err(|e| ToolError::Internal(e.to_string()))?;
        var_file_paths.push(dir.write("terrarium-vars.tfvars.json", &text)?);
    }

    let plan_id = new_id();
    // Terraform writes the plan into its own run dir; the store takes it from there.
    let plan_path = dir.path().join("plan.tfplan");
    let mut inv = Invocation::new(Subcommand::Plan)
        .flag("input=false")
        .flag("no-color")
        .flag("json")
        .path_value("out", plan_path.clone())
        .flag_if(args.destroy, "destroy")
        .flag_if(!args.refresh, "refresh=false");
    for p in var_file_paths {
        inv = inv.path_value("var-file", p);
    }
    for t in &args.targets {
        inv = inv.value("target", t.clone());
    }

    let outcome = ctx.terraform(ws, &dir, &inv, true).await?;
    let report = stream::parse(&outcome.stdout.text);
    let text = report.messages.join("\n");
    if !outcome.success() {
        let text = format!(
            "The plan failed.\n{}\n\n{text}",
            diagnostics_text(&report.diagnostics)
        );
        let mut out = from_run(outcome, &inv, text);
        out.data
            .insert("diagnostics".into(), json!(report.diagnostics));
        out.variables = args.vars.keys().cloned().collect();
        return Ok(out);
    }

    // The plan file lies in the run's writable dir: its bytes are taken now, by descriptor (no
    // link, FIFO or device followed, size capped), and those exact bytes are what is stored and
    // later shown and applied.
    let bytes = dir.read_back("plan.tfplan", MAX_PLAN_BYTES)?;
    // The run's own stream says what the plan does; a terraform whose stream leaves output
    // changes out (1.0) is asked for the full JSON plan instead, which is then kept.
    // A successful plan's warnings (a `check` block's message, a precondition) may quote a
    // variable resolved from workspace files: then the full plan is made now, so the secret
    // ones are masked in this very result.
    let summary = if report.reports_plan_outputs() {
        if !report.diagnostics.is_empty() {
            full_plan(ctx, ws, &plan_id, &bytes).await?;
        }
        plan_summary::from_stream(&report, args.destroy, false)
    } else {
        let plan = full_plan(ctx, ws, &plan_id, &bytes).await?;
        plan_summary::summarize(&plan, args.destroy)
            .map_err(|e| ToolError::Terraform(e.to_string()))?
    };
    let record = ctx.plans().record(
        &plan_id,
        &ws.relative,
        ctx.plan_owner(),
        summary.clone(),
        &bytes,
        &ctx.secret_values(),
    )?;
    let c = &summary.counts;
    let mut text_out = format!(
        "Plan {plan_id}: {} to add, {} to change, {} to destroy{}.",
        c.add,
        c.change,
        c.destroy,
        if c.replace > 0 {
            format!(" ({} replaced)", c.replace)
        } else {
            String::new()
        }
    );
    for rc in summary.resource_changes.iter().take(TEXT_RESOURCES) {
        text_out.push_str(&format!("\n  {} {}", rc.actions.join("/"), rc.address));
    }
    if summary.resource_changes.len() > TEXT_RESOURCES {
        text_out.push_str(&format!(
            "\n  … and {} more (all of them in the structured result)",
            summary.resource_changes.len() - TEXT_RESOURCES
        ));
    }
    if summary.deletes && !ctx.config().enable_destroy {
        text_out.push_str(
            "\nThis plan deletes resources: applying it needs TERRARIUM_ENABLE_DESTROY=true.",
        );
    }
    text_out.push_str("\n\n");
    text_out.push_str(&text);

    let mut out = from_run(outcome, &inv, text_out);
    out.data.insert("plan_id".into(), json!(plan_id));
    out.data.insert("plan_sha256".into(), json!(record.sha256));
    out.data
        .insert("changes".into(), json!(summary.has_changes()));
    // The data once: every resource change is here (and nowhere else in the structured
    // result: the planned-change lines are left out of stdout); the text lists the first few.
    out.data.insert("summary".into(), json!(summary));
    out.data
        .insert("diagnostics".into(), json!(report.diagnostics));
    // The readable messages replace the raw JSON stream on stdout.
    if let Some(r) = out.run.as_mut() {
        r.stdout.text = text;
    }
    out.resources_affected = Some(json!({"add": c.add, "change": c.change, "destroy": c.destroy}));
    out.plan_id = Some(plan_id);
    out.variables = args.vars.keys().cloned().collect();
    Ok(out)
}

/// The full JSON plan (`terraform show -json`) of a stored plan: made at most once per plan, in a
/// fresh run dir from the verified bytes, and cached beside the plan. Every variable value it
/// reveals as secret is masked from now on and remembered with the plan.
pub(super) async fn full_plan(
    ctx: &RunCtx<'_>,
    ws: &Workspace,
    plan_id: &str,
    bytes: &[u8],
) -> Result<Value, ToolError> {
    Ok(full_plan_run(ctx, ws, plan_id, bytes).await?.0)
}

/// [`full_plan`], with the `show` run when one was needed (its stdout, the raw JSON plan with
/// sensitive values in clear, emptied), so a caller can report the run like any other.
pub(super) async fn full_plan_run(
    ctx: &RunCtx<'_>,
    ws: &Workspace,
    plan_id: &str,
    bytes: &[u8],
) -> Result<(Value, Option<crate::sandbox::RunOutcome>), ToolError> {
    let parse = |text: &[u8]| {
        serde_json::from_slice::<Value>(text)
            .map_err(|e| ToolError::Terraform(format!("the saved JSON plan is not JSON: {e}")))
    };
    if let Some(cached) = ctx.plans().full_plan(plan_id)? {
        return Ok((parse(&cached)?, None));
    }
    let dir = ctx.run_dir()?;
    // Terraform reads a copy in its own run dir; the plan store stays out of its reach.
    let copy = dir.write("plan.tfplan", bytes)?;
    let inv = Invocation::new(Subcommand::Show)
        .flag("json")
        .flag("no-color")
        .path(copy);
    let shown = ctx.terraform_json(ws, &dir, &inv).await?;
    if !shown.success() {
        return Err(ToolError::Terraform(format!(
            "terraform show of the saved plan failed (exit code {:?}): {}",
            shown.exit_code,
            shown.stderr.text.trim()
        )));
    }
    let plan = stdout_json(&shown, "terraform show -json")?;
    let sensitive = plan_summary::sensitive_variables(&plan);
    // The values terraform itself resolved, whatever their source (var files, `*.auto.tfvars`,
    // `TF_VAR_*`), except a configured default: that is the configuration's, not a secret the
    // caller brought, and masking it would let workspace content blank out words of the plan.
    if let Some(resolved) = plan.get("variables").and_then(Value::as_object) {
        for (name, v) in resolved {
            if !(name_looks_secret(name) || sensitive.contains(name)) {
                continue;
            }
            let Some(value) = v.get("value") else {
                continue;
            };
            let default = plan.pointer(&format!(
                "/configuration/root_module/variables/{}/default",
                name.replace('~', "~0").replace('/', "~1")
            ));
            if default != Some(value) {
                ctx.add_secret(value);
            }
        }
    }
    ctx.plans().store_full_plan(
        plan_id,
        shown.stdout.text.trim().as_bytes(),
        &ctx.secret_values(),
    )?;
    let mut shown = shown;
    shown.stdout.text.clear();
    Ok((plan, Some(shown)))
}
